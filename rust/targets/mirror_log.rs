// SPDX-License-Identifier: GPL-2.0
//! The `mirror` target's dirty region log: dm's on-disk format (the
//! `disk` log of drivers/md/dm-log.c, Linux 6.12), its resume rule, and
//! region math. Pure `core`, no allocation, host-tested through vblkctl.
//!
//! # The disk log, as dm-log.c writes it
//!
//! One buffer, read and written whole from sector 0 of the log device:
//!
//! | bytes | what |
//! |---|---|
//! | 0..4 | magic `0x4D695272` ("MiRr"), little-endian: `72 52 69 4d` |
//! | 4..8 | version, little-endian: 2 (1 is read as 2 on little-endian hosts) |
//! | 8..16 | number of regions, little-endian u64 |
//! | 16..1024 | not used by dm: kept as read from the device |
//! | 1024.. | the *clean* bits: bit `r` set = region `r` in sync |
//!
//! The bitset starts at `LOG_OFFSET` = 2 sectors and holds
//! `nr_regions` bits rounded up to whole `unsigned long`s (64 bits on
//! x86_64), in little-endian bit order (`test_bit_le`): region `r` is bit
//! `r % 8` of byte `r / 8`. The buffer (header + bitset) is rounded up to
//! the log device's logical block size; the bytes after the bitset are
//! kept as read. dm refuses a log device smaller than the buffer.
//!
//! # Writes and flushes (`disk_flush`)
//!
//! Marking a region dirty clears its bit, cleaning it sets the bit. A log
//! flush writes the whole buffer if a bit changed; if a bit was *cleared*
//! (a region dirtied) it then flushes the log device's cache
//! (`REQ_PREFLUSH`), so the dirty mark is durable before the data write it
//! protects is issued. If a bit was *set* (a region cleaned), dm first
//! flushes every leg (`mirror_flush`), so the data is durable before the
//! region is recorded clean; if that fails, every region is marked dirty.
//! See [`flush_plan`].

use core::fmt;

// Bit math, the framework's (its region tracking uses it too).
use crate::vblk::bitmap::{count_set, fill_bits};

/// dm's `MIRROR_MAGIC`: "MiRr".
pub const MAGIC: u32 = 0x4D69_5272;
/// dm's `MIRROR_DISK_VERSION`.
pub const VERSION: u32 = 2;
/// Bytes of the header dm writes (`struct log_header_disk`, packed).
pub const HEADER_BYTES: usize = 16;
/// Where the bitset starts: dm's `LOG_OFFSET` (2 sectors), in bytes.
pub const BITSET_OFFSET: usize = 1024;
/// The bitset is a whole number of these (dm's `BITS_PER_LONG`, x86_64).
pub const BITSET_WORD_BITS: u64 = 64;
/// Most regions a log holds (dm's `region_count` is an `unsigned int`).
pub const MAX_REGIONS: u64 = u32::MAX as u64;

/// The log's `[no]sync` argument (dm-log.c's `enum sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// No argument (`DEFAULTSYNC`): resync what the log says is out of
    /// sync; with a core log, or a disk log without a valid header,
    /// everything.
    Default,
    /// `sync` (`FORCESYNC`): ignore the disk log, resync everything.
    Force,
    /// `nosync` (`NOSYNC`): the legs are known to be identical; nothing
    /// is resynced (regions added by growing the device neither).
    No,
}

impl SyncMode {
    /// The argument as dm prints it in TABLE (`None` for the default).
    pub fn arg(self) -> Option<&'static str> {
        match self {
            SyncMode::Default => None,
            SyncMode::Force => Some("sync"),
            SyncMode::No => Some("nosync"),
        }
    }
}

/// A disk log header (`struct log_header_core`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub magic: u32,
    pub version: u32,
    pub nr_regions: u64,
}

