//! Event delivery: each sink (webhooks, NATS JetStream) has a dispatcher
//! that reads the outbox after the sink's last delivered id and hands the
//! events over in order.
//!
//! Delivery is at least once: the sink's position moves only after the sink
//! accepted the event. With many replicas, one at a time delivers to a sink:
//! it holds the sink's lease in the database (`sink_lease_secs`), renewing
//! it with every delivery and poll; when it stops it hands the lease back,
//! and when it dies another takes over where it left off once the lease
//! expires. Strict order per sink keeps events in order per
//! selector. A failing sink is retried with exponential backoff in its own
//! task, so it never blocks the API or the other sinks.

pub mod nats;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stackyard_api::Event;
use stackyard_store::MetadataStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use webhook::{WebhookSettings, WebhookSink, signature};

/// Somewhere events are delivered to.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Names the sink; its position and lease are kept under this name.
    fn name(&self) -> &str;
    /// Delivers one event (`body` is its JSON); Ok once the sink has accepted it.
    async fn deliver(&self, event: &Event, body: &[u8]) -> Result<(), String>;
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

const BATCH: u32 = 100;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How this replica takes part in delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Names this replica in leases.
    pub owner: String,
    /// How long a lease lasts unrenewed.
    pub lease: Duration,
    /// How often to look for events without a wake-up.
    pub poll: Duration,
}

/// Starts one dispatcher per sink.
pub fn spawn_dispatchers(
    store: Arc<dyn MetadataStore>,
    sinks: Vec<Arc<dyn Sink>>,
    delivery: &Delivery,
    notifier: &EventNotifier,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let lease = chrono::Duration::from_std(delivery.lease).expect("a lease of seconds");
    sinks
        .into_iter()
        .map(|sink| {
            let dispatcher = Dispatcher {
                store: store.clone(),
                sink,
                owner: delivery.owner.clone(),
                lease,
                poll: delivery.poll,
                stop: stop.clone(),
            };
            tokio::spawn(dispatcher.run(notifier.subscribe()))
        })
        .collect()
}

struct Dispatcher {
    store: Arc<dyn MetadataStore>,
    sink: Arc<dyn Sink>,
    owner: String,
    lease: chrono::Duration,
    poll: Duration,
    stop: CancellationToken,
}

impl Dispatcher {
    async fn run(self, mut wake: watch::Receiver<u64>) {
        let name = self.sink.name().to_string();
        loop {
            // Claiming also renews the lease while there is nothing to deliver.
            let position =
                match self.store.claim_sink(&name, &self.owner, chrono::Utc::now(), self.lease).await {
                    Ok(position) => position,
                    Err(e) => {
                        tracing::error!(sink = %name, error = %e, "claiming the sink's lease failed");
                        None
                    }
                };
            let events = match position {
                Some(position) => self.store.list_events(position, BATCH).await.unwrap_or_else(|e| {
                    tracing::error!(sink = %name, error = %e, "reading events failed");
                    Vec::new()
                }),
                None => Vec::new(),
            };
            if events.is_empty() {
                tokio::select! {
                    () = self.stop.cancelled() => break,
                    _ = wake.changed() => {}
                    () = tokio::time::sleep(self.poll) => {}
                }
                continue;
            }
            for event in events {
                match self.deliver_until_accepted(&event).await {
                    Outcome::Accepted => {}
                    Outcome::LostLease => break,
                    Outcome::Stopping => {
                        self.release(&name).await;
                        return;
                    }
                }
                match self
                    .store
                    .advance_sink(&name, &self.owner, event.id, chrono::Utc::now(), self.lease)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(sink = %name, "another replica took over this sink");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(sink = %name, error = %e, "recording the sink's position failed");
                        break;
                    }
                }
            }
        }
        self.release(&name).await;
    }

    async fn release(&self, name: &str) {
        if let Err(e) = self.store.release_sink(name, &self.owner).await {
            tracing::warn!(sink = %name, error = %e, "releasing the sink's lease failed");
        }
    }

    /// Retries one event until the sink accepts it, renewing the lease between attempts.
    async fn deliver_until_accepted(&self, event: &Event) -> Outcome {
        let body = serde_json::to_vec(event).expect("events serialise");
        let name = self.sink.name();
        let mut delay = FIRST_RETRY;
        for attempt in 1.. {
            match self.sink.deliver(event, &body).await {
                Ok(()) => return Outcome::Accepted,
                Err(e) => {
                    tracing::warn!(sink = %name, event = event.id, attempt, error = %e, "event delivery failed; retrying");
                    tokio::select! {
                        () = self.stop.cancelled() => return Outcome::Stopping,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(MAX_RETRY);
                    match self.store.claim_sink(name, &self.owner, chrono::Utc::now(), self.lease).await {
                        Ok(Some(_)) => {}
                        Ok(None) => return Outcome::LostLease,
                        Err(e) => {
                            tracing::error!(sink = %name, error = %e, "renewing the sink's lease failed")
                        }
                    }
                }
            }
        }
        unreachable!("the retry loop only ends by returning")
    }
}

/// How delivering one event ended.
enum Outcome {
    Accepted,
    LostLease,
    Stopping,
}

/// Wakes this process's dispatchers whenever any replica writes an event:
/// PostgreSQL notifies [`stackyard_store::sql::EVENTS_CHANNEL`] at each
/// event's commit. Reconnects by itself; polling covers the gaps.
pub async fn wake_on_postgres_notifications(url: String, notifier: EventNotifier, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            error = listen(&url, &notifier) => {
                tracing::warn!(error = %error, "listening for PostgreSQL event notifications failed; retrying");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Notifies `notifier` of every notification until the connection fails.
async fn listen(url: &str, notifier: &EventNotifier) -> sqlx::Error {
    let mut listener = match sqlx::postgres::PgListener::connect(url).await {
        Ok(listener) => listener,
        Err(e) => return e,
    };
    if let Err(e) = listener.listen(stackyard_store::sql::EVENTS_CHANNEL).await {
        return e;
    }
    loop {
        if let Err(e) = listener.recv().await {
            return e;
        }
        notifier.notify();
    }
}
