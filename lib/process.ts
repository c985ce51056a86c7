/**
 * One user process of a dumped kernel: its address space (the process's page tables for user
 * addresses, the kernel's for kernel addresses), its threads, auxiliary vector, command line,
 * executable path and memory mappings (the maple tree `mm->mm_mt` since Linux 6.1, the
 * `mm->mmap` list before).
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { MemberInfo } from "./btf.ts";
import { VirtualMemory } from "./paging.ts";
import { X86_64Walker, x86PagingInfo } from "./paging_x86_64.ts";
import { arm64PagingInfo, Arm64Walker } from "./paging_aarch64.ts";
import { DumpError } from "./errors.ts";
import type { KernelTasks, TaskInfo } from "./tasks.ts";

/** User addresses have the top bit clear on both architectures. */
/** Addresses below this are user space (both architectures' lower half). */
export const USER_TOP = 0x8000000000000000n;
/** VM_EXEC in vm_area_struct.vm_flags. */
export const VM_EXEC = 0x4n;

/**
 * Memory of a process: user addresses through the page tables rooted at `pgd` (the kernel
 * virtual address of `mm->pgd`), every other address through the kernel's view.
 * @throws Error with a one-line reason when the root cannot be used
 */
export function processMemory(kernel: Kernel, pgd: bigint): VirtualMemory {
  const kmem = kernel.memory;
  if (!kmem) throw new Error("kernel addresses cannot be translated in this dump");
  const root = kmem.translate(pgd);
  if (root < 0) {
    throw new Error(`page table root 0x${pgd.toString(16)} is not mapped: ${kmem.lastError}`);
  }
  const vmci = kernel.dump.vmcoreinfo;
  let walker;
  if (kernel.dump.arch === "x86_64") {
    const info = vmci ? x86PagingInfo(vmci) : undefined;
    let levels: 4 | 5 = info?.levels ?? 4;
    if (!info && kernel.dump.qemuCpus.length) {
      levels = (kernel.dump.qemuCpus[0].cr4 & (1n << 12n)) !== 0n ? 5 : 4;
    }
    walker = new X86_64Walker(kernel.phys, root, levels, info?.smeMask ?? 0n);
  } else {
    const info = vmci ? arm64PagingInfo(vmci) : undefined;
    if (!info) throw new Error("no VMCOREINFO: the arm64 translation settings are unknown");
    // TTBR0 (user half) is set up like TTBR1 in Linux: same granule and VA size.
    walker = new Arm64Walker(kernel.phys, root, info.vaBits, info.granule, false);
  }
  const view = new VirtualMemory(kernel.phys, walker);
  view.setFallback(kmem, (vaddr) => vaddr < USER_TOP);
  return view;
}

/** One memory mapping of a process (a VMA). */
export interface Vma {
  start: bigint;
  end: bigint;
  flags: bigint;
  /** Offset in the file, in pages. */
  pgoff: bigint;
  /** Base name of the mapped file, when it maps one. */
  file?: string;
}

// Maple tree encoding (include/linux/maple_tree.h).
const MAPLE_NODE_MASK = 0xffn;
const MAPLE_TYPE_SHIFT = 3n;
const MAPLE_TYPE_MASK = 0xfn;
const MAPLE_DENSE = 0;
const MAPLE_LEAF_64 = 1;
const MAPLE_RANGE_64 = 2;
const MAPLE_ARANGE_64 = 3;
const MAPLE_RANGE64_SLOTS = 16;
const MAPLE_ARANGE64_SLOTS = 10;
const ULONG_MAX = 0xffffffffffffffffn;
/** Bound on nodes visited: a damaged tree must not loop forever. */
const MAX_MAPLE_NODES = 1 << 20;

/** A process of the dump, found by pid. */
export class DumpedProcess {
  readonly kernel: Kernel;
  readonly tasks: KernelTasks;
  /** Thread-group leader. */
  readonly leader: TaskInfo;
  /** Every thread, the leader first. */
  readonly threads: TaskInfo[];
  /** `task->mm`. */
  readonly mm: bigint;
  /** `mm->pgd`: kernel virtual address of the top page table. */
  readonly pgd: bigint;
  /** The process's view of memory. */
  readonly memory: VirtualMemory;
  #m: (path: string) => MemberInfo | undefined;

