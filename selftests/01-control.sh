#!/usr/bin/env bash
# The control device, the VERSION ioctl, vblkctl version, privilege checks,
# hostile ioctl arguments, and repeated module load/unload.
. "$(dirname "$0")/lib.sh"

ko=${VBLK_KO:?VBLK_KO must name vblk.ko}
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; }
probe() { vblk-ioctl-probe "$1"; }

# --- the control device ---
check "control device is a character device" test -c /dev/vblk-control
check_eq "control device is root-only (0600)" 600 "$(stat -c %a /dev/vblk-control)"
check_output "control device is a misc device (major 10)" '^a,' stat -c '%t,%T' /dev/vblk-control

# --- vblkctl version ---
check "vblkctl version succeeds" vblkctl version
check_output "vblkctl version shows the module ABI" '^Module ABI: +1\.[0-9]+\.[0-9]+$' vblkctl version
check_eq "tool and module ABI agree" \
	"$(vblkctl version | sed -n 's/^Tool ABI: *//p')" "$(vblkctl version | sed -n 's/^Module ABI: *//p')"
check_output "vblkctl --version names the tool" '^vblkctl [0-9]+\.[0-9]+\.[0-9]+$' vblkctl --version
json=$(vblkctl --json version)
check_eq "vblkctl --json version is valid JSON with both ABIs" yes \
	"$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("yes" if d["tool_abi"]==d["module_abi"] and d["tool_version"] else "no")' "$json" 2>&1)"

# --- privilege ---
check_fails "unprivileged vblkctl version fails" nobody vblkctl version
check_output "unprivileged open explains it needs root" 'needs root \(CAP_SYS_ADMIN\)' nobody vblkctl version
chmod 666 /dev/vblk-control
check_fails "unprivileged ioctl on a world-open node fails" nobody vblkctl version
check_output "... with EACCES and the kernel's message" 'Permission denied.*require CAP_SYS_ADMIN' nobody vblkctl version
chmod 600 /dev/vblk-control
check_output "root without CAP_SYS_ADMIN is refused too" 'require CAP_SYS_ADMIN' \
	setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin -- vblkctl version

# --- hostile and malformed ioctls: errno and message, nothing changes ---
check_output "well-formed VERSION through the probe succeeds" '^errno=0 .*message=$' probe version
check_output "unknown command number: ENOTTY" '^errno=25 ' probe unknown-nr
check_output "device-mapper's magic: ENOTTY" '^errno=25 ' probe wrong-magic
check_output "header size in the number too small: ENOTTY" '^errno=25 ' probe short-size-in-number
check_output "header size in the number too large: ENOTTY" '^errno=25 ' probe long-size-in-number
check_output "NULL argument: EFAULT" '^errno=14 ' probe null-arg
check_output "kernel-space argument: EFAULT" '^errno=14 ' probe unmapped-arg
check_output "data_size smaller than the header: EINVAL + message" '^errno=22 .*message=data_size 8 is smaller than the 568-byte header' probe data-size-too-small
check_output "data_offset past data_size: EINVAL + message" '^errno=22 .*message=data_offset 569 is outside' probe data-offset-past-end
check_output "data_offset inside the header: EINVAL + message" '^errno=22 .*message=data_offset 4 is outside' probe data-offset-inside-header
check_output "reserved field set: EINVAL + message" '^errno=22 .*message=reserved header field is 7' probe reserved-nonzero
check "VERSION still answers after the bad input" vblkctl version

# --- load/unload, repeatedly ---
exec 3<>/dev/vblk-control
check_fails "rmmod refused while the control device is open" rmmod vblk
exec 3>&-
vblkctl create held
check_fails "rmmod refused while a device exists (each device holds the module, as dm's do)" rmmod vblk
check "... and the device is still there and answers" vblkctl info held
check "remove it" vblkctl remove held
cycles_ok=yes
for i in 1 2 3 4 5; do
	rmmod vblk || { cycles_ok="no: rmmod $i failed"; break; }
	[ ! -e /dev/vblk-control ] || { cycles_ok="no: node left after rmmod $i"; break; }
	insmod "$ko" || { cycles_ok="no: insmod $i failed"; break; }
	for _ in $(seq 50); do [ -c /dev/vblk-control ] && break; sleep 0.1; done
	vblkctl version >/dev/null || { cycles_ok="no: version after reload $i failed"; break; }
done
check_eq "five unload/reload cycles, each answering VERSION" yes "$cycles_ok"

rmmod vblk
check_fails "vblkctl fails when the module is not loaded" vblkctl version
check_output "... and says the module is not loaded" 'vblk module is not loaded' vblkctl version
insmod "$ko"
for _ in $(seq 50); do [ -c /dev/vblk-control ] && break; sleep 0.1; done
check "module loads again" vblkctl version

done_testing
