//! vblkctl's library half: the shared ioctl ABI and the control-device
//! client, used by the `vblkctl` binary and the selftest probe.

/// The ioctl ABI, the very same source file the kernel module compiles.
#[path = "../../../rust/vblk/abi.rs"]
pub mod abi;

/// Table text parsing and layout checks, shared with the module.
#[path = "../../../rust/vblk/table.rs"]
pub mod table;

pub mod control;
