//! Plans: creation, revisions, the dependency rules, preconditions, queries.

use serde_json::{Value, json};

use crate::helpers::*;

async fn json_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_plan_is_created_revised_and_left_alone_when_unchanged() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[]), ("database", &["network"]), ("app", &["network", "database"])]).await;

    let created = app.deploy("prod", keys(&["app", "database", "network"])).await;
    assert_eq!(created.status(), 201);
    let etag = created.headers()["etag"].to_str().unwrap().to_string();
    let location = created.headers()["location"].to_str().unwrap().to_string();
    let deployment: Value = created.json().await.unwrap();
    assert_eq!(etag, format!("\"{}\"", deployment["status_id"].as_str().unwrap()));
    assert_eq!(location, format!("/deployments/prod/status/{}", deployment["status_id"].as_str().unwrap()));
    assert_eq!(deployment["revision"], 1);
    let summary: Vec<_> = deployment["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (a["artifact_key"].as_str().unwrap(), a["wave"].as_u64().unwrap(), a["role"].as_str().unwrap())
        })
        .collect();
    assert_eq!(summary, [("network", 0, "root"), ("database", 1, "stem"), ("app", 2, "leaf")]);
    assert_eq!(deployment["artifacts"][0]["dependents"], json!(["app", "database"]));
    assert_eq!(deployment["diff"]["added"].as_array().unwrap().len(), 3);

    // GET answers the same revision, with a working ETag.
    let got = app.get("/deployments/prod").await;
    assert_eq!(got.headers()["etag"].to_str().unwrap(), etag);
    let cached =
        app.client.get(app.at("/deployments/prod")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(cached.status(), 304);

    // The same plan again: 200, no new revision.
    let same = json_of(app.deploy("prod", keys(&["network", "database", "app"])).await, 200).await;
    assert_eq!(same["revision"], 1);
    assert_eq!(app.get_json("/deployments/prod/revisions").await["revisions"].as_array().unwrap().len(), 1);

    // A new version pinned explicitly is a new revision with its diff.
    app.upload_ok(package("network", &[], "v2")).await;
    let plan = json!([{"artifact_key": "network", "version": 2}, {"artifact_key": "database"}, {"artifact_key": "app"}]);
    let revised = json_of(app.deploy("prod", plan).await, 200).await;
    assert_eq!(revised["revision"], 2);
    assert_eq!(
        revised["diff"]["changed"],
        json!([{"artifact_key": "network", "old_version": 1, "new_version": 2}])
    );
    assert_ne!(revised["status_id"], deployment["status_id"]);
    let revisions = app.get_json("/deployments/prod/revisions").await;
    assert_eq!(revisions["revisions"][0]["revision"], 2, "newest first");
    assert_eq!(revisions["revisions"][0]["diff"], revised["diff"]);
}

#[tokio::test]
async fn versions_are_chosen_by_number_digest_or_latest_and_pinned() {
    let app = TestApp::spawn().await;
    let v1 = app.upload_ok(package("db", &[], "1")).await;
    app.upload_ok(package("db", &[], "2")).await;
    let by_digest = json!([{"artifact_key": "db", "version": v1["digest"]}]);
    assert_eq!(json_of(app.deploy("a", by_digest).await, 201).await["artifacts"][0]["version"], 1);
    assert_eq!(
        json_of(app.deploy("b", json!([{"artifact_key": "db", "version": "1"}])).await, 201).await["artifacts"]
            [0]["version"],
        1
    );
    assert_eq!(json_of(app.deploy("c", keys(&["db"])).await, 201).await["artifacts"][0]["version"], 2);
    // Latest was pinned: a newer upload does not change the deployment.
    app.upload_ok(package("db", &[], "3")).await;
    assert_eq!(app.get_json("/deployments/c").await["artifacts"][0]["version"], 2);
}

#[tokio::test]
async fn an_artifact_listed_twice_is_a_duplicate_not_unknown() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[]), ("cluster", &["network"])]).await;
    let plan = keys(&["network", "cluster", "network"]);
    let problem = assert_problem(app.deploy("x", plan).await, 422, "invalid_plan").await;
    assert_eq!(problem["errors"], json!([{"code": "duplicate_artifact", "artifact_key": "network"}]));
    assert_problem(app.get("/deployments/x").await, 404, "not_found").await;
}

