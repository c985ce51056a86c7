// kdb's run commands (lib/kdb_run.ts) on the real x86_64 6.1 dump's kernel, with a recording
// RunControl standing in for QEMU's stub: what goes into the stub and when, and kdb's messages.
// The same commands on a real guest: tests/live_gdb_test.ts.
import assert from "node:assert/strict";
import { boot, hasBoot } from "./fixtures.ts";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTarget } from "../lib/kernel_target.ts";
import { KdbShell } from "../lib/kdb.ts";
import type { RunControl } from "../lib/target.ts";

const BOOT = "x86_64-6.1";

/** A shell over the dump's kernel with run control that records every call. */
function liveShell(resume: (stepThread?: number) => string | undefined = () => undefined) {
  const kernel = new Kernel(openDump([boot(BOOT).path("dump.zlib-d31.kdump")]));
  const calls: string[] = [];
  const run = {
    breakpoint(insert: boolean, type: number, address: bigint, kind: number) {
      calls.push(`${insert ? "Z" : "z"}${type},${address.toString(16)},${kind}`);
      return "OK";
    },
    writeMemory(address: bigint, data: Uint8Array, thread: number) {
      calls.push(`M${address.toString(16)}:${[...data].join(",")}@${thread}`);
      return undefined;
    },
    writeRegisters(thread: number, values: ReadonlyMap<string, bigint>) {
      calls.push(`P${thread}:${[...values].map(([k, v]) => `${k}=${v.toString(16)}`)}`);
      return undefined;
    },
    generation: 0,
  };
  const target = Object.assign(new KernelTarget(kernel), { run: run as unknown as RunControl });
  const resumes: (number | undefined)[] = [];
  const sh = new KdbShell(target, [], {
    resume: (stepThread) => {
      resumes.push(stepThread);
      return resume(stepThread);
    },
  });
  const cmd = (line: string) => {
    let out = "";
    sh.run(line, (t) => out += t);
    return out;
  };
  return { kernel, sh, calls, resumes, cmd };
}

