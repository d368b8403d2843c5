// SPDX-License-Identifier: GPL-2.0
//! Targets: one file per target, all behind [`Target`].

mod error;
mod zero;

use crate::sys::disk::Op;
use crate::vblk::message::{fail, Reply};
use kernel::error::code::{EINVAL, ENOMEM};
use kernel::error::Result;
use kernel::sync::Arc;

/// What a target does with its part of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Complete it with zeros as data (reads).
    ZeroFill,
    /// Complete it successfully as it is.
    Complete,
    /// Fail it with an I/O error.
    Fail,
}

/// A target type: maps the sectors of one table line.
pub(crate) trait Target: Send + Sync {
    /// Decides what happens to an `op` on this line's sectors.
    fn map(&self, op: Op) -> Action;

    /// Handles `message` (text after the sector) sent to this line;
    /// `name` is the target's table name, for messages.
    fn message(&self, name: &str, message: &str, reply: &mut Reply) -> Result {
        fail!(
            reply,
            EINVAL,
            "target '{name}' accepts no messages (got '{message}')"
        )
    }

    /// Live state for STATUS (nothing for stateless targets).
    fn status(&self, _out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        Ok(())
    }
}

/// Every target type: name and version (TARGETS lists them).
pub(crate) const KNOWN: [(&str, [u32; 3]); 2] = [("zero", [1, 0, 0]), ("error", [1, 0, 0])];

/// Constructs the target `name` from its table arguments.
pub(crate) fn construct(name: &str, args: &str, reply: &mut Reply) -> Result<Arc<dyn Target>> {
    let target: Arc<dyn Target> = match name {
        "zero" => zero::Zero::construct(args, reply)?,
        "error" => error::ErrorTarget::construct(args, reply)?,
        _ => {
            return fail!(
                reply,
                EINVAL,
                "unknown target '{name}' (known: zero, error)"
            )
        }
    };
    Ok(target)
}

/// Allocation failure while constructing a target, with a message.
fn no_memory<T>(reply: &mut Reply, what: &str) -> Result<T> {
    fail!(reply, ENOMEM, "out of memory constructing {what}")
}

/// Refuses arguments for targets that take none (dm's zero and error).
fn no_args(name: &str, args: &str, reply: &mut Reply) -> Result {
    if args.is_empty() {
        Ok(())
    } else {
        fail!(
            reply,
            EINVAL,
            "target '{name}' takes no arguments, got '{args}'"
        )
    }
}
