#!/usr/bin/env bash
# The mirror target (RAID1), against dm's mirror: table and status in dm's
# form, resync (core and disk log) while fio verifies, legs byte-identical
# after every run, read balancing, leg failure under load (dm error below
# a leg), replacement and resync, the dirty mark written before the data,
# unclean shutdown with the disk log (only the dirty regions are copied),
# and the disk log read by dm-mirror. Review bugs: a second writer to a
# region being dirtied waits too; leg 0 failing (the source moves to a
# surviving leg, recorded in the log, and a reload copies the right way);
# readahead errors fail no leg; a suspend stuck behind the resync is
# interruptible; REMOVE lets go of the legs before it returns.
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
n=65536   # sectors per mirror (32 MiB)
rs=1024   # region size: 64 regions
nr=$((n / rs))
for d in ma mb mc ml; do nullb "$d" 64 discard=1; done
A=/dev/ma B=/dev/mb C=/dev/mc L=/dev/ml
devA=$(devno $A) devB=$(devno $B) devC=$(devno $C) devL=$(devno $L)

event_nr() { vblkctl --json info "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["event_nr"])'; }
fill() { dd if="$1" of="$2" bs=1M count=$((n / 2048)) oflag=direct status=none; }
# legs_equal A B: the mirror's n sectors of A and B are identical (1 MiB
# O_DIRECT reads).
legs_equal() {
	cmp <(dd if="$1" bs=1M count=$((n / 2048)) iflag=direct status=none) \
		<(dd if="$2" bs=1M count=$((n / 2048)) iflag=direct status=none)
}
gone() { remove_retry "$1"; }
# log_bits DEV: how many of the nr clean bits of a disk log are set.
log_bits() { mirror_clean_bits "$1" "$nr"; }
# log_header DEV: magic, version and region count of a disk log, in hex.
log_header() { dd if="$1" bs=512 count=1 iflag=direct status=none | head -c 16 | od -An -tx1 | tr -s ' ' | sed 's/^ //'; }

# --- table and status in dm's form ---
core="core 1 $rs 2 $A 0 $B 0"
dmsetup create dmm --table "0 $n mirror $core 1 handle_errors"
dm_table=$(dmsetup table dmm)
dm_remove dmm
check "create core log mirror" vblkctl create m --table "0 $n mirror $core 1 handle_errors"
check_eq "table is what dmsetup prints for the same line" "$dm_table" "$(vblkctl table m)"
check_output "status in dm's form: legs, regions in sync, leg health, log" \
	"^0 $n mirror 2 $devA $devB [0-9]+/$nr 1 AA 1 core$" vblkctl status m
check_output "status --detail adds counters after ' | '" \
	" \\| sync_sectors=[0-9]+/$n resync_copied=[0-9]+ held_for_copy=[0-9]+ held_for_log=[0-9]+ held_for_flush=[0-9]+ reads=[0-9]+,[0-9]+ writes=[0-9]+,[0-9]+$" \
	vblkctl status --detail m
check "targets lists mirror" sh -c 'vblkctl targets | grep -q "^mirror "'
gone m
check_eq "disk log table as dmsetup prints it" "0 $n mirror disk 3 $devL $rs nosync 2 $devA 0 $devB 0" \
	"$(vblkctl create m --table "0 $n mirror disk 3 $L $rs nosync 2 $A 0 $B 0" && vblkctl table m)"
gone m

# --- initial resync with a core log, fio verify running during it ---
head -c $((n * 512)) /dev/urandom >"$tmp/a"
fill "$tmp/a" $A
fill /dev/zero $B
check "legs differ before the mirror exists" bash -c "! cmp -s <(head -c 1M $tmp/a) <(dd if=$B bs=1M count=1 iflag=direct status=none)"
# Leg B's writes are delayed 50 ms (dm-delay), so the copy of 512 steps
# takes seconds and fio runs while it does.
dmsetup create db --table "0 $n delay $B 0 0 $B 0 50"
vblkctl create m --table "0 $n mirror core 1 $rs 2 $A 0 /dev/mapper/db 0"
ev0=$(event_nr m)
synced=$(mirror_in_sync m)
check "just created: not all regions in sync ($synced)" test "${synced%/*}" -lt "$nr"
check "fio verify while the resync runs" fio_verify /dev/vblk/m 8M
diag "in sync when fio ended: $(mirror_in_sync m)"
check "resync completes" mirror_wait_sync m
check "an event was raised when the mirror came in sync" timeout 10 vblkctl wait m "$ev0"
check "after sync the legs are byte-identical" legs_equal $A $B
check_eq "every region was copied once (core log: a full resync)" "$nr" "$(mirror_counter m resync_copied)"
check "the mirror reads back what fio left on leg A" legs_equal /dev/vblk/m $A

# --- read balancing: both legs serve reads of in-sync regions ---
r0=$(mirror_counter m reads)
dd if=/dev/vblk/m of=/dev/null bs=64k count=256 iflag=direct status=none
r1=$(mirror_counter m reads)
ra=$(( ${r1%,*} - ${r0%,*} )) rb=$(( ${r1#*,} - ${r0#*,} ))
check "256 reads balanced over both legs (A $ra, B $rb)" test "$ra" -ge 100 -a "$rb" -ge 100
check_output "status --json has per-leg read counts" '"reads":[0-9]+' vblkctl --json status m
gone m
dm_remove db

# --- nosync: in sync at once, nothing copied ---
fill /dev/zero $B
vblkctl create m --table "0 $n mirror core 2 $rs nosync 2 $A 0 $B 0"
check_eq "nosync: every region in sync at once" "$nr/$nr" "$(mirror_in_sync m)"
check_eq "nosync: nothing copied" 0 "$(mirror_counter m resync_copied)"
check "nosync: legs left as they were" bash -c "! cmp -s <(dd if=$A bs=1M count=1 iflag=direct status=none) <(dd if=$B bs=1M count=1 iflag=direct status=none)"
gone m

# --- leg failure under load: dm below leg B switches to error ---
dmsetup create lb --table "0 $n linear $B 0"
vblkctl create m --table "0 $n mirror core 1 $rs 2 $A 0 /dev/mapper/lb 0"
check "legs on dm: resync completes" mirror_wait_sync m
ev1=$(event_nr m)
fio --name=load --filename=/dev/vblk/m --size=12M --direct=1 --ioengine=io_uring --iodepth=16 \
	--rw=randwrite --bs=4k --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=0 \
	--verify_state_save=0 --output-format=terse >"$tmp/fio" 2>&1 &
fio=$!
sleep 2
dmsetup suspend lb && dmsetup load lb --table "0 $n error" && dmsetup resume lb
wait "$fio"
check_eq "fio verify with leg B failing under it: no errors" 0 "$?"
check_output "leg B shown failed (D), leg A alive" "^0 $n mirror 2 $devA [0-9:]+ [0-9]+/$nr 1 AD 1 core$" vblkctl status m
check "an event was raised for the failed leg" timeout 10 vblkctl wait m "$ev1"
check "reads are served by leg A" legs_equal /dev/vblk/m $A
check "a write with fsync (FLUSH) succeeds with leg B failed" \
	dd if=/dev/urandom of=/dev/vblk/m bs=64k count=4 oflag=direct conv=fsync status=none
check "suspend (which flushes every lower device) succeeds with leg B failed" vblkctl suspend m
check "... and resume" vblkctl resume m
# Replace the leg (blank it, so only a resync can make it equal).
dmsetup suspend lb && dmsetup load lb --table "0 $n linear $C 0" && dmsetup resume lb
fill /dev/zero $C
check "reload with the replaced leg" sh -c "vblkctl load m --table '0 $n mirror core 1 $rs 2 $A 0 /dev/mapper/lb 0' && vblkctl resume m"
check "the replaced leg is resynced" mirror_wait_sync m
check_output "both legs alive again" " 1 AA 1 core$" vblkctl status m
check "legs identical after the resync" legs_equal $A $C
gone m
dm_remove lb

# --- read errors on a leg are retried on the other ---
fill "$tmp/a" $A
fill "$tmp/a" $B
dmsetup create fa --table "0 $n flakey $A 0 0 1 1 error_reads"
vblkctl create m --table "0 $n mirror core 2 $rs nosync 2 /dev/mapper/fa 0 $B 0"
check "leg A fails every read: the mirror still reads the right data" legs_equal /dev/vblk/m "$tmp/a"
check_output "leg A shown with a read error (R)" " 1 RA 1 core$" vblkctl status m
gone m
dm_remove fa

# --- a retry is per line: a read error on one line's leg does not fail
# the piece of another line in the same request (here one not in sync) ---
h=$((n / 2))
dmsetup create db --table "0 $n delay $B 0 0 $B 0 200"
dmsetup create fc --table "0 $n flakey $C 0 0 1 1 error_reads"
vblkctl create m --table "0 $h mirror core 1 $rs 2 $A 0 /dev/mapper/db 0
$h $h mirror core 2 $rs nosync 2 /dev/mapper/fc 0 $L 0"
ok=yes
for _ in 1 2 3 4; do
	dd if=/dev/vblk/m of=/dev/null bs=4k skip=$((h / 8 - 1)) count=2 iflag=direct status=none || ok=no
done
check_eq "reads across both lines (line 1 resyncing, line 2 retried after a read error) succeed" yes "$ok"
check_output "... line 2's failing leg is marked (R)" " 1 RA 1 core$" vblkctl status m
diag "line 1 in sync: $(vblkctl status m | head -1 | awk '{ print $(4 + $4 + 1) }')"
gone m
dm_remove db
dm_remove fc

# --- readahead errors are not the leg's fault (dm, md) ---
vblkctl create z --table "0 $n zero"
vblkctl create m --table "0 $n mirror core 2 $rs nosync 2 $A 0 /dev/vblk/z 0"
check "buffered reads (readahead) over a leg that fails readahead (a zero device)" \
	dd if=/dev/vblk/m of=/dev/null bs=1M status=none
check_output "... fail no leg" " 1 AA 1 core$" vblkctl status m
gone m
gone z

# --- a suspend stuck behind the resync can be interrupted ---
fill /dev/zero $B
dmsetup create db --table "0 $n delay $B 0 50"
vblkctl create m --table "0 $n mirror core 1 $rs 2 $A 0 /dev/mapper/db 0"
sleep 1
dmsetup suspend db   # the resync's next copy to leg B waits
(timeout -s INT 3 vblkctl suspend m >"$tmp/susp" 2>&1; echo "rc=$?" >"$tmp/susp.rc") &
s=$!
sleep 6
check_eq "SUSPEND waiting for a hung resync ends on a signal" rc=124 "$(cat "$tmp/susp.rc" 2>/dev/null)"
check_output "... with EINTR and the reason" "Interrupted system call.*background work" cat "$tmp/susp"
check_output "... and the mirror keeps running" '^State: +ACTIVE$' vblkctl info m
# Resumed without the delay: the resync need not crawl to its end.
dmsetup load db --table "0 $n linear $B 0"
dmsetup resume db
wait "$s"
check "the resync then completes" mirror_wait_sync m
# The resync is running again (new table): REMOVE waits for the job, so the
# leg is closed when it returns and dm can remove it at once.
fill /dev/zero $B
vblkctl load m --table "0 $n mirror core 1 $rs 2 $A 0 /dev/mapper/db 0"
vblkctl resume m
sleep 1
check "remove while the resync runs" vblkctl remove m
check "... has let go of the legs: dm removes leg B's device at once" dmsetup remove db

# --- disk log: clean shutdown, dm's on-disk format ---
fill /dev/zero $L
fill "$tmp/a" $A
fill /dev/zero $B
dlog="disk 2 $L $rs 2 $A 0 $B 0"
vblkctl create m --table "0 $n mirror $dlog"
check "disk log: a new log means a full resync" mirror_wait_sync m
check_eq "... every region copied" "$nr" "$(mirror_counter m resync_copied)"
check "fs on the mirror (ext4, fsck clean)" fs_check ext4 /dev/vblk/m
gone m
check "legs identical after the clean shutdown" legs_equal $A $B
check_eq "log header: magic MiRr, version 2, $nr regions" \
	"72 52 69 4d 02 00 00 00 $(printf '%02x' $nr) 00 00 00 00 00 00 00" "$(log_header $L)"
check_eq "log: every region clean after the clean shutdown" "$nr" "$(log_bits $L)"
vblkctl create m --table "0 $n mirror $dlog"
check_eq "recreated on the clean log: in sync at once" "$nr/$nr" "$(mirror_in_sync m)"
sleep 1
check_eq "... and nothing copied" 0 "$(mirror_counter m resync_copied)"
check "writes before a FLUSH" dd if=/dev/urandom of=/dev/vblk/m bs=1M count=4 seek=8 oflag=direct status=none conv=fsync
sleep 1
check_eq "after the writes the regions are clean again in the log (lazily)" "$nr" "$(log_bits $L)"
gone m
cp "$tmp/a" "$tmp/a.vblk" && dd if=$A of="$tmp/a.vblk" bs=1M count=32 iflag=direct status=none

# --- dm's mirror reads vblk's log: in sync, same data ---
dmsetup create dmm --table "0 $n mirror $dlog"
sleep 1
check_output "dm-mirror on vblk's clean log: all regions in sync" "^0 $n mirror 2 $devA $devB $nr/$nr 1 AA 3 disk $devL A$" dmsetup status dmm
check "dm-mirror reads the data vblk wrote" legs_equal /dev/mapper/dmm "$tmp/a.vblk"
dd if=/dev/urandom of=/dev/mapper/dmm bs=1M count=2 seek=20 oflag=direct status=none
dm_remove dmm
check_eq "dm's clean shutdown leaves every region clean too" "$nr" "$(log_bits $L)"
vblkctl create m --table "0 $n mirror $dlog"
check_eq "vblk on dm's log: in sync at once" "$nr/$nr" "$(mirror_in_sync m)"
sleep 1
check_eq "... nothing copied" 0 "$(mirror_counter m resync_copied)"
gone m

# --- unclean shutdown: only the dirty regions are copied ---
dmsetup create la --table "0 $n linear $A 0"
dmsetup create lb --table "0 $n linear $B 0"
dmsetup create ll --table "0 $(sectors $L) linear $L 0"
ulog="disk 2 /dev/mapper/ll $rs 2 /dev/mapper/la 0 /dev/mapper/lb 0"
vblkctl create m --table "0 $n mirror $ulog"
check "unclean: starts in sync on the clean log" mirror_wait_sync m 10

# --- the dirty mark is on disk before the data reaches a leg ---
# With the log's device suspended, a write to a clean region waits: its
# bit is cleared and the log written (FUA) before the data goes down.
# write_bg BLOCK NAME: one random 4 KiB O_DIRECT write to block BLOCK of
# the mirror, in the background; its exit status lands in $tmp/NAME.rc.
write_bg() {
	(dd if=/dev/urandom of=/dev/vblk/m bs=4k seek="$1" count=1 oflag=direct status=none
		echo "rc=$?" >"$tmp/$2.rc") &
}
# leg_a_sum SECTOR COUNT: checksum of leg A's sectors there.
leg_a_sum() { sectors_of $A "$1" "$2" | sha256sum; }
sec=$((40 * rs)) # region 40: clean, untouched
before=$(leg_a_sum $sec 8)
dmsetup suspend ll
write_bg $((sec / 8)) w
w=$!
sleep 2
check_fails "a write to a clean region waits while its dirty mark cannot be written" test -e "$tmp/w.rc"
check_eq "... and none of it reached leg A" "$before" "$(leg_a_sum $sec 8)"
dmsetup resume ll
wait "$w"
check_eq "once the log is written, the write completes" rc=0 "$(cat "$tmp/w.rc" 2>/dev/null)"
check_fails "... and reached leg A" test "$before" = "$(leg_a_sum $sec 8)"
all_clean() {
	local i
	for i in $(seq 100); do [ "$(log_bits $L)" = "$nr" ] && return 0; sleep 0.1; done
	return 1
}
check "... and its region is clean again in the log (lazily)" all_clean

# Two writers to one clean region: the second finds the bit already
# cleared, but must still wait until the first writer's log write is on
# disk (else a crash can leave the region "clean" with legs that differ).
sec=$((41 * rs))
before=$(leg_a_sum $sec 16)
dmsetup suspend ll
write_bg $((sec / 8)) w1
w1=$!
sleep 1
write_bg $((sec / 8 + 1)) w2
w2=$!
sleep 2
check_fails "a second write to a region being dirtied waits for that log write too" test -e "$tmp/w2.rc"
check_eq "... and neither write reached leg A" "$before" "$(leg_a_sum $sec 16)"
dmsetup resume ll
wait "$w1" "$w2"
check_eq "once the log is written, both complete" "rc=0 rc=0" "$(cat "$tmp/w1.rc" "$tmp/w2.rc" 2>/dev/null | xargs)"
check "... and its region is clean again afterwards" all_clean

# The crash: writes over 8 regions run while the disks stop taking I/O (all three
# below the mirror switch to error): the mirror never gets to clean them.
fio --name=crash --filename=/dev/vblk/m --size=4M --offset=4M --direct=1 --ioengine=io_uring \
	--iodepth=8 --rw=randwrite --bs=4k --time_based --runtime=30 --output-format=terse >/dev/null 2>&1 &
fio=$!
# Crash once the log on disk has dirty regions (fio is writing).
for _ in $(seq 200); do [ "$(log_bits $L)" -lt "$nr" ] && break; sleep 0.1; done
for d in la lb ll; do dmsetup suspend --noflush $d; done
for d in la lb ll; do dmsetup load $d --table "0 $(dmsetup table $d | cut -d' ' -f2) error"; done
for d in la lb ll; do dmsetup resume $d; done
wait "$fio"
gone m
for d in la lb; do dmsetup load $d --table "0 $n linear /dev/m${d#l} 0" && dmsetup resume $d; done
dmsetup load ll --table "0 $(sectors $L) linear $L 0" && dmsetup resume ll
clean=$(log_bits $L)
dirty=$((nr - clean))
check "the crash left dirty regions in the log ($dirty), all among the 8 written" test "$dirty" -ge 1 -a "$dirty" -le 8
vblkctl create m --table "0 $n mirror $ulog"
synced=$(mirror_in_sync m)
check "reassembled: the log's $clean clean regions are in sync at once (got $synced)" test "${synced%/*}" -ge "$clean"
check "... resync completes" mirror_wait_sync m
check_eq "... exactly the dirty regions were copied" "$dirty" "$(mirror_counter m resync_copied)"
gone m
check "legs identical after the resync" legs_equal $A $B
for d in la lb ll; do dm_remove $d; done

# --- leg 0 fails: the source moves to leg B, recorded in the log ---
fill "$tmp/a" $A
fill "$tmp/a" $B
fill /dev/zero $L
dmsetup create la --table "0 $n linear $A 0"
# Leg B's writes are delayed: the resync of the new log takes a while, and
# leg A fails during it.
dmsetup create lb --table "0 $n delay $B 0 0 $B 0 20"
dmsetup create ll --table "0 $(sectors $L) linear $L 0"
vblkctl create m --table "0 $n mirror $ulog"
fio --name=load --filename=/dev/vblk/m --size=12M --direct=1 --ioengine=io_uring --iodepth=16 \
	--rw=randwrite --bs=4k --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=0 \
	--verify_state_save=0 --output-format=terse >"$tmp/fio" 2>&1 &
fio=$!
sleep 2
diag "in sync when leg A fails: $(mirror_in_sync m)"
dmsetup suspend la && dmsetup load la --table "0 $n error" && dmsetup resume la
wait "$fio"
check_eq "fio verify with leg 0 (A) failing under it: no errors" 0 "$?"
# D or R: whichever reached leg A first after it failed, a fio write
# (D) or the resync's read of its source (R), both mean "failed".
check_output "leg A shown failed, leg B alive" " 1 [DR]A 3 disk [0-9:]+ A$" vblkctl status m
check "every sector reads (regions not yet in sync from leg B, the new source)" \
	dd if=/dev/vblk/m of=/dev/null bs=1M iflag=direct status=none
check "resync completes on leg B alone" mirror_wait_sync m
sectors_of /dev/vblk/m 0 $n >"$tmp/m.data"
check "writes while leg A was failed left it stale" bash -c "! cmp -s $tmp/m.data <(sectors_of $A 0 $n)"
check_eq "the log records leg 1 as the source (after dm's header)" "vbSR 1" \
	"$(dd if=$L bs=512 count=1 iflag=direct status=none | python3 -c 'import sys,struct; b=sys.stdin.buffer.read(); print(b[16:20].decode(errors="replace"), struct.unpack("<I", b[20:24])[0])')"
gone m
# Leg A's device comes back with its stale data; the same table reloaded.
dmsetup suspend la && dmsetup load la --table "0 $n linear $A 0" && dmsetup resume la
vblkctl create m --table "0 $n mirror $ulog"
check "reassembled with stale leg A back: resync completes" mirror_wait_sync m
check "the resync copied leg B over leg A, not the reverse: the data is what was written" \
	cmp "$tmp/m.data" <(sectors_of /dev/vblk/m 0 $n)
check "legs identical" legs_equal $A $B
gone m
for d in la lb ll; do dm_remove $d; done

nullb_rm ma mb mc ml
rm -rf "$tmp"
done_testing