/// What is wrong with a log buffer; `Display` gives the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogError {
    /// The buffer holds `got` bytes, the operation needs `need`.
    BufferTooSmall { need: u64, got: usize },
    /// The first 4 bytes are not dm's magic (a new, never used log).
    BadMagic(u32),
    /// dm's magic, but a version dm does not read (dm fails the log).
    BadVersion(u32),
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LogError::BufferTooSmall { need, got } => write!(
                f,
                "mirror log: buffer of {got} bytes is too small, {need} bytes needed"
            ),
            LogError::BadMagic(found) => write!(
                f,
                "mirror log: no log header (magic {found:#010x}, dm's is {MAGIC:#010x}): a new log"
            ),
            LogError::BadVersion(found) => write!(
                f,
                "mirror log: incompatible disk log version {found} (dm reads version {VERSION}, and 1)"
            ),
        }
    }
}

fn le_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn le_u64(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn too_small(need: u64, buf: &[u8]) -> LogError {
    LogError::BufferTooSmall {
        need,
        got: buf.len(),
    }
}

/// Reads the header fields as they are (no check beyond the length).
pub fn read_header(buf: &[u8]) -> Result<Header, LogError> {
    match (le_u32(buf, 0), le_u32(buf, 4), le_u64(buf, 8)) {
        (Some(magic), Some(version), Some(nr_regions)) => Ok(Header {
            magic,
            version,
            nr_regions,
        }),
        _ => Err(too_small(HEADER_BYTES as u64, buf)),
    }
}

/// Reads a header dm would accept: dm's magic and version 2 (or 1, which
/// dm reads as 2 on little-endian hosts; returned as found).
pub fn decode_header(buf: &[u8]) -> Result<Header, LogError> {
    let h = read_header(buf)?;
    if h.magic != MAGIC {
        return Err(LogError::BadMagic(h.magic));
    }
    if h.version != VERSION && h.version != 1 {
        return Err(LogError::BadVersion(h.version));
    }
    Ok(h)
}

/// Writes `header` into the first [`HEADER_BYTES`] of `out` (the rest
/// is left alone).
pub fn write_header(header: &Header, out: &mut [u8]) -> Result<(), LogError> {
    let got = out.len();
    let Some(h) = out.get_mut(..HEADER_BYTES) else {
        return Err(LogError::BufferTooSmall {
            need: HEADER_BYTES as u64,
            got,
        });
    };
    let (magic, rest) = h.split_at_mut(4);
    let (version, regions) = rest.split_at_mut(4);
    magic.copy_from_slice(&header.magic.to_le_bytes());
    version.copy_from_slice(&header.version.to_le_bytes());
    regions.copy_from_slice(&header.nr_regions.to_le_bytes());
    Ok(())
}

/// Writes dm's header for a log of `nr_regions` (magic, version 2).
pub fn encode_header(nr_regions: u64, out: &mut [u8]) -> Result<(), LogError> {
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        nr_regions,
    };
    write_header(&header, out)
}

/// Bytes of the bitset for `nr_regions` (rounded up to 64-bit words).
pub fn bitset_bytes(nr_regions: u32) -> u64 {
    // At most 2^32 bits: no overflow in u64.
    u64::from(nr_regions)
        .div_ceil(BITSET_WORD_BITS)
        .saturating_mul(BITSET_WORD_BITS / 8)
}

/// Bytes dm reads and writes at the start of the log device: header and
/// bitset, rounded up to the device's logical block size. `None` for a
/// block size that is not a power of two of at least 512.
pub fn log_size_bytes(nr_regions: u32, logical_block_size: u32) -> Option<u64> {
    if logical_block_size < 512 || !logical_block_size.is_power_of_two() {
        return None;
    }
    let used = (BITSET_OFFSET as u64).checked_add(bitset_bytes(nr_regions))?;
    used.checked_next_multiple_of(u64::from(logical_block_size))
}

/// [`log_size_bytes`] in 512-byte sectors: the log device must hold at
/// least this many (dm: "log device ... too small").
pub fn log_size_sectors(nr_regions: u32, logical_block_size: u32) -> Option<u64> {
    log_size_bytes(nr_regions, logical_block_size).map(|b| b >> 9)
}

