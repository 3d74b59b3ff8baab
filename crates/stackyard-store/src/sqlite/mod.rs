//! The metadata store on an SQLite file (the embedded default).
//!
//! WAL mode lets readers run beside the single writer. Every write starts
//! with `BEGIN IMMEDIATE`, taking the write lock up front: a deferred
//! transaction that upgrades from read to write can fail with "database is
//! locked" when another writer got there first, whatever the busy timeout.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use stackyard_api::{ArtifactSummary, ArtifactVersion, DependentArtifact, Dependents};
use stackyard_core::{ArtifactKey, Digest, VersionRef};

use crate::metadata::*;

mod deployments;
mod tokens;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        Self::connect(options).await
    }

    async fn connect(options: SqliteConnectOptions) -> StoreResult<Self> {
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Database(e.into()))?;
        Ok(Self { pool })
    }

    async fn write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Runs `PRAGMA integrity_check`; `ok` when the file is sound.
    pub async fn integrity_check(&self) -> StoreResult<String> {
        Ok(sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&self.pool).await?)
    }
}

macro_rules! version_columns {
    () => {
        "artifact_key, version, digest, size, format, stack_name, depends_on, manifest, labels, \
         uploaded_at, uploaded_by"
    };
}

macro_rules! upload_columns {
    () => {
        "upload_id, method, filename, min_size, max_size, sha256, labels, created_at, expires_at, \
         claimed_at, state, artifact_key, version, digest, created, error, created_by"
    };
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(row: &SqliteRow, column: &str) -> StoreResult<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn version_from_row(row: &SqliteRow) -> StoreResult<ArtifactVersion> {
    Ok(ArtifactVersion {
        artifact_key: row.try_get("artifact_key")?,
        stack_name: row.try_get("stack_name")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        size: row.try_get::<i64, _>("size")? as u64,
        format: row.try_get("format")?,
        depends_on: json(row, "depends_on")?,
        manifest: json(row, "manifest")?,
        labels: json(row, "labels")?,
        uploaded_at: row.try_get("uploaded_at")?,
        uploaded_by: row.try_get("uploaded_by")?,
    })
}

fn summary_from_row(row: &SqliteRow) -> StoreResult<ArtifactSummary> {
    Ok(ArtifactSummary {
        artifact_key: row.try_get("artifact_key")?,
        stack_name: row.try_get("stack_name")?,
        latest_version: row.try_get("latest_version")?,
        versions: row.try_get("version_count")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn upload_from_row(row: &SqliteRow) -> StoreResult<UploadRecord> {
    let sha256: Option<String> = row.try_get("sha256")?;
    let state: String = row.try_get("state")?;
    let error: Option<String> = row.try_get("error")?;
    Ok(UploadRecord {
        upload: NewUpload {
            upload_id: row.try_get("upload_id")?,
            method: row.try_get("method")?,
            filename: row.try_get("filename")?,
            min_size: row.try_get::<i64, _>("min_size")? as u64,
            max_size: row.try_get::<i64, _>("max_size")? as u64,
            sha256: sha256
                .map(|s| Digest::parse(&s))
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            labels: json(row, "labels")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            created_by: row.try_get("created_by")?,
        },
        claimed_at: row.try_get("claimed_at")?,
        state: match state.as_str() {
            "pending" => StoredUploadState::Pending,
            "registered" => StoredUploadState::Registered,
            "rejected" => StoredUploadState::Rejected,
            other => return Err(StoreError::Corrupt(format!("upload state {other:?}"))),
        },
        artifact_key: row.try_get("artifact_key")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        created: row.try_get("created")?,
        error: error
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

/// Appends to the audit log, inside the caller's transaction.
pub(crate) async fn audit(
    conn: &mut sqlx::SqliteConnection,
    actor: &Actor,
    action: &str,
    target: &str,
    selector: Option<&str>,
    mut details: serde_json::Value,
) -> StoreResult<()> {
    if let (Some(id), Some(map)) = (&actor.token_id, details.as_object_mut()) {
        map.insert("token_id".into(), id.clone().into());
    }
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target, selector, remote_addr, details) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(Utc::now())
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

pub(crate) fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("plain data always serialises")
}

async fn find_version(
    tx: &mut Transaction<'static, Sqlite>,
    key: &ArtifactKey,
    version: &VersionRef,
) -> StoreResult<ArtifactVersion> {
    // One of the two is NULL, and NULL equals nothing.
    let (number, digest) = match version {
        VersionRef::Number(n) => (Some(*n), None),
        VersionRef::Digest(d) => (None, Some(d.as_str())),
    };
    let row = sqlx::query(concat!(
        "SELECT ",
        version_columns!(),
        " FROM artifact_versions WHERE artifact_key = ? AND (version = ? OR digest = ?)"
    ))
    .bind(key.as_str())
    .bind(number)
    .bind(digest)
    .fetch_optional(&mut **tx)
    .await?;
    version_from_row(&row.ok_or(StoreError::NotFound)?)
}

#[async_trait]
impl ArtifactStore for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_upload(&self, u: &NewUpload) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO uploads (upload_id, method, filename, min_size, max_size, sha256, labels, \
             created_at, expires_at, state, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
        )
        .bind(&u.upload_id)
        .bind(&u.method)
        .bind(&u.filename)
        .bind(u.min_size as i64)
        .bind(u.max_size as i64)
        .bind(u.sha256.as_ref().map(Digest::as_str))
        .bind(to_json(&u.labels))
        .bind(u.created_at)
        .bind(u.expires_at)
        .bind(&u.created_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_upload(&self, upload_id: &str) -> StoreResult<UploadRecord> {
        let row = sqlx::query(concat!("SELECT ", upload_columns!(), " FROM uploads WHERE upload_id = ?"))
            .bind(upload_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        upload_from_row(&row)
    }

    async fn claim_upload(&self, upload_id: &str, now: DateTime<Utc>) -> StoreResult<UploadRecord> {
        // One conditional UPDATE: of any number of concurrent claims, exactly one matches.
        let claimed = sqlx::query(concat!(
            "UPDATE uploads SET claimed_at = ? WHERE upload_id = ? AND state = 'pending' \
             AND claimed_at IS NULL AND expires_at > ? RETURNING ",
            upload_columns!()
        ))
        .bind(now)
        .bind(upload_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = claimed {
            return upload_from_row(&row);
        }
        let upload = self.get_upload(upload_id).await?;
        if upload.claimed_at.is_some() || upload.state != StoredUploadState::Pending {
            Err(StoreError::UploadAlreadyUsed)
        } else {
            Err(StoreError::UploadExpired)
        }
    }

    async fn reject_upload(&self, upload_id: &str, error: &Value) -> StoreResult<()> {
        sqlx::query(
            "UPDATE uploads SET state = 'rejected', error = ? WHERE upload_id = ? AND state = 'pending'",
        )
        .bind(to_json(error))
        .bind(upload_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn register_version(
        &self,
        upload_id: &str,
        v: &NewVersion,
        actor: &Actor,
    ) -> StoreResult<Registered> {
        let mut tx = self.write().await?;
        let existing =
            sqlx::query(concat!("SELECT ", version_columns!(), " FROM artifact_versions WHERE digest = ?"))
                .bind(v.digest.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let registered = match existing {
            Some(row) => Registered { version: version_from_row(&row)?, created: false },
            None => Registered { version: insert_version(&mut tx, v, &actor.name).await?, created: true },
        };
        let target = format!("{}@{}", registered.version.artifact_key, registered.version.version);
        let details = serde_json::json!({
            "upload_id": upload_id,
            "digest": registered.version.digest,
            "size": registered.version.size,
            "created": registered.created,
        });
        audit(&mut tx, actor, "version.registered", &target, None, details).await?;
        sqlx::query(
            "UPDATE uploads SET state = 'registered', artifact_key = ?, version = ?, digest = ?, created = ? \
             WHERE upload_id = ?",
        )
        .bind(&registered.version.artifact_key)
        .bind(registered.version.version)
        .bind(&registered.version.digest)
        .bind(registered.created)
        .bind(upload_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(registered)
    }

    async fn reject_interrupted_uploads(&self, error: &Value) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE uploads SET state = 'rejected', error = ? WHERE state = 'pending' AND claimed_at IS NOT NULL",
        )
        .bind(to_json(error))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn list_artifacts(&self, q: &ArtifactQuery) -> StoreResult<Vec<ArtifactSummary>> {
        let mut sql: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT a.artifact_key, a.stack_name, a.latest_version, a.version_count, a.updated_at \
             FROM artifacts a WHERE a.latest_version IS NOT NULL",
        );
        if let Some(prefix) = &q.prefix {
            // Keys use [a-z0-9-] only, and '~' sorts after all of them.
            sql.push(" AND a.artifact_key >= ").push_bind(prefix.clone());
            sql.push(" AND a.artifact_key < ").push_bind(format!("{prefix}~"));
        }
        if let Some(after) = &q.after {
            sql.push(" AND a.artifact_key > ").push_bind(after.clone());
        }
        for (name, value) in &q.labels {
            sql.push(
                " AND EXISTS (SELECT 1 FROM version_labels l WHERE l.artifact_key = a.artifact_key \
                 AND l.version = a.latest_version AND l.name = ",
            )
            .push_bind(name.clone())
            .push(" AND l.value = ")
            .push_bind(value.clone())
            .push(")");
        }
        sql.push(" ORDER BY a.artifact_key LIMIT ").push_bind(i64::from(q.limit));
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn get_artifact(&self, key: &ArtifactKey) -> StoreResult<ArtifactRecord> {
        let row = sqlx::query(
            "SELECT artifact_key, stack_name, latest_version, version_count, updated_at FROM artifacts \
             WHERE artifact_key = ? AND latest_version IS NOT NULL",
        )
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        let summary = summary_from_row(&row)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            version_columns!(),
            " FROM artifact_versions WHERE artifact_key = ? ORDER BY version DESC"
        ))
        .bind(key.as_str())
        .fetch_all(&self.pool)
        .await?;
        let versions = rows.iter().map(version_from_row).collect::<StoreResult<_>>()?;
        Ok(ArtifactRecord { summary, versions })
    }

    async fn get_version(&self, key: &ArtifactKey, version: &VersionRef) -> StoreResult<ArtifactVersion> {
        let mut tx = self.pool.begin().await?;
        let found = find_version(&mut tx, key, version).await;
        tx.rollback().await?;
        found
    }

    async fn digest_in_use(&self, digest: &Digest) -> StoreResult<bool> {
        let found = sqlx::query("SELECT 1 FROM artifact_versions WHERE digest = ?")
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn delete_version(
        &self,
        key: &ArtifactKey,
        version: &VersionRef,
        actor: &Actor,
    ) -> StoreResult<ArtifactVersion> {
        let mut tx = self.write().await?;
        let found = find_version(&mut tx, key, version).await?;
        let selectors = Self::selectors_using(&mut tx, key.as_str(), Some(found.version)).await?;
        if !selectors.is_empty() {
            return Err(StoreError::VersionInUse { selectors });
        }
        sqlx::query("DELETE FROM artifact_versions WHERE artifact_key = ? AND version = ?")
            .bind(key.as_str())
            .bind(found.version)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE artifacts SET version_count = version_count - 1, updated_at = ?, \
             latest_version = (SELECT MAX(version) FROM artifact_versions WHERE artifact_key = ?) \
             WHERE artifact_key = ?",
        )
        .bind(Utc::now())
        .bind(key.as_str())
        .bind(key.as_str())
        .execute(&mut *tx)
        .await?;
        let target = format!("{key}@{}", found.version);
        audit(&mut tx, actor, "version.deleted", &target, None, serde_json::json!({"digest": found.digest}))
            .await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn dependents(&self, key: &ArtifactKey) -> StoreResult<Dependents> {
        let mut tx = self.pool.begin().await?;
        let selectors = Self::selectors_using(&mut tx, key.as_str(), None).await?;
        tx.rollback().await?;
        let rows = sqlx::query(
            "SELECT artifact_key, version FROM version_dependencies WHERE dependency = ? \
             ORDER BY artifact_key, version",
        )
        .bind(key.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut by_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for row in &rows {
            by_key.entry(row.try_get("artifact_key")?).or_default().push(row.try_get("version")?);
        }
        Ok(Dependents {
            artifact_key: key.to_string(),
            artifacts: by_key
                .into_iter()
                .map(|(artifact_key, versions)| DependentArtifact { artifact_key, versions })
                .collect(),
            selectors,
        })
    }
}

async fn insert_version(
    tx: &mut Transaction<'static, Sqlite>,
    v: &NewVersion,
    uploaded_by: &str,
) -> StoreResult<ArtifactVersion> {
    let m = &v.manifest;
    let key = m.artifact_key.as_str();
    let next: Option<i64> = sqlx::query_scalar("SELECT next_version FROM artifacts WHERE artifact_key = ?")
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
    let number = match next {
        Some(n) => n,
        None => {
            sqlx::query(
                "INSERT INTO artifacts (artifact_key, stack_name, next_version, version_count, updated_at) \
                 VALUES (?, ?, 1, 0, ?)",
            )
            .bind(key)
            .bind(&m.stack_name)
            .bind(v.uploaded_at)
            .execute(&mut **tx)
            .await?;
            1
        }
    };
    let depends_on: Vec<String> = m.depends_on.iter().map(ToString::to_string).collect();
    let version = ArtifactVersion {
        artifact_key: key.to_string(),
        stack_name: m.stack_name.clone(),
        version: number,
        digest: v.digest.to_string(),
        size: v.size,
        format: v.format.as_str().to_string(),
        depends_on,
        manifest: m.raw.clone(),
        labels: v.labels.clone(),
        uploaded_at: v.uploaded_at,
        uploaded_by: Some(uploaded_by.to_string()),
    };
    sqlx::query(concat!(
        "INSERT INTO artifact_versions (",
        version_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(key)
    .bind(number)
    .bind(&version.digest)
    .bind(v.size as i64)
    .bind(&version.format)
    .bind(&version.stack_name)
    .bind(to_json(&version.depends_on))
    .bind(to_json(&version.manifest))
    .bind(to_json(&version.labels))
    .bind(version.uploaded_at)
    .bind(&version.uploaded_by)
    .execute(&mut **tx)
    .await?;
    for (name, value) in &version.labels {
        sqlx::query("INSERT INTO version_labels (artifact_key, version, name, value) VALUES (?, ?, ?, ?)")
            .bind(key)
            .bind(number)
            .bind(name)
            .bind(value)
            .execute(&mut **tx)
            .await?;
    }
    for dependency in &version.depends_on {
        sqlx::query("INSERT INTO version_dependencies (artifact_key, version, dependency) VALUES (?, ?, ?)")
            .bind(key)
            .bind(number)
            .bind(dependency)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query(
        "UPDATE artifacts SET next_version = ?, latest_version = ?, version_count = version_count + 1, \
         stack_name = ?, updated_at = ? WHERE artifact_key = ?",
    )
    .bind(number + 1)
    .bind(number)
    .bind(&version.stack_name)
    .bind(version.uploaded_at)
    .bind(key)
    .execute(&mut **tx)
    .await?;
    Ok(version)
}
