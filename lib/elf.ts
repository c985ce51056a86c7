/**
 * ELF64 little-endian structure parsing: file header, program headers, notes.
 *
 * Shared by the ELF vmcore reader and by vmlinux handling (build-id, first PT_LOAD).
 *
 * @module
 */

import { type ByteSource, readExact } from "./file_source.ts";
import { DumpError } from "./errors.ts";

/** ELF machine numbers we understand. */
export const EM_X86_64 = 62;
/** ELF machine number of aarch64. */
export const EM_AARCH64 = 183;
/** Program header type of a loadable segment. */
export const PT_LOAD = 1;
/** Program header type of a note segment. */
export const PT_NOTE = 4;

/** The parts of the ELF file header we use. */
export interface ElfHeader {
  /** `e_type`: 2 an executable (vmlinux), 4 a core file (vmcore). */
  type: number;
  /** `e_machine`: {@link EM_X86_64} or {@link EM_AARCH64} for the files we read. */
  machine: number;
  /** `e_entry`: the entry point address. */
  entry: bigint;
  /** `e_phoff`: file offset of the program header table. */
  phoff: number;
  /** `e_phentsize`: bytes per program header. */
  phentsize: number;
  /** `e_phnum`: program headers (0xffff: the count is in section header 0). */
  phnum: number;
  /** `e_shoff`: file offset of the section header table (0: none). */
  shoff: number;
  /** `e_shentsize`: bytes per section header. */
  shentsize: number;
  /** `e_shnum`: section headers. */
  shnum: number;
  /** `e_shstrndx`: index of the section holding the section names. */
  shstrndx: number;
}

/** One program header. Addresses stay bigint: kernel virtual addresses exceed 2^53. */
export interface ProgramHeader {
  /** `p_type`: {@link PT_LOAD}, {@link PT_NOTE}, … */
  type: number;
  /** `p_flags`: 1 executable, 2 writable, 4 readable. */
  flags: number;
  /** `p_offset`: file offset of the segment's bytes. */
  offset: number;
  /** `p_vaddr`: virtual address of the segment. */
  vaddr: bigint;
  /** `p_paddr`: physical address of the segment. */
  paddr: bigint;
  /** `p_filesz`: bytes of the segment in the file. */
  filesz: number;
  /** `p_memsz`: bytes of the segment in memory (past `filesz`, zeros). */
  memsz: number;
}

/** One ELF note. */
export interface ElfNote {
  /** Owner name without its NUL, e.g. `CORE`, `VMCOREINFO`, `QEMU`. */
  name: string;
  /** Note type, e.g. 1 (NT_PRSTATUS) for `CORE`. */
  type: number;
  /** The note's payload (a view of the segment's bytes). */
  desc: Uint8Array;
}

/** Upper bound on program headers we accept: a corrupt count must not allocate without bound. */
const MAX_PHNUM = 65536;

/** True when the bytes start with the ELF magic. */
export function isElf(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c &&
    head[3] === 0x46;
}

/** Parse the ELF64 LE file header; throws DumpError naming the file on anything else. */
export function readElfHeader(src: ByteSource): ElfHeader {
  const h = readExact(src, 0, 64, "ELF header");
  if (!isElf(h)) throw new DumpError(src.name, "ELF header", "bad magic");
  if (h[4] !== 2) throw new DumpError(src.name, "ELF header", "not a 64-bit ELF file");
  if (h[5] !== 1) throw new DumpError(src.name, "ELF header", "not little-endian");
  const v = new DataView(h.buffer);
  const hdr: ElfHeader = {
    type: v.getUint16(16, true),
    machine: v.getUint16(18, true),
    entry: v.getBigUint64(24, true),
    phoff: safeNumber(src, "ELF header", v.getBigUint64(32, true)),
    shoff: safeNumber(src, "ELF header", v.getBigUint64(40, true)),
    phentsize: v.getUint16(54, true),
    phnum: v.getUint16(56, true),
    shentsize: v.getUint16(58, true),
    shnum: v.getUint16(60, true),
    shstrndx: v.getUint16(62, true),
  };
  return hdr;
}

/** Read all program headers (handles PN_XNUM, where the real count sits in section 0). */
export function readProgramHeaders(src: ByteSource, hdr: ElfHeader): ProgramHeader[] {
  let count = hdr.phnum;
  if (count === 0xffff) {
    // PN_XNUM: the count did not fit; sh_info of section header 0 holds it.
    const sh0 = readExact(src, hdr.shoff, 64, "ELF section header 0");
    count = new DataView(sh0.buffer).getUint32(44, true);
  }
  if (count === 0) return [];
  if (hdr.phentsize < 56) {
    throw new DumpError(
      src.name,
      "ELF header",
      `program header size ${hdr.phentsize} is too small`,
    );
  }
  if (count > MAX_PHNUM) {
    throw new DumpError(src.name, "ELF header", `implausible program header count ${count}`);
  }
  const table = readExact(src, hdr.phoff, count * hdr.phentsize, "ELF program headers");
  const v = new DataView(table.buffer);
  const out: ProgramHeader[] = [];
  for (let i = 0; i < count; i++) {
    const o = i * hdr.phentsize;
    out.push({
      type: v.getUint32(o, true),
      flags: v.getUint32(o + 4, true),
      offset: safeNumber(src, "ELF program headers", v.getBigUint64(o + 8, true)),
      vaddr: v.getBigUint64(o + 16, true),
      paddr: v.getBigUint64(o + 24, true),
      filesz: safeNumber(src, "ELF program headers", v.getBigUint64(o + 32, true)),
      memsz: safeNumber(src, "ELF program headers", v.getBigUint64(o + 40, true)),
    });
  }
  return out;
}

