/**
 * A stopped live QEMU guest presented as a {@link DumpReader}: pages of physical memory from the
 * shared RAM file (pread) or, without it, from QEMU's gdbstub in physical mode (`m` of at most
 * 0x800 bytes); CPU states from the gdbstub's `g` of each vCPU, decoded by the register names of
 * QEMU's own target description; VMCOREINFO as found in guest memory. The kernel view, the
 * kernel/tasks targets and the monitor commands then work on it unchanged.
 *
 * A snapshot describes one stop: after a resume the live target points it at the next stop's
 * registers ({@link LiveDump.nextStop}), or builds a new one when the kernel may have changed.
 *
 * @module
 */

import { type DumpReader, PageStatus, type VirtualMapping } from "./dump.ts";
import type { ElfNote } from "./elf.ts";
import type { CpuState, QemuCpuState } from "./cpu_notes.ts";
import type { VmcoreInfo } from "./vmcoreinfo.ts";
import type { ArchName } from "./target.ts";
import type { QemuStub } from "./qemu_stub.ts";
import type { GuestRam, RamRange } from "./guest_ram.ts";
import { decodeRegisters, type StubDescription } from "./target_xml.ts";
import { readSystemRegister } from "./live_discovery.ts";

const PAGE_SIZE = 4096;

/** Where a live guest's memory and registers come from. */
export interface LiveSource {
  stub: QemuStub;
  desc: StubDescription;
  /** The shared RAM file, when given. */
  ram?: GuestRam;
  /** Guest-physical RAM (from `info mtree -f`). */
  ramRanges: readonly RamRange[];
  /** QEMU's thread id of each vCPU, in CPU order (`p1.1`, `p1.2`, …). */
  vcpus: readonly string[];
}

/** Every vCPU's registers by name, read with `Hg` + `g`. */
export function readVcpuRegisters(src: LiveSource): Map<string, bigint>[] {
  return src.vcpus.map((id) => readOneVcpu(src, id));
}

function readOneVcpu(src: LiveSource, id: string): Map<string, bigint> {
  src.stub.selectThread(id);
  return decodeRegisters(src.desc, src.stub.request("g"));
}

/**
 * A vCPU's registers, read from the stub on first use: a stop where gdb only looks at one
 * thread (a `stepi`) costs one `g`, not one per vCPU.
 */
export class LazyRegisters extends Map<string, bigint> {
  #load: (() => Map<string, bigint>) | undefined;

  constructor(load: () => Map<string, bigint>) {
    super();
    this.#load = load;
  }

  /** Whether the registers have been read (or their read was tried). */
  get loaded(): boolean {
    return this.#load === undefined;
  }

  #ready(): void {
    const load = this.#load;
    if (!load) return;
    this.#load = undefined;
    for (const [k, v] of load()) super.set(k, v);
  }

  override get(key: string): bigint | undefined {
    this.#ready();
    return super.get(key);
  }

  override has(key: string): boolean {
    this.#ready();
    return super.has(key);
  }

  override get size(): number {
    this.#ready();
    return super.size;
  }

  override entries(): MapIterator<[string, bigint]> {
    this.#ready();
    return super.entries();
  }

  override keys(): MapIterator<string> {
    this.#ready();
    return super.keys();
  }

  override values(): MapIterator<bigint> {
    this.#ready();
    return super.values();
  }

  override forEach(f: (v: bigint, k: string, m: Map<string, bigint>) => void): void {
    this.#ready();
    super.forEach(f);
  }

  override [Symbol.iterator](): MapIterator<[string, bigint]> {
    return this.entries();
  }
}

/** Every vCPU's registers, each read when first asked for. */
export function lazyVcpuRegisters(src: LiveSource): Map<string, bigint>[] {
  return src.vcpus.map((id) => new LazyRegisters(() => readOneVcpu(src, id)));
}

/** QEMU's x86_64 control registers, in the shape of its dump notes. */
function controlRegisters(regs: Map<string, bigint>): QemuCpuState | undefined {
  const cr3 = regs.get("cr3");
  if (cr3 === undefined) return undefined;
  return {
    cr0: regs.get("cr0") ?? 0n,
    cr2: regs.get("cr2") ?? 0n,
    // The kernel's table even when a user task's PTI table is loaded (bit 12), without PCID.
    cr3: cr3 & ~0x1fffn,
    cr4: regs.get("cr4") ?? 0n,
    fsBase: regs.get("fs_base") ?? 0n,
    gsBase: regs.get("gs_base") ?? 0n,
    kernelGsBase: regs.get("k_gs_base"),
  };
}

