#!/usr/bin/env bash
# Runs inside the guest (started by run-vm.sh through vng --exec).
#
#   guest.sh RUN_DIR KO CTL_DIR COMMAND [ARGS...]
#   guest.sh RUN_DIR KO CTL_DIR --shell
#
# Loads vblk.ko, puts vblkctl on PATH, runs the command, checks that the
# module unloads, and leaves exit-status and dmesg.txt in RUN_DIR (a host
# directory shared read-write) for the host side to judge.
set -u
run_dir=$1 ko=$2 ctl_dir=$3
shift 3
export VBLK_RUN_DIR=$run_dir VBLK_KO=$ko
export PATH="$ctl_dir:$PATH"

finish() {
	dmesg >"$run_dir/dmesg.txt" 2>&1
	echo "$1" >"$run_dir/exit-status"
	sync
	exit "$1"
}

echo "vblk-guest: kernel $(uname -r), $(nproc) cpus" >/dev/kmsg
if ! insmod "$ko"; then
	echo "guest: insmod $ko failed" >&2
	finish 1
fi
# devtmpfs creates the node asynchronously; give it a moment.
for _ in $(seq 50); do [ -c /dev/vblk-control ] && break; sleep 0.1; done

if [ "${1:-}" = "--shell" ]; then
	echo "vblk loaded; vblkctl is on PATH. 'exit' powers the guest off."
	bash -i
	rc=0
else
	"$@"
	rc=$?
fi

# A clean unload is part of every run: it catches leaked references.
read -r _ mod_size _ _ _ mod_base _ < <(grep '^vblk ' /proc/modules)
if grep -q '^vblk ' /proc/modules && ! rmmod vblk; then
	echo "guest: rmmod vblk failed after the run" >&2
	[ "$rc" -eq 0 ] && rc=1
fi

# kmemleak (test kernel only): after the unload, anything vblk allocated
# and nobody references is a leak. Objects must be 5 s old to be
# reported; two scans, as kmemleak's documentation advises.
kml=/sys/kernel/debug/kmemleak
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug 2>/dev/null
if [ -w "$kml" ] && [ -n "${mod_base:-}" ] && [ "${1:-}" != "--shell" ]; then
	sleep 5
	echo scan >"$kml"
	echo scan >"$kml"
	cat "$kml" >"$run_dir/kmemleak.txt"
	if ! "$(dirname "$0")/leak-check.py" "$run_dir/kmemleak.txt" "$mod_base" "$mod_size" >"$run_dir/leaks.txt"; then
		echo "guest: kmemleak found vblk leaks (see leaks.txt)" >&2
		[ "$rc" -eq 0 ] && rc=1
	fi
	echo "vblk-guest: $(tail -1 "$run_dir/leaks.txt")" >/dev/kmsg
fi
finish "$rc"
