/**
 * The x86_64 kernel's ORC unwind tables, read from the dump's memory: for any kernel text address,
 * how to find the caller's stack pointer, frame pointer and return address (or the saved
 * registers of an entry point). objtool writes them at build time; the kernel's own unwinder reads
 * them for every `Call Trace`, so they are right for exactly the code that ran.
 *
 * The entry layout changed twice (Linux 6.3 added a `signal` bit, 6.4 replaced the `end` bit by
 * more types); the bit positions come from the dump's BTF when it has `struct orc_entry`, else
 * from the release.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { VirtualMemory } from "./paging.ts";

/** Registers an ORC entry bases the caller's stack pointer or frame pointer on. */
export const ORC_REG = {
  UNDEFINED: 0,
  PREV_SP: 1,
  DX: 2,
  DI: 3,
  BP: 4,
  SP: 5,
  R10: 6,
  R13: 7,
  BP_INDIRECT: 8,
  SP_INDIRECT: 9,
} as const;

/** Frame kinds, in Linux 6.4's numbering (older layouts are translated to it). */
export type OrcType = "undefined" | "end" | "call" | "regs" | "regs_partial";

/** One decoded ORC entry. */
export interface OrcEntry {
  /** Start of the code range it covers. */
  ip: bigint;
  /** The caller's stack pointer is this far from the register {@link spReg} names. */
  spOffset: number;
  /** Where the caller's frame pointer was saved, from the caller's stack pointer. */
  bpOffset: number;
  /** The register the stack pointer is found from ({@link ORC_REG}). */
  spReg: number;
  /** How the frame pointer is found ({@link ORC_REG}; undefined: unchanged). */
  bpReg: number;
  /** The kind of frame. */
  type: OrcType;
  /** The frame was interrupted (an exact ip, not a return address): Linux 6.3+. */
  signal: boolean;
}

interface Field {
  bit: number;
  size: number;
}

interface Layout {
  spReg: Field;
  bpReg: Field;
  type: Field;
  signal?: Field;
  end?: Field;
}

/** Linux 4.14–6.2: sp_reg:4 bp_reg:4 type:2 end:1. */
const LAYOUT_V1: Layout = {
  spReg: { bit: 0, size: 4 },
  bpReg: { bit: 4, size: 4 },
  type: { bit: 8, size: 2 },
  end: { bit: 10, size: 1 },
};
/** Linux 6.3: signal:1 inserted before end. */
const LAYOUT_V2: Layout = { ...LAYOUT_V1, signal: { bit: 10, size: 1 }, end: { bit: 11, size: 1 } };
/** Linux 6.4+: type:3 (undefined, end of stack, call, regs, regs partial) and signal:1. */
const LAYOUT_V3: Layout = {
  spReg: { bit: 0, size: 4 },
  bpReg: { bit: 4, size: 4 },
  type: { bit: 8, size: 3 },
  signal: { bit: 11, size: 1 },
};

const TYPES_V3: OrcType[] = ["undefined", "end", "call", "regs", "regs_partial"];
const TYPES_OLD: OrcType[] = ["call", "regs", "regs_partial"];
/** The kernel's fast lookup table covers the text in blocks of this many bytes. */
const LOOKUP_BLOCK_SIZE = 256n;

/** The core kernel's ORC tables in a dump. */
export class OrcTable {
  readonly #mem: VirtualMemory;
  readonly #ipTable: bigint;
  readonly #orcTable: bigint;
  readonly #count: number;
  readonly #lookup?: { table: bigint; blocks: number; start: bigint; stop: bigint };
  readonly #layout: Layout;
  readonly #hasEnd: boolean;
  /** Where the entry layout came from, for messages. */
  readonly layoutSource: string;
  #cache = new Map<bigint, OrcEntry | null>();
  /** Code ranges the table describes (past its last entry lies other code, e.g. modules). */
  #covers: [bigint, bigint][];

  private constructor(
    mem: VirtualMemory,
    ipTable: bigint,
    orcTable: bigint,
    count: number,
    layout: Layout,
    layoutSource: string,
    lookup?: { table: bigint; blocks: number; start: bigint; stop: bigint },
    covers: [bigint, bigint][] = [],
  ) {
    this.#covers = covers;
    this.#mem = mem;
    this.#ipTable = ipTable;
    this.#orcTable = orcTable;
    this.#count = count;
    this.#layout = layout;
    this.#hasEnd = layout.end !== undefined;
    this.layoutSource = layoutSource;
    this.#lookup = lookup;
  }

