/**
 * kdb's memory display commands over a dump: `md`, `mdWcN` (e.g. `md4c8`), `mds` (symbolic),
 * `mdp` (physical) and `mdr` (raw bytes), with kdb's line layout (`0x%016lx ` address, words,
 * printable bytes), zero suppression and the MDCOUNT / RADIX / BYTESPERWORD environment. A word
 * that cannot be read ends the command with one line saying why.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import {
  addressArg,
  hex16,
  KdbDiag,
  KdbError,
  parseKernelNumber,
  symbolAt,
  symbolText,
} from "./kdb_expr.ts";

/** Most bytes one md command shows. */
export const MAX_MD_BYTES = 65536;

/** What `md` with no arguments continues from. */
export interface MdState {
  lastAddr: bigint;
  lastRadix: number;
  lastBytesPerWord: number;
  lastRepeat: number;
}

/** A fresh {@link MdState}. */
export function newMdState(): MdState {
  return { lastAddr: 0n, lastRadix: 16, lastBytesPerWord: 0, lastRepeat: 0 };
}

/** Reads words for the md commands. */
interface WordReader {
  /** A little-endian word, or a reason it cannot be read. */
  read(addr: bigint, size: number): bigint | string;
}

function virtualReader(kernel: Kernel): WordReader {
  const buf = new Uint8Array(8);
  const view = new DataView(buf.buffer);
  return {
    read(addr, size) {
      const mem = kernel.memory;
      const out = buf.subarray(0, size);
      if (!mem) return "kernel addresses cannot be translated in this dump";
      const r = mem.read(addr, out);
      if (r.error) return r.error;
      return wordOf(view, size);
    },
  };
}

function physicalReader(kernel: Kernel): WordReader {
  const buf = new Uint8Array(8);
  const view = new DataView(buf.buffer);
  return {
    read(addr, size) {
      if (addr > BigInt(Number.MAX_SAFE_INTEGER)) return "beyond physical memory";
      const r = kernel.phys.read(Number(addr), buf.subarray(0, size));
      if (r.bytes !== size) return kernel.phys.describe(r.status);
      return wordOf(view, size);
    },
  };
}

function wordOf(view: DataView, size: number): bigint {
  switch (size) {
    case 1:
      return BigInt(view.getUint8(0));
    case 2:
      return BigInt(view.getUint16(0, true));
    case 4:
      return BigInt(view.getUint32(0, true));
    default:
      return view.getBigUint64(0, true);
  }
}

/** A failed read, kdb's way (`kdb_getarea_size: Bad address 0x…`), with our reason. */
function badAddress(addr: bigint, why: string): KdbError {
  return new KdbError(
    KdbDiag.BADADDR,
    `kdb_getarea_size: Bad address 0x${addr.toString(16)} (${why})`,
  );
}

/** Environment access for md. */
export type EnvGetter = (name: string) => string | undefined;

function envInt(env: EnvGetter, name: string): number | undefined {
  const v = env(name);
  if (v === undefined || v === "") return undefined;
  const n = parseKernelNumber(v);
  return n === undefined ? undefined : Number(n);
}

function printable(b: number): string {
  return b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".";
}

/** A word's bytes in memory order as kdb's ASCII column shows them (`.` for the unprintable). */
export function printableWord(w: bigint, bytesPerWord: number): string {
  let chars = "";
  for (let j = 0; j < bytesPerWord; j++) chars += printable(Number((w >> BigInt(8 * j)) & 0xffn));
  return chars;
}

/**
 * Run one md-family command. `argv0` is the command word as typed (`md`, `md4c8`, `mds`, `mdp`,
 * `mdr`).
 * @throws KdbError with kdb's diagnostic (NOTFOUND for a word that is not an md command)
 */
