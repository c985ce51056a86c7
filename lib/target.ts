/**
 * What a debug target can do, as the RSP server sees it.
 *
 * The server never knows where memory or registers come from (a dump file today, a live QEMU guest
 * later): it only talks to this interface. Required members cover what every gdb session needs;
 * optional members are capabilities a target opts into, and the server advertises only what the
 * target offers.
 *
 * @module
 */

/** Architectures the server can describe to gdb. */
export type ArchName = "x86_64" | "aarch64";

/** One gdb thread: a CPU in kernel mode, a task in tasks mode, a thread in process mode. */
export interface ThreadInfo {
  /** Thread id as gdb sees it: positive, unique, stable for the session. */
  id: number;
  /** Short name shown by `info threads`, e.g. `CPU 1: crasher.sh (pid 105)`. */
  name: string;
  /** Longer text for qThreadExtraInfo; defaults to `name`. */
  extra?: string;
  /** CPU the thread ran on, when known. */
  core?: number;
  /**
   * The thread was on `core` when it stopped (a CPU in kernel mode, a task that was running):
   * kdb's current CPU follows it. Absent for a task that was switched out.
   */
  onCpu?: boolean;
  /** Address of the thread's `task_struct`, when known: kdb's current task follows it. */
  task?: bigint;
}

/**
 * Register values by gdb register name (`rip`, `rsp`, `fs_base`, `x29`, `pc`, `cpsr`, …).
 * A register absent from the map is sent to gdb as unavailable.
 */
export type RegisterValues = ReadonlyMap<string, bigint>;

/** Result of a memory read: the readable prefix, and why it stopped if it is short. */
export interface MemoryRead {
  /** Bytes read from the start address; may be shorter than asked. */
  data: Uint8Array;
  /** Why the read stopped early (absent when complete), e.g. "page excluded from the dump". */
  error?: string;
}

/** Text output sink for monitor commands: each call becomes one or more `O` packets. */
export type MonitorOutput = (text: string) => void;

/** A target the RSP server can serve. */
export interface Target {
  /** Architecture, which selects the register layout and target description. */
  readonly arch: ArchName;
  /**
   * Threads in gdb order; fixed for the life of a session on a dump, new at every stop of a
   * live target.
   */
  threads(): ThreadInfo[];
  /** Thread to report in the initial stop reply (`?`), e.g. the CPU that panicked. */
  stopThread(): number;
  /** Signal number for the stop reply (gdb numbering; 11 = SIGSEGV for a crash, 5 = SIGTRAP). */
  stopSignal(): number;
  /** Saved registers of one thread. */
  registers(threadId: number): RegisterValues;
  /**
   * A register outside the `g` block (the layout's `outsideG` features: arm64's system
   * registers), which a live target reads from its vCPU when gdb asks; undefined when the thread
   * has none (a dump, a task not on a CPU).
   */
  systemRegister?(threadId: number, name: string): bigint | undefined;
  /**
   * Read memory at a target address (kernel virtual by default), as seen by thread `threadId`
   * (gdb's selected thread: user addresses belong to that thread's process). Must never throw
   * for an unreadable address: report it through `MemoryRead.error` instead.
   */
  readMemory(address: bigint, length: number, threadId?: number): MemoryRead;

  /** Read physical memory (for QEMU's `Qqemu.PhyMemMode:1` switch). */
  readPhysical?(address: bigint, length: number): MemoryRead;
  /** Path of the executable gdb should load (qXfer:exec-file:read), e.g. `--vmlinux`. */
  execFile?(): string | undefined;
  /** Absolute address for qOffsets' `TextSeg=` (first PT_LOAD of the symbol file + KASLR offset). */
  textSegment?(): bigint | undefined;
  /** Raw VMCOREINFO note text, for `qlinux.vmcoreinfo` and `qXfer:vmcoreinfo:read`. */
  vmcoreinfo?(): Uint8Array | undefined;
  /** Auxiliary vector of a process target (qXfer:auxv:read). */
  auxv?(): Uint8Array | undefined;
  /**
   * Target-specific monitor commands. Return false when the command is unknown so the server can
   * fall back to its own commands and then say it is unknown.
   */
  monitor?(command: string, out: MonitorOutput): boolean;
  /** Lines of `monitor help` describing the target's own commands. */
  monitorHelp?(): string[];
  /**
   * Files made in memory that gdb should load as shared libraries (`qXfer:libraries-svr4:read`,
   * then read through `vFile`), e.g. unwind tables for code the symbol file has none for; one
   * marked `exec` is gdb's executable instead (`qXfer:exec-file:read`) when the user has no
   * {@link execFile}. Names are what gdb is told; no file on disk is ever served this way.
   */
  libraries?(): readonly { name: string; data: Uint8Array; exec?: boolean }[];
  /**
   * Work the target can do before gdb asks (e.g. every task's saved registers, which gdb asks for
   * one thread at a time in `info threads`), in slices of about `budgetMs`: called while the
   * server waits for gdb. Returns true while more remains.
   */
  prepare?(budgetMs: number): boolean;
  /** Run control, writes and breakpoints of a live target (see {@link RunControl}). */
  readonly run?: RunControl;
}

