// QEMU's kdump-zlib files of arm64 guests: the header names the machine "Unknown" (libkdumpfile
// and we used to refuse them). They must open as aarch64 and hold exactly the bytes of the same
// boot's ELF dump, whose layout binutils' readelf gives; QEMU writes them with 64 KiB dump pages
// even for a 4 KiB-page kernel.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { openDump } from "../lib/open_dump.ts";
import { PageStatus } from "../lib/dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { big, boot, hasBoot } from "./fixtures.ts";
import { pipeTarget, runGdb } from "./gdb_helpers.ts";

const FILES = ["dump.qemu-kdump-zlib.flat", "dump.qemu-kdump-zlib-reassembled.kdump"];

/** PT_LOAD segments of an ELF core as binutils' readelf reads them: [paddr, offset, size]. */
function readelfLoads(path: string): [number, number, number][] {
  const out = new Deno.Command("readelf", { args: ["-lW", path], stdout: "piped" }).outputSync();
  assert.ok(out.success, "readelf -lW failed");
  const loads: [number, number, number][] = [];
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const m = /^\s*LOAD\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)/.exec(line);
    if (m) loads.push([Number(m[2]), Number(m[1]), Number(m[3])]);
  }
  assert.ok(loads.length > 0, "no PT_LOAD in readelf's output");
  return loads;
}

function isZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

for (const name of ["aarch64-6.1", "aarch64-6.12"]) {
  // aarch64-6.1 caches built before the QEMU file was added lack it (a fresh build has it);
  // the aarch64-6.12 boot always has it.
  const present = name === "aarch64-6.12" ||
    (hasBoot(name) && existsSync(boot(name).path(FILES[0])));
  for (const file of FILES) {
    Deno.test({
      name: `real ${name} ${file}: opens as aarch64 with drgn's release, KASLR and registers`,
      ignore: !present,
      fn() {
        const B = boot(name);
        const d = openDump([B.path(file)]);
        try {
          assert.equal(d.arch, "aarch64");
          assert.match(String(d.details["machine"]), /header says "Unknown"; inferred from/);
          assert.equal(d.vmcoreinfo!.osRelease, B.expected.release);
          assert.equal(d.vmcoreinfo!.kernelOffset, big(B.expected.kaslr_offset));
          assert.equal(d.cpus.length, B.expected.cpus.length);
          for (const c of B.expected.cpus) {
            for (const reg of ["pc", "sp", "x29", "x30", "x19"]) {
              const want = c.registers[reg];
              if (want === undefined) continue;
              assert.equal(d.cpus[c.cpu].registers.get(reg), big(want), `cpu ${c.cpu} ${reg}`);
            }
          }
          // Through the kernel's page tables (4 KiB pages inside 64 KiB dump pages): linux_banner
          // as drgn read it.
          const k = new Kernel(d, { vmlinux: B.vmlinux });
          const addr = k.symbol("linux_banner")!;
          const want = new TextEncoder().encode(B.expected.banner);
          const got = new Uint8Array(want.length);
          assert.equal(k.memory!.read(addr, got).bytes, want.length);
          assert.equal(new TextDecoder().decode(got), B.expected.banner);
        } finally {
          d.close();
        }
      },
    });

    Deno.test({
      name: `real ${name} ${file}: every page equals dump.elf's bytes`,
      ignore: !present,
      fn() {
        const B = boot(name);
        const d = openDump([B.path(file)]);
        const elf = Deno.openSync(B.path("dump.elf"));
        try {
          const loads = readelfLoads(B.path("dump.elf"));
          const page = new Uint8Array(d.pageSize);
          const want = new Uint8Array(d.pageSize);
          const counts = new Map<number, number>();
          for (let pfn = 0; pfn < d.maxPfn; pfn++) {
            const s = d.readPage(pfn, page);
            counts.set(s, (counts.get(s) ?? 0) + 1);
            const paddr = pfn * d.pageSize;
            const seg = loads.find(([p, , size]) => paddr >= p && paddr + d.pageSize <= p + size);
            if (!seg) {
              assert.equal(s, PageStatus.Absent, `pfn ${pfn} is not in dump.elf`);
              continue;
            }
            elf.seekSync(seg[1] + (paddr - seg[0]), Deno.SeekMode.Start);
            let n = 0;
            while (n < want.length) n += elf.readSync(want.subarray(n)) ?? 0;
            if (s === PageStatus.Present) {
              assert.deepEqual(page, want, `pfn ${pfn}`);
            } else {
              // QEMU's dump level 1 leaves out zero pages only.
              assert.ok(s === PageStatus.Zero || s === PageStatus.Excluded, `pfn ${pfn}: ${s}`);
              assert.ok(isZero(want), `pfn ${pfn} left out but not zero in dump.elf`);
            }
          }
          // About 900 of the 8192 64 KiB pages hold data in these 512 MiB guests.
          assert.ok((counts.get(PageStatus.Present) ?? 0) > 500, "real pages were compared");
        } finally {
          elf.close();
          d.close();
        }
      },
    });
  }
}

Deno.test("gdb-multiarch on QEMU's flattened arm64 6.12 kdump: drgn's crashed-CPU stack", async () => {
  const B = boot("aarch64-6.12");
  const r = await runGdb([
    pipeTarget([B.path("dump.qemu-kdump-zlib.flat"), "--vmlinux", B.vmlinux]),
    "thread 2",
    "bt 12",
    "p linux_banner",
  ], { gdb: "gdb-multiarch" });
  const crashed = B.expected.cpus.find((c: { cpu: number }) => c.cpu === B.expected.crashed_cpu);
  // The functions drgn unwound through, in drgn's order, are in gdb's backtrace.
  let at = 0;
  for (const fn of crashed.stack.slice(0, 6)) {
    const i = r.out.indexOf(` ${fn} (`, at);
    assert.ok(i >= 0, `frame ${fn} (after offset ${at}) in\n${r.out}`);
    at = i;
  }
  assert.ok(r.out.includes(B.expected.banner.slice(0, 50)), r.out);
});
