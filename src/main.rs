//! sidecarctl: runs Kubewarden waPC policies locally, the way policy-server does.
//!
//! The binary is the command line only: `cli` reads the arguments, `command` holds one
//! module per command; what they run is the `sidecarctl` library.

mod cli;
mod command;
mod input;

use clap::Parser;

// Cargo.toml says why (serve's throughput).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use std::process::ExitCode;

/// A failure the user can act on: one line on stderr, exit status 2.
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    // Whatever goes wrong, the user gets one line and no backtrace.
    std::panic::set_hook(Box::new(|info| {
        let reason = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("error: internal error: {reason}");
        std::process::exit(EXIT_BAD_INPUT as i32);
    }));
    let cli = cli::Cli::parse();
    match command::execute(cli.command) {
        Ok(code) => code,
        Err(e) => {
            let text = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {text}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}
