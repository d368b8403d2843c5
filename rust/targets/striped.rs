// SPDX-License-Identifier: GPL-2.0
//! `striped <#stripes> <chunk sectors> (<dev> <offset>)+`: RAID0 with
//! dm-striped's syntax and placement, byte for byte.
//!
//! Data is split at chunk boundaries and each chunk goes to its stripe;
//! a request covering several chunks reaches all its stripes at once.
//! Discards and write-zeroes go to each stripe as one range (its share).
//! A lower error fails only the I/O that touched that stripe; the stripe's
//! error count shows it as `D` in status and raises an event.

use super::striped_layout::{self, StripeLayout};
use super::{write_device, Ctor, EndIo, Io, Mapped, Target};
use crate::sys::bdev::BlockDevice;
use crate::sys::disk::{Op, RqInfo, Status};
use crate::sys::event::EventCounter;
use crate::sys::limits::QueueLimits;
use crate::vblk::message::{fail, Reply};
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::error::code::{EINVAL, ENOMEM};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::Arc;

/// Errors after which a stripe stops raising events (dm's
/// `DM_IO_ERROR_THRESHOLD`): a dead disk should not flood waiters.
const EVENT_THRESHOLD: u32 = 15;

struct Stripe {
    dev: Arc<BlockDevice>,
    /// First sector of the stripe's area on `dev`.
    offset: u64,
    /// Lower I/O errors seen (readahead and unsupported ops excepted).
    errors: AtomicU32,
}

pub(crate) struct Striped {
    layout: StripeLayout,
    stripes: KVec<Stripe>,
    events: Arc<EventCounter>,
}

/// Constructor listed in [`super::TYPES`].
pub(super) fn construct(ctor: &mut Ctor<'_>) -> Result<Arc<dyn Target>> {
    let (layout, pairs) = match striped_layout::parse(ctor.args, ctor.length) {
        Ok(parsed) => parsed,
        Err(e) => return fail!(ctor.reply, EINVAL, "{e}"),
    };
    let mut stripes = KVec::new();
    let mut texts = KVec::new();
    for (i, (text, offset)) in pairs.enumerate() {
        crate::sys::cond_resched();
        let dev = ctor.open_device(text)?;
        let block = u64::from(dev.logical_block_size() >> 9).max(1);
        if u64::from(layout.chunk) % block != 0 {
            return fail!(
                ctor.reply,
                EINVAL,
                "striped: chunk size {} sectors is not a multiple of stripe {i}'s ({text}) {}-byte logical block",
                layout.chunk,
                block * 512
            );
        }
        let stripe = Stripe {
            dev,
            offset,
            errors: AtomicU32::new(0),
        };
        if stripes.push(stripe, GFP_KERNEL).is_err() || texts.push(text, GFP_KERNEL).is_err() {
            return fail!(ctor.reply, ENOMEM, "out of memory constructing striped");
        }
    }
    check_overlaps(&stripes, &texts, layout.width, ctor.reply)?;
    let target = Striped {
        layout,
        stripes,
        events: ctor.events.clone(),
    };
    match Arc::new(target, GFP_KERNEL) {
        Ok(t) => Ok(t),
        Err(_) => fail!(ctor.reply, ENOMEM, "out of memory constructing striped"),
    }
}

/// Refuses two stripes on one device that share sectors: stripes sorted by
/// (device, offset), each compared with the next (O(n log n); a table can
/// hold ~90 000 stripes). Offsets are any u64: the ends saturate (the
/// device-size check comes after construction).
fn check_overlaps(stripes: &[Stripe], texts: &[&str], width: u64, reply: &mut Reply) -> Result {
    let mut order = KVec::with_capacity(stripes.len(), GFP_KERNEL)
        .map_err(|_| reply.fail(ENOMEM, format_args!("out of memory constructing striped")))?;
    for (i, s) in stripes.iter().enumerate() {
        // Cannot fail: the capacity is there.
        let _ = order.push((s.dev.devt(), s.offset, i), GFP_KERNEL);
    }
    order.sort_unstable();
    for pair in order.windows(2) {
        let ((devt, a, i), (devt2, b, j)) = (pair[0], pair[1]);
        if devt == devt2 && a.saturating_add(width) > b {
            let (i, j) = (i.min(j), i.max(j));
            return fail!(
                reply,
                EINVAL,
                "striped: stripes {i} and {j} overlap on device '{}' (each uses {width} sectors)",
                texts[j]
            );
        }
    }
    Ok(())
}

impl Target for Striped {
    fn map(&self, mut io: Io<'_>) -> Mapped {
        match io.op() {
            Op::Read | Op::Write => {
                for p in self.layout.pieces(io.offset(), io.len()) {
                    let s = &self.stripes[p.stripe as usize];
                    io.remap_part(p.skip, p.len, &s.dev, s.offset + p.sector, p.stripe);
                }
                io.remapped()
            }
            Op::Discard | Op::WriteZeroes => {
                let (start, end) = (io.offset(), io.offset() + io.len());
                for (i, s) in self.stripes.iter().enumerate() {
                    if let Some((b, e)) = self.layout.range_on(start, end, i as u32) {
                        io.remap_range(&s.dev, s.offset + b, e - b, i as u32);
                    }
                }
                io.remapped()
            }
            // Flushes go to every device from the framework, not here.
            Op::Flush => io.complete(),
            Op::Other => io.kill(Status::NOT_SUPPORTED),
        }
    }

    /// The tag is the stripe. Readahead failures are not the stripe's
    /// fault.
    fn end_io(&self, info: &RqInfo, stripe: u32, status: Status) -> EndIo {
        if status.is_ok() || status == Status::NOT_SUPPORTED || info.flags.readahead() {
            return EndIo::Done(status);
        }
        if let Some(s) = self.stripes.get(stripe as usize) {
            if s.errors.fetch_add(1, Ordering::Relaxed) + 1 < EVENT_THRESHOLD {
                self.events.bump();
            }
        }
        EndIo::Done(status)
    }

    fn devices(&self, f: &mut dyn FnMut(&BlockDevice, u64, u64)) {
        for s in self.stripes.iter() {
            f(&s.dev, s.offset, self.layout.width);
        }
    }

    fn limits(&self, limits: &mut QueueLimits) {
        // dm-striped's hints: chunk-sized minimum I/O, a full row optimal.
        let io_min = self.layout.chunk << 9;
        let io_opt = io_min.checked_mul(self.layout.stripes).unwrap_or(0);
        limits.set_io_hints(self.layout.chunk, io_min, io_opt);
    }

    fn table_args(&self, out: &mut dyn Write) -> core::fmt::Result {
        write!(out, "{} {}", self.layout.stripes, self.layout.chunk)?;
        for s in self.stripes.iter() {
            out.write_char(' ')?;
            write_device(out, &s.dev)?;
            write!(out, " {}", s.offset)?;
        }
        Ok(())
    }

    /// dm's form: `<#stripes> <dev>... 1 <A|D per stripe>`.
    fn status(&self, out: &mut dyn Write) -> core::fmt::Result {
        write!(out, "{}", self.layout.stripes)?;
        for s in self.stripes.iter() {
            out.write_char(' ')?;
            write_device(out, &s.dev)?;
        }
        out.write_str(" 1 ")?;
        for s in self.stripes.iter() {
            let failed = s.errors.load(Ordering::Relaxed) > 0;
            out.write_char(if failed { 'D' } else { 'A' })?;
        }
        Ok(())
    }
}
