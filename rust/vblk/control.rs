// SPDX-License-Identifier: GPL-2.0
//! Control ioctls: decode, validate, dispatch, and always answer with the
//! module's ABI version and, on failure, a message.
//!
//! Locking: the registry mutex guards the device list and the stacking
//! graph (which dev_t each device's tables use); each device's own mutex
//! guards its tables and disk. A command takes a device's mutex before the
//! registry's, never the other way round, and never waits for I/O while
//! holding the registry.

use super::abi::{
    name_in, Command, DepsReply, DeviceRecord, Header, ListReply, ABI_MAJOR, ABI_MINOR, ABI_PATCH,
    FLAG_BUFFER_FULL, FLAG_NOFLUSH, FLAG_QUERY_INACTIVE, FLAG_SHOW_SECRETS, FLAG_STATUS_DETAIL,
};
use super::device::{Device, Resumed};
use super::map::{Table, TableEnv};
use super::message::{fail, Reply};
use super::peers::Peers;
use super::table;
use super::target::TargetType;
use crate::sys::event::EventCounter;
use crate::sys::workqueue::NoIoScope;
use crate::sys::{self, control::ControlHandler, wipe};
use core::fmt::Write;
use core::mem::size_of;
use kernel::error::code::{EACCES, EBUSY, EEXIST, EINVAL, ENODEV, ENOMEM, ENOTTY, ENXIO};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::uaccess::{UserPtr, UserSlice, UserSliceWriter};

const HEADER_SIZE: usize = size_of::<Header>();

/// Most devices that may exist at once (bounds what LIST returns and what
/// one user can make the module allocate).
pub(crate) const MAX_DEVICES: usize = 4096;

/// A device in the registry, with what other devices need to know of it.
struct Entry {
    dev: Arc<Device>,
    /// Keeps `rmmod` from unloading vblk while the device exists.
    _module: sys::ModuleRef,
    /// Its disk's dev_t once it has one, else 0 (for LIST).
    devt: u32,
    /// The stacking graph: disk indices of the vblk lower devices of its
    /// active and inactive tables. By index, not dev_t: a disk's index is
    /// known from CREATE on, so a table that names a disk still being
    /// created is seen too.
    active_deps: KVec<u32>,
    inactive_deps: KVec<u32>,
}

impl Entry {
    /// Whether a table of this device has vblk disk `index` below it.
    fn uses(&self, index: u32) -> bool {
        self.active_deps.contains(&index) || self.inactive_deps.contains(&index)
    }
}

/// The control plane: all devices, and the ioctls that manage them.
#[pin_data(PinnedDrop)]
pub(crate) struct Control {
    /// The target types LOAD may name (the module's list).
    types: &'static [TargetType],
    /// State targets share across devices and tables.
    peers: Arc<Peers>,
    /// Every device, in creation order.
    #[pin]
    registry: Mutex<KVec<Entry>>,
}

impl Control {
    /// A control plane with no devices, constructing tables from `types`
    /// whose targets share state through `peers`.
    pub(crate) fn new(types: &'static [TargetType], peers: Arc<Peers>) -> impl PinInit<Self> {
        pin_init!(Control {
            types,
            peers,
            registry <- kernel::new_mutex!(KVec::new(), "vblk::Control::registry"),
        })
    }
}

#[pinned_drop]
impl PinnedDrop for Control {
    /// Module exit: removes what is left, upper devices before the vblk
    /// devices below them.
    fn drop(self: Pin<&mut Self>) {
        loop {
            let dev = {
                let mut reg = self.registry.lock();
                if reg.is_empty() {
                    return;
                }
                let unused = (0..reg.len())
                    .find(|&i| !reg.iter().any(|e| e.uses(reg[i].dev.index)))
                    .unwrap_or(0);
                sys::vec::remove(&mut reg, unused).map(|e| e.dev)
            };
            if let Some(dev) = dev {
                let mut reply = Reply::new();
                let _ = dev.with_state(&mut reply, |st, _| {
                    st.tear_down();
                    Ok(())
                });
                dev.events.bump();
            }
        }
    }
}

