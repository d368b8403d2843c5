// SPDX-License-Identifier: GPL-2.0
//! Lower bios: what a pending request sends to the devices below it.
//!
//! Every lower bio comes from its disk's bio_set with a [`LowerBio`] in
//! front (the bio_set's front pad), which records the request, the
//! handler's tag and, for bounce writes, the pool its pages go back to.
//! Each lower bio holds one count on its request, taken before submission
//! (the bio may complete inside the submit call) and dropped by
//! [`lower_endio`] after the handler judged the status.

use super::bdev::BlockDevice;
use super::bindings;
use super::bounce::BouncePool;
use super::disk::{self, DiskInner, QueueHandler};
use super::rqdata::{with_mapped, Cursor};
use super::PAGE_SIZE;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

/// What sits in front of every lower bio (the bio_set's front pad).
///
/// # Invariants
///
/// Once submitted, `rq` is the pending request the bio holds a count on,
/// and `pages` is null or the mempool of every page in the bio.
#[repr(C)]
pub(super) struct LowerBio {
    rq: *mut bindings::request,
    tag: u64,
    /// Bounce writes: the mempool the bio's pages go back to; else null.
    pages: *mut bindings::mempool_t,
    pub(super) bio: bindings::bio,
}

/// Submits the lower bios of one pending request.
///
/// # Invariants
///
/// `rq` is a pending request of `disk`, whose handler is `T`, and stays
/// pending while this value lives (its user holds a count).
pub(super) struct Submitter<'a, T: QueueHandler> {
    rq: NonNull<bindings::request>,
    disk: &'a DiskInner<T>,
}

impl<'a, T: QueueHandler> Submitter<'a, T> {
    /// # Safety
    ///
    /// `rq` must be a pending request of `disk` (handler `T`) on which the
    /// caller holds a count for as long as the submitter lives.
    pub(super) unsafe fn new(rq: NonNull<bindings::request>, disk: &'a DiskInner<T>) -> Self {
        // INVARIANT: by the contract.
        Submitter { rq, disk }
    }

    /// A bio from the disk's bio_set for `dev`, `vecs` vectors.
    fn alloc(&self, dev: &BlockDevice, vecs: u16, opf: u32) -> NonNull<bindings::bio> {
        // SAFETY: the bio_set is initialised (disk invariant) and `dev` is
        // open; GFP_NOIO from a mempool waits and never fails.
        let bio = unsafe {
            bindings::bio_alloc_bioset(
                dev.bdev(),
                vecs,
                opf,
                bindings::VBLK_CONST_GFP_NOIO,
                self.disk.bs.get(),
            )
        };
        // SAFETY: a mempool allocation that may wait does not return null.
        unsafe { NonNull::new_unchecked(bio) }
    }

    /// Fills the bio's front pad and submits it, counted on the request.
    ///
    /// # Safety
    ///
    /// `bio` must come from the disk's bio_set, not yet submitted, owned by
    /// the caller; `pages` null or the mempool of every page it carries,
    /// alive until the bio completes.
    unsafe fn submit(
        &self,
        bio: NonNull<bindings::bio>,
        tag: u64,
        pages: *mut bindings::mempool_t,
    ) {
        let b = bio.as_ptr();
        // SAFETY: the bio is from our bio_set, so a `LowerBio` surrounds it
        // (front pad of `offset_of!(LowerBio, bio)` bytes), ours to fill.
        unsafe {
            let l = b
                .byte_sub(core::mem::offset_of!(LowerBio, bio))
                .cast::<LowerBio>();
            (*l).rq = self.rq.as_ptr();
            (*l).tag = tag;
            (*l).pages = pages;
            (*b).bi_end_io = Some(lower_endio::<T>);
            // The request is accepted: below it, vblk may wait (BLOCKING
            // queue), and the bio is not polled.
            (*b).bi_opf &= !(bindings::VBLK_CONST_REQ_NOWAIT | bindings::VBLK_CONST_REQ_POLLED);
        }
        // SAFETY: the request is pending (invariant), its state initialised.
        let st = unsafe { &*disk::state_ptr::<T>(self.rq) };
        // Counted before submission: the bio may complete inside submit.
        st.pending.fetch_add(1, Ordering::AcqRel);
        // SAFETY: a complete bio handed to the block layer; from now on it
        // belongs to it until `lower_endio`.
        unsafe { bindings::submit_bio_noacct(b) };
    }

