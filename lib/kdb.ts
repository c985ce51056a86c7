/**
 * kdb's command language over a target: what a line typed at the text console and `monitor …`
 * in gdb both run. Command names, arguments, abbreviations (`md1c20`, `summ`), output layout and
 * diagnostics follow Linux's kernel/debug/kdb (kdb_main.c, kdb_bt.c, kdb_support.c); a dump
 * adds our own commands (vtop, sym, sys, cache, threads, vmcoreinfo…) after kdb's.
 *
 * One {@link KdbShell} per client session keeps kdb's state: the current CPU and task (`cpu`,
 * `pid`), the environment (`set`, `env`) and where `md` continues.
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { MonitorOutput, RegisterValues, Target } from "./target.ts";
import { KernelTasks, type TaskInfo } from "./tasks.ts";
import { serverCommand } from "./monitor.ts";
import { type Backtrace, callTraceHeader, formatBacktrace, kernelBacktrace } from "./backtrace.ts";
import { addressArg, hex16, KdbDiag, KdbError, parseKernelNumber } from "./kdb_expr.ts";
import { symbolAt, symbolText, valueAndSymbol } from "./kdb_expr.ts";
import { mdCommand, type MdState, newMdState, printableWord } from "./md.ts";
import { dmesgCommand, kdbLogRecords, readKernelLog } from "./dmesg.ts";
import { summaryLines } from "./summary.ts";
import { lsmodLines } from "./lsmod.ts";
import { errorText } from "./file_source.ts";
import { KdbRunCommands, type KdbRunContext } from "./kdb_run.ts";

/**
 * What the shell may find on a target beyond the {@link Target} contract: the kernel behind it
 * (kernel, tasks and process targets have one) and, for a live target, a way to let it run.
 */
export interface KdbCapable {
  /** The dumped (or live) kernel, for the analysis commands. */
  readonly kernel?: Kernel;
}

/** What the channel's owner lets the shell do beyond reading (set by the RSP session). */
export interface KdbHooks {
  /**
   * Let a live target run (`go`, `ss`): every thread continues, or (`stepThread`) that thread
   * executes one instruction while the others stay stopped. The session gives the line back to
   * kdb at the next stop ({@link KdbShell.entered}). Returns an error line when it cannot;
   * absent for a dump. `fromGo`: for kdb's `go` (its step off a breakpoint included), which a
   * closed line lets run on; not for `ss`.
   */
  resume?(stepThread?: number, fromGo?: boolean): string | undefined;
  /** Whether gdb holds the line (commands come through `monitor`), not kdb's console. */
  gdbAttached?(): boolean;
}

/** What the caller does after a command line. */
export type KdbAction = "continue" | "kgdb";

/** What kdb prints when `kgdb` hands the line to the debugger stub. */
export const KGDB_ENTERING = "Entering please attach debugger or use $D#44+ or $3#33\n";

interface Command {
  name: string;
  usage: string;
  help: string;
  minlen?: number;
  run: (sh: KdbShell, argv0: string, args: string[], out: Line) => KdbAction | void;
}

/** Where a command writes its output, one line (without its newline) a call. */
export type Line = (line: string) => void;

/** States kdb's `ps`/`bta` masks can name, plus A for all. */
const MASK_CHARS = /^[RSDTtXZPIims\-EA]+$/;

/** x86_64 registers as kdb's `rd` lists them (arch/x86/kernel/kgdb.c), with gdb's names. */
const X86_64_RD: readonly [string, number, string][] = [
  ["ax", 8, "rax"],
  ["bx", 8, "rbx"],
  ["cx", 8, "rcx"],
  ["dx", 8, "rdx"],
  ["si", 8, "rsi"],
  ["di", 8, "rdi"],
  ["bp", 8, "rbp"],
  ["sp", 8, "rsp"],
  ...[8, 9, 10, 11, 12, 13, 14, 15].map((n): [string, number, string] => [`r${n}`, 8, `r${n}`]),
  ["ip", 8, "rip"],
  ["flags", 4, "eflags"],
  ["cs", 4, "cs"],
  ["ss", 4, "ss"],
  ["ds", 4, "ds"],
  ["es", 4, "es"],
  ["fs", 4, "fs"],
  ["gs", 4, "gs"],
  ["fs_base", 8, "fs_base"],
  ["gs_base", 8, "gs_base"],
];

/** arm64 registers as kdb's `rd` lists them (arch/arm64/kernel/kgdb.c). */
const ARM64_RD: readonly [string, number, string][] = [
  ...Array.from({ length: 31 }, (_, i): [string, number, string] => [`x${i}`, 8, `x${i}`]),
  ["sp", 8, "sp"],
  ["pc", 8, "pc"],
  ["pstate", 8, "cpsr"],
  ...Array.from({ length: 32 }, (_, i): [string, number, string] => [`v${i}`, 16, ""]),
  ["fpsr", 4, "fpsr"],
  ["fpcr", 4, "fpcr"],
];

/** kdb's commands that change a live target, other than `go` and `ss`: name, usage, help. */
const RUN_CONTROL_COMMANDS: readonly (readonly [string, string, string])[] = [
  ["mm", "<vaddr> <contents>", "Modify Memory Contents"],
  ["rm", "<reg> <contents>", "Modify Registers"],
  ["bp", "[<vaddr>]", "Set/Display breakpoints"],
  ["bl", "[<vaddr>]", "Display breakpoints"],
  ["bph", "[<vaddr>]", "[datar [length]|dataw [length]]   Set hw brk"],
  ["bc", "<bpnum>", "Clear Breakpoint"],
  ["be", "<bpnum>", "Enable Breakpoint"],
  ["bd", "<bpnum>", "Disable Breakpoint"],
];

/** kdb's commands for a running kernel (lib/kdb_run.ts): on a dump they only say they cannot. */
const LIVE_ONLY = new Set([...RUN_CONTROL_COMMANDS.map(([name]) => name), "ss"]);

/** Commands kdb runs again, without arguments, on an empty line (KDB_REPEAT_NO_ARGS). */
const REPEAT_NO_ARGS = new Set(["md", "mdr", "mdp", "mds", "mm", "ss"]);

