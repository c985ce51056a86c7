import assert from "node:assert/strict";
import { deflateSync, zstdCompressSync } from "node:zlib";
import { snappyCompressor } from "hysnappy";
import { CodecError, codecFromFlags, decompressPage, type PageCodec } from "../lib/codecs.ts";
import { lzo1xDecompress } from "../lib/lzo1x.ts";
import { snappyDecompress } from "../lib/snappy.ts";
import { SNAPPY_WASM_BASE64 } from "../wasm/snappy_wasm.ts";
import { LZO1X_WASM_BASE64 } from "../wasm/lzo1x_wasm.ts";
import { fixtureDumps, loadCodecVectors, readKdumpPages, sha256Hex } from "./codecs_vectors.ts";
import type { FuzzMessage, FuzzRequest, FuzzSummary } from "./codecs_fuzz_worker.ts";

const CODECS: PageCodec[] = ["zlib", "lzo", "snappy", "zstd"];
const PAGE_SIZES = [4096, 8192, 16384, 65536];

/** A page that looks like kernel memory: zero runs, pointers, some text. */
function syntheticPage(size: number, seed: number): Uint8Array {
  const page = new Uint8Array(size);
  const view = new DataView(page.buffer);
  let x = seed * 2654435761 >>> 0;
  const next = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0);
  for (let off = 0; off < size; off += 8) {
    const r = next() % 8;
    if (r < 3) continue; // zero
    if (r < 6) view.setBigUint64(off, 0xffff888000000000n + BigInt(next() & 0xfffff8), true);
    else view.setUint32(off, next(), true);
  }
  page.set(new TextEncoder().encode("swapper/0 kworker/u4:1"), size / 2);
  return page;
}

function assertCodecError(fn: () => void, message?: RegExp) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof CodecError, `expected CodecError, got ${String(e)}`);
    if (message) assert.match((e as Error).message, message);
    return true;
  });
}

Deno.test("codecFromFlags maps single compression bits and rejects the rest", () => {
  assert.equal(codecFromFlags(0), "raw");
  assert.equal(codecFromFlags(0x1), "zlib");
  assert.equal(codecFromFlags(0x2), "lzo");
  assert.equal(codecFromFlags(0x4), "snappy");
  assert.equal(codecFromFlags(0x20), "zstd");
  for (const bad of [0x3, 0x8, 0x10, 0x21, 0x40, 0x80000000, -1]) {
    assert.equal(codecFromFlags(bad), undefined, `flags ${bad}`);
  }
});

Deno.test("vectors from the reference compressors decode to the expected pages", async () => {
  const vectors = loadCodecVectors();
  const seen = new Set<string>();
  for (const v of vectors) {
    const out = new Uint8Array(v.size);
    decompressPage(v.codec, v.src, out);
    assert.equal(await sha256Hex(out), v.sha256, `${v.file} ${v.kind} ${v.size}`);
    seen.add(`${v.codec}/${v.size}`);
  }
  for (const codec of CODECS) {
    for (const size of PAGE_SIZES) assert.ok(seen.has(`${codec}/${size}`), `${codec}/${size}`);
  }
  assert.ok(vectors.some((v) => v.file === "lzo999.bin"), "LZO1X-999 output is covered");
  assert.ok(vectors.some((v) => v.file === "zlib6.bin"), "zlib level 6 output is covered");
});

Deno.test("round trip through in-process compressors at every page size", () => {
  const snappyCompress = snappyCompressor();
  const compressors: [PageCodec, (p: Uint8Array) => Uint8Array][] = [
    ["zlib", (p) => deflateSync(p)],
    ["snappy", (p) => snappyCompress(p)],
    ["zstd", (p) => zstdCompressSync(p)],
    ["raw", (p) => p],
  ];
  for (const size of PAGE_SIZES) {
    for (let seed = 1; seed <= 5; seed++) {
      const page = syntheticPage(size, seed);
      for (const [codec, compress] of compressors) {
        const out = new Uint8Array(size);
        decompressPage(codec, compress(page), out);
        assert.deepEqual(out, page, `${codec} ${size} seed ${seed}`);
      }
    }
  }
});

