// SPDX-License-Identifier: GPL-2.0
//! The checksummed header of a metadata block in device-mapper's
//! persistent-data convention (dm-thin's superblock, btree nodes, space-map
//! bitmaps and index blocks all start this way), so that vblk's thin
//! metadata is the one `thin_check` reads:
//!
//! | bytes | what |
//! |---|---|
//! | 0..4 | `crc32c(!0, bytes 4..end) ^ salt`, little-endian (no final inversion: dm's `dm_bm_checksum`) |
//! | 4..8 | the format's own (btree node flags, padding) |
//! | 8..16 | the block's own number, little-endian (a block written to the wrong place is caught) |
//! | 16.. | the format's payload |
//!
//! The salt tells block kinds apart: a btree node does not check as a
//! bitmap. The checksum function is a parameter: the kernel passes its
//! `crc32c`, the host tests a bitwise reference. Pure `core`, host-tested
//! (also against metadata `thin_restore` wrote).

use core::fmt;

/// Bytes of the header; the payload follows.
pub const HEADER_BYTES: usize = 16;

/// dm-thin's salts (`SUPERBLOCK_CSUM_XOR` and the persistent-data
/// library's `BTREE_CSUM_XOR`, `BITMAP_CSUM_XOR`, `INDEX_CSUM_XOR`).
pub const SALT_SUPERBLOCK: u32 = 160_774;
/// A btree node.
pub const SALT_BTREE: u32 = 121_107;
/// A space-map bitmap.
pub const SALT_BITMAP: u32 = 240_779;
/// A space-map index.
pub const SALT_INDEX: u32 = 160_478;

/// A CRC-32C update: `crc32c(seed, bytes)` without the final inversion
/// (the kernel's `crc32c`).
pub type Crc32c = fn(u32, &[u8]) -> u32;

/// Why a block does not check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// Shorter than the header.
    TooSmall(usize),
    /// The block says it is another block.
    Location { found: u64, want: u64 },
    /// The checksum does not match the contents with this salt (changed,
    /// another kind of block, or never written).
    Checksum { found: u32, want: u32 },
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BlockError::TooSmall(n) => write!(f, "a block of {n} bytes has no room for its header"),
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
/// update function `crc32c`: the check the module runs on the kernel's.
pub fn checksum(crc32c: Crc32c, bytes: &[u8]) -> u32 {
    !crc32c(!0, bytes)
}

