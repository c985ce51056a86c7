/**
 * x86_64 page tables: 4- and 5-level paging, 1 GiB and 2 MiB pages, the AMD SME bit, and the
 * kernel's layout facts (kernel image map, KASLR'd direct map) read from VMCOREINFO.
 *
 * @module
 */

import type { PhysicalMemory } from "./physical_memory.ts";
import type { LeafMapping, LinearRange, PageTableWalker, WalkResult } from "./paging.ts";
import type { VmcoreInfo } from "./vmcoreinfo.ts";

/** Base of the kernel image mapping (`__START_KERNEL_map`). */
export const START_KERNEL_MAP = 0xffffffff80000000n;
const PRESENT = 1n;
const WRITABLE = 2n;
const PAGE_SIZE_BIT = 0x80n;
/** Physical address bits 51:12 of an entry. */
const ADDR_MASK = 0x000ffffffffff000n;

/** Page-table facts from VMCOREINFO. */
export interface X86PagingInfo {
  /** Physical address of the top-level table. */
  root: number;
  /** 4 or 5. */
  levels: 4 | 5;
  /** AMD SME encryption bit(s) to strip from entries. */
  smeMask: bigint;
  /** phys_base: where the kernel image was loaded minus its link address. */
  physBase: bigint;
}

/** Read x86_64 paging facts from VMCOREINFO; undefined when the keys are missing. */
export function x86PagingInfo(vmci: VmcoreInfo): X86PagingInfo | undefined {
  const top = vmci.symbol("init_top_pgt") ?? vmci.symbol("init_level4_pgt");
  const physBase = vmci.number("phys_base");
  if (top === undefined || physBase === undefined) return undefined;
  return {
    root: Number(top - START_KERNEL_MAP + physBase),
    levels: vmci.number("pgtable_l5_enabled") === 1n ? 5 : 4,
    smeMask: vmci.number("sme_mask") ?? 0n,
    physBase,
  };
}

/** Walks x86_64 page tables from a root (the kernel's, or a process's pgd). */
export class X86_64Walker implements PageTableWalker {
  readonly description: string;
  #phys: PhysicalMemory;
  #root: number;
  #levels: number;
  #addrMask: bigint;

  /**
   * A walker of one set of tables.
   * @param phys physical memory holding the tables
   * @param root physical address of the top table (CR3 without its flag bits)
   * @param levels 4, or 5 with LA57
   * @param smeMask AMD SME's encryption bit, cleared from every entry's address
   */
  constructor(phys: PhysicalMemory, root: number, levels: 4 | 5, smeMask = 0n) {
    this.#phys = phys;
    this.#root = root;
    this.#levels = levels;
    this.#addrMask = ADDR_MASK & ~smeMask;
    this.description =
      `x86_64 ${levels}-level paging, root table at physical 0x${root.toString(16)}` +
      (smeMask ? `, SME mask 0x${smeMask.toString(16)}` : "");
  }

  /**
   * The lowest mapped virtual address at or above `start` (page-aligned), by descending the
   * tables and skipping empty entries; undefined when nothing above is mapped.
   */
  firstMappedFrom(start: bigint): bigint | undefined {
    for (const m of this.mappingsFrom(start)) {
      return m.va < start ? start & ~0xfffn : m.va;
    }
    return undefined;
  }

