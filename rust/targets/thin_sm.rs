// SPDX-License-Identifier: GPL-2.0
//! The metadata space map of a thin pool: every metadata block's
//! reference count, held in memory (4 bytes a block, twice: now and at
//! the last commit) and written out whole at each commit in dm's format
//! (bitmaps of 2 bits a block, one index block, a ref-count btree for
//! counts above 2), so `thin_check` and the kernel read it.
//!
//! Crash safety comes from never reusing a block the last commit can
//! still see: a block is allocated only if it is free now *and* was free
//! at the last commit. The map's own blocks are allocated fresh by every
//! commit and released right after it, so they stay untouched until the
//! commit after (the superblock names them until then).
//!
//! Pure `core`: the counts live in buffers the caller owns (`Vec` on the
//! host, `KVec` in the kernel); blocks go through [`BlockIo`].

use crate::targets::thin_btree::{self as btree, Level, Scratch, Transaction, ValueKind};
use crate::targets::thin_format::{
    self as fmt, bitmap_get, bitmap_set, BlockSource, FormatError, IndexEntry, SmRoot, BLOCK_BYTES,
    ENTRIES_PER_BITMAP, METADATA_INDEX_ENTRIES,
};
use crate::vblk::metadata_block::{self as mdb, Crc32c};
use core::ops::DerefMut;

/// Metadata blocks read and written by block number.
pub trait BlockIo: BlockSource {
    /// Writes block `nr` (sealed by the caller).
    fn write(&mut self, nr: u64, buf: &[u8; BLOCK_BYTES]) -> Result<(), FormatError>;
    /// Makes every block written so far durable (a commit's FLUSH).
    fn flush(&mut self) -> Result<(), FormatError> {
        Ok(())
    }
    /// Writes the superblock (block 0) durably (FUA), after a flush.
    fn write_super(&mut self, buf: &[u8; BLOCK_BYTES]) -> Result<(), FormatError> {
        self.write(0, buf)?;
        self.flush()
    }
}

/// The ref-count tree's level: block → count (u32).
const REF_LEVEL: Level = Level {
    value_size: 4,
    kind: ValueKind::Plain,
};

/// Blocks one index block can describe.
pub const MAX_BLOCKS: u64 = ENTRIES_PER_BITMAP * METADATA_INDEX_ENTRIES as u64;

/// Blocks kept free for a commit beyond what its map's blocks take: a
/// change's last step may raise counts past 2 after its last (checked)
/// allocation. The most is one shared node's shadow: up to 252 children
/// gain a reference, which adds at most 2 ref-count leaves and 1 node
/// on each of the at most 4 levels above (a tree on 2^22 blocks is at
/// most 5 high, nodes being a third full); 2 more for good measure.
pub const COMMIT_MARGIN: u64 = 8;

/// Blocks the ref-count tree of `entries` entries takes when a commit
/// builds it (keys ascending: every node but the last of a level is
/// left half full by its split).
fn ref_tree_blocks(entries: u64) -> u64 {
    let per_leaf = u64::from(fmt::max_entries(4) / 2);
    let per_node = u64::from(fmt::max_entries(8) / 2);
    let mut level = entries.div_ceil(per_leaf).max(1);
    let mut total = level;
    while level > 1 {
        level = level.div_ceil(per_node);
        total += level;
    }
    total
}

/// Counts of every metadata block, now and at the last commit.
pub struct MetadataSm<C> {
    counts: C,
    committed: C,
    allocated: u64,
    /// Blocks free now and at the last commit (what can be allocated).
    usable: u64,
    /// Blocks whose count is above 2 (entries of the next commit's
    /// ref-count tree).
    big: u64,
    /// A commit is writing the map: the reserve may be used.
    committing: bool,
    /// Where the next search for a free block starts.
    hint: u64,
}

impl<C: DerefMut<Target = [u32]>> MetadataSm<C> {
    /// A map of `counts.len()` blocks, all free but the superblock (a new
    /// pool). Both buffers must be zeroed and of the same length.
    pub fn format(mut counts: C, committed: C) -> Result<Self, FormatError> {
        let n = counts.len() as u64;
        if !(2..=MAX_BLOCKS).contains(&n) || committed.len() as u64 != n {
            return Err(FormatError::Value {
                key: n,
                what: "metadata device size out of range",
            });
        }
        counts[0] = 1;
        Ok(MetadataSm {
            counts,
            committed,
            allocated: 1,
            usable: n - 1,
            big: 0,
            committing: false,
            hint: 1,
        })
    }

    /// The map a commit wrote (`root`), read back through `io`.
    pub fn load<S: BlockSource + ?Sized>(
        counts: C,
        committed: C,
        io: &mut S,
        root: &SmRoot,
        crc: Crc32c,
        sc: &mut SmScratch,
    ) -> Result<Self, FormatError> {
        let n = counts.len() as u64;
        if root.nr_blocks != n || committed.len() as u64 != n || n > MAX_BLOCKS {
            return Err(FormatError::Value {
                key: root.nr_blocks,
                what: "space map size is not the metadata device's",
            });
        }
        let mut sm = MetadataSm {
            counts,
            committed,
            allocated: 0,
            usable: 0,
            big: 0,
            committing: false,
            hint: 1,
        };
        sm.reload(io, root, crc, sc)?;
        Ok(sm)
    }

