//! What every handler can reach.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use stackyard_store::{BlobStore, MetadataStore};

use crate::config::Settings;
use crate::events::EventNotifier;
use crate::events::nats::NatsSink;
use crate::metrics::Metrics;
use crate::presign::UploadSigner;
use crate::ratelimit::RateLimiter;

/// The server's shared state, behind one reference count: axum clones the
/// state for every request, and cloning each part (and copying the spool
/// path) cost 4% of a deployment read.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Arc<dyn MetadataStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub settings: Arc<Settings>,
    pub signer: Arc<UploadSigner>,
    pub metrics: Arc<Metrics>,
    /// Base URL for presigned URLs, without a trailing slash.
    pub public_url: Arc<str>,
    /// Where uploads are written while they arrive, on the blob store's disk.
    pub spool_dir: PathBuf,
    /// Wakes the event dispatchers after a change wrote an event.
    pub events: EventNotifier,
    pub rate_limiter: RateLimiter,
    /// The NATS sink, when configured (readiness reports its connection).
    pub nats: Option<Arc<NatsSink>>,
}
