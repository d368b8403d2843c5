// SPDX-License-Identifier: GPL-2.0
//! `snapshot-origin <origin>` and `snapshot <origin> <COW> <P|PO|N> <chunk>`:
//! copy-on-write snapshots with dm-snapshot's syntax, status and persistent
//! exception store ([`super::snapshot_store`]).
//!
//! A snapshot's *store* keeps, per origin chunk that changed since the
//! snapshot was taken, the COW chunk holding the old data (an
//! *exception*). A write through the origin first copies the old data of
//! every chunk it touches, for every live snapshot of that origin, with
//! the framework's copy service; the write is held ([`HeldIo`]) until
//! those copies are committed (the store's area written with
//! PREFLUSH|FUA), then mapped again. Each snapshot checks its own chunk
//! size over the whole write, so a snapshot added while the origin runs is
//! correct from its first write on (dm's origin splits writes by the chunk
//! size it knew at its last resume).
//!
//! A snapshot read goes to the COW chunk if there is an exception, else
//! to the origin; such origin reads are counted, and a chunk's exception
//! is used by origin writes only after the reads sent to the origin
//! before it was committed are over (they must see the old data). A
//! snapshot write copies the origin chunk first in the same way, then
//! goes to the COW device.
//!
//! The origin and its snapshots meet in the cross-device registry: the
//! origin's state is found by the origin device, a snapshot's store by
//! its COW device (so a reload of the snapshot keeps its store, and a
//! second device cannot use the same COW device). A store joins its
//! origin when its table first goes live (dm: exceptions are made only
//! once the snapshot is resumed) and leaves when its last table goes.

use super::snapshot_store::{
    self, ExceptionTable, Geometry, Header, Loaded, SnapshotArgs, StoreType,
};
use super::{write_device, Ctor, Done, EndIo, Io, Mapped, Target};
use crate::sys::bdev::{BlockDevice, IoBuffer, WriteFlags};
use crate::sys::disk::{Op, RqInfo, Status, QUEUE_DEPTH};
use crate::sys::event::{EventCounter, InFlight};
use crate::sys::workqueue::{Deferred, Job, NoIoScope, OwnedQueue};
use crate::vblk::copy::{Copier, CopyClient, CopyJob, CopyResult};
use crate::vblk::io::HeldIo;
use crate::vblk::message::fail;
use crate::vblk::peers::PeerRef;
use crate::vblk::slots::Slots;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::alloc::KVVec;
use kernel::error::code::{EBUSY, EINVAL, ENOMEM};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::{Arc, CondVar, Mutex};

mod merge;
mod origin;
pub(super) use merge::construct as construct_merge;
pub(super) use origin::construct as construct_origin;
use origin::{Need, OriginShared};

/// Registry kind of an origin's shared state, keyed by the origin device.
const ORIGIN_KIND: &str = "snapshot-origin";
/// Registry kind of a snapshot's store, keyed by the COW device.
const STORE_KIND: &str = "snapshot-cow";
/// Chunk copies one snapshot has in flight or waiting for their commit.
const MAX_PENDING: usize = 64;
/// Chunk copies one snapshot runs side by side (the copier's lanes).
const COPY_LANES: usize = 8;
/// Buckets of the count of snapshot reads sent to the origin (by chunk).
const TRACK_BUCKETS: usize = 256;
/// `end_io` tags: the COW device, or `TAG_TRACK + bucket` for a counted
/// origin read.
const TAG_COW: u32 = 0;
const TAG_TRACK: u32 = 1;
/// Exceptions the table holds at first (it grows in the worker).
const FIRST_EXCEPTIONS: u64 = 4096;
/// What a store holds when it is made (charged to the table): the first
/// exception table and the largest metadata area. The table grows in the
/// worker as exceptions come.
const STORE_BYTES: u64 = 16 * 8192 + snapshot_store::MAX_CHUNK_SECTORS * 512;
/// Snapshots one origin may have at once.
const MAX_SNAPSHOTS: usize = 32;

/// A chunk copy: origin chunk `old` to COW chunk `new`, and whether it
/// worked (once copied).
#[derive(Clone, Copy)]
struct Pending {
    old: u64,
    new: u64,
    ok: bool,
    /// No copy: a snapshot write covers the whole chunk and goes straight
    /// to `new` (dm's `start_full_bio`); committed when it completed.
    direct: bool,
}

/// The store's registry value: the store, for a reloaded table of the
/// same snapshot.
struct StoreSlot {
    store: Arc<Job<Store>>,
}

/// A snapshot's exception store and its copy machinery.
#[pin_data]
struct Store {
    /// The vblk device whose table made it.
    device: u32,
    /// A `snapshot-merge` store: its exceptions are copied back to the
    /// origin, last first; it never joins the origin's snapshots.
    merging: bool,
    origin_dev: Arc<BlockDevice>,
    cow: Arc<BlockDevice>,
    geo: Geometry,
    kind: StoreType,
    events: Arc<EventCounter>,
    origin: PeerRef<OriginShared>,
    worker: Arc<OwnedQueue>,
    copier: Copier<Job<Store>>,
    /// Snapshot reads in flight on the origin, by chunk bucket.
    tracked: [InFlight; TRACK_BUCKETS],
    /// Tables using the store (a reload has two for a while).
    users: AtomicU32,
    /// Chunks copied, snapshot writes held (since construction).
    chunks_copied: AtomicU64,
    held_writes: AtomicU64,
    /// The metadata area being filled (persistent stores).
    area_nr: AtomicU64,
    #[pin]
    area: Mutex<Area>,
    #[pin]
    state: Mutex<StoreState>,
    /// Notified after each commit (a direct snapshot write waits for its
    /// chunks' commit).
    #[pin]
    committed: CondVar,
}

