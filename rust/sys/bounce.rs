// SPDX-License-Identifier: GPL-2.0
//! Bounce pages: a per-target page reserve for writes that must not touch
//! the caller's pages (a target that changes data on its way down, such as
//! encryption or fault injection, writes a copy).
//!
//! The reserve guarantees forward progress under memory pressure: a bio
//! takes at most [`BouncePool::MAX_PAGES`] pages, and waiting for the
//! reserve is serialised in the shim so two writers never each hold part of
//! it (see `vblk_pool_get` in shim.c).

use super::bindings;
use core::ptr::NonNull;
use kernel::error::code::ENOMEM;
use kernel::error::Result;

/// A page reserve for [`super::disk::Pending::bounce_write`].
pub(crate) struct BouncePool {
    raw: NonNull<bindings::vblk_pool>,
}

// SAFETY: the pool is a mempool plus a mutex, both safe to use from any
// thread; the pointer is owned by this value.
unsafe impl Send for BouncePool {}
// SAFETY: as above; shared use only allocates and frees pages.
unsafe impl Sync for BouncePool {}

impl BouncePool {
    /// Pages per bounce bio (and the size of the reserve).
    pub(crate) const MAX_PAGES: u32 = 64;
    /// Bytes the reserve holds (charged to the table's state budget).
    pub(crate) const BYTES: u64 = Self::MAX_PAGES as u64 * 4096;

    /// A pool reserving [`Self::MAX_PAGES`] pages (256 KiB).
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: no preconditions; NULL means out of memory.
        let raw = unsafe { bindings::vblk_shim_pool_new(Self::MAX_PAGES) };
        NonNull::new(raw)
            .map(|raw| BouncePool { raw })
            .ok_or(ENOMEM)
    }

    pub(super) fn raw(&self) -> *mut bindings::vblk_pool {
        self.raw.as_ptr()
    }
}

impl Drop for BouncePool {
    fn drop(&mut self) {
        // SAFETY: every page is back: bounce bios return theirs before they
        // report completion, and the pool's owner (a table) outlives the
        // requests that hold it. Freed exactly once.
        unsafe { bindings::vblk_shim_pool_free(self.raw.as_ptr()) }
    }
}