const COMMANDS: Command[] = [
  {
    name: "md",
    usage: "<vaddr>",
    help: "Display Memory Contents, also mdWcN, e.g. md8c1",
    minlen: 1,
    run: (sh, argv0, args, out) => sh.md(argv0, args, out),
  },
  {
    name: "mdr",
    usage: "<vaddr> <bytes>",
    help: "Display Raw Memory",
    run: (sh, argv0, args, out) => sh.md(argv0, args, out),
  },
  {
    name: "mdp",
    usage: "<paddr> <bytes>",
    help: "Display Physical Memory",
    run: (sh, argv0, args, out) => sh.md(argv0, args, out),
  },
  {
    name: "mds",
    usage: "<vaddr>",
    help: "Display Memory Symbolically",
    run: (sh, argv0, args, out) => sh.md(argv0, args, out),
  },
  {
    name: "go",
    usage: "[<vaddr>]",
    help: "Continue Execution",
    minlen: 1,
    run: (sh, _a, args, out) => sh.go(args, out),
  },
  { name: "rd", usage: "", help: "Display Registers", run: (sh, _a, _args, out) => sh.rd(out) },
  {
    name: "bt",
    usage: "[<vaddr>]",
    help: "Stack traceback",
    minlen: 1,
    run: (sh, _a, args, out) => sh.bt(args, out),
  },
  {
    name: "btp",
    usage: "<pid>",
    help: "Display stack for process <pid>",
    run: (sh, _a, args, out) => sh.btp(args, out),
  },
  {
    name: "bta",
    usage: "[<state_chars>|A]",
    help: "Backtrace all processes whose state matches",
    run: (sh, _a, args, out) => sh.bta(args, out),
  },
  {
    name: "btc",
    usage: "",
    help: "Backtrace current process on each cpu",
    run: (sh, _a, args, out) => sh.btc(args, out),
  },
  {
    name: "btt",
    usage: "<vaddr>",
    help: "Backtrace process given its struct task address",
    run: (sh, _a, args, out) => sh.btt(args, out),
  },
  {
    name: "env",
    usage: "",
    help: "Show environment variables",
    run: (sh, _a, _args, out) => sh.printEnv(out),
  },
  {
    name: "set",
    usage: "",
    help: "Set environment variables",
    run: (sh, _a, args) => sh.set(args),
  },
  {
    name: "help",
    usage: "",
    help: "Display Help Message",
    minlen: 1,
    run: (sh, _a, _args, out) => sh.help(out),
  },
  { name: "?", usage: "", help: "Display Help Message", run: (sh, _a, _args, out) => sh.help(out) },
  {
    name: "cpu",
    usage: "<cpunum>",
    help: "Switch to new cpu",
    run: (sh, _a, args, out) => sh.cpu(args, out),
  },
  {
    name: "kgdb",
    usage: "",
    help: "Enter kgdb mode",
    run: (sh, _a, _args, out) => sh.kgdb(out),
  },
  {
    name: "ps",
    usage: "[<state_chars>|A]",
    help: "Display active task list (also ps PID|NAME)",
    run: (sh, _a, args, out) => sh.ps(args, out),
  },
  {
    name: "pid",
    usage: "<pidnum>",
    help: "Switch to another task",
    run: (sh, _a, args, out) => sh.pid(args, out),
  },
  {
    name: "lsmod",
    usage: "",
    help: "List loaded kernel modules",
    run: (sh, _a, args, out) => {
      if (args.length) throw new KdbError(KdbDiag.ARGCOUNT);
      sh.withKernel("lsmod", (k) => lsmodLines(k).forEach(out));
    },
  },
  {
    name: "dmesg",
    usage: "[lines]",
    help: "Display syslog buffer",
    run: (sh, _a, args, out) => sh.dmesg(args, out),
  },
  {
    name: "summary",
    usage: "",
    help: "Summarize the system",
    minlen: 4,
    run: (sh, _a, args, out) => {
      if (args.length) throw new KdbError(KdbDiag.ARGCOUNT);
      sh.withKernel("summary", (k) => summaryLines(k).forEach(out));
    },
  },
  {
    name: "per_cpu",
    usage: "<sym> [<bytes>] [<cpu>]",
    help: "Display per_cpu variables",
    minlen: 3,
    run: (sh, _a, args, out) => sh.perCpu(args, out),
  },
  // A live guest's: on a dump each says it cannot (lib/kdb_run.ts).
  ...RUN_CONTROL_COMMANDS.map(([name, usage, help]): Command => ({
    name,
    usage,
    help,
    run: (sh, argv0, args, out) => sh.runControl(name, argv0, args, out),
  })),
  {
    name: "ss",
    usage: "",
    help: "Single Step",
    minlen: 1,
    run: (sh, _a, args, out) => sh.ss(args, out),
  },
];

/**
 * The command sets kdb defines at boot (`defcmd`, from the kernel's kdb_cmds): run as kdb runs a
 * defined command, each statement echoed as `[NAME]kdb> STATEMENT`, stopping at the first that
 * fails unless it is marked `-` (errors ignored).
 */
const MACROS: readonly { name: string; help: string; statements: readonly string[] }[] = [
  {
    name: "dumpcommon",
    help: "Common kdb debugging",
    statements: [
      "set BTAPROMPT 0",
      "set LINES 10000",
      "-summary",
      "-cpu",
      "-ps",
      "-dmesg 600",
      "-bt",
    ],
  },
  { name: "dumpall", help: "First line debugging", statements: ["pid R", "-dumpcommon", "-bta"] },
  {
    name: "dumpcpu",
    help: "Same as dumpall but only tasks on cpus",
    statements: ["pid R", "-dumpcommon", "-btc"],
  },
];

/**
 * Commands of ours that are not kdb's, listed after kdb's in `help`. An alias has its own row
 * (as kdb's `?` has), not a mention in its command's description too.
 */
const OWN_COMMANDS: readonly [string, string, string][] = [
  ["log", "[lines]", "Same as dmesg"],
  ["vmcoreinfo", "", "Print the VMCOREINFO note of the dump"],
  ["threads", "", "List the remote threads: thread id, cpu, name"],
  ["grephelp", "", "Display help on | grep"],
];

/** The kdb environment kdb starts with (64-bit SMP). */
const INITIAL_ENV: readonly string[] = [
  "PROMPT=[%d]kdb> ",
  "MOREPROMPT=more> ",
  "RADIX=16",
  "MDCOUNT=8",
  "BYTESPERWORD=8",
  "DTABCOUNT=30",
  "NOSECT=1",
];

/** Most frames a backtrace prints. */
const MAX_FRAMES = 64;
/**
 * How far below a frame's stack pointer `bt ADDR` still finds it: one kernel stack (16 KiB on
 * x86_64 and arm64), so an address on another stack (an IRQ stack) starts nothing.
 */
const STACK_SPAN = 16n * 1024n;

/** kdb's state for one client, and its commands. */
export class KdbShell {
  /** What the commands read: the dump's kernel target (or a live one). */
  readonly target: Target & KdbCapable;
  /** Lines `help` adds (the console's own commands). */
  readonly extraHelp: readonly string[];
  #env: string[] = [...INITIAL_ENV];
  #cpu: number;
  #initialCpu: number;
  /** The task `pid` selected; undefined = the current CPU's task. */
  #task?: TaskInfo;
  #md: MdState = newMdState();
  #tasks?: KernelTasks;

  /** The session's hooks (`go` on a live target). */
  readonly hooks: KdbHooks;

