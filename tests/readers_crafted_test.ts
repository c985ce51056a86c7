// Edge cases of the dump readers on small crafted files. Real-dump behaviour is covered by
// readers_real_test.ts; these cover what no real dump shows.
import assert from "node:assert/strict";
import { MemorySource } from "../lib/file_source.ts";
import { openSource } from "../lib/open_dump.ts";
import { PageStatus } from "../lib/dump.ts";
import { DumpError } from "../lib/errors.ts";
import { PhysicalMemory } from "../lib/physical_memory.ts";
import { craftElf, craftKdump, flatten, prstatusNote, vmcoreinfoNote } from "./crafted.ts";

function page(seed: number, size = 4096): Uint8Array {
  const p = new Uint8Array(size);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    p[i] = i % 7 === 0 ? 0 : x >>> 24; // compressible but not trivial
  }
  return p;
}

const VMCI =
  "OSRELEASE=6.1.0-test\nPAGESIZE=4096\nNUMBER(phys_base)=-75497472\nKERNELOFFSET=1e000000\n";

function sampleKdump(extra: Partial<Parameters<typeof craftKdump>[0]> = {}) {
  const pages = new Map<number, Uint8Array>([[1, page(1)], [2, page(2)], [40000, page(3)]]);
  pages.set(5, new Uint8Array(4096)); // a zero page
  return craftKdump({
    maxPfn: 70000,
    pages,
    excluded: [3, 4],
    vmcoreinfo: VMCI,
    notes: [prstatusNote(105, { rip: 0xffffffff81234567n, rsp: 0xffffc90000123f00n })],
    ...extra,
  });
}

Deno.test("crafted kdump: pages, excluded vs absent, zero page, metadata", () => {
  const d = openSource(new MemorySource("crafted.kdump", sampleKdump()));
  assert.equal(d.arch, "x86_64");
  assert.equal(d.pageSize, 4096);
  assert.match(d.format, /kdump \(zlib\)/);
  assert.equal(d.vmcoreinfo?.number("phys_base"), -75497472n);
  assert.equal(d.vmcoreinfo?.kernelOffset, 0x1e000000n);
  assert.equal(d.cpus.length, 1);
  assert.equal(d.cpus[0].pid, 105);
  assert.equal(d.cpus[0].registers.get("rip"), 0xffffffff81234567n);
  const buf = new Uint8Array(4096);
  assert.equal(d.readPage(1, buf), PageStatus.Present);
  assert.deepEqual(buf, page(1));
  assert.equal(d.readPage(40000, buf), PageStatus.Present);
  assert.deepEqual(buf, page(3));
  assert.equal(d.readPage(3, buf), PageStatus.Excluded);
  assert.equal(d.readPage(7, buf), PageStatus.Absent);
  assert.equal(d.readPage(69999, buf), PageStatus.Absent);
  assert.equal(d.readPage(1 << 30, buf), PageStatus.Absent);
});

Deno.test("crafted kdump: physical reads span pages and stop at the first missing one", () => {
  const d = openSource(new MemorySource("crafted.kdump", sampleKdump()));
  const phys = new PhysicalMemory(d, { cacheBytes: 1 << 20 });
  const out = new Uint8Array(3 * 4096);
  const r = phys.read(4096 + 100, out);
  assert.equal(r.bytes, 2 * 4096 - 100);
  assert.equal(r.status, PageStatus.Excluded);
  assert.equal(r.stoppedAt, 3 * 4096);
  assert.deepEqual(out.subarray(0, 4096 - 100), page(1).subarray(100));
  const zeroing = new PhysicalMemory(d, { zeroExcluded: true });
  const r2 = zeroing.read(4096, new Uint8Array(4 * 4096));
  assert.equal(r2.bytes, 4 * 4096);
  assert.equal(r2.status, PageStatus.Present);
  // zero page
  const z = new Uint8Array(4096).fill(9);
  assert.equal(phys.read(5 * 4096, z).bytes, 4096);
  assert.ok(z.every((b) => b === 0));
});