    /// Drops every change since the commit that wrote `root` and reads
    /// its counts back into the same buffers. Buffers longer than the
    /// committed map (a device grown since) keep the blocks past it
    /// free.
    pub fn reload<S: BlockSource + ?Sized>(
        &mut self,
        io: &mut S,
        root: &SmRoot,
        crc: Crc32c,
        sc: &mut SmScratch,
    ) -> Result<(), FormatError> {
        let n = root.nr_blocks;
        if n > self.nr_blocks() || n == 0 {
            return Err(FormatError::Value {
                key: n,
                what: "space map larger than the metadata device",
            });
        }
        self.counts.fill(0);
        self.committed.fill(0);
        let counts = &mut self.counts;
        let SmScratch {
            btree,
            bitmap,
            old: index,
        } = sc;
        let buf = btree.buf(0);
        io.read(root.bitmap_root, index)?;
        mdb::verify(&index[..], mdb::SALT_INDEX, root.bitmap_root, crc).map_err(|err| {
            FormatError::Block {
                nr: root.bitmap_root,
                err,
            }
        })?;
        let mut allocated = 0;
        for b in 0..n.div_ceil(ENTRIES_PER_BITMAP) {
            let entry = fmt::metadata_index_entry(&index[..], b as usize);
            io.read(entry.blocknr, bitmap)?;
            mdb::verify(&bitmap[..], mdb::SALT_BITMAP, entry.blocknr, crc).map_err(|err| {
                FormatError::Block {
                    nr: entry.blocknr,
                    err,
                }
            })?;
            let first = b * ENTRIES_PER_BITMAP;
            for nr in first..(first + ENTRIES_PER_BITMAP).min(n) {
                let c = u32::from(bitmap_get(&bitmap[..], nr - first));
                counts[nr as usize] = c;
                if c > 0 {
                    allocated += 1;
                }
            }
        }
        // Counts above 2.
        let mut big = [0u8; 4];
        fmt::walk(io, buf, root.ref_count_root, 4, crc, &mut |v| {
            if let fmt::Visit::Entry { key, value } = v {
                big.copy_from_slice(value);
                match counts.get_mut(key as usize) {
                    Some(c) if *c == 3 => *c = u32::from_le_bytes(big),
                    _ => {
                        return Err(FormatError::Value {
                            key,
                            what: "ref-count entry for a block whose bitmap count is not 3",
                        })
                    }
                }
            }
            Ok(true)
        })?;
        copy_counts(&mut self.committed, &self.counts);
        self.allocated = allocated;
        self.usable = self.nr_blocks() - allocated;
        self.big = self.counts.iter().filter(|&&c| c > 2).count() as u64;
        self.hint = 1;
        let sm = self;
        // The map's own blocks are the commit's, not the pool's: released
        // now (kept from reuse by the committed counts), as a live map
        // releases them right after writing them.
        sm.dec(root.bitmap_root)?;
        for b in 0..n.div_ceil(ENTRIES_PER_BITMAP) {
            sm.dec(fmt::metadata_index_entry(&index[..], b as usize).blocknr)?;
        }
        let mut nodes = [0u64; 32];
        loop {
            // Ref-count tree nodes, 32 at a time (one buffer).
            let mut n_nodes = 0usize;
            let mut more = false;
            fmt::walk(io, buf, root.ref_count_root, 4, crc, &mut |v| {
                if let fmt::Visit::Node { nr, .. } = v {
                    if sm.count(nr) == 0 || nodes[..n_nodes].contains(&nr) {
                        return Ok(true);
                    }
                    if n_nodes < nodes.len() {
                        nodes[n_nodes] = nr;
                        n_nodes += 1;
                    } else {
                        more = true;
                    }
                }
                Ok(true)
            })?;
            for &nr in &nodes[..n_nodes] {
                sm.dec(nr)?;
            }
            if !more {
                break;
            }
        }
        Ok(())
    }

    /// Takes over `counts` and `committed` (zeroed, longer than now, of
    /// one length): the device grew. The next commit writes the bigger
    /// map.
    pub fn grow(&mut self, mut counts: C, mut committed: C) -> Result<(), FormatError> {
        let n = counts.len() as u64;
        if n <= self.nr_blocks() || n > MAX_BLOCKS || committed.len() as u64 != n {
            return Err(FormatError::Value {
                key: n,
                what: "metadata device size out of range",
            });
        }
        counts.fill(0);
        committed.fill(0);
        copy_counts(&mut counts, &self.counts);
        copy_counts(&mut committed, &self.committed);
        self.usable += n - self.nr_blocks();
        self.counts = counts;
        self.committed = committed;
        Ok(())
    }

