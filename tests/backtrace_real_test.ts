// Kernel backtraces from the dump alone (lib/backtrace.ts) on real dumps: the panic CPU's frames
// against the kernel's own Call Trace printed on the guest's serial console (frames, offsets and
// the user registers it printed), and every CPU and every task against drgn's unwind with the
// debug vmlinux (expected.json, recorded by the fixture script).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTasks } from "../lib/tasks.ts";
import { type Backtrace, formatBacktrace, kernelBacktrace } from "../lib/backtrace.ts";
import { big, boot, type Expected, hasBoot } from "./fixtures.ts";
import { consoleCallTrace } from "./console_trace.ts";

interface Case {
  boot: string;
  file: string;
  /** Give the debug vmlinux (symbols then still come from the dump's kallsyms). */
  vmlinux: boolean;
}

const cases: Case[] = [
  { boot: "x86_64-6.1", file: "dump.zlib-d31.kdump", vmlinux: false },
  { boot: "x86_64-6.1", file: "dump.elf", vmlinux: true },
  { boot: "x86_64-6.1-la57", file: "dump.zlib-d31.kdump", vmlinux: false },
  { boot: "x86_64-6.12", file: "dump.zlib-d1.kdump", vmlinux: false },
  { boot: "x86_64-6.12", file: "dump.elf", vmlinux: true },
  { boot: "aarch64-6.1", file: "dump.zlib-d31.kdump", vmlinux: true },
  { boot: "aarch64-6.1", file: "dump.elf", vmlinux: true },
  { boot: "aarch64-6.1", file: "dump.qemu-kdump-zlib.flat", vmlinux: false },
  { boot: "aarch64-6.12", file: "dump.qemu-kdump-zlib.flat", vmlinux: false },
  { boot: "aarch64-6.12", file: "dump.elf", vmlinux: true },
];

function open(c: Case): { e: Expected; k: Kernel; log: string } {
  const b = boot(c.boot);
  const k = new Kernel(openDump([b.path(c.file)]), c.vmlinux ? { vmlinux: b.vmlinux } : {});
  return { e: b.expected, k, log: readFileSync(b.path("console.log"), "utf8") };
}

/** drgn's frames without the inlined ones: one per real stack frame, with its pc. */
function drgnPcs(frames: { pc: string; inline: boolean; symbol: string }[]): bigint[] {
  return frames.filter((f) => !f.inline).map((f) => big(f.pc));
}

function describe(bt: Backtrace): string {
  return formatBacktrace(bt).join("\n");
}

