/**
 * Loaded modules from the kernel's `modules` list (struct layouts from BTF), and kdb's `lsmod`
 * layout: name, size, module struct, reference count, state, base address, users.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import { hex16 } from "./kdb_expr.ts";

/** One loaded module. */
export interface ModuleInfo {
  /** The module's name (`struct module.name`). */
  name: string;
  /** Address of its `struct module`. */
  address: bigint;
  /** Sizes of its memory regions: core text (and, 6.4+, rodata, ro_after_init, data). */
  sizes: number[];
  /** Base addresses of the same regions. */
  bases: bigint[];
  /** `refcnt` minus the kernel's MODULE_REF_BASE. */
  refcount: number;
  /** Live, Loading or Unloading. */
  state: string;
  /** Names of the modules that use this one. */
  usedBy: string[];
}

/** The modules list cannot be read. */
export class ModulesError extends Error {}

const MODULE_NAME_LEN = 56;
/** Region order of kdb's lsmod on 6.4+: text, rodata, ro_after_init, data (enum mod_mem_type). */
const MEM_ORDER = [0, 2, 3, 1];
const MAX_MODULES = 65536;

/**
 * Every module on the `modules` list, in list order.
 * @throws ModulesError when the list or the types it needs are missing
 */
export function readModules(kernel: Kernel): ModuleInfo[] {
  const btf = kernel.btf;
  const mem = kernel.memory;
  if (!btf || !mem) {
    throw new ModulesError(`no kernel type information (${kernel.typeSource})`);
  }
  const head = kernel.symbol("modules");
  if (head === undefined) {
    throw new ModulesError(
      "no symbol for the modules list (the kernel's kallsyms lacks data symbols: give --vmlinux)",
    );
  }
  const m = (path: string) => btf.member("module", path);
  const list = m("list");
  const name = m("name");
  const state = m("state");
  const refcnt = m("refcnt");
  const sourceList = m("source_list");
  if (!list || !name || !state) throw new ModulesError("struct module lacks list, name or state");
  const memArray = m("mem");
  const memSize = btf.structSize("module_memory");
  const memBase = btf.member("module_memory", "base");
  const memLen = btf.member("module_memory", "size");
  const coreBase = m("core_layout.base");
  const coreSize = m("core_layout.size");
  const useSource = btf.member("module_use", "source");
  const useSourceList = btf.member("module_use", "source_list");

  const out: ModuleInfo[] = [];
  const listOff = BigInt(list.offset);
  let node = mem.readU64(head);
  const seen = new Set<bigint>();
  while (node !== undefined && node !== head && out.length < MAX_MODULES && !seen.has(node)) {
    seen.add(node);
    const mod = node - listOff;
    const nameText = mem.readCString(mod + BigInt(name.offset), MODULE_NAME_LEN) ?? "?";
    const st = kernel.readU32(mod + BigInt(state.offset)) ?? 0;
    node = mem.readU64(node);
    if (st === 3) continue; // MODULE_STATE_UNFORMED: not a module yet
    const sizes: number[] = [];
    const bases: bigint[] = [];
    if (memArray && memSize && memBase && memLen) {
      for (const i of MEM_ORDER) {
        const at = mod + BigInt(memArray.offset + i * memSize);
        sizes.push(kernel.readU32(at + BigInt(memLen.offset)) ?? 0);
        bases.push(mem.readU64(at + BigInt(memBase.offset)) ?? 0n);
      }
    } else if (coreBase && coreSize) {
      sizes.push(kernel.readU32(mod + BigInt(coreSize.offset)) ?? 0);
      bases.push(mem.readU64(mod + BigInt(coreBase.offset)) ?? 0n);
    }
    const refs = refcnt ? kernel.readU32(mod + BigInt(refcnt.offset)) : undefined;
    const usedBy: string[] = [];
    if (sourceList && useSource && useSourceList) {
      // source_list holds the module_use entries of the modules that use this one.
      const h = mod + BigInt(sourceList.offset);
      let u = mem.readU64(h);
      for (let n = 0; u !== undefined && u !== h && n < MAX_MODULES; n++) {
        const use = u - BigInt(useSourceList.offset);
        const src = mem.readU64(use + BigInt(useSource.offset));
        if (src) usedBy.push(mem.readCString(src + BigInt(name.offset), MODULE_NAME_LEN) ?? "?");
        u = mem.readU64(u);
      }
    }
    out.push({
      name: nameText,
      address: mod,
      sizes,
      bases,
      refcount: refs === undefined ? 0 : (refs | 0) - 1,
      state: st === 2 ? "Unloading" : st === 1 ? "Loading" : "Live",
      usedBy,
    });
  }
  return out;
}

/** kdb's `lsmod` output. */
export function lsmodLines(kernel: Kernel): string[] {
  const mods = readModules(kernel);
  const lines = ["Module                  Size  modstruct     Used by"];
  for (const mod of mods) {
    const sizes = mod.sizes.map((s, i) => (i ? "/" : "") + String(s).padStart(8)).join("");
    const bases = mod.bases.map(hex16).join("/");
    lines.push(
      `${mod.name.padEnd(20)}${sizes}  ${hex16(mod.address)} ${String(mod.refcount).padStart(4)} ` +
        ` (${mod.state}) ${bases} [ ${mod.usedBy.map((n) => n + " ").join("")}]`,
    );
  }
  return lines;
}
