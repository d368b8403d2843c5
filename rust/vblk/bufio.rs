// SPDX-License-Identifier: GPL-2.0
//! The metadata block cache (as dm-bufio): fixed-size blocks of a
//! metadata device, read on first use, changed in memory, written back
//! when the owner commits, with a bounded footprint.
//!
//! Every slot (a block-sized buffer) is allocated when the cache is made:
//! the cache never allocates afterwards, so a commit on the writeback
//! path does not wait for memory. When every slot is taken, the least
//! recently used clean block is dropped; if all are dirty, the oldest is
//! written back first (as dm-bufio does: a block may reach the disk
//! before the commit that names it, which copy-on-write formats allow).
//!
//! [`BlockCache::commit`] orders the writes as a transaction needs: every
//! dirty block but the superblock, then a cache FLUSH of the device, then
//! the superblock with FUA: once the superblock is on disk, everything it
//! refers to is too.
//!
//! A cache with a `salt` keeps dm's checksummed block convention
//! ([`super::metadata_block`]: CRC-32C with the kernel's `crc32c` and the
//! salt of the block kind, the block's own number): blocks are checked
//! when read (a mismatch is `EIO` and a message naming the block) and
//! sealed when written: the caller sees the whole block, and the cache
//! owns its bytes 0..4 and 8..16. Without a salt, blocks are raw (a
//! foreign format, dm's mirror log).
//!
//! Process context only (I/O is synchronous, under the cache's mutex).

use super::metadata_block::{self, HEADER_BYTES};
use crate::sys::bdev::{BlockDevice, IoBuffer, WriteFlags};
use kernel::error::code::{EINVAL, EIO};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

/// One cached block (its bytes: slot `i` of [`Slots::buf`]).
struct Slot {
    /// The block held, if any.
    nr: Option<u64>,
    /// Changed since it was read or written.
    dirty: bool,
    /// When it was last used (the cache's clock), for eviction.
    used: u64,
    /// The owner checked the block (a format's checksum) since it was
    /// loaded, or wrote it: no need to check it again.
    verified: bool,
}

/// Entries of the slot index: block `nr`'s slot is looked for at
/// `nr % HINTS` first (a linear search of every slot otherwise).
const HINTS: usize = 1024;

struct Slots {
    slots: KVec<Slot>,
    /// Every slot's bytes, one after the other, each on its own pages
    /// (one allocation for the whole cache).
    buf: IoBuffer,
    /// Bytes from one slot's start to the next's (whole pages).
    stride: usize,
    /// Bytes of a block.
    block_bytes: usize,
    /// Slot index + 1 of the last block loaded whose number falls here
    /// (0: none); checked, never trusted.
    hints: KVec<u16>,
    clock: u64,
    /// Blocks read from and written to the device (for status).
    reads: u64,
    writes: u64,
}

impl Slots {
    /// Slot `i`'s bytes in [`Self::buf`].
    fn range(&self, i: usize) -> core::ops::Range<usize> {
        let at = i * self.stride;
        at..at + self.block_bytes
    }

    fn block(&self, i: usize) -> &[u8] {
        &self.buf[self.range(i)]
    }

    fn block_mut(&mut self, i: usize) -> &mut [u8] {
        let r = self.range(i);
        &mut self.buf[r]
    }
}

/// A cache of `block_bytes`-byte blocks of `dev` (see the module's doc).
#[pin_data]
pub(crate) struct BlockCache {
    dev: Arc<BlockDevice>,
    block_bytes: usize,
    /// dm's checksummed blocks with this salt, or raw blocks.
    salt: Option<u32>,
    #[pin]
    slots: Mutex<Slots>,
}

impl BlockCache {
    /// Bytes a cache of `capacity` blocks of `block_bytes` holds (for the
    /// table's charge).
    pub(crate) fn state_bytes(block_bytes: usize, capacity: usize) -> u64 {
        // Each slot is a vmalloc buffer: whole pages.
        let slot = block_bytes.next_multiple_of(crate::sys::PAGE_SIZE) as u64;
        slot.saturating_mul(capacity as u64)
    }