Deno.test("crafted kdump: damaged descriptors and data answer Corrupt, not exceptions", () => {
  const buf = new Uint8Array(4096);
  const past = openSource(
    new MemorySource("bad.kdump", sampleKdump({ badDescriptor: { pfn: 2, offset: 1 << 30 } })),
  );
  assert.equal(past.readPage(2, buf), PageStatus.Corrupt);
  assert.match(past.lastError, /impossible/);
  assert.equal(past.readPage(1, buf), PageStatus.Present, "other pages still read");
  const flags = openSource(
    new MemorySource("bad.kdump", sampleKdump({ badDescriptor: { pfn: 2, flags: 0x40 } })),
  );
  assert.equal(flags.readPage(2, buf), PageStatus.Corrupt);
  // Garbage in the compressed stream.
  const bytes = sampleKdump();
  const d0 = openSource(new MemorySource("x", bytes));
  assert.equal(d0.readPage(2, buf), PageStatus.Present);
  const damaged = bytes.slice();
  for (let i = damaged.length - 3000; i < damaged.length - 2000; i++) damaged[i] ^= 0x5a;
  const d1 = openSource(new MemorySource("damaged.kdump", damaged));
  const statuses = [1, 2, 40000].map((pfn) => d1.readPage(pfn, buf));
  assert.ok(statuses.includes(PageStatus.Corrupt), `statuses ${statuses}`);
});

Deno.test("crafted kdump: incomplete dump reports lost pages", () => {
  const d = openSource(
    new MemorySource(
      "inc.kdump",
      sampleKdump({ incomplete: true, badDescriptor: { pfn: 2, offset: 0 } }),
    ),
  );
  assert.ok(d.warnings.some((w) => /incomplete/.test(w)));
  assert.equal(d.readPage(2, new Uint8Array(4096)), PageStatus.Lost);
});

Deno.test("crafted kdump: truncation at every structure boundary fails cleanly or serves less", () => {
  const bytes = sampleKdump();
  const cuts = [0, 7, 8, 100, 463, 464, 4095, 4096, 4200, 8191, 8192, 12000, 16384, 20000];
  for (let c = 20480; c < bytes.length; c += 1500) cuts.push(c);
  for (const cut of cuts) {
    const src = new MemorySource("cut.kdump", bytes.subarray(0, cut));
    let d;
    try {
      d = openSource(src);
    } catch (e) {
      assert.ok(e instanceof DumpError, `cut ${cut}: ${e}`);
      assert.match(e.message, /^cut\.kdump: /);
      assert.ok(!e.message.includes("\n"));
      continue;
    }
    const buf = new Uint8Array(4096);
    for (const pfn of [1, 2, 3, 5, 40000]) {
      const s = d.readPage(pfn, buf);
      assert.ok(s in [0, 1, 2, 3, 4, 5], `cut ${cut} pfn ${pfn}: ${s}`);
    }
  }
});

Deno.test("crafted kdump: absurd header fields are rejected without big allocations", () => {
  const bytes = sampleKdump();
  const v = new DataView(bytes.buffer);
  const cases: [string, (b: Uint8Array, v: DataView) => void, RegExp][] = [
    ["zero block size", (_b, v) => v.setInt32(428, 0, true), /block size/],
    ["huge block size", (_b, v) => v.setInt32(428, 1 << 30, true), /block size/],
    ["huge bitmap", (_b, v) => v.setUint32(436, 0x7ffffffe, true), /bitmap/],
    ["odd bitmap", (_b, v) => v.setUint32(436, 3, true), /bitmap/],
    ["bad machine", (b) => b.set(new TextEncoder().encode("sparc\0"), 12 + 4 * 65), /machine/],
    ["bad magic", (b) => b.set(new TextEncoder().encode("KDUMPX  ")), /not a vmcore/],
  ];
  for (const [what, mutate, re] of cases) {
    const b = bytes.slice();
    mutate(b, new DataView(b.buffer));
    assert.throws(() => openSource(new MemorySource("x.kdump", b)), (e: Error) => {
      assert.ok(e instanceof DumpError, what);
      assert.match(e.message, re, what);
      return true;
    });
  }
  // A huge max_mapnr is bounded by the bitmaps actually present.
  const b = bytes.slice();
  new DataView(b.buffer).setBigUint64(4096 + 96, 1n << 40n, true);
  const d = openSource(new MemorySource("big.kdump", b));
  assert.ok(d.maxPfn <= 8 * 4096 * (v.getUint32(436, true) / 2));
});

Deno.test("crafted flattened: same pages as the plain file, later records win", () => {
  const plain = sampleKdump();
  for (const rewrite of [false, true]) {
    const flat = flatten(plain, 1000, rewrite);
    const d = openSource(new MemorySource("crafted.flat", flat));
    assert.match(d.format, /^flattened kdump/);
    const ref = openSource(new MemorySource("crafted.kdump", plain));
    const a = new Uint8Array(4096);
    const b = new Uint8Array(4096);
    for (const pfn of [1, 2, 3, 5, 7, 40000]) {
      assert.equal(d.readPage(pfn, a), ref.readPage(pfn, b));
      assert.deepEqual(a, b);
    }
  }
  // Truncated stream: read what is there, with a warning (tests/truncated_dumps_test.ts has
  // the real files).
  const flat = flatten(plain);
  const cut = openSource(new MemorySource("cut.flat", flat.subarray(0, flat.length - 100)));
  assert.ok(cut.warnings.some((w) => /shorter than its header says/.test(w)), cut.warnings.join());
  assert.equal(cut.readPage(1, new Uint8Array(4096)), PageStatus.Present);
});

