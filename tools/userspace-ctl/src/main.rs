//! vblkctl: create, load, inspect and remove vblk devices (dmsetup-shaped).

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use vblkctl::abi::{Command, Header, ABI_MAJOR};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Version => version(cli.json),
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
