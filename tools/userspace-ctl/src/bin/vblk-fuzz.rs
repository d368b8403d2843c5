//! Selftest driver for the control surface under stress (runs in the VM).
//!
//! `vblk-fuzz fuzz --seed S --seconds T --procs P`: P processes send random
//! and mutated ioctls to /dev/vblk-control for T seconds: every command,
//! random header fields, truncated, oversized and misplaced payloads, and
//! table text from a grammar of the targets' arguments, all on a small set
//! of shared device names so create/load/resume/suspend/remove/message race
//! each other. A seed reproduces the sequence of each process (the kernel's
//! interleaving differs). Every refusal must carry an errno and a message,
//! except where there is nowhere to put one (EFAULT, ENOTTY). At the end
//! the devices are removed and the summary line says what ran.
//!
//! `vblk-fuzz fail-nth --name N --table TEXT [--resume]`: the syzkaller way
//! of testing error paths. For n = 1, 2, ... the n-th allocation on
//! vblk's behalf in LOAD (or the first RESUME, which creates the disk)
//! fails (`/proc/thread-self/fail-nth`, with failslab and fail_page_alloc
//! filtered to vblk's stack by the caller); each run must either succeed
//! or fail with an errno and a message and leave nothing half-made. Stops
//! at the first n the call no longer reaches. `--stride S` tries every S-th
//! point only (a quicker sample of a long path).

use std::fs::OpenOptions;
use std::io::Write;
use std::mem::size_of;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vblkctl::abi::{name_field, Command, Header, FLAG_INACTIVE_PRESENT, MESSAGE_LEN};
use vblkctl::control::Control;

/// A small deterministic generator (xorshift64*): the same seed gives the
/// same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Names the processes share (so their commands race).
const NAMES: [&str; 6] = ["fz0", "fz1", "fz2", "fz3", "fz4", "fz5"];

/// A number for a table field: small, aligned, at a boundary or huge.
fn number(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => "0".into(),
        1 => rng.below(64).to_string(),
        2 => (8 * rng.below(4096)).to_string(),
        3 => (1024 * rng.below(64)).to_string(),
        4 => u64::MAX.to_string(),
        5 => (u64::MAX - rng.below(4096)).to_string(),
        6 => "-1".into(),
        _ => rng.next().to_string(),
    }
}

/// A lower device: real ones, other fuzz devices (stacks and cycles),
/// missing ones and junk.
fn device(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=3 => format!("/dev/ram{}", rng.below(2)),
        4..=6 => format!("/dev/vblk/{}", rng.pick(&NAMES)),
        7 => "/dev/does-not-exist".into(),
        8 => "1:0".into(),
        _ => format!("{}:{}", rng.below(300), rng.below(300)),
    }
}

const KEYS: [&str; 3] = [
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "00112233445566778899aabbccddeeff",
    "zz",
];

