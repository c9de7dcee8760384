//! The webhook a run sends when it ends (`[notify]`), the way Stripe and GitHub sign theirs but
//! pointed the other way: the run report as JSON, with `X-Harvest-Timestamp: <unix seconds>`
//! and `X-Harvest-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`, so a
//! receiver can refuse forgeries and replays. It goes through a client of its own that carries
//! none of the job's credentials, at most [`ATTEMPTS`] times within [`WITHIN`]; one that cannot
//! be delivered is logged and never changes the run's outcome.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::plan::NotifyPlan;
use crate::redact::Redactor;
use crate::report::{Outcome, Report};

pub const ATTEMPTS: u32 = 3;
pub const WITHIN: Duration = Duration::from_secs(15);

/// `sha256=<hex>` of HMAC-SHA256 over `"<timestamp>.<body>"`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Tell the webhook how the run ended, if it asked to hear of such an end.
pub async fn send(notify: &NotifyPlan, report: &Report, redactor: &Redactor) {
    let wanted = match report.outcome {
        Outcome::Complete => notify.on_success,
        Outcome::Failed | Outcome::Interrupted => notify.on_failure,
    };
    if !wanted {
        return;
    }
    let body = serde_json::to_vec(report).expect("a report serializes");
    let client = match reqwest::Client::builder()
        .user_agent(concat!("harvest/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => return tracing::warn!("the webhook was not notified: cannot start an HTTP client: {e}"),
    };
    let deadline = Instant::now() + WITHIN;
    for attempt in 1..=ATTEMPTS {
        let timestamp = chrono::Utc::now().timestamp().max(0) as u64;
        let mut request = client
            .post(notify.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Harvest-Timestamp", timestamp.to_string())
            .body(body.clone());
        if let Some(secret) = &notify.secret {
            request = request.header("X-Harvest-Signature", signature(secret, timestamp, &body));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let failure = match tokio::time::timeout(left, request.send()).await {
            Ok(Ok(response)) if response.status().is_success() => {
                tracing::info!("notified the webhook that the run {}", outcome_words(report.outcome));
                return;
            }
            Ok(Ok(response)) => format!("it answered {}", response.status()),
            Ok(Err(e)) => redactor.redact(&e.without_url().to_string()).into_owned(),
            Err(_) => format!("no answer within {}", crate::human::duration(WITHIN)),
        };
        let pause = Duration::from_secs(u64::from(attempt)).min(deadline.saturating_duration_since(Instant::now()));
        if attempt == ATTEMPTS || pause.is_zero() {
            tracing::warn!(
                "the webhook was not notified ({failure}; {attempt} attempt{}); the run's outcome stands",
                if attempt == 1 { "" } else { "s" }
            );
            return;
        }
        tracing::warn!("the webhook was not notified ({failure}); trying again in {}", crate::human::duration(pause));
        tokio::time::sleep(pause).await;
    }
}

fn outcome_words(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Complete => "completed",
        Outcome::Failed => "failed",
        Outcome::Interrupted => "was interrupted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed apart: python3 -c "import hmac, hashlib;
        //   print(hmac.new(b'whsec_test', b'1700000000.{\"a\":1}', hashlib.sha256).hexdigest())"
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "sha256=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_ne!(signature("k", 1, b"x"), signature("k", 2, b"x"), "the timestamp is signed");
        assert_ne!(signature("k", 1, b"x"), signature("k", 1, b"y"), "the body is signed");
    }
}
