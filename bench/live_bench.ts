/**
 * Live-guest benchmarks, side by side in one run against gdb straight on QEMU's gdbstub:
 *
 * 1. `dump binary memory` of 16 MiB of kernel text (from `_text`): through us with the RAM
 *    file, through us without it (the gdbstub's physical mode), and gdb on QEMU directly;
 * 2. attach to the first kernel-aware `bt` (symbols already loaded, timed inside gdb);
 * 3. `stepi` and breakpoint-hit latency (per operation, timed inside gdb).
 *
 * Boots one guest (tests/live_guest.ts). Run: `deno run -A bench/live_bench.ts [--repeat N]`.
 * Prints a Markdown table (the BENCHMARKS.md section).
 */

import { parseArgs } from "node:util";
import { bootGuest, qmpCommand } from "../tests/live_guest.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SERVER = `deno run -A --v8-flags=--max-semi-space-size=1 ${ROOT}cli/main.ts`;
const { values } = parseArgs({
  options: {
    repeat: { type: "string", default: "3" },
    // Another checkout's server as one more row (e.g. the commit before a change), same run.
    compare: { type: "string" },
  },
});
const repeat = Number(values.repeat);

const guest = await bootGuest();
const tmp = await Deno.makeTempDir();
try {
  const offsetRun = await gdb([
    `target remote | ${SERVER} --stdio --qemu 127.0.0.1:${guest.gdbPort} --guest-ram ${guest.ramPath} --vmlinux ${guest.vmlinux}`,
    "monitor sys",
  ], false);
  const offset = offsetRun.match(/kernel offset (0x[0-9a-f]+)/)![1];
  const direct = `target remote 127.0.0.1:${guest.gdbPort}`;
  const ways: [string, string[] | undefined, string?][] = [
    ["kdump-gdbserver --guest-ram", ["--guest-ram", guest.ramPath]],
    ...(values.compare
      ? [[`--guest-ram, ${values.compare}`, ["--guest-ram", guest.ramPath], values.compare] as [
        string,
        string[],
        string,
      ]]
      : []),
    ["kdump-gdbserver (gdbstub reads)", []],
    ["gdb on QEMU's gdbstub", undefined],
  ];
  const rows: string[][] = [];
  for (const [name, extra, root] of ways) {
    // Over TCP, as in real use (gdb reads a pipe one byte at a time: ~1 MB/s).
    const server = extra
      ? await startServer([...extra, "--vmlinux", guest.vmlinux], root)
      : undefined;
    const target = server ? `target remote 127.0.0.1:${server.port}` : direct;
    const bulk: number[] = [];
    const attach: number[] = [];
    const stepi: number[] = [];
    const hit: number[] = [];
    for (let i = 0; i < repeat; i++) {
      await qmpCommand(guest.qmpPort, "stop");
      const out = await gdb([
        `file ${guest.vmlinux} -o ${offset}`,
        "python import time; t0 = time.perf_counter()",
        target,
        "bt 5",
        "python print('ATTACH_BT', time.perf_counter() - t0)",
        "python t0 = time.perf_counter()",
        `dump binary memory ${tmp}/m.bin (char*)&_text (char*)&_text+0x1000000`,
        "python print('BULK', time.perf_counter() - t0)",
        "python t0 = time.perf_counter()",
        "python [gdb.execute('stepi', to_string=True) for _ in range(50)]",
        "python print('STEPI', (time.perf_counter() - t0) / 50)",
        "break hrtimer_interrupt",
        "python t0 = time.perf_counter()",
        "python [gdb.execute('continue', to_string=True) for _ in range(10)]",
        "python print('HIT', (time.perf_counter() - t0) / 10)",
        "delete",
        "detach",
      ], true);
      const get = (k: string) => Number(out.match(new RegExp(`${k} ([0-9.e-]+)`))?.[1] ?? NaN);
      attach.push(get("ATTACH_BT"));
      bulk.push(get("BULK"));
      stepi.push(get("STEPI"));
      hit.push(get("HIT"));
      if (Number.isNaN(get("HIT"))) console.error(out);
    }
    await server?.stop();
    const best = (a: number[]) => Math.min(...a);
    rows.push([
      name,
      `${best(bulk).toFixed(2)} s (${(16 / best(bulk)).toFixed(1)} MiB/s)`,
      `${(best(attach) * 1000).toFixed(0)} ms`,
      `${(best(stepi) * 1000).toFixed(2)} ms`,
      `${(best(hit) * 1000).toFixed(1)} ms`,
    ]);
  }
  console.log(`best of ${repeat}; guest: 512 MiB, 2 vCPUs, TCG; ${cpuModel()}`);
  console.log(
    "| path | dump 16 MiB of kernel text | attach to first bt | stepi | breakpoint hit |",
  );
  console.log("| --- | --- | --- | --- | --- |");
  for (const r of rows) console.log(`| ${r.join(" | ")} |`);
} finally {
  await guest.stop();
  await Deno.remove(tmp, { recursive: true });
}

/** The server on a free port, started for one way of the benchmark. */
async function startServer(args: string[], root = ROOT) {
  const child = new Deno.Command("deno", {
    args: [
      "run",
      "-A",
      "--v8-flags=--max-semi-space-size=1",
      `${root.endsWith("/") ? root : root + "/"}cli/main.ts`,
      "--port",
      "0",
      "--qemu",
      `127.0.0.1:${guest.gdbPort}`,
      ...args,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  const pump = (async () => {
    for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) text += c;
  })();
  let port = 0;
  for (let i = 0; i < 600 && !port; i++) {
    port = Number(text.match(/listening on [^\s]+:(\d+)/)?.[1] ?? 0);
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!port) throw new Error(`server did not start: ${text}`);
  return {
    port,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await pump.catch(() => {});
    },
  };
}

async function gdb(commands: string[], timed: boolean): Promise<string> {
  const args = ["-nx", "-batch", "-ex", "set sysroot /", "-ex", "set pagination off"];
  if (timed) args.push("-ex", "set confirm off");
  for (const c of commands) args.push("-ex", c);
  const r = await new Deno.Command("gdb", {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(600_000),
  }).output();
  return new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
}

function cpuModel(): string {
  try {
    return Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "";
  } catch {
    return "";
  }
}