/// The metadata area new exceptions go to (the worker's).
struct Area {
    /// Its image (`None` for a transient store).
    buf: Option<IoBuffer>,
    /// Which area, and how many entries it holds.
    nr: u64,
    entries: u64,
    /// The copies being committed (allocated up front).
    batch: Slots<Pending>,
}

struct StoreState {
    table: ExceptionTable<KVVec<u64>>,
    /// Where the next COW chunk comes from.
    alloc: Loaded,
    /// Copies in flight, and copies over and waiting for the commit.
    pending: Slots<Pending>,
    copied: Slots<Pending>,
    /// Chunks being committed: in the table, but origin writes wait until
    /// the snapshot reads sent to the origin before are over.
    committing: Slots<u64>,
    /// Snapshot writes waiting for their chunks' copies.
    held: Slots<HeldIo>,
    valid: bool,
    /// A `PO` snapshot's COW device filled on a snapshot write.
    overflow: bool,
    /// The header must be rewritten invalid.
    header_dirty: bool,
    /// Its table went live: origin writes copy for it (a merging store:
    /// the merge runs).
    active: bool,
    /// A merging store: where the merge of the last exception is.
    merge: merge::Step,
    /// The merge stopped on an error (status `Merge failed`).
    merge_failed: bool,
}

/// How starting a copy went.
enum Start {
    Started,
    /// No room for another copy now: wait for one to end.
    Busy,
    /// The COW device is full.
    Full,
}

impl CopyClient for Job<Store> {
    fn copy_done(this: &Arc<Self>, key: u64, result: CopyResult) {
        let mut st = this.state.lock();
        if this.merging {
            merge::copied(&mut st, result.complete());
        } else if let Some(mut p) = st.pending.take_oldest(|p| p.old == key) {
            p.ok = result.complete();
            // `copied` has room for every pending copy (`Store::room`).
            let _ = st.copied.put(p);
        }
        let last = st.pending.is_empty();
        drop(st);
        this.chunks_copied.fetch_add(1, Ordering::Relaxed);
        if last && !this.merging && !this.persistent() {
            // The last copy out of a transient store (a commit is a table
            // insert) commits here, on the copier's worker: one hand-off
            // less for a lone write. Under load the store's worker
            // commits copies in batches.
            <Store as Deferred>::run(this);
        } else {
            this.worker.kick(this);
        }
    }
}

impl Store {
    fn chunk_sectors(&self) -> u64 {
        self.geo.chunk_sectors
    }

    fn persistent(&self) -> bool {
        self.kind != StoreType::Transient
    }

    /// The chunks `[offset, offset + len)` touches.
    fn chunks(&self, offset: u64, len: u64) -> core::ops::RangeInclusive<u64> {
        let cs = self.chunk_sectors();
        offset / cs..=(offset + len.max(1) - 1) / cs
    }

    /// Whether `[offset, offset + len)` covers chunk `chunk` whole (a
    /// whole chunk of the origin).
    fn covers(&self, offset: u64, len: u64, chunk: u64) -> bool {
        let cs = self.chunk_sectors();
        let (start, end) = (chunk * cs, (chunk + 1) * cs);
        start >= offset && end <= offset + len && end <= self.origin_dev.sectors()
    }

    fn bucket(chunk: u64) -> usize {
        (chunk % TRACK_BUCKETS as u64) as usize
    }

    /// Whether a copy of `chunk` is under way or being committed.
    fn busy(st: &StoreState, chunk: u64) -> bool {
        st.pending.any(|p| p.old == chunk)
            || st.copied.any(|p| p.old == chunk)
            || st.committing.any(|&c| c == chunk)
    }

    /// Takes the next COW chunk.
    fn allocate(&self, st: &mut StoreState) -> Option<u64> {
        if self.persistent() {
            return st.alloc.allocate(&self.geo);
        }
        // A transient store has no header or areas: chunks from 0.
        let chunk = st.alloc.next_free;
        if chunk >= self.geo.chunks {
            return None;
        }
        st.alloc.next_free += 1;
        Some(chunk)
    }

    /// How many more copies may start: a copy stays counted from its start
    /// until its commit takes it (in flight, then copied), so `copied`
    /// always has room for a copy that ends.
    fn room(st: &StoreState) -> usize {
        MAX_PENDING.saturating_sub(st.pending.len() + st.copied.len())
    }

    /// Starts copying origin chunk `chunk` to a new COW chunk.
    fn start_copy(this: &Arc<Job<Store>>, st: &mut StoreState, chunk: u64) -> Start {
        if Self::room(st) == 0 {
            return Start::Busy;
        }
        let Some(new) = this.allocate(st) else {
            return Start::Full;
        };
        let cs = this.chunk_sectors();
        let from = chunk * cs;
        let len = cs.min(this.origin_dev.sectors().saturating_sub(from));
        let mut job = CopyJob::new(&this.origin_dev, from, len, chunk);
        let queued = job
            .to(&this.cow, new * cs)
            .and_then(|()| this.copier.submit(this, job));
        let p = Pending {
            old: chunk,
            new,
            ok: false,
            direct: false,
        };
        if queued.is_err() || st.pending.put(p).is_err() {
            // The copier stopped (the store is going away): nothing to
            // wait for, the chunk stays unused.
            return Start::Busy;
        }
        Start::Started
    }

