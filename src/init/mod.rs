//! `harvest init URL`: fetch one page, find the records and the pagination ([`guess`]), then
//! harvest up to three pages with the job as it would be written, through the same code a run
//! uses, and hand it over only when that confirms it: page 2 holds records page 1 did not, or
//! the API shows it has one page. A server that pages only while a parameter stays in the URL
//! gets the job with the URL's query kept. Nothing confirmed, nothing written (exit 1), unless
//! `--force` writes the best guess marked `# NOT CONFIRMED`.

pub mod evidence;
pub mod guess;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, PageError};
use crate::fetch::Fetcher;
use crate::harvest::decode;
use crate::harvest::page::{self, fetch_page, PageContext};
use crate::job::{self, Env, Overrides};
use crate::paginate::{Next, PageRequest};
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
const REPEATED: &str = "a page repeats records an earlier page served";

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
    let answer = Answer { headers: &response_headers, body: &document };
    let mut guess = guess::guess(&asked, &answer);
    if let Some(name) = &options.name {
        guess.name = name.clone();
    }
    let path = options.out.clone().unwrap_or_else(|| PathBuf::from(format!("{}.toml", guess.name)));
    let first = FirstAnswer {
        more: evidence::more_evidence(&answer, guess.found),
        only: evidence::only_page(&answer, guess.found),
    };

    // The job as guessed, then the variants a server may need, until one is seen to work.
    let mut tries: Vec<Tried> = Vec::new();
    let mut confirmed = None;
    for (what, variant) in variants(&guess, &asked) {
        let tried = confirm(&path, &variant, &asked, &first, what).await;
        let works = tried.verdict.is_ok();
        tries.push(tried);
        if works {
            confirmed = Some(variant);
            break;
        }
        let repeated = tries.iter().any(|t| t.verdict.as_ref().is_err_and(|e| e.starts_with(REPEATED)));
        if repeated && guess.kind == "cursor" && tries.len() == 1 {
            // The cursor went back in a parameter the API does not read: try the usual others.
            if let Some(found) = other_cursor_params(&path, &guess, &asked, &first, &mut tries).await {
                confirmed = Some(found);
                break;
            }
        }
    }
    let last = tries.last().expect("one try at least");
    // The job written, what was guessed for it (its reasons, the verdict last), and what the
    // terminal is told besides.
    let (job, guess, said) = match confirmed {
        Some(mut chosen) => {
            if tries.len() > 1 {
                chosen.reasons.push(format!(
                    "  {}: the job as first guessed did not work ({})",
                    last.what,
                    why(&tries[0])
                ));
            }
            chosen.reasons.push(last.verdict.clone().expect("a confirmed try"));
            (render(&chosen, &asked), chosen, Vec::new())
        }
        None => {
            let tried: Vec<String> = tries.iter().map(|t| format!("  {}: {}; {}", t.what, t.saw, why(t))).collect();
            if !options.force {
                return Err(Error::Init(format!(
                    "harvest init could not confirm a job for {} {}, so it wrote none; it tried:\n{}\n\
                     set the job's keys by hand, or write the best guess with --force (marked NOT CONFIRMED)",
                    asked.method,
                    shown_url(&guess, &asked),
                    tried.join("\n")
                )));
            }
            let doubt = why(&tries[0]);
            guess.doubts.push(doubt.clone());
            let job = format!("# NOT CONFIRMED: {doubt}\n{}", render(&guess, &asked));
            let mut said = vec!["NOT CONFIRMED (written because of --force); it tried:".to_string()];
            said.extend(tried);
            (job, guess, said)
        }
    };
    let mut lines: Vec<String> = guess.reasons.clone();
    lines.extend(said);
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

/// What the first response said of the pages beyond it.
struct FirstAnswer {
    /// Evidence that more pages follow.
    more: Option<String>,
    /// Evidence that it is the only page.
    only: Option<String>,
}

/// One job tried: what it was, what its pages held, and whether that confirms it.
struct Tried {
    what: String,
    saw: String,
    verdict: Result<String, String>,
}

/// Why a try did not confirm its job.
fn why(tried: &Tried) -> String {
    match &tried.verdict {
        Ok(said) => said.clone(),
        Err(doubt) => doubt.clone(),
    }
}

/// The URL as `init` shows it: without its query when that holds a credential.
fn shown_url(g: &Guess, asked: &Asked) -> url::Url {
    let mut shown = asked.url.clone();
    let secret_params: Vec<&str> = g.vars.iter().map(|(_, v)| v.as_str()).collect();
    if secret_params.iter().any(|s| shown.as_str().contains(*s)) {
        shown.set_query(None);
    }
    shown
}

