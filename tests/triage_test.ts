// Scripted triage on real dumps: -c runs console commands and exits, --json gives the facts a
// script sorts dumps by; both checked against the guest's console and drgn (expected.json).
import assert from "node:assert/strict";
import { big, boot, type Expected, hasBoot } from "./fixtures.ts";
import { runServer } from "./gdb_helpers.ts";

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await runServer(args);
  return { code: r.code, out: r.stdout, err: r.stderr };
}

function consoleKernelLines(text: string): string[] {
  return text.replaceAll("\r", "").split("\n").filter((l) => /^\[ *\d+\.\d{6}\] /.test(l));
}

for (const name of ["x86_64-6.1", "aarch64-6.1"]) {
  Deno.test({
    name: `-c and --json ${name}: console commands without a server, and the triage document`,
    ignore: !hasBoot(name),
    async fn() {
      const b = boot(name);
      const e: Expected = b.expected;
      const dump = b.path("dump.zlib-d31.kdump");
      const console = consoleKernelLines(await Deno.readTextFile(b.path("console.log")));
      const panicLine = console.find((l) =>
        l.includes("] Kernel panic - not syncing: ") && !l.includes("---[ end")
      )!;
      const message = panicLine.replace(/.*Kernel panic - not syncing: /, "");

      const c = await run([dump, "-c", "summary; dmesg 3;frobnicate"]);
      assert.equal(c.code, 0, c.err);
      assert.equal(c.err, "", "nothing on stderr: no banner, no server");
      const lines = c.out.split("\n");
      const prompt = lines[0].match(/^\[\d+\]kdb> /)![0];
      assert.equal(lines[0], `${prompt}summary`);
      assert.ok(lines.includes(`release    ${e.release}`), c.out);
      const at = lines.indexOf(`${prompt}dmesg 3`);
      assert.deepEqual(
        lines.slice(at + 1, at + 4).map((l) => l.replace(/^<\d+>/, "")),
        console.slice(-3),
      );
      assert.equal(lines[at + 4], `${prompt}frobnicate`);
      assert.equal(lines[at + 5], "Unknown kdb command: 'frobnicate'");

      const j = await run([dump, "--json"]);
      assert.equal(j.code, 0, j.err);
      const doc = JSON.parse(j.out);
      assert.equal(doc.version, 1);
      assert.equal(doc.arch, e.arch);
      assert.equal(doc.summary.release, e.release);
      assert.equal(doc.summary.build_id, e.build_id);
      assert.equal(doc.panic.message, message);
      assert.equal(doc.cpus.length, e.cpus.length);
      for (const cpu of e.cpus) {
        const ours = doc.cpus[cpu.cpu];
        // The first frame is the CPU's saved pc (drgn's innermost frame).
        assert.equal(BigInt(ours.backtrace.frames[0].pc), big(cpu.frames[0].pc));
      }
      // The panic CPU (on arm64, whose kallsyms lacks panic_cpu, from the log) is drgn's.
      assert.equal(doc.panic.cpu, e.crashed_cpu);
      assert.deepEqual(
        doc.cpus.map((c: Expected) => c.panic),
        e.cpus.map((c: Expected) => c.cpu === e.crashed_cpu),
      );
      if (e.arch === "x86_64") {
        assert.equal(doc.cpus[e.crashed_cpu].pid, e.console.crasher);
        // The user pc the panicking syscall came from, as the kernel printed it (RIP: 0033:…).
        const rip = console.map((l) => /\] RIP: 0033:(0x[0-9a-f]+)$/.exec(l)).find((m) => m);
        assert.ok(rip, "the console's user RIP line");
        const user = doc.cpus[e.crashed_cpu].backtrace.user_regs;
        assert.equal(BigInt(user.rip), BigInt(rip[1]));
      }
      for (const c of doc.cpus) assert.ok("user_regs" in c.backtrace);
      // The log: records with their level; those below 7 print as the console printed them.
      const shown = doc.dmesg.filter((r: Expected) => r.level < 7).flatMap((r: Expected) =>
        r.lines
      );
      assert.deepEqual(shown, console);
      // Every key is there even when the dump does not say (null), so scripts can rely on it.
      for (const k of ["uptime_seconds", "mem_total_kb", "taint", "date"]) {
        assert.ok(k in doc.summary, k);
      }
    },
  });
}

Deno.test({
  name: "-c on a file that is not a dump: one line, non-zero status",
  ignore: !hasBoot("x86_64-6.1"),
  async fn() {
    const r = await run([boot("x86_64-6.1").path("console.log"), "-c", "summary"]);
    assert.equal(r.code, 1);
    assert.equal(r.out, "");
    assert.equal(r.err.trim().split("\n").length, 1);
    assert.match(r.err, /console\.log: header: not a vmcore/);
  },
});
