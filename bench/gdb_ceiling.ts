/**
 * gdb's own ceiling for a bulk read over the remote protocol, measured: how fast stock gdb can
 * `dump binary memory` 16 MiB when the server costs (almost) nothing, with kdump-gdbserver on a
 * real dump and gdb straight on QEMU's gdbstub side by side in the same run. (Issue 12 asks the
 * live bulk read through us to be 4x gdb on QEMU directly; this says how far gdb itself goes.)
 *
 * The near-free server is an RSP stub in this process (TCP on 127.0.0.1, a free port, no Nagle):
 * it answers gdb's connect sequence with the least it accepts and every `m ADDR,LEN` with a reply
 * framed once (hex, optionally run-length encoded, checksum) and then kept, so a timed dump costs
 * it a map lookup and a socket write per packet. gdb's first dump of each session warms that table
 * and is not timed. Its variations:
 *
 * - data: `text`, 16 MiB of the fixture vmlinux from `_text` (its first PT_LOAD: `.text`, the
 *   padding after it, the start of `.rodata`), the bytes gdb reads in the live benchmark; `dump`,
 *   the same 16 MiB of the running kernel as kdump-gdbserver serves it from the ELF dump (read
 *   here through the library); `zero`, all zero bytes (run-length encoding's best case);
 * - the `PacketSize` it advertises (gdb 13 asks half of it per `m`; the stub logs the sizes gdb
 *   really asks, shown in the table);
 * - no-ack mode offered or not; run-length encoding of the replies on or off;
 * - hex `m` replies, or binary ones: the stub offers `binary-upload+`, and gdb 16 and later then
 *   read with `x ADDR,LEN`, answered `b` + the bytes with `#$}*` escaped (gdb 13 ignores the
 *   offer; run these rows with `--gdb` naming a gdb 16).
 *
 * kdump-gdbserver serves the fixture ELF dump (`--port 0`, no `--vmlinux`: the range is given as
 * numbers, `_text` plus the dump's KASLR offset), one fresh server per session, a warm-up dump
 * first as for the stub; `--compare LABEL=DIR` adds another checkout's server (e.g. one with a
 * different `PacketSize`) as more rows of the same run.
 *
 * QEMU's own gdbstub (qemu-system-x86_64, what gdb talks to without us: `PacketSize=1000`, acks,
 * plain hex) serves the `text` data loaded at guest-physical 16 MiB into a machine paused at reset
 * (`-S`, no paging, no vCPU running): the fastest gdb straight on QEMU can be, without a guest.
 *
 * Times are taken inside gdb (Python `time.perf_counter()` around `dump binary memory`, and
 * `time.process_time()` for gdb's own CPU); every dump's bytes are checked against the data
 * served. Sessions are interleaved in rounds so load drifts on the shared machine spread over
 * every variant.
 *
 *   deno run -A bench/gdb_ceiling.ts [--rounds R] [--dumps D] [--only stub,server,qemu]
 *                                    [--compare LABEL=DIR,...] [--match REGEX] [--gdb PATH]
 *
 * R sessions per variant (default 3), each with D timed dumps (default 2) after the warm-up;
 * `--match` keeps the stub variants whose key (e.g. `stub text 20000 noack rle hex`) matches;
 * `--gdb` runs another gdb than Debian's /usr/bin/gdb.
 * Prints a Markdown table (best and median of the R×D dumps). The default run takes 5-8 minutes.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { encodeRuns, escapeBinary } from "../lib/rsp_wire.ts";
import { Vmlinux } from "../lib/vmlinux.ts";
import { fixture, listeningPort, openKernel, UNFILTERED, VMLINUX } from "./common.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const LENGTH = 16 * 1024 * 1024;
const MiB = 1024 * 1024;

const { values: opts } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "3" },
    dumps: { type: "string", default: "2" },
    only: { type: "string", default: "stub,server,qemu" },
    compare: { type: "string", default: "" },
    match: { type: "string", default: "" },
    gdb: { type: "string", default: "/usr/bin/gdb" },
  },
});
const ROUNDS = Number(opts.rounds);
const DUMPS = Number(opts.dumps);
const ONLY = new Set(opts.only.split(","));
/** Only the stub variants whose key (`stub DATA PACKETSIZE noack|ack rle|raw hex|bin`) matches. */
const MATCH = new RegExp(opts.match);
const COMPARE: [string, string][] = opts.compare
  ? opts.compare.split(",").map((kv) => {
    const at = kv.indexOf("=");
    return [kv.slice(0, at), kv.slice(at + 1).replace(/\/?$/, "/")];
  })
  : [];

