#!/usr/bin/env bash
# Compile-fail tests of the abstraction layer's and the framework's
# signatures: misuse that the types must refuse (I/O buffers, requests,
# map verdicts). Each case adds one function to a copy of the
# module's sources (rust/targets/linear.rs) and builds it against KDIR; a
# "fail" case passes only if the build fails with the expected error, and
# the "pass" case (the correct use, same harness) must build, so a broken
# harness cannot pass the others. TAP output.
#
#   scripts/compile-fail.sh KDIR
set -uo pipefail
kdir=${1:?usage: compile-fail.sh KDIR}
repo=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
work=$(mktemp -d /tmp/vblk-compile-fail.XXXXXX)
trap 'rm -rf "$work"' EXIT

n=0 failed=0
# case NAME EXPECT(pass|fail) ERROR-PATTERN CODE
case_() {
	local name=$1 expect=$2 pattern=$3 code=$4 dir rc
	n=$((n + 1))
	dir=$work/$n
	mkdir -p "$dir"
	cp "$repo/Kbuild" "$dir/"
	cp -r "$repo/rust" "$dir/"
	rm -f "$dir"/rust/*.o "$dir"/rust/sys/*.o "$dir"/rust/sys/bindings_generated.rs
	printf '\n#[allow(dead_code)]\n%s\n' "$code" >>"$dir/rust/targets/linear.rs"
	make -C "$kdir" M="$dir" LLVM=1 modules >"$dir/build.log" 2>&1
	rc=$?
	if [ "$expect" = pass ]; then
		if [ $rc -eq 0 ]; then echo "ok $n - compiles: $name"; else
			echo "not ok $n - compiles: $name"; sed 's/^/# /' "$dir/build.log" | grep -E '^# (error|warning)' -A6 | head -30; failed=$((failed + 1)); fi
	elif [ $rc -ne 0 ] && grep -qE "$pattern" "$dir/build.log"; then
		echo "ok $n - refused at compile time: $name"
	else
		echo "not ok $n - not refused as expected ($pattern): $name"
		grep -E '^(error|warning)' -A6 "$dir/build.log" | sed 's/^/# /' | head -30
		failed=$((failed + 1))
	fi
}

case_ "synchronous I/O from a page-backed IoBuffer" pass "" '
fn io_buffer_use(dev: &crate::sys::bdev::BlockDevice) -> kernel::error::Result {
    let mut buf = crate::sys::bdev::IoBuffer::new(4096)?;
    dev.read_at(0, &mut buf, 0..4096)?;
    dev.write_at(0, &buf, 0..512, crate::sys::bdev::WriteFlags::default())
}'
case_ "read_at into a stack array (used to compile and hit the wrong page)" fail 'expected `&mut IoBuffer`' '
fn stack_read(dev: &crate::sys::bdev::BlockDevice) -> kernel::error::Result {
    let mut buf = [0u8; 512];
    dev.read_at(0, &mut buf, 0..512)
}'
case_ "write_at from a heap slice (used to compile: 257 vectors for 1 MiB off a page boundary)" fail 'expected `&IoBuffer`' '
fn slice_write(dev: &crate::sys::bdev::BlockDevice, v: &kernel::alloc::KVec<u8>) -> kernel::error::Result {
    dev.write_at(0, &v[100..], 0..512, crate::sys::bdev::WriteFlags::default())
}'
case_ "a request ended twice (Request::end consumes it)" fail 'use of moved value' '
fn end_twice(rq: crate::sys::disk::Request<crate::vblk::io::Queue>) {
    rq.end(crate::sys::disk::Status::OK);
    rq.end(crate::sys::disk::Status::OK);
}'
case_ "a map that answers its piece" pass "" '
fn answers(io: crate::targets::Io<'"'"'_>) -> crate::targets::Mapped {
    io.complete()
}'
case_ "a map that forgets its piece (no verdict)" fail 'expected `Mapped`, found `\(\)`' '
fn forgets(io: crate::targets::Io<'"'"'_>) -> crate::targets::Mapped {
    let _ = io.offset();
}'
case_ "a verdict made outside the framework" fail 'private' '
fn forged() -> crate::targets::Mapped {
    crate::targets::Mapped(crate::vblk::io::Verdict::Remapped)
}'
case_ "a piece answered twice (the verdict methods consume it)" fail 'use of moved value' '
fn twice(io: crate::targets::Io<'"'"'_>) -> crate::targets::Mapped {
    let _ = io.kill(crate::sys::disk::Status::IO_ERROR);
    io.complete()
}'

echo "1..$n"
[ $failed -eq 0 ]
