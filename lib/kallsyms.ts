/**
 * The kernel's own symbol table (kallsyms), read from the dump's memory. Since Linux 6.0
 * VMCOREINFO names its tables, so symbols are known without a vmlinux.
 *
 * @module
 */

import type { VirtualMemory } from "./paging.ts";
import type { VmcoreInfo } from "./vmcoreinfo.ts";
import type { ArchName } from "./target.ts";

/** A guard against corrupt counts: no kernel has this many symbols. */
const MAX_SYMBOLS = 2_000_000;

/**
 * The kernel's symbols by name. Addresses are made on lookup from the kernel's own 32-bit offset
 * table: one BigInt per symbol at decode time measured a third of the decode, which runs at
 * every start without a vmlinux (about 80,000 symbols in a Debian kernel).
 */
export class KallsymsTable {
  #index: Map<string, number>;
  #offsets: Int32Array;
  #base: bigint;
  #absolutePercpu: boolean;
  #names: readonly string[];
  #types: Uint8Array;
  /** Address of each symbol minus the base, as numbers (per-CPU ones -Infinity): built on use. */
  #rel?: Float64Array;

  /**
   * A table over decoded names (see {@link readKallsyms}).
   * @param index symbol name → index into `offsets`
   * @param offsets the kernel's `kallsyms_offsets` table
   * @param base `kallsyms_relative_base`
   * @param arch the dumped machine, which decides how offsets are read
   * @param names every symbol's name in table (= address) order, for {@link lookup}
   * @param types every symbol's type letter (`T`, `t`, `D`, … as in /proc/kallsyms), likewise
   */
  constructor(
    index: Map<string, number>,
    offsets: Int32Array,
    base: bigint,
    arch: ArchName,
    names: readonly string[] = [],
    types: Uint8Array = new Uint8Array(0),
  ) {
    this.#index = index;
    this.#offsets = offsets;
    this.#base = base;
    // x86_64 keeps per-CPU symbols as absolute offsets (negative entries are relative);
    // other architectures store every address relative to the base.
    this.#absolutePercpu = arch === "x86_64";
    this.#names = names;
    this.#types = types;
  }

