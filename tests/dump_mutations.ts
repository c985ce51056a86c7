/**
 * Seeded mutations of real dump fixtures, and the check each mutated dump must pass (used by the
 * corrupt-dump worker for tests/corrupt_dumps_test.ts and tests/long_runs.ts).
 *
 * The fixture files are never written: each one is opened read-only once, and a case reads it
 * through a {@link PatchedSource} that overlays a few changed bytes and may cut the file short.
 * The layout of every fixture (headers, bitmaps, page descriptors, notes, VMCOREINFO, ELF program
 * headers, flattened records) is parsed here, independently of lib/, so that mutations can aim at
 * each structure and so that the test knows which page reads a mutation cannot have affected.
 *
 * A mutated dump must either fail to open with a one-line {@link DumpError} naming the file and
 * the structure, or open, answer the reads the damage touches with errors (or, for data no
 * checksum protects, with other bytes), and answer every read it cannot have touched exactly as
 * the pristine file does. Every few cases the whole server stack (kernel view, kernel target, an
 * RSP session) runs on the mutated dump too, and must not throw.
 *
 * @module
 */

import { type ByteSource, FileSource } from "../lib/file_source.ts";
import { openSource } from "../lib/open_dump.ts";
import { KdumpReader } from "../lib/dump_kdump.ts";
import { SplitDumpReader } from "../lib/dump_split.ts";
import { DumpError } from "../lib/errors.ts";
import { PhysicalMemory } from "../lib/physical_memory.ts";
import { type DumpReader, PageStatus } from "../lib/dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTarget, systemSummary } from "../lib/kernel_target.ts";
import { RspSession } from "../lib/rsp_session.ts";
import { framePacket } from "../lib/rsp_wire.ts";
import { caseSeed, Rng } from "./fuzz_rng.ts";
import { join } from "node:path";

// --- byte source with patches -------------------------------------------------------------------

/** Bytes to overlay at a file offset. */
export interface Patch {
  at: number;
  bytes: Uint8Array;
}

/** A read-only view of another source with some bytes replaced and the end possibly cut. */
export class PatchedSource implements ByteSource {
  readonly name: string;
  readonly size: number;
  #base: ByteSource;
  #patches: Patch[];

  constructor(base: ByteSource, patches: Patch[], size = base.size) {
    this.name = base.name;
    this.#base = base;
    this.#patches = patches;
    this.size = Math.min(size, base.size);
  }

  readAt(into: Uint8Array, position: number): number {
    if (!Number.isSafeInteger(position) || position < 0) {
      // A real file would throw something obscure here; make it a clear failure.
      throw new Error(`readAt called with position ${position}`);
    }
    if (position >= this.size || into.length === 0) return 0;
    const n = Math.min(into.length, this.size - position);
    const got = this.#base.readAt(into.subarray(0, n), position);
    for (const p of this.#patches) {
      const from = Math.max(p.at, position);
      const to = Math.min(p.at + p.bytes.length, position + got);
      for (let i = from; i < to; i++) into[i - position] = p.bytes[i - p.at];
    }
    return got;
  }

  close(): void {
    // The base stays open for the next case.
  }
}

// --- layouts ------------------------------------------------------------------------------------

/** A half-open byte range. */
export interface Range {
  start: number;
  end: number;
}

/** A named field at an offset. */
interface Field {
  name: string;
  at: number;
  size: number;
}

/** Where a kdump file keeps its structures (logical offsets: inside a flattened file, after reassembly). */
interface KdumpLayout {
  kind: "kdump";
  size: number;
  blockSize: number;
  headerFields: Field[];
  subFields: Field[];
  bitmap1: Range;
  bitmap2: Range;
  descriptors: Range;
  notes?: Range;
  noteHeaders: number[];
  vmcoreinfo?: Range;
  /** Structures whose damage may change any page read. */
  metadata: Range[];
  /** Bitmap 2 bytes, for ranks. */
  bits2: Uint8Array;
  startPfn: number;
}

/** Where an ELF vmcore keeps its structures. */
interface ElfLayout {
  kind: "elf";
  size: number;
  headerFields: Field[];
  phdrs: number[];
  phentsize: number;
  notes: Range[];
  noteHeaders: number[];
  vmcoreinfo?: Range;
  loads: { offset: number; filesz: number; paddr: number; memsz: number }[];
  metadata: Range[];
}

/** One record of a flattened file. */
interface FlatRecord {
  header: number;
  dataAt: number;
  logical: number;
  size: number;
}

/** A logical range and where its bytes are in the file (the newest record holding them). */
interface FlatPiece {
  start: number;
  end: number;
  file: number;
}

/** A flattened file's records, mapping logical offsets to file offsets. */
interface FlatLayout {
  /** Records in file order. */
  records: FlatRecord[];
  endMarker: number;
  /** Disjoint logical pieces, sorted. */
  pieces: FlatPiece[];
}

/** One file of a base: its inner layout, and its records when flattened. */
interface Part {
  file: FileSource;
  inner: KdumpLayout | ElfLayout;
  flat?: FlatLayout;
  /** Logical bytes of the pristine file (reassembled when flattened). */
  logical: ByteSource;
}

/** A pfn read before and after a mutation. */
interface Sample {
  pfn: number;
  part: number;
  /** Logical byte ranges the read depends on (descriptor, data). */
  deps: Range[];
  /** The page is stored zlib-compressed, with a checksum that catches damage. */
  checksummed: boolean;
  bytes: number;
  status: PageStatus;
  data: Uint8Array;
}

/** A fixture and what the test knows about it. */
export interface Base {
  label: string;
  parts: Part[];
  vmlinux: string;
  /** Page codec, for what damage must be detected ("zlib" pages carry a checksum). */
  codec: string;
  samples: Sample[];
  pageSize: number;
}

