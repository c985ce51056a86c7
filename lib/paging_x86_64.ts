/**
 * x86_64 page tables: 4- and 5-level paging, 1 GiB and 2 MiB pages, the AMD SME bit, and the
 * kernel's layout facts (kernel image map, KASLR'd direct map) read from VMCOREINFO.
 *
 * @module
 */

import type { PhysicalMemory } from "./physical_memory.ts";
import type { LinearRange, PageTableWalker, WalkResult } from "./paging.ts";
import type { VmcoreInfo } from "./vmcoreinfo.ts";

/** Base of the kernel image mapping (`__START_KERNEL_map`). */
export const START_KERNEL_MAP = 0xffffffff80000000n;
const PRESENT = 1n;
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

  constructor(phys: PhysicalMemory, root: number, levels: 4 | 5, smeMask = 0n) {
    this.#phys = phys;
    this.#root = root;
    this.#levels = levels;
    this.#addrMask = ADDR_MASK & ~smeMask;
    this.description =
      `x86_64 ${levels}-level paging, root table at physical 0x${root.toString(16)}` +
      (smeMask ? `, SME mask 0x${smeMask.toString(16)}` : "");
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
          error: `level-${level} page table at physical 0x${table.toString(16)} is not in the dump`,
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

/** Direct-map start candidates: where KASLR's randomized region begins, 4- and 5-level. */
const PAGE_OFFSET_BASE_L4 = 0xffff888000000000n;
const PAGE_OFFSET_BASE_L5 = 0xff11000000000000n;
const GIB = 1n << 30n;

/**
 * Find the direct map's base (`page_offset_base`, randomized per boot) from the page tables:
 * the first 1 GiB-aligned address at or above the region's lowest possible start that maps
 * physical address 0. KASLR places the direct map first, on a 1 GiB boundary.
 */
export function findDirectMapBase(walker: X86_64Walker, levels: 4 | 5): bigint | undefined {
  const start = levels === 5 ? PAGE_OFFSET_BASE_L5 : PAGE_OFFSET_BASE_L4;
  const topShift = levels === 5 ? 48n : 39n;
  const topSize = 1n << topShift;
  // Scan top-level slots, then 1 GiB steps within present slots; bounded to 64 slots.
  for (let slot = 0n; slot < 64n; slot++) {
    const slotBase = start + slot * topSize;
    const probe = walker.walk(slotBase);
    if (probe.paddr < 0 && probe.error?.startsWith("non-canonical")) return undefined;
    for (let va = slotBase; va < slotBase + topSize && va - slotBase < 512n * GIB; va += GIB) {
      const r = walker.walk(va);
      if (r.paddr === 0) return va;
      if (r.paddr > 0) break; // this slot maps something else first: not the direct map start
    }
  }
  return undefined;
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
