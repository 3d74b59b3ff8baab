//! Server settings, layered: built-in defaults, then the TOML file, then
//! `STACKYARD_*` environment variables and command-line flags (the binary
//! hands those two over already merged, flags winning).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use stackyard_core::PackageLimits;

use crate::events::WebhookSettings;
pub use crate::storage::{BlobStoreUrl, DatabaseUrl, Downloads, NatsSettings, S3Settings};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./stackyard-data";
/// S3's largest single upload; a package bigger than this is not a stack.
pub const DEFAULT_MAX_PACKAGE_SIZE: u64 = 5 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("log format must be 'text' or 'json', not '{other}'")),
        }
    }
}

/// Everything `serve` needs to know, fully resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Base of presigned URLs; `None` derives it from the bound address.
    pub public_url: Option<String>,
    pub max_package_size: u64,
    pub log_format: LogFormat,
    /// Secret for signing upload URLs; generated into the data dir when unset.
    pub upload_secret: Option<String>,
    pub package_limits: PackageLimits,
    /// Largest JSON request body.
    pub max_body_size: usize,
    /// Where events are delivered, besides `GET /events`.
    pub webhooks: Vec<WebhookSettings>,
    /// Serve everyone as admin, without tokens. For local experiments only.
    pub insecure_no_auth: bool,
    /// The first admin token's secret, used when the store has no admin token.
    pub bootstrap_token: Option<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub limits: Limits,
    /// PEM certificate chain and key: serve HTTPS instead of HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where metadata lives; `None`: the SQLite file in the data dir.
    pub database: Option<DatabaseUrl>,
    /// Connections each process keeps to PostgreSQL.
    pub database_max_connections: u32,
    /// Where packages live; `None`: `blobs/` in the data dir.
    pub blob_store: Option<BlobStoreUrl>,
    pub s3: S3Settings,
    /// The NATS JetStream sink, when configured.
    pub nats: Option<NatsSettings>,
    /// How often direct uploads that nobody completed are looked for.
    pub upload_sweep_interval_secs: u64,
    /// How long a replica's hold on delivering to a sink lasts unrenewed:
    /// the longest a dead replica's sinks wait before another takes over.
    pub sink_lease_secs: u64,
    /// How often dispatchers look for events when nothing woke them (a
    /// change on this replica, or PostgreSQL's notification of one elsewhere).
    pub event_poll_interval_secs: u64,
    /// Free space the data dir's disk must keep for `/readyz` to answer ok.
    pub min_free_disk: u64,
}

/// Bounds on what one request may ask of the server. The defaults are far
/// above normal use; each answers with a specific 4xx when crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Artifacts in one plan (413).
    pub max_plan_artifacts: usize,
    /// Nesting of JSON arrays and objects in a request body (400).
    pub max_json_depth: usize,
    /// Values in one query string (400).
    pub max_query_values: usize,
    /// Seconds a client has to send its request headers.
    pub header_timeout_secs: u64,
    /// Size of a request's headers (431).
    pub max_header_bytes: usize,
    /// Seconds an upload may go without receiving a byte (408).
    pub upload_idle_timeout_secs: u64,
    /// Requests per second per token (or per address without one), sustained (429).
    pub requests_per_second: u32,
    /// Requests a token may make at once above that rate.
    pub request_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_plan_artifacts: 10_000,
            max_json_depth: 64,
            max_query_values: 1_000,
            header_timeout_secs: 30,
            max_header_bytes: 64 * 1024,
            upload_idle_timeout_secs: 60,
            requests_per_second: 200,
            request_burst: 2_000,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: DEFAULT_DATA_DIR.into(),
            public_url: None,
            max_package_size: DEFAULT_MAX_PACKAGE_SIZE,
            log_format: LogFormat::Text,
            upload_secret: None,
            package_limits: PackageLimits::default(),
            max_body_size: 1024 * 1024,
            webhooks: Vec::new(),
            insecure_no_auth: false,
            bootstrap_token: None,
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            tls: None,
            database: None,
            database_max_connections: stackyard_store::sql::DEFAULT_POSTGRES_CONNECTIONS,
            blob_store: None,
            s3: S3Settings::default(),
            nats: None,
            upload_sweep_interval_secs: 30,
            min_free_disk: 256 * 1024 * 1024,
            sink_lease_secs: 30,
            event_poll_interval_secs: 1,
        }
    }
}

/// A byte size written as a number of bytes or with a unit: `512MiB`, `5GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SizeText")]
pub struct Size(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Bytes(u64),
    Text(String),
}

impl TryFrom<SizeText> for Size {
    type Error = String;

    fn try_from(v: SizeText) -> Result<Self, Self::Error> {
        match v {
            SizeText::Bytes(n) => Ok(Size(n)),
            SizeText::Text(s) => s.parse(),
        }
    }
}

impl std::str::FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| Size(b.as_u64()))
            .map_err(|e| format!("'{s}' is not a size such as 1048576, 512MiB or 5GiB: {e}"))
    }
}

