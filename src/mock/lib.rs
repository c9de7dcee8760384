//! The built-in mock API: one deterministic dataset served in every pagination style.
//!
//! It is a crate of its own so that the demo, the tests and the benchmarks start it in-process
//! on a free loopback port ([`MockServer::start`]); `harvest mock-api` serves it from the
//! command line. Every path and its response shape is listed in docs/REFERENCE.md. Query parameters
//! turn on the quirks of real APIs (capped page sizes, 404 past the end, relative links,
//! repeated cursors, HTML or GraphQL errors on a 200, ...), so a job or a test can ask for
//! exactly the misbehaviour it wants. The server keeps, per request, its arrival time and
//! the number in flight, so tests check limits from the server's side.
//!
//! Handlers return `Result<Response, Response>`: an error is just another response here.
#![allow(clippy::result_large_err)]

pub mod auth;
mod dataset;
mod faults;
mod routes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tokio::net::TcpListener;

pub use dataset::{updated_at, with_odd_forms, Dataset};
pub use faults::{Fault, Faults};

/// How the mock behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    pub records: u64,
    /// Added before every response.
    pub latency: Duration,
    /// Up to this much more latency, drawn for each request (seeded by `seed` and the
    /// request's number), so that responses come back out of the order they were asked in.
    pub jitter: Duration,
    /// Faults injected at random (seeded by `seed`).
    pub faults: Faults,
    pub seed: u64,
    /// How long a `slow` fault holds its response.
    pub slow: Duration,
    /// Retry-After sent with 429 and 503 faults.
    pub retry_after: Duration,
    /// Requests per second before answering 429.
    pub rate_limit: Option<f64>,
    /// The credential of `/auth/<kind>/...` paths and the OAuth client secret.
    pub secret: String,
    /// How long a token from `/oauth/token` lives.
    pub token_lifetime: Duration,
    /// The refresh token `/oauth/token` takes first (each use rotates it).
    pub refresh_token: String,
    /// Public keys (PEM) that sign the JWT assertions `/oauth/token` takes (RS256 or ES256).
    pub jwt_public_keys: Vec<String>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            records: 1000,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            faults: Faults::default(),
            seed: 1,
            slow: Duration::from_secs(30),
            retry_after: Duration::from_secs(1),
            rate_limit: None,
            secret: "mock-secret".into(),
            token_lifetime: Duration::from_secs(3600),
            refresh_token: "mock-refresh-token".into(),
            jwt_public_keys: Vec::new(),
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    /// Since the server started.
    pub at: Duration,
    /// Requests in flight when this one arrived, itself included.
    pub in_flight: u64,
}

/// What the server saw, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    log: Mutex<Vec<Seen>>,
    /// Faults injected, by kind (`500`, `reset`, `cut`, `invalid`, `slow`, ...).
    faults: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Tokens issued by `/oauth/token`, and what the token endpoint saw.
    pub tokens: auth::Tokens,
}

/// Requests kept in the log; later ones are counted but not kept.
const LOG_LIMIT: usize = 200_000;

impl Stats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn log(&self) -> Vec<Seen> {
        self.log.lock().expect("log lock").clone()
    }

    /// Requests whose path (without the query) is `path`.
    pub fn count_path(&self, path: &str) -> usize {
        self.log().iter().filter(|s| s.uri.split('?').next() == Some(path)).count()
    }

    /// The faults injected so far, by kind.
    pub fn faults(&self) -> std::collections::BTreeMap<String, u64> {
        self.faults.lock().expect("faults lock").clone()
    }

    pub(crate) fn count_fault(&self, fault: Fault) {
        let kind = match fault {
            Fault::Status(status) => status.to_string(),
            Fault::Reset => "reset".into(),
            Fault::Cut => "cut".into(),
            Fault::Invalid => "invalid".into(),
            Fault::Slow => "slow".into(),
        };
        *self.faults.lock().expect("faults lock").entry(kind).or_default() += 1;
    }

    pub fn reset(&self) {
        self.requests.store(0, Ordering::SeqCst);
        self.max_in_flight.store(0, Ordering::SeqCst);
        self.log.lock().expect("log lock").clear();
        self.faults.lock().expect("faults lock").clear();
    }
}

/// What a view of the touched records depends on.
type ViewKey = (usize, Option<chrono::DateTime<chrono::Utc>>, bool);

