//! Artifacts and their versions: listing, describing, downloading, deleting.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use stackyard_api::{Artifact, ArtifactList, ArtifactVersion, Dependents, Problem};
use stackyard_core::access::Access;
use stackyard_core::key::ArtifactKey;
use stackyard_core::{Digest, PackageFormat, VersionRef};
use stackyard_store::{ArtifactQuery, BlobRange, StoreError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::config::Downloads;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;
use crate::pagination::Page;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_artifacts))
        .routes(routes!(get_artifact))
        .routes(routes!(get_version, delete_version))
        .routes(routes!(download_version))
        .routes(routes!(artifact_dependents))
}

/// How long a download redirect's presigned URL stays valid.
const REDIRECT_EXPIRY: std::time::Duration = std::time::Duration::from_secs(300);

fn parse_key(key: &str) -> ApiResult<ArtifactKey> {
    ArtifactKey::parse(key).map_err(|e| {
        ApiError::bad_request("invalid_artifact_key", format!("'{key}' is not an artifact key: {e}"))
    })
}

fn parse_version(version: &str) -> ApiResult<VersionRef> {
    VersionRef::parse(version)
        .map_err(|e| ApiError::bad_request("invalid_version", format!("'{version}': {e}")))
}

fn artifact_missing(key: &ArtifactKey) -> impl Fn(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(format!("no artifact '{key}'")),
        other => other.into(),
    }
}

fn version_missing<'a>(
    key: &'a ArtifactKey,
    version: &'a VersionRef,
) -> impl Fn(StoreError) -> ApiError + 'a {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(format!("artifact '{key}' has no version {version}")),
        other => other.into(),
    }
}

/// Lists artifacts, by key.
#[utoipa::path(
    get, path = "/artifacts", tag = "artifacts",
    security(("bearer" = ["reader"])),
    params(
        ("prefix" = Option<String>, Query, description = "Only keys starting with this"),
        ("label" = Option<Vec<String>>, Query, description = "`name=value`; repeat to require several. Matches the latest version's labels"),
        ("limit" = Option<u32>, Query, description = "Page size: default 50, larger values are clamped to 500"),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`"),
    ),
    responses(
        (status = 200, body = ArtifactList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_artifacts(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<axum::Json<ArtifactList>> {
    caller.require(Access::Read)?;
    query.only(&["prefix", "label", "limit", "cursor"])?;
    let page = Page::from_query(&query)?;
    let prefix = query.one("prefix").filter(|p| !p.is_empty()).map(str::to_string);
    if let Some(p) = &prefix
        && !p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ApiError::bad_request(
            "invalid_prefix",
            "prefix may only hold what artifact keys hold: lower-case letters, digits and '-'",
        ));
    }
    let labels = query
        .all("label")
        .map(|l| match l.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
            _ => {
                Err(ApiError::bad_request("invalid_label", format!("label filter '{l}' must be name=value")))
            }
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let artifacts = state
        .store
        .list_artifacts(&ArtifactQuery { prefix, labels, after: page.after.clone(), limit: page.limit })
        .await?;
    let next_cursor = page.next_cursor(&artifacts, |a| a.artifact_key.clone());
    Ok(axum::Json(ArtifactList { artifacts, next_cursor }))
}

/// Describes an artifact with all its versions, newest first.
#[utoipa::path(
    get, path = "/artifacts/{artifact_key}", tag = "artifacts",
    security(("bearer" = ["reader"])),
    params(("artifact_key" = String, Path)),
    responses(
        (status = 200, body = Artifact),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_artifact(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<Artifact>> {
    caller.require(Access::Read)?;
    let key = parse_key(&key)?;
    let record = state.store.get_artifact(&key).await.map_err(artifact_missing(&key))?;
    let latest = record
        .versions
        .iter()
        .find(|v| v.version == record.summary.latest_version)
        .cloned()
        .ok_or_else(|| ApiError::internal(format!("artifact {key} lacks its latest version")))?;
    Ok(axum::Json(Artifact {
        artifact_key: record.summary.artifact_key,
        stack_name: record.summary.stack_name,
        latest_version: record.summary.latest_version,
        updated_at: record.summary.updated_at,
        latest,
        versions: record.versions,
    }))
}

fn etag(version: &ArtifactVersion) -> HeaderValue {
    let hex = version.digest.strip_prefix("sha256:").unwrap_or(&version.digest);
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header")
}

/// Versions are immutable, so their digest is a strong ETag.
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == etag.to_str().unwrap_or(""))
    })
}

/// Describes one version, by number or digest.
#[utoipa::path(
    get, path = "/artifacts/{artifact_key}/versions/{version}", tag = "artifacts",
    security(("bearer" = ["reader"])),
    params(("artifact_key" = String, Path), ("version" = String, Path, description = "A number or `sha256:<hex>`")),
    responses(
        (status = 200, body = ArtifactVersion, headers(("ETag" = String, description = "The digest's hex, quoted"))),
        (status = 304, description = "`If-None-Match` matched"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((key, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(Access::Read)?;
    let key = parse_key(&key)?;
    let version = parse_version(&version)?;
    let found = state.store.get_version(&key, &version).await.map_err(version_missing(&key, &version))?;
    let tag = etag(&found);
    if not_modified(&headers, &tag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    Ok(([(header::ETAG, tag)], axum::Json(found)).into_response())
}

/// Deletes one version. Its number is never given to another package.
#[utoipa::path(
    delete, path = "/artifacts/{artifact_key}/versions/{version}", tag = "artifacts",
    security(("bearer" = ["publisher"])),
    params(("artifact_key" = String, Path), ("version" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A deployment's current plan uses the version", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((key, version)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Access::Publish)?;
    let key = parse_key(&key)?;
    let version = parse_version(&version)?;
    let deleted = state
        .store
        .delete_version(&key, &version, &caller.actor())
        .await
        .map_err(version_missing(&key, &version))?;
    // The metadata is gone first; the bytes follow unless another version
    // still names them. A crash in between only leaves an unreferenced blob.
    let digest = Digest::parse(&deleted.digest).map_err(ApiError::internal)?;
    if !state.store.digest_in_use(&digest).await? {
        state.blobs.delete(&digest).await.map_err(ApiError::blob_store)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Downloads a version's package. Supports single `Range` requests.
#[utoipa::path(
    get, path = "/artifacts/{artifact_key}/versions/{version}/download", tag = "artifacts",
    security(("bearer" = ["reader"])),
    params(("artifact_key" = String, Path), ("version" = String, Path)),
    responses(
        (status = 200, description = "The package bytes, typed by the package's format", content((Vec<u8> = "application/gzip"), (Vec<u8> = "application/zip"), (Vec<u8> = "application/x-tar"), (Vec<u8> = "application/octet-stream"))),
        (status = 206, description = "The requested range, typed by the package's format", content((Vec<u8> = "application/gzip"), (Vec<u8> = "application/zip"), (Vec<u8> = "application/x-tar"), (Vec<u8> = "application/octet-stream"))),
        (status = 302, description = "On an object store: a presigned URL of the package (`s3_downloads = \"redirect\"`)"),
        (status = 304, description = "`If-None-Match` matched"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range is outside the package", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn download_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((key, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(Access::Read)?;
    let key = parse_key(&key)?;
    let version = parse_version(&version)?;
    let found = state.store.get_version(&key, &version).await.map_err(version_missing(&key, &version))?;
    let tag = etag(&found);
    if not_modified(&headers, &tag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    let digest = Digest::parse(&found.digest).map_err(ApiError::internal)?;
    let format = PackageFormat::parse(&found.format);
    let extension = format.map_or("bin", PackageFormat::as_str);
    let media_type = format.map_or("application/octet-stream", PackageFormat::media_type);
    let filename = format!("{}-{}.{extension}", found.artifact_key, found.version);
    if let Some(direct) = state.blobs.direct()
        && state.settings.s3.downloads == Downloads::Redirect
    {
        // The bytes come from the object store itself; a Range header follows the redirect.
        let url =
            direct.presign_get(&digest, &filename, REDIRECT_EXPIRY).await.map_err(ApiError::blob_store)?;
        let location = HeaderValue::from_str(&url).map_err(ApiError::internal)?;
        return Ok((StatusCode::FOUND, [(header::LOCATION, location), (header::ETAG, tag)]).into_response());
    }
    let range = requested_range(&headers, &tag, found.size)?;
    let blob = state.blobs.open(&digest, range).await.map_err(ApiError::blob_store)?;
    let disposition = format!("attachment; filename=\"{filename}\"");
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, media_type)
        .header(header::ETAG, tag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_DISPOSITION, disposition);
    response = match range {
        None => response.status(StatusCode::OK).header(header::CONTENT_LENGTH, found.size),
        Some(r) => response
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, r.len())
            .header(header::CONTENT_RANGE, format!("bytes {}-{}/{}", r.start, r.end, found.size)),
    };
    response.body(Body::from_stream(blob.body)).map_err(ApiError::internal)
}