/// One table line's target and arguments, from the grammar of each target.
fn target(rng: &mut Rng) -> String {
    match rng.below(14) {
        0 => "zero".into(),
        1 => "error".into(),
        2 => format!("linear {} {}", device(rng), number(rng)),
        3 => {
            let n = 1 + rng.below(4);
            let mut s = format!(
                "striped {} {}",
                n,
                [8, 16, 7, 0, 128][rng.below(5) as usize]
            );
            for _ in 0..n + rng.below(2) {
                s += &format!(" {} {}", device(rng), number(rng));
            }
            s
        }
        4 => format!(
            "flakey {} {} {} {}{}",
            device(rng),
            number(rng),
            rng.below(3),
            rng.below(3),
            *rng.pick(&[
                "",
                " 1 drop_writes",
                " 1 error_reads",
                " 5 corrupt_bio_byte 1 w 0 0",
                " 2 bogus"
            ])
        ),
        5 => format!(
            "crypt {} {} {} {} {}{}",
            rng.pick(&[
                "aes-xts-plain64",
                "aes-cbc-essiv:sha256",
                "capi:xts(aes)-plain64",
                "des-ecb"
            ]),
            rng.pick(&KEYS),
            number(rng),
            device(rng),
            number(rng),
            *rng.pick(&["", " 1 allow_discards", " 1 sector_size:4096", " 3 bogus"])
        ),
        6 => {
            let legs = 1 + rng.below(3);
            let log = if rng.chance(50) {
                format!("core 1 {}", [1024, 8, 0, 3][rng.below(4) as usize])
            } else {
                format!("disk 2 {} 1024", device(rng))
            };
            let mut s = format!("mirror {log} {legs}");
            for _ in 0..legs {
                s += &format!(" {} {}", device(rng), number(rng));
            }
            if rng.chance(30) {
                s += " 1 handle_errors";
            }
            s
        }
        7 => "nosuchtarget 1 2 3".into(),
        8 => format!("snapshot-origin {}", device(rng)),
        9 => format!(
            "{} {} {} {} {}",
            rng.pick(&["snapshot", "snapshot-merge"]),
            device(rng),
            device(rng),
            rng.pick(&["P", "PO", "N", "p", "X"]),
            [8, 16, 12, 0, 1 << 20][rng.below(5) as usize]
        ),
        10 => {
            let legs = 1 + rng.below(4);
            let mut opts: Vec<String> = vec![[8, 16, 7, 0, 128][rng.below(5) as usize].to_string()];
            for _ in 0..rng.below(3) {
                opts.push(
                    rng.pick(&[
                        "sync",
                        "nosync",
                        "rebuild 1",
                        "rebuild 9",
                        "region_size 1024",
                        "stripe_cache 64",
                        "write_mostly 0",
                        "bogus",
                    ])
                    .to_string(),
                );
            }
            let words: usize = opts.iter().map(|o| o.split(' ').count()).sum();
            let mut s = format!(
                "raid {} {} {} {legs}",
                rng.pick(&["raid5_ls", "raid4", "raid5_n", "raid5_rs", "raid6_zr", "raid1"]),
                words,
                opts.join(" ")
            );
            for _ in 0..legs {
                let meta = if rng.chance(10) {
                    device(rng)
                } else {
                    "-".into()
                };
                let data = if rng.chance(10) {
                    "-".into()
                } else {
                    device(rng)
                };
                s += &format!(" {meta} {data}");
            }
            s
        }
        11 => format!(
            "thin-pool {} {} {} {}{}",
            device(rng),
            device(rng),
            [128, 100, 0, 2048, 4096, 2_097_152][rng.below(6) as usize],
            number(rng),
            *rng.pick(&[
                "",
                " 1 skip_block_zeroing",
                " 2 error_if_no_space no_discard_passdown",
                " 1 read_only",
                " 1 bogus",
                " 3 ignore_discard",
            ])
        ),
        12 => format!(
            "thin {} {}{}",
            device(rng),
            rng.pick(&["0", "1", "16777216", "x"]),
            *rng.pick(&["", "", " /dev/ram1"])
        ),
        _ => {
            // Mutated text: a real line with a word dropped or doubled.
            let mut words: Vec<String> = target(rng).split(' ').map(String::from).collect();
            let i = rng.below(words.len() as u64) as usize;
            if rng.chance(50) {
                words.remove(i);
            } else {
                let w = words[i].clone();
                words.insert(i, w);
            }
            words.join(" ")
        }
    }
}

/// A table: usually lines that follow each other, sometimes gaps,
/// overlaps, zero lengths and junk characters.
fn table(rng: &mut Rng) -> Vec<u8> {
    let mut out = String::new();
    let mut start = 0u64;
    for _ in 0..1 + rng.below(3) {
        let len = match rng.below(6) {
            0 => 0,
            1 => rng.next(),
            _ => 8 * (1 + rng.below(2048)),
        };
        let at = if rng.chance(90) {
            start
        } else {
            rng.below(4096)
        };
        out += &format!("{at} {len} {}\n", target(rng));
        start = at.saturating_add(len);
    }
    let mut bytes = out.into_bytes();
    if rng.chance(5) && !bytes.is_empty() {
        let i = rng.below(bytes.len() as u64) as usize;
        bytes[i] = rng.below(256) as u8;
    }
    bytes
}

