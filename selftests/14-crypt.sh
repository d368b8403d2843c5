#!/usr/bin/env bash
# The crypt target against dm-crypt: for every supported cipher spec (both
# the dm and the capi: form; sector sizes 512..4096 crossed with the specs
# as the matrix below explains), iv_large_sectors, IV
# and device offsets, a 32-bit IV wrapping, vblk leaves exactly dm-crypt's
# ciphertext on the lower device and each reads what the other wrote; fio
# verify headers cross over; cryptsetup plain opens what vblk wrote and the
# reverse; the key is masked in table (dmsetup's form), shown with
# --showkeys, never in status or the kernel log; fio verify; writes leave
# the caller's pages alone (bounce pages); ext4; crypt over vblk striped
# and linear; allow_discards; key wipe/set messages (refused unless
# suspended, resume refused while the key is wiped, held I/O waits for the
# key); 4 KiB crypto sectors refuse smaller I/O.
# shellcheck disable=SC2317 # helpers below are called through check/refused
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
mib=2048           # sectors per MiB
nsec=$((16 * mib)) # each lower null_blk device: 16 MiB

# Keys in hex, from fixed strings so a failure reproduces. key16/24/32
# are parts of key64; other64 is a second key of the same size.
key64=$(printf 'vblk crypt selftest key' | sha512sum | cut -c1-128)
key32=${key64:0:64}
key24=${key64:64:48}
key16=${key64:32:32}
other64=$(printf 'another vblk crypt key' | sha512sum | cut -c1-128)
zeros() { printf "%0$1d" 0; }

# Two data files made once: what is written, and different data for the
# reverse direction and held writes.
head -c 4M /dev/urandom >"$tmp/pat"
head -c 4M /dev/urandom >"$tmp/pat2"

# --- cleanup, also when the script dies half-way ---
bg=""
cleanup() {
	local d
	exec 4<&-
	# shellcheck disable=SC2086
	[ -z "$bg" ] || kill $bg
	for _ in 1 2 3; do
		for d in cdm vcs; do dmsetup info "$d" && dmsetup remove --retry "$d"; done
		# A device suspended with a wiped key cannot be resumed: give it
		# its key back first.
		vblkctl message c 0 key set "$key64" && vblkctl resume c
		for d in c s l; do vblkctl info "$d" && remove_retry "$d"; done
	done
	nullb_rm cryv cryd
	rm -rf "$tmp"
}
trap 'cleanup >/dev/null 2>&1; rm -f "$_tap_out"' EXIT


# --- data helpers (O_DIRECT; never creating files in /dev). Reads go to a
# file before any comparison, so a device is closed again by the time a
# check fails early and the next step removes it. ---
# put FILE DEV MB: write the first MB MiB of FILE at the start of DEV.
put() { dd if="$1" of="$2" bs=1M count="$3" oflag=direct conv=nocreat,notrunc status=none; }
# bytes_at DEV OFFSET LEN: LEN bytes of DEV from byte OFFSET, to stdout.
bytes_at() { dd if="$1" bs=1M skip="$2" count="$3" iflag=direct,skip_bytes,count_bytes status=none; }
# data_is FILE FOFF DEV DOFF LEN: LEN bytes of DEV at byte DOFF are the
# LEN bytes of FILE at byte FOFF.
data_is() {
	bytes_at "$3" "$4" "$5" >"$tmp/got" || return 1
	cmp <(tail -c +$(($2 + 1)) "$1" | head -c "$5") "$tmp/got"
}
# reads_back FILE DEV MB: the first MB MiB of DEV are the first MB MiB of FILE.
reads_back() { data_is "$1" 0 "$2" 0 $(($3 << 20)); }
# is_zero DEV OFFSET LEN: those bytes of DEV are all zero.
is_zero() { data_is /dev/zero 0 "$@"; }
# differs FILE DEV OFFSET LEN: DEV can be read and its LEN bytes at byte
# OFFSET are not FILE's first LEN bytes.
differs() { bytes_at "$2" "$3" "$4" >"$tmp/got" && ! cmp -s <(head -c "$4" "$1") "$tmp/got"; }
# not_plain FILE DEV SECTOR: DEV does not hold FILE's first MiB at SECTOR.
not_plain() { differs "$1" "$2" $(($3 * 512)) 1048576; }
# not_zero DEV OFFSET LEN: DEV can be read and those bytes are not all zero.
not_zero() { differs /dev/zero "$@"; }
# cmp_lowers: the two lower devices are byte-identical.
cmp_lowers() {
	dd if=/dev/cryv bs=1M iflag=direct status=none >"$tmp/lv" &&
		dd if=/dev/cryd bs=1M iflag=direct status=none >"$tmp/ld" && cmp "$tmp/lv" "$tmp/ld"
}
# discard_max NAME: /sys/block/NAME/queue/discard_max_bytes ("missing" if none).
discard_max() { cat "/sys/block/$1/queue/discard_max_bytes" 2>/dev/null || echo missing; }
# table_like_dm DM VBLK [--showkeys]: vblk's table is dm's for the same line,
# the lower device's number aside (neither empty).
table_like_dm() {
	local d v
	d=$(dmsetup table ${3:+"$3"} "$1") && v=$(vblkctl table ${3:+"$3"} "$2") || return 1
	echo "dm:   $d"
	echo "vblk: $v"
	[ -n "$v" ] && [ "$v" = "${d// $devd / $devv }" ]
}
# wipe_lowers: both lower devices zero (null_blk frees discarded sectors).
wipe_lowers() { blkdiscard -f /dev/cryv && blkdiscard -f /dev/cryd; }

