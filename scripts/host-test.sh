#!/usr/bin/env bash
# Host-side tests: cargo test for vblkctl and the host-testable logic it
# includes (the shared ABI), and the self-tests of the harness's checkers.
# Writes "PASSED FAILED" to build/host-test.counts.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p build
passed=0 failed=0

log=build/cargo-test.log
(cd tools/userspace-ctl && cargo test --release --locked 2>&1) | tee "$log"
rc=${PIPESTATUS[0]}
while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done < <(
	sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$log")
if [ "$rc" -ne 0 ] && ! grep -q '^test result: FAILED' "$log"; then
	echo "not ok - cargo test did not run (exit $rc)"; failed=$((failed + 1))
fi

tap() {  # run a TAP-printing command and count its results
	local out
	out=$("$@" 2>&1); echo "$out"
	passed=$((passed + $(grep -c '^ok ' <<<"$out")))
	failed=$((failed + $(grep -c '^not ok ' <<<"$out")))
}
echo "# guest log checker self-test"
tap qemu-test/check-log.sh --self-test
echo "# unsafe checker self-test"
tap scripts/check-unsafe.py --self-test
echo "# C shim checker self-test"
tap scripts/check-c-shim.py --self-test
echo "# SAFETY comment checker self-test"
tap scripts/check-safety-comments.py --self-test
echo "# kmemleak report checker self-test"
tap qemu-test/leak-check.py --self-test
echo "# dm-log-writes replayer self-test"
tap selftests/replay-log.py --self-test

echo "$passed $failed" >build/host-test.counts
echo "host tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
