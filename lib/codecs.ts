/**
 * Page decompression for kdump (diskdump) files: one call per page, synchronous,
 * output checked to be exactly one page.
 *
 * Each codec uses the fastest decoder measured on real kernel pages that also
 * fails cleanly on damaged input (bench/codecs_bench.ts):
 * - zlib: node:zlib's inflate, one engine reset per page (kdump pages are zlib-wrapped, from
 *   compress2);
 * - LZO1X: our own wasm decoder (lib/lzo1x.ts);
 * - snappy: our own wasm decoder (lib/snappy.ts), which also checks the length preamble;
 * - zstd: node:zlib's zstd decoder, after checking the frame header's content size (the
 *   @bokuweb/zstd-wasm package decoded a page in 16 µs against 25 µs, but its wasm instance held
 *   18 MiB in every process, whatever the dump; zstd kdump files are rare).
 * Only zlib verifies a checksum; for the others a damaged page is caught only
 * when the stream stops making sense or its length comes out wrong.
 */

import {
  constants as zlibConstants,
  createInflate,
  deflateSync,
  inflateSync,
  zstdDecompressSync,
} from "node:zlib";
import { LZO1X_ERRORS, lzo1xDecompress } from "./lzo1x.ts";
import { SNAPPY_ERRORS, snappyDecompress } from "./snappy.ts";

/** Page compression methods found in kdump page descriptors. */
export type PageCodec = "raw" | "zlib" | "lzo" | "snappy" | "zstd";

// page_desc.flags values (makedumpfile's DUMP_DH_COMPRESSED_*).
const FLAG_ZLIB = 0x1;
const FLAG_LZO = 0x2;
const FLAG_SNAPPY = 0x4;
const FLAG_ZSTD = 0x20;

/** page_desc.flags bits: zlib 0x1, LZO 0x2, snappy 0x4, zstd 0x20; 0 = stored raw. */
export function codecFromFlags(flags: number): PageCodec | undefined {
  switch (flags) {
    case 0:
      return "raw";
    case FLAG_ZLIB:
      return "zlib";
    case FLAG_LZO:
      return "lzo";
    case FLAG_SNAPPY:
      return "snappy";
    case FLAG_ZSTD:
      return "zstd";
    default:
      return undefined; // unknown or several bits: no way to decode it
  }
}

/** Thrown when compressed data is damaged or does not decode to exactly out.length bytes. */
export class CodecError extends Error {
  /** The error's name in messages and stack traces. */
  override name = "CodecError";
}

/** The smallest and largest page sizes a kdump file can declare. */
const MIN_PAGE = 4096;
const MAX_PAGE = 65536;

/**
 * No codec here expands a page by more than a few percent, so a longer input
 * is damage (a bad page_desc size); refusing it also keeps the wasm decoders
 * from growing their memory to hold it.
 */
function maxCompressedLength(pageSize: number): number {
  return 2 * pageSize + 4096;
}

/**
 * Decode `src` into `out`, which must come out exactly full (out.length = page size, 4 KiB..64 KiB).
 * Throws CodecError otherwise. Must never hang, never read/write out of bounds, on any input.
 */
export function decompressPage(codec: PageCodec, src: Uint8Array, out: Uint8Array): void {
  if (out.length < MIN_PAGE || out.length > MAX_PAGE) {
    throw new CodecError(`page size ${out.length} is outside ${MIN_PAGE}..${MAX_PAGE}`);
  }
  switch (codec) {
    case "raw":
      if (src.length !== out.length) {
        throw new CodecError(`raw page is ${src.length} bytes, expected ${out.length}`);
      }
      out.set(src);
      return;
    case "zlib":
      checkInputLength(codec, src, out);
      return decodeZlib(src, out);
    case "lzo":
      checkInputLength(codec, src, out);
      return decodeLzo(src, out);
    case "snappy":
      checkInputLength(codec, src, out);
      return decodeSnappy(src, out);
    case "zstd":
      checkInputLength(codec, src, out);
      return decodeZstd(src, out);
    default:
      throw new CodecError(`unknown page codec ${String(codec)}`);
  }
}

