// SPDX-License-Identifier: GPL-2.0
//! The I/O path: a request is split at line boundaries into pieces, and
//! each piece goes to its line's target as an [`Io`].
//!
//! The request keeps the table it was mapped with (an `Arc`) until it
//! ends, so lower bios always complete against the targets that sent
//! them. Tables are swapped only while the queue is quiesced and idle.

use super::layout;
use super::map::Table;
use crate::sys::bdev::BlockDevice;
use crate::sys::disk::{Op, Pending, QueueHandler, Request, RqFlags, Status};
use kernel::prelude::*;
use kernel::sync::{Arc, SpinLock};

/// Tag of the cache flushes the framework sends itself (no line has it).
const FLUSH_TAG: u64 = u64::MAX;

/// The I/O side of a live device: the active table.
#[pin_data]
pub(crate) struct Queue {
    #[pin]
    active: SpinLock<Arc<Table>>,
}

impl Queue {
    pub(crate) fn new(table: Arc<Table>) -> impl PinInit<Self> {
        pin_init!(Queue {
            active <- kernel::new_spinlock!(table, "vblk::Queue::active"),
        })
    }

    /// The active table.
    pub(crate) fn table(&self) -> Arc<Table> {
        self.active.lock().clone()
    }

    /// Makes `table` active and returns the old one. Only while the disk
    /// is quiesced and idle, so no request uses the old table.
    pub(crate) fn swap(&self, table: Arc<Table>) -> Arc<Table> {
        core::mem::replace(&mut *self.active.lock(), table)
    }
}

impl QueueHandler for Queue {
    type RqData = Arc<Table>;

    fn queue_rq(&self, rq: Request<Self>) {
        match rq.op() {
            Op::Other => rq.end(Status::NOT_SUPPORTED),
            Op::Flush => {
                // An empty flush: every lower device's cache, once.
                let rq = rq.dispatch(self.table());
                for dev in rq.data().devices.iter() {
                    rq.flush_to(dev, FLUSH_TAG);
                }
            }
            _ => map_request(rq.dispatch(self.table())),
        }
    }

    fn lower_done(table: &Arc<Table>, tag: u64, status: Status) -> Status {
        if tag == FLUSH_TAG {
            return status;
        }
        match table.lines.get((tag >> 32) as usize) {
            Some(line) => line.target.end_io(tag as u32, status),
            None => status,
        }
    }
}

/// Hands each piece of a data request to its line's target.
fn map_request(rq: Pending<Queue>) {
    let (op, flags) = (rq.op(), rq.flags());
    let (start, len) = (rq.sector(), u64::from(rq.sectors()));
    let table = rq.data();
    let mut mapped = 0;
    for piece in layout::pieces(&table.starts, table.size, start, len) {
        let mut io = Io {
            rq: &rq,
            op,
            flags,
            skip: piece.skip,
            offset: piece.offset,
            len: piece.len,
            line: piece.line as u32,
        };
        table.lines[piece.line].target.map(&mut io);
        mapped += piece.len;
    }
    // Past the end of the table (a request queued before it shrank).
    if mapped < len {
        rq.fail(Status::IO_ERROR);
    }
}

/// The part of a request that falls in one line, as its target sees it.
pub(crate) struct Io<'a> {
    rq: &'a Pending<Queue>,
    op: Op,
    flags: RqFlags,
    /// Sectors from the request's start to the piece's.
    skip: u64,
    /// Sectors from the line's start to the piece's.
    offset: u64,
    len: u64,
    line: u32,
}

impl Io<'_> {
    pub(crate) fn op(&self) -> Op {
        self.op
    }

    pub(crate) fn flags(&self) -> RqFlags {
        self.flags
    }

    /// First sector of the piece, relative to the start of the line.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Sends the whole piece to `dev` at `sector`.
    pub(crate) fn remap(&mut self, dev: &BlockDevice, sector: u64) {
        self.remap_part(0, self.len, dev, sector, 0);
    }

    /// Sends sectors `[skip, skip + len)` of the piece to `dev` at
    /// `sector`; the completion reaches [`crate::targets::Target::end_io`]
    /// with `tag`. The range is clamped to the piece.
    pub(crate) fn remap_part(
        &mut self,
        skip: u64,
        len: u64,
        dev: &BlockDevice,
        sector: u64,
        tag: u32,
    ) {
        let len = len.min(self.len.saturating_sub(skip));
        if len > 0 {
            let tag = (u64::from(self.line) << 32) | u64::from(tag);
            self.rq.clone_to(self.skip + skip, len, dev, sector, tag);
        }
    }

    /// Fills the piece's data with zeros (for reads).
    pub(crate) fn zero_fill(&mut self) {
        self.rq.zero_range(self.skip, self.len);
    }

    /// Fails the request (the first failure's status is reported).
    pub(crate) fn fail(&mut self, status: Status) {
        self.rq.fail(status);
    }
}
