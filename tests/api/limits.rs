//! Each limit answers its own status code, and other requests carry on.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

#[tokio::test]
async fn plans_above_the_size_limit_are_refused() {
    let app = TestApp::spawn_with(|s| s.limits.max_plan_artifacts = 2).await;
    app.publish(&[("a", &[]), ("b", &[]), ("c", &[])]).await;
    assert_problem(app.deploy("x", keys(&["a", "b", "c"])).await, 413, "plan_too_large").await;
    assert_eq!(app.deploy("x", keys(&["a", "b"])).await.status(), 201);
    let pin = app.client.post(app.at("/deployments/x/artifact/c")).send().await.unwrap();
    assert_problem(pin, 413, "plan_too_large").await;
    let repin = app
        .client
        .post(app.at("/deployments/x/artifact/b"))
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(repin.status(), 200, "re-pinning an artifact already there does not grow the plan");
}

#[tokio::test]
async fn deeply_nested_json_is_refused() {
    let app = TestApp::spawn().await;
    let mut labels = json!("x");
    for _ in 0..100 {
        labels = json!([labels]);
    }
    let response = app
        .client
        .post(app.at("/presigned_url"))
        .json(&json!({"labels": {"a": labels}}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "json_too_deep").await;
    assert_eq!(
        app.client.post(app.at("/presigned_url")).json(&json!({})).send().await.unwrap().status(),
        201
    );
}

#[tokio::test]
async fn queries_with_too_many_values_are_refused() {
    let app = TestApp::spawn_with(|s| s.limits.max_query_values = 5).await;
    assert_problem(app.get("/deployments?selectors=a,b,c,d,e,f").await, 400, "too_many_query_values").await;
    assert_problem(
        app.get("/deployments?selectors=a&selectors=b,c&selectors=d,e,f").await,
        400,
        "too_many_query_values",
    )
    .await;
    assert_eq!(app.get("/deployments?selectors=a,b,c").await.status(), 200);
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let app = TestApp::spawn().await;
    let response =
        app.client.get(app.at("/healthz")).header("x-padding", "p".repeat(100 * 1024)).send().await.unwrap();
    assert_eq!(response.status(), 431);
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn clients_that_send_headers_too_slowly_are_cut_off() {
    let app = TestApp::spawn_with(|s| s.limits.header_timeout_secs = 1).await;
    let address = app.url.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Meanwhile others are served.
    assert_eq!(app.get("/healthz").await.status(), 200);
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "the server closes the connection after the header deadline");
    assert!(!String::from_utf8_lossy(&buffer).contains("200 OK"), "and never serves the request");
}

#[tokio::test]
async fn uploads_that_stall_are_abandoned() {
    let app = TestApp::spawn_with(|s| s.limits.upload_idle_timeout_secs = 1).await;
    let presigned = app.presign(json!({"method": "PUT"})).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let upload =
        app.client.put(presigned["url"].as_str().unwrap()).body(reqwest::Body::wrap_stream(body)).send();
    let upload = tokio::spawn(upload);
    tx.send(Ok(b"the first bytes".to_vec())).await.unwrap();
    let response = upload.await.unwrap().unwrap();
    drop(tx);
    assert_problem(response, 408, "upload_timeout").await;
    let state = app.get_json(&format!("/uploads/{}", presigned["upload_id"].as_str().unwrap())).await;
    assert_eq!(state["state"], "rejected");
    app.assert_nothing_stored().await;
}

#[tokio::test]
async fn each_token_has_its_own_request_rate() {
    let app = TestApp::spawn_with(|s| {
        s.limits.requests_per_second = 1;
        s.limits.request_burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.get("/artifacts").await);
    }
    let limited = statuses.pop().unwrap();
    assert!(limited.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_problem(limited, 429, "rate_limited").await;
    // Another caller has its own budget.
    let anonymous: Value = reqwest::get(app.at("/healthz")).await.unwrap().json().await.unwrap();
    assert_eq!(anonymous["status"], "ok");
}
