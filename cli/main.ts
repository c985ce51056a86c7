/**
 * kdump-gdbserver: serve a Linux kernel crash dump to gdb as a remote target.
 *
 * @module
 */

import { parseCli, USAGE, UsageError } from "./args.ts";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTarget, systemSummary } from "../lib/kernel_target.ts";
import { serveStdio, serveTcp } from "../lib/transport.ts";
import { DumpError } from "../lib/errors.ts";
import denoJson from "../deno.json" with { type: "json" };

const encoder = new TextEncoder();

/** Write one line to stderr (stdout may be the protocol channel). */
function log(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

/** How to run this program again, for the printed pipe command. */
function selfCommand(): string {
  const exe = Deno.execPath();
  if (/(^|\/)deno$/.test(exe)) {
    const main = new URL(import.meta.url).pathname;
    return `deno run --allow-read --allow-net --allow-env ${main}`;
  }
  return exe;
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

async function main(argv: string[]): Promise<number> {
  let opts;
  try {
    opts = parseCli(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      log(`kdump-gdbserver: ${e.message}`);
      return 2;
    }
    throw e;
  }
  if (opts.help) {
    Deno.stderr.writeSync(encoder.encode(USAGE));
    return 0;
  }
  if (opts.version) {
    log(`kdump-gdbserver ${denoJson.version}`);
    return 0;
  }
  if (opts.tasksJson || opts.processJson) {
    log("kdump-gdbserver: -k and -j (tasks and process modes) are not implemented yet");
    return 2;
  }

  let kernel: Kernel;
  try {
    const started = performance.now();
    const dump = openDump(opts.files, {
      progress: (done, total) =>
        log(`indexing flattened dump: ${Math.floor((done / total) * 100)}%`),
    });
    kernel = new Kernel(dump, {
      vmlinux: opts.vmlinux,
      cacheBytes: opts.cacheMb * 1024 * 1024,
      zeroExcluded: opts.zeroExcluded,
    });
    const ms = performance.now() - started;
    if (ms > 1000) log(`opened in ${(ms / 1000).toFixed(1)} s`);
  } catch (e) {
    if (e instanceof DumpError) {
      log(`kdump-gdbserver: ${e.message}`);
      return 1;
    }
    throw e;
  }
  const target = new KernelTarget(kernel);

  log(`kdump-gdbserver ${denoJson.version}`);
  for (const line of systemSummary(kernel)) log(line);
  log("threads:");
  for (const t of target.threads()) log(`  ${t.id}  ${t.name}`);

  const vmlinuxArg = opts.vmlinux ? shellQuote(opts.vmlinux) : "<vmlinux>";
  const fileLine = `file ${vmlinuxArg} -o 0x${kernel.kaslrOffset.toString(16)}`;
  const pipeArgs = [
    "--stdio",
    ...opts.files.map(shellQuote),
    ...(opts.vmlinux ? ["--vmlinux", shellQuote(opts.vmlinux)] : []),
  ].join(" ");
  const pipe = `target remote | ${selfCommand()} ${pipeArgs}`;

  if (opts.stdio) {
    if (!opts.vmlinux) log(`symbols: ${fileLine}`);
    await serveStdio(target, { debug: opts.debug, log });
    kernel.close();
    return 0;
  }

  const server = await serveTcp(target, {
    host: opts.host,
    port: opts.port,
    once: opts.once,
    debug: opts.debug,
    log,
  });
  const hostForGdb = opts.host === "0.0.0.0" || opts.host === "::" ? "127.0.0.1" : opts.host;
  log("gdb commands:");
  if (opts.vmlinux) {
    log(`  gdb -ex 'target remote ${hostForGdb}:${server.port}'   # loads the vmlinux by itself`);
    log(`or, with the symbol file loaded by hand:`);
  }
  log(`  ${fileLine}`);
  log(`  target remote ${hostForGdb}:${server.port}`);
  log(`or in pipe mode:`);
  log(`  ${pipe}`);
  log(`listening on ${opts.host}:${server.port}`);
  await server.finished;
  kernel.close();
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

export { main };
