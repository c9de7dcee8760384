//! Next-URL pagination: the body names the URL of the next page (`"next": "..."`).
//!
//! The URL may be absolute or relative (`/items?page=3`, `?page=3`, `items?page=3`); it is
//! resolved against the URL that answered (RFC 3986) and requested exactly as given, so a
//! cursor inside it is never encoded twice. A URL seen before in the partition is an error.

use crate::keys::Spanned;
use serde::{Deserialize, Serialize};

use url::Url;

use super::{
    first_with_limit, optional_limit, Fact, KeyReader, Next, PageRequest, PageResponse, Reading, Seen, StopReason,
    Strategy, Style, Walk,
};
use crate::error::{JobError, PageError};
use crate::jsonpath::JsonPath;
use crate::redact::Redactor;

/// `kind = "next_url"` in the job file.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[schemars(with = "Option<crate::keys::shapes::Fact>")]
    next: Option<Spanned<toml::Value>>,
    limit_param: Option<Spanned<String>>,
}

impl super::Spec for Spec {
    fn build(self, page_size: Option<u64>, keys: &dyn KeyReader) -> Result<Style, JobError> {
        Ok(Style::NextUrl(std::sync::Arc::new(Config {
            next: match &self.next {
                Some(next) => Fact::read(keys, next, "next")?
                    .ok_or_else(|| keys.error(next.span(), "next must name where the next URL is".into()))?,
                None => Fact::Body(JsonPath::parse("$.next").expect("a valid default path")),
            },
            limit_param: optional_limit(keys, &self.limit_param, page_size)?,
            page_size,
        })))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub next: Fact,
    /// Sent on the first request only, if the job sets a page size; next URLs carry their own.
    pub limit_param: Option<String>,
    pub page_size: Option<u64>,
}

impl Config {
    /// What the strategy does, in words, for `harvest check`.
    pub fn describe(&self) -> String {
        format!("next_url: follows the URL at {} until it is missing, null or empty", self.next)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NextUrl {
    #[serde(skip)]
    pub seen: Seen,
}

impl NextUrl {
    /// What this strategy reads from a response: the next link, of a page with records.
    pub fn read(config: &Config, response: &PageResponse) -> Result<Reading, PageError> {
        let mut reading = Reading::of(response);
        if response.records > 0 {
            reading.next = config.next.text(response)?;
        }
        Ok(reading)
    }

    pub fn advance(&mut self, reading: &Reading, secrets: &Redactor) -> Result<Next, PageError> {
        follow(&mut self.seen, reading, secrets)
    }

    #[cfg(test)]
    fn next(&mut self, config: &Config, response: &PageResponse) -> Result<Next, PageError> {
        self.advance(&Self::read(config, response)?, response.secrets)
    }
}

impl Strategy for Walk<Config, NextUrl> {
    fn first(&self) -> PageRequest {
        first_with_limit(self.config.limit_param.as_deref(), self.config.page_size)
    }

    fn advance(&mut self, reading: &Reading, secrets: &Redactor) -> Result<Next, PageError> {
        self.state.advance(reading, secrets)
    }

    fn seen(&mut self) -> Option<&mut Seen> {
        Some(&mut self.state.seen)
    }

    fn save(&self) -> serde_json::Value {
        self.saved("next_url")
    }
}

/// Move past a page of a strategy that follows links: remember the URL that answered, and
/// ask for the next link it read, resolved against that URL, unless it was seen before.
pub(super) fn follow(seen: &mut Seen, reading: &Reading, secrets: &Redactor) -> Result<Next, PageError> {
    seen.insert(reading.url.as_str(), secrets);
    if reading.records == 0 {
        return Ok(Next::Done(StopReason::NoRecords));
    }
    let Some(link) = &reading.next else { return Ok(Next::Done(StopReason::NoNext)) };
    super::within_limit("next link", link)?;
    let url = resolve(&reading.url, link)?;
    // Whatever its origin, harvest asks only the web for pages: never a file or another scheme.
    if !matches!(url.scheme(), "http" | "https") {
        let shown = secrets.url(&url);
        return Err(PageError::Pagination(format!("the next link {shown} is not http or https; it is not followed")));
    }
    if !seen.insert(url.as_str(), secrets) {
        return Err(PageError::Repeated { what: "next link", value: url.to_string() });
    }
    Ok(Next::Request(PageRequest { url: Some(url), ..Default::default() }))
}

fn resolve(base: &Url, link: &str) -> Result<Url, PageError> {
    base.join(link).map_err(|e| PageError::Pagination(format!("the next link {link:?} is not a valid URL: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::with_response;
    use super::*;

    fn follow_from(base: &str, next: &str) -> String {
        let config =
            Config { next: Fact::Body(JsonPath::parse("$.next").unwrap()), limit_param: None, page_size: None };
        let body = serde_json::json!({ "next": next }).to_string();
        let mut state = NextUrl::default();
        match with_response(&body, &[], base, 1, |r| state.next(&config, r).unwrap()) {
            Next::Request(r) => r.url.unwrap().to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resolves_relative_links_against_the_response_url() {
        let base = "http://h:1/api/items?page=2";
        assert_eq!(follow_from(base, "/items?page=3"), "http://h:1/items?page=3");
        assert_eq!(follow_from(base, "?page=3"), "http://h:1/api/items?page=3");
        assert_eq!(follow_from(base, "items?page=3"), "http://h:1/api/items?page=3");
        assert_eq!(follow_from(base, "https://other/x?c=a%2Bb"), "https://other/x?c=a%2Bb");
    }

    #[test]
    fn a_link_to_another_scheme_is_refused() {
        let config =
            Config { next: Fact::Body(JsonPath::parse("$.next").unwrap()), limit_param: None, page_size: None };
        for link in ["file:///etc/passwd", "ftp://h/x", "javascript:alert(1)", "data:,x"] {
            let body = serde_json::json!({ "next": link }).to_string();
            let err = with_response(&body, &[], "http://h/x", 1, |r| NextUrl::default().next(&config, r)).unwrap_err();
            assert!(err.to_string().contains("is not http or https"), "{link}: {err}");
        }
    }

    #[test]
    fn a_link_to_the_page_itself_is_an_error() {
        let config =
            Config { next: Fact::Body(JsonPath::parse("$.next").unwrap()), limit_param: None, page_size: None };
        let mut state = NextUrl::default();
        let err = with_response(r#"{"next": "?page=0"}"#, &[], "http://h/x?page=0", 1, |r| state.next(&config, r))
            .unwrap_err();
        assert!(matches!(err, PageError::Repeated { .. }));
    }

    #[test]
    fn a_next_link_past_64_kib_is_an_error() {
        let config =
            Config { next: Fact::Body(JsonPath::parse("$.next").unwrap()), limit_param: None, page_size: None };
        let link = format!("/items?c={}", "x".repeat(64 * 1024));
        let body = serde_json::json!({ "next": link }).to_string();
        let err = with_response(&body, &[], "http://h/x", 1, |r| NextUrl::default().next(&config, r)).unwrap_err();
        assert!(err.to_string().contains("next link is 65545 bytes long"), "{err}");
    }
}
