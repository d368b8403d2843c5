#!/usr/bin/env bash
# WAIT follows the event counter (blocks, wakes on a table swap, on removal,
# on a signal); MESSAGE reaches the target holding the sector.
. "$(dirname "$0")/lib.sh"

out=$(mktemp)
check "create w (zero)" vblkctl create w --table '0 64 zero'
check_eq "the first resume raised event 1; wait past 0 returns at once" 1 "$(timeout 10 vblkctl wait w 0)"
check_eq "wait --json" '{"event_nr":1,"name":"w"}' "$(timeout 10 vblkctl --json wait w 0)"

vblkctl wait w 1 >"$out" 2>&1 &
waiter=$!
sleep 2
check "wait for a new event is still sleeping after 2 s" kill -0 "$waiter"
vblkctl load w --table '0 128 zero'
vblkctl resume w
wait "$waiter"; rc=$?
check_eq "a table swap wakes it, exit 0" 0 "$rc"
check_eq "... and it prints the new event number" 2 "$(cat "$out")"
check_eq "resume without a new table raises no event" 2 "$(vblkctl resume w >/dev/null; vblkctl --json info w | python3 -c 'import json,sys; print(json.load(sys.stdin)["event_nr"])')"

vblkctl wait w >"$out" 2>&1 &
waiter=$!
sleep 2
vblkctl remove w
wait "$waiter"; rc=$?
check_eq "removing the device wakes a waiter with an error" 1 "$rc"
check_output "... saying the device went away" "device 'w' was removed" cat "$out"

vblkctl create w2 --table '0 64 zero'
timeout -s INT 2 vblkctl wait w2; rc=$?
check_eq "a signal ends a wait (timeout's SIGINT after 2 s)" 124 "$rc"
check "the device is fine after the interrupted wait" vblkctl info w2

check_output "zero accepts no messages: EINVAL + reason (the first word only)" \
	"Invalid argument.*target 'zero' accepts no messages \(got 'hello' \.\.\.\)" vblkctl message w2 0 hello world
msg=$(mktemp)
vblkctl message w2 0 key set 00112233445566778899aabbccddeeff >"$msg" 2>&1
check_output "a key sent to a line that takes no messages is refused, naming the first word" \
	"accepts no messages \(got 'key' \.\.\.\)" cat "$msg"
check_fails "... and the key is not echoed back" grep -q 00112233445566778899aabbccddeeff "$msg"
vblkctl message w2 0 00112233445566778899aabbccddeeff >"$msg" 2>&1
check_output "a first word that looks like a key is not shown either" "got '<a 32-byte word, not shown>'" cat "$msg"
check_fails "... nor any of it echoed" grep -q 0011223344556677 "$msg"
rm -f "$msg"
check_output "a message must start with a sector" "must start with a sector number, got 'x'" vblkctl message w2 x hello
check_output "a sector past the end is refused" 'sector 64 is past the end of the table \(64 sectors\)' vblkctl message w2 64 hello
vblkctl create t0
check_output "a device without an active table takes no messages" 'has no active table' vblkctl message t0 0 hello
vblkctl remove t0
vblkctl remove w2
check_output "no devices at the end" '^No devices found$' vblkctl ls
rm -f "$out"
done_testing
