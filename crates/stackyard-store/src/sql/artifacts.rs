//! Uploads, artifacts and their versions.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use stackyard_api::{ArtifactSummary, ArtifactVersion, DependentArtifact, Dependents};
use stackyard_core::{ArtifactKey, Digest, VersionRef};

use super::{Columns, SqlStore, Statement, audit, to_json, ts};
use crate::metadata::*;

const VERSION_COLUMNS: &str = "artifact_key, version, digest, size, format, stack_name, depends_on, manifest, \
                               labels, uploaded_at, uploaded_by";

const UPLOAD_COLUMNS: &str = "upload_id, method, filename, min_size, max_size, sha256, labels, created_at, \
                              expires_at, claimed_at, state, artifact_key, version, digest, created, error, \
                              created_by, direct";

fn version_from_row(row: &AnyRow) -> StoreResult<ArtifactVersion> {
    Ok(ArtifactVersion {
        artifact_key: row.try_get("artifact_key")?,
        stack_name: row.try_get("stack_name")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        size: row.try_get::<i64, _>("size")? as u64,
        format: row.try_get("format")?,
        depends_on: row.json("depends_on")?,
        manifest: row.json("manifest")?,
        labels: row.json("labels")?,
        uploaded_at: row.time("uploaded_at")?,
        uploaded_by: row.try_get("uploaded_by")?,
    })
}

fn summary_from_row(row: &AnyRow) -> StoreResult<ArtifactSummary> {
    Ok(ArtifactSummary {
        artifact_key: row.try_get("artifact_key")?,
        stack_name: row.try_get("stack_name")?,
        latest_version: row.try_get("latest_version")?,
        versions: row.try_get("version_count")?,
        updated_at: row.time("updated_at")?,
    })
}

fn upload_from_row(row: &AnyRow) -> StoreResult<UploadRecord> {
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
            labels: row.json("labels")?,
            created_at: row.time("created_at")?,
            expires_at: row.time("expires_at")?,
            created_by: row.try_get("created_by")?,
            direct: row.try_get::<i64, _>("direct")? != 0,
        },
        claimed_at: row.maybe_time("claimed_at")?,
        state: match state.as_str() {
            "pending" => StoredUploadState::Pending,
            "registered" => StoredUploadState::Registered,
            "rejected" => StoredUploadState::Rejected,
            other => return Err(StoreError::Corrupt(format!("upload state {other:?}"))),
        },
        artifact_key: row.try_get("artifact_key")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        created: row.try_get::<Option<i64>, _>("created")?.map(|c| c != 0),
        error: error
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

impl SqlStore {
    /// The version by number or digest; with `lock`, held until the transaction ends.
    async fn find_version(
        &self,
        conn: &mut AnyConnection,
        key: &ArtifactKey,
        version: &VersionRef,
        lock: bool,
    ) -> StoreResult<ArtifactVersion> {
        // One of the two is NULL, and NULL equals nothing.
        let (number, digest) = match version {
            VersionRef::Number(n) => (Some(*n), None),
            VersionRef::Digest(d) => (None, Some(d.as_str())),
        };
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM artifact_versions WHERE artifact_key = $1 AND (version = $2 OR digest = $3){}",
            if lock { self.dialect.for_update() } else { "" }
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key.as_str())
            .bind(number)
            .bind(digest)
            .fetch_optional(conn)
            .await?;
        version_from_row(&row.ok_or(StoreError::NotFound)?)
    }

    /// Locks the artifact's row, creating it first when the key is new, and
    /// answers the number its next version gets. Racing first uploads of one
    /// key queue on the primary key instead of both inserting.
    async fn lock_artifact(
        &self,
        conn: &mut AnyConnection,
        key: &str,
        stack_name: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<i64> {
        sqlx::query(
            "INSERT INTO artifacts (artifact_key, stack_name, next_version, version_count, updated_at) \
             VALUES ($1, $2, 1, 0, $3) ON CONFLICT (artifact_key) DO NOTHING",
        )
        .bind(key)
        .bind(stack_name)
        .bind(ts(at))
        .execute(&mut *conn)
        .await?;
        let sql = format!(
            "SELECT next_version FROM artifacts WHERE artifact_key = $1{}",
            self.dialect.for_update()
        );
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(key).fetch_one(conn).await?)
    }

    /// The selectors whose current plan includes the key (at this version, when given).
    pub(super) async fn selectors_using(
        conn: &mut AnyConnection,
        key: &str,
        version: Option<i64>,
    ) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT selector FROM current_plan_artifacts WHERE artifact_key = $1 AND ($2 IS NULL OR version = $2) \
             ORDER BY selector",
        )
        .bind(key)
        .bind(version)
        .fetch_all(conn)
        .await?)
    }
}

