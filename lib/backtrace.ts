/**
 * Kernel stack backtraces from the dump alone: the contract the console's `bt` family and the
 * triage output use. The unwinders behind it live in their own modules (x86_64: the kernel's ORC
 * tables, {@link ./unwind_x86_64.ts}; arm64: frame records, {@link ./unwind_aarch64.ts}); this
 * module picks one by architecture and formats frames in the kernel's own style.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { ArchName, RegisterValues } from "./target.ts";
import { scanUserModeCpu, unwindX86_64 } from "./unwind_x86_64.ts";
import { unwindAarch64 } from "./unwind_aarch64.ts";

/** Where a frame's stack switched mode: registers saved at an entry point. */
export interface FrameBoundary {
  /** What kind of entry saved the registers. */
  kind: "interrupt" | "exception" | "nmi" | "syscall" | "user";
  /** The registers saved at the boundary (a pt_regs), by gdb register name. */
  regs: RegisterValues;
  /** The saved registers are user mode: the walk ends here (x86_64 CS or arm64 PSTATE says). */
  userMode?: boolean;
}

/** One frame of a kernel backtrace. */
export interface BacktraceFrame {
  /** Return address (or the pc of the first frame). */
  pc: bigint;
  /** Stack pointer of the frame. */
  sp: bigint;
  /** `func+0x16/0x20`, or the hex address when no symbol covers pc. */
  text: string;
  /** False for a guess (shown with `?` in front, as the kernel does). */
  reliable: boolean;
  /** Set when the frame is an entry point whose saved registers follow. */
  boundary?: FrameBoundary;
  /** Name of the function (of the call instruction, for a return address), when known. */
  symbol?: string;
  /** The stack the frame is on, by the kernel's names (TASK, IRQ, NMI, #DF, OVERFLOW…). */
  stack?: string;
}

/** A whole backtrace, and why it ended. */
export interface Backtrace {
  /** The frames, innermost first. */
  frames: BacktraceFrame[];
  /** Why the unwind stopped, when not at the normal end of a stack. */
  stopReason?: string;
  /** User-mode registers where the walk reached the user/kernel boundary. */
  user?: RegisterValues;
  /** How the first frame was found, when not from the given registers (e.g. a stack scan). */
  note?: string;
}

/** Options for {@link kernelBacktrace}. */
export interface BacktraceOptions {
  /** Address of the task_struct whose stack this is (bounds the walk to its stack). */
  task?: bigint;
  /** CPU the stack belongs to, for per-CPU IRQ/exception stacks. */
  cpu?: number;
  /** Most frames returned. */
  maxFrames?: number;
  /**
   * The registers' pc is a return address (a sleeping task's switch frame), not an exact pc.
   * Default: told by the task — registers whose stack pointer is just above the task's saved
   * switch frame (`thread.sp`) are a switch frame.
   */
  returnAddress?: boolean;
}

const taskStackMembers = new WeakMap<
  Kernel,
  { stack?: number; threadSp?: number; frame: number } | null
>();

function members(kernel: Kernel) {
  let m = taskStackMembers.get(kernel);
  if (m === undefined) {
    const btf = kernel.btf;
    m = btf
      ? {
        stack: btf.member("task_struct", "stack")?.offset,
        threadSp: btf.member("task_struct", "thread.sp")?.offset,
        frame: btf.structSize("inactive_task_frame") ?? 56,
      }
      : null;
    taskStackMembers.set(kernel, m);
  }
  return m ?? undefined;
}

/** Backtrace of a kernel stack from its registers. */
export function kernelBacktrace(
  kernel: Kernel,
  regs: RegisterValues,
  options: BacktraceOptions = {},
): Backtrace {
  const maxFrames = options.maxFrames ?? 128;
  const mem = kernel.memory;
  let task = options.task;
  if (task === undefined && options.cpu !== undefined) task = kernel.cpuTasks[options.cpu]?.task;
  const m = members(kernel);
  const taskStack = task !== undefined && m?.stack !== undefined && mem
    ? mem.readU64(task + BigInt(m.stack))
    : undefined;
  if (kernel.dump.arch === "x86_64") {
    let returnAddress = options.returnAddress;
    if (returnAddress === undefined && task !== undefined && m?.threadSp !== undefined && mem) {
      const sp = mem.readU64(task + BigInt(m.threadSp));
      returnAddress = sp !== undefined && regs.get("rsp") === sp + BigInt(m.frame) &&
        options.cpu === undefined;
    }
    const x86 = { taskStack: taskStack || undefined, cpu: options.cpu, maxFrames, returnAddress };
    const bt = unwindX86_64(kernel, regs, x86);
    if (bt.frames.length === 0 && bt.user && options.cpu !== undefined) {
      return scanUserModeCpu(kernel, regs, x86) ?? bt;
    }
    return bt;
  }
  return unwindAarch64(kernel, regs, {
    taskStack: taskStack || undefined,
    cpu: options.cpu,
    maxFrames,
  });
}

