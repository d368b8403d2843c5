#!/usr/bin/env bash
# Stacks: vblk on vblk on vblk with fio verify and exact placement; vblk
# on dm and dm on vblk; cycles refused (self, indirect, through a loaded
# table); busy devices cannot be removed and keep working; a suspended
# lower device holds the upper's I/O without blocking other commands.
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
state() { for d in a b c; do vblkctl table "$d"; vblkctl table --inactive "$d"; done 2>&1; }

dd if=/dev/zero of=/dev/ram0 bs=1M count=64 oflag=direct status=none
check "a: linear on ram0 from sector 2048" vblkctl create a --table "0 120000 linear /dev/ram0 2048"
check "b: linear on a from sector 1024" vblkctl create b --table "0 110000 linear /dev/vblk/a 1024"
check "c: linear on b from sector 512" vblkctl create c --table "0 100000 linear /dev/vblk/b 512"
check_output "deps of c: b's disk" "^1 dependency	: \\($(devno /dev/vblk/b | tr ':' ',' | sed 's/,/, /') $(disk_of b)\\)\$" vblkctl deps c
check "fio verify through three levels" fio_verify /dev/vblk/c 40M
head -c 1M /dev/urandom >"$tmp/pat"
dd if="$tmp/pat" of=/dev/vblk/c bs=64k seek=16 oflag=direct status=none
check "data written to c at 1 MiB lands on ram0 at 1 MiB + 512 + 1024 + 2048 sectors" \
	cmp "$tmp/pat" <(sectors_of /dev/ram0 $((2048 + 1024 + 512 + 2048)) 2048)

# --- busy devices ---
before=$(state)
check_output "remove a (below b): EBUSY, names the user" "Device or resource busy.*'a' is used by device 'b'" vblkctl remove a
check_output "remove b (below c): EBUSY" "'b' is used by device 'c'" vblkctl remove b
exec 3</dev/vblk/c
check_output "remove c while open: EBUSY, says it is open" "Device or resource busy.*is open" vblkctl remove c
exec 3<&-
check_eq "the refused removals changed nothing" "$before" "$(state)"
check "the stack still works (fio verify)" fio_verify /dev/vblk/c 8M --offset=16M

# --- cycles ---
check_output "a table naming the device itself is refused" \
	"Invalid argument.*names device 'a' itself" vblkctl load a --table "0 8 linear /dev/vblk/a 0"
check_output "a -> c -> b -> a is refused" \
	"Invalid argument.*stacked on 'a'.*cycle" vblkctl load a --table "0 1000 linear /dev/vblk/c 0"
check_output "... also by major:minor" \
	"stacked on 'a'" vblkctl load a --table "0 1000 linear $(devno /dev/vblk/b) 0"
vblkctl create x --table "0 1000 zero"
check "x: load (not resume) a table on c" vblkctl load x --table "0 1000 linear /dev/vblk/c 0"
check_output "a table on x is a cycle through x's loaded table" \
	"stacked on 'a'" vblkctl load a --table "0 1000 linear /dev/vblk/x 0"
check_output "x's loaded table also makes c busy" "'c' is used by device 'x'" vblkctl remove c
check "clear x's loaded table" vblkctl clear x
check_eq "after the cycles were refused, the tables are as before" "$before" "$(state)"
check "x can now hold a table on a" vblkctl load x --table "0 1000 linear /dev/vblk/a 0"
check "and resume it" vblkctl resume x
check "remove x" vblkctl remove x

# A device whose disk is being created (first RESUME) is in the stacking
# graph from CREATE on: racing that resume, a table on its new disk that
# would close a cycle is refused, and never do both succeed.
both=0
for i in $(seq 3); do
	vblkctl create p
	vblkctl load p --table "0 1000 linear /dev/vblk/a 0"
	old=$(ls -d /dev/vblk[0-9]*)
	vblkctl resume p &
	r=$!
	# a's table on p's disk, as soon as its devtmpfs node exists.
	got=no
	for _ in $(seq 2000); do
		node=$(ls -d /dev/vblk[0-9]* | grep -vxF "$old" | head -1)
		[ -n "$node" ] || continue
		vblkctl load a --table "0 1000 linear $node 0" 2>/dev/null && got=yes
		break
	done
	wait "$r" && [ "$got" = yes ] && both=$((both + 1))
	vblkctl clear a 2>/dev/null
	remove_retry p
