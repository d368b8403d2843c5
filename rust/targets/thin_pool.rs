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
use crate::vblk::bufio::BlockCache;
use crate::vblk::message::{fail, first_word, Reply};
use core::fmt::Write;
use kernel::alloc::KVVec;
use kernel::error::code::{EEXIST, EINVAL, ENOMEM};
use kernel::error::Error;
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

/// dm's errno for a missing thin device (`ENODATA`).
pub(super) fn enodata() -> Error {
    Error::from_errno(-61)
}

/// `EOPNOTSUPP`.
fn eopnotsupp() -> Error {
    Error::from_errno(-95)
}

/// The registry kind pools are found by (key: the pool's vblk index).
pub(super) const POOL_KIND: &str = "thin-pool";
/// Smallest and largest data block (sectors): dm's range is up to 1 GiB;
/// vblk zeroes and copies a block through one buffer, up to 1 MiB.
const MIN_BLOCK_SECTORS: u64 = 128;
const MAX_BLOCK_SECTORS: u64 = 2048;
/// Metadata blocks the cache keeps (2 MiB).
const CACHE_BLOCKS: usize = 512;

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
}

impl BlockIo for CacheIo {
    fn write(&mut self, nr: u64, buf: &[u8; BLOCK_BYTES]) -> Result<(), FormatError> {
        self.0
            .modify(nr, |b| b.copy_from_slice(buf))
            .map_err(|e| io_err(nr, e))
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
}

/// What the pool's mutex guards.
pub(super) struct PoolState {
    pub(super) meta: PoolMetadata<KVVec<u32>, CacheIo>,
    pub(super) scratch: KBox<PoolScratch>,
    /// One data block: zeros, or a block being copied.
    pub(super) buf: IoBuffer,
    /// The last operation failed to reach the metadata device: no more
    /// changes (dm's fail mode).
    pub(super) failed: bool,
}

/// A pool's state, shared by its line and its thins.
#[pin_data(PinnedDrop)]
pub(super) struct PoolShared {
    pub(super) meta_dev: Arc<BlockDevice>,
    pub(super) data_dev: Arc<BlockDevice>,
    /// Sectors of a data block.
    pub(super) block_sectors: u64,
    pub(super) low_water: u64,
    pub(super) features: Features,
    /// The pool's vblk device (a reload of another device is refused).
    device: u32,
    #[pin]
    pub(super) state: Mutex<PoolState>,
}

impl PoolShared {
    /// Runs `f` on the metadata under the pool's mutex; a failed
    /// operation leaves the pool failed (as dm: no change after a
    /// metadata error).
    pub(super) fn with<R>(
        &self,
        f: impl FnOnce(&mut PoolMetadata<KVVec<u32>, CacheIo>, &mut PoolScratch) -> Result<R, PoolError>,
    ) -> Result<R, PoolError> {
        let mut st = self.state.lock();
        if st.failed {
            return Err(PoolError::Format(FormatError::Io { nr: 0, errno: -5 }));
        }
        let PoolState { meta, scratch, .. } = &mut *st;
        let r = f(meta, scratch);
        if let Err(PoolError::Format(_)) = r {
            st.failed = true;
        }
        r
    }

    /// Commits the metadata after flushing the data device (what the
    /// mappings name is durable before the mappings are).
    pub(super) fn commit(&self) -> Result<(), PoolError> {
        if self.data_dev.flush().is_err() {
            return Err(PoolError::Format(FormatError::Io { nr: 0, errno: -5 }));
        }
        self.with(|m, sc| m.commit(sc))
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
    /// The line's length.
    length: u64,
}

impl ThinPool {
    fn shared(&self) -> &PoolShared {
        // The registry keeps the type it was acquired with.
        self.pool.get().expect("thin-pool registry entry")
    }
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
    if !(MIN_BLOCK_SECTORS..=2_097_152).contains(&block_sectors)
        || block_sectors % MIN_BLOCK_SECTORS != 0
    {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin-pool: data block size {block_sectors} is not a multiple of 128 sectors between 128 and 2097152"
        );
    }
    if block_sectors > MAX_BLOCK_SECTORS {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin-pool: data block size {block_sectors}: vblk supports up to {MAX_BLOCK_SECTORS} sectors (1 MiB) per block"
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
        if n > 4 {
            return fail!(ctor.reply, EINVAL, "thin-pool: at most 4 features, got {n}");
        }
        for _ in 0..n {
            match words.next() {
                Some("skip_block_zeroing") => features.skip_block_zeroing = true,
                Some("ignore_discard") => features.ignore_discard = true,
                Some("no_discard_passdown") => features.no_discard_passdown = true,
                Some("error_if_no_space") => features.error_if_no_space = true,
                Some("read_only") => {
                    return fail!(
                        ctor.reply,
                        EINVAL,
                        "thin-pool: feature 'read_only' is not supported by vblk yet"
                    )
                }
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
    let data_blocks = data_dev.sectors() / block_sectors;
    if data_blocks == 0 {
        return fail!(
            ctor.reply,
            EINVAL,
            "thin-pool: data device smaller than one block"
        );
    }
    let device = ctor.device;
    let key = u64::from(device);
    let bytes = meta_blocks * 8
        + BlockCache::state_bytes(BLOCK_BYTES, CACHE_BLOCKS)
        + core::mem::size_of::<PoolScratch>() as u64
        + block_sectors * 512;
    ctor.charge(bytes, "thin-pool")?;
    let mut why: Option<PoolError> = None;
    let (md, dd) = (meta_dev.clone(), data_dev.clone());
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
        if shared.features != features || shared.low_water != low_water {
            return fail!(
                ctor.reply,
                EINVAL,
                "thin-pool: vblk cannot change a pool's features or low water mark on reload yet"
            );
        }
    }
    match Arc::new(
        ThinPool {
            pool,
            length: ctor.length,
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
) -> Result<Arc<PoolShared>, PoolError> {
    let nomem = PoolError::Format(FormatError::Io { nr: 0, errno: -12 });
    let cache =
        BlockCache::new(meta_dev.clone(), BLOCK_BYTES, CACHE_BLOCKS, None).map_err(|_| nomem)?;
    let cache = KBox::pin_init(cache, GFP_KERNEL).map_err(|_| nomem)?;
    let mut io = CacheIo(cache);
    let mut scratch = crate::sys::zeroed_box::<PoolScratch>().map_err(|_| nomem)?;
    let n = meta_blocks as usize;
    let counts = KVVec::from_elem(0u32, n, GFP_KERNEL).map_err(|_| nomem)?;
    let committed = KVVec::from_elem(0u32, n, GFP_KERNEL).map_err(|_| nomem)?;
    let buf = IoBuffer::new((block_sectors * 512) as usize).map_err(|_| nomem)?;
    let blank = {
        let mut first = crate::sys::zeroed_box::<[u8; BLOCK_BYTES]>().map_err(|_| nomem)?;
        io.read(0, &mut first)?;
        Superblock::is_blank(&first[..])
    };
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
                what: "the data device is smaller than the pool's data blocks",
            }));
        }
        meta
    };
    let shared = pin_init!(PoolShared {
        meta_dev,
        data_dev,
        block_sectors,
        low_water,
        features,
        device,
        state <- kernel::new_mutex!(
            PoolState {
                meta,
                scratch,
                buf,
                failed: false,
            },
            "vblk::thin::PoolShared::state"
        ),
    });
    Arc::pin_init(shared, GFP_KERNEL).map_err(|_| nomem)
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