#[tokio::test]
async fn every_unknown_artifact_and_version_is_listed() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[])]).await;
    let plan = json!([
        {"artifact_key": "network", "version": 7},
        {"artifact_key": "ghost"},
        {"artifact_key": "phantom", "version": 1},
        {"artifact_key": "network", "version": format!("sha256:{}", "0".repeat(64))},
    ]);
    let problem = assert_problem(app.deploy("x", plan).await, 422, "invalid_plan").await;
    assert_eq!(
        problem["errors"],
        json!([
            {"code": "unknown_version", "artifact_key": "network", "version": "7"},
            {"code": "unknown_artifact", "artifact_key": "ghost"},
            {"code": "unknown_artifact", "artifact_key": "phantom"},
            {"code": "unknown_version", "artifact_key": "network", "version": format!("sha256:{}", "0".repeat(64))},
        ])
    );
    assert_problem(app.get("/deployments/x").await, 404, "not_found").await;
}

#[tokio::test]
async fn every_missing_dependency_is_listed() {
    let app = TestApp::spawn().await;
    app.publish(&[
        ("network", &[]),
        ("database", &["network", "iam"]),
        ("app", &["network", "database", "cache"]),
    ])
    .await;
    let problem =
        assert_problem(app.deploy("x", keys(&["database", "app"])).await, 422, "invalid_plan").await;
    assert_eq!(
        problem["errors"],
        json!([
            {"code": "missing_dependency", "artifact_key": "database", "dependency": "network"},
            {"code": "missing_dependency", "artifact_key": "database", "dependency": "iam"},
            {"code": "missing_dependency", "artifact_key": "app", "dependency": "network"},
            {"code": "missing_dependency", "artifact_key": "app", "dependency": "cache"},
        ])
    );
}

#[tokio::test]
async fn cycles_of_every_length_are_named_with_their_path() {
    let app = TestApp::spawn().await;
    app.publish(&[
        ("selfish", &["selfish"]),
        ("ping", &["pong"]),
        ("pong", &["ping"]),
        ("a", &["b"]),
        ("b", &["c"]),
        ("c", &["d"]),
        ("d", &["a"]),
    ])
    .await;
    for (plan, cycle) in [
        (keys(&["selfish"]), json!(["selfish", "selfish"])),
        (keys(&["ping", "pong"]), json!(["ping", "pong", "ping"])),
        (keys(&["a", "b", "c", "d"]), json!(["a", "b", "c", "d", "a"])),
    ] {
        let problem = assert_problem(app.deploy("x", plan).await, 422, "invalid_plan").await;
        assert_eq!(problem["errors"], json!([{"code": "dependency_cycle", "cycle": cycle}]));
    }
    let both =
        assert_problem(app.deploy("x", keys(&["ping", "pong", "selfish"])).await, 422, "invalid_plan").await;
    assert_eq!(both["errors"].as_array().unwrap().len(), 2, "each cycle is named");
}

#[tokio::test]
async fn single_artifacts_are_added_and_removed_with_the_same_checks() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[]), ("database", &["network"]), ("app", &["database"])]).await;

    // Adding to a deployment that does not exist yet creates it.
    let created = app.client.post(app.at("/deployments/prod/artifact/network")).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let missing = app.client.post(app.at("/deployments/prod/artifact/app")).send().await.unwrap();
    let problem = assert_problem(missing, 422, "invalid_plan").await;
    assert_eq!(problem["errors"][0]["dependency"], "database");
    let added = app
        .client
        .post(app.at("/deployments/prod/artifact/database"))
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(added, 200).await["revision"], 2);
    app.client.post(app.at("/deployments/prod/artifact/app")).send().await.unwrap();

    let blocked = app.client.delete(app.at("/deployments/prod/artifact/network")).send().await.unwrap();
    let problem = assert_problem(blocked, 409, "has_dependents").await;
    assert_eq!(
        problem["errors"],
        json!([{"code": "has_dependents", "artifact_key": "network", "dependents": ["database"]}])
    );

    let removed = app.client.delete(app.at("/deployments/prod/artifact/app")).send().await.unwrap();
    let removed = json_of(removed, 200).await;
    assert_eq!(removed["revision"], 4);
    assert_eq!(removed["diff"]["removed"], json!([{"artifact_key": "app", "version": 1}]));
    let absent = app.client.delete(app.at("/deployments/prod/artifact/app")).send().await.unwrap();
    assert_problem(absent, 404, "not_found").await;
    let nowhere = app.client.delete(app.at("/deployments/none/artifact/app")).send().await.unwrap();
    assert_problem(nowhere, 404, "not_found").await;
    let bad_version = app
        .client
        .post(app.at("/deployments/prod/artifact/app"))
        .json(&json!({"version": "latest"}))
        .send()
        .await
        .unwrap();
    assert_problem(bad_version, 400, "invalid_version").await;
}

