//! Signing and checking presigned upload URLs.
//!
//! Like S3: a POST upload carries a base64 JSON *policy* (expiry, upload id,
//! size range) and an HMAC-SHA256 signature over it; a PUT URL carries its
//! expiry and a signature over method, upload id, expiry and size range in the
//! query.
//! The signature makes the URL a capability: knowing an upload id (which
//! `GET /uploads/{id}` shows) is not enough to upload.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub const ALGORITHM: &str = "STACKYARD-HMAC-SHA256";
pub const FIELD_ALGORITHM: &str = "x-stackyard-algorithm";
pub const FIELD_SIGNATURE: &str = "x-stackyard-signature";
pub const FIELD_POLICY: &str = "policy";
pub const FIELD_KEY: &str = "key";

pub struct UploadSigner {
    key: Vec<u8>,
}

/// What a POST policy allows, as signed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Policy {
    pub expiration: DateTime<Utc>,
    pub conditions: Vec<serde_json::Value>,
}

impl Policy {
    pub fn new(upload_id: &str, expires_at: DateTime<Utc>, min: u64, max: u64) -> Self {
        Self {
            expiration: expires_at,
            conditions: vec![
                serde_json::json!({ FIELD_KEY: upload_id }),
                serde_json::json!(["content-length-range", min, max]),
            ],
        }
    }

    pub fn upload_id(&self) -> Option<&str> {
        self.conditions.iter().find_map(|c| c.get(FIELD_KEY)?.as_str())
    }
}

impl UploadSigner {
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into() }
    }

    /// Reads the secret from `path`, creating it (owner-only) on first start.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(secret) => Ok(Self::new(secret.trim().as_bytes())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                rand::fill(&mut bytes);
                let secret = hex::encode(bytes);
                write_private(path, &secret)?;
                Ok(Self::new(secret.into_bytes()))
            }
            Err(e) => Err(e),
        }
    }

    fn mac(&self, parts: &[&str]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(b"\n");
            }
            mac.update(part.as_bytes());
        }
        mac
    }

    fn sign(&self, parts: &[&str]) -> String {
        hex::encode(self.mac(parts).finalize().into_bytes())
    }

    /// Constant-time comparison of a hex signature.
    fn verify(&self, parts: &[&str], signature_hex: &str) -> bool {
        match hex::decode(signature_hex) {
            Ok(bytes) => self.mac(parts).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }

    /// The base64 policy and its signature, for the POST form fields.
    pub fn sign_policy(&self, policy: &Policy) -> (String, String) {
        let encoded = STANDARD.encode(serde_json::to_vec(policy).expect("policies serialise"));
        let signature = self.sign(&["POST", &encoded]);
        (encoded, signature)
    }

    /// Checks the signature and decodes the policy; `None` when tampered with.
    pub fn verify_policy(&self, encoded: &str, signature_hex: &str) -> Option<Policy> {
        if !self.verify(&["POST", encoded], signature_hex) {
            return None;
        }
        serde_json::from_slice(&STANDARD.decode(encoded).ok()?).ok()
    }

    /// A PUT URL's signature: method, upload id, expiry and the allowed size
    /// range (which the server reads back from the upload it stored).
    pub fn sign_put(&self, upload_id: &str, expires: i64, min: u64, max: u64) -> String {
        self.sign(&["PUT", upload_id, &expires.to_string(), &min.to_string(), &max.to_string()])
    }

    pub fn verify_put(&self, upload_id: &str, expires: i64, min: u64, max: u64, signature_hex: &str) -> bool {
        self.verify(
            &["PUT", upload_id, &expires.to_string(), &min.to_string(), &max.to_string()],
            signature_hex,
        )
    }
}

/// Writes a secret readable by the owner only.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip_and_tampering_is_caught() {
        let signer = UploadSigner::new(b"k".repeat(32));
        let policy = Policy::new("abc", Utc::now(), 1, 100);
        let (encoded, signature) = signer.sign_policy(&policy);
        assert_eq!(signer.verify_policy(&encoded, &signature), Some(policy.clone()));
        assert_eq!(signer.verify_policy(&encoded, &signature).unwrap().upload_id(), Some("abc"));

        let forged =
            STANDARD.encode(serde_json::to_vec(&Policy::new("abc", Utc::now(), 1, 1 << 40)).unwrap());
        assert_eq!(signer.verify_policy(&forged, &signature), None);
        assert_eq!(signer.verify_policy(&encoded, "zz"), None);
        let other = UploadSigner::new(b"x".repeat(32));
        assert_eq!(other.verify_policy(&encoded, &signature), None);
    }

    #[test]
    fn put_signatures_bind_id_and_expiry() {
        let signer = UploadSigner::new(b"k".repeat(32));
        let sig = signer.sign_put("abc", 100, 1, 50);
        assert!(signer.verify_put("abc", 100, 1, 50, &sig));
        assert!(!signer.verify_put("abd", 100, 1, 50, &sig));
        assert!(!signer.verify_put("abc", 101, 1, 50, &sig));
        assert!(!signer.verify_put("abc", 100, 1, 51, &sig), "the size range is bound too");
    }
}
