// SPDX-License-Identifier: GPL-2.0
//! Table text: parsing and layout checks, in pure `core`.
//!
//! A table is device-mapper's format: one line per target,
//! `<start> <length> <target> [<args>...]`, in 512-byte sectors. Lines must
//! cover the device contiguously from sector 0, each with a non-zero
//! length. Blank lines and lines starting with `#` are ignored.
//!
//! This file has no kernel imports: the module compiles it, and vblkctl
//! includes it (`#[path]`) both to check tables before sending them and to
//! run these tests on the host. Target arguments are parsed by the targets.

use core::fmt;

/// Most lines a table may have (device-mapper has no fixed limit). With
/// the 1 MiB text limit this bounds the lines' own memory; what their
/// targets hold (region maps, page reserves) is bounded separately, per
/// table and for all tables (`MAX_TABLE_STATE`, `MAX_TARGET_STATE`).
pub const MAX_LINES: usize = 1024;
/// Longest target name.
pub const MAX_TARGET_NAME: usize = 31;
/// Largest device size in sectors: what fits a byte count in an `i64`
/// (the block layer's `loff_t`).
pub const MAX_SECTORS: u64 = (i64::MAX as u64) >> 9;

/// One parsed line, borrowing from the table text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// 1-based line number in the text (for messages).
    pub number: usize,
    /// First sector the line maps.
    pub start: u64,
    /// Sectors the line maps (> 0).
    pub length: u64,
    /// Target name, e.g. `linear`.
    pub target: &'a str,
    /// The rest of the line, for the target to parse.
    pub args: &'a str,
}

impl<'a> Line<'a> {
    /// The target arguments, split on whitespace.
    pub fn arg_words(&self) -> core::str::SplitAsciiWhitespace<'a> {
        self.args.split_ascii_whitespace()
    }
}

/// What is wrong with a table; `Display` gives the message for the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError<'a> {
    /// The table has no lines.
    Empty,
    /// More than [`MAX_LINES`] lines.
    TooManyLines,
    /// A line has fewer than three fields.
    MissingFields { line: usize },
    /// `start` or `length` is not a decimal number that fits 64 bits.
    BadNumber {
        line: usize,
        field: &'static str,
        text: &'a str,
    },
    /// A zero `length`.
    ZeroLength { line: usize },
    /// `start` is not where the previous line ended.
    Gap {
        line: usize,
        expected: u64,
        found: u64,
    },
    /// `start + length` overflows or exceeds [`MAX_SECTORS`].
    TooLarge { line: usize },
    /// Target name too long or not `[a-z0-9_-]`.
    BadTargetName { line: usize },
    /// The text is not valid UTF-8 / contains control characters.
    BadText { line: usize },
}

impl fmt::Display for TableError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TableError::Empty => write!(f, "table is empty"),
            TableError::TooManyLines => write!(f, "table has more than {MAX_LINES} lines"),
            TableError::MissingFields { line } => {
                write!(f, "line {line}: expected '<start> <length> <target> [args...]'")
            }
            TableError::BadNumber { line, field, text } => {
                write!(f, "line {line}: {field} '{text}' is not a sector count")
            }
            TableError::ZeroLength { line } => write!(f, "line {line}: length is 0"),
            TableError::Gap { line, expected: 0, found } => write!(
                f,
                "line {line}: starts at sector {found}, but a table must start at sector 0"
            ),
            TableError::Gap { line, expected, found } if found < expected => write!(
                f,
                "line {line}: starts at sector {found}, overlapping the lines before it (they end at sector {expected})"
            ),
            TableError::Gap { line, expected, found } => write!(
                f,
                "line {line}: starts at sector {found}, leaving a gap (the lines before it end at sector {expected})"
            ),
            TableError::TooLarge { line } => {
                write!(f, "line {line}: start + length exceeds the largest device size ({MAX_SECTORS} sectors)")
            }
            TableError::BadTargetName { line } => write!(
                f,
                "line {line}: target name must be 1-{MAX_TARGET_NAME} characters of a-z, 0-9, '-' or '_'"
            ),
            TableError::BadText { line } => {
                write!(f, "line {line}: contains control characters")
            }
        }
    }
}

