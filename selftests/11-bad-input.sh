#!/usr/bin/env bash
# Bad input: every case fails with an errno and a message saying what is
# wrong, and leaves every device exactly as it was (the list, each
# device's info, active and loaded tables). Table text goes to the kernel
# raw (vblk-ioctl-probe), so the kernel's own checks are what is tested.
. "$(dirname "$0")/lib.sh"

snapshot() { vblk-ioctl-probe snapshot; }

# refused DESC REGEX CMD...: CMD fails, its output matches REGEX, and the
# snapshot of every device is unchanged. With forbid=TEXT set (crypt keys),
# the output must also not contain TEXT (case-insensitive).
refused() {
	local desc=$1 re=$2 before after out rc; shift 2
	before=$(snapshot 2>&1)
	out=$("$@" 2>&1); rc=$?
	after=$(snapshot 2>&1)
	if [ "$rc" -ne 0 ] && grep -Eq -- "$re" <<<"$out" && [ "$before" = "$after" ] &&
		{ [ -z "${forbid:-}" ] || ! grep -qiF -- "$forbid" <<<"$out"; }; then
		ok "$desc"
	else
		not_ok "$desc"
		diag "command: $*" "exit $rc; expected /$re/${forbid:+ without '$forbid'}, got:" "$out"
		[ "$before" = "$after" ] || diag "state changed:" "$(diff <(echo "$before") <(echo "$after"))"
	fi
}

# kernel DESC ERRNO MESSAGE-REGEX PROBE-ARGS...: a raw ioctl through the
# probe fails with ERRNO and a message matching the regex; nothing changes.
kernel() {
	local desc=$1 errno=$2 re=$3; shift 3
	refused "$desc" "^errno=$errno .*message=.*$re" probe_rc "$@"
}
# The probe always exits 0; fail when the kernel reported an errno.
probe_rc() { local out; out=$(vblk-ioctl-probe "$@"); echo "$out"; [[ "$out" == errno=0* ]]; }
load_raw() { probe_rc load-raw good "$1"; }
kload() { local desc=$1 errno=$2 re=$3 text=$4; kernel "$desc" "$errno" "$re" load-raw good "$text"; }

excl_open() { python3 -c 'import os,sys; os.close(os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL))' "$1"; }

# --- the devices the cases must leave alone ---
nullb nb4k 16 blocksize=4096
vblkctl create good --uuid VBLK-good --table "0 65536 linear /dev/ram0 0"
vblkctl create idle
vblkctl create top --table "0 32768 linear /dev/vblk/good 0"
dmsetup create holder --table "0 1024 linear /dev/ram3 0"
many=$(for i in $(seq 0 1024); do echo "$i 1 zero"; done)

