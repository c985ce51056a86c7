/**
 * The gdb-driven half of the benchmark suite (bench/run.sh runs it after `deno bench`):
 *
 * 1. bulk: `dump binary memory` of 64 MiB of the direct map through kdump-gdbserver, over TCP
 *    and over a pipe, on the unfiltered zlib, LZO and ELF dumps; in the same rounds, gdb's
 *    ceiling (bench/c/const_server.c answers every `m` at once with a constant pattern),
 *    libkdumpfile reading the same range (bench/c/kdump_read_bench.c) and native single-core
 *    decoding of the range's pages (bench/c/decode_pages.c). gdb's output is checked
 *    byte for byte against libkdumpfile's.
 * 2. session: connect, `info threads`, `bt` in every thread, 200 prints of init_task with the
 *    debug vmlinux; once with gdb cold (it loads the symbols), once more in the same gdb against
 *    a fresh server (gdb warm: what is left is protocol and server), and the same script with no
 *    target at all.
 * 3. scale: spawn-to-"listening" time and RSS on the 512 MiB fixtures, a crafted 64 GiB sparse
 *    kdump and a crafted 8 GiB sparse ELF, against Deno's own start.
 *
 *   deno run -A bench/gdb_suite.ts [--repeat N] [--size BYTES] [--pipe-size BYTES]
 *                         [--only prepare|library,native,bulk,session,scale] [--skip-pipe]
 *
 * `library` folds in the `deno bench --json` results that bench/run.sh leaves in
 * bench/out/deno_bench.json.
 *
 * Writes bench/out/results.json and bench/out/summary.md (also printed).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { existsSync } from "node:fs";
import { ReplyWriter } from "../lib/rsp_wire.ts";
import {
  FILTERED,
  fixture,
  openKernel,
  OUT,
  RANGE_BYTES,
  RANGE_PHYS_START,
  UNFILTERED,
  VMLINUX,
} from "./common.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const SERVER = [
  "run",
  "--allow-read",
  "--allow-net",
  "--allow-env",
  "--v8-flags=--max-semi-space-size=1",
  `${ROOT}cli/main.ts`,
];
/** page_offset_base of the fixture boot (testdata/fixtures/x86_64-6.1/expected.json). */
const EXPECTED = JSON.parse(Deno.readTextFileSync(fixture("expected.json")));
const DIRECT_MAP = BigInt(EXPECTED.page_offset_base);
const RANGE_START = DIRECT_MAP + BigInt(RANGE_PHYS_START);

const { values: opts } = parseArgs({
  args: Deno.args,
  options: {
    repeat: { type: "string", default: "3" },
    size: { type: "string", default: String(RANGE_BYTES) },
    "pipe-size": { type: "string" },
    only: { type: "string", default: "library,native,bulk,session,scale" },
    "skip-pipe": { type: "boolean", default: false },
    compare: { type: "string", default: "" },
  },
});
const REPEAT = Number(opts.repeat);
const SIZE = Number(opts.size);
const PIPE_SIZE = Number(opts["pipe-size"] ?? SIZE);
const ONLY = new Set(opts.only.split(","));

const dec = new TextDecoder();
const results: Record<string, unknown> = {};

function log(line: string): void {
  console.error(line);
}

