// SPDX-License-Identifier: GPL-2.0
//! The target interface: what a target type implements ([`Target`]), what
//! its constructor gets ([`Ctor`]) and how the framework finds it
//! ([`TargetType`]). The framework names no target: the module hands it
//! the list of types (`crate::targets::TYPES`) when it loads, so the
//! layers read sys <- vblk <- targets.

use super::args::{parse_device, ArgError, DevSpec};
use super::io::{Done, EndIo, Io, Mapped};
use super::message::{fail, Reply};
use super::peers::Peers;
use crate::sys::bdev::BlockDevice;
use crate::sys::disk::{Op, RqInfo, Status};
use crate::sys::event::EventCounter;
use crate::sys::limits::QueueLimits;
use core::fmt::Write;
use kernel::error::code::{EINVAL, ENOMEM};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::Arc;

/// A target type: maps the sectors of one table line.
pub(crate) trait Target: Send + Sync {
    /// Maps one piece of a request that falls in this line (process
    /// context; may sleep only to allocate, unless
    /// [`Target::needs_worker`] says so). The piece is consumed: only its
    /// own methods make the [`Mapped`] verdict (sent on, held, completed,
    /// requeued or killed), so no piece is left unanswered, and a read
    /// whose data the target did not cover fails instead of returning
    /// what the pages held before.
    fn map(&self, io: Io<'_>) -> Mapped;

    /// Whether an empty FLUSH reaches [`Target::map`] as a piece of no
    /// sectors (`Op::Flush`), besides the cache flush the framework sends
    /// every lower device: a target with state of its own (a log, a
    /// metadata cache) commits it there, and the FLUSH completes only once
    /// the piece did (held until the commit is durable).
    fn wants_flush(&self) -> bool {
        false
    }

    /// A lower bio this target submitted with `tag` for a piece of a
    /// request asking `info` (its operation and flags: no need to encode
    /// them in the tag) completed with `status` (any context, hard irq
    /// included: must not sleep). Says what that means for the request:
    /// done with a status, or retried by [`Target::finish`].
    fn end_io(&self, _info: &RqInfo, _tag: u32, status: Status) -> EndIo {
        EndIo::Done(status)
    }

    /// Sees a piece of a request whose lower I/O completed, if this piece
    /// asked for it with [`Io::finish_later`] or a retry (process context,
    /// on the device's workqueue; may sleep). The request ends after every
    /// such piece was finished.
    fn finish(&self, _done: &mut Done<'_>) {}

    /// Calls `f(device, start, sectors)` for every lower device area the
    /// target uses. The framework checks the areas against the devices'
    /// sizes and block sizes, stacks their limits, flushes the devices
    /// and lists them as dependencies.
    fn devices(&self, _f: &mut dyn FnMut(&BlockDevice, u64, u64)) {}

    /// Imposes the target's limits beyond its devices' own (e.g. I/O size
    /// hints). The devices' limits are stacked by the framework.
    fn limits(&self, _limits: &mut QueueLimits) {}

    /// A cache flush of lower device `dev` (one the table uses) failed with
    /// `status` (any context, hard irq included: must not sleep). Returns
    /// what that means for this line: by default the failure if the line
    /// stores data on `dev`, else OK. A redundant target (mirror) marks
    /// the device failed and says OK while it has others.
    fn flush_failed(&self, dev: &BlockDevice, status: Status) -> Status {
        let mut uses = false;
        self.devices(&mut |d, _, _| uses |= d.devt() == dev.devt());
        if uses {
            status
        } else {
            Status::OK
        }
    }

    /// Whether requests of `op` must be mapped from the device's
    /// workqueue, where [`Target::map`] may wait for I/O it submits
    /// itself (a log write before the data); `false`: mapped where blk-mq
    /// dispatches, inside the submitter, where it must not.
    fn needs_worker(&self, _op: Op) -> bool {
        false
    }

    /// The table goes live (first resume, a swap, or a resume after a
    /// suspend), before any request is mapped with it (process context).
    /// Background work (resync) starts here.
    fn resume(&self) {}

    /// The table is about to stop serving I/O (suspend, swap, removal),
    /// before the queue drains: stop background work, and let go of every
    /// piece the target holds ([`crate::vblk::io::HeldIo`]): re-dispatch
    /// it, or with `noflush` requeue it (it waits in the queue and is
    /// mapped again, by whatever table is live then, after the resume);
    /// the suspend waits for the rest. May be interrupted by a signal
    /// (`EINTR`): the suspend is then abandoned and the table resumed; at
    /// removal the error is ignored (the target's drop must then finish
    /// the job).
    fn presuspend(&self, _noflush: bool) -> Result {
        Ok(())
    }

    /// No request of the table is in flight any more (suspend, swap,
    /// removal): commit state (a final log write).
    fn postsuspend(&self) {}

    /// Whether DISCARD may be sent to this line: by default, if it has
    /// lower devices and all of them take discards.
    fn supports_discard(&self) -> bool {
        self.all_devices(BlockDevice::supports_discard)
    }

    /// Whether WRITE_ZEROES may be sent to this line (default as discard).
    fn supports_write_zeroes(&self) -> bool {
        self.all_devices(BlockDevice::supports_write_zeroes)
    }

    /// Writes the line's arguments as TABLE shows them (devices as
    /// `major:minor`, like dmsetup).
    fn table_args(&self, _out: &mut dyn Write) -> core::fmt::Result {
        Ok(())
    }

    /// [`Target::table_args`] with secrets (keys) shown, for TABLE with
    /// `FLAG_SHOW_SECRETS` (`vblkctl table --showkeys`).
    fn table_args_with_secrets(&self, out: &mut dyn Write) -> core::fmt::Result {
        self.table_args(out)
    }

    /// Whether the line may go live now (RESUME); refusing leaves the
    /// device as it was (suspended, or without the new table).
    fn preresume(&self, _name: &str, _reply: &mut Reply) -> Result {
        Ok(())
    }

    /// Writes the line's live status for STATUS (nothing by default).
    fn status(&self, _out: &mut dyn Write) -> core::fmt::Result {
        Ok(())
    }

    /// Writes the line's counters for STATUS with `FLAG_STATUS_DETAIL`
    /// (`key=value` words; nothing by default).
    fn status_detail(&self, _out: &mut dyn Write) -> core::fmt::Result {
        Ok(())
    }

    /// Handles `message` (text after the sector) sent to this line;
    /// `name` is the target's table name, for messages; `suspended`, whether
    /// the device is suspended.
    fn message(&self, name: &str, message: &str, _suspended: bool, reply: &mut Reply) -> Result {
        fail!(
            reply,
            EINVAL,
            "target '{name}' accepts no messages (got '{}' ...)",
            super::message::first_word(message)
        )
    }

    /// Whether the target has lower devices and `test` holds for each.
    fn all_devices(&self, test: fn(&BlockDevice) -> bool) -> bool {
        let (mut any, mut all) = (false, true);
        self.devices(&mut |dev, _, _| {
            any = true;
            all &= test(dev);
        });
        any && all
    }
}

/// What a target's constructor gets: the line's length and arguments, a
/// way to open lower devices, and the reply for error messages.
pub(crate) struct Ctor<'a> {
    /// The line's length in sectors.
    pub(crate) length: u64,
    /// The line's arguments (after the target name).
    pub(crate) args: &'a str,
    /// Where to say what is wrong.
    pub(crate) reply: &'a mut Reply,
    /// Every lower device the table opened so far (shared between lines).
    pub(crate) devices: &'a mut KVec<Arc<BlockDevice>>,
    /// The device's event counter: a target bumps it when something
    /// happens that `vblkctl wait` should see (a stripe failed, ...).
    pub(crate) events: &'a Arc<EventCounter>,
    /// The index of the device the table is for (the N of vblkN).
    pub(crate) device: u32,
    /// State shared with other devices' targets ([`Peers`]).
    pub(crate) peers: &'a Arc<Peers>,
    /// Bytes of target state the table's lines charged so far.
    pub(crate) state_bytes: &'a mut u64,
}

/// Most memory the targets of one table may hold (region maps, page
/// reserves): a LOAD is refused before it allocates more.
pub(crate) const MAX_TABLE_STATE: u64 = 64 << 20;

impl Ctor<'_> {
    /// Charges `bytes` of state (`what`, for the message) to the table,
    /// before the target allocates them; `ENOMEM` past
    /// [`MAX_TABLE_STATE`].
    pub(crate) fn charge(&mut self, bytes: u64, what: &str) -> Result {
        let total = self.state_bytes.saturating_add(bytes);
        if total > MAX_TABLE_STATE {
            return fail!(
                self.reply,
                ENOMEM,
                "{what} needs {} KiB; with the lines before it the table's targets would hold {} KiB, at most {} MiB per table",
                bytes.div_ceil(1024),
                total.div_ceil(1024),
                MAX_TABLE_STATE >> 20
            );
        }
        *self.state_bytes = total;
        Ok(())
    }

