// SPDX-License-Identifier: GPL-2.0
//! `thin-pool <metadata dev> <data dev> <data block size> <low water mark>
//! [<#features> <feature>...]` (dm-thin's pool): the data device's space
//! handed out block by block to thin volumes (`thin`), the metadata in
//! dm's format on the metadata device ([`super::thin_metadata`]), so
//! `thin_check`, `thin_dump` and dm-thin read vblk's pools and vblk reads
//! theirs.
//!
//! The pool's state is shared with its thins through the registry, keyed
//! by the pool's vblk device: a thin line names the pool device. The
//! pool's own line passes I/O through to the data device (as dm's).
//!
//! Metadata operations sleep (the block cache reads and writes
//! synchronously): they run in ioctl context (messages, constructors) and
//! on the thin disks' map workers, under the pool's mutex.

use super::thin_format::BlockSource;
use super::thin_format::{FormatError, Superblock, BLOCK_BYTES, BLOCK_SECTORS};
use super::thin_metadata::{PoolError, PoolMetadata, PoolScratch};
use super::thin_sm::{BlockIo, MAX_BLOCKS};
use super::{write_device, Ctor, Io, Mapped, Target};
use crate::sys::bdev::{BlockDevice, IoBuffer};
use crate::sys::disk::Op;
use crate::sys::event::EventCounter;
use crate::vblk::bufio::BlockCache;
use crate::vblk::message::{fail, first_word, Reply};
use core::fmt::Write;
use kernel::alloc::KVVec;
use kernel::error::code::{EBUSY, EEXIST, EINVAL, ENOMEM};
use kernel::error::Error;
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

/// dm's errno for a missing thin device (`ENODATA`).
pub(super) fn enodata() -> Error {
    Error::from_errno(-61)
}

/// The registry kind pools are found by (key: the pool's vblk index).
pub(super) const POOL_KIND: &str = "thin-pool";
/// Smallest and largest data block (sectors): dm's range, 64 KiB to 1 GiB.
const MIN_BLOCK_SECTORS: u64 = 128;
const MAX_BLOCK_SECTORS: u64 = 2_097_152;
/// The pool's buffer for zeroing and copying blocks, a piece at a time
/// (sectors; 1 MiB, one bio).
const COPY_SECTORS: u64 = 2048;
/// Metadata blocks the cache keeps (2 MiB).
const CACHE_BLOCKS: usize = 512;

/// How long writes wait for data space by default (dm's
/// `no_space_timeout`, 60 s); the pool message `no_space_timeout <s>`
/// changes it (0: forever).
const NO_SPACE_TIMEOUT_MS: u64 = 60_000;

/// The metadata device through the block cache.
pub(super) struct CacheIo(Pin<KBox<BlockCache>>);

fn io_err(nr: u64, e: kernel::error::Error) -> FormatError {
    FormatError::Io {
        nr,
        errno: e.to_errno(),
    }
}

impl BlockSource for CacheIo {
    fn read(&mut self, nr: u64, buf: &mut [u8; BLOCK_BYTES]) -> Result<(), FormatError> {
        self.0
            .read(nr, |b| buf.copy_from_slice(b))
            .map_err(|e| io_err(nr, e))
    }
    fn read_checked(&mut self, nr: u64, buf: &mut [u8; BLOCK_BYTES]) -> Result<bool, FormatError> {
        self.0
            .read_checked(nr, |b, checked| {
                buf.copy_from_slice(b);
                checked
            })
            .map_err(|e| io_err(nr, e))
    }
    fn checked(&mut self, nr: u64) {
        self.0.set_verified(nr)
    }
}

impl BlockIo for CacheIo {
    /// The metadata code seals every block it writes: the cache may
    /// trust it until it is loaded again.
    fn write(&mut self, nr: u64, buf: &[u8; BLOCK_BYTES]) -> Result<(), FormatError> {
        self.0
            .modify(nr, |b| b.copy_from_slice(buf))
            .map_err(|e| io_err(nr, e))?;
        self.0.set_verified(nr);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), FormatError> {
        self.0.commit(None).map_err(|e| io_err(0, e))
    }
    fn write_super(&mut self, buf: &[u8; BLOCK_BYTES]) -> Result<(), FormatError> {
        self.write(0, buf)?;
        self.0.commit(Some(0)).map_err(|e| io_err(0, e))
    }
}

