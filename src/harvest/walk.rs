//! A partition's own pages, as its pagination strategy walks them: one at a time, each
//! request made of the page before, until the strategy knows which pages are independent
//! (offset and page numbers); from then on a window of them in flight. A page that comes back
//! short re-plans the rest from where it ended, so a capped page size never leaves a gap.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::page::{self, PageFailure, PageOut};
use super::pages::{Ask, Course, Pages};
use super::{Harvest, Tally};
use crate::error::Error;
use crate::paginate::{Next, PageRange, PageRequest, StopReason, Strategy, Style};

/// Where a partition goes on after a page, as a checkpoint keeps it.
#[derive(Serialize)]
struct ResumeOut<'a> {
    pager: serde_json::Value,
    next: Option<&'a PageRequest>,
    done: Option<&'a StopReason>,
    /// `[partitions.check]`: the values asked for that its records have answered so far.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    found: &'a BTreeSet<String>,
}

#[derive(Deserialize)]
pub(super) struct SavedWalk {
    pager: serde_json::Value,
    next: Option<PageRequest>,
    pub(super) done: Option<StopReason>,
    #[serde(default)]
    pub(super) found: BTreeSet<String>,
}

/// A partition's walk through its pages.
pub(super) struct Walked<'a> {
    style: &'a Style,
    pager: Box<dyn Strategy>,
    /// What the last page taken said comes next; on a fresh start, the first request.
    next: Option<PageRequest>,
    /// Fetching ahead: the independent pages from the next one taken, and where the next one
    /// asked starts (in the strategy's unit).
    ahead: Option<(PageRange, u64)>,
    window: usize,
    max_pages: u64,
    max_records: Option<u64>,
    /// A detail request (no pagination, values asked): a 404 says the value is not there.
    detail: bool,
}

impl<'a> Walked<'a> {
    /// The walk from the first page, or from where a checkpoint left it.
    pub(super) fn new(harvest: &'a Harvest, resume: Option<SavedWalk>, tally: &Tally) -> Result<Self, Error> {
        let plan = harvest.plan();
        let style = &plan.pagination.style;
        let (pager, next) = match resume {
            None => {
                let pager = style.start();
                let first = pager.first();
                (pager, first)
            }
            Some(resume) => {
                let mut pager = style.resume(&resume.pager).map_err(|e| harvest.unreadable(&e))?;
                pager.restore_seen(&harvest.part.start.seen);
                let next = resume.next.unwrap_or_else(|| pager.first());
                (pager, next)
            }
        };
        let mut walked = Walked {
            style,
            pager,
            next: Some(next),
            ahead: None,
            window: harvest.window,
            max_pages: plan.pagination.max_pages.unwrap_or(u64::MAX),
            max_records: plan.pagination.max_records,
            detail: matches!(style, Style::None) && !harvest.part.partition.asked.is_empty(),
        };
        if tally.pages > 0 {
            walked.look_ahead();
        }
        Ok(walked)
    }

    /// Once the strategy knows which pages are independent, fetch them ahead.
    fn look_ahead(&mut self) {
        if self.window > 1 && self.ahead.is_none() {
            self.ahead = self.pager.independent().map(|range| (range, range.start));
        }
    }
}

impl Course for Walked<'_> {
    /// Ahead: the page's position; one at a time: nothing.
    type Tag = u64;

    fn ask(&mut self, in_flight: usize, tally: &Tally) -> Option<Ask<u64>> {
        let page = tally.pages + in_flight as u64;
        let Some((range, position)) = &mut self.ahead else {
            // One at a time: the next request is known once the page before is taken.
            return (in_flight == 0).then(|| self.next.take()).flatten().map(|request| Ask { tag: 0, request, page });
        };
        if range.end.is_some_and(|end| *position >= end) || page >= self.max_pages {
            return None;
        }
        let request = self.style.request_at(*position).expect("an independent strategy");
        let ask = Ask { tag: *position, request, page };
        *position += range.step;
        Some(ask)
    }

    fn exhausted(&self, tally: &Tally) -> StopReason {
        // Nothing left to ask: the announced end, or max_pages.
        match self.ahead {
            Some((PageRange { end: Some(end), .. }, position)) if position >= end => {
                StopReason::TotalReached { total: end }
            }
            _ => StopReason::MaxPages { pages: tally.pages },
        }
    }

    fn failed(&self, _position: &u64, failure: PageFailure) -> Result<StopReason, Error> {
        match failure.end_status() {
            Some(status) if self.pager.end_possible() => Ok(StopReason::EndConfirmed { status }),
            // A detail request for a value the server does not have.
            Some(404) if self.detail => Ok(StopReason::NotFound),
            _ => Err(failure.error),
        }
    }

    fn take(
        &mut self,
        harvest: &Harvest,
        _position: &u64,
        page: &mut PageOut,
        count: u64,
        tally: &mut Tally,
    ) -> Result<Option<StopReason>, Error> {
        let cx = harvest.shared.page(&harvest.part);
        let (next, hint) = page::advance(&cx, &mut *self.pager, page, tally.pages)?;
        if hint.is_some() {
            tally.warning = hint;
        }
        let (records, pages) = (tally.records + count, tally.pages + 1);
        let stop = match next {
            // Records of this page were left out: the cut wins over whatever the page said of
            // the end (its total reached, the last page), or a sync would move its mark past
            // records it never fetched.
            _ if count < page.received => Some(StopReason::MaxRecords { records }),
            Next::Done(ref reason) => Some(reason.clone()),
            Next::Request(_) if self.max_records.is_some_and(|max| records >= max) => {
                Some(StopReason::MaxRecords { records })
            }
            Next::Request(_) if pages >= self.max_pages => Some(StopReason::MaxPages { pages }),
            Next::Request(_) => None,
        };
        self.next = match next {
            Next::Request(request) => Some(request),
            Next::Done(_) => None,
        };
        Ok(stop)
    }

    fn resume(&mut self, stop: Option<&StopReason>, found: &BTreeSet<String>) -> (serde_json::Value, Vec<u64>) {
        let resume = ResumeOut { pager: self.pager.save(), next: self.next.as_ref(), done: stop, found };
        (serde_json::to_value(&resume).expect("pagination state serializes"), self.pager.take_seen())
    }

    fn expected(&self) -> Option<u64> {
        self.pager.expected_records().map(|total| total.min(self.max_records.unwrap_or(u64::MAX)))
    }

    fn replan(&mut self, pages: &mut Pages<u64>, _cancel: &CancellationToken) -> Result<(), Error> {
        let Some((range, position)) = &mut self.ahead else {
            self.look_ahead();
            return Ok(());
        };
        // A short page moves the rest: re-plan from where it ended.
        let now = self.pager.independent().expect("an independent strategy");
        let front = pages.front().copied().unwrap_or(*position);
        if now.step != range.step || front != now.start {
            pages.abort();
            *position = now.start;
        }
        *range = now;
        Ok(())
    }
}
