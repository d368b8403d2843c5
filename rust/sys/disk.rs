// SPDX-License-Identifier: GPL-2.0
//! blk-mq disks and their requests, over the block layer's C API.
//!
//! A disk is a tag set (BLOCKING: `queue_rq` may sleep; STACKING; no I/O
//! scheduler by default), a gendisk, a bio_set for lower bios and two
//! `WQ_MEM_RECLAIM` workqueues (deferred mapping, deferred completion),
//! all owned by a pinned [`DiskInner`] that the block layer points back to
//! (`queuedata`, `private_data`, the tag set's `driver_data`).
//!
//! A request's life: blk-mq hands it to [`QueueHandler::queue_rq`] as a
//! [`Request`]. The handler either ends it at once or turns it into a
//! [`Pending`] request carrying the handler's per-request data, and
//! submits lower bios through it (clones of the request's data, bounce
//! copies of it, or cache flushes; see `lower.rs`). Each lower bio holds a
//! count on the request; so does the `Pending` value itself while the
//! handler is still submitting. The last count to go ends the request with
//! the worst error any part reported, or, if the handler asked for it with
//! [`Pending::finish_later`], hands it to [`QueueHandler::finish`] on the
//! disk's workqueue as a [`Finished`] request, whose data the handler may
//! change (process context) before it ends.

use super::bdev::BlockDevice;
use super::bindings;
use super::bounce::BouncePool;
use super::limits::QueueLimits;
use super::lower;
use super::rqdata::{with_mapped, Cursor};
use super::StaticTable;
use core::marker::PhantomData;
use core::mem::{offset_of, size_of, MaybeUninit};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use kernel::error::code::{EBUSY, ENOMEM, ENXIO, ERESTARTSYS};
use kernel::error::{to_result, Error, Result};
use kernel::sync::Arc;
use kernel::types::Opaque;

/// Requests in flight per disk (the tag set's depth). Per-request counters
/// of targets (mirror's writes per region) are sized by it.
pub(crate) const QUEUE_DEPTH: u32 = 128;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    Write,
    Flush,
    Discard,
    WriteZeroes,
    Other,
}

/// A block layer status (`blk_status_t`): how an I/O ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Status(u8);

impl Status {
    pub(crate) const OK: Status = Status(bindings::VBLK_CONST_BLK_STS_OK);
    /// The operation is not supported (`EOPNOTSUPP`).
    pub(crate) const NOT_SUPPORTED: Status = Status(bindings::VBLK_CONST_BLK_STS_NOTSUPP);
    /// A generic I/O error (`EIO`).
    pub(crate) const IO_ERROR: Status = Status(bindings::VBLK_CONST_BLK_STS_IOERR);
    /// No space left (`ENOSPC`): a thin pool out of data space.
    pub(crate) const NO_SPACE: Status = Status(bindings::VBLK_CONST_BLK_STS_NOSPC);

    pub(crate) fn is_ok(self) -> bool {
        self.0 == Self::OK.0
    }
}

/// Receives the requests of a [`Disk`].
pub(crate) trait QueueHandler: Send + Sync + 'static {
    /// What the handler keeps per request while its lower bios are in
    /// flight (e.g. the table the request was mapped with). Dropped when
    /// the request ends, possibly in interrupt context.
    type RqData: Send + Sync;

    /// Handles one started request (process context, may sleep). It must
    /// be ended, directly or through [`Request::dispatch`], or handed to
    /// the disk's workqueue ([`Request::defer`]); dropping a [`Request`]
    /// ends it with an I/O error.
    fn queue_rq(&self, rq: Request<Self>);

    /// A lower bio submitted with `tag` for a request asking `info`
    /// completed with `status`. Runs in any context (hard irq included)
    /// and must not sleep; says what that means for the request.
    fn lower_done(data: &Self::RqData, info: &RqInfo, tag: u64, status: Status) -> EndIo;

    /// A request that asked for it ([`Pending::finish_later`]), once all
    /// its lower bios completed: runs on the disk's workqueue (process
    /// context, may sleep). The request ends when `rq` is dropped.
    fn finish(&self, rq: Finished<Self>)
    where
        Self: Sized;
}

/// Request flags vblk looks at (the raw `REQ_*` bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RqFlags(u32);

impl RqFlags {
    /// Readahead: may be failed at will.
    pub(crate) fn readahead(self) -> bool {
        self.0 & bindings::VBLK_CONST_REQ_RAHEAD != 0
    }

    /// Forced unit access: the data must be durable when the request
    /// completes.
    pub(crate) fn fua(self) -> bool {
        self.0 & bindings::VBLK_CONST_REQ_FUA != 0
    }
}

/// What a started request asks for, read in one go.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RqInfo {
    pub(crate) op: Op,
    pub(crate) flags: RqFlags,
    /// The raw `cmd_flags` (the kernel's `REQ_*` bits), for targets that
    /// match on them as dm-flakey's `corrupt_bio_byte` does.
    pub(crate) raw_flags: u32,
    /// First sector.
    pub(crate) sector: u64,
    /// Length in sectors.
    pub(crate) sectors: u32,
}

/// Reads a started request's [`RqInfo`].
fn info_of(rq: NonNull<bindings::request>) -> RqInfo {
    let r = rq.as_ptr();
    // SAFETY: callers pass a started request they own; its flags, position
    // and length are set before dispatch and stay while it is owned.
    let (opf, pos, bytes) = unsafe { ((*r).cmd_flags, (*r).__sector, (*r).__data_len) };
    RqInfo {
        op: op_from(opf),
        flags: RqFlags(opf),
        raw_flags: opf,
        sector: pos,
        sectors: bytes >> 9,
    }
}

fn op_from(opf: u32) -> Op {
    match opf & bindings::VBLK_CONST_REQ_OP_MASK {
        bindings::req_op_REQ_OP_READ => Op::Read,
        bindings::req_op_REQ_OP_WRITE => Op::Write,
        bindings::req_op_REQ_OP_FLUSH => Op::Flush,
        bindings::req_op_REQ_OP_DISCARD => Op::Discard,
        bindings::req_op_REQ_OP_WRITE_ZEROES => Op::WriteZeroes,
        _ => Op::Other,
    }
}

/// What a completed lower bio means for its request
/// ([`QueueHandler::lower_done`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndIo {
    /// Record this status for the request (OK records nothing).
    Done(Status),
    /// The bio failed, but the handler retries its part: the request does
    /// not fail; it goes to [`QueueHandler::finish`], where
    /// [`Finished::retry_requested`] says so (the handler retries, or
    /// fails it).
    Retry,
}

/// How long a requeued request waits before blk-mq dispatches it again.
const REQUEUE_DELAY_MS: u64 = 10;

