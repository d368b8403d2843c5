// SPDX-License-Identifier: GPL-2.0
//! The I/O path: a request is split at line boundaries into pieces, and
//! each piece goes to its line's target as an [`Io`], which the target
//! consumes into a [`Mapped`] verdict: sent on to lower devices, taken
//! over by the target (completed, or held as a [`HeldIo`] to be
//! re-dispatched later from the target's own context), requeued, or
//! killed with a status.
//!
//! The request keeps the table it was mapped with (an `Arc`) until it
//! ends, so lower bios always complete against the targets that sent
//! them. Tables are swapped only while the queue is quiesced and idle.
//!
//! A target that must see a piece's data after the lower I/O (decrypt a
//! read, corrupt it on purpose) calls [`Io::finish_later`]: once every
//! lower bio of the request completed, the request goes to the disk's
//! workqueue and each of its pieces to its target's
//! [`Target::finish`](super::target::Target::finish) as a [`Done`].

use super::layout;
use super::map::Table;
use crate::sys::bdev::BlockDevice;
use crate::sys::bounce::BouncePool;
pub(crate) use crate::sys::disk::EndIo;
use crate::sys::disk::{Finished, Op, Pending, QueueHandler, Request, RqInfo, Status};
use kernel::prelude::*;
use kernel::sync::{Arc, SpinLock};

/// Tag of the cache flushes the framework sends itself: no line has this
/// line number; the low half is the device's index in `Table::devices`.
const FLUSH_LINE: u64 = u32::MAX as u64;

/// The I/O side of a live device: the active table.
#[pin_data]
pub(crate) struct Queue {
    #[pin]
    active: SpinLock<Arc<Table>>,
}

impl Queue {
    pub(crate) fn new(table: Arc<Table>) -> impl PinInit<Self> {
        pin_init!(Queue {
            active <- kernel::new_spinlock!(table, "vblk::Queue::active"),
        })
    }

    /// The active table.
    pub(crate) fn table(&self) -> Arc<Table> {
        self.active.lock().clone()
    }

    /// Makes `table` active and returns the old one. Only while the disk
    /// is quiesced and idle, so no request uses the old table.
    pub(crate) fn swap(&self, table: Arc<Table>) -> Arc<Table> {
        core::mem::replace(&mut *self.active.lock(), table)
    }
}

impl QueueHandler for Queue {
    type RqData = Arc<Table>;

    fn queue_rq(&self, rq: Request<Self>) {
        let info = rq.info();
        match info.op {
            Op::Other => rq.end(Status::NOT_SUPPORTED),
            Op::Flush => {
                // An empty flush: every lower device's cache, once, and
                // the lines that commit state of their own on a flush
                // (`Target::wants_flush`) get it as an empty piece.
                let rq = rq.dispatch(self.table());
                let table = rq.data();
                for (i, dev) in table.devices.iter().enumerate() {
                    rq.flush_to(dev, (FLUSH_LINE << 32) | i as u64);
                }
                if table.uses_flush {
                    for (i, line) in table.lines.iter().enumerate() {
                        if !line.target.wants_flush() {
                            continue;
                        }
                        let io = Io::new(&rq, info, i as u32, 0, 0, 0);
                        if !apply(&rq, line.target.map(io)) {
                            return;
                        }
                    }
                }
            }
            _ => {
                let table = self.table();
                if table.uses_worker && !rq.in_worker() && needs_worker(&table, info) {
                    return rq.defer();
                }
                map_request(rq.dispatch(table), info)
            }
        }
    }

    fn lower_done(table: &Arc<Table>, info: &RqInfo, tag: u64, status: Status) -> EndIo {
        if tag >> 32 == FLUSH_LINE {
            if status.is_ok() {
                return EndIo::Done(status);
            }
            return EndIo::Done(table.flush_failed(tag as u32 as usize, status));
        }
        match table.lines.get((tag >> 32) as usize) {
            Some(line) => line.target.end_io(info, tag as u32, status),
            None => EndIo::Done(status),
        }
    }

