#!/usr/bin/env bash
# `make bench [QUICK=1]`: vblk against device-mapper, side by side, in one VM
# boot of the benchmark kernel. See Documentation/benchmarking.md.
#
#   1. builds (or reuses) the bench kernel: qemu-test/bench-kernel.config,
#      no lockdep/KASAN/debug options, cached under ~/.cache/vblk;
#   2. builds vblk.ko against it in build/bench-module/ (a copy of Kbuild and
#      rust/, so the normal build in the repo root is left alone);
#   3. boots it (qemu-test/run-vm.sh, TCG) and runs bench/guest-bench.sh;
#   4. aggregates with bench/aggregate.py: a JSON file and a markdown table
#      named DATE-KERNEL-vblk-COMMIT, plus latest.md.
#
# Full mode writes to bench/results/ (5 pairs, 2 s per fio job, null_blk and
# brd: ~2.75 min per target and backing, linear + striped + crypt in ~19 min);
# QUICK=1 to build/bench-results/ (3 pairs, 1 s per job, null_blk only:
# ~1 min per target). Timings: Documentation/benchmarking.md.
# Environment overrides: BENCH_PAIRS, BENCH_RUNTIME (s per job), BENCH_BACKINGS
# ("nullb brd"), BENCH_SHAPES (names from bench/guest-bench.sh),
# BENCH_TARGETS (names from bench/targets.list), BENCH_RESULTS_DIR,
# VBLK_VM_CPUS.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"
start=$(date +%s)
log() { printf 'bench: %s\n' "$*" >&2; }

if [ "${QUICK:-0}" = 1 ]; then
	mode=quick pairs=${BENCH_PAIRS:-3} runtime=${BENCH_RUNTIME:-1} backings=${BENCH_BACKINGS:-nullb}
	results=${BENCH_RESULTS_DIR:-build/bench-results}
else
	mode=full pairs=${BENCH_PAIRS:-5} runtime=${BENCH_RUNTIME:-2} backings=${BENCH_BACKINGS:-nullb brd}
	results=${BENCH_RESULTS_DIR:-bench/results}
fi
shapes=${BENCH_SHAPES:-} targets=${BENCH_TARGETS:-}

# 1. the bench kernel
log "bench kernel: qemu-test/bench-kernel.config (built once, 15-30 min on 2 cores, then cached)"
kdir=$(scripts/build-kernel.sh qemu-test/bench-kernel.config)

# 2. vblk.ko for it, out of tree in a copy of the module sources
mdir=$repo/build/bench-module
# Copy only what changed (mtimes kept, so kbuild rebuilds only then); drop
# sources that no longer exist. The list is git's: tracked and untracked
# files, build products (ignored) excluded.
mkdir -p "$mdir"
mapfile -t srcs < <(git ls-files -co --exclude-standard -- Kbuild rust)
for f in "${srcs[@]}"; do
	cmp -s "$f" "$mdir/$f" || { mkdir -p "$mdir/$(dirname "$f")" && cp -p "$f" "$mdir/$f"; }
done
while IFS= read -r f; do
	[ -e "$f" ] || { log "removing stale copy $f"; rm -f "$mdir/$f"; }
done < <(cd "$mdir" && find rust -type f \( -name '*.rs' -o -name '*.c' -o -name '*.h' \) ! -name bindings_generated.rs)
log "building vblk.ko against $kdir in $mdir"
if ! make -C "$kdir" M="$mdir" LLVM=1 modules >"$mdir/build.log" 2>&1; then
	cat "$mdir/build.log" >&2
	log "module build failed"
	exit 1
fi
ctl=tools/userspace-ctl/target/release/vblkctl
[ -x "$ctl" ] || { log "missing $ctl (run 'make vblkctl')"; exit 1; }

# What is measured: the module's last commit, dirty if its sources differ.
commit=$(git log -1 --format=%h -- Kbuild rust 2>/dev/null || echo unknown)
if [ -n "$(git --no-optional-locks status --porcelain -- Kbuild rust 2>/dev/null)" ]; then commit=$commit-dirty; fi

# 3. the VM. Record the host's load meanwhile: other VMs mean noise.
run_dir=$repo/build/vm/bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$run_dir"
(
	while :; do
		printf '%s %s %s\n' "$(date +%s)" "$(cut -d' ' -f1 /proc/loadavg)" \
			"$(pgrep -c -f '^[^ ]*qemu-system-x86_64 ' || true)"
		sleep 15
	done
) >"$run_dir/host-load.txt" 2>/dev/null &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT

log "$mode mode: $pairs pairs, ${runtime} s per fio job, backings: $backings; VM results in $run_dir"
set +e
VBLK_KDIR=$kdir VBLK_KO=$mdir/vblk.ko VBLK_RUN_DIR=$run_dir \
	qemu-test/run-vm.sh -- bench/guest-bench.sh "$run_dir/bench" "$pairs" "$runtime" "$backings" "$shapes" "$targets" |
	grep --line-buffered -E '^bench: |FAILED|run-vm:'
vm_rc=${PIPESTATUS[0]}
set -e
kill "$sampler" 2>/dev/null || true
if [ "$vm_rc" -ne 0 ]; then
	log "the VM run failed (exit $vm_rc); see $run_dir/console.log"
	exit 1
fi

# 4. the results
python3 bench/aggregate.py "$run_dir/bench" --out "$results" --mode "$mode" \
	--module-version "$commit" --host-load "$run_dir/host-load.txt" \
	--seconds-total $(( $(date +%s) - start ))
