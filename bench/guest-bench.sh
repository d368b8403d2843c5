#!/usr/bin/env bash
# The benchmark, inside the guest (the bench kernel booted by
# scripts/bench.sh through qemu-test/run-vm.sh; vblk is loaded, vblkctl is
# on PATH).
#
#   bench/guest-bench.sh OUT_DIR PAIRS RUNTIME_S "BACKINGS" ["SHAPES"] ["TARGETS"] [TARGETS_FILE]
#
# BACKINGS are lower-device sets: `nullb` (4 null_blk devices without
# memory: no data, pure overhead) and `brd` (the 4 built-in 64 MiB ram
# disks, filled first so every read copies real pages). SHAPES (names, see
# below) and TARGETS (names from TARGETS_FILE) default to all; an empty
# argument means all. For each backing:
#   - one run on the raw lower device D0 (the limit: no layer above it);
#   - for every line of TARGETS_FILE (bench/targets.list) whose target both
#     vblk and dm offer, PAIRS pairs: a vblk device and a dm device with the
#     same table, each over its own half of the backing. A target uses at
#     most 2 lower devices; its $D0, $D1 are the backing's D0, D1 for vblk
#     and D2, D3 for dm (identical devices: same driver, size, settings and
#     contents). So both devices exist at once: vblk and dm both claim their
#     lower devices exclusively, and could not share them.
#
# A pair creates both devices, runs ONE fio process (io_uring, O_DIRECT)
# over them and removes them. Its jobs: for each shape a vblk job and a dm
# job, one right after the other (time-based, stonewall between every two
# jobs), vblk first in odd pairs and dm first in even pairs, so a slow
# drift of the host favours neither
# and the two halves of each ratio run seconds apart. fio's start-up under
# TCG costs some seconds (it links some 60 libraries), too much to pay per
# job or per side. Latency percentiles are kept for the total latency
# (lat_percentiles=1): at iodepth 1 a request to null_blk completes inside
# io_uring_enter, so its time shows up as submission latency and clat alone
# is nearly zero. Around each job's I/O fio snapshots /proc/stat's cpu line
# (exec_prerun/exec_postrun, run right before its clock starts and after it
# stops; a shell builtin, not `head`, which cost ~0.1 s more per job under
# TCG), so the system-wide CPU time per I/O includes work done in
# interrupts, softirqs and kernel threads, not only in fio's own context.
#
# Output, for the host to aggregate (bench/aggregate.py):
#   OUT_DIR/meta.json     guest facts (kernel, cpus, fio, vblk ABI, backings)
#   OUT_DIR/manifest.tsv  backing target shape pair side fio-json stat-file job
#                         (a line per fio job, in the order they ran)
#   OUT_DIR/raw/ID.json   fio's JSON of one fio process (ID: BACKING-raw, or
#                         BACKING-TARGET-pPAIR with both sides' jobs, named
#                         SHAPE.SIDE); ID.SHAPE.SIDE.stat: /proc/stat's cpu
#                         line before and after that job
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: guest-bench.sh OUT_DIR PAIRS RUNTIME_S BACKINGS [SHAPES] [TARGETS] [TARGETS_FILE]}
pairs=${2:?} runtime=${3:?} backings=${4:?}
shape_filter=${5:-}
target_filter=${6:-}
targets_file=${7:-$here/targets.list}

