#!/usr/bin/env bash
# The flakey target, against dm-flakey: up is linear; down fails, drops or
# corrupts I/O exactly as dm-flakey does. It also exercises two framework
# paths: read corruption runs after the lower read on the device's
# workqueue (deferred completion), write corruption writes a changed copy
# from bounce pages while the caller's pages stay as they were.
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
n=65536 # sectors used on each ram disk (32 MiB)
one() { vblkctl create f --table "0 $n flakey /dev/ram1 0 $1"; }
gone() { remove_retry f; }
# byte_at DEV OFFSET: the byte at OFFSET of DEV, read with O_DIRECT.
byte_at() {
	dd if="$1" bs=4096 skip=$(($2 / 4096)) count=1 iflag=direct status=none |
		od -An -tu1 -j $(($2 % 4096)) -N1 | tr -d ' '
}
# every_block DEV BLOCKS OFFSET VALUE: byte OFFSET of each of the first
# BLOCKS 4 KiB blocks of DEV is VALUE.
every_block() {
	python3 - "$@" <<-'EOF'
	import os, sys
	dev, blocks, off, val = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
	with open(dev, "rb", buffering=0) as f:
	    data = f.read(blocks * 4096)
	bad = [i for i in range(blocks) if data[i * 4096 + off] != val]
	print(f"{len(bad)} of {blocks} blocks differ, first {bad[:5]}")
	sys.exit(1 if bad else 0)
	EOF
}
nomerges() { echo 2 >"/sys/block/$(disk_of "$1")/queue/nomerges"; }

# --- up: a linear mapping; the table in dm's form ---
check "flakey up for an hour: create" one "3600 1"
check "fio verify through it" fio_verify /dev/vblk/f 16M
check_output "table as dm prints it (features implied by none)" \
	"^0 $n flakey 1:1 0 3600 1 2 error_reads error_writes$" vblkctl table f
gone

# --- down without features: every I/O fails ---
check "always down: create" one "0 1"
check_fails "... reads fail" dd if=/dev/vblk/f of=/dev/null bs=4k count=1 iflag=direct status=none
check_fails "... writes fail" dd if=/dev/zero of=/dev/vblk/f bs=4k count=1 oflag=direct status=none
gone

# --- drop_writes / error_writes / error_reads ---
head -c $((n * 512)) /dev/urandom >"$tmp/a"
head -c 1M /dev/urandom >"$tmp/b"
dd if="$tmp/a" of=/dev/ram1 bs=1M oflag=direct status=none
check "drop_writes: create" one "0 1 1 drop_writes"
check "... a write succeeds" dd if="$tmp/b" of=/dev/vblk/f bs=64k oflag=direct status=none
check "... but the device is untouched" same_bytes "$tmp/a" /dev/ram1 "$n"
check "... and reads work" same_bytes "$tmp/a" /dev/vblk/f "$n"
gone
check "error_writes: create" one "0 1 1 error_writes"
check_fails "... a write fails" dd if="$tmp/b" of=/dev/vblk/f bs=64k count=1 oflag=direct status=none
check "... the device is untouched and reads work" same_bytes "$tmp/a" /dev/vblk/f "$n"
gone
check "error_reads: create" one "0 1 1 error_reads"
check_fails "... a read fails" dd if=/dev/vblk/f of=/dev/null bs=4k count=1 iflag=direct status=none
check "... a write works" dd if="$tmp/b" of=/dev/vblk/f bs=64k oflag=direct status=none
check "... and reached the device" same_bytes "$tmp/b" /dev/ram1 2048
gone

