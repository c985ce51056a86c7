/**
 * makedumpfile's flattened format (`makedumpfile -F`, and QEMU's `kdump-*` dumps up to QEMU 8):
 * a 4 KiB header, then records of (offset, size, data) meant to be written at `offset` of a
 * regular file. We read it in place: an index of records built once at open presents the
 * reassembled file as a `ByteSource`, with no copy written anywhere.
 *
 * @module
 */

import { type ByteSource, readExact } from "./file_source.ts";
import { DumpError } from "./errors.ts";

const SIGNATURE = "makedumpfile";
const HEADER_SIZE = 4096;
const RECORD_HEADER = 16;
/** Record type and version of the flattened header. */
const TYPE_FLAT_HEADER = 1n;

/** True when the first bytes are the flattened format's signature. */
export function isFlattened(head: Uint8Array): boolean {
  if (head.length < 16) return false;
  const sig = new TextDecoder().decode(head.subarray(0, 12));
  return sig === SIGNATURE && head[12] === 0;
}

/** Progress callback: bytes scanned so far and the file size. */
export type ProgressFn = (done: number, total: number) => void;

/** The reassembled view of a flattened dump. */
export class FlattenedSource implements ByteSource {
  readonly name: string;
  readonly size: number;
  /** Number of records in the stream. */
  readonly recordCount: number;
  /** Set when the stream is cut short (no end marker, or a record past the end of the file). */
  readonly cutShort?: string;
  #src: ByteSource;
  // Disjoint logical pieces, sorted, as parallel arrays for binary search.
  #starts: Float64Array;
  #ends: Float64Array;
  #fileOffsets: Float64Array;

  /**
   * Index the records of a flattened (`makedumpfile -F`) stream; throws DumpError on a bad
   * signature.
   * @param progress called from time to time with the bytes scanned and the file size
   */
  constructor(src: ByteSource, progress?: ProgressFn) {
    this.#src = src;
    this.name = src.name;
    const head = readExact(src, 0, Math.min(HEADER_SIZE, src.size), "flattened header");
    if (!isFlattened(head) || head.length < 32) {
      throw new DumpError(src.name, "flattened header", "bad signature");
    }
    const hv = new DataView(head.buffer);
    const type = hv.getBigInt64(16, false);
    if (type !== TYPE_FLAT_HEADER) {
      throw new DumpError(src.name, "flattened header", `unknown type ${type}`);
    }

    // Scan the records. Fields are big-endian so the stream is portable between machines.
    const recStart: number[] = [];
    const recEnd: number[] = [];
    const recFile: number[] = [];
    const rh = new Uint8Array(RECORD_HEADER);
    const rv = new DataView(rh.buffer);
    let pos = HEADER_SIZE;
    let ended = false;
    let cutShort: string | undefined;
    let nextReport = 256 * 1024 * 1024;
    while (pos + RECORD_HEADER <= src.size) {
      src.readAt(rh, pos);
      const offset = rv.getBigInt64(0, false);
      const size = rv.getBigInt64(8, false);
      if (offset === -1n) {
        ended = true;
        break;
      }
      if (offset < 0n || size < 0n || offset > BigInt(Number.MAX_SAFE_INTEGER) / 2n) {
        throw new DumpError(
          src.name,
          "flattened record",
          `impossible record (offset ${offset}, size ${size}) at file offset ${pos}`,
        );
      }
      const dataAt = pos + RECORD_HEADER;
      let n = Number(size);
      if (BigInt(dataAt) + size > BigInt(src.size)) {
        // Cut short (a copy that did not finish): keep what the last record still has.
        cutShort = `the flattened stream ends at byte ${src.size} inside a record ` +
          `(file offset ${pos}, ${size} bytes)`;
        n = src.size - dataAt;
      }
      if (n > 0) {
        recStart.push(Number(offset));
        recEnd.push(Number(offset) + n);
        recFile.push(dataAt);
      }
      pos = dataAt + n;
      if (progress && pos >= nextReport) {
        progress(pos, src.size);
        nextReport += 256 * 1024 * 1024;
      }
    }
    if (!ended && !cutShort) {
      cutShort = `the flattened stream ends at byte ${src.size} without its end marker`;
    }
    this.cutShort = cutShort;
    this.recordCount = recStart.length;
    const pieces = resolveOverlaps(recStart, recEnd, recFile);
    this.#starts = Float64Array.from(pieces, (p) => p.start);
    this.#ends = Float64Array.from(pieces, (p) => p.end);
    this.#fileOffsets = Float64Array.from(pieces, (p) => p.file);
    this.size = pieces.length ? pieces[pieces.length - 1].end : 0;
  }