const gdbVersion = new TextDecoder().decode(
  (await new Deno.Command(opts.gdb, { args: ["--version"], stdout: "piped" }).output())
    .stdout,
).split("\n")[0];
/** gdb 16 and later read memory with `x` where the server offers it, as kdump-gdbserver does. */
const GDB_READS_BINARY = /^GNU gdb .* (1[6-9]|[2-9][0-9])\.[0-9]/.test(gdbVersion);

/** Processes started here, stopped by pid on any exit. */
const children = new Set<Deno.ChildProcess>();
function stopChildren(): void {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch { /* already gone */ }
  }
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(sig, () => {
    stopChildren();
    Deno.exit(130);
  });
}

// --- data ---------------------------------------------------------------------------------------

const EXPECTED = JSON.parse(Deno.readTextFileSync(fixture("expected.json")));
const KASLR = BigInt(EXPECTED.kaslr_offset);
const vmlinux = new Vmlinux(VMLINUX);
/** Link-time `_text`: where the stub serves its data (gdb asks numbers, no symbols). */
const TEXT = vmlinux.symbol("_text")!;
const textBytes = vmlinux.readAtAddress(TEXT, LENGTH);
vmlinux.close();
if (!textBytes) throw new Error(`${VMLINUX}: no 16 MiB of file data from _text`);
/** `_text` of the running kernel in the dump. */
const DUMP_TEXT = TEXT + KASLR;
const dumpBytes = (() => {
  const kernel = openKernel(UNFILTERED.elf);
  const out = new Uint8Array(LENGTH);
  const r = kernel.memory!.read(DUMP_TEXT, out);
  kernel.close();
  if (r.bytes !== LENGTH) throw new Error(`${UNFILTERED.elf}: only ${r.bytes} bytes at _text`);
  return out;
})();
const DATA: Record<string, Uint8Array> = {
  text: textBytes,
  dump: dumpBytes,
  zero: new Uint8Array(LENGTH),
};

// --- the stub -----------------------------------------------------------------------------------

const HEX = new Uint8Array(512);
for (let b = 0; b < 256; b++) {
  HEX[2 * b] = "0123456789abcdef".charCodeAt(b >> 4);
  HEX[2 * b + 1] = "0123456789abcdef".charCodeAt(b & 15);
}

/** `$payload#cs` of a payload given as bytes, optionally run-length encoded, `+` first if asked. */
function frame(payload: Uint8Array, rle: boolean, ack: boolean): Uint8Array {
  const out = new Uint8Array(payload.length + 5);
  let at = 0;
  if (ack) out[at++] = 0x2b;
  out[at++] = 0x24;
  const start = at;
  if (rle) at = encodeRuns(payload, payload.length, out, at);
  else {
    out.set(payload, at);
    at += payload.length;
  }
  let sum = 0;
  for (let i = start; i < at; i++) sum += out[i];
  out[at++] = 0x23;
  out[at++] = HEX[2 * (sum & 0xff)];
  out[at++] = HEX[2 * (sum & 0xff) + 1];
  return out.subarray(0, at);
}

/** An `x` reply: `b` and the bytes with `#`, `$`, `}` and `*` escaped, as the server sends it. */
function binaryOf(data: Uint8Array): Uint8Array {
  const escaped = escapeBinary(data);
  const out = new Uint8Array(1 + escaped.length);
  out[0] = 0x62;
  out.set(escaped, 1);
  return out;
}

function hexOf(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length * 2);
  for (let i = 0; i < data.length; i++) {
    out[2 * i] = HEX[2 * data[i]];
    out[2 * i + 1] = HEX[2 * data[i] + 1];
  }
  return out;
}

const latin1 = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

interface StubVariant {
  data: string;
  packetSize: number;
  ack: boolean;
  rle: boolean;
  /** Offer `binary-upload+` and answer `x` in binary. */
  binary: boolean;
}