    /// Blocks kept for the commit: what the map's bitmaps, index block
    /// and ref-count tree take as the counts are now, and
    /// [`COMMIT_MARGIN`]. Changes fail with
    /// [`FormatError::NoMetadataSpace`] rather than take them.
    pub fn reserve(&self) -> u64 {
        self.nr_blocks().div_ceil(ENTRIES_PER_BITMAP)
            + 1
            + ref_tree_blocks(self.big)
            + COMMIT_MARGIN
    }

    /// Blocks the map describes.
    pub fn nr_blocks(&self) -> u64 {
        self.counts.len() as u64
    }

    /// Blocks in use now.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// A block free now and at the last commit, counted once; none
    /// (NoMetadataSpace) if taking it would leave less than the reserve,
    /// unless a commit takes it.
    pub fn alloc(&mut self) -> Result<u64, FormatError> {
        let keep = if self.committing { 0 } else { self.reserve() };
        if self.usable <= keep {
            return Err(FormatError::NoMetadataSpace);
        }
        let n = self.nr_blocks();
        for k in 0..n {
            let nr = (self.hint + k) % n;
            let i = nr as usize;
            if self.counts[i] == 0 && self.committed[i] == 0 {
                self.counts[i] = 1;
                self.allocated += 1;
                self.usable -= 1;
                self.hint = nr + 1;
                return Ok(nr);
            }
        }
        Err(FormatError::NoMetadataSpace)
    }

    /// Whether `nr` was allocated since the last commit (may be written).
    pub fn is_new(&self, nr: u64) -> bool {
        let i = nr as usize;
        i < self.counts.len() && self.committed[i] == 0 && self.counts[i] > 0
    }

    /// Block `nr`'s count.
    pub fn count(&self, nr: u64) -> u32 {
        self.counts.get(nr as usize).copied().unwrap_or(0)
    }

    /// Block `nr`'s count now and at the last commit.
    fn slot(&mut self, nr: u64) -> Result<(&mut u32, u32), FormatError> {
        let nr_blocks = self.nr_blocks();
        let old = self.committed.get(nr as usize).copied().unwrap_or(0);
        let c = self
            .counts
            .get_mut(nr as usize)
            .ok_or(FormatError::OutOfRange { nr, nr_blocks })?;
        Ok((c, old))
    }

    /// One more reference to `nr`.
    pub fn inc(&mut self, nr: u64) -> Result<(), FormatError> {
        let (c, old) = self.slot(nr)?;
        *c += 1;
        let now = *c;
        if now == 1 {
            self.allocated += 1;
            if old == 0 {
                self.usable -= 1;
            }
        }
        if now == 3 {
            self.big += 1;
        }
        Ok(())
    }

    /// One reference less to `nr` (a free block: an error, nothing changed).
    pub fn dec(&mut self, nr: u64) -> Result<(), FormatError> {
        let (c, old) = self.slot(nr)?;
        if *c == 0 {
            return Err(FormatError::RefCount {
                nr,
                found: 0,
                want: 1,
            });
        }
        *c -= 1;
        let now = *c;
        if now == 2 {
            self.big -= 1;
        }
        if now == 0 {
            self.allocated -= 1;
            self.hint = self.hint.min(nr);
            if old == 0 {
                self.usable += 1;
            }
        }
        Ok(())
    }

    /// Writes the map (its bitmaps, index block and ref-count tree in
    /// blocks new to this commit) and returns its root for the
    /// superblock, which the caller writes after flushing. From then on
    /// the map's state is committed and the blocks it was just written
    /// to are released (reusable after the next commit). The commit may
    /// take the reserve.
    pub fn commit<I: BlockIo + ?Sized>(
        &mut self,
        io: &mut I,
        sc: &mut SmScratch,
        crc: Crc32c,
    ) -> Result<SmRoot, FormatError> {
        self.committing = true;
        let r = self.write_out(io, sc, crc);
        self.committing = false;
        r
    }

