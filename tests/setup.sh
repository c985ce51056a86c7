#!/usr/bin/env bash
# Installs what the tests need on a Debian 12 machine and builds the real-kernel fixtures.
# Root installs missing packages itself; anyone else is told exactly what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DENO_VERSION=2.9.6
PACKAGES=(gdb gdb-multiarch qemu-system-x86 qemu-system-arm makedumpfile python3-drgn
  python3-libkdumpfile libkdumpfile-dev busybox-static clang lld cpio zstd python3-zstandard
  python3-snappy kmod crash iproute2 procps)

if ! deno --version 2>/dev/null | grep -q "^deno $DENO_VERSION "; then
  echo "setup: installing Deno $DENO_VERSION from the npm registry"
  npm install -g "deno@$DENO_VERSION" >/dev/null
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (install them as root): ${missing[*]}" >&2
    exit 1
  fi
fi

# Real dumps of real kernels; incremental, so a second run costs nothing.
bash testdata/build-fixtures.sh ${KDUMP_FIXTURE_BOOTS:-}

# Debian 13's gdb (16) beside the fixtures, for the binary `x` reads only gdb 16+ makes.
bash testdata/newer-gdb.sh >/dev/null