  /**
   * A shell over a target.
   * @param target what the commands read
   * @param extraHelp lines `help` adds at the end (the text console's own commands)
   * @param hooks what the channel's owner lets the shell do (`go` on a live target)
   */
  constructor(target: Target, extraHelp: readonly string[] = [], hooks: KdbHooks = {}) {
    this.target = target as Target & KdbCapable;
    this.extraHelp = extraHelp;
    this.hooks = hooks;
    const stop = target.threads().find((t) => t.id === target.stopThread());
    this.#initialCpu = this.kernel?.panicCpu ?? stop?.core ?? 0;
    this.#cpu = this.#initialCpu;
  }

  /** The kernel behind the target, if any. */
  get kernel(): Kernel | undefined {
    return this.target.kernel;
  }

  /** The CPU kdb is "on" (the panic CPU at first, then `cpu N`). */
  get currentCpu(): number {
    return this.#cpu;
  }

  /** The prompt, from the PROMPT variable: `[1]kdb> `. */
  get prompt(): string {
    const p = this.getEnv("PROMPT") ?? "kdb> ";
    return p.replace(/%[dxo]/, String(this.#cpu));
  }

  /** Value of an environment variable, or undefined. */
  getEnv(name: string): string | undefined {
    for (const e of this.#env) {
      if (e === name) return "";
      if (e.startsWith(name + "=")) return e.slice(name.length + 1);
    }
    return undefined;
  }

  /**
   * Run one command line; output goes to `out` as text. Never throws: failures print as kdb
   * prints them.
   */
  run(line: string, out: MonitorOutput): KdbAction {
    const bar = unquotedBar(line);
    if (bar < 0) return this.#runOne(line, out);
    // kdb's emulated pipe: `CMD | grep [^]PATTERN[$]`, over the command's whole output.
    const grep = parseGrep(line.slice(bar + 1));
    if (typeof grep === "string") {
      out(grep + "\n");
      return "continue";
    }
    let text = "";
    const action = this.#runOne(line.slice(0, bar), (t) => text += t);
    const lines = text.split("\n");
    if (lines.at(-1) === "") lines.pop();
    for (const l of lines) if (grep(l)) out(l + "\n");
    return action;
  }

  #runOne(line: string, out: MonitorOutput): KdbAction {
    const print: Line = (l) => out(l + "\n");
    let argv = tokenize(line);
    // kdb_parse: an empty line runs the last command again if it repeats (KDB_REPEAT_NO_ARGS:
    // `md` then Enter goes on where it stopped).
    if (argv.length === 0) {
      const repeat = line === "" ? this.#repeat : undefined;
      this.#repeat = undefined;
      if (repeat === undefined) return "continue";
      argv = [repeat];
    }
    this.#repeat = undefined;
    let word = argv[0];
    let ignoreErrors = false;
    if (word.length > 1 && word[0] === "-" && !/[0-9]/.test(word[1])) {
      ignoreErrors = true;
      word = word.slice(1);
    }
    const args = argv.slice(1);
    try {
      // kdb_parse: an exact name, or an abbreviation of exactly minlen characters.
      const exact = COMMANDS.find((c) =>
        c.name === word || (c.minlen !== undefined && word === c.name.slice(0, c.minlen))
      );
      if (exact) return this.#dispatch(exact, word, args, print);
      const macro = MACROS.find((m) => m.name === word);
      if (macro) {
        if (args.length) throw new KdbError(KdbDiag.ARGCOUNT);
        for (const statement of macro.statements) {
          print(`[${macro.name}]kdb> ${statement}`);
          this.#failed = false;
          const action = this.#runOne(statement, out);
          if (action !== "continue") return action;
          if (this.#failed) break;
        }
        this.#failed = false;
        return "continue";
      }
      if (word === "log") return this.dmesg(args, print) ?? "continue";
      if (word === "grephelp") return this.#grepHelp(print);
      if (word === "quit" || word === "exit") {
        // The text console ends its connection on these before the shell sees them; here they
        // came through gdb's `monitor`, where the connection is gdb's to close.
        print(`${word}: closes the text console only; in gdb, use detach or quit`);
        return "continue";
      }
      if (READ_ONLY_COMMANDS.has(word)) {
        print(
          this.target.run
            ? `${word}: not offered on this console: use gdb on the same port (kgdb)`
            : `${word}: the target is a crash dump: memory and registers are read-only, nothing runs`,
        );
        return "continue";
      }
      // Our own commands and the target's (vtop, sym, sys, threads, vmcoreinfo, maps…).
      if (serverCommand(this.target, line.trim(), out)) return "continue";
      // kdb: a word starting with a command's name is that command (md1c20 is md).
      // On a dump, a word that only starts like a live-only command is a symbol (`mmput`).
      const prefix = COMMANDS.find((c) =>
        word.startsWith(c.name) &&
        (this.target.run !== undefined || !LIVE_ONLY.has(c.name) || /^mm\d$/.test(word))
      );
      if (prefix) return this.#dispatch(prefix, word, args, print);
      this.#expression(argv, print);
    } catch (e) {
      if (e instanceof KdbError) {
        if (e.diag === KdbDiag.NOTFOUND) print(`Unknown kdb command: '${line.trim()}'`);
        else if (!ignoreErrors) print(e.message);
      } else print(`${word}: ${errorText(e)}`);
      this.#failed ||= !ignoreErrors;
    }
    return "continue";
  }

  /** Run a command; an empty line then repeats it, without its arguments, if kdb's does. */
  #dispatch(command: Command, word: string, args: string[], out: Line): KdbAction {
    if (REPEAT_NO_ARGS.has(command.name)) this.#repeat = word;
    return command.run(this, word, args, out) ?? "continue";
  }

  /** The command an empty line runs (kdb's KDB_REPEAT_NO_ARGS commands), as it was typed. */
  #repeat: string | undefined;

  /** Whether the last statement a defined command ran failed (it stops the rest). */
  #failed = false;

  #grepHelp(out: Line): KdbAction {
    for (
      const l of [
        "Usage of  cmd args | grep pattern:",
        "  Any command's output may be filtered through an emulated 'pipe'.",
        "  'grep' is just a key word.",
        "  The pattern may include a very limited set of metacharacters:",
        "   pattern or ^pattern or pattern$ or ^pattern$",
        "  And if there are spaces in the pattern, you may quote it:",
        '   "pat tern" or "^pat tern" or "pat tern$" or "^pat tern$"',
      ]
    ) out(l);
    return "continue";
  }

