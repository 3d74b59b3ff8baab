//! The Stackyard HTTP server: routes, middleware and start-up.
//!
//! [`Application::build`] opens the storage, binds the listener (port 0 is
//! fine, tests use it) and returns; [`Application::run_until_stopped`] serves
//! until the shutdown future resolves, then finishes in-flight requests.

pub mod auth;
pub mod config;
pub mod error;
pub mod events;
mod extract;
mod form;
mod http;
mod ingest;
pub mod metrics;
mod openapi;
mod pagination;
pub mod presign;
mod ratelimit;
mod routes;
mod spool;
mod state;
pub mod storage;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use stackyard_store::{ArtifactStore, MetadataStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use crate::config::Settings;
use crate::error::ApiError;
use crate::events::EventNotifier;
use crate::metrics::Metrics;
use crate::presign::UploadSigner;
pub use crate::routes::tokens::check_request as check_token_request;
pub use crate::state::AppState;
use crate::state::Shared;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stackyard",
        description = "A registry for deployable stacks and the plans that deploy them.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    tags(
        (name = "uploads", description = "Presigned package uploads"),
        (name = "artifacts", description = "Artifacts and their immutable versions"),
        (name = "deployments", description = "Plans per selector and their immutable revisions"),
        (name = "status", description = "Rollout status, engine reports and triggers"),
        (name = "events", description = "The stream of changes that sinks receive"),
        (name = "tokens", description = "API tokens and the audit log (admin)"),
        (name = "operations", description = "Health, readiness and metrics"),
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// Declares the bearer scheme; each route names the role it needs as the
/// scheme's scope (`security: [{bearer: [deployer]}]`).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("An API token. Roles: reader < publisher < deployer < admin; engine reads and reports status."))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The router and its OpenAPI document, built from the same route list.
pub fn api() -> (Router<AppState>, serde_json::Value) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::uploads::router())
        .merge(routes::artifacts::router())
        .merge(routes::deployments::router())
        .merge(routes::tokens::router())
        .merge(routes::audit::router())
        .merge(routes::ops::router())
        .split_for_parts();
    (router, openapi::finish(doc))
}

/// The OpenAPI document `GET /openapi.json` serves.
pub fn openapi() -> serde_json::Value {
    api().1
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    tls: Option<tokio_rustls::TlsAcceptor>,
    local_addr: SocketAddr,
    public_url: String,
}

impl Application {
    /// Opens (creating on first start) the data dir, database and blob store,
    /// and binds the listen address.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let data_dir = settings.data_dir.clone();
        let spool_dir = data_dir.join("tmp");
        for dir in [&data_dir, &spool_dir] {
            tokio::fs::create_dir_all(dir).await.with_context(|| format!("creating {}", dir.display()))?;
        }
        // Leftovers of uploads cut off by a crash: they were never registered.
        clear_dir(&spool_dir).await?;

        let store =
            storage::open_metadata(settings.database.as_ref(), &data_dir, settings.database_max_connections)
                .await?;
        let interrupted =
            store.reject_interrupted_uploads(&serde_json::to_value(interrupted_problem().problem())?).await?;
        if interrupted > 0 {
            tracing::warn!(
                count = interrupted,
                "rejected uploads that were cut off when the server last stopped"
            );
        }
        if settings.insecure_no_auth {
            tracing::warn!(
                "AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach this server is an admin"
            );
        } else {
            auth::bootstrap_admin(store.as_ref(), &data_dir, settings.bootstrap_token.as_deref()).await?;
        }
        let blobs = storage::open_blobs(settings.blob_store.as_ref(), &settings.s3, &data_dir).await?;
        let nats = match &settings.nats {
            Some(nats) => Some(Arc::new(events::nats::NatsSink::connect(nats).await?)),
            None => None,
        };
        let signer = match &settings.upload_secret {
            Some(secret) => UploadSigner::new(secret.as_bytes()),
            None => UploadSigner::load_or_create(&data_dir.join("upload.secret"))
                .context("loading the upload signing secret")?,
        };

        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("listening on {}", settings.listen))?;
        let local_addr = listener.local_addr()?;
        let tls = match &settings.tls {
            Some((cert, key)) => Some(http::tls_acceptor(cert, key)?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = settings.public_url.clone().unwrap_or_else(|| format!("{scheme}://{local_addr}"));
        let state = AppState::new(Shared {
            store: store as Arc<dyn MetadataStore>,
            blobs,
            signer: Arc::new(signer),
            metrics: Arc::new(Metrics::new()),
            public_url: public_url.clone().into(),
            spool_dir,
            events: EventNotifier::new(),
            rate_limiter: ratelimit::RateLimiter::new(&settings.limits),
            nats,
            settings: Arc::new(settings),
        });
        Ok(Self { listener, router: router(state.clone()), state, local_addr, public_url, tls })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL clients and presigned URLs use.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = CancellationToken::new();
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let mut sinks: Vec<Arc<dyn events::Sink>> = self
            .state
            .settings
            .webhooks
            .iter()
            .map(|hook| {
                Arc::new(events::WebhookSink::new(hook.clone(), client.clone())) as Arc<dyn events::Sink>
            })
            .collect();
        if let Some(nats) = &self.state.nats {
            sinks.push(nats.clone());
        }
        let settings = &self.state.settings;
        let delivery = events::Delivery {
            owner: replica_name(),
            lease: std::time::Duration::from_secs(settings.sink_lease_secs),
            poll: std::time::Duration::from_secs(settings.event_poll_interval_secs),
        };
        let mut tasks = events::spawn_dispatchers(
            self.state.store.clone(),
            sinks,
            &delivery,
            &self.state.events,
            stop.clone(),
        );
        if self.state.blobs.direct().is_some() {
            tasks.push(tokio::spawn(ingest::sweep_direct_uploads(self.state.clone(), stop.clone())));
        }
        if let Some(storage::DatabaseUrl::Postgres(url)) = &self.state.settings.database {
            let wake =
                events::wake_on_postgres_notifications(url.clone(), self.state.events.clone(), stop.clone());
            tasks.push(tokio::spawn(wake));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(address = %self.local_addr, public_url = %self.public_url, "listening on {scheme}://{}", self.local_addr);
        let limits = self.state.settings.limits;
        let connection_limits = http::ConnectionLimits {
            header_timeout: std::time::Duration::from_secs(limits.header_timeout_secs),
            max_header_bytes: limits.max_header_bytes,
        };
        let served = http::serve(self.listener, self.router, connection_limits, self.tls, shutdown).await;
        stop.cancel();
        for task in tasks {
            task.await.ok();
        }
        served
    }
}

/// Names this process in sink leases: unique per start, readable in the database.
fn replica_name() -> String {
    let mut bytes = [0u8; 4];
    rand::fill(&mut bytes);
    format!("pid{}-{}", std::process::id(), hex::encode(bytes))
}

fn interrupted_problem() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "upload_interrupted",
        "the server stopped while this upload was arriving; request a new URL and upload again",
    )
}

async fn clear_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        tokio::fs::remove_file(entry.path()).await.ok();
    }
    Ok(())
}

/// The whole HTTP stack: API routes, docs, fallbacks and middleware.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api();
    let max_body = state.settings.max_body_size;
    let request_span = |request: &Request<_>| {
        let id = request
            .extensions()
            .get::<RequestId>()
            .and_then(|id| id.header_value().to_str().ok())
            .unwrap_or("-");
        tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
    };
    api.merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), ratelimit::limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| ApiError::internal("a handler panicked").into_response()))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::not_found(format!("no route for {}", uri.path())).into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response()
}
