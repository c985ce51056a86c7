/**
 * Physical memory of a dump: reads of any length over pages, through the page cache.
 *
 * @module
 */

import { type DumpReader, PageStatus, pageStatusText } from "./dump.ts";
import { PageCache } from "./page_cache.ts";

/** Options for the physical view. */
export interface PhysicalMemoryOptions {
  /** Page cache bound in bytes (default 64 MiB). */
  cacheBytes?: number;
  /** Read pages the dump level excluded as zeros instead of failing (opt-in). */
  zeroExcluded?: boolean;
}

/** Result of a physical read: how many bytes were read, and why it stopped if short. */
export interface PhysRead {
  /** Bytes read from the start address. */
  bytes: number;
  /** Status of the page that stopped the read (Present when the read is complete). */
  status: PageStatus;
  /** Physical address of the first byte not read. */
  stoppedAt: number;
}

/** `#page` results other than a cache slot. */
const ZERO_PAGE = -1;
const UNREADABLE = -2;

/** Default page cache size. */
export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;

/** Reads physical memory from a dump. */
export class PhysicalMemory {
  /** The dump read from. */
  readonly dump: DumpReader;
  /** Bytes per page of the dump. */
  readonly pageSize: number;
  /** Decoded pages, shared by every read. */
  readonly cache: PageCache;
  /** Pages the dump level excluded read as zeros instead of failing. */
  readonly zeroExcluded: boolean;
  #pageShift: number;
  #scratch8 = new Uint8Array(8);
  #scratch8View = new DataView(this.#scratch8.buffer);

  /**
   * Physical memory of a dump, with its own page cache.
   * @param dump the dump whose pages are read
   * @param options page cache size, and whether excluded pages read as zeros
   */
  constructor(dump: DumpReader, options: PhysicalMemoryOptions = {}) {
    this.dump = dump;
    this.pageSize = dump.pageSize;
    this.#pageShift = Math.log2(dump.pageSize);
    this.cache = new PageCache(dump.pageSize, options.cacheBytes ?? DEFAULT_CACHE_BYTES);
    this.zeroExcluded = options.zeroExcluded ?? false;
  }

  /** Drop every cached page (a live guest has resumed: what was read may have changed). */
  forget(): void {
    this.cache.clear();
  }

  /**
   * Read `out.length` bytes at `paddr`, page by page, stopping at the first page that cannot be
   * read. Returns the count read and the reason it stopped.
   */
  read(paddr: number, out: Uint8Array): PhysRead {
    const bytes = this.readInto(paddr, out, 0, out.length);
    return { bytes, status: this.lastStatus, stoppedAt: paddr + bytes };
  }

  /**
   * The allocation-free form of {@link read}: copy `length` bytes at `paddr` into `out` from
   * `offset`, stopping at the first page that cannot be read. Returns the count copied; when it
   * is short, `lastStatus` says why (it is `Present` after a complete read).
   */
  readInto(paddr: number, out: Uint8Array, offset: number, length: number): number {
    const size = this.pageSize;
    // Hot path: a small read within one page (struct fields, page-table entries, gdb's small
    // `m` packets): the cache lookup and the copy inline here (15 ns of a 90 ns cached read;
    // the loop below calls a function V8 does not inline), the decode of a miss done once.
    if (length < size) {
      const pfn = Math.floor(paddr / size);
      const inPage = paddr - pfn * size;
      if (inPage + length <= size) {
        const cache = this.cache;
        let slot = cache.lookup(pfn);
        if (slot < 0) slot = this.#fill(pfn);
        if (slot >= 0) {
          const slab = cache.slab(slot);
          const from = cache.offset(slot) + inPage;
          if (length > 32) out.set(slab.subarray(from, from + length), offset);
          else for (let i = 0; i < length; i++) out[offset + i] = slab[from + i];
          this.lastStatus = PageStatus.Present;
          return length;
        }
        if (slot === ZERO_PAGE) {
          out.fill(0, offset, offset + length);
          this.lastStatus = PageStatus.Present;
          return length;
        }
        if (this.dump.readDirect === undefined) {
          this.lastStatus = this.#pageStatus;
          return 0;
        }
        // An uncompressed file holding the page only in part: read what it has, below.
      }
    }
    let done = 0;
    while (done < length) {
      const addr = paddr + done;
      const pfn = Math.floor(addr / size);
      const inPage = addr - pfn * size;
      const n = Math.min(length - done, size - inPage);
      const status = this.#readInPage(pfn, inPage, out, offset + done, n);
      if (status !== PageStatus.Present) {
        this.lastStatus = status;
        return done;
      }
      done += n;
    }
    this.lastStatus = PageStatus.Present;
    return done;
  }

  /** Why the last short {@link readInto} stopped; `Present` after a complete one. */
  lastStatus: PageStatus = PageStatus.Present;