# --- table text (29 cases) ---
kload "empty table" 22 "table is empty" ""
kload "only comments and blank lines" 22 "table is empty" $'# nothing\n\n'
kload "a line with two fields" 22 "line 1: expected '<start> <length> <target>" "0 8"
kload "start not a number" 22 "line 1: start 'x' is not a sector count" "x 8 zero"
kload "negative length" 22 "length '-8' is not a sector count" "0 -8 zero"
kload "hex length" 22 "length '0x10' is not a sector count" "0 0x10 zero"
kload "zero length" 22 "line 1: length is 0" "0 0 zero"
kload "a gap between lines" 22 "line 2: starts at sector 9, leaving a gap" $'0 8 zero\n9 8 zero'
kload "overlapping lines" 22 "line 2: starts at sector 4, overlapping" $'0 8 zero\n4 8 zero'
kload "not starting at sector 0" 22 "must start at sector 0" "8 8 zero"
kload "size beyond the largest device" 22 "exceeds the largest device size" "0 18014398509481984 zero"
kload "a number past 64 bits" 22 "length '99999999999999999999' is not a sector count" "0 99999999999999999999 zero"
kload "unknown target" 22 "line 1: unknown target 'nosuch'" "0 8 nosuch"
kload "target name with capitals" 22 "target name must be" "0 8 Zero"
kload "control character in the text" 22 "contains control characters" $'0 8 zero\x01'
kload "1025 lines" 22 "more than 1024 lines" "$many"
kernel "table text over 1 MiB" 22 "table text is longer than 1048576 bytes" load-huge good
kernel "table text not UTF-8" 22 "table text is not UTF-8" load-not-utf8 good
kload "zero with an argument" 22 "target 'zero' takes no arguments, got 'x'" "0 8 zero x"
kload "error with an argument" 22 "target 'error' takes no arguments" "0 8 error y"
kload "linear with one argument" 22 "target 'linear' takes arguments '<dev> <offset>', got 1 argument" "0 8 linear /dev/ram1"
kload "linear with three arguments" 22 "got 3 arguments" "0 8 linear /dev/ram1 0 9"
kload "linear offset not a number" 22 "offset 'abc' is not a decimal number" "0 8 linear /dev/ram1 abc"
kload "device neither path nor major:minor" 22 "device 'ram1' is neither major:minor nor an absolute path" "0 8 linear ram1 0"
kload "device path that does not exist" 2 "cannot open device '/dev/nosuch': no such file or directory" "0 8 linear /dev/nosuch 0"
kload "device path that is not a block device" 15 "cannot open device '/dev/null': not a block device" "0 8 linear /dev/null 0"
kload "major:minor with no device" 6 "cannot open device '250:250'" "0 8 linear 250:250 0"
kload "device too small for the line" 22 "has 131072 sectors, too small for sectors 0..300000" "0 300000 linear /dev/ram1 0"
kload "offset past the end of the device" 22 "too small for sectors 131070..131078" "0 8 linear /dev/ram1 131070"
kload "offset + length overflowing" 22 "too small for sectors 18446744073709551615" "0 8 linear /dev/ram1 18446744073709551615"
kload "offset not aligned to a 4096-byte device" 22 "not aligned to its 4096-byte logical blocks" "0 8 linear /dev/nb4k 1"
kload "line not a multiple of the table's block size" 22 "line 2: length 1 is not a multiple of the table's 4096-byte" $'0 8 linear /dev/nb4k 0\n8 1 zero'
kload "device held exclusively by someone else (dm)" 16 "cannot open device '/dev/ram3': in use by someone else" "0 8 linear /dev/ram3 0"
kload "an error on line 2 names line 2" 2 "line 2: cannot open device '/dev/nosuch'" $'0 8 zero\n8 8 linear /dev/nosuch 0\n16 8 zero'
kload "a device named as itself" 22 "names device 'good' itself" "0 8 linear /dev/vblk/good 0"
kload "a cycle through another device" 22 "stacked on 'good'.*cycle" "0 8 linear /dev/vblk/top 0"
# --- flakey arguments (9 cases; dm-flakey's rules) ---
kload "flakey with three arguments" 22 "target 'flakey' takes '<dev> <offset> <up interval>.*got 3 arguments" "0 8 flakey /dev/ram1 0 1"
kload "flakey with both intervals 0" 22 "up and down intervals are both 0" "0 8 flakey /dev/ram1 0 0 0"
kload "flakey interval overflow" 22 "up \\+ down interval overflows" "0 8 flakey /dev/ram1 0 4294967295 1"
kload "flakey feature count not matching" 22 "2 feature arguments declared, 1 present" "0 8 flakey /dev/ram1 0 1 1 2 drop_writes"
kload "flakey unknown feature" 22 "unknown feature 'sometimes'" "0 8 flakey /dev/ram1 0 1 1 1 sometimes"
kload "flakey drop_writes with error_writes" 22 "feature error_writes conflicts with drop_writes" "0 8 flakey /dev/ram1 0 1 1 2 drop_writes error_writes"
kload "flakey corrupt direction" 22 "direction 'x' is neither 'r' nor 'w'" "0 8 flakey /dev/ram1 0 1 1 5 corrupt_bio_byte 1 x 0 0"
kload "flakey corrupt value over 255" 22 "corrupt_bio_byte value '256' is out of range" "0 8 flakey /dev/ram1 0 1 1 5 corrupt_bio_byte 1 r 256 0"
kload "flakey drop_writes with write corruption" 22 "drop_writes conflicts with corrupt_bio_byte ... w" "0 8 flakey /dev/ram1 0 1 1 6 drop_writes corrupt_bio_byte 1 w 0 0"
# --- striped arguments (17 cases) ---
kload "striped with one argument" 22 "target 'striped' takes '<#stripes> <chunk sectors> \\(<dev> <offset>\\)\\+', got 1 argument" "0 16 striped 2"
kload "striped with 0 stripes" 22 "stripe count '0' is not a decimal number from 1" "0 16 striped 0 8"
kload "striped stripe count not a number" 22 "stripe count 'two' is not a decimal" "0 16 striped two 8 /dev/ram1 0 /dev/ram2 0"
kload "striped chunk 0" 22 "chunk size '0' is not a decimal number of sectors" "0 16 striped 2 0 /dev/ram1 0 /dev/ram2 0"
kload "striped chunk in hex" 22 "chunk size '0x8' is not a decimal" "0 16 striped 2 0x8 /dev/ram1 0 /dev/ram2 0"
kload "striped chunk too large" 22 "chunk size 8388608 sectors is too large" "0 16777216 striped 2 8388608 /dev/ram1 0 /dev/ram2 0"
kload "striped length not divisible by the stripe count" 22 "line length 16 is not divisible by the stripe count 3" "0 16 striped 3 8 /dev/ram1 0 /dev/ram2 0 /dev/ram3 0"
kload "striped share not a multiple of the chunk" 22 "each stripe's share \\(12 sectors\\) is not a multiple of the chunk size 8" "0 24 striped 2 8 /dev/ram1 0 /dev/ram2 0"
kload "striped with too few devices" 22 "2 stripes need 4 '<dev> <offset>' words, got 2" "0 16 striped 2 8 /dev/ram1 0"
kload "striped with a stray word" 22 "2 stripes need 4 '<dev> <offset>' words, got 5" "0 16 striped 2 8 /dev/ram1 0 /dev/ram2 0 x"
kload "striped offset not a number" 22 "offset '1k' is not a decimal number of sectors" "0 16 striped 2 8 /dev/ram1 0 /dev/ram2 1k"
kload "striped chunk smaller than a 4 KiB block" 22 "chunk size 4 sectors is not a multiple of stripe 1's \\(/dev/nb4k\\) 4096-byte logical block" "0 16 striped 2 4 /dev/ram1 0 /dev/nb4k 0"
kload "striped stripes overlapping on one device" 22 "stripes 0 and 1 overlap on device '/dev/ram1'" "0 32 striped 2 8 /dev/ram1 0 /dev/ram1 8"
kload "striped device missing" 2 "cannot open device '/dev/nosuch'" "0 16 striped 2 8 /dev/ram1 0 /dev/nosuch 0"
kload "striped area past the end of a device" 22 "has 131072 sectors, too small for sectors 131070..131078" "0 16 striped 2 8 /dev/ram1 0 /dev/ram2 131070"
kload "striped device neither path nor number" 22 "device 'ram2' is neither major:minor nor an absolute path" "0 16 striped 2 8 /dev/ram1 0 ram2 0"
kload "striped onto a device stacked on this one" 22 "stacked on 'good'.*cycle" "0 16 striped 2 8 /dev/ram1 0 /dev/vblk/top 0"
kload "striped offset at the u64 limit (no overflow panic)" 22 "too small for sectors 18446744073709551615" \
	"0 16 striped 2 8 /dev/ram1 18446744073709551615 /dev/ram1 0"
