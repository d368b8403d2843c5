#!/usr/bin/env bash
# Thin provisioning (thin-pool and thin) against dm-thin: dm's table and
# messages; a new pool formats its metadata; unprovisioned blocks read
# zeros; fio verify and ext4 through a thin; snapshots (and a snapshot of
# a snapshot) share blocks until written and keep their image; discard
# and delete give space back; the metadata vblk wrote passes thin_check
# and thin_dump lists it; dm-thin activates vblk's pool and reads the
# same data, and vblk reads what dm-thin wrote; an external origin reads
# through where nothing is provisioned and is merged into first partial
# writes, never written; bad tables and messages
# are refused with a message.
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
nullb tm 8   # metadata: 2048 blocks of 4 KiB
nullb td 256 # data: 4096 blocks of 64 KiB
nullb to 4   # an external origin
bs=128
data=$(sectors /dev/td)
vsize=$((192 * 2048)) # each thin: 192 MiB virtual (more than the pool has)
pool_line="0 $data thin-pool /dev/tm /dev/td $bs 0"

cleanup() {
	for d in te eo t2 t1 t0 pool; do vblkctl info "$d" >/dev/null 2>&1 && remove_retry "$d"; done
	for d in dthin dpool; do dmsetup info "$d" >/dev/null 2>&1 && dmsetup remove --retry "$d"; done
	nullb_rm tm td to
	rm -rf "$tmp"
}
trap 'cleanup >/dev/null 2>&1; rm -f "$_tap_out"' EXIT

pool_field() { vblkctl status pool | awk -v k="$1" '{ print $(3 + k) }'; }
used_data() { pool_field 3 | cut -d/ -f1; }
thin_status() { vblkctl status "$1" | cut -d' ' -f4-; }
sum() { sectors_of "$1" 0 "$2" | sha256sum | cut -c1-64; }
put() { dd if="$1" of="$2" bs=1M count="$3" seek="${4:-0}" oflag=direct conv=notrunc,nocreat status=none; }

head -c 8M /dev/urandom >"$tmp/a"
head -c 8M /dev/urandom >"$tmp/b"
dd if=/dev/zero of=/dev/tm bs=4k count=1 oflag=direct status=none

# --- bad pool tables ---
bad() { refused "refused: $1" "$2" vblkctl create bad --table "$3"; }
bad "block size not a multiple of 128" "multiple of 128" "0 $data thin-pool /dev/tm /dev/td 100 0"
bad "block size over dm's 1 GiB" "between 128 and 2097152" "0 $data thin-pool /dev/tm /dev/td 4194304 0"
bad "unknown feature" "unknown feature 'frobnicate'" "0 $data thin-pool /dev/tm /dev/td $bs 0 1 frobnicate"
bad "metadata and data the same device" "must differ" "0 $data thin-pool /dev/td /dev/td $bs 0"
bad "missing arguments" "thin-pool takes" "0 $data thin-pool /dev/tm /dev/td"
check "no device was left behind" test -z "$(vblkctl list 2>/dev/null | grep -w bad)"
check_eq "the metadata device was not formatted by a refused table" 0 \
	"$(dd if=/dev/tm bs=4k count=1 iflag=direct status=none | tr -d '\0' | wc -c)"

# --- a new pool ---
check "create the pool (a blank metadata device is formatted)" vblkctl create pool --table "$pool_line"
check_eq "table as dm prints it" "0 $data thin-pool $(devno /dev/tm) $(devno /dev/td) $bs 0 0" "$(vblkctl table pool)"
check_output "status: transaction 0, no data used, rw, dm's fields" \
	"^0 $data thin-pool 0 [0-9]+/2048 0/4096 - rw (no_)?discard_passdown queue_if_no_space - 512$" vblkctl status pool
check "create_thin 0" vblkctl message pool 0 create_thin 0
refused "create_thin 0 again refused" "already exists" vblkctl message pool 0 create_thin 0
refused "create_snap of a missing origin refused" "does not exist" vblkctl message pool 0 create_snap 5 9
refused "an unknown message refused" "unknown message 'frob'" vblkctl message pool 0 frob 1
refused "a thin of a missing device id refused" "no device 3" vblkctl create bad --table "0 $vsize thin /dev/vblk/pool 3"
refused "a thin of a device that is no pool refused" "not a vblk thin-pool|not a thin-pool|no active thin-pool" \
	vblkctl create bad --table "0 $vsize thin /dev/td 0"
