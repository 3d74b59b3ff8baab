//! The behaviour every metadata store must have, written once against the
//! trait. Each test runs on SQLite and on PostgreSQL, each time on a fresh
//! database of its own (PostgreSQL tests skip, saying so, when no server is
//! reachable; see `stackyard-testkit`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use stackyard_core::manifest::ManifestSyntax;
use stackyard_core::{ArtifactKey, Digest, Manifest, PackageFormat, Selector, VersionRef};
use stackyard_store::*;

/// Keeps a backend's database alive for the test.
enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] stackyard_testkit::TestDatabase),
}

async fn sqlite() -> Option<(Arc<SqlStore>, Guard)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open_sqlite(&dir.path().join("meta.db")).await.unwrap();
    Some((Arc::new(store), Guard::Sqlite(dir)))
}

async fn postgres() -> Option<(Arc<SqlStore>, Guard)> {
    let db = stackyard_testkit::TestDatabase::create().await?;
    let store = SqlStore::connect_postgres(&db.url, 8).await.unwrap();
    Some((Arc::new(store), Guard::Postgres(db)))
}

fn new_upload(id: &str, expires_in: i64) -> NewUpload {
    let now = Utc::now();
    NewUpload {
        upload_id: id.to_string(),
        method: "POST".into(),
        filename: None,
        min_size: 1,
        max_size: 100,
        sha256: None,
        labels: BTreeMap::new(),
        created_at: now,
        expires_at: now + Duration::seconds(expires_in),
        created_by: Some("tester".into()),
        direct: false,
    }
}

fn new_version(stack_name: &str, depends_on: &[&str], content: &str, labels: &[(&str, &str)]) -> NewVersion {
    let manifest = serde_json::to_vec(&json!({"stack_name": stack_name, "depends_on": depends_on})).unwrap();
    NewVersion {
        digest: Digest::from_sha256(&sha(content)),
        size: content.len() as u64,
        format: PackageFormat::TarGz,
        manifest: Manifest::parse(&manifest, ManifestSyntax::Json).unwrap(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        uploaded_at: Utc::now(),
    }
}

fn sha(content: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(content.as_bytes()).to_vec()
}

async fn register(store: &dyn MetadataStore, id: &str, version: &NewVersion) -> Registered {
    store.create_upload(&new_upload(id, 60)).await.unwrap();
    store.claim_upload(id, Utc::now()).await.unwrap();
    store.register_version(id, version, &tester()).await.unwrap()
}

fn tester() -> Actor {
    Actor { name: "tester".into(), token_id: Some("tok_t".into()), remote_addr: Some("127.0.0.1".into()) }
}

fn key(k: &str) -> ArtifactKey {
    ArtifactKey::parse(k).unwrap()
}

macro_rules! conformance {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some((store, _guard)) = super::$backend().await else { return };
                    super::$test(store.as_ref()).await;
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($($test:ident),* $(,)?) => {
        conformance!(sqlite: $($test),*);
        conformance!(postgres: $($test),*);
    };
}

every_backend!(
    uploads_are_claimed_exactly_once,
    expired_uploads_cannot_be_claimed,
    identical_digests_register_once,
    version_numbers_are_never_reused,
    listing_filters_and_pages,
    interrupted_uploads_are_rejected,
    dependents_come_from_every_version,
    concurrent_plan_writers_get_contiguous_revisions,
    plan_writes_carry_their_event_and_index,
    dry_runs_and_unchanged_plans_store_nothing,
    tokens_are_found_by_hash_and_revoked,
    changes_are_audited_with_their_transaction,
    sink_leases_have_one_owner,
    racing_uploads_of_one_key_get_distinct_numbers,
    racing_first_writes_create_one_deployment,
    scoped_queries_match_selector_globs,
    revoking_admins_concurrently_keeps_one,
    reads_of_the_current_revision_see_each_write,
);

async fn uploads_are_claimed_exactly_once(store: &dyn MetadataStore) {
    store.create_upload(&new_upload("u1", 60)).await.unwrap();
    let claims = (0..16).map(|_| store.claim_upload("u1", Utc::now()));
    let results = futures::future::join_all(claims).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, StoreError::UploadAlreadyUsed))
    );
    assert!(matches!(store.claim_upload("nope", Utc::now()).await, Err(StoreError::NotFound)));
}

