// SPDX-License-Identifier: GPL-2.0
//! `zero`: reads return zeros, writes are swallowed (dm-zero).

use super::{Ctor, Io, Mapped, Target};
use crate::sys::disk::{Op, Status};
use kernel::error::Result;
use kernel::sync::Arc;

pub(crate) struct Zero;

/// Constructor listed in [`super::TYPES`].
pub(super) fn construct(ctor: &mut Ctor<'_>) -> Result<Arc<dyn Target>> {
    super::stateless("zero", Zero, ctor)
}

impl Target for Zero {
    fn map(&self, io: Io<'_>) -> Mapped {
        match io.op() {
            // Readahead of zeros only fills the page cache (dm-zero fails it).
            Op::Read if io.info().flags.readahead() => io.kill(Status::IO_ERROR),
            Op::Read => io.zero_fill(),
            // Writes, discards and write-zeroes are no-ops on a device that
            // is all zeros.
            Op::Write | Op::Flush | Op::Discard | Op::WriteZeroes => io.complete(),
            Op::Other => io.kill(Status::NOT_SUPPORTED),
        }
    }

    fn supports_discard(&self) -> bool {
        true
    }

    fn supports_write_zeroes(&self) -> bool {
        true
    }
}
