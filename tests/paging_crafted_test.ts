// Page-table cases no fixture covers, on crafted physical memory: the AMD SME bit, 1 GiB/2 MiB
// pages, 5-level paging; arm64 16/64 KiB granules, 52-bit output addresses, block mappings.
import assert from "node:assert/strict";
import { MemorySource } from "../lib/file_source.ts";
import { openSource } from "../lib/open_dump.ts";
import { PhysicalMemory } from "../lib/physical_memory.ts";
import { X86_64Walker } from "../lib/paging_x86_64.ts";
import { Arm64Walker } from "../lib/paging_aarch64.ts";
import { VirtualMemory } from "../lib/paging.ts";
import { craftElf } from "./crafted.ts";

/** Sparse physical memory: pages written by address, served as a crafted ELF dump. */
class PhysImage {
  pages = new Map<number, Uint8Array>();
  constructor(readonly pageSize = 4096) {}
  page(addr: number): Uint8Array {
    const base = addr - (addr % this.pageSize);
    let p = this.pages.get(base);
    if (!p) this.pages.set(base, p = new Uint8Array(this.pageSize));
    return p;
  }
  u64(addr: number, v: bigint) {
    const p = this.page(addr);
    new DataView(p.buffer).setBigUint64(addr % this.pageSize, v, true);
  }
  memory(): PhysicalMemory {
    const segs = [...this.pages.entries()].map(([paddr, data]) => ({ paddr, data }));
    const vmci = `PAGESIZE=${this.pageSize}\n`;
    const elf = craftElf(segs, [{
      name: "VMCOREINFO",
      type: 0,
      desc: new TextEncoder().encode(vmci),
    }]);
    return new PhysicalMemory(openSource(new MemorySource("crafted-tables.elf", elf)));
  }
}

Deno.test("x86_64 crafted: SME bit stripped, 4 KiB / 2 MiB / 1 GiB pages, not-present", () => {
  const SME = 1n << 47n;
  const img = new PhysImage();
  const root = 0x1000;
  const va = 0xffff888000000000n;
  const idx = (v: bigint, level: number) => Number((v >> BigInt(12 + 9 * (level - 1))) & 0x1ffn);
  // PML4 → PDPT at 0x2000 → PD at 0x3000 → PT at 0x4000 → page 0x5000.
  img.u64(root + idx(va, 4) * 8, 0x2000n | SME | 3n);
  img.u64(0x2000 + idx(va, 3) * 8, 0x3000n | SME | 3n);
  img.u64(0x3000 + idx(va, 2) * 8, 0x4000n | SME | 3n);
  img.u64(0x4000 + idx(va, 1) * 8, 0x5000n | SME | 3n);
  // 2 MiB page for the next 2 MiB slot, 1 GiB page for the next 1 GiB slot.
  const va2m = va + (2n << 20n);
  img.u64(0x3000 + idx(va2m, 2) * 8, 0x40000000n | SME | 0x83n);
  // A read-only 2 MiB page (present and large, without the write bit) two slots on.
  const vaReadOnly = va + (4n << 20n);
  img.u64(0x3000 + idx(vaReadOnly, 2) * 8, 0x60000000n | SME | 0x81n);
  const va1g = va + (1n << 30n);
  img.u64(0x2000 + idx(va1g, 3) * 8, 0x80000000n | SME | 0x83n);
  img.page(0x5000).set([1, 2, 3, 4]);
  const phys = img.memory();
  const w = new X86_64Walker(phys, root, 4, SME);
  assert.equal(w.walk(va + 0x10n).paddr, 0x5010);
  assert.equal(w.walk(va2m + 0x12345n).paddr, 0x40012345);
  assert.equal(w.walk(va2m + 0x12345n).mappingSize, 2 << 20);
  assert.equal(w.walk(va1g + 0x1234567n).paddr, 0x81234567);
  assert.equal(w.walk(va1g).mappingSize, 1 << 30);
  assert.equal(w.walk(va + 0x1000n).paddr, -1, "next 4 KiB page not present");
  assert.match(w.walk(0x0000900000000000n).error!, /non-canonical/);
  // Without stripping the SME bit the walk would leave physical memory.
  const naive = new X86_64Walker(phys, root, 4, 0n);
  assert.notEqual(naive.walk(va).paddr, 0x5000);
  const vm = new VirtualMemory(phys, w);
  const out = new Uint8Array(4);
  assert.equal(vm.read(va, out).bytes, 4);
  assert.deepEqual([...out], [1, 2, 3, 4]);
  assert.equal(w.firstMappedFrom(0xffff800000000000n), va);
  // Every leaf, in order, with its size and whether it may be written; from inside a large
  // page, that page first.
  assert.deepEqual([...w.mappingsFrom(0xffff800000000000n)], [
    { va, size: 4096, paddr: 0x5000, writable: true },
    { va: va2m, size: 2 << 20, paddr: 0x40000000, writable: true },
    { va: vaReadOnly, size: 2 << 20, paddr: 0x60000000, writable: false },
    { va: va1g, size: 1 << 30, paddr: 0x80000000, writable: true },
  ]);
  assert.deepEqual([...w.mappingsFrom(va2m + 0x1234n)].map((m) => m.va), [va2m, vaReadOnly, va1g]);
  assert.equal(w.firstMappedFrom(va2m + 0x1234n), va2m + 0x1000n);
  assert.equal(w.firstMappedFrom(va1g + (1n << 30n)), undefined);
});

