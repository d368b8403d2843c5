// SPDX-License-Identifier: GPL-2.0
//! blk-mq disks and their requests.
//!
//! The C half is in shim.c (`vblk_shim_disk_*`, `vblk_shim_rq_*`): the tag
//! set (BLOCKING, so `queue_rq` may sleep), the disk, a bio_set for lower
//! bios, a WQ_MEM_RECLAIM workqueue, and the static inline request helpers.
//!
//! A request's life: blk-mq hands it to [`QueueHandler::queue_rq`] as a
//! [`Request`]. The handler either ends it at once or turns it into a
//! [`Pending`] request carrying the handler's per-request data, and
//! submits lower bios through it (clones of the request's data, bounce
//! copies of it, or cache flushes). Each lower bio holds a count on the
//! request; so does the `Pending` value itself while the handler is still
//! submitting. The last count to go ends the request with the first error
//! any part reported, or, if the handler asked for it with
//! [`Pending::finish_later`], hands it to [`QueueHandler::finish`] on the
//! disk's workqueue as a [`Finished`] request, whose data the handler may
//! change (process context) before it ends.

use super::bdev::BlockDevice;
use super::bindings;
use super::bounce::BouncePool;
use super::limits::QueueLimits;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::{size_of, MaybeUninit};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use kernel::error::{to_result, Error, Result};
use kernel::sync::Arc;

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
    pub(crate) const OK: Status = Status(0);
    /// The operation is not supported (`EOPNOTSUPP`).
    pub(crate) const NOT_SUPPORTED: Status = Status(1);
    /// A generic I/O error (`EIO`).
    pub(crate) const IO_ERROR: Status = Status(10);
    /// Not a block layer status: what [`QueueHandler::lower_done`] returns
    /// for a lower bio that failed but may be retried. The request does not
    /// fail; it goes to [`QueueHandler::finish`], where
    /// [`Finished::retry_requested`] says so, and the handler retries (or
    /// fails it).
    pub(crate) const RETRY: Status = Status(0xff);

    pub(crate) fn is_ok(self) -> bool {
        self.0 == 0
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

    /// A lower bio submitted with `tag` completed with `status`. Runs in
    /// any context (hard irq included) and must not sleep; returns the
    /// status to record for the request.
    fn lower_done(data: &Self::RqData, tag: u64, status: Status) -> Status;

    /// A request that asked for it ([`Pending::finish_later`]), once all
    /// its lower bios completed: runs on the disk's workqueue (process
    /// context, may sleep). The request ends when `rq` is dropped.
    fn finish(&self, rq: Finished<Self>)
    where
        Self: Sized;
}

/// Request flags vblk looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RqFlags(u32);

