// SPDX-License-Identifier: GPL-2.0
//! `zero`: reads return zeros, writes are swallowed (dm-zero).

use super::{no_args, no_memory, Action, Target};
use crate::sys::disk::Op;
use crate::vblk::message::Reply;
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::Arc;

pub(crate) struct Zero;

impl Zero {
    pub(crate) fn construct(args: &str, reply: &mut Reply) -> Result<Arc<dyn Target>> {
        no_args("zero", args, reply)?;
        match Arc::new(Zero, GFP_KERNEL) {
            Ok(t) => Ok(t),
            Err(_) => no_memory(reply, "zero"),
        }
    }
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
