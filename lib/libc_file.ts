/**
 * A file read with the C library's `pread`, through Deno's FFI: one call per read, where Deno's
 * `FsFile` needs a seek and a read (two operations, about twice the time for a 4 KiB page). The
 * live target reads its guest's RAM file this way, a few dozen pages at every stop.
 *
 * Needs `--allow-ffi` (granted by `-A`) and Linux's C library; {@link PreadFile.open} returns
 * undefined without them, and the caller reads through Deno instead.
 *
 * @module
 */

import { errnoOf, lazyLibc } from "./libc.ts";

const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
const EINTR = 4;

const SYMBOLS = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
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
