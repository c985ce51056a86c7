/**
 * A live QEMU guest as a {@link Target}: at every stop the guest is read as a dump
 * ({@link LiveDump}) and served by the same kernel or tasks target as a dump file, so gdb gets
 * the same kernel-aware view (threads named by their task, KASLR applied, monitor commands);
 * run control, breakpoints and writes pass through to QEMU's gdbstub with thread ids translated
 * both ways (QEMU's `p01.02` is vCPU 1). Nothing survives a resume: the snapshot (registers,
 * pages, translations, task list) is rebuilt at the next stop, when first needed.
 *
 * One gdb client at a time: each client's session has its own connection to QEMU's gdbstub
 * (connecting pauses the guest; `D` is sent as `D;1`, which resumes it; a client that drops
 * leaves the guest stopped).
 *
 * @module
 */

import {
  type ArchName,
  isLoneStep,
  type MemoryRead,
  type MonitorOutput,
  type RegisterValues,
  type ResumeAction,
  type RunControl,
  type StopEvent,
  type Target,
  type ThreadInfo,
} from "./target.ts";
import { FIRST_PACKET, LiveError, QemuStub, type StubNotice } from "./qemu_stub.ts";
import { encodeRegisterValue, parseTargetDescription, type StubDescription } from "./target_xml.ts";
import { GuestRam, mainRam, type RamRange } from "./guest_ram.ts";
import {
  LazyRegisters,
  lazyVcpuRegisters,
  LiveDump,
  type LiveSource,
  readVcpuRegisters,
} from "./live_dump.ts";
import {
  discoverAarch64,
  discoverX86,
  type LiveFacts,
  qemuRegister,
  ramFileScan,
  readAarch64Vcpu,
  readSystemRegister,
  stubScan,
  type VmcoreinfoScan,
} from "./live_discovery.ts";
import { Kernel } from "./kernel.ts";
import { KernelTarget } from "./kernel_target.ts";
import { type GdbFile, kernelFileForGdb } from "./gdb_unwind_elf.ts";
import { tasksTarget } from "./tasks_target.ts";
import { PhysicalMemory } from "./physical_memory.ts";
import type { VirtualMemory } from "./paging.ts";
import { Vmlinux } from "./vmlinux.ts";
import { Btf } from "./btf.ts";
import { AARCH64_SYSTEM_REGISTERS } from "./regs_aarch64.ts";
import type { Qmp } from "./qmp.ts";
import { bytesHex } from "./rsp_client.ts";
import { errorText } from "./file_source.ts";
import { DumpError } from "./errors.ts";
import { resolve } from "node:path";

/**
 * How long after a scan of guest RAM through the gdbstub found no VMCOREINFO another may be tried
 * (milliseconds): a kernel early in its boot writes it later, but a stop every few steps should
 * not pay up to a few seconds each.
 */
const STUB_SCAN_RETRY_MS = 10_000;

/** Options of a live target. */
export interface LiveOptions {
  /** QEMU's gdbstub, `HOST:PORT`. */
  host: string;
  /** Its TCP port. */
  port: number;
  /** The guest's shared RAM file. */
  guestRam?: string;
  /** The guest kernel's vmlinux: symbols and types for the server, the symbol file for gdb. */
  vmlinux?: string;
  /** Every task a thread (rebuilt at every stop). */
  tasks?: boolean;
  /** Refuse writes (memory, registers); breakpoints still work. */
  readOnly?: boolean;
  /** A QMP connection, for the guest's run state and its STOP/RESUME events. */
  qmp?: Qmp;
  /**
   * Page cache bound in bytes; a stop's cache lives for that stop only and holds at most 2 MiB
   * with the guest RAM file, 16 MiB without.
   */
  cacheBytes?: number;
  /** One line of diagnostics. */
  log?: (line: string) => void;
  /**
   * How the gdbstub is reached (default {@link QemuStub.connect}): another transport, or a
   * scripted stub in tests.
   */
  connectStub?: (host: string, port: number) => QemuStub;
}

/**
 * How many times a single step that QEMU reports without having run it is sent again (see
 * LiveTarget's #stepAgain). An instruction that jumps to itself changes no register either: it
 * is reported after these.
 */
const STEP_RETRIES = 8;

/** Bytes per `M` packet sent to QEMU (its stub's buffer holds a little over 4 KiB of text). */
const WRITE_CHUNK = 0x400;

/** What serves a stop (a kernel or a tasks target), with the page tables its reads use. */
type InnerTarget = Target & Pick<KernelTarget, "memoryFor">;

/** One stop's view. */
interface Snapshot {
  kernel: Kernel;
  inner: InnerTarget;
  facts: LiveFacts;
  /** Our thread id of the task running on each CPU (tasks mode), else cpu + 1. */
  cpuThread: number[];
}

/** Thread number of QEMU's `p01.02` / `02` form. */
function qemuThreadNumber(text: string): number | undefined {
  const m = text.match(/^(?:p[0-9a-fA-F]+\.)?([0-9a-fA-F]+)$/);
  return m ? parseInt(m[1], 16) : undefined;
}

/** A resume that single-steps one vCPU: its packet, the vCPU, its registers before the step. */
interface StepUnderWay {
  packet: string;
  cpu: number;
  before: Map<string, bigint>;
  /** How many times it was sent again already. */
  retries: number;
}

/** QEMU monitor commands that only read, the only ones `--read-only` passes (`x/4g`, `xp/s`…). */
const READ_ONLY_QEMU_COMMAND = /^(help|\?|info|i|xp?(\/\S*)?|p|print)$/;

/** How long a failed start waits for QEMU to take back the physical-memory switch. */
const GIVE_BACK_TIMEOUT_MS = 2000;

