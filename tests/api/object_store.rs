//! Packages in a real S3-compatible server: presigned POST and PUT straight
//! to the object store, sent by a plain HTTP client as a user's script
//! would, then `POST /uploads/{id}/complete`; the sweep of uploads nobody
//! completed; downloads by redirect. Skipped (saying so) without a server.

use serde_json::{Value, json};
use stackyard_server::config::{BlobStoreUrl, Downloads};
use stackyard_testkit::TestBucket;

use crate::helpers::*;

async fn s3_app(bucket: &TestBucket, tweak: impl FnOnce(&mut stackyard_server::Settings)) -> TestApp {
    let (endpoint, name) = (bucket.endpoint.clone(), bucket.bucket.clone());
    TestApp::spawn_with(move |s| {
        s.blob_store = Some(BlobStoreUrl::S3 { bucket: name, prefix: "registry".into() });
        s.s3.endpoint = Some(endpoint);
        s.s3.region = "us-east-1".into();
        s.s3.access_key_id = Some("testing".into());
        s.s3.secret_access_key = Some("testing".into());
        tweak(s);
    })
    .await
}

/// A plain client: no token, as a script posting to S3 would be.
fn plain() -> reqwest::Client {
    reqwest::Client::new()
}

/// Whether the bucket holds a key, seen with an unsigned GET: 404 when it
/// does not (an existing object answers 200 or, refused to anonymous, 403).
async fn object_status(bucket: &TestBucket, key: &str) -> u16 {
    let url = format!("{}/{}/{key}", bucket.endpoint, bucket.bucket);
    plain().get(url).send().await.unwrap().status().as_u16()
}

async fn complete(app: &TestApp, upload_id: &str) -> reqwest::Response {
    app.client.post(app.at(&format!("/uploads/{upload_id}/complete"))).send().await.unwrap()
}

#[tokio::test]
async fn a_presigned_post_goes_to_s3_and_complete_registers_it() {
    let Some(bucket) = TestBucket::create().await else { return };
    let app = s3_app(&bucket, |_| {}).await;
    let package = package("network", &[], "vpc");
    let presigned = app.presign(json!({"filename": "network.tar.gz"})).await;
    let url = presigned["url"].as_str().unwrap();
    assert_eq!(url, format!("{}/{}", bucket.endpoint, bucket.bucket), "the form goes to the bucket itself");
    let fields = presigned["fields"].as_object().unwrap();
    for name in ["key", "policy", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature"] {
        assert!(fields.contains_key(name), "{name} in {fields:?}");
    }
    let id = presigned["upload_id"].as_str().unwrap();

    let before = complete(&app, id).await;
    assert_problem(before, 409, "upload_not_received").await;

    let response = post_form(&plain(), &presigned, package.clone(), &[]).await;
    assert!(response.status().is_success(), "S3 took the form: {}", response.status());
    assert_eq!(app.get_json(&format!("/uploads/{id}")).await["state"], "pending");

    let response = complete(&app, id).await;
    assert_eq!(response.status(), 200);
    let upload: Value = response.json().await.unwrap();
    assert_eq!(upload["state"], "registered", "{upload}");
    assert_eq!(upload["artifact_key"], "network");
    assert_eq!(upload["digest"], format!("sha256:{}", sha256_hex(&package)));
    assert_eq!(
        object_status(&bucket, &format!("registry/uploads/{id}")).await,
        404,
        "the staged object is gone"
    );
    let hex = sha256_hex(&package);
    assert_ne!(object_status(&bucket, &format!("registry/sha256/{}/{hex}", &hex[..2])).await, 404);

    let again = complete(&app, id).await;
    assert_eq!(again.json::<Value>().await.unwrap()["state"], "registered", "completing twice is harmless");

    // Downloads answer with a presigned GET of the object store.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(
            [(reqwest::header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}").parse().unwrap())]
                .into_iter()
                .collect(),
        )
        .build()
        .unwrap();
    let download = no_redirects.get(app.at("/artifacts/network/versions/1/download")).send().await.unwrap();
    assert_eq!(download.status(), 302);
    let location = download.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&bucket.endpoint) && location.contains("X-Amz-Signature"), "{location}");
    let bytes = plain().get(&location).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.as_ref(), package.as_slice());
}