/// The handler's part of a request's PDU.
#[repr(C)]
pub(super) struct RqState<D> {
    /// Counts held on the request: one per lower bio in flight, one for a
    /// live [`Pending`].
    pub(super) pending: AtomicU32,
    status: AtomicU8,
    /// Groups (bit `(tag >> 32) % 64`, the handler's group of a part of
    /// the request, e.g. its table line) that asked for
    /// [`QueueHandler::finish`]: it runs before the request ends if any
    /// did, and [`Finished::finish_requested`] tells which.
    finish: AtomicU64,
    /// The request goes back to blk-mq's requeue list instead of ending.
    requeue: AtomicBool,
    /// Retry groups with a lower bio that failed with [`EndIo::Retry`]: bit
    /// `(tag >> 32) % 64` (the handler's group of the bio, e.g. its table
    /// line), so one group's retry does not make another's look failed.
    retry: AtomicU64,
    data: MaybeUninit<D>,
}

/// A request's PDU (`blk_mq_rq_to_pdu`): two work items (a deferred
/// mapping and a deferred completion, separate because the completion may
/// be queued from inside the mapping's own work function) and the state.
#[repr(C)]
struct Pdu<D> {
    map_work: Opaque<bindings::work_struct>,
    done_work: Opaque<bindings::work_struct>,
    state: RqState<D>,
}

/// The PDU of `rq` (`blk_mq_rq_to_pdu`: it follows the request).
///
/// # Safety
///
/// `rq` must be a request of a disk whose handler's data is `D` (its tag
/// set's `cmd_size` is that of `Pdu<D>`).
unsafe fn pdu_of<D>(rq: NonNull<bindings::request>) -> *mut Pdu<D> {
    // SAFETY: blk-mq allocates `cmd_size` bytes right after each request;
    // the address one request past `rq` is in that allocation.
    unsafe { rq.as_ptr().add(1).cast() }
}

/// The request whose PDU holds `work` at `offset` (the inverse of
/// [`pdu_of`]).
///
/// # Safety
///
/// `work` must be the work item at `offset` in the PDU of a live request.
unsafe fn rq_of_work(
    work: *mut bindings::work_struct,
    offset: usize,
) -> NonNull<bindings::request> {
    // SAFETY: by the contract the PDU starts `offset` bytes before `work`,
    // and the request `size_of::<request>()` bytes before the PDU.
    let rq = unsafe { work.byte_sub(offset).cast::<bindings::request>().sub(1) };
    // SAFETY: derived from a non-null pointer into a live allocation.
    unsafe { NonNull::new_unchecked(rq) }
}

/// The state of a request of a disk with handler `T`.
///
/// # Safety
///
/// As for [`pdu_of`].
pub(super) unsafe fn state_ptr<T: QueueHandler>(
    rq: NonNull<bindings::request>,
) -> *mut RqState<T::RqData> {
    // SAFETY: by the contract the PDU is a `Pdu<T::RqData>`; only the
    // address of its field is computed.
    unsafe { &raw mut (*pdu_of::<T::RqData>(rq)).state }
}

/// A started request, owned by the driver until it is ended.
///
/// # Invariants
///
/// `raw` is a started request of a live disk with handler `T`, not ended,
/// not dispatched, owned by this value.
pub(crate) struct Request<T: QueueHandler + ?Sized> {
    raw: NonNull<bindings::request>,
    /// Handed back by [`Request::defer`]: runs on the disk's workqueue.
    in_worker: bool,
    _handler: PhantomData<fn(&T)>,
}

/// The disk a request belongs to.
///
/// # Safety
///
/// `rq` must be a request of a live vblk disk with handler `T`.
unsafe fn disk_of<'a, T: QueueHandler>(rq: NonNull<bindings::request>) -> &'a DiskInner<T> {
    // SAFETY: a request's queue is its disk's queue, whose `queuedata` is
    // the `DiskInner<T>` that `Disk::create` passed; the disk outlives its
    // requests (`del_gendisk` waits for them).
    unsafe { &*(*(*rq.as_ptr()).q).queuedata.cast::<DiskInner<T>>() }
}

impl<T: QueueHandler> Request<T> {
    pub(crate) fn info(&self) -> RqInfo {
        info_of(self.raw)
    }

    /// Whether the request came back from [`Request::defer`]: the caller
    /// runs on the disk's workqueue, not inside a submitter, so it may
    /// wait for I/O it submits itself (e.g. a log write before the data).
    pub(crate) fn in_worker(&self) -> bool {
        self.in_worker
    }

    /// Hands the request back to [`QueueHandler::queue_rq`] later, from
    /// the disk's workqueue ([`Request::in_worker`] is then true). Inside
    /// `queue_rq` the submitter's bios may still be queued behind us
    /// (`current->bio_list`), so waiting there for our own lower I/O could
    /// wait forever.
    pub(crate) fn defer(self) {
        let raw = self.raw;
        core::mem::forget(self);
        // SAFETY: the request belongs to a live disk with handler `T`
        // (invariant), so its PDU is a `Pdu<T::RqData>`; its map work item
        // is not queued (the request is owned by us, not by a work item).
        let work = unsafe { Opaque::raw_get(&raw const (*pdu_of::<T::RqData>(raw)).map_work) };
        // SAFETY: the request belongs to a live disk with handler `T`
        // (invariant of `Request`).
        let disk = unsafe { disk_of::<T>(raw) };
        // SAFETY: `work` is an idle work item in the PDU; initialising it
        // and queueing it hands the request to `map_work_cb::<T>`, which
        // owns it from then on. The workqueue lives as long as the disk.
        unsafe {
            bindings::vblk_shim_init_work(work, Some(map_work_cb::<T>));
            bindings::queue_work_on(bindings::VBLK_CONST_WORK_CPU_UNBOUND, disk.map_wq, work);
        }
    }

    /// Ends the request with `status` without any lower I/O.
    pub(crate) fn end(self, status: Status) {
        let raw = self.raw;
        core::mem::forget(self);
        // SAFETY: we own the started request and end it exactly once (the
        // `forget` above keeps `Drop` from ending it again).
        unsafe { end_request(raw, status) }
    }

    /// Attaches `data` and returns the request as pending: lower bios can
    /// now be submitted for it, and it ends when the last of them and the
    /// returned value are gone.
    pub(crate) fn dispatch(self, data: T::RqData) -> Pending<T> {
        let raw = self.raw;
        core::mem::forget(self);
        // SAFETY: the PDU is a `Pdu<T::RqData>` (invariant) and its state is
        // not in use: the request was just started and nothing else writes
        // its PDU.
        unsafe {
            state_ptr::<T>(raw).write(RqState {
                pending: AtomicU32::new(1),
                status: AtomicU8::new(0),
                finish: AtomicU64::new(0),
                requeue: AtomicBool::new(false),
                retry: AtomicU64::new(0),
                data: MaybeUninit::new(data),
            })
        };
        // INVARIANT: dispatched just now; the returned value holds the
        // count of 1 set above.
        Pending {
            raw,
            _handler: PhantomData,
        }
    }
}

impl<T: QueueHandler + ?Sized> Drop for Request<T> {
    fn drop(&mut self) {
        // SAFETY: a `Request` that was not ended is still owned and started.
        unsafe { end_request(self.raw, Status::IO_ERROR) }
    }
}

