//! The response cache for writing jobs: `run --cache 10m` (or `[request] cache`) keeps each
//! 2xx response for that long in the user's cache folder, so that re-running a job while its
//! records path or output is adjusted asks the API nothing again.
//!
//! An entry's name is the SHA-256 of the whole request (method, URL, headers and body as the
//! job builds them, and a digest of the job's credential values, so two accounts never share
//! an entry): no secret in any name. Token and login requests never come here (they do not
//! go through the fetcher), nor responses with a 4xx or 5xx.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::{Fetched, Outgoing};
use crate::cache::{now_millis, responses_dir, sha256_hex, write_private};
use crate::redact::Redactor;

/// A cached response's first line; the body follows it.
#[derive(Serialize, Deserialize)]
struct CachedEntry {
    version: u32,
    /// Unix milliseconds when it was stored.
    stored: u64,
    status: u16,
    /// The URL that answered, secrets masked (only its path matters to relative links).
    url: String,
    headers: Vec<(String, String)>,
}

/// The response cache of one run.
#[derive(Debug, Clone)]
pub struct ResponseCache {
    dir: PathBuf,
    ttl: Duration,
    /// A digest of the job's credential values.
    account: String,
}

impl ResponseCache {
    /// `None` when there is no cache folder.
    pub fn new(ttl: Duration, account: &str) -> Option<Self> {
        Some(ResponseCache { dir: responses_dir()?, ttl, account: account.to_string() })
    }

    fn path(&self, request: &Outgoing) -> PathBuf {
        let mut key = format!("harvest-response-v1\n{}\n{}\n", request.method.as_str(), request.url);
        let mut headers = request.headers.clone();
        headers.sort();
        for (name, value) in &headers {
            key.push_str(&format!("{}: {value}\n", name.to_ascii_lowercase()));
        }
        if let Some(body) = &request.body {
            key.push_str(&body.to_string());
        }
        key.push('\n');
        key.push_str(&self.account);
        self.dir.join(sha256_hex(key.as_bytes()))
    }

    /// The response kept for `request`, if it is younger than the TTL (an older one is removed).
    pub fn get(&self, request: &Outgoing) -> Option<Fetched> {
        let path = self.path(request);
        let bytes = std::fs::read(&path).ok()?;
        let split = memchr::memchr(b'\n', &bytes)?;
        let entry: CachedEntry = serde_json::from_slice(&bytes[..split]).ok()?;
        if entry.version != 1 || now_millis().saturating_sub(entry.stored) >= self.ttl.as_millis() as u64 {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &entry.headers {
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
                headers.append(name, value);
            }
        }
        Some(Fetched {
            status: entry.status,
            headers,
            url: url::Url::parse(&entry.url).unwrap_or_else(|_| request.url.clone()),
            body: Bytes::copy_from_slice(&bytes[split + 1..]),
            attempts: 0,
        })
    }

    /// Keep a 2xx response to `request`; a cache that cannot be written is only logged.
    pub fn put(&self, request: &Outgoing, fetched: &Fetched, redactor: &Redactor) {
        if !(200..300).contains(&fetched.status) {
            return;
        }
        let headers = fetched
            .headers
            .iter()
            .filter(|(name, _)| *name != reqwest::header::SET_COOKIE)
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect();
        let entry = CachedEntry {
            version: 1,
            stored: now_millis(),
            status: fetched.status,
            url: redactor.url(&fetched.url),
            headers,
        };
        let mut bytes = serde_json::to_vec(&entry).expect("an entry serializes");
        bytes.push(b'\n');
        bytes.extend_from_slice(&fetched.body);
        if let Err(e) = write_private(&self.path(request), &bytes) {
            tracing::warn!("cannot keep a response in the cache {}: {e}", self.dir.display());
        }
    }
}
