/**
 * x86_64 kernel stack unwinding by the kernel's own ORC tables, the way its `unwind_orc.c` walks
 * them: call frames, interrupt and exception frames (a `struct pt_regs`, whole or only the
 * hardware's iret frame), across the per-CPU IRQ and exception stacks onto the task's stack, and
 * to the syscall entry, where the user registers end the walk.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { VirtualMemory } from "./paging.ts";
import type { RegisterValues } from "./target.ts";
import type { Backtrace, BacktraceFrame, FrameBoundary } from "./backtrace.ts";
import { ORC_REG, type OrcEntry, OrcTable } from "./orc.ts";
import { formatAddress, symbolAt } from "./symbolize.ts";
import { threadSize } from "./tasks.ts";
import { type KernelModule, moduleAt } from "./modules.ts";
import { PT_REGS_NAMES } from "./regs_x86_64.ts";

/** A stack the walk may run on: [start, end). */
export interface StackArea {
  /** The kernel's name for it: TASK, IRQ, NMI, #DF, #DB, #MC, #VC, #VC2. */
  name: string;
  start: bigint;
  end: bigint;
}

const PT_REGS_SIZE = PT_REGS_NAMES.length * 8;
/** offsetof(struct pt_regs, ip): where the hardware's iret frame starts. */
const IRET_FRAME_OFFSET = 16 * 8;
const REG_INDEX: Record<string, number> = Object.fromEntries(
  PT_REGS_NAMES.map((n, i) => [n, i]),
);
/** ORC base registers that live in pt_regs, by their index there. */
const ORC_PT_REG: Record<number, number> = {
  [ORC_REG.R10]: REG_INDEX.r10,
  [ORC_REG.R13]: REG_INDEX.r13,
  [ORC_REG.DI]: REG_INDEX.rdi,
  [ORC_REG.DX]: REG_INDEX.rdx,
};
/** The exception stacks of `struct cea_exception_stacks`, with the kernel's names. */
const EXCEPTION_STACKS: [string, string][] = [
  ["DF_stack", "#DF"],
  ["NMI_stack", "NMI"],
  ["DB_stack", "#DB"],
  ["MCE_stack", "#MC"],
  ["VC_stack", "#VC"],
  ["VC2_stack", "#VC2"],
];

const orcTables = new WeakMap<Kernel, OrcTable | null>();

/** The kernel's ORC tables, opened once per kernel. */
export function orcTable(kernel: Kernel): OrcTable | undefined {
  let t = orcTables.get(kernel);
  if (t === undefined) {
    t = OrcTable.open(kernel) ?? null;
    orcTables.set(kernel, t);
  }
  return t ?? undefined;
}

const cpuStacks = new WeakMap<Kernel, Map<number, StackArea[]>>();

/** The per-CPU stacks of one CPU: its IRQ stack and its exception stacks. */
export function x86CpuStacks(kernel: Kernel, cpu: number): StackArea[] {
  let byCpu = cpuStacks.get(kernel);
  if (!byCpu) cpuStacks.set(kernel, byCpu = new Map());
  const known = byCpu.get(cpu);
  if (known) return known;
  const out: StackArea[] = [];
  const mem = kernel.memory;
  const btf = kernel.btf;
  const size = BigInt(threadSize(kernel).bytes);
  if (mem) {
    // hardirq_stack_ptr points at the top-most word (Linux 6.2+ keeps it in pcpu_hot).
    let ptrAddr = kernel.perCpu("hardirq_stack_ptr", cpu);
    if (ptrAddr === undefined && btf) {
      const hot = kernel.perCpu("pcpu_hot", cpu);
      const m = btf.member("pcpu_hot", "hardirq_stack_ptr");
      if (hot !== undefined && m) ptrAddr = hot + BigInt(m.offset);
    }
    const top = ptrAddr !== undefined ? mem.readU64(ptrAddr) : undefined;
    if (top) out.push({ name: "IRQ", start: top + 8n - size, end: top + 8n });
    const cea = kernel.perCpu("cea_exception_stacks", cpu);
    const base = cea !== undefined ? mem.readU64(cea) : undefined;
    if (base && btf) {
      for (const [member, name] of EXCEPTION_STACKS) {
        const m = btf.member("cea_exception_stacks", member);
        if (m) {
          const start = base + BigInt(m.offset);
          out.push({ name, start, end: start + BigInt(m.size) });
        }
      }
    }
  }
  byCpu.set(cpu, out);
  return out;
}