/// The bitset part of a log buffer for `nr_regions`.
pub fn bitset(buf: &[u8], nr_regions: u32) -> Result<&[u8], LogError> {
    let need = (BITSET_OFFSET as u64).saturating_add(bitset_bytes(nr_regions));
    usize::try_from(need)
        .ok()
        .and_then(|end| buf.get(BITSET_OFFSET..end))
        .ok_or(too_small(need, buf))
}

/// The bitset part of a log buffer for `nr_regions`, to change.
pub fn bitset_mut(buf: &mut [u8], nr_regions: u32) -> Result<&mut [u8], LogError> {
    let need = (BITSET_OFFSET as u64).saturating_add(bitset_bytes(nr_regions));
    let got = buf.len();
    usize::try_from(need)
        .ok()
        .and_then(|end| buf.get_mut(BITSET_OFFSET..end))
        .ok_or(LogError::BufferTooSmall { need, got })
}

/// What [`resume`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// Regions in sync afterwards (dm's `sync_count`, shown in status).
    pub in_sync: u64,
    /// Regions whose state was taken from the device (a valid header and
    /// no `sync`/`nosync`); the others were set by the sync mode.
    pub from_disk: u64,
    /// The log counts as failed (unreadable, or a version dm does not
    /// read): its status letter is `D` and dm raises an event.
    pub failed: bool,
}

/// dm's `disk_resume` on a buffer of [`log_size_bytes`] that was just read
/// from the log device (`read_ok`: the read succeeded): decides which
/// regions are in sync and prepares the buffer to be written back (then
/// the log device's cache is flushed). The bitset of `nr_regions` becomes
/// the sync state:
///
/// - `sync`, `nosync`, a header without dm's magic, or a failed read: a new
///   log. Every region is out of sync (cleared), or in sync (set) with
///   `nosync`.
/// - dm's magic with a version other than 2 (or 1): the log fails, and
///   every region is out of sync (or in sync with `nosync`).
/// - Otherwise the bits of the regions the header counted are kept;
///   regions beyond (the device grew) are out of sync, or in sync with
///   `nosync`.
///
/// Bits past `nr_regions` up to the end of its last 64-bit word are
/// cleared (the device may have shrunk). The header then says
/// `nr_regions`; its version is written back as found, as dm does (a log
/// with a bad version stays failed). Unlike dm, a failed read leaves a
/// fresh header (dm writes whatever its memory held). Bytes outside header
/// and bitset are left as read.
pub fn resume(
    buf: &mut [u8],
    nr_regions: u32,
    sync: SyncMode,
    read_ok: bool,
) -> Result<Resumed, LogError> {
    bitset(buf, nr_regions)?;
    let fresh = Header {
        magic: MAGIC,
        version: VERSION,
        nr_regions: 0,
    };
    let mut header = match read_header(buf) {
        Ok(h) if read_ok && sync == SyncMode::Default && h.magic == MAGIC => h,
        Ok(_) | Err(_) => fresh,
    };
    if header.version == 1 {
        header.version = VERSION;
    }
    let failed = !read_ok || header.version != VERSION;
    if failed {
        header.nr_regions = 0;
    }
    let count = u64::from(nr_regions);
    let kept = header.nr_regions.min(count);
    let bits = bitset_mut(buf, nr_regions)?;
    fill_bits(bits, kept..count, sync == SyncMode::No);
    fill_bits(bits, count..u64::MAX, false);
    let in_sync = count_set(bits);
    header.nr_regions = count;
    write_header(&header, buf)?;
    Ok(Resumed {
        in_sync,
        from_disk: kept,
        failed,
    })
}