interface StubStats {
  /** Count of `m`/`x` requests by length. */
  sizes: Map<number, number>;
  /** Bytes written to gdb. */
  wireBytes: number;
  /** Bytes written for `m`/`x` replies only. */
  memoryWireBytes: number;
  /** Requests outside the data. */
  outside: number;
}

/**
 * Serve one gdb connection on `listener` as the variant says; resolves with what it saw when gdb
 * disconnects.
 */
async function serveStub(listener: Deno.Listener, v: StubVariant): Promise<StubStats> {
  const data = DATA[v.data];
  const stats: StubStats = {
    sizes: new Map(),
    wireBytes: 0,
    memoryWireBytes: 0,
    outside: 0,
  };
  const conn = await listener.accept() as Deno.TcpConn;
  conn.setNoDelay(true);
  let noAck = false;
  const replies = new Map<string, Uint8Array>();
  // rip at the data, so the frame gdb reads on connect is inside it too.
  const regs = new Uint8Array(164);
  new DataView(regs.buffer).setBigUint64(16 * 8, TEXT, true);
  const regsHex = hexOf(regs);
  const send = async (bytes: Uint8Array) => {
    stats.wireBytes += bytes.length;
    for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
  };
  const reply = (payload: string | Uint8Array) =>
    frame(typeof payload === "string" ? latin1(payload) : payload, false, !noAck);
  const memory = (args: string, binary: boolean): Uint8Array => {
    const key = `${noAck ? "n" : "a"}${binary ? "x" : "m"}${args}`;
    const hit = replies.get(key);
    if (hit) return hit;
    const [a, l] = args.split(",");
    const addr = BigInt("0x" + a);
    const asked = parseInt(l, 16);
    // Logged once per distinct request: the warm-up dump, which asks what every dump asks.
    stats.sizes.set(asked, (stats.sizes.get(asked) ?? 0) + 1);
    const len = Math.min(asked, Math.floor(v.packetSize / 2));
    const off = addr - TEXT;
    let framed: Uint8Array;
    if (off < 0n || off >= BigInt(LENGTH)) {
      stats.outside++;
      framed = reply("E01");
    } else {
      const o = Number(off);
      const bytes = data.subarray(o, Math.min(o + len, LENGTH));
      framed = frame(binary ? binaryOf(bytes) : hexOf(bytes), v.rle, !noAck);
    }
    replies.set(key, framed);
    return framed;
  };
  const handle = async (p: string): Promise<boolean> => {
    if (p[0] === "m" || (p[0] === "x" && v.binary)) {
      const framed = memory(p.slice(1), p[0] === "x");
      stats.memoryWireBytes += framed.length;
      await send(framed);
      return true;
    }
    let text = "";
    if (p.startsWith("qSupported")) {
      text = `PacketSize=${v.packetSize.toString(16)}${v.ack ? "" : ";QStartNoAckMode+"}` +
        (v.binary ? ";binary-upload+" : "");
    } else if (p === "QStartNoAckMode" && !v.ack) {
      await send(reply("OK"));
      noAck = true;
      return true;
    } else if (p === "?") text = "S05";
    else if (p === "g") text = new TextDecoder().decode(regsHex);
    else if (p[0] === "H") text = "OK";
    else if (p === "qAttached") text = "1";
    else if (p === "qfThreadInfo") text = "m1";
    else if (p === "qsThreadInfo") text = "l";
    else if (p === "qC") text = "QC1";
    else if (p[0] === "D" || p[0] === "k" || p.startsWith("vKill")) {
      await send(reply("OK"));
      return false;
    }
    await send(reply(text));
    return true;
  };
  // Packets between `$` and `#` plus two checksum digits (trusted); acks and ^C in between.
  const buf = new Uint8Array(65536);
  let payload: number[] = [];
  let state = 0; // 0 between packets, 1 in a payload, 2-3 in the checksum
  try {
    outer: for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      for (let i = 0; i < n; i++) {
        const c = buf[i];
        if (state === 0) {
          if (c === 0x24) {
            state = 1;
            payload = [];
          }
        } else if (state === 1) {
          if (c === 0x23) state = 2;
          else payload.push(c);
        } else if (state === 2) state = 3;
        else {
          state = 0;
          if (!await handle(String.fromCharCode(...payload))) break outer;
        }
      }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BrokenPipe)) {
      throw e;
    }
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
  return stats;
}

