#!/usr/bin/env bash
# `make run`: a short tour inside the VM. (Grows into a stacked-device demo
# as targets land.)
set -eu
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
say uname -r
say grep vblk /proc/modules
say ls -l /dev/vblk-control
say vblkctl version
say vblkctl --json version
echo
echo "demo: done"
