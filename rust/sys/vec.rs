// SPDX-License-Identifier: GPL-2.0
//! What 6.12's `KVec` lacks.

use kernel::alloc::KVec;

/// Removes and returns element `index`, keeping the order of the rest
/// (`KVec` in 6.12 has neither `remove` nor `pop`). `None` if out of range.
pub(crate) fn remove<T>(v: &mut KVec<T>, index: usize) -> Option<T> {
    if index >= v.len() {
        return None;
    }
    v[index..].rotate_left(1);
    let last = v.len() - 1;
    // SAFETY: `last < v.len()`, so the element there is initialised; it is
    // read out exactly once, and shrinking the length to `last` right after
    // means the vector neither drops nor exposes it again.
    unsafe {
        let item = core::ptr::read(v.as_ptr().add(last));
        v.set_len(last);
        Some(item)
    }
}

/// Removes and returns the last element (`KVec` in 6.12 has no `pop`).
pub(crate) fn pop<T>(v: &mut KVec<T>) -> Option<T> {
    let last = v.len().checked_sub(1)?;
    remove(v, last)
}
