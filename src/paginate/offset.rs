//! Offset pagination: `?offset=200&limit=100`.
//!
//! Offsets advance by the records actually received, never by the size asked, because
//! servers cap page sizes silently; the size actually served becomes the step. With a total,
//! a short page is a cap and the harvest goes on until the total is reached. Without one, a
//! short page may be the end or a cap, so one more request decides: an empty page (or a 404,
//! 400 or 422, which the pipeline maps to the same end) confirms the end; records mean a cap.

use crate::keys::Spanned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    place, Fact, KeyReader, Next, Numbered, PageRange, PageRequest, PageResponse, ParamsIn, Reading, StopReason, Style,
};
use crate::error::{JobError, PageError};

/// `kind = "offset"` in the job file.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    offset_param: Option<Spanned<String>>,
    limit_param: Option<Spanned<String>>,
    start: Option<Spanned<u64>>,
    #[schemars(with = "Option<crate::keys::shapes::Fact>")]
    total: Option<Spanned<toml::Value>>,
    params_in: Option<Spanned<String>>,
}

impl super::Spec for Spec {
    fn build(self, page_size: Option<u64>, keys: &dyn KeyReader) -> Result<Style, JobError> {
        Ok(Style::Offset(std::sync::Arc::new(Config {
            offset_param: keys.text_or(&self.offset_param, "offset")?,
            limit_param: keys.text_or(&self.limit_param, "limit")?,
            start: self.start.map_or(0, Spanned::into_inner),
            page_size: page_size.unwrap_or(100),
            total: Fact::optional(keys, &self.total, "total")?,
            params_in: place(keys, &self.params_in, "params_in", &[ParamsIn::Query, ParamsIn::Body], ParamsIn::Query)?,
        })))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub offset_param: String,
    pub limit_param: String,
    pub start: u64,
    pub page_size: u64,
    /// Where the total record count is, if the server sends one.
    pub total: Option<Fact>,
    pub params_in: ParamsIn,
}

impl Config {
    /// What the strategy does, in words, for `harvest check`.
    pub fn describe(&self) -> String {
        format!(
            "offset: {}={} and {}={} {}, offsets advance by the records received; stops on an empty page{}",
            self.offset_param,
            self.start,
            self.limit_param,
            self.page_size,
            self.params_in.place(),
            match &self.total {
                Some(t) => format!(" or when the total ({t}) is reached"),
                None => ", or when a short page is followed by an empty page, 404, 400 or 422".into(),
            }
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offset {
    /// The offset the next request asks for.
    pub offset: u64,
    /// The page size the server is believed to serve: the size asked until a shorter page
    /// shows a cap.
    pub served: u64,
    pub total: Option<u64>,
    /// The last page was short and no total says whether it was the end.
    pub confirming: bool,
}

impl Offset {
    pub fn new(config: &Config) -> Self {
        Offset { offset: config.start, served: config.page_size, total: None, confirming: false }
    }

    /// The request for the page at `offset`, whatever the state.
    pub fn request_at(config: &Config, offset: u64) -> PageRequest {
        Self::request_span(config, offset, config.page_size)
    }

    /// The request for `limit` records from `offset`: the rest of a page a capped server
    /// served in part.
    pub fn request_span(config: &Config, offset: u64, limit: u64) -> PageRequest {
        let mut request = PageRequest::default();
        request.set(config.params_in, &config.offset_param, Value::from(offset));
        request.set(config.params_in, &config.limit_param, Value::from(limit));
        request
    }

    /// What this strategy reads from a response: the records and the total.
    pub fn read(config: &Config, response: &PageResponse) -> Result<Reading, PageError> {
        let total = match &config.total {
            Some(fact) => fact.count(response)?,
            None => None,
        };
        Ok(Reading { total, ..Reading::of(response) })
    }
}

impl Numbered for Offset {
    type Config = Config;
    const KIND: &'static str = "offset";

    fn request(&self, config: &Config) -> PageRequest {
        Self::request_at(config, self.offset)
    }

    /// Move past a page, judged by what was read of it, in order.
    fn advance(&mut self, config: &Config, reading: &Reading) -> Next {
        if let Some(total) = reading.total {
            self.total = Some(total);
        }
        let received = reading.records;
        if received == 0 {
            return Next::Done(if self.confirming {
                StopReason::EndConfirmed { status: reading.status }
            } else {
                StopReason::NoRecords
            });
        }
        self.offset += received;
        if let Some(total) = self.total {
            if self.offset >= total + config.start {
                return Next::Done(StopReason::TotalReached { total });
            }
        }
        // A short page: with a total it is a cap; without one it needs confirming.
        self.confirming = received < self.served && self.total.is_none();
        self.served = self.served.min(received);
        Next::Request(self.request(config))
    }

    fn range(&self, config: &Config) -> PageRange {
        PageRange { start: self.offset, step: self.served.max(1), end: self.total.map(|t| t + config.start) }
    }

    /// A 404, 400 or 422 here would be past the end: after a short page, or anywhere after
    /// the first page when no total says how far the data goes.
    fn end_possible(&self, config: &Config) -> bool {
        self.confirming || (self.total.is_none() && self.offset > config.start)
    }

    fn expected(&self) -> Option<u64> {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::with_response;
    use super::*;
    use crate::jsonpath::JsonPath;

    fn config(total: bool) -> Config {
        Config {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            start: 0,
            page_size: 100,
            total: total.then(|| Fact::Body(JsonPath::parse("$.total").unwrap())),
            params_in: ParamsIn::Query,
        }
    }

    fn feed(state: &mut Offset, config: &Config, body: &str, records: u64) -> Next {
        with_response(body, &[], "http://x/", records, |r| state.advance(config, &Offset::read(config, r).unwrap()))
    }

    fn asks(next: &Next) -> Vec<(String, String)> {
        match next {
            Next::Request(r) => r.query.clone(),
            Next::Done(reason) => panic!("done: {reason}"),
        }
    }

    #[test]
    fn short_page_without_total_is_confirmed_by_one_more_request() {
        let c = config(false);
        let mut s = Offset::new(&c);
        assert_eq!(asks(&feed(&mut s, &c, "{}", 100))[0], ("offset".into(), "100".into()));
        assert_eq!(asks(&feed(&mut s, &c, "{}", 50))[0], ("offset".into(), "150".into()));
        assert!(s.confirming);
        assert_eq!(feed(&mut s, &c, "{}", 0), Next::Done(StopReason::EndConfirmed { status: 200 }));
    }

    #[test]
    fn a_capped_server_is_followed_by_the_records_received() {
        let c = config(false);
        let mut s = Offset::new(&c);
        // Asked 100, the server serves 30 a page.
        for expected in [30, 60, 90] {
            let q = asks(&feed(&mut s, &c, "{}", 30));
            assert_eq!(q[0].1, expected.to_string());
            assert_eq!(q[1].1, "100", "the size asked stays the configured one");
        }
        assert!(!s.confirming, "once the cap is known, a full capped page is not short");
        assert_eq!(s.range(&c), PageRange { start: 90, step: 30, end: None });
    }

    #[test]
    fn with_a_total_a_short_page_is_a_cap_and_the_total_ends() {
        let c = config(true);
        let mut s = Offset::new(&c);
        asks(&feed(&mut s, &c, r#"{"total": 75}"#, 40));
        assert!(!s.confirming);
        assert_eq!(feed(&mut s, &c, r#"{"total": 75}"#, 35), Next::Done(StopReason::TotalReached { total: 75 }));
    }
}
