// SPDX-License-Identifier: GPL-2.0
//! The misc control device `/dev/vblk-control` and its ioctl entry point.

use super::bindings;
use crate::vblk::abi::{DepsReply, DeviceRecord, Header, ListReply};
use core::ffi::{c_long, c_uint, c_ulong, c_void};
use kernel::error::{to_result, Result};
use kernel::sync::Arc;
use kernel::types::{AsBytes, FromBytes};
use kernel::uaccess::UserPtr;

/// Answers the ioctls of the control device.
pub(crate) trait ControlHandler: Send + Sync {
    /// Handles one ioctl; `arg` is the caller's untrusted buffer address.
    fn ioctl(&self, request: u32, arg: UserPtr) -> Result;
}

/// The registered control device. Dropping it deregisters the device.
///
/// At most one may exist (the C side has a single static `miscdevice`), and
/// it must be dropped only in module exit: `misc_deregister` does not wait
/// for ioctls in flight, but every open file holds a reference on the module
/// (`fops.owner`), so once module exit runs no ioctl can be in flight and
/// none can start.
pub(crate) struct ControlDevice<T: ControlHandler> {
    // Keeps the handler alive while the C side holds a pointer to it.
    _handler: Arc<T>,
}

impl<T: ControlHandler> ControlDevice<T> {
    /// Registers `/dev/vblk-control`, whose ioctls go to `handler`.
    pub(crate) fn register(handler: Arc<T>) -> Result<Self> {
        let ctx: *const T = &*handler;
        // SAFETY: the shim stores `ctx` and the trampoline before
        // misc_register() publishes the device. `ctx` stays valid while the
        // device is registered: `Self` owns an `Arc` to it and deregisters
        // before dropping that `Arc` (see the type's invariant about module
        // exit). The trampoline is instantiated for this very `T`.
        to_result(unsafe {
            bindings::vblk_shim_control_register(Some(ioctl_trampoline::<T>), ctx.cast())
        })?;
        Ok(ControlDevice { _handler: handler })
    }
}

impl<T: ControlHandler> Drop for ControlDevice<T> {
    fn drop(&mut self) {
        // SAFETY: `self` exists only if registration succeeded, so the
        // device is registered; dropping `self` deregisters it exactly once.
        unsafe { bindings::vblk_shim_control_deregister() }
    }
}

/// The `unlocked_ioctl` behind the shim: recovers the handler from `ctx`.
///
/// # Safety
///
/// `ctx` must be the pointer [`ControlDevice::register`] gave the shim for
/// this `T`, with the device still registered.
unsafe extern "C" fn ioctl_trampoline<T: ControlHandler>(
    ctx: *const c_void,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: by this function's contract `ctx` points to a live `T` (the
    // registration's `Arc` keeps it alive); only shared access is made.
    let handler = unsafe { &*ctx.cast::<T>() };
    match handler.ioctl(cmd, arg as usize) {
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

// SAFETY: `ListReply` is `#[repr(C)]`, two u32, no padding.
unsafe impl AsBytes for ListReply {}

// SAFETY: `DepsReply` is `#[repr(C)]`, two u32, no padding.
unsafe impl AsBytes for DepsReply {}

// SAFETY: `DeviceRecord` is `#[repr(C)]`: a u64, two u32 and a 128-byte
// array (bytes 0..144, a multiple of its 8-byte alignment), no padding.
unsafe impl AsBytes for DeviceRecord {}
