#!/usr/bin/env bash
# The striped target against dm-striped: fio verify over 1-8 stripes and
# several chunk sizes (powers of two and not), byte-identical placement
# both ways, discards split per stripe, a failing stripe fails only the I/O
# that touches it (status D, event), limits, a stack, reload under load,
# filesystems.
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
mib=$((2048)) # sectors per MiB

# areas N: N stripe destinations of up to 32 MiB each, two per ram disk
# (ram0..ram3 hold 64 MiB each), as "<dev> <offset>" pairs.
areas() {
	local n=$1 i out=""
	for ((i = 0; i < n; i++)); do
		out+=" /dev/ram$((i % 4)) $(((i / 4) * 32 * mib))"
	done
	echo "$out"
}
# st_table N CHUNK MIB: N stripes of CHUNK sectors, each stripe about MIB
# MiB (rounded down to whole chunks).
st_table() {
	local w=$(($3 * mib / $2 * $2))
	echo "0 $(($1 * w)) striped $1 $2$(areas "$1")"
}
table_size() { echo "$1" | cut -d' ' -f2; }

# --- fio verify across stripe counts and chunk sizes ---
chunks=(8 128 24 1024 16 256 40 64)
for n in 1 2 3 4 5 6 7 8; do
	chunk=${chunks[$((n - 1))]}
	check "striped $n x chunk $chunk: create" vblkctl create s --table "$(st_table "$n" "$chunk" 4)"
	check "... fio verify (randwrite QD16, 4k-64k)" fio_verify /dev/vblk/s $((n * 3))M --bsrange=4k-64k
	vblkctl remove s
done

# --- table, status, limits ---
vblkctl create s --table "$(st_table 3 24 4)"
check_output "table in dm's form" "^0 24552 striped 3 24 1:0 0 1:1 0 1:2 0$" vblkctl table s
check_output "status: all stripes alive" "^0 24552 striped 3 1:0 1:1 1:2 1 AAA$" vblkctl status s
check_output "status --json: per-stripe health" '"health": ?"A"' vblkctl --json status s
disk=$(disk_of s)
check_eq "io_min = chunk (24 sectors)" 12288 "$(cat /sys/block/$disk/queue/minimum_io_size)"
check_eq "io_opt = chunk x stripes" 36864 "$(cat /sys/block/$disk/queue/optimal_io_size)"
check_eq "chunk_sectors = chunk" 24 "$(cat /sys/block/$disk/queue/chunk_sectors)"
vblkctl remove s

# --- byte-identical with dm-striped, both ways ---
table=$(st_table 3 24 16)
size=$(table_size "$table")
lower_image() {
	for r in ram0 ram1 ram2; do dd if=/dev/$r bs=1M count=16 iflag=direct status=none; done | sha256sum
}
for r in ram0 ram1 ram2; do dd if=/dev/zero of=/dev/$r bs=1M count=16 oflag=direct status=none; done
head -c $((size * 512)) /dev/urandom >"$tmp/a"
head -c $((size * 512)) /dev/urandom >"$tmp/b"
check "vblk: create 3 x 24-sector chunks (not a power of two)" vblkctl create s --table "$table"
check "vblk: write a 48 MiB image" dd if="$tmp/a" of=/dev/vblk/s bs=1M oflag=direct status=none
vimg=$(lower_image)
vblkctl remove s
check "dm: the same table" dmsetup create sdm --table "$table"
check "dm-striped reads exactly what vblk wrote" same_bytes "$tmp/a" /dev/mapper/sdm "$size"
dd if="$tmp/a" of=/dev/mapper/sdm bs=1M oflag=direct status=none
check_eq "the same image through dm leaves the same lower bytes" "$vimg" "$(lower_image)"
dd if="$tmp/b" of=/dev/mapper/sdm bs=64k oflag=direct status=none
dm_remove sdm
vblkctl create s --table "$table"
check "vblk reads exactly what dm-striped wrote" same_bytes "$tmp/b" /dev/vblk/s "$size"
vblkctl remove s
# power-of-two chunk, 4 stripes, 4 KiB random writes at depth through fio
table=$(st_table 4 128 8)
fio_w() {
	fio --name=cmp --filename="$1" --size=32M --direct=1 --ioengine=io_uring --iodepth=16 \
		--rw=randwrite --bs=4k --verify=crc32c --randseed=99 --verify_state_save=0 \
		--output-format=terse "${@:2}" >/dev/null
}
vblkctl create s --table "$table"
check "fio writes verify headers through vblk (4 x 128)" fio_w /dev/vblk/s --do_verify=0
vblkctl remove s
dmsetup create sdm --table "$table"
check "... and fio verifies them through dm-striped" fio_w /dev/mapper/sdm --verify_only --verify_fatal=1
dm_remove sdm

