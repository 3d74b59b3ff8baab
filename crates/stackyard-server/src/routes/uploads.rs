//! Presigned uploads: `POST /presigned_url`, the upload endpoints themselves
//! (S3-style multipart POST and raw PUT) and `GET /uploads/{id}`.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use stackyard_api::{PresignRequest, PresignResponse, Problem, Upload, UploadMethod, UploadState};
use stackyard_core::Digest;
use stackyard_core::access::Access;
use stackyard_store::{NewUpload, Registered, StoreError, StoredUploadState, UploadRecord};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{OptionalJson, QueryPairs};
use crate::form::{Form, FormError};
use crate::ingest;
use crate::presign::{self, ALGORITHM, Policy};
use crate::state::AppState;

const DEFAULT_EXPIRES_IN: u64 = 900;
const MAX_EXPIRES_IN: u64 = 7 * 24 * 3600;
/// Largest non-file form field we read (a policy is a few hundred bytes).
const MAX_FORM_FIELD: usize = 64 * 1024;
/// Form fields before `file`, at most (a presigned POST has five).
const MAX_FORM_FIELDS: usize = 32;

pub fn router() -> OpenApiRouter<AppState> {
    let receiving = OpenApiRouter::new()
        .routes(routes!(get_upload, post_upload, put_upload))
        // Packages can be gigabytes: the presigned policy bounds them, not the JSON limit.
        .layer(DefaultBodyLimit::disable());
    OpenApiRouter::new().routes(routes!(presign)).routes(routes!(complete_upload)).merge(receiving)
}

/// The upload object as the API shows it.
pub fn upload_view(record: &UploadRecord, now: DateTime<Utc>) -> Upload {
    let state = match record.state {
        StoredUploadState::Registered => UploadState::Registered,
        StoredUploadState::Rejected => UploadState::Rejected,
        StoredUploadState::Pending if record.claimed_at.is_none() && record.upload.expires_at <= now => {
            UploadState::Expired
        }
        StoredUploadState::Pending => UploadState::Pending,
    };
    Upload {
        upload_id: record.upload.upload_id.clone(),
        state,
        artifact_key: record.artifact_key.clone(),
        version: record.version,
        digest: record.digest.clone(),
        created: record.created,
        error: record.error.clone().and_then(|e| serde_json::from_value(e).ok()),
        created_at: record.upload.created_at,
        expires_at: record.upload.expires_at,
    }
}

fn is_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

async fn find_upload(state: &AppState, upload_id: &str) -> ApiResult<UploadRecord> {
    let missing = || ApiError::not_found(format!("no upload with id '{upload_id}'"));
    if !is_upload_id(upload_id) {
        return Err(missing());
    }
    state.store.get_upload(upload_id).await.map_err(|e| match e {
        StoreError::NotFound => missing(),
        other => other.into(),
    })
}

