//! The object store delta-rs writes the table's log through: harvest's own (the local
//! filesystem, or the job's bucket), with the failpoints that let the tests kill a run in the
//! middle of a commit (`HARVEST_FAILPOINT=delta-log-put:1` dies before the log entry is
//! written, `delta-log-written:1` right after, before delta-rs has returned;
//! `delta-data-put:1` before the first data file delta-rs writes itself, as a merge does).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

use crate::output::failpoint;

/// `inner`, with a failpoint on each side of every write to `_delta_log/` and before every
/// other write (a data file of delta-rs's own).
#[derive(Debug)]
pub struct Failpoints {
    inner: Arc<dyn ObjectStore>,
}

impl Failpoints {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Failpoints { inner }
    }
}

impl fmt::Display for Failpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

fn in_log(location: &Path) -> bool {
    location.as_ref().contains("_delta_log/")
}

#[async_trait]
impl ObjectStore for Failpoints {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        match in_log(location) {
            true => failpoint("delta-log-put"),
            false => failpoint("delta-data-put"),
        }
        let put = self.inner.put_opts(location, payload, opts).await;
        if in_log(location) && put.is_ok() {
            failpoint("delta-log-written");
        }
        put
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        failpoint("delta-data-put");
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        if in_log(to) {
            failpoint("delta-log-put");
        }
        self.inner.copy_opts(from, to, options).await
    }
}
