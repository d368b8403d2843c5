// SPDX-License-Identifier: GPL-2.0
//! Queue limits of a table, stacked from its lower devices.

use super::bdev::BlockDevice;
use super::bindings;
use core::ptr::NonNull;
use kernel::error::code::ENOMEM;
use kernel::error::Result;

/// A `struct queue_limits` being computed for a table (block sizes, I/O
/// sizes, discard and write-zeroes support, cache features).
pub(crate) struct QueueLimits {
    raw: NonNull<bindings::queue_limits>,
}

// SAFETY: the limits are plain data owned by this value; `&QueueLimits`
// only reads them.
unsafe impl Send for QueueLimits {}
// SAFETY: as above.
unsafe impl Sync for QueueLimits {}

impl QueueLimits {
    /// Limits that impose nothing yet (the kernel's stacking defaults).
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: no preconditions; NULL means out of memory.
        let raw = unsafe { bindings::vblk_shim_limits_new() };
        NonNull::new(raw)
            .map(|raw| QueueLimits { raw })
            .ok_or(ENOMEM)
    }

    pub(super) fn raw(&self) -> *mut bindings::queue_limits {
        self.raw.as_ptr()
    }

    /// Adds the limits of `dev`, used from sector `offset` on. `false` if
    /// that offset is misaligned for the device (the limits still stack).
    pub(crate) fn stack(&mut self, dev: &BlockDevice, offset: u64) -> bool {
        // SAFETY: both are live; `&mut self` gives exclusive access.
        unsafe { bindings::vblk_shim_limits_stack(self.raw(), dev.raw(), offset) }
    }

    /// Turns discard support off, or on as the lower devices allow it
    /// (unlimited when no lower device limits it).
    pub(crate) fn set_discard(&mut self, supported: bool) {
        // SAFETY: as above.
        unsafe { bindings::vblk_shim_limits_discard(self.raw(), supported) }
    }

    /// Turns WRITE_ZEROES off (it stays as stacked otherwise).
    pub(crate) fn set_write_zeroes(&mut self, supported: bool) {
        // SAFETY: as above.
        unsafe { bindings::vblk_shim_limits_write_zeroes(self.raw(), supported) }
    }

    /// A target's I/O hints: requests should not cross `chunk_sectors`
    /// boundaries (combined with what is there as their gcd), `io_min`
    /// and `io_opt` in bytes (the largest, and the lcm, of what lines ask).
    pub(crate) fn set_io_hints(&mut self, chunk_sectors: u32, io_min: u32, io_opt: u32) {
        // SAFETY: the limits are live and ours to change (`&mut self`).
        unsafe { bindings::vblk_shim_limits_io_hints(self.raw(), chunk_sectors, io_min, io_opt) }
    }

    /// Raises the logical block size to at least `bytes` (a power of two,
    /// 512..=4096; other values change nothing), with the physical block
    /// size, `io_min` and the DMA alignment, so every data segment of a
    /// request holds whole blocks (crypt's sectors).
    pub(crate) fn set_min_block_size(&mut self, bytes: u32) {
        // SAFETY: the limits are live and ours to change (`&mut self`).
        unsafe { bindings::vblk_shim_limits_block_size(self.raw(), bytes) }
    }

    /// Logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        // SAFETY: the limits are live; the shim only reads them.
        unsafe { bindings::vblk_shim_limits_logical_block_size(self.raw()) }
    }
}

impl Drop for QueueLimits {
    fn drop(&mut self) {
        // SAFETY: allocated by the shim, freed exactly once here.
        unsafe { bindings::vblk_shim_limits_free(self.raw()) }
    }
}
