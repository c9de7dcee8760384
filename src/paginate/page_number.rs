//! Page-number pagination: `?page=3&per_page=100`.
//!
//! The same end rules as offset pagination, counted in pages: with `total_pages` (or a
//! record `total`) the harvest stops when it is reached and a short page is a cap; without
//! either, a short page is confirmed by one more request. A capped server keeps numbering
//! its pages by the size it serves, so page numbers simply go up by one.

use crate::keys::Spanned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    place, Fact, KeyReader, Next, Numbered, PageRange, PageRequest, PageResponse, ParamsIn, Reading, StopReason, Style,
};
use crate::error::{JobError, PageError};

/// `kind = "page"` in the job file.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    page_param: Option<Spanned<String>>,
    /// An empty name leaves the page size to the server.
    size_param: Option<Spanned<String>>,
    start: Option<Spanned<u64>>,
    #[schemars(with = "Option<crate::keys::shapes::Fact>")]
    total_pages: Option<Spanned<toml::Value>>,
    #[schemars(with = "Option<crate::keys::shapes::Fact>")]
    total: Option<Spanned<toml::Value>>,
    params_in: Option<Spanned<String>>,
}

impl super::Spec for Spec {
    fn build(self, page_size: Option<u64>, keys: &dyn KeyReader) -> Result<Style, JobError> {
        Ok(Style::Page(std::sync::Arc::new(Config {
            page_param: keys.text_or(&self.page_param, "page")?,
            size_param: match &self.size_param {
                Some(s) if s.get_ref().is_empty() => None,
                other => Some(keys.text_or(other, "per_page")?),
            },
            start: self.start.map_or(1, Spanned::into_inner),
            page_size: Some(page_size.unwrap_or(100)),
            total_pages: Fact::optional(keys, &self.total_pages, "total_pages")?,
            total: Fact::optional(keys, &self.total, "total")?,
            params_in: place(keys, &self.params_in, "params_in", &[ParamsIn::Query, ParamsIn::Body], ParamsIn::Query)?,
        })))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub page_param: String,
    /// The page-size parameter; `None` leaves the size to the server.
    pub size_param: Option<String>,
    pub start: u64,
    pub page_size: Option<u64>,
    pub total_pages: Option<Fact>,
    pub total: Option<Fact>,
    pub params_in: ParamsIn,
}

impl Config {
    /// What the strategy does, in words, for `harvest check`.
    pub fn describe(&self) -> String {
        format!(
            "page: {}={}{} {}; stops on an empty page{}",
            self.page_param,
            self.start,
            match (&self.size_param, self.page_size) {
                (Some(p), Some(s)) => format!(" and {p}={s}"),
                _ => String::new(),
            },
            self.params_in.place(),
            match (&self.total_pages, &self.total) {
                (Some(t), _) => format!(" or when the page count ({t}) is reached"),
                (None, Some(t)) => format!(" or when the total ({t}) is reached"),
                (None, None) => ", or when a short page is followed by an empty page, 404, 400 or 422".into(),
            }
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    /// The page number the next request asks for.
    pub page: u64,
    /// Records received so far.
    pub received: u64,
    /// The page size the server is believed to serve (unknown until the first page when the
    /// job sets none).
    pub served: Option<u64>,
    pub total_pages: Option<u64>,
    pub total: Option<u64>,
    pub confirming: bool,
}

impl Page {
    pub fn new(config: &Config) -> Self {
        Page {
            page: config.start,
            received: 0,
            served: config.page_size,
            total_pages: None,
            total: None,
            confirming: false,
        }
    }

    /// The request for page number `page`, whatever the state.
    pub fn request_at(config: &Config, page: u64) -> PageRequest {
        let mut request = PageRequest::default();
        request.set(config.params_in, &config.page_param, Value::from(page));
        if let (Some(name), Some(size)) = (&config.size_param, config.page_size) {
            request.set(config.params_in, name, Value::from(size));
        }
        request
    }

    /// What this strategy reads from a response.
    pub fn read(config: &Config, response: &PageResponse) -> Result<Reading, PageError> {
        let total_pages = match &config.total_pages {
            Some(fact) => fact.count(response)?,
            None => None,
        };
        let total = match &config.total {
            Some(fact) => fact.count(response)?,
            None => None,
        };
        Ok(Reading { total, total_pages, ..Reading::of(response) })
    }
}

impl Numbered for Page {
    type Config = Config;
    const KIND: &'static str = "page";

    fn request(&self, config: &Config) -> PageRequest {
        Self::request_at(config, self.page)
    }

    /// Move past a page, judged by what was read of it, in order.
    fn advance(&mut self, config: &Config, reading: &Reading) -> Next {
        if let Some(pages) = reading.total_pages {
            self.total_pages = Some(pages);
        }
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
        self.page += 1;
        self.received += received;
        if let Some(pages) = self.total_pages {
            if self.page >= config.start + pages {
                return Next::Done(StopReason::TotalReached { total: pages });
            }
        }
        if let Some(total) = self.total {
            if self.received >= total {
                return Next::Done(StopReason::TotalReached { total });
            }
        }
        let announced = self.total_pages.is_some() || self.total.is_some();
        let served = self.served.unwrap_or(received);
        self.confirming = received < served && !announced;
        self.served = Some(served.min(received));
        Next::Request(self.request(config))
    }

    fn range(&self, config: &Config) -> PageRange {
        let end = self.total_pages.map(|pages| pages + config.start).or_else(|| {
            let served = self.served.filter(|s| *s > 0)?;
            let remaining = self.total?.saturating_sub(self.received);
            Some(self.page + remaining.div_ceil(served))
        });
        PageRange { start: self.page, step: 1, end }
    }

    /// A 404, 400 or 422 here would be past the end (see offset's).
    fn end_possible(&self, config: &Config) -> bool {
        self.confirming || (self.total_pages.is_none() && self.total.is_none() && self.page > config.start)
    }

    fn expected(&self) -> Option<u64> {
        self.total.or_else(|| Some(self.total_pages? * self.served?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::with_response;
    use super::*;
    use crate::jsonpath::JsonPath;

    fn config() -> Config {
        Config {
            page_param: "page".into(),
            size_param: Some("per_page".into()),
            start: 1,
            page_size: Some(10),
            total_pages: Some(Fact::Body(JsonPath::parse("$.total_pages").unwrap())),
            total: None,
            params_in: ParamsIn::Query,
        }
    }

    #[test]
    fn total_pages_ends_without_an_extra_request() {
        let c = config();
        let mut s = Page::new(&c);
        let body = r#"{"total_pages": 2}"#;
        let next = with_response(body, &[], "http://x/", 10, |r| s.advance(&c, &Page::read(&c, r).unwrap()));
        assert!(matches!(next, Next::Request(ref r) if r.query[0] == ("page".into(), "2".into())));
        let next = with_response(body, &[], "http://x/", 3, |r| s.advance(&c, &Page::read(&c, r).unwrap()));
        assert_eq!(next, Next::Done(StopReason::TotalReached { total: 2 }));
    }

    #[test]
    fn without_totals_a_short_page_is_confirmed() {
        let mut c = config();
        c.total_pages = None;
        let mut s = Page::new(&c);
        with_response("[]", &[], "http://x/", 4, |r| s.advance(&c, &Page::read(&c, r).unwrap()));
        assert!(s.confirming);
        let next = with_response("[]", &[], "http://x/", 0, |r| s.advance(&c, &Page::read(&c, r).unwrap()));
        assert_eq!(next, Next::Done(StopReason::EndConfirmed { status: 200 }));
    }
}
