/**
 * A real QEMU guest for the live-target tests: the fixtures' Debian 6.1 cloud kernel (KASLR on)
 * with a busybox initramfs that stays up (testdata/guest/init-live: an httpd and a loop that
 * sleeps), its gdbstub and QMP on free loopback ports, its RAM shared in /dev/shm.
 *
 * Every guest is stopped by its pid and its RAM file deleted by {@link LiveGuest.stop}.
 */

import assert from "node:assert/strict";
import { FIXTURES } from "./fixtures.ts";
import { SERVER_WITH_FFI } from "./gdb_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Architectures a live guest can have. */
export type GuestArch = "x86_64" | "aarch64";
/** A fixtures kernel release a live guest boots (x86_64-6.1/, x86_64-6.12/, …). */
export type GuestRelease = "6.1" | "6.12";

/** The kernel the guests boot (the x86_64-6.1 or aarch64-6.1 fixture boot's). */
export function liveKernelDir(
  arch: GuestArch = "x86_64",
  release: GuestRelease = "6.1",
): string | undefined {
  const dir = FIXTURES;
  try {
    const vmlinuz = Deno.realPathSync(`${dir}/${arch}-${release}/vmlinuz`);
    return vmlinuz.slice(0, vmlinuz.lastIndexOf("/"));
  } catch {
    return undefined;
  }
}