  /** The tables of a dumped x86_64 kernel; undefined when its symbols do not locate them. */
  static open(kernel: Kernel): OrcTable | undefined {
    const mem = kernel.memory;
    if (!mem || kernel.dump.arch !== "x86_64") return undefined;
    const ipStart = kernel.symbol("__start_orc_unwind_ip");
    const ipStop = kernel.symbol("__stop_orc_unwind_ip");
    const orcStart = kernel.symbol("__start_orc_unwind");
    const orcStop = kernel.symbol("__stop_orc_unwind");
    if (
      ipStart === undefined || ipStop === undefined || orcStart === undefined ||
      orcStop === undefined || ipStop <= ipStart
    ) return undefined;
    const count = Number(ipStop - ipStart) / 4;
    // The two tables must have one entry each per ip: anything else is not the ORC we know.
    if (!Number.isInteger(count) || orcStop - orcStart !== BigInt(count * 6)) return undefined;
    const { layout, source } = orcLayout(kernel);
    let lookup;
    const table = kernel.symbol("orc_lookup");
    const end = kernel.symbol("orc_lookup_end");
    const start = kernel.symbol("_stext");
    const stop = kernel.symbol("_etext");
    if (table !== undefined && end !== undefined && start !== undefined && stop !== undefined) {
      const blocks = Number(end - table) / 4;
      if (Number.isInteger(blocks) && blocks > 1) lookup = { table, blocks, start, stop };
    }
    const covers: [bigint, bigint][] = [];
    for (const [a, b] of [["_stext", "_etext"], ["_sinittext", "_einittext"]]) {
      const from = kernel.symbol(a);
      const to = kernel.symbol(b);
      if (from !== undefined && to !== undefined && to > from) covers.push([from, to]);
    }
    return new OrcTable(mem, ipStart, orcStart, count, layout, source, lookup, covers);
  }

  /** A module's tables (`mod->arch.orc_unwind_ip`, `orc_unwind`, `num_orcs`), for its code. */
  forModule(
    ipTable: bigint,
    orcTable: bigint,
    count: number,
    start: bigint,
    end: bigint,
  ): OrcTable {
    return new OrcTable(
      this.#mem,
      ipTable,
      orcTable,
      count,
      this.#layout,
      this.layoutSource,
      undefined,
      [[start, end]],
    );
  }

  /** Number of entries. */
  get size(): number {
    return this.#count;
  }