impl RqFlags {
    /// Readahead: may be failed at will.
    pub(crate) fn readahead(self) -> bool {
        self.0 & bindings::vblk_rq_flag_VBLK_RQ_RAHEAD != 0
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
    let mut raw = MaybeUninit::<bindings::vblk_rq_info>::uninit();
    // SAFETY: callers pass a started request they own; `raw` is writable.
    unsafe { bindings::vblk_shim_rq_info(rq.as_ptr(), raw.as_mut_ptr()) };
    // SAFETY: the shim sets every field, `op` to a `vblk_op` value.
    let raw = unsafe { raw.assume_init() };
    RqInfo {
        op: op_from(raw.op),
        flags: RqFlags(raw.flags),
        raw_flags: raw.opf,
        sector: raw.pos,
        sectors: raw.sectors,
    }
}

/// The per-request data area (the request's PDU). The shim increments
/// `pending` for each lower bio it submits (it must come first).
#[repr(C)]
struct RqState<D> {
    pending: AtomicU32,
    status: AtomicU8,
    /// [`QueueHandler::finish`] must run before the request ends.
    finish: AtomicBool,
    /// Retry groups with a lower bio that failed with [`Status::RETRY`]: bit
    /// `(tag >> 32) % 64` (the handler's group of the bio, e.g. its table
    /// line), so one group's retry does not make another's look failed.
    retry: AtomicU64,
    data: MaybeUninit<D>,
}

fn op_from(op: bindings::vblk_op) -> Op {
    match op {
        bindings::vblk_op::VBLK_OP_READ => Op::Read,
        bindings::vblk_op::VBLK_OP_WRITE => Op::Write,
        bindings::vblk_op::VBLK_OP_FLUSH => Op::Flush,
        bindings::vblk_op::VBLK_OP_DISCARD => Op::Discard,
        bindings::vblk_op::VBLK_OP_WRITE_ZEROES => Op::WriteZeroes,
        bindings::vblk_op::VBLK_OP_OTHER => Op::Other,
    }
}

/// A started request, owned by the driver until it is ended.
pub(crate) struct Request<T: QueueHandler + ?Sized> {
    raw: NonNull<bindings::request>,
    /// Handed back by [`Request::defer`]: runs on the disk's workqueue.
    in_worker: bool,
    _handler: PhantomData<fn(&T)>,
}

impl<T: QueueHandler + ?Sized> Request<T> {
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
        // SAFETY: we own the started, not dispatched request; the work item
        // hands it back to `queue_rq`, which owns it again.
        unsafe { bindings::vblk_shim_rq_defer_map(raw.as_ptr()) }
    }

    /// Ends the request with `status` without any lower I/O.
    pub(crate) fn end(self, status: Status) {
        let raw = self.raw;
        core::mem::forget(self);
        // SAFETY: we own the started request and end it exactly once (the
        // `forget` above keeps `Drop` from ending it again).
        unsafe { bindings::vblk_shim_rq_end(raw.as_ptr(), status.0) }
    }
}

impl<T: QueueHandler> Request<T> {
    /// Attaches `data` and returns the request as pending: lower bios can
    /// now be submitted for it, and it ends when the last of them and the
    /// returned value are gone.
    pub(crate) fn dispatch(self, data: T::RqData) -> Pending<T> {
        let raw = self.raw;
        core::mem::forget(self);
        // SAFETY: the PDU is `size_of::<RqState<T::RqData>>()` bytes,
        // suitably aligned (checked in `Disk::create`), and not in use: the
        // request was just started and nothing else writes its PDU.
        unsafe {
            state_ptr::<T>(raw).write(RqState {
                pending: AtomicU32::new(1),
                status: AtomicU8::new(0),
                finish: AtomicBool::new(false),
                retry: AtomicU64::new(0),
                data: MaybeUninit::new(data),
            })
        };
        Pending {
            raw,
            _handler: PhantomData,
        }
    }
}

impl<T: QueueHandler + ?Sized> Drop for Request<T> {
    fn drop(&mut self) {
        // SAFETY: a `Request` that was not ended is still owned and started.
        unsafe { bindings::vblk_shim_rq_end(self.raw.as_ptr(), Status::IO_ERROR.0) }
    }
}

/// A request with per-request data attached, whose lower bios are being
/// submitted. Dropping it lets the request end once they all completed.
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
/// `raw` must return a request of a disk whose handler's `RqData` is
/// `Data`, dispatched and not ended for as long as `self` lives.
unsafe trait Dispatched {
    type Data;

    /// The request, dispatched and not ended while `self` lives.
    fn raw(&self) -> NonNull<bindings::request>;

    fn state(&self) -> &RqState<Self::Data> {
        // SAFETY: by `raw`'s contract the state is initialised and stays so
        // while `self` lives; the PDU holds the handler's `RqState`.
        unsafe { &*bindings::vblk_shim_rq_pdu(self.raw().as_ptr()).cast() }
    }
}

// SAFETY: a `Pending` holds a count on its dispatched request (type
// invariant), so the request cannot end while it lives.
unsafe impl<T: QueueHandler> Dispatched for Pending<T> {
    type Data = T::RqData;

