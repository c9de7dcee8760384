//! The job's lock in object storage: a lease object (`_harvest/lock`, or `lock-<I>of<N>` for a
//! shard) created only if absent, and renewed by a conditional write every quarter of
//! `lease_ttl` while the run lives. A lease not renewed for `lease_ttl` (its holder was killed)
//! may be taken over, by one worker only: the takeover writes over the version it read. A
//! lease's age is judged on the store's clock (the object's modification time against an object
//! written now), never on a worker's. A worker that finds its lease taken over stops, and its
//! checkpoint writes, made over the version it wrote last, are refused after the takeover.
//!
//! Before the first lease a store is probed: an object written twice "only if absent" must be
//! refused the second time, else the store cannot keep two workers apart and harvest refuses it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{holder_words, HeldBy, Layout, HARVEST};
use crate::error::Error;
use crate::store::{Put, PutError, Version};

/// A lease held by this process, renewed on a thread of its own until dropped.
#[derive(Debug)]
pub struct Lease {
    layout: Layout,
    rel: String,
    lost: CancellationToken,
    stop: CancellationToken,
    renewer: Option<std::thread::JoinHandle<()>>,
}

/// What renewing the lease needs, shared by the renewal thread and the writer (which renews
/// it before each part it publishes).
#[derive(Debug)]
pub(super) struct HeldLease {
    rel: String,
    body: Vec<u8>,
    version: Version,
    lost: CancellationToken,
}

static PROBED: AtomicBool = AtomicBool::new(false);

impl Lease {
    /// Take the lease, or take over one older than `ttl`; `Err(HeldBy)` while another worker
    /// holds it.
    pub fn take(layout: &Layout, ttl: Duration) -> Result<Result<Lease, HeldBy>, Error> {
        probe(layout)?;
        let rel = layout.lock_rel();
        let io = |e| Error::io(format!("taking the lease {}", layout.display(&rel)), e);
        let body = serde_json::json!({ "holder": holder_words(), "ttl_ms": ttl.as_millis() as u64 }).to_string();
        let version = match layout.store.put(&rel, body.as_bytes(), Put::Create, "") {
            Ok(version) => version,
            Err(PutError::Exists) => {
                let Some((held, version)) = layout.store.get(&rel).map_err(io)? else {
                    // Released between the two calls: try once more from the start.
                    return Self::take(layout, ttl);
                };
                let holder = serde_json::from_slice::<serde_json::Value>(&held)
                    .ok()
                    .and_then(|v| v["holder"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "another worker".into());
                let renewed = layout.store.stat(&rel).map_err(io)?.map(|(_, at)| at).unwrap_or_default();
                let age = (layout.store.now().map_err(io)? - renewed).to_std().unwrap_or_default();
                if age < ttl {
                    return Ok(Err(HeldBy(format!(
                        "{holder}; its lease was renewed {} ago and is taken over only after lease_ttl = {}",
                        crate::human::duration(age),
                        crate::human::duration(ttl)
                    ))));
                }
                match layout.store.put(&rel, body.as_bytes(), Put::Update(version), "") {
                    Ok(version) => {
                        tracing::warn!(
                            "took over the lease of {holder}: not renewed for {} (lease_ttl = {})",
                            crate::human::duration(age),
                            crate::human::duration(ttl)
                        );
                        version
                    }
                    Err(PutError::Io(e)) => return Err(io(e)),
                    Err(_) => return Ok(Err(HeldBy(format!("{holder}; another worker took its expired lease first")))),
                }
            }
            Err(PutError::Changed) => return Ok(Err(HeldBy("another worker".into()))),
            Err(PutError::Io(e)) => return Err(io(e)),
        };
        let (lost, stop) = (CancellationToken::new(), CancellationToken::new());
        let held = HeldLease { rel: rel.clone(), body: body.into_bytes(), version, lost: lost.clone() };
        *layout.held.lock().expect("lease lock") = Some(held);
        let renewer = {
            let (layout, stop) = (layout.clone(), stop.clone());
            std::thread::Builder::new()
                .name("harvest-lease".into())
                .spawn(move || renew_every(&layout, ttl / 4, &stop))
                .map_err(|e| Error::io("starting the lease's renewal", e))?
        };
        Ok(Ok(Lease { layout: layout.clone(), rel, lost, stop, renewer: Some(renewer) }))
    }

    /// Cancelled when the lease is found taken over.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Who holds the lease now, if it is younger than `ttl`.
    pub fn holder(layout: &Layout, ttl: Duration) -> Result<Option<String>, Error> {
        let rel = layout.lock_rel();
        let io = |e| Error::io(format!("reading the lease {}", layout.display(&rel)), e);
        let Some((held, _)) = layout.store.get(&rel).map_err(io)? else { return Ok(None) };
        let renewed = layout.store.stat(&rel).map_err(io)?.map(|(_, at)| at).unwrap_or_default();
        let age = (layout.store.now().map_err(io)? - renewed).to_std().unwrap_or_default();
        let holder = serde_json::from_slice::<serde_json::Value>(&held)
            .ok()
            .and_then(|v| v["holder"].as_str().map(str::to_string))
            .unwrap_or_else(|| "another worker".into());
        Ok((age < ttl).then(|| format!("{holder} (lease renewed {} ago)", crate::human::duration(age))))
    }
}

/// Renew the lease every `every` until stopped or lost.
fn renew_every(layout: &Layout, every: Duration, stop: &CancellationToken) {
    loop {
        let deadline = std::time::Instant::now() + every;
        while std::time::Instant::now() < deadline {
            if stop.is_cancelled() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20).min(every));
        }
        match renew(layout) {
            Ok(()) => {}
            Err(Error::LeaseLost(message)) => {
                tracing::error!("{message}");
                return;
            }
            Err(e) => tracing::warn!("renewing the lease {}: {e}", layout.display(&layout.lock_rel())),
        }
    }
}