/// The table's features (dm's words).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Features {
    pub(super) skip_block_zeroing: bool,
    pub(super) ignore_discard: bool,
    pub(super) no_discard_passdown: bool,
    pub(super) error_if_no_space: bool,
    pub(super) read_only: bool,
}

/// What the pool may do (dm's pool modes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Provisioning and metadata changes.
    Write,
    /// No metadata change: the table asked for it (`read_only`), or the
    /// metadata ran out of space or needs a check. Reads and writes to
    /// blocks mapped to one device alone still work.
    ReadOnly,
    /// The metadata device failed: every I/O fails.
    Fail,
}

/// The pool ran out of data space.
#[derive(Clone, Copy)]
pub(super) struct NoSpace {
    /// Data blocks in use when it did (fewer later: some came back).
    allocated: u64,
    /// When (`uptime_ms`).
    since_ms: u64,
}

/// What a write that needs a new block and finds none does.
pub(super) enum NoSpaceVerdict {
    /// Retry later (`queue_if_no_space`, within the timeout).
    Queue,
    /// Fail with `ENOSPC`.
    Fail,
}

/// What the pool's mutex guards.
pub(super) struct PoolState {
    pub(super) meta: PoolMetadata<KVVec<u32>, CacheIo>,
    pub(super) scratch: KBox<PoolScratch>,
    /// A data block, or its first MiB: zeros, or a piece being copied.
    pub(super) buf: IoBuffer,
    pub(super) mode: Mode,
    /// The live table's features and low water mark (a reload changes
    /// them at resume).
    pub(super) features: Features,
    pub(super) low_water: u64,
    /// The low water event was raised (again only after a resize).
    low_water_raised: bool,
    /// The metadata's low water event was raised (again only after the
    /// metadata grew).
    meta_low_raised: bool,
    pub(super) no_space: Option<NoSpace>,
    pub(super) no_space_timeout_ms: u64,
    /// Thin ids with a table (loaded or live), and how many: `delete` of
    /// one is refused (as dm's open count).
    open: KVec<(u64, u32)>,
}

impl PoolState {
    /// A thin table of device `id` was made.
    pub(super) fn open_thin(&mut self, id: u64) -> Result {
        match self.open.iter_mut().find(|(d, _)| *d == id) {
            Some((_, n)) => *n += 1,
            None => self.open.push((id, 1), GFP_KERNEL)?,
        }
        Ok(())
    }

    /// A thin table of device `id` is gone.
    pub(super) fn close_thin(&mut self, id: u64) {
        if let Some(i) = self.open.iter().position(|(d, _)| *d == id) {
            self.open[i].1 -= 1;
            if self.open[i].1 == 0 {
                crate::sys::vec::remove(&mut self.open, i);
            }
        }
    }

    /// The data device's discards are passed down to it.
    pub(super) fn passdown(&self, data_dev: &BlockDevice) -> bool {
        !self.features.ignore_discard
            && !self.features.no_discard_passdown
            && data_dev.supports_discard()
    }
}

/// A pool's state, shared by its line and its thins.
#[pin_data(PinnedDrop)]
pub(super) struct PoolShared {
    pub(super) meta_dev: Arc<BlockDevice>,
    pub(super) data_dev: Arc<BlockDevice>,
    /// Sectors of a data block.
    pub(super) block_sectors: u64,
    /// The pool's vblk device (a reload of another device is refused).
    device: u32,
    /// The pool device's event counter (low water, out of space, mode).
    events: Arc<EventCounter>,
    #[pin]
    pub(super) state: Mutex<PoolState>,
}

impl PoolShared {
    /// Runs `f` on the metadata under the pool's mutex; see
    /// [`Self::judge`] for what a failure does.
    pub(super) fn with<R>(
        &self,
        f: impl FnOnce(&mut PoolMetadata<KVVec<u32>, CacheIo>, &mut PoolScratch) -> Result<R, PoolError>,
    ) -> Result<R, PoolError> {
        let mut st = self.state.lock();
        self.with_locked(&mut st, f)
    }

    /// [`Self::with`] with the mutex held.
    pub(super) fn with_locked<R>(
        &self,
        st: &mut PoolState,
        f: impl FnOnce(&mut PoolMetadata<KVVec<u32>, CacheIo>, &mut PoolScratch) -> Result<R, PoolError>,
    ) -> Result<R, PoolError> {
        if st.mode == Mode::Fail {
            return Err(PoolError::Format(FormatError::Io { nr: 0, errno: -5 }));
        }
        let PoolState { meta, scratch, .. } = &mut *st;
        let r = f(meta, scratch);
        if let Err(e) = r {
            self.judge(st, e);
        }
        r
    }

