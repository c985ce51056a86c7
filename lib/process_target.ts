/**
 * Process mode: one user process of the dump, seen as gdb sees a core file. Its threads carry
 * the user-mode registers saved at the top of their kernel stacks, memory reads go through the
 * process's page tables (kernel addresses through the kernel's), and the auxiliary vector is
 * served so gdb finds the PIE load address and the dynamic linker by itself.
 *
 * The same target serves the original tool's `-j` JSON file.
 *
 * @module
 */

import type { MemoryRead, MonitorOutput, RegisterValues, Target, ThreadInfo } from "./target.ts";
import type { Kernel } from "./kernel.ts";
import type { VirtualMemory } from "./paging.ts";
import { KernelTarget } from "./kernel_target.ts";
import { KernelTasks } from "./tasks.ts";
import { DumpedProcess, VM_EXEC, type Vma } from "./process.ts";
import { assignThreadIds } from "./tasks_target.ts";
import { filterPs, formatPs, type PsRow, taskPsRow } from "./ps.ts";
import { PageStatus, pageStatusText } from "./dump.ts";

/** gdb's signal number for a trap: a neutral "stopped here" for a dump. */
const SIGTRAP = 5;

/** One thread of a process target. */
export interface ProcessThread {
  info: ThreadInfo;
  registers: () => RegisterValues;
}

/** What a process target serves. */
export interface ProcessView {
  /** Process id. */
  pid: number;
  /** Name for banners: the command, or the JSON file. */
  name: string;
  memory: VirtualMemory;
  threads: ProcessThread[];
  /** Thread to report as stopped. */
  stopThread?: number;
  /** The auxiliary vector (qXfer:auxv:read). */
  auxv?: () => Uint8Array | undefined;
  /** Start of the first executable mapping (the original tool's `loadaddr`). */
  loadAddress?: bigint;
  /** Executable path in the dumped system. */
  exePath?: string;
  /** Memory mappings for `monitor maps`. */
  vmas?: () => Vma[];
  /** Rows for `monitor ps` (the whole system's tasks when known). */
  ps?: () => PsRow[];
}

/** Options of process targets. */
export interface ProcessTargetOptions {
  /**
   * Local copy of the process's executable for gdb to load by itself (qXfer:exec-file:read).
   * Without it gdb is not offered a path: the dumped system's path would name a file of this
   * machine, which may well be another program.
   */
  executable?: string;
}

/** Serves one process of a dump. */
export class ProcessTarget implements Target {
  readonly kernel: Kernel;
  readonly view: ProcessView;
  /** Things the user should know (e.g. register names of a JSON file that were ignored). */
  readonly warnings: string[] = [];
  #kernelTarget: KernelTarget;
  #threads: ThreadInfo[];
  #byId: Map<number, ProcessThread>;
  #scratch = new Uint8Array(0);
  #executable?: string;
  #auxv?: Uint8Array | null;

  constructor(kernel: Kernel, view: ProcessView, options: ProcessTargetOptions = {}) {
    this.kernel = kernel;
    this.view = view;
    this.#kernelTarget = new KernelTarget(kernel);
    this.#threads = view.threads.map((t) => t.info);
    this.#byId = new Map(view.threads.map((t) => [t.info.id, t]));
    this.#executable = options.executable;
  }

  get arch() {
    return this.kernel.dump.arch;
  }

  threads(): ThreadInfo[] {
    return this.#threads;
  }

  stopThread(): number {
    return this.view.stopThread ?? this.#threads[0]?.id ?? 1;
  }

  stopSignal(): number {
    return SIGTRAP;
  }

  registers(threadId: number): RegisterValues {
    return this.#byId.get(threadId)?.registers() ?? new Map();
  }

