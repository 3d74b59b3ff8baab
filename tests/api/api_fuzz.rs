//! API fuzzing: schemathesis (from PyPI) generates requests for every
//! operation of the served `/openapi.json`, with an admin token, against the
//! real binary, and checks that none answers 5xx, an undocumented status
//! code, a wrong content type, a body or headers its schema does not
//! allow, or a 2xx to a request the schema does not allow. Skipped (saying so) without schemathesis; `.ci/run` installs it.

use std::process::Command;

use serde_json::json;
use stackyard_testkit::skip;

use crate::helpers::*;
use crate::process::ServerProcess;

/// The checks the run must pass, "every schema-invalid request is refused"
/// included. Not "every schema-valid request is accepted": opaque cursors,
/// signatures and unknown artifacts are refused whatever their shape.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance,negative_data_rejection";

fn schemathesis() -> Option<&'static str> {
    ["schemathesis", "st"]
        .into_iter()
        .find(|bin| Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success()))
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_or_undocumented_answer() {
    let Some(bin) = schemathesis() else {
        skip("schemathesis", "pip install schemathesis==4.32.5 (.ci/run does)");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("stackyard.toml");
    // A high rate limit, so the run tests the API rather than 429s.
    std::fs::write(&config, "[limits]\nrequests_per_second = 100000\nrequest_burst = 100000\n").unwrap();
    let data_dir = work.path().join("data");
    let server = ServerProcess::start_with(
        &data_dir,
        &[("STACKYARD_BOOTSTRAP_TOKEN", ADMIN_TOKEN)],
        &["--config", config.to_str().unwrap()],
    );
    // Something to find: artifacts, a deployment, an upload waiting.
    let client = &server.client;
    for (name, deps) in [("network", &[][..]), ("cluster", &["network"][..])] {
        let presigned =
            client.post(format!("{}/presigned_url", server.url)).json(&json!({})).send().await.unwrap();
        let presigned = presigned.json().await.unwrap();
        assert_eq!(post_form(client, &presigned, package(name, deps, name), &[]).await.status(), 204);
    }
    let body = json!({"selector": "prod", "deployment_plan": {"artifacts": keys(&["network", "cluster"])}});
    assert_eq!(
        client.post(format!("{}/deployments", server.url)).json(&body).send().await.unwrap().status(),
        201
    );

    let document: serde_json::Value =
        client.get(format!("{}/openapi.json", server.url)).send().await.unwrap().json().await.unwrap();
    let operations: usize =
        document["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();

    let examples = std::env::var("STACKYARD_TEST_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "40".into());
    let seed = std::env::var("STACKYARD_TEST_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261203".into());
    let output = Command::new(bin)
        .arg("run")
        .arg(format!("{}/openapi.json", server.url))
        .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        // One worker: with two threads, CPython 3.11's `ast.parse` (which
        // hypothesis calls to describe lambdas) can fail with "AST constructor
        // recursion depth mismatch", a tool error that is not a finding.
        .args(["--checks", CHECKS, "--max-examples", &examples, "--seed", &seed, "--workers", "1"])
        .args(["--continue-on-failure", "--no-color"])
        .current_dir(work.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    let summary = report.find("SUMMARY").map_or(&report[..], |at| &report[at..]);
    eprintln!("{summary}");
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The server outlived the run (on a fresh connection: pooled ones went idle).
    let healthz = reqwest::get(format!("{}/healthz", server.url)).await.unwrap();
    assert_eq!(healthz.status(), 200, "the server still answers");
    assert!(
        summary.contains(&format!("Tested: {operations}")),
        "all {operations} operations ran:\n{summary}"
    );
}

/// What schemathesis once found accepted though the schema forbids it.
#[tokio::test]
async fn filters_and_sizes_outside_the_schema_are_refused() {
    let app = TestApp::spawn().await;
    assert_problem(app.get("/audit?selector=%C2%9B").await, 400, "invalid_selector").await;
    let too_big =
        app.client.post(app.at("/presigned_url")).json(&json!({"content_length": 1u64 << 63})).send();
    assert_problem(too_big.await.unwrap(), 400, "invalid_content_length").await;
    // Empty items of a comma list are ignored, as the schema's pattern says.
    assert_eq!(app.get("/deployments?organization=").await.status(), 200);
    assert_eq!(app.get("/deployments?artifact_keys=a,,b").await.status(), 200);
}
