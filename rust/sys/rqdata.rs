// SPDX-License-Identifier: GPL-2.0
//! Walking a request's data: a cursor over the bio vectors of its bios,
//! one page-sized segment at a time (what the block layer's
//! `bio_iter_iovec`/`bio_advance_iter_single` do, in Rust).

use super::bindings;
use super::PAGE_SIZE;
use core::ptr::NonNull;

/// One segment of a request's data: part of one page.
///
/// # Invariants
///
/// `offset + len <= PAGE_SIZE`; `page` is a page of the request (or of a
/// bounce pool) the caller of `Cursor::next` may access while it owns the
/// request.
pub(super) struct Segment {
    pub(super) page: NonNull<bindings::page>,
    /// Offset in the page.
    pub(super) offset: u32,
    pub(super) len: u32,
}

/// A position in a request's data, moving forward only.
///
/// # Invariants
///
/// `bio` is null or a bio of the request the cursor was made for, whose
/// vector table (`bi_io_vec`) covers the window `iter` describes; `iter`
/// starts inside `bio`'s own iterator window and only moves forward in it.
/// The request is owned by the cursor's user and does not end while the
/// cursor is used (every constructor's caller promises so).
pub(super) struct Cursor {
    bio: *mut bindings::bio,
    iter: bindings::bvec_iter,
}

/// Whether a bio of this operation carries data pages (`bio_has_data`).
fn op_has_data(opf: u32) -> bool {
    let op = opf & bindings::VBLK_CONST_REQ_OP_MASK;
    op != bindings::req_op_REQ_OP_DISCARD
        && op != bindings::req_op_REQ_OP_SECURE_ERASE
        && op != bindings::req_op_REQ_OP_WRITE_ZEROES
}

impl Cursor {
    /// A cursor at byte `offset` of `rq`'s data (at the end if past it, or
    /// if the request carries no data).
    ///
    /// # Safety
    ///
    /// `rq` must be a started request the caller owns, which does not end
    /// while the cursor is used.
    pub(super) unsafe fn seek(rq: NonNull<bindings::request>, mut offset: u64) -> Self {
        // SAFETY: the caller owns the started request, so its bio list is
        // stable and readable.
        let first = unsafe { (*rq.as_ptr()).bio };
        // SAFETY: a non-null `first` is the request's first bio, alive
        // while the request is.
        let has_data = !first.is_null()
            && unsafe { (*first).bi_iter.bi_size != 0 && op_has_data((*first).bi_opf) };
        // INVARIANT: `bio` is null or a bio of the request; `iter` is its
        // own iterator, moved forward below within its window.
        let mut c = Cursor {
            bio: if has_data {
                first
            } else {
                core::ptr::null_mut()
            },
            iter: bindings::bvec_iter::default(),
        };
        while !c.bio.is_null() {
            // SAFETY: `c.bio` is a live bio of the request (invariant).
            c.iter = unsafe { (*c.bio).bi_iter };
            let size = u64::from(c.iter.bi_size);
            if offset < size {
                c.advance(offset as u32);
                break;
            }
            offset -= size;
            // SAFETY: as above; `bi_next` links the request's bios.
            c.bio = unsafe { (*c.bio).bi_next };
        }
        c
    }

    /// The current bio vector.
    fn vec(&self) -> bindings::bio_vec {
        // SAFETY: `bio` is live (invariant, checked non-null by callers)
        // and `iter.bi_idx` indexes its vector table while `iter.bi_size`
        // is not zero (the iterator's window lies inside the table).
        unsafe { *(*self.bio).bi_io_vec.add(self.iter.bi_idx as usize) }
    }

    /// Moves `bytes` forward inside the current bio (`bvec_iter_advance`);
    /// `bytes` is below the iterator's remaining size.
    fn advance(&mut self, mut bytes: u32) {
        self.iter.bi_size -= bytes;
        bytes += self.iter.bi_bvec_done;
        while bytes > 0 {
            // Bytes are left in the window, so `bi_idx` is inside it.
            let len = self.vec().bv_len;
            if bytes < len {
                break;
            }
            bytes -= len;
            self.iter.bi_idx += 1;
        }
        self.iter.bi_bvec_done = bytes;
    }