    fn finish(&self, mut rq: Finished<Self>) {
        let info = rq.info();
        let table = rq.data().clone();
        for piece in layout::pieces(&table.starts, table.size, info.sector, info.sectors.into()) {
            if !rq.finish_requested(piece.line as u32) {
                continue;
            }
            let mut done = Done {
                rq: &mut rq,
                info,
                line: piece.line,
                skip: piece.skip,
                offset: piece.offset,
                len: piece.len,
            };
            table.lines[piece.line].target.finish(&mut done);
        }
    }
}

/// Whether a target of the request's lines must map it from the disk's
/// workqueue (it waits for its own I/O while mapping).
fn needs_worker(table: &Table, info: RqInfo) -> bool {
    layout::pieces(&table.starts, table.size, info.sector, info.sectors.into())
        .any(|piece| table.lines[piece.line].target.needs_worker(info.op))
}

/// Hands each piece of a data request to its line's target, until one
/// kills or requeues the request.
fn map_request(rq: Pending<Queue>, info: RqInfo) {
    let len = u64::from(info.sectors);
    let table = rq.data();
    let mut mapped = 0;
    for piece in layout::pieces(&table.starts, table.size, info.sector, len) {
        let io = Io::new(
            &rq,
            info,
            piece.line as u32,
            piece.skip,
            piece.offset,
            piece.len,
        );
        if !apply(&rq, table.lines[piece.line].target.map(io)) {
            return;
        }
        mapped += piece.len;
    }
    // Past the end of the table (a request queued before it shrank).
    if mapped < len {
        rq.fail(Status::IO_ERROR);
    }
}

/// Carries out a piece's verdict on its request; `false` if the request
/// needs no more pieces mapped (killed or requeued).
fn apply(rq: &Pending<Queue>, mapped: Mapped) -> bool {
    match mapped.0 {
        Verdict::Remapped | Verdict::Submitted => true,
        Verdict::Kill(status) => {
            rq.fail(status);
            false
        }
        Verdict::Requeue => {
            rq.requeue();
            false
        }
    }
}

/// What [`Target::map`](super::target::Target::map) did with a piece. Only
/// the piece's own methods make one, so every piece is answered.
#[must_use = "the verdict goes back to the framework"]
pub(crate) struct Mapped(Verdict);

/// The verdicts (as dm's `DM_MAPIO_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Sent on to lower devices ([`Io::remap`], [`Io::remapped`]).
    Remapped,
    /// Taken over by the target: completed here ([`Io::zero_fill`],
    /// [`Io::complete`]) or held to be re-dispatched ([`Io::hold`]).
    Submitted,
    /// The whole request is retried later ([`Io::requeue`]).
    Requeue,
    /// The request fails with this status ([`Io::kill`]).
    Kill(Status),
}

/// The part of a request that falls in one line, as its target sees it.
pub(crate) struct Io<'a> {
    rq: &'a Pending<Queue>,
    info: RqInfo,
    /// Sectors from the request's start to the piece's.
    skip: u64,
    /// Sectors from the line's start to the piece's.
    offset: u64,
    len: u64,
    line: u32,
    /// Sectors sent on so far (a read must be covered: see
    /// [`Io::remapped`]).
    sent: u64,
}

impl<'a> Io<'a> {
    /// Piece `skip..skip + len` of request `rq` (sectors from its start),
    /// at `offset` in table line `line`, nothing sent yet.
    fn new(
        rq: &'a Pending<Queue>,
        info: RqInfo,
        line: u32,
        skip: u64,
        offset: u64,
        len: u64,
    ) -> Self {
        Io {
            rq,
            info,
            skip,
            offset,
            len,
            line,
            sent: 0,
        }
    }

    /// What the request asks for (its operation, flags, sectors).
    pub(crate) fn info(&self) -> &RqInfo {
        &self.info
    }

    pub(crate) fn op(&self) -> Op {
        self.info.op
    }

