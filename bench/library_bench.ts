/**
 * Library speed on the real fixtures: random 8-byte virtual reads (cached and uncached),
 * sequential page reads per codec, a whole 64 MiB pass as libkdumpfile does it, and
 * translations. Run through bench/run.sh (which also makes bench/out/dump.lzo-d0.kdump), or:
 *   deno bench --allow-read --allow-env bench/library_bench.ts
 *
 * A name ending in `[N reads]` (or pages, translations) does N operations per iteration; the
 * suite's summary divides by it to give operations per second.
 *
 * @module
 */

import {
  FILTERED,
  haveFiles,
  openKernel,
  randomGenerator,
  RANGE_BYTES,
  RANGE_PHYS_START,
  rangeStart,
  UNFILTERED,
} from "./common.ts";
import { VirtualMemory } from "../lib/paging.ts";
import { PhysicalMemory } from "../lib/physical_memory.ts";
import { PageStatus } from "../lib/dump.ts";
import { openDump } from "../lib/open_dump.ts";
import { KernelTarget } from "../lib/kernel_target.ts";

const PAGE = 4096;
const BATCH = 10000;
const unfiltered = Object.entries(UNFILTERED).filter(([, p]) => haveFiles(p));

/** `count` random 8-aligned offsets below `span`, fixed by the seed. */
function randomOffsets(count: number, span: number, seed?: number): number[] {
  const next = randomGenerator(seed);
  return Array.from({ length: count }, () => (next() % (span / 8)) * 8);
}

// --- cached random 8-byte reads ---------------------------------------------------------------

/**
 * Spans of the range the random reads fall in: 1 MiB (256 pages, a session's hot structures: the
 * reads stay in the CPU's caches) and 16 MiB (4096 pages, well within the default 64 MiB page
 * cache, but every read then misses the CPU's caches and TLB).
 */
const CACHED_SPANS = [1, 16];

for (const [label, path] of unfiltered) {
  const kernel = openKernel(path);
  const mem = kernel.memory!;
  const base = rangeStart(kernel);
  const buf = new Uint8Array(8);
  for (const mib of CACHED_SPANS) {
    const span = mib * 1024 * 1024;
    const addrs = randomOffsets(1 << 16, span).map((o) => base + BigInt(o));
    for (const a of addrs) mem.read(a, buf); // every page of the span cached
    let i = 0;
    Deno.bench({
      name: `random 8-byte virtual reads, cached, direct map, ${mib} MiB span, ${label} ` +
        `[${BATCH} reads]`,
      group: `cached 8-byte reads, ${mib} MiB span`,
      baseline: label === "zlib",
      fn: () => {
        for (let k = 0; k < BATCH; k++) {
          mem.read(addrs[i], buf);
          i = (i + 1) & 0xffff;
        }
      },
    });
    if (label !== "zlib") continue;

    // The same, through the server's target interface (what each small gdb `m` costs, minus
    // RSP).
    const target = new KernelTarget(kernel);
    let j = 0;
    Deno.bench({
      name: `random 8-byte target.readMemory, cached, direct map, ${mib} MiB span, ${label} ` +
        `[${BATCH} reads]`,
      group: `cached 8-byte reads, ${mib} MiB span`,
      fn: () => {
        for (let k = 0; k < BATCH; k++) {
          target.readMemory(addrs[j], 8);
          j = (j + 1) & 0xffff;
        }
      },
    });

    // Page-table translated reads (no linear fast path): kernel image addresses through the TLB.
    const walked = new VirtualMemory(kernel.phys, mem.walker, []);
    const text = kernel.symbol("_text") ?? 0n;
    const textAddrs = randomOffsets(1 << 16, span, 12345).map((o) => text + BigInt(o));
    for (const a of textAddrs) walked.read(a, buf);
    let t = 0;
    Deno.bench({
      name: `random 8-byte virtual reads, cached, page-table translated (TLB), ${mib} MiB ` +
        `span, ${label} [${BATCH} reads]`,
      group: `cached 8-byte reads, ${mib} MiB span`,
      fn: () => {
        for (let k = 0; k < BATCH; k++) {
          walked.read(textAddrs[t], buf);
          t = (t + 1) & 0xffff;
        }
      },
    });
  }
}

// --- uncached random 8-byte reads: a 4-page cache, so nearly every read decodes a page --------

