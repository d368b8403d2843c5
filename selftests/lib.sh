# shellcheck shell=bash
# TAP helpers for vblk selftests. Source it, call the helpers, end with
# `done_testing`, which prints the plan and exits non-zero on any failure.
set -u

_tap_n=0
_tap_failed=0
_tap_out=$(mktemp)
trap 'rm -f "$_tap_out"' EXIT

echo "TAP version 13"

# Seconds since the previous result go into a "# time" line after each
# result, so slow checks show up in the TAP file (testing.md: budget).
_tap_last=$SECONDS
_tap_time() { echo "# time $((SECONDS - _tap_last))s"; _tap_last=$SECONDS; }
ok() { _tap_n=$((_tap_n + 1)); echo "ok $_tap_n - $*"; _tap_time; }
not_ok() { _tap_n=$((_tap_n + 1)); _tap_failed=$((_tap_failed + 1)); echo "not ok $_tap_n - $*"; _tap_time; }
diag() { printf '%s\n' "$@" | sed 's/^/# /'; }
skip() { _tap_n=$((_tap_n + 1)); echo "ok $_tap_n - $1 # SKIP ${2:-}"; _tap_time; }

# check DESC CMD...: passes if CMD exits 0.
check() {
	local desc=$1; shift
	if "$@" >"$_tap_out" 2>&1; then ok "$desc"; else not_ok "$desc"; diag "command: $*" "$(cat "$_tap_out")"; fi
}

# check_fails DESC CMD...: passes if CMD exits non-zero.
check_fails() {
	local desc=$1; shift
	if "$@" >"$_tap_out" 2>&1; then not_ok "$desc"; diag "command unexpectedly succeeded: $*" "$(cat "$_tap_out")"; else ok "$desc"; fi
}

# check_output DESC REGEX CMD...: passes if CMD's combined output matches
# the extended REGEX (the exit code is not judged; pair with check/check_fails).
check_output() {
	local desc=$1 re=$2; shift 2
	"$@" >"$_tap_out" 2>&1
	if grep -Eq -- "$re" "$_tap_out"; then ok "$desc"; else not_ok "$desc"; diag "command: $*" "expected /$re/, got:" "$(cat "$_tap_out")"; fi
}

# dm_remove NAME...: dmsetup remove once udev let go of the devices (its
# probes of a just-made device hold it open a moment: a bare remove races
# them, the more often the faster the guest runs).
dm_remove() {
	udevadm settle 2>/dev/null
	dmsetup remove --retry "$@"
}

# refused DESC REGEX CMD...: passes if CMD fails and its combined output
# matches the extended REGEX (a refusal with its message).
refused() {
	local desc=$1 re=$2 out rc; shift 2
	out=$("$@" 2>&1); rc=$?
	if [ "$rc" -ne 0 ] && grep -Eq -- "$re" <<<"$out"; then ok "$desc"; else
		not_ok "$desc"; diag "command: $*" "exit $rc; expected /$re/, got:" "$out"
	fi
}

# check_eq DESC EXPECTED ACTUAL
check_eq() {
	if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1"; diag "expected: $2" "got:      $3"; fi
}

done_testing() {
	echo "1..$_tap_n"
	[ "$_tap_failed" -eq 0 ]
	exit $?
}

# ---- devices and workloads shared by the selftests ----

# dmsetup without udev (the guest has none): it makes its own nodes.
export DM_DISABLE_UDEV=1

NULLB_CFG=/sys/kernel/config/nullb

# nullb NAME SIZE_MB [ATTR=VALUE...]: a memory-backed null_blk device
# /dev/NAME made through configfs (e.g. discard=1 cache_size=16 blocksize=4096).
nullb() {
	local name=$1 size=$2 kv; shift 2
	mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
	mkdir "$NULLB_CFG/$name" || return 1
	echo "$size" >"$NULLB_CFG/$name/size"
	echo 1 >"$NULLB_CFG/$name/memory_backed"
	for kv in "$@"; do echo "${kv#*=}" >"$NULLB_CFG/$name/${kv%%=*}" || return 1; done
	echo 1 >"$NULLB_CFG/$name/power"
	for _ in $(seq 50); do [ -b "/dev/$name" ] && return 0; sleep 0.1; done
	return 1
}

# nullb_rm NAME...: power off and remove null_blk devices made by `nullb`.
nullb_rm() {
	local name
	for name in "$@"; do
		[ -d "$NULLB_CFG/$name" ] || continue
		echo 0 >"$NULLB_CFG/$name/power" 2>/dev/null
		rmdir "$NULLB_CFG/$name"
	done
}

# sectors DEV: size in 512-byte sectors.
sectors() { blockdev --getsz "$1"; }

# devno DEV: "major:minor" of a block device node.
devno() { printf '%d:%d' "0x$(stat -L -c %t "$1")" "0x$(stat -L -c %T "$1")"; }

# disk_of NAME: the kernel name (vblkN) of vblk device NAME.
disk_of() { basename "$(readlink -f "/dev/vblk/$1")"; }

