/**
 * What a live guest does not hand over like a dump does: its KASLR offset and its VMCOREINFO,
 * found in its memory and registers. Each source is tried and cross-checked.
 *
 * x86_64:
 * - KASLR from the kernel image mapping: the first 2 MiB page mapped in
 *   ffffffff80000000–ffffffffc0000000 under the kernel's page tables (CR3) is `_text`;
 * - KASLR from the IDT: gate 0 at fffffe0000000000 (the CPU entry area's read-only IDT) points at
 *   `asm_exc_divide_error`, so gate 0 minus the vmlinux's symbol is the offset; a disagreement
 *   with the image mapping means the vmlinux is not the running kernel's.
 *
 * aarch64:
 * - KASLR from VBAR_EL1: the kernel points it at `vectors`, so VBAR_EL1 minus the vmlinux's symbol
 *   is the offset. Only a vCPU in the kernel (EL1) outside its exception vectors counts: with KPTI
 *   a CPU in user mode, or in the trampoline, has the trampoline's vectors and page tables. The
 *   offset is confirmed by reading the vmlinux's `linux_banner` at its moved address through the
 *   kernel's page tables (TTBR1_EL1 as TCR_EL1 sets them up): other bytes there mean the vmlinux
 *   is not the running kernel's.
 *
 * Both: VMCOREINFO from `vmcoreinfo_data` (a vmlinux symbol: needs the offset first), else among
 * the pages the kernel image's writable data points at through the kernel's map of all RAM (one
 * of its pointers is `vmcoreinfo_data`), else from a scan of guest RAM for a page that starts with
 * `OSRELEASE=` (the kernel allocates the text a page of its own): every page of the RAM file, or
 * without it the first bytes of each page through the gdbstub, where the kernel's first
 * allocations usually are first; its KERNELOFFSET, when present, is the offset used.
 *
 * @module
 */

import type { PhysicalMemory } from "./physical_memory.ts";
import type { LeafMapping, LinearRange, PageTableWalker } from "./paging.ts";
import { findDirectMapBase, START_KERNEL_MAP, X86_64Walker } from "./paging_x86_64.ts";
import { Arm64Walker } from "./paging_aarch64.ts";
import type { Vmlinux } from "./vmlinux.ts";
import { VmcoreInfo } from "./vmcoreinfo.ts";
import type { GuestRam, RamRange } from "./guest_ram.ts";
import type { LiveSource } from "./live_dump.ts";
import { decodeRegisterValue, type StubDescription, type StubRegister } from "./target_xml.ts";

/** Where the kernel is linked to start without KASLR (`__START_KERNEL`, x86_64). */
const START_KERNEL = 0xffffffff81000000n;
/** The read-only IDT mapping of the CPU entry area (x86_64, 4-level and 5-level). */
const IDT_ADDRESS = 0xfffffe0000000000n;
const KERNEL_IMAGE_END = 0xffffffffc0000000n;
/** How far past its vectors an arm64 kernel image's writable data may end. */
const ARM64_IMAGE_SPAN = 1n << 30n;
const TWO_MIB = 0x200000n;

/** What was found, and how. */
export interface LiveFacts {
  /** KASLR offset of kernel text, when found. */
  kaslrOffset?: bigint;
  /** How the offset was found, for the banner. */
  kaslrSource: string;
  /** The guest's VMCOREINFO, when found. */
  vmcoreinfo?: VmcoreInfo;
  /** Physical address of the VMCOREINFO text (re-read at each stop to notice a reboot). */
  vmcoreinfoPaddr?: number;
  /** Where VMCOREINFO was found (or why not), for the banner. */
  vmcoreinfoSource: string;
  /** What the user should know, one line each. */
  warnings: string[];
}

/** Where the VMCOREINFO text was at the last stop, and what it said. */
export interface KnownVmcoreinfo {
  paddr: number;
  raw: Uint8Array;
}

/** x86_64 kernel page-table root from CR3 (PCID bits and PTI's user-half bit cleared). */
export function kernelRootFromCr3(cr3: bigint): number {
  return Number(cr3 & 0x000ffffffffff000n & ~0x1000n);
}

