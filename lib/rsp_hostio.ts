/**
 * gdb's host I/O (`vFile:*` packets) and shared library list (`qXfer:libraries-svr4:read`),
 * limited to files the target made in memory ({@link Target.libraries}): gdb fetches such a
 * "library" from the server and reads its unwind tables. No file on disk is ever opened here.
 *
 * Offering `vFile` changes one thing in gdb: with its default sysroot `target:` it then fetches
 * files named by the server through the server. The exec file (the vmlinux, hundreds of MB) must
 * stay on gdb's own disk, so {@link execFileForGdb} names it by a relative path, which gdb opens
 * locally whatever its sysroot.
 *
 * @module
 */

import type { Target } from "./target.ts";

/** gdb's File-I/O errno values. */
const ENOENT = 2;
const EBADF = 9;
const EACCES = 13;
const EINVAL = 22;
/**
 * Most bytes one pread answers: escaping can double them, and that stays under the packet size
 * the server offers (lib/rsp_session.ts). gdb reads a whole generated executable (megabytes) this
 * way, but at scattered offsets with a cache of one chunk, so a larger chunk costs more bytes than
 * round trips it saves (1 MiB: 13.5 MB of replies for gdb's connect instead of 9.4 MB, and 20-22 s
 * instead of 15-17 s over a pipe whose stderr stays open).
 */
const MAX_PREAD = 0xf000;

/** A vFile reply: its text, and binary data to follow it (pread, fstat). */
export interface HostIoReply {
  text: string;
  data?: Uint8Array;
}

function xmlAttr(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/"/g, "&quot;");
}

/** The made executable, when the target has one and the user no file of their own. */
export function generatedExec(target: Target): string | undefined {
  if (target.execFile?.()) return undefined;
  return target.libraries?.()?.find((l) => l.exec)?.name;
}

/** The library list gdb's svr4 support reads: every library loaded at offset 0. */
export function librariesSvr4Xml(target: Target): Uint8Array | undefined {
  const libs = target.libraries?.()?.filter((l) => !l.exec);
  if (!libs?.length) return undefined;
  const items = libs.map((l, i) =>
    `<library name="${xmlAttr(l.name)}" lm="0x${
      (i + 1).toString(16)
    }" l_addr="0x0" l_ld="0x0" lmid="0x0"/>`
  );
  return new TextEncoder().encode(
    `<library-list-svr4 version="1.0">${items.join("")}</library-list-svr4>`,
  );
}

/**
 * The vmlinux path to give gdb through qXfer:exec-file:read when vFile is offered: the absolute
 * path behind enough `..` that it resolves to itself from any working directory, so gdb opens it
 * from its own disk (an absolute path would be fetched through the server, megabyte by megabyte).
 */
export function execFileForGdb(path: string, target: Target): string {
  if (!target.libraries?.()?.length || !path.startsWith("/")) return path;
  return "../".repeat(64) + path.replace(/^\/+/, "");
}

/** The open files of one connection. */
export class HostIo {
  #target: Target;
  #open = new Map<number, Uint8Array>();
  #nextFd = 1;

  constructor(target: Target) {
    this.#target = target;
  }

  /** Whether the target has anything to serve (then `vFile` is answered at all). */
  get enabled(): boolean {
    return (this.#target.libraries?.()?.length ?? 0) > 0;
  }

  /** Answer one `vFile:OP:ARGS` packet; undefined for operations not offered (empty reply). */
  handle(packet: string): HostIoReply | undefined {
    if (!this.enabled) return undefined;
    const m = /^vFile:([a-z]+):?(.*)$/.exec(packet);
    if (!m) return undefined;
    const args = m[2].split(",");
    const fail = (errno: number) => ({ text: `F-1,${errno.toString(16)}` });
    switch (m[1]) {
      case "setfs":
        return { text: "F0" };
      case "open": {
        const name = hexText(args[0] ?? "");
        const flags = parseInt(args[1] ?? "", 16);
        if (name === undefined || Number.isNaN(flags)) return fail(EINVAL);
        // gdb strips its `target:` prefix before asking.
        const lib = this.#target.libraries?.()?.find((l) =>
          l.name === name || l.name === `target:${name}`
        );
        if (!lib) return fail(ENOENT);
        if ((flags & 3) !== 0) return fail(EACCES); // read-only
        if (this.#open.size >= 16) return fail(EINVAL);
        const fd = this.#nextFd++;
        this.#open.set(fd, lib.data);
        return { text: `F${fd.toString(16)}` };
      }
      case "pread": {
        const data = this.#open.get(parseInt(args[0] ?? "", 16));
        const count = parseInt(args[1] ?? "", 16);
        const offset = parseInt(args[2] ?? "", 16);
        if (!data) return fail(EBADF);
        if (!(count >= 0) || !(offset >= 0)) return fail(EINVAL);
        const chunk = data.subarray(
          Math.min(offset, data.length),
          Math.min(data.length, offset + Math.min(count, MAX_PREAD)),
        );
        return { text: `F${chunk.length.toString(16)};`, data: chunk };
      }
      case "close": {
        const fd = parseInt(args[0] ?? "", 16);
        if (!this.#open.delete(fd)) return fail(EBADF);
        return { text: "F0" };
      }
      case "fstat": {
        const data = this.#open.get(parseInt(args[0] ?? "", 16));
        if (!data) return fail(EBADF);
        const st = fioStat(data.length);
        return { text: `F${st.length.toString(16)};`, data: st };
      }
      case "readlink":
      case "unlink":
      case "pwrite":
        return fail(ENOENT);
    }
    return undefined;
  }
}

function hexText(hex: string): string | undefined {
  if (hex.length % 2 || !/^[0-9a-fA-F]*$/.test(hex)) return undefined;
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return new TextDecoder().decode(bytes);
}

/** gdb's `struct fio_stat` (big-endian) of a read-only regular file. */
function fioStat(size: number): Uint8Array {
  const b = new Uint8Array(64);
  const v = new DataView(b.buffer);
  v.setUint32(8, 0o100444); // st_mode: regular, r--r--r--
  v.setUint32(12, 1); // st_nlink
  v.setBigUint64(28, BigInt(size)); // st_size
  v.setBigUint64(36, 4096n); // st_blksize
  v.setBigUint64(44, BigInt(Math.ceil(size / 512))); // st_blocks
  return b;
}
