//! Fixtures for tests that need a real PostgreSQL, S3-compatible server or
//! NATS server.
//!
//! Each service is found through an environment variable, with this
//! machine's usual address as the default for PostgreSQL and NATS. When a
//! service cannot be reached the test says so on stderr and passes as
//! skipped, so `cargo test` works on a fresh machine; with
//! `STACKYARD_TEST_REQUIRE_SERVICES=1` (CI sets it) a missing service fails
//! the test instead.

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

pub const POSTGRES_VAR: &str = "STACKYARD_TEST_POSTGRES_URL";
pub const S3_VAR: &str = "STACKYARD_TEST_S3_ENDPOINT";
/// An S3-compatible server that checks credentials (moto with IAM auth on).
pub const S3_AUTH_VAR: &str = "STACKYARD_TEST_S3_AUTH_ENDPOINT";
pub const NATS_VAR: &str = "STACKYARD_TEST_NATS_URL";
pub const REQUIRE_VAR: &str = "STACKYARD_TEST_REQUIRE_SERVICES";

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
const DEFAULT_NATS: &str = "127.0.0.1:4222";

/// Says why a test does not run; panics instead when services are required.
pub fn skip(service: &str, why: &str) {
    let message = format!("SKIPPED: {service} is not available ({why})");
    if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") {
        panic!("{message}, and {REQUIRE_VAR}=1 requires it");
    }
    eprintln!("{message}");
}

/// A fresh, empty PostgreSQL database, dropped with this value.
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Creates one, or answers `None` (after [`skip`]) when PostgreSQL is unreachable.
    pub async fn create() -> Option<Self> {
        let admin_url = std::env::var(POSTGRES_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES.to_string());
        let connect = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin_url)).await;
        let mut admin = match connect {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                skip("PostgreSQL", &format!("{admin_url}: {e}; set {POSTGRES_VAR}"));
                return None;
            }
            Err(_) => {
                skip("PostgreSQL", &format!("{admin_url} did not answer in 5 s; set {POSTGRES_VAR}"));
                return None;
            }
        };
        let name = format!("stackyard_test_{}", random_hex(8));
        admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("CREATE DATABASE");
        let url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("{POSTGRES_VAR} must end with /<database>"),
        };
        Some(Self { url, admin_url, name })
    }
}

impl TestDatabase {
    /// The database's name, as `pg_stat_activity.datname` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection to the server as its administrator, outside this database.
    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.admin_url).await.expect("connecting as administrator")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside a test's runtime; a thread of its own may block.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    admin.execute(sqlx::AssertSqlSafe(drop)).await.ok();
                }
            });
        })
        .join()
        .ok();
    }
}

/// The S3-compatible server `.ci/run` starts, with a bucket of its own for
/// the caller; `None` (after [`skip`]) without one.
pub struct TestBucket {
    pub endpoint: String,
    pub bucket: String,
}

impl TestBucket {
    pub async fn create() -> Option<Self> {
        let Ok(endpoint) = std::env::var(S3_VAR) else {
            skip("the S3-compatible server", &format!("{S3_VAR} is not set; .ci/run starts one"));
            return None;
        };
        let bucket = format!("stackyard-test-{}", random_hex(6));
        // moto and most S3-compatible servers create a bucket on a plain
        // `PUT /<bucket>` when they do not check signatures for it.
        let status = create_bucket(&endpoint, &bucket).await;
        assert!(status.is_ok(), "creating bucket {bucket} at {endpoint}: {status:?}");
        Some(Self { endpoint, bucket })
    }
}

async fn create_bucket(endpoint: &str, bucket: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(address).await.map_err(|e| e.to_string())?;
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.map_err(|e| e.to_string())?;
    match response.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(response),
    }
}

/// The credential-checking S3 server, or `None` (after [`skip`]) without one.
pub fn s3_auth_endpoint() -> Option<String> {
    let endpoint = std::env::var(S3_AUTH_VAR).ok();
    if endpoint.is_none() {
        skip("a credential-checking S3 server", &format!("{S3_AUTH_VAR} is not set; .ci/run starts one"));
    }
    endpoint
}

/// The NATS server's address, or `None` (after [`skip`]) when it cannot be reached.
pub async fn nats_url() -> Option<String> {
    let url = std::env::var(NATS_VAR).unwrap_or_else(|_| DEFAULT_NATS.to_string());
    let address = url.trim_start_matches("nats://").to_string();
    match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&address)).await {
        Ok(Ok(_)) => Some(format!("nats://{address}")),
        _ => {
            skip("NATS", &format!("{address} cannot be reached; set {NATS_VAR}"));
            None
        }
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::fill(&mut buffer[..]);
    hex::encode(buffer)
}
