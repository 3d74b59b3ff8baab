//! The real binary as users run it: restarts, graceful shutdown, memory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::*;

/// `stackyard serve` in a child process on a free port.
pub struct ServerProcess {
    child: Child,
    pub url: String,
    pub client: reqwest::Client,
    lines: mpsc::Receiver<String>,
}

impl ServerProcess {
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[("STACKYARD_BOOTSTRAP_TOKEN", ADMIN_TOKEN)], &[])
    }

    pub fn start_with(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let (lines_tx, lines) = mpsc::channel();
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("STACKYARD_LOG", "info")
            .env_remove("STACKYARD_BOOTSTRAP_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the stackyard binary starts");
        let stderr = child.stderr.take().unwrap();
        let (address_tx, address_rx) = mpsc::channel();
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<Value>(&line)
                    && let Some(address) = entry["fields"]["address"].as_str()
                {
                    address_tx.send(address.to_string()).ok();
                }
                lines_tx.send(line.clone()).ok();
                if std::env::var("TEST_LOG").is_ok() {
                    eprintln!("{line}");
                }
            }
        });
        let address = address_rx.recv_timeout(Duration::from_secs(30)).expect("the server logs its address");
        Self { child, url: format!("http://{address}"), client: client_with(ADMIN_TOKEN), lines }
    }

    /// The log lines printed so far.
    pub fn log(&self) -> String {
        self.lines.try_iter().collect::<Vec<_>>().join("\n")
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// SIGKILL: the process dies on the spot, as in a crash.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn terminate(&mut self) -> ExitStatus {
        Command::new("kill").args(["-TERM", &self.pid()]).status().unwrap();
        self.child.wait().unwrap()
    }

    /// Peak resident memory so far (VmHWM), in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }

    async fn presign(&self, body: Value) -> Value {
        let response =
            self.client.post(format!("{}/presigned_url", self.url)).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(format!("{}{path}", self.url)).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[tokio::test]
async fn a_restart_keeps_every_artifact_and_presigned_url() {
    let data_dir = tempfile::tempdir().unwrap();
    let pkg = package("network", &[], "restart");
    let mut server = ServerProcess::start(data_dir.path());
    let presigned = server.presign(json!({})).await;
    assert_eq!(post_form(&server.client, &presigned, pkg.clone(), &[]).await.status(), 204);
    let before = server.get_json("/artifacts/network").await;
    let unused = server.presign(json!({})).await;
    assert!(server.terminate().success(), "SIGTERM stops the server cleanly");

    let server = ServerProcess::start(data_dir.path());
    assert_eq!(server.get_json("/artifacts/network").await, before);
    let id = presigned["upload_id"].as_str().unwrap();
    assert_eq!(server.get_json(&format!("/uploads/{id}")).await["state"], "registered");
    let download = server
        .client
        .get(format!("{}/artifacts/network/versions/1/download", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(download.bytes().await.unwrap().as_ref(), pkg.as_slice());

    // The signing secret survived too: a URL presigned before the restart works.
    let unused = json!({"url": unused["url"].as_str().unwrap().replace(&before_url(&unused), &server.url), "fields": unused["fields"]});
    let response = post_form(&server.client, &unused, package("network", &[], "after"), &[]).await;
    assert_eq!(response.status(), 204);
    assert_eq!(server.get_json("/artifacts/network").await["latest_version"], 2);
}

fn before_url(presigned: &Value) -> String {
    let url = presigned["url"].as_str().unwrap();
    url[..url.find("/uploads/").unwrap()].to_string()
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_upload_finish() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(data_dir.path());
    let presigned = server.presign(json!({})).await;
    let filler = vec![b'x'; 256 * 1024];
    let pkg = tar(&[("manifest.json", &manifest("slow", &[])), ("main.tf", &filler)]);
    let (first, rest) = pkg.split_at(1024);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = tokio_stream(rx);
    let mut form = Form::new();
    for (name, value) in presigned["fields"].as_object().unwrap() {
        form = form.text(name.clone(), value.as_str().unwrap().to_string());
    }
    form = form.part("file", Part::stream_with_length(reqwest::Body::wrap_stream(body), pkg.len() as u64));
    let request = server.client.post(presigned["url"].as_str().unwrap()).multipart(form).send();
    let upload = tokio::spawn(request);

    tx.send(Ok(first.to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    Command::new("kill").args(["-TERM", &server.pid()]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(rest.to_vec())).await.unwrap();
    drop(tx);

    let response = upload.await.unwrap().unwrap();
    assert_eq!(response.status(), 204, "the upload in flight at SIGTERM completes");
    assert!(server.child.wait().unwrap().success());

    let server = ServerProcess::start(data_dir.path());
    assert_eq!(server.get_json("/artifacts/slow").await["latest_version"], 1);
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A package far larger than the memory budget streams through with
/// bounded memory: the server's peak RSS grows by less than 50 MiB.
#[tokio::test]
async fn a_large_upload_keeps_server_memory_bounded() {
    const SIZE: u64 = 512 * 1024 * 1024;
    const BUDGET: u64 = 50 * 1024 * 1024;
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("big.tar");
    write_big_package(&path, SIZE);
    let size = std::fs::metadata(&path).unwrap().len();

    let server = ServerProcess::start(&work.path().join("data"));
    // Warm up every code path once, so only the size of the upload differs.
    let presigned = server.presign(json!({})).await;
    assert_eq!(post_form(&server.client, &presigned, package("warm", &[], "up"), &[]).await.status(), 204);
    let before = server.peak_rss();

    let presigned = server.presign(json!({"content_length": size})).await;
    let mut form = Form::new();
    for (name, value) in presigned["fields"].as_object().unwrap() {
        form = form.text(name.clone(), value.as_str().unwrap().to_string());
    }
    let file = tokio::fs::File::open(&path).await.unwrap();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(|c| c.map(|b| b.to_vec()));
    form = form.part("file", Part::stream_with_length(reqwest::Body::wrap_stream(stream), size));
    let started = std::time::Instant::now();
    let response =
        server.client.post(presigned["url"].as_str().unwrap()).multipart(form).send().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 204, "{}", response.text().await.unwrap());

    let growth = server.peak_rss().saturating_sub(before);
    eprintln!(
        "uploaded {} MiB in {:.1} s; server peak RSS {} MiB -> growth {} KiB",
        size >> 20,
        elapsed.as_secs_f64(),
        server.peak_rss() >> 20,
        growth >> 10
    );
    assert!(growth < BUDGET, "peak RSS grew by {} MiB", growth >> 20);
    let version = server.get_json("/artifacts/big/versions/1").await;
    assert_eq!(version["size"], size);
}

/// A tar with a manifest and one large file of zeros, written as it goes.
fn write_big_package(path: &Path, data_size: u64) {
    let file = std::fs::File::create(path).unwrap();
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    let manifest = manifest("big", &[]);
    let mut header = tar::Header::new_ustar();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "manifest.json", manifest.as_slice()).unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_size(data_size);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "data.bin", std::io::Read::take(std::io::repeat(0), data_size)).unwrap();
    builder.into_inner().unwrap();
}

#[tokio::test]
async fn the_first_start_creates_an_admin_token_once() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start_with(data_dir.path(), &[], &[]);
    let file = data_dir.path().join("admin.token");
    let secret = std::fs::read_to_string(&file).unwrap().trim().to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(server.log().contains(&secret), "printed once in the log");
    let admin = client_with(&secret);
    assert_eq!(admin.get(format!("{}/tokens", server.url)).send().await.unwrap().status(), 200);
    assert_eq!(reqwest::get(format!("{}/artifacts", server.url)).await.unwrap().status(), 401);
    assert!(server.terminate().success());

    let server = ServerProcess::start_with(data_dir.path(), &[], &[]);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), secret, "no second admin token");
    let tokens: Value =
        admin.get(format!("{}/tokens", server.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(tokens["tokens"].as_array().unwrap().len(), 1);

    // Recovery without the server's API: a new admin token straight in the database.
    let output = Command::new(binary())
        .args([
            "admin",
            "token",
            "create",
            "--name",
            "recovery",
            "--role",
            "admin",
            "-o",
            "json",
            "--data-dir",
        ])
        .arg(data_dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    let recovered = client_with(created["token"].as_str().unwrap());
    assert_eq!(recovered.get(format!("{}/tokens", server.url)).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn insecure_mode_warns_on_every_start() {
    let data_dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let mut server = ServerProcess::start_with(data_dir.path(), &[], &["--insecure-no-auth"]);
        assert!(server.log().contains("AUTHENTICATION IS OFF"), "{}", server.log());
        assert_eq!(reqwest::get(format!("{}/tokens", server.url)).await.unwrap().status(), 200);
        assert!(server.terminate().success());
    }
    assert!(!data_dir.path().join("admin.token").exists(), "no token is made when auth is off");
}