impl ControlHandler for Control {
    fn ioctl(&self, request: u32, arg: UserPtr) -> Result {
        // Not ours (wrong magic, number, direction or header size).
        let Some(command) = Command::from_ioctl(request) else {
            return Err(ENOTTY);
        };
        let (mut reader, mut writer) = UserSlice::new(arg, HEADER_SIZE).reader_writer();
        // An unreadable header is EFAULT; there is nowhere to put a message.
        let mut raw = [0u8; Header::SIZE];
        reader.read_slice(&mut raw)?;
        let mut header = Header::decode(&raw);

        let mut reply = Reply::new();
        // Like dm's control ioctls: no allocation in a command waits for
        // I/O, which may be held by a suspended device only a later
        // command resumes (a rekey while suspended, swap on vblk).
        let noio = NoIoScope::enter();
        let outcome = self.dispatch(command, &mut header, arg, &mut reply);
        drop(noio);

        header.abi_major = ABI_MAJOR;
        header.abi_minor = ABI_MINOR;
        header.abi_patch = ABI_PATCH;
        header.errno = match outcome {
            Ok(()) => 0,
            Err(e) => e.to_errno().unsigned_abs(),
        };
        header.message = *reply.message();
        writer.write_slice(&header.encode())?;
        outcome
    }
}

impl Control {
    /// Checks privilege and the header every command shares, then runs the
    /// command.
    fn dispatch(
        &self,
        command: Command,
        h: &mut Header,
        arg: UserPtr,
        reply: &mut Reply,
    ) -> Result {
        // Like device-mapper, every control command needs CAP_SYS_ADMIN,
        // even if the caller managed to open the (root-only) node.
        if !sys::caller_has_sys_admin() {
            return fail!(reply, EACCES, "vblk control commands require CAP_SYS_ADMIN");
        }
        check_header(h, reply)?;
        if command != Command::Version && h.abi_major != ABI_MAJOR {
            return fail!(
                reply,
                EINVAL,
                "caller speaks ABI {}.x, the module {ABI_MAJOR}.{ABI_MINOR}.{ABI_PATCH}",
                h.abi_major
            );
        }
        match command {
            // Answered by `ioctl` writing the version into the header,
            // whatever version the caller speaks.
            Command::Version => Ok(()),
            Command::Create => self.create(h, reply),
            Command::Remove => self.remove(h, reply),
            Command::List => self.list(h, payload(arg, h), reply),
            Command::Info => self.info(h, reply),
            Command::Load => self.load(h, payload(arg, h), reply),
            Command::Clear => self.clear(h, reply),
            Command::Resume => self.resume(h, reply),
            Command::Suspend => self.suspend(h, reply),
            Command::Table | Command::Status => self.table(command, h, payload(arg, h), reply),
            Command::Deps => self.deps(h, payload(arg, h), reply),
            Command::Wait => self.wait(h, reply),
            Command::Message => self.message(h, payload(arg, h), reply),
            Command::Targets => {
                let mut text = TextBuf::new();
                for t in self.types {
                    let (name, [a, b, c]) = (t.name, t.version);
                    // A failure here is an allocation failure, caught below.
                    let _ = writeln!(text, "{name} {a}.{b}.{c}");
                }
                reply_text(h, payload(arg, h), text, reply)
            }
        }
    }

    /// The device named in the header.
    fn lookup(&self, h: &Header, reply: &mut Reply) -> Result<Arc<Device>> {
        let name = device_name(h, reply)?;
        let reg = self.registry.lock();
        match reg.iter().find(|e| e.dev.name() == name) {
            Some(e) => Ok(e.dev.clone()),
            None => fail!(reply, ENXIO, "no device named '{}'", Show(name)),
        }
    }