#[tokio::test]
async fn preconditions_guard_every_write() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[]), ("dns", &[])]).await;
    let first = app.deploy_with("prod", keys(&["network"]), &[("if-none-match", "*")]).await;
    assert_eq!(first.status(), 201);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();

    let again = app.deploy_with("prod", keys(&["dns"]), &[("if-none-match", "*")]).await;
    assert_problem(again, 412, "precondition_failed").await;
    let stale = app.deploy_with("prod", keys(&["dns"]), &[("if-match", "\"0000\"")]).await;
    assert_problem(stale, 412, "precondition_failed").await;
    let absent = app.deploy_with("staging", keys(&["dns"]), &[("if-match", "*")]).await;
    assert_problem(absent, 412, "precondition_failed").await;
    assert_eq!(app.get_json("/deployments/prod").await["revision"], 1, "refused writes change nothing");

    let fresh = app
        .deploy_with(
            "prod",
            json!([{"artifact_key": "network"}, {"artifact_key": "dns"}]),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(fresh.status(), 200);
    let pin = app
        .client
        .post(app.at("/deployments/prod/artifact/dns"))
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_problem(pin, 412, "precondition_failed").await;
    let remove = app
        .client
        .delete(app.at("/deployments/prod/artifact/dns"))
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_problem(remove, 412, "precondition_failed").await;
    let delete =
        app.client.delete(app.at("/deployments/prod")).header("if-match", &etag).send().await.unwrap();
    assert_problem(delete, 412, "precondition_failed").await;
    let malformed = app.deploy_with("prod", keys(&["dns"]), &[("if-match", "no-quotes")]).await;
    assert_problem(malformed, 400, "invalid_header").await;
}

#[tokio::test]
async fn a_dry_run_shows_the_diff_and_stores_nothing() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[]), ("dns", &[])]).await;
    let dry = app
        .client
        .post(app.at("/deployments?dry_run=true"))
        .json(&json!({"selector": "prod", "deployment_plan": {"artifacts": keys(&["network"])}}))
        .send()
        .await
        .unwrap();
    assert_eq!(dry.status(), 200);
    assert!(dry.headers().get("etag").is_none());
    assert_eq!(
        dry.json::<Value>().await.unwrap()["diff"]["added"],
        json!([{"artifact_key": "network", "version": 1}])
    );
    assert_problem(app.get("/deployments/prod").await, 404, "not_found").await;

    app.deploy("prod", keys(&["network"])).await;
    let dry_add =
        app.client.post(app.at("/deployments/prod/artifact/dns?dry_run=true")).send().await.unwrap();
    let dry_add = json_of(dry_add, 200).await;
    assert_eq!(dry_add["revision"], 2);
    assert_eq!(dry_add["diff"]["added"], json!([{"artifact_key": "dns", "version": 1}]));
    let dry_remove =
        app.client.delete(app.at("/deployments/prod/artifact/network?dry_run=true")).send().await.unwrap();
    assert_eq!(json_of(dry_remove, 200).await["artifacts"], json!([]));
    let revisions = app.get_json("/deployments/prod/revisions").await;
    assert_eq!(revisions["revisions"].as_array().unwrap().len(), 1, "dry runs store no revision");
    assert_eq!(app.get_json("/events").await["events"].as_array().unwrap().len(), 1, "and emit no event");
    let bad = app
        .client
        .post(app.at("/deployments?dry_run=maybe"))
        .json(&json!({"selector": "p", "deployment_plan": {"artifacts": []}}))
        .send()
        .await
        .unwrap();
    assert_problem(bad, 400, "invalid_dry_run").await;
}