    /// Marks the snapshot invalid (a full COW device on an origin write, a
    /// failed copy or commit); the worker writes the header and lets go of
    /// held writes.
    fn invalidate(this: &Arc<Job<Store>>, st: &mut StoreState) {
        if !st.valid {
            return;
        }
        st.valid = false;
        st.header_dirty = this.persistent();
        this.events.bump();
        this.worker.kick(this);
    }

    /// For an origin write of `[offset, offset + len)`: what this snapshot
    /// needs first; starts the copies it lacks.
    fn before_origin_write(this: &Arc<Job<Store>>, offset: u64, len: u64) -> Need {
        let mut st = this.state.lock();
        if !st.valid || !st.active {
            return Need::Nothing;
        }
        let mut need = Need::Nothing;
        for chunk in this.chunks(offset, len) {
            if Self::busy(&st, chunk) {
                if need == Need::Nothing {
                    need = Need::Copies;
                }
            } else if st.table.get(chunk).is_none() {
                match Self::start_copy(this, &mut st, chunk) {
                    Start::Started if need == Need::Nothing => need = Need::Copies,
                    Start::Started => {}
                    Start::Busy => need = Need::Room,
                    Start::Full => {
                        // dm: an origin write never fails for a snapshot.
                        Self::invalidate(this, &mut st);
                        return Need::Nothing;
                    }
                }
            }
        }
        need
    }

    /// Whether an origin write of `[offset, offset + len)` may go on for
    /// this snapshot: it has the old data of every chunk, committed (the
    /// test [`Store::before_origin_write`] makes, without starting copies).
    fn has_old_data(&self, offset: u64, len: u64) -> bool {
        let st = self.state.lock();
        !st.valid
            || !st.active
            || self
                .chunks(offset, len)
                .all(|chunk| !Self::busy(&st, chunk) && st.table.get(chunk).is_some())
    }

    /// Commits the copies that ended: their entries on disk (persistent),
    /// then in the table; waits for the snapshot reads that went to the
    /// origin before. Returns whether anything was committed.
    fn commit(this: &Arc<Job<Store>>) -> bool {
        let mut area = this.area.lock();
        let area = &mut *area;
        {
            let mut st = this.state.lock();
            while let Some(p) = st.copied.take_oldest(|_| true) {
                // Room for every pending copy was made up front.
                let _ = area.batch.put(p);
                let _ = st.committing.put(p.old);
            }
        }
        if area.batch.is_empty() {
            return false;
        }
        // A copy the copier aborted because the store is going away
        // leaves no exception and no harm; any other failure makes the
        // snapshot invalid (dm).
        let active = this.state.lock().active;
        let mut ok = area.batch.iter().all(|p| p.ok || !active) && this.state.lock().valid;
        if ok && this.persistent() {
            ok = this.write_entries(area).is_ok();
        }
        ok = ok && this.make_room(area.batch.len() as u64).is_ok();
        {
            let mut st = this.state.lock();
            if ok {
                for p in area.batch.iter().filter(|p| p.ok) {
                    ok &= st.table.insert(p.old, p.new);
                }
            }
            if !ok {
                Self::invalidate(this, &mut st);
            }
        }
        // Snapshot reads sent to the origin before the exceptions were in
        // the table must end before origin writes overwrite those chunks
        // (dm's conflicting-I/O check). New reads go to the COW device.
        for p in area.batch.iter() {
            this.tracked[Self::bucket(p.old)].wait_idle();
        }
        this.state.lock().committing.clear();
        this.committed.notify_all();
        area.batch.clear();
        true
    }

    /// Writes the batch's entries into the current area and the area to
    /// disk (PREFLUSH|FUA: the copies it names are on disk first); a full
    /// area is written, the next one zeroed on disk first, and entries go
    /// on there.
    fn write_entries(&self, area: &mut Area) -> Result {
        let Some(buf) = area.buf.as_mut() else {
            return Ok(());
        };
        let durable = WriteFlags {
            preflush: true,
            fua: true,
        };
        let cs = self.chunk_sectors();
        let bytes = 0..self.geo.chunk_bytes();
        let mut unwritten = false;
        for p in area.batch.iter().filter(|p| p.ok) {
            snapshot_store::write_entry(buf, area.entries, p.old, p.new);
            area.entries += 1;
            unwritten = true;
            if area.entries == self.geo.per_area {
                // The next area must read as empty before this one says
                // "full, go on".
                let next = self.geo.area_chunk(area.nr + 1);
                self.zero_chunk(next)?;
                self.cow.write_at(
                    self.geo.area_chunk(area.nr) * cs,
                    buf,
                    bytes.clone(),
                    durable,
                )?;
                area.nr += 1;
                area.entries = 0;
                buf.fill(0);
                unwritten = false;
                self.area_nr.store(area.nr, Ordering::Relaxed);
            }
        }
        if unwritten {
            self.cow
                .write_at(self.geo.area_chunk(area.nr) * cs, buf, bytes, durable)?;
        }
        Ok(())
    }

    /// Writes zeros over COW chunk `chunk`.
    fn zero_chunk(&self, chunk: u64) -> Result {
        let zeros = IoBuffer::new(self.geo.chunk_bytes())?;
        self.cow.write_at(
            chunk * self.chunk_sectors(),
            &zeros,
            0..self.geo.chunk_bytes(),
            WriteFlags::default(),
        )
    }

