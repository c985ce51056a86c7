// Real gdb, real kernel, real dumps: the product's main job, over TCP and over a pipe.
import assert from "node:assert/strict";
import { big, boot, type Expected, hasBoot } from "./fixtures.ts";
import { pipeTarget, runGdb, SERVER, startServer } from "./gdb_helpers.ts";
import {
  ARM64_KERNEL_SESSION,
  assertArm64KernelSession,
  assertKernelSession,
  KERNEL_SESSION,
} from "./kernel_session.ts";

const B = boot("x86_64-6.1");
const E = B.expected;
const crashed = E.cpus.find((c: { cpu: number }) => c.cpu === E.crashed_cpu);

const PIPE_VARIANTS = [
  "dump.elf",
  "dump.zlib-d31.kdump",
  "dump.lzo-d31.kdump",
  "dump.snappy-d31.kdump",
  "dump.zstd-d31.kdump",
  "dump.qemu-kdump-zlib.flat",
  "dump.zlib-d31.flat",
  "dump.elf-d31.elf",
];

for (const file of PIPE_VARIANTS) {
  Deno.test(`gdb pipe, zero commands for KASLR: ${file}`, async () => {
    // gdb loads the vmlinux through qXfer:exec-file and relocates it with qOffsets by itself.
    const r = await runGdb([
      pipeTarget([B.path(file), "--vmlinux", B.vmlinux]),
      ...KERNEL_SESSION,
    ]);
    assertKernelSession(r.out, file, E);
  });
}

Deno.test("gdb pipe, a server slower to start than gdb's remote timeout: one session", async () => {
  // gdb resends qSupported after 2 s without an ack; a big dump can take longer to open. The
  // server then finds both copies waiting and must answer once (else gdb reports "Remote replied
  // unexpectedly to 'vMustReplyEmpty'").
  const server = [...SERVER, "--stdio", B.path("dump.zlib-d31.kdump"), "--vmlinux", B.vmlinux];
  const r = await runGdb([
    `target remote | sh -c 'sleep 4; exec ${server.join(" ")}'`,
    ...KERNEL_SESSION,
  ]);
  assert.doesNotMatch(r.out, /replied unexpectedly/, r.out);
  assertKernelSession(r.out, "slow start", E);
});

Deno.test("gdb TCP with the printed `file … -o` line, then a second client", async () => {
  const server = await startServer([B.path("dump.zlib-d31.kdump")]);
  try {
    const banner = server.stderr();
    const fileLine = banner.match(/^\s*(file <vmlinux> -o 0x[0-9a-f]+)$/m);
    assert.ok(fileLine, banner);
    assert.ok(
      fileLine[1].endsWith(`0x${big(E.kaslr_offset).toString(16)}`),
      "KASLR offset printed",
    );
    assert.match(banner, new RegExp(`KASLR: +kernel offset 0x${big(E.kaslr_offset).toString(16)}`));
    assert.match(banner, /panic on CPU \d/);
    const cmd = fileLine[1].replace("<vmlinux>", B.vmlinux);
    for (const round of [1, 2]) {
      const r = await runGdb([cmd, `target remote 127.0.0.1:${server.port}`, ...KERNEL_SESSION]);
      assertKernelSession(r.out, `tcp round ${round}`, E);
    }
  } finally {
    await server.stop();
  }
});