/** Run a command to completion; throws on failure unless `check` is false. */
async function run(
  cmd: string,
  args: string[],
  options: { check?: boolean; timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: options.env,
    signal: AbortSignal.timeout(options.timeoutMs ?? 900_000),
  }).output();
  const res = { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
  if ((options.check ?? true) && r.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.code}):\n${res.out}\n${res.err}`);
  }
  return res;
}

// --- preparation: C programs and crafted dumps ----------------------------------------------

async function prepare(): Promise<void> {
  Deno.mkdirSync(OUT, { recursive: true });
  const cflags = ["-O2", "-Wall"];
  const kdumpFlags = (await run("pkg-config", ["--cflags", "--libs", "libkdumpfile"])).out
    .trim().split(/\s+/);
  const builds: [string, string[]][] = [
    ["const_server", []],
    ["kdump_read_bench", kdumpFlags],
    ["decode_pages", ["-lz", "-llzo2", "-lzstd", "-lsnappy"]],
  ];
  for (const [name, libs] of builds) {
    await run("gcc", [...cflags, "-o", OUT + name, `${ROOT}bench/c/${name}.c`, ...libs]);
  }
  if (!existsSync(UNFILTERED.lzo)) {
    log("making bench/out/dump.lzo-d0.kdump (makedumpfile -l -d 0)");
    const input = OUT + ".makedumpfile-input.elf";
    await run("python3", [
      `${ROOT}testdata/tools/elf_phdrs_first.py`,
      fixture("dump.elf"),
      input,
    ]);
    await run("makedumpfile", ["-l", "-d", "0", input, UNFILTERED.lzo + ".part"]);
    Deno.renameSync(UNFILTERED.lzo + ".part", UNFILTERED.lzo);
    Deno.removeSync(input);
  }
  const { craftSparseElf, craftSparseKdump } = await import("./craft.ts");
  if (!existsSync(SPARSE_KDUMP)) craftSparseKdump(FILTERED.zlib, SPARSE_KDUMP, 64);
  if (!existsSync(SPARSE_ELF)) craftSparseElf(UNFILTERED.elf, SPARSE_ELF, 8);
}

const SPARSE_KDUMP = OUT + "sparse-64g.kdump";
const SPARSE_ELF = OUT + "sparse-8g.elf";

// --- processes ---------------------------------------------------------------------------------

/** A server process that has printed its "listening on" line. */
interface Server {
  pid: number;
  port: number;
  /** Milliseconds from spawn to the "listening on" line. */
  startMs: number;
  stderr: () => string;
  stop: () => Promise<void>;
}

async function startServer(cmd: string, args: string[]): Promise<Server> {
  const t0 = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  let startMs = -1;
  let port = -1;
  const reader = child.stderr.getReader();
  const { promise: listening, resolve: resolveListening } = Promise.withResolvers<void>();
  (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value);
      const m = text.match(/listening on [^\s]*:(\d+)/);
      if (m && port < 0) {
        startMs = performance.now() - t0;
        port = Number(m[1]);
        resolveListening();
      }
    }
    resolveListening();
  })();
  const timer = setTimeout(() => resolveListening(), 60_000);
  await listening;
  clearTimeout(timer);
  if (port < 0) {
    try {
      child.kill();
    } catch { /* gone */ }
    throw new Error(`${cmd} ${args.join(" ")} did not start:\n${text}`);
  }
  return {
    pid: child.pid,
    port,
    startMs,
    stderr: () => text,
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
    },
  };
}

/** VmRSS and VmHWM of a process, MiB. */
function memoryOf(pid: number): { rssMiB: number; peakMiB: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = (key: string) => Number(status.match(new RegExp(`${key}:\\s+(\\d+)`))?.[1] ?? 0);
  return { rssMiB: kb("VmRSS") / 1024, peakMiB: kb("VmHWM") / 1024 };
}

/** CPU seconds (user + system) a process has used. */
function cpuOf(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function deno(): string {
  return Deno.execPath();
}

/**
 * Other trees to measure side by side in the bulk rounds (`--compare before=/tmp/old-tree`):
 * the same dumps through their cli/main.ts, to say what a change bought.
 */
const COMPARE: [string, string][] = opts.compare
  ? opts.compare.split(",").map((kv) => kv.split("=") as [string, string])
  : [];

/** Server name → [tree root, dump label]: "zlib", or "before:zlib" for a compared tree. */
function serverSpec(name: string): [string, string] {
  const colon = name.indexOf(":");
  if (colon < 0) return [ROOT, name];
  const root = COMPARE.find(([n]) => n === name.slice(0, colon))![1];
  return [root.endsWith("/") ? root : root + "/", name.slice(colon + 1)];
}

function serverArgs(dump: string, extra: string[] = [], root = ROOT): string[] {
  return [...SERVER.slice(0, -1), `${root}cli/main.ts`, dump, ...extra];
}

/**
 * Shell command for gdb's `target remote | …`: with FFI, with which the server ends its stderr
 * after the banner (gdb otherwise reads that stderr after every byte it receives; see
 * cli/pipe_stderr.ts).
 */
function pipeCommand(dump: string, root = ROOT): string {
  const [run, ...rest] = serverArgs(dump, ["--stdio"], root);
  return [deno(), run, "--allow-ffi", ...rest].join(" ");
}

async function sha256File(path: string): Promise<string> {
  const data = Deno.readFileSync(path);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Lines of `uptime`, for the record of how busy the machine was. */
async function load(): Promise<string> {
  return (await run("uptime", [])).out.trim();
}

function stats(xs: number[]): { min: number; median: number; max: number; n: number } {
  const s = [...xs].sort((a, b) => a - b);
  return {
    min: s[0],
    median: s[Math.floor((s.length - 1) / 2)],
    max: s[s.length - 1],
    n: s.length,
  };
}

// --- native references --------------------------------------------------------------------------

async function native(): Promise<void> {
  const out: Record<string, unknown[]> = {};
  const add = (key: string, v: unknown) => (out[key] ??= []).push(v);
  for (let rep = 0; rep < REPEAT; rep++) {
    for (const [label, path] of Object.entries(UNFILTERED)) {
      const r = await run(OUT + "kdump_read_bench", [
        path,
        `0x${RANGE_START.toString(16)}`,
        String(SIZE),
      ]);
      add(`libkdumpfile seq4k ${label}`, JSON.parse(r.out));
    }
    const decoded: [string, string][] = [
      ["zlib-d0", UNFILTERED.zlib],
      ["lzo-d0", UNFILTERED.lzo],
      ...Object.entries(FILTERED).map(([l, p]): [string, string] => [`${l}-d31`, p]),
    ];
    for (const [label, path] of decoded) {
      const r = await run(OUT + "decode_pages", [
        path,
        String(RANGE_PHYS_START / 4096),
        String(SIZE / 4096),
      ]);
      add(`native decode ${label}`, JSON.parse(r.out));
    }
    // The same random 8-byte reads as the library bench: a 1 MiB span (a session's hot
    // structures, which libkdumpfile's own cache holds) and a 16 MiB span (which it does not).
    for (const mib of [1, 16]) {
      const r = await run(OUT + "kdump_read_bench", [
        UNFILTERED.zlib,
        `0x${RANGE_START.toString(16)}`,
        String(mib * 1024 * 1024),
        "--rand8",
        mib === 1 ? "2000000" : "200000",
      ]);
      add(`libkdumpfile rand8 zlib (${mib} MiB span)`, JSON.parse(r.out));
    }
  }
  results.native = out;
  results.wire = wireBytes();
}

/**
 * Bytes that cross the wire for the range as gdb asks for it (64 KiB `m` reads): hex replies
 * run-length encoded as the server sends them, against plain hex (what the ceiling server
 * sends). Memory is the same in every format, so one dump is enough.
 */
function wireBytes(): Record<string, number> {
  const kernel = openKernel(UNFILTERED.elf);
  const w = new ReplyWriter();
  w.keepLastPacket = false;
  const chunk = 0x10000;
  const data = new Uint8Array(chunk);
  let rle = 0;
  let packets = 0;
  for (let off = 0; off < SIZE; off += chunk) {
    kernel.memory!.read(RANGE_START + BigInt(off), data);
    w.startPacket();
    w.hex(data);
    w.endPacket();
    rle += w.take().length;
    packets++;
  }
  kernel.close();
  return { bytes: SIZE, packets, plainHex: packets * (2 * chunk + 4), rle };
}

// --- 1. bulk reads ------------------------------------------------------------------------------

interface BulkRun {
  server: string;
  transport: "tcp" | "pipe";
  bytes: number;
  seconds: number;
  MBps: number;
  /** gdb's file equals libkdumpfile's read of the same range. */
  identical?: boolean;
  serverCpuS?: number;
  serverPeakMiB?: number;
  serverRssMiB?: number;
}

async function gdbDump(connect: string, bytes: number, file: string): Promise<number> {
  const end = RANGE_START + BigInt(bytes);
  const r = await run("gdb", [
    "-nx",
    "-batch",
    "-ex",
    connect,
    "-ex",
    "python import time; t0 = time.time()",
    "-ex",
    `dump binary memory ${file} 0x${RANGE_START.toString(16)} 0x${end.toString(16)}`,
    "-ex",
    'python print("SECONDS %.4f" % (time.time() - t0))',
  ], { check: false, timeoutMs: 900_000 });
  const m = (r.out + r.err).match(/SECONDS ([\d.]+)/);
  let size = 0;
  try {
    size = Deno.statSync(file).size;
  } catch { /* no file */ }
  if (!m || size !== bytes) {
    throw new Error(`gdb dump failed (${size} bytes):\n${r.out}\n${r.err}`);
  }
  return Number(m[1]);
}

async function bulk(): Promise<void> {
  const runs: BulkRun[] = [];
  const file = OUT + "bulk.bin";
  const reference: Record<string, string> = {};
  for (const [label, path] of Object.entries(UNFILTERED)) {
    const ref = OUT + `bulk-reference-${label}.bin`;
    await run(OUT + "kdump_read_bench", [
      path,
      `0x${RANGE_START.toString(16)}`,
      String(SIZE),
      "--out",
      ref,
    ]);
    reference[label] = await sha256File(ref);
    // The pipe runs may read less: hash their prefix separately.
    if (PIPE_SIZE !== SIZE) {
      const prefix = Deno.readFileSync(ref).subarray(0, PIPE_SIZE);
      Deno.writeFileSync(ref, prefix);
      reference[label + "/pipe"] = await sha256File(ref);
    }
    Deno.removeSync(ref);
  }
  const servers = [
    "ceiling",
    ...Object.keys(UNFILTERED),
    ...COMPARE.flatMap(([n]) => Object.keys(UNFILTERED).map((d) => `${n}:${d}`)),
  ];
  const transports: ("tcp" | "pipe")[] = opts["skip-pipe"] ? ["tcp"] : ["tcp", "pipe"];
  for (let rep = 0; rep < REPEAT; rep++) {
    for (const transport of transports) {
      for (const name of servers) {
        const bytes = transport === "tcp" ? SIZE : PIPE_SIZE;
        const result: BulkRun = { server: name, transport, bytes, seconds: 0, MBps: 0 };
        const [root, dump] = serverSpec(name);
        if (transport === "tcp") {
          const server = name === "ceiling"
            ? await startServer(OUT + "const_server", ["--port", "0"])
            : await startServer(deno(), serverArgs(UNFILTERED[dump], ["--port", "0"], root));
          const cpu0 = cpuOf(server.pid);
          result.seconds = await gdbDump(`target remote 127.0.0.1:${server.port}`, bytes, file);
          if (name !== "ceiling") {
            try {
              result.serverCpuS = cpuOf(server.pid) - cpu0;
              const m = memoryOf(server.pid);
              result.serverPeakMiB = m.peakMiB;
              result.serverRssMiB = m.rssMiB;
            } catch { /* exited */ }
          }
          await server.stop();
        } else {
          const cmd = name === "ceiling"
            ? `exec ${OUT}const_server --stdio 2>/dev/null` // its stderr ended, as ours
            : pipeCommand(UNFILTERED[dump], root);
          result.seconds = await gdbDump(`target remote | ${cmd}`, bytes, file);
        }
        result.MBps = bytes / result.seconds / 1e6;
        if (name !== "ceiling") {
          const want = transport === "pipe" && PIPE_SIZE !== SIZE
            ? reference[dump + "/pipe"]
            : reference[dump];
          result.identical = (await sha256File(file)) === want;
        }
        Deno.removeSync(file);
        log(
          `bulk ${rep + 1}/${REPEAT} ${transport} ${name}: ${result.seconds.toFixed(2)} s, ` +
            `${result.MBps.toFixed(1)} MB/s${result.identical === false ? " DIFFERENT DATA" : ""}`,
        );
        runs.push(result);
      }
    }
  }
  results.bulk = runs;
}

// --- 2. gdb session -----------------------------------------------------------------------------

/** gdb-side script: phases timed with the server's CPU time sampled at each boundary. */
const SESSION_PY = `
import gdb, json, os, time

