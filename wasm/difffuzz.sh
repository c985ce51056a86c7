#!/usr/bin/env bash
# Differential fuzzing of wasm/lzo1x.c against liblzo2 (optional; needs gcc
# with libasan/libubsan and Debian's liblzo2-dev). Builds the decoder natively
# with AddressSanitizer and UBSan and runs lzo1x_difffuzz.c over the committed
# LZO vectors, plus the LZO pages of a kdump file if one is given:
#   wasm/difffuzz.sh [ITERATIONS] [dump.lzo-d31.kdump]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
iterations="${1:-1000000}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

flags=(-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -Wno-attributes)
gcc "${flags[@]}" -Dlzo1x_decompress=ours_lzo1x_decompress -c -o "$out/ours.o" "$here/lzo1x.c"
gcc "${flags[@]}" -o "$out/difffuzz" "$here/lzo1x_difffuzz.c" "$out/ours.o" -llzo2

inputs=("$here/../testdata/codecs/lzo.bin" "$here/../testdata/codecs/lzo999.bin")
if [[ $# -ge 2 ]]; then
  # Every LZO page of the dump (page_desc.flags 0x2), as vector records.
  python3 - "$2" "$out/dump.bin" <<'PY'
import struct, sys
with open(sys.argv[1], "rb") as f:
    data = f.read()
block, sub, bitmap = struct.unpack_from("<iiI", data, 428)
table = (1 + sub + bitmap) * block
first_data = struct.unpack_from("<Q", data, table)[0]
out = bytearray()
for i in range((first_data - table) // 24):
    off, size, flags, _ = struct.unpack_from("<QIIQ", data, table + 24 * i)
    if flags == 2 and 0 < size <= block and off + size <= len(data):
        out += struct.pack("<II", size, block) + data[off:off + size]
with open(sys.argv[2], "wb") as f:
    f.write(out)
PY
  inputs+=("$out/dump.bin")
fi
for input in "${inputs[@]}"; do
  echo "$(basename "$input"): $("$out/difffuzz" "$input" "$iterations")"
done