    /// How many clones [`Self::clones`] makes for sectors
    /// `[skip, skip + len)`: one per bio of the request they touch.
    pub(super) fn clone_count(&self, skip: u64, len: u64) -> u32 {
        let end = skip.saturating_add(len);
        let (mut pos, mut count) = (0u64, 0u32);
        // SAFETY: the request is pending (invariant): its bio list is
        // stable while we hold a count.
        let mut bio = unsafe { (*self.rq.as_ptr()).bio };
        while !bio.is_null() && pos < end {
            // SAFETY: `bio` is a live bio of the request.
            let n = u64::from(unsafe { (*bio).bi_iter.bi_size } >> 9);
            if pos.max(skip) < (pos + n).min(end) {
                count += 1;
            }
            pos += n;
            // SAFETY: as above; the next bio of the request.
            bio = unsafe { (*bio).bi_next };
        }
        count
    }

    /// Clones of sectors `[skip, skip + len)` of the request to `dev` at
    /// `sector`.
    pub(super) fn clones(&self, skip: u64, len: u64, dev: &BlockDevice, sector: u64, tag: u64) {
        let end = skip.saturating_add(len);
        let mut pos = 0u64;
        // SAFETY: the request is pending (invariant): its bio list is
        // stable while we hold a count.
        let mut bio = unsafe { (*self.rq.as_ptr()).bio };
        while !bio.is_null() && pos < end {
            // SAFETY: `bio` is a live bio of the request.
            let n = u64::from(unsafe { (*bio).bi_iter.bi_size } >> 9);
            let (from, to) = (pos.max(skip), (pos + n).min(end));
            if from < to {
                // SAFETY: `bio` is live and stays so until the request
                // ends, after the clone completes (it holds a count); the
                // bio_set is initialised. GFP_NOIO from a mempool waits and
                // never fails.
                let clone = unsafe {
                    bindings::bio_alloc_clone(
                        dev.bdev(),
                        bio,
                        bindings::VBLK_CONST_GFP_NOIO,
                        self.disk.bs.get(),
                    )
                };
                if let Some(clone) = NonNull::new(clone) {
                    // SAFETY: the clone is ours; the trimmed window lies in
                    // the source bio's.
                    unsafe {
                        bindings::bio_trim(clone.as_ptr(), from - pos, to - from);
                        (*clone.as_ptr()).bi_iter.bi_sector = sector + (from - skip);
                    }
                    // SAFETY: from our bio_set, unsubmitted, no pool pages.
                    unsafe { self.submit(clone, tag, core::ptr::null_mut()) };
                }
            }
            pos += n;
            // SAFETY: as above; the next bio of the request.
            bio = unsafe { (*bio).bi_next };
        }
    }

    /// The request's own operation (discard, write zeroes) for `len`
    /// sectors of `dev` at `sector`.
    pub(super) fn range(&self, dev: &BlockDevice, sector: u64, len: u32, tag: u64) {
        // SAFETY: the request is pending (invariant); its flags are fixed.
        let flags = unsafe { (*self.rq.as_ptr()).cmd_flags };
        let opf = flags & (bindings::VBLK_CONST_REQ_OP_MASK | bindings::VBLK_CONST_REQ_NOUNMAP);
        let bio = self.alloc(dev, 0, opf);
        // SAFETY: the bio is ours, unsubmitted; a dataless bio's window is
        // only its position and size.
        unsafe {
            (*bio.as_ptr()).bi_iter.bi_sector = sector;
            (*bio.as_ptr()).bi_iter.bi_size = len << 9;
            self.submit(bio, tag, core::ptr::null_mut());
        }
    }

    /// An empty cache flush to `dev`.
    pub(super) fn flush(&self, dev: &BlockDevice, tag: u64) {
        let opf = bindings::req_op_REQ_OP_WRITE
            | bindings::VBLK_CONST_REQ_PREFLUSH
            | bindings::VBLK_CONST_REQ_SYNC;
        let bio = self.alloc(dev, 0, opf);
        // SAFETY: from our bio_set, unsubmitted, no pages.
        unsafe { self.submit(bio, tag, core::ptr::null_mut()) };
    }

