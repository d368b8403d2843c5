// SPDX-License-Identifier: GPL-2.0
//! The cross-device registry: state a target shares with targets of other
//! devices and tables, found by a kind and a key (a snapshot finds its
//! origin's state by the origin device, a thin volume its pool's by the
//! pool device).
//!
//! [`Peers::acquire`] returns a [`PeerRef`]: the shared value (made by the
//! first acquirer) and a use of it. The entry lives while some `PeerRef`
//! does, so a table reload, whose new table acquires before the old one
//! is dropped, keeps the same state; the last `PeerRef` dropped removes
//! it. A `PeerRef<T>` is typed: a lookup under the same kind and key with
//! another type is refused.

use core::any::Any;
use kernel::error::code::EINVAL;
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

/// A value the registry holds: any `'static` shared state.
pub(crate) trait Peer: Send + Sync + 'static {
    fn as_any(&self) -> &dyn Any;
}

impl<T: Send + Sync + 'static> Peer for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The value behind `value` as `Any` (not the `Arc` itself, which is a
/// `Peer` too).
fn as_any(value: &Arc<dyn Peer>) -> &dyn Any {
    let value: &dyn Peer = &**value;
    value.as_any()
}

/// An entry: kind, key, uses, value.
struct Entry {
    kind: &'static str,
    key: u64,
    users: usize,
    value: Arc<dyn Peer>,
}

/// The registry (one per module, in the control plane).
#[pin_data]
pub(crate) struct Peers {
    #[pin]
    entries: Mutex<KVec<Option<Entry>>>,
}

impl Peers {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Peers {
            entries <- kernel::new_mutex!(KVec::new(), "vblk::Peers::entries"),
        })
    }

    /// The value under `kind` and `key`, made by `make` if there is none
    /// (process context: constructors). `EINVAL` if it is there with
    /// another type. `make` runs without the registry's lock (it may
    /// acquire or drop other entries); if another acquirer made the entry
    /// meanwhile, that one is used and the value made here dropped.
    pub(crate) fn acquire<T: Send + Sync + 'static>(
        self: &Arc<Self>,
        kind: &'static str,
        key: u64,
        make: impl FnOnce() -> Result<Arc<T>>,
    ) -> Result<PeerRef<T>> {
        if let Some(found) = self.find(kind, key) {
            return found;
        }
        let value: Arc<dyn Peer> = make()?;
        let mut entries = self.entries.lock();
        if let Some(e) = entries
            .iter_mut()
            .flatten()
            .find(|e| e.kind == kind && e.key == key)
        {
            let found = self.use_entry(e);
            drop(entries);
            drop(value);
            return found;
        }
        let entry = Entry {
            kind,
            key,
            users: 0,
            value,
        };
        // A free slot, else a new one.
        let slot = match entries.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                if let Err(e) = entries.push(None, GFP_KERNEL) {
                    drop(entries);
                    drop(entry);
                    return Err(e.into());
                }
                entries.len() - 1
            }
        };
        let e = entries[slot].insert(entry);
        self.use_entry(e)
    }

    /// A use of the entry under `kind` and `key`, if there is one.
    fn find<T: Send + Sync + 'static>(
        self: &Arc<Self>,
        kind: &'static str,
        key: u64,
    ) -> Option<Result<PeerRef<T>>> {
        let mut entries = self.entries.lock();
        entries
            .iter_mut()
            .flatten()
            .find(|e| e.kind == kind && e.key == key)
            .map(|e| self.use_entry(e))
    }

    /// One more use of `e`, as a typed reference.
    fn use_entry<T: Send + Sync + 'static>(self: &Arc<Self>, e: &mut Entry) -> Result<PeerRef<T>> {
        if as_any(&e.value).downcast_ref::<T>().is_none() {
            return Err(EINVAL);
        }
        e.users += 1;
        Ok(PeerRef {
            peers: self.clone(),
            kind: e.kind,
            key: e.key,
            value: e.value.clone(),
            _type: core::marker::PhantomData,
        })
    }
}

/// A use of a registry entry of type `T`; the entry goes when its last
/// use does.
pub(crate) struct PeerRef<T> {
    peers: Arc<Peers>,
    kind: &'static str,
    key: u64,
    value: Arc<dyn Peer>,
    _type: core::marker::PhantomData<fn() -> T>,
}

impl<T: 'static> PeerRef<T> {
    /// The shared value (always `Some`: the type was checked when the
    /// reference was made, and values never change type).
    pub(crate) fn get(&self) -> Option<&T> {
        as_any(&self.value).downcast_ref::<T>()
    }
}

impl<T> Drop for PeerRef<T> {
    fn drop(&mut self) {
        // The entry's value is dropped after the lock is let go: it may
        // hold `PeerRef`s of its own (a snapshot's store holds its
        // origin's), whose drop takes the lock.
        let mut gone = None;
        let mut entries = self.peers.entries.lock();
        for slot in entries.iter_mut() {
            if let Some(e) = slot {
                if e.kind == self.kind && e.key == self.key {
                    e.users -= 1;
                    if e.users == 0 {
                        gone = slot.take();
                    }
                    break;
                }
            }
        }
        drop(entries);
        drop(gone);
    }
}
