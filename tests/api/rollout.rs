//! Rollout status, engine reports, triggers, the event stream and webhooks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::helpers::*;

async fn report(app: &TestApp, selector: &str, status_id: &str, key: &str, state: &str) -> reqwest::Response {
    let path = format!("/deployments/{}/status/{status_id}/artifacts/{key}", segment(selector));
    app.client
        .put(app.at(&path))
        .json(&json!({"state": state, "message": format!("{key} {state}")}))
        .send()
        .await
        .unwrap()
}

async fn stack(app: &TestApp, selector: &str) -> String {
    app.publish(&[("network", &[]), ("database", &["network"]), ("app", &["network", "database"])]).await;
    let created = app.deploy(selector, keys(&["network", "database", "app"])).await;
    assert_eq!(created.status(), 201);
    created.json::<Value>().await.unwrap()["status_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn engines_report_progress_in_dependency_order() {
    let app = TestApp::spawn().await;
    let id = stack(&app, "prod/eu").await;
    let path = format!("/deployments/prod%2Feu/status/{id}");
    let status = app.get_json(&path).await;
    assert_eq!(status["state"], "pending");
    assert_eq!(status["current"], true);
    assert_eq!(status["ready"], json!(["network"]));

    let early = report(&app, "prod/eu", &id, "database", "in_progress").await;
    let problem = assert_problem(early, 409, "dependencies_not_ready").await;
    assert_eq!(problem["errors"], json!([{"code": "dependency_not_succeeded", "dependency": "network"}]));
    let early = report(&app, "prod/eu", &id, "app", "succeeded").await;
    assert_problem(early, 409, "dependencies_not_ready").await;

    let after = report(&app, "prod/eu", &id, "network", "in_progress").await.json::<Value>().await.unwrap();
    assert_eq!(after["state"], "in_progress");
    assert_eq!(after["ready"], json!([]));
    let after = report(&app, "prod/eu", &id, "network", "succeeded").await.json::<Value>().await.unwrap();
    assert_eq!(after["ready"], json!(["database"]));
    let network = &after["artifacts"][0];
    assert_eq!(
        (network["state"].as_str(), network["message"].as_str()),
        (Some("succeeded"), Some("network succeeded"))
    );

    let backwards = report(&app, "prod/eu", &id, "network", "in_progress").await;
    assert_problem(backwards, 409, "state_regression").await;
    let flip = report(&app, "prod/eu", &id, "network", "failed").await;
    assert_problem(flip, 409, "state_regression").await;

    assert_eq!(report(&app, "prod/eu", &id, "database", "succeeded").await.status(), 200);
    let done = report(&app, "prod/eu", &id, "app", "succeeded").await.json::<Value>().await.unwrap();
    assert_eq!(done["state"], "succeeded");

    assert_problem(report(&app, "prod/eu", &id, "dns", "succeeded").await, 404, "not_found").await;
    assert_problem(report(&app, "prod/eu", "0000", "app", "succeeded").await, 404, "not_found").await;
    let bad_state = app
        .client
        .put(app.at(&format!("{path}/artifacts/app")))
        .json(&json!({"state": "done"}))
        .send()
        .await
        .unwrap();
    assert_problem(bad_state, 400, "invalid_body").await;
}

#[tokio::test]
async fn a_failure_fails_the_rollout() {
    let app = TestApp::spawn().await;
    let id = stack(&app, "prod").await;
    report(&app, "prod", &id, "network", "succeeded").await;
    let failed = report(&app, "prod", &id, "database", "failed").await.json::<Value>().await.unwrap();
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["ready"], json!([]));
}

#[tokio::test]
async fn old_status_ids_keep_answering_as_superseded() {
    let app = TestApp::spawn().await;
    let first = stack(&app, "prod").await;
    report(&app, "prod", &first, "network", "succeeded").await;
    let second = app.deploy("prod", keys(&["network", "database"])).await.json::<Value>().await.unwrap();
    let second = second["status_id"].as_str().unwrap().to_string();

    let old = app.get_json(&format!("/deployments/prod/status/{first}")).await;
    assert_eq!(
        (old["state"].as_str(), old["current"].as_bool(), old["revision"].as_i64()),
        (Some("superseded"), Some(false), Some(1))
    );
    assert_eq!(old["artifacts"][0]["state"], "succeeded", "its history is kept");
    let current = app.get_json(&format!("/deployments/prod/status/{second}")).await;
    assert_eq!((current["state"].as_str(), current["current"].as_bool()), (Some("pending"), Some(true)));

    let late = report(&app, "prod", &first, "database", "failed").await;
    assert_problem(late, 409, "revision_superseded").await;
    assert_problem(app.get(&format!("/deployments/other/status/{first}")).await, 404, "not_found").await;
}

