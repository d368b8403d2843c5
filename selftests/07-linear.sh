#!/usr/bin/env bash
# linear: placement, fio verify, a 3-line concatenation of three devices,
# ext4 and xfs, FLUSH / FUA / DISCARD / WRITE_ZEROES passed down (or
# refused), lower errors coming back, limits stacked, claims released.
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
excl_open() { python3 -c 'import os,sys; os.close(os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL))' "$1"; }
flushes() { awk '{print $16}' "/sys/block/$1/stat"; }
q() { cat "/sys/block/$(disk_of "$1")/queue/$2"; }

# --- placement: sector s of the line is sector offset + s of the device ---
dd if=/dev/zero of=/dev/ram0 bs=1M count=64 oflag=direct status=none
check "create l: 2048 sectors of ram0 from sector 4096" vblkctl create l --table '0 2048 linear /dev/ram0 4096'
check_eq "table shows the device as major:minor" "0 2048 linear 1:0 4096" "$(vblkctl table l)"
check_eq "status of linear is the bare line" "0 2048 linear" "$(vblkctl status l)"
check_output "deps lists ram0" '^1 dependency	: \(1, 0 ram0\)$' vblkctl deps l
check_eq "deps --json" '[{"dev":"1:0","name":"ram0"}]' "$(vblkctl --json deps l)"
head -c $((2048 * 512)) /dev/urandom >"$tmp/pat"
dd if="$tmp/pat" of=/dev/vblk/l bs=64k oflag=direct status=none
check "written data lands at sector 4096 of ram0" \
	cmp "$tmp/pat" <(sectors_of /dev/ram0 4096 2048)
check "and reads back through vblk" same_bytes "$tmp/pat" /dev/vblk/l 2048
check "sectors before the line's offset are untouched" \
	cmp <(sectors_of /dev/ram0 0 4096) <(head -c $((4096 * 512)) /dev/zero)
check_fails "ram0 is claimed while the table holds it (O_EXCL open fails)" excl_open /dev/ram0
check "remove l" vblkctl remove l
check "... releases ram0 (O_EXCL open works)" excl_open /dev/ram0

# --- fio verify on a whole device ---
check "create lf over all of ram0" vblkctl create lf --table "0 $(sectors /dev/ram0) linear /dev/ram0 0"
check "fio randwrite + crc32c verify, 4k, QD16" fio_verify /dev/vblk/lf 32M
check "fio verify, 128k sequential" fio_verify /dev/vblk/lf 32M --rw=write --bs=128k --offset=32M
check "fio verify, mixed block sizes 512..64k" fio_verify /dev/vblk/lf 16M --bsrange=512-64k --offset=8M
check_eq "no write cache below ram0: write through" "write through" "$(q lf write_cache)"
check_eq "limits: logical block 512 like ram0" "$(cat /sys/block/ram0/queue/logical_block_size)" "$(q lf logical_block_size)"
check_eq "limits: discard_granularity stacked from ram0" "$(cat /sys/block/ram0/queue/discard_granularity)" "$(q lf discard_granularity)"

# --- DISCARD reaches the lower device (brd frees discarded pages) ---
dd if=/dev/urandom of=/dev/vblk/lf bs=1M count=2 oflag=direct status=none
check "blkdiscard of the first MiB through vblk" blkdiscard -o 0 -l 1M /dev/vblk/lf
check "... zeroes it on ram0 (the discard reached brd)" \
	cmp <(dd if=/dev/ram0 bs=1M count=1 iflag=direct status=none) <(head -c 1M /dev/zero)
check_fails "... and only it: the second MiB still has data" \
	cmp <(dd if=/dev/ram0 bs=1M skip=1 count=1 iflag=direct status=none) <(head -c 1M /dev/zero)
check_eq "WRITE_ZEROES: ram0 has none, so neither has vblk" 0 "$(q lf write_zeroes_max_bytes)"
check "BLKZEROOUT still zeroes (the block layer writes zeros instead)" blkdiscard -z -o 1M -l 1M /dev/vblk/lf
check "... as read through vblk" \
	cmp <(dd if=/dev/vblk/lf bs=1M skip=1 count=1 iflag=direct status=none) <(head -c 1M /dev/zero)
vblkctl remove lf

# --- a lower device without discard: refused cleanly ---
nullb nbnd 16 discard=0
vblkctl create nd --table "0 $(sectors /dev/nbnd) linear /dev/nbnd 0"
check_eq "no discard below: discard_max_bytes is 0" 0 "$(q nd discard_max_bytes)"
check_output "blkdiscard is refused as unsupported" 'not supported' blkdiscard -o 0 -l 1M /dev/vblk/nd
vblkctl remove nd
nullb_rm nbnd

# --- WRITE_ZEROES passes down (linear over a vblk zero device has it) ---
vblkctl create z --table '0 65536 zero'
vblkctl create wz --table '0 65536 linear /dev/vblk/z 0'
check "write_zeroes_max_bytes is non-zero over a device that has it" test "$(q wz write_zeroes_max_bytes)" -gt 0
check "BLKZEROOUT through linear onto the zero target" blkdiscard -z -o 0 -l 8M /dev/vblk/wz
vblkctl remove wz
vblkctl remove z

