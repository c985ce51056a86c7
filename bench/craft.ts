/**
 * Large dumps for the scale benchmarks, crafted from the real 512 MiB fixtures so that their
 * headers, notes and pages are real:
 * - a compressed kdump that describes 64 GiB of RAM (max_mapnr 16 Mi pfns, bitmaps 4 MiB) with
 *   only the few thousand pages of the original present;
 * - a multi-GiB ELF vmcore: the original segments plus one PT_LOAD of several GiB whose bytes
 *   are a hole in a sparse file (they read as zeros and cost no disk).
 *
 *   deno run --allow-read --allow-write bench/craft.ts sparse-kdump IN OUT [GiB]
 *   deno run --allow-read --allow-write bench/craft.ts sparse-elf IN OUT [GiB]
 *
 * @module
 */

import { closeSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from "node:fs";

function readAt(fd: number, length: number, position: number): Uint8Array {
  const buf = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n <= 0) throw new Error(`short read at ${position + done}`);
    done += n;
  }
  return buf;
}

function writeAt(fd: number, data: Uint8Array, position: number): void {
  let done = 0;
  while (done < data.length) {
    done += writeSync(fd, data, done, data.length - done, position + done);
  }
}

/** Copy `length` bytes from `src` at `from` to `dst` at `to`, 16 MiB at a time. */
function copyRange(src: number, dst: number, from: number, to: number, length: number): void {
  const chunk = 16 * 1024 * 1024;
  for (let off = 0; off < length; off += chunk) {
    const n = Math.min(chunk, length - off);
    writeAt(dst, readAt(src, n, from + off), to + off);
  }
}

/**
 * Rewrite a (non-split, header version >= 6 or 32-bit max_mapnr) kdump file so that it describes
 * `gib` GiB of physical memory: larger bitmaps (the original bits, then zeros), the same page
 * descriptors with their data offsets moved by the growth, the same page data.
 */
export function craftSparseKdump(input: string, output: string, gib = 64): void {
  const src = openSync(input, "r");
  const dst = openSync(output, "w");
  try {
    const size = fstatSync(src).size;
    const head = readAt(src, 464, 0);
    const hv = new DataView(head.buffer);
    const version = hv.getInt32(8, true);
    const blockSize = hv.getInt32(428, true);
    const subHdrSize = hv.getInt32(432, true);
    const bitmapBlocks = hv.getUint32(436, true);
    const oldHalf = bitmapBlocks * blockSize / 2;
    const bitmapOffset = (1 + subHdrSize) * blockSize;
    const oldDescOffset = bitmapOffset + 2 * oldHalf;

    const maxMapnr = gib * 1024 * 1024 * 1024 / blockSize;
    const newHalf = Math.ceil(maxMapnr / 8 / blockSize) * blockSize;
    const newDescOffset = bitmapOffset + 2 * newHalf;
    const delta = newDescOffset - oldDescOffset;

    // Header and sub-header blocks (notes and VMCOREINFO live there: their offsets stay).
    const front = readAt(src, bitmapOffset, 0);
    const fv = new DataView(front.buffer);
    fv.setUint32(436, 2 * newHalf / blockSize, true);
    fv.setUint32(440, Math.min(maxMapnr, 0xffffffff), true);
    if (version >= 6) fv.setBigUint64(blockSize + 96, BigInt(maxMapnr), true);
    writeAt(dst, front, 0);

    // Bitmaps: the original bits at the start of each, the rest zero (a hole).
    const bitmap1 = readAt(src, oldHalf, bitmapOffset);
    const bitmap2 = readAt(src, oldHalf, bitmapOffset + oldHalf);
    writeAt(dst, bitmap1, bitmapOffset);
    writeAt(dst, bitmap2, bitmapOffset + newHalf);

    // Descriptors: one per bit of the second bitmap, data offsets moved by `delta`.
    let count = 0;
    for (const b of bitmap2) for (let x = b; x; x &= x - 1) count++;
    const descs = readAt(src, count * 24, oldDescOffset);
    const dv = new DataView(descs.buffer);
    for (let i = 0; i < count; i++) {
      const off = dv.getBigInt64(i * 24, true);
      if (off > 0n) dv.setBigInt64(i * 24, off + BigInt(delta), true);
    }
    writeAt(dst, descs, newDescOffset);

    // Page data, unchanged, after the descriptors.
    const dataStart = oldDescOffset + count * 24;
    copyRange(src, dst, dataStart, dataStart + delta, size - dataStart);
  } finally {
    closeSync(src);
    closeSync(dst);
  }
}