    /// [`Self::commit`]'s work.
    fn write_out<I: BlockIo + ?Sized>(
        &mut self,
        io: &mut I,
        sc: &mut SmScratch,
        crc: Crc32c,
    ) -> Result<SmRoot, FormatError> {
        let n = self.nr_blocks();
        let nbm = n.div_ceil(ENTRIES_PER_BITMAP) as usize;
        let SmScratch {
            btree: scratch,
            bitmap,
            old: index,
        } = sc;
        // The bitmaps' blocks, noted in the index as they are taken.
        index.fill(0);
        for b in 0..nbm {
            let nr = self.alloc()?;
            IndexEntry {
                blocknr: nr,
                ..IndexEntry::default()
            }
            .encode(&mut index[entry_at(b)..]);
        }
        let index_nr = self.alloc()?;
        // The ref-count tree, built with the map's own blocks; counts of
        // the blocks it takes are 1, never entries of it.
        let ref_root = {
            let mut tx = SmTx {
                sm: self,
                io: &mut *io,
                crc,
            };
            let mut root = btree::empty_tree(&mut tx, REF_LEVEL, scratch)?;
            for nr in 0..n {
                let c = tx.sm.counts[nr as usize];
                if c > 2 {
                    root = btree::insert(
                        &mut tx,
                        scratch,
                        root,
                        &[REF_LEVEL],
                        &[nr],
                        &c.to_le_bytes(),
                    )?
                    .0;
                }
            }
            root
        };
        // Bitmaps and index from the counts as they are now.
        for b in 0..nbm {
            let bnr = fmt::metadata_index_entry(&index[..], b).blocknr;
            bitmap.fill(0);
            let first = b as u64 * ENTRIES_PER_BITMAP;
            let end = (first + ENTRIES_PER_BITMAP).min(n);
            let mut free = 0u32;
            let mut none_free_before = None;
            for nr in first..end {
                let c = self.counts[nr as usize];
                bitmap_set(&mut bitmap[..], nr - first, c.min(3) as u8);
                if c == 0 {
                    free += 1;
                    none_free_before.get_or_insert((nr - first) as u32);
                }
            }
            seal(bitmap, mdb::SALT_BITMAP, bnr, crc)?;
            io.write(bnr, bitmap)?;
            IndexEntry {
                blocknr: bnr,
                nr_free: free,
                none_free_before: none_free_before.unwrap_or((end - first) as u32),
            }
            .encode(&mut index[entry_at(b)..]);
        }
        seal(index, mdb::SALT_INDEX, index_nr, crc)?;
        io.write(index_nr, index)?;
        let root = SmRoot {
            nr_blocks: n,
            nr_allocated: self.allocated,
            bitmap_root: index_nr,
            ref_count_root: ref_root,
        };
        // Committed as written; the map's blocks go back to free (the
        // committed counts keep them from reuse until the next commit).
        copy_counts(&mut self.committed, &self.counts);
        self.usable = n - self.allocated;
        for b in 0..nbm {
            self.dec(fmt::metadata_index_entry(&index[..], b).blocknr)?;
        }
        self.dec(index_nr)?;
        let mut tx = SmTx {
            sm: self,
            io: &mut *io,
            crc,
        };
        btree::release_tree(&mut tx, bitmap, ref_root, REF_LEVEL)?;
        Ok(root)
    }
}

/// `to = from` for count arrays (a loop: the kernel build's objtool does
/// not know `copy_from_slice`'s length-mismatch path for `u32`).
fn copy_counts(to: &mut [u32], from: &[u32]) {
    for (t, &f) in to.iter_mut().zip(from) {
        *t = f;
    }
}

/// Where index entry `b` starts in the metadata map's index block.
fn entry_at(b: usize) -> usize {
    mdb::HEADER_BYTES + b * fmt::INDEX_ENTRY_BYTES
}

fn seal(block: &mut [u8; BLOCK_BYTES], salt: u32, nr: u64, crc: Crc32c) -> Result<(), FormatError> {
    mdb::seal(block, salt, nr, crc).map_err(|err| FormatError::Block { nr, err })
}

/// Metadata blocks and their counts as a btree transaction without data
/// blocks: the space maps' own trees (the metadata map's ref-count tree,
/// the data map's index and ref-count trees).
pub struct SmTx<'a, C, I: ?Sized> {
    pub sm: &'a mut MetadataSm<C>,
    pub io: &'a mut I,
    pub crc: Crc32c,
}

impl<C: DerefMut<Target = [u32]>, I: BlockIo + ?Sized> Transaction for SmTx<'_, C, I> {
    fn read(&mut self, nr: u64, buf: &mut [u8; BLOCK_BYTES]) -> Result<(), FormatError> {
        self.io.read(nr, buf)
    }
    fn read_checked(&mut self, nr: u64, buf: &mut [u8; BLOCK_BYTES]) -> Result<bool, FormatError> {
        self.io.read_checked(nr, buf)
    }
    fn checked(&mut self, nr: u64) {
        self.io.checked(nr)
    }
    fn write(&mut self, nr: u64, buf: &[u8; BLOCK_BYTES]) -> Result<(), FormatError> {
        self.io.write(nr, buf)
    }
    fn alloc(&mut self) -> Result<u64, FormatError> {
        self.sm.alloc()
    }
    fn is_new(&self, nr: u64) -> bool {
        self.sm.is_new(nr)
    }
    fn count(&self, nr: u64) -> u32 {
        self.sm.count(nr)
    }
    fn inc(&mut self, nr: u64) -> Result<(), FormatError> {
        self.sm.inc(nr)
    }
    fn dec(&mut self, nr: u64) -> Result<(), FormatError> {
        self.sm.dec(nr)
    }
    fn inc_data(&mut self, nr: u64) -> Result<(), FormatError> {
        Err(FormatError::Value {
            key: nr,
            what: "a data block in the space map's own tree",
        })
    }
    fn dec_data(&mut self, nr: u64) -> Result<(), FormatError> {
        self.inc_data(nr)
    }
    fn crc(&self) -> Crc32c {
        self.crc
    }
}

/// The index tree's level: bitmap number → index entry.
const INDEX_LEVEL: Level = Level {
    value_size: fmt::INDEX_ENTRY_BYTES,
    kind: ValueKind::Plain,
};

/// The buffers a data space-map change works in.
pub struct SmScratch {
    pub btree: Scratch,
    bitmap: [u8; BLOCK_BYTES],
    old: [u8; BLOCK_BYTES],
}

