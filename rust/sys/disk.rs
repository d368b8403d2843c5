// SPDX-License-Identifier: GPL-2.0
//! blk-mq disks and their requests.
//!
//! The C half is in shim.c (`vblk_shim_disk_*`, `vblk_shim_rq_*`): tag set
//! (BLOCKING, so `queue_rq` may sleep), disk allocation with limits, and the
//! static inline request helpers.

use super::bindings;
use core::ffi::c_void;
use core::ptr::NonNull;
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

/// How a request ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    IoError,
}

impl Status {
    fn raw(self) -> u8 {
        (match self {
            Status::Ok => bindings::vblk_status_VBLK_STS_OK,
            Status::IoError => bindings::vblk_status_VBLK_STS_IOERR,
        }) as u8
    }
}

/// Receives the requests of a [`Disk`].
pub(crate) trait QueueHandler: Send + Sync {
    /// Handles one started request; it must be ended (dropping a
    /// [`Request`] without ending it ends it with an I/O error).
    fn queue_rq(&self, rq: Request);
}

/// A started request, owned by the driver until it is ended.
pub(crate) struct Request {
    raw: NonNull<bindings::request>,
}

impl Request {
    pub(crate) fn op(&self) -> Op {
        // SAFETY: `raw` is a started request we own (type invariant).
        match unsafe { bindings::vblk_shim_rq_op(self.raw.as_ptr()) } {
            bindings::vblk_op::VBLK_OP_READ => Op::Read,
            bindings::vblk_op::VBLK_OP_WRITE => Op::Write,
            bindings::vblk_op::VBLK_OP_FLUSH => Op::Flush,
            bindings::vblk_op::VBLK_OP_DISCARD => Op::Discard,
            bindings::vblk_op::VBLK_OP_WRITE_ZEROES => Op::WriteZeroes,
            bindings::vblk_op::VBLK_OP_OTHER => Op::Other,
        }
    }

    /// First sector.
    pub(crate) fn sector(&self) -> u64 {
        // SAFETY: `raw` is a started request we own (type invariant).
        unsafe { bindings::vblk_shim_rq_pos(self.raw.as_ptr()) }
    }

    /// Length in sectors.
    pub(crate) fn sectors(&self) -> u32 {
        // SAFETY: `raw` is a started request we own (type invariant).
        unsafe { bindings::vblk_shim_rq_sectors(self.raw.as_ptr()) }
    }

    /// Fills the request's data pages with zeros (for reads).
    pub(crate) fn zero_fill(&mut self) {
        // SAFETY: `raw` is a started request we own; its bios' pages are
        // ours to write until we end it.
        unsafe { bindings::vblk_shim_rq_zero_fill(self.raw.as_ptr()) }
    }

    /// Ends the request with `status`.
    pub(crate) fn end(self, status: Status) {
        let raw = self.raw;
        core::mem::forget(self);
        // SAFETY: we own the started request and end it exactly once (the
        // `forget` above keeps `Drop` from ending it again).
        unsafe { bindings::vblk_shim_rq_end(raw.as_ptr(), status.raw()) }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        // SAFETY: a `Request` that was not ended is still owned and started.
        unsafe { bindings::vblk_shim_rq_end(self.raw.as_ptr(), Status::IoError.raw()) }
    }
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
// SAFETY: as above; `&Disk` only allows the thread-safe queries.
unsafe impl<T: QueueHandler> Sync for Disk<T> {}

impl<T: QueueHandler> Disk<T> {
    /// Creates and registers disk `vblk<index>` of `sectors` sectors.
    pub(crate) fn create(handler: Arc<T>, index: u32, sectors: u64) -> Result<Self> {
        let ctx: *const T = &*handler;
        let mut err = 0;
        // SAFETY: `ctx` stays valid while the disk exists: `Self` owns an
        // `Arc` to it and destroys the disk (which waits for all requests)
        // before dropping the `Arc`. The trampoline matches `T`.
        let raw = unsafe {
            bindings::vblk_shim_disk_create(
                Some(queue_rq_trampoline::<T>),
                ctx.cast(),
                index,
                sectors,
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
        // SAFETY: `raw` is a live disk (type invariant).
        unsafe { bindings::vblk_shim_disk_openers(self.raw.as_ptr()) }
    }
}

impl<T: QueueHandler> Disk<T> {
    /// Stops dispatching: returns once no `queue_rq` runs; requests that
    /// arrive meanwhile wait in blk-mq (they do not fail) until
    /// [`Disk::unquiesce`]. Requests the handler still owns (asynchronous
    /// completion) are the handler's to drain.
    pub(crate) fn quiesce(&self) {
        // SAFETY: `raw` is a live disk.
        unsafe { bindings::vblk_shim_disk_quiesce(self.raw.as_ptr()) }
    }

    /// Resumes dispatching after [`Disk::quiesce`].
    pub(crate) fn unquiesce(&self) {
        // SAFETY: `raw` is a live disk; the caller pairs this with a quiesce.
        unsafe { bindings::vblk_shim_disk_unquiesce(self.raw.as_ptr()) }
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
) {
    // SAFETY: by the contract `ctx` points to a live `T`.
    let handler = unsafe { &*ctx.cast::<T>() };
    if let Some(raw) = NonNull::new(rq) {
        handler.queue_rq(Request { raw });
    }
}
