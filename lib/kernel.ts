/**
 * A kernel's view of a dump: its page tables, KASLR offset, symbols, types and per-CPU tasks.
 * Shared by the kernel, tasks and process targets.
 *
 * @module
 */

import type { DumpReader } from "./dump.ts";
import { PhysicalMemory, type PhysicalMemoryOptions } from "./physical_memory.ts";
import { type LinearRange, type PageTableWalker, VirtualMemory } from "./paging.ts";
import {
  findDirectMapBase,
  START_KERNEL_MAP,
  X86_64Walker,
  x86LinearRanges,
  x86PagingInfo,
} from "./paging_x86_64.ts";
import { arm64LinearRanges, arm64PagingInfo, Arm64Walker } from "./paging_aarch64.ts";
import { Vmlinux } from "./vmlinux.ts";
import { EM_AARCH64, EM_X86_64 } from "./elf.ts";
import { Btf } from "./btf.ts";
import { DumpError } from "./errors.ts";
import { panicCpuFromLog, readKernelLog } from "./dmesg.ts";
import { errorText } from "./file_source.ts";
import { type KallsymsTable, readKallsyms } from "./kallsyms.ts";
import {
  findBtfInImage,
  findInitTask,
  findRunqueues,
  type FoundRunqueue,
} from "./kernel_search.ts";

/** Options for building the kernel view. */
export interface KernelOptions extends PhysicalMemoryOptions {
  /** Path of the matching vmlinux (symbols, types, and gdb's symbol file). */
  vmlinux?: string;
  /**
   * The vmlinux already opened, with its types (a live target rebuilds the kernel view at every
   * stop and keeps these). Takes the place of `vmlinux`.
   */
  opened?: { vmlinux: Vmlinux; btf?: Btf };
  /** KASLR offset to use when the dump has no VMCOREINFO KERNELOFFSET (found some other way). */
  kaslrOffset?: bigint;
  /** Translation cache slots (a power of two; default 64 Ki). */
  tlbEntries?: number;
}

/** What ran on one CPU when the dump was taken. */
export interface CpuTask {
  /** CPU number (index into the dump's CPUs). */
  cpu: number;
  /** Address of the task_struct, when known. */
  task?: bigint;
  /** pid of the task, when known. */
  pid?: number;
  /** Its command name (`task->comm`), when known. */
  comm?: string;
}

/** Kernel image symbols lie above this; per-CPU symbols (x86_64) are small offsets below. */
const KERNEL_HALF = 0xffff000000000000n;
/** Lowest kernel address of x86_64 with 5-level paging (the direct map may start there). */
const KERNEL_SPACE = 0xff00000000000000n;

/** The dumped kernel. */
export class Kernel {
  /** The dump (or a live guest's memory) the kernel is read from. */
  readonly dump: DumpReader;
  /** Physical memory of the dump, through the page cache. */
  readonly phys: PhysicalMemory;
  /** Kernel virtual memory (undefined when the dump lacks what translation needs). */
  readonly memory?: VirtualMemory;
  /** The symbol file given in the options, if any. */
  readonly vmlinux?: Vmlinux;
  /** Kernel type information (the vmlinux's or the dump's BTF), when found. */
  btf?: Btf;
  /** KASLR offset of kernel text (VMCOREINFO KERNELOFFSET), 0 when not randomized. */
  readonly kaslrOffset: bigint;
  /** Where type information came from, for the banner. */
  typeSource: string;
  /**
   * What the user should know about this kernel view (a vmlinux of another build, a type source
   * that failed), one line each.
   */
  readonly warnings: string[] = [];
  /**
   * What was found by searching the dump because kallsyms lacks data symbols (and no vmlinux was
   * given): one line each, for the banner and `ps`.
   */
  readonly foundBySearch: string[] = [];
  /** Per-CPU running task (read on first use: a live guest's stop often needs none). */
  get cpuTasks(): CpuTask[] {
    return this.#cpuTasks ??= this.dump.cpus.map((c) => this.#cpuTask(c.cpu));
  }

  #cpuTasks?: CpuTask[];

