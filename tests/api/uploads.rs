//! Presigned uploads: each package format, re-uploads, every rejection.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn each_package_format_uploads_and_registers() {
    let app = TestApp::spawn().await;
    let manifest_yaml = b"stack_name: Network_Core v2\ndescription: VPC\nlabels: {team: net}\nx-owner: ops\n";
    let cases = [
        ("zip", zip(&[("manifest.yaml", manifest_yaml), ("main.tf", b"zip")])),
        ("tar.gz", tar_gz(&[("./manifest.yaml", manifest_yaml), ("./main.tf", b"tgz")])),
        ("tar", tar(&[("network/manifest.yaml", manifest_yaml), ("network/main.tf", b"tar")])),
    ];
    for (i, (format, package)) in cases.into_iter().enumerate() {
        let digest = sha256_hex(&package);
        let response = app.upload(package.clone()).await;
        assert_eq!(response.status(), 204, "{format}");
        assert_eq!(response.headers()["etag"], format!("\"{digest}\"").as_str());

        let version = app.get_json(&format!("/artifacts/network-core-v2/versions/{}", i + 1)).await;
        assert_eq!(version["format"], format);
        assert_eq!(version["digest"], format!("sha256:{digest}"));
        assert_eq!(version["size"], package.len());
        assert_eq!(version["stack_name"], "Network_Core v2");
        assert_eq!(version["manifest"]["x-owner"], "ops", "unknown manifest fields are kept");
        assert_eq!(version["labels"]["team"], "net");
    }
    let artifact = app.get_json("/artifacts/network-core-v2").await;
    assert_eq!(artifact["latest_version"], 3);
    assert_eq!(artifact["latest"]["format"], "tar");
    let numbers: Vec<_> =
        artifact["versions"].as_array().unwrap().iter().map(|v| v["version"].clone()).collect();
    assert_eq!(numbers, [json!(3), json!(2), json!(1)], "newest first");
}

#[tokio::test]
async fn upload_state_follows_the_upload() {
    let app = TestApp::spawn().await;
    let presigned = app.presign(json!({"filename": "net.tgz", "labels": {"env": "prod"}})).await;
    let id = presigned["upload_id"].as_str().unwrap();
    let before = app.get_json(&format!("/uploads/{id}")).await;
    assert_eq!(before["state"], "pending");

    let response = post_form(&app.client, &presigned, package("net", &[], "a"), &[]).await;
    assert_eq!(response.status(), 204);
    let after = app.get_json(&format!("/uploads/{id}")).await;
    assert_eq!(after["state"], "registered");
    assert_eq!(after["artifact_key"], "net");
    assert_eq!(after["version"], 1);
    assert_eq!(after["created"], true);
    assert_eq!(
        app.get_json("/artifacts/net/versions/1").await["labels"]["env"],
        "prod",
        "presign labels apply"
    );

    let completed = app.client.post(app.at(&format!("/uploads/{id}/complete"))).send().await.unwrap();
    assert_eq!(completed.status(), 200);
    assert_eq!(completed.json::<Value>().await.unwrap()["state"], "registered");

    assert_problem(app.get("/uploads/0123456789abcdef0123456789abcdef").await, 404, "not_found").await;
    assert_problem(app.get("/uploads/not-an-id").await, 404, "not_found").await;
}

#[tokio::test]
async fn identical_bytes_return_the_existing_version() {
    let app = TestApp::spawn().await;
    let pkg = package("db", &[], "same");
    let first = app.upload_ok(pkg.clone()).await;
    let second = app.upload_ok(pkg).await;
    assert_eq!(first["created"], true);
    assert_eq!(second["created"], false);
    assert_eq!(second["version"], 1);
    assert_eq!(second["digest"], first["digest"]);
    let artifact = app.get_json("/artifacts/db").await;
    assert_eq!(artifact["versions"].as_array().unwrap().len(), 1);
    assert_eq!(app.stored_files(), (1, 0), "one blob for both uploads");

    let third = app.upload_ok(package("db", &[], "changed")).await;
    assert_eq!(third["version"], 2);
}

