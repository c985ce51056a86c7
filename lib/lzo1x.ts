/**
 * LZO1X decompression through our own wasm module (wasm/lzo1x.c, embedded
 * as base64 in wasm/lzo1x_wasm.ts so no file is read at run time).
 *
 * The module is instantiated synchronously at import: it is 1.3 KiB and has
 * no imports. Input and output live in two regions of its memory that are
 * reused across calls and only grow, so a call allocates nothing in JS.
 */

import { LZO1X_WASM_BASE64 } from "../wasm/lzo1x_wasm.ts";

/** Result codes of the wasm decoder (a non-negative result is a byte count). */
export const LZO1X_ERRORS: Readonly<Record<number, string>> = {
  [-1]: "input ends inside an instruction",
  [-2]: "output would exceed the page",
  [-3]: "match reaches before the start of the output",
  [-4]: "input continues after the end-of-stream marker",
};

interface Lzo1xExports {
  memory: WebAssembly.Memory;
  __heap_base: WebAssembly.Global;
  lzo1x_decompress(src: number, srcLen: number, dst: number, dstCap: number): number;
}

const WASM_PAGE = 65536;

function instantiate(): Lzo1xExports {
  const bin = atob(LZO1X_WASM_BASE64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {});
  return instance.exports as unknown as Lzo1xExports;
}

const wasm = instantiate();
const heapBase = wasm.__heap_base.value as number;
const decode = wasm.lzo1x_decompress;
// Layout: [heapBase, heapBase + srcCap) input, then dstCap bytes of output.
let srcCap = 0;
let dstCap = 0;
let memory = new Uint8Array(wasm.memory.buffer);

/** Makes the input and output regions at least this large (rounded up to 64 KiB). */
function reserve(srcLen: number, dstLen: number): void {
  if (srcLen <= srcCap && dstLen <= dstCap) return;
  srcCap = Math.max(srcCap, Math.ceil(srcLen / WASM_PAGE) * WASM_PAGE);
  dstCap = Math.max(dstCap, Math.ceil(dstLen / WASM_PAGE) * WASM_PAGE);
  const need = heapBase + srcCap + dstCap;
  const have = wasm.memory.buffer.byteLength;
  if (need > have) wasm.memory.grow(Math.ceil((need - have) / WASM_PAGE));
  memory = new Uint8Array(wasm.memory.buffer);
}

/**
 * Decodes the LZO1X stream `src` into `out`, writing at most `out.length`
 * bytes. Returns the number of bytes produced, or a negative code (see
 * LZO1X_ERRORS) when the stream is damaged or does not fit in `out`; in that
 * case `out` is left unchanged.
 */
export function lzo1xDecompress(src: Uint8Array, out: Uint8Array): number {
  reserve(src.length, out.length);
  const srcPtr = heapBase;
  const dstPtr = heapBase + srcCap;
  memory.set(src, srcPtr);
  const n = decode(srcPtr, src.length, dstPtr, out.length);
  if (n > 0) out.set(memory.subarray(dstPtr, dstPtr + n));
  return n;
}