  /** The CPU that panicked, when it can be told (read on first use). */
  get panicCpu(): number | undefined {
    if (this.#panicCpu === null) this.#panicCpu = this.#findPanicCpu();
    return this.#panicCpu;
  }

  #panicCpu: number | undefined | null = null;
  /** Direct map base (x86_64 page_offset_base) or linear map start (arm64). */
  readonly directMapBase?: bigint;

  /**
   * Find what reading the kernel needs: the KASLR offset, the page tables, symbols and types.
   * @param dump the dump to read
   * @param options the vmlinux, page cache and translation cache settings
   * @throws DumpError for a vmlinux that cannot be read or is of another architecture
   */
  constructor(dump: DumpReader, options: KernelOptions = {}) {
    this.dump = dump;
    this.phys = new PhysicalMemory(dump, options);
    const vmci = dump.vmcoreinfo;
    this.kaslrOffset = vmci?.kernelOffset ?? options.kaslrOffset ?? 0n;
    if (options.opened) this.vmlinux = options.opened.vmlinux;
    else if (options.vmlinux) this.vmlinux = new Vmlinux(options.vmlinux);
    if (this.vmlinux) {
      // A vmlinux of another architecture can only mislead gdb: refuse it outright.
      const arch = vmlinuxArch(this.vmlinux.header.machine);
      if (arch !== dump.arch) {
        if (!options.opened) this.vmlinux.close();
        throw new DumpError(
          this.vmlinux.path,
          "ELF header",
          `a vmlinux for ${arch}, but the dump is of an ${dump.arch} kernel: give the ` +
            `${dump.arch} vmlinux of release ${vmci?.osRelease ?? "(unknown)"}`,
        );
      }
    }
    // A vmlinux of another build still goes to gdb (the user asked for it, and is warned), but
    // the server's own symbols and types then come from the dump.
    const trusted = this.#checkVmlinux();
    this.#symbolFile = trusted ? this.vmlinux : undefined;

    let btf: Btf | undefined;
    let typeSource = "none (give --vmlinux for task names)";
    if (this.#symbolFile) {
      const file = this.#symbolFile;
      const bytes = options.opened?.btf ? undefined : file.sectionBytes(".BTF");
      if (options.opened?.btf) {
        btf = options.opened.btf;
        typeSource = `BTF of ${file.path}`;
      } else if (bytes) {
        try {
          btf = new Btf(bytes);
          typeSource = `BTF of ${file.path}`;
        } catch (e) {
          this.warnings.push(`${file.path}: .BTF: ${errorText(e)}`);
        }
      } else typeSource = "none: the vmlinux has no .BTF section";
    }
    this.btf = btf;
    this.typeSource = typeSource;

    const physTop = dump.maxPfn * dump.pageSize;
    const image = this.#symbolFile ? this.#relocatedImage() : undefined;
    let walker: PageTableWalker | undefined;
    let linear: LinearRange[] = [];
    if (dump.arch === "x86_64") {
      const info = vmci ? x86PagingInfo(vmci) : undefined;
      let root = info?.root;
      let levels = info?.levels ?? 4;
      const sme = info?.smeMask ?? 0n;
      if (root === undefined && dump.qemuCpus.length) {
        // No VMCOREINFO: QEMU's note still has CR3 (the kernel half is shared by every mm).
        const cr = dump.qemuCpus[0];
        root = Number(cr.cr3 & 0x000ffffffffff000n & ~sme);
        levels = (cr.cr4 & (1n << 12n)) !== 0n ? 5 : 4;
        this.warnings.push("no VMCOREINFO: page tables taken from CPU 0's CR3");
      }
      if (root !== undefined) {
        const w = new X86_64Walker(this.phys, root, levels, sme);
        walker = w;
        let pob = this.#readSymbolU64("page_offset_base", w);
        if (pob === undefined || pob < KERNEL_SPACE) pob = findDirectMapBase(w, levels);
        this.directMapBase = pob;
        linear = x86LinearRanges(
          pob,
          physTop,
          image && info ? { ...image, physBase: info.physBase } : undefined,
        );
      }
    } else {
      const info = vmci ? arm64PagingInfo(vmci) : undefined;
      if (info) {
        walker = new Arm64Walker(this.phys, info.root, info.vaBits, info.granule);
        linear = arm64LinearRanges(info, physTop, image);
        this.directMapBase = linear.find((r) => r.name === "linear map")?.start;
      }
    }
    if (walker) {
      this.memory = new VirtualMemory(this.phys, walker, linear, options.tlbEntries);
    }
    if (walker && !this.btf && !this.#symbolFile) this.#btfFromDump();
    if (walker && !this.#symbolFile && this.kallsyms() && this.symbol("init_task") === undefined) {
      this.#searchWithoutDataSymbols();
    }
    if (!walker) {
      this.warnings.push(
        "cannot translate kernel addresses (no VMCOREINFO page-table facts): physical only",
      );
    }
  }

  /**
   * A live guest has resumed and stopped again: drop everything read from its memory so far
   * (cached pages and translations, the per-CPU tasks, the panic CPU). Kept: what is fixed for
   * the whole boot of this kernel, found once: the page-table root and linear ranges, the
   * direct-map base (`page_offset_base`, written once early in boot), kallsyms, BTF and the
   * symbols found by search. The caller keeps a view only while the guest's VMCOREINFO is
   * unchanged (the same kernel, still running).
   */
  forgetMemory(): void {
    this.phys.forget();
    this.memory?.forget();
    this.#cpuTasks = undefined;
    this.#panicCpu = null;
  }

  /**
   * The kernel's page size (VMCOREINFO PAGESIZE), which can differ from the dump's: QEMU writes
   * arm64 kdump files in 64 KiB pages whatever the kernel uses.
   */
  get pageSize(): number {
    return this.dump.vmcoreinfo?.pageSize ?? this.dump.pageSize;
  }

  /** Kernel release (VMCOREINFO OSRELEASE, else the kdump header's utsname). */
  get release(): string | undefined {
    const r = this.dump.vmcoreinfo?.osRelease;
    if (r) return r;
    return (this.dump as { release?: string }).release;
  }

  /** Runtime address of a kernel symbol (vmlinux symbol table + KASLR, else VMCOREINFO). */
  symbol(name: string): bigint | undefined {
    if (this.#symbolFile) {
      const v = this.#symbolFile.symbol(name);
      if (v !== undefined) return v >= KERNEL_HALF ? v + this.kaslrOffset : v;
      return this.dump.vmcoreinfo?.symbol(name);
    }
    return this.dump.vmcoreinfo?.symbol(name) ?? this.kallsyms()?.get(name) ??
      this.#searched.get(name);
  }

  /** Symbols found by {@link foundBySearch}'s searches (init_task). */
  #searched = new Map<string, bigint>();
  #runqueues?: Map<number, FoundRunqueue>;

  /** Address of a CPU's `struct rq` (per-CPU `runqueues`, or found through the tasks). */
  runqueueAddress(cpu: number): bigint | undefined {
    return this.perCpu("runqueues", cpu) ?? this.#runqueues?.get(cpu)?.rq;
  }

  /** BTF, init_task and the runqueues of a kernel without data symbols (kernel_search.ts). */
  #searchWithoutDataSymbols(): void {
    if (!this.btf) {
      const found = findBtfInImage(this);
      if (!found) return;
      this.btf = found.btf;
      this.typeSource = `BTF found in ${this.#memoryName} at 0x${found.address.toString(16)} ` +
        "(kallsyms has no data symbols: searched between _etext and _sinittext)";
    }
    const init = findInitTask(this);
    if (init === undefined) return;
    this.#searched.set("init_task", init);
    this.foundBySearch.push(
      `init_task at 0x${init.toString(16)}: found by a search for the boot idle task ` +
        "(comm swapper/0, pid 0, its task list round), as kallsyms has no data symbols",
    );
    this.#runqueues = findRunqueues(this, init);
    if (this.#runqueues.size) {
      this.foundBySearch.push(
        `runqueues of CPU ${[...this.#runqueues.keys()].sort().join(", ")}: found through ` +
          "the tasks' se.cfs_rq->rq",
      );
    }
  }

  /** Where the kernel's memory comes from, for messages: a running guest's, or a dump. */
  get #memoryName(): string {
    return this.#owner === "the guest's" ? "guest memory" : "the dump";
  }