#[tokio::test]
async fn a_presigned_put_goes_to_s3_and_streams_back_through_the_server() {
    let Some(bucket) = TestBucket::create().await else { return };
    let app = s3_app(&bucket, |s| s.s3.downloads = Downloads::Stream).await;
    let package = package("database", &[], "rds");
    let presigned = app.presign(json!({"method": "PUT", "sha256": sha256_hex(&package)})).await;
    let url = presigned["url"].as_str().unwrap();
    assert!(url.starts_with(&bucket.endpoint) && url.contains("X-Amz-Signature"), "{url}");
    let response = plain().put(url).body(package.clone()).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let upload: Value = complete(&app, presigned["upload_id"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(upload["state"], "registered", "{upload}");

    let download = app.get("/artifacts/database/versions/1/download").await;
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap().as_ref(), package.as_slice());
    let range = app
        .client
        .get(app.at("/artifacts/database/versions/1/download"))
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(range.bytes().await.unwrap().as_ref(), &package[..4]);
}

#[tokio::test]
async fn bad_packages_in_s3_are_refused_and_nothing_is_kept() {
    let Some(bucket) = TestBucket::create().await else { return };
    let app = s3_app(&bucket, |_| {}).await;

    // Not an archive.
    let presigned = app.presign(json!({})).await;
    let id = presigned["upload_id"].as_str().unwrap().to_string();
    post_form(&plain(), &presigned, b"just some text".to_vec(), &[]).await;
    assert_problem(complete(&app, &id).await, 415, "not_an_archive").await;
    assert_eq!(app.get_json(&format!("/uploads/{id}")).await["state"], "rejected");
    assert_eq!(object_status(&bucket, &format!("registry/uploads/{id}")).await, 404);

    // More bytes than declared, through a PUT (which S3 cannot bound).
    let presigned = app.presign(json!({"method": "PUT", "content_length": 10})).await;
    let id = presigned["upload_id"].as_str().unwrap().to_string();
    plain().put(presigned["url"].as_str().unwrap()).body(package("x", &[], "y")).send().await.unwrap();
    assert_problem(complete(&app, &id).await, 413, "upload_too_large").await;

    // A digest that does not match.
    let presigned = app.presign(json!({"method": "PUT", "sha256": "0".repeat(64)})).await;
    let id = presigned["upload_id"].as_str().unwrap().to_string();
    plain().put(presigned["url"].as_str().unwrap()).body(package("x", &[], "y")).send().await.unwrap();
    assert_problem(complete(&app, &id).await, 400, "digest_mismatch").await;

    // The server's own upload endpoint does not take an upload meant for S3.
    let presigned = app.presign(json!({})).await;
    let own = format!("{}/uploads/{}", app.url, presigned["upload_id"].as_str().unwrap());
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(b"x".to_vec()));
    let response = plain().post(own).multipart(form).send().await.unwrap();
    assert_ne!(response.status(), 204);

    let list = app.get_json("/artifacts").await;
    assert_eq!(list["artifacts"], json!([]), "no artifact may be registered");
}

#[tokio::test]
async fn the_sweep_registers_uploads_nobody_completed() {
    let Some(bucket) = TestBucket::create().await else { return };
    let app = s3_app(&bucket, |s| s.upload_sweep_interval_secs = 1).await;
    let presigned = app.presign(json!({})).await;
    let id = presigned["upload_id"].as_str().unwrap();
    post_form(&plain(), &presigned, package("iam", &[], "roles"), &[]).await;
    for _ in 0..100 {
        let upload = app.get_json(&format!("/uploads/{id}")).await;
        if upload["state"] == "registered" {
            assert_eq!(upload["artifact_key"], "iam");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the sweep did not register the upload within 10 s");
}

#[tokio::test]
async fn the_example_curl_script_uploads_to_s3() {
    let Some(bucket) = TestBucket::create().await else { return };
    let app = s3_app(&bucket, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.tar.gz");
    std::fs::write(&file, package("app", &[], "web")).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/upload.sh");
    let output = tokio::process::Command::new("bash")
        .arg(script)
        .arg(&file)
        .env("STACKYARD_URL", &app.url)
        .env("STACKYARD_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let upload: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(upload["state"], "registered", "{upload}");
    assert_eq!(app.get_json("/artifacts/app").await["latest_version"], 1);
}

#[tokio::test]
async fn stackyard_push_uploads_to_s3_by_post_and_put() {
    let Some(bucket) = TestBucket::create().await else { return };
    let app = s3_app(&bucket, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [("network", None), ("database", Some("--put"))] {
        let file = dir.path().join(format!("{name}.tar.gz"));
        std::fs::write(&file, package(name, &[], name)).unwrap();
        let output = tokio::process::Command::new(binary())
            .args(["push", "-o", "json", "--server", &app.url, "--token", ADMIN_TOKEN])
            .arg(&file)
            .args(extra)
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
        let pushed: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(pushed[0]["state"], "registered", "{pushed}");
        assert_eq!(pushed[0]["artifact_key"], name);
    }
}
