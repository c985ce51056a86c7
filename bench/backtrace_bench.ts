/**
 * Kernel backtrace speed on the real fixtures (lib/backtrace.ts):
 *   deno bench --allow-read --allow-env bench/backtrace_bench.ts
 * - "cold": open the dump (no vmlinux), then the panic CPU's backtrace: everything the first `bt`
 *   of a session costs (kallsyms decode, ORC tables, page cache misses), minus opening the file;
 * - "one task": the same for a sleeping task (its registers from its switch frame);
 * - "first": only the first backtrace after the dump was opened (what a `bt` costs once the
 *   server runs: its ORC tables and the stack pages are still cold);
 * - "bta": every task of the 5000-task fixture (x86_64-6.1-tasks), warm.
 */

import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTasks } from "../lib/tasks.ts";
import { kernelBacktrace } from "../lib/backtrace.ts";
import { boot, hasBoot } from "../tests/fixtures.ts";

for (
  const [name, file] of [["x86_64-6.1", "dump.zlib-d31.kdump"], [
    "aarch64-6.1",
    "dump.zlib-d31.kdump",
  ]]
) {
  if (!hasBoot(name)) continue;
  const b = boot(name);
  const path = b.path(file);
  Deno.bench({
    name: `${name}: cold: open + bt of the panic CPU`,
    group: "bt cold",
    fn: () => {
      const k = new Kernel(openDump([path]));
      const cpu = b.expected.crashed_cpu;
      const bt = kernelBacktrace(k, k.dump.cpus[cpu].registers, { cpu });
      if (bt.frames.length < 10) throw new Error("short backtrace");
      k.close();
    },
  });
  const first = new Kernel(openDump([path]));
  const sleeper = new KernelTasks(first).list().find((t) => t.comm === "sleep")!;
  first.close();
  Deno.bench({
    name: `${name}: first bt after opening (sleeping task)`,
    group: "bt first",
    fn: (t) => {
      const k = new Kernel(openDump([path]));
      const tasks = new KernelTasks(k);
      t.start();
      const bt = kernelBacktrace(k, tasks.kernelRegisters(sleeper), { task: sleeper.address });
      t.end();
      if (bt.frames.length < 8) throw new Error("short backtrace");
      k.close();
    },
  });
  Deno.bench({
    name: `${name}: first bt after opening (panic CPU)`,
    group: "bt first",
    fn: (t) => {
      const k = new Kernel(openDump([path]));
      const cpu = b.expected.crashed_cpu;
      t.start();
      kernelBacktrace(k, k.dump.cpus[cpu].registers, { cpu });
      t.end();
      k.close();
    },
  });
  Deno.bench({
    name: `${name}: cold: open + bt of one sleeping task`,
    group: "bt one",
    fn: () => {
      const k = new Kernel(openDump([path]));
      const tasks = new KernelTasks(k);
      const bt = kernelBacktrace(k, tasks.kernelRegisters(sleeper), { task: sleeper.address });
      if (bt.frames.length < 8) throw new Error("short backtrace");
      k.close();
    },
  });
}

if (hasBoot("x86_64-6.1-tasks")) {
  const b = boot("x86_64-6.1-tasks");
  const k = new Kernel(openDump([b.path("dump.zlib-d31.kdump")]));
  const tasks = new KernelTasks(k);
  const all = tasks.list();
  Deno.bench({
    name: `x86_64-6.1-tasks: bta (${all.length} tasks)`,
    group: "bta",
    n: 5,
    fn: () => {
      let frames = 0;
      for (const t of all) {
        frames += kernelBacktrace(k, tasks.kernelRegisters(t), {
          task: t.address,
          cpu: t.runningOn,
        }).frames.length;
      }
      if (frames < all.length * 5) throw new Error(`only ${frames} frames`);
    },
  });
}
