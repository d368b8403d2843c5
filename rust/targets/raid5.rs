// SPDX-License-Identifier: GPL-2.0
//! `raid <raid4|raid5_n|raid5_la|raid5_ra|raid5_ls|raid5_rs> <#params> <chunk> [options] <#devs> (<meta|-> <dev>)...`:
//! RAID-4/5 with dm-raid's table line and status, and md's data layout
//! (`raid5_layout`: where every sector and every parity chunk lives).
//!
//! Reads of live legs go straight to the leg holding the data (remapped
//! where blk-mq dispatches, no copy). Everything else — writes, reads of a
//! failed or not yet rebuilt leg, and the background passes (initial sync,
//! rebuild, check, repair) — runs on the array's engine: a number of
//! *lanes* on the target's own worker, each with a buffer of one *unit*
//! per leg (a window of at most 64 KiB of one chunk, the same sectors on
//! every leg of a stripe) and one batch of asynchronous I/O. A lane locks
//! its unit while it works on it, so writes, rebuilt reads and passes of
//! one unit never interleave (md's stripe head lock): it reads what the
//! plan needs (`Geometry::plan_row`: reconstruct-write, read-modify-write
//! or data-only, as md chooses), puts the request's new data in, makes the
//! parity and writes the data and parity legs at once; the request
//! completes only when all of them did. Nothing waits on a thread: each
//! I/O's completion kicks the worker, which moves every lane on a step.
//!
//! A leg whose I/O fails is marked dead (`D`); while one leg is dead the
//! array runs degraded (its data rebuilt from the others on reads, writes
//! planned without it); a second failure fails what needs it with EIO.
//! A table line without `nosync` computes the parity of every stripe in
//! the background while I/O runs (writes to stripes not synced yet are
//! reconstruct-writes, which make their rows consistent); `rebuild <i>`
//! rebuilds leg `i` from the others the same way.

use super::mirror_log::{self, SyncMode};
use super::raid5_layout::{
    self, sector_bits, xor_into, Geometry, PageWrite, RaidArgs, RowPlan, WriteMode, MAX_LEGS,
    ROW_SECTORS,
};
use super::{write_device, Ctor, Done, EndIo, Io, Mapped, Target};
use crate::sys::aio::{AioDest, AioDone, AioOp, AsyncIo, DestErrors, MAX_DESTS};
use crate::sys::bdev::{BlockDevice, IoBuffer, WriteFlags};
use crate::sys::disk::{Op, RqInfo, Status, QUEUE_DEPTH};
use crate::sys::event::EventCounter;
use crate::sys::limits::QueueLimits;
use crate::sys::workqueue::{Deferred, Job, OwnedQueue};
use crate::vblk::io::HeldIo;
use crate::vblk::message::{fail, Reply};
use crate::vblk::region::{region_state, region_state_bytes, DirtyLog, LogWriter, RegionMap};
use crate::vblk::slots::Slots;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::error::code::{EBUSY, EINVAL, ENOMEM};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::{Arc, CondVar, Mutex};

/// Region of the write-intent log unless `region_size` says (dm-raid's
/// default: 4 MiB of each leg).
const DEFAULT_REGION_SECTORS: u64 = 8192;
/// How often idle regions are recorded clean while writes come, unless
/// `daemon_sleep` says.
const DEFAULT_DAEMON_SLEEP_MS: u64 = 1000;
/// Largest unit (per leg) in sectors: 64 KiB.
const MAX_UNIT_SECTORS: u64 = 128;
/// Bytes of lane buffers a unit may take on all legs together; wider
/// arrays get smaller units (at least a page).
const LANE_BYTES: u64 = 512 * 1024;
/// Lanes (units worked on side by side), unless `stripe_cache` says.
const DEFAULT_LANES: usize = 32;
/// Most lanes, whatever `stripe_cache` says.
const MAX_LANES: usize = 128;

/// One leg: a whole lower device (dm-raid without metadata devices: the
/// data starts at sector 0), or none (`- -`: missing, the array degraded).
struct Leg {
    dev: Option<Arc<BlockDevice>>,
    /// Its metadata device (`<meta_dev>`), if the line gave one: the
    /// first one holds the write-intent log.
    meta: Option<Arc<BlockDevice>>,
    reads: AtomicU64,
    writes: AtomicU64,
}

/// A background pass over every unit, in leg-sector order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// Computes and writes the parity of every stripe (the initial sync,
    /// or `resync`): rows not passed yet are not trusted.
    Resync,
    /// Rebuilds the legs of the mask from the others (`rebuild <i>`).
    Recover(u32),
    /// Counts the rows whose parity is wrong, fixing nothing.
    Check,
    /// Counts them and writes the right parity.
    Repair,
}

impl Pass {
    fn action(self) -> &'static str {
        match self {
            Pass::Resync => "resync",
            Pass::Recover(_) => "recover",
            Pass::Check => "check",
            Pass::Repair => "repair",
        }
    }
}

/// A request piece on the engine: a write, or a read that needs a rebuilt
/// leg. Its units are worked on one op each, possibly side by side.
struct Piece {
    /// `None` once answered.
    io: Option<HeldIo>,
    write: bool,
    fua: bool,
    /// Array sectors (from the line's start).
    offset: u64,
    len: u64,
    /// The next unit to start (index: stripe × units per chunk + window),
    /// and the last one it touches.
    next_unit: u64,
    last_unit: u64,
    /// Ops of this piece in lanes.
    running: u32,
    status: Status,
}

impl Piece {
    fn all_started(&self) -> bool {
        self.next_unit > self.last_unit
    }
}

/// What a lane's op does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Write,
    /// A read rebuilding the data of leg `.0` (or of no leg: `u32::MAX`,
    /// the data legs are read as they are).
    Read,
    Sync(Pass),
}

/// Where a lane's op is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Plan (again) and start the reads.
    Start,
    /// Waiting for log generation `.0` on disk (its regions' dirty marks).
    WaitLog(u64),
    /// The legs of the mask are being read.
    Reading(u64),
    /// The reads ended: compute, then write (or end).
    Read,
    /// The legs of the mask are being written.
    Writing(u64),
    /// Over with this status.
    Over(Status),
}

/// Most writes one unit op carries (md's stripe head gathers every bio
/// of its stripe the same way).
const MAX_GATHER: usize = 16;

/// One unit being worked on: window `[lo, hi)` of stripe `stripe`'s
/// chunks on every leg.
struct UnitOp {
    kind: Kind,
    /// The pieces (slots in `State::pieces`) a read (one) or writes
    /// (several waiting for the same unit, gathered) belong to.
    pieces: [usize; MAX_GATHER],
    count: usize,
    unit: u64,
    stripe: u64,
    lo: u64,
    hi: u64,
    step: Step,
    /// A write's regions were counted (and dirtied in the log).
    counted: bool,
    plan: Option<RowPlan>,
    /// The leg whose data a read or write rebuilds from the others.
    rebuilt: Option<u32>,
}

impl UnitOp {
    /// The slots of the op's pieces.
    fn slots(&self) -> &[usize] {
        &self.pieces[..self.count]
    }

    /// Bytes of the op's window on one leg.
    fn bytes(&self) -> usize {
        ((self.hi - self.lo) * 512) as usize
    }
}

/// A lane: its buffer (`None` while its I/O has it) and its op.
struct Lane {
    buf: Option<IoBuffer>,
    op: Option<UnitOp>,
}

/// The background pass and where it is.
struct PassState {
    pass: Option<Pass>,
    /// Leg sectors passed (every unit below is done).
    pos: u64,
    /// A unit of the pass is in a lane.
    running: bool,
    /// `frozen`: the pass does not move.
    frozen: bool,
    /// Rows whose parity was found wrong by the last check/repair/resync
    /// (sectors, as md's mismatch_cnt).
    mismatches: u64,
}

struct State {
    pieces: Slots<Piece>,
    lanes: KVec<Lane>,
    pass: PassState,
    /// Units locked by a read retry ([`Target::finish`]), which waits for
    /// them synchronously.
    retry_locked: Slots<u64>,
    /// Pieces whose last op ended, answered by the worker once it let go
    /// of the lock (ending a request runs the block layer's completion
    /// code, which must not find the lock held).
    finished: Slots<(HeldIo, Status)>,
    /// Writes in flight and sync bits per region (with a log: what it
    /// says at load, and what the resync did since).
    regions: RegionMap,
    /// The log's image (empty without one).
    log: DirtyLog,
    /// The first resume read the log.
    loaded: bool,
    /// A region went idle: clean when the engine is.
    clean_wanted: bool,
    /// Passes must not start units (suspend, removal).
    stop: bool,
}

