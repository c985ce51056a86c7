/**
 * The search for a live guest's VMCOREINFO in its RAM, on crafted memory: the pointers of the
 * kernel image's writable data, the order the scan through the gdbstub looks in, its bound, the
 * check of each candidate, and no slow scan before a kernel is seen running. The real guest is in tests/live_gdb_test.ts.
 */

import assert from "node:assert/strict";
import {
  aarch64ImagePointers,
  discoverAarch64,
  discoverX86,
  IMAGE_POINTER_SOURCE,
  MAX_IMAGE_POINTERS,
  scanOrder,
  stubScan,
  ttbr1Walker,
  type VmcoreinfoScan,
  x86ImagePointers,
} from "../lib/live_discovery.ts";
import { X86_64Walker } from "../lib/paging_x86_64.ts";
import type { LiveSource } from "../lib/live_dump.ts";
import type { QemuStub } from "../lib/qemu_stub.ts";
import { type DumpReader, PageStatus } from "../lib/dump.ts";
import { PhysicalMemory } from "../lib/physical_memory.ts";

const MiB = 1 << 20;
const GiB = 1024 * MiB;

/** Sparse guest memory: pages by physical address, zero elsewhere. */
class Memory {
  pages = new Map<number, Uint8Array>();
  samples = 0;

  put(paddr: number, text: string): void {
    const page = new Uint8Array(4096);
    page.set(new TextEncoder().encode(text));
    this.pages.set(paddr, page);
  }

  /** Write a little-endian 64-bit value. */
  u64(paddr: number, value: bigint): void {
    const base = paddr - (paddr % 4096);
    if (!this.pages.has(base)) this.pages.set(base, new Uint8Array(4096));
    new DataView(this.pages.get(base)!.buffer).setBigUint64(paddr % 4096, value, true);
  }

  read(paddr: number, out: Uint8Array): void {
    const page = this.pages.get(paddr - (paddr % 4096));
    out.fill(0);
    if (page) out.set(page.subarray(paddr % 4096, (paddr % 4096) + out.length));
  }

  /** What a stub's sampleMemory answers. */
  sample(address: bigint, stride: number, count: number, length: number): Uint8Array {
    const out = new Uint8Array(count * length);
    for (let k = 0; k < count; k++) {
      this.read(Number(address) + k * stride, out.subarray(k * length, (k + 1) * length));
    }
    this.samples += count;
    return out;
  }

  source(ranges: { start: number; end: number }[]): LiveSource {
    const stub = {
      sampleMemory: (a: bigint, s: number, c: number, l: number) => this.sample(a, s, c, l),
    } as unknown as QemuStub;
    return {
      stub,
      desc: undefined as never,
      ramRanges: ranges.map((r) => ({ ...r, fileOffset: 0 })),
      vcpus: [],
    };
  }

  /** The memory as a dump, for PhysicalMemory. */
  dump(): DumpReader {
    return {
      format: "test",
      files: [],
      arch: "x86_64",
      pageSize: 4096,
      maxPfn: (8 * GiB) / 4096,
      notes: [],
      cpus: [],
      qemuCpus: [],
      compressed: false,
      warnings: [],
      details: {},
      virtualMappings: [],
      readPage: (pfn, out) => {
        this.read(pfn * 4096, out);
        return PageStatus.Present;
      },
      lastError: "",
      close: () => {},
    };
  }
}

const VMCOREINFO = "OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82a0a000\n" +
  "KERNELOFFSET=14c00000\n";

Deno.test("VMCOREINFO scan order: RAM above 4 GiB, then from 16 MiB, then below", () => {
  const order = scanOrder([
    { start: 0, end: 3 * GiB, fileOffset: 0 },
    { start: 4 * GiB, end: 6 * GiB, fileOffset: 3 * GiB },
  ]);
  assert.deepEqual(order.map((r) => [r.start, r.end, r.fileOffset]), [
    [4 * GiB, 6 * GiB, 3 * GiB],
    [16 * MiB, 3 * GiB, 0],
    [0, 16 * MiB, 0],
  ]);
  // A guest smaller than 16 MiB: one range, nothing empty.
  assert.deepEqual(scanOrder([{ start: 0, end: 8 * MiB, fileOffset: 0 }]).length, 1);
});

