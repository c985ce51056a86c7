/**
 * arm64 kernel stack unwinding by frame records, as the kernel's own unwinder does: each function
 * that calls another keeps `{x29, x30}` on its stack and points x29 at it, so the records form a
 * chain. The exception entry (`kernel_entry`) stores one more record inside the `struct pt_regs`
 * it saves — `{interrupted x29, interrupted pc}`, or zeros for an entry from user mode, which
 * ends the chain — so the walk crosses interrupts and exceptions, from the IRQ stack back to the
 * task's stack, and stops at the user/kernel boundary.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { VirtualMemory } from "./paging.ts";
import type { RegisterValues } from "./target.ts";
import type { Backtrace, BacktraceFrame, FrameBoundary } from "./backtrace.ts";
import type { StackArea } from "./unwind_x86_64.ts";
import { formatAddress, symbolAt } from "./symbolize.ts";
import { threadSize } from "./tasks.ts";

/** Options of {@link unwindAarch64}. */
export interface Arm64UnwindOptions {
  /** Base of the task's stack (`task->stack`), when known. */
  taskStack?: bigint;
  cpu?: number;
  maxFrames: number;
}

/** offsetof(struct pt_regs, stackframe) in Linux 5.x–6.12 without BTF to say otherwise. */
const DEFAULT_STACKFRAME_OFFSET = 304;
/** The exception vector entries that save a pt_regs (el1h_64_irq, el0t_64_sync, …). */
const ENTRY = /^el[01][th]_(64|32)_(sync|irq|fiq|error)$/;
/** Overflow stack size (OVERFLOW_STACK_SIZE) of Linux 4.14+. */
const OVERFLOW_STACK_SIZE = 4096n;

/** The per-CPU stacks of one CPU: IRQ and overflow stacks (need the per-CPU symbols). */
export function arm64CpuStacks(kernel: Kernel, cpu: number): StackArea[] {
  const out: StackArea[] = [];
  const size = BigInt(threadSize(kernel).bytes);
  const ptr = kernel.perCpu("irq_stack_ptr", cpu);
  const base = ptr !== undefined ? kernel.memory?.readU64(ptr) : undefined;
  if (base) out.push({ name: "IRQ", start: base, end: base + size });
  const overflow = kernel.perCpu("overflow_stack", cpu);
  if (overflow !== undefined) {
    out.push({ name: "OVERFLOW", start: overflow, end: overflow + OVERFLOW_STACK_SIZE });
  }
  return out;
}

