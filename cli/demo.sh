#!/usr/bin/env bash
# The main job on the bundled sample dump: print the server's banner and, where gdb is installed,
# run a short gdb session against it through a pipe. No vmlinux needed: names come from the
# kallsyms and BTF inside the dump, and the panic CPU's backtrace from its ORC tables, both gdb's
# own (`bt`: the server hands gdb a symbol file made from the dump) and kdb's (`monitor bt`).
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLE=testdata/sample/x86_64-6.1.kdump
SERVER="deno run --allow-read --allow-net --v8-flags=--max-semi-space-size=1 cli/main.ts"
if ! command -v gdb >/dev/null; then
  echo "(gdb is not installed: showing the server's banner only)" >&2
  $SERVER --stdio "$SAMPLE" </dev/null
  exit 0
fi
exec gdb -nx -batch \
  -ex "target remote | $SERVER --stdio $SAMPLE" \
  -ex 'info threads' \
  -ex 'info registers rip rsp gs_base' \
  -ex 'monitor sym linux_banner' \
  -ex 'python gdb.execute("x/s " + gdb.execute("monitor sym linux_banner", to_string=True).split()[-1])' \
  -ex 'monitor sys' \
  -ex 'x/4gx $rsp' \
  -ex 'bt' \
  -ex 'monitor bt' \
  -ex 'monitor dmesg 3'