impl SmScratch {
    /// Zeroed buffers (on the heap in the kernel).
    pub const fn new() -> Self {
        SmScratch {
            btree: Scratch::new(),
            bitmap: [0; BLOCK_BYTES],
            old: [0; BLOCK_BYTES],
        }
    }
}

impl Default for SmScratch {
    fn default() -> Self {
        Self::new()
    }
}

/// The data space map: every data block's reference count, on the
/// metadata device as dm keeps it (bitmaps, an index btree, a ref-count
/// btree), changed copy-on-write through the metadata transaction like
/// the mapping trees. A block is allocated only if it is free now and was
/// at the last commit (a crash must find the committed mappings' data
/// unchanged).
pub struct DataSm {
    root: SmRoot,
    committed: SmRoot,
    /// Where the next search for a free block starts.
    hint: u64,
}

impl DataSm {
    /// A new map of `nr_blocks` free blocks (its bitmaps, index and
    /// ref-count tree written in new metadata blocks).
    pub fn format<T: Transaction + ?Sized>(
        tx: &mut T,
        sc: &mut SmScratch,
        nr_blocks: u64,
    ) -> Result<Self, FormatError> {
        let root = SmRoot {
            nr_blocks: 0,
            nr_allocated: 0,
            bitmap_root: btree::empty_tree(tx, INDEX_LEVEL, &mut sc.btree)?,
            ref_count_root: btree::empty_tree(tx, REF_LEVEL, &mut sc.btree)?,
        };
        let mut sm = DataSm {
            root,
            committed: SmRoot::default(),
            hint: 0,
        };
        sm.extend(tx, sc, nr_blocks)?;
        Ok(sm)
    }

    /// Grows the map to `nr_blocks` (not fewer than now): the last
    /// bitmap's free count recounted over its new range, then a zeroed
    /// bitmap and its index entry for each bitmap's worth after it. Free
    /// counts are exact whoever formatted the map (dm writes a whole
    /// bitmap's count for a partial last one): [`Self::alloc`] skips
    /// bitmaps whose count is 0. A bitmap's entries past the map's end
    /// are zero (every formatter writes zeroed bitmaps): free once in
    /// range. On an error the transaction is half changed (abort it).
    pub fn extend<T: Transaction + ?Sized>(
        &mut self,
        tx: &mut T,
        sc: &mut SmScratch,
        nr_blocks: u64,
    ) -> Result<(), FormatError> {
        let old = self.root.nr_blocks;
        if nr_blocks < old {
            return Err(FormatError::Value {
                key: nr_blocks,
                what: "a data space map cannot shrink",
            });
        }
        let old_bitmaps = old.div_ceil(ENTRIES_PER_BITMAP);
        if old_bitmaps * ENTRIES_PER_BITMAP > old {
            let b = old_bitmaps - 1;
            let first = b * ENTRIES_PER_BITMAP;
            let end = nr_blocks.min(first + ENTRIES_PER_BITMAP) - first;
            let mut e = Self::index_entry(tx, sc, &self.root, b)?;
            read_bitmap(tx, e.blocknr, &mut sc.bitmap)?;
            e.nr_free = (0..end).filter(|&i| bitmap_get(&sc.bitmap, i) == 0).count() as u32;
            // dm searches from here: no later than the first new block.
            e.none_free_before = e.none_free_before.min((old - first) as u32);
            self.put_entry(tx, sc, b, &e)?;
        }
        for b in old_bitmaps..nr_blocks.div_ceil(ENTRIES_PER_BITMAP) {
            let nr = tx.alloc()?;
            sc.bitmap.fill(0);
            seal(&mut sc.bitmap, mdb::SALT_BITMAP, nr, tx.crc())?;
            tx.write(nr, &sc.bitmap)?;
            let blocks = ENTRIES_PER_BITMAP.min(nr_blocks - b * ENTRIES_PER_BITMAP);
            let e = IndexEntry {
                blocknr: nr,
                nr_free: blocks as u32,
                none_free_before: 0,
            };
            self.put_entry(tx, sc, b, &e)?;
        }
        self.root.nr_blocks = nr_blocks;
        Ok(())
    }

    /// Writes bitmap `b`'s index entry (the index shadowed as needed).
    fn put_entry<T: Transaction + ?Sized>(
        &mut self,
        tx: &mut T,
        sc: &mut SmScratch,
        b: u64,
        e: &IndexEntry,
    ) -> Result<(), FormatError> {
        let mut v = [0u8; fmt::INDEX_ENTRY_BYTES];
        e.encode(&mut v);
        self.root.bitmap_root = btree::insert(
            tx,
            &mut sc.btree,
            self.root.bitmap_root,
            &[INDEX_LEVEL],
            &[b],
            &v,
        )?
        .0;
        Ok(())
    }

    /// The map a commit wrote.
    pub fn open(root: SmRoot) -> Self {
        DataSm {
            root,
            committed: root,
            hint: 0,
        }
    }

    /// Its root now (for the superblock at a commit).
    pub fn root(&self) -> SmRoot {
        self.root
    }