/** A live guest behind QEMU's gdbstub. */
export class LiveTarget implements Target, RunControl {
  /** The options the target was made with. */
  readonly options: LiveOptions;
  readonly run: RunControl = this;
  #stub: QemuStub | undefined;
  #desc!: StubDescription;
  #vcpus: string[] = [];
  #ramRanges: RamRange[] = [];
  #ram: GuestRam | undefined;
  #opened: { vmlinux: Vmlinux; btf?: Btf } | undefined;
  #snapshot: Snapshot | undefined;
  #knownVmcoreinfo: { paddr: number; raw: Uint8Array } | undefined;
  #lastStop: { cpu: number; signal: number; rest: string } | undefined;
  #running = false;
  #resumedByUs = false;
  #stopWaiter: ((e: StopEvent) => void) | undefined;
  #stopQueue: StopEvent[] = [];
  #lost: string | undefined;
  /** Called once when the guest is gone (QEMU killed): the server should say so and stop. */
  onLost: (message: string) => void = () => {};

  /**
   * A target for the guest behind `options.host:port`; {@link connect} connects to it. Opens
   * the vmlinux now (a DumpError names it when it cannot be read).
   */
  constructor(options: LiveOptions) {
    this.options = options;
    if (options.vmlinux) {
      const vmlinux = new Vmlinux(options.vmlinux);
      vmlinux.symbols();
      const bytes = vmlinux.sectionBytes(".BTF");
      let btf: Btf | undefined;
      try {
        btf = bytes ? new Btf(bytes) : undefined;
      } catch {
        btf = undefined; // the kernel view reports it
      }
      this.#opened = { vmlinux, btf };
    }
    if (options.qmp) options.qmp.onEvent = (e) => this.#qmpEvent(e.event);
  }

  get arch(): ArchName {
    return this.#desc?.arch ?? "x86_64";
  }

  /** The current stop's kernel view (built on first use after a stop). */
  get kernel(): Kernel {
    return this.#state().kernel;
  }

  /** How KASLR and VMCOREINFO were found at this stop, for the banner. */
  get facts(): LiveFacts {
    return this.#state().facts;
  }

  /** Whether a session holds the guest now. */
  get attached(): boolean {
    return this.#stub !== undefined;
  }

  // --- connection ------------------------------------------------------------------------------