    /// After a failed operation: out of metadata space, the transaction
    /// is dropped (the last commit stays whole), the superblock marked
    /// `needs_check` and the pool goes read-only (as dm); a metadata I/O
    /// error fails the pool. Refusals (a missing device, ...) change
    /// nothing.
    fn judge(&self, st: &mut PoolState, e: PoolError) {
        match e {
            PoolError::Format(FormatError::NoMetadataSpace) => {
                let PoolState { meta, scratch, .. } = &mut *st;
                let kept = meta
                    .abort(scratch)
                    .and_then(|()| meta.set_needs_check(scratch));
                if kept.is_err() {
                    self.set_mode(st, Mode::Fail, "cannot drop the transaction");
                } else {
                    self.set_mode(st, Mode::ReadOnly, "out of metadata space");
                }
            }
            PoolError::Format(_) | PoolError::NeedsAbort => {
                self.set_mode(st, Mode::Fail, "metadata I/O failed")
            }
            _ => {}
        }
    }

    /// Changes the pool's mode, with a log line and an event.
    fn set_mode(&self, st: &mut PoolState, mode: Mode, why: &str) {
        if st.mode == mode {
            return;
        }
        st.mode = mode;
        let name = match mode {
            Mode::Write => "write",
            Mode::ReadOnly => "read-only",
            Mode::Fail => "fail",
        };
        pr_warn!(
            "vblk thin-pool vblk{}: {why}: switching to {name} mode\n",
            self.device
        );
        self.events.bump();
    }

    /// Commits the metadata after flushing the data device (what the
    /// mappings name is durable before the mappings are).
    pub(super) fn commit(&self) -> Result<(), PoolError> {
        let mut st = self.state.lock();
        self.commit_locked(&mut st)
    }

    /// [`Self::commit`] with the mutex held. Read-only: nothing changed,
    /// nothing to write.
    pub(super) fn commit_locked(&self, st: &mut PoolState) -> Result<(), PoolError> {
        match st.mode {
            Mode::Fail => return Err(PoolError::Format(FormatError::Io { nr: 0, errno: -5 })),
            Mode::ReadOnly => return Ok(()),
            Mode::Write => {}
        }
        if self.data_dev.flush().is_err() {
            return Err(PoolError::Format(FormatError::Io { nr: 0, errno: -5 }));
        }
        self.with_locked(st, |m, sc| m.commit(sc))?;
        // dm's metadata low water mark: an event when the free metadata
        // blocks reach the threshold the status shows.
        let (used, total) = st.meta.metadata_usage();
        let low = total - used <= metadata_threshold(total);
        self.low_water(&mut st.meta_low_raised, low, "metadata", total - used);
        Ok(())
    }

    /// Raises a low water event once (`raised` remembers it) when `low`.
    fn low_water(&self, raised: &mut bool, low: bool, what: &str, free: u64) {
        if low && !*raised {
            *raised = true;
            pr_info!(
                "vblk thin-pool vblk{}: reached the {what} low water mark ({free} free blocks): sending event\n",
                self.device
            );
            self.events.bump();
        }
    }

    /// A free data block for a write, counted once; None if there is
    /// none. Blocks freed since the last commit are free only after the
    /// next one: this commits first when that would find some. Raises
    /// the low water event, and notes running out of space.
    pub(super) fn alloc_data(&self, st: &mut PoolState) -> Result<Option<u64>, PoolError> {
        if let Some(ns) = st.no_space {
            // Nothing came back since: no point in looking again.
            if st.meta.data_usage().0 >= ns.allocated {
                return Ok(None);
            }
        }
        let mut got = self.with_locked(st, |m, sc| m.alloc_data(sc))?;
        let (used, total) = st.meta.data_usage();
        if got.is_none() && used < total {
            self.commit_locked(st)?;
            got = self.with_locked(st, |m, sc| m.alloc_data(sc))?;
        }
        let (used, total) = st.meta.data_usage();
        match got {
            Some(_) => {
                st.no_space = None;
                let low = total - used <= st.low_water;
                self.low_water(&mut st.low_water_raised, low, "data", total - used);
            }
            None => {
                let since_ms = match st.no_space {
                    Some(ns) => ns.since_ms,
                    None => {
                        pr_warn!(
                            "vblk thin-pool vblk{}: out of data space ({total} blocks in use)\n",
                            self.device
                        );
                        self.events.bump();
                        crate::sys::uptime_ms()
                    }
                };
                st.no_space = Some(NoSpace {
                    allocated: used,
                    since_ms,
                });
            }
        }
        Ok(got)
    }

