//! A mixed workload of concurrent clients, and the invariants that must hold
//! after it whatever happened meanwhile (crashes, shutdowns, races): the
//! crash, shutdown and soak tests share both.
//!
//! Every write the server acknowledged (2xx) is written down in a [`Ledger`];
//! [`verify`] then checks that each is still there and that the store as a
//! whole obeys the rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand::RngExt;
use serde_json::{Value, json};

use crate::helpers::*;

/// Stacks and their dependencies: every plan must be closed under these.
pub const STACKS: [(&str, &[&str]); 4] =
    [("base", &[]), ("net", &["base"]), ("db", &["base", "net"]), ("app", &["net", "db"])];
/// Selectors the clients share, so their writes overlap.
pub const SELECTORS: [&str; 4] = ["prod/eu", "prod/us", "staging", "dev/shared"];

/// What the server acknowledged, and what the clients saw.
#[derive(Default)]
pub struct Ledger {
    /// `(artifact key, version) -> digest` of every registered upload.
    pub versions: BTreeMap<(String, i64), String>,
    /// `(selector, revision) -> status id` of every acknowledged plan change.
    pub revisions: BTreeMap<(String, i64), String>,
    /// `(status id, artifact key) -> highest state rank` acknowledged by a report.
    pub reports: HashMap<(String, String), u8>,
    /// Triggers sent (acknowledged or not) per `(selector, artifact key)`.
    pub triggers: HashMap<(String, String), usize>,
    /// Times the observer saw an artifact's state move backwards.
    pub backwards: HashMap<(String, String), usize>,
    /// Acknowledged writes, and answers of 500 or above (with their bodies).
    pub acknowledged: usize,
    pub server_errors: Vec<String>,
}

pub type SharedLedger = Arc<Mutex<Ledger>>;

fn rank(state: &str) -> u8 {
    match state {
        "pending" => 0,
        "in_progress" => 1,
        _ => 2,
    }
}

/// One client of the workload, against the server at `url`.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    pub http: reqwest::Client,
    pub ledger: SharedLedger,
}

impl Client {
    pub fn new(url: &str, ledger: &SharedLedger) -> Self {
        Self { url: url.to_string(), http: client_with(ADMIN_TOKEN), ledger: ledger.clone() }
    }

    /// Notes a 5xx (the caller decides whether it is allowed); `None` when the
    /// request never got an answer (the server died).
    async fn send(&self, request: reqwest::RequestBuilder) -> Option<(u16, Value)> {
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        if status >= 500 {
            self.ledger.lock().unwrap().server_errors.push(format!("{status} {body}"));
        }
        Some((status, body))
    }

    /// Uploads a new version of one stack.
    pub async fn upload(&self, key: &str, deps: &[&str], content: &str) -> Option<()> {
        let (status, presigned) =
            self.send(self.http.post(format!("{}/presigned_url", self.url)).json(&json!({}))).await?;
        if status != 201 {
            return None;
        }
        let response = try_post_form(
            &self.http,
            &presigned,
            package(key, deps, content),
            &[("success_action_status", "201")],
        )
        .await?;
        if response.status() != 201 {
            return None;
        }
        let upload: Value = response.json().await.ok()?;
        let mut ledger = self.ledger.lock().unwrap();
        let version = (upload["artifact_key"].as_str()?.to_string(), upload["version"].as_i64()?);
        ledger.versions.insert(version, upload["digest"].as_str()?.to_string());
        ledger.acknowledged += 1;
        Some(())
    }

    fn record_revision(&self, deployment: &Value) {
        let (Some(selector), Some(revision), Some(status_id)) = (
            deployment["selector"].as_str(),
            deployment["revision"].as_i64(),
            deployment["status_id"].as_str(),
        ) else {
            return;
        };
        let mut ledger = self.ledger.lock().unwrap();
        ledger.revisions.insert((selector.to_string(), revision), status_id.to_string());
        ledger.acknowledged += 1;
    }

