//! The command line (clap derive) and nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "harvest",
    version,
    about = "Pull every record out of a paginated JSON HTTP API into NDJSON or Parquet files"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Harvest a job into its output folder.
    ///
    /// An unfinished run (a failure, an interrupt, a crash) is resumed from its checkpoint.
    /// On SIGINT or SIGTERM no new request is sent; requests already in flight get at most
    /// 2 s, then the checkpoint is saved and harvest exits 130 (pages not yet written are
    /// fetched again on resume). A second signal exits at once.
    Run(RunArgs),
    /// Validate a job and print what it will do, secrets redacted.
    Check(CheckArgs),
    /// Where a job stands: a run in progress, the unfinished run, the last completed run,
    /// each shard of a sharded run.
    Status(StatusArgs),
    /// Finish a sharded run whose shards all completed: in replace mode, remove the parts of
    /// earlier runs (the last shard to finish does this itself).
    Finalize(StatusArgs),
    /// Compact a Delta table's small files (format = "delta") into larger ones, in one version.
    Optimize(StatusArgs),
    /// Remove the files of a Delta table (format = "delta") that no version within --retain
    /// refers to: files replaced or compacted away, and files of runs that never completed.
    Vacuum(VacuumArgs),
    /// Fetch one page of URL, find its records and pagination, and write a commented job.
    ///
    /// Pagination parameters in the URL (page=1, limit=50, cursor=...) move into
    /// [pagination]; the rest stay in [request] params. A credential given with --header
    /// (or as an api_key-like URL parameter) is written as ${API_TOKEN} or ${API_KEY}, never
    /// as its value. The job is then tried on two pages to confirm what was found.
    Init(InitArgs),
    /// The response cache of `run --cache`.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Print the JSON Schema of job files, for editors (Even Better TOML, taplo).
    Schema,
    /// Print shell completions: `harvest completions bash > /etc/bash_completion.d/harvest`.
    Completions(CompletionsArgs),
    /// Serve the built-in paginated test API.
    MockApi(MockApiArgs),
    /// Start the mock API in-process and harvest jobs/demo.toml from it into output/demo/.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job file (TOML).
    pub job: PathBuf,
    /// Output root instead of [output] dir.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Start over instead of resuming an unfinished run.
    #[arg(long)]
    pub fresh: bool,
    /// Stop each partition after this many pages.
    #[arg(long)]
    pub max_pages: Option<u64>,
    /// Requests in flight, whole job.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Requests per second, whole job.
    #[arg(long)]
    pub rps: Option<f64>,
    /// Live bars when stderr is a terminal (auto), a plain line every 10 s otherwise.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    /// Keep each response this long ("10m") in the user's cache folder and answer from it:
    /// re-running a job while writing it asks the API nothing again. Not with [incremental].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub cache: Option<std::time::Duration>,
    /// Harvest shard I of N (0-based) of a run split among N workers; also HARVEST_SHARD.
    /// The job's concurrency and rate are shared among the shards.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// The run has N shards; this worker's index comes from the scheduler:
    /// JOB_COMPLETION_INDEX (Kubernetes), AWS_BATCH_JOB_ARRAY_INDEX (AWS Batch),
    /// SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN (Slurm).
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// The id every shard of a run shares (default: HARVEST_RUN_ID, AWS_BATCH_JOB_ID,
    /// SLURM_ARRAY_JOB_ID, GITHUB_RUN_ID-GITHUB_RUN_ATTEMPT).
    #[arg(long)]
    pub run_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The job file (TOML).
    pub job: PathBuf,
    /// Fetch the first page of each partition: record count, a sample record, the next page.
    #[arg(long)]
    pub probe: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job file (TOML).
    pub job: PathBuf,
    /// Output root instead of [output] dir.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// The job file (TOML).
    pub job: PathBuf,
    /// Output root instead of [output] dir.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Keep what the versions of this long ago ("7d", "12h") still refer to: time travel
    /// that far back keeps working.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "7d")]
    pub retain: std::time::Duration,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The first page's URL, as a browser or curl would fetch it.
    pub url: String,
    /// Write the job here instead of to stdout.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Replace the --out file if it exists.
    #[arg(long)]
    pub force: bool,
    /// A request header, `Name: value` (repeatable); credentials become ${VAR}s in the job.
    #[arg(short = 'H', long)]
    pub header: Vec<String>,
    /// GET, or POST for APIs that page through a JSON body (with --body).
    #[arg(short = 'X', long, default_value = "GET")]
    pub method: String,
    /// The JSON body of a POST.
    #[arg(short = 'd', long)]
    pub body: Option<String>,
    /// The job's name (default: from the URL's path).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Remove every cached response.
    Clear,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct MockApiArgs {
    /// Where to listen (or HARVEST_MOCK_ADDR).
    #[arg(long, env = "HARVEST_MOCK_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Records in the dataset (ids 1..=N).
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Delay before every response, e.g. "20ms".
    #[arg(long, value_parser = humantime::parse_duration)]
    pub latency: Option<std::time::Duration>,
    /// Up to this much more delay, drawn for each request from --seed, e.g. "10ms": responses
    /// then come back out of the order they were asked in.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub jitter: Option<std::time::Duration>,
    /// Faults per request, e.g. "503=0.05,429=0.02,reset=0.01,cut=0.01,invalid=0.01,slow=0.01"
    /// or "all=0.05".
    #[arg(long, value_parser = harvest_mock::Faults::parse)]
    pub faults: Option<harvest_mock::Faults>,
    /// Seed for the fault and latency draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long a `slow` fault holds its response.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub slow: std::time::Duration,
    /// Retry-After of 429 and 503 faults, e.g. "1s".
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub retry_after: std::time::Duration,
    /// Answer 429 (with Retry-After and X-RateLimit-*) above this many requests per second.
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// The credential /auth/<kind>/ paths want, and the OAuth client secret.
    #[arg(long, env = "HARVEST_MOCK_SECRET", default_value = "mock-secret", hide_env_values = true)]
    pub secret: String,
    /// How long a token from /oauth/token lives.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub token_lifetime: std::time::Duration,
    /// The refresh token /oauth/token takes first (each use rotates it).
    #[arg(long, env = "HARVEST_MOCK_REFRESH_TOKEN", default_value = "mock-refresh-token", hide_env_values = true)]
    pub refresh_token: String,
    /// A public key (PEM file) that signs JWT assertions /oauth/token takes; repeatable.
    #[arg(long)]
    pub jwt_public_key: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Records the mock API serves.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Output root instead of the job's.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Live bars when stderr is a terminal (auto), a plain line every 10 s otherwise.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Ndjson,
    Parquet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
