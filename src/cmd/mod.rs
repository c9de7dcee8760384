//! One file per command: each turns its arguments into a call of the library and prints what
//! came of it. What is shared: printing to standard output, the progress display, interrupts.

use std::io::IsTerminal;

use harvest::progress::Display;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, ProgressArg};

/// Print to standard output. A reader that has gone (`harvest status | head`) ends the
/// command quietly with exit 0, as ripgrep does, never with a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cmd::write_out(format_args!($($arg)*))?
    };
}

macro_rules! sayln {
    ($($arg:tt)*) => {{
        say!($($arg)*);
        say!("\n");
    }};
}

mod cache;
mod check;
mod demo;
mod init;
mod mock;
mod run;
mod schema;
mod status;
mod table;

/// Run the command the line asks for.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Run(args) => run::run(args, quiet).await,
        Command::Check(args) => check::check(args).await,
        Command::Status(args) => status::status(args),
        Command::Finalize(args) => status::finalize(args),
        Command::Optimize(args) => table::optimize(args).await,
        Command::Vacuum(args) => table::vacuum(args).await,
        Command::Init(args) => init::init(args, quiet).await,
        Command::Cache(command) => cache::cache(command),
        Command::Schema => schema::schema(),
        Command::Completions(args) => schema::completions(args),
        Command::MockApi(args) => mock::mock_api(args).await,
        Command::Demo(args) => demo::demo(args, quiet).await,
    }
}

pub(crate) fn write_out(args: std::fmt::Arguments) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args).and_then(|()| out.flush()).map_err(anyhow::Error::new)
}

/// Whether `error` is a write to a pipe whose reader has gone.
pub fn closed_pipe(error: &anyhow::Error) -> bool {
    error.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Bars on a terminal, plain lines otherwise; `-q` keeps both off unless asked for.
fn display(progress: ProgressArg, quiet: bool) -> Display {
    match progress {
        ProgressArg::Always => Display::Bars { forced: true },
        ProgressArg::Never => Display::Off,
        ProgressArg::Auto if quiet => Display::Off,
        ProgressArg::Auto if std::io::stderr().is_terminal() => Display::Bars { forced: false },
        ProgressArg::Auto => Display::Lines,
    }
}

/// Cancelled on SIGINT or SIGTERM: the harvest stops asking, drains and keeps its data.
fn interrupt_token() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        interrupt().await;
        tracing::warn!("interrupted: saving a checkpoint, then stopping (interrupt again to stop at once)");
        cancel.cancel();
        // A second signal stops at once: the last checkpoint is whole whenever that happens.
        interrupt().await;
        std::process::exit(130);
    });
    token
}

/// The next SIGINT or SIGTERM.
async fn interrupt() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
