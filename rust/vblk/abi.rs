// SPDX-License-Identifier: GPL-2.0
//! The control ioctl ABI, shared by the module and `vblkctl`.
//!
//! This file is compiled twice: into `vblk.ko` (no_std) and into the
//! userspace tool (`#[path]`-included), so it may use `core` only. Every
//! struct is `#[repr(C)]` with explicit padding so its layout is the same in
//! both, and tests at the bottom pin sizes, offsets and ioctl numbers.
//!
//! Every ioctl takes a pointer to a buffer that starts with a [`Header`].
//! The kernel always writes the header back: its own ABI version, and on
//! failure the errno and a message saying what was wrong. A failing ioctl
//! thus returns `-1`/errno *and* leaves an explanation in `header.message`.

/// ioctl "type" byte of vblk (device-mapper uses 0xfd; 0xba is unassigned in
/// Documentation/userspace-api/ioctl/ioctl-number.rst).
pub const MAGIC: u8 = 0xba;

/// Incompatible changes bump the major; the module refuses other majors.
pub const ABI_MAJOR: u32 = 1;
/// Compatible additions (new commands, new flags) bump the minor.
pub const ABI_MINOR: u32 = 4;
/// Fixes with no interface change bump the patch level.
pub const ABI_PATCH: u32 = 0;

/// Bytes reserved for a device name, NUL included.
pub const NAME_LEN: usize = 128;
/// Bytes reserved for the kernel's error message, NUL included.
pub const MESSAGE_LEN: usize = 256;

/// Bytes reserved for a device UUID, NUL included.
pub const UUID_LEN: usize = 128;

/// Out (INFO, LIST records): the device has an active table (and a disk).
pub const FLAG_ACTIVE_PRESENT: u32 = 1 << 0;
/// Out (INFO, LIST records): a loaded table waits for RESUME.
pub const FLAG_INACTIVE_PRESENT: u32 = 1 << 1;

/// Out (INFO, LIST records): the device is suspended.
pub const FLAG_SUSPENDED: u32 = 1 << 2;
/// In (SUSPEND): do not flush lower devices' caches while suspending.
pub const FLAG_NOFLUSH: u32 = 1 << 3;

/// In (TABLE, STATUS, DEPS): report the inactive table instead of the active one.
pub const FLAG_QUERY_INACTIVE: u32 = 1 << 4;

/// In (TABLE): show secrets (crypt keys) instead of masking them, like
/// `dmsetup table --showkeys`. Since ABI 1.3.
pub const FLAG_SHOW_SECRETS: u32 = 1 << 5;

/// In (STATUS): after a line's device-mapper status, targets with
/// counters append ` | ` and `key=value` words (mirror: sync progress in
/// sectors, per-leg reads and writes). Without it, the status is exactly
/// dm's. Since ABI 1.4.
pub const FLAG_STATUS_DETAIL: u32 = 1 << 6;

/// Out (LIST, TABLE, STATUS, TARGETS, DEPS): the payload area was too small; `data_size` now holds the
/// size needed and nothing was written. Retry with a larger buffer.
pub const FLAG_BUFFER_FULL: u32 = 1 << 31;

/// The fixed start of every ioctl buffer. Fields a command does not use
/// are ignored on input and left as they were on output.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    /// In: the caller's ABI version. Out: the module's.
    pub abi_major: u32,
    /// See [`Header::abi_major`].
    pub abi_minor: u32,
    /// See [`Header::abi_major`].
    pub abi_patch: u32,
    /// Total size of the caller's buffer in bytes, header included.
    pub data_size: u32,
    /// Offset of the command's payload from the start of the header.
    pub data_offset: u32,
    /// Command-specific flags.
    pub flags: u32,
    /// Out: 0 on success, else the (positive) errno the ioctl failed with.
    pub errno: u32,
    /// A device's event counter (in: for waiting on it; out: its value).
    pub event_nr: u32,
    /// Out: how many times the device is open.
    pub open_count: u32,
    /// Out: number of lines in the device's table.
    pub target_count: u32,
    /// Out: the device's dev_t (`major << 20 | minor`, the kernel's encoding).
    pub dev: u64,
    /// Must be zero.
    pub reserved: u64,
    /// NUL-terminated device name, where the command names a device.
    pub name: [u8; NAME_LEN],
    /// NUL-terminated device UUID (optional, set at create).
    pub uuid: [u8; UUID_LEN],
    /// Out: NUL-terminated explanation of a failure (empty on success).
    pub message: [u8; MESSAGE_LEN],
}

