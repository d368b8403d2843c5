// SPDX-License-Identifier: GPL-2.0
//! An event counter that can be bumped from any context and waited on.

use super::bindings;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::error::code::ERESTARTSYS;
use kernel::error::Result;

/// A counter of events (device-mapper's `event_nr`). Bumping it wakes
/// everyone waiting for it to change; it may be bumped from any context,
/// hard irq included, and waited on without holding any lock.
pub(crate) struct EventCounter {
    count: AtomicU32,
}

impl EventCounter {
    pub(crate) const fn new() -> Self {
        EventCounter {
            count: AtomicU32::new(0),
        }
    }

    pub(crate) fn get(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    /// Counts one event and wakes the waiters.
    pub(crate) fn bump(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
        // SAFETY: the pointer is to our own counter, alive for the call;
        // wake_up_var only uses it as a hash key and may run in any context.
        unsafe { bindings::wake_up_var(self.count.as_ptr().cast()) }
    }

    /// Sleeps until the counter differs from `seen`; returns the new value,
    /// or `ERESTARTSYS` if a signal arrived first.
    pub(crate) fn wait_change(&self, seen: u32) -> Result<u32> {
        // SAFETY: the counter outlives the call (`&self`); the shim only
        // reads it (READ_ONCE) and sleeps interruptibly in process context,
        // which is where control ioctls run.
        let rc = unsafe { bindings::vblk_shim_event_wait(self.count.as_ptr(), seen) };
        if rc != 0 {
            return Err(ERESTARTSYS);
        }
        Ok(self.get())
    }
}
