// SPDX-License-Identifier: GPL-2.0
//! dm-snapshot's persistent exception store, as bytes and numbers: the
//! header, where metadata areas and data chunks lie on the COW device,
//! the area entries, and the in-memory exception table. Pure `core`,
//! host-tested; the snapshot target does the I/O.
//!
//! The COW device is cut into chunks of the snapshot's chunk size:
//!
//! | chunk | what |
//! |---|---|
//! | 0 | header: magic `SnAp` (`0x70416e53`), valid, version 1, chunk size in sectors (u32 each, little-endian); the rest zero |
//! | 1 | metadata area 0: `E = chunk_bytes / 16` entries `{old_chunk, new_chunk}` (u64 each) |
//! | 2 ..= E + 1 | data chunks |
//! | 1 + (E + 1)·i | metadata area i, then E data chunks |
//!
//! An entry with `new_chunk == 0` ends an area's list; a full area is
//! followed by the next. The next area is zeroed on disk before a full
//! area is written, and every area write is PREFLUSH|FUA (the copies it
//! names are on disk before it is).

/// `SnAp`, little-endian.
pub const MAGIC: u32 = 0x7041_6e53;
/// The only version dm writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the header that mean something.
pub const HEADER_BYTES: usize = 16;
/// Bytes of one area entry.
pub const ENTRY_BYTES: usize = 16;
/// Chunk sizes vblk accepts: a power of two, at least 8 sectors (4 KiB:
/// one page) and at most 2048 (1 MiB: one area is one bio).
pub const MIN_CHUNK_SECTORS: u64 = 8;
/// See [`MIN_CHUNK_SECTORS`].
pub const MAX_CHUNK_SECTORS: u64 = 2048;

/// What chunk 0 of a COW device says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// Magic 0: a new store (the target writes a header and zeroes area 0).
    New,
    /// A store dm's format: whether it is still valid, and its chunk size.
    Found { valid: bool, chunk_sectors: u32 },
}

/// Why a COW device cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// Chunk 0 is not a snapshot header (dm: "Invalid or corrupt snapshot").
    Corrupt { magic: u32 },
    /// A header of another version.
    Version(u32),
    /// A chunk size vblk does not take (see [`MIN_CHUNK_SECTORS`]).
    ChunkSize(u64),
    /// The COW device has no room for the header, one area and one chunk.
    TooSmall { sectors: u64, need: u64 },
    /// An entry names a chunk outside the device or a metadata chunk.
    BadEntry { area: u64, old: u64, new: u64 },
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            StoreError::Corrupt { magic } => write!(
                f,
                "invalid or corrupt snapshot: magic {magic:#010x}, expected {MAGIC:#010x} (or 0 for a new store)"
            ),
            StoreError::Version(v) => write!(f, "snapshot store version {v}, only {VERSION} is known"),
            StoreError::ChunkSize(c) => write!(
                f,
                "chunk size {c} sectors: a power of two from {MIN_CHUNK_SECTORS} to {MAX_CHUNK_SECTORS}"
            ),
            StoreError::TooSmall { sectors, need } => write!(
                f,
                "the COW device has {sectors} sectors, a store needs at least {need} (header, one area, one chunk)"
            ),
            StoreError::BadEntry { area, old, new } => write!(
                f,
                "metadata area {area} maps origin chunk {old} to chunk {new}, outside the COW device's data chunks"
            ),
        }
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut n = [0u8; 8];
    n.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(n)
}

/// Reads chunk 0 (`buf` holds at least [`HEADER_BYTES`]).
pub fn parse_header(buf: &[u8]) -> Result<Header, StoreError> {
    let magic = le32(buf, 0);
    if magic == 0 {
        return Ok(Header::New);
    }
    if magic != MAGIC {
        return Err(StoreError::Corrupt { magic });
    }
    let version = le32(buf, 8);
    if version != VERSION {
        return Err(StoreError::Version(version));
    }
    Ok(Header::Found {
        valid: le32(buf, 4) != 0,
        chunk_sectors: le32(buf, 12),
    })
}

/// Writes a header into `buf` (the whole chunk: the rest is zeroed).
pub fn write_header(buf: &mut [u8], valid: bool, chunk_sectors: u32) {
    buf.fill(0);
    buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    buf[4..8].copy_from_slice(&u32::from(valid).to_le_bytes());
    buf[8..12].copy_from_slice(&VERSION.to_le_bytes());
    buf[12..16].copy_from_slice(&chunk_sectors.to_le_bytes());
}

