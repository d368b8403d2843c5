// SPDX-License-Identifier: GPL-2.0
//! A vblk device: its identity and (from the framework on) its tables and
//! disk.

use super::abi::{name_field, DeviceRecord, Header, NAME_LEN, UUID_LEN};
use core::sync::atomic::{AtomicU32, Ordering};

/// One device, as created by CREATE.
pub(crate) struct Device {
    name: [u8; NAME_LEN],
    name_len: usize,
    uuid: [u8; UUID_LEN],
    uuid_len: usize,
    /// Bumped when something happens that a waiter should see.
    event_nr: AtomicU32,
}

impl Device {
    /// A device with a checked `name` and (possibly empty) `uuid`.
    pub(crate) fn new(name: &[u8], uuid: &[u8]) -> Self {
        Device {
            name: name_field(name),
            name_len: name.len(),
            uuid: name_field(uuid),
            uuid_len: uuid.len(),
            event_nr: AtomicU32::new(0),
        }
    }

    pub(crate) fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }

    pub(crate) fn uuid(&self) -> &[u8] {
        &self.uuid[..self.uuid_len]
    }

    /// This device's line in a LIST reply.
    pub(crate) fn record(&self) -> DeviceRecord {
        DeviceRecord {
            dev: 0,
            event_nr: self.event_nr.load(Ordering::Relaxed),
            flags: 0,
            name: self.name,
        }
    }

    /// Fills INFO's device fields of `h`.
    pub(crate) fn fill_info(&self, h: &mut Header) {
        h.dev = 0;
        h.open_count = 0;
        h.target_count = 0;
        h.event_nr = self.event_nr.load(Ordering::Relaxed);
        h.uuid = self.uuid;
    }
}
