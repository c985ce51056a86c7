/**
 * The kernel log from the dump alone: the lockless printk ring buffer of Linux 5.10+, laid out by
 * the offsets the kernel itself puts in VMCOREINFO (`SYMBOL(prb)`, `printk_ringbuffer`,
 * `prb_desc`, `prb_data_blk_lpos`, `printk_info`, …), so no vmlinux is needed. Records print as the
 * serial console printed them: `[    5.647483] text`, one line per line of a record.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { VmcoreInfo } from "./vmcoreinfo.ts";
import { parseKernelNumber } from "./kdb_expr.ts";

/** One printk record. */
export interface LogRecord {
  /** Sequence number. */
  seq: bigint;
  /** Timestamp in nanoseconds since boot (local clock). */
  tsNsec: bigint;
  /** Syslog facility (0 = kernel). */
  facility: number;
  /** Log level 0 (emergency) to 7 (debug). */
  level: number;
  /** The message (may hold several lines). */
  text: string;
}

/** The log, and anything that got in the way of reading it. */
export interface KernelLog {
  /** The records still in the ring, oldest first. */
  records: LogRecord[];
  /** Records whose descriptor or text could not be read. */
  unreadable: number;
}

/** The kernel log cannot be read from this dump. */
export class LogError extends Error {}

/** Descriptor states (the top two bits of `state_var`). */
const DESC_COMMITTED = 1n;
const DESC_FINALIZED = 2n;
const DESC_FLAGS_SHIFT = 62n;
const DESC_ID_MASK = (1n << DESC_FLAGS_SHIFT) - 1n;
/** Descriptors beyond this are not believed (the kernel's largest log is 2^25 bytes / 2^5). */
const MAX_COUNT_BITS = 22;
/** Text rings beyond this are not believed (log_buf_len is at most 2^31). */
const MAX_DATA_BITS = 31;

/** Offsets the reader needs, all from VMCOREINFO. */
interface Layout {
  descRing: number;
  textRing: number;
  countBits: number;
  descs: number;
  infos: number;
  descSize: number;
  stateVar: number;
  textLpos: number;
  lposBegin: number;
  lposNext: number;
  infoSize: number;
  seq: number;
  tsNsec: number;
  textLen: number;
  sizeBits: number;
  data: number;
}

function layout(vmci: VmcoreInfo): Layout {
  const o = (name: string) => {
    const v = vmci.offset(name);
    if (v === undefined) throw new LogError(`VMCOREINFO has no OFFSET(${name})`);
    return v;
  };
  const s = (name: string) => {
    const v = vmci.size(name);
    if (v === undefined) throw new LogError(`VMCOREINFO has no SIZE(${name})`);
    return v;
  };
  return {
    descRing: o("printk_ringbuffer.desc_ring"),
    textRing: o("printk_ringbuffer.text_data_ring"),
    countBits: o("prb_desc_ring.count_bits"),
    descs: o("prb_desc_ring.descs"),
    infos: o("prb_desc_ring.infos"),
    descSize: s("prb_desc"),
    stateVar: o("prb_desc.state_var"),
    textLpos: o("prb_desc.text_blk_lpos"),
    lposBegin: o("prb_data_blk_lpos.begin"),
    lposNext: o("prb_data_blk_lpos.next"),
    infoSize: s("printk_info"),
    seq: o("printk_info.seq"),
    tsNsec: o("printk_info.ts_nsec"),
    textLen: o("printk_info.text_len"),
    sizeBits: o("prb_data_ring.size_bits"),
    data: o("prb_data_ring.data"),
  };
}

/** Read `length` bytes of kernel memory, or throw a LogError naming what they are. */
function readBytes(kernel: Kernel, address: bigint, length: number, what: string): Uint8Array {
  const mem = kernel.memory;
  if (!mem) throw new LogError("kernel addresses cannot be translated in this dump");
  const out = new Uint8Array(length);
  const r = mem.read(address, out);
  if (r.error) throw new LogError(`${what} is not readable: ${r.error}`);
  return out;
}

/**
 * Read every record of the printk ring buffer, oldest first.
 * @throws LogError when the dump lacks the ring buffer's description or its memory
 */