#[tokio::test]
async fn concurrent_writers_lose_no_update() {
    let app = TestApp::spawn().await;
    let names: Vec<String> = (0..24).map(|i| format!("svc{i}")).collect();
    for name in &names {
        app.upload_ok(package(name, &[], name)).await;
    }
    let writes = names
        .iter()
        .map(|name| app.client.post(app.at(&format!("/deployments/shared/artifact/{name}"))).send());
    let responses = futures::future::join_all(writes).await;
    let mut revisions = Vec::new();
    for response in responses {
        let response = response.unwrap();
        assert!(response.status() == 200 || response.status() == 201);
        revisions.push(response.json::<Value>().await.unwrap()["revision"].as_i64().unwrap());
    }
    revisions.sort();
    assert_eq!(revisions, (1..=24).collect::<Vec<_>>(), "contiguous, one per successful write");
    let deployment = app.get_json("/deployments/shared").await;
    assert_eq!(
        deployment["artifacts"].as_array().unwrap().len(),
        24,
        "every write's artifact is in the plan"
    );
    let stored = app.get_json("/deployments/shared/revisions?limit=100").await;
    assert_eq!(stored["revisions"].as_array().unwrap().len(), 24);
}

#[tokio::test]
async fn selectors_round_trip_through_percent_encoded_paths() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[])]).await;
    for selector in ["prod/us-east-1", "staging eu", "développement/東京", "a%2Fb", "100%"] {
        let created = app.deploy(selector, keys(&["network"])).await;
        assert_eq!(created.status(), 201, "{selector}");
        let location = created.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with(&format!("/deployments/{}/status/", segment(selector))), "{location}");
        let got = app.get_json(&format!("/deployments/{}", segment(selector))).await;
        assert_eq!(got["selector"], selector);
        assert_eq!(app.get(&location).await.status(), 200);
    }
    for (selector, rule) in [("a,b", "commas"), ("a\nb", "control"), ("", "empty")] {
        let problem =
            assert_problem(app.deploy(selector, keys(&["network"])).await, 400, "invalid_selector").await;
        assert!(problem["detail"].as_str().unwrap().contains(rule), "{problem}");
    }
    let long = "é".repeat(257);
    assert_problem(app.get(&format!("/deployments/{}", segment(&long))).await, 400, "invalid_selector").await;
    let body = json!({"selector": "x", "organization": "acme corp", "deployment_plan": {"artifacts": []}});
    let bad_org = app.client.post(app.at("/deployments")).json(&body).send().await.unwrap();
    assert_problem(bad_org, 400, "invalid_organization").await;
    let bad_key = app.deploy("x", keys(&["Not A Key"])).await;
    assert_problem(bad_key, 400, "invalid_plan_entries").await;
}

#[tokio::test]
async fn deleting_a_deployment_keeps_its_history() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[])]).await;
    let first = json_of(app.deploy("prod", keys(&["network"])).await, 201).await;
    assert_eq!(app.client.delete(app.at("/deployments/prod")).send().await.unwrap().status(), 204);
    assert_problem(app.get("/deployments/prod").await, 404, "not_found").await;
    assert_problem(app.client.delete(app.at("/deployments/prod")).send().await.unwrap(), 404, "not_found")
        .await;
    let old =
        app.get_json(&format!("/deployments/prod/status/{}", first["status_id"].as_str().unwrap())).await;
    assert_eq!(old["state"], "superseded");
    assert_eq!(app.get_json("/artifacts/network/dependents").await["selectors"], json!([]));

    let again = json_of(app.deploy("prod", keys(&["network"])).await, 201).await;
    assert_eq!(again["revision"], 2, "numbering continues, so status ids stay unique");
    assert_eq!(app.get_json("/deployments/prod/revisions").await["revisions"].as_array().unwrap().len(), 2);
    assert_problem(app.get("/deployments/never/revisions").await, 404, "not_found").await;
}