/// Where things lie on a COW device of a given chunk size and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Sectors per chunk.
    pub chunk_sectors: u64,
    /// Entries per metadata area (E).
    pub per_area: u64,
    /// Whole chunks on the COW device.
    pub chunks: u64,
}

impl Geometry {
    /// The geometry of a COW device of `sectors` with chunks of
    /// `chunk_sectors`.
    pub fn new(chunk_sectors: u64, sectors: u64) -> Result<Self, StoreError> {
        if !chunk_sectors.is_power_of_two()
            || !(MIN_CHUNK_SECTORS..=MAX_CHUNK_SECTORS).contains(&chunk_sectors)
        {
            return Err(StoreError::ChunkSize(chunk_sectors));
        }
        let chunks = sectors / chunk_sectors;
        if chunks < 3 {
            return Err(StoreError::TooSmall {
                sectors,
                need: 3 * chunk_sectors,
            });
        }
        Ok(Geometry {
            chunk_sectors,
            per_area: chunk_sectors * 512 / ENTRY_BYTES as u64,
            chunks,
        })
    }

    /// Bytes per chunk.
    pub fn chunk_bytes(&self) -> usize {
        (self.chunk_sectors * 512) as usize
    }

    /// The chunk metadata area `area` is in.
    pub fn area_chunk(&self, area: u64) -> u64 {
        1 + (self.per_area + 1) * area
    }

    /// Whether `chunk` is the header or a metadata area.
    pub fn is_metadata(&self, chunk: u64) -> bool {
        chunk == 0 || chunk % (self.per_area + 1) == 1
    }

    /// The first data chunk at or after `chunk`.
    pub fn skip_metadata(&self, chunk: u64) -> u64 {
        if self.is_metadata(chunk) {
            chunk + 1
        } else {
            chunk
        }
    }

    /// The origin chunk `sector` is in.
    pub fn chunk_of(&self, sector: u64) -> u64 {
        sector / self.chunk_sectors
    }
}

/// The entries of one metadata area, in order, up to the first one with
/// `new_chunk == 0`.
pub fn area_entries(buf: &[u8], per_area: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    (0..per_area as usize)
        .map(move |i| (le64(buf, i * ENTRY_BYTES), le64(buf, i * ENTRY_BYTES + 8)))
        .take_while(|&(_, new)| new != 0)
}

/// Entry `slot` of an area: `(old_chunk, new_chunk)`.
pub fn read_entry(buf: &[u8], slot: u64) -> (u64, u64) {
    let at = slot as usize * ENTRY_BYTES;
    (le64(buf, at), le64(buf, at + 8))
}

/// dm's next free chunk while a merge takes entries off the end of area
/// `area`, which has `entries` left: as if allocation had been contiguous
/// (so status shows allocated == metadata once all are merged).
pub fn merged_next_free(geo: &Geometry, area: u64, entries: u64) -> u64 {
    geo.area_chunk(area) + entries + 1
}

/// Writes entry `slot` of an area.
pub fn write_entry(buf: &mut [u8], slot: u64, old: u64, new: u64) {
    let at = slot as usize * ENTRY_BYTES;
    buf[at..at + 8].copy_from_slice(&old.to_le_bytes());
    buf[at + 8..at + 16].copy_from_slice(&new.to_le_bytes());
}

/// What loading the areas found: where the next exception goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The area new entries go to (the first that is not full).
    pub area: u64,
    /// Entries already in it.
    pub committed: u64,
    /// The next free data chunk.
    pub next_free: u64,
}

impl Loaded {
    /// A new store: area 0 empty, data from chunk 2.
    pub fn new() -> Self {
        Loaded {
            area: 0,
            committed: 0,
            next_free: 2,
        }
    }