    /// What a write that found no space does: fail at once with
    /// `error_if_no_space` or once the timeout passed, else wait.
    pub(super) fn no_space_verdict(&self) -> NoSpaceVerdict {
        let st = self.state.lock();
        let waited = st
            .no_space
            .map_or(0, |ns| crate::sys::uptime_ms().saturating_sub(ns.since_ms));
        if st.features.error_if_no_space
            || (st.no_space_timeout_ms != 0 && waited >= st.no_space_timeout_ms)
        {
            NoSpaceVerdict::Fail
        } else {
            NoSpaceVerdict::Queue
        }
    }
}

#[pinned_drop]
impl PinnedDrop for PoolShared {
    fn drop(self: Pin<&mut Self>) {
        // The last user is gone: whatever is not committed yet is.
        let _ = self.commit();
    }
}

/// The pool's table line.
pub(crate) struct ThinPool {
    pool: crate::vblk::peers::PeerRef<PoolShared>,
    /// The line's length: the pool's data space (a longer reload grows
    /// it at resume).
    length: u64,
    /// This table's features and low water mark (live from its resume).
    features: Features,
    low_water: u64,
}

impl ThinPool {
    fn shared(&self) -> &PoolShared {
        // The registry keeps the type it was acquired with.
        self.pool.get().expect("thin-pool registry entry")
    }
}

/// Free metadata blocks at which the pool raises an event (dm's
/// threshold: a quarter of the metadata, at most 4 MiB).
fn metadata_threshold(total: u64) -> u64 {
    (total / 4).min(1024)
}

/// The metadata's blocks on a device of `sectors`.
fn metadata_blocks(sectors: u64) -> u64 {
    (sectors / u64::from(BLOCK_SECTORS)).min(MAX_BLOCKS)
}