function vcpuStates(registers: Map<string, bigint>[]): CpuState[] {
  return registers.map((r, cpu) => ({ cpu, pid: cpu + 1, registers: r }));
}

/** One stop of a live guest, read as a dump. */
export class LiveDump implements DumpReader {
  readonly format: string;
  readonly files: readonly string[];
  readonly arch: ArchName;
  readonly pageSize = PAGE_SIZE;
  readonly maxPfn: number;
  readonly notes: readonly ElfNote[] = [];
  readonly vmcoreinfo?: VmcoreInfo;
  #cpus: CpuState[];
  #registers: Map<string, bigint>[];

  /** Every vCPU, with this stop's registers. */
  get cpus(): readonly CpuState[] {
    return this.#cpus;
  }
  #qemuCpus: QemuCpuState[] | undefined;

  /** Control registers of each vCPU (read when first asked: only without VMCOREINFO). */
  get qemuCpus(): readonly QemuCpuState[] {
    this.#qemuCpus ??= this.arch === "x86_64"
      ? this.#registers.map(controlRegisters).filter((c): c is QemuCpuState => c !== undefined)
      : [];
    return this.#qemuCpus;
  }
  /** Pages from the gdbstub are slow to get: worth caching. The RAM file is read directly. */
  readonly compressed: boolean;
  readonly live = true;
  readonly warnings: readonly string[];
  readonly details: Readonly<Record<string, string | number>>;
  readonly virtualMappings: readonly VirtualMapping[] = [];
  readonly lastError = "";
  readonly readDirect?: (paddr: number, out: Uint8Array) => PageStatus;
  #src: LiveSource;

  /**
   * @param registers every vCPU's registers (from {@link readVcpuRegisters})
   * @param facts VMCOREINFO found, warnings and banner details
   */
  constructor(
    src: LiveSource,
    registers: Map<string, bigint>[],
    facts: {
      vmcoreinfo?: VmcoreInfo;
      warnings?: string[];
      details?: Record<string, string | number>;
    } = {},
  ) {
    this.#src = src;
    this.arch = src.desc.arch;
    this.files = [`QEMU gdbstub ${src.stub.address}`, ...(src.ram ? [src.ram.path] : [])];
    this.format = src.ram
      ? `live QEMU guest, RAM read from ${src.ram.path}`
      : "live QEMU guest, RAM read through the gdbstub";
    const top = Math.max(0, ...src.ramRanges.map((r) => r.end));
    this.maxPfn = Math.ceil(top / PAGE_SIZE);
    this.#cpus = vcpuStates(registers);
    this.#registers = registers;
    this.vmcoreinfo = facts.vmcoreinfo;
    this.warnings = facts.warnings ?? [];
    this.details = facts.details ?? {};
    this.compressed = !src.ram;
    if (src.ram) {
      const ram = src.ram;
      this.readDirect = (paddr, out) =>
        ram.read(paddr, out) ? PageStatus.Present : PageStatus.Absent;
    }
  }

  /**
   * The guest stopped again: this stop's registers, and the link to QEMU it was seen on. The
   * vCPUs, RAM and VMCOREINFO stay those of the same running kernel.
   */
  nextStop(src: LiveSource, registers: Map<string, bigint>[]): void {
    this.#src = src;
    this.#registers = registers;
    this.#cpus = vcpuStates(registers);
    this.#qemuCpus = undefined;
  }

  #isRam(paddr: number): boolean {
    return this.#src.ramRanges.some((r) => paddr >= r.start && paddr < r.end);
  }

  readPage(pfn: number, out: Uint8Array): PageStatus {
    const paddr = pfn * PAGE_SIZE;
    if (!this.#isRam(paddr)) return PageStatus.Absent;
    if (this.#src.ram) {
      return this.#src.ram.read(paddr, out) ? PageStatus.Present : PageStatus.Absent;
    }
    const bytes = this.#src.stub.readMemory(BigInt(paddr), PAGE_SIZE);
    if (bytes.length < PAGE_SIZE) return PageStatus.Absent;
    out.set(bytes);
    return PageStatus.Present;
  }

  /** arm64: SP_EL0, which holds `current` while the vCPU is in the kernel (EL1). */
  kernelCurrent(cpu: number): bigint | undefined {
    if (this.arch !== "aarch64") return undefined;
    const el = ((this.#registers[cpu]?.get("cpsr") ?? 0n) >> 2n) & 3n;
    return el === 1n ? readSystemRegister(this.#src, cpu, "SP_EL0") : undefined;
  }

  close(): void {
    // The stub and the RAM file belong to the live target, which outlives every snapshot.
  }
}