    /// Makes the table big enough for `n` more exceptions (doubling it
    /// once it is half full, outside the lock: only the worker inserts).
    fn make_room(&self, n: u64) -> Result {
        let (len, cap) = {
            let st = self.state.lock();
            (st.table.len() as u64, st.table.capacity() as u64)
        };
        if (len + n) * 2 <= cap {
            return Ok(());
        }
        let pairs = ExceptionTable::<KVVec<u64>>::slots_for((len + n) * 2);
        // The worker is on the writeback path: no I/O to reclaim.
        let slots = {
            let _noio = NoIoScope::enter();
            KVVec::from_elem(0u64, 2 * pairs, GFP_KERNEL)?
        };
        let mut bigger = ExceptionTable::new(slots);
        let mut st = self.state.lock();
        if !st.table.move_into(&mut bigger) {
            return Err(ENOMEM);
        }
        let old = core::mem::replace(&mut st.table, bigger);
        drop(st);
        drop(old);
        Ok(())
    }

    /// Rewrites the header invalid, once.
    fn write_invalid_header(&self) {
        if !core::mem::take(&mut self.state.lock().header_dirty) {
            return;
        }
        let Ok(mut buf) = IoBuffer::new(self.geo.chunk_bytes()) else {
            return;
        };
        snapshot_store::write_header(&mut buf, false, self.chunk_sectors() as u32);
        let flags = WriteFlags {
            preflush: false,
            fua: true,
        };
        if self
            .cow
            .write_at(0, &buf, 0..self.geo.chunk_bytes(), flags)
            .is_err()
        {
            pr_warn!(
                "snapshot: cannot mark the COW device {} invalid\n",
                self.cow.name()
            );
        }
    }

    /// Maps the held snapshot writes again (an invalid snapshot fails
    /// them there).
    fn release_held(&self) {
        let n = self.state.lock().held.len();
        for _ in 0..n {
            let Some(h) = self.state.lock().held.take_oldest(|_| true) else {
                break;
            };
            h.redispatch();
        }
    }

    /// The store's last table went: stop copying, leave the origin, let
    /// go of everything held (process context).
    fn shutdown(this: &Arc<Job<Store>>) {
        if let Some(origin) = this.origin.get() {
            origin.leave(this);
        }
        this.state.lock().active = false;
        let _ = this.copier.stop(false);
        this.worker.flush();
        Self::commit(this);
        this.release_held();
        if let Some(origin) = this.origin.get() {
            origin.release(this);
            origin.commits.bump();
        }
        this.worker.flush();
    }

    /// The devices a snapshot line uses (whole: the checks see them).
    fn devices(&self, f: &mut dyn FnMut(&BlockDevice, u64, u64)) {
        f(&self.origin_dev, 0, self.origin_dev.sectors());
        f(&self.cow, 0, self.cow.sectors());
    }

    /// The table's arguments: `<origin> <COW> <P|PO|N> <chunk>`.
    fn write_table(&self, out: &mut dyn Write) -> fmt::Result {
        write_device(out, &self.origin_dev)?;
        out.write_char(' ')?;
        write_device(out, &self.cow)?;
        write!(out, " {} {}", self.kind.name(), self.chunk_sectors())
    }

    /// Returns the held writes to the queue (a `noflush` suspend).
    fn requeue_held(&self) {
        while let Some(h) = self.state.lock().held.take_oldest(|_| true) {
            h.requeue();
        }
    }

    /// Status: `Invalid`, `Overflow`, or `<allocated>/<total> <metadata>`
    /// sectors (dm's).
    fn write_status(&self, out: &mut dyn Write) -> fmt::Result {
        let st = self.state.lock();
        if !st.valid {
            return out.write_str("Invalid");
        }
        if st.merge_failed {
            return out.write_str("Merge failed");
        }
        if st.overflow {
            return out.write_str("Overflow");
        }
        let total = self.cow.sectors();
        if self.persistent() {
            let mut used = st.alloc;
            used.area = self.area_nr.load(Ordering::Relaxed);
            let (allocated, metadata) = used.usage(&self.geo);
            write!(out, "{allocated}/{total} {metadata}")
        } else {
            write!(
                out,
                "{}/{total} 0",
                st.alloc.next_free * self.chunk_sectors()
            )
        }
    }
}

impl Deferred for Store {
    /// Marks an invalid header, commits ended copies, and maps again the
    /// writes that waited for them.
    fn run(job: &Arc<Job<Self>>) {
        if job.merging {
            return merge::run(job);
        }
        job.write_invalid_header();
        let committed = Store::commit(job);
        let invalid = !job.state.lock().valid;
        if committed || invalid {
            job.release_held();
            if let Some(origin) = job.origin.get() {
                origin.release(job);
                origin.commits.bump();
            }
        }
        job.write_invalid_header();
    }
}

/// Reads the store of a COW device: the header, then every area (a
/// persistent store; a new one is formatted). Returns the geometry, the
/// table, where allocation goes on, the current area and whether the
/// store is valid.
struct Opened {
    geo: Geometry,
    table: ExceptionTable<KVVec<u64>>,
    alloc: Loaded,
    area: Area,
    valid: bool,
}

