//! Artifact listing, description, downloads and deletes.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn listing_pages_stay_stable_while_artifacts_are_added() {
    let app = TestApp::spawn().await;
    for name in ["b", "d", "f", "h", "j"] {
        app.upload_ok(package(name, &[], name)).await;
    }
    let first = app.get_json("/artifacts?limit=2").await;
    assert_eq!(listed_keys(&first), ["b", "d"]);
    let cursor = first["next_cursor"].as_str().unwrap().to_string();

    // Inserted before and after the cursor while a client pages through.
    app.upload_ok(package("a", &[], "a")).await;
    app.upload_ok(package("g", &[], "g")).await;

    let second = app.get_json(&format!("/artifacts?limit=2&cursor={cursor}")).await;
    assert_eq!(listed_keys(&second), ["f", "g"]);
    let third =
        app.get_json(&format!("/artifacts?limit=2&cursor={}", second["next_cursor"].as_str().unwrap())).await;
    assert_eq!(listed_keys(&third), ["h", "j"]);
    let last =
        app.get_json(&format!("/artifacts?limit=2&cursor={}", third["next_cursor"].as_str().unwrap())).await;
    assert_eq!(listed_keys(&last), Vec::<String>::new());
    assert!(last["next_cursor"].is_null());

    let all = app.get_json("/artifacts?limit=100000").await;
    assert_eq!(listed_keys(&all).len(), 7, "limits above the maximum are clamped, not refused");
    assert!(all["next_cursor"].is_null());
    let summary = &all["artifacts"][0];
    assert_eq!(summary["latest_version"], 1);
    assert_eq!(summary["versions"], 1);
}

#[tokio::test]
async fn listing_filters_by_prefix_and_labels() {
    let app = TestApp::spawn().await;
    let labelled = |name: &str, team: &str, tier: &str| {
        let manifest = json!({"stack_name": name, "labels": {"team": team, "tier": tier}});
        zip(&[("manifest.json", serde_json::to_vec(&manifest).unwrap().as_slice())])
    };
    app.upload_ok(labelled("net-core", "net", "1")).await;
    app.upload_ok(labelled("net-edge", "edge", "1")).await;
    app.upload_ok(labelled("app", "net", "2")).await;

    assert_eq!(listed_keys(&app.get_json("/artifacts?prefix=net").await), ["net-core", "net-edge"]);
    assert_eq!(listed_keys(&app.get_json("/artifacts?label=team=net").await), ["app", "net-core"]);
    assert_eq!(listed_keys(&app.get_json("/artifacts?label=team=net&label=tier=1").await), ["net-core"]);
    assert_eq!(listed_keys(&app.get_json("/artifacts?prefix=net&label=team=edge").await), ["net-edge"]);
    assert_eq!(listed_keys(&app.get_json("/artifacts?prefix=zzz").await), Vec::<String>::new());

    assert_problem(app.get("/artifacts?prefix=Net").await, 400, "invalid_prefix").await;
    assert_problem(app.get("/artifacts?label=team").await, 400, "invalid_label").await;
    assert_problem(app.get("/artifacts?limit=0").await, 400, "invalid_limit").await;
    assert_problem(app.get("/artifacts?limit=ten").await, 400, "invalid_limit").await;
    assert_problem(app.get("/artifacts?cursor=!!").await, 400, "invalid_cursor").await;
    assert_problem(app.get("/artifacts?prefx=net").await, 400, "unknown_parameter").await;
}

