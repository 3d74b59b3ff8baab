//! The metadata store interface and the records it exchanges.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use stackyard_api::{
    ArtifactState, ArtifactSummary, ArtifactVersion, AuditEntry, Dependents, Deployment, DeploymentStatus,
    Event, RawDeployment, RevisionSummary, TokenInfo,
};
use stackyard_core::{ArtifactKey, Digest, Manifest, Organization, PackageFormat, Selector, VersionRef};

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
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// A plan that breaks the rules; each item names one problem.
    #[error("the plan is invalid")]
    InvalidPlan(Vec<Value>),
    #[error("{artifact_key} is needed by {}", .dependents.join(", "))]
    HasDependents { artifact_key: String, dependents: Vec<String> },
    #[error("the artifact is not in the plan")]
    NotInPlan,
    #[error("the revision is no longer current")]
    Superseded,
    #[error("this is the last active admin token")]
    LastAdmin,
    #[error("the report is refused")]
    ReportRefused(crate::rollout::ReportRefusal),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Who makes a change, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's name; `anonymous` without authentication, `system` for the server.
    pub name: String,
    pub token_id: Option<String>,
    pub remote_addr: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Self { name: "system".into(), token_id: None, remote_addr: None }
    }
}

/// Filters and page position for the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub selector: Option<String>,
    /// Entries with a larger id.
    pub after_id: Option<i64>,
    /// Entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    pub limit: u32,
}

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
    /// The token that asked for the upload.
    pub created_by: Option<String>,
    /// Sent by the client straight to the object store, and processed from
    /// there on `POST /uploads/{id}/complete` or by the pending-upload sweep.
    pub direct: bool,
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

impl UploadRecord {
    /// An upload is the doing of whoever presigned it, from wherever the bytes came.
    pub fn uploader(&self, remote_addr: Option<String>) -> Actor {
        Actor {
            name: self.upload.created_by.clone().unwrap_or_else(|| "anonymous".into()),
            token_id: None,
            remote_addr,
        }
    }
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

/// `If-Match` / `If-None-Match: *` of a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match`: `Some(vec![])` stands for `*` (the deployment must exist).
    pub if_match: Option<Vec<String>>,
    /// `If-None-Match: *`: the deployment must not exist.
    pub if_none_match_any: bool,
}

/// What a plan write changes.
#[derive(Debug, Clone)]
pub enum PlanChange {
    /// Create or replace the whole plan. `organization: None` keeps the current one.
    Replace { organization: Option<Organization>, artifacts: Vec<(ArtifactKey, Option<VersionRef>)> },
    /// Add one artifact, or re-pin it.
    Pin { artifact_key: ArtifactKey, version: Option<VersionRef> },
    /// Remove one artifact.
    Remove { artifact_key: ArtifactKey },
}

#[derive(Debug, Clone)]
pub struct PlanWrite {
    pub selector: Selector,
    pub change: PlanChange,
    pub preconditions: Preconditions,
    /// Validate and answer, storing nothing.
    pub dry_run: bool,
    pub actor: Actor,
}

/// The result of a plan write; each carries the deployment, with its diff
/// when something changed.
#[derive(Debug, Clone)]
pub enum PlanOutcome {
    /// A new deployment (or one re-created after a delete).
    Created(Deployment),
    /// A new revision of an existing deployment.
    Revised(Deployment),
    /// The plan equals the current one: nothing stored.
    Unchanged(Deployment),
}

/// Filters and page position for `GET /deployments`; empty lists match all.
#[derive(Debug, Clone, Default)]
pub struct DeploymentQuery {
    pub selectors: Vec<String>,
    pub artifact_keys: Vec<String>,
    pub organizations: Vec<String>,
    /// Selector globs (`*`, `?`) the caller may see; empty: all.
    pub selector_globs: Vec<String>,
    pub after: Option<String>,
    pub limit: u32,
}

/// Everything the registry keeps besides package bytes.
pub trait MetadataStore: ArtifactStore + DeploymentStore + AccessStore {}

impl<T: ArtifactStore + DeploymentStore + AccessStore> MetadataStore for T {}

/// A token as stored: its secret only as a hash.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub info: TokenInfo,
    pub secret_hash: String,
}

/// API tokens and the audit log.
#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    async fn create_token(&self, token: &TokenRecord, actor: &Actor) -> StoreResult<()>;
    /// The token with this secret hash, revoked or expired ones included.
    async fn token_by_hash(&self, secret_hash: &str) -> StoreResult<Option<TokenInfo>>;
    /// Tokens by id, after `after`.
    async fn list_tokens(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<TokenInfo>>;
    /// Revokes at once; `NotFound` for an unknown id, `LastAdmin` rather
    /// than leave no active admin token.
    async fn revoke_token(&self, id: &str, at: DateTime<Utc>, actor: &Actor) -> StoreResult<TokenInfo>;
    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()>;
    /// Whether an admin token that is neither revoked nor expired exists.
    async fn has_active_admin(&self, now: DateTime<Utc>) -> StoreResult<bool>;
    /// The audit log, oldest first.
    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;
}