#[tokio::test]
async fn a_trigger_sends_one_artifact_back_to_pending_and_emits_an_event() {
    let app = TestApp::spawn().await;
    let id = stack(&app, "prod").await;
    report(&app, "prod", &id, "network", "succeeded").await;

    let triggered = app
        .client
        .post(app.at("/_trigger"))
        .json(&json!({"selector": "prod", "artifact_key": "network"}))
        .send()
        .await
        .unwrap();
    assert_eq!(triggered.status(), 202);
    let triggered: Value = triggered.json().await.unwrap();
    assert_eq!(triggered["status_id"], id.as_str());
    let status = app.get_json(&format!("/deployments/prod/status/{id}")).await;
    assert_eq!(status["artifacts"][0]["state"], "pending");
    assert_eq!(status["ready"], json!(["network"]));
    assert_eq!(
        report(&app, "prod", &id, "network", "in_progress").await.status(),
        200,
        "the engine may start over"
    );

    let events = app.get_json("/events").await["events"].as_array().unwrap().clone();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "deployment.triggered");
    assert_eq!(last["data"]["trigger_id"], triggered["trigger_id"]);
    assert_eq!(last["data"]["artifact_key"], "network");

    for (body, status, code) in [
        (json!({"selector": "nope", "artifact_key": "network"}), 404, "not_found"),
        (json!({"selector": "prod", "artifact_key": "dns"}), 404, "not_found"),
        (json!({"selector": "prod"}), 400, "invalid_body"),
        (json!({"selector": "a,b", "artifact_key": "network"}), 400, "invalid_selector"),
    ] {
        let response = app.client.post(app.at("/_trigger")).json(&body).send().await.unwrap();
        assert_problem(response, status, code).await;
    }
}

#[tokio::test]
async fn the_event_stream_records_every_change_in_order() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[]), ("dns", &[])]).await;
    app.deploy("a", keys(&["network"])).await;
    app.deploy("b", keys(&["dns"])).await;
    app.deploy("a", keys(&["network", "dns"])).await;
    app.deploy("a", keys(&["network", "dns"])).await; // unchanged: no event
    app.client.delete(app.at("/deployments/b")).send().await.unwrap();

    let events = app.get_json("/events").await["events"].as_array().unwrap().clone();
    let summary: Vec<_> =
        events.iter().map(|e| (e["type"].as_str().unwrap(), e["selector"].as_str().unwrap())).collect();
    assert_eq!(
        summary,
        [
            ("deployment.revision_created", "a"),
            ("deployment.revision_created", "b"),
            ("deployment.revision_created", "a"),
            ("deployment.deleted", "b"),
        ]
    );
    assert_eq!(events[2]["data"]["revision"], 2);
    assert_eq!(events[2]["data"]["diff"]["added"], json!([{"artifact_key": "dns", "version": 1}]));
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    let after = app.get_json(&format!("/events?after={}", ids[1])).await;
    assert_eq!(after["events"].as_array().unwrap().len(), 2);
    let page = app.get_json("/events?limit=3").await;
    let rest =
        app.get_json(&format!("/events?limit=3&cursor={}", page["next_cursor"].as_str().unwrap())).await;
    assert_eq!(rest["events"][0]["id"], ids[3]);
    assert_problem(app.get("/events?after=x").await, 400, "invalid_after").await;
}

/// A real HTTP receiver that records what it is sent.
#[derive(Clone, Default)]
pub struct Receiver {
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// How long each delivery takes to be answered.
    pub delay: Duration,
}

impl Receiver {
    /// One that takes `delay` to answer each delivery.
    pub fn slow(delay: Duration) -> Self {
        Self { delay, ..Default::default() }
    }

