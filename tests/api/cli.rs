//! The `stackyard` binary as a user or a CI pipeline runs it, against a real server.

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};

use crate::helpers::*;

/// A finished CLI run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// Runs the binary against `app`, in `dir`, with its own client configuration.
fn command(app: &TestApp, dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary());
    command
        .args(args)
        .current_dir(dir)
        .env("STACKYARD_URL", &app.url)
        .env("STACKYARD_CLIENT_CONFIG", dir.join("client.toml"))
        .env("STACKYARD_TOKEN", ADMIN_TOKEN)
        .env_remove("STACKYARD_PROFILE")
        .stdin(Stdio::null());
    command
}

async fn run(app: &TestApp, dir: &Path, args: &[&str]) -> Run {
    let output = command(app, dir, args).output().await.unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/packages")
}

/// Packages and pushes the example packages.
async fn push_examples(app: &TestApp, dir: &Path) {
    for name in ["network", "iam-baseline", "database", "app", "monitoring"] {
        let source = examples().join(name);
        run(app, dir, &["package", source.to_str().unwrap(), "-f", &format!("{name}.tar.gz")]).await.ok();
    }
    let pushed = run(
        app,
        dir,
        &[
            "push",
            "network.tar.gz",
            "iam-baseline.tar.gz",
            "database.tar.gz",
            "app.tar.gz",
            "monitoring.tar.gz",
        ],
    )
    .await
    .ok();
    assert_eq!(pushed.stdout.lines().filter(|l| l.starts_with("pushed ")).count(), 5, "{}", pushed.stdout);
}

const PLAN: &str = "organization: acme\nartifacts:\n  - key: network\n  - key: iam-baseline\n  - key: database\n  - key: app\n";

#[tokio::test]
async fn push_packages_and_read_them_back() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    push_examples(&app, d).await;

    let again = run(&app, d, &["push", "network.tar.gz"]).await.ok();
    assert!(again.stdout.starts_with("already exists network  version 1"), "{}", again.stdout);
    for text in [&again.stdout, &again.stderr] {
        assert!(!text.contains('\x1b'), "no escape codes without a terminal: {text:?}");
    }

    let json = run(&app, d, &["push", "app.tar.gz", "-o", "json"]).await.ok().json();
    assert_eq!(json[0]["artifact_key"], "app");
    assert_eq!(json[0]["created"], false);

    let wrong = run(&app, d, &["push", "app.tar.gz", "--sha256", &"0".repeat(64)]).await;
    assert_eq!(wrong.code, 4, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("nothing was uploaded"));
    let right = sha256_hex(&std::fs::read(d.join("app.tar.gz")).unwrap());
    run(&app, d, &["push", "app.tar.gz", "--sha256", &right]).await.ok();

    let listed = run(&app, d, &["artifacts", "ls", "-o", "json"]).await.ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 5);
    let versions = run(&app, d, &["artifacts", "versions", "app", "-o", "yaml"]).await.ok();
    assert!(versions.stdout.contains("artifact_key: app"), "{}", versions.stdout);
    run(&app, d, &["artifacts", "download", "network@1", "-f", "back.tar.gz"]).await.ok();
    assert_eq!(
        std::fs::read(d.join("back.tar.gz")).unwrap(),
        std::fs::read(d.join("network.tar.gz")).unwrap()
    );
    let dependents = run(&app, d, &["artifacts", "dependents", "network", "-o", "json"]).await.ok().json();
    assert_eq!(dependents["artifacts"].as_array().unwrap().len(), 2);

    // A presigned PUT works the same way.
    std::fs::write(source_copy(d), "changed").unwrap();
    run(&app, d, &["package", d.join("net2").to_str().unwrap(), "-f", "net2.tar.gz"]).await.ok();
    let put = run(&app, d, &["push", "--put", "net2.tar.gz", "-o", "json"]).await.ok().json();
    assert_eq!((put[0]["artifact_key"].as_str(), put[0]["version"].as_i64()), (Some("network"), Some(2)));

    run(&app, d, &["artifacts", "rm", "network@2"]).await.ok();
    assert_eq!(run(&app, d, &["artifacts", "rm", "network@2"]).await.code, 3);
    assert_eq!(run(&app, d, &["artifacts", "rm", "network"]).await.code, 2, "a version must be named");
    let verbose = run(&app, d, &["--verbose", "artifacts", "ls"]).await.ok();
    assert!(verbose.stderr.contains(&format!("server {}", app.url)), "{}", verbose.stderr);
}

