/**
 * The dumped system in a few lines, as kdb's `summary` shows it (utsname, date, uptime, load
 * average, memory), plus what a crash needs: the panic message and CPU and the taint flags.
 * Everything comes from the dump: VMCOREINFO, the kernel's own symbols (kallsyms) and types
 * (BTF); what the dump does not say is reported as unknown.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import { readKernelLog } from "./dmesg.ts";

/** Facts about the dumped system (undefined = not found in the dump). */
export interface SystemFacts {
  /** `init_uts_ns.name.sysname` (`Linux`). */
  sysname?: string;
  /** The host name (`utsname.nodename`). */
  nodename?: string;
  /** `utsname.release` (as `uname -r`). */
  release?: string;
  /** `utsname.version` (build number and date). */
  version?: string;
  /** `utsname.machine` (`x86_64`, `aarch64`). */
  machine?: string;
  /** `utsname.domainname`. */
  domainname?: string;
  /** Wall-clock time of the dump (seconds since the epoch, UTC). */
  date?: number;
  /** The kernel's timezone offset (`sys_tz.tz_minuteswest`). */
  tzMinutesWest?: number;
  /** Seconds since boot (monotonic clock). */
  uptime?: number;
  /** 1, 5 and 15 minute load averages. */
  loadAverage?: [number, number, number];
  /** `totalram_pages` in KiB. */
  memTotalKb?: number;
  /** Free pages (`vm_zone_stat[NR_FREE_PAGES]`) in KiB. */
  memFreeKb?: number;
  /** Block devices' page cache (`nr_blockdev_pages()`, kdb's `Buffers:`) in KiB. */
  buffersKb?: number;
  /** CPUs in the dump (its CPU notes). */
  cpus: number;
  /** The CPU that panicked (`panic_cpu`, the dump header, or the log). */
  panicCpu?: number;
  /** The panic (or oops) message from the kernel log. */
  panicMessage?: string;
  /** `tainted_mask`. */
  taintMask?: bigint;
  /** `Not tainted`, or `Tainted: W` with the letters of the set flags. */
  taint?: string;
}

/** Taint letters by bit (kernel/panic.c taint_flags, Linux 6.x). */
const TAINT_LETTERS = "PFSRMBUDAWCIOELKXTN";

function readBytes(kernel: Kernel, addr: bigint | undefined, n: number): Uint8Array | undefined {
  if (addr === undefined || !kernel.memory) return undefined;
  const out = new Uint8Array(n);
  return kernel.memory.read(addr, out).error ? undefined : out;
}

function u64(kernel: Kernel, addr: bigint | undefined): bigint | undefined {
  const b = readBytes(kernel, addr, 8);
  return b && new DataView(b.buffer).getBigUint64(0, true);
}

function i64(kernel: Kernel, addr: bigint | undefined): bigint | undefined {
  const b = readBytes(kernel, addr, 8);
  return b && new DataView(b.buffer).getBigInt64(0, true);
}

function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** `Not tainted` or `Tainted: WO` for a taint mask. */
export function taintText(mask: bigint): string {
  if (mask === 0n) return "Not tainted";
  let letters = "";
  for (let i = 0; i < TAINT_LETTERS.length; i++) {
    if ((mask >> BigInt(i)) & 1n) letters += TAINT_LETTERS[i];
  }
  return `Tainted: ${letters}`;
}

/** The panic message in the log: the last `Kernel panic - not syncing: …`, else an oops line. */
export function panicMessage(lines: readonly string[]): string | undefined {
  const text = (l: string) => l.replace(/^\[[ 0-9.]+\] /, "");
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = /Kernel panic - not syncing: (.*)$/.exec(text(lines[i]));
    if (m && !text(lines[i]).startsWith("---[")) return m[1];
  }
  for (let i = lines.length - 1; i >= 0; i--) {
    const t = text(lines[i]);
    if (/^(BUG: |Oops: |Unable to handle kernel |general protection fault)/.test(t)) return t;
  }
  return undefined;
}

