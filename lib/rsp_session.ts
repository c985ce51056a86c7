/**
 * One client's RSP session: acks and no-ack mode, the text console / RSP switch, and dispatch of
 * each packet to a small handler per packet family (queries, qXfer objects, threads, registers,
 * memory, execution control). Everything is synchronous: the transport feeds received bytes with
 * {@link RspSession.receive} and writes what {@link RspSession.produce} returns.
 *
 * The session only talks to a {@link Target}; it never knows where memory comes from.
 *
 * @module
 */

import { CONSOLE_HELP, TextConsole } from "./console.ts";
import { DumpError, LiveError } from "./errors.ts";
import { KdbShell, tokenize } from "./kdb.ts";
import { AARCH64_LAYOUT } from "./regs_aarch64.ts";
import { X86_64_LAYOUT } from "./regs_x86_64.ts";
import { encodeAllRegisters, encodeRegister, type RegisterLayout } from "./regs.ts";
import {
  errorReply,
  hexDecode,
  hexEncodeText,
  InputCursor,
  latin1Bytes,
  latin1String,
  PacketReader,
  ReplyWriter,
  unescapeBinary,
  WireEvent,
} from "./rsp_wire.ts";
import {
  isLoneStep,
  type ResumeAction,
  type StopEvent,
  type Target,
  type ThreadInfo,
} from "./target.ts";
import { execFileForGdb, generatedExec, HostIo, librariesSvr4Xml } from "./rsp_hostio.ts";

/**
 * Largest packet payload the server accepts, advertised as `PacketSize`. gdb sizes its `m` and
 * `x` requests at half of it (measured with gdb 13: 0x4000 gives 0x2000-byte reads, 0x20000
 * gives 0x10000, 0x100000 gives 0x80000), so 512 KiB makes a bulk read 256 KiB per round trip.
 * Each round trip wakes gdb and the server once more; with gdb 16's binary replies, which gdb
 * decodes fast, that showed: a warm 16 MiB dump over a pipe took 0.33 s at 64 KiB per request
 * and 0.23-0.25 s at 256 KiB or 1 MiB alike (BENCHMARKS.md, section 1). The size bounds what a
 * client can make a session hold (one packet in, one reply out, one prepared by read-ahead), so
 * the smaller of the two: a quarter of the memory, and a reply that fits the send buffer an
 * unchanged Linux grants (lib/transport.ts).
 */
export const MAX_PACKET_SIZE = 0x80000;
/** Largest `m`/`x` read answered at once (hex doubles the size). */
const MAX_MEMORY_READ = MAX_PACKET_SIZE / 2;
/** Smallest `m`/`x` read that starts read-ahead of the next one (gdb's bulk reads are larger). */
const READ_AHEAD_MIN = 0x1000;
/** Stop handling input once this much output is waiting, until the transport has written it. */
const OUTPUT_HIGH_WATER = 256 * 1024;
/** Longest packet text shown by the debug log. */
const LOG_PACKET_CHARS = 200;

const ERR_MALFORMED = "E01";
const ERR_MEMORY = "E14";
const ERR_XFER = "E00";
/** `}`: escapes the next byte of binary data (`X` requests). */
const ESCAPE_BYTE = 0x7d;
/** Reply to writes: `E.` errors are accepted by gdb, which shows the text for register writes. */
const ERR_READ_ONLY = "E.target is a crash dump: memory and registers are read-only";
const CANNOT_RUN = "Target is a crash dump: it cannot run or step.\n";

/** Session options. */
export interface SessionOptions {
  /** Log every packet in and out (truncated) through `log`. */
  debug?: boolean;
  /** Writes one line of diagnostics (the transports default to stderr). */
  log?: (line: string) => void;
  /** Names the client in log lines, e.g. `127.0.0.1:40312` or `stdio`. */
  label?: string;
}

/** Layout for a target architecture. */
function layoutFor(target: Target): RegisterLayout {
  return target.arch === "aarch64" ? AARCH64_LAYOUT : X86_64_LAYOUT;
}

/** XML text with `& < > " '` escaped and control characters made visible. */
function xmlEscape(text: string): string {
  // Control characters are not allowed in XML 1.0, not even as character references.
  // deno-lint-ignore no-control-regex
  return text.replace(/[&<>"']|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g, (c) => {
    switch (c) {
      case "&":
        return "&amp;";
      case "<":
        return "&lt;";
      case ">":
        return "&gt;";
      case '"':
        return "&quot;";
      case "'":
        return "&apos;";
      default:
        return `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`;
    }
  });
}

/** A hex number of at most 16 digits, or undefined. */
function parseHex64(text: string): bigint | undefined {
  return /^[0-9a-fA-F]{1,16}$/.test(text) ? BigInt("0x" + text) : undefined;
}

/** `ADDR,LEN` as a bigint address and a length (clamped to a safe integer), or undefined. */
function parseAddressLength(text: string): { address: bigint; length: number } | undefined {
  const comma = text.indexOf(",");
  if (comma < 0) return undefined;
  const address = parseHex64(text.slice(0, comma));
  const length = parseHex64(text.slice(comma + 1));
  if (address === undefined || length === undefined) return undefined;
  return { address, length: length > 0xffffffffn ? 0xffffffff : Number(length) };
}

/**
 * `X ADDR,LEN:DATA` with binary-escaped data (`}` then byte ^ 0x20) as its address and bytes, or
 * undefined when it is malformed: a bad header, an escape with no byte after it, or a length
 * that is not the data's.
 */
function parseBinaryWrite(packet: string): { address: bigint; data: Uint8Array } | undefined {
  const m = packet.match(/^X([0-9a-fA-F]{1,16}),([0-9a-fA-F]{1,8}):/);
  if (!m) return undefined;
  // The session's packet text is latin1: one char per byte of the payload, escapes in place.
  const escaped = latin1Bytes(packet.slice(m[0].length));
  // unescapeBinary drops a trailing lone `}`; in a request it makes the packet malformed.
  let i = 0;
  while (i < escaped.length) i += escaped[i] === ESCAPE_BYTE ? 2 : 1;
  if (i !== escaped.length) return undefined;
  const data = unescapeBinary(escaped);
  if (data.length !== parseInt(m[2], 16)) return undefined;
  return { address: BigInt("0x" + m[1]), data };
}

