// SPDX-License-Identifier: GPL-2.0
//! `mirror <log type> <#log args> <log args>... <#mirrors> (<dev> <offset>)... [<#features> <features>...]`:
//! RAID1 with dm-raid1's syntax, status and disk log format.
//!
//! Every write goes to every live leg; the request completes when all
//! did. Regions (the log's unit, tracked by the framework's `RegionMap`)
//! have a pending-write count, a *sync* bit (the live legs hold the same
//! data) and, with a `disk` log (the framework's `DirtyLog` in dm's
//! format, written through its block cache), a *clean* bit on the log
//! device: before the first write to a clean region its bit is cleared
//! and the log written (FUA) — only then does the data go out — and once
//! the region is idle again and the legs were flushed, the bit is set
//! lazily by the daemon (or before a FLUSH completes). After an unclean
//! shutdown the regions whose bit is still clear are exactly the ones to
//! resync.
//!
//! Resync copies out-of-sync regions from the *source* leg to the other
//! live legs in the background, one region at a time, with the
//! framework's copy service. The source is leg 0
//! (dm's default mirror) until it fails; then the first surviving leg
//! takes over, and a disk log records which leg that is (after dm's
//! header) before any write that skipped the failed leg completes, so a
//! reload with the failed leg back never copies it over the good one. A
//! region being copied holds writes to it ([`HeldIo`]: parked, mapped
//! again when the copy ends), and the copy starts only once the writes
//! already in flight there drained, so copy and writes never interleave.
//! It yields to user I/O between chunks (throttling).
//!
//! Reads of in-sync regions are balanced round-robin over the live legs
//! (dm reads only its default leg); out-of-sync regions are read from
//! the source. A failed read marks the leg failed and is retried on another
//! leg (readahead excepted: its failures fail nothing, as in dm); a
//! failed write marks the leg failed and succeeds if another leg took it.
//! Failed legs get no more I/O; regions written meanwhile stay dirty in
//! the log, so a reloaded table resyncs them.
//!
//! Nothing waits in `map`: a write whose dirty mark is not on disk yet is
//! held, and the mirror's daemon (a [`Job`] on the mirror's own worker
//! queue) writes the log once for every such write, then sends them to
//! the legs. The daemon also cleans and starts the next region copy; the
//! copies run on the same worker. Stopping the mirror waits until both
//! have returned, so nothing of the mirror outlives its table (REMOVE
//! closes the legs, `rmmod` is safe).

use super::mirror_args::{
    self, Device, Log, LogHealth, MirrorArgs, READ_ERROR, SYNC_ERROR, WRITE_ERROR,
};
use super::mirror_log::{self, SyncMode};
use super::{Ctor, Done, EndIo, Io, Mapped, Target};
use crate::sys::bdev::{BlockDevice, IoBuffer};
use crate::sys::disk::{Op, RqInfo, Status, QUEUE_DEPTH};
use crate::sys::event::EventCounter;
use crate::sys::workqueue::{Deferred, Job, NoIoScope, OwnedQueue};
use crate::vblk::copy::{Copier, CopyClient, CopyJob, CopyResult};
use crate::vblk::io::HeldIo;
use crate::vblk::message::fail;
use crate::vblk::peers::PeerRef;
use crate::vblk::region::{
    region_state, region_state_bytes, DirtyLog, DiskLog, LogWriter, RegionMap,
};
use crate::vblk::slots::Slots;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use kernel::error::code::{EBUSY, EINVAL, ENOMEM};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

/// Most regions a line may have: the per-region state is 1 byte of
/// pending count and 3 bits (sync, clean, touched) in memory.
const MAX_REGIONS: u32 = 1 << 22;
/// Bytes read per step when a failed read is retried on another leg.
const COPY_BYTES: usize = 64 * 1024;
/// `Core::log_health` values: alive, a write failed (`D`), a flush
/// failed (`F`).
const LOG_ALIVE: u8 = 0;
const LOG_WRITE_FAILED: u8 = 1;
const LOG_FLUSH_FAILED: u8 = 2;

/// Registry kind of disk log claims, keyed by the log device.
const LOG_CLAIM: &str = "mirror-log";

/// Which device's mirror a disk log belongs to.
struct LogOwner {
    device: u32,
}

/// One leg: a lower device area and its health.
struct Leg {
    dev: Arc<BlockDevice>,
    offset: u64,
    /// `WRITE_ERROR | FLUSH_ERROR | SYNC_ERROR | READ_ERROR`; a leg with
    /// any error is failed and gets no more I/O.
    errors: AtomicU32,
    /// Reads mapped to this leg (pieces of requests, and retries).
    reads: AtomicU64,
    /// Writes mapped to this leg.
    writes: AtomicU64,
}

impl Leg {
    fn alive(&self) -> bool {
        self.errors.load(Ordering::Acquire) == 0
    }
}

