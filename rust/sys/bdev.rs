// SPDX-License-Identifier: GPL-2.0
//! Lower block devices: opened read-write and claimed with vblk's holder.

use super::bindings;
use core::ptr::NonNull;
use kernel::error::{Error, Result};
use kernel::str::CStr;

/// An open lower block device. Dropping it releases the claim and closes
/// it, which may sleep: drop it only in process context (tables are
/// dropped by control ioctls and module exit, never by the I/O path).
pub(crate) struct BlockDevice {
    file: NonNull<bindings::file>,
}

// SAFETY: the shim's bdev functions may be called from any thread; the file
// reference is owned by this value alone.
unsafe impl Send for BlockDevice {}
// SAFETY: `&BlockDevice` only allows queries and I/O submission, which the
// block layer allows concurrently.
unsafe impl Sync for BlockDevice {}

impl BlockDevice {
    /// Opens the block device at `path` (resolved in the caller's namespace).
    pub(crate) fn open_path(path: &CStr) -> Result<Self> {
        let mut err = 0;
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        let file = unsafe { bindings::vblk_shim_bdev_open(path.as_char_ptr().cast(), 0, &mut err) };
        NonNull::new(file)
            .map(|file| BlockDevice { file })
            .ok_or_else(|| Error::from_errno(err))
    }

    /// Opens the block device `dev` (kernel encoding, `major << 20 | minor`).
    pub(crate) fn open_dev(dev: u32) -> Result<Self> {
        let mut err = 0;
        // SAFETY: a NULL path makes the shim open by number.
        let file = unsafe { bindings::vblk_shim_bdev_open(core::ptr::null(), dev, &mut err) };
        NonNull::new(file)
            .map(|file| BlockDevice { file })
            .ok_or_else(|| Error::from_errno(err))
    }

    pub(super) fn raw(&self) -> *mut bindings::file {
        self.file.as_ptr()
    }

    /// dev_t, kernel encoding.
    pub(crate) fn devt(&self) -> u32 {
        // SAFETY: `file` is an open block device file (type invariant).
        unsafe { bindings::vblk_shim_bdev_devt(self.raw()) }
    }

    /// The N of `vblkN` if this is a vblk disk (the stacking graph is
    /// kept by disk index, known before the disk has a dev_t).
    pub(crate) fn vblk_index(&self) -> Option<u32> {
        // SAFETY: `file` is an open block device file (type invariant).
        let index = unsafe { bindings::vblk_shim_bdev_vblk_index(self.raw()) };
        (index != u32::MAX).then_some(index)
    }

    /// Size in 512-byte sectors.
    pub(crate) fn sectors(&self) -> u64 {
        // SAFETY: as above.
        unsafe { bindings::vblk_shim_bdev_sectors(self.raw()) }
    }

    /// Logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        // SAFETY: as above.
        unsafe { bindings::vblk_shim_bdev_logical_block_size(self.raw()) }
    }

    /// Whether the device accepts discards.
    pub(crate) fn supports_discard(&self) -> bool {
        // SAFETY: as above.
        unsafe { bindings::vblk_shim_bdev_discard(self.raw()) }
    }

    /// Whether the device accepts WRITE_ZEROES.
    pub(crate) fn supports_write_zeroes(&self) -> bool {
        // SAFETY: as above.
        unsafe { bindings::vblk_shim_bdev_write_zeroes(self.raw()) }
    }

    /// The kernel's name for the device ("ram0", "vblk2"), for messages.
    pub(crate) fn name(&self) -> DeviceName {
        let mut name = DeviceName { bytes: [0; 32] };
        // SAFETY: the buffer is writable for its whole length, which is
        // passed; snprintf NUL-terminates within it.
        unsafe {
            bindings::vblk_shim_bdev_name(
                self.raw(),
                name.bytes.as_mut_ptr().cast(),
                name.bytes.len() as u32,
            )
        };
        name
    }

    /// Flushes the device's volatile cache and waits (process context).
    pub(crate) fn flush(&self) -> Result {
        // SAFETY: as above; control ioctls run in process context.
        kernel::error::to_result(unsafe { bindings::vblk_shim_bdev_flush(self.raw()) })
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
/// moves.
pub(crate) const MAX_RW_BYTES: usize = bindings::VBLK_RW_MAX_BYTES as usize;

impl BlockDevice {
    /// Reads `buf.len()` bytes (a multiple of 512, at most
    /// [`MAX_RW_BYTES`]; a heap buffer, not the stack) from `sector` and
    /// waits. Only from a worker
    /// (process context outside any bio submission: a submitter's own
    /// bios may be queued behind this one, see `Request::defer`).
    pub(crate) fn read_at(&self, sector: u64, buf: &mut [u8]) -> Result {
        let len = rw_len(buf.len())?;
        // SAFETY: `file` is open; `buf` is writable kernel memory for `len`
        // bytes (the shim maps kmalloc'd and vmalloc'd addresses to pages),
        // borrowed mutably until the bio completed (the shim waits for it).
        kernel::error::to_result(unsafe {
            bindings::vblk_shim_bdev_rw(self.raw(), sector, buf.as_mut_ptr().cast(), len, 0)
        })
    }

    /// Writes `buf` (a multiple of 512 bytes, at most [`MAX_RW_BYTES`]) at
    /// `sector` and waits; as [`BlockDevice::read_at`].
    pub(crate) fn write_at(&self, sector: u64, buf: &[u8], flags: WriteFlags) -> Result {
        let len = rw_len(buf.len())?;
        let mut how = bindings::vblk_rw_flag_VBLK_RW_WRITE;
        if flags.preflush {
            how |= bindings::vblk_rw_flag_VBLK_RW_PREFLUSH;
        }
        if flags.fua {
            how |= bindings::vblk_rw_flag_VBLK_RW_FUA;
        }
        // SAFETY: as for `read_at`; a write only reads `buf` (the pointer
        // is mutable for the C type only).
        kernel::error::to_result(unsafe {
            bindings::vblk_shim_bdev_rw(
                self.raw(),
                sector,
                buf.as_ptr().cast_mut().cast(),
                len,
                how,
            )
        })
    }
}

/// A buffer length the shim's synchronous I/O takes, as `u32`.
fn rw_len(len: usize) -> Result<u32> {
    if len == 0 || len % 512 != 0 || len > MAX_RW_BYTES {
        return Err(kernel::error::code::EINVAL);
    }
    Ok(len as u32)
}

impl Drop for BlockDevice {
    fn drop(&mut self) {
        // SAFETY: `file` is open and owned by us; it is closed exactly once.
        unsafe { bindings::vblk_shim_bdev_close(self.file.as_ptr()) }
    }
}

/// A block device's kernel name, printable with `{}`.
pub(crate) struct DeviceName {
    bytes: [u8; 32],
}

impl core::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(crate::vblk::abi::c_str(&self.bytes))
    }
}
