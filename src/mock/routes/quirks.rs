//! The quirks layer: what every style and example path does around its answer, as its knobs
//! and the server's faults ask. It answers HTML or GraphQL errors instead, applies the rate
//! limit, draws a fault (or serves the one a knob names), and stalls or cuts the answer's body.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use serde_json::json;

use super::super::faults::{epoch_after, Fault};
use super::super::{Arrived, MockApi};
use super::{error, Knobs};

pub(in super::super) async fn misbehave(State(api): State<Arc<MockApi>>, mut request: Request, next: Next) -> Response {
    let arrived = request.extensions().get::<Arrived>().cloned().expect("counted on arrival");
    let knobs = match Knobs::parse(&super::query_pairs(request.uri())) {
        Ok(knobs) => knobs,
        Err(refused) => return refused,
    };
    if knobs.html {
        return Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "text/html")
            .body(Body::from(
                "<html><head><title>Maintenance</title></head><body><h1>We'll be back soon</h1></body></html>",
            ))
            .expect("a valid response");
    }
    if knobs.graphql_errors {
        let errors = json!({"data": null, "errors": [{"message": "Cannot query field \"itemz\" on type \"Query\"."}, {"message": "rate of queries too high"}]});
        return knobs.json(StatusCode::OK, errors.to_string(), HeaderMap::new());
    }
    let limit_headers = match limit(&api) {
        Ok(headers) => headers,
        Err(refused) => return refused,
    };
    let seq = arrived.seq;
    let flaky = knobs.flaky > 0 && {
        let mut attempts = api.attempts.lock().expect("attempts lock");
        let seen = attempts.entry(arrived.uri.to_string()).or_default();
        *seen += 1;
        *seen <= knobs.flaky
    };
    let fault = if knobs.throttle_at == Some(seq) {
        Some(Fault::Status(429))
    } else if knobs.fail_after.is_some_and(|after| seq > after) || knobs.fail_at == Some(seq) {
        Some(Fault::Status(500))
    } else if flaky {
        Fault::parse(&knobs.flaky_as)
    } else {
        api.dice.draw()
    };
    if let Some(fault) = fault {
        api.stats.count_fault(fault);
    }
    match fault {
        Some(Fault::Status(status)) => {
            let mut response =
                error(StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), "injected fault");
            let from_knob = flaky && knobs.retry_after.is_some();
            if from_knob || (!flaky && matches!(status, 429 | 503)) || knobs.throttle_at == Some(seq) {
                let retry_after =
                    knobs.retry_after.clone().unwrap_or_else(|| api.config.retry_after.as_secs_f64().to_string());
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_str(&retry_after).expect("a valid header"));
            }
            return response;
        }
        Some(Fault::Reset) => {
            // A body that fails before anything is sent: hyper closes the connection.
            let reset = futures::stream::once(async {
                Err::<bytes::Bytes, _>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"))
            });
            return Response::new(Body::from_stream(reset));
        }
        Some(Fault::Slow) => tokio::time::sleep(api.config.slow).await,
        _ => {}
    }
    let stall = (knobs.stall_at == Some(seq)).then(|| Duration::from_millis(knobs.stall));
    request.extensions_mut().insert(knobs);
    let mut response = next.run(request).await;
    response.headers_mut().extend(limit_headers);
    match (stall, fault) {
        (Some(stall), _) => stalled(response, stall).await,
        (None, Some(Fault::Cut)) => cut(response).await,
        (None, Some(Fault::Invalid)) => halved(response).await,
        _ => response,
    }
}

/// The rate limit's headers for this request, or its refusal: a 429 with `Retry-After`.
fn limit(api: &MockApi) -> Result<HeaderMap, Response> {
    let mut headers = HeaderMap::new();
    let Some(bucket) = &api.bucket else { return Ok(headers) };
    let verdict = bucket.take();
    headers.insert("x-ratelimit-limit", HeaderValue::from(verdict.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(verdict.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(epoch_after(Duration::from_secs_f64(verdict.reset))));
    if verdict.allowed {
        return Ok(headers);
    }
    let mut refused = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
    refused.headers_mut().extend(headers);
    let after = verdict.reset.ceil().max(1.0) as u64;
    refused.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after));
    Err(refused)
}

/// Half the body, then a wait of `stall` before the rest: a response slow in its middle.
async fn stalled(response: Response, stall: Duration) -> Response {
    let (head, full) = response.into_parts();
    let full = axum::body::to_bytes(full, usize::MAX).await.unwrap_or_default();
    let (first, rest) = (full.slice(..full.len() / 2), full.slice(full.len() / 2..));
    let first = futures::stream::iter([Ok::<_, std::io::Error>(first)]);
    let rest = futures::stream::once(async move {
        tokio::time::sleep(stall).await;
        Ok(rest)
    });
    Response::from_parts(head, Body::from_stream(first.chain(rest)))
}

/// Half the body under a Content-Length that promises the whole: the body stream fails after
/// the first half and hyper drops the connection.
async fn cut(response: Response) -> Response {
    let (mut head, full) = response.into_parts();
    let full = axum::body::to_bytes(full, usize::MAX).await.unwrap_or_default();
    head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
    // The pause lets the head and the first half reach the client before the cut.
    let first = futures::stream::iter([Ok::<_, std::io::Error>(full.slice(..full.len() / 2))]);
    let cut = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut"))
    });
    Response::from_parts(head, Body::from_stream(first.chain(cut)))
}

/// Half the JSON, properly framed: a body complete as HTTP and broken as JSON.
async fn halved(response: Response) -> Response {
    let (mut head, full) = response.into_parts();
    let full = axum::body::to_bytes(full, usize::MAX).await.unwrap_or_default();
    let half = full.slice(..full.len() / 2);
    head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(half.len()));
    Response::from_parts(head, Body::from(half))
}
