/**
 * makedumpfile's compressed kdump format (signature `KDUMP   `, older `DISKDUMP`).
 *
 * Layout: block 0 holds disk_dump_header; block 1 the kdump_sub_header (sub_hdr_size blocks);
 * then two bitmaps of bitmap_blocks/2 blocks each (1st: which pfns are RAM, 2nd: which pfns are
 * in the file); then one 24-byte page descriptor per pfn set in the 2nd bitmap, in pfn order;
 * then page data. Bitmaps are read lazily, a block at a time, so opening a dump of any size
 * reads a few kilobytes.
 *
 * @module
 */

import { type ByteSource, readExact } from "./file_source.ts";
import { DumpError } from "./errors.ts";
import { type ElfNote, parseNotes } from "./elf.ts";
import { type DumpReader, PageStatus, type VirtualMapping } from "./dump.ts";
import {
  addQemuControlRegisters,
  type CpuState,
  parseQemuCpuState,
  type QemuCpuState,
} from "./cpu_notes.ts";
import { cpuStates } from "./dump_elf.ts";
import { VmcoreInfo } from "./vmcoreinfo.ts";
import type { ArchName } from "./target.ts";
import { inferArch } from "./infer_arch.ts";
import { CodecError, codecFromFlags, decompressPage, type PageCodec } from "./codecs.ts";

/** disk_dump_header.status bits. */
const DUMP_DH_COMPRESSED_INCOMPLETE = 0x8;
const DUMP_DH_EXCLUDED_VMEMMAP = 0x10;
const STATUS_CODECS: [number, string][] = [
  [0x1, "zlib"],
  [0x2, "lzo"],
  [0x4, "snappy"],
  [0x20, "zstd"],
];

const PAGE_DESC_SIZE = 24;
/** Bitmap bytes per lazily read chunk (32768 pfns). */
const BITMAP_CHUNK = 4096;
/** Granularity of the within-chunk rank table, in bytes. */
const RANK_STEP = 64;
/** Bitmap chunks kept in memory per bitmap. */
const MAX_CHUNKS = 64;
/** Page descriptors are read in batches of this many, and the batches cached. */
const DESC_BATCH = 256;
const MAX_DESC_BATCHES = 64;

const POPCOUNT8 = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT8[i] = (i & 1) + POPCOUNT8[i >> 1];

/** True when the first bytes are a kdump or diskdump signature. */
export function isKdump(head: Uint8Array): boolean {
  const sig = new TextDecoder().decode(head.subarray(0, 8));
  return sig === "KDUMP   " || sig === "DISKDUMP";
}

/** One bitmap chunk with a rank table for fast "set bits before" queries. */
interface BitmapChunk {
  bits: Uint8Array;
  /** Set bits in bits[0 .. k*RANK_STEP). */
  rank: Uint16Array;
}

/** Lazily read bitmap with cumulative counts of set bits, for pfn → descriptor index. */
class LazyBitmap {
  #src: ByteSource;
  #offset: number;
  #bytes: number;
  #chunks = new Map<number, BitmapChunk>();
  /** cumulative[k] = set bits in chunks before k; -1 until computed. */
  #cumulative: Float64Array;
  #cumulativeKnown = 0;

  constructor(src: ByteSource, offset: number, bytes: number) {
    this.#src = src;
    this.#offset = offset;
    this.#bytes = bytes;
    this.#cumulative = new Float64Array(Math.ceil(bytes / BITMAP_CHUNK) + 1);
  }

  /** Whether bit `pfn` is set; false beyond the bitmap. */
  test(pfn: number): boolean {
    const byte = pfn >>> 3;
    if (byte >= this.#bytes) return false;
    const chunk = this.#chunk(Math.floor(byte / BITMAP_CHUNK));
    return (chunk.bits[byte % BITMAP_CHUNK] & (1 << (pfn & 7))) !== 0;
  }

  /** Number of set bits before `pfn`. */
  rank(pfn: number): number {
    const byte = pfn >>> 3;
    const k = Math.floor(byte / BITMAP_CHUNK);
    let count = this.#cumulativeBefore(k);
    const chunk = this.#chunk(k);
    const inChunk = byte % BITMAP_CHUNK;
    const step = Math.floor(inChunk / RANK_STEP);
    count += chunk.rank[step];
    const bits = chunk.bits;
    for (let i = step * RANK_STEP; i < inChunk; i++) count += POPCOUNT8[bits[i]];
    count += POPCOUNT8[bits[inChunk] & ((1 << (pfn & 7)) - 1)];
    return count;
  }

  #cumulativeBefore(k: number): number {
    while (this.#cumulativeKnown < k) {
      const c = this.#chunk(this.#cumulativeKnown);
      const total = c.rank[c.rank.length - 1];
      this.#cumulative[this.#cumulativeKnown + 1] = this.#cumulative[this.#cumulativeKnown] +
        total;
      this.#cumulativeKnown++;
    }
    return this.#cumulative[k];
  }