  /**
   * Every symbol with an address (not x86_64's per-CPU offsets), in table order, which is address
   * order: its name, address and type letter. Empty when names were not kept.
   */
  *entries(): Generator<{ name: string; address: bigint; type: string }> {
    const rel = this.#relative();
    const n = Math.min(rel.length, this.#types.length);
    for (let i = 0; i < n; i++) {
      if (rel[i] === -Infinity) continue;
      yield {
        name: this.#names[i],
        address: (this.#base + BigInt(rel[i])) & 0xffffffffffffffffn,
        type: String.fromCharCode(this.#types[i]),
      };
    }
  }

  /**
   * The symbol covering an address, as the kernel's `kallsyms_lookup()` finds it: the last symbol
   * at or below it (the first of aliases at one address), sized up to the next higher symbol.
   * Undefined below the first symbol, past the last one, or when names were not kept.
   */
  lookup(address: bigint): { name: string; offset: number; size: number } | undefined {
    const rel = this.#relative();
    const n = rel.length;
    if (n === 0) return undefined;
    const want = Number(address - this.#base);
    if (!(want >= rel[0]) || want > rel[n - 1] + (1 << 24)) return undefined;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (rel[mid] <= want) lo = mid;
      else hi = mid - 1;
    }
    const start = rel[lo];
    if (start === -Infinity) return undefined;
    while (lo > 0 && rel[lo - 1] === start) lo--;
    let next = lo + 1;
    while (next < n && rel[next] === start) next++;
    // Past the last symbol the kernel sizes to _end/_etext; no size is known here.
    if (next >= n) return undefined;
    return { name: this.#names[lo], offset: want - start, size: rel[next] - start };
  }

  #relative(): Float64Array {
    if (this.#rel) return this.#rel;
    const n = Math.min(this.#names.length, this.#offsets.length);
    const rel = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const off = this.#offsets[i];
      if (this.#absolutePercpu) rel[i] = off >= 0 ? -Infinity : -1 - off;
      else rel[i] = off >>> 0;
    }
    this.#rel = rel;
    return rel;
  }

  /** Number of distinct names. */
  get size(): number {
    return this.#index.size;
  }

  /** Whether the kernel has a symbol of this name. */
  has(name: string): boolean {
    return this.#index.has(name);
  }

  /** Runtime address of a symbol, or undefined. */
  get(name: string): bigint | undefined {
    const i = this.#index.get(name);
    if (i === undefined) return undefined;
    const off = this.#offsets[i];
    const addr = this.#absolutePercpu
      ? (off >= 0 ? BigInt(off) : this.#base - 1n - BigInt(off))
      : this.#base + BigInt(off >>> 0);
    return addr & 0xffffffffffffffffn;
  }
}

/**
 * Decode every kallsyms symbol's name; undefined when VMCOREINFO lacks the tables or memory
 * holding them is not in the dump.
 */
export function readKallsyms(
  mem: VirtualMemory,
  vmci: VmcoreInfo,
  arch: ArchName,
): KallsymsTable | undefined {
  const numAddr = vmci.symbol("kallsyms_num_syms");
  const namesAddr = vmci.symbol("kallsyms_names");
  const tokTable = vmci.symbol("kallsyms_token_table");
  const tokIndex = vmci.symbol("kallsyms_token_index");
  const offsetsAddr = vmci.symbol("kallsyms_offsets");
  const baseAddr = vmci.symbol("kallsyms_relative_base");
  if (
    numAddr === undefined || namesAddr === undefined || tokTable === undefined ||
    tokIndex === undefined || offsetsAddr === undefined || baseAddr === undefined
  ) return undefined;
  const count = readBytes(mem, numAddr, 4);
  const base = mem.readU64(baseAddr);
  if (!count || base === undefined) return undefined;
  const num = new DataView(count.buffer).getUint32(0, true);
  if (num === 0 || num > MAX_SYMBOLS) return undefined;

  // 256 tokens: their offsets into the token table, and the table itself.
  const indexBytes = readBytes(mem, tokIndex, 512);
  if (!indexBytes) return undefined;
  const index = new DataView(indexBytes.buffer);
  let tableLen = 0;
  for (let i = 0; i < 256; i++) tableLen = Math.max(tableLen, index.getUint16(i * 2, true));
  const table = readBytes(mem, tokTable, tableLen + 256);
  if (!table) return undefined;
  const dec = new TextDecoder();
  const tokens: string[] = [];
  for (let i = 0; i < 256; i++) {
    const start = index.getUint16(i * 2, true);
    let end = table.indexOf(0, start);
    if (end < 0) end = table.length;
    tokens.push(dec.decode(table.subarray(start, end)));
  }

  const offsetBytes = readBytes(mem, offsetsAddr, num * 4);
  if (!offsetBytes) return undefined;
  // Little-endian like every host Deno runs on (x86_64, aarch64).
  const offsets = new Int32Array(offsetBytes.buffer, 0, num);
  const all: string[] = [];
  const types = new Uint8Array(num);
  const finish = (names: Map<string, number>) =>
    new KallsymsTable(names, offsets, base, arch, all, types.subarray(0, all.length));

  const names = new ChunkReader(mem, namesAddr);
  const out = new Map<string, number>();
  for (let i = 0; i < num; i++) {
    let len = names.byte();
    if (len < 0) return out.size ? finish(out) : undefined;
    if (len & 0x80) {
      // Names of 128 tokens or more use a second length byte (Linux 6.1+).
      const hi = names.byte();
      if (hi < 0) break;
      len = (len & 0x7f) | (hi << 7);
    }
    let name = "";
    for (let j = 0; j < len; j++) {
      const t = names.byte();
      if (t < 0) return out.size ? finish(out) : undefined;
      name += tokens[t];
    }
    // The first character is the symbol type letter, as in /proc/kallsyms.
    const bare = name.slice(1);
    types[all.length] = name.charCodeAt(0);
    all.push(bare);
    if (bare && !out.has(bare)) out.set(bare, i);
  }
  return finish(out);
}

function readBytes(mem: VirtualMemory, addr: bigint, n: number): Uint8Array | undefined {
  const buf = new Uint8Array(n);
  return mem.read(addr, buf).bytes === n ? buf : undefined;
}

/** Sequential byte reader over kernel memory, a chunk at a time. */
class ChunkReader {
  #mem: VirtualMemory;
  #next: bigint;
  #buf = new Uint8Array(65536);
  #len = 0;
  #pos = 0;

  constructor(mem: VirtualMemory, start: bigint) {
    this.#mem = mem;
    this.#next = start;
  }

  /** Next byte, or -1 when memory runs out. */
  byte(): number {
    if (this.#pos >= this.#len) {
      const r = this.#mem.read(this.#next, this.#buf);
      this.#len = r.bytes;
      this.#pos = 0;
      this.#next += BigInt(r.bytes);
      if (r.bytes === 0) return -1;
    }
    return this.#buf[this.#pos++];
  }
}