/// Region state, under [`Core::state`].
struct State {
    /// Writes in flight, sync bits, the region being recovered.
    regions: RegionMap,
    /// The log's image (dm's disk log format; empty for `core`): clean
    /// bits and the source record.
    log: DirtyLog,
    /// The source leg `log` records, and the generation that recorded it
    /// (a write that skipped a failed source completes only after it).
    log_source: u32,
    source_gen: u64,
    /// The copy of the region being recovered went to the copier, from
    /// leg `copy_src` to the legs of `copy_legs` (a bit each, in the
    /// job's order).
    copying: bool,
    copy_src: usize,
    copy_legs: u32,
    /// The table went live once (the log was read).
    loaded: bool,
    /// The resync must stop (suspend, removal).
    stop: bool,
    /// The suspend stopping the mirror is `noflush`: writes held for a
    /// copy are requeued rather than mapped again.
    noflush: bool,
    /// The daemon should clean (a region went idle, a copy ended).
    clean_wanted: bool,
    /// An event was raised for the mirror being in sync.
    sync_reported: bool,
    /// Writes held until their dirty marks are on disk or the copy of
    /// their region ended, and FLUSHes until the log is clean: a slot per
    /// request the disk may have (its tags, and the flush machinery's own
    /// request).
    held: Slots<Held>,
}

/// A write piece the mirror holds, and what it waits for.
struct Held {
    io: HeldIo,
    wait: Wait,
}

enum Wait {
    /// The copy of the region being recovered (nothing was counted yet:
    /// the piece is mapped again).
    Copy,
    /// Log generation `.0` on disk (its regions are counted and dirty:
    /// the piece goes to the legs as it is).
    Log(u64),
    /// An empty FLUSH: completes once the clean state of idle regions is
    /// on disk.
    Flush,
}

#[pin_data]
struct Core {
    args: MirrorArgs<'static>,
    length: u64,
    legs: KVec<Leg>,
    /// Writes the disk log (`None` for a core log).
    log_writer: Option<Arc<LogWriter>>,
    /// This device's claim on the log device (no other device's mirror
    /// may use it while the claim lives).
    _log_claim: Option<PeerRef<LogOwner>>,
    events: Arc<EventCounter>,
    /// Round-robin position of balanced reads.
    next_read: AtomicU32,
    /// Every region is in sync (sync bits are only ever set once loaded),
    /// so reads need not take the state lock to look at them.
    fully_synced: AtomicBool,
    /// Requests mapped so far (the resync yields when it changes) and the
    /// value the resync saw last.
    io_seq: AtomicU64,
    seen_io: AtomicU64,
    /// Regions the resync copied since the table was loaded.
    copied: AtomicU64,
    /// Write pieces held for a region copy, and for their dirty marks
    /// (since the table was loaded).
    held_for_copy: AtomicU64,
    held_for_log: AtomicU64,
    /// Empty FLUSHes held until the log's clean bits were committed.
    held_for_flush: AtomicU64,
    /// The log's health: 0 alive, else the first failure (`LOG_*`).
    log_health: AtomicU8,
    /// The leg out-of-sync regions are read and copied from: leg 0 until
    /// it fails, then a surviving leg.
    source: AtomicU32,
    /// Where the daemon ([`Core::run`]) and the copies run.
    worker: Arc<OwnedQueue>,
    /// Copies regions for the resync.
    copier: Copier<Job<Core>>,
    #[pin]
    state: Mutex<State>,
}

/// A log of `nr` regions in dm's disk-log format (`bytes` of it, whole
/// blocks) on `dev`: the clean bits sit after dm's header. Raid5's
/// write-intent log uses the same format.
pub(super) fn dm_disk_log(dev: Arc<BlockDevice>, bytes: usize, nr: u32) -> DiskLog {
    DiskLog {
        dev,
        bytes,
        bits: mirror_log::BITSET_OFFSET
            ..mirror_log::BITSET_OFFSET + mirror_log::bitset_bytes(nr) as usize,
    }
}

/// The target: stops its background work when the table goes away.
pub(crate) struct Mirror {
    core: Arc<Job<Core>>,
}