function checkInputLength(codec: string, src: Uint8Array, out: Uint8Array): void {
  if (src.length > maxCompressedLength(out.length)) {
    throw new CodecError(
      `${codec} page of ${src.length} bytes is too long for a ${out.length}-byte page`,
    );
  }
}

function wrongLength(codec: string, got: number, want: number): CodecError {
  return new CodecError(`${codec} page decodes to ${got} bytes, expected ${want}`);
}

/**
 * One zlib inflate engine for the whole process, reset per page: node:zlib's `inflateSync` builds
 * and frees a stream (state, window, a Node stream object, an output Buffer) on every call, which
 * measured 13 µs per real 4 KiB kernel page here against 5 µs for a reused engine (the
 * difference is all set-up: both run the same native inflate). node:zlib has no public
 * synchronous engine, so this drives the one inside a `zlib.Inflate` through the handle its
 * own `inflateSync` uses (`reset`, `writeSync`, the `_writeState` pair [avail_out, avail_in],
 * `onerror`); the engine checks itself on a known stream at load, and if that handle ever
 * changes shape, pages fall back to `inflateSync`.
 */
interface ZlibHandle {
  reset(): void;
  writeSync(
    flush: number,
    input: Uint8Array,
    inOffset: number,
    inLength: number,
    output: Uint8Array,
    outOffset: number,
    outLength: number,
  ): void;
  onerror: (message: string, errno: number) => void;
}

class ZlibEngine {
  #handle: ZlibHandle;
  /** [avail_out, avail_in] after each writeSync. */
  #state: Uint32Array;
  #error: string | undefined;
  /** Where more output than a page would go (it only needs to exist). */
  #overflow = new Uint8Array(64);

  constructor() {
    const stream = createInflate() as unknown as { _handle?: ZlibHandle; _writeState?: unknown };
    const handle = stream._handle;
    if (
      !handle || typeof handle.reset !== "function" || typeof handle.writeSync !== "function" ||
      !(stream._writeState instanceof Uint32Array)
    ) {
      throw new Error("node:zlib has no usable inflate handle");
    }
    this.#handle = handle;
    this.#state = stream._writeState;
    handle.onerror = (message: string) => {
      this.#error = message;
    };
  }

  /** Inflate one zlib stream into exactly `out`; throws CodecError otherwise. */
  inflate(src: Uint8Array, out: Uint8Array): void {
    const h = this.#handle;
    h.reset();
    this.#error = undefined;
    h.writeSync(ZLIB_FINISH, src, 0, src.length, out, 0, out.length);
    this.#check();
    const produced = out.length - this.#state[0];
    if (produced !== out.length) throw wrongLength("zlib", produced, out.length);
    // The page is full: the stream must also have ended there (checksum verified). Feeding it the
    // rest of its input with room to spare either ends quietly, yields more bytes (too long), or
    // fails (cut short, or damaged beyond this point).
    const left = this.#state[1];
    const overflow = this.#overflow;
    h.writeSync(ZLIB_FINISH, src, src.length - left, left, overflow, 0, overflow.length);
    this.#check();
    if (this.#state[0] !== overflow.length) {
      throw new CodecError(`zlib page decodes to more than ${out.length} bytes`);
    }
  }

  #check(): void {
    if (this.#error !== undefined) {
      throw new CodecError(`zlib page is damaged: ${this.#error}`);
    }
  }
}

const ZLIB_FINISH = zlibConstants.Z_FINISH;

function inflateWithNodeZlib(src: Uint8Array, out: Uint8Array): void {
  let data: Uint8Array;
  try {
    // maxOutputLength stops a page that inflates to more than a page early.
    data = inflateSync(src, { maxOutputLength: out.length });
  } catch (e) {
    throw new CodecError(`zlib page is damaged: ${(e as Error).message}`, { cause: e });
  }
  if (data.length !== out.length) throw wrongLength("zlib", data.length, out.length);
  out.set(data);
}