/// Opens (reads or formats) the store on `cow` for `args`.
fn open_store(
    cow: &BlockDevice,
    args: &SnapshotArgs<'_>,
    reply: &mut crate::vblk::message::Reply,
) -> Result<Opened> {
    let mut chunk = args.chunk_sectors;
    let mut valid = true;
    let mut fresh = args.store == StoreType::Transient;
    if args.store != StoreType::Transient {
        let mut head = IoBuffer::new(4096)?;
        if let Err(e) = cow.read_at(0, &mut head, 0..4096) {
            return fail!(
                reply,
                e,
                "snapshot: cannot read the COW header of '{}'",
                args.cow
            );
        }
        match snapshot_store::parse_header(&head) {
            Ok(Header::New) => fresh = true,
            Ok(Header::Found {
                valid: v,
                chunk_sectors,
            }) => {
                if chunk != 0 && chunk != u64::from(chunk_sectors) {
                    pr_warn!(
                        "snapshot: chunk size {chunk} of the table differs from the COW header's {chunk_sectors}: using the header's\n"
                    );
                }
                chunk = u64::from(chunk_sectors);
                valid = v;
            }
            Err(e) => return fail!(reply, EINVAL, "snapshot: '{}': {e}", args.cow),
        }
    }
    if chunk == 0 {
        chunk = snapshot_store::DEFAULT_CHUNK_SECTORS;
    }
    let geo = match Geometry::new(chunk, cow.sectors()) {
        Ok(g) => g,
        Err(e) => return fail!(reply, EINVAL, "snapshot: '{}': {e}", args.cow),
    };
    let pairs = ExceptionTable::<KVVec<u64>>::slots_for(FIRST_EXCEPTIONS.min(geo.chunks));
    let mut table = ExceptionTable::new(KVVec::from_elem(0u64, 2 * pairs, GFP_KERNEL)?);
    let batch = Slots::new(MAX_PENDING)?;
    let mut area = Area {
        buf: None,
        nr: 0,
        entries: 0,
        batch,
    };
    if args.store == StoreType::Transient {
        let alloc = Loaded {
            area: 0,
            committed: 0,
            next_free: 0,
        };
        return Ok(Opened {
            geo,
            table,
            alloc,
            area,
            valid,
        });
    }
    let cs = geo.chunk_sectors;
    let bytes = 0..geo.chunk_bytes();
    let mut buf = IoBuffer::new(geo.chunk_bytes())?;
    let mut alloc = Loaded::new();
    if !valid {
        // dm reads no exceptions of an invalid store: it stays invalid.
    } else if fresh {
        // dm: the header, then area 0 zeroed.
        snapshot_store::write_header(&mut buf, true, cs as u32);
        let durable = WriteFlags {
            preflush: false,
            fua: true,
        };
        let written = cow
            .write_at(0, &buf, bytes.clone(), durable)
            .and_then(|()| {
                buf.fill(0);
                cow.write_at(geo.area_chunk(0) * cs, &buf, bytes.clone(), durable)
            });
        if let Err(e) = written {
            return fail!(
                reply,
                e,
                "snapshot: cannot format the COW device '{}'",
                args.cow
            );
        }
    } else {
        let mut nr = 0;
        loop {
            if geo.area_chunk(nr) >= geo.chunks {
                return fail!(
                    reply,
                    EINVAL,
                    "snapshot: '{}': metadata area {nr} lies past the end of the device",
                    args.cow
                );
            }
            if let Err(e) = cow.read_at(geo.area_chunk(nr) * cs, &mut buf, bytes.clone()) {
                return fail!(
                    reply,
                    e,
                    "snapshot: cannot read metadata area {nr} of '{}'",
                    args.cow
                );
            }
            let mut full_table = false;
            let loaded = alloc.load_area(&geo, nr, &buf, &mut |old, new| {
                if !table.insert(old, new) {
                    full_table = true;
                }
            });
            if full_table {
                // Grow and read this area again.
                let pairs = ExceptionTable::<KVVec<u64>>::slots_for(table.len() as u64 * 4);
                let mut bigger =
                    ExceptionTable::new(KVVec::from_elem(0u64, 2 * pairs, GFP_KERNEL)?);
                if !table.move_into(&mut bigger) {
                    return Err(ENOMEM);
                }
                table = bigger;
                continue;
            }
            match loaded {
                Ok(true) => nr += 1,
                Ok(false) => break,
                Err(e) => return fail!(reply, EINVAL, "snapshot: '{}': {e}", args.cow),
            }
        }
        if alloc.committed == 0 {
            // The area after a full one: zeroed on disk already.
            buf.fill(0);
        }
        area.nr = alloc.area;
        area.entries = alloc.committed;
    }
    area.buf = Some(buf);
    Ok(Opened {
        geo,
        table,
        alloc,
        area,
        valid,
    })
}

/// The parts of `[offset, offset + len)` in each chunk of `cs` sectors:
/// (sectors from the piece's start, length, chunk, sectors into the
/// Refuses a line longer than its origin device (`text`: as the table
/// names it).
fn origin_fits(ctor: &mut Ctor<'_>, what: &str, origin: &BlockDevice, text: &str) -> Result {
    if ctor.length > origin.sectors() {
        return fail!(
            ctor.reply,
            EINVAL,
            "{what}: the line has {} sectors, the origin '{text}' only {}",
            ctor.length,
            origin.sectors()
        );
    }
    Ok(())
}

