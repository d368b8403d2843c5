// SPDX-License-Identifier: GPL-2.0
//! A vblk device: identity, tables, and (after the first resume) a disk.
//!
//! Each device has its own state mutex, so a suspend that waits for
//! in-flight I/O (which may depend on another, suspended, vblk device)
//! blocks only that device's control commands, never the others'.

use super::abi::{
    name_field, Header, FLAG_ACTIVE_PRESENT, FLAG_INACTIVE_PRESENT, FLAG_SUSPENDED, NAME_LEN,
    UUID_LEN,
};
use super::io::Queue;
use super::map::Table;
use super::message::{fail, Errno, Reply};
use crate::sys::disk::{Disk, Status};
use crate::sys::event::EventCounter;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::error::code::{EBUSY, EINTR, EINVAL, ENXIO};
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

/// One device, as created by CREATE.
#[pin_data]
pub(crate) struct Device {
    name: [u8; NAME_LEN],
    name_len: usize,
    uuid: [u8; UUID_LEN],
    uuid_len: usize,
    /// The disk is `vblk<index>`; chosen at CREATE, unique while the
    /// device exists.
    pub(crate) index: u32,
    /// Bumped when something happens that a waiter should see (table
    /// swap, removal, target events). Shared with the targets of its
    /// tables, which raise events from any context.
    pub(crate) events: Arc<EventCounter>,
    /// `FLAG_*_PRESENT | FLAG_SUSPENDED`, mirrored from the state for LIST,
    /// which must not wait for a device's mutex.
    flags: AtomicU32,
    #[pin]
    state: Mutex<State>,
}

/// What changes under the device's mutex.
pub(crate) struct State {
    /// Table loaded but not yet resumed.
    inactive: Option<Arc<Table>>,
    live: Option<Live>,
    /// The disk's queue is quiesced (SUSPEND without RESUME yet).
    suspended: bool,
    /// REMOVE took the device out of the registry; nothing may change it.
    removed: bool,
}

/// A device's disk and the queue handler behind it.
struct Live {
    queue: Arc<Queue>,
    disk: Disk<Queue>,
}

/// What RESUME did.
pub(crate) enum Resumed {
    /// Nothing loaded: a suspension ended (or there was none).
    NoTable,
    /// The first table went live: the disk was created.
    Created { devt: u32 },
    /// The loaded table replaced the active one.
    Swapped,
}

impl Device {
    /// A device with a checked `name`, a (possibly empty) `uuid` and a
    /// free disk index.
    pub(crate) fn new(
        name: &[u8],
        uuid: &[u8],
        index: u32,
        events: Arc<EventCounter>,
    ) -> impl PinInit<Self> {
        let (name_len, uuid_len) = (name.len(), uuid.len());
        let (name, uuid) = (name_field(name), name_field(uuid));
        pin_init!(Device {
            name,
            name_len,
            uuid,
            uuid_len,
            index,
            events,
            flags: AtomicU32::new(0),
            state <- kernel::new_mutex!(
                State {
                    inactive: None,
                    live: None,
                    suspended: false,
                    removed: false,
                },
                "vblk::Device::state"
            ),
        })
    }

    pub(crate) fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }

    pub(crate) fn uuid(&self) -> &[u8] {
        &self.uuid[..self.uuid_len]
    }

    /// The device's name field (NUL-padded), for LIST records.
    pub(crate) fn name_field(&self) -> [u8; NAME_LEN] {
        self.name
    }

    /// `FLAG_ACTIVE_PRESENT | FLAG_INACTIVE_PRESENT | FLAG_SUSPENDED`.
    pub(crate) fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    /// Runs `f` on the state, under the device's mutex; `ENXIO` if the
    /// device was removed meanwhile. Keeps the LIST flags in step.
    pub(crate) fn with_state<R>(
        &self,
        reply: &mut Reply,
        f: impl FnOnce(&mut State, &mut Reply) -> Result<R>,
    ) -> Result<R> {
        let mut state = self.state.lock();
        if state.removed {
            return fail!(
                reply,
                ENXIO,
                "device '{}' was removed",
                super::control::Show(self.name())
            );
        }
        let result = f(&mut state, reply);
        self.flags.store(state.flags(), Ordering::Release);
        result
    }
}