    /// The root just written is the committed one from now on.
    pub fn committed(&mut self) {
        self.committed = self.root;
    }

    /// Blocks in use.
    pub fn allocated(&self) -> u64 {
        self.root.nr_allocated
    }

    /// Bitmap `b`'s index entry in the map at `root`.
    fn index_entry<T: Transaction + ?Sized>(
        tx: &mut T,
        sc: &mut SmScratch,
        root: &SmRoot,
        b: u64,
    ) -> Result<IndexEntry, FormatError> {
        let mut e = [0u8; fmt::INDEX_ENTRY_BYTES];
        let crc = tx.crc();
        let mut src = TxSource(tx);
        if !fmt::lookup(
            &mut src,
            sc.btree_buf(),
            root.bitmap_root,
            fmt::INDEX_ENTRY_BYTES,
            b,
            &mut e,
            crc,
        )? {
            return Err(FormatError::Value {
                key: b,
                what: "data space map index has no entry for this bitmap",
            });
        }
        Ok(IndexEntry::decode(&e))
    }

    /// Block `nr`'s count in the map at `root` (its bitmap read into
    /// `bitmap`).
    fn count_in<T: Transaction + ?Sized>(
        tx: &mut T,
        sc: &mut SmScratch,
        root: &SmRoot,
        nr: u64,
    ) -> Result<u32, FormatError> {
        if nr >= root.nr_blocks {
            return Err(FormatError::OutOfRange {
                nr,
                nr_blocks: root.nr_blocks,
            });
        }
        let e = Self::index_entry(tx, sc, root, nr / ENTRIES_PER_BITMAP)?;
        read_bitmap(tx, e.blocknr, &mut sc.bitmap)?;
        match bitmap_get(&sc.bitmap, nr % ENTRIES_PER_BITMAP) {
            3 => {
                let mut v = [0u8; 4];
                let crc = tx.crc();
                let mut src = TxSource(tx);
                if !fmt::lookup(
                    &mut src,
                    sc.btree_buf(),
                    root.ref_count_root,
                    4,
                    nr,
                    &mut v,
                    crc,
                )? {
                    return Err(FormatError::Value {
                        key: nr,
                        what: "count 3 in the bitmap but none in the ref-count tree",
                    });
                }
                Ok(u32::from_le_bytes(v))
            }
            c => Ok(u32::from(c)),
        }
    }

    /// Block `nr`'s count.
    pub fn count<T: Transaction + ?Sized>(
        &self,
        tx: &mut T,
        sc: &mut SmScratch,
        nr: u64,
    ) -> Result<u32, FormatError> {
        Self::count_in(tx, sc, &self.root, nr)
    }

    /// Sets block `nr`'s count from `old` to `new`: its bitmap shadowed
    /// and changed, the index entry's free count, the ref-count tree.
    fn set<T: Transaction + ?Sized>(
        &mut self,
        tx: &mut T,
        sc: &mut SmScratch,
        nr: u64,
        old: u32,
        new: u32,
    ) -> Result<(), FormatError> {
        let b = nr / ENTRIES_PER_BITMAP;
        let mut e = Self::index_entry(tx, sc, &self.root, b)?;
        read_bitmap(tx, e.blocknr, &mut sc.bitmap)?;
        if !tx.is_new(e.blocknr) {
            let copy = tx.alloc()?;
            tx.dec(e.blocknr)?;
            e.blocknr = copy;
        }
        bitmap_set(&mut sc.bitmap, nr % ENTRIES_PER_BITMAP, new.min(3) as u8);
        seal(&mut sc.bitmap, mdb::SALT_BITMAP, e.blocknr, tx.crc())?;
        tx.write(e.blocknr, &sc.bitmap)?;
        match (old == 0, new == 0) {
            (true, false) => {
                e.nr_free -= 1;
                self.root.nr_allocated += 1;
            }
            (false, true) => {
                e.nr_free += 1;
                self.root.nr_allocated -= 1;
                self.hint = self.hint.min(nr);
            }
            _ => {}
        }
        self.put_entry(tx, sc, b, &e)?;
        if new > 2 {
            self.root.ref_count_root = btree::insert(
                tx,
                &mut sc.btree,
                self.root.ref_count_root,
                &[REF_LEVEL],
                &[nr],
                &new.to_le_bytes(),
            )?
            .0;
        } else if old > 2 {
            self.root.ref_count_root = btree::remove(
                tx,
                &mut sc.btree,
                self.root.ref_count_root,
                &[REF_LEVEL],
                &[nr],
            )?
            .0;
        }
        Ok(())
    }

    /// One more reference to data block `nr`.
    pub fn inc<T: Transaction + ?Sized>(
        &mut self,
        tx: &mut T,
        sc: &mut SmScratch,
        nr: u64,
    ) -> Result<(), FormatError> {
        let old = self.count(tx, sc, nr)?;
        self.set(tx, sc, nr, old, old + 1)
    }

