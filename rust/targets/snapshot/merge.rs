// SPDX-License-Identifier: GPL-2.0
//! `snapshot-merge <origin> <COW> <P|PO> <chunk>`: loaded on the origin's
//! device in place of `snapshot-origin`, it rolls the origin back to the
//! snapshot's content in the background while serving I/O that already
//! shows that content (dm-snapshot's merge).
//!
//! The merge takes the store's exceptions last first (dm's order): for
//! the last entry of the current metadata area it holds new writes to the
//! chunk, waits for the writes already sent to the COW chunk, has every
//! other live snapshot of the origin copy the chunk's old data first,
//! copies the COW chunk over the origin chunk (the copy service), flushes
//! the origin, then clears the entry and writes the area (PREFLUSH|FUA)
//! and drops the exception: from then on the chunk is read and written on
//! the origin. An empty area sends the merge to the one before it. A
//! reload or reboot goes on from the entries left on disk; an I/O error
//! stops it (`Merge failed`) and I/O goes on as before.
//!
//! Meanwhile reads of a chunk with an exception come from the COW chunk,
//! others from the origin; writes to a chunk with an exception go to the
//! COW chunk (the merge carries them to the origin later), others to the
//! origin after the other snapshots copied their old data.

use super::*;

/// Where the merge of the last exception is.
#[derive(Clone, Copy)]
pub(super) enum Step {
    /// Take the last exception next.
    Next,
    /// Origin chunk `old` (COW chunk `new`) is being merged: new writes to
    /// it are held; the copy starts once the ones in flight are over.
    Drain { old: u64, new: u64 },
    /// Its copy runs.
    Copying { old: u64 },
    /// Its copy ended (`ok`: the origin chunk has the data).
    Copied { old: u64, ok: bool },
    /// Every exception was merged.
    Done,
}

impl Step {
    /// The origin chunk being merged, if any.
    fn chunk(self) -> Option<u64> {
        match self {
            Step::Drain { old, .. } | Step::Copying { old, .. } | Step::Copied { old, .. } => {
                Some(old)
            }
            Step::Next | Step::Done => None,
        }
    }
}

/// The merge's copy ended (the copier's `copy_done`, state locked).
pub(super) fn copied(st: &mut StoreState, ok: bool) {
    if let Step::Copying { old, .. } = st.merge {
        st.merge = Step::Copied { old, ok };
    }
}

/// The merging store's worker: merges exceptions one after the other
/// until it must wait for a copy, or all are merged.
pub(super) fn run(this: &Arc<Job<Store>>) {
    loop {
        let step = {
            let st = this.state.lock();
            if !st.active || st.merge_failed || !st.valid {
                return;
            }
            st.merge
        };
        match step {
            Step::Next => match last_exception(this) {
                Ok(Some((old, new))) => this.state.lock().merge = Step::Drain { old, new },
                Ok(None) => {
                    this.state.lock().merge = Step::Done;
                    this.events.bump();
                    this.release_held();
                    return;
                }
                Err(_) => return fail(this),
            },
            Step::Drain { old, new } => {
                // Writes sent to the COW chunk before it was held.
                this.tracked[Store::bucket(old)].wait_idle();
                if let Some(seen) = others_copied(this, old) {
                    // Their copies run on their own workers: look again
                    // after one of them commits (or the merge pauses).
                    if let Some(origin) = this.origin.get() {
                        let _ = origin.commits.wait_change(seen);
                    }
                    continue;
                }
                let cs = this.chunk_sectors();
                let len = cs.min(this.origin_dev.sectors().saturating_sub(old * cs));
                let mut job = CopyJob::new(&this.cow, new * cs, len, old);
                this.state.lock().merge = Step::Copying { old };
                let queued = job
                    .to(&this.origin_dev, old * cs)
                    .and_then(|()| this.copier.submit(this, job));
                if queued.is_err() {
                    return fail(this);
                }
                // `copy_done` kicks this again.
                return;
            }
            Step::Copying { .. } | Step::Done => return,
            Step::Copied { old, ok } => {
                if !ok || commit_merged(this, old).is_err() {
                    return fail(this);
                }
                this.chunks_copied.fetch_add(1, Ordering::Relaxed);
                this.release_held();
            }
        }
    }
}

/// The merge stopped on an error: status says so, held writes go on.
fn fail(this: &Arc<Job<Store>>) {
    this.state.lock().merge_failed = true;
    pr_warn!(
        "snapshot-merge: merging {} failed: I/O error\n",
        this.cow.name()
    );
    this.events.bump();
    this.release_held();
}

/// The last entry of the store (reading the area before when the current
/// one is empty); `None` when none is left.
fn last_exception(this: &Store) -> Result<Option<(u64, u64)>> {
    let mut area = this.area.lock();
    let area = &mut *area;
    let Some(buf) = area.buf.as_mut() else {
        return Ok(None);
    };
    if area.entries == 0 {
        if area.nr == 0 {
            return Ok(None);
        }
        // The area before a non-empty one is full.
        let cs = this.chunk_sectors();
        this.cow.read_at(
            this.geo.area_chunk(area.nr - 1) * cs,
            buf,
            0..this.geo.chunk_bytes(),
        )?;
        area.nr -= 1;
        area.entries = this.geo.per_area;
        this.area_nr.store(area.nr, Ordering::Relaxed);
    }
    Ok(Some(snapshot_store::read_entry(buf, area.entries - 1)))
}