/// Ends a request (`blk_mq_end_request`).
///
/// # Safety
///
/// `rq` must be a started request the caller owns; it is ended exactly
/// once and not used afterwards.
unsafe fn end_request(rq: NonNull<bindings::request>, status: Status) {
    // SAFETY: by the contract.
    unsafe { bindings::blk_mq_end_request(rq.as_ptr(), status.0) }
}

/// A request with per-request data attached, whose lower bios are being
/// submitted. Dropping it lets the request end once they all completed.
///
/// # Invariants
///
/// `raw` is a dispatched request (state initialised) of a live disk with
/// handler `T`, not ended, on which this value holds one count.
pub(crate) struct Pending<T: QueueHandler> {
    raw: NonNull<bindings::request>,
    _handler: PhantomData<fn(&T)>,
}

/// What `Pending` and `Finished` share: both hold a request that was
/// dispatched (its state initialised) and has not ended; `Pending` by its
/// count, `Finished` because the last count handed it over.
///
/// # Safety
///
/// `raw` must return a request of a disk whose handler is `Handler`,
/// dispatched and not ended for as long as `self` lives.
unsafe trait Dispatched {
    type Handler: QueueHandler;

    /// The request, dispatched and not ended while `self` lives.
    fn raw(&self) -> NonNull<bindings::request>;

    fn state(&self) -> &RqState<<Self::Handler as QueueHandler>::RqData> {
        // SAFETY: by `raw`'s contract the state is initialised and stays so
        // while `self` lives; the PDU is that of the handler's disk.
        unsafe { &*state_ptr::<Self::Handler>(self.raw()) }
    }
}

// SAFETY: a `Pending` holds a count on its dispatched request (type
// invariant), so the request cannot end while it lives.
unsafe impl<T: QueueHandler> Dispatched for Pending<T> {
    type Handler = T;

    fn raw(&self) -> NonNull<bindings::request> {
        self.raw
    }
}

// SAFETY: a `Finished` owns its dispatched request, which ends only in
// its `drop`.
unsafe impl<T: QueueHandler> Dispatched for Finished<T> {
    type Handler = T;

    fn raw(&self) -> NonNull<bindings::request> {
        self.raw
    }
}

/// The handler's data of a dispatched request.
fn data_of<R: Dispatched>(rq: &R) -> &<R::Handler as QueueHandler>::RqData {
    // SAFETY: `dispatch` initialised `data`; it is dropped only when the
    // request ends, which cannot happen while `rq` lives.
    unsafe { rq.state().data.assume_init_ref() }
}

impl<T: QueueHandler> Pending<T> {
    /// The handler's data for this request.
    pub(crate) fn data(&self) -> &T::RqData {
        data_of(self)
    }

    /// Records a failure for the request (the worst one wins, see `record`).
    pub(crate) fn fail(&self, status: Status) {
        record(self.state(), status);
    }

    /// Retries the whole request later instead of ending it: once every
    /// count is gone (lower bios already submitted complete first) it goes
    /// back to blk-mq's requeue list, its status and data forgotten, and
    /// reaches [`QueueHandler::queue_rq`] again after a short delay (or
    /// after the queue is unquiesced). A requeued request is not in flight:
    /// waiting for the queue to drain does not wait for it.
    pub(crate) fn requeue(&self) {
        self.state().requeue.store(true, Ordering::Release);
    }

    /// The lower-bio submitter for this request.
    fn lower(&self) -> lower::Submitter<'_, T> {
        // SAFETY: the request is pending with handler `T` (invariant), and
        // the submitter borrows `self`, so it cannot outlive our count.
        unsafe { lower::Submitter::new(self.raw, disk_of::<T>(self.raw)) }
    }

    /// Zeroes sectors `[skip, skip + len)` of the request's data (reads),
    /// clamped to the request.
    pub(crate) fn zero_range(&self, skip: u64, len: u64) {
        // SAFETY: the request is pending (invariant): it does not end while
        // the cursor is used, in this call.
        let mut c = unsafe { Cursor::seek(self.raw, skip.saturating_mul(512)) };
        let mut left = len.saturating_mul(512);
        while let Some(seg) = c.next(left) {
            left -= u64::from(seg.len);
            // SAFETY: the request's data pages are ours to write until it
            // ends (a read's buffer, filled by us); one segment at a time.
            unsafe { with_mapped(&seg, |bytes| bytes.fill(0)) };
        }
    }

    /// Copies the request's data from byte `offset` on into `buf` (a
    /// write's data, for a target that computes from it: parity), clamped
    /// to the request's data.
    pub(crate) fn copy_out(&self, offset: u64, buf: &mut [u8]) {
        // SAFETY: the request is pending (invariant): it does not end while
        // the cursor is used, in this call.
        let mut c = unsafe { Cursor::seek(self.raw, offset) };
        // SAFETY: the submitter's data is only read here.
        unsafe { c.copy_out(buf) };
    }

    /// Copies `buf` into the request's data from byte `offset` on (a read
    /// the target serves from its own buffer), clamped to the request's
    /// data. The caller sent no lower I/O for these bytes.
    pub(crate) fn copy_in(&self, offset: u64, buf: &[u8]) {
        // SAFETY: the request is pending (invariant): it does not end while
        // the cursor is used, in this call.
        let mut c = unsafe { Cursor::seek(self.raw, offset) };
        // SAFETY: a read's buffer is ours to fill until the request ends;
        // no lower bio targets these bytes (caller), so nothing else
        // writes them meanwhile.
        unsafe { c.copy_in(buf) };
    }

    /// Sends sectors `[skip, skip + len)` of the request to `dev` at
    /// `sector` (as clones sharing the request's pages); each completion
    /// reports `tag` to [`QueueHandler::lower_done`].
    ///
    /// `dev` should stay open until the request ends; vblk's queue passes
    /// only devices of the table the request holds. (Closing a device with
    /// bios in flight is what any opener may do: the block layer keeps the
    /// disk until its queue drains; the bios never use our file.)
    pub(crate) fn clone_to(&self, skip: u64, len: u64, dev: &BlockDevice, sector: u64, tag: u64) {
        self.lower().clones(skip, len, dev, sector, tag);
    }

    /// How many completions [`Self::clone_to`] of the same sectors will
    /// report (one per bio of the request they touch), known before any.
    pub(crate) fn clone_count(&self, skip: u64, len: u64) -> u32 {
        self.lower().clone_count(skip, len)
    }

    /// Writes the request's sectors `part` (counted from its start) to
    /// `dev` at `sector` from bounce pages of `pool`, never from the
    /// caller's pages: each page gets a copy of the request's data, then
    /// `fill(offset, bytes)` may change it (`offset` counts bytes from the
    /// start of `part`). Each completion reports `tag`. May sleep for pool
    /// pages.
    pub(crate) fn bounce_write(
        &self,
        part: core::ops::Range<u64>,
        pool: &BouncePool,
        dev: &BlockDevice,
        sector: u64,
        tag: u64,
        fill: &mut dyn FnMut(u64, &mut [u8]),
    ) {
        self.lower()
            .bounce_write(part, pool, dev, sector, tag, fill);
    }

    /// Asks for [`QueueHandler::finish`] to run (in process context) once
    /// every lower bio of the request completed, before the request ends,
    /// for group `group` (see [`Finished::finish_requested`]).
    pub(crate) fn finish_later(&self, group: u32) {
        self.state()
            .finish
            .fetch_or(group_bit(group), Ordering::Release);
    }

    /// For a discard or write-zeroes request: sends the same operation for
    /// `len` sectors of `dev` from `sector` on, reporting `tag`.
    pub(crate) fn range_to(&self, dev: &BlockDevice, sector: u64, len: u32, tag: u64) {
        self.lower().range(dev, sector, len, tag);
    }

    /// Sends an empty cache flush to `dev`, reporting `tag`.
    pub(crate) fn flush_to(&self, dev: &BlockDevice, tag: u64) {
        self.lower().flush(dev, tag);
    }
}

