/**
 * Errors about input files: one line naming the file and what is wrong with it.
 *
 * @module
 */

/** A dump or symbol file that cannot be used, with the file name and the structure at fault. */
export class DumpError extends Error {
  /** The file the problem is in. */
  readonly file: string;
  /** Which structure was being read, e.g. "ELF program headers" or "kdump sub-header". */
  readonly structure: string;

  /**
   * An error whose message reads `FILE: STRUCTURE: PROBLEM`.
   * @param file the file the problem is in
   * @param structure which structure was being read
   * @param problem what is wrong with it (made one line)
   */
  constructor(file: string, structure: string, problem: string) {
    // One line, always: a problem may quote bytes of a damaged file.
    super(`${file}: ${structure}: ${oneLine(problem)}`);
    this.name = "DumpError";
    this.file = file;
    this.structure = structure;
  }
}

/** A fault of the link to a live guest (QEMU's gdbstub or QMP), with a one-line message. */
export class LiveError extends Error {
  /**
   * A live-link error.
   * @param message what went wrong (made one line)
   */
  constructor(message: string) {
    super(oneLine(message));
    this.name = "LiveError";
  }
}

/** Show control characters (newlines included) as escapes so a message stays on one line. */
function oneLine(text: string): string {
  return text.replace(
    // deno-lint-ignore no-control-regex
    /[\u0000-\u001f\u007f]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}
