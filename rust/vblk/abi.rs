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

/// Builds the native-endian byte image of an ABI struct field by field
/// (the ioctl ABI is the machine's own), so neither side reinterprets
/// memory: the kernel copies these bytes to and from user space.
struct Put<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Put<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.out[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_ne_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_ne_bytes());
    }
}

/// Reads fields back from a byte image (see [`Put`]).
struct Get<'a> {
    from: &'a [u8],
    at: usize,
}

impl Get<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0; N];
        a.copy_from_slice(&self.from[self.at..self.at + N]);
        self.at += N;
        a
    }
    fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_ne_bytes(self.array())
    }
}

impl Header {
    /// Bytes of a header in an ioctl buffer.
    pub const SIZE: usize = core::mem::size_of::<Header>();

    /// The header's bytes as the ioctl buffer holds them.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        let mut p = Put {
            out: &mut out,
            at: 0,
        };
        for v in [
            self.abi_major,
            self.abi_minor,
            self.abi_patch,
            self.data_size,
            self.data_offset,
            self.flags,
            self.errno,
            self.event_nr,
            self.open_count,
            self.target_count,
        ] {
            p.u32(v);
        }
        p.u64(self.dev);
        p.u64(self.reserved);
        p.bytes(&self.name);
        p.bytes(&self.uuid);
        p.bytes(&self.message);
        out
    }

    /// A header from the bytes of an ioctl buffer.
    pub fn decode(b: &[u8; Self::SIZE]) -> Self {
        let mut g = Get { from: b, at: 0 };
        Header {
            abi_major: g.u32(),
            abi_minor: g.u32(),
            abi_patch: g.u32(),
            data_size: g.u32(),
            data_offset: g.u32(),
            flags: g.u32(),
            errno: g.u32(),
            event_nr: g.u32(),
            open_count: g.u32(),
            target_count: g.u32(),
            dev: g.u64(),
            reserved: g.u64(),
            name: g.array(),
            uuid: g.array(),
            message: g.array(),
        }
    }
}

/// The bytes of a reply head (`count`, then `reserved`).
fn encode_head(count: u32, reserved: u32) -> [u8; 8] {
    let mut out = [0; 8];
    let mut p = Put {
        out: &mut out,
        at: 0,
    };
    p.u32(count);
    p.u32(reserved);
    out
}

impl ListReply {
    /// The reply head's bytes as the ioctl buffer holds them.
    pub fn encode(&self) -> [u8; 8] {
        encode_head(self.count, self.reserved)
    }
}

impl DepsReply {
    /// The reply head's bytes as the ioctl buffer holds them.
    pub fn encode(&self) -> [u8; 8] {
        encode_head(self.count, self.reserved)
    }
}

impl DeviceRecord {
    /// Bytes of a record in a LIST reply.
    pub const SIZE: usize = core::mem::size_of::<DeviceRecord>();

    /// The record's bytes as the ioctl buffer holds them.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        let mut p = Put {
            out: &mut out,
            at: 0,
        };
        p.u64(self.dev);
        p.u32(self.event_nr);
        p.u32(self.flags);
        p.bytes(&self.name);
        out
    }
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

    /// The byte images put every field where the `#[repr(C)]` layout has
    /// it (vblkctl reads and writes the structs as memory), and a header
    /// survives the round trip.
    #[test]
    fn byte_images_follow_the_layout() {
        use core::mem::offset_of;
        let mut h = Header::new();
        h.flags = 0x0102_0304;
        h.errno = 22;
        h.event_nr = 7;
        h.target_count = 3;
        h.dev = 0x1122_3344_5566_7788;
        h.name[0] = b'a';
        h.uuid[1] = b'u';
        h.message[MESSAGE_LEN - 2] = b'm';
        let b = h.encode();
        let at = |o: usize, n: usize| &b[o..o + n];
        assert_eq!(at(offset_of!(Header, flags), 4), &h.flags.to_ne_bytes());
        assert_eq!(at(offset_of!(Header, errno), 4), &22u32.to_ne_bytes());
        assert_eq!(at(offset_of!(Header, event_nr), 4), &7u32.to_ne_bytes());
        assert_eq!(at(offset_of!(Header, target_count), 4), &3u32.to_ne_bytes());
        assert_eq!(at(offset_of!(Header, dev), 8), &h.dev.to_ne_bytes());
        assert_eq!(b[offset_of!(Header, name)], b'a');
        assert_eq!(b[offset_of!(Header, uuid) + 1], b'u');
        assert_eq!(b[offset_of!(Header, message) + MESSAGE_LEN - 2], b'm');
        let back = Header::decode(&b);
        assert_eq!(back.encode(), b);
        assert_eq!(back.dev, h.dev);
        assert_eq!(back.message_str(), h.message_str());

        let r = DeviceRecord {
            dev: 0xabcd,
            event_nr: 5,
            flags: 9,
            name: name_field(b"vol"),
        };
        let rb = r.encode();
        assert_eq!(
            &rb[offset_of!(DeviceRecord, event_nr)..][..4],
            &5u32.to_ne_bytes()
        );
        assert_eq!(
            &rb[offset_of!(DeviceRecord, flags)..][..4],
            &9u32.to_ne_bytes()
        );
        assert_eq!(&rb[offset_of!(DeviceRecord, name)..][..3], b"vol");
        let l = ListReply {
            count: 4,
            reserved: 0,
        }
        .encode();
        assert_eq!(&l[offset_of!(ListReply, count)..][..4], &4u32.to_ne_bytes());
        let d = DepsReply {
            count: 2,
            reserved: 0,
        }
        .encode();
        assert_eq!(&d[offset_of!(DepsReply, count)..][..4], &2u32.to_ne_bytes());
    }
}
