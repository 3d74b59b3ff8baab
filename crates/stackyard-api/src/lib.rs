//! The bodies of Stackyard's HTTP API, shared by the server and its clients.
//!
//! These types are the JSON contract of `API.md`; the OpenAPI document the
//! server publishes is derived from them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// An RFC 9457 problem document: every 4xx and 5xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `urn:stackyard:problem:no-manifest`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Machine-readable items, one per problem found, each with a `code`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Value>,
}

/// `POST /presigned_url`: every field is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresignRequest {
    /// The file's name, kept for reference only: the format is detected from the bytes.
    pub filename: Option<String>,
    /// Exact size of the package in bytes; the upload must match it.
    pub content_length: Option<u64>,
    /// Hex SHA-256 of the package; the upload is refused when the bytes differ.
    pub sha256: Option<String>,
    /// Labels added to the version, over those of the manifest.
    pub labels: Option<BTreeMap<String, String>>,
    /// Seconds until the URL expires: default 900, at most 604800 (7 days).
    pub expires_in: Option<u64>,
    /// `POST` (default, multipart form like S3 presigned POST) or `PUT` (raw bytes).
    pub method: Option<UploadMethod>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum UploadMethod {
    Post,
    Put,
}

/// Where and how to send the package.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PresignResponse {
    pub upload_id: String,
    pub method: UploadMethod,
    pub url: String,
    /// With `POST`: form fields to send, in this order, before the `file` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
    /// With `PUT`: headers to send with the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    Pending,
    Registered,
    Rejected,
    Expired,
}

/// An upload and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Upload {
    pub upload_id: String,
    pub state: UploadState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// For a registered upload: false when identical bytes were already a version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// For a rejected upload: why, as a problem document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One uploaded package of an artifact. Immutable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactVersion {
    pub artifact_key: String,
    pub stack_name: String,
    pub version: i64,
    /// `sha256:<64 hex>` of the package bytes.
    pub digest: String,
    pub size: u64,
    /// `zip`, `tar.gz` or `tar`.
    pub format: String,
    /// Artifact keys this version must be deployed after.
    pub depends_on: Vec<String>,
    /// The manifest as uploaded, unknown fields included.
    pub manifest: Value,
    pub labels: BTreeMap<String, String>,
    pub uploaded_at: DateTime<Utc>,
    pub uploaded_by: Option<String>,
}

/// An artifact in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactSummary {
    pub artifact_key: String,
    pub stack_name: String,
    pub latest_version: i64,
    /// How many versions the artifact has.
    pub versions: i64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ArtifactList {
    pub artifacts: Vec<ArtifactSummary>,
    pub next_cursor: Option<String>,
}

/// An artifact with all its versions, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Artifact {
    pub artifact_key: String,
    pub stack_name: String,
    pub latest_version: i64,
    pub updated_at: DateTime<Utc>,
    pub latest: ArtifactVersion,
    pub versions: Vec<ArtifactVersion>,
}