/// chunk).
fn chunk_parts(cs: u64, offset: u64, len: u64) -> impl Iterator<Item = (u64, u64, u64, u64)> {
    let end = offset + len;
    let mut at = offset;
    core::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let chunk = at / cs;
        let within = at % cs;
        let n = (cs - within).min(end - at);
        let part = (at - offset, n, chunk, within);
        at += n;
        Some(part)
    })
}

/// The `snapshot` target: a line of the snapshot's image.
pub(crate) struct Snapshot {
    store: Arc<Job<Store>>,
    /// This table's use of the store (a reload shares it).
    _claim: PeerRef<StoreSlot>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if self.store.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            Store::shutdown(&self.store);
        }
    }
}

/// Constructor of `snapshot`, listed in [`super::TYPES`].
pub(super) fn construct_snapshot(ctor: &mut Ctor<'_>) -> Result<Arc<dyn Target>> {
    let (store, claim) = attach_store(ctor, false)?;
    match Arc::new(
        Snapshot {
            store,
            _claim: claim,
        },
        GFP_KERNEL,
    ) {
        Ok(t) => Ok(t),
        Err(_) => fail!(ctor.reply, ENOMEM, "out of memory constructing snapshot"),
    }
}

/// The store a `snapshot` (or, `merging`, a `snapshot-merge`) line names:
/// the one its device's live table uses (a reload), else one read or
/// formatted from the COW device. Counted as one more user.
fn attach_store(
    ctor: &mut Ctor<'_>,
    merging: bool,
) -> Result<(Arc<Job<Store>>, PeerRef<StoreSlot>)> {
    let what = if merging {
        "snapshot-merge"
    } else {
        "snapshot"
    };
    let args = match snapshot_store::parse_args(ctor.args, merging) {
        Ok(a) => a,
        Err(e) => return fail!(ctor.reply, EINVAL, "{e}"),
    };
    let origin_dev = ctor.open_device(args.origin)?;
    let cow = ctor.open_device(args.cow)?;
    if origin_dev.devt() == cow.devt() {
        return fail!(
            ctor.reply,
            EINVAL,
            "{what}: the COW device '{}' is the origin device",
            args.cow
        );
    }
    origin_fits(ctor, what, &origin_dev, args.origin)?;
    ctor.charge(
        STORE_BYTES + Copier::<Job<Store>>::state_bytes(COPY_LANES),
        "snapshot: the exception store and copy buffers",
    )?;
    let key = u64::from(origin_dev.devt());
    let origin = match ctor.peers.acquire(ORIGIN_KIND, key, OriginShared::new) {
        Ok(o) => o,
        Err(e) => {
            return fail!(
                ctor.reply,
                e,
                "{what}: cannot register with the origin '{}'",
                args.origin
            )
        }
    };
    let device = ctor.device;
    let events = ctor.events.clone();
    // `Some(made)` once `make` ran: a new store (or one that failed, with
    // its message in the reply).
    let mut made = None;
    let claim = ctor.peers.acquire(STORE_KIND, u64::from(cow.devt()), || {
        made = Some(false);
        let owner = Owner {
            device,
            merging,
            events,
            origin,
        };
        let store = new_store(owner, &origin_dev, &cow, &args, ctor.reply)?;
        made = Some(true);
        Ok(Arc::new(StoreSlot { store }, GFP_KERNEL)?)
    });
    let claim: PeerRef<StoreSlot> = match claim {
        Ok(c) => c,
        Err(e) if made == Some(false) => return Err(e),
        Err(e) => {
            return fail!(
                ctor.reply,
                e,
                "{what}: cannot set up the store on '{}'",
                args.cow
            )
        }
    };
    let Some(slot) = claim.get() else {
        return fail!(ctor.reply, EINVAL, "{what}: '{}' is in use", args.cow);
    };
    let store = slot.store.clone();
    if made.is_none() {
        // A store that exists: a reload of its own device (of the same
        // kind), else refused.
        if merging && (store.device != device || !store.merging) {
            return fail!(
                ctor.reply,
                EBUSY,
                "snapshot-merge: the COW device '{}' is the store of a live snapshot (vblk{}): remove that device first",
                args.cow,
                store.device
            );
        }
        if store.device != device || store.merging != merging {
            return fail!(
                ctor.reply,
                EBUSY,
                "snapshot: the COW device '{}' is in use by the snapshot of another device (vblk{})",
                args.cow,
                store.device
            );
        }
        if store.origin_dev.devt() != origin_dev.devt()
            || store.kind != args.store
            || (args.chunk_sectors != 0 && args.chunk_sectors != store.chunk_sectors())
        {
            return fail!(
                ctor.reply,
                EINVAL,
                "{what}: a reload must keep the origin, store type and chunk size of the live table"
            );
        }
    }
    if merging && !store.state.lock().valid {
        return fail!(
            ctor.reply,
            EINVAL,
            "snapshot-merge: the snapshot on '{}' is invalid: there is nothing to merge back",
            args.cow
        );
    }
    store.users.fetch_add(1, Ordering::AcqRel);
    Ok((store, claim))
}

/// Who a new store is for: the device, whether it merges, the device's
/// events, the origin's shared state.
struct Owner {
    device: u32,
    merging: bool,
    events: Arc<EventCounter>,
    origin: PeerRef<OriginShared>,
}

