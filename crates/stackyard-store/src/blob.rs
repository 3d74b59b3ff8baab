//! Package bytes, addressed by digest.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use stackyard_core::Digest;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// An inclusive byte range, already checked against the blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRange {
    pub start: u64,
    pub end: u64,
}

impl BlobRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A blob's bytes (or the requested range of them), streamed.
pub struct BlobReader {
    pub body: BoxStream<'static, io::Result<Bytes>>,
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Moves a complete, verified file into the store under its digest. The
    /// blob becomes visible all at once or not at all.
    async fn put_file(&self, digest: &Digest, file: &Path) -> io::Result<()>;
    async fn open(&self, digest: &Digest, range: Option<BlobRange>) -> io::Result<BlobReader>;
    /// Removes the blob; removing a missing blob is not an error.
    async fn delete(&self, digest: &Digest) -> io::Result<()>;
    /// Answers when the store can be written to.
    async fn ping(&self) -> io::Result<()>;
    /// Uploads straight from clients, when this store takes them (object stores do).
    fn direct(&self) -> Option<&dyn DirectUploads> {
        None
    }
}

/// A presigned S3 POST: the form fields to send before the file.
#[derive(Debug, Clone)]
pub struct PresignedPost {
    pub url: String,
    pub fields: std::collections::BTreeMap<String, String>,
}

/// An object a client uploaded, waiting to be processed.
#[derive(Debug, Clone, Copy)]
pub struct StagedObject {
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// A store that clients upload to directly, through URLs it presigns. The
/// upload is *staged* under its upload id; once processed, it is promoted to
/// its digest (or discarded).
#[async_trait]
pub trait DirectUploads: Send + Sync {
    /// A POST policy for the staged key, with a size range and expiry.
    fn presign_post(
        &self,
        upload_id: &str,
        min_size: u64,
        max_size: u64,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> PresignedPost;
    /// A presigned PUT URL for the staged key.
    async fn presign_put(&self, upload_id: &str, expires_in: std::time::Duration) -> io::Result<String>;
    /// The staged object, if the client has uploaded it.
    async fn staged(&self, upload_id: &str) -> io::Result<Option<StagedObject>>;
    async fn read_staged(&self, upload_id: &str) -> io::Result<BoxStream<'static, io::Result<Bytes>>>;
    /// Copies the staged object to its digest's key, inside the store.
    async fn promote(&self, upload_id: &str, digest: &Digest) -> io::Result<()>;
    /// Removes the staged object; a missing one is not an error.
    async fn discard(&self, upload_id: &str) -> io::Result<()>;
    /// A presigned GET of a blob that downloads as `filename`.
    async fn presign_get(
        &self,
        digest: &Digest,
        filename: &str,
        expires_in: std::time::Duration,
    ) -> io::Result<String>;
}

/// Blobs as files under `root/sha256/<2 hex>/<64 hex>`.
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    pub async fn open_dir(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(root.join("sha256")).await?;
        Ok(Self { root })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    #[tracing::instrument(skip(self, file), fields(digest = %digest))]
    async fn put_file(&self, digest: &Digest, file: &Path) -> io::Result<()> {
        let target = self.path(digest);
        let dir = target.parent().expect("blob paths have a parent").to_path_buf();
        tokio::fs::create_dir_all(&dir).await?;
        // The bytes must be on disk before the name points at them.
        tokio::fs::File::open(file).await?.sync_all().await?;
        tokio::fs::rename(file, &target).await?;
        // And the rename itself must survive a crash.
        tokio::fs::File::open(&dir).await?.sync_all().await?;
        Ok(())
    }

    #[tracing::instrument(skip(self), fields(digest = %digest))]
    async fn open(&self, digest: &Digest, range: Option<BlobRange>) -> io::Result<BlobReader> {
        let mut file = tokio::fs::File::open(self.path(digest)).await?;
        let body = match range {
            None => tokio_util::io::ReaderStream::new(file).boxed(),
            Some(range) => {
                file.seek(io::SeekFrom::Start(range.start)).await?;
                tokio_util::io::ReaderStream::new(file.take(range.len())).boxed()
            }
        };
        Ok(BlobReader { body })
    }

    #[tracing::instrument(skip(self), fields(digest = %digest))]
    async fn delete(&self, digest: &Digest) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(digest)).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn ping(&self) -> io::Result<()> {
        let probe = self.root.join(".ping");
        tokio::fs::write(&probe, b"ok").await?;
        tokio::fs::remove_file(&probe).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(reader: BlobReader) -> Vec<u8> {
        let chunks: Vec<_> = reader.body.collect().await;
        chunks.into_iter().flat_map(|c| c.unwrap().to_vec()).collect()
    }

    #[tokio::test]
    async fn stores_reads_ranges_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open_dir(dir.path().join("blobs")).await.unwrap();
        let digest = Digest::from_sha256(&[7; 32]);
        let tmp = dir.path().join("upload.tmp");
        tokio::fs::write(&tmp, b"0123456789").await.unwrap();

        store.put_file(&digest, &tmp).await.unwrap();
        assert!(!tmp.exists(), "the temporary file is moved, not copied");
        assert_eq!(collect(store.open(&digest, None).await.unwrap()).await, b"0123456789");
        let range = BlobRange { start: 2, end: 4 };
        assert_eq!(collect(store.open(&digest, Some(range)).await.unwrap()).await, b"234");

        store.delete(&digest).await.unwrap();
        store.delete(&digest).await.unwrap();
        assert!(store.open(&digest, None).await.is_err());
        store.ping().await.unwrap();
    }
}
