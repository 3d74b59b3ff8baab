//! How a user names one version of an artifact: by sequence number or digest.

use std::fmt;

use crate::digest::Digest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRef {
    Number(i64),
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a version is a positive number (1, 2, 3...) or a digest 'sha256:<64 hex>'")]
pub struct VersionRefError;

impl VersionRef {
    pub fn parse(s: &str) -> Result<Self, VersionRefError> {
        if s.starts_with("sha256:") {
            return Digest::parse(s).map(Self::Digest).map_err(|_| VersionRefError);
        }
        match s.parse::<i64>() {
            Ok(n) if n >= 1 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(Self::Number(n)),
            _ => Err(VersionRefError),
        }
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Digest(d) => write!(f, "{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_digests() {
        assert_eq!(VersionRef::parse("3"), Ok(VersionRef::Number(3)));
        let digest = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(VersionRef::parse(&digest), Ok(VersionRef::Digest(_))));
        for bad in ["0", "-1", "+1", "1.0", "", "latest", "sha256:xyz"] {
            assert!(VersionRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
