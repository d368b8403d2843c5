// SPDX-License-Identifier: GPL-2.0
//! RAID-4/5 arguments and geometry, as dm-raid parses its table line and
//! md lays out data and parity (drivers/md/dm-raid.c and raid5.c, Linux
//! 6.12). Pure `core`, no allocation, host-tested through vblkctl; the
//! raid5 target (issue 16) maps with it.
//!
//! `<raid_type> <#raid_params> <chunk_size> [<option>...] <#raid_devs> (<meta_dev|-> <data_dev>)...`
//!
//! Geometry: the array is cut in chunks of `chunk_sectors`; a *stripe* is
//! one chunk per leg at the same leg offset, `legs - 1` of them data and
//! one parity (the XOR of the data chunks). Chunk `c` of the array is data
//! chunk `c % (legs - 1)` of stripe `c / (legs - 1)`; which leg holds the
//! parity, and which leg each data chunk, is the algorithm's:
//!
//! | raid type | md algorithm | parity leg of stripe `s` (`n` legs) | data chunk `i` |
//! |---|---|---|---|
//! | `raid4` | `PARITY_0` (dm-raid's raid4: parity first) | 0 | leg `i + 1` |
//! | `raid5_n` | `PARITY_N` | `n - 1` | leg `i` |
//! | `raid5_la` | `LEFT_ASYMMETRIC` | `n - 1 - s % n` | leg `i`, or `i + 1` from the parity leg on |
//! | `raid5_ra` | `RIGHT_ASYMMETRIC` | `s % n` | as `raid5_la` |
//! | `raid5_ls` | `LEFT_SYMMETRIC` (md's default) | `n - 1 - s % n` | leg `(p + 1 + i) % n` |
//! | `raid5_rs` | `RIGHT_SYMMETRIC` | `s % n` | leg `(p + 1 + i) % n` |

use core::fmt;

/// Fewest legs (dm-raid's minimum for raid4/5: one data leg and parity).
pub const MIN_LEGS: u32 = 2;
/// Most legs this target takes (dm-raid allows 253): one batch of the
/// target's own I/O reaches at most 32 devices, and a stripe's legs are
/// bits of a word.
pub const MAX_LEGS: u32 = 32;
/// Smallest chunk in sectors (4 KiB: a page per leg and chunk).
pub const MIN_CHUNK_SECTORS: u64 = 8;

/// Where a stripe's parity goes and how its data chunks follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// `raid4`: parity on the first leg (dm-raid maps it to md's
    /// `ALGORITHM_PARITY_0`).
    Parity0,
    /// `raid5_n`: parity on the last leg.
    ParityN,
    /// `raid5_la`: parity rotates from the last leg down; data in leg
    /// order around it.
    LeftAsymmetric,
    /// `raid5_ra`: parity rotates from the first leg up; data in leg
    /// order around it.
    RightAsymmetric,
    /// `raid5_ls`: parity from the last leg down; data starts after it
    /// and wraps.
    LeftSymmetric,
    /// `raid5_rs`: parity from the first leg up; data starts after it and
    /// wraps.
    RightSymmetric,
}

impl Algorithm {
    /// The algorithm of a dm-raid raid type name (raid4/5 only).
    pub fn from_raid_type(name: &str) -> Option<Self> {
        Some(match name {
            "raid4" => Algorithm::Parity0,
            "raid5_n" => Algorithm::ParityN,
            "raid5_la" => Algorithm::LeftAsymmetric,
            "raid5_ra" => Algorithm::RightAsymmetric,
            "raid5_ls" => Algorithm::LeftSymmetric,
            "raid5_rs" => Algorithm::RightSymmetric,
            _ => return None,
        })
    }

    /// The raid type as the table names it.
    pub fn raid_type(self) -> &'static str {
        match self {
            Algorithm::Parity0 => "raid4",
            Algorithm::ParityN => "raid5_n",
            Algorithm::LeftAsymmetric => "raid5_la",
            Algorithm::RightAsymmetric => "raid5_ra",
            Algorithm::LeftSymmetric => "raid5_ls",
            Algorithm::RightSymmetric => "raid5_rs",
        }
    }
}

/// Where an array sector lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// The stripe (also the chunk number on every leg).
    pub stripe: u64,
    /// Which data chunk of the stripe (0 .. legs - 1).
    pub index: u32,
    /// The leg holding it, and the stripe's parity leg.
    pub leg: u32,
    pub parity_leg: u32,
    /// The sector on the leg (same on every leg of the stripe).
    pub leg_sector: u64,
}

/// An array's shape: legs, chunk size, algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub legs: u32,
    pub chunk_sectors: u64,
    pub algorithm: Algorithm,
}

impl Geometry {
    /// Data chunks per stripe.
    pub fn data_legs(&self) -> u32 {
        self.legs - 1
    }

    /// Data sectors per stripe.
    pub fn stripe_data_sectors(&self) -> u64 {
        self.chunk_sectors * u64::from(self.data_legs())
    }

