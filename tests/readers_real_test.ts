// Every format variant of one real boot must give the same physical pages as QEMU's full ELF
// dump, and the same metadata as the independent tools recorded.
import assert from "node:assert/strict";
import { openDump } from "../lib/open_dump.ts";
import { type DumpReader, PageStatus } from "../lib/dump.ts";
import { big, boot, type Variant } from "./fixtures.ts";

const B = boot("x86_64-6.1");

/** Open a manifest variant; split parts open together as one set. */
function openVariant(v: Variant): DumpReader {
  if (v.split_part) {
    const parts = B.variants.filter((x) =>
      x.split_part && x.file.replace(/\.\d+\.kdump$/, "") ===
        v.file.replace(/\.\d+\.kdump$/, "")
    );
    return openDump(parts.map((p) => B.path(p.file)));
  }
  return openDump([B.path(v.file)]);
}

const variants = B.variants.filter((v) => !v.split_part || v.split_part === 1);
const reference = openDump([B.path("dump.elf")]);

function isZeroPage(p: Uint8Array): boolean {
  for (let i = 0; i < p.length; i++) if (p[i] !== 0) return false;
  return true;
}

for (const v of variants) {
  const label = v.split_part ? v.file.replace(/\.1\.kdump$/, ".*.kdump (split set)") : v.file;
  Deno.test(`real ${label}: metadata matches the independent tools`, () => {
    const d = openVariant(v);
    try {
      assert.equal(d.arch, "x86_64");
      assert.equal(d.pageSize, 4096);
      assert.equal(
        new TextDecoder().decode(d.vmcoreinfo!.raw),
        B.expected.vmcoreinfo.replace(/\0+$/, ""),
      );
      assert.equal(d.vmcoreinfo!.kernelOffset, big(B.expected.kaslr_offset));
      assert.equal(d.vmcoreinfo!.buildId, B.expected.build_id);
      assert.equal(d.cpus.length, B.expected.cpus.length);
      for (const c of B.expected.cpus) {
        const regs = d.cpus[c.cpu].registers;
        for (const name of ["rip", "rsp", "rbp", "rbx", "r12", "cs", "ss", "gs_base"]) {
          const want = c.registers[name === "eflags" ? "rflags" : name];
          if (want === undefined) continue;
          assert.equal(regs.get(name), big(want), `cpu ${c.cpu} ${name}`);
        }
        if (v.source !== "qemu") continue;
        assert.equal(d.cpus[c.cpu].pid, c.prstatus_pid, "QEMU writes vCPU + 1 as pr_pid");
      }
    } finally {
      d.close();
    }
  });

  if (v.file === "dump.elf") continue;
  Deno.test(`real ${label}: pages equal the full ELF dump's, filtered ones reported`, () => {
    const d = openVariant(v);
    const a = new Uint8Array(4096);
    const b = new Uint8Array(4096);
    const counts = [0, 0, 0, 0, 0, 0];
    try {
      // Every 3rd page plus the first 16 MiB: tens of thousands of real pages per variant.
      for (let pfn = 0; pfn < reference.maxPfn; pfn += pfn < 4096 ? 1 : 3) {
        const rs = reference.readPage(pfn, a);
        const s = d.readPage(pfn, b);
        counts[s]++;
        // QEMU's ELF also holds non-RAM ranges (firmware ROM) above the last RAM page.
        if (s === PageStatus.Absent && pfn >= d.maxPfn) continue;
        if (rs === PageStatus.Absent) {
          assert.ok(s === PageStatus.Absent || s === PageStatus.Excluded, `pfn ${pfn}: ${s}`);
          continue;
        }
        assert.equal(rs, PageStatus.Present);
        if (s === PageStatus.Zero) {
          assert.ok(isZeroPage(a), `pfn ${pfn} reported zero but is not`);
        } else if (s === PageStatus.Present) {
          if (a.some((x, i) => x !== b[i])) assert.fail(`pfn 0x${pfn.toString(16)} differs`);
        } else if (s === PageStatus.Excluded) {
          // Only filtered dumps may leave pages out; level 1 (QEMU) only zero pages.
          assert.ok(v.dump_level > 0 || isZeroPage(a), `pfn ${pfn} excluded at level 0`);
        } else {
          assert.fail(`pfn 0x${pfn.toString(16)}: status ${s} (${d.lastError})`);
        }
      }
      const read = counts[PageStatus.Present] + counts[PageStatus.Zero];
      assert.ok(read > 4000, `only ${read} pages readable`);
      if (v.dump_level === 31) assert.ok(counts[PageStatus.Excluded] > 1000, "d31 filters");
    } finally {
      d.close();
    }
  });
}

Deno.test("real split set: covers the pfn space in parts, like the unsplit file", () => {
  const parts = B.variants.filter((v) => v.split_part).map((v) => B.path(v.file));
  assert.ok(parts.length >= 2, "fixture has a split set");
  const set = openDump(parts);
  const whole = openDump([B.path("dump.zlib-d31.kdump")]);
  assert.match(set.format, /split/);
  assert.deepEqual(set.warnings, []);
  const a = new Uint8Array(4096);
  const b = new Uint8Array(4096);
  for (let pfn = 0; pfn < whole.maxPfn; pfn += 7) {
    const status = set.readPage(pfn, a);
    assert.equal(status, whole.readPage(pfn, b), `pfn ${pfn}`);
    // Buffers hold page data only for Present (Zero leaves them untouched).
    if (status === PageStatus.Present) assert.deepEqual(a, b, `pfn ${pfn}`);
  }
  // One part alone is named in the error.
  assert.throws(() => openDump([parts[0], B.path("dump.elf")]), /dump\.elf: split set/);
});
