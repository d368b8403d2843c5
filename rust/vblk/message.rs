// SPDX-License-Identifier: GPL-2.0
//! Failures that carry an explanation back to userspace.
//!
//! A control ioctl that fails returns an errno *and* writes a message into
//! the caller's header (see `abi::Header::message`). This module has no
//! kernel imports beyond the errno type, so the formatting is plain `core`.

use super::abi::MESSAGE_LEN;
use core::fmt::{self, Write};
use kernel::error::Error;

/// A fixed-size, NUL-terminated message buffer; longer text is truncated.
struct Message {
    bytes: [u8; MESSAGE_LEN],
    len: usize,
}

impl Message {
    /// Formats `args` into a new message.
    fn format(args: fmt::Arguments<'_>) -> Self {
        let mut m = Message {
            bytes: [0; MESSAGE_LEN],
            len: 0,
        };
        // Our `write_str` never fails; it truncates instead.
        let _ = m.write_fmt(args);
        m
    }

    /// The text so far (always whole characters: `write_str` cuts at char
    /// boundaries).
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }

    /// The message as the ABI's NUL-terminated byte field.
    fn as_field(&self) -> &[u8; MESSAGE_LEN] {
        &self.bytes
    }
}

impl Write for Message {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep one byte for the terminating NUL; cut at a char boundary.
        let room = MESSAGE_LEN - 1 - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// Collects the explanation of a failing control operation, like GEOM's
/// `gctl_error()`: code that fails records why, then returns the errno.
pub(crate) struct Reply {
    message: Message,
}

impl Reply {
    /// A reply with no message yet.
    pub(crate) fn new() -> Self {
        Reply {
            message: Message::format(format_args!("")),
        }
    }

    /// Records `args` as the explanation and hands back `errno`.
    pub(crate) fn fail(&mut self, errno: Error, args: fmt::Arguments<'_>) -> Error {
        self.message = Message::format(args);
        errno
    }

    /// Puts `args` in front of the recorded message (e.g. "line 3: ").
    pub(crate) fn prefix(&mut self, args: fmt::Arguments<'_>) {
        let old = core::mem::replace(&mut self.message, Message::format(args));
        let _ = self.message.write_str(old.as_str());
    }

    /// The recorded message (empty if none) as the ABI's byte field.
    pub(crate) fn message(&self) -> &[u8; MESSAGE_LEN] {
        self.message.as_field()
    }
}

/// Records a message in a [`Reply`] and returns the errno as `Err`:
/// `return fail!(reply, EINVAL, "bad {}", x);`
macro_rules! fail {
    ($reply:expr, $errno:expr, $($arg:tt)+) => {
        Err($reply.fail($errno, format_args!($($arg)+)))
    };
}
pub(crate) use fail;

/// An errno shown the way users know it: symbol and meaning.
pub(crate) struct Errno(pub(crate) Error);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = -self.0.to_errno();
        let (name, text) = match n {
            1 => ("EPERM", "operation not permitted"),
            2 => ("ENOENT", "no such file or directory"),
            5 => ("EIO", "I/O error"),
            6 => ("ENXIO", "no such device or address"),
            12 => ("ENOMEM", "out of memory"),
            13 => ("EACCES", "permission denied (read-only device?)"),
            15 => ("ENOTBLK", "not a block device"),
            16 => (
                "EBUSY",
                "in use by someone else (mounted, or opened exclusively)",
            ),
            19 => ("ENODEV", "no such device"),
            20 => ("ENOTDIR", "a path component is not a directory"),
            22 => ("EINVAL", "invalid argument"),
            30 => ("EROFS", "read-only"),
            _ => return write!(f, "errno {n}"),
        };
        write!(f, "{text} ({name})")
    }
}

/// The first word of a message or argument text, as an error may repeat
/// it: at most 32 characters, and not at all if it looks like key material
/// (16 or more hex digits). The rest can be a key (`key set <hex>` sent to
/// the wrong line, or mistyped; a crypt line loaded as another target) and
/// is never echoed.
pub(crate) fn first_word(text: &str) -> FirstWord<'_> {
    let word = text.split_ascii_whitespace().next().unwrap_or("");
    FirstWord(match word.char_indices().nth(32) {
        Some((cut, _)) => &word[..cut],
        None => word,
    })
}

/// See [`first_word`].
pub(crate) struct FirstWord<'a>(&'a str);

impl fmt::Display for FirstWord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.bytes().filter(u8::is_ascii_hexdigit).count() >= 16 {
            write!(f, "<a {}-byte word, not shown>", self.0.len())
        } else {
            f.write_str(self.0)
        }
    }
}
