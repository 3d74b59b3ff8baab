//! Health, metrics, the API description, and the error shape of the router.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get_json("/healthz").await, json!({"status": "ok"}));
    assert_eq!(
        app.get_json("/readyz").await,
        json!({"status": "ok", "checks": {"metadata": "ok", "blobs": "ok", "disk": "ok"}}),
        "each dependency is reported"
    );
}

#[tokio::test]
async fn readiness_reports_a_broken_blob_store() {
    let app = TestApp::spawn().await;
    let blobs = app.data_dir.path().join("blobs");
    std::fs::remove_dir_all(&blobs).unwrap();
    std::fs::write(&blobs, b"not a directory").unwrap();
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body = response.json::<Value>().await.unwrap();
    assert_eq!(body["checks"]["blobs"], "unavailable");
    assert_eq!(body["checks"]["metadata"], "ok");
}

#[tokio::test]
async fn metrics_count_requests_and_uploads() {
    let app = TestApp::spawn().await;
    app.upload_ok(package("net", &[], "x")).await;
    app.upload(b"nope".to_vec()).await;
    app.get("/artifacts/net").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for line in [
        r#"stackyard_uploads_total{outcome="created"} 1"#,
        r#"stackyard_uploads_total{outcome="rejected"} 1"#,
        r#"stackyard_http_requests_total{method="GET",route="/artifacts/{artifact_key}",status="200"} 1"#,
        r#"stackyard_http_requests_total{method="POST",route="/presigned_url",status="201"} 2"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(text.contains("stackyard_http_request_duration_seconds_bucket"));
    assert!(text.contains("stackyard_upload_bytes_total"));
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = TestApp::spawn().await;
    let doc = app.get_json("/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/presigned_url", "post"),
        ("/uploads/{upload_id}", "get"),
        ("/uploads/{upload_id}", "post"),
        ("/uploads/{upload_id}", "put"),
        ("/uploads/{upload_id}/complete", "post"),
        ("/artifacts", "get"),
        ("/artifacts/{artifact_key}", "get"),
        ("/artifacts/{artifact_key}/versions/{version}", "get"),
        ("/artifacts/{artifact_key}/versions/{version}", "delete"),
        ("/artifacts/{artifact_key}/versions/{version}/download", "get"),
        ("/artifacts/{artifact_key}/dependents", "get"),
        ("/deployments", "post"),
        ("/deployments", "get"),
        ("/deployments/{selector}", "get"),
        ("/deployments/{selector}", "delete"),
        ("/deployments/{selector}/artifact/{artifact_key}", "post"),
        ("/deployments/{selector}/artifact/{artifact_key}", "delete"),
        ("/deployments/{selector}/revisions", "get"),
        ("/deployments/{selector}/status/{status_id}", "get"),
        ("/deployments/{selector}/status/{status_id}/artifacts/{artifact_key}", "put"),
        ("/_trigger", "post"),
        ("/events", "get"),
        ("/tokens", "post"),
        ("/tokens", "get"),
        ("/tokens/{id}", "delete"),
        ("/audit", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is undocumented");
    }
    for schema in
        ["Problem", "Upload", "ArtifactVersion", "PresignRequest", "Deployment", "DeploymentStatus", "Event"]
    {
        assert!(doc["components"]["schemas"].get(schema).is_some(), "schema {schema}");
    }
}

#[tokio::test]
async fn the_docs_page_is_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("https://"), "no asset may come from a CDN");
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = TestApp::spawn().await;
    assert_problem(app.get("/nowhere").await, 404, "not_found").await;
    let response = app.client.delete(app.at("/healthz")).send().await.unwrap();
    assert_problem(response, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn requests_carry_a_request_id() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.at("/artifacts")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"].len(), 36);
    let mine = app.client.get(app.at("/healthz")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(mine.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn serves_https_with_a_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let app = TestApp::spawn_with(|s| s.tls = Some((cert.clone(), key.clone()))).await;
    assert!(app.url.starts_with("https://"), "{}", app.url);
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let health: Value = client.get(app.at("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let presigned: Value = client
        .post(app.at("/presigned_url"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(presigned["url"].as_str().unwrap().starts_with("https://"), "presigned URLs use https");
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::get(app.url.replace("https://", "http://") + "/healthz").await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}