    /// Runs `f` on the registry and the index of `dev`'s entry. Callers
    /// hold the device's mutex inside `Device::with_state`, which refuses a
    /// removed device, and only REMOVE (under that same mutex) takes an
    /// entry out: so the entry is there.
    fn with_entry<R>(&self, dev: &Arc<Device>, f: impl FnOnce(&mut KVec<Entry>, usize) -> R) -> R {
        let mut reg = self.registry.lock();
        let i = reg
            .iter()
            .position(|e| Arc::ptr_eq(&e.dev, dev))
            .unwrap_or(usize::MAX);
        f(&mut reg, i)
    }

    fn create(&self, h: &Header, reply: &mut Reply) -> Result {
        let name = device_name(h, reply)?;
        let uuid = match h.uuid.iter().position(|&b| b == 0) {
            Some(0) => &[][..],
            _ => match name_in(&h.uuid) {
                Ok(uuid) => uuid,
                Err(e) => return fail!(reply, EINVAL, "uuid {e}"),
            },
        };
        let mut reg = self.registry.lock();
        if reg.iter().any(|e| e.dev.name() == name) {
            return fail!(
                reply,
                EEXIST,
                "a device named '{}' already exists",
                Show(name)
            );
        }
        if !uuid.is_empty() && reg.iter().any(|e| e.dev.uuid() == uuid) {
            return fail!(
                reply,
                EEXIST,
                "a device with uuid '{}' already exists",
                Show(uuid)
            );
        }
        if reg.len() >= MAX_DEVICES {
            return fail!(reply, ENOMEM, "too many devices (at most {MAX_DEVICES})");
        }
        // Lowest disk index no device uses (vblk0, vblk1, ...).
        let index = (0u32..)
            .find(|i| !reg.iter().any(|e| e.dev.index == *i))
            .unwrap_or(0);
        let Some(module) = sys::ModuleRef::get() else {
            return fail!(reply, ENODEV, "vblk is being unloaded");
        };
        let Ok(events) = Arc::new(EventCounter::new(), GFP_KERNEL) else {
            return fail!(reply, ENOMEM, "out of memory creating '{}'", Show(name));
        };
        let entry =
            Arc::pin_init(Device::new(name, uuid, index, events), GFP_KERNEL).map(|dev| Entry {
                dev,
                _module: module,
                devt: 0,
                active_deps: KVec::new(),
                inactive_deps: KVec::new(),
            });
        match entry.map(|entry| reg.push(entry, GFP_KERNEL)) {
            Ok(Ok(())) => Ok(()),
            _ => fail!(reply, ENOMEM, "out of memory creating '{}'", Show(name)),
        }
    }

    fn remove(&self, h: &Header, reply: &mut Reply) -> Result {
        let dev = self.lookup(h, reply)?;
        let name = Show(dev.name());
        dev.with_state(reply, |st, reply| {
            self.with_entry(&dev, |reg, i| -> Result {
                let index = reg[i].dev.index;
                if let Some(user) = reg.iter().find(|e| e.uses(index)) {
                    return fail!(
                        reply,
                        EBUSY,
                        "device '{name}' is used by device '{}' (remove or reload that first)",
                        Show(user.dev.name())
                    );
                }
                st.claim_for_removal(reply)
                    .inspect_err(|_| reply.prefix(format_args!("device '{name}': ")))?;
                let _ = sys::vec::remove(reg, i);
                Ok(())
            })?;
            // Out of the registry; the disk and tables go now, with only
            // this device's mutex held (deleting the disk waits for I/O).
            st.tear_down();
            Ok(())
        })?;
        dev.events.bump();
        Ok(())
    }

