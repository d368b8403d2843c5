// SPDX-License-Identifier: GPL-2.0
//! Lower block devices: opened read-write and claimed with vblk's holder,
//! and synchronous I/O to them from page-backed buffers ([`IoBuffer`]).

use super::bindings;
use super::PAGE_SIZE;
use core::ops::{Deref, DerefMut, Range};
use core::ptr::NonNull;
use kernel::alloc::VVec;
use kernel::error::code::EINVAL;
use kernel::error::{to_result, Error, Result};
use kernel::str::CStr;

/// One holder for every lower device vblk opens, like device-mapper's
/// `_dm_claim_ptr`: two vblk tables may share a lower device (and a reload
/// can open what the old table still holds), while everyone else who wants
/// the device exclusively (mkfs, mount, another driver) gets `EBUSY`.
static HOLDER: u8 = 0;

/// An open lower block device. Dropping it releases the claim and closes
/// it, which may sleep: drop it only in process context (tables are
/// dropped by control ioctls and module exit, never by the I/O path).
///
/// # Invariants
///
/// `file` is an open block device file (from `bdev_file_open_by_*` with
/// [`HOLDER`]), closed only in `drop`.
pub(crate) struct BlockDevice {
    file: NonNull<bindings::file>,
}

// SAFETY: a block device file may be used and closed from any thread; the
// reference is owned by this value alone.
unsafe impl Send for BlockDevice {}
// SAFETY: `&BlockDevice` only allows queries and I/O submission, which the
// block layer allows concurrently.
unsafe impl Sync for BlockDevice {}

fn opened(file: *mut bindings::file) -> Result<BlockDevice> {
    if let Some(e) = super::err_ptr(file) {
        return Err(Error::from_errno(e));
    }
    // INVARIANT: not an error pointer: an open block device file.
    NonNull::new(file)
        .map(|file| BlockDevice { file })
        .ok_or(EINVAL)
}

impl BlockDevice {
    /// Opens the block device at `path` (resolved in the caller's namespace).
    pub(crate) fn open_path(path: &CStr) -> Result<Self> {
        // SAFETY: `path` is NUL-terminated and outlives the call; the
        // holder is a static, so it outlives every claim.
        opened(unsafe {
            bindings::bdev_file_open_by_path(
                path.as_char_ptr().cast(),
                bindings::VBLK_CONST_BLK_OPEN_RW,
                (&raw const HOLDER).cast_mut().cast(),
                core::ptr::null(),
            )
        })
    }

    /// Opens the block device `dev` (kernel encoding, `major << 20 | minor`).
    pub(crate) fn open_dev(dev: u32) -> Result<Self> {
        // SAFETY: opens by number; the holder is a static, as above.
        opened(unsafe {
            bindings::bdev_file_open_by_dev(
                dev,
                bindings::VBLK_CONST_BLK_OPEN_RW,
                (&raw const HOLDER).cast_mut().cast(),
                core::ptr::null(),
            )
        })
    }

    /// The block device behind the file, live while `self` is.
    pub(super) fn bdev(&self) -> *mut bindings::block_device {
        // SAFETY: `file` is an open block device file (invariant).
        unsafe { bindings::file_bdev(self.file.as_ptr()) }
    }

    /// dev_t, kernel encoding.
    pub(crate) fn devt(&self) -> u32 {
        // SAFETY: the block device is live while its file is open.
        unsafe { (*self.bdev()).bd_dev }
    }

    /// The N of `vblkN` if this is a vblk disk (the stacking graph is
    /// kept by disk index, known before the disk has a dev_t).
    pub(crate) fn vblk_index(&self) -> Option<u32> {
        // SAFETY: the block device and its gendisk are live while the file
        // is open.
        let disk = unsafe { (*self.bdev()).bd_disk };
        // SAFETY: `disk` is live (above).
        unsafe { super::disk::vblk_disk_common(disk) }.map(|c| c.index)
    }

    /// Size in 512-byte sectors.
    pub(crate) fn sectors(&self) -> u64 {
        // SAFETY: the block device is live while its file is open.
        unsafe { bindings::vblk_shim_bdev_nr_sectors(self.bdev()) }
    }

