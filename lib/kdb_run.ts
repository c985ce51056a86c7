/**
 * kdb's commands that change a live target: breakpoints (`bp`, `bph`, `bl`, `bc`, `bd`, `be`),
 * single step (`ss`), `go` with its breakpoints, and writes (`mm`, `rm`), with kdb's names,
 * arguments and messages (kernel/debug/kdb/kdb_bp.c, kdb_main.c). The breakpoints live in QEMU's
 * gdbstub (`Z0`, `Z1`, `Z2`, `Z4`) only while the guest runs from kdb: they go in at `go` and
 * come out at the next stop (or when the resume is refused), as kdb installs and removes its
 * own, so gdb taking over the line (`kgdb`) finds none of them. A `go` from a CPU sitting on one
 * of them steps that CPU over it first, as kdb does.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { RegisterValues, RunControl } from "./target.ts";
import { addressArg, KdbDiag, KdbError, parseKernelNumber, valueAndSymbol } from "./kdb_expr.ts";

/** kdb's breakpoint table size (KDB_MAXBPT). */
export const MAX_BREAKPOINTS = 16;

/** kdb's breakpoint types (bp_type), as `bl` names them. */
const TYPE_NAMES = ["Instruction(i)", "Instruction(Register)", "Data Write", "I/O", "Data Access"];

/** The gdbstub's `Z` type for each kdb breakpoint type (I/O has none). */
const Z_TYPE = [0, 1, 2, -1, 4];

/** kdb's word size (KDB_WORD_SIZE): `mm`'s width without a digit. */
const WORD_SIZE = 8;

interface Breakpoint {
  address: bigint;
  /** 0 software, 1 hardware instruction, 2 data write, 4 data access. */
  type: number;
  /** Bytes a hardware data breakpoint watches. */
  length: number;
  enabled: boolean;
  installed: boolean;
}

/** What the shell tells this module about the target. */
export interface KdbRunContext {
  readonly kernel: Kernel;
  readonly run: RunControl;
  /** gdb thread id of a CPU (the CPU itself in kernel mode, its task in tasks mode). */
  threadOfCpu(cpu: number): number | undefined;
  /** A CPU's registers at this stop. */
  cpuRegisters(cpu: number): RegisterValues | undefined;
  /** kdb's environment (RADIX…), for address arguments. */
  getEnv(name: string): string | undefined;
}

/** Where output goes, one line a call. */
type Line = (line: string) => void;

/** After a stop: kdb's entry reason, or a resume the stop was only the first step of. */
export type StopOutcome = { reason: string } | { resume: true };

/** kdb's breakpoints and run commands for one shell. */
export class KdbRunCommands {
  #bps: (Breakpoint | undefined)[] = [];
  /** What the guest is doing for kdb: stepping off a breakpoint before `go`, `ss`, or `go`. */
  #phase: "idle" | "stepOver" | "ss" | "go" = "idle";

  /** `bp [ADDR]` / `bl`: list, or set a software breakpoint. */
  bp(ctx: KdbRunContext, args: string[], out: Line): void {
    if (args.length === 0) return this.#list(ctx.kernel, out);
    const { value, next } = addressArg(ctx.kernel, args, 0, (n) => ctx.getEnv(n));
    if (next !== args.length) throw new KdbError(KdbDiag.ARGCOUNT);
    this.#add(ctx.kernel, { address: value, type: 0, length: 1 }, out);
  }

  /** `bph ADDR [datar [LENGTH]|dataw [LENGTH]|inst]`: a hardware breakpoint. */
  bph(ctx: KdbRunContext, args: string[], out: Line): void {
    if (args.length === 0) return this.#list(ctx.kernel, out);
    const { value, next } = addressArg(ctx.kernel, args, 0, (n) => ctx.getEnv(n));
    let type = 1;
    let length = 1;
    if (next < args.length) {
      const kind = args[next].toLowerCase();
      if (kind === "datar") type = 4;
      else if (kind === "dataw") type = 2;
      else if (kind !== "inst") throw new KdbError(KdbDiag.ARGCOUNT);
      if (next + 1 < args.length) {
        const n = parseKernelNumber(args[next + 1]);
        if (n === undefined) throw new KdbError(KdbDiag.BADINT);
        if (n > 8n || n < 1n) throw new KdbError(KdbDiag.BADLENGTH);
        length = Number(n);
      }
      if (next + 2 < args.length) throw new KdbError(KdbDiag.ARGCOUNT);
    }
    this.#add(ctx.kernel, { address: value, type, length }, out);
  }

