//! Crash safety: the real binary under a concurrent mixed workload is
//! `SIGKILL`ed at random moments, restarted on the same data, and checked:
//! every acknowledged write is there, every version's package is whole,
//! every revision has its event, SQLite's `integrity_check` passes, and the
//! server starts with no manual repair. Then the same on PostgreSQL.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use sqlx::Connection;
use stackyard_testkit::TestDatabase;

use crate::helpers::*;
use crate::process::ServerProcess;
use crate::workload::{self, Client, Ledger};

const KILLS: usize = 6;
const WORKERS: usize = 6;

async fn crash_repeatedly(data_dir: &Path, env: &[(&str, &str)], sqlite: Option<&Path>) {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut total_checked = 0;
    for round in 0..=KILLS {
        let mut server = ServerProcess::start_with(data_dir, env, &[]);
        let client = Client::new(&server.url, &ledger);
        if round == 0 {
            workload::seed(&client).await;
        }
        let checked = workload::verify(&client).await;
        total_checked += checked.versions + checked.revisions;
        if round == KILLS {
            eprintln!(
                "crash test: {KILLS} kills survived; last check: {checked:?}; {total_checked} items checked"
            );
            break;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = workload::start(&client, WORKERS, &stop);
        let run_for = Duration::from_millis(rand::rng().random_range(300..1500));
        tokio::time::sleep(run_for).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        if let Some(path) = sqlite {
            assert_integrity(path).await;
        }
    }
    let ledger = ledger.lock().unwrap();
    assert!(ledger.acknowledged > 0, "the workload made progress");
    // A crash cuts requests off; it never makes the server answer 5xx.
    assert!(ledger.server_errors.is_empty(), "server errors: {:?}", ledger.server_errors);
    eprintln!(
        "crash test: {} acknowledged writes, {} versions, {} revisions",
        ledger.acknowledged,
        ledger.versions.len(),
        ledger.revisions.len()
    );
}

async fn assert_integrity(path: &Path) {
    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let result: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut conn).await.unwrap();
    assert_eq!(result, "ok", "SQLite's integrity check after a kill");
    conn.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_no_acknowledged_write_on_sqlite() {
    let data_dir = tempfile::tempdir().unwrap();
    let env = [("STACKYARD_BOOTSTRAP_TOKEN", ADMIN_TOKEN)];
    let db = data_dir.path().join("stackyard.db");
    crash_repeatedly(data_dir.path(), &env, Some(&db)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_no_acknowledged_write_on_postgres() {
    let Some(database) = TestDatabase::create().await else { return };
    let data_dir = tempfile::tempdir().unwrap();
    let env = [("STACKYARD_BOOTSTRAP_TOKEN", ADMIN_TOKEN), ("STACKYARD_DATABASE_URL", database.url.as_str())];
    crash_repeatedly(data_dir.path(), &env, None).await;
}
