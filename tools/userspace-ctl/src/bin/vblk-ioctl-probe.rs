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
    "snapshot",
    "create-raw NAME [UUID]",
    "load-raw NAME TEXT",
    "load-not-utf8 NAME",
    "load-huge NAME",
    "load-bad-payload NAME",
    "list-mmap FILE",
];

/// LIST whose reply area is the second page of a shared mapping of `file`
/// (the header at the end of the first): the kernel's copy of the records
/// faults that page in from the file's device. Prints "ready" once the
/// first page is resident and waits for a line on stdin before the ioctl,
/// so the caller can suspend the device in between.
fn list_mmap(control: &Control, file: &str) -> ExitCode {
    use std::io::BufRead;
    use std::os::fd::AsRawFd;
    let hsize = size_of::<Header>();
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
    else {
        eprintln!("list-mmap: cannot open {file}");
        return ExitCode::FAILURE;
    };
    let page = 4096;
    // SAFETY: a shared mapping of two pages of a file at least that long;
    // only this function touches it, and it is unmapped at the end.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    // SAFETY: `base` is the mapping above; the header sits at the end of
    // its first page (8-byte aligned), the reply area runs into the second.
    let (errno, answer) = unsafe {
        libc::madvise(base, 2 * page, libc::MADV_RANDOM);
        let hdr = base.cast::<u8>().add(page - hsize - 8).cast::<Header>();
        let mut h = Header::new();
        h.data_size = (hsize + 8 + page) as u32;
        std::ptr::write(hdr, h); // faults in (and dirties) page 0 only
        println!("ready");
        let _ = std::io::stdin().lock().lines().next();
        let errno = control
            .raw_ioctl(Command::List.ioctl(), hdr as usize)
            .err()
            .unwrap_or(0);
        let answer = std::ptr::read(hdr);
        libc::munmap(base, 2 * page);
        (errno, answer)
    };
    print_result(errno, &answer);
    ExitCode::SUCCESS
}

/// Sends LOAD for `name` with `payload` right after the header, the
/// header's `data_size` covering exactly the payload (plus `extra` bytes
/// claimed but not provided). Returns the errno and the answered header.
fn load_raw(control: &Control, name: &str, payload: &[u8]) -> (i32, Header) {
    let mut h = Header::new();
    h.name = name_field(name.as_bytes());
    h.data_size = (size_of::<Header>() + payload.len()) as u32;
    let (result, answered, _) = control.raw_call(Command::Load.ioctl(), &h, payload, payload.len());
    (result.err().unwrap_or(0), answered)
}

/// LOAD whose header sits at the very end of a mapped page, claiming a
/// payload in the unmapped page after it: the kernel must answer EFAULT
/// (and still write the header back).
fn load_bad_payload(control: &Control, name: &str) -> (i32, Header) {
    let hsize = size_of::<Header>();
    // SAFETY: plain anonymous mappings; the second page is unmapped again
    // so that nothing lives right after the header.
    let (errno, h) = unsafe {
        let page = 4096;
        let base = libc::mmap(
            std::ptr::null_mut(),
            2 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(base, libc::MAP_FAILED);
        libc::munmap(base.cast::<u8>().add(page).cast(), page);
        let at = base.cast::<u8>().add(page - hsize).cast::<Header>();
        let mut h = Header::new();
        h.name = name_field(name.as_bytes());
        h.data_size = (hsize + 64) as u32;
        std::ptr::write_unaligned(at, h);
        let errno = control
            .raw_ioctl(Command::Load.ioctl(), at as usize)
            .err()
            .unwrap_or(0);
        (errno, std::ptr::read_unaligned(at))
    };
    (errno, h)
}

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
    if case == "snapshot" {
        return snapshot(&control);
    }
    if case == "list-mmap" {
        return list_mmap(&control, &std::env::args().nth(2).unwrap_or_default());
    }
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
        // CREATE with a name (and uuid) the kernel alone must judge.
        "create-raw" => {
            let arg = |i| std::env::args().nth(i).unwrap_or_default().into_bytes();
            let (name, uuid) = (arg(2), arg(3));
            h.name[..name.len().min(NAME_LEN)].copy_from_slice(&name[..name.len().min(NAME_LEN)]);
            h.uuid[..uuid.len().min(NAME_LEN)].copy_from_slice(&uuid[..uuid.len().min(NAME_LEN)]);
            control.raw_ioctl(Command::Create.ioctl(), &mut h as *mut _ as usize)
        }
        "load-raw" | "load-not-utf8" | "load-huge" | "load-bad-payload" => {
            let name = std::env::args().nth(2).unwrap_or_default();
            let (errno, answer) = match case.as_str() {
                "load-raw" => {
                    let text = std::env::args().nth(3).unwrap_or_default();
                    load_raw(&control, &name, text.as_bytes())
                }
                "load-not-utf8" => load_raw(&control, &name, b"0 8 zero \xff\xfe\n"),
                "load-huge" => load_raw(&control, &name, &vec![b'#'; (1 << 20) + 1]),
                _ => load_bad_payload(&control, &name),
            };
            h = answer;
            if errno == 0 {
                Ok(())
            } else {
                Err(errno)
            }
        }
        other => {
            eprintln!(
                "vblk-ioctl-probe: unknown case {other:?}; cases: {}",
                CASES.join(" ")
            );
            return ExitCode::from(2);
        }
    };
    print_result(result.err().unwrap_or(0), &h);
    ExitCode::SUCCESS
}

/// The one line every case prints.
fn print_result(errno: i32, h: &Header) {
    println!(
        "errno={errno} flags={:#x} data_size={} message={}",
        h.flags,
        h.data_size,
        h.message_str()
    );
}

/// Prints every device's state in one go (list record, info, active and
/// loaded tables, deps), so the bad-input selftest can compare before and
/// after each refusal without starting a dozen processes.
fn snapshot(control: &Control) -> ExitCode {
    let devices = match control.list() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vblk-ioctl-probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    for d in devices {
        let name = vblkctl::abi::c_str(&d.name).to_string();
        println!(
            "device {name} dev={} event={} flags={:#x}",
            d.dev, d.event_nr, d.flags
        );
        let mut h = Header::new();
        h.name = name_field(name.as_bytes());
        let mut info = h;
        match control.send(Command::Info, &mut info) {
            Ok(()) => println!(
                "  info open={} targets={} event={} flags={:#x} uuid={}",
                info.open_count,
                info.target_count,
                info.event_nr,
                info.flags,
                vblkctl::abi::c_str(&info.uuid)
            ),
            Err(e) => println!("  info: {e}"),
        }
        for (what, flags) in [
            ("active", 0),
            ("inactive", vblkctl::abi::FLAG_QUERY_INACTIVE),
        ] {
            let mut q = h;
            q.flags = flags;
            match control.query_text(Command::Table, &q) {
                Ok((_, text)) => println!("  {what}: {text:?}"),
                Err(e) => println!("  {what}: {e}"),
            }
            match control.deps(&q) {
                Ok(devs) => println!("  {what} deps: {devs:?}"),
                Err(e) => println!("  {what} deps: {e}"),
            }
        }
    }
    ExitCode::SUCCESS
}
