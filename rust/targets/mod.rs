// SPDX-License-Identifier: GPL-2.0
//! Targets: one file per target, all behind the framework's [`Target`].
//!
//! A target maps the sectors of one table line. It is constructed from the
//! line's arguments ([`Ctor`]), is handed each piece of a request that
//! falls in its line ([`Io`]), and reports its lower devices, limits,
//! status and table arguments. Targets are safe code: lower devices,
//! requests and limits are the framework's and the abstraction layer's
//! types.

mod crypt;
/// The key wiping helper, for the argument parsers (which the host crate
/// also compiles, with its own stand-in).
use crate::sys::wipe;
// Pure argument parsing and IVs, shared with vblkctl's host tests (which
// use a few accessors the module does not).
#[allow(unreachable_pub, dead_code)]
mod crypt_args;
mod error;
mod flakey;
// Pure argument parsing, shared with vblkctl's host tests.
#[allow(unreachable_pub)]
mod flakey_args;
mod linear;
mod mirror;
// Pure argument parsing and status text, shared with vblkctl's host tests.
#[allow(unreachable_pub, dead_code)]
mod mirror_args;
// Pure disk log format and region math, shared with vblkctl's host tests.
#[allow(unreachable_pub, dead_code)]
mod mirror_log;
mod raid5;
// Pure layout math, argument parsing and write planning, shared with
// vblkctl's host tests.
#[allow(unreachable_pub, dead_code)]
mod raid5_layout;
mod snapshot;
// Pure exception store format and argument parsing, shared with vblkctl's
// host tests.
#[allow(unreachable_pub, dead_code)]
mod snapshot_store;
mod striped;
// Pure placement math, shared with vblkctl's host tests.
#[allow(unreachable_pub)]
mod striped_layout;
mod thin;
// Pure dm-thin metadata (format, btrees, space maps, pool operations),
// shared with vblkctl's host tests (which run them against thin_check).
#[allow(unreachable_pub, dead_code)]
mod thin_btree;
#[allow(unreachable_pub, dead_code)]
mod thin_format;
#[allow(unreachable_pub, dead_code)]
pub(crate) mod thin_metadata;
mod thin_pool;
#[allow(unreachable_pub, dead_code)]
mod thin_sm;
mod zero;

use crate::vblk::message::fail;
use crate::vblk::target::TargetType;
use kernel::error::code::{EINVAL, ENOMEM};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::Arc;

pub(crate) use crate::vblk::io::{Done, EndIo, Io, Mapped};
pub(crate) use crate::vblk::target::{write_device, Ctor, Target};

/// A target type at version 1.0.0.
const fn v1(name: &'static str, construct: crate::vblk::target::Constructor) -> TargetType {
    TargetType {
        name,
        version: [1, 0, 0],
        construct,
    }
}

/// Every target type: the module hands the list to the framework (LOAD
/// looks names up in it, TARGETS lists it).
pub(crate) const TYPES: [TargetType; 13] = [
    v1("linear", linear::construct),
    v1("zero", zero::construct),
    v1("error", error::construct),
    v1("striped", striped::construct),
    v1("flakey", flakey::construct),
    v1("crypt", crypt::construct),
    v1("mirror", mirror::construct),
    v1("snapshot-origin", snapshot::construct_origin),
    v1("snapshot", snapshot::construct_snapshot),
    v1("snapshot-merge", snapshot::construct_merge),
    v1("raid", raid5::construct),
    v1("thin-pool", thin_pool::construct),
    v1("thin", thin::construct),
];

/// Constructs a target that takes no arguments and has no state (dm's
/// zero and error).
fn stateless<T: Target + 'static>(
    name: &str,
    target: T,
    ctor: &mut Ctor<'_>,
) -> Result<Arc<dyn Target>> {
    if !ctor.args.is_empty() {
        return fail!(
            ctor.reply,
            EINVAL,
            "target '{name}' takes no arguments, got '{}' ...",
            crate::vblk::message::first_word(ctor.args)
        );
    }
    match Arc::new(target, GFP_KERNEL) {
        Ok(t) => Ok(t),
        Err(_) => fail!(ctor.reply, ENOMEM, "out of memory constructing {name}"),
    }
}