/// Constructor listed in [`super::TYPES`].
pub(super) fn construct(ctor: &mut Ctor<'_>) -> Result<Arc<dyn Target>> {
    const USAGE: &str =
        "<metadata dev> <data dev> <data block size> <low water mark> [<#features> <feature>...]";
    let mut words = ctor.args.split_ascii_whitespace();
    let (Some(meta), Some(data), Some(bs), Some(lw)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return fail!(ctor.reply, EINVAL, "thin-pool takes {USAGE}");
    };
    let Ok(block_sectors) = bs.parse::<u64>() else {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin-pool: data block size '{}' is not a number",
            first_word(bs)
        );
    };
    if !(MIN_BLOCK_SECTORS..=MAX_BLOCK_SECTORS).contains(&block_sectors)
        || block_sectors % MIN_BLOCK_SECTORS != 0
    {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin-pool: data block size {block_sectors} is not a multiple of 128 sectors between 128 and 2097152"
        );
    }
    let Ok(low_water) = lw.parse::<u64>() else {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin-pool: low water mark '{}' is not a number",
            first_word(lw)
        );
    };
    let mut features = Features::default();
    if let Some(n) = words.next() {
        let Ok(n) = n.parse::<usize>() else {
            return fail!(
                ctor.reply,
                EINVAL,
                "thin-pool: feature count '{}' is not a number",
                first_word(n)
            );
        };
        if n > 5 {
            return fail!(ctor.reply, EINVAL, "thin-pool: at most 5 features, got {n}");
        }
        for _ in 0..n {
            match words.next() {
                Some("skip_block_zeroing") => features.skip_block_zeroing = true,
                Some("ignore_discard") => features.ignore_discard = true,
                Some("no_discard_passdown") => features.no_discard_passdown = true,
                Some("error_if_no_space") => features.error_if_no_space = true,
                Some("read_only") => features.read_only = true,
                Some(w) => {
                    return fail!(
                        ctor.reply,
                        EINVAL,
                        "thin-pool: unknown feature '{}'",
                        first_word(w)
                    )
                }
                None => {
                    return fail!(
                        ctor.reply,
                        EINVAL,
                        "thin-pool: {n} features announced, fewer given"
                    )
                }
            }
        }
    }
    if let Some(w) = words.next() {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin-pool: unexpected '{}' after the features",
            first_word(w)
        );
    }
    let meta_dev = ctor.open_device(meta)?;
    let data_dev = ctor.open_device(data)?;
    if meta_dev.devt() == data_dev.devt() {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin-pool: the metadata and data devices must differ"
        );
    }
    let meta_blocks = metadata_blocks(meta_dev.sectors());
    if meta_blocks < 64 {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin-pool: metadata device of {} sectors is too small (at least 512)",
            meta_dev.sectors()
        );
    }
    // The table's length is the data space (as dm): a longer reload
    // after the data device grew gives the pool more blocks.
    if ctor.length > data_dev.sectors() {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin-pool: length {} is beyond the data device's {} sectors",
            ctor.length,
            data_dev.sectors()
        );
    }
    let data_blocks = ctor.length / block_sectors;
    if data_blocks == 0 {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin-pool: length {} is less than one data block",
            ctor.length
        );
    }
    let device = ctor.device;
    let key = u64::from(device);
    let bytes = meta_blocks * 8
        + BlockCache::state_bytes(BLOCK_BYTES, CACHE_BLOCKS)
        + core::mem::size_of::<PoolScratch>() as u64
        + block_sectors.min(COPY_SECTORS) * 512;
    ctor.charge(bytes, "thin-pool")?;
    let mut why: Option<PoolError> = None;
    let (md, dd) = (meta_dev.clone(), data_dev.clone());
    let events = ctor.events.clone();
    let made = ctor.peers.acquire(POOL_KIND, key, || {
        open_pool(
            md,
            dd,
            meta_blocks,
            data_blocks,
            block_sectors,
            low_water,
            features,
            device,
            events,
        )
        .map_err(|e| {
            let errno = match e {
                PoolError::Format(FormatError::Io { .. }) => kernel::error::code::EIO,
                PoolError::Format(_) => EINVAL,
                _ => EINVAL,
            };
            why = Some(e);
            errno
        })
    });
    let pool: crate::vblk::peers::PeerRef<PoolShared> = match made {
        Ok(p) => p,
        Err(e) => {
            return match why {
                Some(w) => fail!(ctor.reply, e, "thin-pool: {w}"),
                None => fail!(ctor.reply, e, "thin-pool: cannot open the pool"),
            }
        }
    };
    {
        let Some(shared) = pool.get() else {
            return fail!(
                ctor.reply,
                EINVAL,
                "thin-pool: device {device} holds another kind of state"
            );
        };
        if shared.meta_dev.devt() != meta_dev.devt()
            || shared.data_dev.devt() != data_dev.devt()
            || shared.block_sectors != block_sectors
        {
            return fail!(
                ctor.reply,
                EINVAL,
                "thin-pool: a reload must keep the metadata device, data device and block size"
            );
        }
        let st = shared.state.lock();
        let (_, have) = st.meta.data_usage();
        if data_blocks < have {
            return fail!(
                ctor.reply,
                EINVAL,
                "thin-pool: length {} gives {data_blocks} data blocks, fewer than the pool's {have} (a pool cannot shrink)",
                ctor.length
            );
        }
        let (_, meta_have) = st.meta.metadata_usage();
        if meta_blocks < meta_have {
            return fail!(
                ctor.reply,
                EINVAL,
                "thin-pool: the metadata device holds {meta_blocks} blocks, fewer than the pool's {meta_have} (it cannot shrink)"
            );
        }
    }
    match Arc::new(
        ThinPool {
            pool,
            length: ctor.length,
            features,
            low_water,
        },
        GFP_KERNEL,
    ) {
        Ok(t) => Ok(t),
        Err(_) => fail!(ctor.reply, ENOMEM, "out of memory constructing thin-pool"),
    }
}