export function readKernelLog(kernel: Kernel): KernelLog {
  const vmci = kernel.dump.vmcoreinfo;
  if (!vmci) throw new LogError("the dump has no VMCOREINFO");
  const prbSymbol = vmci.symbol("prb");
  if (prbSymbol === undefined) {
    throw new LogError(
      "VMCOREINFO has no SYMBOL(prb): the kernel predates the lockless printk ring (Linux 5.10)",
    );
  }
  const L = layout(vmci);
  const prbPointer = new DataView(readBytes(kernel, prbSymbol, 8, "prb").buffer);
  const prb = prbPointer.getBigUint64(0, true);
  const ringSize = Math.max(L.descRing, L.textRing) + 32;
  const ring = new DataView(readBytes(kernel, prb, ringSize, "printk_ringbuffer").buffer);
  const countBits = ring.getUint32(L.descRing + L.countBits, true);
  const descsAt = ring.getBigUint64(L.descRing + L.descs, true);
  const infosAt = ring.getBigUint64(L.descRing + L.infos, true);
  const sizeBits = ring.getUint32(L.textRing + L.sizeBits, true);
  const dataAt = ring.getBigUint64(L.textRing + L.data, true);
  if (countBits > MAX_COUNT_BITS || sizeBits > MAX_DATA_BITS || sizeBits < 3) {
    throw new LogError(`implausible ring sizes (count_bits ${countBits}, size_bits ${sizeBits})`);
  }
  const count = 2 ** countBits;
  const dataSize = 2 ** sizeBits;
  const descs = new DataView(
    readBytes(kernel, descsAt, count * L.descSize, "the printk descriptor ring").buffer,
  );
  const infos = readBytes(kernel, infosAt, count * L.infoSize, "the printk info array");
  const infoView = new DataView(infos.buffer);
  const data = readBytes(kernel, dataAt, dataSize, "the printk text ring");
  const decoder = new TextDecoder();
  const records: LogRecord[] = [];
  let unreadable = 0;
  const dataMask = BigInt(dataSize - 1);
  const wrapShift = BigInt(sizeBits);
  for (let i = 0; i < count; i++) {
    const d = i * L.descSize;
    const stateVar = descs.getBigUint64(d + L.stateVar, true);
    const state = stateVar >> DESC_FLAGS_SHIFT;
    if (state !== DESC_COMMITTED && state !== DESC_FINALIZED) continue;
    // The descriptor's id must map to this slot, or it is stale.
    if (Number((stateVar & DESC_ID_MASK) % BigInt(count)) !== i) continue;
    const info = i * L.infoSize;
    const textLen = infoView.getUint16(info + L.textLen, true);
    // facility and the flags:5/level:3 byte follow text_len (struct printk_info's layout).
    const facility = infos[info + L.textLen + 2];
    const level = infos[info + L.textLen + 3] >> 5;
    const begin = descs.getBigUint64(d + L.textLpos + L.lposBegin, true);
    const next = descs.getBigUint64(d + L.textLpos + L.lposNext, true);
    let text: string;
    if ((begin & 1n) !== 0n || (next & 1n) !== 0n) {
      // Data-less: NO_LPOS both ways is an empty line; anything else lost its text.
      if (begin === 3n && next === 3n) text = "";
      else {
        unreadable++;
        continue;
      }
    } else {
      let start: number;
      let size: number;
      if (begin >> wrapShift === next >> wrapShift && begin < next) {
        start = Number(begin & dataMask);
        size = Number(next - begin);
      } else if ((begin + BigInt(dataSize)) >> wrapShift === next >> wrapShift) {
        // The block wrapped: it starts again at the beginning of the ring.
        start = 0;
        size = Number(next & dataMask);
      } else {
        unreadable++;
        continue;
      }
      // Each block starts with the descriptor id (an unsigned long).
      if (size < 8 || start + size > dataSize) {
        unreadable++;
        continue;
      }
      const body = data.subarray(start + 8, start + size);
      text = decoder.decode(body.subarray(0, Math.min(textLen, body.length)));
    }
    records.push({
      seq: infoView.getBigUint64(info + L.seq, true),
      tsNsec: infoView.getBigUint64(info + L.tsNsec, true),
      facility,
      level,
      text,
    });
  }
  records.sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
  return { records, unreadable };
}

/** The console's timestamp prefix: `[    5.647483]`. */
export function timestampPrefix(tsNsec: bigint): string {
  const secs = tsNsec / 1_000_000_000n;
  const usecs = (tsNsec % 1_000_000_000n) / 1000n;
  return `[${String(secs).padStart(5)}.${String(usecs).padStart(6, "0")}]`;
}