# --- discard: each stripe gets its share, exactly ---
for i in 0 1 2; do nullb sd$i 8 discard=1 blocksize=512; done
table="0 $((3 * 8 * mib)) striped 3 16 /dev/sd0 0 /dev/sd1 0 /dev/sd2 0"
vblkctl create s --table "$table"
head -c $((24 * 1024 * 1024)) /dev/urandom >"$tmp/c"
dd if="$tmp/c" of=/dev/vblk/s bs=1M oflag=direct status=none
check_eq "discard is advertised" 1 "$(($(cat /sys/block/$(disk_of s)/queue/discard_max_bytes) > 0))"
# 1 MiB + 3 sectors from sector 20005: starts and ends inside chunks.
check "blkdiscard a range that starts and ends mid-chunk" blkdiscard -o $((20005 * 512)) -l $((2051 * 512)) /dev/vblk/s
python3 - "$tmp/c" 20005 2051 <<-'EOF' >"$tmp/c2"
import sys
data = bytearray(open(sys.argv[1], "rb").read())
start, n = int(sys.argv[2]) * 512, int(sys.argv[3]) * 512
data[start:start + n] = bytes(n)
sys.stdout.buffer.write(data)
EOF
check "the range reads as zeros, everything else as before" same_bytes "$tmp/c2" /dev/vblk/s $((3 * 8 * mib))
vblkctl remove s
nullb_rm sd0 sd1 sd2

# --- FLUSH reaches every stripe's device ---
flushes() { awk '{print $16}' "/sys/block/$1/stat"; }
for i in 0 1 2; do nullb sc$i 16 cache_size=4; done
vblkctl create s --table "0 $((3 * 16 * mib)) striped 3 8 /dev/sc0 0 /dev/sc1 0 /dev/sc2 0"
check_eq "write_cache: write back (stacked from the stripes)" "write back" "$(cat /sys/block/$(disk_of s)/queue/write_cache)"
before=$(for i in 0 1 2; do flushes sc$i; done)
dd if=/dev/urandom of=/dev/vblk/s bs=4k count=1 oflag=direct status=none
python3 -c 'import os; fd = os.open("/dev/vblk/s", os.O_WRONLY); os.fsync(fd)'
after=$(for i in 0 1 2; do flushes sc$i; done)
check "fsync sends a cache flush to each of the 3 stripes" \
	python3 -c 'import sys; b, a = map(str.split, sys.argv[1:]); sys.exit(not all(int(y) > int(x) for x, y in zip(b, a)))' "$before" "$after"
vblkctl remove s
nullb_rm sc0 sc1 sc2

# --- one request over several chunks goes to all its stripes at once ---
# Each stripe sits on dm-delay; a 3-chunk read must take about one delay
# (the parts wait side by side), not three (one after another). The delay
# is switched on only after udev has probed the new device.
delays() { for i in 0 1 2; do dmsetup suspend sdel$i && dmsetup load sdel$i --table "0 $((16 * mib)) delay /dev/ram$i 0 $1" && dmsetup resume sdel$i; done; }
for i in 0 1 2; do dmsetup create sdel$i --table "0 $((16 * mib)) delay /dev/ram$i 0 0"; done
vblkctl create s --table "0 $((3 * 16 * mib)) striped 3 8 /dev/mapper/sdel0 0 /dev/mapper/sdel1 0 /dev/mapper/sdel2 0"
udevadm settle 2>/dev/null
delays 1500
t0=$(date +%s%N)
dd if=/dev/vblk/s of=/dev/null bs=12k count=1 iflag=direct status=none
ms=$((($(date +%s%N) - t0) / 1000000))
delays 0
diag "3-chunk read over three 1500 ms stripes: $ms ms"
check "a 3-chunk read waits on its stripes side by side (< 3000 ms; one after another would be >= 4500)" test "$ms" -ge 1500 -a "$ms" -lt 3000
udevadm settle 2>/dev/null
vblkctl remove s
for i in 0 1 2; do dm_remove sdel$i; done