/// Whether every live snapshot of the origin has the old data of origin
/// chunk `old` (of this store's chunk size); starts the copies they lack.
/// `None` if they all have it, else the origin's commit count from before
/// the look (to wait for it to change).
fn others_copied(this: &Store, old: u64) -> Option<u32> {
    let origin = this.origin.get()?;
    let seen = origin.commits.get();
    let cs = this.chunk_sectors();
    (origin.prepare(old * cs, cs) != Need::Nothing).then_some(seen)
}

/// Origin chunk `old` holds its merged data: makes it durable, then
/// clears its entry on disk and drops the exception.
fn commit_merged(this: &Store, old: u64) -> Result {
    this.origin_dev.flush()?;
    let mut area = this.area.lock();
    let area = &mut *area;
    let Some(buf) = area.buf.as_mut() else {
        return Err(EINVAL);
    };
    let durable = WriteFlags {
        preflush: true,
        fua: true,
    };
    snapshot_store::write_entry(buf, area.entries - 1, 0, 0);
    let cs = this.chunk_sectors();
    this.cow.write_at(
        this.geo.area_chunk(area.nr) * cs,
        buf,
        0..this.geo.chunk_bytes(),
        durable,
    )?;
    area.entries -= 1;
    let next_free = snapshot_store::merged_next_free(&this.geo, area.nr, area.entries);
    let mut st = this.state.lock();
    st.table.remove(old);
    st.alloc.next_free = next_free;
    st.merge = Step::Next;
    Ok(())
}

/// The `snapshot-merge` target.
pub(crate) struct Merge {
    store: Arc<Job<Store>>,
    /// This table's use of the store (a reload shares it).
    _claim: PeerRef<StoreSlot>,
}

impl Drop for Merge {
    fn drop(&mut self) {
        if self.store.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            Store::shutdown(&self.store);
        }
    }
}

/// Constructor of `snapshot-merge`, listed in [`super::super::TYPES`].
pub(crate) fn construct(ctor: &mut Ctor<'_>) -> Result<Arc<dyn Target>> {
    let (store, claim) = attach_store(ctor, true)?;
    match Arc::new(
        Merge {
            store,
            _claim: claim,
        },
        GFP_KERNEL,
    ) {
        Ok(t) => Ok(t),
        Err(_) => fail!(
            ctor.reply,
            ENOMEM,
            "out of memory constructing snapshot-merge"
        ),
    }
}

impl Merge {
    /// Chunk parts of `[offset, offset + len)`: (sectors from the piece's
    /// start, length, chunk, sectors into the chunk).
    fn parts(&self, offset: u64, len: u64) -> impl Iterator<Item = (u64, u64, u64, u64)> {
        chunk_parts(self.store.chunk_sectors(), offset, len)
    }

    fn read(&self, mut io: Io<'_>) -> Mapped {
        let store = &*self.store;
        let cs = store.chunk_sectors();
        let st = store.state.lock();
        for (skip, n, chunk, within) in self.parts(io.offset(), io.len()) {
            match st.table.get(chunk) {
                Some(new) => io.remap_part(skip, n, &store.cow, new * cs + within, TAG_COW),
                None => io.remap_part(skip, n, &store.origin_dev, chunk * cs + within, TAG_COW),
            }
        }
        drop(st);
        io.remapped()
    }

    fn write(&self, io: Io<'_>) -> Mapped {
        let this = &self.store;
        // Other snapshots of the origin first (for the whole piece: a part
        // that goes to the COW device costs them a needless copy at most).
        let io = match this.origin.get() {
            Some(origin) => match origin.copy_first(io) {
                Ok(io) => io,
                Err(held) => return held,
            },
            None => io,
        };
        let mut io = io;
        let cs = this.chunk_sectors();
        let mut st = this.state.lock();
        let merging = st.merge.chunk();
        if merging.is_some_and(|m| this.chunks(io.offset(), io.len()).contains(&m)) {
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
        for (skip, n, chunk, within) in self.parts(io.offset(), io.len()) {
            match st.table.get(chunk) {
                Some(new) => {
                    // Counted: the merge of this chunk waits for it.
                    let b = Store::bucket(chunk);
                    this.tracked[b].add(io.completions_for(skip, n));
                    io.remap_part(skip, n, &this.cow, new * cs + within, TAG_TRACK + b as u32);
                }
                None => io.remap_part(skip, n, &this.origin_dev, chunk * cs + within, TAG_COW),
            }
        }
        drop(st);
        io.remapped()
    }
}

impl Target for Merge {
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

    fn resume(&self) {
        self.store.state.lock().active = true;
        self.store.worker.kick(&self.store);
    }

    fn presuspend(&self, noflush: bool) -> Result {
        // The merge pauses (the chunk under way finishes) and goes on at
        // the next resume.
        self.store.state.lock().active = false;
        if let Some(origin) = self.store.origin.get() {
            // A merge waiting for other snapshots' copies stops waiting.
            origin.commits.bump();
        }
        if noflush {
            self.store.requeue_held();
            if let Some(origin) = self.store.origin.get() {
                origin.requeue_held();
            }
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
        let step = match st.merge {
            Step::Next => "next",
            Step::Drain { .. } => "drain",
            Step::Copying { .. } => "copying",
            Step::Copied { .. } => "copied",
            Step::Done => "done",
        };
        write!(
            out,
            "exceptions={} chunks_merged={} writes_held={} merge={step} chunk_sectors={}",
            st.table.len(),
            store.chunks_copied.load(Ordering::Relaxed),
            store.held_writes.load(Ordering::Relaxed),
            store.chunk_sectors()
        )
    }
}