# name and fio arguments of each shape
SHAPES=(
	"randread-4k-qd32   --rw=randread  --bs=4k   --iodepth=32"
	"randwrite-4k-qd32  --rw=randwrite --bs=4k   --iodepth=32"
	"randread-4k-qd1    --rw=randread  --bs=4k   --iodepth=1"
	"randwrite-4k-qd1   --rw=randwrite --bs=4k   --iodepth=1"
	"read-128k-qd8      --rw=read      --bs=128k --iodepth=8"
	"write-128k-qd8     --rw=write     --bs=128k --iodepth=8"
)
# Run only when named in SHAPES (BENCH_SHAPES): the same shapes through
# libaio, which submits in the calling task whatever the device. io_uring
# hands each I/O to a pool of io-wq threads when the device lacks nowait
# support (dm-snapshot, dm-raid1, dm-crypt), which on 2 vCPUs spreads the
# submissions over both; libaio shows the layers without that.
EXTRA_SHAPES=(
	"libaio-randread-4k-qd32   --rw=randread  --bs=4k   --iodepth=32 --ioengine=libaio"
	"libaio-randwrite-4k-qd32  --rw=randwrite --bs=4k   --iodepth=32 --ioengine=libaio"
	"libaio-randread-4k-qd1    --rw=randread  --bs=4k   --iodepth=1  --ioengine=libaio"
	"libaio-write-128k-qd8     --rw=write     --bs=128k --iodepth=8  --ioengine=libaio"
)

export DM_DISABLE_UDEV=1 # no udev in the guest: dmsetup makes its own nodes
NULLB_CFG=/sys/kernel/config/nullb
VBLK_NAME=bench-vblk DM_NAME=bench-dm
start=$(date +%s)
work=$(mktemp -d) # guest tmpfs: fio writes here inside the measured window
mkdir -p "$out/raw"
: >"$out/manifest.tsv"

say() { echo "bench: [+$(( $(date +%s) - ${start:-$(date +%s)} ))s] $*"; }
die() { echo "bench: FAILED: $*" >&2; cleanup; exit 1; }

remove_upper() {
	local i
	[ -e "/dev/vblk/$VBLK_NAME" ] && vblkctl remove "$VBLK_NAME"
	dmsetup info "$DM_NAME" >/dev/null 2>&1 && dmsetup remove "$DM_NAME"
	# companion devices, last made first removed
	for i in 7 6 5 4 3 2 1 0; do
		[ -e "/dev/vblk/$VBLK_NAME-pre$i" ] && vblkctl remove "$VBLK_NAME-pre$i"
		dmsetup info "$DM_NAME-pre$i" >/dev/null 2>&1 && dmsetup remove "$DM_NAME-pre$i"
	done
	return 0
}

nullb_rm() {
	local d
	for d in "$NULLB_CFG"/bnull*; do
		[ -d "$d" ] || continue
		echo 0 >"$d/power"
		rmdir "$d"
	done
}

cleanup() {
	remove_upper
	nullb_rm
	rm -rf "$work"
}

# A blk-mq device gets mq-deadline by default when it has one hardware
# queue; dm-linear is bio-based and never has a scheduler. Compare layers,
# not schedulers: none everywhere.
no_sched() {
	local q
	q=/sys/block/$(basename "$(readlink -f "$1")")/queue/scheduler
	[ -w "$q" ] && echo none >"$q"
	return 0
}

# setup_BACKING: fills DEVS with 4 (brd) or 8 (null_blk: no memory, so
# four legs a side cost nothing) lower devices of equal size.
setup_nullb() {
	local i d
	mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config || return 1
	DEVS=()
	for i in 0 1 2 3 4 5 6 7; do
		d=$NULLB_CFG/bnull$i
		mkdir "$d" || return 1
		echo 4096 >"$d/size"         # MiB; no memory behind it
		echo 0 >"$d/memory_backed"
		echo 1 >"$d/power" || return 1
		DEVS+=("/dev/bnull$i")
	done
	for d in "${DEVS[@]}"; do
		for _ in $(seq 50); do [ -b "$d" ] && break; sleep 0.1; done
		[ -b "$d" ] || return 1
		no_sched "$d"
	done
	BACKING_DESC="null_blk via configfs, 8 x 4096 MiB, memory_backed=0, irqmode=$(cat "$NULLB_CFG/bnull0/irqmode"), queue_mode=$(cat "$NULLB_CFG/bnull0/queue_mode"), hw_queue_depth=$(cat "$NULLB_CFG/bnull0/hw_queue_depth"), submit_queues=$(cat "$NULLB_CFG/bnull0/submit_queues"), blocksize=$(cat "$NULLB_CFG/bnull0/blocksize")"
}

