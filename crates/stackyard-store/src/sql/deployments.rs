//! Deployments: plan writes, revisions, status and the event outbox.
//!
//! Every write holds the deployment's row (see the `sql` module docs), so
//! writers to one selector are serialised: each reads the revision it
//! replaces and commits the next number, and no update is lost. The plan,
//! the reverse index rows, the audit entry and the event are one transaction.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use stackyard_api::{
    ArtifactState, ArtifactStatus, DeployedArtifact, Deployment, DeploymentStatus, DiffChange, DiffEntry,
    Event, PlanDiff, RawDeployment, RevisionSummary,
};
use stackyard_core::plan::{self, PlanEntry, PlannedArtifact};
use stackyard_core::{ArtifactKey, Selector, VersionRef};

use async_trait::async_trait;

use super::{Columns, Dialect, SqlStore, Statement, audit, to_json, ts};
use crate::metadata::*;
use crate::rollout;

/// A deployment row.
struct DeploymentRow {
    current_revision: Option<i64>,
    last_revision: i64,
    created_at: DateTime<Utc>,
}

/// A revision row, decoded.
struct RevisionRow {
    revision: i64,
    status_id: String,
    organization: Option<String>,
    artifacts: Vec<PlannedArtifact>,
    diff: PlanDiff,
    created_at: DateTime<Utc>,
    created_by: Option<String>,
}

fn revision_from_row(row: &impl Columns) -> StoreResult<RevisionRow> {
    Ok(RevisionRow {
        revision: row.int("revision")?,
        status_id: row.text("status_id")?,
        organization: row.maybe_text("organization")?,
        artifacts: row.json("artifacts")?,
        diff: row.json("diff")?,
        created_at: row.time("created_at")?,
        created_by: row.maybe_text("created_by")?,
    })
}

/// What reads of a deployment's current revision select, `$1` its selector.
const CURRENT_REVISION: &str = "SELECT d.selector, d.created_at AS deployment_created_at, r.revision, \
     r.status_id, r.organization, r.artifacts, r.created_at \
     FROM deployments d JOIN revisions r ON r.selector = d.selector AND r.revision = d.current_revision \
     WHERE d.selector = $1";

/// A row of [`CURRENT_REVISION`], its plan left as the JSON it is stored as.
fn raw_deployment(row: &impl Columns) -> StoreResult<RawDeployment> {
    Ok(RawDeployment {
        selector: row.text("selector")?,
        organization: row.maybe_text("organization")?,
        revision: row.int("revision")?,
        status_id: row.text("status_id")?,
        created_at: row.time("deployment_created_at")?,
        updated_at: row.time("created_at")?,
        artifacts: row.text("artifacts")?,
    })
}

impl SqlStore {
    /// One query, the hottest read, inline on SQLite: each round trip to a
    /// worker thread costs more than the lookup itself.
    async fn current_revision(&self, selector: &Selector) -> StoreResult<RawDeployment> {
        if let Some(read) = self.read_inline(CURRENT_REVISION, selector.as_str(), |row| raw_deployment(row)) {
            return read?.ok_or(StoreError::NotFound);
        }
        let row = sqlx::query(CURRENT_REVISION)
            .bind(selector.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        raw_deployment(&row)
    }
}

/// How a deployment row is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// A plain read.
    Read,
    /// Locked until the transaction ends.
    Lock,
    /// Locked, and created first (as "never deployed") when missing, so that
    /// racing first writes to a selector queue on its key.
    LockOrCreate,
}

