#!/usr/bin/env bash
# Table swaps under load: fio verify runs while the table is reloaded
# (suspend, load, resume) again and again, with and without noflush; I/O
# issued while suspended waits and then completes; data is migrated to
# another device under a running fio and a mounted filesystem.
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
n=$(sectors /dev/ram0)
half=$((n / 2))
# Two tables with the same mapping, split differently.
table_a="0 $n linear /dev/ram0 0"
table_b="0 $half linear /dev/ram0 0
$half $half linear /dev/ram0 $half"

# fio_evidence: what fio said (its terse report names the error: field 5
# is the errno), for a failure's diagnosis.
fio_evidence() {
	echo "fio stderr:"; cat "$tmp/fio.out"
	echo "fio terse report (field 5 = error): $(cut -d';' -f1-6 "$tmp/fio.terse" 2>/dev/null)"
	grep -h 'err=' "$tmp/fio.terse" 2>/dev/null
	echo "kernel log tail:"; dmesg | tail -15
}

# swap_under_fio NAME SUSPEND_FLAGS: runs fio verify on NAME and swaps
# its table until fio ends; prints "SWAPS FIO_RC".
swap_under_fio() {
	local name=$1 flags=$2 swaps=0 t
	rm -f "$tmp/fio.terse"
	fio_verify "/dev/vblk/$name" 48M --iodepth=32 --output="$tmp/fio.terse" >"$tmp/fio.out" 2>&1 &
	local fio=$!
	while kill -0 "$fio" 2>/dev/null; do
		if [ $((swaps % 2)) -eq 0 ]; then t=$table_b; else t=$table_a; fi
		# shellcheck disable=SC2086
		vblkctl suspend $flags "$name" && vblkctl load "$name" --table "$t" &&
			vblkctl resume "$name" || { echo "swap failed" >&2; break; }
		swaps=$((swaps + 1))
		sleep 0.3
	done
	wait "$fio"
	echo "$swaps $?"
}

# A known flake (issue 22: fio verify under reloads failed about once in
# tens of runs, cause not found yet). Outside VBLK_RELOAD_STRICT=1 (which
# make test-long sets) a failed run keeps its evidence, is reported as a
# FLAKE, and is run once more: the check fails if that fails too.
# swaps_ok FLAGS: swap_under_fio on r, retried once on a flake; prints
# "SWAPS RC".
swaps_ok() {
	local swaps rc
	read -r swaps rc < <(swap_under_fio r "$1")
	if [ "$rc" != 0 ] && [ "${VBLK_RELOAD_STRICT:-0}" != 1 ]; then
		diag "FLAKE: fio rc=$rc after $swaps swaps (suspend $1); retrying once" "$(fio_evidence)" >&2
		read -r swaps rc < <(swap_under_fio r "$1")
	fi
	echo "$swaps $rc"
}
check "create r" vblkctl create r --table "$table_a"
read -r swaps rc < <(swaps_ok "")
check_eq "fio verify passed while the table was swapped" 0 "$rc"
[ "$rc" = 0 ] || diag "$(fio_evidence)"
check "... at least 5 times (suspend, load, resume)" test "$swaps" -ge 5
diag "table swaps under fio: $swaps"
read -r swaps rc < <(swaps_ok "--noflush")
check_eq "the same with suspend --noflush: fio verify passed" 0 "$rc"
[ "$rc" = 0 ] || diag "$(fio_evidence)"
check "... at least 5 swaps" test "$swaps" -ge 5
diag "noflush table swaps under fio: $swaps"
check "the event counter counted the swaps" \
	test "$(vblkctl --json info r | python3 -c 'import json,sys; print(json.load(sys.stdin)["event_nr"])')" -gt 10

# --- I/O issued while suspended waits, then completes correctly ---
head -c 1M /dev/urandom >"$tmp/pat"
vblkctl suspend r
( dd if="$tmp/pat" of=/dev/vblk/r bs=64k oflag=direct status=none; echo "rc=$?" >"$tmp/dd.rc" ) &
sleep 3
check_fails "a write issued while suspended is still waiting after 3 s" test -e "$tmp/dd.rc"
check_output "info shows SUSPENDED" '^State: +SUSPENDED$' vblkctl info r
check "resume" vblkctl resume r
wait
check_eq "the held write completed successfully" rc=0 "$(cat "$tmp/dd.rc")"
check "... with its data on the device" same_bytes "$tmp/pat" /dev/vblk/r 2048

# --- live migration: ram0 -> ram1 under fio, with a copy while suspended ---
fio_verify /dev/vblk/r 48M --iodepth=8 >"$tmp/fio.out" 2>&1 &
fio=$!
sleep 2
check "suspend r under fio" vblkctl suspend r
check "copy ram0 to ram1 while nothing is in flight" dd if=/dev/ram0 of=/dev/ram1 bs=1M iflag=direct oflag=direct status=none
check "load a table on ram1" vblkctl load r --table "0 $n linear /dev/ram1 0"
check "resume: the device now lives on ram1" vblkctl resume r
wait "$fio"
check_eq "fio verify passed across the migration" 0 "$?"
check_output "deps now name ram1" '\(1, 1 ram1\)' vblkctl deps r

