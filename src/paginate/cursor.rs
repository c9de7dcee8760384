//! Cursor pagination: the server hands out an opaque cursor for the next page.
//!
//! The cursor comes from a body path (`$.next_cursor`, `$.meta.next`, GraphQL's
//! `$.data.x.pageInfo.endCursor`) or a response header, and goes back as a query parameter,
//! a JSON body field (a dotted path) or a request header. It is sent back exactly as
//! received; a query parameter encodes it exactly once. The partition ends on an empty page,
//! a false `has_more`, or a missing, null or empty cursor; a cursor seen before is an error.

use crate::keys::Spanned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    optional_limit, place, Fact, KeyReader, Next, PageRequest, PageResponse, ParamsIn, Reading, Seen, StopReason,
    Strategy, Style, Walk,
};
use crate::error::{JobError, PageError};
use crate::jsonpath::JsonPath;
use crate::redact::Redactor;

/// `kind = "cursor"` in the job file.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    cursor_param: Option<Spanned<String>>,
    /// Defaults to `params_in`.
    cursor_in: Option<Spanned<String>>,
    #[schemars(with = "Option<crate::keys::shapes::Fact>")]
    next: Option<Spanned<toml::Value>>,
    /// Short for `next = { header = "..." }`.
    next_header: Option<Spanned<String>>,
    #[schemars(with = "Option<crate::keys::shapes::Fact>")]
    has_more: Option<Spanned<toml::Value>>,
    limit_param: Option<Spanned<String>>,
    params_in: Option<Spanned<String>>,
}