impl<T: QueueHandler> Clone for Pending<T> {
    /// Another count on the request (a part of it the handler holds to
    /// submit later, from another context).
    fn clone(&self) -> Self {
        self.state().pending.fetch_add(1, Ordering::AcqRel);
        // INVARIANT: the count taken just now is the new value's.
        Pending {
            raw: self.raw,
            _handler: PhantomData,
        }
    }
}

// SAFETY: a count on a request may be dropped on any thread (lower bios
// drop theirs wherever they complete), and the request's state is atomic.
unsafe impl<T: QueueHandler> Send for Pending<T> {}
// SAFETY: every method takes `&self` and touches only atomics, or submits
// lower bios (thread-safe), or reads the handler's `Sync` data.
unsafe impl<T: QueueHandler> Sync for Pending<T> {}

impl<T: QueueHandler> Drop for Pending<T> {
    fn drop(&mut self) {
        // SAFETY: the request is pending and `self` holds one count.
        unsafe { put::<T>(self.raw, Status::OK) }
    }
}

/// A request whose lower I/O completed, handed to
/// [`QueueHandler::finish`]. Dropping it ends the request.
///
/// # Invariants
///
/// `raw` is a dispatched request of a live disk with handler `T`, not
/// ended, with no count left: this value is its only user.
pub(crate) struct Finished<T: QueueHandler> {
    raw: NonNull<bindings::request>,
    _handler: PhantomData<fn(&T)>,
}

impl<T: QueueHandler> Finished<T> {
    pub(crate) fn info(&self) -> RqInfo {
        info_of(self.raw)
    }

    /// The handler's data for this request.
    pub(crate) fn data(&self) -> &T::RqData {
        data_of(self)
    }

    /// How the request ends so far (its worst failure, or OK).
    pub(crate) fn status(&self) -> Status {
        Status(self.state().status.load(Ordering::Acquire))
    }

    /// Whether a lower bio of retry group `group` (its tag's upper 32
    /// bits) failed with [`EndIo::Retry`] (the handler retries that I/O
    /// or fails the request).
    pub(crate) fn retry_requested(&self, group: u32) -> bool {
        self.state().retry.load(Ordering::Acquire) & group_bit(group) != 0
    }

    /// Whether group `group` asked for the finish
    /// ([`Pending::finish_later`], or a retry). Groups are told apart
    /// modulo 64: in a request with parts of more than 64 groups, a group
    /// may see the finish another asked for.
    pub(crate) fn finish_requested(&self, group: u32) -> bool {
        self.state().finish.load(Ordering::Acquire) & group_bit(group) != 0
    }

    /// Records a failure for the request (the worst one wins, see `record`).
    pub(crate) fn fail(&self, status: Status) {
        record(self.state(), status);
    }

    /// Calls `f(at, bytes)` for the `len` bytes of the request's data from
    /// byte `offset` on, one page segment at a time (`at` counts from
    /// `offset`); `f` may change them (for reads: what the submitter will
    /// see). Clamped to the request's data.
    pub(crate) fn visit_data(&mut self, offset: u64, len: u64, f: &mut dyn FnMut(u64, &mut [u8])) {
        // SAFETY: we own the request (invariant) and its lower I/O is over;
        // `&mut self` keeps any other access to its data out meanwhile.
        let mut c = unsafe { Cursor::seek(self.raw, offset) };
        let mut done = 0;
        while let Some(seg) = c.next(len - done) {
            // SAFETY: as above: the data pages are ours until the request
            // ends, visited one segment at a time.
            unsafe { with_mapped(&seg, |bytes| f(done, bytes)) };
            done += u64::from(seg.len);
        }
    }

    /// Copies `buf` into the request's data from byte `offset` on (for
    /// reads: what the submitter will see), clamped to the request's data;
    /// requests without data copy nothing.
    pub(crate) fn write_data(&self, offset: u64, buf: &[u8]) {
        // SAFETY: we own the request (invariant) and its lower I/O is over;
        // nothing else uses its data during this call.
        let mut c = unsafe { Cursor::seek(self.raw, offset) };
        // SAFETY: as above: the data is ours to write.
        unsafe { c.copy_in(buf) };
    }
}

impl<T: QueueHandler> Drop for Finished<T> {
    fn drop(&mut self) {
        // SAFETY: a `Finished` owns its dispatched request, no count is
        // left, and `drop` runs once.
        unsafe { end_dispatched::<T>(self.raw) }
    }
}

fn record<D>(state: &RqState<D>, status: Status) {
    if status.is_ok() {
        return;
    }
    // The worst failure wins: a real error replaces "not supported" (a
    // split discard whose other part hit EIO must not end as EOPNOTSUPP,
    // which callers take for "unsupported", not "failed"); otherwise the
    // first one stays.
    let _ = state
        .status
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            (now == 0 || (now == Status::NOT_SUPPORTED.0 && status != Status::NOT_SUPPORTED))
                .then_some(status.0)
        });
}

/// Drops one count of a pending request, ending it if it was the last.
///
/// # Safety
///
/// `rq` must be pending (dispatched, not yet ended) with handler `T`, and
/// the caller must own one of its counts, which this consumes.
pub(super) unsafe fn put<T: QueueHandler>(rq: NonNull<bindings::request>, status: Status) {
    // SAFETY: the caller's count keeps the state initialised.
    let st = unsafe { &*state_ptr::<T>(rq) };
    record(st, status);
    if st.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    if st.requeue.load(Ordering::Acquire) {
        // SAFETY: that was the last count: we own the dispatched request.
        return unsafe { requeue_dispatched::<T>(rq) };
    }
    if st.finish.load(Ordering::Acquire) != 0 {
        // SAFETY: that was the last count: we own the dispatched request,
        // of a live disk with handler `T`; its done work item is idle (it
        // runs only after the last count, once per request). Queued, the
        // item hands the request to `done_work_cb::<T>`.
        unsafe {
            let work = Opaque::raw_get(&raw const (*pdu_of::<T::RqData>(rq)).done_work);
            bindings::vblk_shim_init_work(work, Some(done_work_cb::<T>));
            bindings::queue_work_on(
                bindings::VBLK_CONST_WORK_CPU_UNBOUND,
                disk_of::<T>(rq).done_wq,
                work,
            );
        }
        return;
    }
    // SAFETY: that was the last count: we own the dispatched request.
    unsafe { end_dispatched::<T>(rq) }
}