Deno.test("VMCOREINFO scan through the gdbstub: candidates in order, bounded, lazily", () => {
  const mem = new Memory();
  mem.put(24 * MiB, VMCOREINFO);
  mem.put(4 * GiB + 3 * MiB, "OSRELEASE=not really");
  mem.put(5 * MiB, VMCOREINFO);
  const src = mem.source([{ start: 0, end: 64 * MiB }, {
    start: 4 * GiB,
    end: 4 * GiB + 32 * MiB,
  }]);
  const scan = stubScan(src);
  assert.ok(scan.slow);
  assert.equal(scan.ran, false);
  const found = scan.candidates()[Symbol.iterator]();
  assert.equal(found.next().value, 4 * GiB + 3 * MiB);
  assert.equal(scan.ran, true);
  assert.equal(found.next().value, 24 * MiB);
  // Asked for lazily, 16 MiB at a time: up to 32 MiB so far, and nothing of the low 16 MiB.
  assert.equal(mem.samples, (32 * MiB + 16 * MiB) / 4096);
  assert.equal(found.next().value, 5 * MiB);
  assert.equal(found.next().done, true);
  // At most maxPages pages: 20 MiB here, from 16 MiB up, short of where the text is.
  const few = new Memory();
  few.put(40 * MiB, VMCOREINFO);
  const bounded = stubScan(few.source([{ start: 0, end: 64 * MiB }]), (20 * MiB) / 4096);
  assert.deepEqual([...bounded.candidates()], []);
  assert.equal(few.samples, (20 * MiB) / 4096);
  assert.match(bounded.notFound(), /^no VMCOREINFO in the 20 MiB of guest RAM scanned/);
});

/** A scan over fixed candidates, recording whether it was used. */
function fixedScan(at: number[], slow: boolean): VmcoreinfoScan & { used: boolean } {
  const scan = {
    used: false,
    slow,
    source: "a test scan",
    notFound: () => "nothing in the test",
    candidates() {
      scan.used = true;
      return at;
    },
  };
  return scan;
}

Deno.test("VMCOREINFO discovery: candidates checked; no slow scan before a kernel runs", () => {
  const mem = new Memory();
  mem.put(0x100000, "OSRELEASE=a page of something else");
  mem.put(0x200000, VMCOREINFO);
  const phys = () => new PhysicalMemory(mem.dump());
  // CR3 points at an empty table: no kernel image mapped (a guest in its firmware).
  const cr3 = 0x300000n;
  const quick = fixedScan([0x100000, 0x200000], false);
  const facts = discoverX86(phys(), cr3, 0n, undefined, quick);
  assert.ok(quick.used);
  assert.equal(facts.vmcoreinfoPaddr, 0x200000);
  assert.equal(facts.vmcoreinfoSource, "a test scan");
  assert.equal(facts.vmcoreinfo?.osRelease, "6.1.0-test");
  assert.equal(facts.kaslrOffset, 0x14c00000n);
  assert.match(facts.kaslrSource, /^VMCOREINFO \(a test scan\)$/);

  const slow = fixedScan([0x200000], true);
  const none = discoverX86(phys(), cr3, 0n, undefined, slow);
  assert.equal(slow.used, false);
  assert.equal(none.vmcoreinfo, undefined);
  assert.equal(
    none.vmcoreinfoSource,
    "not found (no kernel seen running yet: guest RAM not scanned)",
  );

  const empty = discoverX86(phys(), cr3, 0n, undefined, fixedScan([0x100000], false));
  assert.equal(empty.vmcoreinfoSource, "not found (nothing in the test)");
});

/** Where the crafted kernel's direct map starts (KASLR'd: above its lowest possible start). */
const DIRECT_MAP = 0xffff9a8000000000n;
const CR3 = 0x300000;

/**
 * A kernel's page tables as the search sees them: the image at KASLR offset 0x14c00000 (a
 * read-only 2 MiB text page, a writable .data run of two pages, two unmapped pages of freed
 * init memory, a writable .bss page), and the direct map from physical 0 in a 1 GiB page.
 */
function craftedKernel(): Memory {
  const mem = new Memory();
  const idx = (v: bigint, level: number) =>
    Number((v >> BigInt(12 + 9 * (level - 1))) & 0x1ffn) * 8;
  const text = 0xffffffff95c00000n;
  mem.u64(CR3 + idx(text, 4), 0x301000n | 3n);
  mem.u64(0x301000 + idx(text, 3), 0x302000n | 3n);
  mem.u64(0x302000 + idx(text, 2), 0x1000000n | 0x81n);
  const data = text + 0x200000n;
  mem.u64(0x302000 + idx(data, 2), 0x303000n | 3n);
  mem.u64(0x303000 + 0 * 8, 0x400000n | 3n);
  mem.u64(0x303000 + 1 * 8, 0x401000n | 3n);
  mem.u64(0x303000 + 4 * 8, 0x402000n | 3n);
  mem.u64(CR3 + idx(DIRECT_MAP, 4), 0x304000n | 3n);
  mem.u64(0x304000, 0x83n);
  return mem;
}