impl super::Spec for Spec {
    fn build(self, page_size: Option<u64>, keys: &dyn KeyReader) -> Result<Style, JobError> {
        let next = match (&self.next, &self.next_header) {
            (Some(n), Some(_)) => return Err(keys.error(n.span(), "give either next or next_header, not both".into())),
            (None, Some(header)) => Fact::Header(keys.text(header)?),
            (Some(next), None) => Fact::read(keys, next, "next")?
                .ok_or_else(|| keys.error(next.span(), "next must name where the next cursor is".into()))?,
            (None, None) => Fact::Body(JsonPath::parse("$.next_cursor").expect("a valid default path")),
        };
        let params_in = place(keys, &self.params_in, "params_in", &[ParamsIn::Query, ParamsIn::Body], ParamsIn::Query)?;
        Ok(Style::Cursor(std::sync::Arc::new(Config {
            cursor_param: keys.text_or(&self.cursor_param, "cursor")?,
            cursor_in: place(
                keys,
                &self.cursor_in,
                "cursor_in",
                &[ParamsIn::Query, ParamsIn::Body, ParamsIn::Header],
                params_in,
            )?,
            next,
            has_more: Fact::optional(keys, &self.has_more, "has_more")?,
            limit_param: optional_limit(keys, &self.limit_param, page_size)?,
            page_size,
            params_in,
        })))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub cursor_param: String,
    pub cursor_in: ParamsIn,
    pub next: Fact,
    pub has_more: Option<Fact>,
    /// Where a page-size parameter goes, if the job sets a page size.
    pub limit_param: Option<String>,
    pub page_size: Option<u64>,
    pub params_in: ParamsIn,
}

impl Config {
    /// What the strategy does, in words, for `harvest check`.
    pub fn describe(&self) -> String {
        format!(
            "cursor: {} sent {}, next cursor from {}{}; stops on an empty page or a missing cursor",
            self.cursor_param,
            self.cursor_in.place(),
            match &self.next {
                Fact::Body(p) => format!("the body at {p}"),
                other => other.to_string(),
            },
            match &self.has_more {
                Some(h) => format!(", or when {h} is false"),
                None => String::new(),
            }
        )
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cursor {
    /// The cursor the next request sends; `None` on the first request.
    pub cursor: Option<String>,
    #[serde(skip)]
    pub seen: Seen,
}

impl Cursor {
    pub fn request(&self, config: &Config) -> PageRequest {
        let mut request = PageRequest::default();
        if let (Some(name), Some(size)) = (&config.limit_param, config.page_size) {
            request.set(config.params_in, name, Value::from(size));
        }
        if let Some(cursor) = &self.cursor {
            request.set(config.cursor_in, &config.cursor_param, Value::String(cursor.clone()));
        }
        request
    }

    /// What this strategy reads from a response: `has_more` and the next cursor, of a page
    /// with records (an empty page ends whatever they say).
    pub fn read(config: &Config, response: &PageResponse) -> Result<Reading, PageError> {
        let mut reading = Reading::of(response);
        if response.records == 0 {
            return Ok(reading);
        }
        if let Some(fact) = &config.has_more {
            reading.has_more = fact.flag(response)?;
            if reading.has_more == Some(false) {
                return Ok(reading);
            }
        }
        reading.next = config.next.text(response)?;
        Ok(reading)
    }

    pub fn advance(&mut self, config: &Config, reading: &Reading, secrets: &Redactor) -> Result<Next, PageError> {
        if reading.records == 0 {
            return Ok(Next::Done(StopReason::NoRecords));
        }
        if reading.has_more == Some(false) {
            return Ok(Next::Done(StopReason::HasMoreFalse));
        }
        let Some(cursor) = &reading.next else { return Ok(Next::Done(StopReason::NoNext)) };
        super::within_limit("next cursor", cursor)?;
        if !self.seen.insert(cursor, secrets) {
            return Err(PageError::Repeated { what: "cursor", value: cursor.clone() });
        }
        self.cursor = Some(cursor.clone());
        Ok(Next::Request(self.request(config)))
    }

    #[cfg(test)]
    fn next(&mut self, config: &Config, response: &PageResponse) -> Result<Next, PageError> {
        self.advance(config, &Self::read(config, response)?, response.secrets)
    }
}

impl Strategy for Walk<Config, Cursor> {
    fn first(&self) -> PageRequest {
        self.state.request(&self.config)
    }

    fn advance(&mut self, reading: &Reading, secrets: &Redactor) -> Result<Next, PageError> {
        self.state.advance(&self.config, reading, secrets)
    }

    fn seen(&mut self) -> Option<&mut Seen> {
        Some(&mut self.state.seen)
    }

    fn save(&self) -> serde_json::Value {
        self.saved("cursor")
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::with_response;
    use super::*;

    fn config(next: Fact, has_more: Option<&str>) -> Config {
        Config {
            cursor_param: "cursor".into(),
            cursor_in: ParamsIn::Query,
            next,
            has_more: has_more.map(|p| Fact::Body(JsonPath::parse(p).unwrap())),
            limit_param: None,
            page_size: None,
            params_in: ParamsIn::Query,
        }
    }

    #[test]
    fn follows_body_cursors_until_null_empty_or_missing() {
        let c = config(Fact::Body(JsonPath::parse("$.next").unwrap()), None);
        for last in [r#"{"next": null}"#, r#"{"next": ""}"#, "{}"] {
            let mut s = Cursor::default();
            let next = with_response(r#"{"next": "a+b/c="}"#, &[], "http://x/", 1, |r| s.next(&c, r).unwrap());
            assert_eq!(
                next,
                Next::Request(PageRequest { query: vec![("cursor".into(), "a+b/c=".into())], ..Default::default() })
            );
            let next = with_response(last, &[], "http://x/", 1, |r| s.next(&c, r).unwrap());
            assert_eq!(next, Next::Done(StopReason::NoNext));
        }
    }

    #[test]
    fn a_cursor_past_64_kib_is_an_error_and_one_at_it_is_followed() {
        let c = config(Fact::Body(JsonPath::parse("$.next").unwrap()), None);
        let at = "c".repeat(64 * 1024);
        let body = format!(r#"{{"next": "{at}"}}"#);
        assert!(with_response(&body, &[], "http://x/", 1, |r| Cursor::default().next(&c, r)).is_ok());
        let body = format!(r#"{{"next": "{at}c"}}"#);
        let error = with_response(&body, &[], "http://x/", 1, |r| Cursor::default().next(&c, r)).unwrap_err();
        assert!(error.to_string().contains("65537 bytes long, more than the 64 KiB"), "{error}");
    }

    #[test]
    fn has_more_false_as_bool_or_string_ends() {
        let c = config(Fact::Body(JsonPath::parse("$.next").unwrap()), Some("$.has_more"));
        for body in [r#"{"next": "x", "has_more": false}"#, r#"{"next": "x", "has_more": "false"}"#] {
            let mut s = Cursor::default();
            let next = with_response(body, &[], "http://x/", 1, |r| s.next(&c, r).unwrap());
            assert_eq!(next, Next::Done(StopReason::HasMoreFalse));
        }
    }

    #[test]
    fn header_cursor_and_repeats() {
        let c = config(Fact::Header("X-Next-Cursor".into()), None);
        let mut s = Cursor::default();
        let headers = [("x-next-cursor", "abc")];
        with_response("[1]", &headers, "http://x/", 1, |r| s.next(&c, r).unwrap());
        let err = with_response("[1]", &headers, "http://x/", 1, |r| s.next(&c, r).unwrap_err());
        assert!(matches!(err, PageError::Repeated { what: "cursor", .. }));
    }
}
