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

  constructor(file: string, structure: string, problem: string) {
    super(`${file}: ${structure}: ${problem}`);
    this.name = "DumpError";
    this.file = file;
    this.structure = structure;
  }
}
