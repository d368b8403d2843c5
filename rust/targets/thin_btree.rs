// SPDX-License-Identifier: GPL-2.0
//! Changing dm-thin's btrees copy-on-write, as persistent-data does: a
//! node the last commit can still see is never written; it is shadowed
//! (copied to a block allocated in this transaction, the parent pointed
//! at the copy) and the copy changed. A shadowed node that was shared
//! (a snapshot's tree) hands its references on: the copy's children or
//! values gain one, the original loses the parent's. Full nodes split on
//! the way down, so each half is at least a third full (thin_check's
//! rule) and a parent always has room for the new half.
//!
//! Pure `core`: blocks come and go through a [`Transaction`] (the
//! thin target's metadata cache and space maps; the host tests' image),
//! nodes are edited in caller-provided buffers (no 4 KiB buffers on a
//! kernel stack).

use crate::targets::thin_format::{
    self as fmt, init_node, le32, le64, put32, put64, seal_node, FormatError, Node, BLOCK_BYTES,
    NODE_HEADER_BYTES, NODE_LEAF,
};
use crate::vblk::metadata_block::Crc32c;

/// What a leaf's values are, for the references a shadow hands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// Plain data (device details, space-map entries): nothing to count.
    Plain,
    /// A metadata block (the mapping tree's top level: a device's tree root).
    Metadata,
    /// A data block (a device's mapping: `block << 24 | time`).
    Data,
}

/// One level of a (possibly multi-level) tree: its leaves' value size
/// and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    pub value_size: usize,
    pub kind: ValueKind,
}

/// The mapping tree: device id → the device's tree root; block → mapping.
pub const MAPPING_LEVELS: [Level; 2] = [
    Level {
        value_size: 8,
        kind: ValueKind::Metadata,
    },
    Level {
        value_size: 8,
        kind: ValueKind::Data,
    },
];

/// The details tree: device id → details.
pub const DETAILS_LEVELS: [Level; 1] = [Level {
    value_size: fmt::DETAILS_BYTES,
    kind: ValueKind::Plain,
}];

/// The metadata blocks and reference counts a change runs against.
pub trait Transaction {
    /// Reads metadata block `nr`.
    fn read(&mut self, nr: u64, buf: &mut [u8; BLOCK_BYTES]) -> Result<(), FormatError>;
    /// Reads block `nr`; `true` if it is known to be checked already
    /// (see [`crate::targets::thin_format::BlockSource::read_checked`]).
    fn read_checked(&mut self, nr: u64, buf: &mut [u8; BLOCK_BYTES]) -> Result<bool, FormatError> {
        self.read(nr, buf).map(|()| false)
    }
    /// Block `nr`, just read, passed its check.
    fn checked(&mut self, _nr: u64) {}
    /// Writes metadata block `nr` (sealed by the caller).
    fn write(&mut self, nr: u64, buf: &[u8; BLOCK_BYTES]) -> Result<(), FormatError>;
    /// A block free now and in the last commit, counted once.
    fn alloc(&mut self) -> Result<u64, FormatError>;
    /// Whether `nr` was allocated in this transaction (changed in place).
    fn is_new(&self, nr: u64) -> bool;
    /// Metadata block `nr`'s count.
    fn count(&self, nr: u64) -> u32;
    /// One more reference to metadata block `nr`.
    fn inc(&mut self, nr: u64) -> Result<(), FormatError>;
    /// One reference less to metadata block `nr`.
    fn dec(&mut self, nr: u64) -> Result<(), FormatError>;
    /// One more reference to data block `nr`.
    fn inc_data(&mut self, nr: u64) -> Result<(), FormatError>;
    /// One reference less to data block `nr`.
    fn dec_data(&mut self, nr: u64) -> Result<(), FormatError>;
    /// The CRC-32C update function blocks are sealed with.
    fn crc(&self) -> Crc32c;
}

/// The buffers one change edits nodes in.
pub struct Scratch {
    bufs: [[u8; BLOCK_BYTES]; 3],
}

impl Scratch {
    /// Three zeroed buffers (the caller puts them on the heap in the
    /// kernel).
    pub const fn new() -> Self {
        Scratch {
            bufs: [[0; BLOCK_BYTES]; 3],
        }
    }
}