/// Where vblk records its resync source: right after dm's header, in
/// bytes dm reads and writes back unchanged and never looks at.
pub const SOURCE_OFFSET: usize = HEADER_BYTES;
/// Marks a source record: "vbSR" in the log (little-endian).
pub const SOURCE_MAGIC: u32 = 0x5253_6276;
/// Bytes of a source record: magic, leg, dev_t, reserved, offset.
pub const SOURCE_BYTES: usize = 24;

/// Which leg holds the good copy of the regions that are not in sync (the
/// leg the resync copies from). It is leg 0 until that leg fails; then a
/// surviving leg takes over, and the log records it before any write that
/// skipped the failed leg completes, so that a reload (or a crash) never
/// copies a stale leg over the good one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceRecord {
    /// Its position in the table.
    pub leg: u32,
    /// The leg's device and offset when it was recorded: a table that
    /// lists the legs in another order still finds it.
    pub devt: u32,
    pub offset: u64,
}

/// The source record in a log buffer, if there is one.
pub fn read_source(buf: &[u8]) -> Option<SourceRecord> {
    if le_u32(buf, SOURCE_OFFSET)? != SOURCE_MAGIC {
        return None;
    }
    Some(SourceRecord {
        leg: le_u32(buf, SOURCE_OFFSET + 4)?,
        devt: le_u32(buf, SOURCE_OFFSET + 8)?,
        offset: le_u64(buf, SOURCE_OFFSET + 16)?,
    })
}

/// Writes `rec` into a log buffer (at least [`BITSET_OFFSET`] bytes).
pub fn write_source(rec: &SourceRecord, buf: &mut [u8]) -> Result<(), LogError> {
    let out = buf
        .get_mut(SOURCE_OFFSET..SOURCE_OFFSET + SOURCE_BYTES)
        .ok_or(LogError::BufferTooSmall {
            need: (SOURCE_OFFSET + SOURCE_BYTES) as u64,
            got: 0,
        })?;
    out[0..4].copy_from_slice(&SOURCE_MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&rec.leg.to_le_bytes());
    out[8..12].copy_from_slice(&rec.devt.to_le_bytes());
    out[12..16].fill(0);
    out[16..24].copy_from_slice(&rec.offset.to_le_bytes());
    Ok(())
}

/// The source leg of a table whose legs are `legs` (dev_t, offset), given
/// the log's record: the recorded device wherever the table lists it;
/// else the recorded position (a replaced device, or one whose dev_t
/// changed after a reboot); leg 0 without a record.
pub fn choose_source(rec: Option<SourceRecord>, legs: &[(u32, u64)]) -> usize {
    let Some(rec) = rec else { return 0 };
    let same = |&(devt, offset): &(u32, u64)| devt == rec.devt && offset == rec.offset;
    if legs.get(rec.leg as usize).is_some_and(same) {
        return rec.leg as usize;
    }
    if let Some(i) = legs.iter().position(same) {
        return i;
    }
    if (rec.leg as usize) < legs.len() {
        rec.leg as usize
    } else {
        0
    }
}

/// The I/O a log flush needs, in order (dm's `disk_flush`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushPlan {
    /// Flush every leg's cache first (a region was cleaned: its data must
    /// be durable before the log says so). If this fails, mark every
    /// region dirty before writing.
    pub flush_legs: bool,
    /// Write the whole log buffer.
    pub write: bool,
    /// Then flush the log device's cache (a region was dirtied: the mark
    /// must be durable before the data write it covers is issued).
    pub flush_log: bool,
}