/// Creates a presigned upload URL.
#[utoipa::path(
    post, path = "/presigned_url", tag = "uploads",
    security(("bearer" = ["publisher"])),
    request_body(content = Option<PresignRequest>, description = "Every field is optional; the body may be empty."),
    responses(
        (status = 201, description = "Where and how to upload the package", body = PresignResponse),
        (status = 400, description = "A field is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The declared size is over the server's maximum", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn presign(
    State(state): State<AppState>,
    caller: Caller,
    OptionalJson(request): OptionalJson<PresignRequest>,
) -> ApiResult<Response> {
    let presigner = caller.require(Access::Publish)?.name.clone();
    let max_package = state.settings.max_package_size;
    let (min_size, max_size) = match request.content_length {
        // Sizes are 64-bit signed wherever they are stored, as the schema says.
        Some(n) if n == 0 || n > i64::MAX as u64 => {
            return Err(ApiError::bad_request(
                "invalid_content_length",
                format!("content_length must be from 1 to {}", i64::MAX),
            ));
        }
        Some(n) if n > max_package => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "package_too_large",
                format!(
                    "content_length {n} is over this server's maximum package size of {max_package} bytes"
                ),
            ));
        }
        Some(n) => (n, n),
        None => (1, max_package),
    };
    let sha256 =
        request.sha256.as_deref().map(Digest::from_hex).transpose().map_err(|_| {
            ApiError::bad_request("invalid_sha256", "sha256 must be 64 hexadecimal characters")
        })?;
    let expires_in = request.expires_in.unwrap_or(DEFAULT_EXPIRES_IN);
    if !(1..=MAX_EXPIRES_IN).contains(&expires_in) {
        return Err(ApiError::bad_request(
            "invalid_expires_in",
            format!("expires_in must be from 1 to {MAX_EXPIRES_IN} seconds (7 days)"),
        ));
    }
    if let Some(name) = &request.filename
        && (name.len() > 255 || name.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "invalid_filename",
            "filename must be at most 255 characters, without control characters",
        ));
    }
    let labels = request.labels.unwrap_or_default();
    check_labels(&labels)?;

    let mut id = [0u8; 16];
    rand::fill(&mut id);
    let upload_id = hex::encode(id);
    let now = Utc::now();
    // Whole seconds, so the expiry signed into a PUT URL is exactly the stored one.
    let expires_at = Utc.timestamp_opt(now.timestamp() + expires_in as i64, 0).single().expect("valid time");
    let method = request.method.unwrap_or(UploadMethod::Post);
    let direct = state.blobs.direct();
    let upload = NewUpload {
        upload_id: upload_id.clone(),
        method: match method {
            UploadMethod::Post => "POST",
            UploadMethod::Put => "PUT",
        }
        .into(),
        filename: request.filename,
        min_size,
        max_size,
        sha256,
        labels,
        created_at: now,
        expires_at,
        created_by: Some(presigner),
        direct: direct.is_some(),
    };
    state.store.create_upload(&upload).await?;

    let url = format!("{}/uploads/{upload_id}", state.public_url);
    let response = match (method, direct) {
        // To the object store itself; the client then calls POST /uploads/{id}/complete.
        (UploadMethod::Post, Some(direct)) => {
            let post = direct.presign_post(&upload_id, min_size, max_size, expires_at);
            PresignResponse {
                upload_id: upload_id.clone(),
                method,
                url: post.url,
                fields: Some(post.fields),
                headers: None,
                expires_at,
            }
        }
        (UploadMethod::Put, Some(direct)) => {
            let url = direct
                .presign_put(&upload_id, std::time::Duration::from_secs(expires_in))
                .await
                .map_err(ApiError::blob_store)?;
            PresignResponse {
                upload_id: upload_id.clone(),
                method,
                url,
                fields: None,
                headers: None,
                expires_at,
            }
        }
        (UploadMethod::Post, None) => {
            let (policy, signature) =
                state.signer.sign_policy(&Policy::new(&upload_id, expires_at, min_size, max_size));
            let fields = BTreeMap::from([
                (presign::FIELD_KEY.to_string(), upload_id.clone()),
                (presign::FIELD_POLICY.to_string(), policy),
                (presign::FIELD_ALGORITHM.to_string(), ALGORITHM.to_string()),
                (presign::FIELD_SIGNATURE.to_string(), signature),
            ]);
            PresignResponse {
                upload_id: upload_id.clone(),
                method,
                url,
                fields: Some(fields),
                headers: None,
                expires_at,
            }
        }
        (UploadMethod::Put, None) => {
            let signature = state.signer.sign_put(&upload_id, expires_at.timestamp(), min_size, max_size);
            let url = format!("{url}?expires={}&signature={signature}", expires_at.timestamp());
            let headers =
                BTreeMap::from([("Content-Type".to_string(), "application/octet-stream".to_string())]);
            PresignResponse {
                upload_id: upload_id.clone(),
                method,
                url,
                fields: None,
                headers: Some(headers),
                expires_at,
            }
        }
    };
    let location = HeaderValue::from_str(&format!("/uploads/{upload_id}")).expect("ids are ASCII");
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(response)).into_response())
}

