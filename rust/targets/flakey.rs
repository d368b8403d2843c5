// SPDX-License-Identifier: GPL-2.0
//! `flakey <dev> <offset> <up> <down> [<#feature args> <features>...]`:
//! linear onto `dev`, except that for `down` seconds out of every
//! `up + down` it fails, drops or corrupts I/O (dm-flakey). A fault
//! injector for testing what sits above it (mirror legs, filesystems).
//!
//! Read corruption happens after the lower read, in process context
//! ([`Io::finish_later`]); write corruption writes a changed copy from
//! bounce pages ([`Io::write_copy`]), never touching the caller's pages.

use super::flakey_args::{self, Direction, FlakeyArgs, PROBABILITY_BASE};
use super::{write_device, Ctor, Done, Io, Mapped, Target};
use crate::sys::bdev::BlockDevice;
use crate::sys::bounce::BouncePool;
use crate::sys::disk::{Op, RqInfo, Status};
use crate::sys::{random_u64, uptime_ms};
use crate::vblk::message::fail;
use core::fmt::Write;
use kernel::error::code::{EINVAL, ENOMEM};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::Arc;

pub(crate) struct Flakey {
    dev: Arc<BlockDevice>,
    /// The parsed line (its device text is not kept: `dev` says it).
    args: FlakeyArgs<'static>,
    length: u64,
    /// When the table was loaded: the up/down cycle starts here.
    start_ms: u64,
    /// Pages for corrupted copies of writes, if writes may be corrupted.
    pool: Option<BouncePool>,
}

/// Constructor listed in [`super::TYPES`].
pub(super) fn construct(ctor: &mut Ctor<'_>) -> Result<Arc<dyn Target>> {
    let parsed = match flakey_args::parse(ctor.args) {
        Ok(parsed) => parsed,
        Err(e) => return fail!(ctor.reply, EINVAL, "{e}"),
    };
    let dev = ctor.open_device(parsed.dev)?;
    let corrupts_writes = parsed.random_write_corrupt > 0
        || matches!(parsed.corrupt, Some(c) if c.direction == Direction::Write);
    let pool = if corrupts_writes {
        ctor.charge(BouncePool::BYTES, "flakey: the page reserve")?;
        match BouncePool::new() {
            Ok(pool) => Some(pool),
            Err(_) => return fail!(ctor.reply, ENOMEM, "out of memory for flakey's page pool"),
        }
    } else {
        None
    };
    let target = Flakey {
        dev,
        args: FlakeyArgs { dev: "", ..parsed },
        length: ctor.length,
        start_ms: uptime_ms(),
        pool,
    };
    match Arc::new(target, GFP_KERNEL) {
        Ok(t) => Ok(t),
        Err(_) => fail!(ctor.reply, ENOMEM, "out of memory constructing flakey"),
    }
}

/// Whether `probability` (out of [`PROBABILITY_BASE`]) comes up now.
fn chance(probability: u32) -> bool {
    probability > 0 && random_u64() % u64::from(PROBABILITY_BASE) < u64::from(probability)
}

impl Flakey {
    fn is_down(&self) -> bool {
        self.args
            .is_down(uptime_ms().saturating_sub(self.start_ms) / 1000)
    }

    /// The fixed byte change for this request's data in `direction`: its
    /// 0-based offset in the piece and the value, if the flags match.
    fn fixed_change(&self, info: &RqInfo, direction: Direction) -> Option<(u64, u8)> {
        let c = self.args.corrupt?;
        (c.direction == direction && info.raw_flags & c.flags == c.flags)
            .then(|| (u64::from(c.byte) - 1, c.value))
    }

    /// A random byte change for a piece of `len` sectors, if chance says so.
    fn random_change(probability: u32, len: u64) -> Option<(u64, u8)> {
        chance(probability).then(|| (random_u64() % (len * 512), random_u64() as u8))
    }
}

impl Target for Flakey {
    /// Corrupted writes take bounce pages (see [`Io::write_copy`]).
    fn needs_worker(&self, op: Op) -> bool {
        op == Op::Write && self.pool.is_some()
    }

    fn map(&self, mut io: Io<'_>) -> Mapped {
        let sector = self.args.offset + io.offset();
        if !self.is_down() {
            return io.remap(&self.dev, sector);
        }
        let info = *io.info();
        match info.op {
            Op::Read => {
                if self.args.error_reads {
                    return io.kill(Status::IO_ERROR);
                }
                if self.fixed_change(&info, Direction::Read).is_some()
                    || self.args.random_read_corrupt > 0
                {
                    io.finish_later();
                }
                io.remap(&self.dev, sector)
            }
            Op::Write | Op::Discard | Op::WriteZeroes => {
                if self.args.drop_writes {
                    // Completes successfully without reaching the device.
                    return io.complete();
                }
                if self.args.error_writes {
                    return io.kill(Status::IO_ERROR);
                }
                let changes = [
                    self.fixed_change(&info, Direction::Write),
                    Self::random_change(self.args.random_write_corrupt, io.len()),
                ];
                match &self.pool {
                    Some(pool) if info.op == Op::Write && changes.iter().any(Option::is_some) => {
                        io.write_copy(pool, &self.dev, sector, 0, &mut |offset, bytes| {
                            apply(&changes, offset, bytes)
                        });
                        io.remapped()
                    }
                    _ => io.remap(&self.dev, sector),
                }
            }
            // Flushes go to every device from the framework, not here.
            Op::Flush => io.complete(),
            Op::Other => io.kill(Status::NOT_SUPPORTED),
        }
    }

    fn finish(&self, done: &mut Done<'_>) {
        let info = *done.info();
        if info.op != Op::Read || !done.status().is_ok() || !self.is_down() {
            return;
        }
        let changes = [
            self.fixed_change(&info, Direction::Read),
            Self::random_change(self.args.random_read_corrupt, done.len()),
        ];
        for (offset, value) in changes.into_iter().flatten() {
            done.write(offset, &[value]);
        }
    }

    fn devices(&self, f: &mut dyn FnMut(&BlockDevice, u64, u64)) {
        f(&self.dev, self.args.offset, self.length);
    }

    fn table_args(&self, out: &mut dyn Write) -> core::fmt::Result {
        write_device(out, &self.dev)?;
        out.write_char(' ')?;
        self.args.write_table_tail(out)
    }
}

/// Applies byte changes (offset in the piece, value) that fall into
/// `bytes`, which hold the piece's bytes from `offset` on.
fn apply(changes: &[Option<(u64, u8)>], offset: u64, bytes: &mut [u8]) {
    for &(at, value) in changes.iter().flatten() {
        if let Some(b) = at
            .checked_sub(offset)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| bytes.get_mut(i))
        {
            *b = value;
        }
    }
}
