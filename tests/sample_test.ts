// The bundled sample dump (committed, no fixture build needed) served to real gdb without a
// vmlinux: thread names and the banner come from the kallsyms and BTF inside the dump.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { pipeTarget, runGdb } from "./gdb_helpers.ts";

const SAMPLE = new URL("../testdata/sample/x86_64-6.1.kdump", import.meta.url).pathname;
const E = JSON.parse(
  readFileSync(new URL("../testdata/sample/expected.json", import.meta.url), "utf8"),
);

Deno.test("sample dump: gdb without a vmlinux sees named CPU threads and kernel data", async () => {
  const r = await runGdb([
    pipeTarget([SAMPLE]),
    "info threads",
    "monitor sym linux_banner",
    'python gdb.execute("x/s " + gdb.execute("monitor sym linux_banner", to_string=True).split()[-1])',
    "monitor sys",
  ]);
  for (const cpu of E.cpus) {
    assert.ok(r.out.includes(`CPU ${cpu.cpu}: ${cpu.comm} (pid ${cpu.pid})`), r.out);
  }
  const addr = BigInt(E.system_map.linux_banner) + BigInt(E.kaslr_offset);
  assert.ok(r.out.includes(`linux_banner = 0x${addr.toString(16)}`), r.out);
  assert.ok(r.out.includes(E.banner.slice(0, 60)), "banner read through the page tables");
  assert.match(r.out, new RegExp(`panic on CPU ${E.crashed_cpu}`));
  assert.match(r.out, /BTF and kallsyms found in the dump/);
  // The banner's and monitor sys's facts keep one column: the header's CPU count is drgn's.
  assert.match(r.out, new RegExp(`^kdump header: version \\d+, ${E.cpus.length} CPUs$`, "m"));
  for (const key of ["dump", "format", "release", "CPUs", "KASLR", "types", "dump level"]) {
    assert.match(r.out, new RegExp(`^${key}:${" ".repeat(13 - key.length)}\\S`, "m"), key);
  }
});

Deno.test("deno task demo: the gdb session on the sample ends with the panic CPU's kernel backtrace and log", async () => {
  const r = await new Deno.Command("bash", {
    args: [new URL("../cli/demo.sh", import.meta.url).pathname],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const out = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, out);
  const crashed = E.cpus.find((c: { cpu: number }) => c.cpu === E.crashed_cpu);
  assert.ok(out.includes(`Stack traceback for pid ${crashed.pid}\n`), out);
  // The frames drgn unwound from the caller of panic on (by function name; inlined ones aside).
  const bt = out.slice(out.indexOf("Call Trace:"));
  for (const fn of ["panic", "sysrq_handle_crash", "write_sysrq_trigger", "ksys_write"]) {
    assert.ok(crashed.stack.includes(fn), fn);
    assert.match(bt, new RegExp(`^ ${fn}\\+0x[0-9a-f]+/0x[0-9a-f]+$`, "m"));
    // gdb's own `bt`, from the symbol file the server made from the dump, has them too.
    assert.match(out, new RegExp(`^#\\d+ +0x[0-9a-f]+ in ${fn} \\(\\)$`, "m"), fn);
  }
  assert.match(out, /\] ---\[ end Kernel panic - not syncing: sysrq triggered crash \]---\n/);
});
