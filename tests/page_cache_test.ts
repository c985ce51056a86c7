/** The page cache (lib/page_cache.ts): exact LRU order, slots reused, failed decodes forgotten. */

import assert from "node:assert/strict";
import { PageCache } from "../lib/page_cache.ts";

/** A byte that tells pages apart, from both halves of the pfn. */
function tag(pfn: number): number {
  return (pfn % 256) ^ (Math.floor(pfn / 2 ** 32) % 251);
}

function put(cache: PageCache, pfn: number, fill = tag(pfn)): number {
  const slot = cache.reserve();
  const at = cache.offset(slot);
  cache.slab(slot).fill(fill, at, at + cache.pageSize);
  cache.store(pfn, slot);
  return slot;
}

function content(cache: PageCache, pfn: number): number | undefined {
  const page = cache.get(pfn);
  if (page === undefined) return undefined;
  assert.equal(page.length, cache.pageSize);
  assert.ok(page.every((b) => b === page[0]), "a page holds one value");
  return page[0];
}

Deno.test("page cache: evicts the least recently used page, hits refresh recency", () => {
  const cache = new PageCache(4096, 4 * 4096);
  assert.equal(cache.capacity, 4);
  for (let pfn = 1; pfn <= 4; pfn++) put(cache, pfn);
  assert.equal(cache.lookup(1) >= 0, true); // 1 is now the most recent: 2 is the oldest
  put(cache, 5);
  assert.equal(content(cache, 2), undefined);
  for (const pfn of [1, 3, 4, 5]) assert.equal(content(cache, pfn), pfn);
  assert.equal(cache.size, 4);
  assert.equal(cache.bytes, 4 * 4096);
  // Order now (oldest first): 1 3 4 5; two more pages push out 1 and 3.
  put(cache, 6);
  put(cache, 7);
  assert.deepEqual([1, 3, 4, 5, 6, 7].map((p) => content(cache, p)), [
    undefined,
    undefined,
    4,
    5,
    6,
    7,
  ]);
  assert.ok(cache.hits > 0 && cache.misses > 0);
});

Deno.test("page cache: a reserved slot that is never stored caches nothing and is reused", () => {
  const cache = new PageCache(4096, 8 * 4096);
  const a = cache.reserve(); // a decode that failed
  const b = cache.reserve();
  assert.equal(b, a); // the abandoned slot comes back first
  cache.store(10, b);
  assert.equal(cache.size, 1);
  const c = cache.reserve();
  assert.notEqual(c, b);
  assert.throws(() => cache.store(11, b), /last reserve/);
  cache.store(11, c);
  assert.equal(cache.size, 2);
});

Deno.test("page cache: storing a page twice keeps one copy", () => {
  const cache = new PageCache(4096, 4 * 4096);
  put(cache, 3, 1);
  put(cache, 3, 2);
  assert.equal(cache.size, 1);
  assert.equal(content(cache, 3), 2);
  for (let pfn = 10; pfn < 13; pfn++) put(cache, pfn);
  assert.equal(content(cache, 3), 2); // the freed slot was used, nothing else was evicted
  assert.equal(cache.size, 4);
});

// Page frame numbers: small and dense; and above 2^32 (52-bit physical addresses), spread so
// that only their high halves differ, which the pfn table must hash apart too.
for (
  const [label, pfnOf] of [
    ["dense pfns", (r: number) => r],
    ["pfns above 2^32", (r: number) => 2 ** 39 + r * 2 ** 32],
  ] as const
) {
  Deno.test(`page cache: thousands of pages over a long run stay exact (${label})`, () => {
    longRun(pfnOf);
  });
}

function longRun(pfnOf: (r: number) => number): void {
  const cache = new PageCache(4096, 1000 * 4096);
  // Reference LRU: a Map in recency order.
  const ref = new Map<number, number>();
  let seed = 7;
  for (let i = 0; i < 50000; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const pfn = pfnOf((seed >>> 16) % 1500);
    const hit = cache.lookup(pfn);
    if (ref.has(pfn)) {
      assert.ok(hit >= 0, `pfn ${pfn} should be cached`);
      assert.equal(cache.slab(hit)[cache.offset(hit)], tag(pfn));
      ref.delete(pfn);
      ref.set(pfn, 1);
    } else {
      assert.equal(hit, -1, `pfn ${pfn} should not be cached`);
      put(cache, pfn);
      ref.set(pfn, 1);
      if (ref.size > 1000) ref.delete(ref.keys().next().value!);
    }
  }
  assert.equal(cache.size, ref.size);
  assert.equal(cache.size, 1000);
}

Deno.test("page cache: 64 KiB pages and a cache smaller than four pages", () => {
  const cache = new PageCache(65536, 1000);
  assert.equal(cache.capacity, 4);
  for (let pfn = 0; pfn < 6; pfn++) put(cache, pfn);
  assert.equal(content(cache, 5), 5);
  assert.equal(content(cache, 1), undefined);
  assert.equal(cache.view(cache.lookup(5)).length, 65536);
});

Deno.test("page cache: clear() drops every page and reuses the slots it had", () => {
  const cache = new PageCache(4096, 4 * 4096);
  const first = [1, 2, 3, 4].map((pfn) => put(cache, pfn));
  const slabs = new Set(first.map((s) => cache.slab(s)));
  cache.clear();
  assert.equal(cache.size, 0);
  for (let pfn = 1; pfn <= 4; pfn++) assert.equal(cache.lookup(pfn), -1, `pfn ${pfn} gone`);
  // New pages land in the same memory, and the cache fills and evicts as a new one would.
  const again = [11, 12, 13, 14].map((pfn) => put(cache, pfn, 0x5a));
  assert.deepEqual(again.sort(), first.sort());
  for (const s of again) assert.ok(slabs.has(cache.slab(s)), "no new slab");
  put(cache, 15);
  assert.equal(content(cache, 11), undefined);
  for (const pfn of [12, 13, 14]) assert.equal(content(cache, pfn), 0x5a);
  assert.equal(content(cache, 15), tag(15));
  assert.equal(cache.size, 4);
});