/// Ends a dispatched request with the status it recorded, dropping its
/// data.
///
/// # Safety
///
/// `rq` must be dispatched with handler `T` and not ended, and the caller
/// its only user (no count left, no `Pending`); it is ended exactly once.
unsafe fn end_dispatched<T: QueueHandler>(rq: NonNull<bindings::request>) {
    // SAFETY: the state is initialised (dispatched) and nobody else uses it.
    let state = unsafe { &mut *state_ptr::<T>(rq) };
    let status = Status(state.status.load(Ordering::Acquire));
    // SAFETY: `dispatch` initialised the data; it is dropped exactly once,
    // here, by the only user.
    unsafe { state.data.assume_init_drop() };
    // SAFETY: we own the request and end it exactly once.
    unsafe { end_request(rq, status) }
}

/// Hands a dispatched request back to blk-mq to be dispatched again after
/// [`REQUEUE_DELAY_MS`], dropping its data (the next dispatch attaches new
/// data).
///
/// # Safety
///
/// As for [`end_dispatched`]: `rq` is dispatched with handler `T`, not
/// ended, and the caller its only user.
unsafe fn requeue_dispatched<T: QueueHandler>(rq: NonNull<bindings::request>) {
    // SAFETY: the state is initialised (dispatched) and nobody else uses it.
    let state = unsafe { &mut *state_ptr::<T>(rq) };
    // SAFETY: `dispatch` initialised the data; it is dropped exactly once,
    // here, by the only user (the next dispatch writes a new state).
    unsafe { state.data.assume_init_drop() };
    // SAFETY: we own the started request; requeueing returns it to blk-mq
    // (which owns it until the next `queue_rq`); its queue is live while
    // the request is.
    unsafe {
        let q = (*rq.as_ptr()).q;
        bindings::blk_mq_requeue_request(rq.as_ptr(), false);
        bindings::blk_mq_delay_kick_requeue_list(q, REQUEUE_DELAY_MS as _);
    }
}

/// A lower bio of `rq` completed: lets the handler judge the status, then
/// drops the bio's count on the request.
///
/// # Safety
///
/// `rq` must be a pending request of a disk with handler `T`, and the
/// completed bio must have held one of its counts.
pub(super) unsafe fn lower_done<T: QueueHandler>(
    rq: NonNull<bindings::request>,
    tag: u64,
    status: u8,
) {
    // SAFETY: the bio's count keeps the state initialised.
    let state = unsafe { &*state_ptr::<T>(rq) };
    // SAFETY: `dispatch` initialised the data, dropped only when the
    // request ends, which the bio's count prevents.
    let data = unsafe { state.data.assume_init_ref() };
    // Flags set here are seen by `put` (after the count drops, with
    // AcqRel ordering).
    let status = match T::lower_done(data, &info_of(rq), tag, Status(status)) {
        EndIo::Done(status) => status,
        EndIo::Retry => {
            let bit = group_bit((tag >> 32) as u32);
            state.retry.fetch_or(bit, Ordering::Release);
            state.finish.fetch_or(bit, Ordering::Release);
            Status::OK
        }
    };
    // SAFETY: the completed bio's count is handed over to `put`.
    unsafe { put::<T>(rq, status) }
}

/// The bit of group `group` in [`RqState::retry`] and [`RqState::finish`].
fn group_bit(group: u32) -> u64 {
    1 << (group % 64)
}

/// What every vblk disk has whatever its handler, for code that finds a
/// disk through the block layer without knowing `T` (its open callback,
/// [`BlockDevice::vblk_index`]).
#[repr(C)]
pub(super) struct DiskCommon {
    /// The N of vblkN: what the control plane knows the device by.
    pub(super) index: u32,
    /// Set under the gendisk's `open_mutex` once removal is decided: opens
    /// fail from then on.
    dying: AtomicBool,
}

/// A disk's kernel objects, pinned: the block layer points back into it.
///
/// # Invariants
///
/// Once `Disk::create` returned it: `set` is an allocated tag set whose
/// `driver_data` is this value, `disk` an added gendisk of it whose
/// `queuedata` and `private_data` are this value, `bs` an initialised
/// bio_set, `done_wq`/`map_wq` live workqueues and `fq_key` a registered
/// lockdep key; all are torn down only in `Disk::drop`. `common` is the
/// first field (a `*DiskCommon` is a `*DiskInner<T>`).
#[repr(C)]
pub(super) struct DiskInner<T: QueueHandler> {
    pub(super) common: DiskCommon,
    set: Opaque<bindings::blk_mq_tag_set>,
    disk: *mut bindings::gendisk,
    /// Lower bios: clones of request bios, bounce writes, empty flushes.
    pub(super) bs: Opaque<bindings::bio_set>,
    /// Deferred completion ([`QueueHandler::finish`]) and deferred mapping
    /// ([`Request::defer`]), both usable under reclaim. Two queues: a
    /// mapping that waits (a mirror write behind a region copy) must never
    /// hold up the completions that end the wait, which under memory
    /// pressure one queue's single rescuer would.
    done_wq: *mut bindings::workqueue_struct,
    map_wq: *mut bindings::workqueue_struct,
    /// The lock class of this disk's flush queue lock. A lower device
    /// (null_blk, another vblk disk, ...) completes our requests from inside
    /// its own flush completion, holding its own `mq_flush_lock`, and ending
    /// a request of our flush sequence takes ours: one class per disk keeps
    /// lockdep from taking that for recursion (a class that dies with its
    /// disk leaves no stale ordering behind).
    fq_key: Opaque<bindings::lock_class_key>,
    handler: Arc<T>,
}

/// The block device operations of every vblk disk.
/// A table the C side requires to be static: `gendisk::fops` must outlive
/// every opener of the disk and is compared by address
/// ([`BlockDevice::vblk_index`]); it names the module as owner, so opening
/// a vblk disk pins the module.
static DISK_FOPS: StaticTable<bindings::block_device_operations> =
    StaticTable(bindings::block_device_operations {
        owner: &raw const bindings::__this_module as *mut bindings::module,
        open: Some(disk_open_cb),
        // SAFETY: all-zero is a valid value for the other fields (null
        // pointers, `None` callbacks).
        ..unsafe { core::mem::zeroed() }
    });

/// Whether `disk` is a vblk disk; its [`DiskCommon`] if so.
///
/// # Safety
///
/// `disk` must be a live gendisk.
pub(super) unsafe fn vblk_disk_common<'a>(disk: *mut bindings::gendisk) -> Option<&'a DiskCommon> {
    // SAFETY: `disk` is live; `fops` is set before the disk is added.
    let ours = unsafe { (*disk).fops } == &raw const DISK_FOPS.0;
    // SAFETY: a vblk gendisk's `private_data` is its `DiskInner`, whose
    // first field is the `DiskCommon` (type invariant), alive as long as
    // the gendisk.
    ours.then(|| unsafe { &*(*disk).private_data.cast::<DiskCommon>() })
}