    /// One reference less to data block `nr` (a free block: an error).
    pub fn dec<T: Transaction + ?Sized>(
        &mut self,
        tx: &mut T,
        sc: &mut SmScratch,
        nr: u64,
    ) -> Result<(), FormatError> {
        let old = self.count(tx, sc, nr)?;
        if old == 0 {
            return Err(FormatError::RefCount {
                nr,
                found: 0,
                want: 1,
            });
        }
        self.set(tx, sc, nr, old, old - 1)
    }

    /// A data block free now and at the last commit, counted once; None
    /// when the data device is full.
    pub fn alloc<T: Transaction + ?Sized>(
        &mut self,
        tx: &mut T,
        sc: &mut SmScratch,
    ) -> Result<Option<u64>, FormatError> {
        let n = self.root.nr_blocks;
        let nbm = n.div_ceil(ENTRIES_PER_BITMAP);
        let first_bitmap = self.hint / ENTRIES_PER_BITMAP;
        for k in 0..nbm {
            let b = (first_bitmap + k) % nbm.max(1);
            let e = Self::index_entry(tx, sc, &self.root, b)?;
            if e.nr_free == 0 {
                continue;
            }
            read_bitmap(tx, e.blocknr, &mut sc.bitmap)?;
            // The committed bitmap (the same block unless shadowed since).
            let old_block = if b < self.committed.nr_blocks.div_ceil(ENTRIES_PER_BITMAP) {
                Some(Self::index_entry(tx, sc, &self.committed, b)?.blocknr)
            } else {
                None
            };
            match old_block {
                Some(o) if o != e.blocknr => read_bitmap(tx, o, &mut sc.old)?,
                Some(_) => sc.old.copy_from_slice(&sc.bitmap),
                None => sc.old.fill(0),
            }
            let start = b * ENTRIES_PER_BITMAP;
            let end = (start + ENTRIES_PER_BITMAP).min(n);
            let from = if b == first_bitmap && k == 0 {
                self.hint.max(start)
            } else {
                start
            };
            for nr in (from..end).chain(start..from) {
                let i = nr - start;
                if bitmap_get(&sc.bitmap, i) == 0 && bitmap_get(&sc.old, i) == 0 {
                    self.set(tx, sc, nr, 0, 1)?;
                    self.hint = nr + 1;
                    return Ok(Some(nr));
                }
            }
        }
        Ok(None)
    }
}

impl SmScratch {
    /// A buffer for lookups (the btree scratch's first; lookups and
    /// changes do not overlap).
    fn btree_buf(&mut self) -> &mut [u8; BLOCK_BYTES] {
        self.btree.buf(0)
    }
}

/// A transaction read as a block source.
struct TxSource<'a, T: ?Sized>(&'a mut T);

impl<T: Transaction + ?Sized> BlockSource for TxSource<'_, T> {
    fn read(&mut self, nr: u64, buf: &mut [u8; BLOCK_BYTES]) -> Result<(), FormatError> {
        self.0.read(nr, buf)
    }
    fn read_checked(&mut self, nr: u64, buf: &mut [u8; BLOCK_BYTES]) -> Result<bool, FormatError> {
        self.0.read_checked(nr, buf)
    }
    fn checked(&mut self, nr: u64) {
        self.0.checked(nr)
    }
}

