// SPDX-License-Identifier: GPL-2.0
//! Region tracking and the dirty log (as dm's region hash and dirty log),
//! shared by redundant targets: the mirror now, raid5's write-intent
//! bitmap next.
//!
//! A line is cut into fixed-size regions. [`RegionMap`] counts the writes
//! in flight per region, knows which regions are in sync (every copy holds
//! the same data), which one is being recovered, and which were written
//! since the last clean. [`DirtyLog`] is the log's image in memory: a
//! *clean* bit per region (set: nothing to recover there after a crash)
//! inside the target's own on-disk format, and generations that order its
//! changes. Before the first write to a clean region its bit is cleared
//! and the image written ([`LogWriter::commit`]); the write goes out only
//! once the generation that dirtied it is on disk. Cleaning (setting bits
//! of idle, in-sync regions after the data was flushed) is lazy.
//!
//! Both live under the owner's lock; the writer has a lock of its own, so
//! writers that dirtied regions together share one log write. Nothing
//! here allocates after construction.

use super::bitmap;
use super::bufio::BlockCache;
use crate::sys::bdev::BlockDevice;
use crate::sys::disk::QUEUE_DEPTH;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

// A region's write counter is a `u8`: every request in flight may hold
// one count on it, so the disk's queue depth must fit.
const _: () = assert!(QUEUE_DEPTH <= u8::MAX as u32);

/// Writes in flight and sync state per region.
pub(crate) struct RegionMap {
    region_size: u32,
    nr: u64,
    /// The line's length in sectors (the last region may be shorter).
    length: u64,
    /// Writes in flight per region (at most one per request).
    pending: KVVec<u8>,
    /// Bit per region: every copy holds the same data.
    sync: KVVec<u8>,
    /// Bit per region: a write to it completed since the last
    /// [`RegionMap::untouch_all`] (it may not be cleaned in that round).
    touched: KVVec<u8>,
    in_sync: u64,
    /// The region being recovered (or waiting for its writes to drain to
    /// be): writes to it are held.
    recovering: Option<u64>,
    /// Where the next recovery looks.
    cursor: u64,
}

impl RegionMap {
    /// Bytes a map of `nr` regions holds (for the table's charge).
    pub(crate) fn state_bytes(nr: u32) -> u64 {
        u64::from(nr) + 2 * bitmap_bytes(nr) as u64
    }

    /// A map of `nr` regions of `region_size` sectors over a line of
    /// `length` sectors, none in sync.
    pub(crate) fn new(region_size: u32, nr: u32, length: u64) -> Result<Self> {
        let bits = bitmap_bytes(nr);
        Ok(RegionMap {
            region_size,
            nr: u64::from(nr),
            length,
            pending: KVVec::from_elem(0u8, nr as usize, GFP_KERNEL)?,
            sync: KVVec::from_elem(0u8, bits, GFP_KERNEL)?,
            touched: KVVec::from_elem(0u8, bits, GFP_KERNEL)?,
            in_sync: 0,
            recovering: None,
            cursor: 0,
        })
    }

    pub(crate) fn nr(&self) -> u64 {
        self.nr
    }

    /// The regions sectors `[offset, offset + len)` of the line touch.
    pub(crate) fn regions(&self, offset: u64, len: u64) -> Range<u64> {
        bitmap::regions(offset, len, self.region_size)
    }

    /// First sector and length of region `r`.
    pub(crate) fn extent(&self, r: u64) -> (u64, u64) {
        (
            bitmap::region_start(r, self.region_size),
            bitmap::region_len(r, self.region_size, self.length),
        )
    }

    /// Regions in sync.
    pub(crate) fn in_sync(&self) -> u64 {
        self.in_sync
    }

    /// Every region is in sync (by the bits themselves).
    pub(crate) fn all_synced(&self) -> bool {
        self.in_sync >= self.nr && (0..self.nr).all(|r| self.is_sync(r))
    }

    pub(crate) fn is_sync(&self, r: u64) -> bool {
        bitmap::test_bit(&self.sync, r)
    }

    /// Whether every region of `[offset, offset + len)` is in sync.
    pub(crate) fn all_in_sync(&self, offset: u64, len: u64) -> bool {
        self.regions(offset, len).all(|r| self.is_sync(r))
    }

