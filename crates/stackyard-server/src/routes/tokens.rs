//! API tokens: created, listed (never their secrets) and revoked by admins.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use stackyard_api::{Problem, TokenCreated, TokenList, TokenRequest};
use stackyard_core::access::{Access, Role, Scope};
use stackyard_core::{Organization, selector::MAX_SELECTOR_CHARS};
use stackyard_store::StoreError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, QueryPairs};
use crate::pagination::Page;
use crate::state::AppState;

/// Ten years: longer is "never", which is what leaving `expires_in` out says.
const MAX_EXPIRES_IN: u64 = 10 * 365 * 24 * 3600;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_token, list_tokens)).routes(routes!(revoke_token))
}

/// Creates a token. Its secret is in this answer only.
#[utoipa::path(
    post, path = "/tokens", tag = "tokens",
    security(("bearer" = ["admin"])),
    request_body = TokenRequest,
    responses(
        (status = 201, body = TokenCreated),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<TokenRequest>,
) -> ApiResult<Response> {
    caller.require(Access::Admin)?;
    let (role, scope, expires_at) = check_request(&request)?;
    let secret = auth::new_secret();
    let record = auth::token_record(&secret, request.name.trim(), role, &scope, expires_at);
    state.store.create_token(&record, &caller.actor()).await?;
    let created = auth::token_created(record.info, secret);
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// Checks a token request; shared with the offline `stackyard admin token create`.
pub fn check_request(request: &TokenRequest) -> ApiResult<(Role, Scope, Option<chrono::DateTime<Utc>>)> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "name is 1 to 100 characters, without control characters",
        ));
    }
    let role = Role::parse(&request.role).ok_or_else(|| {
        ApiError::bad_request("invalid_role", "role is one of reader, publisher, deployer, admin, engine")
    })?;
    let organizations = request.organizations.clone().unwrap_or_default();
    for org in &organizations {
        Organization::parse(org).map_err(|e| {
            ApiError::bad_request("invalid_organization", format!("organization '{org}': {e}"))
        })?;
    }
    let selectors = request.selectors.clone().unwrap_or_default();
    if selectors
        .iter()
        .any(|s| s.is_empty() || s.chars().count() > MAX_SELECTOR_CHARS || s.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "invalid_selector_pattern",
            "selector patterns are 1 to 256 characters without control characters; * and ? are wildcards",
        ));
    }
    let expires_at = match request.expires_in {
        None => None,
        Some(seconds) if (1..=MAX_EXPIRES_IN).contains(&seconds) => {
            Some(Utc::now() + Duration::seconds(seconds as i64))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_expires_in",
                format!(
                    "expires_in is from 1 to {MAX_EXPIRES_IN} seconds; leave it out for a token that does not expire"
                ),
            ));
        }
    };
    Ok((role, Scope { organizations, selectors }, expires_at))
}

/// Lists tokens, without their secrets.
#[utoipa::path(
    get, path = "/tokens", tag = "tokens",
    security(("bearer" = ["admin"])),
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses(
        (status = 200, body = TokenList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<axum::Json<TokenList>> {
    caller.require(Access::Admin)?;
    query.only(&["limit", "cursor"])?;
    let page = Page::from_query(&query)?;
    let tokens = state.store.list_tokens(page.after.as_deref(), page.limit).await?;
    let next_cursor = page.next_cursor(&tokens, |t| t.id.clone());
    Ok(axum::Json(TokenList { tokens, next_cursor }))
}

/// Revokes a token; it stops working at once.
#[utoipa::path(
    delete, path = "/tokens/{id}", tag = "tokens",
    security(("bearer" = ["admin"])),
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It is the last active admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Access::Admin)?;
    state.store.revoke_token(&id, Utc::now(), &caller.actor()).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found(format!("no token '{id}'")),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}
