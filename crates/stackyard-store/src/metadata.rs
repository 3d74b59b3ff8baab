//! The metadata store interface and the records it exchanges.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use stackyard_api::{ArtifactSummary, ArtifactVersion, Dependents};
use stackyard_core::{ArtifactKey, Digest, Manifest, PackageFormat, VersionRef};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("the upload has already been used")]
    UploadAlreadyUsed,
    #[error("the upload has expired")]
    UploadExpired,
    #[error("the version is used by the current plan of: {}", .selectors.join(", "))]
    VersionInUse { selectors: Vec<String> },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A presigned upload as the server created it.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub upload_id: String,
    pub method: String,
    pub filename: Option<String>,
    pub min_size: u64,
    pub max_size: u64,
    pub sha256: Option<Digest>,
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredUploadState {
    Pending,
    Registered,
    Rejected,
}

/// An upload with everything known about it.
#[derive(Debug, Clone)]
pub struct UploadRecord {
    pub upload: NewUpload,
    pub claimed_at: Option<DateTime<Utc>>,
    pub state: StoredUploadState,
    pub artifact_key: Option<String>,
    pub version: Option<i64>,
    pub digest: Option<String>,
    pub created: Option<bool>,
    pub error: Option<Value>,
}

/// A verified package, ready to become a version.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub digest: Digest,
    pub size: u64,
    pub format: PackageFormat,
    pub manifest: Manifest,
    /// Manifest labels overlaid with the upload's labels.
    pub labels: BTreeMap<String, String>,
    pub uploaded_at: DateTime<Utc>,
    pub uploaded_by: Option<String>,
}

/// The outcome of registering a package.
#[derive(Debug, Clone)]
pub struct Registered {
    pub version: ArtifactVersion,
    /// False when a version with the same digest already existed.
    pub created: bool,
}

/// Filters and page position for listing artifacts.
#[derive(Debug, Clone, Default)]
pub struct ArtifactQuery {
    /// Only keys starting with this (already checked to use the key alphabet).
    pub prefix: Option<String>,
    /// Only artifacts whose latest version carries every one of these labels.
    pub labels: Vec<(String, String)>,
    /// Keyset position: keys strictly after this one.
    pub after: Option<String>,
    pub limit: u32,
}

/// An artifact with its versions, newest first.
#[derive(Debug, Clone)]
pub struct ArtifactRecord {
    pub summary: ArtifactSummary,
    pub versions: Vec<ArtifactVersion>,
}

#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Answers when the database can be reached.
    async fn ping(&self) -> StoreResult<()>;

    async fn create_upload(&self, upload: &NewUpload) -> StoreResult<()>;
    async fn get_upload(&self, upload_id: &str) -> StoreResult<UploadRecord>;
    /// Marks the upload as started; succeeds exactly once per upload, and
    /// never after it expired.
    async fn claim_upload(&self, upload_id: &str, now: DateTime<Utc>) -> StoreResult<UploadRecord>;
    async fn reject_upload(&self, upload_id: &str, error: &Value) -> StoreResult<()>;
    /// Records the version (or finds the one with the same digest) and marks
    /// the upload registered, in one transaction.
    async fn register_version(&self, upload_id: &str, version: &NewVersion) -> StoreResult<Registered>;
    /// Rejects uploads whose bytes started arriving but never finished (the
    /// process stopped mid-upload). Returns how many.
    async fn reject_interrupted_uploads(&self, error: &Value) -> StoreResult<u64>;

    async fn list_artifacts(&self, query: &ArtifactQuery) -> StoreResult<Vec<ArtifactSummary>>;
    async fn get_artifact(&self, key: &ArtifactKey) -> StoreResult<ArtifactRecord>;
    async fn get_version(&self, key: &ArtifactKey, version: &VersionRef) -> StoreResult<ArtifactVersion>;
    /// Whether any version still refers to these bytes.
    async fn digest_in_use(&self, digest: &Digest) -> StoreResult<bool>;
    /// Deletes one version; refuses with [`StoreError::VersionInUse`] while a
    /// deployment's current plan uses it.
    async fn delete_version(&self, key: &ArtifactKey, version: &VersionRef) -> StoreResult<ArtifactVersion>;
    async fn dependents(&self, key: &ArtifactKey) -> StoreResult<Dependents>;
}
