/**
 * Open a dump by path(s), whatever its format.
 *
 * @module
 */

import { type ByteSource, errorText, FileSource } from "./file_source.ts";
import { DumpError } from "./errors.ts";
import { isElf } from "./elf.ts";
import { ElfDumpReader } from "./dump_elf.ts";
import { isKdump, KdumpReader } from "./dump_kdump.ts";
import { FlattenedSource, isFlattened, type ProgressFn } from "./flattened.ts";
import { SplitDumpReader } from "./dump_split.ts";
import type { DumpReader } from "./dump.ts";

/** Options for opening dumps. */
export interface OpenOptions {
  /** Called while indexing large flattened files. */
  progress?: ProgressFn;
}

/**
 * Open a vmcore: ELF, compressed kdump, flattened (either inside), or several paths forming a
 * `makedumpfile --split` set. Throws `DumpError` with a one-line message naming the file.
 */
export function openDump(paths: string[], options: OpenOptions = {}): DumpReader {
  if (paths.length === 0) throw new Error("no dump file given");
  if (paths.length === 1) {
    const dump = openOne(paths[0], options);
    if (dump instanceof KdumpReader && dump.isSplit && dump.endPfn - dump.startPfn < dump.maxPfn) {
      dump.warnings.push(
        `one part of a makedumpfile --split set (pfns ${dump.startPfn}..${dump.endPfn} of ` +
          `${dump.maxPfn}): the other pages read as missing; give every part, in any order`,
      );
    }
    return dump;
  }
  const parts: KdumpReader[] = [];
  try {
    for (const p of paths) {
      const r = openOne(p, options);
      if (!(r instanceof KdumpReader)) {
        r.close();
        throw new DumpError(p, "split set", `is ${r.format}; only kdump files can be split`);
      }
      parts.push(r);
    }
    return new SplitDumpReader(parts);
  } catch (e) {
    for (const p of parts) p.close();
    throw e;
  }
}

function openOne(path: string, options: OpenOptions): DumpReader {
  const file = new FileSource(path);
  try {
    return openSource(file, options);
  } catch (e) {
    file.close();
    if (e instanceof DumpError) throw e;
    throw new DumpError(path, "read", errorText(e));
  }
}

/** Open a dump from any byte source (used for files and for tests with crafted bytes). */
export function openSource(src: ByteSource, options: OpenOptions = {}): DumpReader {
  const head = new Uint8Array(64);
  const n = src.readAt(head, 0);
  const first = head.subarray(0, n);
  if (isElf(first)) return new ElfDumpReader(src);
  if (isKdump(first)) return new KdumpReader(src);
  if (isFlattened(first)) {
    const flat = new FlattenedSource(src, options.progress);
    const inner = new Uint8Array(64);
    const m = flat.readAt(inner, 0);
    const innerHead = inner.subarray(0, m);
    if (isKdump(innerHead)) return new KdumpReader(flat, "flattened ");
    if (isElf(innerHead)) return new ElfDumpReader(flat, "flattened ELF");
    throw new DumpError(src.name, "flattened dump", "holds neither a kdump nor an ELF dump");
  }
  if (n === 0) throw new DumpError(src.name, "header", "the file is empty");
  throw new DumpError(
    src.name,
    "header",
    `not a vmcore (no ELF, kdump or flattened signature; starts with ${describe(first)})`,
  );
}

function describe(head: Uint8Array): string {
  const printable = Array.from(head.subarray(0, 8), (b) => b >= 32 && b < 127 ? b : 46);
  const text = String.fromCharCode(...printable);
  const hex = Array.from(head.subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join(" ");
  return `"${text}" = ${hex}`;
}
