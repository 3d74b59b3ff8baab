//! A typed client for the Stackyard HTTP API, on the body types the server
//! itself uses. The CLI is built on it; so can any Rust program.

use std::path::Path;

use futures::{Stream, StreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use stackyard_api::*;

/// Characters kept as they are in a path segment: RFC 3986 unreserved.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// One path segment, percent-encoded (selectors may hold `/`, spaces, anything).
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a problem document.
    #[error("{}", .problem.detail)]
    Api { status: StatusCode, problem: Problem },
    #[error("cannot reach the server: {0}")]
    Network(#[source] reqwest::Error),
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A write's answer: the deployment, its HTTP status and ETag.
#[derive(Debug, Clone)]
pub struct Written {
    pub status: StatusCode,
    pub deployment: Deployment,
}

/// `If-Match` / `If-None-Match: *` for a write.
#[derive(Debug, Clone, Default)]
pub struct Precondition {
    pub if_match: Option<String>,
    pub if_none_match_any: bool,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("stackyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client");
        Self { base: base.trim_end_matches('/').to_string(), token, http }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(request: RequestBuilder) -> Result<reqwest::Response> {
        let response = request.send().await.map_err(ClientError::Network)?;
        if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.map_err(ClientError::Network)?;
        let problem = serde_json::from_str::<Problem>(&text).unwrap_or_else(|_| Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("error").into(),
            status: status.as_u16(),
            detail: if text.is_empty() { format!("the server answered {status}") } else { text },
            errors: Vec::new(),
        });
        Err(ClientError::Api { status, problem })
    }

    async fn json<T: DeserializeOwned>(request: RequestBuilder) -> Result<T> {
        let response = Self::send(request).await?;
        response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Self::json(self.request(Method::GET, path)).await
    }

    pub async fn health(&self) -> Result<Health> {
        self.get("/healthz").await
    }

    // Uploads.

    pub async fn presign(&self, request: &PresignRequest) -> Result<PresignResponse> {
        Self::json(self.request(Method::POST, "/presigned_url").json(request)).await
    }

    /// Sends a package to a presigned URL (ours or an object store's), then
    /// asks the registry to complete it. `body` streams the file; `len` is its size.
    pub async fn upload<S>(
        &self,
        presigned: &PresignResponse,
        file_name: &str,
        body: S,
        len: u64,
    ) -> Result<Upload>
    where
        S: Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
    {
        let body = reqwest::Body::wrap_stream(body);
        let request = match presigned.method {
            UploadMethod::Post => {
                let mut form = reqwest::multipart::Form::new();
                for (name, value) in presigned.fields.iter().flatten() {
                    form = form.text(name.clone(), value.clone());
                }
                let part =
                    reqwest::multipart::Part::stream_with_length(body, len).file_name(file_name.to_string());
                self.http.post(&presigned.url).multipart(form.part("file", part))
            }
            UploadMethod::Put => {
                let mut request = self.http.put(&presigned.url).header("content-length", len).body(body);
                for (name, value) in presigned.headers.iter().flatten() {
                    request = request.header(name, value);
                }
                request
            }
        };
        Self::send(request).await?;
        self.complete_upload(&presigned.upload_id).await
    }

    pub async fn complete_upload(&self, upload_id: &str) -> Result<Upload> {
        Self::json(self.request(Method::POST, &format!("/uploads/{upload_id}/complete"))).await
    }

    // Artifacts.

    pub async fn list_artifacts(
        &self,
        prefix: Option<&str>,
        labels: &[String],
        cursor: Option<&str>,
    ) -> Result<ArtifactList> {
        let mut query: Vec<(&str, &str)> = labels.iter().map(|l| ("label", l.as_str())).collect();
        query.extend(prefix.map(|p| ("prefix", p)));
        query.extend(cursor.map(|c| ("cursor", c)));
        Self::json(self.request(Method::GET, "/artifacts").query(&query)).await
    }

    pub async fn artifact(&self, key: &str) -> Result<Artifact> {
        self.get(&format!("/artifacts/{}", segment(key))).await
    }

    pub async fn version(&self, key: &str, version: &str) -> Result<ArtifactVersion> {
        self.get(&format!("/artifacts/{}/versions/{}", segment(key), segment(version))).await
    }

    pub async fn download(&self, key: &str, version: &str) -> Result<reqwest::Response> {
        let path = format!("/artifacts/{}/versions/{}/download", segment(key), segment(version));
        Self::send(self.request(Method::GET, &path)).await
    }

    pub async fn delete_version(&self, key: &str, version: &str) -> Result<()> {
        let path = format!("/artifacts/{}/versions/{}", segment(key), segment(version));
        Self::send(self.request(Method::DELETE, &path)).await.map(drop)
    }

    pub async fn dependents(&self, key: &str) -> Result<Dependents> {
        self.get(&format!("/artifacts/{}/dependents", segment(key))).await
    }

    // Deployments.

    /// The current deployment, or `None` when the selector has none.
    pub async fn deployment(&self, selector: &str) -> Result<Option<Deployment>> {
        match self.get(&format!("/deployments/{}", segment(selector))).await {
            Err(ClientError::Api { status: StatusCode::NOT_FOUND, .. }) => Ok(None),
            other => other.map(Some),
        }
    }

    async fn write<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        pre: &Precondition,
        dry_run: bool,
    ) -> Result<Written> {
        let mut request = self.request(method, path);
        if dry_run {
            request = request.query(&[("dry_run", "true")]);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(tag) = &pre.if_match {
            request = request.header("if-match", format!("\"{tag}\""));
        }
        if pre.if_none_match_any {
            request = request.header("if-none-match", "*");
        }
        let response = Self::send(request).await?;
        let status = response.status();
        let deployment = response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Written { status, deployment })
    }

    pub async fn write_deployment(
        &self,
        request: &DeploymentRequest,
        pre: &Precondition,
        dry_run: bool,
    ) -> Result<Written> {
        self.write(Method::POST, "/deployments", Some(request), pre, dry_run).await
    }

    pub async fn delete_deployment(&self, selector: &str, pre: &Precondition) -> Result<()> {
        let mut request = self.request(Method::DELETE, &format!("/deployments/{}", segment(selector)));
        if let Some(tag) = &pre.if_match {
            request = request.header("if-match", format!("\"{tag}\""));
        }
        Self::send(request).await.map(drop)
    }

    /// Every current deployment matching the filters, following pagination.
    pub async fn all_deployments(
        &self,
        selectors: &[String],
        keys: &[String],
        orgs: &[String],
    ) -> Result<Vec<Deployment>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query: Vec<(&str, String)> = vec![("limit", "500".into())];
            query.extend(selectors.iter().map(|s| ("selectors", s.clone())));
            query.extend(keys.iter().map(|k| ("artifact_keys", k.clone())));
            query.extend(orgs.iter().map(|o| ("organization", o.clone())));
            query.extend(cursor.take().map(|c| ("cursor", c)));
            let page: DeploymentList =
                Self::json(self.request(Method::GET, "/deployments").query(&query)).await?;
            all.extend(page.deployments);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    pub async fn revisions(&self, selector: &str) -> Result<Vec<RevisionSummary>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", "500".to_string())];
            query.extend(cursor.take().map(|c| ("cursor", c)));
            let path = format!("/deployments/{}/revisions", segment(selector));
            let page: RevisionList = Self::json(self.request(Method::GET, &path).query(&query)).await?;
            all.extend(page.revisions);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    pub async fn status(&self, selector: &str, status_id: &str) -> Result<DeploymentStatus> {
        self.get(&format!("/deployments/{}/status/{}", segment(selector), segment(status_id))).await
    }

    pub async fn report(
        &self,
        selector: &str,
        status_id: &str,
        key: &str,
        report: &StatusReport,
    ) -> Result<DeploymentStatus> {
        let path = format!(
            "/deployments/{}/status/{}/artifacts/{}",
            segment(selector),
            segment(status_id),
            segment(key)
        );
        Self::json(self.request(Method::PUT, &path).json(report)).await
    }

    // Tokens (admin).

    pub async fn create_token(&self, request: &TokenRequest) -> Result<TokenCreated> {
        Self::json(self.request(Method::POST, "/tokens").json(request)).await
    }

    pub async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", "500".to_string())];
            query.extend(cursor.take().map(|c| ("cursor", c)));
            let page: TokenList = Self::json(self.request(Method::GET, "/tokens").query(&query)).await?;
            all.extend(page.tokens);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        Self::send(self.request(Method::DELETE, &format!("/tokens/{}", segment(id)))).await.map(drop)
    }

    pub async fn trigger(&self, selector: &str, key: &str) -> Result<TriggerResponse> {
        let body = TriggerRequest { selector: selector.into(), artifact_key: key.into() };
        Self::json(self.request(Method::POST, "/_trigger").json(&body)).await
    }
}

/// A file as a stream of chunks, reporting each chunk's size to `progress`.
pub async fn file_stream(
    path: &Path,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> std::io::Result<impl Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static> {
    let file = tokio::fs::File::open(path).await?;
    Ok(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            progress(bytes.len() as u64);
        }
    }))
}
