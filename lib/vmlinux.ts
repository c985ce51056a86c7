/**
 * The kernel's symbol file (vmlinux): identity (build-id, release), load layout, symbols and
 * the .BTF section. Only read, and only the parts asked for.
 *
 * @module
 */

import { FileSource } from "./file_source.ts";
import { DumpError } from "./errors.ts";
import {
  cString,
  type ElfHeader,
  type ProgramHeader,
  PT_LOAD,
  readElfHeader,
  readNoteSegments,
  readProgramHeaders,
  readSectionHeaders,
  type SectionHeader,
} from "./elf.ts";
import { readExact } from "./file_source.ts";

const NT_GNU_BUILD_ID = 3;
const SHT_SYMTAB = 2;
/** Lowest kernel-half address: every image segment lies above it. */
const KERNEL_HALF = 0xffff000000000000n;

/** A vmlinux file opened read-only. */
export class Vmlinux {
  /** Path the file was opened from. */
  readonly path: string;
  /** Its ELF file header. */
  readonly header: ElfHeader;
  /** Its PT_LOAD program headers (at least one). */
  readonly loads: ProgramHeader[];
  /** Its section headers, with their names. */
  readonly sections: SectionHeader[];
  /** GNU build-id as hex, when present. */
  readonly buildId?: string;
  #src: FileSource;
  #symbols?: Map<string, bigint>;

  /**
   * Open a vmlinux and read its headers and build-id.
   * @throws DumpError naming the file when it cannot be read or has no PT_LOAD segment
   */
  constructor(path: string) {
    this.path = path;
    this.#src = new FileSource(path);
    try {
      this.header = readElfHeader(this.#src);
      const phdrs = readProgramHeaders(this.#src, this.header);
      this.loads = phdrs.filter((p) => p.type === PT_LOAD);
      if (this.loads.length === 0) {
        throw new DumpError(path, "ELF program headers", "no PT_LOAD segment: not a vmlinux");
      }
      this.sections = readSectionHeaders(this.#src, this.header);
      const note = readNoteSegments(this.#src, phdrs).find((n) =>
        n.name === "GNU" && n.type === NT_GNU_BUILD_ID
      );
      if (note) {
        this.buildId = Array.from(note.desc, (b) => b.toString(16).padStart(2, "0")).join("");
      }
    } catch (e) {
      this.#src.close();
      throw e;
    }
  }

  /** Link-time address of the first PT_LOAD (qOffsets' TextSeg before relocation). */
  get firstLoadAddress(): bigint {
    return this.loads[0].vaddr;
  }

  /** Link-time extent of the kernel image [start, end) over all PT_LOADs. */
  get imageExtent(): { start: bigint; end: bigint } {
    let start = this.loads[0].vaddr;
    let end = 0n;
    // Per-CPU data is linked at small zero-based addresses on x86_64: not part of the image map.
    for (const l of this.loads.filter((l) => l.vaddr >= KERNEL_HALF)) {
      if (l.vaddr < start) start = l.vaddr;
      const e = l.vaddr + BigInt(l.memsz);
      if (e > end) end = e;
    }
    return { start, end };
  }

  /** Link-time address of a symbol from .symtab, or undefined. */
  symbol(name: string): bigint | undefined {
    return this.symbols().get(name);
  }

  /** All symbols of .symtab (loaded once, on first use). */
  symbols(): Map<string, bigint> {
    if (this.#symbols) return this.#symbols;
    const map = new Map<string, bigint>();
    const symtab = this.sections.find((s) => s.type === SHT_SYMTAB);
    if (symtab && symtab.entsize >= 24) {
      const strs = this.sections[symtab.link];
      const strtab = readExact(this.#src, strs.offset, strs.size, "ELF string table");
      const table = readExact(this.#src, symtab.offset, symtab.size, "ELF symbol table");
      const v = new DataView(table.buffer);
      // One decode of the whole table, then slices: decoding 100k names one by one costs
      // several times more, and this runs at every start with --vmlinux.
      const text = new TextDecoder("latin1").decode(strtab);
      for (let o = 0; o + 24 <= table.length; o += symtab.entsize) {
        if (v.getUint32(o + 8, true) === 0 && v.getUint32(o + 12, true) === 0) continue;
        const at = v.getUint32(o, true);
        if (at >= text.length) continue;
        let end = text.indexOf("\0", at);
        if (end < 0) end = text.length;
        const name = text.slice(at, end);
        if (name && !map.has(name)) map.set(name, v.getBigUint64(o + 8, true));
      }
    }
    this.#symbols = map;
    return map;
  }

  /** Bytes of a section by name (e.g. ".BTF"), or undefined. */
  sectionBytes(name: string): Uint8Array | undefined {
    const s = this.sections.find((x) => x.name === name);
    if (!s || s.size === 0) return undefined;
    return readExact(this.#src, s.offset, s.size, `ELF section ${name}`);
  }

  /** Read bytes at a link-time virtual address from the file's PT_LOADs. */
  readAtAddress(vaddr: bigint, length: number): Uint8Array | undefined {
    for (const l of this.loads) {
      if (vaddr >= l.vaddr && vaddr + BigInt(length) <= l.vaddr + BigInt(l.filesz)) {
        return readExact(this.#src, l.offset + Number(vaddr - l.vaddr), length, "vmlinux data");
      }
    }
    return undefined;
  }

  /** The `linux_banner` string as built, which contains the release. */
  banner(): string | undefined {
    const addr = this.symbol("linux_banner");
    if (addr === undefined) return undefined;
    const bytes = this.readAtAddress(addr, 256);
    if (!bytes) return undefined;
    return cString(bytes, 0);
  }

  /** Close the file. */
  close(): void {
    this.#src.close();
  }
}
