// SPDX-License-Identifier: GPL-2.0
//! A constructed table: its lines and targets, the lower devices they
//! opened, and the queue limits stacked from them.

use super::message::{fail, Reply};
use super::peers::Peers;
use super::table;
use super::target::{self, Ctor, Target, TargetType};
use crate::sys::bdev::BlockDevice;
use crate::sys::disk::{Op, Status};
use crate::sys::event::EventCounter;
use crate::sys::limits::QueueLimits;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::error::code::{EINVAL, ENOMEM};
use kernel::prelude::*;
use kernel::sync::Arc;

/// What a table is built with: the target types, the registry, and the
/// device it is for.
pub(crate) struct TableEnv<'a> {
    pub(crate) types: &'a [TargetType],
    pub(crate) peers: &'a Arc<Peers>,
    /// The device's index (the N of vblkN).
    pub(crate) device: u32,
    pub(crate) events: &'a Arc<EventCounter>,
}

/// One line of a loaded table.
pub(crate) struct Line {
    /// Line number in the loaded text (for messages).
    pub(crate) number: usize,
    pub(crate) start: u64,
    pub(crate) length: u64,
    /// The target's table name.
    pub(crate) target_name: &'static str,
    pub(crate) target: Arc<dyn Target>,
}

/// A loaded table: lines contiguous from sector 0, checked against the
/// lower devices, with the limits the device will have.
pub(crate) struct Table {
    pub(crate) lines: KVec<Line>,
    /// Start sector of each line, for splitting requests.
    pub(crate) starts: KVec<u64>,
    /// Size in sectors.
    pub(crate) size: u64,
    /// Every distinct lower device, in table order: FLUSH goes to each,
    /// DEPS lists them.
    pub(crate) devices: KVec<Arc<BlockDevice>>,
    pub(crate) limits: QueueLimits,
    /// Some line maps some requests from the disk's workqueue
    /// ([`Target::needs_worker`]); the queue asks only then.
    pub(crate) uses_worker: bool,
    /// Some line wants empty flushes ([`Target::wants_flush`]).
    pub(crate) uses_flush: bool,
    /// Target state charged to [`TARGET_STATE`] (released on drop).
    state_bytes: u64,
}

/// Target state held by every table of every device (loaded or live):
/// the module's memory is bounded by [`MAX_TARGET_STATE`] on top of the
/// per-table [`super::target::MAX_TABLE_STATE`].
static TARGET_STATE: AtomicU64 = AtomicU64::new(0);
/// Most target state all tables together may hold.
pub(crate) const MAX_TARGET_STATE: u64 = 512 << 20;

impl Drop for Table {
    fn drop(&mut self) {
        TARGET_STATE.fetch_sub(self.state_bytes, Ordering::AcqRel);
    }
}

fn oom<T>(reply: &mut Reply) -> Result<T> {
    fail!(reply, ENOMEM, "out of memory loading the table")
}