async fn expired_uploads_cannot_be_claimed(store: &dyn MetadataStore) {
    store.create_upload(&new_upload("old", -1)).await.unwrap();
    assert!(matches!(store.claim_upload("old", Utc::now()).await, Err(StoreError::UploadExpired)));
}

async fn identical_digests_register_once(store: &dyn MetadataStore) {
    let version = new_version("net", &[], "same", &[]);
    let first = register(store, "u1", &version).await;
    let second = register(store, "u2", &version).await;
    assert!(first.created && !second.created);
    assert_eq!(first.version, second.version);
    let upload = store.get_upload("u2").await.unwrap();
    assert_eq!(upload.state, StoredUploadState::Registered);
    assert_eq!(upload.created, Some(false));
    assert_eq!(store.get_artifact(&key("net")).await.unwrap().versions.len(), 1);
}

async fn version_numbers_are_never_reused(store: &dyn MetadataStore) {
    for (i, content) in ["a", "b", "c"].iter().enumerate() {
        let registered = register(store, &format!("u{i}"), &new_version("net", &[], content, &[])).await;
        assert_eq!(registered.version.version, i as i64 + 1);
    }
    let deleted = store.delete_version(&key("net"), &VersionRef::Number(3), &tester()).await.unwrap();
    assert_eq!(deleted.version, 3);
    let digest = Digest::parse(&deleted.digest).unwrap();
    assert!(!store.digest_in_use(&digest).await.unwrap());
    assert_eq!(store.get_artifact(&key("net")).await.unwrap().summary.latest_version, 2);
    let next = register(store, "u9", &new_version("net", &[], "d", &[])).await;
    assert_eq!(next.version.version, 4);
    let by_digest = VersionRef::Digest(Digest::parse(&next.version.digest).unwrap());
    assert_eq!(store.get_version(&key("net"), &by_digest).await.unwrap().version, 4);
    assert!(matches!(
        store.get_version(&key("net"), &VersionRef::Number(3)).await,
        Err(StoreError::NotFound)
    ));
}

