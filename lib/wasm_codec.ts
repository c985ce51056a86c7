/**
 * Runs a page decoder of ours compiled to wasm (wasm/*.c, embedded as base64 in
 * wasm/*_wasm.ts so no file is read at run time).
 *
 * A module is a few KiB with no imports, so it is instantiated synchronously. Input and output
 * live in two regions of its memory that are reused across calls and only grow (a page and its
 * compressed form: a few hundred KiB at most), so a call allocates nothing in JS.
 *
 * @module
 */

const WASM_PAGE = 65536;

interface DecoderExports {
  memory: WebAssembly.Memory;
  __heap_base: WebAssembly.Global;
  [decode: string]: unknown;
}

/** decode(src, srcLen, dst, dstCap) → bytes produced, or a negative error code. */
type DecodeFunction = (src: number, srcLen: number, dst: number, dstCap: number) => number;

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const bin = atob(text);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

/**
 * One instantiated decoder module. `decompress(src, out)` decodes `src` into `out`, writing at
 * most `out.length` bytes, and returns the number of bytes produced or the module's negative
 * error code (then `out` is left unchanged).
 */
export class WasmDecoder {
  #memory: WebAssembly.Memory;
  #view: Uint8Array;
  #heapBase: number;
  #decode: DecodeFunction;
  // Layout: [heapBase, heapBase + srcCap) input, then dstCap bytes of output.
  #srcCap = 0;
  #dstCap = 0;

  constructor(base64: string, exportName: string) {
    const module = new WebAssembly.Module(fromBase64(base64));
    const exports = new WebAssembly.Instance(module, {}).exports as unknown as DecoderExports;
    this.#memory = exports.memory;
    this.#heapBase = exports.__heap_base.value as number;
    this.#decode = exports[exportName] as DecodeFunction;
    this.#view = new Uint8Array(this.#memory.buffer);
  }

  decompress(src: Uint8Array, out: Uint8Array): number {
    this.#reserve(src.length, out.length);
    const srcPtr = this.#heapBase;
    const dstPtr = srcPtr + this.#srcCap;
    this.#view.set(src, srcPtr);
    const n = this.#decode(srcPtr, src.length, dstPtr, out.length);
    if (n > 0) out.set(this.#view.subarray(dstPtr, dstPtr + n));
    return n;
  }

  /** Makes the input and output regions at least this large (rounded up to 64 KiB). */
  #reserve(srcLen: number, dstLen: number): void {
    if (srcLen <= this.#srcCap && dstLen <= this.#dstCap) return;
    this.#srcCap = Math.max(this.#srcCap, Math.ceil(srcLen / WASM_PAGE) * WASM_PAGE);
    this.#dstCap = Math.max(this.#dstCap, Math.ceil(dstLen / WASM_PAGE) * WASM_PAGE);
    const need = this.#heapBase + this.#srcCap + this.#dstCap;
    const have = this.#memory.buffer.byteLength;
    if (need > have) this.#memory.grow(Math.ceil((need - have) / WASM_PAGE));
    this.#view = new Uint8Array(this.#memory.buffer);
  }
}
