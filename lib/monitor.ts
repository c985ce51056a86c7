/**
 * Monitor commands: what `monitor CMD` in gdb (the `qRcmd` packet) and a line typed at the text
 * console both run. The server answers `help`, `vmcoreinfo` and `threads` itself and hands any
 * other command to the target.
 *
 * @module
 */

import type { MonitorOutput, Target } from "./target.ts";

/** Server-level commands, for `help`. */
const SERVER_COMMANDS: readonly [string, string][] = [
  ["help", "list monitor commands"],
  ["vmcoreinfo", "print the VMCOREINFO note of the dump"],
  ["threads", "list threads: id, cpu, name"],
];

/**
 * Run one monitor command line and write its output. Never throws: a failing target command is
 * reported as text.
 * @param extraHelp lines appended to `help` (the console adds its own commands)
 */
export function runMonitorCommand(
  target: Target,
  line: string,
  out: MonitorOutput,
  extraHelp: readonly string[] = [],
): void {
  const command = line.trim();
  const word = command.split(/\s+/, 1)[0];
  try {
    switch (word) {
      case "":
        return;
      case "help":
        return help(target, out, extraHelp);
      case "vmcoreinfo":
        return vmcoreinfo(target, out);
      case "threads":
        return threads(target, out);
    }
    if (target.monitor?.(command, out)) return;
    out(`Unknown monitor command "${word}"; "help" lists the commands.\n`);
  } catch (e) {
    out(`Command "${word}" failed: ${e instanceof Error ? e.message : String(e)}\n`);
  }
}

function help(target: Target, out: MonitorOutput, extraHelp: readonly string[]): void {
  const lines = SERVER_COMMANDS.map(([name, text]) => `  ${name.padEnd(12)} ${text}`);
  for (const l of target.monitorHelp?.() ?? []) lines.push(`  ${l}`);
  for (const l of extraHelp) lines.push(`  ${l}`);
  out(`Commands:\n${lines.join("\n")}\n`);
}

function vmcoreinfo(target: Target, out: MonitorOutput): void {
  const note = target.vmcoreinfo?.();
  if (note === undefined) {
    out("This target has no VMCOREINFO note.\n");
    return;
  }
  const text = new TextDecoder().decode(note).replace(/\0+$/, "");
  out(text.endsWith("\n") ? text : text + "\n");
}

function threads(target: Target, out: MonitorOutput): void {
  const list = target.threads();
  const stop = target.stopThread();
  const lines = ["  Id  CPU  Name"];
  for (const t of list) {
    const mark = t.id === stop ? "*" : " ";
    const cpu = t.core === undefined ? "-" : String(t.core);
    lines.push(`${mark}${String(t.id).padStart(3)}  ${cpu.padStart(3)}  ${t.name}`);
  }
  lines.push(`${list.length} thread${list.length === 1 ? "" : "s"}; * marks the stop thread.`);
  out(lines.join("\n") + "\n");
}
