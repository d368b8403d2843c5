// SPDX-License-Identifier: GPL-2.0
//! `thin <pool dev> <dev_id>` (dm-thin's thin volume): a device of the
//! pool's, provisioned on first write. Reads of unprovisioned blocks
//! return zeros; the first write to a block takes a data block (zeroed
//! first unless the write covers it or the pool skips zeroing); a write
//! to a block shared with a snapshot copies it to a new block first
//! (sharing broken once per device and block, as dm). FLUSH and FUA
//! commit the pool's metadata after flushing its data device; DISCARD of
//! whole blocks unmaps them (space back to the pool once nothing maps
//! them).
//!
//! Every piece is mapped on the disk's map worker (the metadata cache
//! sleeps), one at a time per pool under its mutex: correct first; the
//! fast paths (mapped blocks remapped inline, provisioning batched) come
//! with the performance work.

use super::thin_metadata::{Mapping, PoolError};
use super::thin_pool::{enodata, Mode, NoSpaceVerdict, PoolShared, PoolState, POOL_KIND};
use super::{write_device, Ctor, Done, Io, Mapped, Target};
use crate::sys::bdev::{BlockDevice, WriteFlags};
use crate::sys::disk::{Op, Status};
use crate::sys::limits::QueueLimits;
use crate::vblk::message::{fail, first_word};
use crate::vblk::peers::PeerRef;
use crate::vblk::slots::Slots;
use core::fmt::Write;
use kernel::error::code::{EINVAL, ENODEV, ENOMEM};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

/// A whole-block first write in flight: its block is mapped when the
/// write has completed (a commit meanwhile must not name a block whose
/// data is not there: another device's old data would show).
struct Pending {
    block: u64,
    data: u64,
}

/// Whole-block first writes in flight at once (more are requeued).
const MAX_PENDING: usize = 256;

/// A thin's use of its pool: its device id counts as open (a `delete`
/// of it is refused, as dm's) for as long as the use lives.
struct PoolUse {
    pool: PeerRef<PoolShared>,
    dev_id: u64,
}

impl PoolUse {
    fn new(pool: PeerRef<PoolShared>, dev_id: u64) -> Result<Self> {
        if let Some(p) = pool.get() {
            p.state.lock().open_thin(dev_id)?;
        }
        Ok(PoolUse { pool, dev_id })
    }
}

impl Drop for PoolUse {
    fn drop(&mut self) {
        if let Some(p) = self.pool.get() {
            p.state.lock().close_thin(self.dev_id);
        }
    }
}

#[pin_data]
pub(crate) struct Thin {
    pool_dev: Arc<BlockDevice>,
    /// dm's external origin: what unprovisioned blocks read, and what a
    /// first partial write to a block is merged with (never written).
    origin: Option<Arc<BlockDevice>>,
    pool: PoolUse,
    dev_id: u64,
    length: u64,
    #[pin]
    pending: Mutex<Slots<Pending>>,
}

impl Thin {
    fn shared(&self) -> &PoolShared {
        self.pool.pool.get().expect("thin-pool registry entry")
    }
}

/// Constructor listed in [`super::TYPES`].
pub(super) fn construct(ctor: &mut Ctor<'_>) -> Result<Arc<dyn Target>> {
    let mut words = ctor.args.split_ascii_whitespace();
    let (Some(pool_text), Some(id)) = (words.next(), words.next()) else {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin takes <pool dev> <dev_id> [<external origin dev>]"
        );
    };
    let origin_text = words.next();
    if let Some(w) = words.next() {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin: unexpected '{}' after the external origin",
            first_word(w)
        );
    }
    let Ok(dev_id) = id.parse::<u64>() else {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin: device id '{}' is not a number",
            first_word(id)
        );
    };
    let pool_dev = ctor.open_device(pool_text)?;
    let Some(index) = pool_dev.vblk_index() else {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin: '{}' is not a vblk thin-pool device",
            first_word(pool_text)
        );
    };
    let pool = match ctor
        .peers
        .acquire::<PoolShared>(POOL_KIND, u64::from(index), || Err(ENODEV))
    {
        Ok(p) => p,
        Err(e) if e == ENODEV => {
            return fail!(
                ctor.reply,
                ENODEV,
                "thin: '{}' has no active thin-pool table",
                first_word(pool_text)
            )
        }
        Err(_) => {
            return fail!(
                ctor.reply,
                EINVAL,
                "thin: '{}' is not a thin-pool",
                first_word(pool_text)
            )
        }
    };
    let Some(shared) = pool.get() else {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin: '{}' is not a thin-pool",
            first_word(pool_text)
        );
    };
    match shared.with(|m, sc| m.exists(dev_id, sc)) {
        Ok(true) => {}
        Ok(false) => {
            return fail!(
                ctor.reply,
                enodata(),
                "thin: the pool has no device {dev_id} (send it 'create_thin {dev_id}' first)"
            )
        }
        Err(e) => return fail!(ctor.reply, kernel::error::code::EIO, "thin: {e}"),
    }
    let origin = match origin_text {
        None => None,
        Some(text) => {
            let dev = ctor.open_device(text)?;
            if dev.devt() == pool_dev.devt()
                || dev.devt() == shared.data_dev.devt()
                || dev.devt() == shared.meta_dev.devt()
            {
                return fail!(
                    ctor.reply,
                    EINVAL,
                    "thin: the external origin '{}' is the pool or one of its devices",
                    first_word(text)
                );
            }
            Some(dev)
        }
    };
    let Ok(slots) = Slots::new(MAX_PENDING) else {
        return fail!(ctor.reply, ENOMEM, "out of memory constructing thin");
    };
    let Ok(pool) = PoolUse::new(pool, dev_id) else {
        return fail!(ctor.reply, ENOMEM, "out of memory constructing thin");
    };
    let length = ctor.length;
    let thin = pin_init!(Thin {
        pool_dev,
        origin,
        pool,
        dev_id,
        length,
        pending <- kernel::new_mutex!(slots, "vblk::Thin::pending"),
    });
    match Arc::pin_init(thin, GFP_KERNEL) {
        Ok(t) => Ok(t),
        Err(_) => fail!(ctor.reply, ENOMEM, "out of memory constructing thin"),
    }
}

