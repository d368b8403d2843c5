// SPDX-License-Identifier: GPL-2.0
//! `error`: every I/O fails (dm-error).

use super::{Ctor, Io, Mapped, Target};
use crate::sys::disk::Status;
use kernel::error::Result;
use kernel::sync::Arc;

pub(crate) struct ErrorTarget;

/// Constructor listed in [`super::TYPES`].
pub(super) fn construct(ctor: &mut Ctor<'_>) -> Result<Arc<dyn Target>> {
    super::stateless("error", ErrorTarget, ctor)
}

impl Target for ErrorTarget {
    fn map(&self, io: Io<'_>) -> Mapped {
        io.kill(Status::IO_ERROR)
    }

    /// Like dm-error: discards reach the target and fail with EIO rather
    /// than being refused as unsupported.
    fn supports_discard(&self) -> bool {
        true
    }
}
