// SPDX-License-Identifier: GPL-2.0
//! `error`: every I/O fails (dm-error).

use super::{Action, Target};
use crate::sys::disk::Op;
use crate::vblk::message::Reply;
use kernel::error::Result;
use kernel::sync::Arc;

pub(crate) struct ErrorTarget;

/// Constructor listed in [`super::TYPES`].
pub(super) fn construct(args: &str, reply: &mut Reply) -> Result<Arc<dyn Target>> {
    super::stateless("error", ErrorTarget, args, reply)
}

impl Target for ErrorTarget {
    fn map(&self, _op: Op) -> Action {
        Action::Fail
    }
}