const moduleTables = new WeakMap<KernelModule, OrcTable | null>();

/** The ORC entry of a module's code, from that module's own tables. */
function moduleOrc(kernel: Kernel, core: OrcTable, ip: bigint): OrcEntry | undefined {
  const mod = moduleAt(kernel, ip);
  if (!mod?.orc) return undefined;
  let t = moduleTables.get(mod);
  if (t === undefined) {
    const o = mod.orc;
    t = core.forModule(o.ipTable, o.orcTable, o.count, mod.textStart, mod.textEnd);
    moduleTables.set(mod, t);
  }
  return t?.find(ip);
}

/** Where one unwind step stands, as the kernel's `struct unwind_state`. */
interface State {
  ip: bigint;
  sp: bigint;
  bp: bigint;
  /** ip is exact (interrupted there), not a return address. */
  signal: boolean;
  /** Address of the last pt_regs met, and whether it is whole or only its iret frame. */
  regs?: bigint;
  fullRegs: boolean;
  prevRegs?: bigint;
}

/** Options of {@link unwindX86_64}. */
export interface X86UnwindOptions {
  /** Base of the task's stack (`task->stack`), when known. */
  taskStack?: bigint;
  cpu?: number;
  maxFrames: number;
  /** The registers' rip is a return address (a sleeping task's switch frame). */
  returnAddress?: boolean;
}

