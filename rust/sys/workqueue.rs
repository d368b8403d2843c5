// SPDX-License-Identifier: GPL-2.0
//! Workqueues a target owns, the work items it kicks on them, and
//! allocation scopes that must not start I/O.
//!
//! A target's background and deferred work (a mirror's log writes,
//! resync, cleaning; the copy service) runs on a queue of the target's own
//! rather than a system queue or the disk's: stopping the target can then
//! wait until every job has returned and let go of the target's state, so
//! the lower devices are closed when REMOVE returns and no job runs module
//! code after `rmmod`. The queue is `WQ_MEM_RECLAIM` (a rescuer thread):
//! held writes wait for its jobs, so they must run under memory pressure
//! too. Work that must never fail to start is a [`Job`]: a work item
//! embedded in the target's state, queued without allocating.

use super::bindings;
use core::ops::Deref;
use core::ptr::NonNull;
use kernel::error::code::ENOMEM;
use kernel::error::Result;
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::sync::Arc;
use kernel::workqueue::{impl_has_work, new_work, Work, WorkItem};

/// What a [`Job`] runs, on the queue it was kicked on (process context,
/// may sleep; allocations that writeback may wait for use GFP_NOIO or a
/// reserve).
pub(crate) trait Deferred: Send + Sync + Sized + 'static {
    /// Does the pending work. A kick while it runs queues it once more.
    fn run(job: &Arc<Job<Self>>);
}

/// State `T` with one embedded work item: [`OwnedQueue::kick`] queues it
/// unless it is queued already, allocating nothing, so a kick cannot fail
/// (from a completion, under memory pressure). Derefs to `T`.
#[pin_data]
pub(crate) struct Job<T> {
    #[pin]
    work: Work<Job<T>>,
    #[pin]
    inner: T,
}

impl_has_work! {
    impl{T} HasWork<Self> for Job<T> { self.work }
}

impl<T: Deferred> WorkItem for Job<T> {
    type Pointer = Arc<Job<T>>;

    fn run(this: Arc<Job<T>>) {
        T::run(&this);
    }
}

impl<T: Deferred> Job<T> {
    /// A job around the state `inner` initialises.
    pub(crate) fn new(inner: impl PinInit<T>) -> impl PinInit<Self> {
        pin_init!(Job {
            work <- new_work!("vblk::Job"),
            inner <- inner,
        })
    }
}

impl<T> Deref for Job<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

/// An unbound `WQ_MEM_RECLAIM` workqueue, destroyed (after draining) on
/// drop.
///
/// Dropping it from one of its own work items would wait for that item
/// forever: its owner stops and [`Self::flush`]es the jobs first.
///
/// # Invariants
///
/// `raw` is a workqueue from `alloc_workqueue`, destroyed only in `drop`.
pub(crate) struct OwnedQueue {
    raw: NonNull<bindings::workqueue_struct>,
}

// SAFETY: a workqueue may be used and destroyed from any thread.
unsafe impl Send for OwnedQueue {}
// SAFETY: queueing and flushing are thread-safe.
unsafe impl Sync for OwnedQueue {}

impl OwnedQueue {
    /// A new queue named `name` (as ps shows its rescuer).
    pub(crate) fn new(name: &CStr) -> Result<Self> {
        // SAFETY: `name` is NUL-terminated and only read during the call
        // (the workqueue copies it).
        let raw = unsafe {
            bindings::alloc_workqueue(
                c"%s".as_ptr(),
                bindings::VBLK_CONST_WQ_RECLAIM_UNBOUND,
                0,
                name.as_char_ptr(),
            )
        };
        // INVARIANT: a new workqueue, owned by the returned value.
        NonNull::new(raw)
            .map(|raw| OwnedQueue { raw })
            .ok_or(ENOMEM)
    }

    /// Queues `job` to run on this queue, unless it is queued already
    /// (then it runs once for both kicks). Any context; never fails.
    pub(crate) fn kick<T: Deferred>(&self, job: &Arc<Job<T>>) {
        // SAFETY: `raw` is a live workqueue (type invariant) until `self`
        // is dropped, which outlives the borrow returned here; the kernel
        // crate's `Queue` is a transparent wrapper of `workqueue_struct`.
        let queue = unsafe { kernel::workqueue::Queue::from_raw(self.raw.as_ptr().cast()) };
        // Already queued: the clone comes back and is dropped (the caller
        // still holds its own, so this is never the last).
        let _ = queue.enqueue(job.clone());
    }

    /// Waits until every job queued so far has returned (process context).
    pub(crate) fn flush(&self) {
        // SAFETY: `raw` is a live workqueue (type invariant).
        unsafe { bindings::__flush_workqueue(self.raw.as_ptr()) }
    }
}

impl Drop for OwnedQueue {
    fn drop(&mut self) {
        // SAFETY: `raw` is live and destroyed exactly once, here; pending
        // work is drained first by `destroy_workqueue` itself.
        unsafe { bindings::destroy_workqueue(self.raw.as_ptr()) }
    }
}

/// While alive, every allocation of the current task behaves as `GFP_NOIO`
/// (`memalloc_noio_save`): reclaim never waits for I/O, which could be I/O
/// to a suspended vblk device that only this task would resume.
pub(crate) struct NoIoScope {
    flags: u32,
    /// Bound to the task that opened it (a `*const` is `!Send`).
    _task: core::marker::PhantomData<*const ()>,
}

impl NoIoScope {
    pub(crate) fn enter() -> Self {
        // SAFETY: only changes the current task's allocation flags.
        let flags = unsafe { bindings::vblk_shim_noio_save() };
        NoIoScope {
            flags,
            _task: core::marker::PhantomData,
        }
    }
}

impl Drop for NoIoScope {
    fn drop(&mut self) {
        // SAFETY: restores what `enter` saved, on the same task (the scope
        // is not `Send`), in reverse order of nesting (drop order).
        unsafe { bindings::vblk_shim_noio_restore(self.flags) }
    }
}