setup_brd() {
	local d mib
	DEVS=(/dev/ram0 /dev/ram1 /dev/ram2 /dev/ram3)
	for d in "${DEVS[@]}"; do
		[ -b "$d" ] || return 1
		mib=$(( $(blockdev --getsize64 "$d") / 1048576 ))
		# brd allocates pages on first write; unwritten pages read as zeros
		# without a copy. Fill every page so reads and writes are real.
		dd if=/dev/zero of="$d" bs=1M count="$mib" oflag=direct status=none || return 1
	done
	BACKING_DESC="brd (built in), 4 x $mib MiB, filled before the runs"
}

teardown_nullb() { nullb_rm; }
teardown_brd() { :; }

# expand TEMPLATE SIDE: a table from targets.list with the side's own lower
# devices filled in: the first half of the backing's devices for vblk, the
# second half for dm ($D0 $D1 on brd's 4; $D0..$D3 on null_blk's 8).
expand() {
	local D0 D1 D2 D3 DSZ=$dsz N=$3 P0 P1 P2 P3 P4 P5 P6 P7 i half=$((${#DEVS[@]} / 2)) base
	case "$2" in
	vblk) base=0 ;;
	dm) base=$half ;;
	esac
	D0=${DEVS[$base]} D1=${DEVS[$((base + 1))]}
	if [ "$half" -ge 4 ]; then D2=${DEVS[$((base + 2))]} D3=${DEVS[$((base + 3))]}; fi
	for i in 0 1 2 3 4 5 6 7; do
		case "$2" in
		vblk) printf -v "P$i" '%s' "/dev/vblk/$VBLK_NAME-pre$i" ;;
		dm) printf -v "P$i" '%s' "/dev/mapper/$DM_NAME-pre$i" ;;
		esac
	done
	eval "printf '%s' \"$1\""
}

