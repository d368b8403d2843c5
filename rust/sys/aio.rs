// SPDX-License-Identifier: GPL-2.0
//! A target's own asynchronous I/O (as dm-io): one buffer the target owns,
//! read from or written to several lower devices at once, one completion
//! callback when every bio is over, and which destinations failed.
//!
//! An [`AsyncIo`] is allocated with its owner and carries one batch at a
//! time: [`AsyncIo::submit`] takes the buffer, submits a bio per
//! destination and returns at once; when the last bio completes the
//! client's [`AioDone::aio_done`] runs (completion context: it kicks a
//! worker), and the worker takes the buffer and the per-destination
//! errors back with [`AsyncIo::take`]. Nothing waits on a thread, so a
//! worker never sits on a `WQ_MEM_RECLAIM` queue while its I/O is out.
//!
//! The bios come from the kernel's general bio_set (a mempool: GFP_NOIO
//! waits for a bio to come back and never fails) and each is submitted
//! before the next is allocated, so a writer under memory pressure makes
//! progress. A request's own pages go to several devices through the map
//! verdicts instead (`Io::write_copy`, one `end_io` per destination).

use super::bdev::{buffer_range, BlockDevice, IoBuffer, WriteFlags};
use super::bindings;
use core::cell::UnsafeCell;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU8, Ordering};
use kernel::error::code::{EBUSY, EINVAL};
use kernel::error::Error;
use kernel::prelude::*;
use kernel::sync::Arc;

/// Most destinations of one batch (one bit each in [`DestErrors`]).
pub(crate) const MAX_DESTS: usize = 32;

/// Which destinations of a batch failed: bit `i` for `dests[i]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DestErrors(pub(crate) u32);

impl DestErrors {
    /// Whether destination `i` failed.
    pub(crate) fn failed(self, i: usize) -> bool {
        i < MAX_DESTS && self.0 & (1 << i) != 0
    }

    /// Whether any destination failed.
    pub(crate) fn any(self) -> bool {
        self.0 != 0
    }
}

/// What a batch does with its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AioOp {
    /// Each destination's bytes of the buffer are read from it.
    Read,
    /// Each destination's bytes of the buffer are written to it.
    Write(WriteFlags),
}

/// One destination of a batch: bytes `bytes` of the buffer, to or from
/// `dev` at `sector` (`bytes` as [`BlockDevice::read_at`] takes them).
pub(crate) struct AioDest<'a> {
    pub(crate) dev: &'a BlockDevice,
    pub(crate) sector: u64,
    pub(crate) bytes: Range<usize>,
}

/// Who hears that a batch ended.
pub(crate) trait AioDone: Send + Sync + 'static {
    /// A batch submitted for `this` is over: [`AsyncIo::take`] has its
    /// result. Runs in bio completion context (atomic: no sleeping, no
    /// mutex; kick a worker), or on the submitting thread before
    /// [`AsyncIo::submit`] returns when every bio was over by then.
    ///
    /// The batch holds a reference to the client until then, dropped
    /// right after this call: the client's owner keeps its own until
    /// [`AsyncIo::take`] returned the batch, so the batch's is never the
    /// last one (dropping a client may sleep).
    fn aio_done(this: &Arc<Self>);
}

/// No batch; `submit` may start one.
const IDLE: u8 = 0;
/// Bios are out; the submitter, then the last completer, own `flight`.
const FLIGHT: u8 = 1;
/// Over; `take` owns `flight`.
const DONE: u8 = 2;
/// `take` is emptying `flight`.
const TAKING: u8 = 3;

/// What a batch holds while it runs.
struct Flight<C> {
    buf: Option<IoBuffer>,
    client: Option<Arc<C>>,
    read: bool,
}

/// What one bio's `bi_private` points to: its batch and its destination.
struct Entry<C> {
    batch: AtomicPtr<Batch<C>>,
    index: u32,
}

/// The state one [`AsyncIo`] keeps between batches.
///
/// # Invariants
///
/// `flight` is accessed only by whoever `state` gives it to: the thread
/// that moved `state` from `IDLE` to `FLIGHT` until it drops its bias
/// count, then the completer that brought `pending` to zero until it sets
/// `DONE`, then the thread that moved `state` from `DONE` to `TAKING`
/// until it sets `IDLE`.
struct Batch<C> {
    state: AtomicU8,
    /// The last completer still holds the client (its reference and the
    /// call to [`AioDone::aio_done`] run after `DONE`, so that the kick
    /// finds the result); `take` waits for it.
    notifying: AtomicBool,
    /// Bios not over, plus one while the submitter is still submitting.
    pending: AtomicU32,
    errors: AtomicU32,
    flight: UnsafeCell<Flight<C>>,
    entries: [Entry<C>; MAX_DESTS],
}

