/**
 * ELF64 vmcores: QEMU `dump-guest-memory`, the kernel's own /proc/vmcore copy, makedumpfile -E.
 *
 * Physical memory comes from PT_LOAD p_paddr; bytes between p_filesz and p_memsz are RAM that
 * is not in the file (makedumpfile -E writes filtered pages that way).
 *
 * @module
 */

import type { ByteSource } from "./file_source.ts";
import {
  type ElfNote,
  EM_AARCH64,
  EM_X86_64,
  PT_LOAD,
  readElfHeader,
  readNoteSegments,
  readProgramHeaders,
} from "./elf.ts";
import { DumpError } from "./errors.ts";
import { type DumpReader, PageStatus, type VirtualMapping } from "./dump.ts";
import {
  addQemuControlRegisters,
  type CpuState,
  NT_PRSTATUS,
  parsePrstatus,
  parseQemuCpuState,
  type QemuCpuState,
} from "./cpu_notes.ts";
import { VmcoreInfo } from "./vmcoreinfo.ts";
import type { ArchName } from "./target.ts";

/** A physical range and where its bytes start in the file. */
interface Extent {
  start: number;
  end: number;
  fileOffset: number;
  /** A missing range that the file would hold but for ending early. */
  cut?: boolean;
}

/** `e_type` of an executable (a vmlinux) and of a core file (a vmcore). */
const ET_EXEC = 2;
const ET_CORE = 4;
const ELF_TYPES: Record<number, string> = {
  1: "a relocatable object (ET_REL)",
  2: "an executable (ET_EXEC)",
  3: "a shared object or PIE (ET_DYN)",
};

/** Reads an ELF vmcore. */
export class ElfDumpReader implements DumpReader {
  readonly format: string;
  readonly files: readonly string[];
  readonly arch: ArchName;
  readonly pageSize: number;
  readonly maxPfn: number;
  readonly notes: readonly ElfNote[];
  readonly vmcoreinfo?: VmcoreInfo;
  readonly cpus: readonly CpuState[];
  readonly qemuCpus: readonly QemuCpuState[];
  readonly compressed = false;
  readonly warnings: string[] = [];
  readonly details: Record<string, string | number> = {};
  readonly virtualMappings: VirtualMapping[] = [];
  lastError = "";

  #src: ByteSource;
  /** In-file ranges, sorted and disjoint, as parallel arrays for a fast binary search. */
  #starts: Float64Array;
  #ends: Float64Array;
  #offsets: Float64Array;
  /** RAM ranges whose bytes are not in the file, sorted. */
  #missing: Extent[];

  /**
   * Read an ELF vmcore's program headers and notes; throws DumpError naming the file on a
   * damaged one.
   * @param src the ELF bytes (a file, or a reassembled flattened stream)
   * @param formatName how `format` names it (`flattened ELF` for a reassembled stream)
   */
  constructor(src: ByteSource, formatName = "ELF") {
    this.#src = src;
    this.files = [src.name];
    this.format = formatName;
    const hdr = readElfHeader(src);
    if (hdr.type !== ET_CORE) {
      // A vmlinux (ET_EXEC) is the likeliest mistake: the dump and --vmlinux swapped.
      const what = ELF_TYPES[hdr.type] ?? `an ELF file of type ${hdr.type}`;
      throw new DumpError(
        src.name,
        "ELF header",
        `${what}, not a vmcore (ET_CORE)` +
          (hdr.type === ET_EXEC
            ? ": a vmlinux? give the dump first and the vmlinux with --vmlinux"
            : ""),
      );
    }
    if (hdr.machine === EM_X86_64) this.arch = "x86_64";
    else if (hdr.machine === EM_AARCH64) this.arch = "aarch64";
    else throw new DumpError(src.name, "ELF header", `unsupported machine ${hdr.machine}`);
    const phdrs = readProgramHeaders(src, hdr);
    this.notes = readNoteSegments(src, phdrs);

    const present: Extent[] = [];
    const missing: Extent[] = [];
    let loads = 0;
    // A truncated file: serve what is there and say so once.
    let cutSegments = 0;
    let needed = 0;
    for (const ph of phdrs) {
      if (ph.type !== PT_LOAD) continue;
      loads++;
      const start = Number(ph.paddr);
      if (ph.paddr > BigInt(Number.MAX_SAFE_INTEGER) || ph.memsz < ph.filesz) {
        throw new DumpError(src.name, "ELF program headers", "PT_LOAD with impossible sizes");
      }
      if (ph.offset + ph.filesz > src.size) {
        const have = Math.max(0, src.size - ph.offset);
        cutSegments++;
        needed = Math.max(needed, ph.offset + ph.filesz);
        if (have > 0) present.push({ start, end: start + have, fileOffset: ph.offset });
        missing.push({ start: start + have, end: start + ph.filesz, fileOffset: -1, cut: true });
        if (ph.memsz > ph.filesz) {
          missing.push({ start: start + ph.filesz, end: start + ph.memsz, fileOffset: -1 });
        }
        continue;
      }
      if (ph.filesz > 0) present.push({ start, end: start + ph.filesz, fileOffset: ph.offset });
      if (ph.memsz > ph.filesz) {
        missing.push({ start: start + ph.filesz, end: start + ph.memsz, fileOffset: -1 });
      }
      if (ph.vaddr !== 0n && ph.vaddr !== ph.paddr && ph.filesz > 0) {
        this.virtualMappings.push({ vaddr: ph.vaddr, paddr: start, size: ph.filesz });
      }
    }
    if (loads === 0) throw new DumpError(src.name, "ELF program headers", "no PT_LOAD segment");

    const disjoint = makeDisjoint(present);
    this.#starts = Float64Array.from(disjoint, (e) => e.start);
    this.#ends = Float64Array.from(disjoint, (e) => e.end);
    this.#offsets = Float64Array.from(disjoint, (e) => e.fileOffset);
    this.#missing = missing.sort((a, b) => a.start - b.start);

    const vmci = this.notes.find((n) => n.name === "VMCOREINFO");
    if (vmci) this.vmcoreinfo = new VmcoreInfo(vmci.desc);
    // PAGESIZE only sets the unit of readPage here; a damaged value must not make pages of
    // 409 or 2^40 bytes (the page cache allocates whole pages).
    const declared = this.vmcoreinfo?.pageSize;
    this.pageSize = 4096;
    if (declared !== undefined) {
      if (isPageSize(declared)) this.pageSize = declared;
      else this.warnings.push(`VMCOREINFO PAGESIZE=${declared} is not a page size: using 4096`);
    }
    // A loop, not Math.max(...): up to 65536 segments would overflow the argument stack.
    let top = 0;
    for (const e of [...disjoint, ...missing]) top = Math.max(top, e.end);
    if (cutSegments) {
      this.warnings.push(
        `the file is shorter than its header says (${src.size} bytes; its PT_LOAD segments ` +
          `end at byte ${needed}, ${cutSegments} of them cut short): pages past its end read ` +
          "as missing",
      );
    }
    this.maxPfn = Math.ceil(top / this.pageSize);
    this.cpus = cpuStates(this.arch, this.notes);
    this.qemuCpus = this.notes.filter((n) => n.name === "QEMU")
      .map((n) => parseQemuCpuState(n.desc))
      .filter((s): s is QemuCpuState => s !== undefined);
    addQemuControlRegisters(this.cpus, this.qemuCpus);
    this.details["ELF segments"] = `${loads} PT_LOAD`;
  }

