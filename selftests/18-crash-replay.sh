#!/usr/bin/env bash
# Crash replay: dm-log-writes below a vblk stack records every write and
# flush that reaches the disk; a filesystem workload with fsyncs runs on
# top; then the log is replayed onto a blank device up to each FLUSH (or
# FUA) point after mkfs in turn, and the state a crash right there would leave is
# checked: the filesystem mounts (its journal replays) and fscks clean,
# through the same stack (linear, striped, crypt) rebuilt on the replayed
# copy, and for mirror the disk log never calls a region clean whose legs
# differ (the dirty mark goes down before the data), and for a snapshot
# taken of the blank origin before the workload, the store loads and the
# snapshot reads blank at every point (an origin write reaches the disk
# only after its chunk's exception is committed); with the workload on the
# snapshot itself, its filesystem is consistent at every point and the
# origin stays blank; for a thin volume (the pool's metadata and data
# carved from the one log-writes device), thin_check accepts the pool's
# metadata at every point and the thin's filesystem is consistent.
# VBLK_REPLAY_POINTS
# points per stack are checked (default 2, spread over the log, plus the
# last; 0: every point, as `make test-long` does): each costs a copy, a
# mount and an fsck, seconds under TCG.
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
replay=$(dirname "$0")/replay-log.py
nullb lwd 40
nullb lwl 256
nullb rt 40
nullb rs 40
n=65536 # linear, striped, crypt: 32 MiB
half=$((n / 2))
key=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
mir=32768 # mirror legs: 16 MiB each, log after them
snap=32768 # snapshot: origin 16 MiB, COW 16 MiB after it
tmeta=8192  # thin: pool metadata 4 MiB, data 36 MiB after it
tdata=73728
total_points=0

zero() { dd if=/dev/zero of="$1" bs=1M count=$(($(sectors "$1") / 2048)) oflag=direct status=none; }

# stack NAME BASE: the vblk stack of case NAME on BASE, top at /dev/vblk/NAME.
stack() {
	case "$1" in
	linear) vblkctl create "$1" --table "0 $n linear $2 0" ;;
	striped) vblkctl create "$1" --table "0 $n striped 2 128 $2 0 $2 $half" ;;
	crypt) vblkctl create "$1" --table "0 $n crypt aes-xts-plain64 $key 0 $2 0" ;;
	mirror)
		dmsetup create "$1-a" --table "0 $mir linear $2 0" &&
			dmsetup create "$1-b" --table "0 $mir linear $2 $mir" &&
			dmsetup create "$1-l" --table "0 2048 linear $2 $((2 * mir))" &&
			vblkctl create "$1" --table "0 $mir mirror disk 2 /dev/mapper/$1-l 1024 2 /dev/mapper/$1-a 0 /dev/mapper/$1-b 0"
		;;
	thin)
		# metadata 4 MiB, data the 36 MiB after it; thin 0 (32 MiB) made
		# when the pool is new (a replayed copy has it already).
		dmsetup create "$1-m" --table "0 $tmeta linear $2 0" &&
			dmsetup create "$1-d" --table "0 $tdata linear $2 $tmeta" &&
			vblkctl create "$1-p" --table "0 $tdata thin-pool /dev/mapper/$1-m /dev/mapper/$1-d 128 0" &&
			{ vblkctl message "$1-p" 0 create_thin 0 2>/dev/null || true; } &&
			vblkctl create "$1" --table "0 $n thin /dev/vblk/$1-p 0"
		;;
	snapshot | snapwrite)
		# origin 16 MiB, COW 16 MiB after it; the snapshot is taken of the
		# blank origin before the workload writes it (snapwrite: writes the
		# snapshot).
		dmsetup create "$1-o" --table "0 $snap linear $2 0" &&
			dmsetup create "$1-c" --table "0 $snap linear $2 $snap" &&
			vblkctl create "$1-s" --table "0 $snap snapshot /dev/mapper/$1-o /dev/mapper/$1-c P 8" &&
			vblkctl create "$1" --table "0 $snap snapshot-origin /dev/mapper/$1-o"
		;;
	esac
}
unstack() {
	remove_retry "$1"
	if [ "$1" = thin ]; then
		remove_retry "$1-p"
		for s in m d; do dmsetup remove --retry "$1-$s"; done
	fi
	[ "$1" = mirror ] && for s in a b l; do dmsetup remove --retry "$1-$s"; done
	if [ "$1" = snapshot ] || [ "$1" = snapwrite ]; then
		remove_retry "$1-s"
		for s in o c; do dmsetup remove --retry "$1-$s"; done
	fi
	return 0
}

# workload DEV: ext4 with files written and fsynced, renamed, removed;
# the log gets a mark once mkfs is done (earlier points hold no
# filesystem yet).
workload() {
	local mnt i
	mkfs.ext4 -q -F "$1" && sync || return 1
	dmsetup message lw 0 mark mkfs || return 1
	mnt=$(mktemp -d)
	mount "$1" "$mnt" || return 1
	for i in $(seq 8); do
		head -c $((64 * i))K /dev/urandom >"$mnt/f$i" && sync "$mnt/f$i"
		[ $((i % 3)) -eq 0 ] && mv "$mnt/f$i" "$mnt/moved$i" && sync "$mnt"
		[ $((i % 4)) -eq 0 ] && rm "$mnt/f$((i - 1))" && sync "$mnt"
	done
	umount "$mnt" && rmdir "$mnt"
}