  /** `bc`, `bd`, `be` N|ADDR|*: clear, disable or enable breakpoints. */
  change(which: "bc" | "bd" | "be", args: string[], out: Line): void {
    if (args.length !== 1) throw new KdbError(KdbDiag.ARGCOUNT);
    let picked: number[];
    if (args[0] === "*") picked = this.#bps.flatMap((b, i) => b ? [i] : []);
    else {
      // kdb: a number below the table size is a breakpoint number, else an address.
      const n = parseKernelNumber(args[0]);
      if (n === undefined) throw new KdbError(KdbDiag.BADINT);
      const i = n < BigInt(MAX_BREAKPOINTS)
        ? Number(n)
        : this.#bps.findIndex((b) => b?.address === n);
      picked = i >= 0 && this.#bps[i] ? [i] : [];
    }
    if (picked.length === 0) throw new KdbError(KdbDiag.BPTNOTFOUND);
    for (const i of picked) {
      const b = this.#bps[i]!;
      const at = `Breakpoint ${i} at 0x${b.address.toString(16)}`;
      if (which === "bc") {
        this.#bps[i] = undefined;
        out(`${at} cleared`);
      } else if (which === "be") {
        b.enabled = true;
        out(`${at} enabled`);
      } else if (b.enabled) {
        b.enabled = false;
        out(`${at} disabled`);
      }
    }
  }

  /**
   * `go` from `cpu`: put the enabled breakpoints in and let every CPU run. From a CPU sitting on
   * one of them, that CPU first steps off it alone (`stopped` then puts them in and asks for
   * the continue).
   * @returns "step" when `cpu` is to step first, "continue" to let all run at once
   */
  go(ctx: KdbRunContext, cpu: number, out: Line): "step" | "continue" {
    const pc = pcOf(ctx.cpuRegisters(cpu));
    if (pc !== undefined && this.#enabled().some((b) => b.address === pc)) {
      this.#phase = "stepOver";
      return "step";
    }
    this.#install(ctx, out);
    this.#phase = "go";
    return "continue";
  }

  /** `ss`: the current CPU is to execute one instruction, the others stay stopped. */
  ss(): void {
    this.#phase = "ss";
  }

  /** The resume `go` or `ss` asked for was refused: nothing of kdb's stays in the guest. */
  refused(ctx: KdbRunContext): void {
    this.#phase = "idle";
    this.#remove(ctx);
  }

  /**
   * The guest stopped for kdb (stop reply `signal`, 2 for the console's ^C; the stopped CPU's
   * registers read): take the breakpoints out and say why, in kdb's words; or, after the step
   * off a breakpoint that `go` starts with, put them in and ask to continue.
   */
  stopped(ctx: KdbRunContext, cpu: number, signal: number, out: Line): StopOutcome {
    const phase = this.#phase;
    this.#phase = "idle";
    const keyboard = signal === 2;
    if (phase === "stepOver" && !keyboard) {
      this.#install(ctx, out);
      this.#phase = "go";
      return { resume: true };
    }
    const hit = this.#remove(ctx);
    const pc = pcOf(ctx.cpuRegisters(cpu));
    const at = pc === undefined ? "" : ` @ 0x${pc.toString(16)}`;
    if (keyboard) return { reason: "Keyboard Entry" };
    if (phase === "ss" || phase === "stepOver") return { reason: `SS trap${at}` };
    if (signal !== 5) return { reason: `signal ${signal}` };
    // A hardware breakpoint or watchpoint is kdb's debug exception.
    const software = hit.some((b) => b.type === 0 && b.address === pc);
    return {
      reason: !software && hit.some((b) => b.type !== 0) ? `Debug${at}` : `Breakpoint${at}`,
    };
  }

  /**
   * `mm[W] ADDR CONTENTS`: write a word (8 bytes, or W) at an address of `cpu`'s view; kdb
   * echoes `ADDR = CONTENTS`. A word after `mm` that is not a width is no `mm` (kdb's rule).
   */
  mm(ctx: KdbRunContext, argv0: string, args: string[], cpu: number, out: Line): void {
    if (argv0.length > 2 && !/^mm\d$/.test(argv0)) throw new KdbError(KdbDiag.NOTFOUND);
    const width = argv0.length > 2 ? Number(argv0[2]) : WORD_SIZE;
    if (args.length < 2) throw new KdbError(KdbDiag.ARGCOUNT);
    const env = (n: string) => ctx.getEnv(n);
    const at = addressArg(ctx.kernel, args, 0, env);
    const contents = addressArg(ctx.kernel, args, at.next, env);
    if (contents.next !== args.length) throw new KdbError(KdbDiag.ARGCOUNT);
    if (![1, 2, 4, 8].includes(width)) throw new KdbError(KdbDiag.BADWIDTH);
    // Both architectures are little-endian: the word's low bytes come first.
    const word = new Uint8Array(8);
    new DataView(word.buffer).setBigUint64(0, BigInt.asUintN(64, contents.value), true);
    const err = ctx.run.writeMemory(
      at.value,
      word.slice(0, width),
      ctx.threadOfCpu(cpu) ?? 1,
      false,
    );
    if (err) {
      out(`mm: ${err.replace(/^E\./, "")}`);
      throw new KdbError(KdbDiag.BADADDR, "");
    }
    out(`0x${at.value.toString(16)} = 0x${BigInt.asUintN(64, contents.value).toString(16)}`);
  }

