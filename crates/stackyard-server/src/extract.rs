//! Request extractors whose rejections are problem+json, not plain text.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// `axum::Json`, answering malformed bodies with a clear problem.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let max_depth = state.settings.limits.max_json_depth;
        let value: axum::Json<serde_json::Value> =
            axum::Json::from_request(req, state).await.map_err(json_rejection)?;
        // serde_json stops at 128 levels by itself; ours is stricter and says so.
        if depth(&value.0) > max_depth {
            return Err(ApiError::bad_request(
                "json_too_deep",
                format!("the JSON body nests deeper than {max_depth} levels"),
            ));
        }
        serde_json::from_value(value.0)
            .map(Self)
            .map_err(|e| ApiError::bad_request("invalid_body", format!("the body does not match: {e}")))
    }
}

fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request body must be JSON, sent with 'Content-Type: application/json'",
        ),
        JsonRejection::JsonDataError(e) => ApiError::bad_request("invalid_body", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("invalid_json", e.body_text()),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is too large")
        }
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// The query string as ordered pairs, so a parameter may repeat
/// (`?label=a=1&label=b=2`). Unknown parameters are refused by the handlers,
/// which name the ones they accept.
pub struct QueryPairs(pub Vec<(String, String)>);

impl FromRequestParts<AppState> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
            ApiError::bad_request("invalid_query", format!("the query string is malformed: {e}"))
        })?;
        let values = pairs.iter().map(|(_, v)| v.split(',').count()).sum::<usize>();
        let max = state.settings.limits.max_query_values;
        if values > max {
            return Err(ApiError::bad_request(
                "too_many_query_values",
                format!("the query holds {values} values; at most {max} are allowed"),
            ));
        }
        Ok(Self(pairs))
    }
}

impl QueryPairs {
    /// Fails on any parameter outside `allowed`.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(ApiError::bad_request(
                "unknown_parameter",
                format!("unknown query parameter '{k}'; this endpoint takes {}", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// The last value of a parameter.
    pub fn one(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A JSON body that may also be left out entirely (`T::default()` then).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let empty = req.headers().get(axum::http::header::CONTENT_LENGTH).is_some_and(|v| v == "0")
            || (req.headers().get(axum::http::header::CONTENT_TYPE).is_none()
                && req.headers().get(axum::http::header::TRANSFER_ENCODING).is_none()
                && req.headers().get(axum::http::header::CONTENT_LENGTH).is_none());
        if empty {
            return Ok(Self(T::default()));
        }
        ApiJson::<T>::from_request(req, state).await.map(|ApiJson(v)| Self(v))
    }
}