    /// The leg holding stripe `stripe`'s parity.
    pub fn parity_leg(&self, stripe: u64) -> u32 {
        let n = u64::from(self.legs);
        let rotation = (stripe % n) as u32;
        match self.algorithm {
            Algorithm::Parity0 => 0,
            Algorithm::ParityN => self.legs - 1,
            Algorithm::LeftAsymmetric | Algorithm::LeftSymmetric => self.legs - 1 - rotation,
            Algorithm::RightAsymmetric | Algorithm::RightSymmetric => rotation,
        }
    }

    /// The leg holding data chunk `index` of stripe `stripe`.
    pub fn data_leg(&self, stripe: u64, index: u32) -> u32 {
        let parity = self.parity_leg(stripe);
        match self.algorithm {
            Algorithm::Parity0 => index + 1,
            Algorithm::ParityN => index,
            Algorithm::LeftAsymmetric | Algorithm::RightAsymmetric => {
                if index >= parity {
                    index + 1
                } else {
                    index
                }
            }
            Algorithm::LeftSymmetric | Algorithm::RightSymmetric => {
                (parity + 1 + index) % self.legs
            }
        }
    }

    /// Which data chunk of stripe `stripe` leg `leg` holds (`None`: the
    /// parity). The inverse of [`Geometry::data_leg`].
    pub fn data_index(&self, stripe: u64, leg: u32) -> Option<u32> {
        let parity = self.parity_leg(stripe);
        if leg == parity || leg >= self.legs {
            return None;
        }
        Some(match self.algorithm {
            Algorithm::Parity0 => leg - 1,
            Algorithm::ParityN => leg,
            Algorithm::LeftAsymmetric | Algorithm::RightAsymmetric => {
                if leg > parity {
                    leg - 1
                } else {
                    leg
                }
            }
            Algorithm::LeftSymmetric | Algorithm::RightSymmetric => {
                (leg + self.legs - parity - 1) % self.legs
            }
        })
    }

    /// Where array sector `sector` lives.
    pub fn place(&self, sector: u64) -> Place {
        let chunk = sector / self.chunk_sectors;
        let within = sector % self.chunk_sectors;
        let data = u64::from(self.data_legs());
        let stripe = chunk / data;
        let index = (chunk % data) as u32;
        Place {
            stripe,
            index,
            leg: self.data_leg(stripe, index),
            parity_leg: self.parity_leg(stripe),
            leg_sector: stripe * self.chunk_sectors + within,
        }
    }

    /// The array sector at `within` sectors into data chunk `index` of
    /// stripe `stripe`. The inverse of [`Geometry::place`].
    pub fn array_sector(&self, stripe: u64, index: u32, within: u64) -> u64 {
        (stripe * u64::from(self.data_legs()) + u64::from(index)) * self.chunk_sectors + within
    }
}

/// What a write does to one data chunk's page in a row of a stripe (a
/// row: the same 4 KiB on every leg, md's `stripe_head`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageWrite {
    Untouched,
    /// Some of its sectors: the old page is needed to fill the rest.
    Partial,
    Full,
}

/// How a row's new parity is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Parity = XOR of every data page, old ones read (reconstruct-write;
    /// no read for a full row).
    Reconstruct,
    /// Parity = old parity XOR old data XOR new data of the written pages
    /// (read-modify-write).
    ReadModifyWrite,
    /// The parity leg is gone: data pages are written alone.
    DataOnly,
}

/// A row write's plan: the legs to read first and the legs written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowPlan {
    pub mode: WriteMode,
    /// Legs read before the parity is computed (bit `i`: leg `i`).
    pub reads: u64,
    /// Legs written: the live data legs written to, and the parity leg.
    pub writes: u64,
}

/// A row write that cannot be done: more legs are gone than parity
/// covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyFailed;