async fn listing_filters_and_pages(store: &dyn MetadataStore) {
    register(store, "u1", &new_version("net-a", &[], "1", &[("team", "net")])).await;
    register(store, "u2", &new_version("net-b", &[], "2", &[("team", "web")])).await;
    register(store, "u3", &new_version("app", &[], "3", &[("team", "net")])).await;
    let keys = |list: Vec<stackyard_api::ArtifactSummary>| {
        list.into_iter().map(|a| a.artifact_key).collect::<Vec<_>>()
    };
    let all = store.list_artifacts(&ArtifactQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(keys(all), ["app", "net-a", "net-b"]);
    let prefixed = ArtifactQuery { prefix: Some("net".into()), limit: 10, ..Default::default() };
    assert_eq!(keys(store.list_artifacts(&prefixed).await.unwrap()), ["net-a", "net-b"]);
    let labelled =
        ArtifactQuery { labels: vec![("team".into(), "net".into())], limit: 10, ..Default::default() };
    assert_eq!(keys(store.list_artifacts(&labelled).await.unwrap()), ["app", "net-a"]);
    let page = ArtifactQuery { after: Some("app".into()), limit: 1, ..Default::default() };
    assert_eq!(keys(store.list_artifacts(&page).await.unwrap()), ["net-a"]);
}

async fn interrupted_uploads_are_rejected(store: &dyn MetadataStore) {
    store.create_upload(&new_upload("cut", 60)).await.unwrap();
    store.create_upload(&new_upload("waiting", 60)).await.unwrap();
    store.claim_upload("cut", Utc::now()).await.unwrap();
    let problem = json!({"type": "urn:stackyard:problem:upload_interrupted"});
    assert_eq!(store.reject_interrupted_uploads(&problem).await.unwrap(), 1);
    let cut = store.get_upload("cut").await.unwrap();
    assert_eq!(cut.state, StoredUploadState::Rejected);
    assert_eq!(cut.error, Some(problem));
    assert_eq!(store.get_upload("waiting").await.unwrap().state, StoredUploadState::Pending);
}

async fn dependents_come_from_every_version(store: &dyn MetadataStore) {
    register(store, "u1", &new_version("network", &[], "n", &[])).await;
    register(store, "u2", &new_version("app", &["network"], "a1", &[])).await;
    register(store, "u3", &new_version("app", &[], "a2", &[])).await;
    let dependents = store.dependents(&key("network")).await.unwrap();
    assert_eq!(dependents.artifacts.len(), 1);
    assert_eq!(dependents.artifacts[0].artifact_key, "app");
    assert_eq!(dependents.artifacts[0].versions, [1]);
}

#[tokio::test]
async fn sqlite_data_survives_reopening_and_passes_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    {
        let store = SqlStore::open_sqlite(&path).await.unwrap();
        register(&store, "u1", &new_version("net", &[], "x", &[])).await;
    }
    let store = SqlStore::open_sqlite(&path).await.unwrap();
    assert_eq!(store.get_artifact(&key("net")).await.unwrap().summary.latest_version, 1);
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
}

fn pin(selector: &str, key: &str) -> PlanWrite {
    PlanWrite {
        selector: Selector::parse(selector).unwrap(),
        change: PlanChange::Pin { artifact_key: ArtifactKey::parse(key).unwrap(), version: None },
        preconditions: Preconditions::default(),
        dry_run: false,
        actor: tester(),
    }
}

fn deployment_of(outcome: PlanOutcome) -> stackyard_api::Deployment {
    match outcome {
        PlanOutcome::Created(d) | PlanOutcome::Revised(d) | PlanOutcome::Unchanged(d) => d,
    }
}

async fn concurrent_plan_writers_get_contiguous_revisions(store: &dyn MetadataStore) {
    for i in 0..16 {
        register(store, &format!("u{i}"), &new_version(&format!("svc{i}"), &[], &format!("{i}"), &[])).await;
    }
    let writes: Vec<PlanWrite> = (0..16).map(|i| pin("shared", &format!("svc{i}"))).collect();
    let outcomes = futures::future::join_all(writes.iter().map(|w| store.write_plan(w))).await;
    let mut revisions: Vec<i64> = outcomes.into_iter().map(|o| deployment_of(o.unwrap()).revision).collect();
    revisions.sort();
    assert_eq!(revisions, (1..=16).collect::<Vec<_>>());
    let selector = Selector::parse("shared").unwrap();
    assert_eq!(store.get_deployment(&selector).await.unwrap().artifacts.len(), 16);
}

async fn plan_writes_carry_their_event_and_index(store: &dyn MetadataStore) {
    register(store, "u1", &new_version("net", &[], "n", &[])).await;
    let created = deployment_of(store.write_plan(&pin("prod", "net")).await.unwrap());
    let events = store.list_events(0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "deployment.revision_created");
    assert_eq!(events[0].data["status_id"], created.status_id.as_str());
    assert_eq!(store.dependents(&key("net")).await.unwrap().selectors, ["prod"]);
    assert!(matches!(
        store.delete_version(&key("net"), &VersionRef::Number(1), &tester()).await,
        Err(StoreError::VersionInUse { selectors }) if selectors == ["prod"]
    ));
    let (now, lease) = (Utc::now(), Duration::seconds(30));
    assert_eq!(store.claim_sink("hook", "r1", now, lease).await.unwrap(), Some(0));
    assert!(store.advance_sink("hook", "r1", events[0].id, now, lease).await.unwrap());
    assert!(store.advance_sink("hook", "r1", 0, now, lease).await.unwrap());
    assert_eq!(store.sink_position("hook").await.unwrap(), events[0].id, "positions never move back");
}