#[tokio::test]
async fn success_action_status_picks_the_answer() {
    let app = TestApp::spawn().await;
    for (status, content) in [("200", "a"), ("201", "b"), ("204", "c"), ("999", "d")] {
        let presigned = app.presign(json!({})).await;
        let response = post_form(
            &app.client,
            &presigned,
            package("app", &[], content),
            &[("success_action_status", status)],
        )
        .await;
        let expected = if status == "999" { 204 } else { status.parse().unwrap() };
        assert_eq!(response.status(), expected);
        assert!(response.headers().contains_key("etag"));
        let body = response.text().await.unwrap();
        if expected == 204 {
            assert!(body.is_empty());
        } else {
            let upload: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(upload["state"], "registered");
        }
    }
}

#[tokio::test]
async fn presigned_put_uploads_raw_bytes() {
    let app = TestApp::spawn().await;
    let pkg = package("iam", &[], "put");
    let presigned =
        app.presign(json!({"method": "PUT", "content_length": pkg.len(), "sha256": sha256_hex(&pkg)})).await;
    assert_eq!(presigned["method"], "PUT");
    assert!(presigned.get("fields").is_none());
    let mut request = app.client.put(presigned["url"].as_str().unwrap()).body(pkg.clone());
    for (name, value) in presigned["headers"].as_object().unwrap() {
        request = request.header(name.as_str(), value.as_str().unwrap());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], format!("\"{}\"", sha256_hex(&pkg)).as_str());
    assert_eq!(response.json::<Value>().await.unwrap()["artifact_key"], "iam");

    // The same URL again: single use.
    let again = app.client.put(presigned["url"].as_str().unwrap()).body(pkg).send().await.unwrap();
    assert_problem(again, 409, "upload_already_used").await;
}

#[tokio::test]
async fn a_plain_curl_multipart_client_works_unchanged() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("monitoring.zip");
    std::fs::write(&file, zip(&[("manifest.yml", b"stack_name: monitoring\ndepends_on: [app]\n")])).unwrap();
    let presigned = app.presign(json!({})).await;
    let url = presigned["url"].as_str().unwrap().to_string();
    let mut args =
        vec!["-sS".to_string(), "-o".into(), "/dev/null".into(), "-w".into(), "%{http_code}".into()];
    for (name, value) in presigned["fields"].as_object().unwrap() {
        args.push("-F".into());
        args.push(format!("{name}={}", value.as_str().unwrap()));
    }
    args.push("-F".into());
    args.push(format!("file=@{}", file.display()));
    args.push(url);
    let output = tokio::process::Command::new("curl").args(&args).output().await.expect("curl is installed");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "204", "{}", String::from_utf8_lossy(&output.stderr));
    let version = app.get_json("/artifacts/monitoring/versions/1").await;
    assert_eq!(version["depends_on"], json!(["app"]));
}