    fn list(&self, h: &mut Header, payload: UserSlice, reply: &mut Reply) -> Result {
        // Records are taken under the registry lock and written out after
        // it: a copy to user memory may fault and wait for I/O to a
        // suspended vblk device, whose RESUME needs the registry.
        let mut records = KVVec::new();
        {
            let reg = self.registry.lock();
            if records.reserve(reg.len(), GFP_KERNEL).is_err() {
                return fail!(reply, ENOMEM, "out of memory listing devices");
            }
            for e in reg.iter() {
                let record = DeviceRecord {
                    dev: u64::from(e.devt),
                    event_nr: e.dev.events.get(),
                    flags: e.dev.flags(),
                    name: e.dev.name_field(),
                };
                // Cannot fail: the capacity is there.
                let _ = records.push(record, GFP_KERNEL);
            }
        }
        let needed = size_of::<ListReply>() + records.len() * size_of::<DeviceRecord>();
        let mut out = payload.writer();
        if !fits(h, out.len(), needed) {
            return Ok(());
        }
        let head = ListReply {
            count: records.len() as u32,
            reserved: 0,
        };
        write_out(&mut out, &head.encode(), "device list", reply)?;
        for record in records.iter() {
            write_out(&mut out, &record.encode(), "device list", reply)?;
        }
        Ok(())
    }

    fn info(&self, h: &mut Header, reply: &mut Reply) -> Result {
        let dev = self.lookup(h, reply)?;
        dev.with_state(reply, |st, _| {
            st.fill_info(h);
            Ok(())
        })?;
        h.event_nr = dev.events.get();
        h.uuid = super::abi::name_field(dev.uuid());
        Ok(())
    }
}

impl Control {
    fn load(&self, h: &Header, payload: UserSlice, reply: &mut Reply) -> Result {
        let dev = self.lookup(h, reply)?;
        // Table text may hold keys: wiped when done.
        let mut buf = WipeOnDrop(KVec::new());
        let text = read_text(payload, MAX_TABLE_TEXT, "table text", &mut buf.0, reply)?;
        // Opens the lower devices; no lock is held meanwhile.
        let env = TableEnv {
            types: self.types,
            peers: &self.peers,
            device: dev.index,
            events: &dev.events,
        };
        let table = Table::build(&env, text, reply)?;
        let mut deps = KVec::new();
        for index in table.devices.iter().filter_map(|d| d.vblk_index()) {
            if deps.push(index, GFP_KERNEL).is_err() {
                return fail!(reply, ENOMEM, "out of memory loading the table");
            }
        }
        let old = dev.with_state(reply, |st, reply| {
            self.with_entry(&dev, |reg, i| -> Result {
                check_cycle(reg, i, &deps, reply)?;
                reg[i].inactive_deps = deps;
                Ok(())
            })?;
            Ok(st.load(table))
        })?;
        // A replaced inactive table releases its devices here.
        drop(old);
        Ok(())
    }

    fn clear(&self, h: &Header, reply: &mut Reply) -> Result {
        let dev = self.lookup(h, reply)?;
        let old = dev.with_state(reply, |st, reply| {
            if !st.has_inactive() {
                return fail!(
                    reply,
                    ENXIO,
                    "device '{}' has no inactive table to clear",
                    Show(dev.name())
                );
            }
            self.with_entry(&dev, |reg, i| reg[i].inactive_deps = KVec::new());
            Ok(st.clear())
        })?;
        // The cleared table releases its devices here.
        drop(old);
        Ok(())
    }

    fn resume(&self, h: &Header, reply: &mut Reply) -> Result {
        let dev = self.lookup(h, reply)?;
        let resumed = dev.with_state(reply, |st, reply| {
            if !st.has_inactive() && !st.is_live() {
                return fail!(
                    reply,
                    EINVAL,
                    "device '{}' has no table to resume (load one first)",
                    Show(dev.name())
                );
            }
            let resumed = st.resume(dev.index, reply)?;
            if !matches!(resumed, Resumed::NoTable) {
                self.with_entry(&dev, |reg, i| {
                    if let Resumed::Created { devt } = resumed {
                        reg[i].devt = devt;
                    }
                    reg[i].active_deps = core::mem::take(&mut reg[i].inactive_deps);
                });
            }
            Ok(resumed)
        })?;
        if !matches!(resumed, Resumed::NoTable) {
            dev.events.bump();
        }
        Ok(())
    }

