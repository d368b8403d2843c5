//! vblkctl's library half: the shared ioctl ABI and the control-device
//! client, used by the `vblkctl` binary and the selftest probe.

/// The ioctl ABI, the very same source file the kernel module compiles.
#[path = "../../../rust/vblk/abi.rs"]
pub mod abi;

pub mod control;