VMLINUX = os.environ["BENCH_VMLINUX"]
TARGETS = [t for t in os.environ.get("BENCH_TARGETS", "").split(",") if t]
PRINTS = int(os.environ.get("BENCH_PRINTS", "200"))
R = {}

def cpu(pid):
    if pid is None:
        return 0.0
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def phase(key, fn, pid=None):
    c0 = cpu(pid)
    t0 = time.time()
    fn()
    R[key] = time.time() - t0
    if pid is not None:
        R[key + ".server_cpu"] = cpu(pid) - c0

def quiet(cmd):
    try:
        gdb.execute(cmd, to_string=True)
    except gdb.error:
        pass

def all_bt(prefix, pid):
    threads = sorted(gdb.selected_inferior().threads(), key=lambda t: t.num)
    R[prefix + "threads"] = len(threads)
    first = True
    c0 = cpu(pid)
    t0 = time.time()
    frames = 0
    for t in threads:
        t.switch()
        frames += gdb.execute("bt", to_string=True).count("\\n#") + 1
        if first:
            R[prefix + "first_bt"] = time.time() - t0
            first = False
    R[prefix + "bt_all"] = time.time() - t0
    R[prefix + "bt_all.server_cpu"] = cpu(pid) - c0
    R[prefix + "frames"] = frames

