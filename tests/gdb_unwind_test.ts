// Real gdb's `bt` through the kernel's entry code, with nothing typed: the server offers gdb unwind
// tables generated from the dump's ORC data (lib/gdb_unwind_elf.ts), so gdb stops cleanly at
// entry_SYSCALL_64 (no `?? ()` frames made of user registers), unwinds the interrupt entry into
// the interrupted user pc, and ends kernel threads at ret_from_fork and idle tasks at their
// startup code. Every frame name must equal drgn's unwind of the same task (expected.json).
import assert from "node:assert/strict";
import { big, boot, hasBoot } from "./fixtures.ts";
import { pipeTarget, runGdb } from "./gdb_helpers.ts";

function have(cmd: string): boolean {
  return new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
    .outputSync().success;
}

/** Function names of gdb's backtrace lines (inline frames included, as drgn lists them). */
function frameNames(bt: string): string[] {
  const names: string[] = [];
  for (const line of bt.split("\n")) {
    const m = /^#\d+\s+(?:0x[0-9a-f]+ in )?(\S+) \(/.exec(line);
    if (m && m[1] !== "??") names.push(m[1]);
  }
  return names;
}

/**
 * gdb's frames are drgn's, in order, and end where drgn's end; gdb may add the frames of tail
 * calls it infers from DWARF call-site data (`schedule_timeout_interruptible` jumping to
 * `schedule_timeout`), which neither drgn nor the kernel's unwinder show.
 */
function assertSameFrames(gdb: string[], drgn: string[], what: string): void {
  let i = 0;
  for (const name of gdb) if (name === drgn[i]) i++;
  assert.equal(i, drgn.length, `drgn's frames ${drgn.join(" ")} not all in gdb's:\n${what}`);
  // drgn stops on arm64's IRQ stack (do_interrupt_handler); gdb goes on to the entry from user
  // mode, and stops there.
  if (gdb.at(-1) !== drgn.at(-1)) assert.match(gdb.at(-1)!, /^el0t_64_(irq|sync)$/, what);
  else assert.ok(gdb.length - drgn.length <= 2, what);
}

const CASES = [
  { boot: "x86_64-6.1", file: "dump.zlib-d31.kdump", gdb: "gdb" },
  { boot: "x86_64-6.1-la57", file: "dump.zlib-d31.kdump", gdb: "gdb" },
  { boot: "x86_64-6.12", file: "dump.zlib-d1.kdump", gdb: "gdb" },
  { boot: "aarch64-6.1", file: "dump.zlib-d31.kdump", gdb: "gdb-multiarch" },
];

/** Each thread's frames, as tests/gdb_frames.py prints them. */
function framesOf(out: string): Map<number, { pc: string; inline: boolean; name: string }[]> {
  const byThread = new Map<number, { pc: string; inline: boolean; name: string }[]>();
  for (const m of out.matchAll(/^FRAME (\d+) ([0-9a-f]+) ([01]) (\S+)$/gm)) {
    const list = byThread.get(Number(m[1])) ?? [];
    list.push({ pc: m[2], inline: m[3] === "1", name: m[4] });
    byThread.set(Number(m[1]), list);
  }
  return byThread;
}

/** A function's name without the compiler's suffixes (`.cold`, `.isra.0`): DWARF has none. */
function baseName(name: string): string {
  return name.split(".")[0];
}

const FRAMES_SCRIPT = new URL("./gdb_frames.py", import.meta.url).pathname;

/**
 * gdb's frames without a vmlinux (`bare`, tests/gdb_frames.py output) against gdb's with it
 * (`full`), thread by thread: the same pcs, the same functions, the vmlinux's inlined and inferred
 * tail-call frames left out (no frame of theirs is on the stack, and kallsyms knows only real
 * functions), at least `minFrames` each. `firstOnly`: only the first frame.
 */
function assertSameFramesByPc(bare: string, full: string, firstOnly: boolean, minFrames: number) {
  const without = framesOf(bare);
  for (const [thread, frames] of framesOf(full)) {
    const want = frames.filter((f) => !f.inline).map((f) => `${f.pc} ${baseName(f.name)}`);
    const got = (without.get(thread) ?? []).map((f) => `${f.pc} ${baseName(f.name)}`);
    const what = `thread ${thread}: ${got.join(", ")}\nagainst ${want.join(", ")}`;
    if (firstOnly) {
      assert.equal(got[0], want[0], what);
      continue;
    }
    // The same functions, except that in assembly kallsyms names the inner label the pc is past,
    // as the kernel's own Call Trace does (`entry_SYSCALL_64_after_hwframe` where the vmlinux's
    // sized symbol is `entry_SYSCALL_64`).
    const pcs = (l: string[]) => l.map((x) => x.split(" ")[0]);
    assert.deepEqual(pcs(got), pcs(want), what);
    got.forEach((g, i) => {
      const [gName, wName] = [g.split(" ")[1], want[i].split(" ")[1]];
      assert.ok(gName === wName || gName.startsWith(wName + "_"), `${g} against ${want[i]}`);
    });
    assert.ok(got.length >= minFrames, what);
  }
}