Deno.test("VMCOREINFO through the kernel image's data: .bss first, writable pages only", () => {
  const mem = craftedKernel();
  // The text page points at a page that would pass every check: never looked at.
  mem.u64(0x1000000, DIRECT_MAP + 0x700000n);
  mem.put(0x700000, VMCOREINFO.replace("6.1.0-test", "6.1.0-text"));
  // .data: a page-aligned pointer, one that is not, a value outside the direct map, one past
  // RAM, and a page that starts like VMCOREINFO but is not.
  mem.u64(0x400000, DIRECT_MAP + 0x500000n);
  mem.u64(0x400008, DIRECT_MAP + 0x500008n);
  mem.u64(0x400010, 0x1234000n);
  // Past the end of RAM (8 GiB here): another mapping, not a page of RAM.
  mem.u64(0x400018, DIRECT_MAP + 9n * BigInt(GiB));
  mem.u64(0x401ff8, DIRECT_MAP + 0x600000n);
  mem.put(0x600000, "OSRELEASE=and nothing else");
  // .bss: the kernel's vmcoreinfo_data, at 7 GiB (past any scan's bound), and .data's first.
  mem.u64(0x402010, DIRECT_MAP + 7n * BigInt(GiB));
  mem.u64(0x402018, DIRECT_MAP + 0x500000n);
  mem.put(7 * GiB, VMCOREINFO);

  const phys = () => new PhysicalMemory(mem.dump());
  const walker = new X86_64Walker(phys(), CR3, 4);
  assert.deepEqual([...x86ImagePointers(phys(), walker, 0xffffffff95c00000n, DIRECT_MAP)], [
    7 * GiB,
    0x500000,
    0x600000,
  ]);

  const scan = fixedScan([0x600000], true);
  const facts = discoverX86(phys(), BigInt(CR3), 0n, undefined, scan);
  assert.equal(scan.used, false);
  assert.equal(facts.vmcoreinfoPaddr, 7 * GiB);
  assert.equal(facts.vmcoreinfoSource, IMAGE_POINTER_SOURCE);
  assert.equal(facts.vmcoreinfo?.osRelease, "6.1.0-test");
  assert.equal(facts.kaslrOffset, 0x14c00000n);
  assert.equal(
    facts.kaslrSource,
    `VMCOREINFO (${IMAGE_POINTER_SOURCE}), agreeing with the kernel image mapping under CR3`,
  );

  // No search of RAM allowed at this stop (a scan through the gdbstub waits to retry): no
  // search of the image's data either.
  const waiting = discoverX86(phys(), BigInt(CR3), 0n, undefined, undefined);
  assert.equal(waiting.vmcoreinfo, undefined);
  assert.equal(waiting.vmcoreinfoSource, "not found");

  // Without the pointer, the scan of RAM (a kernel is seen running: a slow one too).
  mem.u64(0x402010, 0n);
  mem.put(0x800000, VMCOREINFO);
  const scanned = fixedScan([0x600000, 0x800000], true);
  const fallback = discoverX86(phys(), BigInt(CR3), 0n, undefined, scanned);
  assert.ok(scanned.used);
  assert.equal(fallback.vmcoreinfoPaddr, 0x800000);
  assert.equal(fallback.vmcoreinfoSource, "a test scan");
});

Deno.test("VMCOREINFO through the kernel image's data: at most MAX_IMAGE_POINTERS pages", () => {
  const mem = craftedKernel();
  // .bss grows to 140 pages, every word a pointer to a page of its own: 71,680 pointers.
  for (let page = 0; page < 140; page++) {
    mem.u64(0x303000 + (4 + page) * 8, BigInt(0x402000 + page * 4096) | 3n);
    for (let word = 0; word < 512; word++) {
      const n = page * 512 + word + 1;
      mem.u64(0x402000 + page * 4096 + word * 8, DIRECT_MAP + BigInt(n) * 4096n);
    }
  }
  const phys = () => new PhysicalMemory(mem.dump(), { cacheBytes: 4 << 20 });
  const walker = new X86_64Walker(phys(), CR3, 4);
  const found = [...x86ImagePointers(phys(), walker, 0xffffffff95c00000n, DIRECT_MAP)];
  assert.equal(found.length, MAX_IMAGE_POINTERS);
  assert.equal(found[0], 4096);
  assert.equal(found.at(-1), MAX_IMAGE_POINTERS * 4096);
});

