//! `stackyard token create|ls|revoke` through the API, and
//! `stackyard admin token create` straight on the data dir for recovery.

use std::path::Path;

use stackyard_api::{TokenCreated, TokenRequest};
use stackyard_server::storage::{self, DatabaseUrl};
use stackyard_store::AccessStore;

use super::{CliError, CliResult, Context, Exit, table};

pub fn request(
    name: String,
    role: String,
    orgs: Vec<String>,
    selectors: Vec<String>,
    expires_in: Option<u64>,
) -> TokenRequest {
    TokenRequest {
        name,
        role,
        organizations: (!orgs.is_empty()).then_some(orgs),
        selectors: (!selectors.is_empty()).then_some(selectors),
        expires_in,
    }
}

fn show_created(t: &TokenCreated) -> String {
    format!("created token {} ({}, {}). Its secret, shown only now:\n{}", t.id, t.name, t.role, t.token)
}

pub async fn create(ctx: &Context, request: TokenRequest) -> CliResult {
    let created = ctx.client.create_token(&request).await?;
    ctx.emit(&created, show_created)
}

pub async fn list(ctx: &Context) -> CliResult {
    let tokens = ctx.client.tokens().await?;
    ctx.emit(&tokens, |tokens| {
        let rows: Vec<Vec<String>> = tokens
            .iter()
            .map(|t| {
                let scope = [t.organizations.join(","), t.selectors.join(",")].join(" ").trim().to_string();
                let state = match (&t.revoked_at, &t.expires_at) {
                    (Some(_), _) => "revoked".to_string(),
                    (None, Some(at)) if *at <= chrono::Utc::now() => "expired".to_string(),
                    (None, Some(at)) => format!("until {}", at.to_rfc3339()),
                    (None, None) => "active".to_string(),
                };
                let used = t.last_used_at.map_or_else(|| "never".to_string(), |at| at.to_rfc3339());
                vec![
                    t.id.clone(),
                    t.name.clone(),
                    t.role.clone(),
                    if scope.is_empty() { "-".into() } else { scope },
                    state,
                    used,
                ]
            })
            .collect();
        table(&["ID", "NAME", "ROLE", "SCOPE", "STATE", "LAST USED"], &rows)
    })
}

pub async fn revoke(ctx: &Context, id: &str) -> CliResult {
    ctx.client.revoke_token(id).await?;
    ctx.info(format!("revoked {id}"));
    Ok(())
}

/// Creates a token directly in the database (the data dir's SQLite file, or
/// `database`), without the server: the way back in when every admin token is lost.
pub async fn create_offline(
    ctx: &Context,
    data_dir: &Path,
    database: Option<DatabaseUrl>,
    request: TokenRequest,
) -> CliResult {
    let (role, scope, expires_at) =
        stackyard_server::check_token_request(&request).map_err(|e| CliError::usage(e.problem().detail))?;
    let database = match database {
        Some(url) => url,
        None => {
            let db = data_dir.join("stackyard.db");
            if !db.exists() {
                return Err(CliError::usage(format!(
                    "{} has no database: is --data-dir right?",
                    data_dir.display()
                )));
            }
            DatabaseUrl::Sqlite(db)
        }
    };
    let store = storage::open_metadata(Some(&database), data_dir, 1)
        .await
        .map_err(|e| CliError::new(Exit::Failed, format!("{e:#}")))?;
    let secret = stackyard_server::auth::new_secret();
    let record = stackyard_server::auth::token_record(&secret, request.name.trim(), role, &scope, expires_at);
    let actor = stackyard_store::Actor { name: "stackyard admin".into(), token_id: None, remote_addr: None };
    store.create_token(&record, &actor).await.map_err(|e| CliError::new(Exit::Failed, e.to_string()))?;
    let created = stackyard_server::auth::token_created(record.info, secret);
    ctx.emit(&created, show_created)
}
