/**
 * Page decode speed, µs per page, on real pages:
 *   deno bench --allow-read bench/codecs_bench.ts
 * "vectors": 4 KiB pages of a kernel image compressed by the reference
 * libraries (testdata/codecs/). "fixture": compressed pages spread over the
 * kdump files in testdata/fixtures/ that exist (written by makedumpfile, or
 * re-encoded from its output for snappy and zstd).
 * Each iteration decodes one page, cycling through the set.
 */

import { inflateSync } from "node:zlib";
import { decompressPage, type PageCodec } from "../lib/codecs.ts";
import { fixtureDumps, loadCodecVectors, readKdumpPages } from "../tests/codecs_vectors.ts";

function benchPages(
  name: string,
  group: string,
  codec: PageCodec,
  pages: Uint8Array[],
  size: number,
) {
  const out = new Uint8Array(size);
  let i = 0;
  Deno.bench({
    name,
    group,
    baseline: true,
    fn: () => {
      decompressPage(codec, pages[i], out);
      i = (i + 1) % pages.length;
    },
  });
}

const vectors = loadCodecVectors().filter((v) => v.kind === "kernel" && v.size === 4096);
const files = [...new Set(vectors.map((v) => v.file))];
for (const file of files) {
  const set = vectors.filter((v) => v.file === file);
  const codec = set[0].codec;
  const label = file.replace(/\.bin$/, "");
  benchPages(
    `${label}: vectors, ${set.length} kernel pages`,
    label,
    codec,
    set.map((v) => v.src),
    4096,
  );
}

// The zlib decoder used before the reused engine: inflateSync builds a stream per page.
{
  const zlib = vectors.filter((v) => v.codec === "zlib").map((v) => v.src);
  const out = new Uint8Array(4096);
  let i = 0;
  Deno.bench({
    name: "zlib: node:zlib inflateSync per page (previous decoder)",
    group: "zlib",
    fn: () => {
      out.set(inflateSync(zlib[i], { maxOutputLength: 4096 }));
      i = (i + 1) % zlib.length;
    },
  });
}

// A stored page costs one copy: the floor under every codec.
{
  const raw = [new Uint8Array(4096).fill(7)];
  benchPages("raw: 4 KiB copy", "raw", "raw", raw, 4096);
}

// One dump per codec and dump level (split parts and re-assembled copies hold the same pages).
const benched = new Set<string>();
for (const path of fixtureDumps()) {
  if (/split|reassembled/.test(path)) continue;
  const { pageSize, pages } = readKdumpPages(path, 500);
  const level = path.match(/-(d\d+)[^/]*\.kdump$/)?.[1] ?? "";
  const byCodec = new Map<PageCodec, Uint8Array[]>();
  for (const p of pages) {
    if (p.codec === undefined || p.codec === "raw") continue;
    byCodec.set(p.codec, [...(byCodec.get(p.codec) ?? []), p.src]);
  }
  const short = path.split("/").slice(-2).join("/");
  for (const [codec, srcs] of byCodec) {
    if (benched.has(codec + level)) continue;
    benched.add(codec + level);
    const name = `${codec}: fixture ${short}, ${srcs.length} pages`;
    benchPages(name, `fixture-${codec}-${level}`, codec, srcs, pageSize);
  }
}