/** `n` bytes at kernel virtual address `va` through `walker`, or undefined when unmapped. */
function readVirtual(
  phys: PhysicalMemory,
  walker: PageTableWalker,
  va: bigint,
  n: number,
): Uint8Array | undefined {
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
}

/** Find KASLR and VMCOREINFO of an x86_64 guest. */
export function discoverX86(
  phys: PhysicalMemory,
  cr3: bigint,
  cr4: bigint,
  vmlinux: Vmlinux | undefined,
  scan: VmcoreinfoScan | undefined,
  known?: KnownVmcoreinfo,
): LiveFacts {
  const warnings: string[] = [];
  const levels = (cr4 & (1n << 12n)) !== 0n ? 5 : 4;
  const walker = new X86_64Walker(phys, kernelRootFromCr3(cr3), levels);

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
  const gate = handler !== undefined ? readVirtual(phys, walker, IDT_ADDRESS, 16) : undefined;
  if (gate && handler !== undefined) {
    const v = new DataView(gate.buffer);
    const target = BigInt(v.getUint16(0, true)) | (BigInt(v.getUint16(6, true)) << 16n) |
      (BigInt(v.getUint32(8, true)) << 32n);
    fromIdt = target - handler;
  }
  const kaslrOffset = fromMapping ?? fromIdt;
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
  // 3. VMCOREINFO, whose KERNELOFFSET has the last word. The image's data is searched when RAM
  // may be (`scan`: not while a scan through the gdbstub that found nothing waits to retry).
  const imagePointers = scan && fromMapping !== undefined && first !== undefined
    ? () => {
      const directMap = findDirectMapBase(walker, levels);
      return directMap === undefined ? [] : x86ImagePointers(phys, walker, first, directMap);
    }
    : undefined;
  const found = findVmcoreinfo(
    phys,
    walker,
    vmlinuxTrusted ? vmlinux : undefined,
    kaslrOffset,
    scan?.slow && fromMapping === undefined ? notYet(scan) : scan,
    known,
    imagePointers,
  );
  return withKernelOffset(found, kaslrOffset, kaslrSource, warnings, "the page tables");
}

/** One aarch64 vCPU's registers that locate the kernel (undefined: the stub does not show it). */
export interface Aarch64Vcpu {
  pc?: bigint;
  cpsr?: bigint;
  /** VBAR_EL1 (QEMU 7.2 names it VBAR: the AArch32 and AArch64 register are one). */
  vbar?: bigint;
  ttbr1?: bigint;
  tcr?: bigint;
}

/** The system registers that locate the kernel. */
const SYSTEM_REGISTERS = { vbar: "VBAR_EL1", ttbr1: "TTBR1_EL1", tcr: "TCR_EL1" } as const;

/**
 * QEMU 7.2 names a system register that AArch32 shares by its AArch32 name (`VBAR`, `SCTLR`); later
 * versions may name it as AArch64 does.
 */
const QEMU_AARCH32_NAMES: Readonly<Record<string, string>> = {
  VBAR_EL1: "VBAR",
  SCTLR_EL1: "SCTLR",
  CONTEXTIDR_EL1: "CONTEXTIDR",
};

/** QEMU's register of that name (AArch64's, or QEMU's older AArch32 name for it). */
export function qemuRegister(desc: StubDescription, name: string): StubRegister | undefined {
  const older = QEMU_AARCH32_NAMES[name];
  return desc.byName.get(name) ?? (older === undefined ? undefined : desc.byName.get(older));
}

/**
 * vCPU `cpu`'s {@link Aarch64Vcpu}: pc and cpsr from its `g` registers, the system registers
 * with one `p` each (QEMU leaves them out of `g`).
 */
export function readAarch64Vcpu(
  src: LiveSource,
  cpu: number,
  registers: Map<string, bigint>,
): Aarch64Vcpu {
  const out: Aarch64Vcpu = { pc: registers.get("pc"), cpsr: registers.get("cpsr") };
  for (const [key, name] of Object.entries(SYSTEM_REGISTERS)) {
    const value = readSystemRegister(src, cpu, name);
    if (value !== undefined) out[key as keyof typeof SYSTEM_REGISTERS] = value;
  }
  return out;
}