#[tokio::test]
async fn versions_are_found_by_number_or_digest() {
    let app = TestApp::spawn().await;
    let upload = app.upload_ok(package("db", &[], "v1")).await;
    let digest = upload["digest"].as_str().unwrap();
    let by_number = app.get("/artifacts/db/versions/1").await;
    let etag = by_number.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", &digest["sha256:".len()..]));
    let by_number: Value = by_number.json().await.unwrap();
    assert_eq!(app.get_json(&format!("/artifacts/db/versions/{digest}")).await, by_number);

    let cached = app
        .client
        .get(app.at("/artifacts/db/versions/1"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);

    assert_problem(app.get("/artifacts/db/versions/2").await, 404, "not_found").await;
    assert_problem(
        app.get(&format!("/artifacts/db/versions/sha256:{}", "0".repeat(64))).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(app.get("/artifacts/db/versions/latest").await, 400, "invalid_version").await;
    assert_problem(app.get("/artifacts/nope").await, 404, "not_found").await;
    assert_problem(app.get("/artifacts/Not_A_Key").await, 400, "invalid_artifact_key").await;
}

#[tokio::test]
async fn downloads_serve_the_bytes_with_ranges() {
    let app = TestApp::spawn().await;
    let pkg = package("app", &[], &"content ".repeat(100));
    app.upload_ok(pkg.clone()).await;
    let path = "/artifacts/app/versions/1/download";

    let full = app.get(path).await;
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["content-length"], pkg.len().to_string().as_str());
    assert_eq!(full.headers()["content-type"], "application/gzip");
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    let etag = full.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(full.bytes().await.unwrap().as_ref(), pkg.as_slice());

    let ranged = app.client.get(app.at(path)).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.headers()["content-range"], format!("bytes 10-19/{}", pkg.len()).as_str());
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &pkg[10..20]);

    let suffix = app.client.get(app.at(path)).header("range", "bytes=-5").send().await.unwrap();
    assert_eq!(suffix.status(), 206);
    assert_eq!(suffix.bytes().await.unwrap().as_ref(), &pkg[pkg.len() - 5..]);

    let open_ended = app
        .client
        .get(app.at(path))
        .header("range", format!("bytes={}-", pkg.len() - 3))
        .send()
        .await
        .unwrap();
    assert_eq!(open_ended.bytes().await.unwrap().as_ref(), &pkg[pkg.len() - 3..]);

    let outside = app
        .client
        .get(app.at(path))
        .header("range", format!("bytes={}-", pkg.len() + 10))
        .send()
        .await
        .unwrap();
    assert_problem(outside, 416, "range_not_satisfiable").await;

    let stale = app
        .client
        .get(app.at(path))
        .header("range", "bytes=0-0")
        .header("if-range", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200, "a stale If-Range gets the whole package");

    let cached = app.client.get(app.at(path)).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(cached.status(), 304);
}

#[tokio::test]
async fn deleting_versions_keeps_numbers_and_removes_unused_bytes() {
    let app = TestApp::spawn().await;
    app.upload_ok(package("net", &[], "1")).await;
    app.upload_ok(package("net", &[], "2")).await;
    assert_eq!(app.stored_files().0, 2);

    let deleted = app.client.delete(app.at("/artifacts/net/versions/2")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.stored_files().0, 1, "the deleted version's bytes are gone");
    assert_problem(app.get("/artifacts/net/versions/2").await, 404, "not_found").await;
    assert_eq!(app.get_json("/artifacts/net").await["latest_version"], 1);

    // Numbers are never reused: the next upload is 3, not 2.
    assert_eq!(app.upload_ok(package("net", &[], "3")).await["version"], 3);

    for version in ["1", "3"] {
        let response =
            app.client.delete(app.at(&format!("/artifacts/net/versions/{version}"))).send().await.unwrap();
        assert_eq!(response.status(), 204);
    }
    assert_problem(app.get("/artifacts/net").await, 404, "not_found").await;
    assert_eq!(app.get_json("/artifacts").await["artifacts"], json!([]));
    let again = app.client.delete(app.at("/artifacts/net/versions/1")).send().await.unwrap();
    assert_problem(again, 404, "not_found").await;
    app.assert_nothing_stored().await;

    // The same bytes uploaded again get a new number.
    assert_eq!(app.upload_ok(package("net", &[], "1")).await["version"], 4);
}

#[tokio::test]
async fn dependents_lists_artifacts_that_need_one() {
    let app = TestApp::spawn().await;
    app.upload_ok(package("network", &[], "n")).await;
    app.upload_ok(package("App Server", &["Network"], "a1")).await;
    app.upload_ok(package("App Server", &["network"], "a2")).await;
    app.upload_ok(package("monitoring", &["app-server", "network"], "m")).await;

    let dependents = app.get_json("/artifacts/network/dependents").await;
    assert_eq!(
        dependents["artifacts"],
        json!([{"artifact_key": "app-server", "versions": [1, 2]}, {"artifact_key": "monitoring", "versions": [1]}])
    );
    assert_eq!(dependents["selectors"], json!([]));
    assert_eq!(app.get_json("/artifacts/monitoring/dependents").await["artifacts"], json!([]));
    assert_problem(app.get("/artifacts/nothing/dependents").await, 404, "not_found").await;
}

/// The example packages in the repository stay valid and depend on each other.
#[tokio::test]
async fn the_example_packages_upload() {
    let app = TestApp::spawn().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/packages");
    for name in ["network", "iam-baseline", "database", "app", "monitoring"] {
        let dir = root.join(name);
        let mut builder = ::tar::Builder::new(Vec::new());
        builder.append_dir_all(".", &dir).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &builder.into_inner().unwrap()).unwrap();
        let upload = app.upload_ok(gz.finish().unwrap()).await;
        assert_eq!(upload["artifact_key"], name);
    }
    let app_version = app.get_json("/artifacts/app/versions/1").await;
    assert_eq!(app_version["depends_on"], json!(["network", "database"]));
    let dependents = app.get_json("/artifacts/database/dependents").await;
    assert_eq!(dependents["artifacts"].as_array().unwrap().len(), 2);
}