#[pin_data]
struct Core {
    geo: Geometry,
    /// The line's length, and each leg's share of it.
    length: u64,
    per_leg: u64,
    /// Sectors of a unit (a window of a chunk), and units per chunk.
    unit_sectors: u64,
    units_per_chunk: u64,
    legs: KVec<Leg>,
    /// The parsed line, for TABLE (`sync`/`nosync`, options).
    table: TableArgs,
    /// Writes the write-intent log (`None` without metadata devices).
    log_writer: Option<Arc<LogWriter>>,
    /// Leg sectors per region of the log.
    region: u64,
    /// When the last clean round ran (ms, monotonic).
    last_clean_ms: AtomicU64,
    /// Dead legs (bit per leg).
    failed: AtomicU64,
    /// Legs being rebuilt: above `recover_pos` their data is rebuilt
    /// from the others on reads, and not trusted by writes.
    recovering: AtomicU64,
    recover_pos: AtomicU64,
    /// Leg sectors whose parity is known good (`u64::MAX`: all).
    synced_pos: AtomicU64,
    events: Arc<EventCounter>,
    worker: Arc<OwnedQueue>,
    aios: KVec<AsyncIo<Job<Core>>>,
    /// The buffer a read retry rebuilds data in.
    #[pin]
    retry_buf: Mutex<Option<IoBuffer>>,
    /// Counters for `status --detail`.
    stats: Stats,
    #[pin]
    state: Mutex<State>,
    /// Wakes a read retry when a unit is unlocked, and a suspend when the
    /// pass's unit ended.
    #[pin]
    wake: CondVar,
}

/// The line's options as TABLE prints them back.
struct TableArgs {
    sync: raid5_layout::Sync,
    rebuild: u64,
    region_size: u64,
    daemon_sleep_ms: u64,
    min_recovery_rate: u64,
    max_recovery_rate: u64,
    stripe_cache: u64,
}

#[derive(Default)]
struct Stats {
    rmw: AtomicU64,
    rcw: AtomicU64,
    data_only: AtomicU64,
    rebuilt_reads: AtomicU64,
    read_retries: AtomicU64,
    units_synced: AtomicU64,
    /// Writes that joined another's unit op.
    gathered: AtomicU64,
}

/// The target: stops the engine when the table goes away.
struct Raid5 {
    core: Arc<Job<Core>>,
}

/// Builds a `raid` line.
pub(super) fn construct(ctor: &mut Ctor<'_>) -> Result<Arc<dyn Target>> {
    let parsed = match raid5_layout::parse(ctor.args, ctor.length) {
        Ok(p) => p,
        Err(e) => return fail!(ctor.reply, EINVAL, "{e}"),
    };
    let geo = parsed.geometry;
    let per_leg = ctor.length / u64::from(geo.data_legs());
    let mut legs = KVec::new();
    let mut missing = 0u64;
    for (i, (meta, data)) in parsed.legs().enumerate() {
        if data == "-" {
            // dm-raid's missing leg: the array starts degraded.
            missing |= 1 << i;
            if missing.count_ones() > 1 {
                return fail!(
                    ctor.reply,
                    EINVAL,
                    "raid: legs {} are missing; raid4/5 survives one",
                    Legs(missing)
                );
            }
            if meta.is_some() {
                return fail!(
                    ctor.reply,
                    EINVAL,
                    "raid: leg {i} is missing ('- -'): it takes no metadata device either"
                );
            }
            if parsed.sync != raid5_layout::Sync::Skip {
                return fail!(
                    ctor.reply,
                    EINVAL,
                    "raid: leg {i} is missing ('- -'): starting degraded needs 'nosync' (without metadata nothing says the parity is right)"
                );
            }
            if parsed.rebuild & (1 << i) != 0 {
                return fail!(
                    ctor.reply,
                    EINVAL,
                    "raid: leg {i} is missing: it cannot be rebuilt"
                );
            }
            let leg = Leg {
                dev: None,
                meta: None,
                reads: AtomicU64::new(0),
                writes: AtomicU64::new(0),
            };
            if legs.push(leg, GFP_KERNEL).is_err() {
                return fail!(ctor.reply, ENOMEM, "out of memory constructing raid");
            }
            continue;
        }
        let dev = ctor.open_device(data)?;
        if let Some(j) = legs
            .iter()
            .position(|l: &Leg| l.dev.as_ref().is_some_and(|d| d.devt() == dev.devt()))
        {
            return fail!(
                ctor.reply,
                EINVAL,
                "raid: legs {j} and {i} are the same device '{data}'"
            );
        }
        if dev.sectors() < per_leg {
            return fail!(
                ctor.reply,
                EINVAL,
                "raid: leg {i} '{data}' has {} sectors; a {} of {} sectors on {} legs needs {per_leg} on each",
                dev.sectors(),
                geo.algorithm.raid_type(),
                ctor.length,
                geo.legs
            );
        }
        let block = u64::from(dev.logical_block_size() >> 9).max(1);
        if ROW_SECTORS % block != 0 {
            return fail!(
                ctor.reply,
                EINVAL,
                "raid: leg {i} '{data}' has {}-byte logical blocks; at most 4096 are supported",
                block * 512
            );
        }
        let meta = match meta {
            Some(text) => Some(ctor.open_device(text)?),
            None => None,
        };
        let leg = Leg {
            dev: Some(dev),
            meta,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        };
        if legs.push(leg, GFP_KERNEL).is_err() {
            return fail!(ctor.reply, ENOMEM, "out of memory constructing raid");
        }
    }
    // The write-intent log: dm's disk log format (as the mirror's) on the
    // first metadata device, one bit per region of leg sectors.
    let region = match parsed.region_size {
        0 => DEFAULT_REGION_SECTORS.max(geo.chunk_sectors),
        r => r,
    };
    let Ok(nr) = u32::try_from(per_leg.div_ceil(region)) else {
        return fail!(
            ctor.reply,
            EINVAL,
            "raid: too many regions of {region} sectors (use a larger region_size)"
        );
    };
    let log_dev = legs.iter().find_map(|l| l.meta.clone());
    let log_bytes = match &log_dev {
        None => 0,
        Some(dev) => {
            let bytes =
                mirror_log::log_size_bytes(nr, dev.logical_block_size()).unwrap_or(u64::MAX);
            if bytes > dev.sectors().saturating_mul(512) {
                return fail!(
                    ctor.reply,
                    EINVAL,
                    "raid: metadata device {} is too small: the log of {nr} regions needs {bytes} bytes",
                    dev.name()
                );
            }
            if legs
                .iter()
                .any(|l| l.dev.as_ref().is_some_and(|d| d.devt() == dev.devt()))
            {
                return fail!(
                    ctor.reply,
                    EINVAL,
                    "raid: metadata device {} is also a data leg",
                    dev.name()
                );
            }
            bytes as usize
        }
    };
    let disk_log = log_dev.map(|dev| super::mirror::dm_disk_log(dev, log_bytes, nr));
    ctor.charge(
        region_state_bytes(nr, disk_log.as_ref()),
        "raid: the region state",
    )?;
    let Ok((regions, log, log_writer)) = region_state(region as u32, nr, per_leg, disk_log) else {
        return fail!(
            ctor.reply,
            ENOMEM,
            "out of memory for the raid's region state"
        );
    };
    let unit_sectors = unit_sectors(&geo);
    let lanes = match parsed.stripe_cache {
        0 => DEFAULT_LANES,
        // dm-raid's stripe cache counts 4 KiB rows; a lane holds a unit.
        n => (n / (unit_sectors / ROW_SECTORS)).clamp(1, MAX_LANES as u64) as usize,
    };
    let lane_bytes = (u64::from(geo.legs) + 1) * unit_sectors * 512;
    ctor.charge(
        lane_bytes * (lanes as u64 + 1),
        "raid: the lanes' unit buffers",
    )?;
    let Ok(engine) = Engine::new(lanes, lane_bytes as usize) else {
        return fail!(ctor.reply, ENOMEM, "out of memory for the raid's lanes");
    };
    let queue = OwnedQueue::new(kernel::c_str!("vblk_raid"));
    let Ok(worker) = queue.and_then(|q| Ok(Arc::new(q, GFP_KERNEL)?)) else {
        return fail!(ctor.reply, ENOMEM, "out of memory for the raid's workqueue");
    };
    // A rebuild starts with the table; the resync (if any) is decided at
    // the first resume, from the log.
    let recovering = initial_rebuild(&parsed);
    let pass = (recovering != 0).then_some(Pass::Recover(recovering));
    let recovering = u64::from(recovering);
    let synced = 0;
    let units_per_chunk = geo.chunk_sectors / unit_sectors;
    let (length, events) = (ctor.length, ctor.events.clone());
    let core = Job::new(pin_init!(Core {
        geo,
        length,
        per_leg,
        unit_sectors,
        units_per_chunk,
        legs,
        table: TableArgs {
            sync: parsed.sync,
            rebuild: parsed.rebuild,
            region_size: parsed.region_size,
            daemon_sleep_ms: parsed.daemon_sleep_ms,
            min_recovery_rate: parsed.min_recovery_rate,
            max_recovery_rate: parsed.max_recovery_rate,
            stripe_cache: parsed.stripe_cache,
        },
        log_writer,
        region,
        last_clean_ms: AtomicU64::new(0),
        failed: AtomicU64::new(missing),
        recovering: AtomicU64::new(recovering),
        recover_pos: AtomicU64::new(0),
        synced_pos: AtomicU64::new(synced),
        events,
        worker,
        aios: engine.aios,
        retry_buf <- kernel::new_mutex!(Some(engine.retry_buf), "vblk::Raid5::retry_buf"),
        stats: Stats::default(),
        state <- kernel::new_mutex!(
            State {
                pieces: engine.pieces,
                lanes: engine.lanes,
                pass: PassState {
                    pass,
                    pos: 0,
                    running: false,
                    frozen: false,
                    mismatches: 0,
                },
                retry_locked: engine.retry_locked,
                finished: engine.finished,
                regions,
                log,
                loaded: false,
                clean_wanted: false,
                stop: true,
            },
            "vblk::Raid5::state"
        ),
        wake <- kernel::new_condvar!("vblk::Raid5::wake"),
    }));
    let Ok(core) = Arc::pin_init(core, GFP_KERNEL) else {
        return fail!(ctor.reply, ENOMEM, "out of memory constructing raid");
    };
    let target = Arc::new(Raid5 { core }, GFP_KERNEL)?;
    Ok(target)
}

