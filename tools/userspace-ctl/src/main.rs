//! vblkctl: create, load, inspect and remove vblk devices (dmsetup-shaped).

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use vblkctl::abi::{c_str, check_name, name_field, Command, Header, ABI_MAJOR};
use vblkctl::control::{abi_version, Control, CtlError};

#[derive(Parser)]
#[command(
    name = "vblkctl",
    version,
    about = "Control vblk virtual block devices"
)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the tool's version and the ABI versions of tool and module.
    Version,
    /// Create a device; with a table, also load and resume it.
    Create {
        name: String,
        /// A unique identifier, as dmsetup's --uuid.
        #[arg(long)]
        uuid: Option<String>,
        /// The table as text ('START LENGTH TARGET ARGS...' lines).
        #[arg(long, conflicts_with_all = ["file", "notable"])]
        table: Option<String>,
        /// Read the table from this file.
        #[arg(conflicts_with = "notable")]
        file: Option<std::path::PathBuf>,
        /// Create the device without a table (no stdin read).
        #[arg(long)]
        notable: bool,
    },
    /// Load a table into a device's inactive slot (from --table, FILE or stdin).
    Load {
        name: String,
        /// The table as text ('START LENGTH TARGET ARGS...' lines).
        #[arg(long, conflicts_with = "file")]
        table: Option<String>,
        /// Read the table from this file.
        file: Option<std::path::PathBuf>,
    },
    /// Show a device's table (crypt keys shown as zeros unless --showkeys).
    Table {
        name: String,
        /// Show the loaded, not yet resumed table.
        #[arg(long)]
        inactive: bool,
        /// Show crypt keys (like dmsetup table --showkeys).
        #[arg(long)]
        showkeys: bool,
    },
    /// Show each table line's live status (as dmsetup status).
    Status {
        name: String,
        /// Append each target's counters after ` | ` (mirror: sync in
        /// sectors, per-leg reads and writes); --json always has them.
        #[arg(long)]
        detail: bool,
    },
    /// List the targets the module knows, with versions.
    Targets,
    /// Wait until the device's event number differs from EVENT_NR (default:
    /// its current one), then print the new event number.
    Wait { name: String, event_nr: Option<u32> },
    /// Send a message to the target holding SECTOR (as dmsetup message).
    /// `key set` without a key (or with `-`) reads it from --key-file or
    /// standard input: a key on the command line is visible to other users.
    Message {
        /// File holding the hex key for `key set` ('-': standard input).
        #[arg(long)]
        key_file: Option<String>,
        name: String,
        sector: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        message: Vec<String>,
    },
    /// Make the inactive table live (creates the disk on first resume) and
    /// end a suspension.
    Resume { name: String },
    /// Hold I/O: in-flight I/O completes, new I/O waits until resume.
    Suspend {
        /// Do not flush lower devices' caches (as dmsetup --noflush).
        #[arg(long)]
        noflush: bool,
        name: String,
    },
    /// Remove a device.
    Remove { name: String },
    /// Drop the loaded (inactive) table without resuming it.
    Clear { name: String },
    /// List the lower devices a device's table uses (as dmsetup deps).
    Deps {
        name: String,
        /// Of the loaded, not yet resumed table.
        #[arg(long)]
        inactive: bool,
    },
    /// List devices.
    Ls,
    /// Show a device's state.
    Info { name: String },
}

