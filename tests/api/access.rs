//! Access control: every route x every kind of caller, scopes, token life.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::helpers::*;

/// Creates a token through the API and answers its secret.
async fn token(app: &TestApp, body: Value) -> (String, String) {
    let response = app.client.post(app.at("/tokens")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201, "{body}");
    let created: Value = response.json().await.unwrap();
    (created["id"].as_str().unwrap().to_string(), created["token"].as_str().unwrap().to_string())
}

/// The request to send to a route: a concrete path and a body that is valid
/// where that is easy. Destructive routes target things that do not exist.
fn request_for(path: &str, method: &str, status_id: &str, upload_id: &str) -> (String, Option<Value>) {
    let destructive = method == "delete";
    let concrete = path
        .replace("{selector}", if destructive && !path.contains("/artifact/") { "gone" } else { "prod" })
        .replace("{artifact_key}", if destructive { "app" } else { "network" })
        .replace("{version}", if destructive { "99" } else { "1" })
        .replace("{status_id}", status_id)
        .replace("{upload_id}", upload_id)
        .replace("{id}", "tok_0000000000000000");
    let body = match (method, path) {
        ("post", "/deployments") => {
            Some(json!({"selector": "prod", "deployment_plan": {"artifacts": keys(&["network", "app"])}}))
        }
        ("post", "/_trigger") => Some(json!({"selector": "prod", "artifact_key": "network"})),
        ("post", "/tokens") => Some(json!({"name": "matrix", "role": "reader"})),
        ("post", "/presigned_url") => Some(json!({})),
        ("put", p) if p.contains("/status/") => Some(json!({"state": "in_progress"})),
        _ => None,
    };
    (concrete, body)
}