    /// First sector of the piece, relative to the start of the line.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Length of the piece in sectors.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Sends the whole piece to `dev` at `sector`.
    pub(crate) fn remap(mut self, dev: &BlockDevice, sector: u64) -> Mapped {
        self.remap_part(0, self.len, dev, sector, 0);
        self.remapped()
    }

    /// The piece was sent on with [`Io::remap_part`], [`Io::remap_range`]
    /// or [`Io::write_copy`]. A piece of which fewer sectors were sent than
    /// it has fails with an I/O error: a read would otherwise return
    /// whatever its pages held before.
    pub(crate) fn remapped(self) -> Mapped {
        if self.sent < self.len {
            return self.kill(Status::IO_ERROR);
        }
        Mapped(Verdict::Remapped)
    }

    /// Parks the piece: the target keeps the returned [`HeldIo`] (which
    /// keeps the request in flight) and re-dispatches, requeues or kills it
    /// later, from its own context. Nothing is sent now.
    pub(crate) fn hold(self) -> (HeldIo, Mapped) {
        let held = HeldIo {
            rq: self.rq.clone(),
            info: self.info,
            skip: self.skip,
            offset: self.offset,
            len: self.len,
            line: self.line,
            answered: false,
        };
        (held, Mapped(Verdict::Submitted))
    }

    /// Retries the whole request later (after the lower I/O already sent
    /// for it completed): it goes back to the queue and is mapped again,
    /// by the table live then.
    pub(crate) fn requeue(self) -> Mapped {
        Mapped(Verdict::Requeue)
    }

    /// Fails the request with `status`.
    pub(crate) fn kill(self, status: Status) -> Mapped {
        Mapped(Verdict::Kill(status))
    }

    /// Completes the piece without lower I/O: a write, discard or
    /// write-zeroes the target has nothing to do for (dm-zero), or one it
    /// drops on purpose (flakey). A read cannot be completed so (its data
    /// would be stale) and fails.
    pub(crate) fn complete(self) -> Mapped {
        if self.info.op == Op::Read {
            return self.kill(Status::IO_ERROR);
        }
        Mapped(Verdict::Submitted)
    }

    /// Sends sectors `[skip, skip + len)` of the piece to `dev` at
    /// `sector`; the completion reaches [`super::target::Target::end_io`]
    /// with `tag`. The range is clamped to the piece.
    pub(crate) fn remap_part(
        &mut self,
        skip: u64,
        len: u64,
        dev: &BlockDevice,
        sector: u64,
        tag: u32,
    ) {
        let len = len.min(self.len.saturating_sub(skip));
        self.sent += len;
        if len > 0 {
            let tag = (u64::from(self.line) << 32) | u64::from(tag);
            self.rq.clone_to(self.skip + skip, len, dev, sector, tag);
        }
    }

    /// How many times [`super::target::Target::end_io`] will be called for
    /// a [`Io::remap_part`] of the same sectors: a target that counts
    /// lower I/O in flight (a snapshot's reads of the origin) adds this
    /// before it remaps, and takes one off per `end_io`.
    pub(crate) fn completions_for(&self, skip: u64, len: u64) -> u32 {
        let len = len.min(self.len.saturating_sub(skip));
        if len == 0 {
            return 0;
        }
        self.rq.clone_count(self.skip + skip, len)
    }

    /// For a DISCARD or WRITE_ZEROES piece: sends the same operation for
    /// `len` sectors of `dev` from `sector` on (a striped target sends each
    /// stripe its share as one range). Fails the request for other
    /// operations, whose data must go with [`Io::remap_part`].
    pub(crate) fn remap_range(&mut self, dev: &BlockDevice, sector: u64, len: u64, tag: u32) {
        if !matches!(self.info.op, Op::Discard | Op::WriteZeroes) {
            return self.rq.fail(Status::IO_ERROR);
        }
        let tag = (u64::from(self.line) << 32) | u64::from(tag);
        self.sent += len;
        // A bio holds at most 4 GiB (its size is u32 bytes).
        let mut left = len;
        let mut at = sector;
        while left > 0 {
            let n = left.min(u64::from(u32::MAX >> 9));
            self.rq.range_to(dev, at, n as u32, tag);
            left -= n;
            at += n;
        }
    }

