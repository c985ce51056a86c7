/**
 * kdb's commands that change a live target: breakpoints (`bp`, `bph`, `bl`, `bc`, `bd`, `be`),
 * single step (`ss`), `go` with its breakpoints, and writes (`mm`, `rm`), with kdb's names,
 * arguments and messages (kernel/debug/kdb/kdb_bp.c, kdb_main.c). The breakpoints live in QEMU's
 * gdbstub (`Z0`, `Z1`, `Z2`, `Z4`) only while the guest runs from kdb: they go in at `go` and
 * `ss`, and come out at the next stop, as kdb installs and removes its own, so gdb taking over
 * the line (`kgdb`) finds none of them. A `go` from a CPU sitting on one of them steps that CPU
 * over it first, as kdb does.
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

interface Breakpoint {
  address: bigint;
  /** 0 software, 1 hardware instruction, 2 data write, 4 data access. */
  type: number;
  /** Bytes a hardware data breakpoint watches. */
  length: number;
  enabled: boolean;
  installed: boolean;
}

/** What the shell tells this module about the target and the current CPU. */
export interface KdbRunContext {
  readonly kernel: Kernel;
  readonly run: RunControl;
  /** gdb thread id of a CPU (the CPU itself in kernel mode, its task in tasks mode). */
  threadOfCpu(cpu: number): number | undefined;
  /** The current CPU's registers (kdb_current_regs), if it has any. */
  registers(): RegisterValues | undefined;
  /** kdb's environment (BYTESPERWORD, RADIX…). */
  getEnv(name: string): string | undefined;
}

/** Where output goes, one line a call. */
type Line = (line: string) => void;

/** After a stop: kdb's entry reason, or a resume the stop was only a step of. */
export type StopOutcome = { reason: string } | { resume: number | undefined };

/** kdb's breakpoints and run commands for one shell. */
export class KdbRunCommands {
  #bps: (Breakpoint | undefined)[] = [];
  /** What the guest is doing for kdb: stepping over a breakpoint before `go`, `ss`, or `go`. */
  #phase: "idle" | "stepOver" | "ss" | "go" = "idle";

  /** `bp [ADDR]` / `bl`: list, or set a software breakpoint. */
  bp(ctx: KdbRunContext, args: string[], out: Line): void {
    if (args.length === 0) return this.#list(ctx.kernel, out);
    const { value, next } = addressArg(ctx.kernel, args, 0, (n) => ctx.getEnv(n));
    if (next !== args.length) throw new KdbError(KdbDiag.ARGCOUNT);
    this.#add(ctx.kernel, { address: value, type: 0, length: 1 }, out);
  }

  /** `bph ADDR [datar [LENGTH]|dataw [LENGTH]]`: a hardware breakpoint. */
  bph(ctx: KdbRunContext, args: string[], out: Line): void {
    if (args.length === 0) return this.#list(ctx.kernel, out);
    const { value, next } = addressArg(ctx.kernel, args, 0, (n) => ctx.getEnv(n));
    let type = 1;
    let length = 1;
    if (next < args.length) {
      const kind = args[next];
      if (kind === "datar") type = 4;
      else if (kind === "dataw") type = 2;
      else if (kind !== "inst") throw new KdbError(KdbDiag.ARGCOUNT);
      if (next + 1 < args.length) {
        const n = parseKernelNumber(args[next + 1]);
        if (n === undefined || ![1n, 2n, 4n, 8n].includes(n)) throw new KdbError(KdbDiag.BADINT);
        length = Number(n);
      }
      if (next + 2 < args.length) throw new KdbError(KdbDiag.ARGCOUNT);
    }
    this.#add(ctx.kernel, { address: value, type, length }, out);
  }

  /** `bc`, `bd`, `be` N|*: clear, disable or enable breakpoints. */
  change(ctx: KdbRunContext, which: "bc" | "bd" | "be", args: string[], out: Line): void {
    if (args.length !== 1) throw new KdbError(KdbDiag.ARGCOUNT);
    let picked: number[];
    if (args[0] === "*") picked = this.#bps.flatMap((b, i) => b ? [i] : []);
    else {
      // kdb: a number below the table size is a breakpoint number, else an address.
      const n = parseKernelNumber(args[0]);
      const i = n !== undefined && n < BigInt(MAX_BREAKPOINTS)
        ? Number(n)
        : this.#bps.findIndex((b) =>
          b?.address === addressArg(ctx.kernel, args, 0, (e) => ctx.getEnv(e)).value
        );
      if (i < 0 || !this.#bps[i]) {
        out(`${which}: breakpoint ${args[0]} not found`);
        throw new KdbError(KdbDiag.NOTFOUND, "");
      }
      picked = [i];
    }
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
   * `go`: put the enabled breakpoints in and let every CPU run. From a CPU sitting on one of
   * them, that CPU first steps off it alone (`stopped` then puts them in and asks to continue).
   * @returns "step" when the current CPU is to step first, "continue" to let all run at once
   */
  go(ctx: KdbRunContext): "step" | "continue" {
    const pc = this.#pc(ctx);
    if (pc !== undefined && this.#enabled().some((b) => b.address === pc)) {
      this.#phase = "stepOver";
      return "step";
    }
    this.#install(ctx);
    this.#phase = "go";
    return "continue";
  }

  /** `ss`: the current CPU executes one instruction, the others stay stopped. */
  ss(): void {
    this.#phase = "ss";
  }