/// The job as guessed, and the same job with the URL's query kept as given: some servers
/// page only while a parameter is in the query (json-server sends its Link header only when
/// `_page` is there), so what the guess moved into `[pagination]` goes back into the URL too.
fn variants(guess: &Guess, asked: &Asked) -> Vec<(String, Guess)> {
    let mut out = vec![(format!("the job as guessed ({})", guess.kind), guess.clone())];
    let mut kept = guess.clone();
    let mut url = asked.url.clone();
    url.set_fragment(None);
    let query: Vec<(String, String)> = asked
        .url
        .query_pairs()
        .filter(|(k, v)| !guess.vars.iter().any(|(_, secret)| secret == v) || k.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let moved = query.len() > guess.params.len();
    if moved && guess.kind != "none" {
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(&query);
        }
        kept.url = url.to_string();
        kept.params.clear();
        kept.reasons.push("  the URL keeps its query as given: the server pages only while it is there".into());
        out.push(("the URL's query kept".to_string(), kept));
    }
    out
}

/// Other names a cursor may go back in, each tried in turn: the job that works, if one does.
async fn other_cursor_params(
    path: &Path,
    guess: &Guess,
    asked: &Asked,
    first: &FirstAnswer,
    tries: &mut Vec<Tried>,
) -> Option<Guess> {
    for name in guess::CURSOR_PARAMS {
        let mut other = guess.clone();
        let slot = other.pagination.iter_mut().find(|(k, _)| k == "cursor_param")?;
        if slot.1 == quoted(name) {
            continue;
        }
        slot.1 = quoted(name);
        let tried = confirm(path, &other, asked, first, format!("the cursor sent back as {name}")).await;
        let works = tried.verdict.is_ok();
        tries.push(tried);
        if works {
            other.reasons.push(format!(
                "  the cursor goes back as {name}: page 1's cursor in the first guess brought page 1 again"
            ));
            return Some(other);
        }
    }
    None
}

/// GET or POST the URL as given: its headers and its body as JSON.
async fn first_page(asked: &Asked) -> Result<(reqwest::header::HeaderMap, Value), Error> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("harvest/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Init(format!("cannot start an HTTP client: {e}")))?;
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
            return Err(Error::Init(hide(failed)));
        }
        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
    };
    let excerpt = || hide(String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned());
    if !status.is_success() {
        return Err(Error::Init(format!("{what} returned {status}: {}", excerpt())));
    }
    if bytes.len() > MAX_BODY {
        return Err(Error::Init(format!("{what}: the response is over 64 MiB")));
    }
    let document = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Init(format!("{what} did not answer JSON ({e}): {}", excerpt())))?;
    Ok((headers, document))
}

