//! Operations: health, readiness, metrics.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use stackyard_api::Health;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok".into(), checks: BTreeMap::new() })
}

/// The metadata store and the blob store can be reached.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, description = "A store is unavailable", body = Health))
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    let mut checks = BTreeMap::new();
    let (metadata, blobs) = tokio::join!(state.store.ping(), state.blobs.ping());
    if let Err(e) = metadata {
        tracing::warn!(error = %e, "metadata store is not ready");
        checks.insert("metadata".to_string(), "unavailable".to_string());
    }
    if let Err(e) = blobs {
        tracing::warn!(error = %e, "blob store is not ready");
        checks.insert("blobs".to_string(), "unavailable".to_string());
    }
    if checks.is_empty() {
        (StatusCode::OK, axum::Json(Health { status: "ok".into(), checks }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(Health { status: "unavailable".into(), checks }))
    }
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics", content_type = "application/openmetrics-text"))
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}