Deno.test("crafted ELF: present, excluded (memsz > filesz), absent; virtual mappings", () => {
  const elf = craftElf(
    [
      { paddr: 0x1000, data: page(1), missing: 4096 },
      { paddr: 0x10000, vaddr: 0xffff888000010000n, data: page(2) },
    ],
    [vmcoreinfoNote(VMCI), prstatusNote(1, { rip: 5n })],
  );
  const d = openSource(new MemorySource("crafted.elf", elf));
  assert.equal(d.format, "ELF");
  const buf = new Uint8Array(4096);
  assert.equal(d.readPage(1, buf), PageStatus.Present);
  assert.deepEqual(buf, page(1));
  assert.equal(d.readPage(2, buf), PageStatus.Excluded);
  assert.equal(d.readPage(3, buf), PageStatus.Absent);
  assert.equal(d.readPage(0x10, buf), PageStatus.Present);
  assert.deepEqual(d.virtualMappings, [{ vaddr: 0xffff888000010000n, paddr: 0x10000, size: 4096 }]);
  assert.equal(d.cpus[0].registers.get("rip"), 5n);
  // Cut inside the second segment: a warning, and the cut page is not served.
  const cut = openSource(new MemorySource("cut.elf", elf.subarray(0, elf.length - 2000)));
  assert.ok(cut.warnings.length > 0);
  assert.notEqual(cut.readPage(0x10, buf), PageStatus.Present);
  assert.equal(cut.readPage(1, buf), PageStatus.Present);
});

Deno.test("unknown and empty files are named in one-line errors", () => {
  assert.throws(
    () => openSource(new MemorySource("empty", new Uint8Array())),
    /^Error: empty: header: the file is empty|empty: header/,
  );
  assert.throws(
    () => openSource(new MemorySource("text.txt", new TextEncoder().encode("hello world"))),
    /text\.txt: header: not a vmcore/,
  );
});

Deno.test('crafted kdump: machine "Unknown" (QEMU\'s for arm) is inferred, or refused with why', () => {
  const unknown = (b: Uint8Array) => {
    b.fill(0, 12 + 4 * 65, 12 + 5 * 65);
    b.set(new TextEncoder().encode("Unknown"), 12 + 4 * 65);
    return b;
  };
  // x86_64 evidence: a 336-byte NT_PRSTATUS and VMCOREINFO's phys_base.
  const d = openSource(new MemorySource("u.kdump", unknown(sampleKdump())));
  assert.equal(d.arch, "x86_64");
  assert.match(
    String(d.details["machine"]),
    /NT_PRSTATUS notes of 336 bytes; VMCOREINFO phys_base/,
  );
  // Evidence for both architectures: refused, naming both.
  const mixed = unknown(sampleKdump({ vmcoreinfo: VMCI + "NUMBER(VA_BITS)=48\n" }));
  assert.throws(
    () => openSource(new MemorySource("m.kdump", mixed)),
    /: m\.kdump: kdump header: the machine is "Unknown", and the contents disagree on the architecture: x86_64 .* vs aarch64 \(VMCOREINFO VA_BITS\)$/,
  );
  // No evidence at all.
  const none = unknown(sampleKdump({ vmcoreinfo: "OSRELEASE=test\nPAGESIZE=4096\n", notes: [] }));
  assert.throws(
    () => openSource(new MemorySource("n.kdump", none)),
    /: n\.kdump: kdump header: the machine is "Unknown", and no NT_PRSTATUS note or VMCOREINFO entry names an architecture$/,
  );
});

Deno.test("crafted ELF: 140,000 notes in one segment open (more than V8 passes as arguments)", () => {
  const filler = Array.from({ length: 140_000 }, () => ({
    name: "NONE",
    type: 0x4e4f4e45,
    desc: new Uint8Array(0),
  }));
  const elf = craftElf(
    [{ paddr: 0x1000, data: page(1) }],
    [vmcoreinfoNote(VMCI), ...filler, prstatusNote(1, { rip: 7n })],
  );
  const d = openSource(new MemorySource("many-notes.elf", elf));
  assert.equal(d.format, "ELF");
  assert.equal(d.cpus[0].registers.get("rip"), 7n);
});