    /// Replaces a selector's plan with the first `size` stacks.
    pub async fn write_plan(&self, selector: &str, size: usize) -> Option<()> {
        let artifacts = keys(&STACKS[..size].iter().map(|(k, _)| *k).collect::<Vec<_>>());
        let body = json!({"selector": selector, "deployment_plan": {"artifacts": artifacts}});
        let (status, deployment) =
            self.send(self.http.post(format!("{}/deployments", self.url)).json(&body)).await?;
        if status == 200 || status == 201 {
            self.record_revision(&deployment);
        }
        Some(())
    }

    pub async fn add_or_remove(&self, selector: &str, key: &str, add: bool) -> Option<()> {
        let url = format!("{}/deployments/{}/artifact/{key}", self.url, segment(selector));
        let request = if add { self.http.post(url) } else { self.http.delete(url) };
        let (status, deployment) = self.send(request).await?;
        if status == 200 || status == 201 {
            self.record_revision(&deployment);
        }
        Some(())
    }

    /// Moves one artifact of the current revision forward, as an engine would.
    pub async fn report(&self, selector: &str, fail: bool) -> Option<()> {
        let (status, current) =
            self.send(self.http.get(format!("{}/deployments/{}", self.url, segment(selector)))).await?;
        let status_id = current["status_id"].as_str().filter(|_| status == 200)?.to_string();
        let path = format!("{}/deployments/{}/status/{status_id}", self.url, segment(selector));
        let (_, rollout) = self.send(self.http.get(&path)).await?;
        let artifacts = rollout["artifacts"].as_array()?;
        let ready: Vec<&str> = rollout["ready"].as_array()?.iter().filter_map(Value::as_str).collect();
        let (key, state) = if let Some(key) = ready.first() {
            (key.to_string(), "in_progress")
        } else {
            let running = artifacts.iter().find(|a| a["state"] == "in_progress")?;
            (running["artifact_key"].as_str()?.to_string(), if fail { "failed" } else { "succeeded" })
        };
        let body = json!({"state": state, "message": "from the workload"});
        let (status, _) = self.send(self.http.put(format!("{path}/artifacts/{key}")).json(&body)).await?;
        if status == 200 {
            let mut ledger = self.ledger.lock().unwrap();
            let acked = ledger.reports.entry((status_id, key)).or_default();
            *acked = (*acked).max(rank(state));
            ledger.acknowledged += 1;
        }
        Some(())
    }

    pub async fn trigger(&self, selector: &str, key: &str) -> Option<()> {
        *self.ledger.lock().unwrap().triggers.entry((selector.to_string(), key.to_string())).or_default() +=
            1;
        let body = json!({"selector": selector, "artifact_key": key});
        let (status, _) = self.send(self.http.post(format!("{}/_trigger", self.url)).json(&body)).await?;
        if status == 202 {
            self.ledger.lock().unwrap().acknowledged += 1;
        }
        Some(())
    }

    /// One operation picked at random.
    pub async fn random_operation(&self, counter: usize) {
        let (op, selector, stack, size, fail) = {
            let mut rng = rand::rng();
            (
                rng.random_range(0..100u32),
                SELECTORS[rng.random_range(0..SELECTORS.len())],
                rng.random_range(0..STACKS.len()),
                rng.random_range(1..=STACKS.len()),
                rng.random_bool(0.1),
            )
        };
        let (key, deps) = STACKS[stack];
        let _ = match op {
            // Every fifth upload is a few MiB, so kills land mid-upload too.
            0..10 if counter.is_multiple_of(5) => {
                let filler = "x".repeat(3 * 1024 * 1024);
                self.upload(
                    key,
                    deps,
                    &format!("{key} {counter} {} {filler}", stackyard_testkit::random_hex(4)),
                )
                .await
            }
            0..10 => {
                self.upload(key, deps, &format!("{key} {counter} {}", stackyard_testkit::random_hex(4))).await
            }
            10..35 => self.write_plan(selector, size).await,
            35..50 => self.add_or_remove(selector, key, true).await,
            50..62 => self.add_or_remove(selector, key, false).await,
            62..92 => self.report(selector, fail).await,
            _ => self.trigger(selector, key).await,
        };
    }
}

