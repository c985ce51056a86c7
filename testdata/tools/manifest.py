#!/usr/bin/python3
"""Write manifest.json for one fixture boot: one record per dump file present in the directory.

Usage: manifest.py BOOT_DIR [--defect=FILE=TEXT]...

Records: {"file", "format": "elf"|"kdump"|"flattened", "codec": "none"|"zlib"|"lzo"|"snappy"|
"zstd", "dump_level", "user_pages" (false when the dump level excludes user pages, so process
memory is not in the file), "source": "qemu"|"makedumpfile"|"kdump_recodec.py", "made_by"
(how the file was made), "split_part" and "split_parts" (1-based part number and part count of
a --split set, else null), "size" (bytes), "defect" (null, or why the file is known not to hold
everything its dump level promises)}. Files are listed in the order of the table below.
"""

import json
import os
import sys

MAKEDUMPFILE_INPUT = "dump.elf (program headers moved by elf_phdrs_first.py)"

# file: (format, codec, dump_level, source, made_by, split_part, split_parts)
VARIANTS = {
    "dump.elf": ("elf", "none", 0, "qemu",
                 "QMP dump-guest-memory paging=false format=elf", None, None),
    "dump.qemu-kdump-zlib.flat": ("flattened", "zlib", 0, "qemu",
                                  "QMP dump-guest-memory paging=false format=kdump-zlib",
                                  None, None),
    "dump.qemu-kdump-zlib-reassembled.kdump": ("kdump", "zlib", 0, "qemu",
                                              "makedumpfile -R < dump.qemu-kdump-zlib.flat",
                                              None, None),
    "dump.zlib-d31.kdump": ("kdump", "zlib", 31, "makedumpfile",
                            f"makedumpfile -c -d 31 {MAKEDUMPFILE_INPUT}", None, None),
    "dump.lzo-d31.kdump": ("kdump", "lzo", 31, "makedumpfile",
                           f"makedumpfile -l -d 31 {MAKEDUMPFILE_INPUT}", None, None),
    "dump.zlib-d1.kdump": ("kdump", "zlib", 1, "makedumpfile",
                           f"makedumpfile -c -d 1 {MAKEDUMPFILE_INPUT}", None, None),
    "dump.zlib-d0.kdump": ("kdump", "zlib", 0, "makedumpfile",
                           f"makedumpfile -c -d 0 {MAKEDUMPFILE_INPUT}", None, None),
    "dump.elf-d31.elf": ("elf", "none", 31, "makedumpfile",
                         f"makedumpfile -E -d 31 {MAKEDUMPFILE_INPUT}", None, None),
    "dump.zlib-d31.flat": ("flattened", "zlib", 31, "makedumpfile",
                           f"makedumpfile -F -c -d 31 {MAKEDUMPFILE_INPUT}", None, None),
    "dump.zlib-d31-reassembled.kdump": ("kdump", "zlib", 31, "makedumpfile",
                                        "makedumpfile -R < dump.zlib-d31.flat", None, None),
    "dump.split-d31.1.kdump": ("kdump", "zlib", 31, "makedumpfile",
                               f"makedumpfile --split --splitblock-size 65536 -c -d 31 "
                               f"{MAKEDUMPFILE_INPUT}", 1, 2),
    "dump.split-d31.2.kdump": ("kdump", "zlib", 31, "makedumpfile",
                               f"makedumpfile --split --splitblock-size 65536 -c -d 31 "
                               f"{MAKEDUMPFILE_INPUT}", 2, 2),
    "dump.snappy-d31.kdump": ("kdump", "snappy", 31, "kdump_recodec.py",
                              "kdump_recodec.py snappy dump.zlib-d31.kdump", None, None),
    "dump.zstd-d31.kdump": ("kdump", "zstd", 31, "kdump_recodec.py",
                            "kdump_recodec.py zstd dump.zlib-d31.kdump", None, None),
}

DL_EXCLUDE_USER_DATA = 8


def main():
    if len(sys.argv) < 2 or any(not a.startswith("--defect=") for a in sys.argv[2:]):
        sys.exit(__doc__)
    boot = sys.argv[1]
    defects = dict(a[len("--defect="):].split("=", 1) for a in sys.argv[2:])
    records = []
    for name, (fmt, codec, level, source, made_by, part, parts) in VARIANTS.items():
        path = os.path.join(boot, name)
        if not os.path.exists(path):
            continue
        records.append({
            "file": name,
            "format": fmt,
            "codec": codec,
            "dump_level": level,
            "user_pages": not level & DL_EXCLUDE_USER_DATA,
            "source": source,
            "made_by": made_by,
            "split_part": part,
            "split_parts": parts,
            "size": os.path.getsize(path),
            "defect": defects.get(name),
        })
    out = os.path.join(boot, "manifest.json")
    with open(out + ".part", "w") as f:
        json.dump(records, f, indent=2)
        f.write("\n")
    os.rename(out + ".part", out)


if __name__ == "__main__":
    main()
