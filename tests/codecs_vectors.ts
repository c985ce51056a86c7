/**
 * Real compressed pages for the codec tests and benchmarks: the committed
 * vectors in testdata/codecs/ (made by testdata/codecs/make_vectors.py with
 * the reference compressors) and, when they exist, the pages of the kdump
 * fixtures in testdata/fixtures/.
 */

import { closeSync, existsSync, openSync, readdirSync, readSync } from "node:fs";
import { codecFromFlags, type PageCodec } from "../lib/codecs.ts";
import { join } from "node:path";
import { FIXTURES } from "./fixtures.ts";

/** One compressed page with what it must decode to. */
export interface CodecVector {
  /** The vector file it came from, e.g. "lzo999.bin". */
  file: string;
  codec: PageCodec;
  /** Page size, i.e. the exact decoded length. */
  size: number;
  /** "kernel" (from a vmlinux image), "zero", "sparse", "noise" or "runs". */
  kind: string;
  /** SHA-256 of the decoded page, lowercase hex. */
  sha256: string;
  src: Uint8Array;
}

const VECTOR_DIR = new URL("../testdata/codecs/", import.meta.url);

interface Manifest {
  files: Record<string, { codec: PageCodec; pages: [number, number, string, string][] }>;
}

/** Loads every committed vector (a few hundred KiB). */
export function loadCodecVectors(): CodecVector[] {
  const manifest: Manifest = JSON.parse(
    Deno.readTextFileSync(new URL("manifest.json", VECTOR_DIR)),
  );
  const vectors: CodecVector[] = [];
  for (const [file, entry] of Object.entries(manifest.files)) {
    const buf = Deno.readFileSync(new URL(file, VECTOR_DIR));
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    let off = 0;
    for (const [size, compressed, sha256, kind] of entry.pages) {
      const len = view.getUint32(off, true);
      if (len !== compressed || view.getUint32(off + 4, true) !== size) {
        throw new Error(`${file}: record at ${off} does not match the manifest`);
      }
      vectors.push({
        file,
        codec: entry.codec,
        size,
        kind,
        sha256,
        src: buf.slice(off + 8, off + 8 + len),
      });
      off += 8 + len;
    }
    if (off !== buf.length) throw new Error(`${file}: ${buf.length - off} bytes left over`);
  }
  return vectors;
}

/** SHA-256 of `data` as lowercase hex. */
export async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The kdump files (not flattened) of the test fixtures that exist now; they
 * are built separately, and a "tmp" directory may hold files being written.
 */
export function fixtureDumps(): string[] {
  // Where the fixtures are (KDUMP_FIXTURES, as CI sets it, or testdata/fixtures).
  const root = FIXTURES;
  if (!existsSync(root)) return [];
  const found: string[] = [];
  for (const dir of readdirSync(root, { withFileTypes: true })) {
    if (!dir.isDirectory() || dir.name === "tmp") continue;
    const sub = join(root, dir.name);
    for (const f of readdirSync(sub)) {
      const path = join(sub, f);
      if (f.endsWith(".kdump") && hasKdumpSignature(path)) found.push(path);
    }
  }
  return found.sort();
}

function hasKdumpSignature(path: string): boolean {
  const fd = openSync(path, "r");
  try {
    const sig = new Uint8Array(8);
    return readSync(fd, sig, 0, 8, 0) === 8 && new TextDecoder().decode(sig) === "KDUMP   ";
  } finally {
    closeSync(fd);
  }
}

/** A page as stored in a kdump file. */
export interface DumpPage {
  /** Index of its descriptor in the page_desc table. */
  index: number;
  /** page_desc.flags mapped to a codec (undefined for unknown flags). */
  codec: PageCodec | undefined;
  flags: number;
  src: Uint8Array;
}

function readAt(fd: number, pos: number, len: number): Uint8Array {
  const buf = new Uint8Array(len);
  let got = 0;
  while (got < len) {
    const n = readSync(fd, buf, got, len - got, pos + got);
    if (n === 0) throw new Error(`short read at ${pos + got}`);
    got += n;
  }
  return buf;
}

/** Number of set bits of `bitmap` in [from, to). */
function countBits(bitmap: Uint8Array, from: number, to: number): number {
  let n = 0;
  for (let bit = from; bit < to; bit++) n += (bitmap[bit >> 3] >> (bit & 7)) & 1;
  return n;
}

/**
 * Reads up to `limit` pages of a (non-flattened) 64-bit kdump file, taking
 * every `stride`-th descriptor of its page_desc table (by default a stride
 * that spreads them over the whole table). Layout, from makedumpfile's
 * diskdump_mod.h: a disk_dump_header block, sub_hdr_size blocks of
 * kdump_sub_header, bitmap_blocks blocks holding two bitmaps (the second
 * marks the dumped pfns), then one 24-byte page_desc (u64 offset, u32 size,
 * u32 flags, u64 page_flags) per dumped pfn in pfn order, then page data.
 * A --split part only holds the pfns in its sub-header's [start_pfn, end_pfn).
 */
export function readKdumpPages(
  path: string,
  limit: number,
  stride?: number,
): { pageSize: number; count: number; pages: DumpPage[] } {
  const fd = openSync(path, "r");
  try {
    const header = readAt(fd, 0, 464);
    const sig = new TextDecoder().decode(header.subarray(0, 8));
    if (sig !== "KDUMP   ") {
      throw new Error(`${path}: not a kdump file (signature ${JSON.stringify(sig)})`);
    }
    const h = new DataView(header.buffer);
    const blockSize = h.getInt32(428, true);
    const subHdrBlocks = h.getInt32(432, true);
    const bitmapBlocks = h.getUint32(436, true);
    const maxMapnr = h.getUint32(440, true);
    const sub = new DataView(readAt(fd, blockSize, 32).buffer);
    const split = sub.getInt32(12, true) !== 0;
    const from = split ? Number(sub.getBigUint64(16, true)) : 0;
    const to = split ? Number(sub.getBigUint64(24, true)) : maxMapnr;
    const half = (bitmapBlocks * blockSize) / 2;
    const dumped = readAt(fd, (1 + subHdrBlocks) * blockSize + half, half);
    const count = countBits(dumped, from, Math.min(to, half * 8));
    const table = (1 + subHdrBlocks + bitmapBlocks) * blockSize;
    const step = stride ?? Math.max(1, Math.floor(count / limit));
    const pages: DumpPage[] = [];
    for (let index = 0; index < count && pages.length < limit; index += step) {
      const d = new DataView(readAt(fd, table + index * 24, 24).buffer);
      const offset = Number(d.getBigUint64(0, true));
      const size = d.getUint32(8, true);
      const flags = d.getUint32(12, true);
      if (size === 0 || size > blockSize) {
        throw new Error(`${path}: page_desc ${index} has size ${size}`);
      }
      pages.push({ index, codec: codecFromFlags(flags), flags, src: readAt(fd, offset, size) });
    }
    return { pageSize: blockSize, count, pages };
  } finally {
    closeSync(fd);
  }
}
