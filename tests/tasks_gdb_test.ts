// Tasks and process modes with real gdb on real dumps: every task's backtrace in `--tasks` mode
// against drgn's; the gdb script (cli/gdb/kdump.py) in a kernel-mode session, its JSON files
// served back with -k and -j; `--pid` mode with auxv and user memory.
import assert from "node:assert/strict";
import { join } from "node:path";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTarget } from "../lib/kernel_target.ts";
import { tasksTarget } from "../lib/tasks_target.ts";
import { processTarget } from "../lib/process_target.ts";
import { targetFromProcessJson, targetFromTasksJson } from "../lib/tasks_json.ts";
import { serveTcp } from "../lib/transport.ts";
import type { Target } from "../lib/target.ts";
import { big, boot, type Expected, hasBoot } from "./fixtures.ts";
import { runGdb } from "./gdb_helpers.ts";

const KDUMP_PY = new URL("../cli/gdb/kdump.py", import.meta.url).pathname;

interface Case {
  boot: string;
  /** Dump for kernel, tasks and -k sessions. */
  kernelDump: string;
  /** Dump with user pages for process sessions. */
  userDump: string;
  gdb: string;
}

const cases: Case[] = [
  {
    boot: "x86_64-6.1",
    kernelDump: "dump.zlib-d31.kdump",
    userDump: "dump.zlib-d0.kdump",
    gdb: "gdb",
  },
  {
    boot: "x86_64-6.12",
    kernelDump: "dump.zlib-d1.kdump",
    userDump: "dump.zlib-d1.kdump",
    gdb: "gdb",
  },
  {
    boot: "aarch64-6.1",
    kernelDump: "dump.zlib-d31.kdump",
    userDump: "dump.elf",
    gdb: "gdb-multiarch",
  },
];