/// Where a write goes.
enum Place {
    /// A block mapped to this device alone (now, or just provisioned
    /// and prepared).
    Mapped { data: u64, new: bool },
    /// A new block the write covers whole (the block was unmapped, or
    /// shared): mapped when it completed.
    Whole { data: u64 },
}

/// Why a write could not be placed.
enum WriteError {
    /// The data device is full.
    NoSpace,
    /// The pool is read-only and the write needs a new block.
    ReadOnly,
    /// The metadata or data device failed.
    Io,
}

impl From<PoolError> for WriteError {
    fn from(_: PoolError) -> Self {
        WriteError::Io
    }
}

impl Thin {
    /// Whether virtual block `block` starts inside the external origin.
    fn origin_covers(&self, block: u64, bs: u64) -> bool {
        self.origin
            .as_deref()
            .is_some_and(|o| block.saturating_mul(bs) < o.sectors())
    }

    /// Where a write of sectors `[lo, hi)` of virtual block `block` goes:
    /// the mapped block if not shared; else a new one: for a write
    /// covering the block whole, mapped when it completed; otherwise
    /// mapped now, after it was zeroed or filled with the shared block's
    /// (or the external origin's) data.
    fn block_for_write(&self, block: u64, lo: u64, hi: u64) -> Result<Place, WriteError> {
        let pool = self.shared();
        let bs = pool.block_sectors;
        let mut st = pool.state.lock();
        let st = &mut *st;
        let found = pool.with_locked(st, |m, sc| m.lookup(self.dev_id, block, sc))?;
        if let Some(Mapping {
            data_block,
            shared: false,
        }) = found
        {
            return Ok(Place::Mapped {
                data: data_block,
                new: false,
            });
        }
        if st.mode != Mode::Write {
            return Err(WriteError::ReadOnly);
        }
        let Some(new) = pool.alloc_data(st)? else {
            return Err(WriteError::NoSpace);
        };
        let whole = lo == 0 && hi == bs;
        if whole {
            // Nothing of the origin, or of a shared block, survives a
            // whole write: no zeroing, no copy; the old block (if any)
            // stays mapped until the write is in.
            return Ok(Place::Whole { data: new });
        }
        let prepared = self.prepare(st, found, block, new);
        if prepared.is_err() {
            let _ = pool.with_locked(st, |m, sc| m.free_data(new, sc));
            return Err(WriteError::Io);
        }
        pool.with_locked(st, |m, sc| m.insert(self.dev_id, block, new, sc))?;
        Ok(Place::Mapped {
            data: new,
            new: true,
        })
    }

