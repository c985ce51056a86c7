/**
 * Which architecture a dump is of, when its header does not say: QEMU writes "Unknown" as the
 * machine of an arm guest's kdump file. What the file holds still tells: the size of an
 * NT_PRSTATUS note (the register block differs) and the VMCOREINFO keys only one architecture's
 * kernel writes.
 *
 * @module
 */

import type { ElfNote } from "./elf.ts";
import type { VmcoreInfo } from "./vmcoreinfo.ts";
import type { ArchName } from "./target.ts";

const NT_PRSTATUS = 1;

/** sizeof(struct elf_prstatus) of 64-bit kernels: 112 bytes, then pr_reg, then pr_fpvalid. */
const PRSTATUS_SIZES: [number, ArchName][] = [
  [336, "x86_64"], // 27 registers
  [392, "aarch64"], // 34 registers (x0-x30, sp, pc, pstate)
];

/** VMCOREINFO entries only one architecture's kernel writes (arch/*\/kernel/*vmcore_info*.c). */
const VMCOREINFO_KEYS: [string, ArchName][] = [
  ["NUMBER(VA_BITS)", "aarch64"],
  ["NUMBER(TCR_EL1_T1SZ)", "aarch64"],
  ["NUMBER(KERNELPACMASK)", "aarch64"],
  ["NUMBER(kimage_voffset)", "aarch64"],
  ["SYMBOL(init_top_pgt)", "x86_64"],
  ["NUMBER(phys_base)", "x86_64"],
  ["NUMBER(pgtable_l5_enabled)", "x86_64"],
];

/** The architecture the evidence names, and what the evidence was (for the banner). */
export interface InferredArch {
  arch: ArchName;
  /** e.g. "NT_PRSTATUS notes of 392 bytes; VMCOREINFO VA_BITS, TCR_EL1_T1SZ". */
  evidence: string;
}

/**
 * The architecture `notes` and `vmcoreinfo` agree on, or a string saying why there is none
 * (no evidence, or evidence for two architectures).
 */
export function inferArch(
  notes: readonly ElfNote[],
  vmcoreinfo: VmcoreInfo | undefined,
): InferredArch | string {
  const votes = new Map<ArchName, string[]>();
  const vote = (arch: ArchName, why: string) => {
    const list = votes.get(arch) ?? [];
    if (!list.includes(why)) list.push(why);
    votes.set(arch, list);
  };
  for (const n of notes) {
    if (n.name !== "CORE" || n.type !== NT_PRSTATUS) continue;
    const hit = PRSTATUS_SIZES.find(([size]) => size === n.desc.length);
    if (hit) vote(hit[1], `NT_PRSTATUS notes of ${hit[0]} bytes`);
  }
  for (const [key, arch] of VMCOREINFO_KEYS) {
    const [kind, name] = key.slice(0, -1).split("(");
    const value = kind === "SYMBOL" ? vmcoreinfo?.symbol(name) : vmcoreinfo?.number(name);
    if (value !== undefined) vote(arch, `VMCOREINFO ${name}`);
  }
  // Debian and most distributions name the architecture in the release string.
  const release = vmcoreinfo?.osRelease ?? "";
  const suffix = /(?:^|[-_.+])(amd64|x86_64|arm64|aarch64)$/.exec(release)?.[1];
  if (suffix) {
    vote(suffix === "amd64" || suffix === "x86_64" ? "x86_64" : "aarch64", `OSRELEASE ${release}`);
  }
  if (votes.size === 0) return "no NT_PRSTATUS note or VMCOREINFO entry names an architecture";
  if (votes.size > 1) {
    const parts = [...votes].map(([arch, why]) => `${arch} (${why.join(", ")})`);
    return `the contents disagree on the architecture: ${parts.join(" vs ")}`;
  }
  const [[arch, why]] = [...votes];
  // "VMCOREINFO A, VMCOREINFO B" reads better as "VMCOREINFO A, B".
  const keys = why.filter((w) => w.startsWith("VMCOREINFO ")).map((w) => w.slice(11));
  const rest = why.filter((w) => !w.startsWith("VMCOREINFO "));
  if (keys.length) rest.splice(1, 0, `VMCOREINFO ${keys.join(", ")}`);
  return { arch, evidence: rest.join("; ") };
}