    /// Writes the whole piece to `dev` at `sector` from a copy of its data
    /// in pages of `pool` (the caller's pages are never changed): `fill`
    /// gets each page's bytes and their byte offset in the piece and may
    /// change them before they are written. Completions reach
    /// [`super::target::Target::end_io`] with `tag`.
    ///
    /// Only for writes mapped from the worker (the target's
    /// [`super::target::Target::needs_worker`] says so for writes): the
    /// copy waits for pool pages, which come back only as earlier bounce
    /// bios complete; inside the submitter those bios may still be queued
    /// behind it (`current->bio_list`), and the wait would never end.
    pub(crate) fn write_copy(
        &mut self,
        pool: &BouncePool,
        dev: &BlockDevice,
        sector: u64,
        tag: u32,
        fill: &mut dyn FnMut(u64, &mut [u8]),
    ) {
        let tag = (u64::from(self.line) << 32) | u64::from(tag);
        let part = self.skip..self.skip + self.len;
        self.sent += self.len;
        self.rq.bounce_write(part, pool, dev, sector, tag, fill);
    }

    /// Asks for [`super::target::Target::finish`] to see this piece (and
    /// the request's other pieces) after all the request's lower I/O
    /// completed, in process context.
    pub(crate) fn finish_later(&mut self) {
        self.rq.finish_later(self.line);
    }

    /// Zeroes sectors `[skip, skip + len)` of a read piece (a part with
    /// nothing behind it: an unprovisioned thin block); they count as
    /// sent. Clamped to the piece.
    pub(crate) fn zero_part(&mut self, skip: u64, len: u64) {
        let len = len.min(self.len.saturating_sub(skip));
        if len > 0 {
            self.rq.zero_range(self.skip + skip, len);
            self.sent += len;
        }
    }

    /// Completes a read piece with zeros.
    pub(crate) fn zero_fill(self) -> Mapped {
        self.rq.zero_range(self.skip, self.len);
        Mapped(Verdict::Submitted)
    }
}

/// A piece a target parked ([`Io::hold`]): it keeps its request in flight
/// (a suspend waits for it) until the target re-dispatches, requeues or
/// kills it. One dropped unanswered fails its request with an I/O error
/// (a target that lost it cannot return stale data).
pub(crate) struct HeldIo {
    rq: Pending<Queue>,
    info: RqInfo,
    skip: u64,
    offset: u64,
    len: u64,
    line: u32,
    answered: bool,
}

impl Drop for HeldIo {
    fn drop(&mut self) {
        if !self.answered {
            self.rq.fail(Status::IO_ERROR);
        }
    }
}

impl HeldIo {
    /// First sector of the piece, relative to the start of the line.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Length of the piece in sectors.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Copies the piece's data from byte `at` of the piece on into `buf`
    /// (clamped to the piece): a write's new data, for a target that
    /// computes from it before anything is sent.
    pub(crate) fn read_data(&self, at: u64, buf: &mut [u8]) {
        let n = self.clamp(at, buf.len());
        self.rq.copy_out(self.skip * 512 + at, &mut buf[..n]);
    }

    /// Copies `buf` into the piece's data from byte `at` on (clamped to
    /// the piece): a read the target serves itself (data rebuilt from
    /// parity), then answered with [`HeldIo::complete`].
    pub(crate) fn write_data(&self, at: u64, buf: &[u8]) {
        let n = self.clamp(at, buf.len());
        self.rq.copy_in(self.skip * 512 + at, &buf[..n]);
    }

    /// How many of `want` bytes from `at` on lie inside the piece.
    fn clamp(&self, at: u64, want: usize) -> usize {
        let left = (self.len * 512).saturating_sub(at);
        want.min(usize::try_from(left).unwrap_or(usize::MAX))
    }