    /// A cache of up to `capacity` blocks of `block_bytes` bytes (a
    /// multiple of 512 and of the device's logical block size) of `dev`.
    pub(crate) fn new(
        dev: Arc<BlockDevice>,
        block_bytes: usize,
        capacity: usize,
        salt: Option<u32>,
    ) -> Result<impl PinInit<Self>> {
        let lbs = dev.logical_block_size() as usize;
        if capacity == 0
            || capacity >= usize::from(u16::MAX)
            || block_bytes == 0
            || block_bytes % 512 != 0
            || block_bytes % lbs.max(512) != 0
            || block_bytes > crate::sys::bdev::MAX_RW_BYTES
            || (salt.is_some() && block_bytes <= HEADER_BYTES)
        {
            return Err(EINVAL);
        }
        let mut slots = KVec::with_capacity(capacity, GFP_KERNEL)?;
        for _ in 0..capacity {
            let slot = Slot {
                nr: None,
                dirty: false,
                used: 0,
                verified: false,
            };
            slots.push(slot, GFP_KERNEL)?;
        }
        let hints = KVec::from_elem(0u16, HINTS, GFP_KERNEL)?;
        let stride = block_bytes.next_multiple_of(crate::sys::PAGE_SIZE);
        let buf = IoBuffer::new(stride.checked_mul(capacity).ok_or(EINVAL)?)?;
        // (pin_init! below rebinds `block_bytes` once the field is set.)
        let slot_bytes = block_bytes;
        Ok(pin_init!(BlockCache {
            dev,
            block_bytes,
            salt,
            slots <- kernel::new_mutex!(
                Slots {
                    slots,
                    buf,
                    stride,
                    block_bytes: slot_bytes,
                    hints,
                    clock: 0,
                    reads: 0,
                    writes: 0,
                },
                "vblk::BlockCache::slots"
            ),
        }))
    }

    /// Bytes per block.
    pub(crate) fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    /// Calls `f` with block `nr`, reading it first if needed.
    pub(crate) fn read<R>(&self, nr: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let mut s = self.slots.lock();
        let i = self.get(&mut s, nr, true)?;
        Ok(f(s.block(i)))
    }

    /// Calls `f` with block `nr` and whether it was marked verified
    /// ([`Self::set_verified`]) since it was loaded or written.
    pub(crate) fn read_checked<R>(&self, nr: u64, f: impl FnOnce(&[u8], bool) -> R) -> Result<R> {
        let mut s = self.slots.lock();
        let i = self.get(&mut s, nr, true)?;
        Ok(f(s.block(i), s.slots[i].verified))
    }

    /// Marks block `nr` verified, if it is cached: the owner checked it (or
    /// wrote it whole, sealed) and need not check it again until it is
    /// loaded anew.
    pub(crate) fn set_verified(&self, nr: u64) {
        let mut s = self.slots.lock();
        if let Some(i) = Self::find(&s, nr) {
            s.slots[i].verified = true;
        }
    }

    /// Calls `f` with block `nr` to change it (read first if needed); the
    /// block is dirty until the next commit, and not verified.
    pub(crate) fn modify<R>(&self, nr: u64, f: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        let mut s = self.slots.lock();
        let i = self.get(&mut s, nr, true)?;
        let slot = &mut s.slots[i];
        slot.dirty = true;
        slot.verified = false;
        Ok(f(s.block_mut(i)))
    }

    /// The slot holding block `nr`, if cached (its hint first).
    fn find(s: &Slots, nr: u64) -> Option<usize> {
        let hint = usize::from(s.hints[(nr % HINTS as u64) as usize]);
        if hint != 0
            && s.slots
                .get(hint - 1)
                .is_some_and(|slot| slot.nr == Some(nr))
        {
            return Some(hint - 1);
        }
        s.slots.iter().position(|slot| slot.nr == Some(nr))
    }

