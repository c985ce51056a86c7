/**
 * The kernel's own symbol table (kallsyms), read from the dump's memory. Since Linux 6.0
 * VMCOREINFO names its tables, so symbols are known without a vmlinux.
 *
 * @module
 */

import type { VirtualMemory } from "./paging.ts";
import type { VmcoreInfo } from "./vmcoreinfo.ts";
import type { ArchName } from "./target.ts";

const latin1 = new TextDecoder("latin1");

/** A guard against corrupt counts: no kernel has this many symbols. */
const MAX_SYMBOLS = 2_000_000;

/**
 * Decode every kallsyms symbol into a name → runtime address map; undefined when VMCOREINFO
 * lacks the tables or memory holding them is not in the dump.
 */
export function readKallsyms(
  mem: VirtualMemory,
  vmci: VmcoreInfo,
  arch: ArchName,
): Map<string, bigint> | undefined {
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
  const tokens: Uint8Array[] = [];
  for (let i = 0; i < 256; i++) {
    const start = index.getUint16(i * 2, true);
    let end = table.indexOf(0, start);
    if (end < 0) end = table.length;
    tokens.push(table.subarray(start, end));
  }

  const offsets = readBytes(mem, offsetsAddr, num * 4);
  if (!offsets) return undefined;
  const ov = new DataView(offsets.buffer);
  // x86_64 keeps per-CPU symbols as absolute offsets (negative entries are relative);
  // other architectures store every address relative to the base.
  const absolutePercpu = arch === "x86_64";

  const names = new ChunkReader(mem, namesAddr);
  const out = new Map<string, bigint>();
  // A name is assembled as bytes and decoded once: concatenating token strings would leave each
  // name a rope of small strings (measured: 11 MiB more heap for a Debian kernel's 150k names).
  const nameBytes = new Uint8Array(128 * 256);
  for (let i = 0; i < num; i++) {
    let len = names.byte();
    if (len < 0) return out.size ? out : undefined;
    if (len & 0x80) {
      // Names of 128 tokens or more use a second length byte (Linux 6.1+).
      const hi = names.byte();
      if (hi < 0) break;
      len = (len & 0x7f) | (hi << 7);
    }
    let n = 0;
    for (let j = 0; j < len; j++) {
      const t = names.byte();
      if (t < 0) return out.size ? out : undefined;
      const token = tokens[t];
      if (n + token.length > nameBytes.length) continue; // cannot happen with 256-byte tokens
      nameBytes.set(token, n);
      n += token.length;
    }
    const name = latin1.decode(nameBytes.subarray(0, n));
    const off = ov.getInt32(i * 4, true);
    let addr: bigint;
    if (absolutePercpu) addr = off >= 0 ? BigInt(off) : base - 1n - BigInt(off);
    else addr = base + BigInt(off >>> 0);
    // The first character is the symbol type letter, as in /proc/kallsyms.
    const bare = name.slice(1);
    if (bare && !out.has(bare)) out.set(bare, addr & 0xffffffffffffffffn);
  }
  return out;
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
