//! `stackyard serve`: the registry's HTTP API.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use stackyard_server::config::{LogFormat, Overrides, Settings, Size};
use stackyard_server::{Application, telemetry};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "STACKYARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "STACKYARD_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory for the database, packages and secrets [default: ./stackyard-data].
    #[arg(long, env = "STACKYARD_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Base URL of presigned upload URLs, as clients reach the server [default: http://<listen address>].
    #[arg(long, env = "STACKYARD_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    /// Largest package accepted, e.g. 512MiB [default: 5GiB].
    #[arg(long, env = "STACKYARD_MAX_PACKAGE_SIZE", value_name = "SIZE")]
    max_package_size: Option<Size>,
    /// Log as human-readable `text` or as `json` lines [default: text].
    #[arg(long, env = "STACKYARD_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Secret that signs upload URLs (32+ characters); shared by every replica.
    /// Default: generated on first start into <data-dir>/upload.secret.
    #[arg(long, env = "STACKYARD_UPLOAD_SECRET", value_name = "SECRET", hide_env_values = true)]
    upload_secret: Option<String>,
    /// Serve everyone as admin, without tokens: for local experiments only.
    #[arg(long, env = "STACKYARD_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// The first admin token's secret (16+ characters), used when the store has no admin token.
    /// Default: one is generated, printed once and written to <data-dir>/admin.token.
    #[arg(long, env = "STACKYARD_BOOTSTRAP_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    bootstrap_token: Option<String>,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, env = "STACKYARD_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STACKYARD_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Metadata database: sqlite://PATH or postgres://USER:PASSWORD@HOST/DATABASE
    /// [default: the SQLite file <data-dir>/stackyard.db].
    #[arg(long, env = "STACKYARD_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Package store: file://DIR or s3://BUCKET/PREFIX [default: file://<data-dir>/blobs].
    #[arg(long, env = "STACKYARD_BLOB_STORE", value_name = "URL")]
    blob_store: Option<String>,
    /// An S3-compatible server's URL (MinIO, R2, ...), addressed path-style [default: AWS S3].
    #[arg(long, env = "STACKYARD_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,
    /// Publish events to NATS JetStream at this URL.
    #[arg(long, env = "STACKYARD_NATS_URL", value_name = "URL")]
    nats_url: Option<String>,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        public_url: args.public_url,
        max_package_size: args.max_package_size,
        log_format: args.log_format,
        upload_secret: args.upload_secret,
        insecure_no_auth: args.insecure_no_auth,
        bootstrap_token: args.bootstrap_token,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        database_url: args.database_url,
        blob_store: args.blob_store,
        s3_endpoint: args.s3_endpoint,
        nats_url: args.nats_url,
        // Credentials come from the environment or the file only, never a flag.
        aws_access_key_id: env("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
        aws_region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")),
    };
    let settings = Settings::load(args.config.as_deref(), overrides)?;
    telemetry::init(settings.log_format);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let app = Application::build(settings).await?;
        app.run_until_stopped(shutdown_signal()).await.context("serving HTTP")?;
        tracing::info!("stopped");
        Ok(())
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