# 10000 stripes on one device, the last overlapping the first: found by
# sorting (the pairwise scan took ~10^8 comparisons in one ioctl).
wide=$(printf '0 80000 striped 10000 8'; for i in $(seq 1 9999); do printf ' 1:1 %d' $((i * 8)); done; printf ' 1:1 4')
t0=$SECONDS
kload "10000 stripes, two overlapping on one device" 22 "stripes 1 and 9999 overlap on device '1:1'|stripes 0 and 9999 overlap" "$wide"
check "... refused within 60 s ($((SECONDS - t0)) s)" test $((SECONDS - t0)) -lt 60
# Target state is bounded per table (64 MiB) and for all tables (512 MiB):
# mirror region maps on a huge zero device, flakey page reserves.
vblkctl create zbig --table "0 $((1 << 40)) zero"
# udev probes a new disk (blkid opens it): let it finish, or the first
# refusal's before/after snapshots see its open count change.
udevadm settle 2>/dev/null
mline() { echo "$(($1 << 25)) $((1 << 25)) mirror core 1 8 2 /dev/vblk/zbig $(($1 << 26)) /dev/vblk/zbig $((($1 << 26) + (1 << 25)))"; }
mtable() { for k in $(seq 0 $(($1 - 1))); do mline "$k"; done; }
kload "13 mirror lines of 2^22 regions (5 MiB of state each)" 12 "line 13: mirror: the region state needs 5120 KiB.*at most 64 MiB per table" "$(mtable 13)"
kload "257 flakey lines with 256 KiB page reserves" 12 "line 257: flakey: the page reserve needs 256 KiB.*at most 64 MiB per table" \
	"$(for i in $(seq 0 256); do echo "$((i * 8)) 8 flakey /dev/ram1 0 0 1 5 corrupt_bio_byte 1 w 0 0"; done)"
