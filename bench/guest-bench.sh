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
#   - one run on the raw lower device (the limit: no layer above it);
#   - for every line of TARGETS_FILE (bench/targets.list) whose target both
#     vblk and dm offer, PAIRS pairs of runs: vblk and dm with the same
#     table over the same lower devices (odd pairs vblk first, even pairs dm
#     first, so a slow drift of the host does not favour one side).
# A device is created right before its run and removed right after: vblk
# and dm both claim the lower devices exclusively.
#
# A run is one fio process (io_uring, O_DIRECT) running every shape in turn
# (one time-based job each, separated by stonewall): fio's start-up under
# TCG costs ~4 s (it links some 60 libraries), too much to pay per shape.
# Latency percentiles are kept for the total latency (lat_percentiles=1):
# at iodepth 1 a request to null_blk completes inside io_uring_enter, so
# its time shows up as submission latency and clat alone is nearly zero. Around each job's I/O fio snapshots /proc/stat
# (exec_prerun/exec_postrun, run right before its clock starts and after it
# stops), so the system-wide CPU time per I/O includes work done in
# interrupts, softirqs and kernel threads, not only in fio's own context.
#
# Output, for the host to aggregate (bench/aggregate.py):
#   OUT_DIR/meta.json     guest facts (kernel, cpus, fio, vblk ABI, backings)
#   OUT_DIR/manifest.tsv  backing target shape pair side fio-json stat-file (a line per run and shape)
#   OUT_DIR/raw/ID.json   fio's JSON (one job per shape); ID.SHAPE.stat:
#                         /proc/stat's cpu line before and after that job
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
	[ -e "/dev/vblk/$VBLK_NAME" ] && vblkctl remove "$VBLK_NAME"
	dmsetup info "$DM_NAME" >/dev/null 2>&1 && dmsetup remove "$DM_NAME"
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

