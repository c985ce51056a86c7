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
 * table lookup and a few array writes (a `Map` delete + re-insert per hit measured several times
 * slower); a miss reuses the least recently used slot.
 *
 * The pfn → slot table is open addressing with linear probing in typed arrays, twice as many
 * entries as slots: a lookup measured 5 ns against 36–44 ns for a `Map` keyed by page frame
 * numbers (which V8 hashes as heap numbers), on a hot path that costs about 100 ns in all.
 *
 * @module
 */

/** Largest slab, bytes. */
const SLAB_BYTES = 256 * 1024 * 1024;
const NONE = -1;
/** An empty entry of the pfn table (no page frame number is negative). */
const EMPTY = -1;
const TWO_32 = 4294967296;

/** pfn → slot, open addressing with linear probing and backward-shift deletion. */
class PfnTable {
  #keys: Float64Array;
  #slots: Int32Array;
  #mask: number;
  #shift: number;
  size = 0;

  constructor(capacity: number) {
    let bits = 4;
    while (1 << bits < 2 * capacity) bits++;
    this.#keys = new Float64Array(1 << bits).fill(EMPTY);
    this.#slots = new Int32Array(1 << bits);
    this.#mask = (1 << bits) - 1;
    this.#shift = 32 - bits;
  }

  /** Home position of a pfn (Fibonacci hashing of its two 32-bit halves). */
  #home(pfn: number): number {
    return Math.imul((pfn >>> 0) ^ Math.floor(pfn / TWO_32), 0x9e3779b1) >>> this.#shift;
  }

  get(pfn: number): number {
    const keys = this.#keys;
    let i = this.#home(pfn);
    for (;;) {
      const k = keys[i];
      if (k === pfn) return this.#slots[i];
      if (k === EMPTY) return NONE;
      i = (i + 1) & this.#mask;
    }
  }

  /** Map pfn to slot (pfn must not be in the table). */
  set(pfn: number, slot: number): void {
    const keys = this.#keys;
    let i = this.#home(pfn);
    while (keys[i] !== EMPTY) i = (i + 1) & this.#mask;
    keys[i] = pfn;
    this.#slots[i] = slot;
    this.size++;
  }

  /** Forget every mapping (the table keeps its size). */
  clear(): void {
    if (this.size === 0) return;
    this.#keys.fill(EMPTY);
    this.size = 0;
  }

  delete(pfn: number): void {
    const keys = this.#keys;
    const mask = this.#mask;
    let i = this.#home(pfn);
    while (keys[i] !== pfn) {
      if (keys[i] === EMPTY) return;
      i = (i + 1) & mask;
    }
    // Move later entries of the probe run back into the hole when their home allows it, so
    // every key stays reachable from its home without tombstones.
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const k = keys[j];
      if (k === EMPTY) break;
      const home = this.#home(k);
      const between = i <= j ? i < home && home <= j : i < home || home <= j;
      if (between) continue;
      keys[i] = k;
      this.#slots[i] = this.#slots[j];
      i = j;
    }
    keys[i] = EMPTY;
    this.size--;
  }
}

/** LRU cache of pages keyed by page frame number. */
export class PageCache {
  /** Bytes per page. */
  readonly pageSize: number;
  /** Most pages held at once. */
  readonly capacity: number;
  /** Lookups answered from the cache. */
  hits = 0;
  /** Lookups that missed. */
  misses = 0;

  /** pfn → slot. */
  #slotOf: PfnTable;
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

  /**
   * An empty cache; its slabs are allocated when first needed.
   * @param pageSize bytes per page
   * @param bytes memory bound: the cache holds bytes / pageSize pages (at least 4)
   */
  constructor(pageSize: number, bytes: number) {
    this.pageSize = pageSize;
    this.capacity = Math.max(4, Math.floor(bytes / pageSize));
    this.#pfnOf = new Float64Array(this.capacity);
    this.#slotOf = new PfnTable(this.capacity);
    this.#prev = new Int32Array(this.capacity);
    this.#next = new Int32Array(this.capacity);
    // Slabs of an eighth of the cache (at least 256 KiB, at most SLAB_BYTES): a small cache that
    // lives for one stop of a live guest allocates only what that stop fills.
    const slabBytes = Math.min(SLAB_BYTES, Math.max(256 * 1024, (this.capacity * pageSize) / 8));
    this.#slabPages = Math.max(1, Math.floor(slabBytes / pageSize));
  }

  /** Slot of the cached page `pfn`, marked most recently used; -1 on a miss. */
  lookup(pfn: number): number {
    const slot = this.#slotOf.get(pfn);
    if (slot === NONE) {
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
    if (old !== NONE) {
      // Already cached (a caller decoded it twice): keep one copy.
      this.#unlink(old);
      this.#free.push(old);
      this.#slotOf.delete(pfn);
    }
    this.#pfnOf[slot] = pfn;
    this.#slotOf.set(pfn, slot);
    this.#pushFront(slot);
  }

  /**
   * Drop every cached page, keeping the memory that held them for the pages read next (a live
   * guest's cache is emptied at every resume, hundreds of times a second when stepping).
   */
  clear(): void {
    this.#slotOf.clear();
    this.#head = NONE;
    this.#tail = NONE;
    this.#fresh = 0;
    this.#free = [];
    this.#reserved = NONE;
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
