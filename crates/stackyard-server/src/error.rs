//! One error type for every handler, answered as RFC 9457 problem+json.
//!
//! The public message is kept apart from the internal cause: a 5xx logs its
//! cause and tells the client only that something failed on our side.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use stackyard_api::ArtifactState;
use stackyard_api::Problem;
use stackyard_store::StoreError;
use stackyard_store::rollout::ReportRefusal;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// What a 503 asks clients to wait before retrying.
const RETRY_AFTER_SECS: u32 = 2;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code; the problem `type` is derived from it.
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), errors: Vec::new() }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// A failure on our side: the cause goes to the log, not to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server failed to handle the request; the cause is in its log",
        )
    }

    /// A dependency failed for now (the database is locked or unreachable,
    /// the package store refuses or times out): 503 with `Retry-After`, the
    /// cause in the log. Nothing was changed, so the same request can be
    /// sent again once the dependency is back.
    pub fn unavailable(dependency: &'static str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(dependency, error = %cause, "a dependency failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("the {dependency} is unavailable for now; nothing was changed, retry later"),
        )
    }

    /// The disk holding packages or the database is full: 507, nothing kept.
    pub fn storage_full(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "out of storage");
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            "the server has no space left to store this; nothing was kept",
        )
    }

    /// A package store failure: 507 when its disk is full, else 503.
    pub fn blob_store(cause: std::io::Error) -> Self {
        if is_storage_full(&cause) {
            Self::storage_full(cause)
        } else {
            Self::unavailable("package store", cause)
        }
    }

    /// Whether the request may be retried as is: the failure was ours and transient.
    pub fn is_transient(&self) -> bool {
        matches!(self.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE)
    }

    pub fn with_errors(mut self, errors: Vec<Value>) -> Self {
        self.errors = errors;
        self
    }

    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:stackyard:problem:{}", self.code),
            title: title(self.code),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            errors: self.errors.clone(),
        }
    }
}

/// `no_manifest` -> `No manifest`.
fn title(code: &str) -> String {
    let words = code.replace('_', " ");
    let mut chars = words.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).expect("problems always serialise");
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"stackyard\""));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::not_found("no such resource"),
            StoreError::UploadAlreadyUsed => Self::new(
                StatusCode::CONFLICT,
                "upload_already_used",
                "this presigned upload has already been used; request a new URL",
            ),
            StoreError::UploadExpired => {
                Self::new(StatusCode::FORBIDDEN, "upload_expired", "this presigned upload has expired")
            }
            StoreError::VersionInUse { selectors } => Self::new(
                StatusCode::CONFLICT,
                "version_in_use",
                format!("the version is in the current plan of {}", selectors.join(", ")),
            )
            .with_errors(vec![serde_json::json!({"code": "version_in_use", "selectors": selectors})]),
            StoreError::PreconditionFailed(detail) => Self::new(StatusCode::PRECONDITION_FAILED, "precondition_failed", detail),
            StoreError::InvalidPlan(errors) => {
                let mut counts = std::collections::BTreeMap::<&str, usize>::new();
                for code in errors.iter().filter_map(|e| e["code"].as_str()) {
                    *counts.entry(code).or_default() += 1;
                }
                let summary: Vec<String> = counts.iter().map(|(code, n)| format!("{n} {code}")).collect();
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_plan",
                    format!("the plan is invalid ({}); each problem is listed in errors", summary.join(", ")),
                )
                .with_errors(errors)
            }
            StoreError::HasDependents { artifact_key, dependents } => Self::new(
                StatusCode::CONFLICT,
                "has_dependents",
                format!("{artifact_key} cannot be removed while {} depend(s) on it", dependents.join(", ")),
            )
            .with_errors(vec![
                serde_json::json!({"code": "has_dependents", "artifact_key": artifact_key, "dependents": dependents}),
            ]),
            StoreError::NotInPlan => Self::not_found("the artifact is not in this deployment's plan"),
            StoreError::Superseded => Self::new(
                StatusCode::CONFLICT,
                "revision_superseded",
                "a newer revision has replaced this one; report on the current revision's status id",
            ),
            StoreError::LastAdmin => Self::new(
                StatusCode::CONFLICT,
                "last_admin_token",
                "this is the last active admin token; create another admin token before revoking it",
            ),
            StoreError::ReportRefused(ReportRefusal::DependenciesNotReady(waiting)) => Self::new(
                StatusCode::CONFLICT,
                "dependencies_not_ready",
                format!("these dependencies have not succeeded yet: {}", waiting.join(", ")),
            )
            .with_errors(
                waiting.iter().map(|d| serde_json::json!({"code": "dependency_not_succeeded", "dependency": d})).collect(),
            ),
            StoreError::ReportRefused(ReportRefusal::Backwards { from, to }) => Self::new(
                StatusCode::CONFLICT,
                "state_regression",
                format!(
                    "the artifact cannot move from {} to {}; use POST /_trigger to deploy it again",
                    state_name(from),
                    state_name(to)
                ),
            ),
            StoreError::Database(e) => database_error(e),
            other @ StoreError::Corrupt(_) => Self::internal(other),
        }
    }
}

/// Tells a database that is down, busy or full (503 or 507, worth a retry)
/// from a failure that is a bug (500).
fn database_error(e: sqlx::Error) -> ApiError {
    use sqlx::Error as E;
    match &e {
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed | E::Protocol(_) => {
            ApiError::unavailable("database", e)
        }
        E::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.as_ref() {
                // SQLite: SQLITE_FULL (and its extended codes).
                c if sqlite_primary(c) == Some(13) => ApiError::storage_full(e),
                // SQLite: BUSY, LOCKED, IOERR, CANTOPEN.
                c if matches!(sqlite_primary(c), Some(5 | 6 | 10 | 14)) => {
                    ApiError::unavailable("database", e)
                }
                // PostgreSQL: disk full; connection lost, shutting down, too many connections.
                "53100" => ApiError::storage_full(e),
                c if c.starts_with("08")
                    || c.starts_with("57P")
                    || c == "53300"
                    || c == "40001"
                    || c == "40P01" =>
                {
                    ApiError::unavailable("database", e)
                }
                _ => ApiError::internal(e),
            }
        }
        _ => ApiError::internal(e),
    }
}

/// SQLite's code as a number, primary code in the low byte; `None` for
/// PostgreSQL's five-character SQLSTATEs (some of which are all digits).
fn sqlite_primary(code: &str) -> Option<u32> {
    if code.len() == 5 {
        return None;
    }
    code.parse::<u32>().ok().map(|c| c & 0xff)
}

fn is_storage_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        || e.raw_os_error() == Some(28)
}

fn state_name(state: ArtifactState) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_come_from_codes() {
        assert_eq!(title("no_manifest"), "No manifest");
        assert_eq!(ApiError::not_found("x").problem().kind, "urn:stackyard:problem:not_found");
    }
}