  #chunk(k: number): BitmapChunk {
    const hit = this.#chunks.get(k);
    if (hit) return hit;
    const start = k * BITMAP_CHUNK;
    const len = Math.min(BITMAP_CHUNK, this.#bytes - start);
    const bits = new Uint8Array(BITMAP_CHUNK);
    const got = this.#src.readAt(bits.subarray(0, len), this.#offset + start);
    bits.fill(0, got); // a truncated bitmap reads as "not present"
    const steps = BITMAP_CHUNK / RANK_STEP;
    const rank = new Uint16Array(steps + 1);
    for (let s = 0; s < steps; s++) {
      let c = 0;
      for (let i = s * RANK_STEP; i < (s + 1) * RANK_STEP; i++) c += POPCOUNT8[bits[i]];
      rank[s + 1] = rank[s] + c;
    }
    if (this.#chunks.size >= MAX_CHUNKS) {
      this.#chunks.delete(this.#chunks.keys().next().value!);
    }
    const chunk = { bits, rank };
    this.#chunks.set(k, chunk);
    return chunk;
  }
}

/** Reads one compressed kdump file (or one part of a split set). */
export class KdumpReader implements DumpReader {
  readonly format: string;
  readonly files: readonly string[];
  readonly arch: ArchName;
  readonly pageSize: number;
  readonly maxPfn: number;
  readonly notes: readonly ElfNote[];
  readonly vmcoreinfo?: VmcoreInfo;
  readonly cpus: readonly CpuState[];
  readonly qemuCpus: readonly QemuCpuState[];
  readonly compressed = true;
  readonly warnings: string[] = [];
  readonly details: Record<string, string | number> = {};
  readonly virtualMappings: readonly VirtualMapping[] = [];
  /** First pfn this file holds (split sets), and one past the last. */
  readonly startPfn: number;
  /** One past the last pfn this file holds. */
  readonly endPfn: number;
  /** True when this file is one part of a `--split` set. */
  readonly isSplit: boolean;
  /** Dump level (makedumpfile -d) the file was written with. */
  readonly dumpLevel: number;
  /** Kernel release from the header's utsname. */
  readonly release: string;
  /** CPU that handled the dump (disk_dump_header.current_cpu). */
  readonly currentCpu: number;
  /** Codecs named by the header status bits. */
  readonly codecs: string[];
  lastError = "";

  #src: ByteSource;
  #bitmap1: LazyBitmap;
  #bitmap2: LazyBitmap;
  #descOffset: number;
  #startRank = 0;
  #incomplete: boolean;
  /** Why the file holds less than its header says (cut short), or undefined. */
  #cutShort?: string;
  #zeroPageOffset = -1;
  #compressedBuf: Uint8Array;
  #descBatches = new Map<number, DataView>();

