//! The audit log: every change, who made it, when and from where (admin).

use axum::extract::State;
use chrono::{DateTime, Utc};
use stackyard_api::{AuditList, Problem};
use stackyard_core::access::Access;
use stackyard_store::AuditQuery;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;
use crate::pagination::{self, Page};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// Changes, oldest first, filtered by actor, selector and time.
#[utoipa::path(
    get, path = "/audit", tag = "tokens",
    security(("bearer" = ["admin"])),
    params(
        ("actor" = Option<String>, Query, description = "A token's name"),
        ("selector" = Option<String>, Query),
        ("after" = Option<String>, Query, description = "An entry id, or an RFC 3339 time: entries after it"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query),
    ),
    responses(
        (status = 200, body = AuditList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<axum::Json<AuditList>> {
    caller.require(Access::Admin)?;
    query.only(&["actor", "selector", "after", "limit", "cursor"])?;
    let page = Page::from_query(&query)?;
    let (mut after_id, mut since) = (None, None);
    if let Some(after) = query.one("after") {
        match (after.parse::<i64>(), DateTime::parse_from_rfc3339(after)) {
            (Ok(id), _) => after_id = Some(id),
            (_, Ok(time)) => since = Some(time.with_timezone(&Utc)),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_after",
                    "after is an entry id or an RFC 3339 time such as 2026-12-03T18:00:00Z",
                ));
            }
        }
    }
    if let Some(cursor) = &page.after {
        after_id = Some(pagination::numeric(cursor)?);
    }
    let filter = AuditQuery {
        actor: query.one("actor").map(str::to_string),
        selector: query.one("selector").map(parse_selector).transpose()?,
        after_id,
        since,
        limit: page.limit,
    };
    let entries = state.store.list_audit(&filter).await?;
    let next_cursor = page.next_cursor(&entries, |e| e.id.to_string());
    Ok(axum::Json(AuditList { entries, next_cursor }))
}

fn parse_selector(s: &str) -> ApiResult<String> {
    stackyard_core::Selector::parse(s)
        .map(|selector| selector.as_str().to_string())
        .map_err(|e| ApiError::bad_request("invalid_selector", format!("selector '{s}': {e}")))
}
