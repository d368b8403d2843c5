// SPDX-License-Identifier: GPL-2.0
//! Bitmaps of regions and region math: a line cut into fixed-size regions
//! (the unit a dirty log, a write-intent bitmap or a copy tracks), and one
//! bit per region in little-endian bit order (`test_bit_le`, as dm and md
//! store them). Pure `core`, no allocation, host-tested through vblkctl.

use core::ops::Range;

/// Byte index and mask of `region`'s bit (`test_bit_le` order).
fn bit_pos(region: u64) -> Option<(usize, u8)> {
    Some((usize::try_from(region >> 3).ok()?, 1 << (region & 7)))
}

/// Whether `region`'s bit is set in `bits` (false beyond the slice).
pub fn test_bit(bits: &[u8], region: u64) -> bool {
    bit_pos(region)
        .and_then(|(i, mask)| bits.get(i).map(|b| b & mask != 0))
        .unwrap_or(false)
}

/// The byte holding `region`'s bit, and the bit's mask.
fn byte_mut(bits: &mut [u8], region: u64) -> Option<(&mut u8, u8)> {
    let (i, mask) = bit_pos(region)?;
    Some((bits.get_mut(i)?, mask))
}

/// Sets `region`'s bit (ignored beyond the slice).
pub fn set_bit(bits: &mut [u8], region: u64) {
    if let Some((byte, mask)) = byte_mut(bits, region) {
        *byte |= mask;
    }
}

/// Clears `region`'s bit (ignored beyond the slice).
pub fn clear_bit(bits: &mut [u8], region: u64) {
    if let Some((byte, mask)) = byte_mut(bits, region) {
        *byte &= !mask;
    }
}

/// Sets (`value`) or clears the bits of `regions` (clamped to the slice).
pub fn fill_bits(bits: &mut [u8], regions: Range<u64>, value: bool) {
    let end = regions.end.min((bits.len() as u64).saturating_mul(8));
    let mut r = regions.start;
    while r < end {
        // Whole bytes at once where possible.
        if r & 7 == 0 && end - r >= 8 {
            if let Some(b) = usize::try_from(r >> 3).ok().and_then(|i| bits.get_mut(i)) {
                *b = if value { 0xff } else { 0 };
            }
            r += 8;
        } else {
            if value {
                set_bit(bits, r);
            } else {
                clear_bit(bits, r);
            }
            r += 1;
        }
    }
}

/// Number of bits set (dm's `memweight`: the regions in sync).
pub fn count_set(bits: &[u8]) -> u64 {
    bits.iter().map(|b| u64::from(b.count_ones())).sum()
}

/// The first region in `from..limit` whose bit is clear (dm's
/// `find_next_zero_bit_le`, as `get_resync_work` uses it on the sync
/// bits); bits beyond the slice count as clear.
pub fn find_next_zero_bit(bits: &[u8], limit: u64, from: u64) -> Option<u64> {
    let mut r = from;
    while r < limit {
        let byte = usize::try_from(r >> 3).ok().and_then(|i| bits.get(i));
        match byte {
            // A full byte from its first bit: skip it.
            Some(0xff) if r & 7 == 0 => r += 8,
            Some(&b) if b & (1 << (r & 7)) != 0 => r += 1,
            _ => return Some(r),
        }
    }
    None
}

/// Regions of a line of `target_len` sectors (dm's `dm_sector_div_up`);
/// `None` for a zero region size.
pub fn nr_regions(target_len: u64, region_size: u32) -> Option<u64> {
    if region_size == 0 {
        return None;
    }
    Some(target_len.div_ceil(u64::from(region_size)))
}

/// The region holding `sector` (line-relative). A zero region size
/// (refused by the parser) gives region 0.
pub fn region_of(sector: u64, region_size: u32) -> u64 {
    sector.checked_div(u64::from(region_size)).unwrap_or(0)
}

/// First sector of `region` (line-relative), saturating.
pub fn region_start(region: u64, region_size: u32) -> u64 {
    region.saturating_mul(u64::from(region_size))
}

/// Sectors of `region` inside a line of `target_len` sectors: the region
/// size, except for a shorter last region (as dm's `recover` copies).
pub fn region_len(region: u64, region_size: u32, target_len: u64) -> u64 {
    target_len
        .saturating_sub(region_start(region, region_size))
        .min(u64::from(region_size))
}