impl Geometry {
    /// Plans a write to one row of stripe `stripe`: `pages[i]` is what it
    /// does to data chunk `i`; `failed` the legs that can be neither read
    /// nor written; `in_sync` whether the row's parity is known good (a
    /// row not yet synced must not be read-modify-written: its parity
    /// would carry the old error on, as md forces reconstruct-write
    /// there). Chooses the mode with fewer reads, read-modify-write only
    /// when strictly cheaper (md's default).
    pub fn plan_row(
        &self,
        stripe: u64,
        pages: &[PageWrite],
        failed: u64,
        in_sync: bool,
    ) -> Result<RowPlan, TooManyFailed> {
        let all = (1u64 << self.legs) - 1;
        let failed = failed & all;
        if failed.count_ones() > 1 {
            return Err(TooManyFailed);
        }
        let parity = 1u64 << self.parity_leg(stripe);
        let mut written = 0u64; // data legs written (Partial or Full)
        let mut partial = 0u64;
        let mut untouched = 0u64;
        for (i, page) in pages.iter().enumerate().take(self.data_legs() as usize) {
            let leg = 1u64 << self.data_leg(stripe, i as u32);
            match page {
                PageWrite::Untouched => untouched |= leg,
                PageWrite::Partial => {
                    written |= leg;
                    partial |= leg;
                }
                PageWrite::Full => written |= leg,
            }
        }
        let writes = (written | parity) & !failed;
        if failed & parity != 0 {
            // A partly written page is written whole: its old page first.
            return Ok(RowPlan {
                mode: WriteMode::DataOnly,
                reads: partial & !failed,
                writes,
            });
        }
        if failed & partial != 0 {
            // The old page of the lost leg is needed: rebuilt from every
            // other leg, parity included; then the parity is remade.
            return Ok(RowPlan {
                mode: WriteMode::Reconstruct,
                reads: all & !failed,
                writes,
            });
        }
        let rmw_reads = written | parity;
        let rcw_reads = untouched | partial;
        let rmw_ok = rmw_reads & failed == 0 && in_sync;
        let rcw_ok = rcw_reads & failed == 0;
        let rmw_cheaper = rmw_reads.count_ones() < rcw_reads.count_ones();
        let mode = match (rmw_ok, rcw_ok) {
            (true, true) if rmw_cheaper => WriteMode::ReadModifyWrite,
            (_, true) => WriteMode::Reconstruct,
            (true, false) => WriteMode::ReadModifyWrite,
            // Not in sync and a lost untouched page: the parity cannot be
            // trusted to rebuild what it must keep.
            (false, false) => return Err(TooManyFailed),
        };
        let reads = match mode {
            WriteMode::ReadModifyWrite => rmw_reads,
            _ => rcw_reads,
        };
        Ok(RowPlan {
            mode,
            reads,
            writes,
        })
    }
}

/// Sectors in a row's page (4 KiB).
pub const ROW_SECTORS: u64 = 8;

impl Geometry {
    /// Rows per chunk.
    pub fn rows_per_chunk(&self) -> u64 {
        self.chunk_sectors / ROW_SECTORS
    }

    /// What a write of array sectors `[offset, offset + len)` does to row
    /// `row` of stripe `stripe`, page by page (`out[i]`: data chunk `i`);
    /// whether it touches the row at all.
    pub fn row_pages(
        &self,
        stripe: u64,
        row: u64,
        offset: u64,
        len: u64,
        out: &mut [PageWrite],
    ) -> bool {
        let end = offset.saturating_add(len);
        let mut any = false;
        for (i, page) in out.iter_mut().enumerate().take(self.data_legs() as usize) {
            let start = self.array_sector(stripe, i as u32, row * ROW_SECTORS);
            let stop = start + ROW_SECTORS;
            *page = if offset <= start && end >= stop {
                PageWrite::Full
            } else if offset < stop && end > start {
                PageWrite::Partial
            } else {
                PageWrite::Untouched
            };
            any |= *page != PageWrite::Untouched;
        }
        any
    }

    /// The sectors of data chunk `index` of stripe `stripe` that array
    /// sectors `[offset, offset + len)` cover inside the chunk's window
    /// `[lo, hi)` (sectors from the chunk's start), as a range of the
    /// same kind; `None` if they cover none.
    pub fn chunk_span(
        &self,
        stripe: u64,
        index: u32,
        (lo, hi): (u64, u64),
        offset: u64,
        len: u64,
    ) -> Option<(u64, u64)> {
        let base = self.array_sector(stripe, index, 0);
        let start = offset.max(base + lo);
        let end = offset.saturating_add(len).min(base + hi);
        (start < end).then(|| (start - base, end - base))
    }

    /// The stripes `[offset, offset + len)` touches (`len` > 0).
    pub fn stripes(&self, offset: u64, len: u64) -> core::ops::RangeInclusive<u64> {
        let per = self.stripe_data_sectors();
        offset / per..=(offset + len.max(1) - 1) / per
    }
}

/// Bits `[s, e)` of a 128-sector mask (a unit's sectors, one bit each;
/// `e` ≤ 128): which sectors of a window some write covers.
pub fn sector_bits(s: u64, e: u64) -> u128 {
    let upto = |n: u64| {
        if n >= 128 {
            u128::MAX
        } else {
            (1u128 << n) - 1
        }
    };
    upto(e) & !upto(s)
}

/// `dst ^= src` byte for byte (parity), over the shorter of the two.
pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (dw, sw) in (&mut d).zip(&mut s) {
        let x = u64::from_ne_bytes([dw[0], dw[1], dw[2], dw[3], dw[4], dw[5], dw[6], dw[7]])
            ^ u64::from_ne_bytes([sw[0], sw[1], sw[2], sw[3], sw[4], sw[5], sw[6], sw[7]]);
        dw.copy_from_slice(&x.to_ne_bytes());
    }
    for (db, sb) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *db ^= sb;
    }
}

/// How the array starts (dm-raid's `sync`/`nosync`, or neither).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// Neither: parity is computed over the whole array unless the
    /// metadata says it is in sync.
    Default,
    /// `sync`: compute parity over the whole array.
    Force,
    /// `nosync`: the caller knows the legs agree (zeroed).
    Skip,
}