pub(crate) struct MockApi {
    data: Dataset,
    config: MockConfig,
    stats: Arc<Stats>,
    started: Instant,
    /// Requests seen per URI, for the `flaky` knob.
    attempts: Mutex<HashMap<String, u64>>,
    /// Ids whose `updated_at` was moved past every other record's (`POST /_admin/touch`), one
    /// entry a touch, in the order they were touched.
    touched: Mutex<Vec<u64>>,
    /// The last view of the touched records served: (touches, `updated_since`, by id), and
    /// the records in the order served.
    view: Mutex<Option<(ViewKey, Arc<routes::View>)>>,
    /// Touched ids that were deleted (`deleted=true`): served with `"deleted":true`.
    deleted: Mutex<std::collections::HashSet<u64>>,
    dice: faults::FaultDice,
    bucket: Option<faults::Bucket>,
}

/// A running mock API.
pub struct MockServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MockServer {
    /// Start on `127.0.0.1` at a free port.
    pub async fn start(config: MockConfig) -> std::io::Result<Self> {
        Self::bind("127.0.0.1:0".parse().expect("a valid address"), config).await
    }

    pub async fn bind(addr: SocketAddr, config: MockConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (app, stats) = app(config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(MockServer { addr, stats, shutdown: Some(tx) })
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The mock's router and its stats.
pub fn app(config: MockConfig) -> (Router, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let api = Arc::new(MockApi {
        data: Dataset::new(config.records),
        stats: stats.clone(),
        started: Instant::now(),
        attempts: Mutex::new(HashMap::new()),
        touched: Mutex::new(Vec::new()),
        deleted: Mutex::new(Default::default()),
        view: Mutex::new(None),
        dice: faults::FaultDice::new(config.faults.clone(), config.seed),
        bucket: config.rate_limit.map(faults::Bucket::new),
        config,
    });
    let router = routes::router(&api).layer(axum::middleware::from_fn_with_state(api.clone(), arrive));
    (router.with_state(api), stats)
}

/// Serve until the process is stopped (`harvest mock-api`).
pub async fn serve(addr: SocketAddr, config: MockConfig) -> std::io::Result<()> {
    let records = config.records;
    // Render the dataset first: the port opens only when the mock can answer at full speed.
    let (app, _) = app(config);
    let listener = TcpListener::bind(addr).await?;
    eprintln!(
        "harvest mock API: {records} records at http://{} (paths: see docs/REFERENCE.md)",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the server knows of a request from its arrival: its number in arrival order (from 1)
/// and the URI as asked (routes under a prefix see it without).
#[derive(Clone)]
struct Arrived {
    seq: u64,
    uri: axum::http::Uri,
}

/// Count a request, log it, hold it for the latency asked, then route it.
async fn arrive(State(api): State<Arc<MockApi>>, mut request: Request, next: Next) -> Response {
    let arrived = Instant::now();
    let stats = &api.stats;
    let seq = stats.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let in_flight = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(stats);
    stats.max_in_flight.fetch_max(in_flight, Ordering::SeqCst);
    {
        let mut log = stats.log.lock().expect("log lock");
        if log.len() < LOG_LIMIT {
            log.push(Seen {
                method: request.method().to_string(),
                uri: request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                headers: request
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect(),
                at: api.started.elapsed(),
                in_flight,
            });
        }
    }
    let latency = api.config.latency + api.config.jitter.mul_f64(unit_draw(api.config.seed, seq));
    if !latency.is_zero() {
        hold_until(arrived + latency).await;
    }
    let uri = request.uri().clone();
    request.extensions_mut().insert(Arrived { seq, uri });
    next.run(request).await
}

/// A number in [0, 1) fixed by `seed` and `n` (splitmix64): the same run draws the same.
fn unit_draw(seed: u64, n: u64) -> f64 {
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Wait until `deadline` to within about a tenth of a millisecond. Tokio's timer counts whole
/// milliseconds and rounds up (a 20 ms sleep lasts up to 21), which would make `--latency`
/// lie; so the last stretch sleeps on a blocking thread, whose timer is precise.
async fn hold_until(deadline: Instant) {
    if let Some(coarse) = deadline.checked_sub(Duration::from_millis(2)) {
        tokio::time::sleep_until(coarse.into()).await;
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    if !rest.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}