  /**
   * `rm [%]REG CONTENTS`: set a register of `cpu` (kdb's names, as `rd` lists them). Registers
   * wider than 8 bytes (arm64's v0–v31) are accepted and left alone, as kdb does.
   */
  rm(
    ctx: KdbRunContext,
    args: string[],
    cpu: number,
    table: readonly [string, number, string][],
    out: Line,
  ): void {
    if (args.length !== 2) throw new KdbError(KdbDiag.ARGCOUNT);
    const name = args[0].replace(/^%/, "");
    const contents = parseKernelNumber(args[1]);
    if (contents === undefined) throw new KdbError(KdbDiag.BADINT);
    const row = table.find(([n]) => n === name);
    if (!row) throw new KdbError(KdbDiag.BADREG);
    const [, size, gdbName] = row;
    if (size > 8 || !gdbName) return;
    const thread = ctx.threadOfCpu(cpu);
    if (thread === undefined) throw new KdbError(KdbDiag.BADCPUNUM);
    const err = ctx.run.writeRegisters(
      thread,
      new Map([[gdbName, BigInt.asUintN(size * 8, contents)]]),
    );
    if (err) {
      out(`rm: ${err.replace(/^E\./, "")}`);
      throw new KdbError(KdbDiag.BADREG, "");
    }
  }

  #add(kernel: Kernel, b: Omit<Breakpoint, "enabled" | "installed">, out: Line): void {
    if (b.address === 0n) throw new KdbError(KdbDiag.BADINT);
    let i = this.#bps.findIndex((x) => x === undefined);
    if (i < 0) i = this.#bps.length;
    if (i >= MAX_BREAKPOINTS) throw new KdbError(KdbDiag.TOOMANYBPT);
    if (this.#bps.some((x) => x?.address === b.address)) {
      out(`You already have a breakpoint at 0x${b.address.toString(16).padStart(16, "0")}`);
      throw new KdbError(KdbDiag.DUPBPT);
    }
    const bp: Breakpoint = { ...b, enabled: true, installed: false };
    this.#bps[i] = bp;
    this.#print(kernel, bp, i, out);
  }

  #list(kernel: Kernel, out: Line): void {
    this.#bps.forEach((b, i) => b && this.#print(kernel, b, i, out));
  }

  /** kdb_printbp: two lines and an empty one. */
  #print(kernel: Kernel, b: Breakpoint, i: number, out: Line): void {
    out(`${TYPE_NAMES[b.type]} BP #${i} at ${valueAndSymbol(kernel, b.address)}`);
    out(
      `    is ${b.enabled ? "enabled " : "disabled"}  addr at ${
        b.address.toString(16).padStart(16, "0")
      }, hardtype=${b.type} installed=${b.installed ? 1 : 0}`,
    );
    out("");
  }

  #enabled(): Breakpoint[] {
    return this.#bps.filter((b): b is Breakpoint => b !== undefined && b.enabled);
  }

  #kind(ctx: KdbRunContext, b: Breakpoint): number {
    if (b.type !== 0) return b.length;
    return ctx.kernel.dump.arch === "x86_64" ? 1 : 4;
  }

  #install(ctx: KdbRunContext, out: Line): void {
    for (const b of this.#enabled()) {
      b.installed =
        ctx.run.breakpoint(true, Z_TYPE[b.type], b.address, this.#kind(ctx, b)) === "OK";
      if (!b.installed) {
        out(`_kdb_bp_install: failed to set breakpoint at 0x${b.address.toString(16)}`);
      }
    }
  }

  /** Take the installed breakpoints out; the ones that were in. */
  #remove(ctx: KdbRunContext): Breakpoint[] {
    const were: Breakpoint[] = [];
    for (const b of this.#bps) {
      if (!b?.installed) continue;
      ctx.run.breakpoint(false, Z_TYPE[b.type], b.address, this.#kind(ctx, b));
      b.installed = false;
      were.push(b);
    }
    return were;
  }
}

function pcOf(regs: RegisterValues | undefined): bigint | undefined {
  return regs?.get("rip") ?? regs?.get("pc");
}
