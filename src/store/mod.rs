//! Where a job's output lives: a folder on the local filesystem, or a prefix in object storage
//! (S3, GCS, Azure Blob, or an S3-compatible store) through the `object_store` crate.
//!
//! Both are seen the same way: files named by their path under the job's root (`part-...`,
//! `_harvest/runs/<run>.json`), read whole with a version, written whole (overwriting, only if
//! absent, or only if unchanged since a version was read), listed one folder at a time,
//! removed. A part is written on the local disk first and published whole: renamed into the
//! folder, or uploaded in parts to its final key (a multipart upload is only visible once
//! complete). Nothing lists a half-written part on either.

pub mod fs;
pub mod object;

use std::io;
use std::path::{Path, PathBuf};

use fs::{create_new, failpoint, folder_of, fsync_dir, write_atomic};

/// A version of a file, as read or written: what a conditional write checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// How a write treats what is there.
#[derive(Debug, Clone)]
pub enum Put {
    Overwrite,
    /// Only if no file is there.
    Create,
    /// Only if the file is still the version read (or written) last.
    Update(Version),
}

/// A conditional write that was refused, or a store that failed.
#[derive(Debug)]
pub enum PutError {
    /// `Put::Create`, and a file was there.
    Exists,
    /// `Put::Update`, and the file changed (or went) since that version.
    Changed,
    Io(io::Error),
}

impl From<io::Error> for PutError {
    fn from(e: io::Error) -> Self {
        PutError::Io(e)
    }
}

impl std::fmt::Display for PutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PutError::Exists => write!(f, "it exists already"),
            PutError::Changed => write!(f, "it changed since it was read (another worker wrote it)"),
            PutError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A file in a listing.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name in the folder listed.
    pub name: String,
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// The job's output root.
#[derive(Debug, Clone)]
pub enum Store {
    Local(PathBuf),
    Object(object::Bucket),
}

impl Store {
    /// How messages name `rel` under the root: a path, or a URL.
    pub fn display(&self, rel: &str) -> String {
        match self {
            Store::Local(root) => match rel.is_empty() {
                true => root.display().to_string(),
                false => root.join(rel).display().to_string(),
            },
            Store::Object(bucket) => bucket.url(rel),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Store::Local(_))
    }

    /// The file at `rel`, with its version; `None` when there is none.
    pub fn get(&self, rel: &str) -> io::Result<Option<(Vec<u8>, Version)>> {
        match self {
            Store::Local(root) => match std::fs::read(root.join(rel)) {
                Ok(bytes) => Ok(Some((bytes, Version::default()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
            Store::Object(bucket) => bucket.get(rel),
        }
    }

    /// The version of the file at `rel` and when it was last written, on the store's clock.
    pub fn stat(&self, rel: &str) -> io::Result<Option<(Version, chrono::DateTime<chrono::Utc>)>> {
        match self {
            Store::Local(root) => match std::fs::metadata(root.join(rel)) {
                Ok(meta) => Ok(Some((Version::default(), meta.modified().map(Into::into).unwrap_or_default()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
            Store::Object(bucket) => Ok(bucket
                .head(rel)?
                .map(|meta| (Version { e_tag: meta.e_tag, version: meta.version }, meta.last_modified))),
        }
    }

    pub fn exists(&self, rel: &str) -> io::Result<bool> {
        match self {
            Store::Local(root) => Ok(root.join(rel).exists()),
            Store::Object(bucket) => bucket.head(rel).map(|meta| meta.is_some()),
        }
    }

    /// Write `bytes` at `rel` whole: a reader sees the old file or the new one, never a part.
    /// `point` names the moment just before it becomes visible, for [`failpoint`]. On the
    /// local filesystem the job's lock keeps other writers out, so `Update` writes as
    /// `Overwrite` does; in object storage it is the store's conditional write.
    pub fn put(&self, rel: &str, bytes: &[u8], mode: Put, point: &str) -> Result<Version, PutError> {
        match self {
            Store::Local(root) => {
                let path = root.join(rel);
                match mode {
                    Put::Create => match create_new(&path, bytes)? {
                        true => Ok(Version::default()),
                        false => Err(PutError::Exists),
                    },
                    Put::Overwrite | Put::Update(_) => {
                        std::fs::create_dir_all(folder_of(&path))?;
                        write_atomic(&path, bytes, point)?;
                        Ok(Version::default())
                    }
                }
            }
            Store::Object(bucket) => {
                failpoint(point);
                bucket.put(rel, bytes, mode)
            }
        }
    }

    /// Remove the file at `rel`; one already gone is no error.
    pub fn delete(&self, rel: &str) -> io::Result<()> {
        match self {
            Store::Local(root) => {
                let path = root.join(rel);
                match std::fs::remove_file(&path) {
                    Ok(()) => fsync_dir(folder_of(&path)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Store::Object(bucket) => bucket.delete(rel),
        }
    }

    /// The files in the folder `dir` ("" for the root), not those in folders below it.
    pub fn list(&self, dir: &str) -> io::Result<Vec<Entry>> {
        match self {
            Store::Local(root) => {
                let entries = match std::fs::read_dir(root.join(dir)) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                };
                let mut out = Vec::new();
                for entry in entries.flatten() {
                    // A file renamed or removed since the folder was read (another shard's
                    // manifest, still under its temporary name a moment ago) is not listed.
                    let meta = match entry.metadata() {
                        Ok(meta) => meta,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    if meta.is_file() {
                        let modified = meta.modified().map(chrono::DateTime::from).unwrap_or_default();
                        out.push(Entry { name: entry.file_name().to_string_lossy().into_owned(), modified });
                    }
                }
                Ok(out)
            }
            Store::Object(bucket) => bucket.list(dir),
        }
    }

    /// Publish a complete part written at `local` as `name` under the root: renamed into
    /// place (then the folder synced), or uploaded in parts and completed, then removed here.
    pub fn publish(&self, local: &Path, name: &str) -> io::Result<()> {
        match self {
            Store::Local(root) => {
                let target = root.join(name);
                std::fs::rename(local, &target)?;
                failpoint("publish");
                fsync_dir(target.parent().unwrap_or(root))
            }
            Store::Object(bucket) => {
                bucket.upload(local, name)?;
                failpoint("publish");
                std::fs::remove_file(local)
            }
        }
    }

    /// The time now on the store's clock: a lease's age is judged on it, never on a worker's.
    pub fn now(&self) -> io::Result<chrono::DateTime<chrono::Utc>> {
        match self {
            Store::Local(_) => Ok(chrono::Utc::now()),
            Store::Object(bucket) => bucket.now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shards list `_harvest/runs` while others write their manifests there (a file written
    /// under a temporary name, linked, the temporary name removed): a file that goes between
    /// the listing and its look is not listed, never an error.
    #[test]
    fn a_folder_listed_while_files_come_and_go_lists_what_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(dir.path().to_path_buf());
        std::fs::write(dir.path().join("kept.json"), b"{}").unwrap();
        let writer = {
            let root = dir.path().to_path_buf();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    let path = root.join(format!("run-{i}.json"));
                    assert!(create_new(&path, b"{}").unwrap());
                    std::fs::remove_file(path).unwrap();
                }
            })
        };
        while !writer.is_finished() {
            let listed = store.list("").expect("a listing while files come and go");
            assert!(listed.iter().any(|e| e.name == "kept.json"));
        }
        writer.join().unwrap();
    }
}
