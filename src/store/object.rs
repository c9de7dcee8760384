//! Object storage through the `object_store` crate: `s3://bucket/prefix` (and S3-compatible
//! stores with an endpoint), `gs://bucket/prefix`, `az://container/prefix`. Credentials come
//! from each cloud's standard environment and instance chain, as `object_store` reads them
//! (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, `GOOGLE_APPLICATION_CREDENTIALS`,
//! `AZURE_STORAGE_ACCOUNT_NAME`, ...), and are never logged: messages name the URL only.
//!
//! The rest of harvest is synchronous here (the writer thread, the steps of a run), so each
//! call runs the store's future to completion on the runtime it was opened on.

use std::future::Future;
use std::io::{self, Read};
use std::path::Path as LocalPath;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion, WriteMultipart};

use super::{Entry, Put, PutError, Version};

/// A job's root in a bucket.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/<job name>`: the job's root.
    root: Path,
    /// `s3://bucket/prefix/<job name>`, for messages.
    url: String,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.url)
    }
}

/// Bytes uploaded per request of a multipart upload (S3 wants at least 5 MiB but the last).
const CHUNK: usize = 8 << 20;

/// True for a `dir` that names object storage rather than a folder.
pub fn is_url(dir: &str) -> bool {
    ["s3://", "s3a://", "gs://", "az://", "azure://", "abfs://", "abfss://"].iter().any(|s| dir.starts_with(s))
}

/// The options `[output]` gives an S3-compatible store.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub endpoint: Option<String>,
    pub allow_http: bool,
}

