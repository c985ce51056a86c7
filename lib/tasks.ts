/**
 * The tasks of a dumped kernel, read through BTF offsets and kernel symbols: the task list
 * (every thread of every process, plus each CPU's idle task), the saved kernel registers of a
 * task that is not running (what `switch_to` left behind), and the user-mode registers at the
 * top of a task's kernel stack.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { MemberInfo } from "./btf.ts";
import type { VirtualMemory } from "./paging.ts";
import type { RegisterValues } from "./target.ts";
import { DumpError } from "./errors.ts";

/** One task (a thread, in user-space words) of the dumped kernel. */
export interface TaskInfo {
  /** Address of its task_struct. */
  address: bigint;
  /** Thread id (`task->pid`). */
  pid: number;
  /** Process id (`task->tgid`). */
  tgid: number;
  /** Process id of the parent (`task->real_parent->tgid`). */
  ppid: number;
  /** `task->comm`. */
  comm: string;
  /** One-letter state as `ps` prints it: R S D T t X Z P I. */
  state: string;
  /** A kernel thread (PF_KTHREAD), which has no user space. */
  kernelThread: boolean;
  /** CPU the task was running on when the dump was taken (the CPU's `rq->curr`). */
  runningOn?: number;
  /** CPU whose idle task this is (the idle tasks all have pid 0). */
  idleOf?: number;
  /** CPU the task last ran on (`task->thread_info.cpu` or `task->cpu`). */
  cpu?: number;
  /** `task->mm` (0 for kernel threads). */
  mm: bigint;
  /**
   * The task_struct is not in the dump: only its address and CPU are known (a CPU's current
   * task, kept for the CPU's registers; pid and tgid are -1).
   */
  unreadable?: boolean;
}

/** Reads the fields of one structure from a window of its bytes, loaded with one read. */
class StructWindow {
  readonly lo: number;
  /** Bytes in the window. */
  readonly size: number;
  #buf: Uint8Array;
  #view: DataView;

