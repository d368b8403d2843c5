#!/usr/bin/env bash
# Thin pools running out of room and growing, as dm-thin: the low water
# mark raises an event; out of data space, `error_if_no_space` fails
# writes with ENOSPC, `queue_if_no_space` holds them (until the timeout,
# or until a reload grows the pool: then they go on, nothing lost);
# features change on reload; a pool never shrinks; discards are passed
# down to the data device (unless `no_discard_passdown`); `read_only`;
# metadata snapshots (`thin_dump -m` reads them while the pool is live);
# out of metadata space the pool turns read-only with `needs_check`,
# thin_check still accepts it, and a grown metadata device gives room
# again. dm-thin agrees with the grown pool at the end.
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
nullb sm 8            # metadata, through mlin (64 blocks of 4 KiB at first)
nullb sd 64 discard=1 # data, through dlin (8 MiB = 128 blocks at first)
bs=128
vsize=$((64 * 2048))

cleanup() {
	for d in t1 t0 pool dlin mlin; do vblkctl info "$d" >/dev/null 2>&1 && remove_retry "$d"; done
	dmsetup info dpool >/dev/null 2>&1 && dmsetup remove --retry dpool
	nullb_rm sm sd
	rm -rf "$tmp"
}
trap 'cleanup >/dev/null 2>&1; rm -f "$_tap_out"' EXIT