impl Scratch {
    /// Buffer `i` (0..3), for lookups between changes.
    pub fn buf(&mut self, i: usize) -> &mut [u8; BLOCK_BYTES] {
        &mut self.bufs[i]
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// A node being edited in a buffer (header fields read on demand).
struct NodeBuf<'a>(&'a mut [u8; BLOCK_BYTES]);

impl NodeBuf<'_> {
    fn flags(&self) -> u32 {
        le32(self.0, 4)
    }
    fn is_leaf(&self) -> bool {
        self.flags() == NODE_LEAF
    }
    fn nr_entries(&self) -> u32 {
        le32(self.0, 16)
    }
    fn set_nr_entries(&mut self, n: u32) {
        put32(self.0, 16, n);
    }
    fn max_entries(&self) -> u32 {
        le32(self.0, 20)
    }
    fn value_size(&self) -> usize {
        le32(self.0, 24) as usize
    }
    fn key(&self, i: u32) -> u64 {
        le64(self.0, NODE_HEADER_BYTES + 8 * i as usize)
    }
    fn set_key(&mut self, i: u32, k: u64) {
        put64(self.0, NODE_HEADER_BYTES + 8 * i as usize, k);
    }
    fn value_at(&self, i: u32) -> usize {
        NODE_HEADER_BYTES + 8 * self.max_entries() as usize + self.value_size() * i as usize
    }
    fn value(&self, i: u32) -> &[u8] {
        let at = self.value_at(i);
        &self.0[at..at + self.value_size()]
    }
    fn set_value(&mut self, i: u32, v: &[u8]) {
        let at = self.value_at(i);
        let vs = self.value_size();
        self.0[at..at + vs].copy_from_slice(v);
    }
    fn child(&self, i: u32) -> u64 {
        le64(self.value(i), 0)
    }
    /// The last entry with key ≤ `key`.
    fn lower_bound(&self, key: u64) -> Option<u32> {
        let (mut lo, mut hi) = (0u32, self.nr_entries());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }
    /// Opens a gap at `i` and puts `key` → `value` there (room checked
    /// by the caller).
    fn insert_at(&mut self, i: u32, key: u64, value: &[u8]) {
        let n = self.nr_entries();
        let (vs, max) = (self.value_size(), self.max_entries() as usize);
        let k0 = NODE_HEADER_BYTES;
        let v0 = NODE_HEADER_BYTES + 8 * max;
        let i = i as usize;
        self.0
            .copy_within(k0 + 8 * i..k0 + 8 * n as usize, k0 + 8 * (i + 1));
        self.0
            .copy_within(v0 + vs * i..v0 + vs * n as usize, v0 + vs * (i + 1));
        self.set_nr_entries(n + 1);
        self.set_key(i as u32, key);
        self.set_value(i as u32, value);
    }
}

/// Reads and checks node `nr` into `buf`.
fn read_node<T: Transaction + ?Sized>(
    tx: &mut T,
    nr: u64,
    leaf_value: usize,
    buf: &mut [u8; BLOCK_BYTES],
) -> Result<(), FormatError> {
    if !tx.read_checked(nr, buf)? {
        crate::targets::thin_format::verify(
            &buf[..],
            crate::vblk::metadata_block::SALT_BTREE,
            nr,
            tx.crc(),
        )?;
        tx.checked(nr);
    }
    Node::parse(&buf[..], nr, leaf_value)?;
    Ok(())
}

/// Makes node `nr` (read into `buf`) writable: itself if allocated in
/// this transaction and not shared, else a copy in a new block; a shared original hands
/// its references on to the copy. Returns the node's block now.
fn shadow<T: Transaction + ?Sized>(
    tx: &mut T,
    nr: u64,
    level: Level,
    buf: &mut [u8; BLOCK_BYTES],
) -> Result<u64, FormatError> {
    read_node(tx, nr, level.value_size, buf)?;
    // In place only if this transaction made it and nothing else names
    // it (a snapshot taken in the same transaction shares it).
    if tx.is_new(nr) && tx.count(nr) <= 1 {
        return Ok(nr);
    }
    let copy = tx.alloc()?;
    if tx.count(nr) > 1 {
        let node = NodeBuf(buf);
        for i in 0..node.nr_entries() {
            if !node.is_leaf() {
                tx.inc(node.child(i))?;
            } else {
                match level.kind {
                    ValueKind::Plain => {}
                    ValueKind::Metadata => tx.inc(le64(node.value(i), 0))?,
                    ValueKind::Data => tx.inc_data(fmt::mapping_parts(le64(node.value(i), 0)).0)?,
                }
            }
        }
    }
    tx.dec(nr)?;
    Ok(copy)
}

/// Seals `buf` as node `nr` and writes it.
fn put_node<T: Transaction + ?Sized>(
    tx: &mut T,
    nr: u64,
    buf: &mut [u8; BLOCK_BYTES],
) -> Result<(), FormatError> {
    seal_node(&mut buf[..], nr, tx.crc())?;
    tx.write(nr, buf)
}

/// A new, empty leaf for `level` (a device's tree before its first
/// mapping, an empty details tree): its block.
pub fn empty_tree<T: Transaction + ?Sized>(
    tx: &mut T,
    level: Level,
    scratch: &mut Scratch,
) -> Result<u64, FormatError> {
    let nr = tx.alloc()?;
    let buf = &mut scratch.bufs[0];
    init_node(&mut buf[..], true, level.value_size);
    put_node(tx, nr, buf)?;
    Ok(nr)
}

/// Moves the upper half of the full node in `left` to `right` (a new
/// block `right_nr`); both written. Returns the right half's first key.
fn split_into<T: Transaction + ?Sized>(
    tx: &mut T,
    left_nr: u64,
    left: &mut [u8; BLOCK_BYTES],
    right_nr: u64,
    right: &mut [u8; BLOCK_BYTES],
) -> Result<u64, FormatError> {
    let (n, vs, flags) = {
        let l = NodeBuf(left);
        (l.nr_entries(), l.value_size(), l.flags())
    };
    init_node(&mut right[..], flags == NODE_LEAF, vs);
    let keep = n / 2;
    {
        let l = NodeBuf(left);
        let mut r = NodeBuf(right);
        for i in keep..n {
            let (k, v) = (l.key(i), l.value(i));
            let at = i - keep;
            r.set_nr_entries(at + 1);
            r.set_key(at, k);
            r.set_value(at, v);
        }
    }
    NodeBuf(left).set_nr_entries(keep);
    let first = NodeBuf(right).key(0);
    put_node(tx, left_nr, left)?;
    put_node(tx, right_nr, right)?;
    Ok(first)
}

