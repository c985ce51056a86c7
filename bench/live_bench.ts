/**
 * Live-guest benchmarks, side by side in one run against gdb straight on QEMU's gdbstub:
 *
 * 1. `dump binary memory` of 16 MiB of kernel text (from `_text`): through us with the RAM
 *    file, through us without it (the gdbstub's physical mode), and gdb on QEMU directly;
 * 2. attach to the first kernel-aware `bt` (symbols already loaded, timed inside gdb);
 * 3. breakpoint-hit latency (`continue` to `hrtimer_interrupt`, which waits for the guest's next
 *    timer interrupt), the latency of a hit the guest reaches at once (from `hrtimer_interrupt`
 *    to `__hrtimer_run_queues`, which it calls: what the hit costs the tools, gdb and us), then
 *    `stepi` latency from that breakpoint (per operation, timed inside gdb).
 *
 * Boots one guest (tests/live_guest.ts). Run: `deno run -A bench/live_bench.ts [--repeat N]
 * [--gdb PATH] [--bulk-only] [--warm]`: `--gdb` times another gdb for every way (gdb 16 and
 * later read memory with binary `x` packets where the server offers them; QEMU 7.2's stub does
 * not); `--bulk-only` skips the breakpoint hits and steps; `--warm` times the session's third
 * dump of the range instead of its first (gdb's own first-dump costs left out).
 * Every way is measured once per round, round after round. Prints a Markdown table (the
 * BENCHMARKS.md section): best and median of the rounds.
 */

import { parseArgs } from "node:util";
import { bootGuest, qmpCommand } from "../tests/live_guest.ts";
import { listeningPort } from "./common.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SERVER = `deno run -A --v8-flags=--max-semi-space-size=1 ${ROOT}cli/main.ts`;
const { values } = parseArgs({
  options: {
    repeat: { type: "string", default: "3" },
    // Another checkout's server as one more row (e.g. the commit before a change), same run.
    compare: { type: "string" },
    gdb: { type: "string", default: "gdb" },
    // Only the bulk read (and the attach before it): seconds per round instead of a minute.
    "bulk-only": { type: "boolean", default: false },
    // Two untimed dumps of the same range first: gdb's own extra cost on a session's first
    // dumps (see BENCHMARKS.md) left out, as bench/gdb_ceiling.ts leaves out its warm-up.
    warm: { type: "boolean", default: false },
  },
});
const repeat = Number(values.repeat);
const STEPS = 100;
const HITS = 20;

