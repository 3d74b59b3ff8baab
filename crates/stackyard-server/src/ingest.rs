//! Turning received bytes into an artifact version.
//!
//! The bytes are streamed to a spool file while they are counted and hashed
//! (see [`crate::spool`]; memory stays bounded whatever the size), then
//! checked against what the presigned upload allowed, inspected, moved into
//! the blob store and only then registered. Any failure removes the spool file and marks the upload
//! rejected: nothing half-registered is ever left behind.
//!
//! Uploads a client sent straight to an object store go the same way: the
//! staged object is streamed through the same checks, then copied to its
//! digest inside the store (its bytes do not travel back), and the staged
//! object is removed whatever the outcome.

use std::path::PathBuf;

use axum::http::StatusCode;
use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt};
use serde_json::json;
use stackyard_core::ManifestError;
use stackyard_core::package::{self, PackageError};
use stackyard_store::{Actor, DirectUploads, NewVersion, Registered, StoreError, UploadRecord};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::spool::Spool;
use crate::state::AppState;

/// Receives an upload's bytes and registers them; on failure, records the
/// rejection on the upload and returns the error to answer with.
pub async fn receive<S, E>(
    state: &AppState,
    upload: &UploadRecord,
    body: S,
    actor: &Actor,
) -> Result<Registered, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    receive_into(state, upload, body, actor, Keep::Spool).await
}

/// Where verified bytes are kept.
#[derive(Clone, Copy)]
enum Keep<'a> {
    /// Move the spool file into the blob store.
    Spool,
    /// Copy the staged object to its digest, inside the object store.
    Staged(&'a dyn DirectUploads),
}

/// Processes a direct upload the caller has claimed, from its staged object.
pub async fn receive_direct(
    state: &AppState,
    upload: &UploadRecord,
    actor: &Actor,
) -> Result<Registered, ApiError> {
    let direct =
        state.blobs.direct().ok_or_else(|| ApiError::internal("direct upload without an object store"))?;
    let upload_id = &upload.upload.upload_id;
    let result = match direct.read_staged(upload_id).await {
        Ok(body) => receive_into(state, upload, body, actor, Keep::Staged(direct)).await,
        Err(e) => {
            let error = ApiError::blob_store(e);
            release_claim(state, upload_id).await;
            Err(error)
        }
    };
    // A transient failure keeps the staged object, for the retry.
    if matches!(&result, Err(e) if e.is_transient()) {
        return result;
    }
    if let Err(e) = direct.discard(upload_id).await {
        tracing::warn!(upload_id, error = %e, "removing the staged upload failed");
    }
    result
}

/// After a failure of ours that may pass (a dependency down, a full disk),
/// the upload goes back to waiting: its URL can be used again.
async fn release_claim(state: &AppState, upload_id: &str) {
    if let Err(e) = state.store.release_upload(upload_id).await {
        tracing::error!(upload_id, error = %e, "releasing the upload's claim failed");
    }
}

async fn record_rejection(state: &AppState, upload_id: &str, error: &ApiError) {
    let problem = serde_json::to_value(error.problem()).expect("problems serialise");
    if let Err(e) = state.store.reject_upload(upload_id, &problem).await {
        tracing::error!(error = %e, "recording the upload's rejection failed");
    }
}

async fn receive_into<S, E>(
    state: &AppState,
    upload: &UploadRecord,
    body: S,
    actor: &Actor,
    keep: Keep<'_>,
) -> Result<Registered, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let spool = SpoolFile(state.spool_dir.join(format!("{}.part", upload.upload.upload_id)));
    let result = process(state, upload, body, &spool.0, actor, keep).await;
    match &result {
        Ok((registered, size)) => {
            let outcome = if registered.created { "created" } else { "existing" };
            state.metrics.record_upload(outcome, *size);
        }
        Err(error) if error.is_transient() => {
            state.metrics.record_upload("failed", 0);
            release_claim(state, &upload.upload.upload_id).await;
        }
        Err(error) => {
            state.metrics.record_upload("rejected", 0);
            record_rejection(state, &upload.upload.upload_id, error).await;
        }
    }
    drop(spool);
    result.map(|(registered, _)| registered)
}

