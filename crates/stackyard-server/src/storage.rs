//! Which backends the server runs on, chosen by configuration, and opening
//! them at start-up with a clear message when one is unreachable or
//! misconfigured.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use stackyard_store::{BlobStore, FsBlobStore, S3BlobStore, S3Config, SqlStore};

/// `STACKYARD_DATABASE_URL`: `sqlite://PATH` or `postgres://...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl std::str::FromStr for DatabaseUrl {
    type Err = anyhow::Error;

    fn from_str(url: &str) -> anyhow::Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                bail!("'{url}' names no file; use sqlite://PATH");
            }
            return Ok(Self::Sqlite(path.into()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_string()));
        }
        bail!("'{}' is neither sqlite://PATH nor postgres://USER@HOST/DATABASE", redact(url))
    }
}

/// `STACKYARD_BLOB_STORE`: `file://DIR` or `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobStoreUrl {
    File(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl std::str::FromStr for BlobStoreUrl {
    type Err = anyhow::Error;

    fn from_str(url: &str) -> anyhow::Result<Self> {
        if let Some(dir) = url.strip_prefix("file://") {
            if dir.is_empty() {
                bail!("'{url}' names no directory; use file://DIR");
            }
            return Ok(Self::File(dir.into()));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid = (3..=63).contains(&bucket.len())
                && bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
            if !valid {
                bail!("'{bucket}' is not an S3 bucket name (3 to 63 of a-z, 0-9, '-' and '.')");
            }
            return Ok(Self::S3 { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() });
        }
        bail!("'{url}' is neither file://DIR nor s3://BUCKET/PREFIX")
    }
}

/// How package downloads from an object store are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Downloads {
    /// 302 to a presigned GET: the bytes never pass through the server.
    #[default]
    Redirect,
    /// Streamed through the server.
    Stream,
}

/// The object store's address and credentials (`STACKYARD_S3_ENDPOINT`,
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`).
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub region: String,
    pub downloads: Downloads,
    /// Seconds the object store may stay silent before a request fails (503).
    pub timeout_secs: u64,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            region: "us-east-1".into(),
            downloads: Downloads::default(),
            timeout_secs: 30,
        }
    }
}

/// The NATS JetStream sink (`STACKYARD_NATS_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    pub url: String,
    /// Events are published as `<prefix>.<type>`.
    pub subject_prefix: String,
    /// The stream that captures `<prefix>.>`, created when missing.
    pub stream: String,
}

/// A URL with any password replaced, fit for logs and error messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            parsed.set_password(Some("***")).ok();
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// S3's own `<Code>` and `<Message>` from an error that carries its XML
/// answer (e.g. `InvalidAccessKeyId: The AWS Access Key Id ...`), else the error.
fn s3_reason(error: &str) -> String {
    let element = |name: &str| {
        let start = error.find(&format!("<{name}>"))? + name.len() + 2;
        let end = start + error[start..].find(&format!("</{name}>"))?;
        Some(&error[start..end])
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => error.to_string(),
    }
}

pub async fn open_metadata(
    database: Option<&DatabaseUrl>,
    data_dir: &Path,
    max_connections: u32,
) -> anyhow::Result<Arc<SqlStore>> {
    let default = DatabaseUrl::Sqlite(data_dir.join("stackyard.db"));
    let store = match database.unwrap_or(&default) {
        DatabaseUrl::Sqlite(path) => SqlStore::open_sqlite(path)
            .await
            .with_context(|| format!("opening the SQLite database {}", path.display()))?,
        DatabaseUrl::Postgres(url) => {
            SqlStore::connect_postgres(url, max_connections).await.with_context(|| {
                format!("connecting to PostgreSQL at {} (STACKYARD_DATABASE_URL)", redact(url))
            })?
        }
    };
    Ok(Arc::new(store))
}

pub async fn open_blobs(
    blob_store: Option<&BlobStoreUrl>,
    s3: &S3Settings,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn BlobStore>> {
    let default = BlobStoreUrl::File(data_dir.join("blobs"));
    match blob_store.unwrap_or(&default) {
        BlobStoreUrl::File(dir) => Ok(Arc::new(
            FsBlobStore::open_dir(dir)
                .await
                .with_context(|| format!("opening the blob store {}", dir.display()))?,
        )),
        BlobStoreUrl::S3 { bucket, prefix } => {
            let (Some(access_key_id), Some(secret_access_key)) = (&s3.access_key_id, &s3.secret_access_key)
            else {
                bail!("an s3:// blob store needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
            };
            let store = S3BlobStore::new(S3Config {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                endpoint: s3.endpoint.clone(),
                region: s3.region.clone(),
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.clone(),
                timeout: Duration::from_secs(s3.timeout_secs),
            })
            .context("configuring the S3 client")?;
            let at = s3.endpoint.as_deref().unwrap_or("AWS");
            match tokio::time::timeout(Duration::from_secs(20), store.ping()).await {
                Ok(Ok(())) => Ok(Arc::new(store)),
                Ok(Err(e)) => bail!(
                    "the S3 bucket '{bucket}' at {at} refused a test write and delete: {}. Check the bucket \
                     name, the region ({}), the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and that \
                     they may put, get and delete objects",
                    s3_reason(&e.to_string()),
                    s3.region
                ),
                Err(_) => bail!("the S3 endpoint {at} did not answer within 20 s (STACKYARD_S3_ENDPOINT)"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backend_urls() {
        assert_eq!(
            "sqlite:///var/lib/sy.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite("/var/lib/sy.db".into())
        );
        assert!(matches!("postgres://u@h/db".parse::<DatabaseUrl>().unwrap(), DatabaseUrl::Postgres(_)));
        let err = "mysql://u:hunter2@h/db".parse::<DatabaseUrl>().unwrap_err().to_string();
        assert!(err.contains("neither") && !err.contains("hunter2"), "{err}");
        assert_eq!(
            "s3://packages/prod/stackyard/".parse::<BlobStoreUrl>().unwrap(),
            BlobStoreUrl::S3 { bucket: "packages".into(), prefix: "prod/stackyard".into() }
        );
        assert_eq!(
            "s3://packages".parse::<BlobStoreUrl>().unwrap(),
            BlobStoreUrl::S3 { bucket: "packages".into(), prefix: String::new() }
        );
        assert!("s3://Bad_Bucket/x".parse::<BlobStoreUrl>().is_err());
        assert!("ftp://x".parse::<BlobStoreUrl>().is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        let xml = "403 Forbidden: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code>\
                   <Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(s3_reason(xml), "NoSuchBucket: The specified bucket does not exist");
        assert_eq!(s3_reason("connection refused"), "connection refused");
    }
}