    /// Sets the sync bits: from a log's clean bits (`Some`), or all set
    /// or all clear; `in_sync` is what the caller counted.
    pub(crate) fn load_sync(&mut self, bits: Option<&[u8]>, all: bool, in_sync: u64) {
        match bits {
            Some(bits) => {
                let n = self.sync.len().min(bits.len());
                self.sync[..n].copy_from_slice(&bits[..n]);
            }
            None => bitmap::fill_bits(&mut self.sync, 0..self.nr, all),
        }
        self.in_sync = in_sync;
    }

    /// Whether a write to `[offset, offset + len)` must wait for the
    /// recovery of one of its regions.
    pub(crate) fn recovering_in(&self, offset: u64, len: u64) -> bool {
        self.recovering
            .is_some_and(|r| self.regions(offset, len).any(|w| w == r))
    }

    /// Takes a count on each region of a write.
    pub(crate) fn begin_write(&mut self, offset: u64, len: u64) {
        for r in self.regions(offset, len) {
            if let Some(p) = self.pending.get_mut(r as usize) {
                *p = p.saturating_add(1);
            }
        }
    }

    /// Drops the counts of a finished write; whether a region became idle.
    pub(crate) fn end_write(&mut self, offset: u64, len: u64) -> bool {
        let mut idle = false;
        for r in self.regions(offset, len) {
            bitmap::set_bit(&mut self.touched, r);
            if let Some(p) = self.pending.get_mut(r as usize) {
                *p = p.saturating_sub(1);
                idle |= *p == 0;
            }
        }
        idle
    }

    /// The region to recover: the one already chosen, or the next out of
    /// sync from the cursor on (marked recovering: writes to it wait from
    /// now on). `None` when every region is in sync.
    pub(crate) fn next_recovery(&mut self) -> Option<u64> {
        if let Some(r) = self.recovering {
            return Some(r);
        }
        let from = self.cursor.min(self.nr);
        let r = bitmap::find_next_zero_bit(&self.sync, self.nr, from)
            .or_else(|| bitmap::find_next_zero_bit(&self.sync, from, 0))?;
        self.recovering = Some(r);
        Some(r)
    }

    /// Whether no write is in flight in region `r` (its copy may start).
    pub(crate) fn idle(&self, r: u64) -> bool {
        self.pending.get(r as usize).map_or(true, |&p| p == 0)
    }

    /// The recovery of region `r` ended (`synced`: every copy now holds
    /// the same data); the next one starts after it. Returns whether the
    /// region is newly in sync.
    pub(crate) fn end_recovery(&mut self, r: u64, synced: bool) -> bool {
        self.recovering = None;
        self.cursor = r + 1;
        if synced && !self.is_sync(r) {
            bitmap::set_bit(&mut self.sync, r);
            self.in_sync += 1;
            return true;
        }
        false
    }

    /// Gives up the chosen recovery (stopped): the region stays out of
    /// sync, and the next recovery starts with it.
    pub(crate) fn abort_recovery(&mut self) {
        self.recovering = None;
    }

    pub(crate) fn recovering(&self) -> Option<u64> {
        self.recovering
    }

    /// Forgets which regions were written: the start of a clean round.
    pub(crate) fn untouch_all(&mut self) {
        self.touched.as_mut_slice().fill(0);
    }

    /// Whether region `r` may be recorded clean: in sync, no write in
    /// flight or completed since [`RegionMap::untouch_all`], not being
    /// recovered.
    pub(crate) fn cleanable(&self, r: u64) -> bool {
        self.is_sync(r)
            && self.idle(r)
            && !bitmap::test_bit(&self.touched, r)
            && self.recovering != Some(r)
    }

    /// Whether some region is in sync but not clean in `log`.
    pub(crate) fn any_to_clean(&self, log: &DirtyLog) -> bool {
        log.clean_bits()
            .is_some_and(|clean| self.sync.iter().zip(clean.iter()).any(|(s, c)| s & !c != 0))
    }
}

/// A log on disk for [`region_state`]: its device, the image's size (whole
/// blocks of the device) and where in it the clean bits are.
pub(crate) struct DiskLog {
    pub(crate) dev: Arc<BlockDevice>,
    pub(crate) bytes: usize,
    pub(crate) bits: Range<usize>,
}

/// Bytes [`region_state`] holds for `nr` regions and the log (for the
/// table's charge).
pub(crate) fn region_state_bytes(nr: u32, log: Option<&DiskLog>) -> u64 {
    RegionMap::state_bytes(nr)
        + log.map_or(0, |l| {
            l.bytes as u64 + LogWriter::state_bytes(&l.dev, l.bytes)
        })
}