  /** @throws DumpError when there is no such process or it has no user address space */
  constructor(tasks: KernelTasks, pid: number) {
    const kernel = tasks.kernel;
    const file = kernel.dump.files[0] ?? "dump";
    this.kernel = kernel;
    this.tasks = tasks;
    const list = tasks.list();
    const task = list.find((t) => t.pid === pid && t.idleOf === undefined);
    if (!task) throw new DumpError(file, `process ${pid}`, "no task with this pid in the dump");
    const threads = tasks.threadsOf(task.tgid);
    const leader = threads.find((t) => t.pid === task.tgid) ?? task;
    if (leader.kernelThread || leader.mm === 0n) {
      throw new DumpError(
        file,
        `process ${pid}`,
        `${leader.comm} is a kernel thread: it has no user address space`,
      );
    }
    this.leader = leader;
    this.threads = threads;
    this.mm = leader.mm;
    const btf = kernel.btf!;
    this.#m = (path) => btf.member("mm_struct", path);
    const pgdM = this.#m("pgd");
    const pgd = pgdM ? kernel.memory!.readU64(this.mm + BigInt(pgdM.offset)) : undefined;
    if (!pgd) {
      throw new DumpError(file, `process ${pid}`, `mm_struct at 0x${this.mm.toString(16)}: no pgd`);
    }
    this.pgd = pgd;
    try {
      this.memory = processMemory(kernel, pgd);
    } catch (e) {
      throw new DumpError(file, `process ${pid}`, e instanceof Error ? e.message : String(e));
    }
  }

  /** The pid (thread-group id). */
  get pid(): number {
    return this.leader.tgid;
  }

  /**
   * The auxiliary vector the kernel saved at exec (`mm->saved_auxv`), up to and including the
   * AT_NULL pair, as the bytes `qXfer:auxv:read` serves.
   */
  auxv(): Uint8Array | undefined {
    const m = this.#m("saved_auxv");
    if (!m) return undefined;
    const buf = new Uint8Array(m.size);
    if (this.kernel.memory!.read(this.mm + BigInt(m.offset), buf).error) return undefined;
    const v = new DataView(buf.buffer);
    for (let o = 0; o + 16 <= buf.length; o += 16) {
      if (v.getBigUint64(o, true) === 0n) return buf.slice(0, o + 16);
    }
    return buf;
  }

  /** The command line at `mm->arg_start`..`arg_end`, split at NULs. */
  argv(): string[] | undefined {
    const start = this.#u64("arg_start");
    const end = this.#u64("arg_end");
    if (start === undefined || end === undefined || end <= start || end - start > 1n << 20n) {
      return undefined;
    }
    const buf = new Uint8Array(Number(end - start));
    const r = this.memory.read(start, buf);
    if (r.bytes === 0) return undefined;
    const text = new TextDecoder().decode(buf.subarray(0, r.bytes));
    return text.replace(/\0$/, "").split("\0");
  }

  /** Path of the executable (`mm->exe_file`) as the dumped system named it. */
  exePath(): string | undefined {
    const m = this.#m("exe_file");
    const file = m ? this.kernel.memory!.readU64(this.mm + BigInt(m.offset)) : undefined;
    return file ? filePath(this.kernel, file) : undefined;
  }

  /** The memory mappings, by address. */
  vmas(): Vma[] {
    const btf = this.kernel.btf!;
    const mem = this.kernel.memory!;
    const v = (p: string) => btf.member("vm_area_struct", p);
    const [startM, endM, flagsM, mmM, fileM, pgoffM] = [
      v("vm_start"),
      v("vm_end"),
      v("vm_flags"),
      v("vm_mm"),
      v("vm_file"),
      v("vm_pgoff"),
    ];
    if (!startM || !endM || !flagsM || !mmM) return [];
    const addresses = this.#m("mm_mt") ? this.#mapleEntries() : this.#vmaList();
    const out: Vma[] = [];
    const seen = new Set<bigint>();
    for (const a of addresses) {
      if (seen.has(a)) continue;
      seen.add(a);
      // Only what really belongs to this mm: a stale slot must not add a mapping.
      if (mem.readU64(a + BigInt(mmM.offset)) !== this.mm) continue;
      const start = mem.readU64(a + BigInt(startM.offset));
      const end = mem.readU64(a + BigInt(endM.offset));
      const flags = mem.readU64(a + BigInt(flagsM.offset));
      if (start === undefined || end === undefined || flags === undefined || end <= start) continue;
      const vma: Vma = {
        start,
        end,
        flags,
        pgoff: pgoffM ? mem.readU64(a + BigInt(pgoffM.offset)) ?? 0n : 0n,
      };
      const f = fileM ? mem.readU64(a + BigInt(fileM.offset)) : undefined;
      if (f) vma.file = fileName(this.kernel, f);
      out.push(vma);
    }
    return out.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  }