# --- FLUSH and FUA: a write-back cache below ---
nullb nbc1 32 cache_size=8
nullb nbc2 32 cache_size=8 fua=0
vblkctl create fc --table "$(printf '0 32768 linear /dev/nbc1 0\n32768 32768 linear /dev/nbc2 0')"
check_eq "write_cache: write back (stacked from the cached lower devices)" "write back" "$(q fc write_cache)"
check_eq "fua: on (where a lower device lacks FUA, its block layer emulates it)" 1 "$(q fc fua)"
f1=$(flushes nbc1) f2=$(flushes nbc2)
dd if=/dev/urandom of=/dev/vblk/fc bs=4k count=1 oflag=direct status=none
python3 -c 'import os; fd = os.open("/dev/vblk/fc", os.O_WRONLY); os.fsync(fd)'
check "fsync of vblk sends a cache flush to the first lower device" test "$(flushes nbc1)" -gt "$f1"
check "... and to the second (every lower device)" test "$(flushes nbc2)" -gt "$f2"
vblkctl remove fc
vblkctl create fu --table "0 32768 linear /dev/nbc2 0"
check_eq "fua: off over a device without FUA" 0 "$(q fu fua)"
check "O_DSYNC direct writes complete (a flush follows each)" dd if=/dev/urandom of=/dev/vblk/fu bs=4k count=64 oflag=direct,dsync status=none
vblkctl remove fu
nullb_rm nbc1 nbc2

# --- lower errors come back as errors ---
nullb nbbad 16
echo "+2048-4095" >"$NULLB_CFG/nbbad/badblocks"
vblkctl create le --table "0 $(sectors /dev/nbbad) linear /dev/nbbad 0"
check "I/O outside the bad blocks works" dd if=/dev/vblk/le of=/dev/null bs=4k count=16 iflag=direct status=none
check_fails "a read of a bad block fails" dd if=/dev/vblk/le of=/dev/null bs=4k skip=$((3000 / 8)) count=1 iflag=direct status=none
check_fails "a write to a bad block fails" dd if=/dev/zero of=/dev/vblk/le bs=4k seek=$((3000 / 8)) count=1 oflag=direct status=none
check "a request that spans good and bad sectors fails" \
	bash -c '! dd if=/dev/vblk/le of=/dev/null bs=2M count=1 iflag=direct status=none'
vblkctl remove le
nullb_rm nbbad

# --- 3-line concatenation of three devices: placement and fio ---
for r in ram1 ram2 ram3; do dd if=/dev/zero of=/dev/$r bs=1M count=64 oflag=direct status=none; done
cat >"$tmp/cat" <<'T'
0 40000 linear /dev/ram1 0
40000 50000 linear /dev/ram2 8
90000 30000 linear /dev/ram3 1000
T
check "create cat: ram1 + ram2 + ram3" vblkctl create cat "$tmp/cat"
check_eq "120000 sectors" 120000 "$(sectors /dev/vblk/cat)"
check_output "deps: three devices" '^3 dependencies	: \(1, 1 ram1\) \(1, 2 ram2\) \(1, 3 ram3\)$' vblkctl deps cat
head -c $((120000 * 512)) /dev/urandom >"$tmp/big"
dd if="$tmp/big" of=/dev/vblk/cat bs=1M oflag=direct status=none
check "line 1 is sectors 0.. of ram1" cmp <(head -c $((40000 * 512)) "$tmp/big") \
	<(sectors_of /dev/ram1 0 40000)
check "line 2 is sectors 8.. of ram2" cmp <(tail -c +$((40000 * 512 + 1)) "$tmp/big" | head -c $((50000 * 512))) \
	<(sectors_of /dev/ram2 8 50000)
check "line 3 is sectors 1000.. of ram3" cmp <(tail -c +$((90000 * 512 + 1)) "$tmp/big") \
	<(sectors_of /dev/ram3 1000 30000)
check "1 MiB reads across both boundaries read back what was written" same_bytes "$tmp/big" /dev/vblk/cat 120000
check "fio verify across the concatenation (64k blocks cross the boundaries)" \
	fio_verify /dev/vblk/cat 58M --bs=64k --blockalign=4k
check "ext4: mkfs, fill, fsck, reread" fs_check ext4 /dev/vblk/cat
vblkctl remove cat

# --- xfs on a 3-line concatenation of three 128 MiB null_blk devices ---
nullb nbx1 128; nullb nbx2 128; nullb nbx3 128
s=$(sectors /dev/nbx1)
vblkctl create cx --table "$(printf '0 %d linear /dev/nbx1 0\n%d %d linear /dev/nbx2 0\n%d %d linear /dev/nbx3 0' "$s" "$s" "$s" $((2 * s)) "$s")"
check "buffered read of all of it (readahead plugs, blk-mq devices below)" dd if=/dev/vblk/cx of=/dev/null bs=1M status=none
check "xfs: mkfs, fill, xfs_repair -n, reread (384 MiB)" fs_check xfs /dev/vblk/cx
check "ext4 on the same stack" fs_check ext4 /dev/vblk/cx
vblkctl remove cx
nullb_rm nbx1 nbx2 nbx3

# --- 4096-byte logical blocks are inherited ---
nullb nb4k 16 blocksize=4096
vblkctl create l4 --table "0 $(sectors /dev/nb4k) linear /dev/nb4k 0"
check_eq "logical block size 4096 stacked from the lower device" 4096 "$(q l4 logical_block_size)"
check "fio verify with 4k blocks" fio_verify /dev/vblk/l4 8M
check_fails "512-byte direct I/O is refused by the block layer" dd if=/dev/vblk/l4 of=/dev/null bs=512 count=1 iflag=direct status=none
vblkctl remove l4
nullb_rm nb4k

check_output "no devices at the end" '^No devices found$' vblkctl ls
rm -rf "$tmp"
done_testing