# on_vblk / on_dm ACTION TABLE MB [FILE]: create c (vblk) or cdm (dm) with
# TABLE, run `ACTION FILE DEVICE MB` (FILE defaults to pat), remove it.
on_vblk() {
	local rc
	vblkctl create c --table "$2" || return 1
	"$1" "${4:-$tmp/pat}" /dev/vblk/c "$3"; rc=$?
	remove_retry c && return "$rc"
}
on_dm() {
	local rc
	dmsetup create cdm --table "$2" || return 1
	"$1" "${4:-$tmp/pat}" /dev/mapper/cdm "$3"; rc=$?
	dmsetup remove --retry cdm && return "$rc"
}
# vblk_put / dm_put TABLE MB [FILE]: write MB MiB of FILE through TABLE.
# vblk_reads / dm_reads TABLE MB [FILE]: the first MB MiB read back as FILE's.
vblk_put() { on_vblk put "$@"; }
dm_put() { on_dm put "$@"; }
vblk_reads() { on_vblk reads_back "$@"; }
dm_reads() { on_dm reads_back "$@"; }

# no_key CMD...: CMD succeeds and prints no part of any test key (8-byte
# pieces of each; the lines that have one are shown on failure).
leak_re="${key64:8:16}|${key64:40:16}|${key64:80:16}|${key64:112:16}|${other64:40:16}"
no_key() {
	local out
	out=$("$@" 2>&1) || { echo "$out"; return 1; }
	! grep -Ei -- "$leak_re" <<<"$out"
}

nullb cryv 16 discard=1 blocksize=512
nullb cryd 16 discard=1 blocksize=512
devv=$(devno /dev/cryv)
devd=$(devno /dev/cryd)

check_eq "crypt is a registered target" 1 \
	"$(vblkctl --json targets | python3 -c 'import json,sys; print(sum(t["name"] == "crypt" for t in json.load(sys.stdin)))')"

# --- table: the key masked as dmsetup masks it, --showkeys, dm's option order ---
line="0 $((nsec - 8)) crypt aes-xts-plain64 ${key64^^} 16 /dev/cryv 8 3 iv_large_sectors allow_discards sector_size:4096"
check "create with options out of dm's order and the key in upper case" vblkctl create c --table "$line"
check_eq "table: the key masked as zeros, options in dm-crypt's order" \
	"0 $((nsec - 8)) crypt aes-xts-plain64 $(zeros 128) 16 $devv 8 3 allow_discards sector_size:4096 iv_large_sectors" \
	"$(vblkctl table c)"
check_eq "table --showkeys: the key (in lower case, as dm-crypt prints it)" \
	"0 $((nsec - 8)) crypt aes-xts-plain64 $key64 16 $devv 8 3 allow_discards sector_size:4096 iv_large_sectors" \
	"$(vblkctl table --showkeys c)"
