//! `limit` and `cursor`, the same for every list.
//!
//! A cursor is the opaque (base64url) sort key of the last item returned, so
//! pages stay stable while items are inserted (keyset pagination).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ApiError;
use crate::extract::QueryPairs;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

pub struct Page {
    pub limit: u32,
    pub after: Option<String>,
}

impl Page {
    pub fn from_query(query: &QueryPairs) -> Result<Self, ApiError> {
        let limit = match query.one("limit") {
            None => DEFAULT_LIMIT,
            Some(text) => match text.parse::<u64>() {
                // Above the maximum is clamped, never an error.
                Ok(n) if n >= 1 => n.min(u64::from(MAX_LIMIT)) as u32,
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_limit",
                        format!("limit must be a whole number from 1 (at most {MAX_LIMIT} are returned)"),
                    ));
                }
            },
        };
        let after = query.one("cursor").filter(|c| !c.is_empty()).map(decode_cursor).transpose()?;
        Ok(Self { limit, after })
    }

    /// The next cursor, when a full page suggests more items follow.
    pub fn next_cursor<T, K: AsRef<[u8]>>(&self, items: &[T], sort_key: impl Fn(&T) -> K) -> Option<String> {
        if items.len() < self.limit as usize {
            return None;
        }
        items.last().map(|last| URL_SAFE_NO_PAD.encode(sort_key(last)))
    }
}

/// A numeric sort key out of a cursor.
pub fn numeric(after: &str) -> Result<i64, ApiError> {
    after
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_cursor", "the cursor is not one this server returned"))
}

fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| ApiError::bad_request("invalid_cursor", "the cursor is not one this server returned"))
}