/// A redundant target's region state: `nr` regions of `region_size`
/// sectors over `length`, none in sync; the log's image (empty without a
/// disk log: every write is clean to go) and its writer.
pub(crate) fn region_state(
    region_size: u32,
    nr: u32,
    length: u64,
    log: Option<DiskLog>,
) -> Result<(RegionMap, DirtyLog, Option<Arc<LogWriter>>)> {
    let regions = RegionMap::new(region_size, nr, length)?;
    let Some(log) = log else {
        return Ok((regions, DirtyLog::new(0, None)?, None));
    };
    let image = DirtyLog::new(log.bytes, Some(log.bits))?;
    let writer = Arc::pin_init(LogWriter::new(log.dev, log.bytes)?, GFP_KERNEL)?;
    Ok((regions, image, Some(writer)))
}

/// Bytes of a bitmap of `nr` regions.
fn bitmap_bytes(nr: u32) -> usize {
    (nr as usize).div_ceil(8)
}

/// The dirty log's image in memory: the target's on-disk format (empty for
/// a log kept in memory only), the clean bits inside it, and generations.
pub(crate) struct DirtyLog {
    image: KVVec<u8>,
    /// Where the clean bits are in the image, if it has them.
    bits: Option<Range<usize>>,
    /// Bumped on every change; the disk holds [`LogWriter::written`] of
    /// them.
    gen: u64,
    /// The newest generation a write depends on (it cleared a clean bit,
    /// or changed something writes must see on disk first): a write goes
    /// out once this generation is on disk, even if another writer cleared
    /// its region's bit (and is still writing the log).
    dirty_gen: u64,
}

impl DirtyLog {
    /// An image of `bytes` bytes whose clean bits are at `bits` (`None`:
    /// a log in memory only, with no bits: every write is clean to go).
    pub(crate) fn new(bytes: usize, bits: Option<Range<usize>>) -> Result<Self> {
        Ok(DirtyLog {
            image: KVVec::from_elem(0u8, bytes, GFP_KERNEL)?,
            bits: bits.filter(|b| b.end <= bytes),
            gen: 0,
            dirty_gen: 0,
        })
    }

    /// The clean bits, if the log has them.
    pub(crate) fn clean_bits(&self) -> Option<&[u8]> {
        self.bits.clone().map(|b| &self.image[b])
    }

    fn clean_bits_mut(&mut self) -> Option<&mut [u8]> {
        self.bits.clone().map(|b| &mut self.image[b])
    }

    /// Clears the clean bits of `regions`; returns the generation a write
    /// there must wait for (0 if none ever needed writing).
    pub(crate) fn mark_dirty(&mut self, regions: Range<u64>) -> u64 {
        let mut dirtied = false;
        if let Some(clean) = self.clean_bits_mut() {
            for r in regions {
                if bitmap::test_bit(clean, r) {
                    bitmap::clear_bit(clean, r);
                    dirtied = true;
                }
            }
        }
        if dirtied {
            self.changed_for_writes();
        }
        self.dirty_gen
    }

    /// Sets the clean bit of every region `cleanable` accepts that is not
    /// clean yet; returns the new generation if a bit changed.
    pub(crate) fn mark_clean(&mut self, nr: u64, cleanable: impl Fn(u64) -> bool) -> Option<u64> {
        let clean = self.clean_bits_mut()?;
        let mut changed = false;
        for r in 0..nr {
            if !bitmap::test_bit(clean, r) && cleanable(r) {
                bitmap::set_bit(clean, r);
                changed = true;
            }
        }
        changed.then(|| self.changed())
    }

    /// The image changed in a way writes must see on disk before they go
    /// out (the target's own header fields): a new generation they wait
    /// for.
    pub(crate) fn changed_for_writes(&mut self) -> u64 {
        self.dirty_gen = self.changed();
        self.dirty_gen
    }