for g in 1 2 3 4 5 6 7 8; do vblkctl create "g$g"; vblkctl load "g$g" --table "$(mtable 12)"; done
check_eq "eight loaded tables of 60 MiB of state each (12 lines in the last)" 12 "$(vblkctl table --inactive g8 | wc -l)"
vblkctl create g9
refused "a ninth: all tables together may hold at most 512 MiB" "Cannot allocate memory.*tables loaded already hold.*at most 512 MiB in all" \
	vblkctl load g9 --table "$(mtable 12)"
vblkctl clear g8
check "once one is cleared, the ninth loads" vblkctl load g9 --table "$(mtable 12)"
for g in 1 2 3 4 5 6 7 8 9; do vblkctl remove "g$g"; done
vblkctl remove zbig
# --- crypt arguments (37 cases; dm-crypt's rules, and what vblk leaves out:
# other ciphers and IV modes, key counts, keyring keys, integrity) ---
# The keys are prefixes of ck64 (or ck64 with a change at the end); no
# refusal may repeat key material: hex digits 8..23 are forbidden in every message.
ck64=$(printf 'vblk bad-input crypt key' | sha512sum | cut -c1-128)
ck32=${ck64:0:64}
ckload() { forbid=${ck64:8:16} kload "$@"; }
ctab() { echo "0 8 crypt $1 $2 0 /dev/ram1 0${3:+ $3}"; } # ctab SPEC KEY [OPTS]
ckload "crypt unknown cipher" 22 "serpent" "$(ctab serpent-xts-plain64 "$ck64")"
ckload "crypt chain mode the kernel lacks" 22 "lrw2" "$(ctab aes-lrw2-plain64 "$ck64")"
ckload "crypt ecb (no IV)" 22 "ecb" "$(ctab aes-ecb "$ck32")"
ckload "crypt cipher without an IV mode" 22 "IV|iv ?mode" "$(ctab aes-xts "$ck64")"
ckload "crypt unsupported IV mode lmk" 22 "lmk" "$(ctab aes-cbc-lmk "$ck32")"
ckload "crypt unsupported IV mode benbi" 22 "benbi" "$(ctab aes-cbc-benbi "$ck32")"
ckload "crypt unsupported IV mode eboiv" 22 "eboiv" "$(ctab aes-cbc-eboiv "$ck32")"
ckload "crypt essiv without a hash" 22 "hash|digest" "$(ctab aes-cbc-essiv "$ck32")"
ckload "crypt essiv with a hash other than sha256" 22 "sha1" "$(ctab aes-cbc-essiv:sha1 "$ck32")"
ckload "crypt key count 2" 22 "[Kk]ey ?count|keycount" "$(ctab aes:2-xts-plain64 "$ck64")"
ckload "crypt capi: with a mode the kernel lacks" 22 "lrw2" "$(ctab 'capi:lrw2(aes)-plain64' "$ck32")"
ckload "crypt capi: AEAD (authenc)" 22 "authenc|AEAD|aead|random" "$(ctab 'capi:authenc(hmac(sha256),xts(aes))-random' "$ck64")"
ckload "crypt key with an odd number of hex digits" 22 "odd|hex|digit" "$(ctab aes-xts-plain64 "${ck64:0:63}")"
ckload "crypt key with a non-hex character" 22 "hex" "$(ctab aes-xts-plain64 "${ck64:0:127}g")"
ckload "crypt empty key '-'" 22 "[Kk]ey" "$(ctab aes-xts-plain64 -)"
ckload "crypt keyring key" 22 "keyring|logon" "$(ctab aes-xts-plain64 :32:logon:foo)"
ckload "crypt XTS key of 16 bytes" 22 "[Kk]ey.*16|16.*[Kk]ey" "$(ctab aes-xts-plain64 "${ck64:0:32}")"
ckload "crypt CBC key of 20 bytes" 22 "[Kk]ey.*20|20.*[Kk]ey" "$(ctab aes-cbc-plain64 "${ck64:0:40}")"
ckload "crypt key of 65 bytes" 22 "[Kk]ey.*65|65.*[Kk]ey" "$(ctab aes-xts-plain64 "${ck64}ab")"
ckload "crypt iv_offset not a number" 22 "iv_offset|IV offset|iv offset" "0 8 crypt aes-xts-plain64 $ck64 x /dev/ram1 0"
ckload "crypt iv_offset not aligned to sector_size:4096" 22 "(iv_offset|IV offset|iv offset).*(align|multiple|4096)" \
	"0 8 crypt aes-xts-plain64 $ck64 7 /dev/ram1 0 1 sector_size:4096"