    /// Writes every dirty block but `superblock`, flushes the device's
    /// cache, then writes `superblock` (if dirty) with FUA. Without a
    /// superblock, the flush ends the commit. The first failure is
    /// returned; the blocks that failed stay dirty.
    pub(crate) fn commit(&self, superblock: Option<u64>) -> Result {
        let mut s = self.slots.lock();
        let mut result = Ok(());
        let mut wrote = false;
        for i in 0..s.slots.len() {
            if s.slots[i].dirty && s.slots[i].nr.is_some() && s.slots[i].nr != superblock {
                wrote = true;
                if let Err(e) = self.write_back(&mut s, i, WriteFlags::default()) {
                    result = result.and(Err(e));
                }
            }
        }
        let sb = superblock.and_then(|nr| {
            s.slots
                .iter()
                .position(|slot| slot.nr == Some(nr) && slot.dirty)
        });
        match sb {
            Some(i) => {
                // PREFLUSH: every block written above is durable before
                // the superblock that names them is.
                let flags = WriteFlags {
                    preflush: true,
                    fua: true,
                };
                result = result.and(self.write_back(&mut s, i, flags));
            }
            None if wrote => result = result.and(self.dev.flush()),
            None => {}
        }
        result
    }

    /// Blocks read and written so far.
    pub(crate) fn io_counts(&self) -> (u64, u64) {
        let s = self.slots.lock();
        (s.reads, s.writes)
    }

    /// The slot holding block `nr`, loading it (`read`) into a free, clean
    /// or written-back slot if it is not cached.
    fn get(&self, s: &mut Slots, nr: u64, read: bool) -> Result<usize> {
        s.clock += 1;
        let clock = s.clock;
        if let Some(i) = Self::find(s, nr) {
            s.slots[i].used = clock;
            return Ok(i);
        }
        // A free slot, else the least recently used clean one, else the
        // least recently used one, written back first.
        let pick = |clean_only: bool| {
            s.slots
                .iter()
                .enumerate()
                .filter(|(_, slot)| slot.nr.is_none() || !(clean_only && slot.dirty))
                .min_by_key(|(_, slot)| (slot.nr.is_some(), slot.used))
                .map(|(i, _)| i)
        };
        let i = pick(true).or_else(|| pick(false)).ok_or(EINVAL)?;
        if s.slots[i].dirty {
            self.write_back(s, i, WriteFlags::default())?;
        }
        s.slots[i].nr = None;
        if read {
            let sector = self.sector(nr)?;
            let range = s.range(i);
            self.dev.read_at(sector, &mut s.buf, range)?;
            s.reads += 1;
            if let Some(salt) = self.salt {
                let checked = metadata_block::verify(s.block(i), salt, nr, crate::sys::crc32c);
                if let Err(e) = checked {
                    pr_warn!("metadata block {nr} of {}: {e}\n", self.dev.name());
                    return Err(EIO);
                }
            }
        }
        let slot = &mut s.slots[i];
        slot.nr = Some(nr);
        slot.dirty = false;
        slot.used = clock;
        slot.verified = false;
        // `i` < capacity < u16::MAX (checked in `new`).
        s.hints[(nr % HINTS as u64) as usize] = (i + 1) as u16;
        Ok(i)
    }

    /// Writes slot `i` (sealed, with a format) and marks it clean.
    fn write_back(&self, s: &mut Slots, i: usize, flags: WriteFlags) -> Result {
        let Some(nr) = s.slots[i].nr else {
            return Ok(());
        };
        let sector = self.sector(nr)?;
        if let Some(salt) = self.salt {
            metadata_block::seal(s.block_mut(i), salt, nr, crate::sys::crc32c)
                .map_err(|_| EINVAL)?;
        }
        let range = s.range(i);
        self.dev.write_at(sector, &s.buf, range, flags)?;
        s.slots[i].dirty = false;
        s.writes += 1;
        Ok(())
    }

    /// The first sector of block `nr`, if it is inside the device.
    fn sector(&self, nr: u64) -> Result<u64> {
        let per = (self.block_bytes / 512) as u64;
        let sector = nr.checked_mul(per).ok_or(EINVAL)?;
        if sector.saturating_add(per) > self.dev.sectors() {
            return Err(EINVAL);
        }
        Ok(sector)
    }
}
