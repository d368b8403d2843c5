#!/usr/bin/env bash
# Boot the vblk test kernel under QEMU/TCG (virtme-ng, host root over 9p),
# load vblk.ko, put vblkctl on PATH and run a command in the guest.
#
#   qemu-test/run-vm.sh [--quiet] [--] COMMAND [ARGS...]
#   qemu-test/run-vm.sh --shell
#
# --quiet keeps the console out of stdout (it still goes to console.log).
#
# Environment:
#   VBLK_KDIR      kernel build directory (default: the cached test kernel)
#   VBLK_KO        the module to load (default: vblk.ko in the repo root;
#                  `make bench` passes one built against the bench kernel)
#   VBLK_RUN_DIR   where results go (default: build/vm/<timestamp>)
#   VBLK_VM_TIMEOUT  seconds before the VM is killed (default 4200)
#   VBLK_VM_MEMORY, VBLK_VM_CPUS
#   VBLK_RELOAD_ROUNDS, VBLK_FUZZ_SECONDS, VBLK_FUZZ_SEED  passed to the
#                  guest (selftests 09 and 17; `make test-long` sets them)
#
# The run directory gets console.log (everything the guest printed, kernel
# messages included), dmesg.txt (the guest's full kernel log, dumped at the
# end), exit-status (the command's exit code) and whatever the command
# writes to $VBLK_RUN_DIR. The exit code is the command's, or 1 if the guest
# log shows a kernel splat (WARN, BUG, oops, lockdep, KASAN, ...), or 124 if
# the VM timed out, or 125 if the guest never reported an exit status.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"

shell=0 quiet=0
while :; do
	case "${1:-}" in
	--shell) shell=1; shift ;;
	--quiet) quiet=1; shift ;;
	*) break ;;
	esac
done
[ "${1:-}" = "--" ] && shift
if [ "$shell" -eq 0 ] && [ $# -eq 0 ]; then
	echo "usage: run-vm.sh [--quiet] [--] COMMAND [ARGS...] | --shell" >&2
	exit 2
fi

kdir=${VBLK_KDIR:-$("$repo/scripts/build-kernel.sh" --print-dir "$repo/qemu-test/kernel.config")}
kernel="$kdir/arch/x86/boot/bzImage"
ko=${VBLK_KO:-$repo/vblk.ko}
ctl_dir="$repo/tools/userspace-ctl/target/release"
for f in "$kernel" "$ko" "$ctl_dir/vblkctl"; do
	[ -e "$f" ] || { echo "run-vm: missing $f (run 'make' first)" >&2; exit 2; }
done
ko=$(cd "$(dirname "$ko")" && pwd)/$(basename "$ko")  # the guest needs an absolute path

run_dir=${VBLK_RUN_DIR:-$repo/build/vm/$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$run_dir"
run_dir=$(cd "$run_dir" && pwd)
rm -f "$run_dir/exit-status" "$run_dir/dmesg.txt" "$run_dir/console.log"

# Quote the guest command so it survives vng's --exec (a shell string).
# The selftests' knobs (long variants, fuzz seed) go along.
knobs=()
for k in VBLK_RELOAD_ROUNDS VBLK_RELOAD_STRICT VBLK_FUZZ_SECONDS VBLK_FUZZ_SEED VBLK_FAIL_NTH_STRIDE VBLK_REPLAY_POINTS VBLK_SELFTEST_TIMEOUT; do
	[ -n "${!k:-}" ] && knobs+=("$k=${!k}")
done
guest_cmd=$(printf '%q ' env "${knobs[@]}" "$repo/qemu-test/guest.sh" "$run_dir" "$ko" "$ctl_dir" "$@")
if [ "$shell" -eq 1 ]; then
	guest_cmd=$(printf '%q ' "$repo/qemu-test/guest.sh" "$run_dir" "$ko" "$ctl_dir" --shell)
fi

vng_args=(
	--run "$kernel"
	--disable-kvm
	--force-9p
	--cpus "${VBLK_VM_CPUS:-2}"
	--memory "${VBLK_VM_MEMORY:-3G}"
	--rwdir "$run_dir"
	--cwd "$repo"
	--verbose
	--append "printk.devkmsg=on"
	# The host root is read-only to the guest and nothing on it changes
	# during a run, so let the guest cache it (9p cache=loose; the last
	# rootflags= wins over virtme-ng's): without a page cache every exec
	# re-reads its binary and libraries over 9p, which under TCG made
	# vblkctl cost ~580 ms a call instead of ~160 ms (measured), the
	# suite's largest single cost. The read-write run directory is its
	# own mount and keeps virtme-ng's options.
	--append "rootflags=version=9p2000.L,trans=virtio,access=any,msize=524288,cache=loose"
)

if [ "$shell" -eq 1 ]; then
	echo "run-vm: interactive guest shell; vblk is loaded, vblkctl is on PATH; 'exit' powers off" >&2
	vng "${vng_args[@]}" --exec "$guest_cmd"
	exit $?
fi

timeout_s=${VBLK_VM_TIMEOUT:-4200}
out=/dev/stdout
[ "$quiet" -eq 1 ] && out=/dev/null
timeout -k 10 "$timeout_s" vng "${vng_args[@]}" --exec "$guest_cmd" \
	</dev/null 2>&1 | tee "$run_dir/console.log" >"$out"
vm_rc=${PIPESTATUS[0]}

rc=0
if [ "$vm_rc" -eq 124 ]; then
	echo "run-vm: VM timed out after ${timeout_s}s" >&2
	rc=124
elif [ -f "$run_dir/exit-status" ]; then
	rc=$(cat "$run_dir/exit-status")
else
	echo "run-vm: the guest reported no exit status (vng exit $vm_rc); see $run_dir/console.log" >&2
	rc=125
fi

if ! "$repo/qemu-test/check-log.sh" "$run_dir/console.log" "$run_dir/dmesg.txt"; then
	echo "run-vm: kernel splat in the guest log (see above and $run_dir/console.log)" >&2
	[ "$rc" -eq 0 ] && rc=1
fi
echo "run-vm: results in $run_dir (exit $rc)" >&2
exit "$rc"
