//! The metadata store, written once over SQL and run on SQLite (the
//! embedded default) or PostgreSQL (many replicas).
//!
//! Both databases are reached through sqlx's `Any` driver with `$n`
//! placeholders, which both understand, so every statement and every rule is
//! written once; [`Dialect`] holds the few fragments that differ. Values
//! cross as text and integers only: times are RFC 3339 text in UTC with
//! nanoseconds (fixed width, so they also sort as text), JSON is text.
//!
//! How writers are kept from losing each other's updates:
//! - SQLite: every write starts with `BEGIN IMMEDIATE`, taking the database's
//!   single write lock up front (a deferred transaction that upgrades from
//!   read to write can fail with "database is locked" whatever the timeout).
//! - PostgreSQL: `READ COMMITTED` with row locks on what a write depends on:
//!   the deployment row (created first if missing, so racing creates queue
//!   on the unique key), the artifact row, the versions a plan pins
//!   (`FOR SHARE`, so a version cannot be deleted under a plan using it),
//!   and an advisory lock around the outbox insert (see [`Dialect::lock_outbox`]).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Executor, Row, Transaction};

use crate::metadata::*;

mod artifacts;
mod deployments;
mod inline;
mod tokens;

use inline::InlineReader;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a [`SqlStore`] speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// How a write transaction starts.
    fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// Appended to a SELECT whose rows the transaction goes on to change.
    /// SQLite needs none: its writers are serialised already.
    fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// Rows of a JSON array of strings (`$n`), as a table with one column `value`.
    fn strings(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("(SELECT value FROM json_each({param}))"),
            Dialect::Postgres => format!("(SELECT json_array_elements_text({param}::json) AS value)"),
        }
    }

    /// Rows of a JSON array of `[text, any]` pairs, as a table of columns `k` and `v` (text).
    fn pairs(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!(
                "(SELECT json_extract(value, '$[0]') AS k, CAST(json_extract(value, '$[1]') AS TEXT) AS v \
                 FROM json_each({param}))"
            ),
            Dialect::Postgres => {
                format!("(SELECT e->>0 AS k, e->>1 AS v FROM json_array_elements({param}::json) AS e)")
            }
        }
    }

    /// `column` matches a selector glob (`*`, `?`) that `glob_pattern` produced.
    fn glob_match(self, column: &str, pattern: &str) -> String {
        match self {
            Dialect::Sqlite => format!("{column} GLOB {pattern}"),
            Dialect::Postgres => format!("{column} LIKE {pattern} ESCAPE '\\'"),
        }
    }

    /// A selector glob in this database's pattern syntax: only `*` and `?` are special.
    fn glob_pattern(self, glob: &str) -> String {
        match self {
            // GLOB's `[` would open a character class.
            Dialect::Sqlite => glob.replace('[', "[[]"),
            Dialect::Postgres => glob
                .chars()
                .map(|c| match c {
                    '*' => "%".to_string(),
                    '?' => "_".to_string(),
                    '%' | '_' | '\\' => format!("\\{c}"),
                    c => c.to_string(),
                })
                .collect(),
        }
    }

    /// Taken just before an event is inserted and held until commit, so
    /// event ids become visible in increasing order: otherwise a reader that
    /// has seen id 11 would never see 10 when its transaction commits later.
    /// SQLite's single writer gives that for free.
    fn lock_outbox(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("SELECT pg_advisory_xact_lock(7283447201)"),
        }
    }

    /// Tells other processes an event was written (on [`EVENTS_CHANNEL`]);
    /// PostgreSQL delivers it when the transaction commits.
    fn announce_event(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("SELECT pg_notify('stackyard_events', '')"),
        }
    }
}

/// The PostgreSQL channel notified (at commit) whenever an event is written,
/// so every replica's dispatchers wake up at once instead of at their next poll.
pub const EVENTS_CHANNEL: &str = "stackyard_events";

/// The metadata store on SQLite or PostgreSQL.
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite only: the hottest point reads, without the pool's thread hop.
    inline: Option<InlineReader>,
}

/// Connections a PostgreSQL store keeps per process unless told otherwise.
pub const DEFAULT_POSTGRES_CONNECTIONS: u32 = 10;

impl SqlStore {
    /// Opens (creating if needed) an SQLite database file and runs pending migrations.
    pub async fn open_sqlite(path: &Path) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let url =
            sqlx::sqlite::SqliteConnectOptions::new().filename(path).create_if_missing(true).to_url_lossy();
        let options = AnyConnectOptions::from_url(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the single writer.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                         PRAGMA busy_timeout = 10000;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        SQLITE_MIGRATOR.run(&pool).await.map_err(|e| StoreError::Database(e.into()))?;
        Ok(Self { pool, dialect: Dialect::Sqlite, inline: Some(InlineReader::new(path)) })
    }