  /**
   * The guest stopped for kdb at `pc` (signal from the stop reply): take the breakpoints out and
   * say why, in kdb's words; or, after a step over a breakpoint before `go`, put them in and
   * continue.
   */
  stopped(ctx: KdbRunContext, signal: number, keyboard: boolean): StopOutcome {
    const phase = this.#phase;
    this.#phase = "idle";
    if (phase === "stepOver" && !keyboard) {
      this.#install(ctx);
      this.#phase = "go";
      return { resume: undefined };
    }
    const hit = this.#remove(ctx);
    const pc = this.#pc(ctx);
    const at = pc === undefined ? "" : ` @ 0x${pc.toString(16)}`;
    if (keyboard) return { reason: "Keyboard Entry" };
    if (phase === "ss" || phase === "stepOver") return { reason: `SS trap${at}` };
    if (signal === 5) {
      const b = hit.find((b) => b.address === pc);
      if (b && b.type === 0) return { reason: `Breakpoint${at}` };
      if (hit.some((b) => b.type !== 0)) return { reason: `Debug${at}` };
      return { reason: `Breakpoint${at}` };
    }
    return { reason: `signal ${signal}` };
  }

  /** `mm[W] ADDR CONTENTS`: write a word (BYTESPERWORD, or W bytes) in the current CPU's view. */
  mm(ctx: KdbRunContext, argv0: string, args: string[], cpu: number, out: Line): void {
    const width = argv0.length > 2 ? Number(argv0.slice(2)) : Number(ctx.getEnv("BYTESPERWORD"));
    if (![1, 2, 4, 8].includes(width)) throw new KdbError(KdbDiag.BADWIDTH);
    if (args.length !== 2) throw new KdbError(KdbDiag.ARGCOUNT);
    const { value: address, next } = addressArg(ctx.kernel, args, 0, (n) => ctx.getEnv(n));
    if (next !== 1) throw new KdbError(KdbDiag.ARGCOUNT);
    const contents = parseKernelNumber(args[1]);
    if (contents === undefined) throw new KdbError(KdbDiag.BADINT);
    // Both architectures are little-endian: the word's low bytes come first.
    const word = new Uint8Array(8);
    new DataView(word.buffer).setBigUint64(0, BigInt.asUintN(64, contents), true);
    const thread = ctx.threadOfCpu(cpu) ?? 1;
    const err = ctx.run.writeMemory(address, word.slice(0, width), thread, false);
    if (err) {
      out(`mm: ${err.replace(/^E\./, "")}`);
      throw new KdbError(KdbDiag.BADADDR, "");
    }
    out(`0x${address.toString(16)} = 0x${BigInt.asUintN(width * 8, contents).toString(16)}`);
  }

  /** `rm [%]REG CONTENTS`: set a register of the current CPU (kdb's names, as `rd` shows). */
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
    const row = table.find(([n, size, gdbName]) => n === name && size <= 8 && gdbName);
    if (!row) throw new KdbError(KdbDiag.BADREG);
    const thread = ctx.threadOfCpu(cpu);
    if (thread === undefined) throw new KdbError(KdbDiag.BADCPUNUM);
    const err = ctx.run.writeRegisters(
      thread,
      new Map([[row[2], BigInt.asUintN(row[1] * 8, contents)]]),
    );
    if (err) {
      out(`rm: ${err.replace(/^E\./, "")}`);
      throw new KdbError(KdbDiag.BADREG, "");
    }
  }

  #add(kernel: Kernel, b: Omit<Breakpoint, "enabled" | "installed">, out: Line): void {
    if (this.#bps.some((x) => x?.address === b.address && x.type === b.type)) {
      out(`You already have a breakpoint at 0x${b.address.toString(16).padStart(16, "0")}`);
      throw new KdbError(KdbDiag.BADADDR, "");
    }
    let i = this.#bps.findIndex((x) => x === undefined);
    if (i < 0) i = this.#bps.length;
    if (i >= MAX_BREAKPOINTS) {
      out("Too many breakpoints");
      throw new KdbError(KdbDiag.NOTIMP, "");
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
      }, hardtype=${b.type === 0 ? 0 : 1} installed=${b.installed ? 1 : 0}`,
    );
    out("");
  }

  #enabled(): Breakpoint[] {
    return this.#bps.filter((b): b is Breakpoint => b !== undefined && b.enabled);
  }

  #install(ctx: KdbRunContext): void {
    const swKind = ctx.kernel.dump.arch === "x86_64" ? 1 : 4;
    for (const b of this.#enabled()) {
      const reply = ctx.run.breakpoint(true, Z_TYPE[b.type], b.address, b.type ? b.length : swKind);
      b.installed = reply === "OK";
    }
  }

  /** Take the installed breakpoints out; the ones that were in. */
  #remove(ctx: KdbRunContext): Breakpoint[] {
    const swKind = ctx.kernel.dump.arch === "x86_64" ? 1 : 4;
    const were: Breakpoint[] = [];
    for (const b of this.#bps) {
      if (!b?.installed) continue;
      ctx.run.breakpoint(false, Z_TYPE[b.type], b.address, b.type ? b.length : swKind);
      b.installed = false;
      were.push(b);
    }
    return were;
  }

  #pc(ctx: KdbRunContext): bigint | undefined {
    const r = ctx.registers();
    return r?.get("rip") ?? r?.get("pc");
  }
}
