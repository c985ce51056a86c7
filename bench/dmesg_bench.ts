/**
 * The kernel log from a dump, side by side with crash's `log` on the same dump:
 *   deno run -A bench/dmesg_bench.ts [--reps 3]
 *
 * Measured, per dump: our dmesg in process (cold: a fresh Kernel, the ring read and formatted),
 * the command line end to end (`kdump-gdbserver DUMP -c dmesg`, Deno's start included), and
 * crash 8.0.2 with the fixture's vmlinux (`crash -s vmlinux DUMP` running `log`, and running
 * nothing, to tell its start-up from the command). Prints a markdown table.
 */

import { parseArgs } from "node:util";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { logLines, readKernelLog } from "../lib/dmesg.ts";
import { boot, hasBoot } from "../tests/fixtures.ts";
import { SERVER } from "../tests/gdb_helpers.ts";

const { values } = parseArgs({ args: Deno.args, options: { reps: { type: "string" } } });
const reps = Number(values.reps ?? 3);

const CASES: [string, string][] = [
  ["x86_64-6.1", "dump.zlib-d31.kdump"],
  ["x86_64-6.1", "dump.elf"],
  ["x86_64-6.12", "dump.zlib-d31.kdump"],
  ["aarch64-6.1", "dump.zlib-d31.kdump"],
];

async function timed(cmd: string, args: string[], stdin = ""): Promise<[number, string]> {
  const t0 = performance.now();
  const p = new Deno.Command(cmd, { args, stdin: "piped", stdout: "piped", stderr: "null" })
    .spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(stdin));
  await w.close();
  const out = await p.output();
  return [(performance.now() - t0) / 1000, new TextDecoder().decode(out.stdout)];
}

const range = (xs: number[], digits: number) => {
  const lo = Math.min(...xs).toFixed(digits);
  const hi = Math.max(...xs).toFixed(digits);
  return lo === hi ? lo : `${lo}–${hi}`;
};

const haveCrash = await new Deno.Command("crash", { args: ["--version"], stdout: "null" })
  .output().then((r) => r.success, () => false);

console.log(
  "| dump | lines | ours, in process (ms) | ours, `-c dmesg` end to end (s) | crash `log` (s) | crash start-up only (s) | same lines as crash |",
);
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const [name, file] of CASES) {
  if (!hasBoot(name)) continue;
  const b = boot(name);
  const path = b.path(file);
  const inProcess: number[] = [];
  let lines: string[] = [];
  for (let i = 0; i < reps; i++) {
    const k = new Kernel(openDump([path]));
    const t0 = performance.now();
    lines = logLines(readKernelLog(k));
    inProcess.push(performance.now() - t0);
    k.close();
  }
  const cli: number[] = [];
  for (let i = 0; i < reps; i++) {
    cli.push((await timed(SERVER[0], [...SERVER.slice(1), path, "-c", "dmesg"]))[0]);
  }
  let crashLog = "n/a";
  let crashStart = "n/a";
  let same = "n/a";
  // crash 8.0.2 predates 6.12 and does not read these arm64 dumps: x86_64 6.1 only.
  if (haveCrash && name === "x86_64-6.1") {
    const withLog: number[] = [];
    const bare: number[] = [];
    let out = "";
    for (let i = 0; i < reps; i++) {
      const [t, o] = await timed("crash", ["-s", b.vmlinux, path], "log\nq\n");
      withLog.push(t);
      out = o;
      bare.push((await timed("crash", ["-s", b.vmlinux, path], "q\n"))[0]);
    }
    crashLog = range(withLog, 2);
    crashStart = range(bare, 2);
    // crash indents the further lines of a multi-line record where the console (and we)
    // repeat the record's timestamp: give them the prefix back before comparing.
    const theirs: string[] = [];
    let prefix = "";
    for (const l of out.split("\n")) {
      const m = /^(\[ *\d+\.\d{6}\] )/.exec(l);
      if (m) {
        prefix = m[1];
        theirs.push(l);
      } else if (prefix && l.startsWith(" ".repeat(prefix.length))) {
        theirs.push(prefix + l.slice(prefix.length));
      } else prefix = "";
    }
    same = theirs.length === lines.length && theirs.every((l, i) => l === lines[i])
      ? "yes"
      : `no (${theirs.length} vs ${lines.length})`;
  }
  console.log(
    `| ${name} ${file} | ${lines.length} | ${range(inProcess, 1)} | ${
      range(cli, 2)
    } | ${crashLog} | ${crashStart} | ${same} |`,
  );
}

// The 5000-task dump: kdb's task list and backtrace of every task, end to end, and crash's ps.
if (hasBoot("x86_64-6.1-tasks")) {
  const b = boot("x86_64-6.1-tasks");
  const path = b.path("dump.zlib-d31.kdump");
  console.log("");
  console.log(
    "| x86_64-6.1-tasks dump.zlib-d31.kdump | ours, `-c 'ps A'` (s) | ours, `-c 'bta A'` (s) | crash `ps` (s) | crash start-up only (s) |",
  );
  console.log("| --- | --- | --- | --- | --- |");
  const ps: number[] = [];
  const bta: number[] = [];
  const crashPs: number[] = [];
  const crashBare: number[] = [];
  let tasks = 0;
  for (let i = 0; i < reps; i++) {
    const [t, out] = await timed(SERVER[0], [...SERVER.slice(1), path, "-c", "ps A"]);
    ps.push(t);
    tasks = out.split("\n").filter((l) => /^0x[0-9a-f]{16} /.test(l)).length;
    bta.push((await timed(SERVER[0], [...SERVER.slice(1), path, "-c", "bta A"]))[0]);
    if (haveCrash) {
      crashPs.push((await timed("crash", ["-s", b.vmlinux, path], "ps\nq\n"))[0]);
      crashBare.push((await timed("crash", ["-s", b.vmlinux, path], "q\n"))[0]);
    }
  }
  console.log(
    `| ${tasks} rows | ${range(ps, 2)} | ${range(bta, 2)} | ${
      haveCrash ? range(crashPs, 2) : "n/a"
    } | ${haveCrash ? range(crashBare, 2) : "n/a"} |`,
  );
}
