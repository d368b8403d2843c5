#!/usr/bin/env bash
# Device lifecycle without tables: create, ls, info, remove; names, uuids,
# duplicates, missing devices, many devices; every refusal leaves the
# device list as it was.
. "$(dirname "$0")/lib.sh"

names() { vblkctl ls | cut -f1 | sort | tr '\n' ' '; }
probe() { vblk-ioctl-probe "$1"; }

check_output "no devices at start" '^No devices found$' vblkctl ls
check "create a" vblkctl create a
check "create b with a uuid" vblkctl create b --uuid VBLK-test-b
check_eq "ls shows both" "a b " "$(names)"
check_output "ls marks them as having no disk yet" '^a	\(no disk\)$' vblkctl ls
check_output "info names the device" '^Name: +a$' vblkctl info a
check_output "info shows the uuid" '^UUID: VBLK-test-b$' vblkctl info b
check_eq "info --json is valid JSON with name, uuid and counters" "b VBLK-test-b 0 0" \
	"$(vblkctl --json info b | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["name"], d["uuid"], d["open_count"], d["event_nr"])')"
check_eq "ls --json lists both" "a b" \
	"$(vblkctl --json ls | python3 -c 'import json,sys; print(" ".join(d["name"] for d in json.load(sys.stdin)))')"

# --- refusals: errno + message, nothing changes ---
before=$(names)
check_fails "duplicate name refused" vblkctl create a
check_output "... with EEXIST and the name" 'File exists.*a device named .a. already exists' vblkctl create a
check_output "duplicate uuid refused with EEXIST" 'File exists.*uuid .VBLK-test-b. already exists' vblkctl create c --uuid VBLK-test-b
check_output "remove of a missing device: ENXIO" 'No such device or address.*no device named .nosuch.' vblkctl remove nosuch
check_output "info of a missing device: ENXIO" 'no device named .nosuch.' vblkctl info nosuch
check_output "name with a slash refused" "device name 'x/y' may contain only printable ASCII" vblkctl create x/y
check_output "name with a space refused" "may contain only printable ASCII" vblkctl create 'x y'
check_output "name '..' refused" "may not be '.' or '..'" vblkctl create ..
check_output "empty name refused" 'is empty' vblkctl create ''
check_output "128-byte name refused" 'longer than 127 bytes' vblkctl create "$(printf 'n%.0s' $(seq 128))"
check_output "unterminated name field (raw ioctl): EINVAL" '^errno=22 .*message=device name is not NUL-terminated' probe unterminated-name
check_output "foreign ABI major (raw ioctl): EINVAL" '^errno=22 .*message=caller speaks ABI 9.x' probe abi-major-mismatch
check_output "LIST without room: BUFFER_FULL and the size needed" \
	'^errno=0 flags=0x80000000 data_size=864 ' probe list-no-room
check_eq "refusals changed nothing" "$before" "$(names)"

# --- 127-byte names work end to end ---
long=$(printf 'L%.0s' $(seq 127))
check "a 127-byte name is accepted" vblkctl create "$long"
check "... and removed" vblkctl remove "$long"

# --- many devices: LIST must grow vblkctl's 4 KiB first buffer (40 × 144 bytes) ---
ok_many=yes
for i in $(seq 40); do vblkctl create "many$i" || { ok_many="no: create many$i"; break; }; done
check_eq "40 devices created" yes "$ok_many"
check_eq "ls lists all 42, in creation order" "a b $(seq -f 'many%g' -s ' ' 40)" "$(vblkctl ls | cut -f1 | tr '\n' ' ' | sed 's/ $//')"
vblkctl remove many20
check_eq "removing one from the middle keeps the others' order" \
	"a b $(seq -f 'many%g' -s ' ' 19) $(seq -f 'many%g' -s ' ' 21 40)" "$(vblkctl ls | cut -f1 | tr '\n' ' ' | sed 's/ $//')"
for i in $(seq 40); do [ "$i" = 20 ] || vblkctl remove "many$i" || { ok_many="no: remove many$i"; break; }; done
check_eq "the other 39 removed" yes "$ok_many"

check "remove a" vblkctl remove a
check "remove b" vblkctl remove b
check_output "no devices at the end" '^No devices found$' vblkctl ls
check "a removed name can be created again" vblkctl create a
check "... and removed again" vblkctl remove a

done_testing
