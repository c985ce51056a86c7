/**
 * {@link QemuStub} on a blocking socket in the main thread (lib/libc_socket.ts): a request is
 * one `send` and, usually, one `recv`, with no thread in between. While the guest runs, the
 * socket is watched by a `poll` on Deno's blocking thread pool, so the event loop stays free for
 * gdb's ^C; the stop reply is then read here and handed to {@link QemuStub.onEvent}. The first
 * few milliseconds of a resume are waited for on the spot instead: a stop within them (a single
 * step, a breakpoint just ahead) is returned by `resume` itself.
 *
 * The registers of the CPU that stopped are asked for (`g`) the moment its stop reply arrives,
 * before gdb has heard of the stop: gdb's first `g` of the stop then finds the answer waiting in
 * the socket. Any other first request has that answer skipped instead. It is read after the
 * stop, so it is never stale.
 *
 * @module
 */

import { BlockingSocket, SocketError } from "./libc_socket.ts";
import {
  bytesHex,
  concatBytes,
  framePacket,
  hexBytes,
  isStopReply,
  latin1,
  PipelinedRead,
  SampledRead,
  StubDecoder,
  unescapeBinary,
} from "./rsp_client.ts";
import {
  CONNECT_TIMEOUT_MS,
  FIRST_PACKET,
  LiveError,
  MAX_M,
  type QemuStub,
  READ_PIPELINE,
  REQUEST_TIMEOUT_MS,
  SAMPLE_PIPELINE,
  type StubNotice,
} from "./qemu_stub.ts";

/**
 * How long a resume's stop reply is waited for on the spot (milliseconds): a single step takes
 * QEMU well under a millisecond, and so does a continue to a breakpoint the guest reaches at
 * once. gdb's ^C (read by the event loop) waits this long at most.
 */
const RESUME_WAIT_MS = 3;

/**
 * How long a wait for QEMU's reply polls before it sleeps (milliseconds): QEMU answers most
 * requests, and a single step, within about this, and a process woken from sleep costs tens of
 * microseconds more on a virtual machine (see lib/polling_channel.ts).
 */
const SPIN_MS = 0.15;

/**
 * How long a posted packet ({@link DirectStub.post}) may wait for another packet to QEMU to go
 * with before it is sent alone (milliseconds).
 */
const POSTED_FLUSH_MS = 20;

/** How often the watch of a running guest looks at whether the link was closed meanwhile. */
const WATCH_SLICE_MS = 250;

/** QEMU's gdbstub on a blocking socket. */
export class DirectStub implements QemuStub {
  readonly address: string;
  readonly link = "blocking socket";
  onEvent: (notice: StubNotice) => void = () => {};
  #sock: BlockingSocket;
  #decoder = new StubDecoder();
  #buf = new Uint8Array(1 << 16);
  /** Packets received and not yet taken by a request, in order (never stop replies). */
  #replies: string[] = [];
  /**
   * Replies still to come that no request waits for, in the order they will arrive: an unused
   * prefetch (dropped) and posted requests (handed to their callback).
   */
  #unclaimed: ((reply: string) => void)[] = [];
  /**
   * Acknowledgements owed to QEMU, sent in front of our next packet: QEMU's system-mode stub
   * never waits for them, so each need not cost a write of its own.
   */
  #acksOwed = 0;
  #lastFrame: Uint8Array | undefined;
  #lost: string | undefined;
  #closed = false;
  #running = false;
  #watching = false;
  /** A `g` sent at the last stop whose reply has not been read yet. */
  #prefetching = false;
  /** Whether no request has been made since the last stop (its `g` reply may be taken). */
  #prefetchTakeable = false;
  /** The thread QEMU's `g`/`P`/`M` apply to, when known. */
  #general: string | undefined;

  private constructor(address: string, sock: BlockingSocket) {
    this.address = address;
    this.#sock = sock;
    sock.spinMs = SPIN_MS;
    this.#watchForLoss();
  }

  /**
   * Connect to the stub at `host:port` (a numeric IPv4 address or `localhost`).
   * @throws LiveError when nothing listens there
   */
  static connect(host: string, port: number): DirectStub {
    try {
      return new DirectStub(
        `${host}:${port}`,
        BlockingSocket.connect(host, port, CONNECT_TIMEOUT_MS),
      );
    } catch (e) {
      throw new LiveError(`cannot reach QEMU's gdbstub at ${host}:${port}: ${messageOf(e)}`);
    }
  }

