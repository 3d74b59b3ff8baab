//! Faults in real dependencies, injected while the server runs: a full disk
//! (a small tmpfs), a package store it may not write to (an immutable
//! directory), an object store that answers 500 or nothing (a proxy in
//! front of the S3-compatible server), a locked SQLite file (another
//! connection holding its write lock) and PostgreSQL connections killed
//! mid-request. Each gives a clean 5xx problem, changes nothing, and the
//! server recovers by itself once the fault clears.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Connection, Executor};
use stackyard_server::config::{BlobStoreUrl, DatabaseUrl, Downloads};
use stackyard_testkit::{TestBucket, TestDatabase, skip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::*;

/// Asserts a 503 `service_unavailable` that asks for a retry.
async fn assert_unavailable(response: reqwest::Response) -> Value {
    let retry_after = response.headers().contains_key("retry-after");
    let problem = assert_problem(response, 503, "service_unavailable").await;
    assert!(retry_after, "503 says when to retry");
    problem
}

async fn artifact_keys(app: &TestApp) -> Vec<String> {
    listed_keys(&app.get_json("/artifacts").await)
}

// ---- A full disk -----------------------------------------------------------

/// A tmpfs of a few MiB, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size_mib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(Self { dir }),
            _ => {
                skip("a tmpfs mount", "mounting one needs root (CI runs as root)");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        while file.write_all(&chunk[..512]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        Command::new("umount").arg("-l").arg(self.dir.path()).status().ok();
    }
}

#[tokio::test]
async fn a_full_disk_answers_507_keeps_nothing_and_is_reported_by_readyz() {
    let Some(disk) = SmallDisk::mount(24) else { return };
    let data_dir = disk.path().join("data");
    let app = TestApp::spawn_with(|s| {
        s.data_dir = data_dir.clone();
        s.min_free_disk = 4 * 1024 * 1024;
    })
    .await;
    app.upload_ok(package("network", &[], "before")).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let presigned = app.presign(json!({})).await;

    let filler = disk.fill();
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["checks"]["disk"], "full");
    // A package far larger than what is left.
    let big = tar(&[("manifest.json", &manifest("cluster", &[])), ("main.tf", &vec![b'x'; 2 * 1024 * 1024])]);
    let response = post_form(&app.client, &presigned, big.clone(), &[]).await;
    assert_problem(response, 507, "insufficient_storage").await;
    assert_eq!(artifact_keys(&app).await, ["network"], "nothing was registered");
    let spool = data_dir.join("tmp");
    assert_eq!(count_files(&spool), 0, "the partial upload was removed");

    std::fs::remove_file(filler).unwrap();
    assert_eq!(app.get("/readyz").await.status(), 200, "ready again once space is freed");
    let id = presigned["upload_id"].as_str().unwrap();
    assert_eq!(app.get_json(&format!("/uploads/{id}")).await["state"], "pending", "the URL is still good");
    let response = post_form(&app.client, &presigned, big, &[]).await;
    assert_eq!(response.status(), 204, "the same presigned URL works after the fault");
    assert_eq!(artifact_keys(&app).await, ["cluster", "network"]);
}

// ---- A package store that may not be written -------------------------------

/// `chattr -R +i`: not even root may create files in the directory or below.
fn set_immutable(dir: &Path, on: bool) -> bool {
    let flag = if on { "+i" } else { "-i" };
    Command::new("chattr").args(["-R", flag]).arg(dir).status().is_ok_and(|s| s.success())
}

#[tokio::test]
async fn an_unwritable_package_store_answers_503_and_recovers() {
    let app = TestApp::spawn().await;
    let blobs = app.data_dir.path().join("blobs");
    if !set_immutable(&blobs, true) {
        skip("chattr", "making a directory immutable needs root and a filesystem with attributes");
        return;
    }
    let presigned = app.presign(json!({})).await;
    let response = post_form(&app.client, &presigned, package("network", &[], "x"), &[]).await;
    let result = assert_unavailable(response).await;
    let ready = app.get("/readyz").await;
    set_immutable(&blobs, false);
    assert!(result["detail"].as_str().unwrap().contains("package store"), "{result}");
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["checks"]["blobs"], "unavailable");
    assert!(artifact_keys(&app).await.is_empty());

    assert_eq!(app.get("/readyz").await.status(), 200);
    let response = post_form(&app.client, &presigned, package("network", &[], "x"), &[]).await;
    assert_eq!(response.status(), 204, "the same URL works once the store is writable");
}

// ---- An object store that fails or hangs ------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Pass,
    /// Every request gets `500 InternalError`.
    Fail,
    /// Connections are accepted and never answered.
    Hang,
}

/// A TCP proxy in front of a real server that injects [`Fault`]s. Changing
/// the fault cuts every open connection, so pooled ones see it too.
struct FaultProxy {
    url: String,
    fault: Arc<watch::Sender<Fault>>,
}

impl FaultProxy {
    async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fault = Arc::new(watch::channel(Fault::Pass).0);
        let faults = fault.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut changed = faults.subscribe();
                let now = *changed.borrow_and_update();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = serve(client, &upstream, now) => {}
                        _ = changed.changed() => {}
                    }
                });
            }
        });
        Self { url, fault }
    }

    fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

async fn serve(mut client: TcpStream, upstream: &str, fault: Fault) {
    match fault {
        Fault::Pass => {
            if let Ok(mut server) = TcpStream::connect(upstream).await {
                tokio::io::copy_bidirectional(&mut client, &mut server).await.ok();
            }
        }
        Fault::Fail => {
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match client.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buffer[..n]),
                }
            }
            let body = "<Error><Code>InternalError</Code><Message>injected</Message></Error>";
            let response = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(response.as_bytes()).await.ok();
        }
        Fault::Hang => std::future::pending().await,
    }
}