/// Each bad package: its status, problem type, and that nothing was kept.
#[tokio::test]
async fn bad_packages_are_refused_and_leave_nothing() {
    let app = TestApp::spawn().await;
    let many: Vec<(String, Vec<u8>)> = (0..10_001).map(|i| (format!("f{i}"), Vec::new())).collect();
    let many: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let bomb = format!("stack_name: bomb\ndescription: '{}'\n", "0".repeat(2 * 1024 * 1024));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("plain text", b"just some text, not an archive".to_vec(), 415, "not_an_archive"),
        (
            "gzip that is cut short",
            tar_gz(&[("manifest.json", &manifest("x", &[]))])[..30].to_vec(),
            422,
            "corrupt_archive",
        ),
        ("no manifest", tar_gz(&[("main.tf", b"")]), 422, "no_manifest"),
        (
            "manifest in one of two folders",
            tar(&[("a/manifest.yaml", b"stack_name: a"), ("b/x", b"")]),
            422,
            "no_manifest",
        ),
        (
            "two manifests",
            zip(&[("manifest.yaml", b"stack_name: a"), ("manifest.json", b"{}")]),
            422,
            "multiple_manifests",
        ),
        ("bad YAML", zip(&[("manifest.yaml", b"stack_name: [oops")]), 422, "invalid_manifest"),
        ("bad JSON", zip(&[("manifest.json", b"{\"stack_name\": ")]), 422, "invalid_manifest"),
        ("missing stack name", zip(&[("manifest.yaml", b"description: x")]), 422, "invalid_manifest"),
        ("empty stack name", zip(&[("manifest.yaml", b"stack_name: ''")]), 422, "invalid_manifest"),
        (
            "stack name without letters",
            zip(&[("manifest.yaml", b"stack_name: '***'")]),
            422,
            "invalid_manifest",
        ),
        (
            "depends_on not a list",
            zip(&[("manifest.yaml", b"stack_name: a\ndepends_on: b")]),
            422,
            "invalid_manifest",
        ),
        ("too many entries", zip(&many), 413, "too_many_entries"),
        (
            "manifest decompressing past its limit",
            zip(&[("manifest.yaml", bomb.as_bytes())]),
            413,
            "manifest_too_large",
        ),
    ];
    for (what, package, status, code) in cases {
        let presigned = app.presign(json!({})).await;
        let problem =
            assert_problem(post_form(&app.client, &presigned, package, &[]).await, status, code).await;
        assert!(!problem["errors"].as_array().unwrap().is_empty(), "{what}: errors list");
        app.assert_nothing_stored().await;
        let upload = app.get_json(&format!("/uploads/{}", presigned["upload_id"].as_str().unwrap())).await;
        assert_eq!(upload["state"], "rejected", "{what}");
        assert_eq!(upload["error"]["type"], problem["type"], "{what}");
    }
}

#[tokio::test]
async fn manifest_errors_name_every_bad_field() {
    let app = TestApp::spawn().await;
    let package = zip(&[("pkg/manifest.yaml", b"depends_on: [ok, 7]\nlabels: nope\n")]);
    let problem = assert_problem(app.upload(package).await, 422, "invalid_manifest").await;
    let fields: Vec<_> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["stack_name", "depends_on[1]", "labels"]);
    assert_eq!(problem["errors"][0]["path"], "pkg/manifest.yaml");
}