/// Opens (or formats, if its superblock is all zeros) the pool's metadata.
#[allow(clippy::too_many_arguments)]
fn open_pool(
    meta_dev: Arc<BlockDevice>,
    data_dev: Arc<BlockDevice>,
    meta_blocks: u64,
    data_blocks: u64,
    block_sectors: u64,
    low_water: u64,
    features: Features,
    device: u32,
    events: Arc<EventCounter>,
) -> Result<Arc<PoolShared>, PoolError> {
    let nomem = PoolError::Format(FormatError::Io { nr: 0, errno: -12 });
    let cache =
        BlockCache::new(meta_dev.clone(), BLOCK_BYTES, CACHE_BLOCKS, None).map_err(|_| nomem)?;
    let cache = KBox::pin_init(cache, GFP_KERNEL).map_err(|_| nomem)?;
    let mut io = CacheIo(cache);
    let mut scratch = crate::sys::zeroed_box::<PoolScratch>().map_err(|_| nomem)?;
    let buf = IoBuffer::new((block_sectors.min(COPY_SECTORS) * 512) as usize).map_err(|_| nomem)?;
    // The space map describes the blocks the superblock says (a device
    // grown since is taken in at resume); a new pool, the whole device.
    let (blank, n) = {
        let mut first = crate::sys::zeroed_box::<[u8; BLOCK_BYTES]>().map_err(|_| nomem)?;
        io.read(0, &mut first)?;
        if Superblock::is_blank(&first[..]) {
            (true, meta_blocks)
        } else {
            let sb = Superblock::decode(&first[..], crate::sys::crc32c)?;
            if sb.metadata_sm.nr_blocks > meta_blocks {
                return Err(PoolError::Format(FormatError::Value {
                    key: sb.metadata_sm.nr_blocks,
                    what: "the metadata device is smaller than the pool's metadata",
                }));
            }
            (false, sb.metadata_sm.nr_blocks)
        }
    };
    let counts = KVVec::from_elem(0u32, n as usize, GFP_KERNEL).map_err(|_| nomem)?;
    let committed = KVVec::from_elem(0u32, n as usize, GFP_KERNEL).map_err(|_| nomem)?;
    let meta = if blank {
        PoolMetadata::format(
            io,
            counts,
            committed,
            data_blocks,
            block_sectors as u32,
            crate::sys::crc32c,
            &mut scratch,
        )?
    } else {
        let meta = PoolMetadata::open(io, counts, committed, crate::sys::crc32c, &mut scratch)?;
        if u64::from(meta.data_block_size()) != block_sectors {
            return Err(PoolError::Format(FormatError::Value {
                key: u64::from(meta.data_block_size()),
                what: "the pool's data block size is not the table's",
            }));
        }
        if meta.data_usage().1 > data_blocks {
            return Err(PoolError::Format(FormatError::Value {
                key: meta.data_usage().1,
                what: "the table's length holds fewer data blocks than the pool has",
            }));
        }
        meta
    };
    // dm opens a pool whose superblock asks for a check read-only (until
    // thin_check --clear-needs-check-flag, or thin_repair).
    let mode = if features.read_only || meta.needs_check() {
        Mode::ReadOnly
    } else {
        Mode::Write
    };
    let shared = pin_init!(PoolShared {
        meta_dev,
        data_dev,
        block_sectors,
        device,
        events,
        state <- kernel::new_mutex!(
            PoolState {
                meta,
                scratch,
                buf,
                mode,
                features,
                low_water,
                low_water_raised: false,
                meta_low_raised: false,
                no_space: None,
                no_space_timeout_ms: NO_SPACE_TIMEOUT_MS,
                open: KVec::new(),
            },
            "vblk::thin::PoolShared::state"
        ),
    });
    Arc::pin_init(shared, GFP_KERNEL).map_err(|_| nomem)
}

impl ThinPool {
    /// Grows the pool to what the table and the metadata device hold now
    /// (a reload after either device grew), and commits.
    fn resize(&self, st: &mut PoolState, name: &str, reply: &mut Reply) -> Result {
        let p = self.shared();
        let want = self.length / p.block_sectors;
        let grow_data = want > st.meta.data_usage().1;
        let meta_want = metadata_blocks(p.meta_dev.sectors());
        let grow_meta = meta_want > st.meta.metadata_usage().1;
        if !grow_data && !grow_meta {
            return Ok(());
        }
        if st.mode != Mode::Write {
            return fail!(
                reply,
                EINVAL,
                "{name}: the pool is not in write mode: cannot grow it"
            );
        }
        if grow_meta {
            let n = meta_want as usize;
            let (Ok(counts), Ok(committed)) = (
                KVVec::from_elem(0u32, n, GFP_KERNEL),
                KVVec::from_elem(0u32, n, GFP_KERNEL),
            ) else {
                return fail!(reply, ENOMEM, "{name}: out of memory growing the metadata");
            };
            if let Err(e) = p.with_locked(st, |m, _| m.resize_metadata(counts, committed)) {
                return fail!(
                    reply,
                    kernel::error::code::EIO,
                    "{name}: growing the metadata: {e}"
                );
            }
        }
        if grow_data {
            if let Err(e) = p.with_locked(st, |m, sc| m.resize_data(want, sc)) {
                return fail!(
                    reply,
                    kernel::error::code::EIO,
                    "{name}: growing the data space: {e}"
                );
            }
            // New space: writes waiting for it go on, the low water event
            // may be raised again.
            st.no_space = None;
            st.low_water_raised = false;
        }
        match p.commit_locked(st) {
            Ok(()) => Ok(()),
            Err(e) => fail!(
                reply,
                kernel::error::code::EIO,
                "{name}: commit failed: {e}"
            ),
        }
    }
}