export function mdCommand(
  kernel: Kernel,
  argv0: string,
  args: readonly string[],
  state: MdState,
  env: EnvGetter,
  out: (line: string) => void,
): void {
  let mdcount = envInt(env, "MDCOUNT") ?? 8;
  let radix = envInt(env, "RADIX") ?? 16;
  let bytesPerWord = envInt(env, "BYTESPERWORD") ?? 8;
  let repeat = Math.trunc(mdcount * 16 / bytesPerWord);
  let valid = false;
  let raw = false;
  let phys = false;
  const argc = args.length;

  if (argv0 === "mdr") {
    if (argc === 2 || (argc === 0 && state.lastAddr !== 0n)) valid = raw = true;
    else throw new KdbError(KdbDiag.ARGCOUNT);
  } else if (/^md[0-9]/.test(argv0)) {
    bytesPerWord = argv0.charCodeAt(2) - 48;
    if (bytesPerWord === 0) bytesPerWord = state.lastBytesPerWord || 4;
    state.lastBytesPerWord = bytesPerWord;
    repeat = Math.trunc(mdcount * 16 / bytesPerWord);
    if (argv0.length === 3) valid = true;
    else if (argv0[3] === "c" && argv0.length > 4) {
      if (!/^[0-9]+$/.test(argv0.slice(4))) throw new KdbError(KdbDiag.BADINT);
      repeat = Number(argv0.slice(4));
      mdcount = Math.trunc((repeat * bytesPerWord + 15) / 16);
      valid = true;
    }
    state.lastRepeat = repeat;
  } else if (argv0 === "md" || argv0 === "mds") valid = true;
  else if (argv0 === "mdp") phys = valid = true;
  if (!valid) throw new KdbError(KdbDiag.NOTFOUND);

  let addr: bigint;
  if (argc === 0) {
    if (state.lastAddr === 0n) throw new KdbError(KdbDiag.ARGCOUNT);
    addr = state.lastAddr;
    radix = state.lastRadix;
    bytesPerWord = state.lastBytesPerWord || bytesPerWord;
    repeat = state.lastRepeat;
    mdcount = raw ? repeat : Math.trunc((repeat * bytesPerWord + 15) / 16);
  } else {
    const a = addressArg(kernel, args, 0, env);
    addr = a.value;
    const nextarg = a.next; // index of the count argument
    if (argc > nextarg + 2) throw new KdbError(KdbDiag.ARGCOUNT);
    if (argc > nextarg) {
      const v = parseKernelNumber(args[nextarg]);
      if (v !== undefined) {
        mdcount = Number(v);
        repeat = raw ? mdcount : Math.trunc(mdcount * 16 / bytesPerWord);
      }
    }
    if (argc > nextarg + 1) {
      const v = parseKernelNumber(args[nextarg + 1]);
      if (v !== undefined) radix = Number(v);
    }
  }
  const reader = phys ? physicalReader(kernel) : virtualReader(kernel);
  // One command shows at most MAX_MD_BYTES (kdb has a pager; a remote session has none, and a
  // monitor reply is built whole): `md` alone goes on from where it stopped.
  let capped = false;
  if (raw && mdcount > MAX_MD_BYTES) {
    mdcount = MAX_MD_BYTES;
    capped = true;
  }

  if (raw) {
    state.lastAddr = addr;
    let line = "";
    for (let i = 0; i < mdcount; i++) {
      const a = (addr + BigInt(i)) & 0xffffffffffffffffn;
      const w = reader.read(a, 1);
      if (typeof w === "string") {
        if (line) out(line);
        throw badAddress(a, w);
      }
      line += w.toString(16).padStart(2, "0");
    }
    out(line);
    state.lastAddr = addr + BigInt(mdcount);
    state.lastRepeat = mdcount;
    state.lastBytesPerWord = bytesPerWord;
    if (capped) out(`(mdr shows at most ${MAX_MD_BYTES} bytes at once)`);
    return;
  }

  const base = radix === 10 ? 10 : radix === 16 ? 16 : radix === 8 ? 8 : 0;
  if (base === 0) throw new KdbError(KdbDiag.BADRADIX);
  state.lastRadix = radix;
  if (![1, 2, 4, 8].includes(bytesPerWord)) throw new KdbError(KdbDiag.BADWIDTH);
  const width = bytesPerWord * 2;
  const fmt = (w: bigint) => {
    // kdb's `%16.16ld`: a word is an unsigned long (narrower ones zero-extended), so only
    // 8-byte words print negative in decimal.
    const v = base === 10 && bytesPerWord === 8 ? BigInt.asIntN(64, w) : w;
    const digits = (v < 0n ? -v : v).toString(base).padStart(width, "0");
    return (v < 0n ? "-" : "") + digits + " ";
  };
  state.lastRepeat = repeat;
  state.lastBytesPerWord = bytesPerWord;

  let symbolic = false;
  let nosect = 1;
  if (argv0 === "mds") {
    symbolic = true;
    bytesPerWord = 8;
    repeat = mdcount;
    nosect = envInt(env, "NOSECT") ?? 1;
  }
  void nosect; // kdb's section line needs module section data the dump does not describe
  const bpw = BigInt(bytesPerWord);
  addr &= ~(bpw - 1n);
  const num = symbolic ? 1 : 16 / bytesPerWord;
  if (repeat * bytesPerWord > MAX_MD_BYTES) {
    repeat = MAX_MD_BYTES / bytesPerWord;
    capped = true;
  }

  try {
    while (repeat > 0) {
      // Count the zero words from here, for zero suppression.
      let z = 0;
      for (let a = addr; z < repeat; a += bpw, z++) {
        const w = reader.read(a, bytesPerWord);
        if (typeof w === "string" || w !== 0n) break;
      }
      const n = Math.min(num, repeat);
      mdLine(kernel, reader, addr, symbolic, bytesPerWord, num, repeat, phys, fmt, out);
      addr += bpw * BigInt(n);
      repeat -= n;
      z = Math.trunc((z + num - 1) / num);
      if (z > 2) {
        const s = num * (z - 2);
        out(`${hex16(addr)}-${hex16(addr + bpw * BigInt(s) - 1n)} zero suppressed`);
        addr += bpw * BigInt(s);
        repeat -= s;
      }
    }
  } finally {
    state.lastAddr = addr;
  }
  if (capped) out(`(md shows at most ${MAX_MD_BYTES} bytes at once: md goes on)`);
}

/** One line of md output; throws when a word cannot be read (after printing what was read). */
function mdLine(
  kernel: Kernel,
  reader: WordReader,
  addr: bigint,
  symbolic: boolean,
  bytesPerWord: number,
  num: number,
  repeat: number,
  phys: boolean,
  fmt: (w: bigint) => string,
  out: (line: string) => void,
): void {
  let line = (phys ? "phys " : "") + hex16(addr) + " ";
  let chars = "";
  let i = 0;
  let failure: KdbError | undefined;
  const bpw = BigInt(bytesPerWord);
  for (; i < num && repeat-- > 0; i++) {
    const w = reader.read(addr, bytesPerWord);
    if (typeof w === "string") {
      failure = badAddress(addr, w);
      break;
    }
    line += fmt(w);
    const hit = symbolic ? symbolAt(kernel, w) : undefined;
    // kdb_md_line: a word no symbol covers shows its bytes, in `mds` too.
    if (hit) line += symbolText(hit);
    else chars += printableWord(w, bytesPerWord);
    addr += bpw;
  }
  if (i > 0 || !failure) {
    line += " ".repeat((num - i) * (2 * bytesPerWord + 1) + 1) + " " + chars;
    out(line);
  }
  if (failure) throw failure;
}