/// Uploads one version of every stack and gives every selector a full plan.
pub async fn seed(client: &Client) {
    for (key, deps) in STACKS {
        client.upload(key, deps, &format!("{key} seed")).await.expect("seeding uploads");
    }
    for selector in SELECTORS {
        client.write_plan(selector, STACKS.len()).await.expect("seeding plans");
    }
}

/// `workers` clients doing random operations until `stop` is set, plus one
/// observer that watches every selector's rollout for states moving back.
pub fn start(client: &Client, workers: usize, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (client, stop) = (client.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut counter = worker * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                client.random_operation(counter).await;
                counter += 1;
            }
        }));
    }
    let (client, stop) = (client.clone(), stop.clone());
    tasks.push(tokio::spawn(async move {
        let mut seen: HashMap<(String, String), u8> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            for selector in SELECTORS {
                observe(&client, selector, &mut seen).await;
            }
        }
    }));
    tasks
}

async fn observe(client: &Client, selector: &str, seen: &mut HashMap<(String, String), u8>) -> Option<()> {
    let current =
        client.http.get(format!("{}/deployments/{}", client.url, segment(selector))).send().await.ok()?;
    let current: Value = current.json().await.ok()?;
    let status_id = current["status_id"].as_str()?;
    let path = format!("{}/deployments/{}/status/{status_id}", client.url, segment(selector));
    let rollout: Value = client.http.get(path).send().await.ok()?.json().await.ok()?;
    for artifact in rollout["artifacts"].as_array()? {
        let key = artifact["artifact_key"].as_str()?.to_string();
        let now = rank(artifact["state"].as_str()?);
        let before = seen.insert((status_id.to_string(), key.clone()), now);
        if before.is_some_and(|b| now < b) {
            *client.ledger.lock().unwrap().backwards.entry((selector.to_string(), key)).or_default() += 1;
        }
    }
    Some(())
}

async fn get(client: &Client, path: &str) -> Value {
    let response = client.http.get(format!("{}{path}", client.url)).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

/// All pages of a list.
async fn all(client: &Client, path: &str, field: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            None => get(client, &format!("{path}{separator}limit=500")).await,
            Some(c) => get(client, &format!("{path}{separator}limit=500&cursor={c}")).await,
        };
        items.extend(page[field].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return items,
        }
    }
}

/// What [`verify`] counted.
#[derive(Debug, Default)]
pub struct Checked {
    pub versions: usize,
    pub revisions: usize,
    pub events: usize,
}

