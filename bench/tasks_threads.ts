/**
 * `info threads` in gdb with thousands of task threads: the real tasks of the x86_64-6.1
 * fixture repeated until there are N threads (each with its real saved registers and stack), so
 * gdb fetches registers and unwinds frame 0 of every one, as with a big real system:
 *   deno run -A bench/tasks_threads.ts [N=5000] [GDB_COMMAND="info threads"]
 * Prints the wall time of the whole gdb run (which includes gdb loading the vmlinux, about
 * 1.5 s here: compare with N=100) and gdb's own CPU time.
 */

import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTasks } from "../lib/tasks.ts";
import { TasksTarget, type TaskThread } from "../lib/tasks_target.ts";
import { serveTcp } from "../lib/transport.ts";
import { boot } from "../tests/fixtures.ts";

const count = Number(Deno.args[0] ?? 5000);
const command = Deno.args[1] ?? "info threads";
const b = boot("x86_64-6.1");
const kernel = new Kernel(openDump([b.path("dump.zlib-d31.kdump")]), { vmlinux: b.vmlinux });
const tasks = new KernelTasks(kernel);
const list = tasks.list();
const threads: TaskThread[] = [];
for (let i = 0; i < count; i++) {
  const t = list[i % list.length];
  threads.push({
    info: { id: i + 1, name: `${100000 + i} ${t.comm}`, extra: `${t.state}, task 0x0` },
    registers: () => tasks.kernelRegisters(t),
    ps: { pid: t.tgid, tid: t.pid, comm: t.comm },
  });
}
const server = await serveTcp(new TasksTarget(kernel, threads, "synthetic"), {
  port: 0,
  log: () => {},
});
const started = performance.now();
const out = await new Deno.Command("/usr/bin/time", {
  args: [
    "-f",
    "gdb CPU %U s user, %S s system",
    "gdb",
    "-nx",
    "-batch",
    "-ex",
    `target remote 127.0.0.1:${server.port}`,
    "-ex",
    command,
  ],
  stdout: "piped",
  stderr: "piped",
}).output();
const seconds = (performance.now() - started) / 1000;
const lines = new TextDecoder().decode(out.stdout).split("\n").length;
const cpu = new TextDecoder().decode(out.stderr).split("\n").find((l) => l.startsWith("gdb CPU"));
console.log(`${count} threads, "${command}": ${seconds.toFixed(1)} s, ${lines} lines; ${cpu}`);
await server.close();
kernel.close();
