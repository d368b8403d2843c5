#!/usr/bin/env bash
# Fails (exit 1) if any given guest log shows a kernel splat: WARN, BUG,
# oops, panic, KASAN/UBSAN report, lockdep report, sleeping in atomic
# context, hung task, RCU stall, soft lockup or a Rust panic. Prints the
# offending lines with a little context.
#
#   check-log.sh LOG...          check logs (missing files are skipped)
#   check-log.sh --self-test     check the checker against qemu-test/testdata
set -u
here=$(cd "$(dirname "$0")" && pwd)

patterns=(
	'WARNING: CPU: [0-9]+ PID: [0-9]+ at'     # WARN_ON & friends
	'WARNING: .*(locking|lock|deadlock|RCU|suspicious)'  # lockdep headers
	'BUG: '                                   # BUG: KASAN, sleeping in atomic, scheduling while atomic, ...
	'kernel BUG at'
	'Oops: '
	'general protection fault'
	'Kernel panic'
	'UBSAN: '
	'DEBUG_LOCKS_WARN_ON'
	'INFO: possible (recursive|circular|irq)'
	'INFO: (inconsistent|trying to register non-static key)'
	'inconsistent lock state'
	'blocked for more than [0-9]+ seconds'
	'rcu: INFO: .*detected stalls'
	'self-detected stall'
	'soft lockup'
	'hard LOCKUP'
	'panicked at'                             # Rust panic
	'Unable to handle kernel'
	'stack-protector:'
	'list_(add|del) corruption'
)

check() {
	local found=0 f re
	re=$(IFS='|'; echo "${patterns[*]}")
	for f in "$@"; do
		[ -f "$f" ] || continue
		if grep -Eq "$re" "$f"; then
			echo "check-log: kernel splat in $f:" >&2
			grep -En -A4 "$re" "$f" | head -60 >&2
			found=1
		fi
	done
	return "$found"
}

if [ "${1:-}" = "--self-test" ]; then
	fails=0 n=0
	for f in "$here"/testdata/clean-*.log "$here"/testdata/splat-*.log; do
		[ -f "$f" ] || { echo "not ok - missing test data: $f"; fails=$((fails + 1)); }
	done
	for f in "$here"/testdata/clean-*.log; do
		n=$((n + 1))
		if check "$f" 2>/dev/null; then echo "ok $n - clean log passes: ${f##*/}"
		else echo "not ok $n - clean log flagged: ${f##*/}"; fails=$((fails + 1)); fi
	done
	for f in "$here"/testdata/splat-*.log; do
		n=$((n + 1))
		if check "$f" 2>/dev/null; then echo "not ok $n - splat missed: ${f##*/}"; fails=$((fails + 1))
		else echo "ok $n - splat caught: ${f##*/}"; fi
	done
	echo "1..$n"
	exit $((fails > 0))
fi

check "$@"
