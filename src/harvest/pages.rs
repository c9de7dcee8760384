//! A partition's pages in the order they must be written: [`Pages`] keeps a window of them in
//! flight, each fetched and decoded on its own task, and hands them out in order (the window
//! is the reorder buffer); a [`Course`] says which page to ask for next and what each page
//! taken means. One consumer loop, [`super::Harvest::walk`], takes them whatever the course:
//! a strategy's own walk ([`Walked`](super::walk::Walked): one page at a time, or a window of
//! independent offset or page-number pages) or a shard's dealt pages
//! ([`Dealing`](super::dealt::Dealing)).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::page::{PageFailure, PageOut};
use super::{Harvest, Harvested, Part, Shared, Tally};
use crate::error::Error;
use crate::paginate::{PageRequest, StopReason};

/// A page to ask for: as what (the course's own tag), the request, and its place in the
/// partition's pages (for messages, and to tell a first page).
pub(super) struct Ask<T> {
    pub(super) tag: T,
    pub(super) request: PageRequest,
    pub(super) page: u64,
}

/// Where a partition's pages come from, and what taking each one means.
pub(super) trait Course {
    /// What a page in flight was asked as.
    type Tag: Send + 'static;

    /// An end reached before anything more is asked.
    fn settled(&self, _tally: &Tally) -> Option<StopReason> {
        None
    }

    /// The next page to ask for behind the `in_flight` ones, if one may be asked now.
    fn ask(&mut self, in_flight: usize, tally: &Tally) -> Option<Ask<Self::Tag>>;

    /// Nothing in flight and nothing more to ask: why the partition ends.
    fn exhausted(&self, tally: &Tally) -> StopReason;

    /// The page asked as `tag` could not be had: an end (past the last page), or the error.
    fn failed(&self, tag: &Self::Tag, failure: PageFailure) -> Result<StopReason, Error>;

    /// Move past the page asked as `tag`, in order, of which `count` records are kept:
    /// whether the partition stops with it.
    fn take(
        &mut self,
        harvest: &Harvest,
        tag: &Self::Tag,
        page: &mut PageOut,
        count: u64,
        tally: &mut Tally,
    ) -> Result<Option<StopReason>, Error>;

    /// Where the partition goes on from after the page just taken, as a checkpoint keeps it,
    /// and the cursors or URLs it followed since the last page (hashed).
    fn resume(&mut self, stop: Option<&StopReason>, found: &BTreeSet<String>) -> (serde_json::Value, Vec<u64>);

    /// The records the server announced for the partition, once it said so.
    fn expected(&self) -> Option<u64> {
        None
    }

    /// The partition goes on after the page just taken: what is in flight may need asking
    /// again (a short page moved the rest, a span was served in part).
    fn replan(&mut self, pages: &mut Pages<Self::Tag>, cancel: &CancellationToken) -> Result<(), Error>;
}

/// A page being fetched, on its own task.
type PageTask = JoinHandle<Result<Harvested, PageFailure>>;

/// The pages of one partition in flight, in the order they are to be taken.
pub(super) struct Pages<T> {
    shared: Arc<Shared>,
    part: Arc<Part>,
    in_flight: VecDeque<(T, PageTask)>,
    window: usize,
}

impl<T: Send + 'static> Pages<T> {
    pub(super) fn new(harvest: &Harvest, window: usize) -> Self {
        Pages { shared: harvest.shared.clone(), part: harvest.part.clone(), in_flight: VecDeque::new(), window }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The tag of the next page to be taken.
    pub(super) fn front(&self) -> Option<&T> {
        self.in_flight.front().map(|(tag, _)| tag)
    }

    /// Ask for pages while the window has room and the course has one to ask; nothing once
    /// the run is interrupted.
    pub(super) fn fill<C: Course<Tag = T>>(&mut self, course: &mut C, tally: &Tally, cancel: &CancellationToken) {
        while !cancel.is_cancelled() && self.in_flight.len() < self.window {
            let Some(ask) = course.ask(self.in_flight.len(), tally) else { break };
            let task = self.spawn(ask.request, ask.page);
            self.in_flight.push_back((ask.tag, task));
        }
    }

    /// Ask for a page before every page in flight.
    pub(super) fn push_front(&mut self, ask: Ask<T>) {
        let task = self.spawn(ask.request, ask.page);
        self.in_flight.push_front((ask.tag, task));
    }

    fn spawn(&self, request: PageRequest, page: u64) -> PageTask {
        let (shared, part) = (self.shared.clone(), self.part.clone());
        tokio::spawn(async move { shared.fetch(&part, &request, page).await })
    }

    /// The next page in order, once it is fetched; `None` when none is in flight.
    pub(super) async fn next(&mut self) -> Result<Option<(T, Result<Harvested, PageFailure>)>, Error> {
        let Some((tag, task)) = self.in_flight.pop_front() else { return Ok(None) };
        let fetched = task.await.map_err(|e| Error::Task { task: "a page task", cause: e.to_string() })?;
        Ok(Some((tag, fetched)))
    }
}

impl<T> Pages<T> {
    /// Stop asking for the pages at the back while `unwanted` says so.
    pub(super) fn drop_back_while(&mut self, unwanted: impl Fn(&T) -> bool) {
        while self.in_flight.back().is_some_and(|(tag, _)| unwanted(tag)) {
            if let Some((_, task)) = self.in_flight.pop_back() {
                task.abort();
            }
        }
    }

    /// Stop asking for every page in flight.
    pub(super) fn abort(&mut self) {
        for (_, task) in self.in_flight.drain(..) {
            task.abort();
        }
    }
}

impl<T> Drop for Pages<T> {
    /// A partition that ends, fails or stops takes no more of its pages.
    fn drop(&mut self) {
        self.abort();
    }
}
