#!/usr/bin/env bash
# `make test`: install what is missing, build kernel + module + vblkctl,
# lint, run host tests, boot the VM and run every selftest. Ends with the
# line "N passed, N failed" and exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
start=$(date +%s)
passed=0 failed=0
mkdir -p build

stage() { printf '\n=== %s (%ds) ===\n' "$*" $(( $(date +%s) - start )); }
result() {  # result NAME RC
	if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "ok - $1"
	else failed=$((failed + 1)); echo "not ok - $1"; fi
}
finish() {
	printf '\nmake test: %ds\n' $(( $(date +%s) - start ))
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit $?
}

stage "setup and build (kernel is cached under ~/.cache/vblk)"
make --no-print-directory all
rc=$?
result "build: kernel, vblk.ko, vblkctl" "$rc"
[ "$rc" -eq 0 ] || finish

stage "lint"
make --no-print-directory lint
result "lint: rustfmt, clippy, warning-free, unsafe rules" $?

stage "host tests"
scripts/host-test.sh
if read -r p f <build/host-test.counts 2>/dev/null; then
	passed=$((passed + p)); failed=$((failed + f))
else
	result "host tests ran" 1
fi

stage "VM selftests (QEMU/TCG)"
run_dir=build/vm/selftests-$(date +%Y%m%d-%H%M%S)
VBLK_RUN_DIR=$run_dir qemu-test/run-vm.sh --quiet -- selftests/run.sh
vm_rc=$?
summary=$run_dir/tap/summary
if [ -f "$summary" ]; then
	while read -r name p f secs; do
		passed=$((passed + p)); failed=$((failed + f))
		echo "selftest $name: $p passed, $f failed (${secs:-?}s)"
	done <"$summary"
	grep -h '^not ok' "$run_dir"/tap/*.tap 2>/dev/null | sed 's/^/  /'
else
	result "VM selftests produced results" 1
fi
# The VM's own verdict: guest log splat-free, module unloaded, exit status.
result "VM run: clean guest log, clean unload, selftests exit 0 (see $run_dir)" "$vm_rc"

finish