  readMemory(address: bigint, length: number): MemoryRead {
    if (this.#scratch.length < length) this.#scratch = new Uint8Array(length);
    const out = this.#scratch.subarray(0, length);
    const r = this.view.memory.read(address, out);
    return r.error === undefined
      ? { data: out }
      : { data: out.subarray(0, r.bytes), error: r.error };
  }

  execFile(): string | undefined {
    return this.#executable;
  }

  vmcoreinfo(): Uint8Array | undefined {
    return this.kernel.dump.vmcoreinfo?.raw;
  }

  auxv(): Uint8Array | undefined {
    if (this.#auxv === undefined) this.#auxv = this.view.auxv?.() ?? null;
    return this.#auxv ?? undefined;
  }

  monitorHelp(): string[] {
    return [
      "ps [PID|NAME]       list the dumped system's tasks",
      "maps                memory mappings of this process",
      "vtop ADDRESS        translate an address through this process's page tables",
      "sys                 kernel release, build-id, CPUs, panic CPU, KASLR, dump format",
      "cache               page cache statistics",
    ];
  }

  monitor(command: string, out: MonitorOutput): boolean {
    const [verb, arg] = command.trim().split(/\s+/);
    switch (verb) {
      case "ps": {
        const rows = this.view.ps?.();
        if (!rows) {
          out("ps: the task list needs the kernel's types (give --vmlinux)\n");
          return true;
        }
        out(formatPs(filterPs(rows, arg)));
        return true;
      }
      case "maps":
        out(this.#maps());
        return true;
      case "vtop":
        out(this.#vtop(arg) + "\n");
        return true;
      case "sys":
      case "cache":
        return this.#kernelTarget.monitor(command, out);
    }
    return false;
  }

  #maps(): string {
    const vmas = this.view.vmas?.();
    if (!vmas) return "maps: the mappings need the kernel's types (give --vmlinux)\n";
    const hex = (v: bigint) => v.toString(16).padStart(12, "0");
    const lines = vmas.map((v) => {
      const f = v.flags;
      const perms = ((f & 1n) ? "r" : "-") + ((f & 2n) ? "w" : "-") + ((f & VM_EXEC) ? "x" : "-") +
        ((f & 8n) ? "s" : "p");
      // Anonymous mappings keep their address in vm_pgoff: /proc/PID/maps shows 0 for them.
      const offset = v.file ? v.pgoff * BigInt(this.kernel.pageSize) : 0n;
      return `${hex(v.start)}-${hex(v.end)} ${perms} ${offset.toString(16).padStart(8, "0")}` +
        (v.file ? ` ${v.file}` : "");
    });
    return lines.join("\n") + `\n${vmas.length} mappings\n`;
  }

  #vtop(arg: string | undefined): string {
    if (!arg) return "usage: vtop ADDRESS";
    let addr: bigint;
    try {
      addr = BigInt(arg.startsWith("0x") ? arg : "0x" + arg);
    } catch {
      return `vtop: bad address "${arg}"`;
    }
    const mem = this.view.memory;
    const pa = mem.translate(addr);
    if (pa < 0) return `virtual  0x${addr.toString(16)}\nwalk:    ${mem.lastError}`;
    const pfn = Math.floor(pa / this.kernel.dump.pageSize);
    return `virtual  0x${addr.toString(16)}\nphysical 0x${pa.toString(16)}\n` +
      `page:    pfn 0x${pfn.toString(16)}, ${pageStatusText(this.kernel.phys.pageStatus(pfn))}`;
  }
}

/**
 * Process mode from the dump itself (`--pid N`): needs the kernel's types (BTF) and symbols.
 * @throws DumpError when there is no such user process or its tables cannot be used
 */
export function processTarget(
  kernel: Kernel,
  pid: number,
  options: ProcessTargetOptions = {},
  tasks = new KernelTasks(kernel),
): ProcessTarget {
  const proc = new DumpedProcess(tasks, pid);
  const ids = assignThreadIds(proc.threads.map((t) => t.pid));
  const panicCpu = kernel.panicCpu ?? 0;
  let stop: number | undefined;
  const threads = proc.threads.map((t, i): ProcessThread => {
    if (t.runningOn === panicCpu || (stop === undefined && t.runningOn !== undefined)) {
      stop = ids[i];
    }
    return {
      info: {
        id: ids[i],
        name: t.runningOn === undefined
          ? `${t.pid} ${t.comm}`
          : `${t.pid} ${t.comm} (CPU ${t.runningOn})`,
        extra: `${t.state}, task 0x${t.address.toString(16)}`,
        core: t.runningOn ?? t.cpu,
        onCpu: t.runningOn !== undefined,
        task: t.address,
      },
      registers: () => tasks.userRegisters(t) ?? new Map(),
    };
  });
  let vmas: Vma[] | undefined;
  const getVmas = () => (vmas ??= proc.vmas());
  const view: ProcessView = {
    pid: proc.pid,
    name: proc.leader.comm,
    memory: proc.memory,
    threads,
    stopThread: stop,
    auxv: () => proc.auxv(),
    get loadAddress() {
      return proc.loadAddress(getVmas());
    },
    get exePath() {
      return proc.exePath();
    },
    vmas: getVmas,
    ps: () => {
      // Only this process's tasks are gdb threads here.
      const mine = new Map(proc.threads.map((t, i) => [t.address, ids[i]]));
      return tasks.list().map((t) => taskPsRow(tasks, t, mine.get(t.address)));
    },
  };
  const target = new ProcessTarget(kernel, view, options);
  const unreadable = stackUnreadable(view);
  if (unreadable) {
    // The advice only where it helps: a page the dump level left out (not one swapped out).
    const advice = unreadable.includes(pageStatusText(PageStatus.Excluded))
      ? "; user pages are kept by an ELF dump, or by makedumpfile without -d 8"
      : "";
    target.warnings.push(
      `user stack unreadable: ${unreadable}. gdb gets the registers but no backtrace${advice}`,
    );
  }
  return target;
}

/**
 * Why the stopped thread's user stack cannot be read, if it cannot: makedumpfile's `-d 8` (part
 * of the usual `-d 31`) drops user pages, and gdb would then say only "Cannot access memory".
 */
function stackUnreadable(view: ProcessView): string | undefined {
  const thread = view.threads.find((t) => t.info.id === view.stopThread) ?? view.threads[0];
  if (!thread) return undefined;
  const regs = thread.registers();
  const sp = regs.get("rsp") ?? regs.get("sp");
  if (sp === undefined) return undefined;
  return view.memory.read(sp, new Uint8Array(8)).error;
}