  /** Start of the first executable mapping (the original tool's `loadaddr`). */
  loadAddress(vmas = this.vmas()): bigint | undefined {
    return vmas.find((v) => (v.flags & VM_EXEC) !== 0n)?.start;
  }

  #u64(member: string): bigint | undefined {
    const m = this.#m(member);
    return m ? this.kernel.memory!.readU64(this.mm + BigInt(m.offset)) : undefined;
  }

  /** VMA addresses from the pre-6.1 list `mm->mmap` / `vm_next`. */
  #vmaList(): bigint[] {
    const btf = this.kernel.btf!;
    const next = btf.member("vm_area_struct", "vm_next");
    let vma = this.#u64("mmap");
    const out: bigint[] = [];
    while (vma && next && out.length < MAX_MAPLE_NODES) {
      out.push(vma);
      vma = this.kernel.memory!.readU64(vma + BigInt(next.offset));
    }
    return out;
  }

  /** Every entry of the maple tree `mm->mm_mt` (VMA pointers), in index order. */
  #mapleEntries(): bigint[] {
    const btf = this.kernel.btf!;
    const mem = this.kernel.memory!;
    const mt = this.#m("mm_mt")!;
    const rootM = btf.member("maple_tree", "ma_root");
    if (!rootM) return [];
    const root = mem.readU64(this.mm + BigInt(mt.offset + rootM.offset));
    if (!root) return [];
    if (!isMapleNode(root)) return isMapleInternal(root) ? [] : [root];
    const layout = {
      rangePivot: btf.member("maple_range_64", "pivot")?.offset ?? 8,
      rangeSlot: btf.member("maple_range_64", "slot")?.offset ?? 128,
      rangeMeta: btf.member("maple_range_64", "meta")?.offset ?? 248,
      arangePivot: btf.member("maple_arange_64", "pivot")?.offset ?? 8,
      arangeSlot: btf.member("maple_arange_64", "slot")?.offset ?? 80,
      arangeMeta: btf.member("maple_arange_64", "meta")?.offset ?? 240,
    };
    const out: bigint[] = [];
    const node = new Uint8Array(256);
    const view = new DataView(node.buffer);
    let visited = 0;
    const visit = (entry: bigint, max: bigint): void => {
      if (visited++ > MAX_MAPLE_NODES) return;
      const type = Number((entry >> MAPLE_TYPE_SHIFT) & MAPLE_TYPE_MASK);
      const addr = entry & ~MAPLE_NODE_MASK;
      if (mem.read(addr, node).error) return;
      const arange = type === MAPLE_ARANGE_64;
      if (type !== MAPLE_LEAF_64 && type !== MAPLE_RANGE_64 && !arange) {
        if (type !== MAPLE_DENSE) return;
      }
      const slots = arange ? MAPLE_ARANGE64_SLOTS : MAPLE_RANGE64_SLOTS;
      const pivotAt = arange ? layout.arangePivot : layout.rangePivot;
      const slotAt = arange ? layout.arangeSlot : layout.rangeSlot;
      const metaEnd = node[arange ? layout.arangeMeta : layout.rangeMeta];
      const pivot = (i: number) => view.getBigUint64(pivotAt + i * 8, true);
      // The last used slot, as the kernel's ma_data_end() finds it.
      let end: number;
      if (arange) end = metaEnd;
      else if (type === MAPLE_DENSE) end = slots - 1;
      else {
        const last = slots - 2; // the last pivot
        if (pivot(last) === 0n) end = metaEnd;
        else if (pivot(last) === max) end = last;
        else end = slots - 1;
      }
      end = Math.min(end, slots - 1);
      const leaf = type === MAPLE_LEAF_64 || type === MAPLE_DENSE;
      for (let i = 0; i <= end; i++) {
        const slot = view.getBigUint64(slotAt + i * 8, true);
        if (slot === 0n) continue;
        if (leaf) {
          if (!isMapleInternal(slot)) out.push(slot);
        } else if (isMapleNode(slot)) {
          visit(slot, i < slots - 1 ? pivot(i) : max);
        }
      }
    };
    visit(root, ULONG_MAX);
    return out;
  }
}