# setup_BACKING: fills DEVS with 4 lower devices of equal size.
setup_nullb() {
	local i d
	mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config || return 1
	DEVS=()
	for i in 0 1 2 3; do
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
	BACKING_DESC="null_blk via configfs, 4 x 4096 MiB, memory_backed=0, irqmode=$(cat "$NULLB_CFG/bnull0/irqmode"), queue_mode=$(cat "$NULLB_CFG/bnull0/queue_mode"), hw_queue_depth=$(cat "$NULLB_CFG/bnull0/hw_queue_depth"), submit_queues=$(cat "$NULLB_CFG/bnull0/submit_queues"), blocksize=$(cat "$NULLB_CFG/bnull0/blocksize")"
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

# expand TEMPLATE NDEVS: a table from targets.list with the devices filled in.
expand() {
	local D0=${DEVS[0]} D1=${DEVS[1]} D2=${DEVS[2]} D3=${DEVS[3]} DSZ=$dsz N=$2
	eval "printf '%s' \"$1\""
}

# fio_run ID DEV: one run (every selected shape on DEV); files go to $out/raw.
fio_run() {
	local id=$1 dev=$2 shape o
	rm -f "$work"/*
	{
		printf '[global]\nfilename=%s\ndirect=1\nioengine=io_uring\ntime_based=1\nruntime=%s\n' "$dev" "$runtime"
		printf 'randrepeat=0\nnorandommap=1\nstonewall=1\nlat_percentiles=1\n'
		printf 'exec_prerun=head -1 /proc/stat\nexec_postrun=head -1 /proc/stat\n'
		for shape in "${RUN_SHAPES[@]}"; do
			printf '[%s]\n' "$shape"
			for o in ${SHAPE_ARGS[$shape]}; do printf '%s\n' "${o#--}"; done
		done
	} >"$work/job.fio"
	if ! (cd "$work" && fio --output-format=json --output="$work/fio.json" job.fio >"$work/fio.log" 2>&1); then
		cat "$work/fio.log" >&2
		return 1
	fi
	cp "$work/fio.json" "$out/raw/$id.json" || return 1
	for shape in "${RUN_SHAPES[@]}"; do
		cat "$work/$shape.prerun.txt" "$work/$shape.postrun.txt" >"$out/raw/$id.$shape.stat" || return 1
	done
}

# record BACKING TARGET PAIR SIDE ID: manifest lines and a progress line.
record() {
	local shape
	for shape in "${RUN_SHAPES[@]}"; do
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$shape" "$3" "$4" "raw/$5.json" "raw/$5.$shape.stat" >>"$out/manifest.tsv"
	done
	say "$1 $2${3:+ pair $3/$pairs} $4: $(jq -r '[.jobs[] | "\(.jobname) \((.read.iops + .write.iops) | floor)"] | join(", ")' "$out/raw/$5.json") IOPS"
}

# run_side SIDE BACKING TARGET PAIR TABLE
run_side() {
	local side=$1 backing=$2 target=$3 pair=$4 table=$5 dev id
	id=$backing-$target-p$pair-$side
	case "$side" in
	vblk)
		vblkctl create "$VBLK_NAME" --table "$table" >/dev/null || die "vblkctl create $VBLK_NAME --table '$table'"
		dev=/dev/vblk/$VBLK_NAME
		no_sched "$dev"
		;;
	dm)
		dmsetup create "$DM_NAME" --table "$table" || die "dmsetup create $DM_NAME --table '$table'"
		dev=/dev/mapper/$DM_NAME
		;;
	esac
	fio_run "$id" "$dev" || die "fio on $side ($id)"
	remove_upper || die "removing the $side device"
	record "$backing" "$target" "$pair" "$side" "$id"
}

# ---- targets: name, devices, tables; skipped when either side lacks the type
vblk_types=$(vblkctl targets | awk '{print $1}')
dm_types=$(dmsetup targets | awk '{print $1}')
T_NAME=() T_NDEV=() T_VBLK=() T_DM=()
while IFS= read -r line; do
	[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
	IFS='|' read -r head vt dt <<<"$line"
	read -r name ndev <<<"$head"
	[ -z "$target_filter" ] || [[ " $target_filter " == *" $name "* ]] || continue
	read -r _ _ vtype _ <<<"$vt"
	read -r _ _ dtype _ <<<"$dt"
	if ! grep -qx "$vtype" <<<"$vblk_types"; then say "skipping $name: vblk has no target '$vtype' yet"; continue; fi
	if ! grep -qx "$dtype" <<<"$dm_types"; then say "skipping $name: dm has no target '$dtype'"; continue; fi
	T_NAME+=("$name") T_NDEV+=("$ndev") T_VBLK+=("$vt") T_DM+=("$dt")
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
[ ${#RUN_SHAPES[@]} -gt 0 ] || die "no shape matches '$shape_filter'"

backing_json='{}'

for backing in $backings; do
	declare -F "setup_$backing" >/dev/null || die "unknown backing '$backing' (nullb, brd)"
	"setup_$backing" || die "setting up $backing"
	dsz=$(blockdev --getsz "${DEVS[0]}")
	backing_json=$(jq -c --arg b "$backing" --arg d "$BACKING_DESC" '. + {($b): $d}' <<<"$backing_json")
	say "$backing: $BACKING_DESC"
	fio_run "$backing-raw" "${DEVS[0]}" || die "fio on the raw device ${DEVS[0]}"
	record "$backing" raw "" raw "$backing-raw"
	for i in "${!T_NAME[@]}"; do
		vtable=$(expand "${T_VBLK[$i]}" "${T_NDEV[$i]}")
		dtable=$(expand "${T_DM[$i]}" "${T_NDEV[$i]}")
		say "${T_NAME[$i]}: vblk '$vtable', dm '$dtable'"
		for p in $(seq "$pairs"); do
			if [ $((p % 2)) -eq 1 ]; then order="vblk dm"; else order="dm vblk"; fi
			for side in $order; do
				if [ "$side" = vblk ]; then table=$vtable; else table=$dtable; fi
				run_side "$side" "$backing" "${T_NAME[$i]}" "$p" "$table"
			done
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
