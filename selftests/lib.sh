# shellcheck shell=bash
# TAP helpers for vblk selftests. Source it, call the helpers, end with
# `done_testing`, which prints the plan and exits non-zero on any failure.
set -u

_tap_n=0
_tap_failed=0
_tap_out=$(mktemp)
trap 'rm -f "$_tap_out"' EXIT

echo "TAP version 13"

ok() { _tap_n=$((_tap_n + 1)); echo "ok $_tap_n - $*"; }
not_ok() { _tap_n=$((_tap_n + 1)); _tap_failed=$((_tap_failed + 1)); echo "not ok $_tap_n - $*"; }
diag() { printf '%s\n' "$@" | sed 's/^/# /'; }
skip() { _tap_n=$((_tap_n + 1)); echo "ok $_tap_n - $1 # SKIP ${2:-}"; }

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

# check_eq DESC EXPECTED ACTUAL
check_eq() {
	if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1"; diag "expected: $2" "got:      $3"; fi
}

done_testing() {
	echo "1..$_tap_n"
	[ "$_tap_failed" -eq 0 ]
	exit $?
}