/// Values given on the command line or in the environment: each one set
/// here wins over the file and the defaults.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub public_url: Option<String>,
    pub max_package_size: Option<Size>,
    pub log_format: Option<LogFormat>,
    pub upload_secret: Option<String>,
    pub insecure_no_auth: bool,
    pub bootstrap_token: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub database_url: Option<String>,
    pub blob_store: Option<String>,
    pub s3_endpoint: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    pub aws_region: Option<String>,
    pub nats_url: Option<String>,
}

/// The TOML file's shape. Unknown keys are an error, so a typo is not
/// silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    public_url: Option<String>,
    max_package_size: Option<Size>,
    log_format: Option<LogFormat>,
    upload_secret: Option<String>,
    max_body_size: Option<Size>,
    max_archive_entries: Option<u64>,
    max_manifest_size: Option<Size>,
    max_expansion_ratio: Option<u64>,
    webhooks: Option<Vec<WebhookSettings>>,
    trusted_proxies: Option<Vec<std::net::IpAddr>>,
    limits: Option<Limits>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    database_url: Option<String>,
    database_max_connections: Option<u32>,
    blob_store: Option<String>,
    s3_endpoint: Option<String>,
    aws_access_key_id: Option<String>,
    aws_secret_access_key: Option<String>,
    aws_region: Option<String>,
    s3_downloads: Option<Downloads>,
    s3_timeout_secs: Option<u64>,
    nats_url: Option<String>,
    nats_subject_prefix: Option<String>,
    nats_stream: Option<String>,
    upload_sweep_interval_secs: Option<u64>,
    sink_lease_secs: Option<u64>,
    event_poll_interval_secs: Option<u64>,
    min_free_disk: Option<Size>,
}

