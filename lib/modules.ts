/**
 * Loaded kernel modules, read from the dump (the `modules` list, BTF layouts): where each one's
 * code lies, its own symbol table (`mod->kallsyms`, what `/proc/kallsyms` shows for it) and, on
 * x86_64, its ORC tables, so backtraces name and unwind frames in module code as the kernel does
 * (`fw_cfg_sysfs_probe+0x1c/0x2d0 [qemu_fw_cfg]`).
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { SymbolHit } from "./symbolize.ts";

/** One loaded module. */
export interface KernelModule {
  name: string;
  /** Address of its `struct module`. */
  address: bigint;
  /** Its core code: [textStart, textEnd). */
  textStart: bigint;
  textEnd: bigint;
  /**
   * All its loaded memory, [start, end) each: the whole core layout up to Linux 6.3, the text,
   * data, rodata and ro_after_init regions from 6.4 (init memory is freed after loading).
   */
  regions: { start: bigint; end: bigint }[];
  /** Its ORC tables (x86_64), when it has them. */
  orc?: { ipTable: bigint; orcTable: bigint; count: number };
  /** Function symbols sorted by address (from its kallsyms symtab). */
  symbols: { name: string; value: bigint }[];
}

/** No kernel has more modules loaded than this: a guard against a list that loops. */
const MAX_MODULES = 10000;
/** Symbols of one module read at most (a corrupt count must not cost gigabytes). */
const MAX_MODULE_SYMBOLS = 200000;

const cache = new WeakMap<Kernel, KernelModule[]>();

/** The kernel's loaded modules (empty when the dump lacks what finding them needs). */
export function kernelModules(kernel: Kernel): KernelModule[] {
  let mods = cache.get(kernel);
  if (!mods) {
    mods = [];
    try {
      readModules(kernel, mods);
    } catch {
      // A damaged module list only costs the names of module frames.
    }
    cache.set(kernel, mods);
  }
  return mods;
}

function readModules(kernel: Kernel, out: KernelModule[]): void {
  const mem = kernel.memory;
  const btf = kernel.btf;
  const head = kernel.symbol("modules");
  if (!mem || !btf || head === undefined) return;
  const m = (p: string) => btf.member("module", p);
  const list = m("list");
  const name = m("name");
  const kallsyms = m("kallsyms");
  if (!list || !name || !kallsyms) return;
  // Linux ≤ 6.3: core_layout; 6.4+: mem[MOD_TEXT] (the first of struct module_memory).
  const base = m("core_layout.base") ?? m("mem");
  const textSize = m("core_layout.text_size") ??
    (m("mem")
      ? {
        offset: m("mem")!.offset + (btf.member("module_memory", "size")?.offset ?? 8),
        size: 4,
        type: 0,
      }
      : undefined);
  if (!base || !textSize) return;
  const coreSize = m("core_layout.size");
  const memArray = m("mem");
  const memStride = btf.structSize("module_memory");
  const memSize = btf.member("module_memory", "size");
  const orcIp = m("arch.orc_unwind_ip");
  const orcTab = m("arch.orc_unwind");
  const orcNum = m("arch.num_orcs");
  let node = mem.readU64(head);
  for (let n = 0; node !== undefined && node !== head && n < MAX_MODULES; n++) {
    const mod = node - BigInt(list.offset);
    const textStart = mem.readU64(mod + BigInt(base.offset));
    const size = kernel.readU32(mod + BigInt(textSize.offset));
    const modName = mem.readCString(mod + BigInt(name.offset), name.size);
    if (textStart && size && modName) {
      const km: KernelModule = {
        name: modName,
        address: mod,
        textStart,
        textEnd: textStart + BigInt(size),
        regions: [],
        symbols: moduleSymbols(kernel, mem.readU64(mod + BigInt(kallsyms.offset))),
      };
      if (memArray && memStride && memSize) {
        // enum mod_mem_type: MOD_TEXT, MOD_DATA, MOD_RODATA, MOD_RO_AFTER_INIT come first.
        for (let i = 0; i < 4; i++) {
          const at = mod + BigInt(memArray.offset + i * memStride);
          const start = mem.readU64(at);
          const len = kernel.readU32(at + BigInt(memSize.offset));
          if (start && len) km.regions.push({ start, end: start + BigInt(len) });
        }
      } else {
        const len = coreSize ? kernel.readU32(mod + BigInt(coreSize.offset)) : undefined;
        km.regions.push({ start: textStart, end: textStart + BigInt(Math.max(len ?? 0, size)) });
      }
      if (orcIp && orcTab && orcNum) {
        const ipTable = mem.readU64(mod + BigInt(orcIp.offset));
        const orcTable = mem.readU64(mod + BigInt(orcTab.offset));
        const count = kernel.readU32(mod + BigInt(orcNum.offset));
        if (ipTable && orcTable && count) km.orc = { ipTable, orcTable, count };
      }
      out.push(km);
    }
    node = mem.readU64(node);
  }
}