LITERAL = "print *(struct task_struct *)&init_task"

def prints(key, pid):
    # gdb 13 spends about 2 s of its own CPU evaluating this cast expression every time (with or
    # without a target): the first print uses it, the rest print the same object through a
    # convenience variable, which reads the same memory from the target.
    def run():
        gdb.execute(LITERAL, to_string=True)
        gdb.execute("set $bench_task = (struct task_struct *)&init_task")
        for _ in range(PRINTS - 1):
            gdb.execute("print *$bench_task", to_string=True)
    phase(key, run, pid)

t_start = time.time()
phase("file", lambda: gdb.execute("file " + VMLINUX))
if not TARGETS:
    phase("info_threads", lambda: quiet("info threads"))
    phase("bt", lambda: quiet("bt"))
    prints("prints", None)
    phase("literal_print_x3", lambda: [gdb.execute(LITERAL, to_string=True) for _ in range(3)])
else:
    for i, spec in enumerate(TARGETS):
        port, pid = spec.split(":")
        pid = int(pid)
        p = "round%d." % (i + 1)
        t0 = time.time()
        phase(p + "connect", lambda: gdb.execute("target remote 127.0.0.1:" + port, to_string=True), pid)
        phase(p + "info_threads", lambda: gdb.execute("info threads", to_string=True), pid)
        all_bt(p, pid)
        R[p + "connect_to_first_bt"] = R[p + "connect"] + R[p + "info_threads"] + R[p + "first_bt"]
        prints(p + "prints", pid)
        R[p + "total"] = time.time() - t0
        gdb.execute("disconnect", to_string=True)
