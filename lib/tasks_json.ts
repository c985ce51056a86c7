/**
 * The original kdump-gdbserver's JSON files, read into targets:
 * - `-k tasks.json`: `{"threads": [{"pid", "tid", "comm", "registers": {name: value}}]}`, every
 *   task a thread over kernel memory;
 * - `-j process.json`: `{"rootpgt", "loadaddr", "threads": [...]}`, one process's address space
 *   with user-mode registers.
 *
 * Register values are integers (64-bit values are kept exact: JSON numbers are read from their
 * source text) or `"0x…"` strings. Our gdb script (cli/gdb/kdump.py) adds optional keys the
 * original ignored: per thread `task`, `state`, `cpu` (the CPU it was running on); per process
 * `pid`, `comm`, `exe`, `auxv` (pairs of type and value).
 *
 * @module
 */

import { readFileSync } from "node:fs";
import type { Kernel } from "./kernel.ts";
import type { ArchName } from "./target.ts";
import { DumpError } from "./errors.ts";
import { X86_64_LAYOUT } from "./regs_x86_64.ts";
import { AARCH64_LAYOUT } from "./regs_aarch64.ts";
import {
  assignThreadIds,
  type PsRow,
  TasksTarget,
  type TaskThread,
  taskThreadName,
} from "./tasks_target.ts";
import { ProcessTarget, type ProcessTargetOptions, type ProcessThread } from "./process_target.ts";
import { processMemory } from "./process.ts";
import { errorText } from "./file_source.ts";

/** One thread as the JSON files describe it. */
export interface JsonThread {
  /** Process id (tgid). */
  pid: number;
  /** Thread id (the kernel's pid). */
  tid: number;
  comm: string;
  registers: Map<string, bigint>;
  /** task_struct address (our script's extension). */
  task?: bigint;
  /** ps state letter (our script's extension). */
  state?: string;
  /** CPU the task was running on (our script's extension). */
  cpu?: number;
}

/** A parsed `-k` file. */
export interface TasksJson {
  threads: JsonThread[];
  /** Register names the layout does not know, ignored. */
  ignoredRegisters: string[];
}

/** A parsed `-j` file. */
export interface ProcessJson extends TasksJson {
  /** Kernel virtual address of the process's top page table (`mm->pgd`). */
  rootpgt: bigint;
  /** Start of the first executable mapping. */
  loadaddr?: bigint;
  pid?: number;
  comm?: string;
  exe?: string;
  /** Auxiliary vector pairs. */
  auxv?: [bigint, bigint][];
}

/** Register names the original tool and drgn use that gdb spells differently. */
const ALIASES: Record<string, string> = {
  rflags: "eflags",
  pstate: "cpsr",
  fp: "x29",
  lr: "x30",
};

/** A JSON value whose numbers keep their source text. */
type Raw = null | boolean | string | RawNumber | Raw[] | { [key: string]: Raw };
/** A JSON number with the exact digits it was written with. */
class RawNumber {
  constructor(readonly value: number, readonly source: string) {}
}

function parseJsonExact(path: string, text: string): Raw {
  try {
    return JSON.parse(text, (_key, value, context?: { source?: string }) => {
      if (typeof value === "number") return new RawNumber(value, context?.source ?? String(value));
      return value;
    });
  } catch (e) {
    throw new DumpError(path, "JSON", `not valid JSON: ${errorText(e)}`);
  }
}

function readJson(path: string): Raw {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new DumpError(path, "JSON", `cannot read the file: ${errorText(e)}`);
  }
  return parseJsonExact(path, text);
}

const isObject = (v: Raw | undefined): v is { [key: string]: Raw } =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof RawNumber);

/** An integer: a JSON integer of any size, or a "0x…"/decimal string; negative wraps to u64. */
function integer(path: string, where: string, v: Raw | undefined): bigint {
  let n: bigint | undefined;
  if (v instanceof RawNumber && /^-?\d+$/.test(v.source)) n = BigInt(v.source);
  else if (typeof v === "string" && /^(0x[0-9a-f]+|-?\d+)$/i.test(v.trim())) n = BigInt(v.trim());
  if (n === undefined) {
    throw new DumpError(path, where, `expected an integer, found ${JSON.stringify(show(v))}`);
  }
  return BigInt.asUintN(64, n);
}

function small(path: string, where: string, v: Raw | undefined): number {
  const n = integer(path, where, v);
  if (n > 0xffffffffn) throw new DumpError(path, where, `${n} is out of range`);
  return Number(n);
}

