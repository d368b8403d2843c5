// SPDX-License-Identifier: GPL-2.0
//! The misc control device `/dev/vblk-control` and its ioctl entry point.

use super::bindings;
use crate::vblk::abi::Header;
use core::ffi::{c_long, c_uint, c_ulong, c_void};
use kernel::error::{to_result, Result};
use kernel::types::{AsBytes, FromBytes};

/// The registered control device. Dropping it deregisters the device.
///
/// At most one exists (the module creates it once in `init`), because the
/// C side registers a single static `struct miscdevice`.
pub(crate) struct ControlDevice {
    _private: (),
}

impl ControlDevice {
    /// Registers `/dev/vblk-control`; ioctls on it reach
    /// [`crate::vblk::control::ioctl`].
    pub(crate) fn register() -> Result<Self> {
        // SAFETY: registers the shim's static miscdevice. It is not yet
        // registered: only this constructor registers it, and the module
        // calls it once from `init`.
        to_result(unsafe { bindings::vblk_shim_control_register() })?;
        Ok(ControlDevice { _private: () })
    }
}

impl Drop for ControlDevice {
    fn drop(&mut self) {
        // SAFETY: `self` exists only if registration succeeded, so the
        // device is registered; dropping `self` deregisters it exactly once.
        // misc_deregister waits for no ioctl, but the module reference held
        // by every open file (fops.owner) keeps the module, and so this
        // code, alive until the last ioctl returns.
        unsafe { bindings::vblk_shim_control_deregister() }
    }
}

/// The `unlocked_ioctl` of the control device (named in shim.c's
/// `file_operations`).
#[unsafe(no_mangle)]
extern "C" fn vblk_control_ioctl(_file: *mut c_void, cmd: c_uint, arg: c_ulong) -> c_long {
    // `arg` is an untrusted user address; UserSlice checks every access.
    match crate::vblk::control::ioctl(cmd, arg as usize) {
        Ok(()) => 0,
        Err(e) => e.to_errno() as c_long,
    }
}

// SAFETY: `Header` is `#[repr(C)]` and made only of integers and byte
// arrays, so every bit pattern is a valid value.
unsafe impl FromBytes for Header {}

// SAFETY: `Header` is `#[repr(C)]` and has no padding (ten u32 fill bytes
// 0..40, two u64 fill 40..56 at 8-aligned offsets, then byte arrays fill
// 56..568, a multiple of the 8-byte alignment; abi.rs's tests pin this), so
// all its bytes are initialised.
unsafe impl AsBytes for Header {}