impl Header {
    /// A header for a caller of this ABI version with an empty payload.
    pub const fn new() -> Self {
        Header {
            abi_major: ABI_MAJOR,
            abi_minor: ABI_MINOR,
            abi_patch: ABI_PATCH,
            data_size: core::mem::size_of::<Header>() as u32,
            data_offset: core::mem::size_of::<Header>() as u32,
            flags: 0,
            errno: 0,
            event_nr: 0,
            open_count: 0,
            target_count: 0,
            dev: 0,
            reserved: 0,
            name: [0; NAME_LEN],
            uuid: [0; UUID_LEN],
            message: [0; MESSAGE_LEN],
        }
    }

    /// The kernel's message as text (up to the first NUL, lossy on bad UTF-8).
    pub fn message_str(&self) -> &str {
        c_str(&self.message)
    }
}

impl Default for Header {
    fn default() -> Self {
        Self::new()
    }
}

/// The text of a NUL-terminated fixed-size field (up to the first NUL; the
/// longest valid UTF-8 prefix if the bytes are not UTF-8).
pub fn c_str(field: &[u8]) -> &str {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    match core::str::from_utf8(&field[..end]) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&field[..e.valid_up_to()]).unwrap_or(""),
    }
}

/// The control commands; the discriminant is the ioctl "nr" byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Command {
    /// Report the module's ABI version in the header. Never refused for a
    /// version mismatch, so a tool can always say what it talks to.
    Version = 0,
    /// Create a device named `name` (optional `uuid`), with no table.
    Create = 1,
    /// Remove the device named `name`.
    Remove = 2,
    /// List devices: the payload gets a [`ListReply`] and that many
    /// [`DeviceRecord`]s (or [`FLAG_BUFFER_FULL`]).
    List = 3,
    /// Fill the header's device fields for the device named `name`.
    Info = 4,
    /// Load the payload (table text) into the inactive slot of `name`.
    Load = 5,
    /// Make the inactive table active (creating the disk on first resume)
    /// and end a suspension.
    Resume = 6,
    /// Hold I/O: in-flight requests finish, new ones wait (never fail).
    Suspend = 7,
    /// The table as text lines `start length target args` (payload, NUL
    /// terminated; [`FLAG_BUFFER_FULL`] if it does not fit).
    Table = 8,
    /// Per-line status text `start length target status` (as TABLE).
    Status = 9,
    /// The targets the module knows, one `name major.minor.patch` per line.
    Targets = 10,
    /// Sleep until the device's event counter differs from `event_nr`;
    /// answers with the current counter.
    Wait = 11,
    /// Send the payload text `<sector> <message...>` to the target of the
    /// active table line holding that sector.
    Message = 12,
    /// Drop the table waiting in the inactive slot of `name`.
    Clear = 13,
    /// The lower devices of the active table (with
    /// [`FLAG_QUERY_INACTIVE`], of the loaded one): the payload gets a
    /// [`DepsReply`] and that many dev_t values as `u64`
    /// ([`FLAG_BUFFER_FULL`] if it does not fit).
    Deps = 14,
}

