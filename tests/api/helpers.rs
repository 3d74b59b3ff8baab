//! Shared test fixtures: an in-process server, package builders, uploads.

use std::io::Write;
use std::path::{Path, PathBuf};

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use stackyard_server::{Application, Settings};
use tokio::sync::oneshot;

/// The admin token every test server starts with.
pub const ADMIN_TOKEN: &str = "sy_test-admin-token-0123456789";

pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a server on a free port with a fresh data dir; `tweak` may
    /// adjust its settings first.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        if std::env::var("TEST_LOG").is_ok() {
            stackyard_server::telemetry::init(Default::default());
        }
        let data_dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.path().to_path_buf(),
            bootstrap_token: Some(ADMIN_TOKEN.into()),
            ..Default::default()
        };
        tweak(&mut settings);
        let app = Application::build(settings).await.unwrap();
        let url = app.public_url().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async {
            stopped.await.ok();
        }));
        Self { url, client: client_with(ADMIN_TOKEN), data_dir, stop: Some(stop) }
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.at(path)).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub async fn presign(&self, body: Value) -> Value {
        let response = self.client.post(self.at("/presigned_url")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201, "presign {body}");
        response.json().await.unwrap()
    }

    /// Presigns and uploads through the multipart POST, as an S3 client would.
    pub async fn upload(&self, package: Vec<u8>) -> reqwest::Response {
        let presigned = self.presign(json!({})).await;
        post_form(&self.client, &presigned, package, &[]).await
    }

    /// Uploads and expects success; answers the registered upload object.
    pub async fn upload_ok(&self, package: Vec<u8>) -> Value {
        let presigned = self.presign(json!({})).await;
        let response =
            post_form(&self.client, &presigned, package, &[("success_action_status", "201")]).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    /// The files under the data dir's blob store and spool.
    pub fn stored_files(&self) -> (usize, usize) {
        (count_files(&self.data_dir.path().join("blobs")), count_files(&self.data_dir.path().join("tmp")))
    }

    /// Asserts that no version, blob or spool file exists.
    pub async fn assert_nothing_stored(&self) {
        let list = self.get_json("/artifacts").await;
        assert_eq!(list["artifacts"], json!([]), "no artifact may be registered");
        assert_eq!(self.stored_files(), (0, 0), "no blob or spool file may remain");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}

/// A client that sends this bearer token with every request.
pub fn client_with(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

pub fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 }).sum()
}

/// Sends the presigned fields, then `extra` fields, then the package as `file`.
pub async fn post_form(
    client: &reqwest::Client,
    presigned: &Value,
    package: Vec<u8>,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    try_post_form(client, presigned, package, extra).await.expect("the presigned POST gets an answer")
}

/// [`post_form`], answering `None` when the server is gone (crash tests).
pub async fn try_post_form(
    client: &reqwest::Client,
    presigned: &Value,
    package: Vec<u8>,
    extra: &[(&str, &str)],
) -> Option<reqwest::Response> {
    let mut form = Form::new();
    for (name, value) in presigned["fields"].as_object()? {
        form = form.text(name.clone(), value.as_str()?.to_string());
    }
    for (name, value) in extra {
        form = form.text(name.to_string(), value.to_string());
    }
    form = form.part("file", Part::bytes(package).file_name("package"));
    client.post(presigned["url"].as_str()?).multipart(form).send().await.ok()
}

/// The artifact keys of a `GET /artifacts` answer, in order.
pub fn listed_keys(list: &Value) -> Vec<String> {
    list["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["artifact_key"].as_str().unwrap().to_string())
        .collect()
}

pub async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "expected {status} {code}");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(content_type, "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], format!("urn:stackyard:problem:{code}"), "{problem}");
    assert_eq!(problem["status"], status);
    assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    problem
}

pub fn manifest(stack_name: &str, depends_on: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({"stack_name": stack_name, "depends_on": depends_on})).unwrap()
}

pub fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = ::tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = ::tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&tar(entries)).unwrap();
    encoder.finish().unwrap()
}

pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = ::zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = ::zip::write::SimpleFileOptions::default();
    for (path, data) in entries {
        writer.start_file(*path, options).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// A small valid package for `stack_name`, made unique by `content`.
pub fn package(stack_name: &str, depends_on: &[&str], content: &str) -> Vec<u8> {
    tar_gz(&[("manifest.json", &manifest(stack_name, depends_on)), ("main.tf", content.as_bytes())])
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stackyard"))
}

impl TestApp {
    /// `POST /deployments` with `{selector, deployment_plan: {artifacts}}` and extra headers.
    pub async fn deploy_with(
        &self,
        selector: &str,
        artifacts: Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let body = json!({"selector": selector, "deployment_plan": {"artifacts": artifacts}});
        let mut request = self.client.post(self.at("/deployments")).json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    pub async fn deploy(&self, selector: &str, artifacts: Value) -> reqwest::Response {
        self.deploy_with(selector, artifacts, &[]).await
    }

    /// Uploads small packages: each `(stack name, dependencies)`.
    pub async fn publish(&self, packages: &[(&str, &[&str])]) {
        for (name, deps) in packages {
            self.upload_ok(package(name, deps, &format!("{name} {deps:?}"))).await;
        }
    }
}

/// A selector as one percent-encoded path segment.
pub fn segment(selector: &str) -> String {
    selector
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `[{"artifact_key": k}, ...]` for plan bodies.
pub fn keys(names: &[&str]) -> Value {
    Value::Array(names.iter().map(|k| json!({"artifact_key": k})).collect())
}
