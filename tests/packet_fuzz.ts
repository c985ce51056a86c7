/**
 * Seeded generator of random and mutated RSP traffic, and the runners that throw it at the wire
 * parser, at a session, and at a whole TCP server (used by tests/fuzz_packets_test.ts in CI and
 * by tests/long_runs.ts for the long run).
 *
 * The oracle: after each case of traffic, the client sends a probe (a memory read, then a monitor
 * command whose reply names the case) preceded by bytes that finish any frame the traffic left
 * half-written. The server must answer the probe with exactly the bytes an untouched session
 * gives, unless the traffic legitimately ended the session (`D`, `k`, `vKill`, or `quit` typed
 * at the text console), which the debug log tells. Handlers must never throw (the session's "error handling packet" log line
 * is a failure), every reply packet must carry a valid checksum and fit the advertised
 * PacketSize, and the output buffered per step must stay bounded.
 *
 * @module
 */

import { MAX_PACKET_SIZE, RspSession } from "../lib/rsp_session.ts";
import {
  checksum,
  encodeRuns,
  expandRuns,
  framePacket,
  InputCursor,
  latin1Bytes,
  latin1String,
  PacketReader,
  ReplyWriter,
  unescapeBinary,
  WireEvent,
} from "../lib/rsp_wire.ts";
import { type RspServer, serveTcp } from "../lib/transport.ts";
import type { Target } from "../lib/target.ts";
import { caseSeed, Rng } from "./fuzz_rng.ts";
import { concatBytes } from "../lib/rsp_client.ts";

/** What the generator knows about the target: addresses worth reading, thread ids. */
export interface FuzzContext {
  /** Interesting addresses (start and end of readable memory, symbols, holes). */
  addresses: bigint[];
  /** Thread ids that exist. */
  threadIds: number[];
  /** Number of registers in the layout (p packets). */
  registerCount: number;
  /** Monitor commands worth trying besides the server's own. */
  monitorCommands: string[];
  /** Address of the probe reads: must be readable, 256 x 16 bytes from here. */
  probeBase: bigint;
}

/** Counts and failures of a run. */
export interface FuzzResult {
  cases: number;
  /** Packets the generator meant to be well-formed. */
  wellFormed: number;
  /** Bytes of traffic sent. */
  bytes: number;
  /** Sessions ended by the traffic itself (D, k, vKill, console quit). */
  closes: number;
  failures: string[];
}

const HEX = "0123456789abcdef";
const U64 = 0xffffffffffffffffn;
/** Commands that end a session when dispatched. */
const CLOSING = /^(D|k|vKill([:;?]|$))/;

function hex(v: bigint | number): string {
  return v.toString(16);
}

// --- generation ---------------------------------------------------------------------------------

function address(rng: Rng, ctx: FuzzContext): string {
  return rng.weighted<() => string>([
    [30, () => hex(rng.pick(ctx.addresses) + BigInt(rng.range(-64, 64)) & 0xffffffffffffffffn)],
    [8, () => hex(rng.pick(ctx.addresses) + BigInt(rng.int(0x100000)) & 0xffffffffffffffffn)],
    [5, () => "0"],
    [5, () => "ffffffffffffffff"],
    [3, () => "fffffffffffffff0"],
    [8, () => hex(rng.u64())],
    [2, () => "1" + "0".repeat(16)], // 17 digits: more than 64 bits
    [2, () => "f".repeat(rng.range(17, 200))],
    [1, () => ""],
    [1, () => "-1"],
    [1, () => "0x10"],
    [1, () => "FFFF888000000000"],
  ])();
}

function length(rng: Rng): string {
  return rng.weighted<() => string>([
    [20, () => hex(rng.range(1, 0x40))],
    [10, () => hex(rng.range(0x41, 0x1000))],
    [5, () => "0"],
    [5, () => "2000"],
    [5, () => "10000"],
    [3, () => "10001"],
    [3, () => "20000"],
    [5, () => "ffffffff"],
    [5, () => "ffffffffffffffff"],
    [2, () => "1" + "0".repeat(16)],
    [1, () => ""],
    [1, () => "g"],
    [1, () => "-1"],
  ])();
}

function threadId(rng: Rng, ctx: FuzzContext): string {
  return rng.weighted<() => string>([
    [10, () => hex(rng.pick(ctx.threadIds))],
    [3, () => "0"],
    [3, () => "-1"],
    [3, () => hex(rng.u32())],
    [2, () => `p1.${hex(rng.pick(ctx.threadIds))}`],
    [1, () => "p-1.-1"],
    [1, () => "ffffffffffffffffff"],
    [1, () => "zz"],
    [1, () => ""],
  ])();
}

function printable(rng: Rng, n: number): string {
  let s = "";
  for (let i = 0; i < n; i++) s += String.fromCharCode(rng.range(0x20, 0x7e));
  return s;
}

