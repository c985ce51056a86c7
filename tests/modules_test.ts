// Module code in backtraces (lib/modules.ts): the fixtures' guest loads qemu_fw_cfg.ko. Its own
// symbol table, read from the module file with binutils' nm, must match what we read from the
// dump's `mod->kallsyms`: the same function names, at the same distances from each other, each
// printed as the kernel prints module frames (`name+0x0/0x… [qemu_fw_cfg]`).
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { kernelModules } from "../lib/modules.ts";
import { formatAddress } from "../lib/symbolize.ts";
import { boot, FIXTURES, hasBoot } from "./fixtures.ts";

function nmText(ko: string): Map<string, number> {
  const out = new Deno.Command("nm", { args: ["--defined-only", ko], stdout: "piped" })
    .outputSync();
  // Functions of .text only (t/T); .text.unlikely and .init.text would be placed elsewhere.
  const sections = new Deno.Command("objdump", { args: ["-t", ko], stdout: "piped" }).outputSync();
  const inText = new Set<string>();
  for (const l of new TextDecoder().decode(sections.stdout).split("\n")) {
    const m = /^[0-9a-f]+ .{7} \.text\s+[0-9a-f]+ (\S+)$/.exec(l);
    if (m) inText.add(m[1]);
  }
  const map = new Map<string, number>();
  for (const l of new TextDecoder().decode(out.stdout).split("\n")) {
    const m = /^([0-9a-f]+) [tT] (\S+)$/.exec(l);
    // ARM mapping symbols ($x, $d) mark code and data, not functions.
    if (m && inText.has(m[2]) && !m[2].startsWith("$")) map.set(m[2], parseInt(m[1], 16));
  }
  return map;
}

for (const name of ["x86_64-6.1", "x86_64-6.12", "aarch64-6.1"]) {
  const b = hasBoot(name) ? boot(name) : undefined;
  const release = b?.expected.release as string | undefined;
  const ko = release ? join(FIXTURES, "kernels", release, "modules", "qemu_fw_cfg.ko") : "";
  Deno.test({
    name: `modules: ${name}: qemu_fw_cfg's functions as its .ko file has them`,
    ignore: !b || !existsSync(ko),
    fn() {
      const k = new Kernel(openDump([b!.path("dump.zlib-d31.kdump")]), { vmlinux: b!.vmlinux });
      try {
        const mod = kernelModules(k).find((m) => m.name === "qemu_fw_cfg");
        assert.ok(mod, `modules: ${kernelModules(k).map((m) => m.name)}`);
        const want = nmText(ko);
        assert.ok(want.size >= 5, `${ko}: ${want.size} functions`);
        const at = new Map(mod.symbols.map((s) => [s.name, s.value]));
        const [first, firstOff] = [...want].sort((x, y) => x[1] - y[1])[0];
        const base = at.get(first)! - BigInt(firstOff);
        for (const [fn, off] of want) {
          assert.equal(at.get(fn), base + BigInt(off), fn);
          const addr = base + BigInt(off);
          assert.ok(addr >= mod.textStart && addr < mod.textEnd, fn);
          assert.match(
            formatAddress(k, addr),
            new RegExp(`^${fn}\\+0x0/0x[0-9a-f]+ \\[qemu_fw_cfg\\]$`),
          );
        }
      } finally {
        k.close();
      }
    },
  });
}