const guest = await bootGuest();
const tmp = await Deno.makeTempDir();
try {
  const offsetRun = await gdb([
    `target remote | ${SERVER} --stdio --qemu 127.0.0.1:${guest.gdbPort} --guest-ram ${guest.ramPath} --vmlinux ${guest.vmlinux}`,
    "monitor sys",
  ], false);
  const offset = offsetRun.match(/kernel offset (0x[0-9a-f]+)/)![1];
  const direct = `target remote 127.0.0.1:${guest.gdbPort}`;
  interface Way {
    name: string;
    /** Server arguments; none: gdb straight on QEMU's stub. */
    extra?: string[];
    root?: string;
    env?: Record<string, string>;
    target?: string;
    stop?: () => Promise<void>;
    bulk: number[];
    attach: number[];
    stepi: number[];
    hit: number[];
    hitAtOnce: number[];
  }
  const way = (name: string, extra?: string[], more: Partial<Way> = {}): Way => ({
    name,
    extra,
    ...more,
    bulk: [],
    attach: [],
    stepi: [],
    hit: [],
    hitAtOnce: [],
  });
  const ram = ["--guest-ram", guest.ramPath];
  const ways: Way[] = [
    way("kdump-gdbserver --guest-ram", ram),
    // The same server with its link to QEMU through a worker thread (what it falls back to
    // without FFI): what the blocking socket saves.
    way("`--guest-ram`, worker-thread link", ram, { env: { KDUMP_QEMU_LINK: "worker" } }),
    ...(values.compare
      ? [way(`--guest-ram, ${values.compare}`, ram, { root: values.compare })]
      : []),
    way("kdump-gdbserver (gdbstub reads)", []),
    way("gdb on QEMU's gdbstub"),
  ];
  for (const w of ways) {
    // Over TCP, as in real use (gdb reads a pipe one byte at a time: ~1 MB/s).
    if (!w.extra) {
      w.target = direct;
      continue;
    }
    const server = await startServer([...w.extra, "--vmlinux", guest.vmlinux], w.root, w.env);
    w.target = `target remote 127.0.0.1:${server.port}`;
    w.stop = server.stop;
  }
  // A hit the guest reaches at once: from hrtimer_interrupt (A) to __hrtimer_run_queues (B),
  // which it calls a few hundred instructions later. Only the continues from A that stop at B
  // are timed (the other vCPU may reach A first).
  const hitsAtOnce = `${tmp}/hits_at_once.py`;
  await Deno.writeTextFile(
    hitsAtOnce,
    `import gdb, time
def hits_at_once(n):
    b = int(gdb.parse_and_eval("(long)&__hrtimer_run_queues")) & (2**64 - 1)
    at_b = lambda: (int(gdb.parse_and_eval("$pc")) & (2**64 - 1)) == b
    total, count = 0.0, 0
    for _ in range(n):
        while at_b():
            gdb.execute("continue", to_string=True)
        t = time.perf_counter()
        gdb.execute("continue", to_string=True)
        if at_b():
            total += time.perf_counter() - t
            count += 1
    while at_b():
        gdb.execute("continue", to_string=True)
    print("HIT_AT_ONCE", total / count if count else float("nan"), count)
`,
  );
  // Breakpoint hits, then steps from that breakpoint.
  const runControl = [
    "break hrtimer_interrupt",
    "continue",
    "python t0 = time.perf_counter()",
    `python [gdb.execute('continue', to_string=True) for _ in range(${HITS})]`,
    `python print('HIT', (time.perf_counter() - t0) / ${HITS})`,
    "break __hrtimer_run_queues",
    `source ${hitsAtOnce}`,
    `python hits_at_once(${HITS})`,
    "delete",
    // Every way steps the same code, from the breakpoint. Stepped where QMP happened to
    // stop the guest (its idle loop, where a step over `hlt` waits for an interrupt), one
    // step took 0.3 to 4 ms whoever sent it.
    "python t0 = time.perf_counter()",
    `python [gdb.execute('stepi', to_string=True) for _ in range(${STEPS})]`,
    `python print('STEPI', (time.perf_counter() - t0) / ${STEPS})`,
  ];
  // Round by round, every way once per round: the shared machine's load changes over minutes,
  // and it then weighs on every way alike.
  for (let i = 0; i < repeat; i++) {
    for (const w of ways) {
      await qmpCommand(guest.qmpPort, "stop");
      const out = await gdb([
        `file ${guest.vmlinux} -o ${offset}`,
        "python import time; t0 = time.perf_counter()",
        w.target!,
        "bt 5",
        "python print('ATTACH_BT', time.perf_counter() - t0)",
        ...Array(values.warm ? 2 : 0).fill(
          `dump binary memory ${tmp}/warm.bin (char*)&_text (char*)&_text+0x1000000`,
        ),
        "python t0 = time.perf_counter()",
        `dump binary memory ${tmp}/m.bin (char*)&_text (char*)&_text+0x1000000`,
        "python print('BULK', time.perf_counter() - t0)",
        ...(values["bulk-only"] ? [] : runControl),
        "detach",
      ], true);
      const get = (k: string) => Number(out.match(new RegExp(`${k} ([0-9.e-]+)`))?.[1] ?? NaN);
      w.attach.push(get("ATTACH_BT"));
      w.bulk.push(get("BULK"));
      w.stepi.push(get("STEPI"));
      w.hit.push(get("HIT"));
      w.hitAtOnce.push(get("HIT_AT_ONCE"));
      if (Number.isNaN(get("BULK")) || (!values["bulk-only"] && Number.isNaN(get("HIT")))) {
        console.error(out);
      }
    }
  }
  for (const w of ways) await w.stop?.();
  const best = (a: number[]) => Math.min(...a);
  const median = (a: number[]) => {
    const s = [...a].sort((x, y) => x - y);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  const ms = (v: number, digits: number) => Number.isNaN(v) ? "—" : (v * 1000).toFixed(digits);
  const rows = ways.map((w) => [
    w.name,
    `${best(w.bulk).toFixed(2)} s (${(16 / best(w.bulk)).toFixed(1)} MiB/s); ` +
    `median ${median(w.bulk).toFixed(2)} s`,
    `${ms(best(w.attach), 0)} ms; ${ms(median(w.attach), 0)} ms`,
    `${ms(best(w.stepi), 2)} ms; ${ms(median(w.stepi), 2)} ms`,
    `${ms(best(w.hit), 1)} ms; ${ms(median(w.hit), 1)} ms`,
    `${ms(best(w.hitAtOnce), 2)} ms; ${ms(median(w.hitAtOnce), 2)} ms`,
  ]);
  console.log(
    `best; median of ${repeat} rounds (${STEPS} stepi, ${HITS} hits each); guest: 512 MiB, ` +
      `2 vCPUs, TCG; ${await gdbVersion()}${values.warm ? ", bulk read after two untimed" : ""}; ` +
      `${cpuModel()}; load average ${loadAverage()}`,
  );
  console.log(
    "| path | dump 16 MiB of kernel text | attach to first bt | stepi | breakpoint hit | " +
      "hit at once |",
  );
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const r of rows) console.log(`| ${r.join(" | ")} |`);
  // The machine's load moves every way's figures together within a round (seconds apart):
  // each round's ratio to gdb on QEMU directly is steadier than best or median alone.
  const straight = ways[ways.length - 1];
  console.log("");
  console.log(
    `per round, against ${straight.name}: median of the ${repeat} ratios (and each ratio)`,
  );
  for (const w of ways.slice(0, -1)) {
    const ratios = (mine: number[], theirs: number[]) => mine.map((v, i) => v / theirs[i]);
    const show = (r: number[]) =>
      `${median(r).toFixed(2)}× (${r.map((x) => x.toFixed(2)).join(" ")})`;
    const runControlRatios = values["bulk-only"]
      ? ""
      : `; stepi ${show(ratios(w.stepi, straight.stepi))}; hit ${
        show(ratios(w.hit, straight.hit))
      }; hit at once ${show(ratios(w.hitAtOnce, straight.hitAtOnce))}`;
    console.log(
      `- ${w.name}: bulk ${show(ratios(straight.bulk, w.bulk))} as fast${runControlRatios}`,
    );
  }
} finally {
  await guest.stop();
  await Deno.remove(tmp, { recursive: true });
}

/** The server on a free port, started for one way of the benchmark. */
async function startServer(args: string[], root = ROOT, env: Record<string, string> = {}) {
  const child = new Deno.Command("deno", {
    env,
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
  const { port, stderr, drained } = await listeningPort(child);
  if (!port) {
    child.kill("SIGKILL");
    throw new Error(`server did not start: ${stderr()}`);
  }
  return {
    port,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await drained;
    },
  };
}

async function gdb(commands: string[], timed: boolean): Promise<string> {
  const args = ["-nx", "-batch", "-ex", "set sysroot /", "-ex", "set pagination off"];
  if (timed) args.push("-ex", "set confirm off");
  for (const c of commands) args.push("-ex", c);
  const r = await new Deno.Command(values.gdb!, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(600_000),
  }).output();
  return new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
}

/** The first line of `gdb --version` for the gdb the benchmark drives. */
async function gdbVersion(): Promise<string> {
  const r = await new Deno.Command(values.gdb!, { args: ["--version"], stdout: "piped" }).output();
  return new TextDecoder().decode(r.stdout).split("\n")[0];
}

function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "";
  }
}

function cpuModel(): string {
  try {
    return Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "";
  } catch {
    return "";
  }
}
