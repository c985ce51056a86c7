/**
 * Unwind information for gdb where the vmlinux has none: the x86_64 entry code (syscall,
 * interrupt and exception entries, `ret_from_fork`) is assembly without DWARF call frame
 * information, so gdb guesses there and runs on past `entry_SYSCALL_64` into ~20 `?? ()` frames
 * made of the saved user registers. The kernel's ORC tables in the dump describe that code
 * exactly; this module turns them into DWARF CFI (`.debug_frame`) in a small generated ELF file
 * that the server offers gdb as a shared library, so gdb's own DWARF unwinder:
 * - stops cleanly (return address undefined: the outermost frame) at the syscall entry, where
 *   the registers below are user mode, and at the ends of kernel stacks;
 * - unwinds interrupt and exception entries through the `struct pt_regs` (or the hardware's iret
 *   frame) the entry saved, into the interrupted kernel code;
 * - treats any user-space pc as the outermost frame (an interrupt taken in user mode).
 *
 * gdb looks for an FDE covering a pc in every objfile, and takes the vmlinux's own FDEs first, so
 * this file only fills the gaps.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import { ORC_REG, type OrcEntry } from "./orc.ts";
import { orcTable } from "./unwind_x86_64.ts";
import { symbolAt } from "./symbolize.ts";

/**
 * Name under which the generated file is offered: a path on no file system. The `target:` prefix
 * makes gdb fetch it from the server (vFile) whatever its sysroot is.
 */
export const UNWIND_LIBRARY_NAME = "target:/kdump-gdbserver/kernel-entry-unwind.debug";

// DWARF register numbers of x86_64 (System V psABI).
const RSP = 7;
const RBP = 6;
const RIP = 16;
/** pt_regs slots, in order, as DWARF registers (r15 … ss; orig_ax has none). */
const PT_REGS_DWARF = [15, 14, 13, 12, 6, 3, 11, 10, 9, 8, 0, 2, 1, 4, 5, -1, 16, 51, 49, 7, 52];
const PT_REGS_SIZE = 21 * 8;
const IRET_FRAME_SIZE = 5 * 8;
/** The registers every row states a rule for. */
const ALL_REGS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 49, 51, 52];
/** Base registers of ORC entries that are registers in DWARF. */
const ORC_DWARF_BASE: Record<number, number> = {
  [ORC_REG.SP]: RSP,
  [ORC_REG.BP]: RBP,
  [ORC_REG.R10]: 10,
  [ORC_REG.R13]: 13,
  [ORC_REG.DI]: 5,
  [ORC_REG.DX]: 1,
};
/** End of the x86_64 user half (canonical lower half, 5-level paging included). */
const USER_END = 0x0100000000000000n;
/** Code outside .entry.text that is assembly too (without CFI in the vmlinux). */
const EXTRA_FUNCTIONS = [
  "ret_from_fork",
  "ret_from_fork_asm",
  "__switch_to_asm",
  "secondary_startup_64",
  "secondary_startup_64_no_verify",
  "common_startup_64",
  "rewind_stack_and_make_dead",
];
/** Entry code whose saved registers are always user mode. */
const SYSCALL_ENTRY = /^entry_(SYSCALL|SYSENTER|INT80)/;

// DW_CFA opcodes used here.
const CFA_ADVANCE_LOC = 0x40;
const CFA_ADVANCE_LOC1 = 0x02;
const CFA_ADVANCE_LOC2 = 0x03;
const CFA_ADVANCE_LOC4 = 0x04;
const CFA_OFFSET_EXT_SF = 0x11;
const CFA_UNDEFINED = 0x07;
const CFA_SAME_VALUE = 0x08;
const CFA_DEF_CFA = 0x0c;
const CFA_DEF_CFA_SF = 0x12;
const CFA_DEF_CFA_EXPRESSION = 0x0f;
const CFA_EXPRESSION = 0x10;
const CFA_VAL_OFFSET = 0x14;
// DW_OP opcodes.
const OP_DEREF = 0x06;
const OP_CONSTS = 0x11;
const OP_PLUS = 0x22;
const OP_BREG0 = 0x70;