/// Constructor listed in [`super::TYPES`].
pub(super) fn construct(ctor: &mut Ctor<'_>) -> Result<Arc<dyn Target>> {
    let parsed = match mirror_args::parse(ctor.args, ctor.length) {
        Ok(p) => p,
        Err(e) => return fail!(ctor.reply, EINVAL, "{e}"),
    };
    if parsed.nr_regions > MAX_REGIONS {
        return fail!(
            ctor.reply,
            EINVAL,
            "mirror: {} regions of {} sectors; at most {MAX_REGIONS} (use a larger region size)",
            parsed.nr_regions,
            parsed.region_size
        );
    }
    let mut legs = KVec::new();
    for &(text, offset) in parsed.legs() {
        let dev = ctor.open_device(text)?;
        let block = u64::from(dev.logical_block_size() >> 9).max(1);
        if u64::from(parsed.region_size) % block != 0 {
            return fail!(
                ctor.reply,
                EINVAL,
                "mirror: region size {} is not a multiple of the {}-byte logical blocks of '{text}'",
                parsed.region_size,
                block * 512
            );
        }
        let leg = Leg {
            dev,
            offset,
            errors: AtomicU32::new(0),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        };
        if legs.push(leg, GFP_KERNEL).is_err() {
            return fail!(ctor.reply, ENOMEM, "out of memory constructing mirror");
        }
    }
    check_overlaps(&legs, ctor.length, &parsed, ctor)?;
    let (log_dev, log_bytes) = match parsed.log {
        Log::Core => (None, 0),
        Log::Disk(text) => {
            let dev = ctor.open_device(text)?;
            let bytes = mirror_log::log_size_bytes(parsed.nr_regions, dev.logical_block_size())
                .unwrap_or(u64::MAX);
            if bytes > dev.sectors().saturating_mul(512) {
                return fail!(
                    ctor.reply,
                    EINVAL,
                    "mirror: log device '{text}' is too small: {} bytes for {} regions, it has {}",
                    bytes,
                    parsed.nr_regions,
                    dev.sectors() * 512
                );
            }
            for (i, leg) in legs.iter().enumerate() {
                if leg.dev.devt() == dev.devt() && leg.offset < bytes.div_ceil(512) {
                    return fail!(
                        ctor.reply,
                        EINVAL,
                        "mirror: leg {i} overlaps the log area (sectors 0..{}) of '{text}'",
                        bytes.div_ceil(512)
                    );
                }
            }
            (Some(dev), bytes as usize)
        }
    };
    // One disk log per device: a second vblk device's mirror writing the
    // same log would corrupt both (dm does not notice). A reload of the
    // same device shares the claim with the table it replaces.
    let log_claim = match (&log_dev, parsed.log) {
        (Some(dev), Log::Disk(text)) => {
            let owner = ctor.device;
            let claim = ctor.peers.acquire(LOG_CLAIM, u64::from(dev.devt()), || {
                Ok(Arc::new(LogOwner { device: owner }, GFP_KERNEL)?)
            });
            match claim {
                Ok(c) if c.get().is_some_and(|o| o.device == owner) => Some(c),
                Ok(c) => {
                    let other = c.get().map_or(0, |o| o.device);
                    return fail!(
                        ctor.reply,
                        EBUSY,
                        "mirror: log device '{text}' is the disk log of another device's mirror (vblk{other})"
                    );
                }
                Err(e) => return fail!(ctor.reply, e, "mirror: cannot claim log device '{text}'"),
            }
        }
        _ => None,
    };
    let nr = parsed.nr_regions;
    let disk_log = log_dev.map(|dev| dm_disk_log(dev, log_bytes, nr));
    ctor.charge(
        region_state_bytes(nr, disk_log.as_ref()),
        "mirror: the region state",
    )?;
    let Ok((regions, log, log_writer)) =
        region_state(parsed.region_size, nr, ctor.length, disk_log)
    else {
        return fail!(
            ctor.reply,
            ENOMEM,
            "out of memory for the mirror's region state"
        );
    };
    let (length, events) = (ctor.length, ctor.events.clone());
    let queue = OwnedQueue::new(kernel::c_str!("vblk_mirror"));
    let Ok(worker) = queue.and_then(|q| Ok(Arc::new(q, GFP_KERNEL)?)) else {
        return fail!(
            ctor.reply,
            ENOMEM,
            "out of memory for the mirror's workqueue"
        );
    };
    let (Ok(copier), Ok(held)) = (
        Copier::new(&worker, 1, 1),
        Slots::new(QUEUE_DEPTH as usize + 1),
    ) else {
        return fail!(ctor.reply, ENOMEM, "out of memory for the mirror's resync");
    };
    let core = Job::new(pin_init!(Core {
        args: parsed.detached(),
        length,
        legs,
        log_writer,
        _log_claim: log_claim,
        events,
        next_read: AtomicU32::new(0),
        fully_synced: AtomicBool::new(false),
        io_seq: AtomicU64::new(0),
        seen_io: AtomicU64::new(0),
        copied: AtomicU64::new(0),
        held_for_copy: AtomicU64::new(0),
        held_for_log: AtomicU64::new(0),
        held_for_flush: AtomicU64::new(0),
        log_health: AtomicU8::new(LOG_ALIVE),
        source: AtomicU32::new(0),
        worker,
        copier,
        state <- kernel::new_mutex!(
            State {
                regions,
                log,
                log_source: 0,
                source_gen: 0,
                copying: false,
                copy_src: 0,
                copy_legs: 0,
                loaded: false,
                stop: true,
                noflush: false,
                clean_wanted: false,
                sync_reported: false,
                held,
            },
            "vblk::Mirror::state"
        ),
    }));
    let Ok(core) = Arc::pin_init(core, GFP_KERNEL) else {
        return fail!(ctor.reply, ENOMEM, "out of memory constructing mirror");
    };
    match Arc::new(Mirror { core }, GFP_KERNEL) {
        Ok(t) => Ok(t),
        Err(_) => fail!(ctor.reply, ENOMEM, "out of memory constructing mirror"),
    }
}

/// Refuses legs that share sectors of one device.
fn check_overlaps(legs: &[Leg], length: u64, args: &MirrorArgs<'_>, ctor: &mut Ctor<'_>) -> Result {
    for (i, a) in legs.iter().enumerate() {
        for (j, b) in legs.iter().enumerate().skip(i + 1) {
            let apart = a.offset.saturating_add(length) <= b.offset
                || b.offset.saturating_add(length) <= a.offset;
            if a.dev.devt() == b.dev.devt() && !apart {
                return fail!(
                    ctor.reply,
                    EINVAL,
                    "mirror: legs {i} and {j} overlap on '{}' ({} and {})",
                    args.legs()[i].0,
                    a.offset,
                    b.offset
                );
            }
        }
    }
    Ok(())
}

