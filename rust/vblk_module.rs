// SPDX-License-Identifier: GPL-2.0
//! vblk: composable virtual block devices.
//!
//! Crate root of `vblk.ko`. The crate has three layers:
//! - `sys`: the abstraction layer over the C kernel, the only `unsafe` code;
//! - `vblk`: the framework (control ioctls, devices, tables, I/O path);
//! - `targets`: one file per target, behind the framework's one trait;
//!   the module hands the framework their list.

// `pin_init!` of a state struct with many fields (mirror's) nests deeper
// than the default 128.
#![recursion_limit = "256"]

use kernel::prelude::*;
use kernel::sync::Arc;

mod sys;
mod targets;
mod vblk;

module! {
    type: VblkModule,
    name: "vblk",
    author: "vblk developers",
    description: "Composable virtual block devices",
    license: "GPL",
}

/// Module state: everything here is torn down, in reverse order, on unload.
struct VblkModule {
    _control: sys::control::ControlDevice<vblk::control::Control>,
}

impl kernel::Module for VblkModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // The metadata block checksum is the kernel's crc32c behind the
        // format the host tests check (against dm's own tools): the
        // standard check value and a sealed block, on every load, prove
        // the binding in the test kernel too.
        let mut block = [0u8; 512];
        let sealed = vblk::metadata_block::seal(
            &mut block,
            vblk::metadata_block::SALT_BTREE,
            7,
            sys::crc32c,
        );
        if vblk::metadata_block::checksum(sys::crc32c, b"123456789") != 0xE306_9283
            || sealed.is_err()
            || block[0..4] != vblk::metadata_block::LOAD_CHECK_SUM.to_le_bytes()
        {
            pr_err!("the kernel's crc32c does not give CRC-32C's check values\n");
            return Err(kernel::error::code::EINVAL);
        }
        let peers = Arc::pin_init(vblk::peers::Peers::new(), GFP_KERNEL)?;
        let control = Arc::pin_init(
            vblk::control::Control::new(&targets::TYPES, peers),
            GFP_KERNEL,
        )?;
        let control = sys::control::ControlDevice::register(control)?;
        pr_info!(
            "loaded, control ABI {}.{}.{}\n",
            vblk::abi::ABI_MAJOR,
            vblk::abi::ABI_MINOR,
            vblk::abi::ABI_PATCH
        );
        Ok(VblkModule { _control: control })
    }
}

impl Drop for VblkModule {
    fn drop(&mut self) {
        pr_info!("unloading\n");
    }
}
