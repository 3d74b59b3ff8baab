//! Event delivery: each configured webhook sink has a dispatcher that reads
//! the outbox after its last delivered id and POSTs the events in order.
//!
//! Delivery is at least once: the sink's position moves only after a 2xx.
//! A failing sink is retried with exponential backoff, in its own task, so it
//! never blocks the API or the other sinks; strict order per sink keeps
//! events in order per selector.

use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde::Deserialize;
use stackyard_api::Event;
use stackyard_store::MetadataStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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

/// Wakes the dispatchers when a change has written an event.
#[derive(Clone)]
pub struct EventNotifier(Arc<watch::Sender<u64>>);

impl EventNotifier {
    pub fn new() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }

    pub fn notify(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

impl Default for EventNotifier {
    fn default() -> Self {
        Self::new()
    }
}

/// The signature header's value for a body.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

const BATCH: u32 = 100;
/// Without a wake-up (another replica wrote, or one was missed) poll this often.
const POLL: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(30);

pub fn spawn_dispatchers(
    store: Arc<dyn MetadataStore>,
    sinks: &[WebhookSettings],
    notifier: &EventNotifier,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("an HTTP client");
    sinks
        .iter()
        .map(|sink| {
            let dispatcher = Dispatcher {
                store: store.clone(),
                sink: sink.clone(),
                client: client.clone(),
                stop: stop.clone(),
            };
            tokio::spawn(dispatcher.run(notifier.subscribe()))
        })
        .collect()
}

struct Dispatcher {
    store: Arc<dyn MetadataStore>,
    sink: WebhookSettings,
    client: reqwest::Client,
    stop: CancellationToken,
}

impl Dispatcher {
    async fn run(self, mut wake: watch::Receiver<u64>) {
        let name = &self.sink.name;
        let mut position = loop {
            match self.store.sink_position(name).await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::error!(sink = %name, error = %e, "reading the sink's position failed");
                    if self.pause(FIRST_RETRY).await {
                        return;
                    }
                }
            }
        };
        loop {
            let events = match self.store.list_events(position, BATCH).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(sink = %name, error = %e, "reading events failed");
                    Vec::new()
                }
            };
            if events.is_empty() {
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    _ = wake.changed() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            for event in events {
                if !self.deliver_until_accepted(&event).await {
                    return;
                }
                position = event.id;
                if let Err(e) = self.store.set_sink_position(name, position).await {
                    tracing::error!(sink = %name, error = %e, "recording the sink's position failed");
                }
            }
        }
    }

    /// Retries one event until the sink accepts it; false when stopping.
    async fn deliver_until_accepted(&self, event: &Event) -> bool {
        let body = serde_json::to_vec(event).expect("events serialise");
        let mut delay = FIRST_RETRY;
        for attempt in 1.. {
            match self.deliver(event, &body).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(sink = %self.sink.name, event = event.id, attempt, error = %e, "webhook delivery failed; retrying");
                    if self.pause(delay).await {
                        return false;
                    }
                    delay = (delay * 2).min(MAX_RETRY);
                }
            }
        }
        unreachable!("the retry loop only ends by returning")
    }

    async fn deliver(&self, event: &Event, body: &[u8]) -> Result<(), String> {
        let response = self
            .client
            .post(&self.sink.url)
            .header("content-type", "application/json")
            .header("x-stackyard-event", &event.kind)
            .header("x-stackyard-event-id", event.id.to_string())
            .header("x-stackyard-signature", signature(&self.sink.secret, body))
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

    /// Sleeps, unless stopping first; answers whether to stop.
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            () = self.stop.cancelled() => true,
            () = tokio::time::sleep(delay) => false,
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
