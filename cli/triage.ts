/**
 * Scripted triage: `kdump-gdbserver VMCORE -c 'summary; bt; dmesg 40'` runs kdb console commands
 * on the dump and exits, without a server; `--json` prints the same facts as one stable JSON
 * document (summary, panic, every CPU's backtrace, the kernel log), for scripts that sort a
 * fleet of dumps.
 *
 * @module
 */

import type { Kernel } from "../lib/kernel.ts";
import type { Target } from "../lib/target.ts";
import { KdbShell } from "../lib/kdb.ts";
import { systemFacts } from "../lib/summary.ts";
import { type KernelLog, readKernelLog, recordLines } from "../lib/dmesg.ts";
import { kernelBacktrace } from "../lib/backtrace.ts";
import { errorText } from "../lib/file_source.ts";

/** Version of the JSON layout; bumped only when a field changes meaning or goes away. */
export const TRIAGE_JSON_VERSION = 1;

/** Split `-c` text into command lines: `;` and newlines separate them. */
export function splitCommands(text: string): string[] {
  return text.split(/[;\n]/).map((c) => c.trim()).filter((c) => c !== "");
}

/** Run console commands; each is echoed after the prompt, as kdb echoes defcmd lines. */
export function runCommands(target: Target, commands: string[], write: (text: string) => void) {
  const sh = new KdbShell(target);
  for (const c of commands) {
    write(`${sh.prompt}${c}\n`);
    let out = "";
    const action = sh.run(c, (t) => out += t);
    if (action === "kgdb") out = "kgdb: no debugger on a scripted run\n";
    write(out);
  }
}

const hex = (v: bigint | undefined) => (v === undefined ? null : `0x${v.toString(16)}`);

/** The triage document: every field is present (null when the dump does not say). */
export function triageJson(
  kernel: Kernel,
  target: Target,
  commands: string[] = [],
): Record<string, unknown> {
  const f = systemFacts(kernel);
  let log: KernelLog | undefined;
  let logError: string | null = null;
  try {
    log = readKernelLog(kernel);
  } catch (e) {
    logError = errorText(e);
  }
  const cpus = kernel.dump.cpus.map((c) => {
    const t = kernel.cpuTasks[c.cpu];
    let bt: Record<string, unknown>;
    try {
      const b = kernelBacktrace(kernel, c.registers, { task: t?.task, cpu: c.cpu, maxFrames: 64 });
      bt = {
        frames: b.frames.map((fr) => ({
          pc: hex(fr.pc),
          sp: hex(fr.sp),
          text: fr.text,
          reliable: fr.reliable,
          boundary: fr.boundary?.kind ?? null,
        })),
        stop_reason: b.stopReason ?? null,
        // The user registers the walk ended at (a syscall's or user-mode interrupt's pt_regs).
        user_regs: b.user
          ? Object.fromEntries([...b.user].map(([name, v]) => [name, hex(v)]))
          : null,
      };
    } catch (e) {
      bt = { frames: [], stop_reason: errorText(e), user_regs: null };
    }
    return {
      cpu: c.cpu,
      panic: f.panicCpu === c.cpu,
      pid: t?.pid ?? null,
      comm: t?.comm ?? null,
      task: hex(t?.task),
      backtrace: bt,
    };
  });
  const doc: Record<string, unknown> = {
    version: TRIAGE_JSON_VERSION,
    dump: kernel.dump.files,
    format: kernel.dump.format,
    arch: kernel.dump.arch,
    summary: {
      sysname: f.sysname ?? null,
      nodename: f.nodename ?? null,
      release: f.release ?? kernel.release ?? null,
      version: f.version ?? null,
      machine: f.machine ?? null,
      build_id: kernel.dump.vmcoreinfo?.buildId ?? null,
      date: f.date === undefined ? null : new Date(f.date * 1000).toISOString(),
      uptime_seconds: f.uptime ?? null,
      load_average: f.loadAverage ?? null,
      mem_total_kb: f.memTotalKb ?? null,
      mem_free_kb: f.memFreeKb ?? null,
      cpus: f.cpus,
      taint: f.taint ?? null,
      taint_mask: hex(f.taintMask),
    },
    panic: { cpu: f.panicCpu ?? null, message: f.panicMessage ?? null },
    cpus,
    dmesg: log
      ? log.records.map((r) => ({
        seq: Number(r.seq),
        time: Number(r.tsNsec / 1000n) / 1e6,
        level: r.level,
        facility: r.facility,
        lines: recordLines(r),
      }))
      : null,
    dmesg_error: logError,
  };
  if (commands.length) {
    const sh = new KdbShell(target);
    doc.commands = commands.map((c) => {
      let out = "";
      sh.run(c, (t) => out += t);
      return { command: c, output: out };
    });
  }
  return doc;
}

/** Run `-c` and/or `--json` on an opened dump; the exit status. */
export function triage(
  kernel: Kernel,
  target: Target,
  options: { commands?: string; json: boolean },
  write: (text: string) => void,
): number {
  const commands = splitCommands(options.commands ?? "");
  if (options.json) {
    write(JSON.stringify(triageJson(kernel, target, commands), null, 2) + "\n");
  } else runCommands(target, commands, write);
  return 0;
}
