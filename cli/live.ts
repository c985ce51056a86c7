/**
 * `kdump-gdbserver --qemu HOST:PORT`: serve a live QEMU guest (see lib/live_target.ts).
 *
 * @module
 */

import { type CliOptions, parseHostPort } from "./args.ts";
import { LiveTarget } from "../lib/live_target.ts";
import { LiveError } from "../lib/qemu_stub.ts";
import { Qmp } from "../lib/qmp.ts";
import { systemSummary } from "../lib/kernel_target.ts";
import { serveStdio, serveTcp } from "../lib/transport.ts";
import { bindPolling } from "../lib/listen.ts";
import { GDB_SPIN_MS } from "../lib/polling_channel.ts";
import { DumpError } from "../lib/errors.ts";
import denoJson from "../deno.json" with { type: "json" };
import { finishPipeBanner } from "./pipe_stderr.ts";

/** Run the live mode; the process's exit status. */
export async function mainLive(opts: CliOptions, log: (line: string) => void): Promise<number> {
  const stub = parseHostPort(opts.qemu!)!;
  const fail = (e: unknown): number => {
    // One line whatever went wrong: a live guest is a moving target, and the user needs the
    // reason, not our stack.
    const message = e instanceof LiveError || e instanceof DumpError
      ? e.message
      : `unexpected error reading the guest: ${e instanceof Error ? e.message : String(e)}`;
    log(`kdump-gdbserver: ${message.split("\n")[0]}`);
    return 1;
  };
  let qmp: Qmp | undefined;
  let target: LiveTarget | undefined;
  let wasRunning = false;
  try {
    if (opts.qmp) {
      const q = parseHostPort(opts.qmp)!;
      qmp = await Qmp.connect(q.host, q.port);
    }
    target = new LiveTarget({
      host: stub.host,
      port: stub.port,
      guestRam: opts.guestRam,
      vmlinux: opts.vmlinux,
      tasks: opts.tasks,
      readOnly: opts.readOnly,
      qmp,
      cacheBytes: opts.cacheMb * 1024 * 1024,
      log,
    });
    wasRunning = await target.connect();
    log(`kdump-gdbserver ${denoJson.version}`);
    for (const line of systemSummary(target.kernel)) log(line);
    log(
      `mode:         live${
        opts.tasks ? ", tasks (every task a thread, rebuilt at each stop)" : ""
      }` +
        (opts.readOnly ? ", read-only" : ", writes pass through to QEMU"),
    );
    if (!opts.vmlinux) {
      // No offset found is not offset 0: a `-o 0x0` hint would mislead.
      log(
        target.facts.kaslrOffset === undefined
          ? "symbols:      file <vmlinux> -o OFFSET (the KASLR offset was not found, see above)"
          : `symbols:      file <vmlinux> -o 0x${target.kernel.kaslrOffset.toString(16)}`,
      );
    }
    const threads = target.threads();
    log(`threads: ${threads.length}`);
    for (const t of threads.slice(0, 32)) log(`  ${t.id}  ${t.name}`);
    if (threads.length > 32) log(`  … (${threads.length - 32} more: info threads)`);
  } catch (e) {
    // Connected, then failed (the banner's reads): the guest goes back as it was found.
    target?.release(wasRunning);
    qmp?.close();
    return fail(e);
  }
  let exitCode = 0;
  // Stopped by a signal: give the guest back first (QEMU's stub keeps our physical-memory switch
  // for the next debugger otherwise).
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      const held = target.holdsGuest;
      target.close();
      qmp?.close();
      log(
        `kdump-gdbserver: ${signal}: stopped` +
          (held
            ? "; the guest is left paused, our breakpoints taken out (as a dropped gdb leaves it)"
            : ""),
      );
      Deno.exit(signal === "SIGINT" ? 130 : 143);
    });
  }
  const lost = new Promise<void>((resolve) => {
    target.onLost = (message) => {
      log(`kdump-gdbserver: ${message}`);
      exitCode = 1;
      resolve();
    };
    if (qmp) {
      qmp.onClose = () => {
        log(`kdump-gdbserver: QEMU's QMP at ${opts.qmp} closed: the guest is gone`);
        exitCode = 1;
        resolve();
      };
    }
  });

  if (opts.stdio) {
    finishPipeBanner(opts.debug, log);
    // gdb is already waiting on the pipe: keep the guest stopped for it.
    await Promise.race([
      serveStdio(target, { debug: opts.debug, log, spinMs: GDB_SPIN_MS }),
      lost,
    ]);
    target.close();
    qmp?.close();
    return exitCode;
  }
  // Until a gdb attaches, the guest runs as it did before we looked.
  target.release(wasRunning);
  log(`guest:        ${wasRunning ? "running (stopped when gdb attaches)" : "paused"}`);
  let server;
  try {
    // A step is a chain of round trips through us: gdb's next packet is waited for by polling
    // a short while before sleeping (lib/polling_channel.ts).
    server = await serveTcp(target, {
      host: opts.host,
      port: opts.port,
      once: opts.once,
      debug: opts.debug,
      log,
      listener: bindPolling(opts.host, opts.port),
      spinMs: GDB_SPIN_MS,
    });
  } catch (e) {
    log(`kdump-gdbserver: ${e instanceof Error ? e.message : e}`);
    target.close();
    qmp?.close();
    return 1;
  }
  log("gdb commands:");
  log(`  gdb${opts.vmlinux ? "" : " <vmlinux>"} -ex 'target remote ${opts.host}:${server.port}'`);
  log(`listening on ${opts.host}:${server.port}`);
  await Promise.race([server.finished, lost]);
  await Promise.race([server.close(), new Promise((r) => setTimeout(r, 1000))]);
  target.close();
  qmp?.close();
  return exitCode;
}