fn check_labels(labels: &BTreeMap<String, String>) -> ApiResult<()> {
    let bad: Vec<_> = labels
        .iter()
        .filter(|(k, v)| {
            k.is_empty()
                || k.len() > 128
                || k.contains('=')
                || k.chars().any(char::is_control)
                || v.len() > 1024
        })
        .map(|(k, _)| serde_json::json!({"code": "invalid_label", "label": k}))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_labels",
            "label names are 1 to 128 characters without '=' or control characters; values at most 1024",
        )
        .with_errors(bad))
    }
}

/// Describes an upload and what became of it.
#[utoipa::path(
    get, path = "/uploads/{upload_id}", tag = "uploads",
    security(("bearer" = ["reader"])),
    params(("upload_id" = String, Path, description = "The id `POST /presigned_url` returned")),
    responses(
        (status = 200, body = Upload),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(upload_id): Path<String>,
) -> ApiResult<axum::Json<Upload>> {
    caller.require(Access::Read)?;
    let record = find_upload(&state, &upload_id).await?;
    Ok(axum::Json(upload_view(&record, Utc::now())))
}

/// Processes an upload the client sent to the object store directly: reads
/// the object, checks and registers it exactly as an upload to the server
/// (or rejects it, keeping nothing). On the local blob store uploads are
/// processed as they arrive, so this answers the upload's state.
#[utoipa::path(
    post, path = "/uploads/{upload_id}/complete", tag = "uploads",
    security(("bearer" = ["publisher"])),
    params(("upload_id" = String, Path)),
    responses(
        (status = 200, description = "Registered, or what became of the upload before", body = Upload),
        (status = 400, description = "Size or digest mismatch", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Expired before the object arrived", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing has been uploaded yet", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn complete_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(upload_id): Path<String>,
) -> ApiResult<axum::Json<Upload>> {
    caller.require(Access::Publish)?;
    let record = find_upload(&state, &upload_id).await?;
    let direct = match state.blobs.direct() {
        Some(direct) if record.upload.direct && record.state == StoredUploadState::Pending => direct,
        _ => return Ok(axum::Json(upload_view(&record, Utc::now()))),
    };
    if record.claimed_at.is_none() {
        let Some(staged) = direct.staged(&upload_id).await.map_err(ApiError::blob_store)? else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "upload_not_received",
                "nothing has been uploaded to this upload's presigned URL yet; upload the package, then complete",
            ));
        };
        // The object's own time decides expiry: S3 accepted it before then.
        match state.store.claim_upload(&upload_id, staged.last_modified).await {
            Ok(claimed) => {
                ingest::receive_direct(&state, &claimed, &claimed.uploader(caller.remote_addr.clone()))
                    .await?;
            }
            Err(StoreError::UploadAlreadyUsed) => {}
            Err(e) => {
                direct.discard(&upload_id).await.ok();
                return Err(e.into());
            }
        }
    }
    // Another request or replica (or the sweep) is processing it: answer once it is done.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let record = state.store.get_upload(&upload_id).await?;
        if record.state != StoredUploadState::Pending || tokio::time::Instant::now() > deadline {
            return Ok(axum::Json(upload_view(&record, Utc::now())));
        }
        if record.claimed_at.is_none() {
            // Whoever processed it failed on a dependency and gave the claim back.
            return Err(ApiError::unavailable("package store", "processing the upload failed; retry"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The multipart form of a presigned POST (documentation only).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct UploadForm {
    key: String,
    policy: String,
    #[schema(rename = "x-stackyard-algorithm")]
    algorithm: String,
    #[schema(rename = "x-stackyard-signature")]
    signature: String,
    /// `200`, `201` or `204` (default).
    success_action_status: Option<String>,
    /// The package; must be the last field.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Receives a package through a presigned POST: every field of `fields`,
/// then the package as `file`, exactly as for an S3 presigned POST.
#[utoipa::path(
    post, path = "/uploads/{upload_id}", tag = "uploads",
    params(("upload_id" = String, Path)),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 204, description = "Registered; `ETag` is the package digest's hex"),
        (status = 201, description = "Registered (with `success_action_status=201`)", body = Upload),
        (status = 200, description = "Registered (with `success_action_status=200`)", body = Upload),
        (status = 400, description = "Malformed form, size or digest mismatch", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Bad signature or expired", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already used", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over the allowed size or a package limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a package", body = Problem, content_type = "application/problem+json"),
        (status = 405, description = "The upload was presigned for PUT", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid package or manifest", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The server's disk is full; nothing was kept", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn post_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(upload_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected a multipart/form-data body with a boundary",
        )
    })?;
    let mut form = Form::new(body.into_data_stream(), &boundary);
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    while let Some(part) = form.next_part().await.map_err(form_error)? {
        if part.name != "file" {
            if fields.len() == MAX_FORM_FIELDS {
                return Err(ApiError::bad_request(
                    "invalid_multipart",
                    format!("the form has over {MAX_FORM_FIELDS} fields before 'file'"),
                ));
            }
            let value = read_small_field(&mut form, &part.name).await?;
            fields.insert(part.name.to_ascii_lowercase(), value);
            continue;
        }
        let status = success_status(fields.get("success_action_status").map(String::as_str));
        let record = authorize_post(&state, &upload_id, &fields).await?;
        let uploader = record.uploader(caller.remote_addr.clone());
        let registered = ingest::receive(&state, &record, form.part_stream(), &uploader).await?;
        return upload_response(&state, status, &upload_id, &registered).await;
    }
    Err(ApiError::bad_request(
        "missing_file",
        "the form has no 'file' field; send it last, after the presigned fields",
    ))
}

fn form_error(e: FormError) -> ApiError {
    ApiError::bad_request("invalid_multipart", format!("the multipart body is malformed: {e}"))
}

async fn read_small_field<S, E>(form: &mut Form<S>, name: &str) -> ApiResult<String>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut bytes = Vec::new();
    while let Some(chunk) = form.next_chunk().await.map_err(form_error)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_FORM_FIELD {
            return Err(ApiError::bad_request(
                "form_field_too_large",
                format!("the form field '{name}' is over {MAX_FORM_FIELD} bytes"),
            ));
        }
    }
    String::from_utf8(bytes).map_err(|_| {
        ApiError::bad_request("invalid_multipart", format!("the form field '{name}' is not UTF-8"))
    })
}