    /// Logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        // SAFETY: the block device and its queue are live while the file
        // is open.
        unsafe { bindings::vblk_shim_bdev_logical_block_size(self.bdev()) }
    }

    /// Whether the device accepts discards.
    pub(crate) fn supports_discard(&self) -> bool {
        // SAFETY: the block device and its queue are live while the file
        // is open.
        unsafe { bindings::vblk_shim_bdev_max_discard_sectors(self.bdev()) != 0 }
    }

    /// Whether the device accepts WRITE_ZEROES.
    pub(crate) fn supports_write_zeroes(&self) -> bool {
        // SAFETY: the block device and its queue are live while the file
        // is open.
        unsafe { bindings::vblk_shim_bdev_write_zeroes_sectors(self.bdev()) != 0 }
    }

    /// The kernel's name for the device ("ram0", "vblk2"), for messages.
    pub(crate) fn name(&self) -> DeviceName {
        let mut name = DeviceName { bytes: [0; 32] };
        // SAFETY: the buffer is writable for its whole length, which is
        // passed; snprintf NUL-terminates within it; `%pg` takes the live
        // block device.
        unsafe {
            bindings::snprintf(
                name.bytes.as_mut_ptr().cast(),
                name.bytes.len(),
                c"%pg".as_ptr(),
                self.bdev(),
            )
        };
        name
    }

    /// Discards `sectors` sectors from `sector` on and waits (process
    /// context; a worker, as for [`BlockDevice::read_at`]). A device
    /// without discard support does nothing (`Ok`).
    pub(crate) fn discard_sync(&self, sector: u64, sectors: u64) -> Result {
        if !self.supports_discard() {
            return Ok(());
        }
        // SAFETY: the block device is live; callers run in process
        // context. GFP_NOIO: the caller may be on a disk's I/O path.
        to_result(unsafe {
            bindings::blkdev_issue_discard(
                self.bdev(),
                sector,
                sectors,
                bindings::VBLK_CONST_GFP_NOIO,
            )
        })
    }

    /// Flushes the device's volatile cache and waits (process context).
    pub(crate) fn flush(&self) -> Result {
        // SAFETY: the block device is live; callers run in process context
        // (control ioctls, workers).
        to_result(unsafe { bindings::blkdev_issue_flush(self.bdev()) })
    }
}

/// How [`BlockDevice::write_at`] writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WriteFlags {
    /// Flush the device's cache before the write (`REQ_PREFLUSH`).
    pub(crate) preflush: bool,
    /// The write is durable when it completes (`REQ_FUA`).
    pub(crate) fua: bool,
}

/// Most bytes one [`BlockDevice::read_at`] / [`BlockDevice::write_at`]
/// moves: one bio of whole pages.
pub(crate) const MAX_RW_BYTES: usize = bindings::VBLK_CONST_BIO_MAX_VECS as usize * PAGE_SIZE;

/// A buffer for synchronous I/O: whole pages of vmalloc memory, starting
/// on a page boundary, so a bio can be built from its pages. The only
/// buffer [`BlockDevice::read_at`] and [`BlockDevice::write_at`] take: a
/// stack array or a static cannot be passed by mistake.
///
/// # Invariants
///
/// `bytes` is a vmalloc allocation whose first byte is page-aligned, its
/// length a non-zero multiple of 512.
pub(crate) struct IoBuffer {
    pub(super) bytes: VVec<u8>,
}

impl IoBuffer {
    /// A zeroed buffer of `len` bytes (a non-zero multiple of 512).
    pub(crate) fn new(len: usize) -> Result<Self> {
        if len == 0 || len % 512 != 0 {
            return Err(EINVAL);
        }
        let bytes = VVec::from_elem(0u8, len, kernel::alloc::flags::GFP_KERNEL)?;
        // vmalloc hands out whole pages; checked rather than assumed.
        if bytes.as_ptr() as usize % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        // INVARIANT: checked above.
        Ok(IoBuffer { bytes })
    }
}

impl Deref for IoBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl DerefMut for IoBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl BlockDevice {
    /// Reads bytes `range` of `buf` from `sector` on and waits. `range`
    /// starts on a page boundary of the buffer, holds a non-zero multiple
    /// of 512 bytes, at most [`MAX_RW_BYTES`] (`EINVAL` otherwise). Only
    /// from a worker (process context outside any bio submission: a
    /// submitter's own bios may be queued behind this one, see
    /// `Request::defer`).
    pub(crate) fn read_at(&self, sector: u64, buf: &mut IoBuffer, range: Range<usize>) -> Result {
        let base = buf.bytes.as_mut_ptr();
        self.rw(sector, base, buf.len(), range, bindings::req_op_REQ_OP_READ)
    }

    /// Writes bytes `range` of `buf` at `sector` and waits; as
    /// [`BlockDevice::read_at`].
    pub(crate) fn write_at(
        &self,
        sector: u64,
        buf: &IoBuffer,
        range: Range<usize>,
        flags: WriteFlags,
    ) -> Result {
        let mut opf = bindings::req_op_REQ_OP_WRITE | bindings::VBLK_CONST_REQ_SYNC;
        if flags.preflush {
            opf |= bindings::VBLK_CONST_REQ_PREFLUSH;
        }
        if flags.fua {
            opf |= bindings::VBLK_CONST_REQ_FUA;
        }
        // The bio only reads the buffer (the pointer is mutable for the C
        // type only).
        self.rw(sector, buf.bytes.as_ptr().cast_mut(), buf.len(), range, opf)
    }

