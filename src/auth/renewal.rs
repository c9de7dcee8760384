//! One renewal at a time for the whole job, for the kinds that obtain their credentials (an
//! OAuth token, a login session): what is held now, its generation, and the lock that makes
//! renewal single-flight. Whoever takes the lock first obtains new credentials; the others
//! find a newer generation when they get it and obtain nothing. Requests wait here holding
//! no slot and no rate-limit token.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::error::FetchErrorKind;

/// Credentials as the run holds them.
#[derive(Debug)]
pub struct Held<T> {
    pub value: T,
    /// 1 for the first of the run, then one more each renewal.
    pub generation: u64,
    /// When to renew ahead of expiry; `None`: kept until refused.
    pub renew_at: Option<Instant>,
}

#[derive(Debug)]
pub struct Renewal<T> {
    current: RwLock<Option<Arc<Held<T>>>>,
    lock: tokio::sync::Mutex<()>,
    generations: AtomicU64,
}

impl<T> Default for Renewal<T> {
    fn default() -> Self {
        Renewal { current: RwLock::new(None), lock: tokio::sync::Mutex::new(()), generations: AtomicU64::new(0) }
    }
}

impl<T> Renewal<T> {
    pub fn current(&self) -> Option<Arc<Held<T>>> {
        self.current.read().expect("credentials lock").clone()
    }

    /// Before a request: wait out a renewal in progress (its result, not a value the server
    /// has just refused, goes out), then obtain credentials if there are none or they are due.
    pub async fn ready<F, Fut>(&self, obtain: F) -> Result<(), FetchErrorKind>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Option<Instant>), FetchErrorKind>>,
    {
        if self.lock.try_lock().is_err() {
            drop(self.lock.lock().await);
        }
        let held = self.current();
        let due = match &held {
            None => true,
            Some(h) => h.renew_at.is_some_and(|at| Instant::now() >= at),
        };
        if due {
            self.renew_from(held.map(|h| h.generation), obtain).await?;
        }
        Ok(())
    }

    /// After the server refused generation `used`: renewed here, unless another request
    /// already replaced it (then the request just goes again with the newer one).
    pub async fn renew_after<F, Fut>(&self, used: u64, obtain: F) -> Result<(), FetchErrorKind>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Option<Instant>), FetchErrorKind>>,
    {
        if self.current().is_some_and(|h| h.generation > used) {
            return Ok(());
        }
        self.renew_from(Some(used), obtain).await
    }

    /// Obtain new credentials unless someone replaced generation `seen` while this waited.
    async fn renew_from<F, Fut>(&self, seen: Option<u64>, obtain: F) -> Result<(), FetchErrorKind>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Option<Instant>), FetchErrorKind>>,
    {
        let _one_at_a_time = self.lock.lock().await;
        if self.current().map(|h| h.generation) != seen {
            return Ok(());
        }
        let (value, renew_at) = obtain().await?;
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        *self.current.write().expect("credentials lock") = Some(Arc::new(Held { value, generation, renew_at }));
        Ok(())
    }
}
