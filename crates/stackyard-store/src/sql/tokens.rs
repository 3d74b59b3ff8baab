//! API tokens and the audit log.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use stackyard_api::{AuditEntry, TokenInfo};

use super::{Columns, SqlStore, Statement, audit, to_json, ts};
use crate::metadata::*;

macro_rules! columns {
    () => {
        "id, name, role, organizations, selectors, created_at, expires_at, last_used_at, revoked_at"
    };
}
const COLUMNS: &str = columns!();
/// Built once: every authenticated request runs it.
const BY_HASH: &str = concat!("SELECT ", columns!(), " FROM tokens WHERE secret_hash = $1");

fn token_from_row(row: &impl Columns) -> StoreResult<TokenInfo> {
    Ok(TokenInfo {
        id: row.text("id")?,
        name: row.text("name")?,
        role: row.text("role")?,
        organizations: row.json("organizations")?,
        selectors: row.json("selectors")?,
        created_at: row.time("created_at")?,
        expires_at: row.maybe_time("expires_at")?,
        last_used_at: row.maybe_time("last_used_at")?,
        revoked_at: row.maybe_time("revoked_at")?,
    })
}

#[async_trait]
impl AccessStore for SqlStore {
    async fn create_token(&self, t: &TokenRecord, actor: &Actor) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO tokens (id, name, role, organizations, selectors, secret_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.info.id)
        .bind(&t.info.name)
        .bind(&t.info.role)
        .bind(to_json(&t.info.organizations))
        .bind(to_json(&t.info.selectors))
        .bind(&t.secret_hash)
        .bind(ts(t.info.created_at))
        .bind(t.info.expires_at.map(ts))
        .execute(&mut *tx)
        .await?;
        let details = serde_json::json!({
            "name": t.info.name,
            "role": t.info.role,
            "organizations": t.info.organizations,
            "selectors": t.info.selectors,
            "expires_at": t.info.expires_at,
        });
        audit(&mut tx, actor, "token.created", &t.info.id, None, details).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn token_by_hash(&self, secret_hash: &str) -> StoreResult<Option<TokenInfo>> {
        if let Some(read) = self.read_inline(BY_HASH, secret_hash, |row| token_from_row(row)) {
            return read;
        }
        let row = sqlx::query(BY_HASH).bind(secret_hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<TokenInfo>> {
        let sql = format!("SELECT {COLUMNS} FROM tokens WHERE id > $1 ORDER BY id LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, id: &str, at: DateTime<Utc>, actor: &Actor) -> StoreResult<TokenInfo> {
        let mut tx = self.write().await?;
        // Two revocations racing must not both see the other's admin left.
        let lock =
            format!("SELECT id FROM tokens WHERE role = 'admin' ORDER BY id{}", self.dialect.for_update());
        sqlx::query(sqlx::AssertSqlSafe(lock)).fetch_all(&mut *tx).await?;
        let sql = format!(
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ts(at))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let token = token_from_row(&row)?;
        let admins_left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tokens WHERE role = 'admin' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(ts(at))
        .fetch_one(&mut *tx)
        .await?;
        if token.role == "admin" && admins_left == 0 {
            // Rolled back: nobody could manage tokens through the API any more.
            return Err(StoreError::LastAdmin);
        }
        audit(&mut tx, actor, "token.revoked", id, None, serde_json::json!({"name": token.name})).await?;
        tx.commit().await?;
        Ok(token)
    }

    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
            .bind(ts(at))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn has_active_admin(&self, now: DateTime<Utc>) -> StoreResult<bool> {
        let found = sqlx::query(
            "SELECT 1 FROM tokens WHERE role = 'admin' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(ts(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    async fn list_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let mut sql = Statement::new(
            "SELECT id, at, actor, action, target, remote_addr, details FROM audit_log WHERE id > ",
        );
        let after = sql.int(q.after_id.unwrap_or(0));
        sql.push(&after);
        if let Some(actor) = &q.actor {
            let actor = sql.text(actor.clone());
            sql.push(&format!(" AND actor = {actor}"));
        }
        if let Some(selector) = &q.selector {
            let selector = sql.text(selector.clone());
            sql.push(&format!(" AND selector = {selector}"));
        }
        if let Some(since) = q.since {
            let since = sql.text(ts(since));
            sql.push(&format!(" AND at >= {since}"));
        }
        let limit = sql.int(i64::from(q.limit));
        sql.push(&format!(" ORDER BY id LIMIT {limit}"));
        let rows = sql.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    at: row.time("at")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    remote_addr: row.try_get("remote_addr")?,
                    details: row.json("details")?,
                })
            })
            .collect()
    }
}