impl Bucket {
    /// The job `name`'s root under `url`, with credentials from the environment. Needs a
    /// multi-threaded tokio runtime, which every harvest command runs on.
    pub fn open(url: &str, name: &str, options: &Options) -> Result<Bucket, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("[output] dir {url} is not a valid URL: {e}"))?;
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" | "s3a" => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(url);
                if let Some(endpoint) = &options.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if options.allow_http {
                    builder = builder.with_allow_http(true);
                }
                Arc::new(builder.build().map_err(|e| format!("cannot open {url}: {e}"))?)
            }
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| format!("cannot open {url}: {e}"))?,
            ),
            _ => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| format!("cannot open {url}: {e}"))?,
            ),
        };
        let prefix = parsed.path().trim_matches('/');
        let root = match prefix.is_empty() {
            true => Path::from(name),
            false => Path::from(format!("{prefix}/{name}")),
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "object storage needs harvest's async runtime".to_string())?;
        Ok(Bucket { store, root, url: format!("{}/{name}", url.trim_end_matches('/')), runtime })
    }

    /// A bucket in memory (object_store's `InMemory`: conditional writes, versions and
    /// modification times as a real store keeps them), for unit tests of what several workers
    /// do to one store: clones share it.
    #[cfg(test)]
    pub fn in_memory(name: &str) -> Bucket {
        Bucket {
            store: Arc::new(object_store::memory::InMemory::new()),
            root: Path::from(name),
            url: format!("memory://{name}"),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Where a Delta table at the job's root is: the store at the bucket's root, and the
    /// root's URL.
    pub fn table_location(&self) -> Result<(Arc<dyn ObjectStore>, url::Url), String> {
        let url = url::Url::parse(&self.url).map_err(|e| format!("{} cannot be a table's location: {e}", self.url))?;
        Ok((self.store.clone(), url))
    }

    pub fn url(&self, rel: &str) -> String {
        match rel.is_empty() {
            true => self.url.clone(),
            false => format!("{}/{rel}", self.url),
        }
    }

    fn path(&self, rel: &str) -> Path {
        match rel.is_empty() {
            true => self.root.clone(),
            false => Path::from(format!("{}/{rel}", self.root)),
        }
    }

    /// Run a store call to completion from synchronous code, on a runtime thread or off one.
    fn block<F: Future>(&self, future: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.runtime.block_on(future)),
            Err(_) => self.runtime.block_on(future),
        }
    }

    /// The store's error as an I/O error naming the URL, its sources' words included (never
    /// credentials: the store's errors name paths and statuses).
    fn io(&self, rel: &str, e: object_store::Error) -> io::Error {
        let kind = match e {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::NotImplemented { .. } => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("{}: {}", self.url(rel), crate::error::chain(&e)))
    }

    pub fn get(&self, rel: &str) -> io::Result<Option<(Vec<u8>, Version)>> {
        let path = self.path(rel);
        self.block(async {
            match self.store.get(&path).await {
                Ok(got) => {
                    let version = Version { e_tag: got.meta.e_tag.clone(), version: got.meta.version.clone() };
                    let bytes = got.bytes().await.map_err(|e| self.io(rel, e))?;
                    Ok(Some((bytes.to_vec(), version)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.io(rel, e)),
            }
        })
    }

    pub fn head(&self, rel: &str) -> io::Result<Option<object_store::ObjectMeta>> {
        let path = self.path(rel);
        match self.block(self.store.head(&path)) {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.io(rel, e)),
        }
    }

    pub fn put(&self, rel: &str, bytes: &[u8], mode: Put) -> Result<Version, PutError> {
        let mode = match mode {
            Put::Overwrite => PutMode::Overwrite,
            Put::Create => PutMode::Create,
            Put::Update(v) => PutMode::Update(UpdateVersion { e_tag: v.e_tag, version: v.version }),
        };
        let options = PutOptions { mode, ..PutOptions::default() };
        let payload = PutPayload::from(bytes.to_vec());
        match self.block(self.store.put_opts(&self.path(rel), payload, options)) {
            Ok(put) => Ok(Version { e_tag: put.e_tag, version: put.version }),
            Err(object_store::Error::AlreadyExists { .. }) => Err(PutError::Exists),
            Err(object_store::Error::Precondition { .. }) => Err(PutError::Changed),
            // An update of an object that is gone is a change too.
            Err(object_store::Error::NotFound { .. }) => Err(PutError::Changed),
            Err(e) => Err(PutError::Io(self.io(rel, e))),
        }
    }

    pub fn delete(&self, rel: &str) -> io::Result<()> {
        match self.block(self.store.delete(&self.path(rel))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.io(rel, e)),
        }
    }

    pub fn list(&self, dir: &str) -> io::Result<Vec<Entry>> {
        let prefix = self.path(dir);
        let listed = self.block(self.store.list_with_delimiter(Some(&prefix))).map_err(|e| self.io(dir, e))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|meta| {
                Some(Entry { name: meta.location.filename()?.to_string(), modified: meta.last_modified })
            })
            .collect())
    }

    /// Upload the file at `local` as `rel` in a multipart upload, visible once complete; an
    /// upload that fails is aborted, leaving nothing under the key.
    pub fn upload(&self, local: &LocalPath, rel: &str) -> io::Result<()> {
        let mut file = std::fs::File::open(local)?;
        let path = self.path(rel);
        self.block(async {
            let upload = self.store.put_multipart(&path).await.map_err(|e| self.io(rel, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
            let mut buffer = vec![0u8; 1 << 20];
            let sent: io::Result<()> = async {
                loop {
                    let n = file.read(&mut buffer)?;
                    if n == 0 {
                        return Ok(());
                    }
                    writer.wait_for_capacity(4).await.map_err(|e| self.io(rel, e))?;
                    writer.write(&buffer[..n]);
                }
            }
            .await;
            match sent {
                Ok(()) => writer.finish().await.map(|_| ()).map_err(|e| self.io(rel, e)),
                Err(e) => {
                    let _ = writer.abort().await;
                    Err(e)
                }
            }
        })
    }

    /// The store's clock: the modification time it gives an object written now.
    pub fn now(&self) -> io::Result<chrono::DateTime<chrono::Utc>> {
        let rel = format!("_harvest/clock-{:016x}", rand::random::<u64>());
        self.put(&rel, b"", Put::Overwrite).map_err(|e| io::Error::other(e.to_string()))?;
        let meta = self.head(&rel)?.ok_or_else(|| io::Error::other("the clock object vanished"))?;
        self.delete(&rel)?;
        Ok(meta.last_modified)
    }
}