/// Like S3: `200` and `201` when asked for, otherwise `204`.
fn success_status(requested: Option<&str>) -> StatusCode {
    match requested.map(str::trim) {
        Some("200") => StatusCode::OK,
        Some("201") => StatusCode::CREATED,
        _ => StatusCode::NO_CONTENT,
    }
}

/// Checks the form's signature and policy, then claims the upload (once).
async fn authorize_post(
    state: &AppState,
    upload_id: &str,
    fields: &BTreeMap<String, String>,
) -> ApiResult<UploadRecord> {
    let required = [presign::FIELD_KEY, presign::FIELD_POLICY, presign::FIELD_SIGNATURE];
    let missing: Vec<_> = required.iter().filter(|f| !fields.contains_key(**f)).collect();
    if !missing.is_empty() {
        let names: Vec<_> = missing.iter().map(|f| f.to_string()).collect();
        return Err(ApiError::bad_request(
            "missing_fields",
            format!(
                "the form lacks {} before 'file'; send every field the presign answer listed",
                names.join(", ")
            ),
        )
        .with_errors(
            names.iter().map(|n| serde_json::json!({"code": "missing_field", "field": n})).collect(),
        ));
    }
    check_method(&find_upload(state, upload_id).await?, "POST")?;
    let policy = state
        .signer
        .verify_policy(&fields[presign::FIELD_POLICY], &fields[presign::FIELD_SIGNATURE])
        .filter(|p| p.upload_id() == Some(upload_id) && fields[presign::FIELD_KEY] == upload_id)
        .ok_or_else(bad_signature)?;
    if policy.expiration <= Utc::now() {
        return Err(StoreError::UploadExpired.into());
    }
    Ok(state.store.claim_upload(upload_id, Utc::now()).await?)
}