    fn raw(&self) -> NonNull<bindings::request> {
        self.raw
    }
}

// SAFETY: a `Finished` owns its dispatched request, which ends only in
// its `drop`.
unsafe impl<T: QueueHandler> Dispatched for Finished<T> {
    type Data = T::RqData;

    fn raw(&self) -> NonNull<bindings::request> {
        self.raw
    }
}

/// The handler's data of a dispatched request.
fn data_of<R: Dispatched>(rq: &R) -> &R::Data {
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

    /// Zeroes sectors `[skip, skip + len)` of the request's data (reads).
    pub(crate) fn zero_range(&self, skip: u64, len: u64) {
        // SAFETY: we own the started request; its data pages are ours to
        // write until it ends. The shim clamps the range to the request.
        unsafe { bindings::vblk_shim_rq_zero_range(self.raw.as_ptr(), skip, len) }
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
        // SAFETY: the request is pending (its PDU starts with the count the
        // shim increments) and `dev` is an open block device file for the
        // call; the clones reference the block device, not the file.
        unsafe {
            bindings::vblk_shim_rq_clone(self.raw.as_ptr(), skip, len, dev.raw(), sector, tag)
        };
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
        mut fill: &mut dyn FnMut(u64, &mut [u8]),
    ) {
        let ctx: *mut &mut dyn FnMut(u64, &mut [u8]) = &mut fill;
        // SAFETY: as for `clone_to`; `pool` lives as long as the table
        // that the request holds, so past the bios' completions, which
        // return the pages to it. `ctx` points to `fill`, live for the
        // call; the shim calls it only during the call.
        unsafe {
            bindings::vblk_shim_rq_bounce_write(
                self.raw.as_ptr(),
                pool.raw(),
                part.start,
                part.end.saturating_sub(part.start),
                dev.raw(),
                sector,
                tag,
                Some(fill_trampoline),
                ctx.cast(),
            )
        };
    }

    /// Asks for [`QueueHandler::finish`] to run (in process context) once
    /// every lower bio of the request completed, before the request ends.
    pub(crate) fn finish_later(&self) {
        self.state().finish.store(true, Ordering::Release);
    }

    /// For a discard or write-zeroes request: sends the same operation for
    /// `len` sectors of `dev` from `sector` on, reporting `tag`.
    pub(crate) fn range_to(&self, dev: &BlockDevice, sector: u64, len: u32, tag: u64) {
        // SAFETY: as for `clone_to`; the bio carries no data pages.
        unsafe { bindings::vblk_shim_rq_range(self.raw.as_ptr(), dev.raw(), sector, len, tag) }
    }

    /// Sends an empty cache flush to `dev`, reporting `tag`.
    pub(crate) fn flush_to(&self, dev: &BlockDevice, tag: u64) {
        // SAFETY: as for `clone_to`.
        unsafe { bindings::vblk_shim_rq_flush(self.raw.as_ptr(), dev.raw(), tag) }
    }
}

impl<T: QueueHandler> Drop for Pending<T> {
    fn drop(&mut self) {
        // SAFETY: the request is pending and `self` holds one count.
        unsafe { put::<T>(self.raw, Status::OK) }
    }
}