    /// The next segment, at most `max` bytes and within one page, and moves
    /// past it; `None` at the end of the request's data.
    pub(super) fn next(&mut self, max: u64) -> Option<Segment> {
        if self.bio.is_null() || max == 0 {
            return None;
        }
        let vec = self.vec();
        let in_vec = vec.bv_offset + self.iter.bi_bvec_done;
        let offset = in_vec % PAGE_SIZE as u32;
        let len = self
            .iter
            .bi_size
            .min(vec.bv_len - self.iter.bi_bvec_done)
            .min(PAGE_SIZE as u32 - offset)
            .min(max.min(u64::from(u32::MAX)) as u32);
        // SAFETY: `vec.bv_page` starts the vector's physically contiguous
        // pages, `in_vec / PAGE_SIZE` of which lie before this byte.
        let page = unsafe {
            bindings::vblk_shim_nth_page(vec.bv_page, (in_vec / PAGE_SIZE as u32).into())
        };
        // Single-page step (`bvec_iter_advance_single`).
        let done = self.iter.bi_bvec_done + len;
        if done == vec.bv_len {
            self.iter.bi_bvec_done = 0;
            self.iter.bi_idx += 1;
        } else {
            self.iter.bi_bvec_done = done;
        }
        self.iter.bi_size -= len;
        if self.iter.bi_size == 0 {
            // SAFETY: `bio` is live; the next bio of the request, if any.
            self.bio = unsafe { (*self.bio).bi_next };
            if !self.bio.is_null() {
                // SAFETY: as above for the new bio.
                self.iter = unsafe { (*self.bio).bi_iter };
            }
        }
        Some(Segment {
            page: NonNull::new(page)?,
            offset,
            len,
        })
    }
}

impl Cursor {
    /// Copies the data at the cursor into `buf` and moves past it (less at
    /// the end of the data).
    ///
    /// # Safety
    ///
    /// The caller may read the request's data (it owns the request).
    pub(super) unsafe fn copy_out(&mut self, buf: &mut [u8]) {
        let mut at = 0;
        while let Some(seg) = self.next((buf.len() - at) as u64) {
            let n = seg.len as usize;
            // SAFETY: a segment of the request's data, which the caller may
            // read; only read here.
            unsafe { with_mapped(&seg, |src| buf[at..at + n].copy_from_slice(src)) };
            at += n;
        }
    }

    /// Copies `buf` into the data at the cursor and moves past it (less at
    /// the end of the data).
    ///
    /// # Safety
    ///
    /// The caller may write the request's data (it owns the request and
    /// nothing else uses its data meanwhile).
    pub(super) unsafe fn copy_in(&mut self, buf: &[u8]) {
        let mut at = 0;
        while let Some(seg) = self.next((buf.len() - at) as u64) {
            let n = seg.len as usize;
            // SAFETY: a segment the caller may write, one at a time.
            unsafe { with_mapped(&seg, |dst| dst.copy_from_slice(&buf[at..at + n])) };
            at += n;
        }
    }
}

/// Runs `f` on the bytes of `seg`, mapped for the call.
///
/// # Safety
///
/// The segment's page must be a live page the caller may access (read, or
/// write if `f` writes) for the call, not mapped mutably elsewhere.
pub(super) unsafe fn with_mapped<R>(seg: &Segment, f: impl FnOnce(&mut [u8]) -> R) -> R {
    // SAFETY: the page is live (caller); a local mapping is valid until the
    // matching unmap below, on this task.
    let base = unsafe { bindings::vblk_shim_kmap_local_page(seg.page.as_ptr()) }.cast::<u8>();
    // SAFETY: `offset + len <= PAGE_SIZE` (cursor segments stay in their
    // page); the mapping covers the page; nobody else maps it mutably
    // (caller).
    let bytes =
        unsafe { core::slice::from_raw_parts_mut(base.add(seg.offset as usize), seg.len as usize) };
    let r = f(bytes);
    // SAFETY: unmaps the mapping made above, the last one made on this
    // task (local mappings nest); `bytes` is not used after this.
    unsafe { bindings::vblk_shim_kunmap_local(base.cast()) };
    // SAFETY: the page is live; keeps other mappings of it coherent after
    // a write (a no-op on x86).
    unsafe { bindings::vblk_shim_flush_dcache_page(seg.page.as_ptr()) };
    r
}