dmsetup create cdm --table "${line/cryv/cryd}"
check "table is what dmsetup table prints for the same line (device aside)" table_like_dm cdm c
check "... and with --showkeys" table_like_dm cdm c --showkeys
dmsetup remove --retry cdm
check "status shows no key" no_key vblkctl status c
check "status --json shows no key" no_key vblkctl --json status c
check "table --json shows no key" no_key vblkctl --json table c
check_output "table --json: args carry the masked key" "\"args\": ?\"aes-xts-plain64 $(zeros 128) 16 " vblkctl --json table c
check "load a second table (capi form, 32-byte key) into the inactive slot" \
	vblkctl load c --table "0 $nsec crypt capi:xts(aes)-plain64 $key32 0 /dev/cryv 0"
check_eq "table --inactive masks its key too" \
	"0 $nsec crypt capi:xts(aes)-plain64 $(zeros 64) 0 $devv 0" "$(vblkctl table --inactive c)"
check_eq "table --inactive --showkeys shows it" \
	"0 $nsec crypt capi:xts(aes)-plain64 $key32 0 $devv 0" "$(vblkctl table --inactive --showkeys c)"
vblkctl clear c
remove_retry c
line="0 $nsec crypt aes-cbc-essiv:sha256 $key16 0 /dev/cryv 0 4 same_cpu_crypt submit_from_crypt_cpus no_read_workqueue no_write_workqueue"
check "the compatibility options are accepted" vblkctl create c --table "$line"
dmsetup create cdm --table "${line/cryv/cryd}"
check "... and shown as dmsetup shows them" table_like_dm cdm c
dmsetup remove --retry cdm
remove_retry c

# --- ciphertext identical to dm-crypt's, for every spec and sector size ---
# crypt_vs_dm DESC MB SPEC KEY IV_OFFSET OFFSET [OPTS]: the same line (up to
# the end of the 16 MiB device) through vblk on cryv and dm-crypt on cryd,
# both zeroed first, side by side: MB MiB of pat written through each
# read back through each and leave the lower devices byte-identical (and
# not plaintext). Identical ciphertext that both read back as pat means
# each reads what the other wrote (the cross-reads over cryptsetup's own
# mapping and fio's verify headers follow below).
crypt_vs_dm() {
	local desc=$1 mb=$2 spec=$3 key=$4 ivoff=$5 off=$6 opts=${7:+ $7} head
	head="0 $((nsec - off)) crypt $spec $key $ivoff"
	wipe_lowers
	vblkctl create c --table "$head /dev/cryv $off$opts" || not_ok "$desc: vblk create"
	dmsetup create cdm --table "$head /dev/cryd $off$opts" || not_ok "$desc: dm-crypt create"
	check "$desc: vblk writes $mb MiB" put "$tmp/pat" /dev/vblk/c "$mb"
	check "... dm-crypt writes them through the same line" put "$tmp/pat" /dev/mapper/cdm "$mb"
	check "... vblk reads them back" reads_back "$tmp/pat" /dev/vblk/c "$mb"
	check "... dm-crypt reads them back" reads_back "$tmp/pat" /dev/mapper/cdm "$mb"
	remove_retry c
	dmsetup remove --retry cdm
	check "... the lower devices are byte-identical" cmp_lowers
	check "... and hold ciphertext, not the data" not_plain "$tmp/pat" /dev/cryv "$off"
}
specs=(aes-xts-plain64 aes-xts-plain aes-cbc-essiv:sha256 aes-cbc-plain64 aes-xts-plain64be
	"capi:xts(aes)-plain64" "capi:xts(aes)-plain" "capi:cbc(aes)-essiv:sha256" "capi:cbc(aes)-plain64"
	"capi:xts(aes)-plain64be")
keys=("$key64" "$key32" "$key32" "$key16" "$key64" "$key32" "$key64" "$key24" "$key24" "$key32")
for i in "${!specs[@]}"; do
	s=${specs[i]} k=${keys[i]}
	crypt_vs_dm "$s, $((${#k} / 2))-byte key, 512-byte sectors" 2 "$s" "$k" 0 0
done
# The larger sector sizes with the dm form only: a capi: spec reaches the
# same code once parsed (512-byte sectors above prove each parses to the
# same cipher and IV). 1024 and 2048 (1 MiB each, TCG time) for each
# cipher mode and IV kind; the other IV kinds differ from these only in
# the IV's encoding, which 512 and 4096 cover.
for i in 0 1 2 3 4; do
	s=${specs[i]} k=${keys[i]}
	crypt_vs_dm "$s, $((${#k} / 2))-byte key, sector_size:4096" 2 "$s" "$k" 0 0 "1 sector_size:4096"