pool_line() { echo "0 $1 thin-pool /dev/vblk/mlin /dev/vblk/dlin $bs 16 ${2:-0}"; }
reload_pool() { vblkctl load pool --table "$(pool_line "$@")" && vblkctl resume pool; }
pool_field() { vblkctl status pool | awk -v k="$1" '{ print $(3 + k) }'; }
used_data() { pool_field 3 | cut -d/ -f1; }
events() { vblkctl --json info "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["event_nr"])'; }
put() { dd if="$1" of=/dev/vblk/t0 bs=64k count="$2" seek="$3" oflag=direct conv=notrunc,nocreat status=none; }
sum() { sectors_of /dev/vblk/t0 $(($1 * bs)) $(($2 * bs)) | sha256sum | cut -c1-64; }
# copies DEV FILE: how many 64 KiB blocks of DEV hold FILE's 64 KiB.
# (Read with O_DIRECT: the thin writes the data device below its page
# cache.)
copies() {
	dd if="$1" bs=1M iflag=direct status=none | python3 -c '
import sys
want = open(sys.argv[1], "rb").read(65536)
f = sys.stdin.buffer
print(sum(1 for b in iter(lambda: f.read(65536), b"") if b == want))' "$2"
}
# dump_mapped ARGS: blocks thin_dump ARGS lists as mapped.
dump_mapped() {
	thin_dump "$@" | python3 -c '
import re, sys
n = 0
for line in sys.stdin:
    m = re.search(r"<range_mapping .*length=\"(\d+)\"", line)
    n += int(m.group(1)) if m else ("<single_mapping" in line)
print(n)'
}

head -c 8M /dev/urandom >"$tmp/a"
head -c 64k /dev/urandom >"$tmp/p"
head -c 64k /dev/urandom >"$tmp/q"
vblkctl create mlin --table "0 512 linear /dev/sm 0"
vblkctl create dlin --table "0 16384 linear /dev/sd 0"
dd if=/dev/zero of=/dev/vblk/mlin bs=4k count=1 oflag=direct status=none

refused "a pool longer than its data device refused" "beyond the data device" \
	vblkctl create pool --table "$(pool_line 16400)"
check "create the pool: 128 data blocks, low water mark 16" vblkctl create pool --table "$(pool_line 16384)"
check "create_thin 0" vblkctl message pool 0 create_thin 0
check "thin 0 (64 MiB virtual)" vblkctl create t0 --table "0 $vsize thin /dev/vblk/pool 0"

# --- low water mark ---
ev=$(events pool)
check "write 104 blocks (24 left: above the mark)" put "$tmp/a" 104 0
check_eq "no event yet" "$ev" "$(events pool)"
check "write 8 more (16 left: at the mark)" dd if="$tmp/a" of=/dev/vblk/t0 bs=64k count=8 skip=104 seek=104 oflag=direct status=none
check "the low water mark raised an event (vblkctl wait returns)" timeout 10 vblkctl wait pool "$ev"
check_eq "status: rw, 112 of 128 blocks" "112/128 rw" "$(pool_field 3) $(pool_field 5)"
want=$(sum 0 112)

# --- out of space, error_if_no_space ---
check "reload with error_if_no_space (features change on reload)" reload_pool 16384 "1 error_if_no_space"
check_eq "table shows it" "$(pool_line 16384 "1 error_if_no_space" | sed "s#/dev/vblk/mlin#$(devno /dev/vblk/mlin)#; s#/dev/vblk/dlin#$(devno /dev/vblk/dlin)#")" "$(vblkctl table pool)"
check "fill the last 16 blocks" dd if="$tmp/a" of=/dev/vblk/t0 bs=64k count=16 seek=200 oflag=direct status=none
start=$SECONDS
refused "a write needing a block fails at once with ENOSPC" "No space left on device" \
	dd if="$tmp/a" of=/dev/vblk/t0 bs=64k count=1 seek=300 oflag=direct status=none
check "... at once" test $((SECONDS - start)) -lt 5
check_output "status: out_of_data_space, error_if_no_space" "^0 16384 thin-pool 0 [0-9]+/64 128/128 - out_of_data_space discard_passdown error_if_no_space - 16$" vblkctl status pool
check "writes to provisioned blocks still work" put "$tmp/a" 4 0
check_eq "reads still work" "$want" "$(sum 0 112)"

# --- queue_if_no_space: a timeout ---
check "reload without features: queue_if_no_space" reload_pool 16384
refused "no_space_timeout needs seconds" "takes <seconds>" vblkctl message pool 0 no_space_timeout soon
check "no_space_timeout 2" vblkctl message pool 0 no_space_timeout 2
start=$SECONDS
refused "a queued write fails with ENOSPC after the timeout" "No space left on device" \
	dd if="$tmp/a" of=/dev/vblk/t0 bs=64k count=1 seek=301 oflag=direct status=none
check "... not before 2 s" test $((SECONDS - start)) -ge 2

# --- queue_if_no_space: held until the pool grows ---
check "no_space_timeout 0 (wait for ever)" vblkctl message pool 0 no_space_timeout 0
dd if="$tmp/a" of=/dev/vblk/t0 bs=64k count=16 seek=400 oflag=direct conv=notrunc status=none 2>"$tmp/dd.err" &
writer=$!
sleep 3
check "a write needing blocks is held, not failed" kill -0 "$writer"
check_output "status: out_of_data_space, queue_if_no_space" " out_of_data_space discard_passdown queue_if_no_space " vblkctl status pool
refused "a shorter pool refused (it cannot shrink)" "cannot shrink" vblkctl load pool --table "$(pool_line 8192)"
check "grow the data device (dlin 8 -> 64 MiB)" bash -c "vblkctl load dlin --table '0 131072 linear /dev/sd 0' && vblkctl resume dlin"
ev=$(events pool)
check "reload the pool with the larger length" reload_pool 131072
wait "$writer"
check_eq "the held write completed" "0" "$?"
check_eq "its data is there" "$(head -c 1M "$tmp/a" | sha256sum | cut -c1-64)" "$(sum 400 16)"
check_eq "the data written before is there" "$want" "$(sum 0 112)"
check_eq "status: rw, 1024 blocks" "144/1024 rw" "$(pool_field 3) $(pool_field 5)"

# --- discard passdown ---
check "write a block" put "$tmp/p" 1 500
check_eq "the data device holds it once" 1 "$(copies /dev/vblk/dlin "$tmp/p")"
check "discard half of it" blkdiscard -o $((500 * 65536)) -l 32768 /dev/vblk/t0
check_eq "a partial discard unmaps nothing (as dm)" 145 "$(used_data)"
check "discard the whole block" blkdiscard -o $((500 * 65536)) -l 65536 /dev/vblk/t0
check_eq "the block went back to the pool" 144 "$(used_data)"
check_eq "and was discarded on the data device (null_blk reads zeros)" 0 "$(copies /dev/vblk/dlin "$tmp/p")"
check "reload with no_discard_passdown" reload_pool 131072 "1 no_discard_passdown"
check_output "status says so" " rw no_discard_passdown " vblkctl status pool
check "write another block" put "$tmp/q" 1 501
check "discard it" blkdiscard -o $((501 * 65536)) -l 65536 /dev/vblk/t0
check_eq "unmapped" 144 "$(used_data)"
check_eq "but not discarded on the data device" 1 "$(copies /dev/vblk/dlin "$tmp/q")"

# --- read_only ---
check "reload with read_only" reload_pool 131072 "1 read_only"
check_output "status: ro" " - ro discard_passdown queue_if_no_space - 16$" vblkctl status pool
check "a write to a provisioned block works" put "$tmp/a" 1 0
refused "a write needing a block fails" "Input/output error" put "$tmp/a" 1 600
refused "messages are refused" "read-only" vblkctl message pool 0 create_thin 1
check "reload without read_only: rw again" reload_pool 131072
check "create_thin 1" vblkctl message pool 0 create_thin 1

# --- metadata snapshots ---
check "reserve_metadata_snap" vblkctl message pool 0 reserve_metadata_snap
held=$(pool_field 4)
check "status names the held root" test "$held" -gt 0
refused "a second reserve refused (EBUSY)" "already held" vblkctl message pool 0 reserve_metadata_snap
before=$(dump_mapped -m /dev/vblk/mlin)
check_eq "thin_dump -m reads the snapshot of the live pool: 144 blocks mapped" 144 "$before"
check "write 16 new blocks and flush (commit)" bash -c "dd if=$tmp/a of=/dev/vblk/t0 bs=64k count=16 seek=700 oflag=direct,sync status=none && sync"
check_eq "the thin maps 160 blocks now" "$((160 * bs))" "$(vblkctl status t0 | cut -d' ' -f4)"
check_eq "the snapshot still shows 144" 144 "$(dump_mapped -m /dev/vblk/mlin)"
check "release_metadata_snap" vblkctl message pool 0 release_metadata_snap
check_eq "status: none held" - "$(pool_field 4)"
refused "a second release refused" "no metadata snapshot" vblkctl message pool 0 release_metadata_snap

# --- out of metadata space ---
ev=$(events pool)
id=2
while vblkctl message pool 0 create_thin $id >"$tmp/msg" 2>&1; do
	id=$((id + 1))
	[ $id -lt 500 ] || break
done
check_output "create_thin stops with 'out of metadata space' (after $id thins)" "out of metadata space" cat "$tmp/msg"
check_output "status: ro, needs_check" " ro discard_passdown queue_if_no_space needs_check 16$" vblkctl status pool
check "an event said so" test "$(events pool)" -gt "$ev"
check "the metadata low water mark was reached first (kernel log)" bash -c "dmesg | grep -q 'reached the metadata low water mark (1[0-6] free blocks)'"
refused "messages refused now" "read-only" vblkctl message pool 0 delete 1
check_eq "the data is intact" "$want" "$(sum 0 112)"
refused "a write needing a block fails" "Input/output error" put "$tmp/a" 1 800
remove_retry t0
remove_retry pool
check "thin_check accepts the metadata" thin_check /dev/vblk/mlin
check "reloaded, the pool stays read-only (needs_check)" vblkctl create pool --table "$(pool_line 131072)"
check_output "status: ro needs_check" " ro .* needs_check 16$" vblkctl status pool
remove_retry pool
check "thin_check --clear-needs-check-flag" thin_check --clear-needs-check-flag /dev/vblk/mlin
check "grow the metadata device (64 -> 512 blocks)" bash -c "vblkctl load mlin --table '0 4096 linear /dev/sm 0' && vblkctl resume mlin"
check "the pool loads rw and takes the new room" vblkctl create pool --table "$(pool_line 131072)"
check_output "status: 512 metadata blocks, rw" "^0 131072 thin-pool 0 [0-9]+/512 [0-9]+/1024 - rw " vblkctl status pool
check "create_thin works again" vblkctl message pool 0 create_thin $((id + 1))
check "grow the metadata device again, live (512 -> 1024 blocks)" bash -c "vblkctl load mlin --table '0 8192 linear /dev/sm 0' && vblkctl resume mlin && vblkctl load pool --table '$(pool_line 131072)' && vblkctl resume pool"
check_output "status: 1024 metadata blocks" "^0 131072 thin-pool 0 [0-9]+/1024 " vblkctl status pool
check "thin 0 again" vblkctl create t0 --table "0 $vsize thin /dev/vblk/pool 0"
check_eq "its data survived it all" "$want" "$(sum 0 112)"

# --- the metadata device fails mid-writes ---
check "1 MiB written and flushed" dd if="$tmp/a" of=/dev/vblk/t0 bs=64k count=16 seek=900 oflag=direct conv=fsync status=none
want2=$(sum 900 16)
check "16 new blocks written, not flushed" put "$tmp/a" 16 920
check "the metadata device swapped to error" bash -c "vblkctl load mlin --table '0 8192 error' && vblkctl resume mlin"
refused "the next flush fails (the commit cannot be written)" "Input/output error" \
	dd if="$tmp/a" of=/dev/vblk/t0 bs=64k count=1 seek=940 oflag=direct conv=fsync status=none
check_output "the pool failed: status Fail" "thin-pool Fail" vblkctl status pool
check_output "the thin too" "thin Fail" vblkctl status t0
refused "messages refused" "read-only or failed" vblkctl message pool 0 create_thin 900
remove_retry t0
remove_retry pool
check "the metadata device back" bash -c "vblkctl load mlin --table '0 8192 linear /dev/sm 0' && vblkctl resume mlin"
check "thin_check: the last commit is whole" thin_check /dev/vblk/mlin
check "the pool loads" vblkctl create pool --table "$(pool_line 131072)"
check "thin 0" vblkctl create t0 --table "0 $vsize thin /dev/vblk/pool 0"
check_eq "the flushed write is there" "$want2" "$(sum 900 16)"
check_eq "and the older data" "$want" "$(sum 0 112)"
used=$(used_data)
remove_retry t0
remove_retry pool
check "thin_check at the end" thin_check /dev/vblk/mlin
check "dm-thin activates the grown pool" dmsetup create dpool --table "0 131072 thin-pool $(devno /dev/vblk/mlin) $(devno /dev/vblk/dlin) $bs 16"
check_output "dm-thin agrees: the same data use of 1024 blocks, 1024 metadata blocks" "^0 131072 thin-pool 0 [0-9]+/1024 $used/1024 - rw " dmsetup status dpool
dm_remove dpool

done_testing
