//! How long to wait before asking again: exponential backoff with full jitter between
//! retries, the pauses a server asks for in its headers (Retry-After, X-RateLimit-*, the IETF
//! RateLimit fields), read here so that the client's loop only has to honour them, and the
//! wait for a moment the job may send (a slot, a token, no pause).

use std::time::{Duration, Instant, SystemTime};

use governor::clock::{Clock, DefaultClock};
use reqwest::header::HeaderMap;

use super::Fetcher;
use crate::plan::RetryPlan;
use crate::progress::Track;

/// Exponential backoff with equal jitter: half of min(max_backoff, initial_backoff *
/// 2^(attempt - 1)), plus `jitter` (uniform in [0, 1)) times the other half. Clients that
/// failed together spread out, no wait is near zero, and until the ceiling reaches
/// `max_backoff` each wait is at least as long as the one before: a server that refuses every
/// request sees the gaps grow.
pub fn backoff(retry: &RetryPlan, attempt: u32, jitter: f64) -> Duration {
    let ceiling =
        retry.initial_backoff.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))).min(retry.max_backoff);
    let half = ceiling / 2;
    half + (ceiling - half).mul_f64(jitter.clamp(0.0, 1.0))
}

/// A pause the server asks for: Retry-After on a 429 or 503, an exhausted
/// X-RateLimit-Remaining with its X-RateLimit-Reset, or the IETF RateLimit headers. Returns
/// the wait, its cause for the manifest, and what the server said, for the log. A hint that
/// asks for less than [`LEAST_PAUSE`] (zero, a moment already past, a negative or malformed
/// value) is no hint: the next form is looked at, and with none the caller backs off as for
/// any retry.
pub fn server_pause(headers: &HeaderMap, status: u16) -> Option<(Duration, &'static str, String)> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let asks = |wait: Option<Duration>| wait.filter(|w| *w >= LEAST_PAUSE);
    if matches!(status, 429 | 503) {
        if let Some(wait) = asks(retry_after(headers)) {
            return Some((
                wait,
                "retry_after",
                format!("{status} with Retry-After: {}", text("retry-after").unwrap_or("")),
            ));
        }
    }
    if let Some(remaining) = text("x-ratelimit-remaining").and_then(|r| r.parse::<f64>().ok()) {
        if remaining <= 0.0 {
            // Without a reset, a short pause rather than none.
            let wait = text("x-ratelimit-reset").map_or(Some(Duration::from_secs(1)), reset_wait);
            if let Some(wait) = asks(wait) {
                let reset = text("x-ratelimit-reset").unwrap_or("none");
                return Some((wait, "x_ratelimit", format!("X-RateLimit-Remaining: 0, X-RateLimit-Reset: {reset}")));
            }
        }
    }
    // IETF: `RateLimit: limit=100, remaining=0, reset=5` (older drafts),
    // `RateLimit: "default";r=0;t=5` (newer), or `RateLimit-Remaining` / `RateLimit-Reset`.
    let (remaining, reset) = match text("ratelimit") {
        Some(value) => {
            let field = |names: &[&str]| {
                value.split([',', ';']).find_map(|part| {
                    let (k, v) = part.split_once('=')?;
                    names.contains(&k.trim()).then(|| v.trim().trim_matches('"').to_string())
                })
            };
            (field(&["remaining", "r"]), field(&["reset", "t"]))
        }
        None => (text("ratelimit-remaining").map(str::to_string), text("ratelimit-reset").map(str::to_string)),
    };
    if remaining.and_then(|r| r.parse::<f64>().ok()).is_some_and(|r| r <= 0.0) {
        let wait = match reset.as_deref() {
            Some(r) => r.parse::<f64>().ok().filter(|r| r.is_finite() && *r >= 0.0).map(Duration::from_secs_f64),
            None => Some(Duration::from_secs(1)),
        };
        if let Some(wait) = asks(wait) {
            let detail = format!("RateLimit remaining 0, reset {}", reset.as_deref().unwrap_or("none"));
            return Some((wait, "ratelimit", detail));
        }
    }
    None
}

/// X-RateLimit-Reset: epoch seconds when above 1e9, else seconds from now; decimals allowed.
fn reset_wait(value: &str) -> Option<Duration> {
    let reset: f64 = value.parse().ok().filter(|r: &f64| r.is_finite() && *r >= 0.0)?;
    if reset > 1e9 {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs_f64();
        Some(Duration::from_secs_f64((reset - now).max(0.0)))
    } else {
        Some(Duration::from_secs_f64(reset))
    }
}

/// `Retry-After` as seconds (decimals allowed) or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

