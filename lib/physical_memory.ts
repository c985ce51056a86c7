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
  bytes: number;
  /** Status of the page that stopped the read (Present when the read is complete). */
  status: PageStatus;
  /** Physical address of the first byte not read. */
  stoppedAt: number;
}

/** Default page cache size. */
export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;

/** Reads physical memory from a dump. */
export class PhysicalMemory {
  readonly dump: DumpReader;
  readonly pageSize: number;
  readonly cache: PageCache;
  readonly zeroExcluded: boolean;
  #pageShift: number;
  #scratch8 = new Uint8Array(8);
  #scratch8View = new DataView(this.#scratch8.buffer);

  constructor(dump: DumpReader, options: PhysicalMemoryOptions = {}) {
    this.dump = dump;
    this.pageSize = dump.pageSize;
    this.#pageShift = Math.log2(dump.pageSize);
    this.cache = new PageCache(dump.pageSize, options.cacheBytes ?? DEFAULT_CACHE_BYTES);
    this.zeroExcluded = options.zeroExcluded ?? false;
  }

  /**
   * Read `out.length` bytes at `paddr`, page by page, stopping at the first page that cannot be
   * read. Returns the count read and the reason it stopped.
   */
  read(paddr: number, out: Uint8Array): PhysRead {
    let done = 0;
    const size = this.pageSize;
    while (done < out.length) {
      const addr = paddr + done;
      const pfn = Math.floor(addr / size);
      const inPage = addr - pfn * size;
      const n = Math.min(out.length - done, size - inPage);
      const status = this.#readInPage(pfn, inPage, out.subarray(done, done + n));
      if (status !== PageStatus.Present) return { bytes: done, status, stoppedAt: addr };
      done += n;
    }
    return { bytes: done, status: PageStatus.Present, stoppedAt: paddr + done };
  }

  /** A little-endian 64-bit word, or undefined when unreadable. The page-walk hot path. */
  readU64(paddr: number): bigint | undefined {
    const size = this.pageSize;
    const pfn = Math.floor(paddr / size);
    const inPage = paddr - pfn * size;
    if (inPage + 8 <= size && this.dump.compressed) {
      const page = this.#page(pfn);
      if (page === undefined) return undefined;
      if (page === null) return 0n;
      return new DataView(page.buffer, page.byteOffset + inPage, 8).getBigUint64(0, true);
    }
    const r = this.read(paddr, this.#scratch8);
    return r.bytes === 8 ? this.#scratch8View.getBigUint64(0, true) : undefined;
  }

  /** Status of page `pfn` without copying it anywhere (for diagnostics and tests). */
  pageStatus(pfn: number): PageStatus {
    const buf = new Uint8Array(this.pageSize);
    return this.#status(this.dump.readPage(pfn, buf));
  }

  /** Text for a status, e.g. for an RSP error log. */
  describe(status: PageStatus): string {
    if (status === PageStatus.Corrupt && this.dump.lastError) {
      return `${pageStatusText(status)}: ${this.dump.lastError}`;
    }
    return pageStatusText(status);
  }

  #status(s: PageStatus): PageStatus {
    return s === PageStatus.Excluded && this.zeroExcluded ? PageStatus.Zero : s;
  }

  #readInPage(pfn: number, inPage: number, out: Uint8Array): PageStatus {
    const dump = this.dump;
    if (dump.readDirect !== undefined) {
      const s = this.#status(dump.readDirect(pfn * this.pageSize + inPage, out));
      if (s === PageStatus.Zero) out.fill(0);
      return s === PageStatus.Zero ? PageStatus.Present : s;
    }
    const page = this.#page(pfn);
    if (page === undefined) return this.#lastStatus;
    if (page === null) out.fill(0);
    else out.set(page.subarray(inPage, inPage + out.length));
    return PageStatus.Present;
  }

  #lastStatus: PageStatus = PageStatus.Present;

  /** The decoded page (cached), null for a zero page, undefined when unreadable. */
  #page(pfn: number): Uint8Array | null | undefined {
    const hit = this.cache.get(pfn);
    if (hit !== undefined) return hit;
    const buf = this.cache.slot();
    const s = this.#status(this.dump.readPage(pfn, buf));
    if (s === PageStatus.Present) {
      this.cache.commit(pfn, buf);
      return buf;
    }
    if (s === PageStatus.Zero) return null;
    this.#lastStatus = s;
    return undefined;
  }
}
