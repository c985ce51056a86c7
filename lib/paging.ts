/**
 * Virtual memory of a dump: translation through the kernel's page tables, with exact fast paths
 * and a bounded translation cache, and reads that span pages.
 *
 * Architecture modules (`paging_x86_64.ts`, `paging_aarch64.ts`) provide the page-table walk;
 * this module is what the rest of the product uses.
 *
 * @module
 */

import type { PhysicalMemory } from "./physical_memory.ts";

/** Result of one page-table walk. */
export interface WalkResult {
  /** Physical address of the translated byte, or -1 when not mapped. */
  paddr: number;
  /** Size of the mapping that holds the address (4 KiB, 2 MiB, 1 GiB, …). */
  mappingSize: number;
  /** Why the walk failed (when paddr is -1). */
  error?: string;
}

/** One leaf entry of a page table: a page, or a larger block of pages. */
export interface LeafMapping {
  /** First virtual address it maps. */
  va: bigint;
  /** Its size in bytes. */
  size: number;
  /** Physical address of its first byte. */
  paddr: number;
  /** Whether the entry allows writes (the kernel's data; its text and read-only data do not). */
  writable: boolean;
}

/** A page-table walker for one architecture and one root table. */
export interface PageTableWalker {
  /** Translate one virtual address by walking the tables. */
  walk(vaddr: bigint): WalkResult;
  /** Short description for banners, e.g. "x86_64 4-level paging, root 0x2c0a000". */
  readonly description: string;
}

/**
 * A virtual range translated by arithmetic alone (kernel image, direct map):
 * paddr = vaddr - start + physStart. The arithmetic is trusted only for 2 MiB blocks that one
 * large mapping of the page tables covers with exactly that relation (checked by one walk per
 * block, on first use): the kernel leaves holes in these ranges (non-RAM, freed init memory,
 * pages split to 4 KiB), and a translation must never succeed where the walk would fail.
 */
export interface LinearRange {
  /** What the range is, for messages: `kernel image`, `direct map`, `linear map`. */
  name: string;
  /** First virtual address of the range. */
  start: bigint;
  /** One past its last virtual address. */
  end: bigint;
  /** Physical address of `start`. */
  physStart: number;
}

/** Granularity of fast-path verification. */
const BLOCK_SHIFT = 21n;
const BLOCK_SIZE = 1 << 21;
const BLOCK_UNKNOWN = 0;
const BLOCK_LINEAR = 1;
const BLOCK_WALK = 2;

/** A failed or short virtual read. */
export interface VirtRead {
  /** Bytes read from the start address. */
  bytes: number;
  /** Why the read stopped early (undefined when complete). */
  error?: string;
}

/** Translation cache bound (entries, one per 4 KiB virtual page). */
const TLB_ENTRIES = 1 << 16;
const TWO_32 = 4294967296;

/**
 * A 64-bit address split into 32-bit halves without BigInt arithmetic: storing a bigint into a
 * BigUint64Array converts it in place, and the halves read back as plain numbers. Every BigInt
 * operation allocates; on the hot path (a cached 8-byte read) the `&`, `-` and `>>` this
 * replaces cost about a third of the read.
 */
const split64 = new BigUint64Array(1);
const split32 = new Uint32Array(split64.buffer);

/** A linear range's bounds as numbers, for translation without BigInt arithmetic. */
interface LinearBounds {
  startHi: number;
  startLo: number;
  /** Bytes in the range (exact: ranges are far below 2^53 bytes). */
  length: number;
}

/**
 * Kernel (or process) virtual memory over a dump's physical memory.
 *
 * Lookup order on the hot path: linear fast ranges, the translation cache, then the walk.
 */
