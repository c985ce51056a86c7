#!/usr/bin/env bash
# Build the real-kernel crash dump fixtures: boot Debian's cloud kernels under QEMU (TCG) with a
# busybox initramfs that starts known processes and panics the kernel, dump the guest's memory
# over QMP, convert the dump with makedumpfile and our recompressor, and record what independent
# tools (drgn, libkdumpfile, System.map, the console log) say about it in expected.json.
#
# Usage: bash testdata/build-fixtures.sh [BOOT...]      (default: every boot)
#        bash testdata/build-fixtures.sh --update-sample [BOOT...]
# Boots: x86_64-6.1 x86_64-6.1-la57 aarch64-6.1 x86_64-6.12 x86_64-6.1-tasks aarch64-6.12
#
# Output: ${KDUMP_FIXTURES:-testdata/fixtures}/<boot>/ (see testdata/README.md). Every step is
# skipped when its outputs exist, so a second run is quick; changing FIXTURES_VERSION below
# makes the next run rebuild everything. Runs as root on Debian 12 when packages are missing
# (it apt-get installs them); kernels are downloaded and extracted, never installed.
set -Eeuo pipefail # -E: the ERR trap also fires inside functions
shopt -s inherit_errexit

# Bump when the guest, the tools or the outputs change in a way that needs a rebuild.
FIXTURES_VERSION="kdump-fixtures-2"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOLS=$HERE/tools
GUEST=$HERE/guest
SAMPLE_DIR=$HERE/sample
FIX=${KDUMP_FIXTURES:-$HERE/fixtures}
PY=/usr/bin/python3 # Debian's python3: drgn, libkdumpfile, snappy, zstandard live there
ALL_BOOTS=(x86_64-6.1 x86_64-6.1-la57 aarch64-6.1 x86_64-6.12 x86_64-6.1-tasks aarch64-6.12)
HOST_PACKAGES=(qemu-system-x86 qemu-system-arm makedumpfile python3 python3-drgn
	python3-libkdumpfile python3-snappy python3-zstandard kmod xz-utils zstd binutils)

# --- output helpers -----------------------------------------------------------------------------

TIMINGS=()
CURRENT_STEP=""
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }
die() {
	trap - ERR
	printf '\nbuild-fixtures: ERROR%s: %s\n' "${CURRENT_STEP:+ in step '$CURRENT_STEP'}" "$*" >&2
	exit 1
}
trap 'die "command failed (status $?) at line $LINENO: $BASH_COMMAND"' ERR

# step LABEL OUTPUT... -- COMMAND...: run COMMAND unless every OUTPUT exists; record its time.
step() {
	local label=$1
	shift
	local outputs=() missing=0
	while [[ $1 != -- ]]; do
		outputs+=("$1")
		shift
	done
	shift
	for o in "${outputs[@]}"; do [[ -e $o ]] || missing=1; done
	if ((!missing)); then
		log "  skip  $label (done)"
		return 0
	fi
	log "  run   $label"
	local t0=$SECONDS
	# Not "$@" || die: errexit is off inside a command that is followed by ||.
	CURRENT_STEP=$label
	"$@"
	CURRENT_STEP=""
	for o in "${outputs[@]}"; do [[ -e $o ]] || die "step '$label' did not produce $o"; done
	TIMINGS+=("$(printf '%5ds  %s' $((SECONDS - t0)) "$label")")
}

# --- host setup ---------------------------------------------------------------------------------

APT_UPDATED=0
apt_update() {
	((APT_UPDATED)) && return 0
	[[ $(id -u) == 0 ]] || die "apt-get needed (missing packages or downloads): run as root"
	log "  apt-get update"
	timeout 600 apt-get update -qq || die "apt-get update failed"
	APT_UPDATED=1
}

ensure_host_packages() {
	local missing=()
	for p in "${HOST_PACKAGES[@]}"; do
		dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	apt_update
	log "  apt-get install ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" || die "apt-get install failed"
}

ensure_foreign_arch() { # DEB_ARCH
	local arch=$1
	[[ $arch == "$(dpkg --print-architecture)" ]] && return 0
	dpkg --print-foreign-architectures | grep -qx "$arch" && return 0
	[[ $(id -u) == 0 ]] || die "dpkg --add-architecture $arch needed: run as root"
	log "  dpkg --add-architecture $arch"
	dpkg --add-architecture "$arch"
	APT_UPDATED=0
	apt_update
}

# Everything needed before apt-cache / apt-get download can serve packages of DEB_ARCH.
apt_ready() { # DEB_ARCH
	ensure_foreign_arch "$1"
	apt_update
}

# apt-get download PACKAGE[:ARCH][=VERSION] into DIR.
apt_download() { # DIR PACKAGE
	(cd "$1" && timeout 1200 apt-get download -q -o APT::Sandbox::User=root "$2") ||
		die "apt-get download $2 failed"
}