done
check_eq "racing a first resume, a cycle through the new disk is never made" 0 "$both"
check_eq "... and the tables are as before" "$before" "$(state)"

# --- a suspended lower device holds the upper's I/O, nothing else ---
check "suspend a (the bottom)" vblkctl suspend a
( dd if="$tmp/pat" of=/dev/vblk/c bs=64k oflag=direct status=none; echo "rc=$?" >"$tmp/dd.rc" ) &
sleep 2
check_fails "a write to c waits while a is suspended" test -e "$tmp/dd.rc"
check "other devices' commands still answer (info b)" timeout 10 vblkctl info b
timeout -s INT 3 vblkctl suspend c >"$tmp/susp" 2>&1
check_eq "suspending c waits for its in-flight write; a signal ends the wait" 124 "$?"
check_output "... with EINTR and the reason" "Interrupted system call.*in-flight I/O" cat "$tmp/susp"
check_output "c is still running (not suspended)" '^State: +ACTIVE$' vblkctl info c
check "resume a" vblkctl resume a
wait
check_eq "the held write completed" rc=0 "$(cat "$tmp/dd.rc")"
check "... and reads back" same_bytes "$tmp/pat" /dev/vblk/c 2048

# --- stacks with device-mapper ---
check "dm-linear on top of vblk c" dmsetup create dmtop --table "0 90000 linear /dev/vblk/c 100"
check_output "remove c under dm: EBUSY (open)" "Device or resource busy" vblkctl remove c
check "fio verify through dm on vblk on vblk on vblk" fio_verify /dev/mapper/dmtop 16M
check "buffered reads through the whole stack (plugged readahead)" dd if=/dev/mapper/dmtop of=/dev/null bs=1M status=none
check "buffered writes through the whole stack, then fsync" dd if=/dev/urandom of=/dev/mapper/dmtop bs=1M count=16 conv=fsync status=none
dm_remove dmtop
check "dm-linear on ram1" dmsetup create dmbot --table "0 60000 linear /dev/ram1 0"
check "vblk on dm-linear" vblkctl create ondm --table "0 60000 linear /dev/mapper/dmbot 0"
check "fio verify through vblk on dm" fio_verify /dev/vblk/ondm 16M
check_output "dm cannot remove its device while vblk holds it" "busy" dmsetup remove dmbot
vblkctl remove ondm
check "dm can once vblk let go" dmsetup remove dmbot

# --- a split request ends with its worst error (review W2) ---
# A discard over two lines: the first goes to nd, which no longer takes
# discards (EOPNOTSUPP from the block layer), the second to an error line
# (EIO). It must end EIO: blkdev_issue_discard treats EOPNOTSUPP as success.
nullb nodisc 16
check "nd: linear on ram2 (takes discards)" vblkctl create nd --table "0 8 linear /dev/ram2 0"
check "up: nd, then an error line" vblkctl create up --table $'0 8 linear /dev/vblk/nd 0\n8 8 error'
check "nd reloaded onto a null_blk without discard" \
	bash -c 'vblkctl load nd --table "0 8 linear /dev/nodisc 0" && vblkctl resume nd'
check_eq "nd advertises no discard now" 0 "$(cat /sys/block/$(disk_of nd)/queue/discard_max_bytes)"
# -f: no probe for signatures (reading the error line would fail first)
check_output "a discard over both lines of up fails with EIO, not EOPNOTSUPP" "Input/output error" blkdiscard -f -o 0 -l 8192 /dev/vblk/up
vblkctl remove up
vblkctl remove nd
nullb_rm nodisc

check "remove c, b, a (top down)" bash -c 'vblkctl remove c && vblkctl remove b && vblkctl remove a'
check_output "no devices at the end" '^No devices found$' vblkctl ls
rm -rf "$tmp"
done_testing
