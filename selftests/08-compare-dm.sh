#!/usr/bin/env bash
# vblk linear against dm-linear on the same lower devices and the same
# table: what one writes, the other reads back byte for byte, both ways;
# and each places data exactly where the other does.
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
# Three lines over two devices, with offsets, out of order on ram1.
table="0 30000 linear /dev/ram1 100
30000 40000 linear /dev/ram2 0
70000 20000 linear /dev/ram1 40000"
size=90000
zero_lower() { for r in ram1 ram2; do dd if=/dev/zero of=/dev/$r bs=1M count=64 oflag=direct status=none; done; }
lower_image() { for r in ram1 ram2; do dd if=/dev/$r bs=1M count=64 iflag=direct status=none; done | sha256sum; }

# --- write through vblk, read through dm-linear ---
zero_lower
head -c $((size * 512)) /dev/urandom >"$tmp/a"
check "vblk: create with the table" vblkctl create v --table "$table"
check "vblk: write a 44 MiB random image" dd if="$tmp/a" of=/dev/vblk/v bs=1M oflag=direct status=none
vblk_image=$(lower_image)
check "vblk: remove (releases the lower devices)" vblkctl remove v
check "dm: create the same table" dmsetup create cmpdm --table "$table"
check_eq "dm: same size" "$size" "$(sectors /dev/mapper/cmpdm)"
check "dm-linear reads exactly what vblk wrote" same_bytes "$tmp/a" /dev/mapper/cmpdm "$size"

# --- write through dm-linear, read through vblk ---
zero_lower
head -c $((size * 512)) /dev/urandom >"$tmp/b"
dd if="$tmp/a" of=/dev/mapper/cmpdm bs=1M oflag=direct status=none
dm_image=$(lower_image)
check_eq "same image written through dm leaves the lower devices identical to vblk's" "$vblk_image" "$dm_image"
dd if="$tmp/b" of=/dev/mapper/cmpdm bs=1M oflag=direct status=none
check "dm: remove" dm_remove cmpdm
check "vblk: create again" vblkctl create v --table "$table"
check "vblk reads exactly what dm-linear wrote" same_bytes "$tmp/b" /dev/vblk/v "$size"

# --- fio: write with verify headers through one, verify through the other ---
fio_w() {
	fio --name=cmp --filename="$1" --size=40M --direct=1 --ioengine=io_uring --iodepth=8 \
		--rw=randwrite --bs=16k --verify=crc32c --randseed=4242 --verify_state_save=0 \
		--output-format=terse "${@:2}" >/dev/null
}
check "fio writes verify headers through vblk" fio_w /dev/vblk/v --do_verify=0
vblkctl remove v
dmsetup create cmpdm --table "$table"
check "fio verifies every block through dm-linear" fio_w /dev/mapper/cmpdm --verify_only --verify_fatal=1
check "fio writes verify headers through dm-linear" fio_w /dev/mapper/cmpdm --do_verify=0 --randseed=777
dm_remove cmpdm
vblkctl create v --table "$table"
check "fio verifies every block through vblk" fio_w /dev/vblk/v --verify_only --verify_fatal=1 --randseed=777

# --- an ext4 made on vblk mounts and checks clean on dm-linear ---
mkfs.ext4 -q -F /dev/vblk/v
mnt=$(mktemp -d)
head -c 8M "$tmp/b" >"$tmp/file"
mount /dev/vblk/v "$mnt"
cp "$tmp/file" "$mnt/file"
umount "$mnt"
vblkctl remove v
dmsetup create cmpdm --table "$table"
check "fsck on dm-linear of the ext4 vblk made" fsck.ext4 -f -n /dev/mapper/cmpdm
mount /dev/mapper/cmpdm "$mnt"
check "its file reads back through dm" cmp "$tmp/file" "$mnt/file"
umount "$mnt"
dm_remove cmpdm
rmdir "$mnt"

check_output "no vblk devices at the end" '^No devices found$' vblkctl ls
rm -rf "$tmp"
done_testing
