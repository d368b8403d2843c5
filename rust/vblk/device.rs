// SPDX-License-Identifier: GPL-2.0
//! A vblk device: identity, tables, and (after the first resume) a disk.

use super::abi::{name_field, DeviceRecord, Header, NAME_LEN, UUID_LEN};
use crate::sys::disk::{Disk, Op, QueueHandler, Request, Status};
use crate::targets::{Action, Target};
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::prelude::*;
use kernel::sync::{Arc, SpinLock};

/// One line of a loaded table.
pub(crate) struct Line {
    pub(crate) start: u64,
    pub(crate) length: u64,
    /// Target name and arguments as loaded (for TABLE).
    pub(crate) target_name: &'static str,
    pub(crate) args: KVec<u8>,
    pub(crate) target: Arc<dyn Target>,
}

/// A loaded table: lines contiguous from sector 0 (checked at load).
pub(crate) struct Table {
    pub(crate) lines: KVec<Line>,
    pub(crate) size: u64,
}

impl Table {
    /// Writes the table (`status == false`) or its status as text lines.
    pub(crate) fn write_text(
        &self,
        status: bool,
        out: &mut dyn core::fmt::Write,
    ) -> core::fmt::Result {
        for line in self.lines.iter() {
            write!(out, "{} {} {}", line.start, line.length, line.target_name)?;
            if status {
                let mut first = true;
                let mut sep = SpaceFirst {
                    out: &mut *out,
                    first: &mut first,
                };
                line.target.status(&mut sep)?;
            } else if !line.args.is_empty() {
                out.write_char(' ')?;
                out.write_str(core::str::from_utf8(&line.args).unwrap_or("?"))?;
            }
            out.write_char('\n')?;
        }
        Ok(())
    }

    /// Serves one request: every line it touches decides; any failure
    /// fails the whole request (as a bio spanning dm targets would).
    fn serve(&self, mut rq: Request) {
        let op = rq.op();
        let start = rq.sector();
        let end = start + u64::from(rq.sectors());
        let mut zero_fill = false;
        for line in self.lines.iter() {
            let touches = line.start < end && start < line.start + line.length;
            if !touches {
                continue;
            }
            match line.target.map(op) {
                Action::Fail => return rq.end(Status::IoError),
                Action::ZeroFill => zero_fill = true,
                Action::Complete => {}
            }
        }
        if zero_fill {
            rq.zero_fill();
        }
        rq.end(Status::Ok)
    }
}

/// Puts one space before a target's status text, if it writes any.
struct SpaceFirst<'a> {
    out: &'a mut dyn core::fmt::Write,
    first: &'a mut bool,
}

impl core::fmt::Write for SpaceFirst<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        if *self.first && !s.is_empty() {
            *self.first = false;
            self.out.write_char(' ')?;
        }
        self.out.write_str(s)
    }
}

/// The I/O side of a live device: the active table.
#[pin_data]
pub(crate) struct Queue {
    #[pin]
    active: SpinLock<Arc<Table>>,
}

impl QueueHandler for Queue {
    fn queue_rq(&self, rq: Request) {
        if rq.op() == Op::Flush {
            // Nothing below caches data yet (zero and error only).
            return rq.end(Status::Ok);
        }
        let table = self.active.lock().clone();
        table.serve(rq)
    }
}

/// A device's disk and the queue handler behind it.
struct Live {
    queue: Arc<Queue>,
    disk: Disk<Queue>,
    index: u32,
}

impl Drop for Device {
    fn drop(&mut self) {
        // Deleting a disk waits for its queued requests: let held ones run
        // (on the active table) first.
        if let (Some(live), true) = (&self.live, self.suspended) {
            live.disk.unquiesce();
        }
    }
}