Deno.test({
  name: "kdb bp/bph/bl/bc/bd/be: kdb's lines and diagnostics",
  ignore: !hasBoot(BOOT),
  fn() {
    const { kernel, cmd, calls } = liveShell();
    try {
      const at = kernel.symbol("do_nanosleep")!.toString(16);
      assert.equal(
        cmd("bp do_nanosleep"),
        `Instruction(i) BP #0 at 0x${at} (do_nanosleep)\n` +
          `    is enabled   addr at ${at}, hardtype=0 installed=0\n\n`,
      );
      assert.equal(
        cmd("bp do_nanosleep"),
        `You already have a breakpoint at 0x${at}\ndiag: -12: Duplicate breakpoint address\n`,
      );
      const jiffies = kernel.symbol("jiffies")!.toString(16);
      assert.equal(
        cmd("bph jiffies dataw 8"),
        `Data Write BP #1 at 0x${jiffies} (jiffies)\n` +
          `    is enabled   addr at ${jiffies}, hardtype=2 installed=0\n\n`,
      );
      assert.equal(cmd("bph schedule datar 9"), "diag: -19: Invalid length field\n");
      assert.equal(cmd("bp 0"), "diag: -15: Illegal numeric value\n");
      assert.match(cmd("bl"), /^Instruction\(i\) BP #0 [\s\S]*^Data Write BP #1 /m);
      assert.equal(cmd("bd 1"), `Breakpoint 1 at 0x${jiffies} disabled\n`);
      assert.match(cmd("bl"), /^ {4}is disabled {2}addr at /m);
      assert.equal(cmd("be 1"), `Breakpoint 1 at 0x${jiffies} enabled\n`);
      assert.equal(cmd(`bc 0x${jiffies}`), `Breakpoint 1 at 0x${jiffies} cleared\n`);
      assert.equal(cmd("bc 5"), "diag: -13: Breakpoint not found\n");
      assert.equal(cmd("bc do_nanosleep"), "diag: -15: Illegal numeric value\n");
      // kdb's table has 16 entries.
      const symbols = ["schedule", "msleep", "vfs_read", "vfs_write", "do_sys_poll", "kfree"];
      const more = [...symbols, "kmalloc_trace", "ksys_read", "ksys_write", "do_exit"];
      for (const s of more) assert.match(cmd(`bp ${s}`), /BP #\d+ at /, s);
      assert.match(cmd("bp do_idle"), /BP #11 at /);
      for (const s of ["do_nanosleep+1", "do_nanosleep+2", "do_nanosleep+3", "do_nanosleep+4"]) {
        assert.match(cmd(`bp ${s}`), /BP #\d+ at /);
      }
      assert.equal(cmd("bp do_nanosleep+5"), "diag: -10: Too many breakpoints defined\n");
      assert.equal(cmd("bc *").split("\n").length - 1, 16);
      assert.equal(cmd("bc *"), "diag: -13: Breakpoint not found\n");
      assert.equal(cmd("bl"), "");
      // Nothing reached the stub: breakpoints go in at go.
      assert.deepEqual(calls, []);
    } finally {
      kernel.close();
    }
  },
});

Deno.test({
  name: "kdb go: breakpoints go in, come out at the stop; a CPU on one steps off it first",
  ignore: !hasBoot(BOOT),
  fn() {
    const { kernel, sh, cmd, calls, resumes } = liveShell();
    try {
      const cpu = sh.currentCpu;
      const pc = kernel.dump.cpus[cpu].registers.get("rip")!;
      const other = kernel.symbol("do_nanosleep")!;
      cmd(`bp 0x${pc.toString(16)}`);
      cmd("bp do_nanosleep");
      // The stopped CPU sits on breakpoint 0: it steps alone first, nothing in the stub.
      assert.equal(cmd("go"), "");
      assert.deepEqual(resumes, [cpu + 1]); // kernel mode: CPU N is thread N+1
      assert.deepEqual(calls, []);
      // The step's stop: both go in, and everything runs.
      assert.deepEqual(sh.entered(cpu, 5), { text: "", resume: true });
      assert.deepEqual(calls, [`Z0,${pc.toString(16)},1`, `Z0,${other.toString(16)},1`]);
      // The next stop (the dump's CPU is still at pc): out again, and kdb says where.
      const entry = sh.entered(cpu, 5);
      assert.match(
        entry.text,
        new RegExp(
          `^Entering kdb \\(current=0x[0-9a-f]{16}, pid \\d+\\) on processor ${cpu} ` +
            `due to Breakpoint @ 0x${pc.toString(16)}$`,
        ),
      );
      assert.deepEqual(calls.slice(2), [`z0,${pc.toString(16)},1`, `z0,${other.toString(16)},1`]);
      // ss: this CPU alone, no breakpoints; kdb says SS trap.
      calls.length = 0;
      assert.equal(cmd("ss"), "");
      assert.deepEqual(resumes.at(-1), cpu + 1);
      assert.match(sh.entered(cpu, 5).text, /due to SS trap @ 0x[0-9a-f]+$/);
      // A ^C: Keyboard Entry.
      cmd("bc 0");
      cmd("go");
      assert.match(sh.entered(cpu, 2).text, /due to Keyboard Entry$/);
      assert.deepEqual(calls, [`Z0,${other.toString(16)},1`, `z0,${other.toString(16)},1`]);
    } finally {
      kernel.close();
    }
  },
});

Deno.test({
  name: "kdb go refused (gdb attached): no breakpoint stays in the stub",
  ignore: !hasBoot(BOOT),
  fn() {
    const { kernel, cmd, calls } = liveShell(() => "gdb is attached: continue from gdb");
    try {
      cmd("bp do_nanosleep");
      assert.equal(cmd("go"), "go: gdb is attached: continue from gdb\n");
      const at = kernel.symbol("do_nanosleep")!.toString(16);
      assert.deepEqual(calls, [`Z0,${at},1`, `z0,${at},1`]);
    } finally {
      kernel.close();
    }
  },
});

Deno.test({
  name: "kdb mm and rm: the write, kdb's echo, widths, registers of the current task",
  ignore: !hasBoot(BOOT),
  fn() {
    const { kernel, sh, cmd, calls } = liveShell();
    try {
      const jiffies = kernel.symbol("jiffies")!;
      const thread = sh.currentCpu + 1; // kernel mode: CPU N is thread N+1
      assert.equal(cmd("mm jiffies 0x1234"), `0x${jiffies.toString(16)} = 0x1234\n`);
      assert.equal(
        cmd("mm4 jiffies+8 0x123456789"),
        `0x${(jiffies + 8n).toString(16)} = 0x123456789\n`,
      );
      assert.deepEqual(calls, [
        `M${jiffies.toString(16)}:52,18,0,0,0,0,0,0@${thread}`,
        `M${(jiffies + 8n).toString(16)}:137,103,69,35@${thread}`,
      ]);
      assert.equal(
        cmd("mm3 jiffies 1"),
        "diag: -3: " +
          "Illegal value for BYTESPERWORD use 1, 2, 4 or 8, 8 is only allowed on 64 bit systems\n",
      );
      assert.equal(cmd("mm jiffies"), "diag: -2: Improper argument count, see usage.\n");
      // A word that starts like mm is not mm (kdb_mm's rule): here, a symbol.
      assert.equal(cmd("mmput"), "Unknown kdb command: 'mmput'\n");
      calls.length = 0;
      assert.equal(cmd("rm %ax 0x5"), "");
      assert.equal(cmd("rm flags 0x100000246"), ""); // kdb's flags are 4 bytes
      assert.deepEqual(calls, [`P${thread}:rax=5`, `P${thread}:eflags=246`]);
      assert.equal(cmd("rm nosuch 1"), "diag: -17: Invalid register name\n");
      // A sleeping task has no registers kdb could change.
      cmd("pid 1");
      assert.equal(
        cmd("rm ax 1"),
        "No current kdb registers.  You may need to select another task\n" +
          "diag: -17: Invalid register name\n",
      );
    } finally {
      kernel.close();
    }
  },
});

Deno.test({
  name: "kdb on a dump: run commands say they cannot; words that only start like them are symbols",
  ignore: !hasBoot(BOOT),
  fn() {
    const kernel = new Kernel(openDump([boot(BOOT).path("dump.zlib-d31.kdump")]));
    try {
      const sh = new KdbShell(new KernelTarget(kernel));
      const cmd = (line: string) => {
        let out = "";
        sh.run(line, (t) => out += t);
        return out;
      };
      assert.equal(
        cmd("bp schedule"),
        "bp: the target is a crash dump: memory and registers are read-only, nothing runs\n",
      );
      for (
        const name of ["mmput", "rmap_walk", "bpf_prog_put", "blk_mq_run_hw_queue", "bdi_init"]
      ) {
        const at = kernel.symbol(name)!.toString(16).padStart(16, "0");
        assert.equal(cmd(name), `${name} = 0x${at} (${name})\n`);
      }
    } finally {
      kernel.close();
    }
  },
});