  /**
   * The entry covering `ip` (the last one starting at or below it), or undefined outside the
   * core kernel's tables or when they are not readable.
   */
  find(ip: bigint): OrcEntry | undefined {
    const hit = this.#cache.get(ip);
    if (hit !== undefined) return hit ?? undefined;
    const e = this.#find(ip);
    if (this.#cache.size > 65536) this.#cache.clear();
    this.#cache.set(ip, e ?? null);
    return e;
  }

  /**
   * Every entry of the code range [start, end): the one covering `start`, then each one that
   * starts inside the range, in address order (for describing a whole range, e.g. the entry code).
   */
  entriesIn(start: bigint, end: bigint): OrcEntry[] {
    const first = this.#find(start);
    if (!first) return [];
    // Entries are sorted by ip: read from the first one on until past the range.
    const out: OrcEntry[] = [first];
    const index = this.#lastIndex;
    // A chunk of both tables at a time: a whole kernel's text is a few hundred thousand entries
    // (gdb's unwind tables without a vmlinux), one read each would be most of the time.
    const chunk = 4096;
    for (let i = index + 1; i < this.#count; i += chunk) {
      const n = Math.min(chunk, this.#count - i);
      const ips = this.#read(this.#ipTable + BigInt(i) * 4n, n * 4);
      const entries = this.#read(this.#orcTable + BigInt(i) * 6n, n * 6);
      if (!ips || !entries) break;
      const v = new DataView(ips.buffer);
      const ev = new DataView(entries.buffer);
      const base = Number(this.#ipTable & 0xffffffffn) + i * 4;
      const high = this.#ipTable - (this.#ipTable & 0xffffffffn);
      for (let j = 0; j < n; j++) {
        // ip = &ip_table[i + j] + its 32-bit relative value, computed in numbers where exact.
        const low = base + j * 4 + v.getInt32(j * 4, true);
        const ip = high + BigInt(low);
        if (ip >= end) return out;
        out.push(this.#decode(ev, j * 6, ip));
      }
    }
    return out;
  }

  /** Index of the entry the last #find returned. */
  #lastIndex = -1;

  #find(ip: bigint): OrcEntry | undefined {
    if (this.#covers.length && !this.#covers.some(([a, b]) => ip >= a && ip < b)) {
      return undefined;
    }
    let lo = 0;
    let hi = this.#count - 1;
    const lk = this.#lookup;
    if (lk && ip >= lk.start && ip < lk.stop) {
      // orc_lookup[i] is the first entry of text block i: search only that block's entries.
      const idx = Number((ip - lk.start) / LOOKUP_BLOCK_SIZE);
      if (idx + 1 < lk.blocks) {
        const b = this.#read(lk.table + BigInt(idx) * 4n, 8);
        if (b) {
          const v = new DataView(b.buffer);
          lo = v.getUint32(0, true);
          hi = Math.min(v.getUint32(4, true), this.#count - 1);
        }
      }
    }
    if (lo > hi) return undefined;
    const n = hi - lo + 1;
    const buf = this.#read(this.#ipTable + BigInt(lo) * 4n, n * 4);
    if (!buf) return undefined;
    const v = new DataView(buf.buffer);
    const ipAt = (i: number) =>
      this.#ipTable + BigInt((lo + i) * 4) + BigInt(v.getInt32(i * 4, true));
    if (ipAt(0) > ip) return undefined;
    let a = 0;
    let b = n - 1;
    while (a < b) {
      const mid = (a + b + 1) >> 1;
      if (ipAt(mid) <= ip) a = mid;
      else b = mid - 1;
    }
    this.#lastIndex = lo + a;
    return this.#entry(lo + a, ipAt(a));
  }

  #entry(index: number, ip: bigint): OrcEntry | undefined {
    const b = this.#read(this.#orcTable + BigInt(index) * 6n, 6);
    return b ? this.#decode(new DataView(b.buffer), 0, ip) : undefined;
  }

  /** The entry whose six bytes are at `at` in `v`, covering code from `ip`. */
  #decode(v: DataView, at: number, ip: bigint): OrcEntry {
    const flags = v.getUint16(at + 4, true);
    const l = this.#layout;
    const get = (f: Field) => (flags >>> f.bit) & ((1 << f.size) - 1);
    const spReg = get(l.spReg);
    const raw = get(l.type);
    let type: OrcType;
    if (this.#hasEnd) {
      // Before 6.4 an undefined sp_reg with `end` set marked the end of a stack.
      if (spReg === ORC_REG.UNDEFINED) type = get(l.end!) ? "end" : "undefined";
      else type = TYPES_OLD[raw] ?? "undefined";
    } else type = TYPES_V3[raw] ?? "undefined";
    return {
      ip,
      spOffset: v.getInt16(at, true),
      bpOffset: v.getInt16(at + 2, true),
      spReg,
      bpReg: get(l.bpReg),
      type,
      signal: l.signal ? get(l.signal) !== 0 : false,
    };
  }

  #read(addr: bigint, n: number): Uint8Array | undefined {
    const buf = new Uint8Array(n);
    return this.#mem.read(addr, buf).bytes === n ? buf : undefined;
  }
}

/** Which `struct orc_entry` the kernel was built with. */
function orcLayout(kernel: Kernel): { layout: Layout; source: string } {
  const btf = kernel.btf;
  const bits = (m: string) => btf?.memberBits("orc_entry", m);
  const spReg = bits("sp_reg");
  const bpReg = bits("bp_reg");
  const type = bits("type");
  if (spReg && bpReg && type && spReg.bitSize && type.bitSize) {
    const field = (b: { bitOffset: number; bitSize: number }) => ({
      // The flags word follows the two s16 offsets.
      bit: b.bitOffset - 32,
      size: b.bitSize,
    });
    const signal = bits("signal");
    const end = bits("end");
    return {
      layout: {
        spReg: field(spReg),
        bpReg: field(bpReg),
        type: field(type),
        signal: signal?.bitSize ? field(signal) : undefined,
        end: end?.bitSize ? field(end) : undefined,
      },
      source: "struct orc_entry in BTF",
    };
  }
  if (kernel.symbol("orc_header") !== undefined) {
    return { layout: LAYOUT_V3, source: "Linux 6.4+ layout (orc_header present)" };
  }
  const m = /^(\d+)\.(\d+)/.exec(kernel.release ?? "");
  const v = m ? Number(m[1]) * 1000 + Number(m[2]) : 0;
  if (v >= 6004) return { layout: LAYOUT_V3, source: "Linux 6.4+ layout (by release)" };
  if (v === 6003) return { layout: LAYOUT_V2, source: "Linux 6.3 layout (by release)" };
  return { layout: LAYOUT_V1, source: "Linux 4.14–6.2 layout (by release)" };
}