done
for i in 0 2 3; do
	s=${specs[i]} k=${keys[i]}
	for ss in 1024 2048; do
		crypt_vs_dm "$s, $((${#k} / 2))-byte key, sector_size:$ss" 1 "$s" "$k" 0 0 "1 sector_size:$ss"
	done
done
crypt_vs_dm "aes-xts-plain64, sector_size:4096 iv_large_sectors" 2 aes-xts-plain64 "$key64" 0 0 "2 sector_size:4096 iv_large_sectors"
crypt_vs_dm "capi:cbc(aes)-essiv:sha256, sector_size:4096 iv_large_sectors" 2 "capi:cbc(aes)-essiv:sha256" "$key16" 0 0 \
	"2 sector_size:4096 iv_large_sectors"
crypt_vs_dm "aes-xts-plain64be, iv_large_sectors sector_size:2048" 2 aes-xts-plain64be "$key32" 0 0 "2 iv_large_sectors sector_size:2048"
crypt_vs_dm "aes-xts-plain64, iv_offset 12345, device offset 2048" 4 aes-xts-plain64 "$key64" 12345 2048
crypt_vs_dm "aes-xts-plain64, sector_size:4096 iv_large_sectors, iv_offset 8000, device offset 4096" 4 \
	aes-xts-plain64 "$key64" 8000 4096 "2 sector_size:4096 iv_large_sectors"
crypt_vs_dm "aes-cbc-essiv:sha256 (24-byte key), iv_offset 999, device offset 1000" 2 aes-cbc-essiv:sha256 "$key24" 999 1000
crypt_vs_dm "aes-xts-plain: the 32-bit IV wraps (iv_offset 2^32 - 100)" 2 aes-xts-plain "$key64" 4294967196 0
crypt_vs_dm "aes-xts-plain64: the IV does not wrap (iv_offset 2^32 - 100)" 2 aes-xts-plain64 "$key64" 4294967196 0
crypt_vs_dm "aes-xts-plain64be, iv_offset 2^40" 2 aes-xts-plain64be "$key32" 1099511627776 0
crypt_vs_dm "aes-xts-plain64 with every option that changes nothing" 2 aes-xts-plain64 "$key64" 0 0 \
	"5 allow_discards same_cpu_crypt submit_from_crypt_cpus no_read_workqueue no_write_workqueue"

# fio verify headers written in small random pieces (not aligned to
# 4 KiB) through one verify through the other: every piece of a request
# gets dm-crypt's IV, whatever the request boundaries.
fio_w() {
	fio --name=cmp --filename="$1" --size=6M --direct=1 --ioengine=io_uring --iodepth=16 \
		--rw=randwrite --bs="$2" --verify=crc32c --randseed=99 --verify_state_save=0 \
		--output-format=terse "${@:3}" >/dev/null
}
line="0 $nsec crypt aes-xts-plain64 $key64 0 /dev/cryv 0"
vblkctl create c --table "$line"
check "fio writes 1536-byte random pieces with verify headers through vblk" fio_w /dev/vblk/c 1536 --do_verify=0
remove_retry c
dmsetup create cdm --table "$line"
check "... and they verify through dm-crypt" fio_w /dev/mapper/cdm 1536 --verify_only --verify_fatal=1
check "dm-crypt writes 1536-byte pieces (other seed)" fio_w /dev/mapper/cdm 1536 --do_verify=0 --randseed=5
dmsetup remove --retry cdm
vblkctl create c --table "$line"
check "... and they verify through vblk" fio_w /dev/vblk/c 1536 --verify_only --verify_fatal=1 --randseed=5
remove_retry c