# --- a failing stripe fails only the I/O that touches it ---
dmsetup create sbad --table "0 $((16 * mib)) linear /dev/ram3 0"
vblkctl create s --table "0 $((3 * 16 * mib)) striped 3 8 /dev/ram0 0 /dev/ram1 0 /dev/mapper/sbad 0"
dd if="$tmp/a" of=/dev/vblk/s bs=1M count=48 oflag=direct status=none
ev=$(vblkctl --json info s | python3 -c 'import json,sys; print(json.load(sys.stdin)["event_nr"])')
dmsetup suspend sbad && dmsetup load sbad --table "0 $((16 * mib)) error" && dmsetup resume sbad
check "a read of chunk 0 (stripe 0) works" dd if=/dev/vblk/s of=/dev/null bs=4k count=1 iflag=direct status=none
check "a read of chunk 1 (stripe 1) works" dd if=/dev/vblk/s of=/dev/null bs=4k skip=1 count=1 iflag=direct status=none
check_fails "a read of chunk 2 (the failed stripe) fails" dd if=/dev/vblk/s of=/dev/null bs=4k skip=2 count=1 iflag=direct status=none
check_fails "a write to chunk 5 (the failed stripe) fails" dd if=/dev/zero of=/dev/vblk/s bs=4k seek=5 count=1 oflag=direct status=none
check "a write to chunk 3 (stripe 0) works" dd if=/dev/zero of=/dev/vblk/s bs=4k seek=3 count=1 oflag=direct status=none
check_output "status shows the stripe D" " 1 AAD$" vblkctl status s
check "an event was raised" timeout 20 vblkctl wait s "$ev"
vblkctl remove s
dm_remove sbad

# --- a stack: striped over three vblk linear devices; reload under load ---
for i in 0 1 2; do vblkctl create l$i --table "0 $((16 * mib)) linear /dev/ram$i $((8 * mib))"; done
table="0 $((48 * mib)) striped 3 64 /dev/vblk/l0 0 /dev/vblk/l1 0 /dev/vblk/l2 0"
check "striped over three vblk linear devices" vblkctl create s --table "$table"
fio_verify /dev/vblk/s 40M --iodepth=32 >"$tmp/fio.out" 2>&1 &
fio=$!
swaps=0
while kill -0 "$fio" 2>/dev/null; do
	vblkctl suspend s && vblkctl load s --table "$table" && vblkctl resume s || break
	swaps=$((swaps + 1))
	sleep 0.3
done
wait "$fio"
check_eq "fio verify through the stack while the table was swapped $swaps times" 0 "$?"
check "... at least 3 swaps" test "$swaps" -ge 3
check "ext4 on the stack: mkfs, fill, fsck, reread" fs_check ext4 /dev/vblk/s
vblkctl remove s
for i in 0 1 2; do vblkctl remove l$i; done

# --- xfs on 4 stripes of 96 MiB null_blk ---
for i in 0 1 2 3; do nullb sx$i 100; done
vblkctl create s --table "0 $((4 * 96 * mib)) striped 4 128 /dev/sx0 0 /dev/sx1 0 /dev/sx2 0 /dev/sx3 0"
check "xfs on 4 stripes: mkfs, fill, xfs_repair -n, reread (384 MiB)" fs_check xfs /dev/vblk/s
vblkctl remove s
nullb_rm sx0 sx1 sx2 sx3

check_output "no devices at the end" '^No devices found$' vblkctl ls
rm -rf "$tmp"
done_testing