/// What a flush of the disk log does after regions were `dirtied`
/// (bits cleared) and/or `cleaned` (bits set) since the last one.
pub fn flush_plan(dirtied: bool, cleaned: bool) -> FlushPlan {
    FlushPlan {
        flush_legs: cleaned,
        write: dirtied || cleaned,
        flush_log: dirtied,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::vblk::bitmap::{clear_bit, find_next_zero_bit};
    use std::vec;
    use std::vec::Vec;

    const HEADER_100: [u8; 16] = [
        0x72, 0x52, 0x69, 0x4d, // "rRiM": 0x4D695272 little-endian
        0x02, 0x00, 0x00, 0x00, // version 2
        0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 100 regions
    ];

    #[test]
    fn source_record() {
        let mut buf = vec![0x5a_u8; 1024];
        assert_eq!(read_source(&buf), None, "junk is no record");
        let rec = SourceRecord {
            leg: 1,
            devt: 0x0010_0003,
            offset: 0x1_0000_0002,
        };
        write_source(&rec, &mut buf).unwrap();
        assert_eq!(&buf[16..20], b"vbSR");
        assert_eq!(read_source(&buf), Some(rec));
        assert_eq!(buf[..16], [0x5a; 16], "dm's header untouched");
        assert_eq!(buf[40..], [0x5a; 984][..], "the rest untouched");
        assert!(write_source(&rec, &mut [0u8; 39]).is_err());
    }

    #[test]
    fn source_choice() {
        let rec = |leg, devt, offset| Some(SourceRecord { leg, devt, offset });
        let legs = [(10, 0), (11, 0), (12, 8)];
        assert_eq!(choose_source(None, &legs), 0, "no record: dm's leg 0");
        assert_eq!(choose_source(rec(1, 11, 0), &legs), 1, "same table");
        assert_eq!(choose_source(rec(1, 12, 8), &legs), 2, "legs reordered");
        assert_eq!(
            choose_source(rec(1, 12, 0), &legs),
            1,
            "offset differs: by position"
        );
        assert_eq!(
            choose_source(rec(1, 99, 0), &legs),
            1,
            "replaced or renumbered"
        );
        assert_eq!(choose_source(rec(5, 99, 0), &legs), 0, "no such leg");
        assert_eq!(choose_source(rec(5, 10, 0), &legs), 0, "found by device");
    }

    #[test]
    fn header_bytes() {
        let mut buf = [0xaa_u8; 20];
        encode_header(100, &mut buf).unwrap();
        assert_eq!(buf[..16], HEADER_100);
        assert_eq!(buf[16..], [0xaa; 4], "bytes after the header untouched");
        assert_eq!(&buf[..4], b"rRiM");
        let h = decode_header(&buf).unwrap();
        assert_eq!(
            h,
            Header {
                magic: MAGIC,
                version: 2,
                nr_regions: 100
            }
        );
        // Round trip of a large count.
        encode_header(0x0123_4567_89ab_cdef, &mut buf).unwrap();
        assert_eq!(buf[8..16], [0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01]);
        assert_eq!(
            decode_header(&buf).unwrap().nr_regions,
            0x0123_4567_89ab_cdef
        );
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            decode_header(&HEADER_100[..15]),
            Err(LogError::BufferTooSmall { need: 16, got: 15 })
        );
        assert_eq!(
            encode_header(1, &mut [0; 8]),
            Err(LogError::BufferTooSmall { need: 16, got: 8 })
        );
        assert_eq!(
            decode_header(&[0; 16]),
            Err(LogError::BadMagic(0)),
            "a zeroed device is a new log"
        );
        let mut v3 = HEADER_100;
        v3[4] = 3;
        assert_eq!(decode_header(&v3), Err(LogError::BadVersion(3)));
        let mut v1 = HEADER_100;
        v1[4] = 1;
        assert_eq!(decode_header(&v1).map(|h| h.version), Ok(1));
        let msg = std::format!("{}", LogError::BadMagic(0x1234));
        assert_eq!(
            msg,
            "mirror log: no log header (magic 0x00001234, dm's is 0x4d695272): a new log"
        );
        let msg = std::format!("{}", LogError::BadVersion(3));
        assert!(msg.contains("incompatible disk log version 3"), "{msg}");
    }

    #[test]
    fn sizes() {
        assert_eq!(bitset_bytes(0), 0);
        assert_eq!(bitset_bytes(1), 8);
        assert_eq!(bitset_bytes(64), 8);
        assert_eq!(bitset_bytes(65), 16);
        assert_eq!(bitset_bytes(100), 16);
        assert_eq!(bitset_bytes(u32::MAX), 1 << 29);
        // 1024 + 16 bytes, rounded to the block size.
        assert_eq!(log_size_bytes(100, 512), Some(1536));
        assert_eq!(log_size_sectors(100, 512), Some(3));
        assert_eq!(log_size_bytes(100, 4096), Some(4096));
        assert_eq!(log_size_sectors(100, 4096), Some(8));
        // 1024 + 8 KiB bitset for 65536 regions.
        assert_eq!(log_size_bytes(65536, 512), Some(9216));
        assert_eq!(log_size_bytes(65536, 4096), Some(12288));
        assert_eq!(log_size_bytes(0, 512), Some(1024));
        assert_eq!(log_size_bytes(1, 1000), None);
        assert_eq!(log_size_bytes(1, 256), None);
        assert_eq!(log_size_bytes(1, 0), None);
        assert_eq!(
            log_size_bytes(u32::MAX, 4096),
            Some(1024 * 1024 * 512 + 4096)
        );
    }

    /// A 100-region log buffer on a 512-byte-block device, filled with
    /// `junk` except for `header`.
    fn log_buf(header: Option<Header>, junk: u8) -> Vec<u8> {
        let mut buf = vec![junk; log_size_bytes(100, 512).unwrap() as usize];
        if let Some(h) = header {
            write_header(&h, &mut buf).unwrap();
        }
        buf
    }

    fn valid(nr_regions: u64) -> Option<Header> {
        Some(Header {
            magic: MAGIC,
            version: VERSION,
            nr_regions,
        })
    }

    #[test]
    fn resume_new_log() {
        // Never used (zeros, garbage): every region out of sync...
        for junk in [0x00, 0xff, 0x5a] {
            let mut buf = log_buf(None, junk);
            let r = resume(&mut buf, 100, SyncMode::Default, true).unwrap();
            assert_eq!(
                r,
                Resumed {
                    in_sync: 0,
                    from_disk: 0,
                    failed: false
                }
            );
            assert_eq!(buf[..16], HEADER_100);
            assert_eq!(buf[1024..1040], [0; 16]);
            assert_eq!(buf[16..1024], [junk; 1008][..], "unused bytes kept");
            assert_eq!(buf[1040..], [junk; 496][..], "padding kept");
        }
        // ... or all in sync with nosync; the word's tail stays clear.
        let mut buf = log_buf(None, 0);
        let r = resume(&mut buf, 100, SyncMode::No, true).unwrap();
        assert_eq!((r.in_sync, r.failed), (100, false));
        assert_eq!(buf[1024..1036], [0xff; 12]);
        assert_eq!(buf[1036..1040], [0x0f, 0, 0, 0]);
    }

    #[test]
    fn resume_keeps_valid_log() {
        let mut buf = log_buf(valid(100), 0xff);
        for r in [0, 31, 32, 99] {
            clear_bit(&mut buf[1024..], r);
        }
        let r = resume(&mut buf, 100, SyncMode::Default, true).unwrap();
        assert_eq!(
            r,
            Resumed {
                in_sync: 96,
                from_disk: 100,
                failed: false
            }
        );
        let bits = bitset(&buf, 100).unwrap();
        let want = [
            0xfe, 0xff, 0xff, 0x7f, // regions 0 and 31 dirty
            0xfe, 0xff, 0xff, 0xff, // region 32 dirty
            0xff, 0xff, 0xff, 0xff, // all clean
            0x07, 0x00, 0x00, 0x00, // region 99 dirty, 100..128 cleared
        ];
        assert_eq!(bits, want);
        assert_eq!(find_next_zero_bit(bits, 100, 0), Some(0));
        assert_eq!(find_next_zero_bit(bits, 100, 1), Some(31));
        assert_eq!(find_next_zero_bit(bits, 100, 33), Some(99));
        // Version 1 is read as 2 and written back as 2.
        let mut buf = log_buf(valid(100), 0xff);
        buf[4] = 1;
        let r = resume(&mut buf, 100, SyncMode::Default, true).unwrap();
        assert_eq!((r.in_sync, r.failed), (100, false));
        assert_eq!(buf[..16], HEADER_100);
    }

    #[test]
    fn resume_sync_modes_ignore_the_disk() {
        let mut buf = log_buf(valid(100), 0xff);
        let r = resume(&mut buf, 100, SyncMode::Force, true).unwrap();
        assert_eq!((r.in_sync, r.from_disk), (0, 0));
        let mut buf = log_buf(valid(100), 0);
        let r = resume(&mut buf, 100, SyncMode::No, true).unwrap();
        assert_eq!((r.in_sync, r.from_disk), (100, 0));
    }

    #[test]
    fn resume_grown_and_shrunk() {
        // Grown from 50 to 100 regions: 50..100 out of sync.
        let mut buf = log_buf(valid(50), 0xff);
        let r = resume(&mut buf, 100, SyncMode::Default, true).unwrap();
        assert_eq!((r.in_sync, r.from_disk), (50, 50));
        assert_eq!(decode_header(&buf).unwrap().nr_regions, 100);
        // Shrunk from 100 to 60: bits 60..64 cleared, 64.. outside.
        let mut buf = log_buf(valid(100), 0xff);
        let r = resume(&mut buf, 60, SyncMode::Default, true).unwrap();
        assert_eq!((r.in_sync, r.from_disk), (60, 60));
        assert_eq!(
            buf[1024..1032],
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]
        );
        assert_eq!(buf[1032], 0xff, "beyond the 60-region bitset: kept");
        let mut want = HEADER_100;
        want[8] = 60;
        assert_eq!(buf[..16], want);
    }

    #[test]
    fn resume_failures() {
        // A version dm does not read: the log fails, all out of sync, and
        // the version is written back as found (dm does).
        let mut buf = log_buf(valid(100), 0xff);
        buf[4] = 3;
        let r = resume(&mut buf, 100, SyncMode::Default, true).unwrap();
        assert_eq!(
            r,
            Resumed {
                in_sync: 0,
                from_disk: 0,
                failed: true
            }
        );
        assert_eq!(read_header(&buf).unwrap().version, 3);
        // sync/nosync make a new header before the version is checked.
        let mut buf = log_buf(valid(100), 0xff);
        buf[4] = 3;
        let r = resume(&mut buf, 100, SyncMode::No, true).unwrap();
        assert_eq!((r.in_sync, r.failed), (100, false));
        assert_eq!(buf[..16], HEADER_100);
        // A failed read: out of sync, fresh header.
        let mut buf = log_buf(valid(100), 0xff);
        let r = resume(&mut buf, 100, SyncMode::Default, false).unwrap();
        assert_eq!((r.in_sync, r.failed), (0, true));
        assert_eq!(buf[..16], HEADER_100);
        // Too small a buffer.
        let mut small = [0u8; 1039];
        assert_eq!(
            resume(&mut small, 100, SyncMode::Default, true),
            Err(LogError::BufferTooSmall {
                need: 1040,
                got: 1039
            })
        );
    }

    #[test]
    fn flushes() {
        assert_eq!(
            flush_plan(false, false),
            FlushPlan {
                flush_legs: false,
                write: false,
                flush_log: false
            }
        );
        assert_eq!(
            flush_plan(true, false),
            FlushPlan {
                flush_legs: false,
                write: true,
                flush_log: true
            }
        );
        assert_eq!(
            flush_plan(false, true),
            FlushPlan {
                flush_legs: true,
                write: true,
                flush_log: false
            }
        );
        assert_eq!(SyncMode::No.arg(), Some("nosync"));
        assert_eq!(SyncMode::Force.arg(), Some("sync"));
        assert_eq!(SyncMode::Default.arg(), None);
    }
}