/// A registered blk-mq disk whose requests go to a `T`. Dropping it
/// deletes the disk (waiting for its I/O to finish).
///
/// # Invariants
///
/// `inner` satisfies [`DiskInner`]'s invariants until `drop`.
pub(crate) struct Disk<T: QueueHandler> {
    inner: NonNull<DiskInner<T>>,
}

// SAFETY: the disk's kernel objects may be used from any thread; the
// handler is `Send + Sync`.
unsafe impl<T: QueueHandler> Send for Disk<T> {}
// SAFETY: `&Disk` only allows operations the block layer serialises itself.
unsafe impl<T: QueueHandler> Sync for Disk<T> {}

impl<T: QueueHandler> DiskInner<T> {
    /// The block layer's ops for `T`'s disks (promoted to a static: the
    /// tag set keeps a pointer to it).
    const MQ_OPS: bindings::blk_mq_ops = bindings::blk_mq_ops {
        queue_rq: Some(queue_rq_cb::<T>),
        queue_rqs: Some(queue_rqs_cb::<T>),
        init_hctx: Some(init_hctx_cb::<T>),
        // SAFETY: all-zero is a valid value for the other fields (`None`
        // callbacks).
        ..unsafe { core::mem::zeroed() }
    };
}

/// Which parts of a [`DiskInner`] exist, for unwinding a failed create.
#[derive(PartialEq, PartialOrd)]
enum Made {
    Key,
    BioSet,
    DoneQueue,
    MapQueue,
    TagSet,
    Disk,
}

/// Tears down the parts of `inner` up to and including `made`, in reverse,
/// and frees it.
///
/// # Safety
///
/// `inner` must come from `KBox::into_raw` in `Disk::create`, its parts up
/// to `made` made and nothing else using them (no request in flight).
unsafe fn teardown<T: QueueHandler>(inner: *mut DiskInner<T>, made: Made) {
    // SAFETY: by the contract each part below exists when `made` says so,
    // and no request is left: `del_gendisk` (first) waits for every request
    // and so for every lower bio; deferred work ended its requests, so the
    // queues are idle when destroyed.
    unsafe {
        let d = &*inner;
        if made >= Made::Disk {
            bindings::del_gendisk(d.disk);
            bindings::put_disk(d.disk);
        }
        if made >= Made::TagSet {
            bindings::blk_mq_free_tag_set(d.set.get());
        }
        if made >= Made::MapQueue {
            bindings::destroy_workqueue(d.map_wq);
        }
        if made >= Made::DoneQueue {
            bindings::destroy_workqueue(d.done_wq);
        }
        if made >= Made::BioSet {
            bindings::bioset_exit(d.bs.get());
        }
        // No request is left to take the flush lock of this class.
        bindings::vblk_shim_lockdep_unregister_key(d.fq_key.get());
        drop(kernel::alloc::KBox::from_raw(inner));
    }
}

/// The limits a table computed, as the disk gets them: blk-mq's own
/// features added, and no zoned-device limits (vblk disks are not zoned; a
/// table without lower devices would otherwise keep the stacking default,
/// which the block layer refuses).
///
/// Request size and shape limits (sectors, segments, segment size, gaps)
/// are not taken from below: vblk hands its lower devices bios, which each
/// lower device splits to its own limits on submission, as it does for
/// device-mapper's bios. Keeping, say, brd's 255-sector default here would
/// cut every 128 KiB request in two before it reached vblk.
fn disk_limits(lim: &QueueLimits) -> bindings::queue_limits {
    let mut l = *lim.get();
    l.max_hw_sectors = u32::MAX;
    l.max_sectors = 0;
    l.max_user_sectors = 0;
    l.max_segments = u16::MAX;
    l.max_segment_size = u32::MAX;
    l.virt_boundary_mask = 0;
    l.seg_boundary_mask = bindings::VBLK_CONST_BLK_SEG_BOUNDARY_MASK;
    l.features |= bindings::VBLK_CONST_BLK_FEAT_IO_STAT | bindings::VBLK_CONST_BLK_FEAT_NOWAIT;
    l.features &= !(bindings::VBLK_CONST_BLK_FEAT_ZONED | bindings::VBLK_CONST_BLK_FEAT_POLL);
    l.max_zone_append_sectors = 0;
    l.max_open_zones = 0;
    l.max_active_zones = 0;
    l.zone_write_granularity = 0;
    l
}

impl<T: QueueHandler> Disk<T> {
    /// Creates and registers disk `vblk<index>` of `sectors` sectors.
    pub(crate) fn create(
        handler: Arc<T>,
        index: u32,
        sectors: u64,
        limits: &QueueLimits,
    ) -> Result<Self> {
        // The PDU follows `struct request`, which is 8-byte aligned.
        const { assert!(core::mem::align_of::<Pdu<T::RqData>>() <= 8) };
        const { assert!(size_of::<bindings::request>() % 8 == 0) };
        let boxed = kernel::alloc::KBox::new(
            DiskInner {
                common: DiskCommon {
                    index,
                    dying: AtomicBool::new(false),
                },
                set: Opaque::new(bindings::blk_mq_tag_set::default()),
                disk: core::ptr::null_mut(),
                bs: Opaque::new(bindings::bio_set::default()),
                done_wq: core::ptr::null_mut(),
                map_wq: core::ptr::null_mut(),
                fq_key: Opaque::new(bindings::lock_class_key::default()),
                handler,
            },
            kernel::alloc::flags::GFP_KERNEL,
        )?;
        let inner = kernel::alloc::KBox::into_raw(boxed);
        let mut l = disk_limits(limits);
        // SAFETY: `inner` is a fresh allocation we own, never moved again
        // (freed only by `teardown`); each kernel object is initialised in
        // place below, in order, and on failure `teardown` undoes exactly
        // the parts made so far. Fields are written through the raw
        // pointer, never through a reference held across a call: blk-mq
        // calls `init_hctx_cb`, which reads the struct, from inside
        // `__blk_mq_alloc_disk`.
        unsafe {
            bindings::vblk_shim_lockdep_register_key((*inner).fq_key.get());
            // The per-cpu cache serves clones of bios that ask for it
            // (REQ_ALLOC_CACHE, e.g. io_uring's) without the mempool.
            let rc = bindings::bioset_init(
                (*inner).bs.get(),
                64,
                offset_of!(lower::LowerBio, bio) as u32,
                (bindings::BIOSET_NEED_BVECS
                    | bindings::BIOSET_NEED_RESCUER
                    | bindings::BIOSET_PERCPU_CACHE) as i32,
            );
            if rc != 0 {
                teardown(inner, Made::Key);
                return Err(Error::from_errno(rc));
            }
            (*inner).done_wq = reclaim_queue(c"vblk%u", index);
            if (*inner).done_wq.is_null() {
                teardown(inner, Made::BioSet);
                return Err(ENOMEM);
            }
            (*inner).map_wq = reclaim_queue(c"vblk%u_map", index);
            if (*inner).map_wq.is_null() {
                teardown(inner, Made::DoneQueue);
                return Err(ENOMEM);
            }
            let set = &mut *(*inner).set.get();
            set.ops = &DiskInner::<T>::MQ_OPS;
            set.driver_data = inner.cast();
            set.nr_hw_queues = 1;
            set.queue_depth = QUEUE_DEPTH;
            set.numa_node = bindings::VBLK_CONST_NUMA_NO_NODE;
            set.cmd_size = size_of::<Pdu<T::RqData>>() as u32;
            // queue_rq sleeps: it allocates and submits lower bios. No I/O
            // scheduler by default: the devices below schedule their own
            // I/O (a stacked elevator only adds latency, and takes plugged
            // requests off the direct-issue path).
            set.flags = bindings::BLK_MQ_F_BLOCKING
                | bindings::BLK_MQ_F_STACKING
                | bindings::BLK_MQ_F_NO_SCHED_BY_DEFAULT;
            let rc = bindings::blk_mq_alloc_tag_set(set);
            if rc != 0 {
                teardown(inner, Made::MapQueue);
                return Err(Error::from_errno(rc));
            }
            let key: *const kernel::sync::LockClassKey = kernel::static_lock_class!();
            // `LockClassKey` is a transparent wrapper of the C key.
            let disk =
                bindings::__blk_mq_alloc_disk(set, &mut l, inner.cast(), key.cast_mut().cast());
            if let Some(rc) = super::err_ptr(disk) {
                teardown(inner, Made::TagSet);
                return Err(Error::from_errno(rc));
            }
            (*inner).disk = disk;
            (*disk).fops = &raw const DISK_FOPS.0;
            (*disk).private_data = inner.cast();
            (*disk).flags |= bindings::GENHD_FL_NO_PART as i32;
            bindings::snprintf(
                (*disk).disk_name.as_mut_ptr(),
                (*disk).disk_name.len(),
                c"vblk%u".as_ptr(),
                index,
            );
            bindings::set_capacity(disk, sectors);
            let rc = bindings::device_add_disk(core::ptr::null_mut(), disk, core::ptr::null_mut());
            if rc != 0 {
                bindings::put_disk(disk);
                teardown(inner, Made::TagSet);
                return Err(Error::from_errno(rc));
            }
        }
        // INVARIANT: every part is made (see `DiskInner`).
        Ok(Disk {
            // SAFETY: from `KBox::into_raw`, not null.
            inner: unsafe { NonNull::new_unchecked(inner) },
        })
    }

