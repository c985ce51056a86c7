#!/usr/bin/env bash
# Measures gdb's `dump binary memory` of the fake target over TCP and over a pipe.
# Not part of the test suite (a 64 MiB pipe dump of random data takes about a minute).
#   tests/rsp_throughput.sh [SIZE_BYTES] [zeros|random ...] [tcp|pipe ...]
# Prints one line per run: fill, transport, seconds inside gdb, MB/s.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-67108864}
fills=${2:-"zeros random"}
modes=${3:-"tcp pipe"}
base=0xffff888000100000
end=$(printf '0x%x' $((base + size)))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for fill in $fills; do
  for mode in $modes; do
    server_pid=
    if [ "$mode" = tcp ]; then
      deno run --quiet --no-lock --allow-net tests/rsp_serve_fake.ts --port 0 --once \
        --size "$size" --fill "$fill" 2>"$tmp/server.log" &
      server_pid=$!
      for _ in $(seq 100); do grep -q listening "$tmp/server.log" && break; sleep 0.1; done
      port=$(sed -n 's/.*listening on [^:]*:\([0-9]*\).*/\1/p' "$tmp/server.log")
      connect="target remote 127.0.0.1:$port"
    else
      connect="target remote | deno run --quiet --no-lock tests/rsp_serve_fake.ts --stdio --size $size --fill $fill"
    fi
    timeout 600 gdb -nx -batch -ex "$connect" \
      -ex 'python import time; t0 = time.time()' \
      -ex "dump binary memory $tmp/out.bin $base $end" \
      -ex 'python print("SECONDS %.3f" % (time.time() - t0))' >"$tmp/gdb.log" 2>&1 || true
    [ -n "$server_pid" ] && wait "$server_pid" 2>/dev/null || true
    seconds=$(sed -n 's/^SECONDS //p' "$tmp/gdb.log")
    got=$(stat -c %s "$tmp/out.bin" 2>/dev/null || echo 0)
    if [ -z "$seconds" ] || [ "$got" != "$size" ]; then
      echo "$fill $mode: FAILED ($got bytes)"; cat "$tmp/gdb.log"; continue
    fi
    echo "$fill $mode: ${seconds} s, $(echo "scale=1; $size / $seconds / 1000000" | bc) MB/s"
    rm -f "$tmp/out.bin"
  done
done
