// SPDX-License-Identifier: GPL-2.0
//! `error`: every I/O fails (dm-error).

use super::{no_args, no_memory, Action, Target};
use crate::sys::disk::Op;
use crate::vblk::message::Reply;
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::Arc;

pub(crate) struct ErrorTarget;

impl ErrorTarget {
    pub(crate) fn construct(args: &str, reply: &mut Reply) -> Result<Arc<dyn Target>> {
        no_args("error", args, reply)?;
        match Arc::new(ErrorTarget, GFP_KERNEL) {
            Ok(t) => Ok(t),
            Err(_) => no_memory(reply, "error"),
        }
    }
}

impl Target for ErrorTarget {
    fn map(&self, _op: Op) -> Action {
        Action::Fail
    }
}