# --- a mounted filesystem survives reloads while it is written ---
mkfs.ext4 -q -F /dev/vblk/r
mnt=$(mktemp -d)
mount /dev/vblk/r "$mnt"
( for i in $(seq 20); do head -c 256k /dev/urandom >"$mnt/f$i"; sync "$mnt/f$i"; done; echo done >"$tmp/writer" ) &
for i in 1 2 3 4; do
	vblkctl suspend r && vblkctl load r --table "0 $n linear /dev/ram1 0" && vblkctl resume r
	sleep 0.5
done
wait
check_eq "the writer finished while the table was reloaded 4 times" done "$(cat "$tmp/writer")"
umount "$mnt"
check "fsck is clean" fsck.ext4 -f -n /dev/vblk/r
rmdir "$mnt"

# --- resume with a new table on a running device suspends around the swap ---
fio_verify /dev/vblk/r 16M --iodepth=8 >"$tmp/fio.out" 2>&1 &
fio=$!
sleep 1
vblkctl load r --table "0 $n linear /dev/ram1 0"
check "resume without an explicit suspend swaps under fio" vblkctl resume r
wait "$fio"
check_eq "... fio verify passed" 0 "$?"

check "remove r" vblkctl remove r

# --- many rounds on a 3-deep stack, evidence kept on failure ---
# Each round: fio verify writes through the top of linear-on-linear-on-
# linear while the top, middle and bottom tables are reloaded (suspend,
# load, resume) five times. VBLK_RELOAD_ROUNDS rounds (make test: 6;
# make test-long: 60). A failing round leaves the fio output, the failing
# vblkctl message and the kernel log in <run dir>/reload-evidence/round-N.
rounds=${VBLK_RELOAD_ROUNDS:-2}
ev=${VBLK_RUN_DIR:-$tmp}/reload-evidence
dd if=/dev/zero of=/dev/ram2 bs=1M count=64 oflag=direct status=none
vblkctl create s0 --table "0 120000 linear /dev/ram2 2048"
vblkctl create s1 --table "0 110000 linear /dev/vblk/s0 1024"
vblkctl create s2 --table "0 100000 linear /dev/vblk/s1 512"
tables=("0 120000 linear /dev/ram2 2048" "0 110000 linear /dev/vblk/s0 1024" "0 100000 linear /dev/vblk/s1 512")
# The top also alternates with the same mapping in two lines (as the swap
# test above, whose fio once failed on a CI run with no evidence kept).
top_split="0 50000 linear /dev/vblk/s1 512
50000 50000 linear /dev/vblk/s1 50512"
failed_rounds=0
for round in $(seq "$rounds"); do
	rm -f "$tmp/fio.terse"
	fio_verify /dev/vblk/s2 16M --iodepth=32 --output="$tmp/fio.terse" 2>"$tmp/fio.out" &
	fio=$!
	step_err=
	for i in 1 2 3 4 5; do
		lvl=$(( (round + i) % 3 ))
		name=s$lvl
		t=${tables[$lvl]}
		[ "$lvl" = 2 ] && [ $((i % 2)) = 1 ] && t=$top_split
		if ! out=$( { vblkctl suspend "$name" && vblkctl load "$name" --table "$t" &&
			vblkctl resume "$name"; } 2>&1); then
			step_err="reload $i of $name: $out"
			vblkctl resume "$name" 2>/dev/null
			break
		fi
		sleep 0.2
	done
	wait "$fio"
	frc=$?
	if [ "$frc" -ne 0 ] || [ -n "$step_err" ]; then
		failed_rounds=$((failed_rounds + 1))
		mkdir -p "$ev/round-$round"
		fio_evidence >"$ev/round-$round/fio.out" 2>&1
		echo "fio rc=$frc; $step_err" >"$ev/round-$round/what"
		for d in s0 s1 s2; do vblkctl info "$d"; vblkctl table "$d"; done >"$ev/round-$round/devices" 2>&1
		dmesg | tail -200 >"$ev/round-$round/dmesg"
		diag "round $round failed: fio rc=$frc; $step_err (evidence in $ev/round-$round)" "$(fio_evidence)"
	fi
done
# Outside strict mode one failed round is reported as a FLAKE (evidence
# kept); more than one fails the check.
allowed=1
[ "${VBLK_RELOAD_STRICT:-0}" = 1 ] && allowed=0
[ "$failed_rounds" -gt 0 ] && diag "FLAKE: $failed_rounds of $rounds rounds failed (evidence in $ev)"
check "$rounds rounds of fio verify through a 3-deep stack with 5 reloads each: at most $allowed failed ($failed_rounds)" \
	test "$failed_rounds" -le "$allowed"
check "remove the stack" bash -c 'vblkctl remove s2 && vblkctl remove s1 && vblkctl remove s0'
check_output "no devices at the end" '^No devices found$' vblkctl ls
rm -rf "$tmp"
done_testing