# Extract MEMBERS (tar patterns) of a .deb into DIR. tar stops after the first match of each
# member (--occurrence), which spares decompressing the rest of a 280 MB -dbg package; dpkg-deb
# then dies of SIGPIPE, so success is judged by the caller checking the files.
deb_extract() { # DEB DIR MEMBER...
	local deb=$1 dir=$2
	shift 2
	mkdir -p "$dir"
	{ timeout 600 dpkg-deb --fsys-tarfile "$deb" 2>/dev/null || true; } |
		timeout 600 tar -x -C "$dir" --wildcards --occurrence=1 "$@" || true
}

# --- fixtures directory and version -----------------------------------------------------------

init_fixtures_dir() {
	mkdir -p "$FIX"
	local stamp=$FIX/VERSION
	if [[ -f $stamp ]] && [[ $(cat "$stamp") == "$FIXTURES_VERSION" ]]; then
		return 0
	fi
	if [[ -f $stamp ]]; then
		log "fixtures version changed ($(cat "$stamp") -> $FIXTURES_VERSION): rebuilding all"
		rm -rf "${FIX:?}/kernels" "${FIX:?}/busybox" "${FIX:?}/cross" "${FIX:?}/tmp"
		for b in "${ALL_BOOTS[@]}"; do rm -rf "${FIX:?}/$b"; done
	elif [[ -n $(ls -A "$FIX") ]]; then
		die "$FIX is not empty and has no VERSION file: not deleting anything there"
	fi
	echo "$FIXTURES_VERSION" >"$stamp"
}

# --- kernels ------------------------------------------------------------------------------------

# Resolve a kernel meta package (e.g. linux-image-cloud-amd64) to the concrete image package it
# depends on (e.g. linux-image-6.1.0-56-cloud-amd64), once: the answer is kept in
# kernels/<meta>.resolved so later runs use the same kernel even after Debian moves on.
resolve_kernel() { # META DEB_ARCH -> sets KPKG KREL KVER
	local meta=$1 arch=$2 file=$FIX/kernels/$1.resolved
	mkdir -p "$FIX/kernels"
	if [[ ! -s $file ]]; then
		apt_ready "$arch"
		local dep ver
		dep=$(apt-cache depends "$meta:$arch" 2>/dev/null |
			awk '$1 == "Depends:" && $2 ~ /^linux-image-/ {print $2; exit}')
		dep=${dep%:*}
		[[ -n $dep ]] || die "cannot resolve $meta:$arch (apt-cache depends shows no linux-image)"
		ver=$(apt-cache show --no-all-versions "$dep-unsigned:$arch" 2>/dev/null |
			awk '/^Version:/ {print $2; exit}')
		[[ -n $ver ]] || die "no package $dep-unsigned:$arch"
		echo "$dep $ver" >"$file"
	fi
	read -r KPKG KVER <"$file"
	KREL=${KPKG#linux-image-}
}

# Download the image (-unsigned) and -dbg packages of KPKG and keep only what the fixtures
# need: vmlinuz, the debug vmlinux, the real System.map (the image package's is a placeholder),
# qemu_fw_cfg.ko with its dependencies (decompressed) and a load order for them.
fetch_kernel() { # DEB_ARCH; uses KPKG KREL KVER; sets KDIR
	local arch=$1
	KDIR=$FIX/kernels/$KREL
	[[ -f $KDIR/.done ]] && return 0
	apt_ready "$arch"
	local tmp=$FIX/tmp/$KREL
	rm -rf "$tmp" "$KDIR"
	mkdir -p "$tmp/deb" "$tmp/x" "$KDIR/modules"
	local image=$KPKG-unsigned dbg=$KPKG-dbg
	log "  download $image $dbg ($KVER, $arch)"
	apt_download "$tmp/deb" "$image:$arch=$KVER"
	apt_download "$tmp/deb" "$dbg:$arch=$KVER"
	local image_deb dbg_deb
	image_deb=$(ls "$tmp"/deb/"${image}"_*.deb)
	dbg_deb=$(ls "$tmp"/deb/"${dbg}"_*.deb)

	# Modules: find qemu_fw_cfg and, recursively, what it depends on.
	local listing
	listing=$(timeout 600 dpkg-deb -c "$image_deb" | awk '{print $6}')
	deb_extract "$image_deb" "$tmp/x" "./boot/vmlinuz-$KREL" "./lib/modules/$KREL/modules.builtin"
	[[ -f $tmp/x/boot/vmlinuz-$KREL ]] || die "no vmlinuz-$KREL in $image_deb"
	cp "$tmp/x/boot/vmlinuz-$KREL" "$KDIR/vmlinuz"
	: >"$KDIR/modules/load-order"
	add_module() { # NAME: append NAME's dependencies, then NAME, to load-order
		local name=$1 path ko deps
		grep -qx "$name.ko" "$KDIR/modules/load-order" && return 0
		path=$(grep -E "/${name//[-_]/[-_]}\.ko(\.xz|\.zst|\.gz)?$" <<<"$listing" | head -n1 || true)
		if [[ -z $path ]]; then
			if [[ -f $tmp/x/lib/modules/$KREL/modules.builtin ]] &&
				grep -qE "/${name//[-_]/[-_]}\.ko$" "$tmp/x/lib/modules/$KREL/modules.builtin"; then
				log "  $name is built into $KREL"
				return 0
			fi
			die "module $name not found in $image_deb"
		fi
		deb_extract "$image_deb" "$tmp/x" "$path"
		ko=$KDIR/modules/$name.ko
		case $path in
		*.xz) xz -dc "$tmp/x/$path" >"$ko" ;;
		*.zst) zstd -qdc "$tmp/x/$path" >"$ko" ;;
		*.gz) gzip -dc "$tmp/x/$path" >"$ko" ;;
		*) cp "$tmp/x/$path" "$ko" ;;
		esac
		deps=$(modinfo -F depends "$ko")
		for dep in ${deps//,/ }; do add_module "$dep"; done
		echo "$name.ko" >>"$KDIR/modules/load-order"
	}
	add_module qemu_fw_cfg

	log "  extract vmlinux and System.map from $(basename "$dbg_deb")"
	deb_extract "$dbg_deb" "$tmp/x" "./usr/lib/debug/boot/vmlinux-$KREL" \
		"./usr/lib/debug/boot/System.map-$KREL"
	[[ -f $tmp/x/usr/lib/debug/boot/vmlinux-$KREL ]] || die "no vmlinux-$KREL in $dbg_deb"
	[[ -f $tmp/x/usr/lib/debug/boot/System.map-$KREL ]] || die "no System.map-$KREL in $dbg_deb"
	mv "$tmp/x/usr/lib/debug/boot/vmlinux-$KREL" "$KDIR/vmlinux"
	mv "$tmp/x/usr/lib/debug/boot/System.map-$KREL" "$KDIR/System.map"
	echo "$KPKG $KVER $arch" >"$KDIR/package"
	rm -rf "$tmp"
	touch "$KDIR/.done"
}