    pub async fn serve_on(&self, listener: tokio::net::TcpListener) {
        let (seen, delay) = (self.seen.clone(), self.delay);
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let seen = seen.clone();
                async move {
                    tokio::time::sleep(delay).await;
                    seen.lock().unwrap().push((headers, body));
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
    }

    pub fn events(&self) -> Vec<Value> {
        self.seen.lock().unwrap().iter().map(|(_, body)| serde_json::from_slice(body).unwrap()).collect()
    }

    pub async fn wait_for(&self, count: usize) -> Vec<Value> {
        self.wait_within(count, Duration::from_secs(10)).await
    }

    pub async fn wait_within(&self, count: usize, limit: Duration) -> Vec<Value> {
        for _ in 0..limit.as_millis() / 50 {
            if self.seen.lock().unwrap().len() >= count {
                return self.events();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {count} deliveries, got {}", self.seen.lock().unwrap().len());
    }
}

const SECRET: &str = "webhook-secret-0123456789";

async fn with_webhook(url: String) -> TestApp {
    TestApp::spawn_with(|s| {
        s.webhooks = vec![stackyard_server::events::WebhookSettings {
            name: "engine".into(),
            url,
            secret: SECRET.into(),
        }]
    })
    .await
}

#[tokio::test]
async fn webhooks_receive_every_change_in_order_with_a_valid_signature() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    receiver.serve_on(listener).await;
    let app = with_webhook(url).await;
    app.publish(&[("network", &[]), ("dns", &[])]).await;
    for plan in [keys(&["network"]), keys(&["network", "dns"]), keys(&["dns"])] {
        app.deploy("prod", plan.clone()).await;
        app.deploy("dev", plan).await;
    }
    app.client
        .post(app.at("/_trigger"))
        .json(&json!({"selector": "prod", "artifact_key": "dns"}))
        .send()
        .await
        .unwrap();

    let delivered = receiver.wait_for(7).await;
    assert_eq!(
        delivered,
        app.get_json("/events").await["events"].as_array().unwrap().clone(),
        "the same stream, in order"
    );
    for selector in ["prod", "dev"] {
        let revisions: Vec<i64> = delivered
            .iter()
            .filter(|e| e["selector"] == selector && e["type"] == "deployment.revision_created")
            .map(|e| e["data"]["revision"].as_i64().unwrap())
            .collect();
        assert_eq!(revisions, [1, 2, 3], "in order for {selector}");
    }
    for (headers, body) in receiver.seen.lock().unwrap().iter() {
        let expected = stackyard_server::events::signature(SECRET, body);
        assert_eq!(headers["x-stackyard-signature"].to_str().unwrap(), expected);
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(headers["x-stackyard-event-id"].to_str().unwrap(), event["id"].to_string());
        assert_eq!(headers["x-stackyard-event"].to_str().unwrap(), event["type"].as_str().unwrap());
    }
}

#[tokio::test]
async fn events_wait_for_a_receiver_that_is_down_without_slowing_the_api() {
    // Reserve a port, then leave it closed: the receiver is down.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let url = format!("http://{address}/hook");
    let app = with_webhook(url).await;
    app.publish(&[("network", &[]), ("dns", &[])]).await;
    let started = std::time::Instant::now();
    for (i, selector) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let plan = if i % 2 == 0 { keys(&["network"]) } else { keys(&["dns"]) };
        assert_eq!(app.deploy(selector, plan).await.status(), 201);
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
    eprintln!("5 plan writes with the sink down took {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let receiver = Receiver::default();
    receiver.serve_on(tokio::net::TcpListener::bind(address).await.unwrap()).await;
    let delivered = receiver.wait_for(5).await;
    let selectors: Vec<_> = delivered.iter().map(|e| e["selector"].as_str().unwrap().to_string()).collect();
    assert_eq!(selectors, ["a", "b", "c", "d", "e"]);
}

#[tokio::test]
async fn a_failing_sink_does_not_hold_up_another() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let good = format!("http://{}/hook", listener.local_addr().unwrap());
    receiver.serve_on(listener).await;
    let app = TestApp::spawn_with(|s| {
        s.webhooks = vec![
            stackyard_server::events::WebhookSettings {
                name: "down".into(),
                url: "http://127.0.0.1:1/hook".into(),
                secret: SECRET.into(),
            },
            stackyard_server::events::WebhookSettings { name: "up".into(), url: good, secret: SECRET.into() },
        ]
    })
    .await;
    app.publish(&[("network", &[])]).await;
    for selector in ["a", "b", "c"] {
        app.deploy(selector, keys(&["network"])).await;
    }
    let delivered = receiver.wait_for(3).await;
    assert_eq!(delivered.len(), 3);
}