/** Backtrace of an arm64 kernel stack from its registers. */
export function unwindAarch64(
  kernel: Kernel,
  regs: RegisterValues,
  options: Arm64UnwindOptions,
): Backtrace {
  const mem = kernel.memory;
  const pc0 = regs.get("pc");
  const sp0 = regs.get("sp") ?? 0n;
  if (!mem || pc0 === undefined) return { frames: [], stopReason: "no saved pc" };
  const pstate = regs.get("cpsr");
  if (pstate !== undefined && (pstate & 0xcn) === 0n && (pstate & 0x10n) === 0n) {
    return { frames: [], stopReason: "the registers are in user mode", user: regs };
  }
  const stacks: StackArea[] = [];
  if (options.taskStack) {
    const size = BigInt(threadSize(kernel).bytes);
    stacks.push({ name: "TASK", start: options.taskStack, end: options.taskStack + size });
  }
  // Without the per-CPU symbols the IRQ stack is unknown: then no stack is required.
  const cpuStacks = options.cpu !== undefined ? arm64CpuStacks(kernel, options.cpu) : [];
  stacks.push(...cpuStacks);
  const strict = options.cpu === undefined || cpuStacks.length > 0;
  const stackOf = (a: bigint) => stacks.find((s) => a >= s.start && a < s.end);
  const stackframe = BigInt(
    kernel.btf?.member("pt_regs", "stackframe")?.offset ?? DEFAULT_STACKFRAME_OFFSET,
  );
  const pacMask = kernel.dump.vmcoreinfo?.number("KERNELPACMASK") ?? 0n;
  const strip = (pc: bigint) => (pacMask && (pc & (1n << 55n)) ? pc | pacMask : pc);

  const frames: BacktraceFrame[] = [];
  const push = (pc: bigint, sp: bigint, where: bigint | undefined) => {
    // The kernel prints arm64 frames with %pS: the return address itself is looked up.
    const f: BacktraceFrame = { pc, sp, text: formatAddress(kernel, pc), reliable: true };
    const hit = symbolAt(kernel, pc);
    if (hit) f.symbol = hit.name;
    const s = where !== undefined ? stackOf(where) : undefined;
    if (s) f.stack = s.name;
    frames.push(f);
    return f;
  };

  let fp = regs.get("x29") ?? 0n;
  let frame = push(pc0, sp0, sp0);
  // A leaf function keeps no record: its return address is only in x30. It is one when x30
  // returns into another function and the record at x29 (the caller's) holds another address.
  const lr = regs.get("x30");
  if (lr !== undefined && fp && options.maxFrames > 1) {
    const saved = mem.readU64(fp + 8n);
    const own = symbolAt(kernel, pc0);
    const lrSym = symbolAt(kernel, strip(lr));
    if (
      saved !== undefined && strip(saved) !== strip(lr) && lrSym && own &&
      lrSym.name !== own.name && kernel.kallsyms() !== undefined
    ) {
      frame = push(strip(lr), sp0, sp0);
    }
  }

  let stopReason: string | undefined;
  let user: RegisterValues | undefined;
  const seen = new Set<bigint>();
  let prevFp = 0n;
  for (;;) {
    if (frames.length >= options.maxFrames) {
      stopReason = `stopped after ${options.maxFrames} frames`;
      break;
    }
    if (frame.symbol && ENTRY.test(frame.symbol) && fp) {
      // x29 points at pt_regs->stackframe: the registers the entry saved lie around it.
      const saved = readPtRegs(mem, fp - stackframe);
      if (saved) {
        const userMode = ((saved.get("cpsr") ?? 0n) & 0xcn) === 0n;
        frame.boundary = { kind: entryKind(frame.symbol, saved), regs: saved, userMode };
        if (userMode) {
          user = saved;
          break;
        }
      }
    }
    if (fp === 0n) break;
    if (fp & 0x7n) {
      stopReason = `misaligned frame pointer 0x${fp.toString(16)}`;
      break;
    }
    const s = stackOf(fp);
    if (strict && stacks.length && !s) {
      stopReason = `frame record 0x${fp.toString(16)} is on no known stack`;
      break;
    }
    if (seen.has(fp) || (s && s === stackOf(prevFp) && fp <= prevFp)) {
      stopReason = `frame records go the wrong way at 0x${fp.toString(16)}`;
      break;
    }
    seen.add(fp);
    const rec = new Uint8Array(16);
    if (mem.read(fp, rec).error !== undefined) {
      stopReason = `frame record at 0x${fp.toString(16)} not readable`;
      break;
    }
    const v = new DataView(rec.buffer);
    const nextFp = v.getBigUint64(0, true);
    const pc = strip(v.getBigUint64(8, true));
    if (pc === 0n) break; // the final record of a task (zeroed by the entry from user mode)
    prevFp = fp;
    frame = push(pc, fp + 16n, fp);
    fp = nextFp;
  }
  const bt: Backtrace = { frames };
  if (stopReason) bt.stopReason = stopReason;
  if (user) bt.user = user;
  return bt;
}

function entryKind(name: string, regs: RegisterValues): FrameBoundary["kind"] {
  if (/_(irq|fiq)$/.test(name)) return "interrupt";
  // An SVC from user mode: syscallno is kept, and x8 carries the number on arm64.
  if (name.startsWith("el0") && name.endsWith("_sync") && regs.get("syscallno") !== undefined) {
    return "syscall";
  }
  return "exception";
}

/** The arm64 pt_regs head (x0–x30, sp, pc, pstate) and syscallno, by gdb register names. */
function readPtRegs(mem: VirtualMemory, at: bigint): Map<string, bigint> | undefined {
  const buf = new Uint8Array(36 * 8);
  if (mem.read(at, buf).error !== undefined) return undefined;
  const v = new DataView(buf.buffer);
  const out = new Map<string, bigint>();
  for (let i = 0; i < 31; i++) out.set(`x${i}`, v.getBigUint64(i * 8, true));
  out.set("sp", v.getBigUint64(31 * 8, true));
  out.set("pc", v.getBigUint64(32 * 8, true));
  out.set("cpsr", v.getBigUint64(33 * 8, true) & 0xffffffffn);
  // orig_x0 at 34, syscallno (s32) at 35: -1 (NO_SYSCALL) when the entry was no syscall.
  const nr = v.getInt32(35 * 8, true);
  if (nr >= 0) out.set("syscallno", BigInt(nr));
  return out;
}