/** Whether a live guest can be booted here (fixtures, QEMU and busybox present). */
export function liveGuestAvailable(
  arch: GuestArch = "x86_64",
  release: GuestRelease = "6.1",
): boolean {
  const k = liveKernelDir(arch, release);
  if (!k) return false;
  try {
    Deno.statSync(`${FIXTURES}/busybox/${arch === "x86_64" ? "amd64" : "arm64"}/busybox`);
    Deno.statSync(`${k}/vmlinux`);
    return new Deno.Command(`qemu-system-${arch}`, { args: ["--version"], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** A free TCP port on 127.0.0.1 (bound and released). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A running guest. */
export interface LiveGuest {
  gdbPort: number;
  qmpPort: number;
  ramPath: string;
  vmlinux: string;
  pid: number;
  /** The serial console so far. */
  console(): string;
  /** Pids the guest printed (`LIVE pid NAME PID`). */
  pids: Record<string, number>;
  /** Kill QEMU (SIGKILL) and wait for it. */
  kill(): Promise<void>;
  /** Kill QEMU if it runs, delete the RAM file and the temporary directory. */
  stop(): Promise<void>;
}

/** Build the live initramfs (into the guest's temporary directory). */
async function initramfs(tmp: string, arch: GuestArch, kdir: string): Promise<string> {
  const stage = `${tmp}/stage`;
  for (const d of ["bin", "dev", "proc", "sys", "tmp", "lib/modules"]) {
    await Deno.mkdir(`${stage}/${d}`, { recursive: true });
  }
  const debArch = arch === "x86_64" ? "amd64" : "arm64";
  await Deno.copyFile(`${FIXTURES}/busybox/${debArch}/busybox`, `${stage}/bin/busybox`);
  await Deno.chmod(`${stage}/bin/busybox`, 0o755);
  await Deno.symlink("busybox", `${stage}/bin/sh`);
  await Deno.copyFile(`${ROOT}testdata/guest/init-live`, `${stage}/init`);
  await Deno.chmod(`${stage}/init`, 0o755);
  for await (const e of Deno.readDir(`${kdir}/modules`)) {
    await Deno.copyFile(`${kdir}/modules/${e.name}`, `${stage}/lib/modules/${e.name}`);
  }
  const out = `${tmp}/initramfs-live.cpio.gz`;
  const r = await new Deno.Command("python3", {
    args: [`${ROOT}testdata/tools/mkinitramfs.py`, stage, out],
  }).output();
  if (!r.success) throw new Error(`mkinitramfs: ${new TextDecoder().decode(r.stderr)}`);
  return out;
}

/** Options of {@link bootGuest}. */
export interface BootOptions {
  /** The fixtures' Debian kernel to boot (default 6.1). */
  release?: GuestRelease;
  /** Wait for the shell's "LIVE ready" line (default true); false leaves the guest at -S. */
  waitReady?: boolean;
  /** Extra QEMU arguments. */
  extra?: string[];
  /** Add -device vmcoreinfo (default true). */
  vmcoreinfo?: boolean;
  /** Guest RAM in MiB (default 512). */
  memoryMb?: number;
  /** share=on for the RAM file (default true). */
  share?: boolean;
  /** Let the guest run (default true); false leaves it stopped at -S. */
  start?: boolean;
  /** Default x86_64. */
  arch?: GuestArch;
}

/**
 * Boot a guest with `-S`, let it run (QMP `cont`), and wait for its "LIVE ready" line.
 * The gdbstub is free for the test once this resolves (nothing stays connected to it).
 */
export async function bootGuest(options: BootOptions = {}): Promise<LiveGuest> {
  const tmp = await Deno.makeTempDir({ prefix: "kdump-live-" });
  const arch = options.arch ?? "x86_64";
  const kdir = liveKernelDir(arch, options.release)!;
  const initrd = await initramfs(tmp, arch, kdir);
  const gdbPort = freePort();
  const qmpPort = freePort();
  const mb = options.memoryMb ?? 512;
  const ramPath = `/dev/shm/kdump-live-${Deno.pid}-${gdbPort}`;
  const consolePath = `${tmp}/console.log`;
  const machine = arch === "x86_64"
    ? ["-machine", "memory-backend=ram"]
    : ["-machine", "virt,memory-backend=ram", "-cpu", "cortex-a57"];
  const args = [
    "-accel",
    "tcg",
    ...machine,
    "-m",
    String(mb),
    "-smp",
    "2",
    ...(options.vmcoreinfo === false ? [] : ["-device", "vmcoreinfo"]),
    "-display",
    "none",
    "-monitor",
    "none",
    "-no-reboot",
    "-gdb",
    `tcp:127.0.0.1:${gdbPort}`,
    "-S",
    "-qmp",
    `tcp:127.0.0.1:${qmpPort},server=on,wait=off`,
    "-object",
    `memory-backend-file,id=ram,size=${mb}M,mem-path=${ramPath},share=${
      options.share === false ? "off" : "on"
    }`,
    "-serial",
    `file:${consolePath}`,
    "-kernel",
    `${kdir}/vmlinuz`,
    "-initrd",
    initrd,
    "-append",
    `console=${arch === "x86_64" ? "ttyS0" : "ttyAMA0"} panic=0`,
    ...(options.extra ?? []),
  ];
  const child = new Deno.Command(`qemu-system-${arch}`, {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const stderr = child.stderr.pipeTo(new WritableStream());
  const readConsole = () => {
    try {
      return Deno.readTextFileSync(consolePath);
    } catch {
      return "";
    }
  };
  const guest: LiveGuest = {
    gdbPort,
    qmpPort,
    ramPath,
    vmlinux: `${kdir}/vmlinux`,
    pid: child.pid,
    console: readConsole,
    pids: {},
    async kill() {
      if (!exited) {
        try {
          Deno.kill(child.pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      await status;
      await stderr.catch(() => {});
    },
    async stop() {
      await guest.kill();
      await shm("rm", "-f", ramPath);
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    },
  };
  try {
    if (options.start === false) {
      await qmpCommand(qmpPort, "query-status"); // QEMU is up
    } else await qmpCommand(qmpPort, "cont");
    if (options.waitReady !== false && options.start !== false) {
      const deadline = Date.now() + 120_000;
      while (!/LIVE ready/.test(readConsole())) {
        if (exited) throw new Error(`QEMU exited early:\n${readConsole()}`);
        if (Date.now() > deadline) throw new Error(`guest not ready:\n${readConsole()}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      for (const m of readConsole().matchAll(/LIVE pid (\S+) (\d+)/g)) {
        guest.pids[m[1]] = Number(m[2]);
      }
    }
  } catch (e) {
    await guest.stop();
    throw e;
  }
  return guest;
}

/**
 * A file operation under /dev/shm through coreutils: Deno grants paths under /dev/ only with
 * --allow-all, and the test suite runs with named permissions (tests/run.sh).
 */
export async function shm(command: string, ...args: string[]): Promise<void> {
  const r = await new Deno.Command(command, { args, stdout: "null", stderr: "piped" }).output();
  if (!r.success) {
    throw new Error(`${command} ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
  }
}

/** Run one QMP command on a fresh connection; resolves with its `return` value. */
export async function qmpCommand(
  port: number,
  command: string,
  args?: Record<string, unknown>,
): Promise<unknown> {
  const deadline = Date.now() + 30_000;
  let conn: Deno.TcpConn | undefined;
  while (!conn) {
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port });
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    const enc = new TextEncoder();
    const dec = new TextDecoder();
    let text = "";
    const buf = new Uint8Array(65536);
    const nextMessage = async (): Promise<Record<string, unknown>> => {
      for (;;) {
        const nl = text.indexOf("\n");
        if (nl >= 0) {
          const line = text.slice(0, nl);
          text = text.slice(nl + 1);
          if (line.trim()) return JSON.parse(line);
          continue;
        }
        const n = await conn!.read(buf);
        if (n === null) throw new Error("QMP closed");
        text += dec.decode(buf.subarray(0, n));
      }
    };
    await nextMessage(); // greeting
    await conn.write(enc.encode(JSON.stringify({ execute: "qmp_capabilities" }) + "\n"));
    while (!("return" in await nextMessage()));
    await conn.write(enc.encode(JSON.stringify({ execute: command, arguments: args }) + "\n"));
    for (;;) {
      const m = await nextMessage();
      if ("return" in m) return m.return;
      if ("error" in m) throw new Error(`QMP ${command}: ${JSON.stringify(m.error)}`);
    }
  } finally {
    conn.close();
  }
}

/**
 * The server as the live mode runs it: Deno grants files under /dev/ (the RAM file in /dev/shm)
 * only with --allow-all (see README.md), which also grants the FFI of the blocking link.
 */
export const LIVE_SERVER: readonly string[] = SERVER_WITH_FFI;

/** The live server in pipe mode with stdin at EOF (as gdb closing): its exit code and stderr. */
export async function runLiveServer(args: string[]): Promise<{ code: number; err: string }> {
  const o = await new Deno.Command(LIVE_SERVER[0], {
    args: [...LIVE_SERVER.slice(1), "--stdio", ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  return { code: o.code, err: new TextDecoder().decode(o.stderr) };
}

/** A text connection to the server's kdb console: what it printed so far, and input. */
export async function openConsole(port: number) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let text = "";
  const reader = (async () => {
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) return;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
  })();
  return {
    conn,
    reader,
    text: () => text,
    send: (s: string) => conn.write(new TextEncoder().encode(s)),
    /** Wait (30 s at most) for `re` in what came after `from`; the text's length then. */
    async waitFor(re: RegExp, from: number): Promise<number> {
      const deadline = Date.now() + 30_000;
      while (!re.test(text.slice(from)) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.match(text.slice(from), re, text);
      return text.length;
    },
  };
}
