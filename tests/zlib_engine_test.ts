/**
 * The reused zlib engine of lib/codecs.ts against node:zlib's own inflateSync: same pages
 * accepted with the same bytes, every damaged page refused, and the engine still right after
 * any error.
 */

import assert from "node:assert/strict";
import { deflateSync, inflateSync } from "node:zlib";
import { CodecError, decompressPage, zlibDecoder } from "../lib/codecs.ts";
import { loadCodecVectors } from "./codecs_vectors.ts";

/** inflateSync's verdict: the page when it inflates to exactly `size` bytes, else undefined. */
function reference(src: Uint8Array, size: number): Uint8Array | undefined {
  try {
    const out = inflateSync(src, { maxOutputLength: size + 1 });
    return out.length === size ? out : undefined;
  } catch {
    return undefined;
  }
}

/** decompressPage's verdict, failing the test on anything but a CodecError. */
function engine(src: Uint8Array, size: number): Uint8Array | undefined {
  const out = new Uint8Array(size);
  try {
    decompressPage("zlib", src, out);
    return out;
  } catch (e) {
    assert.ok(e instanceof CodecError, `not a CodecError: ${e}`);
    return undefined;
  }
}

function sameVerdict(src: Uint8Array, size: number, what: string): void {
  const want = reference(src, size);
  const got = engine(src, size);
  if (want === undefined) assert.equal(got, undefined, `${what}: accepted, inflateSync refuses`);
  else assert.deepEqual(got, new Uint8Array(want), `${what}: differs from inflateSync`);
}

Deno.test("zlib pages go through the reused engine on this Deno", () => {
  assert.equal(zlibDecoder, "reused node:zlib engine");
});

Deno.test("zlib engine: real pages decode exactly as inflateSync decodes them", () => {
  const vectors = loadCodecVectors().filter((v) => v.codec === "zlib");
  assert.ok(vectors.length > 10);
  for (const v of vectors) sameVerdict(v.src, v.size, `${v.file} ${v.kind} ${v.size}`);
});

Deno.test("zlib engine: every truncation, corruption and wrong length is refused", () => {
  const page = new Uint8Array(4096).map((_, i) => (i * 31 + (i >> 7)) & 0xff);
  const good = Uint8Array.from(deflateSync(page));
  for (let n = 0; n < good.length; n++) {
    assert.equal(engine(good.subarray(0, n), 4096), undefined, `truncated to ${n}`);
  }
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) >>> 0);
  for (let i = 0; i < 3000; i++) {
    const bad = Uint8Array.from(good);
    const flips = 1 + (next() % 3);
    for (let f = 0; f < flips; f++) bad[next() % bad.length] ^= 1 << (next() % 8);
    sameVerdict(bad, 4096, `corruption ${i}`);
  }
  for (const size of [4095, 4097, 8192, 0]) {
    const other = Uint8Array.from(deflateSync(new Uint8Array(size).fill(3)));
    assert.equal(engine(other, 4096), undefined, `a ${size}-byte stream for a 4096-byte page`);
  }
  // Bytes after the end of the stream are ignored, as inflateSync ignores them.
  const trailing = new Uint8Array(good.length + 3);
  trailing.set(good);
  sameVerdict(trailing, 4096, "trailing bytes");
  // And after all those errors, the engine still decodes a good page.
  assert.deepEqual(engine(good, 4096), page);
});

Deno.test("zlib engine: every page size from 4 KiB to 64 KiB", () => {
  for (let size = 4096; size <= 65536; size *= 2) {
    const page = new Uint8Array(size).map((_, i) => (i ^ (i >> 9)) & 0xff);
    assert.deepEqual(engine(Uint8Array.from(deflateSync(page)), size), page, `${size}`);
  }
});
