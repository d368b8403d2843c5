// SPDX-License-Identifier: GPL-2.0
//! Control ioctls: decode, validate, dispatch, and always answer with the
//! module's ABI version and, on failure, a message.

use super::abi::{
    name_in, Command, DeviceRecord, Header, ListReply, ABI_MAJOR, ABI_MINOR, ABI_PATCH,
    FLAG_BUFFER_FULL, FLAG_QUERY_INACTIVE,
};
use super::device::{Device, Line, Table};
use super::message::{fail, Reply};
use super::table;
use crate::sys::{self, control::ControlHandler};
use core::fmt::Write;
use core::mem::size_of;
use kernel::error::code::{EACCES, EBUSY, EEXIST, EINVAL, ENOMEM, ENOTTY, ENXIO, ERESTARTSYS};
use kernel::error::Result;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::sync::{CondVar, Mutex};
use kernel::uaccess::{UserPtr, UserSlice};

const HEADER_SIZE: usize = size_of::<Header>();

/// Most devices that may exist at once (bounds what LIST returns and what
/// one user can make the module allocate).
pub(crate) const MAX_DEVICES: usize = 4096;

/// The control plane: all devices, and the ioctls that manage them.
#[pin_data]
pub(crate) struct Control {
    /// Every device, in creation order. Every state change holds this
    /// lock from its first check to its last change, so a failing command
    /// changes nothing and commands never interleave.
    #[pin]
    devices: Mutex<KVec<Device>>,
    /// Notified (with `devices` held) whenever a device's event counter
    /// changes or a device goes away; WAIT sleeps on it.
    #[pin]
    events: CondVar,
}

impl Control {
    /// A control plane with no devices.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Control {
            devices <- kernel::new_mutex!(KVec::new(), "vblk::Control::devices"),
            events <- kernel::new_condvar!("vblk::Control::events"),
        })
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
        let mut header: Header = reader.read()?;

        let mut reply = Reply::new();
        let outcome = self.dispatch(command, &mut header, arg, &mut reply);

        header.abi_major = ABI_MAJOR;
        header.abi_minor = ABI_MINOR;
        header.abi_patch = ABI_PATCH;
        header.errno = match outcome {
            Ok(()) => 0,
            Err(e) => e.to_errno().unsigned_abs(),
        };
        header.message = *reply.message();
        writer.write(&header)?;
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
            Command::Resume => self.resume(h, reply),
            Command::Suspend => self.suspend(h, reply),
            Command::Table | Command::Status => self.table(command, h, payload(arg, h), reply),
            Command::Wait => self.wait(h, reply),
            Command::Message => self.message(h, payload(arg, h), reply),
            Command::Targets => {
                let mut text = TextBuf::new();
                for t in &crate::targets::TYPES {
                    let (name, [a, b, c]) = (t.name, t.version);
                    // A failure here is an allocation failure, caught below.
                    let _ = writeln!(text, "{name} {a}.{b}.{c}");
                }
                reply_text(h, payload(arg, h), text, reply)
            }
        }
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
        let mut devices = self.devices.lock();
        if devices.iter().any(|d| d.name() == name) {
            return fail!(
                reply,
                EEXIST,
                "a device named '{}' already exists",
                Show(name)
            );
        }
        if !uuid.is_empty() && devices.iter().any(|d| d.uuid() == uuid) {
            return fail!(
                reply,
                EEXIST,
                "a device with uuid '{}' already exists",
                Show(uuid)
            );
        }
        if devices.len() >= MAX_DEVICES {
            return fail!(reply, ENOMEM, "too many devices (at most {MAX_DEVICES})");
        }
        if devices.push(Device::new(name, uuid), GFP_KERNEL).is_err() {
            return fail!(reply, ENOMEM, "out of memory creating '{}'", Show(name));
        }
        Ok(())
    }

    fn remove(&self, h: &Header, reply: &mut Reply) -> Result {
        let name = device_name(h, reply)?;
        let mut devices = self.devices.lock();
        let Some(index) = devices.iter().position(|d| d.name() == name) else {
            return fail!(reply, ENXIO, "no device named '{}'", Show(name));
        };
        if devices[index].claim_for_removal().is_err() {
            return fail!(reply, EBUSY, "device '{}' is open", Show(name));
        }
        // The removed device is dropped here, under the lock.
        let _removed = sys::vec::remove(&mut devices, index);
        self.events.notify_all();
        Ok(())
    }

    fn list(&self, h: &mut Header, payload: UserSlice, reply: &mut Reply) -> Result {
        let devices = self.devices.lock();
        let needed = size_of::<ListReply>() + devices.len() * size_of::<DeviceRecord>();
        let mut out = payload.writer();
        if !fits(h, out.len(), needed) {
            return Ok(());
        }
        out.write(&ListReply {
            count: devices.len() as u32,
            reserved: 0,
        })
        .map_err(|e| reply.fail(e, format_args!("cannot write the device list")))?;
        for d in devices.iter() {
            out.write(&d.record())
                .map_err(|e| reply.fail(e, format_args!("cannot write the device list")))?;
        }
        Ok(())
    }

    fn info(&self, h: &mut Header, reply: &mut Reply) -> Result {
        let name = device_name(h, reply)?;
        let devices = self.devices.lock();
        let d = find(&devices, name, reply)?;
        d.fill_info(h);
        Ok(())
    }
}

