/**
 * The GDB Remote Serial Protocol on the wire: framing (`$payload#checksum`), `+`/`-` acks, the
 * 0x03 interrupt byte, binary escapes (`}` then byte ^ 0x20), run-length encoding of replies
 * (`c*n`) and hex encoding into preallocated buffers.
 *
 * Nothing here knows what a packet means: {@link PacketReader} turns a byte stream into packets
 * and {@link ReplyWriter} turns replies into bytes; the session decides what to say.
 *
 * @module
 */

const DOLLAR = 0x24; // '$' starts a packet
const HASH = 0x23; // '#' ends its payload; two hex checksum digits follow
const ESCAPE = 0x7d; // '}' escapes the next byte (xor 0x20)
const STAR = 0x2a; // '*' run-length marker in replies
const PLUS = 0x2b;
const MINUS = 0x2d;
const INTERRUPT = 0x03;

/** Smallest run-length count: the count character must be printable, `' ' + n - 3`. */
const MIN_REPEAT = 3;
/** Largest run-length count: `'~'` (126) minus 29. */
const MAX_REPEAT = 97;

const HEX_DIGITS = "0123456789abcdef";
/** ASCII code of the high hex digit of every byte value. */
const HEX_HIGH = new Uint8Array(256);
/** ASCII code of the low hex digit of every byte value. */
const HEX_LOW = new Uint8Array(256);
/** Value of every ASCII hex digit, or 255 for any other byte. */
const HEX_VALUE = new Uint8Array(256).fill(255);
/** Bytes that must be escaped in binary data: `#`, `$`, `}` and `*` (gdb decodes `*` as a run). */
const NEEDS_ESCAPE = new Uint8Array(256);
for (let b = 0; b < 256; b++) {
  HEX_HIGH[b] = HEX_DIGITS.charCodeAt(b >> 4);
  HEX_LOW[b] = HEX_DIGITS.charCodeAt(b & 15);
}
for (let d = 0; d < 16; d++) {
  HEX_VALUE[HEX_DIGITS.charCodeAt(d)] = d;
  HEX_VALUE[HEX_DIGITS.toUpperCase().charCodeAt(d)] = d;
}
for (const c of [HASH, DOLLAR, ESCAPE, STAR]) NEEDS_ESCAPE[c] = 1;

/** Modulo-256 sum of `bytes[start..end)`: the RSP packet checksum. */
export function checksum(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum += bytes[i];
  return sum & 0xff;
}

/** Value of one hex digit's char code, or -1. */
export function hexDigit(code: number): number {
  return code < 256 && HEX_VALUE[code] !== 255 ? HEX_VALUE[code] : -1;
}

/** Lower-case hex of a byte array. */
export function hexEncode(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) {
    s += String.fromCharCode(HEX_HIGH[bytes[i]], HEX_LOW[bytes[i]]);
  }
  return s;
}

/** Bytes of a hex string, or undefined when it has an odd length or a non-hex character. */
export function hexDecode(text: string): Uint8Array | undefined {
  if (text.length % 2 !== 0) return undefined;
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = hexDigit(text.charCodeAt(2 * i));
    const lo = hexDigit(text.charCodeAt(2 * i + 1));
    if (hi < 0 || lo < 0) return undefined;
    out[i] = (hi << 4) | lo;
  }
  return out;
}

/** Hex of an ASCII or UTF-8 text (monitor output, thread extra info). */
export function hexEncodeText(text: string): string {
  return hexEncode(new TextEncoder().encode(text));
}

/**
 * Binary escape: `#`, `$`, `}` and `*` become `}` followed by the byte xor 0x20.
 * (Used by qXfer replies, `x` replies and `X` requests.)
 */
export function escapeBinary(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length * 2);
  let o = 0;
  for (let i = 0; i < data.length; i++) {
    const b = data[i];
    if (NEEDS_ESCAPE[b]) {
      out[o++] = ESCAPE;
      out[o++] = b ^ 0x20;
    } else {
      out[o++] = b;
    }
  }
  return out.slice(0, o);
}