/** xa_is_node: an internal entry that points to a tree node. */
function isMapleNode(entry: bigint): boolean {
  return (entry & 3n) === 2n && entry > 4096n;
}

/** Internal (reserved) entries, such as XA_ZERO_ENTRY: not stored values. */
function isMapleInternal(entry: bigint): boolean {
  return (entry & 3n) === 2n;
}

/** The base name of a `struct file` (its dentry's name). */
export function fileName(kernel: Kernel, file: bigint): string | undefined {
  const btf = kernel.btf!;
  const dentryM = btf.member("file", "f_path.dentry");
  const dentry = dentryM ? kernel.memory!.readU64(file + BigInt(dentryM.offset)) : undefined;
  return dentry ? dentryName(kernel, dentry) : undefined;
}

function dentryName(kernel: Kernel, dentry: bigint): string | undefined {
  const btf = kernel.btf!;
  const nameM = btf.member("dentry", "d_name.name");
  const lenM = btf.member("dentry", "d_name.len");
  if (!nameM) return undefined;
  const name = kernel.memory!.readU64(dentry + BigInt(nameM.offset));
  if (!name) return undefined;
  const len = lenM ? kernel.readU32(dentry + BigInt(lenM.offset)) : undefined;
  return kernel.memory!.readCString(name, Math.min(len !== undefined ? len + 1 : 256, 256));
}

/**
 * The path of a `struct file` as the dumped system saw it, following dentries up to their
 * mount's root and mounts up to the root mount (like the kernel's d_path).
 */
export function filePath(kernel: Kernel, file: bigint): string | undefined {
  const btf = kernel.btf!;
  const mem = kernel.memory!;
  const off = (s: string, p: string) => btf.member(s, p)?.offset;
  const pathMnt = off("file", "f_path.mnt");
  const pathDentry = off("file", "f_path.dentry");
  const dParent = off("dentry", "d_parent");
  const mntRoot = off("vfsmount", "mnt_root");
  const mountMnt = off("mount", "mnt");
  const mntParent = off("mount", "mnt_parent");
  const mntMountpoint = off("mount", "mnt_mountpoint");
  if (pathDentry === undefined || dParent === undefined) return undefined;
  let dentry = mem.readU64(file + BigInt(pathDentry));
  const vfsmnt = pathMnt !== undefined ? mem.readU64(file + BigInt(pathMnt)) : undefined;
  let mount = vfsmnt !== undefined && mountMnt !== undefined
    ? vfsmnt - BigInt(mountMnt)
    : undefined;
  const parts: string[] = [];
  for (let i = 0; dentry && i < 4096; i++) {
    const root = mount !== undefined && mountMnt !== undefined && mntRoot !== undefined
      ? mem.readU64(mount + BigInt(mountMnt + mntRoot))
      : undefined;
    const parent = mem.readU64(dentry + BigInt(dParent));
    if (dentry === root || parent === dentry) {
      // At the root of a mount: continue from where it is mounted, unless it is the root mount.
      if (mount === undefined || mntParent === undefined || mntMountpoint === undefined) break;
      const up = mem.readU64(mount + BigInt(mntParent));
      if (!up || up === mount) break;
      dentry = mem.readU64(mount + BigInt(mntMountpoint));
      mount = up;
      continue;
    }
    const name = dentryName(kernel, dentry);
    if (name === undefined) return undefined;
    parts.push(name);
    dentry = parent;
  }
  return "/" + parts.reverse().join("/");
}

/**
 * The address space of the process owning `mm` (a `struct mm_struct *`): user addresses through
 * its page tables, kernel addresses through the kernel's. Undefined when the kernel's types or
 * the mm are not available.
 */
export function userMemoryOf(kernel: Kernel, mm: bigint): VirtualMemory | undefined {
  const pgdField = kernel.btf?.member("mm_struct", "pgd");
  if (!pgdField || mm === 0n || !kernel.memory) return undefined;
  const pgd = kernel.memory.readU64(mm + BigInt(pgdField.offset));
  if (pgd === undefined || pgd === 0n) return undefined;
  try {
    return processMemory(kernel, pgd);
  } catch {
    return undefined;
  }
}