  /** A little-endian 64-bit word, or undefined when unreadable. The page-walk hot path. */
  readU64(paddr: number): bigint | undefined {
    const size = this.pageSize;
    const pfn = Math.floor(paddr / size);
    const inPage = paddr - pfn * size;
    if (inPage + 8 <= size) {
      const slot = this.#page(pfn);
      if (slot === ZERO_PAGE) return 0n;
      if (slot >= 0) {
        const cache = this.cache;
        const slab = cache.slab(slot);
        let view = this.#slabViews.get(slab);
        if (view === undefined) {
          view = new DataView(slab.buffer, slab.byteOffset, slab.byteLength);
          this.#slabViews.set(slab, view);
        }
        return view.getBigUint64(cache.offset(slot) + inPage, true);
      }
      if (this.dump.readDirect === undefined) return undefined;
    }
    const n = this.readInto(paddr, this.#scratch8, 0, 8);
    return n === 8 ? this.#scratch8View.getBigUint64(0, true) : undefined;
  }

  /** Status of page `pfn` without copying it anywhere (for diagnostics and tests). */
  pageStatus(pfn: number): PageStatus {
    const buf = new Uint8Array(this.pageSize);
    return this.#status(this.dump.readPage(pfn, buf));
  }

  /** Text for a status, e.g. for an RSP error log. */
  describe(status: PageStatus): string {
    // Readers leave the particulars of a damaged or lost page in lastError.
    if (status === PageStatus.Corrupt && this.dump.lastError) {
      return `${pageStatusText(status)}: ${this.dump.lastError}`;
    }
    if (status === PageStatus.Lost && this.dump.lastError) {
      return `page missing: ${this.dump.lastError}`;
    }
    return pageStatusText(status);
  }

  #status(s: PageStatus): PageStatus {
    return s === PageStatus.Excluded && this.zeroExcluded ? PageStatus.Zero : s;
  }

  /**
   * Copy `n` bytes of page `pfn` from `inPage` into `out` at `at`.
   *
   * Reads of whole pages (gdb's bulk reads) bypass the cache: an uncompressed dump reads them
   * straight from the file, a compressed one decodes them straight into `out` unless the page
   * is cached already. A bulk read then neither evicts the small pages an interactive session
   * keeps coming back to (page tables, task structs) nor grows the process to the cache bound.
   * Smaller reads are served from cached pages, so struct-sized reads cost neither a system call
   * nor a decode; a page the file holds only in part (a segment ending mid-page) is read directly.
   */
  #readInPage(pfn: number, inPage: number, out: Uint8Array, at: number, n: number): PageStatus {
    const dump = this.dump;
    if (n === this.pageSize) {
      if (dump.readDirect !== undefined) {
        return this.#readDirect(pfn * this.pageSize, out.subarray(at, at + n));
      }
      const cached = this.cache.lookup(pfn);
      if (cached < 0) {
        const s = this.#status(dump.readPage(pfn, out.subarray(at, at + n)));
        if (s === PageStatus.Zero) out.fill(0, at, at + n);
        return s === PageStatus.Zero ? PageStatus.Present : s;
      }
      const from = this.cache.offset(cached);
      out.set(this.cache.slab(cached).subarray(from, from + n), at);
      return PageStatus.Present;
    }
    const slot = this.#page(pfn);
    if (slot === UNREADABLE) {
      if (dump.readDirect !== undefined) {
        return this.#readDirect(pfn * this.pageSize + inPage, out.subarray(at, at + n));
      }
      return this.#pageStatus;
    }
    if (slot === ZERO_PAGE) {
      out.fill(0, at, at + n);
      return PageStatus.Present;
    }
    const slab = this.cache.slab(slot);
    const from = this.cache.offset(slot) + inPage;
    if (n > 32) out.set(slab.subarray(from, from + n), at);
    else for (let i = 0; i < n; i++) out[at + i] = slab[from + i];
    return PageStatus.Present;
  }

  #readDirect(paddr: number, out: Uint8Array): PageStatus {
    const s = this.#status(this.dump.readDirect!(paddr, out));
    if (s === PageStatus.Zero) out.fill(0);
    return s === PageStatus.Zero ? PageStatus.Present : s;
  }

  /** Status of the last page `#page` could not return. */
  #pageStatus: PageStatus = PageStatus.Present;

  /** A DataView per cache slab, for readU64. */
  #slabViews = new Map<Uint8Array, DataView>();

  /** The cache slot of the decoded page, ZERO_PAGE for a zero page, or UNREADABLE. */
  #page(pfn: number): number {
    const hit = this.cache.lookup(pfn);
    return hit >= 0 ? hit : this.#fill(pfn);
  }

  /** {@link #page} after a cache miss: decode page `pfn` into the cache. */
  #fill(pfn: number): number {
    const cache = this.cache;
    const slot = cache.reserve();
    const at = cache.offset(slot);
    const s = this.#status(
      this.dump.readPage(pfn, cache.slab(slot).subarray(at, at + this.pageSize)),
    );
    if (s === PageStatus.Present) {
      cache.store(pfn, slot);
      return slot;
    }
    if (s === PageStatus.Zero) return ZERO_PAGE;
    this.#pageStatus = s;
    return UNREADABLE;
  }
}