impl Table {
    /// Parses `text`, constructs every line's target (opening the lower
    /// devices) and checks the result; nothing outside the new table
    /// changes, and a failure releases everything it opened.
    pub(crate) fn build(env: &TableEnv<'_>, text: &str, reply: &mut Reply) -> Result<Arc<Table>> {
        let (count, size) = match table::check(text) {
            Ok(v) => v,
            Err(e) => return fail!(reply, EINVAL, "{e}"),
        };
        let Ok(mut lines) = KVec::with_capacity(count, GFP_KERNEL) else {
            return oom(reply);
        };
        let Ok(mut starts) = KVec::with_capacity(count, GFP_KERNEL) else {
            return oom(reply);
        };
        let mut devices = KVec::new();
        let mut state_bytes = 0;
        for line in table::lines(text) {
            crate::sys::cond_resched();
            // `check` accepted the text, so every line parses.
            let Ok(line) = line else {
                return fail!(reply, EINVAL, "table changed while parsing");
            };
            let mut ctor = Ctor {
                length: line.length,
                args: line.args,
                reply: &mut *reply,
                devices: &mut devices,
                events: env.events,
                device: env.device,
                peers: env.peers,
                state_bytes: &mut state_bytes,
            };
            let (target_name, target) = target::construct(env.types, line.target, &mut ctor)
                .inspect_err(|_| reply.prefix(format_args!("line {}: ", line.number)))?;
            check_areas(&*target, line.number, reply)?;
            if lines
                .push(
                    Line {
                        number: line.number,
                        start: line.start,
                        length: line.length,
                        target_name,
                        target,
                    },
                    GFP_KERNEL,
                )
                .is_err()
                || starts.push(line.start, GFP_KERNEL).is_err()
            {
                return oom(reply);
            }
        }
        let limits = stack_limits(&lines, reply)?;
        check_block_size(&lines, limits.logical_block_size(), reply)?;
        let uses_worker = lines.iter().any(|l| {
            [Op::Read, Op::Write, Op::Discard, Op::WriteZeroes]
                .into_iter()
                .any(|op| l.target.needs_worker(op))
        });
        let uses_flush = lines.iter().any(|l| l.target.wants_flush());
        let held = TARGET_STATE.fetch_add(state_bytes, Ordering::AcqRel);
        if held.saturating_add(state_bytes) > MAX_TARGET_STATE {
            TARGET_STATE.fetch_sub(state_bytes, Ordering::AcqRel);
            return fail!(
                reply,
                ENOMEM,
                "the table's targets need {} KiB, and the tables loaded already hold {} KiB: at most {} MiB in all",
                state_bytes.div_ceil(1024),
                held.div_ceil(1024),
                MAX_TARGET_STATE >> 20
            );
        }
        Arc::new(
            Table {
                lines,
                starts,
                size,
                devices,
                limits,
                uses_worker,
                uses_flush,
                state_bytes,
            },
            GFP_KERNEL,
        )
        // A table that could not be allocated was dropped, releasing its
        // charge.
        .or_else(|_| oom(reply))
    }

    /// Writes the table (`status == false`, secrets such as keys shown only
    /// if `extra`) or its status (with `extra`, each target's counters
    /// after ` | `) as text lines.
    pub(crate) fn write_text(
        &self,
        status: bool,
        extra: bool,
        out: &mut dyn Write,
    ) -> core::fmt::Result {
        for line in self.lines.iter() {
            write!(out, "{} {} {}", line.start, line.length, line.target_name)?;
            let mut first = true;
            let mut sep = SpaceFirst {
                out: &mut *out,
                first: &mut first,
            };
            if status {
                line.target.status(&mut sep)?;
                if extra {
                    let mut detail = Detail {
                        out: &mut *out,
                        first: true,
                    };
                    line.target.status_detail(&mut detail)?;
                }
            } else if extra {
                line.target.table_args_with_secrets(&mut sep)?;
            } else {
                line.target.table_args(&mut sep)?;
            }
            out.write_char('\n')?;
        }
        Ok(())
    }

    /// Asks every line whether the table may go live (a crypt line
    /// without a key refuses).
    pub(crate) fn preresume(&self, reply: &mut Reply) -> Result {
        for line in self.lines.iter() {
            line.target.preresume(line.target_name, reply)?;
        }
        Ok(())
    }

    /// The table goes live: every line's [`Target::resume`].
    pub(crate) fn resume(&self) {
        for line in self.lines.iter() {
            line.target.resume();
        }
    }

    /// The table stops serving I/O: every line's [`Target::presuspend`].
    /// Every line is asked even after one refused (`EINTR`); the caller
    /// then [`Self::resume`]s the table.
    pub(crate) fn presuspend(&self, noflush: bool) -> Result {
        let mut result = Ok(());
        for line in self.lines.iter() {
            if let Err(e) = line.target.presuspend(noflush) {
                result = Err(e);
            }
        }
        result
    }

    /// The table's I/O drained: every line's [`Target::postsuspend`].
    pub(crate) fn postsuspend(&self) {
        for line in self.lines.iter() {
            line.target.postsuspend();
        }
    }

