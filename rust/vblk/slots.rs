// SPDX-License-Identifier: GPL-2.0
//! A fixed number of slots, allocated up front: putting a value in never
//! allocates, so I/O paths (a target parking a request piece, a copy job
//! queued from a completion) work under memory pressure.

use kernel::prelude::*;

/// Up to `capacity` values, taken back oldest first.
pub(crate) struct Slots<T> {
    slots: KVec<Option<(u64, T)>>,
    /// Sequence number of the next value put in.
    next: u64,
    used: usize,
}

impl<T> Slots<T> {
    /// `capacity` empty slots.
    pub(crate) fn new(capacity: usize) -> Result<Self> {
        let mut slots = KVec::with_capacity(capacity, GFP_KERNEL)?;
        for _ in 0..capacity {
            slots.push(None, GFP_KERNEL)?;
        }
        Ok(Slots {
            slots,
            next: 0,
            used: 0,
        })
    }

    /// Puts `value` in a free slot; gives it back if all are taken.
    pub(crate) fn put(&mut self, value: T) -> core::result::Result<(), T> {
        let Some(slot) = self.slots.iter_mut().find(|s| s.is_none()) else {
            return Err(value);
        };
        *slot = Some((self.next, value));
        self.next += 1;
        self.used += 1;
        Ok(())
    }

    /// Puts `value` in a free slot and returns the slot's number (the
    /// value keeps it until taken out); gives the value back if all are
    /// taken.
    pub(crate) fn put_slot(&mut self, value: T) -> core::result::Result<usize, T> {
        let Some(i) = self.slots.iter().position(|s| s.is_none()) else {
            return Err(value);
        };
        self.slots[i] = Some((self.next, value));
        self.next += 1;
        self.used += 1;
        Ok(i)
    }

    /// The value in slot `i`, if any.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i)?.as_mut().map(|(_, v)| v)
    }

    /// Takes the value out of slot `i`.
    pub(crate) fn take(&mut self, i: usize) -> Option<T> {
        let v = self.slots.get_mut(i)?.take()?;
        self.used -= 1;
        Some(v.1)
    }

    /// The slot of the oldest value for which `pick` holds.
    pub(crate) fn oldest(&self, mut pick: impl FnMut(&T) -> bool) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.as_ref()
                    .filter(|(_, v)| pick(v))
                    .map(|(seq, _)| (*seq, i))
            })
            .min()
            .map(|(_, i)| i)
    }

    /// Takes out the oldest value for which `pick` holds.
    pub(crate) fn take_oldest(&mut self, pick: impl FnMut(&T) -> bool) -> Option<T> {
        let i = self.oldest(pick)?;
        self.take(i)
    }

    /// Whether some value satisfies `test`.
    pub(crate) fn any(&self, mut test: impl FnMut(&T) -> bool) -> bool {
        self.slots.iter().flatten().any(|(_, v)| test(v))
    }

    /// How many values are in.
    pub(crate) fn len(&self) -> usize {
        self.used
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// How many values fit.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The values, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten().map(|(_, v)| v)
    }

    /// The values with their slot numbers (a value keeps its slot until
    /// taken out), in no particular order.
    pub(crate) fn iter_slots(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|(_, v)| (i, v)))
    }

    /// The values, mutable, in no particular order.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().flatten().map(|(_, v)| v)
    }

    /// Empties every slot.
    pub(crate) fn clear(&mut self) {
        for slot in self.slots.iter_mut() {
            *slot = None;
        }
        self.used = 0;
    }
}