impl Core {
    fn region_size(&self) -> u32 {
        self.args.region_size
    }

    fn nr_regions(&self) -> u64 {
        u64::from(self.args.nr_regions)
    }

    fn log_dev(&self) -> Option<&Arc<BlockDevice>> {
        self.log_writer.as_ref().map(|w| w.dev())
    }

    fn any_leg_failed(&self) -> bool {
        self.legs.iter().any(|l| !l.alive())
    }

    /// Marks `leg` failed (any context); a failed source hands over to
    /// the first live leg.
    fn fail_leg(&self, leg: usize, error: u32) {
        let Some(l) = self.legs.get(leg) else { return };
        if l.errors.fetch_or(error, Ordering::AcqRel) != 0 {
            return;
        }
        if let Some(next) = self.legs.iter().position(Leg::alive) {
            let _ = self.source.compare_exchange(
                leg as u32,
                next as u32,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        self.events.bump();
    }

    /// The source leg, if it is alive (else no leg is).
    fn live_source(&self) -> Option<usize> {
        let src = self.source.load(Ordering::Acquire) as usize;
        self.legs[src].alive().then_some(src)
    }

    /// Records the current source in the disk log buffer if it changed
    /// (a new generation that writes must wait for); returns the
    /// generation that holds it.
    fn note_source(&self, st: &mut State) -> u64 {
        let src = self.source.load(Ordering::Acquire);
        if self.log_writer.is_some() && st.log_source != src {
            let leg = &self.legs[src as usize];
            let rec = mirror_log::SourceRecord {
                leg: src,
                devt: leg.dev.devt(),
                offset: leg.offset,
            };
            if mirror_log::write_source(&rec, st.log.image_mut()).is_ok() {
                st.log_source = src;
                st.source_gen = st.log.changed_for_writes();
            }
        }
        st.source_gen
    }

    /// A live leg other than those in `tried` (a bit per leg) for a
    /// balanced read, round-robin.
    fn pick_leg(&self, tried: u32) -> Option<usize> {
        let n = self.legs.len() as u32;
        let start = self.next_read.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| ((start.wrapping_add(k)) % n) as usize)
            .find(|&i| tried & (1 << i) == 0 && self.legs[i].alive())
    }

    /// Whether every region of `[offset, offset + len)` is in sync.
    fn all_in_sync(&self, offset: u64, len: u64) -> bool {
        if self.fully_synced.load(Ordering::Acquire) {
            return true;
        }
        self.state.lock().regions.all_in_sync(offset, len)
    }

    /// The log generation on disk (a core log has them all).
    fn log_written(&self) -> u64 {
        self.log_writer.as_ref().map_or(u64::MAX, |w| w.written())
    }

    /// Writes the disk log if its generation `want` is not on disk yet
    /// (writers that dirtied regions together share one write). A failed
    /// write counts as written: the log is failed (status shows it) and
    /// writes go on without it, as in dm.
    fn commit_log(&self, want: u64) {
        let Some(writer) = &self.log_writer else {
            return;
        };
        let result = writer.commit(want, |buf| self.state.lock().log.snapshot(buf));
        if result.is_err() {
            self.fail_log(LOG_WRITE_FAILED);
        }
    }

    /// Records the log's first failure (any context) and raises an event.
    fn fail_log(&self, how: u8) {
        let first =
            self.log_health
                .compare_exchange(LOG_ALIVE, how, Ordering::AcqRel, Ordering::Acquire);
        if first.is_ok() {
            self.events.bump();
        }
    }

    fn log_health(&self) -> LogHealth {
        match self.log_health.load(Ordering::Acquire) {
            LOG_ALIVE => LogHealth::Alive,
            LOG_FLUSH_FAILED => LogHealth::FlushFailed,
            _ => LogHealth::Failed,
        }
    }

    /// Reads the log (disk) or sets the sync bits (core) the first time
    /// the table goes live.
    fn load(&self) {
        let nr = self.args.nr_regions;
        let Some(writer) = &self.log_writer else {
            let all = self.args.sync == SyncMode::No;
            let mut st = self.state.lock();
            let in_sync = if all { u64::from(nr) } else { 0 };
            st.regions.load_sync(None, all, in_sync);
            self.fully_synced.store(all, Ordering::Release);
            st.loaded = true;
            return;
        };
        let mut gen = 0;
        writer.read(|disk, read_ok| gen = self.load_image(disk, read_ok));
        self.commit_log(gen);
    }

    /// Takes the disk log read at the first resume (`read_ok`: the read
    /// worked): dm's resume rules, the recorded source, the sync bits.
    /// Returns the generation to write back.
    fn load_image(&self, disk: &[u8], read_ok: bool) -> u64 {
        let nr = self.args.nr_regions;
        let mut st = self.state.lock();
        let buf = st.log.image_mut();
        let n = buf.len().min(disk.len());
        buf[..n].copy_from_slice(&disk[..n]);
        let resumed = mirror_log::resume(buf, nr, self.args.sync, read_ok);
        let (in_sync, failed, from_disk) = match resumed {
            Ok(r) => (r.in_sync, r.failed, r.from_disk),
            Err(_) => (0, true, 0),
        };
        // The leg that holds the good copy, if an earlier table recorded
        // one (only in a log whose regions were kept).
        let rec = mirror_log::read_source(buf).filter(|_| from_disk > 0);
        let mut legs = [(0u32, 0u64); mirror_args::MAX_MIRRORS];
        for (slot, leg) in legs.iter_mut().zip(self.legs.iter()) {
            *slot = (leg.dev.devt(), leg.offset);
        }
        let source = mirror_log::choose_source(rec, &legs[..self.legs.len()]);
        self.source.store(source as u32, Ordering::Release);
        if failed {
            self.fail_log(LOG_WRITE_FAILED);
        }
        let st = &mut *st;
        st.regions.load_sync(st.log.clean_bits(), false, in_sync);
        // From the bits themselves: reads trust the flag over them.
        self.fully_synced
            .store(st.regions.all_synced(), Ordering::Release);
        st.log_source = u32::MAX;
        self.note_source(st);
        st.loaded = true;
        st.log.changed()
    }

    /// Takes a pending count on each region of a write (the resync does
    /// not copy a region with writes in flight) and clears the clean bits
    /// of those that had one. Returns the log generation that must be on
    /// disk before the write goes out (its regions' dirty marks, whoever
    /// made them, and the current source), or 0.
    fn begin_write(&self, st: &mut State, offset: u64, len: u64) -> u64 {
        st.regions.begin_write(offset, len);
        st.log.mark_dirty(st.regions.regions(offset, len));
        self.note_source(st);
        st.log.dirty_gen()
    }

    /// Drops the pending counts of a finished write. Returns whether a
    /// region became idle (a clean may follow, or the copy waiting for it
    /// may start) and the log generation that records the current source
    /// (the write may have skipped a failed source: it completes once the
    /// log says so).
    fn end_write(&self, offset: u64, len: u64) -> (bool, u64) {
        let mut st = self.state.lock();
        let idle = st.regions.end_write(offset, len);
        (idle, self.note_source(&mut st))
    }

    /// Sends a write (or discard) piece to every live leg; its regions'
    /// counts are taken ([`Core::begin_write`]) and dropped in `finish`.
    fn issue_write(&self, mut io: Io<'_>) -> Mapped {
        let (offset, len) = (io.offset(), io.len());
        // First: `finish` must see the piece even if no leg is left.
        io.finish_later();
        if !self.legs.iter().any(Leg::alive) {
            return io.kill(Status::IO_ERROR);
        }
        for (i, l) in self.legs.iter().enumerate() {
            if !l.alive() {
                continue;
            }
            l.writes.fetch_add(1, Ordering::Relaxed);
            if io.op() == Op::Discard {
                io.remap_range(&l.dev, l.offset + offset, len, i as u32);
            } else {
                io.remap_part(0, len, &l.dev, l.offset + offset, i as u32);
            }
        }
        io.remapped()
    }

    /// Parks a write piece until `wait` is over (under the state lock, so
    /// the daemon or the copy's end cannot miss it). There is a slot for
    /// every request the disk may have in flight, each with one piece of
    /// this line: the requeue is a safety net (for a piece nothing was
    /// counted for yet: a `Log` piece is counted, and held only in a free
    /// slot, as `map` checks).
    fn hold(&self, st: &mut State, io: Io<'_>, wait: Wait) -> Mapped {
        if st.held.len() >= st.held.capacity() {
            return io.requeue();
        }
        let counter = match wait {
            Wait::Copy => &self.held_for_copy,
            Wait::Log(_) => &self.held_for_log,
            Wait::Flush => &self.held_for_flush,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let (held, mapped) = io.hold();
        if let Err(h) = st.held.put(Held { io: held, wait }) {
            h.io.kill(Status::IO_ERROR);
        }
        mapped
    }

    /// Takes out the oldest held write `pick` selects.
    fn take_held(&self, pick: impl Fn(&Wait) -> bool) -> Option<HeldIo> {
        self.state
            .lock()
            .held
            .take_oldest(|h| pick(&h.wait))
            .map(|h| h.io)
    }

    /// The daemon's part for writes waiting for their dirty marks: writes
    /// the log once for all of them, then sends them to the legs.
    fn commit_held_writes(&self) {
        loop {
            let want = {
                let st = self.state.lock();
                if !st.held.any(|h| matches!(h.wait, Wait::Log(_))) {
                    return;
                }
                st.log.dirty_gen()
            };
            self.commit_log(want);
            let written = self.log_written();
            while let Some(io) = self.take_held(|w| matches!(*w, Wait::Log(g) if g <= written)) {
                io.submit_with(|io| self.issue_write(io));
            }
        }
    }

    /// The daemon's part for held FLUSHes: cleans (the legs flushed, the
    /// clean bits of idle regions written), then completes them.
    fn commit_flushes(&self) {
        if !self
            .state
            .lock()
            .held
            .any(|h| matches!(h.wait, Wait::Flush))
        {
            return;
        }
        self.clean();
        while let Some(io) = self.take_held(|w| matches!(w, Wait::Flush)) {
            io.submit_with(|io| io.complete());
        }
    }

    /// Lets the writes held for a region copy go (the copy ended or never
    /// started): mapped again, or requeued during a `noflush` suspend.
    fn release_copy_waiters(&self) {
        while let Some(io) = self.take_held(|w| matches!(w, Wait::Copy)) {
            if self.state.lock().noflush {
                io.requeue();
            } else {
                io.redispatch();
            }
        }
    }

    /// Picks the next out-of-sync region to copy and, once no write to it
    /// is in flight, the job that copies it from the source to the other
    /// live legs (new writes to it are held meanwhile). `None` if there is
    /// nothing to do now: done, stopped, a copy running, or writes to wait
    /// for (the last of them kicks the daemon).
    fn next_copy(&self) -> Option<CopyJob> {
        let mut st = self.state.lock();
        if st.stop || st.copying {
            return None;
        }
        let Some(src) = self.live_source() else {
            // No leg left to copy from: the writes held for the copy go.
            st.regions.abort_recovery();
            return None;
        };
        let r = st.regions.next_recovery()?;
        if !st.regions.idle(r) {
            return None;
        }
        let (start, len) = st.regions.extent(r);
        let from = &self.legs[src];
        let mut job = CopyJob::new(&from.dev, from.offset + start, len, r);
        let mut legs = 0u32;
        for (i, leg) in self.legs.iter().enumerate() {
            if i != src && leg.alive() && job.to(&leg.dev, leg.offset + start).is_ok() {
                legs |= 1 << i;
            }
        }
        st.copying = true;
        st.copy_src = src;
        st.copy_legs = legs;
        Some(job)
    }

    /// Stops the resync (a copy running ends after its chunk) and lets the
    /// writes it held go. With `interruptible`, a signal ends the wait
    /// (`EINTR`; a resume restarts it): a copy can hang on a hung leg, and
    /// SUSPEND must not hang with it.
    fn stop_resync(&self, interruptible: bool) -> Result {
        self.state.lock().stop = true;
        self.copier.stop(interruptible)?;
        self.state.lock().regions.abort_recovery();
        self.release_copy_waiters();
        Ok(())
    }

    /// Sets the clean bit of every region in sync without writes in
    /// flight whose data the legs' flush made durable, and writes the log.
    /// Not while a leg is failed: its regions must stay dirty for the
    /// resync after it is replaced.
    fn clean(&self) {
        if self.log_writer.is_none() || self.any_leg_failed() {
            return;
        }
        {
            let mut st = self.state.lock();
            if !st.regions.any_to_clean(&st.log) {
                return;
            }
            st.regions.untouch_all();
        }
        for (i, leg) in self.legs.iter().enumerate() {
            if leg.alive() && leg.dev.flush().is_err() {
                self.fail_leg(i, mirror_args::FLUSH_ERROR);
            }
        }
        if self.any_leg_failed() {
            return;
        }
        let gen = {
            let mut st = self.state.lock();
            let st = &mut *st;
            let regions = &st.regions;
            st.log.mark_clean(regions.nr(), |r| regions.cleanable(r))
        };
        if let Some(gen) = gen {
            self.commit_log(gen);
        }
    }

    /// Re-reads a failed read piece from another live leg.
    fn retry_read(&self, done: &mut Done<'_>, mut tried: u32) {
        let (offset, len) = (done.offset(), done.len());
        if !self.all_in_sync(offset, len) {
            return done.fail(Status::IO_ERROR);
        }
        // GFP_NOIO: a completion, maybe of the very writeback reclaim
        // would wait for.
        let noio = NoIoScope::enter();
        let allocated = IoBuffer::new(COPY_BYTES);
        drop(noio);
        let Ok(mut buf) = allocated else {
            return done.fail(Status::IO_ERROR);
        };
        let step = (COPY_BYTES / 512) as u64;
        while let Some(leg) = self.pick_leg(tried) {
            let l = &self.legs[leg];
            l.reads.fetch_add(1, Ordering::Relaxed);
            let mut at = 0;
            let mut ok = true;
            while at < len {
                let n = (len - at).min(step);
                let bytes = (n * 512) as usize;
                if l.dev
                    .read_at(l.offset + offset + at, &mut buf, 0..bytes)
                    .is_err()
                {
                    ok = false;
                    break;
                }
                done.write(at * 512, &buf[..bytes]);
                at += n;
            }
            if ok {
                return;
            }
            self.fail_leg(leg, READ_ERROR);
            tried |= 1 << leg;
        }
        done.fail(Status::IO_ERROR);
    }

    fn write_dev(&self, out: &mut dyn Write, d: Device) -> fmt::Result {
        let dev = match d {
            Device::Log => self.log_dev().map(|d| &**d),
            Device::Leg(i) => self.legs.get(i).map(|l| &*l.dev),
        };
        match dev {
            Some(dev) => super::write_device(out, dev),
            None => Ok(()),
        }
    }
}

/// Writes `key` and one counter per leg, comma-separated.
fn write_per_leg(
    out: &mut dyn Write,
    key: &str,
    legs: &[Leg],
    counter: fn(&Leg) -> &AtomicU64,
) -> fmt::Result {
    out.write_str(key)?;
    for (i, leg) in legs.iter().enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        write!(out, "{}", counter(leg).load(Ordering::Relaxed))?;
    }
    Ok(())
}

/// The mirror's daemon, on its worker: writes held for their dirty marks,
/// the cleaner, and the next region copy.
impl Deferred for Core {
    fn run(core: &Arc<Job<Core>>) {
        core.commit_held_writes();
        let clean = core.log_writer.is_some() && {
            let mut st = core.state.lock();
            !st.stop && core::mem::take(&mut st.clean_wanted)
        };
        if clean {
            core.clean();
        }
        core.commit_flushes();
        match core.next_copy() {
            Some(job) => {
                if core.copier.submit(core, job).is_err() {
                    // Stopped meanwhile: the region stays out of sync.
                    let mut st = core.state.lock();
                    st.copying = false;
                    st.regions.abort_recovery();
                    drop(st);
                    core.release_copy_waiters();
                }
            }
            None => {
                if core.state.lock().regions.recovering().is_none() {
                    core.release_copy_waiters();
                }
            }
        }
    }
}

/// Region copies report here (on the mirror's worker).
impl CopyClient for Job<Core> {
    fn copy_done(this: &Arc<Self>, region: u64, result: CopyResult) {
        let mut st = this.state.lock();
        let (src, legs) = (st.copy_src, st.copy_legs);
        st.copying = false;
        if result.aborted {
            st.regions.abort_recovery();
        }
        drop(st);
        if result.read_failed {
            this.fail_leg(src, READ_ERROR);
        }
        // Destination k of the job is the k-th leg of `legs`.
        for (k, leg) in (0..this.legs.len())
            .filter(|i| legs & (1 << i) != 0)
            .enumerate()
        {
            if result.write_failed.failed(k) {
                this.fail_leg(leg, SYNC_ERROR);
            }
        }
        let mut st = this.state.lock();
        if !result.aborted {
            st.regions.end_recovery(region, result.complete());
        }
        // The event goes with the status that shows it.
        if st.regions.in_sync() >= this.nr_regions() {
            this.fully_synced.store(true, Ordering::Release);
            if !st.sync_reported {
                st.sync_reported = true;
                this.events.bump();
            }
        }
        if result.complete() {
            st.clean_wanted = true;
        }
        drop(st);
        if result.complete() {
            this.copied.fetch_add(1, Ordering::Relaxed);
        }
        this.release_copy_waiters();
        // The next region.
        this.worker.kick(this);
    }