impl Target for ThinPool {
    fn map(&self, io: Io<'_>) -> Mapped {
        // The pool device itself passes through to the data device.
        let pool = self.shared();
        match io.op() {
            Op::Flush => io.complete(),
            _ => {
                let at = io.offset();
                io.remap(&pool.data_dev, at)
            }
        }
    }

    fn devices(&self, f: &mut dyn FnMut(&BlockDevice, u64, u64)) {
        let pool = self.shared();
        f(&pool.data_dev, 0, self.length);
        f(&pool.meta_dev, 0, pool.meta_dev.sectors());
    }

    fn postsuspend(&self) {
        let _ = self.shared().commit();
    }

    /// The table's features go live, and the pool grows if the table (or
    /// the metadata device) did, as dm does at resume.
    fn preresume(&self, name: &str, reply: &mut Reply) -> Result {
        let p = self.shared();
        let mut st = p.state.lock();
        if st.mode == Mode::Fail {
            return fail!(reply, kernel::error::code::EIO, "{name}: the pool failed (metadata I/O error); repair it with thin_check/thin_repair and load it anew");
        }
        st.features = self.features;
        st.low_water = self.low_water;
        // Writes waiting for space wait the full timeout under the new
        // table (as dm re-arms it when the pool's mode is set again).
        if let Some(ns) = st.no_space.as_mut() {
            ns.since_ms = crate::sys::uptime_ms();
        }
        if self.features.read_only {
            p.set_mode(&mut st, Mode::ReadOnly, "the table asks for read_only");
        } else if st.mode == Mode::ReadOnly {
            if st.meta.needs_check() {
                pr_warn!("vblk thin-pool vblk{}: the metadata needs a check (thin_check): staying read-only\n", p.device);
            } else {
                p.set_mode(&mut st, Mode::Write, "the table drops read_only");
            }
        }
        self.resize(&mut st, name, reply)
    }

    fn table_args(&self, out: &mut dyn Write) -> core::fmt::Result {
        let p = self.shared();
        write_device(out, &p.meta_dev)?;
        out.write_char(' ')?;
        write_device(out, &p.data_dev)?;
        let f = self.features;
        let words = [
            (f.skip_block_zeroing, "skip_block_zeroing"),
            (f.ignore_discard, "ignore_discard"),
            (f.no_discard_passdown, "no_discard_passdown"),
            (f.read_only, "read_only"),
            (f.error_if_no_space, "error_if_no_space"),
        ];
        let n = words.iter().filter(|(on, _)| *on).count();
        write!(out, " {} {} {n}", p.block_sectors, self.low_water)?;
        for (on, word) in words {
            if on {
                write!(out, " {word}")?;
            }
        }
        Ok(())
    }

    fn status(&self, out: &mut dyn Write) -> core::fmt::Result {
        let p = self.shared();
        let st = p.state.lock();
        if st.mode == Mode::Fail {
            return out.write_str("Fail");
        }
        let (mu, mt) = st.meta.metadata_usage();
        let (du, dt) = st.meta.data_usage();
        let needs_check = st.meta.needs_check();
        let tid = st.meta.transaction_id();
        let held = st.meta.held_root();
        let f = st.features;
        let mode = match (st.mode, st.no_space) {
            (Mode::Write, Some(_)) => "out_of_data_space",
            (Mode::Write, None) => "rw",
            _ => "ro",
        };
        let discard = if f.ignore_discard {
            "ignore_discard"
        } else if st.passdown(&p.data_dev) {
            "discard_passdown"
        } else {
            "no_discard_passdown"
        };
        drop(st);
        let space = if f.error_if_no_space {
            "error_if_no_space"
        } else {
            "queue_if_no_space"
        };
        let threshold = metadata_threshold(mt);
        write!(out, "{tid} {mu}/{mt} {du}/{dt} ")?;
        match held {
            Some(root) => write!(out, "{root}")?,
            None => out.write_char('-')?,
        }
        write!(
            out,
            " {mode} {discard} {space} {} {threshold}",
            if needs_check { "needs_check" } else { "-" }
        )
    }