async fn dry_runs_and_unchanged_plans_store_nothing(store: &dyn MetadataStore) {
    register(store, "u1", &new_version("net", &[], "n", &[])).await;
    let mut dry = pin("prod", "net");
    dry.dry_run = true;
    assert!(matches!(store.write_plan(&dry).await.unwrap(), PlanOutcome::Created(_)));
    let selector = Selector::parse("prod").unwrap();
    assert!(matches!(store.get_deployment(&selector).await, Err(StoreError::NotFound)));
    store.write_plan(&pin("prod", "net")).await.unwrap();
    assert!(matches!(store.write_plan(&pin("prod", "net")).await.unwrap(), PlanOutcome::Unchanged(_)));
    assert_eq!(store.list_revisions(&selector, None, 10).await.unwrap().len(), 1);
    assert_eq!(store.list_events(0, 10).await.unwrap().len(), 1);
}

async fn tokens_are_found_by_hash_and_revoked(store: &dyn MetadataStore) {
    let now = Utc::now();
    assert!(!store.has_active_admin(now).await.unwrap());
    let info = stackyard_api::TokenInfo {
        id: "tok_1".into(),
        name: "admin".into(),
        role: "admin".into(),
        organizations: vec![],
        selectors: vec!["prod/*".into()],
        expires_at: None,
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    store
        .create_token(&TokenRecord { info: info.clone(), secret_hash: "hash-1".into() }, &tester())
        .await
        .unwrap();
    assert!(store.has_active_admin(now).await.unwrap());
    assert_eq!(store.token_by_hash("hash-1").await.unwrap().unwrap().selectors, ["prod/*"]);
    assert!(store.token_by_hash("hash-2").await.unwrap().is_none());
    let duplicate = TokenRecord {
        info: stackyard_api::TokenInfo { id: "tok_2".into(), ..info.clone() },
        secret_hash: "hash-1".into(),
    };
    assert!(store.create_token(&duplicate, &tester()).await.is_err(), "secret hashes are unique");
    store.touch_token("tok_1", now).await.unwrap();
    assert!(matches!(store.revoke_token("tok_1", now, &tester()).await, Err(StoreError::LastAdmin)));
    let second = stackyard_api::TokenInfo { id: "tok_3".into(), ..info.clone() };
    store.create_token(&TokenRecord { info: second, secret_hash: "hash-3".into() }, &tester()).await.unwrap();
    let revoked = store.revoke_token("tok_1", now, &tester()).await.unwrap();
    assert!(revoked.revoked_at.is_some() && revoked.last_used_at.is_some());
    assert!(store.has_active_admin(now).await.unwrap(), "tok_3 is left");
    assert!(matches!(store.revoke_token("tok_3", now, &tester()).await, Err(StoreError::LastAdmin)));
    assert!(matches!(store.revoke_token("tok_9", now, &tester()).await, Err(StoreError::NotFound)));
    assert_eq!(store.list_tokens(None, 10).await.unwrap().len(), 2);
}

async fn changes_are_audited_with_their_transaction(store: &dyn MetadataStore) {
    register(store, "u1", &new_version("net", &[], "n", &[])).await;
    store.write_plan(&pin("prod", "net")).await.unwrap();
    // A refused write (the version is in use) leaves no audit entry behind.
    assert!(store.delete_version(&key("net"), &VersionRef::Number(1), &tester()).await.is_err());
    let entries = store.list_audit(&AuditQuery { limit: 10, ..Default::default() }).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["version.registered", "deployment.created"]);
    assert_eq!(entries[1].target, "prod");
    assert_eq!(entries[1].actor, "tester");
    assert_eq!(entries[1].remote_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(entries[1].details["token_id"], "tok_t");
    let by_selector = AuditQuery { selector: Some("prod".into()), limit: 10, ..Default::default() };
    assert_eq!(store.list_audit(&by_selector).await.unwrap().len(), 1);
    let selector = Selector::parse("prod").unwrap();
    assert_eq!(
        store.list_revisions(&selector, None, 1).await.unwrap()[0].created_by.as_deref(),
        Some("tester")
    );
    assert_eq!(
        store.get_version(&key("net"), &VersionRef::Number(1)).await.unwrap().uploaded_by.as_deref(),
        Some("tester")
    );
}

async fn sink_leases_have_one_owner(store: &dyn MetadataStore) {
    let (now, lease) = (Utc::now(), Duration::seconds(30));
    let claims = futures::future::join_all(
        (0..8).map(|i| async move { store.claim_sink("hook", &format!("r{i}"), now, lease).await.unwrap() }),
    )
    .await;
    assert_eq!(claims.iter().filter(|c| c.is_some()).count(), 1, "one replica wins the lease: {claims:?}");
    let owner = format!("r{}", claims.iter().position(Option::is_some).unwrap());
    let other = if owner == "r0" { "r1" } else { "r0" };
    assert!(!store.advance_sink("hook", other, 5, now, lease).await.unwrap(), "only the owner advances");
    assert!(store.advance_sink("hook", &owner, 5, now, lease).await.unwrap());
    assert_eq!(store.claim_sink("hook", other, now, lease).await.unwrap(), None);
    // Once the lease has expired, another replica takes over where it stopped.
    let later = now + Duration::seconds(31);
    assert_eq!(store.claim_sink("hook", other, later, lease).await.unwrap(), Some(5));
    assert!(!store.advance_sink("hook", &owner, 6, later, lease).await.unwrap(), "the old owner lost it");
    store.release_sink("hook", other).await.unwrap();
    assert_eq!(
        store.claim_sink("hook", &owner, later, lease).await.unwrap(),
        Some(5),
        "released: free to take"
    );
}

async fn racing_uploads_of_one_key_get_distinct_numbers(store: &dyn MetadataStore) {
    let versions: Vec<NewVersion> = (0..12).map(|i| new_version("net", &[], &format!("c{i}"), &[])).collect();
    let registered = futures::future::join_all(
        versions.iter().enumerate().map(|(i, v)| async move { register(store, &format!("u{i}"), v).await }),
    )
    .await;
    let mut numbers: Vec<i64> = registered.iter().map(|r| r.version.version).collect();
    numbers.sort();
    assert_eq!(numbers, (1..=12).collect::<Vec<_>>());
    // Identical bytes racing: one version, the others find it.
    let same = new_version("db", &[], "same", &[]);
    let again = futures::future::join_all((0..6).map(|i| {
        let same = &same;
        async move { register(store, &format!("s{i}"), same).await }
    }))
    .await;
    assert_eq!(again.iter().filter(|r| r.created).count(), 1);
    assert_eq!(store.get_artifact(&key("db")).await.unwrap().versions.len(), 1);
}

async fn racing_first_writes_create_one_deployment(store: &dyn MetadataStore) {
    register(store, "u1", &new_version("net", &[], "n", &[])).await;
    let writes: Vec<PlanWrite> = (0..10).map(|_| pin("fresh", "net")).collect();
    let outcomes = futures::future::join_all(writes.iter().map(|w| store.write_plan(w))).await;
    let created = outcomes.iter().filter(|o| matches!(o, Ok(PlanOutcome::Created(_)))).count();
    let unchanged = outcomes.iter().filter(|o| matches!(o, Ok(PlanOutcome::Unchanged(_)))).count();
    assert_eq!((created, unchanged), (1, 9), "{outcomes:?}");
    assert_eq!(store.list_events(0, 100).await.unwrap().len(), 1);
}

async fn scoped_queries_match_selector_globs(store: &dyn MetadataStore) {
    register(store, "u1", &new_version("net", &[], "n", &[])).await;
    for selector in ["prod/eu", "prod/us", "prod_x", "prod%y", "staging/eu", "a[1]"] {
        store.write_plan(&pin(selector, "net")).await.unwrap();
    }
    let matching = |globs: &[&str]| {
        let query = DeploymentQuery {
            selector_globs: globs.iter().map(|g| g.to_string()).collect(),
            limit: 50,
            ..Default::default()
        };
        async move {
            store.list_deployments(&query).await.unwrap().into_iter().map(|d| d.selector).collect::<Vec<_>>()
        }
    };
    assert_eq!(matching(&["prod/*"]).await, ["prod/eu", "prod/us"]);
    assert_eq!(matching(&["prod?x"]).await, ["prod_x"], "? is one character; _ and % are plain");
    assert_eq!(matching(&["prod%*"]).await, ["prod%y"]);
    assert_eq!(matching(&["a[1]", "*/eu"]).await, ["a[1]", "prod/eu", "staging/eu"], "[ is plain");
    let by_key = DeploymentQuery { artifact_keys: vec!["net".into()], limit: 2, ..Default::default() };
    assert_eq!(store.list_deployments(&by_key).await.unwrap().len(), 2);
}

async fn revoking_admins_concurrently_keeps_one(store: &dyn MetadataStore) {
    let now = Utc::now();
    for i in 0..4 {
        let info = stackyard_api::TokenInfo {
            id: format!("tok_{i}"),
            name: format!("admin{i}"),
            role: "admin".into(),
            organizations: vec![],
            selectors: vec![],
            expires_at: None,
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        store.create_token(&TokenRecord { info, secret_hash: format!("hash-{i}") }, &tester()).await.unwrap();
    }
    let results = futures::future::join_all(
        (0..4).map(|i| async move { store.revoke_token(&format!("tok_{i}"), now, &tester()).await }),
    )
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3, "{results:?}");
    assert!(store.has_active_admin(now).await.unwrap());
}

/// Two pools on one PostgreSQL database behave as two replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writers_on_separate_pools_lose_no_update() {
    let Some(db) = stackyard_testkit::TestDatabase::create().await else { return };
    let a = Arc::new(SqlStore::connect_postgres(&db.url, 4).await.unwrap());
    let b = Arc::new(SqlStore::connect_postgres(&db.url, 4).await.unwrap());
    for i in 0..20 {
        register(a.as_ref(), &format!("u{i}"), &new_version(&format!("svc{i}"), &[], &format!("{i}"), &[]))
            .await;
    }
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { store.write_plan(&pin("shared", &format!("svc{i}"))).await.unwrap() })
        })
        .collect();
    let mut revisions: Vec<i64> = Vec::new();
    for task in tasks {
        revisions.push(deployment_of(task.await.unwrap()).revision);
    }
    revisions.sort();
    assert_eq!(revisions, (1..=20).collect::<Vec<_>>());
    let selector = Selector::parse("shared").unwrap();
    assert_eq!(b.get_deployment(&selector).await.unwrap().artifacts.len(), 20, "no update lost");
    let events = a.list_events(0, 100).await.unwrap();
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]) && ids.len() == 20);
    let in_order: Vec<i64> = events.iter().map(|e| e.data["revision"].as_i64().unwrap()).collect();
    assert_eq!(in_order, (1..=20).collect::<Vec<_>>(), "event ids follow commit order");
}

