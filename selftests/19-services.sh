#!/usr/bin/env bash
# The framework's services (Documentation/architecture.md), through the
# mirror that stands on them:
# - the copy service: one destination of a multi-destination copy fails in
#   the middle of it (the other gets everything; the failed leg shows S),
#   and the source fails in the middle of a copy (R; nothing hangs);
# - held pieces: writes to a region being copied and writes waiting for
#   their dirty mark are held (counted), never waited for in `map`; a
#   suspend and a `noflush` suspend in the middle both return, and every
#   write is intact (fio verify); a write held for a copy when a `noflush`
#   suspend comes is requeued (still pending while suspended) and
#   completes with its data after the resume;
# - FLUSH reaches the target (its hook): a mirror with a disk log has
#   the clean bits of its idle regions on disk when an fsync returns;
# - the cross-device registry: a disk log claimed by one device's mirror
#   is refused to another device (EBUSY, naming the owner), kept across a
#   reload of its own device, free again once that device is gone;
# - memory pressure: resync and fio verify while every slab and page
#   allocation made with vblk on the stack fails (failslab,
#   fail_page_alloc): no fio error, no hang, legs identical, clean log.
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
n=65536 # sectors per mirror (32 MiB)
rs=1024 # region size: 64 regions
nr=$((n / rs))
for d in sa sb sc sl; do nullb "$d" 64; done
A=/dev/sa B=/dev/sb C=/dev/sc L=/dev/sl
fill() { dd if="$1" of="$2" bs=1M count=$((n / 2048)) oflag=direct status=none; }
# retarget DM TABLE: swap a dm device's table (suspend, load, resume).
retarget() { dmsetup suspend "$1" && dmsetup load "$1" --table "$2" && dmsetup resume "$1"; }
# health_is NAME REGEX [SECONDS]: until the mirror's leg letters match.
health_is() {
	local i
	for i in $(seq $((${3:-20} * 10))); do
		[[ "$(mirror_health "$1")" =~ ^$2$ ]] && return 0
		sleep 0.1
	done
	echo "health $(mirror_health "$1"), expected $2"
	return 1
}

# --- copy: one destination of a 3-way copy fails in the middle ---
fill /dev/urandom $A
fill /dev/zero $B
fill /dev/zero $C
# Leg B's writes take 20 ms: the resync takes seconds.
dmsetup create sdb --table "0 $n delay $B 0 20"
dmsetup create sdc --table "0 $n linear $C 0"
vblkctl create m --table "0 $n mirror core 1 $rs 3 $A 0 /dev/mapper/sdb 0 /dev/mapper/sdc 0"
sleep 2
copied=$(mirror_counter m resync_copied)
check "the copy to legs B and C is under way ($copied of $nr regions)" test "$copied" -lt "$nr"
retarget sdc "0 $n error"
check "leg C fails during the copy: shown as a resync error" health_is m AAS
check "the mirror comes in sync on the legs left" mirror_wait_sync m
check "leg B got every region: equal to the source" same_bytes $A /dev/mapper/sdb $n
check "remove" vblkctl remove m
dm_remove sdb sdc

# --- copy: the source fails in the middle ---
fill /dev/urandom $A
fill /dev/zero $B
dmsetup create sda --table "0 $n linear $A 0"
dmsetup create sdb --table "0 $n delay $B 0 20"
vblkctl create m --table "0 $n mirror core 1 $rs 2 /dev/mapper/sda 0 /dev/mapper/sdb 0"
sleep 2
retarget sda "0 $n error"
check "the source fails during the copy: shown as a read error" health_is m RA
check "... writes still go to the leg left" dd if=/dev/urandom of=/dev/vblk/m bs=4k count=16 oflag=direct status=none
check "... and remove does not hang" timeout 30 vblkctl remove m
dm_remove sda sdb