    /// What a failed cache flush of `self.devices[dev]` means for the
    /// table: the first line that keeps data there without redundancy
    /// makes it a failure ([`Target::flush_failed`]).
    pub(crate) fn flush_failed(&self, dev: usize, status: Status) -> Status {
        let Some(dev) = self.devices.get(dev) else {
            return status;
        };
        self.lines
            .iter()
            .map(|line| line.target.flush_failed(dev, status))
            .find(|s| !s.is_ok())
            .unwrap_or(Status::OK)
    }

    /// The line holding `sector`, if any.
    pub(crate) fn line_at(&self, sector: u64) -> Option<&Line> {
        if sector >= self.size {
            return None;
        }
        let i = self.starts.partition_point(|&s| s <= sector);
        self.lines.get(i.checked_sub(1)?)
    }

    /// dev_t of every distinct lower device.
    pub(crate) fn devts(&self) -> impl Iterator<Item = u32> + '_ {
        self.devices.iter().map(|d| d.devt())
    }
}

/// Checks every lower device area a target uses: inside the device, and
/// aligned to the device's logical block size.
fn check_areas(target: &dyn Target, line: usize, reply: &mut Reply) -> Result {
    let mut result = Ok(());
    target.devices(&mut |dev, start, len| {
        if result.is_err() {
            return;
        }
        let size = dev.sectors();
        let block = u64::from(dev.logical_block_size() >> 9).max(1);
        let devt = dev.devt();
        let (major, minor) = (devt >> 20, devt & 0xfffff);
        if start.checked_add(len).map_or(true, |end| end > size) {
            result = fail!(
                reply,
                EINVAL,
                "line {line}: device {major}:{minor} ({}) has {size} sectors, too small for sectors {start}..{} of it",
                dev.name(),
                start.saturating_add(len)
            );
        } else if start % block != 0 || len % block != 0 {
            result = fail!(
                reply,
                EINVAL,
                "line {line}: sectors {start}..{} of device {major}:{minor} ({}) are not aligned to its {}-byte logical blocks",
                start + len,
                dev.name(),
                block * 512
            );
        }
    });
    result
}

/// The table's limits: each target's devices stacked at their offsets,
/// the targets' own hints, and discard / write-zeroes only where every
/// line supports them (as device-mapper decides).
fn stack_limits(lines: &[Line], reply: &mut Reply) -> Result<QueueLimits> {
    let Ok(mut limits) = QueueLimits::new() else {
        return oom(reply);
    };
    let (mut discard, mut write_zeroes) = (true, true);
    for line in lines {
        line.target.devices(&mut |dev, start, _| {
            // A misaligned stack is legal (dm only warns); nothing to do.
            let _ = limits.stack(dev, start);
        });
        line.target.limits(&mut limits);
        discard &= line.target.supports_discard();
        write_zeroes &= line.target.supports_write_zeroes();
    }
    limits.set_discard(discard);
    limits.set_write_zeroes(write_zeroes);
    Ok(limits)
}

/// Every line must start and end on a logical block of the table (the
/// largest logical block size of its devices).
fn check_block_size(lines: &[Line], block_bytes: u32, reply: &mut Reply) -> Result {
    let block = u64::from(block_bytes >> 9).max(1);
    for line in lines {
        for (what, value) in [("start", line.start), ("length", line.length)] {
            if value % block != 0 {
                return fail!(
                    reply,
                    EINVAL,
                    "line {}: {what} {value} is not a multiple of the table's {block_bytes}-byte logical block size ({block} sectors)",
                    line.number
                );
            }
        }
    }
    Ok(())
}

/// Puts ` | ` before a target's status detail, if it writes any.
struct Detail<'a> {
    out: &'a mut dyn Write,
    first: bool,
}

impl Write for Detail<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        if self.first && !s.is_empty() {
            self.first = false;
            self.out.write_str(" | ")?;
        }
        self.out.write_str(s)
    }
}

/// Puts one space before a target's text, if it writes any.
struct SpaceFirst<'a> {
    out: &'a mut dyn Write,
    first: &'a mut bool,
}

impl Write for SpaceFirst<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        if *self.first && !s.is_empty() {
            *self.first = false;
            self.out.write_char(' ')?;
        }
        self.out.write_str(s)
    }
}
