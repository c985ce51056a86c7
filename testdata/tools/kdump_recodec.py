#!/usr/bin/python3
"""Rewrite a makedumpfile kdump (diskdump) file with its pages compressed by another codec.

Usage: kdump_recodec.py {snappy|zstd|zlib|none} IN.kdump OUT.kdump

Debian's makedumpfile is built without snappy and zstd, so the snappy and zstd fixtures are
made from the zlib one. The file layout (see makedumpfile's diskdump_mod.h):

  block 0                    disk_dump_header: "KDUMP   ", header_version, new_utsname,
                             timeval, status (codec flags), block_size, sub_hdr_size,
                             bitmap_blocks, max_mapnr, ... nr_cpus
  block 1                    kdump_sub_header (+ VMCOREINFO and ELF notes), sub_hdr_size blocks
  block 1 + sub_hdr_size     two bitmaps (present pfns, dumped pfns), bitmap_blocks blocks
  next block                 page_desc {i64 offset, u32 size, u32 flags, u64 page_flags}, one
                             per pfn set in the second bitmap
  after the descriptors      page data; several descriptors may share one copy (the zero page)
  after the page data        eraseinfo, if offset_eraseinfo is set

Everything before the descriptors is copied unchanged except the codec bits of the header's
status word. Pages are decompressed (zlib or stored) and compressed again; as makedumpfile does,
a page whose compressed form is not smaller than the page is stored raw (flags 0). Shared page
data stays shared. Only the standard library plus python3-snappy / python3-zstandard.
"""

import os
import struct
import sys
import zlib

# Codec flags, used both in disk_dump_header.status and page_desc.flags.
FLAG_ZLIB = 0x1
FLAG_LZO = 0x2
FLAG_SNAPPY = 0x4
FLAG_ZSTD = 0x20
CODEC_FLAGS = FLAG_ZLIB | FLAG_LZO | FLAG_SNAPPY | FLAG_ZSTD

# disk_dump_header field offsets on 64-bit targets (timeval is 8-byte aligned after utsname).
HDR_SIGNATURE = 0
HDR_STATUS = 424
HDR_BLOCK_SIZE = 428
HDR_SUB_HDR_SIZE = 432
HDR_BITMAP_BLOCKS = 436
# kdump_sub_header fields (64-bit): offset_eraseinfo / size_eraseinfo, max_mapnr_64.
SUB_OFFSET_ERASEINFO = 64
SUB_SIZE_ERASEINFO = 72

PAGE_DESC = struct.Struct("<qIIQ")


def make_codec(name):
    """(flag, compress function) for the output codec."""
    if name == "snappy":
        import snappy

        return FLAG_SNAPPY, snappy.compress
    if name == "zstd":
        import zstandard

        # makedumpfile uses ZSTD_compressCCtx at level 1.
        cctx = zstandard.ZstdCompressor(level=1)
        return FLAG_ZSTD, cctx.compress
    if name == "zlib":
        return FLAG_ZLIB, lambda data: zlib.compress(data, 1)
    if name == "none":
        return 0, None
    sys.exit(f"unknown codec {name}")


def decompress(data, flags, page_size):
    if flags & FLAG_ZLIB:
        return zlib.decompress(data)
    if flags & CODEC_FLAGS:
        sys.exit(f"input page with codec flags {flags:#x}: only zlib and raw input is supported")
    if len(data) != page_size:
        sys.exit(f"raw page of {len(data)} bytes")
    return data


def popcount_bytes(buf):
    return int.from_bytes(buf, "little").bit_count()


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    codec_name, in_path, out_path = sys.argv[1:]
    flag, compress = make_codec(codec_name)

    with open(in_path, "rb") as f:
        data = f.read()
    if data[:8] != b"KDUMP   ":
        sys.exit(f"{in_path}: not a kdump file (signature {data[:8]!r})")
    status, block_size, sub_hdr_size, bitmap_blocks = struct.unpack_from(
        "<IiiI", data, HDR_STATUS)
    page_size = block_size  # makedumpfile writes block_size = page size
    sub = block_size
    offset_eraseinfo, size_eraseinfo = struct.unpack_from("<qQ", data, sub + SUB_OFFSET_ERASEINFO)

    bitmap_off = block_size * (1 + sub_hdr_size)
    bitmap_len = block_size * bitmap_blocks
    dumped_bitmap = data[bitmap_off + bitmap_len // 2: bitmap_off + bitmap_len]
    n_pages = popcount_bytes(dumped_bitmap)
    desc_off = bitmap_off + bitmap_len
    data_off = desc_off + n_pages * PAGE_DESC.size

    first_data = min(PAGE_DESC.unpack_from(data, desc_off + i * 24)[0] for i in range(n_pages))
    if n_pages and first_data != data_off:
        sys.exit(f"{in_path}: page data starts at {first_data}, expected {data_off} "
                 "(a split part or an unknown layout?)")

    out = bytearray(data[:desc_off])
    struct.pack_into("<I", out, HDR_STATUS, (status & ~CODEC_FLAGS) | flag)
    descs = bytearray()
    page_data = bytearray()
    rewritten = {}  # old offset -> (new offset, size, flags)
    stats = {"compressed": 0, "raw": 0, "shared": 0}
    for i in range(n_pages):
        offset, size, pflags, page_flags = PAGE_DESC.unpack_from(data, desc_off + i * 24)
        if offset in rewritten:
            stats["shared"] += 1
        else:
            page = decompress(data[offset:offset + size], pflags, page_size)
            packed = compress(page) if compress else page
            if compress and len(packed) < page_size:
                new_flags = flag
                stats["compressed"] += 1
            else:
                packed, new_flags = page, 0
                stats["raw"] += 1
            rewritten[offset] = (data_off + len(page_data), len(packed), new_flags)
            page_data += packed
        new_offset, new_size, new_flags = rewritten[offset]
        descs += PAGE_DESC.pack(new_offset, new_size, new_flags, page_flags)
    out += descs
    out += page_data
    if offset_eraseinfo:
        new_erase = len(out)
        out += data[offset_eraseinfo:offset_eraseinfo + size_eraseinfo]
        struct.pack_into("<q", out, sub + SUB_OFFSET_ERASEINFO, new_erase)

    with open(out_path + ".part", "wb") as f:
        f.write(out)
    os.rename(out_path + ".part", out_path)
    print(f"    {out_path}: {n_pages} pages, {stats['compressed']} {codec_name}, "
          f"{stats['raw']} raw, {stats['shared']} sharing data; {len(out)} bytes")


if __name__ == "__main__":
    main()
