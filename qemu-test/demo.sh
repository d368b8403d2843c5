#!/usr/bin/env bash
# `make run`: a short tour inside the VM. (Grows into a stacked-device demo
# as targets land.)
set -eu
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
say uname -r
say grep vblk /proc/modules
say ls -l /dev/vblk-control
say vblkctl version
say vblkctl create demo --uuid VBLK-demo-0001 --table '0 8192 zero'
say vblkctl ls
say vblkctl info demo
say ls -l /dev/vblk/demo
say blockdev --getsz /dev/vblk/demo
printf '\n\033[1m$ cmp -n 4194304 /dev/vblk/demo /dev/zero\033[0m\n'
cmp -n 4194304 /dev/vblk/demo /dev/zero && echo "4 MiB of zeros"
say vblkctl --json info demo
printf '\n\033[1m$ vblkctl create demo   # again: refused, with the reason\033[0m\n'
vblkctl create demo || true
say vblkctl remove demo
say vblkctl ls
echo
echo "demo: done"
