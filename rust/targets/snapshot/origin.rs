// SPDX-License-Identifier: GPL-2.0
//! `snapshot-origin <origin>`: the origin device, read and written through;
//! and the state it shares with its snapshots (found in the registry by the
//! origin device): the live snapshots, and the origin writes held until
//! every snapshot has copied the old data of their chunks.
//!
//! A write is held once, and mapped again only when what it waited for
//! came: a held write remembers which snapshots it waits for; after a
//! snapshot commits, it is crossed off the writes whose chunks it now has,
//! and those left waiting for none (or that waited for room to start a
//! copy) are mapped again; the rest stay held.

use super::*;

/// What an origin device shares with the snapshots of it.
#[pin_data]
pub(super) struct OriginShared {
    #[pin]
    state: Mutex<OriginState>,
    /// Bumped when a snapshot of the origin committed copies or left (a
    /// merge waiting for the other snapshots' copies looks again).
    pub(super) commits: EventCounter,
}

struct OriginState {
    /// Snapshots that went live: origin writes copy their chunks first.
    snaps: Slots<Arc<Job<Store>>>,
    /// Origin writes waiting for copies (a slot per request the origin
    /// disk may have in flight, and one more).
    held: Slots<HeldWrite>,
}

/// An origin write waiting for the snapshots' copies of its chunks.
struct HeldWrite {
    io: HeldIo,
    /// The snapshots it waits for (bit `i`: the one in slot `i` of
    /// `snaps`; [`MAX_SNAPSHOTS`] fit).
    waits: u32,
    /// A snapshot had no room to start a copy it needs: mapped again after
    /// any commit (room came back), not only once its chunks are copied.
    starved: bool,
    /// Marked by [`OriginShared::release`]: it waits for nothing more.
    ready: bool,
}

const _: () = assert!(MAX_SNAPSHOTS <= u32::BITS as usize);

/// What a snapshot needs before an origin write may go on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    Nothing,
    /// Copies of its chunks are under way.
    Copies,
    /// A copy could not start (no room): retry after a commit.
    Room,
}

impl OriginShared {
    pub(super) fn new() -> Result<Arc<Self>> {
        let held = Slots::new(QUEUE_DEPTH as usize + 1)?;
        let snaps = Slots::new(MAX_SNAPSHOTS)?;
        Arc::pin_init(
            pin_init!(OriginShared {
                state <- kernel::new_mutex!(
                    OriginState { snaps, held },
                    "vblk::snapshot::OriginShared::state"
                ),
                commits: EventCounter::new(),
            }),
            GFP_KERNEL,
        )
    }

    /// An origin write piece: sent on once every live snapshot has the old
    /// data of the chunks it touches, else held until then.
    fn write(&self, io: Io<'_>, dev: &BlockDevice) -> Mapped {
        match self.copy_first(io) {
            Ok(io) => {
                let sector = io.offset();
                io.remap(dev, sector)
            }
            Err(held) => held,
        }
    }

    /// For a write piece to the origin: starts the copies the live
    /// snapshots need first, and gives the piece back once they all have
    /// the old data of its chunks; else holds it (mapped again when
    /// copies end).
    /// What the live snapshots need before a write of `[offset, offset +
    /// len)` may go on, and which of them (bit `i`: slot `i`) need
    /// something; each starts the copies it lacks.
    fn need(st: &OriginState, offset: u64, len: u64) -> (Need, u32) {
        let mut need = Need::Nothing;
        let mut waits = 0u32;
        for (i, snap) in st.snaps.iter_slots() {
            // Every snapshot starts its copies, even after one said wait.
            let this = Store::before_origin_write(snap, offset, len);
            if this != Need::Nothing {
                waits |= 1 << i;
            }
            match this {
                Need::Nothing => {}
                Need::Copies if need == Need::Nothing => need = Need::Copies,
                Need::Copies => {}
                Need::Room => need = Need::Room,
            }
        }
        (need, waits)
    }

    /// [`OriginShared::need`] for a merge: the other snapshots copy the
    /// chunk it is about to overwrite.
    pub(super) fn prepare(&self, offset: u64, len: u64) -> Need {
        Self::need(&self.state.lock(), offset, len).0
    }

    /// A snapshot goes live: origin writes copy for it from now on. False
    /// if the origin has [`MAX_SNAPSHOTS`] already.
    pub(super) fn join(&self, store: &Arc<Job<Store>>) -> bool {
        let mut st = self.state.lock();
        st.snaps.any(|s| Arc::ptr_eq(s, store)) || st.snaps.put(store.clone()).is_ok()
    }

    /// A snapshot's store goes away: no held write waits for it any more
    /// (its slot may go to another).
    pub(super) fn leave(&self, store: &Arc<Job<Store>>) {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let Some(slot) = st
            .snaps
            .iter_slots()
            .find(|(_, s)| Arc::ptr_eq(s, store))
            .map(|(i, _)| i)
        else {
            return;
        };
        st.snaps.take_oldest(|s| Arc::ptr_eq(s, store));
        for h in st.held.iter_mut() {
            h.waits &= !(1 << slot);
        }
    }