    /// Fills new data block `new` before a partial first write to
    /// virtual block `block` lands in it: with the shared block's data
    /// (`found`), else the external origin's (zeros past its end), else
    /// zeros (unless the pool skips zeroing). Through the pool's buffer,
    /// a piece of up to 1 MiB at a time (blocks reach 1 GiB).
    fn prepare(&self, st: &mut PoolState, found: Option<Mapping>, block: u64, new: u64) -> Result {
        let pool = self.shared();
        let bs = pool.block_sectors;
        let origin = self
            .origin
            .as_deref()
            .filter(|_| self.origin_covers(block, bs));
        if found.is_none() && origin.is_none() && st.features.skip_block_zeroing {
            return Ok(());
        }
        let step = (st.buf.len() / 512) as u64;
        let mut at = 0;
        while at < bs {
            let n = step.min(bs - at);
            let bytes = (n * 512) as usize;
            match (found, origin) {
                (Some(m), _) => {
                    pool.data_dev
                        .read_at(m.data_block * bs + at, &mut st.buf, 0..bytes)?
                }
                (None, Some(o)) => {
                    st.buf.fill(0);
                    let have = o.sectors().saturating_sub(block * bs + at).min(n);
                    if have > 0 {
                        o.read_at(block * bs + at, &mut st.buf, 0..(have * 512) as usize)?;
                    }
                }
                // Zeros: the buffer is filled once.
                (None, None) if at == 0 => st.buf.fill(0),
                (None, None) => {}
            }
            pool.data_dev
                .write_at(new * bs + at, &st.buf, 0..bytes, WriteFlags::default())?;
            at += n;
        }
        Ok(())
    }

    fn read(&self, mut io: Io<'_>) -> Mapped {
        let pool = self.shared();
        let bs = pool.block_sectors;
        let (start, len) = (io.offset(), io.len());
        let mut at = 0;
        while at < len {
            let block = (start + at) / bs;
            let within = (start + at) % bs;
            let n = (bs - within).min(len - at);
            let found = pool.with(|m, sc| m.lookup(self.dev_id, block, sc));
            match found {
                Ok(Some(m)) => io.remap_part(at, n, &pool.data_dev, m.data_block * bs + within, 0),
                // Unprovisioned: the external origin's data where it has
                // some, zeros past its end.
                Ok(None) => {
                    let sector = start + at;
                    let from_origin = match &self.origin {
                        Some(o) => o.sectors().saturating_sub(sector).min(n),
                        None => 0,
                    };
                    if let Some(o) = self.origin.as_deref().filter(|_| from_origin > 0) {
                        io.remap_part(at, from_origin, o, sector, 0);
                    }
                    io.zero_part(at + from_origin, n - from_origin);
                }
                Err(_) => return io.kill(Status::IO_ERROR),
            }
            at += n;
        }
        io.remapped()
    }

    fn write(&self, mut io: Io<'_>) -> Mapped {
        let pool = self.shared();
        let bs = pool.block_sectors;
        let (start, len) = (io.offset(), io.len());
        // A block with a whole-block first write in flight: this write
        // comes back when that one is mapped.
        let first = start / bs;
        let last = (start + len - 1) / bs;
        if self
            .pending
            .lock()
            .any(|p| (first..=last).contains(&p.block))
        {
            return io.requeue();
        }
        // Each block placed first (provisioned or unshared), then the
        // piece sent: a failure sends nothing.
        let fua = io.info().flags.fua();
        let mut whole = false;
        let mut at = 0;
        while at < len {
            let block = (start + at) / bs;
            let within = (start + at) % bs;
            let n = (bs - within).min(len - at);
            let data = match self.block_for_write(block, within, within + n) {
                Ok(Place::Mapped { data, new }) => {
                    // A FUA write is durable when it completes: the
                    // mapping it goes to must be too (whole blocks: when
                    // mapped, in `finish`).
                    if new && fua && pool.commit().is_err() {
                        return io.kill(Status::IO_ERROR);
                    }
                    data
                }
                Ok(Place::Whole { data }) => {
                    if self.pending.lock().put(Pending { block, data }).is_err() {
                        let _ = pool.with(|m, sc| m.free_data(data, sc));
                        return io.requeue();
                    }
                    whole = true;
                    data
                }
                // Waits for space (a resize) unless the pool errors.
                Err(WriteError::NoSpace) => match pool.no_space_verdict() {
                    NoSpaceVerdict::Queue => return io.requeue(),
                    NoSpaceVerdict::Fail => return io.kill(Status::NO_SPACE),
                },
                Err(WriteError::ReadOnly | WriteError::Io) => return io.kill(Status::IO_ERROR),
            };
            io.remap_part(at, n, &pool.data_dev, data * bs + within, 0);
            at += n;
        }
        if whole {
            io.finish_later();
        }
        io.remapped()
    }

