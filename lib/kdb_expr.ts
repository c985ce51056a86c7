/**
 * kdb's argument language: numbers as the kernel's `kstrtoul(…, 0)` reads them, address
 * expressions (`symbol`, `0x…`, `$ENV`, `symbol+0x10`, `symbol + 16`), symbol names printed as
 * `name+0x10`, and kdb's numbered diagnostics (`diag: -21: Invalid address`).
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import { moduleSymbolNear, moduleSymbolsNamed } from "./modules.ts";

/** kdb's diagnostics (include/linux/kdb.h), by name. */
export const KdbDiag = {
  NOTFOUND: -1,
  ARGCOUNT: -2,
  BADWIDTH: -3,
  BADRADIX: -4,
  NOTENV: -5,
  NOENVVALUE: -6,
  NOTIMP: -7,
  TOOMANYBPT: -10,
  DUPBPT: -12,
  BPTNOTFOUND: -13,
  BADINT: -15,
  INVADDRFMT: -16,
  BADREG: -17,
  BADCPUNUM: -18,
  BADLENGTH: -19,
  BADADDR: -21,
} as const;

const DIAG_TEXT = new Map<number, string>([
  [KdbDiag.NOTFOUND, "Command Not Found"],
  [KdbDiag.ARGCOUNT, "Improper argument count, see usage."],
  [
    KdbDiag.BADWIDTH,
    "Illegal value for BYTESPERWORD use 1, 2, 4 or 8, 8 is only allowed on 64 bit systems",
  ],
  [KdbDiag.BADRADIX, "Illegal value for RADIX use 8, 10 or 16"],
  [KdbDiag.NOTENV, "Cannot find environment variable"],
  [KdbDiag.NOENVVALUE, "Environment variable should have value"],
  [KdbDiag.NOTIMP, "Command not implemented"],
  [KdbDiag.TOOMANYBPT, "Too many breakpoints defined"],
  [KdbDiag.DUPBPT, "Duplicate breakpoint address"],
  [KdbDiag.BPTNOTFOUND, "Breakpoint not found"],
  [KdbDiag.BADINT, "Illegal numeric value"],
  [KdbDiag.INVADDRFMT, "Invalid symbolic address format"],
  [KdbDiag.BADREG, "Invalid register name"],
  [KdbDiag.BADCPUNUM, "Invalid cpu number"],
  [KdbDiag.BADLENGTH, "Invalid length field"],
  [KdbDiag.BADADDR, "Invalid address"],
]);

/** kdb's line for a diagnostic: `diag: -2: Improper argument count, see usage.` */
export function diagText(diag: number): string {
  const text = DIAG_TEXT.get(diag);
  return text === undefined ? `Unknown diag ${-diag}` : `diag: ${diag}: ${text}`;
}

/** A command failed with a kdb diagnostic. */
export class KdbError extends Error {
  constructor(readonly diag: number, message = diagText(diag)) {
    super(message);
  }
}

const U64 = (1n << 64n) - 1n;

/**
 * A number as `kstrtoul(s, 0)` reads it: `0x…` hex, a leading `0` octal, else decimal; a `+` may
 * lead, and with `signed` a `-`. Undefined for anything else (no trailing text, at most 64 bits).
 */
export function parseKernelNumber(s: string, signed = false): bigint | undefined {
  const m = /^([+-]?)(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))$/.exec(s);
  if (!m || (m[1] === "-" && !signed)) return undefined;
  const v = m[2] !== undefined
    ? BigInt("0x" + m[2])
    : m[3] !== undefined
    ? BigInt("0o" + (m[3].slice(1) || "0"))
    : BigInt(m[4]);
  if (v > U64) return undefined;
  return m[1] === "-" ? -v : v;
}

/** A symbol covering an address. */
export interface SymbolHit {
  name: string;
  /** Offset of the address into the symbol. */
  offset: number;
  /** Size of the symbol (0 when unknown). */
  size: number;
}

/**
 * The symbol covering an address, as `kdbnearsym` finds it through `kallsyms_lookup`: nothing
 * below 4096; inside the kernel image (`_stext` to `_end`) the dump's kallsyms, outside it a
 * loaded module's symbols, named `[module]symbol` as kdb prints them. Where the image's bounds
 * are not known (kallsyms without data symbols), the nearest kallsyms symbol up to 8 MiB away.
 */