    /// For a write piece to the origin: starts the copies the live
    /// snapshots need first, and gives the piece back once they all have
    /// the old data of its chunks; else holds it (mapped again when
    /// copies end).
    pub(super) fn copy_first<'a>(&self, io: Io<'a>) -> core::result::Result<Io<'a>, Mapped> {
        let mut st = self.state.lock();
        let (need, waits) = Self::need(&st, io.offset(), io.len());
        if need == Need::Nothing {
            return Ok(io);
        }
        if st.held.len() >= st.held.capacity() {
            return Err(io.requeue());
        }
        let (held, mapped) = io.hold();
        let held = HeldWrite {
            io: held,
            waits,
            starved: need == Need::Room,
            ready: false,
        };
        if let Err(h) = st.held.put(held) {
            h.io.kill(Status::IO_ERROR);
        }
        Err(mapped)
    }

    /// Snapshot `from` committed copies, went invalid or left: maps again
    /// the held origin writes that can go on now (process context, no
    /// lock held). `from` is crossed off the writes whose chunks it now
    /// has; those waiting for no snapshot any more, and those that waited
    /// for room, are mapped again. The others stay held, and no other
    /// snapshot is looked at.
    pub(super) fn release(&self, from: &Arc<Job<Store>>) {
        {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            let slot = st
                .snaps
                .iter_slots()
                .find(|(_, s)| Arc::ptr_eq(s, from))
                .map(|(i, _)| i);
            for h in st.held.iter_mut() {
                if let Some(i) = slot {
                    if h.waits & (1 << i) != 0 && from.has_old_data(h.io.offset(), h.io.len()) {
                        h.waits &= !(1 << i);
                    }
                }
                h.ready = h.starved || h.waits == 0;
            }
        }
        loop {
            // Taken under the lock, mapped again without it (map locks).
            let Some(h) = self.state.lock().held.take_oldest(|h| h.ready) else {
                break;
            };
            h.io.redispatch();
        }
    }

    /// Returns the held origin writes to the queue (a `noflush` suspend).
    pub(super) fn requeue_held(&self) {
        while let Some(h) = self.state.lock().held.take_oldest(|_| true) {
            h.io.requeue();
        }
    }
}

/// The `snapshot-origin` target: the origin device, read and written
/// through; writes copy the old data to every live snapshot first.
pub(crate) struct Origin {
    dev: Arc<BlockDevice>,
    length: u64,
    shared: PeerRef<OriginShared>,
}

/// Constructor of `snapshot-origin`, listed in `targets::TYPES`.
pub(crate) fn construct(ctor: &mut Ctor<'_>) -> Result<Arc<dyn Target>> {
    let [dev] =
        match crate::vblk::args::exact_args::<1>("snapshot-origin", "<origin_dev>", ctor.args) {
            Ok(words) => words,
            Err(e) => return ctor.bad_arg(e),
        };
    let text = dev;
    let dev = ctor.open_device(text)?;
    origin_fits(ctor, "snapshot-origin", &dev, text)?;
    let shared = match ctor
        .peers
        .acquire(ORIGIN_KIND, u64::from(dev.devt()), OriginShared::new)
    {
        Ok(s) => s,
        Err(e) => return fail!(ctor.reply, e, "snapshot-origin: cannot register '{text}'"),
    };
    match Arc::new(
        Origin {
            dev,
            length: ctor.length,
            shared,
        },
        GFP_KERNEL,
    ) {
        Ok(t) => Ok(t),
        Err(_) => fail!(
            ctor.reply,
            ENOMEM,
            "out of memory constructing snapshot-origin"
        ),
    }
}

impl Target for Origin {
    fn map(&self, io: Io<'_>) -> Mapped {
        match io.op() {
            Op::Read | Op::Flush => {
                let sector = io.offset();
                io.remap(&self.dev, sector)
            }
            Op::Write => match self.shared.get() {
                Some(shared) => shared.write(io, &self.dev),
                None => io.kill(Status::IO_ERROR),
            },
            // As dm's origin: no discards (each would copy every chunk it
            // covers to every snapshot first; mkfs discards the device).
            Op::Discard | Op::WriteZeroes | Op::Other => io.kill(Status::NOT_SUPPORTED),
        }
    }

    fn supports_discard(&self) -> bool {
        false
    }

    fn supports_write_zeroes(&self) -> bool {
        false
    }

    fn presuspend(&self, noflush: bool) -> Result {
        if noflush {
            if let Some(shared) = self.shared.get() {
                shared.requeue_held();
            }
        }
        Ok(())
    }

    fn devices(&self, f: &mut dyn FnMut(&BlockDevice, u64, u64)) {
        f(&self.dev, 0, self.length);
    }

    fn table_args(&self, out: &mut dyn Write) -> fmt::Result {
        write_device(out, &self.dev)
    }

    fn status_detail(&self, out: &mut dyn Write) -> fmt::Result {
        let Some(shared) = self.shared.get() else {
            return Ok(());
        };
        let st = shared.state.lock();
        let starved = st.held.iter().filter(|h| h.starved).count();
        write!(
            out,
            "snapshots={} writes_held={} waiting_for_room={starved}",
            st.snaps.len(),
            st.held.len()
        )
    }
}
