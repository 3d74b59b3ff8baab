//! Running on shared engines: the NATS JetStream sink against the real NATS
//! server, start-up that fails fast on a bad backend, and several `serve`
//! processes sharing one PostgreSQL, one S3-compatible server and one NATS.
//! Each test skips, saying so, when its services are not there.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use serde_json::{Value, json};
use stackyard_server::config::NatsSettings;
use stackyard_server::events::Sink;
use stackyard_server::events::nats::NatsSink;
use stackyard_testkit::{TestBucket, TestDatabase, random_hex};

use crate::helpers::*;
use crate::process::ServerProcess;
use crate::rollout::Receiver;

fn nats_settings(url: &str) -> NatsSettings {
    let tag = random_hex(4);
    NatsSettings {
        url: url.into(),
        subject_prefix: format!("test{tag}.events"),
        stream: format!("TEST_{tag}"),
    }
}

/// Every message of a stream, oldest first: (subject, Nats-Msg-Id, body).
async fn stream_messages(url: &str, stream: &str, expected: usize) -> Vec<(String, String, Value)> {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let stream = js.get_stream(stream).await.unwrap();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = Vec::new();
    let mut batch = consumer
        .fetch()
        .max_messages(expected + 10)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    while let Some(message) = batch.next().await {
        let message = message.unwrap();
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        messages.push((message.subject.to_string(), id, serde_json::from_slice(&message.payload).unwrap()));
    }
    messages
}

async fn drop_stream(url: &str, stream: &str) {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    js.delete_stream(stream).await.ok();
}

