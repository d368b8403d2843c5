//! Client side of `/dev/vblk-control`: open it, send a command, turn
//! failures into messages that say what was wrong.

use crate::abi::{Command, Header};
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
