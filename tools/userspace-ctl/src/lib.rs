//! vblkctl's library half: the shared ioctl ABI and the control-device
//! client, used by the `vblkctl` binary and the selftest probe.
//!
//! The `#[path]` modules are the very source files the kernel module
//! compiles (pure `core`); including them here both lets vblkctl check
//! input the way the kernel will and runs their unit tests on the host.

/// The ioctl ABI.
#[path = "../../../rust/vblk/abi.rs"]
pub mod abi;

/// Table text parsing and layout checks.
#[path = "../../../rust/vblk/table.rs"]
pub mod table;

/// Target argument parsing (devices, sectors, counts).
#[path = "../../../rust/vblk/args.rs"]
pub mod args;

/// Splitting requests at table line boundaries.
#[path = "../../../rust/vblk/layout.rs"]
pub mod layout;

pub mod control;

/// Region bitmaps and region math (host tests).
#[path = "../../../rust/vblk/bitmap.rs"]
pub mod bitmap;

/// The checksummed metadata block header (host tests, CRC-32C reference).
#[path = "../../../rust/vblk/metadata_block.rs"]
pub mod metadata_block;

/// The framework's modules that targets' pure files use, at the path
/// they have in the kernel crate (`crate::vblk::...`).
pub mod vblk {
    pub use super::bitmap;
    pub use super::metadata_block;
}

/// MESSAGE payloads (keys from a file or standard input).
pub mod message;

/// The flakey target's arguments (host tests of the kernel's parser).
#[path = "../../../rust/targets/flakey_args.rs"]
pub mod flakey_args;

/// Zeroes `bytes` so the compiler cannot drop the stores as dead: the
/// host stand-in for the kernel's `sys::wipe` (`memzero_explicit`), which
/// `crypt_args` calls as `super::wipe`.
pub fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, exclusively borrowed byte.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// The crypt target's arguments and IV generation (host tests of the
/// kernel's parser).
#[path = "../../../rust/targets/crypt_args.rs"]
pub mod crypt_args;

/// The striped target's arguments and placement (host tests, model test).
#[path = "../../../rust/targets/striped_layout.rs"]
pub mod striped_layout;

/// The mirror target's arguments and status (host tests of the kernel's
/// parser).
#[path = "../../../rust/targets/mirror_args.rs"]
pub mod mirror_args;

/// dm's mirror disk log format (host tests).
#[path = "../../../rust/targets/mirror_log.rs"]
pub mod mirror_log;

/// RAID-4/5 arguments and md's layouts (host tests; the raid5 target of
/// issue 16 maps with it).
#[path = "../../../rust/targets/raid5_layout.rs"]
pub mod raid5_layout;

pub mod status;

/// dm-thin's metadata format (host tests, against thin_restore's output).
#[path = "../../../rust/targets/thin_format.rs"]
pub mod thin_format;

/// Copy-on-write changes of dm-thin's btrees (host tests, checked with
/// thin_check).
#[path = "../../../rust/targets/thin_btree.rs"]
pub mod thin_btree;

/// The targets' pure modules that others use, at the path they have in
/// the kernel crate (`crate::targets::...`).
pub mod targets {
    pub use super::thin_btree;
    pub use super::thin_format;
    pub use super::thin_sm;
}

/// A thin pool's metadata operations (host tests, checked with
/// thin_check and dm-thin's own tools).
#[path = "../../../rust/targets/thin_metadata.rs"]
pub mod thin_metadata;

/// A thin pool's metadata space map (host tests, checked with thin_check).
#[path = "../../../rust/targets/thin_sm.rs"]
pub mod thin_sm;

/// dm-snapshot's persistent exception store format (host tests).
#[path = "../../../rust/targets/snapshot_store.rs"]
pub mod snapshot_store;