# --- cryptsetup plain mode (key file: used as the binary key, no hash) ---
if command -v cryptsetup >/dev/null 2>&1; then
	python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))' "$key64" >"$tmp/key.bin"
	cs_open() {
		cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --hash plain \
			--key-file "$tmp/key.bin" --keyfile-size 64 --batch-mode "$@"
	}
	cs_close() { cryptsetup close vcs; }
	wipe_lowers
	line="0 $((nsec - 2048)) crypt aes-xts-plain64 $key64 12345 /dev/cryv 2048"
	check "vblk (aes-xts-plain64, iv_offset 12345, offset 2048) writes 4 MiB" vblk_put "$line" 4
	check "cryptsetup open --type plain --offset 2048 --skip 12345, binary key file" cs_open --offset 2048 --skip 12345 /dev/cryv vcs
	check_eq "... the mapping is the rest of the device" $((nsec - 2048)) "$(sectors /dev/mapper/vcs 2>&1)"
	check "... it reads what vblk wrote" reads_back "$tmp/pat" /dev/mapper/vcs 4
	check "... it writes other data" put "$tmp/pat2" /dev/mapper/vcs 4
	cs_close
	check "vblk reads what cryptsetup's mapping wrote" vblk_reads "$line" 4 "$tmp/pat2"
	line="0 $((nsec - 4096)) crypt aes-xts-plain64 $key64 8000 /dev/cryv 4096 2 sector_size:4096 iv_large_sectors"
	check "vblk (sector_size:4096 iv_large_sectors, iv_offset 8000, offset 4096) writes 4 MiB" vblk_put "$line" 4
	check "cryptsetup open --type plain --sector-size 4096 --iv-large-sectors --offset 4096 --skip 8000" \
		cs_open --sector-size 4096 --iv-large-sectors --offset 4096 --skip 8000 /dev/cryv vcs
	check "... it reads what vblk wrote" reads_back "$tmp/pat" /dev/mapper/vcs 4
	cs_close
else
	for d in "vblk writes for cryptsetup" "cryptsetup open --type plain" "... mapping size" "... reads" "... writes" \
		"vblk reads cryptsetup's data" "vblk writes (4096)" "cryptsetup open (4096)" "... reads (4096)"; do
		skip "$d" "cryptsetup is not installed"
	done
fi

# --- fio verify, both sector sizes ---
check "sector_size:4096: create" vblkctl create c --table "0 $nsec crypt aes-xts-plain64 $key64 0 /dev/cryv 0 1 sector_size:4096"
check "... fio verify (randwrite QD16, 4k-1M)" fio_verify /dev/vblk/c 8M --bsrange=4k-1M
remove_retry c
check "512-byte sectors: create" vblkctl create c --table "0 $nsec crypt aes-cbc-essiv:sha256 $key32 0 /dev/cryv 0"
check "... fio verify (randwrite QD16, 512-64k)" fio_verify /dev/vblk/c 8M --bsrange=512-64k
check "... fio verify (sequential 256k writes, QD4)" fio_verify /dev/vblk/c 8M --rw=write --bs=256k --iodepth=4

# --- writes encrypt into bounce pages: the caller's data stays plaintext ---
# A buffered write: the page cache keeps the plaintext (an open descriptor
# keeps it alive across the commands); the device gets ciphertext.
head -c 8192 /dev/urandom >"$tmp/b"
exec 4</dev/vblk/c
check "a buffered 8 KiB write, fsync'ed" dd if="$tmp/b" of=/dev/vblk/c bs=8k seek=300 conv=notrunc,fsync,nocreat status=none
check "the page cache still holds the caller's data" cmp "$tmp/b" <(dd if=/dev/vblk/c bs=8k skip=300 count=1 status=none)
check "an O_DIRECT read decrypts to the same" data_is "$tmp/b" 0 /dev/vblk/c $((300 * 8192)) 8192
check "the lower device holds something else there (ciphertext)" differs "$tmp/b" /dev/cryv $((300 * 8192)) 8192
exec 4<&-
# An O_DIRECT write straight from the caller's buffer: the buffer is unchanged.
direct_write() {
	python3 - "$1" <<-'EOF'
	import mmap, os, sys
	n = 1 << 20
	fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT)
	buf, back = mmap.mmap(-1, n), mmap.mmap(-1, n)
	data = os.urandom(n)
	buf[:] = data
	w = os.pwrite(fd, buf, 2 * n)
	r = os.preadv(fd, [back], 2 * n)
	os.close(fd)
	same, readback = bytes(buf) == data, bytes(back) == data
	print(f"wrote {w}, read {r}; buffer unchanged: {same}; read back equal: {readback}")
	sys.exit(0 if (w, r, same, readback) == (n, n, True, True) else 1)
	EOF
}
check "an O_DIRECT 1 MiB write leaves the caller's buffer as it was, and reads back" direct_write /dev/vblk/c
remove_retry c

