// SPDX-License-Identifier: GPL-2.0
//! Arguments of the `mirror` target (RAID1), parsed and printed the way
//! dm-raid1 and its dirty region logs (drivers/md/dm-raid1.c and
//! dm-log.c, Linux 6.12) do, and its status line. Pure `core`, no
//! allocation, host-tested through vblkctl.
//!
//! `<log type> <#log args> <log args>... <#mirrors> (<dev> <offset>)... [<#features> <features>...]`
//!
//! - `core <#log args> <region size> [sync|nosync]`: the log is kept in
//!   memory (1 or 2 log arguments);
//! - `disk <#log args> <log dev> <region size> [sync|nosync]`: the log is
//!   kept on `<log dev>` in dm's format ([`super::mirror_log`]; 2 or 3
//!   log arguments);
//! - the region size is in sectors: a power of two, at least 2, at most
//!   the line's length (dm-log.c `_check_region_size`);
//! - 2 to [`MAX_MIRRORS`] legs, each `<dev> <offset>`;
//! - the features `handle_errors` and `keep_log` (which requires
//!   `handle_errors`), in any order, repeats allowed (as dm).
//!
//! The old log argument `block_on_error` is refused, as 6.12's dm-log.c
//! does (its last log argument may only be `sync` or `nosync`); the
//! `handle_errors` feature took its place.

use super::mirror_log::{self, SyncMode};
use core::fmt;

/// Fewest legs (dm's rule).
pub const MIN_MIRRORS: usize = 2;
/// Most legs: dm's `MAX_NR_MIRRORS` (`DM_KCOPYD_MAX_REGIONS + 1` = 9).
pub const MAX_MIRRORS: usize = 9;
/// Smallest region size in sectors (dm-log.c `_check_region_size`).
pub const MIN_REGION_SIZE: u32 = 2;

// Leg error bits, as dm-raid1's `enum dm_raid1_error` numbers them (bit
// `DM_RAID1_*_ERROR` of a leg's `error_type`).
/// A write to the leg failed (`DM_RAID1_WRITE_ERROR`).
pub const WRITE_ERROR: u32 = 1 << 0;
/// A cache flush of the leg failed (`DM_RAID1_FLUSH_ERROR`).
pub const FLUSH_ERROR: u32 = 1 << 1;
/// A resync copy to or from the leg failed (`DM_RAID1_SYNC_ERROR`).
pub const SYNC_ERROR: u32 = 1 << 2;
/// A read from the leg failed (`DM_RAID1_READ_ERROR`).
pub const READ_ERROR: u32 = 1 << 3;

/// The status letter of a leg with `errors` (a mask of [`WRITE_ERROR`],
/// ...), most severe first (dm-raid1 `device_status_char`): `A` alive,
/// `F` flush failed, `D` write failed (dead), `S` resync failed, `R` read
/// failed (data unaffected), `U` unknown bits.
pub fn leg_status_char(errors: u32) -> char {
    if errors == 0 {
        'A'
    } else if errors & FLUSH_ERROR != 0 {
        'F'
    } else if errors & WRITE_ERROR != 0 {
        'D'
    } else if errors & SYNC_ERROR != 0 {
        'S'
    } else if errors & READ_ERROR != 0 {
        'R'
    } else {
        'U'
    }
}

/// Where the dirty region log lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Log<'a> {
    /// `core`: in memory; a full resync on every activation (unless
    /// `nosync`).
    Core,
    /// `disk <log dev>`: on the named device, in dm's format.
    Disk(&'a str),
}

impl Log<'_> {
    /// The log type as the table names it.
    pub fn name(&self) -> &'static str {
        match self {
            Log::Core => "core",
            Log::Disk(_) => "disk",
        }
    }
}

/// The health of a disk log (dm-log.c `disk_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogHealth {
    /// `A`: no failure.
    Alive,
    /// `D`: a read or write of the log failed.
    Failed,
    /// `F`: a cache flush of the log device failed.
    FlushFailed,
}

