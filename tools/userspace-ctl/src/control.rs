//! Client side of `/dev/vblk-control`: open it, send a command, turn
//! failures into messages that say what was wrong.

use crate::abi::{Command, DeviceRecord, Header, ListReply, FLAG_BUFFER_FULL};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where the control device lives unless `VBLK_CONTROL` says otherwise.
pub const DEFAULT_CONTROL_PATH: &str = "/dev/vblk-control";

/// A failure, with the errno where there is one.
#[derive(Debug)]
pub struct CtlError {
    pub errno: Option<i32>,
    pub message: String,
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CtlError {}

impl CtlError {
    pub fn new(errno: Option<i32>, message: impl Into<String>) -> Self {
        CtlError {
            errno,
            message: message.into(),
        }
    }
}

/// An open control device.
pub struct Control {
    file: File,
}

impl Control {
    /// Opens the control device at `$VBLK_CONTROL` or the default path.
    pub fn open() -> Result<Self, CtlError> {
        let path = std::env::var_os("VBLK_CONTROL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_PATH));
        Self::open_path(&path)
    }

    /// Opens the control device at `path`, explaining the usual failures.
    pub fn open_path(path: &Path) -> Result<Self, CtlError> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => Ok(Control { file }),
            Err(e) => Err(explain_open_error(path, &e)),
        }
    }

    /// Sends `command` with `header`; on return `header` holds the kernel's
    /// answer (its ABI version, and on failure errno and message).
    pub fn send(&self, command: Command, header: &mut Header) -> Result<(), CtlError> {
        match self.raw_ioctl(command.ioctl(), header as *mut Header as usize) {
            Ok(()) => Ok(()),
            Err(errno) => Err(kernel_error(command, errno, header)),
        }
    }

    /// Sends `command` with `input` in a payload area of at least
    /// `capacity` bytes after the header; returns the answered header and
    /// the payload area as the kernel left it.
    fn exchange(
        &self,
        command: Command,
        header: &Header,
        input: &[u8],
        capacity: usize,
    ) -> Result<(Header, Vec<u8>), CtlError> {
        let hsize = std::mem::size_of::<Header>();
        let capacity = capacity.max(input.len());
        let mut h = *header;
        h.data_size = (hsize + capacity) as u32;
        h.data_offset = hsize as u32;
        let (result, answered, payload) = self.raw_call(command.ioctl(), &h, input, capacity);
        if let Err(errno) = result {
            return Err(kernel_error(command, errno, &answered));
        }
        Ok((answered, payload))
    }

    /// Sends `request` with `header` (its size and offset fields as given)
    /// followed by `input`, in a buffer with `capacity >= input.len()`
    /// payload bytes. Returns the ioctl's result, the header as the kernel
    /// left it and the payload area (for the probe and the fuzzer, which
    /// send inconsistent headers on purpose).
    pub fn raw_call(
        &self,
        request: u32,
        header: &Header,
        input: &[u8],
        capacity: usize,
    ) -> (Result<(), i32>, Header, Vec<u8>) {
        let hsize = std::mem::size_of::<Header>();
        let capacity = capacity.max(input.len());
        // u64 storage keeps the header 8-byte aligned.
        let mut buf = vec![0u64; (hsize + capacity).div_ceil(8)];
        // SAFETY: `buf` is 8-byte aligned and holds the header plus
        // `capacity >= input.len()` bytes; `Header` is plain old data.
        unsafe {
            std::ptr::write(buf.as_mut_ptr().cast::<Header>(), *header);
            std::ptr::copy_nonoverlapping(
                input.as_ptr(),
                buf.as_mut_ptr().cast::<u8>().add(hsize),
                input.len(),
            );
        }
        let result = self.raw_ioctl(request, buf.as_mut_ptr() as usize);
        // SAFETY: as above; a `Header` (ours or the kernel's) is in place.
        let answered = unsafe { std::ptr::read(buf.as_ptr().cast::<Header>()) };
        let mut bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let payload = bytes[hsize..hsize + capacity].to_vec();
        // The input may be a key (crypt's `key set`): leave no copy behind.
        buf.fill(0);
        bytes.fill(0);
        (result, answered, payload)
    }

    /// Sends `command` with `payload` after the header (e.g. LOAD's table);
    /// `header` gets the kernel's answer.
    pub fn send_bytes(
        &self,
        command: Command,
        header: &mut Header,
        payload: &[u8],
    ) -> Result<(), CtlError> {
        *header = self.exchange(command, header, payload, 0)?.0;
        Ok(())
    }

