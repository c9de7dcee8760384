//! A response body as the fetcher reads it: refused past `max_body` (after decompression,
//! so a gzip bomb is an error, not an out-of-memory), decompressed when a server compressed
//! it without saying so, and quoted in errors as a short excerpt with secrets masked.

use std::io::Read;

use bytes::Bytes;

use super::{Attempt, Fetcher, EXCERPT_CHARS};
use crate::error::FetchErrorKind;

/// Whether `error` comes of a TLS certificate that failed verification, somewhere in its
/// causes. An `io::Error` hides the error it wraps from `source()` (hyper wraps rustls's error
/// in two of them): look inside it instead.
fn untrusted_certificate(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        let tls = e.downcast_ref::<rustls::Error>();
        if matches!(tls, Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)) {
            return true;
        }
        cause = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

impl Fetcher {
    pub(super) async fn read_body(&self, mut response: reqwest::Response) -> Result<Bytes, Attempt> {
        if response.content_length().is_some_and(|len| len > self.max_body) {
            return Err(Attempt::Fail(FetchErrorKind::BodyTooLarge { limit: self.max_body }));
        }
        // Sized from Content-Length when given, so the body is copied once, not regrown.
        let expected = response.content_length().unwrap_or(0).min(self.max_body);
        let mut body = bytes::BytesMut::with_capacity(expected as usize);
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() as u64 + chunk.len() as u64 > self.max_body {
                        return Err(Attempt::Fail(FetchErrorKind::BodyTooLarge { limit: self.max_body }));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(e) => return Err(self.transport_error(&e, true)),
            }
        }
    }

    /// Classify a transport failure; `reading_body`: it came while the body was streaming.
    pub(super) fn transport_error(&self, e: &reqwest::Error, reading_body: bool) -> Attempt {
        // reqwest's messages name the URL; show it redacted like every other.
        let chain = |e: &reqwest::Error| {
            let text = crate::error::chain(e);
            let text = match e.url() {
                Some(url) => text.replace(url.as_str(), &self.redactor.url(url)),
                None => text,
            };
            self.redactor.redact(&text).into_owned()
        };
        // A request that cannot be built (a scheme other than http or https) or a certificate
        // that fails verification comes out the same however often it is sent.
        if e.is_builder() || untrusted_certificate(e) {
            return Attempt::Fail(FetchErrorKind::Transport(chain(e)));
        }
        let (cause, kind) = if e.is_timeout() {
            ("timeout", FetchErrorKind::Timeout(self.timeout))
        } else if e.is_connect() {
            ("connect", FetchErrorKind::Transport(chain(e)))
        } else if reading_body || e.is_body() || e.is_decode() {
            ("body_cut_short", FetchErrorKind::Transport(format!("the body was cut short: {}", chain(e))))
        } else {
            ("transport", FetchErrorKind::Transport(chain(e)))
        };
        Attempt::Retry { kind, cause: cause.to_string(), wait: None }
    }

    /// Some servers compress without saying so: trust the bytes.
    pub(super) fn undeclared_compression(&self, body: Bytes) -> Result<Bytes, FetchErrorKind> {
        let limit = self.max_body + 1;
        let mut out = Vec::new();
        let read = match body.as_ref() {
            [0x1f, 0x8b, ..] => flate2::read::MultiGzDecoder::new(body.as_ref()).take(limit).read_to_end(&mut out),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => match zstd::stream::read::Decoder::new(body.as_ref()) {
                Ok(d) => d.take(limit).read_to_end(&mut out),
                Err(e) => Err(e),
            },
            _ => return Ok(body),
        };
        match read {
            Ok(_) if out.len() as u64 > self.max_body => Err(FetchErrorKind::BodyTooLarge { limit: self.max_body }),
            Ok(_) => Ok(Bytes::from(out)),
            // Not compressed after all: let the JSON check report it.
            Err(_) => Ok(body),
        }
    }

    /// The start of a body, whitespace folded and secrets masked, for messages.
    pub fn excerpt(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_CHARS * 4)]);
        let text: String = text.chars().take(EXCERPT_CHARS).collect();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        self.redactor.redact(&text).into_owned()
    }
}
