#!/usr/bin/env bash
# `make run`: a short tour inside the VM: a linear concatenation of three
# ram disks, ext4 on it, vblk stacked on vblk, and the queries.
set -eu
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
run() { printf '\n\033[1m$ %s\033[0m\n' "$*"; bash -c "$*"; }
say uname -r
say vblkctl version
say vblkctl targets
run "blockdev --getsz /dev/ram0 /dev/ram1 /dev/ram2"
run "vblkctl create concat --uuid VBLK-demo-0001 <<'T'
0 131072 linear /dev/ram0 0
131072 131072 linear /dev/ram1 0
262144 131072 linear /dev/ram2 0
T"
say vblkctl ls
say vblkctl info concat
say vblkctl table concat
say vblkctl status concat
say vblkctl deps concat
say ls -l /dev/vblk/concat
say blockdev --getsz /dev/vblk/concat
say mkfs.ext4 -q -F /dev/vblk/concat
mnt=$(mktemp -d)
say mount /dev/vblk/concat "$mnt"
run "head -c 100M /dev/urandom > $mnt/data && sync && sha256sum $mnt/data && df -h $mnt | tail -1"
say umount "$mnt"
say fsck.ext4 -f -n /dev/vblk/concat
printf '\n\033[1m# a vblk device on top of the first (stacking)\033[0m\n'
say vblkctl create upper --table '0 100000 linear /dev/vblk/concat 2048'
say vblkctl deps upper
printf '\n\033[1m$ vblkctl remove concat   # refused: upper uses it\033[0m\n'
vblkctl remove concat || true
printf '\n\033[1m$ vblkctl load concat --table "0 8 linear /dev/vblk/upper 0"   # refused: a cycle\033[0m\n'
vblkctl load concat --table "0 8 linear /dev/vblk/upper 0" || true
say vblkctl --json ls
say vblkctl remove upper
say vblkctl remove concat
say vblkctl ls
rmdir "$mnt"
echo
echo "demo: done"
