// SPDX-License-Identifier: GPL-2.0
//! Target argument parsing shared by the targets: device names, sector
//! numbers, counts. Pure `core`, host-tested through vblkctl.

use core::fmt;

/// How a table names a lower device, as device-mapper accepts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevSpec<'a> {
    /// `major:minor`.
    Number { major: u32, minor: u32 },
    /// An absolute path to a block device node.
    Path(&'a str),
}

/// Largest major number (12 bits in the kernel's dev_t).
pub const MAX_MAJOR: u32 = (1 << 12) - 1;
/// Largest minor number (20 bits).
pub const MAX_MINOR: u32 = (1 << 20) - 1;
/// Longest path accepted for a device.
pub const MAX_PATH: usize = 4095;

impl DevSpec<'_> {
    /// The kernel's dev_t for a `Number` (`major << 20 | minor`).
    pub fn devt(major: u32, minor: u32) -> u32 {
        (major << 20) | minor
    }
}

/// What is wrong with a target argument; `Display` gives the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgError<'a> {
    /// The target takes exactly `expected` arguments, got `got`.
    Count {
        target: &'a str,
        usage: &'a str,
        got: usize,
    },
    /// A device is neither `major:minor` nor an absolute path.
    BadDevice { text: &'a str },
    /// A number that should be a sector count is not.
    BadNumber { what: &'a str, text: &'a str },
}

impl fmt::Display for ArgError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ArgError::Count { target, usage, got } => write!(
                f,
                "target '{target}' takes arguments '{usage}', got {got} argument{}",
                if got == 1 { "" } else { "s" }
            ),
            ArgError::BadDevice { text } => write!(
                f,
                "device '{text}' is neither major:minor nor an absolute path"
            ),
            ArgError::BadNumber { what, text } => {
                write!(f, "{what} '{text}' is not a decimal number of sectors")
            }
        }
    }
}

/// Parses a device argument: `major:minor` (decimal) or an absolute path.
pub fn parse_device(text: &str) -> Result<DevSpec<'_>, ArgError<'_>> {
    if let Some((major, minor)) = text.split_once(':') {
        let num = |s: &str, max: u32| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
                .filter(|&n| n <= max)
        };
        if let (Some(major), Some(minor)) = (num(major, MAX_MAJOR), num(minor, MAX_MINOR)) {
            return Ok(DevSpec::Number { major, minor });
        }
    }
    if text.starts_with('/') && text.len() <= MAX_PATH && !text.contains('\0') {
        return Ok(DevSpec::Path(text));
    }
    Err(ArgError::BadDevice { text })
}

/// Parses a sector number argument (decimal digits only, as dm's `%llu`
/// without a sign).
pub fn parse_sector<'a>(what: &'a str, text: &'a str) -> Result<u64, ArgError<'a>> {
    super::table::parse_sectors(text).ok_or(ArgError::BadNumber { what, text })
}

/// Splits `args` into exactly `N` words, or says how to call the target.
pub fn exact_args<'a, const N: usize>(
    target: &'a str,
    usage: &'a str,
    args: &'a str,
) -> Result<[&'a str; N], ArgError<'a>> {
    let mut out = [""; N];
    let mut got = 0;
    for word in args.split_ascii_whitespace() {
        if got < N {
            out[got] = word;
        }
        got += 1;
    }
    if got != N {
        return Err(ArgError::Count { target, usage, got });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices() {
        assert_eq!(
            parse_device("7:0"),
            Ok(DevSpec::Number { major: 7, minor: 0 })
        );
        assert_eq!(parse_device("/dev/ram0"), Ok(DevSpec::Path("/dev/ram0")));
        assert_eq!(
            parse_device("/dev/disk/by-id/a:b"),
            Ok(DevSpec::Path("/dev/disk/by-id/a:b"))
        );
        for bad in [
            "ram0",
            "7:",
            ":0",
            "7:x",
            "4096:0",
            "0:1048576",
            "-1:0",
            "",
            "7:0:1",
        ] {
            assert_eq!(
                parse_device(bad),
                Err(ArgError::BadDevice { text: bad }),
                "{bad}"
            );
        }
        assert_eq!(DevSpec::devt(7, 3), (7 << 20) | 3);
    }

    #[test]
    fn sectors() {
        assert_eq!(parse_sector("offset", "0"), Ok(0));
        assert_eq!(parse_sector("offset", "123"), Ok(123));
        assert!(parse_sector("offset", "-1").is_err());
        assert!(parse_sector("offset", "1k").is_err());
        assert_eq!(
            parse_sector("offset", "x").unwrap_err().to_string(),
            "offset 'x' is not a decimal number of sectors"
        );
    }

    #[test]
    fn counts() {
        assert_eq!(
            exact_args::<2>("linear", "<dev> <offset>", "/dev/a 0"),
            Ok(["/dev/a", "0"])
        );
        let e = exact_args::<2>("linear", "<dev> <offset>", "/dev/a").unwrap_err();
        assert_eq!(
            e.to_string(),
            "target 'linear' takes arguments '<dev> <offset>', got 1 argument"
        );
        assert!(exact_args::<2>("linear", "", "a b c").is_err());
        assert!(exact_args::<0>("zero", "", "").is_ok());
    }
}
