// kdb's console commands on real kernel dumps, checked against the guest's serial console, drgn
// (expected.json) and crash: dmesg, ps, md, rd, the bt layout, summary, lsmod, bad input.
import assert from "node:assert/strict";
import { big, boot, type Expected, hasBoot } from "./fixtures.ts";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTarget } from "../lib/kernel_target.ts";
import { KdbShell } from "../lib/kdb.ts";
import { tasksTarget } from "../lib/tasks_target.ts";
import { CONSOLE_HELP } from "../lib/console.ts";
import { dmesgCommand, readKernelLog, recordLines } from "../lib/dmesg.ts";
import { kernelModules } from "../lib/modules.ts";
import { systemFacts } from "../lib/summary.ts";
import { readModules } from "../lib/lsmod.ts";

const DMESG_BOOTS = ["x86_64-6.1", "x86_64-6.12", "aarch64-6.1", "x86_64-6.1-la57", "aarch64-6.12"];

/**
 * The compressed dump of a boot: makedumpfile's, or QEMU's own flattened kdump where makedumpfile
 * cannot read the kernel (arm64 6.12, 52-bit VA).
 */
function compressedDump(b: ReturnType<typeof boot>): string {
  const own = b.variants.find((v) => v.file === "dump.zlib-d31.kdump");
  return b.path(own ? own.file : "dump.qemu-kdump-zlib.flat");
}

/** The kernel's lines of a serial console log (userspace output has no timestamp). */
function consoleKernelLines(text: string): string[] {
  return text.replaceAll("\r", "").split("\n").filter((l) => /^\[ *\d+\.\d{6}\] /.test(l));
}

function shell(
  file: string,
  vmlinux?: string,
): { kernel: Kernel; sh: KdbShell; run: (line: string) => string } {
  const kernel = new Kernel(openDump([file]), { vmlinux });
  const sh = new KdbShell(new KernelTarget(kernel));
  return {
    kernel,
    sh,
    run: (line) => {
      let out = "";
      sh.run(line, (t) => out += t);
      return out;
    },
  };
}