/**
 * One register of vCPU `cpu` that QEMU leaves out of `g` (a system register), with one `p`;
 * undefined when QEMU's description has none of that name or the stub refuses.
 */
export function readSystemRegister(
  src: LiveSource,
  cpu: number,
  name: string,
): bigint | undefined {
  const reg = qemuRegister(src.desc, name);
  if (!reg || reg.bits > 64) return undefined;
  src.stub.selectThread(src.vcpus[cpu]);
  return decodeRegisterValue(reg, src.stub.request(`p${reg.regnum.toString(16)}`));
}

/**
 * The kernel-half walker of TTBR1_EL1 as TCR_EL1 configures it (T1SZ, TG1, EPD1, IPS), or
 * undefined when TTBR1 walks are disabled or the fields make no sense.
 */
export function ttbr1Walker(
  phys: PhysicalMemory,
  ttbr1: bigint,
  tcr: bigint,
): Arm64Walker | undefined {
  const t1sz = Number((tcr >> 16n) & 0x3fn);
  const tg1 = Number((tcr >> 30n) & 3n);
  const granule = tg1 === 1 ? 16384 : tg1 === 2 ? 4096 : tg1 === 3 ? 65536 : 0;
  if (((tcr >> 23n) & 1n) !== 0n || granule === 0 || t1sz < 12 || t1sz > 48) return undefined;
  // BADDR is bits 47:1 (bit 0 is CnP, 63:48 the ASID); 52-bit physical addresses keep
  // BADDR[51:48] in bits 5:2.
  let root = ttbr1 & 0x0000fffffffffffen;
  if (((tcr >> 32n) & 7n) === 6n) root = (root & ~0x3en) | (((ttbr1 >> 2n) & 0xfn) << 48n);
  return new Arm64Walker(phys, Number(root), 64 - t1sz, granule);
}

/** Why a vCPU's VBAR_EL1 cannot locate the kernel, or undefined when it can. */
function vbarUnusable(r: Aarch64Vcpu): string | undefined {
  if (r.vbar === undefined || r.ttbr1 === undefined || r.tcr === undefined) {
    return "QEMU's gdbstub shows no VBAR_EL1, TTBR1_EL1 or TCR_EL1";
  }
  if (r.cpsr === undefined || r.pc === undefined) return "no pc or cpsr";
  // AArch32 state (M[4]) is always user mode here; else M[3:2] is the exception level.
  const el = (r.cpsr & 0x10n) !== 0n ? 0n : (r.cpsr >> 2n) & 3n;
  if (el === 0n) return "in user mode (with KPTI it has the trampoline's VBAR_EL1)";
  // A VHE kernel's vectors are in VBAR_EL2; VBAR_EL1 then belongs to a KVM guest.
  if (el !== 1n) return `at EL${el} (only EL1's VBAR_EL1 is the kernel's)`;
  if (r.vbar >> 63n === 0n || (r.vbar & 0x7ffn) !== 0n) {
    return `VBAR_EL1 0x${r.vbar.toString(16)} is no kernel vector table`;
  }
  if (r.pc >= r.vbar && r.pc - r.vbar < 0x10000n) {
    return "in the exception vectors (maybe KPTI's trampoline)";
  }
  return undefined;
}

/** What VBAR_EL1 says. */
interface VbarFinding {
  offset?: bigint;
  /** The kernel's page tables, from the vCPU whose VBAR_EL1 gave the offset. */
  walker?: Arm64Walker;
  source: string;
  /** Why the vmlinux is not the running kernel's (one line). */
  mismatch?: string;
}