// --- gdb ----------------------------------------------------------------------------------------

const GDB_SCRIPT = `
import gdb, os, time
out = os.environ["CEILING_OUT"]
start = int(os.environ["CEILING_START"], 16)
length = int(os.environ["CEILING_LENGTH"])
stat = "/proc/%s/stat" % os.environ["CEILING_SERVER_PID"]
def server_cpu():
    with open(stat) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
gdb.execute("set pagination off")
gdb.execute("set confirm off")
# No file and no target description from the stub: gdb would take 32-bit addresses.
gdb.execute("set architecture i386:x86-64", to_string=True)
gdb.execute("target remote " + os.environ["CEILING_TARGET"], to_string=True)
for i in range(int(os.environ["CEILING_DUMPS"])):
    s0 = server_cpu()
    w0 = time.perf_counter()
    c0 = time.process_time()
    gdb.execute("dump binary memory %s 0x%x 0x%x" % (out, start, start + length))
    w1 = time.perf_counter()
    c1 = time.process_time()
    print("CEILING_DUMP %d %.6f %.6f %.6f" % (i, w1 - w0, c1 - c0, server_cpu() - s0))
    os.rename(out, out + ".%d" % i)
gdb.execute("disconnect", to_string=True)
`;

/** One timed dump, seconds. */
interface Dump {
  wall: number;
  /** gdb's own CPU time (user + system) during the dump. */
  gdbCpu: number;
  /** The server's CPU time during the dump (10 ms ticks). */
  serverCpu: number;
}

/**
 * One gdb session: connect to `target`, `dump binary memory` the range `dumps` times (the first
 * one untimed), check every file against `want`; the timed dumps.
 */
async function gdbSession(
  target: string,
  start: bigint,
  want: Uint8Array,
  serverPid: number,
  dir: string,
): Promise<Dump[]> {
  const script = `${dir}/ceiling.py`;
  Deno.writeTextFileSync(script, GDB_SCRIPT);
  const out = `${dir}/dump.bin`;
  const child = new Deno.Command(opts.gdb, {
    args: ["-nx", "-batch", "-x", script],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: {
      CEILING_OUT: out,
      CEILING_START: start.toString(16),
      CEILING_LENGTH: String(LENGTH),
      CEILING_DUMPS: String(DUMPS + 1),
      CEILING_TARGET: target,
      CEILING_SERVER_PID: String(serverPid),
    },
  }).spawn();
  children.add(child);
  const timer = setTimeout(() => child.kill("SIGKILL"), 300_000);
  const r = await child.output();
  clearTimeout(timer);
  children.delete(child);
  const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  const dumps: Dump[] = [];
  for (const m of text.matchAll(/CEILING_DUMP (\d+) ([\d.]+) ([\d.]+) ([\d.]+)/g)) {
    const file = `${out}.${m[1]}`;
    const got = Deno.readFileSync(file);
    Deno.removeSync(file);
    if (!sameBytes(got, want)) throw new Error(`gdb dump ${m[1]} from ${target} differs`);
    if (m[1] !== "0") {
      dumps.push({ wall: Number(m[2]), gdbCpu: Number(m[3]), serverCpu: Number(m[4]) });
    }
  }
  if (dumps.length !== DUMPS) throw new Error(`gdb session on ${target} failed:\n${text}`);
  return dumps;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// --- kdump-gdbserver ----------------------------------------------------------------------------

/** kdump-gdbserver on the ELF dump, on a free port. */
async function startServer(root: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-net",
      "--allow-env",
      "--v8-flags=--max-semi-space-size=1",
      `${root}cli/main.ts`,
      UNFILTERED.elf,
      "--port",
      "0",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  children.add(child);
  const { port, stderr, drained } = await listeningPort(child);
  if (!port) {
    child.kill("SIGKILL");
    children.delete(child);
    throw new Error(`kdump-gdbserver in ${root} did not start: ${stderr()}`);
  }
  return {
    port,
    pid: child.pid,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      children.delete(child);
      await drained;
    },
  };
}

/**
 * QEMU's own gdbstub with the `text` data at guest-physical 16 MiB (`-device loader`), the
 * machine paused at reset (`-S`: no paging, so gdb's addresses are physical ones, and no vCPU
 * runs). What gdb straight on QEMU gets, with the least work QEMU can do per `m`.
 */
