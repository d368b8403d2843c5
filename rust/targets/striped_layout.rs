// SPDX-License-Identifier: GPL-2.0
//! The `striped` target's arguments and placement, as dm-striped has them.
//! Pure `core`, host-tested through vblkctl (including a model test
//! against a sector-by-sector reference).
//!
//! Chunk `i` of a line (counted from the line's start) lives on stripe
//! `i % stripes`, at chunk `i / stripes` of that stripe's area.

use core::fmt;

/// What is wrong with a `striped` line; `Display` gives the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StripedError<'a> {
    TooFew(usize),
    Stripes(&'a str),
    Chunk(&'a str),
    NotDivisibleByStripes { length: u64, stripes: u32 },
    NotDivisibleByChunk { width: u64, chunk: u32 },
    Devices { stripes: u32, pairs_words: usize },
    Offset(&'a str),
    ChunkTooLarge(u32),
}

impl fmt::Display for StripedError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StripedError::TooFew(got) => write!(
                f,
                "target 'striped' takes '<#stripes> <chunk sectors> (<dev> <offset>)+', got {got} argument{}",
                if got == 1 { "" } else { "s" }
            ),
            StripedError::Stripes(text) => write!(
                f,
                "striped: stripe count '{text}' is not a decimal number from 1 to 4294967295"
            ),
            StripedError::Chunk(text) => write!(
                f,
                "striped: chunk size '{text}' is not a decimal number of sectors from 1 to 4294967295"
            ),
            StripedError::NotDivisibleByStripes { length, stripes } => write!(
                f,
                "striped: line length {length} is not divisible by the stripe count {stripes}"
            ),
            StripedError::NotDivisibleByChunk { width, chunk } => write!(
                f,
                "striped: each stripe's share ({width} sectors) is not a multiple of the chunk size {chunk}"
            ),
            StripedError::Devices {
                stripes,
                pairs_words,
            } => write!(
                f,
                "striped: {stripes} stripe{} need {} '<dev> <offset>' words, got {pairs_words}",
                if stripes == 1 { "" } else { "s" },
                u64::from(stripes) * 2
            ),
            StripedError::Offset(text) => write!(
                f,
                "striped: offset '{text}' is not a decimal number of sectors"
            ),
            StripedError::ChunkTooLarge(chunk) => write!(
                f,
                "striped: chunk size {chunk} sectors is too large (its bytes must fit 32 bits)"
            ),
        }
    }
}

/// Where the chunks of a striped line go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripeLayout {
    pub stripes: u32,
    /// Sectors per chunk.
    pub chunk: u32,
    /// Sectors each stripe holds (the line's length / stripes).
    pub width: u64,
}

/// One part of an I/O that falls in one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripePiece {
    /// Sectors from the I/O's start.
    pub skip: u64,
    pub len: u64,
    pub stripe: u32,
    /// Sector in the stripe's area (add the stripe's offset).
    pub sector: u64,
}

fn decimal_u32(text: &str) -> Option<u32> {
    decimal_u64(text).and_then(|n| u32::try_from(n).ok())
}

