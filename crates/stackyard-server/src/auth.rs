//! Authentication and authorisation.
//!
//! A middleware resolves `Authorization: Bearer <token>` to a [`Principal`]
//! (or none) once per request; each handler then states what it needs with
//! [`Caller::require`]. A bad, revoked or expired token is refused at once
//! with 401, whatever the route. Deployments outside a token's scope answer
//! 404, exactly as if they did not exist.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use stackyard_api::TokenInfo;
use stackyard_core::access::{Access, Role, Scope};
use stackyard_store::{Actor, MetadataStore, TokenRecord};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Who is calling, as a token made them.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: Option<String>,
    pub name: String,
    pub role: Role,
    pub scope: Scope,
}

/// The request's principal, if it presented a valid token, and where it came from.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub principal: Option<Principal>,
    pub remote_addr: Option<String>,
}

impl Caller {
    /// Who is making a change, for the audit log.
    pub fn actor(&self) -> Actor {
        Actor {
            name: self.principal.as_ref().map_or_else(|| "anonymous".to_string(), |p| p.name.clone()),
            token_id: self.principal.as_ref().and_then(|p| p.token_id.clone()),
            remote_addr: self.remote_addr.clone(),
        }
    }

    /// 401 without a token, 403 when its role does not grant `access`.
    pub fn require(&self, access: Access) -> ApiResult<&Principal> {
        let Some(principal) = &self.principal else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this request needs a token: Authorization: Bearer <token>",
            ));
        };
        if !principal.role.grants(access) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "a {} token cannot do this; it needs the {} role",
                    principal.role,
                    access.role_name()
                ),
            ));
        }
        Ok(principal)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned().unwrap_or_default())
    }
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret: 256 bits.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("sy_{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub fn new_token_id() -> String {
    let mut bytes = [0u8; 8];
    rand::fill(&mut bytes);
    format!("tok_{}", hex::encode(bytes))
}

/// Builds the record of a new token around its secret.
pub fn token_record(
    secret: &str,
    name: &str,
    role: Role,
    scope: &Scope,
    expires_at: Option<DateTime<Utc>>,
) -> TokenRecord {
    TokenRecord {
        info: TokenInfo {
            id: new_token_id(),
            name: name.to_string(),
            role: role.as_str().to_string(),
            organizations: scope.organizations.clone(),
            selectors: scope.selectors.clone(),
            expires_at,
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
        },
        secret_hash: hash_secret(secret),
    }
}

/// The answer to a token's creation: its record, with the secret shown this once.
pub fn token_created(info: TokenInfo, secret: String) -> stackyard_api::TokenCreated {
    stackyard_api::TokenCreated {
        id: info.id,
        token: secret,
        name: info.name,
        role: info.role,
        organizations: info.organizations,
        selectors: info.selectors,
        expires_at: info.expires_at,
        created_at: info.created_at,
    }
}

fn unauthorized(detail: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", detail).into_response()
}

/// Middleware: resolves the bearer token, refusing bad ones with 401.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let remote_addr = client_address(&request, &state.settings.trusted_proxies);
    if state.settings.insecure_no_auth {
        let everyone = Principal {
            token_id: None,
            name: "anonymous".into(),
            role: Role::Admin,
            scope: Scope::default(),
        };
        request.extensions_mut().insert(Caller { principal: Some(everyone), remote_addr });
        return next.run(request).await;
    }
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        request.extensions_mut().insert(Caller { principal: None, remote_addr });
        return next.run(request).await;
    };
    let secret = match value.to_str().ok().and_then(|v| v.split_once(' ')) {
        Some((scheme, secret)) if scheme.eq_ignore_ascii_case("bearer") && !secret.trim().is_empty() => {
            secret.trim()
        }
        _ => return unauthorized("the Authorization header must be 'Bearer <token>'"),
    };
    let token = match state.store.token_by_hash(&hash_secret(secret)).await {
        Ok(Some(token)) => token,
        Ok(None) => return unauthorized("the token is not valid"),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let now = Utc::now();
    if token.revoked_at.is_some() {
        return unauthorized("the token has been revoked");
    }
    if token.expires_at.is_some_and(|at| at <= now) {
        return unauthorized("the token has expired");
    }
    // Recorded at most once a minute: one write per request would cost more than the request.
    if token.last_used_at.is_none_or(|at| now - at > chrono::Duration::seconds(60))
        && let Err(e) = state.store.touch_token(&token.id, now).await
    {
        tracing::warn!(error = %e, "recording a token's last use failed");
    }
    let Some(role) = Role::parse(&token.role) else {
        return ApiError::internal(format!("token {} has an unknown role {:?}", token.id, token.role))
            .into_response();
    };
    let principal = Principal {
        token_id: Some(token.id),
        name: token.name,
        role,
        scope: Scope { organizations: token.organizations, selectors: token.selectors },
    };
    request.extensions_mut().insert(Caller { principal: Some(principal), remote_addr });
    next.run(request).await
}

/// The client's address: the peer's, unless the peer is a trusted proxy, in
/// which case the nearest untrusted hop of `X-Forwarded-For`. Headers from
/// anyone else are ignored, so clients cannot claim another address.
pub fn client_address(request: &Request, trusted: &[IpAddr]) -> Option<String> {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip();
    if !trusted.contains(&peer) {
        return Some(peer.to_string());
    }
    let forwarded = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    let client =
        forwarded.iter().rev().find(|hop| !trusted.contains(hop)).or(forwarded.first()).unwrap_or(&peer);
    Some(client.to_string())
}

/// On a store with no usable admin token, creates one: the configured
/// bootstrap secret, or a new one printed once and written (owner-only) to
/// `<data-dir>/admin.token`.
pub async fn bootstrap_admin(
    store: &dyn MetadataStore,
    data_dir: &Path,
    configured: Option<&str>,
) -> anyhow::Result<()> {
    if store.has_active_admin(Utc::now()).await? {
        return Ok(());
    }
    let (secret, generated) = match configured {
        Some(secret) => (secret.to_string(), false),
        None => (new_secret(), true),
    };
    let record = token_record(&secret, "bootstrap admin", Role::Admin, &Scope::default(), None);
    if let Err(e) = store.create_token(&record, &Actor::system()).await {
        // Replicas starting together race here; one creating it is enough.
        if store.has_active_admin(Utc::now()).await? {
            return Ok(());
        }
        return Err(e.into());
    }
    if generated {
        let path = data_dir.join("admin.token");
        std::fs::remove_file(&path).ok();
        crate::presign::write_private(&path, &format!("{secret}\n"))?;
        tracing::warn!(file = %path.display(), "created the first admin token (shown once): {secret}");
    } else {
        tracing::info!("created the first admin token from STACKYARD_BOOTSTRAP_TOKEN");
    }
    Ok(())
}

/// Whether `caller` may see a deployment with this selector and organization.
pub fn visible(principal: &Principal, selector: &str, organization: Option<&str>) -> bool {
    principal.scope.allows(selector, organization)
}