/// Renew the lease now, over the version written last. Refused means another worker took it
/// over: the lease is lost (and stays so) and the run must stop.
fn renew(layout: &Layout) -> Result<(), Error> {
    let mut held = layout.held.lock().expect("lease lock");
    let Some(held) = held.as_mut() else { return Ok(()) };
    if held.lost.is_cancelled() {
        return Err(lost(layout, &held.rel));
    }
    match layout.store.put(&held.rel, &held.body, Put::Update(held.version.clone()), "") {
        Ok(next) => {
            held.version = next;
            Ok(())
        }
        Err(PutError::Io(e)) => Err(Error::io(format!("renewing the lease {}", layout.display(&held.rel)), e)),
        Err(_) => {
            held.lost.cancel();
            Err(lost(layout, &held.rel))
        }
    }
}

fn lost(layout: &Layout, rel: &str) -> Error {
    lost_because(layout, &format!("the lease {} could not be renewed", layout.display(rel)))
}

/// The error of a worker whose lease was taken over, after `what` it found: one wording
/// whichever write noticed it first (a renewal, a checkpoint, a manifest).
pub(crate) fn lost_because(layout: &Layout, what: &str) -> Error {
    Error::LeaseLost(format!(
        "{what}: the lease {} was taken over by another worker (this one was stopped or cut off for longer \
         than lease_ttl); this worker stops, and the one that holds the lease goes on from the checkpoint",
        layout.display(&layout.lock_rel())
    ))
}

/// Before a part is published: the lease is still this worker's (renewed now), or nothing more
/// is published. Nothing to do on the local filesystem.
pub(super) fn confirm(layout: &Layout) -> Result<(), Error> {
    if layout.store.is_local() {
        return Ok(());
    }
    renew(layout)
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        *self.layout.held.lock().expect("lease lock") = None;
        if !self.lost.is_cancelled() {
            if let Err(e) = self.layout.store.delete(&self.rel) {
                tracing::warn!("releasing the lease {}: {e}", self.layout.display(&self.rel));
            }
        }
    }
}