#[tokio::test]
async fn every_route_answers_every_caller_as_its_declared_role_says() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[]), ("app", &["network"])]).await;
    let deployed: Value = app.deploy("prod", keys(&["network", "app"])).await.json().await.unwrap();
    let status_id = deployed["status_id"].as_str().unwrap().to_string();
    let upload_id = app.presign(json!({})).await["upload_id"].as_str().unwrap().to_string();

    let mut callers: BTreeMap<&str, Option<String>> = BTreeMap::new();
    callers.insert("anonymous", None);
    callers.insert("bad token", Some("sy_not-a-real-token".into()));
    for role in ["reader", "publisher", "deployer", "admin", "engine"] {
        callers.insert(role, Some(token(&app, json!({"name": role, "role": role})).await.1));
    }
    let (revoked_id, revoked) = token(&app, json!({"name": "revoked", "role": "admin"})).await;
    assert_eq!(
        app.client.delete(app.at(&format!("/tokens/{revoked_id}"))).send().await.unwrap().status(),
        204
    );
    callers.insert("revoked", Some(revoked));
    callers.insert(
        "expired",
        Some(token(&app, json!({"name": "expired", "role": "admin", "expires_in": 1})).await.1),
    );
    callers.insert(
        "out of scope",
        Some(token(&app, json!({"name": "scoped", "role": "admin", "selectors": ["other/*"]})).await.1),
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let doc = app.get_json("/openapi.json").await;
    let mut checked = 0;
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let required = operation["security"][0]["bearer"][0].as_str();
            if required.is_none() {
                assert!(
                    ["/healthz", "/readyz", "/metrics", "/uploads/{upload_id}"].contains(&path.as_str())
                        && (path != "/uploads/{upload_id}" || method != "get"),
                    "{method} {path} declares no role"
                );
            }
            let (concrete, body) = request_for(path, method, &status_id, &upload_id);
            let names_a_selector = path.contains("{selector}")
                || path == "/_trigger"
                || (path == "/deployments" && method == "post");
            for (caller, secret) in &callers {
                let expected: &[u16] = match (*caller, required) {
                    ("bad token" | "revoked" | "expired", _) => &[401],
                    (_, None) => &[],
                    ("anonymous", Some(_)) => &[401],
                    ("out of scope", Some(_)) if names_a_selector => &[404],
                    ("out of scope", Some(_)) => &[],
                    (role, Some(required)) => {
                        let grants = match required {
                            "reader" => true,
                            "publisher" => ["publisher", "deployer", "admin"].contains(&role),
                            "deployer" => ["deployer", "admin"].contains(&role),
                            "engine" => ["engine", "admin"].contains(&role),
                            "admin" => role == "admin",
                            other => panic!("unknown role {other}"),
                        };
                        if grants { &[] } else { &[403] }
                    }
                };
                let client = match secret {
                    Some(secret) => client_with(secret),
                    None => reqwest::Client::new(),
                };
                let mut request = client.request(method.to_uppercase().parse().unwrap(), app.at(&concrete));
                if let Some(body) = &body {
                    request = request.json(body);
                }
                let status = request.send().await.unwrap().status().as_u16();
                match expected {
                    // Reads of fixtures that exist succeed exactly; writes may meet a rule instead.
                    [] if method == "get" => assert_eq!(status, 200, "{caller}: {method} {concrete}"),
                    [] => assert!(
                        status != 401 && status != 403 && status < 500,
                        "{caller}: {method} {concrete} answered {status}, expected access"
                    ),
                    [code] => assert_eq!(status, *code, "{caller}: {method} {concrete}"),
                    _ => unreachable!(),
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 200, "checked {checked} route x caller pairs");
}

#[tokio::test]
async fn revocation_and_expiry_take_effect_at_once() {
    let app = TestApp::spawn().await;
    let (id, secret) = token(&app, json!({"name": "ci", "role": "publisher"})).await;
    let ci = client_with(&secret);
    assert_eq!(ci.get(app.at("/artifacts")).send().await.unwrap().status(), 200);
    app.client.delete(app.at(&format!("/tokens/{id}"))).send().await.unwrap();
    let refused = ci.get(app.at("/artifacts")).send().await.unwrap();
    assert_eq!(refused.headers()["www-authenticate"], "Bearer realm=\"stackyard\"");
    let problem = assert_problem(refused, 401, "invalid_token").await;
    assert!(problem["detail"].as_str().unwrap().contains("revoked"));

    let (_, short) = token(&app, json!({"name": "short", "role": "reader", "expires_in": 1})).await;
    assert_eq!(client_with(&short).get(app.at("/artifacts")).send().await.unwrap().status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let expired = assert_problem(
        client_with(&short).get(app.at("/artifacts")).send().await.unwrap(),
        401,
        "invalid_token",
    )
    .await;
    assert!(expired["detail"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn tokens_are_listed_without_secrets_and_stored_only_as_hashes() {
    let app = TestApp::spawn().await;
    let (id, secret) = token(
        &app,
        json!({"name": "ci", "role": "deployer", "organizations": ["acme"], "selectors": ["prod/*"]}),
    )
    .await;
    assert!(secret.len() >= 43, "at least 256 bits: {secret}");
    client_with(&secret).get(app.at("/artifacts")).send().await.unwrap();
    let list = app.get_json("/tokens").await;
    let listed = list["tokens"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).unwrap().clone();
    assert!(listed.get("token").is_none());
    assert_eq!(listed["organizations"], json!(["acme"]));
    assert!(listed["last_used_at"].is_string(), "use is recorded: {listed}");
    assert!(!list.to_string().contains(&secret));
    let db = std::fs::read(app.data_dir.path().join("stackyard.db")).unwrap();
    let wal = std::fs::read(app.data_dir.path().join("stackyard.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret is never stored");
    }

    for (body, code) in [
        (json!({"name": "x", "role": "root"}), "invalid_role"),
        (json!({"name": "", "role": "reader"}), "invalid_name"),
        (json!({"name": "x", "role": "reader", "organizations": ["a b"]}), "invalid_organization"),
        (json!({"name": "x", "role": "reader", "expires_in": 0}), "invalid_expires_in"),
    ] {
        assert_problem(app.client.post(app.at("/tokens")).json(&body).send().await.unwrap(), 400, code).await;
    }
    assert_problem(app.client.delete(app.at("/tokens/tok_nope")).send().await.unwrap(), 404, "not_found")
        .await;
}

#[tokio::test]
async fn scoped_tokens_see_only_their_deployments_and_events() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[])]).await;
    for (selector, org) in [("prod/eu", "acme"), ("prod/us", "other"), ("dev", "acme")] {
        let body = json!({"selector": selector, "organization": org, "deployment_plan": {"artifacts": keys(&["network"])}});
        assert_eq!(app.client.post(app.at("/deployments")).json(&body).send().await.unwrap().status(), 201);
    }
    let (_, acme) = token(&app, json!({"name": "acme", "role": "deployer", "organizations": ["acme"]})).await;
    let (_, prod) = token(&app, json!({"name": "prod", "role": "reader", "selectors": ["prod/*"]})).await;
    let selectors = |list: &Value, field: &str| -> Vec<String> {
        list[field].as_array().unwrap().iter().map(|d| d["selector"].as_str().unwrap().to_string()).collect()
    };
    let acme = client_with(&acme);
    let prod = client_with(&prod);
    let listed: Value = acme.get(app.at("/deployments")).send().await.unwrap().json().await.unwrap();
    assert_eq!(selectors(&listed, "deployments"), ["dev", "prod/eu"]);
    let listed: Value = prod.get(app.at("/deployments")).send().await.unwrap().json().await.unwrap();
    assert_eq!(selectors(&listed, "deployments"), ["prod/eu", "prod/us"]);
    let narrowed: Value =
        acme.get(app.at("/deployments?organization=other")).send().await.unwrap().json().await.unwrap();
    assert_eq!(narrowed["deployments"], json!([]));
    let events: Value = prod.get(app.at("/events")).send().await.unwrap().json().await.unwrap();
    assert_eq!(selectors(&events, "events"), ["prod/eu", "prod/us"]);
    let dependents: Value =
        acme.get(app.at("/artifacts/network/dependents")).send().await.unwrap().json().await.unwrap();
    assert_eq!(dependents["selectors"], json!(["dev", "prod/eu"]));

    // Out of scope is not found, for reads and writes, never forbidden.
    assert_problem(acme.get(app.at("/deployments/prod%2Fus")).send().await.unwrap(), 404, "not_found").await;
    assert_problem(prod.get(app.at("/deployments/dev")).send().await.unwrap(), 404, "not_found").await;
    let elsewhere = json!({"selector": "new", "organization": "other", "deployment_plan": {"artifacts": []}});
    assert_problem(
        acme.post(app.at("/deployments")).json(&elsewhere).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    let no_org = json!({"selector": "new", "deployment_plan": {"artifacts": []}});
    assert_problem(acme.post(app.at("/deployments")).json(&no_org).send().await.unwrap(), 404, "not_found")
        .await;
    let mine = json!({"selector": "new", "organization": "acme", "deployment_plan": {"artifacts": []}});
    assert_eq!(acme.post(app.at("/deployments")).json(&mine).send().await.unwrap().status(), 201);
    assert_eq!(app.get_json("/deployments/new").await["organization"], "acme");
}

#[tokio::test]
async fn insecure_mode_serves_everyone_as_admin() {
    let app = TestApp::spawn_with(|s| s.insecure_no_auth = true).await;
    let anonymous = reqwest::Client::new();
    assert_eq!(anonymous.get(app.at("/tokens")).send().await.unwrap().status(), 200);
    assert_eq!(anonymous.post(app.at("/presigned_url")).send().await.unwrap().status(), 201);
}

#[tokio::test]
async fn every_change_is_audited_with_who_and_from_where() {
    let app = TestApp::spawn_with(|s| s.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let (_, ci) = token(&app, json!({"name": "ci", "role": "deployer"})).await;
    let (_, engine) = token(&app, json!({"name": "eu-engine", "role": "engine"})).await;
    let ci = client_with(&ci);
    let presigned: Value = ci.post(app.at("/presigned_url")).send().await.unwrap().json().await.unwrap();
    assert_eq!(post_form(&ci, &presigned, package("network", &[], "n"), &[]).await.status(), 204);
    let body = json!({"selector": "prod", "deployment_plan": {"artifacts": keys(&["network"])}});
    let created: Value = ci
        .post(app.at("/deployments"))
        .header("x-forwarded-for", "203.0.113.7")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["status_id"].as_str().unwrap();
    let report = json!({"state": "succeeded"});
    client_with(&engine)
        .put(app.at(&format!("/deployments/prod/status/{id}/artifacts/network")))
        .json(&report)
        .send()
        .await
        .unwrap();
    ci.post(app.at("/_trigger"))
        .json(&json!({"selector": "prod", "artifact_key": "network"}))
        .send()
        .await
        .unwrap();
    ci.delete(app.at("/deployments/prod")).send().await.unwrap();

    let entries = app.get_json("/audit").await["entries"].as_array().unwrap().clone();
    let summary: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("token.created", "system", summary[0].2),
            ("token.created", "bootstrap admin", summary[1].2),
            ("token.created", "bootstrap admin", summary[2].2),
            ("version.registered", "ci", "network@1"),
            ("deployment.created", "ci", "prod"),
            ("status.reported", "eu-engine", "prod:network"),
            ("deployment.triggered", "ci", "prod"),
            ("deployment.deleted", "ci", "prod"),
        ]
    );
    assert_eq!(
        entries[4]["remote_addr"], "203.0.113.7",
        "X-Forwarded-For from a trusted proxy names the client"
    );
    assert_eq!(entries[3]["remote_addr"], "127.0.0.1");
    assert_eq!(app.get_json("/artifacts/network/versions/1").await["uploaded_by"], "ci");
    assert_eq!(app.get_json("/deployments/prod/revisions").await["revisions"][0]["created_by"], "ci");

    let by_actor = app.get_json("/audit?actor=eu-engine").await;
    assert_eq!(by_actor["entries"].as_array().unwrap().len(), 1);
    let by_selector = app.get_json("/audit?selector=prod").await;
    assert_eq!(by_selector["entries"].as_array().unwrap().len(), 4);
    let after = app.get_json(&format!("/audit?after={}", entries[5]["id"])).await;
    assert_eq!(after["entries"].as_array().unwrap().len(), 2);
    let since = app
        .get_json(&format!("/audit?after={}", entries[0]["at"].as_str().unwrap().replace('+', "%2B")))
        .await;
    assert_eq!(since["entries"].as_array().unwrap().len(), 8);
    assert_problem(app.get("/audit?after=yesterday").await, 400, "invalid_after").await;
}

#[tokio::test]
async fn forwarded_addresses_from_untrusted_peers_are_ignored() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[])]).await;
    let response = app
        .client
        .post(app.at("/deployments"))
        .header("x-forwarded-for", "203.0.113.7")
        .json(&json!({"selector": "prod", "deployment_plan": {"artifacts": keys(&["network"])}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let entries = app.get_json("/audit?selector=prod").await;
    assert_eq!(entries["entries"][0]["remote_addr"], "127.0.0.1");
}