ckload "crypt device offset not a number" 22 "offset.*1k" "0 8 crypt aes-xts-plain64 $ck64 0 /dev/ram1 1k"
ckload "crypt device offset not aligned to sector_size:4096" 22 "offset.*(align|multiple|4096)" \
	"0 8 crypt aes-xts-plain64 $ck64 0 /dev/ram1 1 1 sector_size:4096"
ckload "crypt #opt_params larger than the options given" 22 "param|option|argument|feature" "$(ctab aes-xts-plain64 "$ck64" "2 allow_discards")"
ckload "crypt #opt_params not a number" 22 "param|option|argument|feature" "$(ctab aes-xts-plain64 "$ck64" "x allow_discards")"
ckload "crypt unknown option" 22 "foo" "$(ctab aes-xts-plain64 "$ck64" "1 foo")"
ckload "crypt integrity option" 22 "integrity" "$(ctab aes-xts-plain64 "$ck64" "1 integrity:28:aead")"
ckload "crypt sector_size:256" 22 "sector_size|sector size" "$(ctab aes-xts-plain64 "$ck64" "1 sector_size:256")"
ckload "crypt sector_size:8192" 22 "sector_size|sector size" "$(ctab aes-xts-plain64 "$ck64" "1 sector_size:8192")"
ckload "crypt sector_size:1000" 22 "sector_size|sector size" "$(ctab aes-xts-plain64 "$ck64" "1 sector_size:1000")"
ckload "crypt sector_size:abc" 22 "sector_size|sector size" "$(ctab aes-xts-plain64 "$ck64" "1 sector_size:abc")"
ckload "crypt with four arguments" 22 "argument" "0 8 crypt aes-xts-plain64 $ck64 0 /dev/ram1"
ckload "crypt device missing" 2 "cannot open device '/dev/nosuch'" "0 8 crypt aes-xts-plain64 $ck64 0 /dev/nosuch 0"
ckload "crypt length not a multiple of sector_size:4096" 22 "sector_size|sector size|multiple|4096" \
	"0 12 crypt aes-xts-plain64 $ck64 0 /dev/ram1 0 1 sector_size:4096"
ckload "crypt area past the end of the device" 22 "too small for sectors 131070..131078" \
	"0 8 crypt aes-xts-plain64 $ck64 0 /dev/ram1 131070"
ckload "crypt onto a device stacked on this one" 22 "stacked on 'good'.*cycle" "0 8 crypt aes-xts-plain64 $ck64 0 /dev/vblk/top 0"
refused "vblkctl checks a table before sending it" "table: line 2: starts at sector 4, overlapping" \
	vblkctl load good --table $'0 8 zero\n4 8 zero'