// SAFETY: `flight` has one owner at a time (type invariant), handed over
// through `state`/`pending` with acquire/release ordering; its contents
// (`IoBuffer`, `Arc<C>` with `C: Send + Sync`) may move between threads.
unsafe impl<C: AioDone> Sync for Batch<C> {}
// SAFETY: as above; nothing in a batch is bound to a thread.
unsafe impl<C: AioDone> Send for Batch<C> {}

/// A target's asynchronous I/O: one batch at a time (see the module's
/// doc). Dropping it while a batch runs is safe: the batch keeps its own
/// reference until its last bio is over.
pub(crate) struct AsyncIo<C: AioDone> {
    batch: Arc<Batch<C>>,
}

impl<C: AioDone> AsyncIo<C> {
    /// An idle batch (process context).
    pub(crate) fn new() -> Result<Self> {
        let batch = Arc::new(
            Batch {
                state: AtomicU8::new(IDLE),
                notifying: AtomicBool::new(false),
                pending: AtomicU32::new(0),
                errors: AtomicU32::new(0),
                flight: UnsafeCell::new(Flight {
                    buf: None,
                    client: None,
                    read: false,
                }),
                entries: core::array::from_fn(|i| Entry {
                    batch: AtomicPtr::new(core::ptr::null_mut()),
                    index: i as u32,
                }),
            },
            GFP_KERNEL,
        )?;
        Ok(AsyncIo { batch })
    }

