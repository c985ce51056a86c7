/**
 * gdb connections that wait for gdb's next packet by polling without sleeping for a short while,
 * then on the thread pool: {@link SocketChannel} on a {@link BlockingSocket} (TCP), and
 * {@link StdinChannel} on standard input (gdb's `target remote | …`).
 *
 * Why: on a live guest every `stepi` is a chain of round trips (gdb to us, us to QEMU and back,
 * us to gdb), and on a virtual machine each wake-up of a sleeping process costs tens of
 * microseconds (measured here: a loopback round trip to a server that sleeps between packets
 * took 60–90 µs, 25–30 µs to one that polls). gdb sends its next packet of a step within a
 * fraction of a millisecond, so a short poll catches it. The price is at most
 * {@link BlockingSocket.spinMs} of CPU per packet. After the poll a read sleeps in `poll` on the
 * main thread for a while ({@link GDB_SLEEP_MS}), and only then on the thread pool. The wait of a
 * running guest (gdb waiting for the stop) uses {@link SocketChannel.readIdle}, which does neither.
 *
 * @module
 */

import { type BlockingSocket, SocketError } from "./libc_socket.ts";
import { PolledInput } from "./libc_file.ts";
import type { ByteChannel } from "./transport.ts";

/**
 * How long a live session polls for gdb's next packet before it sleeps (milliseconds): gdb
 * sends the next packet of a step within about this after our reply.
 */
export const GDB_SPIN_MS = 0.1;

/**
 * A reply at least this large keeps gdb busy decoding it for longer than {@link GDB_SPIN_MS}
 * (gdb decodes replies at 50–60 MB of wire bytes a second, hex or binary: 8 KiB take it about
 * 0.15 ms): the read after it sleeps at once instead of polling, leaving the CPU to gdb during a
 * bulk read.
 */
const NO_SPIN_AFTER_BYTES = 8192;

/**
 * After the poll, how long a read sleeps in `poll` on the main thread before it waits on the
 * thread pool (milliseconds). gdb's next packet of a step comes 0.1–0.5 ms after our reply, and
 * a sleep in the thread pool costs two wake-ups when it comes (the pool's thread, then the event
 * loop), one here. The event loop waits meanwhile: nothing else is served while a live guest is
 * stopped for one client, and timers and signals wait for the next turn of the event loop (at
 * most {@link EVENT_LOOP_TURN_MS} and this apart).
 */
export const GDB_SLEEP_MS = 2;

/** How long a wait on the thread pool lasts before it looks at whether the channel closed. */
const WAIT_SLICE_MS = 1000;

/**
 * At most this long without a turn of the event loop: a client whose packets all arrive while
 * we poll would otherwise keep timers, signals and other connections waiting.
 */
const EVENT_LOOP_TURN_MS = 20;

/** What a {@link PollingReader} reads: a descriptor that can be polled. */
export interface PolledSource {
  /** Poll without sleeping for a short while: whether input (or its end) is there. */
  spin(): boolean;
  /** Sleep on this thread for at most `timeoutMs`: whether input (or its end) is there. */
  sleep(timeoutMs: number): boolean;
  /**
   * The byte count, null at the end of the input, undefined when nothing is there yet;
   * `ready`: a poll just said input is there.
   */
  tryRead(buffer: Uint8Array, ready?: boolean): number | null | undefined;
  /** Resolve once input may be there, or after `timeoutMs`, on the thread pool. */
  readable(timeoutMs: number): Promise<unknown>;
}

/**
 * The reads of both channels: poll first (unless a large reply just went out), sleep after, and
 * let the event loop turn.
 */
export class PollingReader {
  #source: PolledSource;
  #lastTurn = performance.now();
  /** Bytes written since the last read: a large reply means gdb's next packet is not soon. */
  #written = 0;

  readonly #turnMs: number;
  readonly #sleepMs: number;

  /**
   * @param turnMs longest time between turns of the event loop (tests: Infinity)
   * @param sleepMs how long a read sleeps on the main thread before the thread pool
   */
  constructor(source: PolledSource, turnMs = EVENT_LOOP_TURN_MS, sleepMs = GDB_SLEEP_MS) {
    this.#source = source;
    this.#turnMs = turnMs;
    this.#sleepMs = sleepMs;
  }

  /** `n` bytes went to gdb. */
  wrote(n: number): void {
    this.#written += n;
  }

  read(buffer: Uint8Array): Promise<number | null> {
    if (performance.now() - this.#lastTurn >= this.#turnMs) {
      return this.#readAfterTurn(buffer);
    }
    return this.#readSoon(buffer);
  }

