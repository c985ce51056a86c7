/**
 * Kernel mode: every CPU of the dump is a gdb thread with the registers the dump saved, and
 * memory is kernel virtual memory.
 *
 * @module
 */

import type {
  ArchName,
  MemoryRead,
  MonitorOutput,
  RegisterValues,
  Target,
  ThreadInfo,
} from "./target.ts";
import type { Kernel } from "./kernel.ts";
import { resolve } from "node:path";
import { KernelTasks } from "./tasks.ts";
import { moduleSymbolsNamed } from "./modules.ts";
import { USER_TOP, userMemoryOf } from "./process.ts";
import type { VirtualMemory } from "./paging.ts";
import { filterPs, formatPs, taskPsRow } from "./ps.ts";
import { errorText } from "./file_source.ts";
import { addressArg } from "./kdb_expr.ts";
import { type GdbFile, kernelFileForGdb } from "./gdb_unwind_elf.ts";

/** gdb's signal number for a trap: a neutral "stopped here" for a dump. */
const SIGTRAP = 5;

/** Serves a dumped kernel with one thread per CPU. */
export class KernelTarget implements Target {
  /** The dumped kernel served. */
  readonly kernel: Kernel;
  #threads: ThreadInfo[] | undefined;
  #scratch = new Uint8Array(0);
  #view = this.#scratch;

  /**
   * A target over a dumped kernel.
   * @param kernel the dumped kernel to serve, one thread per CPU
   */
  constructor(kernel: Kernel) {
    this.kernel = kernel;
  }

  get arch(): ArchName {
    return this.kernel.dump.arch;
  }

