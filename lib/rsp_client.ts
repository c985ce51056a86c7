/**
 * The client side of the remote serial protocol's wire: framing our packets, and splitting what
 * a stub (QEMU's gdbstub) sends into acks and packets, with its escapes and run-length encoding
 * undone. Pure functions and one small stateful decoder: no I/O, so it runs in any thread.
 *
 * @module
 */

import { hexDecode, hexEncode } from "./rsp_wire.ts";

/** A frame `$TEXT#cs` for a packet whose payload is latin1 text (already escaped if needed). */
export function framePacket(text: string): Uint8Array {
  const out = new Uint8Array(text.length + 4);
  out[0] = 0x24; // $
  let sum = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i) & 0xff;
    out[i + 1] = c;
    sum += c;
  }
  out[text.length + 1] = 0x23; // #
  const cs = (sum & 0xff).toString(16).padStart(2, "0");
  out[text.length + 2] = cs.charCodeAt(0);
  out[text.length + 3] = cs.charCodeAt(1);
  return out;
}

/** One thing received from a stub. */
export type StubEvent =
  | { kind: "ack" }
  | { kind: "nack" }
  | { kind: "packet"; payload: Uint8Array; checksumOk: boolean };

/**
 * Splits received bytes into acks and packets. Packet payloads are returned raw (escapes and
 * run-length encoding still in place: {@link unescapeBinary} undoes both).
 */
export class StubDecoder {
  #buf = new Uint8Array(1 << 16);
  #len = 0;

  /** Append received bytes and return every complete event they finish. */
  push(chunk: Uint8Array): StubEvent[] {
    if (this.#len + chunk.length > this.#buf.length) {
      const grown = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + chunk.length));
      grown.set(this.#buf.subarray(0, this.#len));
      this.#buf = grown;
    }
    this.#buf.set(chunk, this.#len);
    this.#len += chunk.length;
    const events: StubEvent[] = [];
    const b = this.#buf;
    let i = 0;
    while (i < this.#len) {
      const c = b[i];
      if (c === 0x2b) { // +
        events.push({ kind: "ack" });
        i++;
      } else if (c === 0x2d) { // -
        events.push({ kind: "nack" });
        i++;
      } else if (c === 0x24) { // $
        let j = i + 1;
        let sum = 0;
        while (j < this.#len && b[j] !== 0x23) sum += b[j++];
        if (j + 2 >= this.#len) break; // incomplete: wait for more
        const cs = parseInt(String.fromCharCode(b[j + 1], b[j + 2]), 16);
        events.push({
          kind: "packet",
          payload: b.slice(i + 1, j),
          checksumOk: cs === (sum & 0xff),
        });
        i = j + 3;
      } else {
        i++; // noise between packets
      }
    }
    b.copyWithin(0, i, this.#len);
    this.#len -= i;
    return events;
  }
}

/** Undo the protocol's binary escapes (`}` + byte^0x20) and run-length encoding (`*` + n). */
export function unescapeBinary(payload: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < payload.length; i++) {
    const c = payload[i];
    if (c === 0x7d && i + 1 < payload.length) {
      out.push(payload[++i] ^ 0x20);
    } else if (c === 0x2a && out.length > 0 && i + 1 < payload.length) {
      // `*` then a count character: repeat the previous character (count - 29) more times.
      const n = payload[++i] - 29;
      const prev = out[out.length - 1];
      for (let k = 0; k < n; k++) out.push(prev);
    } else {
      out.push(c);
    }
  }
  return Uint8Array.from(out);
}

const utf8 = new TextDecoder();

/** The parts one after another, in one buffer (the part itself when it is the only one). */
export function concatBytes(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Latin1 text of bytes. */
export function latin1(bytes: Uint8Array): string {
  // Nearly every reply is ASCII (hex, stop replies): the native decoder is 40x faster than
  // building the string by spreading the bytes; for ASCII, UTF-8 and latin1 agree.
  let high = 0;
  for (let i = 0; i < bytes.length; i++) high |= bytes[i];
  if (high < 0x80) return utf8.decode(bytes);
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192) as unknown as number[]);
  }
  return s;
}

/** Bytes of a hex string; undefined when it is not hex of whole bytes. */
export const hexBytes: (text: string) => Uint8Array | undefined = hexDecode;

/** Hex of bytes. */
export const bytesHex: (bytes: Uint8Array) => string = hexEncode;