/** Undo {@link escapeBinary}. A trailing lone `}` is dropped. */
export function unescapeBinary(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length);
  let o = 0;
  for (let i = 0; i < data.length; i++) {
    if (data[i] === ESCAPE) {
      if (i + 1 < data.length) out[o++] = data[++i] ^ 0x20;
    } else {
      out[o++] = data[i];
    }
  }
  return out.slice(0, o);
}

/**
 * Expand run-length encoding (`c*n` means `n - 29` more copies of `c`), as a client does with a
 * reply payload before any binary unescaping. Returns undefined for a `*` with nothing before it.
 */
export function expandRuns(payload: Uint8Array): Uint8Array | undefined {
  let size = 0;
  for (let i = 0; i < payload.length; i++) {
    if (payload[i] === STAR) {
      if (size === 0 || i + 1 >= payload.length) return undefined;
      size += payload[++i] - 29;
    } else {
      size++;
    }
  }
  const out = new Uint8Array(size);
  let o = 0;
  for (let i = 0; i < payload.length; i++) {
    if (payload[i] === STAR) {
      const n = payload[++i] - 29;
      out.fill(out[o - 1], o, o + n);
      o += n;
    } else {
      out[o++] = payload[i];
    }
  }
  return out;
}

/**
 * Run-length encode `src[0..length)` into `dst` from `start`; returns the end offset. `dst` needs
 * room for `length` bytes (encoding never grows the data).
 *
 * A run of `c` becomes `c*` and a count character `n + 29` for `n` more copies, with `n` in
 * 3..97. Counts whose character would be `#` or `$` (6, 7: they would end or start a frame), `*`
 * (13) or `}` (96) are avoided by emitting a shorter count and continuing the run. Only runs of 4
 * or more are encoded (a run of 3 would not get shorter).
 *
 * The scan looks at every third byte: a run of 4 starting at `i`, `i+1` or `i+2` must cover both
 * `i+2` and `i+3`, so when those differ none starts there. Random data (hex digits that rarely
 * repeat) is then scanned without touching most bytes and copied in bulk.
 */
export function encodeRuns(
  src: Uint8Array,
  length: number,
  dst: Uint8Array,
  start: number,
): number {
  let out = start;
  let i = 0;
  let literal = 0; // start of the bytes not yet copied
  while (i + 3 < length) {
    const c = src[i + 3];
    if (src[i + 2] !== c) {
      i += 3;
      continue;
    }
    // The run through i+2 and i+3 starts at p >= i: src[i - 1] differs from src[i], either
    // because the scan stepped over that pair or because a run ended at i.
    let p = i + 2;
    while (p > i && src[p - 1] === c) p--;
    let end = i + 4;
    while (end < length && src[end] === c) end++;
    if (end - p < 4) {
      i += 3;
      continue;
    }
    out = copyBytes(src, literal, p, dst, out);
    out = emitRun(c, end - p, dst, out);
    i = literal = end;
  }
  return copyBytes(src, literal, length, dst, out);
}

/** Copy `src[from..to)` to `dst` at `out`; returns the new end. */
function copyBytes(
  src: Uint8Array,
  from: number,
  to: number,
  dst: Uint8Array,
  out: number,
): number {
  if (to - from < 32) {
    for (let k = from; k < to; k++) dst[out++] = src[k];
    return out;
  }
  dst.set(src.subarray(from, to), out);
  return out + (to - from);
}

/** Write a run of `run` bytes `c` (run >= 4) in run-length form; returns the new end. */
function emitRun(c: number, run: number, dst: Uint8Array, out: number): number {
  while (run > 0) {
    dst[out++] = c;
    run--;
    if (run >= MIN_REPEAT) {
      let n = run > MAX_REPEAT ? MAX_REPEAT : run;
      if (n === 6 || n === 7) n = 5;
      else if (n === 13 || n === 96) n--;
      dst[out++] = STAR;
      dst[out++] = n + 29;
      run -= n;
    } else {
      while (run > 0) {
        dst[out++] = c;
        run--;
      }
    }
  }
  return out;
}

