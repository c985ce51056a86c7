/**
 * What a live guest does not hand over like a dump does: its KASLR offset and its VMCOREINFO,
 * found in its memory. Each source is tried and cross-checked:
 *
 * - KASLR from the kernel image mapping: the first 2 MiB page mapped in
 *   ffffffff80000000–ffffffffc0000000 under the kernel's page tables (CR3) is `_text`;
 * - KASLR from the IDT: gate 0 at fffffe0000000000 (the CPU entry area's read-only IDT) points at
 *   `asm_exc_divide_error`, so gate 0 minus the vmlinux's symbol is the offset; a disagreement
 *   with the image mapping means the vmlinux is not the running kernel's;
 * - VMCOREINFO from `vmcoreinfo_data` (a vmlinux symbol: needs the offset first), else from a
 *   scan of guest RAM for a page that starts with `OSRELEASE=` (the kernel allocates the text a
 *   page of its own).
 *
 * @module
 */

import type { PhysicalMemory } from "./physical_memory.ts";
import { START_KERNEL_MAP, X86_64Walker } from "./paging_x86_64.ts";
import type { Vmlinux } from "./vmlinux.ts";
import { VmcoreInfo } from "./vmcoreinfo.ts";
import type { GuestRam } from "./guest_ram.ts";

/** Where the kernel is linked to start without KASLR (`__START_KERNEL`, x86_64). */
const START_KERNEL = 0xffffffff81000000n;
/** The read-only IDT mapping of the CPU entry area (x86_64, 4-level and 5-level). */
const IDT_ADDRESS = 0xfffffe0000000000n;
const KERNEL_IMAGE_END = 0xffffffffc0000000n;
const TWO_MIB = 0x200000n;

/** What was found, and how. */
export interface LiveFacts {
  kaslrOffset?: bigint;
  /** How the offset was found, for the banner. */
  kaslrSource: string;
  vmcoreinfo?: VmcoreInfo;
  /** Physical address of the VMCOREINFO text (re-read at each stop to notice a reboot). */
  vmcoreinfoPaddr?: number;
  vmcoreinfoSource: string;
  warnings: string[];
}

/** x86_64 kernel page-table root from CR3 (PCID bits and PTI's user-half bit cleared). */
export function kernelRootFromCr3(cr3: bigint): number {
  return Number(cr3 & 0x000ffffffffff000n & ~0x1000n);
}

/** Find KASLR and VMCOREINFO of an x86_64 guest. */
export function discoverX86(
  phys: PhysicalMemory,
  cr3: bigint,
  cr4: bigint,
  vmlinux: Vmlinux | undefined,
  ram: GuestRam | undefined,
  known?: { paddr: number; raw: Uint8Array },
): LiveFacts {
  const warnings: string[] = [];
  const levels = (cr4 & (1n << 12n)) !== 0n ? 5 : 4;
  const walker = new X86_64Walker(phys, kernelRootFromCr3(cr3), levels);
  const readVirt = (va: bigint, n: number): Uint8Array | undefined => {
    const out = new Uint8Array(n);
    let done = 0;
    while (done < n) {
      const w = walker.walk(va + BigInt(done));
      if (w.paddr < 0) return undefined;
      const chunk = Math.min(n - done, 4096 - (w.paddr % 4096));
      if (phys.read(w.paddr, out.subarray(done, done + chunk)).bytes !== chunk) return undefined;
      done += chunk;
    }
    return out;
  };
  const u64 = (b: Uint8Array, at = 0) =>
    new DataView(b.buffer, b.byteOffset).getBigUint64(at, true);

  // 1. The kernel image mapping.
  let fromMapping: bigint | undefined;
  const first = walker.firstMappedFrom(START_KERNEL_MAP);
  if (first !== undefined && first < KERNEL_IMAGE_END) {
    const text = vmlinux?.symbol("_text") ?? START_KERNEL;
    fromMapping = (first & ~(TWO_MIB - 1n)) - (text & ~(TWO_MIB - 1n));
  }
  // 2. The IDT's first gate, against the vmlinux.
  let fromIdt: bigint | undefined;
  const handler = vmlinux?.symbol("asm_exc_divide_error");
  const gate = handler !== undefined ? readVirt(IDT_ADDRESS, 16) : undefined;
  if (gate && handler !== undefined) {
    const v = new DataView(gate.buffer);
    const target = BigInt(v.getUint16(0, true)) | (BigInt(v.getUint16(6, true)) << 16n) |
      (BigInt(v.getUint32(8, true)) << 32n);
    fromIdt = target - handler;
  }
  let kaslrOffset = fromMapping ?? fromIdt;
  let kaslrSource = fromMapping !== undefined
    ? "the kernel image mapping under CR3"
    : fromIdt !== undefined
    ? "IDT gate 0 against the vmlinux's asm_exc_divide_error"
    : "not found";
  let vmlinuxTrusted = vmlinux !== undefined;
  if (fromIdt !== undefined && fromMapping !== undefined) {
    if (fromIdt === fromMapping) kaslrSource += ", confirmed by IDT gate 0";
    else {
      vmlinuxTrusted = false;
      warnings.push(
        `${vmlinux!.path} does not match the running kernel: IDT gate 0 says KASLR offset ` +
          `0x${fromIdt.toString(16)}, the image mapping 0x${fromMapping.toString(16)}`,
      );
    }
  }

  // 3. VMCOREINFO: where it was last time, else vmcoreinfo_data, else a scan of RAM.
  let vmcoreinfo: VmcoreInfo | undefined;
  let vmcoreinfoPaddr: number | undefined;
  let vmcoreinfoSource = "not found";
  const valid = (b: Uint8Array | undefined) =>
    b !== undefined && new TextDecoder().decode(b.subarray(0, 10)) === "OSRELEASE=";
  if (known) {
    const again = new Uint8Array(known.raw.length);
    if (
      phys.read(known.paddr, again).bytes === again.length &&
      again.every((b, i) => b === known.raw[i])
    ) {
      vmcoreinfo = new VmcoreInfo(readNoteText(phys, known.paddr));
      vmcoreinfoPaddr = known.paddr;
      vmcoreinfoSource = "guest memory (same place as at the last stop)";
    }
  }
  const dataSym = vmlinux?.symbol("vmcoreinfo_data");
  if (!vmcoreinfo && vmlinuxTrusted && dataSym !== undefined && kaslrOffset !== undefined) {
    const ptr = readVirt(dataSym + kaslrOffset, 8);
    const va = ptr ? u64(ptr) : undefined;
    const w = va !== undefined ? walker.walk(va) : undefined;
    if (w && w.paddr >= 0) {
      const text = readNoteText(phys, w.paddr);
      if (valid(text)) {
        vmcoreinfo = new VmcoreInfo(text);
        vmcoreinfoPaddr = w.paddr;
        vmcoreinfoSource = "guest memory (the kernel's vmcoreinfo_data)";
      }
    }
  }
  if (!vmcoreinfo && ram) {
    const found = scanRamForVmcoreinfo(ram);
    if (found !== undefined) {
      vmcoreinfo = new VmcoreInfo(readNoteText(phys, found));
      vmcoreinfoPaddr = found;
      vmcoreinfoSource = "a scan of guest RAM";
    }
  }
  const noted = vmcoreinfo?.kernelOffset;
  if (noted !== undefined) {
    if (kaslrOffset !== undefined && noted !== kaslrOffset) {
      warnings.push(
        `VMCOREINFO's KERNELOFFSET 0x${noted.toString(16)} differs from the one found in the ` +
          `page tables (0x${kaslrOffset.toString(16)}); using VMCOREINFO's`,
      );
    }
    kaslrSource = `VMCOREINFO (${vmcoreinfoSource})` +
      (kaslrOffset === noted ? `, agreeing with ${kaslrSource}` : "");
    kaslrOffset = noted;
  }
  return { kaslrOffset, kaslrSource, vmcoreinfo, vmcoreinfoPaddr, vmcoreinfoSource, warnings };
}

