// Our page-table walk against an independent one: libkdumpfile (python3-libkdumpfile) reading
// the same kernel virtual addresses of the same real dumps must return the same bytes.
import assert from "node:assert/strict";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { PageStatus } from "../lib/dump.ts";
import { big, boot, hasBoot } from "./fixtures.ts";
import { libkdumpfileRead } from "./libkdumpfile.ts";

const LEN = 32;

// Full ELF dumps read nearly everything; filtered ones must agree on what is missing too.
const cases = [
  ["x86_64-6.1", "dump.elf"],
  ["x86_64-6.1", "dump.zlib-d31.kdump"],
  ["x86_64-6.1-la57", "dump.elf"],
  ["aarch64-6.1", "dump.elf"],
  ["aarch64-6.1", "dump.lzo-d31.kdump"],
  ["x86_64-6.12", "dump.zlib-d1.kdump"],
];

for (const [name, file] of cases) {
  Deno.test({
    name: `real ${name}/${file}: kernel virtual reads equal libkdumpfile's`,
    ignore: name !== "x86_64-6.1" && !hasBoot(name),
    async fn() {
      const b = boot(name);
      const k = new Kernel(openDump([b.path(file)]), { vmlinux: b.vmlinux });
      try {
        const mem = k.memory!;
        const addrs: bigint[] = [];
        // Kernel image: text, rodata, data.
        for (const sym of ["linux_banner", "init_task", "_stext", "jiffies", "init_uts_ns"]) {
          const a = k.symbol(sym);
          if (a !== undefined) addrs.push(a);
        }
        // Every task_struct and every kernel stack (vmalloc'd) the dump's task list names.
        for (const t of b.expected.tasks) addrs.push(big(t.task));
        for (const c of b.expected.cpus) {
          const sp = k.dump.cpus[c.cpu].registers.get(k.dump.arch === "x86_64" ? "rsp" : "sp")!;
          addrs.push(sp & ~0xfn);
        }
        // Direct/linear map, spread over the guest's 512 MiB of RAM (which starts at 1 GiB on
        // arm64's virt machine: find its first page).
        const lin = mem.linear.find((r) => r.name !== "kernel image")!;
        let ramStart = 0;
        while (k.phys.pageStatus(ramStart / 4096) === PageStatus.Absent) ramStart += 1 << 20;
        const first = lin.start + BigInt(ramStart - lin.physStart);
        const span = 512n << 20n;
        for (let i = 0n; i < 400n; i++) {
          addrs.push(first + ((span * i) / 400n & ~0xfffn) + (i % 64n) * 8n);
        }
        const theirs = await libkdumpfileRead(b.path(file), LEN, addrs);
        let compared = 0;
        for (let i = 0; i < addrs.length; i++) {
          const buf = new Uint8Array(LEN);
          const r = mem.read(addrs[i], buf);
          const ours = r.bytes === LEN
            ? Array.from(buf, (x) => x.toString(16).padStart(2, "0")).join("")
            : null;
          if (theirs[i] === null || ours === null) {
            // Both must agree that the bytes are not there (filtered page or hole).
            assert.equal(
              ours,
              theirs[i],
              `0x${addrs[i].toString(16)}: ours ${ours}, theirs unreadable`,
            );
            continue;
          }
          assert.equal(ours, theirs[i], `0x${addrs[i].toString(16)}`);
          compared++;
        }
        const share = file.endsWith(".elf") ? 0.9 : 0.15;
        assert.ok(compared > addrs.length * share, `${compared} of ${addrs.length} compared`);
      } finally {
        k.close();
      }
    },
  });
}
