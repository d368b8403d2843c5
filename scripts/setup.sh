#!/usr/bin/env bash
# Idempotent machine setup for vblk: Debian packages, Rust components, bindgen, virtme-ng.
# A second run checks stamps/versions only and finishes in seconds.
set -euo pipefail

BINDGEN_VERSION=0.73.0
VIRTME_NG_VERSION=1.42
KERNEL_SOURCE_PKG=linux-source-6.12
KERNEL_SOURCE_VERSION=6.12.117-1~deb12u1

APT_PACKAGES=(
	clang lld llvm make flex bison bc libelf-dev libssl-dev cpio kmod xz-utils
	python3-pip qemu-system-x86 busybox-static
	fio dmsetup cryptsetup-bin mdadm thin-provisioning-tools e2fsprogs xfsprogs
	util-linux procps kmod file
)

log() { printf 'setup: %s\n' "$*" >&2; }
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

missing=()
for p in "${APT_PACKAGES[@]}" "$KERNEL_SOURCE_PKG"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	pkgs=()
	for p in "${missing[@]}"; do
		if [ "$p" = "$KERNEL_SOURCE_PKG" ]; then
			# Pin the kernel source so every machine builds the same kernel; fall
			# back to the newest 6.12 if the archive dropped the pinned upload.
			if apt-cache madison "$p" 2>/dev/null | grep -F "$KERNEL_SOURCE_VERSION" >/dev/null; then
				pkgs+=("$p=$KERNEL_SOURCE_VERSION")
			else
				log "warning: $p=$KERNEL_SOURCE_VERSION not in the archive, using newest"
				pkgs+=("$p")
			fi
		else
			pkgs+=("$p")
		fi
	done
	$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
	log "adding rustup component rust-src"
	rustup component add rust-src
fi
for c in rustfmt clippy; do
	rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

if ! command -v bindgen >/dev/null 2>&1 || ! bindgen --version 2>/dev/null | grep -qF "$BINDGEN_VERSION"; then
	log "installing bindgen-cli $BINDGEN_VERSION"
	cargo install --locked --quiet bindgen-cli --version "$BINDGEN_VERSION"
fi

if ! command -v vng >/dev/null 2>&1 || ! vng --version 2>/dev/null | grep -qF "$VIRTME_NG_VERSION"; then
	log "installing virtme-ng $VIRTME_NG_VERSION"
	pip install --quiet --disable-pip-version-check "virtme-ng==$VIRTME_NG_VERSION"
fi
