//! Values listed outside the job file: in a file ([`super::file`]) or in another job's
//! output ([`super::from`]).
//!
//! They are never held: opening the source reads it once to mark the first occurrence of each
//! value ([`super::distinct`]: exact, in bounded memory) and to take its fingerprint, and every
//! pass after that reads it again, giving only the values marked. With `batch = n` the values
//! go out `n` at a time, joined into the one placeholder (`ids=1,2,3`).

use std::fmt;
use std::sync::{Mutex, OnceLock};

use super::distinct::{self, Firsts};
use super::{Fill, Source};
use crate::error::Error;

/// Where listed values are read from.
pub trait Reader: fmt::Debug + Send + Sync {
    /// Each value in order, with the parent fields it carries.
    fn entries(&self) -> Result<Entries<'_>, Failure>;

    /// What identifies the content read: a file's size and SHA-256, a run's id.
    fn fingerprint(&self) -> Result<String, Failure>;

    /// Placeholders its entries fill beside the value (parent fields the URL names).
    fn placed(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One value as read, the members of its `_parent` object (`"repo_id":1`), if any, and the
/// parent fields it fills placeholders with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListedEntry {
    pub value: String,
    pub parent: String,
    pub placed: Vec<(String, String)>,
}

impl ListedEntry {
    /// What makes two entries the same partition: the value, and the fields placed with it.
    fn identity(self) -> Vec<u8> {
        let mut bytes = self.value.into_bytes();
        for (_, text) in self.placed {
            bytes.push(0);
            bytes.extend_from_slice(text.as_bytes());
        }
        bytes
    }
}

pub type Entries<'a> = Box<dyn Iterator<Item = Result<ListedEntry, Failure>> + Send + 'a>;

/// Why a source cannot be read: the job asks for what is not there (exit 2), or what it
/// reads from is not there yet or broke (exit 1).
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Job(String),
    Read(String),
}

impl Failure {
    pub fn error(&self) -> Error {
        match self {
            Failure::Job(message) => Error::Usage(message.clone()),
            Failure::Read(message) => Error::Partitions(message.clone()),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Read(format!("a temporary file for the values seen: {e}"))
    }
}

/// `batch = 100, join = ","`: up to 100 values in one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub size: usize,
    pub join: String,
}

pub struct Listed {
    key: String,
    reader: Box<dyn Reader>,
    batch: Option<Batch>,
    opened: OnceLock<Result<Opened, Failure>>,
    /// A pass that could not read the source to its end, or read other values than the ones
    /// marked: the run must not take the partitions it gave as all there are.
    broken: Mutex<Option<Failure>>,
}

struct Opened {
    firsts: Firsts,
    fingerprint: String,
}

impl Listed {
    pub fn new(key: &str, reader: Box<dyn Reader>, batch: Option<Batch>) -> Self {
        Listed { key: key.to_string(), reader, batch, opened: OnceLock::new(), broken: Mutex::new(None) }
    }

    fn opened(&self) -> Result<&Opened, Failure> {
        self.opened
            .get_or_init(|| {
                let firsts = distinct::firsts(self.reader.entries()?.map(|e| e.map(ListedEntry::identity)))?;
                let fingerprint = self.reader.fingerprint()?;
                if firsts.kept < firsts.seen {
                    tracing::info!(
                        "partition {}: {} values, {} of them repeats (each harvested once)",
                        self.key,
                        firsts.seen,
                        firsts.seen - firsts.kept
                    );
                }
                Ok(Opened { firsts, fingerprint })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn break_with(&self, failure: Failure) {
        self.broken.lock().expect("source lock").get_or_insert(failure);
    }

    /// The values marked as first occurrences, in order; a pass that cannot read them all
    /// records why and ends. An unopened source gives none.
    fn firsts(&self) -> impl Iterator<Item = ListedEntry> + '_ {
        let opened = self.opened().ok();
        let mut entries = match opened.map(|_| self.reader.entries()) {
            Some(Ok(entries)) => Some(entries),
            Some(Err(failure)) => {
                self.break_with(failure);
                None
            }
            None => None,
        };
        let mut place = 0u64;
        std::iter::from_fn(move || {
            let (opened, entries) = (opened?, entries.as_mut()?);
            loop {
                match entries.next() {
                    Some(Ok(entry)) => {
                        place += 1;
                        if place > opened.firsts.seen {
                            self.break_with(self.changed());
                            return None;
                        }
                        if opened.firsts.is_first(place - 1) {
                            return Some(entry);
                        }
                    }
                    Some(Err(failure)) => {
                        self.break_with(failure);
                        return None;
                    }
                    None => {
                        if place != opened.firsts.seen {
                            self.break_with(self.changed());
                        }
                        return None;
                    }
                }
            }
        })
    }

    fn changed(&self) -> Failure {
        Failure::Read(format!("the values of partition {} changed while the run read them", self.key))
    }
}

impl fmt::Debug for Listed {
    /// What the checkpoint's fingerprint hashes: the source and its content's fingerprint.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let content = match self.opened() {
            Ok(opened) => opened.fingerprint.clone(),
            Err(_) => "unread".to_string(),
        };
        f.debug_struct("Listed")
            .field("key", &self.key)
            .field("reader", &self.reader)
            .field("batch", &self.batch)
            .field("content", &content)
            .finish()
    }
}

impl Source for Listed {
    fn inline(&self) -> bool {
        false
    }

    fn open(&self) -> Result<(), Error> {
        self.opened().map(|_| ()).map_err(|f| f.error())
    }

    fn failure(&self) -> Option<Error> {
        self.broken.lock().expect("source lock").as_ref().map(Failure::error)
    }

    fn count(&self) -> u64 {
        let kept = self.opened().map_or(0, |o| o.firsts.kept);
        match &self.batch {
            Some(batch) => kept.div_ceil(batch.size as u64),
            None => kept,
        }
    }

    fn values(&self) -> Box<dyn Iterator<Item = Fill> + Send + '_> {
        let key = self.key.clone();
        match &self.batch {
            None => Box::new(self.firsts().map(move |entry| {
                let mut pairs = vec![(key.clone(), entry.value.clone())];
                pairs.extend(entry.placed);
                Fill { keyed: pairs.len(), pairs, label: None, parent: entry.parent, asked: vec![entry.value] }
            })),
            Some(batch) => {
                let mut firsts = self.firsts();
                Box::new(std::iter::from_fn(move || {
                    let entries: Vec<ListedEntry> = firsts.by_ref().take(batch.size).collect();
                    let first = entries.first()?;
                    let label = format!("{}+{}", first.value, entries.len() - 1);
                    let asked: Vec<String> = entries.into_iter().map(|e| e.value).collect();
                    // A batch has no one parent: the job file takes `include` or `batch`.
                    Some(Fill {
                        pairs: vec![(key.clone(), asked.join(&batch.join))],
                        label: Some(label),
                        keyed: 1,
                        parent: String::new(),
                        asked,
                    })
                }))
            }
        }
    }

    fn placeholders(&self) -> Vec<String> {
        std::iter::once(self.key.clone()).chain(self.reader.placed()).collect()
    }
}
