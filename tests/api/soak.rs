//! Concurrency soak: many clients for a bounded time mixing every write on
//! overlapping selectors, then the invariants: contiguous revisions, plans
//! valid by the dependency rules, states only moved forward (but for
//! triggers), the event stream complete and ordered per selector, no 5xx.
//! Also: graceful shutdown under that load loses no acknowledged request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stackyard_server::config::DatabaseUrl;
use stackyard_testkit::TestDatabase;

use crate::helpers::*;
use crate::process::ServerProcess;
use crate::workload::{self, Client, Ledger};

const CLIENTS: usize = 12;

async fn soak(app: &TestApp, duration: Duration) {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let client = Client::new(&app.url, &ledger);
    workload::seed(&client).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = workload::start(&client, CLIENTS, &stop);
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let checked = workload::verify(&client).await;
    let ledger = ledger.lock().unwrap();
    assert!(ledger.server_errors.is_empty(), "server errors: {:?}", ledger.server_errors);
    workload::assert_states_moved_forward(&ledger);
    assert!(ledger.acknowledged > 100, "the soak made progress: {}", ledger.acknowledged);
    eprintln!(
        "soak: {CLIENTS} clients for {duration:?}: {} acknowledged writes, {} triggers sent; checked {checked:?}",
        ledger.acknowledged,
        ledger.triggers.values().sum::<usize>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_soak_keeps_every_invariant_on_sqlite() {
    let app = TestApp::spawn_with(|s| s.limits.requests_per_second = 100_000).await;
    soak(&app, Duration::from_secs(12)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_soak_keeps_every_invariant_on_postgres() {
    let Some(database) = TestDatabase::create().await else { return };
    let url = database.url.clone();
    let app = TestApp::spawn_with(move |s| {
        s.database = Some(DatabaseUrl::Postgres(url));
        s.limits.requests_per_second = 100_000;
    })
    .await;
    soak(&app, Duration::from_secs(8)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_request() {
    let data_dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut server = ServerProcess::start(data_dir.path());
    let client = Client::new(&server.url, &ledger);
    workload::seed(&client).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = workload::start(&client, CLIENTS, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = ledger.lock().unwrap().acknowledged;
    assert!(server.terminate().success(), "SIGTERM under load exits cleanly");
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    let server = ServerProcess::start(data_dir.path());
    let client = Client::new(&server.url, &ledger);
    let checked = workload::verify(&client).await;
    let ledger = ledger.lock().unwrap();
    assert!(ledger.server_errors.is_empty(), "server errors: {:?}", ledger.server_errors);
    eprintln!(
        "shutdown under load: {} writes acknowledged ({} of them after SIGTERM was sent), all kept; checked {checked:?}",
        ledger.acknowledged,
        ledger.acknowledged - before
    );
}