# --- held writes, with a suspend and a noflush suspend in the middle ---
fill /dev/zero $A
fill /dev/urandom $B
dd if=/dev/zero of=$L bs=1M count=1 oflag=direct status=none
dmsetup create sdb --table "0 $n delay $B 0 20"
check "a disk-log mirror resyncing over a slow leg" \
	vblkctl create m --table "0 $n mirror disk 2 $L $rs 2 $A 0 /dev/mapper/sdb 0"
fio_verify /dev/vblk/m 32M >"$tmp/fio1" 2>&1 &
fio=$!
sleep 3
check "SUSPEND with writes held for the copy and the log returns" timeout 60 vblkctl suspend m
check_output "... the mirror is suspended" '^State: +SUSPENDED$' vblkctl info m
vblkctl resume m
sleep 2
check "SUSPEND --noflush returns too" timeout 60 vblkctl suspend --noflush m
vblkctl resume m
wait "$fio"
check_eq "fio verify across both suspends: no error" 0 "$?"
check "writes to the region being copied were held ($(mirror_counter m held_for_copy))" \
	test "$(mirror_counter m held_for_copy)" -gt 0
check "writes to clean regions were held for their dirty mark ($(mirror_counter m held_for_log))" \
	test "$(mirror_counter m held_for_log)" -gt 0
check "the mirror comes in sync" mirror_wait_sync m
check "the legs are identical" same_bytes $A /dev/mapper/sdb $n
check "remove" vblkctl remove m
dm_remove sdb

# --- a noflush suspend requeues a held write; a resume maps it again ---
fill /dev/urandom $A
fill /dev/zero $B
# Leg B's writes take 2 s: region 0's copy (8 chunks) takes ~16 s.
dmsetup create sdb --table "0 $n delay $B 0 0 $B 0 2000"
vblkctl create m --table "0 $n mirror core 1 $rs 2 $A 0 /dev/mapper/sdb 0"
sleep 1
head -c 4096 /dev/urandom >"$tmp/block"
dd if="$tmp/block" of=/dev/vblk/m bs=4k count=1 oflag=direct status=none &
w=$!
sleep 1
check_eq "a write to the region being copied is held" 1 "$(mirror_counter m held_for_copy)"
check "SUSPEND --noflush returns while the write is held (the copy stops after its chunk)" \
	timeout 30 vblkctl suspend --noflush m
check "... and the write is not done: requeued, not sent" kill -0 "$w"
check_output "... the mirror is suspended" '^State: +SUSPENDED$' vblkctl info m
vblkctl resume m
# ends_within SECONDS PID: PID (a child) exits, successfully, in time.
ends_within() {
	local i
	for i in $(seq $(($1 * 10))); do
		kill -0 "$2" 2>/dev/null || break
		sleep 0.1
	done
	! kill -0 "$2" 2>/dev/null && wait "$2"
}
check "after the resume the requeued write completes" ends_within 60 "$w"
check "... with its data" cmp "$tmp/block" <(sectors_of /dev/vblk/m 0 8)
check "remove" vblkctl remove m
dm_remove sdb

