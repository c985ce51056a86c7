/**
 * The server's own monitor commands (`vmcoreinfo`, `threads`) and the hand-off to the target's
 * (`sys`, `vtop`, `sym`, …). kdb's command language (lib/kdb.ts), which `monitor CMD` in gdb and
 * the text console both run, falls back on these for words that are not kdb's.
 *
 * @module
 */

import type { MonitorOutput, Target } from "./target.ts";

/**
 * Run a server-level or target command (vmcoreinfo, threads, then the target's own); false when
 * neither knows the command word. Target failures are reported as text.
 */
export function serverCommand(target: Target, line: string, out: MonitorOutput): boolean {
  const command = line.trim();
  const word = command.split(/\s+/, 1)[0];
  try {
    switch (word) {
      case "vmcoreinfo":
        vmcoreinfo(target, out);
        return true;
      case "threads":
        threads(target, out);
        return true;
    }
    return target.monitor?.(command, out) ?? false;
  } catch (e) {
    out(`Command "${word}" failed: ${e instanceof Error ? e.message : String(e)}\n`);
    return true;
  }
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
  // The remote thread id is what gdb shows as "Thread N" in its Target Id column; gdb's own Id
  // column numbers threads 1, 2, … by itself, so it is not printed as "Id" here.
  // A loop, not Math.max(...): a kernel's 130,000 tasks or more overflow the argument stack.
  let width = 6;
  for (const t of list) width = Math.max(width, String(t.id).length);
  const lines = [`  ${"Thread".padStart(width)}  CPU  Name`];
  for (const t of list) {
    const mark = t.id === stop ? "*" : " ";
    const cpu = t.core === undefined ? "-" : String(t.core);
    lines.push(`${mark} ${String(t.id).padStart(width)}  ${cpu.padStart(3)}  ${t.name}`);
  }
  lines.push(
    `${list.length} thread${
      list.length === 1 ? "" : "s"
    }; * marks the stop thread. Thread is the ` +
      `remote thread id (gdb: "Thread N"), not gdb's own thread number.`,
  );
  out(lines.join("\n") + "\n");
}
