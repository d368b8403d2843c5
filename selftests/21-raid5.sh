#!/usr/bin/env bash
# The raid target (RAID-4/5): dm-raid's table line and status, md's layout
# for every algorithm (vblk's writes read back through dm-raid and dm-raid's
# through vblk), parity right (the XOR of all legs zero) after random
# writes, after the initial sync and after a rebuild; fio verify during the
# initial sync, with a leg failing under load (dm error swapped in below
# it) and during the rebuild; check and repair count and fix a corrupted
# parity; bad table lines refused.
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
parity=$(dirname "$0")/raid5-parity.py
mb=8                    # MiB per leg
per=$((mb * 2048))      # sectors per leg
chunk=128               # 64 KiB
for d in ra rb rc rd re; do nullb "$d" $mb; done
nullb rm 4   # metadata device: the write-intent log
legs4="/dev/ra /dev/rb /dev/rc /dev/rd"
len=$((3 * per))

# raid_line TYPE OPTS LEGS...: a raid table line for LEGS (no metadata).
raid_line() {
	local type=$1 opts=$2 n=0 words="" l; shift 2
	for l in "$@"; do words="$words - $l"; n=$((n + 1)); done
	local nopts; nopts=$(echo "$opts" | wc -w)
	echo "0 $(( (n - 1) * per )) raid $type $((nopts + 1)) $chunk $opts $n$words"
}
# raid_field NAME K: field K of the raid status (1: raid type).
raid_field() { vblkctl status "$1" | awk -v k="$2" '{ print $(3 + k) }'; }
# raid_wait_idle NAME: waits (up to 10 min) for the sync action to be idle.
raid_wait_idle() {
	local i
	for i in $(seq 3000); do
		[ "$(raid_field "$1" 5)" = idle ] && return 0
		sleep 0.2
	done
	return 1
}
xor_rows() { "$parity" "$per" "$@"; }
zero_legs() { local l; for l in "$@"; do blkdiscard -f "$l" 2>/dev/null || dd if=/dev/zero of="$l" bs=1M count=$mb oflag=direct status=none; done; }
gone() { remove_retry "$1"; }

# --- table and status as dm-raid prints them ---
line=$(raid_line raid5_ls nosync $legs4)
# dm-raid first (a leg is held by one stack at a time).
dmsetup create dmr --table "$line"
dm_table=$(dmsetup table dmr)
dm_status=$(dmsetup status dmr)
dm_remove dmr
check "create a 4-leg raid5_ls" vblkctl create r --table "$line"
check_eq "table is what dmsetup prints for the same line" "$dm_table" "$(vblkctl table r)"
check_eq "status as dm-raid prints it (nosync, idle)" "$dm_status" "$(vblkctl status r)"
check_output "status --detail adds the engine's counters" \
	" \\| regions_in_sync=2/2 region_sectors=8192 lanes=[0-9]+ unit_sectors=128 pieces_waiting=0 lanes_busy=0 rmw=0 rcw=0 .* reads=[0-9,]+ writes=[0-9,]+$" \
	vblkctl status --detail r
check_eq "status --json: type, per-leg health, sync action, counters" "raid5_ls AAAA idle 32" \
	"$(vblkctl --json status --detail r | python3 -c 'import json,sys; d=json.load(sys.stdin)[0]["detail"]; print(d["raid_type"], "".join(l["health"] for l in d["legs"]), d["sync"]["action"], d["counters"]["lanes"])')"
gone r

# --- md's layout, both ways, every algorithm ---
# 8 MiB each way (43 stripes: every parity position many times).
lay=16384
for type in raid4 raid5_n raid5_la raid5_ra raid5_ls raid5_rs; do
	zero_legs $legs4
	line=$(raid_line $type nosync $legs4)
	head -c $((lay * 512)) /dev/urandom >"$tmp/v"
	head -c $((lay * 512)) /dev/urandom >"$tmp/d"
	vblkctl create r --table "$line" &&
		dd if="$tmp/v" of=/dev/vblk/r bs=1M oflag=direct status=none
	gone r
	check_eq "$type: vblk's random writes leave the parity right" 0 "$(xor_rows $legs4)"
	dmsetup create dmr --table "$line"
	check "$type: dm-raid reads what vblk wrote" same_bytes "$tmp/v" /dev/mapper/dmr "$lay"
	dd if="$tmp/d" of=/dev/mapper/dmr bs=1M oflag=direct status=none
	dm_remove dmr
	vblkctl create r --table "$line"
	check "$type: vblk reads what dm-raid wrote" same_bytes "$tmp/d" /dev/vblk/r "$lay"
	gone r
