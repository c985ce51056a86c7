/**
 * kdump-gdbserver: serve a Linux kernel crash dump to gdb as a remote target.
 *
 * @module
 */

import { parseCli, USAGE, UsageError } from "./args.ts";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTarget, systemSummary } from "../lib/kernel_target.ts";
import { tasksTarget } from "../lib/tasks_target.ts";
import { type ProcessTarget, processTarget } from "../lib/process_target.ts";
import { targetFromProcessJson, targetFromTasksJson } from "../lib/tasks_json.ts";
import type { Target } from "../lib/target.ts";
import { serveStdio, serveTcp } from "../lib/transport.ts";
import { DumpError } from "../lib/errors.ts";
import { bindTcp, ListenError } from "../lib/listen.ts";
import denoJson from "../deno.json" with { type: "json" };
import { triage } from "./triage.ts";
import { mainLive } from "./live.ts";
import { finishPipeBanner } from "./pipe_stderr.ts";

const encoder = new TextEncoder();

/** Write one line to stderr (stdout may be the protocol channel). */
function log(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

/** A writer of whole texts to stdout that stops quietly when the reader goes away (`| head`). */
function writeStdout(): (text: string) => void {
  let gone = false;
  return (text) => {
    const data = encoder.encode(text);
    for (let at = 0; at < data.length && !gone;) {
      try {
        at += Deno.stdout.writeSync(data.subarray(at));
      } catch (e) {
        if (!(e instanceof Deno.errors.BrokenPipe)) throw e;
        gone = true;
      }
    }
  };
}

/** How to run this program again, for the printed pipe command. */
function selfCommand(): string {
  const exe = Deno.execPath();
  // `exec`: the shell gdb starts would otherwise keep gdb's stderr socket open, and gdb reads that
  // socket after every byte it receives (README, "Pipe mode and FFI").
  if (/(^|\/)deno$/.test(exe)) {
    const main = shellQuote(new URL(import.meta.url).pathname);
    // With FFI the server ends its stderr once the banner is out: pipe mode at TCP's speed.
    const permissions = Deno.permissions.querySync({ name: "ffi" }).state === "granted"
      ? "--allow-read --allow-net --allow-ffi"
      : "--allow-read --allow-net";
    return `exec deno run ${permissions} --v8-flags=--max-semi-space-size=1 ${main}`;
  }
  return `exec ${shellQuote(exe)}`;
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
    // On stdout, as --help output is expected to be (`--help | less`); it ends in a newline.
    Deno.stdout.writeSync(encoder.encode(USAGE.endsWith("\n") ? USAGE : USAGE + "\n"));
    return 0;
  }
  if (opts.version) {
    log(`kdump-gdbserver ${denoJson.version}`);
    return 0;
  }
  if (opts.qemu) return await mainLive(opts, log);

  // Bind the port before the dump is opened (seconds for a big one): a port in use is then
  // reported at once, in one line.
  let listener: Deno.TcpListener | undefined;
  if (!opts.stdio && opts.commands === undefined && !opts.json) {
    try {
      listener = bindTcp(opts.host, opts.port);
    } catch (e) {
      if (e instanceof ListenError) {
        log(`kdump-gdbserver: ${e.message}`);
        return 1;
      }
      throw e;
    }
  }

  let kernel: Kernel;
  let target: Target;
  let modeLines: string[] = [];
  let openSeconds = 0;
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
    ({ target, modeLines } = makeTarget(kernel, opts));
    openSeconds = (performance.now() - started) / 1000;
    if (opts.commands !== undefined || opts.json) {
      // Scripted triage: the answers on stdout, no banner, no server.
      const out = writeStdout();
      const code = triage(kernel, target, { commands: opts.commands, json: opts.json }, out);
      kernel.close();
      return code;
    }
  } catch (e) {
    listener?.close();
    if (e instanceof DumpError) {
      log(`kdump-gdbserver: ${e.message}`);
      return 1;
    }
    throw e;
  }
  log(`kdump-gdbserver ${denoJson.version}`);
  for (const line of systemSummary(kernel)) log(line);
  for (const line of modeLines) log(line);
  // Only worth a line when the user waited for it.
  if (openSeconds > 1) log(`opened in:    ${openSeconds.toFixed(1)} s`);
  const threads = target.threads();
  log(`threads: ${threads.length}`);
  const shown = threads.length > 40 ? threads.slice(0, 32) : threads;
  for (const t of shown) log(`  ${t.id}  ${t.name}`);
  if (shown.length < threads.length) {
    log(`  … (${threads.length - shown.length} more: info threads)`);
  }

  const vmlinuxArg = opts.vmlinux ? shellQuote(opts.vmlinux) : "<vmlinux>";
  const processMode = opts.pid !== undefined || opts.processJson !== undefined;
  // A process's symbols are its executable's (the banner's `symbols:` line says how); the
  // vmlinux and its KASLR offset are for kernel mode.
  const fileLine = processMode
    ? `file ${opts.exe ? shellQuote(opts.exe) : "<executable>"}`
    : `file ${vmlinuxArg} -o 0x${kernel.kaslrOffset.toString(16)}`;
  const pipeArgs = [
    "--stdio",
    ...opts.files.map(shellQuote),
    ...(opts.vmlinux ? ["--vmlinux", shellQuote(opts.vmlinux)] : []),
    ...(opts.tasks ? ["--tasks"] : []),
    ...(opts.pid !== undefined ? ["--pid", String(opts.pid)] : []),
    ...(opts.exe ? ["--exe", shellQuote(opts.exe)] : []),
    ...(opts.tasksJson ? ["-k", shellQuote(opts.tasksJson)] : []),
    ...(opts.processJson ? ["-j", shellQuote(opts.processJson)] : []),
  ].join(" ");
  const pipe = `target remote | ${selfCommand()} ${pipeArgs}`;

  if (opts.stdio) {
    if (!opts.vmlinux && !processMode) log(`symbols:      ${fileLine}`);
    finishPipeBanner(opts.debug, log);
    prepareInIdleTime(target);
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
    listener,
  });
  const hostForGdb = opts.host === "0.0.0.0" || opts.host === "::" ? "127.0.0.1" : opts.host;
  log("gdb commands:");
  const servedFile = target.execFile?.();
  if (servedFile) {
    const what = processMode ? "the executable" : "the vmlinux";
    log(`  gdb -ex 'target remote ${hostForGdb}:${server.port}'   # loads ${what} by itself`);
    log(`or, with the symbol file loaded by hand:`);
  }
  log(`  ${fileLine}`);
  log(`  target remote ${hostForGdb}:${server.port}`);
  log(`or in pipe mode:`);
  log(`  ${pipe}`);
  log(`listening on ${opts.host}:${server.port}`);
  prepareInIdleTime(target);
  await server.finished;
  kernel.close();
  return 0;
}