/// The legs a new table rebuilds (`rebuild <i>`, unless `sync` forces a
/// full resync instead), as a mask.
fn initial_rebuild(parsed: &RaidArgs<'_>) -> u32 {
    if parsed.sync == raid5_layout::Sync::Force {
        0
    } else {
        parsed.rebuild as u32
    }
}

/// A unit's sectors: the chunk, or a window of it small enough that a
/// unit on every leg fits [`LANE_BYTES`] (at least a row).
fn unit_sectors(geo: &Geometry) -> u64 {
    let fit = LANE_BYTES / 512 / (u64::from(geo.legs) + 1);
    let mut unit = MAX_UNIT_SECTORS.min(geo.chunk_sectors);
    while unit > ROW_SECTORS && unit > fit {
        unit /= 2;
    }
    unit
}

/// The engine's memory, allocated before the core.
struct Engine {
    aios: KVec<AsyncIo<Job<Core>>>,
    lanes: KVec<Lane>,
    pieces: Slots<Piece>,
    retry_locked: Slots<u64>,
    finished: Slots<(HeldIo, Status)>,
    retry_buf: IoBuffer,
}

impl Engine {
    fn new(lanes: usize, lane_bytes: usize) -> Result<Self> {
        let mut aios = KVec::with_capacity(lanes, GFP_KERNEL)?;
        let mut state = KVec::with_capacity(lanes, GFP_KERNEL)?;
        for _ in 0..lanes {
            aios.push(AsyncIo::new()?, GFP_KERNEL)?;
            let lane = Lane {
                buf: Some(IoBuffer::new(lane_bytes)?),
                op: None,
            };
            state.push(lane, GFP_KERNEL)?;
        }
        Ok(Engine {
            aios,
            lanes: state,
            // A piece per request the disk may have in flight, and the
            // flush machinery's.
            pieces: Slots::new(QUEUE_DEPTH as usize + 1)?,
            retry_locked: Slots::new(16)?,
            finished: Slots::new(QUEUE_DEPTH as usize + 1)?,
            retry_buf: IoBuffer::new(lane_bytes)?,
        })
    }
}

/// A leg mask as its indexes, for messages (`1,3`).
struct Legs(u64);

impl fmt::Display for Legs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, leg) in bits(self.0).enumerate() {
            if k > 0 {
                f.write_char(',')?;
            }
            write!(f, "{leg}")?;
        }
        Ok(())
    }
}

/// The legs of `mask`, lowest first.
fn bits(mask: u64) -> impl Iterator<Item = u32> {
    (0..64u32).filter(move |i| mask & (1 << i) != 0)
}

impl Core {
    fn failed(&self) -> u64 {
        self.failed.load(Ordering::Acquire)
    }

    /// Marks leg `leg` dead (its I/O failed); an event if it is news.
    fn fail_leg(&self, leg: u32) {
        let bit = 1u64 << leg;
        if self.failed.fetch_or(bit, Ordering::AcqRel) & bit == 0 {
            let Some(dev) = self.legs[leg as usize].dev.as_ref() else {
                return;
            };
            pr_warn!(
                "vblk raid: leg {leg} ({}) failed; {}\n",
                dev.name(),
                if self.failed().count_ones() > 1 {
                    "more legs are dead than parity covers: I/O needing them fails"
                } else {
                    "running degraded"
                }
            );
            self.events.bump();
        }
    }

    /// Legs whose data in unit rows from leg sector `at` on cannot be read
    /// as they are: dead, or being rebuilt and not reached yet.
    fn unreadable(&self, at: u64, len: u64) -> u64 {
        let mut mask = self.failed();
        let rec = self.recovering.load(Ordering::Acquire);
        if rec != 0 && at + len > self.recover_pos.load(Ordering::Acquire) {
            mask |= rec;
        }
        mask
    }

    /// Whether the parity of leg sectors `[at, at + len)` is known good.
    fn in_sync(&self, regions: &RegionMap, at: u64, len: u64) -> bool {
        at + len <= self.synced_pos.load(Ordering::Acquire) || regions.all_in_sync(at, len)
    }

    /// The unit holding leg sector `at` of stripe `stripe`'s chunks.
    fn unit_of(&self, stripe: u64, within: u64) -> u64 {
        stripe * self.units_per_chunk + within / self.unit_sectors
    }

    /// Stripe and within-chunk window of unit `unit`.
    fn unit_window(&self, unit: u64) -> (u64, u64, u64) {
        let stripe = unit / self.units_per_chunk;
        let lo = (unit % self.units_per_chunk) * self.unit_sectors;
        (stripe, lo, lo + self.unit_sectors)
    }

    /// Byte offset of leg `leg`'s slot in a lane buffer (slot `legs`:
    /// scratch).
    fn slot(&self, leg: u32) -> usize {
        (leg as u64 * self.unit_sectors * 512) as usize
    }

    /// The first and last unit array sectors `[offset, offset + len)`
    /// touch (from the first stripe's first unit: a piece may touch a
    /// later chunk's start before its own unit; units it has nothing in
    /// are skipped when started).
    fn units_of(&self, offset: u64, len: u64) -> (u64, u64) {
        let first = self.geo.place(offset).stripe;
        let last = self.geo.place(offset + len - 1).stripe;
        (
            first * self.units_per_chunk,
            (last + 1) * self.units_per_chunk - 1,
        )
    }

    /// The within-chunk sectors data chunk `index` of unit (`stripe`,
    /// `[lo, hi)`) has of array sectors `[offset, offset + len)`.
    fn span(
        &self,
        stripe: u64,
        index: u32,
        lo: u64,
        hi: u64,
        offset: u64,
        len: u64,
    ) -> Option<(u64, u64)> {
        self.geo.chunk_span(stripe, index, (lo, hi), offset, len)
    }

    /// Holds `io` for the engine; requeued if the engine is full.
    fn hold(this: &Arc<Job<Core>>, io: Io<'_>, write: bool) -> Mapped {
        let (offset, len) = (io.offset(), io.len());
        let fua = io.info().flags.fua();
        let (next_unit, last_unit) = this.units_of(offset, len);
        let mut st = this.state.lock();
        if st.pieces.len() >= st.pieces.capacity() {
            return io.requeue();
        }
        let (held, mapped) = io.hold();
        let piece = Piece {
            io: Some(held),
            write,
            fua,
            offset,
            len,
            next_unit,
            last_unit,
            running: 0,
            status: Status::OK,
        };
        // Room was checked under the same lock.
        let _ = st.pieces.put_slot(piece);
        drop(st);
        this.worker.kick(this);
        mapped
    }

    /// Whether unit `unit` is locked (a lane or a read retry has it).
    fn busy(st: &State, unit: u64) -> bool {
        st.lanes
            .iter()
            .any(|l| l.op.as_ref().is_some_and(|o| o.unit == unit))
            || st.retry_locked.any(|&u| u == unit)
    }