  /**
   * The leaf mappings that hold addresses at or above `start`, in address order, by descending
   * the tables and skipping empty entries (the first may begin below `start`, when a large page
   * holds it). Lazy: a caller that stops early reads no more tables.
   */
  *mappingsFrom(start: bigint): Generator<LeafMapping> {
    const vaBits = this.#levels === 5 ? 57n : 48n;
    const signExtend = (v: bigint) =>
      (v & (1n << (vaBits - 1n))) !== 0n ? v | ~((1n << vaBits) - 1n) & 0xffffffffffffffffn : v;
    const phys = this.#phys;
    const addrMask = this.#addrMask;
    function* visit(
      table: number,
      level: number,
      base: bigint,
      from: bigint,
    ): Generator<LeafMapping> {
      const shift = 12n + 9n * BigInt(level - 1);
      const first = base === (from & ~((1n << (shift + 9n)) - 1n))
        ? Number((from >> shift) & 0x1ffn)
        : 0;
      for (let index = first; index < 512; index++) {
        const entry = phys.readU64(table + index * 8);
        if (entry === undefined || (entry & PRESENT) === 0n) continue;
        const va = base + (BigInt(index) << shift);
        const leaf = level === 1 ||
          ((level === 2 || level === 3) && (entry & PAGE_SIZE_BIT) !== 0n);
        if (leaf) {
          const size = 1n << shift;
          yield {
            va: signExtend(va),
            size: Number(size),
            paddr: Number(entry & addrMask & ~(size - 1n)),
            writable: (entry & WRITABLE) !== 0n,
          };
        } else yield* visit(Number(entry & addrMask), level - 1, va, from);
      }
    }
    // Work on the address without its sign extension; put it back on each result.
    yield* visit(this.#root, this.#levels, 0n, start & ((1n << vaBits) - 1n));
  }

  walk(vaddr: bigint): WalkResult {
    // Canonical check: bits above the top level's index must copy the sign bit.
    const vaBits = this.#levels === 5 ? 57n : 48n;
    const high = vaddr >> (vaBits - 1n);
    const ones = (1n << (65n - vaBits)) - 1n;
    if (high !== 0n && high !== ones) {
      return { paddr: -1, mappingSize: 0, error: "non-canonical address" };
    }
    let table = this.#root;
    for (let level = this.#levels; level >= 1; level--) {
      const shift = 12n + 9n * BigInt(level - 1);
      const index = Number((vaddr >> shift) & 0x1ffn);
      const entry = this.#phys.readU64(table + index * 8);
      if (entry === undefined) {
        return {
          paddr: -1,
          mappingSize: 0,
          error: `level-${level} page table at physical 0x${table.toString(16)}: ${
            this.#phys.describe(this.#phys.pageStatus(Math.floor(table / this.#phys.pageSize)))
          }`,
        };
      }
      if ((entry & PRESENT) === 0n) {
        return { paddr: -1, mappingSize: 0, error: "not mapped (page not present)" };
      }
      const next = entry & this.#addrMask;
      if (level === 1 || ((level === 2 || level === 3) && (entry & PAGE_SIZE_BIT) !== 0n)) {
        const size = 1n << shift;
        const base = next & ~(size - 1n);
        return { paddr: Number(base + (vaddr & (size - 1n))), mappingSize: Number(size) };
      }
      table = Number(next);
    }
    return { paddr: -1, mappingSize: 0, error: "not mapped" };
  }
}

/** Lowest possible direct-map start (KASLR randomizes upwards from here), 4- and 5-level. */
const PAGE_OFFSET_BASE_L4 = 0xffff888000000000n;
const PAGE_OFFSET_BASE_L5 = 0xff11000000000000n;

/**
 * Find the direct map's base (`page_offset_base`, randomized per boot) from the page tables
 * alone: KASLR puts the direct map first in its region, and it starts by mapping physical
 * address 0. So the first mapped address at or above the region's lowest start is the base,
 * provided it translates to physical 0.
 */
export function findDirectMapBase(walker: X86_64Walker, levels: 4 | 5): bigint | undefined {
  const start = levels === 5 ? PAGE_OFFSET_BASE_L5 : PAGE_OFFSET_BASE_L4;
  const first = walker.firstMappedFrom(start);
  if (first === undefined) return undefined;
  return walker.walk(first).paddr === 0 ? first : undefined;
}

/** Exact linear ranges for x86_64: the direct map, and the kernel image when its extent is known. */
export function x86LinearRanges(
  directMapBase: bigint | undefined,
  physTop: number,
  image?: { start: bigint; end: bigint; physBase: bigint },
): LinearRange[] {
  const out: LinearRange[] = [];
  if (image) {
    out.push({
      name: "kernel image",
      start: image.start,
      end: image.end,
      physStart: Number(image.start - START_KERNEL_MAP + image.physBase),
    });
  }
  if (directMapBase !== undefined) {
    out.push({
      name: "direct map",
      start: directMapBase,
      end: directMapBase + BigInt(physTop),
      physStart: 0,
    });
  }
  return out;
}