#[tokio::test]
async fn tampered_expired_reused_and_oversize_uploads_are_refused() {
    let app = TestApp::spawn().await;
    let pkg = package("net", &[], "x");

    // Tampered: a policy rewritten to allow more, with the old signature.
    let mut presigned = app.presign(json!({"content_length": 10})).await;
    let policy = STANDARD.decode(presigned["fields"]["policy"].as_str().unwrap()).unwrap();
    let mut policy: Value = serde_json::from_slice(&policy).unwrap();
    policy["conditions"][1] = json!(["content-length-range", 1, 1_000_000]);
    presigned["fields"]["policy"] = json!(STANDARD.encode(serde_json::to_vec(&policy).unwrap()));
    assert_problem(post_form(&app.client, &presigned, pkg.clone(), &[]).await, 403, "invalid_signature")
        .await;

    // A forged signature, and a signature moved to another upload.
    let mut presigned = app.presign(json!({})).await;
    let good = presigned.clone();
    presigned["fields"]["x-stackyard-signature"] = json!("00".repeat(32));
    assert_problem(post_form(&app.client, &presigned, pkg.clone(), &[]).await, 403, "invalid_signature")
        .await;
    let other = app.presign(json!({})).await;
    let response =
        post_form(&app.client, &json!({"url": other["url"], "fields": good["fields"]}), pkg.clone(), &[])
            .await;
    assert_problem(response, 403, "invalid_signature").await;
    app.assert_nothing_stored().await;
    // Refused attempts do not use the upload up: the genuine form still works.
    assert_eq!(post_form(&app.client, &good, pkg.clone(), &[]).await.status(), 204);

    // Reused.
    assert_problem(post_form(&app.client, &good, pkg.clone(), &[]).await, 409, "upload_already_used").await;

    // Oversize against the declared length, and smaller than declared.
    let presigned = app.presign(json!({"content_length": 10})).await;
    assert_problem(post_form(&app.client, &presigned, pkg.clone(), &[]).await, 413, "upload_too_large").await;
    let presigned = app.presign(json!({"content_length": pkg.len() + 1})).await;
    assert_problem(post_form(&app.client, &presigned, pkg.clone(), &[]).await, 400, "size_mismatch").await;

    // Declared digest that the bytes do not match.
    let presigned = app.presign(json!({"sha256": "ab".repeat(32)})).await;
    assert_problem(post_form(&app.client, &presigned, pkg.clone(), &[]).await, 400, "digest_mismatch").await;

    // Expired.
    let presigned = app.presign(json!({"expires_in": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_problem(post_form(&app.client, &presigned, pkg.clone(), &[]).await, 403, "upload_expired").await;
    let upload = app.get_json(&format!("/uploads/{}", presigned["upload_id"].as_str().unwrap())).await;
    assert_eq!(upload["state"], "expired");

    let list = app.get_json("/artifacts/net").await;
    assert_eq!(list["versions"].as_array().unwrap().len(), 1, "only the genuine upload registered");
    assert_eq!(app.stored_files(), (1, 0));
}

#[tokio::test]
async fn the_server_maximum_package_size_applies() {
    let app = TestApp::spawn_with(|s| s.max_package_size = 1000).await;
    let response = app
        .client
        .post(app.at("/presigned_url"))
        .json(&json!({"content_length": 1001}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 413, "package_too_large").await;
    let big = package("big", &[], &"x".repeat(5000)); // gzip keeps it small...
    let big = [big, vec![0; 2000]].concat(); // ...so pad it past the limit.
    assert_problem(app.upload(big).await, 413, "upload_too_large").await;
    app.assert_nothing_stored().await;
}

#[tokio::test]
async fn concurrent_replays_of_one_upload_register_once() {
    let app = TestApp::spawn().await;
    let presigned = app.presign(json!({})).await;
    let pkg = package("race", &[], "once");
    let attempts = (0..8).map(|_| post_form(&app.client, &presigned, pkg.clone(), &[]));
    let statuses: Vec<u16> =
        futures::future::join_all(attempts).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 204).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 7, "{statuses:?}");
}

#[tokio::test]
async fn malformed_upload_requests_get_clear_errors() {
    let app = TestApp::spawn().await;
    let presigned = app.presign(json!({})).await;
    let url = presigned["url"].as_str().unwrap();

    let no_file =
        reqwest::multipart::Form::new().text("key", presigned["upload_id"].as_str().unwrap().to_string());
    assert_problem(app.client.post(url).multipart(no_file).send().await.unwrap(), 400, "missing_file").await;

    let only_file =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(b"x".to_vec()));
    let problem = assert_problem(
        app.client.post(url).multipart(only_file).send().await.unwrap(),
        400,
        "missing_fields",
    )
    .await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 3);

    let not_multipart = app.client.post(url).body("hello").send().await.unwrap();
    assert_problem(not_multipart, 415, "unsupported_media_type").await;

    // An upload presigned for POST refuses PUT, without being used up.
    let put = app.client.put(format!("{url}?expires=1&signature=00")).body("x").send().await.unwrap();
    assert_problem(put, 405, "wrong_upload_method").await;
    let unsigned = app.presign(json!({"method": "PUT"})).await;
    let bare = unsigned["url"].as_str().unwrap().split('?').next().unwrap().to_string();
    assert_problem(app.client.put(&bare).body("x").send().await.unwrap(), 403, "missing_signature").await;
    assert_eq!(post_form(&app.client, &presigned, package("ok", &[], "x"), &[]).await.status(), 204);
}