/**
 * Copy an ELF64 vmcore with one more PT_LOAD: `gib` GiB of physical memory from 4 GiB up, stored
 * as a hole at the end of the file. Program headers go right after the ELF header and every
 * segment's data moves up by the same amount.
 */
export function craftSparseElf(input: string, output: string, gib = 8): void {
  const src = openSync(input, "r");
  const dst = openSync(output, "w");
  try {
    const head = readAt(src, 64, 0);
    const hv = new DataView(head.buffer);
    const phoff = Number(hv.getBigUint64(32, true));
    const phentsize = hv.getUint16(54, true);
    const phnum = hv.getUint16(56, true);
    const phdrs = readAt(src, phnum * phentsize, phoff);
    const pv = new DataView(phdrs.buffer);

    const newPhnum = phnum + 1;
    const tableEnd = 64 + newPhnum * 56;
    let firstData = Infinity;
    let lastEnd = 0;
    for (let i = 0; i < phnum; i++) {
      const off = Number(pv.getBigUint64(i * phentsize + 8, true));
      const filesz = Number(pv.getBigUint64(i * phentsize + 32, true));
      if (filesz === 0) continue;
      firstData = Math.min(firstData, off);
      lastEnd = Math.max(lastEnd, off + filesz);
    }
    // Keep the data's alignment within a page: move it by a multiple of 4096.
    const shift = Math.max(0, Math.ceil((tableEnd - firstData) / 4096) * 4096);

    const table = new Uint8Array(newPhnum * 56);
    const tv = new DataView(table.buffer);
    for (let i = 0; i < phnum; i++) {
      table.set(phdrs.subarray(i * phentsize, i * phentsize + 56), i * 56);
      const off = tv.getBigUint64(i * 56 + 8, true);
      tv.setBigUint64(i * 56 + 8, off + BigInt(shift), true);
    }
    const extraBytes = gib * 1024 * 1024 * 1024;
    const extraOffset = Math.ceil((lastEnd + shift) / 4096) * 4096;
    const e = phnum * 56;
    tv.setUint32(e, 1, true); // PT_LOAD
    tv.setUint32(e + 4, 7, true); // RWX, as QEMU writes them
    tv.setBigUint64(e + 8, BigInt(extraOffset), true);
    tv.setBigUint64(e + 16, 0n, true); // vaddr
    tv.setBigUint64(e + 24, 0x100000000n, true); // paddr: 4 GiB
    tv.setBigUint64(e + 32, BigInt(extraBytes), true);
    tv.setBigUint64(e + 40, BigInt(extraBytes), true);
    tv.setBigUint64(e + 48, 0n, true);

    hv.setBigUint64(32, 64n, true); // e_phoff
    hv.setBigUint64(40, 0n, true); // e_shoff: no section headers
    hv.setUint16(52, 64, true); // e_ehsize
    hv.setUint16(54, 56, true);
    hv.setUint16(56, newPhnum, true);
    hv.setUint16(58, 64, true);
    hv.setUint16(60, 0, true);
    hv.setUint16(62, 0, true);
    writeAt(dst, head, 0);
    writeAt(dst, table, 64);
    copyRange(src, dst, firstData, firstData + shift, lastEnd - firstData);
    ftruncateSync(dst, extraOffset + extraBytes);
  } finally {
    closeSync(src);
    closeSync(dst);
  }
}

if (import.meta.main) {
  const [what, input, output, gib] = Deno.args;
  if (what === "sparse-kdump") craftSparseKdump(input, output, gib ? Number(gib) : undefined);
  else if (what === "sparse-elf") craftSparseElf(input, output, gib ? Number(gib) : undefined);
  else {
    console.error("usage: craft.ts sparse-kdump|sparse-elf IN OUT [GiB]");
    Deno.exit(2);
  }
}