  /** An unknown word: kdb prints it as an address expression if it is one. */
  #expression(argv: string[], out: Line): void {
    const kernel = this.kernel;
    if (!kernel) throw new KdbError(KdbDiag.NOTFOUND);
    let value: bigint;
    try {
      value = addressArg(kernel, argv, 0, (n) => this.getEnv(n)).value;
    } catch {
      throw new KdbError(KdbDiag.NOTFOUND);
    }
    out(`${argv[0]} = ${valueAndSymbol(kernel, value)}`);
  }

  /** Run `fn` with the kernel, or say this target has none. */
  withKernel(what: string, fn: (kernel: Kernel) => void): void {
    const k = this.kernel;
    if (!k) throw new Error(`no kernel behind this target: ${what} needs one`);
    fn(k);
  }

  #kernel(what: string): Kernel {
    const k = this.kernel;
    if (!k) throw new Error(`no kernel behind this target: ${what} needs one`);
    return k;
  }

  /** The kernel's tasks, read once per shell. */
  #taskList(): KernelTasks {
    if (!this.#tasks) this.#tasks = new KernelTasks(this.#kernel("the task list"));
    return this.#tasks;
  }

  // --- environment -----------------------------------------------------------------------------

  /** `env`: kdb's environment, one `NAME=value` a line. */
  printEnv(out: Line): void {
    for (const e of this.#env) out(e);
  }

  /** `set NAME VALUE` (or `NAME = VALUE`): set an environment variable; kdb's errors. */
  set(args: string[]): void {
    if (args.length === 2 && args[1] === "=") args = [args[0], ""];
    if (args.length === 3 && args[1] === "=") args = [args[0], args[2]];
    if (args.length !== 2) throw new KdbError(KdbDiag.ARGCOUNT);
    const [name, value] = args;
    const entry = `${name}=${value}`;
    const i = this.#env.findIndex((e) => e === name || e.startsWith(name + "="));
    if (i >= 0) this.#env[i] = entry;
    else if (this.#env.length < 31) this.#env.push(entry);
    else throw new KdbError(-8, "diag: -8: Environment full");
  }

  // --- help ------------------------------------------------------------------------------------

  /** `help`: kdb's command table, then the server's and the target's own commands. */
  help(out: Line): void {
    out(`${"Command".padEnd(15)} ${"Usage".padEnd(20)} Description`);
    out("-".repeat(58));
    const row = (name: string, usage: string, help: string) => {
      const space = usage.length > 20 ? "\n" + " ".repeat(36) : "";
      out(`${name.slice(0, 15).padEnd(15)} ${usage.padEnd(20)}${space}${help}`);
    };
    const shown = new Set<string>();
    for (const c of [...COMMANDS, ...MACROS.map((m) => ({ ...m, usage: '""' }))]) {
      row(c.name, c.usage, c.help);
      shown.add(c.name);
    }
    for (const [name, usage, help] of OWN_COMMANDS) {
      row(name, usage, help);
      shown.add(name);
    }
    // The target's own commands (vtop, sym, sys, cache, maps…), each once.
    for (const l of [...(this.target.monitorHelp?.() ?? []), ...this.extraHelp]) {
      const [name, ...rest] = l.trim().split(/\s+/);
      if (shown.has(name)) continue;
      shown.add(name);
      // Those lines read "name ARGS description": ARGS are the upper-case or bracketed words, put
      // in kdb's Usage column so the table reads as one.
      const usage: string[] = [];
      while (rest.length && /^[\[<]|^[A-Z][A-Z|]*$/.test(rest[0])) usage.push(rest.shift()!);
      row(name, usage.join(" "), rest.join(" "));
    }
  }

  // --- cpus and tasks --------------------------------------------------------------------------

  /** The task running on a CPU, from the task list (undefined when unknown). */
  #cpuTask(cpu: number): TaskInfo | undefined {
    const address = this.kernel?.cpuTasks[cpu]?.task;
    if (address === undefined) return undefined;
    try {
      return this.#taskList().byAddress(address);
    } catch {
      return undefined;
    }
  }

  /**
   * gdb's user selected thread `threadId` (`thread N`): kdb's current CPU and task follow it,
   * as `cpu N` (a thread that was on a CPU) or `pid N` (a task that was switched out) would,
   * without their messages. A thread the shell cannot place leaves both as they were.
   */
  followThread(threadId: number): void {
    const thread = this.target.threads().find((t) => t.id === threadId);
    const kernel = this.kernel;
    if (!thread || !kernel) return;
    if (thread.onCpu && thread.core !== undefined && thread.core < kernel.dump.cpus.length) {
      this.#cpu = thread.core;
      this.#task = undefined;
      return;
    }
    if (thread.task === undefined) return;
    let task: TaskInfo | undefined;
    try {
      task = this.#taskList().byAddress(thread.task);
    } catch {
      return; // no task list (the dump lacks the types): kdb stays where it was
    }
    if (task) this.#task = task;
  }

  /** kdb's current task: the one `pid` chose, else the current CPU's. */
  #currentTask(): TaskInfo | undefined {
    return this.#task ?? this.#cpuTask(this.#cpu);
  }

  /** kdb's one-letter state: `-` for an idle CPU, lower case for a sleeping kernel daemon. */
  #stateChar(t: TaskInfo): string {
    if (t.unreadable) return "E";
    let state = t.state;
    if (t.idleOf !== undefined) {
      const cpu = t.runningOn ?? t.cpu ?? t.idleOf;
      if (cpu !== this.#initialCpu) state = "-";
    } else if (t.mm === 0n && "IMS".includes(state)) state = state.toLowerCase();
    return state;
  }

  #matches(t: TaskInfo, mask: string | undefined): boolean {
    const s = this.#stateChar(t);
    if (!mask) return !"-ims".includes(s);
    if (mask.includes("A")) return true;
    return mask.includes(s);
  }

  /** One row of kdb's ps. */
  #ps1(t: TaskInfo): string {
    const threadOff = this.kernel?.btf?.member("task_struct", "thread")?.offset ?? 0;
    const mine = this.#currentTaskOfCpu() === t.address ? "*" : " ";
    const has = t.runningOn !== undefined ? 1 : 0;
    const cpu = t.runningOn ?? t.cpu ?? 0;
    const parent = this.#parentPid(t);
    return `${hex16(t.address)} ${String(t.pid).padStart(8)} ${String(parent).padStart(8)}  ` +
      `${has} ${String(cpu).padStart(4)}   ${this.#stateChar(t)}  ` +
      `${hex16(t.address + BigInt(threadOff))} ${mine}${t.comm}`;
  }

  /**
   * kdb_ps1's parent column, `p->parent->pid`: the tracer of a traced task, and not the same as
   * `ps`'s PPID (`real_parent->tgid`) for idle tasks and children of threads.
   */
  #parentPid(t: TaskInfo): number {
    const k = this.kernel!;
    const parent = k.btf?.member("task_struct", "parent")?.offset;
    const pid = k.btf?.member("task_struct", "pid")?.offset;
    const p = parent === undefined ? undefined : k.memory?.readU64(t.address + BigInt(parent));
    if (!p || pid === undefined) return t.ppid;
    return this.#taskList().byAddress(p)?.pid ?? k.readU32(p + BigInt(pid)) ?? t.ppid;
  }

  #currentTaskOfCpu(): bigint | undefined {
    return this.kernel?.cpuTasks[this.#cpu]?.task;
  }

  /** The running tasks (one per CPU), then every other task kdb's lists walk. */
  #kdbOrder(): { running: TaskInfo[]; others: TaskInfo[] } {
    const list = this.#taskList().list();
    const running: TaskInfo[] = [];
    const cpus = this.kernel!.dump.cpus.length;
    for (let cpu = 0; cpu < cpus; cpu++) {
      const t = this.#cpuTask(cpu);
      if (t) running.push(t);
    }
    // for_each_process_thread never visits the idle tasks.
    const others = list.filter((t) => t.idleOf === undefined && !t.unreadable);
    return { running, others };
  }

  #suppressed(out: Line): void {
    const { running, others } = this.#kdbOrder();
    const idle = running.filter((t) => this.#stateChar(t) === "-").length;
    const daemon = others.filter((t) => "ims".includes(this.#stateChar(t))).length;
    if (!idle && !daemon) return;
    let text = "";
    if (idle) {
      text += `${idle} idle process${idle === 1 ? "" : "es"} (state -)${daemon ? " and " : ""}\n`;
    }
    if (daemon) {
      text += `${daemon} sleeping system daemon (state [ims]) process${daemon === 1 ? "" : "es"}`;
    }
    text += " suppressed,\nuse 'ps A' to see all.";
    for (const l of text.split("\n")) out(l);
  }

  /** `ps [STATES|A]` (kdb's list) or `ps PID|NAME` (the longer table). */
  ps(args: string[], out: Line): void {
    if (args.length > 1) throw new KdbError(KdbDiag.ARGCOUNT);
    const arg = args[0];
    if (arg !== undefined && !MASK_CHARS.test(arg)) {
      // Our extension: ps PID or ps NAME, with every column we know (and gdb thread ids).
      if (this.target.monitor?.(`ps ${arg}`, (t) => t.split("\n").filter((l) => l).forEach(out))) {
        return;
      }
      throw new KdbError(KdbDiag.BADINT);
    }
    const { running, others } = this.#kdbOrder();
    if (arg === undefined) this.#suppressed(out);
    const mask = arg ?? this.getEnv("PS");
    out(
      `${"Task Addr".padEnd(18)}       Pid   Parent [*] cpu State ${"Thread".padEnd(18)} Command`,
    );
    for (const t of running) if (this.#matches(t, mask)) out(this.#ps1(t));
    out("");
    for (const t of others) if (this.#matches(t, mask)) out(this.#ps1(t));
  }

  /** `pid N|R`: make task N (R: the current CPU's) kdb's current task. */
  pid(args: string[], out: Line): void {
    if (args.length > 1) throw new KdbError(KdbDiag.ARGCOUNT);
    if (args.length === 1) {
      let t: TaskInfo | undefined;
      if (args[0] === "R") t = this.#cpuTask(this.#initialCpu);
      else {
        const v = parseKernelNumber(args[0]);
        if (v === undefined) throw new KdbError(KdbDiag.BADINT);
        const pid = Number(BigInt.asIntN(32, v));
        // find_task_by_pid_ns: idle tasks (pid 0) are in no pid hash; `pid R` or `cpu N` reach them.
        t = this.#taskList().list().find((x) => x.pid === pid && x.idleOf === undefined);
        if (!t) {
          out(`No task with pid=${pid}`);
          return;
        }
      }
      if (t) this.#task = t;
    }
    const cur = this.#currentTask();
    if (!cur) throw new Error("no current task (the dump's task list is not readable)");
    out(`KDB current process is ${cur.comm}(pid=${cur.pid})`);
  }

  /** `cpu [N]`: switch to CPU N, or list the CPUs. */
  cpu(args: string[], out: Line): void {
    const k = this.#kernel("cpu");
    const n = k.dump.cpus.length;
    if (args.length === 0) {
      out(`Currently on cpu ${this.#cpu}`);
      out(`Available cpus: ${this.#cpuRanges()}`);
      return;
    }
    if (args.length !== 1) throw new KdbError(KdbDiag.ARGCOUNT);
    const v = parseKernelNumber(args[0]);
    if (v === undefined) throw new KdbError(KdbDiag.BADINT);
    if (v >= BigInt(n)) throw new KdbError(KdbDiag.BADCPUNUM);
    this.#cpu = Number(v);
    this.#task = undefined;
    const c = k.cpuTasks[this.#cpu];
    out("");
    out(
      `Entering kdb (current=${hex16(c?.task ?? 0n)}, pid ${c?.pid ?? 0}) on processor ` +
        `${this.#cpu} due to cpu switch`,
    );
  }

  /** `0-1`, `0(-), 1`: kdb's list of CPUs, ranges of one state ('-' = idle task). */
  #cpuRanges(): string {
    const n = this.kernel!.dump.cpus.length;
    const states: string[] = [];
    for (let i = 0; i < n; i++) {
      const t = this.#cpuTask(i);
      states.push(t && this.#stateChar(t) === "-" ? "-" : " ");
    }
    const parts: string[] = [];
    for (let i = 0; i < n;) {
      let j = i;
      while (j + 1 < n && states[j + 1] === states[i]) j++;
      parts.push(`${i}${j > i ? `-${j}` : ""}${states[i] !== " " ? `(${states[i]})` : ""}`);
      i = j + 1;
    }
    return parts.join(", ");
  }

  /** `kgdb`: the line goes to the remote protocol (the caller switches it). */
  kgdb(out: Line): KdbAction {
    out(KGDB_ENTERING.trimEnd());
    return "kgdb";
  }

  /** `go`: resume a live target, with kdb's breakpoints in; a dump says it cannot run. */
  go(args: string[], out: Line): void {
    if (args.length > 1) throw new KdbError(KdbDiag.ARGCOUNT);
    // A dump cannot run from any CPU: say so before kdb's entry-CPU rule, which would send the
    // user to another CPU for nothing.
    if (!this.target.run) {
      out("go: the target is a crash dump: it cannot continue execution");
      return;
    }
    if (this.#cpu !== this.#initialCpu) {
      out(
        `go must execute on the entry cpu, please use "cpu ${this.#initialCpu}" and then execute go`,
      );
      throw new KdbError(KdbDiag.BADCPUNUM);
    }
    if (!this.hooks.resume) return out("go: gdb is attached: continue from gdb (continue, or c)");
    const ctx = this.#runContext();
    const first = ctx ? this.#runCommands.go(ctx, this.#cpu, out) : "continue";
    this.#resume(ctx, first === "step" ? this.#cpu : undefined, out, "go");
  }

  /** `ss`: kdb's CPU executes one instruction (a live target); kdb comes back after it. */
  ss(args: string[], out: Line): void {
    if (args.length) throw new KdbError(KdbDiag.ARGCOUNT);
    this.#live("ss", out, (ctx) => {
      if (!this.hooks.resume) return out("ss: gdb is attached: step from gdb (stepi)");
      this.#runCommands.ss();
      this.#resume(ctx, this.#cpu, out, "ss");
    });
  }

  #resume(ctx: KdbRunContext | undefined, stepCpu: number | undefined, out: Line, what: string) {
    let thread: number | undefined;
    if (stepCpu !== undefined) {
      thread = ctx?.threadOfCpu(stepCpu);
      if (thread === undefined) return out(`${what}: no thread runs on CPU ${stepCpu}`);
    }
    const refused = this.hooks.resume!(thread, what === "go");
    if (refused) {
      if (ctx) this.#runCommands.refused(ctx);
      return out(`${what}: ${refused}`);
    }
    // A running kernel changes: read its tasks again at the next stop.
    this.stopped();
  }

  /**
   * kdb's commands that change a live target: `bp`, `bph`, `bl`, `bc`, `bd`, `be`, `mm[W]`,
   * `rm` (lib/kdb_run.ts); on a dump each says it cannot.
   * @param name the command; `argv0` as typed (`mm4`)
   */
  runControl(name: string, argv0: string, args: string[], out: Line): void {
    this.#live(argv0, out, (ctx, run) => {
      // kdb's breakpoints go into the guest at `go`, which gdb's continue is not: they would
      // be listed as enabled and never hit.
      if ((name === "bp" || name === "bph") && args.length && this.hooks.gdbAttached?.()) {
        return out(`${argv0}: gdb is attached: set breakpoints from gdb (break, hbreak, watch)`);
      }
      if (name === "bp" || name === "bl") run.bp(ctx, args, out);
      else if (name === "bph") run.bph(ctx, args, out);
      else if (name === "bc" || name === "bd" || name === "be") run.change(name, args, out);
      else if (name === "mm") {
        run.mm(ctx, argv0, args, this.#cpu, out);
        this.#tasks = undefined; // the task list is read again, with what mm wrote
      } else if (name === "rm") {
        // kdb_check_regs: the registers of the current task, which must be on a CPU.
        if (!this.#currentRegisters()) {
          out("No current kdb registers.  You may need to select another task");
          throw new KdbError(KdbDiag.BADREG);
        }
        run.rm(ctx, args, this.#task?.runningOn ?? this.#cpu, this.registerTable, out);
      }
    });
  }

  /** Run `fn` with what changing a live target needs; on a dump, say it cannot. */
  #live(word: string, out: Line, fn: (ctx: KdbRunContext, run: KdbRunCommands) => void): void {
    const ctx = this.#runContext();
    if (!ctx) {
      out(`${word}: the target is a crash dump: memory and registers are read-only, nothing runs`);
      return;
    }
    fn(ctx, this.#runCommands);
  }

  /** kdb's register names for `rd` and `rm`, with gdb's. */
  get registerTable(): readonly [string, number, string][] {
    return this.kernel?.dump.arch === "aarch64" ? ARM64_RD : X86_64_RD;
  }

  #runCommands = new KdbRunCommands();

  #runContext(): KdbRunContext | undefined {
    const kernel = this.kernel;
    const run = this.target.run;
    if (!kernel || !run) return undefined;
    return {
      kernel,
      run,
      threadOfCpu: (cpu) =>
        this.target.threads().find((t) => t.core === cpu && t.onCpu !== false)?.id,
      cpuRegisters: (cpu) => kernel.dump.cpus[cpu]?.registers,
      getEnv: (name) => this.getEnv(name),
    };
  }

  /** The resume after a step off a breakpoint was refused: kdb's breakpoints come out again. */
  resumeRefused(): void {
    const ctx = this.#runContext();
    if (ctx) this.#runCommands.refused(ctx);
  }

  /**
   * A live target stopped while kdb had let it run (`go`, `ss`): kdb's entry line (`Entering
   * kdb (current=…, pid N) on processor C due to Breakpoint @ 0x…`), after any line about a
   * breakpoint that could not be put in; or, when the stop was only the step off a breakpoint
   * that `go` starts with, the resume to do now (every CPU).
   * @param signal the stop reply's signal (2: the console's ^C)
   */
  entered(cpu: number | undefined, signal: number): { text: string; resume?: true } {
    const ctx = this.#runContext();
    let text = "";
    const outcome = ctx && cpu !== undefined
      ? this.#runCommands.stopped(ctx, cpu, signal, (l) => text += l + "\n")
      : { reason: signal === 2 ? "Keyboard Entry" : `signal ${signal}` };
    if ("resume" in outcome) {
      this.stopped(); // it runs on: read it again at the next stop
      return { text, resume: true };
    }
    return { text: text + this.stopped(cpu, outcome.reason)! };
  }

  /**
   * The target ran and stopped again: forget what was read of it; kdb is now on the stopping
   * CPU. With a reason, returns kdb's entry line (`Entering kdb (current=…, pid N) on processor
   * C due to Keyboard Entry`).
   */
  stopped(cpu?: number, reason?: string): string | undefined {
    this.#tasks = undefined;
    this.#task = undefined;
    this.#md = newMdState();
    if (cpu !== undefined) this.#cpu = this.#initialCpu = cpu;
    if (reason === undefined) return undefined;
    const c = this.kernel?.cpuTasks[this.#cpu];
    return `Entering kdb (current=${hex16(c?.task ?? 0n)}, pid ${c?.pid ?? 0}) on processor ` +
      `${this.#cpu} due to ${reason}`;
  }

  // --- registers and memory --------------------------------------------------------------------

  /** The registers of the current task, when it is running on a CPU (kdb_current_regs). */
  #currentRegisters(): RegisterValues | undefined {
    const k = this.kernel;
    if (!k) return undefined;
    if (this.#task && this.#task.runningOn === undefined) return undefined;
    const cpu = this.#task?.runningOn ?? this.#cpu;
    return k.dump.cpus[cpu]?.registers;
  }

  /** `rd`: the current CPU's registers as kdb prints them. */
  rd(out: Line): void {
    const regs = this.#currentRegisters();
    if (!regs) {
      out("No current kdb registers.  You may need to select another task");
      throw new KdbError(KdbDiag.BADREG);
    }
    const table = this.kernel!.dump.arch === "x86_64" ? X86_64_RD : ARM64_RD;
    let line = "";
    const lines: string[] = [];
    for (const [name, size, gdbName] of table) {
      const rsize = size * 2 > 16 ? 2 : size * 2;
      if (line.length + name.length + 4 + rsize > 80) {
        lines.push(line);
        line = "";
      }
      if (line) line += "  ";
      const v = gdbName ? regs.get(gdbName) : undefined;
      line += v === undefined || size > 8
        ? `${name}: ??`
        : `${name}: ${BigInt.asUintN(size * 8, v).toString(16).padStart(size * 2, "0")}`;
    }
    lines.push(line);
    for (const l of lines) out(l);
  }

  /** `md`, `mdWcN`, `mds`, `mdr`, `mdp`: memory as kdb shows it (lib/md.ts). */
  md(argv0: string, args: string[], out: Line): void {
    const k = this.#kernel(argv0);
    mdCommand(k, argv0, args, this.#md, (n) => this.getEnv(n), out);
  }

  /** `per_cpu SYM [BYTES [CPU]]`: a per-CPU variable's address and value on each CPU. */
  perCpu(args: string[], out: Line): void {
    const k = this.#kernel("per_cpu");
    if (args.length < 1 || args.length > 3) throw new KdbError(KdbDiag.ARGCOUNT);
    const offsets = k.symbol("__per_cpu_offset");
    // A variable kallsyms lacks, or a kernel without __per_cpu_offset (no data symbols in
    // kallsyms): BTF's .data..percpu places it from each CPU's runqueue the server found
    // (Kernel.perCpu).
    const named = /^([A-Za-z_][\w.]*)(?:\+(\S+))?$/.exec(args[0]);
    const plus = named?.[2] === undefined ? 0n : parseKernelNumber(named[2]);
    let place: (cpu: number) => bigint | undefined;
    if (
      named && plus !== undefined &&
      (offsets === undefined || k.symbol(named[1]) === undefined) &&
      k.perCpu(named[1], 0) !== undefined
    ) {
      place = (cpu) => {
        const at = k.perCpu(named[1], cpu);
        return at === undefined ? undefined : (at + plus) & 0xffffffffffffffffn;
      };
    } else {
      // kdb: the address given plus __per_cpu_offset[cpu].
      let sym: bigint;
      try {
        sym = addressArg(k, args, 0, (n) => this.getEnv(n)).value;
      } catch (e) {
        // kdb's words for a name it cannot find (not "Illegal numeric value": a name was meant).
        if (e instanceof KdbError && e.diag === KdbDiag.BADINT) {
          throw new KdbError(KdbDiag.BADADDR, `${args[0]} is not a per_cpu variable`);
        }
        throw e;
      }
      if (offsets === undefined) {
        throw new KdbError(
          KdbDiag.BADADDR,
          "per_cpu: the kernel's symbols have no __per_cpu_offset: name the variable, or give --vmlinux",
        );
      }
      place = (cpu) => {
        const off = k.memory?.readU64(offsets + BigInt(cpu) * 8n);
        return off === undefined ? undefined : (sym + off) & 0xffffffffffffffffn;
      };
    }
    let bytes = 8;
    if (args.length >= 2) {
      const v = parseKernelNumber(args[1]);
      if (v === undefined) throw new KdbError(KdbDiag.BADINT);
      bytes = Number(v) || 8;
      if (bytes > 8) throw new KdbError(KdbDiag.BADWIDTH);
    }
    let which: number | undefined;
    if (args.length >= 3) {
      const v = parseKernelNumber(args[2]);
      if (v === undefined) throw new KdbError(KdbDiag.BADINT);
      if (v >= BigInt(k.dump.cpus.length)) {
        out(`cpu ${v} is not online`);
        throw new KdbError(KdbDiag.BADCPUNUM);
      }
      which = Number(v);
    }
    for (let cpu = 0; cpu < k.dump.cpus.length; cpu++) {
      if (which !== undefined && cpu !== which) continue;
      const addr = place(cpu);
      const unable = (diag: number) =>
        out(`${String(cpu).padStart(5)} ${hex16(addr ?? 0n)} - unable to read, diag=${diag}`);
      if (![1, 2, 4, 8].includes(bytes)) {
        // kdb_getword refuses other widths, CPU by CPU.
        out(`kdb_getword: bad width ${bytes}`);
        unable(KdbDiag.BADWIDTH);
        continue;
      }
      const buf = new Uint8Array(bytes);
      const r = addr === undefined ? undefined : k.memory?.read(addr, buf);
      if (addr === undefined || !r || r.error) {
        unable(KdbDiag.BADADDR);
        continue;
      }
      let w = 0n;
      for (let i = bytes - 1; i >= 0; i--) w = (w << 8n) | BigInt(buf[i]);
      // kdb_md_line with one word: its symbol (8-byte words), else its bytes.
      const hit = bytes === 8 ? symbolAt(k, w) : undefined;
      const word = w.toString(16).padStart(bytes * 2, "0");
      out(
        `${String(cpu).padStart(5)} ${hex16(addr)} ${word} ` +
          (hit ? symbolText(hit) + "  " : "  " + printableWord(w, bytes)),
      );
    }
  }

  // --- the kernel log ----------------------------------------------------------------------------

  /**
   * `dmesg [LINES [ADJUST]]`: the log is read again each time (a few milliseconds), so a live
   * target's new lines show. LOGLEVEL=N keeps the records below level N, as a console does.
   */
  dmesg(args: string[], out: Line): void {
    if (args.length > 2) throw new KdbError(KdbDiag.ARGCOUNT);
    const level = parseKernelNumber(this.getEnv("LOGLEVEL") ?? "");
    const log = readKernelLog(this.#kernel("dmesg"));
    const records = kdbLogRecords(log, level === undefined ? 7 : Number(level) - 1);
    for (const l of dmesgCommand(records, args)) out(l);
  }

  // --- backtraces --------------------------------------------------------------------------------

  /** kdb_bt1: the header, the task's ps line, its stack. */
  #bt1(t: TaskInfo, out: Line): void {
    out(`Stack traceback for pid ${t.pid}`);
    out(this.#ps1(t));
    this.#printTrace(this.#taskBacktrace(t), out);
  }

  /** A task's kernel stack: from its CPU's registers when it runs, else from its saved ones. */
  #taskBacktrace(t: TaskInfo): Backtrace {
    const k = this.kernel!;
    const regs = t.runningOn !== undefined
      ? k.dump.cpus[t.runningOn]?.registers ?? new Map()
      : this.#taskList().kernelRegisters(t);
    return kernelBacktrace(k, regs, { task: t.address, cpu: t.runningOn, maxFrames: MAX_FRAMES });
  }

  /** A CPU's kernel stack from its registers, when its task is not known. */
  #cpuBacktrace(cpu: number): Backtrace {
    const k = this.kernel!;
    const regs = k.dump.cpus[cpu]?.registers ?? new Map();
    return kernelBacktrace(k, regs, { task: k.cpuTasks[cpu]?.task, cpu, maxFrames: MAX_FRAMES });
  }

  /** The architecture's `Call Trace:` line, then the frames as the kernel prints them. */
  #printTrace(bt: Backtrace, out: Line): void {
    const arch = this.kernel!.dump.arch;
    out(callTraceHeader(arch));
    for (const l of formatBacktrace(bt, arch)) out(l);
  }

  /**
   * `bt [ADDR]`: the current task's stack; with a stack address, as kdb's `show_stack(task, ADDR)`,
   * the task's own unwind from the frame at or above ADDR on (the frame whose return address is
   * stored at ADDR, or the next one up) on x86_64, the whole of it on arm64 (whose show_stack
   * does not use the address).
   */
  bt(args: string[], out: Line): void {
    const k = this.#kernel("bt");
    const t = this.#currentTask();
    if (!args.length) {
      if (!t) return this.#cpuStack(this.#cpu, out);
      return this.#bt1(t, out);
    }
    const at = addressArg(k, args, 0, (n) => this.getEnv(n)).value;
    const bt = t ? this.#taskBacktrace(t) : this.#cpuBacktrace(this.#cpu);
    // arm64's show_stack ignores the address: the task's whole stack.
    const first = k.dump.arch === "aarch64"
      ? 0
      : bt.frames.findIndex((f) => f.sp >= at && f.sp - at < STACK_SPAN);
    if (first < 0) {
      const whose = t ? `pid ${t.pid} (${t.comm})` : `cpu ${this.#cpu}`;
      const span = bt.frames.length
        ? `: its frames' stack pointers run from 0x${bt.frames[0].sp.toString(16)} to 0x${
          bt.frames[bt.frames.length - 1].sp.toString(16)
        }`
        : "";
      throw new KdbError(
        KdbDiag.BADADDR,
        `bt: 0x${
          at.toString(16)
        } is not on the stack of ${whose}${span} (for another task's, pid N first)`,
      );
    }
    this.#printTrace({ ...bt, frames: bt.frames.slice(first), note: undefined }, out);
  }

  /**
   * A CPU's stack when its task is not known (the task list needs types the dump may lack):
   * the header names the CPU, and the stack starts from the CPU's saved registers.
   */
  #cpuStack(cpu: number, out: Line): void {
    const c = this.kernel!.cpuTasks[cpu];
    let why = "";
    try {
      this.#taskList().list();
    } catch (e) {
      why = ` (no task list: ${errorText(e)})`;
    }
    out(`Stack traceback for cpu ${cpu}${c?.pid !== undefined ? `, pid ${c.pid}` : ""}${why}`);
    this.#printTrace(this.#cpuBacktrace(cpu), out);
  }

  /** `btp PID`: the stack of task PID. */
  btp(args: string[], out: Line): void {
    if (args.length !== 1) throw new KdbError(KdbDiag.ARGCOUNT);
    const v = parseKernelNumber(args[0]);
    if (v === undefined) throw new KdbError(KdbDiag.BADINT);
    const t = this.#taskList().list().find((x) => BigInt(x.pid) === v && x.idleOf === undefined);
    if (!t) {
      out(`No process with pid == ${v} found`);
      return;
    }
    this.#bt1(t, out);
  }

  /** `btt TASK`: the stack of the task whose `struct task_struct` is at TASK. */
  btt(args: string[], out: Line): void {
    if (args.length !== 1) throw new KdbError(KdbDiag.ARGCOUNT);
    const k = this.#kernel("btt");
    const addr = addressArg(k, args, 0, (n) => this.getEnv(n)).value;
    const t = this.#taskList().byAddress(addr);
    if (!t || t.unreadable) {
      const size = k.btf?.structSize("task_struct") ?? 1;
      const probe = new Uint8Array(Math.max(1, size));
      const r = k.memory?.read(addr, probe);
      const why = !r ? "no page tables" : r.error ?? "not a task_struct on the dump's task list";
      throw new KdbError(
        KdbDiag.BADADDR,
        `kdb_getarea_size: Bad address 0x${addr.toString(16)} (${why})`,
      );
    }
    this.#bt1(t, out);
  }

  /** `bta [STATES|A]`: the stacks of all tasks kdb's `ps` filter keeps. */
  bta(args: string[], out: Line): void {
    const mask = args.length ? args[0] : this.getEnv("PS");
    const { running, others } = this.#kdbOrder();
    if (args.length === 0) this.#suppressed(out);
    const runningSet = new Set(running.map((t) => t.address));
    for (const t of running) if (this.#matches(t, mask)) this.#bt1(t, out);
    for (const t of others) {
      if (runningSet.has(t.address) || t.runningOn !== undefined) continue;
      if (this.#matches(t, mask)) this.#bt1(t, out);
    }
  }

  /** `btc [CPU]`: the stack of each CPU's (or one CPU's) current task. */
  btc(args: string[], out: Line): void {
    const k = this.#kernel("btc");
    if (args.length > 1) throw new KdbError(KdbDiag.ARGCOUNT);
    const one = (cpu: number) => {
      if (cpu >= k.dump.cpus.length) {
        out(`WARNING: no process for cpu ${cpu}`);
        return;
      }
      const t = this.#cpuTask(cpu);
      if (!t) return this.#cpuStack(cpu, out);
      this.#bt1(t, out);
    };
    if (args.length === 1) {
      const v = parseKernelNumber(args[0]);
      if (v === undefined) throw new KdbError(KdbDiag.BADINT);
      one(v > 1n << 20n ? 1 << 20 : Number(v));
      return;
    }
    out(`btc: cpu status: Currently on cpu ${this.#cpu}`);
    out(`Available cpus: ${this.#cpuRanges()}`);
    for (let cpu = 0; cpu < k.dump.cpus.length; cpu++) one(cpu);
  }
}

/** kdb commands that write memory or registers or run the target: refused on a dump. */
const READ_ONLY_COMMANDS = new Set(["reboot", "kill", "sr"]);

/** Index of the first `|` outside quotes, or -1. */
function unquotedBar(line: string): number {
  let quote = "";
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === "\\") i++;
    else if (quote) {
      if (c === quote) quote = "";
    } else if (c === '"' || c === "'") quote = c;
    else if (c === "|") return i;
  }
  return -1;
}

