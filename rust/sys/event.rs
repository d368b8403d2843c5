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

/// A count of I/O in flight that can be waited on to reach zero: raised
/// when I/O is sent, lowered from its completion (any context), and the
/// last one out wakes whoever waits (snapshot reads a commit must outlast).
pub(crate) struct InFlight {
    count: AtomicU32,
}

impl InFlight {
    pub(crate) const fn new() -> Self {
        InFlight {
            count: AtomicU32::new(0),
        }
    }

    /// `n` more in flight.
    pub(crate) fn add(&self, n: u32) {
        self.count.fetch_add(n, Ordering::AcqRel);
    }

    /// One ended; the last wakes the waiters.
    pub(crate) fn done(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: the pointer is to our own counter, alive for the
            // call; wake_up_var only uses it as a hash key and may run in
            // any context.
            unsafe { bindings::wake_up_var(self.count.as_ptr().cast()) }
        }
    }

    /// Sleeps until none is in flight (process context).
    pub(crate) fn wait_idle(&self) {
        loop {
            let seen = self.count.load(Ordering::Acquire);
            if seen == 0 {
                return;
            }
            // SAFETY: the counter outlives the call (`&self`); the shim
            // only reads it (READ_ONCE) and sleeps in process context until
            // it differs from `seen` (`done` wakes at zero). A signal only
            // ends one wait early: the loop looks again.
            unsafe { bindings::vblk_shim_event_wait(self.count.as_ptr(), seen) };
        }
    }
}
