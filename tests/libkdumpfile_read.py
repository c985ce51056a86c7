#!/usr/bin/python3
"""Read kernel virtual addresses with libkdumpfile, an independent translator, for tests.

Usage: libkdumpfile_read.py DUMP LENGTH < addresses (one hex address per line)
Prints one line per address: the bytes in hex, or "err <message>".
"""
import sys

import addrxlat
import kdumpfile


def main():
    path, length = sys.argv[1], int(sys.argv[2])
    dump = kdumpfile.kdumpfile(path)
    dump.attr["addrxlat.ostype"] = "linux"
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            data = dump.read(addrxlat.KVADDR, int(line, 16), length)
            print(bytes(data).hex())
        except Exception as e:  # libkdumpfile raises per address; keep going
            print("err " + str(e).replace("\n", " "))


if __name__ == "__main__":
    main()