/// A copy of the network example with one file changed, in `dir/net2`.
fn source_copy(dir: &Path) -> std::path::PathBuf {
    let copy = dir.join("net2");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(examples().join("network")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
    }
    copy.join("main.tf")
}

#[tokio::test]
async fn package_checks_the_manifest_first() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = d.join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("manifest.yaml"), "depends_on: 3\n").unwrap();
    let refused = run(&app, d, &["package", "bad", "-f", "bad.tar.gz"]).await;
    assert_eq!(refused.code, 4);
    assert!(refused.stderr.contains("stack_name is required"), "{}", refused.stderr);
    assert!(!d.join("bad.tar.gz").exists(), "nothing is written for a bad manifest");

    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_eq!(run(&app, d, &["package", "empty", "-f", "x.tar.gz"]).await.code, 2);
    let source = examples().join("monitoring");
    let zip =
        run(&app, d, &["package", source.to_str().unwrap(), "-f", "m.zip", "-o", "json"]).await.ok().json();
    assert_eq!((zip["format"].as_str(), zip["artifact_key"].as_str()), (Some("zip"), Some("monitoring")));
    assert_eq!(run(&app, d, &["package", source.to_str().unwrap(), "-f", "m.rar"]).await.code, 2);
}

#[tokio::test]
async fn deploy_shows_the_diff_and_refuses_a_stale_one() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    push_examples(&app, d).await;
    std::fs::write(d.join("plan.yaml"), PLAN).unwrap();

    let no_terminal = run(&app, d, &["deploy", "prod/eu", "-f", "plan.yaml"]).await;
    assert_eq!(no_terminal.code, 2, "without a terminal, --yes is required");
    assert!(no_terminal.stderr.contains("+ network 1"), "the diff is shown first: {}", no_terminal.stderr);
    assert_problem(app.get("/deployments/prod%2Feu").await, 404, "not_found").await;

    let applied =
        run(&app, d, &["deploy", "prod/eu", "-f", "plan.yaml", "--yes", "-o", "json"]).await.ok().json();
    assert_eq!(applied["applied"], true);
    assert_eq!(applied["deployment"]["revision"], 1);
    assert_eq!(applied["deployment"]["organization"], "acme");

    // Review a change, then someone else changes the deployment, then apply the reviewed diff.
    let reviewed = run(&app, d, &["deploy", "prod/eu", "--add", "monitoring", "--dry-run", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(reviewed["applied"], false);
    assert_eq!(
        reviewed["deployment"]["diff"]["added"],
        json!([{"artifact_key": "monitoring", "version": 1}])
    );
    let based_on = reviewed["based_on"].as_str().unwrap().to_string();
    let meanwhile =
        app.client.post(app.at("/deployments/prod%2Feu/artifact/monitoring")).send().await.unwrap();
    assert_eq!(meanwhile.status(), 200);
    let stale =
        run(&app, d, &["deploy", "prod/eu", "--remove", "monitoring", "--yes", "--if-match", &based_on])
            .await;
    assert_eq!(stale.code, 4, "{}", stale.stderr);
    assert!(stale.stderr.contains("changed since this diff was computed"), "{}", stale.stderr);
    assert_eq!(app.get_json("/deployments/prod%2Feu").await["revision"], 2, "nothing was applied");

    let unchanged = run(&app, d, &["deploy", "prod/eu", "--add", "monitoring", "--yes"]).await.ok();
    assert!(unchanged.stderr.contains("no changes"), "{}", unchanged.stderr);
    let removed = run(&app, d, &["deploy", "prod/eu", "--remove", "monitoring", "--yes"]).await.ok();
    assert!(removed.stdout.contains("revision 3"), "{}", removed.stdout);

    let invalid = run(&app, d, &["deploy", "prod/eu", "--remove", "network", "--yes"]).await;
    assert_eq!(invalid.code, 4);
    assert!(
        invalid.stderr.contains("database needs network, which is not in the plan"),
        "{}",
        invalid.stderr
    );

    let got = run(&app, d, &["get", "prod/eu", "-o", "json"]).await.ok().json();
    assert_eq!(got["revision"], 3);
    let history = run(&app, d, &["history", "prod/eu"]).await.ok();
    assert_eq!(history.stdout.lines().count(), 4, "a header and three revisions: {}", history.stdout);
    let listed = run(&app, d, &["ls", "--org", "acme", "--artifact", "app", "-o", "json"]).await.ok().json();
    assert_eq!(listed[0]["selector"], "prod/eu");
    assert_eq!(run(&app, d, &["deploy", "prod/eu"]).await.code, 2, "a plan file or --add/--remove is needed");
    run(&app, d, &["rm", "prod/eu", "--yes"]).await.ok();
    assert_eq!(run(&app, d, &["get", "prod/eu"]).await.code, 3);
}

#[tokio::test]
async fn status_watch_follows_the_rollout_an_engine_advances() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    push_examples(&app, d).await;
    std::fs::write(d.join("plan.yaml"), PLAN).unwrap();
    let deployed =
        run(&app, d, &["deploy", "prod", "-f", "plan.yaml", "--yes", "-o", "json"]).await.ok().json();
    let id = deployed["deployment"]["status_id"].as_str().unwrap().to_string();

    let mut watcher = command(&app, d, &["status", "prod", "--watch", "--interval", "0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Collect the watcher's output as it is printed.
    let shown = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watcher.stdout.take().unwrap()));
    let sink = shown.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    let wait_for = |needle: String| {
        let shown = shown.clone();
        async move {
            for _ in 0..200 {
                if shown.lock().unwrap().contains(&needle) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("the watcher never showed {needle:?}:\n{}", shown.lock().unwrap());
        }
    };
    wait_for("[ ] network @1  pending".into()).await;
    for key in ["network", "iam-baseline", "database", "app"] {
        for (state, marker) in [("in_progress", "[~]"), ("succeeded", "[+]")] {
            let run =
                run(&app, d, &["report", "prod", &id, key, state, "-m", &format!("{key} {state}")]).await;
            assert_eq!(run.code, 0, "{}", run.stderr);
            // Each step shows up live, before the next one is reported.
            wait_for(format!("{marker} {key} @1  {state}")).await;
        }
    }
    let status = watcher.wait().await.unwrap();
    reader.await.unwrap();
    let stdout = shown.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("wave 2\n  [+] app @1  succeeded"), "{stdout}");
    assert!(!stdout.contains('\x1b'));

    // Out of order: the guard's answer is a conflict.
    run(&app, d, &["trigger", "prod", "network"]).await.ok();
    run(&app, d, &["trigger", "prod", "database"]).await.ok();
    let early = run(&app, d, &["report", "prod", &id, "database", "in_progress"]).await;
    assert_eq!(early.code, 4, "{}", early.stderr);
    assert!(early.stderr.contains("network has not succeeded yet"), "{}", early.stderr);
    run(&app, d, &["report", "prod", &id, "network", "failed"]).await.ok();
    let failed = run(&app, d, &["status", "prod", &id]).await;
    assert_eq!(failed.code, 1, "a failed rollout exits 1: {}", failed.stdout);
}