fn new_store(
    owner: Owner,
    origin_dev: &Arc<BlockDevice>,
    cow: &Arc<BlockDevice>,
    args: &SnapshotArgs<'_>,
    reply: &mut crate::vblk::message::Reply,
) -> Result<Arc<Job<Store>>> {
    let Owner {
        device,
        merging,
        events,
        origin,
    } = owner;
    let lbs = u64::from(
        cow.logical_block_size()
            .max(origin_dev.logical_block_size())
            >> 9,
    )
    .max(1);
    let opened = open_store(cow, args, reply)?;
    if opened.geo.chunk_sectors % lbs != 0 {
        return fail!(
            reply,
            EINVAL,
            "snapshot: chunk size {} is not a multiple of the devices' {}-byte logical blocks",
            opened.geo.chunk_sectors,
            lbs * 512
        );
    }
    let worker =
        OwnedQueue::new(kernel::c_str!("vblk_snapshot")).and_then(|q| Ok(Arc::new(q, GFP_KERNEL)?));
    let Ok(worker) = worker else {
        return fail!(reply, ENOMEM, "out of memory for the snapshot's workqueue");
    };
    let (Ok(copier), Ok(pending), Ok(copied), Ok(held), Ok(committing)) = (
        Copier::new(&worker, MAX_PENDING, COPY_LANES),
        Slots::new(MAX_PENDING),
        Slots::new(MAX_PENDING),
        Slots::new(QUEUE_DEPTH as usize + 1),
        Slots::new(MAX_PENDING),
    ) else {
        return fail!(reply, ENOMEM, "out of memory for the snapshot's copies");
    };
    copier.start();
    let Opened {
        geo,
        table,
        alloc,
        area,
        valid,
    } = opened;
    let area_nr = area.nr;
    let store = Job::new(pin_init!(Store {
        device,
        merging,
        origin_dev: origin_dev.clone(),
        cow: cow.clone(),
        geo,
        kind: args.store,
        events,
        origin,
        worker,
        copier,
        tracked: core::array::from_fn(|_| InFlight::new()),
        users: AtomicU32::new(0),
        chunks_copied: AtomicU64::new(0),
        held_writes: AtomicU64::new(0),
        area_nr: AtomicU64::new(area_nr),
        area <- kernel::new_mutex!(area, "vblk::snapshot::Store::area"),
        state <- kernel::new_mutex!(
            StoreState {
                table,
                alloc,
                pending,
                copied,
                committing,
                held,
                valid,
                overflow: false,
                header_dirty: false,
                active: false,
                merge: merge::Step::Next,
                merge_failed: false,
            },
            "vblk::snapshot::Store::state"
        ),
        committed <- kernel::new_condvar!("vblk::snapshot::Store::committed"),
    }));
    match Arc::pin_init(store, GFP_KERNEL) {
        Ok(s) => Ok(s),
        Err(_) => fail!(reply, ENOMEM, "out of memory constructing snapshot"),
    }
}

impl Snapshot {
    /// The parts of `[offset, offset + len)` in each chunk.
    fn parts(&self, offset: u64, len: u64) -> impl Iterator<Item = (u64, u64, u64, u64)> {
        chunk_parts(self.store.chunk_sectors(), offset, len)
    }

    fn read(&self, mut io: Io<'_>) -> Mapped {
        let store = &*self.store;
        let cs = store.chunk_sectors();
        let st = store.state.lock();
        if !st.valid {
            return io.kill(Status::IO_ERROR);
        }
        for (skip, n, chunk, within) in self.parts(io.offset(), io.len()) {
            match st.table.get(chunk) {
                Some(new) => io.remap_part(skip, n, &store.cow, new * cs + within, TAG_COW),
                None => {
                    // Counted before it is sent: a commit of this chunk
                    // waits for it (under the lock the commit inserts
                    // with).
                    let b = Store::bucket(chunk);
                    store.tracked[b].add(io.completions_for(skip, n));
                    let sector = chunk * cs + within;
                    io.remap_part(skip, n, &store.origin_dev, sector, TAG_TRACK + b as u32);
                }
            }
        }
        drop(st);
        io.remapped()
    }