/** The crafted arm64 kernel's linear map start (PAGE_OFFSET plus a KASLR'd 2 GiB), at 1 GiB. */
const LINEAR = 0xffff000080000000n;
/** Its vectors (VBAR_EL1), 64 KiB into the image's text. */
const VBAR = 0xffff800008010800n;

/**
 * An arm64 kernel's tables as the search sees them (4 KiB granule, 48-bit VA, TTBR1 at 0x300000):
 * the image's text as a read-only 2 MiB block from 0xffff800008000000, then a writable run of two
 * pages (.data, .bss), an unmapped page, and a writable page of something else (a vmalloc area);
 * the linear map from physical 1 GiB in a 1 GiB block.
 */
function craftedArm64Kernel(): Memory {
  const mem = new Memory();
  const idx = (v: bigint, level: number) => Number((v >> BigInt(39 - 9 * level)) & 0x1ffn) * 8;
  const af = 1n << 10n;
  const text = 0xffff800008000000n;
  mem.u64(CR3 + idx(text, 0), 0x301000n | 3n);
  mem.u64(0x301000 + idx(text, 1), 0x302000n | 3n);
  mem.u64(0x302000 + idx(text, 2), 0x41000000n | 1n | af | 0x80n);
  const data = text + 0x200000n;
  mem.u64(0x302000 + idx(data, 2), 0x303000n | 3n);
  mem.u64(0x303000 + 0 * 8, 0x41400000n | 3n | af);
  mem.u64(0x303000 + 1 * 8, 0x41401000n | 3n | af);
  mem.u64(0x303000 + 3 * 8, 0x41403000n | 3n | af);
  mem.u64(CR3 + idx(LINEAR, 0), 0x304000n | 3n);
  mem.u64(0x304000 + idx(LINEAR, 1), 0x40000000n | 1n | af);
  return mem;
}

Deno.test("VMCOREINFO through an arm64 kernel image's data: one writable run, linear map", () => {
  const mem = craftedArm64Kernel();
  const linear = (paddr: number) => LINEAR + BigInt(paddr - 0x40000000);
  // The read-only text, and the writable area past the image's run: never looked at.
  mem.u64(0x41000010, linear(0x48000000));
  mem.u64(0x41403000, linear(0x48000000));
  mem.put(0x48000000, VMCOREINFO.replace("6.1.0-test", "6.1.0-else"));
  // .data: a pointer into the linear map, one below its start, one into the image's half.
  mem.u64(0x41400000, linear(0x40002000));
  mem.u64(0x41400008, LINEAR - 0x1000n);
  mem.u64(0x41400010, 0xffff800008001000n);
  // .bss: vmcoreinfo_data.
  mem.u64(0x41401020, linear(0x50000000));
  mem.put(0x50000000, VMCOREINFO);

  const phys = () => new PhysicalMemory(mem.dump());
  // TCR_EL1: T1SZ 16 (48-bit), TG1 4 KiB, IPS 48-bit.
  const tcr = (16n << 16n) | (2n << 30n) | (5n << 32n);
  const walker = ttbr1Walker(phys(), BigInt(CR3), tcr)!;
  assert.deepEqual([...aarch64ImagePointers(phys(), walker, VBAR)], [0x40002000, 0x50000000]);

  // The whole discovery, no vmlinux: a vCPU at EL1 outside its vectors.
  const vcpu = () => ({ pc: VBAR + 0x20000n, cpsr: 0x3c5n, vbar: VBAR, ttbr1: BigInt(CR3), tcr });
  const scan = fixedScan([0x48000000], true);
  const facts = discoverAarch64(phys(), 1, vcpu, undefined, scan);
  assert.equal(scan.used, false);
  assert.equal(facts.vmcoreinfoPaddr, 0x50000000);
  assert.equal(facts.vmcoreinfoSource, IMAGE_POINTER_SOURCE);
  assert.equal(facts.vmcoreinfo?.osRelease, "6.1.0-test");
  assert.equal(facts.kaslrOffset, 0x14c00000n);
  assert.equal(facts.kaslrSource, `VMCOREINFO (${IMAGE_POINTER_SOURCE})`);

  // A vCPU in user mode shows no kernel: no search of its tables, and no slow scan either.
  const user = () => ({ ...vcpu(), cpsr: 0n });
  const idle = fixedScan([0x50000000], true);
  const none = discoverAarch64(phys(), 1, user, undefined, idle);
  assert.equal(idle.used, false);
  assert.equal(none.vmcoreinfo, undefined);
});