  get lost(): string | undefined {
    return this.#lost;
  }

  selectThread(id: string): void {
    if (this.#general === id) return;
    this.#general = undefined;
    const r = this.request(`Hg${id}`);
    if (r !== "OK") throw new LiveError(`QEMU's gdbstub refused thread ${id} (${r})`);
    this.#general = id;
  }

  request(packet: string, timeoutMs = REQUEST_TIMEOUT_MS): string {
    this.#checkLink();
    const takeable = this.#prefetchTakeable;
    this.#prefetchTakeable = false;
    if (this.#prefetching) {
      this.#prefetching = false;
      if (takeable && packet === "g") return this.#nextReply(timeoutMs, false, packet);
      this.#unclaimed.push(ignore);
    }
    this.#sendPacket(packet);
    const reply = this.#nextReply(timeoutMs, packet.startsWith("?"), packet);
    return packet.startsWith("qXfer") ? latin1(unescapeBinary(latin1Bytes(reply))) : reply;
  }

  post(packet: string, onReply: (reply: string) => void): void {
    this.#checkLink();
    this.#skipPrefetch();
    // Held until our next packet to QEMU (gdb's resume, usually within a millisecond), or
    // until POSTED_FLUSH_MS: each packet sent alone wakes QEMU, which then takes a core from
    // gdb and us in the middle of gdb's exchange with us.
    this.#posted.push(framePacket(packet));
    this.#unclaimed.push(onReply);
    if (this.#postedTimer === undefined) {
      const timer = setTimeout(() => {
        this.#postedTimer = undefined;
        if (this.#posted.length === 0 || this.#lost !== undefined || this.#closed) return;
        try {
          this.#send(new Uint8Array(0));
        } catch {
          // the link is gone: #send has said so (onEvent), and the next request will
        }
      }, POSTED_FLUSH_MS);
      Deno.unrefTimer(timer);
      this.#postedTimer = timer;
    }
  }

  /** A packet other than the stop's first `g` is going out: the prefetched answer is nobody's. */
  #skipPrefetch(): void {
    this.#prefetchTakeable = false;
    if (this.#prefetching) {
      this.#prefetching = false;
      this.#unclaimed.push(ignore);
    }
  }

  /** Posted packets not sent yet: they go in front of the next packet to QEMU. */
  #posted: Uint8Array[] = [];
  #postedTimer: ReturnType<typeof setTimeout> | undefined;

  monitor(command: string): string {
    const bytes = new TextEncoder().encode(command);
    const hex = this.request("qRcmd," + bytesHex(bytes));
    // `O` + hex output packets, then OK (or an error).
    const out: Uint8Array[] = [];
    for (let reply = hex;; reply = this.#nextReply(REQUEST_TIMEOUT_MS, false, "qRcmd")) {
      if (reply.startsWith("O") && reply !== "OK") {
        out.push(hexBytes(reply.slice(1)) ?? new Uint8Array());
        continue;
      }
      const text = new TextDecoder().decode(concatBytes(out));
      if (reply !== "OK") throw new LiveError(`QEMU monitor command "${command}": ${reply}`);
      return text;
    }
  }

  readMemory(address: bigint, length: number): Uint8Array {
    this.#checkLink();
    this.#skipPrefetch();
    const read = new PipelinedRead(address, length, MAX_M, READ_PIPELINE);
    for (let frames = read.nextBatch(); frames; frames = read.nextBatch()) {
      this.#lastFrame = undefined; // several packets cannot be resent as one
      this.#send(frames);
      while (read.pending > 0) read.take(this.#nextReply(REQUEST_TIMEOUT_MS, false, "m"));
    }
    return read.bytes;
  }

  sampleMemory(address: bigint, stride: number, count: number, length: number): Uint8Array {
    this.#checkLink();
    this.#skipPrefetch();
    const read = new SampledRead(address, stride, count, length, SAMPLE_PIPELINE);
    for (let frames = read.nextBatch(); frames; frames = read.nextBatch()) {
      this.#lastFrame = undefined; // several packets cannot be resent as one
      this.#send(frames);
      while (read.pending > 0) read.take(this.#nextReply(REQUEST_TIMEOUT_MS, false, "m"));
    }
    return read.bytes;
  }

  resume(packet: string): StubNotice | undefined {
    this.#checkLink();
    this.#general = undefined;
    this.#skipPrefetch();
    this.#setAsideOldStops();
    this.#running = true;
    this.#sendPacket(packet);
    // Wait for the stop here a short while, sparing a quick one (a step, a breakpoint just
    // ahead) the trip through the thread pool's poll: two wake-ups, the pool's thread's and the
    // event loop's, instead of one.
    const end = performance.now() + RESUME_WAIT_MS;
    this.#waitingOnTheSpot = true;
    try {
      for (let left = RESUME_WAIT_MS; this.#running && left > 0;) {
        if (this.#receive(left) <= 0) break;
        left = end - performance.now();
      }
    } finally {
      this.#waitingOnTheSpot = false;
    }
    if (this.#running) {
      this.#watch().catch((e) => this.#linkLost(`the gdbstub connection failed: ${messageOf(e)}`));
    }
    const stop = this.#stopOnTheSpot;
    this.#stopOnTheSpot = undefined;
    return stop;
  }

  /**
   * A stop reply QEMU sent while nothing ran by our hand (its monitor's `cont`, then `stop`)
   * may wait unread in the socket: read now, it is told as one nobody asked for, not taken
   * for the stop of the resume about to go. One `recv` that finds nothing, as a rule.
   */
  #setAsideOldStops(): void {
    this.#receive(0);
    if (!this.#replies.some(isStopReply)) return;
    this.#replies = this.#replies.filter((p) => {
      if (!isStopReply(p)) return true;
      this.#notify({ ev: "stop", text: p, unsolicited: true });
      return false;
    });
  }

  /** Inside {@link resume}'s wait on the spot: a stop is returned, not told. */
  #waitingOnTheSpot = false;
  #stopOnTheSpot: StubNotice | undefined;

  interrupt(): void {
    this.#checkLink();
    this.#general = undefined;
    // Alone: QEMU takes the first byte that comes while the guest runs for an interrupt and
    // drops it, so posted packets wait for the next one.
    this.#send(Uint8Array.of(3), false);
  }

  close(finalPacket?: string): void {
    if (this.#closed) return;
    if (this.#lost === undefined && finalPacket) {
      try {
        this.#sendPacket(finalPacket);
        this.#nextReply(1000, false, finalPacket);
      } catch {
        // closing anyway
      }
    }
    this.#closed = true;
    clearTimeout(this.#postedTimer);
    this.#running = false;
    this.#lost ??= "closed";
    this.#sock.close();
  }

  // --- the wire --------------------------------------------------------------------------------

  #checkLink(): void {
    if (this.#lost !== undefined) {
      throw new LiveError(`QEMU's gdbstub at ${this.address}: ${this.#lost}`);
    }
  }

  #sendPacket(text: string): void {
    this.#lastFrame = framePacket(text);
    this.#send(this.#lastFrame);
  }

  /** Send `bytes`, after the acks owed and (unless `withPosted` is false) the posted packets. */
  #send(bytes: Uint8Array, withPosted = true): void {
    if (this.#acksOwed > 0 || (withPosted && this.#posted.length > 0)) {
      const posted = withPosted ? this.#posted : [];
      const joined = new Uint8Array(
        this.#acksOwed + posted.reduce((n, p) => n + p.length, 0) + bytes.length,
      );
      joined.fill(0x2b, 0, this.#acksOwed); // '+'
      let at = this.#acksOwed;
      for (const p of posted) {
        joined.set(p, at);
        at += p.length;
      }
      joined.set(bytes, at);
      if (posted.length > 0) {
        this.#lastFrame = undefined; // several packets cannot be resent as one
        this.#posted = [];
        clearTimeout(this.#postedTimer);
        this.#postedTimer = undefined;
      }
      this.#acksOwed = 0;
      bytes = joined;
    }
    try {
      this.#sock.send(bytes);
    } catch (e) {
      this.#linkLost(`the gdbstub connection failed: ${messageOf(e)}`);
      this.#checkLink();
    }
  }

  /** The next reply that is not a stop (unless `acceptStop`), waiting at most `timeoutMs`. */
  #nextReply(timeoutMs: number, acceptStop: boolean, request: string): string {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      while (this.#replies.length > 0) {
        const p = this.#replies.shift()!;
        if (!acceptStop && isStopReply(p)) {
          // A stop we did not ask for (QEMU stopped the guest on connect, or someone paused
          // it): heard of, but not the answer to this request.
          this.#notify({ ev: "stop", text: p, unsolicited: true });
          continue;
        }
        return p;
      }
      this.#checkLink();
      const left = Math.ceil(deadline - performance.now());
      if (left <= 0 || this.#receive(left) < 0 && performance.now() >= deadline) {
        this.#lost = "no answer";
        throw new LiveError(
          `QEMU's gdbstub at ${this.address} did not answer within ${timeoutMs / 1000} s` +
            (request === FIRST_PACKET
              ? " (is another debugger attached? QEMU's gdbstub serves one at a time)"
              : ""),
        );
      }
    }
  }