  /**
   * Read a compressed kdump's headers and notes (its bitmaps are read as pages are asked for);
   * throws DumpError naming the file on a damaged one.
   * @param src the kdump bytes (a file, or a reassembled flattened stream)
   * @param formatPrefix put before `kdump (codec)` in `format`, e.g. `flattened `
   */
  constructor(src: ByteSource, formatPrefix = "") {
    this.#src = src;
    this.files = [src.name];
    const name = src.name;
    const h = readExact(src, 0, Math.min(src.size, 4096), "kdump header");
    if (h.length < 464 || !isKdump(h)) throw new DumpError(name, "kdump header", "bad signature");
    const v = new DataView(h.buffer);
    const text = (o: number, n: number) => {
      let end = o;
      while (end < o + n && h[end] !== 0) end++;
      return new TextDecoder().decode(h.subarray(o, end));
    };
    const headerVersion = v.getInt32(8, true);
    // new_utsname: six 65-byte fields from offset 12; machine is the fifth.
    this.release = text(12 + 2 * 65, 65);
    const machine = text(12 + 4 * 65, 65);
    const status = v.getUint32(424, true);
    const blockSize = v.getInt32(428, true);
    const subHdrSize = v.getInt32(432, true);
    const bitmapBlocks = v.getUint32(436, true);
    let maxMapnr = v.getUint32(440, true);
    this.currentCpu = v.getUint32(456, true);
    const nrCpus = v.getInt32(460, true);

    if (blockSize < 1024 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0) {
      throw new DumpError(name, "kdump header", `implausible block size ${blockSize}`);
    }
    if (subHdrSize < 1 || subHdrSize > 1024) {
      throw new DumpError(name, "kdump header", `implausible sub-header size ${subHdrSize}`);
    }
    this.pageSize = blockSize;
    this.#incomplete = (status & DUMP_DH_COMPRESSED_INCOMPLETE) !== 0;
    this.codecs = STATUS_CODECS.filter(([bit]) => status & bit).map(([, n]) => n);

    // kdump_sub_header (64-bit layout).
    const sub = readExact(src, blockSize, Math.min(blockSize, 104), "kdump sub-header");
    const sv = new DataView(sub.buffer);
    const u64 = (o: number) => o + 8 <= sub.length ? Number(sv.getBigUint64(o, true)) : 0;
    this.dumpLevel = sv.getInt32(8, true);
    this.isSplit = headerVersion >= 2 && sv.getInt32(12, true) !== 0;
    let startPfn = headerVersion >= 2 ? u64(16) : 0;
    let endPfn = headerVersion >= 2 ? u64(24) : 0;
    if (headerVersion >= 6) {
      startPfn = u64(80);
      endPfn = u64(88);
      maxMapnr = u64(96);
    }

    const bitmapOffset = (1 + subHdrSize) * blockSize;
    const bitmapBytes = bitmapBlocks * blockSize;
    if (bitmapBlocks === 0 || bitmapBlocks % 2 !== 0 || bitmapOffset + bitmapBytes > src.size) {
      throw new DumpError(
        name,
        "kdump bitmaps",
        `impossible bitmap size (${bitmapBlocks} blocks of ${blockSize} bytes, file is ${src.size})`,
      );
    }
    const half = bitmapBytes / 2;
    // The bitmaps bound the pfn range whatever max_mapnr claims.
    this.maxPfn = Math.min(maxMapnr, half * 8);
    this.#bitmap1 = new LazyBitmap(src, bitmapOffset, half);
    this.#bitmap2 = new LazyBitmap(src, bitmapOffset + half, half);
    this.#descOffset = bitmapOffset + bitmapBytes;
    this.startPfn = this.isSplit ? Math.min(startPfn, this.maxPfn) : 0;
    this.endPfn = this.isSplit && endPfn > 0 ? Math.min(endPfn, this.maxPfn) : this.maxPfn;
    this.#compressedBuf = new Uint8Array(blockSize + 1024);

    // VMCOREINFO and ELF notes live at offsets named in the sub-header.
    let notes: ElfNote[] = [];
    if (headerVersion >= 4 && u64(48) && u64(56)) {
      notes = parseNotes(readBounded(src, u64(48), u64(56), "kdump ELF notes"), name);
    }
    this.notes = notes;
    if (headerVersion >= 3 && u64(32) && u64(40)) {
      this.vmcoreinfo = new VmcoreInfo(
        readBounded(src, u64(32), u64(40), "kdump VMCOREINFO"),
      );
    } else {
      const note = notes.find((n) => n.name === "VMCOREINFO");
      if (note) this.vmcoreinfo = new VmcoreInfo(note.desc);
    }
    if (machine === "x86_64") this.arch = "x86_64";
    else if (machine === "aarch64" || machine === "arm64") this.arch = "aarch64";
    else if (machine !== "Unknown" && machine !== "") {
      throw new DumpError(name, "kdump header", `unsupported machine "${printable(machine)}"`);
    } else {
      // QEMU writes "Unknown" for arm guests: the notes and VMCOREINFO still tell.
      const inferred = inferArch(notes, this.vmcoreinfo);
      if (typeof inferred === "string") {
        throw new DumpError(
          name,
          "kdump header",
          `the machine is "${printable(machine)}", and ${inferred}`,
        );
      }
      this.arch = inferred.arch;
      this.details["machine"] = `${inferred.arch} (the header says "${printable(machine)}"; ` +
        `inferred from ${inferred.evidence})`;
    }
    this.cpus = cpuStates(this.arch, notes);
    this.qemuCpus = notes.filter((n) => n.name === "QEMU")
      .map((n) => parseQemuCpuState(n.desc))
      .filter((s): s is QemuCpuState => s !== undefined);
    addQemuControlRegisters(this.cpus, this.qemuCpus);

    const codecText = this.codecs.length ? this.codecs.join("+") : "uncompressed";
    this.format = `${formatPrefix}kdump (${codecText})`;
    this.details["dump level"] = this.dumpLevel;
    // Keys of at most 12 characters keep the banner's values in one column.
    this.details["kdump header"] = `version ${headerVersion}, ${nrCpus} CPUs`;
    if (status & DUMP_DH_EXCLUDED_VMEMMAP) this.details["vmemmap"] = "unused parts excluded";
    if (this.#incomplete) {
      this.warnings.push(
        "the dump is incomplete (saving it was cut short): pages not written read as missing",
      );
    }
    if (this.isSplit) {
      this.details["split part"] = `pfns ${this.startPfn}..${this.endPfn}`;
      this.#startRank = this.#bitmap2.rank(this.startPfn);
    }
    this.#cutShort = src.cutShort ?? this.#checkSize();
    if (this.#cutShort) {
      this.warnings.push(
        `the file is shorter than its header says (${this.#cutShort}): pages past its end ` +
          "read as missing",
      );
    }
  }