/** Read the facts the dump holds. Never throws. */
export function systemFacts(kernel: Kernel): SystemFacts {
  const vmci = kernel.dump.vmcoreinfo;
  const facts: SystemFacts = { cpus: kernel.dump.cpus.length, panicCpu: kernel.panicCpu };
  const pageKb = kernel.pageSize / 1024;

  // utsname: six 65-byte fields at init_uts_ns.name (both named in VMCOREINFO).
  const uts = vmci?.symbol("init_uts_ns");
  const nameOff = vmci?.offset("uts_namespace.name") ?? 0;
  const u = readBytes(kernel, uts === undefined ? undefined : uts + BigInt(nameOff), 6 * 65);
  if (u) {
    const f = (i: number) => cString(u.subarray(i * 65, (i + 1) * 65));
    [facts.sysname, facts.nodename, facts.release, facts.version, facts.machine, facts.domainname] =
      [f(0), f(1), f(2), f(3), f(4), f(5)];
  }

  const btf = kernel.btf;
  const sym = (n: string) => kernel.symbol(n);
  // The timekeeper: the shadow copy is updated with (and never behind) tk_core's.
  let tk = sym("shadow_timekeeper");
  if (tk === undefined) {
    const core = sym("tk_core");
    const seq = btf?.member("timekeeper", "xtime_sec") ? 8n : undefined;
    if (core !== undefined && seq !== undefined) tk = core + seq;
  }
  const xtime = btf?.member("timekeeper", "xtime_sec");
  const monoBase = btf?.member("timekeeper", "tkr_mono.base");
  if (tk !== undefined && xtime) {
    const v = i64(kernel, tk + BigInt(xtime.offset));
    if (v !== undefined && v > 0n) facts.date = Number(v);
  }
  if (tk !== undefined && monoBase) {
    // CLOCK_MONOTONIC at the last tick: base holds whole seconds (plus wall_to_monotonic's
    // nanoseconds), xtime_nsec the rest, shifted.
    const base = i64(kernel, tk + BigInt(monoBase.offset));
    const nsecM = btf?.member("timekeeper", "tkr_mono.xtime_nsec");
    const shiftM = btf?.member("timekeeper", "tkr_mono.shift");
    const nsec = nsecM ? u64(kernel, tk + BigInt(nsecM.offset)) : undefined;
    const shift = shiftM ? kernel.readU32(tk + BigInt(shiftM.offset)) : undefined;
    const frac = nsec !== undefined && shift !== undefined && shift < 64
      ? nsec >> BigInt(shift)
      : 0n;
    if (base !== undefined && base >= 0n) facts.uptime = Number((base + frac) / 1_000_000_000n);
  }
  const crash = vmci?.crashTime;
  if (crash) facts.date = crash;
  const tz = readBytes(kernel, sym("sys_tz"), 4);
  if (tz) facts.tzMinutesWest = new DataView(tz.buffer).getInt32(0, true);

  const avenrun = readBytes(kernel, sym("avenrun"), 24);
  if (avenrun) {
    const v = new DataView(avenrun.buffer);
    const load = (i: number) => Number(v.getBigUint64(i * 8, true)) / 2048;
    facts.loadAverage = [load(0), load(1), load(2)];
  }
  const total = u64(kernel, sym("_totalram_pages") ?? sym("totalram_pages"));
  if (total !== undefined) facts.memTotalKb = Number(total) * pageKb;
  const zoneStat = sym("vm_zone_stat");
  const nrFree = vmci?.number("NR_FREE_PAGES") ?? 0n;
  const free = i64(kernel, zoneStat === undefined ? undefined : zoneStat + nrFree * 8n);
  if (free !== undefined) facts.memFreeKb = Number(free) * pageKb;

  const buffers = blockdevPages(kernel);
  if (buffers !== undefined) facts.buffersKb = Number(buffers) * pageKb;

  const taint = u64(kernel, sym("tainted_mask"));
  if (taint !== undefined) {
    facts.taintMask = taint;
    facts.taint = taintText(taint);
  }
  try {
    const log = readKernelLog(kernel);
    const lines = log.records.map((r) => r.text.split("\n")[0]);
    facts.panicMessage = panicMessage(lines);
  } catch {
    // no log: no message
  }
  return facts;
}