# fs_ok DEV: mounts (the journal replays), unmounts, fsck -fn clean.
fs_ok() {
	local mnt rc
	mnt=$(mktemp -d)
	mount "$1" "$mnt" || { rmdir "$mnt"; return 1; }
	umount "$mnt"; rmdir "$mnt"
	fsck.ext4 -f -n "$1" >"$tmp/fsck" 2>&1; rc=$?
	[ "$rc" -eq 0 ] || cat "$tmp/fsck"
	return "$rc"
}

# mirror_log_ok DEV: in the mirror on DEV (legs A, B and the log, as laid
# out by `stack`), every region the log calls clean holds the same data on
# both legs.
mirror_log_ok() {
	python3 - "$1" "$mir" <<-'EOF'
	import sys
	dev, mir = sys.argv[1], int(sys.argv[2])
	rs, nr = 1024 * 512, mir // 1024
	with open(dev, "rb") as f:
	    f.seek(2 * mir * 512)
	    log = f.read(1024 + nr // 8)
	    if log[:4] != b"rRiM":
	        sys.exit(0)  # no log written yet at this point: nothing claimed
	    bad = []
	    for r in range(nr):
	        if (log[1024 + r // 8] >> (r % 8)) & 1:
	            f.seek(r * rs); a = f.read(rs)
	            f.seek(mir * 512 + r * rs); b = f.read(rs)
	            if a != b:
	                bad.append(r)
	    if bad:
	        print("regions clean in the log but different on the legs:", bad)
	        sys.exit(1)
	EOF
}

# check_point NAME: the state in /dev/rt, copied to /dev/rs and checked.
check_point() {
	dd if=/dev/rt of=/dev/rs bs=1M count=40 oflag=direct iflag=direct status=none || return 1
	case "$1" in
	thin)
		# dm's checker accepts the pool's metadata as the crash left it,
		# and the thin's filesystem (as committed) is consistent.
		dmsetup create chk-m --table "0 $tmeta linear /dev/rs 0" || return 1
		thin_check /dev/mapper/chk-m; local rc=$?
		dmsetup remove --retry chk-m
		[ "$rc" -eq 0 ] || return "$rc"
		stack thin /dev/rs >/dev/null || return 1
		fs_ok /dev/vblk/thin; rc=$?
		unstack thin
		return "$rc"
		;;
	linear) fs_ok /dev/rs ;;
	mirror)
		mirror_log_ok /dev/rs || return 1
		# Recovery reads leg A (the source): the filesystem as it holds it.
		dmsetup create chk-a --table "0 $mir linear /dev/rs 0" || return 1
		fs_ok /dev/mapper/chk-a; local rc=$?
		dmsetup remove --retry chk-a
		return "$rc"
		;;
	snapshot | snapwrite)
		# The store loads. snapshot: the origin's filesystem is consistent
		# and the snapshot still shows the blank origin it was taken of
		# (every origin write on disk had its exception committed before
		# it); snapwrite: every flushed write to the snapshot is there (its
		# filesystem is consistent) and the origin is still blank.
		local fs=/dev/vblk/$1 blank=/dev/vblk/$1-s
		[ "$1" = snapwrite ] && { fs=/dev/vblk/$1-s; blank=/dev/vblk/$1; }
		stack "$1" /dev/rs >/dev/null || return 1
		fs_ok "$fs" && cmp <(sectors_of "$blank" 0 "$snap") <(head -c $((snap * 512)) /dev/zero)
		local rc=$?
		unstack "$1"
		return "$rc"
		;;
	*)
		stack "$1" /dev/rs >/dev/null || return 1
		fs_ok "/dev/vblk/$1"; local rc=$?
		unstack "$1"
		return "$rc"
		;;
	esac
}

for case in linear striped crypt mirror snapshot snapwrite thin; do
	zero /dev/lwd
	zero /dev/rt
	dd if=/dev/zero of=/dev/lwl bs=1M count=1 oflag=direct status=none
	dmsetup create lw --table "0 $(sectors /dev/lwd) log-writes /dev/lwd /dev/lwl"
	stack "$case" /dev/mapper/lw >/dev/null
	top=/dev/vblk/$case
	[ "$case" = snapwrite ] && top=/dev/vblk/$case-s
	check "$case: ext4 workload with fsyncs over dm-log-writes" workload "$top"
	unstack "$case"
	dmsetup message lw 0 mark end
	dmsetup remove --retry lw
	first=$("$replay" /dev/lwl mark mkfs)
	mapfile -t pts < <("$replay" /dev/lwl points | awk -v m="${first:-0}" '$1 > m { print $1 }')
	count=${#pts[@]}
	want=${VBLK_REPLAY_POINTS:-2}
	step=1
	[ "$want" -gt 0 ] && [ "$count" -gt "$want" ] && step=$(( (count + want - 1) / want ))
	done_at=0 checked=0 failed=""
	for ((k = 0; k < count; k++)); do
		[ $((k % step)) -eq 0 ] || [ "$k" -eq $((count - 1)) ] || continue
		p=${pts[$k]}
		"$replay" /dev/lwl replay /dev/rt "$done_at" $((p + 1)) || { failed="$failed replay@$p"; break; }
		done_at=$((p + 1))
		checked=$((checked + 1))
		check_point "$case" >"$tmp/point" 2>&1 || { failed="$failed $p"; diag "point $p:" "$(cat "$tmp/point")"; }
	done
	total_points=$((total_points + checked))
	check_eq "$case: every checked flush point ($checked of $count) is a consistent crash state" "" "$failed"
	check "$case: the log had flush points" test "$count" -ge 3
done
diag "crash replay: $total_points flush points checked"

nullb_rm lwd lwl rt rs
rm -rf "$tmp"
done_testing
