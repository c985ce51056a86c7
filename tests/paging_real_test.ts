// Kernel address translation on real dumps, checked against the kernel's own data and the
// values drgn recorded: banner, init_task, the task list, per-CPU data, stacks.
import assert from "node:assert/strict";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { big, boot, hasBoot } from "./fixtures.ts";

interface Case {
  boot: string;
  file: string;
}

const cases: Case[] = [
  { boot: "x86_64-6.1", file: "dump.elf" },
  { boot: "x86_64-6.1", file: "dump.zlib-d31.kdump" },
  { boot: "x86_64-6.1", file: "dump.qemu-kdump-zlib.flat" },
  { boot: "x86_64-6.1-la57", file: "dump.elf" },
  { boot: "x86_64-6.1-la57", file: "dump.zlib-d31.kdump" },
  { boot: "x86_64-6.12", file: "dump.elf" },
  // makedumpfile 1.7.2 drops 6.12 slab pages at -d 31 (see the manifest): use -d 23.
  { boot: "x86_64-6.12", file: "dump.zlib-d1.kdump" },
  { boot: "aarch64-6.1", file: "dump.elf" },
  { boot: "aarch64-6.1", file: "dump.zlib-d31.kdump" },
];

function open(c: Case) {
  const b = boot(c.boot);
  return { b, k: new Kernel(openDump([b.path(c.file)]), { vmlinux: b.vmlinux }) };
}

for (const c of cases) {
  // Optional boots (arm64, 6.12, la57) are tested when their fixtures were built.
  const ignore = c.boot !== "x86_64-6.1" && !hasBoot(c.boot);
  Deno.test({
    name: `real ${c.boot}/${c.file}: kernel data reads through the page tables`,
    ignore,
    fn() {
      const { b, k } = open(c);
      try {
        const e = b.expected;
        assert.equal(k.kaslrOffset, big(e.kaslr_offset), "KASLR offset");
        const banner = big(e.system_map.linux_banner) + k.kaslrOffset;
        assert.equal(k.memory!.readCString(banner, 512), e.banner.replace(/\0+$/, ""));
        if (e.page_offset_base) {
          assert.equal(k.directMapBase, big(e.page_offset_base), "direct map base");
        }
        if (c.boot.includes("la57")) assert.match(k.memory!.walker.description, /5-level/);

        // init_task.comm, then the task list by following init_task.tasks.
        const btf = k.btf!;
        const comm = btf.member("task_struct", "comm")!;
        const pid = btf.member("task_struct", "pid")!;
        const tasks = btf.member("task_struct", "tasks")!;
        const initTask = big(e.system_map.init_task) + k.kaslrOffset;
        assert.equal(k.memory!.readCString(initTask + BigInt(comm.offset), 16), "swapper/0");
        const seen: [number, string][] = [];
        let node = k.memory!.readU64(initTask + BigInt(tasks.offset))!;
        for (let i = 0; i < 100000 && node !== initTask + BigInt(tasks.offset); i++) {
          const task = node - BigInt(tasks.offset);
          seen.push([
            k.readU32(task + BigInt(pid.offset))!,
            k.memory!.readCString(task + BigInt(comm.offset), 16)!,
          ]);
          node = k.memory!.readU64(node)!;
          assert.ok(node !== undefined, "list link readable");
        }
        // drgn's list: every task but the per-CPU idle tasks (pid 0) is on init_task.tasks.
        const want = e.tasks.filter((t: { pid: number }) => t.pid !== 0)
          .map((t: { pid: number; comm: string }) => [t.pid, t.comm]);
        const byPid = (x: [number, string], y: [number, string]) => x[0] - y[0];
        assert.deepEqual(seen.sort(byPid), want.sort(byPid));
        assert.ok(seen.some(([p, n]) => p === 1 && n === "init"));

        // What ran on each CPU (per-CPU runqueues) and each CPU's stack (vmalloc'd).
        assert.equal(k.panicCpu, e.crashed_cpu);
        for (const cpu of e.cpus) {
          assert.equal(k.cpuTasks[cpu.cpu].pid, cpu.pid, `cpu ${cpu.cpu} pid`);
          assert.equal(k.cpuTasks[cpu.cpu].comm, cpu.comm);
          const sp = k.dump.cpus[cpu.cpu].registers.get(k.dump.arch === "x86_64" ? "rsp" : "sp")!;
          assert.ok(k.memory!.readU64(sp) !== undefined, `cpu ${cpu.cpu} stack readable`);
        }
      } finally {
        k.close();
      }
    },
  });

  Deno.test({
    name: `real ${c.boot}/${c.file}: fast paths agree with the page-table walk`,
    ignore,
    fn() {
      const { k } = open(c);
      try {
        const mem = k.memory!;
        assert.ok(mem.linear.length >= 2, "direct map and kernel image fast paths");
        let agreed = 0;
        for (const r of mem.linear) {
          const span = r.end - r.start;
          for (let i = 0n; i < 1500n; i++) {
            // Spread over the range, page-aligned plus an in-page offset.
            const va = r.start + ((span * i) / 1500n & ~0xfffn) + (i * 8n) % 4096n;
            const walked = mem.translateByWalk(va);
            if (walked < 0) continue; // holes in the direct map: no RAM there
            assert.equal(mem.translate(va), walked, `${r.name} 0x${va.toString(16)}`);
            agreed++;
          }
        }
        assert.ok(agreed > 1000, `${agreed} addresses compared`);
      } finally {
        k.close();
      }
    },
  });
}

// A live guest keeps its kernel view from stop to stop and calls forgetMemory() at each resume:
// everything read must be read again, and reads must still be right.
Deno.test("real x86_64-6.1: forgetMemory() drops pages, translations and the per-CPU tasks", () => {
  const { b, k } = open({ boot: "x86_64-6.1", file: "dump.elf" });
  try {
    const e = b.expected;
    const mem = k.memory!;
    const cpu = e.cpus[0];
    const sp = k.dump.cpus[cpu.cpu].registers.get("rsp")!;
    const before = mem.readU64(sp);
    const tasks = k.cpuTasks;
    const walks = mem.walks;
    mem.readU64(sp);
    assert.equal(mem.walks, walks, "the second read is a cached translation");
    const pages = k.phys.cache.size;
    assert.ok(pages > 0);

    k.forgetMemory();
    assert.equal(k.phys.cache.size, 0, "no page kept");
    assert.equal(mem.readU64(sp), before, "the same value, read again");
    assert.ok(mem.walks > walks, "translated again by a walk");
    assert.notEqual(k.cpuTasks, tasks, "the per-CPU tasks are read again");
    assert.equal(k.cpuTasks[cpu.cpu].pid, cpu.pid);
    assert.equal(k.cpuTasks[cpu.cpu].comm, cpu.comm);
    // Boot facts stay: the direct map base needs no new read.
    if (e.page_offset_base) assert.equal(k.directMapBase, big(e.page_offset_base));
  } finally {
    k.close();
  }
});