/** The reusable engine if it works on this runtime (checked on a known page), else undefined. */
function makeZlibEngine(): ZlibEngine | undefined {
  try {
    const engine = new ZlibEngine();
    const page = new Uint8Array(4096).map((_, i) => (i * 7) & 0x3f);
    const out = new Uint8Array(4096);
    engine.inflate(deflateSync(page), out);
    if (!out.every((b, i) => b === page[i])) return undefined;
    return engine;
  } catch {
    return undefined;
  }
}

const zlibEngine = makeZlibEngine();

/** Which zlib decoder pages go through (for benchmarks and diagnostics). */
export const zlibDecoder: string = zlibEngine ? "reused node:zlib engine" : "node:zlib inflateSync";

function decodeZlib(src: Uint8Array, out: Uint8Array): void {
  if (zlibEngine) zlibEngine.inflate(src, out);
  else inflateWithNodeZlib(src, out);
}

function decodeLzo(src: Uint8Array, out: Uint8Array): void {
  const n = lzo1xDecompress(src, out);
  if (n < 0) throw new CodecError(`LZO page is damaged: ${LZO1X_ERRORS[n] ?? `error ${n}`}`);
  if (n !== out.length) throw wrongLength("LZO", n, out.length);
}

function decodeSnappy(src: Uint8Array, out: Uint8Array): void {
  const n = snappyDecompress(src, out);
  if (n < 0) throw new CodecError(`snappy page is damaged: ${SNAPPY_ERRORS[n] ?? `error ${n}`}`);
  if (n !== out.length) throw wrongLength("snappy", n, out.length);
}

const ZSTD_MAGIC = 0xfd2fb528;

/**
 * Parses a zstd frame header just far enough to return its content size:
 * a number, undefined when the frame does not record it, or null when the
 * header is damaged (bad magic, reserved bit set, or cut short).
 */
function zstdContentSize(src: Uint8Array): number | undefined | null {
  if (src.length < 5) return null;
  const magic = (src[0] | (src[1] << 8) | (src[2] << 16) | (src[3] << 24)) >>> 0;
  if (magic !== ZSTD_MAGIC) return null;
  const fhd = src[4];
  if (fhd & 0x08) return null; // reserved bit
  const singleSegment = (fhd >> 5) & 1;
  const fcsFlag = fhd >> 6;
  const dictIdSize = [0, 1, 2, 4][fhd & 3];
  const fcsSize = fcsFlag === 0 ? singleSegment : 1 << fcsFlag; // 0/1, 2, 4, 8 bytes
  const at = 5 + (singleSegment ? 0 : 1) + dictIdSize; // after the window descriptor and dict id
  if (src.length < at + fcsSize) return null;
  let size = 0;
  for (let i = fcsSize - 1; i >= 0; i--) size = size * 256 + src[at + i];
  if (fcsSize === 0) return undefined;
  return fcsSize === 2 ? size + 256 : size;
}

function decodeZstd(src: Uint8Array, out: Uint8Array): void {
  // Only frames that declare exactly one page (or no size) are decoded, and never into more
  // than a page: a damaged size cannot make the decoder allocate for it.
  const declared = zstdContentSize(src);
  if (declared === null) throw new CodecError("zstd page has a damaged frame header");
  if (declared !== undefined && declared !== out.length) {
    throw wrongLength("zstd", declared, out.length);
  }
  let data: Uint8Array;
  try {
    data = zstdDecompressSync(src, { maxOutputLength: out.length });
  } catch (e) {
    throw new CodecError(`zstd page is damaged: ${(e as Error).message}`, { cause: e });
  }
  // A cut-short frame decodes to fewer bytes without an error: the length check catches it.
  if (data.length !== out.length) throw wrongLength("zstd", data.length, out.length);
  out.set(data);
}
