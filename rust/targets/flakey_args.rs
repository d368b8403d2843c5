// SPDX-License-Identifier: GPL-2.0
//! Arguments of the `flakey` target, parsed and printed the way dm-flakey
//! does. Pure `core`, host-tested through vblkctl.
//!
//! `<dev> <offset> <up interval> <down interval> [<#feature args> <feature args>...]`
//! with the features `error_reads`, `drop_writes`, `error_writes`,
//! `corrupt_bio_byte <Nth_byte> <r|w> <value> <flags>`,
//! `random_read_corrupt <probability>` and `random_write_corrupt <probability>`.

use core::fmt;

/// Probabilities are out of this (dm-flakey's `PROBABILITY_BASE`).
pub const PROBABILITY_BASE: u32 = 1_000_000_000;

/// Which data `corrupt_bio_byte` changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Data read (changed after the lower read, before the caller sees it).
    Read,
    /// Data written (a changed copy goes down; the caller's pages stay).
    Write,
}

/// `corrupt_bio_byte <Nth_byte> <direction> <value> <flags>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corrupt {
    /// 1-based offset of the byte in each matching request piece.
    pub byte: u32,
    pub direction: Direction,
    pub value: u8,
    /// Only requests whose `REQ_*` flags include all of these.
    pub flags: u32,
}

/// A parsed `flakey` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlakeyArgs<'a> {
    pub dev: &'a str,
    pub offset: u64,
    /// Seconds the device behaves, then seconds it misbehaves, repeating.
    pub up: u32,
    pub down: u32,
    pub error_reads: bool,
    pub drop_writes: bool,
    pub error_writes: bool,
    pub corrupt: Option<Corrupt>,
    pub random_read_corrupt: u32,
    pub random_write_corrupt: u32,
}

/// What is wrong with a `flakey` line; `Display` gives the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlakeyError<'a> {
    Count(usize),
    Number {
        what: &'static str,
        text: &'a str,
    },
    OutOfRange {
        what: &'static str,
        text: &'a str,
        max: u32,
    },
    ZeroInterval,
    IntervalOverflow,
    FeatureCount {
        declared: u32,
        present: usize,
    },
    MissingParameter(&'static str),
    UnknownFeature(&'a str),
    Duplicate(&'static str),
    Conflict(&'static str, &'static str),
    Direction(&'a str),
}

impl fmt::Display for FlakeyError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FlakeyError::Count(got) => write!(
                f,
                "target 'flakey' takes '<dev> <offset> <up interval> <down interval> [<#feature args> <feature args>...]', got {got} argument{}",
                if got == 1 { "" } else { "s" }
            ),
            FlakeyError::Number { what, text } => {
                write!(f, "flakey: {what} '{text}' is not a decimal number")
            }
            FlakeyError::OutOfRange { what, text, max } => {
                write!(f, "flakey: {what} '{text}' is out of range (at most {max})")
            }
            FlakeyError::ZeroInterval => {
                write!(f, "flakey: up and down intervals are both 0 (their sum must be at least 1 s)")
            }
            FlakeyError::IntervalOverflow => {
                write!(f, "flakey: up + down interval overflows 32 bits")
            }
            FlakeyError::FeatureCount { declared, present } => write!(
                f,
                "flakey: {declared} feature argument{} declared, {present} present",
                if declared == 1 { "" } else { "s" }
            ),
            FlakeyError::MissingParameter(feature) => {
                write!(f, "flakey: feature {feature} lacks its parameters")
            }
            FlakeyError::UnknownFeature(name) => write!(
                f,
                "flakey: unknown feature '{name}' (error_reads, drop_writes, error_writes, corrupt_bio_byte, random_read_corrupt, random_write_corrupt)"
            ),
            FlakeyError::Duplicate(feature) => write!(f, "flakey: feature {feature} given twice"),
            FlakeyError::Conflict(a, b) => write!(f, "flakey: feature {a} conflicts with {b}"),
            FlakeyError::Direction(text) => write!(
                f,
                "flakey: corrupt_bio_byte direction '{text}' is neither 'r' nor 'w'"
            ),
        }
    }
}

