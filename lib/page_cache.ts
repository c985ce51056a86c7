/**
 * A bounded LRU cache of decoded pages. Once full, every miss reuses the buffer of the page it
 * evicts, so a long session allocates nothing on the page path.
 *
 * @module
 */

/** LRU cache of page buffers keyed by page frame number. */
export class PageCache {
  readonly pageSize: number;
  /** Most pages held at once. */
  readonly capacity: number;
  // Map iteration order is insertion order: the first key is the least recently used.
  #pages = new Map<number, Uint8Array>();
  /** Lookups answered from the cache, and lookups that missed. */
  hits = 0;
  misses = 0;

  constructor(pageSize: number, bytes: number) {
    this.pageSize = pageSize;
    this.capacity = Math.max(4, Math.floor(bytes / pageSize));
  }

  /** The cached page, marked most recently used; undefined on a miss. */
  get(pfn: number): Uint8Array | undefined {
    const page = this.#pages.get(pfn);
    if (page === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.#pages.delete(pfn);
    this.#pages.set(pfn, page);
    return page;
  }

  /**
   * A buffer to decode page `pfn` into. It is not cached until `commit` is called, so a failed
   * decode leaves nothing stale behind.
   */
  slot(): Uint8Array {
    if (this.#pages.size < this.capacity) return new Uint8Array(this.pageSize);
    const oldest = this.#pages.keys().next().value!;
    const buf = this.#pages.get(oldest)!;
    this.#pages.delete(oldest);
    return buf;
  }

  /** Cache a buffer obtained from `slot` as page `pfn`. */
  commit(pfn: number, page: Uint8Array): void {
    this.#pages.set(pfn, page);
  }

  /** Pages held now. */
  get size(): number {
    return this.#pages.size;
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.#pages.size * this.pageSize;
  }
}