  /** Poll, then sleep on this thread, then wait on the thread pool. */
  #readSoon(buffer: Uint8Array): Promise<number | null> {
    const spin = this.#written < NO_SPIN_AFTER_BYTES;
    this.#written = 0;
    let n = this.#source.tryRead(buffer, spin && this.#source.spin());
    if (n === undefined && this.#source.sleep(this.#sleepMs)) {
      n = this.#source.tryRead(buffer, true);
    }
    return n !== undefined ? Promise.resolve(n) : this.readIdle(buffer);
  }

  async readIdle(buffer: Uint8Array): Promise<number | null> {
    this.#written = 0;
    const mine = ++this.#idleReads;
    this.#idlePending = true;
    for (;;) {
      // Given up (abandonIdle): the bytes are left for the read that replaced this one.
      if (mine !== this.#idleReads) return 0;
      const n = this.#source.tryRead(buffer);
      if (n !== undefined) {
        this.#idlePending = false;
        return n;
      }
      await this.#source.readable(WAIT_SLICE_MS);
      this.#lastTurn = performance.now();
    }
  }

  /**
   * Give up the pending {@link readIdle}: it reads nothing more and resolves with 0. False when
   * there is none, or it has already read (its bytes are in its result: keep it).
   */
  abandonIdle(): boolean {
    if (!this.#idlePending) return false;
    this.#idleReads++;
    this.#idlePending = false;
    // The event loop turned while that read waited on the thread pool: the next read may poll.
    this.#lastTurn = performance.now();
    return true;
  }

  /** Counts the idle reads started or given up: an idle read is current while it is unchanged. */
  #idleReads = 0;
  /** The current idle read has not returned yet. */
  #idlePending = false;

  /**
   * A turn of the event loop, then the read. The turn is a zero-timeout poll on the thread pool
   * (its completion is seen by the event loop, which runs what waits meanwhile): tens of
   * microseconds, where a zero-delay timer often took a millisecond or more, every
   * {@link EVENT_LOOP_TURN_MS} while gdb steps.
   */
  async #readAfterTurn(buffer: Uint8Array): Promise<number | null> {
    await this.#source.readable(0);
    this.#lastTurn = performance.now();
    return this.#readSoon(buffer);
  }
}

/** A connected gdb on a blocking socket. */
export class SocketChannel implements ByteChannel {
  /** The peer, `address:port`, for log lines. */
  readonly peer: string;
  #sock: BlockingSocket;
  #closed = false;
  #reader: PollingReader;

  /**
   * @param sock the accepted connection; its {@link BlockingSocket.spinMs} sets how long a read
   *   polls before it sleeps
   */
  constructor(sock: BlockingSocket, peer: string) {
    this.#sock = sock;
    this.peer = peer;
    this.#reader = new PollingReader({
      spin: () => sock.spinUntilReadable(),
      sleep: (timeoutMs) => sock.sleepUntilReadable(timeoutMs),
      tryRead: (buffer) => this.#tryRecv(buffer),
      readable: (timeoutMs) => sock.readable(timeoutMs),
    });
  }

  /** Read, polling for a short while first: gdb's next packet is expected soon. */
  read(buffer: Uint8Array): Promise<number | null> {
    return this.#reader.read(buffer);
  }

  /** Read without polling first (nothing is expected soon, e.g. while the guest runs). */
  readIdle(buffer: Uint8Array): Promise<number | null> {
    return this.#reader.readIdle(buffer);
  }

  /** Give up the pending {@link readIdle} (see {@link ByteChannel.abandonIdleRead}). */
  abandonIdleRead(): boolean {
    return this.#reader.abandonIdle();
  }

  /** Write what the socket takes now, else wait (on the thread pool) until it takes some. */
  async write(data: Uint8Array): Promise<number> {
    for (;;) {
      if (this.#closed) throw new Deno.errors.BadResource("the connection is closed");
      let n: number;
      try {
        n = this.#sock.trySend(data);
      } catch (e) {
        throw new Deno.errors.BrokenPipe(e instanceof SocketError ? e.message : String(e));
      }
      if (n > 0) {
        this.#reader.wrote(n);
        return n;
      }
      await this.#sock.writable(WAIT_SLICE_MS);
    }
  }

  /** Close the connection (idempotent); a pending read resolves with null. */
  close(): void {
    this.#closed = true;
    this.#sock.close();
  }

  #tryRecv(buffer: Uint8Array): number | null | undefined {
    if (this.#closed) return null;
    let n: number;
    try {
      n = this.#sock.recv(buffer, 0);
    } catch {
      return null; // reset by the peer: the same as its leaving
    }
    if (n === 0) return null;
    return n < 0 ? undefined : n;
  }
}

/** gdb on standard input (its replies go to standard output through Deno). */
export class StdinChannel implements ByteChannel {
  #reader: PollingReader;

  private constructor(input: PolledInput, spinMs: number) {
    this.#reader = new PollingReader({
      spin: () => input.spinUntilReadable(spinMs),
      sleep: (timeoutMs) => input.sleepUntilReadable(timeoutMs),
      tryRead: (buffer, ready) => input.tryRead(buffer, ready),
      readable: (timeoutMs) => input.readable(timeoutMs),
    });
  }

  /** Standard input polled for `spinMs` before each sleep; undefined without FFI. */
  static open(spinMs: number): StdinChannel | undefined {
    const input = PolledInput.open(0);
    return input ? new StdinChannel(input, spinMs) : undefined;
  }

  /** Read, polling for a short while first: gdb's next packet is expected soon. */
  read(buffer: Uint8Array): Promise<number | null> {
    return this.#reader.read(buffer);
  }

  /** Read without polling first (nothing is expected soon, e.g. while the guest runs). */
  readIdle(buffer: Uint8Array): Promise<number | null> {
    return this.#reader.readIdle(buffer);
  }

  /** Give up the pending {@link readIdle} (see {@link ByteChannel.abandonIdleRead}). */
  abandonIdleRead(): boolean {
    return this.#reader.abandonIdle();
  }

  /** Write through Deno's standard output. */
  async write(data: Uint8Array): Promise<number> {
    const n = await Deno.stdout.write(data);
    this.#reader.wrote(n);
    return n;
  }
}
