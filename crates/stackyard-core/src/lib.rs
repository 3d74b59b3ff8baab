//! Stackyard's domain: the names, identifiers and rules of the registry,
//! with no I/O beyond reading a package file handed to it.
//!
//! Everything a user sends is parsed here into a newtype once, at the edge,
//! so the rest of the code never sees an unchecked string.

pub mod access;
pub mod digest;
#[doc(hidden)]
pub mod fuzzing;
pub mod key;
pub mod manifest;
pub mod package;
pub mod version;

pub use digest::Digest;
pub use key::ArtifactKey;
pub use manifest::{Manifest, ManifestError};
pub use package::{PackageError, PackageFormat, PackageInfo, PackageLimits};
pub use version::VersionRef;
pub mod plan;
pub mod selector;

pub use selector::{Organization, Selector};