/** kdb's parse_grep: a line filter, or kdb's complaint. */
function parseGrep(spec: string): ((line: string) => boolean) | string {
  let cp = spec.trimStart();
  if (!cp.startsWith("grep ")) return "invalid 'pipe', see grephelp";
  cp = cp.slice(5).trim();
  if (cp === "") return "invalid 'pipe', see grephelp";
  if (cp.startsWith('"')) {
    const end = cp.indexOf('"', 1);
    if (end < 0) return "invalid quoted string, see grephelp";
    cp = cp.slice(1, end);
  }
  const leading = cp.startsWith("^");
  if (leading) cp = cp.slice(1);
  const trailing = cp.endsWith("$");
  if (trailing) cp = cp.slice(0, -1);
  if (cp.length >= 256) return "search string too long";
  const pattern = cp;
  return (line) => {
    if (leading && trailing) return line === pattern;
    if (leading) return line.startsWith(pattern);
    if (trailing) return line.endsWith(pattern);
    return line.includes(pattern);
  };
}

/**
 * Split a command line as kdb_parse does: on white space, `=` ending a word (`set A=1`),
 * quotes and backslashes kept together, a `#` starting a comment.
 */
export function tokenize(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  const n = line.length;
  while (i < n) {
    while (i < n && /\s/.test(line[i])) i++;
    if (i >= n || line[i] === "#") break;
    let word = "";
    let quoted = "";
    let escaped = false;
    while (i < n && (escaped || quoted || !/\s/.test(line[i]))) {
      const c = line[i++];
      if (escaped) {
        escaped = false;
        word += c;
        continue;
      }
      if (c === "\\") {
        escaped = true;
        continue;
      }
      if (c === quoted) quoted = "";
      else if (!quoted && (c === "'" || c === '"')) quoted = c;
      if (c === "=" && !quoted) break;
      word += c;
    }
    out.push(word);
  }
  return out;
}