#[tokio::test]
async fn object_store_errors_and_timeouts_answer_503_and_recover() {
    let Some(bucket) = TestBucket::create().await else { return };
    let proxy = FaultProxy::start(&bucket.endpoint).await;
    let (endpoint, name) = (proxy.url.clone(), bucket.bucket.clone());
    let app = TestApp::spawn_with(move |s| {
        s.blob_store = Some(BlobStoreUrl::S3 { bucket: name, prefix: "faults".into() });
        s.s3.endpoint = Some(endpoint);
        s.s3.access_key_id = Some("testing".into());
        s.s3.secret_access_key = Some("testing".into());
        s.s3.downloads = Downloads::Stream;
        s.s3.timeout_secs = 1;
        s.upload_sweep_interval_secs = 3600;
    })
    .await;
    let plain = reqwest::Client::new();
    let complete = |id: String| {
        let request = app.client.post(app.at(&format!("/uploads/{id}/complete")));
        async move { request.send().await.unwrap() }
    };
    let first = app.presign(json!({})).await;
    assert!(post_form(&plain, &first, package("network", &[], "one"), &[]).await.status().is_success());
    let first_id = first["upload_id"].as_str().unwrap().to_string();
    assert_eq!(complete(first_id).await.status(), 200);
    let second = app.presign(json!({})).await;
    assert!(post_form(&plain, &second, package("cluster", &[], "two"), &[]).await.status().is_success());
    let second_id = second["upload_id"].as_str().unwrap().to_string();

    for fault in [Fault::Fail, Fault::Hang] {
        proxy.set(fault);
        assert_unavailable(complete(second_id.clone()).await).await;
        let upload = app.get_json(&format!("/uploads/{second_id}")).await;
        assert_eq!(upload["state"], "pending", "{fault:?}: the upload can be completed later");
        assert_unavailable(app.get("/artifacts/network/versions/1/download").await).await;
        let ready = app.get("/readyz").await;
        assert_eq!(ready.status(), 503, "{fault:?}");
        assert_eq!(ready.json::<Value>().await.unwrap()["checks"]["blobs"], "unavailable");
        assert_eq!(artifact_keys(&app).await, ["network"], "{fault:?}: nothing changed");
    }

    proxy.set(Fault::Pass);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let completed = complete(second_id).await;
    assert_eq!(completed.status(), 200);
    assert_eq!(completed.json::<Value>().await.unwrap()["state"], "registered");
    let download = app.get("/artifacts/network/versions/1/download").await;
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap().as_ref(), package("network", &[], "one").as_slice());
}

// ---- A locked or disconnected database --------------------------------------

async fn revision_count(app: &TestApp, selector: &str) -> usize {
    let revisions = app.get_json(&format!("/deployments/{}/revisions", segment(selector))).await;
    revisions["revisions"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_locked_sqlite_database_answers_503_and_recovers() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[]), ("cluster", &["network"])]).await;
    assert_eq!(app.deploy("prod", keys(&["network"])).await.status(), 201);

    // Another process holds SQLite's write lock past the server's busy timeout.
    let path = app.data_dir.path().join("stackyard.db");
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    other.execute("BEGIN EXCLUSIVE").await.unwrap();
    let response = app.deploy("prod", keys(&["network", "cluster"])).await;
    assert_unavailable(response).await;
    assert_eq!(app.get_json("/deployments/prod").await["revision"], 1, "reads go on; nothing changed");
    other.execute("ROLLBACK").await.unwrap();
    drop(other);

    assert_eq!(app.deploy("prod", keys(&["network", "cluster"])).await.status(), 200);
    assert_eq!(revision_count(&app, "prod").await, 2, "revisions stay contiguous");
}

#[tokio::test]
async fn postgres_connections_killed_mid_request_answer_503_and_recover() {
    let Some(database) = TestDatabase::create().await else { return };
    let url = database.url.clone();
    let app = TestApp::spawn_with(move |s| {
        s.database = Some(DatabaseUrl::Postgres(url));
        s.database_max_connections = 4;
    })
    .await;
    app.publish(&[("network", &[]), ("cluster", &["network"])]).await;
    assert_eq!(app.deploy("prod", keys(&["network"])).await.status(), 201);

    // Hold the deployment's row so the next write waits on it, then kill
    // every connection the server has while it waits.
    let mut admin = database.admin().await;
    let mut holder = sqlx::PgConnection::connect(&database.url).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder.execute("SELECT 1 FROM deployments WHERE selector = 'prod' FOR UPDATE").await.unwrap();
    let write = tokio::spawn({
        let (client, url) = (app.client.clone(), app.at("/deployments"));
        let body =
            json!({"selector": "prod", "deployment_plan": {"artifacts": keys(&["network", "cluster"])}});
        async move { client.post(url).json(&body).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kill = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{}' AND pid <> {}",
        database.name(),
        holder_pid(&mut holder).await
    );
    admin.execute(sqlx::AssertSqlSafe(kill)).await.unwrap();
    assert_unavailable(write.await.unwrap()).await;
    holder.execute("ROLLBACK").await.unwrap();

    assert_eq!(
        app.get_json("/deployments/prod").await["revision"],
        1,
        "the pool reconnects; nothing changed"
    );
    assert_eq!(app.deploy("prod", keys(&["network", "cluster"])).await.status(), 200);
    assert_eq!(revision_count(&app, "prod").await, 2);
}

async fn holder_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(conn).await.unwrap()
}
