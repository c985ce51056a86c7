/**
 * A bounded LRU cache of decoded pages, allocation-free once warm.
 *
 * Pages live in a few large slabs (up to 256 MiB each), allocated whole when first needed: the
 * system gives them memory only as pages are written, so the cache costs what it holds, and no
 * per-page object exists for the garbage collector to trace (one JS object per cached page
 * measured about 4 MiB of heap at 16384 pages, and made V8 grow its young generation). A page is
 * named by its slot number; `slab(slot)` and `offset(slot)` locate its bytes.
 *
 * Recency is an intrusive doubly-linked list over slot numbers in typed arrays: a hit is one
 * `Map` lookup and a few array writes (a `Map` delete + re-insert per hit measured several times
 * slower); a miss reuses the least recently used slot.
 *
 * @module
 */

/** Largest slab, bytes. */
const SLAB_BYTES = 256 * 1024 * 1024;
const NONE = -1;

/** LRU cache of pages keyed by page frame number. */
export class PageCache {
  readonly pageSize: number;
  /** Most pages held at once. */
  readonly capacity: number;
  /** Lookups answered from the cache, and lookups that missed. */
  hits = 0;
  misses = 0;

  /** pfn → slot. */
  #slotOf = new Map<number, number>();
  /** slot → pfn (meaningful for slots in the list). */
  #pfnOf: Float64Array;
  /** Recency list: #head is the most recently used slot, #tail the least. */
  #prev: Int32Array;
  #next: Int32Array;
  #head = NONE;
  #tail = NONE;
  #slabPages: number;
  #slabs: Uint8Array[] = [];
  /** Slots never used yet start here; slots below it are cached, free or reserved. */
  #fresh = 0;
  /** Slots given back (a decode that failed, a page cached twice). */
  #free: number[] = [];
  /** Slot handed out by `reserve()` and not yet stored. */
  #reserved = NONE;

  constructor(pageSize: number, bytes: number) {
    this.pageSize = pageSize;
    this.capacity = Math.max(4, Math.floor(bytes / pageSize));
    this.#pfnOf = new Float64Array(this.capacity);
    this.#prev = new Int32Array(this.capacity);
    this.#next = new Int32Array(this.capacity);
    this.#slabPages = Math.max(1, Math.floor(SLAB_BYTES / pageSize));
  }

  /** Slot of the cached page `pfn`, marked most recently used; -1 on a miss. */
  lookup(pfn: number): number {
    const slot = this.#slotOf.get(pfn);
    if (slot === undefined) {
      this.misses++;
      return NONE;
    }
    this.hits++;
    if (slot !== this.#head) {
      this.#unlink(slot);
      this.#pushFront(slot);
    }
    return slot;
  }

  /**
   * A slot to decode a page into (its bytes: `slab(slot)` from `offset(slot)`). Nothing is cached
   * until `store` is called, so a failed decode leaves nothing stale behind. When the cache is
   * full this evicts the least recently used page.
   */
  reserve(): number {
    if (this.#reserved !== NONE) this.#free.push(this.#reserved); // never stored
    let slot: number;
    if (this.#free.length > 0) {
      slot = this.#free.pop()!;
    } else if (this.#fresh < this.capacity) {
      slot = this.#fresh++;
      const slab = Math.floor(slot / this.#slabPages);
      if (slab === this.#slabs.length) this.#allocateSlab();
    } else {
      slot = this.#tail;
      this.#unlink(slot);
      this.#slotOf.delete(this.#pfnOf[slot]);
    }
    this.#reserved = slot;
    return slot;
  }

  /** Cache the slot from the last `reserve()` as page `pfn`. */
  store(pfn: number, slot: number): void {
    if (slot === NONE || slot !== this.#reserved) {
      throw new Error("PageCache.store: not the slot of the last reserve() call");
    }
    this.#reserved = NONE;
    const old = this.#slotOf.get(pfn);
    if (old !== undefined) {
      // Already cached (a caller decoded it twice): keep one copy.
      this.#unlink(old);
      this.#free.push(old);
    }
    this.#pfnOf[slot] = pfn;
    this.#slotOf.set(pfn, slot);
    this.#pushFront(slot);
  }

  /** The slab holding `slot`. */
  slab(slot: number): Uint8Array {
    return this.#slabs[Math.floor(slot / this.#slabPages)];
  }

  /** Byte offset of `slot` in its slab. */
  offset(slot: number): number {
    return (slot % this.#slabPages) * this.pageSize;
  }

  /** The page in `slot` as its own array (a new view: not for hot paths). */
  view(slot: number): Uint8Array {
    const at = this.offset(slot);
    return this.slab(slot).subarray(at, at + this.pageSize);
  }

  /** The cached page as a view, marked most recently used; undefined on a miss. */
  get(pfn: number): Uint8Array | undefined {
    const slot = this.lookup(pfn);
    return slot === NONE ? undefined : this.view(slot);
  }

  /** Pages held now. */
  get size(): number {
    return this.#slotOf.size;
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.#slotOf.size * this.pageSize;
  }

  #allocateSlab(): void {
    const first = this.#slabs.length * this.#slabPages;
    const pages = Math.min(this.#slabPages, this.capacity - first);
    this.#slabs.push(new Uint8Array(pages * this.pageSize));
  }

  #unlink(slot: number): void {
    const p = this.#prev[slot];
    const n = this.#next[slot];
    if (p === NONE) this.#head = n;
    else this.#next[p] = n;
    if (n === NONE) this.#tail = p;
    else this.#prev[n] = p;
  }

  #pushFront(slot: number): void {
    this.#prev[slot] = NONE;
    this.#next[slot] = this.#head;
    if (this.#head !== NONE) this.#prev[this.#head] = slot;
    this.#head = slot;
    if (this.#tail === NONE) this.#tail = slot;
  }
}