# The debug builds of the modules the guest loads (load-order), from the -dbg package, in the
# tree the package installs below /usr/lib/debug/lib/modules/KREL: gdb's add-symbol-file reads
# them (cli/gdb/kdump.py kdump-load-modules). A step of its own, so fixtures built before it
# gain it without a rebuild (which downloads the -dbg package once more).
fetch_module_debug() { # DEB_ARCH; uses KPKG KREL KVER KDIR
	local arch=$1 out=$KDIR/modules-debug
	apt_ready "$arch"
	local tmp=$FIX/tmp/$KREL-debug dbg=$KPKG-dbg
	rm -rf "$tmp" "$out"
	mkdir -p "$tmp/deb" "$tmp/x"
	log "  download $dbg ($KVER, $arch) for its module debug files"
	apt_download "$tmp/deb" "$dbg:$arch=$KVER"
	local deb listing prefix=./usr/lib/debug/lib/modules/$KREL/ name path
	deb=$(ls "$tmp"/deb/"${dbg}"_*.deb)
	listing=$(timeout 600 dpkg-deb -c "$deb" | awk '{print $6}')
	while read -r name; do
		[[ -n $name ]] || continue
		# Plain text, not a regex: releases hold "+" (6.12.118+deb12); - and _ are one in names.
		path=$(awk -v p="$prefix" -v n="/${name//-/_}" '{ f = $0; gsub(/-/, "_", f) }
			index($0, p) == 1 && substr(f, length(f) - length(n) + 1) == n { print; exit }' \
			<<<"$listing")
		[[ -n $path ]] || die "no debug file for $name in $deb"
		deb_extract "$deb" "$tmp/x" "$path"
		[[ -f $tmp/x/$path ]] || die "could not extract $path from $deb"
		mkdir -p "$out/$(dirname "${path#"$prefix"}")"
		mv "$tmp/x/$path" "$out/${path#"$prefix"}"
	done <"$KDIR/modules/load-order"
	rm -rf "$tmp"
	touch "$out/.done"
}

# busybox-static for the guest architecture, from its Debian package.
fetch_busybox() { # DEB_ARCH; sets BUSYBOX
	local arch=$1 dir=$FIX/busybox/$1
	BUSYBOX=$dir/busybox
	[[ -f $BUSYBOX ]] && return 0
	apt_ready "$arch"
	local tmp=$FIX/tmp/busybox-$arch
	rm -rf "$tmp"
	mkdir -p "$tmp/deb" "$dir"
	apt_download "$tmp/deb" "busybox-static:$arch"
	deb_extract "$tmp"/deb/busybox-static_*.deb "$tmp/x" ./bin/busybox
	[[ -f $tmp/x/bin/busybox ]] || die "no /bin/busybox in busybox-static:$arch"
	mv "$tmp/x/bin/busybox" "$BUSYBOX.part"
	mv "$BUSYBOX.part" "$BUSYBOX"
	rm -rf "$tmp"
}

# makedumpfile only reads dumps of the architecture it was built for, so for a foreign guest
# the Debian makedumpfile of that architecture runs under qemu-user: makedumpfile and the
# shared libraries it needs (the lib* closure of its Depends) are extracted into a sysroot,
# next to qemu-ARCH-static from the qemu-user-static package. Nothing is installed.
fetch_cross_makedumpfile() { # DEB_ARCH QEMU_ARCH
	local arch=$1 qarch=$2 dir=$FIX/cross/$1
	apt_ready "$arch"
	local tmp=$FIX/tmp/cross-$arch
	rm -rf "$tmp" "$dir"
	mkdir -p "$tmp/deb" "$dir/sysroot"
	local todo=(makedumpfile) done=" " p dep
	while ((${#todo[@]})); do
		p=${todo[0]}
		todo=("${todo[@]:1}")
		[[ $done == *" $p "* ]] && continue
		done+="$p "
		for dep in $(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
			--no-replaces --no-enhances "$p:$arch" |
			awk '$1 == "Depends:" || $1 == "PreDepends:" {sub(/:.*/, "", $2); print $2}' |
			grep -E '^(lib|zlib)' || true); do
			todo+=("$dep")
		done
	done
	log "  sysroot for makedumpfile:$arch:$done"
	local pkgs=()
	for p in $done; do pkgs+=("$p:$arch"); done
	(cd "$tmp/deb" && timeout 1200 apt-get download -q -o APT::Sandbox::User=root "${pkgs[@]}")
	for deb in "$tmp"/deb/*.deb; do dpkg-deb -x "$deb" "$dir/sysroot"; done
	apt_download "$tmp/deb" "qemu-user-static:$(dpkg --print-architecture)"
	deb_extract "$tmp"/deb/qemu-user-static_*.deb "$tmp/x" "./usr/bin/qemu-$qarch-static"
	[[ -f $tmp/x/usr/bin/qemu-$qarch-static ]] || die "no qemu-$qarch-static in qemu-user-static"
	mv "$tmp/x/usr/bin/qemu-$qarch-static" "$dir/"
	[[ -x $dir/sysroot/usr/bin/makedumpfile ]] || die "no makedumpfile in makedumpfile:$arch"
	"$dir/qemu-$qarch-static" -L "$dir/sysroot" "$dir/sysroot/usr/bin/makedumpfile" -v >/dev/null ||
		die "makedumpfile:$arch does not run under qemu-$qarch-static"
	rm -rf "$tmp"
	touch "$dir/.done"
}

# The guest initramfs: busybox, /init (guest/init unless INIT is given) and its two scripts,
# the modules and their load order.
build_initramfs() { # OUT [INIT]; uses KDIR BUSYBOX
	local out=$1 init=${2:-$GUEST/init} stage=$FIX/tmp/initramfs-$$
	rm -rf "$stage"
	mkdir -p "$stage"/{bin,dev,proc,sys,tmp,lib/modules}
	install -m 0755 "$BUSYBOX" "$stage/bin/busybox"
	ln -s busybox "$stage/bin/sh"
	install -m 0755 "$init" "$stage/init"
	install -m 0755 "$GUEST/spinner.sh" "$GUEST/crasher.sh" "$stage/bin/"
	cp "$KDIR"/modules/* "$stage/lib/modules/"
	"$PY" "$TOOLS/mkinitramfs.py" "$stage" "$out"
	rm -rf "$stage"
}

# --- per-boot steps -----------------------------------------------------------------------------

boot_config() { # BOOT: sets ARCH DEB_ARCH META QEMU_CMD QEMU_USER_ARCH CONSOLE VARIANTS ...
	QEMU_USER_ARCH=""
	# Most boots share one guest (guest/init) and expected.py, keep dump.elf and are rebuilt
	# only when FIXTURES_VERSION changes. A boot may differ (x86_64-6.1-tasks): its own /init
	# (INITRD_NAME names its initramfs next to the kernel), its own expected-tool, dump.elf
	# dropped once everything is made from it (KEEP_ELF=0), and its own BOOT_VERSION, whose
	# change rebuilds that boot alone.
	GUEST_INIT=$GUEST/init INITRD_NAME=initramfs.cpio.gz EXPECTED_TOOL=$TOOLS/expected.py
	KEEP_ELF=1 BOOT_VERSION=""
	case $1 in
	x86_64-6.1 | x86_64-6.1-la57 | x86_64-6.12)
		ARCH=x86_64 DEB_ARCH=amd64 BOOT_TIMEOUT=300
		META=linux-image-cloud-amd64
		[[ $1 == x86_64-6.12 ]] && META=linux-image-6.12-cloud-amd64
		QEMU_CMD=(qemu-system-x86_64 -accel tcg -m 512 -smp 2)
		[[ $1 == x86_64-6.1-la57 ]] && QEMU_CMD+=(-cpu qemu64,+la57)
		CONSOLE=ttyS0
		;;
	x86_64-6.1-tasks)
		# 5000 sleeping processes (guest/init-tasks). Each costs the guest about 100 KiB
		# (page tables 20, kernel stack 16, slab 17, anonymous pages 46): 1 GiB leaves a
		# third free after about 25 s of forking, 640 MiB ran out of memory.
		ARCH=x86_64 DEB_ARCH=amd64 BOOT_TIMEOUT=300
		META=linux-image-cloud-amd64
		QEMU_CMD=(qemu-system-x86_64 -accel tcg -m 1024 -smp 2)
		CONSOLE=ttyS0
		GUEST_INIT=$GUEST/init-tasks INITRD_NAME=initramfs-tasks.cpio.gz
		EXPECTED_TOOL=$TOOLS/expected_tasks.py KEEP_ELF=0 BOOT_VERSION=tasks-1
		;;
	aarch64-6.1 | aarch64-6.12)
		ARCH=aarch64 DEB_ARCH=arm64 BOOT_TIMEOUT=600
		META=linux-image-cloud-arm64
		[[ $1 == aarch64-6.12 ]] && META=linux-image-6.12-cloud-arm64
		QEMU_CMD=(qemu-system-aarch64 -accel tcg -M virt -cpu cortex-a57 -m 512 -smp 2)
		QEMU_USER_ARCH=aarch64
		CONSOLE=ttyAMA0
		;;
	*) die "unknown boot '$1' (known: ${ALL_BOOTS[*]})" ;;
	esac
	case $1 in
	x86_64-6.1) VARIANTS=(qemu-flat zlib-d31 lzo-d31 zlib-d0 elf-d31 flat-d31 reassembled split
		snappy zstd) ;;
	# QEMU writes "Unknown" as the machine of an arm guest's kdump-zlib file (libkdumpfile
	# refuses it): both arm64 boots keep QEMU's file and its makedumpfile -R reassembly.
	aarch64-6.1) VARIANTS=(zlib-d31 lzo-d31 qemu-flat qemu-reassembled) ;;
	# makedumpfile 1.7.2 refuses 6.12's arm64 dumps ("PAGE SIZE 0x1000 and VA Bits 52 not
	# supported"): this boot has QEMU's files only.
	aarch64-6.12) VARIANTS=(qemu-flat qemu-reassembled) ;;
	x86_64-6.12) VARIANTS=(zlib-d31 zlib-d1) ;;
	*) VARIANTS=(zlib-d31) ;;
	esac
	# Files known to lack pages their dump level should keep (recorded in manifest.json and
	# left out of the drgn cross-check).
	DEFECTS=()
	if [[ $1 == x86_64-6.12 ]]; then
		DEFECTS=("dump.zlib-d31.kdump=makedumpfile 1.7.2 predates Linux 6.10's page types: \
its -d 2/4 (page cache), 8 (user data) and 16 (free) filters also drop slab pages (task_struct, \
struct pid, ...), so drgn cannot walk the task list; dump.zlib-d1.kdump (zero pages only) is \
complete")
	fi
}

has_variant() { # NAME
	local v
	for v in "${VARIANTS[@]}"; do [[ $v == "$1" ]] && return 0; done
	return 1
}

has_defect() { # FILE
	local d
	for d in "${DEFECTS[@]}"; do [[ ${d%%=*} == "$1" ]] && return 0; done
	return 1
}

# variant NAME LABEL OUTPUT... -- COMMAND...: a step that only this boot's variant list asks for.
variant() {
	local name=$1 label=$2
	shift 2
	if has_variant "$name"; then step "$BOOT: $label" "$@"; fi
}

# QEMU boot + panic + QMP dumps. A new boot means new memory contents, so everything derived
# from an older boot in that directory is removed first. Two things depend on luck:
# - QEMU may stop the panicking CPU while it enters an interrupt (the panic loop runs with
#   interrupts on), where drgn cannot unwind to panic(): expected.py --quick checks each dump
#   and qemu_crash_dump.py lets the guest run on briefly and dumps again;
# - KASLR may draw a zero offset (about 1 boot in 500 on x86_64), which would not exercise
#   relocation: boot again (at most three boots).
run_boot() { # BOOT DIR INITRD
	local boot=$1 dir=$2 initrd=$3 formats=elf attempt check
	has_variant qemu-flat && formats=elf,kdump-zlib
	check=$(printf '%q ' "$PY" "$EXPECTED_TOOL" --quick --boot-dir "$dir" \
		--vmlinux "$KDIR/vmlinux" --system-map "$KDIR/System.map")
	for attempt in 1 2 3; do
		find "$dir" -mindepth 1 -maxdepth 1 ! -name vmlinux ! -name System.map ! -name vmlinuz \
			-exec rm -rf {} +
		timeout $((BOOT_TIMEOUT + 300)) "$PY" "$TOOLS/qemu_crash_dump.py" --out "$dir" \
			--timeout "$((BOOT_TIMEOUT + 240))" --formats "$formats" --check "$check" -- \
			"${QEMU_CMD[@]}" -device vmcoreinfo -display none -monitor none -no-reboot \
			-kernel "$KDIR/vmlinuz" -initrd "$initrd" -append "console=$CONSOLE panic=0"
		chmod 0644 "$dir"/dump.*
		if ! grep -aqE 'Kernel Offset: (0x0 |disabled)' "$dir/console.log"; then
			touch "$dir/.boot-done"
			return 0
		fi
		log "  KASLR left the kernel at its link address; booting again"
	done
	die "KASLR offset 0 in three boots: is KASLR enabled?"
}

# makedumpfile 1.7.2 needs the program headers right after the ELF header; QEMU 7.2 puts the
# section headers there. The rearranged copy is made on demand and removed at the end.
mdf_input() { # DIR
	local input=$1/.makedumpfile-input.elf
	[[ -f $input ]] || "$PY" "$TOOLS/elf_phdrs_first.py" "$1/dump.elf" "$input"
	echo "$input"
}

# Run a command with its (progress-bar) output in LOG; show the log and stop if it fails.
run_logged() { # LOG COMMAND...
	local log=$1
	shift
	if ! "$@" >"$log" 2>&1; then
		tr '\r' '\n' <"$log" | tail -n 20 >&2
		die "failed: $*"
	fi
}

# makedumpfile ARGS... into OUT (via a temporary name: makedumpfile refuses to overwrite).
mdf() { # DIR OUT ARGS...
	local dir=$1 out=$2
	shift 2
	local input
	input=$(mdf_input "$dir")
	rm -f "$out.part"
	run_logged "$dir/.makedumpfile.log" timeout 600 "${MAKEDUMPFILE[@]}" "$@" "$input" "$out.part"
	chmod 0644 "$out.part"
	mv "$out.part" "$out"
}

mdf_flat() { # DIR OUT
	local input
	input=$(mdf_input "$1")
	if ! timeout 600 "${MAKEDUMPFILE[@]}" -F -c -d 31 "$input" >"$2.part" 2>"$1/.makedumpfile.log"; then
		cat "$1/.makedumpfile.log" >&2
		die "makedumpfile -F failed"
	fi
	mv "$2.part" "$2"
}

mdf_reassemble() { # DIR IN OUT
	rm -f "$3.part"
	run_logged "$1/.makedumpfile.log" timeout 600 "${MAKEDUMPFILE[@]}" -R "$3.part" <"$2"
	chmod 0644 "$3.part"
	mv "$3.part" "$3"
}

mdf_split() { # DIR
	local dir=$1 input
	input=$(mdf_input "$dir")
	rm -f "$dir"/dump.split-d31.*.part
	# --splitblock-size (KiB): the default block of 1 GiB puts all of our 512 MiB in part 1.
	run_logged "$dir/.makedumpfile.log" timeout 600 "${MAKEDUMPFILE[@]}" --split \
		--splitblock-size 65536 -c -d 31 "$input" \
		"$dir/dump.split-d31.1.kdump.part" "$dir/dump.split-d31.2.kdump.part"
	for n in 1 2; do
		chmod 0644 "$dir/dump.split-d31.$n.kdump.part"
		mv "$dir/dump.split-d31.$n.kdump.part" "$dir/dump.split-d31.$n.kdump"
	done
}

recodec() { # CODEC DIR
	timeout 600 "$PY" "$TOOLS/kdump_recodec.py" "$1" "$2/dump.zlib-d31.kdump" \
		"$2/dump.$1-d31.kdump"
	if ! timeout 600 "$PY" "$TOOLS/check_same_pages.py" "$2/dump.zlib-d31.kdump" \
		"$2/dump.$1-d31.kdump"; then
		rm -f "$2/dump.$1-d31.kdump"
		die "libkdumpfile does not read dump.$1-d31.kdump like dump.zlib-d31.kdump"
	fi
}

# Pages of the converted dumps must be those of QEMU's ELF dump, read by libkdumpfile.
verify_pages() { # DIR
	local dir=$1 refs=() f
	for f in dump.zlib-d0.kdump dump.zlib-d31.kdump dump.zlib-d1.kdump dump.lzo-d31.kdump \
		dump.zlib-d31-reassembled.kdump dump.elf-d31.elf; do
		[[ -f $dir/$f ]] && refs+=("$dir/$f")
	done
	for f in "${refs[@]}"; do
		timeout 600 "$PY" "$TOOLS/check_same_pages.py" --subset "$f" "$dir/dump.elf"
	done
	if [[ -f $dir/dump.qemu-kdump-zlib.flat && $ARCH == aarch64 ]]; then
		# QEMU's arm64 kdump file names its machine "Unknown" and libkdumpfile refuses it:
		# tests/qemu_kdump_arm64_test.ts compares its pages with dump.elf's bytes instead.
		log "  libkdumpfile cannot read QEMU's arm64 kdump file: left to the tests"
	elif [[ -f $dir/dump.qemu-kdump-zlib.flat ]]; then
		# libkdumpfile does not read the flattened format: reassemble QEMU's file to check it.
		mdf_reassemble "$dir" "$dir/dump.qemu-kdump-zlib.flat" "$dir/.qemu-kdump.kdump"
		timeout 600 "$PY" "$TOOLS/check_same_pages.py" --subset "$dir/.qemu-kdump.kdump" \
			"$dir/dump.elf"
		rm -f "$dir/.qemu-kdump.kdump"
	fi
	touch "$dir/.pages-verified"
}

make_expected() { # DIR
	local dir=$1 checks=() covered=() complete=() f status=0
	for f in dump.zlib-d31.kdump dump.zlib-d1.kdump dump.lzo-d31.kdump dump.zstd-d31.kdump; do
		[[ -f $dir/$f ]] && ! has_defect "$f" && checks+=("$dir/$f")
	done
	# The dumps the task tests open: which task_structs each holds. Those without a known
	# defect must hold them all; a boot where makedumpfile dropped one anyway is done again.
	for f in dump.elf dump.zlib-d0.kdump dump.zlib-d31.kdump dump.zlib-d1.kdump; do
		[[ -f $dir/$f ]] || continue
		covered+=("$dir/$f")
		has_defect "$f" || complete+=("$dir/$f")
	done
	local mdf_version
	mdf_version=$("${MAKEDUMPFILE[@]}" -v 2>&1 | head -n1)
	if ((${#MAKEDUMPFILE[@]} > 1)); then mdf_version+=" ($DEB_ARCH build under qemu-user)"; fi
	if [[ $EXPECTED_TOOL != "$TOOLS/expected.py" ]]; then
		timeout 900 "$PY" "$EXPECTED_TOOL" --boot-dir "$dir" --vmlinux "$KDIR/vmlinux" \
			--system-map "$KDIR/System.map" --makedumpfile-version "$mdf_version"
		return
	fi
	timeout 900 "$PY" "$TOOLS/expected.py" --boot-dir "$dir" --vmlinux "$KDIR/vmlinux" \
		--system-map "$KDIR/System.map" --makedumpfile-version "$mdf_version" \
		--check "${checks[@]}" --coverage "${covered[@]}" --complete "${complete[@]}" ||
		status=$?
	((status == 0)) && return 0
	((status == 3)) || die "expected.py failed (status $status)"
	((INCOMPLETE_REBOOTS-- > 0)) || die "$BOOT: dumps lack task_structs in three boots"
	log "  $BOOT: a dump without a known defect lacks task_structs: booting again"
	find "$dir" -mindepth 1 -maxdepth 1 ! -name vmlinux ! -name System.map ! -name vmlinuz \
		-exec rm -rf {} +
	build_boot "$BOOT"
}

# Boots done again because makedumpfile dropped a task_struct (see make_expected), in all.
INCOMPLETE_REBOOTS=3

# A boot with its own BOOT_VERSION is rebuilt alone when that changes: its directory and its
# initramfs go (the boot step writes the stamp, .boot-version). And without KEEP_ELF, dump.elf
# is gone once everything is made: if a file made from it is missing, the boot runs again.
boot_version_check() { # DIR INITRD
	local dir=$1 initrd=$2 stamp=$1/.boot-version
	if [[ -n $BOOT_VERSION && -d $dir && $(cat "$stamp" 2>/dev/null) != "$BOOT_VERSION" ]]; then
		log "  $BOOT: boot version changed ($(cat "$stamp" 2>/dev/null || echo none) -> \
$BOOT_VERSION): rebuilding this boot"
		rm -rf "${dir:?}" "${initrd:?}"
	fi
	if ((!KEEP_ELF)) && [[ -f $dir/.boot-done && ! -f $dir/dump.elf ]]; then
		local v
		for v in "${VARIANTS[@]}"; do
			if [[ ! -f $dir/dump.$v.kdump || ! -f $dir/.pages-verified ]]; then
				log "  $BOOT: dump.elf was dropped and dump.$v.kdump needs it: booting again"
				rm -f "$dir/.boot-done"
				break
			fi
		done
	fi
	mkdir -p "$dir"
}

build_boot() { # BOOT
	local boot=$1 dir=$FIX/$1
	BOOT=$boot
	boot_config "$boot"
	log "== $boot"
	local t0=$SECONDS
	resolve_kernel "$META" "$DEB_ARCH"
	step "$boot: kernel $KPKG $KVER" "$FIX/kernels/$KREL/.done" -- fetch_kernel "$DEB_ARCH"
	KDIR=$FIX/kernels/$KREL
	step "$boot: module debug files" "$KDIR/modules-debug/.done" -- fetch_module_debug "$DEB_ARCH"
	step "$boot: busybox-static:$DEB_ARCH" "$FIX/busybox/$DEB_ARCH/busybox" -- \
		fetch_busybox "$DEB_ARCH"
	BUSYBOX=$FIX/busybox/$DEB_ARCH/busybox
	MAKEDUMPFILE=(makedumpfile)
	if [[ $DEB_ARCH != "$(dpkg --print-architecture)" ]]; then
		local cross=$FIX/cross/$DEB_ARCH
		step "$boot: makedumpfile:$DEB_ARCH sysroot" "$cross/.done" -- \
			fetch_cross_makedumpfile "$DEB_ARCH" "$QEMU_USER_ARCH"
		MAKEDUMPFILE=("$cross/qemu-$QEMU_USER_ARCH-static" -L "$cross/sysroot"
			"$cross/sysroot/usr/bin/makedumpfile")
	fi
	local initrd=$KDIR/$INITRD_NAME
	boot_version_check "$dir" "$initrd"
	step "$boot: initramfs" "$initrd" -- build_initramfs "$initrd" "$GUEST_INIT"

	for f in vmlinux System.map vmlinuz; do
		ln -sfn "../kernels/$KREL/$f" "$dir/$f"
	done
	step "$boot: boot, panic, QMP dump" "$dir/.boot-done" -- run_boot "$boot" "$dir" "$initrd"
	if [[ -n $BOOT_VERSION ]]; then echo "$BOOT_VERSION" >"$dir/.boot-version"; fi

	local d=$dir
	variant zlib-d31 "makedumpfile -c -d 31" "$d/dump.zlib-d31.kdump" -- \
		mdf "$d" "$d/dump.zlib-d31.kdump" -c -d 31
	variant zlib-d1 "makedumpfile -c -d 1" "$d/dump.zlib-d1.kdump" -- \
		mdf "$d" "$d/dump.zlib-d1.kdump" -c -d 1
	variant lzo-d31 "makedumpfile -l -d 31" "$d/dump.lzo-d31.kdump" -- \
		mdf "$d" "$d/dump.lzo-d31.kdump" -l -d 31
	variant zlib-d0 "makedumpfile -c -d 0" "$d/dump.zlib-d0.kdump" -- \
		mdf "$d" "$d/dump.zlib-d0.kdump" -c -d 0
	variant elf-d31 "makedumpfile -E -d 31" "$d/dump.elf-d31.elf" -- \
		mdf "$d" "$d/dump.elf-d31.elf" -E -d 31
	variant flat-d31 "makedumpfile -F -c -d 31" "$d/dump.zlib-d31.flat" -- \
		mdf_flat "$d" "$d/dump.zlib-d31.flat"
	variant reassembled "makedumpfile -R" "$d/dump.zlib-d31-reassembled.kdump" -- \
		mdf_reassemble "$d" "$d/dump.zlib-d31.flat" "$d/dump.zlib-d31-reassembled.kdump"
	variant qemu-reassembled "makedumpfile -R < QEMU's kdump-zlib" \
		"$d/dump.qemu-kdump-zlib-reassembled.kdump" -- mdf_reassemble "$d" \
		"$d/dump.qemu-kdump-zlib.flat" "$d/dump.qemu-kdump-zlib-reassembled.kdump"
	variant split "makedumpfile --split" "$d/dump.split-d31.1.kdump" \
		"$d/dump.split-d31.2.kdump" -- mdf_split "$d"
	rm -f "$d/.makedumpfile-input.elf" "$d/.makedumpfile.log"
	variant snappy "snappy recompression" "$d/dump.snappy-d31.kdump" -- recodec snappy "$d"
	variant zstd "zstd recompression" "$d/dump.zstd-d31.kdump" -- recodec zstd "$d"
	step "$boot: libkdumpfile page check" "$d/.pages-verified" -- verify_pages "$d"
	step "$boot: expected.json (drgn)" "$d/expected.json" -- make_expected "$d"
	if ((!KEEP_ELF)) && [[ -f $d/dump.elf ]]; then
		log "  $boot: dropping dump.elf ($(($(stat -c %s "$d/dump.elf") >> 20)) MiB): the tests \
read dump.zlib-d31.kdump"
		rm -f "$d/dump.elf"
	fi
	local defect_args=() x
	for x in "${DEFECTS[@]}"; do defect_args+=("--defect=$x"); done
	"$PY" "$TOOLS/manifest.py" "$d" "${defect_args[@]}"
	rm -f "$d/.makedumpfile.log"
	log "== $boot done in $((SECONDS - t0))s"
}

# The repository's small sample: the zlib -d 31 dump of the first boot and its expected.json.
update_sample() {
	local src=$FIX/x86_64-6.1
	[[ -f $src/dump.zlib-d31.kdump && -f $src/expected.json ]] || return 0
	mkdir -p "$SAMPLE_DIR"
	cp "$src/dump.zlib-d31.kdump" "$SAMPLE_DIR/x86_64-6.1.kdump"
	cp "$src/expected.json" "$SAMPLE_DIR/expected.json"
	log "sample: $SAMPLE_DIR/x86_64-6.1.kdump ($(stat -c %s "$SAMPLE_DIR/x86_64-6.1.kdump") bytes)"
}

main() {
	local boots=() update=0
	for a in "$@"; do
		case $a in
		--update-sample) update=1 ;;
		-h | --help)
			sed -n '2,14p' "${BASH_SOURCE[0]}"
			exit 0
			;;
		*) boots+=("$a") ;;
		esac
	done
	((${#boots[@]})) || boots=("${ALL_BOOTS[@]}")
	for b in "${boots[@]}"; do boot_config "$b"; done # validate names first

	local t0=$SECONDS
	log "fixtures in $FIX (version $FIXTURES_VERSION); boots: ${boots[*]}"
	ensure_host_packages
	init_fixtures_dir
	for b in "${boots[@]}"; do build_boot "$b"; done
	rm -rf "${FIX:?}/tmp"
	if ((update)) || [[ ! -f $SAMPLE_DIR/x86_64-6.1.kdump ]]; then update_sample; fi

	log "timings (steps run this time):"
	((${#TIMINGS[@]})) && printf '    %s\n' "${TIMINGS[@]}"
	log "all done in $((SECONDS - t0))s"
}

main "$@"