    /// The bio behind `read_at`/`write_at`: one vector per page of the
    /// range of the `IoBuffer` at `buf` (`buf_len` bytes), borrowed by the
    /// caller for the call (mutably for a read, which writes it).
    fn rw(
        &self,
        sector: u64,
        buf: *mut u8,
        buf_len: usize,
        range: Range<usize>,
        opf: u32,
    ) -> Result {
        let (base, len) = buffer_range(buf, buf_len, range)?;
        // SAFETY: `base..base + len` is a checked range of the caller's
        // `IoBuffer`, borrowed (mutably for a read) for this call, which
        // waits for the bio.
        let bio = unsafe { self.page_bio(sector, base, len, opf) }?;
        // SAFETY: the bio is ours, filled above; `submit_bio_wait` returns
        // once it is over. The vmap range is invalidated after a read, for
        // caches that alias (a no-op on x86).
        let rc = unsafe {
            let rc = bindings::submit_bio_wait(bio);
            if opf & bindings::VBLK_CONST_REQ_OP_MASK == bindings::req_op_REQ_OP_READ {
                bindings::vblk_shim_invalidate_kernel_vmap_range(base.cast(), len as i32);
            }
            bindings::bio_put(bio);
            rc
        };
        to_result(rc)
    }

    /// A bio of operation `opf` for the `len` bytes of an [`IoBuffer`] at
    /// `base` (from [`buffer_range`]), to `sector`, not submitted. The
    /// buffer's vmap range is flushed for caches that alias.
    ///
    /// # Safety
    ///
    /// `base..base + len` must be a range [`buffer_range`] returned for a
    /// live `IoBuffer`, which stays alive and untouched by anything else
    /// (read-only for a write) until the bio is over.
    pub(super) unsafe fn page_bio(
        &self,
        sector: u64,
        base: *mut u8,
        len: usize,
        opf: u32,
    ) -> Result<*mut bindings::bio> {
        let pages = len.div_ceil(PAGE_SIZE);
        // SAFETY: `fs_bio_set` is the kernel's general bio_set; GFP_NOIO
        // from a mempool waits and never fails; `pages <= BIO_MAX_VECS`
        // (`buffer_range` checks the length).
        let bio = unsafe {
            bindings::bio_alloc_bioset(
                self.bdev(),
                pages as u16,
                opf,
                bindings::VBLK_CONST_GFP_NOIO,
                &raw mut bindings::fs_bio_set,
            )
        };
        if bio.is_null() {
            return Err(kernel::error::code::ENOMEM);
        }
        // SAFETY: the bio is ours with room for `pages` vectors. Each page
        // is a vmalloc page of the buffer (a page-aligned range inside it,
        // by the contract), kept alive by the caller until the bio is over.
        unsafe {
            (*bio).bi_iter.bi_sector = sector;
            for i in 0..pages {
                let at = base.add(i * PAGE_SIZE);
                let n = (len - i * PAGE_SIZE).min(PAGE_SIZE) as u32;
                let page = bindings::vmalloc_to_page(at.cast());
                bindings::__bio_add_page(bio, page, n, 0);
            }
            bindings::vblk_shim_flush_kernel_vmap_range(base.cast(), len as i32);
        }
        Ok(bio)
    }
}

/// The start and length of bytes `range` of a buffer at `buf` of `buf_len`
/// bytes, if one bio can carry them: starting on a page boundary, a
/// non-zero multiple of 512 bytes, at most [`MAX_RW_BYTES`] (`EINVAL`
/// otherwise).
pub(super) fn buffer_range(
    buf: *mut u8,
    buf_len: usize,
    range: Range<usize>,
) -> Result<(*mut u8, usize)> {
    let len = range.end.checked_sub(range.start).ok_or(EINVAL)?;
    if range.start % PAGE_SIZE != 0
        || len == 0
        || len % 512 != 0
        || len > MAX_RW_BYTES
        || range.end > buf_len
    {
        return Err(EINVAL);
    }
    Ok((buf.wrapping_add(range.start), len))
}

impl Drop for BlockDevice {
    fn drop(&mut self) {
        // SAFETY: `file` is open and owned by us (invariant); closed
        // exactly once.
        unsafe { bindings::bdev_fput(self.file.as_ptr()) }
    }
}

/// A block device's kernel name, printable with `{}`.
pub(crate) struct DeviceName {
    bytes: [u8; 32],
}

impl core::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.bytes.len());
        f.write_str(core::str::from_utf8(&self.bytes[..end]).unwrap_or("?"))
    }
}
