// SPDX-License-Identifier: GPL-2.0
//! Where a request falls in a table: the pieces it splits into at line
//! boundaries. Pure `core`, host-tested through vblkctl.

/// The part of a request that falls in one table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Index of the line.
    pub line: usize,
    /// Sectors from the start of the request to the start of the piece.
    pub skip: u64,
    /// Sectors from the start of the line to the start of the piece.
    pub offset: u64,
    /// Length in sectors (> 0).
    pub len: u64,
}

/// Splits the request `[start, start + len)` at the line boundaries of a
/// table whose lines start at `starts` (ascending, `starts[0] == 0`) and
/// which ends at `size`. Sectors past `size` are not covered by any piece.
pub fn pieces(starts: &[u64], size: u64, start: u64, len: u64) -> Pieces<'_> {
    // The last line starting at or before `start`.
    let line = starts.partition_point(|&s| s <= start).saturating_sub(1);
    Pieces {
        starts,
        size,
        line,
        pos: start,
        start,
        end: start.saturating_add(len).min(size),
    }
}

/// Iterator returned by [`pieces`].
pub struct Pieces<'a> {
    starts: &'a [u64],
    size: u64,
    line: usize,
    pos: u64,
    start: u64,
    end: u64,
}

impl Iterator for Pieces<'_> {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.pos >= self.end || self.line >= self.starts.len() {
            return None;
        }
        let line_start = self.starts[self.line];
        let line_end = self.starts.get(self.line + 1).copied().unwrap_or(self.size);
        let to = line_end.min(self.end);
        let piece = Piece {
            line: self.line,
            skip: self.pos - self.start,
            offset: self.pos - line_start,
            len: to - self.pos,
        };
        self.pos = to;
        self.line += 1;
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_one_line() {
        let v: Vec<_> = pieces(&[0, 100, 150], 160, 10, 20).collect();
        assert_eq!(
            v,
            [Piece {
                line: 0,
                skip: 0,
                offset: 10,
                len: 20
            }]
        );
    }

    #[test]
    fn across_three_lines() {
        let v: Vec<_> = pieces(&[0, 100, 150], 160, 90, 70).collect();
        assert_eq!(
            v,
            [
                Piece {
                    line: 0,
                    skip: 0,
                    offset: 90,
                    len: 10
                },
                Piece {
                    line: 1,
                    skip: 10,
                    offset: 0,
                    len: 50
                },
                Piece {
                    line: 2,
                    skip: 60,
                    offset: 0,
                    len: 10
                },
            ]
        );
    }

    #[test]
    fn starting_on_a_boundary_and_past_the_end() {
        let v: Vec<_> = pieces(&[0, 100], 160, 100, 8).collect();
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].line, v[0].offset), (1, 0));
        assert_eq!(pieces(&[0, 100], 160, 160, 8).count(), 0);
        assert_eq!(
            pieces(&[0, 100], 160, 150, 100).map(|p| p.len).sum::<u64>(),
            10
        );
        assert_eq!(pieces(&[0], 8, u64::MAX - 1, 8).count(), 0);
    }

    /// Random tables and requests against a sector-by-sector model.
    #[test]
    fn random_requests_match_the_model() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..3000 {
            let lines = 1 + rand(6) as usize;
            let mut starts = vec![0u64];
            let mut size = 0;
            for i in 0..lines {
                size += 1 + rand(20);
                if i + 1 < lines {
                    starts.push(size);
                }
            }
            let start = rand(size + 4);
            let len = 1 + rand(40);
            let mut covered = Vec::new();
            let mut skip = 0;
            for p in pieces(&starts, size, start, len) {
                assert_eq!(p.skip, skip, "pieces are contiguous in the request");
                assert!(p.len > 0);
                for s in 0..p.len {
                    covered.push((p.line, starts[p.line] + p.offset + s));
                }
                skip += p.len;
            }
            let model: Vec<_> = (start..(start + len).min(size))
                .map(|s| (starts.partition_point(|&x| x <= s) - 1, s))
                .collect();
            assert_eq!(
                covered, model,
                "starts {starts:?} size {size} rq {start}+{len}"
            );
        }
    }
}