    /// Sends a query whose answer goes into the payload area, growing the
    /// buffer (from 4 KiB) until the answer fits.
    pub fn query(&self, command: Command, header: &Header) -> Result<(Header, Vec<u8>), CtlError> {
        let mut capacity = 4 * 1024;
        loop {
            let (h, payload) = self.exchange(command, header, &[], capacity)?;
            if h.flags & FLAG_BUFFER_FULL == 0 {
                return Ok((h, payload));
            }
            let needed = (h.data_size as usize).saturating_sub(std::mem::size_of::<Header>());
            if needed <= capacity {
                return Err(CtlError::new(
                    None,
                    format!("{command:?}: kernel reported a full buffer but no larger size"),
                ));
            }
            capacity = needed;
        }
    }

    /// A query answered with NUL-terminated text.
    pub fn query_text(
        &self,
        command: Command,
        header: &Header,
    ) -> Result<(Header, String), CtlError> {
        let (h, payload) = self.query(command, header)?;
        let end = payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(payload.len());
        Ok((h, String::from_utf8_lossy(&payload[..end]).into_owned()))
    }

    /// Lists all devices.
    pub fn list(&self) -> Result<Vec<DeviceRecord>, CtlError> {
        let (_, payload) = self.query(Command::List, &Header::new())?;
        let head = std::mem::size_of::<ListReply>();
        let rec = std::mem::size_of::<DeviceRecord>();
        let count = u32::from_ne_bytes(payload[0..4].try_into().unwrap()) as usize;
        if head + count * rec > payload.len() {
            return Err(CtlError::new(None, "List: reply larger than its buffer"));
        }
        Ok((0..count)
            .map(|i| {
                let at = head + i * rec;
                // SAFETY: bounds checked above; `DeviceRecord` is plain old
                // data, read unaligned from the byte buffer.
                unsafe { std::ptr::read_unaligned(payload[at..].as_ptr().cast::<DeviceRecord>()) }
            })
            .collect())
    }

    /// The lower devices (dev_t, kernel encoding) of the table `header` asks for.
    pub fn deps(&self, header: &Header) -> Result<Vec<u64>, CtlError> {
        let (_, payload) = self.query(Command::Deps, header)?;
        let head = std::mem::size_of::<crate::abi::DepsReply>();
        let count = u32::from_ne_bytes(payload[0..4].try_into().unwrap()) as usize;
        if head + count * 8 > payload.len() {
            return Err(CtlError::new(None, "Deps: reply larger than its buffer"));
        }
        Ok((0..count)
            .map(|i| {
                let at = head + i * 8;
                u64::from_ne_bytes(payload[at..at + 8].try_into().unwrap())
            })
            .collect())
    }

    /// Issues an arbitrary ioctl request with an arbitrary argument; the
    /// selftest probe uses this to send malformed requests on purpose.
    /// Returns the errno on failure.
    pub fn raw_ioctl(&self, request: u32, arg: usize) -> Result<(), i32> {
        // SAFETY: the control device's ioctls only access user memory
        // through copy_{from,to}_user, which never faults the process: a bad
        // `arg` yields EFAULT. Callers that pass a real buffer pass a
        // `Header` they own mutably, which the kernel may overwrite.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), request as _, arg) };
        if rc < 0 {
            Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO))
        } else {
            Ok(())
        }
    }
}

fn explain_open_error(path: &Path, e: &io::Error) -> CtlError {
    let errno = e.raw_os_error();
    let p = path.display();
    let message = match errno {
        Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) => {
            if Path::new("/sys/module/vblk").exists() {
                format!("cannot open {p}: {e}; the vblk module is loaded but the device node is missing (is devtmpfs mounted on /dev?)")
            } else {
                format!("cannot open {p}: {e}; the vblk module is not loaded (load it with 'insmod vblk.ko' or 'modprobe vblk')")
            }
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            format!("cannot open {p}: {e}; vblkctl needs root (CAP_SYS_ADMIN)")
        }
        _ => format!("cannot open {p}: {e}"),
    };
    CtlError::new(errno, message)
}

fn kernel_error(command: Command, errno: i32, header: &Header) -> CtlError {
    let os = io::Error::from_raw_os_error(errno);
    let detail = header.message_str();
    let message = if detail.is_empty() {
        format!("{command:?} failed: {os}")
    } else {
        format!("{command:?} failed: {os}: {detail}")
    };
    CtlError::new(Some(errno), message)
}

/// `major.minor.patch` of a header's ABI version.
pub fn abi_version(h: &Header) -> String {
    format!("{}.{}.{}", h.abi_major, h.abi_minor, h.abi_patch)
}