/// Inserts (or overwrites) `keys` → `value` in the tree at `root` whose
/// levels are `levels` (one key per level down to the value's; a lower
/// level's tree must exist: its root is the upper leaf's value). An
/// overwritten value loses its reference (as dm's `dm_btree_insert`); a
/// new one is the caller's to count. Returns the tree's root now and whether the key was new.
pub fn insert<T: Transaction + ?Sized>(
    tx: &mut T,
    scratch: &mut Scratch,
    root: u64,
    levels: &[Level],
    keys: &[u64],
    value: &[u8],
) -> Result<(u64, bool), FormatError> {
    let [a, b, c] = &mut scratch.bufs;
    let (mut cur, mut spare, mut c) = (a, b, c);
    let last = keys.len() - 1;
    let new_root = shadow(tx, root, levels[0], cur)?;
    // A full root splits beneath itself: its entries move to two new
    // children and it points at them (the root's block stays).
    if NodeBuf(cur).nr_entries() == NodeBuf(cur).max_entries() {
        split_root(tx, new_root, cur, spare, c)?;
    }
    let mut nr = new_root;
    let mut level = 0usize;
    loop {
        let key = keys[level];
        if NodeBuf(cur).is_leaf() {
            let node = NodeBuf(cur);
            let pos = node.lower_bound(key);
            let exact = pos.is_some_and(|i| node.key(i) == key);
            if level < last {
                // The lower level's tree: shadow its root, point at it.
                let Some(i) = pos.filter(|_| exact) else {
                    return Err(FormatError::Value {
                        key,
                        what: "no tree at this key of the upper level",
                    });
                };
                let sub = node.child(i);
                let sub_new = shadow(tx, sub, levels[level + 1], spare)?;
                NodeBuf(cur).set_value(i, &sub_new.to_le_bytes());
                put_node(tx, nr, cur)?;
                // The upper leaf is written: its buffer is free for a
                // split of the lower root (whose block stays).
                if NodeBuf(spare).nr_entries() == NodeBuf(spare).max_entries() {
                    split_root(tx, sub_new, spare, cur, c)?;
                }
                core::mem::swap(&mut cur, &mut spare);
                nr = sub_new;
                level += 1;
                continue;
            }
            let mut node = NodeBuf(cur);
            let mut old = [0u8; 32];
            let vs = node.value_size();
            if exact {
                let i = pos.unwrap_or(0);
                old[..vs].copy_from_slice(node.value(i));
                node.set_value(i, value);
            } else {
                let at = pos.map_or(0, |i| i + 1);
                node.insert_at(at, key, value);
            }
            put_node(tx, nr, cur)?;
            if exact && old[..vs] != value[..] {
                let same_block = levels[level].kind == ValueKind::Data
                    && fmt::mapping_parts(le64(&old, 0)).0 == fmt::mapping_parts(le64(value, 0)).0;
                if !same_block {
                    release_value(tx, c, levels, level, &old[..vs])?;
                }
            }
            return Ok((new_root, !exact));
        }
        // Internal: go down the child whose range holds the key (the
        // first, its key lowered, if the key is below every key).
        let i = {
            let mut node = NodeBuf(cur);
            match node.lower_bound(key) {
                Some(i) => i,
                None => {
                    node.set_key(0, key);
                    0
                }
            }
        };
        let child = NodeBuf(cur).child(i);
        let child_new = shadow(tx, child, levels[level], spare)?;
        NodeBuf(cur).set_value(i, &child_new.to_le_bytes());
        let mut next = child_new;
        if NodeBuf(spare).nr_entries() == NodeBuf(spare).max_entries() {
            let right = tx.alloc()?;
            let first = split_into(tx, child_new, spare, right, c)?;
            NodeBuf(cur).insert_at(i + 1, first, &right.to_le_bytes());
            if key >= first {
                // Continue in the right half (in `c`).
                core::mem::swap(&mut spare, &mut c);
                next = right;
            }
        }
        put_node(tx, nr, cur)?;
        core::mem::swap(&mut cur, &mut spare);
        nr = next;
    }
}

/// Splits the full root in `root` (block `nr`) beneath itself: two new
/// children take its halves, the root becomes an internal node of two
/// entries (left in `root`, the halves written from `l` and `r`).
fn split_root<T: Transaction + ?Sized>(
    tx: &mut T,
    nr: u64,
    root: &mut [u8; BLOCK_BYTES],
    l: &mut [u8; BLOCK_BYTES],
    r: &mut [u8; BLOCK_BYTES],
) -> Result<(), FormatError> {
    let (left_nr, right_nr) = (tx.alloc()?, tx.alloc()?);
    l.copy_from_slice(&root[..]);
    let first = split_into(tx, left_nr, l, right_nr, r)?;
    let left_first = NodeBuf(l).key(0);
    init_node(&mut root[..], false, 8);
    let mut node = NodeBuf(root);
    node.insert_at(0, left_first, &left_nr.to_le_bytes());
    node.insert_at(1, first, &right_nr.to_le_bytes());
    put_node(tx, nr, root)
}