/// Parses a decimal sector count: digits only (no sign, no hex), as dm does.
pub fn parse_sectors(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn valid_target_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TARGET_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Parses one non-blank, non-comment line.
fn parse_line(number: usize, text: &str) -> Result<Line<'_>, TableError<'_>> {
    if text.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(TableError::BadText { line: number });
    }
    let mut rest = text.trim_start_matches([' ', '\t']);
    let mut field = || {
        let end = rest.find([' ', '\t']).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        rest = tail.trim_start_matches([' ', '\t']);
        word
    };
    let (start, length, target) = (field(), field(), field());
    if target.is_empty() {
        return Err(TableError::MissingFields { line: number });
    }
    let number_of = |field, text| {
        parse_sectors(text).ok_or(TableError::BadNumber {
            line: number,
            field,
            text,
        })
    };
    let start = number_of("start", start)?;
    let length = number_of("length", length)?;
    if !valid_target_name(target) {
        return Err(TableError::BadTargetName { line: number });
    }
    Ok(Line {
        number,
        start,
        length,
        target,
        args: rest.trim_end_matches([' ', '\t']),
    })
}

/// Iterates over a table's lines in order, checking each line and the
/// layout (contiguous from 0, no zero lengths, no overflow) as it goes.
/// The iterator stops after the first error.
pub struct Lines<'a> {
    rest: core::str::Lines<'a>,
    number: usize,
    next_start: u64,
    count: usize,
    failed: bool,
}

/// Parses `text` as a table; see [`Lines`]. Use [`check`] to validate a
/// whole table and learn its size.
pub fn lines(text: &str) -> Lines<'_> {
    Lines {
        rest: text.lines(),
        number: 0,
        next_start: 0,
        count: 0,
        failed: false,
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Result<Line<'a>, TableError<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = loop {
            let text = self.rest.next()?;
            self.number += 1;
            let trimmed = text.trim_matches([' ', '\t']);
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            break self.check_next(parse_line(self.number, text));
        };
        self.failed = result.is_err();
        Some(result)
    }
}

impl<'a> Lines<'a> {
    fn check_next(
        &mut self,
        line: Result<Line<'a>, TableError<'a>>,
    ) -> Result<Line<'a>, TableError<'a>> {
        let line = line?;
        let number = line.number;
        self.count += 1;
        if self.count > MAX_LINES {
            return Err(TableError::TooManyLines);
        }
        if line.length == 0 {
            return Err(TableError::ZeroLength { line: number });
        }
        if line.start != self.next_start {
            return Err(TableError::Gap {
                line: number,
                expected: self.next_start,
                found: line.start,
            });
        }
        match line.start.checked_add(line.length) {
            Some(end) if end <= MAX_SECTORS => self.next_start = end,
            _ => return Err(TableError::TooLarge { line: number }),
        }
        Ok(line)
    }
}