impl Settings {
    /// Resolves the settings from an optional TOML file and the overrides.
    pub fn load(config_file: Option<&Path>, overrides: Overrides) -> anyhow::Result<Self> {
        let file = match config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the configuration file {}", path.display()))?;
                toml::from_str::<FileSettings>(&text)
                    .with_context(|| format!("in the configuration file {}", path.display()))?
            }
            None => FileSettings::default(),
        };
        let defaults = Settings::default();
        let limits = defaults.package_limits;
        let settings = Settings {
            listen: overrides.listen.or(file.listen).unwrap_or(defaults.listen),
            data_dir: overrides.data_dir.or(file.data_dir).unwrap_or(defaults.data_dir),
            public_url: overrides.public_url.or(file.public_url).map(|u| u.trim_end_matches('/').to_string()),
            max_package_size: overrides
                .max_package_size
                .or(file.max_package_size)
                .map_or(defaults.max_package_size, |s| s.0),
            log_format: overrides.log_format.or(file.log_format).unwrap_or_default(),
            upload_secret: overrides.upload_secret.or(file.upload_secret),
            package_limits: PackageLimits {
                max_entries: file.max_archive_entries.unwrap_or(limits.max_entries),
                max_manifest_bytes: file.max_manifest_size.map_or(limits.max_manifest_bytes, |s| s.0),
                max_expansion_ratio: file.max_expansion_ratio.unwrap_or(limits.max_expansion_ratio),
            },
            max_body_size: file.max_body_size.map_or(defaults.max_body_size, |s| s.0 as usize),
            webhooks: file.webhooks.unwrap_or_default(),
            insecure_no_auth: overrides.insecure_no_auth,
            bootstrap_token: overrides.bootstrap_token,
            trusted_proxies: file.trusted_proxies.unwrap_or_default(),
            limits: file.limits.unwrap_or_default(),
            tls: match (overrides.tls_cert.or(file.tls_cert), overrides.tls_key.or(file.tls_key)) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => anyhow::bail!("TLS needs both a certificate (--tls-cert) and a key (--tls-key)"),
            },
            database: overrides
                .database_url
                .or(file.database_url)
                .map(|url| url.parse::<DatabaseUrl>())
                .transpose()
                .context("STACKYARD_DATABASE_URL (database_url)")?,
            database_max_connections: file
                .database_max_connections
                .unwrap_or(defaults.database_max_connections),
            blob_store: overrides
                .blob_store
                .or(file.blob_store)
                .map(|url| url.parse::<BlobStoreUrl>())
                .transpose()
                .context("STACKYARD_BLOB_STORE (blob_store)")?,
            s3: S3Settings {
                endpoint: overrides
                    .s3_endpoint
                    .or(file.s3_endpoint)
                    .map(|u| u.trim_end_matches('/').to_string()),
                access_key_id: overrides.aws_access_key_id.or(file.aws_access_key_id),
                secret_access_key: overrides.aws_secret_access_key.or(file.aws_secret_access_key),
                region: overrides.aws_region.or(file.aws_region).unwrap_or_else(|| "us-east-1".into()),
                downloads: file.s3_downloads.unwrap_or_default(),
                timeout_secs: file.s3_timeout_secs.unwrap_or(defaults.s3.timeout_secs),
            },
            nats: overrides.nats_url.or(file.nats_url).map(|url| NatsSettings {
                url,
                subject_prefix: file.nats_subject_prefix.unwrap_or_else(|| "stackyard.events".into()),
                stream: file.nats_stream.unwrap_or_else(|| "STACKYARD_EVENTS".into()),
            }),
            upload_sweep_interval_secs: file
                .upload_sweep_interval_secs
                .unwrap_or(defaults.upload_sweep_interval_secs),
            sink_lease_secs: file.sink_lease_secs.unwrap_or(defaults.sink_lease_secs),
            event_poll_interval_secs: file
                .event_poll_interval_secs
                .unwrap_or(defaults.event_poll_interval_secs),
            min_free_disk: file.min_free_disk.map_or(defaults.min_free_disk, |s| s.0),
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            anyhow::bail!("public_url must start with http:// or https://, got '{url}'");
        }
        if self.max_package_size == 0 {
            anyhow::bail!("max_package_size must be at least one byte");
        }
        if matches!(&self.bootstrap_token, Some(s) if s.len() < 16) {
            anyhow::bail!("STACKYARD_BOOTSTRAP_TOKEN must be at least 16 characters long");
        }
        if matches!(&self.upload_secret, Some(s) if s.len() < 32) {
            anyhow::bail!("upload_secret must be at least 32 characters long");
        }
        let l = &self.limits;
        if l.max_plan_artifacts == 0
            || l.max_json_depth == 0
            || l.max_query_values == 0
            || l.requests_per_second == 0
        {
            anyhow::bail!("[limits] values must be at least 1");
        }
        if l.header_timeout_secs == 0 || l.upload_idle_timeout_secs == 0 {
            anyhow::bail!("[limits] timeouts must be at least one second");
        }
        if self.database_max_connections == 0
            || self.upload_sweep_interval_secs == 0
            || self.event_poll_interval_secs == 0
            || self.s3.timeout_secs == 0
        {
            anyhow::bail!(
                "database_max_connections, upload_sweep_interval_secs, event_poll_interval_secs and \
                 s3_timeout_secs must be at least 1"
            );
        }
        if self.sink_lease_secs <= self.event_poll_interval_secs {
            // An idle dispatcher renews its lease once per poll.
            anyhow::bail!("sink_lease_secs must be longer than event_poll_interval_secs");
        }
        if let Some(endpoint) = &self.s3.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            anyhow::bail!("STACKYARD_S3_ENDPOINT must start with http:// or https://, got '{endpoint}'");
        }
        if let Some(nats) = &self.nats {
            let prefix_ok = !nats.subject_prefix.is_empty()
                && nats.subject_prefix.split('.').all(|t| !t.is_empty() && !t.contains(['*', '>', ' ']));
            if !prefix_ok {
                anyhow::bail!("nats_subject_prefix must be dot-separated tokens without wildcards or spaces");
            }
            if nats.stream.is_empty() || nats.stream.contains(['.', '*', '>', ' ', '/', '\\']) {
                anyhow::bail!(
                    "nats_stream must be a JetStream stream name (no '.', '*', '>', spaces or slashes)"
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        for hook in &self.webhooks {
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                anyhow::bail!("webhook '{}': url must start with http:// or https://", hook.name);
            }
            if hook.secret.len() < 16 {
                anyhow::bail!("webhook '{}': secret must be at least 16 characters long", hook.name);
            }
            if hook.name.is_empty() || !names.insert(hook.name.as_str()) {
                anyhow::bail!("webhook names must be unique and not empty: '{}'", hook.name);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_env_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stackyard.toml");
        std::fs::write(
            &path,
            "listen = '0.0.0.0:9000'\ndata_dir = '/srv/stackyard'\nmax_package_size = '2GiB'\nlog_format = 'json'\n",
        )
        .unwrap();
        let overrides = Overrides { listen: Some("127.0.0.1:7000".parse().unwrap()), ..Default::default() };
        let s = Settings::load(Some(&path), overrides).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(s.data_dir, PathBuf::from("/srv/stackyard"));
        assert_eq!(s.max_package_size, 2 * 1024 * 1024 * 1024);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.package_limits.max_entries, 10_000);
    }

    #[test]
    fn reads_webhook_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stackyard.toml");
        let hook =
            "[[webhooks]]\nname = 'engine'\nurl = 'http://127.0.0.1:9/hook'\nsecret = '0123456789abcdef'\n";
        std::fs::write(&path, hook).unwrap();
        let s = Settings::load(Some(&path), Overrides::default()).unwrap();
        assert_eq!(s.webhooks[0].name, "engine");
        std::fs::write(&path, hook.replace("0123456789abcdef", "short")).unwrap();
        assert!(Settings::load(Some(&path), Overrides::default()).is_err());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stackyard.toml");
        std::fs::write(&path, "lisen = '0.0.0.0:9000'\n").unwrap();
        let err = Settings::load(Some(&path), Overrides::default()).unwrap_err();
        assert!(format!("{err:#}").contains("lisen"), "{err:#}");
        std::fs::write(&path, "public_url = 'example.com'\n").unwrap();
        assert!(Settings::load(Some(&path), Overrides::default()).is_err());
        assert_eq!("512MiB".parse::<Size>(), Ok(Size(512 * 1024 * 1024)));
        assert!("lots".parse::<Size>().is_err());
    }
}