/** The lines a record prints as, each with the record's timestamp (as the console does). */
export function recordLines(r: LogRecord): string[] {
  const prefix = timestampPrefix(r.tsNsec) + " ";
  const text = r.text.endsWith("\n") ? r.text.slice(0, -1) : r.text;
  return text.split("\n").map((l) => prefix + l);
}

/** Every line of the log, oldest first, as the serial console printed them. */
export function logLines(log: KernelLog, maxLevel = 7): string[] {
  const out: string[] = [];
  for (const r of log.records) if (r.level <= maxLevel) out.push(...recordLines(r));
  return out;
}

/**
 * The records kdb's `dmesg` shows (those below `maxLevel + 1`), oldest first, each as its lines
 * the way `kmsg_dump_get_line(…, syslog = true, …)` makes them: `<6>[    5.647483] text`, the
 * syslog priority (facility × 8 + level) in front of every line of the record.
 */
export function kdbLogRecords(log: KernelLog, maxLevel = 7): string[][] {
  const out: string[][] = [];
  for (const r of log.records) {
    if (r.level > maxLevel) continue;
    const priority = `<${(r.facility << 3) | r.level}>`;
    out.push(recordLines(r).map((l) => priority + l));
  }
  return out;
}

/**
 * Output of kdb's `dmesg [LINES [ADJUST]]`. kdb counts records (one `kmsg_dump_get_line` each),
 * so `records` holds one entry per record: its line, or its lines.
 */
export function dmesgCommand(
  records: readonly (string | readonly string[])[],
  args: readonly string[],
): string[] {
  const int = (s: string | undefined): number | undefined => {
    const v = s === undefined ? undefined : parseKernelNumber(s, true);
    // kstrtoint: a number that does not fit an int is not one.
    return v === undefined || v < -(2n ** 31n) || v >= 2n ** 31n ? undefined : Number(v);
  };
  // kdb: an unparsable count means all lines, an unparsable or negative adjust means 0.
  let count = int(args[0]) ?? 0;
  let adjust = int(args[1]) ?? 0;
  if (adjust < 0) adjust = 0;
  const n = records.length;
  const out: string[] = [];
  let skip = 0;
  if (count < 0) {
    if (adjust >= n) out.push(`buffer only contains ${n} lines, nothing printed`);
    else if (adjust - count >= n) {
      out.push(`buffer only contains ${n} lines, last ${n - adjust} lines printed`);
    }
    skip = adjust;
    count = -count;
  } else if (count > 0) {
    skip = n - count - adjust;
    if (adjust >= n) {
      out.push(`buffer only contains ${n} lines, nothing printed`);
      skip = n;
    } else if (skip < 0) {
      count += skip;
      skip = 0;
      out.push(`buffer only contains ${n} lines, first ${count} lines printed`);
    }
  } else count = n;
  if (skip >= n || skip < 0) return out;
  // Loops, not push(...): a large log's 130,000 lines or more overflow the argument stack.
  for (const record of records.slice(skip, skip + count)) {
    if (typeof record === "string") out.push(record);
    else for (const line of record) out.push(line);
  }
  return out;
}

/**
 * The CPU that panicked, from the log: the `CPU: N PID: …` line the kernel's stack dump prints
 * within a few lines after the last panic (or, without one, oops) line. For kernels whose
 * kallsyms lacks `panic_cpu` (Debian's arm64 builds) this is the only record of it.
 */
export function panicCpuFromLog(lines: readonly string[]): number | undefined {
  const text = (l: string) => l.replace(/^\[[ 0-9.]+\] /, "");
  let at = lines.findLastIndex((l) =>
    /Kernel panic - not syncing: /.test(text(l)) && !text(l).startsWith("---[")
  );
  if (at < 0) {
    at = lines.findLastIndex((l) =>
      /^(BUG: |Oops: |Unable to handle kernel |general protection fault)/.test(text(l))
    );
  }
  if (at < 0) return undefined;
  for (const l of lines.slice(at + 1, at + 8)) {
    const m = /^CPU: (\d+) (?:UID: \d+ )?PID: \d+ Comm: /.exec(text(l));
    if (m) return Number(m[1]);
  }
  return undefined;
}
