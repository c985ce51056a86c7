#!/usr/bin/env bash
# The whole benchmark suite, one command (`deno task bench`):
#   1. build the C references and the crafted dumps into bench/out/ (git-ignored);
#   2. library and codec benchmarks with `deno bench` (results: bench/out/deno_bench.json);
#   3. the gdb-driven suite: bulk reads, gdb sessions, scale (bench/gdb_suite.ts);
#   4. the kernel log against crash's log (bench/dmesg_bench.ts, into bench/out/dmesg.md).
# Arguments go to bench/gdb_suite.ts, e.g. `deno task bench --repeat 1 --skip-pipe`.
# Writes bench/out/results.json and bench/out/summary.md, and prints the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
uptime
deno run -A bench/gdb_suite.ts --only prepare
deno bench --allow-read --allow-env --allow-run --json bench/library_bench.ts bench/codecs_bench.ts \
  >bench/out/deno_bench.json
# -A: it reads /proc (CPU model, server RSS and CPU time) and runs gcc, gdb and makedumpfile.
deno run -A bench/gdb_suite.ts "$@"
deno run -A bench/dmesg_bench.ts --reps 3 | tee bench/out/dmesg.md
