/**
 * Tasks mode: every task of the dumped kernel is a gdb thread, with the kernel registers it saved
 * when it last switched out (or its CPU's registers when it was running), over kernel memory.
 *
 * The same target serves a task list read from the original tool's `-k` JSON file.
 *
 * @module
 */

import type { MemoryRead, MonitorOutput, RegisterValues, Target, ThreadInfo } from "./target.ts";
import type { Kernel } from "./kernel.ts";
import { KernelTarget } from "./kernel_target.ts";
import { KernelTasks } from "./tasks.ts";
import { USER_TOP, userMemoryOf } from "./process.ts";
import type { VirtualMemory } from "./paging.ts";
import { filterPs, formatPs, psComm, type PsRow, taskPsRow } from "./ps.ts";

export { filterPs, formatPs, psComm, type PsRow, taskPsRow };

/** gdb's signal number for a trap: a neutral "stopped here" for a dump. */
const SIGTRAP = 5;
/** The kernel's PID_MAX_LIMIT: thread ids above it cannot collide with a pid. */
const PID_MAX_LIMIT = 4 * 1024 * 1024;

/** One thread of a tasks target. */
export interface TaskThread {
  info: ThreadInfo;
  /** Registers, computed when gdb first asks. */
  registers: () => RegisterValues;
  ps: PsRow;
  /** `task->mm`: user addresses read in this thread go through that process's page tables. */
  mm?: bigint;
}

/**
 * gdb thread ids for tasks: the thread id (pid) itself when it is positive and unique, so
 * `Thread 95` is task 95; idle tasks (all pid 0) and duplicates get ids above PID_MAX_LIMIT.
 */
export function assignThreadIds(tids: readonly number[]): number[] {
  const count = new Map<number, number>();
  for (const t of tids) count.set(t, (count.get(t) ?? 0) + 1);
  let next = PID_MAX_LIMIT + 1;
  return tids.map((t) => (t > 0 && t <= PID_MAX_LIMIT && count.get(t) === 1 ? t : next++));
}

/** Thread name: `95 sleep`, `2 [kthreadd]`, `100 crasher.sh (CPU 1)`. */
export function taskThreadName(tid: number, comm: string, running?: number): string {
  return running === undefined ? `${tid} ${comm}` : `${tid} ${comm} (CPU ${running})`;
}

/** Serves a list of kernel tasks as threads over kernel memory. */
export class TasksTarget implements Target {
  readonly kernel: Kernel;
  /** Where the task list came from, for banners (`the dump's task list`, a JSON file). */
  readonly source: string;
  /** Things the user should know (e.g. register names of a JSON file that were ignored). */
  readonly warnings: string[] = [];
  #kernelTarget: KernelTarget;
  #threads: ThreadInfo[];
  #byId: Map<number, TaskThread>;
  #stop: number;

  /**
   * @param threads threads in gdb order
   * @param stopThread thread to report as stopped (the panicking task), else the first
   */
  constructor(kernel: Kernel, threads: TaskThread[], source: string, stopThread?: number) {
    this.kernel = kernel;
    this.source = source;
    this.#kernelTarget = new KernelTarget(kernel);
    this.#threads = threads.map((t) => t.info);
    this.#byId = new Map(threads.map((t) => [t.info.id, t]));
    this.#stop = stopThread ?? this.#threads[0]?.id ?? 1;
  }

  get arch() {
    return this.kernel.dump.arch;
  }

  threads(): ThreadInfo[] {
    return this.#threads;
  }

  stopThread(): number {
    return this.#stop;
  }

  stopSignal(): number {
    return SIGTRAP;
  }

  registers(threadId: number): RegisterValues {
    return this.#byId.get(threadId)?.registers() ?? new Map();
  }

  #prepared = 0;

