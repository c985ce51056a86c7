#!/usr/bin/python3
"""Check with libkdumpfile that two dump files hold the same pages.

Usage: check_same_pages.py [--subset] REFERENCE OTHER [OTHER...]

Every page present in REFERENCE (libkdumpfile's file.pagemap) is read by physical address from
REFERENCE and from each OTHER, and the bytes must be equal; the page maps must be equal too,
or with --subset, each OTHER must hold at least REFERENCE's pages (e.g. a full ELF dump as
OTHER for a filtered REFERENCE).
This is how the snappy and zstd files written by kdump_recodec.py are verified by a reader that
is not ours. Exits non-zero on the first difference.
"""

import sys

import kdumpfile


def present_pfns(dump):
    """All pfns whose bit is set in the dump's page map."""
    bitmap = dump.attr["file.pagemap"]
    max_pfn = dump.attr["max_pfn"]
    pfns = []
    pfn = 0
    while pfn < max_pfn:
        try:
            pfn = bitmap.find_set(pfn)
        except Exception:  # no set bit left
            break
        if pfn >= max_pfn:
            break
        pfns.append(pfn)
        pfn += 1
    return pfns


def main():
    args = sys.argv[1:]
    subset = args[:1] == ["--subset"]
    if subset:
        args = args[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    ref_path, others = args[0], args[1:]
    ref = kdumpfile.kdumpfile(ref_path)
    page_size = ref.attr["arch.page_size"]
    pfns = present_pfns(ref)
    if not pfns:
        sys.exit(f"{ref_path}: no pages")
    for path in others:
        other = kdumpfile.kdumpfile(path)
        other_pfns = present_pfns(other)
        if subset:
            missing = set(pfns) - set(other_pfns)
            if missing:
                sys.exit(f"{path}: lacks {len(missing)} pages of {ref_path}, "
                         f"e.g. pfn {min(missing):#x}")
        elif other_pfns != pfns:
            sys.exit(f"{path}: page map differs from {ref_path} "
                     f"({len(other_pfns)} vs {len(pfns)} pages)")
        for pfn in pfns:
            addr = pfn * page_size
            a = ref.read(kdumpfile.KDUMP_MACHPHYSADDR, addr, page_size)
            b = other.read(kdumpfile.KDUMP_MACHPHYSADDR, addr, page_size)
            if a != b:
                sys.exit(f"{path}: page at {addr:#x} differs from {ref_path}")
        print(f"    libkdumpfile: {path} ({other.attr['file.description']}): "
              f"all {len(pfns)} pages equal to {ref_path}")


if __name__ == "__main__":
    main()