/** The KASLR offset from the first usable vCPU's VBAR_EL1, confirmed by `linux_banner`. */
function kaslrFromVbar(
  phys: PhysicalMemory,
  vcpuCount: number,
  vcpu: (cpu: number) => Aarch64Vcpu,
  vmlinux: Vmlinux,
): VbarFinding {
  const vectors = vmlinux.symbol("vectors");
  const bannerAt = vmlinux.symbol("linux_banner");
  const built = bannerAt !== undefined ? vmlinux.readAtAddress(bannerAt, 512) : undefined;
  const end = built?.indexOf(0) ?? -1;
  if (vectors === undefined || bannerAt === undefined || !built || end < 0) {
    return { source: `not found (${vmlinux.path} has no vectors or no linux_banner)` };
  }
  const want = built.subarray(0, end + 1);
  const skipped: string[] = [];
  let mismatch: string | undefined;
  // Every vCPU until one confirms: a disagreement of one only counts when none does.
  for (let cpu = 0; cpu < vcpuCount; cpu++) {
    const r = vcpu(cpu);
    const why = vbarUnusable(r);
    const walker = why ? undefined : ttbr1Walker(phys, r.ttbr1!, r.tcr!);
    if (!walker) {
      skipped.push(`CPU ${cpu} ${why ?? "has TTBR1_EL1 walks disabled (TCR_EL1)"}`);
      continue;
    }
    const offset = r.vbar! - vectors;
    const hex = (v: bigint) => `0x${v.toString(16)}`;
    if (offset < 0n || offset % 4096n !== 0n) {
      mismatch ??=
        `CPU ${cpu}'s VBAR_EL1 ${hex(r.vbar!)} cannot be its vectors (${hex(vectors)}) ` +
        "moved by KASLR";
      continue;
    }
    const seen = readVirtual(phys, walker, bannerAt + offset, want.length);
    if (seen && seen.every((b, i) => b === want[i])) {
      return {
        offset,
        walker,
        source: "VBAR_EL1 against the vmlinux's vectors, confirmed by its linux_banner",
      };
    }
    const text = seen ? new TextDecoder().decode(seen) : "";
    const other = text.startsWith("Linux version ")
      ? `the running kernel's reads "${text.split("\n")[0].trim()}"`
      : seen
      ? "other bytes are there"
      : "nothing is mapped there";
    mismatch ??= `CPU ${cpu}'s VBAR_EL1 puts its vectors at KASLR offset ${hex(offset)}, but its ` +
      `linux_banner is not at ${hex(bannerAt + offset)} (${other})`;
  }
  if (mismatch) {
    return {
      source: "not found (the vmlinux is not the running kernel's)",
      mismatch: `${vmlinux.path} does not match the running kernel: ${mismatch}`,
    };
  }
  return { source: `not found (no vCPU's VBAR_EL1 locates the kernel: ${skipped.join("; ")})` };
}

/**
 * Find KASLR and VMCOREINFO of an aarch64 guest: VBAR_EL1 against the vmlinux's `vectors` (read
 * from the vCPUs as needed, first usable one wins), VMCOREINFO through `vmcoreinfo_data`, the
 * kernel image's data, or a scan of guest RAM.
 */
export function discoverAarch64(
  phys: PhysicalMemory,
  vcpuCount: number,
  readVcpu: (cpu: number) => Aarch64Vcpu,
  vmlinux: Vmlinux | undefined,
  scan: VmcoreinfoScan | undefined,
  known?: KnownVmcoreinfo,
): LiveFacts {
  // Each vCPU's system registers cost requests to the stub: read once, whoever asks first.
  const read: Aarch64Vcpu[] = [];
  const vcpu = (cpu: number) => (read[cpu] ??= readVcpu(cpu));
  const warnings: string[] = [];
  const vbar = vmlinux ? kaslrFromVbar(phys, vcpuCount, vcpu, vmlinux) : undefined;
  if (vbar?.mismatch) warnings.push(vbar.mismatch);
  const kernelSeen = () => {
    for (let cpu = 0; cpu < vcpuCount; cpu++) if (!vbarUnusable(vcpu(cpu))) return true;
    return false;
  };
  // The image's data, through the first vCPU in the kernel (its VBAR_EL1 and TTBR1_EL1), when
  // RAM may be searched.
  const imagePointers = scan && (() => {
    for (let cpu = 0; cpu < vcpuCount; cpu++) {
      const r = vcpu(cpu);
      const walker = vbarUnusable(r) ? undefined : ttbr1Walker(phys, r.ttbr1!, r.tcr!);
      if (walker) return aarch64ImagePointers(phys, walker, r.vbar!);
    }
    return [];
  });
  const found = findVmcoreinfo(
    phys,
    vbar?.walker,
    vbar?.offset !== undefined ? vmlinux : undefined,
    vbar?.offset,
    scan?.slow && vbar?.offset === undefined && !kernelSeen() ? notYet(scan) : scan,
    known,
    imagePointers,
  );
  const source = vbar?.source ??
    (scan
      ? "not found (no VMCOREINFO found in guest RAM; --vmlinux would allow VBAR_EL1)"
      : "not found (an aarch64 guest needs --vmlinux, for VBAR_EL1 against " +
        "its vectors, or VMCOREINFO from a scan of guest RAM)");
  return withKernelOffset(found, vbar?.offset, source, warnings, "VBAR_EL1");
}

