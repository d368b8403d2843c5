// SPDX-License-Identifier: GPL-2.0
//! Control ioctls: decode, validate, dispatch, and always answer with the
//! module's ABI version and, on failure, a message.

use super::abi::{Command, Header, ABI_MAJOR, ABI_MINOR, ABI_PATCH};
use super::message::{fail, Reply};
use crate::sys;
use core::mem::size_of;
use kernel::error::code::{EACCES, EINVAL, ENOTTY};
use kernel::error::Result;
use kernel::uaccess::{UserPtr, UserSlice};

const HEADER_SIZE: usize = size_of::<Header>();

/// Handles one ioctl on `/dev/vblk-control`. `arg` is the caller's
/// (untrusted) buffer address.
pub(crate) fn ioctl(request: u32, arg: UserPtr) -> Result {
    // Not ours (wrong magic, number, direction or header size).
    let Some(command) = Command::from_ioctl(request) else {
        return Err(ENOTTY);
    };
    let (mut reader, mut writer) = UserSlice::new(arg, HEADER_SIZE).reader_writer();
    // An unreadable header is EFAULT; there is nowhere to put a message.
    let mut header: Header = reader.read()?;

    let mut reply = Reply::new();
    let outcome = dispatch(command, &header, &mut reply);

    header.abi_major = ABI_MAJOR;
    header.abi_minor = ABI_MINOR;
    header.abi_patch = ABI_PATCH;
    header.errno = match outcome {
        Ok(()) => 0,
        Err(e) => e.to_errno().unsigned_abs(),
    };
    header.message = *reply.message();
    writer.write(&header)?;
    outcome
}

/// Checks privilege and the header every command shares, then runs the
/// command.
fn dispatch(command: Command, header: &Header, reply: &mut Reply) -> Result {
    // Like device-mapper, every control command needs CAP_SYS_ADMIN, even
    // if the caller managed to open the (root-only) node.
    if !sys::caller_has_sys_admin() {
        return fail!(reply, EACCES, "vblk control commands require CAP_SYS_ADMIN");
    }
    check_header(header, reply)?;
    match command {
        // Answered by `ioctl` writing the version into the header, whatever
        // version the caller speaks.
        Command::Version => Ok(()),
    }
}

/// The buffer description must be self-consistent before anything reads a
/// payload through it.
fn check_header(h: &Header, reply: &mut Reply) -> Result {
    let size = h.data_size as usize;
    let offset = h.data_offset as usize;
    if size < HEADER_SIZE {
        return fail!(
            reply,
            EINVAL,
            "data_size {size} is smaller than the {HEADER_SIZE}-byte header"
        );
    }
    if offset < HEADER_SIZE || offset > size {
        return fail!(
            reply,
            EINVAL,
            "data_offset {offset} is outside the payload area {HEADER_SIZE}..={size}"
        );
    }
    if h.reserved != 0 {
        return fail!(
            reply,
            EINVAL,
            "reserved header field is {} (must be 0)",
            h.reserved
        );
    }
    Ok(())
}
