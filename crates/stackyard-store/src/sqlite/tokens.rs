//! API tokens on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use stackyard_api::TokenInfo;

use super::{SqliteStore, json, to_json};
use crate::metadata::*;

const COLUMNS: &str =
    "id, name, role, organizations, selectors, created_at, expires_at, last_used_at, revoked_at";

fn token_from_row(row: &SqliteRow) -> StoreResult<TokenInfo> {
    Ok(TokenInfo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        organizations: json(row, "organizations")?,
        selectors: json(row, "selectors")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn create_token(&self, t: &TokenRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO tokens (id, name, role, organizations, selectors, secret_hash, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.info.id)
        .bind(&t.info.name)
        .bind(&t.info.role)
        .bind(to_json(&t.info.organizations))
        .bind(to_json(&t.info.selectors))
        .bind(&t.secret_hash)
        .bind(t.info.created_at)
        .bind(t.info.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn token_by_hash(&self, secret_hash: &str) -> StoreResult<Option<TokenInfo>> {
        let sql = format!("SELECT {COLUMNS} FROM tokens WHERE secret_hash = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(secret_hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<TokenInfo>> {
        let sql = format!("SELECT {COLUMNS} FROM tokens WHERE id > ? ORDER BY id LIMIT ?");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<TokenInfo> {
        let sql = format!(
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(at)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        token_from_row(&row)
    }

    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE tokens SET last_used_at = ? WHERE id = ?")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn has_active_admin(&self, now: DateTime<Utc>) -> StoreResult<bool> {
        let found = sqlx::query(
            "SELECT 1 FROM tokens WHERE role = 'admin' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }
}
