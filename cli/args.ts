/**
 * Command-line parsing for kdump-gdbserver, including the original tool's flags.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** Parsed command line. */
export interface CliOptions {
  files: string[];
  port: number;
  host: string;
  stdio: boolean;
  vmlinux?: string;
  zeroExcluded: boolean;
  cacheMb: number;
  debug: boolean;
  once: boolean;
  tasksJson?: string;
  processJson?: string;
  tasks: boolean;
  pid?: number;
  exe?: string;
  /** `-c`: console commands to run on the dump, then exit (no server). */
  commands?: string;
  /** `--json`: print the triage document and exit (no server). */
  json: boolean;
  version: boolean;
  help: boolean;
  /** Live QEMU guest: its gdbstub, QMP, shared RAM file; refuse writes. */
  qemu?: string;
  qmp?: string;
  guestRam?: string;
  readOnly: boolean;
}

/** Thrown for a bad command line; the message is one line for stderr. */
export class UsageError extends Error {}

/** Default page cache size in MiB. */
export const DEFAULT_CACHE_MB = 64;

/** Usage text. */
export const USAGE = `usage: kdump-gdbserver [options] VMCORE [MORE_SPLIT_FILES...]

Serve a Linux kernel crash dump to gdb over the remote protocol.

  -p, --port N          TCP port to listen on (default 1234; 0 picks a free one)
  -a, --host H          address to listen on (default 127.0.0.1: a vmcore holds secrets)
      --stdio           speak the protocol on stdin/stdout (gdb: target remote | ...)
  -v, --vmlinux FILE    the matching vmlinux: gdb loads it by itself and KASLR is applied
      --zero-excluded   read pages the dump level filtered out as zeros instead of errors
      --cache-mb N      page cache size in MiB (default ${DEFAULT_CACHE_MB})
  -d, --debug           log every packet on stderr
      --once            serve one client (others are told why not), exit when it leaves
  -f VMCORE             the dump (same as the positional argument)
      --tasks           every kernel task is a thread (pid, comm), registers from its stack
      --pid N           process mode: process N's threads and user address space
      --exe FILE        with --pid: the process's executable, offered to gdb
  -c, --command CMDS    run kdb console commands ('summary; bt; dmesg 40') and exit, no server
      --json            print summary, panic, every CPU's backtrace and the log as JSON, exit
  -k FILE               tasks JSON of the original tool (every task a thread)
      --qemu HOST:PORT  a live QEMU guest: its gdbstub (-gdb tcp:HOST:PORT) instead of a dump
      --qmp HOST:PORT   with --qemu: QEMU's QMP, to follow the guest's run state
      --guest-ram FILE  with --qemu: the guest's shared RAM file (memory-backend-file, share=on)
      --read-only       with --qemu: refuse memory and register writes
  -j FILE               process JSON of the original tool (one process)
      --version         print the version
  -h, --help            this help

Dump formats: ELF, compressed kdump (zlib, LZO, snappy, zstd), flattened (makedumpfile -F and
QEMU's kdump-* output), and split sets (give every file of a makedumpfile --split set).
`;

/** node:util's parseArgs message, on one line (its "ambiguous" one spans three). */
function usageText(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  const ambiguous = /^Option '(-[-\w]+)' argument is ambiguous/.exec(text);
  if (ambiguous) {
    const name = ambiguous[1];
    // A long option takes `--name=VALUE`; a short one its value glued on (`-c-x`: "-x").
    const form = name.startsWith("--") ? `${name}=VALUE` : `${name}VALUE`;
    return `${name}: its value starts with "-"; write ${form} if that is meant`;
  }
  return text.split("\n")[0];
}