impl Command {
    /// Every command, in nr order.
    pub const ALL: [Command; 15] = [
        Command::Version,
        Command::Create,
        Command::Remove,
        Command::List,
        Command::Info,
        Command::Load,
        Command::Resume,
        Command::Suspend,
        Command::Table,
        Command::Status,
        Command::Targets,
        Command::Wait,
        Command::Message,
        Command::Clear,
        Command::Deps,
    ];

    /// The full ioctl request number: `_IOWR(MAGIC, nr, Header)`.
    pub const fn ioctl(self) -> u32 {
        iowr(MAGIC, self as u8, core::mem::size_of::<Header>())
    }

    /// The command an ioctl request number stands for, if it is one of ours
    /// (right magic, direction and size).
    pub fn from_ioctl(request: u32) -> Option<Command> {
        Self::ALL.into_iter().find(|c| c.ioctl() == request)
    }
}

/// Start of a LIST reply's payload.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ListReply {
    /// Number of [`DeviceRecord`]s that follow.
    pub count: u32,
    /// Zero.
    pub reserved: u32,
}

/// Start of a DEPS reply's payload; `count` u64 dev_t values follow.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct DepsReply {
    /// Number of dev_t values that follow.
    pub count: u32,
    /// Zero.
    pub reserved: u32,
}

/// One device in a LIST reply.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DeviceRecord {
    /// dev_t of the device's disk, 0 while it has none.
    pub dev: u64,
    /// The device's event counter.
    pub event_nr: u32,
    /// `FLAG_ACTIVE_PRESENT` / `FLAG_INACTIVE_PRESENT` / `FLAG_SUSPENDED`.
    pub flags: u32,
    /// NUL-terminated name.
    pub name: [u8; NAME_LEN],
}

/// Why a device name or UUID is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Empty.
    Empty,
    /// No NUL within the field.
    Unterminated,
    /// Longer than the field allows (its size less the NUL).
    TooLong,
    /// `.` or `..`.
    Reserved,
    /// Contains `/`, whitespace, a control character or a non-ASCII byte.
    BadCharacter,
}

impl core::fmt::Display for NameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            NameError::Empty => "is empty",
            NameError::Unterminated => "is not NUL-terminated",
            NameError::TooLong => "is longer than 127 bytes",
            NameError::Reserved => "may not be '.' or '..'",
            NameError::BadCharacter => "may contain only printable ASCII other than '/' and spaces",
        })
    }
}