/** A request payload: mostly plausible gdb packets with hostile arguments. */
export function requestPayload(rng: Rng, ctx: FuzzContext): string {
  return rng.weighted<() => string>([
    [20, () => `m${address(rng, ctx)},${length(rng)}`],
    [6, () => `x${address(rng, ctx)},${length(rng)}`],
    [2, () => `m${address(rng, ctx)}`],
    [2, () => `m${address(rng, ctx)},${length(rng)},${length(rng)}`],
    [8, () => {
      const object = rng.pick([
        "features",
        "threads",
        "exec-file",
        "vmcoreinfo",
        "auxv",
        "libraries",
        "osdata",
        "memory-map",
        "siginfo",
      ]);
      const annex = rng.pick([
        "target.xml",
        "",
        "1",
        "../../../etc/passwd",
        "i386-64bit.xml",
        "target.xml:",
        printable(rng, 5),
      ]);
      const op = rng.chance(0.9) ? "read" : rng.pick(["write", "", "READ"]);
      return `qXfer:${object}:${op}:${annex}:${hex(BigInt(rng.int(0x10000)))},${length(rng)}`;
    }],
    [2, () => `qXfer:features:read:target.xml:${address(rng, ctx)},${length(rng)}`],
    [2, () => `qXfer:${printable(rng, rng.int(20))}`],
    [3, () => `H${rng.pick(["g", "c", "x", ""])}${threadId(rng, ctx)}`],
    [2, () => `T${threadId(rng, ctx)}`],
    [2, () => `qThreadExtraInfo,${threadId(rng, ctx)}`],
    [
      3,
      () =>
        rng.pick([
          "qfThreadInfo",
          "qsThreadInfo",
          "qC",
          "?",
          "qAttached",
          "qOffsets",
          "qSymbol::",
          "qTStatus",
          "vMustReplyEmpty",
          "qlinux.vmcoreinfo",
          "qTfV",
          "qGetTLSAddr:1,0,0",
        ]),
    ],
    [3, () =>
      "qSupported:" + rng.pick([
        "multiprocess+;swbreak+;hwbreak+;qRelocInsn+;" +
        "fork-events+;vfork-events+;exec-events+;vContSupported+;QThreadEvents+;no-resumed+;" +
        "memory-tagging+;xmlRegisters=i386",
        "",
        printable(rng, 40),
        "xmlRegisters=arm",
      ])],
    [4, () => rng.pick(["g", "g" + printable(rng, 3)])],
    [3, () => `p${rng.chance(0.7) ? hex(rng.int(ctx.registerCount + 4)) : address(rng, ctx)}`],
    [4, () => {
      const cmd = rng.pick([
        ...ctx.monitorCommands,
        "help",
        "threads",
        "vmcoreinfo",
        printable(rng, rng.int(40)),
        "vtop " + address(rng, ctx),
        "vtop 0x" + address(rng, ctx),
        "sym " + printable(rng, 8),
        "",
      ]);
      const hexText = Array.from(new TextEncoder().encode(cmd), (b) =>
        b.toString(16)
          .padStart(2, "0")).join("");
      return `qRcmd,${rng.chance(0.9) ? hexText : hexText + "z"}`;
    }],
    [3, () => `M${address(rng, ctx)},4:deadbeef`],
    [2, () => `X${address(rng, ctx)},4:\x7d\x03ab`],
    [1, () => `G${"00".repeat(rng.int(300))}`],
    [1, () => `P10=${"ff".repeat(8)}`],
    [2, () => `${rng.pick(["Z", "z"])}${rng.int(5)},${address(rng, ctx)},1`],
    [
      3,
      () =>
        rng.pick([
          "c",
          "s",
          "C05",
          "S0b",
          "vCont;c",
          "vCont;s:1",
          "vCont;c:-1",
          "vCont?",
          "vCont;x",
          "vCont",
          "vCtrlC",
          "vAttach;1",
          "vRun;6c73",
          "vStopped",
          "!",
          "R00",
          "A0,1,2",
        ]),
    ],
    [
      3,
      () =>
        `vFile:${
          rng.pick([
            "setfs:0",
            "open:2f6574632f706173737764,0,0",
            "pread:0,100,0",
            "close:0",
            "readlink:2f70726f632f73656c662f657865",
            "fstat:0",
            "unlink:2f746d70",
          ])
        }`,
    ],
    [
      4,
      () => `${rng.pick(["m", "x", "p", "H", "T", "q", "Q", "v"])}${printable(rng, rng.int(30))}`,
    ],
    [3, () => printable(rng, rng.int(60))],
    [1, () => rng.pick(["D", "D;1", "k", "vKill;1"])],
    [1, () => "3"],
    [2, () => "QStartNoAckMode"],
    [1, () => ""],
  ])();
}

/** One case of traffic: concatenated fragments of every kind. */
export interface TrafficCase {
  bytes: Uint8Array;
  /** Split points for delivery in several reads. */
  splits: number[];
  /** Fragments meant as well-formed packets. */
  wellFormed: number;
  /** Payloads of the well-formed packets (valid checksum, clean framing), in order. */
  goodPayloads: string[];
}

/** The parts in one new buffer (never one of the parts: callers keep and compare them). */
function concat(parts: Uint8Array[]): Uint8Array {
  return parts.length === 1 ? parts[0].slice() : concatBytes(parts);
}

/** A payload for an oversize packet: printable, no frame characters. */
function hugePayload(rng: Rng): Uint8Array {
  const n = rng.pick([
    MAX_PACKET_SIZE - 1,
    MAX_PACKET_SIZE,
    MAX_PACKET_SIZE + 1,
    MAX_PACKET_SIZE + rng.int(MAX_PACKET_SIZE),
  ]);
  const body = new Uint8Array(n).fill(rng.pick([0x30, 0x61, 0x20]));
  body[0] = rng.pick([0x6d, 0x58, 0x71, 0x47]); // m X q G
  return body;
}

/** How hostile a case may be. */
export interface TrafficOptions {
  /** Allow packets larger than PacketSize. */
  huge?: boolean;
  /**
   * Only traffic whose framing a test can account for: no `$` or `#` in garbage, truncated frames
   * cut before their `#`, no switch to the console, no-ack mode or end of session, no `-` from
   * the client (which asks for a resend). Every good packet must then be handled and answered.
   */
  accountable?: boolean;
}

