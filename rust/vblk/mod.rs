// SPDX-License-Identifier: GPL-2.0
//! The vblk framework: control plane, devices, tables and the I/O path.
//! Safe code only; kernel access goes through `crate::sys`.

// Shared with vblkctl, which uses items the module does not need.
#[allow(unreachable_pub, dead_code)]
pub(crate) mod abi;
#[allow(unreachable_pub, dead_code)]
pub(crate) mod args;
// Shared with vblkctl (host tests); mirror's log uses all of it.
#[allow(unreachable_pub, dead_code)]
pub(crate) mod bitmap;
pub(crate) mod bufio;
pub(crate) mod control;
pub(crate) mod copy;
pub(crate) mod device;
pub(crate) mod io;
#[allow(unreachable_pub, dead_code)]
pub(crate) mod layout;
pub(crate) mod map;
pub(crate) mod message;
pub(crate) mod peers;
// Shared with vblkctl (host tests of the block format).
#[allow(unreachable_pub, dead_code)]
pub(crate) mod metadata_block;
pub(crate) mod region;
pub(crate) mod slots;
pub(crate) mod target;
// Shared with vblkctl, which uses items the module does not need.
#[allow(unreachable_pub, dead_code)]
pub(crate) mod table;