/// A request whose lower I/O completed, handed to
/// [`QueueHandler::finish`]. Dropping it ends the request.
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
    /// bits) failed with [`Status::RETRY`] (the handler retries that I/O
    /// or fails the request).
    pub(crate) fn retry_requested(&self, group: u32) -> bool {
        self.state().retry.load(Ordering::Acquire) & retry_bit(group) != 0
    }

    /// Records a failure for the request (the worst one wins, see `record`).
    pub(crate) fn fail(&self, status: Status) {
        record(self.state(), status);
    }

    /// Calls `f(at, bytes)` for the `len` bytes of the request's data from
    /// byte `offset` on, one page segment at a time (`at` counts from
    /// `offset`); `f` may change them (for reads: what the submitter will
    /// see). Clamped to the request's data.
    pub(crate) fn visit_data(
        &mut self,
        offset: u64,
        len: u64,
        mut f: &mut dyn FnMut(u64, &mut [u8]),
    ) {
        let ctx: *mut &mut dyn FnMut(u64, &mut [u8]) = &mut f;
        // SAFETY: we own the started request and its lower I/O is over;
        // `&mut self` keeps any other access to its data out meanwhile.
        // `ctx` points to `f`, live for the call; the shim calls it only
        // during the call, with one mapped segment at a time.
        unsafe {
            bindings::vblk_shim_rq_visit(
                self.raw.as_ptr(),
                offset,
                len,
                Some(fill_trampoline),
                ctx.cast(),
            )
        }
    }

    /// Copies `buf` into the request's data from byte `offset` on (for
    /// reads: what the submitter will see), clamped to the request's data;
    /// requests without data copy nothing.
    pub(crate) fn write_data(&self, offset: u64, buf: &[u8]) {
        // SAFETY: we own the started request; `buf` is readable for its
        // length (clamped to u32, the most a request holds); the shim only
        // reads it when copying into the request (the pointer is mutable
        // for the C type only).
        unsafe {
            bindings::vblk_shim_rq_copy(
                self.raw.as_ptr(),
                offset,
                buf.as_ptr().cast_mut(),
                buf.len().min(u32::MAX as usize) as u32,
                true,
            )
        }
    }
}

impl<T: QueueHandler> Drop for Finished<T> {
    fn drop(&mut self) {
        // SAFETY: a `Finished` owns its dispatched request, no count is
        // left, and `drop` runs once.
        unsafe { end_dispatched::<T>(self.raw) }
    }
}