  /**
   * Compare the file's size with what the header implies: one descriptor per dumped page, and
   * the data they point at. Reads the dumped-page bitmap once (16 KiB per 512 MiB of RAM) and
   * the last batch of descriptors. Returns the shortfall in words, or undefined.
   */
  #checkSize(): string | undefined {
    const count = this.#bitmap2.rank(this.endPfn) - this.#startRank;
    const size = this.#src.size;
    const descEnd = this.#descOffset + count * PAGE_DESC_SIZE;
    if (descEnd > size) {
      return `${size} bytes; its ${count} page descriptors alone end at byte ${descEnd}`;
    }
    // Data follows the descriptors, at most a page per descriptor plus the shared zero page:
    // an offset beyond that is a damaged descriptor (readPage reports it), not a short file.
    const layoutEnd = descEnd + (count + 1) * this.pageSize;
    let dataEnd = 0;
    for (let i = Math.max(0, count - DESC_BATCH); i < count; i++) {
      const d = this.#descriptor(i);
      if (!d) break;
      const end = Number(d[0].getBigInt64(d[1], true)) + d[0].getUint32(d[1] + 8, true);
      if (end > dataEnd && end <= layoutEnd) dataEnd = end;
    }
    if (dataEnd > size) return `${size} bytes; the last pages' data ends at byte ${dataEnd}`;
    return undefined;
  }

  /** A page the file would hold but for being cut short: Lost, saying so in lastError. */
  #pastEnd(pfn: number): PageStatus {
    this.lastError = `pfn ${pfn} is past the end of the file (${this.#cutShort})`;
    return PageStatus.Lost;
  }

  /** True when `pfn` falls in this file's part of the pfn space. */
  holds(pfn: number): boolean {
    return pfn >= this.startPfn && pfn < this.endPfn;
  }

  readPage(pfn: number, out: Uint8Array): PageStatus {
    if (pfn < this.startPfn || pfn >= this.endPfn) return PageStatus.Absent;
    if (!this.#bitmap2.test(pfn)) {
      return this.#bitmap1.test(pfn) ? PageStatus.Excluded : PageStatus.Absent;
    }
    const index = this.#bitmap2.rank(pfn) - this.#startRank;
    const desc = this.#descriptor(index);
    if (!desc) {
      if (this.#cutShort) return this.#pastEnd(pfn);
      this.lastError = `page descriptor ${index} lies beyond the end of the file`;
      return this.#incomplete ? PageStatus.Lost : PageStatus.Corrupt;
    }
    const [view, at] = desc;
    const offset = Number(view.getBigInt64(at, true));
    const size = view.getUint32(at + 8, true);
    const flags = view.getUint32(at + 12, true);
    if (offset === 0 && this.#incomplete) {
      this.lastError = `pfn ${pfn} was never written (the dump is marked incomplete)`;
      return PageStatus.Lost;
    }
    // Cut short: past the end, or (flattened) in a region whose records never came.
    if (this.#cutShort && (offset + size > this.#src.size || offset === 0)) {
      return this.#pastEnd(pfn);
    }
    if (offset <= 0 || size === 0 || size > this.pageSize || offset + size > this.#src.size) {
      this.lastError = `page descriptor for pfn ${pfn} is impossible (offset ${offset}, ` +
        `size ${size})`;
      return this.#incomplete ? PageStatus.Lost : PageStatus.Corrupt;
    }
    if (offset === this.#zeroPageOffset) return PageStatus.Zero;
    const codec: PageCodec | undefined = flags === 0 ? "raw" : codecFromFlags(flags);
    if (codec === undefined) {
      this.lastError = `page descriptor for pfn ${pfn} has unknown flags 0x${flags.toString(16)}`;
      return PageStatus.Corrupt;
    }
    if (codec === "raw") {
      if (size !== this.pageSize) {
        this.lastError = `uncompressed page for pfn ${pfn} has size ${size}`;
        return PageStatus.Corrupt;
      }
      if (this.#src.readAt(out.subarray(0, size), offset) !== size) {
        this.lastError = `short read of pfn ${pfn}`;
        return PageStatus.Corrupt;
      }
      // makedumpfile stores one shared zero page and points every zero page at it: remember
      // it so that later zero pages cost neither a read nor cache space.
      if (isZero(out, size)) {
        this.#zeroPageOffset = offset;
        return PageStatus.Zero;
      }
      return PageStatus.Present;
    }
    const buf = this.#compressedBuf.subarray(0, size);
    if (this.#src.readAt(buf, offset) !== size) {
      this.lastError = `short read of pfn ${pfn}`;
      return PageStatus.Corrupt;
    }
    try {
      decompressPage(codec, buf, out.subarray(0, this.pageSize));
    } catch (e) {
      this.lastError = `pfn ${pfn} (${codec}): ${e instanceof CodecError ? e.message : String(e)}`;
      return PageStatus.Corrupt;
    }
    return PageStatus.Present;
  }

  close(): void {
    this.#src.close();
  }

  /** The view and byte offset of descriptor `index`, or undefined past the file's end. */
  #descriptor(index: number): [DataView, number] | undefined {
    const batch = Math.floor(index / DESC_BATCH);
    let view = this.#descBatches.get(batch);
    if (!view) {
      const pos = this.#descOffset + batch * DESC_BATCH * PAGE_DESC_SIZE;
      if (pos >= this.#src.size) return undefined;
      const buf = new Uint8Array(DESC_BATCH * PAGE_DESC_SIZE);
      const got = this.#src.readAt(buf, pos);
      view = new DataView(buf.buffer, 0, got);
      if (this.#descBatches.size >= MAX_DESC_BATCHES) {
        this.#descBatches.delete(this.#descBatches.keys().next().value!);
      }
      this.#descBatches.set(batch, view);
    }
    const at = (index % DESC_BATCH) * PAGE_DESC_SIZE;
    if (at + PAGE_DESC_SIZE > view.byteLength) return undefined;
    return [view, at];
  }
}

/** Text from the file made safe for a one-line message: other characters become \u{…} escapes. */
function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]|\\/g, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`);
}

function isZero(buf: Uint8Array, n: number): boolean {
  const words = new Uint32Array(buf.buffer, buf.byteOffset, n >>> 2);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  return true;
}

function readBounded(src: ByteSource, offset: number, size: number, what: string): Uint8Array {
  if (size > 16 * 1024 * 1024) {
    throw new DumpError(src.name, what, `implausible size ${size}`);
  }
  return readExact(src, offset, size, what);
}
