/**
 * What a kernel without data symbols in kallsyms (no `CONFIG_KALLSYMS_ALL`, e.g. Debian's arm64
 * 6.1) still lets us find, by validated searches of the dump's memory, so that tasks, `ps` and
 * backtraces work without a vmlinux:
 * - its BTF: the `.BTF` section lies in the read-only data between `_etext` and `_sinittext`
 *   (text symbols, which kallsyms always has); found by its header, kept only if it parses;
 * - `init_task`: the boot CPU's idle task, in the kernel's data after the init text, found by
 *   its comm `swapper/0` and kept only if its pid is 0 and its task list goes round and back;
 * - each CPU's runqueue (a per-CPU variable, whose offsets are data symbols too): every task's
 *   `se.cfs_rq->rq` points to the runqueue of the CPU it last ran on, which names the CPU, its
 *   current task and its idle task (kept only if the idle task is a `swapper/N` with pid 0).
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { VirtualMemory } from "./paging.ts";
import { Btf } from "./btf.ts";

/** BTF header start: magic 0xeb9f, version 1, flags 0, hdr_len 24 (little-endian). */
const BTF_HEADER = [0x9f, 0xeb, 0x01, 0x00, 0x18, 0x00, 0x00, 0x00];
/** Most bytes scanned for one thing (the arm64 6.1 image has 8 MiB of read-only data). */
const MAX_SCAN = 64 << 20;
const PAGE = 4096;

/** Scan kernel memory page by page from `start` to `end`; `visit` returns a result to stop. */
function scanPages<T>(
  mem: VirtualMemory,
  start: bigint,
  end: bigint,
  visit: (page: Uint8Array, at: bigint) => T | undefined,
): T | undefined {
  // One page of overlap so a pattern across a page boundary is seen.
  const buf = new Uint8Array(PAGE * 2);
  let at = start & ~BigInt(PAGE - 1);
  if (end - at > BigInt(MAX_SCAN)) end = at + BigInt(MAX_SCAN);
  for (; at < end; at += BigInt(PAGE)) {
    const r = mem.read(at, buf);
    if (r.bytes === 0) continue;
    const hit = visit(buf.subarray(0, r.bytes), at);
    if (hit !== undefined) return hit;
  }
  return undefined;
}

/** The kernel's BTF found in its read-only data, with its address. */
export function findBtfInImage(kernel: Kernel): { btf: Btf; address: bigint } | undefined {
  const mem = kernel.memory;
  const ks = kernel.kallsyms();
  const start = ks?.get("_etext");
  const end = ks?.get("_sinittext");
  if (!mem || start === undefined || end === undefined || end <= start) return undefined;
  return scanPages(mem, start, end, (page, at) => {
    for (let i = page.indexOf(0x9f); i >= 0 && i < PAGE; i = page.indexOf(0x9f, i + 1)) {
      if (!BTF_HEADER.every((b, j) => page[i + j] === b)) continue;
      const addr = at + BigInt(i);
      const head = new Uint8Array(24);
      if (mem.read(addr, head).bytes !== 24) continue;
      const v = new DataView(head.buffer);
      const size = 24 + Math.max(
        v.getUint32(8, true) + v.getUint32(12, true),
        v.getUint32(16, true) + v.getUint32(20, true),
      );
      if (size > 64 << 20) continue;
      const bytes = new Uint8Array(size);
      if (mem.read(addr, bytes).error) continue;
      try {
        const btf = new Btf(bytes);
        if (btf.structId("task_struct") !== undefined) return { btf, address: addr };
      } catch {
        // Not BTF after all: keep looking.
      }
    }
    return undefined;
  });
}