async function startQemu(dataFile: string) {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const child = new Deno.Command("qemu-system-x86_64", {
    args: [
      ...["-accel", "tcg", "-m", "128", "-nodefaults", "-display", "none", "-monitor", "none"],
      ...["-serial", "none", "-S", "-gdb", `tcp:127.0.0.1:${port}`],
      ...["-device", `loader,file=${dataFile},addr=${QEMU_DATA_ADDRESS},force-raw=on`],
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  children.add(child);
  const stop = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    children.delete(child);
  };
  for (let i = 0; i < 100; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return { port, pid: child.pid, stop };
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  await stop();
  throw new Error(`qemu-system-x86_64 did not listen on 127.0.0.1:${port}`);
}
/** Guest-physical address of the data in the QEMU row. */
const QEMU_DATA_ADDRESS = 0x1000000;

/** Bytes kdump-gdbserver puts on the wire for the range, in gdb's 64 KiB requests. */
function rleBytes(data: Uint8Array, chunk: number): number {
  let total = 0;
  for (let o = 0; o < data.length; o += chunk) {
    const bytes = data.subarray(o, Math.min(o + chunk, data.length));
    total += frame(GDB_READS_BINARY ? binaryOf(bytes) : hexOf(bytes), true, false).length;
  }
  return total;
}

// --- the run ------------------------------------------------------------------------------------

interface Row {
  name: string;
  packetSize: string;
  requests: string;
  ack: string;
  rle: string;
  /** How gdb was offered memory: hex `m`, or binary `x` too. */
  encoding: string;
  data: string;
  wireMiB: number;
  dumps: Dump[];
}

const SIZES = [0x1000, 0x4000, 0x8000, 0x20000, 0x80000, 0x200000];
const stubVariants: StubVariant[] = [];
for (const ack of [false, true]) {
  for (const rle of [false, true]) {
    for (const packetSize of SIZES) {
      stubVariants.push({ data: "text", packetSize, ack, rle, binary: false });
    }
  }
}
for (const packetSize of [0x1000, 0x20000, 0x200000]) {
  stubVariants.push({ data: "zero", packetSize, ack: false, rle: true, binary: false });
}
stubVariants.push({ data: "zero", packetSize: 0x20000, ack: false, rle: false, binary: false });
for (const binary of [false, true]) {
  for (const packetSize of [0x20000, 0x80000, 0x200000]) {
    stubVariants.push({ data: "dump", packetSize, ack: false, rle: true, binary });
  }
  stubVariants.push({ data: "dump", packetSize: 0x20000, ack: false, rle: false, binary });
}
for (const packetSize of [0x20000, 0x80000, 0x200000]) {
  stubVariants.push({ data: "text", packetSize, ack: false, rle: true, binary: true });
}

const servers: [string, string][] = [["kdump-gdbserver", ROOT], ...COMPARE];
const rows = new Map<string, Row>();
const keyOf = (v: StubVariant) =>
  `stub ${v.data} ${v.packetSize.toString(16)} ${v.ack ? "ack" : "noack"} ${
    v.rle ? "rle" : "raw"
  } ` +
  (v.binary ? "bin" : "hex");

function addRow(key: string, fresh: () => Row, dumps: Dump[], round: number): void {
  const row = rows.get(key) ?? fresh();
  row.dumps.push(...dumps);
  rows.set(key, row);
  console.error(`round ${round + 1} ${key}: ${dumps.map((d) => d.wall.toFixed(3)).join(" ")} s`);
}

const tmp = Deno.makeTempDirSync({ prefix: "gdb_ceiling" });
Deno.writeFileSync(`${tmp}/text.bin`, textBytes);
const load0 = Deno.loadavg();
try {
  for (let round = 0; round < ROUNDS; round++) {
    if (ONLY.has("stub")) {
      for (const v of stubVariants.filter((v) => MATCH.test(keyOf(v)))) {
        const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const served = serveStub(listener, v);
        let dumps: Dump[];
        try {
          const port = (listener.addr as Deno.NetAddr).port;
          dumps = await gdbSession(`127.0.0.1:${port}`, TEXT, DATA[v.data], Deno.pid, tmp);
        } finally {
          listener.close();
        }
        const stats = await served;
        addRow(
          keyOf(v),
          () => ({
            name: "stub",
            packetSize: `0x${v.packetSize.toString(16)}`,
            requests: [...stats.sizes].filter(([, n]) => n >= 8).map(([l, n]) =>
              `0x${l.toString(16)} ×${n}`
            ).join(", "),
            ack: v.ack ? "ack" : "no-ack",
            rle: v.rle ? "on" : "off",
            encoding: v.binary ? "binary `x`" : "hex `m`",
            data: v.data,
            wireMiB: stats.memoryWireBytes / (DUMPS + 1) / MiB,
            dumps: [],
          }),
          dumps,
          round,
        );
      }
    }
    if (ONLY.has("server")) {
      for (const [name, root] of servers) {
        const server = await startServer(root);
        let dumps: Dump[];
        try {
          dumps = await gdbSession(
            `127.0.0.1:${server.port}`,
            DUMP_TEXT,
            dumpBytes,
            server.pid,
            tmp,
          );
        } finally {
          await server.stop();
        }
        addRow(
          name,
          () => ({
            name,
            // What the tree advertises, from its source (gdb asks half of it per `m`).
            packetSize: Deno.readTextFileSync(`${root}lib/rsp_session.ts`)
              .match(/MAX_PACKET_SIZE = (0x[0-9a-f]+)/)?.[1] ?? "?",
            requests: "",
            ack: "no-ack",
            rle: "on",
            encoding: GDB_READS_BINARY ? "binary `x`" : "hex `m`",
            data: "dump",
            wireMiB: rleBytes(dumpBytes, 0x10000) / MiB,
            dumps: [],
          }),
          dumps,
          round,
        );
      }
    }
    if (ONLY.has("qemu")) {
      const qemu = await startQemu(`${tmp}/text.bin`);
      let dumps: Dump[];
      try {
        const target = `127.0.0.1:${qemu.port}`;
        dumps = await gdbSession(target, BigInt(QEMU_DATA_ADDRESS), textBytes, qemu.pid, tmp);
      } finally {
        await qemu.stop();
      }
      addRow(
        "qemu",
        () => ({
          name: "QEMU 7.2 gdbstub (paused)",
          packetSize: "0x1000",
          requests: "",
          ack: "ack",
          rle: "off",
          encoding: "hex `m`",
          data: "text",
          wireMiB: 32,
          dumps: [],
        }),
        dumps,
        round,
      );
    }
  }
} finally {
  stopChildren();
  Deno.removeSync(tmp, { recursive: true });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const cpuName = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1];
console.log(
  `${new Date().toISOString()}; ${gdbVersion}; ${cpuName}, ${navigator.hardwareConcurrency} ` +
    `cores; load average ${load0.map((x) => x.toFixed(2)).join(" ")} before, ` +
    `${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")} after; ${ROUNDS}×${DUMPS} timed ` +
    `16 MiB dumps per row (MiB/s: 2^20 bytes per second)`,
);
console.log("");
console.log(
  "| server | data | PacketSize | `m`/`x` sizes gdb asked (count per dump) | acks | RLE | replies | " +
    "wire MiB per dump | best s | best MiB/s | median MiB/s | gdb CPU s (least) | " +
    "gdb CPU / wall | server CPU / wall |",
);
console.log(
  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
);
for (const r of rows.values()) {
  const walls = r.dumps.map((d) => d.wall);
  const best = Math.min(...walls);
  const sum = (f: (d: Dump) => number) => r.dumps.reduce((a, d) => a + f(d), 0);
  const wall = sum((d) => d.wall);
  console.log(
    `| ${r.name} | ${r.data} | ${r.packetSize} | ${r.requests} | ${r.ack} | ${r.rle} | ` +
      `${r.encoding} | ` +
      `${r.wireMiB.toFixed(1)} | ${best.toFixed(3)} | ${(16 / best).toFixed(1)} | ` +
      `${(16 / median(walls)).toFixed(1)} | ` +
      `${Math.min(...r.dumps.map((d) => d.gdbCpu)).toFixed(3)} | ` +
      `${(sum((d) => d.gdbCpu) / wall).toFixed(2)} | ` +
      `${(sum((d) => d.serverCpu) / wall).toFixed(2)} |`,
  );
}