/** Parse a buffer of concatenated ELF notes (4-byte aligned, as in core files). */
export function parseNotes(buf: Uint8Array, fileName: string): ElfNote[] {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const notes: ElfNote[] = [];
  let o = 0;
  while (o + 12 <= buf.length) {
    const namesz = v.getUint32(o, true);
    const descsz = v.getUint32(o + 4, true);
    const type = v.getUint32(o + 8, true);
    o += 12;
    if (namesz === 0 && descsz === 0 && type === 0) break; // zero padding after the last note
    const nameEnd = o + namesz;
    const descStart = align4(nameEnd);
    const descEnd = descStart + descsz;
    if (descEnd > buf.length) {
      throw new DumpError(fileName, "ELF notes", `note of type ${type} runs past its segment`);
    }
    let nameLen = namesz;
    while (nameLen > 0 && buf[o + nameLen - 1] === 0) nameLen--;
    const name = new TextDecoder().decode(buf.subarray(o, o + nameLen));
    notes.push({ name, type, desc: buf.subarray(descStart, descEnd) });
    o = align4(descEnd);
  }
  return notes;
}

/** Notes from every PT_NOTE segment, in file order. */
export function readNoteSegments(src: ByteSource, phdrs: ProgramHeader[]): ElfNote[] {
  const notes: ElfNote[] = [];
  for (const ph of phdrs) {
    if (ph.type !== PT_NOTE || ph.filesz === 0) continue;
    if (ph.filesz > 64 * 1024 * 1024) {
      throw new DumpError(src.name, "ELF notes", `implausible note segment size ${ph.filesz}`);
    }
    // A loop, not push(...): a segment may hold more notes than V8 passes as arguments.
    for (const n of parseNotes(readExact(src, ph.offset, ph.filesz, "ELF notes"), src.name)) {
      notes.push(n);
    }
  }
  return notes;
}

/** Round up to a multiple of 4 (not with `& ~3`: a damaged 32-bit size would wrap negative). */
function align4(n: number): number {
  return Math.ceil(n / 4) * 4;
}

/** Convert a file offset or size to a number, rejecting values no file can have. */
export function safeNumber(src: ByteSource, structure: string, v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new DumpError(src.name, structure, `implausible offset or size 0x${v.toString(16)}`);
  }
  return Number(v);
}

/** One section header. */
export interface SectionHeader {
  /** Name from the section name table, e.g. `.BTF`. */
  name: string;
  /** `sh_type`. */
  type: number;
  /** `sh_flags`. */
  flags: bigint;
  /** `sh_addr`: address of the section in memory (0 when not loaded). */
  addr: bigint;
  /** `sh_offset`: file offset of its bytes. */
  offset: number;
  /** `sh_size`: bytes. */
  size: number;
  /** `sh_link`: index of an associated section (a symbol table's string table). */
  link: number;
  /** `sh_entsize`: bytes per entry of a table section. */
  entsize: number;
}

/** Upper bound on section headers we accept. */
const MAX_SHNUM = 1 << 20;

/** Read section headers with their names (empty when the file has none). */
export function readSectionHeaders(src: ByteSource, hdr: ElfHeader): SectionHeader[] {
  if (hdr.shoff === 0 || hdr.shnum === 0) return [];
  if (hdr.shentsize < 64 || hdr.shnum > MAX_SHNUM) {
    throw new DumpError(src.name, "ELF section headers", "implausible section header table");
  }
  const table = readExact(src, hdr.shoff, hdr.shnum * hdr.shentsize, "ELF section headers");
  const v = new DataView(table.buffer);
  const raw = [];
  for (let i = 0; i < hdr.shnum; i++) {
    const o = i * hdr.shentsize;
    raw.push({
      nameOff: v.getUint32(o, true),
      type: v.getUint32(o + 4, true),
      flags: v.getBigUint64(o + 8, true),
      addr: v.getBigUint64(o + 16, true),
      offset: safeNumber(src, "ELF section headers", v.getBigUint64(o + 24, true)),
      size: safeNumber(src, "ELF section headers", v.getBigUint64(o + 32, true)),
      link: v.getUint32(o + 40, true),
      entsize: Number(v.getBigUint64(o + 56, true)),
    });
  }
  const strSec = raw[hdr.shstrndx];
  const strtab = strSec && strSec.size < 16 * 1024 * 1024
    ? readExact(src, strSec.offset, strSec.size, "ELF section names")
    : new Uint8Array();
  return raw.map((s) => ({
    name: cString(strtab, s.nameOff),
    type: s.type,
    flags: s.flags,
    addr: s.addr,
    offset: s.offset,
    size: s.size,
    link: s.link,
    entsize: s.entsize,
  }));
}

/** The NUL-terminated string at `offset` of a string table. */
export function cString(table: Uint8Array, offset: number): string {
  if (offset >= table.length) return "";
  let end = table.indexOf(0, offset);
  if (end < 0) end = table.length;
  return new TextDecoder().decode(table.subarray(offset, end));
}
