#!/usr/bin/env bash
# The first disks: zero and error targets through LOAD/RESUME; the device
# node and /dev/vblk/NAME; reload; remove refused while open; bad tables.
. "$(dirname "$0")/lib.sh"

check "create z with a zero table" vblkctl create z --table '0 2048 zero'
check "/dev/vblk/z is a block device" test -b /dev/vblk/z
check_eq "z has 2048 sectors" 2048 "$(blockdev --getsz /dev/vblk/z)"
check "z reads zeros" cmp -n $((2048 * 512)) /dev/vblk/z /dev/zero
check "z swallows writes (O_DIRECT)" dd if=/dev/urandom of=/dev/vblk/z bs=4k count=16 oflag=direct status=none
check "... and still reads zeros" cmp -n $((2048 * 512)) <(dd if=/dev/vblk/z iflag=direct bs=4k status=none) /dev/zero
check_output "info shows ACTIVE and one target" 'Number of targets: 1' vblkctl info z
check_output "ls shows a major:minor" '^z	\([0-9]+:[0-9]+\)$' vblkctl ls

check "create e with an error table" vblkctl create e --table '0 1024 error'
check_fails "e fails reads" dd if=/dev/vblk/e of=/dev/null bs=4k count=1 iflag=direct status=none
check_fails "e fails writes" dd if=/dev/zero of=/dev/vblk/e bs=4k count=1 oflag=direct status=none

check "reload z with 4096 sectors" vblkctl load z --table '0 4096 zero'
check_eq "size unchanged before resume" 2048 "$(blockdev --getsz /dev/vblk/z)"
check "resume z" vblkctl resume z
check_eq "size grows after resume" 4096 "$(blockdev --getsz /dev/vblk/z)"

exec 3</dev/vblk/z
check_output "remove refused while open: EBUSY" 'Device or resource busy.*is open' vblkctl remove z
exec 3<&-
check "remove z once closed" vblkctl remove z
check_fails "/dev/vblk/z is gone" test -e /dev/vblk/z

vblkctl create t
check_output "unknown target refused with the line" "line 1: unknown target 'nosuch'" vblkctl load t --table '0 8 nosuch'
check_output "zero with arguments refused" "line 1: target 'zero' takes no arguments, got 'x'" vblkctl load t --table '0 8 zero x'
check_output "table not starting at 0 refused" 'must start at sector 0' vblkctl load t --table '8 8 zero'
check_output "resume without a table refused" 'has no table to resume' vblkctl resume t
check_output "create with a bad table leaves no device" 'unknown target' vblkctl create u --table '0 8 bogus'
check_output "... (u does not exist)" 'no device named .u.' vblkctl info u
check "remove t" vblkctl remove t
check "remove e" vblkctl remove e
check_output "no devices at the end" '^No devices found$' vblkctl ls

done_testing