/// Harvest up to three pages with the job as written (parsed back from its text, through the
/// code a run uses) and judge them: confirmed when page 2 holds records page 1 did not, or when
/// the API shows it has one page (its total, its end, or a second page that is empty or the
/// first again where the job asks no pages at all).
async fn confirm(path: &Path, guess: &Guess, asked: &Asked, first: &FirstAnswer, what: String) -> Tried {
    let tried = |saw: String, verdict: Result<String, String>| Tried { what: what.clone(), saw, verdict };
    let text = render(guess, asked);
    let env = Env::from_pairs(guess.vars.iter().cloned());
    let plan = match job::parse(path, &text, &env, &Overrides::default()) {
        Ok(plan) => plan,
        Err(e) => return tried("nothing fetched".into(), Err(format!("the job written does not load: {e}"))),
    };
    let fetcher = match Fetcher::new(&plan) {
        Ok(fetcher) => fetcher,
        Err(e) => return tried("nothing fetched".into(), Err(e.to_string())),
    };
    let style = &plan.pagination.style;
    let partition = plan.partitions.iter().next().unwrap_or_default();
    let progress = Progress::off();
    let track = progress.track(0, &Arc::from(""), 0, 0);
    let hints = AtomicU64::new(1);
    let decoder = decode::for_job(&plan);
    let cx = PageContext::standalone(&plan, &fetcher, &decoder, "", &partition, &track, &hints);
    let mut pager = style.start();
    let mut request = pager.first();
    let param = guess.pagination.iter().find(|(k, _)| k.ends_with("_param")).map_or("page", |(_, v)| v.as_str());
    let repeated = || format!("{REPEATED}: the {param} parameter may not be the one the API reads");
    let mut records: HashSet<u64> = HashSet::new();
    let mut pages: Vec<u64> = Vec::new();
    let mut end: Option<String> = None;
    let mut failed: Option<String> = None;
    for page in 0..PAGES {
        let fetched = match fetch_page(&cx, &request, page).await {
            Ok(mut out) => page::advance(&cx, &mut *pager, &mut out, page)
                .map(|(next, _)| (out, next))
                .map_err(|error| page::PageFailure { status: None, error }),
            Err(f) => Err(f),
        };
        match fetched {
            Ok((out, next)) => {
                pages.push(out.received);
                let fresh = out.lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()).all(|l| records.insert(hash(l)));
                if !fresh && page > 0 {
                    failed = Some(repeated());
                    break;
                }
                match next {
                    Next::Request(next) => request = next,
                    Next::Done(stop) => {
                        end = Some(stop.to_string());
                        break;
                    }
                }
            }
            Err(f) if page > 0 && f.end_status().is_some() && pager.end_possible() => {
                end = Some(format!("page {} answered {} (past the end)", page + 1, f.end_status().unwrap_or(0)));
                break;
            }
            // The strategy's loop guard: a page named the same next page as one before.
            Err(f) if matches!(f.error, Error::Page { source: PageError::Repeated { .. }, .. }) => {
                failed = Some(repeated());
                break;
            }
            Err(f) => {
                failed = Some(format!("page {}: {}", page + 1, f.error));
                break;
            }
        }
    }
    let counts: Vec<String> = pages.iter().map(u64::to_string).collect();
    let saw = match (pages.len(), &end) {
        (0, _) => "no page".to_string(),
        (n, Some(end)) => {
            format!("{} of {} records, then {end}", crate::human::plural(n as u64, "page", "pages"), counts.join(", "))
        }
        (n, None) => format!("{} of {} records", crate::human::plural(n as u64, "page", "pages"), counts.join(", ")),
    };
    if let Some(doubt) = failed {
        return tried(saw, Err(doubt));
    }
    if pages.first().is_none_or(|n| *n == 0) {
        return tried(saw, Err(format!("the first page has no records at {}", plan.records.path)));
    }
    if pages.len() > 1 && pages[1] > 0 {
        let verdict = format!("confirmed: pages 1 to {} hold {} records, none twice", pages.len(), counts.join(", "));
        return tried(saw, Ok(verdict));
    }
    // One page of records: the API's only page, if the API shows it.
    let records_on_one = pages[0];
    let only = |why: String| Ok(format!("confirmed: one page of {records_on_one} records ({why})"));
    let verdict = if let Some(more) = &first.more {
        Err(format!("the job stops after page 1, but the first response said more: {more}"))
    } else if pages.len() > 1 {
        only("page 2 is empty".into())
    } else if let Some(why) = &first.only {
        only(why.clone())
    } else if guess.kind == "none" {
        match second_page(&cx, &request_page_two(guess), &plan).await {
            Ok(why) => only(why),
            Err(doubt) => Err(doubt),
        }
    } else {
        Err(format!(
            "the job stops after page 1 ({}) and nothing in the response says whether it is the only page",
            end.as_deref().unwrap_or("no reason")
        ))
    };
    tried(saw, verdict)
}

/// How many pages `init` harvests to confirm a job.
const PAGES: u64 = 3;

/// A record's bytes hashed, to tell whether a page brings records seen before.
fn hash(line: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    line.hash(&mut hasher);
    hasher.finish()
}

/// `?page=2` on the job's own request: how a job that asks no pages learns whether the API
/// has more than one.
fn request_page_two(guess: &Guess) -> PageRequest {
    let name = match guess.params.iter().any(|(k, _)| k == "page") {
        true => "_page_probe",
        false => "page",
    };
    PageRequest { query: vec![(name.to_string(), "2".to_string())], ..PageRequest::default() }
}

/// Ask for a second page the job does not ask for: the API has one page when it answers with
/// the same records, none, or a 404; it pages when the records differ.
async fn second_page(cx: &PageContext<'_>, request: &PageRequest, plan: &crate::plan::Plan) -> Result<String, String> {
    let first = fetch_page(cx, &PageRequest::default(), 0).await.map_err(|f| f.error.to_string())?;
    match fetch_page(cx, request, 1).await {
        Ok(second) if second.received == 0 => Ok("?page=2 is empty".into()),
        Ok(second) if second.lines == first.lines => Ok("?page=2 brings the same records: the API ignores it".into()),
        Ok(_) => Err(format!(
            "?page=2 brings other records than page 1: the API pages, and [pagination] should say how (records at {})",
            plan.records.path
        )),
        Err(f) if f.end_status().is_some() => Ok(format!("?page=2 answers {}", f.end_status().unwrap_or(0))),
        Err(f) => Err(format!("?page=2: {}", f.error)),
    }
}

/// The job file, commented with what was found and what to check.
fn render(g: &Guess, asked: &Asked) -> String {
    let mut out = String::new();
    let shown = shown_url(g, asked);
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

/// `{ a = "1", b = "x" }`: values that look like numbers stay strings, as the URL had them; a
/// parameter the URL repeats (`fields=a&fields=b`) becomes a list, its values in order.
fn inline(pairs: &[(String, String)]) -> String {
    let mut table = toml::Table::new();
    for (k, v) in pairs {
        let value = toml::Value::String(v.clone());
        match table.get_mut(k) {
            Some(toml::Value::Array(values)) => values.push(value),
            Some(one) => *one = toml::Value::Array(vec![one.clone(), value]),
            None => {
                table.insert(k.clone(), value);
            }
        }
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