class Bytes {
  #buf: Uint8Array;
  length = 0;
  constructor(initial = 64) {
    this.#buf = new Uint8Array(initial);
  }
  #room(n: number) {
    if (this.length + n <= this.#buf.length) return;
    const next = new Uint8Array(Math.max(this.#buf.length * 2, this.length + n));
    next.set(this.#buf.subarray(0, this.length));
    this.#buf = next;
  }
  u8(...v: number[]) {
    this.#room(v.length);
    for (const b of v) this.#buf[this.length++] = b & 0xff;
  }
  u16(v: number) {
    this.u8(v, v >> 8);
  }
  u32(v: number) {
    this.u8(v, v >> 8, v >> 16, v >>> 24);
  }
  u64(v: bigint) {
    this.u32(Number(v & 0xffffffffn));
    this.u32(Number((v >> 32n) & 0xffffffffn));
  }
  uleb(v: number) {
    do {
      let b = v & 0x7f;
      v = Math.floor(v / 128);
      if (v) b |= 0x80;
      this.u8(b);
    } while (v);
  }
  sleb(v: number) {
    for (;;) {
      const b = v & 0x7f;
      v = Math.floor(v / 128);
      if ((v === 0 && !(b & 0x40)) || (v === -1 && (b & 0x40))) {
        this.u8(b);
        return;
      }
      this.u8(b | 0x80);
    }
  }
  /** An ASCII text, one byte per character. */
  ascii(text: string) {
    this.#room(text.length);
    for (let i = 0; i < text.length; i++) this.#buf[this.length++] = text.charCodeAt(i);
  }
  bytes(b: Uint8Array) {
    this.#room(b.length);
    this.#buf.set(b, this.length);
    this.length += b.length;
  }
  patch32(at: number, v: number) {
    this.#buf[at] = v & 0xff;
    this.#buf[at + 1] = (v >> 8) & 0xff;
    this.#buf[at + 2] = (v >> 16) & 0xff;
    this.#buf[at + 3] = (v >>> 24) & 0xff;
  }
  get data(): Uint8Array {
    return this.#buf.slice(0, this.length);
  }
  /** The bytes written, not copied (valid until the next write). */
  get view(): Uint8Array {
    return this.#buf.subarray(0, this.length);
  }
}

function encode(f: (b: Bytes) => void): Uint8Array {
  const b = new Bytes();
  f(b);
  return b.data;
}

/** The CFI rules of one ORC entry: the CFA rule, then one rule per register, as bytes. */
function rowRules(
  e: OrcEntry,
  syscall: boolean,
): { cfa: Uint8Array; regs: Map<number, Uint8Array> } {
  const regs = new Map<number, Uint8Array>();
  const undefinedRa = () => regs.set(RIP, encode((b) => b.u8(CFA_UNDEFINED, RIP)));
  const same = (r: number) => regs.set(r, encode((b) => b.u8(CFA_SAME_VALUE, r)));
  // A register saved at CFA + offset (offset a multiple of 8, data alignment -8).
  const savedAt = (r: number, offset: number) =>
    regs.set(r, encode((b) => (b.u8(CFA_OFFSET_EXT_SF), b.uleb(r), b.sleb(offset / -8))));
  if (e.type === "end" || e.type === "undefined") {
    for (const r of ALL_REGS) same(r);
    undefinedRa();
    return { cfa: encode((b) => (b.u8(CFA_DEF_CFA), b.uleb(RSP), b.uleb(8))), regs };
  }
  // ORC's "previous sp" (the caller's stack pointer, or where pt_regs starts): the CFA is placed
  // past the saved registers so that every rule is a fixed offset from it.
  const extra = e.type === "regs" ? PT_REGS_SIZE : e.type === "regs_partial" ? IRET_FRAME_SIZE : 0;
  let cfa: Uint8Array;
  const base = ORC_DWARF_BASE[e.spReg];
  if (base !== undefined) {
    const off = e.spOffset + extra;
    cfa = encode((b) => {
      if (off >= 0) (b.u8(CFA_DEF_CFA), b.uleb(base), b.uleb(off));
      else (b.u8(CFA_DEF_CFA_SF), b.uleb(base), b.sleb(off / -8));
    });
  } else {
    const reg = e.spReg === ORC_REG.SP_INDIRECT ? RSP : RBP;
    const expr = encode((b) => {
      if (e.spReg === ORC_REG.SP_INDIRECT) {
        b.u8(OP_BREG0 + reg), b.sleb(0), b.u8(OP_DEREF);
        b.u8(OP_CONSTS), b.sleb(e.spOffset + extra), b.u8(OP_PLUS);
      } else {
        b.u8(OP_BREG0 + reg), b.sleb(e.spOffset), b.u8(OP_DEREF);
        b.u8(OP_CONSTS), b.sleb(extra), b.u8(OP_PLUS);
      }
    });
    cfa = encode((b) => (b.u8(CFA_DEF_CFA_EXPRESSION), b.uleb(expr.length), b.bytes(expr)));
  }
  if (e.type === "call") {
    for (const r of ALL_REGS) same(r);
    savedAt(RIP, -8);
    regs.set(RSP, encode((b) => (b.u8(CFA_VAL_OFFSET), b.uleb(RSP), b.uleb(0))));
  } else if (e.type === "regs") {
    PT_REGS_DWARF.forEach((r, i) => {
      if (r >= 0) savedAt(r, i * 8 - PT_REGS_SIZE);
    });
    if (syscall) undefinedRa();
  } else {
    for (const r of ALL_REGS) same(r);
    // The iret frame: ip, cs, flags, sp, ss.
    [RIP, 51, 49, RSP, 52].forEach((r, i) => savedAt(r, i * 8 - IRET_FRAME_SIZE));
  }
  if (e.type !== "regs") {
    if (e.bpReg === ORC_REG.PREV_SP) {
      savedAt(RBP, e.bpOffset - extra);
    } else if (e.bpReg === ORC_REG.BP) {
      const expr = encode((b) => (b.u8(OP_BREG0 + RBP), b.sleb(e.bpOffset)));
      regs.set(
        RBP,
        encode((b) => (b.u8(CFA_EXPRESSION), b.uleb(RBP), b.uleb(expr.length), b.bytes(expr))),
      );
    }
  }
  return { cfa, regs };
}

/** One FDE: a code range and its CFA instructions. */
interface Fde {
  start: bigint;
  end: bigint;
  /** The CFA instructions, or what writes them (straight into the section: no copy each). */
  body: Uint8Array | ((b: Bytes) => void);
}

/**
 * A `.debug_frame` section: one CIE (version 1, no augmentation, code alignment 1, data
 * alignment -8, the given return address column and initial instructions), then the FDEs.
 */
function debugFrame(raColumn: number, initial: Uint8Array, fdes: Fde[]): Uint8Array {
  const b = new Bytes(fdes.length * 64);
  const cieAt = b.length;
  b.u32(0);
  b.u32(0xffffffff);
  b.u8(1, 0);
  b.uleb(1);
  b.sleb(-8);
  b.u8(raColumn);
  b.bytes(initial);
  while ((b.length - cieAt) % 8) b.u8(0); // DW_CFA_nop padding
  b.patch32(cieAt, b.length - cieAt - 4);
  for (const f of fdes) {
    const at = b.length;
    b.u32(0);
    b.u32(cieAt);
    b.u64(f.start);
    b.u64(f.end - f.start);
    if (typeof f.body === "function") f.body(b);
    else b.bytes(f.body);
    while ((b.length - at) % 8) b.u8(0);
    b.patch32(at, b.length - at - 4);
  }
  return b.view;
}

/** The rules of one kind of ORC entry, numbered so that row-to-row changes can be kept. */
interface Rules {
  id: number;
  cfa: Uint8Array;
  regs: Map<number, Uint8Array>;
}

/** The rules of each kind of ORC entry seen (a kernel has a few hundred kinds, not more). */
const rulesByKind = new Map<number, Rules>();
const ORC_TYPE_NUMBER: Record<string, number> = {};

function cachedRowRules(e: OrcEntry, syscall: boolean): Rules {
  // A number, not a string, per entry (hundreds of thousands): type, both registers, both 16-bit
  // offsets and the syscall flag, 45 bits in all.
  const type = ORC_TYPE_NUMBER[e.type] ??= Object.keys(ORC_TYPE_NUMBER).length;
  const key = ((((type * 16 + e.spReg) * 16 + e.bpReg) * 0x10000 + (e.spOffset & 0xffff)) *
          0x10000 + (e.bpOffset & 0xffff)) * 2 + (syscall ? 1 : 0);
  let rules = rulesByKind.get(key);
  if (!rules) rulesByKind.set(key, rules = { id: rulesByKind.size + 1, ...rowRules(e, syscall) });
  return rules;
}

/**
 * The instructions that take a row from `prev`'s rules (none: the FDE's first row) to `next`'s:
 * only what changed. Kept per pair, as the same few hundred pairs recur across a whole kernel.
 */
const changes = new Map<number, Uint8Array>();

function rowChange(prev: Rules | undefined, next: Rules): Uint8Array {
  const key = (prev?.id ?? 0) * 0x100000 + next.id;
  let bytes = changes.get(key);
  if (!bytes) {
    bytes = encode((b) => {
      if (!prev || !same(prev.cfa, next.cfa)) b.bytes(next.cfa);
      for (const [reg, rule] of next.regs) {
        if (!prev || !same(prev.regs.get(reg), rule)) b.bytes(rule);
      }
    });
    changes.set(key, bytes);
  }
  return bytes;
}

/** A code range and the ORC entries that cover it (the first may start before it). */
interface OrcRange {
  start: bigint;
  end: bigint;
  entries: OrcEntry[];
  /** The entries of the range are `entries[from..to]` (default: all of them). */
  from?: number;
  to?: number;
  syscall: (ip: bigint) => boolean;
}

/** The CFA program of one code range, a row per ORC entry (only what changed is restated). */
function orcFde(r: OrcRange): Fde {
  const body = (b: Bytes) => {
    let prev: Rules | undefined;
    let loc = r.start;
    const to = r.to ?? r.entries.length - 1;
    for (let k = r.from ?? 0; k <= to; k++) {
      const e = r.entries[k];
      const ip = e.ip < r.start ? r.start : e.ip;
      if (ip >= r.end) break;
      const rules = cachedRowRules(e, r.syscall(ip));
      if (rules === prev) continue; // the same row again: nothing to state
      if (ip > loc) {
        // The shortest advance that holds it (code alignment 1): most are under 64 bytes.
        const delta = Number(ip - loc);
        if (delta < 0x40) b.u8(CFA_ADVANCE_LOC | delta);
        else if (delta < 0x100) b.u8(CFA_ADVANCE_LOC1, delta);
        else if (delta < 0x10000) (b.u8(CFA_ADVANCE_LOC2), b.u16(delta));
        else (b.u8(CFA_ADVANCE_LOC4), b.u32(delta));
        loc = ip;
      }
      b.bytes(rowChange(prev, rules));
      prev = rules;
    }
  };
  return { start: r.start, end: r.end, body };
}

function same(a: Uint8Array | undefined, b: Uint8Array): boolean {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A kernel symbol for gdb: its name, runtime address and kallsyms type letter. */
export interface KernelSymbol {
  name: string;
  address: bigint;
  type: string;
}

/** Types of kallsyms symbols that are code (weak ones are nearly all functions). */
const CODE_TYPES = new Set(["T", "t", "W", "w"]);
/** Symbols gdb gets no use of: absolute values, undefined ones. */
const SKIPPED_TYPES = new Set(["A", "a", "U", "u"]);
/** Linker labels of section boundaries, not functions. */
const SECTION_LABEL = /^_.*(text|_start|_end|_begin)$/;
/** A symbol is sized to the next one, up to this (past it: a gap, size unknown). */
const MAX_SYMBOL_SIZE = 1n << 24n;

/**
 * A minimal ELF64 shared object for gdb: a `.debug_frame` section, and, when given, the kernel's
 * symbols. Symbols live in sections without contents (SHT_NOBITS) that cover them: code runs as
 * `.text` (gdb then takes them for functions, and looks them up by pc), data runs as `.data`.
 */
function gdbElf(
  machine: number,
  frame: Uint8Array | undefined,
  symbols: readonly KernelSymbol[] = [],
): Uint8Array {
  const enc = new TextEncoder();
  const syms = symbols.filter((x) => x.name && !SKIPPED_TYPES.has(x.type));
  // kallsyms lists symbols in address order already: sorting BigInts costs when not needed.
  if (syms.some((x, k) => k > 0 && x.address < syms[k - 1].address)) {
    syms.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
  }
  // Runs of code and of data, in address order: one section each, ending where the next begins.
  const runs: { code: boolean; start: bigint; end: bigint }[] = [];
  const runOf = new Int32Array(syms.length);
  syms.forEach((x, k) => {
    const code = CODE_TYPES.has(x.type);
    const last = runs.at(-1);
    if (last && last.code === code) last.end = x.address;
    else {
      if (last) last.end = x.address;
      runs.push({ code, start: x.address, end: x.address });
    }
    runOf[k] = runs.length - 1;
  });
  const lastRun = runs.at(-1);
  if (lastRun && syms.length) lastRun.end = syms[syms.length - 1].address + 1n;
  for (const r of runs) if (r.end <= r.start) r.end = r.start + 1n;

  const names = new Bytes(syms.length * 24 + 16);
  names.u8(0);
  const nameAt = (text: string) => {
    const at = names.length;
    // Symbol names are ASCII: one byte per character, without an encoder call each.
    let ascii = true;
    for (let i = 0; i < text.length && ascii; i++) ascii = text.charCodeAt(i) < 0x80;
    if (ascii) {
      names.ascii(text);
    } else names.bytes(enc.encode(text));
    names.u8(0);
    return at;
  };
  // Local symbols first, as ELF wants (sh_info: the first global one).
  const symtab = new Bytes((syms.length + 1) * 24);
  symtab.bytes(new Uint8Array(24));
  const local = (t: string) => t === t.toLowerCase() && t !== "w" && t !== "v";
  // Each symbol sized to the next higher address (aliases share it), as the kernel sizes them.
  const sizes: bigint[] = new Array(syms.length).fill(0n);
  for (let k = syms.length - 2, higher = syms.length - 1; k >= 0; k--) {
    if (syms[k + 1].address > syms[k].address) higher = k + 1;
    const gap = syms[higher].address - syms[k].address;
    // Section boundary labels (`_stext`, `__irqentry_text_start`) get no size: gdb then names
    // a pc by the function at the same address (`gic_handle_irq`), as the vmlinux's sizes make it.
    sizes[k] = gap > 0n && gap <= MAX_SYMBOL_SIZE && !SECTION_LABEL.test(syms[k].name) ? gap : 0n;
  }
  let firstGlobal = 1;
  for (const wantLocal of [true, false]) {
    syms.forEach((x, k) => {
      if (local(x.type) !== wantLocal) return;
      const size = sizes[k];
      const bind = wantLocal ? 0 : x.type === "W" || x.type === "V" ? 2 : 1;
      const kind = CODE_TYPES.has(x.type) ? 2 : 1; // STT_FUNC, STT_OBJECT
      symtab.u32(nameAt(x.name));
      symtab.u8((bind << 4) | kind, 0);
      symtab.u16(1 + runOf[k]);
      symtab.u64(x.address);
      symtab.u64(size);
      if (wantLocal) firstGlobal++;
    });
  }

  const shNames = new Bytes();
  shNames.u8(0);
  const shName = (text: string) => {
    const at = shNames.length;
    shNames.bytes(enc.encode(text));
    shNames.u8(0);
    return at;
  };
  const textName = shName(".text");
  const dataName = shName(".data");
  const frameName = shName(".debug_frame");
  const symtabName = shName(".symtab");
  const strtabName = shName(".strtab");
  const shstrtabName = shName(".shstrtab");

  const symtabData = syms.length ? symtab.view : undefined;
  const strtabData = names.view;
  // Contents after the 64-byte header, each 8-aligned; then the section headers.
  const contents = (frame?.length ?? 0) + (symtabData?.length ?? 0) + strtabData.length;
  const b = new Bytes(contents + 64 * (runs.length + 16) + 256);
  b.bytes(new Uint8Array(64));
  const place = (data: Uint8Array) => {
    while (b.length % 8) b.u8(0);
    const at = b.length;
    b.bytes(data);
    return at;
  };
  const frameAt = frame ? place(frame) : 0;
  const symtabAt = symtabData ? place(symtabData) : 0;
  const strtabAt = symtabData ? place(strtabData) : 0;
  const shstrtab = shNames.data;
  const shstrtabAt = place(shstrtab);
  while (b.length % 8) b.u8(0);
  const shAt = b.length;
  const section = (
    name: number,
    type: number,
    flags: number,
    addr: bigint,
    offset: number,
    size: bigint | number,
    link: number,
    info: number,
    align: number,
    entsize: number,
  ) => {
    b.u32(name);
    b.u32(type);
    b.u64(BigInt(flags));
    b.u64(addr);
    b.u64(BigInt(offset));
    b.u64(BigInt(size));
    b.u32(link);
    b.u32(info);
    b.u64(BigInt(align));
    b.u64(BigInt(entsize));
  };
  section(0, 0, 0, 0n, 0, 0, 0, 0, 0, 0);
  for (const r of runs) {
    // SHT_NOBITS; code: SHF_ALLOC|SHF_EXECINSTR, data: SHF_ALLOC|SHF_WRITE.
    section(
      r.code ? textName : dataName,
      8,
      r.code ? 6 : 3,
      r.start,
      0,
      r.end - r.start,
      0,
      0,
      1,
      0,
    );
  }
  let count = 1 + runs.length;
  if (frame) {
    section(frameName, 1, 0, 0n, frameAt, frame.length, 0, 0, 8, 0); // SHT_PROGBITS
    count++;
  }
  if (symtabData) {
    // .symtab (SHT_SYMTAB) links to .strtab, the next section.
    section(symtabName, 2, 0, 0n, symtabAt, symtabData.length, count + 1, firstGlobal, 8, 24);
    section(strtabName, 3, 0, 0n, strtabAt, strtabData.length, 0, 0, 1, 0);
    count += 2;
  }
  section(shstrtabName, 3, 0, 0n, shstrtabAt, shstrtab.length, 0, 0, 1, 0);
  count++;

  const out = b.view;
  const h = new DataView(out.buffer, out.byteOffset, out.byteLength);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  // With the kernel's symbols it is gdb's executable (ET_EXEC: never relocated as a PIE would
  // be); else a library.
  h.setUint16(16, syms.length ? 2 : 3, true);
  h.setUint16(18, machine, true);
  h.setUint32(20, 1, true);
  h.setBigUint64(40, BigInt(shAt), true);
  h.setUint16(52, 64, true);
  h.setUint16(54, 56, true);
  h.setUint16(58, 64, true);
  h.setUint16(60, count, true);
  h.setUint16(62, count - 1, true);
  return out;
}

/** A file made for gdb: its name (what gdb is told) and bytes. */
export interface GdbFile {
  name: string;
  data: Uint8Array;
  /** gdb's executable (its symbol file), rather than a shared library. */
  exec?: boolean;
}

/**
 * Name of the generated executable when there is no vmlinux: a path on no file system, fetched
 * by gdb through `vFile` (the `target:` prefix whatever its sysroot).
 */
export const KERNEL_SYMBOLS_NAME = "target:/kdump-gdbserver/kernel-symbols-from-dump";

/**
 * What the server offers gdb beside the user's files: without a vmlinux, an executable of the
 * kernel's own symbols (kallsyms) and unwind tables (ORC on x86_64); with one, a library of
 * unwind tables for the code the vmlinux has none for. Undefined when the dump has neither.
 */
export function kernelFileForGdb(kernel: Kernel): GdbFile | undefined {
  const data = kernel.dump.arch === "x86_64"
    ? kernelEntryUnwindElf(kernel)
    : kernelEntryUnwindElfArm64(kernel);
  if (!data) return undefined;
  const exec = !kernel.vmlinux && (kernel.kallsyms()?.size ?? 0) > 0;
  return exec ? { name: KERNEL_SYMBOLS_NAME, data, exec } : { name: UNWIND_LIBRARY_NAME, data };
}

/**
 * The kernel's own symbols (kallsyms) for gdb, when it has no vmlinux to read them from; then gdb
 * names frames, `info symbol` and `break FUNCTION` work from the dump alone.
 */
function kallsymsForGdb(kernel: Kernel): KernelSymbol[] | undefined {
  if (kernel.vmlinux) return undefined;
  const ks = kernel.kallsyms();
  if (!ks) return undefined;
  const out = [...ks.entries()];
  return out.length ? out : undefined;
}

/**
 * The kernel's functions, by the code symbols of kallsyms: in its text and its init text (the boot
 * CPU's idle task still has frames there), each start once (symbols come in address order;
 * aliases keep the first name), with the end of the area.
 */
function kernelFunctions(
  kernel: Kernel,
  symbols: readonly KernelSymbol[],
): { hi: bigint; starts: KernelSymbol[] }[] {
  const out: { hi: bigint; starts: KernelSymbol[] }[] = [];
  for (const [from, to] of [["_stext", "_etext"], ["_sinittext", "_einittext"]]) {
    const lo = kernel.symbol(from);
    const hi = kernel.symbol(to);
    if (lo === undefined || hi === undefined || hi <= lo) continue;
    const starts: KernelSymbol[] = [];
    for (const x of symbols) {
      if (!CODE_TYPES.has(x.type) || x.address < lo || x.address >= hi) continue;
      if (starts.length && starts[starts.length - 1].address === x.address) continue;
      starts.push(x);
    }
    if (starts.length) out.push({ hi, starts });
  }
  return out;
}

/**
 * Without a vmlinux gdb has no call frame information at all: one FDE per function of the kernel
 * text, from the ORC entries that cover it (the kernel's own unwinder reads the same), so gdb's
 * DWARF unwinder walks every kernel stack instead of guessing from prologues. The entry code
 * keeps its user-mode boundary (the syscall entries' registers are the user's).
 */
function allTextRanges(
  kernel: Kernel,
  orc: NonNullable<ReturnType<typeof orcTable>>,
  symbols: readonly KernelSymbol[],
): OrcRange[] {
  const ranges: OrcRange[] = [];
  for (const { hi, starts } of kernelFunctions(kernel, symbols)) {
    const entries = orc.entriesIn(starts[0].address, hi);
    if (!entries.length) continue;
    let e = 0;
    for (let k = 0; k < starts.length; k++) {
      const start = starts[k].address;
      const end = k + 1 < starts.length ? starts[k + 1].address : hi;
      // The entry in force at `start` (the last one at or below it), then those inside.
      while (e + 1 < entries.length && entries[e + 1].ip <= start) e++;
      if (entries[e].ip >= end) continue; // no entry reaches this range
      let last = e;
      while (last + 1 < entries.length && entries[last + 1].ip < end) last++;
      const syscall = SYSCALL_ENTRY.test(starts[k].name);
      ranges.push({ start, end, entries, from: e, to: last, syscall: () => syscall });
    }
  }
  return ranges.sort((a, b) => (a.start < b.start ? -1 : 1));
}

/**
 * The generated ELF file for a dumped x86_64 kernel (absolute, KASLR-relocated addresses, so gdb
 * loads it at offset 0), or undefined when the dump has no ORC tables or entry-code symbols.
 */
export function kernelEntryUnwindElf(kernel: Kernel): Uint8Array | undefined {
  if (kernel.dump.arch !== "x86_64") return undefined;
  const symbols = kallsymsForGdb(kernel);
  const orc = orcTable(kernel);
  const start = kernel.symbol("__entry_text_start");
  const end = kernel.symbol("__entry_text_end");
  if (!orc || start === undefined || end === undefined || end <= start) {
    return symbols ? gdbElf(62, undefined, symbols) : undefined;
  }
  const syscall = (ip: bigint) => SYSCALL_ENTRY.test(symbolAt(kernel, ip)?.name ?? "");
  const everyFunction = symbols ? allTextRanges(kernel, orc, symbols) : [];
  const ranges: OrcRange[] = everyFunction.length
    ? everyFunction
    : [{ start, end, entries: orc.entriesIn(start, end), syscall }];
  // With a vmlinux (its DWARF covers the C code), only the assembly outside .entry.text besides.
  for (const name of everyFunction.length ? [] : EXTRA_FUNCTIONS) {
    const at = kernel.symbol(name);
    if (at === undefined || (at >= start && at < end)) continue;
    const hit = symbolAt(kernel, at);
    if (!hit || hit.offset !== 0 || hit.size > 16384) continue;
    const fnEnd = at + BigInt(hit.size);
    ranges.push({ start: at, end: fnEnd, entries: orc.entriesIn(at, fnEnd), syscall });
  }
  ranges.sort((a, b) => (a.start < b.start ? -1 : 1));
  const fdes = ranges.map(orcFde);
  // Any user-space pc is the outermost frame: gdb has no user symbols or unwind data in kernel
  // mode, and guessing there reads the user stack as kernel frames.
  fdes.push({ start: 0n, end: USER_END, body: encode((b) => b.u8(CFA_UNDEFINED, RIP)) });
  const initial = encode((b) => {
    b.u8(CFA_DEF_CFA), b.uleb(RSP), b.uleb(8);
    b.u8(CFA_OFFSET_EXT_SF), b.uleb(RIP), b.sleb(1);
  });
  return gdbElf(62, debugFrame(RIP, initial, fdes), symbols);
}

// arm64 DWARF registers: x0–x30 are 0–30, sp 31, pc 32 (used as the return address column, so
// the caller's x30 and pc can differ, as they do across an exception).
const A64_FP = 29;
const A64_LR = 30;
const A64_SP = 31;
const A64_PC = 32;
/** sizeof(struct pt_regs) of Linux 6.1 arm64, when BTF does not say. */
const A64_PT_REGS_SIZE = 336;
/** End of the arm64 user half (TTBR0 addresses, 52-bit VA included). */
const A64_USER_END = 0x0010000000000000n;

/**
 * The same for arm64, from symbols alone (arm64 has no ORC): the exception entries from user mode
 * (`el0t_*`) are outermost; those from the kernel (`el1h_*`, `el1t_*`) run with sp at the
 * `struct pt_regs` they saved, so the interrupted pc, sp and registers are read from it;
 * `call_on_irq_stack` leaves a frame record at x29 on the task stack before it switches stacks.
 */
export function kernelEntryUnwindElfArm64(kernel: Kernel): Uint8Array | undefined {
  if (kernel.dump.arch !== "aarch64") return undefined;
  const ptRegs = kernel.btf?.structSize("pt_regs") ?? A64_PT_REGS_SIZE;
  const fdes: Fde[] = [];
  const fn = (name: string): { start: bigint; end: bigint } | undefined => {
    const at = kernel.symbol(name);
    if (at === undefined) return undefined;
    const hit = symbolAt(kernel, at);
    if (!hit || hit.offset !== 0 || hit.size > 16384) return undefined;
    return { start: at, end: at + BigInt(hit.size) };
  };
  const savedAt = (b: Bytes, r: number, offset: number) => {
    b.u8(CFA_OFFSET_EXT_SF), b.uleb(r), b.sleb(offset / -8);
  };
  for (const el of ["el0t", "el1t", "el1h"]) {
    for (const width of ["64", "32"]) {
      for (const kind of ["sync", "irq", "fiq", "error"]) {
        const r = fn(`${el}_${width}_${kind}`);
        if (!r) continue;
        const body = encode((b) => {
          if (el === "el0t") {
            b.u8(CFA_DEF_CFA), b.uleb(A64_SP), b.uleb(0);
            b.u8(CFA_UNDEFINED, A64_PC);
            return;
          }
          b.u8(CFA_DEF_CFA), b.uleb(A64_SP), b.uleb(ptRegs);
          for (let i = 0; i <= 30; i++) savedAt(b, i, i * 8 - ptRegs);
          savedAt(b, A64_SP, 31 * 8 - ptRegs);
          savedAt(b, A64_PC, 32 * 8 - ptRegs);
        });
        fdes.push({ ...r, body });
      }
    }
  }
  // The first frames of the boot and secondary CPUs' idle tasks, and of new tasks.
  for (const name of ["__primary_switched", "__secondary_switched", "ret_from_fork"]) {
    const r = fn(name);
    if (!r) continue;
    fdes.push({
      ...r,
      body: encode((
        b,
      ) => (b.u8(CFA_DEF_CFA), b.uleb(A64_SP), b.uleb(0), b.u8(CFA_UNDEFINED, A64_PC))),
    });
  }
  const irq = fn("call_on_irq_stack");
  if (irq) {
    fdes.push({
      ...irq,
      body: encode((b) => {
        b.u8(CFA_DEF_CFA), b.uleb(A64_FP), b.uleb(16);
        savedAt(b, A64_FP, -16);
        savedAt(b, A64_LR, -8);
        savedAt(b, A64_PC, -8);
      }),
    });
  }
  if (!fdes.length) return undefined;
  const symbols = kallsymsForGdb(kernel);
  if (symbols) {
    // A loop, not push(...): a large kernel has more functions than V8 passes as arguments.
    for (const f of arm64FrameRecordFdes(kernel, symbols, new Set(fdes.map((f) => f.start)))) {
      fdes.push(f);
    }
  }
  fdes.push({
    start: 0n,
    end: A64_USER_END,
    body: encode((b) => b.u8(CFA_UNDEFINED, A64_PC)),
  });
  fdes.sort((a, b) => (a.start < b.start ? -1 : 1));
  // A normal frame: the caller's pc is x30, sp is the CFA (the sp at entry).
  const initial = encode((b) => {
    b.u8(CFA_DEF_CFA), b.uleb(A64_SP), b.uleb(0);
    b.u8(0x09), b.uleb(A64_PC), b.uleb(A64_LR); // DW_CFA_register pc, x30
  });
  return gdbElf(183, debugFrame(A64_PC, initial, fdes), symbols);
}

/** Instructions of a function's start looked at for its frame record. */
const A64_PROLOGUE_INSNS = 32;

/**
 * Without a vmlinux an arm64 kernel has no unwind tables at all (no ORC, no DWARF): one FDE per
 * function from its own prologue, read from the dump. The kernel is built with frame pointers,
 * and GCC sets up the frame record one of two ways, with ftrace's `mov x9, x30; nop`, `paciasp`
 * and other instructions interleaved:
 * - `stp x29, x30, [sp, #-N]!` then `mov x29, sp`;
 * - `sub sp, sp, #N`, `stp x29, x30, [sp, #M]`, then `add x29, sp, #M`.
 * Shrink-wrapped functions set it up after a fast path that returns without one: the search goes
 * on past conditional branches and `ret`s. The rules follow each step (CFA = the sp at entry, from sp, then from x29; x29 and the return
 * address saved in the record). A function with neither in its first instructions (a leaf) gets
 * no FDE: gdb's own prologue analysis takes it, as before. Epilogues are not described: a stop
 * between the record's restore and the `ret` would unwind wrongly, which return addresses never
 * are.
 */
function arm64FrameRecordFdes(
  kernel: Kernel,
  symbols: readonly KernelSymbol[],
  taken: Set<bigint>,
): Fde[] {
  const mem = kernel.memory;
  if (!mem) return [];
  const fdes: Fde[] = [];
  const code = new Uint8Array(A64_PROLOGUE_INSNS * 4);
  const view = new DataView(code.buffer);
  for (const { hi, starts } of kernelFunctions(kernel, symbols)) {
    for (let k = 0; k < starts.length; k++) {
      const start = starts[k].address;
      const end = k + 1 < starts.length ? starts[k + 1].address : hi;
      if (taken.has(start) || end - start < 8n) continue;
      const n = Math.min(code.length, Number(end - start)) & ~3;
      if (mem.read(start, code.subarray(0, n)).bytes !== n) continue;
      const rows = arm64PrologueRows(view, n / 4);
      if (!rows.length) continue;
      fdes.push({
        start,
        end,
        body: (b: Bytes) => {
          let loc = 0;
          for (const row of rows) {
            const delta = row.at - loc;
            if (delta < 0x40) b.u8(CFA_ADVANCE_LOC | delta);
            else b.u8(CFA_ADVANCE_LOC1, delta);
            loc = row.at;
            row.write(b);
          }
        },
      });
    }
  }
  return fdes;
}

/** The rows of one arm64 prologue: from byte `at` of the function on, `write`'s rules hold. */
function arm64PrologueRows(
  code: DataView,
  count: number,
): { at: number; write: (b: Bytes) => void }[] {
  const rows: { at: number; write: (b: Bytes) => void }[] = [];
  const savedAt = (b: Bytes, r: number, offset: number) => {
    b.u8(CFA_OFFSET_EXT_SF), b.uleb(r), b.sleb(offset / -8);
  };
  let frame = 0; // bytes below the entry sp allocated so far
  let record: number | undefined; // the record's offset from the sp, once stored
  for (let i = 0; i < count; i++) {
    const insn = code.getUint32(i * 4, true);
    const after = (i + 1) * 4;
    const imm12 = ((insn >>> 10) & 0xfff) << ((insn >>> 22) & 1 ? 12 : 0);
    if (record === undefined && ((insn & 0xff8003ff) >>> 0) === 0xd10003ff) {
      // sub sp, sp, #imm
      frame += imm12;
      const size = frame;
      rows.push({ at: after, write: (b) => (b.u8(CFA_DEF_CFA), b.uleb(A64_SP), b.uleb(size)) });
    } else if (record === undefined && ((insn & 0xffc07fff) >>> 0) === 0xa9807bfd) {
      // stp x29, x30, [sp, #-N]!
      frame += -(((insn >>> 15) & 0x7f) << 25 >> 25) * 8;
      record = 0;
      const size = frame;
      rows.push({
        at: after,
        write: (b) => {
          b.u8(CFA_DEF_CFA), b.uleb(A64_SP), b.uleb(size);
          savedAt(b, A64_FP, -size), savedAt(b, A64_LR, 8 - size), savedAt(b, A64_PC, 8 - size);
        },
      });
    } else if (record === undefined && frame > 0 && ((insn & 0xffc07fff) >>> 0) === 0xa9007bfd) {
      // stp x29, x30, [sp, #M]
      record = (((insn >>> 15) & 0x7f) << 25 >> 25) * 8;
      const at = record - frame;
      rows.push({
        at: after,
        write: (b) => {
          savedAt(b, A64_FP, at), savedAt(b, A64_LR, at + 8), savedAt(b, A64_PC, at + 8);
        },
      });
    } else if (
      record !== undefined && ((insn & 0xff8003ff) >>> 0) === 0x910003fd && imm12 === record
    ) {
      // mov x29, sp / add x29, sp, #M: the CFA from the frame pointer from here on.
      const fromFp = frame - record;
      rows.push({ at: after, write: (b) => (b.u8(CFA_DEF_CFA), b.uleb(A64_FP), b.uleb(fromFp)) });
      break;
    } else if (((insn & 0xfc000000) >>> 0) === 0x94000000) {
      break; // a call before any record: x30 is kept elsewhere, a frame we do not follow
    }
  }
  return record === undefined ? [] : rows;
}
