#!/usr/bin/python3
"""Pack a staging directory into a gzip-compressed initramfs (cpio "newc" format).

Usage: mkinitramfs.py STAGING_DIR OUT.cpio.gz

Every entry is owned by root with mtime 0, so the archive depends only on the files. The
archive also gets /dev/console (character device 5:1), which the kernel opens for init's
stdin/stdout before init can mount devtmpfs; writing the cpio here rather than with cpio(1)
avoids needing mknod (and root) for that node. Standard library only.
"""

import gzip
import os
import stat
import sys

NEWC_MAGIC = b"070701"


def newc_entry(name, mode, data=b"", nlink=1, rdev_major=0, rdev_minor=0, ino=0):
    """One cpio newc record: 110-byte ASCII header, NUL-terminated name, data, 4-byte padding."""
    name_bytes = name.encode() + b"\0"
    fields = [
        ino, mode, 0, 0, nlink, 0, len(data),  # ino mode uid gid nlink mtime filesize
        0, 0, rdev_major, rdev_minor,  # devmajor devminor rdevmajor rdevminor
        len(name_bytes), 0,  # namesize check
    ]
    header = NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)
    record = header + name_bytes
    record += b"\0" * (-len(record) % 4)
    record += data
    record += b"\0" * (-len(record) % 4)
    return record


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    staging, out = sys.argv[1], sys.argv[2]
    entries = []
    for root, dirs, files in os.walk(staging):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, staging)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                entries.append((rel, stat.S_IFLNK | 0o777, os.readlink(path).encode()))
            elif stat.S_ISDIR(st.st_mode):
                entries.append((rel, stat.S_IFDIR | 0o755, b""))
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    entries.append((rel, stat.S_IFREG | (st.st_mode & 0o777), f.read()))
            else:
                sys.exit(f"mkinitramfs: unsupported file type: {path}")
    names = {e[0] for e in entries}
    archive = bytearray()
    ino = 1
    if "dev" not in names:
        archive += newc_entry("dev", stat.S_IFDIR | 0o755, ino=ino)
        ino += 1
    for rel, mode, data in entries:
        archive += newc_entry(rel, mode, data, nlink=2 if stat.S_ISDIR(mode) else 1, ino=ino)
        ino += 1
    archive += newc_entry("dev/console", stat.S_IFCHR | 0o600, rdev_major=5, rdev_minor=1, ino=ino)
    archive += newc_entry("TRAILER!!!", 0)
    archive += b"\0" * (-len(archive) % 512)
    with open(out + ".part", "wb") as f:
        f.write(gzip.compress(bytes(archive), compresslevel=9, mtime=0))
    os.rename(out + ".part", out)


if __name__ == "__main__":
    main()
