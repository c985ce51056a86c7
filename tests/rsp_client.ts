/**
 * Test clients for RSP sessions: a synchronous one driving an {@link RspSession} directly, and an
 * in-memory {@link ByteChannel} pair for the transport loop.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { RspSession } from "../lib/rsp_session.ts";
import {
  expandRuns,
  framePacket,
  InputCursor,
  latin1Bytes,
  latin1String,
  PacketReader,
  WireEvent,
} from "../lib/rsp_wire.ts";
import type { ByteChannel } from "../lib/transport.ts";
import { concatBytes } from "../lib/rsp_client.ts";

const replyReader = new PacketReader(1 << 22);

/** Parse a reply stream: `+`, `-`, and packet payloads with runs expanded (checksums checked). */
export function parseReplies(bytes: Uint8Array): string[] {
  const reader = replyReader;
  reader.resetFrame();
  const input = new InputCursor();
  input.reset(bytes);
  const out: string[] = [];
  for (;;) {
    const e = reader.next(input);
    if (e === WireEvent.None) break;
    if (e === WireEvent.Ack) out.push("+");
    else if (e === WireEvent.Nack) out.push("-");
    else if (e === WireEvent.Packet) {
      assert.ok(reader.checksumOk, "reply with a bad checksum");
      out.push(latin1String(expandRuns(reader.payload.slice(0, reader.length))!));
    }
  }
  return out;
}

/** Drives a session synchronously, as a transport would. */
export class SessionClient {
  readonly session: RspSession;
  /** Raw bytes of every `produce()` call of the last exchange. */
  writes: Uint8Array[] = [];

  constructor(session: RspSession) {
    this.session = session;
  }

  /** Feed raw bytes (in one read) and return everything the session sent back. */
  raw(input: string | Uint8Array): Uint8Array {
    const bytes = typeof input === "string" ? latin1Bytes(input) : input;
    this.session.receive(bytes);
    this.writes = [];
    const parts: Uint8Array[] = [];
    do {
      const out = this.session.produce().slice();
      this.writes.push(out);
      parts.push(out);
    } while (!this.session.inputDrained);
    return concatBytes(parts);
  }

  /** Feed raw bytes; the parsed replies. */
  send(input: string | Uint8Array): string[] {
    return parseReplies(this.raw(input));
  }

  /** Send one packet; its reply packets (acks left out). */
  packets(payload: string): string[] {
    return this.send(framePacket(payload)).filter((r) => r !== "+");
  }

  /** Send one packet that has exactly one reply packet; that reply. */
  request(payload: string): string {
    const replies = this.packets(payload);
    assert.equal(replies.length, 1, `${payload}: expected one reply, got ${replies.length}`);
    return replies[0];
  }

  /** The usual opening: qSupported, then no-ack mode. Returns the qSupported reply. */
  handshake(): string {
    const supported = this.send(`+${latin1String(framePacket("qSupported:xmlRegisters=i386"))}`);
    assert.equal(supported[0], "+");
    const noAck = this.send(framePacket("QStartNoAckMode"));
    assert.deepEqual(noAck, ["+", "OK"]);
    this.raw("+"); // gdb acks the OK
    return supported[1];
  }

  /** Read a whole qXfer object in chunks of `chunk` bytes. */
  xfer(object: string, annex: string, chunk: number): Uint8Array {
    const parts: number[] = [];
    for (;;) {
      const reply = this.request(
        `qXfer:${object}:read:${annex}:${parts.length.toString(16)},${chunk.toString(16)}`,
      );
      assert.ok(reply[0] === "m" || reply[0] === "l", `qXfer reply ${reply.slice(0, 20)}`);
      const data = unescape(reply.slice(1));
      assert.ok(data.length <= chunk);
      parts.push(...data);
      if (reply[0] === "l") return Uint8Array.from(parts);
      assert.ok(data.length > 0, "empty m chunk");
    }
  }
}

/** Undo binary escapes of a reply payload string. */
export function unescape(text: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "}") out.push(text.charCodeAt(++i) ^ 0x20);
    else out.push(text.charCodeAt(i));
  }
  return Uint8Array.from(out);
}

/** Decode hex text. */
export function unhex(hex: string): string {
  let s = "";
  for (let i = 0; i < hex.length; i += 2) {
    s += String.fromCharCode(parseInt(hex.slice(i, i + 2), 16));
  }
  return new TextDecoder().decode(latin1Bytes(s));
}

/**
 * One end of an in-memory duplex. Reads deliver at most `readSize` bytes; writes accept at most
 * `writeSize` bytes per call (to exercise partial writes).
 */
export class MemoryChannel implements ByteChannel {
  #incoming: Uint8Array[] = [];
  #waiting: (() => void) | undefined;
  #closed = false;
  peer!: MemoryChannel;

  constructor(readonly readSize = 65536, readonly writeSize = Infinity) {}

  /** A connected pair. */
  static pair(
    a: { readSize?: number; writeSize?: number } = {},
    b: { readSize?: number; writeSize?: number } = {},
  ): [MemoryChannel, MemoryChannel] {
    const x = new MemoryChannel(a.readSize, a.writeSize);
    const y = new MemoryChannel(b.readSize, b.writeSize);
    x.peer = y;
    y.peer = x;
    return [x, y];
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    while (this.#incoming.length === 0) {
      if (this.#closed) return null;
      await new Promise<void>((resolve) => this.#waiting = resolve);
    }
    const head = this.#incoming[0];
    const n = Math.min(head.length, buffer.length, this.readSize);
    buffer.set(head.subarray(0, n));
    if (n === head.length) this.#incoming.shift();
    else this.#incoming[0] = head.subarray(n);
    return n;
  }

  write(data: Uint8Array): Promise<number> {
    if (this.peer.#closed || this.#closed) return Promise.reject(new Deno.errors.BrokenPipe());
    const n = Math.min(data.length, this.writeSize);
    this.peer.#deliver(data.slice(0, n));
    return Promise.resolve(n);
  }

  /** Close this end: the peer's reads end after the data already sent. */
  close(): void {
    this.#closed = true;
    this.#wake();
    this.peer.#closedByPeer();
  }

  #closedByPeer(): void {
    this.#closed = true;
    this.#wake();
  }

  #deliver(data: Uint8Array): void {
    this.#incoming.push(data);
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiting;
    this.#waiting = undefined;
    w?.();
  }

  /** Everything received and not read yet (without waiting). */
  takeAll(): string {
    const text = this.#incoming.map(latin1String).join("");
    this.#incoming = [];
    return text;
  }

  /** Whether this end is closed (by itself or the peer). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Collect input until `predicate` holds for all of it, the channel closes, or `ms` pass. */
  async readUntil(predicate: (text: string) => boolean, ms = 5000): Promise<string> {
    let text = "";
    const deadline = Date.now() + ms;
    for (;;) {
      text += this.takeAll();
      if (predicate(text) || this.#closed) return text;
      if (Date.now() > deadline) {
        throw new Error(`timed out; got ${JSON.stringify(text.slice(-200))}`);
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}
