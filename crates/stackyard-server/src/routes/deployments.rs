//! Deployments: plans per selector, their revisions, rollout status,
//! triggers and the event stream.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;
use stackyard_api::{
    ArtifactPin, Deployment, DeploymentList, DeploymentRequest, DeploymentStatus, EventList, Problem,
    RevisionList, StatusReport, TriggerRequest, TriggerResponse, VersionSpec,
};
use stackyard_core::access::Access;
use stackyard_core::{ArtifactKey, Organization, Selector, VersionRef};
use stackyard_store::{DeploymentQuery, PlanChange, PlanOutcome, PlanWrite, Preconditions, StoreError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Caller, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, OptionalJson, QueryPairs};
use crate::pagination::{self, Page};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(write_deployment, list_deployments))
        .routes(routes!(get_deployment, delete_deployment))
        .routes(routes!(pin_artifact, remove_artifact))
        .routes(routes!(list_revisions))
        .routes(routes!(get_status))
        .routes(routes!(report_status))
        .routes(routes!(trigger))
        .routes(routes!(list_events))
}

/// Characters kept as they are in a path segment: RFC 3986 unreserved.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn status_location(selector: &str, status_id: &str) -> HeaderValue {
    let path = format!("/deployments/{}/status/{status_id}", utf8_percent_encode(selector, SEGMENT));
    HeaderValue::from_str(&path).expect("percent-encoded paths are ASCII")
}

fn etag(status_id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{status_id}\"")).expect("status ids are hex")
}

fn parse_selector(s: &str) -> ApiResult<Selector> {
    Selector::parse(s).map_err(|e| ApiError::bad_request("invalid_selector", format!("selector '{s}': {e}")))
}

fn parse_organization(s: &str) -> ApiResult<Organization> {
    Organization::parse(s)
        .map_err(|e| ApiError::bad_request("invalid_organization", format!("organization '{s}': {e}")))
}

fn parse_key(s: &str) -> ApiResult<ArtifactKey> {
    ArtifactKey::parse(s).map_err(|e| {
        ApiError::bad_request("invalid_artifact_key", format!("'{s}' is not an artifact key: {e}"))
    })
}

fn parse_version(spec: &VersionSpec) -> Result<VersionRef, String> {
    let text = match spec {
        VersionSpec::Number(n) => n.to_string(),
        VersionSpec::Text(t) => t.clone(),
    };
    VersionRef::parse(&text).map_err(|e| format!("version '{text}': {e}"))
}

/// A list of entity tags, or `None` for `*`.
fn entity_tags(value: &HeaderValue) -> ApiResult<Option<Vec<String>>> {
    let text =
        value.to_str().map_err(|_| ApiError::bad_request("invalid_header", "entity tags must be ASCII"))?;
    if text.trim() == "*" {
        return Ok(None);
    }
    text.split(',')
        .map(|tag| {
            let tag = tag.trim();
            // Weak tags never match a strong comparison; keep them so they fail it.
            let strong = tag.strip_prefix("W/").map_or(tag, |_| "");
            match strong.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                Some(inner) => Ok(inner.to_string()),
                None if tag.starts_with("W/") => Ok(String::new()),
                None => Err(ApiError::bad_request(
                    "invalid_header",
                    format!("'{tag}' is not an entity tag; quote it: \"<status_id>\""),
                )),
            }
        })
        .collect::<ApiResult<Vec<_>>>()
        .map(Some)
}

fn preconditions(headers: &HeaderMap) -> ApiResult<Preconditions> {
    let if_match = match headers.get(header::IF_MATCH) {
        None => None,
        Some(value) => Some(entity_tags(value)?.unwrap_or_default()),
    };
    let if_none_match_any = match headers.get(header::IF_NONE_MATCH) {
        None => false,
        Some(value) if entity_tags(value)?.is_none() => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_header",
                "on writes, If-None-Match only takes '*' (create only)",
            ));
        }
    };
    Ok(Preconditions { if_match, if_none_match_any })
}

fn dry_run(query: &QueryPairs) -> ApiResult<bool> {
    query.only(&["dry_run"])?;
    match query.one("dry_run") {
        None | Some("false") => Ok(false),
        Some("true") | Some("") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            "invalid_dry_run",
            format!("dry_run is 'true' or 'false', not '{other}'"),
        )),
    }
}