/// The PDU of `rq` as this handler's request state.
fn state_ptr<T: QueueHandler>(rq: NonNull<bindings::request>) -> *mut RqState<T::RqData> {
    // SAFETY: `rq` is a request of a vblk disk; the shim returns the PDU
    // address without dereferencing anything else.
    unsafe { bindings::vblk_shim_rq_pdu(rq.as_ptr()) }.cast()
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
unsafe fn put<T: QueueHandler>(rq: NonNull<bindings::request>, status: Status) {
    let state = state_ptr::<T>(rq);
    // SAFETY: the caller's count keeps the state initialised.
    let st = unsafe { &*state };
    record(st, status);
    if st.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    if st.finish.load(Ordering::Acquire) {
        // SAFETY: we own the request; the work item ends it (`Finished`).
        unsafe { bindings::vblk_shim_rq_defer(rq.as_ptr()) };
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
    let state = state_ptr::<T>(rq);
    // SAFETY: the state is initialised and nobody else uses it.
    let status = unsafe { (*state).status.load(Ordering::Acquire) };
    // SAFETY: `dispatch` initialised the data; it is dropped exactly once,
    // here, by the only user.
    unsafe { (*state).data.assume_init_drop() };
    // SAFETY: we own the request and end it exactly once.
    unsafe { bindings::vblk_shim_rq_end(rq.as_ptr(), status) }
}

/// A registered blk-mq disk whose requests go to a `T`. Dropping it
/// deletes the disk (waiting for its I/O to finish).
pub(crate) struct Disk<T: QueueHandler> {
    raw: NonNull<bindings::vblk_disk>,
    _handler: Arc<T>,
}

// SAFETY: the shim's disk functions may be called from any thread; the
// handler is `Send + Sync`.
unsafe impl<T: QueueHandler> Send for Disk<T> {}
// SAFETY: as above; `&Disk` only allows operations the block layer
// serialises itself.
unsafe impl<T: QueueHandler> Sync for Disk<T> {}

impl<T: QueueHandler> Disk<T> {
    const OPS: bindings::vblk_disk_ops = bindings::vblk_disk_ops {
        queue_rq: Some(queue_rq_trampoline::<T>),
        lower_done: Some(lower_done_trampoline::<T>),
        finish: Some(finish_trampoline::<T>),
    };

    /// Creates and registers disk `vblk<index>` of `sectors` sectors.
    pub(crate) fn create(
        handler: Arc<T>,
        index: u32,
        sectors: u64,
        limits: &QueueLimits,
    ) -> Result<Self> {
        // The PDU follows `struct request`, which is 8-byte aligned.
        const { assert!(core::mem::align_of::<RqState<T::RqData>>() <= 8) };
        let ctx: *const T = &*handler;
        let mut err = 0;
        // SAFETY: `ctx` stays valid while the disk exists: `Self` owns an
        // `Arc` to it and destroys the disk (which waits for all requests)
        // before dropping the `Arc`. `OPS` is a constant (static
        // promotion) matching `T`; `limits` is live for the call (the shim
        // copies it).
        let raw = unsafe {
            bindings::vblk_shim_disk_create(
                &Self::OPS,
                ctx.cast(),
                index,
                sectors,
                limits.raw(),
                size_of::<RqState<T::RqData>>() as u32,
                &mut err,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| Error::from_errno(err))?;
        Ok(Disk {
            raw,
            _handler: handler,
        })
    }

    /// The disk's dev_t (`major << 20 | minor`).
    pub(crate) fn devt(&self) -> u32 {
        // SAFETY: `raw` is a live disk (type invariant).
        unsafe { bindings::vblk_shim_disk_devt(self.raw.as_ptr()) }
    }

    /// Commits to removing the disk unless it is open (`EBUSY`): from a
    /// successful return on, every open of the disk fails, so nobody can
    /// open it between this check and the drop that deletes it.
    pub(crate) fn claim_for_removal(&self) -> Result {
        // SAFETY: `raw` is a live disk.
        to_result(unsafe { bindings::vblk_shim_disk_claim_for_removal(self.raw.as_ptr()) })
    }

    /// How many times the disk is open.
    pub(crate) fn openers(&self) -> i32 {
        // SAFETY: `raw` is a live disk.
        unsafe { bindings::vblk_shim_disk_openers(self.raw.as_ptr()) }
    }

    /// Stops dispatching: returns once no `queue_rq` runs; requests that
    /// arrive meanwhile wait in blk-mq (they do not fail) until
    /// [`Disk::unquiesce`]. Requests already pending go on completing.
    pub(crate) fn quiesce(&self) {
        // SAFETY: `raw` is a live disk.
        unsafe { bindings::vblk_shim_disk_quiesce(self.raw.as_ptr()) }
    }

    /// Resumes dispatching after [`Disk::quiesce`].
    pub(crate) fn unquiesce(&self) {
        // SAFETY: `raw` is a live disk; the caller pairs this with a quiesce.
        unsafe { bindings::vblk_shim_disk_unquiesce(self.raw.as_ptr()) }
    }

    /// Waits until no request is in flight (use after [`Disk::quiesce`]);
    /// `ERESTARTSYS` if a signal arrived first.
    pub(crate) fn wait_idle(&self) -> Result {
        // SAFETY: `raw` is a live disk; control ioctls run in process context.
        to_result(unsafe { bindings::vblk_shim_disk_wait_idle(self.raw.as_ptr()) })
    }

    /// Applies new limits. Only while quiesced and idle.
    pub(crate) fn set_limits(&self, limits: &QueueLimits) -> Result {
        // SAFETY: both are live; the shim copies the limits.
        to_result(unsafe { bindings::vblk_shim_disk_set_limits(self.raw.as_ptr(), limits.raw()) })
    }

    /// The disk's logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        // SAFETY: `raw` is a live disk.
        unsafe { bindings::vblk_shim_disk_logical_block_size(self.raw.as_ptr()) }
    }

    /// Sets the size, telling userspace (uevent) if it changed.
    pub(crate) fn set_capacity(&self, sectors: u64) {
        // SAFETY: `raw` is a live disk.
        unsafe { bindings::vblk_shim_disk_set_capacity(self.raw.as_ptr(), sectors) }
    }
}

impl<T: QueueHandler> Drop for Disk<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is a live disk, destroyed exactly once here.
        unsafe { bindings::vblk_shim_disk_destroy(self.raw.as_ptr()) }
    }
}