/// Checks a whole table; returns its line count and size in sectors.
pub fn check(text: &str) -> Result<(usize, u64), TableError<'_>> {
    let mut count = 0;
    let mut size = 0;
    for line in lines(text) {
        let line = line?;
        count += 1;
        size = line.start + line.length;
    }
    if count == 0 {
        return Err(TableError::Empty);
    }
    Ok((count, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> TableError<'_> {
        check(text).unwrap_err()
    }

    #[test]
    fn accepts_a_three_line_concatenation() {
        let t = "0 100 linear /dev/a 0\n100 50 linear /dev/b 8\n150 10 zero\n";
        assert_eq!(check(t), Ok((3, 160)));
        let v: Vec<_> = lines(t).map(Result::unwrap).collect();
        assert_eq!(v[1].start, 100);
        assert_eq!(v[1].target, "linear");
        assert_eq!(v[1].args, "/dev/b 8");
        assert_eq!(v[2].args, "");
        assert_eq!(v[1].arg_words().collect::<Vec<_>>(), ["/dev/b", "8"]);
    }

    #[test]
    fn ignores_blank_and_comment_lines_but_counts_them() {
        let t = "# a comment\n\n  0 8 zero  \n\t\n8 8 error\n";
        let v: Vec<_> = lines(t).map(Result::unwrap).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].number, 3);
        assert_eq!(v[1].number, 5);
        assert_eq!(
            err("# only\n3 1 zero"),
            TableError::Gap {
                line: 2,
                expected: 0,
                found: 3
            }
        );
    }

    #[test]
    fn tabs_and_runs_of_spaces_separate_fields() {
        let v: Vec<_> = lines("0\t8   linear\t/dev/x   0 ")
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            (v[0].length, v[0].target, v[0].args),
            (8, "linear", "/dev/x   0")
        );
    }

    #[test]
    fn refuses_malformed_tables() {
        assert_eq!(err(""), TableError::Empty);
        assert_eq!(err("\n# nothing\n"), TableError::Empty);
        assert_eq!(err("0 8"), TableError::MissingFields { line: 1 });
        assert_eq!(err("0"), TableError::MissingFields { line: 1 });
        assert_eq!(
            err("x 8 zero"),
            TableError::BadNumber {
                line: 1,
                field: "start",
                text: "x"
            }
        );
        assert_eq!(
            err("0 -8 zero"),
            TableError::BadNumber {
                line: 1,
                field: "length",
                text: "-8"
            }
        );
        assert_eq!(
            err("0 0x10 zero"),
            TableError::BadNumber {
                line: 1,
                field: "length",
                text: "0x10"
            }
        );
        assert_eq!(
            err("0 +8 zero"),
            TableError::BadNumber {
                line: 1,
                field: "length",
                text: "+8"
            }
        );
        assert_eq!(
            err("0 99999999999999999999 zero"),
            TableError::BadNumber {
                line: 1,
                field: "length",
                text: "99999999999999999999"
            }
        );
        assert_eq!(err("0 0 zero"), TableError::ZeroLength { line: 1 });
        assert_eq!(
            err("0 8 zero\n9 8 zero"),
            TableError::Gap {
                line: 2,
                expected: 8,
                found: 9
            }
        );
        assert_eq!(
            err("0 8 zero\n4 8 zero"),
            TableError::Gap {
                line: 2,
                expected: 8,
                found: 4
            }
        );
        assert_eq!(
            err("1 8 zero"),
            TableError::Gap {
                line: 1,
                expected: 0,
                found: 1
            }
        );
        assert_eq!(
            err("0 18446744073709551615 zero"),
            TableError::TooLarge { line: 1 }
        );
        assert_eq!(err("0 8 Linear"), TableError::BadTargetName { line: 1 });
        assert_eq!(err("0 8 zero\x07"), TableError::BadText { line: 1 });
        assert_eq!(
            err("0 8 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            TableError::BadTargetName { line: 1 }
        );
    }

    #[test]
    fn line_limit() {
        let mut t = String::new();
        for i in 0..=MAX_LINES as u64 {
            t.push_str(&format!("{} 1 zero\n", i));
        }
        assert_eq!(err(&t), TableError::TooManyLines);
        let ok: String = t
            .lines()
            .take(MAX_LINES)
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(check(&ok), Ok((MAX_LINES, MAX_LINES as u64)));
    }

    #[test]
    fn largest_device() {
        assert_eq!(
            check(&format!("0 {MAX_SECTORS} zero")),
            Ok((1, MAX_SECTORS))
        );
        assert_eq!(
            err(&format!("0 {} zero", MAX_SECTORS + 1)),
            TableError::TooLarge { line: 1 }
        );
    }

    #[test]
    fn messages_name_the_line_and_the_problem() {
        assert_eq!(
            err("0 8 zero\n4 8 zero").to_string(),
            "line 2: starts at sector 4, overlapping the lines before it (they end at sector 8)"
        );
        assert_eq!(
            err("0 8 zero\n9 8 zero").to_string(),
            "line 2: starts at sector 9, leaving a gap (the lines before it end at sector 8)"
        );
        assert_eq!(
            err("2 8 zero").to_string(),
            "line 1: starts at sector 2, but a table must start at sector 0"
        );
        assert_eq!(
            err("0 abc zero").to_string(),
            "line 1: length 'abc' is not a sector count"
        );
    }

    /// Random tables against a direct model: a table is valid iff every
    /// line has 3+ fields, numbers parse, lengths are non-zero and each
    /// start equals the sum of the lengths before it.
    #[test]
    fn random_tables_match_the_model() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2000 {
            let n = 1 + rand(6);
            let mut text = String::new();
            let mut pos = 0u64;
            let mut model_ok = true;
            let mut model_size = 0;
            for _ in 0..n {
                let len = rand(4); // 0 sometimes
                let start = if rand(8) == 0 { pos + rand(3) } else { pos };
                if len == 0 || start != pos {
                    model_ok = false;
                }
                text.push_str(&format!("{start} {len} zero\n"));
                pos = start + len;
                model_size = pos;
            }
            let got = check(&text);
            assert_eq!(got.is_ok(), model_ok, "{text}");
            if model_ok {
                assert_eq!(got, Ok((n as usize, model_size)));
            }
        }
    }
}