    /// Takes in area `area`'s entries (areas in order, from 0), checking
    /// each against `geo`, calling `insert` for each; returns whether the
    /// area was full (read the next one).
    pub fn load_area(
        &mut self,
        geo: &Geometry,
        area: u64,
        buf: &[u8],
        insert: &mut dyn FnMut(u64, u64),
    ) -> Result<bool, StoreError> {
        let mut n = 0;
        for (old, new) in area_entries(buf, geo.per_area) {
            if new >= geo.chunks || geo.is_metadata(new) {
                return Err(StoreError::BadEntry { area, old, new });
            }
            insert(old, new);
            if new >= self.next_free {
                self.next_free = new + 1;
            }
            n += 1;
        }
        self.next_free = geo.skip_metadata(self.next_free);
        self.area = area;
        self.committed = n;
        if n == geo.per_area {
            // Full: entries go to the next area (zeroed on disk already).
            self.area = area + 1;
            self.committed = 0;
            return Ok(true);
        }
        Ok(false)
    }

    /// Takes the next free data chunk, if the device has one.
    pub fn allocate(&mut self, geo: &Geometry) -> Option<u64> {
        let chunk = geo.skip_metadata(self.next_free);
        if chunk >= geo.chunks {
            return None;
        }
        self.next_free = geo.skip_metadata(chunk + 1);
        Some(chunk)
    }

    /// dm's usage: sectors allocated (chunks up to the next free one),
    /// and metadata sectors (the header and every area up to the
    /// current one).
    pub fn usage(&self, geo: &Geometry) -> (u64, u64) {
        (
            self.next_free * geo.chunk_sectors,
            (self.area + 2) * geo.chunk_sectors,
        )
    }
}

impl Default for Loaded {
    fn default() -> Self {
        Self::new()
    }
}

/// The exception table: origin chunk → COW chunk, an open-addressing hash
/// over a slice of `u64` pairs the caller allocates (so the kernel can
/// size it up front and never allocate while mapping). A slot with
/// `old == u64::MAX` is free.
pub struct ExceptionTable<S> {
    slots: S,
    len: usize,
}

/// The `old` of a free slot.
const FREE: u64 = u64::MAX;

impl<S: core::ops::DerefMut<Target = [u64]>> ExceptionTable<S> {
    /// Pairs of slots needed for `n` exceptions at most (a power of two,
    /// at most 3/4 full): allocate `2 * slots_for(n)` `u64`s.
    pub fn slots_for(n: u64) -> usize {
        let want = n.saturating_mul(4) / 3 + 1;
        want.max(8).next_power_of_two() as usize
    }

    /// A table over `slots` (an even, power-of-two-pairs length), emptied.
    pub fn new(mut slots: S) -> Self {
        slots.fill(FREE);
        ExceptionTable { slots, len: 0 }
    }

    /// How many exceptions it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many it can hold (3/4 of its slots).
    pub fn capacity(&self) -> usize {
        self.pairs() / 4 * 3
    }

    fn pairs(&self) -> usize {
        self.slots.len() / 2
    }