    fn suspend(&self, h: &Header, reply: &mut Reply) -> Result {
        let dev = self.lookup(h, reply)?;
        let noflush = h.flags & FLAG_NOFLUSH != 0;
        dev.with_state(reply, |st, reply| st.suspend(noflush, reply))
            .inspect_err(|_| reply.prefix(format_args!("device '{}': ", Show(dev.name()))))
    }

    /// The active table (or the inactive one, per the header's flags).
    fn table_of(&self, h: &Header, reply: &mut Reply) -> Result<Option<Arc<Table>>> {
        let dev = self.lookup(h, reply)?;
        let inactive = h.flags & FLAG_QUERY_INACTIVE != 0;
        dev.with_state(reply, |st, _| Ok(st.table(inactive)))
    }

    fn table(
        &self,
        command: Command,
        h: &mut Header,
        payload: UserSlice,
        reply: &mut Reply,
    ) -> Result {
        let table = self.table_of(h, reply)?;
        let mut text = TextBuf::new();
        if let Some(table) = &table {
            // A failure here is an allocation failure, caught below.
            let extra = if command == Command::Status {
                h.flags & FLAG_STATUS_DETAIL != 0
            } else {
                h.flags & FLAG_SHOW_SECRETS != 0
            };
            let _ = table.write_text(command == Command::Status, extra, &mut text);
            h.target_count = table.lines.len() as u32;
        } else {
            h.target_count = 0;
        }
        reply_text(h, payload, text, reply)
    }

    fn deps(&self, h: &mut Header, payload: UserSlice, reply: &mut Reply) -> Result {
        let table = self.table_of(h, reply)?;
        let count = table.as_ref().map_or(0, |t| t.devices.len());
        let mut out = payload.writer();
        if !fits(
            h,
            out.len(),
            size_of::<DepsReply>() + count * size_of::<u64>(),
        ) {
            return Ok(());
        }
        let head = DepsReply {
            count: count as u32,
            reserved: 0,
        };
        write_out(&mut out, &head.encode(), "dependency list", reply)?;
        for devt in table.iter().flat_map(|t| t.devts()) {
            write_out(
                &mut out,
                &u64::from(devt).to_ne_bytes(),
                "dependency list",
                reply,
            )?;
        }
        Ok(())
    }
}

/// Refuses a table for entry `me` whose vblk lower devices `deps` (disk
/// indices) lead back to `me` itself, directly or through other vblk
/// devices' tables (active or loaded). Cycles through other drivers (a
/// dm or loop device on a vblk disk) are not seen: their tables are not
/// ours to read.
fn check_cycle(reg: &[Entry], me: usize, deps: &[u32], reply: &mut Reply) -> Result {
    let my_index = reg[me].dev.index;
    let oom = |reply: &mut Reply| fail!(reply, ENOMEM, "out of memory checking for cycles");
    let name = |index: u32| {
        reg.iter()
            .find(|e| e.dev.index == index)
            .map(|e| Show(e.dev.name()))
    };
    for &root in deps {
        let mut stack = KVec::new();
        let mut seen = KVec::new();
        if stack.push(root, GFP_KERNEL).is_err() {
            return oom(reply);
        }
        while let Some(index) = sys::vec::pop(&mut stack) {
            if index == my_index {
                let me = Show(reg[me].dev.name());
                return match name(root) {
                    Some(lower) if root == my_index => fail!(
                        reply,
                        EINVAL,
                        "the table names device '{lower}' itself (vblk{root}) as a lower device"
                    ),
                    Some(lower) => fail!(
                        reply,
                        EINVAL,
                        "lower device vblk{root} ('{lower}') is stacked on '{me}': the table would make a cycle"
                    ),
                    None => fail!(reply, EINVAL, "the table would make '{me}' a lower device of itself"),
                };
            }
            if seen.contains(&index) {
                continue;
            }
            if seen.push(index, GFP_KERNEL).is_err() {
                return oom(reply);
            }
            if let Some(e) = reg.iter().find(|e| e.dev.index == index) {
                for &d in Iterator::chain(e.active_deps.iter(), e.inactive_deps.iter()) {
                    if stack.push(d, GFP_KERNEL).is_err() {
                        return oom(reply);
                    }
                }
            }
        }
    }
    Ok(())
}