/// Makes SIGINT and SIGTERM interrupt a sleeping ioctl (it then fails
/// with EINTR and the kernel's explanation, which we print) instead of
/// killing vblkctl silently.
fn interruptible() {
    extern "C" fn ignore(_: libc::c_int) {}
    // SAFETY: installs a handler that does nothing (async-signal-safe)
    // for two signals; the sigaction struct is fully initialised.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [libc::SIGINT, libc::SIGTERM] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Cmd::Suspend { .. } | Cmd::Wait { .. } | Cmd::Resume { .. }
    ) {
        interruptible();
    }
    let result = match cli.command {
        Cmd::Version => version(cli.json),
        Cmd::Create {
            name,
            uuid,
            table,
            file,
            notable,
        } => table_input(table, file, !notable)
            .and_then(|t| create(&name, uuid.as_deref(), t.as_deref())),
        Cmd::Load { name, table, file } => {
            table_input(table, file, true).and_then(|t| load(&name, t.as_deref().unwrap_or("")))
        }
        Cmd::Table {
            name,
            inactive,
            showkeys,
        } => show_table(&name, inactive, showkeys, false, cli.json),
        Cmd::Status { name, detail } => {
            show_table(&name, false, detail || cli.json, true, cli.json)
        }
        Cmd::Targets => targets(cli.json),
        Cmd::Wait { name, event_nr } => wait(&name, event_nr, cli.json),
        Cmd::Message {
            key_file,
            name,
            sector,
            message,
        } => send_message(&name, &sector, &message, key_file.as_deref()),
        Cmd::Resume { name } => resume(&name),
        Cmd::Suspend { noflush, name } => suspend(&name, noflush),
        Cmd::Remove { name } => remove(&name),
        Cmd::Clear { name } => {
            Control::open().and_then(|c| c.send(Command::Clear, &mut named(&name)?))
        }
        Cmd::Deps { name, inactive } => deps(&name, inactive, cli.json),
        Cmd::Ls => ls(cli.json),
        Cmd::Info { name } => info(&name, cli.json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vblkctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn version(json: bool) -> Result<(), CtlError> {
    let tool_abi = abi_version(&Header::new());
    let control = Control::open()?;
    let mut header = Header::new();
    control.send(Command::Version, &mut header)?;
    let module_abi = abi_version(&header);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "tool_version": env!("CARGO_PKG_VERSION"),
                "tool_abi": tool_abi,
                "module_abi": module_abi,
            })
        );
    } else {
        println!("vblkctl version: {}", env!("CARGO_PKG_VERSION"));
        println!("Tool ABI:        {tool_abi}");
        println!("Module ABI:      {module_abi}");
    }
    if header.abi_major != ABI_MAJOR {
        return Err(CtlError::new(
            None,
            format!("module ABI {module_abi} is incompatible with this vblkctl (ABI {tool_abi}): major versions differ"),
        ));
    }
    Ok(())
}

/// MESSAGE, with a `key set` key from a file or standard input when asked;
/// the key's buffers are zeroed once sent.
fn send_message(
    name: &str,
    sector: &str,
    words: &[String],
    key_file: Option<&str>,
) -> Result<(), CtlError> {
    use std::io::Read;
    let invalid = |m: String| CtlError::new(Some(libc::EINVAL), m);
    let mut key = Vec::new();
    let source = match key_file {
        Some(f) => Some(f),
        None if vblkctl::message::wants_key(words) => Some("-"),
        None => None,
    };
    if let Some(f) = source {
        let read = if f == "-" {
            std::io::stdin().read_to_end(&mut key)
        } else {
            std::fs::File::open(f).and_then(|mut file| file.read_to_end(&mut key))
        };
        read.map_err(|e| invalid(format!("cannot read the key from '{f}': {e}")))?;
    }
    let result = vblkctl::message::payload(sector, words, source.map(|_| &key[..]))
        .map_err(invalid)
        .and_then(|mut text| {
            let sent = Control::open()
                .and_then(|c| c.send_bytes(Command::Message, &mut named(name)?, &text));
            text.fill(0);
            sent
        });
    key.fill(0);
    result
}

/// A header naming device `name`, checked as the kernel will check it.
fn named(name: &str) -> Result<Header, CtlError> {
    check_name(name.as_bytes())
        .map_err(|e| CtlError::new(Some(libc::EINVAL), format!("device name '{name}' {e}")))?;
    let mut h = Header::new();
    h.name = name_field(name.as_bytes());
    Ok(h)
}

fn create(name: &str, uuid: Option<&str>, table: Option<&str>) -> Result<(), CtlError> {
    let mut h = named(name)?;
    if let Some(uuid) = uuid {
        check_name(uuid.as_bytes())
            .map_err(|e| CtlError::new(Some(libc::EINVAL), format!("uuid '{uuid}' {e}")))?;
        h.uuid = name_field(uuid.as_bytes());
    }
    let control = Control::open()?;
    control.send(Command::Create, &mut h)?;
    if let Some(table) = table {
        // Like dmsetup: a create whose table fails leaves no device behind.
        if let Err(e) = load(name, table).and_then(|()| resume(name)) {
            let _ = control.send(Command::Remove, &mut named(name)?);
            return Err(e);
        }
    }
    Ok(())
}

fn load(name: &str, table: &str) -> Result<(), CtlError> {
    // Check with the kernel's own parser first, for an early message.
    vblkctl::table::check(table)
        .map_err(|e| CtlError::new(Some(libc::EINVAL), format!("table: {e}")))?;
    Control::open()?.send_bytes(Command::Load, &mut named(name)?, table.as_bytes())
}

fn suspend(name: &str, noflush: bool) -> Result<(), CtlError> {
    let mut h = named(name)?;
    if noflush {
        h.flags |= vblkctl::abi::FLAG_NOFLUSH;
    }
    Control::open()?.send(Command::Suspend, &mut h)
}

fn resume(name: &str) -> Result<(), CtlError> {
    let control = Control::open()?;
    control.send(Command::Resume, &mut named(name)?)?;
    let mut h = named(name)?;
    control.send(Command::Info, &mut h)?;
    link_device(name, h.dev)
}