/** VMCOREINFO found, and where. */
interface VmcoreinfoFinding {
  vmcoreinfo?: VmcoreInfo;
  paddr?: number;
  source: string;
}

/** Most bytes of the kernel image's writable mappings searched for pointers (Debian's: ~6 MiB). */
const MAX_IMAGE_DATA = 64 << 20;
/**
 * Most pages pointed at that are looked at (Debian's data points at about 160; each costs a
 * page read, about 0.1 ms through the gdbstub), which also bounds the memory of the search.
 */
export const MAX_IMAGE_POINTERS = 1 << 16;
/** Bytes read at a time from the kernel image's data. */
const IMAGE_DATA_CHUNK = 64 << 10;

/**
 * The kernel image's writable mappings (its .data, .bss), as runs of contiguous virtual
 * addresses, from the `mappings` of its page tables below `end`: at most `maxRuns` runs and
 * {@link MAX_IMAGE_DATA} bytes.
 */
export function writableRuns(
  mappings: Iterable<LeafMapping>,
  end: bigint,
  maxRuns = Infinity,
): LeafMapping[][] {
  const runs: LeafMapping[][] = [];
  let runEnd = -1n;
  let listed = 0;
  for (const m of mappings) {
    if (m.va >= end || listed >= MAX_IMAGE_DATA) break;
    if (!m.writable) continue;
    if (m.va === runEnd) runs.at(-1)!.push(m);
    else if (runs.length === maxRuns) break;
    else runs.push([m]);
    runEnd = m.va + BigInt(m.size);
    listed += m.size;
  }
  return runs;
}

/**
 * Physical addresses of the pages that the kernel image's writable data points at through the
 * kernel's map of all RAM (`linear`: x86_64's direct map, arm64's linear map), each once, in the
 * order the pointers are found in `runs`. The kernel keeps its VMCOREINFO text in a page of its
 * own and its address in `vmcoreinfo_data`, a .bss variable: so that page is among these,
 * wherever the page allocator put it, and the search reads a few MiB of the image instead of
 * guest RAM at large. At most {@link MAX_IMAGE_POINTERS} pages.
 */
export function* imageDataPointers(
  phys: PhysicalMemory,
  runs: readonly LeafMapping[][],
  linear: LinearRange,
): Generator<number> {
  const seen = new Set<number>();
  const chunk = new Uint8Array(IMAGE_DATA_CHUNK);
  const words = new DataView(chunk.buffer);
  const toPhysical = BigInt(linear.physStart) - linear.start;
  // Only pointers into RAM: the map's region may run on into other kernel mappings (x86_64's
  // KASLR puts vmalloc's region some TiB past the direct map of RAM).
  const top = phys.dump.maxPfn * phys.pageSize;
  for (const run of runs) {
    for (const m of run) {
      for (let at = 0; at < m.size; at += chunk.length) {
        const n = Math.min(chunk.length, m.size - at);
        const got = phys.read(m.paddr + at, chunk.subarray(0, n)).bytes;
        for (let i = 0; i + 8 <= got; i += 8) {
          // Page-aligned values only: the low 32 bits first, the cheap test that rejects most.
          if ((words.getUint32(i, true) & 0xfff) !== 0) continue;
          const v = words.getBigUint64(i, true);
          if (v < linear.start || v >= linear.end) continue;
          const paddr = Number(v + toPhysical);
          if (paddr >= top) continue;
          if (!seen.has(paddr)) {
            if (seen.size >= MAX_IMAGE_POINTERS) return;
            seen.add(paddr);
            yield paddr;
          }
        }
      }
    }
  }
}

