/**
 * Kernel addresses as the kernel prints them (`func+0x16/0x20`): the dump's own kallsyms first
 * (the table the kernel itself used for its Call Trace), else the vmlinux's symbol table.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import { moduleSymbolAt } from "./modules.ts";

/** The symbol covering an address. */
export interface SymbolHit {
  name: string;
  /** Bytes from the symbol's start. */
  offset: number;
  /** Distance to the next symbol (the kernel's notion of a symbol's size). */
  size: number;
  /** The module it belongs to, for module code. */
  module?: string;
}

/** Sorted symbol addresses of a vmlinux, for kernels whose dump has no kallsyms. */
interface SortedSymbols {
  names: string[];
  addresses: bigint[];
}

const vmlinuxTables = new WeakMap<Kernel, SortedSymbols | null>();

function vmlinuxTable(kernel: Kernel): SortedSymbols | undefined {
  let t = vmlinuxTables.get(kernel);
  if (t === undefined) {
    t = null;
    const syms = kernel.vmlinux?.symbols();
    if (syms && syms.size) {
      const KERNEL_HALF = 0xffff000000000000n;
      const list = [...syms].filter(([, a]) => a >= KERNEL_HALF)
        .map(([n, a]): [string, bigint] => [n, a + kernel.kaslrOffset]);
      list.sort((x, y) => (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0));
      t = { names: list.map((x) => x[0]), addresses: list.map((x) => x[1]) };
    }
    vmlinuxTables.set(kernel, t);
  }
  return t ?? undefined;
}

/** The symbol at or below `address`, sized to the next higher one, or undefined. */
export function symbolAt(kernel: Kernel, address: bigint): SymbolHit | undefined {
  const ks = kernel.kallsyms();
  // Module code lies outside the core kernel's symbols (below the image on x86_64).
  if (address < (kernel.symbol("_stext") ?? 0n) || address >= (kernel.symbol("_end") ?? ~0n)) {
    const m = moduleSymbolAt(kernel, address);
    if (m) return m;
  }
  if (ks) return ks.lookup(address);
  const t = vmlinuxTable(kernel);
  if (!t) return undefined;
  const a = t.addresses;
  let lo = 0;
  let hi = a.length - 1;
  if (hi < 0 || address < a[0]) return undefined;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (a[mid] <= address) lo = mid;
    else hi = mid - 1;
  }
  while (lo > 0 && a[lo - 1] === a[lo]) lo--;
  let next = lo + 1;
  while (next < a.length && a[next] === a[lo]) next++;
  if (next >= a.length) return undefined;
  const size = Number(a[next] - a[lo]);
  if (size > 1 << 24) return undefined;
  return { name: t.names[lo], offset: Number(address - a[lo]), size };
}

/**
 * An address in the kernel's `%pS` style (`func+0x16/0x20`), or `%pB` style for a return address
 * (`returnAddress`): the symbol of the call instruction before it, which differs from `%pS`
 * when a call is the last instruction of a function (a call to a function that never returns).
 * Addresses no symbol covers print as hex.
 */
export function formatAddress(kernel: Kernel, address: bigint, returnAddress = false): string {
  const hit = symbolAt(kernel, returnAddress ? address - 1n : address);
  if (!hit) return `0x${address.toString(16)}`;
  const offset = hit.offset + (returnAddress ? 1 : 0);
  const mod = hit.module ? ` [${hit.module}]` : "";
  return `${hit.name}+0x${offset.toString(16)}/0x${hit.size.toString(16)}${mod}`;
}