/** Bytes of a Latin-1 string (one byte per char code; packets are ASCII in practice). */
export function latin1Bytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/** Latin-1 string of bytes: one char per byte, no decoding surprises for binary data. */
export function latin1String(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode(...bytes.subarray(i, Math.min(i + 8192, bytes.length)));
  }
  return s;
}

/**
 * An `E.` error reply for `text`, which may carry a file or host name: `#`, `$`, `}` and `*`
 * would end or escape the packet, and a character beyond ASCII would be cut to one byte that
 * might be one of them, so each such character becomes `?`.
 */
export function errorReply(text: string): string {
  return `E.${text.replace(/[^ -~]|[#$}*]/g, "?")}`;
}

/** Frame a payload as `$payload#cs` (no escaping, no run-length encoding): for clients and tests. */
export function framePacket(payload: string | Uint8Array): Uint8Array {
  const body = typeof payload === "string" ? latin1Bytes(payload) : payload;
  const out = new Uint8Array(body.length + 4);
  out[0] = DOLLAR;
  out.set(body, 1);
  const sum = checksum(body);
  out[body.length + 1] = HASH;
  out[body.length + 2] = HEX_HIGH[sum];
  out[body.length + 3] = HEX_LOW[sum];
  return out;
}

/** A chunk of received bytes and how far it has been consumed. */
export class InputCursor {
  /** The bytes; a view that stays valid until the cursor is drained. */
  bytes: Uint8Array = new Uint8Array(0);
  /** Index of the next unconsumed byte. */
  pos = 0;

  /** Start consuming a new chunk (the previous one must be drained). */
  reset(bytes: Uint8Array): void {
    this.bytes = bytes;
    this.pos = 0;
  }

  /** Whether every byte has been consumed. */
  get drained(): boolean {
    return this.pos >= this.bytes.length;
  }
}

/** What {@link PacketReader.next} found. */
export const WireEvent = {
  /** The input is drained; nothing complete yet. */
  None: 0,
  /** A complete packet: see `payload`, `length`, `checksumOk`, `oversize`. */
  Packet: 1,
  /** A `+` outside a packet. */
  Ack: 2,
  /** A `-` outside a packet: the peer wants the last packet again. */
  Nack: 3,
  /** A 0x03 byte outside a packet: the client asks the target to stop. */
  Interrupt: 4,
} as const;
/** One of the {@link WireEvent} values. */
export type WireEvent = typeof WireEvent[keyof typeof WireEvent];

/** Parser states: between packets, inside a payload, at the first and second checksum digit. */
const IDLE = 0;
const PAYLOAD = 1;
const SUM_HIGH = 2;
const SUM_LOW = 3;

/** Payload buffer a {@link PacketReader} starts with; it grows up to its `maxPayload`. */
const READER_START_BYTES = 0x10000;

/**
 * Incremental packet parser: any read may hold part of a packet or several packets. The payload
 * is kept raw (escapes and any run-length encoding untouched) in a buffer that grows as packets
 * need, up to `maxPayload`; a longer packet is consumed to its end and reported with `oversize`
 * set and no payload, so a client can never make the server buffer more than `maxPayload` bytes.
 * A connection that only sends small packets keeps a small buffer.
 */
export class PacketReader {
  /** Payload of the last packet (its first `length` bytes): valid until the next {@link next}. */
  payload: Uint8Array;
  /** Payload length of the last packet. */
  length = 0;
  /** Whether the last packet's checksum matched. */
  checksumOk = false;
  /** Whether the last packet exceeded `maxPayload` (its payload was discarded). */
  oversize = false;
  /** Bytes that were neither packets, acks nor interrupts (line noise, stray text). */
  junkBytes = 0;

  #state = IDLE;
  #sum = 0;
  #declared = 0;

  /** @param maxPayload largest payload kept; longer packets are reported as oversize. */
  constructor(readonly maxPayload: number) {
    this.payload = new Uint8Array(Math.min(maxPayload, READER_START_BYTES));
  }

