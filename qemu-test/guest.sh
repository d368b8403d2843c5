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
if grep -q '^vblk ' /proc/modules && ! rmmod vblk; then
	echo "guest: rmmod vblk failed after the run" >&2
	[ "$rc" -eq 0 ] && rc=1
fi
finish "$rc"