/// A presigned POST's form as raw bytes: the fields, then `file` with
/// `data` and what follows it (the closing boundary, or not).
fn raw_form(presigned: &Value, data: &[u8], after_file: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in presigned["fields"].as_object().unwrap() {
        let value = value.as_str().unwrap();
        body.extend(
            format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes(),
        );
    }
    body.extend(b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.tar.gz\"\r\n\r\n");
    body.extend(data);
    body.extend(after_file.bytes());
    body
}

#[tokio::test]
async fn broken_forms_are_refused_and_leave_nothing() {
    let app = TestApp::spawn().await;
    let send = |presigned: &Value, body: Vec<u8>, content_type: &str| {
        app.client
            .post(presigned["url"].as_str().unwrap())
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let form_type = "multipart/form-data; boundary=B";
    let presigned = app.presign(json!({})).await;
    let pkg = package("broken", &[], "x");

    let no_boundary = send(&presigned, raw_form(&presigned, &pkg, "\r\n--B--\r\n"), "multipart/form-data");
    assert_problem(no_boundary.await.unwrap(), 415, "unsupported_media_type").await;
    let problem = assert_problem(
        send(&presigned, b"hello".to_vec(), form_type).await.unwrap(),
        400,
        "invalid_multipart",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("does not start with its boundary"), "{problem}");
    let unnamed = b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--\r\n".to_vec();
    assert_problem(send(&presigned, unnamed, form_type).await.unwrap(), 400, "invalid_multipart").await;
    let many: String = (0..40)
        .map(|i| format!("--B\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n"))
        .collect();
    let problem = assert_problem(
        send(&presigned, many.into_bytes(), form_type).await.unwrap(),
        400,
        "invalid_multipart",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("over 32 fields"), "{problem}");
    // None of those used the upload up: the same URL still takes the package.
    let whole = send(&presigned, raw_form(&presigned, &pkg, "\r\n--B--\r\n"), form_type).await.unwrap();
    assert_eq!(whole.status(), 204);

    // A package whose form ends before its closing boundary is refused, and nothing of it is kept.
    let app = TestApp::spawn().await;
    for tail in ["", "\r\n-"] {
        let presigned = app.presign(json!({})).await;
        let cut = send(&presigned, raw_form(&presigned, &pkg, tail), form_type).await.unwrap();
        let problem = assert_problem(cut, 400, "upload_interrupted").await;
        assert!(problem["detail"].as_str().unwrap().contains("ended inside the form"), "{problem}");
        app.assert_nothing_stored().await;
    }
}

#[tokio::test]
async fn bad_presign_requests_are_refused() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"expires_in": 0}), 400, "invalid_expires_in"),
        (json!({"expires_in": 604801}), 400, "invalid_expires_in"),
        (json!({"sha256": "xyz"}), 400, "invalid_sha256"),
        (json!({"content_length": 0}), 400, "invalid_content_length"),
        (json!({"method": "GET"}), 400, "invalid_body"),
        (json!({"bogus": 1}), 400, "invalid_body"),
        (json!({"labels": {"": "x"}}), 400, "invalid_labels"),
        (json!({"filename": "a\nb"}), 400, "invalid_filename"),
    ];
    for (body, status, code) in cases {
        let response = app.client.post(app.at("/presigned_url")).json(&body).send().await.unwrap();
        assert_problem(response, status, code).await;
    }
    let syntax = app
        .client
        .post(app.at("/presigned_url"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_problem(syntax, 400, "invalid_json").await;
    let text = app
        .client
        .post(app.at("/presigned_url"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(text, 415, "unsupported_media_type").await;
    let huge = app
        .client
        .post(app.at("/presigned_url"))
        .header("content-type", "application/json")
        .body(format!("{{\"filename\": \"{}\"}}", "a".repeat(2 * 1024 * 1024)))
        .send()
        .await
        .unwrap();
    assert_problem(huge, 413, "body_too_large").await;
    // An empty body is a presign with every default.
    let empty = app.client.post(app.at("/presigned_url")).send().await.unwrap();
    assert_eq!(empty.status(), 201);
    assert_eq!(empty.headers()["location"].to_str().unwrap().len(), "/uploads/".len() + 32);
}
