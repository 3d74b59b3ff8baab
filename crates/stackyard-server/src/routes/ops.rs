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

/// Each dependency, `ok` or why not: the metadata database, the package
/// store, the data dir's disk (`full` below `min_free_disk`) and, when
/// configured, NATS.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Every dependency answers", body = Health),
        (status = 503, description = "A dependency is unavailable; `checks` says which", body = Health),
    )
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    let (metadata, blobs) = tokio::join!(state.store.ping(), state.blobs.ping());
    let mut checks = BTreeMap::new();
    let mut ready = true;
    // `failure` is what the check says when it fails: `unavailable`, or `full` for the disk.
    let mut check = |name: &str, outcome: Result<(), String>, failure: &str| {
        let answer = match outcome {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                tracing::warn!(dependency = name, error = %e, "not ready");
                ready = false;
                failure.to_string()
            }
        };
        checks.insert(name.to_string(), answer);
    };
    check("metadata", metadata.map_err(|e| e.to_string()), "unavailable");
    check("blobs", blobs.map_err(|e| e.to_string()), "unavailable");
    check("disk", free_disk(&state.settings.data_dir, state.settings.min_free_disk), "full");
    if let Some(nats) = &state.nats {
        let connected = if nats.is_connected() { Ok(()) } else { Err("not connected".into()) };
        check("nats", connected, "unavailable");
    }
    if ready {
        (StatusCode::OK, axum::Json(Health { status: "ok".into(), checks }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(Health { status: "unavailable".into(), checks }))
    }
}

/// Fails when the disk holding the data dir (the SQLite file, the spool and
/// the default package store) has less than `min_free` bytes left.
fn free_disk(data_dir: &std::path::Path, min_free: u64) -> Result<(), String> {
    let stats = rustix::fs::statvfs(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    if free < min_free {
        return Err(format!(
            "{} bytes free on {}, below min_free_disk ({min_free})",
            free,
            data_dir.display()
        ));
    }
    Ok(())
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