    /// Answers the piece: the target did its I/O itself (a write's data
    /// and parity are on the legs, a read's data was copied in with
    /// [`HeldIo::write_data`]). A failed `status` fails the request.
    pub(crate) fn complete(mut self, status: Status) {
        self.answered = true;
        if !status.is_ok() {
            self.rq.fail(status);
        }
    }

    /// Maps the piece again with its line's target, here (process context:
    /// the target's worker; not under a lock the target's `map` takes).
    pub(crate) fn redispatch(self) {
        let table = self.rq.data().clone();
        if let Some(line) = table.lines.get(self.line as usize) {
            self.submit_with(|io| line.target.map(io));
        }
    }

    /// Hands the piece to `f` as an [`Io`] again, here, to be sent on as
    /// the target decided when it held it (without mapping it anew);
    /// process context, as [`HeldIo::redispatch`].
    pub(crate) fn submit_with(mut self, f: impl FnOnce(Io<'_>) -> Mapped) {
        self.answered = true;
        let io = Io::new(
            &self.rq,
            self.info,
            self.line,
            self.skip,
            self.offset,
            self.len,
        );
        apply(&self.rq, f(io));
    }

    /// Retries the whole request later ([`Io::requeue`]): for a `noflush`
    /// suspend, which must not wait for held pieces.
    pub(crate) fn requeue(mut self) {
        self.answered = true;
        self.rq.requeue();
    }

    /// Fails the request with `status`.
    pub(crate) fn kill(mut self, status: Status) {
        self.answered = true;
        self.rq.fail(status);
    }
}

/// A piece of a finished request, as [`super::target::Target::finish`]
/// sees it: the lower I/O is over, the request has not ended yet.
pub(crate) struct Done<'a> {
    rq: &'a mut Finished<Queue>,
    info: RqInfo,
    /// The piece's table line (its lower bios' retry group).
    line: usize,
    skip: u64,
    /// Sectors from the line's start to the piece's.
    offset: u64,
    len: u64,
}

impl Done<'_> {
    /// What the request asked for.
    pub(crate) fn info(&self) -> &RqInfo {
        &self.info
    }

    /// First sector of the piece, relative to the start of the line.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Length of the piece in sectors.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Calls `f(offset, bytes)` for the piece's data, one page segment at
    /// a time (`offset`: bytes from the piece's start); `f` may change the
    /// bytes (for reads, what the submitter gets: decryption in place).
    pub(crate) fn modify(&mut self, f: &mut dyn FnMut(u64, &mut [u8])) {
        self.rq.visit_data(self.skip * 512, self.len * 512, f);
    }

    /// Fails the request (the first failure's status is reported).
    pub(crate) fn fail(&mut self, status: Status) {
        self.rq.fail(status);
    }

    /// How the request ends so far (OK, or its first failure).
    pub(crate) fn status(&self) -> Status {
        self.rq.status()
    }

    /// Whether a lower bio of the request failed with [`EndIo::Retry`]
    /// (from [`super::target::Target::end_io`]): the target whose bio it
    /// was retries its piece here, or fails the request. (Every piece of
    /// the request's pieces of this line see this; a target that did not
    /// ask ignores it.)
    pub(crate) fn retry_requested(&self) -> bool {
        self.rq.retry_requested(self.line as u32)
    }

    /// Overwrites the piece's data from byte `offset` of the piece with
    /// `buf` (clamped to the piece); for reads, this is what the submitter
    /// gets.
    pub(crate) fn write(&mut self, offset: u64, buf: &[u8]) {
        let n = self.clamp(offset, buf.len());
        self.rq.write_data(self.skip * 512 + offset, &buf[..n]);
    }

    /// How many of `want` bytes from `offset` on lie inside the piece.
    fn clamp(&self, offset: u64, want: usize) -> usize {
        let left = (self.len * 512).saturating_sub(offset);
        want.min(usize::try_from(left).unwrap_or(usize::MAX))
    }
}
