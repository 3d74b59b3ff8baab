//! Point reads on SQLite without a thread round trip.
//!
//! sqlx runs each SQLite connection on a thread of its own: every query is a
//! message to that thread and its rows a message back, two thread wake-ups.
//! For a primary-key lookup answered from the page cache, those wake-ups
//! cost several times the lookup itself (under a read load they were about
//! 40% of the server's time). The hottest reads, a token by its hash and a
//! deployment by its selector, run here instead: on the calling thread, on
//! read-only connections of their own, with the same SQL.
//!
//! They see what the pool's reads see. WAL mode lets them read beside the
//! pool's writer, and each statement is its own read transaction, so it sees
//! every commit made before it starts. They never wait for a lock: anything
//! but a clean answer (the database busy, an I/O error) gives `None`, and the
//! caller asks the pool, which waits and classifies errors as it always does.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, Params};

use super::Columns;
use crate::metadata::{StoreError, StoreResult};

/// Connections kept open between reads. Reads never yield, so no more are in
/// use at once than the runtime has threads.
const IDLE_CONNECTIONS: usize = 4;
/// How much of the database file a reader maps instead of reading it page
/// by page (SQLite caps it at 2 GiB).
const MMAP_SIZE: i64 = 1 << 31;

pub(crate) struct InlineReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl InlineReader {
    pub(crate) fn new(path: &Path) -> Self {
        Self { path: path.to_path_buf(), idle: Mutex::new(Vec::new()) }
    }

    /// The first row of `sql`, decoded; `None` when it could not be read here.
    pub(crate) fn first_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        decode: impl FnOnce(&rusqlite::Row<'_>) -> StoreResult<T>,
    ) -> Option<StoreResult<Option<T>>> {
        let connection = self.take()?;
        let answer = (|| {
            let mut statement = connection.prepare_cached(sql)?;
            let mut rows = statement.query(params)?;
            Ok::<_, rusqlite::Error>(rows.next()?.map(decode))
        })();
        match answer {
            Ok(found) => {
                self.give_back(connection);
                Some(found.transpose())
            }
            Err(error) => {
                tracing::debug!(%error, "an inline read failed; asking the pool");
                None
            }
        }
    }

    fn take(&self) -> Option<Connection> {
        if let Some(connection) = self.idle.lock().expect("never poisoned").pop() {
            return Some(connection);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let opened = Connection::open_with_flags(&self.path, flags).and_then(|connection| {
            // Waiting for a lock would hold up the runtime thread; the pool waits instead.
            connection.busy_timeout(Duration::ZERO)?;
            // Otherwise SQLite may prepare a statement again whenever a new
            // value is bound (to re-plan for it): most of a lookup's cost.
            connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
            // Pages read straight from the OS's cache: with 100,000
            // deployments most reads missed SQLite's own small cache, and
            // each miss was a pread. A larger cache per connection did less.
            connection.pragma_update(None, "mmap_size", MMAP_SIZE)?;
            Ok(connection)
        });
        opened.inspect_err(|error| tracing::debug!(%error, "opening an inline reader failed")).ok()
    }

    fn give_back(&self, connection: Connection) {
        let mut idle = self.idle.lock().expect("never poisoned");
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(connection);
        }
    }
}

fn corrupt(column: &str, error: rusqlite::Error) -> StoreError {
    StoreError::Corrupt(format!("{column}: {error}"))
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> StoreResult<String> {
        self.get(column).map_err(|e| corrupt(column, e))
    }

    fn maybe_text(&self, column: &str) -> StoreResult<Option<String>> {
        self.get(column).map_err(|e| corrupt(column, e))
    }

    fn int(&self, column: &str) -> StoreResult<i64> {
        self.get(column).map_err(|e| corrupt(column, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER);
                 INSERT INTO t VALUES ('a', 1), ('b', NULL);",
            )
            .unwrap();
        (dir, path)
    }

    fn n_of(reader: &InlineReader, k: &str) -> Option<StoreResult<Option<i64>>> {
        reader.first_row("SELECT k, n FROM t WHERE k = $1", [k], |row: &rusqlite::Row<'_>| row.int("n"))
    }

    #[test]
    fn answers_rows_and_their_absence() {
        let (_dir, path) = database();
        let reader = InlineReader::new(&path);
        assert_eq!(n_of(&reader, "a").unwrap().unwrap(), Some(1));
        assert_eq!(n_of(&reader, "z").unwrap().unwrap(), None);
        // A value that does not decode is the store's error, not a reason to ask the pool.
        assert!(
            matches!(n_of(&reader, "b"), Some(Err(StoreError::Corrupt(detail))) if detail.starts_with("n: "))
        );
    }

    #[test]
    fn sees_each_commit_at_once() {
        let (_dir, path) = database();
        let reader = InlineReader::new(&path);
        let writer = Connection::open(&path).unwrap();
        for i in 2..50 {
            writer.execute("UPDATE t SET n = ?1 WHERE k = 'a'", [i]).unwrap();
            assert_eq!(n_of(&reader, "a").unwrap().unwrap(), Some(i));
        }
        assert!(reader.idle.lock().unwrap().len() <= IDLE_CONNECTIONS);
    }

    #[test]
    fn maps_the_database() {
        let (_dir, path) = database();
        let reader = InlineReader::new(&path);
        let connection = reader.take().unwrap();
        let mapped: i64 = connection.pragma_query_value(None, "mmap_size", |row| row.get(0)).unwrap();
        assert!(mapped >= 1 << 30, "mmap_size is {mapped}");
    }

    #[test]
    fn leaves_what_it_cannot_read_to_the_pool() {
        let (dir, path) = database();
        assert!(n_of(&InlineReader::new(&dir.path().join("missing.db")), "a").is_none());
        let reader = InlineReader::new(&path);
        let missing_table =
            reader.first_row("SELECT n FROM nowhere", [], |row: &rusqlite::Row<'_>| row.int("n"));
        assert!(missing_table.is_none());
        assert_eq!(n_of(&reader, "a").unwrap().unwrap(), Some(1));
    }
}