function have(command: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${command}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Serve a target on an ephemeral port for the length of `body`. */
async function serving<T>(target: Target, body: (remote: string) => Promise<T>): Promise<T> {
  const log: string[] = [];
  const server = await serveTcp(target, { port: 0, log: (l) => log.push(l) });
  try {
    return await body(`target remote 127.0.0.1:${server.port}`);
  } finally {
    await server.close();
  }
}

async function gdb(c: Case, commands: string[]): Promise<string> {
  const r = await runGdb(commands, { gdb: c.gdb, timeoutMs: 120_000 });
  return r.out;
}

/** Backtrace function names per thread name, from `thread apply all bt`. */
function backtraces(out: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const section of out.split(/\n(?=Thread \d+ \(Thread )/)) {
    const m = section.match(/^Thread \d+ \(Thread \d+ "([^"]*)"/);
    if (!m) continue;
    const funcs: string[] = [];
    for (const line of section.split("\n")) {
      const f = line.match(/^#\d+\s+(?:0x[0-9a-f]+ in )?(\S+) \(/);
      if (f) funcs.push(f[1]);
    }
    map.set(m[1], funcs);
  }
  return map;
}

/**
 * drgn's stack is in gdb's, in order (gdb also shows some frames drgn skips). `truncated`
 * allows gdb to stop early: a filtered dump may lack the boot code frames of an idle task, and
 * gdb does not follow arm64's switch from the IRQ stack (running tasks: the CPU's registers).
 */
function isSubsequence(want: string[], got: string[], truncated = false): boolean {
  let i = 0;
  for (const f of got) if (i < want.length && f === want[i]) i++;
  return i === want.length || (truncated && i >= want.length - 3 && i === got.length);
}

function threadName(t: Expected, e: Expected): string {
  const comm = t.is_kernel_thread ? `[${t.comm}]` : t.comm;
  const cpu = e.cpus.find((c: Expected) => c.pid === t.pid && t.pid !== 0);
  return `${t.pid} ${comm}${cpu ? ` (CPU ${cpu.cpu})` : ""}`;
}

/** Every task's backtrace in gdb holds the functions drgn found, in order. */
function assertBacktraces(out: string, e: Expected, label: string): void {
  const bts = backtraces(out);
  assert.equal(bts.size, e.tasks.length, `${label}: one backtrace per task\n${out.slice(-3000)}`);
  let compared = 0;
  for (const t of e.tasks) {
    const name = threadName(t, e);
    const got = bts.get(name);
    assert.ok(got, `${label}: thread "${name}"`);
    if (!t.stack?.length) continue;
    assert.ok(
      isSubsequence(t.stack, got, t.pid === 0 || t.on_cpu !== null),
      `${label}: ${name}\n gdb:  ${got}\n drgn: ${t.stack}`,
    );
    compared++;
  }
  assert.ok(compared >= e.tasks.length - 1, `${label}: ${compared} backtraces compared`);
  const listener = bts.get(`${e.console.listener} nc`)!;
  assert.ok(listener.includes("inet_csk_accept"), `${label}: listener in inet_csk_accept`);
  const fifo = bts.get(`${e.console.fifo} cat`)!;
  assert.ok(fifo.includes("wait_for_partner") && fifo.includes("fifo_open"), `${label}: fifo`);
}

for (const c of cases) {
  const ignore = (c.boot !== "x86_64-6.1" && !hasBoot(c.boot)) || !have(c.gdb);
  const b = hasBoot(c.boot) ? boot(c.boot) : undefined;

  Deno.test({
    name: `gdb --tasks ${c.boot}: every task a thread, backtraces as drgn found them`,
    ignore,
    async fn() {
      const e = b!.expected;
      const k = new Kernel(openDump([b!.path(c.kernelDump)]), { vmlinux: b!.vmlinux });
      try {
        const out = await serving(
          tasksTarget(k),
          (remote) => gdb(c, [remote, "info threads", "thread apply all bt", "monitor ps nc"]),
        );
        assertBacktraces(out, e, "--tasks");
        // The crashed task is the selected thread, shown with its CPU.
        const crasher = e.tasks.find((t: Expected) => t.pid === e.console.crasher);
        assert.ok(out.includes(`Thread ${crasher.pid} "${threadName(crasher, e)}"`), out);
        assert.match(out, new RegExp(`\\n\\* \\d+ +Thread ${crasher.pid} `));
        assert.match(
          out,
          new RegExp(`^ +${e.console.listener} +${e.console.listener} .* nc$`, "m"),
        );
      } finally {
        k.close();
      }
    },
  });

  Deno.test({
    name: `gdb script ${c.boot}: kdump-kernel-ps and JSON files, served back with -k and -j`,
    ignore,
    async fn() {
      const e = b!.expected;
      const dir = await Deno.makeTempDir({ prefix: "kdump_py_" });
      const kernelJson = join(dir, "tasks.json");
      const processJson = join(dir, "process.json");
      const k = new Kernel(openDump([b!.path(c.kernelDump)]), { vmlinux: b!.vmlinux });
      try {
        const out = await serving(new KernelTarget(k), (remote) =>
          gdb(c, [
            remote,
            `source ${KDUMP_PY}`,
            "kdump-kernel-ps",
            `kdump-save-kernel-json ${kernelJson}`,
            `kdump-save-process-json ${processJson} ${e.process.pid}`,
            "kdump-save-process-json /dev/null 2",
          ]));
        // ps: UID PID PPID LWP COMM ADDRESS, one line per task.
        assert.match(out, /UID +PID +PPID +LWP +COMM +ADDRESS/);
        for (const t of e.tasks) {
          const comm = t.is_kernel_thread ? `[${t.comm}]` : t.comm;
          const line = new RegExp(
            `^[ >] +0 +${t.tgid} +${t.ppid} +${t.pid} +${escape(comm)} +${t.task}$`,
            "m",
          );
          assert.match(out, line, `ps line of ${t.pid} ${t.comm}`);
        }
        assert.match(out, new RegExp(`${e.tasks.length} tasks saved to`));
        assert.match(out, /kthreadd is a kernel thread|2 \(kthreadd\) is a kernel thread/);

        // The kernel JSON: drgn's tasks, sleeping ones resuming where drgn's unwinding starts.
        const kj = parseExact(await Deno.readTextFile(kernelJson));
        const pairs = (list: { tid: number | bigint; comm: string }[]) =>
          list.map((t) => `${t.tid} ${t.comm}`).sort();
        assert.deepEqual(
          pairs(kj.threads),
          pairs(e.tasks.map((t: Expected) => ({
            tid: t.pid,
            comm: t.is_kernel_thread ? `[${t.comm}]` : t.comm,
          }))),
        );
        const pc = k.dump.arch === "x86_64" ? "rip" : "pc";
        for (const t of e.tasks) {
          const j = kj.threads.find((x: Expected) => x.task === big(t.task));
          const cpu = e.cpus.find((x: Expected) => big(x.task) === big(t.task));
          if (cpu) {
            assert.equal(j.cpu, BigInt(cpu.cpu));
            continue;
          }
          if (t.frames?.length) assert.equal(j.registers[pc], big(t.frames[0].pc));
        }

        // The process JSON: page tables, load address, user registers, auxv.
        const pj = parseExact(await Deno.readTextFile(processJson));
        const p = e.process;
        assert.equal(pj.rootpgt, big(p.pgd));
        assert.equal(pj.loadaddr, big(p.exe_start));
        assert.equal(pj.pid, BigInt(p.pid));
        assert.equal(pj.exe, "busybox");
        assert.deepEqual(
          pj.auxv,
          p.saved_auxv.map(([t, v]: [number, string]) => [BigInt(t), big(v)]),
        );
        const regs = pj.threads[0].registers;
        for (const [name, value] of Object.entries(p.user_registers as Record<string, string>)) {
          const key = ({ rflags: "eflags", pstate: "cpsr" } as Record<string, string>)[name] ??
            name;
          const want = name === "pstate" ? big(value) & 0xffffffffn : big(value);
          assert.equal(regs[key], want, `process JSON ${name}`);
        }

        // -k: the script's file served back; bt of every task.
        const kOut = await serving(
          targetFromTasksJson(k, kernelJson),
          (remote) => gdb(c, [remote, "info threads", "thread apply all bt"]),
        );
        assertBacktraces(kOut, e, "-k");
      } finally {
        k.close();
      }

      // -j on a dump with user pages: user registers, argv in user memory, auxv.
      const ku = new Kernel(openDump([b!.path(c.userDump)]), { vmlinux: b!.vmlinux });
      try {
        const p = e.process;
        const pc = ku.dump.arch === "x86_64" ? "rip" : "pc";
        const out = await serving(
          targetFromProcessJson(ku, processJson),
          (remote) =>
            gdb(c, [
              remote,
              "info threads",
              `info registers ${pc}`,
              `x/s ${p.arg_start}`,
              "info auxv",
            ]),
        );
        assertProcessSession(out, e, pc);
      } finally {
        ku.close();
        await Deno.remove(dir, { recursive: true });
      }
    },
  });

  Deno.test({
    name: `gdb --pid ${c.boot}: user registers, argv, auxv, maps`,
    ignore,
    async fn() {
      const e = b!.expected;
      const k = new Kernel(openDump([b!.path(c.userDump)]), { vmlinux: b!.vmlinux });
      try {
        const pc = k.dump.arch === "x86_64" ? "rip" : "pc";
        const init = big(e.system_map.init_task) + k.kaslrOffset;
        const out = await serving(processTarget(k, e.process.pid), (remote) =>
          gdb(c, [
            remote,
            "info threads",
            `info registers ${pc}`,
            `x/s ${e.process.arg_start}`,
            "info auxv",
            "monitor maps",
            `x/s 0x${(init + BigInt(k.btf!.member("task_struct", "comm")!.offset)).toString(16)}`,
          ]));
        assertProcessSession(out, e, pc);
        assert.match(out, new RegExp(`${e.process.vmas.length} mappings`));
        assert.match(out, /"swapper\/0"/, "kernel memory through the kernel's tables");
      } finally {
        k.close();
      }
    },
  });
}

Deno.test({
  name: "gdb script on a dump lacking task_structs (6.12 -d 31): what it holds, and what it lacks",
  ignore: !hasBoot("x86_64-6.12") || !have("gdb"),
  async fn() {
    const b = boot("x86_64-6.12");
    const e = b.expected;
    const cov = e.coverage["dump.zlib-d31.kdump"];
    const k = new Kernel(openDump([b.path("dump.zlib-d31.kdump")]), { vmlinux: b.vmlinux });
    try {
      const out = await serving(
        new KernelTarget(k),
        (remote) => gdb(cases[1], [remote, `source ${KDUMP_PY}`, "kdump-kernel-ps"]),
      );
      assert.match(out, /UID +PID +PPID +LWP +COMM +ADDRESS/);
      assert.doesNotMatch(out, /Python Exception|Error occurred/, out);
      const listed = new Set(
        [...out.matchAll(/^[ >] +\S+ +\d+ +\S+ +\d+ +.*? (0x[0-9a-f]+)$/gm)].map((m) => m[1]),
      );
      // Every task reachable through the task_structs the dump holds (drgn's count) is there,
      // with the right pid and name; nothing else is.
      for (const a of cov.reachable ?? e.tasks.map((t: Expected) => t.task)) {
        assert.ok(listed.has(a), `task ${a} listed\n${out}`);
      }
      for (const a of listed) {
        const t = e.tasks.find((t: Expected) => t.task === a);
        assert.ok(t, `${a} is a task`);
        const comm = t.is_kernel_thread ? `[${t.comm}]` : t.comm;
        assert.match(out, new RegExp(` ${t.pid} +${escape(comm)} +${a}$`, "m"));
      }
      if (cov.unreadable.length > 0) {
        assert.match(out, /\d+ task_structs? not in the dump, so missing here: 0x/);
      }
    } finally {
      k.close();
    }
  },
});

function assertProcessSession(out: string, e: Expected, pc: string): void {
  const p = e.process;
  assert.match(out, new RegExp(`\\* 1 +Thread ${p.pid} "${p.pid} ${p.comm}"`), out);
  const want = big(p.user_registers[pc]);
  assert.ok(want < 0x800000000000n, "user-mode pc");
  assert.match(out, new RegExp(`${pc} +0x${want.toString(16)} `), out);
  assert.match(out, new RegExp(`${p.arg_start}:\\s+"${p.argv0}"`), out);
  const entry = p.saved_auxv.find(([t]: [number]) => t === 9)[1];
  assert.match(out, new RegExp(`AT_ENTRY +Entry point of program +${entry}`), out);
}

/** JSON with every integer as an exact bigint. */
function parseExact(text: string): Expected {
  return JSON.parse(
    text,
    (_key, value, context?: { source?: string }) =>
      typeof value === "number" && context?.source && /^-?\d+$/.test(context.source)
        ? BigInt(context.source)
        : value,
  );
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

Deno.test({
  name: "gdb --tasks x86_64-6.1: monitor bt and pid run in the task gdb selected (thread N)",
  ignore: !have("gdb"),
  async fn() {
    const b = boot("x86_64-6.1");
    const e = b.expected;
    const k = new Kernel(openDump([b.path("dump.zlib-d31.kdump")]), { vmlinux: b.vmlinux });
    // Two tasks that were running (kdb follows their CPU), two that slept (kdb's `pid N`).
    const pids = [e.console.crasher, e.console.listener, e.console.spinner, e.console.fifo];
    // Batch gdb prints a monitor command's output on stderr: print it on stdout, in order.
    const monitor = (command: string) =>
      `python print(gdb.execute("monitor ${command}", to_string=True), end="")`;
    try {
      const out = await serving(tasksTarget(k), (remote) =>
        gdb(cases[0], [
          remote,
          // Every task's registers are read here: the `thread N` below send `T`, no `Hg`.
          "info threads",
          // A task's thread id is its pid: gdb's own thread number for it.
          "python nums = {t.ptid[1]: t.num for t in gdb.selected_inferior().threads()}",
          ...pids.flatMap((pid: number) => [
            `python gdb.execute("thread %d" % nums[${pid}])`,
            `echo <<pid ${pid}>>\\n`,
            monitor("bt"),
            "info symbol $pc",
            monitor("pid"),
          ]),
        ]));
      const parts = out.split(/^<<pid (\d+)>>$/m);
      const firsts = new Set<string>();
      for (const pid of pids) {
        const i = parts.indexOf(String(pid));
        assert.ok(i > 0, `section for pid ${pid}\n${out.slice(-3000)}`);
        const s = parts[i + 1];
        const task = e.tasks.find((t: Expected) => t.pid === pid);
        assert.match(s, new RegExp(`^Stack traceback for pid ${pid}\\n`, "m"), s);
        assert.match(s, new RegExp(`^KDB current process is ${task.comm}\\(pid=${pid}\\)$`, "m"));
        // kdb's first frame is where gdb's thread is, and the function drgn found first.
        const kdb = /^Call Trace:\n(?: <\w+>\n)*\s*(\S+)\+0x([0-9a-f]+)\/0x[0-9a-f]+$/m.exec(s);
        const pc = /^(\S+) \+ (\d+) in section \.text/m.exec(s);
        assert.ok(kdb && pc, `pid ${pid}: a first frame from kdb and from gdb\n${s}`);
        assert.equal(`${kdb[1]}+${parseInt(kdb[2], 16)}`, `${pc[1]}+${pc[2]}`, `pid ${pid}`);
        assert.equal(kdb[1], task.frames[0].symbol, `pid ${pid}: drgn's first frame`);
        firsts.add(s.slice(s.indexOf("Call Trace:")));
      }
      assert.equal(firsts.size, pids.length, "each task's stack is its own");
    } finally {
      k.close();
    }
  },
});