# --- corrupt reads: the same bytes as dm-flakey, device untouched ---
dd if="$tmp/a" of=/dev/ram1 bs=1M oflag=direct status=none
dd if="$tmp/a" of=/dev/ram2 bs=1M oflag=direct status=none
feat="0 1 5 corrupt_bio_byte 32 r 171 0"
check "corrupt_bio_byte 32 r 171: create" one "$feat"
dmsetup create fd --table "0 $n flakey /dev/ram2 0 $feat"
nomerges f
dd if=/dev/vblk/f bs=4k count=2048 iflag=direct status=none >"$tmp/vr"
dd if=/dev/mapper/fd bs=4k count=2048 iflag=direct status=none >"$tmp/dr"
check "vblk reads what dm-flakey reads (8 MiB in 4 KiB reads)" cmp "$tmp/vr" "$tmp/dr"
check "byte 32 of every 4 KiB read is 171" every_block "$tmp/vr" 2048 31 171
check "the lower device is unchanged" same_bytes "$tmp/a" /dev/ram1 "$n"
fio --name=rd --filename=/dev/vblk/f --rw=randread --bs=4k --size=16M --iodepth=32 \
	--ioengine=io_uring --direct=1 --time_based --runtime=4 --output-format=terse >"$tmp/fio" 2>&1 &
fio=$!
swaps=0
while kill -0 "$fio" 2>/dev/null && [ "$swaps" -lt 5 ]; do
	vblkctl suspend f && vblkctl load f --table "0 $n flakey /dev/ram1 0 $feat" && vblkctl resume f &&
		swaps=$((swaps + 1))
	sleep 0.3
done
wait "$fio"
check_eq "random reads at QD32 through deferred completion, table swapped $swaps times: no errors" 0 "$?"
check "... at least 3 swaps while reads were deferred" test "$swaps" -ge 3
gone
dm_remove fd

# --- corrupt writes: a changed copy goes down, like dm-flakey's ---
dd if=/dev/zero of=/dev/ram1 bs=1M count=32 oflag=direct status=none
dd if=/dev/zero of=/dev/ram2 bs=1M count=32 oflag=direct status=none
feat="0 1 5 corrupt_bio_byte 100 w 7 0"
check "corrupt_bio_byte 100 w 7: create" one "$feat"
dmsetup create fd --table "0 $n flakey /dev/ram2 0 $feat"
nomerges f
fio_w() {
	fio --name=w --filename="$1" --rw=randwrite --bs=4k --size=16M --iodepth=16 \
		--ioengine=io_uring --direct=1 --randrepeat=1 --randseed=1234 --refill_buffers \
		--output-format=terse >/dev/null
}
check "fio random writes at QD16 through vblk" fio_w /dev/vblk/f
check "the same through dm-flakey" fio_w /dev/mapper/fd
check "both lower devices hold the same bytes" same_bytes /dev/ram1 /dev/ram2 32768
check "byte 100 of every 4 KiB block is 7" every_block /dev/ram1 4096 99 7
# Buffered: the page cache keeps what was written (the bounce copy was
# changed, not the caller's page), the device gets the changed copy. An
# open descriptor keeps the page cache alive across the commands (the
# last close of a block device drops it).
head -c 4096 /dev/urandom | tr '\007' '\010' >"$tmp/c"
exec 4</dev/vblk/f
dd if="$tmp/c" of=/dev/vblk/f bs=4k seek=5000 conv=notrunc status=none && sync
check "page cache still holds the caller's data" \
	cmp "$tmp/c" <(dd if=/dev/vblk/f bs=4k skip=5000 count=1 status=none)
check_eq "the device got byte 100 changed to 7" 7 "$(byte_at /dev/ram1 $((5000 * 4096 + 99)))"
exec 4<&-
gone
dm_remove fd

# --- random corruption only changes data while down ---
dd if="$tmp/a" of=/dev/ram1 bs=1M oflag=direct status=none
check "random_read_corrupt 1000000000 while up: create" one "3600 1 2 random_read_corrupt 1000000000"
check "... reads are clean while up" same_bytes "$tmp/a" /dev/vblk/f "$n"
gone
check "random_read_corrupt 1000000000 while down: create" one "0 1 2 random_read_corrupt 1000000000"
check_fails "... reads differ" same_bytes "$tmp/a" /dev/vblk/f 8192
gone

# --- a stack: flakey below linear, fio verify while up ---
check "flakey up, linear on top" vblkctl create f --table "0 $n flakey /dev/ram1 0 3600 1 1 drop_writes"
check "... create the linear" vblkctl create top --table "0 $n linear /dev/vblk/f 0"
check "... fio verify through the stack" fio_verify /dev/vblk/top 8M
vblkctl remove top
gone

check_output "no devices at the end" '^No devices found$' vblkctl ls
rm -rf "$tmp"
done_testing