    fn busy(&self) -> bool {
        // User I/O mapped since the last look: yield to it.
        let now = self.io_seq.load(Ordering::Relaxed);
        self.seen_io.swap(now, Ordering::Relaxed) != now
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let core = &self.core;
        let _ = core.stop_resync(false);
        // Nothing kicks the daemon any more (no I/O, the resync stopped):
        // wait until it left, so the last reference is ours.
        core.worker.flush();
    }
}

impl Target for Mirror {
    fn map(&self, mut io: Io<'_>) -> Mapped {
        let core = &*self.core;
        core.io_seq.fetch_add(1, Ordering::Relaxed);
        let (offset, len) = (io.offset(), io.len());
        match io.op() {
            Op::Read => {
                let leg = if core.all_in_sync(offset, len) {
                    core.pick_leg(0)
                } else {
                    core.live_source()
                };
                let Some(leg) = leg else {
                    return io.kill(Status::IO_ERROR);
                };
                let l = &core.legs[leg];
                l.reads.fetch_add(1, Ordering::Relaxed);
                io.remap_part(0, len, &l.dev, l.offset + offset, leg as u32);
                io.remapped()
            }
            Op::Write | Op::Discard => {
                if !core.legs.iter().any(Leg::alive) {
                    return io.kill(Status::IO_ERROR);
                }
                let mut st = core.state.lock();
                if st.regions.recovering_in(offset, len) || st.held.len() >= st.held.capacity() {
                    // Being copied (or about to be): after the copy.
                    return core.hold(&mut st, io, Wait::Copy);
                }
                let gen = core.begin_write(&mut st, offset, len);
                if gen > core.log_written() {
                    // Its dirty mark is not on disk yet: the daemon writes
                    // the log, then sends it.
                    let mapped = core.hold(&mut st, io, Wait::Log(gen));
                    drop(st);
                    core.worker.kick(&self.core);
                    return mapped;
                }
                drop(st);
                core.issue_write(io)
            }
            Op::WriteZeroes | Op::Other => io.kill(Status::NOT_SUPPORTED),
            // With a disk log (`wants_flush`): the clean bits of idle
            // regions go to disk before the FLUSH completes.
            Op::Flush => {
                let mut st = core.state.lock();
                let mapped = core.hold(&mut st, io, Wait::Flush);
                drop(st);
                core.worker.kick(&self.core);
                mapped
            }
        }
    }