  /** Read what has arrived (waiting at most `timeoutMs`, 0: not at all) and sort it. */
  #receive(timeoutMs: number): number {
    let n: number;
    try {
      n = this.#sock.recv(this.#buf, timeoutMs);
    } catch (e) {
      this.#linkLost(`the gdbstub connection failed: ${messageOf(e)}`);
      return 0;
    }
    if (n === 0) this.#linkLost("QEMU closed the gdbstub connection");
    if (n <= 0) return n;
    for (const e of this.#decoder.push(this.#buf.subarray(0, n))) {
      if (e.kind === "nack") {
        if (this.#lastFrame) this.#send(this.#lastFrame, false);
      } else if (e.kind === "packet") {
        if (!e.checksumOk) {
          this.#send(Uint8Array.of(0x2d), false); // '-', right behind the packet it refuses
          continue;
        }
        this.#acksOwed++;
        const text = latin1(e.payload);
        if (this.#running && isStopReply(text)) this.#stopped(text);
        else if (this.#unclaimed.length > 0 && !isStopReply(text)) {
          try {
            this.#unclaimed.shift()!(text);
          } catch {
            // a callback's failure must not lose the replies decoded after this one
          }
        } else this.#replies.push(text);
      }
    }
    return n;
  }

  /** The stop reply of our resume: ask for the stopped CPU's registers, then tell. */
  #stopped(text: string): void {
    this.#running = false;
    // QEMU makes the CPU that stopped the target of `g` (gdb_set_stop_cpu).
    this.#general = text.match(/thread:([^;]+)/)?.[1];
    try {
      this.#sendPacket("g");
      this.#prefetching = true;
      this.#prefetchTakeable = true;
    } catch {
      // the loss is told below
    }
    if (this.#waitingOnTheSpot) this.#stopOnTheSpot = { ev: "stop", text };
    else this.#notify({ ev: "stop", text });
  }

  /** While the guest runs: wait for its stop reply without blocking the event loop. */
  async #watch(): Promise<void> {
    if (this.#watching) return;
    this.#watching = true;
    try {
      while (this.#running && !this.#closed && this.#lost === undefined) {
        const ready = await this.#sock.readable(WATCH_SLICE_MS);
        if (!this.#running || this.#closed || this.#lost !== undefined) break;
        if (ready) this.#receive(0);
      }
    } finally {
      this.#watching = false;
    }
  }

  /**
   * For the whole connection: notice QEMU going away while nothing is asked of it (the guest
   * stopped, gdb thinking), so the server can say so at once rather than at gdb's next packet.
   */
  async #watchForLoss(): Promise<void> {
    while (!this.#closed && this.#lost === undefined) {
      let gone: boolean;
      try {
        gone = await this.#sock.closedByPeer(WATCH_SLICE_MS);
      } catch {
        return;
      }
      if (gone && !this.#closed) this.#receive(0); // reads what is left, then the end
    }
  }

  #linkLost(reason: string): void {
    if (this.#lost !== undefined) return;
    this.#lost = reason;
    this.#running = false;
    this.#notify({ ev: "lost", reason });
  }

  /**
   * Tell the live target, once the code running now has finished: a stop seen in the middle of
   * a request (gdb's ^C answered while the kernel view is rebuilt) must not re-enter it.
   */
  #notify(notice: StubNotice): void {
    if (this.#closed) return;
    queueMicrotask(() => {
      if (!this.#closed || notice.ev === "lost") this.onEvent(notice);
    });
  }
}

function ignore(): void {}

function messageOf(e: unknown): string {
  return e instanceof SocketError || e instanceof Error ? e.message : String(e);
}

function latin1Bytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}