# fio_verify DEV SIZE [FIO ARGS...]: random writes then a crc32c verify of
# everything written; fails on any I/O or verify error.
fio_verify() {
	local dev=$1 size=$2; shift 2
	fio --name=verify --filename="$dev" --size="$size" --direct=1 \
		--ioengine=io_uring --iodepth=16 --rw=randwrite --bs=4k \
		--verify=crc32c --do_verify=1 --verify_fatal=1 --norandommap=0 \
		--randrepeat=0 --verify_state_save=0 --group_reporting=1 \
		--output-format=terse "$@" >/dev/null
}

# fs_check FS DEV: mkfs, mount, fill with files, unmount, fsck clean,
# mount again and compare the files' checksums.
fs_check() {
	local fs=$1 dev=$2 mnt sums rc=0
	mnt=$(mktemp -d)
	case "$fs" in
	ext4) mkfs.ext4 -q -F "$dev" || return 1 ;;
	xfs) mkfs.xfs -q -f "$dev" || return 1 ;;
	esac
	mount "$dev" "$mnt" || { rmdir "$mnt"; return 1; }
	for i in $(seq 8); do
		head -c $((1024 * 1024 + i * 4096 + 17)) /dev/urandom >"$mnt/f$i" || rc=1
	done
	mkdir -p "$mnt/d/e" && cp "$mnt/f1" "$mnt/d/e/g" || rc=1
	sums=$(cd "$mnt" && find . -type f -exec sha256sum {} + | sort)
	umount "$mnt" || rc=1
	case "$fs" in
	ext4) fsck.ext4 -f -n "$dev" >/dev/null 2>&1 || { echo "fsck.ext4 found problems"; rc=1; } ;;
	xfs) xfs_repair -n "$dev" >/dev/null 2>&1 || { echo "xfs_repair -n found problems"; rc=1; } ;;
	esac
	mount "$dev" "$mnt" || { rmdir "$mnt"; return 1; }
	[ "$sums" = "$(cd "$mnt" && find . -type f -exec sha256sum {} + | sort)" ] || { echo "file contents changed"; rc=1; }
	umount "$mnt" || rc=1
	rmdir "$mnt"
	return "$rc"
}

# sectors_of DEV START COUNT: COUNT sectors of DEV (or a file) from sector
# START, to stdout, read with O_DIRECT (bypasses stale page caches) in
# 1 MiB requests: 512-byte reads cost a system call per sector, minutes
# under TCG with KASAN.
sectors_of() {
	dd if="$1" bs=1M skip=$(($2 * 512)) count=$(($3 * 512)) \
		iflag=direct,skip_bytes,count_bytes status=none
}

# same_bytes A B SECTORS: the first SECTORS sectors of two devices (or
# files) are identical.
same_bytes() { cmp <(sectors_of "$1" 0 "$3") <(sectors_of "$2" 0 "$3"); }

# remove_retry NAME: vblkctl remove, retried for up to 5 s while the device
# is only briefly open (udev probes a device when a writer closes it), as
# `dmsetup remove --retry` does.
remove_retry() {
	local i
	for i in $(seq 50); do
		vblkctl remove "$1" 2>/dev/null && return 0
		udevadm settle 2>/dev/null
		sleep 0.1
	done
	vblkctl remove "$1"
}

# ---- mirror status (dm's fields, vblk's counters) ----

# mirror_in_sync NAME: "synced/total" regions.
mirror_in_sync() { vblkctl status "$1" | awk '{ print $(4 + $4 + 1) }'; }
# mirror_health NAME: the legs' letters (A alive, D, R, S, F failed).
mirror_health() { vblkctl status "$1" | awk '{ print $(4 + $4 + 3) }'; }
# mirror_counter NAME KEY: a counter from `vblkctl status --detail`.
mirror_counter() { vblkctl status --detail "$1" | sed -n "s/.*[ |]$2=\([^ ]*\).*/\1/p"; }
# mirror_wait_sync NAME [SECONDS]: until every region is in sync.
mirror_wait_sync() {
	local i s
	for i in $(seq $((${2:-120} * 10))); do
		s=$(mirror_in_sync "$1")
		[ -n "$s" ] && [ "${s%/*}" = "${s#*/}" ] && return 0
		sleep 0.1
	done
	echo "not in sync after ${2:-120} s: $(vblkctl status "$1")"
	return 1
}
# mirror_clean_bits DEV NR: how many of the NR clean bits of the mirror
# disk log on DEV are set (dm's format: bits from byte 1024 on; NR up to
# 24576, the first 4 KiB).
mirror_clean_bits() {
	dd if="$1" bs=4k count=1 iflag=direct status=none | python3 -c '
import sys
nr = int(sys.argv[1])
bits = sys.stdin.buffer.read()[1024:]
print(sum((bits[r // 8] >> (r % 8)) & 1 for r in range(nr)))' "$2"
}
# region_clean DEV R: region R's clean bit is set in that disk log.
region_clean() {
	local byte
	byte=$(dd if="$1" bs=4k count=1 iflag=direct status=none | od -An -tu1 -j $((1024 + $2 / 8)) -N 1) || return 1
	[ -n "$byte" ] || return 1
	[ $(((byte >> ($2 % 8)) & 1)) -eq 1 ]
}
# wait_until SECONDS CMD...: CMD succeeds within SECONDS (polled).
wait_until() {
	local end=$((SECONDS + $1)); shift
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.2
	done
}
