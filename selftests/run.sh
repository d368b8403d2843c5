#!/usr/bin/env bash
# Runs every selftest (selftests/NN-*.sh) inside the guest, one after the
# other. Each writes TAP to $VBLK_RUN_DIR/tap/NAME.tap (and the console);
# a summary line per test (name, passed, failed, seconds) goes to
# $VBLK_RUN_DIR/tap/summary.
#
#   selftests/run.sh [NAME-GLOB]     e.g. run.sh '01-*'
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=${VBLK_RUN_DIR:-/tmp}/tap
mkdir -p "$out"
: >"$out/summary"
glob=${1:-[0-9][0-9]-*}
rc=0
for t in "$here"/$glob.sh; do
	[ -e "$t" ] || { echo "run.sh: no selftest matches $glob" >&2; exit 1; }
	name=$(basename "$t" .sh)
	echo "vblk-selftest: start $name" >/dev/kmsg
	echo "# selftest $name"
	t0=$SECONDS
	timeout -k 10 "${VBLK_SELFTEST_TIMEOUT:-1200}" bash "$t" </dev/null 2>&1 | tee "$out/$name.tap"
	trc=${PIPESTATUS[0]}
	echo "vblk-selftest: end $name rc=$trc" >/dev/kmsg
	pass=$(grep -c '^ok ' "$out/$name.tap")
	fail=$(grep -c '^not ok ' "$out/$name.tap")
	plan=$(sed -n 's/^1\.\.\([0-9]*\).*/\1/p' "$out/$name.tap" | tail -1)
	# A test that died, timed out or lost its plan counts as one more failure.
	if [ "$trc" -ne 0 ] && [ "$fail" -eq 0 ]; then
		fail=$((fail + 1)); echo "not ok - $name exited with status $trc" | tee -a "$out/$name.tap"
	elif [ -z "$plan" ] || [ "$plan" -ne $((pass + fail)) ]; then
		fail=$((fail + 1)); echo "not ok - $name: plan ${plan:-missing} but $((pass + fail - 1)) results" | tee -a "$out/$name.tap"
	fi
	echo "$name $pass $fail $((SECONDS - t0))" >>"$out/summary"
	[ "$fail" -eq 0 ] || rc=1
done
exit "$rc"