  constructor(members: readonly (MemberInfo | undefined)[]) {
    let lo = Infinity;
    let hi = 0;
    for (const m of members) {
      if (!m) continue;
      lo = Math.min(lo, m.offset);
      hi = Math.max(hi, m.offset + m.size);
    }
    if (lo === Infinity) lo = hi = 0;
    this.lo = lo;
    this.size = hi - lo;
    this.#buf = new Uint8Array(hi - lo);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Load the window of the structure at `address`; false when it cannot be read whole. */
  load(mem: VirtualMemory, address: bigint): boolean {
    return mem.read(address + BigInt(this.lo), this.#buf).error === undefined;
  }

  /** An unsigned integer member of 1, 2, 4 or 8 bytes, as a bigint. */
  big(m: MemberInfo): bigint {
    const o = m.offset - this.lo;
    switch (m.size) {
      case 1:
        return BigInt(this.#view.getUint8(o));
      case 2:
        return BigInt(this.#view.getUint16(o, true));
      case 4:
        return BigInt(this.#view.getUint32(o, true));
    }
    return this.#view.getBigUint64(o, true);
  }

  /** A 32-bit (or smaller) member as a number; 8-byte members are truncated to their low half. */
  num(m: MemberInfo): number {
    const o = m.offset - this.lo;
    switch (m.size) {
      case 1:
        return this.#view.getUint8(o);
      case 2:
        return this.#view.getUint16(o, true);
    }
    return this.#view.getUint32(o, true);
  }

  /** A signed 32-bit member. */
  i32(m: MemberInfo): number {
    return this.#view.getInt32(m.offset - this.lo, true);
  }

  /** A char array member, up to its first NUL. */
  str(m: MemberInfo): string {
    const o = m.offset - this.lo;
    const bytes = this.#buf.subarray(o, o + m.size);
    let end = bytes.indexOf(0);
    if (end < 0) end = bytes.length;
    return latin1OrUtf8(bytes.subarray(0, end));
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
const latin1 = new TextDecoder("latin1");

/** comm is usually ASCII; keep odd bytes visible instead of failing. */
function latin1OrUtf8(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    return latin1.decode(bytes);
  }
}

/** PF_KTHREAD in task->flags (the same value from Linux 2.6 to 6.12). */
const PF_KTHREAD = 0x00200000;
/** ps letters by the index `task_state_index()` computes. */
const STATE_LETTERS = "RSDTtXZPI";
/** TASK_REPORT: the state bits ps reports (running … parked). */
const TASK_REPORT = 0x7f;
const TASK_UNINTERRUPTIBLE = 0x2;
/** TASK_IDLE = TASK_UNINTERRUPTIBLE | TASK_NOLOAD: reported as I. */
const TASK_IDLE = 0x402;
/** TASK_RTLOCK_WAIT (5.15+): a sleeping spinlock on PREEMPT_RT, reported as D. */
const TASK_RTLOCK_WAIT = 0x1000;
/** No more tasks than this are followed (the kernel's PID_MAX_LIMIT): stops runaway lists. */
const MAX_TASKS = 4 * 1024 * 1024;

/** The ps letter of a task, as the kernel's `task_state_index()` computes it. */
export function taskStateLetter(state: number, exitState: number): string {
  let report = (state | exitState) & TASK_REPORT;
  if ((state & TASK_IDLE) === TASK_IDLE) report = TASK_REPORT + 1;
  if (state & TASK_RTLOCK_WAIT) report = TASK_UNINTERRUPTIBLE;
  const index = report === 0 ? 0 : 32 - Math.clz32(report);
  return STATE_LETTERS[index] ?? "?";
}

/** Names of the x86_64 `struct pt_regs` members, as gdb names the registers. */
const X86_64_PT_REGS: readonly [string, string][] = [
  ["r15", "r15"],
  ["r14", "r14"],
  ["r13", "r13"],
  ["r12", "r12"],
  ["bp", "rbp"],
  ["bx", "rbx"],
  ["r11", "r11"],
  ["r10", "r10"],
  ["r9", "r9"],
  ["r8", "r8"],
  ["ax", "rax"],
  ["cx", "rcx"],
  ["dx", "rdx"],
  ["si", "rsi"],
  ["di", "rdi"],
  ["orig_ax", "orig_rax"],
  ["ip", "rip"],
  ["cs", "cs"],
  ["flags", "eflags"],
  ["sp", "rsp"],
  ["ss", "ss"],
];

/** x86_64 `struct inactive_task_frame` members (what `__switch_to_asm` pushed), gdb names. */
const X86_64_SWITCH_FRAME: readonly [string, string][] = [
  ["r15", "r15"],
  ["r14", "r14"],
  ["r13", "r13"],
  ["r12", "r12"],
  ["bx", "rbx"],
  ["bp", "rbp"],
];

/** The switch frame's members and the return address, which is where the task resumes. */
const X86_64_SWITCH_FRAME_RIP: readonly [string, string][] = [
  ...X86_64_SWITCH_FRAME,
  ["ret_addr", "rip"],
];

/** arm64 `struct cpu_context` members (what `cpu_switch_to` saved), gdb names. */
const ARM64_CPU_CONTEXT: readonly [string, string][] = [
  ...Array.from({ length: 10 }, (_, i): [string, string] => [`x${19 + i}`, `x${19 + i}`]),
  ["fp", "x29"],
  ["sp", "sp"],
  ["pc", "pc"],
];

/** Where THREAD_SIZE came from, for banners and tests. */
export interface ThreadSize {
  bytes: number;
  /** e.g. "init_stack..__end_init_stack" or "assumed (x86_64 default)". */
  source: string;
}

/**
 * THREAD_SIZE, the size of a kernel stack: the extent of the boot task's stack in the kernel
 * image (`init_stack` to `__end_init_stack`, called `__end_init_task` before 6.2), which the
 * linker script sizes to THREAD_SIZE. Without those symbols: the architecture's usual value.
 */
export function threadSize(kernel: Kernel): ThreadSize {
  const start = kernel.symbol("__start_init_stack") ?? kernel.symbol("__start_init_task") ??
    kernel.symbol("init_stack");
  for (const endName of ["__end_init_stack", "__end_init_task"]) {
    const end = kernel.symbol(endName);
    if (start === undefined || end === undefined) continue;
    const bytes = Number(end - start);
    // A power of two of at least one page: anything else means the symbols are not what we think.
    if (bytes >= 4096 && bytes <= 1 << 20 && (bytes & (bytes - 1)) === 0) {
      return { bytes, source: `init_stack..${endName}` };
    }
  }
  const page = kernel.pageSize;
  // arm64 uses a whole page when pages are larger than 16 KiB (VMAP_STACK); x86_64: 16 KiB.
  const bytes = Math.max(16384, kernel.dump.arch === "aarch64" ? page : 0);
  return { bytes, source: `assumed (${kernel.dump.arch} default without KASAN)` };
}

/** The tasks of a kernel, and the registers each one saved. */
export class KernelTasks {
  readonly kernel: Kernel;
  readonly threadSize: ThreadSize;
  #mem: VirtualMemory;
  #m: Record<string, MemberInfo | undefined>;
  #task: StructWindow;
  #signal: StructWindow;
  #list?: TaskInfo[];
  #byAddress = new Map<bigint, TaskInfo>();
  #regs = new Map<bigint, RegisterValues>();
  #userRegs = new Map<bigint, RegisterValues | undefined>();
  #ptRegsPadding?: number;

  /** @throws DumpError when the dump lacks what reading tasks needs (BTF, symbols, page tables) */
  constructor(kernel: Kernel) {
    this.kernel = kernel;
    const file = kernel.dump.files[0] ?? "dump";
    const btf = kernel.btf;
    if (!btf) {
      throw new DumpError(
        file,
        "task list",
        `no kernel type information (${kernel.typeSource}): give the matching --vmlinux`,
      );
    }
    if (!kernel.memory) {
      throw new DumpError(file, "task list", "kernel addresses cannot be translated");
    }
    this.#mem = kernel.memory;
    const t = (path: string) => btf.member("task_struct", path);
    const m: Record<string, MemberInfo | undefined> = {
      tasks: t("tasks"),
      pid: t("pid"),
      tgid: t("tgid"),
      comm: t("comm"),
      state: t("__state") ?? t("state"),
      exitState: t("exit_state"),
      flags: t("flags"),
      realParent: t("real_parent"),
      signal: t("signal"),
      threadNode: t("thread_node"),
      threadGroup: t("thread_group"),
      cpu: t("cpu") ?? t("thread_info.cpu"),
      mm: t("mm"),
      stack: t("stack"),
      threadSp: t("thread.sp"),
      fsbase: t("thread.fsbase"),
      gsbase: t("thread.gsbase"),
      cpuContext: t("thread.cpu_context"),
      cred: t("real_cred") ?? t("cred"),
      children: t("children"),
      sibling: t("sibling"),
      threadHead: btf.member("signal_struct", "thread_head"),
      rqIdle: btf.member("rq", "idle"),
      uid: btf.member("cred", "uid"),
    };
    for (const need of ["tasks", "pid", "tgid", "comm", "state", "flags", "signal", "mm"]) {
      if (!m[need]) {
        throw new DumpError(file, "task list", `task_struct has no "${need}" member in the BTF`);
      }
    }
    if (!m.threadHead && !m.threadGroup) {
      throw new DumpError(file, "task list", "neither signal->thread_head nor thread_group");
    }
    this.#m = m;
    this.#task = new StructWindow([
      m.tasks,
      m.pid,
      m.tgid,
      m.comm,
      m.state,
      m.exitState,
      m.flags,
      m.realParent,
      m.signal,
      m.threadNode,
      m.threadGroup,
      m.cpu,
      m.mm,
      m.children,
      m.sibling,
    ]);
    this.#signal = new StructWindow([m.threadHead]);
    this.threadSize = threadSize(kernel);
  }

  /**
   * Every task: the idle task of each CPU, then each process on `init_task.tasks` followed by its
   * other threads. Read once, then cached.
   * @throws DumpError when the task list cannot be followed from init_task
   */
  list(): TaskInfo[] {
    if (this.#list) return this.#list;
    const m = this.#m;
    const file = this.kernel.dump.files[0] ?? "dump";
    const initTask = this.kernel.symbol("init_task");
    if (initTask === undefined) throw new DumpError(file, "task list", "no init_task symbol");
    const out: TaskInfo[] = [];
    const parents: bigint[] = [];
    const add = (address: bigint, idleOf?: number): TaskInfo | undefined => {
      if (this.#byAddress.has(address)) return this.#byAddress.get(address);
      const info = this.#readTask(address, parents);
      if (!info) {
        this.#unreadable.add(address);
        return undefined;
      }
      this.#unreadable.delete(address);
      if (idleOf !== undefined) info.idleOf = idleOf;
      out.push(info);
      this.#byAddress.set(address, info);
      return info;
    };

    // Idle tasks (pid 0) are on no list: each CPU's runqueue points to its own.
    const cpus = this.kernel.dump.cpus.length;
    for (let cpu = 0; cpu < Math.max(cpus, 1); cpu++) {
      let idle = cpu === 0 ? initTask : undefined;
      const rq = m.rqIdle ? this.kernel.runqueueAddress(cpu) : undefined;
      if (rq !== undefined) idle = this.#mem.readU64(rq + BigInt(m.rqIdle!.offset)) ?? idle;
      if (idle) add(idle, cpu);
    }
    if (!this.#byAddress.has(initTask)) {
      throw new DumpError(file, "task list", `init_task at 0x${initTask.toString(16)} unreadable`);
    }

    // Thread-group leaders are on init_task.tasks; each one's threads on signal->thread_head.
    const tasksOff = BigInt(m.tasks!.offset);
    const head = initTask + tasksOff;
    let node = this.#mem.readU64(head);
    const seen = new Set<bigint>();
    while (node !== undefined && node !== head && out.length < MAX_TASKS) {
      if (seen.has(node)) break; // a damaged list that loops
      seen.add(node);
      const leader = node - tasksOff;
      const known = this.#byAddress.has(leader);
      // #readTask notes where the leader's thread list is.
      if (add(leader) && !known) this.#addThreads(leader, add);
      node = this.#mem.readU64(node);
    }

    // Every task also has a struct pid in init_pid_ns's IDR: that finds the tasks the lists
    // could not reach (a task_struct missing from the dump breaks the list after it).
    for (const task of this.#pidTasks()) add(task);
    // The IDR's nodes and struct pids may be missing too: then every link of every task found
    // (both directions of the process list, children, siblings, threads) may lead further.
    if (this.#unreadable.size > 0) this.#addLinked(out, parents, add);

    // A CPU's current task whose task_struct is not in the dump still has the CPU's registers:
    // keep it (as pid -1) so the CPU's stack, often the interesting one, stays reachable.
    for (const c of this.kernel.cpuTasks) {
      if (c.task === undefined || this.#byAddress.has(c.task)) continue;
      const info: TaskInfo = {
        address: c.task,
        pid: -1,
        tgid: -1,
        ppid: 0,
        comm: "?",
        state: "R",
        kernelThread: false,
        runningOn: c.cpu,
        cpu: c.cpu,
        mm: 0n,
        unreadable: true,
      };
      out.push(info);
      parents.push(0n);
      this.#byAddress.set(c.task, info);
    }

    // ppid: the parent's tgid; parents are nearly always in the list already.
    for (let i = 0; i < out.length; i++) {
      const p = parents[i];
      const known = this.#byAddress.get(p);
      if (known) out[i].ppid = known.tgid;
      else if (p) out[i].ppid = this.kernel.readU32(p + BigInt(m.tgid!.offset)) ?? 0;
    }
    this.#list = out;
    return out;
  }

  /** The task at a task_struct address, when it is in the list. */
  byAddress(address: bigint): TaskInfo | undefined {
    this.list();
    return this.#byAddress.get(address);
  }

  /** Threads of process `tgid` (its leader first), or an empty list. */
  threadsOf(tgid: number): TaskInfo[] {
    const all = this.list().filter((t) => t.tgid === tgid && t.idleOf === undefined);
    const rank = (t: TaskInfo) => (t.pid === tgid ? -1 : t.pid);
    return all.sort((a, b) => rank(a) - rank(b));
  }

  /**
   * Kernel-mode registers of a task by gdb name: the CPU's saved registers for a task that was
   * running, else what the last context switch saved on its kernel stack.
   */
  kernelRegisters(task: TaskInfo): RegisterValues {
    if (task.runningOn !== undefined) {
      return this.kernel.dump.cpus[task.runningOn]?.registers ?? new Map();
    }
    let regs = this.#regs.get(task.address);
    if (!regs) {
      regs = this.kernel.dump.arch === "x86_64"
        ? this.#x86SwitchRegisters(task.address)
        : this.#arm64SwitchRegisters(task.address);
      this.#regs.set(task.address, regs);
    }
    return regs;
  }

  /**
   * User-mode registers of a task: the `struct pt_regs` the kernel entry saved at the top of the
   * task's kernel stack. Undefined for kernel threads and when the stack is not in the dump.
   */
  userRegisters(task: TaskInfo): RegisterValues | undefined {
    if (task.kernelThread) return undefined;
    if (this.#userRegs.has(task.address)) return this.#userRegs.get(task.address);
    const regs = this.kernel.dump.arch === "x86_64"
      ? this.#x86UserRegisters(task)
      : this.#arm64UserRegisters(task);
    this.#userRegs.set(task.address, regs);
    return regs;
  }

  /** The user id of a task (`real_cred->uid`), when readable. */
  uid(task: TaskInfo): number | undefined {
    const { cred, uid } = this.#m;
    if (!cred || !uid) return undefined;
    const c = this.#mem.readU64(task.address + BigInt(cred.offset));
    return c ? this.kernel.readU32(c + BigInt(uid.offset)) : undefined;
  }

  /** Address of a task's `struct pt_regs` (top of its kernel stack), when known. */
  ptRegsAddress(task: TaskInfo): bigint | undefined {
    const stackM = this.#m.stack;
    const size = this.kernel.btf!.structSize("pt_regs");
    if (!stackM || !size) return undefined;
    const stack = this.#mem.readU64(task.address + BigInt(stackM.offset));
    if (!stack) return undefined;
    const pad = this.kernel.dump.arch === "x86_64" ? this.#x86StackPadding(stack, size) : 0;
    return stack + BigInt(this.threadSize.bytes - pad - size);
  }

  #readTask(address: bigint, parents: bigint[]): TaskInfo | undefined {
    const w = this.#task;
    const m = this.#m;
    if (!w.load(this.#mem, address)) return undefined;
    const flags = w.num(m.flags!);
    const info: TaskInfo = {
      address,
      pid: w.i32(m.pid!),
      tgid: w.i32(m.tgid!),
      ppid: 0,
      comm: w.str(m.comm!),
      state: taskStateLetter(w.num(m.state!), m.exitState ? w.num(m.exitState) : 0),
      kernelThread: (flags & PF_KTHREAD) !== 0,
      mm: w.big(m.mm!),
    };
    if (m.cpu) info.cpu = w.num(m.cpu);
    const running = this.kernel.cpuTasks.find((c) => c.task === address);
    if (running) info.runningOn = running.cpu;
    parents.push(m.realParent ? w.big(m.realParent) : 0n);
    // Remember where the thread list starts while the window holds this task.
    this.#lastSignal = w.big(m.signal!);
    this.#lastThreadGroup = m.threadGroup ? w.big(m.threadGroup) : 0n;
    return info;
  }

  #lastSignal = 0n;
  #lastThreadGroup = 0n;
  #unreadable = new Set<bigint>();

  /**
   * Problems the user should know: task_structs that are not in the dump (their tasks are
   * missing from the list).
   */
  get warnings(): string[] {
    this.list();
    const n = this.#unreadable.size;
    if (n === 0) return [];
    const first = [...this.#unreadable][0];
    const buf = new Uint8Array(this.#task.size);
    const why = this.#mem.read(first + BigInt(this.#task.lo), buf).error ?? "unreadable";
    return [
      `${n} task${n === 1 ? "" : "s"} missing from the task list: task_struct not readable ` +
      `(first: 0x${first.toString(16)}: ${
        why.replace(/^0x[0-9a-f]+( \(physical 0x[0-9a-f]+\))?: /, "")
      })`,
    ];
  }

  /** task_struct addresses from the pid IDR (`init_pid_ns.idr`, an xarray of struct pid). */
  #pidTasks(): bigint[] {
    const btf = this.kernel.btf!;
    const ns = this.kernel.symbol("init_pid_ns");
    const headM = btf.member("pid_namespace", "idr.idr_rt.xa_head");
    const slotsM = btf.member("xa_node", "slots");
    const pidTasksM = btf.member("pid", "tasks");
    const linksM = btf.member("task_struct", "pid_links");
    if (ns === undefined || !headM || !slotsM || !pidTasksM || !linksM) return [];
    const out: bigint[] = [];
    const slots = new Uint8Array(slotsM.size);
    const view = new DataView(slots.buffer);
    const visit = (entry: bigint, depth: number): void => {
      if (depth > 16 || out.length >= MAX_TASKS) return;
      if ((entry & 3n) === 2n) {
        // An internal entry: a node when above 4096, else a sibling or retry marker.
        if (entry <= 4096n) return;
        if (this.#mem.read(entry - 2n + BigInt(slotsM.offset), slots).error) return;
        const children: bigint[] = [];
        for (let o = 0; o + 8 <= slots.length; o += 8) {
          const c = view.getBigUint64(o, true);
          if (c) children.push(c);
        }
        for (const c of children) visit(c, depth + 1);
        return;
      }
      // A struct pid: its first PIDTYPE_PID user is the task.
      const first = this.#mem.readU64(entry + BigInt(pidTasksM.offset));
      if (first) out.push(first - BigInt(linksM.offset));
    };
    const head = this.#mem.readU64(ns + BigInt(headM.offset));
    if (head) visit(head, 0);
    return out;
  }

  /**
   * Follow every list link of the tasks in `out` (growing as tasks are found) in both
   * directions: a list is cut only where a task_struct is missing, so going round the other
   * way, or through a parent's children or a sibling, reaches the tasks beyond the gap. List
   * heads that are not in a task_struct (the parent's `children`, `signal->thread_head`) are
   * recognised and skipped, so no address inside another structure is taken for a task.
   */
  #addLinked(
    out: TaskInfo[],
    parents: bigint[],
    add: (address: bigint) => TaskInfo | undefined,
  ): void {
    const m = this.#m;
    const w = this.#task;
    const links: [MemberInfo | undefined, MemberInfo | undefined][] = [
      [m.tasks, m.tasks],
      [m.children, m.sibling],
      [m.sibling, m.sibling],
      [m.threadNode, m.threadNode],
    ];
    const pointer = { offset: 0, type: 0, size: 8 };
    for (let i = 0; i < out.length && out.length < MAX_TASKS; i++) {
      const task = out[i];
      if (task.unreadable || !w.load(this.#mem, task.address)) continue;
      const signal = w.big(m.signal!);
      const notTasks = new Set<bigint>([
        task.address + BigInt(m.children?.offset ?? 0), // its own children's list head
        parents[i] + BigInt(m.children?.offset ?? 0), // its parent's, on the sibling ring
        m.threadHead ? signal + BigInt(m.threadHead.offset) : 0n,
      ]);
      const found: bigint[] = [];
      for (const [field, member] of links) {
        if (!field || !member) continue;
        if (field.offset < w.lo || field.offset + 16 > w.lo + w.size) continue;
        for (const at of [field.offset, field.offset + 8]) {
          pointer.offset = at;
          const node = w.big(pointer);
          if (node === 0n || notTasks.has(node)) continue;
          found.push(node - BigInt(member.offset));
        }
      }
      for (const f of found) if (!this.#byAddress.has(f)) add(f);
    }
  }

  /** Add the threads of a process other than its leader (just read by #readTask). */
  #addThreads(leader: bigint, add: (address: bigint) => TaskInfo | undefined): void {
    const m = this.#m;
    let head: bigint;
    let linkOff: bigint;
    let node: bigint | undefined;
    if (m.threadHead && m.threadNode) {
      // Linux 3.14+: signal->thread_head links task->thread_node (thread_group is gone in 6.7).
      const signal = this.#lastSignal;
      if (!signal || !this.#signal.load(this.#mem, signal)) return;
      head = signal + BigInt(m.threadHead.offset);
      linkOff = BigInt(m.threadNode.offset);
      node = this.#signal.big({ offset: m.threadHead.offset, type: 0, size: 8 });
    } else {
      // Older kernels: a ring through task->thread_group with no separate head.
      linkOff = BigInt(m.threadGroup!.offset);
      head = leader + linkOff;
      node = this.#lastThreadGroup;
    }
    let n = 0;
    while (node && node !== head && n++ < MAX_TASKS) {
      const task = node - linkOff;
      if (task !== leader && !add(task)) return;
      node = this.#mem.readU64(node);
    }
  }

  /**
   * Layout of a saved switch frame, looked up once: gdb asks for the registers of every thread
   * (`info threads` with thousands of tasks), and BTF lookups by name cost more than the read.
   */
  #switchFrame?: {
    members: (MemberInfo | undefined)[];
    names: string[];
    size: number;
    window: StructWindow;
  };

  #switchFrameLayout(struct: string, fields: readonly [string, string][], size: number) {
    if (!this.#switchFrame) {
      const btf = this.kernel.btf!;
      const members = fields.map(([f]) => btf.member(struct, f));
      this.#switchFrame = {
        members,
        names: fields.map(([, name]) => name),
        size: btf.structSize(struct) ?? size,
        window: new StructWindow(members),
      };
    }
    return this.#switchFrame;
  }

  #x86SwitchRegisters(task: bigint): RegisterValues {
    const regs = new Map<string, bigint>();
    const spM = this.#m.threadSp;
    if (!spM) return regs;
    const sp = this.#mem.readU64(task + BigInt(spM.offset));
    if (!sp) return regs;
    const { members, names, size: frameSize, window: w } = this.#switchFrameLayout(
      "inactive_task_frame",
      X86_64_SWITCH_FRAME_RIP,
      56,
    );
    if (!w.load(this.#mem, sp)) {
      // The stack is not in the dump: at least say where it is.
      regs.set("rsp", sp);
      return regs;
    }
    names.forEach((name, i) => {
      const mem = members[i];
      if (mem) regs.set(name, w.big(mem));
    });
    // __switch_to_asm returns to ret_addr with rsp just above the frame it pops: that is the
    // state of the caller (__schedule), whose CFI gdb unwinds from.
    regs.set("rsp", sp + BigInt(frameSize));
    this.#addFsGs(task, regs);
    return regs;
  }

  #arm64SwitchRegisters(task: bigint): RegisterValues {
    const regs = new Map<string, bigint>();
    const base = this.#m.cpuContext;
    if (!base) return regs;
    const { members, names, window: w } = this.#switchFrameLayout(
      "cpu_context",
      ARM64_CPU_CONTEXT,
      0,
    );
    if (!w.load(this.#mem, task + BigInt(base.offset))) return regs;
    names.forEach((name, i) => {
      const mem = members[i];
      if (mem) regs.set(name, w.big(mem));
    });
    // cpu_switch_to stored its lr as pc: lr had that value when the task switched out.
    const pc = regs.get("pc");
    if (pc !== undefined) regs.set("x30", pc);
    return regs;
  }

  #x86UserRegisters(task: TaskInfo): RegisterValues | undefined {
    const at = this.ptRegsAddress(task);
    if (at === undefined) return undefined;
    const btf = this.kernel.btf!;
    const members = X86_64_PT_REGS.map(([f]) => btf.member("pt_regs", f));
    const w = new StructWindow(members);
    if (!w.load(this.#mem, at)) return undefined;
    const regs = new Map<string, bigint>();
    X86_64_PT_REGS.forEach(([, name], i) => {
      const mem = members[i];
      if (mem) regs.set(name, w.big(mem));
    });
    if (task.runningOn !== undefined) {
      // In the kernel the CPU keeps the user's FS base (the kernel uses GS).
      const fs = this.kernel.dump.cpus[task.runningOn]?.registers.get("fs_base");
      if (fs !== undefined) regs.set("fs_base", fs);
    } else this.#addFsGs(task.address, regs);
    return regs;
  }

  #arm64UserRegisters(task: TaskInfo): RegisterValues | undefined {
    const at = this.ptRegsAddress(task);
    if (at === undefined) return undefined;
    const buf = new Uint8Array(34 * 8);
    if (this.#mem.read(at, buf).error !== undefined) return undefined;
    const v = new DataView(buf.buffer);
    // struct user_pt_regs heads struct pt_regs: regs[31], sp, pc, pstate.
    const regs = new Map<string, bigint>();
    for (let i = 0; i < 31; i++) regs.set(`x${i}`, v.getBigUint64(i * 8, true));
    regs.set("sp", v.getBigUint64(31 * 8, true));
    regs.set("pc", v.getBigUint64(32 * 8, true));
    regs.set("cpsr", v.getBigUint64(33 * 8, true) & 0xffffffffn);
    return regs;
  }

  /** The user FS and GS bases saved at the last switch (x86_64 `thread.fsbase`/`gsbase`). */
  #addFsGs(task: bigint, regs: Map<string, bigint>): void {
    const { fsbase, gsbase } = this.#m;
    if (fsbase) {
      const v = this.#mem.readU64(task + BigInt(fsbase.offset));
      if (v !== undefined) regs.set("fs_base", v);
    }
    if (gsbase) {
      const v = this.#mem.readU64(task + BigInt(gsbase.offset));
      if (v !== undefined) regs.set("gs_base", v);
    }
  }

  /**
   * TOP_OF_KERNEL_STACK_PADDING on x86_64: 0, or 16 bytes when the kernel was built with FRED
   * (6.9+). Told by FRED's entry symbol when the symbol table is known, else by which position
   * holds a user-mode frame (CS and SS with privilege level 3).
   */
  #x86StackPadding(stack: bigint, ptRegsSize: number): number {
    if (this.#ptRegsPadding !== undefined) return this.#ptRegsPadding;
    const fred = this.kernel.symbol("asm_fred_entrypoint_user") !== undefined;
    const candidates = fred ? [16, 0] : [0, 16];
    const btf = this.kernel.btf!;
    const cs = btf.member("pt_regs", "cs");
    const ss = btf.member("pt_regs", "ss");
    for (const pad of candidates) {
      if (!cs || !ss) break;
      const base = stack + BigInt(this.threadSize.bytes - pad - ptRegsSize);
      const csv = this.kernel.readU32(base + BigInt(cs.offset));
      const ssv = this.kernel.readU32(base + BigInt(ss.offset));
      if (csv === undefined || ssv === undefined) continue;
      if ((csv & 0xffff & 3) === 3 && (ssv & 0xffff & 3) === 3) {
        this.#ptRegsPadding = pad;
        return pad;
      }
    }
    return candidates[0];
  }
}