check "set_transaction_id 0 7" vblkctl message pool 0 set_transaction_id 0 7
refused "set_transaction_id with the wrong current id refused" "transaction id is 7, not 0" \
	vblkctl message pool 0 set_transaction_id 0 8
check_output "status shows transaction 7" "^0 $data thin-pool 7 " vblkctl status pool

# --- a thin volume ---
check "create thin 0 (192 MiB virtual on a 256 MiB pool: no room check, as dm)" vblkctl create t0 --table "0 $vsize thin /dev/vblk/pool 0"
check_eq "table" "0 $vsize thin $(devno /dev/vblk/pool) 0" "$(vblkctl table t0)"
check_eq "nothing mapped yet" "0 -" "$(thin_status t0)"
check_eq "unprovisioned blocks read zeros" "$(head -c 4M /dev/zero | sha256sum | cut -c1-64)" "$(sum /dev/vblk/t0 8192)"
check_eq "reading provisioned nothing" 0 "$(used_data)"
check "a 4 KiB write in block 3" dd if="$tmp/a" of=/dev/vblk/t0 bs=4k count=1 seek=$((3 * 16 + 5)) oflag=direct conv=notrunc status=none
check_eq "one block mapped: 128 sectors, highest sector 511" "128 511" "$(thin_status t0)"
check_eq "the pool used one data block" 1 "$(used_data)"
check "the rest of the new block reads zeros (zeroed before the write)" \
	cmp <(sectors_of /dev/vblk/t0 $((3 * bs)) 40) <(head -c $((40 * 512)) /dev/zero)
check "fio verify, mixed sizes (blocks provisioned as written)" fio_verify /dev/vblk/t0 24M --bssplit=4k/40:64k/40:256k/20
check "8 MiB written at 32 MiB" put "$tmp/a" /dev/vblk/t0 8 32
check_eq "and read back" "$(sha256sum <"$tmp/a" | cut -c1-64)" "$(sectors_of /dev/vblk/t0 $((32 * 2048)) 16384 | sha256sum | cut -c1-64)"

# --- snapshots ---
before=$(sum /dev/vblk/t0 $((48 * 2048)))
used=$(used_data)
vblkctl suspend t0
check "create_snap 1 0 (origin suspended, as dm asks)" vblkctl message pool 0 create_snap 1 0
vblkctl resume t0
check "thin 1 (the snapshot)" vblkctl create t1 --table "0 $vsize thin /dev/vblk/pool 1"
check_eq "the snapshot is the origin's image" "$before" "$(sum /dev/vblk/t1 $((48 * 2048)))"
check_eq "a snapshot takes no data blocks" "$used" "$(used_data)"
check "overwrite 8 MiB of the origin" put "$tmp/b" /dev/vblk/t0 8 32
check_eq "the snapshot keeps the old image" "$before" "$(sum /dev/vblk/t1 $((48 * 2048)))"
check_eq "the origin has the new data" "$(sha256sum <"$tmp/b" | cut -c1-64)" \
	"$(sectors_of /dev/vblk/t0 $((32 * 2048)) 16384 | sha256sum | cut -c1-64)"
check_eq "sharing broken once per block: 128 new data blocks" $((used + 128)) "$(used_data)"
check "overwrite the same 8 MiB again: no new blocks" put "$tmp/a" /dev/vblk/t0 8 32
check_eq "... the pool's use unchanged" $((used + 128)) "$(used_data)"
vblkctl suspend t1
check "a snapshot of the snapshot (create_snap 2 1)" vblkctl message pool 0 create_snap 2 1
vblkctl resume t1
check "thin 2" vblkctl create t2 --table "0 $vsize thin /dev/vblk/pool 2"
check "ext4 on the snapshot of the snapshot" fs_check ext4 /dev/vblk/t2
check_eq "the first snapshot still has its image" "$before" "$(sum /dev/vblk/t1 $((48 * 2048)))"

# --- discard and delete ---
used=$(used_data)
check "blkdiscard all of the origin" blkdiscard /dev/vblk/t0
check_eq "the origin maps nothing" "0 -" "$(thin_status t0)"
check_eq "the origin reads zeros" "$(head -c 4M /dev/zero | sha256sum | cut -c1-64)" "$(sum /dev/vblk/t0 8192)"
check "blocks only the origin mapped came back" test "$(used_data)" -lt "$used"
check_eq "the snapshot is untouched" "$before" "$(sum /dev/vblk/t1 $((48 * 2048)))"
refused "delete of a thin in use refused (EBUSY)" "device 2 is in use by a thin table" vblkctl message pool 0 delete 2
remove_retry t2
used=$(used_data)
check "delete 2 (its thin removed first)" vblkctl message pool 0 delete 2
check "deleting gave its own blocks back" test "$(used_data)" -lt "$used"
refused "delete of a missing device refused" "does not exist" vblkctl message pool 0 delete 2

