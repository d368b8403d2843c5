// SPDX-License-Identifier: GPL-2.0
//! `linear <dev> <offset>`: the line's sectors map one to one onto `dev`
//! from sector `offset` on (dm-linear).

use super::{write_device, Ctor, Io, Mapped, Target};
use crate::sys::bdev::BlockDevice;
use crate::vblk::args::{exact_args, parse_sector};
use crate::vblk::message::fail;
use core::fmt::Write;
use kernel::error::code::ENOMEM;
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::Arc;

pub(crate) struct Linear {
    dev: Arc<BlockDevice>,
    /// First sector on `dev`.
    offset: u64,
    /// The line's length.
    length: u64,
}

/// Constructor listed in [`super::TYPES`].
pub(super) fn construct(ctor: &mut Ctor<'_>) -> Result<Arc<dyn Target>> {
    let [dev, offset] = match exact_args::<2>("linear", "<dev> <offset>", ctor.args) {
        Ok(words) => words,
        Err(e) => return ctor.bad_arg(e),
    };
    let offset = match parse_sector("offset", offset) {
        Ok(n) => n,
        Err(e) => return ctor.bad_arg(e),
    };
    let dev = ctor.open_device(dev)?;
    let target = Linear {
        dev,
        offset,
        length: ctor.length,
    };
    match Arc::new(target, GFP_KERNEL) {
        Ok(t) => Ok(t),
        Err(_) => fail!(ctor.reply, ENOMEM, "out of memory constructing linear"),
    }
}

impl Target for Linear {
    fn map(&self, io: Io<'_>) -> Mapped {
        let sector = self.offset + io.offset();
        io.remap(&self.dev, sector)
    }

    fn devices(&self, f: &mut dyn FnMut(&BlockDevice, u64, u64)) {
        f(&self.dev, self.offset, self.length);
    }

    fn table_args(&self, out: &mut dyn Write) -> core::fmt::Result {
        write_device(out, &self.dev)?;
        write!(out, " {}", self.offset)
    }
}