fn number<'a>(what: &'static str, text: &'a str, max: u64) -> Result<u64, FlakeyError<'a>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FlakeyError::Number { what, text });
    }
    match text.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(FlakeyError::OutOfRange {
            what,
            text,
            max: u32::try_from(max).unwrap_or(u32::MAX),
        }),
    }
}

fn number_u32<'a>(what: &'static str, text: &'a str, max: u32) -> Result<u32, FlakeyError<'a>> {
    // `max` fits in u32, so does the result.
    number(what, text, max.into()).map(|n| n as u32)
}

/// Parses a `flakey` line's arguments (after the target name).
pub fn parse(args: &str) -> Result<FlakeyArgs<'_>, FlakeyError<'_>> {
    let mut words = args.split_ascii_whitespace();
    let count = args.split_ascii_whitespace().count();
    if count < 4 {
        return Err(FlakeyError::Count(count));
    }
    let mut next = || words.next().unwrap_or("");
    let dev = next();
    let offset_text = next();
    let offset = number("offset", offset_text, u64::MAX)?;
    let up = number_u32("up interval", next(), u32::MAX)?;
    let down = number_u32("down interval", next(), u32::MAX)?;
    if up == 0 && down == 0 {
        return Err(FlakeyError::ZeroInterval);
    }
    if up.checked_add(down).is_none() {
        return Err(FlakeyError::IntervalOverflow);
    }
    let mut f = FlakeyArgs {
        dev,
        offset,
        up,
        down,
        error_reads: false,
        drop_writes: false,
        error_writes: false,
        corrupt: None,
        random_read_corrupt: 0,
        random_write_corrupt: 0,
    };
    if count > 4 {
        let declared = number_u32("number of feature arguments", next(), 11)?;
        let present = count - 5;
        if declared as usize != present {
            return Err(FlakeyError::FeatureCount { declared, present });
        }
        let mut left = present;
        let mut take = |feature| {
            if left == 0 {
                return Err(FlakeyError::MissingParameter(feature));
            }
            left -= 1;
            Ok(next())
        };
        while let Ok(name) = take("") {
            match name {
                "error_reads" => set_once(&mut f.error_reads, "error_reads")?,
                "drop_writes" => {
                    set_once(&mut f.drop_writes, "drop_writes")?;
                    if f.error_writes {
                        return Err(FlakeyError::Conflict("drop_writes", "error_writes"));
                    }
                }
                "error_writes" => {
                    set_once(&mut f.error_writes, "error_writes")?;
                    if f.drop_writes {
                        return Err(FlakeyError::Conflict("error_writes", "drop_writes"));
                    }
                }
                "corrupt_bio_byte" => {
                    const NAME: &str = "corrupt_bio_byte";
                    let byte = number_u32("corrupt_bio_byte Nth_byte", take(NAME)?, u32::MAX)?;
                    if byte == 0 {
                        return Err(FlakeyError::Number {
                            what: "corrupt_bio_byte Nth_byte (counted from 1)",
                            text: "0",
                        });
                    }
                    let direction = match take(NAME)? {
                        "r" | "R" => Direction::Read,
                        "w" | "W" => Direction::Write,
                        other => return Err(FlakeyError::Direction(other)),
                    };
                    let value = number_u32("corrupt_bio_byte value", take(NAME)?, 255)? as u8;
                    let flags = number_u32("corrupt_bio_byte flags", take(NAME)?, u32::MAX)?;
                    f.corrupt = Some(Corrupt {
                        byte,
                        direction,
                        value,
                        flags,
                    });
                }
                "random_read_corrupt" => {
                    f.random_read_corrupt = number_u32(
                        "random_read_corrupt probability",
                        take("random_read_corrupt")?,
                        PROBABILITY_BASE,
                    )?
                }
                "random_write_corrupt" => {
                    f.random_write_corrupt = number_u32(
                        "random_write_corrupt probability",
                        take("random_write_corrupt")?,
                        PROBABILITY_BASE,
                    )?
                }
                other => return Err(FlakeyError::UnknownFeature(other)),
            }
        }
    }
    let corrupt_writes = matches!(f.corrupt, Some(c) if c.direction == Direction::Write);
    if f.drop_writes && corrupt_writes {
        return Err(FlakeyError::Conflict(
            "drop_writes",
            "corrupt_bio_byte ... w",
        ));
    }
    if f.error_writes && corrupt_writes {
        return Err(FlakeyError::Conflict(
            "error_writes",
            "corrupt_bio_byte ... w",
        ));
    }
    // No feature: while down, every I/O fails (dm-flakey's default).
    if !f.error_reads
        && !f.drop_writes
        && !f.error_writes
        && f.corrupt.is_none()
        && f.random_read_corrupt == 0
        && f.random_write_corrupt == 0
    {
        f.error_reads = true;
        f.error_writes = true;
    }
    Ok(f)
}