    fn wants_flush(&self) -> bool {
        self.core.log_writer.is_some()
    }

    /// The tag is the leg.
    fn end_io(&self, info: &RqInfo, leg: u32, status: Status) -> EndIo {
        if status.is_ok() {
            return EndIo::Done(status);
        }
        let core = &*self.core;
        let leg = leg as usize;
        if info.flags.readahead() {
            // Readahead may fail for reasons of its own (a zero target
            // fails it on purpose): the leg is not at fault, nothing is
            // retried.
            return EndIo::Done(status);
        }
        if info.op == Op::Read {
            core.fail_leg(leg, READ_ERROR);
            return EndIo::Retry;
        }
        if status == Status::NOT_SUPPORTED {
            // A discard a leg does not take: not a failed leg (dm).
            return EndIo::Done(status);
        }
        core.fail_leg(leg, WRITE_ERROR);
        if core.legs.iter().any(Leg::alive) {
            EndIo::Done(Status::OK)
        } else {
            EndIo::Done(Status::IO_ERROR)
        }
    }

    fn finish(&self, done: &mut Done<'_>) {
        let core = &self.core;
        match done.info().op {
            Op::Read if done.retry_requested() => {
                // The failed leg is marked; any other is worth a try.
                let failed = core
                    .legs
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| !l.alive())
                    .fold(0u32, |m, (i, _)| m | (1 << i));
                core.retry_read(done, failed);
            }
            Op::Write | Op::Discard => {
                let (idle, source_gen) = core.end_write(done.offset(), done.len());
                core.commit_log(source_gen);
                if idle {
                    // A clean may follow, or the copy waiting for the
                    // region start.
                    core.state.lock().clean_wanted = true;
                    core.worker.kick(core);
                }
            }
            _ => {}
        }
    }