Deno.test("a page that decodes to the wrong length is rejected", () => {
  const vectors = loadCodecVectors().filter((v) => v.kind === "kernel" && v.size === 4096);
  for (const codec of CODECS) {
    const v = vectors.find((v) => v.codec === codec)!;
    assertCodecError(() => decompressPage(codec, v.src, new Uint8Array(8192)));
    const big = loadCodecVectors().find((w) => w.codec === codec && w.size === 8192)!;
    assertCodecError(() => decompressPage(codec, big.src, new Uint8Array(4096)));
  }
  assertCodecError(() => decompressPage("raw", new Uint8Array(4095), new Uint8Array(4096)));
  assertCodecError(() => decompressPage("raw", new Uint8Array(4097), new Uint8Array(4096)));
  // Inputs far longer than any encoding of a page are refused before decoding.
  for (const codec of CODECS) {
    assertCodecError(
      () => decompressPage(codec, new Uint8Array(4 * 4096), new Uint8Array(4096)),
      /too long/,
    );
  }
  // Output buffers outside the kdump page sizes are refused outright.
  assertCodecError(
    () => decompressPage("raw", new Uint8Array(100), new Uint8Array(100)),
    /page size/,
  );
  assertCodecError(() => decompressPage("zlib", new Uint8Array(0), new Uint8Array(131072)));
  assertCodecError(() =>
    decompressPage("bogus" as PageCodec, new Uint8Array(0), new Uint8Array(4096))
  );
});

Deno.test("LZO: hand-made streams exercise each instruction and each error", () => {
  const run = (bytes: number[], cap = 64) => {
    const out = new Uint8Array(cap);
    const n = lzo1xDecompress(new Uint8Array(bytes), out);
    return n < 0 ? n : Array.from(out.subarray(0, n));
  };
  const EOS = [0x11, 0x00, 0x00];
  // First-byte literal run: 21 - 17 = 4 literals.
  assert.deepEqual(run([21, 1, 2, 3, 4, ...EOS]), [1, 2, 3, 4]);
  // M2 (01LDDDSS + H): 3 + L bytes at distance 1 + D + (H << 3); here distance 1, a run.
  assert.deepEqual(run([18, 7, 0x40, 0x00, ...EOS]), [7, 7, 7, 7]);
  // M2 with two trailing literals (SS = 2), then M1 (state 1..3): 2 bytes at distance 1 + D + (H << 2).
  assert.deepEqual(run([18, 5, 0x42, 0x00, 8, 9, 0x00, 0x00, ...EOS]), [5, 5, 5, 5, 8, 9, 9, 9]);
  // After a run of 4+ literals, 0000DDSS copies 3 bytes from 2049+ back.
  const lits = Array.from({ length: 2100 }, (_, i) => (i * 31) & 0xff);
  // State 0, 0x00: 18 + extension literals; 2100 = 18 + 8 * 255 + 42.
  const long = run([0x00, ...Array(8).fill(0), 42, ...lits, 0x00, 0x00, ...EOS], 4096);
  assert.ok(Array.isArray(long));
  assert.equal(long.length, 2103);
  assert.deepEqual(long.slice(2100), lits.slice(2100 - 2049, 2100 - 2049 + 3));
  // M3 (001LLLLL + LE16): 2 + L bytes at distance 1 + (LE16 >> 2).
  assert.deepEqual(run([20, 1, 2, 3, 0x21, 0x08, 0x00, ...EOS]), [1, 2, 3, 1, 2, 3]);
  // M4 (0001HLLL + LE16): distance 16384 + (H << 14) + (LE16 >> 2) needs 16 KiB of history.
  const history = Array.from({ length: 16400 }, (_, i) => (i * 7) & 0xff);
  const m4 = run([0x00, ...Array(64).fill(0), 62, ...history, 0x11, 0x04, 0x00, ...EOS], 16400 + 3);
  assert.ok(Array.isArray(m4));
  assert.deepEqual(m4.slice(16400), history.slice(16400 - 16385, 16400 - 16385 + 3));
  // Errors: empty input, truncated instruction, lookbehind, output overrun, trailing bytes.
  assert.equal(run([]), -1);
  assert.equal(run([21, 1, 2]), -1);
  assert.equal(run([21, 1, 2, 3, 4]), -1);
  assert.equal(run([21, 1, 2, 3, 4, 0x11, 0x00]), -1);
  assert.equal(run([18, 7, 0x40, 0x01, ...EOS]), -3);
  assert.equal(run([0x11, 0x04, 0x00, ...EOS]), -3);
  assert.equal(run([21, 1, 2, 3, 4, ...EOS], 3), -2);
  assert.equal(run([18, 7, 0xe0, 0x00, ...EOS], 4), -2);
  assert.equal(run([21, 1, 2, 3, 4, ...EOS, 0]), -4);
  // A length extension that runs on and on stops at the end of the input.
  assert.equal(run([0x00, ...Array(100000).fill(0), 1], 4096), -1);
  // The end marker's length is ignored, even an extended one (as liblzo2 does).
  assert.deepEqual(run([21, 1, 2, 3, 4, 0x10, 0, 0, 0, 0x11, 0x00, 0x00], 4), [1, 2, 3, 4]);
  // Only an end marker: nothing decoded, so decompressPage rejects it.
  assert.deepEqual(run(EOS), []);
  assertCodecError(() => decompressPage("lzo", new Uint8Array(EOS), new Uint8Array(4096)));
});

