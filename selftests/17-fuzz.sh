#!/usr/bin/env bash
# The control surface under hostile and failing conditions:
# - every allocation on vblk's behalf in LOAD and in the first RESUME (which
#   creates the disk) is made to fail in turn (fail-nth, the syzkaller way,
#   failslab and fail_page_alloc filtered to vblk's stack): each run
#   succeeds or fails with an errno and a message, and leaves nothing
#   half-made;
# - the fuzzer (vblk-fuzz): 3 processes send random and mutated ioctls and
#   grammar-built tables for VBLK_FUZZ_SECONDS (default 40) while fio
#   verifies I/O on another vblk device; seed VBLK_FUZZ_SEED (default 1);
# - rmmod while devices exist is refused.
# No splat, every refusal explained, no device left, and (guest.sh) the
# module unloads and kmemleak finds nothing of vblk's.
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
dbg=/sys/kernel/debug
read -r _ size _ _ _ base _ < <(grep '^vblk ' /proc/modules)

# scope ATTR: ATTR's faults only for allocations with vblk on the stack,
# waiting ones and order 0 included; armed per task by fail-nth only.
scope() {
	local a=$dbg/$1
	echo "$base" >"$a/require-start"
	printf '0x%x\n' $((base + size)) >"$a/require-end"
	echo 32 >"$a/stacktrace-depth"
	echo N >"$a/ignore-gfp-wait"
	echo 0 >"$a/verbose"
	echo 0 >"$a/probability"
	[ -e "$a/min-order" ] && echo 0 >"$a/min-order"
	[ -e "$a/ignore-gfp-highmem" ] && echo N >"$a/ignore-gfp-highmem"
}
scope failslab
scope fail_page_alloc
# User copies are not under test here (a failed copy is EFAULT with no
# place for a message): a range no stack is in.
echo 1 >$dbg/fail_usercopy/require-start
echo 2 >$dbg/fail_usercopy/require-end

nullb fz 64
dd if=/dev/zero of=/dev/fz bs=1M count=64 oflag=direct status=none
dd if=/dev/zero of=/dev/ram0 bs=1M count=8 oflag=direct status=none
key=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
points=0
# nth WHAT ARGS...: vblk-fuzz fail-nth, counting its fault points.
nth() {
	local what=$1 out rc; shift
	out=$(vblk-fuzz fail-nth --name fnth "$@" 2>&1)
	rc=$?
	diag "$out"
	check_eq "$what: every injected allocation failure refused cleanly or absorbed" 0 "$rc"
	n=$(sed -n 's/.*: \([0-9]*\) fault points.*/\1/p' <<<"$out" | tail -1)
	points=$((points + ${n:-0}))
}
nth "LOAD linear" --table "0 8192 linear /dev/fz 0"
nth "LOAD striped" --table "0 8192 striped 2 8 /dev/fz 0 /dev/ram0 0"
nth "LOAD crypt" --table "0 8192 crypt aes-xts-plain64 $key 0 /dev/fz 0"
nth "LOAD flakey (corrupting, with a page pool)" --table "0 8192 flakey /dev/fz 0 0 1 5 corrupt_bio_byte 1 w 0 0"
nth "LOAD mirror (core log)" --table "0 8192 mirror core 2 1024 nosync 2 /dev/fz 0 /dev/ram0 0"
nth "LOAD mirror (disk log)" --table "0 8192 mirror disk 2 /dev/ram0 1024 2 /dev/fz 0 /dev/ram0 2048"
nth "LOAD snapshot-origin" --table "0 8192 snapshot-origin /dev/fz"
dd if=/dev/zero of=/dev/ram1 bs=1M count=8 oflag=direct status=none
nth "LOAD snapshot (persistent store: header read, areas loaded)" --table "0 8192 snapshot /dev/fz /dev/ram1 P 16"
nth "LOAD raid (lanes, buffers, worker)" --table "0 8192 raid raid5_ls 2 8 nosync 3 - /dev/fz - /dev/ram0 - /dev/ram1"
dd if=/dev/zero of=/dev/ram1 bs=1M count=8 oflag=direct status=none
nth "LOAD thin-pool (metadata formatted or opened, cache, buffers)" --table "0 8192 thin-pool /dev/ram1 /dev/fz 128 0"
vblkctl create fzpool --table "0 8192 thin-pool /dev/ram1 /dev/fz 128 0" && vblkctl message fzpool 0 create_thin 0
nth "LOAD thin (pool found, device looked up)" --table "0 8192 thin /dev/vblk/fzpool 0"
remove_retry fzpool
# RESUME creates a disk: ~800 fault points, ~0.3 s each under TCG. make
# test tries every VBLK_FAIL_NTH_STRIDE-th (10); make test-long every one.
stride=${VBLK_FAIL_NTH_STRIDE:-10}
nth "first RESUME (disk creation) of linear, every ${stride}th point" --resume --stride "$stride" \
	--table "0 8192 linear /dev/fz 0"
nth "first RESUME of mirror (log read, jobs start), every ${stride}th point" --resume --stride "$stride" \
	--table "0 8192 mirror disk 2 /dev/ram0 1024 2 /dev/fz 0 /dev/ram0 2048"
check "fault points hit across LOAD and RESUME: $points" test "$points" -gt 400
check_output "no device left behind" '^No devices found$' vblkctl ls

# --- the fuzzer, with I/O running on another device ---
check "an I/O device beside the fuzzed ones" vblkctl create fzio --table "0 $(sectors /dev/fz) linear /dev/fz 0"
fio_verify /dev/vblk/fzio 32M --time_based --runtime=$((${VBLK_FUZZ_SECONDS:-40} + 10)) >"$tmp/fio" 2>&1 &
fio=$!
seed=${VBLK_FUZZ_SEED:-1}
# rmmod attempts all along (fzio exists throughout: each must be refused).
( while [ ! -e "$tmp/fuzz.done" ]; do rmmod vblk 2>/dev/null && echo unloaded; sleep 0.5; done ) >"$tmp/rmmod" &
rmmods=$!
vblk-fuzz fuzz --seed "$seed" --seconds "${VBLK_FUZZ_SECONDS:-40}" --procs 3 >"$tmp/fuzz" 2>&1
rc=$?
touch "$tmp/fuzz.done"
wait "$rmmods"
diag "$(cat "$tmp/fuzz")"
check_eq "fuzzer (seed $seed): no refusal without a message, every fuzzed device removable" 0 "$rc"
calls=$(awk '/^proc [0-9]*: [0-9]* calls/ { s += $3 } END { print s + 0 }' "$tmp/fuzz")
check "... it made calls (${calls:-0})" test "${calls:-0}" -gt 100
wait "$fio"
check_eq "fio verify on a device beside the fuzzer: no errors" 0 "$?"
check_eq "rmmod attempts during the fuzz were all refused" "" "$(cat "$tmp/rmmod")"
check "rmmod while a device exists is refused" bash -c '! rmmod vblk 2>/dev/null'
check "... and the device still works" fio_verify /dev/vblk/fzio 4M
remove_retry fzio
check_output "no device left" '^No devices found$' vblkctl ls

nullb_rm fz
rm -rf "$tmp"
done_testing