/// The answer to every plan write.
fn written(outcome: PlanOutcome, dry_run: bool) -> Response {
    let (status, deployment) = match outcome {
        PlanOutcome::Created(d) if !dry_run => (StatusCode::CREATED, d),
        PlanOutcome::Created(d) | PlanOutcome::Revised(d) | PlanOutcome::Unchanged(d) => (StatusCode::OK, d),
    };
    if dry_run {
        return (status, axum::Json(deployment)).into_response();
    }
    let headers = [
        (header::ETAG, etag(&deployment.status_id)),
        (header::LOCATION, status_location(&deployment.selector, &deployment.status_id)),
    ];
    (status, headers, axum::Json(deployment)).into_response()
}

fn deployment_missing(selector: &Selector) -> impl Fn(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(format!("no deployment '{selector}'")),
        other => other.into(),
    }
}

fn check_plan_size(state: &AppState, artifacts: usize) -> ApiResult<()> {
    let max = state.settings.limits.max_plan_artifacts;
    if artifacts > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "plan_too_large",
            format!("the plan has {artifacts} artifacts; at most {max} are allowed"),
        ));
    }
    Ok(())
}

/// Deployments outside the token's scope answer 404, as if they did not
/// exist. `new_organization` is the organization a write would give it.
async fn check_scope(
    state: &AppState,
    principal: &Principal,
    selector: &Selector,
    new_organization: Option<&Organization>,
) -> ApiResult<()> {
    let scope = &principal.scope;
    let hidden = || ApiError::not_found(format!("no deployment '{selector}'"));
    if !scope.allows_selector(selector.as_str()) {
        return Err(hidden());
    }
    if scope.organizations.is_empty() {
        return Ok(());
    }
    let current = match state.store.get_deployment(selector).await {
        Ok(d) => Some(d.organization),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(org) = &current
        && !scope.allows_organization(org.as_deref())
    {
        return Err(hidden());
    }
    match (new_organization, &current) {
        (Some(org), _) if !scope.allows_organization(Some(org.as_str())) => Err(hidden()),
        (None, None) => Err(hidden()),
        _ => Ok(()),
    }
}

async fn apply(state: &AppState, write: PlanWrite) -> ApiResult<Response> {
    let selector = write.selector.clone();
    let outcome = state.store.write_plan(&write).await.map_err(deployment_missing(&selector))?;
    if !write.dry_run && !matches!(outcome, PlanOutcome::Unchanged(_)) {
        state.events.notify();
    }
    Ok(written(outcome, write.dry_run))
}

/// Creates a deployment or replaces its plan.
#[utoipa::path(
    post, path = "/deployments", tag = "deployments",
    security(("bearer" = ["deployer"])),
    params(("dry_run" = Option<bool>, Query, description = "Validate and answer with the would-be deployment and diff; store nothing")),
    request_body = DeploymentRequest,
    responses(
        (status = 201, description = "A new deployment", body = Deployment,
            headers(("ETag" = String, description = "The status id, quoted"), ("Location" = String))),
        (status = 200, description = "A new revision, the unchanged current one, or a dry run", body = Deployment),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match or If-None-Match failed", body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown artifacts or versions, missing dependencies, cycles: all listed in `errors`",
            body = Problem, content_type = "application/problem+json"),
    )
)]
async fn write_deployment(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
    headers: HeaderMap,
    ApiJson(request): ApiJson<DeploymentRequest>,
) -> ApiResult<Response> {
    let principal = caller.require(Access::Deploy)?;
    let dry_run = dry_run(&query)?;
    let selector = parse_selector(&request.selector)?;
    let organization = request.organization.as_deref().map(parse_organization).transpose()?;
    check_scope(&state, principal, &selector, organization.as_ref()).await?;
    check_plan_size(&state, request.deployment_plan.artifacts.len())?;
    let mut artifacts = Vec::with_capacity(request.deployment_plan.artifacts.len());
    let mut problems = Vec::new();
    for item in &request.deployment_plan.artifacts {
        let key = ArtifactKey::parse(&item.artifact_key);
        let version = item.version.as_ref().map(parse_version).transpose();
        match (key, version) {
            (Ok(key), Ok(version)) => artifacts.push((key, version)),
            (Err(e), _) => problems.push(json!({"code": "invalid_artifact_key", "artifact_key": item.artifact_key, "detail": e.to_string()})),
            (_, Err(detail)) => problems.push(json!({"code": "invalid_version", "artifact_key": item.artifact_key, "detail": detail})),
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_plan_entries",
            format!("{} plan entries are malformed", problems.len()),
        )
        .with_errors(problems));
    }
    let write = PlanWrite {
        selector,
        change: PlanChange::Replace { organization, artifacts },
        preconditions: preconditions(&headers)?,
        dry_run,
        actor: caller.actor(),
    };
    apply(&state, write).await
}