Deno.test("snappy: hand-made blocks exercise each element and each error", () => {
  const run = (bytes: number[], cap = 64) => {
    const out = new Uint8Array(cap);
    const n = snappyDecompress(new Uint8Array(bytes), out);
    return n < 0 ? n : Array.from(out.subarray(0, n));
  };
  // Literal (tag 00, length - 1 in the tag's high six bits).
  assert.deepEqual(run([3, 2 << 2, 1, 2, 3]), [1, 2, 3]);
  // Literal with a 1-byte length (tag 60 << 2): 70 bytes.
  const lit70 = Array.from({ length: 70 }, (_, i) => i);
  assert.deepEqual(run([70, 60 << 2, 69, ...lit70], 128), lit70);
  // Literal with a 2-byte length (61 << 2): 300 bytes.
  const lit300 = Array.from({ length: 300 }, (_, i) => (i * 3) & 0xff);
  assert.deepEqual(run([0xac, 0x02, 61 << 2, 0x2b, 0x01, ...lit300], 512), lit300);
  // Copy with a 1-byte offset (01): length 4 + 0, offset 1: an overlapping run.
  assert.deepEqual(run([6, 4, 1, 2, 0x01, 1]), [1, 2, 2, 2, 2, 2]);
  // Copy with a 2-byte offset (10): length 1 + 2, offset 3.
  assert.deepEqual(run([6, 8, 7, 8, 9, (2 << 2) | 2, 3, 0]), [7, 8, 9, 7, 8, 9]);
  // Copy with a 4-byte offset (11): length 1 + 1, offset 2.
  assert.deepEqual(run([4, 4, 5, 6, (1 << 2) | 3, 2, 0, 0, 0]), [5, 6, 5, 6]);
  // Errors: damaged preamble, truncated literal and copies, offset 0 or too far, output
  // overrun, a length that differs from the preamble.
  assert.equal(run([]), -4);
  assert.equal(run([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), -4);
  assert.equal(run([3, 2 << 2, 1, 2]), -1);
  assert.equal(run([3, 60 << 2]), -1);
  assert.equal(run([6, 4, 1, 2, 0x01]), -1);
  assert.equal(run([6, 4, 1, 2, (2 << 2) | 2, 3]), -1);
  assert.equal(run([6, 4, 1, 2, (2 << 2) | 3, 3, 0, 0]), -1);
  assert.equal(run([6, 4, 1, 2, 0x01, 0]), -3);
  assert.equal(run([6, 4, 1, 2, 0x01, 3]), -3);
  assert.equal(run([3, 2 << 2, 1, 2, 3], 2), -2);
  assert.equal(run([9, 4, 1, 2, 0x05, 1], 8), -2);
  assert.equal(run([4, 2 << 2, 1, 2, 3]), -5);
  assert.equal(run([2, 2 << 2, 1, 2, 3]), -5);
  // A literal length of 2^32 - 1 cannot wrap around.
  assert.equal(run([3, 63 << 2, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]), -2);
});

for (const name of ["lzo1x", "snappy"]) {
  Deno.test(`the embedded ${name} module is wasm/${name}.wasm, with no imports`, () => {
    const file = Deno.readFileSync(new URL(`../wasm/${name}.wasm`, import.meta.url));
    const base64 = name === "lzo1x" ? LZO1X_WASM_BASE64 : SNAPPY_WASM_BASE64;
    const embedded = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    assert.deepEqual(embedded, file, `run wasm/build.sh to regenerate wasm/${name}_wasm.ts`);
    assert.deepEqual(WebAssembly.Module.imports(new WebAssembly.Module(file)), []);
  });
}

Deno.test("snappy and zstd: headers that announce a different size are refused up front", () => {
  const page = syntheticPage(4096, 9);
  const s = snappyCompressor()(page);
  assert.equal((s[0] & 0x7f) | (s[1] << 7), 4096); // the preamble varint
  assertCodecError(() => decompressPage("snappy", s, new Uint8Array(8192)), /4096/);
  assertCodecError(() =>
    decompressPage(
      "snappy",
      new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
      new Uint8Array(4096),
    )
  );
  const z = zstdCompressSync(page);
  assertCodecError(() => decompressPage("zstd", z, new Uint8Array(8192)), /4096/);
  const badMagic = z.slice();
  badMagic[0] ^= 1;
  assertCodecError(() => decompressPage("zstd", badMagic, new Uint8Array(4096)), /header/);
  // A frame claiming 2^32 + 4096 bytes (8-byte content size field) is refused, not truncated to 4096.
  const huge = new Uint8Array([
    0x28,
    0xb5,
    0x2f,
    0xfd,
    0xe0,
    0x00,
    0x10,
    0,
    0,
    1,
    0,
    0,
    0,
    1,
    0,
    0,
  ]);
  assertCodecError(() => decompressPage("zstd", huge, new Uint8Array(4096)));
  // Bytes after the frame are not silently ignored.
  const trailing = new Uint8Array(z.length + 4);
  trailing.set(z);
  assertCodecError(() => decompressPage("zstd", trailing, new Uint8Array(4096)));
});

/** Runs the fuzz worker for one codec; fails if it goes quiet for 20 s (a hang). */
async function fuzz(codec: PageCodec): Promise<void> {
  const worker = new Worker(new URL("./codecs_fuzz_worker.ts", import.meta.url), {
    type: "module",
  });
  const request: FuzzRequest = { codec, seed: 0x5eed + codec.length, corruptions: 400 };
  let last = "start";
  try {
    const result = await new Promise<FuzzSummary>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => reject(new Error(`${codec} decoder hung after ${last}`)), 20000);
      };
      worker.onmessage = (e: MessageEvent<FuzzMessage>) => {
        if ("ready" in e.data) {
          worker.postMessage(request);
        } else if ("done" in e.data) {
          clearTimeout(timer);
          resolve(e.data);
        } else {
          last = e.data.current;
          arm();
        }
      };
      worker.onerror = (e) => {
        clearTimeout(timer);
        e.preventDefault();
        reject(new Error(`${codec} fuzz worker crashed after ${last}: ${e.message}`));
      };
      arm();
      worker.postMessage(
        { codec, seed: 0x5eed + codec.length, corruptions: 400 } satisfies FuzzRequest,
      );
    });
    assert.deepEqual(result.failures, []);
    assert.ok(result.cases > 5000, `${result.cases} cases`);
    assert.ok(result.slowestMs < 1000, `slowest case took ${result.slowestMs} ms`);
  } finally {
    worker.terminate();
  }
}