const UNCACHED_BATCH = 1000;
for (const [label, path] of unfiltered) {
  const kernel = openKernel(path, 4 * PAGE);
  const mem = kernel.memory!;
  const base = rangeStart(kernel);
  const addrs = randomOffsets(1 << 16, RANGE_BYTES, 777).map((o) => base + BigInt(o));
  const buf = new Uint8Array(8);
  let i = 0;
  Deno.bench({
    name: `random 8-byte virtual reads, uncached, ${label} [${UNCACHED_BATCH} reads]`,
    group: "uncached 8-byte reads",
    baseline: label === "zlib",
    fn: () => {
      for (let k = 0; k < UNCACHED_BATCH; k++) {
        mem.read(addrs[i], buf);
        i = (i + 1) & 0xffff;
      }
    },
  });
}

// --- sequential physical page reads per codec, cache smaller than the cycle -------------------

/** Present, non-zero pfns of the range in a dump (so filtered dumps measure real pages). */
function presentPfns(phys: PhysicalMemory, limit: number): number[] {
  const first = RANGE_PHYS_START / PAGE;
  const out: number[] = [];
  const page = new Uint8Array(PAGE);
  for (let pfn = first; pfn < first + RANGE_BYTES / PAGE && out.length < limit; pfn++) {
    if (phys.dump.readPage(pfn, page) === PageStatus.Present) out.push(pfn);
  }
  return out;
}

const SEQ_BATCH = 256;
const sequential: [string, string][] = [
  ...unfiltered.map(([l, p]): [string, string] => [`${l}-d0`, p]),
  ...Object.entries(FILTERED).filter(([, p]) => haveFiles(p)).map((
    [l, p],
  ): [string, string] => [`${l}-d31`, p]),
];
for (const [label, path] of sequential) {
  // 1 MiB of cache: a cycle over thousands of pages always misses.
  const phys = new PhysicalMemory(openDump([path]), { cacheBytes: 1024 * 1024 });
  const pfns = presentPfns(phys, 8192);
  const out = new Uint8Array(PAGE);
  let i = 0;
  Deno.bench({
    name: `sequential 4 KiB page reads, uncached, ${label} (${pfns.length} pages) ` +
      `[${SEQ_BATCH} pages]`,
    group: "sequential page reads",
    baseline: label === "zlib-d0",
    fn: () => {
      for (let k = 0; k < SEQ_BATCH; k++) {
        phys.read(pfns[i] * PAGE, out);
        i = i + 1 === pfns.length ? 0 : i + 1;
      }
    },
  });
}

// --- the whole range, 4 KiB virtual reads from a fresh cache: what libkdumpfile is timed on ----

for (const [label, path] of unfiltered) {
  const out = new Uint8Array(PAGE);
  Deno.bench({
    name: `64 MiB of 4 KiB virtual reads, fresh default cache, ${label} [${
      RANGE_BYTES / PAGE
    } pages]`,
    group: "64 MiB pass",
    baseline: label === "zlib",
    n: 5,
    warmup: 1,
    fn: (b) => {
      const kernel = openKernel(path);
      const mem = kernel.memory!;
      const base = rangeStart(kernel);
      b.start();
      for (let off = 0; off < RANGE_BYTES; off += PAGE) mem.read(base + BigInt(off), out);
      b.end();
      kernel.close();
    },
  });
}

// --- translations ------------------------------------------------------------------------------

if (unfiltered.length) {
  const kernel = openKernel(unfiltered[0][1]);
  const mem = kernel.memory!;
  const base = rangeStart(kernel);
  const direct = randomOffsets(1 << 16, RANGE_BYTES, 99).map((o) => base + BigInt(o));
  const text = kernel.symbol("_text") ?? 0n;
  const image = randomOffsets(1 << 16, 16 * 1024 * 1024, 5).map((o) => text + BigInt(o));
  const tlbOnly = new VirtualMemory(kernel.phys, mem.walker, []);
  for (const a of image) tlbOnly.translate(a);
  let i = 0;
  let sink = 0;
  Deno.bench({
    name: `translate, linear fast path (direct map) [${BATCH} translations]`,
    group: "translations",
    baseline: true,
    fn: () => {
      for (let k = 0; k < BATCH; k++) {
        sink += mem.translate(direct[i]);
        i = (i + 1) & 0xffff;
      }
    },
  });
  Deno.bench({
    name: `translate, translation cache hit (kernel image) [${BATCH} translations]`,
    group: "translations",
    fn: () => {
      for (let k = 0; k < BATCH; k++) {
        sink += tlbOnly.translate(image[i]);
        i = (i + 1) & 0xffff;
      }
    },
  });
  Deno.bench({
    name: `translate, full page-table walk (direct map, tables cached) [${BATCH} translations]`,
    group: "translations",
    fn: () => {
      for (let k = 0; k < BATCH; k++) {
        sink += mem.translateByWalk(direct[i]);
        i = (i + 1) & 0xffff;
      }
    },
  });
  globalThis.addEventListener("unload", () => {
    if (sink === 0.5) console.log(sink); // keep the results alive
  });
}
