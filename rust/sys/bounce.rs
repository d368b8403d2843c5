// SPDX-License-Identifier: GPL-2.0
//! Bounce pages: a per-target page reserve for writes that must not touch
//! the caller's pages (a target that changes data on its way down, such as
//! encryption or fault injection, writes a copy).
//!
//! The reserve guarantees forward progress under memory pressure: a bio
//! takes at most [`BouncePool::MAX_PAGES`] pages, and waiting for the
//! reserve is serialised so two writers never each hold part of it
//! (dm-crypt's rule): once I/O drains, the reserve holds a whole bio's
//! worth for the one waiter.

use super::bindings;
use core::pin::Pin;
use kernel::alloc::KBox;
use kernel::error::code::ENOMEM;
use kernel::error::Result;
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::Mutex;

/// The pinned part: the mutex must not move.
///
/// # Invariants
///
/// `pages` is a page mempool of [`BouncePool::MAX_PAGES`] order-0 pages,
/// destroyed only in `drop`.
#[pin_data(PinnedDrop)]
struct Inner {
    pages: *mut bindings::mempool_t,
    /// Held while waiting on the reserve.
    #[pin]
    wait_lock: Mutex<()>,
}

#[pinned_drop]
impl PinnedDrop for Inner {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: every page is back: bounce bios return theirs before they
        // report completion, and the pool's owner (a table) outlives the
        // requests that use it. Destroyed exactly once (invariant).
        unsafe { bindings::mempool_destroy(self.pages) }
    }
}

/// A page reserve for [`super::disk::Pending::bounce_write`].
pub(crate) struct BouncePool {
    inner: Pin<KBox<Inner>>,
}

// SAFETY: a mempool may be used from any thread; the mutex is a kernel
// mutex; the pointer is owned by this value.
unsafe impl Send for BouncePool {}
// SAFETY: shared use only allocates and frees pages, which mempools allow
// concurrently.
unsafe impl Sync for BouncePool {}

impl BouncePool {
    /// Pages per bounce bio (and the size of the reserve).
    pub(crate) const MAX_PAGES: u32 = 64;
    /// Bytes the reserve holds (charged to the table's state budget).
    pub(crate) const BYTES: u64 = Self::MAX_PAGES as u64 * super::PAGE_SIZE as u64;

    /// A pool reserving [`Self::MAX_PAGES`] pages.
    pub(crate) fn new() -> Result<Self> {
        const { assert!(Self::MAX_PAGES <= bindings::VBLK_CONST_BIO_MAX_VECS) };
        // SAFETY: the page allocator pair with order 0 as pool data (what
        // `mempool_create_page_pool` passes); process context.
        let pages = unsafe {
            bindings::mempool_create_node_noprof(
                Self::MAX_PAGES as i32,
                Some(bindings::mempool_alloc_pages),
                Some(bindings::mempool_free_pages),
                core::ptr::null_mut(),
                bindings::VBLK_CONST_GFP_KERNEL,
                bindings::VBLK_CONST_NUMA_NO_NODE,
            )
        };
        if pages.is_null() {
            return Err(ENOMEM);
        }
        // INVARIANT: `pages` was just created with MAX_PAGES pages.
        let init = pin_init!(Inner {
            pages,
            wait_lock <- new_mutex!((), "vblk::BouncePool::wait_lock"),
        });
        match KBox::pin_init(init, kernel::alloc::flags::GFP_KERNEL) {
            Ok(inner) => Ok(BouncePool { inner }),
            Err(e) => {
                // SAFETY: created above, used by nobody, destroyed once.
                unsafe { bindings::mempool_destroy(pages) };
                Err(e)
            }
        }
    }

    pub(super) fn mempool(&self) -> *mut bindings::mempool_t {
        self.inner.pages
    }

    /// Fills `pages` (at most [`Self::MAX_PAGES`]) from the pool: first
    /// without waiting; if memory is short, gives back what it got and
    /// waits on the reserve under the pool's lock. Never fails; may sleep.
    pub(super) fn take(&self, pages: &mut [*mut bindings::page]) {
        let pool = self.mempool();
        let mut got = 0;
        while got < pages.len() {
            // SAFETY: the pool is live (invariant); a non-waiting attempt.
            let p =
                unsafe { bindings::mempool_alloc_noprof(pool, bindings::VBLK_CONST_GFP_NOWAIT) };
            if p.is_null() {
                break;
            }
            pages[got] = p.cast();
            got += 1;
        }
        if got == pages.len() {
            return;
        }
        for &p in &pages[..got] {
            // SAFETY: a page taken from this pool just now, given back once.
            unsafe { bindings::mempool_free(p.cast(), pool) };
        }
        let _serial = self.inner.wait_lock.lock();
        for slot in pages.iter_mut() {
            // SAFETY: the pool is live; GFP_NOIO from a mempool waits for
            // an element and never returns null.
            *slot = unsafe { bindings::mempool_alloc_noprof(pool, bindings::VBLK_CONST_GFP_NOIO) }
                .cast();
        }
    }
}