  readPage(pfn: number, out: Uint8Array): PageStatus {
    return this.readDirect(pfn * this.pageSize, out.subarray(0, this.pageSize));
  }

  readDirect(paddr: number, out: Uint8Array): PageStatus {
    let pos = paddr;
    let done = 0;
    while (done < out.length) {
      const i = this.#find(pos);
      if (i < 0) return this.#whyMissing(pos);
      const n = Math.min(out.length - done, this.#ends[i] - pos);
      const fileAt = this.#offsets[i] + (pos - this.#starts[i]);
      const got = this.#src.readAt(out.subarray(done, done + n), fileAt);
      if (got !== n) {
        this.lastError = `short read at file offset ${fileAt}`;
        return PageStatus.Corrupt;
      }
      done += n;
      pos += n;
    }
    return PageStatus.Present;
  }

  close(): void {
    this.#src.close();
  }

  /** Index of the in-file extent holding `addr`, or -1. */
  #find(addr: number): number {
    const starts = this.#starts;
    let lo = 0;
    let hi = starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (starts[mid] <= addr) lo = mid + 1;
      else hi = mid - 1;
    }
    return hi >= 0 && addr < this.#ends[hi] ? hi : -1;
  }

  #whyMissing(addr: number): PageStatus {
    for (const m of this.#missing) {
      if (addr < m.start || addr >= m.end) continue;
      if (!m.cut) return PageStatus.Excluded;
      this.lastError = `physical 0x${addr.toString(16)} is past the end of the file ` +
        `(${this.#src.size} bytes)`;
      return PageStatus.Lost;
    }
    return PageStatus.Absent;
  }
}

/** True for the page sizes of the architectures we serve: 4 KiB to 64 KiB, a power of two. */
function isPageSize(n: number): boolean {
  return Number.isInteger(n) && n >= 4096 && n <= 65536 && (n & (n - 1)) === 0;
}

/** Clip overlapping extents (the kernel's vmcore maps kernel text twice) so each byte has one. */
function makeDisjoint(extents: Extent[]): Extent[] {
  const sorted = [...extents].sort((a, b) => a.start - b.start || b.end - a.end);
  const out: Extent[] = [];
  let covered = -1;
  for (const e of sorted) {
    if (e.end <= covered) continue;
    if (e.start < covered) {
      const skip = covered - e.start;
      out.push({ start: covered, end: e.end, fileOffset: e.fileOffset + skip });
    } else {
      out.push({ ...e });
    }
    covered = e.end;
  }
  return out;
}

/** CPU states from NT_PRSTATUS notes, in note order. */
export function cpuStates(arch: ArchName, notes: readonly ElfNote[]): CpuState[] {
  const cpus: CpuState[] = [];
  for (const n of notes) {
    if (n.name !== "CORE" || n.type !== NT_PRSTATUS) continue;
    const state = parsePrstatus(arch, cpus.length, n.desc);
    if (state) cpus.push(state);
  }
  return cpus;
}
