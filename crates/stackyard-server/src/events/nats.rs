//! The NATS JetStream sink: each event published to `<prefix>.<type>` with
//! its id as `Nats-Msg-Id`, so JetStream drops a redelivered duplicate.

use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use stackyard_api::Event;

use super::Sink;
use crate::config::NatsSettings;

pub struct NatsSink {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    subject_prefix: String,
}

impl NatsSink {
    /// Connects and makes sure the stream exists; fails fast when the
    /// server cannot be reached or has no JetStream.
    pub async fn connect(settings: &NatsSettings) -> anyhow::Result<Self> {
        let options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));
        let client = tokio::time::timeout(Duration::from_secs(10), options.connect(&settings.url))
            .await
            .map_err(|_| {
                anyhow::anyhow!("NATS at {} did not answer within 10 s (STACKYARD_NATS_URL)", settings.url)
            })?
            .map_err(|e| {
                anyhow::anyhow!("cannot connect to NATS at {} (STACKYARD_NATS_URL): {e}", settings.url)
            })?;
        let jetstream = jetstream::new(client.clone());
        let config = jetstream::stream::Config {
            name: settings.stream.clone(),
            subjects: vec![format!("{}.>", settings.subject_prefix)],
            ..Default::default()
        };
        jetstream.get_or_create_stream(config).await.map_err(|e| {
            anyhow::anyhow!(
                "NATS at {} has no usable JetStream stream '{}' for {}.> (is JetStream enabled?): {e}",
                settings.url,
                settings.stream,
                settings.subject_prefix
            )
        })?;
        Ok(Self { client, jetstream, subject_prefix: settings.subject_prefix.clone() })
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

#[async_trait]
impl Sink for NatsSink {
    fn name(&self) -> &str {
        "nats"
    }

    async fn deliver(&self, event: &Event, body: &[u8]) -> Result<(), String> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.to_string().as_str());
        headers.insert("Stackyard-Event", event.kind.as_str());
        let subject = format!("{}.{}", self.subject_prefix, event.kind);
        let ack = self
            .jetstream
            .publish_with_headers(subject, headers, body.to_vec().into())
            .await
            .map_err(|e| e.to_string())?;
        // Delivered once JetStream has stored it.
        ack.await.map(|_| ()).map_err(|e| e.to_string())
    }
}