    fn flush_failed(&self, dev: &BlockDevice, status: Status) -> Status {
        let core = &*self.core;
        if core.log_dev().is_some_and(|l| l.devt() == dev.devt()) {
            core.fail_log(LOG_FLUSH_FAILED);
        }
        for (i, leg) in core.legs.iter().enumerate() {
            if leg.dev.devt() == dev.devt() {
                core.fail_leg(i, mirror_args::FLUSH_ERROR);
            }
        }
        // What was written is on the live legs (dm: a flush fails only
        // when every leg failed).
        if core.legs.iter().any(Leg::alive) {
            Status::OK
        } else {
            status
        }
    }

    fn resume(&self) {
        let core = &self.core;
        let loaded = core.state.lock().loaded;
        if !loaded {
            core.load();
        }
        let mut st = core.state.lock();
        st.stop = false;
        st.noflush = false;
        st.clean_wanted = true;
        drop(st);
        core.copier.start();
        core.worker.kick(core);
    }

    fn presuspend(&self, noflush: bool) -> Result {
        self.core.state.lock().noflush = noflush;
        self.core.stop_resync(true)
    }

    fn postsuspend(&self) {
        self.core.clean();
    }

    fn devices(&self, f: &mut dyn FnMut(&BlockDevice, u64, u64)) {
        for leg in self.core.legs.iter() {
            f(&leg.dev, leg.offset, self.core.length);
        }
    }