# fio_run ID: one fio process running the jobs in JOB_NAME/JOB_DEV/JOB_SHAPE
# (in that order, stonewall between them); files go to $out/raw.
fio_run() {
	local id=$1 i o job
	rm -f "$work"/*
	{
		printf '[global]\ndirect=1\nioengine=io_uring\ntime_based=1\nruntime=%s\n' "$runtime"
		printf 'randrepeat=0\nnorandommap=1\nstonewall=1\nlat_percentiles=1\n'
		# fio cuts option values at ';' (a comment): hence &&. $l is left alone.
		printf 'exec_prerun=read -r l </proc/stat && echo "$l"\n'
		printf 'exec_postrun=read -r l </proc/stat && echo "$l"\n'
		for i in "${!JOB_NAME[@]}"; do
			printf '[%s]\nfilename=%s\n' "${JOB_NAME[$i]}" "${JOB_DEV[$i]}"
			for o in ${SHAPE_ARGS[${JOB_SHAPE[$i]}]}; do printf '%s\n' "${o#--}"; done
		done
	} >"$work/job.fio"
	if ! (cd "$work" && fio --output-format=json --output="$work/fio.json" job.fio >"$work/fio.log" 2>&1); then
		cat "$work/fio.log" >&2
		return 1
	fi
	cp "$work/fio.json" "$out/raw/$id.json" || return 1
	for job in "${JOB_NAME[@]}"; do
		# a line each, or aggregate.py cannot compute the CPU time
		[ -s "$work/$job.prerun.txt" ] && [ -s "$work/$job.postrun.txt" ] || { echo "no /proc/stat snapshot for $job" >&2; return 1; }
		cat "$work/$job.prerun.txt" "$work/$job.postrun.txt" >"$out/raw/$id.$job.stat" || return 1
	done
}

# add_job SHAPE SIDE DEV: appends a job to the next fio_run.
add_job() {
	JOB_NAME+=("$1.$2") JOB_SHAPE+=("$1") JOB_SIDE+=("$2") JOB_DEV+=("$3")
}

# record BACKING TARGET PAIR ID: manifest lines (one per job, in the order
# they ran) and a progress line.
record() {
	local i
	for i in "${!JOB_NAME[@]}"; do
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "${JOB_SHAPE[$i]}" "$3" "${JOB_SIDE[$i]}" \
			"raw/$4.json" "raw/$4.${JOB_NAME[$i]}.stat" "${JOB_NAME[$i]}" >>"$out/manifest.tsv"
	done
	if [ -z "$3" ]; then
		say "$1 $2: $(jq -r '[.jobs[] | "\(.jobname | sub("\\.raw$"; "")) \((.read.iops + .write.iops) | floor)"] | join(", ")' "$out/raw/$4.json") IOPS"
	else
		say "$1 $2 pair $3/$pairs, ${JOB_SIDE[0]} first: vblk/dm IOPS $(jq -r --arg shapes "${RUN_SHAPES[*]}" '
			(.jobs | map({key: .jobname, value: (.read.iops + .write.iops)}) | from_entries) as $j
			| [$shapes | split(" ")[] | . as $s | $j[$s + ".vblk"] as $v | $j[$s + ".dm"] as $d
			   | "\($s) \($v // 0 | floor)/\($d // 0 | floor) \(if ($d // 0) > 0 then ($v // 0) / $d * 100 | round / 100 else "-" end)"]
			| join(", ")' "$out/raw/$4.json")"
	fi
}

# run_pair BACKING TARGET PAIR VBLK_TABLE DM_TABLE [VBLK_PRE DM_PRE]: both
# devices (after their companions, if any), one fio process, all removed.
run_pair() {
	local backing=$1 target=$2 pair=$3 vdev=/dev/vblk/$VBLK_NAME ddev=/dev/mapper/$DM_NAME shape side first second
	local k t vpre=() dpre=()
	if [ -n "${6:-}" ]; then
		# A store on a ram disk keeps its header from the last pair: every
		# pair starts from blank companions' devices.
		[ "$backing" = brd ] && for k in 1 3; do
			dd if=/dev/zero of="${DEVS[$k]}" bs=1M oflag=direct status=none 2>/dev/null
		done
		IFS=';' read -ra vpre <<<"$6"
		IFS=';' read -ra dpre <<<"$7"
		# An entry `MSG <sector> <message>` sends a message to the companion
		# made just before it (a thin pool's create_thin).
		for k in "${!vpre[@]}"; do
			t=$(sed 's/^ *//; s/ *$//' <<<"${vpre[$k]}")
			if [[ $t == MSG\ * ]]; then
				# shellcheck disable=SC2086 # the message's words
				vblkctl message "$VBLK_NAME-pre$((k - 1))" ${t#MSG } >/dev/null || die "vblkctl message $VBLK_NAME-pre$((k - 1)) ${t#MSG }"
				continue
			fi
			vblkctl create "$VBLK_NAME-pre$k" --table "$t" >/dev/null || die "vblkctl create $VBLK_NAME-pre$k --table '$t'"
		done
		for k in "${!dpre[@]}"; do
			t=$(sed 's/^ *//; s/ *$//' <<<"${dpre[$k]}")
			if [[ $t == MSG\ * ]]; then
				# shellcheck disable=SC2086 # the message's words
				dmsetup message "$DM_NAME-pre$((k - 1))" ${t#MSG } || die "dmsetup message $DM_NAME-pre$((k - 1)) ${t#MSG }"
				continue
			fi
			dmsetup create "$DM_NAME-pre$k" --table "$t" || die "dmsetup create $DM_NAME-pre$k --table '$t'"
		done
	fi
	vblkctl create "$VBLK_NAME" --table "$4" >/dev/null || die "vblkctl create $VBLK_NAME --table '$4'"
	no_sched "$vdev"
	dmsetup create "$DM_NAME" --table "$5" || die "dmsetup create $DM_NAME --table '$5'"
	if [ $((pair % 2)) -eq 1 ]; then first=vblk second=dm; else first=dm second=vblk; fi
	JOB_NAME=() JOB_SHAPE=() JOB_SIDE=() JOB_DEV=()
	for shape in "${RUN_SHAPES[@]}"; do
		for side in $first $second; do
			if [ "$side" = vblk ]; then add_job "$shape" vblk "$vdev"; else add_job "$shape" dm "$ddev"; fi
		done
	done
	fio_run "$backing-$target-p$pair" || die "fio on vblk and dm ($backing $target pair $pair)"
	remove_upper || die "removing the devices"
	record "$backing" "$target" "$pair" "$backing-$target-p$pair"
}

# ---- targets: name, devices, tables; skipped when either side lacks the
# type, or when the line needs more lower devices than a side has (2)
vblk_types=$(vblkctl targets | awk '{print $1}')
dm_types=$(dmsetup targets | awk '{print $1}')
T_NAME=() T_NDEV=() T_VBLK=() T_DM=() T_VPRE=() T_DPRE=() T_ONLY=()
while IFS= read -r line; do
	[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
	IFS='|' read -r head vt dt vp dp <<<"$line"
	read -r name ndev only <<<"$head"
	[ -z "$target_filter" ] || [[ " $target_filter " == *" $name "* ]] || continue
	if ! [[ $ndev =~ ^[0-9]+$ ]] || [ -z "$dt" ]; then say "skipping $name: not 'NAME NDEVS | VBLK TABLE | DM TABLE'"; continue; fi
	if [ "$ndev" -gt 4 ] || [[ "$vt$dt$vp$dp" =~ \$\{?D[4-9] ]]; then
		say "skipping $name: it needs more than 4 lower devices (NDEVS $ndev, or \$D4.. in a table); vblk and dm each get at most 4, half of null_blk's 8"
		continue
	fi
	read -r _ _ vtype _ <<<"$vt"
	read -r _ _ dtype _ <<<"$dt"
	if ! grep -qx "$vtype" <<<"$vblk_types"; then say "skipping $name: vblk has no target '$vtype' yet"; continue; fi
	if ! grep -qx "$dtype" <<<"$dm_types"; then say "skipping $name: dm has no target '$dtype'"; continue; fi
	T_NAME+=("$name") T_NDEV+=("$ndev") T_VBLK+=("$vt") T_DM+=("$dt") T_VPRE+=("${vp:-}") T_DPRE+=("${dp:-}") T_ONLY+=("${only:-}")
done <"$targets_file"
[ ${#T_NAME[@]} -gt 0 ] || die "no target of $targets_file${target_filter:+ named '$target_filter'} exists in both vblk and dm"

trap 'cleanup; exit 130' INT TERM

declare -A SHAPE_ARGS
RUN_SHAPES=()
for s in "${SHAPES[@]}"; do
	read -r shape shape_args <<<"$s"
	SHAPE_ARGS[$shape]=$shape_args
	[ -z "$shape_filter" ] || [[ " $shape_filter " == *" $shape "* ]] || continue
	RUN_SHAPES+=("$shape")
done
for s in "${EXTRA_SHAPES[@]}"; do
	read -r shape shape_args <<<"$s"
	SHAPE_ARGS[$shape]=$shape_args
	[[ " $shape_filter " == *" $shape "* ]] && RUN_SHAPES+=("$shape")
done
[ ${#RUN_SHAPES[@]} -gt 0 ] || die "no shape matches '$shape_filter'"

backing_json='{}'

for backing in $backings; do
	declare -F "setup_$backing" >/dev/null || die "unknown backing '$backing' (nullb, brd)"
	"setup_$backing" || die "setting up $backing"
	dsz=$(blockdev --getsz "${DEVS[0]}")
	for d in "${DEVS[@]}"; do
		[ "$(blockdev --getsz "$d")" = "$dsz" ] || die "$backing: ${DEVS[*]} differ in size"
	done
	half=$((${#DEVS[@]} / 2))
	BACKING_DESC="$BACKING_DESC; vblk on ${DEVS[*]:0:$half}, dm on ${DEVS[*]:$half}, raw run on ${DEVS[0]}"
	backing_json=$(jq -c --arg b "$backing" --arg d "$BACKING_DESC" '. + {($b): $d}' <<<"$backing_json")
	say "$backing: $BACKING_DESC"
	JOB_NAME=() JOB_SHAPE=() JOB_SIDE=() JOB_DEV=()
	for shape in "${RUN_SHAPES[@]}"; do add_job "$shape" raw "${DEVS[0]}"; done
	fio_run "$backing-raw" || die "fio on the raw device ${DEVS[0]}"
	record "$backing" raw "" "$backing-raw"
	for i in "${!T_NAME[@]}"; do
		if [ -n "${T_ONLY[$i]}" ] && [[ ",${T_ONLY[$i]}," != *",$backing,"* ]]; then
			say "skipping ${T_NAME[$i]} on $backing: only on ${T_ONLY[$i]}"
			continue
		fi
		if [ "${T_NDEV[$i]}" -gt $((${#DEVS[@]} / 2)) ]; then
			say "skipping ${T_NAME[$i]} on $backing: it needs ${T_NDEV[$i]} lower devices a side, $backing has $((${#DEVS[@]} / 2))"
			continue
		fi
		vtable=$(expand "${T_VBLK[$i]}" vblk "${T_NDEV[$i]}")
		dtable=$(expand "${T_DM[$i]}" dm "${T_NDEV[$i]}")
		vpre=$(expand "${T_VPRE[$i]}" vblk "${T_NDEV[$i]}")
		dpre=$(expand "${T_DPRE[$i]}" dm "${T_NDEV[$i]}")
		say "${T_NAME[$i]}: vblk '$vtable'${vpre:+ after '$vpre'}, dm '$dtable'${dpre:+ after '$dpre'}"
		for p in $(seq "$pairs"); do
			run_pair "$backing" "${T_NAME[$i]}" "$p" "$vtable" "$dtable" "$vpre" "$dpre"
		done
	done
	"teardown_$backing"
done

jq -n --arg kernel "$(uname -r)" --arg kernel_full "$(cat /proc/version)" \
	--arg cpus "$(nproc)" --arg mem_kb "$(awk '/MemTotal/ {print $2}' /proc/meminfo)" \
	--arg fio "$(fio --version)" --argjson vblk "$(vblkctl version --json)" \
	--arg dm "$(dmsetup version | tr '\n' ' ')" --arg cmdline "$(cat /proc/cmdline)" \
	--arg vblk_targets "$(vblkctl targets | tr -s ' ' | paste -sd, -)" \
	--argjson backings "$backing_json" --arg targets "${T_NAME[*]}" \
	--argjson pairs "$pairs" --argjson runtime "$runtime" --arg shapes "$(for sh in "${RUN_SHAPES[@]}"; do echo "$sh ${SHAPE_ARGS[$sh]}"; done)" \
	--argjson seconds $(( $(date +%s) - start )) \
	'{kernel: $kernel, kernel_full: $kernel_full, cpus: ($cpus | tonumber), mem_kb: ($mem_kb | tonumber),
	  fio: $fio, vblk: $vblk, dm: $dm, cmdline: $cmdline, vblk_targets: $vblk_targets,
	  backings: $backings, targets: ($targets | split(" ")), pairs: $pairs, runtime_s: $runtime,
	  shapes: ($shapes | split("\n") | map(select(length > 0) | gsub(" +"; " "))), guest_seconds: $seconds}' \
	>"$out/meta.json" || die "writing meta.json"
cleanup
say "done in $(( $(date +%s) - start )) s"
