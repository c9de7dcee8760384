//! Link-header pagination (RFC 8288): `Link: <https://api/items?page=3>; rel="next"`.
//!
//! A response may carry several `Link` headers and several links in each, in any order, with
//! extra parameters and quoted or unquoted `rel` values that may list several relations. The
//! parser is written here rather than taken from a crate because it must see every header
//! value, not only the first, and accept all of those forms. The next link resolves and
//! repeats are caught as for next URLs.

use crate::keys::Spanned;
use serde::{Deserialize, Serialize};

use super::next_url::follow;
use super::{
    first_with_limit, optional_limit, KeyReader, Next, PageRequest, PageResponse, Reading, Seen, Strategy, Style, Walk,
};
use crate::error::{JobError, PageError};
use crate::redact::Redactor;

/// `kind = "link_header"` in the job file.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    limit_param: Option<Spanned<String>>,
}

impl super::Spec for Spec {
    fn build(self, page_size: Option<u64>, keys: &dyn KeyReader) -> Result<Style, JobError> {
        let limit_param = optional_limit(keys, &self.limit_param, page_size)?;
        Ok(Style::LinkHeader(std::sync::Arc::new(Config { limit_param, page_size })))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Sent on the first request only, if the job sets a page size; next links carry their own.
    pub limit_param: Option<String>,
    pub page_size: Option<u64>,
}

impl Config {
    /// What the strategy does, in words, for `harvest check`.
    pub fn describe(&self) -> String {
        "link_header: follows Link rel=\"next\" until there is none".into()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LinkHeader {
    #[serde(skip)]
    pub seen: Seen,
}

impl LinkHeader {
    /// What this strategy reads from a response: the `rel="next"` link among every Link
    /// header's links, of a page with records.
    pub fn read(response: &PageResponse) -> Reading {
        let mut reading = Reading::of(response);
        if response.records > 0 {
            let values = response.headers.get_all(reqwest::header::LINK).iter().filter_map(|v| v.to_str().ok());
            reading.next = values
                .flat_map(parse_links)
                .find(|(_, rels)| rels.iter().any(|r| r.eq_ignore_ascii_case("next")))
                .map(|(target, _)| target);
        }
        reading
    }

    #[cfg(test)]
    fn next(&mut self, response: &PageResponse) -> Result<Next, PageError> {
        follow(&mut self.seen, &Self::read(response), response.secrets)
    }
}

impl Strategy for Walk<Config, LinkHeader> {
    fn first(&self) -> PageRequest {
        first_with_limit(self.config.limit_param.as_deref(), self.config.page_size)
    }

    fn advance(&mut self, reading: &Reading, secrets: &Redactor) -> Result<Next, PageError> {
        follow(&mut self.state.seen, reading, secrets)
    }

    fn seen(&mut self) -> Option<&mut Seen> {
        Some(&mut self.state.seen)
    }

    fn save(&self) -> serde_json::Value {
        self.saved("link_header")
    }
}

/// The links of one `Link` header value: each target with its relation types.
pub fn parse_links(value: &str) -> Vec<(String, Vec<String>)> {
    let mut links = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else { break };
        let target = rest[open + 1..open + close].trim().to_string();
        rest = &rest[open + close + 1..];
        // Parameters run to the next link, which starts with `,` followed by `<`; commas can
        // also appear inside quoted parameter values.
        let mut end = rest.len();
        let mut quoted = false;
        for (i, c) in rest.char_indices() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted && rest[i + 1..].trim_start().starts_with('<') => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let params = &rest[..end];
        rest = &rest[end..];
        let mut rels = Vec::new();
        for param in params.split(';') {
            let Some((name, val)) = param.split_once('=') else { continue };
            if name.trim().eq_ignore_ascii_case("rel") {
                let val = val.trim().trim_matches('"');
                rels.extend(val.split_whitespace().map(str::to_string));
            }
        }
        if !target.is_empty() || !rels.is_empty() {
            links.push((target, rels));
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::super::test_support::with_response;
    use super::*;
    use crate::paginate::StopReason;

    #[test]
    fn parses_several_links_quoted_and_unquoted() {
        let links = parse_links(
            r#"<https://a/x?page=1>; rel="first", <https://a/x?page=3>; rel=next; title="a, b", </x?page=9>; rel="last prev""#,
        );
        assert_eq!(
            links,
            vec![
                ("https://a/x?page=1".to_string(), vec!["first".to_string()]),
                ("https://a/x?page=3".to_string(), vec!["next".to_string()]),
                ("/x?page=9".to_string(), vec!["last".to_string(), "prev".to_string()]),
            ]
        );
    }

    #[test]
    fn finds_next_among_several_headers_and_resolves_it() {
        let headers = [("link", r#"</x?page=1>; rel="prev""#), ("link", r#"<?page=3>; rel="next""#)];
        let mut state = LinkHeader::default();
        let next = with_response("[1]", &headers, "http://h/api/x?page=2", 1, |r| state.next(r).unwrap());
        assert!(matches!(next, Next::Request(ref r) if r.url.as_ref().unwrap().as_str() == "http://h/api/x?page=3"));
    }

    #[test]
    fn an_empty_link_header_ends() {
        let mut state = LinkHeader::default();
        let next = with_response("[1]", &[("link", "")], "http://h/x", 1, |r| state.next(r).unwrap());
        assert_eq!(next, Next::Done(StopReason::NoNext));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

            /// Any header value, however broken, parses to some links without a panic.
            #[test]
            fn any_link_header_parses_without_a_panic(value in ".{0,200}") {
                let _ = parse_links(&value);
            }

            /// Link-header-shaped text (the characters that steer the parser, in any order).
            #[test]
            fn link_shaped_text_parses_and_keeps_whole_targets(parts in proptest::collection::vec(
                prop_oneof![Just("<"), Just(">"), Just(","), Just(";"), Just("\""), Just("rel="), Just("next"), Just(" "), Just("é"), Just("http://a/x?p=1")],
                0..40,
            )) {
                let value: String = parts.concat();
                for (target, _) in parse_links(&value) {
                    prop_assert!(!target.contains('>'), "{target:?} from {value:?}");
                }
            }
        }
    }
}