# --- ext4 on crypt; dm-crypt sees it clean ---
line="0 131072 crypt aes-xts-plain64 $key64 0 /dev/ram0 0 1 sector_size:4096"
check "crypt (4096-byte sectors) over ram0 (64 MiB): create" vblkctl create c --table "$line"
check "ext4 on crypt: mkfs, fill, fsck, reread" fs_check ext4 /dev/vblk/c
remove_retry c
dm_fsck() {
	local rc
	dmsetup create cdm --table "$1" || return 1
	fsck.ext4 -f -n /dev/mapper/cdm; rc=$?
	dmsetup remove --retry cdm && return "$rc"
}
check "dm-crypt over the same device: fsck.ext4 -f -n finds the filesystem clean" dm_fsck "$line"

# --- stacks: crypt over vblk striped and over vblk linear ---
check "striped 2 x 64 KiB chunks over ram1, ram2 (32 MiB)" \
	vblkctl create s --table "0 $((32 * mib)) striped 2 128 /dev/ram1 0 /dev/ram2 0"
line="0 $((32 * mib)) crypt aes-xts-plain64 $key64 0 /dev/vblk/s 0 1 sector_size:4096"
check "crypt over the striped device: create" vblkctl create c --table "$line"
check "... fio verify (4k-256k)" fio_verify /dev/vblk/c 12M --bsrange=4k-256k
check "... write 4 MiB" put "$tmp/pat" /dev/vblk/c 4
remove_retry c
dd if=/dev/vblk/s bs=1M count=4 iflag=direct status=none >"$tmp/ct_v"
check "dm-crypt over the same striped device writes the same 4 MiB" dm_put "$line" 4
dd if=/dev/vblk/s bs=1M count=4 iflag=direct status=none >"$tmp/ct_d"
same_4m() { [ "$(stat -c %s "$1")" = 4194304 ] && cmp "$1" "$2"; }
check "... the stripes hold identical ciphertext (4 MiB)" same_4m "$tmp/ct_v" "$tmp/ct_d"
check "... vblk crypt over the stripes reads it" vblk_reads "$line" 4
remove_retry s
check "linear over ram3 at 8 MiB (24 MiB)" vblkctl create l --table "0 $((24 * mib)) linear /dev/ram3 $((8 * mib))"
line="0 $((24 * mib - 100)) crypt capi:xts(aes)-plain64 $key32 77 /dev/vblk/l 100"
check "crypt over the linear device (iv_offset 77, offset 100): create" vblkctl create c --table "$line"
check "... fio verify (512-64k)" fio_verify /dev/vblk/c 8M --bsrange=512-64k
check "... write 4 MiB" put "$tmp/pat" /dev/vblk/c 4
remove_retry c
check "dm-crypt over the same linear device reads it" dm_reads "$line" 4
remove_retry l

# --- allow_discards ---
wipe_lowers
check "no allow_discards: create" vblkctl create c --table "0 $nsec crypt aes-xts-plain64 $key64 0 /dev/cryv 0"
check "... the lower device discards" test "$(discard_max cryv)" -gt 0
check_eq "... but discard_max_bytes is 0" 0 "$(discard_max "$(disk_of c)")"
check "... write 2 MiB" put "$tmp/pat" /dev/vblk/c 2
refused "... blkdiscard fails: not supported" "not supported" blkdiscard -o 0 -l 1048576 /dev/vblk/c
remove_retry c
check "... nothing was discarded: dm-crypt reads the data from the lower device" \
	dm_reads "0 $nsec crypt aes-xts-plain64 $key64 0 /dev/cryv 0" 2
line="0 $((nsec - 2048)) crypt aes-xts-plain64 $key64 0 /dev/cryv 2048 1 allow_discards"
# discard_here DEV: write 2 MiB, discard 512 KiB from 512 KiB.
discard_here() { put "$tmp/pat" "$1" 2 && blkdiscard -o 524288 -l 524288 "$1"; }
wipe_lowers
check "allow_discards (device offset 2048): create" vblkctl create c --table "$line"
check "... discard is advertised" test "$(discard_max "$(disk_of c)")" -gt 0
check "... write 2 MiB, then blkdiscard 512 KiB at 512 KiB" discard_here /dev/vblk/c
remove_retry c
check "... the lower device reads zeros there (at the device offset)" is_zero /dev/cryv $((2048 * 512 + 524288)) 524288
check "... and still ciphertext before it" not_zero /dev/cryv $((2048 * 512)) 524288
check "... and after it" not_zero /dev/cryv $((2048 * 512 + 1048576)) 524288
dmsetup create cdm --table "${line/cryv/cryd}"
check "dm-crypt: the same line, the same writes and discard" discard_here /dev/mapper/cdm
dmsetup remove --retry cdm
check "... both lower devices are byte-identical" cmp_lowers

