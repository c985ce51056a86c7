/**
 * Per-CPU saved state from dump notes: NT_PRSTATUS and QEMU's own CPU notes.
 *
 * @module
 */

import type { ArchName } from "./target.ts";
import { PT_REGS_NAMES } from "./regs_x86_64.ts";

/** NT_PRSTATUS note type. */
export const NT_PRSTATUS = 1;

/** Saved state of one CPU as found in the dump. */
export interface CpuState {
  /** Index of the CPU in note order (the kernel and QEMU write one note per CPU, in CPU order). */
  cpu: number;
  /** `pr_pid`: the Linux pid of the running task (kernel kdump), or the vCPU number + 1 (QEMU). */
  pid: number;
  /** Registers by gdb name. */
  registers: Map<string, bigint>;
}

// struct elf_prstatus: siginfo (12) + cursig (2) + pad (2) + sigpend (8) + sighold (8) = 32,
// then pr_pid at 32, ppid, pgrp, sid, four struct timevals (64): pr_reg starts at 112.
const PR_PID = 32;
const PR_REG = 112;

/** x86_64 `struct user_regs_struct` order, in gdb's register names. */
const X86_64_PRSTATUS_REGS = [...PT_REGS_NAMES, "fs_base", "gs_base", "ds", "es", "fs", "gs"];

/** aarch64 `struct user_pt_regs`: x0..x30, sp, pc, pstate (gdb calls it cpsr). */
const AARCH64_PRSTATUS_REGS = [
  ...Array.from({ length: 31 }, (_, i) => `x${i}`),
  "sp",
  "pc",
  "cpsr",
];

/** Register names of NT_PRSTATUS for an architecture, in note order. */
export function prstatusRegisterNames(arch: ArchName): readonly string[] {
  return arch === "x86_64" ? X86_64_PRSTATUS_REGS : AARCH64_PRSTATUS_REGS;
}

/** Decode one NT_PRSTATUS descriptor; undefined when it is too short for the architecture. */
export function parsePrstatus(arch: ArchName, cpu: number, desc: Uint8Array): CpuState | undefined {
  const names = prstatusRegisterNames(arch);
  if (desc.length < PR_REG + names.length * 8) return undefined;
  const v = new DataView(desc.buffer, desc.byteOffset, desc.byteLength);
  const registers = new Map<string, bigint>();
  names.forEach((name, i) => registers.set(name, v.getBigUint64(PR_REG + i * 8, true)));
  if (arch === "aarch64") {
    // gdb's cpsr is 32 bits wide.
    registers.set("cpsr", registers.get("cpsr")! & 0xffffffffn);
  }
  return { cpu, pid: v.getInt32(PR_PID, true), registers };
}

/** Control registers and segment bases from QEMU's x86_64 "QEMU" note (QEMUCPUState). */
export interface QemuCpuState {
  /** CR0. */
  cr0: bigint;
  /** CR2: the last page-fault address. */
  cr2: bigint;
  /** CR3: physical address of the top page table, with its flag bits. */
  cr3: bigint;
  /** CR4. */
  cr4: bigint;
  /** FS segment base (a user thread's TLS). */
  fsBase: bigint;
  /** GS segment base (the per-CPU area while in the kernel). */
  gsBase: bigint;
  /** The KERNEL_GS_BASE MSR (the swapped-out GS base), in newer QEMU's notes only. */
  kernelGsBase?: bigint;
}

// QEMUCPUState: version u32, size u32, 16 GPRs + rip + rflags (18 x u64) = 8 + 144 = 152,
// then 10 segments (cs ds es fs gs ss ldt tr gdt idt) of 24 bytes {selector, limit, flags, pad,
// base}, then cr[5], then kernel_gs_base (version 1 notes of newer QEMU).
const QEMU_SEGMENTS = 152;
const QEMU_SEGMENT_SIZE = 24;
const QEMU_CR = QEMU_SEGMENTS + 10 * QEMU_SEGMENT_SIZE;

/** Decode QEMU's x86_64 CPU note; undefined if it is not one. */
export function parseQemuCpuState(desc: Uint8Array): QemuCpuState | undefined {
  if (desc.length < QEMU_CR + 5 * 8) return undefined;
  const v = new DataView(desc.buffer, desc.byteOffset, desc.byteLength);
  const size = v.getUint32(4, true);
  if (size > desc.length || size < QEMU_CR + 5 * 8) return undefined;
  const segBase = (i: number) => v.getBigUint64(QEMU_SEGMENTS + i * QEMU_SEGMENT_SIZE + 16, true);
  const cr = (i: number) => v.getBigUint64(QEMU_CR + i * 8, true);
  const state: QemuCpuState = {
    cr0: cr(0),
    cr2: cr(2),
    cr3: cr(3),
    cr4: cr(4),
    fsBase: segBase(3),
    gsBase: segBase(4),
  };
  if (size >= QEMU_CR + 6 * 8) state.kernelGsBase = v.getBigUint64(QEMU_CR + 40, true);
  return state;
}

/**
 * Add the control registers of QEMU's notes (cr0, cr2, cr3, cr4, and k_gs_base when the note
 * has it) to each CPU's registers, under the names QEMU's gdbstub and gdb use, so that gdb's
 * `$cr3` shows them. The notes come in CPU order, like NT_PRSTATUS. QEMU's note has no CR8 or
 * EFER: those stay unavailable.
 */
export function addQemuControlRegisters(
  cpus: readonly CpuState[],
  qemuCpus: readonly QemuCpuState[],
): void {
  for (let i = 0; i < cpus.length && i < qemuCpus.length; i++) {
    const q = qemuCpus[i];
    const r = cpus[i].registers;
    if (q.kernelGsBase !== undefined) r.set("k_gs_base", q.kernelGsBase);
    r.set("cr0", q.cr0);
    r.set("cr2", q.cr2);
    r.set("cr3", q.cr3);
    r.set("cr4", q.cr4);
  }
}