export class VirtualMemory {
  /** Physical memory under the view. */
  readonly phys: PhysicalMemory;
  /** The page table walker (architecture and root table). */
  readonly walker: PageTableWalker;
  /** Ranges translated by arithmetic before any walk (see {@link LinearRange}). */
  readonly linear: LinearRange[];
  /** The last translation failure's reason. */
  lastError = "";
  /** Walks done (cache misses), for benchmarks. */
  walks = 0;
  // Direct-mapped translation cache: slot vpn & #tlbMask holds the vpn (vaddr >> 12,
  // exact in a double) and its physical page address. A hit is two typed-array reads (a Map
  // keyed by vpns above 2^31 measured twice as slow: each key is a boxed number).
  #tlbTag: Float64Array;
  #tlbPage: Float64Array;
  #tlbMask: number;
  /** A second view for addresses this one does not own (user view → kernel view). */
  #fallback?: { view: VirtualMemory; owns: (vaddr: bigint) => boolean };

  /** Per linear range, the state of each 2 MiB block (unknown, linear, or walk it). */
  #blocks: Uint8Array[];
  #bounds: LinearBounds[];

  /**
   * A view of virtual memory through `walker`'s tables over `phys`; addresses in `linear`
   * ranges are translated by arithmetic where the tables agree.
   * @param tlbEntries translation cache slots, a power of two (a live guest's view lives for one
   *   stop: a smaller cache is cheaper to set up than the dump's 64 Ki slots)
   */
  constructor(
    phys: PhysicalMemory,
    walker: PageTableWalker,
    linear: LinearRange[] = [],
    tlbEntries = TLB_ENTRIES,
  ) {
    this.phys = phys;
    this.walker = walker;
    this.linear = linear;
    this.#tlbTag = new Float64Array(tlbEntries).fill(-1);
    this.#tlbPage = new Float64Array(tlbEntries);
    this.#tlbMask = tlbEntries - 1;
    this.#blocks = linear.map((r) =>
      new Uint8Array(Number((r.end - r.start + BigInt(BLOCK_SIZE) - 1n) >> BLOCK_SHIFT))
    );
    this.#bounds = linear.map((r) => {
      split64[0] = r.start;
      return { startHi: split32[1], startLo: split32[0], length: Number(r.end - r.start) };
    });
  }

  /**
   * Send addresses for which `owns` is false to `view` (a process view sends kernel addresses
   * to the kernel's tables).
   */
  setFallback(view: VirtualMemory, owns: (vaddr: bigint) => boolean): void {
    this.#fallback = { view, owns };
  }

  /**
   * Drop every cached translation, and what is known of the linear ranges' blocks (a live guest
   * has resumed: its page tables may have changed). The caches keep their memory.
   */
  forget(): void {
    this.#tlbTag.fill(-1);
    for (const b of this.#blocks) b.fill(BLOCK_UNKNOWN);
    this.lastError = "";
  }

  /** Physical address of `vaddr`, or -1 (reason in `lastError`). */
  translate(vaddr: bigint): number {
    split64[0] = vaddr;
    return this.#translate(vaddr, split32[1], split32[0]);
  }

  /** {@link translate} of `vaddr`, given as its 32-bit halves too. */
  #translate(vaddr: bigint, hi: number, lo: number): number {
    const fb = this.#fallback;
    if (fb !== undefined && !fb.owns(vaddr)) {
      const p = fb.view.translate(vaddr);
      if (p < 0) this.lastError = fb.view.lastError;
      return p;
    }
    const bounds = this.#bounds;
    for (let i = 0; i < bounds.length; i++) {
      const b = bounds[i];
      // Exact while the high halves are close; far apart, it is far outside the range anyway.
      const off = (hi - b.startHi) * TWO_32 + (lo - b.startLo);
      if (off < 0 || off >= b.length) continue;
      const block = Math.floor(off / BLOCK_SIZE);
      const blocks = this.#blocks[i];
      if (blocks[block] === BLOCK_UNKNOWN) blocks[block] = this.#verifyBlock(this.linear[i], block);
      if (blocks[block] === BLOCK_LINEAR) return off + this.linear[i].physStart;
      break;
    }
    // vpn = vaddr >> 12, exact in a double (< 2^52); its low bits pick the slot.
    const vpn = hi * 1048576 + (lo >>> 12);
    const offset = lo & 0xfff;
    const slot = vpn & this.#tlbMask;
    if (this.#tlbTag[slot] === vpn) return this.#tlbPage[slot] + offset;
    return this.#walk(vaddr, vpn, offset);
  }

  /** Translate by walking the page tables only (no fast path, no cache): for tests. */
  translateByWalk(vaddr: bigint): number {
    const r = this.walker.walk(vaddr);
    if (r.paddr < 0) this.lastError = r.error ?? "not mapped";
    return r.paddr;
  }

  /**
   * Read `out.length` bytes at `vaddr`, across pages and mappings. Returns the readable prefix
   * length and, if short, why it stopped.
   */
  read(vaddr: bigint, out: Uint8Array): VirtRead {
    const length = out.length;
    const phys = this.phys;
    // Hot path: the whole read within one page (struct fields, page-table entries, gdb's small
    // reads), with no BigInt arithmetic beyond the translation and nothing allocated but the
    // result.
    split64[0] = vaddr;
    let inPage = split32[0] & 0xfff;
    if (inPage + length <= 4096) {
      const pa = this.#translate(vaddr, split32[1], split32[0]);
      if (pa >= 0 && phys.readInto(pa, out, 0, length) === length) return { bytes: length };
    }
    let done = 0;
    let va = vaddr;
    while (done < length) {
      const n = Math.min(length - done, 4096 - inPage);
      const pa = this.translate(va);
      if (pa < 0) {
        return { bytes: done, error: `0x${va.toString(16)}: ${this.lastError}` };
      }
      const got = phys.readInto(pa, out, done, n);
      done += got;
      if (got !== n) {
        return {
          bytes: done,
          error: `0x${(vaddr + BigInt(done)).toString(16)} (physical 0x${
            (pa + got).toString(16)
          }): ${phys.describe(phys.lastStatus)}`,
        };
      }
      va += BigInt(n);
      inPage = 0;
    }
    return { bytes: done };
  }

  /** A little-endian u64 at `vaddr`, or undefined. */
  readU64(vaddr: bigint): bigint | undefined {
    if (this.read(vaddr, this.#scratch8).bytes !== 8) return undefined;
    return this.#scratch8View.getBigUint64(0, true);
  }

  #scratch8 = new Uint8Array(8);
  #scratch8View = new DataView(this.#scratch8.buffer);

  /** A NUL-terminated string at `vaddr` (at most `max` bytes). */
  readCString(vaddr: bigint, max = 256): string | undefined {
    const buf = new Uint8Array(max);
    const r = this.read(vaddr, buf);
    if (r.bytes === 0) return undefined;
    let end = buf.indexOf(0);
    if (end < 0 || end > r.bytes) end = r.bytes;
    return new TextDecoder().decode(buf.subarray(0, end));
  }

  /** Whether one large mapping covers this 2 MiB block of `r` with the linear relation. */
  #verifyBlock(r: LinearRange, block: number): number {
    const off = block * BLOCK_SIZE;
    const w = this.walker.walk(r.start + BigInt(off));
    return w.paddr === r.physStart + off && w.mappingSize >= BLOCK_SIZE ? BLOCK_LINEAR : BLOCK_WALK;
  }

  #walk(vaddr: bigint, vpn: number, offset: number): number {
    this.walks++;
    const r = this.walker.walk(vaddr);
    if (r.paddr < 0) {
      this.lastError = r.error ?? "not mapped";
      return -1;
    }
    const slot = vpn & this.#tlbMask;
    this.#tlbTag[slot] = vpn;
    this.#tlbPage[slot] = r.paddr - offset;
    return r.paddr;
  }
}