/** The value of a register's bytes as gdb sends them (target byte order: little-endian). */
function littleEndian(bytes: Uint8Array): bigint {
  let value = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]);
  return value;
}

/** Thread id of an `H` / `T` / `qThreadExtraInfo` argument: -1 (all), 0 (any), or an id. */
function parseThreadId(text: string): number | undefined {
  if (text === "-1") return -1;
  // Multiprocess form `pPID.TID`: only the thread part matters here.
  const dot = text.startsWith("p") ? text.indexOf(".") : -1;
  const tid = dot >= 0 ? text.slice(dot + 1) : text;
  if (tid === "-1") return -1;
  const v = parseHex64(tid);
  return v === undefined || v > BigInt(Number.MAX_SAFE_INTEGER) ? undefined : Number(v);
}

/** A packet for the debug log: printable ASCII, other bytes as `\xNN`, long ones cut. */
function loggable(bytes: Uint8Array): string {
  let s = "";
  const n = Math.min(bytes.length, LOG_PACKET_CHARS);
  for (let i = 0; i < n; i++) {
    const b = bytes[i];
    s += b >= 0x20 && b < 0x7f && b !== 0x5c
      ? String.fromCharCode(b)
      : `\\x${b.toString(16).padStart(2, "0")}`;
  }
  return bytes.length > n ? `${s}... (${bytes.length} bytes)` : s;
}

/** One client's session over any byte channel. */
export class RspSession {
  readonly #target: Target;
  readonly #layout: RegisterLayout;
  readonly #debug: boolean;
  readonly #log: (line: string) => void;
  readonly #label: string;

  readonly #input = new InputCursor();
  readonly #reader = new PacketReader(MAX_PACKET_SIZE);
  readonly #writer = new ReplyWriter();
  readonly #console: TextConsole;
  /** kdb's state for this client: the console and `monitor` commands share it. */
  readonly #kdb: KdbShell;
  /** Whether any byte has arrived (the greeting prompt is only for a silent client). */
  #heard = false;

  #consoleMode = true;
  #noAck = false;
  #closed = false;
  /** m/x read physical addresses (Qqemu.PhyMemMode:1). */
  #physical = false;
  /** Thread for `g`/`p`/`qC`, set by `Hg` (0 = the target's stop thread). */
  #generalThread = 0;
  /**
   * The thread gdb's user selected, which `monitor` commands run in: the last one gdb checked
   * with `T` (`thread N`, `thread apply`, MI's -thread-select all send it), 0 = the stop thread.
   * Not `Hg`: gdb sends that to read registers it has not cached (`info threads` reads every
   * thread's, then goes back to the selected thread silently), and none for a thread it has.
   */
  #selectedThread = 0;
  /**
   * gdb's user selected a thread (or the target stopped) since kdb's current CPU and task last
   * followed the selection: kdb moves only then, so `monitor cpu N` holds until the next one.
   */
  #selectionChanged = true;
  /** Next index for `qsThreadInfo`. */
  #threadCursor = 0;
  #threads: ThreadInfo[] | undefined;
  #threadIds: Set<number> | undefined;
  #threadsXmlCache: Uint8Array | undefined;
  readonly #hostIo: HostIo;