    fn table_args(&self, out: &mut dyn Write) -> core::fmt::Result {
        let p = self.shared();
        write_device(out, &p.meta_dev)?;
        out.write_char(' ')?;
        write_device(out, &p.data_dev)?;
        let f = p.features;
        let n = u32::from(f.skip_block_zeroing)
            + u32::from(f.ignore_discard)
            + u32::from(f.no_discard_passdown)
            + u32::from(f.error_if_no_space);
        write!(out, " {} {} {n}", p.block_sectors, p.low_water)?;
        for (on, word) in [
            (f.skip_block_zeroing, "skip_block_zeroing"),
            (f.ignore_discard, "ignore_discard"),
            (f.no_discard_passdown, "no_discard_passdown"),
            (f.error_if_no_space, "error_if_no_space"),
        ] {
            if on {
                write!(out, " {word}")?;
            }
        }
        Ok(())
    }

    fn status(&self, out: &mut dyn Write) -> core::fmt::Result {
        let p = self.shared();
        let st = p.state.lock();
        if st.failed {
            return out.write_str("Fail");
        }
        let (mu, mt) = st.meta.metadata_usage();
        let (du, dt) = st.meta.data_usage();
        let needs_check = st.meta.needs_check();
        let tid = st.meta.transaction_id();
        drop(st);
        let f = p.features;
        let discard = if f.ignore_discard {
            "ignore_discard"
        } else {
            // vblk does not pass discards down to the data device yet.
            "no_discard_passdown"
        };
        let space = if f.error_if_no_space {
            "error_if_no_space"
        } else {
            "queue_if_no_space"
        };
        let threshold = (metadata_blocks(p.meta_dev.sectors()) / 4).min(1024);
        write!(
            out,
            "{tid} {mu}/{mt} {du}/{dt} - rw {discard} {space} {} {threshold}",
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
        let r = match word {
            "create_thin" => {
                let id = num("<dev_id>")?;
                p.with(|m, sc| m.create_thin(id, sc))
            }
            "create_snap" => {
                let id = num("<dev_id> <origin_id>")?;
                let origin = num("<dev_id> <origin_id>")?;
                p.with(|m, sc| m.create_snap(id, origin, sc))
            }
            "delete" => {
                let id = num("<dev_id>")?;
                p.with(|m, sc| m.delete(id, sc))
            }
            "set_transaction_id" => {
                let old = num("<current id> <new id>")?;
                let new = num("<current id> <new id>")?;
                p.with(|m, _| m.set_transaction_id(old, new))
            }
            "reserve_metadata_snap" | "release_metadata_snap" => {
                return fail!(reply, eopnotsupp(), "{name}: '{word}' is not supported by vblk yet");
            }
            _ => {
                return fail!(
                    reply,
                    EINVAL,
                    "{name}: unknown message '{}' (create_thin, create_snap, delete, set_transaction_id)",
                    first_word(word)
                )
            }
        };
        match r {
            // dm commits after every message that changed the metadata.
            Ok(()) => match p.commit() {
                Ok(()) => Ok(()),
                Err(e) => fail!(
                    reply,
                    kernel::error::code::EIO,
                    "{name}: commit failed: {e}"
                ),
            },
            Err(e @ PoolError::Exists(_)) => fail!(reply, EEXIST, "{name}: {e}"),
            Err(e @ PoolError::NoDevice(_)) => fail!(reply, enodata(), "{name}: {e}"),
            Err(e @ (PoolError::BadId(_) | PoolError::Transaction { .. })) => {
                fail!(reply, EINVAL, "{name}: {e}")
            }
            Err(e @ PoolError::Format(_)) => fail!(reply, kernel::error::code::EIO, "{name}: {e}"),
        }
    }
}