export function symbolAt(kernel: Kernel, address: bigint): SymbolHit | undefined {
  if (address < 4096n) return undefined;
  const start = kernel.symbol("_stext");
  const end = kernel.symbol("_end");
  const inImage = start !== undefined && end !== undefined
    ? address >= start && address < end
    : undefined;
  if (inImage !== true) {
    const m = moduleSymbolNear(kernel, address);
    if (m) return { name: `[${m.module}]${m.name}`, offset: m.offset, size: m.size };
    if (inImage === false) return undefined;
  }
  const hit = kernel.kallsyms()?.lookup(address);
  if (!hit || hit.offset > 8 * 1024 * 1024) return undefined;
  return hit;
}

/** `0x%016lx`, kdb's `kdb_machreg_fmt0` on 64-bit machines. */
export function hex16(v: bigint): string {
  return "0x" + (v & U64).toString(16).padStart(16, "0");
}

/** `name+0x10` (no offset when the address is the symbol's start). */
export function symbolText(hit: SymbolHit, withSize = false): string {
  let s = hit.name;
  if (hit.offset !== 0) s += `+0x${hit.offset.toString(16)}`;
  if (withSize) s += `/0x${hit.size.toString(16)}`;
  return s;
}

/** kdb_symbol_print with KDB_SP_DEFAULT: `0x%016lx (name+0x10)`, or the value alone. */
export function valueAndSymbol(kernel: Kernel, value: bigint): string {
  const hit = symbolAt(kernel, value);
  return hit ? `${hex16(value)} (${symbolText(hit)})` : hex16(value);
}

/** Where an address expression ended. */
export interface AddressArg {
  value: bigint;
  /** Index of the first argument after the expression. */
  next: number;
}

/**
 * Evaluate the address expression at `args[at]` as `kdbgetaddrarg` does: a symbol, else a
 * number, or `$NAME` (an environment variable), optionally followed by `+`/`-` and a number
 * (`sym+0x10` or `sym + 0x10`). `%reg` is not implemented (as in kdb).
 * @throws KdbError with kdb's diagnostic
 */
export function addressArg(
  kernel: Kernel,
  args: readonly string[],
  at: number,
  env: (name: string) => string | undefined,
): AddressArg {
  if (at >= args.length) throw new KdbError(KdbDiag.ARGCOUNT);
  const word = args[at];
  let next = at + 1;
  const cut = word.search(/[+-]/);
  const name = cut >= 0 ? word.slice(0, cut) : word;
  const sign = cut >= 0 ? word[cut] : undefined;
  let value: bigint;
  if (name.startsWith("$")) {
    const v = env(name.slice(1));
    if (v === undefined) throw new KdbError(KdbDiag.NOTENV);
    if (v === "") throw new KdbError(KdbDiag.NOENVVALUE);
    const n = parseKernelNumber(v);
    if (n === undefined) throw new KdbError(KdbDiag.BADINT);
    value = n;
  } else if (name.startsWith("%")) {
    throw new KdbError(KdbDiag.NOTIMP);
  } else {
    // kdb asks kallsyms_lookup_name, which looks in the loaded modules after the kernel (no
    // symbol starts with a digit: numbers skip the walk of every module's symbols).
    const sym = name === "" ? undefined : kernel.symbol(name) ??
      (/^[0-9]/.test(name) ? undefined : moduleSymbolsNamed(kernel, name)[0]?.value);
    if (sym !== undefined) value = sym;
    else {
      const n = parseKernelNumber(name);
      if (n === undefined) throw new KdbError(KdbDiag.BADINT);
      value = n;
    }
  }
  let positive: boolean;
  let offsetText: string;
  if (sign !== undefined) {
    positive = sign === "+";
    offsetText = word.slice(cut + 1);
  } else {
    if (
      next >= args.length || (args[next] !== "+" && args[next] !== "-" &&
        !/^[+-]/.test(args[next]))
    ) {
      return { value, next };
    }
    // kdb takes a word starting with + or - as the operator alone (the rest of it is not
    // read) and the offset from the word after it: `sym + 16`; `sym -3` has no offset.
    positive = args[next][0] === "+";
    next++;
    if (next >= args.length) throw new KdbError(KdbDiag.INVADDRFMT);
    offsetText = args[next++];
  }
  const off = parseKernelNumber(offsetText);
  if (off === undefined) throw new KdbError(KdbDiag.BADINT);
  value = (positive ? value + off : value - off) & U64;
  return { value, next };
}