/// Reads and checks bitmap block `nr`.
fn read_bitmap<T: Transaction + ?Sized>(
    tx: &mut T,
    nr: u64,
    buf: &mut [u8; BLOCK_BYTES],
) -> Result<(), FormatError> {
    if !tx.read_checked(nr, buf)? {
        mdb::verify(&buf[..], mdb::SALT_BITMAP, nr, tx.crc())
            .map_err(|err| FormatError::Block { nr, err })?;
        tx.checked(nr);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vblk::metadata_block::crc32c_soft;

    /// The map committed at `root` in `img`, of `n` blocks, loaded back.
    fn load(img: &mut Image, root: &SmRoot, n: usize, sc: &mut SmScratch) -> MetadataSm<Vec<u32>> {
        MetadataSm::load(vec![0; n], vec![0; n], img, root, crc32c_soft, sc).unwrap()
    }

    struct Image(Vec<u8>);

    impl BlockSource for Image {
        fn read(&mut self, nr: u64, buf: &mut [u8; BLOCK_BYTES]) -> Result<(), FormatError> {
            let at = nr as usize * BLOCK_BYTES;
            buf.copy_from_slice(&self.0[at..at + BLOCK_BYTES]);
            Ok(())
        }
    }

    impl BlockIo for Image {
        fn write(&mut self, nr: u64, buf: &[u8; BLOCK_BYTES]) -> Result<(), FormatError> {
            let at = nr as usize * BLOCK_BYTES;
            self.0[at..at + BLOCK_BYTES].copy_from_slice(buf);
            Ok(())
        }
    }

    #[test]
    fn blocks_of_the_last_commit_are_not_reused_before_the_next() {
        let n = 64usize;
        let mut sm = MetadataSm::format(vec![0; n], vec![0; n]).unwrap();
        let mut img = Image(vec![0; n * BLOCK_BYTES]);
        let mut sc = Box::new(SmScratch::new());
        let a: Vec<u64> = (0..10).map(|_| sm.alloc().unwrap()).collect();
        assert!(
            a.iter().all(|&b| b != 0 && sm.is_new(b)),
            "never the superblock"
        );
        sm.commit(&mut img, &mut sc, crc32c_soft).unwrap();
        assert!(!sm.is_new(a[0]), "committed blocks are no longer new");
        // Freed after the commit: not allocated again in this transaction.
        for &b in &a {
            sm.dec(b).unwrap();
        }
        let b: Vec<u64> = (0..20).map(|_| sm.alloc().unwrap()).collect();
        assert!(b.iter().all(|x| !a.contains(x)), "{a:?} reused in {b:?}");
        sm.commit(&mut img, &mut sc, crc32c_soft).unwrap();
        // After the next commit they are free for good.
        assert!(a
            .iter()
            .all(|&x| sm.count(x) == 0 && sm.committed[x as usize] == 0));
        while sm.alloc().is_ok() {}
        assert_eq!(sm.alloc(), Err(FormatError::NoMetadataSpace));
        // All but the map's own three blocks of the last commit (a
        // bitmap, the index, the ref-count tree's root), held until the
        // next commit, and the reserve: a bitmap, the index, a ref-count
        // leaf and the margin.
        assert_eq!(sm.reserve(), 3 + COMMIT_MARGIN);
        assert_eq!(sm.allocated(), n as u64 - 3 - sm.reserve());
        // The commit takes from the reserve.
        sm.commit(&mut img, &mut sc, crc32c_soft).unwrap();
        assert!(sm.dec(0).is_ok());
        assert!(sm.dec(0).is_err(), "a free block cannot lose a reference");
    }

    #[test]
    fn the_reserve_covers_the_ref_count_tree_a_commit_builds() {
        assert_eq!(ref_tree_blocks(0), 1);
        assert_eq!(ref_tree_blocks(336), 3, "a bound: 336 fit one leaf");
        assert_eq!(ref_tree_blocks(337), 4);
        // 200 leaves under two nodes under a root.
        assert_eq!(ref_tree_blocks(168 * 200), 203);
        // Fill a map with blocks counted 3 times until changes are
        // refused: the commit still fits, and the map loads back.
        let n = 4096usize;
        let mut sm = MetadataSm::format(vec![0; n], vec![0; n]).unwrap();
        let mut img = Image(vec![0; n * BLOCK_BYTES]);
        let mut sc = Box::new(SmScratch::new());
        let mut taken = 0;
        while let Ok(b) = sm.alloc() {
            sm.inc(b).unwrap();
            sm.inc(b).unwrap();
            taken += 1;
        }
        assert_eq!(sm.big, taken);
        assert_eq!(sm.usable, sm.reserve());
        assert!(sm.reserve() > 3 + COMMIT_MARGIN + 20, "{}", sm.reserve());
        let root = sm.commit(&mut img, &mut sc, crc32c_soft).unwrap();
        let loaded = load(&mut img, &root, n, &mut sc);
        assert_eq!(
            (loaded.allocated(), loaded.usable, loaded.big),
            (sm.allocated(), sm.usable, sm.big)
        );
        // Freed after the commit: not usable until the next.
        sm.dec(1).unwrap();
        sm.dec(1).unwrap();
        sm.dec(1).unwrap();
        assert_eq!(sm.big, taken - 1);
        assert_eq!(sm.alloc(), Err(FormatError::NoMetadataSpace));
    }

    #[test]
    fn a_commit_loads_back_with_counts_above_two() {
        let n = 40_000usize; // three bitmaps
        let mut sm = MetadataSm::format(vec![0; n], vec![0; n]).unwrap();
        let mut img = Image(vec![0; n * BLOCK_BYTES]);
        let mut sc = Box::new(SmScratch::new());
        let blocks: Vec<u64> = (0..500).map(|_| sm.alloc().unwrap()).collect();
        for (i, &b) in blocks.iter().enumerate() {
            for _ in 0..i % 7 {
                sm.inc(b).unwrap();
            }
        }
        // Some far out, in the last bitmap.
        for b in [33_000u64, 39_999] {
            sm.inc(b).unwrap();
            sm.inc(b).unwrap();
            sm.inc(b).unwrap();
        }
        let root = sm.commit(&mut img, &mut sc, crc32c_soft).unwrap();
        let loaded = load(&mut img, &root, n, &mut sc);
        for (i, &b) in blocks.iter().enumerate() {
            assert_eq!(loaded.count(b), 1 + (i % 7) as u32, "block {b}");
        }
        assert_eq!(loaded.count(33_000), 3);
        assert_eq!(loaded.count(39_999), 3);
        // Both have released the map's own blocks, which the commit
        // counts: three bitmaps, the index, the ref-count tree (359
        // entries: two leaves and a root).
        assert_eq!(loaded.allocated(), sm.allocated());
        assert_eq!(loaded.allocated() + 7, root.nr_allocated);
        assert!(MetadataSm::load(
            vec![0; n - 1],
            vec![0; n - 1],
            &mut img,
            &root,
            crc32c_soft,
            &mut sc
        )
        .is_err());
    }
}
