//! Webhook sinks: each event POSTed as JSON, signed with HMAC-SHA256.

use async_trait::async_trait;
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use stackyard_api::Event;

use super::Sink;

/// A webhook sink, from the `[[webhooks]]` tables of the configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Names the sink; its delivery position is kept under this name.
    pub name: String,
    pub url: String,
    /// Signs each body: `X-Stackyard-Signature: sha256=<hex hmac>`.
    pub secret: String,
}

pub struct WebhookSink {
    settings: WebhookSettings,
    client: reqwest::Client,
}

impl WebhookSink {
    pub fn new(settings: WebhookSettings, client: reqwest::Client) -> Self {
        Self { settings, client }
    }
}

/// The signature header's value for a body.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.settings.name
    }

    async fn deliver(&self, event: &Event, body: &[u8]) -> Result<(), String> {
        let response = self
            .client
            .post(&self.settings.url)
            .header("content-type", "application/json")
            .header("x-stackyard-event", &event.kind)
            .header("x-stackyard-event-id", event.id.to_string())
            .header("x-stackyard-signature", signature(&self.settings.secret, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("the sink answered {}", response.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_bodies_with_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