#[tokio::test]
async fn versions_in_use_cannot_be_deleted_and_dependents_name_selectors() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[]), ("app", &["network"])]).await;
    app.upload_ok(package("network", &[], "v2")).await;
    app.deploy("prod", json!([{"artifact_key": "network", "version": 1}, {"artifact_key": "app"}])).await;
    app.deploy("dev", keys(&["network"])).await;

    let refused = app.client.delete(app.at("/artifacts/network/versions/1")).send().await.unwrap();
    let problem = assert_problem(refused, 409, "version_in_use").await;
    assert_eq!(problem["errors"][0]["selectors"], json!(["prod"]));
    let dependents = app.get_json("/artifacts/network/dependents").await;
    assert_eq!(dependents["selectors"], json!(["dev", "prod"]));
    assert_eq!(dependents["artifacts"][0]["artifact_key"], "app");

    // Once no current plan pins it, the version can go.
    app.deploy("prod", json!([{"artifact_key": "network", "version": 2}, {"artifact_key": "app"}])).await;
    assert_eq!(
        app.client.delete(app.at("/artifacts/network/versions/1")).send().await.unwrap().status(),
        204
    );
}

#[tokio::test]
async fn deployments_are_queried_by_selector_artifact_and_organization() {
    let app = TestApp::spawn().await;
    app.publish(&[("network", &[]), ("app", &["network"]), ("dns", &[])]).await;
    let deploy_org = |selector: &'static str, org: &'static str, plan: Value| {
        let body = json!({"selector": selector, "organization": org, "deployment_plan": {"artifacts": plan}});
        app.client.post(app.at("/deployments")).json(&body).send()
    };
    deploy_org("prod/eu", "acme", keys(&["network", "app"])).await.unwrap();
    deploy_org("prod/us", "acme", keys(&["network"])).await.unwrap();
    deploy_org("dev", "other", keys(&["dns"])).await.unwrap();
    deploy_org("test", "other", keys(&["network", "dns"])).await.unwrap();

    assert_eq!(selectors(&app, "/deployments").await, ["dev", "prod/eu", "prod/us", "test"]);
    assert_eq!(selectors(&app, "/deployments?artifact_keys=app").await, ["prod/eu"]);
    assert_eq!(selectors(&app, "/deployments?artifact_keys=app,dns").await, ["dev", "prod/eu", "test"]);
    assert_eq!(
        selectors(&app, "/deployments?artifact_keys=app&artifact_keys=dns").await,
        ["dev", "prod/eu", "test"]
    );
    assert_eq!(selectors(&app, "/deployments?organization=acme").await, ["prod/eu", "prod/us"]);
    assert_eq!(
        selectors(&app, "/deployments?organization=acme&artifact_keys=network").await,
        ["prod/eu", "prod/us"]
    );
    assert_eq!(
        selectors(&app, "/deployments?selectors=dev,prod%2Fus&selectors=nope").await,
        ["dev", "prod/us"]
    );
    assert_eq!(selectors(&app, "/deployments?selectors=dev&organization=acme").await, Vec::<String>::new());

    let page = app.get_json("/deployments?limit=3").await;
    assert_eq!(page["deployments"].as_array().unwrap().len(), 3);
    let rest =
        app.get_json(&format!("/deployments?limit=3&cursor={}", page["next_cursor"].as_str().unwrap())).await;
    assert_eq!(rest["deployments"][0]["selector"], "test");
    assert!(rest["next_cursor"].is_null());

    assert_problem(app.get("/deployments?organization=a%20b").await, 400, "invalid_organization").await;
    assert_problem(app.get("/deployments?artifact_keys=Bad").await, 400, "invalid_artifact_key").await;
    assert_problem(app.get("/deployments?selector=x").await, 400, "unknown_parameter").await;
}

async fn selectors(app: &TestApp, path: &str) -> Vec<String> {
    let list = app.get_json(path).await;
    list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["selector"].as_str().unwrap().to_string())
        .collect()
}