/// Removes `keys` from the tree at `root` whose levels are `levels`
/// (one key per level, as [`insert`]); the removed value loses its
/// reference (a device's tree released whole when that was its last).
/// Nodes below a third full on the way down are merged with or refilled
/// from a sibling first, so every node but the root stays at least a
/// third full; a root left with one child takes the child's place.
/// Returns the tree's root now and whether the key was there.
pub fn remove<T: Transaction + ?Sized>(
    tx: &mut T,
    scratch: &mut Scratch,
    root: u64,
    levels: &[Level],
    keys: &[u64],
) -> Result<(u64, bool), FormatError> {
    let [a, b, c] = &mut scratch.bufs;
    let (mut cur, mut spare, mut c) = (a, b, c);
    let last = keys.len() - 1;
    let new_root = shadow(tx, root, levels[0], cur)?;
    let mut nr = new_root;
    let mut level = 0usize;
    let mut at_root = true;
    loop {
        let key = keys[level];
        if NodeBuf(cur).is_leaf() {
            let node = NodeBuf(cur);
            let pos = node.lower_bound(key).filter(|&i| node.key(i) == key);
            let Some(i) = pos else {
                // Not there: the shadowed path is written as it was.
                put_node(tx, nr, cur)?;
                return Ok((new_root, false));
            };
            if level < last {
                let sub = node.child(i);
                let sub_new = shadow(tx, sub, levels[level + 1], spare)?;
                NodeBuf(cur).set_value(i, &sub_new.to_le_bytes());
                put_node(tx, nr, cur)?;
                core::mem::swap(&mut cur, &mut spare);
                nr = sub_new;
                level += 1;
                at_root = true;
                continue;
            }
            let mut old = [0u8; 32];
            let vs = node.value_size();
            old[..vs].copy_from_slice(node.value(i));
            remove_at(&mut NodeBuf(cur), i);
            put_node(tx, nr, cur)?;
            release_value(tx, c, levels, level, &old[..vs])?;
            return Ok((new_root, true));
        }
        let Some(i) = NodeBuf(cur).lower_bound(key) else {
            put_node(tx, nr, cur)?;
            return Ok((new_root, false));
        };
        let child = NodeBuf(cur).child(i);
        let child_new = shadow(tx, child, levels[level], spare)?;
        NodeBuf(cur).set_value(i, &child_new.to_le_bytes());
        let mut next = child_new;
        let min = NodeBuf(spare).max_entries() / 3;
        if NodeBuf(spare).nr_entries() <= min && NodeBuf(cur).nr_entries() > 1 {
            let right_of = NodeBuf(cur).nr_entries() > i + 1;
            let j = if right_of { i + 1 } else { i - 1 };
            let sib = NodeBuf(cur).child(j);
            let sib_new = shadow(tx, sib, levels[level], c)?;
            NodeBuf(cur).set_value(j, &sib_new.to_le_bytes());
            // Left and right in key order.
            let (li, left_nr, right_nr) = if right_of {
                (i, child_new, sib_new)
            } else {
                (j, sib_new, child_new)
            };
            let in_left = {
                let (left, right) = if right_of {
                    (&mut *spare, &mut *c)
                } else {
                    (&mut *c, &mut *spare)
                };
                rebalance(tx, &mut *cur, li, left_nr, left, right_nr, right, key)?
            };
            // The node holding the key goes to `spare`.
            if in_left {
                next = left_nr;
                if !right_of {
                    core::mem::swap(&mut spare, &mut c);
                }
            } else {
                next = right_nr;
                if right_of {
                    core::mem::swap(&mut spare, &mut c);
                }
            }
            if at_root && NodeBuf(cur).nr_entries() == 1 {
                // The root lost its last sibling pair to a merge: the
                // child takes the root's place (its block stays the root).
                cur.copy_from_slice(&spare[..]);
                put_node(tx, nr, cur)?;
                tx.dec(next)?;
                continue;
            }
        }
        put_node(tx, nr, cur)?;
        core::mem::swap(&mut cur, &mut spare);
        nr = next;
        at_root = false;
    }
}

/// Removes entry `i` of a node.
fn remove_at(node: &mut NodeBuf<'_>, i: u32) {
    let n = node.nr_entries();
    let (vs, max) = (node.value_size(), node.max_entries() as usize);
    let k0 = NODE_HEADER_BYTES;
    let v0 = NODE_HEADER_BYTES + 8 * max;
    let i = i as usize;
    node.0
        .copy_within(k0 + 8 * (i + 1)..k0 + 8 * n as usize, k0 + 8 * i);
    node.0
        .copy_within(v0 + vs * (i + 1)..v0 + vs * n as usize, v0 + vs * i);
    node.set_nr_entries(n - 1);
}

/// Evens out the siblings `left` (entry `li` of `parent`) and `right`
/// (entry `li + 1`): one node if both fit (the right one freed and its
/// entry gone), else half each (the right one's key updated). Both are
/// shadows. Returns whether `key` now belongs in the left one.
#[allow(clippy::too_many_arguments)]
fn rebalance<T: Transaction + ?Sized>(
    tx: &mut T,
    parent: &mut [u8; BLOCK_BYTES],
    li: u32,
    left_nr: u64,
    left: &mut [u8; BLOCK_BYTES],
    right_nr: u64,
    right: &mut [u8; BLOCK_BYTES],
    key: u64,
) -> Result<bool, FormatError> {
    let (nl, nr) = (NodeBuf(left).nr_entries(), NodeBuf(right).nr_entries());
    let max = NodeBuf(left).max_entries();
    if nl + nr <= max {
        move_entries(right, 0, nr, left);
        remove_at(&mut NodeBuf(parent), li + 1);
        put_node(tx, left_nr, left)?;
        tx.dec(right_nr)?;
        return Ok(true);
    }
    let want_left = (nl + nr) / 2;
    if nl > want_left {
        // The left one's tail to the right one's front.
        let moved = nl - want_left;
        let mut r = NodeBuf(right);
        for k in (0..moved).rev() {
            let l = NodeBuf(left);
            let (key, at) = (l.key(want_left + k), l.value_at(want_left + k));
            let vs = l.value_size();
            r.insert_at(0, key, &l.0[at..at + vs]);
        }
        NodeBuf(left).set_nr_entries(want_left);
    } else {
        // The right one's head to the left one's tail.
        let moved = want_left - nl;
        move_entries(right, 0, moved, left);
        let mut r = NodeBuf(right);
        for _ in 0..moved {
            remove_at(&mut r, 0);
        }
    }
    let first = NodeBuf(right).key(0);
    NodeBuf(parent).set_key(li + 1, first);
    put_node(tx, left_nr, left)?;
    put_node(tx, right_nr, right)?;
    Ok(key < first)
}