/// Makes /dev/vblk/NAME point at the disk node (udev-less systems included).
fn link_device(name: &str, dev: u64) -> Result<(), CtlError> {
    let uevent = format!("/sys/dev/block/{}/uevent", dev_str(dev));
    let text = std::fs::read_to_string(&uevent)
        .map_err(|e| CtlError::new(None, format!("cannot read {uevent}: {e}")))?;
    let Some(node) = text.lines().find_map(|l| l.strip_prefix("DEVNAME=")) else {
        return Err(CtlError::new(None, format!("no DEVNAME in {uevent}")));
    };
    std::fs::create_dir_all("/dev/vblk")
        .map_err(|e| CtlError::new(None, format!("cannot create /dev/vblk: {e}")))?;
    let link = format!("/dev/vblk/{name}");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(format!("../{node}"), &link)
        .map_err(|e| CtlError::new(None, format!("cannot create {link}: {e}")))
}

fn remove(name: &str) -> Result<(), CtlError> {
    Control::open()?.send(Command::Remove, &mut named(name)?)?;
    let _ = std::fs::remove_file(format!("/dev/vblk/{name}"));
    Ok(())
}

/// dev_t in the kernel's encoding, as "major:minor".
fn dev_str(dev: u64) -> String {
    format!("{}:{}", dev >> 20, dev & 0xfffff)
}

fn ls(json: bool) -> Result<(), CtlError> {
    let devices = Control::open()?.list()?;
    if json {
        let list: Vec<_> = devices
            .iter()
            .map(|d| {
                serde_json::json!({
                    "name": c_str(&d.name),
                    "dev": if d.dev == 0 { serde_json::Value::Null } else { dev_str(d.dev).into() },
                    "event_nr": d.event_nr,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else if devices.is_empty() {
        println!("No devices found");
    } else {
        for d in &devices {
            let dev = if d.dev == 0 {
                "no disk".to_string()
            } else {
                dev_str(d.dev)
            };
            println!("{}\t({dev})", c_str(&d.name));
        }
    }
    Ok(())
}

fn info(name: &str, json: bool) -> Result<(), CtlError> {
    let mut h = named(name)?;
    Control::open()?.send(Command::Info, &mut h)?;
    let uuid = c_str(&h.uuid);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "name": name,
                "uuid": uuid,
                "dev": if h.dev == 0 { serde_json::Value::Null } else { dev_str(h.dev).into() },
                "open_count": h.open_count,
                "event_nr": h.event_nr,
                "target_count": h.target_count,
                "active": h.flags & vblkctl::abi::FLAG_ACTIVE_PRESENT != 0,
                "inactive": h.flags & vblkctl::abi::FLAG_INACTIVE_PRESENT != 0,
                "suspended": h.flags & vblkctl::abi::FLAG_SUSPENDED != 0,
            })
        );
    } else {
        println!("Name:              {name}");
        let state = if h.flags & vblkctl::abi::FLAG_SUSPENDED != 0 {
            "SUSPENDED"
        } else if h.flags & vblkctl::abi::FLAG_ACTIVE_PRESENT != 0 {
            "ACTIVE"
        } else {
            "NO TABLE"
        };
        println!("State:             {state}");
        println!("Open count:        {}", h.open_count);
        println!("Event number:      {}", h.event_nr);
        if h.dev != 0 {
            println!("Major, minor:      {}", dev_str(h.dev).replace(':', ", "));
        }
        println!("Number of targets: {}", h.target_count);
        if !uuid.is_empty() {
            println!("UUID: {uuid}");
        }
    }
    Ok(())
}

/// The table text from --table, a file, or (as dmsetup) stdin when it is
/// not a terminal. `None` when there is none (create without a table).
fn table_input(
    table: Option<String>,
    file: Option<std::path::PathBuf>,
    stdin_ok: bool,
) -> Result<Option<String>, CtlError> {
    use std::io::{IsTerminal, Read};
    if let Some(t) = table {
        return Ok(Some(t));
    }
    if let Some(f) = file {
        return std::fs::read_to_string(&f).map(Some).map_err(|e| {
            CtlError::new(
                e.raw_os_error(),
                format!("cannot read table file {}: {e}", f.display()),
            )
        });
    }
    if !stdin_ok || std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| {
        CtlError::new(
            e.raw_os_error(),
            format!("cannot read the table from stdin: {e}"),
        )
    })?;
    Ok(if text.trim().is_empty() {
        None
    } else {
        Some(text)
    })
}