for (const c of cases) {
  const ignore = !hasBoot(c.boot);
  const label = `${c.boot} ${c.file}${c.vmlinux ? " (vmlinux)" : ""}`;

  Deno.test({
    name: `backtrace: ${label}: panic CPU = the kernel's Call Trace on the console`,
    ignore,
    fn() {
      const { e, k, log } = open(c);
      try {
        const cpu = e.crashed_cpu as number;
        const bt = kernelBacktrace(k, k.dump.cpus[cpu].registers, { cpu });
        const ours = bt.frames.map((f) => f.text);
        const trace = consoleCallTrace(log);
        // The console printed the trace from inside panic(); the dump was taken later, with
        // panic() looping in its delay. From the frame that called panic on, both must agree.
        const from = (list: string[]) =>
          list.slice(list.findIndex((t) => t.startsWith("panic+")) + 1);
        const want = from(trace.frames);
        assert.ok(want.length >= 8, `console trace ${trace.frames}`);
        assert.deepEqual(from(ours).slice(0, want.length), want, describe(bt));
        assert.ok(ours.some((t) => t.startsWith("panic+")), describe(bt));
        assert.equal(bt.stopReason, undefined, describe(bt));
        assert.ok(bt.frames.every((f) => f.reliable));
        // It ends at the syscall entry with the user registers.
        assert.equal(ours.at(-1), trace.frames.at(-1));
        const last = bt.frames.at(-1)!;
        assert.equal(last.boundary?.kind, "syscall");
        assert.equal(last.boundary?.userMode, true);
        assert.equal(bt.user, last.boundary?.regs);
        if (k.dump.arch === "x86_64") {
          // The register lines as the kernel printed them under its trace.
          const printed = formatBacktrace(bt).filter((l) => /^R(IP|SP|AX|DX|BP|10|13): /.test(l));
          assert.deepEqual(printed, trace.registers);
        }
      } finally {
        k.close();
      }
    },
  });

  Deno.test({
    name: `backtrace: ${label}: every CPU and every task agree with drgn`,
    ignore,
    fn() {
      const { e, k } = open(c);
      try {
        for (const cpu of e.cpus) {
          const bt = kernelBacktrace(k, k.dump.cpus[cpu.cpu].registers, { cpu: cpu.cpu });
          const want = drgnPcs(cpu.frames);
          const got = bt.frames.map((f) => f.pc);
          // drgn stops on arm64's IRQ stack (do_interrupt_handler); we go on to the task stack.
          assert.deepEqual(got.slice(0, want.length), want, `CPU ${cpu.cpu}:\n${describe(bt)}`);
          if (k.dump.arch === "x86_64") assert.equal(got.length, want.length, describe(bt));
        }
        const tasks = new KernelTasks(k);
        let compared = 0;
        for (const t of e.tasks) {
          if (t.stack_error || !t.frames?.length) continue;
          const task = tasks.byAddress(big(t.task));
          assert.ok(task, `task ${t.pid} ${t.comm}`);
          const bt = kernelBacktrace(k, tasks.kernelRegisters(task), {
            task: task.address,
            cpu: task.runningOn,
          });
          const want = drgnPcs(t.frames);
          const got = bt.frames.map((f) => f.pc);
          const what = `${t.pid} ${t.comm}:\n${describe(bt)}`;
          assert.deepEqual(got.slice(0, want.length), want, what);
          if (k.dump.arch === "x86_64") {
            assert.equal(got.length, want.length, what);
            assert.equal(bt.stopReason, undefined, what);
          }
          if (!t.is_kernel_thread && task.runningOn === undefined) {
            // A sleeping user task's walk ends at the pt_regs drgn read at the stack's top.
            assert.equal(
              bt.user?.get("rip") ?? bt.user?.get("pc"),
              big(t.user_registers.rip ?? t.user_registers.pc),
              what,
            );
          }
          compared++;
        }
        assert.ok(compared >= 20, `compared ${compared} tasks`);
      } finally {
        k.close();
      }
    },
  });
}

// Edge case on real data: a kdump taken by NMI records, for a CPU in user mode, only its user
// registers. Give CPU 0 of the x86_64 dumps exactly that (the user registers drgn read from the
// pt_regs at the top of its task's stack, where the reboot IPI from user mode left them): the
// kernel frames must still be found, ending with drgn's frames of that CPU.
for (const name of ["x86_64-6.1", "x86_64-6.12"]) {
  Deno.test({
    name:
      `backtrace: ${name}: a CPU whose saved registers are user mode still shows its kernel frames`,
    ignore: !hasBoot(name),
    fn() {
      const b = boot(name);
      const e = b.expected;
      const file = name === "x86_64-6.12" ? "dump.zlib-d1.kdump" : "dump.zlib-d31.kdump";
      const k = new Kernel(openDump([b.path(file)]));
      try {
        const cpu = e.cpus.find((c: { cpu: number }) => c.cpu !== e.crashed_cpu);
        const task = e.tasks.find((t: { task: string }) => t.task === cpu.task);
        const user = new Map<string, bigint>();
        for (const [n, v] of Object.entries(task.user_registers as Record<string, string>)) {
          user.set(n === "rflags" ? "eflags" : n, big(v));
        }
        const bt = kernelBacktrace(k, user, { cpu: cpu.cpu });
        const want = drgnPcs(cpu.frames).slice(1); // the callers of the halted function
        const got = bt.frames.map((f) => f.pc);
        const at = got.indexOf(want[0]);
        assert.ok(at >= 1, describe(bt));
        assert.deepEqual(got.slice(at), want, describe(bt));
        assert.equal(bt.frames[0].reliable, false);
        assert.ok(bt.note, describe(bt));
        assert.equal(bt.user?.get("rip"), user.get("rip"));
        assert.equal(bt.frames.at(-1)?.boundary?.kind, "interrupt");
      } finally {
        k.close();
      }
    },
  });
}