# --- key wipe / key set messages ---
line="0 $nsec crypt aes-xts-plain64 $key64 0 /dev/cryv 0"
wipe_lowers
check "key messages: create" vblkctl create c --table "$line"
check "... write 4 MiB" put "$tmp/pat" /dev/vblk/c 4
refused "key wipe while running is refused: not suspended" "not suspended" vblkctl message c 0 key wipe
refused "key set while running is refused: not suspended" "not suspended" vblkctl message c 0 key set "$key64"
check "... the device still reads its data" reads_back "$tmp/pat" /dev/vblk/c 4
refused "an unknown message is refused" "hello|message" vblkctl message c 0 hello
out=$(vblkctl message c 0 Key set "$key64" 2>&1)
check_output "a mistyped 'Key set' is refused naming its first word" "unknown message 'Key'" echo "$out"
check_fails "... and the key is not echoed back" grep -q "$key64" <<<"$out"
check "suspend" vblkctl suspend c
# I/O issued while suspended waits, through the wipe, until a key is set
# and the device resumed: none of it reaches the device with a wiped key.
# hold_io READ_MIB WRITE_MIB: starts a 1 MiB O_DIRECT read of c at READ_MIB
# (into held, exit status to hr.rc) and a 1 MiB write of pat2 at WRITE_MIB
# (status to hw.rc) in the background, while c is suspended.
hold_io() {
	rm -f "$tmp/hr.rc" "$tmp/hw.rc" "$tmp/held"
	(dd if=/dev/vblk/c of="$tmp/held" bs=1M skip="$1" count=1 iflag=direct status=none; echo "rc=$?" >"$tmp/hr.rc") &
	bg="$bg $!"
	(dd if="$tmp/pat2" of=/dev/vblk/c bs=1M seek="$2" count=1 oflag=direct conv=nocreat status=none; echo "rc=$?" >"$tmp/hw.rc") &
	bg="$bg $!"
	sleep 1
}
hold_io 1 5
check "key wipe while suspended" vblkctl message c 0 key wipe
refused "resume with the key wiped is refused: key is not set" "key is not set" vblkctl resume c
check_output "... the device stays suspended" '^State: +SUSPENDED$' vblkctl info c
refused "key set with a 32-byte key (the table's is 64) is refused" "." vblkctl message c 0 key set "$key32"
refused "key set with a non-hex character is refused" "." vblkctl message c 0 key set "${key64:0:127}g"
refused "key set without a key is refused" "." vblkctl message c 0 key set
refused "... so resume is still refused" "key is not set" vblkctl resume c
check_fails "the held read and write are still waiting" test -e "$tmp/hr.rc" -o -e "$tmp/hw.rc"
check "... nothing of the held write reached the lower device" is_zero /dev/cryv $((5 << 20)) 1048576
echo "$key64" >"$tmp/key.hex"
check "key set with the table's key, read from --key-file (not on the command line)" \
	vblkctl message --key-file "$tmp/key.hex" c 0 key set