fn set_once(flag: &mut bool, name: &'static str) -> Result<(), FlakeyError<'static>> {
    if *flag {
        return Err(FlakeyError::Duplicate(name));
    }
    *flag = true;
    Ok(())
}

impl FlakeyArgs<'_> {
    /// Whether the device misbehaves `elapsed_s` seconds after the table
    /// was loaded.
    pub fn is_down(&self, elapsed_s: u64) -> bool {
        let period = u64::from(self.up) + u64::from(self.down);
        // `parse` refuses a zero period; checked anyway (no panic path).
        elapsed_s
            .checked_rem(period)
            .is_some_and(|t| t >= u64::from(self.up))
    }

    /// Writes what follows the device in TABLE, as dm-flakey does:
    /// `<offset> <up> <down> <#feature args> <features>`.
    pub fn write_table_tail(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let count = u32::from(self.error_reads)
            + u32::from(self.drop_writes)
            + u32::from(self.error_writes)
            + if self.corrupt.is_some() { 5 } else { 0 }
            + if self.random_read_corrupt > 0 { 2 } else { 0 }
            + if self.random_write_corrupt > 0 { 2 } else { 0 };
        write!(out, "{} {} {} {count}", self.offset, self.up, self.down)?;
        if self.error_reads {
            out.write_str(" error_reads")?;
        }
        if self.drop_writes {
            out.write_str(" drop_writes")?;
        } else if self.error_writes {
            out.write_str(" error_writes")?;
        }
        if let Some(c) = self.corrupt {
            let dir = if c.direction == Direction::Write {
                'w'
            } else {
                'r'
            };
            write!(
                out,
                " corrupt_bio_byte {} {dir} {} {}",
                c.byte, c.value, c.flags
            )?;
        }
        if self.random_read_corrupt > 0 {
            write!(out, " random_read_corrupt {}", self.random_read_corrupt)?;
        }
        if self.random_write_corrupt > 0 {
            write!(out, " random_write_corrupt {}", self.random_write_corrupt)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;

    fn tail(args: &str) -> String {
        let mut s = String::new();
        parse(args).unwrap().write_table_tail(&mut s).unwrap();
        s
    }

    #[test]
    fn plain_line_fails_everything_while_down() {
        let f = parse("/dev/ram0 8 5 1").unwrap();
        assert_eq!((f.dev, f.offset, f.up, f.down), ("/dev/ram0", 8, 5, 1));
        assert!(f.error_reads && f.error_writes && !f.drop_writes);
        // dm prints the implied features back (error_writes as one of them).
        assert_eq!(tail("/dev/ram0 8 5 1"), "8 5 1 2 error_reads error_writes");
        assert_eq!(tail("7:0 0 5 1 0"), "0 5 1 2 error_reads error_writes");
    }

    #[test]
    fn features() {
        let f = parse("7:0 0 0 10 1 drop_writes").unwrap();
        assert!(f.drop_writes && !f.error_reads && !f.error_writes);
        let f = parse("7:0 0 0 10 5 corrupt_bio_byte 32 r 1 0").unwrap();
        assert_eq!(
            f.corrupt,
            Some(Corrupt {
                byte: 32,
                direction: Direction::Read,
                value: 1,
                flags: 0
            })
        );
        assert!(!f.error_reads && !f.error_writes);
        let line = "7:0 0 0 10 8 error_reads corrupt_bio_byte 224 w 0 32 random_read_corrupt 5";
        assert_eq!(
            tail(line),
            "0 0 10 8 error_reads corrupt_bio_byte 224 w 0 32 random_read_corrupt 5"
        );
        // What TABLE prints parses back to the same line.
        let again = std::format!("7:0 {}", tail(line));
        assert_eq!(parse(&again), parse(line));
    }

    #[test]
    fn errors() {
        let cases: &[(&str, FlakeyError<'_>)] = &[
            ("7:0 0 1", FlakeyError::Count(3)),
            (
                "7:0 x 1 1",
                FlakeyError::Number {
                    what: "offset",
                    text: "x",
                },
            ),
            (
                "7:0 0 -1 1",
                FlakeyError::Number {
                    what: "up interval",
                    text: "-1",
                },
            ),
            ("7:0 0 0 0", FlakeyError::ZeroInterval),
            ("7:0 0 4294967295 1", FlakeyError::IntervalOverflow),
            (
                "7:0 0 1 1 2 drop_writes",
                FlakeyError::FeatureCount {
                    declared: 2,
                    present: 1,
                },
            ),
            (
                "7:0 0 1 1 1 drop_writes error_writes",
                FlakeyError::FeatureCount {
                    declared: 1,
                    present: 2,
                },
            ),
            (
                "7:0 0 1 1 2 drop_writes error_writes",
                FlakeyError::Conflict("error_writes", "drop_writes"),
            ),
            (
                "7:0 0 1 1 2 error_reads error_reads",
                FlakeyError::Duplicate("error_reads"),
            ),
            ("7:0 0 1 1 1 bogus", FlakeyError::UnknownFeature("bogus")),
            (
                "7:0 0 1 1 3 corrupt_bio_byte 1 r",
                FlakeyError::MissingParameter("corrupt_bio_byte"),
            ),
            (
                "7:0 0 1 1 5 corrupt_bio_byte 1 x 1 0",
                FlakeyError::Direction("x"),
            ),
            (
                "7:0 0 1 1 5 corrupt_bio_byte 1 r 256 0",
                FlakeyError::OutOfRange {
                    what: "corrupt_bio_byte value",
                    text: "256",
                    max: 255,
                },
            ),
            (
                "7:0 0 1 1 6 drop_writes corrupt_bio_byte 1 w 1 0",
                FlakeyError::Conflict("drop_writes", "corrupt_bio_byte ... w"),
            ),
            (
                "7:0 0 1 1 2 random_read_corrupt 1000000001",
                FlakeyError::OutOfRange {
                    what: "random_read_corrupt probability",
                    text: "1000000001",
                    max: PROBABILITY_BASE,
                },
            ),
            (
                "7:0 0 1 1 12 error_reads",
                FlakeyError::OutOfRange {
                    what: "number of feature arguments",
                    text: "12",
                    max: 11,
                },
            ),
        ];
        for (args, want) in cases {
            assert_eq!(parse(args), Err(*want), "{args}");
        }
    }

    #[test]
    fn up_down_cycle() {
        let f = parse("7:0 0 2 3").unwrap();
        let down: std::vec::Vec<bool> = (0..7).map(|s| f.is_down(s)).collect();
        assert_eq!(down, [false, false, true, true, true, false, false]);
        let always_down = parse("7:0 0 0 1").unwrap();
        assert!((0..100).all(|s| always_down.is_down(s)));
    }
}
