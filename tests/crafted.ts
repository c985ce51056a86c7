/**
 * Small crafted dump files for edge cases no real dump shows (test helpers only: the formats
 * themselves are proven on real fixtures).
 */

import { deflateSync } from "node:zlib";
import { prstatusRegisterNames } from "../lib/cpu_notes.ts";

/** A note to put in a crafted dump. */
export interface CraftNote {
  name: string;
  type: number;
  desc: Uint8Array;
}

/** Encode ELF notes (4-byte aligned). */
export function encodeNotes(notes: CraftNote[]): Uint8Array {
  const parts: number[] = [];
  const push32 = (v: number) => parts.push(v & 255, (v >> 8) & 255, (v >> 16) & 255, v >>> 24);
  for (const n of notes) {
    const name = new TextEncoder().encode(n.name + "\0");
    push32(name.length);
    push32(n.desc.length);
    push32(n.type);
    parts.push(...name);
    while (parts.length % 4) parts.push(0);
    parts.push(...n.desc);
    while (parts.length % 4) parts.push(0);
  }
  return Uint8Array.from(parts);
}

/** A VMCOREINFO note. */
export function vmcoreinfoNote(text: string): CraftNote {
  return { name: "VMCOREINFO", type: 0, desc: new TextEncoder().encode(text) };
}

/** An x86_64 NT_PRSTATUS note with the given pid and register values by name. */
export function prstatusNote(pid: number, regs: Record<string, bigint>): CraftNote {
  const names = prstatusRegisterNames("x86_64");
  const desc = new Uint8Array(336);
  const v = new DataView(desc.buffer);
  v.setInt32(32, pid, true);
  names.forEach((n, i) => v.setBigUint64(112 + i * 8, regs[n] ?? 0n, true));
  return { name: "CORE", type: 1, desc };
}

/** One PT_LOAD of a crafted ELF. */
export interface CraftSegment {
  paddr: number;
  vaddr?: bigint;
  data: Uint8Array;
  /** Bytes of RAM beyond the data that are not in the file. */
  missing?: number;
}

/** Build an ELF64 x86_64 core file. */
export function craftElf(segments: CraftSegment[], notes: CraftNote[]): Uint8Array {
  const noteBytes = encodeNotes(notes);
  const phnum = segments.length + 1;
  const headers = 64 + 56 * phnum;
  let offset = headers + noteBytes.length;
  const size = offset + segments.reduce((a, s) => a + s.data.length, 0);
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 4, true); // ET_CORE
  v.setUint16(18, 62, true); // EM_X86_64
  v.setUint32(20, 1, true);
  v.setBigUint64(32, 64n, true); // phoff
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, phnum, true);
  const ph = (
    i: number,
    type: number,
    off: number,
    vaddr: bigint,
    paddr: number,
    fsz: number,
    msz: number,
  ) => {
    const o = 64 + i * 56;
    v.setUint32(o, type, true);
    v.setUint32(o + 4, 7, true);
    v.setBigUint64(o + 8, BigInt(off), true);
    v.setBigUint64(o + 16, vaddr, true);
    v.setBigUint64(o + 24, BigInt(paddr), true);
    v.setBigUint64(o + 32, BigInt(fsz), true);
    v.setBigUint64(o + 40, BigInt(msz), true);
  }; // deno-fmt-ignore
  ph(0, 4, headers, 0n, 0, noteBytes.length, noteBytes.length);
  out.set(noteBytes, headers);
  segments.forEach((s, i) => {
    ph(i + 1, 1, offset, s.vaddr ?? 0n, s.paddr, s.data.length, s.data.length + (s.missing ?? 0));
    out.set(s.data, offset);
    offset += s.data.length;
  });
  return out;
}

/** Options for a crafted compressed kdump. */
export interface CraftKdump {
  pageSize?: number;
  maxPfn: number;
  /** Dumped pages by pfn. */
  pages: Map<number, Uint8Array>;
  /** RAM pfns that are filtered out (in bitmap 1, not bitmap 2). */
  excluded?: number[];
  codec?: "zlib" | "raw";
  vmcoreinfo?: string;
  notes?: CraftNote[];
  incomplete?: boolean;
  headerVersion?: number;
  /** Override raw descriptor fields for a pfn (corruption cases). */
  badDescriptor?: { pfn: number; offset?: number; size?: number; flags?: number };
}