    fn inner(&self) -> &DiskInner<T> {
        // SAFETY: `inner` is live until `drop` (type invariant).
        unsafe { self.inner.as_ref() }
    }

    fn gendisk(&self) -> *mut bindings::gendisk {
        self.inner().disk
    }

    fn queue(&self) -> *mut bindings::request_queue {
        // SAFETY: the gendisk is live (invariant) and its queue with it.
        unsafe { (*self.gendisk()).queue }
    }

    /// The disk's dev_t (`major << 20 | minor`).
    pub(crate) fn devt(&self) -> u32 {
        // SAFETY: the gendisk is live (invariant); its numbers are fixed.
        let (major, minor) = unsafe { ((*self.gendisk()).major, (*self.gendisk()).first_minor) };
        ((major as u32) << bindings::VBLK_CONST_MINORBITS) | minor as u32
    }

    /// Commits to removing the disk unless it is open (`EBUSY`): from a
    /// successful return on, every open of the disk fails, so nobody can
    /// open it between this check and the drop that deletes it.
    pub(crate) fn claim_for_removal(&self) -> Result {
        let disk = self.gendisk();
        // SAFETY: the gendisk is live (invariant). Opens run under its
        // `open_mutex` and check `dying` there (`disk_open_cb`), so deciding
        // under the same mutex is atomic with respect to them.
        unsafe {
            let lock = &raw mut (*disk).open_mutex;
            bindings::vblk_shim_mutex_lock(lock);
            let open = bindings::vblk_shim_disk_openers(disk) != 0;
            if !open {
                self.inner().common.dying.store(true, Ordering::Release);
            }
            bindings::mutex_unlock(lock);
            if open {
                return Err(EBUSY);
            }
        }
        Ok(())
    }

    /// How many times the disk is open.
    pub(crate) fn openers(&self) -> i32 {
        // SAFETY: the gendisk is live (invariant).
        unsafe { bindings::vblk_shim_disk_openers(self.gendisk()) as i32 }
    }

    /// Stops dispatching: returns once no `queue_rq` runs; requests that
    /// arrive meanwhile wait in blk-mq (they do not fail) until
    /// [`Disk::unquiesce`]. Requests already pending go on completing.
    pub(crate) fn quiesce(&self) {
        // SAFETY: the queue is live (invariant).
        unsafe { bindings::blk_mq_quiesce_queue(self.queue()) }
    }

    /// Resumes dispatching after [`Disk::quiesce`].
    pub(crate) fn unquiesce(&self) {
        // SAFETY: the queue is live; the caller pairs this with a quiesce.
        unsafe { bindings::blk_mq_unquiesce_queue(self.queue()) }
    }

    /// Waits until no request is in flight (use after [`Disk::quiesce`]);
    /// `ERESTARTSYS` if a signal arrived first. Looks every millisecond:
    /// the completion path stays free of wake-ups for this rare wait.
    pub(crate) fn wait_idle(&self) -> Result {
        loop {
            // SAFETY: the queue is live (invariant).
            if !unsafe { bindings::blk_mq_queue_inflight(self.queue()) } {
                return Ok(());
            }
            if kernel::current!().signal_pending() {
                return Err(ERESTARTSYS);
            }
            // SAFETY: process context (control ioctls); returns early on a
            // signal, seen above on the next round.
            unsafe { bindings::msleep_interruptible(1) };
        }
    }

    /// Applies new limits. Only while quiesced and idle.
    pub(crate) fn set_limits(&self, limits: &QueueLimits) -> Result {
        let mut l = disk_limits(limits);
        // SAFETY: the queue is live; `l` is a valid limits value the call
        // copies.
        to_result(unsafe { bindings::queue_limits_set(self.queue(), &mut l) })
    }

    /// The disk's logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        // SAFETY: the queue is live; its limits are read as a whole.
        unsafe { (*self.queue()).limits.logical_block_size }
    }

    /// Sets the size, telling userspace (uevent) if it changed.
    pub(crate) fn set_capacity(&self, sectors: u64) {
        // SAFETY: the gendisk is live (invariant).
        unsafe { bindings::set_capacity_and_notify(self.gendisk(), sectors) };
    }
}

impl<T: QueueHandler> Drop for Disk<T> {
    fn drop(&mut self) {
        // SAFETY: every part is made (invariant); `del_gendisk` in
        // `teardown` waits for every request before anything is freed.
        unsafe { teardown(self.inner.as_ptr(), Made::Disk) }
    }
}