/**
 * Let the target work ahead (Target.prepare) while gdb loads its symbols or the server waits
 * for a client: in 5 ms slices between I/O events, so a request waits at most one slice.
 */
function prepareInIdleTime(target: Target): void {
  if (!target.prepare) return;
  const slice = () => {
    if (target.prepare!(5)) setTimeout(slice, 0);
  };
  setTimeout(slice, 0);
}

/** The target for the chosen mode, and banner lines describing it. */
function makeTarget(
  kernel: Kernel,
  opts: ReturnType<typeof parseCli>,
): { target: Target; modeLines: string[] } {
  const lines: string[] = [];
  let target: Target;
  if (opts.tasks) {
    const t = tasksTarget(kernel);
    lines.push(`mode:         tasks (every task a thread; ${t.source})`);
    lines.push(...t.warnings.map((w) => `warning:      ${w}`));
    target = t;
  } else if (opts.pid !== undefined) {
    const t = processTarget(kernel, opts.pid, { executable: opts.exe });
    lines.push(...processLines(t, true));
    target = t;
  } else if (opts.tasksJson) {
    const t = targetFromTasksJson(kernel, opts.tasksJson);
    lines.push(`mode:         tasks from ${opts.tasksJson}`);
    lines.push(...t.warnings.map((w) => `warning:      ${w}`));
    target = t;
  } else if (opts.processJson) {
    const t = targetFromProcessJson(kernel, opts.processJson);
    lines.push(...processLines(t, false));
    target = t;
  } else {
    target = new KernelTarget(kernel);
  }
  return { target, modeLines: lines };
}

/** The banner's process lines; `fromDump`: `--pid` (else a `-j` file). */
function processLines(t: ProcessTarget, fromDump: boolean): string[] {
  const v = t.view;
  const lines = [`mode:         process ${v.pid} (${v.name})`];
  if (v.exePath) lines.push(`executable:   ${v.exePath}`);
  if (t.execFile()) {
    // None: gdb loads the executable by itself (qXfer:exec-file).
  } else if (v.auxv) {
    // No `-o`: gdb relocates a PIE by itself from the process's auxv (AT_ENTRY against the
    // file's entry point), and an offset given by hand to a non-PIE executable would be wrong.
    lines.push(`symbols:      file <executable>${fromDump ? "   (or --exe FILE)" : ""}`);
  } else {
    // A `-j` file without auxv (the original tool's): gdb cannot find a PIE's base by itself.
    const at = v.loadAddress === undefined ? "" : `; its first executable mapping starts at ` +
      `0x${v.loadAddress.toString(16)}`;
    lines.push(
      `symbols:      file <executable>, with -o BASE for a PIE (no auxv in the file${at})`,
    );
  }
  // gdb's `info proc mappings` reads /proc/PID/maps through the target's files, which would make
  // gdb fetch every shared library through the server too (none of which it may serve).
  if (fromDump) lines.push(`mappings:     monitor maps   (gdb's info proc reads a live /proc)`);
  lines.push(...t.warnings.map((w) => `warning:      ${w}`));
  return lines;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

export { main };