/** One action of a resume request: continue or step one instruction, one thread or all. */
export interface ResumeAction {
  /** `c` continue, `s` single-step. */
  action: "c" | "s";
  /** Thread (this target's ids) the action applies to; undefined for every other thread. */
  thread?: number;
}

/**
 * One thread single-stepped while every other stays stopped: how gdb steps off a breakpoint
 * before it puts the breakpoint back and continues (it reads nothing at that stop).
 */
export function isLoneStep(actions: readonly ResumeAction[]): boolean {
  return actions.length === 1 && actions[0].action === "s" && actions[0].thread !== undefined &&
    actions[0].thread > 0;
}

/** How a running target came to a halt, or that it is gone. */
export type StopEvent =
  /** A stop reply for gdb, in this target's thread ids (e.g. `T05thread:2;watch:ffff…;`). */
  | { kind: "stopped"; reply: string }
  /** The target is gone (QEMU killed): the session ends with this message. */
  | { kind: "lost"; message: string };

/**
 * Run control of a target that can run: a live QEMU guest. Absent on dumps, whose sessions keep
 * their read-only behaviour. A session that resumes the target sends no reply until
 * {@link RunControl.nextStop} resolves; gdb's interrupt byte goes to {@link RunControl.interrupt}.
 * Everything the target cached (pages, registers, threads, translations) is dropped on resume.
 *
 * Other front ends (e.g. a console's `go`) continue the target with
 * `run.resume([{ action: "c" }])` and wait for `run.nextStop()`.
 */
export interface RunControl {
  /**
   * Called before a client's session starts: stop the guest if it runs. Resolves with an error
   * line when the client cannot be served (another client is attached, the guest is gone).
   */
  attach(): Promise<string | undefined>;
  /**
   * The client left. `resume`: it detached (`D`), or kdb's console closed after `go`: let the
   * guest run on (stopped first if it runs, to take the client's breakpoints out); otherwise
   * (connection dropped, `k`) the guest is left stopped for the next client.
   */
  release(resume: boolean): void;
  /** Start running; undefined when started, else an error text for gdb. */
  resume(actions: ResumeAction[]): string | undefined;
  /** Ask the running target to stop; the stop arrives through {@link nextStop}. */
  interrupt(): void;
  /** The next stop (or loss) after {@link resume}. */
  nextStop(): Promise<StopEvent>;
  /**
   * The stop after {@link resume} when it has already come (a step, or a breakpoint just ahead,
   * that resume waited for), taken so that {@link nextStop} will not give it again; else
   * undefined. Optional: a client that does not ask gets every stop from {@link nextStop}.
   */
  stopNow?(): StopEvent | undefined;
  /** `Z`/`z` TYPE,ADDR,KIND: the reply (`OK`, `E…`, or empty when unsupported). */
  breakpoint(insert: boolean, type: number, address: bigint, kind: number): string;
  /**
   * Write memory (virtual in `threadId`'s view, or physical); an error text, else undefined.
   * Empty `data` writes nothing and only says whether memory writes are allowed (gdb's `X`
   * probe).
   */
  writeMemory(
    address: bigint,
    data: Uint8Array,
    threadId: number,
    physical: boolean,
  ): string | undefined;
  /**
   * Write registers of one thread by gdb name, in order; the first failure's error text, else
   * undefined. An empty map writes nothing and only says whether register writes are allowed
   * (a `G` that changes nothing).
   */
  writeRegisters(threadId: number, values: ReadonlyMap<string, bigint>): string | undefined;
  /**
   * Work for the stop just reported, done while gdb digests the stop reply (it then asks for
   * memory at the stopped thread's stack and for the thread list): build what those answers
   * need. Optional; errors are kept for the requests themselves.
   */
  afterStop?(threadId: number): void;
  /**
   * Counts the times what was read of the target was dropped (at every resume, and when it was
   * resumed behind the client's back): what a client derived from the target (kdb's task list)
   * is current while this is unchanged.
   */
  readonly generation: number;
}