/**
 * Find VMCOREINFO of a guest of another architecture (aarch64): where it was at the last stop,
 * else by a scan of the RAM file; the KASLR offset is VMCOREINFO's KERNELOFFSET.
 */
export function discoverByScan(
  phys: PhysicalMemory,
  ram: GuestRam | undefined,
  known?: { paddr: number; raw: Uint8Array },
): LiveFacts {
  let paddr: number | undefined;
  let source = "not found";
  if (known) {
    const again = new Uint8Array(known.raw.length);
    if (
      phys.read(known.paddr, again).bytes === again.length &&
      again.every((b, i) => b === known.raw[i])
    ) {
      paddr = known.paddr;
      source = "guest memory (same place as at the last stop)";
    }
  }
  if (paddr === undefined && ram) {
    paddr = scanRamForVmcoreinfo(ram);
    if (paddr !== undefined) source = "a scan of guest RAM";
  }
  const vmcoreinfo = paddr === undefined ? undefined : new VmcoreInfo(readNoteText(phys, paddr));
  const kaslrOffset = vmcoreinfo?.kernelOffset;
  return {
    kaslrOffset,
    kaslrSource: kaslrOffset !== undefined
      ? `VMCOREINFO (${source})`
      : "not found (this architecture needs VMCOREINFO: give --guest-ram)",
    vmcoreinfo,
    vmcoreinfoPaddr: paddr,
    vmcoreinfoSource: source,
    warnings: [],
  };
}

/** The NUL-terminated VMCOREINFO text at `paddr` (at most one page, as the kernel keeps it). */
function readNoteText(phys: PhysicalMemory, paddr: number): Uint8Array {
  const page = new Uint8Array(4096 - (paddr % 4096));
  const n = phys.read(paddr, page).bytes;
  const text = page.subarray(0, n);
  const end = text.indexOf(0);
  return text.slice(0, end < 0 ? text.length : end);
}

/** Physical address of the first page of RAM that starts with `OSRELEASE=`. */
function scanRamForVmcoreinfo(ram: GuestRam): number | undefined {
  const want = new TextEncoder().encode("OSRELEASE=");
  const chunk = new Uint8Array(1 << 20);
  for (const r of ram.ranges) {
    for (let at = r.start; at < r.end; at += chunk.length) {
      const n = Math.min(chunk.length, r.end - at);
      const view = chunk.subarray(0, n);
      if (!ram.read(at, view)) break;
      for (let p = 0; p + want.length <= n; p += 4096) {
        let same = true;
        for (let i = 0; i < want.length && same; i++) same = view[p + i] === want[i];
        if (same) {
          const text = new TextDecoder().decode(view.subarray(p, p + 4096));
          if (text.includes("\nPAGESIZE=") && text.includes("\nSYMBOL(")) return at + p;
        }
      }
    }
  }
  return undefined;
}
