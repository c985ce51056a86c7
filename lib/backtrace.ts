/**
 * Kernel stack backtraces from the dump alone: the contract the console's `bt` family and the
 * triage output use. The unwinders behind it (x86_64 ORC, arm64 frame records) live in their own
 * modules; this module picks one by architecture and formats frames in the kernel's own style.
 *
 * Placeholder: until the unwinders land, a backtrace is the first frame only.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { RegisterValues } from "./target.ts";

/** Where a frame's stack switched mode: registers saved at an entry point. */
export interface FrameBoundary {
  /** What kind of entry saved the registers. */
  kind: "interrupt" | "exception" | "nmi" | "syscall" | "user";
  /** The registers saved at the boundary (a pt_regs), by gdb register name. */
  regs: RegisterValues;
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
}

/** A whole backtrace, and why it ended. */
export interface Backtrace {
  frames: BacktraceFrame[];
  /** Why the unwind stopped, when not at the normal end of a stack. */
  stopReason?: string;
}

/** Options for {@link kernelBacktrace}. */
export interface BacktraceOptions {
  /** Address of the task_struct whose stack this is (bounds the walk to its stack). */
  task?: bigint;
  /** CPU the stack belongs to, for per-CPU IRQ/exception stacks. */
  cpu?: number;
  /** Most frames returned. */
  maxFrames?: number;
}

/** Backtrace of a kernel stack from its registers. */
export function kernelBacktrace(
  kernel: Kernel,
  regs: RegisterValues,
  _options: BacktraceOptions = {},
): Backtrace {
  const pcName = kernel.dump.arch === "x86_64" ? "rip" : "pc";
  const spName = kernel.dump.arch === "x86_64" ? "rsp" : "sp";
  const pc = regs.get(pcName);
  const sp = regs.get(spName) ?? 0n;
  if (pc === undefined) return { frames: [], stopReason: "no saved program counter" };
  return {
    frames: [{ pc, sp, text: `0x${pc.toString(16)}`, reliable: true }],
    stopReason: "unwinding not implemented yet",
  };
}

/** Lines of a backtrace in the kernel's Call Trace style (` func+0x16/0x20`, ` ? guess`). */
export function formatBacktrace(bt: Backtrace): string[] {
  const lines = bt.frames.map((f) => ` ${f.reliable ? "" : "? "}${f.text}`);
  if (bt.stopReason) lines.push(` (${bt.stopReason})`);
  return lines;
}
