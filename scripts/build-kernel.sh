#!/usr/bin/env bash
# Build (or reuse) a vblk test/bench kernel outside the clone.
#
#   scripts/build-kernel.sh [--print-dir] FRAGMENT
#
# The build directory is ~/.cache/vblk/kernel-<key>, where <key> hashes the
# config fragment, the Debian kernel source version, this script and the
# toolchain versions. A fresh clone on the same machine therefore reuses the
# kernel; any change to the inputs builds a new one. With --print-dir only the
# directory is printed (nothing is built).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export PATH="$HOME/.cargo/bin:$PATH"

print_only=0
if [ "${1:-}" = "--print-dir" ]; then print_only=1; shift; fi
fragment=${1:?usage: build-kernel.sh [--print-dir] FRAGMENT}
[ -f "$fragment" ] || { echo "build-kernel: no such fragment: $fragment" >&2; exit 1; }

tarball=/usr/src/linux-source-6.12.tar.xz
cache=${VBLK_CACHE:-$HOME/.cache/vblk}
src_version=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null || echo none)
key=$( {
	cat "$fragment"
	echo "$src_version"
	cat "$0"
	rustc --version 2>/dev/null || true
	clang --version 2>/dev/null | head -1 || true
} | sha256sum | cut -c1-16)
dir="$cache/kernel-$key"
if [ "$print_only" -eq 1 ]; then echo "$dir"; exit 0; fi

if [ -f "$dir/.vblk-built" ] && [ -f "$dir/arch/x86/boot/bzImage" ]; then
	echo "$dir"
	exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock-$key"
flock 9
# Another build may have finished while we waited for the lock.
if [ -f "$dir/.vblk-built" ]; then echo "$dir"; exit 0; fi

log() { printf 'build-kernel: %s\n' "$*" >&2; }
[ -f "$tarball" ] || { log "missing $tarball (run scripts/setup.sh)"; exit 1; }

start=$(date +%s)
if [ ! -f "$dir/Makefile" ]; then
	log "extracting $tarball ($src_version) into $dir"
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp"
	tar xf "$tarball" -C "$dir.tmp" --strip-components=1
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
fi

kmake() { make -C "$dir" ARCH=x86_64 LLVM=1 "$@"; }
log "configuring: tinyconfig + $(basename "$fragment")"
kmake -s tinyconfig >&2
"$dir/scripts/kconfig/merge_config.sh" -m -O "$dir" "$dir/.config" "$fragment" >/dev/null
kmake -s olddefconfig >&2

# Every option the fragment asks for must have survived olddefconfig;
# a silently dropped dependency would otherwise surface as a confusing
# failure inside the VM much later.
missing=0
while IFS= read -r line; do
	case "$line" in CONFIG_*=*) ;; *) continue ;; esac
	opt=${line%%=*}; val=${line#*=}
	if [ "$val" = n ]; then
		grep -q "^$opt=" "$dir/.config" && { log "option $opt should be unset"; missing=1; }
	else
		grep -qx "$line" "$dir/.config" || { log "option not applied: $line (got: $(grep "^$opt=\|# $opt " "$dir/.config" || echo absent))"; missing=1; }
	fi
done < "$fragment"
[ "$missing" -eq 0 ] || { log "config fragment not fully applied; fix $fragment"; exit 1; }

log "building (this takes a while on $(nproc) cores)"
kmake -j"$(nproc)" >&2
touch "$dir/.vblk-built"
log "kernel built in $(( $(date +%s) - start )) s"
echo "$dir"