    /// The next op for an idle lane: a unit of the oldest piece whose
    /// next unit is free, else the pass's next unit.
    fn next_op(&self, st: &mut State) -> Option<UnitOp> {
        loop {
            let slot = {
                let st_ref: &State = st;
                st_ref.pieces.oldest(|p| {
                    p.io.is_some() && !p.all_started() && !Self::busy(st_ref, p.next_unit)
                })
            };
            let Some(slot) = slot else { break };
            let piece = st.pieces.get_mut(slot)?;
            let unit = piece.next_unit;
            piece.next_unit += 1;
            let (stripe, lo, hi) = self.unit_window(unit);
            // The row-aligned part of the window the piece covers.
            let (mut a, mut b) = (hi, lo);
            for i in 0..self.geo.data_legs() {
                if let Some((s, e)) = self.span(stripe, i, lo, hi, piece.offset, piece.len) {
                    a = a.min(s);
                    b = b.max(e);
                }
            }
            if a >= b {
                // The piece has nothing in this unit; it may be over.
                if piece.all_started() && piece.running == 0 {
                    if let Some(Piece {
                        io: Some(io),
                        status,
                        ..
                    }) = st.pieces.take(slot)
                    {
                        Self::finish_piece(st, io, status);
                    }
                }
                continue;
            }
            piece.running += 1;
            let write = piece.write;
            let mut op = UnitOp {
                kind: if write { Kind::Write } else { Kind::Read },
                pieces: [slot; MAX_GATHER],
                count: 1,
                unit,
                stripe,
                lo: a,
                hi: b,
                step: Step::Start,
                counted: false,
                plan: None,
                rebuilt: None,
            };
            if write {
                self.gather(st, &mut op);
            }
            op.lo = op.lo / ROW_SECTORS * ROW_SECTORS;
            op.hi = op.hi.div_ceil(ROW_SECTORS) * ROW_SECTORS;
            return Some(op);
        }
        // Pieces first: the pass takes a lane only when none waits.
        let pass = st.pass.pass?;
        if st.pass.running || st.pass.frozen || st.stop {
            return None;
        }
        if pass == Pass::Resync {
            // Regions the log says are in sync are skipped.
            while st.pass.pos < self.per_leg && st.regions.is_sync(st.pass.pos / self.region) {
                st.pass.pos = ((st.pass.pos / self.region + 1) * self.region).min(self.per_leg);
                self.synced_pos.store(st.pass.pos, Ordering::Release);
            }
            if st.pass.pos >= self.per_leg {
                self.pass_ended(&mut st.pass);
                return None;
            }
        }
        let ps = &st.pass;
        if ps.pos >= self.per_leg {
            return None;
        }
        let stripe = ps.pos / self.geo.chunk_sectors;
        let unit = self.unit_of(stripe, ps.pos % self.geo.chunk_sectors);
        if Self::busy(st, unit) {
            return None;
        }
        let (stripe, lo, hi) = self.unit_window(unit);
        st.pass.running = true;
        Some(UnitOp {
            kind: Kind::Sync(pass),
            pieces: [usize::MAX; MAX_GATHER],
            count: 0,
            unit,
            stripe,
            lo,
            hi,
            step: Step::Start,
            counted: false,
            plan: None,
            rebuilt: None,
        })
    }