/// An upload presigned for POST cannot be sent with PUT, and the other way
/// round; one presigned for the object store is not sent here at all.
fn check_method(record: &UploadRecord, method: &str) -> ApiResult<()> {
    if record.upload.direct {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "upload_goes_to_object_store",
            "this upload was presigned for the object store: send it to the URL the presign answer gave",
        ));
    }
    if record.upload.method == method {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "wrong_upload_method",
        format!("this upload was presigned for {}, not {method}", record.upload.method),
    ))
}

fn bad_signature() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "invalid_signature",
        "the upload's signature does not match its fields",
    )
}

/// Receives a package through a presigned PUT: the raw bytes as the body.
#[utoipa::path(
    put, path = "/uploads/{upload_id}", tag = "uploads",
    params(
        ("upload_id" = String, Path),
        ("expires" = i64, Query, description = "From the presigned URL"),
        ("signature" = String, Query, description = "From the presigned URL"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Registered; `ETag` is the package digest's hex", body = Upload),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 405, description = "The upload was presigned for POST", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The server's disk is full; nothing was kept", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn put_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(upload_id): Path<String>,
    query: QueryPairs,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let pending = find_upload(&state, &upload_id).await?;
    check_method(&pending, "PUT")?;
    let expires = query.one("expires").and_then(|e| e.parse::<i64>().ok());
    let (Some(expires), Some(signature)) = (expires, query.one("signature")) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "missing_signature",
            "the URL lacks its 'expires' and 'signature' parameters",
        ));
    };
    let (min, max) = (pending.upload.min_size, pending.upload.max_size);
    if !state.signer.verify_put(&upload_id, expires, min, max, signature) {
        return Err(bad_signature());
    }
    if expires <= Utc::now().timestamp() {
        return Err(StoreError::UploadExpired.into());
    }
    // Refuse an announced oversize body before reading any of it.
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > pending.upload.max_size) {
        return Err(ingest::too_large(pending.upload.max_size));
    }
    let record = state.store.claim_upload(&upload_id, Utc::now()).await?;
    let registered = ingest::receive(
        &state,
        &record,
        body.into_data_stream(),
        &record.uploader(caller.remote_addr.clone()),
    )
    .await?;
    upload_response(&state, StatusCode::OK, &upload_id, &registered).await
}

async fn upload_response(
    state: &AppState,
    status: StatusCode,
    upload_id: &str,
    registered: &Registered,
) -> ApiResult<Response> {
    let digest = Digest::parse(&registered.version.digest).map_err(ApiError::internal)?;
    let etag = HeaderValue::from_str(&format!("\"{}\"", digest.hex())).expect("hex is a valid header");
    let location = HeaderValue::from_str(&format!("/uploads/{upload_id}")).expect("ids are ASCII");
    let headers = [(header::ETAG, etag), (header::LOCATION, location)];
    if status == StatusCode::NO_CONTENT {
        return Ok((status, headers).into_response());
    }
    let record = state.store.get_upload(upload_id).await?;
    Ok((status, headers, axum::Json(upload_view(&record, Utc::now()))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_status_follows_s3() {
        assert_eq!(success_status(None), StatusCode::NO_CONTENT);
        assert_eq!(success_status(Some("201")), StatusCode::CREATED);
        assert_eq!(success_status(Some("200")), StatusCode::OK);
        assert_eq!(success_status(Some("302")), StatusCode::NO_CONTENT);
    }
}