/// One device, as created by CREATE.
pub(crate) struct Device {
    name: [u8; NAME_LEN],
    name_len: usize,
    uuid: [u8; UUID_LEN],
    uuid_len: usize,
    /// Bumped when something happens that a waiter should see.
    event_nr: AtomicU32,
    /// Table loaded but not yet resumed.
    inactive: Option<Arc<Table>>,
    live: Option<Live>,
    /// The disk's queue is quiesced (SUSPEND without RESUME yet).
    suspended: bool,
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
            inactive: None,
            live: None,
            suspended: false,
        }
    }

    pub(crate) fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }

    pub(crate) fn uuid(&self) -> &[u8] {
        &self.uuid[..self.uuid_len]
    }

    /// The event counter.
    pub(crate) fn event_nr(&self) -> u32 {
        self.event_nr.load(Ordering::Relaxed)
    }

    /// The disk index (`vblk<index>`) if the device has a disk.
    pub(crate) fn disk_index(&self) -> Option<u32> {
        self.live.as_ref().map(|l| l.index)
    }

    /// Commits to removal unless the disk is open (`EBUSY`); afterwards
    /// opens of the disk fail until the device is dropped.
    pub(crate) fn claim_for_removal(&self) -> Result {
        self.live
            .as_ref()
            .map_or(Ok(()), |l| l.disk.claim_for_removal())
    }

    fn dev(&self) -> u64 {
        self.live.as_ref().map_or(0, |l| u64::from(l.disk.devt()))
    }

    /// Puts `table` in the inactive slot (replacing any loaded before).
    pub(crate) fn load(&mut self, table: Arc<Table>) {
        self.inactive = Some(table);
    }

    /// Whether a table waits in the inactive slot.
    pub(crate) fn has_inactive(&self) -> bool {
        self.inactive.is_some()
    }

    /// Holds I/O: after this returns no request is being served and new
    /// ones wait. The zero and error targets end every request inside
    /// `queue_rq`, so quiescing is also draining. (`noflush` has nothing to
    /// skip yet: no target has lower devices with caches.)
    pub(crate) fn suspend(&mut self) {
        if let Some(live) = &self.live {
            if !self.suspended {
                live.disk.quiesce();
                self.suspended = true;
            }
        }
    }

    /// Makes the inactive table active, if there is one, and ends a
    /// suspension. The first resume creates the disk (`vblk<index>`); later
    /// ones swap tables while no request is being served (like dm, a
    /// resume of a running device suspends it around the swap), and
    /// requests held meanwhile go to the new table.
    pub(crate) fn resume(&mut self, index: u32) -> Result {
        let Some(table) = self.inactive.take() else {
            if let (Some(live), true) = (&self.live, self.suspended) {
                live.disk.unquiesce();
                self.suspended = false;
            }
            return Ok(());
        };
        let size = table.size;
        if self.live.is_some() {
            self.suspend();
            if let Some(live) = &self.live {
                *live.queue.active.lock() = table;
                live.disk.set_capacity(size);
                live.disk.unquiesce();
            }
            self.suspended = false;
        } else {
            let first = table.clone();
            let queue = match Arc::pin_init(
                pin_init!(Queue {
                    active <- kernel::new_spinlock!(first, "vblk::Queue::active"),
                }),
                GFP_KERNEL,
            ) {
                Ok(q) => q,
                Err(e) => {
                    self.inactive = Some(table);
                    return Err(e);
                }
            };
            match Disk::create(queue.clone(), index, size) {
                Ok(disk) => self.live = Some(Live { queue, disk, index }),
                Err(e) => {
                    self.inactive = Some(table);
                    return Err(e);
                }
            }
        }
        self.event_nr.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The active table (or with `inactive` the loaded one), if any.
    pub(crate) fn table(&self, inactive: bool) -> Option<Arc<Table>> {
        if inactive {
            self.inactive.clone()
        } else {
            self.live.as_ref().map(|l| l.queue.active.lock().clone())
        }
    }

    fn target_count(&self) -> u32 {
        self.live
            .as_ref()
            .map_or(0, |l| l.queue.active.lock().lines.len() as u32)
    }

    /// This device's line in a LIST reply.
    pub(crate) fn record(&self) -> DeviceRecord {
        DeviceRecord {
            dev: self.dev(),
            event_nr: self.event_nr.load(Ordering::Relaxed),
            flags: self.flags(),
            name: self.name,
        }
    }

    fn flags(&self) -> u32 {
        let mut f = 0;
        if self.live.is_some() {
            f |= super::abi::FLAG_ACTIVE_PRESENT;
        }
        if self.inactive.is_some() {
            f |= super::abi::FLAG_INACTIVE_PRESENT;
        }
        if self.suspended {
            f |= super::abi::FLAG_SUSPENDED;
        }
        f
    }

    /// Fills INFO's device fields of `h`.
    pub(crate) fn fill_info(&self, h: &mut Header) {
        h.dev = self.dev();
        h.open_count = self
            .live
            .as_ref()
            .map_or(0, |l| l.disk.openers().max(0) as u32);
        h.target_count = self.target_count();
        h.event_nr = self.event_nr.load(Ordering::Relaxed);
        h.flags = self.flags();
        h.uuid = self.uuid;
    }
}