    /// The slot of `old`, or the free slot where it would go.
    fn find(&self, old: u64) -> usize {
        let mask = self.pairs() - 1;
        // Fibonacci hashing spreads runs of consecutive chunks.
        let mut i = Self::home(old, mask);
        loop {
            let at = self.slots[2 * i];
            if at == old || at == FREE {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// The COW chunk origin chunk `old` was copied to.
    pub fn get(&self, old: u64) -> Option<u64> {
        if self.pairs() == 0 {
            return None;
        }
        let i = self.find(old);
        (self.slots[2 * i] == old).then(|| self.slots[2 * i + 1])
    }

    /// Records `old → new` (replacing an earlier one); `false` when full.
    pub fn insert(&mut self, old: u64, new: u64) -> bool {
        if self.pairs() == 0 || old == FREE {
            return false;
        }
        let i = self.find(old);
        if self.slots[2 * i] != old {
            if self.len >= self.capacity() {
                return false;
            }
            self.len += 1;
            self.slots[2 * i] = old;
        }
        self.slots[2 * i + 1] = new;
        true
    }

    /// Forgets `old` (a merged chunk); whether it was there. Later entries
    /// of its probe run move back (no tombstones).
    pub fn remove(&mut self, old: u64) -> bool {
        if self.pairs() == 0 || old == FREE {
            return false;
        }
        let mask = self.pairs() - 1;
        let mut hole = self.find(old);
        if self.slots[2 * hole] != old {
            return false;
        }
        self.len -= 1;
        let mut i = hole;
        loop {
            i = (i + 1) & mask;
            let at = self.slots[2 * i];
            if at == FREE {
                break;
            }
            // The slot `at` hashes to; it may fill the hole unless its home
            // lies cyclically in (hole, i].
            let home = Self::home(at, mask);
            let stays = if hole <= i {
                hole < home && home <= i
            } else {
                hole < home || home <= i
            };
            if !stays {
                self.slots[2 * hole] = at;
                self.slots[2 * hole + 1] = self.slots[2 * i + 1];
                hole = i;
            }
        }
        self.slots[2 * hole] = FREE;
        true
    }

    fn home(old: u64, mask: usize) -> usize {
        (old.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
    }

    /// Moves every exception into `other` (a bigger table).
    pub fn move_into<T: core::ops::DerefMut<Target = [u64]>>(
        &self,
        other: &mut ExceptionTable<T>,
    ) -> bool {
        (0..self.pairs())
            .filter(|&i| self.slots[2 * i] != FREE)
            .all(|i| other.insert(self.slots[2 * i], self.slots[2 * i + 1]))
    }
}

/// How a snapshot keeps its exceptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreType {
    /// `P`: on the COW device (survives reload and reboot); `PO`: and a
    /// full COW device on a snapshot write makes it `Overflow` rather than
    /// `Invalid`.
    Persistent { overflow: bool },
    /// `N`: in memory only.
    Transient,
}

impl StoreType {
    /// As the table shows it.
    pub fn name(self) -> &'static str {
        match self {
            StoreType::Persistent { overflow: false } => "P",
            StoreType::Persistent { overflow: true } => "PO",
            StoreType::Transient => "N",
        }
    }
}

/// `snapshot <origin> <COW> <P|PO|N> <chunk_size>` (also `snapshot-merge`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotArgs<'a> {
    pub origin: &'a str,
    pub cow: &'a str,
    pub store: StoreType,
    /// Sectors; 0: the header's, or [`DEFAULT_CHUNK_SECTORS`] for a new
    /// store.
    pub chunk_sectors: u64,
}

/// dm's chunk size for a new store given chunk size 0.
pub const DEFAULT_CHUNK_SECTORS: u64 = 32;

/// What is wrong with a snapshot line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgsError<'a> {
    /// Not 4 arguments (features are not supported).
    Count(usize),
    /// Not P, PO or N.
    StoreType(&'a str),
    /// Not a number, or not a power of two in range.
    ChunkSize(&'a str),
    /// `snapshot-merge` of a transient store.
    MergeTransient,
}

impl core::fmt::Display for ArgsError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ArgsError::Count(n) => write!(
                f,
                "snapshot: expected <origin> <COW> <P|PO|N> <chunk_size> (4 arguments), got {n} (features such as discard_zeroes_cow are not supported)"
            ),
            ArgsError::StoreType(t) => write!(
                f,
                "snapshot: store type '{t}': P (persistent), PO (persistent, overflow) or N (transient)"
            ),
            ArgsError::ChunkSize(c) => write!(
                f,
                "snapshot: chunk size '{c}': 0 (from the COW header) or a power of two from {MIN_CHUNK_SECTORS} to {MAX_CHUNK_SECTORS} sectors"
            ),
            ArgsError::MergeTransient => {
                write!(f, "snapshot-merge: only a persistent store (P or PO) can be merged")
            }
        }
    }
}