/**
 * x86_64: the pages the kernel image's data points at through the direct map. The image's
 * writable mappings form runs: .data and what follows it, then (past the init memory, unmapped
 * once freed) .bss and the brk area. The last run is searched first, so .bss's pointers come
 * before .data's.
 */
export function x86ImagePointers(
  phys: PhysicalMemory,
  walker: X86_64Walker,
  imageStart: bigint,
  directMapBase: bigint,
): Iterable<number> {
  const runs = writableRuns(walker.mappingsFrom(imageStart), KERNEL_IMAGE_END).reverse();
  // Past 64 TiB (x86_64's largest 4-level direct map) no address is a pointer into it; past
  // the end of RAM none is a pointer into RAM (checked by imageDataPointers).
  const end = directMapBase + (1n << 46n);
  return imageDataPointers(phys, runs, {
    name: "direct map",
    start: directMapBase,
    end,
    physStart: 0,
  });
}

/**
 * aarch64: the pages the kernel image's data points at through the linear map. From the vector
 * table (VBAR_EL1, in the image's text) up, the image is text, read-only data, the freed init
 * segments (unmapped) and then one writable run, .data and .bss (`_data` to `_end`). The linear
 * map is the lower half of the kernel's addresses (from PAGE_OFFSET); its first mapping gives
 * the offset between its addresses and physical ones. Nothing when either is not found.
 */
export function aarch64ImagePointers(
  phys: PhysicalMemory,
  walker: Arm64Walker,
  vbar: bigint,
): Iterable<number> {
  const pageOffset = (1n << 64n) - (1n << BigInt(walker.vaBits));
  const pageEnd = pageOffset + (1n << BigInt(walker.vaBits - 1));
  const first = walker.mappingsFrom(pageOffset).next();
  if (first.done || first.value.va >= pageEnd) return [];
  const { va: start, paddr: physStart } = first.value;
  const runs = writableRuns(walker.mappingsFrom(vbar), vbar + ARM64_IMAGE_SPAN, 1);
  return imageDataPointers(phys, runs, { name: "linear map", start, end: pageEnd, physStart });
}

/** What the kernel image's pointers found VMCOREINFO through, for the banner. */
export const IMAGE_POINTER_SOURCE = "guest memory: a pointer in the kernel image's data";

/**
 * VMCOREINFO: where it was at the last stop, else through the kernel's `vmcoreinfo_data` (a
 * `vmlinux` trusted to be the running kernel's, the offset and the kernel's page tables), else
 * among the pages the kernel image's data points at, else by a scan of guest RAM.
 */
