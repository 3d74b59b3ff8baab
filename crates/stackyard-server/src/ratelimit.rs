//! Per-token request rate limits: a token bucket per token (per client
//! address for requests without one), answering 429 with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::auth::Caller;
use crate::config::Limits;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Clone)]
pub struct RateLimiter(Arc<DefaultKeyedRateLimiter<String>>);

impl RateLimiter {
    pub fn new(limits: &Limits) -> Self {
        let rate = NonZeroU32::new(limits.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.request_burst.max(limits.requests_per_second)).unwrap_or(rate);
        Self(Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))))
    }
}

/// Middleware, after authentication: charges the request to its token.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let caller = request.extensions().get::<Caller>().cloned().unwrap_or_default();
    let key = match (&caller.principal, &caller.remote_addr) {
        (Some(p), _) if p.token_id.is_some() => p.token_id.clone().unwrap_or_default(),
        (_, Some(addr)) => {
            format!("addr:{}", addr.parse::<IpAddr>().map_or(addr.clone(), |ip| ip.to_string()))
        }
        _ => "anonymous".to_string(),
    };
    match state.rate_limiter.0.check_key(&key) {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests for this token; retry in {seconds} s"),
            )
            .into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            response
        }
    }
}
