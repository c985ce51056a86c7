// Backtraces from nonsense registers on real dumps (seeded): a pc in the middle of an instruction,
// a stack pointer into another stack or unmapped memory, a frame pointer chain into garbage. The
// unwinders must end with a reason, never throw, never loop, and stay within maxFrames; the
// generated gdb unwind file must be well-formed.
import assert from "node:assert/strict";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { formatBacktrace, kernelBacktrace } from "../lib/backtrace.ts";
import { kernelEntryUnwindElf, kernelEntryUnwindElfArm64 } from "../lib/gdb_unwind_elf.ts";
import { boot, hasBoot } from "./fixtures.ts";
import { Rng, runSeed } from "./fuzz_rng.ts";

const SEED = runSeed(20261203);

for (const name of ["x86_64-6.1", "x86_64-6.12", "aarch64-6.1"]) {
  Deno.test({
    name: `backtrace bad input: ${name}: 2000 random register sets (seed ${SEED})`,
    ignore: !hasBoot(name),
    fn() {
      const b = boot(name);
      const k = new Kernel(openDump([b.path("dump.zlib-d31.kdump")]));
      try {
        const rng = new Rng(SEED);
        const x86 = k.dump.arch === "x86_64";
        const text = k.symbol("_stext")!;
        const cpu0 = k.dump.cpus[0].registers;
        const sp0 = cpu0.get(x86 ? "rsp" : "sp")!;
        const pick = (base: bigint, span: number) => base + BigInt(rng.int(span));
        for (let i = 0; i < 2000; i++) {
          const pc = rng.chance(0.8) ? pick(text, 0x1000000) : BigInt(rng.u32()) << 16n;
          const sp = rng.chance(0.7) ? (pick(sp0 - 0x2000n, 0x4000) & ~7n) : BigInt(rng.u32());
          const fp = rng.chance(0.5) ? pick(sp, 0x400) : BigInt(rng.u32()) << 8n;
          const regs = new Map<string, bigint>(
            x86
              ? [["rip", pc], ["rsp", sp], ["rbp", fp], ["cs", 0x10n]]
              : [["pc", pc], ["sp", sp], ["x29", fp], ["x30", pick(text, 0x1000000)], [
                "cpsr",
                0x3c5n,
              ]],
          );
          const maxFrames = rng.range(1, 64);
          const bt = kernelBacktrace(k, regs, { cpu: rng.int(3), maxFrames });
          assert.ok(bt.frames.length >= 1 && bt.frames.length <= maxFrames, `case ${i}`);
          assert.ok(formatBacktrace(bt).length >= bt.frames.length);
        }
      } finally {
        k.close();
      }
    },
  });
}

Deno.test({
  name: "gdb unwind file: a well-formed ELF whose .debug_frame entries are all in bounds",
  ignore: !hasBoot("x86_64-6.1") || !hasBoot("aarch64-6.1"),
  fn() {
    for (
      const [name, make] of [
        ["x86_64-6.1", kernelEntryUnwindElf],
        ["aarch64-6.1", kernelEntryUnwindElfArm64],
      ] as const
    ) {
      const b = boot(name);
      const k = new Kernel(openDump([b.path("dump.zlib-d31.kdump")]), { vmlinux: b.vmlinux });
      try {
        const elf = make(k)!;
        assert.ok(elf, name);
        const v = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
        assert.deepEqual([...elf.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
        const shoff = Number(v.getBigUint64(0x28, true));
        const frame = shoff + 64; // section 1
        const off = Number(v.getBigUint64(frame + 24, true));
        const size = Number(v.getBigUint64(frame + 32, true));
        assert.ok(off + size <= elf.length);
        // Walk the CIE/FDE records: each length lands exactly on the next record.
        let at = off;
        let fdes = 0;
        while (at < off + size) {
          const len = v.getUint32(at, true);
          assert.ok(len > 0 && at + 4 + len <= off + size, `record at ${at}`);
          if (v.getUint32(at + 4, true) !== 0xffffffff) fdes++;
          at += 4 + len;
        }
        assert.equal(at, off + size);
        assert.ok(fdes >= 3, `${name}: ${fdes} FDEs`);
      } finally {
        k.close();
      }
    }
  },
});
