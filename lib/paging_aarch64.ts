/**
 * aarch64 stage-1 translation for the kernel (TTBR1) and processes (TTBR0): 4, 16 and 64 KiB
 * granules, 39- to 52-bit virtual addresses, block mappings, and the 52-bit output addresses
 * of 64 KiB pages (LPA).
 *
 * @module
 */

import type { PhysicalMemory } from "./physical_memory.ts";
import type { LeafMapping, LinearRange, PageTableWalker, WalkResult } from "./paging.ts";
import type { VmcoreInfo } from "./vmcoreinfo.ts";

/** AP[2] of a stage-1 page or block descriptor: set, the mapping is read-only at every level. */
const AP_READ_ONLY = 0x80n;

/** Page-table facts from VMCOREINFO. */
export interface Arm64PagingInfo {
  /** Physical address of swapper_pg_dir. */
  root: number;
  /** Virtual address bits in use for the kernel half (64 - T1SZ, else VA_BITS). */
  vaBits: number;
  /** Translation granule: 4096, 16384 or 65536. */
  granule: number;
  /** kimage_voffset: kernel image virtual minus physical. */
  kimageVoffset: bigint;
  /**
   * PHYS_OFFSET (memstart_addr): the physical address the linear map's start stands for.
   * Negative when KASLR moved the linear map (it is printed as a 64-bit hex value).
   */
  physOffset: bigint;
  /** VA_BITS the kernel was built with (sizes the linear map). */
  configVaBits: number;
}

/** Read arm64 paging facts from VMCOREINFO; undefined when keys are missing. */
export function arm64PagingInfo(vmci: VmcoreInfo): Arm64PagingInfo | undefined {
  const pgd = vmci.symbol("swapper_pg_dir");
  const voff = vmci.number("kimage_voffset");
  const vaBitsCfg = vmci.number("VA_BITS");
  if (pgd === undefined || voff === undefined || vaBitsCfg === undefined) return undefined;
  const t1sz = vmci.number("TCR_EL1_T1SZ");
  return {
    root: Number(pgd - voff),
    vaBits: t1sz !== undefined && t1sz > 0n ? 64 - Number(t1sz) : Number(vaBitsCfg),
    granule: vmci.pageSize ?? 4096,
    kimageVoffset: voff,
    physOffset: BigInt.asIntN(64, vmci.number("PHYS_OFFSET") ?? 0n),
    configVaBits: Number(vaBitsCfg),
  };
}

/** Walks arm64 translation tables from one root. */
export class Arm64Walker implements PageTableWalker {
  readonly description: string;
  #phys: PhysicalMemory;
  #root: number;
  #vaBits: number;
  #pageShift: number;
  #bitsPerLevel: number;
  #levels: number;
  #outMask: bigint;
  #lpa: boolean;
  #kernelHalf: boolean;

  /**
   * A walker of one translation table.
   * @param phys physical memory holding the tables
   * @param root physical address of the top table
   * @param vaBits virtual address bits this table translates (64 - TCR_EL1.TxSZ)
   * @param granule translation granule in bytes (4, 16 or 64 KiB)
   * @param kernelHalf true for TTBR1 (addresses with the top bits set), false for TTBR0.
   */
  constructor(
    phys: PhysicalMemory,
    root: number,
    vaBits: number,
    granule: number,
    kernelHalf = true,
  ) {
    this.#phys = phys;
    this.#root = root;
    this.#vaBits = vaBits;
    this.#pageShift = Math.log2(granule);
    this.#bitsPerLevel = this.#pageShift - 3;
    this.#levels = Math.ceil((vaBits - this.#pageShift) / this.#bitsPerLevel);
    this.#kernelHalf = kernelHalf;
    // 64 KiB granule with 52-bit addresses keeps PA[51:48] in descriptor bits 15:12.
    this.#lpa = granule === 65536 && vaBits > 48;
    this.#outMask = ((1n << 48n) - 1n) & ~(BigInt(granule) - 1n);
    this.description = `aarch64 ${granule / 1024} KiB granule, ${vaBits}-bit VA, ` +
      `${this.#levels} levels, root at physical 0x${root.toString(16)}`;
  }

  /** Virtual address bits this table translates. */
  get vaBits(): number {
    return this.#vaBits;
  }