# --- snapshots taken and deleted while fio verifies the origin ---
fio_verify /dev/vblk/t0 16M --time_based --runtime=20 >"$tmp/fio" 2>&1 &
fio=$!
snaps_ok=0
for i in 1 2 3 4 5 6; do
	sleep 2
	vblkctl suspend t0 && vblkctl message pool 0 create_snap $((20 + i)) 0 && vblkctl resume t0 &&
		{ [ $i -eq 1 ] || vblkctl message pool 0 delete $((19 + i)); } && snaps_ok=$((snaps_ok + 1))
done
wait "$fio"
check_eq "fio verify on the origin passed while 6 snapshots were taken and 5 deleted" 0 "$?"
check_eq "every suspend, create_snap, resume and delete succeeded" 6 "$snaps_ok"
check "the last one deleted" vblkctl message pool 0 delete 26

# --- an external origin (read-only: unprovisioned blocks read it) ---
eo=6000 # sectors: the origin ends inside block 46
vblkctl create eo --table "0 $eo linear /dev/to 0"
dd if="$tmp/b" of=/dev/vblk/eo bs=512 count=$eo oflag=direct status=none
head -c $((eo * 512)) "$tmp/b" >"$tmp/exp"
truncate -s $((16384 * 512)) "$tmp/exp"
eosum=$(sectors_of /dev/vblk/eo 0 $eo | sha256sum)
used=$(used_data)
check "create_thin 10" vblkctl message pool 0 create_thin 10
refused "an external origin that is the pool refused" "is the pool" \
	vblkctl create te --table "0 16384 thin /dev/vblk/pool 10 /dev/vblk/pool"
check "thin 10 with an external origin of $eo sectors" vblkctl create te --table "0 16384 thin /dev/vblk/pool 10 /dev/vblk/eo"
check_eq "table names the origin" "0 16384 thin $(devno /dev/vblk/pool) 10 $(devno /dev/vblk/eo)" "$(vblkctl table te)"
check "it reads the origin, zeros past its end" cmp <(sectors_of /dev/vblk/te 0 16384) "$tmp/exp"
check_eq "reading provisioned nothing" "$used" "$(used_data)"
patch() { # patch SECTOR: 4 KiB of $tmp/a at SECTOR, on te and in the expected image
	dd if="$tmp/a" of=/dev/vblk/te bs=512 count=8 seek="$1" oflag=direct conv=notrunc status=none &&
		dd if="$tmp/a" of="$tmp/exp" bs=512 count=8 seek="$1" conv=notrunc status=none
}
check "4 KiB into block 0 (the rest comes from the origin)" patch 100
check "4 KiB into block 46 (origin, then zeros past its end)" patch 5900
check "4 KiB past the origin (block 100: zeroed)" patch 12800
check "a whole block (block 10: nothing copied)" bash -c "dd if=$tmp/a of=/dev/vblk/te bs=64k count=1 seek=10 oflag=direct status=none && dd if=$tmp/a of=$tmp/exp bs=64k count=1 seek=10 conv=notrunc status=none"
check_eq "4 blocks provisioned" $((used + 4)) "$(used_data)"
check "the thin reads the merged image" cmp <(sectors_of /dev/vblk/te 0 16384) "$tmp/exp"
check_eq "the origin was not written" "$eosum" "$(sectors_of /dev/vblk/eo 0 $eo | sha256sum)"
check "discard block 0" blkdiscard -o 0 -l 65536 /dev/vblk/te
check "block 0 reads the origin again" cmp <(sectors_of /dev/vblk/te 0 128) <(head -c 65536 "$tmp/b")
remove_retry te
remove_retry eo
check "delete 10" vblkctl message pool 0 delete 10
check_eq "its blocks came back" "$used" "$(used_data)"

check "the origin written again" put "$tmp/a" /dev/vblk/t0 8 0
want0=$(sum /dev/vblk/t0 $((16 * 2048)))
want1=$(sum /dev/vblk/t1 $((48 * 2048)))
vblk_used=$(used_data)
sync