/// The parsed table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaidArgs<'a> {
    pub geometry: Geometry,
    pub sync: Sync,
    /// Legs to rebuild from the others (bit `i`: leg `i`).
    pub rebuild: u64,
    /// Sectors per region of the write-intent log (0: choose).
    pub region_size: u64,
    /// Write-intent log flush delay in ms (0: default).
    pub daemon_sleep_ms: u64,
    /// Resync speed bounds in KiB/s per leg (0: no bound).
    pub min_recovery_rate: u64,
    pub max_recovery_rate: u64,
    /// Stripe cache entries (0: default).
    pub stripe_cache: u64,
    /// `<meta_dev|-> <data_dev>` words, in leg order.
    legs_text: &'a str,
}

impl<'a> RaidArgs<'a> {
    /// Each leg's metadata device (`None` for `-`) and data device.
    pub fn legs(&self) -> impl Iterator<Item = (Option<&'a str>, &'a str)> + 'a {
        let text: &'a str = self.legs_text;
        let mut words = text.split_ascii_whitespace();
        core::iter::from_fn(move || {
            let meta = words.next()?;
            let data = words.next()?;
            Some(((meta != "-").then_some(meta), data))
        })
    }
}

/// What is wrong with a table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaidError<'a> {
    /// Fewer words than `<raid_type> <#raid_params> <chunk_size>
    /// <#raid_devs>` need.
    TooShort,
    UnknownType(&'a str),
    /// A raid type dm-raid has that this target does not (raid0/1/6/10).
    OtherLevel(&'a str),
    /// `<#raid_params>`, `<#raid_devs>` or an option value is not a
    /// number.
    NotNumber(&'a str, &'a str),
    /// `<#raid_params>` counts more words than there are.
    ParamCount(u64),
    BadChunk(u64),
    UnknownOption(&'a str),
    /// An option dm-raid has that this target refuses (with why).
    Refused(&'a str, &'static str),
    /// An option without its value.
    MissingValue(&'a str),
    /// `sync` and `nosync` together.
    SyncAndNosync,
    LegCount(u64),
    /// `<#raid_devs>` says `.0` legs, `.1` words of devices follow.
    DeviceWords(u64, usize),
    RebuildIndex(u64, u32),
    /// More legs to rebuild than parity can cover (raid4/5: one).
    TooManyRebuilds,
    /// The region size is not a power of two, or below a chunk.
    BadRegion(u64),
    /// The line's length is not a multiple of a stripe's data.
    Length(u64, u64),
}

impl fmt::Display for RaidError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RaidError::TooShort => f.write_str(
                "raid: expected <raid_type> <#raid_params> <chunk_size> [options] <#raid_devs> <meta_dev|-> <data_dev>...",
            ),
            RaidError::UnknownType(t) => write!(
                f,
                "raid: unknown raid type '{t}' (raid4, raid5_n, raid5_la, raid5_ra, raid5_ls, raid5_rs)"
            ),
            RaidError::OtherLevel(t) => write!(
                f,
                "raid: raid type '{t}' is not supported (raid4 and raid5 only)"
            ),
            RaidError::NotNumber(what, w) => write!(f, "raid: {what} '{w}' is not a number"),
            RaidError::ParamCount(n) => write!(
                f,
                "raid: <#raid_params> is {n}, more than the words that follow"
            ),
            RaidError::BadChunk(c) => write!(
                f,
                "raid: chunk size {c} is not a power of two of at least {MIN_CHUNK_SECTORS} sectors"
            ),
            RaidError::UnknownOption(o) => write!(f, "raid: unknown option '{o}'"),
            RaidError::Refused(o, why) => write!(f, "raid: option '{o}' is not supported: {why}"),
            RaidError::MissingValue(o) => write!(f, "raid: option '{o}' needs a value"),
            RaidError::SyncAndNosync => f.write_str("raid: 'sync' and 'nosync' exclude each other"),
            RaidError::LegCount(n) => write!(
                f,
                "raid: {n} legs; raid4/5 take {MIN_LEGS} to {MAX_LEGS}"
            ),
            RaidError::DeviceWords(n, got) => write!(
                f,
                "raid: <#raid_devs> is {n}: expected {} device words (<meta_dev|-> <data_dev> each), got {got}",
                2 * n
            ),
            RaidError::RebuildIndex(i, legs) => write!(
                f,
                "raid: rebuild index {i} is out of range (the array has {legs} legs)"
            ),
            RaidError::TooManyRebuilds => {
                f.write_str("raid: raid4/5 can rebuild one leg at a time")
            }
            RaidError::BadRegion(r) => write!(
                f,
                "raid: region size {r} is not a power of two of at least the chunk size"
            ),
            RaidError::Length(len, stripe) => write!(
                f,
                "raid: the line's length {len} is not a multiple of a stripe's data ({stripe} sectors)"
            ),
        }
    }
}

fn number<'a>(what: &'a str, word: &'a str) -> Result<u64, RaidError<'a>> {
    word.parse::<u64>()
        .map_err(|_| RaidError::NotNumber(what, word))
}