  threads(): ThreadInfo[] {
    // Named when first listed: the names need the per-CPU tasks, which a live stop that gdb
    // only steps through never reads.
    const kernel = this.kernel;
    return this.#threads ??= kernel.dump.cpus.map((c) => ({
      id: c.cpu + 1,
      name: cpuThreadName(kernel, c.cpu),
      core: c.cpu,
      onCpu: true,
    }));
  }

  stopThread(): number {
    return (this.kernel.panicCpu ?? 0) + 1;
  }

  stopSignal(): number {
    return SIGTRAP;
  }

  registers(threadId: number): RegisterValues {
    return this.kernel.dump.cpus[threadId - 1]?.registers ?? new Map();
  }

  readMemory(address: bigint, length: number, threadId?: number): MemoryRead {
    if (this.#scratch.length < length) this.#scratch = new Uint8Array(length);
    // gdb asks the same sizes again and again: reuse the view (a subarray costs as much as
    // the cached read it would hold).
    let out = this.#view;
    if (out.length !== length || out.buffer !== this.#scratch.buffer) {
      out = this.#view = this.#scratch.subarray(0, length);
    }
    const mem = this.memoryFor(address, threadId);
    if (!mem) {
      // No page tables: serve physical addresses so the user can still look around.
      const r = this.kernel.phys.read(Number(address), out);
      return r.bytes === length
        ? { data: out }
        : { data: out.subarray(0, r.bytes), error: this.kernel.phys.describe(r.status) };
    }
    const r = mem.read(address, out);
    return r.error === undefined
      ? { data: out }
      : { data: out.subarray(0, r.bytes), error: r.error };
  }

  readPhysical(address: bigint, length: number): MemoryRead {
    const out = new Uint8Array(length);
    if (address > BigInt(Number.MAX_SAFE_INTEGER)) {
      return { data: out.subarray(0, 0), error: "beyond physical memory" };
    }
    const r = this.kernel.phys.read(Number(address), out);
    return r.bytes === length
      ? { data: out }
      : { data: out.subarray(0, r.bytes), error: this.kernel.phys.describe(r.status) };
  }

  /**
   * The page tables a read of `address` for `threadId` goes through (undefined: the dump has
   * none, and addresses are physical). A live target writes through the same ones.
   */
  memoryFor(address: bigint, threadId?: number): VirtualMemory | undefined {
    if (address < USER_TOP && threadId !== undefined) {
      // A user address: the process that was running on this CPU, as the CPU saw it.
      const user = this.#userMemory(threadId - 1);
      if (user) return user;
    }
    return this.kernel.memory;
  }

  #userViews = new Map<number, VirtualMemory | undefined>();

  #userMemory(cpu: number): VirtualMemory | undefined {
    if (!this.#userViews.has(cpu)) {
      const task = this.kernel.cpuTasks[cpu]?.task;
      const mmField = this.kernel.btf?.member("task_struct", "mm");
      const mm = task !== undefined && mmField
        ? this.kernel.memory?.readU64(task + BigInt(mmField.offset))
        : undefined;
      this.#userViews.set(cpu, mm ? userMemoryOf(this.kernel, mm) : undefined);
    }
    return this.#userViews.get(cpu);
  }

  execFile(): string | undefined {
    const p = this.kernel.vmlinux?.path;
    return p === undefined ? undefined : resolve(p);
  }

  textSegment(): bigint | undefined {
    return this.kernel.textSegment();
  }

  /**
   * Unwind tables for the entry code, which the vmlinux has none for; without a vmlinux, an
   * executable of the kernel's symbols and unwind tables (gdb_unwind_elf.ts).
   */
  libraries(): readonly { name: string; data: Uint8Array; exec?: boolean }[] {
    if (this.#libraries === undefined) {
      let file: GdbFile | undefined;
      try {
        file = kernelFileForGdb(this.kernel);
      } catch {
        // A damaged dump only costs gdb the help: it unwinds the entry code by guessing.
        file = undefined;
      }
      this.#libraries = file ? [file] : [];
    }
    return this.#libraries;
  }

  #libraries?: GdbFile[];

  vmcoreinfo(): Uint8Array | undefined {
    return this.kernel.dump.vmcoreinfo?.raw;
  }

  monitorHelp(): string[] {
    return [
      "sys          kernel release, build-id, CPUs, panic CPU, KASLR, dump format",
      "vtop ADDRESS translate a kernel virtual address and show the physical page",
      "cache        page cache statistics",
      "ps [PID|NAME] the kernel's tasks (as in --tasks mode; > marks running ones)",
      "sym NAME     runtime address of a kernel or module symbol (vmlinux, the dump's kallsyms)",
    ];
  }

  monitor(command: string, out: MonitorOutput): boolean {
    const [verb, ...args] = command.trim().split(/\s+/);
    switch (verb) {
      case "sys":
        out(systemSummary(this.kernel).join("\n") + "\n");
        return true;
      case "vtop":
        out(vtop(this.kernel, args[0]) + "\n");
        return true;
      case "ps": {
        try {
          const tasks = new KernelTasks(this.kernel);
          const rows = tasks.list().map((t) => taskPsRow(tasks, t));
          out(formatPs(filterPs(rows, args[0])));
          for (const f of this.kernel.foundBySearch) out(`note: ${f}\n`);
        } catch (e) {
          out(`ps: ${errorText(e)}\n`);
        }
        return true;
      }
      case "sym": {
        const name = args[0];
        const addr = name ? this.kernel.symbol(name) : undefined;
        // Not the kernel's: a loaded module's (its kallsyms), as /proc/kallsyms shows it.
        const hits = name && addr === undefined ? moduleSymbolsNamed(this.kernel, name) : [];
        if (!name) out("sym: usage: sym NAME\n");
        else if (addr !== undefined) out(`${name} = 0x${addr.toString(16)}\n`);
        else if (hits.length === 0) out(`sym: no symbol "${name}"\n`);
        else for (const h of hits) out(`${name} = 0x${h.value.toString(16)} [${h.module}]\n`);
        return true;
      }
      case "cache": {
        const c = this.kernel.phys.cache;
        const tl = this.kernel.memory;
        out(
          `page cache: ${c.size} of ${c.capacity} pages (${(c.bytes / 1048576).toFixed(1)} MiB), ` +
            `${c.hits} hits, ${c.misses} misses; page-table walks: ${tl?.walks ?? 0}\n`,
        );
        return true;
      }
    }
    return false;
  }
}