/** Parse argv (without the program name). Throws UsageError. */
export function parseCli(argv: string[]): CliOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        port: { type: "string", short: "p" },
        host: { type: "string", short: "a" },
        stdio: { type: "boolean" },
        vmlinux: { type: "string", short: "v" },
        "zero-excluded": { type: "boolean" },
        "cache-mb": { type: "string" },
        debug: { type: "boolean", short: "d" },
        once: { type: "boolean" },
        file: { type: "string", short: "f" },
        tasks: { type: "boolean" },
        pid: { type: "string" },
        exe: { type: "string" },
        command: { type: "string", short: "c" },
        json: { type: "boolean" },
        k: { type: "string", short: "k" },
        j: { type: "string", short: "j" },
        version: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        qemu: { type: "string" },
        qmp: { type: "string" },
        "guest-ram": { type: "string" },
        "read-only": { type: "boolean" },
      },
    });
  } catch (e) {
    throw new UsageError(usageText(e));
  }
  const v = parsed.values;
  const files = [...(v.file ? [v.file] : []), ...parsed.positionals];
  // Decimal digits only: Number() would take "" (an unset shell variable) as 0, and "0x64".
  const port = v.port === undefined ? 1234 : /^\d{1,5}$/.test(v.port) ? Number(v.port) : NaN;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`--port: "${v.port}" is not a port number`);
  }
  const cacheMb = v["cache-mb"] === undefined ? DEFAULT_CACHE_MB : Number(v["cache-mb"]);
  if (!Number.isFinite(cacheMb) || cacheMb < 1 || cacheMb > 65536) {
    throw new UsageError(`--cache-mb: "${v["cache-mb"]}" is not a size in MiB from 1 to 65536`);
  }
  const out: CliOptions = {
    files,
    port,
    host: v.host ?? "127.0.0.1",
    stdio: v.stdio ?? false,
    vmlinux: v.vmlinux,
    zeroExcluded: v["zero-excluded"] ?? false,
    cacheMb,
    debug: v.debug ?? false,
    once: v.once ?? false,
    tasksJson: v.k,
    processJson: v.j,
    tasks: v.tasks ?? false,
    pid: v.pid === undefined ? undefined : Number(v.pid),
    exe: v.exe,
    commands: v.command,
    json: v.json ?? false,
    version: v.version ?? false,
    help: v.help ?? false,
    qemu: v.qemu,
    qmp: v.qmp,
    guestRam: v["guest-ram"],
    readOnly: v["read-only"] ?? false,
  };
  if (out.qemu !== undefined) {
    if (parseHostPort(out.qemu) === undefined) {
      throw new UsageError(`--qemu: "${out.qemu}" is not HOST:PORT`);
    }
    if (out.qmp !== undefined && parseHostPort(out.qmp) === undefined) {
      throw new UsageError(`--qmp: "${out.qmp}" is not HOST:PORT`);
    }
    if (files.length > 0) throw new UsageError("--qemu serves a live guest: give no dump file");
    if (out.pid !== undefined || out.tasksJson || out.processJson) {
      throw new UsageError("--qemu goes with kernel mode or --tasks");
    }
    return out;
  }
  if (out.qmp || out.guestRam || out.readOnly) {
    throw new UsageError("--qmp, --guest-ram and --read-only go with --qemu");
  }
  // Decimal digits only, as for --port.
  if (v.pid !== undefined && !/^\d{1,10}$/.test(v.pid)) {
    throw new UsageError(`--pid: "${v.pid}" is not a process id`);
  }
  const modes = [out.tasks, out.pid !== undefined, out.tasksJson, out.processJson].filter((m) => m);
  if (modes.length > 1) throw new UsageError("choose one of --tasks, --pid, -k and -j");
  if (out.exe && out.pid === undefined) throw new UsageError("--exe goes with --pid");
  if (!out.help && !out.version && files.length === 0) {
    throw new UsageError("no dump file given (kdump-gdbserver --help for usage)");
  }
  return out;
}

/** `HOST:PORT` (or `:PORT`, or a bare port: 127.0.0.1), or undefined. */
export function parseHostPort(text: string): { host: string; port: number } | undefined {
  const m = text.match(/^(?:(.*):)?(\d{1,5})$/);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1] || "127.0.0.1", port };
}

/** True for addresses that stay on this machine. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}
