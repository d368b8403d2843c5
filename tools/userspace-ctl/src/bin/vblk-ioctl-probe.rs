//! Selftest helper: sends one deliberately (mal)formed ioctl to
//! /dev/vblk-control and prints what came back, as
//! `errno=<N> flags=<hex> data_size=<N> message=<kernel message>` (errno 0
//! on success; flags and data_size as the kernel wrote them back).
//! The selftests compare that line with what the case must produce.

use std::mem::size_of;
use std::process::ExitCode;
use vblkctl::abi::{iowr, name_field, Command, Header, MAGIC, NAME_LEN};
use vblkctl::control::Control;

const CASES: &[&str] = &[
    "version",
    "unknown-nr",
    "wrong-magic",
    "short-size-in-number",
    "long-size-in-number",
    "null-arg",
    "unmapped-arg",
    "data-size-too-small",
    "data-offset-past-end",
    "data-offset-inside-header",
    "reserved-nonzero",
    "unterminated-name",
    "abi-major-mismatch",
    "list-no-room",
];

fn main() -> ExitCode {
    let Some(case) = std::env::args().nth(1) else {
        eprintln!("usage: vblk-ioctl-probe CASE\ncases: {}", CASES.join(" "));
        return ExitCode::from(2);
    };
    let control = match Control::open() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vblk-ioctl-probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hsize = size_of::<Header>();
    let version = Command::Version.ioctl();
    let mut h = Header::new();
    let result = match case.as_str() {
        "version" => control.raw_ioctl(version, &mut h as *mut Header as usize),
        "unknown-nr" => control.raw_ioctl(iowr(MAGIC, 0xee, hsize), &mut h as *mut _ as usize),
        "wrong-magic" => control.raw_ioctl(iowr(0xfd, 0, hsize), &mut h as *mut _ as usize),
        "short-size-in-number" => {
            control.raw_ioctl(iowr(MAGIC, 0, hsize - 4), &mut h as *mut _ as usize)
        }
        "long-size-in-number" => {
            control.raw_ioctl(iowr(MAGIC, 0, hsize + 4), &mut h as *mut _ as usize)
        }
        "null-arg" => control.raw_ioctl(version, 0),
        // An address in the kernel half: never accessible from userspace.
        "unmapped-arg" => control.raw_ioctl(version, 0xffff_8000_0000_0000),
        "data-size-too-small" => {
            h.data_size = 8;
            control.raw_ioctl(version, &mut h as *mut _ as usize)
        }
        "data-offset-past-end" => {
            h.data_offset = h.data_size + 1;
            control.raw_ioctl(version, &mut h as *mut _ as usize)
        }
        "data-offset-inside-header" => {
            h.data_offset = 4;
            control.raw_ioctl(version, &mut h as *mut _ as usize)
        }
        "reserved-nonzero" => {
            h.reserved = 7;
            control.raw_ioctl(version, &mut h as *mut _ as usize)
        }
        "unterminated-name" => {
            h.name = [b'a'; NAME_LEN];
            control.raw_ioctl(Command::Info.ioctl(), &mut h as *mut _ as usize)
        }
        "abi-major-mismatch" => {
            h.abi_major = 9;
            h.name = name_field(b"any");
            control.raw_ioctl(Command::Info.ioctl(), &mut h as *mut _ as usize)
        }
        // LIST with no payload area: must succeed with FLAG_BUFFER_FULL and
        // the size it needs, writing nothing past the header.
        "list-no-room" => control.raw_ioctl(Command::List.ioctl(), &mut h as *mut _ as usize),
        other => {
            eprintln!(
                "vblk-ioctl-probe: unknown case {other:?}; cases: {}",
                CASES.join(" ")
            );
            return ExitCode::from(2);
        }
    };
    let errno = result.err().unwrap_or(0);
    println!(
        "errno={errno} flags={:#x} data_size={} message={}",
        h.flags,
        h.data_size,
        h.message_str()
    );
    ExitCode::SUCCESS
}
