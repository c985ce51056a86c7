// Tasks and process modes on real dumps, without gdb: the task list, the saved kernel registers
// of sleeping tasks and the user registers of a process against what drgn recorded for each
// fixture; argv, auxv, mappings and memory of the fixture's sleeping process.
import assert from "node:assert/strict";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTasks, taskStateLetter } from "../lib/tasks.ts";
import { tasksTarget } from "../lib/tasks_target.ts";
import { DumpedProcess } from "../lib/process.ts";
import { processTarget } from "../lib/process_target.ts";
import { DumpError } from "../lib/errors.ts";
import { type DumpReader, PageStatus } from "../lib/dump.ts";
import { big, boot, type Expected, hasBoot } from "./fixtures.ts";

interface Case {
  boot: string;
  file: string;
  /** The dump keeps user pages (no makedumpfile -d 8 filtering). */
  user: boolean;
  /**
   * makedumpfile 1.7.2 dropped slab pages of this 6.12 dump: some task_structs are missing (which
   * ones depends on the boot; expected.json's coverage record, from drgn, says).
   */
  defective?: boolean;
}

const cases: Case[] = [
  { boot: "x86_64-6.1", file: "dump.elf", user: true },
  { boot: "x86_64-6.1", file: "dump.zlib-d0.kdump", user: true },
  { boot: "x86_64-6.1", file: "dump.zlib-d31.kdump", user: false },
  { boot: "x86_64-6.1-la57", file: "dump.zlib-d31.kdump", user: false },
  { boot: "x86_64-6.1-la57", file: "dump.elf", user: true },
  { boot: "x86_64-6.12", file: "dump.zlib-d31.kdump", user: false, defective: true },
  { boot: "x86_64-6.12", file: "dump.zlib-d1.kdump", user: true },
  { boot: "x86_64-6.12", file: "dump.elf", user: true },
  { boot: "aarch64-6.1", file: "dump.zlib-d31.kdump", user: false },
  { boot: "aarch64-6.1", file: "dump.elf", user: true },
];

/** drgn's register names → gdb's. */
const GDB_NAME: Record<string, string> = { rflags: "eflags", pstate: "cpsr" };

function open(c: Case): { e: Expected; k: Kernel } {
  const b = boot(c.boot);
  return { e: b.expected, k: new Kernel(openDump([b.path(c.file)]), { vmlinux: b.vmlinux }) };
}

/** Compare user registers with drgn's record (which is pt_regs at the top of the stack). */
function assertUserRegisters(
  got: ReadonlyMap<string, bigint> | undefined,
  want: Record<string, string>,
  what: string,
): void {
  assert.ok(got, `${what}: user registers`);
  // Older fixture records were unwound by drgn 0.0.22, which reports rbp = 0 in the user frame.
  const unwound = want.rip !== undefined && want.orig_rax === undefined;
  for (const [name, value] of Object.entries(want)) {
    if (unwound && name === "rbp") continue;
    const mine = got.get(GDB_NAME[name] ?? name);
    const expected = name === "pstate" ? big(value) & 0xffffffffn : big(value);
    assert.equal(mine, expected, `${what}: ${name}`);
  }
}

