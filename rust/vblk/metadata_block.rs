// SPDX-License-Identifier: GPL-2.0
//! The header of a checksummed metadata block (vblk's own formats: raid5,
//! snapshot and thin metadata), as dm's persistent-data blocks carry one:
//!
//! | bytes | what |
//! |---|---|
//! | 0..4 | CRC-32C of bytes 4.. of the block, little-endian |
//! | 4..8 | the format's magic, little-endian |
//! | 8..16 | the block's own number, little-endian (a block written to the wrong place is caught) |
//! | 16.. | the format's payload |
//!
//! The checksum function is a parameter: the kernel passes its `crc32c`,
//! the host tests a bitwise reference. Pure `core`, host-tested.

use core::fmt;

/// Bytes of the header; the payload follows.
pub const HEADER_BYTES: usize = 16;

/// A CRC-32C update: `crc32c(seed, bytes)` without the final inversion
/// (the kernel's `crc32c`).
pub type Crc32c = fn(u32, &[u8]) -> u32;

/// Why a block does not check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// Shorter than the header.
    TooSmall(usize),
    /// Another format's block (or never written).
    Magic { found: u32, want: u32 },
    /// The block says it is another block.
    Location { found: u64, want: u64 },
    /// The checksum does not match the contents.
    Checksum { found: u32, want: u32 },
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BlockError::TooSmall(n) => write!(f, "a block of {n} bytes has no room for its header"),
            BlockError::Magic { found, want } => {
                write!(f, "magic {found:#010x}, expected {want:#010x}")
            }
            BlockError::Location { found, want } => {
                write!(f, "block {want} says it is block {found}")
            }
            BlockError::Checksum { found, want } => {
                write!(f, "checksum {found:#010x}, computed {want:#010x}")
            }
        }
    }
}

/// The standard CRC-32C of `bytes` (initial and final inversion) with the
/// update function `crc32c`.
pub fn checksum(crc32c: Crc32c, bytes: &[u8]) -> u32 {
    !crc32c(!0, bytes)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Writes the header of block `nr` of format `magic` into `block`, the
/// checksum last (over everything after it).
pub fn seal(block: &mut [u8], magic: u32, nr: u64, crc32c: Crc32c) -> Result<(), BlockError> {
    if block.len() < HEADER_BYTES {
        return Err(BlockError::TooSmall(block.len()));
    }
    block[4..8].copy_from_slice(&magic.to_le_bytes());
    block[8..16].copy_from_slice(&nr.to_le_bytes());
    let sum = checksum(crc32c, &block[4..]);
    block[0..4].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// Checks that `block` is block `nr` of format `magic`, unchanged since it
/// was sealed.
pub fn verify(block: &[u8], magic: u32, nr: u64, crc32c: Crc32c) -> Result<(), BlockError> {
    if block.len() < HEADER_BYTES {
        return Err(BlockError::TooSmall(block.len()));
    }
    let found = le32(&block[4..8]);
    if found != magic {
        return Err(BlockError::Magic { found, want: magic });
    }
    let sum = checksum(crc32c, &block[4..]);
    let stored = le32(&block[0..4]);
    if stored != sum {
        return Err(BlockError::Checksum {
            found: stored,
            want: sum,
        });
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&block[8..16]);
    let found = u64::from_le_bytes(n);
    if found != nr {
        return Err(BlockError::Location { found, want: nr });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bitwise CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the
    /// reference the kernel's table-driven `crc32c` must agree with.
    fn crc32c_soft(mut crc: u32, bytes: &[u8]) -> u32 {
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn standard_check_values() {
        // The CRC-32C check value (RFC 3720's iSCSI CRC).
        assert_eq!(checksum(crc32c_soft, b"123456789"), 0xE306_9283);
        assert_eq!(checksum(crc32c_soft, &[0u8; 32]), 0x8A91_36AA);
        assert_eq!(checksum(crc32c_soft, &[0xffu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn sealed_blocks_verify() {
        let mut block = [0x5au8; 512];
        seal(&mut block, 0x7662_6c6b, 9, crc32c_soft).unwrap();
        assert_eq!(&block[4..8], &0x7662_6c6bu32.to_le_bytes());
        assert_eq!(&block[8..16], &9u64.to_le_bytes());
        assert_eq!(verify(&block, 0x7662_6c6b, 9, crc32c_soft), Ok(()));
        assert_eq!(
            verify(&block, 0x7662_6c6b, 10, crc32c_soft),
            Err(BlockError::Location { found: 9, want: 10 })
        );
        assert!(matches!(
            verify(&block, 1, 9, crc32c_soft),
            Err(BlockError::Magic {
                found: 0x7662_6c6b,
                want: 1
            })
        ));
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let mut block = [0u8; 64];
        for (i, b) in block.iter_mut().enumerate() {
            *b = i as u8;
        }
        seal(&mut block, 42, 3, crc32c_soft).unwrap();
        for bit in 0..block.len() * 8 {
            let mut bad = block;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(verify(&bad, 42, 3, crc32c_soft).is_err(), "bit {bit}");
        }
        assert_eq!(
            seal(&mut [0u8; 15], 1, 0, crc32c_soft),
            Err(BlockError::TooSmall(15))
        );
        assert_eq!(
            verify(&[0u8; 3], 1, 0, crc32c_soft),
            Err(BlockError::TooSmall(3))
        );
    }
}