/** Backtrace of an x86_64 kernel stack from its registers by the ORC tables. */
export function unwindX86_64(
  kernel: Kernel,
  regs: RegisterValues,
  options: X86UnwindOptions,
): Backtrace {
  const mem = kernel.memory;
  const ip0 = regs.get("rip");
  const sp0 = regs.get("rsp");
  if (!mem || ip0 === undefined || sp0 === undefined) {
    return { frames: [], stopReason: "no saved rip/rsp" };
  }
  const stacks: StackArea[] = [];
  if (options.taskStack) {
    const size = BigInt(threadSize(kernel).bytes);
    stacks.push({ name: "TASK", start: options.taskStack, end: options.taskStack + size });
  }
  if (options.cpu !== undefined) stacks.push(...x86CpuStacks(kernel, options.cpu));
  const stackOf = (sp: bigint) => stacks.find((s) => sp >= s.start && sp < s.end);

  const frames: BacktraceFrame[] = [];
  const cs0 = regs.get("cs");
  const push = (ip: bigint, sp: bigint, exact: boolean, reliable: boolean) => {
    const hit = symbolAt(kernel, exact ? ip : ip - 1n);
    const f: BacktraceFrame = {
      pc: ip,
      sp,
      text: formatAddress(kernel, ip, !exact),
      reliable,
    };
    if (hit) f.symbol = hit.name;
    const s = stackOf(sp);
    if (s) f.stack = s.name;
    frames.push(f);
    return f;
  };
  if (cs0 !== undefined && (cs0 & 3n) === 3n) {
    // The CPU was in user mode: no kernel frames in these registers.
    return {
      frames: [],
      stopReason: "the registers are in user mode",
      user: regs,
    };
  }
  const orc = orcTable(kernel);
  if (!orc) {
    push(ip0, sp0, !options.returnAddress, true);
    return { frames, stopReason: "no ORC tables in the dump (symbols __start_orc_unwind_ip …)" };
  }
  const st: State = {
    ip: ip0,
    sp: sp0,
    bp: regs.get("rbp") ?? 0n,
    signal: !options.returnAddress,
    fullRegs: false,
  };
  let frame = push(st.ip, st.sp, st.signal, true);
  let reliable = true;
  const r64 = (a: bigint) => mem.readU64(a);
  const getReg = (index: number): bigint | undefined => {
    if (st.regs === undefined) return undefined;
    if (st.fullRegs) return r64(st.regs + BigInt(index * 8));
    if (st.prevRegs !== undefined) return r64(st.prevRegs + BigInt(index * 8));
    return undefined;
  };
  // The first registers are known whole (the CPU's, or the switch frame's callee-saved ones).
  const initial = (index: number) => regs.get(PT_REGS_NAMES[index]);

  let stopReason: string | undefined;
  let user: RegisterValues | undefined;
  for (let n = 0; n < 4096; n++) {
    if (frames.length >= options.maxFrames) {
      stopReason = `stopped after ${options.maxFrames} frames`;
      break;
    }
    if (st.regs !== undefined) {
      const cs = r64(st.regs + BigInt(REG_INDEX.cs * 8));
      if (cs !== undefined && (cs & 3n) === 3n) break; // the user/kernel boundary: done
    }
    const lookupIp = st.signal ? st.ip : st.ip - 1n;
    let e: OrcEntry | undefined = orc.find(lookupIp) ?? moduleOrc(kernel, orc, lookupIp);
    if (!e) {
      // Like the kernel: assume a frame pointer, and mark what follows as a guess.
      if (!st.bp) {
        stopReason = `no ORC entry for 0x${st.ip.toString(16)}`;
        break;
      }
      e = {
        ip: st.ip,
        spOffset: 16,
        bpOffset: -16,
        spReg: ORC_REG.BP,
        bpReg: ORC_REG.PREV_SP,
        type: "call",
        signal: false,
      };
      reliable = false;
    }
    if (e.type === "end") break;
    if (e.type === "undefined") {
      stopReason = `ORC has no unwind data at ${formatAddress(kernel, st.ip, !st.signal)}`;
      break;
    }
    const prevSp = st.sp;
    const prevStack = stackOf(prevSp);
    let sp: bigint | undefined;
    let indirect = false;
    switch (e.spReg) {
      case ORC_REG.SP:
        sp = st.sp + BigInt(e.spOffset);
        break;
      case ORC_REG.BP:
        sp = st.bp + BigInt(e.spOffset);
        break;
      case ORC_REG.SP_INDIRECT:
        sp = st.sp;
        indirect = true;
        break;
      case ORC_REG.BP_INDIRECT:
        sp = st.bp + BigInt(e.spOffset);
        indirect = true;
        break;
      default: {
        const idx = ORC_PT_REG[e.spReg];
        if (idx !== undefined) sp = n === 0 ? initial(idx) : getReg(idx);
      }
    }
    if (sp === undefined) {
      stopReason = `cannot find the caller's stack at ${frame.text}`;
      break;
    }
    if (indirect) {
      sp = r64(sp);
      if (sp === undefined) {
        stopReason = `stack not readable at ${frame.text}`;
        break;
      }
      if (e.spReg === ORC_REG.SP_INDIRECT) sp += BigInt(e.spOffset);
    }
    sp &= 0xffffffffffffffffn;
    let boundary: FrameBoundary | undefined;
    if (e.type === "call") {
      const ip = r64(sp - 8n);
      if (ip === undefined) {
        stopReason = `return address not readable at 0x${(sp - 8n).toString(16)}`;
        break;
      }
      st.ip = ip;
      st.sp = sp;
      st.regs = undefined;
      st.prevRegs = undefined;
      st.signal = e.signal;
    } else if (e.type === "regs") {
      const saved = readPtRegs(mem, sp, false);
      if (!saved) {
        stopReason = `registers not readable at 0x${sp.toString(16)}`;
        break;
      }
      st.ip = saved.get("rip")!;
      st.sp = saved.get("rsp")!;
      st.regs = sp;
      st.prevRegs = undefined;
      st.fullRegs = true;
      st.signal = true;
      boundary = { kind: entryKind(frame, saved), regs: saved, userMode: isUser(saved) };
    } else {
      const at = sp - BigInt(IRET_FRAME_OFFSET);
      const saved = readPtRegs(mem, at, true);
      if (!saved) {
        stopReason = `iret frame not readable at 0x${sp.toString(16)}`;
        break;
      }
      st.ip = saved.get("rip")!;
      st.sp = saved.get("rsp")!;
      st.prevRegs = st.fullRegs ? st.regs : undefined;
      st.regs = at;
      st.fullRegs = false;
      st.signal = true;
      boundary = { kind: entryKind(frame, saved), regs: saved, userMode: isUser(saved) };
    }
    let bpFailed = false;
    switch (e.bpReg) {
      case ORC_REG.UNDEFINED: {
        const v = getReg(REG_INDEX.rbp);
        if (v !== undefined) st.bp = v;
        break;
      }
      case ORC_REG.PREV_SP: {
        const v = r64(sp + BigInt(e.bpOffset));
        if (v === undefined) bpFailed = true;
        else st.bp = v;
        break;
      }
      case ORC_REG.BP: {
        const v = r64(st.bp + BigInt(e.bpOffset));
        if (v === undefined) bpFailed = true;
        else st.bp = v;
        break;
      }
      default:
        bpFailed = true;
    }
    if (boundary) frame.boundary = boundary;
    if (boundary?.userMode) {
      user = boundary.regs;
      break;
    }
    if (bpFailed) {
      stopReason = `frame pointer not readable at ${frame.text}`;
      break;
    }
    // Bad data must not loop: on one stack, the walk only goes up.
    const nextStack = stackOf(st.sp);
    if (nextStack && nextStack === prevStack && st.sp <= prevSp) {
      stopReason = `stack going in the wrong direction at ${frame.text}`;
      break;
    }
    if (stacks.length && !nextStack) {
      stopReason = `stack pointer 0x${st.sp.toString(16)} is on no known stack`;
      break;
    }
    if (st.ip === 0n) break;
    frame = push(st.ip, st.sp, st.signal, reliable);
  }
  const bt: Backtrace = { frames };
  if (stopReason) bt.stopReason = stopReason;
  if (user) bt.user = user;
  return bt;
}