    fn discard(&self, io: Io<'_>) -> Mapped {
        let pool = self.shared();
        let bs = pool.block_sectors;
        let mut st = pool.state.lock();
        let st = &mut *st;
        match st.mode {
            Mode::Fail => return io.kill(Status::IO_ERROR),
            // Nothing may change: the discard is a no-op (as dm's).
            Mode::ReadOnly => return io.complete(),
            Mode::Write => {}
        }
        let passdown = st.passdown(&pool.data_dev);
        // Whole blocks only (dm unmaps only those too); a block nothing
        // maps any more is discarded on the data device too, before it
        // can be handed out again (the mutex is held meanwhile).
        let first = io.offset().div_ceil(bs);
        let end = (io.offset() + io.len()) / bs;
        for block in first..end {
            let freed = pool.with_locked(st, |m, sc| {
                let Some(found) = m.lookup(self.dev_id, block, sc)? else {
                    return Ok(None);
                };
                m.remove(self.dev_id, block, sc)?;
                Ok((m.data_block_count(found.data_block, sc)? == 0).then_some(found.data_block))
            });
            match freed {
                Ok(Some(data)) if passdown => {
                    // A failed passdown loses nothing: the block is free.
                    let _ = pool.data_dev.discard_sync(data * bs, bs);
                }
                Ok(_) => {}
                Err(_) => return io.kill(Status::IO_ERROR),
            }
        }
        io.complete()
    }
}

impl Target for Thin {
    fn finish(&self, done: &mut Done<'_>) {
        if done.info().op != Op::Write {
            return;
        }
        let pool = self.shared();
        let bs = pool.block_sectors;
        let ok = done.status().is_ok();
        let (first, last) = (done.offset() / bs, (done.offset() + done.len() - 1) / bs);
        let mut mapped = false;
        for block in first..=last {
            let Some(p) = self.pending.lock().take_oldest(|p| p.block == block) else {
                continue;
            };
            let mut st = pool.state.lock();
            // Read-only since the block was taken: its allocation went
            // with the dropped transaction; the write is lost.
            if st.mode != Mode::Write {
                done.fail(Status::IO_ERROR);
                continue;
            }
            let r = if ok {
                mapped = true;
                pool.with_locked(&mut st, |m, sc| m.insert(self.dev_id, p.block, p.data, sc))
            } else {
                pool.with_locked(&mut st, |m, sc| m.free_data(p.data, sc))
            };
            if r.is_err() {
                done.fail(Status::IO_ERROR);
            }
        }
        if mapped && done.info().flags.fua() && pool.commit().is_err() {
            done.fail(Status::IO_ERROR);
        }
    }

    fn map(&self, io: Io<'_>) -> Mapped {
        match io.op() {
            Op::Read => self.read(io),
            Op::Write => self.write(io),
            Op::Discard => self.discard(io),
            Op::Flush => match self.shared().commit() {
                Ok(()) => io.complete(),
                Err(_) => io.kill(Status::IO_ERROR),
            },
            _ => io.kill(Status::NOT_SUPPORTED),
        }
    }

    fn needs_worker(&self, _op: Op) -> bool {
        // Lookups and provisioning read and write metadata synchronously.
        true
    }

    fn wants_flush(&self) -> bool {
        true
    }

    fn devices(&self, f: &mut dyn FnMut(&BlockDevice, u64, u64)) {
        f(&self.pool_dev, 0, self.length.min(self.pool_dev.sectors()));
        if let Some(o) = &self.origin {
            f(o, 0, self.length.min(o.sectors()));
        }
    }

    fn limits(&self, limits: &mut QueueLimits) {
        // Requests stay within a data block (as dm's max_io_len).
        let bs = self.shared().block_sectors as u32;
        limits.set_io_hints(bs, 0, bs * 512);
        // A FLUSH commits the mappings: it must arrive even when the data
        // device has no cache (its writes are durable, the mappings not).
        limits.force_write_cache();
    }

    fn supports_discard(&self) -> bool {
        !self.shared().state.lock().features.ignore_discard
    }

    fn supports_write_zeroes(&self) -> bool {
        false
    }

    fn postsuspend(&self) {
        let _ = self.shared().commit();
    }

    fn table_args(&self, out: &mut dyn Write) -> core::fmt::Result {
        write_device(out, &self.pool_dev)?;
        write!(out, " {}", self.dev_id)?;
        if let Some(o) = &self.origin {
            out.write_char(' ')?;
            write_device(out, o)?;
        }
        Ok(())
    }

    fn status(&self, out: &mut dyn Write) -> core::fmt::Result {
        let pool = self.shared();
        let bs = pool.block_sectors;
        let r = pool.with(|m, sc| {
            Ok((
                m.mapped_blocks(self.dev_id, sc)?,
                m.highest_mapped(self.dev_id, sc)?,
            ))
        });
        match r {
            Ok((mapped, Some(h))) => write!(out, "{} {}", mapped * bs, (h + 1) * bs - 1),
            Ok((mapped, None)) => write!(out, "{} -", mapped * bs),
            Err(_) => out.write_str("Fail"),
        }
    }
}