R["total"] = time.time() - t_start
print("RESULT " + json.dumps(R))
`;

async function gdbSession(targets: Server[]): Promise<Record<string, number>> {
  const script = OUT + "session.py";
  Deno.writeTextFileSync(script, SESSION_PY);
  const r = await run("gdb", ["-nx", "-batch", "-x", script], {
    check: false,
    timeoutMs: 900_000,
    env: {
      BENCH_VMLINUX: VMLINUX,
      BENCH_TARGETS: targets.map((s) => `${s.port}:${s.pid}`).join(","),
    },
  });
  const m = (r.out + r.err).match(/RESULT (\{.*\})/);
  if (!m) throw new Error(`gdb session failed:\n${r.out}\n${r.err}`);
  return JSON.parse(m[1]);
}

async function session(): Promise<void> {
  const out: Record<string, unknown>[] = [];
  const dumps = { "zlib-d31": FILTERED.zlib, "elf": UNFILTERED.elf };
  for (let rep = 0; rep < REPEAT; rep++) {
    const none = await gdbSession([]);
    out.push({ dump: "none", ...none });
    log(`session ${rep + 1}/${REPEAT} no target: ${JSON.stringify(none)}`);
    for (const [label, path] of Object.entries(dumps)) {
      // Two fresh servers: round 1 with gdb cold, round 2 with gdb's symbols already loaded.
      const a = await startServer(deno(), serverArgs(path, ["--port", "0", "--vmlinux", VMLINUX]));
      const b = await startServer(deno(), serverArgs(path, ["--port", "0", "--vmlinux", VMLINUX]));
      try {
        const r = await gdbSession([a, b]);
        out.push({ dump: label, ...r });
        log(`session ${rep + 1}/${REPEAT} ${label}: ${JSON.stringify(r)}`);
      } finally {
        await a.stop();
        await b.stop();
      }
    }
  }
  results.session = out;
}

// --- 3. scale -----------------------------------------------------------------------------------

async function scale(): Promise<void> {
  const startScript = OUT + "deno_start.js";
  Deno.writeTextFileSync(
    startScript,
    `// Deno's own start: print the line the bench waits for, then stay up like a server.\n` +
      `console.error("listening on 127.0.0.1:1");\nsetInterval(() => {}, 1000);\n`,
  );
  const cases: [string, string[]][] = [
    ["deno start (empty script)", [...SERVER.slice(0, -1), startScript]],
    ["zlib-d0 kdump, 512 MiB", serverArgs(UNFILTERED.zlib, ["--port", "0"])],
    ["ELF, 512 MiB", serverArgs(UNFILTERED.elf, ["--port", "0"])],
    ["zlib-d31 kdump, 512 MiB", serverArgs(FILTERED.zlib, ["--port", "0"])],
    ["sparse kdump, 64 GiB", serverArgs(SPARSE_KDUMP, ["--port", "0"])],
    ["sparse ELF, 8.5 GiB", serverArgs(SPARSE_ELF, ["--port", "0"])],
    [
      "zlib-d31 kdump + --vmlinux",
      serverArgs(FILTERED.zlib, ["--port", "0", "--vmlinux", VMLINUX]),
    ],
    [
      "sparse kdump 64 GiB + --vmlinux",
      serverArgs(SPARSE_KDUMP, ["--port", "0", "--vmlinux", VMLINUX]),
    ],
  ];
  const rows: Record<string, unknown>[] = [];
  for (let rep = 0; rep < Math.max(REPEAT, 5); rep++) {
    for (const [label, args] of cases) {
      const s = await startServer(deno(), args);
      const m = memoryOf(s.pid);
      rows.push({ case: label, startMs: s.startMs, ...m });
      await s.stop();
    }
  }
  results.scale = rows;
  results.cacheFull = await cacheFull();
}