rm -f "$tmp/key.hex"
check "resume now works" vblkctl resume c
# shellcheck disable=SC2086
wait $bg
bg=""
check_eq "the held read completed" rc=0 "$(cat "$tmp/hr.rc" 2>/dev/null)"
check "... with the data" cmp <(head -c 2M "$tmp/pat" | tail -c 1M) "$tmp/held"
check_eq "the held write completed" rc=0 "$(cat "$tmp/hw.rc" 2>/dev/null)"
check "the device reads back all its data" reads_back "$tmp/pat" /dev/vblk/c 4
check "... and the held write's" data_is "$tmp/pat2" 0 /dev/vblk/c $((5 << 20)) 1048576
check_eq "table --showkeys shows the key again" "0 $nsec crypt aes-xts-plain64 $key64 0 $devv 0" "$(vblkctl table --showkeys c)"
# The key on standard input (`key set` without one), as cryptsetup reads it.
rekey() { vblkctl suspend c && echo "$1" | vblkctl message c 0 key set && vblkctl resume c; }
check "key set with another key of the same size from standard input, resume" rekey "$other64"
check "... the data reads differently (the new key is in use)" differs "$tmp/pat" /dev/vblk/c 0 4194304
check "key set with the right key again, resume" rekey "$key64"
check "... the data reads back" reads_back "$tmp/pat" /dev/vblk/c 4
remove_retry c
dm_held() {
	local rc
	dmsetup create cdm --table "$line" || return 1
	data_is "$tmp/pat2" 0 /dev/mapper/cdm $((5 << 20)) 1048576; rc=$?
	dmsetup remove --retry cdm && return "$rc"
}
check "dm-crypt over the lower device reads the held write" dm_held
# With the key wiped, held I/O fails cleanly once the administrator gives
# up on the key: load an error table and resume (dm's way to fail held I/O).
vblkctl create c --table "$line"
check "suspend (again)" vblkctl suspend c
hold_io 0 6
check "key wipe with I/O held" vblkctl message c 0 key wipe
refused "... resume is refused" "key is not set" vblkctl resume c
check "an error table is loaded instead" vblkctl load c --table "0 $nsec error"
check "... and resumed" vblkctl resume c
# shellcheck disable=SC2086
wait $bg
bg=""
check_eq "the held read failed (EIO), it did not hang or return data" rc=1 "$(cat "$tmp/hr.rc" 2>/dev/null)"
check "... and got nothing" test ! -s "$tmp/held"
check_eq "the held write failed" rc=1 "$(cat "$tmp/hw.rc" 2>/dev/null)"
check "... nothing of it reached the lower device" is_zero /dev/cryv $((6 << 20)) 1048576
remove_retry c
vblkctl create c --table "$line"
vblkctl suspend c && vblkctl message c 0 key wipe
check "a suspended device with a wiped key can be removed" vblkctl remove c

# --- 4 KiB crypto sectors ---
refused "sector_size:4096 on a line of $((nsec - 4)) sectors (not a multiple of 8) is refused" "sector_size|multiple|4096" \
	vblkctl create c --table "0 $((nsec - 4)) crypt aes-xts-plain64 $key64 0 /dev/cryv 0 1 sector_size:4096"
check_fails "... and leaves no device" vblkctl info c
check "sector_size:4096 on a 512-byte device: create" \
	vblkctl create c --table "0 $nsec crypt aes-xts-plain64 $key64 0 /dev/cryv 0 1 sector_size:4096"
check_eq "logical block size 4096 (blockdev --getss; the lower device has 512)" "4096 512" \
	"$(blockdev --getss /dev/vblk/c) $(blockdev --getss /dev/cryv)"
refused "a 512-byte O_DIRECT write is refused: EINVAL" "Invalid argument" \
	dd if=/dev/zero of=/dev/vblk/c bs=512 seek=8 count=1 oflag=direct conv=nocreat status=none
refused "a 512-byte O_DIRECT read is refused: EINVAL" "Invalid argument" \
	dd if=/dev/vblk/c of=/dev/null bs=512 count=1 iflag=direct status=none
refused "a 4 KiB O_DIRECT write at byte 512 is refused: EINVAL" "Invalid argument" \
	dd if=/dev/zero of=/dev/vblk/c bs=4096 seek=512 count=1 oflag=direct,seek_bytes conv=nocreat status=none
check "a 4 KiB O_DIRECT write works" dd if="$tmp/b" of=/dev/vblk/c bs=4096 seek=1 count=1 oflag=direct conv=nocreat status=none
check "a buffered 512-byte write at sector 17 works (the page cache writes whole blocks)" \
	dd if="$tmp/b" of=/dev/vblk/c bs=512 seek=17 count=1 conv=notrunc,fsync,nocreat status=none
# sector 17 is bytes 512..1023 of the 4 KiB block at byte 8192.
sector17() { bytes_at /dev/vblk/c 8192 4096 >"$tmp/got" && cmp <(head -c 512 "$tmp/b") <(tail -c +513 "$tmp/got" | head -c 512); }
check "... and reads back (O_DIRECT, 4 KiB)" sector17
remove_retry c

check "no key material in the kernel log" no_key dmesg
check_output "no devices at the end" '^No devices found$' vblkctl ls
check_fails "no dm devices left" dmsetup info cdm
done_testing