const KDUMP_HEADER_FIELDS: [string, number, number][] = [
  ["signature", 0, 8],
  ["header_version", 8, 4],
  ["utsname.release", 12 + 2 * 65, 65],
  ["utsname.machine", 12 + 4 * 65, 65],
  ["status", 424, 4],
  ["block_size", 428, 4],
  ["sub_hdr_size", 432, 4],
  ["bitmap_blocks", 436, 4],
  ["max_mapnr", 440, 4],
  ["current_cpu", 456, 4],
  ["nr_cpus", 460, 4],
];

const KDUMP_SUB_FIELDS: [string, number, number][] = [
  ["phys_base", 0, 8],
  ["dump_level", 8, 4],
  ["split", 12, 4],
  ["start_pfn", 16, 8],
  ["end_pfn", 24, 8],
  ["offset_vmcoreinfo", 32, 8],
  ["size_vmcoreinfo", 40, 8],
  ["offset_note", 48, 8],
  ["size_note", 56, 8],
  ["offset_eraseinfo", 64, 8],
  ["size_eraseinfo", 72, 8],
  ["start_pfn_64", 80, 8],
  ["end_pfn_64", 88, 8],
  ["max_mapnr_64", 96, 8],
];

const ELF_HEADER_FIELDS: [string, number, number][] = [
  ["e_ident magic", 0, 4],
  ["e_ident class", 4, 1],
  ["e_ident data", 5, 1],
  ["e_type", 16, 2],
  ["e_machine", 18, 2],
  ["e_phoff", 32, 8],
  ["e_shoff", 40, 8],
  ["e_phentsize", 54, 2],
  ["e_phnum", 56, 2],
  ["e_shentsize", 58, 2],
  ["e_shnum", 60, 2],
];

const PHDR_FIELDS: [string, number, number][] = [
  ["p_type", 0, 4],
  ["p_flags", 4, 4],
  ["p_offset", 8, 8],
  ["p_vaddr", 16, 8],
  ["p_paddr", 24, 8],
  ["p_filesz", 32, 8],
  ["p_memsz", 40, 8],
];