# --- FLUSH: the mirror commits its log before the fsync returns ---
# Legs and log with a volatile write cache: only then does the block
# layer send FLUSHes at all.
for d in fa fb fl; do nullb "$d" 64 cache_size=16; done
vblkctl create m --table "0 $n mirror disk 3 /dev/fl $rs nosync 2 /dev/fa 0 /dev/fb 0"
check_eq "nosync: every region clean in the log" "$nr" "$(mirror_clean_bits /dev/fl $nr)"
flushes=$(mirror_counter m held_for_flush)
# One 4 KiB write into each of 8 regions, then an fsync (an empty FLUSH)
# right away: the log must show them clean again when it returns (lazy
# cleaning alone does it some time later).
fsync_now() { python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$1"; }
for r in $(seq 0 8 56); do
	dd if=/dev/urandom of=/dev/vblk/m bs=4k count=1 seek=$((r * rs / 8)) oflag=direct status=none
done
dirty=$((nr - $(mirror_clean_bits /dev/fl $nr)))
fsync_now /dev/vblk/m
check_eq "after the fsync every region is clean on disk (8 were written, $dirty dirty before it)" \
	"$nr" "$(mirror_clean_bits /dev/fl $nr)"
check "the FLUSH was held by the mirror until then" test "$(mirror_counter m held_for_flush)" -gt "$flushes"
check "remove" vblkctl remove m
nullb_rm fa fb fl

# --- the registry: one disk log, one device ---
vblkctl create m --table "0 $n mirror disk 3 $L $rs nosync 2 $A 0 $B 0"
owner=$(disk_of m)
check_fails "another device's mirror on the same log device is refused" \
	vblkctl create m2 --table "0 $n mirror disk 3 $L $rs nosync 2 $C 0 $C $n"
check_output "... with EBUSY and the owner" "Device or resource busy.*disk log of another device's mirror \($owner\)" \
	vblkctl create m2 --table "0 $n mirror disk 3 $L $rs nosync 2 $C 0 $C $n"
check "... and nothing was left behind" bash -c '! vblkctl info m2'
check "a reload of the owner keeps its claim" \
	bash -c "vblkctl load m --table '0 $n mirror disk 3 $L $rs nosync 2 $A 0 $B 0' && vblkctl resume m"
check "... and still holds it against others" bash -c \
	"! vblkctl create m2 --table '0 $n mirror disk 3 $L $rs nosync 2 $C 0 $C $n' 2>/dev/null"
check "remove" vblkctl remove m
check "the log device is free for another device once the owner is gone" \
	vblkctl create m2 --table "0 $n mirror disk 3 $L $rs nosync 2 $C 0 $C $n"
check "remove" vblkctl remove m2

# --- resync and fio verify with every vblk allocation failing ---
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
dbg=/sys/kernel/debug
# inject on|off: every slab and page allocation with vblk on the stack
# fails (waiting ones too); the I/O path lives on mempools and reserves.
inject() {
	local a size base
	read -r _ size _ _ _ base _ < <(grep '^vblk ' /proc/modules)
	for a in failslab fail_page_alloc; do
		if [ "$1" = off ]; then
			echo 0 >"$dbg/$a/probability"
			continue
		fi
		echo "$base" >"$dbg/$a/require-start"
		printf '0x%x\n' $((base + size)) >"$dbg/$a/require-end"
		echo 32 >"$dbg/$a/stacktrace-depth"
		echo N >"$dbg/$a/ignore-gfp-wait"
		echo 0 >"$dbg/$a/verbose"
		echo 1 >"$dbg/$a/interval"
		echo 1000000000 >"$dbg/$a/times"
		[ -e "$dbg/$a/min-order" ] && echo 0 >"$dbg/$a/min-order"
		[ -e "$dbg/$a/ignore-gfp-highmem" ] && echo N >"$dbg/$a/ignore-gfp-highmem"
		echo 100 >"$dbg/$a/probability"
	done
}
hits() { echo $((2000000000 - $(cat $dbg/failslab/times) - $(cat $dbg/fail_page_alloc/times))); }
# Every page of the legs exists before the faults start (null_blk
# allocates a page on its first write, from our stack).
fill /dev/urandom $A
fill /dev/zero $B
check "a core-log mirror to resync" vblkctl create m --table "0 $n mirror core 1 $rs 2 $A 0 $B 0"
inject on
timeout 600 bash -c ". $(dirname "$0")/lib.sh; fio_verify /dev/vblk/m 16M" >"$tmp/fio2" 2>&1
rc=$?
check "resync + fio verify: no error, no hang, with every vblk allocation failing" test "$rc" -eq 0
h=$(hits)
# Control commands allocate too: read the counters with the faults off.
inject off
copied=$(mirror_counter m resync_copied)
check "... the faults were hit ($h allocations failed)" test "$h" -gt 100
check "... and the resync copied regions meanwhile ($copied of $nr)" test "$copied" -gt 0
check "the mirror comes in sync" mirror_wait_sync m
check "the legs are identical" same_bytes $A $B $n
check "remove" vblkctl remove m

nullb_rm sa sb sc sl
rm -rf "$tmp"
done_testing
