/**
 * Byte sources that dump readers read from by position.
 *
 * A dump reader never assumes its bytes sit in one plain file: a flattened dump is an index of
 * records over a stream, and a split set is several files. Everything reads through `ByteSource`.
 *
 * @module
 */

import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { DumpError } from "./errors.ts";

/** Positional, read-only access to a sequence of bytes. */
export interface ByteSource {
  /** Name used in error messages (the user's path). */
  readonly name: string;
  /** Size in bytes. */
  readonly size: number;
  /**
   * Copy bytes at `position` into `into` (as many as fit and exist). Returns the count copied,
   * which is short only at the end of the source. Never reads past the end.
   */
  readAt(into: Uint8Array, position: number): number;
  /** Release the underlying file, if any. */
  close(): void;
  /**
   * Set when the source knows it holds less than it should (a flattened stream cut short): why,
   * in words for the user.
   */
  readonly cutShort?: string;
}

/**
 * A regular file opened read-only. Uses synchronous positional reads: on this path they cost
 * about a microsecond, where async reads cost tens, and mmap would turn a truncated file into a
 * fatal SIGBUS.
 */
export class FileSource implements ByteSource {
  readonly name: string;
  readonly size: number;
  #fd: number;

  /** Open `path` read-only; throws DumpError when it cannot be opened or is not a regular file. */
  constructor(path: string) {
    this.name = path;
    try {
      this.#fd = openSync(path, "r");
    } catch (e) {
      throw new DumpError(path, "open", openErrorText(e));
    }
    const st = fstatSync(this.#fd);
    if (!st.isFile()) {
      closeSync(this.#fd);
      throw new DumpError(path, "open", "not a regular file");
    }
    this.size = st.size;
  }

  readAt(into: Uint8Array, position: number): number {
    if (position >= this.size || into.length === 0) return 0;
    const want = Math.min(into.length, this.size - position);
    let done = 0;
    while (done < want) {
      const n = readSync(this.#fd, into, done, want - done, position + done);
      if (n <= 0) break; // the file shrank under us: report what we have
      done += n;
    }
    return done;
  }

  close(): void {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }
}

/** Bytes held in memory, for tests and crafted inputs. */
export class MemorySource implements ByteSource {
  readonly name: string;
  readonly size: number;
  #bytes: Uint8Array;

  /**
   * A source over bytes already in memory.
   * @param name what messages call these bytes
   * @param bytes the content (kept, not copied)
   */
  constructor(name: string, bytes: Uint8Array) {
    this.name = name;
    this.#bytes = bytes;
    this.size = bytes.length;
  }

  readAt(into: Uint8Array, position: number): number {
    if (position >= this.size) return 0;
    const n = Math.min(into.length, this.size - position);
    into.set(this.#bytes.subarray(position, position + n));
    return n;
  }

  close(): void {}
}

/**
 * Read exactly `length` bytes at `position`, or throw a DumpError naming `structure`.
 * For headers and tables, whose sizes are bounded by the caller before reading.
 */
export function readExact(
  source: ByteSource,
  position: number,
  length: number,
  structure: string,
): Uint8Array {
  if (position < 0 || position + length > source.size) {
    throw new DumpError(
      source.name,
      structure,
      `lies beyond the end of the file (offset ${position}, ${length} bytes, file is ${source.size})`,
    );
  }
  const buf = new Uint8Array(length);
  const n = source.readAt(buf, position);
  if (n !== length) throw new DumpError(source.name, structure, "short read");
  return buf;
}

/**
 * Node's file errors read `ENOENT: no such file or directory, open '/the/path'`; the path is
 * already at the head of a DumpError's line, so: `no such file or directory (ENOENT)`.
 */
function openErrorText(e: unknown): string {
  const text = errorText(e);
  const m = /^([A-Z]+): (.*), open '.*'$/s.exec(text);
  return m ? `${m[2]} (${m[1]})` : text;
}

/** Message text of any thrown value. */
export function errorText(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