/** `init_task` found by a validated search of the kernel's data (needs BTF). */
export function findInitTask(kernel: Kernel): bigint | undefined {
  const mem = kernel.memory;
  const btf = kernel.btf;
  const ks = kernel.kallsyms();
  const from = ks?.get("_einittext") ?? ks?.get("_etext");
  if (!mem || !btf || from === undefined) return undefined;
  const comm = btf.member("task_struct", "comm");
  const pid = btf.member("task_struct", "pid");
  const tasks = btf.member("task_struct", "tasks");
  if (!comm || !pid || !tasks) return undefined;
  const want = new TextEncoder().encode("swapper/0\0");
  return scanPages(mem, from, from + BigInt(MAX_SCAN), (page, at) => {
    for (let i = page.indexOf(0x73); i >= 0 && i < PAGE; i = page.indexOf(0x73, i + 1)) {
      if (!want.every((b, j) => page[i + j] === b)) continue;
      const task = at + BigInt(i - comm.offset);
      if (validInitTask(kernel, task, pid.offset, tasks.offset)) return task;
    }
    return undefined;
  });
}

function validInitTask(kernel: Kernel, task: bigint, pidOff: number, tasksOff: number): boolean {
  const mem = kernel.memory!;
  if (kernel.readU32(task + BigInt(pidOff)) !== 0) return false;
  const head = task + BigInt(tasksOff);
  // Round the task list, each link confirmed by the next one's back pointer.
  let node = head;
  for (let n = 0; n < 1 << 22; n++) {
    const next = mem.readU64(node);
    if (next === undefined || next < 0xffff000000000000n) return false;
    if (mem.readU64(next + 8n) !== node) return false;
    if (next === head) return n > 0;
    node = next;
  }
  return false;
}

/** A CPU's runqueue as the scheduler's links show it. */
export interface FoundRunqueue {
  cpu: number;
  rq: bigint;
  curr: bigint;
  idle: bigint;
}

/** Each CPU's runqueue, from the tasks on `init_task`'s list (needs BTF with group scheduling). */
export function findRunqueues(kernel: Kernel, initTask: bigint): Map<number, FoundRunqueue> {
  const out = new Map<number, FoundRunqueue>();
  const mem = kernel.memory;
  const btf = kernel.btf;
  if (!mem || !btf) return out;
  const tasksM = btf.member("task_struct", "tasks");
  const cfsRqM = btf.member("task_struct", "se.cfs_rq");
  const rqM = btf.member("cfs_rq", "rq");
  const cpuM = btf.member("rq", "cpu");
  const currM = btf.member("rq", "curr");
  const idleM = btf.member("rq", "idle");
  const pidM = btf.member("task_struct", "pid");
  const commM = btf.member("task_struct", "comm");
  if (!tasksM || !cfsRqM || !rqM || !cpuM || !currM || !idleM || !pidM || !commM) return out;
  const cpus = kernel.dump.cpus.length;
  const seen = new Set<bigint>();
  const head = initTask + BigInt(tasksM.offset);
  let node = mem.readU64(head);
  for (let n = 0; node !== undefined && node !== head && n < 1 << 22 && out.size < cpus; n++) {
    const task = node - BigInt(tasksM.offset);
    const cfs = mem.readU64(task + BigInt(cfsRqM.offset));
    const rq = cfs ? mem.readU64(cfs + BigInt(rqM.offset)) : undefined;
    if (rq && !seen.has(rq)) {
      seen.add(rq);
      const cpu = kernel.readU32(rq + BigInt(cpuM.offset));
      const idle = mem.readU64(rq + BigInt(idleM.offset));
      const curr = mem.readU64(rq + BigInt(currM.offset));
      if (cpu !== undefined && cpu < cpus && idle && curr && !out.has(cpu)) {
        const idlePid = kernel.readU32(idle + BigInt(pidM.offset));
        const idleComm = mem.readCString(idle + BigInt(commM.offset), commM.size);
        if (idlePid === 0 && idleComm === `swapper/${cpu}`) out.set(cpu, { cpu, rq, curr, idle });
      }
    }
    node = mem.readU64(node);
  }
  return out;
}