/// The one range to send, or `None` for the whole package. Several ranges,
/// or an `If-Range` that no longer matches, get the whole package (RFC 9110
/// allows ignoring `Range`).
fn requested_range(headers: &HeaderMap, etag: &HeaderValue, size: u64) -> ApiResult<Option<BlobRange>> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    if headers.get(header::IF_RANGE).is_some_and(|v| v != etag) {
        return Ok(None);
    }
    let unsatisfiable = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            format!("the package is {size} bytes; the range '{value}' is outside it"),
        )
    };
    let parsed = http_range_header::parse_range_header(value).map_err(|_| unsatisfiable())?;
    let ranges = parsed.validate(size).map_err(|_| unsatisfiable())?;
    match ranges.as_slice() {
        [one] => Ok(Some(BlobRange { start: *one.start(), end: *one.end() })),
        _ => Ok(None),
    }
}

/// What depends on an artifact: artifacts whose versions need it, and
/// deployments whose current plan includes it.
#[utoipa::path(
    get, path = "/artifacts/{artifact_key}/dependents", tag = "artifacts",
    security(("bearer" = ["reader"])),
    params(("artifact_key" = String, Path)),
    responses(
        (status = 200, body = Dependents),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn artifact_dependents(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<Dependents>> {
    let principal = caller.require(Access::Read)?;
    let key = parse_key(&key)?;
    state.store.get_artifact(&key).await.map_err(artifact_missing(&key))?;
    let mut dependents = state.store.dependents(&key).await?;
    if !principal.scope.is_unlimited() {
        // Only the deployments the token may see.
        let query = stackyard_store::DeploymentQuery {
            selectors: dependents.selectors.clone(),
            organizations: principal.scope.organizations.clone(),
            selector_globs: principal.scope.selectors.clone(),
            limit: u32::MAX,
            ..Default::default()
        };
        let visible: Vec<String> =
            state.store.list_deployments(&query).await?.into_iter().map(|d| d.selector).collect();
        dependents.selectors.retain(|s| visible.contains(s));
    }
    Ok(axum::Json(dependents))
}
