//! Content digests: `sha256:<64 lower-case hex>`, the identity of a package's bytes.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Digest(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a digest is 'sha256:' followed by 64 hexadecimal characters")]
pub struct DigestError;

impl Digest {
    /// Builds the digest from raw SHA-256 output.
    pub fn from_sha256(bytes: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(bytes)))
    }

    /// Parses `sha256:<hex>`; upper-case hex is accepted and normalised.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let hex = s.strip_prefix("sha256:").ok_or(DigestError)?;
        Self::from_hex(hex)
    }

    /// Parses a bare 64-character hex SHA-256 (as sent in a presign request).
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(format!("sha256:{}", hex.to_ascii_lowercase())))
        } else {
            Err(DigestError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex characters without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let upper = format!("sha256:{}", "AB".repeat(32));
        let d = Digest::parse(&upper).unwrap();
        assert_eq!(d.hex(), "ab".repeat(32));
        assert!(Digest::parse(&"ab".repeat(32)).is_err());
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "zz".repeat(32))).is_err());
        assert!(Digest::parse(&format!("md5:{}", "ab".repeat(32))).is_err());
    }
}