/// Parses a snapshot (or, with `merge`, snapshot-merge) line's arguments.
pub fn parse_args(args: &str, merge: bool) -> Result<SnapshotArgs<'_>, ArgsError<'_>> {
    let mut words = args.split_ascii_whitespace();
    let mut w = [""; 4];
    let mut n = 0;
    for word in words.by_ref() {
        if n == 4 {
            return Err(ArgsError::Count(5 + words.count()));
        }
        w[n] = word;
        n += 1;
    }
    if n != 4 {
        return Err(ArgsError::Count(n));
    }
    let store = match w[2] {
        "P" | "p" => StoreType::Persistent { overflow: false },
        "PO" | "Po" | "pO" | "po" => StoreType::Persistent { overflow: true },
        "N" | "n" => StoreType::Transient,
        other => return Err(ArgsError::StoreType(other)),
    };
    if merge && store == StoreType::Transient {
        return Err(ArgsError::MergeTransient);
    }
    let chunk_sectors: u64 = w[3].parse().map_err(|_| ArgsError::ChunkSize(w[3]))?;
    if chunk_sectors != 0
        && (!chunk_sectors.is_power_of_two()
            || !(MIN_CHUNK_SECTORS..=MAX_CHUNK_SECTORS).contains(&chunk_sectors))
    {
        return Err(ArgsError::ChunkSize(w[3]));
    }
    Ok(SnapshotArgs {
        origin: w[0],
        cow: w[1],
        store,
        chunk_sectors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_is_dm_bytes() {
        let mut chunk = vec![0xffu8; 8192];
        write_header(&mut chunk, true, 16);
        // The bytes dm writes for a valid store with 16-sector chunks.
        assert_eq!(
            &chunk[..16],
            &[0x53, 0x6e, 0x41, 0x70, 1, 0, 0, 0, 1, 0, 0, 0, 0x10, 0, 0, 0]
        );
        assert!(chunk[16..].iter().all(|&b| b == 0));
        assert_eq!(
            parse_header(&chunk),
            Ok(Header::Found {
                valid: true,
                chunk_sectors: 16
            })
        );
        write_header(&mut chunk, false, 16);
        assert_eq!(
            parse_header(&chunk),
            Ok(Header::Found {
                valid: false,
                chunk_sectors: 16
            })
        );
        assert_eq!(parse_header(&[0u8; 16]), Ok(Header::New));
        assert_eq!(
            parse_header(&[1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(StoreError::Corrupt { magic: 0x0403_0201 })
        );
        let mut v2 = chunk.clone();
        v2[8] = 2;
        assert_eq!(parse_header(&v2), Err(StoreError::Version(2)));
    }

    #[test]
    fn geometry_matches_dms_worked_example() {
        // chunk = 16 sectors: E = 512, area 0 at chunk 1, data 2..=513,
        // area 1 at chunk 514.
        let g = Geometry::new(16, 1 << 20).unwrap();
        assert_eq!(g.per_area, 512);
        assert_eq!(g.area_chunk(0), 1);
        assert_eq!(g.area_chunk(1), 514);
        assert!(g.is_metadata(0) && g.is_metadata(1) && g.is_metadata(514));
        assert!(!g.is_metadata(2) && !g.is_metadata(513) && !g.is_metadata(515));
        let mut l = Loaded::new();
        let got: Vec<u64> = (0..513).map(|_| l.allocate(&g).unwrap()).collect();
        assert_eq!(got[0], 2);
        assert_eq!(got[511], 513);
        assert_eq!(got[512], 515, "area 1 is skipped");
        assert_eq!(Geometry::new(12, 1 << 20), Err(StoreError::ChunkSize(12)));
        assert_eq!(Geometry::new(4, 1 << 20), Err(StoreError::ChunkSize(4)));
        assert_eq!(
            Geometry::new(16, 40),
            Err(StoreError::TooSmall {
                sectors: 40,
                need: 48
            })
        );
    }

    #[test]
    fn allocation_stops_at_the_end() {
        let g = Geometry::new(8, 8 * 5).unwrap();
        let mut l = Loaded::new();
        assert_eq!(l.allocate(&g), Some(2));
        assert_eq!(l.allocate(&g), Some(3));
        assert_eq!(l.allocate(&g), Some(4));
        assert_eq!(l.allocate(&g), None);
        assert_eq!(l.usage(&g), (5 * 8, 2 * 8));
    }

    #[test]
    fn areas_load_as_dm_writes_them() {
        let g = Geometry::new(8, 1 << 16).unwrap(); // E = 256
        let mut area0 = vec![0u8; 4096];
        for i in 0..256 {
            write_entry(&mut area0, i, 1000 + i, 2 + i);
        }
        let mut area1 = vec![0u8; 4096];
        write_entry(&mut area1, 0, 7, 259);
        write_entry(&mut area1, 1, 9, 260);
        let mut seen = Vec::new();
        let mut l = Loaded::new();
        let mut put = |o, n| seen.push((o, n));
        assert_eq!(l.load_area(&g, 0, &area0, &mut put), Ok(true));
        assert_eq!((l.area, l.committed), (1, 0));
        assert_eq!(l.load_area(&g, 1, &area1, &mut put), Ok(false));
        assert_eq!((l.area, l.committed, l.next_free), (1, 2, 261));
        assert_eq!(seen.len(), 258);
        assert_eq!(seen[257], (9, 260));
        assert_eq!(l.usage(&g), (261 * 8, 3 * 8));
        // An entry pointing at a metadata chunk is refused.
        let mut bad = vec![0u8; 4096];
        write_entry(&mut bad, 0, 5, 258);
        assert_eq!(
            Loaded::new().load_area(&g, 1, &bad, &mut |_, _| {}),
            Err(StoreError::BadEntry {
                area: 1,
                old: 5,
                new: 258
            })
        );
    }

    #[test]
    fn exception_table_maps_and_fills() {
        let n = 1000;
        let pairs = ExceptionTable::<Vec<u64>>::slots_for(n);
        let mut t = ExceptionTable::new(vec![0u64; 2 * pairs]);
        assert!(t.capacity() as u64 >= n);
        for i in 0..n {
            assert!(t.insert(i * 3, i + 2));
        }
        assert_eq!(t.len(), n as usize);
        for i in 0..n {
            assert_eq!(t.get(i * 3), Some(i + 2));
            assert_eq!(t.get(i * 3 + 1), None);
        }
        assert!(t.insert(0, 77));
        assert_eq!(t.get(0), Some(77));
        assert_eq!(t.len(), n as usize);
        let mut small = ExceptionTable::new(vec![0u64; 16]);
        let cap = small.capacity();
        for i in 0..cap as u64 {
            assert!(small.insert(i, i));
        }
        assert!(!small.insert(999, 1), "a full table refuses");
        let mut big = ExceptionTable::new(vec![0u64; 64]);
        assert!(small.move_into(&mut big));
        assert_eq!(big.len(), cap);
        assert_eq!(big.get(3), Some(3));
    }

    #[test]
    fn args_parse_and_refuse() {
        let a = parse_args("8:16 8:32 P 16", false).unwrap();
        assert_eq!(
            a,
            SnapshotArgs {
                origin: "8:16",
                cow: "8:32",
                store: StoreType::Persistent { overflow: false },
                chunk_sectors: 16
            }
        );
        assert_eq!(parse_args("a b PO 0", false).unwrap().store.name(), "PO");
        assert_eq!(
            parse_args("a b n 8", false).unwrap().store,
            StoreType::Transient
        );
        assert_eq!(parse_args("a b P", false), Err(ArgsError::Count(3)));
        assert_eq!(
            parse_args("a b P 16 1 discard_zeroes_cow", false),
            Err(ArgsError::Count(6))
        );
        assert_eq!(
            parse_args("a b X 16", false),
            Err(ArgsError::StoreType("X"))
        );
        assert_eq!(
            parse_args("a b P 12", false),
            Err(ArgsError::ChunkSize("12"))
        );
        assert_eq!(parse_args("a b P 4", false), Err(ArgsError::ChunkSize("4")));
        assert_eq!(
            parse_args("a b P 4096", false),
            Err(ArgsError::ChunkSize("4096"))
        );
        assert_eq!(
            parse_args("a b P -8", false),
            Err(ArgsError::ChunkSize("-8"))
        );
        assert_eq!(parse_args("a b N 16", true), Err(ArgsError::MergeTransient));
        assert!(ArgsError::Count(3).to_string().contains("4 arguments"));
    }

    #[test]
    fn exception_table_removes_without_losing_others() {
        // A small table, so probe runs collide and wrap.
        let mut t = ExceptionTable::new(vec![0u64; 2 * 64]);
        let keys: Vec<u64> = (0..48).map(|i| i * 7 + 3).collect();
        for &k in &keys {
            assert!(t.insert(k, k + 100));
        }
        for (n, &k) in keys.iter().enumerate() {
            if n % 2 == 0 {
                assert!(t.remove(k));
                assert!(!t.remove(k), "gone already");
            }
        }
        for (n, &k) in keys.iter().enumerate() {
            let want = (n % 2 == 1).then_some(k + 100);
            assert_eq!(t.get(k), want, "key {k}");
        }
        assert_eq!(t.len(), 24);
        // Everything out, then in again: no tombstones fill the table.
        for &k in &keys {
            t.remove(k);
        }
        assert!(t.is_empty());
        for &k in &keys {
            assert!(t.insert(k, 1));
        }
        assert_eq!(t.len(), 48);
    }
}