    /// Starts `op` on every destination of `dests` with `buf`, and tells
    /// `client` when all are over. Gives the buffer back with `EBUSY` while
    /// a batch runs or waits to be taken, and with `EINVAL` for more than
    /// [`MAX_DESTS`] destinations or a byte range one bio cannot carry;
    /// then nothing was submitted. Process context (bio allocation may
    /// wait for the mempool), outside any bio submission of the caller's
    /// own device (see `Request::defer`).
    pub(crate) fn submit(
        &self,
        client: &Arc<C>,
        op: AioOp,
        dests: &[AioDest<'_>],
        mut buf: IoBuffer,
    ) -> core::result::Result<(), (Error, IoBuffer)> {
        if dests.len() > MAX_DESTS {
            return Err((EINVAL, buf));
        }
        let base = buf.bytes.as_mut_ptr();
        let len = buf.len();
        let mut ranges = [(core::ptr::null_mut(), 0); MAX_DESTS];
        for (i, d) in dests.iter().enumerate() {
            match buffer_range(base, len, d.bytes.clone()) {
                Ok(r) => ranges[i] = r,
                Err(e) => return Err((e, buf)),
            }
        }
        let b = &*self.batch;
        if b.state
            .compare_exchange(IDLE, FLIGHT, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err((EBUSY, buf));
        }
        // SAFETY: this thread moved `state` to FLIGHT and owns `flight`
        // until it drops its bias below (type invariant).
        unsafe {
            let f = &mut *b.flight.get();
            f.buf = Some(buf);
            f.client = Some(client.clone());
            f.read = op == AioOp::Read;
        }
        b.errors.store(0, Ordering::Relaxed);
        b.pending.store(dests.len() as u32 + 1, Ordering::Relaxed);
        let opf = match op {
            AioOp::Read => bindings::req_op_REQ_OP_READ,
            AioOp::Write(flags) => {
                let mut opf = bindings::req_op_REQ_OP_WRITE | bindings::VBLK_CONST_REQ_SYNC;
                if flags.preflush {
                    opf |= bindings::VBLK_CONST_REQ_PREFLUSH;
                }
                if flags.fua {
                    opf |= bindings::VBLK_CONST_REQ_FUA;
                }
                opf
            }
        };
        // The batch's own reference for its bios, given back by the last
        // completer.
        let own = Arc::into_raw(self.batch.clone()).cast_mut();
        for (i, d) in dests.iter().enumerate() {
            let (at, n) = ranges[i];
            b.entries[i].batch.store(own, Ordering::Relaxed);
            // SAFETY: `at..at + n` is a range `buffer_range` checked inside
            // the buffer now in `flight`, which nothing touches until the
            // batch is over (read-only for a write).
            match unsafe { d.dev.page_bio(d.sector, at, n, opf) } {
                // SAFETY: the bio is ours; its completion sees entry `i` and
                // the batch, alive through the reference `own` until the
                // last count is dropped.
                Ok(bio) => unsafe {
                    (*bio).bi_private = (&raw const b.entries[i]).cast_mut().cast();
                    (*bio).bi_end_io = Some(aio_endio::<C>);
                    bindings::submit_bio(bio);
                },
                Err(_) => {
                    b.errors.fetch_or(1 << i, Ordering::Relaxed);
                    // SAFETY: counted in `pending`, the batch is alive.
                    unsafe { put_count(own) };
                }
            }
        }
        // SAFETY: the bias, counted in `pending`; `own` is the batch's
        // reference from above.
        unsafe { put_count(own) };
        Ok(())
    }

    /// The buffer and the failed destinations of the batch that ended,
    /// once; `None` while none ended (no batch, or bios still out).
    /// Process context; once it returned the batch, the batch holds no
    /// reference to the client any more.
    pub(crate) fn take(&self) -> Option<(IoBuffer, DestErrors)> {
        let b = &*self.batch;
        b.state
            .compare_exchange(DONE, TAKING, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // The completer is between its `DONE` and dropping the client: a
        // kick and a reference count, nothing that sleeps.
        while b.notifying.load(Ordering::Acquire) {
            // SAFETY: gives the CPU to the completer if it was preempted
            // (process context, which callers of `take` are).
            unsafe { bindings::yield_() };
        }
        // SAFETY: this thread moved `state` from DONE to TAKING and owns
        // `flight` until it sets IDLE (type invariant).
        let (buf, read) = unsafe {
            let f = &mut *b.flight.get();
            (f.buf.take(), f.read)
        };
        let errors = DestErrors(b.errors.load(Ordering::Relaxed));
        b.state.store(IDLE, Ordering::Release);
        let buf = buf?;
        if read {
            // SAFETY: the buffer's pages were read into by the bios, all
            // over; the vmap alias is invalidated for caches that alias (a
            // no-op on x86).
            unsafe {
                bindings::vblk_shim_invalidate_kernel_vmap_range(
                    buf.bytes.as_ptr().cast_mut().cast(),
                    buf.len() as i32,
                )
            };
        }
        Some((buf, errors))
    }
}

/// Drops one count of the batch at `own`; the last one ends the batch:
/// `DONE`, the client told, the batch's reference given back.
///
/// # Safety
///
/// `own` is the reference `submit` made with `Arc::into_raw`, and the
/// caller holds one count of `pending`.
unsafe fn put_count<C: AioDone>(own: *mut Batch<C>) {
    // SAFETY: the caller's count keeps the reference alive.
    let b = unsafe { &*own };
    if b.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    // SAFETY: the last count: the reference `submit` made is ours now.
    let batch = unsafe { Arc::from_raw(own.cast_const()) };
    // SAFETY: the completer that brought `pending` to zero owns `flight`
    // until it sets DONE (type invariant).
    let client = unsafe { (*batch.flight.get()).client.take() };
    batch.notifying.store(true, Ordering::Relaxed);
    batch.state.store(DONE, Ordering::Release);
    if let Some(client) = client {
        C::aio_done(&client);
    }
    // `client` was dropped above: `take` may now return, and the owner
    // drop the client.
    batch.notifying.store(false, Ordering::Release);
}

/// A bio of a batch completed (any context).
///
/// # Safety
///
/// Called by the block layer for a bio built by [`AsyncIo::submit`], whose
/// `bi_private` is an entry of a batch holding a count for this bio.
unsafe extern "C" fn aio_endio<C: AioDone>(bio: *mut bindings::bio) {
    // SAFETY: by the contract the entry and its batch are alive: the
    // batch's pending count includes this bio, and its reference `own`
    // is given back only by the last count.
    unsafe {
        let entry = &*(*bio).bi_private.cast::<Entry<C>>();
        let own = entry.batch.load(Ordering::Relaxed);
        if (*bio).bi_status != 0 {
            (*own).errors.fetch_or(1 << entry.index, Ordering::Relaxed);
        }
        bindings::bio_put(bio);
        put_count(own);
    }
}