Deno.test("x86_64 crafted: 5-level paging uses bits 56:48", () => {
  const img = new PhysImage();
  const va = 0xff11000000000000n + (5n << 39n) + 0x7000n;
  const idx = (v: bigint, level: number) => Number((v >> BigInt(12 + 9 * (level - 1))) & 0x1ffn);
  let table = 0x1000;
  for (let level = 5; level > 1; level--) {
    const next = table + 0x1000;
    img.u64(table + idx(va, level) * 8, BigInt(next) | 3n);
    table = next;
  }
  img.u64(table + idx(va, 1) * 8, 0x9000n | 3n);
  const w = new X86_64Walker(img.memory(), 0x1000, 5);
  assert.equal(w.walk(va + 0x42n).paddr, 0x9042);
  assert.equal(new X86_64Walker(img.memory(), 0x1000, 4).walk(va).paddr, -1);
});

/** Build arm64 tables for one VA: returns the walker's root. */
function armTables(
  img: PhysImage,
  va: bigint,
  vaBits: number,
  granule: number,
  leafLevelsUp: number,
  out: bigint,
) {
  const shift = Math.log2(granule);
  const bpl = shift - 3;
  const levels = Math.ceil((vaBits - shift) / bpl);
  let table = granule; // root at one granule
  for (let i = 0; i < levels; i++) {
    const remaining = levels - 1 - i;
    const s = BigInt(shift + bpl * remaining);
    const bits = i === 0 ? BigInt(vaBits) - s : BigInt(bpl);
    const index = Number((va >> s) & ((1n << bits) - 1n));
    if (remaining === leafLevelsUp) {
      // Leaf: page (0b11) at the last level, block (0b01) above it.
      img.u64(table + index * 8, out | (remaining === 0 ? 3n : 1n) | (1n << 10n));
      return;
    }
    const next = table + granule;
    img.u64(table + index * 8, BigInt(next) | 3n);
    table = next;
  }
}

Deno.test("arm64 crafted: 4 KiB/39-bit, 16 KiB/47-bit, 64 KiB/42-bit, block mappings", () => {
  for (const [granule, vaBits] of [[4096, 39], [4096, 48], [16384, 47], [65536, 42], [65536, 48]]) {
    const img = new PhysImage(granule);
    const va = ((1n << 64n) - (1n << BigInt(vaBits))) + (3n << BigInt(vaBits - 4)) +
      0x123n * BigInt(granule);
    armTables(img, va, vaBits, granule, 0, 0x40000000n);
    const w = new Arm64Walker(img.memory(), granule, vaBits, granule);
    assert.equal(w.walk(va + 0x10n).paddr, 0x40000010, `${granule}/${vaBits}`);
    // A user (TTBR0) address is outside a kernel walker's range.
    assert.equal(w.walk(0x400000n).paddr, -1);
    // The one page, listed from anywhere below it (a user address: from the range's start).
    const page = { va: va & ~BigInt(granule - 1), size: granule, paddr: 0x40000000 };
    for (const from of [0n, (1n << 64n) - (1n << BigInt(vaBits)), page.va + 8n]) {
      assert.deepEqual([...w.mappingsFrom(from)], [{ ...page, writable: true }]);
    }
    assert.deepEqual([...w.mappingsFrom(page.va + BigInt(granule))], []);
  }
  // A level-2 block (2 MiB with 4 KiB pages).
  const img = new PhysImage();
  const va = 0xffff000000000000n + (7n << 21n) + 0x1234n;
  armTables(img, va & ~0x1fffffn, 48, 4096, 1, 0x80000000n);
  const w = new Arm64Walker(img.memory(), 4096, 48, 4096);
  assert.equal(w.walk(va).paddr, 0x80001234);
  assert.equal(w.walk(va).mappingSize, 2 << 20);
  // Listed with its size; a read-only block (AP[2]) 2 MiB on, in the same table.
  img.u64(4096 * 3 + 8 * 8, 0xc0000000n | 1n | (1n << 10n) | 0x80n);
  const again = new Arm64Walker(img.memory(), 4096, 48, 4096);
  assert.deepEqual([...again.mappingsFrom(va)], [
    { va: va & ~0x1fffffn, size: 2 << 20, paddr: 0x80000000, writable: true },
    { va: (va & ~0x1fffffn) + (2n << 20n), size: 2 << 20, paddr: 0xc0000000, writable: false },
  ]);
});

Deno.test("arm64 crafted: 64 KiB granule with 52-bit VA keeps PA[51:48] in bits 15:12", () => {
  const img = new PhysImage(65536);
  const va = ((1n << 64n) - (1n << 52n)) + 0x10000n * 5n;
  const pa = (0x3n << 48n) | 0x20000n;
  // Encode PA[51:48] into descriptor bits 15:12, as FEAT_LPA does.
  const desc = (pa & 0x0000ffffffff0000n) | (((pa >> 48n) & 0xfn) << 12n);
  armTables(img, va, 52, 65536, 0, desc);
  const w = new Arm64Walker(img.memory(), 65536, 52, 65536);
  assert.equal(w.walk(va + 8n).paddr, Number(pa + 8n));
  assert.deepEqual([...w.mappingsFrom(va)].map((m) => m.paddr), [Number(pa)]);
});