impl Control {
    fn wait(&self, h: &mut Header, reply: &mut Reply) -> Result {
        let dev = self.lookup(h, reply)?;
        let seen = h.event_nr;
        let mut now = dev.events.get();
        if now == seen {
            // Sleeps with no lock held; a removal bumps the counter too.
            now = dev.events.wait_change(seen)?;
        }
        if dev.with_state(reply, |_, _| Ok(())).is_err() {
            return fail!(reply, ENXIO, "device '{}' was removed", Show(dev.name()));
        }
        h.event_nr = now;
        Ok(())
    }

    fn message(&self, h: &Header, payload: UserSlice, reply: &mut Reply) -> Result {
        let dev = self.lookup(h, reply)?;
        // A message may hold a key (crypt's `key set`): wiped when done.
        let mut buf = WipeOnDrop(KVec::new());
        let text = read_text(payload, MAX_MESSAGE, "message", &mut buf.0, reply)?.trim();
        let (sector, message) = text.split_once([' ', '\t']).unwrap_or((text, ""));
        let Some(sector) = table::parse_sectors(sector) else {
            return fail!(
                reply,
                EINVAL,
                "message must start with a sector number, got '{sector}'"
            );
        };
        // Under the device's mutex, so a message never races a table swap.
        dev.with_state(reply, |st, reply| {
            let Some(table) = st.table(false) else {
                return fail!(
                    reply,
                    EINVAL,
                    "device '{}' has no active table",
                    Show(dev.name())
                );
            };
            let Some(line) = table.line_at(sector) else {
                return fail!(
                    reply,
                    EINVAL,
                    "sector {sector} is past the end of the table ({} sectors)",
                    table.size
                );
            };
            let suspended = st.is_suspended();
            line.target
                .message(line.target_name, message.trim(), suspended, reply)
        })
    }
}

/// An ioctl's text that may hold secrets (keys): zeroed before it is freed.
struct WipeOnDrop(KVec<u8>);

impl Drop for WipeOnDrop {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Longest MESSAGE text.
const MAX_MESSAGE: usize = 4096;

/// Text built for a reply; remembers an allocation failure. It may hold
/// keys (TABLE with SHOW_SECRETS), so it grows by copying into a new
/// buffer and wiping the old one, and wipes itself when dropped: no copy
/// of the text is left in freed memory.
struct TextBuf {
    bytes: KVec<u8>,
    failed: bool,
}

impl TextBuf {
    fn new() -> Self {
        TextBuf {
            bytes: KVec::new(),
            failed: false,
        }
    }
}

impl Drop for TextBuf {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

impl Write for TextBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let need = self.bytes.len() + s.len();
        if need > self.bytes.capacity() {
            let Ok(mut grown) = KVec::with_capacity(need.max(256) * 2, GFP_KERNEL) else {
                self.failed = true;
                return Err(core::fmt::Error);
            };
            // Cannot fail: the capacity is there.
            let _ = grown.extend_from_slice(&self.bytes, GFP_KERNEL);
            wipe(&mut self.bytes);
            self.bytes = grown;
        }
        // Cannot fail (nor reallocate): the capacity is there.
        let _ = self.bytes.extend_from_slice(s.as_bytes(), GFP_KERNEL);
        Ok(())
    }
}