# --- mirror arguments (25 cases; dm-raid1's and dm-log's rules) ---
mt() { echo "0 2048 mirror $1"; } # mt ARGS: a 1 MiB mirror line
legs="2 /dev/ram1 0 /dev/ram2 0"
kload "mirror without arguments" 22 "target 'mirror' takes '<log type>" "0 2048 mirror"
kload "mirror unknown log type" 22 "unknown log type 'clustered-disk' \\(core or disk\\)" "$(mt "clustered-disk 1 1024 $legs")"
kload "mirror core log with 3 arguments" 22 "log type core takes 1 or 2" "$(mt "core 3 1024 nosync x $legs")"
kload "mirror disk log with 1 argument" 22 "log type disk takes 2 or 3" "$(mt "disk 1 /dev/ram3 $legs")"
kload "mirror log argument count not a number" 22 "number of log arguments 'one' is not a decimal" "$(mt "core one 1024 $legs")"
kload "mirror region size not a power of two" 22 "region size 1000 sectors is not a power of two" "$(mt "core 1 1000 $legs")"
kload "mirror region size 1" 22 "region size 1 sector is below the minimum of 2" "$(mt "core 1 1 $legs")"
kload "mirror region size larger than the line" 22 "region size 4096 sectors is larger than the line \\(2048 sectors\\)" "$(mt "core 1 4096 $legs")"
kload "mirror obsolete block_on_error" 22 "block_on_error' is obsolete; use the feature handle_errors" "$(mt "core 2 1024 block_on_error $legs")"
kload "mirror bad sync argument" 22 "last log argument 'resync' is neither sync nor nosync" "$(mt "core 2 1024 resync $legs")"
kload "mirror with one leg" 22 "number of mirrors '1' is not a decimal number from 2 to 9" "$(mt "core 1 1024 1 /dev/ram1 0")"
kload "mirror with ten legs" 22 "number of mirrors '10' is not a decimal number from 2 to 9" "$(mt "core 1 1024 10 $(for i in $(seq 10); do printf '/dev/ram1 %d ' $((i * 2048)); done)")"
kload "mirror leg words missing" 22 "3 mirrors need 6 '<dev> <offset>' words, got 4" "$(mt "core 1 1024 3 /dev/ram1 0 /dev/ram2 0")"
kload "mirror leg offset not a number" 22 "offset '8k' of leg 1 is not a decimal number of sectors" "$(mt "core 1 1024 2 /dev/ram1 0 /dev/ram2 8k")"
kload "mirror unknown feature" 22 "unknown feature 'fast' \\(handle_errors, keep_log\\)" "$(mt "core 1 1024 $legs 1 fast")"
kload "mirror keep_log without handle_errors" 22 "feature keep_log requires feature handle_errors" "$(mt "core 1 1024 $legs 1 keep_log")"
kload "mirror features missing" 22 "2 features declared, 1 present" "$(mt "core 1 1024 $legs 2 handle_errors")"
kload "mirror stray words after the features" 22 "1 argument too many after the features, from 'x' on" "$(mt "core 1 1024 $legs 1 handle_errors x")"
kload "mirror legs overlapping on one device" 22 "legs 0 and 1 overlap on '/dev/ram1'" "$(mt "core 1 1024 2 /dev/ram1 0 /dev/ram1 1024")"
kload "mirror leg device missing" 2 "cannot open device '/dev/nosuch'" "$(mt "core 1 1024 2 /dev/ram1 0 /dev/nosuch 0")"
kload "mirror leg past the end of its device" 22 "has 131072 sectors, too small for sectors 131070..133118" "$(mt "core 1 1024 2 /dev/ram1 0 /dev/ram2 131070")"
kload "mirror region smaller than a leg's 4 KiB block" 22 "region size 4 is not a multiple of the 4096-byte logical blocks of '/dev/nb4k'" "$(mt "core 1 4 2 /dev/ram1 0 /dev/nb4k 0")"
kload "mirror disk log overlapping a leg" 22 "leg 0 overlaps the log area \\(sectors 0..3\\) of '/dev/ram1'" "$(mt "disk 2 /dev/ram1 1024 2 /dev/ram1 0 /dev/ram2 0")"
kload "mirror too many regions" 22 "8388608 regions of 2 sectors; at most 4194304" "0 16777216 mirror core 1 2 $legs"
kload "mirror onto a device stacked on this one" 22 "stacked on 'good'.*cycle" "$(mt "core 1 1024 2 /dev/ram1 0 /dev/vblk/top 0")"