    /// Adds to write op `op` the other writes waiting for its unit (each
    /// whose next unit it is), widening its window: sequential small
    /// writes that queued behind a busy unit go out as one op, a full
    /// stripe without reads when together they cover it.
    fn gather(&self, st: &mut State, op: &mut UnitOp) {
        while op.count < MAX_GATHER {
            let unit = op.unit;
            let Some(slot) = st
                .pieces
                .oldest(|p| p.write && p.io.is_some() && !p.all_started() && p.next_unit == unit)
            else {
                return;
            };
            let Some(piece) = st.pieces.get_mut(slot) else {
                return;
            };
            piece.next_unit += 1;
            piece.running += 1;
            for i in 0..self.geo.data_legs() {
                let (_, lo, hi) = self.unit_window(unit);
                if let Some((s, e)) = self.span(op.stripe, i, lo, hi, piece.offset, piece.len) {
                    op.lo = op.lo.min(s);
                    op.hi = op.hi.max(e);
                }
            }
            op.pieces[op.count] = slot;
            op.count += 1;
            self.stats.gathered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves lane `i`'s op on until it waits for its I/O or is over.
    fn advance(this: &Arc<Job<Core>>, st: &mut State, i: usize) {
        let core: &Core = this;
        loop {
            let State {
                lanes,
                pieces,
                pass,
                regions,
                log,
                ..
            } = &mut *st;
            let lane = &mut lanes[i];
            let (Some(op), Some(buf)) = (lane.op.as_mut(), lane.buf.as_mut()) else {
                return;
            };
            let next = match op.step {
                Step::Start => core.start(op, pieces, (regions, log), buf),
                Step::WaitLog(gen) => {
                    if core.log_writer.as_ref().is_some_and(|w| w.written() < gen) {
                        return;
                    }
                    op.step = Step::Start;
                    continue;
                }
                Step::Read => match op.kind {
                    Kind::Write => core.compute_write(op, pieces, buf),
                    Kind::Read => match pieces.get_mut(op.pieces[0]) {
                        Some(piece) => core.compute_read(op, piece, buf),
                        None => Next::Done(Status::IO_ERROR),
                    },
                    Kind::Sync(p) => core.compute_sync(op, p, buf, &mut pass.mismatches),
                },
                Step::Over(status) => Next::Done(status),
                // Waiting for the lane's I/O.
                Step::Reading(_) | Step::Writing(_) => return,
            };
            match next {
                Next::Io(aio_op, mask) => {
                    let Some(buf) = lane.buf.take() else {
                        return;
                    };
                    match core.submit(this, i, aio_op, mask, op, buf) {
                        Ok(()) => return,
                        Err(buf) => {
                            lane.buf = Some(buf);
                            // Could not start: as if every leg of it failed.
                            core.io_ended(lane, DestErrors(u32::MAX));
                        }
                    }
                }
                Next::Done(status) => {
                    core.op_done(st, i, status);
                    return;
                }
                Next::Wait => return,
            }
        }
    }

    /// Submits the lane's batch over `mask`'s legs; gives the buffer
    /// back if it could not.
    fn submit(
        &self,
        this: &Arc<Job<Core>>,
        lane: usize,
        op: AioOp,
        mask: u64,
        unit: &mut UnitOp,
        buf: IoBuffer,
    ) -> core::result::Result<(), IoBuffer> {
        let n = ((unit.hi - unit.lo) * 512) as usize;
        let at = unit.stripe * self.geo.chunk_sectors + unit.lo;
        let Some(dev0) = self.legs.iter().find_map(|l| l.dev.as_ref()) else {
            return Err(buf);
        };
        let mut dests: [AioDest<'_>; MAX_DESTS] = core::array::from_fn(|_| AioDest {
            dev: dev0,
            sector: 0,
            bytes: 0..0,
        });
        let mut count = 0;
        for leg in bits(mask) {
            let l = &self.legs[leg as usize];
            // A missing leg is dead from the start: never in a batch.
            let Some(dev) = l.dev.as_ref() else {
                return Err(buf);
            };
            match op {
                AioOp::Read => l.reads.fetch_add(1, Ordering::Relaxed),
                AioOp::Write(_) => l.writes.fetch_add(1, Ordering::Relaxed),
            };
            let slot = self.slot(leg);
            dests[count] = AioDest {
                dev,
                sector: at,
                bytes: slot..slot + n,
            };
            count += 1;
        }
        unit.step = match op {
            AioOp::Read => Step::Reading(mask),
            AioOp::Write(_) => Step::Writing(mask),
        };
        self.aios[lane]
            .submit(this, op, &dests[..count], buf)
            .map_err(|(_, buf)| buf)
    }

    /// The lane's I/O ended with `errors` (bit `k`: the `k`-th leg of the
    /// batch): dead legs are marked; a read that lost a leg is planned
    /// again (a pass's unit ends), a write ends.
    fn io_ended(&self, lane: &mut Lane, errors: DestErrors) {
        let Some(op) = lane.op.as_mut() else {
            return;
        };
        let (mask, reading) = match op.step {
            Step::Reading(m) => (m, true),
            Step::Writing(m) => (m, false),
            _ => return,
        };
        let mut failed_now = 0u64;
        for (k, leg) in bits(mask).enumerate() {
            if errors.failed(k) {
                failed_now |= 1 << leg;
                self.fail_leg(leg);
            }
        }
        op.step = match (reading, op.kind) {
            (true, _) if failed_now == 0 => Step::Read,
            (true, Kind::Sync(_)) => Step::Over(Status::IO_ERROR),
            (true, _) => Step::Start,
            // Data and parity are on every live leg: with one leg dead it
            // is rebuilt from the others.
            (false, Kind::Write) if self.failed().count_ones() <= 1 => Step::Over(Status::OK),
            (false, Kind::Sync(_)) if failed_now == 0 => Step::Over(Status::OK),
            (false, _) => Step::Over(Status::IO_ERROR),
        };
    }

    /// Lane `lane`'s op is over with `status`: its piece is answered once
    /// its last op is, the pass moves on.
    fn op_done(&self, st: &mut State, lane: usize, status: Status) {
        let Some(op) = st.lanes[lane].op.take() else {
            return;
        };
        match op.kind {
            Kind::Sync(pass) => {
                let ps = &mut st.pass;
                ps.running = false;
                if !status.is_ok() {
                    // A dead leg: the pass cannot go on (md stops it).
                    pr_warn!(
                        "vblk raid: {} stopped at leg sector {}: a leg is dead\n",
                        pass.action(),
                        ps.pos
                    );
                    ps.pass = None;
                    self.events.bump();
                } else {
                    self.stats.units_synced.fetch_add(1, Ordering::Relaxed);
                    let (stripe, _, hi) = self.unit_window(op.unit);
                    ps.pos = stripe * self.geo.chunk_sectors + hi;
                    match pass {
                        Pass::Resync => {
                            self.synced_pos.store(ps.pos, Ordering::Release);
                            // A region passed whole is in sync (the log
                            // may call it clean once idle).
                            if ps.pos % self.region == 0 || ps.pos >= self.per_leg {
                                st.regions.end_recovery((ps.pos - 1) / self.region, true);
                                st.clean_wanted = true;
                            }
                        }
                        Pass::Recover(_) => self.recover_pos.store(ps.pos, Ordering::Release),
                        _ => {}
                    }
                    if ps.pos >= self.per_leg {
                        self.pass_ended(ps);
                    }
                }
                self.wake.notify_all();
            }
            Kind::Write | Kind::Read => {
                self.wake.notify_all();
                if op.counted {
                    let at = op.stripe * self.geo.chunk_sectors + op.lo;
                    if st.regions.end_write(at, op.hi - op.lo) {
                        st.clean_wanted = true;
                    }
                }
                for &slot in op.slots() {
                    let Some(piece) = st.pieces.get_mut(slot) else {
                        continue;
                    };
                    piece.running -= 1;
                    if !status.is_ok() {
                        piece.status = status;
                    }
                    if piece.running == 0 && piece.all_started() {
                        if let Some(piece) = st.pieces.take(slot) {
                            if let Some(io) = piece.io {
                                Self::finish_piece(st, io, piece.status);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Queues a piece's answer for the worker (there is a slot for every
    /// piece; a piece not queued is failed by its drop).
    fn finish_piece(st: &mut State, io: HeldIo, status: Status) {
        let _ = st.finished.put((io, status));
    }

    /// Answers the finished pieces, outside the lock.
    fn answer_finished(&self) {
        loop {
            let Some((io, status)) = self.state.lock().finished.take_oldest(|_| true) else {
                return;
            };
            io.complete(status);
        }
    }

    /// The pass reached the end.
    fn pass_ended(&self, ps: &mut PassState) {
        match ps.pass {
            Some(Pass::Resync) => self.synced_pos.store(u64::MAX, Ordering::Release),
            Some(Pass::Recover(_)) => {
                self.recovering.store(0, Ordering::Release);
                self.recover_pos.store(u64::MAX, Ordering::Release);
            }
            _ => {}
        }
        ps.pass = None;
        self.events.bump();
    }
}

/// What an op does next.
enum Next {
    Io(AioOp, u64),
    Done(Status),
    /// Waiting for the log (`Step::WaitLog`).
    Wait,
}

impl Core {
    /// Plans unit op `op` and says which legs to read (or, with nothing to
    /// read, computes and says which to write).
    fn start(
        &self,
        op: &mut UnitOp,
        pieces: &mut Slots<Piece>,
        (regions, log): (&mut RegionMap, &mut DirtyLog),
        buf: &mut IoBuffer,
    ) -> Next {
        let at = op.stripe * self.geo.chunk_sectors + op.lo;
        let len = op.hi - op.lo;
        if op.kind == Kind::Write && !op.counted {
            // Its regions stay dirty in the log until it is over; the
            // write waits for their marks to be on disk.
            op.counted = true;
            regions.begin_write(at, len);
            let gen = log.mark_dirty(regions.regions(at, len));
            if self.log_writer.as_ref().is_some_and(|w| gen > w.written()) {
                op.step = Step::WaitLog(gen);
                return Next::Wait;
            }
        }
        let unreadable = self.unreadable(at, len);
        let all = (1u64 << self.geo.legs) - 1;
        op.rebuilt = None;
        match op.kind {
            Kind::Write => {
                // What the op's writes together do to each data page: a
                // sector bit per page (a unit is at most 128 sectors).
                let mut pages = [PageWrite::Untouched; MAX_LEGS as usize];
                let window = sector_bits(0, op.hi - op.lo);
                for i in 0..self.geo.data_legs() {
                    let mut covered = 0u128;
                    for &slot in op.slots() {
                        let Some(piece) = pieces.get_mut(slot) else {
                            continue;
                        };
                        if let Some((s, e)) =
                            self.span(op.stripe, i, op.lo, op.hi, piece.offset, piece.len)
                        {
                            covered |= sector_bits(s - op.lo, e - op.lo);
                        }
                    }
                    pages[i as usize] = if covered == 0 {
                        PageWrite::Untouched
                    } else if covered & window == window {
                        PageWrite::Full
                    } else {
                        PageWrite::Partial
                    };
                }
                let in_sync = self.in_sync(regions, at, len);
                let Ok(plan) = self.geo.plan_row(op.stripe, &pages, unreadable, in_sync) else {
                    return Next::Done(Status::IO_ERROR);
                };
                // A partly written page of a lost leg is rebuilt from the
                // others first (they are all read then).
                op.rebuilt = bits(unreadable & all).next().filter(|&leg| {
                    plan.mode == WriteMode::Reconstruct
                        && self
                            .geo
                            .data_index(op.stripe, leg)
                            .is_some_and(|i| pages[i as usize] == PageWrite::Partial)
                });
                op.plan = Some(plan);
                match plan.mode {
                    WriteMode::ReadModifyWrite => &self.stats.rmw,
                    WriteMode::Reconstruct => &self.stats.rcw,
                    WriteMode::DataOnly => &self.stats.data_only,
                }
                .fetch_add(1, Ordering::Relaxed);
                if plan.reads != 0 {
                    return Next::Io(AioOp::Read, plan.reads);
                }
                self.compute_write(op, pieces, buf)
            }
            Kind::Read => {
                let Some(piece) = pieces.get_mut(op.pieces[0]) else {
                    return Next::Done(Status::IO_ERROR);
                };
                let mut wanted = 0u64;
                for i in 0..self.geo.data_legs() {
                    if self
                        .span(op.stripe, i, op.lo, op.hi, piece.offset, piece.len)
                        .is_some()
                    {
                        wanted |= 1 << self.geo.data_leg(op.stripe, i);
                    }
                }
                let lost = wanted & unreadable;
                if lost == 0 {
                    return Next::Io(AioOp::Read, wanted);
                }
                if (unreadable & all).count_ones() > 1 {
                    return Next::Done(Status::IO_ERROR);
                }
                op.rebuilt = bits(lost).next();
                self.stats.rebuilt_reads.fetch_add(1, Ordering::Relaxed);
                Next::Io(AioOp::Read, all & !unreadable)
            }
            Kind::Sync(pass) => {
                let failed = self.failed();
                let reads = match pass {
                    Pass::Recover(mask) => {
                        if failed & !u64::from(mask) != 0 {
                            return Next::Done(Status::IO_ERROR);
                        }
                        all & !u64::from(mask)
                    }
                    _ if failed != 0 => return Next::Done(Status::IO_ERROR),
                    _ => all,
                };
                Next::Io(AioOp::Read, reads)
            }
        }
    }

    /// XORs the legs of `mask` of the op's unit into the scratch slot
    /// (zeroed first).
    fn xor_legs(&self, buf: &mut [u8], n: usize, mask: u64) {
        let (legs, scratch) = buf.split_at_mut(self.slot(self.geo.legs));
        let scratch = &mut scratch[..n];
        scratch.fill(0);
        for leg in bits(mask) {
            let at = self.slot(leg);
            xor_into(scratch, &legs[at..at + n]);
        }
    }

    /// Copies the scratch slot into leg `leg`'s.
    fn scratch_to(&self, buf: &mut [u8], n: usize, leg: u32) {
        let (legs, scratch) = buf.split_at_mut(self.slot(self.geo.legs));
        let at = self.slot(leg);
        legs[at..at + n].copy_from_slice(&scratch[..n]);
    }

    /// Where a piece's data in unit (`stripe`, `[lo, hi)`) lies: for each
    /// data chunk it covers, its byte offset in the piece and its bytes in
    /// a lane buffer.
    fn piece_parts(
        &self,
        (stripe, lo, hi): (u64, u64, u64),
        offset: u64,
        len: u64,
    ) -> impl Iterator<Item = (u64, core::ops::Range<usize>)> + '_ {
        (0..self.geo.data_legs()).filter_map(move |i| {
            let (s, e) = self.span(stripe, i, lo, hi, offset, len)?;
            let leg = self.geo.data_leg(stripe, i);
            let at = self.slot(leg) + ((s - lo) * 512) as usize;
            let piece_byte = (self.geo.array_sector(stripe, i, s) - offset) * 512;
            Some((piece_byte, at..at + ((e - s) * 512) as usize))
        })
    }

    /// Copies the piece's new data of the op's unit into the data legs'
    /// slots.
    fn put_new_data(&self, op: &UnitOp, piece: &Piece, buf: &mut [u8]) {
        let Some(io) = piece.io.as_ref() else {
            return;
        };
        for (from, bytes) in self.piece_parts((op.stripe, op.lo, op.hi), piece.offset, piece.len) {
            io.read_data(from, &mut buf[bytes]);
        }
    }

    /// The data legs the op's writes touch.
    fn written_legs(&self, op: &UnitOp, pieces: &mut Slots<Piece>) -> u64 {
        let mut written = 0u64;
        for &slot in op.slots() {
            let Some(piece) = pieces.get_mut(slot) else {
                continue;
            };
            for i in 0..self.geo.data_legs() {
                if self
                    .span(op.stripe, i, op.lo, op.hi, piece.offset, piece.len)
                    .is_some()
                {
                    written |= 1 << self.geo.data_leg(op.stripe, i);
                }
            }
        }
        written
    }

    /// The reads of a write op ended (or none were needed): puts the new
    /// data of its writes in (oldest first), makes the parity, and says
    /// which legs to write.
    fn compute_write(
        &self,
        op: &mut UnitOp,
        pieces: &mut Slots<Piece>,
        buf: &mut IoBuffer,
    ) -> Next {
        let Some(plan) = op.plan else {
            return Next::Done(Status::IO_ERROR);
        };
        let all = (1u64 << self.geo.legs) - 1;
        let parity = self.geo.parity_leg(op.stripe);
        let n = op.bytes();
        let written = self.written_legs(op, pieces);
        let buf: &mut [u8] = buf;
        if let Some(lost) = op.rebuilt {
            // Its old page, from every other leg (parity included).
            self.xor_legs(buf, n, all & !(1 << lost));
            self.scratch_to(buf, n, lost);
        }
        let scratch = self.slot(self.geo.legs);
        if plan.mode == WriteMode::ReadModifyWrite {
            // New parity = old parity ^ old data ^ new data.
            let p = self.slot(parity);
            buf.copy_within(p..p + n, scratch);
            for leg in bits(written) {
                let (lo, hi) = buf.split_at_mut(scratch);
                let at = self.slot(leg);
                xor_into(&mut hi[..n], &lo[at..at + n]);
            }
        }
        let mut fua = false;
        for &slot in op.slots() {
            if let Some(piece) = pieces.get_mut(slot) {
                fua |= piece.fua;
                self.put_new_data(op, piece, buf);
            }
        }
        match plan.mode {
            WriteMode::ReadModifyWrite => {
                for leg in bits(written) {
                    let (lo, hi) = buf.split_at_mut(scratch);
                    let at = self.slot(leg);
                    xor_into(&mut hi[..n], &lo[at..at + n]);
                }
                self.scratch_to(buf, n, parity);
            }
            WriteMode::Reconstruct => {
                self.xor_legs(buf, n, all & !(1 << parity));
                self.scratch_to(buf, n, parity);
            }
            WriteMode::DataOnly => {}
        }
        let flags = WriteFlags {
            fua,
            ..WriteFlags::default()
        };
        Next::Io(AioOp::Write(flags), plan.writes)
    }

    /// The reads of a read ended: rebuilds the lost leg's data if one is,
    /// copies the data out to the request, and ends.
    fn compute_read(&self, op: &mut UnitOp, piece: &mut Piece, buf: &mut IoBuffer) -> Next {
        let all = (1u64 << self.geo.legs) - 1;
        let buf: &mut [u8] = buf;
        if let Some(lost) = op.rebuilt {
            self.xor_legs(buf, op.bytes(), all & !(1 << lost) & !self.failed());
            self.scratch_to(buf, op.bytes(), lost);
        }
        let Some(io) = piece.io.as_ref() else {
            return Next::Done(Status::IO_ERROR);
        };
        for (to, bytes) in self.piece_parts((op.stripe, op.lo, op.hi), piece.offset, piece.len) {
            io.write_data(to, &buf[bytes]);
        }
        Next::Done(Status::OK)
    }

    /// The reads of a pass's unit ended: rebuilds legs, or compares (and
    /// repairs) the parity, counting wrong rows in `mismatches`.
    fn compute_sync(
        &self,
        op: &mut UnitOp,
        pass: Pass,
        buf: &mut IoBuffer,
        mismatches: &mut u64,
    ) -> Next {
        let all = (1u64 << self.geo.legs) - 1;
        let parity = self.geo.parity_leg(op.stripe);
        let buf: &mut [u8] = buf;
        if let Pass::Recover(mask) = pass {
            let mask = u64::from(mask);
            self.xor_legs(buf, op.bytes(), all & !mask);
            for leg in bits(mask) {
                self.scratch_to(buf, op.bytes(), leg);
            }
            return Next::Io(AioOp::Write(WriteFlags::default()), mask);
        }
        self.xor_legs(buf, op.bytes(), all & !(1 << parity));
        let n = ((op.hi - op.lo) * 512) as usize;
        let (legs, scratch) = buf.split_at_mut(self.slot(self.geo.legs));
        let p = self.slot(parity);
        let mut wrong = 0u64;
        for (new, old) in scratch[..n].chunks(4096).zip(legs[p..p + n].chunks(4096)) {
            if new != old {
                wrong += (new.len() / 512) as u64;
            }
        }
        if pass != Pass::Resync {
            *mismatches += wrong;
        }
        if wrong == 0 || pass == Pass::Check {
            return Next::Done(Status::OK);
        }
        self.scratch_to(buf, op.bytes(), parity);
        Next::Io(AioOp::Write(WriteFlags::default()), 1 << parity)
    }
}

impl AioDone for Job<Core> {
    fn aio_done(this: &Arc<Self>) {
        this.worker.kick(this);
    }
}

/// The engine, on the array's worker: takes the lanes' ended I/O and moves
/// their ops on, then gives idle lanes new ops, until nothing moves. Never
/// waits for I/O.
impl Deferred for Core {
    fn run(this: &Arc<Job<Core>>) {
        loop {
            let mut moved = this.commit_log();
            for lane in 0..this.aios.len() {
                // Lock-free until a batch did end.
                let Some((buf, errors)) = this.aios[lane].take() else {
                    continue;
                };
                let mut st = this.state.lock();
                st.lanes[lane].buf = Some(buf);
                this.io_ended(&mut st.lanes[lane], errors);
                Core::advance(this, &mut st, lane);
                if st.stop {
                    // A drain waits for the lanes' buffers too.
                    this.wake.notify_all();
                }
                moved = true;
            }
            let mut st = this.state.lock();
            for lane in 0..this.aios.len() {
                let l = &st.lanes[lane];
                if l.op.is_some() || l.buf.is_none() {
                    continue;
                }
                let Some(op) = this.next_op(&mut st) else {
                    break;
                };
                st.lanes[lane].op = Some(op);
                Core::advance(this, &mut st, lane);
                moved = true;
            }
            let idle = st.lanes.iter().all(|l| l.op.is_none());
            drop(st);
            this.answer_finished();
            if !moved {
                if idle {
                    this.clean(false);
                }
                return;
            }
        }
    }
}

impl Core {
    /// Writes the log if a write waits for its dirty marks (synchronous:
    /// the log's blocks, a FLUSH, the header with FUA), then lets those
    /// writes go on. Whether any did.
    fn commit_log(self: &Arc<Job<Core>>) -> bool {
        let Some(writer) = &self.log_writer else {
            return false;
        };
        let want = self.state.lock().log.dirty_gen();
        if want <= writer.written() {
            return false;
        }
        if writer
            .commit(want, |buf| self.state.lock().log.snapshot(buf))
            .is_err()
        {
            // As dm: the log failed, writes go on without it (a crash
            // then needs a full resync: 'sync' at the next load).
            pr_warn!("vblk raid: writing the write-intent log failed\n");
        }
        let mut st = self.state.lock();
        let mut moved = false;
        for lane in 0..self.aios.len() {
            if matches!(
                st.lanes[lane].op.as_ref().map(|o| o.step),
                Some(Step::WaitLog(_))
            ) {
                Core::advance(self, &mut st, lane);
                moved = true;
            }
        }
        moved
    }

    /// Records idle, synced regions clean in the log: the legs flushed
    /// first (their data durable), then the bits set, then the log
    /// written. Rounds skip regions written since the last one. `all`: at
    /// suspend, every idle region at once (two rounds).
    fn clean(&self, all: bool) {
        let Some(writer) = &self.log_writer else {
            return;
        };
        let now = kernel::time::Ktime::ktime_get().to_ms().max(0) as u64;
        let sleep = match self.table.daemon_sleep_ms {
            0 => DEFAULT_DAEMON_SLEEP_MS,
            ms => ms,
        };
        if !all && now < self.last_clean_ms.load(Ordering::Relaxed) + sleep {
            // At most a round per daemon_sleep while writes come; the
            // regions stay dirty meanwhile (a crash resyncs them).
            return;
        }
        for _ in 0..1 + usize::from(all) {
            {
                let mut st = self.state.lock();
                if !st.loaded || (!all && !core::mem::take(&mut st.clean_wanted)) {
                    return;
                }
                st.regions.untouch_all();
            }
            self.last_clean_ms.store(now, Ordering::Relaxed);
            // A leg whose cache did not flush may lose what it said it
            // wrote: nothing is called clean this round.
            let failed = self.failed();
            let flushed = self.legs.iter().enumerate().all(|(i, leg)| {
                failed & (1 << i) != 0
                    || match leg.dev.as_ref() {
                        Some(dev) => dev.flush().is_ok(),
                        None => true,
                    }
            });
            if !flushed {
                return;
            }
            let gen = {
                let mut st = self.state.lock();
                let State { regions, log, .. } = &mut *st;
                log.mark_clean(regions.nr(), |r| regions.cleanable(r))
            };
            if let Some(gen) = gen {
                let _ = writer.commit(gen, |buf| self.state.lock().log.snapshot(buf));
            }
        }
    }

    /// The first resume: reads the log and sets the regions' sync bits
    /// from it (dm's disk log rules: a valid header keeps its bits unless
    /// 'sync' or 'nosync'); without a log, none in sync unless 'nosync'.
    /// A resync starts if a region is out of sync (and no rebuild runs).
    fn load(&self, sync: raid5_layout::Sync) {
        let mode = match sync {
            raid5_layout::Sync::Default => SyncMode::Default,
            raid5_layout::Sync::Force => SyncMode::Force,
            raid5_layout::Sync::Skip => SyncMode::No,
        };
        let mut gen = 0;
        match &self.log_writer {
            None => {
                let mut st = self.state.lock();
                let all = sync == raid5_layout::Sync::Skip;
                let nr = st.regions.nr();
                st.regions.load_sync(None, all, if all { nr } else { 0 });
            }
            Some(writer) => writer.read(|disk, read_ok| {
                let mut st = self.state.lock();
                let nr = st.regions.nr() as u32;
                let buf = st.log.image_mut();
                let n = buf.len().min(disk.len());
                buf[..n].copy_from_slice(&disk[..n]);
                let in_sync = match mirror_log::resume(buf, nr, mode, read_ok) {
                    Ok(r) => r.in_sync,
                    Err(_) => 0,
                };
                let st = &mut *st;
                st.regions.load_sync(st.log.clean_bits(), false, in_sync);
                gen = st.log.changed();
            }),
        }
        let mut st = self.state.lock();
        st.loaded = true;
        match st.pass.pass {
            // A rebuild trusts the other legs' parity (as md).
            Some(_) => self.synced_pos.store(u64::MAX, Ordering::Release),
            None if !st.regions.all_synced() => {
                st.pass.pass = Some(Pass::Resync);
                st.pass.pos = 0;
                self.synced_pos.store(0, Ordering::Release);
            }
            None => self.synced_pos.store(u64::MAX, Ordering::Release),
        }
        drop(st);
        if let Some(writer) = &self.log_writer {
            let _ = writer.commit(gen, |buf| self.state.lock().log.snapshot(buf));
        }
    }

    /// Rebuilds a read piece whose leg failed under it, here (process
    /// context, [`Target::finish`]): unit by unit, each locked while its
    /// legs are read and the lost one is rebuilt.
    fn retry_read(this: &Arc<Job<Core>>, done: &mut Done<'_>) {
        let core: &Core = this;
        core.stats.read_retries.fetch_add(1, Ordering::Relaxed);
        let (offset, len) = (done.offset(), done.len());
        let (first, last) = core.units_of(offset, len);
        let mut guard = core.retry_buf.lock();
        let Some(buf) = guard.as_mut() else {
            return done.fail(Status::IO_ERROR);
        };
        for unit in first..=last {
            let (stripe, lo, hi) = core.unit_window(unit);
            if (0..core.geo.data_legs())
                .all(|i| core.span(stripe, i, lo, hi, offset, len).is_none())
            {
                continue;
            }
            // Lock the unit (wait while a lane has it).
            let mut st = core.state.lock();
            while Self::busy(&st, unit) {
                core.wake.wait(&mut st);
            }
            if st.retry_locked.put(unit).is_err() {
                drop(st);
                return done.fail(Status::IO_ERROR);
            }
            drop(st);
            let ok = core.rebuild_unit(buf, stripe, lo, hi, done);
            let _ = core.state.lock().retry_locked.take_oldest(|&u| u == unit);
            core.wake.notify_all();
            this.worker.kick(this);
            if !ok {
                return done.fail(Status::IO_ERROR);
            }
        }
    }

    /// Reads unit (`stripe`, `[lo, hi)`) of every live leg and copies the
    /// piece's data out of it, the lost leg's rebuilt; whether it could.
    fn rebuild_unit(
        &self,
        buf: &mut IoBuffer,
        stripe: u64,
        lo: u64,
        hi: u64,
        done: &mut Done<'_>,
    ) -> bool {
        let all = (1u64 << self.geo.legs) - 1;
        let n = ((hi - lo) * 512) as usize;
        let at = stripe * self.geo.chunk_sectors + lo;
        loop {
            let unreadable = self.unreadable(at, hi - lo) & all;
            if unreadable.count_ones() > 1 {
                return false;
            }
            let mut lost_now = false;
            for leg in bits(all & !unreadable) {
                let slot = self.slot(leg);
                self.legs[leg as usize]
                    .reads
                    .fetch_add(1, Ordering::Relaxed);
                let Some(dev) = self.legs[leg as usize].dev.as_ref() else {
                    return false;
                };
                if dev.read_at(at, buf, slot..slot + n).is_err() {
                    self.fail_leg(leg);
                    lost_now = true;
                    break;
                }
            }
            if lost_now {
                continue;
            }
            let bytes: &mut [u8] = buf;
            if let Some(lost) = bits(unreadable).next() {
                self.xor_legs(bytes, n, all & !unreadable);
                self.scratch_to(bytes, n, lost);
            }
            let (offset, len) = (done.offset(), done.len());
            for (to, range) in self.piece_parts((stripe, lo, hi), offset, len) {
                done.write(to, &bytes[range]);
            }
            return true;
        }
    }

    /// Stops the pass's units (suspend, removal): waits until the one in
    /// a lane ended. With `interruptible`, a signal ends the wait (EINTR).
    fn stop(&self, interruptible: bool) -> Result {
        let mut st = self.state.lock();
        st.stop = true;
        while st.pass.running {
            if !interruptible {
                self.wake.wait(&mut st);
            } else if self.wake.wait_interruptible(&mut st) {
                return Err(kernel::error::code::EINTR);
            }
        }
        Ok(())
    }

    /// Waits until no lane has an op and no piece waits (removal).
    fn drain(&self) {
        let mut st = self.state.lock();
        st.stop = true;
        // Woken by every op's end and, while stopping, every batch's end.
        while st.pass.running
            || !st.pieces.is_empty()
            || st.lanes.iter().any(|l| l.op.is_some() || l.buf.is_none())
        {
            self.wake.wait(&mut st);
        }
    }

    /// The health character of leg `leg` (dm-raid's: `D` dead, `a` alive
    /// but not in sync, `A` alive and in sync).
    fn health(&self, leg: u32, pass: Option<Pass>) -> char {
        if self.failed() & (1 << leg) != 0 {
            'D'
        } else if pass == Some(Pass::Resync)
            || self.recovering.load(Ordering::Acquire) & (1 << leg) != 0
        {
            'a'
        } else {
            'A'
        }
    }

    /// dm-raid's `<synced>/<total>` and action.
    fn progress(&self, ps: &PassState) -> (u64, &'static str) {
        match ps.pass {
            None => (self.per_leg, "idle"),
            Some(_) if ps.frozen => (ps.pos, "frozen"),
            Some(p) => (ps.pos.min(self.per_leg), p.action()),
        }
    }

    /// Starts pass `pass` from the start (messages).
    fn start_pass(this: &Arc<Job<Core>>, pass: Pass) {
        let mut st = this.state.lock();
        st.pass.pass = Some(pass);
        st.pass.pos = 0;
        st.pass.frozen = false;
        match pass {
            Pass::Resync => {
                this.synced_pos.store(0, Ordering::Release);
                st.regions.load_sync(None, false, 0);
            }
            Pass::Check | Pass::Repair => st.pass.mismatches = 0,
            Pass::Recover(_) => {}
        }
        drop(st);
        this.worker.kick(this);
    }
}

impl Drop for Raid5 {
    fn drop(&mut self) {
        let core = &self.core;
        let _ = core.stop(false);
        core.drain();
        core.worker.flush();
    }
}

impl Target for Raid5 {
    fn map(&self, mut io: Io<'_>) -> Mapped {
        let core = &*self.core;
        let (offset, len) = (io.offset(), io.len());
        match io.op() {
            Op::Read => {
                let geo = &core.geo;
                // Every chunk of the piece on a live leg: sent there as is.
                let mut at = offset;
                let end = offset + len;
                let mut direct = true;
                while at < end {
                    let p = geo.place(at);
                    let n = (geo.chunk_sectors - at % geo.chunk_sectors).min(end - at);
                    if core.unreadable(p.leg_sector, n) & (1 << p.leg) != 0 {
                        direct = false;
                        break;
                    }
                    at += n;
                }
                if !direct {
                    return Core::hold(&self.core, io, false);
                }
                let mut at = offset;
                while at < end {
                    let p = geo.place(at);
                    let n = (geo.chunk_sectors - at % geo.chunk_sectors).min(end - at);
                    let leg = &core.legs[p.leg as usize];
                    leg.reads.fetch_add(1, Ordering::Relaxed);
                    // A missing leg is unreadable: not here (a piece not
                    // sent on fails).
                    if let Some(dev) = leg.dev.as_ref() {
                        io.remap_part(at - offset, n, dev, p.leg_sector, p.leg);
                    }
                    at += n;
                }
                io.remapped()
            }
            Op::Write => {
                if core.failed().count_ones() > 1 {
                    return io.kill(Status::IO_ERROR);
                }
                Core::hold(&self.core, io, true)
            }
            Op::Discard | Op::WriteZeroes | Op::Flush | Op::Other => io.kill(Status::NOT_SUPPORTED),
        }
    }

    /// The tag is the leg (reads only: writes are the engine's own I/O).
    fn end_io(&self, info: &RqInfo, leg: u32, status: Status) -> EndIo {
        if status.is_ok() || info.flags.readahead() || info.op != Op::Read {
            return EndIo::Done(status);
        }
        self.core.fail_leg(leg);
        EndIo::Retry
    }

    fn finish(&self, done: &mut Done<'_>) {
        if done.info().op == Op::Read && done.retry_requested() {
            Core::retry_read(&self.core, done);
        }
    }

    fn flush_failed(&self, dev: &BlockDevice, status: Status) -> Status {
        let core = &*self.core;
        for (i, leg) in core.legs.iter().enumerate() {
            if leg.dev.as_ref().is_some_and(|d| d.devt() == dev.devt()) {
                core.fail_leg(i as u32);
            }
        }
        if core.failed().count_ones() <= 1 {
            Status::OK
        } else {
            status
        }
    }

    fn devices(&self, f: &mut dyn FnMut(&BlockDevice, u64, u64)) {
        for leg in self.core.legs.iter() {
            if let Some(dev) = leg.dev.as_ref() {
                f(dev, 0, self.core.per_leg);
            }
            if let Some(meta) = leg.meta.as_ref() {
                f(meta, 0, meta.sectors());
            }
        }
    }

    fn limits(&self, limits: &mut QueueLimits) {
        let geo = &self.core.geo;
        let io_min = (geo.chunk_sectors << 9) as u32;
        let io_opt = (geo.stripe_data_sectors() << 9).try_into().unwrap_or(0);
        limits.set_io_hints(0, io_min, io_opt);
    }

    fn supports_discard(&self) -> bool {
        false
    }

    fn supports_write_zeroes(&self) -> bool {
        false
    }

    fn resume(&self) {
        let core = &self.core;
        let loaded = core.state.lock().loaded;
        if !loaded {
            core.load(core.table.sync);
        }
        core.state.lock().stop = false;
        core.worker.kick(core);
    }

    fn postsuspend(&self) {
        // A clean stop leaves every idle region clean: the next load
        // resyncs nothing.
        self.core.clean(true);
    }

    fn presuspend(&self, _noflush: bool) -> Result {
        // Pieces on the engine complete by themselves; the pass stops.
        self.core.stop(true)
    }

    fn table_args(&self, out: &mut dyn Write) -> fmt::Result {
        let core = &*self.core;
        let t = &core.table;
        let mut words: KVec<(&str, Option<u64>)> = KVec::new();
        let mut add = |w: &'static str, v: Option<u64>| {
            let _ = words.push((w, v), GFP_KERNEL);
        };
        match t.sync {
            raid5_layout::Sync::Force => add("sync", None),
            raid5_layout::Sync::Skip => add("nosync", None),
            raid5_layout::Sync::Default => {}
        }
        for leg in bits(t.rebuild) {
            add("rebuild", Some(u64::from(leg)));
        }
        for (w, v) in [
            ("region_size", t.region_size),
            ("daemon_sleep", t.daemon_sleep_ms),
            ("min_recovery_rate", t.min_recovery_rate),
            ("max_recovery_rate", t.max_recovery_rate),
            ("stripe_cache", t.stripe_cache),
        ] {
            if v != 0 {
                add(w, Some(v));
            }
        }
        let params = 1 + words
            .iter()
            .map(|(_, v)| 1 + u64::from(v.is_some()))
            .sum::<u64>();
        write!(
            out,
            "{} {params} {}",
            core.geo.algorithm.raid_type(),
            core.geo.chunk_sectors
        )?;
        for (w, v) in words.iter() {
            write!(out, " {w}")?;
            if let Some(v) = v {
                write!(out, " {v}")?;
            }
        }
        write!(out, " {}", core.geo.legs)?;
        for leg in core.legs.iter() {
            out.write_char(' ')?;
            match leg.meta.as_ref() {
                Some(meta) => write_device(out, meta)?,
                None => out.write_char('-')?,
            }
            out.write_char(' ')?;
            match leg.dev.as_ref() {
                Some(dev) => write_device(out, dev)?,
                None => out.write_char('-')?,
            }
        }
        Ok(())
    }

    fn status(&self, out: &mut dyn Write) -> fmt::Result {
        let core = &*self.core;
        let st = core.state.lock();
        let (synced, action) = core.progress(&st.pass);
        let (pass, mismatches) = (st.pass.pass, st.pass.mismatches);
        drop(st);
        write!(out, "{} {} ", core.geo.algorithm.raid_type(), core.geo.legs)?;
        for leg in 0..core.geo.legs {
            out.write_char(core.health(leg, pass))?;
        }
        write!(out, " {synced}/{} {action} {mismatches} 0 -", core.per_leg)
    }

    fn status_detail(&self, out: &mut dyn Write) -> fmt::Result {
        let core = &*self.core;
        let s = &core.stats;
        let st = core.state.lock();
        let (pieces, busy) = (
            st.pieces.len(),
            st.lanes.iter().filter(|l| l.op.is_some()).count(),
        );
        let (in_sync, nr) = (st.regions.in_sync(), st.regions.nr());
        drop(st);
        write!(
            out,
            "regions_in_sync={in_sync}/{nr} region_sectors={} lanes={} unit_sectors={} pieces_waiting={pieces} lanes_busy={busy} rmw={} rcw={} data_only={} rebuilt_reads={} read_retries={} units_synced={} gathered={}",
            core.region,
            core.aios.len(),
            core.unit_sectors,
            s.rmw.load(Ordering::Relaxed),
            s.rcw.load(Ordering::Relaxed),
            s.data_only.load(Ordering::Relaxed),
            s.rebuilt_reads.load(Ordering::Relaxed),
            s.read_retries.load(Ordering::Relaxed),
            s.units_synced.load(Ordering::Relaxed),
            s.gathered.load(Ordering::Relaxed),
        )?;
        for (key, get) in [
            (" reads=", (|l: &Leg| &l.reads) as fn(&Leg) -> &AtomicU64),
            (" writes=", |l: &Leg| &l.writes),
        ] {
            out.write_str(key)?;
            for (i, leg) in core.legs.iter().enumerate() {
                if i > 0 {
                    out.write_char(',')?;
                }
                write!(out, "{}", get(leg).load(Ordering::Relaxed))?;
            }
        }
        Ok(())
    }

    fn message(&self, name: &str, message: &str, _suspended: bool, reply: &mut Reply) -> Result {
        let core = &self.core;
        let word = message.trim();
        let degraded = core.failed() != 0;
        let st = core.state.lock();
        let pass = st.pass.pass;
        drop(st);
        match word {
            "check" | "repair" => {
                if degraded {
                    return fail!(reply, EBUSY, "{name}: '{word}' needs every leg alive (a leg is dead)");
                }
                if let Some(p) = pass {
                    return fail!(reply, EBUSY, "{name}: '{word}' while '{}' runs; 'idle' stops a check or repair", p.action());
                }
                let p = if word == "check" { Pass::Check } else { Pass::Repair };
                Core::start_pass(core, p);
                Ok(())
            }
            "resync" => {
                if degraded {
                    return fail!(reply, EBUSY, "{name}: 'resync' needs every leg alive (a leg is dead)");
                }
                if matches!(pass, Some(Pass::Recover(_))) {
                    return fail!(reply, EBUSY, "{name}: 'resync' while a leg is being rebuilt");
                }
                Core::start_pass(core, Pass::Resync);
                Ok(())
            }
            "idle" | "recover" => {
                let mut st = core.state.lock();
                if word == "idle" && matches!(st.pass.pass, Some(Pass::Check | Pass::Repair)) {
                    st.pass.pass = None;
                }
                st.pass.frozen = false;
                drop(st);
                core.worker.kick(core);
                Ok(())
            }
            "frozen" => {
                core.state.lock().pass.frozen = true;
                Ok(())
            }
            _ => fail!(
                reply,
                EINVAL,
                "{name}: unknown message '{}' (raid takes check, repair, resync, recover, idle, frozen)",
                crate::vblk::message::first_word(message)
            ),
        }
    }
}