/// An unbound `WQ_MEM_RECLAIM` workqueue named `fmt` with the disk index;
/// null when out of memory.
fn reclaim_queue(fmt: &core::ffi::CStr, index: u32) -> *mut bindings::workqueue_struct {
    // SAFETY: `fmt` is a NUL-terminated format taking one unsigned int,
    // which is passed; the name is copied. Process context.
    unsafe {
        bindings::alloc_workqueue(
            fmt.as_ptr(),
            bindings::VBLK_CONST_WQ_RECLAIM_UNBOUND,
            0,
            index,
        )
    }
}

/// `block_device_operations::open`: refuses opens once removal is decided.
///
/// # Safety
///
/// Called by the block layer with a live vblk gendisk, under its
/// `open_mutex`.
unsafe extern "C" fn disk_open_cb(
    disk: *mut bindings::gendisk,
    _mode: bindings::blk_mode_t,
) -> i32 {
    // SAFETY: `disk` is a live vblk gendisk (this is its fops).
    match unsafe { vblk_disk_common(disk) } {
        Some(c) if !c.dying.load(Ordering::Acquire) => 0,
        _ => ENXIO.to_errno(),
    }
}

/// `blk_mq_ops::init_hctx`: gives the hardware context's flush lock the
/// disk's own lock class.
///
/// # Safety
///
/// Called by blk-mq with a hardware context of a disk with handler `T`
/// and the tag set's `driver_data`.
unsafe extern "C" fn init_hctx_cb<T: QueueHandler>(
    hctx: *mut bindings::blk_mq_hw_ctx,
    data: *mut core::ffi::c_void,
    _index: u32,
) -> i32 {
    // SAFETY: `data` is the `DiskInner<T>` (the tag set's `driver_data`),
    // whose key is registered and outlives the hardware context.
    unsafe {
        let d = &*data.cast::<DiskInner<T>>();
        bindings::blk_mq_hctx_set_fq_lock_class(hctx, d.fq_key.get());
    }
    0
}

/// Runs `f` with the current task's plug set aside: lower bios submitted
/// inside are issued as they come (or into a plug `f` starts itself).
fn without_plug(f: impl FnOnce()) {
    // SAFETY: reads the running task's own plug pointer.
    let outer = unsafe { bindings::vblk_shim_current_plug() };
    // SAFETY: only the running task uses its `plug` field; the outer plug
    // (if any) stays where it is and is put back before returning.
    unsafe { bindings::vblk_shim_set_current_plug(core::ptr::null_mut()) };
    f();
    // SAFETY: as above; `f` left no plug of its own set (it finishes any
    // plug it starts).
    unsafe { bindings::vblk_shim_set_current_plug(outer) };
}

/// Hands a started request to the handler.
///
/// # Safety
///
/// `rq` must be a request of a live disk with handler `T` that the caller
/// owns (dispatched to us by blk-mq, or handed back by a work item).
unsafe fn handle<T: QueueHandler>(rq: *mut bindings::request, in_worker: bool) {
    let Some(raw) = NonNull::new(rq) else { return };
    // SAFETY: by the contract the disk is live.
    let d = unsafe { disk_of::<T>(raw) };
    // INVARIANT: started, owned, neither ended nor dispatched.
    d.handler.queue_rq(Request {
        raw,
        in_worker,
        _handler: PhantomData,
    });
}

/// `blk_mq_ops::queue_rq`.
///
/// # Safety
///
/// Called by blk-mq for a disk with handler `T`; `bd` holds a request
/// that is now ours.
unsafe extern "C" fn queue_rq_cb<T: QueueHandler>(
    _hctx: *mut bindings::blk_mq_hw_ctx,
    bd: *const bindings::blk_mq_queue_data,
) -> bindings::blk_status_t {
    // SAFETY: `bd` is valid for the call; its request is ours to start.
    let rq = unsafe { (*bd).rq };
    // SAFETY: blk-mq dispatched `rq` to us and has not started it; we
    // start it exactly once.
    unsafe { bindings::blk_mq_start_request(rq) };
    // queue_rq is often reached from the flush of the submitter's plug.
    // Lower bios submitted now must not join that plug while blk-mq is
    // walking it: set it aside, so they are issued as they come (a plug
    // of our own per request batched nothing and cost a flush each time).
    // SAFETY: the started request is ours, of a disk with handler `T`.
    without_plug(|| unsafe { handle::<T>(rq, false) });
    Status::OK.0
}

/// `blk_mq_ops::queue_rqs`: a batch from the submitter's plug (io_uring
/// and the page cache submit many at once). The lower bios of the whole
/// batch go into a plug of our own, flushed once at the end, so the
/// devices below get them as a batch too (dm's clones join the
/// submitter's plug the same way). Sleeping here (allocation) flushes that
/// plug first, as any plugged submitter's does.
///
/// # Safety
///
/// Called by blk-mq with a list of requests of disks with handler `T`.
unsafe extern "C" fn queue_rqs_cb<T: QueueHandler>(list: *mut bindings::rq_list) {
    without_plug(|| {
        let mut plug = MaybeUninit::<bindings::blk_plug>::uninit();
        // SAFETY: `plug` is ours, on this stack frame, started here and
        // finished below before the frame ends.
        unsafe { bindings::blk_start_plug(plug.as_mut_ptr()) };
        loop {
            // SAFETY: `list` is the batch blk-mq handed us, ours to take
            // requests from.
            let rq = unsafe { bindings::vblk_shim_rq_list_pop(list) };
            if rq.is_null() {
                break;
            }
            // SAFETY: a request of the batch is ours to start and handle.
            unsafe {
                bindings::blk_mq_start_request(rq);
                handle::<T>(rq, false);
            }
        }
        // SAFETY: the plug started above, on this task.
        unsafe { bindings::blk_finish_plug(plug.as_mut_ptr()) };
    });
}

/// The work item of [`Request::defer`]: hands the request back.
///
/// # Safety
///
/// `work` must be the `map_work` of the PDU of a request of a disk with
/// handler `T`, queued by [`Request::defer`] (which gave the request up).
unsafe extern "C" fn map_work_cb<T: QueueHandler>(work: *mut bindings::work_struct) {
    // SAFETY: by the contract the work item sits at `map_work` in the PDU.
    let rq = unsafe { rq_of_work(work, offset_of!(Pdu<T::RqData>, map_work)) };
    // SAFETY: the request was given up to this work item, now ours.
    unsafe { handle::<T>(rq.as_ptr(), true) };
}

/// The work item of a finish: hands the request to the handler.
///
/// # Safety
///
/// `work` must be the `done_work` of the PDU of a request of a disk with
/// handler `T`, queued by `put` after its last count went with `finish`
/// asked for (so it is dispatched, not ended, and ours alone).
unsafe extern "C" fn done_work_cb<T: QueueHandler>(work: *mut bindings::work_struct) {
    // SAFETY: by the contract the work item sits at `done_work` in the PDU.
    let raw = unsafe { rq_of_work(work, offset_of!(Pdu<T::RqData>, done_work)) };
    // SAFETY: as above, the disk is live while it has requests.
    let d = unsafe { disk_of::<T>(raw) };
    // INVARIANT: dispatched, not ended, no count left.
    d.handler.finish(Finished {
        raw,
        _handler: PhantomData,
    });
}