    fn supports_write_zeroes(&self) -> bool {
        false
    }

    fn table_args(&self, out: &mut dyn Write) -> fmt::Result {
        let core = &*self.core;
        core.args.write_table(out, &|o, d| core.write_dev(o, d))
    }

    fn status(&self, out: &mut dyn Write) -> fmt::Result {
        let core = &*self.core;
        let mut errors = [0u32; mirror_args::MAX_MIRRORS];
        for (e, leg) in errors.iter_mut().zip(core.legs.iter()) {
            *e = leg.errors.load(Ordering::Acquire);
        }
        let in_sync = core.state.lock().regions.in_sync();
        let health = core.log_health();
        core.args.write_status_info(
            out,
            &|o, d| core.write_dev(o, d),
            in_sync,
            &errors[..core.legs.len()],
            health,
        )
    }

    fn status_detail(&self, out: &mut dyn Write) -> fmt::Result {
        let core = &*self.core;
        let in_sync = core.state.lock().regions.in_sync();
        let synced = in_sync
            .saturating_mul(u64::from(core.region_size()))
            .min(core.length);
        write!(
            out,
            "sync_sectors={synced}/{} resync_copied={} held_for_copy={} held_for_log={} held_for_flush={}",
            core.length,
            core.copied.load(Ordering::Relaxed),
            core.held_for_copy.load(Ordering::Relaxed),
            core.held_for_log.load(Ordering::Relaxed),
            core.held_for_flush.load(Ordering::Relaxed)
        )?;
        write_per_leg(out, " reads=", &core.legs, |l| &l.reads)?;
        write_per_leg(out, " writes=", &core.legs, |l| &l.writes)?;
        if let Some(writer) = &core.log_writer {
            let (read, written) = writer.io_counts();
            write!(out, " log_blocks_read={read} log_blocks_written={written}")?;
        }
        Ok(())
    }
}