/// Who depends on an artifact.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Dependents {
    pub artifact_key: String,
    /// Artifacts with at least one version whose `depends_on` names this one.
    pub artifacts: Vec<DependentArtifact>,
    /// Selectors whose current plan includes this artifact.
    pub selectors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DependentArtifact {
    pub artifact_key: String,
    /// The versions of that artifact that depend on this one.
    pub versions: Vec<i64>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` with the failing `checks`.
    pub status: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, String>,
}

/// A version as a plan names it: a number, a digest, or (left out) the latest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum VersionSpec {
    Number(i64),
    /// A number as text, or `sha256:<64 hex>`.
    Text(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanItem {
    pub artifact_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentPlan {
    pub artifacts: Vec<PlanItem>,
}

/// `POST /deployments`: create or replace a deployment's plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRequest {
    #[schema(min_length = 1, max_length = 256, pattern = "^[^,\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub selector: String,
    /// Left out: the deployment keeps the organization it has (none for a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub organization: Option<String>,
    pub deployment_plan: DeploymentPlan,
}

/// `POST /deployments/{selector}/artifact/{artifact_key}`: optional body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactPin {
    /// Left out: the latest version at this moment, pinned in the revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionSpec>,
}

/// One artifact of a deployment, with its place in the dependency graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeployedArtifact {
    pub artifact_key: String,
    pub version: i64,
    pub digest: String,
    /// 0 without dependencies, else 1 + the highest wave of its dependencies.
    pub wave: u32,
    /// `root`, `stem`, `leaf` or `standalone`.
    pub role: String,
    pub depends_on: Vec<String>,
    pub dependents: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlanDiff {
    pub added: Vec<DiffEntry>,
    pub removed: Vec<DiffEntry>,
    pub changed: Vec<DiffChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiffEntry {
    pub artifact_key: String,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiffChange {
    pub artifact_key: String,
    pub old_version: i64,
    pub new_version: i64,
}

/// A deployment at one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    pub selector: String,
    pub organization: Option<String>,
    pub revision: i64,
    /// The revision's ETag, unquoted.
    pub status_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Ordered by wave, then key.
    pub artifacts: Vec<DeployedArtifact>,
    /// In write answers: what this revision changed (or would change, on a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<PlanDiff>,
}

/// A [`Deployment`] whose artifacts are still the JSON text its revision
/// stores them as. [`RawDeployment::to_json`] renders exactly what the
/// `Deployment` it stands for serialises to (a test holds the two together),
/// so the hottest read answers without decoding and encoding the plan.
#[derive(Debug, Clone, Serialize)]
pub struct RawDeployment {
    pub selector: String,
    pub organization: Option<String>,
    pub revision: i64,
    pub status_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// A JSON array of [`DeployedArtifact`]s, as this server stored it.
    #[serde(skip)]
    pub artifacts: String,
}

impl RawDeployment {
    /// The deployment's JSON: the other fields serialised, then the stored
    /// artifacts as they are (they were written by this same serialiser).
    pub fn to_json(&self) -> Vec<u8> {
        let mut json = Vec::with_capacity(256 + self.artifacts.len());
        serde_json::to_writer(&mut json, self).expect("plain data always serialises");
        json.pop(); // the closing brace
        json.extend_from_slice(b",\"artifacts\":");
        json.extend_from_slice(self.artifacts.as_bytes());
        json.push(b'}');
        json
    }

    /// The deployment, its artifacts decoded.
    pub fn decode(self) -> serde_json::Result<Deployment> {
        Ok(Deployment {
            artifacts: serde_json::from_str(&self.artifacts)?,
            selector: self.selector,
            organization: self.organization,
            revision: self.revision,
            status_id: self.status_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            diff: None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeploymentList {
    pub deployments: Vec<Deployment>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RevisionSummary {
    pub revision: i64,
    pub status_id: String,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub diff: PlanDiff,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevisionList {
    pub revisions: Vec<RevisionSummary>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactState {
    Pending,
    InProgress,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    Superseded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactStatus {
    pub artifact_key: String,
    pub version: i64,
    pub wave: u32,
    pub state: ArtifactState,
    pub message: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// The rollout of one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentStatus {
    pub selector: String,
    pub status_id: String,
    pub revision: i64,
    pub state: RolloutState,
    /// Whether this is the deployment's current revision.
    pub current: bool,
    pub artifacts: Vec<ArtifactStatus>,
    /// Pending artifacts whose dependencies have all succeeded.
    pub ready: Vec<String>,
}

/// `PUT .../status/{status_id}/artifacts/{artifact_key}`: an engine's report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub state: ArtifactState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    #[schema(min_length = 1, max_length = 256, pattern = "^[^,\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub selector: String,
    #[schema(max_length = 128, pattern = "^[a-z0-9]+(-[a-z0-9]+)*$")]
    pub artifact_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TriggerResponse {
    pub trigger_id: String,
    pub status_id: String,
}

/// One entry of the event stream the sinks receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increasing; unique, for de-duplication.
    pub id: i64,
    /// `deployment.revision_created`, `deployment.triggered` or `deployment.deleted`.
    #[serde(rename = "type")]
    pub kind: String,
    pub at: DateTime<Utc>,
    pub selector: String,
    pub data: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<Event>,
    pub next_cursor: Option<String>,
}

/// `POST /tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// 1 to 100 characters, without control characters.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    /// `reader`, `publisher`, `deployer`, `admin` or `engine`.
    #[schema(pattern = "^(reader|publisher|deployer|admin|engine)$")]
    pub role: String,
    /// Limit the token to deployments of these organizations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizations: Option<Vec<String>>,
    /// Limit the token to selectors matching these globs (`*`, `?`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selectors: Option<Vec<String>>,
    /// Seconds until the token expires; never when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: String,
    pub organizations: Vec<String>,
    pub selectors: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new token, with its secret: shown only in this answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub id: String,
    pub token: String,
    pub name: String,
    pub role: String,
    pub organizations: Vec<String>,
    pub selectors: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
    pub next_cursor: Option<String>,
}

/// One change, as the audit log recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The token's name (`anonymous` without authentication, `system` for the server itself).
    pub actor: String,
    /// e.g. `deployment.revised`, `version.registered`, `token.revoked`.
    pub action: String,
    /// What was changed: a selector, `key@version`, a token id.
    pub target: String,
    pub remote_addr: Option<String>,
    pub details: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_deployment_serialises_as_its_deployment() {
        let artifact = |key: &str, wave| DeployedArtifact {
            artifact_key: key.into(),
            version: 3,
            digest: format!("sha256:{}", "ab".repeat(32)),
            wave,
            role: "stem".into(),
            depends_on: vec![],
            dependents: vec!["app".into()],
        };
        for organization in [None, Some("acme".to_string())] {
            let deployment = Deployment {
                selector: "prod/eu \"1\"".into(),
                organization: organization.clone(),
                revision: 7,
                status_id: "0123abcd".into(),
                created_at: Utc::now(),
                updated_at: Utc::now(),
                artifacts: vec![artifact("net", 0), artifact("db", 1)],
                diff: None,
            };
            let raw = RawDeployment {
                selector: deployment.selector.clone(),
                organization,
                revision: deployment.revision,
                status_id: deployment.status_id.clone(),
                created_at: deployment.created_at,
                updated_at: deployment.updated_at,
                artifacts: serde_json::to_string(&deployment.artifacts).unwrap(),
            };
            assert_eq!(
                String::from_utf8(raw.to_json()).unwrap(),
                serde_json::to_string(&deployment).unwrap()
            );
        }
    }
}