/** Payloads a session handles without answering, or that change the mode or end the session. */
const UNACCOUNTABLE = /^(3$|QStartNoAckMode|D|k|vKill)|[$#]/;

/** Generate one case of traffic. */
export function trafficCase(rng: Rng, ctx: FuzzContext, options: TrafficOptions = {}): TrafficCase {
  const accountable = options.accountable ?? false;
  const allowHuge = options.huge ?? true;
  const parts: Uint8Array[] = [];
  const goodPayloads: string[] = [];
  let wellFormed = 0;
  const request = () => {
    for (;;) {
      const p = requestPayload(rng, ctx);
      if (!accountable || !UNACCOUNTABLE.test(p)) return p;
    }
  };
  const good = (payload: string) => {
    parts.push(framePacket(payload));
    goodPayloads.push(payload);
    wellFormed++;
  };
  const fragments = rng.range(1, 12);
  for (let f = 0; f < fragments; f++) {
    const kind = rng.weighted<string>([
      [40, "good"],
      [8, "badsum"],
      [8, "truncated"],
      [7, "garbage"],
      [5, "acks"],
      [3, "interrupt"],
      [4, "console"],
      [2, "restart"],
      [accountable ? 0 : 1, "kdb"],
      [1, "empty"],
      [allowHuge ? 0.4 : 0, "huge"],
      [1, "escaped"],
      [3, "bulk"],
    ]);
    switch (kind) {
      case "good":
        good(request());
        break;
      case "badsum": {
        const payload = request();
        const p = framePacket(payload);
        const n = p.length;
        const mode = rng.int(4);
        if (mode === 0) {
          p[n - 1] = HEX.charCodeAt((parseInt(String.fromCharCode(p[n - 1]), 16) + 1) & 15);
        } else if (mode === 1) p[n - 2] = rng.pick([0x67, 0x5a, 0x20, 0x24, 0x23]);
        else if (mode === 2) p[n - 1] = rng.pick([0x67, 0x00, 0xff, 0x2b]);
        else {
          // Upper-case digits are still a valid checksum.
          const upper = String.fromCharCode(p[n - 2], p[n - 1]).toUpperCase();
          p[n - 2] = upper.charCodeAt(0);
          p[n - 1] = upper.charCodeAt(1);
          goodPayloads.push(payload);
          wellFormed++;
        }
        parts.push(p);
        break;
      }
      case "truncated": {
        const p = framePacket(request());
        parts.push(p.subarray(0, accountable ? rng.range(1, p.length - 3) : rng.int(p.length)));
        break;
      }
      case "garbage": {
        const g = rng.bytes(rng.chance(0.9) ? rng.range(1, 300) : rng.range(300, 8000));
        if (accountable) {
          for (let i = 0; i < g.length; i++) {
            if (g[i] === 0x24 || g[i] === 0x23 || g[i] === 0x2d) g[i] = 0x20;
          }
        }
        parts.push(g);
        break;
      }
      case "acks": {
        const n = rng.range(1, 20);
        parts.push(
          Uint8Array.from({ length: n }, () => accountable || rng.chance(0.5) ? 0x2b : 0x2d),
        );
        break;
      }
      case "interrupt":
        parts.push(new Uint8Array(rng.range(1, 3)).fill(3));
        break;
      case "console":
        parts.push(latin1Bytes(rng.pick([
          "help\n",
          "threads\r\n",
          "vmcoreinfo\n",
          "\n",
          printable(rng, rng.int(80)).replace(/[$#-]/g, " ") + "\n",
          "he\x08\x7fhelp\n",
          "sys\n",
          "cache\n",
          ...(rng.chance(0.05) ? ["quit\n"] : []),
        ])));
        break;
      case "restart": {
        // A frame cut short by the start of another.
        const cut = latin1String(framePacket(request()));
        parts.push(latin1Bytes(cut.slice(0, rng.range(1, cut.length - 3))));
        good(request());
        break;
      }
      case "kdb":
        parts.push(latin1Bytes(rng.pick(["$?#3f", "$qSupported", "$qSupported:x#00", "$3#33"])));
        break;
      case "empty":
        good("");
        break;
      case "huge": {
        const body = hugePayload(rng);
        const framed = new Uint8Array(body.length + 4);
        framed[0] = 0x24;
        framed.set(body, 1);
        const sum = rng.chance(0.8) ? checksum(body) : checksum(body) ^ 1;
        framed[body.length + 1] = 0x23;
        framed[body.length + 2] = HEX.charCodeAt(sum >> 4);
        framed[body.length + 3] = HEX.charCodeAt(sum & 15);
        parts.push(framed);
        break;
      }
      case "escaped":
        // Escapes and run-length markers inside a request.
        good(
          `X${address(rng, ctx)},8:` + "}\x03}\x04*}]" + printable(rng, 4).replace(/[$#]/g, "."),
        );
        break;
      case "bulk": {
        // gdb's bulk read: consecutive requests of one size (a server may prepare the next
        // reply ahead), sometimes with another request in between.
        const size = rng.pick([0x1000, 0x2000, 0x8000, 0x10000]);
        let at = rng.pick(ctx.addresses) + BigInt(rng.range(-2, 2) * size);
        const op = rng.chance(0.8) ? "m" : "x";
        for (let k = rng.range(2, 6); k > 0; k--) {
          good(`${op}${hex(at & U64)},${hex(size)}`);
          at += BigInt(size);
          if (rng.chance(0.15)) good(rng.pick(["qC", "Hg1", "g", `m${hex(at & U64)},10`, "?"]));
        }
        break;
      }
    }
  }
  const bytes = concat(parts);
  const splits: number[] = [];
  if (bytes.length > 1) {
    const n = rng.chance(0.1) && bytes.length < 400 ? bytes.length - 1 : rng.int(5);
    for (let i = 0; i < n; i++) splits.push(rng.range(1, bytes.length - 1));
    splits.sort((a, b) => a - b);
  }
  return { bytes, splits, wellFormed, goodPayloads };
}

/** Cut a case's bytes at its split points. */
export function chunks(c: TrafficCase): Uint8Array[] {
  const out: Uint8Array[] = [];
  let at = 0;
  for (const s of c.splits) {
    if (s > at) out.push(c.bytes.subarray(at, s));
    at = Math.max(at, s);
  }
  out.push(c.bytes.subarray(at));
  return out;
}

// --- probes ---------------------------------------------------------------------------------------

/** Bytes sent before a probe: they finish a checksum the traffic may have left half-written. */
const PROBE_PREFIX = latin1Bytes("\n\0\0");

/**
 * The probe of case `index`: a 16-byte memory read, then a monitor command no traffic contains
 * (its reply echoes the case number), so that an answer to the probe cannot be mistaken for the
 * answer to an equal request in the traffic.
 */
function probeRequests(ctx: FuzzContext, index: number): [string, string] {
  const command = new TextEncoder().encode(`probe-${index}`);
  return [
    `m${hex(ctx.probeBase + BigInt((index % 256) * 16))},10`,
    `qRcmd,${Array.from(command, (b) => b.toString(16).padStart(2, "0")).join("")}`,
  ];
}

/** The probe's bytes on the wire, after the prefix that ends any half-written frame. */
function probeBytes(ctx: FuzzContext, index: number): Uint8Array {
  return concat([PROBE_PREFIX, ...probeRequests(ctx, index).map((p) => framePacket(p))]);
}

/** What a session must send for a probe, worked out by a separate, untouched session. */
export class ProbeOracle {
  #session: RspSession;

  constructor(target: Target) {
    this.#session = new RspSession(target);
    for (const p of ["qSupported", "QStartNoAckMode"]) this.#reply(p);
  }

  #reply(payload: string): Uint8Array {
    this.#session.receive(framePacket(payload));
    const parts: Uint8Array[] = [];
    do parts.push(this.#session.produce().slice()); while (!this.#session.inputDrained);
    return concat(parts);
  }

  /** The replies (without acks) to the probe of case `index`. */
  answer(ctx: FuzzContext, index: number): [Uint8Array, Uint8Array] {
    const [read, monitor] = probeRequests(ctx, index);
    const m = this.#reply(read);
    if (m[0] !== 0x24 || m[1] === 0x45) {
      throw new Error(`probe read at ${read} is unreadable: ${latin1String(m)}`);
    }
    return [m, this.#reply(monitor)];
  }
}

/** Whether received bytes end with a probe's answer (each reply after an optional ack). */
function probeAnswered(data: Uint8Array, [read, monitor]: [Uint8Array, Uint8Array]): boolean {
  if (!endsWith(data, monitor)) return false;
  let end = data.length - monitor.length;
  if (data[end - 1] === 0x2b) end--;
  return endsWith(data.subarray(0, end), read);
}

function endsWith(data: Uint8Array, tail: Uint8Array): boolean {
  if (data.length < tail.length) return false;
  const off = data.length - tail.length;
  for (let i = 0; i < tail.length; i++) if (data[off + i] !== tail[i]) return false;
  return true;
}

/**
 * Check reply packets: valid checksums, payload within PacketSize. Text console output may hold
 * stray `$` (it echoes unknown commands), so packets are only checked outside console mode.
 */
function checkReplies(out: Uint8Array, failures: string[], where: string): void {
  const reader = replyChecker;
  reader.resetFrame();
  const input = new InputCursor();
  input.reset(out);
  for (;;) {
    const e = reader.next(input);
    if (e === WireEvent.None) return;
    if (e !== WireEvent.Packet) continue;
    if (!reader.checksumOk) {
      failures.push(
        `${where}: reply with a bad checksum: ${preview(reader.payload, reader.length)}`,
      );
      return;
    }
    if (reader.oversize || reader.length > MAX_PACKET_SIZE) {
      failures.push(`${where}: reply of ${reader.length} bytes exceeds PacketSize`);
      return;
    }
    if (expandRuns(reader.payload.subarray(0, reader.length)) === undefined) {
      failures.push(`${where}: reply with a bad run-length encoding`);
      return;
    }
  }
}
const replyChecker = new PacketReader(4 * MAX_PACKET_SIZE);

function preview(bytes: Uint8Array, n = bytes.length): string {
  return JSON.stringify(latin1String(bytes.subarray(0, Math.min(n, 120))));
}

// --- session runner ---------------------------------------------------------------------------------

/** Most bytes one `produce()` may return: the high-water mark plus one largest reply. */
const MAX_STEP_OUTPUT = 256 * 1024 + 2 * MAX_PACKET_SIZE + 64;

/** A payload as the session's debug log shows it (printable ASCII, `\\xNN`, cut at 200). */
function logForm(payload: string): string {
  let s = "";
  const n = Math.min(payload.length, 200);
  for (let i = 0; i < n; i++) {
    const b = payload.charCodeAt(i);
    s += b >= 0x20 && b < 0x7f && b !== 0x5c ? payload[i] : `\\x${b.toString(16).padStart(2, "0")}`;
  }
  return payload.length > n ? `${s}... (${payload.length} bytes)` : s;
}

/** What the debug log says for a 0x03 byte (not a packet). */
const INTERRUPT_LINE = "[f] <- ^C (ignored: target is stopped)";

/** Session kinds: anything goes, or accountable traffic in ack or in no-ack mode. */
const FLAVORS = ["storm", "ack", "noack"] as const;
/** Cases per session before a new one (of the next flavor) starts. */
const CASES_PER_SESSION = 50;

/**
 * Throw `count` cases at sessions on `target`, each case followed by a probe. Sessions take turns
 * in three flavors: "storm" (anything, including console switches, no-ack mode and detaches),
 * and "ack" / "noack" with accountable traffic, where every packet the session handles must be
 * answered (checked on the acks and packets of the output in ack mode, on the debug log in no-ack
 * mode), and every well-formed packet sent must have been handled. A session the traffic ends is
 * replaced by a new one.
 */
export function runSessionFuzz(
  target: Target,
  ctx: FuzzContext,
  seed: number,
  first: number,
  count: number,
): FuzzResult {
  const oracle = new ProbeOracle(target);
  const result: FuzzResult = { cases: 0, wellFormed: 0, bytes: 0, closes: 0, failures: [] };
  /** Log lines of the current case, packet lines kept in order. */
  let lines: string[] = [];
  let lastIn = "";
  let consoleTouched = false;
  const log = (line: string) => {
    if (line === INTERRUPT_LINE) return;
    if (line.startsWith("[f] <- ")) lastIn = line.slice(7);
    else if (line.endsWith("-> console") || line.endsWith("console -> RSP")) consoleTouched = true;
    lines.push(line.length > 400 ? line.slice(0, 400) : line);
  };
  const fresh = () => new RspSession(target, { debug: true, log, label: "f" });
  // The twin gets the same input without debug logging (which may change how a session works
  // inside, e.g. whether it prepares replies ahead): its output must be the same, byte for byte.
  const twinLines: string[] = [];
  const quiet = () => new RspSession(target, { log: (l) => twinLines.push(l), label: "q" });
  let session = fresh();
  let twin = quiet();
  let flavor: typeof FLAVORS[number] = "storm";
  const run = (s: RspSession, bytes: Uint8Array, where: string): Uint8Array => {
    s.receive(bytes);
    const parts: Uint8Array[] = [];
    do {
      const out = s.produce();
      if (out.length > MAX_STEP_OUTPUT) {
        result.failures.push(`${where}: ${out.length} bytes in one step`);
      }
      parts.push(out.slice());
    } while (!s.inputDrained);
    return concat(parts);
  };
  let twinOutputs: Uint8Array[] = [];
  const feed = (bytes: Uint8Array, where: string): Uint8Array => {
    const out = run(session, bytes, where);
    twinOutputs.push(run(twin, bytes, where));
    if (twin.closed !== session.closed) {
      result.failures.push(`${where}: the quiet twin did not close alike`);
    }
    return out;
  };
  const startSession = (i: number) => {
    flavor = FLAVORS[Math.floor(i / CASES_PER_SESSION) % FLAVORS.length];
    session = fresh();
    twin = quiet();
    // A new session is a text console until its first packet, as gdb's qSupported.
    if (flavor !== "storm") feed(framePacket("qSupported:xmlRegisters=i386"), "handshake");
    if (flavor === "noack") {
      feed(framePacket("QStartNoAckMode"), "handshake");
      feed(latin1Bytes("+"), "handshake");
    }
  };
  for (let i = first; i < first + count; i++) {
    if (i === first || i % CASES_PER_SESSION === 0) startSession(i);
    const rng = new Rng(caseSeed(seed, i));
    const c = trafficCase(rng, ctx, { accountable: flavor !== "storm" });
    const where = `seed ${seed} case ${i} (${flavor})`;
    result.cases++;
    result.wellFormed += c.wellFormed;
    result.bytes += c.bytes.length;
    lines = [];
    twinOutputs = [];
    const outputs: Uint8Array[] = [];
    const answer = oracle.answer(ctx, i);
    try {
      for (const piece of chunks(c)) {
        if (session.closed) break;
        consoleTouched = session.consoleMode;
        const out = feed(piece, where);
        if (!consoleTouched && !session.consoleMode) checkReplies(out, result.failures, where);
        outputs.push(out);
      }
      if (!session.closed) {
        const out = feed(probeBytes(ctx, i), where);
        outputs.push(out);
        if (!probeAnswered(out, answer) && !session.closed) {
          result.failures.push(
            `${where}: probe not answered; got ${
              preview(out.subarray(Math.max(0, out.length - 100)))
            }`,
          );
        }
      }
    } catch (e) {
      result.failures.push(`${where}: session threw ${e instanceof Error ? e.stack : e}`);
      startSession(i + 1);
      continue;
    }
    const thrown = [...lines, ...twinLines].find((l) => l.includes("error handling packet"));
    if (thrown) result.failures.push(`${where}: a handler threw: ${thrown.slice(0, 300)}`);
    twinLines.length = 0;
    const mine = concat(outputs);
    const theirs = concat(twinOutputs);
    // `monitor cache` counts hits and misses of a cache both sessions share: it may differ.
    const text = latin1String(c.bytes);
    const statistics = text.includes("cache") || text.includes("6361636865");
    if (!statistics && (mine.length !== theirs.length || mine.some((b, k) => b !== theirs[k]))) {
      const at = mine.findIndex((b, k) => b !== theirs[k]);
      result.failures.push(
        `${where}: the quiet twin answered differently from byte ${at < 0 ? mine.length : at}: ` +
          `${preview(theirs.subarray(Math.max(0, at), at + 60))} vs ${
            preview(mine.subarray(Math.max(0, at), at + 60))
          }`,
      );
    }
    if (flavor !== "storm") {
      account(
        flavor,
        concat(outputs),
        lines,
        [...c.goodPayloads, ...probeRequests(ctx, i)],
        where,
        result.failures,
      );
    }
    if (session.closed) {
      if (!session.consoleMode && !CLOSING.test(lastIn)) {
        result.failures.push(
          `${where}: session closed after ${JSON.stringify(lastIn.slice(0, 80))}`,
        );
      }
      result.closes++;
      startSession(i + 1);
    }
    if (result.failures.length > 20) break;
  }
  return result;
}

/**
 * For accountable traffic: every well-formed packet was handled (it is in the log, in order), and
 * every handled packet was answered: in ack mode each `+` is followed by a reply packet and there
 * is one ack per handled packet; in no-ack mode each logged request is followed by a logged reply.
 */
function account(
  flavor: "ack" | "noack",
  output: Uint8Array,
  lines: string[],
  good: string[],
  where: string,
  failures: string[],
): void {
  const handled = lines.filter((l) => l.startsWith("[f] <- ")).map((l) => l.slice(7));
  let k = 0;
  for (const p of good) {
    const form = logForm(p);
    while (k < handled.length && handled[k] !== form) k++;
    if (k === handled.length) {
      failures.push(
        `${where}: well-formed packet ${JSON.stringify(form.slice(0, 80))} not handled`,
      );
      return;
    }
    k++;
  }
  if (flavor === "noack") {
    for (let j = 0; j < lines.length; j++) {
      if (!lines[j].startsWith("[f] <- ")) continue;
      const next = lines.slice(j + 1).find((l) =>
        l.startsWith("[f] <- ") || l.startsWith("[f] -> ")
      );
      if (!next?.startsWith("[f] -> ")) {
        failures.push(`${where}: no reply to ${JSON.stringify(lines[j].slice(7, 87))}`);
        return;
      }
    }
    return;
  }
  const oversize = lines.filter((l) => l.includes("larger than")).length;
  const reader = replyChecker;
  reader.resetFrame();
  const input = new InputCursor();
  input.reset(output);
  const acks: string[] = [];
  for (;;) {
    const e = reader.next(input);
    if (e === WireEvent.None) break;
    if (e === WireEvent.Ack) acks.push("+");
    else if (e === WireEvent.Nack) acks.push("-");
    else if (e === WireEvent.Packet && acks.length) acks[acks.length - 1] += "p";
  }
  if (acks.length !== handled.length + oversize) {
    failures.push(`${where}: ${acks.length} acks for ${handled.length + oversize} packets`);
  }
  const silent = acks.findIndex((a) => a === "+");
  if (silent >= 0) {
    failures.push(
      `${where}: acked packet ${JSON.stringify(handled[silent]?.slice(0, 80))} not answered`,
    );
  }
}

// --- wire runner ------------------------------------------------------------------------------------

/** Events of a byte stream fed in pieces, as comparable strings. */
function wireEvents(reader: PacketReader, pieces: Uint8Array[]): string[] {
  reader.resetFrame();
  const input = new InputCursor();
  const out: string[] = [];
  for (const piece of pieces) {
    input.reset(piece);
    for (;;) {
      const e = reader.next(input);
      if (e === WireEvent.None) break;
      if (reader.length > reader.maxPayload) out.push("payload exceeds maxPayload");
      if (e === WireEvent.Packet) {
        const body = reader.oversize
          ? "<oversize>"
          : latin1String(reader.payload.subarray(0, reader.length));
        out.push(`${reader.checksumOk ? "$" : "!"}${body}`);
      } else out.push(String(e));
    }
  }
  return out;
}

/**
 * Wire-level properties on `count` cases: the same events however the stream is split; clean
 * packets between acks come out exactly; replies built by ReplyWriter (text, hex, binary, run-length
 * encoding) decode to what was put in and never contain a raw frame character.
 */
export function runWireFuzz(
  ctx: FuzzContext,
  seed: number,
  first: number,
  count: number,
): FuzzResult {
  const result: FuzzResult = { cases: 0, wellFormed: 0, bytes: 0, closes: 0, failures: [] };
  const reader = new PacketReader(4096);
  const writer = new ReplyWriter(256);
  writer.keepLastPacket = false;
  const replyReader = new PacketReader(1 << 20);
  for (let i = first; i < first + count; i++) {
    const rng = new Rng(caseSeed(seed, i));
    const where = `wire seed ${seed} case ${i}`;
    result.cases++;
    // 1. Split invariance on hostile traffic.
    const c = trafficCase(rng, ctx, { huge: rng.chance(0.05) });
    result.bytes += c.bytes.length;
    const whole = wireEvents(reader, [c.bytes]);
    const split = wireEvents(reader, chunks(c));
    if (whole.join("\n") !== split.join("\n")) {
      result.failures.push(`${where}: events depend on how the stream is split`);
    }
    if (whole.includes("payload exceeds maxPayload")) {
      result.failures.push(`${where}: payload overrun`);
    }
    // 2. Clean packets and acks in random pieces come out exactly.
    const payloads: string[] = [];
    const parts: Uint8Array[] = [];
    for (let k = rng.range(1, 8); k > 0; k--) {
      if (rng.chance(0.3)) parts.push(latin1Bytes(rng.pick(["+", "-", "\x03"])));
      let p = requestPayload(rng, ctx).replace(/[$#]/g, "");
      if (p.length > 4096) p = p.slice(0, 4096);
      payloads.push(p);
      parts.push(framePacket(p));
      result.wellFormed++;
    }
    const clean: TrafficCase = {
      bytes: concat(parts),
      splits: [],
      wellFormed: 0,
      goodPayloads: [],
    };
    for (let k = rng.int(6); k > 0; k--) clean.splits.push(rng.range(1, clean.bytes.length));
    clean.splits.sort((a, b) => a - b);
    const got = wireEvents(reader, chunks(clean)).filter((e) => e[0] === "$" || e[0] === "!");
    if (got.join("\n") !== payloads.map((p) => "$" + p).join("\n")) {
      result.failures.push(`${where}: clean packets not recovered: ${got.slice(0, 3)}`);
    }
    // 3. Replies round-trip through run-length encoding and binary escapes.
    const data = rng.chance(0.5) ? rng.bytes(rng.int(3000)) : runs(rng);
    writer.startPacket();
    writer.text("l");
    const mode = rng.int(2);
    if (mode === 0) writer.binary(data);
    else writer.hex(data);
    writer.endPacket();
    const wire = writer.take().slice();
    const events: Uint8Array[] = [];
    replyReader.resetFrame();
    const input = new InputCursor();
    input.reset(wire);
    while (replyReader.next(input) === WireEvent.Packet) {
      if (!replyReader.checksumOk) result.failures.push(`${where}: reply checksum`);
      events.push(replyReader.payload.slice(0, replyReader.length));
    }
    if (events.length !== 1) {
      result.failures.push(`${where}: reply framing (${events.length} packets)`);
      continue;
    }
    for (let k = 1; k < wire.length - 3; k++) {
      if (wire[k] === 0x24 || wire[k] === 0x23) {
        result.failures.push(`${where}: raw frame character inside a reply`);
        break;
      }
    }
    const expanded = expandRuns(events[0]);
    const decoded = expanded === undefined
      ? undefined
      : mode === 0
      ? unescapeBinary(expanded.subarray(1))
      : hexToBytes(latin1String(expanded.subarray(1)));
    if (
      decoded === undefined || decoded.length !== data.length ||
      decoded.some((b, j) => b !== data[j])
    ) {
      result.failures.push(`${where}: reply does not decode to its data`);
    }
    // encodeRuns never grows its input.
    const dst = new Uint8Array(data.length);
    if (encodeRuns(data, data.length, dst, 0) > data.length) {
      result.failures.push(`${where}: RLE grew`);
    }
    if (result.failures.length > 20) break;
  }
  return result;
}

/** Data with runs of every length, the run-length encoder's hard cases. */
function runs(rng: Rng): Uint8Array {
  const out: number[] = [];
  while (out.length < 2000) {
    const b = rng.pick([0x30, 0x23, 0x24, 0x2a, 0x7d, 0x00, rng.int(256)]);
    const n = rng.chance(0.5) ? rng.range(1, 12) : rng.range(90, 300);
    for (let k = 0; k < n; k++) out.push(b);
  }
  return Uint8Array.from(out);
}

function hexToBytes(text: string): Uint8Array | undefined {
  if (text.length % 2) return undefined;
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) {
    const v = parseInt(text.slice(2 * i, 2 * i + 2), 16);
    if (Number.isNaN(v)) return undefined;
    out[i] = v;
  }
  return out;
}

// --- TCP runner -------------------------------------------------------------------------------------

/** A TCP client that keeps reading everything the server sends. */
export class TcpFuzzClient {
  readonly conn: Deno.TcpConn;
  received: Uint8Array = new Uint8Array(1 << 16);
  length = 0;
  closed = false;
  /** Set once the server has accepted QStartNoAckMode (by {@link tcpExchange}). */
  noAck = false;
  readonly #done: Promise<void>;
  #wake: (() => void) | undefined;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    conn.setNoDelay(true);
    this.#done = this.#pump();
  }

  /** Connect to a server. */
  static async connect(port: number): Promise<TcpFuzzClient> {
    return new TcpFuzzClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Local port: the server's log labels this client `[127.0.0.1:PORT]`. */
  get port(): number {
    return this.conn.localAddr.port;
  }

  async #pump(): Promise<void> {
    const buf = new Uint8Array(1 << 16);
    try {
      for (;;) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        if (this.length + n > this.received.length) {
          const grown = new Uint8Array(Math.max(this.received.length * 2, this.length + n));
          grown.set(this.received.subarray(0, this.length));
          this.received = grown;
        }
        this.received.set(buf.subarray(0, n), this.length);
        this.length += n;
        this.#wake?.();
      }
    } catch {
      // reset by the server: same as closed
    }
    this.closed = true;
    this.#wake?.();
  }

  /** Forget what was received so far. */
  clear(): void {
    this.length = 0;
  }

  /** Everything received since the last clear. */
  get data(): Uint8Array {
    return this.received.subarray(0, this.length);
  }

  /** Write all bytes (false when the server has gone). */
  async write(bytes: Uint8Array): Promise<boolean> {
    try {
      let o = 0;
      while (o < bytes.length) o += await this.conn.write(bytes.subarray(o));
      return true;
    } catch {
      return false;
    }
  }

  /** Wait until `predicate` holds, the connection closes, or `ms` pass; whether it holds. */
  async until(predicate: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!predicate()) {
      if (this.closed) return predicate();
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 50));
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    return true;
  }

  /** Close and wait for the reader to stop. */
  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
    await this.#done;
  }
}

/** What a TCP server logs that the fuzz needs: each client's last packet, and any problem. */
export class ServerLog {
  /** Lines saying something went wrong inside the server (kept; everything else is not). */
  lines: string[] = [];
  /** The last packet each client port sent. */
  lastIn = new Map<number, string>();
  readonly log = (line: string): void => {
    const m = /^\[127\.0\.0\.1:(\d+)\] <- (.*)$/s.exec(line);
    if (m) this.lastIn.set(Number(m[1]), m[2]);
    else if (PROBLEM.test(line)) this.lines.push(line);
  };

  /** Lines saying something went wrong inside the server. */
  problems(): string[] {
    return this.lines;
  }

  /** Forget a client that has gone. */
  forget(port: number): void {
    this.lastIn.delete(port);
  }
}

const PROBLEM =
  /error handling packet|session ended by error|session failed|accept failed|Uncaught/;

/**
 * Run `count` cases against a TCP server, reconnecting when the traffic ends a session. A `quiet`
 * run uses a server without debug logging (which may work differently inside) and accountable
 * traffic that never ends a session: then any closed connection is a failure.
 */
export async function runTcpFuzz(
  target: Target,
  ctx: FuzzContext,
  seed: number,
  first: number,
  count: number,
  existing?: { server: RspServer; log: ServerLog },
  quiet = false,
): Promise<FuzzResult> {
  const oracle = new ProbeOracle(target);
  const result: FuzzResult = { cases: 0, wellFormed: 0, bytes: 0, closes: 0, failures: [] };
  const log = existing?.log ?? new ServerLog();
  const server = existing?.server ??
    await serveTcp(target, { port: 0, debug: !quiet, log: log.log });
  const connect = async () => {
    const c = await TcpFuzzClient.connect(server.port);
    // Out of the text console, as gdb does with its first packet.
    if (quiet) await tcpExchange(c)("qSupported");
    return c;
  };
  let client = await connect();
  try {
    for (let i = first; i < first + count; i++) {
      const rng = new Rng(caseSeed(seed, i));
      const c = trafficCase(rng, ctx, { accountable: quiet });
      const where = `tcp seed ${seed} case ${i}${quiet ? " (quiet)" : ""}`;
      result.cases++;
      result.wellFormed += c.wellFormed;
      result.bytes += c.bytes.length;
      client.clear();
      let alive = true;
      for (const piece of chunks(c)) {
        if (!(alive = await client.write(piece))) break;
      }
      if (alive) alive = await client.write(probeBytes(ctx, i));
      const answer = oracle.answer(ctx, i);
      const ok = alive && await client.until(() => probeAnswered(client.data, answer), 10_000);
      if (!ok) {
        // Ended by the traffic? The server closes the connection after D, k, vKill or quit.
        await client.until(() => client.closed, 10_000);
        const last = log.lastIn.get(client.port) ?? "";
        // The text console (where a new connection starts, and where `3` goes back to) ends the
        // connection on `quit`.
        const consoleQuit = (last === "3" || last === "") &&
          /(quit|exit)\s*[\r\n]/.test(latin1String(c.bytes));
        if (!client.closed) {
          result.failures.push(
            `${where}: probe not answered; got ${
              preview(client.data.subarray(Math.max(0, client.length - 100)))
            }`,
          );
        } else if (quiet || (!CLOSING.test(last) && !consoleQuit)) {
          result.failures.push(
            `${where}: connection closed after ${JSON.stringify(last.slice(0, 80))}`,
          );
        } else result.closes++;
        await client.close();
        log.forget(client.port);
        client = await connect();
      }
      const problems = log.problems();
      if (problems.length) {
        result.failures.push(`${where}: ${problems.join("; ").slice(0, 400)}`);
        log.lines = [];
      }
      if (result.failures.length > 20) break;
    }
  } finally {
    await client.close();
    if (!existing) await server.close();
  }
  return result;
}

// --- normal sessions --------------------------------------------------------------------------------

/** Sends one request and returns its reply packets (payloads, runs expanded). */
export type Exchange = (payload: string) => Promise<string[]>;

/**
 * What gdb does on connect and in a short session, as [request, replies] pairs: the answers a
 * server must keep giving whatever happened before. Ends with `D`.
 */
export async function normalTranscript(exchange: Exchange, ctx: FuzzContext): Promise<string[]> {
  const lines: string[] = [];
  const ask = async (p: string) => {
    const replies = await exchange(p);
    lines.push(`${p} => ${replies.join(" | ")}`);
    return replies;
  };
  const xfer = async (object: string, annex: string) => {
    for (let offset = 0; offset < 1 << 20; offset += 0x300) {
      const [r] = await ask(`qXfer:${object}:read:${annex}:${hex(offset)},300`);
      if (r === undefined || r[0] !== "m") return;
    }
  };
  await ask("qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386");
  await ask("vMustReplyEmpty");
  await ask("Hg0");
  await xfer("features", "target.xml");
  await ask("qTStatus");
  await ask("?");
  await xfer("threads", "");
  await ask("qAttached");
  await xfer("exec-file", "1");
  await ask("Hc-1");
  await ask("qOffsets");
  await ask("g");
  for (const id of ctx.threadIds.slice(0, 4)) {
    await ask(`Hg${hex(id)}`);
    await ask("g");
    await ask("p10");
    await ask(`T${hex(id)}`);
  }
  await ask("qfThreadInfo");
  await ask("qsThreadInfo");
  for (const a of ctx.addresses) {
    await ask(`m${hex(a)},40`);
    await ask(`x${hex(a)},40`);
  }
  await ask(`m${hex(ctx.probeBase)},10000`);
  await ask(`m${hex(ctx.probeBase)},ffffffffffffffff`);
  await ask("qRcmd,68656c70"); // help
  await ask("qRcmd,74687265616473"); // threads
  await ask("qlinux.vmcoreinfo");
  await xfer("vmcoreinfo", "");
  await ask(`M${hex(ctx.probeBase)},1:00`);
  await ask("vCont;c");
  await ask("D");
  return lines;
}

/** A request's replies are complete when this holds (monitor output ends with OK or an error). */
function complete(payload: string, replies: string[]): boolean {
  if (replies.length === 0) return false;
  if (payload.startsWith("qRcmd,")) {
    const last = replies[replies.length - 1];
    return last === "OK" || last.startsWith("E");
  }
  if (payload.startsWith("vCont;c") || payload === "c" || payload === "s") {
    return replies.length >= 2;
  }
  return true;
}

/** Reply payloads in a received stream (acks left out, runs expanded). */
export function replyPayloads(bytes: Uint8Array): string[] {
  const reader = replyChecker;
  reader.resetFrame();
  const input = new InputCursor();
  input.reset(bytes);
  const out: string[] = [];
  for (;;) {
    const e = reader.next(input);
    if (e === WireEvent.None) return out;
    if (e === WireEvent.Packet) {
      const run = expandRuns(reader.payload.subarray(0, reader.length));
      out.push(reader.checksumOk && run ? latin1String(run) : "<bad reply>");
    }
  }
}

/** An exchange over a TCP client in no-ack mode (after a first `+`-acked qSupported). */
export function tcpExchange(client: TcpFuzzClient, timeoutMs = 10_000): Exchange {
  return async (payload: string) => {
    const ackMode = !client.noAck;
    client.clear();
    if (!await client.write(framePacket(payload))) throw new Error(`${payload}: write failed`);
    let replies: string[] = [];
    const ok = await client.until(() => {
      replies = replyPayloads(client.data);
      return complete(payload, replies) && (!ackMode || client.data[0] === 0x2b);
    }, timeoutMs);
    if (!ok && !(payload === "D" && client.closed)) {
      throw new Error(`${payload}: no complete reply; got ${preview(client.data)}`);
    }
    if (ackMode) await client.write(latin1Bytes("+"));
    if (payload === "QStartNoAckMode" && replies[0] === "OK") client.noAck = true;
    return replies;
  };
}

/** An exchange driving a session directly (as a transport would). */
export function sessionExchange(session: RspSession): Exchange {
  // deno-lint-ignore require-await
  return async (payload: string) => {
    session.receive(framePacket(payload));
    const parts: Uint8Array[] = [];
    do parts.push(session.produce().slice()); while (!session.inputDrained);
    return replyPayloads(concat(parts));
  };
}