    /// Writes sectors `part` of the request from bounce pages of `pool`
    /// (see `Pending::bounce_write`).
    pub(super) fn bounce_write(
        &self,
        part: core::ops::Range<u64>,
        pool: &BouncePool,
        dev: &BlockDevice,
        sector: u64,
        tag: u64,
        fill: &mut dyn FnMut(u64, &mut [u8]),
    ) {
        // SAFETY: the request is pending (invariant); flags and size fixed.
        let (flags, sectors) = unsafe {
            (
                (*self.rq.as_ptr()).cmd_flags,
                u64::from((*self.rq.as_ptr()).__data_len >> 9),
            )
        };
        let keep = bindings::VBLK_CONST_REQ_FUA
            | bindings::VBLK_CONST_REQ_SYNC
            | bindings::VBLK_CONST_REQ_META
            | bindings::VBLK_CONST_REQ_PRIO;
        let opf = bindings::req_op_REQ_OP_WRITE | (flags & keep);
        let skip = part.start.min(sectors);
        let bytes = part.end.min(sectors).saturating_sub(skip) * 512;
        // SAFETY: the request is pending: it does not end while the cursor
        // is used (this call).
        let mut cursor = unsafe { Cursor::seek(self.rq, skip * 512) };
        let mut pages = [core::ptr::null_mut::<bindings::page>(); BouncePool::MAX_PAGES as usize];
        let mut done = 0u64;
        while done < bytes {
            let nr = (bytes - done)
                .div_ceil(PAGE_SIZE as u64)
                .min(u64::from(BouncePool::MAX_PAGES)) as usize;
            let bio = self.alloc(dev, nr as u16, opf);
            // SAFETY: the bio is ours, unsubmitted.
            unsafe { (*bio.as_ptr()).bi_iter.bi_sector = sector + done / 512 };
            pool.take(&mut pages[..nr]);
            for &page in &pages[..nr] {
                let n = (bytes - done).min(PAGE_SIZE as u64) as u32;
                // SAFETY: a page from the pool, ours until the bio
                // completes; mapped for the copy and the fill only.
                let page_nn = unsafe { NonNull::new_unchecked(page) };
                let seg = super::rqdata::Segment {
                    page: page_nn,
                    offset: 0,
                    len: n,
                };
                // SAFETY: the page is ours alone (just taken from the pool);
                // the request is pending, so its data may be read (copied
                // out at the cursor) until it ends.
                unsafe {
                    with_mapped(&seg, |buf| {
                        cursor.copy_out(buf);
                        fill(done, buf);
                    })
                };
                // SAFETY: the bio has room for `nr` vectors; the page and
                // length are valid (`n <= PAGE_SIZE`).
                unsafe { bindings::__bio_add_page(bio.as_ptr(), page, n, 0) };
                done += u64::from(n);
            }
            // SAFETY: from our bio_set, unsubmitted; its pages are from the
            // pool, which outlives the bio (the table holds it and the
            // request holds the table).
            unsafe { self.submit(bio, tag, pool.mempool()) };
        }
    }
}

/// `bio::bi_end_io` of every lower bio: gives bounce pages back, releases
/// the bio and reports to the request.
///
/// # Safety
///
/// Called by the block layer once, for a bio submitted by
/// [`Submitter::submit`] for a disk with handler `T`.
unsafe extern "C" fn lower_endio<T: QueueHandler>(bio: *mut bindings::bio) {
    // SAFETY: the bio came from our bio_set, so a `LowerBio` surrounds it;
    // `submit` filled it.
    let (rq, tag, pages, status) = unsafe {
        let l = bio
            .byte_sub(core::mem::offset_of!(LowerBio, bio))
            .cast::<LowerBio>();
        ((*l).rq, (*l).tag, (*l).pages, (*bio).bi_status)
    };
    if !pages.is_null() {
        // SAFETY: a bounce bio: each of its `bi_vcnt` vectors is one pool
        // page added by `bounce_write`; the bio is complete and ours.
        unsafe {
            let vecs = core::slice::from_raw_parts((*bio).bi_io_vec, usize::from((*bio).bi_vcnt));
            for v in vecs {
                bindings::mempool_free(v.bv_page.cast(), pages);
            }
        }
    }
    // SAFETY: the completed bio is ours to release, not used again.
    unsafe { bindings::bio_put(bio) };
    if let Some(rq) = NonNull::new(rq) {
        // SAFETY: the bio held a count on its pending request (`submit`).
        unsafe { disk::lower_done::<T>(rq, tag, status) };
    }
}
