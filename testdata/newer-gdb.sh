#!/usr/bin/env bash
# Put Debian 13's gdb and gdb-multiarch (16.x) beside the fixtures, for the tests and benchmarks
# of what only a newer gdb does: gdb 16 reads memory with binary `x` packets when a server offers
# `binary-upload+` (gdb 13, Debian 12's, only knows hex `m`).
#
# Usage: bash testdata/newer-gdb.sh        (root, Debian 12; prints the gdb wrapper's path)
#
# Nothing is installed into the system: the packages of trixie's gdb and gdb-multiarch and of
# everything they link (their own C library included) are resolved against an empty package
# database with a private apt state, downloaded and extracted into
# ${KDUMP_FIXTURES:-testdata/fixtures}/gdb-trixie/root, and ${...}/gdb-trixie/gdb (and
# gdb-multiarch beside it) runs that gdb through that C library's own loader. A second run does
# nothing. Debian 12's sources and dpkg database are left as they were.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FIX=${KDUMP_FIXTURES:-$HERE/fixtures}
DIR=$FIX/gdb-trixie
PROGRAMS=(gdb gdb-multiarch)
SUITE=trixie

die() {
	echo "newer-gdb: $*" >&2
	exit 1
}

# Whether every wrapper is there and runs a gdb 16 or later.
installed() {
	local p
	for p in "${PROGRAMS[@]}"; do
		[[ -x $DIR/$p ]] || return 1
		"$DIR/$p" --version 2>/dev/null | grep -q '^GNU gdb .* 1[6-9]\.' || return 1
	done
}

if installed; then
	echo "$DIR/gdb"
	exit 0
fi
[[ $(id -u) == 0 ]] || die "root needed (apt-get download into a private state)"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r $KEYRING ]] || die "missing $KEYRING (package debian-archive-keyring)"

rm -rf "$DIR"
mkdir -p "$DIR"/apt/lists/partial "$DIR"/apt/cache/archives/partial "$DIR"/debs "$DIR"/root
echo "deb [signed-by=$KEYRING] http://deb.debian.org/debian $SUITE main" >"$DIR/apt/sources.list"
: >"$DIR/apt/status" # an empty package database: the closure includes the C library
APT=(-o "Dir::Etc::SourceList=$DIR/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o "Dir::State::Lists=$DIR/apt/lists" -o "Dir::Cache=$DIR/apt/cache"
	-o "Dir::State::status=$DIR/apt/status" -o APT::Sandbox::User=root -o Debug::NoLocking=1
	-o APT::Install-Recommends=false)

echo "newer-gdb: apt-get update ($SUITE, private state)" >&2
timeout 600 apt-get "${APT[@]}" -qq update || die "apt-get update of $SUITE failed"
mapfile -t packages < <(apt-get "${APT[@]}" -s install "${PROGRAMS[@]}" | awk '/^Inst /{print $2}')
((${#packages[@]} > 0)) || die "could not resolve ${PROGRAMS[*]} in $SUITE"
echo "newer-gdb: download ${#packages[@]} packages" >&2
(cd "$DIR/debs" && timeout 1200 apt-get "${APT[@]}" -qq download "${packages[@]}") ||
	die "apt-get download failed"
for deb in "$DIR"/debs/*.deb; do dpkg-deb -x "$deb" "$DIR/root"; done
rm -rf "$DIR/debs" "$DIR/apt"

LIBS=$DIR/root/usr/lib/x86_64-linux-gnu
[[ -x $LIBS/ld-linux-x86-64.so.2 ]] || die "the C library's loader is missing"
# gdb's Python finds its standard library through PYTHONHOME; a wrapper sets it for its gdb only
# (Debian 12's gdb must not see it).
for p in "${PROGRAMS[@]}"; do
	[[ -x $DIR/root/usr/bin/$p ]] || die "$p is missing from the extracted packages"
	{
		echo "#!/bin/sh"
		echo "# Debian 13's $p, run on its own C library (made by testdata/newer-gdb.sh)."
		echo "PYTHONHOME='$DIR/root/usr' exec '$LIBS/ld-linux-x86-64.so.2' --library-path '$LIBS' \\"
		echo "  '$DIR/root/usr/bin/$p' --data-directory '$DIR/root/usr/share/gdb' \"\$@\""
	} >"$DIR/$p"
	chmod +x "$DIR/$p"
	"$DIR/$p" -nx -batch -ex 'python print("python ok")' 2>&1 | grep -q "python ok" ||
		die "the extracted $p does not run: $("$DIR/$p" --version 2>&1 | head -3)"
done
echo "newer-gdb: $("$DIR/gdb" --version | head -1), and gdb-multiarch" >&2
echo "$DIR/gdb"