  /** Connect to the gdbstub (pausing the guest); resolves with whether the guest was running. */
  async connect(): Promise<boolean> {
    let sawStop = false;
    const stub = (this.options.connectStub ?? QemuStub.connect)(
      this.options.host,
      this.options.port,
    );
    stub.onEvent = (n) => {
      if (n.ev === "stop" && n.unsolicited && !this.#running) sawStop = true;
      // Notices of a connection already given up (a client that left) concern nobody.
      if (this.#stub !== stub) return;
      try {
        this.#notice(n);
      } catch (e) {
        // This runs in the stub's own callback, where an exception would end the server; gdb
        // waiting for the stop still gets one.
        this.options.log?.(`at a stop of the guest: ${errorText(e)}`);
        if (n.ev === "stop" && !n.unsolicited) {
          this.#deliver({ kind: "stopped", reply: `T05thread:${(this.#lastStop?.cpu ?? 0) + 1};` });
        }
      }
    };
    try {
      stub.request(FIRST_PACKET, 5000);
      // QEMU stops a running guest when a debugger connects and says so with a stop reply
      // before anything else: let that message arrive.
      await new Promise((r) => setTimeout(r, 20));
      this.#stub = stub;
      this.#desc = parseTargetDescription((annex) => this.#xfer(stub, annex));
      this.#vcpus = this.#threadIds(stub);
      if (stub.request("Qqemu.PhyMemMode:1") !== "OK") {
        throw new LiveError("QEMU's gdbstub refused physical memory mode (Qqemu.PhyMemMode)");
      }
      if (this.#ramRanges.length === 0) this.#openRam(stub);
      this.#accelerator ??= accelerator(stub);
    } catch (e) {
      this.#stub = undefined;
      // Leave the guest as it was found: QEMU keeps the physical-memory switch for whoever
      // connects next (plain gdb would then read physical memory), and connecting paused a
      // guest that ran.
      const wasRunning = sawStop || (this.options.qmp !== undefined && await this.#qmpRunning());
      try {
        stub.request("Qqemu.PhyMemMode:0", GIVE_BACK_TIMEOUT_MS);
      } catch {
        // the link is gone, or QEMU never answered: nothing to put back
      }
      stub.close(wasRunning ? "D;1" : undefined);
      throw e instanceof LiveError || e instanceof DumpError
        ? e
        : new LiveError(`QEMU's gdbstub at ${stub.address}: ${errorText(e)}`);
    }
    this.#drop();
    const wasRunning = this.options.qmp ? sawStop || await this.#qmpRunning() : sawStop;
    return wasRunning;
  }

  async #qmpRunning(): Promise<boolean> {
    try {
      return await this.options.qmp!.running();
    } catch {
      return false;
    }
  }

  #xfer(stub: QemuStub, annex: string): string {
    let text = "";
    for (let off = 0; off < 1 << 20;) {
      const r = stub.request(`qXfer:features:read:${annex}:${off.toString(16)},ffb`);
      if (r === "" || r.startsWith("E")) throw new LiveError(`QEMU's gdbstub: no ${annex} (${r})`);
      text += r.slice(1);
      off += r.length - 1;
      if (r[0] === "l") break;
    }
    return text;
  }

  #threadIds(stub: QemuStub): string[] {
    const ids: string[] = [];
    for (
      let r = stub.request("qfThreadInfo");
      r.startsWith("m");
      r = stub.request("qsThreadInfo")
    ) {
      ids.push(...r.slice(1).split(",").filter((s) => s));
    }
    if (ids.length === 0) throw new LiveError("QEMU's gdbstub lists no vCPU");
    return ids;
  }

  #openRam(stub: QemuStub): void {
    const mtree = stub.monitor("info mtree -f");
    if (this.options.guestRam) {
      this.#ram = new GuestRam(this.options.guestRam, stub.monitor("info memdev"), mtree);
      this.#ramRanges = [...this.#ram.ranges];
      // The file must hold what the guest sees: compare a page through both ways, one that is
      // never all zeros (the top page table of vCPU 0, else the first page of RAM).
      const regs = readVcpuRegisters({ ...this.#srcWith(stub), vcpus: this.#vcpus.slice(0, 1) })[0];
      const cr3 = regs.get("cr3");
      const probe = cr3 !== undefined
        ? Number(cr3 & 0x000ffffffffff000n)
        : this.#ramRanges[0].start;
      const viaFile = new Uint8Array(4096);
      const inFile = this.#ram.read(probe, viaFile);
      const viaStub = stub.readMemory(BigInt(probe), 4096);
      if (!inFile || (viaStub.length === 4096 && viaStub.some((b, i) => b !== viaFile[i]))) {
        throw new LiveError(
          `${this.options.guestRam}: its contents differ from the guest's memory: not this ` +
            "guest's RAM file (or the backend is not share=on)",
        );
      }
    } else {
      this.#ramRanges = mainRam(mtree);
      if (this.#ramRanges.length === 0) throw new LiveError("QEMU's memory map shows no RAM");
    }
  }

  #session = false;

  async attach(): Promise<string | undefined> {
    if (this.#lost) return this.#lost;
    if (this.#session) return "another gdb is attached to this guest; one client at a time";
    this.#session = true;
    try {
      // Still connected from the banner (pipe mode): the guest is stopped already.
      if (!this.#stub) await this.connect();
    } catch (e) {
      this.#session = false;
      return errorText(e);
    }
    return undefined;
  }

  /** Whether a connection to QEMU's stub is held (a client's session, or the banner's look). */
  get holdsGuest(): boolean {
    return this.#stub !== undefined;
  }

  release(resume: boolean): void {
    this.#session = false;
    const stub = this.#stub;
    if (!stub) return;
    this.#stub = undefined;
    this.#drop();
    // Running: resumed by the client, or behind its back (a QEMU monitor `cont`, QMP).
    const runs = this.#running || this.#resumedBehind;
    this.#resumedBehind = false;
    if (runs) {
      // The client went away while the guest ran (gdb dropped, or kdb's console closed after
      // `go`): stop it, for the next client or to take our breakpoints out before it runs on
      // alone. A packet sent to QEMU's stub while the guest runs is dropped (its first byte
      // stops the guest), so `D;1` could not be sent as it runs.
      try {
        stub.interrupt();
      } catch {
        // gone anyway
      }
    }
    // QEMU 7.2 keeps the physical-memory switch across connections: put it back for whoever
    // connects to the stub next (gdb on its own would read physical memory).
    try {
      if (runs) stub.request("qC");
      // The guest is stopped now. `D;1` would clear the breakpoints itself, not the switch.
      for (const spec of this.#inserted) stub.request(`z${spec}`);
      stub.request("Qqemu.PhyMemMode:0");
    } catch {
      // the link is gone
    }
    this.#inserted.clear();
    this.#running = false;
    this.#ownResumes = 0;
    this.#stopWaiter = undefined;
    this.#stopQueue = [];
    // `D;1`: QEMU answers plain `D` with E22. Closing without it leaves the guest paused.
    stub.close(resume ? "D;1" : undefined);
  }

  /** Close everything (the server is stopping). */
  close(): void {
    this.release(false);
    this.#ram?.close();
    this.#opened?.vmlinux.close();
  }

  #notice(n: StubNotice): void {
    if (n.ev === "lost") {
      this.#lost = `QEMU's gdbstub at ${this.options.host}:${this.options.port}: ${n.reason}`;
      this.#deliver({ kind: "lost", message: this.#lost });
      this.onLost(this.#lost);
      return;
    }
    if (n.unsolicited) return;
    this.#running = false;
    this.#resumedByUs = false;
    this.#drop();
    const reply = this.#rewriteStop(n.text);
    if (this.#stepped) this.#buildWhileQemuAnswers();
    if (this.#stepAgain(reply)) return;
    this.#deliver({ kind: "stopped", reply });
  }

  /** The single step under way (see {@link #stepAgain}). */
  #step: StepUnderWay | undefined;

  /**
   * What {@link #stepAgain} needs of a resume that single-steps one vCPU: the registers gdb
   * read before it (none if gdb read none: then nothing is compared, and nothing is read).
   */
  #stepOf(actions: ResumeAction[], packet: string): StepUnderWay | undefined {
    const steps = actions.filter((a) => a.action === "s");
    if (steps.length !== 1 || steps[0].thread === undefined || steps[0].thread <= 0) return;
    const cpu = this.#cpuOf(steps[0].thread);
    if (cpu === undefined) return;
    const before = this.#stopRegisters?.[cpu];
    if (!before || (before instanceof LazyRegisters && !before.loaded) || before.size === 0) return;
    return { packet, cpu, before, retries: 0 };
  }

  /**
   * QEMU 7.2's TCG can report a single step it never ran: a vCPU that leaves the step's
   * one-instruction block before running it (an exit request reaching it as it enters the
   * block) still raises the step's debug exception (accel/tcg/cpu-exec.c, cpu_tb_exec), and
   * QEMU's own `g` then shows the pc unmoved. gdb sees its `stepi` do nothing or, stepping off a
   * breakpoint, reports the same hit twice (see tests/live_step_test.ts for how often). Such a
   * stop (a SIGTRAP of the stepped vCPU, no watchpoint, every register as before the step) is
   * not told: the step is sent again, at most STEP_RETRIES times. The registers compared are
   * the ones the stop reply carries, read anyway; a step gdb read no registers for is not
   * checked. A failure to send the step again tells the stop as QEMU gave it.
   */
  #stepAgain(reply: string): boolean {
    const step = this.#step;
    this.#step = undefined;
    const stop = this.#lastStop;
    const stub = this.#stub;
    if (!step || !stop || !stub || step.retries >= STEP_RETRIES) return false;
    if (stop.cpu !== step.cpu || stop.signal !== 5 || stop.rest !== "") return false;
    try {
      if (!sameRegisters(step.before, this.#vcpuRegisters()[step.cpu])) return false;
    } catch {
      return false; // gdb's next request will say what failed
    }
    this.#step = { ...step, retries: step.retries + 1 };
    let again: StubNotice | undefined;
    try {
      again = this.#sendResume(stub, step.packet);
    } catch {
      this.#deliver({ kind: "stopped", reply });
      return true;
    }
    if (again) this.#notice(again);
    return true;
  }

  /**
   * Send a resume packet to QEMU, with what a resume changes here: everything read is dropped,
   * and the guest runs by our hand. Undone, and the error thrown, if the packet cannot be sent.
   */
  #sendResume(stub: QemuStub, packet: string): StubNotice | undefined {
    this.#drop();
    this.#running = true;
    this.#resumedByUs = true;
    if (this.options.qmp) this.#ownResumes++;
    try {
      return stub.resume(packet);
    } catch (e) {
      this.#step = undefined;
      this.#running = false;
      this.#resumedByUs = false;
      if (this.options.qmp) this.#ownResumes--;
      throw e;
    }
  }

  /**
   * The last resume single-stepped a vCPU while the others ran (gdb's `stepi`), not one alone
   * (gdb's step off a breakpoint) and not a continue.
   */
  #stepped = false;

  /**
   * At a stop, the stub has just asked QEMU for the stopped vCPU's registers (`g`), which the
   * stop reply to gdb carries; QEMU takes a while to answer. Everything of the stop's kernel
   * view that only needs memory (the kept view, VMCOREINFO checked again, each CPU's task and
   * the thread list gdb asks for at every step) is built meanwhile from the RAM file, instead of
   * after the stop reply, where gdb's next read, 50–150 µs after a `stepi`, would wait for it.
   * Only at a step's stop: at a breakpoint gdb works on the stop for 0.3–0.8 ms before its
   * first request, and the session builds all this then (RunControl.afterStop), after the stop
   * reply has gone. Without the RAM file memory comes through the stub, which would have to
   * read QEMU's answer first: nothing gains. Not after a step off a breakpoint either: gdb's
   * next packets (put the breakpoint back, continue) need none of it.
   */
  #buildWhileQemuAnswers(): void {
    if (!this.#ram || this.#lost) return;
    try {
      this.#state().inner.threads();
    } catch {
      // The requests that need the view will say what is wrong.
    }
  }

  #deliver(e: StopEvent): void {
    const w = this.#stopWaiter;
    this.#stopWaiter = undefined;
    if (w) w(e);
    else this.#stopQueue.push(e);
  }

  #qmpEvent(event: string): void {
    // A reset of the stopped guest (from QEMU's monitor) changes its registers and memory.
    if (event === "RESET" && this.#stub && !this.#running) this.#drop();
    if (event === "RESUME" && this.#ownResumes > 0) {
      // QEMU sends RESUME for every gdbstub continue and step, on another socket: it may arrive
      // after the step's stop reply. Ours, in order, are not a resume behind gdb's back.
      this.#ownResumes--;
      return;
    }
    if (event === "RESUME" && this.#stub && !this.#running && !this.#resumedByUs) {
      // Resumed behind gdb's back (QMP `cont`): whatever was read is stale; stop it again
      // before the next read (see #state).
      this.options.log?.(
        "the guest was resumed outside gdb (QMP); it is stopped again on the next request",
      );
      this.#drop();
      this.#resumedBehind = true;
    }
  }

  /**
   * A QEMU monitor command can change the stopped guest (`system_reset`, `loadvm`, a write):
   * nothing read before it is kept. HMP's `cont` runs it, and QEMU's stub then drops the next
   * request's first byte to stop the guest, so the guest is stopped again first, as after a
   * QMP `cont`; the RESUME event QMP sends for it (with `--qmp`) is this one. True when the
   * command resumed the guest.
   */
  #afterMonitorCommand(command: string): boolean {
    this.#drop();
    if (!/^(c|cont)$/.test(command)) return false;
    this.options.log?.(
      "the guest was resumed by a QEMU monitor command; it is stopped again on the next request",
    );
    this.#resumedBehind = true;
    if (this.options.qmp) this.#ownResumes++;
    return true;
  }

  #resumedBehind = false;
  /** Our resumes whose QMP RESUME event has not arrived yet. */
  #ownResumes = 0;

  // --- the stop's view -------------------------------------------------------------------------

  /** See {@link RunControl.generation}. */
  get generation(): number {
    return this.#generation;
  }

  #generation = 0;

  #drop(): void {
    this.#generation++;
    this.#snapshot = undefined;
    this.#stopRegisters = undefined;
  }

  /** This stop's vCPU registers, each read when first asked for (shared with the snapshot). */
  #stopRegisters: Map<string, bigint>[] | undefined;

  #vcpuRegisters(): Map<string, bigint>[] {
    return this.#stopRegisters ??= lazyVcpuRegisters(this.#src());
  }

  #src(): LiveSource {
    return this.#srcWith(this.#live());
  }

  #srcWith(stub: QemuStub): LiveSource {
    return {
      stub,
      desc: this.#desc,
      ram: this.#ram,
      ramRanges: this.#ramRanges,
      vcpus: this.#vcpus,
    };
  }

  #live(): QemuStub {
    if (this.#lost) throw new LiveError(this.#lost);
    const stub = this.#stub;
    if (!stub) throw new LiveError("no connection to QEMU's gdbstub");
    if (this.#resumedBehind) {
      // Stopped again before QEMU is asked anything: a byte that reaches its stub while the
      // guest runs only stops it (the packet it began is lost).
      this.#resumedBehind = false;
      stub.interrupt();
      stub.request("qC"); // answered once the guest has stopped again
    }
    return stub;
  }

  #state(): Snapshot {
    if (this.#snapshot) return this.#snapshot;
    const src = this.#src();
    const registers = this.#stopRegisters ??= lazyVcpuRegisters(src);
    const { kernel, facts } = this.#kernelView(src, registers);
    let inner: InnerTarget;
    const cpuThread = registers.map((_, cpu) => cpu + 1);
    if (this.options.tasks) {
      const t = tasksTarget(kernel);
      inner = t;
      for (const [cpu, task] of kernel.cpuTasks.entries()) {
        if (task.task === undefined) continue;
        const mark = `task 0x${task.task.toString(16)}`;
        const th = t.threads().find((x) => x.extra?.endsWith(mark));
        if (th) cpuThread[cpu] = th.id;
      }
    } else inner = new KernelTarget(kernel);
    this.#snapshot = { kernel, inner, facts, cpuThread };
    return this.#snapshot;
  }

  #lastFacts: LiveFacts | undefined;
  /** The kernel view of the last stops, while its VMCOREINFO is unchanged (see #kernelView). */
  #kept: { facts: LiveFacts; dump: LiveDump; kernel: Kernel } | undefined;

  /**
   * The kernel view of this stop. After a resume of the same kernel, the last stop's view with
   * this stop's registers and everything read from memory dropped; else a new one, with the
   * KASLR offset and VMCOREINFO found again.
   */
  #kernelView(
    src: LiveSource,
    registers: Map<string, bigint>[],
  ): { kernel: Kernel; facts: LiveFacts } {
    const again = this.#factsAgain(src, registers);
    const kept = this.#kept;
    if (again && kept?.facts === again) {
      // The same kernel, still running: its boot-time facts stand, nothing read before does.
      kept.dump.nextStop(src, registers);
      kept.kernel.forgetMemory();
      return kept;
    }
    this.#kept = undefined;
    const probe = new LiveDump(src, registers);
    let facts: LiveFacts = {
      kaslrSource: "not found",
      vmcoreinfoSource: "not found",
      warnings: [],
    };
    const scan = this.#vmcoreinfoScan(src);
    if (again) facts = again;
    else if (probe.arch === "x86_64" && probe.qemuCpus.length > 0) {
      const cpu = probe.qemuCpus[0];
      facts = discoverX86(
        new PhysicalMemory(probe, { cacheBytes: 1 << 20 }),
        cpu.cr3,
        cpu.cr4,
        this.#opened?.vmlinux,
        scan,
        this.#knownVmcoreinfo,
      );
    } else if (probe.arch === "aarch64") {
      facts = discoverAarch64(
        new PhysicalMemory(probe, { cacheBytes: 1 << 20 }),
        registers.length,
        (cpu) => readAarch64Vcpu(src, cpu, registers[cpu]),
        this.#opened?.vmlinux,
        scan,
        this.#knownVmcoreinfo,
      );
    }
    if (!again && scan?.ran && !facts.vmcoreinfo) {
      this.#stubScanAfter = performance.now() + STUB_SCAN_RETRY_MS;
    }
    if (facts.vmcoreinfo && facts.vmcoreinfoPaddr !== undefined) {
      this.#knownVmcoreinfo = { paddr: facts.vmcoreinfoPaddr, raw: facts.vmcoreinfo.raw.slice() };
      this.#lastFacts = facts;
    }
    const dump = new LiveDump(src, registers, {
      vmcoreinfo: facts.vmcoreinfo,
      warnings: facts.warnings,
      details: {
        "KASLR found": facts.kaslrSource,
        "VMCOREINFO": facts.vmcoreinfoSource,
        "gdbstub link": src.stub.link,
        "accelerator": this.#accelerator ?? "not known",
      },
    });
    const kernel = new Kernel(dump, {
      opened: this.#opened,
      kaslrOffset: facts.kaslrOffset,
      // A stop reads a few hundred pages, and the cache is emptied at every resume: the
      // dump-sized default would be memory held for nothing. RAM-file pages are cheap to read.
      cacheBytes: Math.min(this.options.cacheBytes ?? 64 << 20, this.#ram ? 2 << 20 : 16 << 20),
      // Likewise the translation cache: a stop translates a few hundred pages, not millions.
      tlbEntries: 4096,
    });
    // Kept for the next stops only when VMCOREINFO tells them it is the same kernel (and names
    // the page-table root: CR3 alone may be a process's tables, freed once the guest runs).
    if (facts === this.#lastFacts) this.#kept = { facts, dump, kernel };
    return { kernel, facts };
  }

  /**
   * How guest RAM may be searched for VMCOREINFO at this stop: the RAM file, else through the
   * gdbstub, unless a scan through the gdbstub looked and found nothing less than
   * {@link STUB_SCAN_RETRY_MS} ago (a kernel early in its boot, before it has written
   * VMCOREINFO, or one without it: every stop would pay for the scan).
   */
  #vmcoreinfoScan(src: LiveSource): VmcoreinfoScan | undefined {
    if (this.#ram) return ramFileScan(this.#ram);
    return performance.now() >= this.#stubScanAfter ? stubScan(src) : undefined;
  }

  /** When a scan through the gdbstub may be tried again. */
  #stubScanAfter = 0;

  /**
   * The facts of the last stop, when the guest's VMCOREINFO text is still where it was (one
   * page read): the kernel has not been replaced, so its KASLR offset stands.
   */
  #factsAgain(src: LiveSource, registers: Map<string, bigint>[]): LiveFacts | undefined {
    const known = this.#knownVmcoreinfo;
    const last = this.#lastFacts;
    if (!known || !last) return undefined;
    const now = this.#vmcoreinfoNow.length === known.raw.length
      ? this.#vmcoreinfoNow
      : (this.#vmcoreinfoNow = new Uint8Array(known.raw.length));
    // With the RAM file one read, without a page cache to set up; else through the stub.
    if (this.#ram) {
      if (!this.#ram.read(known.paddr, now)) return undefined;
    } else {
      const phys = new PhysicalMemory(new LiveDump(src, registers), { cacheBytes: 1 << 16 });
      if (phys.read(known.paddr, now).bytes !== now.length) return undefined;
    }
    const raw = known.raw;
    for (let i = 0; i < raw.length; i++) if (now[i] !== raw[i]) return undefined;
    return last;
  }

  /** The buffer VMCOREINFO is read into at every stop, to compare. */
  #vmcoreinfoNow = new Uint8Array(0);

  /** The CPU a thread of ours runs on, or undefined (a sleeping task). */
  #cpuOf(thread: number): number | undefined {
    // Kernel mode: thread n is vCPU n-1, no kernel view needed (resuming builds none).
    if (!this.options.tasks) {
      return thread >= 1 && thread <= this.#vcpus.length ? thread - 1 : undefined;
    }
    const s = this.#state();
    const cpu = s.cpuThread.indexOf(thread);
    return cpu >= 0 ? cpu : undefined;
  }

  #rewriteStop(text: string): string {
    // `T05thread:p01.02;watch:ffff…;` → our thread id of vCPU 1 at this (new) stop.
    const signal = parseInt(text.slice(1, 3), 16);
    const fields = text.slice(3).split(";").filter((f) => f);
    let cpu = this.#lastStop?.cpu ?? 0;
    const rest: string[] = [];
    for (const f of fields) {
      const [k, v] = f.split(":");
      if (k === "thread") {
        const n = qemuThreadNumber(v ?? "");
        const index = this.#vcpus.findIndex((id) => qemuThreadNumber(id) === n);
        if (index >= 0) cpu = index;
      } else rest.push(f);
    }
    this.#lastStop = { cpu, signal: Number.isNaN(signal) ? 5 : signal, rest: rest.join(";") };
    return this.#stopReplyText();
  }

  #stopReplyText(): string {
    const s = this.#lastStop!;
    let thread = s.cpu + 1;
    // Tasks mode names the task running on the CPU: that needs this stop's task list. It may
    // not be readable (no type information, a guest rebooting): the stop is told all the same,
    // with the CPU's own number, and gdb's request for the thread list says what is wrong.
    if (this.options.tasks) {
      try {
        thread = this.#state().cpuThread[s.cpu];
      } catch (e) {
        this.options.log?.(`tasks at this stop: ${errorText(e)}`);
      }
    }
    const sig = s.signal.toString(16).padStart(2, "0");
    return `T${sig}thread:${thread.toString(16)};${s.rest ? s.rest + ";" : ""}`;
  }

  // --- Target ----------------------------------------------------------------------------------

  threads(): ThreadInfo[] {
    return this.#guard(() => this.#state().inner.threads(), []);
  }

  stopThread(): number {
    return this.#guard(() => {
      if (this.#lastStop && !this.options.tasks) return this.#lastStop.cpu + 1;
      const s = this.#state();
      return this.#lastStop ? s.cpuThread[this.#lastStop.cpu] : s.inner.stopThread();
    }, 1);
  }

