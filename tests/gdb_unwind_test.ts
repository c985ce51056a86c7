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

for (const c of CASES) {
  const ignore = !hasBoot(c.boot) || !have(c.gdb);

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