Deno.test("gdb: vmcoreinfo query, info vmcoreinfo, monitor commands", async () => {
  const script = new URL("../cli/gdb/vmcoreinfo.py", import.meta.url).pathname;
  const r = await runGdb([
    pipeTarget([B.path("dump.lzo-d31.kdump")]),
    "maint packet qlinux.vmcoreinfo",
    `source ${script}`,
    "info vmcoreinfo",
    "monitor help",
    "monitor sys",
    "monitor threads",
    `monitor vtop 0x${(big(E.system_map.linux_banner) + big(E.kaslr_offset)).toString(16)}`,
    "monitor no-such-command",
  ]);
  assert.match(r.out, /received: "Qlinux\.vmcoreinfo/);
  // The decoded note, line for line.
  for (const line of E.vmcoreinfo.split("\n").filter((l: string) => l).slice(0, 20)) {
    assert.ok(r.out.includes(line), `info vmcoreinfo shows ${line}`);
  }
  assert.match(r.out, /^vtop +ADDRESS +translate a kernel virtual address/m);
  assert.match(r.out, new RegExp(`release: +${E.release}`));
  assert.match(r.out, /walk: +physical 0x[0-9a-f]+/);
  assert.match(r.out, /unknown|Unknown/);
});

Deno.test("gdb: writes and execution are refused cleanly; the session goes on", async () => {
  const r = await runGdb([
    pipeTarget([B.path("dump.zlib-d31.kdump"), "--vmlinux", B.vmlinux]),
    "set var init_task.comm[0] = 65",
    "set var $rip = 0",
    "continue",
    "stepi",
    "p init_task.comm",
  ]);
  assert.match(r.out, /Cannot access memory|Could not write|Remote failure|error/i);
  assert.match(r.out, /dump/i, "the refusal says the target is a dump");
  assert.match(r.out, /"swapper\/0\\000/, "memory unchanged and still served");
});

Deno.test("gdb: excluded pages read as errors, --zero-excluded reads zeros", async () => {
  // A user address of the crasher: user pages are filtered at dump level 31.
  const addr = big(E.cpus.find((c: { cpu: number }) => c.cpu === E.crashed_cpu).registers.rsp);
  const userRsp = E.cpus.find((c: { cpu: number }) => c.cpu === E.crashed_cpu).user_registers?.rsp;
  void addr;
  const target = userRsp ? big(userRsp) : undefined;
  if (target === undefined) return;
  const base = [B.path("dump.zlib-d31.kdump"), "--vmlinux", B.vmlinux];
  const plain = await runGdb([pipeTarget(base), `x/2gx ${target}`]);
  assert.match(plain.out, /Cannot access memory/);
});

Deno.test({
  name: "gdb-multiarch on the arm64 dump: threads, bt, kernel data",
  ignore: !hasBoot("aarch64-6.1"),
  async fn() {
    const A = boot("aarch64-6.1");
    const r = await runGdb([
      pipeTarget([A.path("dump.zlib-d31.kdump"), "--vmlinux", A.vmlinux]),
      ...ARM64_KERNEL_SESSION,
    ], { gdb: "gdb-multiarch" });
    assertArm64KernelSession(r.out, A.expected);
  },
});

Deno.test("bad input: one-line errors naming the file, non-zero exit", async () => {
  const run = async (args: string[]) => {
    const r = await new Deno.Command(SERVER[0], {
      args: [...SERVER.slice(1), ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: r.code, err: new TextDecoder().decode(r.stderr) };
  };
  const missing = await run(["/nonexistent/vmcore"]);
  assert.notEqual(missing.code, 0);
  assert.match(missing.err, /^kdump-gdbserver: \/nonexistent\/vmcore: open: /);
  assert.equal(missing.err.trim().split("\n").length, 1);
  const notDump = await run([B.path("console.log")]);
  assert.notEqual(notDump.code, 0);
  assert.match(notDump.err, /console\.log: header: not a vmcore/);
  const usage = await run([]);
  assert.equal(usage.code, 2);
});

Deno.test("gdb kernel mode: user addresses read through the running process's page tables", async () => {
  // The crasher wrote "c\n" to /proc/sysrq-trigger; its user buffer shows in the backtrace when
  // user pages are in the dump (the ELF), and a thread's process is the one on that CPU.
  const r = await runGdb([
    pipeTarget([B.path("dump.elf"), "--vmlinux", B.vmlinux]),
    "bt 12",
    `thread ${E.crashed_cpu + 1}`,
  ]);
  assert.match(r.out, /ksys_write \(fd=[^,]*, buf=0x[0-9a-f]+ "c\\n", count=2\)/, r.out);
  const filtered = await runGdb([
    pipeTarget([B.path("dump.zlib-d31.kdump"), "--vmlinux", B.vmlinux]),
    "bt 12",
  ]);
  assert.match(filtered.out, /buf=0x[0-9a-f]+ <error: Cannot access memory/);
});

Deno.test("gdb: QEMU's Qqemu.PhyMemMode switch reads physical memory", async () => {
  const banner = big(E.system_map.linux_banner) + big(E.kaslr_offset);
  const r = await runGdb([
    pipeTarget([B.path("dump.lzo-d31.kdump")]),
    `monitor vtop 0x${banner.toString(16)}`,
    "python import re; gdb.set_convenience_variable('pa', int(re.search(r'physical (0x[0-9a-f]+)', gdb.execute('monitor vtop " +
    `0x${banner.toString(16)}` + "', to_string=True)).group(1), 16))",
    "maint packet Qqemu.PhyMemMode:1",
    "x/s $pa",
    "maint packet qqemu.PhyMemMode",
    "maint packet Qqemu.PhyMemMode:0",
  ]);
  assert.match(r.out, /received: "OK"/);
  assert.match(r.out, /received: "1"/);
  const physLine = r.out.split("\n").find((l) => /^0x[0-9a-f]+:\s+"Linux version/.test(l));
  assert.ok(physLine, r.out);
  assert.ok(!physLine.startsWith("0xffff"), "read at a physical address");
  assert.ok(physLine.includes(E.banner.slice(0, 40)));
});

Deno.test({
  name: "a vmlinux of another build: warned, and the server falls back on the dump's own types",
  ignore: !hasBoot("x86_64-6.12"),
  async fn() {
    const other = boot("x86_64-6.12").vmlinux;
    const r = await new Deno.Command(SERVER[0], {
      args: [...SERVER.slice(1), "--stdio", B.path("dump.zlib-d31.kdump"), "--vmlinux", other],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(r.stderr);
    assert.match(err, new RegExp(`build-id [0-9a-f]+ differs from the dump's ${E.build_id}`));
    assert.match(err, /built for another release/);
    assert.match(err, /types: +BTF and kallsyms found in the dump/);
    assert.ok(err.includes(`CPU ${crashed.cpu}: ${crashed.comm} (pid ${crashed.pid})`), err);
  },
});

Deno.test({
  name:
    "README's per-CPU recipe: &runqueues less the KASLR offset plus __per_cpu_offset[N] is CPU N's runqueue in gdb, as monitor per_cpu places it",
  ignore: !hasBoot("x86_64-6.1"),
  async fn() {
    const off = `0x${big(E.kaslr_offset).toString(16)}`;
    const rq = (cpu: number) =>
      `(*(struct rq *)((char *)&runqueues - ${off} + __per_cpu_offset[${cpu}]))`;
    const r = await runGdb([
      pipeTarget([B.path("dump.zlib-d31.kdump"), "--vmlinux", B.vmlinux]),
      ...E.cpus.map((c: { cpu: number }) => `p ${rq(c.cpu)}.curr->pid`),
      ...E.cpus.map((c: { cpu: number }) => `p/x &${rq(c.cpu)}`),
      "monitor per_cpu runqueues",
    ]);
    // Each CPU's current task is the one drgn found running there.
    for (const c of E.cpus) assert.match(r.out, new RegExp(`^\\$${c.cpu + 1} = ${c.pid}$`, "m"));
    for (const c of E.cpus) {
      const addr = new RegExp(`^\\$${E.cpus.length + c.cpu + 1} = (0x[0-9a-f]+)$`, "m").exec(r.out);
      assert.ok(addr, r.out);
      assert.match(r.out, new RegExp(`^ +${c.cpu} ${addr[1].replace("0x", "0x0*")} `, "m"));
    }
  },
});

/** gdb's output after each `echo <<NAME>>\n` marker, by NAME. */
function sections(out: string): Map<string, string> {
  const map = new Map<string, string>();
  const parts = out.split(/^<<([^>]+)>>$/m);
  for (let i = 1; i + 1 < parts.length; i += 2) map.set(parts[i], parts[i + 1]);
  return map;
}

/**
 * kdb's first Call Trace frame (`delay_tsc+0x33/0xa0`) and gdb's `info symbol $pc` of the same
 * thread (`delay_tsc + 51 in section .text`), both as `name+offset`.
 */
function firstFrames(section: string): { kdb?: string; gdb?: string } {
  const kdb = /^Call Trace:\n(?: <\w+>\n)*\s*(\S+)\+0x([0-9a-f]+)\/0x[0-9a-f]+$/m.exec(section);
  const gdb = /^(\S+) \+ (\d+) in section \.text/m.exec(section);
  return {
    kdb: kdb ? `${kdb[1]}+${parseInt(kdb[2], 16)}` : undefined,
    gdb: gdb ? `${gdb[1]}+${gdb[2]}` : undefined,
  };
}

/** `monitor CMD` with its output on gdb's stdout, in order with the rest (batch gdb prints a
 * monitor command's output on stderr). */
function monitor(command: string): string {
  return `python print(gdb.execute("monitor ${command}", to_string=True), end="")`;
}

Deno.test("gdb: monitor bt, rd and cpu run in the thread gdb selected, registers cached or not", async () => {
  // Each CPU's thread in turn, then back the other way: kdb follows both ways.
  const order = [...E.cpus, ...E.cpus.slice().reverse()];
  const perCpu = order.flatMap((c: { cpu: number }, i: number) => [
    `thread ${c.cpu + 1}`,
    `echo <<${i} cpu ${c.cpu}>>\\n`,
    monitor("bt"),
    "info symbol $pc",
    monitor("rd"),
    monitor("cpu"),
  ]);
  const r = await runGdb([
    pipeTarget([B.path("dump.zlib-d31.kdump"), "--vmlinux", B.vmlinux]),
    // gdb reads every thread's registers here: the `thread N` below send `T`, no `Hg`.
    "info threads",
    ...perCpu,
    "echo <<held>>\\n",
    `thread ${E.crashed_cpu + 1}`,
    monitor("cpu 0"),
    monitor("cpu"),
    "echo <<reselected>>\\n",
    `thread ${E.crashed_cpu + 1}`,
    monitor("cpu"),
  ]);
  const got = sections(r.out);
  const firsts = new Set<string>();
  order.forEach((c: Expected, i: number) => {
    const s = got.get(`${i} cpu ${c.cpu}`);
    assert.ok(s, `section for cpu ${c.cpu}\n${r.out}`);
    assert.match(s, new RegExp(`^Stack traceback for pid ${c.pid}\\n`, "m"), s);
    const f = firstFrames(s);
    assert.ok(f.kdb && f.gdb, `cpu ${c.cpu}: a first frame from kdb and from gdb\n${s}`);
    assert.equal(f.kdb, f.gdb, `cpu ${c.cpu}: kdb's bt starts where gdb's thread is`);
    firsts.add(f.kdb);
    const rip = big(c.registers.rip).toString(16).padStart(16, "0");
    assert.match(s, new RegExp(`\\bip: ${rip}\\b`), `cpu ${c.cpu}: rd shows its rip\n${s}`);
    assert.match(s, new RegExp(`^Currently on cpu ${c.cpu}$`, "m"), s);
  });
  assert.equal(firsts.size, E.cpus.length, "each thread's stack is its own");
  // `monitor cpu N` moves kdb until gdb's user selects a thread again (the same one, too).
  assert.match(got.get("held")!, /^Currently on cpu 0$/m);
  assert.match(got.get("reselected")!, new RegExp(`^Currently on cpu ${E.crashed_cpu}$`, "m"));
});