done

# --- small and unaligned writes: read-modify-write and reconstruct-write ---
zero_legs $legs4
check "create for random writes" vblkctl create r --table "$(raid_line raid5_la nosync $legs4)"
check "fio verify, mixed block sizes" fio_verify /dev/vblk/r 16M --bssplit=512/10:4k/40:12k/20:64k/20:192k/10 --iodepth=8
check_output "small writes were read-modify-writes and reconstruct-writes" "rmw=[1-9][0-9]* rcw=[1-9]" vblkctl status --detail r
check "sequential 4k writes at depth 16, verified" fio_verify /dev/vblk/r 8M --rw=write --bs=4k --iodepth=16
check_output "writes queued for one unit were gathered into one op" "gathered=[1-9]" vblkctl status --detail r
gone r
check_eq "parity right after random writes" 0 "$(xor_rows $legs4)"

# --- initial sync over garbage, fio verify while it runs ---
for l in $legs4; do dd if=/dev/urandom of=$l bs=1M count=$mb oflag=direct status=none; done
check "legs of garbage have wrong parity" test "$(xor_rows $legs4)" -gt 0
# Leg 3's I/O is delayed 20 ms (dm-delay): the 128 units take seconds,
# and fio runs while they are synced.
dmsetup create rdd --table "0 $per delay /dev/rd 0 20"
slow4="/dev/ra /dev/rb /dev/rc /dev/mapper/rdd"
check "create without nosync: initial sync" vblkctl create r --table "$(raid_line raid5_rs "" $slow4)"
check_output "status shows the resync, legs not in sync" "^0 $len raid raid5_rs 4 aaaa [0-9]+/$per resync 0 0 -$" vblkctl status r
check "fio verify (mixed block sizes) while the array syncs" fio_verify /dev/vblk/r 12M --bssplit=4k/40:16k/30:64k/20:256k/10
check "the sync ends" raid_wait_idle r
check_output "in sync: all legs A, ratio full" "^0 $len raid raid5_rs 4 AAAA $per/$per idle 0 0 -$" vblkctl status r
check_output "the sync passed every unit" "units_synced=$((per / chunk)) " vblkctl status --detail r
check "fio verify after the sync" fio_verify /dev/vblk/r 12M --bs=8k
gone r
dm_remove rdd
check_eq "parity right after the initial sync" 0 "$(xor_rows $legs4)"

# --- check and repair ---
vblkctl create r --table "$(raid_line raid5_rs nosync $legs4)"
check "check of a synced array" vblkctl message r 0 check
check "the check ends" raid_wait_idle r
check_eq "no mismatch" 0 "$(raid_field r 6)"
gone r
# Corrupt 3 rows of leg 2 (whatever they hold, the stripe's XOR breaks).
dd if=/dev/urandom of=/dev/rc bs=4k seek=100 count=3 oflag=direct status=none
vblkctl create r --table "$(raid_line raid5_rs nosync $legs4)"
vblkctl message r 0 check && raid_wait_idle r
check_eq "check counts the corrupted rows (sectors)" 24 "$(raid_field r 6)"
check_eq "check fixes nothing" 3 "$(xor_rows $legs4)"
vblkctl message r 0 repair && raid_wait_idle r
check_eq "repair counts them too" 24 "$(raid_field r 6)"
gone r
check_eq "repair made the parity right" 0 "$(xor_rows $legs4)"

# --- a leg fails under load, reads rebuilt, rebuild onto a new leg ---
zero_legs $legs4
for l in a b c d; do dmsetup create "rl$l" --table "0 $per linear /dev/r$l 0"; done
mlegs="/dev/mapper/rla /dev/mapper/rlb /dev/mapper/rlc /dev/mapper/rld"
check "create on dm-linear legs" vblkctl create r --table "$(raid_line raid5_ls nosync $mlegs)"
fio --name=w --filename=/dev/vblk/r --size=16M --direct=1 --ioengine=libaio --iodepth=8 \
	--rw=randwrite --bssplit=4k/50:64k/50 --verify=crc32c --do_verify=0 --verify_state_save=1 \
	--verify_state_save=0 --randrepeat=1 --output-format=terse >/dev/null