/// Writes one record of a binary reply (`what` names the reply).
fn write_out(out: &mut UserSliceWriter, bytes: &[u8], what: &str, reply: &mut Reply) -> Result {
    out.write_slice(bytes)
        .map_err(|e| reply.fail(e, format_args!("cannot write the {what}")))
}

/// Whether a reply of `needed` bytes fits the `room` of the payload area;
/// if not, sets `FLAG_BUFFER_FULL` and the size needed in `data_size` (the
/// ioctl then succeeds without writing the payload, and the caller
/// retries with a larger buffer).
fn fits(h: &mut Header, room: usize, needed: usize) -> bool {
    if room < needed {
        h.flags |= FLAG_BUFFER_FULL;
        h.data_size = (h.data_offset as usize + needed) as u32;
        false
    } else {
        h.flags &= !FLAG_BUFFER_FULL;
        true
    }
}

/// Writes `text` and a NUL into the payload area, or asks for a larger
/// buffer (`FLAG_BUFFER_FULL`, needed size in `data_size`).
fn reply_text(h: &mut Header, payload: UserSlice, text: TextBuf, reply: &mut Reply) -> Result {
    if text.failed {
        return fail!(reply, ENOMEM, "out of memory formatting the reply");
    }
    let mut out = payload.writer();
    if !fits(h, out.len(), text.bytes.len() + 1) {
        return Ok(());
    }
    out.write_slice(&text.bytes)
        .and_then(|()| out.write_slice(&[0]))
        .map_err(|e| reply.fail(e, format_args!("cannot write the reply")))
}

/// Largest table text LOAD accepts.
const MAX_TABLE_TEXT: usize = 1 << 20;

/// Reads the payload as text (up to the first NUL) into `buf`: at most
/// `max` bytes of UTF-8; `what` names it in messages.
fn read_text<'b>(
    payload: UserSlice,
    max: usize,
    what: &str,
    buf: &'b mut KVec<u8>,
    reply: &mut Reply,
) -> Result<&'b str> {
    let reader = payload.reader();
    if reader.len() > max {
        return fail!(reply, EINVAL, "{what} is longer than {max} bytes");
    }
    reader
        .read_all(buf, GFP_KERNEL)
        .map_err(|e| reply.fail(e, format_args!("cannot read the {what}")))?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match core::str::from_utf8(&buf[..end]) {
        Ok(text) => Ok(text),
        Err(_) => fail!(reply, EINVAL, "{what} is not UTF-8"),
    }
}

/// The payload area the header describes (checked by [`check_header`]).
fn payload(arg: UserPtr, h: &Header) -> UserSlice {
    let offset = h.data_offset as usize;
    UserSlice::new(
        arg.wrapping_add(offset),
        (h.data_size as usize).saturating_sub(offset),
    )
}

/// The header's device name, checked.
fn device_name<'h>(h: &'h Header, reply: &mut Reply) -> Result<&'h [u8]> {
    name_in(&h.name).map_err(|e| reply.fail(EINVAL, format_args!("device name {e}")))
}

/// Displays a checked name (printable ASCII) in messages.
pub(crate) struct Show<'a>(pub(crate) &'a [u8]);

impl core::fmt::Display for Show<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|&b| write!(f, "{}", b as char))
    }
}

/// The buffer description must be self-consistent before anything reads a
/// payload through it.
fn check_header(h: &Header, reply: &mut Reply) -> Result {
    let size = h.data_size as usize;
    let offset = h.data_offset as usize;
    if size < HEADER_SIZE {
        return fail!(
            reply,
            EINVAL,
            "data_size {size} is smaller than the {HEADER_SIZE}-byte header"
        );
    }
    if offset < HEADER_SIZE || offset > size {
        return fail!(
            reply,
            EINVAL,
            "data_offset {offset} is outside the payload area {HEADER_SIZE}..={size}"
        );
    }
    if h.reserved != 0 {
        return fail!(
            reply,
            EINVAL,
            "reserved header field is {} (must be 0)",
            h.reserved
        );
    }
    Ok(())
}