  /**
   * Read every task's saved registers ahead of gdb's requests (they are cached once read): at
   * least one task per call, more while the budget lasts.
   */
  prepare(budgetMs: number): boolean {
    const until = performance.now() + budgetMs;
    const threads = this.#threads;
    while (this.#prepared < threads.length) {
      this.registers(threads[this.#prepared++].id);
      if (performance.now() >= until) break;
    }
    return this.#prepared < threads.length;
  }

  readMemory(address: bigint, length: number, threadId?: number): MemoryRead {
    const view = this.#userView(address, threadId);
    if (view) {
      const out = new Uint8Array(length);
      const r = view.read(address, out);
      return { data: out.subarray(0, r.bytes), error: r.error };
    }
    return this.#kernelTarget.readMemory(address, length);
  }

  /** The page tables a read of `address` for `threadId` goes through (see KernelTarget's). */
  memoryFor(address: bigint, threadId?: number): VirtualMemory | undefined {
    return this.#userView(address, threadId) ?? this.#kernelTarget.memoryFor(address);
  }

  /** The task's own user address space, for a user address of a task that has one. */
  #userView(address: bigint, threadId: number | undefined): VirtualMemory | undefined {
    const mm = threadId === undefined ? undefined : this.#byId.get(threadId)?.mm;
    if (address >= USER_TOP || !mm) return undefined;
    if (!this.#userViews.has(mm)) this.#userViews.set(mm, userMemoryOf(this.kernel, mm));
    return this.#userViews.get(mm);
  }

  #userViews = new Map<bigint, VirtualMemory | undefined>();

  readPhysical(address: bigint, length: number): MemoryRead {
    return this.#kernelTarget.readPhysical(address, length);
  }

  execFile(): string | undefined {
    return this.#kernelTarget.execFile();
  }

  textSegment(): bigint | undefined {
    return this.#kernelTarget.textSegment();
  }

  libraries(): readonly { name: string; data: Uint8Array }[] {
    return this.#kernelTarget.libraries();
  }

  vmcoreinfo(): Uint8Array | undefined {
    return this.#kernelTarget.vmcoreinfo();
  }

  monitorHelp(): string[] {
    return [
      "ps [PID|NAME]       list tasks: pid, thread id, parent, CPU, state, uid, gdb thread, task",
      // The kernel target's own ps line would list ps a second time.
      ...this.#kernelTarget.monitorHelp().filter((l) => !l.startsWith("ps ")),
    ];
  }

  monitor(command: string, out: MonitorOutput): boolean {
    const [verb, arg] = command.trim().split(/\s+/);
    if (verb === "ps") {
      const rows = [...this.#byId.values()].map((t) => t.ps);
      out(formatPs(filterPs(rows, arg)));
      for (const f of this.#kernelTarget.kernel.foundBySearch) out(`note: ${f}\n`);
      return true;
    }
    return this.#kernelTarget.monitor(command, out);
  }
}

/**
 * Tasks mode from the dump itself (`--tasks`): needs the kernel's types (BTF) and symbols.
 * @throws DumpError when the task list cannot be read
 */
export function tasksTarget(kernel: Kernel, tasks = new KernelTasks(kernel)): TasksTarget {
  const list = tasks.list();
  const ids = assignThreadIds(list.map((t) => t.pid));
  let stop: number | undefined;
  const panicCpu = kernel.panicCpu ?? 0;
  const threads = list.map((t, i): TaskThread => {
    const id = ids[i];
    if (t.runningOn === panicCpu) stop = id;
    const comm = psComm(t.comm, t.kernelThread);
    const name = t.unreadable
      ? `task 0x${t.address.toString(16)} (CPU ${t.runningOn}; task_struct not in the dump)`
      : taskThreadName(t.pid, comm, t.runningOn);
    return {
      info: {
        id,
        name,
        extra: `${t.state}, task 0x${t.address.toString(16)}`,
        core: t.runningOn ?? t.cpu,
        onCpu: t.runningOn !== undefined,
        task: t.address,
      },
      registers: () => tasks.kernelRegisters(t),
      ps: taskPsRow(tasks, t, id),
      mm: t.mm,
    };
  });
  const target = new TasksTarget(kernel, threads, "the dump's task list", stop);
  target.warnings.push(...tasks.warnings);
  return target;
}