( sleep 2; dmsetup suspend --noflush rlb && dmsetup load rlb --table "0 $per error" && dmsetup resume rlb ) &
check "fio verify (mixed block sizes) while leg 1 fails" fio_verify /dev/vblk/r 16M --iodepth=8 --loops=2 --bssplit=4k/50:16k/30:128k/20
wait
check_output "leg 1 dead, the rest alive" "^0 $len raid raid5_ls 4 ADAA " vblkctl status r
check "degraded: fio verify (reads rebuilt from parity)" fio_verify /dev/vblk/r 16M --bs=16k
check_output "degraded reads were rebuilt" "rebuilt_reads=[1-9]" vblkctl status --detail r
check "degraded: ext4" fs_check ext4 /dev/vblk/r
# The first 8 MiB (the file system's start), as read degraded.
sum_degraded=$(sectors_of /dev/vblk/r 0 16384 | sha256sum)
# A second dead leg fails what needs it.
dmsetup suspend --noflush rlc && dmsetup load rlc --table "0 $per error" && dmsetup resume rlc
check_fails "two dead legs: reads of them fail" dd if=/dev/vblk/r of=/dev/null bs=1M count=8 iflag=direct status=none
gone r
# Rebuild leg 1 onto a device of garbage, leg 2 back; leg 0's I/O delayed
# 20 ms so the rebuild takes seconds.
dmsetup suspend rlc && dmsetup load rlc --table "0 $per linear /dev/rc 0" && dmsetup resume rlc
dmsetup suspend rla && dmsetup load rla --table "0 $per delay /dev/ra 0 20" && dmsetup resume rla
dd if=/dev/urandom of=/dev/re bs=1M count=$mb oflag=direct status=none
rlegs="/dev/mapper/rla /dev/re /dev/mapper/rlc /dev/mapper/rld"
check "create with rebuild 1" vblkctl create r --table "$(raid_line raid5_ls "rebuild 1" $rlegs)"
check_output "status shows the recovery of leg 1" "^0 $len raid raid5_ls 4 AaAA [0-9]+/$per recover 0 0 -$" vblkctl status r
check_eq "what was written degraded reads back while leg 1 is rebuilt" "$sum_degraded" "$(sectors_of /dev/vblk/r 0 16384 | sha256sum)"
check "fio verify (mixed block sizes) while leg 1 is rebuilt" fio_verify /dev/vblk/r 8M --offset=8M --bssplit=4k/50:16k/30:128k/20
check "the rebuild ends" raid_wait_idle r
check_output "rebuilt: AAAA" "^0 $len raid raid5_ls 4 AAAA $per/$per idle 0 0 -$" vblkctl status r
gone r
dmsetup suspend rla && dmsetup load rla --table "0 $per linear /dev/ra 0" && dmsetup resume rla
check_eq "parity right after the rebuild" 0 "$(xor_rows $rlegs)"
for l in a b c d; do dm_remove "rl$l"; done
vblkctl create r --table "$(raid_line raid5_ls nosync /dev/ra /dev/re /dev/rc /dev/rd)"
check_eq "read from the rebuilt leg, it is the same" "$sum_degraded" "$(sectors_of /dev/vblk/r 0 16384 | sha256sum)"
gone r

# --- unclean stop: every leg cut in the middle of writes, the load resyncs ---
zero_legs $legs4
for l in a b c d; do dmsetup create "rl$l" --table "0 $per linear /dev/r$l 0"; done
vblkctl create r --table "$(raid_line raid5_ls nosync $mlegs)"
fio --name=cut --filename=/dev/vblk/r --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite \
	--bssplit=4k/40:12k/30:64k/30 --size=24M --time_based --runtime=60 >/dev/null 2>&1 &
fio_pid=$!
sleep 3
# All legs at once: suspended (in-flight writes held), switched to error.
for l in a b c d; do dmsetup suspend --noflush "rl$l"; done
for l in a b c d; do dmsetup load "rl$l" --table "0 $per error"; dmsetup resume "rl$l"; done
wait $fio_pid
check_output "the cut legs are dead" "raid5_ls 4 [AD]*D[AD]*D" vblkctl status r
gone r
for l in a b c d; do dm_remove "rl$l"; done
diag "rows with wrong parity after the cut: $(xor_rows $legs4)"
check "reloaded without nosync: a full resync" vblkctl create r --table "$(raid_line raid5_ls "" $legs4)"
check "the resync ends" raid_wait_idle r
gone r
check_eq "parity right after the resync" 0 "$(xor_rows $legs4)"