impl State {
    fn flags(&self) -> u32 {
        let mut f = 0;
        if self.live.is_some() {
            f |= FLAG_ACTIVE_PRESENT;
        }
        if self.inactive.is_some() {
            f |= FLAG_INACTIVE_PRESENT;
        }
        if self.suspended {
            f |= FLAG_SUSPENDED;
        }
        f
    }

    /// Whether the device has a disk (was resumed once).
    pub(crate) fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// The active table (or with `inactive` the loaded one), if any.
    pub(crate) fn table(&self, inactive: bool) -> Option<Arc<Table>> {
        if inactive {
            self.inactive.clone()
        } else {
            self.live.as_ref().map(|l| l.queue.table())
        }
    }

    /// Puts `table` in the inactive slot; returns the one it replaces.
    pub(crate) fn load(&mut self, table: Arc<Table>) -> Option<Arc<Table>> {
        self.inactive.replace(table)
    }

    /// Empties the inactive slot; returns what was there.
    pub(crate) fn clear(&mut self) -> Option<Arc<Table>> {
        self.inactive.take()
    }

    /// SUSPEND without RESUME yet.
    pub(crate) fn is_suspended(&self) -> bool {
        self.live.is_some() && self.suspended
    }

    pub(crate) fn has_inactive(&self) -> bool {
        self.inactive.is_some()
    }

    /// Holds I/O: returns once no request is in flight; new ones wait.
    /// Without `noflush`, also flushes every lower device's cache, so what
    /// completed before the suspension is durable. A signal while waiting
    /// for in-flight I/O ends the attempt and leaves the device running.
    pub(crate) fn suspend(&mut self, noflush: bool, reply: &mut Reply) -> Result {
        let Some(live) = &self.live else {
            return fail!(reply, EINVAL, "device is not active (never resumed)");
        };
        if self.suspended {
            return Ok(());
        }
        let table = live.queue.table();
        stop_table(live, &table, noflush, reply)?;
        if !noflush {
            for (i, dev) in table.devices.iter().enumerate() {
                // A mirror leg that fails its flush is marked failed; the
                // device still suspends (dm: only if no leg is left).
                let failed = dev
                    .flush()
                    .err()
                    .filter(|_| !table.flush_failed(i, Status::IO_ERROR).is_ok());
                if let Some(e) = failed {
                    table.resume();
                    live.disk.unquiesce();
                    return fail!(
                        reply,
                        e,
                        "flushing the cache of lower device {} failed: {}; not suspended",
                        dev.name(),
                        Errno(e)
                    );
                }
            }
        }
        self.suspended = true;
        Ok(())
    }

    /// Makes the inactive table active, if there is one, and ends a
    /// suspension. The first resume creates the disk `vblk<index>`; later
    /// ones swap tables while no request is in flight (like dm, resuming a
    /// running device suspends it around the swap), and requests held
    /// meanwhile go to the new table. On failure nothing changed.
    pub(crate) fn resume(&mut self, index: u32, reply: &mut Reply) -> Result<Resumed> {
        // The table that goes live may refuse (crypt without a key).
        let going_live = match (&self.inactive, &self.live) {
            (Some(table), _) => Some(table.clone()),
            (None, Some(live)) if self.suspended => Some(live.queue.table()),
            _ => None,
        };
        if let Some(table) = going_live {
            table.preresume(reply)?;
        }
        let Some(table) = self.inactive.take() else {
            if let (Some(live), true) = (&self.live, self.suspended) {
                live.queue.table().resume();
                live.disk.unquiesce();
                self.suspended = false;
            }
            return Ok(Resumed::NoTable);
        };
        let result = match &self.live {
            Some(live) => swap(live, self.suspended, &table, reply).map(|()| Resumed::Swapped),
            None => create(index, &table, reply).map(|live| {
                let devt = live.disk.devt();
                self.live = Some(live);
                Resumed::Created { devt }
            }),
        };
        match result {
            Ok(r) => {
                self.suspended = false;
                Ok(r)
            }
            Err(e) => {
                self.inactive = Some(table);
                Err(e)
            }
        }
    }

    /// Commits to removal unless the disk is open (`EBUSY`); afterwards
    /// opens of the disk fail.
    pub(crate) fn claim_for_removal(&self, reply: &mut Reply) -> Result {
        let Some(live) = &self.live else {
            return Ok(());
        };
        if live.disk.claim_for_removal().is_err() {
            return fail!(
                reply,
                EBUSY,
                "device is open ({} opener{}: mounted, or in use by a program or another driver)",
                live.disk.openers(),
                if live.disk.openers() == 1 { "" } else { "s" }
            );
        }
        Ok(())
    }

