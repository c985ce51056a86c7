/**
 * LZO1X decompression through our own wasm module (wasm/lzo1x.c; see lib/wasm_codec.ts).
 *
 * @module
 */

import { LZO1X_WASM_BASE64 } from "../wasm/lzo1x_wasm.ts";
import { WasmDecoder } from "./wasm_codec.ts";

/** Result codes of the wasm decoder (a non-negative result is a byte count). */
export const LZO1X_ERRORS: Readonly<Record<number, string>> = {
  [-1]: "input ends inside an instruction",
  [-2]: "output would exceed the page",
  [-3]: "match reaches before the start of the output",
  [-4]: "input continues after the end-of-stream marker",
};

const decoder = new WasmDecoder(LZO1X_WASM_BASE64, "lzo1x_decompress");

/**
 * Decodes the LZO1X stream `src` into `out`, writing at most `out.length`
 * bytes. Returns the number of bytes produced, or a negative code (see
 * LZO1X_ERRORS) when the stream is damaged or does not fit in `out`; in that
 * case `out` is left unchanged.
 */
export function lzo1xDecompress(src: Uint8Array, out: Uint8Array): number {
  return decoder.decompress(src, out);
}