  /** Whose memory it is, for messages: "the guest's" or "the dump's". */
  get #owner(): string {
    return this.dump.format.startsWith("live") ? "the guest's" : "the dump's";
  }

  /** The dump's own kallsyms (runtime addresses), decoded on first use; undefined if absent. */
  kallsyms(): KallsymsTable | undefined {
    // Not before the page tables are set up (reading it needs kernel virtual memory).
    if (this.#kallsyms === undefined && this.memory) {
      const vmci = this.dump.vmcoreinfo;
      this.#kallsyms = (vmci && readKallsyms(this.memory, vmci, this.dump.arch)) || null;
    }
    return this.#kallsyms ?? undefined;
  }

  #kallsyms?: KallsymsTable | null;

  /** Address of a per-CPU variable for one CPU. */
  perCpu(name: string, cpu: number): bigint | undefined {
    const base = this.symbol(name);
    const offsets = this.symbol("__per_cpu_offset");
    if ((base === undefined || offsets === undefined) && this.#runqueues?.has(cpu) && this.btf) {
      // No per-CPU symbols: the runqueue found for this CPU anchors its per-CPU area, and BTF
      // places every per-CPU variable in .data..percpu.
      const rqOff = this.btf.varOffset(".data..percpu", "runqueues");
      const off = this.btf.varOffset(".data..percpu", name);
      if (rqOff === undefined || off === undefined) return undefined;
      return this.#runqueues.get(cpu)!.rq - BigInt(rqOff) + BigInt(off);
    }
    if (base === undefined || offsets === undefined || !this.memory) return undefined;
    const off = this.memory.readU64(offsets + BigInt(cpu) * 8n);
    if (off === undefined) return undefined;
    return (base + off) & 0xffffffffffffffffn;
  }

  /** Read a kernel u32 (little-endian). */
  readU32(vaddr: bigint): number | undefined {
    const buf = new Uint8Array(4);
    if (!this.memory || this.memory.read(vaddr, buf).bytes !== 4) return undefined;
    return new DataView(buf.buffer).getUint32(0, true);
  }

  /** Text segment address for gdb's qOffsets: the vmlinux's first PT_LOAD + KASLR offset. */
  textSegment(): bigint | undefined {
    return this.vmlinux ? this.vmlinux.firstLoadAddress + this.kaslrOffset : undefined;
  }

  /** Close the vmlinux and the dump. */
  close(): void {
    this.vmlinux?.close();
    this.dump.close();
  }

  #relocatedImage(): { start: bigint; end: bigint } | undefined {
    const ext = this.#symbolFile!.imageExtent;
    if (ext.end <= ext.start) return undefined;
    return { start: ext.start + this.kaslrOffset, end: ext.end + this.kaslrOffset };
  }

  /**
   * Why a kallsyms table that decoded has no `__start_BTF`: a kernel built without data symbols,
   * unless its names are garbage (a corrupt table), which `_stext` against VMCOREINFO's tells.
   */
  #kallsymsWithoutBtf(): string {
    const want = this.dump.vmcoreinfo?.symbol("_stext");
    const got = this.kallsyms()?.get("_stext");
    if (want !== undefined && got !== want) {
      const found = got === undefined ? "has no _stext" : `puts _stext at 0x${got.toString(16)}`;
      return `${this.#owner} kallsyms does not decode: it ${found}, VMCOREINFO at 0x${
        want.toString(16)
      }`;
    }
    return `${this.#owner} kallsyms lacks data symbols (KALLSYMS_ALL off)`;
  }

  /** Types without a vmlinux: the kernel's own BTF (/sys/kernel/btf/vmlinux) in the dump. */
  #btfFromDump(): void {
    const start = this.kallsyms()?.get("__start_BTF");
    const stop = this.kallsyms()?.get("__stop_BTF");
    if (start === undefined || stop === undefined || stop <= start) {
      this.typeSource = this.kallsyms()
        ? `none: no vmlinux given, and ${this.#kallsymsWithoutBtf()}`
        : this.#kallsymsMissing();
      return;
    }
    const size = Number(stop - start);
    if (size > 64 * 1024 * 1024) return;
    const bytes = new Uint8Array(size);
    const r = this.memory!.read(start, bytes);
    if (r.error) {
      this.warnings.push(`the kernel's BTF is not readable in ${this.#memoryName}: ${r.error}`);
      return;
    }
    try {
      this.btf = new Btf(bytes);
      this.typeSource = `BTF and kallsyms found in ${this.#memoryName} (no vmlinux)`;
    } catch (e) {
      this.warnings.push(`the kernel's BTF in ${this.#memoryName}: ${errorText(e)}`);
    }
  }

  /** Why there is no kallsyms: VMCOREINFO does not name it, or its pages are unreadable. */
  #kallsymsMissing(): string {
    const names = this.dump.vmcoreinfo?.symbol("kallsyms_names");
    if (names === undefined || !this.memory) {
      return `none: no vmlinux given, and no kallsyms in ${this.#owner} VMCOREINFO`;
    }
    const r = this.memory.read(names, new Uint8Array(8));
    return "none: no vmlinux given, and the kallsyms that VMCOREINFO names is unreadable" +
      (r.error ? `: ${r.error}` : "");
  }

  /** The vmlinux used for the server's own symbols and types (only a matching one). */
  #symbolFile?: Vmlinux;

  /** Warn about a vmlinux of another build; true when it can be trusted. */
  #checkVmlinux(): boolean {
    const v = this.vmlinux;
    const vmci = this.dump.vmcoreinfo;
    if (!v || !vmci) return true;
    let ok = true;
    const want = vmci.buildId?.toLowerCase();
    if (want && v.buildId && !v.buildId.startsWith(want) && !want.startsWith(v.buildId)) {
      this.warnings.push(
        `${v.path}: build-id ${v.buildId} differs from ${this.#owner} ${want}: ` +
          `gdb's symbols will be wrong (the server uses ${this.#owner} own kallsyms and BTF)`,
      );
      ok = false;
    }
    const release = vmci.osRelease;
    const banner = v.banner();
    if (release && banner && !banner.includes(` ${release} `)) {
      this.warnings.push(`${v.path}: built for another release than ${this.#owner} ${release}`);
      ok = false;
    }
    return ok;
  }

  /** Read a pointer-sized kernel variable before `memory` exists (during construction). */
  #readSymbolU64(name: string, walker: PageTableWalker): bigint | undefined {
    const addr = this.symbol(name);
    if (addr === undefined) return undefined;
    const pa = walker.walk(addr).paddr;
    return pa < 0 ? undefined : this.phys.readU64(pa);
  }

  #findPanicCpu(): number | undefined {
    const addr = this.symbol("panic_cpu");
    if (addr !== undefined) {
      const v = this.readU32(addr);
      if (v !== undefined && v < this.dump.cpus.length) return v;
    }
    // A live guest: panic_cpu or nothing (the log is long, and read again at every stop).
    if (this.dump.live) return undefined;
    const cur = (this.dump as { currentCpu?: number }).currentCpu;
    // makedumpfile records the CPU that saved the dump; QEMU's kdump writer leaves it 0.
    if (cur !== undefined && cur > 0 && cur < this.dump.cpus.length) return cur;
    // Without panic_cpu (kallsyms lacks data symbols, as on Debian's arm64 kernels): the log's
    // `CPU: N PID:` line after the panic line.
    try {
      const cpu = panicCpuFromLog(readKernelLog(this).records.map((r) => r.text.split("\n")[0]));
      return cpu !== undefined && cpu < this.dump.cpus.length ? cpu : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * The task whose stack a CPU runs on. `__schedule()` sets `rq->curr` to the next task before
   * `context_switch()` switches stacks, so a stop in between (a breakpoint in the switch, an NMI
   * that stopped the CPU for the dump) finds `rq->curr` already the next task while the CPU
   * still runs on the previous one's stack. There, `current` is asked (x86_64's per-CPU
   * `current_task`, a live arm64 vCPU's SP_EL0) and taken if the stack pointer is on its stack.
   * Cheap at a live stop: x86_64 reads `current` from memory and needs the CPU's registers only
   * when it differs from `rq->curr`; arm64 looks only at registers already read (a vCPU's cost a
   * request to QEMU), and asks SP_EL0 only when the stack pointer is off `rq->curr`'s stack.
   */
  #taskOnStack(cpu: number, rqCurr: bigint): bigint {
    const x86 = this.dump.arch === "x86_64";
    let current: bigint | undefined;
    if (x86) {
      // Linux 6.2+ keeps it in pcpu_hot; before, a per-CPU variable of its own.
      const hot = this.btf?.member("pcpu_hot", "current_task");
      const at = hot
        ? (this.perCpu("pcpu_hot", cpu) ?? -1n) + BigInt(hot.offset)
        : this.perCpu("current_task", cpu);
      current = at !== undefined && at >= 0n ? this.memory?.readU64(at) : undefined;
      if (!current || current === rqCurr) return rqCurr;
    }
    const regs = this.dump.cpus[cpu]?.registers;
    if (!regs || (!x86 && (regs as { loaded?: boolean }).loaded === false)) return rqCurr;
    const sp = regs.get(x86 ? "rsp" : "sp");
    if (sp === undefined || this.#onStackOf(rqCurr, sp) !== false) return rqCurr;
    if (!x86) current = this.dump.kernelCurrent?.(cpu);
    return current && current !== rqCurr && this.#onStackOf(current, sp) ? current : rqCurr;
  }

  /** Whether `sp` lies on the task's kernel stack; undefined when that is not known. */
  #onStackOf(task: bigint, sp: bigint): boolean | undefined {
    const member = this.btf?.member("task_struct", "stack");
    const base = member ? this.memory?.readU64(task + BigInt(member.offset)) : undefined;
    if (!base) return undefined;
    // THREAD_SIZE: 16 KiB on x86_64 and arm64, twice that with KASAN.
    this.#stackSize ??= this.symbol("__asan_load8") === undefined ? 16n * 1024n : 32n * 1024n;
    return sp >= base && sp - base < this.#stackSize;
  }

  #stackSize?: bigint;

  #cpuTask(cpu: number): CpuTask {
    const out: CpuTask = { cpu };
    const btf = this.btf;
    const mem = this.memory;
    if (!btf || !mem) {
      const pid = this.dump.cpus[cpu]?.pid;
      // The kernel's own kdump writes the Linux pid; QEMU writes the vCPU number + 1.
      const qemuNumbering = this.dump.qemuCpus.length > 0 ||
        this.dump.cpus.every((c, i) => c.pid === i + 1);
      if (pid !== undefined && !qemuNumbering) out.pid = pid;
      return out;
    }
    const rq = this.runqueueAddress(cpu);
    const curr = btf.member("rq", "curr");
    if (rq === undefined || !curr) return out;
    const next = mem.readU64(rq + BigInt(curr.offset));
    if (next === undefined || next === 0n) return out;
    const task = this.#taskOnStack(cpu, next);
    out.task = task;
    const pid = btf.member("task_struct", "pid");
    const comm = btf.member("task_struct", "comm");
    if (pid) out.pid = this.readU32(task + BigInt(pid.offset));
    if (comm) out.comm = mem.readCString(task + BigInt(comm.offset), comm.size);
    return out;
  }
}

export { START_KERNEL_MAP };

/** Architecture name of an ELF e_machine, as the dump readers name theirs. */
function vmlinuxArch(machine: number): string {
  if (machine === EM_X86_64) return "x86_64";
  if (machine === EM_AARCH64) return "aarch64";
  return `ELF machine ${machine}`;
}