# --- write-intent log on a metadata device ---
# 16 regions of 1024 leg sectors (8 stripes, 3072 array sectors each).
zero_legs $legs4 /dev/rm
dd if=/dev/urandom of=/dev/rc bs=1M count=$mb oflag=direct status=none
# raid_log_line OPTS META LEGS...: leg 0 with a metadata device.
raid_log_line() {
	local opts="region_size 1024${1:+ $1}" meta=$2 first=$3 n=0 words="" l; shift 3
	for l in "$@"; do words="$words - $l"; n=$((n + 1)); done
	echo "0 $((n * per)) raid raid5_ls $(( $(echo "$opts" | wc -w) + 1 )) $chunk $opts $((n + 1)) $meta $first$words"
}
units=$((per / chunk))
check "create with a new log: a full sync" vblkctl create r --table "$(raid_log_line "" /dev/rm /dev/ra /dev/rb /dev/rc /dev/rd)"
check_eq "table names the metadata device" "0 $len raid raid5_ls 3 $chunk region_size 1024 4 $(devno /dev/rm) $(devno /dev/ra) - $(devno /dev/rb) - $(devno /dev/rc) - $(devno /dev/rd)" "$(vblkctl table r)"
check "the sync ends" raid_wait_idle r
check_output "every unit synced, every region in sync" "regions_in_sync=16/16 region_sectors=1024 .* units_synced=$units " vblkctl status --detail r
check "fio verify with the log" fio_verify /dev/vblk/r 8M --bssplit=4k/50:64k/50
gone r
check_eq "a clean stop leaves all 16 regions clean in the log" 16 "$(mirror_clean_bits /dev/rm 16)"
check_eq "parity right" 0 "$(xor_rows $legs4)"
check "reloaded on a clean log" vblkctl create r --table "$(raid_log_line "" /dev/rm /dev/ra /dev/rb /dev/rc /dev/rd)"
check_output "in sync at once: nothing resynced" "^0 $len raid raid5_ls 4 AAAA $per/$per idle 0 0 -$" vblkctl status r
check_output "no unit synced" "units_synced=0 " vblkctl status --detail r
gone r
# Writes confined to region 3 (array sectors 9216..12288), cut in flight.
for l in a b c d m; do dmsetup create "rl$l" --table "0 $(sectors /dev/r$l) linear /dev/r$l 0"; done
vblkctl create r --table "$(raid_log_line "" /dev/mapper/rlm $mlegs)"
fio --name=cut --filename=/dev/vblk/r --direct=1 --ioengine=libaio --iodepth=8 --rw=randwrite \
	--bssplit=4k/50:12k/50 --offset=$((9216 * 512)) --size=$((3072 * 512)) --time_based --runtime=60 >/dev/null 2>&1 &
fio_pid=$!
# Writes wait for their region's dirty mark: once they flow, the log on
# the metadata device says region 3 is dirty, and only it.
log_dirty_3() { [ "$(mirror_clean_bits /dev/mapper/rlm 16)" = 15 ] && ! region_clean /dev/mapper/rlm 3; }
check "while region 3 is written, the log on disk has it (only it) dirty" wait_until 30 log_dirty_3
for l in a b c d m; do dmsetup suspend --noflush "rl$l"; done
for l in a b c d m; do dmsetup load "rl$l" --table "0 $(sectors /dev/r$l) error"; dmsetup resume "rl$l"; done
wait $fio_pid
gone r
for l in a b c d m; do dm_remove "rl$l"; done
dirty=$((16 - $(mirror_clean_bits /dev/rm 16)))
check "after the cut the log has region 3 dirty, only it ($dirty dirty)" \
	eval '[ "$dirty" -eq 1 ] && ! region_clean /dev/rm 3'
vblkctl create r --table "$(raid_log_line "" /dev/rm /dev/ra /dev/rb /dev/rc /dev/rd)"
check "after the cut: the sync of the dirty regions ends" raid_wait_idle r
synced=$(vblkctl status --detail r | sed -n 's/.* units_synced=\([0-9]*\).*/\1/p')
check "only the dirty region was resynced ($synced of $units units)" test "$synced" -eq $((1024 / chunk))
gone r
check_eq "parity right after the partial resync" 0 "$(xor_rows $legs4)"
dmsetup create tiny --table "0 1 linear /dev/re 0"
check_output "a metadata device too small for the log refused" "too small" vblkctl create bad --table "$(raid_log_line "" /dev/mapper/tiny /dev/ra /dev/rb /dev/rc /dev/rd)"
dm_remove tiny

