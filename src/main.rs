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

/// A crash: sidecarctl's fault, not the user's (sysexits' EX_SOFTWARE).
const EXIT_INTERNAL: i32 = 70;

fn main() -> ExitCode {
    install_panic_hook();
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

/// Whatever goes wrong, the user gets one line and no backtrace, and an exit status that
/// does not blame their input.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let reason = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: internal error (a defect in sidecarctl, not in its input): {reason}{at}");
        std::process::exit(EXIT_INTERNAL);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run in a child process by the test below: the hook, then a crash.
    #[test]
    fn crash_in_a_child() {
        if std::env::var_os("SIDECARCTL_CRASH_CHILD").is_some() {
            install_panic_hook();
            panic!("on purpose");
        }
    }

    #[test]
    fn a_crash_exits_70_with_one_line() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "tests::crash_in_a_child", "--nocapture"])
            .env("SIDECARCTL_CRASH_CHILD", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(EXIT_INTERNAL));
        assert_ne!(EXIT_INTERNAL, i32::from(EXIT_BAD_INPUT));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{stderr}"));
        assert!(
            line.starts_with("error: internal error (a defect in sidecarctl, not in its input): on purpose at src/main.rs:"),
            "{line}"
        );
    }
}