function findVmcoreinfo(
  phys: PhysicalMemory,
  walker: PageTableWalker | undefined,
  vmlinux: Vmlinux | undefined,
  kaslrOffset: bigint | undefined,
  scan: VmcoreinfoScan | undefined,
  known: KnownVmcoreinfo | undefined,
  imagePointers?: () => Iterable<number>,
): VmcoreinfoFinding {
  const valid = (b: Uint8Array | undefined) =>
    b !== undefined && new TextDecoder().decode(b.subarray(0, 10)) === "OSRELEASE=";
  /** The VMCOREINFO text at `at`, when a page of it starts there (most candidates do not). */
  const vmcoreinfoAt = (at: number) => {
    const text = readNoteText(phys, at);
    if (!valid(text)) return undefined;
    const words = new TextDecoder().decode(text);
    return words.includes("\nPAGESIZE=") && words.includes("\nSYMBOL(") ? text : undefined;
  };
  if (known) {
    const again = new Uint8Array(known.raw.length);
    if (
      phys.read(known.paddr, again).bytes === again.length &&
      again.every((b, i) => b === known.raw[i])
    ) {
      return {
        vmcoreinfo: new VmcoreInfo(readNoteText(phys, known.paddr)),
        paddr: known.paddr,
        source: "guest memory: same place as at the last stop",
      };
    }
  }
  const dataSym = vmlinux?.symbol("vmcoreinfo_data");
  if (walker && dataSym !== undefined && kaslrOffset !== undefined) {
    const ptr = readVirtual(phys, walker, dataSym + kaslrOffset, 8);
    const va = ptr ? new DataView(ptr.buffer).getBigUint64(0, true) : undefined;
    const w = va !== undefined ? walker.walk(va) : undefined;
    if (w && w.paddr >= 0) {
      const text = readNoteText(phys, w.paddr);
      if (valid(text)) {
        return {
          vmcoreinfo: new VmcoreInfo(text),
          paddr: w.paddr,
          source: "guest memory: the kernel's vmcoreinfo_data",
        };
      }
    }
  }
  const searches: [string, () => Iterable<number>][] = [];
  if (imagePointers) searches.push([IMAGE_POINTER_SOURCE, imagePointers]);
  if (scan) searches.push([scan.source, () => scan.candidates()]);
  for (const [source, candidates] of searches) {
    for (const at of candidates()) {
      const text = vmcoreinfoAt(at);
      if (text) return { vmcoreinfo: new VmcoreInfo(text), paddr: at, source };
    }
  }
  return { source: scan ? `not found (${scan.notFound()})` : "not found" };
}

/**
 * The facts, VMCOREINFO's KERNELOFFSET taking the place of the offset found otherwise (with a
 * warning when they differ; `otherWay` names where the other came from).
 */
