// A kernel whose kallsyms lacks data symbols (Debian arm64 6.1, no CONFIG_KALLSYMS_ALL), without
// a vmlinux: BTF, init_task and the runqueues are found by validated searches of the dump
// (lib/kernel_search.ts), and then the task list equals drgn's (made with the debug vmlinux),
// init_task is System.map's, the panic CPU's backtrace is the console's Call Trace, and the
// banner and ps say how init_task was found.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { openDump, openSource } from "../lib/open_dump.ts";
import { MemorySource } from "../lib/file_source.ts";
import { Buffer } from "node:buffer";
import { Kernel } from "../lib/kernel.ts";
import { KernelTasks } from "../lib/tasks.ts";
import { KernelTarget, systemSummary } from "../lib/kernel_target.ts";
import { formatBacktrace, kernelBacktrace } from "../lib/backtrace.ts";
import { big, boot, hasBoot } from "./fixtures.ts";
import { consoleCallTrace } from "./console_trace.ts";

for (const file of ["dump.zlib-d31.kdump", "dump.elf"]) {
  Deno.test({
    name: `no data symbols, no vmlinux: aarch64-6.1 ${file}: tasks, ps and bt by search`,
    ignore: !hasBoot("aarch64-6.1"),
    fn() {
      const b = boot("aarch64-6.1");
      const e = b.expected;
      const k = new Kernel(openDump([b.path(file)]));
      try {
        // The premise: kallsyms has no data symbols here.
        assert.equal(k.kallsyms()?.get("init_task"), undefined);
        assert.match(k.typeSource, /BTF found in the dump/);
        const init = big(e.system_map.init_task) + big(e.kaslr_offset);
        assert.equal(k.symbol("init_task"), init);
        assert.match(k.foundBySearch.join("\n"), /init_task at 0x[0-9a-f]+: found by a search/);
        const tasks = new KernelTasks(k);
        const mine = tasks.list().map((t) => [t.pid, t.tgid, t.ppid, t.comm, t.state, t.address])
          .sort((x, y) =>
            (x[0] as number) - (y[0] as number) || String(x[3]).localeCompare(String(y[3]))
          );
        const drgn = e.tasks.map((t: Record<string, unknown>) => [
          t.pid,
          t.tgid,
          t.ppid,
          t.comm,
          t.state,
          big(t.task as string),
        ]).sort((x: unknown[], y: unknown[]) =>
          (x[0] as number) - (y[0] as number) || String(x[3]).localeCompare(String(y[3]))
        );
        assert.deepEqual(mine, drgn);
        for (const c of e.cpus) assert.equal(k.cpuTasks[c.cpu].pid, c.pid);
        // The banner and ps say so.
        const target = new KernelTarget(k);
        assert.match(systemSummary(k).join("\n"), /found: +init_task at 0x/);
        let ps = "";
        assert.ok(target.monitor!("ps", (t) => ps += t));
        assert.match(ps, /note: init_task at 0x[0-9a-f]+: found by a search/);
        assert.match(ps, / crasher\.sh\n/);
        // bt of the panic CPU = the kernel's Call Trace, from the dump alone.
        const cpu = e.crashed_cpu as number;
        const bt = kernelBacktrace(k, k.dump.cpus[cpu].registers, { cpu });
        const want = consoleCallTrace(readFileSync(b.path("console.log"), "utf8")).frames;
        const ours = bt.frames.map((f) => f.text);
        const from = (l: string[]) => l.slice(l.findIndex((t) => t.startsWith("panic+")) + 1);
        assert.deepEqual(from(ours), from(want), formatBacktrace(bt).join("\n"));
        // The other CPU, on its IRQ stack, reaches its task's stack and the user boundary.
        const other = e.cpus.find((c: { cpu: number }) => c.cpu !== cpu);
        const bt0 = kernelBacktrace(k, k.dump.cpus[other.cpu].registers, { cpu: other.cpu });
        assert.equal(bt0.stopReason, undefined, formatBacktrace(bt0).join("\n"));
        assert.equal(bt0.frames.at(-1)?.boundary?.userMode, true);
        // Per-CPU variables are placed from the found runqueues and BTF's .data..percpu: the
        // same addresses as the vmlinux's symbols and __per_cpu_offset give; so the IRQ stack
        // the other CPU stopped on is known and checked.
        const withVmlinux = new Kernel(openDump([b.path(file)]), { vmlinux: b.vmlinux });
        try {
          for (const v of ["runqueues", "irq_stack_ptr", "overflow_stack", "kernel_cpustat"]) {
            for (const c of e.cpus) {
              assert.equal(k.perCpu(v, c.cpu), withVmlinux.perCpu(v, c.cpu), `${v} of ${c.cpu}`);
            }
          }
        } finally {
          withVmlinux.close();
        }
        assert.equal(bt0.frames[0].stack, "IRQ");
        assert.equal(bt0.frames.at(-1)?.stack, "TASK");
      } finally {
        k.close();
      }
    },
  });
}

Deno.test({
  name: "a kallsyms table that decodes to garbage is called so, not a kernel without data symbols",
  ignore: !hasBoot("x86_64-6.1"),
  fn() {
    const b = boot("x86_64-6.1");
    const bytes = readFileSync(b.path("dump.zlib-d31.kdump"));
    const open = (data: Uint8Array) => new Kernel(openSource(new MemorySource("mutated", data)));
    // The control: the untouched dump's kallsyms decodes, and leads to its BTF.
    const good = open(bytes);
    try {
      assert.match(good.typeSource, /^BTF and kallsyms found in the dump/);
    } finally {
      good.close();
    }
    // VMCOREINFO's kallsyms_token_index moved by one page: every name decodes wrong.
    const key = "SYMBOL(kallsyms_token_index)=";
    const at = Buffer.from(bytes).indexOf(key) + key.length;
    assert.ok(at > key.length);
    const digits = new TextDecoder().decode(bytes.subarray(at, at + 16));
    const moved = (BigInt(`0x${digits}`) + 0x1000n).toString(16).padStart(16, "0");
    const mutated = Uint8Array.from(bytes);
    mutated.set(new TextEncoder().encode(moved), at);
    const bad = open(mutated);
    try {
      assert.match(
        bad.typeSource,
        /^none: no vmlinux given, and the dump's kallsyms does not decode: it (has no _stext|puts _stext at 0x[0-9a-f]+), VMCOREINFO at 0x[0-9a-f]+$/,
      );
    } finally {
      bad.close();
    }
  },
});
