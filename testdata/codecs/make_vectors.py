#!/usr/bin/python3
"""Writes the codec test vectors in this directory (run with Debian's python3).

Source pages come from a real kernel image (the text, rodata and data of a
vmlinux, given as the first argument) plus a few edge cases; each page is
compressed by the reference libraries as makedumpfile would call them:
zlib (compress2, level 1 and 6), liblzo2 lzo1x_1 (and lzo1x_999),
libsnappy and libzstd (with the frame content size). Only the compressed
bytes are stored; the manifest holds each page's size and SHA-256.

Vector file format (<name>.bin): repeated records of
  u32 little-endian compressed length, u32 little-endian page size, bytes.
"""

import hashlib
import json
import os
import random
import re
import struct
import sys

import lzo  # python3-lzo (liblzo2)
import snappy  # python3-snappy (libsnappy)
import zlib
import zstandard  # python3-zstandard (libzstd)

HERE = os.path.dirname(os.path.abspath(__file__))


def kernel_pages(vmlinux, size, count, seed):
    """Non-zero pages of a vmlinux's loaded image (file offsets 2 MiB..37 MiB)."""
    rng = random.Random(seed)
    with open(vmlinux, "rb") as f:
        out = []
        while len(out) < count:
            off = rng.randrange(0x200000, 0x2500000 - size) & ~(size - 1)
            f.seek(off)
            page = f.read(size)
            if page.count(0) == size:
                continue  # zero pages are covered once, below
            out.append(("kernel", page))
        return out


def edge_pages(size, seed):
    rng = random.Random(seed)
    zero = bytes(size)
    # Mostly zero with a few kernel-pointer-like words, like a sparse slab page.
    sparse = bytearray(size)
    for _ in range(size // 256):
        o = rng.randrange(0, size // 8) * 8
        sparse[o:o + 8] = struct.pack("<Q", 0xFFFF888000000000 + rng.randrange(1 << 30))
    noise = bytes(rng.randrange(256) for _ in range(size))  # incompressible
    runs = bytes((i // 300) & 0xFF for i in range(size))  # long repeats
    return [("zero", zero), ("sparse", bytes(sparse)), ("noise", noise), ("runs", runs)]


# name: (codec as decompressPage knows it, compressor)
CODECS = {
    "zlib": ("zlib", lambda p: zlib.compress(p, 1)),
    "zlib6": ("zlib", lambda p: zlib.compress(p, 6)),
    "lzo": ("lzo", lambda p: lzo.compress(p, 1, False)),  # no header: the bare LZO1X stream
    "lzo999": ("lzo", lambda p: lzo.compress(p, 9, False)),
    "snappy": ("snappy", snappy.compress),
    "zstd": ("zstd", zstandard.ZstdCompressor(level=1, write_content_size=True).compress),
}


def main():
    vmlinux = sys.argv[1]
    sets = {
        4096: kernel_pages(vmlinux, 4096, 20, 1) + edge_pages(4096, 2),
        8192: kernel_pages(vmlinux, 8192, 2, 3),
        16384: kernel_pages(vmlinux, 16384, 1, 4) + edge_pages(16384, 5)[:2],
        65536: edge_pages(65536, 7)[1:2],
    }
    # One 64 KiB page from the start of .data (mostly zero, so the files stay small).
    with open(vmlinux, "rb") as f:
        f.seek(0x1C00000)
        sets[65536].append(("kernel", f.read(65536)))
    manifest = {
        "format": "records of u32le compressed length, u32le page size, bytes",
        "pages": "[page size, compressed length, SHA-256 of the page, kind of page]",
        "files": {},
    }
    for name, (codec, comp) in CODECS.items():
        sizes = [4096] if name in ("zlib6", "lzo999") else sorted(sets)
        records, pages = bytearray(), []
        for size in sizes:
            for kind, page in sets[size]:
                c = comp(page)
                records += struct.pack("<II", len(c), size) + c
                pages.append([size, len(c), hashlib.sha256(page).hexdigest(), kind])
        with open(os.path.join(HERE, name + ".bin"), "wb") as f:
            f.write(records)
        manifest["files"][name + ".bin"] = {"codec": codec, "pages": pages}
    # One page per line, in the layout `deno fmt` keeps.
    text = json.dumps(manifest, indent=2)
    text = re.sub(r"\[\n\s+(\d+),\n\s+(\d+),\n\s+(\"\w+\"),\n\s+(\"\w+\")\n\s+\]", r"[\1, \2, \3, \4]", text)
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
