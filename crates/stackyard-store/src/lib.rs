//! Stackyard's storage, behind two small interfaces of our own:
//!
//! - [`MetadataStore`]: [`ArtifactStore`] (uploads, artifacts, versions) and
//!   [`DeploymentStore`] (plans, revisions, status, events), implemented
//!   once by [`SqlStore`] for SQLite and PostgreSQL.
//! - [`BlobStore`]: package bytes, addressed by digest, on local disk
//!   ([`FsBlobStore`]) or an S3-compatible object store ([`S3BlobStore`]).
//!
//! The rule that ties them: bytes go into the blob store, complete and
//! verified, *before* the metadata that points at them is committed. A crash
//! in between leaves at worst an unreferenced blob, never a version whose
//! package is missing or partial.

pub mod blob;
mod metadata;
pub mod rollout;
pub mod s3;
pub mod sql;

pub use blob::{BlobRange, BlobReader, BlobStore, DirectUploads, FsBlobStore, PresignedPost, StagedObject};
pub use metadata::*;
pub use s3::{S3BlobStore, S3Config};
pub use sql::{Dialect, SqlStore};