  readAt(into: Uint8Array, position: number): number {
    if (position >= this.size) return 0;
    const want = Math.min(into.length, this.size - position);
    let done = 0;
    let i = this.#find(position);
    while (done < want) {
      const pos = position + done;
      while (i < this.#starts.length && this.#ends[i] <= pos) i++;
      if (i >= this.#starts.length) break;
      if (this.#starts[i] > pos) {
        // A hole never written: a reassembled file would read zeros there.
        const n = Math.min(want - done, this.#starts[i] - pos);
        into.fill(0, done, done + n);
        done += n;
        continue;
      }
      const n = Math.min(want - done, this.#ends[i] - pos);
      const got = this.#src.readAt(
        into.subarray(done, done + n),
        this.#fileOffsets[i] + (pos - this.#starts[i]),
      );
      done += got;
      if (got < n) break;
    }
    return done;
  }

  close(): void {
    this.#src.close();
  }

  /** Index of the last piece starting at or before `pos` (0 if none). */
  #find(pos: number): number {
    let lo = 0;
    let hi = this.#starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#starts[mid] <= pos) lo = mid + 1;
      else hi = mid - 1;
    }
    return Math.max(hi, 0);
  }
}

interface Piece {
  start: number;
  end: number;
  file: number;
}

/**
 * Later records overwrite earlier ones (makedumpfile rewrites its header and bitmaps at the
 * end). Sweep the record boundaries and give every elementary interval to the newest record
 * covering it.
 */
function resolveOverlaps(starts: number[], ends: number[], files: number[]): Piece[] {
  const n = starts.length;
  // Fast path: records already in order and not overlapping (the common case).
  let ordered = true;
  for (let i = 1; i < n && ordered; i++) ordered = starts[i] >= ends[i - 1];
  if (ordered) return starts.map((s, i) => ({ start: s, end: ends[i], file: files[i] }));

  type Ev = { pos: number; rec: number; open: boolean };
  const events: Ev[] = [];
  for (let i = 0; i < n; i++) {
    events.push({ pos: starts[i], rec: i, open: true });
    events.push({ pos: ends[i], rec: i, open: false });
  }
  events.sort((a, b) => a.pos - b.pos);
  const heap = new MaxHeap();
  const closed = new Uint8Array(n);
  const out: Piece[] = [];
  let prev = events.length ? events[0].pos : 0;
  let e = 0;
  while (e < events.length) {
    const pos = events[e].pos;
    // Emit the piece [prev, pos) for the newest open record.
    while (heap.size && closed[heap.top()]) heap.pop();
    if (heap.size && pos > prev) {
      const r = heap.top();
      const last = out[out.length - 1];
      const file = files[r] + (prev - starts[r]);
      if (last && last.end === prev && last.file + (last.end - last.start) === file) {
        last.end = pos;
      } else {
        out.push({ start: prev, end: pos, file });
      }
    }
    for (; e < events.length && events[e].pos === pos; e++) {
      const ev = events[e];
      if (ev.open) heap.push(ev.rec);
      else closed[ev.rec] = 1;
    }
    prev = pos;
  }
  return out;
}

/** A max-heap of record numbers (newer records have larger numbers). */
class MaxHeap {
  #a: number[] = [];
  get size(): number {
    return this.#a.length;
  }
  top(): number {
    return this.#a[0];
  }
  push(v: number): void {
    const a = this.#a;
    a.push(v);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p] >= a[i]) break;
      [a[p], a[i]] = [a[i], a[p]];
      i = p;
    }
  }
  pop(): void {
    const a = this.#a;
    const last = a.pop()!;
    if (!a.length) return;
    a[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < a.length && a[l] > a[m]) m = l;
      if (r < a.length && a[r] > a[m]) m = r;
      if (m === i) break;
      [a[m], a[i]] = [a[i], a[m]];
      i = m;
    }
  }
}