for (const name of DMESG_BOOTS) {
  Deno.test({
    name: `dmesg ${name}: the serial console's kernel lines, line for line, without a vmlinux`,
    ignore: !hasBoot(name),
    fn() {
      const b = boot(name);
      const console = consoleKernelLines(Deno.readTextFileSync(b.path("console.log")));
      assert.ok(console.length > 200, `${name}: console.log has kernel lines`);
      const { kernel, run } = shell(compressedDump(b));
      try {
        // The console prints records below its loglevel (Debian's default 7: not KERN_DEBUG).
        // kdb prints each line with the record's syslog priority in front (`<6>[    0.0…`).
        run("set LOGLEVEL 7");
        const shown = run("dmesg").split("\n").slice(0, -1);
        const records = readKernelLog(kernel).records;
        const priority = (l: string) => /^<(\d+)>\[/.exec(l)?.[1];
        const shownRecords = records.filter((r) => r.level < 7);
        assert.deepEqual(
          shown.map(priority),
          shownRecords.flatMap((r) => recordLines(r).map(() => String(r.facility * 8 + r.level))),
        );
        assert.deepEqual(shown.map((l) => l.replace(/^<\d+>/, "")), console);
        // Plain dmesg also has the debug records, as kdb and crash's log show them.
        const fresh = shell(compressedDump(b));
        const all = fresh.run("dmesg").split("\n").slice(0, -1);
        fresh.kernel.close();
        assert.deepEqual(run("set LOGLEVEL 8") + run("dmesg"), all.join("\n") + "\n");
        const debug = records.filter((r) => r.level === 7);
        assert.ok(debug.length > 0, "these boots log some KERN_DEBUG records");
        const debugLines = debug.reduce((n, r) => n + recordLines(r).length, 0);
        assert.equal(all.length, console.length + debugLines);
        let i = 0;
        for (const line of all) if (line.replace(/^<\d+>/, "") === console[i]) i++;
        assert.equal(i, console.length, "the console's lines are in dmesg, in order");
        // kdb's arguments count records (a record of several lines prints them all): the last
        // N records, N records before the last M, N records after the first M.
        const byRecord = records.map((r) =>
          recordLines(r).map((l) => `<${r.facility * 8 + r.level}>${l}`)
        );
        const lines = (rs: string[][]) => rs.flat();
        assert.deepEqual(run("dmesg 3").split("\n").slice(0, -1), lines(byRecord.slice(-3)));
        assert.deepEqual(run("dmesg 2 1").split("\n").slice(0, -1), lines(byRecord.slice(-3, -1)));
        assert.deepEqual(run("dmesg -2 1").split("\n").slice(0, -1), lines(byRecord.slice(1, 3)));
        // (x86_64-6.1's log has one: the trace clock's warning, four lines.)
        const multi = byRecord.findIndex((r) => r.length > 1);
        if (multi >= 0) {
          assert.deepEqual(
            run(`dmesg -1 ${multi}`).split("\n").slice(0, -1),
            byRecord[multi],
            "one record, all its lines",
          );
        }
        assert.equal(
          run(`dmesg ${records.length + 5}`).split("\n")[0],
          `buffer only contains ${records.length} lines, first ${records.length} lines printed`,
        );
        // kstrtoint: a count past an int is no number, and dmesg prints everything.
        assert.equal(run("dmesg -99999999999"), run("dmesg"));
        assert.deepEqual(run("log 1"), run("dmesg 1"));
        // kdb's emulated pipe: | grep with ^ and $ anchors and quotes.
        const grep = (pred: (l: string) => boolean) =>
          all.filter(pred).map((l) => l + "\n").join("");
        assert.equal(run("dmesg | grep Kernel"), grep((l) => l.includes("Kernel")));
        assert.equal(run('dmesg | grep "not syncing"'), grep((l) => l.includes("not syncing")));
        assert.equal(run("dmesg | grep ^<6>[    0.0"), grep((l) => l.startsWith("<6>[    0.0")));
        assert.equal(run("dmesg | grep crash$"), grep((l) => l.endsWith("crash")));
        assert.equal(run("dmesg | sort"), "invalid 'pipe', see grephelp\n");
      } finally {
        kernel.close();
      }
    },
  });
}

/** kdb's state letter for a task drgn describes. */
function kdbState(t: Expected, initialCpu: number): string {
  if (t.pid === 0) return t.on_cpu === initialCpu ? t.state : "-";
  return t.is_kernel_thread && "IMS".includes(t.state) ? t.state.toLowerCase() : t.state;
}

interface PsRow {
  task: bigint;
  pid: number;
  parent: number;
  hasCpu: number;
  cpu: number;
  state: string;
  thread: bigint;
  current: boolean;
  comm: string;
}

function parsePs(text: string): { running: PsRow[]; others: PsRow[]; head: string[] } {
  const lines = text.split("\n");
  const header = lines.findIndex((l) => l.startsWith("Task Addr"));
  assert.ok(header >= 0, text);
  assert.equal(
    lines[header],
    "Task Addr                Pid   Parent [*] cpu State Thread             Command",
  );
  const row = (l: string): PsRow => {
    const m = /^(0x[0-9a-f]{16}) +(-?\d+) +(\d+) +([01]) +(\d+) +(\S) +(0x[0-9a-f]{16}) ([ *])(.*)$/
      .exec(l);
    assert.ok(m, `ps row: ${l}`);
    return {
      task: BigInt(m[1]),
      pid: Number(m[2]),
      parent: Number(m[3]),
      hasCpu: Number(m[4]),
      cpu: Number(m[5]),
      state: m[6],
      thread: BigInt(m[7]),
      current: m[8] === "*",
      comm: m[9],
    };
  };
  const blank = lines.indexOf("", header + 1);
  return {
    head: lines.slice(0, header),
    running: lines.slice(header + 1, blank).map(row),
    others: lines.slice(blank + 1).filter((l) => l).map(row),
  };
}

for (const name of ["x86_64-6.1", "x86_64-6.12", "aarch64-6.1"]) {
  Deno.test({
    name: `ps A ${name}: drgn's task list, kdb's columns; ps hides idle CPUs and sleeping daemons`,
    ignore: !hasBoot(name),
    fn() {
      const b = boot(name);
      const e = b.expected;
      // makedumpfile 1.7.2 drops task_structs of 6.12 at -d 31 (testdata/README.md): -d 1 there.
      const file = name === "x86_64-6.12" ? "dump.zlib-d1.kdump" : "dump.zlib-d31.kdump";
      // Debian's arm64 kallsyms lacks data symbols (init_task): the vmlinux gives them there.
      const { kernel, run } = shell(
        b.path(file),
        name.startsWith("aarch64") ? b.vmlinux : undefined,
      );
      try {
        const initial = e.crashed_cpu;
        const ps = parsePs(run("ps A"));
        // The running tasks first, one per CPU; the panic CPU's is current.
        const onCpu = e.tasks.filter((t: Expected) => t.on_cpu !== null)
          .sort((a: Expected, b: Expected) => a.on_cpu - b.on_cpu);
        assert.deepEqual(ps.running.map((r) => r.pid), onCpu.map((t: Expected) => t.pid));
        assert.deepEqual(
          ps.running.map((r) => r.current),
          onCpu.map((t: Expected) => t.on_cpu === initial),
        );
        // Then every task of every process (kdb's for_each_process_thread: no idle tasks).
        const listed = e.tasks.filter((t: Expected) => t.pid !== 0);
        assert.equal(ps.others.length, listed.length);
        const byTask = new Map(ps.others.map((r) => [r.task, r]));
        for (const t of listed) {
          const r = byTask.get(big(t.task));
          assert.ok(r, `task ${t.pid} ${t.comm} listed`);
          assert.equal(r.pid, t.pid);
          assert.equal(r.parent, t.ppid);
          assert.equal(r.comm, t.comm);
          assert.equal(r.state, kdbState(t, initial), `${t.pid} ${t.comm}`);
          assert.equal(r.hasCpu, t.on_cpu === null ? 0 : 1);
          if (t.on_cpu !== null) assert.equal(r.cpu, t.on_cpu);
          assert.ok(r.thread > r.task && r.thread < r.task + 0x4000n, "&task->thread");
        }
        // Plain ps: the sleeping kernel daemons are counted, not listed.
        const plain = parsePs(run("ps"));
        const daemons = listed.filter((t: Expected) => "ims".includes(kdbState(t, initial)));
        assert.ok(daemons.length > 10);
        assert.deepEqual(plain.head, [
          `${daemons.length} sleeping system daemon (state [ims]) processes suppressed,`,
          "use 'ps A' to see all.",
        ]);
        assert.equal(plain.others.length, listed.length - daemons.length);
        // A state mask: only those states.
        const sleeping = parsePs(run("ps S"));
        assert.ok(sleeping.others.every((r) => r.state === "S"));
        assert.equal(
          sleeping.others.length,
          listed.filter((t: Expected) => kdbState(t, initial) === "S").length,
        );
        // pid switches the current task; a pid that does not exist is one line.
        assert.equal(
          run(`pid ${e.console.sleeper}`),
          `KDB current process is sleep(pid=${e.console.sleeper})\n`,
        );
        assert.equal(run("pid 31337"), "No task with pid=31337\n");
        assert.equal(run("btp 31337"), "No process with pid == 31337 found\n");
      } finally {
        kernel.close();
      }
    },
  });
}

Deno.test({
  name: "md, mdr, md1c, rd, cpu, bt layout on x86_64-6.1 (no vmlinux)",
  ignore: !hasBoot("x86_64-6.1"),
  fn() {
    const b = boot("x86_64-6.1");
    const e = b.expected;
    const { kernel, run } = shell(b.path("dump.zlib-d31.kdump"));
    try {
      const banner = big(e.system_map.linux_banner) + big(e.kaslr_offset);
      // md: kdb's line layout, words little-endian, the printable bytes at the end.
      const md = run("md linux_banner 2").split("\n");
      assert.equal(md.length, 3);
      const text = new TextEncoder().encode(e.banner.slice(0, 32));
      const le = (o: number) => {
        let v = 0n;
        for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(text[o + i]);
        return v.toString(16).padStart(16, "0");
      };
      assert.equal(
        md[0],
        `0x${banner.toString(16)} ${le(0)} ${le(8)}   ${e.banner.slice(0, 16)}`,
      );
      assert.equal(
        md[1],
        `0x${(banner + 16n).toString(16)} ${le(16)} ${le(24)}   ${e.banner.slice(16, 32)}`,
      );
      // md with no arguments goes on where the last one stopped.
      assert.ok(run("md").startsWith(`0x${(banner + 32n).toString(16)} `));
      // sym+offset, byte words, a count in the command word.
      const bytes = run("md1c4 linux_banner+6").split("\n")[0];
      assert.equal(
        bytes,
        `0x${(banner + 6n).toString(16)} ` +
          [...text.subarray(6, 10)].map((c) => c.toString(16).padStart(2, "0")).join(" ") +
          " " + " ".repeat(12 * 3 + 1) + " " + e.banner.slice(6, 10),
      );
      assert.equal(
        run("mdr linux_banner 5"),
        [...text.subarray(0, 5)].map((c) => c.toString(16).padStart(2, "0")).join("") + "\n",
      );
      // A symbol evaluates to its address.
      assert.equal(
        run("linux_banner"),
        `linux_banner = 0x${banner.toString(16).padStart(16, "0")} (linux_banner)\n`,
      );

      // rd: the panic CPU's registers as drgn read them.
      const crashed = e.cpus.find((c: Expected) => c.cpu === e.crashed_cpu);
      const rd = run("rd");
      for (
        const [kdb, drgn] of [["ip", "rip"], ["sp", "rsp"], ["bp", "rbp"], ["ax", "rax"], [
          "r12",
          "r12",
        ]]
      ) {
        const m = new RegExp(`(?:^|  )${kdb}: ([0-9a-f]{16})`, "m").exec(rd);
        assert.ok(m, `rd shows ${kdb}\n${rd}`);
        assert.equal(BigInt("0x" + m[1]), big(crashed.registers[drgn]), kdb);
      }
      assert.ok(rd.split("\n").every((l) => l.length <= 80));

      // per_cpu: each CPU's copy of a per-CPU variable (6.1's current_task is the CPU's task).
      const perCpu = run("per_cpu current_task").split("\n").slice(0, -1);
      assert.deepEqual(
        perCpu.map((l) => BigInt("0x" + l.trim().split(/\s+/)[2])),
        e.cpus.map((c: Expected) => big(c.task)),
      );
      // bt ADDRESS, kdb's show_stack(task, ADDRESS): the current task's own unwind, from the
      // frame at or above ADDRESS. From its stack pointer, the whole stack.
      const sp = big(crashed.registers.rsp);
      const whole = run("bt").split("\n");
      const trace = whole.slice(whole.indexOf("Call Trace:"));
      assert.deepEqual(run(`bt 0x${sp.toString(16)}`).split("\n"), trace);
      // From the slot holding the return address into sysrq_handle_crash (drgn's third frame),
      // the stack from that frame up: the frames below it (delay_tsc, panic) are left out.
      const caller = crashed.frames.find((f: Expected) => f.symbol === "sysrq_handle_crash");
      let slot = sp;
      while (kernel.memory!.readU64(slot) !== big(caller.pc) && slot < sp + 4096n) slot += 8n;
      assert.ok(slot < sp + 4096n, "the return address is on the stack");
      const at = trace.findIndex((l) => l.startsWith(" sysrq_handle_crash+0x"));
      assert.ok(at > 2, trace.join("\n"));
      assert.deepEqual(
        run(`bt 0x${slot.toString(16)}`).split("\n"),
        ["Call Trace:", " <TASK>", ...trace.slice(at)],
      );
      assert.match(
        run("bt 0xffff000000000000"),
        /^bt: 0xffff000000000000 is not on the stack of pid \d+ \(crasher\.sh\)/,
      );

      // cpu: kdb's words for the switch, then the prompt follows the CPU.
      assert.equal(run("cpu"), `Currently on cpu ${e.crashed_cpu}\nAvailable cpus: 0-1\n`);
      const other = e.cpus.find((c: Expected) => c.cpu !== e.crashed_cpu);
      assert.equal(
        run(`cpu ${other.cpu}`),
        `\nEntering kdb (current=0x${
          big(other.task).toString(16).padStart(16, "0")
        }, pid ${other.pid}) on processor ${other.cpu} due to cpu switch\n`,
      );
      assert.equal(run("cpu 7"), "diag: -18: Invalid cpu number\n");
      run(`cpu ${e.crashed_cpu}`);

      // bt: kdb's header, the task's ps line, then the stack starting at the saved pc.
      const bt = run("bt").split("\n");
      assert.equal(bt[0], `Stack traceback for pid ${e.console.crasher}`);
      assert.match(
        bt[1],
        new RegExp(
          `^0x${big(crashed.task).toString(16)} +${e.console.crasher} .* \\*crasher\\.sh$`,
        ),
      );
      assert.equal(bt[2], "Call Trace:");
      const first = crashed.frames[0];
      const firstFrame = (lines: string[]) =>
        lines.slice(3).find((l) => !/^ <\/?[A-Z#]+>$/.test(l));
      const btFirst = firstFrame(bt) ?? "";
      assert.ok(
        btFirst.includes(big(first.pc).toString(16)) || btFirst.includes(` ${first.symbol}+0x`),
        bt.join("\n"),
      );
      // btp of a sleeping task: its saved pc (the unwinder behind it is tested on its own).
      const sleeper = e.tasks.find((t: Expected) => t.pid === e.console.sleeper);
      const btp = run(`btp ${sleeper.pid}`).split("\n");
      assert.equal(btp[0], `Stack traceback for pid ${sleeper.pid}`);
      const btpFirst = firstFrame(btp) ?? "";
      assert.ok(
        btpFirst.includes(big(sleeper.frames[0].pc).toString(16)) ||
          btpFirst.includes(sleeper.frames[0].symbol),
        btp.join("\n"),
      );
      // btc: every CPU's task; bta: every task not suppressed.
      const btc = run("btc");
      assert.equal((btc.match(/^Stack traceback for pid /gm) ?? []).length, e.cpus.length);
      const bta = run("bta A");
      assert.equal(
        (bta.match(/^Stack traceback for pid /gm) ?? []).length,
        e.cpus.length + e.tasks.filter((t: Expected) => t.pid !== 0 && t.on_cpu === null).length,
      );
      assert.ok(
        run(`btt 0x${big(sleeper.task).toString(16)}`).startsWith(
          `Stack traceback for pid ${sleeper.pid}\n`,
        ),
      );
    } finally {
      kernel.close();
    }
  },
});

Deno.test({
  name: "bad input at kdb's prompt: one kdb-style line each, and the shell goes on",
  ignore: !hasBoot("x86_64-6.1"),
  fn() {
    const b = boot("x86_64-6.1");
    const { kernel, run } = shell(b.path("dump.zlib-d31.kdump"));
    try {
      const one = (line: string, expect: RegExp) => {
        const out = run(line);
        assert.equal(out.split("\n").length, 2, `${line}: one line\n${out}`);
        assert.match(out, expect, line);
      };
      one("frobnicate", /^Unknown kdb command: 'frobnicate'$/m);
      one("md no_such_symbol", /^diag: -15: Illegal numeric value$/m);
      one("md linux_banner+zz", /^diag: -15: Illegal numeric value$/m);
      one("md", /^diag: -2: Improper argument count, see usage\.$/m);
      one("md8c1 0x10", /^kdb_getarea_size: Bad address 0x10 \(/m);
      one("btt 0x1234", /^kdb_getarea_size: Bad address 0x1234 /m);
      one("pid bogus", /^diag: -15: Illegal numeric value$/m);
      one("set X", /^diag: -2: Improper argument count/m);
      one("per_cpu no_such_symbol", /^no_such_symbol is not a per_cpu variable$/m);
      // go on a dump, from a CPU other than the panic one too: the dump cannot run (kdb's
      // "go must execute on the entry cpu" would send the user to another CPU for nothing).
      run("cpu 0");
      one("go", /^go: the target is a crash dump: it cannot continue execution$/m);
      run("cpu 1");
      // kdb's commands that change a running kernel: each says the dump cannot.
      for (
        const line of [
          "bp do_nanosleep",
          "bl",
          "bph jiffies dataw 8",
          "bc 0",
          "ss",
          "mm8 jiffies 1",
          "rm ax 1",
        ]
      ) {
        const word = line.split(" ")[0];
        one(
          line,
          new RegExp(
            `^${word}: the target is a crash dump: memory and registers are read-only, nothing runs$`,
            "m",
          ),
        );
      }
      // A page the dump level excluded (a free page of the direct map, -d 31).
      const k = kernel;
      let pfn = 0x1000;
      while (k.phys.pageStatus(pfn) !== 2 && pfn < k.dump.maxPfn) pfn++;
      assert.ok(pfn < k.dump.maxPfn, "an excluded page");
      const va = k.directMapBase! + BigInt(pfn * 4096);
      one(`md 0x${va.toString(16)}`, /^kdb_getarea_size: Bad address 0x[0-9a-f]+ \(.*excluded/m);
      // A huge count is capped (no pager here), and md goes on from there.
      const big = run("md init_task 100000000").split("\n");
      assert.equal(big.at(-2), "(md shows at most 65536 bytes at once: md goes on)");
      assert.ok(big.length < 4200, `${big.length} lines`);
      // The shell still answers.
      assert.match(run("cpu"), /^Currently on cpu 1$/m);
    } finally {
      kernel.close();
    }
  },
});

/** Run crash once on a dump; its output. */
async function crash(vmlinux: string, dump: string, commands: string[]): Promise<string> {
  const p = new Deno.Command("crash", {
    args: ["-s", vmlinux, dump],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(commands.join("\n") + "\nq\n"));
  await w.close();
  const out = await p.output();
  return new TextDecoder().decode(out.stdout);
}

const haveCrash = (() => {
  try {
    return new Deno.Command("crash", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "summary and lsmod on x86_64-6.1 agree with crash's sys, kmem -i and mod",
  ignore: !hasBoot("x86_64-6.1") || !haveCrash,
  async fn() {
    const b = boot("x86_64-6.1");
    const out = await crash(b.vmlinux, b.path("dump.elf"), ["sys", "kmem -i", "mod"]);
    const field = (name: string) => {
      const m = new RegExp(`^ *${name}: (.*)$`, "m").exec(out);
      assert.ok(m, `crash prints ${name}\n${out}`);
      return m[1].trim();
    };
    const { kernel, run } = shell(b.path("dump.zlib-d31.kdump"));
    try {
      const f = systemFacts(kernel);
      assert.equal(f.release, field("RELEASE"));
      assert.equal(f.version, field("VERSION"));
      assert.equal(f.machine, field("MACHINE").split(/\s+/)[0]);
      assert.equal(f.nodename, field("NODENAME"));
      // crash: "Thu Dec  3 08:35:32 UTC 2026".
      const d = new Date(f.date! * 1000);
      const days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
      const months = [
        "Jan",
        "Feb",
        "Mar",
        "Apr",
        "May",
        "Jun",
        "Jul",
        "Aug",
        "Sep",
        "Oct",
        "Nov",
        "Dec",
      ];
      const two = (n: number) => String(n).padStart(2, "0");
      assert.equal(
        `${days[d.getUTCDay()]} ${months[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2)} ` +
          `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${
            two(d.getUTCSeconds())
          } UTC ${d.getUTCFullYear()}`,
        field("DATE"),
      );
      const [h, m, s] = field("UPTIME").split(":").map(Number);
      assert.ok(Math.abs(f.uptime! - (h * 3600 + m * 60 + s)) <= 1, `uptime ${f.uptime}`);
      assert.equal(
        f.loadAverage!.map((v) => v.toFixed(2)).join(", "),
        field("LOAD AVERAGE"),
      );
      assert.equal(`"Kernel panic - not syncing: ${f.panicMessage}"`, field("PANIC"));
      const pages = (name: string) => Number(new RegExp(`^ +${name} +(\\d+) `, "m").exec(out)![1]);
      assert.equal(f.memTotalKb, pages("TOTAL MEM") * 4);
      assert.equal(f.memFreeKb, pages("FREE") * 4);
      const summary = run("summary");
      assert.match(summary, new RegExp(`^release    ${f.release}$`, "m"));
      assert.match(summary, new RegExp(`^MemTotal: +${pages("TOTAL MEM") * 4} kB$`, "m"));
      assert.match(summary, /^panic {6}sysrq triggered crash$/m);
      assert.match(summary, /^panic cpu {2}1$/m);
      assert.match(summary, /^taint {6}Not tainted$/m); // as the console's panic line says

      // lsmod: crash's mod (module struct, name, base, size).
      const mods = [...out.matchAll(/^([0-9a-f]{16}) +(\S+) +([0-9a-f]{16}) +(\d+) /gm)];
      assert.ok(mods.length > 0, out);
      const ours = readModules(kernel);
      assert.deepEqual(
        ours.map((m) => [m.address, m.name, m.bases[0], m.sizes[0]]),
        mods.map((m) => [BigInt("0x" + m[1]), m[2], BigInt("0x" + m[3]), Number(m[4])]),
      );
      const lsmod = run("lsmod").split("\n");
      assert.equal(lsmod[0], "Module                  Size  modstruct     Used by");
      assert.match(
        lsmod[1],
        /^qemu_fw_cfg +\d+ {2}0xffffffffc[0-9a-f]+ +0 {2}\(Live\) 0x[0-9a-f]{16} \[ \]$/,
      );
    } finally {
      kernel.close();
    }
  },
});

Deno.test({
  name:
    "summary and btc on aarch64-6.1 (kallsyms without data symbols): utsname, CPUs, panic, each CPU's task and stack",
  ignore: !hasBoot("aarch64-6.1"),
  fn() {
    const b = boot("aarch64-6.1");
    const { kernel, sh, run } = shell(b.path("dump.zlib-d31.kdump"));
    try {
      const s = run("summary");
      assert.match(s, new RegExp(`^release    ${b.expected.release}$`, "m"));
      assert.match(s, /^machine {4}aarch64$/m);
      assert.match(s, /^panic {6}sysrq triggered crash$/m);
      // panic_cpu is a data symbol too: the panic CPU comes from the log's `CPU: N PID:` line
      // after the panic line, and is the one drgn found.
      assert.match(s, new RegExp(`^panic cpu  ${b.expected.crashed_cpu}$`, "m"));
      // The kernel knows it too: the console starts there and bt shows the crashing task.
      assert.equal(kernel.panicCpu, b.expected.crashed_cpu);
      assert.equal(sh.prompt, `[${b.expected.crashed_cpu}]kdb> `);
      const crasher = b.expected.cpus.find((c: Expected) => c.cpu === b.expected.crashed_cpu);
      assert.match(run("bt"), new RegExp(`^Stack traceback for pid ${crasher.pid}$`, "m"));
      assert.match(run("lsmod"), /lsmod: .*data symbols/);
      // The task list is found by a search (kernel_search.ts): btc shows each CPU's task with its
      // stack, whose first frame is the one drgn unwound first.
      const btc = run("btc").split("\n");
      for (const cpu of b.expected.cpus) {
        const at = btc.indexOf(`Stack traceback for pid ${cpu.pid}`);
        assert.ok(at >= 0, btc.join("\n"));
        assert.match(btc[at + 1], new RegExp(`^${cpu.task}\\s+${cpu.pid}\\s.*${cpu.comm}$`));
        // arm64's dump_backtrace: `Call trace:`, and no x86 stack markers.
        assert.equal(btc[at + 2], "Call trace:");
        assert.doesNotMatch(btc.join("\n"), /^ <\/?[A-Z]+>$/m);
        const frames = btc.slice(at + 3, at + 8).join("\n");
        assert.ok(frames.includes(` ${cpu.frames[0].symbol}+0x`), frames);
      }
    } finally {
      kernel.close();
    }
  },
});

Deno.test({
  name:
    "per_cpu on aarch64-6.1 without a vmlinux: a name placed through BTF and the runqueues found, as __per_cpu_offset places it with the vmlinux",
  ignore: !hasBoot("aarch64-6.1"),
  fn() {
    const b = boot("aarch64-6.1");
    const bare = shell(b.path("dump.zlib-d31.kdump"));
    const full = shell(b.path("dump.zlib-d31.kdump"), b.path("vmlinux"));
    try {
      assert.equal(bare.kernel.symbol("__per_cpu_offset"), undefined, "kallsyms has no data");
      const withVmlinux = full.run("per_cpu runqueues");
      assert.equal(withVmlinux.split("\n").length, b.expected.cpus.length + 1, withVmlinux);
      assert.equal(bare.run("per_cpu runqueues"), withVmlinux);
      assert.equal(bare.run("per_cpu runqueues+8 8 1"), full.run("per_cpu runqueues+8 8 1"));
      // An address needs __per_cpu_offset: said, not read at the wrong place.
      assert.match(
        bare.run("per_cpu 0xffff800008000000"),
        /^per_cpu: the kernel's symbols have no __per_cpu_offset: name the variable, or give --vmlinux\n$/,
      );
      assert.equal(
        bare.run("per_cpu no_such_variable"),
        "no_such_variable is not a per_cpu variable\n",
      );
      // arm64's show_stack does not use the address: bt ADDR shows the whole stack.
      const whole = bare.run("bt");
      assert.equal(bare.run("bt 0xffff800008000000"), whole.slice(whole.indexOf("Call trace:")));
    } finally {
      bare.kernel.close();
      full.kernel.close();
    }
  },
});

Deno.test({
  name:
    "kdb's details on x86_64-6.1: module symbols by address, per_cpu's bytes, pid 0, lsmod's arguments, an operator word, signed decimal, Enter repeats md, kdb's parent",
  ignore: !hasBoot("x86_64-6.1"),
  fn() {
    const b = boot("x86_64-6.1");
    const { kernel, run } = shell(b.path("dump.zlib-d31.kdump"));
    try {
      // kallsyms_lookup covers modules: a module function's address is named [module]name.
      const mod = kernelModules(kernel).find((m) => m.name === "qemu_fw_cfg");
      assert.ok(mod, "the fixtures' guest loads qemu_fw_cfg");
      const fn = mod.symbols.find((x) => x.value >= mod.textStart && x.value < mod.textEnd)!;
      const at = `0x${(fn.value + 4n).toString(16)}`;
      assert.equal(
        run(at),
        `${at} = 0x${
          (fn.value + 4n).toString(16).padStart(16, "0")
        } ([qemu_fw_cfg]${fn.name}+0x4)\n`,
      );
      // Past the image's end, nothing is named (kdb: is_ksym_addr), however near a symbol.
      assert.equal(
        run("_end+0x10"),
        `_end+0x10 = 0x${(kernel.symbol("_end")! + 16n).toString(16).padStart(16, "0")}\n`,
      );
      // per_cpu and mds: a word no symbol covers shows its bytes (kdb_md_line's ASCII column).
      assert.match(run("per_cpu runqueues"), /^ {4}0 0x[0-9a-f]{16} [0-9a-f]{16} {3}[ -~]{8}$/m);
      assert.match(run("mds init_task 1"), /^0x[0-9a-f]{16} 0000000000004000 {3}\.@\.{6}$/m);
      assert.equal(
        run("per_cpu runqueues 3"),
        b.expected.cpus.map((c: Expected) =>
          `kdb_getword: bad width 3\n${String(c.cpu).padStart(5)} 0x${
            kernel.perCpu("runqueues", c.cpu)!.toString(16).padStart(16, "0")
          } - unable to read, diag=-3\n`
        ).join(""),
      );
      // find_task_by_pid_ns knows no pid 0; lsmod takes no argument.
      assert.equal(run("pid 0"), "No task with pid=0\n");
      assert.equal(run("lsmod x"), "diag: -2: Improper argument count, see usage.\n");
      // A word starting with - is the operator alone; the offset is the next word.
      assert.equal(run("md linux_banner -3"), "diag: -16: Invalid symbolic address format\n");
      assert.equal(run("md linux_banner - 8 1"), run("md linux_banner-8 1"));
      // Radix 10: kdb's %16.16ld prints 8-byte words signed.
      const offsets = kernel.symbol("__per_cpu_offset")!;
      const word = kernel.memory!.readU64(offsets)!;
      assert.ok(word >= 1n << 63n, "a direct-map address");
      run("set RADIX 10");
      const decimal = run("md8c1 __per_cpu_offset");
      const narrow = run("md4c2 __per_cpu_offset");
      run("set RADIX 16");
      // Narrower words are zero-extended: never negative.
      const high = Number(word >> 32n);
      assert.ok(narrow.includes(` ${String(high).padStart(8, "0")} `), narrow);
      assert.ok(
        decimal.includes(` -${(-BigInt.asIntN(64, word)).toString().padStart(16, "0")} `),
        decimal,
      );
      // An empty line runs md again without arguments: the next lines.
      const first = run("md linux_banner 1");
      const next = run("");
      assert.equal(next, run("md linux_banner+0x10 1"));
      assert.notEqual(next, first);
      run("md linux_banner 1");
      assert.equal(run("   "), "", "a line of blanks is no empty line: nothing repeats");
      assert.equal(run(""), "", "and the repeat is gone");
      run("ps");
      assert.equal(run(""), "", "ps does not repeat");
      // kdb_ps1's parent is p->parent->pid: init's children show 1, kthreadd's 2.
      const ps = run("ps A").split("\n");
      for (const t of b.expected.tasks.filter((t: Expected) => t.pid > 0)) {
        const row = ps.find((l) => new RegExp(`^0x[0-9a-f]{16} +${t.pid} `).test(l));
        assert.ok(row, `pid ${t.pid} in ps A`);
        assert.equal(row.trim().split(/\s+/)[2], String(t.ppid), row);
      }
    } finally {
      kernel.close();
    }
  },
});

Deno.test({
  name: "kdb shell fuzz: 3000 random command lines on a real dump never throw or run away",
  ignore: !hasBoot("x86_64-6.1"),
  fn() {
    const b = boot("x86_64-6.1");
    const { kernel, sh } = shell(b.path("dump.zlib-d31.kdump"));
    let seed = 20261203;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const words = [
      "md",
      "md8c3",
      "md1c999999",
      "md0",
      "md9",
      "mdr",
      "mdp",
      "mds",
      "rd",
      "bt",
      "btp",
      "btt",
      "bta",
      "btc",
      "ps",
      "pid",
      "cpu",
      "dmesg",
      "log",
      "summary",
      "summ",
      "lsmod",
      "env",
      "set",
      "help",
      "?",
      "go",
      "kgdb",
      "per_cpu",
      "vtop",
      "sym",
      "sys",
      "threads",
      "cache",
      "m",
      "b",
      "init_task",
      "-md",
      "mdx",
      "bt1",
      "",
    ];
    const args = [
      "init_task",
      "init_task+0x10",
      "linux_banner",
      "-",
      "+",
      "0x0",
      "0",
      "-1",
      "99999999999999999999",
      "0xffffffffffffffff",
      "A",
      "S",
      "R",
      "ims",
      "$RADIX",
      "$NOPE",
      "%rip",
      "=",
      "x=y",
      "10",
      "8",
      "2",
      '"q u"',
      "\\\\",
      "#",
      "zz",
      "1",
      "95",
      "100",
    ];
    for (let i = 0; i < 3000; i++) {
      const parts = [words[rand(words.length)]];
      for (let n = rand(4); n > 0; n--) parts.push(args[rand(args.length)]);
      const line = parts.join(rand(5) === 0 ? "" : " ");
      let out = "";
      const t0 = performance.now();
      const action = sh.run(line, (t) => out += t);
      assert.ok(action === "continue" || action === "kgdb", line);
      assert.ok(out === "" || out.endsWith("\n"), `${line}: ${JSON.stringify(out.slice(-80))}`);
      assert.ok(out.length < 2_000_000, `${line}: ${out.length} bytes`);
      assert.ok(performance.now() - t0 < 5000, `${line}: slow`);
      assert.ok(!/TypeError|RangeError|undefined/.test(out), `${line}: ${out.slice(0, 300)}`);
    }
    kernel.close();
  },
});

/** drgn on the dump (argv 1) with its vmlinux (argv 2), as `prog`. */
const DRGN_OPEN = `
import drgn, sys, json
prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
try:
    prog.load_debug_info([sys.argv[2]])
except drgn.MissingDebugInfoError:
    pass
`;

const DRGN_MODULES = DRGN_OPEN + `
from drgn.helpers.linux.list import list_for_each_entry
print(json.dumps([{"name": m.name.string_().decode(), "address": hex(m.value_()),
    "mem": [[hex(m.mem[i].base.value_()), m.mem[i].size.value_()] for i in range(4)],
    "refcnt": m.refcnt.counter.value_()}
    for m in list_for_each_entry("struct module", prog["modules"].address_of_(), "list")]))
`;

const DRGN_BLOCKDEV = DRGN_OPEN + `
from drgn.helpers.linux.list import list_for_each_entry
sb = prog["blockdev_superblock"]
inodes = list(list_for_each_entry("struct inode", sb.s_inodes.address_of_(), "i_sb_list"))
print(json.dumps({"inodes": len(inodes),
    "pages": sum(i.i_mapping.nrpages.value_() for i in inodes)}))
`;

const haveDrgn = (() => {
  try {
    return new Deno.Command("/usr/bin/python3", { args: ["-c", "import drgn"], stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();

/** Run a drgn script on a dump and its vmlinux; its JSON output. */
async function drgnJson(script: string, dump: string, vmlinux: string) {
  const r = await new Deno.Command("/usr/bin/python3", {
    args: ["-c", script, dump, vmlinux],
    // drgn's own ELF reader cannot translate arm64 6.12's addresses; libkdumpfile's can.
    env: { DRGN_USE_LIBKDUMPFILE_FOR_ELF: "1" },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  assert.ok(r.success, new TextDecoder().decode(r.stderr));
  return JSON.parse(new TextDecoder().decode(r.stdout));
}

for (const name of ["x86_64-6.1", "x86_64-6.12"]) {
  Deno.test({
    name: `summary ${name}: kdb's Buffers: line is nr_blockdev_pages() as drgn walks it`,
    ignore: !hasBoot(name) || !haveDrgn,
    async fn() {
      const b = boot(name);
      const dump = b.path("dump.elf");
      const drgn = await drgnJson(DRGN_BLOCKDEV, dump, b.vmlinux);
      assert.ok(drgn.inodes > 0, "the block device filesystem has its root inode at least");
      const { kernel, run } = shell(dump);
      try {
        const kb = drgn.pages * 4; // 4 KiB pages
        assert.match(run("summary"), new RegExp(`^Buffers: +${kb} kB$`, "m"));
      } finally {
        kernel.close();
      }
    },
  });
}

Deno.test({
  name: "lsmod on x86_64-6.12 (module memory regions, Linux 6.4+) agrees with drgn",
  ignore: !hasBoot("x86_64-6.12") || !haveDrgn,
  async fn() {
    const b = boot("x86_64-6.12");
    const dump = b.path("dump.zlib-d1.kdump");
    const drgn = await drgnJson(DRGN_MODULES, dump, b.vmlinux);
    assert.ok(drgn.length > 0);
    const { kernel, run } = shell(dump);
    try {
      const ours = readModules(kernel);
      // kdb prints text, rodata, ro_after_init, data (drgn's mem[] is text, data, rodata, …).
      const order = [0, 2, 3, 1];
      assert.deepEqual(
        ours.map((m) => ({
          name: m.name,
          address: `0x${m.address.toString(16)}`,
          mem: m.bases.map((base, i) => [`0x${base.toString(16)}`, m.sizes[i]]),
          refs: m.refcount,
        })),
        drgn.map((m: Expected) => ({
          name: m.name,
          address: m.address,
          mem: order.map((i) => m.mem[i]),
          refs: m.refcnt - 1,
        })),
      );
      const line = run("lsmod").split("\n")[1];
      const d = drgn[0];
      assert.equal(
        line,
        `${d.name.padEnd(20)}${
          order.map((i, n) => (n ? "/" : "") + String(d.mem[i][1]).padStart(8)).join("")
        }  ` +
          `0x${BigInt(d.address).toString(16).padStart(16, "0")} ${
            String(d.refcnt - 1).padStart(4)
          }  (Live) ` +
          order.map((i) => `0x${BigInt(d.mem[i][0]).toString(16).padStart(16, "0")}`).join("/") +
          " [ ]",
      );
    } finally {
      kernel.close();
    }
  },
});

const DRGN_FACTS = DRGN_OPEN + `
uts = prog["init_uts_ns"].name
print(json.dumps({
    "release": uts.release.string_().decode(), "version": uts.version.string_().decode(),
    "nodename": uts.nodename.string_().decode(), "machine": uts.machine.string_().decode(),
    "date": prog["tk_core"].timekeeper.xtime_sec.value_(),
    "total": prog["_totalram_pages"].counter.value_(),
    "free": prog["vm_zone_stat"][prog["NR_FREE_PAGES"]].counter.value_(),
    "avenrun": [prog["avenrun"][i].value_() for i in range(3)],
    "taint": prog["tainted_mask"].value_(), "panic_cpu": prog["panic_cpu"].counter.value_()}))
`;

for (
  const [name, drgnFile, ourFile] of [
    ["x86_64-6.12", "dump.zlib-d1.kdump", "dump.zlib-d31.kdump"],
    // QEMU's arm64 kdump: 64 KiB dump pages under a 4 KiB-page kernel (the page size is the
    // kernel's, not the file's); drgn reads the boot's ELF dump.
    ["aarch64-6.12", "dump.elf", "dump.qemu-kdump-zlib.flat"],
  ]
) {
  Deno.test({
    name: `summary facts on ${name} ${ourFile} (crash 8.0.2 cannot read it) agree with drgn`,
    ignore: !hasBoot(name) || !haveDrgn,
    async fn() {
      const b = boot(name);
      const dump = b.path(drgnFile);
      const d = await drgnJson(DRGN_FACTS, dump, b.vmlinux);
      const { kernel } = shell(b.path(ourFile));
      try {
        const f = systemFacts(kernel);
        assert.equal(f.release, d.release);
        assert.equal(f.version, d.version);
        assert.equal(f.nodename, d.nodename);
        assert.equal(f.machine, d.machine);
        // shadow_timekeeper (ours) is updated with tk_core's timekeeper (drgn's).
        assert.equal(f.date, d.date);
        assert.equal(f.memTotalKb, d.total * 4);
        assert.equal(f.memFreeKb, d.free * 4);
        assert.deepEqual(f.loadAverage, d.avenrun.map((v: number) => v / 2048));
        assert.equal(f.taintMask, BigInt(d.taint));
        assert.equal(f.panicCpu, d.panic_cpu);
      } finally {
        kernel.close();
      }
    },
  });
}

Deno.test({
  name: "help on x86_64-6.1 (kernel and --tasks): every command listed once, aliases included",
  ignore: !hasBoot("x86_64-6.1"),
  fn() {
    const kernel = new Kernel(openDump([boot("x86_64-6.1").path("dump.zlib-d31.kdump")]));
    try {
      for (const target of [new KernelTarget(kernel), tasksTarget(kernel)]) {
        // As a session builds it: the console's own commands too.
        const sh = new KdbShell(target, CONSOLE_HELP);
        let text = "";
        sh.run("help", (t) => text += t);
        const lines = text.split("\n");
        assert.match(lines[0], /^Command +Usage +Description$/);
        // Rows start in column 0; a long usage puts the description on an indented next line.
        const rows = lines.slice(2).filter((l) => /^\S/.test(l)).map((l) => ({
          name: l.slice(0, 15).trim(),
          rest: l.slice(16),
        }));
        const names = rows.map((r) => r.name);
        assert.ok(names.length > 30, text);
        for (const want of ["md", "bt", "dmesg", "log", "ps", "vtop", "threads", "quit"]) {
          assert.ok(names.includes(want), `help lists ${want}\n${text}`);
        }
        const counts = new Map<string, number>();
        for (const n of names) counts.set(n, (counts.get(n) ?? 0) + 1);
        assert.deepEqual([...counts].filter(([, n]) => n > 1), [], `a name in two rows\n${text}`);
        // A row naming another listed command as its alias ("also: log") lists that one twice.
        for (const r of rows) {
          for (const m of r.rest.matchAll(/\balso:? ([a-z_?]+)\b/g)) {
            assert.ok(
              m[1] === r.name || !names.includes(m[1]),
              `${r.name}'s description lists ${m[1]} again\n${text}`,
            );
          }
        }
        // The alias works as the command it stands for.
        let log = "", dmesg = "";
        sh.run("log 3", (t) => log += t);
        sh.run("dmesg 3", (t) => dmesg += t);
        assert.equal(log, dmesg);
        assert.equal(log.split("\n").length, 4);
      }
    } finally {
      kernel.close();
    }
  },
});

Deno.test({
  name: "kdb's defined commands (dumpcommon, dumpall, dumpcpu): each statement echoed, then run",
  ignore: !hasBoot("x86_64-6.1"),
  fn() {
    const b = boot("x86_64-6.1");
    const macro = shell(compressedDump(b));
    const single = shell(compressedDump(b));
    try {
      const out = macro.run("dumpcpu");
      // The statements, each as kdb echoes a defined command's, in order.
      const echoed = [...out.matchAll(/^\[(dump\w+)\]kdb> (.*)$/gm)].map((m) => `${m[1]}: ${m[2]}`);
      assert.deepEqual(echoed, [
        "dumpcpu: pid R",
        "dumpcpu: -dumpcommon",
        "dumpcommon: set BTAPROMPT 0",
        "dumpcommon: set LINES 10000",
        "dumpcommon: -summary",
        "dumpcommon: -cpu",
        "dumpcommon: -ps",
        "dumpcommon: -dmesg 600",
        "dumpcommon: -bt",
        "dumpcpu: -btc",
      ]);
      // Each statement's output is what the command prints on its own, from the same state.
      const parts = out.split(/^\[dump\w+\]kdb> .*\n/m).slice(1);
      const statements = ["pid R", "", "", "", "summary", "cpu", "ps", "dmesg 600", "bt", "btc"];
      statements.forEach((s, i) => {
        if (s) assert.equal(parts[i], single.run(s), `output of ${s}`);
      });
      assert.match(parts[0], /^KDB current process is \S+\(pid=\d+\)$/m);
      assert.match(parts[9], /^Stack traceback for pid \d+/m);
      assert.match(macro.run("env"), /^BTAPROMPT=0\nLINES=10000$/m);
      // dumpall is the same with every task's stack; help lists the three.
      const all = macro.run("dumpall");
      assert.match(all, /^\[dumpall\]kdb> -bta$/m);
      assert.ok(all.length > out.length, "bta prints every task, btc only the running ones");
      assert.match(macro.run("help"), /^dumpcpu\s+""\s+Same as dumpall but only tasks on cpus$/m);
      assert.equal(macro.run("dumpall 1"), "diag: -2: Improper argument count, see usage.\n");
    } finally {
      macro.kernel.close();
      single.kernel.close();
    }
  },
});

Deno.test("dmesg over a log of 200,000 lines: all of it, the last lines, the first lines", () => {
  // A large log_buf_len holds this many; more than 130,000 once overflowed a spread's stack.
  const lines = Array.from({ length: 200_000 }, (_, i) => `[    ${i}.000000] line ${i}`);
  const all = dmesgCommand(lines, []);
  assert.equal(all.length, lines.length);
  assert.equal(all.at(-1), lines.at(-1));
  assert.deepEqual(dmesgCommand(lines, ["2"]), lines.slice(-2));
  assert.deepEqual(dmesgCommand(lines, ["-2"]), lines.slice(0, 2));
});