function show(v: Raw | undefined): unknown {
  if (v instanceof RawNumber) return v.value;
  if (Array.isArray(v)) return "[…]";
  if (isObject(v)) return "{…}";
  return v;
}

function parseThreads(path: string, root: Raw, arch: ArchName): TasksJson {
  if (!isObject(root)) throw new DumpError(path, "JSON", "expected an object at the top");
  const list = root.threads;
  if (!Array.isArray(list)) throw new DumpError(path, "threads", "expected an array of threads");
  if (list.length === 0) throw new DumpError(path, "threads", "the list is empty");
  const layout = arch === "x86_64" ? X86_64_LAYOUT : AARCH64_LAYOUT;
  const known = new Set(layout.registers.map((r) => r.name));
  const pc = arch === "x86_64" ? "rip" : "pc";
  const ignored = new Set<string>();
  let withPc = 0;
  const threads = list.map((t, i): JsonThread => {
    const at = `threads[${i}]`;
    if (!isObject(t)) throw new DumpError(path, at, "expected an object");
    const comm = t.comm;
    if (typeof comm !== "string") throw new DumpError(path, `${at}.comm`, "expected a string");
    const regs = t.registers;
    if (!isObject(regs)) throw new DumpError(path, `${at}.registers`, "expected an object");
    const registers = new Map<string, bigint>();
    for (const [key, value] of Object.entries(regs)) {
      const name = known.has(key) ? key : ALIASES[key];
      if (name === undefined || !known.has(name)) {
        ignored.add(key);
        continue;
      }
      registers.set(name, integer(path, `${at}.registers.${key}`, value));
    }
    if (registers.has(pc)) withPc++;
    const thread: JsonThread = {
      pid: small(path, `${at}.pid`, t.pid),
      tid: small(path, `${at}.tid`, t.tid),
      comm,
      registers,
    };
    if (t.task !== undefined && t.task !== null) thread.task = integer(path, `${at}.task`, t.task);
    if (typeof t.state === "string") thread.state = t.state;
    if (t.cpu !== undefined && t.cpu !== null) thread.cpu = small(path, `${at}.cpu`, t.cpu);
    return thread;
  });
  if (withPc === 0) {
    throw new DumpError(
      path,
      "threads",
      `no thread has a "${pc}" register: are these registers of another architecture than the ` +
        `dump's (${arch})?`,
    );
  }
  return { threads, ignoredRegisters: [...ignored] };
}

/**
 * Read a `-k` file.
 * @throws DumpError with a one-line message naming the file and the entry at fault
 */
export function readTasksJson(path: string, arch: ArchName): TasksJson {
  return parseThreads(path, readJson(path), arch);
}

/**
 * Read a `-j` file.
 * @throws DumpError with a one-line message naming the file and the entry at fault
 */
export function readProcessJson(path: string, arch: ArchName): ProcessJson {
  const root = readJson(path);
  const base = parseThreads(path, root, arch);
  const o = root as { [key: string]: Raw };
  const out: ProcessJson = { ...base, rootpgt: integer(path, "rootpgt", o.rootpgt) };
  if (o.loadaddr !== undefined && o.loadaddr !== null) {
    out.loadaddr = integer(path, "loadaddr", o.loadaddr);
  }
  if (o.pid !== undefined && o.pid !== null) out.pid = small(path, "pid", o.pid);
  if (typeof o.comm === "string") out.comm = o.comm;
  if (typeof o.exe === "string") out.exe = o.exe;
  if (o.auxv !== undefined && o.auxv !== null) {
    if (!Array.isArray(o.auxv)) throw new DumpError(path, "auxv", "expected an array of pairs");
    out.auxv = o.auxv.map((pair, i): [bigint, bigint] => {
      if (!Array.isArray(pair) || pair.length !== 2) {
        throw new DumpError(path, `auxv[${i}]`, "expected a [type, value] pair");
      }
      return [integer(path, `auxv[${i}][0]`, pair[0]), integer(path, `auxv[${i}][1]`, pair[1])];
    });
  }
  return out;
}