/// dm's block checksum: CRC-32C of everything after the checksum field,
/// without the final inversion, xor `salt`.
pub fn block_checksum(crc32c: Crc32c, block: &[u8], salt: u32) -> u32 {
    crc32c(!0, &block[4..]) ^ salt
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Writes block `nr`'s number and checksum (salted with `salt`) into its
/// header, the checksum last (over everything after it).
pub fn seal(block: &mut [u8], salt: u32, nr: u64, crc32c: Crc32c) -> Result<(), BlockError> {
    if block.len() < HEADER_BYTES {
        return Err(BlockError::TooSmall(block.len()));
    }
    block[8..16].copy_from_slice(&nr.to_le_bytes());
    let sum = block_checksum(crc32c, block, salt);
    block[0..4].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// Checks that `block` is block `nr` of the kind `salt` names, unchanged
/// since it was sealed.
pub fn verify(block: &[u8], salt: u32, nr: u64, crc32c: Crc32c) -> Result<(), BlockError> {
    if block.len() < HEADER_BYTES {
        return Err(BlockError::TooSmall(block.len()));
    }
    let sum = block_checksum(crc32c, block, salt);
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

/// The checksum [`seal`] gives a 512-byte block of zeros numbered 7 with
/// [`SALT_BTREE`] (checked by the host tests and at module load).
pub const LOAD_CHECK_SUM: u32 = 0x0A0B_C3E9;

#[cfg(test)]
/// Bitwise CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the
/// reference the kernel's table-driven `crc32c` must agree with.
pub fn crc32c_soft(mut crc: u32, bytes: &[u8]) -> u32 {
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

/// Metadata `thin_restore` writes from `xml` into a zeroed image of
/// `bytes` bytes (host tests; thin-provisioning-tools is installed by
/// scripts/setup.sh).
#[cfg(test)]
pub fn thin_restore(xml: &str, bytes: usize) -> std::vec::Vec<u8> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RUN: AtomicU32 = AtomicU32::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vblk-restore-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (x, meta) = (dir.join("pool.xml"), dir.join("meta.bin"));
    std::fs::write(&x, xml).unwrap();
    std::fs::write(&meta, std::vec![0u8; bytes]).unwrap();
    let out = std::process::Command::new("thin_restore")
        .arg("-i")
        .arg(&x)
        .arg("-o")
        .arg(&meta)
        .output()
        .expect("thin_restore (thin-provisioning-tools, installed by scripts/setup.sh)");
    assert!(
        out.status.success(),
        "thin_restore: {}",
        std::string::String::from_utf8_lossy(&out.stderr)
    );
    let image = std::fs::read(&meta).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_values() {
        // The CRC-32C check value (RFC 3720's iSCSI CRC).
        assert_eq!(checksum(crc32c_soft, b"123456789"), 0xE306_9283);
        assert_eq!(checksum(crc32c_soft, &[0u8; 32]), 0x8A91_36AA);
        assert_eq!(checksum(crc32c_soft, &[0xffu8; 32]), 0x62A8_AB43);
    }

    /// The value the module checks its sealing against at load (a 512-byte
    /// block of zeros, block 7, dm's btree salt): the kernel's path and
    /// this one are the same function.
    #[test]
    fn module_load_vector() {
        let mut block = [0u8; 512];
        seal(&mut block, SALT_BTREE, 7, crc32c_soft).unwrap();
        assert_eq!(le32(&block[0..4]), LOAD_CHECK_SUM);
    }

    #[test]
    fn sealed_blocks_verify() {
        let mut block = [0x5au8; 512];
        seal(&mut block, SALT_BITMAP, 9, crc32c_soft).unwrap();
        assert_eq!(&block[4..8], &[0x5a; 4], "bytes 4..8 are the format's");
        assert_eq!(&block[8..16], &9u64.to_le_bytes());
        assert_eq!(verify(&block, SALT_BITMAP, 9, crc32c_soft), Ok(()));
        assert_eq!(
            verify(&block, SALT_BITMAP, 10, crc32c_soft),
            Err(BlockError::Location { found: 9, want: 10 })
        );
        // Another kind of block with the same bytes does not check.
        assert!(matches!(
            verify(&block, SALT_BTREE, 9, crc32c_soft),
            Err(BlockError::Checksum { .. })
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

    /// Metadata dm's own tools wrote checks with these salts: the
    /// superblock, and the two btree roots it names (thin_restore from a
    /// one-device XML; thin-provisioning-tools is installed by setup).
    #[test]
    fn thin_restore_metadata_checks() {
        let image = super::thin_restore(
            "<superblock uuid=\"\" time=\"1\" transaction=\"3\" flags=\"0\" version=\"2\" \
             data_block_size=\"128\" nr_data_blocks=\"1024\">\n\
             <device dev_id=\"1\" mapped_blocks=\"2\" transaction=\"0\" creation_time=\"0\" snap_time=\"1\">\n\
             <range_mapping origin_begin=\"0\" data_begin=\"10\" length=\"2\" time=\"1\"/>\n\
             </device>\n</superblock>\n",
            4 << 20,
        );
        let block = |nr: u64| &image[nr as usize * 4096..(nr as usize + 1) * 4096];
        let sb = block(0);
        assert_eq!(verify(sb, SALT_SUPERBLOCK, 0, crc32c_soft), Ok(()));
        assert!(verify(sb, SALT_BTREE, 0, crc32c_soft).is_err());
        // data_mapping_root and device_details_root follow the two
        // 128-byte space-map roots.
        let root = |at: usize| u64::from_le_bytes(sb[at..at + 8].try_into().unwrap());
        for nr in [root(320), root(328)] {
            assert!(
                nr > 0 && (nr as usize + 1) * 4096 <= image.len(),
                "root {nr}"
            );
            assert_eq!(
                verify(block(nr), SALT_BTREE, nr, crc32c_soft),
                Ok(()),
                "node {nr}"
            );
        }
        // Resealing a copy gives dm's bytes back.
        let mut copy = sb.to_vec();
        copy[0..4].fill(0);
        seal(&mut copy, SALT_SUPERBLOCK, 0, crc32c_soft).unwrap();
        assert_eq!(copy, sb);
    }
}