/// The regions that sectors `[start, start + len)` touch (empty for
/// `len == 0`).
pub fn regions(start: u64, len: u64, region_size: u32) -> Range<u64> {
    if len == 0 || region_size == 0 {
        return 0..0;
    }
    let last = start.saturating_add(len - 1);
    region_of(start, region_size)..region_of(last, region_size).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_order() {
        let mut bits = [0u8; 16];
        for r in [0, 31, 32, 99] {
            set_bit(&mut bits, r);
        }
        assert_eq!(
            bits,
            [0x01, 0, 0, 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0]
        );
        // As little-endian u32 words: bit n of word n / 32.
        let w0 = u32::from_le_bytes(bits[0..4].try_into().unwrap());
        let w1 = u32::from_le_bytes(bits[4..8].try_into().unwrap());
        let w3 = u32::from_le_bytes(bits[12..16].try_into().unwrap());
        assert_eq!((w0, w1, w3), (1 | 1 << 31, 1, 1 << 3));
        for r in 0..128 {
            assert_eq!(test_bit(&bits, r), [0, 31, 32, 99].contains(&r), "{r}");
        }
        assert!(!test_bit(&bits, 128) && !test_bit(&bits, u64::MAX));
        set_bit(&mut bits, 128); // beyond: ignored
        clear_bit(&mut bits, u64::MAX);
        clear_bit(&mut bits, 31);
        assert_eq!(bits[3], 0);
        assert_eq!(count_set(&bits), 3);
    }

    #[test]
    fn fill_and_find() {
        let mut bits = [0u8; 16];
        fill_bits(&mut bits, 3..70, true);
        assert_eq!(count_set(&bits), 67);
        assert_eq!(bits[0], 0xf8);
        assert_eq!(bits[1..8], [0xff; 7]);
        assert_eq!(bits[8], 0x3f);
        fill_bits(&mut bits, 60..1000, false);
        assert_eq!(count_set(&bits), 57);
        assert_eq!(bits[7], 0x0f);
        assert_eq!(find_next_zero_bit(&bits, 100, 0), Some(0));
        assert_eq!(find_next_zero_bit(&bits, 100, 3), Some(60));
        assert_eq!(find_next_zero_bit(&bits, 60, 3), None);
        assert_eq!(find_next_zero_bit(&bits, 200, 150), Some(150));
        let full = [0xffu8; 16];
        assert_eq!(find_next_zero_bit(&full, 128, 0), None);
        assert_eq!(find_next_zero_bit(&full, 129, 5), Some(128));
        let mut one = [0xffu8; 16];
        clear_bit(&mut one, 77);
        assert_eq!(find_next_zero_bit(&one, 128, 1), Some(77));
        assert_eq!(find_next_zero_bit(&one, 128, 78), None);
    }

    #[test]
    fn region_math() {
        assert_eq!(nr_regions(1000, 8), Some(125));
        assert_eq!(nr_regions(1001, 8), Some(126));
        assert_eq!(nr_regions(1, 1024), Some(1));
        assert_eq!(nr_regions(0, 8), Some(0));
        assert_eq!(nr_regions(8, 0), None);
        assert_eq!(nr_regions(u64::MAX, 2), Some(1 << 63));
        assert_eq!(region_of(0, 1024), 0);
        assert_eq!(region_of(1023, 1024), 0);
        assert_eq!(region_of(1024, 1024), 1);
        assert_eq!(region_of(5, 0), 0);
        assert_eq!(region_start(3, 1024), 3072);
        assert_eq!(region_start(u64::MAX, 2), u64::MAX);
        // The last region of a 1001-sector line with 8-sector regions.
        assert_eq!(region_len(124, 8, 1001), 8);
        assert_eq!(region_len(125, 8, 1001), 1);
        assert_eq!(region_len(126, 8, 1001), 0);
        assert_eq!(regions(0, 0, 8), 0..0);
        assert_eq!(regions(0, 8, 8), 0..1);
        assert_eq!(regions(7, 2, 8), 0..2);
        assert_eq!(regions(8, 16, 8), 1..3);
        assert_eq!(regions(1000, 1, 8), 125..126);
        assert_eq!(regions(u64::MAX - 1, 10, 2), (u64::MAX >> 1)..(1 << 63));
    }
}