  /** Whether a packet has started and not yet ended. */
  get midPacket(): boolean {
    return this.#state !== IDLE;
  }

  /** Forget any partial packet. */
  resetFrame(): void {
    this.#state = IDLE;
  }

  /** Consume input up to and including the next event, and say what it was. */
  next(input: InputCursor): WireEvent {
    const bytes = input.bytes;
    let pos = input.pos;
    const end = bytes.length;
    while (pos < end) {
      const b = bytes[pos++];
      switch (this.#state) {
        case IDLE:
          if (b === DOLLAR) this.#begin();
          else if (b === PLUS) return this.#emit(input, pos, WireEvent.Ack);
          else if (b === MINUS) return this.#emit(input, pos, WireEvent.Nack);
          else if (b === INTERRUPT) return this.#emit(input, pos, WireEvent.Interrupt);
          else this.junkBytes++;
          break;
        case PAYLOAD:
          if (b === HASH) {
            this.#state = SUM_HIGH;
          } else if (b === DOLLAR) {
            // A new frame inside a frame: the first one was cut short; keep the newest.
            this.junkBytes += this.length + 1;
            this.#begin();
          } else {
            this.#sum += b;
            if (this.length < this.payload.length) this.payload[this.length++] = b;
            else if (this.length < this.maxPayload) this.#grow(b);
            else this.oversize = true;
          }
          break;
        case SUM_HIGH:
          this.#declared = HEX_VALUE[b] === 255 ? -1 : HEX_VALUE[b] << 4;
          this.#state = SUM_LOW;
          break;
        default: {
          const low = HEX_VALUE[b];
          this.checksumOk = this.#declared >= 0 && low !== 255 &&
            (this.#declared | low) === (this.#sum & 0xff);
          this.#state = IDLE;
          if (this.oversize) this.length = 0;
          return this.#emit(input, pos, WireEvent.Packet);
        }
      }
    }
    input.pos = pos;
    return WireEvent.None;
  }

  #grow(b: number): void {
    const grown = new Uint8Array(Math.min(this.maxPayload, this.payload.length * 2));
    grown.set(this.payload);
    this.payload = grown;
    this.payload[this.length++] = b;
  }

  #begin(): void {
    this.#state = PAYLOAD;
    this.#sum = 0;
    this.length = 0;
    this.oversize = false;
    this.checksumOk = false;
  }

  #emit(input: InputCursor, pos: number, event: WireEvent): WireEvent {
    input.pos = pos;
    return event;
  }
}

/**
 * Builds the bytes sent to a client: acks, packets and raw text, coalesced in one growable buffer
 * so a reply (or a batch of replies) goes out in one write.
 *
 * A packet is built in two steps: its payload is written into a scratch buffer (`text`, `hex`,
 * `binary`), then {@link endPacket} run-length encodes it into the output with `$`, `#` and the
 * checksum. Payloads must not contain raw `$`, `#`, `*` or `}` except through {@link binary}.
 */
export class ReplyWriter {
  #out: Uint8Array;
  #outLength = 0;
  #body: Uint8Array;
  #bodyLength = 0;
  #lastPacket = new Uint8Array(0);
  /** Keep a copy of each packet for retransmission after a `-` (only needed in ack mode). */
  keepLastPacket = true;
  /** Called with each packet's payload (before run-length encoding) as it is framed. */
  onPacket: ((payload: Uint8Array) => void) | undefined;

  /** @param capacity initial size of the output and payload buffers (they grow on demand). */
  constructor(capacity = 65536) {
    this.#out = new Uint8Array(capacity);
    this.#body = new Uint8Array(capacity);
  }

  /** Bytes waiting to be sent. */
  get pendingBytes(): number {
    return this.#outLength;
  }

  /** Payload of the packet being built (or of the last one until the next packet starts). */
  get body(): Uint8Array {
    return this.#body.subarray(0, this.#bodyLength);
  }

  /** The bytes to send, as a view valid until the next write; the writer is emptied. */
  take(): Uint8Array {
    const view = this.#out.subarray(0, this.#outLength);
    this.#outLength = 0;
    return view;
  }