async fn deployment_row(
    conn: &mut AnyConnection,
    dialect: Dialect,
    selector: &str,
    hold: Hold,
) -> StoreResult<Option<DeploymentRow>> {
    if hold == Hold::LockOrCreate {
        let now = ts(Utc::now());
        sqlx::query(
            "INSERT INTO deployments (selector, last_revision, created_at, updated_at) VALUES ($1, 0, $2, $2) \
             ON CONFLICT (selector) DO NOTHING",
        )
        .bind(selector)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    let lock = if hold == Hold::Read { "" } else { dialect.for_update() };
    let sql = format!(
        "SELECT current_revision, last_revision, created_at FROM deployments WHERE selector = $1{lock}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(selector).fetch_optional(conn).await?;
    row.map(|row| {
        Ok(DeploymentRow {
            current_revision: row.try_get("current_revision")?,
            last_revision: row.try_get("last_revision")?,
            created_at: row.time("created_at")?,
        })
    })
    .transpose()
}

const REVISION_COLUMNS: &str = "revision, status_id, organization, artifacts, diff, created_at, created_by";

async fn revision_row(conn: &mut AnyConnection, selector: &str, revision: i64) -> StoreResult<RevisionRow> {
    let sql = format!("SELECT {REVISION_COLUMNS} FROM revisions WHERE selector = $1 AND revision = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(selector)
        .bind(revision)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("{selector} lacks revision {revision}")))?;
    revision_from_row(&row)
}

fn deployed(artifact: &PlannedArtifact) -> DeployedArtifact {
    DeployedArtifact {
        artifact_key: artifact.artifact_key.clone(),
        version: artifact.version,
        digest: artifact.digest.clone(),
        wave: artifact.wave,
        role: artifact.role.as_str().to_string(),
        depends_on: artifact.depends_on.clone(),
        dependents: artifact.dependents.clone(),
    }
}

fn api_diff(diff: &plan::PlanDiff) -> PlanDiff {
    let entries = |list: &[plan::DiffEntry]| {
        list.iter().map(|e| DiffEntry { artifact_key: e.artifact_key.clone(), version: e.version }).collect()
    };
    PlanDiff {
        added: entries(&diff.added),
        removed: entries(&diff.removed),
        changed: diff
            .changed
            .iter()
            .map(|c| DiffChange {
                artifact_key: c.artifact_key.clone(),
                old_version: c.old_version,
                new_version: c.new_version,
            })
            .collect(),
    }
}

fn deployment(
    selector: &str,
    created_at: DateTime<Utc>,
    revision: &RevisionRow,
    diff: Option<PlanDiff>,
) -> Deployment {
    Deployment {
        selector: selector.to_string(),
        organization: revision.organization.clone(),
        revision: revision.revision,
        status_id: revision.status_id.clone(),
        created_at,
        updated_at: revision.created_at,
        artifacts: revision.artifacts.iter().map(deployed).collect(),
        diff,
    }
}

fn check_preconditions(pre: &Preconditions, current: Option<&RevisionRow>) -> StoreResult<()> {
    if pre.if_none_match_any && current.is_some() {
        return Err(StoreError::PreconditionFailed(
            "the deployment already exists (If-None-Match: *)".into(),
        ));
    }
    if let Some(tags) = &pre.if_match {
        match current {
            None => {
                return Err(StoreError::PreconditionFailed(
                    "the deployment does not exist (If-Match)".into(),
                ));
            }
            Some(rev) if !tags.is_empty() && !tags.contains(&rev.status_id) => {
                return Err(StoreError::PreconditionFailed(format!(
                    "the deployment is at revision {} (status id {}), not the one given in If-Match",
                    rev.revision, rev.status_id
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// A resolved artifact version: what a plan entry needs from the registry.
#[derive(Clone)]
struct Resolved {
    version: i64,
    digest: String,
    depends_on: Vec<String>,
}

/// Looks up every requested version in three set queries (latest, by number,
/// by digest), and names every one that does not exist. On PostgreSQL the
/// versions found are share-locked until the write commits, so none can be
/// deleted under the plan that pins it.
async fn resolve(
    conn: &mut AnyConnection,
    dialect: Dialect,
    requested: &[(ArtifactKey, Option<VersionRef>)],
) -> StoreResult<Vec<PlanEntry>> {
    let mut latest = Vec::new();
    let mut numbered = Vec::new();
    let mut digests = Vec::new();
    for (key, version) in requested {
        match version {
            None => latest.push(json!(key.as_str())),
            Some(VersionRef::Number(n)) => numbered.push(json!([key.as_str(), n])),
            Some(VersionRef::Digest(d)) => digests.push(json!([key.as_str(), d.as_str()])),
        }
    }
    let mut found: HashMap<(String, Option<String>), Resolved> = HashMap::with_capacity(requested.len());
    let share = match dialect {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR SHARE OF v",
    };
    // Each query, its parameters, and how a found row names the version asked for.
    type Lookup = (String, Vec<Value>, fn(&AnyRow) -> Option<String>);
    let queries: [Lookup; 3] = [
        (
            format!(
                "SELECT v.artifact_key, v.version, v.digest, v.depends_on FROM {} j \
                 JOIN artifacts a ON a.artifact_key = j.value \
                 JOIN artifact_versions v ON v.artifact_key = a.artifact_key AND v.version = a.latest_version{share}",
                dialect.strings("$1")
            ),
            latest,
            |_| None,
        ),
        (
            format!(
                "SELECT v.artifact_key, v.version, v.digest, v.depends_on FROM {} p \
                 JOIN artifact_versions v ON v.artifact_key = p.k AND v.version = CAST(p.v AS BIGINT){share}",
                dialect.pairs("$1")
            ),
            numbered,
            |row| row.try_get::<i64, _>("version").ok().map(|v| v.to_string()),
        ),
        (
            format!(
                "SELECT v.artifact_key, v.version, v.digest, v.depends_on FROM {} p \
                 JOIN artifact_versions v ON v.artifact_key = p.k AND v.digest = p.v{share}",
                dialect.pairs("$1")
            ),
            digests,
            |row| row.try_get::<String, _>("digest").ok(),
        ),
    ];
    for (sql, keys, spec) in queries {
        if keys.is_empty() {
            continue;
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(Value::Array(keys).to_string())
            .fetch_all(&mut *conn)
            .await?;
        for row in rows {
            let key: String = row.try_get("artifact_key")?;
            let resolved = Resolved {
                version: row.try_get("version")?,
                digest: row.try_get("digest")?,
                depends_on: row.json("depends_on")?,
            };
            found.insert((key, spec(&row)), resolved);
        }
    }

    let mut entries = Vec::with_capacity(requested.len());
    let mut missing = Vec::new();
    for (key, version) in requested {
        let spec = version.as_ref().map(|v| v.to_string());
        // `get`, not `remove`: a key listed twice must reach the plan check,
        // which reports it as a duplicate, not as unknown.
        match found.get(&(key.to_string(), spec)).cloned() {
            Some(r) => entries.push(PlanEntry {
                artifact_key: key.clone(),
                version: r.version,
                digest: r.digest,
                depends_on: r.depends_on.iter().filter_map(|d| ArtifactKey::parse(d).ok()).collect(),
            }),
            None => missing.push((key, version)),
        }
    }
    if missing.is_empty() {
        return Ok(entries);
    }
    // Tell an artifact that does not exist from a version that does not.
    let keys: Vec<&str> = missing.iter().map(|(k, _)| k.as_str()).collect();
    let sql = format!(
        "SELECT a.artifact_key FROM {} j JOIN artifacts a ON a.artifact_key = j.value \
         WHERE a.latest_version IS NOT NULL",
        dialect.strings("$1")
    );
    let existing: Vec<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(to_json(&keys)).fetch_all(&mut *conn).await?;
    let problems = missing
        .into_iter()
        .map(|(key, version)| match version {
            Some(v) if existing.iter().any(|e| e == key.as_str()) => {
                json!({"code": "unknown_version", "artifact_key": key.as_str(), "version": v.to_string()})
            }
            _ => json!({"code": "unknown_artifact", "artifact_key": key.as_str()}),
        })
        .collect();
    Err(StoreError::InvalidPlan(problems))
}

/// The entries a change asks for, given the current plan.
fn requested(
    change: &PlanChange,
    current: Option<&RevisionRow>,
) -> StoreResult<Vec<(ArtifactKey, Option<VersionRef>)>> {
    let pinned = |rev: &RevisionRow| -> Vec<(ArtifactKey, Option<VersionRef>)> {
        rev.artifacts
            .iter()
            .filter_map(|a| {
                Some((ArtifactKey::parse(&a.artifact_key).ok()?, Some(VersionRef::Number(a.version))))
            })
            .collect()
    };
    match change {
        PlanChange::Replace { artifacts, .. } => Ok(artifacts.clone()),
        PlanChange::Pin { artifact_key, version } => {
            let mut entries = current.map(pinned).unwrap_or_default();
            entries.retain(|(k, _)| k != artifact_key);
            entries.push((artifact_key.clone(), version.clone()));
            Ok(entries)
        }
        PlanChange::Remove { artifact_key } => {
            let rev = current.ok_or(StoreError::NotFound)?;
            let artifact = rev
                .artifacts
                .iter()
                .find(|a| a.artifact_key == artifact_key.as_str())
                .ok_or(StoreError::NotInPlan)?;
            if !artifact.dependents.is_empty() {
                return Err(StoreError::HasDependents {
                    artifact_key: artifact_key.to_string(),
                    dependents: artifact.dependents.clone(),
                });
            }
            let mut entries = pinned(rev);
            entries.retain(|(k, _)| k != artifact_key);
            Ok(entries)
        }
    }
}

#[async_trait]
impl DeploymentStore for SqlStore {
    async fn write_plan(&self, write: &PlanWrite) -> StoreResult<PlanOutcome> {
        let mut tx = self.write().await?;
        let selector = write.selector.as_str();
        let hold = match write.change {
            PlanChange::Remove { .. } => Hold::Lock,
            PlanChange::Replace { .. } | PlanChange::Pin { .. } => Hold::LockOrCreate,
        };
        let row = deployment_row(&mut tx, self.dialect, selector, hold).await?;
        let current = match row.as_ref().and_then(|r| r.current_revision) {
            Some(revision) => Some(revision_row(&mut tx, selector, revision).await?),
            None => None,
        };
        check_preconditions(&write.preconditions, current.as_ref())?;
        if current.is_none() && !matches!(write.change, PlanChange::Replace { .. } | PlanChange::Pin { .. }) {
            return Err(StoreError::NotFound);
        }

        let requested = requested(&write.change, current.as_ref())?;
        let entries = resolve(&mut tx, self.dialect, &requested).await?;
        let planned = plan::validate(&entries)
            .map_err(|problems| StoreError::InvalidPlan(problems.iter().map(|p| json!(p)).collect()))?;
        let organization = match &write.change {
            PlanChange::Replace { organization: Some(org), .. } => Some(org.to_string()),
            _ => current.as_ref().and_then(|c| c.organization.clone()),
        };
        let diff = plan::diff(current.as_ref().map_or(&[][..], |c| &c.artifacts), &planned);
        let now = Utc::now();

        if let Some(cur) = &current
            && diff.is_empty()
            && organization == cur.organization
        {
            let created_at = row.as_ref().map_or(now, |r| r.created_at);
            return Ok(PlanOutcome::Unchanged(deployment(selector, created_at, cur, None)));
        }

        let revision = row.as_ref().map_or(1, |r| r.last_revision + 1);
        let new = RevisionRow {
            revision,
            status_id: plan::status_id(&write.selector, revision),
            organization,
            artifacts: planned,
            diff: api_diff(&diff),
            created_at: now,
            created_by: Some(write.actor.name.clone()),
        };
        let created_at = match (&current, &row) {
            (Some(_), Some(r)) => r.created_at,
            _ => now,
        };
        let answer = deployment(selector, created_at, &new, Some(new.diff.clone()));
        let outcome =
            if current.is_some() { PlanOutcome::Revised(answer) } else { PlanOutcome::Created(answer) };
        if write.dry_run {
            tx.rollback().await?;
            return Ok(outcome);
        }

        store_revision(&mut tx, self.dialect, selector, &new, &diff, created_at, current.is_none()).await?;
        let action = if current.is_some() { "deployment.revised" } else { "deployment.created" };
        let details = json!({"revision": revision, "status_id": new.status_id, "organization": new.organization, "diff": new.diff});
        audit(&mut tx, &write.actor, action, selector, Some(selector), details).await?;
        let data = json!({
            "selector": selector,
            "organization": new.organization,
            "revision": revision,
            "status_id": new.status_id,
            "previous_status_id": current.as_ref().map(|c| c.status_id.clone()),
            "diff": new.diff,
        });
        insert_event(&mut tx, self.dialect, "deployment.revision_created", selector, &data).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn delete_deployment(
        &self,
        selector: &Selector,
        pre: &Preconditions,
        actor: &Actor,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let s = selector.as_str();
        let current = match deployment_row(&mut tx, self.dialect, s, Hold::Lock)
            .await?
            .and_then(|r| r.current_revision)
        {
            Some(revision) => revision_row(&mut tx, s, revision).await?,
            None => return Err(StoreError::NotFound),
        };
        check_preconditions(pre, Some(&current))?;
        sqlx::query("UPDATE deployments SET current_revision = NULL, updated_at = $1 WHERE selector = $2")
            .bind(ts(Utc::now()))
            .bind(s)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM current_plan_artifacts WHERE selector = $1")
            .bind(s)
            .execute(&mut *tx)
            .await?;
        let data = json!({
            "selector": s,
            "organization": current.organization,
            "revision": current.revision,
            "status_id": current.status_id,
        });
        audit(&mut tx, actor, "deployment.deleted", s, Some(s), data.clone()).await?;
        insert_event(&mut tx, self.dialect, "deployment.deleted", s, &data).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_deployment(&self, selector: &Selector) -> StoreResult<Deployment> {
        // The stored plan has the fields of the answer's artifacts.
        self.current_revision(selector)
            .await?
            .decode()
            .map_err(|e| StoreError::Corrupt(format!("artifacts: {e}")))
    }

    async fn get_raw_deployment(&self, selector: &Selector) -> StoreResult<RawDeployment> {
        self.current_revision(selector).await
    }

    async fn list_deployments(&self, q: &DeploymentQuery) -> StoreResult<Vec<Deployment>> {
        let d = self.dialect;
        let mut sql = Statement::new(
            "SELECT d.selector, d.created_at AS deployment_created_at, r.revision, r.status_id, r.organization, \
             r.artifacts, r.diff, r.created_at, r.created_by \
             FROM deployments d JOIN revisions r ON r.selector = d.selector AND r.revision = d.current_revision \
             WHERE d.current_revision IS NOT NULL",
        );
        if !q.selectors.is_empty() {
            let list = sql.text(to_json(&q.selectors));
            sql.push(&format!(" AND d.selector IN {}", d.strings(&list)));
        }
        if !q.organizations.is_empty() {
            let list = sql.text(to_json(&q.organizations));
            sql.push(&format!(" AND d.organization IN {}", d.strings(&list)));
        }
        if !q.selector_globs.is_empty() {
            let globs: Vec<String> = q.selector_globs.iter().map(|g| d.glob_pattern(g)).collect();
            let list = sql.text(to_json(&globs));
            sql.push(&format!(
                " AND EXISTS (SELECT 1 FROM {} g WHERE {})",
                d.strings(&list),
                d.glob_match("d.selector", "g.value")
            ));
        }
        if !q.artifact_keys.is_empty() {
            // Through the reverse index: the cost follows the matches, not the number of deployments.
            let list = sql.text(to_json(&q.artifact_keys));
            sql.push(&format!(
                " AND d.selector IN (SELECT c.selector FROM current_plan_artifacts c WHERE c.artifact_key IN {})",
                d.strings(&list)
            ));
        }
        if let Some(after) = &q.after {
            let after = sql.text(after.clone());
            sql.push(&format!(" AND d.selector > {after}"));
        }
        let limit = sql.int(i64::from(q.limit));
        sql.push(&format!(" ORDER BY d.selector LIMIT {limit}"));
        let rows = sql.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let selector: String = row.try_get("selector")?;
                let created_at = row.time("deployment_created_at")?;
                Ok(deployment(&selector, created_at, &revision_from_row(row)?, None))
            })
            .collect()
    }

    async fn list_revisions(
        &self,
        selector: &Selector,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<RevisionSummary>> {
        let mut conn = self.pool.acquire().await?;
        deployment_row(&mut conn, self.dialect, selector.as_str(), Hold::Read)
            .await?
            .ok_or(StoreError::NotFound)?;
        let rows = sqlx::query(
            "SELECT revision, status_id, organization, artifacts, diff, created_at, created_by FROM revisions \
             WHERE selector = $1 AND revision < $2 ORDER BY revision DESC LIMIT $3",
        )
        .bind(selector.as_str())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RevisionSummary {
                    revision: row.try_get("revision")?,
                    status_id: row.try_get("status_id")?,
                    created_at: row.time("created_at")?,
                    created_by: row.try_get("created_by")?,
                    diff: row.json("diff")?,
                })
            })
            .collect()
    }

    async fn get_status(&self, selector: &Selector, status_id: &str) -> StoreResult<DeploymentStatus> {
        let mut conn = self.pool.acquire().await?;
        status(&mut conn, self.dialect, selector, status_id).await
    }

    async fn report_status(
        &self,
        selector: &Selector,
        status_id: &str,
        artifact_key: &ArtifactKey,
        to: ArtifactState,
        message: Option<&str>,
        actor: &Actor,
    ) -> StoreResult<DeploymentStatus> {
        let mut tx = self.write().await?;
        // Reports, triggers and plan writes to one selector take turns.
        deployment_row(&mut tx, self.dialect, selector.as_str(), Hold::Lock).await?;
        let (rev, current) = revision_by_status(&mut tx, self.dialect, selector, status_id).await?;
        let artifact = rev
            .artifacts
            .iter()
            .find(|a| a.artifact_key == artifact_key.as_str())
            .ok_or(StoreError::NotInPlan)?;
        if !current {
            return Err(StoreError::Superseded);
        }
        let reported = reported_states(&mut tx, status_id).await?;
        let states = all_states(&rev, &reported);
        let from = states[artifact_key.as_str()];
        rollout::check_report(artifact, from, to, &states).map_err(StoreError::ReportRefused)?;
        sqlx::query(
            "INSERT INTO artifact_status (status_id, artifact_key, state, message, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (status_id, artifact_key) DO UPDATE SET state = excluded.state, message = excluded.message, \
             updated_at = excluded.updated_at",
        )
        .bind(status_id)
        .bind(artifact_key.as_str())
        .bind(state_name(to))
        .bind(message)
        .bind(ts(Utc::now()))
        .execute(&mut *tx)
        .await?;
        let details = json!({"status_id": status_id, "artifact_key": artifact_key.as_str(), "state": to, "message": message});
        let target = format!("{selector}:{artifact_key}");
        audit(&mut tx, actor, "status.reported", &target, Some(selector.as_str()), details).await?;
        let answer = status(&mut tx, self.dialect, selector, status_id).await?;
        tx.commit().await?;
        Ok(answer)
    }

    async fn trigger(
        &self,
        selector: &Selector,
        artifact_key: &ArtifactKey,
        trigger_id: &str,
        actor: &Actor,
    ) -> StoreResult<String> {
        let mut tx = self.write().await?;
        let s = selector.as_str();
        let revision = deployment_row(&mut tx, self.dialect, s, Hold::Lock)
            .await?
            .and_then(|r| r.current_revision)
            .ok_or(StoreError::NotFound)?;
        let rev = revision_row(&mut tx, s, revision).await?;
        if !rev.artifacts.iter().any(|a| a.artifact_key == artifact_key.as_str()) {
            return Err(StoreError::NotInPlan);
        }
        sqlx::query(
            "INSERT INTO artifact_status (status_id, artifact_key, state, message, updated_at) \
             VALUES ($1, $2, 'pending', 'triggered', $3) ON CONFLICT (status_id, artifact_key) DO UPDATE SET \
             state = 'pending', message = 'triggered', updated_at = excluded.updated_at",
        )
        .bind(&rev.status_id)
        .bind(artifact_key.as_str())
        .bind(ts(Utc::now()))
        .execute(&mut *tx)
        .await?;
        let data = json!({
            "selector": s,
            "organization": rev.organization,
            "trigger_id": trigger_id,
            "status_id": rev.status_id,
            "revision": rev.revision,
            "artifact_key": artifact_key.as_str(),
        });
        audit(&mut tx, actor, "deployment.triggered", s, Some(s), data.clone()).await?;
        insert_event(&mut tx, self.dialect, "deployment.triggered", s, &data).await?;
        tx.commit().await?;
        Ok(rev.status_id)
    }

    async fn list_events(&self, after: i64, limit: u32) -> StoreResult<Vec<Event>> {
        let rows =
            sqlx::query("SELECT id, type, at, selector, data FROM events WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(Event {
                    id: row.try_get("id")?,
                    kind: row.try_get("type")?,
                    at: row.time("at")?,
                    selector: row.try_get("selector")?,
                    data: row.json("data")?,
                })
            })
            .collect()
    }

    async fn claim_sink(
        &self,
        sink: &str,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<Option<i64>> {
        // One conditional UPDATE: of replicas racing for a free lease, one wins.
        let claim = || {
            sqlx::query_scalar(
                "UPDATE sink_positions SET lease_owner = $2, lease_expires_at = $4 \
                 WHERE sink = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at < $3) \
                 RETURNING last_event_id",
            )
            .bind(sink)
            .bind(owner)
            .bind(ts(now))
            .bind(ts(now + lease))
            .fetch_optional(&self.pool)
        };
        if let Some(position) = claim().await? {
            return Ok(Some(position));
        }
        // A sink delivered to for the first time starts before the first event.
        let created = sqlx::query(
            "INSERT INTO sink_positions (sink, last_event_id) VALUES ($1, 0) ON CONFLICT (sink) DO NOTHING",
        )
        .bind(sink)
        .execute(&self.pool)
        .await?;
        if created.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(claim().await?)
    }

    async fn advance_sink(
        &self,
        sink: &str,
        owner: &str,
        event_id: i64,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sink_positions SET lease_expires_at = $4, \
             last_event_id = CASE WHEN last_event_id < $3 THEN $3 ELSE last_event_id END \
             WHERE sink = $1 AND lease_owner = $2",
        )
        .bind(sink)
        .bind(owner)
        .bind(event_id)
        .bind(ts(now + lease))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_sink(&self, sink: &str, owner: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sink_positions SET lease_owner = NULL, lease_expires_at = NULL WHERE sink = $1 AND lease_owner = $2",
        )
        .bind(sink)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn sink_position(&self, sink: &str) -> StoreResult<i64> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT last_event_id FROM sink_positions WHERE sink = $1")
                .bind(sink)
                .fetch_optional(&self.pool)
                .await?;
        Ok(position.unwrap_or(0))
    }
}

async fn store_revision(
    tx: &mut AnyConnection,
    dialect: Dialect,
    selector: &str,
    new: &RevisionRow,
    diff: &plan::PlanDiff,
    created_at: DateTime<Utc>,
    new_incarnation: bool,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO revisions (selector, revision, status_id, organization, artifacts, diff, created_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(selector)
    .bind(new.revision)
    .bind(&new.status_id)
    .bind(&new.organization)
    .bind(to_json(&new.artifacts))
    .bind(to_json(&new.diff))
    .bind(ts(new.created_at))
    .bind(&new.created_by)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO deployments (selector, organization, current_revision, last_revision, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (selector) DO UPDATE SET organization = excluded.organization, \
         current_revision = excluded.current_revision, last_revision = excluded.last_revision, \
         created_at = excluded.created_at, updated_at = excluded.updated_at",
    )
    .bind(selector)
    .bind(&new.organization)
    .bind(new.revision)
    .bind(new.revision)
    .bind(ts(created_at))
    .bind(ts(new.created_at))
    .execute(&mut *tx)
    .await?;

    // The reverse index follows the diff, so a one-artifact change costs one row.
    let removed: Vec<&str> = diff.removed.iter().map(|e| e.artifact_key.as_str()).collect();
    if new_incarnation {
        sqlx::query("DELETE FROM current_plan_artifacts WHERE selector = $1")
            .bind(selector)
            .execute(&mut *tx)
            .await?;
    }
    if !removed.is_empty() {
        let sql = format!(
            "DELETE FROM current_plan_artifacts WHERE selector = $1 AND artifact_key IN {}",
            dialect.strings("$2")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(selector)
            .bind(to_json(&removed))
            .execute(&mut *tx)
            .await?;
    }
    let upserts: Vec<(&str, i64)> = diff
        .added
        .iter()
        .map(|e| (e.artifact_key.as_str(), e.version))
        .chain(diff.changed.iter().map(|c| (c.artifact_key.as_str(), c.new_version)))
        .collect();
    if !upserts.is_empty() {
        // `WHERE true` tells SQLite's parser that ON CONFLICT belongs to the INSERT.
        let sql = format!(
            "INSERT INTO current_plan_artifacts (artifact_key, selector, version) \
             SELECT p.k, $1, CAST(p.v AS BIGINT) FROM {} p WHERE true \
             ON CONFLICT (artifact_key, selector) DO UPDATE SET version = excluded.version",
            dialect.pairs("$2")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(selector)
            .bind(to_json(&upserts))
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Writes an event into the outbox: the last statement of its change's
/// transaction, as it may hold the outbox lock until commit.
async fn insert_event(
    tx: &mut AnyConnection,
    dialect: Dialect,
    kind: &str,
    selector: &str,
    data: &Value,
) -> StoreResult<()> {
    if let Some(lock) = dialect.lock_outbox() {
        sqlx::query(lock).execute(&mut *tx).await?;
    }
    sqlx::query("INSERT INTO events (type, at, selector, data) VALUES ($1, $2, $3, $4)")
        .bind(kind)
        .bind(ts(Utc::now()))
        .bind(selector)
        .bind(data.to_string())
        .execute(&mut *tx)
        .await?;
    if let Some(announce) = dialect.announce_event() {
        sqlx::query(announce).execute(&mut *tx).await?;
    }
    Ok(())
}

fn state_name(state: ArtifactState) -> &'static str {
    match state {
        ArtifactState::Pending => "pending",
        ArtifactState::InProgress => "in_progress",
        ArtifactState::Succeeded => "succeeded",
        ArtifactState::Failed => "failed",
    }
}

fn parse_state(name: &str) -> StoreResult<ArtifactState> {
    serde_json::from_value(json!(name)).map_err(|_| StoreError::Corrupt(format!("artifact state {name:?}")))
}

struct Reported {
    state: ArtifactState,
    message: Option<String>,
    updated_at: DateTime<Utc>,
}

async fn reported_states(
    conn: &mut AnyConnection,
    status_id: &str,
) -> StoreResult<BTreeMap<String, Reported>> {
    let rows = sqlx::query(
        "SELECT artifact_key, state, message, updated_at FROM artifact_status WHERE status_id = $1",
    )
    .bind(status_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let state: String = row.try_get("state")?;
            Ok((
                row.try_get("artifact_key")?,
                Reported {
                    state: parse_state(&state)?,
                    message: row.try_get("message")?,
                    updated_at: row.time("updated_at")?,
                },
            ))
        })
        .collect()
}

fn all_states<'a>(
    rev: &'a RevisionRow,
    reported: &BTreeMap<String, Reported>,
) -> HashMap<&'a str, ArtifactState> {
    rev.artifacts
        .iter()
        .map(|a| {
            (
                a.artifact_key.as_str(),
                reported.get(&a.artifact_key).map_or(ArtifactState::Pending, |r| r.state),
            )
        })
        .collect()
}

/// The revision a status id names, for this selector, and whether it is current.
async fn revision_by_status(
    conn: &mut AnyConnection,
    dialect: Dialect,
    selector: &Selector,
    status_id: &str,
) -> StoreResult<(RevisionRow, bool)> {
    let sql = format!("SELECT {REVISION_COLUMNS} FROM revisions WHERE selector = $1 AND status_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(selector.as_str())
        .bind(status_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    let rev = revision_from_row(&row)?;
    let current =
        deployment_row(conn, dialect, selector.as_str(), Hold::Read).await?.and_then(|d| d.current_revision)
            == Some(rev.revision);
    Ok((rev, current))
}

async fn status(
    conn: &mut AnyConnection,
    dialect: Dialect,
    selector: &Selector,
    status_id: &str,
) -> StoreResult<DeploymentStatus> {
    let (rev, current) = revision_by_status(conn, dialect, selector, status_id).await?;
    let reported = reported_states(conn, status_id).await?;
    let states = all_states(&rev, &reported);
    let artifacts = rev
        .artifacts
        .iter()
        .map(|a| {
            let report = reported.get(&a.artifact_key);
            ArtifactStatus {
                artifact_key: a.artifact_key.clone(),
                version: a.version,
                wave: a.wave,
                state: states[a.artifact_key.as_str()],
                message: report.and_then(|r| r.message.clone()),
                updated_at: report.map_or(rev.created_at, |r| r.updated_at),
            }
        })
        .collect();
    Ok(DeploymentStatus {
        selector: selector.to_string(),
        status_id: rev.status_id.clone(),
        revision: rev.revision,
        state: rollout::rollout_state(current, states.values().copied()),
        current,
        artifacts,
        ready: rollout::ready(&rev.artifacts, &states).into_iter().map(String::from).collect(),
    })
}