/** Which CPU a JSON thread was running on: its `cpu` key, else the dump's per-CPU task. */
function runningCpu(kernel: Kernel, t: JsonThread): number | undefined {
  if (t.cpu !== undefined) return t.cpu < kernel.dump.cpus.length ? t.cpu : undefined;
  const comm = t.comm.replace(/^\[(.*)\]$/, "$1");
  for (const c of kernel.cpuTasks) {
    if (t.task !== undefined && c.task !== undefined) {
      if (c.task === t.task) return c.cpu;
      continue;
    }
    if (c.pid === undefined || c.pid !== t.tid) continue;
    // Idle tasks all have pid 0: their names (swapper/N) tell them apart.
    if (c.comm !== undefined ? c.comm === comm : c.pid !== 0) return c.cpu;
  }
  return undefined;
}

function psRow(t: JsonThread, threadId: number | undefined, running?: number): PsRow {
  return {
    threadId,
    pid: t.pid,
    tid: t.tid,
    running,
    state: t.state,
    address: t.task,
    comm: t.comm,
  };
}

/**
 * A tasks target from a `-k` file: every task a thread over kernel memory; a task that was
 * running on a CPU gets that CPU's registers from the dump (and keeps its name).
 * @throws DumpError for an unreadable or invalid file
 */
export function targetFromTasksJson(kernel: Kernel, path: string): TasksTarget {
  const json = readTasksJson(path, kernel.dump.arch);
  const ids = assignThreadIds(json.threads.map((t) => t.tid));
  const panicCpu = kernel.panicCpu ?? 0;
  let stop: number | undefined;
  const threads = json.threads.map((t, i): TaskThread => {
    const cpu = runningCpu(kernel, t);
    if (cpu === panicCpu) stop = ids[i];
    const cpuRegs = cpu === undefined ? undefined : kernel.dump.cpus[cpu]?.registers;
    const regs = cpuRegs ?? t.registers;
    return {
      info: {
        id: ids[i],
        name: taskThreadName(t.tid, t.comm, cpu),
        extra: t.task === undefined
          ? undefined
          : `${t.state ?? "?"}, task 0x${t.task.toString(16)}`,
        core: cpu,
        onCpu: cpu !== undefined,
        task: t.task,
      },
      registers: () => regs,
      ps: psRow(t, ids[i], cpu),
    };
  });
  const target = new TasksTarget(kernel, threads, path, stop);
  target.warnings.push(...ignoredWarning(path, json.ignoredRegisters));
  return target;
}

/**
 * A process target from a `-j` file: user memory through the page tables at `rootpgt`, kernel
 * memory through the kernel's, the threads' user registers; auxv when the file has it.
 * @throws DumpError for an unreadable or invalid file, or a root table not in the dump
 */
export function targetFromProcessJson(
  kernel: Kernel,
  path: string,
  options: ProcessTargetOptions = {},
): ProcessTarget {
  const json = readProcessJson(path, kernel.dump.arch);
  let memory;
  try {
    memory = processMemory(kernel, json.rootpgt);
  } catch (e) {
    throw new DumpError(path, "rootpgt", errorText(e));
  }
  const ids = assignThreadIds(json.threads.map((t) => t.tid));
  const threads = json.threads.map((t, i): ProcessThread => ({
    info: {
      id: ids[i],
      name: `${t.tid} ${t.comm}`,
      core: t.cpu,
      onCpu: t.cpu !== undefined,
      task: t.task,
    },
    registers: () => t.registers,
  }));
  const panicCpu = kernel.panicCpu ?? 0;
  const stopIndex = json.threads.findIndex((t) => t.cpu === panicCpu);
  const auxv = json.auxv;
  const target = new ProcessTarget(kernel, {
    pid: json.pid ?? json.threads[0].pid,
    name: json.comm ?? path,
    memory,
    threads,
    stopThread: stopIndex >= 0 ? ids[stopIndex] : undefined,
    auxv: auxv ? () => packAuxv(auxv) : undefined,
    loadAddress: json.loadaddr,
    exePath: json.exe,
    ps: () => json.threads.map((t, i) => psRow(t, ids[i], t.cpu)),
  }, options);
  target.warnings.push(...ignoredWarning(path, json.ignoredRegisters));
  return target;
}

/** Pack auxv pairs as the 64-bit words gdb reads. */
export function packAuxv(pairs: readonly [bigint, bigint][]): Uint8Array {
  const out = new Uint8Array(pairs.length * 16);
  const v = new DataView(out.buffer);
  pairs.forEach(([type, value], i) => {
    v.setBigUint64(i * 16, type, true);
    v.setBigUint64(i * 16 + 8, value, true);
  });
  return out;
}

function ignoredWarning(path: string, names: string[]): string[] {
  return names.length
    ? [`${path}: registers gdb does not know were ignored: ${names.join(", ")}`]
    : [];
}