/**
 * Worst-case memory: fill the default 64 MiB page cache with small reads (8 bytes from each of
 * 16384 pages of the range, as gdb's struct reads would), then read the server's RSS.
 */
async function cacheFull(): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  for (const [label, path] of Object.entries(UNFILTERED)) {
    const server = await startServer(deno(), serverArgs(path, ["--port", "0"]));
    try {
      const script = OUT + "cache_fill.py";
      Deno.writeTextFileSync(
        script,
        [
          "import time",
          "inf = gdb.selected_inferior()",
          "t0 = time.time()",
          `for off in range(0, ${SIZE}, 4096):`,
          `    inf.read_memory(${RANGE_START} + off, 8)`,
          'print("SECONDS %.3f" % (time.time() - t0))',
        ].join("\n") + "\n",
      );
      const r = await run("gdb", [
        "-nx",
        "-batch",
        "-ex",
        `target remote 127.0.0.1:${server.port}`,
        "-x",
        script,
      ], { check: false });
      const seconds = Number((r.out + r.err).match(/SECONDS ([\d.]+)/)?.[1] ?? NaN);
      rows.push({ dump: label, smallReads: SIZE / 4096, seconds, ...memoryOf(server.pid) });
      log(`cache full ${label}: ${JSON.stringify(rows[rows.length - 1])}`);
    } finally {
      await server.stop();
    }
  }
  return rows;
}

// --- library (deno bench) ------------------------------------------------------------------------

interface LibraryRow {
  group: string;
  name: string;
  /** Mean nanoseconds per iteration. */
  avgNs: number;
  /** Operations per second, when the name says how many operations an iteration does. */
  perSecond?: number;
}

function libraryResults(): LibraryRow[] | undefined {
  const path = OUT + "deno_bench.json";
  if (!existsSync(path)) return undefined;
  const report = JSON.parse(Deno.readTextFileSync(path));
  const rows: LibraryRow[] = [];
  for (const b of report.benches ?? []) {
    const ok = b.results?.[0]?.ok;
    if (!ok) continue;
    const ops = Number(String(b.name).match(/\[(\d+) [a-z]+\]$/)?.[1] ?? 1);
    rows.push({
      group: b.group ?? "",
      name: b.name,
      avgNs: ok.avg,
      perSecond: ops * 1e9 / ok.avg,
    });
  }
  return rows;
}

// --- summary ------------------------------------------------------------------------------------

function fmt(x: number, digits = 2): string {
  return x.toFixed(digits);
}

function range(xs: number[], digits = 2): string {
  const s = stats(xs);
  return s.n === 1 ? fmt(s.min, digits) : `${fmt(s.min, digits)}–${fmt(s.max, digits)}`;
}