for (const codec of CODECS) {
  Deno.test(`${codec}: every truncation and random corruptions fail cleanly, never hang`, () =>
    fuzz(codec));
}

const dumps = fixtureDumps();

Deno.test({
  name: "pages of the real kdump fixtures decode, and agree across codecs",
  ignore: dumps.length === 0,
  fn: async () => {
    // Dumps of one vmcore at one dump level hold the same pages in the same
    // order, whatever their codec: decoded pages must match between them.
    const reference = new Map<string, Map<number, string>>();
    let decoded = 0;
    for (const path of dumps) {
      const { pageSize, count, pages } = readKdumpPages(path, 300, 53);
      if (count === 0) continue; // e.g. an empty --split part
      const hashes = new Map<number, string>();
      for (const p of pages) {
        assert.ok(p.codec !== undefined, `${path}: page_desc ${p.index} has flags ${p.flags}`);
        const out = new Uint8Array(pageSize);
        decompressPage(p.codec, p.src, out);
        hashes.set(p.index, await sha256Hex(out));
      }
      decoded += pages.length;
      assert.ok(pages.some((p) => p.codec !== "raw"), `${path}: no compressed pages`);
      // The directory (one vmcore) and the dump level, e.g. ".../x86_64-6.1/d31".
      // Parts of a --split set number their descriptors from their own first pfn: compare
      // them only with themselves (tests/readers_real_test.ts checks the set as a whole).
      const key = path.includes(".split-") ? path : path.replace(/[^/]*-(d\d+)[^/]*\.kdump$/, "$1");
      const ref = reference.get(key);
      if (!ref) {
        reference.set(key, hashes);
        continue;
      }
      for (const [index, hash] of hashes) {
        if (ref.has(index)) assert.equal(hash, ref.get(index), `${path}: page_desc ${index}`);
      }
    }
    assert.ok(decoded > 0);
  },
});
