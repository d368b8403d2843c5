// SPDX-License-Identifier: GPL-2.0
//! The abstraction layer: the only place in vblk with `unsafe`.
//!
//! Everything the framework and the targets need from the C kernel is
//! wrapped here in safe types whose invariants are documented where they
//! are established. Above this layer no code touches a raw pointer.

pub(crate) mod bdev;
mod bindings;
pub(crate) mod bounce;
pub(crate) mod control;
pub(crate) mod crypto;
pub(crate) mod disk;
pub(crate) mod event;
pub(crate) mod limits;
pub(crate) mod vec;
pub(crate) mod workqueue;

/// Whether the calling task has `CAP_SYS_ADMIN` (checked per call, like
/// device-mapper does for its control ioctls).
pub(crate) fn caller_has_sys_admin() -> bool {
    // SAFETY: `capable()` only inspects the current task's credentials and
    // may be called from any process context, which an ioctl handler is.
    unsafe { bindings::vblk_shim_capable_sys_admin() }
}

/// A reference on the vblk module: while one exists, `rmmod vblk` is
/// refused (each device holds one, as each dm device holds dm-mod).
///
/// The registry drops it in REMOVE, a control ioctl, whose open file pins
/// the module while `module_put` returns.
pub(crate) struct ModuleRef {
    _private: (),
}

impl ModuleRef {
    /// `None` while the module is being unloaded.
    pub(crate) fn get() -> Option<Self> {
        // SAFETY: no preconditions; fails once unloading has begun.
        unsafe { bindings::vblk_shim_module_get() }.then_some(ModuleRef { _private: () })
    }
}

impl Drop for ModuleRef {
    fn drop(&mut self) {
        // SAFETY: drops the reference `get` took, exactly once.
        unsafe { bindings::vblk_shim_module_put() }
    }
}

/// Lets other tasks run during a long loop in process context (a table
/// of ~90 000 stripes; the test kernel is not preemptible).
pub(crate) fn cond_resched() {
    // SAFETY: process context only; every caller runs in a control ioctl.
    unsafe { bindings::vblk_shim_cond_resched() }
}

/// Milliseconds since boot, at jiffy resolution (for coarse timing such as
/// dm-flakey's up and down intervals).
pub(crate) fn uptime_ms() -> u64 {
    // SAFETY: reads the jiffies counter; any context.
    unsafe { bindings::vblk_shim_uptime_ms() }
}

/// A random number from the kernel's CRNG (any context).
pub(crate) fn random_u64() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bindings::vblk_shim_random_u64() }
}