# --- a missing leg ('- -'): starts degraded ---
zero_legs $legs4
check "create with leg 2 missing" vblkctl create r --table "0 $len raid raid5_ls 2 $chunk nosync 4 - /dev/ra - /dev/rb - - - /dev/rd"
check_output "missing leg shown dead, table keeps '- -'" "^0 $len raid raid5_ls 4 AADA " vblkctl status r
check_output "table keeps '- -'" " 4 - [0-9]+:[0-9]+ - [0-9]+:[0-9]+ - - - [0-9]+:[0-9]+$" vblkctl table r
check "fio verify with a leg missing" fio_verify /dev/vblk/r 16M --bssplit=4k/50:64k/30:256k/20
gone r

# --- bad input: refused, nothing created ---
zero_legs $legs4
bad() {
	local desc=$1 table=$2 re=$3
	check_output "refused: $desc" "$re" vblkctl create bad --table "$table"
	check_fails "nothing created ($desc)" test -e /dev/vblk/bad
}
bad "unknown raid type" "0 $len raid raid6_zr 1 $chunk 4 - /dev/ra - /dev/rb - /dev/rc - /dev/rd" "raid6"
bad "raid1" "0 $per raid raid1 1 $chunk 2 - /dev/ra - /dev/rb" "raid1"
bad "chunk not a power of two" "0 $len raid raid5_ls 1 100 4 - /dev/ra - /dev/rb - /dev/rc - /dev/rd" "chunk"
bad "chunk 0" "0 $len raid raid5_ls 1 0 4 - /dev/ra - /dev/rb - /dev/rc - /dev/rd" "chunk"
bad "#raid_params past the line" "0 $len raid raid5_ls 3 $chunk nosync" "raid_params"
bad "#devs not matching the words" "0 $len raid raid5_ls 1 $chunk 5 - /dev/ra - /dev/rb - /dev/rc - /dev/rd" "5"
bad "one leg" "0 $per raid raid5_ls 1 $chunk 1 - /dev/ra" "legs"
bad "a leg used twice" "0 $len raid raid5_ls 1 $chunk 4 - /dev/ra - /dev/rb - /dev/ra - /dev/rd" "same device"
bad "legs too small" "0 $((3 * per * 2)) raid raid5_ls 1 $chunk 4 - /dev/ra - /dev/rb - /dev/rc - /dev/rd" "sectors"
bad "length not a multiple of the stripe" "0 $((len - 8)) raid raid5_ls 1 $chunk 4 - /dev/ra - /dev/rb - /dev/rc - /dev/rd" "multiple"
bad "rebuild index out of range" "0 $len raid raid5_ls 3 $chunk rebuild 4 4 - /dev/ra - /dev/rb - /dev/rc - /dev/rd" "rebuild"
bad "two legs to rebuild" "0 $len raid raid5_ls 5 $chunk rebuild 1 rebuild 2 4 - /dev/ra - /dev/rb - /dev/rc - /dev/rd" "rebuild"
bad "sync and nosync" "0 $len raid raid5_ls 3 $chunk sync nosync 4 - /dev/ra - /dev/rb - /dev/rc - /dev/rd" "sync"
bad "a missing device" "0 $len raid raid5_ls 1 $chunk 4 - /dev/ra - /dev/rb - /dev/rc - /dev/nope" "nope"
bad "an option without its value" "0 $len raid raid5_ls 2 $chunk region_size 4 - /dev/ra - /dev/rb - /dev/rc - /dev/rd" "region_size"
bad "write_mostly refused" "0 $len raid raid5_ls 3 $chunk write_mostly 1 4 - /dev/ra - /dev/rb - /dev/rc - /dev/rd" "write_mostly"
bad "a metadata device that is a leg" "0 $len raid raid5_ls 1 $chunk 4 /dev/rb /dev/ra - /dev/rb - /dev/rc - /dev/rd" "leg"
bad "a missing leg without nosync" "0 $len raid raid5_ls 1 $chunk 4 - /dev/ra - - - /dev/rc - /dev/rd" "nosync"
bad "two missing legs" "0 $len raid raid5_ls 2 $chunk nosync 4 - /dev/ra - - - - - /dev/rd" "missing"
bad "not a number" "0 $len raid raid5_ls x $chunk 4 - /dev/ra - /dev/rb - /dev/rc - /dev/rd" "number"
vblkctl create r --table "$(raid_line raid5_ls nosync $legs4)"
check_output "unknown message refused" "unknown message" vblkctl message r 0 reshape
check_output "check while a check runs refused" "while" sh -c "vblkctl message r 0 frozen; vblkctl message r 0 check; vblkctl message r 0 check"
vblkctl message r 0 idle
gone r

nullb_rm ra rb rc rd re rm
rm -rf "$tmp"
done_testing