for (const c of cases) {
  // Optional boots (arm64, 6.12, la57) are tested when their fixtures were built.
  const ignore = c.boot !== "x86_64-6.1" && !hasBoot(c.boot);
  Deno.test({
    name: `tasks ${c.boot}/${c.file}: the task list equals drgn's`,
    ignore,
    fn() {
      const { e, k } = open(c);
      try {
        const started = performance.now();
        const tasks = new KernelTasks(k);
        const list = tasks.list();
        const ms = performance.now() - started;
        assert.ok(ms < 1000, `listing took ${ms.toFixed(0)} ms`);
        assert.equal(tasks.threadSize.bytes, 16384);
        assert.match(tasks.threadSize.source, /^init_stack\.\.__end_init_(stack|task)$/);

        type Row = [string, number, number, number, string, string, boolean];
        const key = (r: Row) => `${r[0]}`;
        // Which task_structs this dump holds, as drgn read them (the fixture builder makes sure
        // that only dumps with a known defect lack any).
        const cov = e.coverage?.[c.file];
        assert.ok(cov, `expected.json has no coverage record of ${c.file}: rebuild the fixtures`);
        const partial = new Set<string>(cov.partial);
        const mine: Row[] = list.filter((t) => !t.unreadable).map((
          t,
        ) => [
          "0x" + t.address.toString(16),
          t.pid,
          t.tgid,
          t.ppid,
          t.comm,
          t.state,
          t.kernelThread,
        ]);
        const want: Row[] = e.tasks.map((t: Expected) => [
          t.task,
          t.pid,
          t.tgid,
          t.ppid,
          t.comm,
          t.state,
          t.is_kernel_thread,
        ]);
        const sort = (rows: Row[]) => rows.sort((a, b) => key(a).localeCompare(key(b)));
        const listed = new Set(list.map((t) => t.address));
        const complete = cov.unreadable.length + cov.partial.length === 0;
        if (!c.defective || complete) {
          assert.ok(complete, "every task_struct whole");
          assert.deepEqual(sort(mine), sort(want));
          assert.deepEqual(tasks.warnings, []);
        } else {
          // What is listed is right, and every task reachable through the task_structs the dump
          // holds (drgn's count, following the same links) is listed; the IDR may find more.
          const wanted = new Set(want.map((r) => JSON.stringify(r)));
          for (const r of mine) assert.ok(wanted.has(JSON.stringify(r)), `${r}`);
          for (const a of cov.reachable) assert.ok(listed.has(big(a)), `task ${a} listed`);
          if (cov.unreadable.length > 0) {
            assert.match(tasks.warnings[0], /tasks? missing from the task list.*excluded/);
          }
        }

        // Each CPU's idle task and running task.
        const idle = list.filter((t) => t.idleOf !== undefined);
        assert.equal(idle.length, e.cpus.length);
        assert.deepEqual(idle.map((t) => t.comm), e.cpus.map((c: Expected) => `swapper/${c.cpu}`));
        for (const cpu of e.cpus) {
          const t = list.find((t) => t.runningOn === cpu.cpu)!;
          assert.equal(t.address, big(cpu.task), `CPU ${cpu.cpu} runs task ${cpu.task}`);
          assert.equal(t.pid, t.unreadable ? -1 : cpu.pid, `CPU ${cpu.cpu} runs pid ${cpu.pid}`);
        }

        // Sleeping tasks resume where drgn's unwinding starts: every listed one the dump holds
        // whole (all of them, or in the defective dump at least the reachable ones).
        let compared = 0;
        for (const x of e.tasks) {
          const t = list.find((t) => t.address === big(x.task));
          if (!t || partial.has(x.task)) continue; // not in the dump, or only in part
          if (t.runningOn !== undefined || !x.frames?.length) continue;
          const regs = tasks.kernelRegisters(t);
          const pc = regs.get(k.dump.arch === "x86_64" ? "rip" : "pc");
          assert.equal(pc, big(x.frames[0].pc), `pid ${x.pid} ${x.comm}: pc`);
          compared++;
        }
        const sleeping = (x: Expected) => x.on_cpu === null && x.frames?.length > 0;
        const reachable = new Set<string>(cov.reachable ?? e.tasks.map((x: Expected) => x.task));
        const due = e.tasks.filter((x: Expected) => sleeping(x) && reachable.has(x.task));
        assert.ok(compared >= due.length, `${compared} tasks compared, ${due.length} due`);
      } finally {
        k.close();
      }
    },
  });

  // The whole task list and the sleeper's process: not in a dump that lacks task_structs.
  if (c.defective) continue;

  Deno.test({
    name: `tasks ${c.boot}/${c.file}: tasks target threads and registers`,
    ignore,
    fn() {
      const { e, k } = open(c);
      try {
        const target = tasksTarget(k);
        const threads = target.threads();
        assert.equal(threads.length, e.tasks.length);
        const names = threads.map((t) => t.name).sort();
        const want = e.tasks.map((t: Expected) => {
          const comm = t.is_kernel_thread ? `[${t.comm}]` : t.comm;
          const cpu = e.cpus.find((c: Expected) => c.pid === t.pid && t.pid !== 0);
          return `${t.pid} ${comm}${cpu ? ` (CPU ${cpu.cpu})` : ""}`;
        }).sort();
        assert.deepEqual(names, want);
        assert.equal(new Set(threads.map((t) => t.id)).size, threads.length, "unique ids");
        for (const t of threads) assert.ok(t.id > 0);

        // The stop thread is the task that crashed; it has the CPU's registers.
        const crasher = e.console.crasher;
        assert.equal(target.stopThread(), crasher);
        const cpu = e.cpus.find((c: Expected) => c.pid === crasher);
        assert.deepEqual(target.registers(crasher), k.dump.cpus[cpu.cpu].registers);
        // The listener's thread id is its pid; its registers are its saved ones.
        const nc = target.registers(e.console.listener);
        assert.ok(nc.get(k.dump.arch === "x86_64" ? "rsp" : "sp")! >= 0xff00000000000000n);

        const out: string[] = [];
        assert.ok(target.monitor("ps nc", (s) => out.push(s)));
        assert.match(
          out.join(""),
          new RegExp(`^\\s+${e.console.listener}\\s+${e.console.listener}\\s+1\\s.* S .*nc$`, "m"),
        );
      } finally {
        k.close();
      }
    },
  });

  Deno.test({
    name: `process ${c.boot}/${c.file}: registers, argv, auxv, mappings of the sleeper`,
    ignore,
    fn() {
      const { e, k } = open(c);
      try {
        const p = e.process;
        const tasks = new KernelTasks(k);
        const proc = new DumpedProcess(tasks, p.pid);
        assert.equal(proc.mm, big(p.mm));
        assert.equal(proc.pgd, big(p.pgd));
        assert.equal(proc.threads.length, 1);
        assertUserRegisters(tasks.userRegisters(proc.leader), p.user_registers, "sleeper");
        const rip = tasks.userRegisters(proc.leader)!.get(k.dump.arch === "x86_64" ? "rip" : "pc")!;
        assert.ok(rip < 0x800000000000n, "user-mode pc");
        // CPUs' user registers (recorded for the x86_64 6.1 boot).
        for (const cpu of e.cpus) {
          if (!cpu.user_registers) continue;
          const t = tasks.list().find((t) => t.pid === cpu.pid)!;
          assertUserRegisters(tasks.userRegisters(t), cpu.user_registers, `CPU ${cpu.cpu}`);
        }

        // auxv: the saved vector up to and including AT_NULL.
        const auxv = proc.auxv()!;
        assert.equal(auxv.length, p.saved_auxv_len);
        const v = new DataView(auxv.buffer, auxv.byteOffset, auxv.byteLength);
        p.saved_auxv.forEach(([type, value]: [number, string], i: number) => {
          assert.equal(v.getBigUint64(i * 16, true), BigInt(type));
          assert.equal(v.getBigUint64(i * 16 + 8, true), big(value));
        });

        // Mappings from the maple tree, and the executable's path.
        const vmas = proc.vmas();
        assert.deepEqual(
          vmas.map((m) => [m.start, m.end, m.flags]),
          p.vmas.map((m: Expected) => [big(m.start), big(m.end), big(m.flags)]),
        );
        assert.deepEqual(vmas.map((m) => m.file ?? null), p.vmas.map((m: Expected) => m.file));
        assert.equal(proc.loadAddress(), big(p.exe_start));
        assert.equal(proc.exePath(), "/bin/busybox");

        const target = processTarget(k, p.pid, {}, tasks);
        assert.deepEqual(target.auxv(), auxv);
        assert.equal(target.threads()[0].name, `${p.pid} ${p.comm}`);
        const argStart = big(p.arg_start);
        const r = target.readMemory(argStart, Number(big(p.arg_end) - argStart));
        if (c.user) {
          assert.deepEqual(proc.argv(), p.argv);
          assert.equal(r.error, undefined);
          assert.equal(new TextDecoder().decode(r.data).split("\0")[0], p.argv0);
        } else {
          // makedumpfile -d 31 dropped user pages: a clear error, no exception.
          assert.equal(r.data.length, 0);
          assert.match(r.error!, /excluded/);
        }
        // Kernel addresses still read through the kernel's tables.
        const init = big(e.system_map.init_task) + k.kaslrOffset;
        assert.equal(target.readMemory(init, 64).error, undefined);
      } finally {
        k.close();
      }
    },
  });
}