for (const c of CASES) {
  const ignore = !hasBoot(c.boot) || !have(c.gdb);

  Deno.test({
    name:
      `gdb unwind: ${c.boot} without a vmlinux: the dump's kallsyms, ORC or frame records give gdb the vmlinux's frames`,
    ignore,
    async fn() {
      const b = boot(c.boot);
      const run = (args: string[]) =>
        runGdb([pipeTarget([b.path(c.file), ...args]), `source ${FRAMES_SCRIPT}`], { gdb: c.gdb });
      const bare = await run([]);
      const full = await run(["--vmlinux", b.vmlinux]);
      // gdb loads the server's generated executable by itself (no `file`, no `sharedlibrary`).
      assert.match(
        bare.out,
        /Reading symbols from target:\/kdump-gdbserver\/kernel-symbols/,
        bare.out,
      );
      assert.equal(framesOf(bare.out).size, b.expected.cpus.length, bare.out);
      assertSameFramesByPc(bare.out, full.out, false, 3);
      if (c.boot === "x86_64-6.1" || c.boot === "aarch64-6.1") {
        // Every task's (sleeping ones from the registers the scheduler saved), likewise.
        const tasks = await run(["--tasks"]);
        const tasksFull = await run(["--tasks", "--vmlinux", b.vmlinux]);
        assert.ok(framesOf(tasks.out).size >= 50, tasks.out);
        assertSameFramesByPc(tasks.out, tasksFull.out, false, 1);
      }
    },
  });

  Deno.test({
    name: `gdb unwind: ${c.boot}: every CPU's bt ends at the user boundary, as drgn's`,
    ignore,
    async fn() {
      const b = boot(c.boot);
      const e = b.expected;
      const r = await runGdb([
        pipeTarget([b.path(c.file), "--vmlinux", b.vmlinux]),
        "thread apply all bt",
      ], { gdb: c.gdb });
      assert.doesNotMatch(r.out, /Backtrace stopped/, r.out);
      for (const cpu of e.cpus) {
        const at = r.out.indexOf(`\nThread ${cpu.cpu + 1} (`);
        assert.ok(at >= 0, r.out);
        const end = r.out.indexOf("\nThread ", at + 1);
        const bt = r.out.slice(at, end < 0 ? undefined : end);
        const names = frameNames(bt);
        const lines = bt.split("\n").filter((l) => l.startsWith("#"));
        const unknown = lines.filter((l) => l.includes("?? ("));
        assertSameFrames(names, cpu.stack, bt);
        const task = e.tasks.find((t: { task: string }) => t.task === cpu.task);
        if (cpu.cpu === e.crashed_cpu) {
          // The syscall entry is the outermost frame: nothing below it.
          assert.match(names.at(-1)!, /^(entry_SYSCALL_64|el0t_64_sync)$/, bt);
          assert.equal(unknown.length, 0, bt);
        } else if (unknown.length) {
          // An interrupt taken in user mode: one user frame, at the pc the entry saved.
          assert.equal(unknown.length, 1, bt);
          assert.ok(lines.at(-1)!.includes("?? ("), bt);
          const pc = BigInt(/0x[0-9a-f]+/.exec(lines.at(-1)!)![0]);
          assert.equal(pc, big(task.user_registers.rip ?? task.user_registers.pc), bt);
        }
      }
    },
  });

  Deno.test({
    name: `gdb unwind: ${c.boot} --tasks: every task's bt = drgn's, no ?? frames`,
    ignore,
    async fn() {
      const b = boot(c.boot);
      const e = b.expected;
      const r = await runGdb([
        pipeTarget([b.path(c.file), "--vmlinux", b.vmlinux, "--tasks"]),
        "thread apply all bt",
      ], { gdb: c.gdb });
      const blocks = r.out.split(/\n(?=Thread \d+ \(Thread )/).slice(1);
      let compared = 0;
      for (const t of e.tasks) {
        if (t.stack_error || !t.stack?.length || t.on_cpu !== null) continue;
        // Kernel threads (and idle tasks) are named in brackets.
        const block = blocks.find((bl) =>
          bl.includes(`"${t.pid} ${t.comm}"`) || bl.includes(`"${t.pid} [${t.comm}]"`)
        );
        assert.ok(block, `no thread for ${t.pid} ${t.comm}`);
        if (c.gdb === "gdb-multiarch" && t.comm === "swapper/0") {
          // gdb 13's own DWARF unwind of this arm64 kernel's arch_call_rest_init (init text,
          // not entry code) yields the same frame again, so it stops there with "previous frame
          // identical"; the frames it shows are still drgn's.
          const names = frameNames(block);
          assert.deepEqual(names, t.stack.slice(0, names.length), block);
          continue;
        }
        assert.doesNotMatch(block, /Backtrace stopped/, block);
        assertSameFrames(frameNames(block), t.stack, block);
        assert.doesNotMatch(block, /\?\? \(/, block);
        compared++;
      }
      assert.ok(compared >= 20, `compared ${compared}`);
    },
  });
}