impl Fetcher {
    /// Wait for a moment when the job may send: no server pause, a free slot among
    /// `concurrency`, a token from the bucket. The slot is taken first so that a request
    /// leaves as soon as it has its token and send times keep to the bucket.
    pub(super) async fn slot(&self, track: Option<&Track>) -> tokio::sync::SemaphorePermit<'_> {
        loop {
            self.pause_passed().await;
            let permit = self.permits.acquire().await.expect("the semaphore is never closed");
            if let Some(limiter) = &self.limiter {
                // A token now, or a wait the partition's progress line shows.
                if let Err(later) = limiter.check() {
                    if let Some(track) = track {
                        track.waiting(&self.limit_words, later.wait_time_from(DefaultClock::default().now()));
                    }
                    limiter.until_ready().await;
                }
            }
            if self.pause_remaining().is_none() {
                return permit;
            }
        }
    }

    fn pause_remaining(&self) -> Option<Duration> {
        let until = (*self.paused_until.lock().expect("pause lock"))?;
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    async fn pause_passed(&self) {
        while let Some(remaining) = self.pause_remaining() {
            tokio::time::sleep(remaining).await;
        }
    }

    /// Hold every new request of the job for `wait`, as the server asked. Logged once per
    /// pause, with its cause.
    pub(super) fn pause(&self, wait: Duration, cause: &str, detail: &str) {
        let Some((until, extension, fresh)) = self.hold(wait) else { return };
        self.progress.paused(until, cause);
        let mut pauses = self.pauses.lock().expect("stats lock");
        pauses.1 += extension.as_secs_f64();
        if fresh {
            *pauses.0.entry(cause.to_string()).or_default() += 1;
            tracing::warn!(
                "the server asked to slow down ({detail}): pausing every request for {}",
                crate::human::duration(wait)
            );
        }
    }

    /// Hold every new request of the job for `wait` from now, unless it is held longer
    /// already: when it is held until then, how much longer than before, and whether it was
    /// not held at all.
    pub(super) fn hold(&self, wait: Duration) -> Option<(Instant, Duration, bool)> {
        let now = Instant::now();
        let until = now + wait;
        let mut paused = self.paused_until.lock().expect("pause lock");
        let current = paused.filter(|u| *u > now);
        if current.is_some_and(|u| u >= until) {
            return None;
        }
        *paused = Some(until);
        Some((until, until - current.unwrap_or(now), current.is_none()))
    }
}

/// The shortest wait a server's hint can ask for: a hint of less (`Retry-After: 0`, a date or
/// a reset already past) asks for nothing, and the request backs off as a retry instead, or a
/// server that refuses every request would be asked again at once, in a loop.
pub const LEAST_PAUSE: Duration = Duration::from_millis(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling_and_jitters_in_its_upper_half() {
        let retry = RetryPlan {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(4),
            on_status: vec![],
        };
        let ceilings: Vec<Duration> = (1..=6).map(|a| backoff(&retry, a, 1.0)).collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 4000, 4000].map(Duration::from_millis));
        assert_eq!(backoff(&retry, 3, 0.25), Duration::from_millis(1250));
        assert_eq!(backoff(&retry, 3, 0.0), Duration::from_millis(1000));
        assert_eq!(backoff(&retry, u32::MAX, 0.5), Duration::from_secs(3));
        // However the draws fall, no wait is shorter than the one before while the ceiling grows
        // (here up to the fourth: 4 s is max_backoff).
        for attempt in 1..3 {
            assert!(backoff(&retry, attempt + 1, 0.0) >= backoff(&retry, attempt, 0.999), "attempt {attempt}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn rate_limit_headers_in_their_several_forms() {
        let wait = |pairs: &[(&'static str, &str)], status| server_pause(&headers(pairs), status).map(|p| (p.0, p.1));
        assert_eq!(wait(&[("retry-after", "2")], 429), Some((Duration::from_secs(2), "retry_after")));
        assert_eq!(wait(&[("retry-after", "2")], 200), None, "Retry-After counts on 429 and 503");
        assert_eq!(
            wait(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1.5")], 200),
            Some((Duration::from_millis(1500), "x_ratelimit"))
        );
        let epoch = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 30;
        let (w, _) = wait(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &epoch.to_string())], 200).unwrap();
        assert!(w > Duration::from_secs(28) && w <= Duration::from_secs(31), "{w:?}");
        assert_eq!(wait(&[("x-ratelimit-remaining", "5"), ("x-ratelimit-reset", "9")], 200), None);
        assert_eq!(
            wait(&[("ratelimit", "limit=10, remaining=0, reset=3")], 200),
            Some((Duration::from_secs(3), "ratelimit"))
        );
        assert_eq!(wait(&[("ratelimit", "\"default\";r=0;t=4")], 200), Some((Duration::from_secs(4), "ratelimit")));
        assert_eq!(
            wait(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "2")], 200),
            Some((Duration::from_secs(2), "ratelimit"))
        );
        assert_eq!(wait(&[("ratelimit", "\"default\";r=7;t=4")], 200), None);
    }

    #[test]
    fn a_hint_of_no_wait_is_no_hint() {
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(30));
        let epoch_past = (SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() - 30).to_string();
        for pairs in [
            vec![("retry-after", "0")],
            vec![("retry-after", "-5")],
            vec![("retry-after", "soon")],
            vec![("retry-after", past.as_str())],
            vec![("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", epoch_past.as_str())],
            vec![("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "0")],
            vec![("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "later")],
            vec![("ratelimit", "limit=10, remaining=0, reset=0")],
            vec![("ratelimit", "\"default\";r=0;t=-1")],
            vec![("ratelimit-remaining", "0"), ("ratelimit-reset", "0")],
        ] {
            assert_eq!(server_pause(&headers(&pairs), 429), None, "{pairs:?}");
        }
        // A zero Retry-After beside a reset still to come: the reset is the hint.
        let (wait, cause, _) = server_pause(
            &headers(&[("retry-after", "0"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "2")]),
            429,
        )
        .unwrap();
        assert_eq!((wait, cause), (Duration::from_secs(2), "x_ratelimit"));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "1.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert("retry-after", later.parse().unwrap());
        let wait = retry_after(&h).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{wait:?}");
    }
}