    /// Fails with `EINVAL` and the argument error's message.
    pub(crate) fn bad_arg<T>(&mut self, e: ArgError<'_>) -> Result<T> {
        fail!(self.reply, EINVAL, "{e}")
    }

    /// Opens the lower device named by `text` (`major:minor` or a path),
    /// or returns the one the table already opened.
    pub(crate) fn open_device(&mut self, text: &str) -> Result<Arc<BlockDevice>> {
        let spec = match parse_device(text) {
            Ok(spec) => spec,
            Err(e) => return self.bad_arg(e),
        };
        let opened = match spec {
            DevSpec::Number { major, minor } => {
                // Named by number and already open for this table: no
                // second open (a striped line may name one device 10^5
                // times).
                let devt = DevSpec::devt(major, minor);
                if let Some(known) = self.devices.iter().find(|d| d.devt() == devt) {
                    return Ok(known.clone());
                }
                BlockDevice::open_dev(devt)
            }
            DevSpec::Path(path) => {
                let Ok(path) = CString::try_from_fmt(format_args!("{path}")) else {
                    return fail!(self.reply, ENOMEM, "out of memory opening '{text}'");
                };
                BlockDevice::open_path(&path)
            }
        };
        let dev = match opened {
            Ok(dev) => dev,
            Err(e) => {
                return fail!(
                    self.reply,
                    e,
                    "cannot open device '{text}': {}",
                    super::message::Errno(e)
                )
            }
        };
        // One open per device and table; this second open is closed here.
        if let Some(known) = self.devices.iter().find(|d| d.devt() == dev.devt()) {
            return Ok(known.clone());
        }
        let dev = Arc::new(dev, GFP_KERNEL)
            .map_err(|_| self.reply.fail(ENOMEM, format_args!("out of memory")))?;
        self.devices
            .push(dev.clone(), GFP_KERNEL)
            .map_err(|_| self.reply.fail(ENOMEM, format_args!("out of memory")))?;
        Ok(dev)
    }
}

/// A target type: its table name, version, and constructor.
pub(crate) struct TargetType {
    pub(crate) name: &'static str,
    pub(crate) version: [u32; 3],
    pub(crate) construct: Constructor,
}

/// Builds a line's target from its arguments.
pub(crate) type Constructor = fn(&mut Ctor<'_>) -> Result<Arc<dyn Target>>;

/// Constructs target `name`, one of `types`; returns the type's name (for
/// TABLE) with the target.
pub(crate) fn construct(
    types: &[TargetType],
    name: &str,
    ctor: &mut Ctor<'_>,
) -> Result<(&'static str, Arc<dyn Target>)> {
    let Some(t) = types.iter().find(|t| t.name == name) else {
        return fail!(
            ctor.reply,
            EINVAL,
            "unknown target '{name}' (see 'vblkctl targets')"
        );
    };
    (t.construct)(ctor).map(|target| (t.name, target))
}

/// Writes a lower device as TABLE shows it: `major:minor`.
pub(crate) fn write_device(out: &mut dyn Write, dev: &BlockDevice) -> core::fmt::Result {
    let devt = dev.devt();
    write!(out, "{}:{}", devt >> 20, devt & ((1 << 20) - 1))
}