/// Checks a name or UUID as text (it becomes `/dev/vblk/<name>`): 1 to
/// 127 bytes of printable ASCII without `/` or spaces, not `.` or `..`.
pub fn check_name(name: &[u8]) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() >= NAME_LEN {
        return Err(NameError::TooLong);
    }
    if name == b"." || name == b".." {
        return Err(NameError::Reserved);
    }
    if !name.iter().all(|&b| b.is_ascii_graphic() && b != b'/') {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

/// The bytes of a NUL-terminated name field, checked with [`check_name`].
pub fn name_in(field: &[u8; NAME_LEN]) -> Result<&[u8], NameError> {
    let end = field
        .iter()
        .position(|&b| b == 0)
        .ok_or(NameError::Unterminated)?;
    check_name(&field[..end])?;
    Ok(&field[..end])
}

/// Copies `name` into a NUL-padded field (`name` must pass [`check_name`]).
pub fn name_field(name: &[u8]) -> [u8; NAME_LEN] {
    let mut field = [0; NAME_LEN];
    let n = name.len().min(NAME_LEN - 1);
    field[..n].copy_from_slice(&name[..n]);
    field
}

// Linux's generic ioctl number encoding (include/uapi/asm-generic/ioctl.h),
// used by x86 and most architectures.
const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOWR(ty, nr, size)`: data flows both ways.
pub const fn iowr(ty: u8, nr: u8, size: usize) -> u32 {
    assert!(size < (1 << IOC_SIZEBITS));
    ((IOC_READ | IOC_WRITE) << IOC_DIRSHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn header_layout_is_pinned() {
        assert_eq!(size_of::<Header>(), 568);
        assert_eq!(offset_of!(Header, data_size), 12);
        assert_eq!(offset_of!(Header, errno), 24);
        assert_eq!(offset_of!(Header, event_nr), 28);
        assert_eq!(offset_of!(Header, dev), 40);
        assert_eq!(offset_of!(Header, reserved), 48);
        assert_eq!(offset_of!(Header, name), 56);
        assert_eq!(offset_of!(Header, uuid), 184);
        assert_eq!(offset_of!(Header, message), 312);
    }

    #[test]
    fn ioctl_numbers_match_the_c_macros() {
        // _IOWR(0xba, 0, 568) computed by hand: dir 3 << 30 | 568 << 16 | 0xba << 8 | 0.
        assert_eq!(Command::Version.ioctl(), 0xc238_ba00);
        assert_eq!(iowr(0xfd, 0, 312), 0xc138_fd00); // DM_VERSION, struct dm_ioctl is 312 bytes
    }

    #[test]
    fn command_numbers_are_stable() {
        for (nr, c) in Command::ALL.iter().enumerate() {
            assert_eq!(*c as usize, nr);
        }
        assert_eq!(Command::Clear as u8, 13);
        assert_eq!(Command::Deps as u8, 14);
    }

    #[test]
    fn from_ioctl_rejects_foreign_numbers() {
        assert_eq!(
            Command::from_ioctl(Command::Version.ioctl()),
            Some(Command::Version)
        );
        assert_eq!(
            Command::from_ioctl(iowr(0xfd, 0, size_of::<Header>())),
            None
        );
        assert_eq!(
            Command::from_ioctl(iowr(MAGIC, 0, size_of::<Header>() - 1)),
            None
        );
        assert_eq!(
            Command::from_ioctl(iowr(MAGIC, 200, size_of::<Header>())),
            None
        );
        assert_eq!(
            Command::from_ioctl(Command::Version.ioctl() & !(3 << 30)),
            None
        );
    }

    #[test]
    fn record_layouts_are_pinned() {
        assert_eq!(size_of::<ListReply>(), 8);
        assert_eq!(size_of::<DepsReply>(), 8);
        assert_eq!(size_of::<DeviceRecord>(), 16 + NAME_LEN);
        assert_eq!(offset_of!(DeviceRecord, name), 16);
    }

    #[test]
    fn names() {
        assert_eq!(check_name(b"data-1_x.y"), Ok(()));
        assert_eq!(check_name(b""), Err(NameError::Empty));
        assert_eq!(check_name(&[b'a'; 128]), Err(NameError::TooLong));
        assert_eq!(check_name(&[b'a'; 127]), Ok(()));
        assert_eq!(check_name(b"."), Err(NameError::Reserved));
        assert_eq!(check_name(b".."), Err(NameError::Reserved));
        assert_eq!(check_name(b"a/b"), Err(NameError::BadCharacter));
        assert_eq!(check_name(b"a b"), Err(NameError::BadCharacter));
        assert_eq!(check_name(b"a\nb"), Err(NameError::BadCharacter));
        assert_eq!(
            check_name("\u{e9}".as_bytes()),
            Err(NameError::BadCharacter)
        );
        assert_eq!(name_in(&[b'a'; NAME_LEN]), Err(NameError::Unterminated));
        assert_eq!(name_in(&name_field(b"vol")), Ok(&b"vol"[..]));
        assert_eq!(name_in(&[0; NAME_LEN]), Err(NameError::Empty));
    }

    #[test]
    fn c_str_stops_at_nul_and_survives_bad_utf8() {
        assert_eq!(c_str(b"abc\0def"), "abc");
        assert_eq!(c_str(b"abc"), "abc");
        assert_eq!(c_str(b"ab\xffcd\0"), "ab");
        assert_eq!(c_str(b""), "");
    }
}
