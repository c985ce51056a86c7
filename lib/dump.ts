/**
 * The physical-memory view every dump format presents, whatever its layout on disk.
 *
 * @module
 */

import type { ArchName } from "./target.ts";
import type { ElfNote } from "./elf.ts";
import type { CpuState, QemuCpuState } from "./cpu_notes.ts";
import type { VmcoreInfo } from "./vmcoreinfo.ts";

/**
 * Outcome of reading one page. Numbers, not strings: this is checked on every page read.
 * Every value other than `Present` and `Zero` means the bytes are not available.
 */
export const PageStatus = {
  /** The page was read into the caller's buffer. */
  Present: 0,
  /** The page is all zeros; the caller's buffer was not touched. */
  Zero: 1,
  /** The page was RAM but the dump level filtered it out (makedumpfile -d). */
  Excluded: 2,
  /** The address is not RAM the dump knows of (a hole, or beyond the dump). */
  Absent: 3,
  /** The page's data is damaged: it failed to decompress, or its descriptor is impossible. */
  Corrupt: 4,
  /** The page was never written: the dump is incomplete (truncated while being saved). */
  Lost: 5,
} as const;

/** One of the `PageStatus` values. */
export type PageStatus = typeof PageStatus[keyof typeof PageStatus];

/** Human wording of a page status, for gdb-facing errors and monitor output. */
export function pageStatusText(status: PageStatus): string {
  switch (status) {
    case PageStatus.Present:
    case PageStatus.Zero:
      return "present";
    case PageStatus.Excluded:
      return "page excluded from the dump (filtered by the dump level)";
    case PageStatus.Absent:
      return "address not in the dump";
    case PageStatus.Corrupt:
      return "page data is corrupt";
    case PageStatus.Lost:
      return "page missing: the dump is incomplete";
  }
  return "unknown";
}

/** A kernel virtual range the dump itself maps to physical memory (ELF PT_LOAD p_vaddr). */
export interface VirtualMapping {
  /** Kernel virtual address of the range's start. */
  vaddr: bigint;
  /** Physical address of its start. */
  paddr: number;
  /** Length in bytes. */
  size: number;
}

/** A dump file (or set of files) read as pages of physical memory. */
export interface DumpReader {
  /** Short format description, e.g. "ELF", "kdump (zlib)", "flattened kdump (zlib)". */
  readonly format: string;
  /** The files read, as the user named them. */
  readonly files: readonly string[];
  /** Architecture of the dumped machine. */
  readonly arch: ArchName;
  /** Page size of the dump (also the unit of `readPage`). */
  readonly pageSize: number;
  /** One past the highest page frame number the dump describes. */
  readonly maxPfn: number;
  /** Every ELF note found (NT_PRSTATUS, VMCOREINFO, QEMU, …). */
  readonly notes: readonly ElfNote[];
  /** VMCOREINFO, when the dump carries it. */
  readonly vmcoreinfo?: VmcoreInfo;
  /** Saved CPU states, one per CPU, in CPU order. */
  readonly cpus: readonly CpuState[];
  /** QEMU's per-CPU notes (control registers), when the dump came from QEMU. */
  readonly qemuCpus: readonly QemuCpuState[];
  /** True when pages are compressed, so decoded pages are worth caching. */
  readonly compressed: boolean;
  /**
   * True for a running guest seen at a stop: its memory changes between stops, and it has
   * usually not panicked, so what a dump finds once (the panic CPU from the log) is not looked
   * for at every stop.
   */
  readonly live?: boolean;
  /**
   * A CPU's `current` task pointer from a register that holds it, for a target that can read one
   * the saved registers lack (a live arm64 vCPU's SP_EL0 in the kernel); undefined otherwise.
   */
  kernelCurrent?(cpu: number): bigint | undefined;
  /** Things the user should know about the file (e.g. "the dump is incomplete"). */
  readonly warnings: readonly string[];
  /** Extra facts for the banner (dump level, CPU that saved the dump, …). */
  readonly details: Readonly<Record<string, string | number>>;
  /** Kernel virtual ranges the dump maps itself (ELF vmcores from the kernel's kdump). */
  readonly virtualMappings: readonly VirtualMapping[];
  /**
   * Read page `pfn` into `out` (exactly `pageSize` bytes). Never throws for damaged data: returns
   * `Corrupt` and leaves a description in `lastError`.
   */
  readPage(pfn: number, out: Uint8Array): PageStatus;
  /**
   * For uncompressed formats: read `out.length` bytes at physical address `paddr`, all within
   * one page, straight from the file. Absent for formats that must decode whole pages.
   */
  readDirect?(paddr: number, out: Uint8Array): PageStatus;
  /** Description of the last `Corrupt` result. */
  readonly lastError: string;
  /** Close the files. */
  close(): void;
}
