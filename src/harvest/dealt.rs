//! How a shard's share of a run is dealt to it ([`Deal`]): whole partitions by the hash of
//! their key, or, with fewer partitions than shards, every partition's pages.
//!
//! A partition's pages dealt out among the shards of a run: page p (1-based) to shard
//! (p − 1) mod N. Each shard asks only for its own pages, learns where the pages end from the
//! first one it gets (the total the server announces), and stops at the first of its pages
//! past the end, so no page is fetched by two shards and none by no shard.
//!
//! With offset pagination a page is the span of `page_size` records from `start + k ×
//! page_size`; a server that caps its page size serves a span in several requests, each
//! asking for the rest of it, so the spans stay the same on every shard whatever the cap.
//! Page numbers need no such care: a capped server numbers its pages by the size it serves.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::page::{PageFailure, PageOut};
use super::pages::{Ask, Course, Pages};
use super::{Harvest, Tally};
use crate::error::Error;
use crate::paginate::offset::Offset;
use crate::paginate::page_number::Page;
use crate::paginate::{PageRequest, Reading, StopReason, Style};
use crate::plan::Plan;
use crate::shard::Shard;

/// Where a shard stands in a dealt partition, as its checkpoint keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Dealt {
    /// The next page this shard takes, counted from 0 over all shards' pages.
    slot: u64,
    /// Offset pagination: records of that page already written.
    within: u64,
    /// Where the pages end, in the strategy's unit (an offset or a page number), once a page
    /// said so; and the total it announced, for the report.
    end: Option<u64>,
    total: Option<u64>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct SavedDeal {
    pub(super) dealt: Dealt,
    pub(super) done: Option<StopReason>,
}

/// How partitions are dealt out among the shards of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deal {
    /// Whole partitions, each to the shard its key hashes to.
    ByKey(Shard),
    /// Every partition's pages, page p (1-based) to shard (p − 1) mod N.
    ByPage(Shard),
}

impl Deal {
    /// How `plan` is shared among its shards: by page when there are fewer partitions than
    /// shards and their pages can be dealt out (see [`pages_can_be_dealt`]), else by key.
    pub fn of(plan: &Plan) -> Option<Deal> {
        let shard = plan.shard.as_ref()?.shard;
        match plan.partitions.count() < u64::from(shard.count) && pages_can_be_dealt(plan).is_ok() {
            true => Some(Deal::ByPage(shard)),
            false => Some(Deal::ByKey(shard)),
        }
    }

    /// Whether this shard harvests (some of) the partition with `key`.
    pub fn takes(self, key: &str) -> bool {
        match self {
            Deal::ByKey(shard) => shard.owns(key),
            Deal::ByPage(_) => true,
        }
    }

    /// In words, for `harvest check` and the log.
    pub fn describe(self, plan: &Plan) -> String {
        match self {
            Deal::ByKey(shard) => format!(
                "shard {} of {}: the partitions whose key hashes to it (xxh64 of the key, mod {})",
                shard.index, shard.count, shard.count
            ),
            Deal::ByPage(shard) => format!(
                "shard {} of {}: {} partition{} fewer than the shards, so pages are dealt out: page p (from 1) \
                 to shard (p - 1) mod {}, this shard's from page {}",
                shard.index,
                shard.count,
                plan.partitions.count(),
                if plan.partitions.count() == 1 { " is" } else { "s are" },
                shard.count,
                shard.index + 1
            ),
        }
    }
}

/// Pages can be dealt out among shards when each can be asked for on its own and the server
/// says where they end: offset or page pagination with a total. Not with `max_records` (which
/// page holds the last record wanted depends on the pages before) nor `[incremental]` (whose
/// marks must come from one worker's whole view of a partition). `Err` says why not.
pub fn pages_can_be_dealt(plan: &Plan) -> Result<(), &'static str> {
    let with_total = match &plan.pagination.style {
        Style::Offset(c) => c.total.is_some(),
        Style::Page(c) => c.total.is_some() || c.total_pages.is_some(),
        _ => return Err("only offset and page pagination have pages that can be asked for on their own"),
    };
    if !with_total {
        return Err("without a total, no shard would know where the pages end");
    }
    if plan.pagination.max_records.is_some() {
        return Err("max_records depends on every page before");
    }
    if plan.incremental.is_some() {
        return Err("an incremental mark needs one worker's whole view of a partition");
    }
    Ok(())
}

impl Dealt {
    /// The request for the rest of page `slot` from `within`.
    fn request(self, style: &Style) -> PageRequest {
        match style {
            Style::Offset(c) => Offset::request_span(c, self.position(style), c.page_size - self.within),
            Style::Page(c) => Page::request_at(c, self.position(style)),
            _ => unreachable!("only offset and page pagination are dealt out"),
        }
    }