    fn message(&self, name: &str, message: &str, _suspended: bool, reply: &mut Reply) -> Result {
        let p = self.shared();
        let mut w = message.split_ascii_whitespace();
        let word = w.next().unwrap_or("");
        let mut num = |what: &str| -> Result<u64> {
            match w.next().map(str::parse::<u64>) {
                Some(Ok(n)) => Ok(n),
                _ => fail!(reply, EINVAL, "{name}: '{word}' takes {what}"),
            }
        };
        let known = [
            "create_thin",
            "create_snap",
            "delete",
            "set_transaction_id",
            "reserve_metadata_snap",
            "release_metadata_snap",
        ];
        if word == "no_space_timeout" {
            // vblk's form of dm's module parameter of that name.
            let secs = num("<seconds> (0: wait forever)")?;
            if secs > 86_400 {
                return fail!(
                    reply,
                    EINVAL,
                    "{name}: no_space_timeout {secs}: at most 86400 seconds"
                );
            }
            let mut st = p.state.lock();
            st.no_space_timeout_ms = secs * 1000;
            // The new timeout counts from now.
            if let Some(ns) = st.no_space.as_mut() {
                ns.since_ms = crate::sys::uptime_ms();
            }
            return Ok(());
        }
        if !known.contains(&word) {
            return fail!(
                reply,
                EINVAL,
                "{name}: unknown message '{}' (create_thin, create_snap, delete, set_transaction_id, reserve_metadata_snap, release_metadata_snap, no_space_timeout)",
                first_word(word)
            );
        }
        // Arguments first: a bad one changes nothing, whatever the mode.
        let (a, b) = match word {
            "create_thin" | "delete" => (num("<dev_id>")?, 0),
            "create_snap" => (num("<dev_id> <origin_id>")?, num("<dev_id> <origin_id>")?),
            "set_transaction_id" => (num("<current id> <new id>")?, num("<current id> <new id>")?),
            _ => (0, 0),
        };
        if let Some(extra) = w.next() {
            return fail!(
                reply,
                EINVAL,
                "{name}: '{word}': unexpected '{}'",
                first_word(extra)
            );
        }
        let mut st = p.state.lock();
        if st.mode != Mode::Write {
            return fail!(
                reply,
                EINVAL,
                "{name}: the pool is read-only or failed: '{word}' cannot change its metadata"
            );
        }
        if word == "delete" && st.open.iter().any(|(d, _)| *d == a) {
            return fail!(
                reply,
                EBUSY,
                "{name}: device {a} is in use by a thin table (remove it first)"
            );
        }
        let r = p.with_locked(&mut st, |m, sc| match word {
            "create_thin" => m.create_thin(a, sc),
            "create_snap" => m.create_snap(a, b, sc),
            "delete" => m.delete(a, sc),
            "set_transaction_id" => m.set_transaction_id(a, b),
            "reserve_metadata_snap" => m.reserve_metadata_snap(sc),
            _ => m.release_metadata_snap(sc),
        });
        match r {
            // dm commits after every message that changed the metadata.
            Ok(()) => match p.commit_locked(&mut st) {
                Ok(()) => Ok(()),
                Err(e) => fail!(
                    reply,
                    kernel::error::code::EIO,
                    "{name}: commit failed: {e}"
                ),
            },
            Err(e @ PoolError::Exists(_)) => fail!(reply, EEXIST, "{name}: {e}"),
            Err(e @ PoolError::NoDevice(_)) => fail!(reply, enodata(), "{name}: {e}"),
            Err(e @ PoolError::Busy(_)) => fail!(reply, EBUSY, "{name}: {e}"),
            Err(
                e @ (PoolError::BadId(_)
                | PoolError::Transaction { .. }
                | PoolError::NoSnapshot
                | PoolError::Shrink { .. }),
            ) => {
                fail!(reply, EINVAL, "{name}: {e}")
            }
            Err(e @ PoolError::Format(FormatError::NoMetadataSpace)) => {
                fail!(
                    reply,
                    Error::from_errno(-28),
                    "{name}: {e}: the pool is read-only now"
                )
            }
            Err(e @ (PoolError::Format(_) | PoolError::NeedsAbort)) => {
                fail!(reply, kernel::error::code::EIO, "{name}: {e}")
            }
        }
    }
}