  stopSignal(): number {
    return this.#lastStop?.signal ?? 5;
  }

  registers(threadId: number): RegisterValues {
    return this.#guard(() => {
      // Kernel mode: a vCPU's registers need no kernel view (a stop where gdb only reads
      // registers, such as stepping off a breakpoint, builds none).
      if (!this.options.tasks && !this.#snapshot) {
        const cpu = this.#vcpuRegisters()[threadId - 1];
        if (cpu) return cpu;
      }
      return this.#state().inner.registers(threadId);
    }, new Map());
  }

  systemRegister(threadId: number, name: string): bigint | undefined {
    return this.#guard(() => {
      const cpu = this.#cpuOf(threadId);
      if (cpu === undefined || this.#running) return undefined;
      return readSystemRegister(this.#src(), cpu, name);
    }, undefined);
  }

  afterStop(threadId: number): void {
    if (this.#running || this.#lost) return;
    const s = this.#state();
    // gdb's next request is a read at the stack pointer (the frame's unwinding): its page
    // and translation are then in the caches.
    const sp = s.inner.registers(threadId).get(s.kernel.dump.arch === "x86_64" ? "rsp" : "sp");
    if (sp !== undefined) s.inner.readMemory(sp, 64, threadId);
  }

  readMemory(address: bigint, length: number, threadId?: number): MemoryRead {
    try {
      return this.#state().inner.readMemory(address, length, threadId);
    } catch (e) {
      return { data: new Uint8Array(0), error: errorText(e) };
    }
  }

  readPhysical(address: bigint, length: number): MemoryRead {
    try {
      return this.#state().inner.readPhysical!(address, length);
    } catch (e) {
      return { data: new Uint8Array(0), error: errorText(e) };
    }
  }

  execFile(): string | undefined {
    return this.#opened ? resolve(this.#opened.vmlinux.path) : undefined;
  }

  textSegment(): bigint | undefined {
    return this.#guard(() => this.#state().kernel.textSegment(), undefined);
  }

  /**
   * As on a dump (gdb_unwind_elf.ts): with a vmlinux, unwind tables for the entry code it has
   * none for (a `bt` then ends at the syscall entry); without one, an executable of the running
   * kernel's own symbols (kallsyms) and, on x86_64, unwind tables (ORC), once VMCOREINFO locates
   * them. Made once per kernel: its text does not change while it runs.
   */
  libraries(): readonly { name: string; data: Uint8Array; exec?: boolean }[] {
    return this.#guard(() => {
      const s = this.#state();
      if (!s.facts.vmcoreinfo) return [];
      const boot = s.facts.vmcoreinfo.raw;
      if (this.#gdbFile?.boot !== boot) {
        const file = kernelFileForGdb(s.kernel);
        this.#gdbFile = { boot, files: file ? [file] : [] };
      }
      return this.#gdbFile.files;
    }, []);
  }

  /** The generated executable, and the VMCOREINFO text of the kernel it was made from. */
  #gdbFile: { boot: Uint8Array; files: GdbFile[] } | undefined;

  vmcoreinfo(): Uint8Array | undefined {
    return this.#guard(() => this.#state().kernel.dump.vmcoreinfo?.raw, undefined);
  }

  monitorHelp(): string[] {
    return [
      ...new KernelTarget(this.#state().kernel).monitorHelp(),
      "qemu CMD     a QEMU monitor (HMP) command, e.g. qemu info registers",
      ...(this.#state().kernel.dump.arch === "aarch64"
        ? ["sysregs [CPU] a vCPU's EL1 system registers (ESR, FAR, ELR, SPSR, TTBRx, …)"]
        : []),
    ];
  }

  monitor(command: string, out: MonitorOutput): boolean {
    const [verb] = command.trim().split(/\s+/, 1);
    if (verb === "sysregs") {
      out(this.#systemRegisters(command.trim().split(/\s+/).slice(1)));
      return true;
    }
    if (verb === "qemu") {
      const rest = command.trim().slice(4).trim();
      const qemuVerb = rest.split(/\s+/, 1)[0];
      if (this.options.readOnly && rest !== "" && !READ_ONLY_QEMU_COMMAND.test(qemuVerb)) {
        // QEMU's monitor can write memory, reset or quit the guest, load a snapshot…
        out(
          `qemu: "${qemuVerb}" refused: --read-only lets through only QEMU's help, info, x, xp ` +
            "and print\n",
        );
        return true;
      }
      try {
        out(this.#live().monitor(rest || "help"));
      } catch (e) {
        out(`qemu: ${errorText(e)}\n`);
      } finally {
        if (this.#afterMonitorCommand(rest)) {
          out("the guest runs; gdb's next request stops it again\n");
        }
      }
      return true;
    }
    return this.#state().inner.monitor?.(command, out) ?? false;
  }

  /**
   * `sysregs [CPU]`: an arm64 vCPU's EL1 system registers, each with one `p` to QEMU's stub,
   * which keeps them out of `g` (gdb's register set here is the core and FP registers).
   */
  #systemRegisters(args: string[]): string {
    const arch = this.#state().kernel.dump.arch;
    if (arch !== "aarch64") {
      return "sysregs: x86_64's system registers are gdb's own: p/x $cr3, info registers system\n";
    }
    const src = this.#src();
    if (args.length > 1 || (args.length && !/^\d+$/.test(args[0]))) {
      return "sysregs: usage: sysregs [CPU]\n";
    }
    const cpus = args.length ? [Number(args[0])] : src.vcpus.map((_, cpu) => cpu);
    if (cpus.some((cpu) => cpu >= src.vcpus.length)) {
      return `sysregs: no CPU ${args[0]} (the guest has ${src.vcpus.length})\n`;
    }
    const lines: string[] = [];
    for (const cpu of cpus) {
      lines.push(`CPU ${cpu}:`);
      for (const name of AARCH64_SYSTEM_REGISTERS) {
        const value = readSystemRegister(src, cpu, name);
        if (value === undefined) continue;
        lines.push(`  ${name.padEnd(15)} 0x${value.toString(16).padStart(16, "0")}`);
      }
    }
    return lines.join("\n") + "\n";
  }

  prepare(budgetMs: number): boolean {
    if (!this.#snapshot || this.#running) return false;
    return this.#snapshot.inner.prepare?.(budgetMs) ?? false;
  }

  #guard<T>(f: () => T, fallback: T): T {
    try {
      return f();
    } catch (e) {
      if (e instanceof LiveError) {
        this.options.log?.(e.message);
        return fallback;
      }
      throw e;
    }
  }

  // --- RunControl ------------------------------------------------------------------------------

  resume(actions: ResumeAction[]): string | undefined {
    let stub: QemuStub;
    try {
      stub = this.#live();
    } catch (e) {
      return `E.${errorText(e)}`;
    }
    const parts: string[] = [];
    for (const a of actions) {
      if (a.thread === undefined || a.thread <= 0) {
        parts.push(a.action);
        continue;
      }
      const cpu = this.#cpuOf(a.thread);
      if (cpu === undefined) {
        // gdb numbers threads its own way: the name says which task this is (the session's
        // error reply makes any byte of it safe to send).
        const name = this.threads().find((t) => t.id === a.thread)?.name;
        return `E.thread ${a.thread}${name ? ` (${name})` : ""} is not running on a CPU: ` +
          "only a task on a CPU can be stepped or continued alone";
      }
      parts.push(`${a.action}:${this.#vcpus[cpu]}`);
    }
    const packet = `vCont;${parts.join(";")}`;
    // Before the resume drops this stop's registers: the step's check compares with them.
    this.#step = this.#stepOf(actions, packet);
    this.#stepped = actions.some((a) => a.action === "s") && !isLoneStep(actions);
    let stop: StubNotice | undefined;
    try {
      stop = this.#sendResume(stub, packet);
    } catch (e) {
      return `E.${errorText(e)}`;
    }
    if (stop) this.#notice(stop);
    return undefined;
  }

  interrupt(): void {
    if (!this.#running) return;
    try {
      this.#live().interrupt();
    } catch {
      // a lost link is reported through nextStop
    }
  }

  stopNow(): StopEvent | undefined {
    return this.#stopQueue.shift();
  }

  nextStop(): Promise<StopEvent> {
    const queued = this.#stopQueue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#lost) return Promise.resolve({ kind: "lost", message: this.#lost });
    return new Promise((resolve) => this.#stopWaiter = resolve);
  }

  breakpoint(insert: boolean, type: number, address: bigint, kind: number): string {
    const spec = `${type},${address.toString(16)},${kind.toString(16)}`;
    const packet = `${insert ? "Z" : "z"}${spec}`;
    try {
      const stub = this.#live();
      // Under TCG, QEMU cannot refuse a breakpoint (type 0 or 1, kept in a list per vCPU; memory
      // is not written) nor the removal of one it holds: gdb's wait for QEMU's answer, two hops
      // twice at every breakpoint hit, is spared. The answer is still read, in order; a refusal
      // is said on stderr.
      const cannotFail = this.#accelerator === "TCG" && type <= 1 &&
        (insert || this.#inserted.has(spec));
      let reply: string;
      if (cannotFail && stub.post) {
        stub.post(packet, (late) => {
          if (late === "OK") return;
          this.options.log?.(`QEMU's gdbstub refused ${packet} (${late || "not supported"})`);
          if (insert) this.#inserted.delete(spec);
        });
        reply = "OK";
      } else reply = stub.request(packet);
      if (reply === "OK") {
        if (insert) this.#inserted.add(spec);
        else this.#inserted.delete(spec);
      }
      return reply;
    } catch (e) {
      return `E.${errorText(e)}`;
    }
  }

  /**
   * Breakpoints and watchpoints this session put into QEMU's stub and has not taken out. QEMU
   * keeps them when a client goes without `D` (only a detach clears them), so a client that
   * dropped while the guest ran would leave the next one a stop it never asked for.
   */
  #inserted = new Set<string>();

  /** How QEMU runs the guest (see {@link accelerator}); TCG cannot refuse a breakpoint. */
  #accelerator: string | undefined;

  writeMemory(
    address: bigint,
    data: Uint8Array,
    threadId: number,
    physical: boolean,
  ): string | undefined {
    if (this.options.readOnly) return "E.read-only (--read-only): memory writes are refused";
    if (data.length === 0) return undefined;
    try {
      const stub = this.#live();
      if (physical) return this.#writeChunks(stub, address, data, (a) => a);
      const where = this.#writeTranslation(address, threadId);
      if (where) return this.#writeChunks(stub, address, data, where);
      // QEMU translates with the vCPU's own page tables: kernel addresses, and user addresses
      // of the process running there.
      const cpu = this.#cpuOf(threadId);
      if (cpu === undefined) {
        return `E.thread ${threadId} is not on a CPU, and this stop has no kernel view to ` +
          `find its page tables: its memory cannot be written`;
      }
      stub.selectThread(this.#vcpus[cpu]);
      stub.request("Qqemu.PhyMemMode:0");
      try {
        return this.#writeChunks(stub, address, data, (a) => a);
      } finally {
        stub.request("Qqemu.PhyMemMode:1");
      }
    } catch (e) {
      return `E.${errorText(e)}`;
    }
  }

  /**
   * Where a virtual write goes: where a read of the same address finds its bytes, through the
   * page tables the stop's view reads with (the kernel's, or the thread's process's: a sleeping
   * task's user memory too, and kernel memory when the vCPU's own tables map no kernel, as
   * with PTI), or at the same address when the view has none (its reads are physical then).
   * Undefined without a kernel view at this stop (early boot, say).
   */
  #writeTranslation(
    address: bigint,
    threadId: number,
  ): ((address: bigint) => bigint | undefined) | undefined {
    let tables: VirtualMemory | undefined;
    try {
      tables = this.#state().inner.memoryFor(address, threadId);
    } catch {
      return undefined;
    }
    if (!tables) return (a) => a;
    const t = tables;
    return (a) => {
      const pa = t.translate(a);
      return pa < 0 ? undefined : BigInt(pa);
    };
  }

  /**
   * Write `data` at `address` in QEMU `M` packets of at most 1 KiB, none crossing a 4 KiB page
   * (each page is translated by `where`; undefined: not mapped, nothing more is written).
   * Everything read is dropped afterwards, whatever was written.
   */
  #writeChunks(
    stub: QemuStub,
    address: bigint,
    data: Uint8Array,
    where: (address: bigint) => bigint | undefined,
  ): string | undefined {
    try {
      for (let off = 0; off < data.length;) {
        const va = address + BigInt(off);
        const n = Math.min(WRITE_CHUNK, 0x1000 - Number(va & 0xfffn), data.length - off);
        const target = where(va);
        if (target === undefined) {
          return `E.0x${va.toString(16)} is not mapped: nothing written there`;
        }
        const chunk = data.subarray(off, off + n);
        const r = stub.request(`M${target.toString(16)},${n.toString(16)}:${bytesHex(chunk)}`);
        if (r !== "OK") return `E.QEMU refused the write at 0x${va.toString(16)} (${r})`;
        off += n;
      }
      return undefined;
    } finally {
      this.#drop();
    }
  }

  writeRegisters(threadId: number, values: ReadonlyMap<string, bigint>): string | undefined {
    if (this.options.readOnly) return "E.read-only (--read-only): register writes are refused";
    if (values.size === 0) return undefined;
    try {
      const cpu = this.#cpuOf(threadId);
      if (cpu === undefined) {
        return `E.thread ${threadId} is not on a CPU: its registers are saved state`;
      }
      // Every name first: a register QEMU lacks fails the request before anything is written.
      const packets: [string, string][] = [];
      for (const [name, value] of values) {
        const reg = qemuRegister(this.#desc, name);
        if (!reg) return `E.QEMU has no register ${name}`;
        packets.push([name, `P${reg.regnum.toString(16)}=${encodeRegisterValue(reg, value)}`]);
      }
      const stub = this.#live();
      stub.selectThread(this.#vcpus[cpu]);
      try {
        for (const [name, packet] of packets) {
          const r = stub.request(packet);
          if (r !== "OK") return `E.QEMU refused to write ${name} (${r})`;
        }
      } finally {
        this.#drop();
      }
      return undefined;
    } catch (e) {
      return `E.${errorText(e)}`;
    }
  }
}

/**
 * How QEMU runs the guest, from its monitor (HMP, through the gdbstub): "KVM" when `info kvm`
 * says so, "TCG" when `info jit` answers with TCG's statistics, else undefined (HVF, Xen, an
 * older or newer QEMU that words them otherwise). Under KVM a software breakpoint writes guest
 * memory and can fail; under TCG it cannot.
 */
function accelerator(stub: QemuStub): string | undefined {
  const ask = (command: string) => {
    try {
      return stub.monitor(command);
    } catch {
      return "";
    }
  };
  if (/kvm support: enabled/.test(ask("info kvm"))) return "KVM";
  // TCG's own statistics; any other accelerator refuses ("only available with accel=tcg").
  if (/Translation buffer state/.test(ask("info jit"))) return "TCG";
  return undefined;
}

/** Whether two register sets hold the same registers with the same values. */
function sameRegisters(a: ReadonlyMap<string, bigint>, b: ReadonlyMap<string, bigint>): boolean {
  if (a.size !== b.size) return false;
  for (const [name, value] of a) if (b.get(name) !== value) return false;
  return true;
}