/// Parses a `raid` line's arguments for a line of `length` sectors.
pub fn parse(args: &str, length: u64) -> Result<RaidArgs<'_>, RaidError<'_>> {
    let mut words = args.split_ascii_whitespace();
    let raid_type = words.next().ok_or(RaidError::TooShort)?;
    let algorithm = match Algorithm::from_raid_type(raid_type) {
        Some(a) => a,
        None if raid_type.starts_with("raid") => {
            let known = [
                "raid0",
                "raid1",
                "raid10",
                "raid6_zr",
                "raid6_nr",
                "raid6_nc",
                "raid6_la_6",
                "raid6_ra_6",
                "raid6_ls_6",
                "raid6_rs_6",
                "raid6_n_6",
            ];
            if known.contains(&raid_type) {
                return Err(RaidError::OtherLevel(raid_type));
            }
            return Err(RaidError::UnknownType(raid_type));
        }
        None => return Err(RaidError::UnknownType(raid_type)),
    };
    let nparams_word = words.next().ok_or(RaidError::TooShort)?;
    let nparams = number("<#raid_params>", nparams_word)?;
    if nparams == 0 {
        return Err(RaidError::TooShort);
    }
    let chunk_word = words.next().ok_or(RaidError::TooShort)?;
    let chunk = number("chunk size", chunk_word)?;
    if chunk < MIN_CHUNK_SECTORS || !chunk.is_power_of_two() {
        return Err(RaidError::BadChunk(chunk));
    }
    let mut out = RaidArgs {
        geometry: Geometry {
            legs: 0,
            chunk_sectors: chunk,
            algorithm,
        },
        sync: Sync::Default,
        rebuild: 0,
        region_size: 0,
        daemon_sleep_ms: 0,
        min_recovery_rate: 0,
        max_recovery_rate: 0,
        stripe_cache: 0,
        legs_text: "",
    };
    let mut rebuild_raw = [0u64; 2];
    let mut rebuilds = 0usize;
    let mut left = nparams - 1;
    while left > 0 {
        let opt = words.next().ok_or(RaidError::ParamCount(nparams))?;
        left -= 1;
        let flag = match opt {
            "sync" | "nosync" => {
                let want = if opt == "sync" { Sync::Force } else { Sync::Skip };
                if out.sync != Sync::Default && out.sync != want {
                    return Err(RaidError::SyncAndNosync);
                }
                out.sync = want;
                continue;
            }
            "rebuild" | "region_size" | "daemon_sleep" | "min_recovery_rate"
            | "max_recovery_rate" | "stripe_cache" => opt,
            "write_mostly" | "max_write_behind" => {
                return Err(RaidError::Refused(opt, "raid1 only (dm-raid)"))
            }
            "raid10_copies" | "raid10_format" => {
                return Err(RaidError::Refused(opt, "raid10 only (dm-raid)"))
            }
            "journal_dev" | "journal_mode" => {
                return Err(RaidError::Refused(
                    opt,
                    "no journal device; the write hole is closed by the metadata devices' partial parity log",
                ))
            }
            "delta_disks" | "data_offset" => {
                return Err(RaidError::Refused(opt, "no reshape"))
            }
            _ => return Err(RaidError::UnknownOption(opt)),
        };
        if left == 0 {
            return Err(RaidError::MissingValue(flag));
        }
        let value_word = words.next().ok_or(RaidError::ParamCount(nparams))?;
        left -= 1;
        let value = number(flag, value_word)?;
        match flag {
            "rebuild" => {
                if rebuilds == rebuild_raw.len() {
                    return Err(RaidError::TooManyRebuilds);
                }
                rebuild_raw[rebuilds] = value;
                rebuilds += 1;
            }
            "region_size" => out.region_size = value,
            "daemon_sleep" => out.daemon_sleep_ms = value,
            "min_recovery_rate" => out.min_recovery_rate = value,
            "max_recovery_rate" => out.max_recovery_rate = value,
            _ => out.stripe_cache = value,
        }
    }
    let ndevs_word = words.next().ok_or(RaidError::TooShort)?;
    let ndevs = number("<#raid_devs>", ndevs_word)?;
    if ndevs < u64::from(MIN_LEGS) || ndevs > u64::from(MAX_LEGS) {
        return Err(RaidError::LegCount(ndevs));
    }
    let legs = ndevs as u32;
    out.geometry.legs = legs;
    // The rest of the line after `<#raid_devs>` (a word of `args`).
    let rest = ndevs_word.as_ptr() as usize - args.as_ptr() as usize + ndevs_word.len();
    let legs_text = &args[rest..];
    let device_words = legs_text.split_ascii_whitespace().count();
    if device_words as u64 != 2 * ndevs {
        return Err(RaidError::DeviceWords(ndevs, device_words));
    }
    out.legs_text = legs_text;
    for &index in &rebuild_raw[..rebuilds] {
        if index >= u64::from(legs) {
            return Err(RaidError::RebuildIndex(index, legs));
        }
        out.rebuild |= 1 << index;
    }
    if out.rebuild.count_ones() > 1 {
        return Err(RaidError::TooManyRebuilds);
    }
    if out.region_size != 0 && (!out.region_size.is_power_of_two() || out.region_size < chunk) {
        return Err(RaidError::BadRegion(out.region_size));
    }
    let stripe = out.geometry.stripe_data_sectors();
    if length == 0 || length / stripe * stripe != length {
        return Err(RaidError::Length(length, stripe));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Algorithm; 6] = [
        Algorithm::Parity0,
        Algorithm::ParityN,
        Algorithm::LeftAsymmetric,
        Algorithm::RightAsymmetric,
        Algorithm::LeftSymmetric,
        Algorithm::RightSymmetric,
    ];

    fn geo(legs: u32, algorithm: Algorithm) -> Geometry {
        Geometry {
            legs,
            chunk_sectors: 8,
            algorithm,
        }
    }

    /// The legs of stripes 0..4 of a 4-leg array: `P` parity, else the
    /// array chunk number (md's pictures in raid5.c and mdadm(8)).
    fn picture(algorithm: Algorithm) -> [[char; 4]; 4] {
        let g = geo(4, algorithm);
        let mut out = [['?'; 4]; 4];
        for (stripe, row) in out.iter_mut().enumerate() {
            row[g.parity_leg(stripe as u64) as usize] = 'P';
            for index in 0..3 {
                let chunk = stripe as u32 * 3 + index;
                row[g.data_leg(stripe as u64, index) as usize] =
                    char::from_digit(chunk, 16).unwrap();
            }
        }
        out
    }

    #[test]
    fn md_pictures() {
        let rows = |s: [&str; 4]| {
            s.map(|r| {
                let mut row = ['?'; 4];
                for (i, c) in r.chars().enumerate() {
                    row[i] = c;
                }
                row
            })
        };
        assert_eq!(
            picture(Algorithm::LeftSymmetric),
            rows(["012P", "45P3", "8P67", "P9ab"])
        );
        assert_eq!(
            picture(Algorithm::LeftAsymmetric),
            rows(["012P", "34P5", "6P78", "P9ab"])
        );
        assert_eq!(
            picture(Algorithm::RightAsymmetric),
            rows(["P012", "3P45", "67P8", "9abP"])
        );
        assert_eq!(
            picture(Algorithm::RightSymmetric),
            rows(["P012", "5P34", "78P6", "9abP"])
        );
        assert_eq!(
            picture(Algorithm::Parity0),
            rows(["P012", "P345", "P678", "P9ab"])
        );
        assert_eq!(
            picture(Algorithm::ParityN),
            rows(["012P", "345P", "678P", "9abP"])
        );
    }

    #[test]
    fn place_and_back() {
        for algorithm in ALL {
            for legs in [2u32, 3, 4, 5, 7] {
                let g = geo(legs, algorithm);
                for stripe in 0..3 * u64::from(legs) {
                    let mut seen = 0u64;
                    for index in 0..g.data_legs() {
                        let leg = g.data_leg(stripe, index);
                        assert!(leg < legs && leg != g.parity_leg(stripe));
                        assert_eq!(g.data_index(stripe, leg), Some(index));
                        seen |= 1 << leg;
                    }
                    seen |= 1 << g.parity_leg(stripe);
                    assert_eq!(seen, (1u64 << legs) - 1, "{algorithm:?} {legs} legs");
                    assert_eq!(g.data_index(stripe, g.parity_leg(stripe)), None);
                }
                for sector in (0..2000).step_by(3) {
                    let p = g.place(sector);
                    assert_eq!(g.array_sector(p.stripe, p.index, p.leg_sector % 8), sector);
                    assert_eq!(p.leg_sector / 8, p.stripe);
                }
            }
        }
    }

    #[test]
    fn rotation_spreads_parity() {
        for algorithm in [
            Algorithm::LeftAsymmetric,
            Algorithm::RightAsymmetric,
            Algorithm::LeftSymmetric,
            Algorithm::RightSymmetric,
        ] {
            let g = geo(5, algorithm);
            let mut count = [0; 5];
            for s in 0..50 {
                count[g.parity_leg(s) as usize] += 1;
            }
            assert_eq!(count, [10; 5]);
        }
    }

    #[test]
    fn parses_dm_raid_lines() {
        let a = parse(
            "raid5_ls 3 64 region_size 1024 3 - /dev/a - /dev/b - /dev/c",
            2 * 64 * 10,
        )
        .unwrap();
        assert_eq!(a.geometry.legs, 3);
        assert_eq!(a.geometry.chunk_sectors, 64);
        assert_eq!(a.geometry.algorithm, Algorithm::LeftSymmetric);
        assert_eq!(a.region_size, 1024);
        let legs: Vec<_> = a.legs().collect();
        assert_eq!(legs, [(None, "/dev/a"), (None, "/dev/b"), (None, "/dev/c")]);
        let a = parse(
            "raid4 4 8 nosync rebuild 1 3 /dev/m0 /dev/a - /dev/b - /dev/c",
            16,
        )
        .unwrap();
        assert_eq!(a.sync, Sync::Skip);
        assert_eq!(a.rebuild, 2);
        assert_eq!(a.legs().next(), Some((Some("/dev/m0"), "/dev/a")));
        assert_eq!(a.geometry.algorithm, Algorithm::Parity0);
        let a = parse("raid5_n 1 8 2 - 8:0 - 8:16", 64).unwrap();
        assert_eq!(a.geometry.data_legs(), 1);
        assert_eq!(a.sync, Sync::Default);
    }

    #[test]
    fn refuses_bad_lines() {
        fn bad(s: &str, len: u64) -> RaidError<'_> {
            parse(s, len).unwrap_err()
        }
        assert_eq!(bad("", 16), RaidError::TooShort);
        assert_eq!(
            bad("raid7 1 8 2 - a - b", 16),
            RaidError::UnknownType("raid7")
        );
        assert_eq!(
            bad("raid1 1 8 2 - a - b", 16),
            RaidError::OtherLevel("raid1")
        );
        assert_eq!(
            bad("raid5_ls x 8 2 - a - b", 16),
            RaidError::NotNumber("<#raid_params>", "x")
        );
        assert_eq!(bad("raid5_ls 1 12 2 - a - b", 24), RaidError::BadChunk(12));
        assert_eq!(bad("raid5_ls 1 0 2 - a - b", 16), RaidError::BadChunk(0));
        assert_eq!(bad("raid5_ls 1 4 2 - a - b", 16), RaidError::BadChunk(4));
        assert_eq!(
            bad("raid5_ls 2 8 bogus 2 - a - b", 16),
            RaidError::UnknownOption("bogus")
        );
        assert_eq!(
            bad("raid5_ls 2 8 rebuild", 16),
            RaidError::MissingValue("rebuild")
        );
        assert_eq!(
            bad("raid5_ls 3 8 sync nosync 2 - a - b", 16),
            RaidError::SyncAndNosync
        );
        assert_eq!(bad("raid5_ls 1 8 1 - a", 8), RaidError::LegCount(1));
        assert_eq!(
            bad("raid5_ls 1 8 3 - a - b", 16),
            RaidError::DeviceWords(3, 4)
        );
        assert_eq!(
            bad("raid5_ls 3 8 rebuild 3 3 - a - b - c", 16),
            RaidError::RebuildIndex(3, 3)
        );
        assert_eq!(
            bad("raid5_ls 5 8 rebuild 0 rebuild 1 3 - a - b - c", 16),
            RaidError::TooManyRebuilds
        );
        assert_eq!(
            bad("raid5_ls 3 8 region_size 12 2 - a - b", 16),
            RaidError::BadRegion(12)
        );
        assert_eq!(
            bad("raid5_ls 1 8 3 - a - b - c", 24),
            RaidError::Length(24, 16)
        );
        assert_eq!(bad("raid5_ls 3 8 sync", 16), RaidError::ParamCount(3));
        assert!(matches!(
            bad("raid5_ls 3 8 write_mostly 1 2 - a - b", 16),
            RaidError::Refused("write_mostly", _)
        ));
        assert!(matches!(
            bad("raid5_ls 3 8 journal_dev x 2 - a - b", 16),
            RaidError::Refused("journal_dev", _)
        ));
    }
    #[test]
    fn plans_rows_as_md() {
        use PageWrite::{Full, Partial, Untouched};
        // 5 legs, left-symmetric, stripe 0: parity on leg 4, data 0..3 on
        // legs 0..3.
        let g = geo(5, Algorithm::LeftSymmetric);
        let plan =
            |pages: &[PageWrite], failed: u64, in_sync: bool| g.plan_row(0, pages, failed, in_sync);
        let full = plan(&[Full; 4], 0, true).unwrap();
        assert_eq!(full.mode, WriteMode::Reconstruct);
        assert_eq!((full.reads, full.writes), (0, 0b11111));
        // One page: read it and the parity (2) rather than 3 others.
        let one = plan(&[Full, Untouched, Untouched, Untouched], 0, true).unwrap();
        assert_eq!(one.mode, WriteMode::ReadModifyWrite);
        assert_eq!((one.reads, one.writes), (0b10001, 0b10001));
        // Three pages: read the fourth (1) rather than 3 + parity.
        let three = plan(&[Full, Full, Full, Untouched], 0, true).unwrap();
        assert_eq!(three.mode, WriteMode::Reconstruct);
        assert_eq!(three.reads, 0b01000);
        // Two of four: 3 reads either way, reconstruct-write (md's tie).
        let two = plan(&[Full, Full, Untouched, Untouched], 0, true).unwrap();
        assert_eq!((two.mode, two.reads), (WriteMode::Reconstruct, 0b01100));
        // A partial page is read in both modes.
        let part = plan(&[Partial, Full, Full, Full], 0, true).unwrap();
        assert_eq!((part.mode, part.reads), (WriteMode::Reconstruct, 0b00001));
        // Not in sync: never read-modify-write.
        let dirty = plan(&[Full, Untouched, Untouched, Untouched], 0, false).unwrap();
        assert_eq!((dirty.mode, dirty.reads), (WriteMode::Reconstruct, 0b01110));
        // Degraded: the parity leg gone: data alone.
        let nop = plan(&[Full, Untouched, Untouched, Untouched], 0b10000, true).unwrap();
        assert_eq!(
            (nop.mode, nop.reads, nop.writes),
            (WriteMode::DataOnly, 0, 0b00001)
        );
        let part = plan(&[Partial, Untouched, Untouched, Untouched], 0b10000, true).unwrap();
        assert_eq!(
            (part.mode, part.reads, part.writes),
            (WriteMode::DataOnly, 0b00001, 0b00001)
        );
        // An untouched page's leg gone: only read-modify-write works.
        let rmw = plan(&[Full, Full, Full, Untouched], 0b01000, true).unwrap();
        assert_eq!((rmw.mode, rmw.reads), (WriteMode::ReadModifyWrite, 0b10111));
        // A written page's leg gone: reconstruct-write, not written there.
        let rcw = plan(&[Full, Untouched, Untouched, Untouched], 0b00001, true).unwrap();
        assert_eq!(
            (rcw.mode, rcw.reads, rcw.writes),
            (WriteMode::Reconstruct, 0b01110, 0b10000)
        );
        // A partial page's leg gone: rebuild it from all the others.
        let rebuild = plan(&[Partial, Untouched, Untouched, Untouched], 0b00001, true).unwrap();
        assert_eq!(
            (rebuild.mode, rebuild.reads),
            (WriteMode::Reconstruct, 0b11110)
        );
        // Two legs gone, or a lost untouched page in a row not in sync.
        assert_eq!(plan(&[Full; 4], 0b00011, true), Err(TooManyFailed));
        assert_eq!(
            plan(&[Full, Full, Full, Untouched], 0b01000, false),
            Err(TooManyFailed)
        );
    }

    #[test]
    fn xor_makes_parity() {
        let a: Vec<u8> = (0..37u8).collect();
        let b: Vec<u8> = (0..37u8).map(|x| x.wrapping_mul(7) ^ 0x5a).collect();
        let mut p = vec![0u8; 37];
        xor_into(&mut p, &a);
        xor_into(&mut p, &b);
        // Any leg is the XOR of the others.
        let mut again = p.clone();
        xor_into(&mut again, &b);
        assert_eq!(again, a);
        for i in 0..37 {
            assert_eq!(p[i], a[i] ^ b[i]);
        }
    }
    #[test]
    fn sector_bits_cover_the_range() {
        assert_eq!(sector_bits(0, 0), 0);
        assert_eq!(sector_bits(0, 8), 0xff);
        assert_eq!(sector_bits(8, 16), 0xff00);
        assert_eq!(sector_bits(0, 128), u128::MAX);
        assert_eq!(sector_bits(120, 128), 0xffu128 << 120);
        // Two writes of a window, together whole.
        assert_eq!(
            sector_bits(0, 64) | sector_bits(64, 128),
            sector_bits(0, 128)
        );
    }

    #[test]
    fn chunk_span_is_the_window_part_of_a_range() {
        let g = Geometry {
            legs: 4,
            chunk_sectors: 256,
            algorithm: Algorithm::LeftSymmetric,
        };
        // Stripe 1's data chunk 0 starts at array sector 768.
        assert_eq!(g.chunk_span(1, 0, (0, 128), 768 + 10, 20), Some((10, 30)));
        assert_eq!(g.chunk_span(1, 0, (128, 256), 768 + 10, 20), None);
        // A range over chunks 0 and 1: chunk 1 has its first 16 sectors.
        assert_eq!(g.chunk_span(1, 1, (0, 128), 768 + 200, 72), Some((0, 16)));
        assert_eq!(
            g.chunk_span(1, 0, (128, 256), 768 + 200, 72),
            Some((200, 256))
        );
    }

    #[test]
    fn row_pages_of_a_write() {
        use PageWrite::{Full, Partial, Untouched};
        // 4 legs (3 data), 16-sector chunks: 2 rows per chunk; a stripe
        // holds 48 array sectors: chunk 0 = 0..16, 1 = 16..32, 2 = 32..48.
        let g = Geometry {
            legs: 4,
            chunk_sectors: 16,
            algorithm: Algorithm::LeftSymmetric,
        };
        assert_eq!(g.rows_per_chunk(), 2);
        let mut p = [Untouched; 3];
        // Sectors 4..28: row 0 of chunk 0 partly (4..8), row 1 of chunk 0
        // fully (8..16), row 0 of chunk 1 fully (16..24), row 1 partly.
        assert!(g.row_pages(0, 0, 4, 24, &mut p));
        assert_eq!(p, [Partial, Full, Untouched]);
        assert!(g.row_pages(0, 1, 4, 24, &mut p));
        assert_eq!(p, [Full, Partial, Untouched]);
        assert!(!g.row_pages(1, 0, 4, 24, &mut p));
        assert_eq!(p, [Untouched; 3]);
        // A whole stripe: every page of every row full.
        for row in 0..2 {
            assert!(g.row_pages(2, row, 96, 48, &mut p));
            assert_eq!(p, [Full; 3]);
        }
        assert_eq!(g.stripes(40, 16), 0..=1);
        assert_eq!(g.stripes(48, 48), 1..=1);
    }
}