/** Build a compressed kdump file (64-bit layout). */
export function craftKdump(o: CraftKdump): Uint8Array {
  const bs = o.pageSize ?? 4096;
  const version = o.headerVersion ?? 6;
  const bitmapBytes = Math.ceil(Math.ceil(o.maxPfn / 8) / bs) * bs;
  const bitmapBlocks = (2 * bitmapBytes) / bs;
  const vmci = new TextEncoder().encode(o.vmcoreinfo ?? "");
  const notes = encodeNotes(o.notes ?? []);
  const subOffset = bs;
  const bitmapOffset = 2 * bs;
  const descOffset = bitmapOffset + 2 * bitmapBytes;
  const pfns = [...o.pages.keys()].sort((a, b) => a - b);
  let dataOffset = descOffset + pfns.length * 24;
  const vmciOffset = dataOffset;
  dataOffset += vmci.length;
  const notesOffset = dataOffset;
  dataOffset += notes.length;
  const blobs = pfns.map((pfn) => {
    const page = o.pages.get(pfn)!;
    if (o.codec === "raw") return { data: page, flags: 0 };
    const z = new Uint8Array(deflateSync(page));
    return z.length < bs ? { data: z, flags: 1 } : { data: page, flags: 0 };
  });
  const total = dataOffset + blobs.reduce((a, b) => a + b.data.length, 0);
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  out.set(new TextEncoder().encode("KDUMP   "));
  v.setInt32(8, version, true);
  out.set(new TextEncoder().encode("x86_64"), 12 + 4 * 65);
  out.set(new TextEncoder().encode("6.1.0-test"), 12 + 2 * 65);
  v.setUint32(424, (o.codec === "raw" ? 0 : 1) | (o.incomplete ? 8 : 0), true);
  v.setInt32(428, bs, true);
  v.setInt32(432, 1, true);
  v.setUint32(436, bitmapBlocks, true);
  v.setUint32(440, Math.min(o.maxPfn, 0xffffffff), true);
  v.setInt32(460, 1, true);
  const sv = (off: number, val: number) => v.setBigUint64(subOffset + off, BigInt(val), true);
  v.setInt32(subOffset + 8, 31, true);
  sv(32, vmci.length ? vmciOffset : 0);
  sv(40, vmci.length);
  sv(48, notes.length ? notesOffset : 0);
  sv(56, notes.length);
  sv(96, o.maxPfn);
  const setBit = (base: number, pfn: number) => out[base + (pfn >> 3)] |= 1 << (pfn & 7);
  for (const pfn of pfns) {
    setBit(bitmapOffset, pfn);
    setBit(bitmapOffset + bitmapBytes, pfn);
  }
  for (const pfn of o.excluded ?? []) setBit(bitmapOffset, pfn);
  out.set(vmci, vmciOffset);
  out.set(notes, notesOffset);
  let at = dataOffset;
  pfns.forEach((pfn, i) => {
    const d = descOffset + i * 24;
    const b = blobs[i];
    const bad = o.badDescriptor?.pfn === pfn ? o.badDescriptor : undefined;
    v.setBigInt64(d, BigInt(bad?.offset ?? at), true);
    v.setUint32(d + 8, bad?.size ?? b.data.length, true);
    v.setUint32(d + 12, bad?.flags ?? b.flags, true);
    out.set(b.data, at);
    at += b.data.length;
  });
  return out;
}

/** Wrap bytes in makedumpfile's flattened format, as records of `chunk` bytes. */
export function flatten(bytes: Uint8Array, chunk = 4096, rewriteHeaderLast = false): Uint8Array {
  const parts: Uint8Array[] = [];
  const header = new Uint8Array(4096);
  header.set(new TextEncoder().encode("makedumpfile"));
  const hv = new DataView(header.buffer);
  hv.setBigInt64(16, 1n, false);
  hv.setBigInt64(24, 1n, false);
  parts.push(header);
  const record = (offset: number, data: Uint8Array) => {
    const h = new Uint8Array(16);
    const v = new DataView(h.buffer);
    v.setBigInt64(0, BigInt(offset), false);
    v.setBigInt64(8, BigInt(data.length), false);
    parts.push(h, data);
  };
  for (let off = 0; off < bytes.length; off += chunk) {
    const piece = bytes.subarray(off, Math.min(bytes.length, off + chunk));
    // With rewriteHeaderLast the first record is garbage, overwritten by a later one.
    record(off, rewriteHeaderLast && off === 0 ? new Uint8Array(piece.length).fill(0xee) : piece);
  }
  if (rewriteHeaderLast) record(0, bytes.subarray(0, Math.min(chunk, bytes.length)));
  const end = new Uint8Array(16);
  new DataView(end.buffer).setBigInt64(0, -1n, false);
  parts.push(end);
  const total = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