/** Block device inodes walked at most (a machine with this many disks and partitions is rare). */
const MAX_BLOCKDEV_INODES = 100_000;

/**
 * `nr_blockdev_pages()`: the pages of every inode on the block device pseudo-filesystem's
 * superblock (`blockdev_superblock->s_inodes`), or undefined when the list cannot be walked.
 */
function blockdevPages(kernel: Kernel): bigint | undefined {
  const btf = kernel.btf;
  const sb = u64(kernel, kernel.symbol("blockdev_superblock"));
  const inodes = btf?.member("super_block", "s_inodes");
  const link = btf?.member("inode", "i_sb_list");
  const mapping = btf?.member("inode", "i_mapping");
  const nrpages = btf?.member("address_space", "nrpages");
  if (!sb || !inodes || !link || !mapping || !nrpages) return undefined;
  const head = sb + BigInt(inodes.offset);
  let total = 0n;
  let node = u64(kernel, head);
  const seen = new Set<bigint>();
  while (node !== head) {
    // A damaged list that loops without coming back to its head ends here, as unknown.
    if (node === undefined || seen.has(node) || seen.size >= MAX_BLOCKDEV_INODES) return undefined;
    seen.add(node);
    const m = u64(kernel, node - BigInt(link.offset) + BigInt(mapping.offset));
    const pages = m ? u64(kernel, m + BigInt(nrpages.offset)) : undefined;
    if (pages === undefined) return undefined;
    total += pages;
    node = u64(kernel, node);
  }
  return total;
}

/** `2026-12-03 08:41:14`, as the kernel's %ptTs prints a time. */
export function kernelDate(seconds: number): string {
  return new Date(seconds * 1000).toISOString().slice(0, 19).replace("T", " ");
}

/** LOAD_INT.LOAD_FRAC of a load average, as kdb prints it (truncated, two digits). */
function loadText(v: number): string {
  const fixed = Math.round(v * 2048);
  const int = fixed >> 11;
  const frac = ((fixed & 2047) * 100) >> 11;
  return `${int}.${String(frac).padStart(2, "0")}`;
}

/** kdb's `summary` lines, then the crash facts kdb does not print. */
export function summaryLines(kernel: Kernel): string[] {
  const f = systemFacts(kernel);
  const u = (v: string | undefined) => v ?? "unknown";
  const lines = [
    `sysname    ${u(f.sysname)}`,
    `release    ${u(f.release)}`,
    `version    ${u(f.version)}`,
    `machine    ${u(f.machine)}`,
    `nodename   ${u(f.nodename)}`,
    `domainname ${u(f.domainname)}`,
    `date       ${f.date === undefined ? "unknown" : kernelDate(f.date)} tz_minuteswest ${
      f.tzMinutesWest ?? 0
    }`,
  ];
  if (f.uptime === undefined) lines.push("uptime     unknown");
  else {
    let up = f.uptime;
    let text = "";
    if (up > 86400) {
      const days = Math.floor(up / 86400);
      up %= 86400;
      text = `${days} day${days === 1 ? "" : "s"} `;
    }
    const hh = String(Math.floor(up / 3600)).padStart(2, "0");
    const mm = String(Math.floor(up / 60) % 60).padStart(2, "0");
    lines.push(`uptime     ${text}${hh}:${mm}`);
  }
  lines.push(`load avg   ${f.loadAverage ? f.loadAverage.map(loadText).join(" ") : "unknown"}`);
  lines.push("");
  const kb = (
    v: number | undefined,
  ) => (v === undefined ? "unknown".padStart(8) : String(v).padStart(8));
  lines.push(`MemTotal:       ${kb(f.memTotalKb)} kB`);
  lines.push(`MemFree:        ${kb(f.memFreeKb)} kB`);
  lines.push(`Buffers:        ${kb(f.buffersKb)} kB`);
  lines.push("");
  lines.push(`cpus       ${f.cpus}`);
  lines.push(`panic cpu  ${f.panicCpu ?? "unknown"}`);
  lines.push(`panic      ${f.panicMessage ?? "no panic message in the kernel log"}`);
  lines.push(`taint      ${f.taint ?? "unknown"}`);
  return lines;
}
