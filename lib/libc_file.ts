/**
 * Files read through the C library, by Deno's FFI.
 *
 * - {@link PreadFile}: a file read with `pread`, one call per read, where Deno's `FsFile` needs a
 *   seek and a read (two operations, about twice the time for a 4 KiB page). The live target
 *   reads its guest's RAM file this way, a few dozen pages at every stop.
 * - {@link PolledInput}: an inherited descriptor (standard input) read when `poll` says it is
 *   ready, with a wait that polls without sleeping for a short while (as lib/libc_socket.ts's
 *   sockets): gdb's pipe (`target remote | …`) for a live guest.
 * - {@link endStandardError}: the end of standard error for gdb's pipe mode, which otherwise
 *   costs gdb a system call for every byte it receives from the server.
 *
 * Needs `--allow-ffi` (granted by `-A`) and Linux's C library; {@link PreadFile.open} and
 * {@link PolledInput.open} return undefined without them, and the caller reads through Deno;
 * {@link endStandardError} returns false.
 *
 * @module
 */

import { EINTR, errnoOf, lazyLibc, pollSleeping, pollWithoutSleeping } from "./libc.ts";

const O_RDONLY = 0;
const O_WRONLY = 1;
const SHUT_WR = 1;
const STDERR = 2;
const O_CLOEXEC = 0o2000000;
const EAGAIN = 11;
const POLLIN = 1;

const SYMBOLS = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  dup2: { parameters: ["i32", "i32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  // The same poll on Deno's blocking thread pool: a long wait must not block the event loop.
  pollAsync: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  __errno_location: { parameters: [], result: "pointer" },
  sched_yield: { parameters: [], result: "i32" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
const load: () => Libc | undefined = lazyLibc(SYMBOLS);

/** A read-only file descriptor read by offset. */
export class PreadFile {
  #c: Libc;
  #fd: number;

  private constructor(c: Libc, fd: number) {
    this.#c = c;
    this.#fd = fd;
  }

  /** Open `path` read-only; undefined when FFI is not granted or the open fails. */
  static open(path: string): PreadFile | undefined {
    const c = load();
    if (!c) return undefined;
    const fd = c.open(new TextEncoder().encode(path + "\0"), O_RDONLY | O_CLOEXEC);
    return fd < 0 ? undefined : new PreadFile(c, fd);
  }

  /**
   * Fill `out` from byte `offset`. Returns the bytes read: fewer than `out.length` at the end
   * of the file or on an error.
   */
  read(offset: number, out: Uint8Array): number {
    let done = 0;
    while (done < out.length) {
      const part = done === 0 ? out : out.subarray(done);
      const n = Number(this.#c.pread(this.#fd, part, BigInt(part.length), BigInt(offset + done)));
      if (n > 0) {
        done += n;
        continue;
      }
      if (n < 0 && errnoOf(this.#c.__errno_location) === EINTR) continue;
      break;
    }
    return done;
  }

  /** Close the descriptor (idempotent). */
  close(): void {
    if (this.#fd < 0) return;
    this.#c.close(this.#fd);
    this.#fd = -1;
  }
}

/** An inherited, already open descriptor read when it has input. */
export class PolledInput {
  #c: Libc;
  #fd: number;
  #pollfd = new Uint8Array(8);

  private constructor(c: Libc, fd: number) {
    this.#c = c;
    this.#fd = fd;
    const view = new DataView(this.#pollfd.buffer);
    view.setInt32(0, fd, true);
    view.setInt16(4, POLLIN, true);
  }

  /** Descriptor `fd` (standard input: 0); undefined when FFI is not granted. */
  static open(fd: number): PolledInput | undefined {
    const c = load();
    return c ? new PolledInput(c, fd) : undefined;
  }

  /** Poll, without sleeping, for at most `spinMs`: whether input (or its end) is there. */
  spinUntilReadable(spinMs: number): boolean {
    return pollWithoutSleeping(this.#c, this.#pollfd, spinMs);
  }

  /**
   * Read what is there into `buffer` without waiting: the byte count, null at the end of the
   * input (or on an error), undefined when nothing is there yet. `ready`: a poll just said
   * input is there (the read cannot block), so none is made first.
   */
  tryRead(buffer: Uint8Array, ready = false): number | null | undefined {
    for (;;) {
      if (!ready && this.#c.poll(this.#pollfd, 1n, 0) === 0) return undefined;
      ready = false;
      const n = Number(this.#c.read(this.#fd, buffer, BigInt(buffer.length)));
      if (n > 0) return n;
      if (n === 0) return null;
      const code = errnoOf(this.#c.__errno_location);
      if (code === EINTR) continue;
      return code === EAGAIN ? undefined : null;
    }
  }

  /**
   * Sleep in `poll` on this thread for at most `timeoutMs`: whether input (or its end) came.
   * The event loop waits meanwhile.
   */
  sleepUntilReadable(timeoutMs: number): boolean {
    return pollSleeping(this.#c, this.#pollfd, timeoutMs);
  }

  /** Resolve once input (or its end) is there, or after `timeoutMs`, without blocking. */
  async readable(timeoutMs: number): Promise<void> {
    const pollfd = this.#pollfd.slice();
    await this.#c.pollAsync(pollfd, 1n, timeoutMs);
  }
}

/**
 * Tell the reader of standard error that nothing more comes, when standard error is a socket
 * (gdb's `target remote | …` runs the server with its stderr on a socket pair), and send later
 * writes to `/dev/null`. Returns whether it did: false when standard error is something else (a
 * terminal, a file, a pipe) or without FFI, and then nothing changes.
 *
 * Why: while that socket is open, gdb reads it after every single byte it receives from the
 * server (one system call each, to show the server's messages as they come): a 4 MiB memory
 * read took gdb 6.5 s that way instead of 0.12 s. The socket is shut down rather than only
 * closed so that gdb sees its end even if another process (the shell that ran us) holds it too.
 */
export function endStandardError(): boolean {
  const c = load();
  if (!c) return false;
  // Never the protocol's own socket (`target remote | … 2>&1`): shutting that down ends the
  // session.
  const err = openFileOf(c, STDERR);
  if (err === undefined || err === openFileOf(c, 0) || err === openFileOf(c, 1)) return false;
  if (c.shutdown(STDERR, SHUT_WR) !== 0) return false;
  const nowhere = c.open(new TextEncoder().encode("/dev/null\0"), O_WRONLY | O_CLOEXEC);
  if (nowhere >= 0) {
    c.dup2(nowhere, STDERR);
    c.close(nowhere);
  }
  return true;
}

/** What descriptor `fd` is open on, as /proc names it (`socket:[123]`); undefined if closed. */
function openFileOf(c: Libc, fd: number): string | undefined {
  const out = new Uint8Array(256);
  const n = Number(
    c.readlink(new TextEncoder().encode(`/proc/self/fd/${fd}\0`), out, BigInt(out.length)),
  );
  return n > 0 ? new TextDecoder().decode(out.subarray(0, n)) : undefined;
}