  walk(vaddr: bigint): WalkResult {
    const vaBits = BigInt(this.#vaBits);
    const top = vaddr >> vaBits;
    const expect = this.#kernelHalf ? (1n << (64n - vaBits)) - 1n : 0n;
    if (top !== expect) {
      return { paddr: -1, mappingSize: 0, error: "address outside this translation range" };
    }
    const pageShift = BigInt(this.#pageShift);
    const bpl = BigInt(this.#bitsPerLevel);
    let table = this.#root;
    for (let i = 0; i < this.#levels; i++) {
      const remaining = this.#levels - 1 - i; // levels below this one
      const shift = pageShift + bpl * BigInt(remaining);
      // The top level may index fewer bits than a full level.
      const bits = i === 0 ? vaBits - shift : bpl;
      const index = Number((vaddr >> shift) & ((1n << bits) - 1n));
      const desc = this.#phys.readU64(table + index * 8);
      if (desc === undefined) {
        return {
          paddr: -1,
          mappingSize: 0,
          error: `translation table at physical 0x${table.toString(16)}: ${
            this.#phys.describe(this.#phys.pageStatus(Math.floor(table / this.#phys.pageSize)))
          }`,
        };
      }
      if ((desc & 1n) === 0n) return { paddr: -1, mappingSize: 0, error: "not mapped" };
      const isTable = (desc & 2n) !== 0n;
      const out = this.#outputAddress(desc);
      if (remaining === 0) {
        if (!isTable) return { paddr: -1, mappingSize: 0, error: "invalid page descriptor" };
        const size = 1n << pageShift;
        return { paddr: Number(out + (vaddr & (size - 1n))), mappingSize: Number(size) };
      }
      if (!isTable) {
        // A block mapping covers everything below this level.
        const size = 1n << shift;
        return {
          paddr: Number((out & ~(size - 1n)) + (vaddr & (size - 1n))),
          mappingSize: Number(size),
        };
      }
      table = Number(out);
    }
    return { paddr: -1, mappingSize: 0, error: "not mapped" };
  }

  /**
   * The leaf mappings (pages and blocks) that hold addresses at or above `start`, in address
   * order, by descending the tables and skipping invalid entries (the first may begin below
   * `start`, when a block holds it). Writable: AP[2] clear. Lazy: a caller that stops early
   * reads no more tables.
   */
  *mappingsFrom(start: bigint): Generator<LeafMapping> {
    const vaBits = BigInt(this.#vaBits);
    // Addresses of this range are offsets from its lowest address (the kernel half's top bits).
    const rangeBase = this.#kernelHalf ? (1n << 64n) - (1n << vaBits) : 0n;
    const from = start < rangeBase ? 0n : start - rangeBase;
    if (from >= 1n << vaBits) return;
    const phys = this.#phys;
    const levels = this.#levels;
    const pageShift = BigInt(this.#pageShift);
    const bpl = BigInt(this.#bitsPerLevel);
    const output = (desc: bigint) => this.#outputAddress(desc);
    function* visit(table: number, level: number, base: bigint): Generator<LeafMapping> {
      const remaining = levels - 1 - level;
      const shift = pageShift + bpl * BigInt(remaining);
      const bits = level === 0 ? vaBits - shift : bpl;
      const first = base === (from & ~((1n << (shift + bits)) - 1n))
        ? Number((from >> shift) & ((1n << bits) - 1n))
        : 0;
      const entries = 1 << Number(bits);
      for (let index = first; index < entries; index++) {
        const desc = phys.readU64(table + index * 8);
        if (desc === undefined || (desc & 1n) === 0n) continue;
        const va = base + (BigInt(index) << shift);
        const isTable = (desc & 2n) !== 0n;
        if (remaining > 0 && isTable) {
          yield* visit(Number(output(desc)), level + 1, va);
        } else if (remaining > 0 || isTable) {
          const size = 1n << shift;
          yield {
            va: rangeBase + va,
            size: Number(size),
            paddr: Number(output(desc) & ~(size - 1n)),
            writable: (desc & AP_READ_ONLY) === 0n,
          };
        }
      }
    }
    yield* visit(this.#root, 0, 0n);
  }

  #outputAddress(desc: bigint): bigint {
    let addr = desc & this.#outMask;
    if (this.#lpa) addr |= ((desc >> 12n) & 0xfn) << 48n;
    return addr;
  }
}

/**
 * The linear map: since Linux 5.4 it is the lower half of the kernel's VA space,
 * paddr = vaddr - PAGE_OFFSET + PHYS_OFFSET, with PAGE_OFFSET = -(1 << VA_BITS).
 */
export function arm64LinearRanges(
  info: Arm64PagingInfo,
  physTop: number,
  image?: { start: bigint; end: bigint },
): LinearRange[] {
  const out: LinearRange[] = [];
  if (image) {
    out.push({
      name: "kernel image",
      start: image.start,
      end: image.end,
      physStart: Number(image.start - info.kimageVoffset),
    });
  }
  const pageOffset = (1n << 64n) - (1n << BigInt(info.configVaBits));
  // __phys_to_virt(p) = (p - PHYS_OFFSET) | PAGE_OFFSET
  const physStart = info.physOffset > 0n ? Number(info.physOffset) : 0;
  if (physTop > physStart) {
    const start = pageOffset + BigInt(physStart) - info.physOffset;
    out.push({
      name: "linear map",
      start,
      end: start + BigInt(physTop - physStart),
      physStart,
    });
  }
  return out;
}