# --- dm's tools and dm-thin read what vblk wrote ---
remove_retry t1
remove_retry t0
remove_retry pool
check "thin_check accepts the metadata vblk wrote" thin_check /dev/tm
thin_dump /dev/tm >"$tmp/dump" 2>&1
check_output "thin_dump: transaction 7, devices 0 and 1" 'transaction="7"' cat "$tmp/dump"
check "thin_dump lists devices 0 and 1, not 2" \
	bash -c "grep -q 'dev_id=\"0\"' $tmp/dump && grep -q 'dev_id=\"1\"' $tmp/dump && ! grep -q 'dev_id=\"2\"' $tmp/dump"
check "dm-thin activates vblk's pool" dmsetup create dpool --table "$pool_line"
check_output "dm-thin's status: transaction 7, the data vblk used, rw, no needs_check" \
	"^0 $data thin-pool 7 [0-9]+/2048 $vblk_used/4096 - rw .* - 512 ?$" dmsetup status dpool
check "... and its thin 1" dmsetup create dthin --table "0 $vsize thin /dev/mapper/dpool 1"
check_eq "dm-thin reads vblk's snapshot" "$want1" "$(sum /dev/mapper/dthin $((48 * 2048)))"
dm_remove dthin
check "dm-thin's thin 0" dmsetup create dthin --table "0 $vsize thin /dev/mapper/dpool 0"
check_eq "dm-thin reads vblk's origin" "$want0" "$(sum /dev/mapper/dthin $((16 * 2048)))"
check "dm-thin writes 8 MiB at 40 MiB" put "$tmp/b" /dev/mapper/dthin 8 40
check "dm-thin creates thin 5" dmsetup message dpool 0 create_thin 5
dm_remove dthin
dm_remove dpool
check "thin_check after dm-thin" thin_check /dev/tm
check "vblk opens the pool dm-thin changed" vblkctl create pool --table "$pool_line"
check "vblk's thin 0" vblkctl create t0 --table "0 $vsize thin /dev/vblk/pool 0"
check_eq "vblk reads what dm-thin wrote" "$(sha256sum <"$tmp/b" | cut -c1-64)" \
	"$(sectors_of /dev/vblk/t0 $((40 * 2048)) 16384 | sha256sum | cut -c1-64)"
check "thin 5, made by dm-thin" vblkctl create t1 --table "0 $vsize thin /dev/vblk/pool 5"
check_eq "reads zeros" "0 -" "$(thin_status t1)"
remove_retry t1
remove_retry t0
remove_retry pool
check "thin_check at the end" thin_check /dev/tm

# --- 2 MiB blocks: zeroed and copied a MiB at a time ---
dd if=/dev/zero of=/dev/tm bs=4k count=1 oflag=direct status=none
check "a pool of 2 MiB blocks (on the used data device)" vblkctl create pool --table "0 $data thin-pool /dev/tm /dev/td 4096 0"
vblkctl message pool 0 create_thin 0
check "its thin 0" vblkctl create t0 --table "0 $vsize thin /dev/vblk/pool 0"
head -c 2M /dev/zero >"$tmp/blk"
dd if="$tmp/a" of="$tmp/blk" bs=512 count=8 seek=2048 conv=notrunc status=none
check "4 KiB in the middle of block 1" dd if="$tmp/a" of=/dev/vblk/t0 bs=512 count=8 seek=6144 oflag=direct conv=notrunc status=none
check_eq "one 2 MiB block mapped" "4096 8191" "$(thin_status t0)"
check "the block is the write and zeros (both MiB zeroed over old data)" cmp <(sectors_of /dev/vblk/t0 4096 4096) "$tmp/blk"
vblkctl suspend t0
check "a snapshot of it" vblkctl message pool 0 create_snap 1 0
vblkctl resume t0
check "4 KiB into the shared block, near its end" dd if="$tmp/b" of=/dev/vblk/t0 bs=512 count=8 seek=8100 oflag=direct conv=notrunc status=none
check "thin 1 (the snapshot)" vblkctl create t1 --table "0 $vsize thin /dev/vblk/pool 1"
check "the snapshot keeps the block" cmp <(sectors_of /dev/vblk/t1 4096 4096) "$tmp/blk"
dd if="$tmp/b" of="$tmp/blk" bs=512 count=8 seek=$((8100 - 4096)) conv=notrunc status=none
check "the origin's copy has both MiB and the new write" cmp <(sectors_of /dev/vblk/t0 4096 4096) "$tmp/blk"
remove_retry t1
remove_retry t0
remove_retry pool
check "thin_check" thin_check /dev/tm

done_testing