    /// The image changed: a new generation.
    pub(crate) fn changed(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    /// The generation writes must wait for.
    pub(crate) fn dirty_gen(&self) -> u64 {
        self.dirty_gen
    }

    /// The image, for the target's format (header fields; after a change,
    /// call [`DirtyLog::changed`] or [`DirtyLog::changed_for_writes`]).
    pub(crate) fn image_mut(&mut self) -> &mut [u8] {
        &mut self.image
    }

    /// The image and its generation, as the writer copies them.
    pub(crate) fn snapshot(&self, out: &mut [u8]) -> u64 {
        let n = out.len().min(self.image.len());
        out[..n].copy_from_slice(&self.image[..n]);
        self.gen
    }
}

/// Writes a dirty log's image to the start of its device through a
/// [`BlockCache`] (every block resident: nothing is read after the first
/// resume), once per generation: writers that need the same or an older
/// generation share the write in progress, and a commit writes only the
/// blocks that changed. Block 0 (the format's header) is the commit's
/// superblock: written last, after a FLUSH, with FUA.
#[pin_data]
pub(crate) struct LogWriter {
    dev: Arc<BlockDevice>,
    /// The generation on disk (read without the lock by writers whose
    /// generation already is).
    written: AtomicU64,
    #[pin]
    cache: BlockCache,
    /// The image being written (the owner's copy, taken under its lock).
    #[pin]
    image: Mutex<KVVec<u8>>,
}

impl LogWriter {
    /// Bytes a writer of an image of `bytes` bytes holds (for the table's
    /// charge).
    pub(crate) fn state_bytes(dev: &BlockDevice, bytes: usize) -> u64 {
        let block = block_bytes(dev);
        BlockCache::state_bytes(block, bytes.div_ceil(block)) + bytes as u64
    }

    /// A writer of images of `bytes` bytes (whole logical blocks of `dev`)
    /// to `dev`.
    pub(crate) fn new(dev: Arc<BlockDevice>, bytes: usize) -> Result<impl PinInit<Self>> {
        let block = block_bytes(&dev);
        let cache = BlockCache::new(dev.clone(), block, bytes.div_ceil(block), None)?;
        let image = KVVec::from_elem(0u8, bytes, GFP_KERNEL)?;
        Ok(pin_init!(LogWriter {
            dev,
            written: AtomicU64::new(0),
            cache <- cache,
            image <- kernel::new_mutex!(image, "vblk::LogWriter::image"),
        }))
    }

    pub(crate) fn dev(&self) -> &Arc<BlockDevice> {
        &self.dev
    }

    /// The generation on disk.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Blocks the log read and wrote so far.
    pub(crate) fn io_counts(&self) -> (u64, u64) {
        self.cache.io_counts()
    }

    /// Makes generation `want` durable: unless it (or a newer one) is on
    /// disk already, copies the image (`snapshot` fills the buffer and
    /// returns its generation, taking the owner's lock) and commits the
    /// blocks that changed (process context: a worker or a completion
    /// queue). A failed write still counts as written (the owner fails its
    /// log, as dm does, and writes go on without it): `Err` says so.
    pub(crate) fn commit(&self, want: u64, snapshot: impl FnOnce(&mut [u8]) -> u64) -> Result {
        if self.written() >= want {
            return Ok(());
        }
        let mut image = self.image.lock();
        if self.written() >= want {
            return Ok(());
        }
        let gen = snapshot(&mut image);
        let mut result = Ok(());
        for (nr, part) in image.chunks(self.cache.block_bytes()).enumerate() {
            let nr = nr as u64;
            let same = self.cache.read(nr, |block| block == part);
            match same {
                Ok(true) => {}
                Ok(false) => {
                    let _ = self.cache.modify(nr, |block| block.copy_from_slice(part));
                }
                Err(e) => result = Err(e),
            }
        }
        let result = result.and(self.cache.commit(Some(0)));
        self.written.fetch_max(gen, Ordering::AcqRel);
        result
    }

    /// Reads the image on disk (into the cache: the blocks stay resident)
    /// and hands it to `take` with whether the read worked (the first
    /// resume). `take` runs under the writer's lock and may take the
    /// owner's (the order [`LogWriter::commit`] takes them in).
    pub(crate) fn read(&self, take: impl FnOnce(&[u8], bool)) {
        let mut image = self.image.lock();
        let step = self.cache.block_bytes();
        let mut ok = true;
        for (nr, part) in image.chunks_mut(step).enumerate() {
            ok &= self
                .cache
                .read(nr as u64, |block| part.copy_from_slice(block))
                .is_ok();
        }
        take(&image, ok);
    }
}

/// The block size of a log on `dev`: its logical block size (the log
/// area is a whole number of them; a larger block could reach past it).
fn block_bytes(dev: &BlockDevice) -> usize {
    (dev.logical_block_size() as usize).max(512)
}
