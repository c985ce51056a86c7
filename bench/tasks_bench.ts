/**
 * Task list speed on the real fixtures (one iteration reads every task_struct again through a
 * warm page cache; divide by the task count for the cost per task):
 *   deno bench --allow-read --allow-env bench/tasks_bench.ts
 * gdb's side of thousands of threads is measured by bench/tasks_threads.ts.
 */

import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTasks } from "../lib/tasks.ts";
import { boot, hasBoot } from "../tests/fixtures.ts";

for (
  const [name, file] of [["x86_64-6.1", "dump.zlib-d31.kdump"], [
    "aarch64-6.1",
    "dump.zlib-d31.kdump",
  ]]
) {
  if (!hasBoot(name)) continue;
  const b = boot(name);
  const kernel = new Kernel(openDump([b.path(file)]), { vmlinux: b.vmlinux });
  const count = new KernelTasks(kernel).list().length;
  Deno.bench({
    name: `${name}: list ${count} tasks`,
    group: "tasks",
    fn: () => {
      new KernelTasks(kernel).list();
    },
  });
}