    fn write(&self, mut io: Io<'_>) -> Mapped {
        let this = &self.store;
        let cs = this.chunk_sectors();
        let mut st = this.state.lock();
        if !st.valid || st.overflow {
            return io.kill(Status::IO_ERROR);
        }
        let (offset, len) = (io.offset(), io.len());
        let mut ready = true;
        // Chunks without an exception that the piece covers whole: no copy
        // needed, the write itself fills them.
        let mut whole = 0;
        for chunk in this.chunks(offset, len) {
            let copied = st.table.get(chunk).is_some();
            if Store::busy(&st, chunk) {
                ready = false;
            } else if !copied && this.covers(offset, len, chunk) {
                whole += 1;
            } else if !copied {
                match Store::start_copy(this, &mut st, chunk) {
                    Start::Started | Start::Busy => ready = false,
                    Start::Full => return self.full(&mut st, io),
                }
            }
        }
        if ready && whole > MAX_PENDING {
            // More whole chunks than copies can be pending at once: they
            // are copied as any other (the write waits, mapped again as
            // copies end and more start).
            for chunk in this.chunks(offset, len) {
                if st.table.get(chunk).is_none() && !Store::busy(&st, chunk) {
                    if let Start::Full = Store::start_copy(this, &mut st, chunk) {
                        return self.full(&mut st, io);
                    }
                }
            }
            ready = false;
        } else if ready && whole > 0 {
            if Store::room(&st) < whole {
                ready = false;
            } else {
                for chunk in this.chunks(offset, len) {
                    if st.table.get(chunk).is_some() {
                        continue;
                    }
                    let Some(new) = this.allocate(&mut st) else {
                        // The chunks taken for this piece go back to
                        // nothing pending (origin writes must not wait).
                        let mine = this.chunks(offset, len);
                        while st
                            .pending
                            .take_oldest(|p| p.direct && mine.contains(&p.old))
                            .is_some()
                        {}
                        return self.full(&mut st, io);
                    };
                    let p = Pending {
                        old: chunk,
                        new,
                        ok: false,
                        direct: true,
                    };
                    // Room was checked above.
                    let _ = st.pending.put(p);
                }
            }
        }
        if !ready {
            if st.held.len() >= st.held.capacity() {
                return io.requeue();
            }
            this.held_writes.fetch_add(1, Ordering::Relaxed);
            let (held, mapped) = io.hold();
            if let Err(h) = st.held.put(held) {
                h.kill(Status::IO_ERROR);
            }
            return mapped;
        }
        for (skip, n, chunk, within) in self.parts(offset, len) {
            let new = st.table.get(chunk).or_else(|| {
                st.pending
                    .iter()
                    .find(|p| p.old == chunk && p.direct)
                    .map(|p| p.new)
            });
            if let Some(new) = new {
                io.remap_part(skip, n, &this.cow, new * cs + within, TAG_COW);
            }
        }
        drop(st);
        if whole > 0 {
            // Completes once its chunks' exceptions are committed.
            io.finish_later();
        }
        io.remapped()
    }

    /// The COW device is full on a snapshot write: `Overflow` (PO) or
    /// invalid; the write fails.
    fn full(&self, st: &mut StoreState, io: Io<'_>) -> Mapped {
        let this = &self.store;
        if this.kind == (StoreType::Persistent { overflow: true }) {
            st.overflow = true;
            this.events.bump();
        } else {
            Store::invalidate(this, st);
        }
        io.kill(Status::IO_ERROR)
    }

    /// A write piece that filled chunks directly ended: its chunks go to
    /// the commit, and the piece completes once they are committed (a
    /// failed write or commit makes the snapshot invalid and fails it).
    fn finish_direct(&self, done: &mut Done<'_>) {
        let this = &self.store;
        let ok = done.status().is_ok();
        let chunks = this.chunks(done.offset(), done.len());
        let mut mine = false;
        {
            let mut st = this.state.lock();
            for chunk in chunks.clone() {
                if let Some(mut p) = st.pending.take_oldest(|p| p.old == chunk && p.direct) {
                    p.ok = ok;
                    // `copied` has room for every pending copy.
                    let _ = st.copied.put(p);
                    mine = true;
                }
            }
        }
        if !mine {
            return;
        }
        this.worker.kick(this);
        let mut st = this.state.lock();
        while chunks.clone().any(|c| Store::busy(&st, c)) {
            this.committed.wait(&mut st);
        }
        if !st.valid {
            done.fail(Status::IO_ERROR);
        }
    }
}

impl Target for Snapshot {
    fn map(&self, io: Io<'_>) -> Mapped {
        match io.op() {
            Op::Read => self.read(io),
            Op::Write => self.write(io),
            Op::Flush => io.complete(),
            Op::Discard | Op::WriteZeroes | Op::Other => io.kill(Status::NOT_SUPPORTED),
        }
    }

    fn end_io(&self, _info: &RqInfo, tag: u32, status: Status) -> EndIo {
        if let Some(b) = tag.checked_sub(TAG_TRACK) {
            if let Some(count) = self.store.tracked.get(b as usize) {
                count.done();
            }
        }
        EndIo::Done(status)
    }

    fn finish(&self, done: &mut Done<'_>) {
        if done.info().op == Op::Write {
            self.finish_direct(done);
        }
    }

    fn resume(&self) {
        let this = &self.store;
        if !this.state.lock().active {
            if let Some(origin) = this.origin.get() {
                if !origin.join(this) {
                    pr_warn!(
                        "snapshot: the origin has {MAX_SNAPSHOTS} snapshots already: this one is invalid\n"
                    );
                    Store::invalidate(this, &mut this.state.lock());
                    return;
                }
            }
            this.state.lock().active = true;
        }
    }

    fn presuspend(&self, noflush: bool) -> Result {
        if noflush {
            self.store.requeue_held();
        }
        Ok(())
    }

    fn devices(&self, f: &mut dyn FnMut(&BlockDevice, u64, u64)) {
        self.store.devices(f);
    }

    fn supports_discard(&self) -> bool {
        false
    }

    fn supports_write_zeroes(&self) -> bool {
        false
    }

    fn table_args(&self, out: &mut dyn Write) -> fmt::Result {
        self.store.write_table(out)
    }

    fn status(&self, out: &mut dyn Write) -> fmt::Result {
        self.store.write_status(out)
    }

    fn status_detail(&self, out: &mut dyn Write) -> fmt::Result {
        let store = &*self.store;
        let st = store.state.lock();
        write!(
            out,
            "exceptions={} copies_pending={} chunks_copied={} writes_held={} chunk_sectors={} valid={}",
            st.table.len(),
            st.pending.len() + st.copied.len(),
            store.chunks_copied.load(Ordering::Relaxed),
            store.held_writes.load(Ordering::Relaxed),
            store.chunk_sectors(),
            u8::from(st.valid)
        )
    }
}