async fn process<S, E>(
    state: &AppState,
    upload: &UploadRecord,
    mut body: S,
    spool: &std::path::Path,
    actor: &Actor,
    keep: Keep<'_>,
) -> Result<(Registered, u64), ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let limits = &upload.upload;
    let mut writer = Spool::create(spool).await.map_err(ApiError::blob_store)?;
    let mut size: u64 = 0;
    let idle = std::time::Duration::from_secs(state.settings.limits.upload_idle_timeout_secs);
    loop {
        // A client that stops sending must not hold a connection and a spool file forever.
        let Ok(next) = tokio::time::timeout(idle, body.next()).await else {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "upload_timeout",
                format!("no bytes arrived for {} seconds; the upload is abandoned", idle.as_secs()),
            ));
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("upload_interrupted", format!("the upload body could not be read: {e}"))
        })?;
        size += chunk.len() as u64;
        if size > limits.max_size {
            return Err(too_large(limits.max_size));
        }
        writer.push(chunk).await.map_err(ApiError::blob_store)?;
    }
    let digest = writer.finish().await.map_err(ApiError::blob_store)?;

    if size < limits.min_size {
        let detail = if limits.min_size == limits.max_size {
            format!("the upload was declared as {} bytes but {size} arrived", limits.min_size)
        } else {
            "the package is empty".to_string()
        };
        return Err(ApiError::bad_request("size_mismatch", detail));
    }
    if let Some(expected) = &limits.sha256
        && *expected != digest
    {
        return Err(ApiError::bad_request(
            "digest_mismatch",
            format!("the upload was declared with {expected} but the bytes hash to {digest}"),
        ));
    }

    let path: PathBuf = spool.to_path_buf();
    let package_limits = state.settings.package_limits;
    let info = tokio::task::spawn_blocking(move || package::inspect(&path, &package_limits))
        .await
        .map_err(ApiError::internal)?
        .map_err(package_error)?;

    // Always moved in, even when a version has these bytes already: that
    // version may be being deleted right now, and renaming identical content
    // over itself is harmless.
    match keep {
        Keep::Spool => state.blobs.put_file(&digest, spool).await,
        Keep::Staged(direct) => direct.promote(&limits.upload_id, &digest).await,
    }
    .map_err(ApiError::blob_store)?;
    let mut labels = info.manifest.labels.clone();
    labels.extend(limits.labels.clone());
    let version = NewVersion {
        digest,
        size,
        format: info.format,
        manifest: info.manifest,
        labels,
        uploaded_at: Utc::now(),
    };
    let registered = state.store.register_version(&limits.upload_id, &version, actor).await?;
    Ok((registered, size))
}

pub fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_large",
        format!("the upload is larger than the {max} bytes this presigned URL allows"),
    )
}

/// Maps a package problem to its status code and problem items.
fn package_error(e: PackageError) -> ApiError {
    let code = e.code();
    let status = match &e {
        PackageError::NotAnArchive => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        PackageError::TooManyEntries { .. }
        | PackageError::ManifestTooLarge { .. }
        | PackageError::ExpansionTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        PackageError::Io(_) => return ApiError::internal(e),
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let errors = match &e {
        PackageError::InvalidManifest { path, source: ManifestError::Fields(problems) } => problems
            .iter()
            .map(|p| json!({"code": p.code, "field": p.field, "detail": p.detail, "path": path}))
            .collect(),
        PackageError::InvalidManifest { path, source } => {
            vec![json!({"code": "invalid_manifest_syntax", "path": path, "detail": source.to_string()})]
        }
        PackageError::MultipleManifests(paths) => vec![json!({"code": code, "paths": paths})],
        _ => vec![json!({"code": code})],
    };
    ApiError::new(status, code, e.to_string()).with_errors(errors)
}

/// Removes the spool file when dropped, whatever happened.
struct SpoolFile(PathBuf);

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "removing a spool file failed");
        }
    }
}

/// Processes direct uploads whose client uploaded but never called
/// `POST /uploads/{id}/complete`. Every replica may run it: claiming an
/// upload succeeds once.
pub async fn sweep_direct_uploads(state: AppState, stop: CancellationToken) {
    let interval = std::time::Duration::from_secs(state.settings.upload_sweep_interval_secs);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = sweep_once(&state).await {
            tracing::warn!(error = %e.detail, "sweeping pending uploads failed");
        }
    }
}

async fn sweep_once(state: &AppState) -> Result<(), ApiError> {
    let Some(direct) = state.blobs.direct() else { return Ok(()) };
    // Uploads that expired a while ago had their chance: S3 refused them after expiry.
    let since = Utc::now() - chrono::Duration::hours(1);
    for upload in state.store.pending_direct_uploads(since, 100).await? {
        let id = &upload.upload.upload_id;
        let Some(staged) = direct.staged(id).await.map_err(ApiError::internal)? else { continue };
        match state.store.claim_upload(id, staged.last_modified).await {
            Ok(claimed) => match receive_direct(state, &claimed, &claimed.uploader(None)).await {
                Ok(r) => {
                    tracing::info!(upload_id = %id, artifact_key = %r.version.artifact_key, version = r.version.version, "registered an upload nobody completed")
                }
                Err(e) => {
                    tracing::info!(upload_id = %id, error = %e.detail, "rejected an upload nobody completed")
                }
            },
            Err(StoreError::UploadAlreadyUsed | StoreError::UploadExpired) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
