#!/usr/bin/python3
"""Copy an ELF64 core file so that its program headers directly follow the ELF header.

Usage: elf_phdrs_first.py IN.elf OUT.elf

makedumpfile 1.7.2 reads the program headers right after the 64-byte ELF header, whatever
e_phoff says. QEMU 7.2's dump-guest-memory puts its section header table there instead
(e_shoff = 64, e_phoff = 64 + e_shnum * 64) and also writes e_ehsize = 8. This tool writes a
copy with a standard header (e_ehsize 64, e_phoff 64, no section headers), the program headers at
offset 64, and every segment's bytes unchanged. Segments keep their file offsets when the new
header tables fit before the first one (the usual case: the moved table is smaller than the old
pair); otherwise all segment data moves up by the same amount and p_offset is adjusted.
Standard library only; segment data is copied with copy_file_range where possible.
"""

import os
import struct
import sys

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")


def copy_range(src, dst, src_off, dst_off, length):
    while length > 0:
        try:
            n = os.copy_file_range(src, dst, length, src_off, dst_off)
        except OSError:
            n = 0
        if n <= 0:  # fall back to read/write (e.g. across file systems without support)
            chunk = os.pread(src, min(length, 1 << 24), src_off)
            if not chunk:
                raise EOFError("input ends inside a segment")
            n = os.pwrite(dst, chunk, dst_off)
        src_off += n
        dst_off += n
        length -= n


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src_path, dst_path = sys.argv[1], sys.argv[2]
    with open(src_path, "rb") as f:
        head = f.read(EHDR.size)
        (ident, e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, _ehsize,
         e_phentsize, e_phnum, _shentsize, _shnum, _shstrndx) = EHDR.unpack(head)
        if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            sys.exit(f"{src_path}: not a little-endian ELF64 file")
        if e_phentsize != PHDR.size:
            sys.exit(f"{src_path}: unexpected e_phentsize {e_phentsize}")
        f.seek(e_phoff)
        phdrs = [list(PHDR.unpack(f.read(PHDR.size))) for _ in range(e_phnum)]

    tables_end = EHDR.size + e_phnum * PHDR.size
    with_data = [p for p in phdrs if p[5] > 0]  # p_filesz
    first = min(p[2] for p in with_data)  # p_offset
    end = max(p[2] + p[5] for p in with_data)
    shift = max(0, tables_end - first)
    for p in with_data:
        p[2] += shift

    new_head = EHDR.pack(ident, e_type, e_machine, e_version, e_entry, EHDR.size, 0, e_flags,
                         EHDR.size, PHDR.size, e_phnum, 0, 0, 0)
    new_head += b"".join(PHDR.pack(*p) for p in phdrs)
    new_head += b"\0" * (first + shift - len(new_head))
    tmp = dst_path + ".part"
    src = os.open(src_path, os.O_RDONLY)
    dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.pwrite(dst, new_head, 0)
        copy_range(src, dst, first, first + shift, end - first)
    finally:
        os.close(src)
        os.close(dst)
    os.rename(tmp, dst_path)


if __name__ == "__main__":
    main()
