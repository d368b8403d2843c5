// SPDX-License-Identifier: GPL-2.0
//! The abstraction layer: the only place in vblk with `unsafe`.
//!
//! Everything the framework and the targets need from the C kernel is
//! wrapped here in safe types whose invariants are documented where they
//! are established. Above this layer no code touches a raw pointer.

pub(crate) mod aio;
pub(crate) mod bdev;
mod bindings;
pub(crate) mod bounce;
pub(crate) mod control;
pub(crate) mod crypto;
pub(crate) mod disk;
pub(crate) mod event;
pub(crate) mod limits;
mod lower;
mod rqdata;
pub(crate) mod vec;
pub(crate) mod workqueue;

/// Whether the calling task has `CAP_SYS_ADMIN` (checked per call, like
/// device-mapper does for its control ioctls).
pub(crate) fn caller_has_sys_admin() -> bool {
    // SAFETY: `capable()` only inspects the current task's credentials and
    // may be called from any process context, which an ioctl handler is.
    unsafe { bindings::capable(bindings::VBLK_CONST_CAP_SYS_ADMIN) }
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
        // SAFETY: drops the reference `get` took on this module, exactly
        // once.
        unsafe { bindings::module_put(&raw mut bindings::__this_module) }
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
    unsafe { bindings::get_random_u64() }
}

/// A kernel ops table kept in a `static` (the kernel keeps pointers to it
/// for as long as the module is loaded).
pub(crate) struct StaticTable<T>(pub(crate) T);

// SAFETY: the tables are never written after initialisation; the kernel
// only reads the pointers in them (the module, callbacks).
unsafe impl<T> Sync for StaticTable<T> {}

/// `ERR_PTR` decoding: the errno a pointer returned by the kernel carries,
/// if it carries one (`IS_ERR`/`PTR_ERR`).
fn err_ptr<P>(p: *mut P) -> Option<i32> {
    let v = p as isize;
    (-4095..0).contains(&v).then_some(v as i32)
}

/// Bytes per page.
pub(crate) const PAGE_SIZE: usize = bindings::VBLK_CONST_PAGE_SIZE as usize;

/// Overwrites `bytes` with zeros in a way the compiler cannot drop as a
/// dead store (`memzero_explicit`): for keys and other secrets about to
/// be freed or reused.
pub(crate) fn wipe(bytes: &mut [u8]) {
    // SAFETY: `bytes` is writable for its length, borrowed for the call.
    unsafe { bindings::vblk_shim_memzero_explicit(bytes.as_mut_ptr().cast(), bytes.len()) }
}

/// The kernel's CRC-32C update (`crc32c`: no final inversion; see
/// `vblk::metadata_block::checksum`), hardware-accelerated where the CPU
/// has it. Any context.
pub(crate) fn crc32c(seed: u32, bytes: &[u8]) -> u32 {
    // `crc32c` takes an `unsigned int` length: longer slices go in parts.
    bytes
        .chunks(u32::MAX as usize)
        // SAFETY: the pointer and length describe a live byte slice, only
        // read during the call.
        .fold(seed, |crc, part| unsafe {
            bindings::crc32c(crc, part.as_ptr().cast(), part.len() as u32)
        })
}

// SAFETY: the thin pool's scratch space is byte arrays (4 KiB buffers)
// nested in plain structs, nothing else: all zero bytes is a valid value.
unsafe impl kernel::init::Zeroable for crate::targets::thin_metadata::PoolScratch {}

/// A zeroed value of `T` made in place on the heap (never on the stack:
/// large scratch buffers would overflow a kernel stack).
pub(crate) fn zeroed_box<T: kernel::init::Zeroable>(
) -> kernel::error::Result<kernel::alloc::KBox<T>> {
    <kernel::alloc::KBox<T> as kernel::init::InPlaceInit<T>>::init(
        kernel::init::zeroed(),
        kernel::alloc::flags::GFP_KERNEL,
    )
}
