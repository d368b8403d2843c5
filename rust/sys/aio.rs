// SPDX-License-Identifier: GPL-2.0
//! A target's own I/O to several lower devices at once (as dm-io): one
//! buffer written to every destination in parallel, one wait for all of
//! them, and which destinations failed.
//!
//! The bios come from the kernel's general bio_set (a mempool: GFP_NOIO
//! waits for a bio to come back and never fails) and each is submitted
//! before the next is allocated, so a writer under memory pressure makes
//! progress. Callers are workers (process context, outside any bio
//! submission: see `Request::defer`).

use super::bdev::{buffer_range, BlockDevice, IoBuffer, WriteFlags};
use super::bindings;
use core::ops::Range;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::error::code::EINVAL;
use kernel::error::Result;
use kernel::types::Opaque;

/// Most destinations of one [`write_many`] (one bit each in
/// [`DestErrors`]).
pub(crate) const MAX_DESTS: usize = 32;

/// Which destinations of a [`write_many`] failed: bit `i` for `dests[i]`.
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

/// What the bios of one [`write_many`] share (on its stack).
#[repr(C)]
struct Batch {
    done: Opaque<bindings::completion>,
    /// Bios not completed yet.
    pending: AtomicU32,
    errors: AtomicU32,
}

/// What one bio's `bi_private` points to: its batch and its destination.
struct Slot {
    batch: *const Batch,
    index: u32,
}

/// Writes bytes `range` of `buf` to every `(device, sector)` of `dests` at
/// once and waits until all are over; returns which failed (`EINVAL` for
/// a range one bio cannot carry, see [`BlockDevice::read_at`], or more
/// than [`MAX_DESTS`] destinations).
pub(crate) fn write_many(
    dests: &[(&BlockDevice, u64)],
    buf: &IoBuffer,
    range: Range<usize>,
    flags: WriteFlags,
) -> Result<DestErrors> {
    if dests.len() > MAX_DESTS {
        return Err(EINVAL);
    }
    // The bios only read the buffer (the pointer is mutable for C only).
    let (base, len) = buffer_range(buf.bytes.as_ptr().cast_mut(), buf.len(), range)?;
    if dests.is_empty() {
        return Ok(DestErrors::default());
    }
    let mut opf = bindings::req_op_REQ_OP_WRITE | bindings::VBLK_CONST_REQ_SYNC;
    if flags.preflush {
        opf |= bindings::VBLK_CONST_REQ_PREFLUSH;
    }
    if flags.fua {
        opf |= bindings::VBLK_CONST_REQ_FUA;
    }
    let batch = Batch {
        done: Opaque::uninit(),
        pending: AtomicU32::new(dests.len() as u32),
        errors: AtomicU32::new(0),
    };
    // SAFETY: initialises the completion in place before any use; the
    // batch does not move until it is dropped at the end of this call.
    unsafe { bindings::vblk_shim_init_completion(batch.done.get()) };
    let slots: [Slot; MAX_DESTS] = core::array::from_fn(|i| Slot {
        batch: &batch,
        index: i as u32,
    });
    for (i, &(dev, sector)) in dests.iter().enumerate() {
        // SAFETY: `base..base + len` is a checked range of `buf`, borrowed
        // for this call, which waits for every bio below.
        match unsafe { dev.page_bio(sector, base, len, opf) } {
            // SAFETY: the bio is ours; its completion sees `slots[i]` and
            // `batch`, which live until the wait below has seen every bio
            // complete.
            Ok(bio) => unsafe {
                (*bio).bi_private = (&raw const slots[i]).cast_mut().cast();
                (*bio).bi_end_io = Some(write_many_endio);
                bindings::submit_bio(bio);
            },
            Err(_) => {
                batch.errors.fetch_or(1 << i, Ordering::AcqRel);
                if batch.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                    // SAFETY: the completion is initialised; this was the
                    // last count.
                    unsafe { bindings::complete(batch.done.get()) };
                }
            }
        }
    }
    // SAFETY: every bio (or its failed allocation) completes the batch's
    // completion once the last one is over; `complete` and this wait
    // share its lock, so the batch outlives the completer's last access.
    unsafe { bindings::wait_for_completion(batch.done.get()) };
    Ok(DestErrors(batch.errors.load(Ordering::Acquire)))
}

/// A bio of [`write_many`] completed (any context).
///
/// # Safety
///
/// Called by the block layer for a bio built by `write_many`, whose
/// `bi_private` is the bio's `Slot` (alive until the batch completed).
unsafe extern "C" fn write_many_endio(bio: *mut bindings::bio) {
    // SAFETY: by the contract the slot and its batch are alive: the
    // batch's pending count includes this bio, and `write_many` waits
    // until it reaches zero.
    unsafe {
        let slot = &*(*bio).bi_private.cast::<Slot>();
        let batch = &*slot.batch;
        if (*bio).bi_status != 0 {
            batch.errors.fetch_or(1 << slot.index, Ordering::AcqRel);
        }
        bindings::bio_put(bio);
        if batch.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            bindings::complete(batch.done.get());
        }
    }
}
