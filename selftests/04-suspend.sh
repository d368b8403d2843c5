#!/usr/bin/env bash
# Suspend holds I/O (it waits, it does not fail), resume releases it;
# a table loaded while suspended serves the held I/O; noflush; refusals.
. "$(dirname "$0")/lib.sh"

rcfile=$(mktemp -u)
bg_read() { rm -f "$rcfile"; ( dd if=/dev/vblk/s of=/dev/null bs=4k count=1 iflag=direct status=none; echo "rc=$?" >"$rcfile" ) & }

check "create s (zero)" vblkctl create s --table '0 2048 zero'
check "suspend s" vblkctl suspend s
check_output "info says SUSPENDED" '^State: +SUSPENDED$' vblkctl info s
check_eq "info --json says suspended" True \
	"$(vblkctl --json info s | python3 -c 'import json,sys; print(json.load(sys.stdin)["suspended"])')"
check "suspending again is harmless" vblkctl suspend s
bg_read
sleep 3
check_fails "a read issued while suspended is still waiting after 3 s" test -e "$rcfile"
check "resume s" vblkctl resume s
wait
check_eq "the held read then completed successfully" rc=0 "$(cat "$rcfile" 2>/dev/null)"
check_output "info says ACTIVE again" '^State: +ACTIVE$' vblkctl info s

# A table loaded during the suspension serves what was held.
check "suspend s again" vblkctl suspend s
bg_read
check "load an error table while suspended" vblkctl load s --table '0 2048 error'
check_output "info shows both tables present" '"inactive": ?true' vblkctl --json info s
sleep 1
check_fails "the read is still waiting" test -e "$rcfile"
check "resume swaps in the error table" vblkctl resume s
wait
check_eq "the held read was served by the new (error) table" rc=1 "$(cat "$rcfile" 2>/dev/null)"

check "suspend --noflush" vblkctl suspend --noflush s
check "resume after noflush" vblkctl resume s
check "resume of a running device with no new table is a no-op" vblkctl resume s

vblkctl create never
check_output "suspend of a never-resumed device: EINVAL" 'is not active \(never resumed\)' vblkctl suspend never
check_output "suspend of a missing device: ENXIO" 'no device named .nosuch.' vblkctl suspend nosuch
vblkctl remove never

# LIST copies its records out without holding the device registry: its
# reply buffer here is a page of a file on a suspended vblk device, so the
# copy waits for that device, and the RESUME that ends the wait must not
# wait for LIST.
dd if=/dev/zero of=/dev/ram3 bs=1M count=32 oflag=direct status=none
vblkctl create fsd --table "0 65536 linear /dev/ram3 0"
mkfs.ext4 -q -F /dev/vblk/fsd
mnt=$(mktemp -d)
mount /dev/vblk/fsd "$mnt"
head -c 8192 /dev/zero >"$mnt/buf" && sync
echo 3 >/proc/sys/vm/drop_caches
pipe=$(mktemp -u) && mkfifo "$pipe"
vblk-ioctl-probe list-mmap "$mnt/buf" <"$pipe" >"$pipe.out" 2>&1 &
probe=$!
exec 5>"$pipe"
for _ in $(seq 100); do grep -q ready "$pipe.out" && break; sleep 0.1; done
vblkctl suspend fsd
echo go >&5
sleep 2
check "a LIST whose buffer faults on a suspended device does not block RESUME" timeout 20 vblkctl resume fsd
exec 5>&-
wait "$probe"
check_output "... and the LIST then completes" '^errno=0 ' cat "$pipe.out"
umount "$mnt"
rmdir "$mnt"
rm -f "$pipe" "$pipe.out"
remove_retry fsd

check "suspend s, then remove it while suspended" vblkctl suspend s
check "remove of a suspended device works" vblkctl remove s
check_output "no devices at the end" '^No devices found$' vblkctl ls

done_testing