/** Whether a reply is a stop reply (`T`, `S`, `W`, `X`), rather than the answer to a query. */
export function isStopReply(text: string): boolean {
  return /^(T[0-9a-fA-F]{2}|S[0-9a-fA-F]{2}$|W[0-9a-fA-F]{2}|X[0-9a-fA-F]{2})/.test(text);
}

/**
 * One read of a stub's memory as `m` packets of at most `maxPacket` bytes, sent `pipeline` at a
 * time (the stub answers them in order, so a batch costs one round trip): frames to send, then
 * each reply taken in order, until `length` bytes or the first error or short answer.
 */
export class PipelinedRead {
  readonly #address: bigint;
  readonly #out: Uint8Array;
  readonly #maxPacket: number;
  readonly #pipeline: number;
  #done = 0;
  #short = false;
  #batch: number[] = [];
  #taken = 0;

  constructor(address: bigint, length: number, maxPacket: number, pipeline: number) {
    this.#address = address;
    this.#out = new Uint8Array(length);
    this.#maxPacket = maxPacket;
    this.#pipeline = pipeline;
  }

  /** The frames of the next batch, in one buffer; undefined when the read is over. */
  nextBatch(): Uint8Array | undefined {
    if (this.#short || this.#done >= this.#out.length) return undefined;
    this.#batch = [];
    this.#taken = 0;
    const frames: Uint8Array[] = [];
    for (
      let at = this.#done;
      at < this.#out.length && this.#batch.length < this.#pipeline;
      at += this.#maxPacket
    ) {
      const n = Math.min(this.#maxPacket, this.#out.length - at);
      this.#batch.push(n);
      frames.push(framePacket(`m${(this.#address + BigInt(at)).toString(16)},${n.toString(16)}`));
    }
    return concatBytes(frames);
  }

  /** Replies the current batch still waits for. */
  get pending(): number {
    return this.#batch.length - this.#taken;
  }

  /** Take the next reply of the batch (the rest of a batch after a short one is drained). */
  take(reply: string): void {
    const n = this.#batch[this.#taken++];
    if (this.#short) return;
    const bytes = reply.startsWith("E") ? undefined : hexBytes(reply);
    if (!bytes || bytes.length === 0) {
      this.#short = true;
      return;
    }
    this.#out.set(bytes.subarray(0, n), this.#done);
    this.#done += Math.min(bytes.length, n);
    if (bytes.length < n) this.#short = true;
  }

  /** The bytes read: the readable prefix. */
  get bytes(): Uint8Array {
    return this.#out.subarray(0, this.#done);
  }
}

/**
 * The first `length` bytes of `count` blocks `stride` apart, one `m` packet each, sent `pipeline`
 * at a time: a scan that looks at the start of every page (QEMU answers a small `m` in about
 * 17 µs when many are in flight, against 100–150 µs for a round trip each). A block that cannot
 * be read is left zero and the scan goes on.
 */
export class SampledRead {
  readonly #address: bigint;
  readonly #stride: number;
  readonly #count: number;
  readonly #length: number;
  readonly #pipeline: number;
  readonly #out: Uint8Array;
  #sent = 0;
  #taken = 0;

  constructor(address: bigint, stride: number, count: number, length: number, pipeline: number) {
    this.#address = address;
    this.#stride = stride;
    this.#count = count;
    this.#length = length;
    this.#pipeline = pipeline;
    this.#out = new Uint8Array(count * length);
  }

  /** The frames of the next batch, in one buffer; undefined when every block was asked for. */
  nextBatch(): Uint8Array | undefined {
    if (this.#sent >= this.#count) return undefined;
    const frames: Uint8Array[] = [];
    const len = this.#length.toString(16);
    for (; this.#sent < this.#count && frames.length < this.#pipeline; this.#sent++) {
      const at = this.#address + BigInt(this.#sent) * BigInt(this.#stride);
      frames.push(framePacket(`m${at.toString(16)},${len}`));
    }
    return concatBytes(frames);
  }

  /** Replies the batches sent so far still wait for. */
  get pending(): number {
    return this.#sent - this.#taken;
  }

  /** Take the next reply, in the order the blocks were asked for. */
  take(reply: string): void {
    const k = this.#taken++;
    const bytes = reply.startsWith("E") ? undefined : hexBytes(reply);
    if (bytes) this.#out.set(bytes.subarray(0, this.#length), k * this.#length);
  }

  /** Block k's bytes are at `k * length`. */
  get bytes(): Uint8Array {
    return this.#out;
  }
}
