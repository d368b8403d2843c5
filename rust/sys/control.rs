// SPDX-License-Identifier: GPL-2.0
//! The misc control device `/dev/vblk-control` and its ioctl entry point.

use super::bindings;
use super::StaticTable;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::alloc::KBox;
use kernel::error::code::EBUSY;
use kernel::error::{to_result, Result};
use kernel::sync::Arc;
use kernel::types::Opaque;
use kernel::uaccess::UserPtr;

/// Answers the ioctls of the control device.
pub(crate) trait ControlHandler: Send + Sync {
    /// Handles one ioctl; `arg` is the caller's untrusted buffer address.
    fn ioctl(&self, request: u32, arg: UserPtr) -> Result;
}

/// Set while a [`ControlDevice`] exists: there is one `/dev/vblk-control`.
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// The registered misc device and what its ioctls go to.
///
/// # Invariants
///
/// While registered, `misc` is a registered miscdevice using [`FOPS`];
/// `handler` points into the `Arc` the [`ControlDevice`] holds and `call`
/// is `call_handler` for that handler's type.
#[repr(C)]
struct Registration {
    misc: Opaque<bindings::miscdevice>,
    handler: *const core::ffi::c_void,
    /// `call_handler::<T>` for the handler's type (its `# Safety`: the
    /// pointer must be a live `T`).
    call: HandlerFn,
}

/// Calls a handler through a type-erased pointer.
///
/// # Safety
///
/// The pointer must point to a live handler of the type the function was
/// instantiated for.
type HandlerFn = unsafe fn(*const core::ffi::c_void, u32, UserPtr) -> Result;

/// The registered control device. Dropping it deregisters the device.
///
/// At most one exists at a time (`register` refuses a second with `EBUSY`).
/// It must be dropped only in module exit: `misc_deregister` does not wait
/// for ioctls in flight, but every open file holds a reference on the
/// module (`FOPS.owner`), so once module exit runs no ioctl can be in
/// flight and none can start.
pub(crate) struct ControlDevice<T: ControlHandler> {
    reg: Pin<KBox<Registration>>,
    _handler: Arc<T>,
}

// SAFETY: the registration is only read after `register` (by the kernel
// and `ioctl_cb`), and the handler is `Send + Sync`.
unsafe impl<T: ControlHandler> Send for ControlDevice<T> {}
// SAFETY: `&ControlDevice` offers no method; the kernel and `ioctl_cb`
// only read the registration, and the handler is `Sync`.
unsafe impl<T: ControlHandler> Sync for ControlDevice<T> {}

/// A table the C side requires to be static: a registered misc device's
/// `fops` must outlive every open file, and names the module as owner (an
/// open control file pins the module).
static FOPS: StaticTable<bindings::file_operations> = StaticTable(bindings::file_operations {
    owner: &raw const bindings::__this_module as *mut bindings::module,
    open: Some(bindings::nonseekable_open),
    llseek: Some(bindings::noop_llseek),
    unlocked_ioctl: Some(ioctl_cb),
    // No 32-bit callers: the test and bench kernels have no CONFIG_COMPAT
    // (where `compat_ptr_ioctl` would be the one to use).
    compat_ioctl: None,
    // SAFETY: all-zero is a valid value for the other fields (`None`
    // callbacks, zero flags).
    ..unsafe { core::mem::zeroed() }
});

/// Calls the handler of type `T`.
///
/// # Safety
///
/// `handler` must point to a live `T`.
unsafe fn call_handler<T: ControlHandler>(
    handler: *const core::ffi::c_void,
    cmd: u32,
    arg: UserPtr,
) -> Result {
    // SAFETY: by the contract; only shared access is made.
    unsafe { &*handler.cast::<T>() }.ioctl(cmd, arg)
}

impl<T: ControlHandler> ControlDevice<T> {
    /// Registers `/dev/vblk-control` (root-only, like
    /// `/dev/mapper/control`), whose ioctls go to `handler`.
    pub(crate) fn register(handler: Arc<T>) -> Result<Self> {
        if REGISTERED.swap(true, Ordering::AcqRel) {
            return Err(EBUSY);
        }
        let misc = bindings::miscdevice {
            minor: bindings::VBLK_CONST_MISC_DYNAMIC_MINOR,
            name: c"vblk-control".as_ptr(),
            nodename: c"vblk-control".as_ptr(),
            mode: 0o600,
            fops: &raw const FOPS.0,
            ..Default::default()
        };
        let reg = KBox::pin(
            Registration {
                misc: Opaque::new(misc),
                handler: (&raw const *handler).cast(),
                call: call_handler::<T>,
            },
            kernel::alloc::flags::GFP_KERNEL,
        );
        let reg = match reg {
            Ok(reg) => reg,
            Err(e) => {
                REGISTERED.store(false, Ordering::Release);
                return Err(e.into());
            }
        };
        // SAFETY: `misc` is pinned in `reg` and stays registered until
        // `drop` deregisters it, before `reg` is freed; its names and fops
        // are statics. The handler stays alive as long as the device: `Self`
        // holds the `Arc` and deregisters first.
        if let Err(e) = to_result(unsafe { bindings::misc_register(reg.misc.get()) }) {
            REGISTERED.store(false, Ordering::Release);
            return Err(e);
        }
        // INVARIANT: registered just now with `FOPS`; `handler` and `call`
        // match `T`.
        Ok(ControlDevice {
            reg,
            _handler: handler,
        })
    }
}

impl<T: ControlHandler> Drop for ControlDevice<T> {
    fn drop(&mut self) {
        // SAFETY: `self` exists only if registration succeeded, so the
        // device is registered; deregistered exactly once, here.
        unsafe { bindings::misc_deregister(self.reg.misc.get()) };
        REGISTERED.store(false, Ordering::Release);
    }
}

/// `file_operations::unlocked_ioctl` of the control device.
///
/// # Safety
///
/// Called by the VFS for an open file of the control device: misc's open
/// set `private_data` to our `miscdevice`, which is registered (so its
/// [`Registration`] is alive) while the file is open.
unsafe extern "C" fn ioctl_cb(
    file: *mut bindings::file,
    cmd: u32,
    arg: core::ffi::c_ulong,
) -> core::ffi::c_long {
    // SAFETY: `private_data` is the `misc` field, the first of the
    // `#[repr(C)]` `Registration`, alive while the device is registered.
    let reg = unsafe { &*(*file).private_data.cast::<Registration>() };
    // SAFETY: `handler` and `call` belong together and the handler is
    // alive while the device is registered (invariant).
    match unsafe { (reg.call)(reg.handler, cmd, arg as UserPtr) } {
        Ok(()) => 0,
        Err(e) => e.to_errno() as core::ffi::c_long,
    }
}