    /// Deletes the disk (after letting held I/O run) and releases the
    /// tables and their lower devices. The device is dead afterwards.
    pub(crate) fn tear_down(&mut self) {
        self.removed = true;
        if let Some(live) = self.live.take() {
            let table = live.queue.table();
            // Removal is decided: an interrupted stop is finished by the
            // targets' drop below.
            let _ = table.presuspend(false);
            if self.suspended {
                live.disk.unquiesce();
            }
            // The disk goes first: deleting it waits for its requests,
            // which use the active table the queue holds.
            drop(live.disk);
            table.postsuspend();
            drop(live.queue);
            drop(table);
        }
        self.suspended = false;
        self.inactive = None;
    }

    /// Fills INFO's device fields of `h`.
    pub(crate) fn fill_info(&self, h: &mut Header) {
        h.dev = self.live.as_ref().map_or(0, |l| u64::from(l.disk.devt()));
        h.open_count = self
            .live
            .as_ref()
            .map_or(0, |l| l.disk.openers().max(0) as u32);
        h.target_count = self
            .live
            .as_ref()
            .map_or(0, |l| l.queue.table().lines.len() as u32);
        h.flags = self.flags();
    }
}

/// Quiesces the disk and waits for its in-flight requests; on a signal
/// the disk runs again and the caller gets `EINTR`.
fn quiesce_and_drain(live: &Live, reply: &mut Reply) -> Result {
    live.disk.quiesce();
    if live.disk.wait_idle().is_err() {
        live.disk.unquiesce();
        return fail!(
            reply,
            EINTR,
            "interrupted while waiting for in-flight I/O (is a lower device suspended?); the device keeps running"
        );
    }
    Ok(())
}

/// Stops the live device's active `table`: its targets' presuspend (held
/// pieces re-dispatched, or with `noflush` requeued), the queue quiesced
/// and drained, their postsuspend. On a signal while draining, the table
/// resumes and the device runs again.
fn stop_table(live: &Live, table: &Table, noflush: bool, reply: &mut Reply) -> Result {
    if table.presuspend(noflush).is_err() {
        table.resume();
        return fail!(
            reply,
            EINTR,
            "interrupted while stopping the targets' background work (is a lower device hung or suspended?); the device keeps running"
        );
    }
    if let Err(e) = quiesce_and_drain(live, reply) {
        table.resume();
        return Err(e);
    }
    table.postsuspend();
    Ok(())
}

/// Replaces the active table of a live device with `table`.
fn swap(live: &Live, suspended: bool, table: &Arc<Table>, reply: &mut Reply) -> Result {
    let old = live.queue.table();
    if !suspended {
        stop_table(live, &old, false, reply)?;
    }
    let (old_block, new_block) = (
        live.disk.logical_block_size(),
        table.limits.logical_block_size(),
    );
    let refuse = if old_block != new_block && live.disk.openers() > 0 {
        fail!(
            reply,
            EBUSY,
            "the new table's logical block size is {new_block} bytes, the device's {old_block}; it cannot change while the device is open"
        )
    } else {
        live.disk.set_limits(&table.limits).map_err(|e| {
            reply.fail(
                e,
                format_args!(
                    "the block layer refused the new table's queue limits: {}",
                    Errno(e)
                ),
            )
        })
    };
    if let Err(e) = refuse {
        if !suspended {
            old.resume();
            live.disk.unquiesce();
        }
        return Err(e);
    }
    table.resume();
    let old = live.queue.swap(table.clone());
    live.disk.set_capacity(table.size);
    live.disk.unquiesce();
    // Nothing in flight used it: its lower devices close here.
    drop(old);
    Ok(())
}

/// Creates the disk for a device's first table.
fn create(index: u32, table: &Arc<Table>, reply: &mut Reply) -> Result<Live> {
    let queue = Arc::pin_init(Queue::new(table.clone()), GFP_KERNEL)
        .map_err(|e| reply.fail(e, format_args!("out of memory creating the disk")))?;
    table.resume();
    let disk = Disk::create(queue.clone(), index, table.size, &table.limits).map_err(|e| {
        let _ = table.presuspend(false);
        table.postsuspend();
        reply.fail(
            e,
            format_args!("cannot create disk vblk{index}: {}", Errno(e)),
        )
    })?;
    Ok(Live { queue, disk })
}
