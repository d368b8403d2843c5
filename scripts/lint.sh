#!/usr/bin/env bash
# Static checks: the C shim holds only one-line helpers, SAFETY comments
# that say something, formatting, warning-free module build under clippy,
# clippy for vblkctl, and the rule that `unsafe` lives only in rust/sys with
# a `// SAFETY:` comment on every unsafe block.
#
#   scripts/lint.sh KDIR
set -uo pipefail
kdir=${1:?usage: lint.sh KDIR}
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
fail=0
step() { echo "lint: $*"; }
bad() { echo "lint: FAIL: $*" >&2; fail=1; }
# Runs a checker's --self-test, showing its TAP output only if it fails.
selftest() { local out; out=$("$1" --self-test 2>&1) || { echo "$out"; bad "$1 --self-test failed"; }; }

# Source-only checks first: they need no kernel build.
step "checker self-tests (C shim, SAFETY comments)"
selftest scripts/check-c-shim.py
selftest scripts/check-safety-comments.py

step "C shim: one-statement helpers only, static tables marked, at most 150 lines"
scripts/check-c-shim.py rust/sys/shim.c || bad "rust/sys/shim.c holds more than one-line helpers"

step "SAFETY comments in rust/sys: present and not just \"as above\", # Safety on unsafe fns"
scripts/check-safety-comments.py rust/sys || bad "SAFETY comment rules violated"

step "rustfmt (module)"
rustfmt --edition 2021 --check rust/vblk_module.rs || bad "module is not rustfmt-clean (run: rustfmt --edition 2021 rust/vblk_module.rs)"
step "rustfmt (vblkctl)"
(cd tools/userspace-ctl && cargo fmt --check) || bad "vblkctl is not rustfmt-clean (run: cargo fmt)"

step "module build with CLIPPY=1"
mkdir -p build
rm -f rust/vblk_module.o
make -C "$kdir" M="$PWD" LLVM=1 CLIPPY=1 modules >build/clippy.log 2>&1 || { cat build/clippy.log; bad "module build with CLIPPY=1 failed"; }
if grep -q 'warning' build/clippy.log; then cat build/clippy.log; bad "clippy warnings in the module"; fi
# Leave a normally compiled object behind.
rm -f rust/vblk_module.o

step "compile-fail tests: the abstraction layer refuses misuse at compile time"
scripts/compile-fail.sh "$kdir" >build/compile-fail.log 2>&1 || { cat build/compile-fail.log; bad "compile-fail tests"; }
grep -c '^ok' build/compile-fail.log | sed 's/^/lint: compile-fail cases passed: /'

step "clippy (vblkctl)"
(cd tools/userspace-ctl && cargo clippy --release --locked --all-targets -q -- -D warnings) || bad "clippy warnings in vblkctl"

step "unsafe only in rust/sys, each block with // SAFETY:, each unsafe fn with # Safety"
scripts/check-unsafe.py rust || bad "unsafe rules violated"

step "shell scripts parse"
for s in scripts/*.sh qemu-test/*.sh selftests/*.sh bench/*.sh; do bash -n "$s" || bad "syntax error in $s"; done

if [ "$fail" -eq 0 ]; then echo "lint: all checks passed"; fi
exit "$fail"