# --- devices and names (17 cases) ---
refused "load into a missing device" "No such device or address.*no device named 'nosuch'" vblkctl load nosuch --table "0 8 zero"
refused "resume a device with no table" "Invalid argument.*'idle' has no table to resume" vblkctl resume idle
refused "suspend a device never resumed" "Invalid argument.*not active \(never resumed\)" vblkctl suspend idle
refused "clear with nothing loaded" "No such device or address.*no inactive table to clear" vblkctl clear good
refused "create a duplicate name" "File exists.*a device named 'good' already exists" vblkctl create good
refused "create a duplicate uuid" "File exists.*uuid 'VBLK-good' already exists" vblkctl create other --uuid VBLK-good
kernel "name with a slash (kernel check)" 22 "device name may contain only printable ASCII" create-raw a/b
kernel "name '..' (kernel check)" 22 "may not be '.' or '..'" create-raw ..
kernel "empty name (kernel check)" 22 "device name is empty" create-raw ""
kernel "uuid with a space (kernel check)" 22 "uuid may contain only printable ASCII" create-raw fine "bad uuid"
kernel "unterminated name field" 22 "device name is not NUL-terminated" unterminated-name
refused "message to a target that takes none" "Invalid argument.*target 'linear' accepts no messages" vblkctl message good 0 hello
refused "message past the end" "sector 65536 is past the end of the table" vblkctl message good 65536 hi
refused "remove a missing device" "No such device or address.*no device named 'nosuch'" vblkctl remove nosuch
refused "remove a device used below another" "Device or resource busy.*'good' is used by device 'top'" vblkctl remove good
exec 3</dev/vblk/top
refused "remove an open device" "Device or resource busy.*'top': device is open" vblkctl remove top
check "load good with a table on the 4k device (resumed below)" vblkctl load good --table "0 32768 linear /dev/nb4k 0"
refused "changing the block size of an open device" \
	"Device or resource busy.*logical block size is 4096 bytes, the device's 512; it cannot change while the device is open" \
	vblkctl resume good
exec 3<&-
check "clear that table" vblkctl clear good

# --- the ioctl itself (10 cases) ---
kernel "foreign ABI major" 22 "caller speaks ABI 9.x" abi-major-mismatch
kernel "buffer smaller than the header" 22 "data_size 8 is smaller than the 568-byte header" data-size-too-small
kernel "payload offset past the buffer" 22 "data_offset 569 is outside" data-offset-past-end
kernel "payload offset inside the header" 22 "data_offset 4 is outside" data-offset-inside-header
kernel "reserved field set" 22 "reserved header field is 7" reserved-nonzero
kernel "payload in unmapped memory" 14 "cannot read the table text" load-bad-payload good
refused "unknown command number: ENOTTY" "^errno=25 " probe_rc unknown-nr
refused "header size in the number wrong: ENOTTY" "^errno=25 " probe_rc short-size-in-number
refused "NULL argument: EFAULT" "^errno=14 " probe_rc null-arg
chmod 666 /dev/vblk-control
refused "unprivileged caller" "Permission denied.*require CAP_SYS_ADMIN" \
	setpriv --reuid=65534 --regid=65534 --clear-groups -- vblkctl remove good
chmod 600 /dev/vblk-control

# --- nothing leaked, everything still works ---
check "lower devices of refused tables were released (ram1)" excl_open /dev/ram1
check "... (the 4k null_blk)" excl_open /dev/nb4k
check "good still serves I/O" fio_verify /dev/vblk/top 8M
check_eq "good's table is the original" "0 65536 linear 1:0 0" "$(vblkctl table good)"

dm_remove holder
vblkctl remove top
vblkctl remove good
vblkctl remove idle
nullb_rm nb4k
check_output "no devices at the end" '^No devices found$' vblkctl ls
done_testing