    /// Where that request starts, in the strategy's unit.
    fn position(self, style: &Style) -> u64 {
        match style {
            Style::Offset(c) => c.start + self.slot * c.page_size + self.within,
            Style::Page(c) => c.start + self.slot,
            _ => unreachable!("only offset and page pagination are dealt out"),
        }
    }

    fn past_end(self, style: &Style) -> bool {
        self.end.is_some_and(|end| self.position(style) >= end)
    }

    /// Learn where the pages end from a page's facts (the first page that says wins).
    fn learn(&mut self, style: &Style, facts: &Reading) {
        if self.end.is_some() {
            return;
        }
        match style {
            Style::Offset(c) => {
                if let Some(total) = facts.total {
                    (self.end, self.total) = (Some(c.start + total), Some(total));
                }
            }
            Style::Page(c) => match (facts.total_pages, facts.total) {
                (Some(pages), total) => (self.end, self.total) = (Some(c.start + pages), total.or(Some(pages))),
                (None, Some(total)) if facts.records > 0 => {
                    // This page's size is the server's, unless it is the last page: a page
                    // size that fits fewer pages than this one's number says so.
                    let pages = match (self.slot + 1).saturating_mul(facts.records) < total {
                        true => total.div_ceil(facts.records),
                        false => self.slot + 1,
                    };
                    (self.end, self.total) = (Some(c.start + pages), Some(total));
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn stop(self) -> StopReason {
        match self.total {
            Some(total) => StopReason::TotalReached { total },
            None => StopReason::NoRecords,
        }
    }
}

/// A shard's share of a dealt partition: its pages, a window of them in flight, taken in
/// order.
pub(super) struct Dealing<'a> {
    style: &'a Style,
    /// The page to take next (and what is known of the end).
    at: Dealt,
    /// The page to ask for next.
    next: Dealt,
    /// Shards: every this many pages is this shard's.
    count: u64,
    max_pages: u64,
    /// Offset pagination: the page just taken was a span served in part; its rest comes next.
    span_left: bool,
}

impl<'a> Dealing<'a> {
    /// This shard's pages of the partition from its first, or from where a checkpoint left them.
    pub(super) fn new(harvest: &'a Harvest, shard: Shard, resume: Option<Dealt>) -> Self {
        let plan = harvest.plan();
        let at = resume.unwrap_or(Dealt { slot: u64::from(shard.index), ..Dealt::default() });
        Dealing {
            style: &plan.pagination.style,
            at,
            next: at,
            count: u64::from(shard.count),
            max_pages: plan.pagination.max_pages.unwrap_or(u64::MAX),
            span_left: false,
        }
    }
}

impl Course for Dealing<'_> {
    type Tag = Dealt;

    fn settled(&self, tally: &Tally) -> Option<StopReason> {
        if self.at.slot >= self.max_pages {
            return Some(StopReason::MaxPages { pages: tally.pages });
        }
        self.at.past_end(self.style).then(|| self.at.stop())
    }

    fn ask(&mut self, _in_flight: usize, _tally: &Tally) -> Option<Ask<Dealt>> {
        let next = self.next;
        if next.slot >= self.max_pages || next.past_end(self.style) {
            return None;
        }
        self.next = Dealt { slot: next.slot + self.count, within: 0, ..self.at };
        Some(Ask { tag: next, request: next.request(self.style), page: next.slot })
    }

    fn exhausted(&self, _tally: &Tally) -> StopReason {
        // The window holds this shard's pages from `at` on: empty, `at` is past the end.
        self.at.stop()
    }

    fn failed(&self, asked: &Dealt, failure: PageFailure) -> Result<StopReason, Error> {
        // A 404, 400 or 422 for a page past the end (a server that refuses to count past its
        // last page), where no total said otherwise.
        match failure.end_status() {
            Some(status) if (asked.slot, asked.within) != (0, 0) && self.at.end.is_none() => {
                Ok(StopReason::EndConfirmed { status })
            }
            _ => Err(failure.error),
        }
    }

    fn take(
        &mut self,
        _harvest: &Harvest,
        _asked: &Dealt,
        page: &mut PageOut,
        _count: u64,
        tally: &mut Tally,
    ) -> Result<Option<StopReason>, Error> {
        let (style, at) = (self.style, &mut self.at);
        at.learn(style, &page.reading);
        let received = page.received;
        at.within += received;
        // Offset pagination: the rest of a span a capped server served in part.
        self.span_left = match style {
            Style::Offset(c) => received > 0 && at.within < c.page_size && !at.past_end(style),
            _ => false,
        };
        if !self.span_left {
            *at = Dealt { slot: at.slot + self.count, within: 0, ..*at };
        }
        Ok(match () {
            _ if received == 0 => Some(at.stop()),
            _ if at.slot >= self.max_pages => Some(StopReason::MaxPages { pages: tally.pages + 1 }),
            _ if at.past_end(style) => Some(at.stop()),
            _ => None,
        })
    }

    fn resume(&mut self, stop: Option<&StopReason>, _found: &BTreeSet<String>) -> (serde_json::Value, Vec<u64>) {
        let resume = SavedDeal { dealt: self.at, done: stop.cloned() };
        (serde_json::to_value(resume).expect("a position serializes"), Vec::new())
    }

    fn replan(&mut self, pages: &mut Pages<Dealt>, cancel: &CancellationToken) -> Result<(), Error> {
        let (style, at) = (self.style, self.at);
        // Pages asked past the end the server announced are not wanted; a span served in
        // part is asked for again before the pages after it are taken.
        pages.drop_back_while(|later| Dealt { end: at.end, ..*later }.past_end(style));
        self.next = Dealt { end: at.end, total: at.total, ..self.next };
        if self.span_left {
            if cancel.is_cancelled() {
                // Nothing is asked after an interrupt, and the pages after this span may not
                // be taken before its rest: the checkpoint goes on from inside the span.
                pages.abort();
                return Err(Error::interrupted());
            }
            pages.push_front(Ask { tag: at, request: at.request(style), page: at.slot });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paginate::{Fact, ParamsIn};

    fn page_style(total_pages: bool) -> Style {
        Style::Page(std::sync::Arc::new(crate::paginate::page_number::Config {
            page_param: "page".into(),
            size_param: Some("per_page".into()),
            start: 1,
            page_size: Some(100),
            total_pages: total_pages.then(|| Fact::Body(crate::jsonpath::JsonPath::parse("$.pages").unwrap())),
            total: (!total_pages).then(|| Fact::Body(crate::jsonpath::JsonPath::parse("$.total").unwrap())),
            params_in: ParamsIn::Query,
        }))
    }

    fn facts(records: u64, total: Option<u64>, total_pages: Option<u64>) -> Reading {
        let url = url::Url::parse("http://x/").unwrap();
        Reading { status: 200, records, url, total, total_pages, has_more: None, next: None }
    }

    #[test]
    fn the_end_comes_from_the_first_page_that_announces_it() {
        let style = page_style(false);
        // 250 records served 40 a page (a cap below the 100 asked): pages 1..=7.
        let mut at = Dealt { slot: 2, ..Dealt::default() };
        at.learn(&style, &facts(40, Some(250), None));
        assert_eq!(at.end, Some(1 + 7));
        // The last page (10 records) cannot tell a short page from a small page size: the
        // end it gives is too far rather than too near, and the pages between come back empty.
        let mut last = Dealt { slot: 6, ..Dealt::default() };
        last.learn(&style, &facts(10, Some(250), None));
        assert_eq!(last.end, Some(1 + 25));
        // A page that holds the last record at its size ends the pages there.
        let mut fits = Dealt { slot: 4, ..Dealt::default() };
        fits.learn(&style, &facts(50, Some(250), None));
        assert_eq!(fits.end, Some(1 + 5));
        // A page past the end says nothing of where the end is; the total pages do.
        let mut past = Dealt { slot: 9, ..Dealt::default() };
        past.learn(&style, &facts(0, Some(250), None));
        assert_eq!(past.end, None);
        past.learn(&page_style(true), &facts(0, None, Some(7)));
        assert_eq!((past.end, past.stop()), (Some(8), StopReason::TotalReached { total: 7 }));
    }

    #[test]
    fn an_offset_span_is_asked_for_in_full_and_then_its_rest() {
        let style = Style::Offset(std::sync::Arc::new(crate::paginate::offset::Config {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            start: 0,
            page_size: 100,
            total: Some(Fact::Body(crate::jsonpath::JsonPath::parse("$.total").unwrap())),
            params_in: ParamsIn::Query,
        }));
        let at = Dealt { slot: 3, within: 30, ..Dealt::default() };
        assert_eq!(at.request(&style).query, [("offset".into(), "330".into()), ("limit".into(), "70".into())]);
        let mut at = Dealt { slot: 3, ..Dealt::default() };
        at.learn(&style, &facts(100, Some(320), None));
        assert!(!at.past_end(&style) && Dealt { slot: 4, ..at }.past_end(&style));
    }
}
