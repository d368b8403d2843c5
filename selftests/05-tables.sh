#!/usr/bin/env bash
# Table input (--table, file, stdin), multi-line tables, TABLE, STATUS and
# TARGETS queries, text and JSON.
. "$(dirname "$0")/lib.sh"

tbl=$(mktemp)
printf '# zeros, then a fence, then zeros\n0 1024 zero\n1024 8 error\n\n1032 1016 zero\n' >"$tbl"

check "create from a table file (comments, blank lines)" vblkctl create m "$tbl"
check_eq "size is the sum of the lines" 2048 "$(blockdev --getsz /dev/vblk/m)"
check_eq "table shows the three lines, normalised" \
	"0 1024 zero|1024 8 error|1032 1016 zero|" "$(vblkctl table m | tr '\n' '|')"
check "reads before the fence work" dd if=/dev/vblk/m of=/dev/null bs=512 count=1024 iflag=direct status=none
check_fails "a read touching the fence fails" dd if=/dev/vblk/m of=/dev/null bs=512 skip=1020 count=8 iflag=direct status=none
check "reads after the fence work" dd if=/dev/vblk/m of=/dev/null bs=512 skip=1032 count=1016 iflag=direct status=none
check_output "info counts 3 targets" 'Number of targets: 3' vblkctl info m
check_eq "status lists the lines (zero and error have no status text)" \
	"0 1024 zero|1024 8 error|1032 1016 zero|" "$(vblkctl status m | tr '\n' '|')"
check_eq "table --json" "0:1024:zero 1024:8:error 1032:1016:zero" \
	"$(vblkctl --json table m | python3 -c 'import json,sys; print(" ".join("%s:%s:%s" % (l["start"], l["length"], l["target"]) for l in json.load(sys.stdin)))')"

check "load from stdin" bash -c 'echo "0 4096 zero" | vblkctl load m'
check_eq "--inactive shows the loaded table" "0 4096 zero" "$(vblkctl table --inactive m)"
check_eq "the active table is unchanged until resume" "0 1024 zero" "$(vblkctl table m | head -1)"
check "resume" vblkctl resume m
check_eq "now active" "0 4096 zero" "$(vblkctl table m)"
check_eq "and nothing inactive" "" "$(vblkctl table --inactive m)"

check "create from stdin" bash -c 'printf "0 8 error\n" | vblkctl create e2'
check_eq "e2 has the error table" "0 8 error" "$(vblkctl table e2)"
check "create --notable ignores stdin" bash -c 'echo "0 8 zero" | vblkctl create --notable n'
check_eq "n has no table" "" "$(vblkctl table n)"
check_output "info n says NO TABLE" '^State: +NO TABLE$' vblkctl info n

check_output "targets lists zero" '^zero +v1\.0\.0$' vblkctl targets
check_output "targets lists error" '^error +v1\.0\.0$' vblkctl targets
check_output "targets lists linear" '^linear +v1\.0\.0$' vblkctl targets
check_output "targets lists striped" '^striped +v1\.0\.0$' vblkctl targets
check_output "targets lists flakey" '^flakey +v1\.0\.0$' vblkctl targets
check_eq "targets --json" "crypt error flakey linear mirror raid snapshot snapshot-merge snapshot-origin striped thin thin-pool zero" \
	"$(vblkctl --json targets | python3 -c 'import json,sys; print(" ".join(sorted(t["name"] for t in json.load(sys.stdin))))')"
check_output "table of a missing device: ENXIO" 'no device named .nosuch.' vblkctl table nosuch
check_output "a table file that does not exist" 'cannot read table file' vblkctl load n /nonexistent

for d in m e2 n; do vblkctl remove "$d"; done
check_output "no devices at the end" '^No devices found$' vblkctl ls
rm -f "$tbl"
done_testing