/** Defined symbols of `struct mod_kallsyms` (symtab, num_symtab, strtab), sorted by address. */
function moduleSymbols(kernel: Kernel, ks: bigint | undefined): KernelModule["symbols"] {
  const mem = kernel.memory!;
  if (!ks) return [];
  const symtab = mem.readU64(ks);
  const num = kernel.readU32(ks + 8n);
  const strtab = mem.readU64(ks + 16n);
  if (!symtab || !num || !strtab || num > MAX_MODULE_SYMBOLS) return [];
  const bytes = new Uint8Array(num * 24);
  if (mem.read(symtab, bytes).error) return [];
  const v = new DataView(bytes.buffer);
  const out: KernelModule["symbols"] = [];
  for (let i = 0; i < num; i++) {
    const o = i * 24;
    const shndx = v.getUint16(o + 6, true);
    const value = v.getBigUint64(o + 8, true);
    if (shndx === 0 || value === 0n) continue; // undefined
    const nm = mem.readCString(strtab + BigInt(v.getUint32(o, true)), 256);
    // ARM's $x/$d mapping symbols are not functions.
    if (!nm || nm.startsWith("$")) continue;
    out.push({ name: nm, value });
  }
  out.sort((a, b) => (a.value < b.value ? -1 : a.value > b.value ? 1 : 0));
  return out;
}

/** Every loaded module's symbol called `name` (static names may repeat across modules). */
export function moduleSymbolsNamed(
  kernel: Kernel,
  name: string,
): { module: string; value: bigint }[] {
  const out: { module: string; value: bigint }[] = [];
  for (const m of kernelModules(kernel)) {
    for (const s of m.symbols) if (s.name === name) out.push({ module: m.name, value: s.value });
  }
  return out;
}

/** The module whose code covers an address. */
export function moduleAt(kernel: Kernel, address: bigint): KernelModule | undefined {
  return kernelModules(kernel).find((m) => address >= m.textStart && address < m.textEnd);
}

/** The module symbol covering an address, sized to the next symbol or the end of the code. */
export function moduleSymbolAt(kernel: Kernel, address: bigint): SymbolHit | undefined {
  const mod = moduleAt(kernel, address);
  return mod ? nearestSymbol(mod, address, mod.textStart, mod.textEnd) : undefined;
}

/**
 * The symbol at or below an address anywhere in a module's memory (code or data), as the
 * kernel's `kallsyms_lookup` finds it for kdb (`[qemu_fw_cfg]fw_cfg_sysfs_attr_raw`): only a
 * symbol of the same region names it.
 */
export function moduleSymbolNear(kernel: Kernel, address: bigint): SymbolHit | undefined {
  for (const mod of kernelModules(kernel)) {
    const r = mod.regions.find((r) => address >= r.start && address < r.end);
    if (r) return nearestSymbol(mod, address, r.start, r.end);
  }
  return undefined;
}

/** The module's last symbol at or below `address` in [start, end), sized to the next one. */
function nearestSymbol(
  mod: KernelModule,
  address: bigint,
  start: bigint,
  end: bigint,
): SymbolHit | undefined {
  const s = mod.symbols;
  let lo = 0;
  let hi = s.length - 1;
  if (hi < 0 || address < s[0].value) return undefined;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (s[mid].value <= address) lo = mid;
    else hi = mid - 1;
  }
  if (s[lo].value < start) return undefined;
  let next = lo + 1;
  while (next < s.length && s[next].value === s[lo].value) next++;
  const stop = next < s.length && s[next].value < end ? s[next].value : end;
  return {
    name: s[lo].name,
    offset: Number(address - s[lo].value),
    size: Number(stop - s[lo].value),
    module: mod.name,
  };
}