#[tokio::test]
async fn graph_prints_dot_mermaid_and_text() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    push_examples(&app, d).await;
    std::fs::write(d.join("plan.yaml"), PLAN).unwrap();
    run(&app, d, &["deploy", "prod", "-f", "plan.yaml", "--yes"]).await.ok();
    let dot = run(&app, d, &["graph", "prod", "--format", "dot"]).await.ok().stdout;
    assert!(dot.starts_with("digraph \"prod\" {"), "{dot}");
    assert!(dot.contains("\"network\" -> \"database\";"), "{dot}");
    assert!(dot.contains("{ rank=same; /* wave 0 */ \"iam-baseline\"; \"network\"; }"), "{dot}");
    let mermaid = run(&app, d, &["graph", "prod", "--format", "mermaid"]).await.ok().stdout;
    assert!(mermaid.contains("flowchart LR") && mermaid.contains("database --> app"), "{mermaid}");
    let text = run(&app, d, &["graph", "prod"]).await.ok().stdout;
    assert!(text.contains("wave 2\n  app@1  <- database, network"), "{text}");
}

#[tokio::test]
async fn exit_codes_tell_error_classes_apart() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(run(&app, d, &["get", "nothing"]).await.code, 3, "not found");
    assert_eq!(run(&app, d, &["artifacts", "show", "nothing"]).await.code, 3);
    assert_eq!(run(&app, d, &["deploy", "x", "--add", "ghost", "--yes"]).await.code, 4, "validation");
    assert_eq!(run(&app, d, &["status", "x", "--interval", "0"]).await.code, 2, "usage");
    assert_eq!(run(&app, d, &["no-such-verb"]).await.code, 2, "usage");
    let down = run(&app, d, &["--server", "http://127.0.0.1:1", "ls"]).await;
    assert_eq!(down.code, 5, "network: {}", down.stderr);
    assert!(down.stderr.starts_with("error: cannot reach the server"));
    assert_eq!(run(&app, d, &["--profile", "missing", "ls"]).await.code, 2);
}