  /** @param target what the client debugs */
  constructor(target: Target, options: SessionOptions = {}) {
    this.#target = target;
    this.#hostIo = new HostIo(target);
    this.#layout = layoutFor(target);
    this.#debug = options.debug ?? false;
    this.#log = options.log ?? (() => {});
    this.#label = options.label ?? "client";
    if (this.#debug) {
      this.#writer.onPacket = (payload) => this.#log(`[${this.#label}] -> ${loggable(payload)}`);
    }
    this.#kdb = new KdbShell(target, CONSOLE_HELP, {
      resume: (stepThread, fromGo) => this.#consoleGo(stepThread, fromGo),
      gdbAttached: () => !this.#consoleMode,
    });
    this.#console = new TextConsole(
      (line, write) => {
        this.#kdbCurrent();
        const action = this.#kdb.run(line, write);
        this.#kdbSeen();
        return this.#consoleRunning && action === "continue" ? "running" : action;
      },
      () => this.#kdb.prompt,
    );
  }

  /** Whether the session has ended (`D`, `k`, console `quit`); the transport should close. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Whether all received bytes have been handled and nothing is left to do (the transport may
   * read more). After a bulk memory reply it stays false until the next `produce()` call, which
   * prepares the reply to the read that will follow while the client decodes this one: a
   * transport writes each output, then calls `produce()` again while this is false.
   */
  get inputDrained(): boolean {
    return (this.#input.drained && !this.#readAheadDue && !this.#afterStopDue) || this.#closed;
  }

  /** Whether the channel is in text console mode rather than RSP. */
  get consoleMode(): boolean {
    return this.#consoleMode;
  }

  /**
   * Hand over received bytes. The array is used in place (not copied): keep it unchanged until
   * {@link inputDrained} is true.
   */
  receive(chunk: Uint8Array): void {
    if (!this.#input.drained) throw new Error("RspSession.receive: previous input not drained");
    if (chunk.length > 0) this.#heard = true;
    this.#input.reset(chunk);
  }

  /**
   * Handle received input until it is drained or enough output is waiting, and return the bytes
   * to send (a view valid until the next call; possibly empty). Call again while
   * {@link inputDrained} is false.
   */
  produce(): Uint8Array {
    const input = this.#input;
    if (input.drained && this.#readAheadDue && !this.#closed) this.#readAhead();
    // Not before the stop reply itself has been taken by the transport.
    if (input.drained && this.#afterStopDue && this.#writer.pendingBytes === 0) this.#afterStop();
    while (!input.drained && !this.#closed && this.#writer.pendingBytes < OUTPUT_HIGH_WATER) {
      if (this.#consoleMode) this.#consumeConsole();
      else this.#consumeRsp();
    }
    if (!this.#answered && this.#unsentReplyTo !== undefined) this.#answered = true;
    return this.#writer.take();
  }

  /**
   * The console's prompt for a client that has said nothing since it connected (a `nc` user),
   * or nothing (gdb, which speaks first, never sees console text). The transport calls this
   * once, a short while after connecting.
   */
  greeting(): Uint8Array {
    if (this.#heard || !this.#consoleMode || this.#closed) return new Uint8Array(0);
    this.#heard = true;
    this.#writer.raw(this.#kdb.prompt);
    return this.#writer.take();
  }

  #consumeConsole(): void {
    if (this.#consoleRunning) {
      // kdb is away while the kernel runs: only ^C (kdb's Keyboard Entry) is heard.
      const input = this.#input;
      while (!input.drained) {
        if (input.bytes[input.pos++] === 0x03) this.#target.run?.interrupt();
      }
      return;
    }
    const event = this.#console.consume(this.#input, (text) => this.#writer.raw(text));
    if (event.kind === "quit") {
      this.#closed = true;
    } else if (event.kind === "rsp") {
      this.#consoleMode = false;
      this.#noAck = false;
      this.#writer.keepLastPacket = true;
      this.#reader.resetFrame();
      if (this.#debug) this.#log(`[${this.#label}] console -> RSP`);
      // The trigger's bytes start a packet the RSP side reads (and checks) like any other.
      const replay = new InputCursor();
      replay.reset(event.replay);
      while (!replay.drained && this.#consoleMode === false && !this.#closed) {
        this.#consumeRsp(replay);
      }
    }
  }

  #consumeRsp(input: InputCursor = this.#input): void {
    const reader = this.#reader;
    const event = reader.next(input);
    switch (event) {
      case WireEvent.Packet:
        if (reader.oversize) {
          this.#log(`[${this.#label}] packet larger than ${MAX_PACKET_SIZE} bytes ignored`);
          if (!this.#noAck) this.#writer.ack(reader.checksumOk);
          if (reader.checksumOk || this.#noAck) this.#writer.packet(ERR_MALFORMED);
          return;
        }
        this.#handlePacket(reader.payload.subarray(0, reader.length), reader.checksumOk);
        return;
      case WireEvent.Nack:
        if (!this.#noAck) this.#writer.resend();
        return;
      case WireEvent.Interrupt:
        if (this.#running) {
          if (this.#debug) this.#log(`[${this.#label}] <- ^C`);
          this.#target.run!.interrupt();
          return;
        }
        // A dump never runs, so a stop reply has always been sent already: nothing to stop.
        if (this.#debug) this.#log(`[${this.#label}] <- ^C (ignored: target is stopped)`);
        return;
    }
  }

  #handlePacket(payload: Uint8Array, checksumOk: boolean): void {
    if (this.#debug) this.#log(`[${this.#label}] <- ${loggable(payload)}`);
    let text: string | undefined;
    if (!this.#noAck) {
      // gdb resends its opening packet when it sees no ack within its remote timeout (2 s): a
      // server still opening a big dump finds both copies waiting. gdb waits for each reply
      // before it sends another packet, so the same packet again before our first reply went
      // out is that resend: acked, not answered twice (the second answer would be taken for the
      // next packet's). Later, every packet is answered, repeated or not.
      text = checksumOk ? latin1String(payload) : undefined;
      const resend = !this.#answered && text !== undefined && text === this.#unsentReplyTo &&
        this.#writer.pendingBytes > 0;
      // The same resend arriving after the first reply went out (the server was just past gdb's
      // timeout): gdb never asks qSupported twice in a row, so the second copy is that resend.
      const lateResend = text !== undefined && this.#packetsHandled === 1 &&
        text === this.#unsentReplyTo && text.startsWith("qSupported");
      this.#writer.ack(checksumOk);
      if (!checksumOk || resend) return;
      this.#packetsHandled++;
      if (lateResend) return;
      this.#unsentReplyTo = text;
    } else if (!checksumOk) {
      // No-ack mode has no way to ask again: handle it, as gdbserver does.
      this.#log(`[${this.#label}] bad checksum in no-ack mode; handling the packet anyway`);
    }
    try {
      this.#dispatch(text ?? latin1String(payload));
    } catch (e) {
      if (e instanceof LiveError || e instanceof DumpError) {
        // The target's own fault (a guest gone, a file unreadable): one line, and gdb is told.
        this.#log(`[${this.#label}] ${e.message}`);
        this.#reply(`E.${e.message}`);
        return;
      }
      this.#log(`[${this.#label}] error handling packet: ${e instanceof Error ? e.stack : e}`);
      this.#reply(ERR_MALFORMED);
    }
  }

  #reply(text: string): void {
    this.#writer.packet(text.startsWith("E.") ? errorReply(text.slice(2)) : text);
  }

  /** The last packet handled in ack mode, while its reply may still be unsent. */
  #unsentReplyTo: string | undefined;
  /** Packets handled in ack mode (the opening one's late resend is looked for as the second). */
  #packetsHandled = 0;
  /** Whether a reply has gone out to the client (after that, resends are not looked for). */
  #answered = false;

  #dispatch(packet: string): void {
    if (this.#target.run) return this.#dispatchLive(packet);
    this.#dispatchDump(packet);
  }

  #dispatchDump(packet: string): void {
    const kind = packet[0];
    if (kind !== "m" && kind !== "x" && this.#next !== undefined) this.#forgetReadAhead();
    switch (kind) {
      case "q":
      case "Q":
        return this.#query(packet);
      case "v":
        return this.#vPacket(packet);
      case "?":
        return this.#stopReply();
      case "H":
        return this.#setThread(packet);
      case "T":
        return this.#threadAlive(packet);
      case "g":
        return this.#readRegisters();
      case "p":
        return this.#readRegister(packet);
      case "m":
        return this.#readMemory(packet, false);
      case "x":
        return this.#readMemory(packet, true);
      case "M":
      case "X":
      case "G":
      case "P":
      case "Z":
      case "z":
        return this.#refuseWrite(packet);
      case "c":
      case "C":
      case "s":
      case "S":
        return this.#cannotRun();
      case "D":
        this.#reply("OK");
        this.#closed = true;
        return;
      case "k":
        this.#closed = true;
        return;
      case "3":
        if (packet === "3") return this.#toConsole();
        break;
    }
    this.#reply("");
  }

  // --- live targets ---------------------------------------------------------------------------
  //
  // A target with run control (a live guest) also runs, steps, takes breakpoints and writes.
  // Its reply to a resume is the stop: at once when it has come already (a step, or a breakpoint
  // just ahead, that the target waited for), else later: the transport waits on `pendingStop`
  // and hands the stop to `stopped()`. Thread lists and prepared reads are dropped whenever the
  // target may change.

  #running = false;
  #pendingStop: Promise<StopEvent> | undefined;
  /** The console's `go` let the target run: its stop goes to kdb, not to gdb. */
  #consoleRunning = false;
  /** The console's guest runs from kdb's `go` (not its `ss`): closing the line lets it go on. */
  #consoleFromGo = false;
  #detached = false;
  /** Thread for plain `c`/`s` (`Hc`), 0 = all. */
  #continueThread = 0;

  /** While the target runs: resolves with its next stop (the transport waits on it). */
  get pendingStop(): Promise<StopEvent> | undefined {
    return this.#pendingStop;
  }

  /** The target stopped (or is gone): send gdb the stop reply (or the console kdb's entry). */
  stopped(event: StopEvent): void {
    this.#running = false;
    this.#pendingStop = undefined;
    this.#forgetTarget();
    if (this.#consoleRunning) return this.#consoleStopped(event);
    if (event.kind === "lost") {
      const w = this.#writer;
      w.startPacket();
      w.text("O");
      w.hex(new TextEncoder().encode(event.message + "\n"));
      w.endPacket();
      this.#reply("X09");
      this.#closed = true;
      return;
    }
    // gdb takes the stopped thread as the stub's general thread from now on (no `Hg` follows),
    // and selects it for its user.
    this.#generalThread = 0;
    this.#selectedThread = 0;
    this.#selectionChanged = true;
    this.#replyStop(event.reply);
    this.#afterStopDue = !this.#loneStep;
  }

  /** The last resume stepped one thread and left the others stopped. */
  #loneStep = false;

  /**
   * A live stop reply went out: gdb, on its own core, decodes it and works out the new frame,
   * then reads the stopped thread's stack and the thread list (at every step). Both are built
   * meanwhile, from `produce()` once the reply has been handed to the transport (as a bulk
   * read's next reply is, see `inputDrained`). Not after gdb's step off a breakpoint: its next
   * packets (put the breakpoint back, continue) need none of it, and would wait for it.
   */
  #afterStopDue = false;

  #afterStop(): void {
    this.#afterStopDue = false;
    const run = this.#target.run;
    if (!run?.afterStop || this.#running || this.#closed) return;
    try {
      run.afterStop(this.#target.stopThread());
      this.#threadsXml();
    } catch {
      // The requests that need these will say what is wrong.
      this.#forgetTarget();
    }
  }

  /**
   * A live stop reply with every register of the stopped thread that has a value (`nn:hex;`):
   * gdb fills its register cache from it and asks no `g` for the stop, one round trip fewer per
   * step or breakpoint hit. The registers are this stop's (read after QEMU's stop reply).
   */
  #replyStop(reply: string): void {
    const m = /^T[0-9a-fA-F]{2}thread:([0-9a-fA-F]+);/.exec(reply);
    const values = m ? this.#target.registers(parseInt(m[1], 16)) : undefined;
    const w = this.#writer;
    w.startPacket();
    w.text(reply);
    if (values && values.size > 0) {
      const defs = this.#layout.registers;
      for (let regno = 0; regno < this.#layout.gCount; regno++) {
        if (values.get(defs[regno].name) === undefined) continue;
        w.text(`${regno.toString(16)}:`);
        encodeRegister(this.#layout, regno, values, w);
        w.text(";");
      }
    }
    w.endPacket();
  }

  /** The client is gone (or detached): give the target back. */
  end(): void {
    // A live guest is left stopped when gdb goes away, for the next client; run again after gdb's
    // detach, and after kdb's `go` when the console's line closes (as a kernel goes on when
    // its serial line does).
    this.#target.run?.release(this.#detached || (this.#consoleRunning && this.#consoleFromGo));
  }

  #forgetTarget(): void {
    this.#threads = undefined;
    this.#threadIds = undefined;
    this.#threadsXmlCache = undefined;
    this.#forgetReadAhead();
  }

  /**
   * Console `go` or `ss` on a live target: run it (every thread, or step `stepThread` alone);
   * the line comes back to kdb at the next stop.
   */
  #consoleGo(stepThread?: number, fromGo = stepThread === undefined): string | undefined {
    const run = this.#target.run;
    if (!run) return "the target is a crash dump: it cannot continue execution";
    if (!this.#consoleMode) {
      return stepThread === undefined
        ? "gdb is attached: continue from gdb (continue, or c)"
        : "gdb is attached: step from gdb (stepi)";
    }
    const actions: ResumeAction[] = stepThread === undefined
      ? [{ action: "c" }]
      : [{ action: "s", thread: stepThread }];
    this.#forgetTarget();
    const err = run.resume(actions);
    if (err) return err.replace(/^E\./, "");
    this.#running = true;
    this.#consoleRunning = true;
    this.#consoleFromGo = fromGo;
    this.#pendingStop = run.nextStop();
    return undefined;
  }

  #consoleStopped(event: StopEvent): void {
    this.#consoleRunning = false;
    const w = this.#writer;
    if (event.kind === "lost") {
      w.raw(`\n${event.message}\n`);
      this.#closed = true;
      return;
    }
    // `T05thread:2;…`: the thread (a CPU in kernel mode) and why it stopped.
    const signal = parseInt(event.reply.slice(1, 3), 16);
    const tid = /thread:([0-9a-fA-F.p-]+);/.exec(event.reply)?.[1];
    const id = tid === undefined ? undefined : parseThreadId(tid);
    const core = this.#threadList().find((t) => t.id === id)?.core;
    const entered = this.#kdb.entered(core, signal);
    if (entered.resume) {
      // `go` from a breakpoint: the step off it is done; now everything runs.
      const err = this.#consoleGo();
      if (!err) return w.raw(entered.text);
      // Refused: kdb takes its breakpoints out and says why at the prompt.
      this.#kdb.resumeRefused();
      w.raw(`${entered.text}\ngo: ${err}\n${this.#kdb.prompt}`);
      return;
    }
    w.raw(`\n${entered.text}\n${this.#kdb.prompt}`);
  }

  #dispatchLive(packet: string): void {
    const run = this.#target.run!;
    if (this.#running) {
      // In all-stop mode gdb only interrupts a running target; anything else waits for the stop.
      return this.#reply(ERR_MALFORMED);
    }
    const kind = packet[0];
    if (kind !== "m" && kind !== "x" && this.#next !== undefined) this.#forgetReadAhead();
    switch (kind) {
      case "c":
      case "C":
      case "s":
      case "S": {
        const thread = this.#continueThread > 0 ? this.#continueThread : undefined;
        const step = kind === "s" || kind === "S";
        // A step of one thread lets the others stay put, like vCont;s:TID.
        return this.#resume([{ action: step ? "s" : "c", thread }]);
      }
      case "v":
        if (packet.startsWith("vCont;")) return this.#vCont(packet);
        break;
      case "H":
        if (packet[1] === "c") {
          const id = parseThreadId(packet.slice(2));
          if (id === undefined) return this.#reply(ERR_MALFORMED);
          this.#continueThread = id > 0 ? id : 0;
          return this.#reply("OK");
        }
        break;
      case "Z":
      case "z": {
        const m = packet.match(/^[Zz]([0-4]),([0-9a-fA-F]{1,16}),([0-9a-fA-F]{1,8})$/);
        if (!m) return this.#reply("");
        const reply = run.breakpoint(
          kind === "Z",
          Number(m[1]),
          BigInt("0x" + m[2]),
          parseInt(m[3], 16),
        );
        return this.#reply(reply);
      }
      case "M": {
        const m = packet.match(/^M([0-9a-fA-F]{1,16}),([0-9a-fA-F]{1,8}):([0-9a-fA-F]*)$/);
        const data = m ? hexDecode(m[3]) : undefined;
        if (!m || !data || data.length !== parseInt(m[2], 16)) return this.#reply(ERR_MALFORMED);
        return this.#writeMemory(BigInt("0x" + m[1]), data);
      }
      case "X": {
        const write = parseBinaryWrite(packet);
        if (!write) return this.#reply(ERR_MALFORMED);
        return this.#writeMemory(write.address, write.data);
      }
      case "P": {
        const m = packet.match(/^P([0-9a-fA-F]{1,4})=([0-9a-fA-F]+)$/);
        const def = m ? this.#layout.registers[parseInt(m[1], 16)] : undefined;
        const bytes = m ? hexDecode(m[2]) : undefined;
        if (!def || !bytes || bytes.length !== def.bits / 8) return this.#reply(ERR_MALFORMED);
        const err = run.writeRegisters(
          this.#currentThread(),
          new Map([[def.name, littleEndian(bytes)]]),
        );
        this.#forgetTarget();
        return this.#reply(err ?? "OK");
      }
      case "G":
        return this.#writeRegisters(packet.slice(1));
      case "D":
        this.#detached = true;
        this.#reply("OK");
        this.#closed = true;
        return;
      case "k":
        // Never kill the guest: leave it stopped, as when the connection drops.
        this.#closed = true;
        return;
    }
    this.#dispatchDump(packet);
  }

  /** `M`/`X` on a live target. An empty write (gdb's `X` probe) only asks whether writes go. */
  #writeMemory(address: bigint, data: Uint8Array): void {
    if (address + BigInt(data.length) > 1n << 64n) return this.#reply(ERR_MEMORY);
    const err = this.#target.run!.writeMemory(
      address,
      data,
      this.#currentThread(),
      this.#physical,
    );
    if (data.length > 0) this.#forgetTarget();
    // gdb shows only "Cannot access memory" for a refused write: the reason goes to the log.
    if (err && data.length > 0) {
      this.#log(
        `kdump-gdbserver: memory write at 0x${address.toString(16)} refused: ${
          err.replace(/^E\.?/, "")
        }`,
      );
    }
    this.#reply(err ?? "OK");
  }

  /**
   * `G HEX`: the registers of the current thread in `g` order, possibly only the first ones (up
   * to a register boundary). Only the registers whose value differs from what `g` reads now are
   * written, so a `G` that changes one register costs one write to the target. `x` digits (a
   * register gdb has no value of) leave a register alone; so do zeros for a register the target
   * has no value of, which is what gdb sends for one in a `G` it builds itself.
   */
  #writeRegisters(hex: string): void {
    const layout = this.#layout;
    const size = hex.length / 2;
    const count = size === layout.gBytes ? layout.gCount : layout.offsets.indexOf(size);
    // Only the `g` block's registers: the ones outside it are written one at a time (`P`).
    if (hex.length % 2 !== 0 || count <= 0 || count > layout.gCount) {
      return this.#reply(ERR_MALFORMED);
    }
    const thread = this.#currentThread();
    const current = this.#target.registers(thread);
    const changes = new Map<string, bigint>();
    for (let i = 0; i < count; i++) {
      const def = layout.registers[i];
      const digits = hex.slice(layout.offsets[i] * 2, layout.offsets[i] * 2 + def.bits / 4);
      if (/^x+$/.test(digits)) continue;
      const bytes = hexDecode(digits);
      if (bytes === undefined) return this.#reply(ERR_MALFORMED);
      const value = littleEndian(bytes);
      const old = current.get(def.name);
      if (old === undefined ? value === 0n : BigInt.asUintN(def.bits, old) === value) continue;
      changes.set(def.name, value);
    }
    const err = this.#target.run!.writeRegisters(thread, changes);
    if (changes.size > 0) this.#forgetTarget();
    this.#reply(err ?? "OK");
  }

  #vCont(packet: string): void {
    const actions: ResumeAction[] = [];
    for (const part of packet.slice(6).split(";")) {
      const [op, tid] = part.split(":");
      if (!/^[cCsS]/.test(op)) return this.#reply(ERR_MALFORMED);
      const thread = tid === undefined ? undefined : parseThreadId(tid);
      if (tid !== undefined && thread === undefined) return this.#reply(ERR_MALFORMED);
      actions.push({ action: op[0] === "s" || op[0] === "S" ? "s" : "c", thread });
    }
    this.#resume(actions);
  }

  #resume(actions: ResumeAction[]): void {
    const run = this.#target.run!;
    this.#forgetTarget();
    this.#loneStep = isLoneStep(actions);
    const err = run.resume(actions);
    if (err) return this.#reply(err);
    this.#running = true;
    // A resume that has already stopped is answered now: gdb's next packet then finds the
    // transport polling for it rather than in a wait on the thread pool.
    const now = run.stopNow?.();
    if (now) return this.stopped(now);
    this.#pendingStop = run.nextStop();
  }

  // --- queries -------------------------------------------------------------------------------

  #query(packet: string): void {
    const name = packet.match(/^[qQ][^:,;]*/)![0];
    const args = packet.slice(name.length + 1);
    const target = this.#target;
    switch (name) {
      case "qSupported":
        return this.#reply(this.#supported());
      case "QStartNoAckMode":
        // This packet is acked (already done); from the OK on, nobody acks.
        this.#reply("OK");
        this.#noAck = true;
        this.#writer.keepLastPacket = false;
        return;
      case "qAttached":
        return this.#reply("1");
      case "qC":
        return this.#reply(`QC${this.#currentThread().toString(16)}`);
      case "qfThreadInfo":
        this.#threadCursor = 0;
        return this.#threadInfo();
      case "qsThreadInfo":
        return this.#threadInfo();
      case "qThreadExtraInfo":
        return this.#threadExtraInfo(args);
      case "qOffsets": {
        const text = target.textSegment?.();
        return this.#reply(text === undefined ? "" : `TextSeg=${text.toString(16)}`);
      }
      case "qSymbol":
        return this.#reply("OK");
      // QEMU's gdbstub switch between virtual and physical addresses for m/x: scripts written
      // for a live guest (`maint packet Qqemu.PhyMemMode:1`) work on its dump too.
      case "qqemu.PhyMemMode":
        return this.#reply(target.readPhysical ? (this.#physical ? "1" : "0") : "");
      case "Qqemu.PhyMemMode":
        if (!target.readPhysical || (args !== "0" && args !== "1")) return this.#reply("");
        this.#physical = args === "1";
        return this.#reply("OK");
      case "qRcmd":
        return this.#monitor(args);
      case "qXfer":
        return this.#xfer(args);
      case "qlinux.vmcoreinfo":
        return this.#vmcoreinfoQuery();
    }
    this.#reply("");
  }

  /**
   * A write or breakpoint on a read-only target. gdb 13 prints the text of an `E.` reply for
   * register writes (`Could not write register "rax"; remote failure reply 'E.target is…'`) but
   * turns any error to `M`/`X` into "Cannot access memory" and one to `Z` into "Cannot insert
   * breakpoint": so each refusal is also logged, which gdb shows on its terminal in pipe mode.
   */
  #refuseWrite(packet: string): void {
    // gdb probes X support with an empty write ("Xaddr,0:") before the real one: not logged.
    const [address, length] = packet.slice(1).split(/[,:]/);
    const what = packet[0] === "M" || packet[0] === "X"
      ? (/^0*$/.test(length ?? "") ? undefined : `memory write at 0x${address}`)
      : packet[0] === "Z"
      ? "breakpoint"
      : packet[0] === "z"
      ? undefined // removing a breakpoint that was never set: nothing to tell
      : "register write";
    if (what) this.#log(`kdump-gdbserver: ${what} refused: ${ERR_READ_ONLY.slice(2)}`);
    this.#reply(ERR_READ_ONLY);
  }

  #supported(): string {
    const target = this.#target;
    const features = [
      `PacketSize=${MAX_PACKET_SIZE.toString(16)}`,
      "QStartNoAckMode+",
      "qXfer:features:read+",
      "qXfer:threads:read+",
    ];
    if (target.execFile?.() || generatedExec(target)) features.push("qXfer:exec-file:read+");
    if (target.auxv?.() !== undefined) features.push("qXfer:auxv:read+");
    if (target.vmcoreinfo?.() !== undefined) features.push("qXfer:vmcoreinfo:read+");
    if (target.libraries?.()?.some((l) => !l.exec)) features.push("qXfer:libraries-svr4:read+");
    // gdb 16+ only uses `x` (binary memory reads, `b` replies) when this is offered.
    features.push("binary-upload+");
    return features.join(";");
  }

  #vmcoreinfoQuery(): void {
    const note = this.#target.vmcoreinfo?.();
    if (note === undefined) return this.#reply("");
    const w = this.#writer;
    w.startPacket();
    w.text("Qlinux.vmcoreinfo");
    w.binary(note);
    w.endPacket();
  }

  /** The target generation kdb's view was read in (see `RunControl.generation`). */
  #kdbGeneration = 0;

  /**
   * A live target that ran (gdb's `continue` or `stepi`, or a resume behind its back) since kdb
   * last looked: kdb forgets its task list and current task, and follows gdb's thread again.
   */
  #kdbCurrent(): void {
    const generation = this.#target.run?.generation;
    if (generation === undefined || generation === this.#kdbGeneration) return;
    this.#kdbGeneration = generation;
    this.#kdb.stopped();
    this.#selectionChanged = true;
  }

  /**
   * kdb's own writes (`mm`, `rm`) drop what the target had read, as any write does; they are
   * not a resume: kdb keeps its selected task and where `md` goes on.
   */
  #kdbSeen(): void {
    if (!this.#consoleRunning) this.#kdbGeneration = this.#target.run?.generation ?? 0;
  }

  #monitor(hexCommand: string): void {
    const bytes = hexDecode(hexCommand);
    if (bytes === undefined) return this.#reply(ERR_MALFORMED);
    const command = new TextDecoder().decode(bytes);
    let output = "";
    if (tokenize(command)[0] === "kgdb") {
      output = "kgdb: gdb is already attached (the line speaks the remote protocol)\n";
    } else {
      this.#kdbCurrent();
      // `thread 3` then `monitor bt`: kdb's current CPU and task are gdb's selected thread's.
      if (this.#selectionChanged) {
        this.#selectionChanged = false;
        this.#kdb.followThread(this.#selectedThread || this.#target.stopThread());
      }
      this.#kdb.run(command, (text) => output += text);
      this.#kdbSeen();
    }
    const data = new TextEncoder().encode(output);
    const chunk = (MAX_PACKET_SIZE - 2) >> 1;
    const w = this.#writer;
    for (let i = 0; i < data.length; i += chunk) {
      w.startPacket();
      w.text("O");
      w.hex(data.subarray(i, i + chunk));
      w.endPacket();
    }
    this.#reply("OK");
  }

  /** `qXfer:OBJECT:read:ANNEX:OFFSET,LENGTH` → `m`/`l` + binary-escaped data. */
  #xfer(args: string): void {
    const parts = args.split(":");
    if (parts.length !== 4 || parts[1] !== "read") return this.#reply("");
    const [object, , annex, range] = parts;
    let data: Uint8Array | undefined;
    switch (object) {
      case "features":
        if (annex !== "target.xml") return this.#reply(ERR_XFER);
        data = this.#layout.targetXml;
        break;
      case "threads":
        data = this.#threadsXml();
        break;
      case "exec-file": {
        const path = this.#target.execFile?.();
        const made = generatedExec(this.#target);
        data = path
          ? new TextEncoder().encode(execFileForGdb(path, this.#target))
          : made
          ? new TextEncoder().encode(made)
          : undefined;
        break;
      }
      case "libraries-svr4":
        data = librariesSvr4Xml(this.#target);
        break;
      case "auxv":
        data = this.#target.auxv?.();
        break;
      case "vmcoreinfo":
        data = this.#target.vmcoreinfo?.();
        break;
      default:
        return this.#reply("");
    }
    if (data === undefined) return this.#reply("");
    const span = parseAddressLength(range);
    if (span === undefined) return this.#reply(ERR_XFER);
    const w = this.#writer;
    w.startPacket();
    if (span.address >= BigInt(data.length)) {
      w.text("l");
    } else {
      const offset = Number(span.address);
      const end = Math.min(data.length, offset + Math.min(span.length, MAX_PACKET_SIZE));
      w.text("l");
      const written = w.binary(data.subarray(offset, end), MAX_PACKET_SIZE);
      // More follows unless this chunk reached the end (escapes may have cut it short).
      if (offset + written < data.length) w.body[0] = 0x6d; // 'm'
    }
    w.endPacket();
  }

  // --- threads -------------------------------------------------------------------------------

  #threadList(): ThreadInfo[] {
    if (this.#threads === undefined) {
      this.#threads = this.#target.threads();
      this.#threadIds = new Set(this.#threads.map((t) => t.id));
    }
    return this.#threads;
  }

  #threadExists(id: number): boolean {
    this.#threadList();
    return this.#threadIds!.has(id);
  }

  /** The thread `g` reads: the one chosen by `Hg`, else the target's stop thread. */
  #currentThread(): number {
    return this.#generalThread > 0 ? this.#generalThread : this.#target.stopThread();
  }

  #threadsXml(): Uint8Array {
    if (this.#threadsXmlCache === undefined) {
      const lines = [`<?xml version="1.0"?>`, "<threads>"];
      for (const t of this.#threadList()) {
        const core = t.core === undefined ? "" : ` core="${t.core}"`;
        const extra = t.extra === undefined ? "" : xmlEscape(t.extra);
        lines.push(
          `<thread id="${t.id.toString(16)}"${core} name="${xmlEscape(t.name)}">${extra}</thread>`,
        );
      }
      lines.push("</threads>", "");
      this.#threadsXmlCache = new TextEncoder().encode(lines.join("\n"));
    }
    return this.#threadsXmlCache;
  }

  #threadInfo(): void {
    const threads = this.#threadList();
    if (this.#threadCursor >= threads.length) return this.#reply("l");
    let text = "m";
    while (this.#threadCursor < threads.length) {
      const id = threads[this.#threadCursor].id.toString(16);
      if (text.length + id.length + 1 > MAX_PACKET_SIZE) break;
      text += (text.length > 1 ? "," : "") + id;
      this.#threadCursor++;
    }
    this.#reply(text);
  }

  #threadExtraInfo(args: string): void {
    const id = parseThreadId(args);
    const thread = this.#threadList().find((t) => t.id === id);
    if (thread === undefined) return this.#reply(ERR_MALFORMED);
    this.#reply(hexEncodeText(thread.extra ?? thread.name));
  }

  /** `Hg`/`Hc` with -1 (all), 0 (any) or an id. Only `Hg` matters: nothing ever runs. */
  #setThread(packet: string): void {
    const op = packet[1];
    const id = parseThreadId(packet.slice(2));
    if ((op !== "g" && op !== "c") || id === undefined) return this.#reply(ERR_MALFORMED);
    if (id > 0 && !this.#threadExists(id)) return this.#reply(ERR_MALFORMED);
    if (op === "g") this.#generalThread = id > 0 ? id : 0;
    this.#reply("OK");
  }

  #threadAlive(packet: string): void {
    const id = parseThreadId(packet.slice(1));
    const alive = id !== undefined && id > 0 && this.#threadExists(id);
    // gdb asks before it switches its user to a thread: the thread `monitor` commands run in.
    if (alive) {
      this.#selectedThread = id;
      this.#selectionChanged = true;
    }
    this.#reply(alive ? "OK" : ERR_MALFORMED);
  }

  // --- registers and memory ------------------------------------------------------------------

  #readRegisters(): void {
    const values = this.#target.registers(this.#currentThread());
    const w = this.#writer;
    w.startPacket();
    encodeAllRegisters(this.#layout, values, w);
    w.endPacket();
  }

  #readRegister(packet: string): void {
    const regno = parseHex64(packet.slice(1));
    if (regno === undefined || regno >= BigInt(this.#layout.registers.length)) {
      return this.#reply(ERR_MALFORMED);
    }
    const w = this.#writer;
    const n = Number(regno);
    if (n >= this.#layout.gCount) {
      // Outside `g` (arm64's system registers): the target reads it now, if it can.
      const name = this.#layout.registers[n].name;
      const value = this.#target.systemRegister?.(this.#currentThread(), name) ??
        this.#target.registers(this.#currentThread()).get(name);
      w.startPacket();
      encodeRegister(this.#layout, n, new Map(value === undefined ? [] : [[name, value]]), w);
      w.endPacket();
      return;
    }
    const values = this.#target.registers(this.#currentThread());
    w.startPacket();
    encodeRegister(this.#layout, n, values, w);
    w.endPacket();
  }

  /** `m ADDR,LEN` (hex reply) or `x ADDR,LEN` (`b` + binary reply): the readable prefix. */
  #readMemory(packet: string, binary: boolean): void {
    const span = parseAddressLength(packet.slice(1));
    if (span === undefined) return this.#reply(ERR_MALFORMED);
    const { address } = span;
    // Clamp absurd lengths before anything is allocated, and never wrap past the top.
    let length = Math.min(span.length, MAX_MEMORY_READ);
    const room = (1n << 64n) - address;
    if (BigInt(length) > room) length = Number(room);
    if (length === 0) return this.#reply(binary ? "b" : "");
    const ready = this.#prepared;
    this.#prepared = undefined;
    if (
      ready !== undefined && ready.address === address && ready.length === length &&
      ready.binary === binary
    ) {
      this.#writer.framed(ready.packet);
      this.#expectNext(address, length, binary, true);
      return;
    }
    const complete = this.#memoryReply(this.#writer, address, length, binary);
    this.#expectNext(address, length, binary, complete);
  }

  /**
   * Write the reply to a memory read into `w`: the readable prefix in hex (`m`) or escaped
   * binary (`x`), or an error. Returns whether every byte was readable.
   */
  #memoryReply(w: ReplyWriter, address: bigint, length: number, binary: boolean): boolean {
    // Memory is read in the context of the selected thread (its process's page tables).
    const read = this.#physical && this.#target.readPhysical
      ? this.#target.readPhysical(address, length)
      : this.#target.readMemory(address, length, this.#currentThread());
    const data = read.data.length > length ? read.data.subarray(0, length) : read.data;
    if (data.length === 0) {
      if (this.#debug) {
        this.#log(`[${this.#label}] read ${address.toString(16)}: ${read.error ?? "unreadable"}`);
      }
      w.packet(ERR_MEMORY);
      return false;
    }
    w.startPacket();
    if (binary) {
      w.text("b");
      w.binary(data, MAX_PACKET_SIZE); // escapes may leave a shorter (still valid) prefix
    } else {
      w.hex(data);
    }
    w.endPacket();
    return data.length === length;
  }

  // --- read-ahead for bulk reads --------------------------------------------------------------
  //
  // gdb reads a large range as consecutive `m` requests of one size, each sent only after the
  // previous reply is decoded. While gdb decodes one (on the other core: it is CPU-bound on hex),
  // the session prepares the whole reply to the request that will follow, so that request is
  // answered without decoding pages or encoding anything. The work runs from `produce()` after
  // the previous reply has been handed to the transport (see `inputDrained`). Memory is
  // read-only, so a prepared reply is exactly what the request would get; any packet other than
  // `m`/`x` (which may change the thread or the address space) discards it.

  /** Where the next sequential read would start, if the last one looks like a bulk read. */
  #next: { address: bigint; length: number; binary: boolean } | undefined;
  /** The prepared reply to `#next`, framed. */
  #prepared: { address: bigint; length: number; binary: boolean; packet: Uint8Array } | undefined;
  /** A read-ahead is due on the next `produce()` call. */
  #readAheadDue = false;
  #readAheadWriter: ReplyWriter | undefined;

  #expectNext(address: bigint, length: number, binary: boolean, complete: boolean): void {
    const end = address + BigInt(length);
    if (!complete || length < READ_AHEAD_MIN || this.#debug || end + BigInt(length) > 1n << 64n) {
      this.#next = undefined;
      return;
    }
    this.#next = { address: end, length, binary };
    this.#readAheadDue = true;
  }

  #forgetReadAhead(): void {
    this.#next = undefined;
    this.#prepared = undefined;
    this.#readAheadDue = false;
  }

  #readAhead(): void {
    this.#readAheadDue = false;
    const next = this.#next;
    if (next === undefined) return;
    const w = this.#readAheadWriter ??= new ReplyWriter();
    w.keepLastPacket = false;
    // The previous prepared packet is a view of this writer's output: it is gone by now.
    w.take();
    try {
      this.#memoryReply(w, next.address, next.length, next.binary);
    } catch {
      // A page gdb has not asked for yet cannot be read: if gdb asks, its own request gets the
      // error reply; the session goes on either way.
      this.#forgetReadAhead();
      return;
    }
    this.#prepared = { ...next, packet: w.take() };
  }

  // --- execution control ---------------------------------------------------------------------

  #stopReply(): void {
    const target = this.#target;
    const thread = target.stopThread();
    this.#generalThread = 0;
    this.#selectedThread = 0;
    this.#selectionChanged = true;
    const signal = (target.stopSignal() & 0xff).toString(16).padStart(2, "0");
    this.#reply(`T${signal}thread:${thread.toString(16)};`);
  }

  /** `c`, `s`, `vCont;c/s`: say why nothing happens, then report the same stop again. */
  #cannotRun(): void {
    const w = this.#writer;
    w.startPacket();
    w.text("O");
    w.hex(new TextEncoder().encode(CANNOT_RUN));
    w.endPacket();
    this.#stopReply();
  }

  #vPacket(packet: string): void {
    const name = packet.match(/^v[^:;?]*/)![0];
    switch (name) {
      case "vCont":
        if (packet === "vCont?") return this.#reply("vCont;c;C;s;S");
        if (/^vCont(;[cCsSt][^;]*)+$/.test(packet)) return this.#cannotRun();
        return this.#reply(ERR_MALFORMED);
      case "vKill":
        this.#reply("OK");
        this.#closed = true;
        return;
      case "vCtrlC":
        return this.#reply("OK");
      case "vAttach":
      case "vRun":
        return this.#reply(ERR_MALFORMED);
      case "vFile":
        return this.#hostFile(packet);
    }
    this.#reply("");
  }
  /** `vFile:…`: only files the target made in memory (see rsp_hostio.ts). */
  #hostFile(packet: string): void {
    const r = this.#hostIo.handle(packet);
    if (!r) return this.#reply("");
    if (!r.data) return this.#reply(r.text);
    const w = this.#writer;
    w.startPacket();
    w.text(r.text);
    w.binary(r.data);
    w.endPacket();
  }

  /** `$3#33`: back to the text console, as kgdb hands the line back to kdb. */
  #toConsole(): void {
    this.#consoleMode = true;
    this.#noAck = false;
    this.#console.reset();
    this.#reader.resetFrame();
    if (this.#debug) this.#log(`[${this.#label}] RSP -> console`);
    this.#writer.raw(`\n${this.#kdb.prompt}`);
  }
}
