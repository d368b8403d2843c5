// SPDX-License-Identifier: GPL-2.0
//! Targets: one file per target, all behind [`Target`].

mod error;
mod zero;

use crate::sys::disk::Op;
use crate::vblk::message::{fail, Reply};
use kernel::error::code::{EINVAL, ENOMEM};
use kernel::error::Result;
use kernel::prelude::*;
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

/// A target type: its table name, version, and constructor.
pub(crate) struct TargetType {
    pub(crate) name: &'static str,
    pub(crate) version: [u32; 3],
    construct: fn(&str, &mut Reply) -> Result<Arc<dyn Target>>,
}

/// Every target type (LOAD looks names up here, TARGETS lists them).
pub(crate) const TYPES: [TargetType; 2] = [
    TargetType {
        name: "zero",
        version: [1, 0, 0],
        construct: zero::construct,
    },
    TargetType {
        name: "error",
        version: [1, 0, 0],
        construct: error::construct,
    },
];

/// Constructs target `name` from its table arguments; returns the type's
/// name (for TABLE) with the target.
pub(crate) fn construct(
    name: &str,
    args: &str,
    reply: &mut Reply,
) -> Result<(&'static str, Arc<dyn Target>)> {
    let Some(t) = TYPES.iter().find(|t| t.name == name) else {
        return fail!(
            reply,
            EINVAL,
            "unknown target '{name}' (see 'vblkctl targets')"
        );
    };
    (t.construct)(args, reply).map(|target| (t.name, target))
}

/// Constructs a target that takes no arguments and has no state (dm's
/// zero and error).
fn stateless<T: Target + 'static>(
    name: &str,
    target: T,
    args: &str,
    reply: &mut Reply,
) -> Result<Arc<dyn Target>> {
    if !args.is_empty() {
        return fail!(
            reply,
            EINVAL,
            "target '{name}' takes no arguments, got '{args}'"
        );
    }
    match Arc::new(target, GFP_KERNEL) {
        Ok(t) => Ok(t),
        Err(_) => fail!(reply, ENOMEM, "out of memory constructing {name}"),
    }
}