/** A dump reader that answers "excluded" for some pages, as a filtered dump would. */
function withoutPages(dump: DumpReader, pfns: Set<number>): DumpReader {
  return new Proxy(dump, {
    get(target, key) {
      if (key === "readPage") {
        return (pfn: number, out: Uint8Array) =>
          pfns.has(pfn) ? PageStatus.Excluded : target.readPage(pfn, out);
      }
      if (key === "readDirect") return undefined; // every read goes through readPage
      const value = Reflect.get(target, key);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

Deno.test("tasks: a CPU's task whose task_struct is not in the dump stays a thread", () => {
  // The real 6.1 dump, with the pages of the crashed task's task_struct filtered out (as
  // makedumpfile 1.7.2 does at random on 6.10+ kernels).
  const b = boot("x86_64-6.1");
  const e = b.expected;
  const crashed = e.cpus.find((c: Expected) => c.cpu === e.crashed_cpu);
  const whole = new Kernel(openDump([b.path("dump.zlib-d31.kdump")]), { vmlinux: b.vmlinux });
  const pfns = new Set<number>();
  try {
    // The pages of the fields the task list reads (tasks … comm), not the neighbours' fields.
    const btf = whole.btf!;
    const from = big(crashed.task) + BigInt(btf.member("task_struct", "tasks")!.offset);
    const comm = btf.member("task_struct", "comm")!;
    const to = big(crashed.task) + BigInt(comm.offset + comm.size);
    for (let va = from & ~0xfffn; va < to; va += 4096n) {
      pfns.add(Math.floor(whole.memory!.translate(va) / 4096));
    }
  } finally {
    whole.close();
  }
  const k = new Kernel(withoutPages(openDump([b.path("dump.zlib-d31.kdump")]), pfns), {
    vmlinux: b.vmlinux,
  });
  try {
    const target = tasksTarget(k);
    const threads = target.threads();
    const stop = threads.find((t) => t.id === target.stopThread())!;
    assert.equal(
      stop.name,
      `task ${crashed.task} (CPU ${crashed.cpu}; task_struct not in the dump)`,
    );
    assert.deepEqual(target.registers(stop.id), k.dump.cpus[crashed.cpu].registers);
    assert.match(target.warnings.join("\n"), /1 task missing from the task list.*excluded/);
    // Every other task is still found (through the list the other way round, or the pid IDR).
    assert.equal(threads.length, e.tasks.length);
    const names = new Set(threads.map((t) => t.name));
    for (const t of e.tasks) {
      if (t.pid === crashed.pid) continue;
      const comm = t.is_kernel_thread ? `[${t.comm}]` : t.comm;
      const cpu = e.cpus.find((c: Expected) => c.pid === t.pid && t.pid !== 0);
      assert.ok(names.has(`${t.pid} ${comm}${cpu ? ` (CPU ${cpu.cpu})` : ""}`), `${t.pid}`);
    }
  } finally {
    k.close();
  }
});

Deno.test("tasks target: prepare() reads every task's registers ahead, the same as on demand", () => {
  const b = boot("x86_64-6.1");
  const open = () => new Kernel(openDump([b.path("dump.zlib-d31.kdump")]), { vmlinux: b.vmlinux });
  const k1 = open();
  const k2 = open();
  try {
    const ahead = tasksTarget(k1);
    const lazy = tasksTarget(k2);
    let calls = 0;
    while (ahead.prepare(0)) calls++;
    // A zero budget still moves on by one task per call: nothing can stall the idle loop.
    assert.equal(calls, ahead.threads().length - 1);
    assert.equal(ahead.prepare(5), false);
    const decoded = k1.phys.cache.misses;
    for (const t of lazy.threads()) {
      assert.deepEqual(ahead.registers(t.id), lazy.registers(t.id), t.name);
    }
    assert.equal(k1.phys.cache.misses, decoded, "nothing left to read after prepare()");
  } finally {
    k1.close();
    k2.close();
  }
});

Deno.test("process mode refuses kernel threads and unknown pids with one-line errors", () => {
  const b = boot("x86_64-6.1");
  const k = new Kernel(openDump([b.path("dump.zlib-d31.kdump")]), { vmlinux: b.vmlinux });
  try {
    assert.throws(() => processTarget(k, 2), (e: Error) => {
      assert.ok(e instanceof DumpError);
      assert.match(e.message, /process 2: kthreadd is a kernel thread/);
      return true;
    });
    assert.throws(() => processTarget(k, 99999), /process 99999: no task with this pid/);
  } finally {
    k.close();
  }
});

Deno.test("tasks mode without a vmlinux: BTF and kallsyms of the dump itself", () => {
  const b = boot("x86_64-6.1");
  const k = new Kernel(openDump([b.path("dump.zlib-d31.kdump")]));
  try {
    const names = tasksTarget(k).threads().map((t) => t.name);
    assert.equal(names.length, b.expected.tasks.length);
    assert.ok(names.includes(`${b.expected.console.listener} nc`));
    // Without any type information the error says what to give.
    const blind = new Proxy(k, {
      get: (target, key) => (key === "btf" ? undefined : Reflect.get(target, key)),
    });
    assert.throws(() => tasksTarget(blind), /task list: no kernel type information.*--vmlinux/);
  } finally {
    k.close();
  }
});

Deno.test("task state letters follow the kernel's task_state_index", () => {
  assert.equal(taskStateLetter(0, 0), "R");
  assert.equal(taskStateLetter(1, 0), "S");
  assert.equal(taskStateLetter(2, 0), "D");
  assert.equal(taskStateLetter(0x402, 0), "I"); // TASK_IDLE
  assert.equal(taskStateLetter(0x2002, 0), "D"); // TASK_FREEZABLE | TASK_UNINTERRUPTIBLE
  assert.equal(taskStateLetter(4, 0), "T");
  assert.equal(taskStateLetter(8, 0), "t");
  assert.equal(taskStateLetter(0x80, 0x20), "Z"); // TASK_DEAD with EXIT_ZOMBIE
  assert.equal(taskStateLetter(0x80, 0x10), "X");
  assert.equal(taskStateLetter(0x40, 0), "P");
  assert.equal(taskStateLetter(0x1000, 0), "D"); // TASK_RTLOCK_WAIT
});