/// Uploads, artifacts and their versions.
#[async_trait]
pub trait ArtifactStore: Send + Sync + 'static {
    /// Answers when the database can be reached.
    async fn ping(&self) -> StoreResult<()>;

    async fn create_upload(&self, upload: &NewUpload) -> StoreResult<()>;
    async fn get_upload(&self, upload_id: &str) -> StoreResult<UploadRecord>;
    /// Marks the upload as started; succeeds exactly once per upload, and
    /// never after it expired.
    async fn claim_upload(&self, upload_id: &str, now: DateTime<Utc>) -> StoreResult<UploadRecord>;
    async fn reject_upload(&self, upload_id: &str, error: &Value) -> StoreResult<()>;
    /// Undoes a claim after a failure that may pass, so the upload can be retried.
    async fn release_upload(&self, upload_id: &str) -> StoreResult<()>;
    /// Records the version (or finds the one with the same digest) and marks
    /// the upload registered, in one transaction.
    async fn register_version(
        &self,
        upload_id: &str,
        version: &NewVersion,
        actor: &Actor,
    ) -> StoreResult<Registered>;
    /// Rejects uploads whose bytes started arriving but never finished (the
    /// process stopped mid-upload). Returns how many.
    async fn reject_interrupted_uploads(&self, error: &Value) -> StoreResult<u64>;
    /// Direct uploads not yet claimed that expire (or expired) after `since`, oldest first.
    async fn pending_direct_uploads(
        &self,
        since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<UploadRecord>>;

    async fn list_artifacts(&self, query: &ArtifactQuery) -> StoreResult<Vec<ArtifactSummary>>;
    async fn get_artifact(&self, key: &ArtifactKey) -> StoreResult<ArtifactRecord>;
    async fn get_version(&self, key: &ArtifactKey, version: &VersionRef) -> StoreResult<ArtifactVersion>;
    /// Whether any version still refers to these bytes.
    async fn digest_in_use(&self, digest: &Digest) -> StoreResult<bool>;
    /// Deletes one version; refuses with [`StoreError::VersionInUse`] while a
    /// deployment's current plan uses it.
    async fn delete_version(
        &self,
        key: &ArtifactKey,
        version: &VersionRef,
        actor: &Actor,
    ) -> StoreResult<ArtifactVersion>;
    async fn dependents(&self, key: &ArtifactKey) -> StoreResult<Dependents>;
}

/// Deployments, their revisions and rollout status, and the event outbox.
#[async_trait]
pub trait DeploymentStore: Send + Sync + 'static {
    /// Validates and applies a plan change as one transaction: the revision,
    /// the reverse index and the `deployment.revision_created` event together.
    async fn write_plan(&self, write: &PlanWrite) -> StoreResult<PlanOutcome>;
    /// Removes a deployment; its revisions stay readable.
    async fn delete_deployment(
        &self,
        selector: &Selector,
        preconditions: &Preconditions,
        actor: &Actor,
    ) -> StoreResult<()>;
    /// The current revision.
    async fn get_deployment(&self, selector: &Selector) -> StoreResult<Deployment>;
    /// The current revision, its plan left as the JSON it is stored as: for
    /// answering reads, which need not decode it.
    async fn get_raw_deployment(&self, selector: &Selector) -> StoreResult<RawDeployment>;
    async fn list_deployments(&self, query: &DeploymentQuery) -> StoreResult<Vec<Deployment>>;
    /// Revisions newest first, those below `before` when given. `NotFound`
    /// when the selector never had a deployment.
    async fn list_revisions(
        &self,
        selector: &Selector,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<RevisionSummary>>;
    async fn get_status(&self, selector: &Selector, status_id: &str) -> StoreResult<DeploymentStatus>;
    /// Records an engine's report on the current revision, by the rollout rules.
    async fn report_status(
        &self,
        selector: &Selector,
        status_id: &str,
        artifact_key: &ArtifactKey,
        state: ArtifactState,
        message: Option<&str>,
        actor: &Actor,
    ) -> StoreResult<DeploymentStatus>;
    /// Sets the artifact of the current revision back to pending and emits
    /// `deployment.triggered`; answers the revision's status id.
    async fn trigger(
        &self,
        selector: &Selector,
        artifact_key: &ArtifactKey,
        trigger_id: &str,
        actor: &Actor,
    ) -> StoreResult<String>;

    /// Events with an id above `after`, oldest first.
    async fn list_events(&self, after: i64, limit: u32) -> StoreResult<Vec<Event>>;
    /// Takes (or renews) the lease on delivering to a sink for `lease`, unless
    /// another owner holds it unexpired; answers the id of the last event
    /// delivered to the sink (0 before any) when the lease is `owner`'s.
    async fn claim_sink(
        &self,
        sink: &str,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> StoreResult<Option<i64>>;
    /// Records a delivery and renews the lease; false when the lease is no
    /// longer `owner`'s (it expired and another took it). Never moves back.
    async fn advance_sink(
        &self,
        sink: &str,
        owner: &str,
        event_id: i64,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> StoreResult<bool>;
    /// Gives the lease up, if `owner` holds it.
    async fn release_sink(&self, sink: &str, owner: &str) -> StoreResult<()>;
    /// The id of the last event delivered to a sink (0 before any).
    async fn sink_position(&self, sink: &str) -> StoreResult<i64>;
}
