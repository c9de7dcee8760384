//! `harvest`: parse the command line, run the command (`cmd/`, one file each), map errors to
//! exit codes.

mod cli;
mod cmd;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use harvest::error::Error;

use cli::{Cli, LogFormat};

fn main() -> ExitCode {
    bound_allocator();
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cmd::dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cmd::closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The error and its causes, each cause once: harvest's errors already say what their source
/// said, so a cause whose words are in the message is not repeated.
fn message(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

/// glibc raises its mmap threshold each time a large block is freed, after which page-sized
/// buffers (a response body, its records) come from the heap and fragment it: peak memory then
/// creeps up with the length of the run. A fixed threshold keeps such buffers in their own
/// mappings, returned whole when freed, so memory stays flat however many records a job has.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_allocator() {
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_allocator() {}

fn exit_code(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<Error>() {
        Some(e) => e.exit_code(),
        None if error.downcast_ref::<harvest::error::JobError>().is_some() => 2,
        None => 1,
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // delta-rs warns of its own bookkeeping (a metric it derives, a session it builds) in
    // words that mean nothing to a user; its errors reach them through harvest's.
    let filter = EnvFilter::try_from_env("HARVEST_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("harvest={level},warn,deltalake_core=error")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(harvest::progress::log::Stderr)
        .with_target(false);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