function read(src: ByteSource, at: number, n: number): Uint8Array {
  const buf = new Uint8Array(n);
  const got = src.readAt(buf, at);
  if (got !== n) throw new Error(`${src.name}: short read of a pristine fixture at ${at}`);
  return buf;
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** Offsets of the note headers in a notes blob at `start`, and the VMCOREINFO desc range. */
function scanNotes(blob: Uint8Array, start: number): { headers: number[]; vmcoreinfo?: Range } {
  const v = view(blob);
  const headers: number[] = [];
  let vmcoreinfo: Range | undefined;
  let o = 0;
  while (o + 12 <= blob.length) {
    const namesz = v.getUint32(o, true);
    const descsz = v.getUint32(o + 4, true);
    if (namesz === 0 && descsz === 0) break;
    headers.push(start + o);
    const name = new TextDecoder().decode(blob.subarray(o + 12, o + 12 + namesz)).replace(
      /\0+$/,
      "",
    );
    const desc = o + 12 + Math.ceil(namesz / 4) * 4;
    if (name === "VMCOREINFO") vmcoreinfo = { start: start + desc, end: start + desc + descsz };
    o = desc + Math.ceil(descsz / 4) * 4;
  }
  return { headers, vmcoreinfo };
}

function kdumpLayout(src: ByteSource): KdumpLayout {
  const h = read(src, 0, 512);
  const v = view(h);
  const blockSize = v.getInt32(428, true);
  const subHdrSize = v.getInt32(432, true);
  const bitmapBlocks = v.getUint32(436, true);
  const version = v.getInt32(8, true);
  const sub = view(read(src, blockSize, 104));
  const bitmapAt = (1 + subHdrSize) * blockSize;
  const half = (bitmapBlocks * blockSize) / 2;
  const bits2 = read(src, bitmapAt + half, half);
  const split = version >= 2 && sub.getInt32(12, true) !== 0;
  const startPfn = split ? Number(sub.getBigUint64(80, true)) : 0;
  const endPfn = split ? Number(sub.getBigUint64(88, true)) : half * 8;
  let count = 0;
  for (let pfn = startPfn; pfn < endPfn; pfn++) if (bits2[pfn >> 3] & (1 << (pfn & 7))) count++;
  const descAt = bitmapAt + 2 * half;
  const layout: KdumpLayout = {
    kind: "kdump",
    size: src.size,
    blockSize,
    headerFields: KDUMP_HEADER_FIELDS.map(([name, at, size]) => ({ name, at, size })),
    subFields: KDUMP_SUB_FIELDS.map(([name, at, size]) => ({ name, at: blockSize + at, size })),
    bitmap1: { start: bitmapAt, end: bitmapAt + half },
    bitmap2: { start: bitmapAt + half, end: bitmapAt + 2 * half },
    descriptors: { start: descAt, end: descAt + 24 * count },
    noteHeaders: [],
    metadata: [{ start: 0, end: blockSize + 104 }, { start: bitmapAt + half, end: descAt }],
    bits2,
    startPfn,
  };
  const noteAt = Number(sub.getBigUint64(48, true));
  const noteSize = Number(sub.getBigUint64(56, true));
  if (noteAt && noteSize) {
    layout.notes = { start: noteAt, end: noteAt + noteSize };
    const scan = scanNotes(read(src, noteAt, noteSize), noteAt);
    layout.noteHeaders = scan.headers;
  }
  const vmciAt = Number(sub.getBigUint64(32, true));
  const vmciSize = Number(sub.getBigUint64(40, true));
  if (vmciAt && vmciSize) layout.vmcoreinfo = { start: vmciAt, end: vmciAt + vmciSize };
  return layout;
}

function elfLayout(src: ByteSource): ElfLayout {
  const h = view(read(src, 0, 64));
  const phoff = Number(h.getBigUint64(32, true));
  const phentsize = h.getUint16(54, true);
  const phnum = h.getUint16(56, true);
  const table = view(read(src, phoff, phentsize * phnum));
  const layout: ElfLayout = {
    kind: "elf",
    size: src.size,
    headerFields: ELF_HEADER_FIELDS.map(([name, at, size]) => ({ name, at, size })),
    phdrs: [],
    phentsize,
    notes: [],
    noteHeaders: [],
    loads: [],
    metadata: [{ start: 0, end: 64 }, { start: phoff, end: phoff + phentsize * phnum }],
  };
  for (let i = 0; i < phnum; i++) {
    const o = i * phentsize;
    layout.phdrs.push(phoff + o);
    const type = table.getUint32(o, true);
    const offset = Number(table.getBigUint64(o + 8, true));
    const paddr = Number(table.getBigUint64(o + 24, true));
    const filesz = Number(table.getBigUint64(o + 32, true));
    const memsz = Number(table.getBigUint64(o + 40, true));
    if (type === 4) {
      layout.notes.push({ start: offset, end: offset + filesz });
      const scan = scanNotes(read(src, offset, filesz), offset);
      layout.noteHeaders.push(...scan.headers);
      layout.vmcoreinfo ??= scan.vmcoreinfo;
    } else if (type === 1) layout.loads.push({ offset, filesz, paddr, memsz });
  }
  return layout;
}

/** Index of the first piece ending after `at`. */
function pieceAfter(pieces: FlatPiece[], at: number): number {
  let lo = 0;
  let hi = pieces.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (pieces[mid].end <= at) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The records of a flattened file, and a source of its reassembled bytes. */
function flatLayout(file: FileSource): { flat: FlatLayout; logical: ByteSource } {
  const records: FlatRecord[] = [];
  const pieces: FlatPiece[] = [];
  const rh = new Uint8Array(16);
  const rv = view(rh);
  let pos = 4096;
  for (;;) {
    file.readAt(rh, pos);
    const offset = Number(rv.getBigInt64(0, false));
    const size = Number(rv.getBigInt64(8, false));
    if (offset === -1) break;
    records.push({ header: pos, dataAt: pos + 16, logical: offset, size });
    if (size > 0) {
      // A later record replaces what it covers (makedumpfile rewrites its header at the end).
      const end = offset + size;
      const i = pieceAfter(pieces, offset);
      let j = i;
      const kept: FlatPiece[] = [];
      while (j < pieces.length && pieces[j].start < end) {
        const p = pieces[j];
        if (p.start < offset) kept.push({ start: p.start, end: offset, file: p.file });
        if (p.end > end) kept.push({ start: end, end: p.end, file: p.file + (end - p.start) });
        j++;
      }
      const added = { start: offset, end, file: pos + 16 };
      const merged = [
        ...kept.filter((k) => k.start < offset),
        added,
        ...kept.filter((k) => k.start >= end),
      ];
      pieces.splice(i, j - i, ...merged);
    }
    pos += 16 + size;
  }
  const flat: FlatLayout = { records, endMarker: pos, pieces };
  const size = pieces.length ? pieces[pieces.length - 1].end : 0;
  const logical: ByteSource = {
    name: file.name,
    size,
    readAt(into, position) {
      const n = Math.max(0, Math.min(into.length, size - position));
      into.fill(0, 0, n); // holes read as zeros, as in a reassembled file
      for (let i = pieceAfter(pieces, position); i < pieces.length; i++) {
        const p = pieces[i];
        if (p.start >= position + n) break;
        const from = Math.max(p.start, position);
        const to = Math.min(p.end, position + n);
        file.readAt(into.subarray(from - position, to - position), p.file + (from - p.start));
      }
      return n;
    },
    close() {},
  };
  return { flat, logical };
}

/** File offset of a logical byte of a flattened file (its newest record), or undefined. */
function flatToFile(flat: FlatLayout, logical: number): number | undefined {
  const p = flat.pieces[pieceAfter(flat.pieces, logical)];
  return p && p.start <= logical ? p.file + (logical - p.start) : undefined;
}

/**
 * Logical offset of a file byte of a flattened file, or undefined when it is a header, the end
 * marker, or data a later record replaced (then it does not matter; "all" is safe either way).
 */
function flatFromFile(flat: FlatLayout, at: number): number | undefined {
  const r = flat.records;
  let lo = 0;
  let hi = r.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (r[mid].dataAt <= at) lo = mid + 1;
    else hi = mid - 1;
  }
  if (hi < 0 || at >= r[hi].dataAt + r[hi].size) return undefined;
  return r[hi].logical + (at - r[hi].dataAt);
}

function isFlat(head: Uint8Array): boolean {
  return new TextDecoder().decode(head.subarray(0, 12)) === "makedumpfile";
}

function openPart(path: string): Part {
  const file = new FileSource(path);
  const head = read(file, 0, 16);
  if (isFlat(head)) {
    const { flat, logical } = flatLayout(file);
    const inner = read(logical, 0, 4)[0] === 0x7f ? elfLayout(logical) : kdumpLayout(logical);
    return { file, inner, flat, logical };
  }
  const inner = head[0] === 0x7f ? elfLayout(file) : kdumpLayout(file);
  return { file, inner, logical: file };
}

/** Open a dump on (possibly patched) parts, as openDump does for paths. */
function openParts(sources: ByteSource[]): DumpReader {
  if (sources.length === 1) return openSource(sources[0]);
  const readers: KdumpReader[] = [];
  try {
    for (const s of sources) {
      const r = openSource(s);
      if (!(r instanceof KdumpReader)) {
        r.close();
        throw new DumpError(s.name, "split set", `is ${r.format}; only kdump files can be split`);
      }
      readers.push(r);
    }
    return new SplitDumpReader(readers);
  } catch (e) {
    for (const r of readers) r.close();
    throw e;
  }
}

/** Logical ranges a read of `pfn` depends on in one part, and whether a checksum covers it. */
function dependencies(
  part: Part,
  pfn: number,
  pageSize: number,
): { deps: Range[]; checksummed: boolean } {
  const l = part.inner;
  if (l.kind === "elf") {
    const lo = pfn * pageSize;
    const hi = lo + pageSize;
    const out: Range[] = [];
    for (const s of l.loads) {
      const from = Math.max(lo, s.paddr);
      const to = Math.min(hi, s.paddr + s.filesz);
      if (from < to) out.push({ start: s.offset + from - s.paddr, end: s.offset + to - s.paddr });
    }
    return { deps: out, checksummed: false };
  }
  const bitAt = l.bitmap2.start + (pfn >> 3);
  if (!(l.bits2[pfn >> 3] & (1 << (pfn & 7)))) {
    const bit1 = l.bitmap1.start + (pfn >> 3);
    return {
      deps: [{ start: bitAt, end: bitAt + 1 }, { start: bit1, end: bit1 + 1 }],
      checksummed: false,
    };
  }
  let rank = 0;
  for (let p = l.startPfn; p < pfn; p++) if (l.bits2[p >> 3] & (1 << (p & 7))) rank++;
  const descAt = l.descriptors.start + 24 * rank;
  const d = view(read(part.logical, descAt, 24));
  const offset = Number(d.getBigInt64(0, true));
  const size = d.getUint32(8, true);
  const flags = d.getUint32(12, true);
  return {
    deps: [{ start: descAt, end: descAt + 24 }, { start: offset, end: offset + size }],
    checksummed: flags === 1,
  };
}

/** Where a fixture lives. */
export interface BaseSpec {
  boot: string;
  files: string[];
}

/** The fixtures the corrupt-dump runs mutate: every format and codec, both architectures. */
export const BASE_SPECS: BaseSpec[] = [
  { boot: "x86_64-6.1", files: ["dump.zlib-d31.kdump"] },
  { boot: "x86_64-6.1", files: ["dump.lzo-d31.kdump"] },
  { boot: "x86_64-6.1", files: ["dump.snappy-d31.kdump"] },
  { boot: "x86_64-6.1", files: ["dump.zstd-d31.kdump"] },
  { boot: "x86_64-6.1", files: ["dump.zlib-d0.kdump"] },
  { boot: "x86_64-6.1", files: ["dump.zlib-d31.flat"] },
  { boot: "x86_64-6.1", files: ["dump.qemu-kdump-zlib.flat"] },
  { boot: "x86_64-6.1", files: ["dump.elf-d31.elf"] },
  { boot: "x86_64-6.1", files: ["dump.elf"] },
  { boot: "x86_64-6.1", files: ["dump.split-d31.1.kdump", "dump.split-d31.2.kdump"] },
  { boot: "aarch64-6.1", files: ["dump.zlib-d31.kdump"] },
  { boot: "aarch64-6.1", files: ["dump.elf"] },
];

/** Open a fixture read-only and record pristine reads of sample pages. */
export function openBase(fixtures: string, spec: BaseSpec, samples = 40): Base {
  const dir = join(fixtures, spec.boot);
  const parts = spec.files.map((f) => openPart(join(dir, f)));
  const pristine = openParts(parts.map((p) => new PatchedSource(p.file, [])));
  const pageSize = pristine.pageSize;
  const phys = new PhysicalMemory(pristine, { cacheBytes: 1 << 20 });
  const rng = new Rng(caseSeed(0x5a3b1e, spec.files[0].length + spec.boot.length));
  const codec = /zlib|lzo|snappy|zstd/.exec(pristine.format)?.[0] ?? "raw";
  const base: Base = {
    label: `${spec.boot}/${spec.files.join("+")}`,
    parts,
    vmlinux: join(dir, "vmlinux"),
    codec,
    samples: [],
    pageSize,
  };
  const partOf = (pfn: number) => {
    if (parts.length === 1) return 0;
    const set = pristine as SplitDumpReader;
    return set.parts.findIndex((p) => p.holds(pfn));
  };
  let tries = 0;
  while (base.samples.length < samples && tries++ < 100_000) {
    const pfn = rng.int(pristine.maxPfn);
    const data = new Uint8Array(pageSize);
    const r = phys.read(pfn * pageSize, data);
    const readable = r.bytes === pageSize;
    // Mostly readable pages, some others (excluded, absent) whose status must hold too.
    if (!readable && base.samples.length < samples * 0.8) continue;
    const part = partOf(pfn);
    if (part < 0) continue;
    base.samples.push({
      pfn,
      part,
      ...dependencies(parts[part], pfn, pageSize),
      bytes: r.bytes,
      status: r.status,
      data,
    });
  }
  pristine.close();
  return base;
}

/** Close a fixture's files. */
export function closeBase(base: Base): void {
  for (const p of base.parts) p.file.close();
}

// --- mutations ----------------------------------------------------------------------------------

/** One mutated dump: patches per part (file offsets), cuts, and what was done. */
export interface Mutation {
  patches: Patch[][];
  /** New size per part (undefined: unchanged). */
  cut: (number | undefined)[];
  /** Logical ranges changed per part (for the dependency check); "all" when unknown. */
  touched: (Range[] | "all")[];
  /** What was done, for failure messages and statistics. */
  classes: string[];
  notes: string[];
}

function le(value: bigint, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let v = BigInt.asUintN(size * 8, value);
  for (let i = 0; i < size; i++) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

function readUint(src: ByteSource, at: number, size: number): bigint {
  const b = read(src, at, size);
  let v = 0n;
  for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  return v;
}

/** A hostile value for an integer field of `size` bytes whose value is `orig`. */
function fieldValue(rng: Rng, orig: bigint, size: number, fileSize: number): bigint {
  const bits = BigInt(size * 8);
  return rng.weighted<() => bigint>([
    [4, () => 0n],
    [2, () => 1n],
    [4, () => -1n],
    [3, () => (1n << (bits - 1n)) - 1n],
    [3, () => 1n << (bits - 1n)],
    [5, () => orig + 1n],
    [5, () => orig - 1n],
    [3, () => orig * 2n],
    [3, () => orig >> 1n],
    [3, () => orig ^ (1n << BigInt(rng.int(size * 8)))],
    [5, () => rng.u64()],
    [2, () => BigInt(fileSize)],
    [2, () => BigInt(fileSize) - 1n],
    [1, () => 1n << 53n],
    [1, () => 1n << 32n],
    [1, () => 0xfffffff4n],
    [2, () => BigInt(rng.int(4096))],
  ])();
}

/** Accumulates logical patches for one part and maps them to file patches. */
class PartMutator {
  readonly patches: Patch[] = [];
  touched: Range[] | "all" = [];
  cut: number | undefined;

  constructor(readonly part: Part, readonly rng: Rng) {}

  get layout(): KdumpLayout | ElfLayout {
    return this.part.inner;
  }

  /** Overwrite logical bytes (mapped through the records of a flattened file). */
  logical(at: number, bytes: Uint8Array): void {
    if (at < 0) return;
    const flat = this.part.flat;
    if (!flat) return this.file(at, bytes, false);
    for (let i = 0; i < bytes.length; i++) {
      const f = flatToFile(flat, at + i);
      if (f !== undefined) this.patches.push({ at: f, bytes: bytes.subarray(i, i + 1) });
    }
    if (this.touched !== "all") this.touched.push({ start: at, end: at + bytes.length });
  }

  /** Overwrite file bytes; `container` for flattened headers and records. */
  file(at: number, bytes: Uint8Array, container: boolean): void {
    if (at < 0 || at >= this.part.file.size) return;
    this.patches.push({ at, bytes });
    if (container) this.touched = "all";
    else if (this.touched !== "all") {
      const flat = this.part.flat;
      if (!flat) this.touched.push({ start: at, end: at + bytes.length });
      else {
        const ranges: Range[] = [];
        for (let i = 0; i < bytes.length; i++) {
          const l = flatFromFile(flat, at + i);
          if (l === undefined) {
            this.touched = "all";
            return;
          }
          ranges.push({ start: l, end: l + 1 });
        }
        this.touched.push(...ranges);
      }
    }
  }

  field(f: Field): string {
    const src = this.part.logical;
    if (f.size > 8 || this.rng.chance(0.15)) {
      const n = this.rng.range(1, Math.min(f.size, 8));
      const at = f.at + this.rng.int(f.size - n + 1);
      this.logical(at, this.rng.bytes(n));
      return `${f.name} bytes`;
    }
    const orig = readUint(src, f.at, f.size);
    const v = fieldValue(this.rng, orig, f.size, src.size);
    this.logical(f.at, le(v, f.size));
    return `${f.name}=0x${BigInt.asUintN(f.size * 8, v).toString(16)}`;
  }

  /** Flip bits or overwrite a span inside a range. */
  scribble(r: Range, what: string): string {
    const rng = this.rng;
    const len = r.end - r.start;
    if (len <= 0) return `${what} (empty)`;
    const mode = rng.int(4);
    if (mode === 0) {
      const n = rng.range(1, 16);
      for (let k = 0; k < n; k++) {
        const at = r.start + rng.int(len);
        const b = read(this.part.logical, at, 1)[0] ^ (1 << rng.int(8));
        this.logical(at, Uint8Array.of(b));
      }
      return `${what}: ${n} bit flips`;
    }
    const n = Math.min(len, rng.chance(0.8) ? rng.range(1, 16) : rng.range(16, 4096));
    const at = r.start + rng.int(len - n + 1);
    const fill = mode === 1 ? rng.bytes(n) : new Uint8Array(n).fill(mode === 2 ? 0 : 0xff);
    this.logical(at, fill);
    return `${what}: ${n} bytes at +${at - r.start} = ${["random", "", "zeros", "ones"][mode]}`;
  }

  /** Edit the VMCOREINFO text: values, keys, separators. */
  vmcoreinfo(r: Range): string {
    const rng = this.rng;
    const text = new TextDecoder("latin1").decode(
      read(this.part.logical, r.start, r.end - r.start),
    );
    const lines: { at: number; text: string }[] = [];
    let at = 0;
    for (const line of text.split("\n")) {
      lines.push({ at, text: line });
      at += line.length + 1;
    }
    const important = lines.filter((l) =>
      /^(PAGESIZE|KERNELOFFSET|OSRELEASE|BUILD-ID|SYMBOL\((swapper_pg_dir|init_top_pgt|_stext|kallsyms_\w+|init_uts_ns|page_offset_base|__per_cpu_offset|runqueues|panic_cpu)\)|NUMBER\(\w+\)|LENGTH\(\w+\)|OFFSET\(\w+\.\w+\)|SIZE\(\w+\)|TCR_EL1_T1SZ|KERNELPACMASK)=/
        .test(l.text)
    );
    const line = rng.chance(0.7) && important.length ? rng.pick(important) : rng.pick(lines);
    const eq = line.text.indexOf("=");
    const valueAt = r.start + line.at + eq + 1;
    const valueLen = line.text.length - eq - 1;
    const name = line.text.slice(0, Math.max(0, eq));
    const mode = rng.int(7);
    if (eq < 0 || valueLen <= 0 || mode === 0) {
      return this.scribble({
        start: r.start + line.at,
        end: r.start + line.at + line.text.length + 1,
      }, `VMCOREINFO line "${line.text.slice(0, 30)}"`);
    }
    const fill = (chars: string) => {
      let s = "";
      for (let i = 0; i < valueLen; i++) s += chars[rng.int(chars.length)];
      this.logical(valueAt, new TextEncoder().encode(s));
      return `${name}=${s}`;
    };
    switch (mode) {
      case 1:
        return fill("0123456789abcdef");
      case 2:
        return fill("f");
      case 3:
        return fill("0");
      case 4:
        return fill("g-x ~");
      case 5:
        this.logical(r.start + line.at + eq, Uint8Array.of(rng.pick([0x00, 0x0a, 0x20, 0x3a])));
        return `${name}: "=" replaced`;
      default:
        this.logical(
          valueAt + rng.int(valueLen),
          Uint8Array.of(rng.pick([0x00, 0x0a, 0x2d, 0x39])),
        );
        return `${name}: one value byte replaced`;
    }
  }
}

/** One change to a part, of a random class: returns "class: what it did". */
function mutateOnce(m: PartMutator): string {
  const rng = m.rng;
  const l = m.layout;
  const flat = m.part.flat;
  const classes: [number, string][] = [
    [10, "header"],
    [10, "notes"],
    [12, "vmcoreinfo"],
    [14, "data"],
    [8, "truncate"],
  ];
  if (l.kind === "kdump") {
    classes.push([8, "subheader"], [6, "bitmap1"], [8, "bitmap2"], [14, "descriptor"]);
  } else classes.push([20, "phdr"]);
  if (flat) classes.push([6, "flatheader"], [10, "record"], [3, "endmarker"]);
  const kind = rng.weighted(classes);
  return `${kind}: ${change(m, kind)}`;
}

/** Apply one change of a class; returns what it did. */
function change(m: PartMutator, kind: string): string {
  const rng = m.rng;
  const l = m.layout;
  const flat = m.part.flat;
  switch (kind) {
    case "header":
      return m.field(rng.pick(l.headerFields));
    case "subheader":
      return m.field(rng.pick((l as KdumpLayout).subFields));
    case "bitmap1":
      return m.scribble((l as KdumpLayout).bitmap1, "bitmap 1");
    case "bitmap2":
      return m.scribble((l as KdumpLayout).bitmap2, "bitmap 2");
    case "descriptor": {
      const k = l as KdumpLayout;
      const n = (k.descriptors.end - k.descriptors.start) / 24;
      if (n === 0) return "descriptor (none)";
      const index = rng.int(n);
      const at = k.descriptors.start + index * 24;
      const f = rng.weighted<Field>([
        [4, { name: `descriptor ${index} offset`, at, size: 8 }],
        [4, { name: `descriptor ${index} size`, at: at + 8, size: 4 }],
        [3, { name: `descriptor ${index} flags`, at: at + 12, size: 4 }],
        [1, { name: `descriptor ${index} page_flags`, at: at + 16, size: 8 }],
      ]);
      return m.field(f);
    }
    case "phdr": {
      const e = l as ElfLayout;
      const at = rng.pick(e.phdrs);
      const [name, off, size] = rng.pick(PHDR_FIELDS);
      return m.field({
        name: `phdr ${(at - e.phdrs[0]) / e.phentsize} ${name}`,
        at: at + off,
        size,
      });
    }
    case "notes": {
      const headers = l.noteHeaders;
      if (!headers.length) return "notes (none)";
      if (rng.chance(0.6)) {
        const at = rng.pick(headers);
        const [name, off] = rng.pick([["namesz", 0], ["descsz", 4], ["type", 8]] as const);
        return m.field({ name: `note ${name}`, at: at + off, size: 4 });
      }
      const regions = l.kind === "kdump" ? (l.notes ? [l.notes] : []) : l.notes;
      return regions.length ? m.scribble(rng.pick(regions), "notes") : "notes (none)";
    }
    case "vmcoreinfo":
      return l.vmcoreinfo ? m.vmcoreinfo(l.vmcoreinfo) : "vmcoreinfo (none)";
    case "data": {
      const deps = dataRanges(m);
      if (!deps.length) return "data (none)";
      return m.scribble(rng.pick(deps), "page data");
    }
    case "truncate": {
      const size = m.part.file.size;
      const meta = l.kind === "kdump" ? l.descriptors.end : l.metadata[1].end;
      const cut = rng.weighted<() => number>([
        [4, () => rng.int(size)],
        [3, () => rng.int(Math.min(size, meta + 4096))],
        [2, () => size - 1 - rng.int(Math.min(size, 1 << 20))],
        [1, () => rng.int(64)],
      ])();
      m.cut = Math.min(m.cut ?? size, cut);
      return `truncated to ${cut} of ${size} bytes`;
    }
    case "flatheader": {
      const f = rng.pick([
        { name: "flattened signature", at: 0, size: 8 },
        { name: "flattened type", at: 16, size: 8 },
        { name: "flattened version", at: 24, size: 8 },
      ]);
      m.file(f.at + rng.int(f.size), rng.bytes(1), true);
      return `${f.name} byte`;
    }
    case "record": {
      const recs = flat!.records;
      const r = rng.chance(0.3) ? recs[rng.int(Math.min(recs.length, 8))] : rng.pick(recs);
      const which = rng.int(2);
      const orig = BigInt(which === 0 ? r.logical : r.size);
      const v = fieldValue(rng, orig, 8, m.part.file.size);
      const bytes = le(v, 8).reverse(); // big-endian
      m.file(r.header + which * 8, bytes, true);
      return `flattened record at ${r.header} ${which ? "size" : "offset"}=${BigInt.asIntN(64, v)}`;
    }
    case "endmarker":
      m.file(flat!.endMarker + rng.int(16), rng.bytes(1), true);
      return "flattened end marker";
  }
  return kind;
}

/** Data ranges of sample pages in this part, and of random pages. */
function dataRanges(m: PartMutator): Range[] {
  const l = m.layout;
  if (l.kind === "elf") {
    const s = l.loads.filter((x) => x.filesz > 0);
    if (!s.length) return [];
    const seg = m.rng.pick(s);
    const at = seg.offset + m.rng.int(Math.max(1, seg.filesz - 4096));
    return [{ start: at, end: Math.min(at + 4096, seg.offset + seg.filesz) }];
  }
  const ranges: Range[] = [];
  const d = l.descriptors;
  const n = (d.end - d.start) / 24;
  for (let k = 0; k < 4 && n > 0; k++) {
    const at = d.start + 24 * m.rng.int(n);
    const v = view(read(m.part.logical, at, 24));
    const offset = Number(v.getBigInt64(0, true));
    const size = v.getUint32(8, true);
    if (offset > 0 && size > 0) ranges.push({ start: offset, end: offset + size });
  }
  return ranges;
}

/** A seeded mutation of a base: one to three changes, to one part. */
export function mutate(base: Base, seed: number): Mutation {
  const rng = new Rng(seed);
  const partIndex = rng.int(base.parts.length);
  const m = new PartMutator(base.parts[partIndex], rng);
  const classes: string[] = [];
  const count = rng.weighted([[70, 1], [20, 2], [10, 3]]);
  for (let k = 0; k < count; k++) classes.push(mutateOnce(m));
  const patches = base.parts.map((): Patch[] => []);
  patches[partIndex] = m.patches;
  const cut = base.parts.map((): number | undefined => undefined);
  cut[partIndex] = m.cut;
  const touched = base.parts.map((): Range[] | "all" => []);
  touched[partIndex] = m.touched;
  return {
    patches,
    cut,
    touched,
    classes,
    notes: base.parts.length > 1 ? [`part ${partIndex + 1}`] : [],
  };
}

// --- the check ----------------------------------------------------------------------------------

/** Whether a case also runs the server stack, with symbols from the vmlinux or from the dump. */
export type KernelMode = "none" | "vmlinux" | "dump";

/** What one case did. */
export interface CaseOutcome {
  /** "opened", or the structure named by the open error. */
  outcome: string;
  failures: string[];
  /** Page statuses seen in the sample reads. */
  statuses: number[];
  kernel: "skipped" | "built" | "dump error";
  ms: number;
  /** External memory held while the dump was open, in bytes. */
  heldBytes: number;
}

function overlaps(a: Range, b: Range): boolean {
  return a.start < b.end && b.start < a.end;
}

function oneLine(e: DumpError, names: string[]): string | undefined {
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(e.message)) return "message is not one printable line";
  if (!names.includes(e.file)) return `names ${e.file}, not the file`;
  if (!e.structure) return "names no structure";
  if (!e.message.startsWith(`${e.file}: ${e.structure}: `)) {
    return 'is not "file: structure: problem"';
  }
  return undefined;
}

const STATUS_NAMES = ["Present", "Zero", "Excluded", "Absent", "Corrupt", "Lost"];

/**
 * Open a mutated dump and check it. `withKernel` also runs the kernel view, the kernel target
 * and an RSP session on it.
 */
export function checkCase(base: Base, mutation: Mutation, kernel: KernelMode): CaseOutcome {
  const started = performance.now();
  const out: CaseOutcome = {
    outcome: "opened",
    failures: [],
    statuses: [0, 0, 0, 0, 0, 0],
    kernel: "skipped",
    ms: 0,
    heldBytes: 0,
  };
  const fail = (text: string) => out.failures.push(text);
  const sources = base.parts.map((p, i) =>
    new PatchedSource(p.file, mutation.patches[i], mutation.cut[i])
  );
  const names = base.parts.map((p) => p.file.name);
  const external0 = Deno.memoryUsage().external;
  let dump: DumpReader;
  try {
    dump = openParts(sources);
  } catch (e) {
    if (!(e instanceof DumpError)) {
      fail(`open threw ${e instanceof Error ? e.stack : e}`);
      out.outcome = "crash";
    } else {
      const bad = oneLine(e, names);
      if (bad) fail(`open error ${bad}: ${e.message}`);
      out.outcome = e.structure;
    }
    out.ms = performance.now() - started;
    return out;
  }
  try {
    // Metadata must be usable whatever it says.
    const ps = dump.pageSize;
    if (!Number.isInteger(ps) || ps < 1024 || ps > 65536 || (ps & (ps - 1)) !== 0) {
      fail(`opened with page size ${ps}`);
      return out;
    }
    if (!Number.isFinite(dump.maxPfn) || dump.maxPfn < 0) fail(`opened with maxPfn ${dump.maxPfn}`);
    void [
      dump.format,
      dump.arch,
      dump.cpus.length,
      dump.notes.length,
      dump.warnings.join(),
      dump.details,
    ];
    void dump.vmcoreinfo?.entries.size;
    const phys = new PhysicalMemory(dump, { cacheBytes: 1 << 20 });
    const buf = new Uint8Array(base.pageSize);
    for (const s of base.samples) {
      buf.fill(0xa5);
      const r = phys.read(s.pfn * base.pageSize, buf);
      if (!(r.status in STATUS_NAMES) || r.bytes < 0 || r.bytes > buf.length) {
        fail(`pfn ${s.pfn}: impossible read result ${JSON.stringify(r)}`);
        continue;
      }
      out.statuses[r.status]++;
      if (r.status === PageStatus.Corrupt) void phys.describe(r.status);
      const touched = mutation.touched[s.part];
      const cut = mutation.cut[s.part];
      const layout = base.parts[s.part].inner;
      const meta = touched === "all" ||
        touched.some((t) => layout.metadata.some((m) => overlaps(t, m)));
      const hit = touched !== "all" && touched.some((t) => s.deps.some((d) => overlaps(t, d)));
      const cutLogical = cut === undefined ? Infinity : base.parts[s.part].flat ? -1 : cut;
      const metaCut = layout.metadata.some((m) => m.end > cutLogical);
      const depsCut = s.deps.some((d) => d.end > cutLogical);
      const same = r.bytes === s.bytes && r.status === s.status &&
        buf.subarray(0, r.bytes).every((b, i) => b === s.data[i]);
      if (!meta && !metaCut && !hit && !depsCut) {
        if (!same) {
          fail(
            `pfn ${s.pfn} untouched by the damage reads differently: ${r.bytes} bytes, ` +
              `${STATUS_NAMES[r.status]} (was ${s.bytes}, ${STATUS_NAMES[s.status]})` +
              (r.status === PageStatus.Corrupt ? `: ${dump.lastError}` : ""),
          );
        }
      } else if (!meta && !metaCut && depsCut && !hit && s.bytes === base.pageSize) {
        // Its bytes are past the end now: they must not read as if present.
        if (r.bytes === base.pageSize) fail(`pfn ${s.pfn} past the cut reads as present`);
      } else if (!meta && !metaCut && hit && !depsCut && s.checksummed) {
        // zlib pages carry a checksum: damage must not pass as data.
        if (r.bytes === base.pageSize && !same) {
          fail(`pfn ${s.pfn}: damaged zlib page read as present with other bytes`);
        }
      }
    }
    out.heldBytes = Math.max(0, Deno.memoryUsage().external - external0);
    if (kernel !== "none") runKernel(base, dump, kernel, out, fail);
  } catch (e) {
    fail(`reading threw ${e instanceof Error ? e.stack : e}`);
  } finally {
    try {
      dump.close();
    } catch (e) {
      fail(`close threw ${e}`);
    }
    out.ms = performance.now() - started;
  }
  return out;
}

/** The server stack on a mutated dump: kernel view, target, one RSP session. Nothing may throw. */
function runKernel(
  base: Base,
  dump: DumpReader,
  mode: KernelMode,
  out: CaseOutcome,
  fail: (t: string) => void,
): void {
  let kernel: Kernel;
  try {
    kernel = new Kernel(dump, {
      cacheBytes: 2 << 20,
      vmlinux: mode === "vmlinux" ? base.vmlinux : undefined,
    });
  } catch (e) {
    if (e instanceof DumpError) {
      out.kernel = "dump error";
      return;
    }
    fail(`Kernel threw ${e instanceof Error ? e.stack : e}`);
    return;
  }
  out.kernel = "built";
  try {
    const target = new KernelTarget(kernel);
    systemSummary(kernel);
    for (const t of target.threads()) target.registers(t.id);
    const addrs = [
      kernel.symbol("linux_banner"),
      kernel.symbol("init_task"),
      kernel.directMapBase,
      0xffffffff81000000n,
      0xffff800008000000n,
    ];
    for (const a of addrs) if (a !== undefined) target.readMemory(a, 4096);
    const lines: string[] = [];
    const session = new RspSession(target, { log: (l) => lines.push(l) });
    const banner = (kernel.symbol("linux_banner") ?? 0n).toString(16);
    for (
      const p of [
        "qSupported:xmlRegisters=i386",
        "qXfer:threads:read::0,fff",
        "qXfer:exec-file:read:1:0,fff",
        "qXfer:vmcoreinfo:read::0,fff",
        "?",
        "g",
        `m${banner},100`,
        "qOffsets",
        "qRcmd,737973", // sys
        "qRcmd,76746f702030786666666666666666383130303030303030", // vtop 0xffffffff81000000
        "qRcmd,63616368650a", // cache
      ]
    ) {
      session.receive(framePacket(p));
      do session.produce(); while (!session.inputDrained);
    }
    const thrown = lines.find((l) => l.includes("error handling packet"));
    if (thrown) fail(`a session handler threw: ${thrown.slice(0, 400)}`);
  } catch (e) {
    fail(`kernel target threw ${e instanceof Error ? e.stack : e}`);
  } finally {
    kernel.vmlinux?.close(); // the dump is closed by the caller
  }
}

// --- summaries --------------------------------------------------------------------------------

/** Counts and failures of a run. */
export interface CorruptSummary {
  cases: number;
  /** Cases that opened, and cases refused at open, by the structure the error named. */
  outcomes: Record<string, number>;
  /** Mutation classes applied (first word of each), with counts. */
  classes: Record<string, number>;
  /** Page statuses of the sample reads, by name. */
  statuses: Record<string, number>;
  /** Cases whose server stack was built, or refused with a DumpError. */
  kernels: { built: number; refused: number };
  slowest: { ms: number; what: string };
  maxHeldBytes: number;
  failures: string[];
}

/** An empty summary. */
export function emptySummary(): CorruptSummary {
  return {
    cases: 0,
    outcomes: {},
    classes: {},
    statuses: {},
    kernels: { built: 0, refused: 0 },
    slowest: { ms: 0, what: "" },
    maxHeldBytes: 0,
    failures: [],
  };
}
