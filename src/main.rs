//! `harvest`: parse the command line, call the library, map errors to exit codes.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use harvest::error::Error;
use harvest::job::{self, Overrides};
use harvest::progress::Display;
use harvest::run::{self, RunOptions};
use tokio_util::sync::CancellationToken;

use cli::{CacheCommand, Cli, Command, FormatArg, LogFormat, ProgressArg};

/// Print to standard output. A reader that has gone (`harvest status | head`) ends the
/// command quietly with exit 0, as ripgrep does, never with a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        write_out(format_args!($($arg)*))?
    };
}

macro_rules! sayln {
    ($($arg:tt)*) => {{
        say!($($arg)*);
        say!("\n");
    }};
}

fn write_out(args: std::fmt::Arguments) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args).and_then(|()| out.flush()).map_err(anyhow::Error::new)
}

/// Whether `error` is a write to a pipe whose reader has gone.
fn closed_pipe(error: &anyhow::Error) -> bool {
    error.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

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
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
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

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) if harvest::pipeline::is_pipeline(&args.job) => {
            if args.shard.is_some() || args.shards.is_some() || args.run_id.is_some() {
                return Err(Error::Usage(
                    "a pipeline runs each of its jobs whole: shard a job by running its own file with --shard".into(),
                )
                .into());
            }
            let overrides = run_overrides(&args, None);
            let pipeline = harvest::pipeline::load(&args.job, &overrides)?;
            let options = RunOptions {
                progress: display(args.progress, cli.quiet),
                cancel: interrupt_token(),
                fresh: args.fresh,
            };
            let quiet = cli.quiet;
            let outcome = harvest::pipeline::run::run(&pipeline, &overrides, options, |_, report| {
                if !quiet {
                    eprint!("{}", report.text());
                }
            })
            .await?;
            let words = harvest::pipeline::run::describe(&outcome.state);
            match outcome.code {
                0 => {
                    sayln!("pipeline {} complete (run {}):\n{words}", pipeline.name, outcome.state.run);
                    Ok(())
                }
                code => Err(Error::Pipeline {
                    code,
                    message: format!(
                        "pipeline {} did not complete (run {}; `harvest run {}` takes it up again):\n{}",
                        pipeline.name,
                        outcome.state.run,
                        args.job.display(),
                        words.trim_end()
                    ),
                }
                .into()),
            }
        }
        Command::Run(args) => {
            let asked =
                harvest::shard::Asked { shard: args.shard.clone(), shards: args.shards, run_id: args.run_id.clone() };
            let shard = harvest::shard::resolve(&asked, &|name| std::env::var(name).ok()).map_err(Error::Usage)?;
            let overrides = run_overrides(&args, shard);
            let plan = Arc::new(job::load(&args.job, &overrides)?);
            let progress = display(args.progress, cli.quiet);
            let options = RunOptions { progress, cancel: interrupt_token(), fresh: args.fresh };
            let (result, report) = run::run_reported(plan, options).await;
            if let (Some(report), false) = (&report, cli.quiet) {
                eprint!("{}", report.text());
            }
            let summary = result?;
            if summary.already_complete {
                sayln!(
                    "nothing to do: this shard of run {} is complete ({} records); manifest: {}",
                    summary.run,
                    summary.records,
                    summary.manifest.display()
                );
                return Ok(());
            }
            sayln!(
                "harvested {} records ({} pages, {} requests) in {:.1}s into {} ({} part file{}); manifest: {}",
                summary.records,
                summary.pages,
                summary.requests,
                summary.seconds,
                summary.root.display(),
                summary.parts.len(),
                if summary.parts.len() == 1 { "" } else { "s" },
                summary.manifest.display()
            );
            Ok(())
        }
        Command::Check(args) if harvest::pipeline::is_pipeline(&args.job) => {
            let pipeline = harvest::pipeline::load(&args.job, &Overrides::default())?;
            sayln!("pipeline {} ({}): {} jobs", pipeline.name, pipeline.file.display(), pipeline.jobs.len());
            for step in &pipeline.jobs {
                let after: Vec<&str> = step.after.iter().map(|&i| pipeline.jobs[i].name.as_str()).collect();
                if !after.is_empty() {
                    sayln!("job {} runs after {}", step.name, after.join(", "));
                }
                say!("{}", harvest::check::describe(&job::load(&step.file, &Overrides::default())?));
            }
            Ok(())
        }
        Command::Check(args) => {
            let plan = job::load(&args.job, &Overrides::default())?;
            say!("{}", harvest::check::describe(&plan));
            if args.probe {
                say!("{}", harvest::check::probe(&plan).await?);
            }
            Ok(())
        }
        Command::Status(args) if harvest::pipeline::is_pipeline(&args.job) => {
            let overrides = Overrides { output_dir: args.output_dir, ..Overrides::default() };
            let pipeline = harvest::pipeline::load_offline(&args.job, &overrides)?;
            match harvest::pipeline::run::read_state(&pipeline)? {
                None => sayln!("pipeline {}: never run", pipeline.name),
                Some(state) => {
                    let finished = match &state.finished_at {
                        Some(at) => format!("complete at {at}"),
                        None => "not complete: the next `harvest run` takes it up".to_string(),
                    };
                    sayln!("pipeline {}: run {} (started {}), {finished}", pipeline.name, state.run, state.started_at);
                    say!("{}", harvest::pipeline::run::describe(&state));
                }
            }
            for step in &pipeline.jobs {
                say!("{}", harvest::status::report(&job::load_offline(&step.file, &overrides)?)?);
            }
            Ok(())
        }
        Command::Status(args) => {
            let overrides = Overrides { output_dir: args.output_dir, ..Overrides::default() };
            // The output folder only: neither the job's secrets nor its API address are needed.
            let plan = job::load_offline(&args.job, &overrides)?;
            say!("{}", harvest::status::report(&plan)?);
            Ok(())
        }
        Command::Finalize(args) => {
            let overrides = Overrides { output_dir: args.output_dir, ..Overrides::default() };
            let plan = job::load(&args.job, &overrides)?;
            sayln!("{}", harvest::status::finalize(&plan)?);
            Ok(())
        }
        Command::Init(args) => {
            let options = harvest::init::InitOptions {
                url: args.url,
                method: args.method,
                body: args.body,
                headers: args.header,
                name: args.name,
                out: args.out.clone(),
                force: args.force,
            };
            let written = harvest::init::init(&options).await?;
            if args.out.is_none() {
                say!("{}", written.job);
            }
            if !cli.quiet {
                eprintln!("{}", written.summary);
            }
            Ok(())
        }
        Command::Cache(CacheCommand::Clear) => {
            let (dir, removed) = harvest::cache::clear().map_err(|e| Error::io("clearing the response cache", e))?;
            sayln!("removed {removed} cached response{} from {}", if removed == 1 { "" } else { "s" }, dir.display());
            Ok(())
        }
        Command::Schema => {
            sayln!("{}", serde_json::to_string_pretty(&job::json_schema()).expect("a schema serializes"));
            Ok(())
        }
        Command::Completions(args) => {
            use clap::CommandFactory;
            // Written whole here: clap_complete panics on a write that fails.
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "harvest", &mut script);
            say!("{}", String::from_utf8_lossy(&script));
            Ok(())
        }
        Command::MockApi(args) => {
            let config = harvest::mock::MockConfig {
                records: args.records,
                latency: args.latency.unwrap_or_default(),
                jitter: args.jitter.unwrap_or_default(),
                faults: args.faults.unwrap_or_default(),
                seed: args.seed,
                slow: args.slow,
                retry_after: args.retry_after,
                rate_limit: args.rate_limit,
                secret: args.secret,
                token_lifetime: args.token_lifetime,
                refresh_token: args.refresh_token,
                jwt_public_keys: args
                    .jwt_public_key
                    .iter()
                    .map(|path| std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())))
                    .collect::<anyhow::Result<_>>()?,
            };
            harvest::mock::serve(args.addr, config).await?;
            Ok(())
        }
        Command::Demo(args) => {
            let summary =
                harvest::demo::run(args.records, args.output_dir, display(args.progress, cli.quiet), interrupt_token())
                    .await?;
            sayln!("{summary}");
            Ok(())
        }
    }
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

/// Cancelled on SIGINT or SIGTERM: the pipeline stops asking, drains and keeps its data.
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

/// What `run`'s flags change in each job it runs.
fn run_overrides(args: &cli::RunArgs, shard: Option<harvest::shard::ShardPlan>) -> Overrides {
    Overrides {
        output_dir: args.output_dir.clone(),
        format: args.format.map(|f| match f {
            FormatArg::Ndjson => harvest::plan::Format::Ndjson,
            FormatArg::Parquet => harvest::plan::Format::Parquet,
        }),
        max_pages: args.max_pages,
        concurrency: args.concurrency,
        requests_per_second: args.rps,
        cache: args.cache,
        shard,
    }
}

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
    let filter =
        EnvFilter::try_from_env("HARVEST_LOG").unwrap_or_else(|_| EnvFilter::new(format!("harvest={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(harvest::progress::log::Stderr)
        .with_target(false);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