/// A database written by the release before the shared SQL store (times as
/// sqlx-sqlite wrote them: `+00:00`, as many fraction digits as needed)
/// opens, migrates and answers as before.
#[tokio::test]
async fn sqlite_databases_from_the_previous_release_keep_answering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    {
        let store = SqlStore::open_sqlite(&path).await.unwrap();
        register(&store, "u1", &new_version("net", &[], "n", &[])).await;
        store.write_plan(&pin("prod", "net")).await.unwrap();
    }
    // Rewrite every time into the old encoding.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    for (table, columns) in [
        ("uploads", &["created_at", "expires_at", "claimed_at"][..]),
        ("artifacts", &["updated_at"][..]),
        ("artifact_versions", &["uploaded_at"][..]),
        ("deployments", &["created_at", "updated_at"][..]),
        ("revisions", &["created_at"][..]),
        ("events", &["at"][..]),
        ("audit_log", &["at"][..]),
    ] {
        for column in columns {
            let sql = format!(
                "UPDATE {table} SET {column} = rtrim(rtrim(rtrim({column}, 'Z'), '0'), '.') || '+00:00'"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
        }
    }
    let old: String =
        sqlx::query_scalar("SELECT uploaded_at FROM artifact_versions").fetch_one(&pool).await.unwrap();
    assert!(old.ends_with("+00:00"), "{old}");
    pool.close().await;

    let store = SqlStore::open_sqlite(&path).await.unwrap();
    let version = store.get_version(&key("net"), &VersionRef::Number(1)).await.unwrap();
    assert_eq!(version.uploaded_at.timezone(), Utc);
    let selector = Selector::parse("prod").unwrap();
    assert_eq!(store.get_deployment(&selector).await.unwrap().revision, 1);
    assert_eq!(store.list_events(0, 10).await.unwrap().len(), 1);
    store.write_plan(&pin("prod", "net")).await.unwrap();
    register(&store, "u2", &new_version("net", &[], "n2", &[])).await;
    assert_eq!(store.get_artifact(&key("net")).await.unwrap().summary.latest_version, 2);
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
}