const hex16 = (v: bigint | undefined) => (v ?? 0n).toString(16).padStart(16, "0");
const hex = (v: bigint | undefined, n: number) => (v ?? 0n).toString(16).padStart(n, "0");

/** The line the kernel prints before a stack's frames: x86_64's `Call Trace:`, arm64's `Call trace:`. */
export function callTraceHeader(arch: ArchName): string {
  return arch === "x86_64" ? "Call Trace:" : "Call trace:";
}

/** The register lines the kernel prints under a frame of saved registers (`__show_regs`). */
export function formatRegisters(regs: RegisterValues, text?: string): string[] {
  if (regs.has("pc")) {
    const lines = [
      `pc : ${text ?? "0x" + hex16(regs.get("pc"))}`,
      `lr : 0x${hex16(regs.get("x30"))}`,
      `sp : ${hex16(regs.get("sp"))} pstate: ${hex(regs.get("cpsr"), 8)}`,
    ];
    for (let i = 29; i >= 0; i -= 2) {
      const pair = i > 0
        ? `x${i}: ${hex16(regs.get(`x${i}`))} x${i - 1}: ${hex16(regs.get(`x${i - 1}`))}`
        : `x0 : ${hex16(regs.get("x0"))}`;
      lines.push(pair);
    }
    return lines;
  }
  const rip = regs.get("rip") ?? 0n;
  const lines = [
    `RIP: ${hex(regs.get("cs"), 4)}:${text ?? "0x" + rip.toString(16)}`,
  ];
  const orig = regs.get("orig_rax");
  let rsp = `RSP: ${hex(regs.get("ss"), 4)}:${hex16(regs.get("rsp"))} EFLAGS: ${
    hex(regs.get("eflags"), 8)
  }`;
  if (orig !== undefined && orig !== 0xffffffffffffffffn) rsp += ` ORIG_RAX: ${hex16(orig)}`;
  lines.push(rsp);
  if (regs.has("rax")) {
    const row = (a: string, b: string, c: string) =>
      `${a.toUpperCase()}: ${hex16(regs.get(name(a)))} ${b.toUpperCase()}: ${
        hex16(regs.get(name(b)))
      } ${c.toUpperCase()}: ${hex16(regs.get(name(c)))}`;
    lines.push(
      row("rax", "rbx", "rcx"),
      row("rdx", "rsi", "rdi"),
      row("rbp", "r08", "r09"),
      row("r10", "r11", "r12"),
      row("r13", "r14", "r15"),
    );
  }
  return lines;
}

const name = (n: string) => n.replace(/^r0/, "r");

/**
 * Lines of a backtrace in the kernel's Call Trace style (` func+0x16/0x20`, ` ? guess`), with
 * `<IRQ>`/`<NMI>`/`<TASK>` markers where the stack changes (x86_64) and the registers saved at each
 * entry (`RIP: 0033:0x47b7a0` … for user mode), as the kernel prints them.
 */
export function formatBacktrace(bt: Backtrace, arch: ArchName = "x86_64"): string[] {
  const lines: string[] = [];
  if (bt.note) lines.push(` (${bt.note})`);
  let stack: string | undefined;
  // arm64's dump_backtrace marks no stack changes.
  const marked = arch === "x86_64";
  for (const f of bt.frames) {
    if (marked && f.stack !== stack) {
      if (stack) lines.push(` </${stack}>`);
      if (f.stack) lines.push(` <${f.stack}>`);
      stack = f.stack;
    }
    lines.push(` ${f.reliable ? "" : "? "}${f.text}`);
    if (f.boundary) {
      const b = f.boundary;
      const pc = b.regs.get("rip") ?? b.regs.get("pc");
      // The interrupted kernel pc is the next frame; user pcs print as hex, like the kernel.
      const next = bt.frames[bt.frames.indexOf(f) + 1];
      const text = !b.userMode && next && next.pc === pc ? next.text : undefined;
      lines.push(...formatRegisters(b.regs, text));
    }
  }
  if (bt.frames.length === 0 && bt.user) lines.push(...formatRegisters(bt.user));
  if (stack) lines.push(` </${stack}>`);
  if (bt.stopReason) lines.push(` (${bt.stopReason})`);
  return lines;
}