/// Adds one artifact to a deployment's plan, or re-pins it.
#[utoipa::path(
    post, path = "/deployments/{selector}/artifact/{artifact_key}", tag = "deployments",
    security(("bearer" = ["deployer"])),
    params(("selector" = String, Path, description = "Percent-encoded"), ("artifact_key" = String, Path),
        ("dry_run" = Option<bool>, Query)),
    request_body(content = Option<ArtifactPin>, description = "Optional; without a version the latest is pinned"),
    responses(
        (status = 200, body = Deployment),
        (status = 201, description = "The deployment did not exist and was created", body = Deployment),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn pin_artifact(
    State(state): State<AppState>,
    caller: Caller,
    Path((selector, key)): Path<(String, String)>,
    query: QueryPairs,
    headers: HeaderMap,
    OptionalJson(pin): OptionalJson<ArtifactPin>,
) -> ApiResult<Response> {
    let principal = caller.require(Access::Deploy)?;
    let dry_run = dry_run(&query)?;
    let selector = parse_selector(&selector)?;
    check_scope(&state, principal, &selector, None).await?;
    let artifact_key = parse_key(&key)?;
    if let Ok(current) = state.store.get_deployment(&selector).await
        && !current.artifacts.iter().any(|a| a.artifact_key == artifact_key.as_str())
    {
        check_plan_size(&state, current.artifacts.len() + 1)?;
    }
    let version = pin
        .version
        .as_ref()
        .map(parse_version)
        .transpose()
        .map_err(|d| ApiError::bad_request("invalid_version", d))?;
    let write = PlanWrite {
        selector,
        change: PlanChange::Pin { artifact_key, version },
        preconditions: preconditions(&headers)?,
        dry_run,
        actor: caller.actor(),
    };
    apply(&state, write).await
}

/// Removes one artifact from a deployment's plan.
#[utoipa::path(
    delete, path = "/deployments/{selector}/artifact/{artifact_key}", tag = "deployments",
    security(("bearer" = ["deployer"])),
    params(("selector" = String, Path), ("artifact_key" = String, Path), ("dry_run" = Option<bool>, Query)),
    responses(
        (status = 200, body = Deployment),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such deployment, or the artifact is not in its plan", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Other artifacts of the plan depend on it (`has_dependents`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn remove_artifact(
    State(state): State<AppState>,
    caller: Caller,
    Path((selector, key)): Path<(String, String)>,
    query: QueryPairs,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let principal = caller.require(Access::Deploy)?;
    let dry_run = dry_run(&query)?;
    let selector = parse_selector(&selector)?;
    check_scope(&state, principal, &selector, None).await?;
    let write = PlanWrite {
        selector,
        change: PlanChange::Remove { artifact_key: parse_key(&key)? },
        preconditions: preconditions(&headers)?,
        dry_run,
        actor: caller.actor(),
    };
    apply(&state, write).await
}

/// The current revision of a deployment.
#[utoipa::path(
    get, path = "/deployments/{selector}", tag = "deployments",
    security(("bearer" = ["reader"])),
    params(("selector" = String, Path, description = "Percent-encoded")),
    responses(
        (status = 200, body = Deployment, headers(("ETag" = String))),
        (status = 304, description = "If-None-Match matched"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_deployment(
    State(state): State<AppState>,
    caller: Caller,
    Path(selector): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let principal = caller.require(Access::Read)?;
    let selector = parse_selector(&selector)?;
    // Answered with the plan as stored: decoding it only to encode it again
    // was a sixth of the server's time under a read load.
    let deployment =
        state.store.get_raw_deployment(&selector).await.map_err(deployment_missing(&selector))?;
    if !auth::visible(principal, &deployment.selector, deployment.organization.as_deref()) {
        return Err(ApiError::not_found(format!("no deployment '{selector}'")));
    }
    let tag = etag(&deployment.status_id);
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .map(entity_tags)
        .transpose()?
        .is_some_and(|tags| tags.is_none_or(|t| t.contains(&deployment.status_id)));
    if cached {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    let json = HeaderValue::from_static("application/json");
    Ok(([(header::CONTENT_TYPE, json), (header::ETAG, tag)], deployment.to_json()).into_response())
}

/// Removes a deployment. Its revisions stay readable; the selector can be
/// used again, and its revision numbers continue.
#[utoipa::path(
    delete, path = "/deployments/{selector}", tag = "deployments",
    security(("bearer" = ["deployer"])),
    params(("selector" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_deployment(
    State(state): State<AppState>,
    caller: Caller,
    Path(selector): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let principal = caller.require(Access::Deploy)?;
    let selector = parse_selector(&selector)?;
    check_scope(&state, principal, &selector, None).await?;
    let pre = preconditions(&headers)?;
    state
        .store
        .delete_deployment(&selector, &pre, &caller.actor())
        .await
        .map_err(deployment_missing(&selector))?;
    state.events.notify();
    Ok(StatusCode::NO_CONTENT)
}

/// Values of a list parameter: comma lists and repeated parameters alike.
fn list_values<'a>(query: &'a QueryPairs, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    query.all(name).flat_map(|v| v.split(',')).map(str::trim).filter(|v| !v.is_empty())
}

/// Current deployments matching every filter given (any value within one).
#[utoipa::path(
    get, path = "/deployments", tag = "deployments",
    security(("bearer" = ["reader"])),
    params(
        ("selectors" = Option<String>, Query, description = "Comma list; the parameter may repeat"),
        ("artifact_keys" = Option<String>, Query, description = "Comma list; the parameter may repeat"),
        ("organization" = Option<String>, Query, description = "Comma list; the parameter may repeat"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query),
    ),
    responses(
        (status = 200, body = DeploymentList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_deployments(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<axum::Json<DeploymentList>> {
    let principal = caller.require(Access::Read)?;
    query.only(&["selectors", "artifact_keys", "organization", "limit", "cursor"])?;
    let page = Page::from_query(&query)?;
    let selectors = list_values(&query, "selectors")
        .map(|s| parse_selector(s).map(|s| s.to_string()))
        .collect::<ApiResult<_>>()?;
    let artifact_keys = list_values(&query, "artifact_keys")
        .map(|k| parse_key(k).map(|k| k.to_string()))
        .collect::<ApiResult<_>>()?;
    let mut organizations: Vec<String> = list_values(&query, "organization")
        .map(|o| parse_organization(o).map(|o| o.to_string()))
        .collect::<ApiResult<_>>()?;
    // A scoped token sees its organizations only: the filter narrows to them.
    let scope = &principal.scope;
    if !scope.organizations.is_empty() {
        if organizations.is_empty() {
            organizations = scope.organizations.clone();
        } else {
            organizations.retain(|o| scope.organizations.contains(o));
            if organizations.is_empty() {
                return Ok(axum::Json(DeploymentList { deployments: Vec::new(), next_cursor: None }));
            }
        }
    }
    let filter = DeploymentQuery {
        selectors,
        artifact_keys,
        organizations,
        selector_globs: scope.selectors.clone(),
        after: page.after.clone(),
        limit: page.limit,
    };
    let deployments = state.store.list_deployments(&filter).await?;
    let next_cursor = page.next_cursor(&deployments, |d| d.selector.clone());
    Ok(axum::Json(DeploymentList { deployments, next_cursor }))
}

/// A deployment's revisions, newest first, with what each changed.
#[utoipa::path(
    get, path = "/deployments/{selector}/revisions", tag = "deployments",
    security(("bearer" = ["reader"])),
    params(("selector" = String, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses(
        (status = 200, body = RevisionList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_revisions(
    State(state): State<AppState>,
    caller: Caller,
    Path(selector): Path<String>,
    query: QueryPairs,
) -> ApiResult<axum::Json<RevisionList>> {
    let principal = caller.require(Access::Read)?;
    query.only(&["limit", "cursor"])?;
    let selector = parse_selector(&selector)?;
    check_scope(&state, principal, &selector, None).await?;
    let page = Page::from_query(&query)?;
    let before = page.after.as_deref().map(pagination::numeric).transpose()?;
    let revisions = state
        .store
        .list_revisions(&selector, before, page.limit)
        .await
        .map_err(deployment_missing(&selector))?;
    let next_cursor = page.next_cursor(&revisions, |r| r.revision.to_string());
    Ok(axum::Json(RevisionList { revisions, next_cursor }))
}

fn status_missing<'a>(selector: &'a Selector, status_id: &'a str) -> impl Fn(StoreError) -> ApiError + 'a {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(format!(
            "deployment '{selector}' has no revision with status id '{status_id}'"
        )),
        other => other.into(),
    }
}

/// The rollout of any revision, current or superseded.
#[utoipa::path(
    get, path = "/deployments/{selector}/status/{status_id}", tag = "status",
    security(("bearer" = ["reader"])),
    params(("selector" = String, Path), ("status_id" = String, Path)),
    responses(
        (status = 200, body = DeploymentStatus),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_status(
    State(state): State<AppState>,
    caller: Caller,
    Path((selector, status_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<DeploymentStatus>> {
    let principal = caller.require(Access::Read)?;
    let selector = parse_selector(&selector)?;
    check_scope(&state, principal, &selector, None).await?;
    let status =
        state.store.get_status(&selector, &status_id).await.map_err(status_missing(&selector, &status_id))?;
    Ok(axum::Json(status))
}

/// A deployment engine reports progress on one artifact of the current revision.
#[utoipa::path(
    put, path = "/deployments/{selector}/status/{status_id}/artifacts/{artifact_key}", tag = "status",
    security(("bearer" = ["engine"])),
    params(("selector" = String, Path), ("status_id" = String, Path), ("artifact_key" = String, Path)),
    request_body = StatusReport,
    responses(
        (status = 200, description = "The revision's status after the report", body = DeploymentStatus),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A dependency has not succeeded, the report moves a finished artifact backwards, \
            or the revision is superseded", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn report_status(
    State(state): State<AppState>,
    caller: Caller,
    Path((selector, status_id, key)): Path<(String, String, String)>,
    ApiJson(report): ApiJson<StatusReport>,
) -> ApiResult<axum::Json<DeploymentStatus>> {
    let principal = caller.require(Access::Report)?;
    let selector = parse_selector(&selector)?;
    check_scope(&state, principal, &selector, None).await?;
    let key = parse_key(&key)?;
    if report.message.as_ref().is_some_and(|m| m.len() > 4096) {
        return Err(ApiError::bad_request("invalid_message", "message is at most 4096 bytes"));
    }
    let status = state
        .store
        .report_status(&selector, &status_id, &key, report.state, report.message.as_deref(), &caller.actor())
        .await
        .map_err(status_missing(&selector, &status_id))?;
    Ok(axum::Json(status))
}

/// Asks engines to deploy one artifact of the current revision again.
#[utoipa::path(
    post, path = "/_trigger", tag = "status",
    security(("bearer" = ["deployer"])),
    request_body = TriggerRequest,
    responses(
        (status = 202, body = TriggerResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such deployment, or the artifact is not in its current plan", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn trigger(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<TriggerRequest>,
) -> ApiResult<Response> {
    let principal = caller.require(Access::Deploy)?;
    let selector = parse_selector(&request.selector)?;
    check_scope(&state, principal, &selector, None).await?;
    let key = parse_key(&request.artifact_key)?;
    let mut id = [0u8; 16];
    rand::fill(&mut id);
    let trigger_id = hex::encode(id);
    let status_id = state
        .store
        .trigger(&selector, &key, &trigger_id, &caller.actor())
        .await
        .map_err(deployment_missing(&selector))?;
    state.events.notify();
    Ok((StatusCode::ACCEPTED, axum::Json(TriggerResponse { trigger_id, status_id })).into_response())
}

/// The event stream, oldest first: what the webhook sinks receive.
#[utoipa::path(
    get, path = "/events", tag = "events",
    security(("bearer" = ["reader"])),
    params(
        ("after" = Option<i64>, Query, description = "Only events with a larger id"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query),
    ),
    responses(
        (status = 200, body = EventList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<axum::Json<EventList>> {
    let principal = caller.require(Access::Read)?;
    query.only(&["after", "limit", "cursor"])?;
    let page = Page::from_query(&query)?;
    let after = match (page.after.as_deref(), query.one("after")) {
        (Some(cursor), _) => pagination::numeric(cursor)?,
        (None, Some(after)) => after
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request("invalid_after", "after is an event id: a whole number"))?,
        (None, None) => 0,
    };
    let mut events = state.store.list_events(after, page.limit).await?;
    // The cursor follows what was read, so filtering a page never ends the stream early.
    let next_cursor = page.next_cursor(&events, |e| e.id.to_string());
    events.retain(|e| auth::visible(principal, &e.selector, e.data["organization"].as_str()));
    Ok(axum::Json(EventList { events, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entity_tags() {
        let tags = |s: &str| entity_tags(&HeaderValue::from_str(s).unwrap());
        assert_eq!(tags("*").unwrap(), None);
        assert_eq!(tags("\"a\", \"b\"").unwrap(), Some(vec!["a".into(), "b".into()]));
        assert_eq!(tags("W/\"a\"").unwrap(), Some(vec![String::new()]));
        assert!(tags("a").is_err());
    }

    #[test]
    fn locations_encode_selectors() {
        assert_eq!(status_location("prod/eu 1", "ab"), "/deployments/prod%2Feu%201/status/ab");
    }
}