#[tokio::test]
async fn events_reach_nats_jetstream_in_order_with_their_ids() {
    let Some(url) = stackyard_testkit::nats_url().await else { return };
    let nats = nats_settings(&url);
    let settings = nats.clone();
    let app = TestApp::spawn_with(move |s| s.nats = Some(settings)).await;
    assert_eq!(app.get_json("/readyz").await["checks"]["nats"], "ok");
    app.publish(&[("network", &[]), ("app", &["network"])]).await;
    app.deploy("prod", keys(&["network"])).await;
    app.deploy("prod", keys(&["network", "app"])).await;
    app.client
        .post(app.at("/_trigger"))
        .json(&json!({"selector": "prod", "artifact_key": "network"}))
        .send()
        .await
        .unwrap();
    let events = app.get_json("/events").await["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 3);

    let mut messages = Vec::new();
    for _ in 0..50 {
        messages = stream_messages(&url, &nats.stream, 3).await;
        if messages.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop_stream(&url, &nats.stream).await;
    assert_eq!(messages.len(), 3, "{messages:?}");
    for ((subject, id, body), event) in messages.iter().zip(&events) {
        assert_eq!(subject, &format!("{}.{}", nats.subject_prefix, event["type"].as_str().unwrap()));
        assert_eq!(id, &event["id"].to_string(), "Nats-Msg-Id is the event id");
        assert_eq!(body, event);
    }
}

#[tokio::test]
async fn jetstream_drops_a_redelivered_event() {
    let Some(url) = stackyard_testkit::nats_url().await else { return };
    let nats = nats_settings(&url);
    let sink = NatsSink::connect(&nats).await.unwrap();
    let event: stackyard_api::Event = serde_json::from_value(json!({
        "id": 7, "type": "deployment.triggered", "at": "2026-12-03T10:00:00Z", "selector": "prod", "data": {}
    }))
    .unwrap();
    let body = serde_json::to_vec(&event).unwrap();
    sink.deliver(&event, &body).await.unwrap();
    sink.deliver(&event, &body).await.unwrap();
    let messages = stream_messages(&url, &nats.stream, 2).await;
    drop_stream(&url, &nats.stream).await;
    assert_eq!(messages.len(), 1, "delivered twice, stored once");
}

/// Starts `serve` with `env` and expects it to exit at once, saying `expected`.
fn fails_fast(env: &[(&str, &str)], expected: &str) {
    let data_dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let output = std::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .env("STACKYARD_BOOTSTRAP_TOKEN", ADMIN_TOKEN)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{env:?} must not start");
    assert!(stderr.contains(expected), "{env:?}: expected '{expected}' in:\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "it fails fast, not after retrying forever");
}

#[test]
fn start_up_fails_fast_on_a_bad_backend() {
    fails_fast(&[("STACKYARD_DATABASE_URL", "mysql://db/x")], "neither sqlite://PATH nor postgres://");
    fails_fast(
        &[("STACKYARD_DATABASE_URL", "postgres://stackyard:secret@127.0.0.1:1/x")],
        "connecting to PostgreSQL at postgres://stackyard:***@127.0.0.1:1/x",
    );
    fails_fast(&[("STACKYARD_BLOB_STORE", "s3://Bad_Bucket")], "is not an S3 bucket name");
    fails_fast(
        &[("STACKYARD_BLOB_STORE", "s3://packages")],
        "needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    );
    fails_fast(
        &[("STACKYARD_NATS_URL", "nats://127.0.0.1:1")],
        "cannot connect to NATS at nats://127.0.0.1:1",
    );
}

#[tokio::test]
async fn start_up_fails_fast_on_a_missing_bucket() {
    let Some(bucket) = TestBucket::create().await else { return };
    let missing = format!("s3://{}-missing/x", bucket.bucket);
    fails_fast(
        &[
            ("STACKYARD_BLOB_STORE", &missing),
            ("STACKYARD_S3_ENDPOINT", &bucket.endpoint),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
        "refused a test write and delete: NoSuchBucket",
    );
}

/// A change on one replica wakes the dispatchers of another through
/// PostgreSQL's notifications: it does not wait for their next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_written_on_one_replica_wakes_the_others_at_once() {
    let Some(db) = TestDatabase::create().await else { return };
    let database = stackyard_server::config::DatabaseUrl::Postgres(db.url.clone());
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    receiver.serve_on(listener).await;
    let on_postgres = database.clone();
    let delivering = TestApp::spawn_with(move |s| {
        s.database = Some(on_postgres);
        // Polling alone would take two minutes.
        s.event_poll_interval_secs = 120;
        s.sink_lease_secs = 240;
        s.webhooks = vec![stackyard_server::events::WebhookSettings {
            name: "engine".into(),
            url: hook,
            secret: "webhook-secret-0123456789".into(),
        }];
    })
    .await;
    let writing = TestApp::spawn_with(move |s| s.database = Some(database)).await;
    delivering.get_json("/readyz").await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the dispatcher is idle, waiting
    writing.publish(&[("network", &[])]).await;
    assert_eq!(writing.deploy("prod", keys(&["network"])).await.status(), 201);
    let delivered = receiver.wait_for(1).await;
    assert_eq!(delivered[0]["selector"], "prod");
}

async fn json(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

#[test]
fn start_up_fails_fast_on_credentials_s3_refuses() {
    let Some(endpoint) = stackyard_testkit::s3_auth_endpoint() else { return };
    fails_fast(
        &[
            ("STACKYARD_BLOB_STORE", "s3://packages/x"),
            ("STACKYARD_S3_ENDPOINT", &endpoint),
            ("AWS_ACCESS_KEY_ID", "AKIANOTAKEY"),
            ("AWS_SECRET_ACCESS_KEY", "not-a-secret"),
        ],
        "refused a test write and delete: InvalidAccessKeyId: ",
    );
}

/// Three replicas on one PostgreSQL, one S3 bucket, one NATS stream and one
/// webhook receiver; clients write the same selectors through all of them
/// at once, and the replica delivering to the webhook is killed midway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_registry_and_lose_nothing() {
    let Some(db) = TestDatabase::create().await else { return };
    let Some(bucket) = TestBucket::create().await else { return };
    let Some(nats_url) = stackyard_testkit::nats_url().await else { return };
    let nats = nats_settings(&nats_url);
    const SELECTORS: usize = 3;
    const PACKAGES: usize = 30;

    // A slow engine: deliveries are still going on when its replica dies.
    let receiver = Receiver::slow(Duration::from_millis(40));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    receiver.serve_on(listener).await;
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("stackyard.toml");
    std::fs::write(
        &config,
        format!(
            "nats_subject_prefix = '{}'\nnats_stream = '{}'\nsink_lease_secs = 4\n\
             [[webhooks]]\nname = 'engine'\nurl = '{hook}'\nsecret = 'webhook-secret-0123456789'\n",
            nats.subject_prefix, nats.stream
        ),
    )
    .unwrap();
    let blob_store = format!("s3://{}/shared", bucket.bucket);
    let env = [
        ("STACKYARD_BOOTSTRAP_TOKEN", ADMIN_TOKEN),
        ("STACKYARD_DATABASE_URL", db.url.as_str()),
        ("STACKYARD_BLOB_STORE", blob_store.as_str()),
        ("STACKYARD_S3_ENDPOINT", bucket.endpoint.as_str()),
        ("STACKYARD_NATS_URL", nats_url.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let config_arg = config.to_str().unwrap();
    let mut replicas: Vec<ServerProcess> =
        dirs.iter().map(|d| ServerProcess::start_with(d.path(), &env, &["--config", config_arg])).collect();
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let client = client_with(ADMIN_TOKEN);

    // Presigned through one replica, completed through the next: usable at once through all.
    let mut names_by_selector: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..PACKAGES {
        let presigned = json(client.post(format!("{}/presigned_url", urls[i % 3])).json(&json!({}))).await;
        let name = format!("svc-{i}");
        let sent = post_form(&reqwest::Client::new(), &presigned, package(&name, &[], &name), &[]).await;
        assert!(sent.status().is_success());
        let id = presigned["upload_id"].as_str().unwrap();
        let completed = json(client.post(format!("{}/uploads/{id}/complete", urls[(i + 1) % 3]))).await;
        assert_eq!(completed["state"], "registered");
        names_by_selector.entry(format!("prod/{}", i % SELECTORS)).or_default().push(name);
    }
    let download =
        client.get(format!("{}/artifacts/svc-0/versions/1/download", urls[2])).send().await.unwrap();
    assert_eq!(download.bytes().await.unwrap().as_ref(), package("svc-0", &[], "svc-0").as_slice());

    // One client per artifact adds it to its selector, all at once, spread
    // over the replicas; then every other one is removed the same way.
    let write_all = |method: reqwest::Method, keep: fn(usize) -> bool, shift: usize| {
        let tasks: Vec<_> = names_by_selector
            .iter()
            .enumerate()
            .flat_map(|(n, (selector, names))| {
                names
                    .iter()
                    .enumerate()
                    .filter(move |(k, _)| keep(*k))
                    .map(move |(k, name)| (n + k, selector, name))
            })
            .map(|(spread, selector, name)| {
                let url = format!(
                    "{}/deployments/{}/artifact/{name}",
                    urls[(spread + shift) % 3],
                    segment(selector)
                );
                let request = client.request(method.clone(), url);
                tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
            })
            .collect();
        async move {
            for task in tasks {
                assert!([200, 201].contains(&task.await.unwrap()));
            }
        }
    };
    write_all(reqwest::Method::POST, |_| true, 0).await;
    write_all(reqwest::Method::DELETE, |k| k % 2 == 1, 1).await;
    let per_selector = PACKAGES / SELECTORS;
    let total_revisions = SELECTORS * (per_selector + per_selector / 2);

    // Kill the replica delivering to the webhook while it is at it.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let holder = loop {
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT lease_owner FROM sink_positions WHERE sink = 'engine' AND last_event_id > 3",
        )
        .fetch_optional(&pool)
        .await
        .unwrap()
        .flatten();
        if let Some(owner) = owner {
            break owner;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim = replicas.iter().position(|r| holder.starts_with(&format!("pid{}-", r.pid()))).unwrap();
    let before = receiver.events().len();
    replicas[victim].kill();
    assert!(
        before < total_revisions,
        "the kill came before the last delivery ({before} of {total_revisions})"
    );
    let survivor = &urls[(victim + 1) % 3];

    // No update lost, revisions contiguous, read back through a survivor.
    for (selector, names) in &names_by_selector {
        let deployment = json(client.get(format!("{survivor}/deployments/{}", segment(selector)))).await;
        let kept: BTreeSet<&str> = deployment["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["artifact_key"].as_str().unwrap())
            .collect();
        let expected: BTreeSet<&str> =
            names.iter().enumerate().filter(|(k, _)| k % 2 == 0).map(|(_, n)| n.as_str()).collect();
        assert_eq!(kept, expected, "{selector}: every add and every remove took effect");
        let revisions =
            json(client.get(format!("{survivor}/deployments/{}/revisions?limit=100", segment(selector))))
                .await;
        let numbers: Vec<i64> = revisions["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["revision"].as_i64().unwrap())
            .collect();
        let writes = (per_selector + per_selector / 2) as i64;
        assert_eq!(numbers, (1..=writes).rev().collect::<Vec<_>>(), "{selector}: contiguous");
    }
    let events =
        json(client.get(format!("{survivor}/events?limit=500"))).await["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), total_revisions, "one event per revision");

    // The survivors took the webhook over: every event arrived, in order per
    // selector, at most the one in flight at the kill twice.
    let mut delivered = Vec::new();
    for _ in 0..300 {
        delivered = receiver.events();
        if delivered.iter().map(|e| e["id"].as_i64()).collect::<BTreeSet<_>>().len() == total_revisions {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unique: BTreeSet<i64> = delivered.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(unique.len(), total_revisions, "every event reached the webhook");
    assert!(delivered.len() <= total_revisions + 1, "at least once, not many times: {}", delivered.len());
    for selector in names_by_selector.keys() {
        let mut seen = BTreeSet::new();
        let first_deliveries: Vec<i64> = delivered
            .iter()
            .filter(|e| e["selector"] == selector.as_str() && seen.insert(e["id"].as_i64().unwrap()))
            .map(|e| e["data"]["revision"].as_i64().unwrap())
            .collect();
        let mut sorted = first_deliveries.clone();
        sorted.sort();
        assert_eq!(first_deliveries, sorted, "{selector}: delivered in revision order");
    }

    // NATS: JetStream de-duplicated any redelivery, so each event is there once, in order.
    let expected: Vec<String> = events.iter().map(|e| e["id"].to_string()).collect();
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids = stream_messages(&nats_url, &nats.stream, total_revisions)
            .await
            .into_iter()
            .map(|(_, id, _)| id)
            .collect();
        if ids.len() >= total_revisions {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop_stream(&nats_url, &nats.stream).await;
    assert_eq!(ids, expected, "NATS got every event once, in order");
    for (i, replica) in replicas.iter().enumerate().filter(|(i, _)| *i != victim) {
        assert!(!replica.log().contains("\"level\":\"ERROR\""), "replica {i} logged no error");
    }
}
