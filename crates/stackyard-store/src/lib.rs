//! Stackyard's storage, behind two small interfaces of our own:
//!
//! - [`MetadataStore`]: [`ArtifactStore`] (uploads, artifacts, versions) and
//!   [`DeploymentStore`] (plans, revisions, status, events). SQLite now; the
//!   traits speak in registry operations, not SQL, so other databases fit.
//! - [`BlobStore`]: package bytes, addressed by digest (local disk now).
//!
//! The rule that ties them: bytes go into the blob store, complete and
//! verified, *before* the metadata that points at them is committed. A crash
//! in between leaves at worst an unreferenced blob, never a version whose
//! package is missing or partial.

pub mod blob;
mod metadata;
pub mod rollout;
pub mod sqlite;

pub use blob::{BlobRange, BlobReader, BlobStore, FsBlobStore};
pub use metadata::*;
pub use sqlite::SqliteStore;