fn show_table(
    name: &str,
    inactive: bool,
    showkeys: bool,
    status: bool,
    json: bool,
) -> Result<(), CtlError> {
    let mut h = named(name)?;
    if inactive {
        h.flags |= vblkctl::abi::FLAG_QUERY_INACTIVE;
    }
    // For TABLE: keys shown; for STATUS: counters appended.
    if showkeys && status {
        h.flags |= vblkctl::abi::FLAG_STATUS_DETAIL;
    } else if showkeys {
        h.flags |= vblkctl::abi::FLAG_SHOW_SECRETS;
    }
    let command = if status {
        Command::Status
    } else {
        Command::Table
    };
    let (_, text) = Control::open()?.query_text(command, &h)?;
    if json {
        let lines: Vec<_> = text
            .lines()
            .map(|l| {
                let mut f = l.splitn(4, ' ');
                let (start, length, target) = (f.next(), f.next(), f.next());
                let mut rest = f.next().unwrap_or("");
                let mut counters = "";
                if status {
                    if let Some((dm, more)) = rest.split_once(" | ") {
                        (rest, counters) = (dm, more);
                    }
                }
                let mut line = serde_json::json!({
                    "start": start.and_then(|s| s.parse::<u64>().ok()),
                    "length": length.and_then(|s| s.parse::<u64>().ok()),
                    "target": target,
                    if status { "status" } else { "args" }: rest,
                });
                if status {
                    if let Some(detail) = status_detail(target.unwrap_or(""), rest, counters) {
                        line["detail"] = detail;
                    }
                }
                line
            })
            .collect();
        println!("{}", serde_json::Value::Array(lines));
    } else {
        print!("{text}");
    }
    Ok(())
}

/// A target's status text as structured JSON, for the targets whose
/// status has fields: striped `<n> <dev>... 1 <A|D...>` becomes
/// `{"stripes": [{"device": "1:0", "health": "A"}, ...]}`.
fn status_detail(target: &str, status: &str, counters: &str) -> Option<serde_json::Value> {
    match target {
        "mirror" => vblkctl::status::mirror_json(status, counters),
        "snapshot" => vblkctl::status::snapshot_json(status, counters),
        "raid" => vblkctl::status::raid_json(status, counters),
        "striped" => {
            let words: Vec<&str> = status.split_whitespace().collect();
            let n: usize = words.first()?.parse().ok()?;
            let devices = words.get(1..1 + n)?;
            let health = words.get(2 + n)?;
            if health.len() != n {
                return None;
            }
            let stripes: Vec<_> = devices
                .iter()
                .zip(health.chars())
                .map(|(dev, h)| serde_json::json!({"device": dev, "health": h.to_string()}))
                .collect();
            Some(serde_json::json!({ "stripes": stripes }))
        }
        _ => None,
    }
}

fn targets(json: bool) -> Result<(), CtlError> {
    let (_, text) = Control::open()?.query_text(Command::Targets, &Header::new())?;
    if json {
        let list: Vec<_> = text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(name, version)| serde_json::json!({"name": name, "version": version}))
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for l in text.lines() {
            if let Some((name, version)) = l.split_once(' ') {
                println!("{name:<16} v{version}");
            }
        }
    }
    Ok(())
}

fn wait(name: &str, event_nr: Option<u32>, json: bool) -> Result<(), CtlError> {
    let control = Control::open()?;
    let mut h = named(name)?;
    h.event_nr = match event_nr {
        Some(n) => n,
        None => {
            let mut info = named(name)?;
            control.send(Command::Info, &mut info)?;
            info.event_nr
        }
    };
    control.send(Command::Wait, &mut h)?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "name": name, "event_nr": h.event_nr })
        );
    } else {
        println!("{}", h.event_nr);
    }
    Ok(())
}

/// The kernel name of block device `dev` ("ram0"), if sysfs knows it.
fn block_name(dev: u64) -> Option<String> {
    let text = std::fs::read_to_string(format!("/sys/dev/block/{}/uevent", dev_str(dev))).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(str::to_string)
}

fn deps(name: &str, inactive: bool, json: bool) -> Result<(), CtlError> {
    let mut h = named(name)?;
    if inactive {
        h.flags |= vblkctl::abi::FLAG_QUERY_INACTIVE;
    }
    let devs = Control::open()?.deps(&h)?;
    if json {
        let list: Vec<_> = devs
            .iter()
            .map(|&d| serde_json::json!({"dev": dev_str(d), "name": block_name(d)}))
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        let list: Vec<_> = devs
            .iter()
            .map(|&d| {
                let name = block_name(d).map(|n| format!(" {n}")).unwrap_or_default();
                format!("({}, {}{name})", d >> 20, d & 0xfffff)
            })
            .collect();
        println!(
            "{} dependenc{}\t: {}",
            devs.len(),
            if devs.len() == 1 { "y" } else { "ies" },
            list.join(" ")
        );
    }
    Ok(())
}