/// Sends `nr` (a command number, maybe not one) with `h` and `payload`;
/// the header's data_size and data_offset are as set in `h` unless
/// `honest` (then they cover the payload exactly). Returns errno and the
/// header the kernel wrote back.
fn send(control: &Control, nr: u8, mut h: Header, payload: &[u8], honest: bool) -> (i32, Header) {
    let hsize = size_of::<Header>();
    let room = payload.len() + 4096;
    if honest {
        h.data_size = (hsize + room) as u32;
        h.data_offset = hsize as u32;
    }
    let request = vblkctl::abi::iowr(vblkctl::abi::MAGIC, nr, hsize);
    let (result, answered, _) = control.raw_call(request, &h, payload, room);
    (result.err().unwrap_or(0), answered)
}

fn message(h: &Header) -> String {
    let end = h
        .message
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(MESSAGE_LEN);
    String::from_utf8_lossy(&h.message[..end]).into_owned()
}

fn header_for(name: &str) -> Header {
    let mut h = Header::new();
    h.name = name_field(name.as_bytes());
    h
}

/// What one fuzz process saw.
#[derive(Default)]
struct Tally {
    calls: u64,
    ok: u64,
    refused: u64,
    /// Refusals without a message where one was owed.
    silent: Vec<String>,
}

fn fuzz_one(control: &Control, rng: &mut Rng, tally: &mut Tally) {
    let name = *rng.pick(&NAMES);
    let mut h = header_for(name);
    let cmd = *rng.pick(&Command::ALL);
    let mut nr = cmd as u8;
    let mut payload = Vec::new();
    let mut honest = true;
    match cmd {
        Command::Load => payload = table(rng),
        Command::Message => {
            payload = format!(
                "{} {}",
                rng.below(64),
                rng.pick(&[
                    "key wipe",
                    "key set 00",
                    "bogus",
                    "",
                    "key set",
                    "create_thin 0",
                    "create_snap 1 0",
                    "delete 1",
                    "set_transaction_id 0 1",
                    "reserve_metadata_snap",
                    "release_metadata_snap",
                    "no_space_timeout 1",
                    "create_thin x",
                ])
            )
            .into_bytes();
        }
        // WAIT sleeps until the counter differs from this: never the
        // device's current value, so it answers at once.
        Command::Wait => h.event_nr = u32::MAX - rng.below(4) as u32,
        _ => {}
    }
    // Mutations of the header itself.
    if rng.chance(10) {
        match rng.below(8) {
            0 => h.abi_major = rng.next() as u32,
            1 => h.reserved = rng.next(),
            2 => {
                honest = false;
                h.data_size = rng.next() as u32;
                h.data_offset = rng.next() as u32;
            }
            3 => h.name = [b'x'; vblkctl::abi::NAME_LEN],
            4 => h.flags = rng.next() as u32,
            5 => nr = rng.below(256) as u8,
            6 => {
                honest = false;
                h.data_size = size_of::<Header>() as u32;
            }
            _ => h.uuid = name_field(b"fuzz-uuid"),
        }
    }
    let (errno, answer) = send(control, nr, h, &payload, honest);
    tally.calls += 1;
    if errno == 0 {
        tally.ok += 1;
        return;
    }
    tally.refused += 1;
    // Nowhere to put a message: not our ioctl, or no writable header.
    if matches!(errno, libc::ENOTTY | libc::EFAULT) {
        return;
    }
    if message(&answer).is_empty() {
        tally
            .silent
            .push(format!("{cmd:?} (nr {nr}) errno {errno}"));
    }
}