impl Control {
    fn load(&self, h: &Header, payload: UserSlice, reply: &mut Reply) -> Result {
        let name = device_name(h, reply)?;
        let mut buf = KVec::new();
        let text = read_text(payload, MAX_TABLE_TEXT, "table text", &mut buf, reply)?;
        let table = build_table(text, reply)?;
        let mut devices = self.devices.lock();
        let d = find_mut(&mut devices, name, reply)?;
        d.load(table);
        Ok(())
    }

    fn resume(&self, h: &Header, reply: &mut Reply) -> Result {
        let name = device_name(h, reply)?;
        let mut devices = self.devices.lock();
        // Lowest disk index no device uses (vblk0, vblk1, ...).
        let index = (0u32..)
            .find(|i| !devices.iter().any(|d| d.disk_index() == Some(*i)))
            .unwrap_or(0);
        let d = find_mut(&mut devices, name, reply)?;
        if !d.has_inactive() && d.disk_index().is_none() {
            return fail!(
                reply,
                EINVAL,
                "device '{}' has no table to resume (load one first)",
                Show(name)
            );
        }
        let before = d.event_nr();
        let result = d.resume(index);
        if d.event_nr() != before {
            self.events.notify_all();
        }
        result.map_err(|e| {
            reply.fail(
                e,
                format_args!("cannot create the disk of '{}'", Show(name)),
            )
        })
    }
}

impl Control {
    fn suspend(&self, h: &Header, reply: &mut Reply) -> Result {
        let name = device_name(h, reply)?;
        let mut devices = self.devices.lock();
        let d = find_mut(&mut devices, name, reply)?;
        if d.disk_index().is_none() {
            return fail!(
                reply,
                EINVAL,
                "device '{}' is not active (never resumed)",
                Show(name)
            );
        }
        d.suspend();
        Ok(())
    }
}

impl Control {
    fn table(
        &self,
        command: Command,
        h: &mut Header,
        payload: UserSlice,
        reply: &mut Reply,
    ) -> Result {
        let name = device_name(h, reply)?;
        let inactive = h.flags & FLAG_QUERY_INACTIVE != 0;
        let table = {
            let devices = self.devices.lock();
            let d = find(&devices, name, reply)?;
            d.table(inactive)
        };
        let mut text = TextBuf::new();
        if let Some(table) = &table {
            // A failure here is an allocation failure, caught below.
            let _ = table.write_text(command == Command::Status, &mut text);
            h.target_count = table.lines.len() as u32;
        } else {
            h.target_count = 0;
        }
        reply_text(h, payload, text, reply)
    }
}

impl Control {
    fn wait(&self, h: &mut Header, reply: &mut Reply) -> Result {
        let field = h.name;
        let name =
            name_in(&field).map_err(|e| reply.fail(EINVAL, format_args!("device name {e}")))?;
        let mut devices = self.devices.lock();
        loop {
            let Some(d) = devices.iter().find(|d| d.name() == name) else {
                return fail!(
                    reply,
                    ENXIO,
                    "no device named '{}' (or it was removed)",
                    Show(name)
                );
            };
            let now = d.event_nr();
            if now != h.event_nr {
                h.event_nr = now;
                return Ok(());
            }
            // Sleeps with `devices` released; true if a signal is pending.
            if self.events.wait_interruptible(&mut devices) {
                return Err(ERESTARTSYS);
            }
        }
    }