    /// Connects to PostgreSQL (`postgres://...`) with a pool of up to
    /// `max_connections`, and runs pending migrations.
    pub async fn connect_postgres(url: &str, max_connections: u32) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        POSTGRES_MIGRATOR.run(&pool).await.map_err(|e| StoreError::Database(e.into()))?;
        Ok(Self { pool, dialect: Dialect::Postgres, inline: None })
    }

    /// The first row of `sql` with `$1` bound to `param`, read inline on
    /// SQLite; `None` where the pool must answer (PostgreSQL, or a read the
    /// inline reader could not make).
    fn read_inline<T>(
        &self,
        sql: &str,
        param: &str,
        decode: impl FnOnce(&rusqlite::Row<'_>) -> StoreResult<T>,
    ) -> Option<StoreResult<Option<T>>> {
        self.inline.as_ref()?.first_row(sql, [param], decode)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A transaction for a change; see the module docs for how writers are serialised.
    async fn write(&self) -> StoreResult<Transaction<'static, Any>> {
        Ok(self.pool.begin_with(self.dialect.begin_write()).await?)
    }

    /// Runs `PRAGMA integrity_check` on SQLite (`ok` when the file is sound);
    /// PostgreSQL checks itself and answers `ok`.
    pub async fn integrity_check(&self) -> StoreResult<String> {
        match self.dialect {
            Dialect::Sqlite => Ok(sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&self.pool).await?),
            Dialect::Postgres => Ok("ok".into()),
        }
    }
}

/// A time as stored: RFC 3339, UTC, nanoseconds, so text order is time order.
pub(crate) fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn parse_ts(column: &str, text: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("{column}: {text:?} is not a time: {e}")))
}

/// Typed reads of a row's columns, in the store's encoding, from sqlx's rows
/// and from the [inline reader](inline)'s alike.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> StoreResult<String>;
    fn maybe_text(&self, column: &str) -> StoreResult<Option<String>>;
    fn int(&self, column: &str) -> StoreResult<i64>;

    fn time(&self, column: &str) -> StoreResult<DateTime<Utc>> {
        parse_ts(column, &self.text(column)?)
    }

    fn maybe_time(&self, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.maybe_text(column)?.map(|t| parse_ts(column, &t)).transpose()
    }

    fn json<T: serde::de::DeserializeOwned>(&self, column: &str) -> StoreResult<T> {
        serde_json::from_str(&self.text(column)?).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
    }
}

impl Columns for AnyRow {
    fn text(&self, column: &str) -> StoreResult<String> {
        Ok(self.try_get(column)?)
    }

    fn maybe_text(&self, column: &str) -> StoreResult<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn int(&self, column: &str) -> StoreResult<i64> {
        Ok(self.try_get(column)?)
    }
}

pub(crate) fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("plain data always serialises")
}

/// A statement assembled from optional filters, numbering its own `$n`
/// placeholders (sqlx's `QueryBuilder` writes `?` for the `Any` driver,
/// which PostgreSQL does not take).
pub(crate) struct Statement {
    sql: String,
    args: Vec<Arg>,
}

enum Arg {
    Text(String),
    Int(i64),
}

impl Statement {
    pub(crate) fn new(sql: impl Into<String>) -> Self {
        Self { sql: sql.into(), args: Vec::new() }
    }

    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// The next placeholder for a text value, e.g. `$3`, without writing it.
    pub(crate) fn text(&mut self, value: impl Into<String>) -> String {
        self.args.push(Arg::Text(value.into()));
        format!("${}", self.args.len())
    }

    pub(crate) fn int(&mut self, value: i64) -> String {
        self.args.push(Arg::Int(value));
        format!("${}", self.args.len())
    }

    pub(crate) async fn fetch_all<'e>(
        self,
        executor: impl Executor<'e, Database = Any>,
    ) -> StoreResult<Vec<AnyRow>> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(self.sql));
        for arg in self.args {
            query = match arg {
                Arg::Text(t) => query.bind(t),
                Arg::Int(i) => query.bind(i),
            };
        }
        Ok(query.fetch_all(executor).await?)
    }
}

/// Appends to the audit log, inside the caller's transaction.
pub(crate) async fn audit(
    conn: &mut AnyConnection,
    actor: &Actor,
    action: &str,
    target: &str,
    selector: Option<&str>,
    mut details: Value,
) -> StoreResult<()> {
    if let (Some(id), Some(map)) = (&actor.token_id, details.as_object_mut()) {
        map.insert("token_id".into(), id.clone().into());
    }
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target, selector, remote_addr, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(ts(Utc::now()))
    .bind(&actor.name)
    .bind(action)
    .bind(target)
    .bind(selector)
    .bind(&actor.remote_addr)
    .bind(details.to_string())
    .execute(conn)
    .await?;
    Ok(())
}