function withKernelOffset(
  found: VmcoreinfoFinding,
  kaslrOffset: bigint | undefined,
  kaslrSource: string,
  warnings: string[],
  otherWay: string,
): LiveFacts {
  const noted = found.vmcoreinfo?.kernelOffset;
  if (noted !== undefined) {
    if (kaslrOffset !== undefined && noted !== kaslrOffset) {
      warnings.push(
        `VMCOREINFO's KERNELOFFSET 0x${noted.toString(16)} differs from the one found in ` +
          `${otherWay} (0x${kaslrOffset.toString(16)}); using VMCOREINFO's`,
      );
    }
    kaslrSource = `VMCOREINFO (${found.source})` +
      (kaslrOffset === noted ? `, agreeing with ${kaslrSource}` : "");
    kaslrOffset = noted;
  }
  return {
    kaslrOffset,
    kaslrSource,
    vmcoreinfo: found.vmcoreinfo,
    vmcoreinfoPaddr: found.paddr,
    vmcoreinfoSource: found.source,
    warnings,
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

/**
 * A search of guest RAM for the page that starts with `OSRELEASE=` (the kernel keeps the
 * VMCOREINFO text in a page of its own); each candidate is checked by the caller.
 */
export interface VmcoreinfoScan {
  /** How RAM was searched, for the banner. */
  readonly source: string;
  /** Physical addresses of pages that start with `OSRELEASE=`, found as they are asked for. */
  candidates(): Iterable<number>;
  /** Why nothing was found (what was searched), for the banner. */
  notFound(): string;
  /**
   * Whether the scan is slow enough to be worth it only once a kernel is seen running (x86_64:
   * its image mapped under CR3; aarch64: a vCPU at EL1 with a kernel vector table): a guest
   * stopped in its firmware or boot loader would otherwise pay for it at every stop.
   */
  readonly slow?: boolean;
  /** Whether any RAM was looked at (a slow scan that did not run is not retried later). */
  readonly ran?: boolean;
}

/** In place of a slow scan while no kernel is seen running: nothing, and why. */
function notYet(scan: VmcoreinfoScan): VmcoreinfoScan {
  return {
    source: scan.source,
    notFound: () => "no kernel seen running yet: guest RAM not scanned",
    candidates: () => [],
  };
}

const OSRELEASE = new TextEncoder().encode("OSRELEASE=");

/** Whether `bytes` at `at` start with `OSRELEASE=`. */
function startsOsrelease(bytes: Uint8Array, at: number): boolean {
  for (let i = 0; i < OSRELEASE.length; i++) if (bytes[at + i] !== OSRELEASE[i]) return false;
  return true;
}

/** A scan of the shared RAM file: every page, at the file's speed. */
export function ramFileScan(ram: GuestRam): VmcoreinfoScan {
  return {
    source: "a scan of guest RAM",
    notFound: () => "no VMCOREINFO in the RAM file",
    *candidates() {
      const chunk = new Uint8Array(1 << 20);
      for (const r of ram.ranges) {
        for (let at = r.start; at < r.end; at += chunk.length) {
          const n = Math.min(chunk.length, r.end - at);
          const view = chunk.subarray(0, n);
          if (!ram.read(at, view)) break;
          for (let p = 0; p + OSRELEASE.length <= n; p += 4096) {
            if (startsOsrelease(view, p)) yield at + p;
          }
        }
      }
    },
  };
}

/**
 * Most pages a scan through the gdbstub looks at (1 GiB of RAM, about 4 s at QEMU's 17 µs a
 * page); the kernel allocates the page early in boot, near the start of a zone (see
 * {@link scanOrder}), so it is found long before this.
 */
export const STUB_SCAN_MAX_PAGES = 1 << 18;

/** Pages asked for per request to the stub (16 MiB): the scan stops as soon as it finds. */
const STUB_SCAN_CHUNK_PAGES = 4096;

const FOUR_GIB = 0x1_0000_0000;
const SIXTEEN_MIB = 0x100_0000;

/**
 * The order in which to look at guest RAM: where the kernel's page allocator hands out its first
 * pages. It serves GFP_KERNEL from the highest zone, and pages freed to it at boot go to the tail
 * of its free lists, so early allocations come from near the start of the zone: RAM above 4 GiB
 * (ZONE_NORMAL on x86_64 and arm64), then from 16 MiB up (ZONE_DMA32 on x86_64), then the rest.
 */
export function scanOrder(ranges: readonly RamRange[]): RamRange[] {
  const cut = (lo: number, hi: number) =>
    ranges
      .map((r) => ({ ...r, start: Math.max(r.start, lo), end: Math.min(r.end, hi) }))
      .filter((r) => r.start < r.end);
  return [
    ...cut(FOUR_GIB, Infinity),
    ...cut(SIXTEEN_MIB, FOUR_GIB),
    ...cut(0, SIXTEEN_MIB),
  ];
}

/**
 * A scan through QEMU's gdbstub (no RAM file): the first bytes of each page, many `m` packets in
 * flight, in {@link scanOrder}, at most {@link STUB_SCAN_MAX_PAGES} pages.
 */
export function stubScan(src: LiveSource, maxPages = STUB_SCAN_MAX_PAGES): VmcoreinfoScan {
  let looked = 0;
  return {
    source: "a scan of guest RAM through the gdbstub",
    slow: true,
    get ran() {
      return looked > 0;
    },
    notFound: () =>
      `no VMCOREINFO in the ${looked >> 8} MiB of guest RAM scanned through the gdbstub`,
    *candidates() {
      looked = 0;
      for (const r of scanOrder(src.ramRanges)) {
        for (let at = r.start; at + 4096 <= r.end && looked < maxPages;) {
          const count = Math.min(STUB_SCAN_CHUNK_PAGES, (r.end - at) >> 12, maxPages - looked);
          const heads = src.stub.sampleMemory(BigInt(at), 4096, count, OSRELEASE.length);
          looked += count;
          for (let k = 0; k < count; k++) {
            if (startsOsrelease(heads, k * OSRELEASE.length)) yield at + k * 4096;
          }
          at += count * 4096;
        }
      }
    },
  };
}