impl LogHealth {
    /// The letter STATUS shows.
    pub fn status_char(self) -> char {
        match self {
            LogHealth::Alive => 'A',
            LogHealth::Failed => 'D',
            LogHealth::FlushFailed => 'F',
        }
    }
}

/// A device of the line, for the caller to print (`major:minor`, as dm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The disk log's device.
    Log,
    /// Leg `i` (0-based, table order).
    Leg(usize),
}

/// Writes a [`Device`] of the line the way TABLE and STATUS show it.
pub type WriteDevice<'f> = &'f dyn Fn(&mut dyn fmt::Write, Device) -> fmt::Result;

/// A parsed `mirror` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorArgs<'a> {
    pub log: Log<'a>,
    /// Sectors per region: a power of two, at least 2.
    pub region_size: u32,
    pub sync: SyncMode,
    /// Regions of the line: its length / region size, rounded up.
    pub nr_regions: u32,
    nr_mirrors: usize,
    /// `(device, offset)` per leg; only the first `nr_mirrors` are used.
    legs: [(&'a str, u64); MAX_MIRRORS],
    pub handle_errors: bool,
    pub keep_log: bool,
}

/// What is wrong with a `mirror` line; `Display` gives the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorError<'a> {
    /// Fewer than the 2 words a log needs (`<log type> <#log args>`).
    Count(usize),
    LogArgCount(&'a str),
    LogArgsMissing {
        declared: u32,
        present: usize,
    },
    UnknownLog(&'a str),
    /// `#log args` out of the log type's range (core 1-2, disk 2-3).
    LogArgs {
        log: &'static str,
        declared: u32,
    },
    SyncArg(&'a str),
    RegionSize(&'a str),
    RegionSizeNotPowerOfTwo(u32),
    RegionSizeTooSmall(u32),
    RegionSizeTooLarge {
        size: u32,
        length: u64,
    },
    TooManyRegions {
        regions: u64,
        size: u32,
    },
    NoMirrorCount,
    MirrorCount(&'a str),
    LegWords {
        mirrors: usize,
        words: usize,
    },
    Offset {
        leg: usize,
        text: &'a str,
    },
    FeatureCount(&'a str),
    FeaturesMissing {
        declared: u32,
        present: usize,
    },
    UnknownFeature(&'a str),
    KeepLogWithoutHandleErrors,
    /// Words left after the features: how many, and the first.
    Extra {
        count: usize,
        first: &'a str,
    },
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl fmt::Display for MirrorError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MirrorError::Count(got) => write!(
                f,
                "target 'mirror' takes '<log type> <#log args> <log args>... <#mirrors> (<dev> <offset>)... [<#features> <features>...]', got {got} argument{}",
                plural(got as u64)
            ),
            MirrorError::LogArgCount(text) => write!(
                f,
                "mirror: number of log arguments '{text}' is not a decimal number"
            ),
            MirrorError::LogArgsMissing { declared, present } => write!(
                f,
                "mirror: {declared} log argument{} declared, only {present} argument{} follow{}",
                plural(declared.into()),
                plural(present as u64),
                if present == 1 { "s" } else { "" }
            ),
            MirrorError::UnknownLog(text) => write!(
                f,
                "mirror: unknown log type '{text}' (core or disk)"
            ),
            MirrorError::LogArgs { log, declared } => {
                let usage = if log == "disk" {
                    "2 or 3 (<log device> <region size> [sync|nosync])"
                } else {
                    "1 or 2 (<region size> [sync|nosync])"
                };
                write!(
                    f,
                    "mirror: log type {log} takes {usage} log arguments, {declared} declared"
                )
            }
            MirrorError::SyncArg("block_on_error") => write!(
                f,
                "mirror: log argument 'block_on_error' is obsolete; use the feature handle_errors instead (append '1 handle_errors' to the line)"
            ),
            MirrorError::SyncArg(text) => write!(
                f,
                "mirror: last log argument '{text}' is neither sync nor nosync"
            ),
            MirrorError::RegionSize(text) => write!(
                f,
                "mirror: region size '{text}' is not a decimal number of sectors from 2 to 4294967295"
            ),
            MirrorError::RegionSizeNotPowerOfTwo(size) => write!(
                f,
                "mirror: region size {size} sectors is not a power of two"
            ),
            MirrorError::RegionSizeTooSmall(size) => write!(
                f,
                "mirror: region size {size} sector{} is below the minimum of {MIN_REGION_SIZE} sectors",
                plural(size.into())
            ),
            MirrorError::RegionSizeTooLarge { size, length } => write!(
                f,
                "mirror: region size {size} sectors is larger than the line ({length} sector{})",
                plural(length)
            ),
            MirrorError::TooManyRegions { regions, size } => write!(
                f,
                "mirror: {regions} regions of {size} sectors exceed the limit of {}; use a larger region size",
                mirror_log::MAX_REGIONS
            ),
            MirrorError::NoMirrorCount => write!(
                f,
                "mirror: the number of mirrors is missing after the log arguments"
            ),
            MirrorError::MirrorCount(text) => write!(
                f,
                "mirror: number of mirrors '{text}' is not a decimal number from {MIN_MIRRORS} to {MAX_MIRRORS}"
            ),
            MirrorError::LegWords { mirrors, words } => write!(
                f,
                "mirror: {mirrors} mirrors need {} '<dev> <offset>' words, got {words}",
                mirrors.saturating_mul(2)
            ),
            MirrorError::Offset { leg, text } => write!(
                f,
                "mirror: offset '{text}' of leg {leg} is not a decimal number of sectors"
            ),
            MirrorError::FeatureCount(text) => write!(
                f,
                "mirror: number of features '{text}' is not a decimal number"
            ),
            MirrorError::FeaturesMissing { declared, present } => write!(
                f,
                "mirror: {declared} feature{} declared, {present} present",
                plural(declared.into())
            ),
            MirrorError::UnknownFeature(text) => write!(
                f,
                "mirror: unknown feature '{text}' (handle_errors, keep_log)"
            ),
            MirrorError::KeepLogWithoutHandleErrors => write!(
                f,
                "mirror: feature keep_log requires feature handle_errors"
            ),
            MirrorError::Extra { count, first } => write!(
                f,
                "mirror: {count} argument{} too many after the features, from '{first}' on",
                plural(count as u64)
            ),
        }
    }
}

/// Decimal digits only, no sign (dm's `%u`/`%llu` as vblk reads them).
fn decimal_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn decimal_u32(text: &str) -> Option<u32> {
    decimal_u64(text).and_then(|n| u32::try_from(n).ok())
}

/// The line's words, counting those left.
struct Words<'a> {
    iter: core::str::SplitAsciiWhitespace<'a>,
    left: usize,
}

impl<'a> Words<'a> {
    /// The next word ("" past the end; callers check `left` first).
    fn take(&mut self) -> &'a str {
        self.left = self.left.saturating_sub(1);
        self.iter.next().unwrap_or("")
    }
}

/// Parses a `mirror` line of `length` sectors (its arguments, after the
/// target name). Device names are not checked here.
pub fn parse(args: &str, length: u64) -> Result<MirrorArgs<'_>, MirrorError<'_>> {
    let count = args.split_ascii_whitespace().count();
    let mut w = Words {
        iter: args.split_ascii_whitespace(),
        left: count,
    };
    if count < 2 {
        return Err(MirrorError::Count(count));
    }
    // dm-raid1 create_dirty_log: the count, then the type, then its args.
    let log_type = w.take();
    let log_count_text = w.take();
    let log_count = decimal_u32(log_count_text).ok_or(MirrorError::LogArgCount(log_count_text))?;
    // u32 fits usize on every target the kernel supports.
    if log_count as usize > w.left {
        return Err(MirrorError::LogArgsMissing {
            declared: log_count,
            present: w.left,
        });
    }
    let (disk, min) = match log_type {
        "core" => (false, 1),
        "disk" => (true, 2),
        other => return Err(MirrorError::UnknownLog(other)),
    };
    if !(min..=min + 1).contains(&log_count) {
        return Err(MirrorError::LogArgs {
            log: log_type_name(disk),
            declared: log_count,
        });
    }
    let log = if disk { Log::Disk(w.take()) } else { Log::Core };
    let region_text = w.take();
    // dm-log.c create_log_context: the sync argument, then the size.
    let sync = if log_count > min {
        match w.take() {
            "sync" => SyncMode::Force,
            "nosync" => SyncMode::No,
            other => return Err(MirrorError::SyncArg(other)),
        }
    } else {
        SyncMode::Default
    };
    let region_size = decimal_u32(region_text).ok_or(MirrorError::RegionSize(region_text))?;
    if region_size < MIN_REGION_SIZE {
        return Err(MirrorError::RegionSizeTooSmall(region_size));
    }
    if !region_size.is_power_of_two() {
        return Err(MirrorError::RegionSizeNotPowerOfTwo(region_size));
    }
    if u64::from(region_size) > length {
        return Err(MirrorError::RegionSizeTooLarge {
            size: region_size,
            length,
        });
    }
    let regions = crate::vblk::bitmap::nr_regions(length, region_size).unwrap_or(u64::MAX);
    let Ok(nr_regions) = u32::try_from(regions) else {
        return Err(MirrorError::TooManyRegions {
            regions,
            size: region_size,
        });
    };

    // The legs.
    if w.left == 0 {
        return Err(MirrorError::NoMirrorCount);
    }
    let mirrors_text = w.take();
    let nr_mirrors = decimal_u64(mirrors_text)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| (MIN_MIRRORS..=MAX_MIRRORS).contains(n))
        .ok_or(MirrorError::MirrorCount(mirrors_text))?;
    if w.left < nr_mirrors.saturating_mul(2) {
        return Err(MirrorError::LegWords {
            mirrors: nr_mirrors,
            words: w.left,
        });
    }
    let mut legs = [("", 0); MAX_MIRRORS];
    for (leg, slot) in legs.iter_mut().take(nr_mirrors).enumerate() {
        let dev = w.take();
        let text = w.take();
        let offset = decimal_u64(text).ok_or(MirrorError::Offset { leg, text })?;
        *slot = (dev, offset);
    }

    // The features (dm-raid1 parse_features), then nothing more.
    let (mut handle_errors, mut keep_log) = (false, false);
    if w.left > 0 {
        let text = w.take();
        let declared = decimal_u32(text).ok_or(MirrorError::FeatureCount(text))?;
        if declared as usize > w.left {
            return Err(MirrorError::FeaturesMissing {
                declared,
                present: w.left,
            });
        }
        for _ in 0..declared {
            match w.take() {
                "handle_errors" => handle_errors = true,
                "keep_log" => keep_log = true,
                other => return Err(MirrorError::UnknownFeature(other)),
            }
        }
        if keep_log && !handle_errors {
            return Err(MirrorError::KeepLogWithoutHandleErrors);
        }
        if w.left > 0 {
            let count = w.left;
            return Err(MirrorError::Extra {
                count,
                first: w.take(),
            });
        }
    }
    Ok(MirrorArgs {
        log,
        region_size,
        sync,
        nr_regions,
        nr_mirrors,
        legs,
        handle_errors,
        keep_log,
    })
}

fn log_type_name(disk: bool) -> &'static str {
    if disk {
        "disk"
    } else {
        "core"
    }
}

impl<'a> MirrorArgs<'a> {
    /// Number of legs (2 to [`MAX_MIRRORS`]).
    pub fn nr_mirrors(&self) -> usize {
        self.nr_mirrors
    }

    /// `(device text, offset)` of each leg, in table order.
    pub fn legs(&self) -> &[(&'a str, u64)] {
        self.legs.get(..self.nr_mirrors).unwrap_or(&[])
    }

    /// The same line without its device texts (which borrow the table
    /// text): for a target to keep, with the devices it opened.
    pub fn detached(&self) -> MirrorArgs<'static> {
        let mut legs = [("", 0); MAX_MIRRORS];
        for (to, from) in legs.iter_mut().zip(self.legs.iter()) {
            to.1 = from.1;
        }
        MirrorArgs {
            log: match self.log {
                Log::Core => Log::Core,
                Log::Disk(_) => Log::Disk(""),
            },
            region_size: self.region_size,
            sync: self.sync,
            nr_regions: self.nr_regions,
            nr_mirrors: self.nr_mirrors,
            legs,
            handle_errors: self.handle_errors,
            keep_log: self.keep_log,
        }
    }

    /// Writes the line's arguments as dm prints them for TABLE
    /// (dm-raid1 `mirror_status` with the log's `core_status` /
    /// `disk_status`): `core 1 1024 2 8:16 0 8:32 0 1 handle_errors`,
    /// `disk 3 8:48 1024 nosync 2 8:16 0 8:32 0`. `dev` writes the
    /// devices.
    pub fn write_table(&self, out: &mut dyn fmt::Write, dev: WriteDevice<'_>) -> fmt::Result {
        let extra = u32::from(self.sync != SyncMode::Default);
        match self.log {
            Log::Core => write!(out, "core {} {}", 1 + extra, self.region_size)?,
            Log::Disk(_) => {
                write!(out, "disk {} ", 2 + extra)?;
                dev(out, Device::Log)?;
                write!(out, " {}", self.region_size)?;
            }
        }
        if let Some(arg) = self.sync.arg() {
            write!(out, " {arg}")?;
        }
        write!(out, " {}", self.nr_mirrors)?;
        for (i, (_, offset)) in self.legs().iter().enumerate() {
            out.write_char(' ')?;
            dev(out, Device::Leg(i))?;
            write!(out, " {offset}")?;
        }
        let features = u32::from(self.handle_errors) + u32::from(self.keep_log);
        if features > 0 {
            write!(out, " {features}")?;
            if self.handle_errors {
                out.write_str(" handle_errors")?;
            }
            if self.keep_log {
                out.write_str(" keep_log")?;
            }
        }
        Ok(())
    }

    /// [`Self::write_table`] with the device texts as parsed.
    pub fn write_table_as_given(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        self.write_table(out, &|out, d| out.write_str(self.device_text(d)))
    }

    /// The text a device was given as ("" once detached).
    pub fn device_text(&self, device: Device) -> &'a str {
        match (device, self.log) {
            (Device::Log, Log::Disk(text)) => text,
            (Device::Log, Log::Core) => "",
            (Device::Leg(i), _) => self.legs().get(i).map_or("", |l| l.0),
        }
    }

    /// Writes the line's live status as dm prints it for STATUS
    /// (`mirror_status` STATUSTYPE_INFO):
    /// `<#mirrors> <dev>... <in sync>/<regions> 1 <leg letters> <log status>`,
    /// where the counts are *regions* (not sectors), each leg's letter is
    /// [`leg_status_char`] of its entry in `leg_errors` (missing entries:
    /// `A`), and the log status is `1 core` or
    /// `3 disk <log dev> <A|D|F>` (`log`; ignored for a core log). E.g.
    /// `2 8:16 8:32 97/100 1 AD 3 disk 8:48 A`.
    pub fn write_status_info(
        &self,
        out: &mut dyn fmt::Write,
        dev: WriteDevice<'_>,
        in_sync: u64,
        leg_errors: &[u32],
        log: LogHealth,
    ) -> fmt::Result {
        write!(out, "{}", self.nr_mirrors)?;
        for i in 0..self.nr_mirrors {
            out.write_char(' ')?;
            dev(out, Device::Leg(i))?;
        }
        write!(out, " {in_sync}/{} 1 ", self.nr_regions)?;
        for i in 0..self.nr_mirrors {
            out.write_char(leg_status_char(leg_errors.get(i).copied().unwrap_or(0)))?;
        }
        match self.log {
            Log::Core => out.write_str(" 1 core"),
            Log::Disk(_) => {
                out.write_str(" 3 disk ")?;
                dev(out, Device::Log)?;
                write!(out, " {}", log.status_char())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;

    fn table(args: &str, length: u64) -> String {
        let mut s = String::new();
        let a = parse(args, length).unwrap_or_else(|e| panic!("{args}: {e}"));
        a.write_table_as_given(&mut s).unwrap();
        s
    }

    /// Devices as `7:<n>`: the log `7:9`, leg i `7:i`.
    fn numbered(out: &mut dyn fmt::Write, d: Device) -> fmt::Result {
        match d {
            Device::Log => out.write_str("7:9"),
            Device::Leg(i) => write!(out, "7:{i}"),
        }
    }

    #[test]
    fn core_log() {
        let a = parse("core 1 1024 2 /dev/ram0 0 /dev/ram1 2048", 8192).unwrap();
        assert_eq!(a.log, Log::Core);
        assert_eq!(
            (a.region_size, a.sync, a.nr_regions),
            (1024, SyncMode::Default, 8)
        );
        assert_eq!(a.nr_mirrors(), 2);
        assert_eq!(a.legs(), &[("/dev/ram0", 0), ("/dev/ram1", 2048)]);
        assert!(!a.handle_errors && !a.keep_log);
        let mut s = String::new();
        a.write_table(&mut s, &numbered).unwrap();
        assert_eq!(s, "core 1 1024 2 7:0 0 7:1 2048");
        // Rounded up: 8193 sectors are 9 regions.
        assert_eq!(parse("core 1 1024 2 a 0 b 0", 8193).unwrap().nr_regions, 9);
        let line = "core 2 8 nosync 3 a 0 b 8 c 16 1 handle_errors";
        assert_eq!(table(line, 64), line);
        assert_eq!(parse(line, 64).unwrap().sync, SyncMode::No);
        let line = "core 2 2 sync 2 a 0 b 0";
        assert_eq!(table(line, 2), line);
    }

    #[test]
    fn disk_log() {
        let a = parse("disk 2 /dev/ram2 1024 2 /dev/ram0 0 /dev/ram1 0", 1 << 20).unwrap();
        assert_eq!(a.log, Log::Disk("/dev/ram2"));
        assert_eq!((a.sync, a.nr_regions), (SyncMode::Default, 1024));
        let mut s = String::new();
        a.write_table(&mut s, &numbered).unwrap();
        assert_eq!(s, "disk 2 7:9 1024 2 7:0 0 7:1 0");
        let line = "disk 3 8:48 64 sync 2 8:16 0 8:32 0 2 handle_errors keep_log";
        assert_eq!(table(line, 1000), line);
        // Features in dm's order, repeats folded, "0 features" dropped.
        assert_eq!(
            table(
                "disk 3 L 64 nosync 2 a 0 b 0 3 keep_log handle_errors keep_log",
                64
            ),
            "disk 3 L 64 nosync 2 a 0 b 0 2 handle_errors keep_log"
        );
        assert_eq!(table("core 1 64 2 a 0 b 0 0", 64), "core 1 64 2 a 0 b 0");
        // What TABLE prints parses back to the same line.
        let line = "disk 3 /dev/x 16 nosync 4 a 1 b 2 c 3 d 4 1 handle_errors";
        let printed = table(line, 100);
        assert_eq!(parse(&printed, 100), parse(line, 100));
    }

    #[test]
    fn mirror_counts() {
        let legs = |n: usize| {
            let mut s = String::from("core 1 8");
            s.push_str(&std::format!(" {n}"));
            for i in 0..n {
                s.push_str(&std::format!(" d{i} {i}"));
            }
            s
        };
        let nine = legs(9);
        let a = parse(&nine, 64).unwrap();
        assert_eq!(a.nr_mirrors(), 9);
        assert_eq!(a.legs()[8], ("d8", 8));
        assert_eq!(table(&nine, 64), nine);
        assert_eq!(parse(&legs(10), 64), Err(MirrorError::MirrorCount("10")));
        assert_eq!(parse(&legs(1), 64), Err(MirrorError::MirrorCount("1")));
        assert_eq!(parse(&legs(0), 64), Err(MirrorError::MirrorCount("0")));
    }

    #[test]
    fn detached_keeps_all_but_names() {
        let a = parse("disk 3 L 16 nosync 3 a 1 b 2 c 3 1 handle_errors", 100).unwrap();
        let d = a.detached();
        assert_eq!(d.log, Log::Disk(""));
        assert_eq!(d.legs(), &[("", 1), ("", 2), ("", 3)]);
        assert_eq!(
            (d.region_size, d.sync, d.nr_regions, d.handle_errors),
            (16, SyncMode::No, 7, true)
        );
        assert_eq!(a.device_text(Device::Leg(1)), "b");
        assert_eq!(a.device_text(Device::Log), "L");
        assert_eq!(a.device_text(Device::Leg(3)), "");
        let (mut s1, mut s2) = (String::new(), String::new());
        a.write_table(&mut s1, &numbered).unwrap();
        d.write_table(&mut s2, &numbered).unwrap();
        assert_eq!(s1, s2);
    }

    #[test]
    fn status_info() {
        let a = parse("core 1 1024 2 a 0 b 0", 102_400).unwrap();
        let mut s = String::new();
        a.write_status_info(&mut s, &numbered, 100, &[0, 0], LogHealth::Alive)
            .unwrap();
        assert_eq!(s, "2 7:0 7:1 100/100 1 AA 1 core");
        let a = parse("disk 2 L 1024 3 a 0 b 0 c 0", 102_400).unwrap();
        let mut s = String::new();
        let errors = [READ_ERROR, WRITE_ERROR | READ_ERROR | SYNC_ERROR];
        a.write_status_info(&mut s, &numbered, 97, &errors, LogHealth::Failed)
            .unwrap();
        assert_eq!(s, "3 7:0 7:1 7:2 97/100 1 RDA 3 disk 7:9 D");
        let mut s = String::new();
        a.write_status_info(&mut s, &numbered, 0, &[], LogHealth::FlushFailed)
            .unwrap();
        assert_eq!(s, "3 7:0 7:1 7:2 0/100 1 AAA 3 disk 7:9 F");
        let letters: String = [
            0,
            FLUSH_ERROR | WRITE_ERROR,
            WRITE_ERROR | SYNC_ERROR,
            SYNC_ERROR | READ_ERROR,
            READ_ERROR,
            1 << 7,
        ]
        .iter()
        .map(|&e| leg_status_char(e))
        .collect();
        assert_eq!(letters, "AFDSRU");
    }

    /// `<line> | <length> => <part of the message>`.
    const ERRORS: &str = "\
        | 64 => got 0 arguments
        core | 64 => got 1 argument
        core x 64 2 a 0 b 0 | 64 => number of log arguments 'x' is not a decimal number
        core -1 64 2 a 0 b 0 | 64 => number of log arguments '-1'
        core 5 64 2 a 0 | 64 => 5 log arguments declared, only 4 arguments follow
        core 2 64 | 64 => 2 log arguments declared, only 1 argument follows
        userspace 1 64 2 a 0 b 0 | 64 => unknown log type 'userspace' (core or disk)
        core 0 2 a 0 b 0 | 64 => log type core takes 1 or 2 (<region size> [sync|nosync]) log arguments, 0 declared
        core 3 64 sync x 2 a 0 b 0 | 64 => log type core takes 1 or 2
        disk 1 64 2 a 0 b 0 | 64 => log type disk takes 2 or 3 (<log device> <region size> [sync|nosync]) log arguments, 1 declared
        disk 4 L 64 nosync x 2 a 0 b 0 | 64 => log type disk takes 2 or 3
        core 2 64 block_on_error 2 a 0 b 0 | 64 => 'block_on_error' is obsolete; use the feature handle_errors
        disk 3 L 64 NOSYNC 2 a 0 b 0 | 64 => last log argument 'NOSYNC' is neither sync nor nosync
        core 1 x 2 a 0 b 0 | 64 => region size 'x' is not a decimal number of sectors
        core 1 4294967296 2 a 0 b 0 | 64 => region size '4294967296' is not a decimal number
        core 1 1 2 a 0 b 0 | 64 => region size 1 sector is below the minimum of 2 sectors
        core 1 0 2 a 0 b 0 | 64 => region size 0 sectors is below the minimum
        core 1 24 2 a 0 b 0 | 64 => region size 24 sectors is not a power of two
        core 1 128 2 a 0 b 0 | 64 => region size 128 sectors is larger than the line (64 sectors)
        core 1 2 2 a 0 b 0 | 18446744073709551615 => 9223372036854775808 regions of 2 sectors exceed the limit of 4294967295
        core 1 64 | 64 => the number of mirrors is missing
        core 1 64 x a 0 b 0 | 64 => number of mirrors 'x' is not a decimal number from 2 to 9
        core 1 64 2 a 0 b | 64 => 2 mirrors need 4 '<dev> <offset>' words, got 3
        core 1 64 3 a 0 b 0 | 64 => 3 mirrors need 6 '<dev> <offset>' words, got 4
        core 1 64 2 a 0 b x | 64 => offset 'x' of leg 1 is not a decimal number of sectors
        core 1 64 2 a -5 b 0 | 64 => offset '-5' of leg 0
        core 1 64 2 a 0 b 0 x | 64 => number of features 'x' is not a decimal number
        core 1 64 2 a 0 b 0 2 handle_errors | 64 => 2 features declared, 1 present
        core 1 64 2 a 0 b 0 1 bogus | 64 => unknown feature 'bogus' (handle_errors, keep_log)
        core 1 64 2 a 0 b 0 1 keep_log | 64 => feature keep_log requires feature handle_errors
        core 1 64 2 a 0 b 0 1 handle_errors keep_log | 64 => 1 argument too many after the features, from 'keep_log' on
        core 1 64 2 a 0 b 0 0 x y | 64 => 2 arguments too many after the features, from 'x' on";

    #[test]
    fn errors() {
        let mut n = 0;
        for case in ERRORS.lines() {
            let (line, want) = case.trim().split_once(" => ").unwrap();
            let (args, length) = line.split_once('|').unwrap();
            let length: u64 = length.trim().parse().unwrap();
            let msg = match parse(args, length) {
                Ok(a) => panic!("{line}: accepted as {a:?}"),
                Err(e) => std::format!("{e}"),
            };
            assert!(
                msg.starts_with("mirror: ") || msg.starts_with("target 'mirror'"),
                "{msg}"
            );
            assert!(msg.contains(want), "{line}:\n  got  {msg}\n  want {want}");
            n += 1;
        }
        assert_eq!(n, 32);
        // A few as values.
        assert_eq!(
            parse("disk 2 L 3 2 a 0 b 0", 64),
            Err(MirrorError::RegionSizeNotPowerOfTwo(3))
        );
        assert_eq!(
            parse("core 1 64 2 a 0 b 0 1 keep_log", 64),
            Err(MirrorError::KeepLogWithoutHandleErrors)
        );
        assert_eq!(
            parse("core 1 64 2 a 0 b 0 2 handle_errors", 64),
            Err(MirrorError::FeaturesMissing {
                declared: 2,
                present: 1
            })
        );
        // The largest region count dm allows.
        let a = parse("core 1 2 2 a 0 b 0", u64::from(u32::MAX) * 2).unwrap();
        assert_eq!(a.nr_regions, u32::MAX);
        assert!(parse("core 1 2 2 a 0 b 0", u64::from(u32::MAX) * 2 + 1).is_err());
    }
}