/// The current revision read both ways (decoded, and as stored JSON for
/// answering reads) agrees with what each write answered, at once after it.
async fn reads_of_the_current_revision_see_each_write(store: &dyn MetadataStore) {
    register(store, "u1", &new_version("network", &[], "n", &[])).await;
    register(store, "u2", &new_version("app", &["network"], "a", &[])).await;
    let selector = Selector::parse("prod/eu \"west\"").unwrap();
    let organization = Some(stackyard_core::Organization::parse("acme").unwrap());
    let replace = PlanWrite {
        change: PlanChange::Replace { organization, artifacts: vec![(key("network"), None)] },
        ..pin(selector.as_str(), "network")
    };
    let mut written = deployment_of(store.write_plan(&replace).await.unwrap());
    for i in 0..20 {
        let change =
            if i % 2 == 0 { pin(selector.as_str(), "app") } else { remove(selector.as_str(), "app") };
        let answered = deployment_of(store.write_plan(&change).await.unwrap());
        assert_eq!(answered.revision, written.revision + 1);
        written = answered;
        let read = store.get_deployment(&selector).await.unwrap();
        assert_eq!(read, stackyard_api::Deployment { diff: None, ..written.clone() });
        let raw = store.get_raw_deployment(&selector).await.unwrap();
        assert_eq!(String::from_utf8(raw.to_json()).unwrap(), serde_json::to_string(&read).unwrap());
    }
    store.delete_deployment(&selector, &Preconditions::default(), &tester()).await.unwrap();
    assert!(matches!(store.get_deployment(&selector).await, Err(StoreError::NotFound)));
    assert!(matches!(store.get_raw_deployment(&selector).await, Err(StoreError::NotFound)));
}

fn remove(selector: &str, key: &str) -> PlanWrite {
    PlanWrite {
        change: PlanChange::Remove { artifact_key: ArtifactKey::parse(key).unwrap() },
        ..pin(selector, key)
    }
}
