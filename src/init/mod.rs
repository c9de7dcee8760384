//! `harvest init URL`: fetch one page, find the records and the pagination ([`guess`]), write a
//! commented job file, then harvest its first two pages with that very job, through the same
//! code a run uses, to confirm what was found.

pub mod guess;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, PageError};
use crate::fetch::Fetcher;
use crate::job::{self, Env, Overrides};
use crate::page::{fetch_page, PageContext};
use crate::paginate::{Next, Paginator};
use crate::progress::Progress;
use guess::{quoted, Answer, Asked, Guess};

/// What `init` was asked.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    pub url: String,
    pub method: String,
    pub body: Option<String>,
    /// `Name: value`, as curl takes them.
    pub headers: Vec<String>,
    pub name: Option<String>,
    /// Where the job goes; stdout without one.
    pub out: Option<PathBuf>,
    pub force: bool,
}

/// The job written, and what `init` says about it.
pub struct Written {
    pub job: String,
    pub summary: String,
}

/// What a second page that brings the first again is called.
const REPEATED: &str = "page 2 repeats a record of page 1";

/// Tries of the first page: a 429, a 5xx or a failed connection is tried again.
const ATTEMPTS: u32 = 4;

fn retried(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// The largest response `init` reads.
const MAX_BODY: usize = 64 << 20;

pub async fn init(options: &InitOptions) -> Result<Written, Error> {
    let usage = |message: String| Error::Usage(message);
    if let Some(out) = options.out.as_ref().filter(|o| o.exists() && !options.force) {
        return Err(usage(format!("{} exists; --force replaces it", out.display())));
    }
    let url = url::Url::parse(&options.url).map_err(|e| usage(format!("{:?} is not a URL: {e}", options.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(usage(format!("{url} is not an http or https URL")));
    }
    let method = options.method.to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "POST") {
        return Err(usage(format!("--method {method}: harvest sends GET or POST")));
    }
    let body = match &options.body {
        Some(text) => Some(serde_json::from_str::<Value>(text).map_err(|e| usage(format!("--body is not JSON: {e}")))?),
        None if method == "POST" => Some(Value::Object(Default::default())),
        None => None,
    };
    let headers = options
        .headers
        .iter()
        .map(|h| match h.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_string(), value.trim().to_string())),
            _ => Err(usage(format!("--header {h:?} is not `Name: value`"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let asked = Asked { url, method, body, headers };

    let (response_headers, document) = first_page(&asked).await?;
    let mut guess = guess::guess(&asked, &Answer { headers: &response_headers, body: &document });
    if let Some(name) = &options.name {
        guess.name = name.clone();
    }
    let path = options.out.clone().unwrap_or_else(|| PathBuf::from(format!("{}.toml", guess.name)));
    let mut confirmed = confirm(&path, &render(&guess, &asked), &guess).await;
    if confirmed.as_ref().is_err_and(|doubt| doubt.starts_with(REPEATED)) && guess.kind == "cursor" {
        // The cursor went back in a parameter the API does not read: try the usual others.
        for name in guess::CURSOR_PARAMS {
            let mut other = guess.clone();
            let Some(slot) = other.pagination.iter_mut().find(|(k, _)| k == "cursor_param") else { break };
            if slot.1 == quoted(name) {
                continue;
            }
            slot.1 = quoted(name);
            if let Ok(said) = confirm(&path, &render(&other, &asked), &other).await {
                other.reasons.push(format!(
                    "  the cursor goes back as {name}: page 1's cursor in the first guess brought page 1 again"
                ));
                guess = other;
                confirmed = Ok(said);
                break;
            }
        }
    }
    let summary = match confirmed {
        Ok(said) => said,
        Err(doubt) => {
            guess.doubts.push(doubt.clone());
            format!("not confirmed: {doubt}")
        }
    };
    let job = render(&guess, &asked);
    let mut lines: Vec<String> = guess.reasons.clone();
    lines.push(summary);
    lines.extend(guess.doubts.iter().map(|d| format!("check: {d}")));
    if !guess.vars.is_empty() {
        let names: Vec<&str> = guess.vars.iter().map(|(name, _)| name.as_str()).collect();
        lines.push(format!(
            "set {} in the environment (or in a .env file beside the job) before `harvest run`",
            names.join(" and ")
        ));
    }
    if let Some(out) = &options.out {
        crate::output::write_atomic(out, job.as_bytes(), "init")
            .map_err(|e| Error::io(format!("writing {}", out.display()), e))?;
        lines.push(format!("wrote {}; next: harvest check {0} --probe, then harvest run {0}", out.display()));
    }
    Ok(Written { job, summary: lines.join("\n") })
}

/// GET or POST the URL as given: its headers and its body as JSON.
async fn first_page(asked: &Asked) -> Result<(reqwest::header::HeaderMap, Value), Error> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("harvest/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Other(format!("cannot start an HTTP client: {e}")))?;
    let mut request = match asked.method.as_str() {
        "POST" => client
            .post(asked.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(asked.body.as_ref().unwrap_or(&Value::Null)).expect("JSON serializes")),
        _ => client.get(asked.url.clone()),
    };
    request = request.header(reqwest::header::ACCEPT, "application/json");
    for (name, value) in &asked.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let secrets: Vec<&str> = asked.headers.iter().map(|(_, v)| v.as_str()).collect();
    let hide = |text: String| secrets.iter().filter(|s| s.len() >= 4).fold(text, |t, s| t.replace(s, "***"));
    let what = format!("{} {}", asked.method, asked.url);
    // A busy or flaky server gets a few tries, as a run would give it.
    let mut attempt = 0;
    let (status, headers, bytes) = loop {
        attempt += 1;
        let sent = request.try_clone().expect("a body in memory").send().await;
        let failed = match sent {
            Ok(response) if !retried(response.status()) || attempt == ATTEMPTS => {
                let (status, headers) = (response.status(), response.headers().clone());
                match response.bytes().await {
                    Ok(bytes) => break (status, headers, bytes),
                    Err(e) => format!("{what}: reading the body: {e}"),
                }
            }
            Ok(response) => {
                let asked = crate::fetch::wait::server_pause(response.headers(), response.status().as_u16());
                let wait =
                    asked.map_or(Duration::from_millis(500 << attempt), |(w, ..)| w.min(Duration::from_secs(10)));
                tracing::warn!(
                    "{what} returned {}; trying again in {}",
                    response.status(),
                    crate::human::duration(wait)
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(e) => format!("{what}: {e}"),
        };
        if attempt == ATTEMPTS {
            return Err(Error::Other(hide(failed)));
        }
        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
    };
    let excerpt = || hide(String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned());
    if !status.is_success() {
        return Err(Error::Other(format!("{what} returned {status}: {}", excerpt())));
    }
    if bytes.len() > MAX_BODY {
        return Err(Error::Other(format!("{what}: the response is over 64 MiB")));
    }
    let document = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Other(format!("{what} did not answer JSON ({e}): {}", excerpt())))?;
    Ok((headers, document))
}

/// Harvest the first two pages with the job as written: what the second page holds, or why
/// the guess is in doubt.
async fn confirm(path: &Path, text: &str, guess: &Guess) -> Result<String, String> {
    let env = Env::from_pairs(guess.vars.iter().cloned());
    let plan = job::parse(path, text, &env, &Overrides::default())
        .map_err(|e| format!("the job written does not load: {e}"))?;
    let fetcher = Fetcher::new(&plan).map_err(|e| e.to_string())?;
    let style = &plan.pagination.style;
    let partition = plan.partitions.iter().next().unwrap_or_default();
    let progress = Progress::off();
    let track = progress.track(0, &Arc::from(""), 0, 0);
    let hints = AtomicU64::new(1);
    let cx = PageContext::standalone(&plan, &fetcher, "", &partition, &track, &hints);
    let mut pager = Paginator::new(style);
    let request = pager.first(style);
    let first = fetch_page(&cx, &request, 0, Some(&mut pager)).await.map_err(|f| f.error.to_string())?;
    if first.received == 0 {
        return Err(format!("the first page has no records at {}", plan.records.path));
    }
    let next = match first.next.clone() {
        Some(Next::Request(next)) => next,
        Some(Next::Done(stop)) => {
            return match &first.hint {
                Some(hint) => Err(hint.clone()),
                None => Ok(format!("confirmed: page 1 holds {} records and is the only page ({stop})", first.received)),
            }
        }
        None => return Err("the strategy said nothing of a next page".into()),
    };
    let param = guess.pagination.iter().find(|(k, _)| k.ends_with("_param")).map_or("page", |(_, v)| v.as_str());
    let repeated = || format!("{REPEATED}: the {param} parameter may not be the one the API reads");
    let second = match fetch_page(&cx, &next, 1, Some(&mut pager)).await {
        Ok(page) => page,
        // The strategy's loop guard: page 2 named the same next page as page 1.
        Err(f) if matches!(f.error, Error::Page { source: PageError::Repeated { .. }, .. }) => return Err(repeated()),
        Err(f) => return Err(format!("page 2: {}", f.error)),
    };
    let first_record = first.lines.split(|b| *b == b'\n').next().unwrap_or_default();
    let again = second.lines.split(|b| *b == b'\n').any(|line| !line.is_empty() && line == first_record);
    if again {
        return Err(repeated());
    }
    Ok(format!(
        "confirmed: page 1 holds {} records, page 2 holds {} others{}",
        first.received,
        second.received,
        match second.next {
            Some(Next::Done(stop)) => format!(" and is the last ({stop})"),
            _ => String::new(),
        }
    ))
}

/// The job file, commented with what was found and what to check.
fn render(g: &Guess, asked: &Asked) -> String {
    let mut out = String::new();
    let mut shown = asked.url.clone();
    let secret_params: Vec<&str> = g.vars.iter().map(|(_, v)| v.as_str()).collect();
    if secret_params.iter().any(|s| shown.as_str().contains(*s)) {
        shown.set_query(None);
    }
    out.push_str(&format!("# Written by `harvest init` from {} {shown}.\n", asked.method));
    for reason in &g.reasons {
        out.push_str(&format!("# {reason}\n"));
    }
    for doubt in &g.doubts {
        out.push_str(&format!("# CHECK: {doubt}\n"));
    }
    if !g.vars.is_empty() {
        let names: Vec<&str> = g.vars.iter().map(|(n, _)| n.as_str()).collect();
        out.push_str(&format!("# Set {} in the environment or a .env file beside this job.\n", names.join(" and ")));
    }
    out.push_str(&format!("name = {}\n\n[request]\nurl = {}\n", quoted(&g.name), quoted(&g.url)));
    if g.method != "GET" {
        out.push_str(&format!("method = {}\n", quoted(&g.method)));
    }
    if !g.params.is_empty() {
        out.push_str(&format!("params = {}\n", inline(&g.params)));
    }
    if !g.headers.is_empty() {
        out.push_str(&format!("headers = {}\n", inline(&g.headers)));
    }
    if let Some(body) = g.body.as_ref().and_then(to_toml) {
        out.push_str(&format!("body = {body}\n"));
    }
    out.push_str(&format!("\n[records]\npath = {}\n\n[pagination]\nkind = {}\n", quoted(&g.records), quoted(&g.kind)));
    for (key, value) in &g.pagination {
        out.push_str(&format!("{key} = {value}\n"));
    }
    if !g.auth.is_empty() {
        out.push_str("\n[auth]\n");
        for (key, value) in &g.auth {
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
    out
}

/// `{ a = "1", b = "x" }`: values that look like numbers stay strings, as the URL had them.
fn inline(pairs: &[(String, String)]) -> String {
    let mut table = toml::Table::new();
    for (k, v) in pairs {
        table.insert(k.clone(), toml::Value::String(v.clone()));
    }
    toml::Value::Table(table).to_string()
}

/// A JSON body as a TOML inline value (TOML has no null: such keys are left out).
fn to_toml(value: &Value) -> Option<toml::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(items.iter().filter_map(to_toml).collect()),
        Value::Object(map) => {
            toml::Value::Table(map.iter().filter_map(|(k, v)| Some((k.clone(), to_toml(v)?))).collect())
        }
    })
}