  /** Append raw bytes (acks, console text). */
  raw(data: Uint8Array | string): void {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    this.#reserveOut(bytes.length);
    this.#out.set(bytes, this.#outLength);
    this.#outLength += bytes.length;
  }

  /** Append an ack (`+`) or a request for retransmission (`-`). */
  ack(ok: boolean): void {
    this.#reserveOut(1);
    this.#out[this.#outLength++] = ok ? PLUS : MINUS;
  }

  /** Send the last packet again (after a `-`). */
  resend(): void {
    this.raw(this.#lastPacket);
  }

  /** Start a packet payload (discarding any unfinished one). */
  startPacket(): void {
    this.#bodyLength = 0;
  }

  /** Append ASCII text to the payload. */
  text(s: string): void {
    this.#reserveBody(s.length);
    const body = this.#body;
    let n = this.#bodyLength;
    for (let i = 0; i < s.length; i++) body[n++] = s.charCodeAt(i);
    this.#bodyLength = n;
  }

  /** Append the hex of `data` to the payload. */
  hex(data: Uint8Array): void {
    this.#reserveBody(data.length * 2);
    const body = this.#body;
    let n = this.#bodyLength;
    for (let i = 0; i < data.length; i++) {
      const b = data[i];
      body[n++] = HEX_HIGH[b];
      body[n++] = HEX_LOW[b];
    }
    this.#bodyLength = n;
  }

  /**
   * Append `data` binary-escaped, stopping before the payload would exceed `maxBody` bytes.
   * Returns how many bytes of `data` were written.
   */
  binary(data: Uint8Array, maxBody = Infinity): number {
    const room = Math.max(0, Math.min(data.length * 2, maxBody - this.#bodyLength));
    this.#reserveBody(room);
    const body = this.#body;
    let n = this.#bodyLength;
    const limit = this.#bodyLength + room;
    let i = 0;
    for (; i < data.length; i++) {
      const b = data[i];
      if (NEEDS_ESCAPE[b]) {
        if (n + 2 > limit) break;
        body[n++] = ESCAPE;
        body[n++] = b ^ 0x20;
      } else {
        if (n + 1 > limit) break;
        body[n++] = b;
      }
    }
    this.#bodyLength = n;
    return i;
  }

  /** Current payload length. */
  get bodyLength(): number {
    return this.#bodyLength;
  }

  /** Frame the payload: `$`, run-length encoded payload, `#`, checksum. */
  endPacket(): void {
    this.onPacket?.(this.#body.subarray(0, this.#bodyLength));
    this.#reserveOut(this.#bodyLength + 4);
    const out = this.#out;
    const start = this.#outLength;
    out[start] = DOLLAR;
    const end = encodeRuns(this.#body, this.#bodyLength, out, start + 1);
    const sum = checksum(out, start + 1, end);
    out[end] = HASH;
    out[end + 1] = HEX_HIGH[sum];
    out[end + 2] = HEX_LOW[sum];
    this.#outLength = end + 3;
    if (this.keepLastPacket) this.#lastPacket = out.slice(start, end + 3);
  }

  /** Append a packet framed by another writer, as if it had been built here. */
  framed(packet: Uint8Array): void {
    this.raw(packet);
    if (this.keepLastPacket) this.#lastPacket = packet.slice();
  }

  /** A whole packet with a text payload. */
  packet(payload: string): void {
    this.startPacket();
    this.text(payload);
    this.endPacket();
  }

  #reserveOut(extra: number): void {
    if (this.#outLength + extra <= this.#out.length) return;
    const grown = new Uint8Array(Math.max(this.#out.length * 2, this.#outLength + extra));
    grown.set(this.#out.subarray(0, this.#outLength));
    this.#out = grown;
  }

  #reserveBody(extra: number): void {
    if (this.#bodyLength + extra <= this.#body.length) return;
    const grown = new Uint8Array(Math.max(this.#body.length * 2, this.#bodyLength + extra));
    grown.set(this.#body.subarray(0, this.#bodyLength));
    this.#body = grown;
  }
}