/// Decimal digits only, no sign (dm's `%llu` as vblk reads it).
fn decimal_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a `striped` line of `length` sectors. Returns the layout and the
/// `(device, offset)` pairs, in stripe order.
pub fn parse(
    args: &str,
    length: u64,
) -> Result<(StripeLayout, impl Iterator<Item = (&str, u64)> + '_), StripedError<'_>> {
    let count = args.split_ascii_whitespace().count();
    let mut words = args.split_ascii_whitespace();
    if count < 2 {
        return Err(StripedError::TooFew(count));
    }
    let stripes_text = words.next().unwrap_or("");
    let stripes = decimal_u32(stripes_text)
        .filter(|&n| n > 0)
        .ok_or(StripedError::Stripes(stripes_text))?;
    let chunk_text = words.next().unwrap_or("");
    let chunk = decimal_u32(chunk_text)
        .filter(|&n| n > 0)
        .ok_or(StripedError::Chunk(chunk_text))?;
    if chunk > u32::MAX >> 9 {
        return Err(StripedError::ChunkTooLarge(chunk));
    }
    if length.checked_rem(u64::from(stripes)) != Some(0) {
        return Err(StripedError::NotDivisibleByStripes { length, stripes });
    }
    let width = length / u64::from(stripes);
    if width.checked_rem(u64::from(chunk)) != Some(0) {
        return Err(StripedError::NotDivisibleByChunk { width, chunk });
    }
    if (count - 2) as u64 != u64::from(stripes) * 2 {
        return Err(StripedError::Devices {
            stripes,
            pairs_words: count - 2,
        });
    }
    // Check every offset now, so the iterator cannot fail.
    let mut rest = words.clone();
    while let (Some(_), Some(offset)) = (rest.next(), rest.next()) {
        if decimal_u64(offset).is_none() {
            return Err(StripedError::Offset(offset));
        }
    }
    let pairs = core::iter::from_fn(move || {
        let dev = words.next()?;
        let offset = decimal_u64(words.next()?)?;
        Some((dev, offset))
    });
    Ok((
        StripeLayout {
            stripes,
            chunk,
            width,
        },
        pairs,
    ))
}

impl StripeLayout {
    /// The stripe holding sector `offset` of the line, and the sector in
    /// that stripe's area (dm-striped's `stripe_map_sector`).
    pub fn map(&self, offset: u64) -> (u32, u64) {
        let chunk = u64::from(self.chunk);
        let (index, within) = (offset / chunk, offset % chunk);
        let stripes = u64::from(self.stripes);
        ((index % stripes) as u32, (index / stripes) * chunk + within)
    }

    /// Splits `len` sectors from line sector `offset` at chunk boundaries.
    pub fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = StripePiece> + '_ {
        let mut skip = 0;
        core::iter::from_fn(move || {
            if skip >= len {
                return None;
            }
            let at = offset + skip;
            let (stripe, sector) = self.map(at);
            let left_in_chunk = u64::from(self.chunk) - at % u64::from(self.chunk);
            let n = left_in_chunk.min(len - skip);
            let piece = StripePiece {
                skip,
                len: n,
                stripe,
                sector,
            };
            skip += n;
            Some(piece)
        })
    }

    /// The sectors `[begin, end)` of `stripe`'s area that line sectors
    /// `[start, end)` cover, if any (dm-striped's `stripe_map_range`, for
    /// discards: one contiguous range per stripe).
    pub fn range_on(&self, start: u64, end: u64, stripe: u32) -> Option<(u64, u64)> {
        let begin = self.bound_on(start, stripe);
        let end = self.bound_on(end, stripe);
        (begin < end).then_some((begin, end))
    }

    /// The first sector of `stripe`'s area at or after line sector `at`.
    fn bound_on(&self, at: u64, stripe: u32) -> u64 {
        let (on, sector) = self.map(at);
        if on == stripe {
            return sector;
        }
        let chunk = u64::from(self.chunk);
        let start_of_chunk = sector - sector % chunk;
        if stripe < on {
            // That stripe's chunk of this row is already behind `at`.
            start_of_chunk + chunk
        } else {
            start_of_chunk
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn layout(stripes: u32, chunk: u32, length: u64) -> StripeLayout {
        let mut args = std::format!("{stripes} {chunk}");
        for i in 0..stripes {
            args += &std::format!(" /dev/d{i} {}", i * 100);
        }
        let (l, pairs) = parse(&args, length).unwrap();
        assert_eq!(pairs.count(), stripes as usize);
        l
    }

    /// The reference: walk chunk by chunk, counting each stripe's chunks.
    fn model(stripes: u32, chunk: u32, sector: u64) -> (u32, u64) {
        let mut next_on = std::vec![0u64; stripes as usize];
        let mut at = 0;
        loop {
            for s in 0..stripes {
                if sector < at + u64::from(chunk) {
                    return (s, next_on[s as usize] + (sector - at));
                }
                at += u64::from(chunk);
                next_on[s as usize] += u64::from(chunk);
            }
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self, below: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % below
        }
    }

    #[test]
    fn dm_examples() {
        let l = layout(3, 8, 240);
        assert_eq!(l.map(0), (0, 0));
        assert_eq!(l.map(8), (1, 0));
        assert_eq!(l.map(17), (2, 1));
        assert_eq!(l.map(24), (0, 8));
        // Non-power-of-two chunk.
        let l = layout(2, 3, 12);
        assert_eq!(l.map(5), (1, 2));
        assert_eq!(l.map(6), (0, 3));
    }

    #[test]
    fn matches_model_for_random_layouts() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let stripes = 1 + rng.next(8) as u32;
            let chunk = 1 + rng.next(40) as u32;
            let rows = 1 + rng.next(20);
            let length = rows * u64::from(stripes) * u64::from(chunk);
            let l = layout(stripes, chunk, length);
            for _ in 0..50 {
                let s = rng.next(length);
                assert_eq!(l.map(s), model(stripes, chunk, s), "{stripes}x{chunk} @{s}");
            }
            // Pieces cover an I/O exactly, each inside one chunk, placed as the model says.
            let start = rng.next(length);
            let len = 1 + rng.next(length - start);
            let mut covered = 0;
            for p in l.pieces(start, len) {
                assert_eq!(p.skip, covered);
                assert!(p.len > 0 && p.len <= u64::from(chunk));
                for k in 0..p.len {
                    assert_eq!(
                        model(stripes, chunk, start + p.skip + k),
                        (p.stripe, p.sector + k)
                    );
                }
                covered += p.len;
            }
            assert_eq!(covered, len);
            // Discard ranges: exactly the stripe sectors the I/O covers.
            for stripe in 0..stripes {
                let want: Vec<u64> = (start..start + len)
                    .map(|s| model(stripes, chunk, s))
                    .filter(|&(on, _)| on == stripe)
                    .map(|(_, sec)| sec)
                    .collect();
                match l.range_on(start, start + len, stripe) {
                    None => assert!(want.is_empty()),
                    Some((b, e)) => assert_eq!(want, (b..e).collect::<Vec<_>>()),
                }
            }
        }
    }

    #[test]
    fn argument_errors() {
        let e = |args, len| parse(args, len).err();
        assert_eq!(e("1", 8), Some(StripedError::TooFew(1)));
        assert_eq!(e("0 8 /d 0", 8), Some(StripedError::Stripes("0")));
        assert_eq!(e("x 8 /d 0", 8), Some(StripedError::Stripes("x")));
        assert_eq!(e("1 0 /d 0", 8), Some(StripedError::Chunk("0")));
        assert_eq!(e("1 -8 /d 0", 8), Some(StripedError::Chunk("-8")));
        assert_eq!(
            e("1 8388608 /d 0", 8388608),
            Some(StripedError::ChunkTooLarge(8388608))
        );
        assert_eq!(
            e("3 8 /a 0 /b 0 /c 0", 100),
            Some(StripedError::NotDivisibleByStripes {
                length: 100,
                stripes: 3
            })
        );
        assert_eq!(
            e("2 8 /a 0 /b 0", 24),
            Some(StripedError::NotDivisibleByChunk {
                width: 12,
                chunk: 8
            })
        );
        assert_eq!(
            e("2 8 /a 0", 32),
            Some(StripedError::Devices {
                stripes: 2,
                pairs_words: 2
            })
        );
        assert_eq!(
            e("2 8 /a 0 /b 0 /c", 32),
            Some(StripedError::Devices {
                stripes: 2,
                pairs_words: 5
            })
        );
        assert_eq!(e("2 8 /a 0 /b x", 32), Some(StripedError::Offset("x")));
        let (l, pairs) = parse("2 8 /a 16 7:1 0", 32).unwrap();
        assert_eq!(
            l,
            StripeLayout {
                stripes: 2,
                chunk: 8,
                width: 16
            }
        );
        assert_eq!(pairs.collect::<Vec<_>>(), [("/a", 16), ("7:1", 0)]);
    }
}