/// The shim's queue_rq callback: hands the request to the handler.
///
/// # Safety
///
/// `ctx` must be the pointer [`Disk::create`] passed for this `T`, with the
/// disk alive; `rq` a started request of that disk.
unsafe extern "C" fn queue_rq_trampoline<T: QueueHandler>(
    ctx: *const c_void,
    rq: *mut bindings::request,
    in_worker: bool,
) {
    // SAFETY: by the contract `ctx` points to a live `T`.
    let handler = unsafe { &*ctx.cast::<T>() };
    if let Some(raw) = NonNull::new(rq) {
        handler.queue_rq(Request {
            raw,
            in_worker,
            _handler: PhantomData,
        });
    }
}

/// The shim's lower-bio completion: lets the handler judge the status,
/// then drops the bio's count on the request.
///
/// # Safety
///
/// `rq` must be a pending request of a disk with handler `T`, and the
/// completed bio must have held one of its counts.
unsafe extern "C" fn lower_done_trampoline<T: QueueHandler>(
    rq: *mut bindings::request,
    tag: u64,
    status: u8,
) {
    let Some(rq) = NonNull::new(rq) else { return };
    // SAFETY: the bio's count keeps the state initialised.
    let state = unsafe { &*state_ptr::<T>(rq) };
    // SAFETY: as above, for the data.
    let data = unsafe { state.data.assume_init_ref() };
    let mut status = T::lower_done(data, tag, Status(status));
    if status == Status::RETRY {
        // Seen by `put` (after the count drops, with AcqRel ordering).
        state
            .retry
            .fetch_or(retry_bit((tag >> 32) as u32), Ordering::Release);
        state.finish.store(true, Ordering::Release);
        status = Status::OK;
    }
    // SAFETY: the completed bio's count is handed over to `put`.
    unsafe { put::<T>(rq, status) }
}

/// The bit of retry group `group` in [`RqState::retry`].
fn retry_bit(group: u32) -> u64 {
    1 << (group % 64)
}

/// The shim's deferred completion: hands the request to the handler.
///
/// # Safety
///
/// `ctx` must be the pointer [`Disk::create`] passed for this `T`, with the
/// disk alive; `rq` a request of that disk whose last count went with its
/// state asking for `finish` (so it is dispatched and not ended).
unsafe extern "C" fn finish_trampoline<T: QueueHandler>(
    ctx: *const c_void,
    rq: *mut bindings::request,
) {
    // SAFETY: by the contract `ctx` points to a live `T`.
    let handler = unsafe { &*ctx.cast::<T>() };
    if let Some(raw) = NonNull::new(rq) {
        handler.finish(Finished {
            raw,
            _handler: PhantomData,
        });
    }
}

/// The shim's bounce-page callback: lets the caller's closure change the
/// copy of the request's data before it is written.
///
/// # Safety
///
/// `ctx` must point to a live `&mut dyn FnMut(u64, &mut [u8])` not used
/// elsewhere during the call, and `buf` to `len` writable bytes.
unsafe extern "C" fn fill_trampoline(ctx: *mut c_void, offset: u64, buf: *mut u8, len: u32) {
    // SAFETY: by the contract.
    let fill = unsafe { &mut *ctx.cast::<&mut dyn FnMut(u64, &mut [u8])>() };
    // SAFETY: by the contract, `buf` holds `len` bytes only we use now.
    let bytes = unsafe { core::slice::from_raw_parts_mut(buf, len as usize) };
    fill(offset, bytes);
}