/// Appends entries `from..from + n` of node `src` to node `dst`.
fn move_entries(src: &mut [u8; BLOCK_BYTES], from: u32, n: u32, dst: &mut [u8; BLOCK_BYTES]) {
    let s = NodeBuf(src);
    let mut d = NodeBuf(dst);
    for k in from..from + n {
        let at = d.nr_entries();
        d.set_nr_entries(at + 1);
        d.set_key(at, s.key(k));
        d.set_value(at, s.value(k));
    }
}

/// Lets go of a removed value of `levels[level]`: a data block's count,
/// or a device's tree (released whole if this was its last reference).
fn release_value<T: Transaction + ?Sized>(
    tx: &mut T,
    buf: &mut [u8; BLOCK_BYTES],
    levels: &[Level],
    level: usize,
    value: &[u8],
) -> Result<(), FormatError> {
    match levels[level].kind {
        ValueKind::Plain => Ok(()),
        ValueKind::Data => tx.dec_data(fmt::mapping_parts(le64(value, 0)).0),
        ValueKind::Metadata => {
            let Some(&below) = levels.get(level + 1) else {
                return tx.dec(le64(value, 0));
            };
            release_tree(tx, buf, le64(value, 0), below)
        }
    }
}

/// Lets go of one reference to the tree at `root` (leaves of `level`,
/// whose values are not trees): the last one frees its nodes, and their
/// children and values lose a reference in turn.
pub fn release_tree<T: Transaction + ?Sized>(
    tx: &mut T,
    buf: &mut [u8; BLOCK_BYTES],
    root: u64,
    level: Level,
) -> Result<(), FormatError> {
    release_levels(tx, buf, root, &[level])
}