fn fuzz(seed: u64, seconds: u64, procs: u64) -> ExitCode {
    let mut children = Vec::new();
    for p in 0..procs {
        // SAFETY: fork in a single-threaded program; the child only runs
        // this function's loop and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let control = match Control::open() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vblk-fuzz: {e}");
                    std::process::exit(2);
                }
            };
            let mut rng = Rng::new(seed ^ (p + 1).wrapping_mul(0x1000_0001));
            let mut tally = Tally::default();
            let end = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < end {
                fuzz_one(&control, &mut rng, &mut tally);
            }
            println!(
                "proc {p}: {} calls, {} ok, {} refused, {} without a message",
                tally.calls,
                tally.ok,
                tally.refused,
                tally.silent.len()
            );
            for s in tally.silent.iter().take(5) {
                println!("proc {p}: refused without a message: {s}");
            }
            std::process::exit(if tally.silent.is_empty() { 0 } else { 1 });
        }
        children.push(pid);
    }
    let control = match Control::open() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vblk-fuzz: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A process may wait on a device another one suspended (a mirror
    // reading its log from it, as dm would): past the time, resume every
    // device until all have ended.
    let (mut failed, mut left) = (0, children.len());
    let deadline = Instant::now() + Duration::from_secs(seconds + 20);
    while left > 0 {
        for pid in children.iter_mut().filter(|p| **p > 0) {
            let mut status = 0;
            // SAFETY: polling our own child.
            if unsafe { libc::waitpid(*pid, &mut status, libc::WNOHANG) } == *pid {
                if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                    failed += 1;
                }
                *pid = 0;
                left -= 1;
            }
        }
        if Instant::now() > deadline {
            for name in NAMES {
                send(&control, Command::Resume as u8, header_for(name), &[], true);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Clean up: upper devices first, so a few passes.
    for _ in 0..NAMES.len() {
        for name in NAMES {
            send(&control, Command::Resume as u8, header_for(name), &[], true);
            remove_retry(&control, name);
        }
    }
    let stuck: Vec<&str> = NAMES
        .iter()
        .copied()
        .filter(|n| info_flags(&control, n).is_some())
        .collect();
    if !stuck.is_empty() {
        println!("fuzz: devices left that cannot be removed: {stuck:?}");
        failed += 1;
    }
    println!("fuzz: seed {seed}, {procs} processes, {seconds} s, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Sets the current thread's fail-nth (0 turns it off); returns what it
/// reads back afterwards with [`fail_nth_left`].
fn set_fail_nth(n: u64) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .open("/proc/thread-self/fail-nth")?;
    write!(f, "{n}")
}

/// 0 if the armed fault was injected, else how many calls were left.
fn fail_nth_left() -> u64 {
    std::fs::read_to_string("/proc/thread-self/fail-nth")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

/// REMOVE, retried for up to 5 s while the device is only briefly open
/// (udev probes a new disk), as `dmsetup remove --retry` does.
fn remove_retry(control: &Control, name: &str) -> (i32, Header) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let (errno, h) = send(control, Command::Remove as u8, header_for(name), &[], true);
        if errno != libc::EBUSY || Instant::now() > end {
            return (errno, h);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn info_flags(control: &Control, name: &str) -> Option<u32> {
    let (errno, h) = send(control, Command::Info as u8, header_for(name), &[], true);
    (errno == 0).then_some(h.flags)
}

fn fail_nth(name: &str, table: &str, resume: bool, max: u64, stride: u64) -> ExitCode {
    let control = match Control::open() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vblk-fuzz: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut points, mut refusals, mut absorbed, mut bad) = (0u64, 0u64, 0u64, 0u64);
    for n in (1..=max).step_by(stride.max(1) as usize) {
        let (errno, h) = send(&control, Command::Create as u8, header_for(name), &[], true);
        if errno != 0 {
            eprintln!("fail-nth: create {name}: errno {errno}: {}", message(&h));
            return ExitCode::FAILURE;
        }
        let (cmd, payload) = if resume {
            let (errno, h) = send(
                &control,
                Command::Load as u8,
                header_for(name),
                table.as_bytes(),
                true,
            );
            if errno != 0 {
                eprintln!("fail-nth: load: errno {errno}: {}", message(&h));
                return ExitCode::FAILURE;
            }
            (Command::Resume, &[][..])
        } else {
            (Command::Load, table.as_bytes())
        };
        if let Err(e) = set_fail_nth(n) {
            eprintln!("fail-nth: /proc/thread-self/fail-nth: {e}");
            return ExitCode::FAILURE;
        }
        let (errno, h) = send(&control, cmd as u8, header_for(name), payload, true);
        let left = fail_nth_left();
        let _ = set_fail_nth(0);
        let injected = left == 0;
        let flags = info_flags(&control, name).unwrap_or(0);
        if !injected {
            // The call no longer reaches the n-th fault point: done.
            if errno != 0 {
                println!(
                    "not ok - without a fault {cmd:?} failed: errno {errno}: {}",
                    message(&h)
                );
                bad += 1;
            }
            println!("fail-nth {cmd:?}: {points} fault points, {refusals} refused cleanly, {absorbed} absorbed, {bad} bad");
            let _ = remove_retry(&control, name);
            return if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        points += 1;
        if errno == 0 {
            absorbed += 1; // a reserve or retry covered the failure
        } else if message(&h).is_empty() {
            println!("not ok - fault {n}: {cmd:?} refused with errno {errno} but no message");
            bad += 1;
        } else {
            refusals += 1;
            // Nothing half-made: a failed LOAD leaves no inactive table, a
            // failed first RESUME leaves the table loaded and no disk.
            let half = match cmd {
                Command::Load => flags & FLAG_INACTIVE_PRESENT != 0,
                _ => flags & FLAG_INACTIVE_PRESENT == 0 || h.dev != 0,
            };
            if half {
                println!(
                    "not ok - fault {n}: {cmd:?} failed ({}) but left flags {flags:#x}",
                    message(&h)
                );
                bad += 1;
            }
            if resume {
                // The same RESUME without a fault must now succeed.
                let (errno, h) = send(&control, Command::Resume as u8, header_for(name), &[], true);
                if errno != 0 {
                    println!(
                        "not ok - fault {n}: RESUME after the failed one: errno {errno}: {}",
                        message(&h)
                    );
                    bad += 1;
                }
            }
        }
        let (errno, h) = remove_retry(&control, name);
        if errno != 0 {
            println!(
                "not ok - fault {n}: remove afterwards: errno {errno}: {}",
                message(&h)
            );
            return ExitCode::FAILURE;
        }
    }
    println!("not ok - fail-nth: still injecting after {max} points");
    ExitCode::FAILURE
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: vblk-fuzz fuzz --seed S --seconds T --procs P\n       vblk-fuzz fail-nth --name NAME --table TEXT [--resume] [--max N] [--stride S]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |key: &str| {
        args.iter()
            .position(|a| a == key)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match args.first().map(String::as_str) {
        Some("fuzz") => {
            let num = |k: &str, d: u64| opt(k).and_then(|v| v.parse().ok()).unwrap_or(d);
            fuzz(num("--seed", 1), num("--seconds", 10), num("--procs", 3))
        }
        Some("fail-nth") => {
            let (Some(name), Some(table)) = (opt("--name"), opt("--table")) else {
                return usage();
            };
            let max = opt("--max").and_then(|v| v.parse().ok()).unwrap_or(5000);
            let stride = opt("--stride").and_then(|v| v.parse().ok()).unwrap_or(1);
            fail_nth(
                &name,
                &table,
                args.iter().any(|a| a == "--resume"),
                max,
                stride,
            )
        }
        _ => usage(),
    }
}