function isUser(regs: RegisterValues): boolean {
  return ((regs.get("cs") ?? 0n) & 3n) === 3n;
}

/** What kind of entry saved these registers, told by the entry code's symbol. */
function entryKind(frame: BacktraceFrame, regs: RegisterValues): FrameBoundary["kind"] {
  const name = frame.symbol ?? "";
  if (/^entry_(SYSCALL|SYSENTER|INT80)/.test(name)) return "syscall";
  if (name.startsWith("asm_exc_nmi") || name.startsWith("nmi") || frame.stack === "NMI") {
    return "nmi";
  }
  if (/^(asm_sysvec_|asm_common_interrupt|asm_spurious_interrupt|irq_entries_start)/.test(name)) {
    return "interrupt";
  }
  if (name.startsWith("asm_exc_")) return "exception";
  return isUser(regs) ? "user" : "exception";
}

/** A pt_regs (or, `partial`, only its iret frame: ip cs flags sp ss) by gdb register names. */
function readPtRegs(
  mem: VirtualMemory,
  at: bigint,
  partial: boolean,
): Map<string, bigint> | undefined {
  const from = partial ? IRET_FRAME_OFFSET : 0;
  const buf = new Uint8Array(PT_REGS_SIZE - from);
  if (mem.read(at + BigInt(from), buf).error !== undefined) return undefined;
  const v = new DataView(buf.buffer);
  const out = new Map<string, bigint>();
  for (let i = from / 8; i < PT_REGS_NAMES.length; i++) {
    out.set(PT_REGS_NAMES[i], v.getBigUint64(i * 8 - from, true));
  }
  return out;
}

/**
 * Kernel frames of a CPU whose saved registers are user mode. A kdump taken by NMI records, for
 * a CPU that was in user mode, the user registers the NMI interrupted; its kernel frames
 * (`exc_nmi`, `crash_nmi_callback`, …) are on the task's stack below the `struct pt_regs` at its
 * top. They are found as crash does, by scanning: the lowest stack word holding a kernel return
 * address from which the ORC unwind reaches exactly that pt_regs, with the same user registers.
 * The first frame is a guess (it may be a return address left by an earlier call).
 */
export function scanUserModeCpu(
  kernel: Kernel,
  regs: RegisterValues,
  options: X86UnwindOptions,
): Backtrace | undefined {
  const mem = kernel.memory;
  const orc = orcTable(kernel);
  const base = options.taskStack;
  const text = [kernel.symbol("_stext"), kernel.symbol("_etext")];
  if (!mem || !orc || !base || text[0] === undefined || text[1] === undefined) return undefined;
  const size = threadSize(kernel).bytes;
  const stack = new Uint8Array(size);
  if (mem.read(base, stack).error !== undefined) return undefined;
  const v = new DataView(stack.buffer);
  const userIp = regs.get("rip");
  const userSp = regs.get("rsp");
  // The pt_regs sit at the very top; nothing of the kernel's lies above them.
  for (let o = 0; o + 8 <= size - PT_REGS_SIZE; o += 8) {
    const w = v.getBigUint64(o, true);
    if (w <= text[0]! || w >= text[1]!) continue;
    if (!orc.find(w - 1n)) continue;
    const start = new Map<string, bigint>([["rip", w], ["rsp", base + BigInt(o + 8)], ["rbp", 0n]]);
    const bt = unwindX86_64(kernel, start, { ...options, returnAddress: true });
    if (!bt.user || bt.user.get("rip") !== userIp || bt.user.get("rsp") !== userSp) continue;
    bt.frames[0].reliable = false;
    bt.note = "the CPU's saved registers are user mode: kernel frames found by scanning its " +
      "task's stack (an NMI taken in user mode leaves them there); the innermost ones may be " +
      "left over from earlier calls";
    return bt;
  }
  return undefined;
}