function summary(): string {
  const lines: string[] = [];
  const machine = results.machine as Record<string, string>;
  lines.push(`# Benchmark run ${machine.date}`, "");
  lines.push(`- machine: ${machine.cpu}, ${machine.cores} cores; ${machine.versions}`);
  lines.push(`- load before: ${machine.loadBefore}`, `- load after: ${machine.loadAfter}`);
  lines.push(`- repeat: ${REPEAT}; bulk size ${SIZE} bytes (pipe ${PIPE_SIZE})`, "");

  const lib = results.library as LibraryRow[] | undefined;
  if (lib) {
    lines.push("## 3. Library (deno bench, mean of its iterations)", "");
    lines.push("| group | benchmark | per iteration | per second |", "|---|---|---|---|");
    for (const r of lib) {
      const t = r.avgNs >= 1e6 ? `${fmt(r.avgNs / 1e6)} ms` : `${fmt(r.avgNs / 1e3)} µs`;
      const per = r.perSecond! >= 1e6
        ? `${fmt(r.perSecond! / 1e6)} M`
        : `${fmt(r.perSecond! / 1e3, 1)} k`;
      lines.push(`| ${r.group} | ${r.name} | ${t} | ${per} |`);
    }
    lines.push("");
  }
  const bulkRuns = results.bulk as BulkRun[] | undefined;
  if (bulkRuns) {
    lines.push("## 1. gdb bulk read (`dump binary memory`, 64 MiB of the direct map)", "");
    lines.push(
      "| server | transport | seconds | MB/s | × ceiling (same round) | data | server peak RSS |",
    );
    lines.push("|---|---|---|---|---|---|---|");
    for (const transport of ["tcp", "pipe"]) {
      const ceil = bulkRuns.filter((r) => r.transport === transport && r.server === "ceiling");
      for (const name of [...new Set(bulkRuns.map((r) => r.server))]) {
        const rs = bulkRuns.filter((r) => r.transport === transport && r.server === name);
        if (!rs.length) continue;
        const ratios = rs.map((r, i) => ceil[i] ? ceil[i].seconds / r.seconds : NaN);
        const peak = rs.map((r) => r.serverPeakMiB ?? NaN).filter((x) => !isNaN(x));
        lines.push(
          `| ${name} | ${transport} | ${range(rs.map((r) => r.seconds))} | ` +
            `${range(rs.map((r) => r.MBps), 1)} | ${name === "ceiling" ? "1" : range(ratios)} | ` +
            `${
              name === "ceiling"
                ? "pattern"
                : rs.every((r) => r.identical)
                ? "identical"
                : "DIFFERS"
            } | ` +
            `${peak.length ? range(peak, 0) + " MiB" : ""} |`,
        );
      }
    }
    lines.push("");
  }
  const nat = results.native as Record<string, Record<string, number>[]> | undefined;
  if (nat) {
    lines.push("## References (C, same range)", "");
    lines.push("| reader | MB/s | µs/page | notes |", "|---|---|---|---|");
    for (const [key, rs] of Object.entries(nat)) {
      if (key.includes("rand8")) {
        lines.push(`| ${key} | | | ${range(rs.map((r) => r.reads_per_s / 1e6), 3)} M reads/s |`);
      } else if (key.startsWith("native")) {
        lines.push(
          `| ${key} (${rs[0].pages} pages) | ${range(rs.map((r) => r.MBps), 0)} | ` +
            `${range(rs.map((r) => r.us_per_page))} | ${rs[0].pages - rs[0].raw} compressed ` +
            `pages timed, ${rs[0].raw} stored raw |`,
        );
      } else {
        lines.push(
          `| ${key} | ${range(rs.map((r) => r.MBps), 0)} | ` +
            `${range(rs.map((r) => r.read_s / (r.bytes / 4096) * 1e6))} | ${
              rs[0].failed_pages
            } failed pages |`,
        );
      }
    }
    lines.push("");
  }
  const wire = results.wire as Record<string, number> | undefined;
  if (wire) {
    lines.push(
      `Bytes on the wire for the range (${wire.packets} replies of 64 KiB): plain hex ` +
        `${(wire.plainHex / 1048576).toFixed(1)} MiB (the ceiling server), run-length encoded ` +
        `${(wire.rle / 1048576).toFixed(1)} MiB (kdump-gdbserver), ` +
        `${(wire.plainHex / wire.rle).toFixed(2)}× fewer.`,
      "",
    );
  }
  const ses = results.session as Record<string, number | string>[] | undefined;
  if (ses) {
    lines.push("## 2. gdb session (seconds)", "");
    const keys = [
      "file",
      "round1.connect",
      "round1.info_threads",
      "round1.first_bt",
      "round1.bt_all",
      "round1.prints",
      "round1.connect_to_first_bt",
      "round2.connect",
      "round2.info_threads",
      "round2.first_bt",
      "round2.bt_all",
      "round2.prints",
      "round2.connect_to_first_bt",
      "round2.connect.server_cpu",
      "round2.info_threads.server_cpu",
      "round2.bt_all.server_cpu",
      "round2.prints.server_cpu",
      "prints",
      "literal_print_x3",
      "total",
    ];
    const dumps = [...new Set(ses.map((r) => r.dump as string))];
    lines.push(`| phase | ${dumps.join(" | ")} |`, `|---|${dumps.map(() => "---|").join("")}`);
    for (const k of keys) {
      const cells = dumps.map((d) => {
        const xs = ses.filter((r) => r.dump === d && typeof r[k] === "number").map((r) =>
          r[k] as number
        );
        return xs.length ? range(xs, 3) : "";
      });
      if (cells.some((c) => c)) lines.push(`| ${k} | ${cells.join(" | ")} |`);
    }
    lines.push("");
  }
  const sc = results.scale as Record<string, number | string>[] | undefined;
  if (sc) {
    lines.push('## 4. scale: spawn to "listening", and memory after open', "");
    lines.push(
      "| case | ms to listening | beyond Deno's start (median) | RSS MiB | peak RSS MiB |",
    );
    lines.push("|---|---|---|---|---|");
    const base = stats(
      sc.filter((r) => String(r.case).startsWith("deno start")).map((r) => r.startMs as number),
    ).median;
    for (const label of [...new Set(sc.map((r) => r.case as string))]) {
      const rs = sc.filter((r) => r.case === label);
      const ms = rs.map((r) => r.startMs as number);
      lines.push(
        `| ${label} | ${range(ms, 0)} | ${fmt(stats(ms).median - base, 0)} ms | ` +
          `${range(rs.map((r) => r.rssMiB as number), 0)} | ${
            range(rs.map((r) => r.peakMiB as number), 0)
          } |`,
      );
    }
    lines.push("");
  }
  const full = results.cacheFull as Record<string, number | string>[] | undefined;
  if (full) {
    lines.push("Page cache filled by 16384 small reads (8 bytes per page of the range):", "");
    lines.push("| dump | seconds (gdb, one `m` per page) | RSS MiB | peak RSS MiB |");
    lines.push("|---|---|---|---|");
    for (const r of full) {
      lines.push(
        `| ${r.dump} | ${fmt(r.seconds as number)} | ${fmt(r.rssMiB as number, 0)} | ` +
          `${fmt(r.peakMiB as number, 0)} |`,
      );
    }
    lines.push("");
  }
  return lines.join("\n");
}