/// Lets go of one reference to the multi-level tree at `root` (dm's
/// `dm_btree_del`; a metadata snapshot's mapping tree): a node whose last
/// reference this was is entered and freed, its children and values
/// losing one in turn (an upper level's values are the lower level's
/// trees, released the same way); shared nodes just lose the reference.
///
/// A node is freed after its contents are released, not before: the
/// data space map allocates metadata blocks as counts drop, and a node
/// made in this transaction and already free could be taken and
/// overwritten while the walk still has to read it again.
pub fn release_levels<T: Transaction + ?Sized>(
    tx: &mut T,
    buf: &mut [u8; BLOCK_BYTES],
    root: u64,
    levels: &[Level],
) -> Result<(), FormatError> {
    // Whether the reference to `nr` is its last (entered, freed later);
    // else it is dropped here.
    let last_ref = |tx: &mut T, nr: u64| -> Result<bool, FormatError> {
        if tx.count(nr) > 1 {
            tx.dec(nr)?;
            return Ok(false);
        }
        Ok(true)
    };
    if levels.is_empty() || !last_ref(tx, root)? {
        return Ok(());
    }
    // The path across levels: node, next entry, its level.
    let mut path = [(0u64, 0u32, 0usize); 2 * fmt::MAX_DEPTH];
    let mut depth = 0usize;
    path[0] = (root, 0, 0);
    loop {
        let (nr, at, lv) = path[depth];
        let level = levels[lv];
        read_node(tx, nr, level.value_size, buf)?;
        let node = NodeBuf(buf);
        let mut next = None;
        if !node.is_leaf() {
            if at < node.nr_entries() {
                next = Some((node.child(at), lv));
            }
        } else {
            match level.kind {
                ValueKind::Plain => {}
                ValueKind::Data => {
                    // Leaves are visited once: every value at once.
                    for i in 0..node.nr_entries() {
                        tx.dec_data(fmt::mapping_parts(le64(node.value(i), 0)).0)?;
                    }
                }
                ValueKind::Metadata if at < node.nr_entries() => {
                    let v = le64(node.value(at), 0);
                    if lv + 1 < levels.len() {
                        next = Some((v, lv + 1));
                    } else {
                        path[depth].1 = at + 1;
                        tx.dec(v)?;
                        continue;
                    }
                }
                ValueKind::Metadata => {}
            }
        }
        if let Some((child, child_level)) = next {
            path[depth].1 = at + 1;
            if last_ref(tx, child)? {
                depth += 1;
                if depth >= path.len() {
                    return Err(FormatError::TooDeep { root });
                }
                path[depth] = (child, 0, child_level);
            }
            continue;
        }
        // This node is done: freed, then back up.
        tx.dec(nr)?;
        if depth == 0 {
            return Ok(());
        }
        depth -= 1;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::targets::thin_format::{
        lookup, mapping_parts, mapping_value, BlockSource, DeviceDetails, Superblock,
    };
    use crate::targets::thin_sm::{BlockIo, DataSm, MetadataSm, SmScratch, SmTx};
    use crate::vblk::metadata_block::crc32c_soft;
    use std::collections::BTreeMap;

    const META_BLOCKS: u64 = 2048;
    const DATA_BLOCKS: u64 = 20000;

    /// The metadata device in memory.
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

    /// A pool in memory: the metadata image, its space maps, and the data
    /// counts as a model to check the data space map against.
    struct Pool {
        img: Image,
        sm: MetadataSm<Vec<u32>>,
        dsm: DataSm,
        dsc: Box<SmScratch>,
        data: BTreeMap<u64, u32>,
        mapping_root: u64,
        details_root: u64,
        time: u32,
    }

    impl BlockSource for Pool {
        fn read(&mut self, nr: u64, buf: &mut [u8; BLOCK_BYTES]) -> Result<(), FormatError> {
            self.img.read(nr, buf)
        }
    }

    impl Pool {
        /// The metadata blocks as the data space map's transaction.
        fn meta(&mut self) -> (SmTx<'_, Vec<u32>, Image>, &mut DataSm, &mut SmScratch) {
            (
                SmTx {
                    sm: &mut self.sm,
                    io: &mut self.img,
                    crc: crc32c_soft,
                },
                &mut self.dsm,
                &mut self.dsc,
            )
        }
    }

    impl Transaction for Pool {
        fn read(&mut self, nr: u64, buf: &mut [u8; BLOCK_BYTES]) -> Result<(), FormatError> {
            self.img.read(nr, buf)
        }
        fn write(&mut self, nr: u64, buf: &[u8; BLOCK_BYTES]) -> Result<(), FormatError> {
            assert!(
                self.sm.is_new(nr),
                "block {nr} written but not new in this transaction"
            );
            self.img.write(nr, buf)
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
            *self.data.entry(nr).or_insert(0) += 1;
            let (mut tx, dsm, sc) = self.meta();
            dsm.inc(&mut tx, sc, nr)
        }
        fn dec_data(&mut self, nr: u64) -> Result<(), FormatError> {
            let c = self.data.get_mut(&nr).expect("dec of a free data block");
            *c -= 1;
            if *c == 0 {
                self.data.remove(&nr);
            }
            let (mut tx, dsm, sc) = self.meta();
            dsm.dec(&mut tx, sc, nr)
        }
        fn crc(&self) -> Crc32c {
            crc32c_soft
        }
    }

    impl Pool {
        fn new() -> Self {
            let n = META_BLOCKS as usize;
            let mut sm = MetadataSm::format(vec![0; n], vec![0; n]).unwrap();
            let mut img = Image(vec![0; n * BLOCK_BYTES]);
            let mut dsc = Box::new(SmScratch::new());
            let dsm = {
                let mut tx = SmTx {
                    sm: &mut sm,
                    io: &mut img,
                    crc: crc32c_soft,
                };
                DataSm::format(&mut tx, &mut dsc, DATA_BLOCKS).unwrap()
            };
            let mut p = Pool {
                img,
                sm,
                dsm,
                dsc,
                data: BTreeMap::new(),
                mapping_root: 0,
                details_root: 0,
                time: 0,
            };
            let mut s = Scratch::new();
            p.mapping_root = empty_tree(&mut p, MAPPING_LEVELS[0], &mut s).unwrap();
            p.details_root = empty_tree(&mut p, DETAILS_LEVELS[0], &mut s).unwrap();
            p
        }

        fn set_details(&mut self, dev: u64, d: DeviceDetails) {
            let mut s = Scratch::new();
            let (root, _) = insert(
                self,
                &mut s,
                self.details_root,
                &DETAILS_LEVELS,
                &[dev],
                &d.encode(),
            )
            .unwrap();
            self.details_root = root;
        }

        fn create_thin(&mut self, dev: u64) {
            let mut s = Scratch::new();
            let sub = empty_tree(self, MAPPING_LEVELS[1], &mut s).unwrap();
            let (root, new) = insert(
                self,
                &mut s,
                self.mapping_root,
                &MAPPING_LEVELS[..1],
                &[dev],
                &sub.to_le_bytes(),
            )
            .unwrap();
            assert!(new);
            self.mapping_root = root;
            self.set_details(
                dev,
                DeviceDetails {
                    creation_time: self.time,
                    snapshotted_time: self.time,
                    ..Default::default()
                },
            );
        }

        fn dev_root(&mut self, dev: u64) -> u64 {
            let mut buf = [0u8; BLOCK_BYTES];
            let mut v = [0u8; 8];
            assert!(lookup(
                self,
                &mut buf,
                self.mapping_root,
                8,
                dev,
                &mut v,
                crc32c_soft
            )
            .unwrap());
            u64::from_le_bytes(v)
        }

        /// dm's create_snap: the origin's tree shared under a new id.
        fn create_snap(&mut self, dev: u64, origin: u64) {
            let root = self.dev_root(origin);
            self.inc(root).unwrap();
            let mut s = Scratch::new();
            let (r, new) = insert(
                self,
                &mut s,
                self.mapping_root,
                &MAPPING_LEVELS[..1],
                &[dev],
                &root.to_le_bytes(),
            )
            .unwrap();
            assert!(new);
            self.mapping_root = r;
            self.time += 1;
            self.set_details(
                dev,
                DeviceDetails {
                    creation_time: self.time,
                    snapshotted_time: self.time,
                    ..Default::default()
                },
            );
        }

        /// Maps `block` of `dev` to a new data block.
        fn map(&mut self, dev: u64, block: u64) -> u64 {
            let data = {
                let (mut tx, dsm, sc) = self.meta();
                dsm.alloc(&mut tx, sc).unwrap().expect("data space")
            };
            *self.data.entry(data).or_insert(0) += 1;
            let mut s = Scratch::new();
            let (r, _) = insert(
                self,
                &mut s,
                self.mapping_root,
                &MAPPING_LEVELS,
                &[dev, block],
                &mapping_value(data, self.time).to_le_bytes(),
            )
            .unwrap();
            self.mapping_root = r;
            data
        }

        /// Unmaps `block` of `dev`; whether it was mapped.
        fn unmap(&mut self, dev: u64, block: u64) -> bool {
            let mut s = Scratch::new();
            let (r, found) = remove(
                self,
                &mut s,
                self.mapping_root,
                &MAPPING_LEVELS,
                &[dev, block],
            )
            .unwrap();
            self.mapping_root = r;
            found
        }

        /// dm's delete: the device's tree and details go.
        fn delete(&mut self, dev: u64) {
            let mut s = Scratch::new();
            let (r, found) =
                remove(self, &mut s, self.mapping_root, &MAPPING_LEVELS, &[dev]).unwrap();
            assert!(found);
            self.mapping_root = r;
            let (r, found) =
                remove(self, &mut s, self.details_root, &DETAILS_LEVELS, &[dev]).unwrap();
            assert!(found);
            self.details_root = r;
        }

        /// Writes the metadata space map and the superblock (a commit),
        /// then starts the next transaction.
        fn commit(&mut self) {
            let msm = self
                .sm
                .commit(&mut self.img, &mut self.dsc, crc32c_soft)
                .unwrap();
            let sb = Superblock {
                version: 2,
                time: self.time,
                transaction_id: 1,
                data_sm: self.dsm.root(),
                metadata_sm: msm,
                mapping_root: self.mapping_root,
                details_root: self.details_root,
                data_block_size: 128,
                metadata_nr_blocks: META_BLOCKS,
                ..Default::default()
            };
            let mut block = [0u8; BLOCK_BYTES];
            sb.encode(&mut block, crc32c_soft).unwrap();
            self.img.write(0, &block).unwrap();
            self.dsm.committed();
            // The map reads back as committed.
            let n = META_BLOCKS as usize;
            let loaded = MetadataSm::load(
                vec![0; n],
                vec![0; n],
                &mut self.img,
                &msm,
                crc32c_soft,
                &mut self.dsc,
            )
            .unwrap();
            // As the live map: its own blocks released (held by the commit).
            assert_eq!(loaded.allocated(), self.sm.allocated());
            assert_eq!(loaded.allocated() + 3, msm.nr_allocated);
        }

        /// Every mapping of `dev` (block → data block).
        fn mappings(&mut self, dev: u64) -> BTreeMap<u64, u64> {
            let root = self.dev_root(dev);
            let mut out = BTreeMap::new();
            let mut buf = [0u8; BLOCK_BYTES];
            fmt::walk(self, &mut buf, root, 8, crc32c_soft, &mut |v| {
                if let fmt::Visit::Entry { key, value } = v {
                    out.insert(key, mapping_parts(le64(value, 0)).0);
                }
                Ok(true)
            })
            .unwrap();
            out
        }

        fn check(&mut self) -> fmt::Summary {
            let mut counts = vec![0u32; META_BLOCKS as usize];
            let mut data = vec![0u32; DATA_BLOCKS as usize];
            let sum = fmt::check(self, &mut counts, Some(&mut data), crc32c_soft).unwrap();
            for (nr, &c) in data.iter().enumerate() {
                assert_eq!(
                    c,
                    self.data.get(&(nr as u64)).copied().unwrap_or(0),
                    "data block {nr}"
                );
            }
            assert_eq!(self.dsm.allocated(), self.data.len() as u64);
            assert_eq!(
                sum.metadata_counts_off, 0,
                "vblk's summary counts are exact"
            );
            sum
        }

        /// thin_check's and thin_dump's view of the image.
        fn thin_tools(&self) -> String {
            use std::process::Command;
            static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("vblk-btree-{}-{run}", std::process::id()));
            std::fs::write(&path, &self.img.0).unwrap();
            let chk = Command::new("thin_check")
                .arg(&path)
                .output()
                .expect("thin_check");
            let dump = Command::new("thin_dump")
                .arg(&path)
                .output()
                .expect("thin_dump");
            let _ = std::fs::remove_file(&path);
            assert!(
                chk.status.success(),
                "thin_check: {}{}",
                String::from_utf8_lossy(&chk.stdout),
                String::from_utf8_lossy(&chk.stderr)
            );
            String::from_utf8(dump.stdout).unwrap()
        }
    }

    /// Counts mappings in thin_dump's XML for `dev` (single and ranges).
    pub(crate) fn dumped_blocks(xml: &str, dev: u64) -> u64 {
        let Some(start) = xml.find(&format!("<device dev_id=\"{dev}\"")) else {
            return 0;
        };
        let body = &xml[start..start + xml[start..].find("</device>").unwrap()];
        body.lines()
            .map(|l| {
                if l.contains("single_mapping") {
                    1
                } else if let Some(i) = l.find("length=\"") {
                    l[i + 8..].split('"').next().unwrap().parse().unwrap()
                } else {
                    0
                }
            })
            .sum()
    }

    #[test]
    fn inserts_split_and_thin_check_accepts_them() {
        let mut p = Pool::new();
        for dev in 0..3 {
            p.create_thin(dev);
        }
        // Device 0: 3000 blocks in a scrambled order (splits at every level).
        let mut want = BTreeMap::new();
        for i in 0..3000u64 {
            let block = (i * 7919) % 3000;
            want.insert(block, p.map(0, block));
        }
        p.map(1, 5);
        p.commit();
        let sum = p.check();
        assert_eq!((sum.devices, sum.mappings), (3, 3001));
        assert_eq!(p.mappings(0), want);
        let xml = p.thin_tools();
        assert_eq!(dumped_blocks(&xml, 0), 3000);
        assert_eq!(dumped_blocks(&xml, 1), 1);
        assert_eq!(dumped_blocks(&xml, 2), 0);
    }

    #[test]
    fn a_snapshot_shares_until_written_and_counts_stay_exact() {
        let mut p = Pool::new();
        p.create_thin(0);
        let mut origin = BTreeMap::new();
        for b in 0..1000u64 {
            origin.insert(b, p.map(0, b));
        }
        p.commit();
        p.create_snap(1, 0);
        p.commit();
        p.check();
        // Overwrite every third block of the origin after the snapshot:
        // the shared nodes are shadowed, the snapshot keeps the old data.
        let mut now = origin.clone();
        for b in (0..1000u64).step_by(3) {
            let old = now[&b];
            let new = p.map(0, b);
            now.insert(b, new);
            assert_ne!(old, new);
        }
        // A snapshot of the snapshot (three trees share nodes: counts of 3
        // go to the ref-count tree).
        p.create_snap(2, 1);
        p.commit();
        let sum = p.check();
        assert_eq!(sum.devices, 3);
        assert_eq!(p.mappings(0), now);
        assert_eq!(p.mappings(1), origin);
        assert_eq!(p.mappings(2), origin);
        // Data blocks: the origin's 1000 plus 334 overwritten; the shared
        // ones counted per device.
        assert_eq!(p.data.len(), 1334);
        let xml = p.thin_tools();
        for dev in 0..3 {
            assert_eq!(dumped_blocks(&xml, dev), 1000, "device {dev}");
        }
        // Writes to the second-level snapshot leave the first alone.
        p.map(2, 10);
        p.commit();
        p.check();
        assert_eq!(p.mappings(1), origin);
        p.thin_tools();
    }

    #[test]
    fn removals_rebalance_and_thin_check_accepts_them() {
        let mut p = Pool::new();
        p.create_thin(0);
        let mut want = BTreeMap::new();
        for i in 0..3000u64 {
            let block = (i * 7919) % 3000;
            want.insert(block, p.map(0, block));
        }
        p.commit();
        // Remove in another scrambled order, checking as the tree shrinks
        // through merges, refills and the root's collapse.
        for i in 0..3000u64 {
            let block = (i * 4001) % 3000;
            assert!(p.unmap(0, block), "block {block}");
            want.remove(&block);
            if i % 700 == 699 || i == 2999 {
                p.commit();
                p.check();
                assert_eq!(p.mappings(0), want);
                p.thin_tools();
            }
        }
        assert!(!p.unmap(0, 5), "an unmapped block is not there");
        assert!(p.data.is_empty(), "every data block released");
        p.commit();
        // Only the superblock and the two trees' roots are left.
        let sum = p.check();
        assert_eq!(sum.mappings, 0);
    }

    #[test]
    fn removals_from_an_origin_leave_its_snapshot_and_delete_releases_trees() {
        let mut p = Pool::new();
        p.create_thin(0);
        let mut origin = BTreeMap::new();
        for b in 0..2000u64 {
            origin.insert(b, p.map(0, b));
        }
        p.commit();
        let used = p.check().metadata_allocated;
        p.create_snap(1, 0);
        p.commit();
        // Discard most of the origin: its shared nodes are shadowed, the
        // snapshot's stay.
        let mut now = origin.clone();
        for b in (0..2000u64).filter(|b| b % 5 != 0) {
            assert!(p.unmap(0, b));
            now.remove(&b);
        }
        p.commit();
        p.check();
        assert_eq!(p.mappings(0), now);
        assert_eq!(p.mappings(1), origin);
        p.thin_tools();
        // Deleting the origin leaves the snapshot whole; deleting the
        // snapshot too frees every node and data block.
        p.delete(0);
        p.commit();
        assert_eq!(p.check().devices, 1);
        assert_eq!(p.mappings(1), origin);
        assert_eq!(p.data.len(), 2000);
        p.thin_tools();
        p.delete(1);
        p.commit();
        let sum = p.check();
        assert_eq!((sum.devices, sum.mappings), (0, 0));
        assert!(p.data.is_empty());
        assert!(sum.metadata_allocated < used, "the trees' nodes were freed");
        p.thin_tools();
    }

    #[test]
    fn data_freed_since_the_commit_is_not_reused_until_the_next() {
        let mut p = Pool::new();
        p.create_thin(0);
        let first: Vec<u64> = (0..10).map(|b| p.map(0, b)).collect();
        p.commit();
        for b in 0..10 {
            assert!(p.unmap(0, b));
        }
        // A crash now finds the committed mappings: their data must stay.
        let second: Vec<u64> = (0..10).map(|b| p.map(0, 100 + b)).collect();
        assert!(
            second.iter().all(|d| !first.contains(d)),
            "{first:?} reused: {second:?}"
        );
        p.commit();
        p.check();
        // Reopened as a reload would (the search starts at block 0): the
        // blocks freed before the commit are free now.
        p.dsm = DataSm::open(p.dsm.root());
        let third: Vec<u64> = (0..10).map(|b| p.map(0, 200 + b)).collect();
        assert_eq!(third, first, "free after the commit");
        p.commit();
        assert_eq!(p.check().mappings, 20);
        p.thin_tools();
    }
}