#[tokio::test]
async fn login_saves_a_profile_that_later_commands_use() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = run(&app, d, &["login", "--name", "local", "--token", "not-a-token"]).await;
    assert_eq!(bad.code, 6, "a bad token is refused: {}", bad.stderr);
    assert!(!d.join("client.toml").exists(), "and nothing is saved");
    run(&app, d, &["login", "--name", "local", "--token", ADMIN_TOKEN]).await.ok();
    let saved = std::fs::read_to_string(d.join("client.toml")).unwrap();
    assert!(saved.contains("[profiles.local]") && saved.contains(&app.url), "{saved}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("client.toml")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the file holds tokens");
    }
    let mut without_url = command(&app, d, &["ls", "-o", "json"]);
    without_url.env_remove("STACKYARD_URL").env_remove("STACKYARD_TOKEN");
    let output = without_url.output().await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let refused = run(&app, d, &["--server", "http://127.0.0.1:1", "login"]).await;
    assert_eq!(refused.code, 5);
}

#[tokio::test]
async fn completions_and_help_describe_the_commands() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let bash = run(&app, dir.path(), &["completions", "bash"]).await.ok().stdout;
    assert!(bash.contains("stackyard") && bash.contains("deploy"));
    let help = run(&app, dir.path(), &["--help"]).await.ok().stdout;
    for verb in [
        "serve",
        "push",
        "package",
        "artifacts",
        "deploy",
        "status",
        "report",
        "trigger",
        "graph",
        "login",
        "Exit codes",
    ] {
        assert!(help.contains(verb), "--help mentions {verb}");
    }
    let deploy = run(&app, dir.path(), &["deploy", "--help"]).await.ok().stdout;
    assert!(deploy.contains("--if-match") && deploy.contains("A plan file"));
}

/// The README's CLI walk-through, run line by line as a user would.
#[tokio::test]
async fn the_readme_walk_through_runs() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("<!-- walk-through:begin -->").expect("the README marks its walk-through");
    let end = readme.find("<!-- walk-through:end -->").unwrap();
    let bin_dir = binary().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut script = Vec::new();
    let mut in_code = false;
    for line in readme[start..end].lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if in_code {
            script.push(line);
        }
    }
    let ran = script.iter().filter(|l| l.starts_with("stackyard ")).count();
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script.join("\n")])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .env("PATH", &path)
        .env("STACKYARD_URL", &app.url)
        .env("STACKYARD_CLIENT_CONFIG", dir.path().join("client.toml"))
        .env("STACKYARD_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the README walk-through failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(ran >= 8, "the walk-through has its commands ({ran})");
}

#[tokio::test]
async fn tokens_are_managed_from_the_command_line() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created = run(
        &app,
        d,
        &["token", "create", "--name", "ci", "--role", "publisher", "--selector", "prod/*", "-o", "json"],
    )
    .await
    .ok()
    .json();
    let (id, secret) = (created["id"].as_str().unwrap(), created["token"].as_str().unwrap());
    let listed = run(&app, d, &["token", "ls"]).await.ok().stdout;
    assert!(listed.contains(id) && listed.contains("publisher") && listed.contains("prod/*"), "{listed}");
    assert!(!listed.contains(secret), "listings never show secrets");

    let mut as_ci = command(&app, d, &["artifacts", "ls"]);
    as_ci.env("STACKYARD_TOKEN", secret);
    assert!(as_ci.output().await.unwrap().status.success());
    let mut forbidden = command(&app, d, &["token", "ls"]);
    forbidden.env("STACKYARD_TOKEN", secret);
    assert_eq!(forbidden.output().await.unwrap().status.code(), Some(6), "a publisher cannot manage tokens");

    run(&app, d, &["token", "revoke", id]).await.ok();
    let mut revoked = command(&app, d, &["artifacts", "ls"]);
    revoked.env("STACKYARD_TOKEN", secret);
    let output = revoked.output().await.unwrap();
    assert_eq!(output.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&output.stderr).contains("revoked"));
    assert_eq!(run(&app, d, &["token", "create", "--name", "x", "--role", "root"]).await.code, 4);
}