async function machineInfo(): Promise<Record<string, string>> {
  const cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
  const gdbV = (await run("gdb", ["--version"])).out.split("\n")[0];
  const kdf = (await run("dpkg-query", ["-W", "-f", "${Version}", "libkdumpfile-dev"], {
    check: false,
  })).out;
  const zlibV = (await run("dpkg-query", ["-W", "-f", "${Version}", "zlib1g"], { check: false }))
    .out;
  return {
    date: new Date().toISOString(),
    cpu,
    cores: String(navigator.hardwareConcurrency),
    versions: `${gdbV}; deno ${Deno.version.deno} (V8 ${Deno.version.v8}); ` +
      `libkdumpfile ${kdf}; zlib ${zlibV}`,
    loadBefore: await load(),
  };
}

if (import.meta.main) {
  results.machine = await machineInfo();
  await prepare();
  if (ONLY.has("prepare") && ONLY.size === 1) Deno.exit(0);
  if (ONLY.has("library")) results.library = libraryResults();
  if (ONLY.has("native")) await native();
  if (ONLY.has("bulk")) await bulk();
  if (ONLY.has("session")) await session();
  if (ONLY.has("scale")) await scale();
  (results.machine as Record<string, string>).loadAfter = await load();
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  Deno.writeTextFileSync(OUT + `results-${stamp}.json`, JSON.stringify(results, null, 1));
  Deno.writeTextFileSync(OUT + "results.json", JSON.stringify(results, null, 1));
  const text = summary();
  Deno.writeTextFileSync(OUT + "summary.md", text + "\n");
  console.log(text);
}
