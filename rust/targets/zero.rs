// SPDX-License-Identifier: GPL-2.0
//! `zero`: reads return zeros, writes are swallowed (dm-zero).

use super::{Action, Target};
use crate::sys::disk::Op;
use crate::vblk::message::Reply;
use kernel::error::Result;
use kernel::sync::Arc;

pub(crate) struct Zero;

/// Constructor listed in [`super::TYPES`].
pub(super) fn construct(args: &str, reply: &mut Reply) -> Result<Arc<dyn Target>> {
    super::stateless("zero", Zero, args, reply)
}

impl Target for Zero {
    fn map(&self, op: Op) -> Action {
        match op {
            Op::Read => Action::ZeroFill,
            // Writes, flushes, discards and write-zeroes are no-ops on a
            // device that is all zeros.
            Op::Write | Op::Flush | Op::Discard | Op::WriteZeroes => Action::Complete,
            Op::Other => Action::Fail,
        }
    }
}