/// Checks every acknowledged write is there and the store obeys the rules:
/// every version's package is complete and matches its digest; revisions are
/// contiguous per selector, each has its event, in order, and each plan holds
/// every dependency of its artifacts; acknowledged reports still stand
/// unless a trigger reset them.
pub async fn verify(client: &Client) -> Checked {
    let ledger = client.ledger.lock().unwrap().versions.clone();
    let mut checked = Checked::default();
    // Versions: acknowledged ones kept; every one stored has its whole package.
    let mut stored = BTreeMap::new();
    for (key, _) in STACKS {
        let artifact = get(client, &format!("/artifacts/{key}")).await;
        for version in artifact["versions"].as_array().unwrap() {
            let number = version["version"].as_i64().unwrap();
            let digest = version["digest"].as_str().unwrap().to_string();
            let download = format!("{}/artifacts/{key}/versions/{number}/download", client.url);
            let bytes = client.http.get(download).send().await.unwrap().bytes().await.unwrap();
            assert_eq!(
                format!("sha256:{}", sha256_hex(&bytes)),
                digest,
                "{key} v{number}: its bytes match its digest"
            );
            assert_eq!(bytes.len() as u64, version["size"].as_u64().unwrap());
            stored.insert((key.to_string(), number), digest);
            checked.versions += 1;
        }
    }
    for (version, digest) in &ledger {
        assert_eq!(stored.get(version), Some(digest), "acknowledged upload {version:?} is kept");
    }

    // Revisions: contiguous, each acknowledged one kept, each plan valid.
    let acknowledged = client.ledger.lock().unwrap().revisions.clone();
    let mut revisions_of: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for selector in SELECTORS {
        let listed = all(client, &format!("/deployments/{}/revisions", segment(selector)), "revisions").await;
        let mut numbers: Vec<i64> = listed.iter().map(|r| r["revision"].as_i64().unwrap()).collect();
        numbers.reverse();
        let expected: Vec<i64> = (1..=numbers.len() as i64).collect();
        assert_eq!(numbers, expected, "{selector}: revisions are contiguous");
        for revision in &listed {
            let status_id = revision["status_id"].as_str().unwrap();
            let number = revision["revision"].as_i64().unwrap();
            if let Some(acked) = acknowledged.get(&(selector.to_string(), number)) {
                assert_eq!(acked, status_id, "{selector} revision {number} is the acknowledged one");
            }
            let rollout =
                get(client, &format!("/deployments/{}/status/{status_id}", segment(selector))).await;
            assert_plan_is_closed(selector, number, &rollout);
            assert_reports_stand(client, selector, status_id, &rollout);
            checked.revisions += 1;
        }
        revisions_of.insert(selector.to_string(), numbers);
    }
    for (selector, revision) in acknowledged.keys() {
        assert!(
            revisions_of[selector].contains(revision),
            "acknowledged {selector} revision {revision} is kept"
        );
    }

    // Events: one per revision, in order per selector, ids increasing.
    let events = all(client, "/events?after=0", "events").await;
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "event ids increase");
    let mut announced: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for event in events.iter().filter(|e| e["type"] == "deployment.revision_created") {
        let selector = event["selector"].as_str().unwrap().to_string();
        announced.entry(selector).or_default().push(event["data"]["revision"].as_i64().unwrap());
    }
    for (selector, numbers) in &revisions_of {
        assert_eq!(
            announced.get(selector).cloned().unwrap_or_default(),
            *numbers,
            "{selector}: every revision announced once, in order"
        );
    }
    checked.events = events.len();
    checked
}

fn assert_plan_is_closed(selector: &str, revision: i64, rollout: &Value) {
    let keys: BTreeSet<&str> = rollout["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["artifact_key"].as_str().unwrap())
        .collect();
    for key in &keys {
        let deps = STACKS.iter().find(|(k, _)| k == key).map(|(_, d)| *d).unwrap_or_default();
        for dep in deps {
            assert!(
                keys.contains(dep),
                "{selector} revision {revision}: {key} is there without {dep}: {keys:?}"
            );
        }
    }
}

fn assert_reports_stand(client: &Client, selector: &str, status_id: &str, rollout: &Value) {
    let ledger = client.ledger.lock().unwrap();
    for artifact in rollout["artifacts"].as_array().unwrap() {
        let key = artifact["artifact_key"].as_str().unwrap().to_string();
        let Some(acked) = ledger.reports.get(&(status_id.to_string(), key.clone())) else { continue };
        let triggered = ledger.triggers.get(&(selector.to_string(), key.clone())).copied().unwrap_or(0);
        if triggered == 0 {
            let now = rank(artifact["state"].as_str().unwrap());
            assert!(now >= *acked, "{selector} {key}: an acknowledged report was lost");
        }
    }
}

/// States only move forward: each backwards step the observer saw is one
/// a trigger for that artifact explains.
pub fn assert_states_moved_forward(ledger: &Ledger) {
    for ((selector, key), count) in &ledger.backwards {
        let triggers = ledger.triggers.get(&(selector.clone(), key.clone())).copied().unwrap_or(0);
        assert!(*count <= triggers, "{selector} {key} moved back {count} times with {triggers} triggers");
    }
}
