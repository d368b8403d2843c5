#!/usr/bin/env bash
# Fault injection with the kernel's own tools. Every page allocation made
# from vblk's code fails (fail_page_alloc, stack filter on the module's
# text, waiting allocations too): bounce-page writes (crypt, flakey's
# corruption) then live on their 64-page reserve alone. A request larger
# than the reserve must still complete: the reserve comes back as earlier
# bounce bios complete, which they can only do if the writer did not park
# them behind itself (mapping in the submitter used to hang here).
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
fpa=/sys/kernel/debug/fail_page_alloc
n=131072 # 64 MiB

# inject_pages on|off: fail every page allocation with vblk in its stack.
inject_pages() {
	if [ "$1" = off ]; then
		echo 0 >$fpa/probability
		return
	fi
	local size base
	read -r _ size _ _ _ base _ < <(grep '^vblk ' /proc/modules)
	echo "$base" >$fpa/require-start
	printf '0x%x\n' $((base + size)) >$fpa/require-end
	echo 32 >$fpa/stacktrace-depth
	echo N >$fpa/ignore-gfp-wait
	echo N >$fpa/ignore-gfp-highmem
	echo 0 >$fpa/verbose
	echo 0 >$fpa/min-order
	echo 0 >$fpa/space
	echo 1 >$fpa/interval
	echo 1000000000 >$fpa/times
	echo 100 >$fpa/probability
}
hits() { echo $((1000000000 - $(cat $fpa/times))); }
# faulty_write FILE DEV: writes FILE to DEV in 4 MiB O_DIRECT requests with
# page allocations failing; prints "SECONDS RC HITS". A writer that waits
# for its own unsent bios would wait forever: after 120 s the faults stop
# (the wait then ends too) and the write counts as hung (rc 124).
faulty_write() {
	local t0=$SECONDS pid rc=124 h
	inject_pages on
	dd if="$1" of="$2" bs=4M oflag=direct status=none &
	pid=$!
	for _ in $(seq 1200); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
	h=$(hits)
	if kill -0 $pid 2>/dev/null; then
		inject_pages off
		wait $pid
	else
		wait $pid
		rc=$?
		inject_pages off
	fi
	echo "$((SECONDS - t0)) $rc $h"
}

nullb fa 64
nullb fb 64
# Every page of the lower devices exists before the faults start (null_blk
# allocates its pages on first write, from our stack).
for d in /dev/fa /dev/fb; do dd if=/dev/zero of=$d bs=1M count=64 oflag=direct status=none; done
head -c 16M /dev/urandom >"$tmp/data"
key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

check "crypt over a null_blk" vblkctl create c --table "0 $n crypt aes-xts-plain64 $key 0 /dev/fa 0"
check "a reference copy of the same data through crypt first" \
	dd if="$tmp/data" of=/dev/vblk/c bs=1M oflag=direct status=none
sectors_of /dev/fa 0 32768 | sha256sum >"$tmp/cipher.sum"
dd if=/dev/zero of=/dev/fa bs=1M count=16 oflag=direct status=none
read -r secs rc h < <(faulty_write "$tmp/data" /dev/vblk/c)
check_eq "4 MiB crypt writes (5x the page reserve per request) complete with every vblk page allocation failing" 0 "$rc"
check "... the faults were hit ($h allocations failed in ${secs}s)" test "$h" -gt 100
check_eq "... and the ciphertext is the same as without faults" "$(cat "$tmp/cipher.sum")" \
	"$(sectors_of /dev/fa 0 32768 | sha256sum)"
check "... and reads back" cmp "$tmp/data" <(sectors_of /dev/vblk/c 0 32768)
remove_retry c

check "flakey corrupting every write" vblkctl create f --table "0 $n flakey /dev/fb 0 0 1 5 corrupt_bio_byte 1 w 0 0"
read -r secs rc h < <(faulty_write "$tmp/data" /dev/vblk/f)
check_eq "flakey's corrupting writes complete too with every page allocation failing" 0 "$rc"
check "... the faults were hit ($h allocations failed in ${secs}s)" test "$h" -gt 100
remove_retry f

nullb_rm fa fb
rm -rf "$tmp"
done_testing
