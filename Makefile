# vblk: composable virtual block devices in Rust-for-Linux.
#
#   make            module (vblk.ko) + vblkctl; installs tools and builds the
#                   test kernel first if needed
#   make run        demo in the VM
#   make test       lint, host tests, VM selftests; ends with "N passed, N failed"
#   make test-long  the same with the long variants: 60 reload rounds,
#                   a 10-minute fuzz (VBLK_FUZZ_SEED picks the seed)
#   make shell      interactive guest shell with vblk loaded
#   make vm-run SCRIPT=path [ARGS="..."]   run one script in the guest
#   make kernel     build (or reuse) the test kernel under ~/.cache/vblk
#   make bench [QUICK=1]   vblk vs dm benchmark on a separate bench kernel;
#                   results in bench/results/ (not part of `make test`)
#   make lint       rustfmt + warning-free module build with CLIPPY=1
#   make clean      remove module and vblkctl build products (not the kernel)

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

KERNEL_FRAGMENT := qemu-test/kernel.config
# Evaluated when used, i.e. after `setup` installed the kernel source.
KDIR = $(shell scripts/build-kernel.sh --print-dir $(KERNEL_FRAGMENT))
KMAKE = $(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=1
CTL_DIR := tools/userspace-ctl

.PHONY: all setup kernel module vblkctl lint test test-long host-test vm-test run shell vm-run bench clean

all: module vblkctl

setup:
	@scripts/setup.sh

kernel: setup
	@scripts/build-kernel.sh $(KERNEL_FRAGMENT) >/dev/null

# Any compiler warning fails the build (the kernel does not make Rust
# warnings errors without CONFIG_WERROR).
module: kernel
	@$(KMAKE) modules 2>&1 | tee build/module.log; test $${PIPESTATUS[0]} -eq 0
	@! grep -n 'warning' build/module.log || { echo "module build has warnings" >&2; exit 1; }

module vblkctl: | build
build:
	@mkdir -p build

vblkctl: setup
	cd $(CTL_DIR) && cargo build --release --locked

lint: kernel
	@scripts/lint.sh $(KDIR)

host-test: vblkctl
	@scripts/host-test.sh

vm-test: all
	@qemu-test/run-vm.sh --quiet -- selftests/run.sh

test:
	@scripts/test.sh

test-long:
	@VBLK_RELOAD_ROUNDS=$${VBLK_RELOAD_ROUNDS:-60} VBLK_RELOAD_STRICT=1 VBLK_FUZZ_SECONDS=$${VBLK_FUZZ_SECONDS:-600} VBLK_FAIL_NTH_STRIDE=1 VBLK_REPLAY_POINTS=0 \
		VBLK_VM_TIMEOUT=$${VBLK_VM_TIMEOUT:-7200} VBLK_SELFTEST_TIMEOUT=$${VBLK_SELFTEST_TIMEOUT:-3600} scripts/test.sh

run: all
	@qemu-test/run-vm.sh -- qemu-test/demo.sh

shell: all
	@qemu-test/run-vm.sh --shell

vm-run: all
	@test -n "$(SCRIPT)" || { echo "usage: make vm-run SCRIPT=path/to/script [ARGS='...']" >&2; exit 2; }
	@qemu-test/run-vm.sh -- $(abspath $(SCRIPT)) $(ARGS)

# Builds (or reuses) the bench kernel and a vblk.ko for it in
# build/bench-module/; the module in the repo root is not touched.
bench: vblkctl | build
	@QUICK=$(QUICK) scripts/bench.sh

clean:
	-@test -d "$(KDIR)" && $(KMAKE) clean
	rm -f rust/sys/bindings_generated.rs rust/sys/.bindings_generated.rs.cmd
	cd $(CTL_DIR) && cargo clean
	rm -rf build