/** Thread name for a CPU: `CPU 1: crasher.sh (pid 105)`, `CPU 0: idle`, or `CPU 0`. */
export function cpuThreadName(kernel: Kernel, cpu: number): string {
  const t = kernel.cpuTasks[cpu];
  const panicked = kernel.panicCpu === cpu ? " [panic]" : "";
  if (!t || t.pid === undefined) return `CPU ${cpu}${panicked}`;
  if (t.pid === 0) return `CPU ${cpu}: idle${panicked}`;
  const comm = t.comm ?? "?";
  return `CPU ${cpu}: ${comm} (pid ${t.pid})${panicked}`;
}

/** Lines describing the dumped system, for the banner and `monitor sys`. */
export function systemSummary(kernel: Kernel): string[] {
  const d = kernel.dump;
  const vmci = d.vmcoreinfo;
  const lines = [
    `dump:         ${d.files.join(", ")}`,
    `format:       ${d.format}, ${d.pageSize}-byte pages, ${d.arch}`,
    `release:      ${kernel.release ?? "unknown"}`,
    `build-id:     ${vmci?.buildId ?? "unknown"}`,
    `CPUs:         ${d.cpus.length}` +
    (kernel.panicCpu !== undefined ? `, panic on CPU ${kernel.panicCpu}` : ""),
    `KASLR:        ${
      vmci?.kernelOffset !== undefined || kernel.kaslrOffset !== 0n
        ? `kernel offset 0x${kernel.kaslrOffset.toString(16)}`
        : "no KERNELOFFSET in VMCOREINFO"
    }`,
  ];
  if (kernel.directMapBase !== undefined) {
    lines.push(`direct map:   0x${kernel.directMapBase.toString(16)}`);
  }
  if (kernel.memory) lines.push(`translation:  ${kernel.memory.walker.description}`);
  const crash = vmci?.crashTime;
  if (crash) lines.push(`crash time:   ${new Date(crash * 1000).toISOString()}`);
  lines.push(`types:        ${kernel.typeSource}`);
  for (const f of kernel.foundBySearch) lines.push(`found:        ${f}`);
  for (const [k, v] of Object.entries(d.details)) lines.push(`${(k + ":").padEnd(13)} ${v}`);
  for (const w of [...d.warnings, ...kernel.warnings]) lines.push(`warning:      ${w}`);
  return lines;
}

function vtop(kernel: Kernel, arg: string | undefined): string {
  if (!arg) return "usage: vtop ADDRESS";
  let addr: bigint;
  try {
    // As kdb's commands read an address: a symbol (sym+0x10), 0x… hex, plain digits decimal.
    addr = addressArg(kernel, [arg], 0, () => undefined).value;
  } catch {
    return `vtop: bad address "${arg}" (a symbol, sym+0x10, 0x… hex or decimal)`;
  }
  const mem = kernel.memory;
  if (!mem) return "vtop: no page tables in this dump";
  const fast = mem.linear.find((r) => addr >= r.start && addr < r.end);
  const walked = mem.walker.walk(addr);
  const lines = [`virtual  0x${addr.toString(16)}`];
  if (walked.paddr < 0) lines.push(`walk:    ${walked.error}`);
  else {
    lines.push(
      `walk:    physical 0x${walked.paddr.toString(16)} (${walked.mappingSize / 1024} KiB mapping)`,
    );
    const pfn = Math.floor(walked.paddr / kernel.dump.pageSize);
    lines.push(
      `page:    pfn 0x${pfn.toString(16)}, ${kernel.phys.describe(kernel.phys.pageStatus(pfn))}`,
    );
  }
  if (fast) {
    const p = Number(addr - fast.start) + fast.physStart;
    lines.push(`linear:  ${fast.name}, physical 0x${p.toString(16)}`);
  }
  return lines.join("\n");
}