#[async_trait]
impl ArtifactStore for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_upload(&self, u: &NewUpload) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO uploads (upload_id, method, filename, min_size, max_size, sha256, labels, \
             created_at, expires_at, state, created_by, direct) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11)",
        )
        .bind(&u.upload_id)
        .bind(&u.method)
        .bind(&u.filename)
        .bind(u.min_size as i64)
        .bind(u.max_size as i64)
        .bind(u.sha256.as_ref().map(Digest::as_str))
        .bind(to_json(&u.labels))
        .bind(ts(u.created_at))
        .bind(ts(u.expires_at))
        .bind(&u.created_by)
        .bind(i64::from(u.direct))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_upload(&self, upload_id: &str) -> StoreResult<UploadRecord> {
        let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(upload_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        upload_from_row(&row)
    }

    async fn claim_upload(&self, upload_id: &str, now: DateTime<Utc>) -> StoreResult<UploadRecord> {
        // One conditional UPDATE: of any number of concurrent claims, exactly one matches.
        let sql = format!(
            "UPDATE uploads SET claimed_at = $1 WHERE upload_id = $2 AND state = 'pending' \
             AND claimed_at IS NULL AND expires_at > $1 RETURNING {UPLOAD_COLUMNS}"
        );
        let claimed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ts(now))
            .bind(upload_id)
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
            "UPDATE uploads SET state = 'rejected', error = $1 WHERE upload_id = $2 AND state = 'pending'",
        )
        .bind(to_json(error))
        .bind(upload_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_upload(&self, upload_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE uploads SET claimed_at = NULL WHERE upload_id = $1 AND state = 'pending'")
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
        let key = v.manifest.artifact_key.as_str();
        // Identical bytes mean an identical manifest, hence the same key: locking
        // the key's row serialises racing uploads of the same package too.
        let next = self.lock_artifact(&mut tx, key, &v.manifest.stack_name, v.uploaded_at).await?;
        let sql = format!("SELECT {VERSION_COLUMNS} FROM artifact_versions WHERE digest = $1");
        let existing =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(v.digest.as_str()).fetch_optional(&mut *tx).await?;
        let registered = match existing {
            Some(row) => Registered { version: version_from_row(&row)?, created: false },
            None => {
                Registered { version: insert_version(&mut tx, v, next, &actor.name).await?, created: true }
            }
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
            "UPDATE uploads SET state = 'registered', artifact_key = $1, version = $2, digest = $3, created = $4 \
             WHERE upload_id = $5",
        )
        .bind(&registered.version.artifact_key)
        .bind(registered.version.version)
        .bind(&registered.version.digest)
        .bind(i64::from(registered.created))
        .bind(upload_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(registered)
    }

    async fn reject_interrupted_uploads(&self, error: &Value) -> StoreResult<u64> {
        // Direct uploads are processed from the object store, where a server
        // restart does not cut them off.
        let done = sqlx::query(
            "UPDATE uploads SET state = 'rejected', error = $1 \
             WHERE state = 'pending' AND claimed_at IS NOT NULL AND direct = 0",
        )
        .bind(to_json(error))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn pending_direct_uploads(
        &self,
        since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<UploadRecord>> {
        let sql = format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE direct = 1 AND state = 'pending' AND claimed_at IS NULL \
             AND expires_at > $1 ORDER BY created_at LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ts(since))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(upload_from_row).collect()
    }

    async fn list_artifacts(&self, q: &ArtifactQuery) -> StoreResult<Vec<ArtifactSummary>> {
        let mut sql = Statement::new(
            "SELECT a.artifact_key, a.stack_name, a.latest_version, a.version_count, a.updated_at \
             FROM artifacts a WHERE a.latest_version IS NOT NULL",
        );
        if let Some(prefix) = &q.prefix {
            // Keys use [a-z0-9-] only, and '~' sorts after all of them.
            let (from, to) = (sql.text(prefix.clone()), sql.text(format!("{prefix}~")));
            sql.push(&format!(" AND a.artifact_key >= {from} AND a.artifact_key < {to}"));
        }
        if let Some(after) = &q.after {
            let after = sql.text(after.clone());
            sql.push(&format!(" AND a.artifact_key > {after}"));
        }
        for (name, value) in &q.labels {
            let (name, value) = (sql.text(name.clone()), sql.text(value.clone()));
            sql.push(&format!(
                " AND EXISTS (SELECT 1 FROM version_labels l WHERE l.artifact_key = a.artifact_key \
                 AND l.version = a.latest_version AND l.name = {name} AND l.value = {value})"
            ));
        }
        let limit = sql.int(i64::from(q.limit));
        sql.push(&format!(" ORDER BY a.artifact_key LIMIT {limit}"));
        sql.fetch_all(&self.pool).await?.iter().map(summary_from_row).collect()
    }

    async fn get_artifact(&self, key: &ArtifactKey) -> StoreResult<ArtifactRecord> {
        let row = sqlx::query(
            "SELECT artifact_key, stack_name, latest_version, version_count, updated_at FROM artifacts \
             WHERE artifact_key = $1 AND latest_version IS NOT NULL",
        )
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        let summary = summary_from_row(&row)?;
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM artifact_versions WHERE artifact_key = $1 ORDER BY version DESC"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key.as_str()).fetch_all(&self.pool).await?;
        let versions = rows.iter().map(version_from_row).collect::<StoreResult<_>>()?;
        Ok(ArtifactRecord { summary, versions })
    }

    async fn get_version(&self, key: &ArtifactKey, version: &VersionRef) -> StoreResult<ArtifactVersion> {
        let mut conn = self.pool.acquire().await?;
        self.find_version(&mut conn, key, version, false).await
    }

    async fn digest_in_use(&self, digest: &Digest) -> StoreResult<bool> {
        let found = sqlx::query("SELECT 1 FROM artifact_versions WHERE digest = $1")
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
        // Locked: a plan write pinning it waits (its FOR SHARE), then finds it gone.
        let found = self.find_version(&mut tx, key, version, true).await?;
        let selectors = Self::selectors_using(&mut tx, key.as_str(), Some(found.version)).await?;
        if !selectors.is_empty() {
            return Err(StoreError::VersionInUse { selectors });
        }
        sqlx::query("DELETE FROM artifact_versions WHERE artifact_key = $1 AND version = $2")
            .bind(key.as_str())
            .bind(found.version)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE artifacts SET version_count = version_count - 1, updated_at = $1, \
             latest_version = (SELECT MAX(version) FROM artifact_versions WHERE artifact_key = $2) \
             WHERE artifact_key = $2",
        )
        .bind(ts(Utc::now()))
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
        let mut conn = self.pool.acquire().await?;
        let selectors = Self::selectors_using(&mut conn, key.as_str(), None).await?;
        let rows = sqlx::query(
            "SELECT artifact_key, version FROM version_dependencies WHERE dependency = $1 \
             ORDER BY artifact_key, version",
        )
        .bind(key.as_str())
        .fetch_all(&mut *conn)
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
    conn: &mut AnyConnection,
    v: &NewVersion,
    number: i64,
    uploaded_by: &str,
) -> StoreResult<ArtifactVersion> {
    let m = &v.manifest;
    let key = m.artifact_key.as_str();
    let version = ArtifactVersion {
        artifact_key: key.to_string(),
        stack_name: m.stack_name.clone(),
        version: number,
        digest: v.digest.to_string(),
        size: v.size,
        format: v.format.as_str().to_string(),
        depends_on: m.depends_on.iter().map(ToString::to_string).collect(),
        manifest: m.raw.clone(),
        labels: v.labels.clone(),
        uploaded_at: v.uploaded_at,
        uploaded_by: Some(uploaded_by.to_string()),
    };
    let sql = format!(
        "INSERT INTO artifact_versions ({VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .bind(number)
        .bind(&version.digest)
        .bind(v.size as i64)
        .bind(&version.format)
        .bind(&version.stack_name)
        .bind(to_json(&version.depends_on))
        .bind(to_json(&version.manifest))
        .bind(to_json(&version.labels))
        .bind(ts(version.uploaded_at))
        .bind(&version.uploaded_by)
        .execute(&mut *conn)
        .await?;
    for (name, value) in &version.labels {
        sqlx::query(
            "INSERT INTO version_labels (artifact_key, version, name, value) VALUES ($1, $2, $3, $4)",
        )
        .bind(key)
        .bind(number)
        .bind(name)
        .bind(value)
        .execute(&mut *conn)
        .await?;
    }
    for dependency in &version.depends_on {
        sqlx::query(
            "INSERT INTO version_dependencies (artifact_key, version, dependency) VALUES ($1, $2, $3)",
        )
        .bind(key)
        .bind(number)
        .bind(dependency)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "UPDATE artifacts SET next_version = $1, latest_version = $2, version_count = version_count + 1, \
         stack_name = $3, updated_at = $4 WHERE artifact_key = $5",
    )
    .bind(number + 1)
    .bind(number)
    .bind(&version.stack_name)
    .bind(ts(version.uploaded_at))
    .bind(key)
    .execute(&mut *conn)
    .await?;
    Ok(version)
}
