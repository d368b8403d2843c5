// SPDX-License-Identifier: GPL-2.0
//! Queue limits of a table, stacked from its lower devices.

use super::bdev::BlockDevice;
use super::bindings;
use kernel::alloc::KBox;
use kernel::error::Result;

/// A `struct queue_limits` being computed for a table (block sizes, I/O
/// sizes, discard and write-zeroes support, cache features). Plain data,
/// owned by this value (boxed: the struct is large for the stack).
pub(crate) struct QueueLimits {
    raw: KBox<bindings::queue_limits>,
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl QueueLimits {
    /// Limits that impose nothing yet (the kernel's stacking defaults).
    pub(crate) fn new() -> Result<Self> {
        // An all-zero `queue_limits` is valid plain data (bindgen's
        // `Default`), which the call below sets to the defaults.
        let mut raw = KBox::new(
            bindings::queue_limits::default(),
            kernel::alloc::flags::GFP_KERNEL,
        )?;
        // SAFETY: `raw` is a valid limits struct we own.
        unsafe { bindings::blk_set_stacking_limits(&mut *raw) };
        Ok(QueueLimits { raw })
    }

    pub(super) fn get(&self) -> &bindings::queue_limits {
        &self.raw
    }

    /// Adds the limits of `dev`, used from sector `offset` on. `false` if
    /// that offset is misaligned for the device (the limits still stack).
    pub(crate) fn stack(&mut self, dev: &BlockDevice, offset: u64) -> bool {
        let bdev = dev.bdev();
        // SAFETY: the block device and its queue are live while `dev` is
        // open; their limits are only read; ours are exclusively borrowed.
        unsafe {
            let start = (*bdev).bd_start_sect;
            let below = &raw mut (*(*bdev).bd_queue).limits;
            bindings::blk_stack_limits(&mut *self.raw, below, start + offset) == 0
        }
    }

    /// Turns discard support off, or on as the lower devices allow it
    /// (unlimited when no lower device limits it). Either way a discard
    /// request covers one contiguous range (see `disk.rs`).
    pub(crate) fn set_discard(&mut self, supported: bool) {
        let l = &mut *self.raw;
        if !supported {
            l.max_hw_discard_sectors = 0;
            l.discard_granularity = 0;
            l.discard_alignment = 0;
        } else if l.max_hw_discard_sectors == 0 {
            // Nothing below limits it (zero, error): any size, any sector.
            l.max_hw_discard_sectors = u32::MAX;
            l.discard_granularity = 512;
        }
        l.max_discard_segments = 1;
    }

    /// Turns WRITE_ZEROES off (it stays as stacked otherwise).
    pub(crate) fn set_write_zeroes(&mut self, supported: bool) {
        if !supported {
            self.raw.max_write_zeroes_sectors = 0;
        }
    }

    /// A target's I/O hints: requests should not cross `chunk_sectors`
    /// boundaries (combined with what is there as their gcd, and dropped
    /// if that is not a whole number of physical blocks), `io_min` and
    /// `io_opt` in bytes (the largest, and the lcm, of what lines ask).
    pub(crate) fn set_io_hints(&mut self, chunk_sectors: u32, io_min: u32, io_opt: u32) {
        let l = &mut *self.raw;
        if chunk_sectors != 0 {
            let c = if l.chunk_sectors != 0 {
                gcd(l.chunk_sectors, chunk_sectors)
            } else {
                chunk_sectors
            };
            let pbs = (l.physical_block_size >> 9).max(1);
            if c % pbs == 0 {
                l.chunk_sectors = c;
            }
        }
        l.io_min = l.io_min.max(io_min);
        if io_opt != 0 {
            l.io_opt = if l.io_opt != 0 {
                // The lcm, or the larger one if it overflows.
                (l.io_opt / gcd(l.io_opt, io_opt))
                    .checked_mul(io_opt)
                    .unwrap_or(l.io_opt.max(io_opt))
            } else {
                io_opt
            };
        }
    }

    /// Raises the logical block size to at least `bytes` (a power of two,
    /// 512..=PAGE_SIZE; other values change nothing), with the physical
    /// block size, `io_min` and the DMA alignment, so every data segment of
    /// a request holds whole blocks (crypt's sectors).
    pub(crate) fn set_min_block_size(&mut self, bytes: u32) {
        if !bytes.is_power_of_two() || bytes < 512 || bytes as usize > super::PAGE_SIZE {
            return;
        }
        let l = &mut *self.raw;
        l.logical_block_size = l.logical_block_size.max(bytes);
        l.physical_block_size = l.physical_block_size.max(l.logical_block_size);
        l.io_min = l.io_min.max(l.physical_block_size);
        l.dma_alignment = l.dma_alignment.max(bytes - 1);
    }

    /// Announces a volatile write cache and FUA whatever the lower devices
    /// have, so FLUSH and FUA reach the table (the block layer drops them
    /// for a device without a cache): for a target that commits its own
    /// state on them (thin's metadata, as dm's `flush_supported`).
    pub(crate) fn force_write_cache(&mut self) {
        self.raw.features |=
            bindings::VBLK_CONST_BLK_FEAT_WRITE_CACHE | bindings::VBLK_CONST_BLK_FEAT_FUA;
    }

    /// Logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        self.raw.logical_block_size
    }
}