/// Refuse a store that does not keep an object written "only if absent" from being written
/// again: it could not keep two workers apart, nor a stale worker from a newer checkpoint.
fn probe(layout: &Layout) -> Result<(), Error> {
    if PROBED.load(Ordering::SeqCst) {
        return Ok(());
    }
    let rel = format!("{HARVEST}/probe-{:016x}", rand::random::<u64>());
    let io = |e| Error::io(format!("probing {}", layout.display("")), e);
    let refuse = |why: &str| {
        Err(Error::Usage(format!(
            "{} cannot be the output: {why}. harvest needs conditional writes (an object created only if \
             absent, replaced only if unchanged) to keep workers from overwriting each other's checkpoints",
            layout.display("")
        )))
    };
    match layout.store.put(&rel, b"1", Put::Create, "") {
        Ok(_) => {}
        Err(PutError::Io(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            return refuse("the store does not support conditional writes")
        }
        Err(PutError::Io(e)) => return Err(io(e)),
        Err(_) => return refuse("a new object was refused as if it existed"),
    }
    let second = layout.store.put(&rel, b"2", Put::Create, "");
    layout.store.delete(&rel).map_err(io)?;
    match second {
        Err(PutError::Exists) => {
            PROBED.store(true, Ordering::SeqCst);
            Ok(())
        }
        Ok(_) => refuse("it let an object written \"only if absent\" be written over"),
        Err(PutError::Changed) => refuse("it answered a create with a version mismatch"),
        Err(PutError::Io(e)) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::object::Bucket;
    use crate::store::Store;

    /// A worker's view of the job's output in `bucket`: its own versions, its own staging.
    fn worker(bucket: &Bucket) -> (Layout, tempfile::TempDir) {
        let staging = tempfile::tempdir().unwrap();
        let layout = Layout::staged(Store::Object(bucket.clone()), staging.path().to_path_buf(), None).unwrap();
        (layout, staging)
    }

    /// What a killed worker leaves: its lease, no longer renewed, never released.
    fn kill(mut lease: Lease) {
        lease.stop.cancel();
        if let Some(renewer) = lease.renewer.take() {
            renewer.join().unwrap();
        }
        std::mem::forget(lease);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_renewed_lease_keeps_others_out_and_a_stale_one_is_taken_over_once() {
        let bucket = Bucket::in_memory("job");
        let ((a, _a), (b, _b), (c, _c)) = (worker(&bucket), worker(&bucket), worker(&bucket));
        let ttl = Duration::from_millis(400);
        let held = Lease::take(&a, ttl).unwrap().expect("the first worker takes the lease");
        // Renewed every quarter of the ttl: still held long after one ttl has gone by.
        std::thread::sleep(ttl * 2);
        let HeldBy(refused) = Lease::take(&b, ttl).unwrap().expect_err("a renewed lease is not taken over");
        assert!(refused.contains("its lease was renewed"), "{refused}");
        assert!(Lease::holder(&b, ttl).unwrap().is_some());

        kill(held);
        std::thread::sleep(ttl + Duration::from_millis(100));
        assert!(Lease::holder(&b, ttl).unwrap().is_none(), "a lease not renewed for the ttl is stale");
        let _taken = Lease::take(&b, ttl).unwrap().expect("a stale lease is taken over");
        let HeldBy(refused) = Lease::take(&c, ttl).unwrap().expect_err("and only by one worker");
        assert!(refused.contains("its lease was renewed"), "{refused}");
        // The worker that was cut off finds out at its next renewal, and stays out.
        assert!(matches!(confirm(&a), Err(Error::LeaseLost(_))));
        assert!(matches!(confirm(&a), Err(Error::LeaseLost(_))));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_write_over_a_version_another_worker_replaced_is_refused() {
        let bucket = Bucket::in_memory("job");
        let ((a, _a), (b, _b)) = (worker(&bucket), worker(&bucket));
        let rel = a.checkpoint_rel();
        a.write(&rel, b"{\"by\": \"a\"}", "").unwrap();
        a.write(&rel, b"{\"by\": \"a\", \"again\": true}", "").expect("over the version it wrote");
        // The other worker takes the run up: it reads the checkpoint, then writes its own.
        assert!(b.read(&rel).unwrap().is_some());
        b.write(&rel, b"{\"by\": \"b\"}", "").unwrap();
        let refused = a.write(&rel, b"{\"by\": \"a\"}", "").unwrap_err();
        assert!(matches!(refused, Error::LeaseLost(_)), "{refused}");
        assert_eq!(b.read(&rel).unwrap().unwrap(), b"{\"by\": \"b\"}", "what the other worker wrote stays");
        // A file created only if absent is created once.
        assert!(a.create_new("_harvest/run-ids/x.json", b"1").unwrap());
        assert!(!b.create_new("_harvest/run-ids/x.json", b"2").unwrap());
    }
}