    fn message(&self, h: &Header, payload: UserSlice, reply: &mut Reply) -> Result {
        let name = device_name(h, reply)?;
        let mut buf = KVec::new();
        let text = read_text(payload, MAX_MESSAGE, "message", &mut buf, reply)?.trim();
        let (sector, message) = text.split_once([' ', '\t']).unwrap_or((text, ""));
        let Some(sector) = table::parse_sectors(sector) else {
            return fail!(
                reply,
                EINVAL,
                "message must start with a sector number, got '{sector}'"
            );
        };
        let table = {
            let devices = self.devices.lock();
            let d = find(&devices, name, reply)?;
            d.table(false)
        };
        let Some(table) = table else {
            return fail!(reply, EINVAL, "device '{}' has no active table", Show(name));
        };
        let Some(line) = table
            .lines
            .iter()
            .find(|l| l.start <= sector && sector < l.start + l.length)
        else {
            return fail!(
                reply,
                EINVAL,
                "sector {sector} is past the end of the table ({} sectors)",
                table.size
            );
        };
        line.target.message(line.target_name, message.trim(), reply)
    }
}

/// Longest MESSAGE text.
const MAX_MESSAGE: usize = 4096;

/// Text built for a reply; remembers an allocation failure.
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

impl Write for TextBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        if self
            .bytes
            .extend_from_slice(s.as_bytes(), GFP_KERNEL)
            .is_err()
        {
            self.failed = true;
            return Err(core::fmt::Error);
        }
        Ok(())
    }
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

/// Parses and checks table text and constructs its targets.
fn build_table(text: &str, reply: &mut Reply) -> Result<Arc<Table>> {
    let (count, size) = match table::check(text) {
        Ok(v) => v,
        Err(e) => return fail!(reply, EINVAL, "{e}"),
    };
    let mut lines = KVec::with_capacity(count, GFP_KERNEL)
        .map_err(|_| reply.fail(ENOMEM, format_args!("out of memory loading the table")))?;
    for line in table::lines(text) {
        // `check` accepted the text, so every line parses.
        let Ok(line) = line else {
            return fail!(reply, EINVAL, "table changed while parsing");
        };
        let (target_name, target) = crate::targets::construct(line.target, line.args, reply)
            .inspect_err(|_| reply.prefix(format_args!("line {}: ", line.number)))?;
        let mut args = KVec::new();
        args.extend_from_slice(line.args.as_bytes(), GFP_KERNEL)
            .map_err(|_| reply.fail(ENOMEM, format_args!("out of memory loading the table")))?;
        lines
            .push(
                Line {
                    start: line.start,
                    length: line.length,
                    target_name,
                    args,
                    target,
                },
                GFP_KERNEL,
            )
            .map_err(|_| reply.fail(ENOMEM, format_args!("out of memory loading the table")))?;
    }
    Arc::new(Table { lines, size }, GFP_KERNEL)
        .map_err(|_| reply.fail(ENOMEM, format_args!("out of memory loading the table")))
}

/// The device named `name`, or ENXIO with a message.
fn find<'a>(devices: &'a [Device], name: &[u8], reply: &mut Reply) -> Result<&'a Device> {
    match devices.iter().find(|d| d.name() == name) {
        Some(d) => Ok(d),
        None => fail!(reply, ENXIO, "no device named '{}'", Show(name)),
    }
}

/// [`find`], for changing the device.
fn find_mut<'a>(
    devices: &'a mut [Device],
    name: &[u8],
    reply: &mut Reply,
) -> Result<&'a mut Device> {
    match devices.iter_mut().find(|d| d.name() == name) {
        Some(d) => Ok(d),
        None => fail!(reply, ENXIO, "no device named '{}'", Show(name)),
    }
}

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
struct Show<'a>(&'a [u8]);

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
