//! Artifact keys: the registry's name for every package of one stack.

use std::fmt;

/// The longest artifact key the contract allows.
pub const MAX_KEY_LEN: usize = 128;

/// A validated artifact key: `[a-z0-9]` runs joined by single `-`, 1..=128 chars.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ArtifactKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the stack name yields an empty artifact key: it needs at least one letter or digit")]
    Empty,
    #[error("the artifact key would be {0} characters long; at most {MAX_KEY_LEN} are allowed")]
    TooLong(usize),
    #[error(
        "an artifact key is lower-case letters, digits and single '-' between them, \
         1 to {MAX_KEY_LEN} characters"
    )]
    Invalid,
}

impl ArtifactKey {
    /// Derives the key from a stack name: lower-cased, every run of characters
    /// outside `[a-z0-9]` replaced by one `-`, leading and trailing `-` trimmed.
    pub fn from_stack_name(stack_name: &str) -> Result<Self, KeyError> {
        let mut key = String::with_capacity(stack_name.len());
        let mut pending_dash = false;
        for c in stack_name.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                if pending_dash && !key.is_empty() {
                    key.push('-');
                }
                pending_dash = false;
                key.push(c);
            } else {
                pending_dash = true;
            }
        }
        match key.len() {
            0 => Err(KeyError::Empty),
            n if n > MAX_KEY_LEN => Err(KeyError::TooLong(n)),
            _ => Ok(Self(key)),
        }
    }

    /// Parses a key as it appears in a path or a query: it must already be in
    /// canonical form (what `from_stack_name` would produce).
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        if s.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(s.len()));
        }
        match Self::from_stack_name(s) {
            Ok(key) if key.0 == s => Ok(key),
            _ => Err(KeyError::Invalid),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ArtifactKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_keys_as_the_contract_says() {
        let cases = [
            ("Network_Core v2", "network-core-v2"),
            ("network", "network"),
            ("  --IAM  Baseline--  ", "iam-baseline"),
            ("a__b..c", "a-b-c"),
            ("ÄPP", "pp"),
            ("db2", "db2"),
        ];
        for (name, key) in cases {
            assert_eq!(ArtifactKey::from_stack_name(name).unwrap().as_str(), key, "{name}");
        }
    }

    #[test]
    fn rejects_names_without_letters_or_digits() {
        assert_eq!(ArtifactKey::from_stack_name("--- ___"), Err(KeyError::Empty));
        assert_eq!(ArtifactKey::from_stack_name(""), Err(KeyError::Empty));
    }

    #[test]
    fn rejects_keys_longer_than_128() {
        let name = "a".repeat(129);
        assert_eq!(ArtifactKey::from_stack_name(&name), Err(KeyError::TooLong(129)));
        assert!(ArtifactKey::from_stack_name(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn parse_accepts_only_canonical_keys() {
        assert!(ArtifactKey::parse("network-core-v2").is_ok());
        for bad in ["Network", "-a", "a-", "a--b", "a b", "a_b", ""] {
            assert!(ArtifactKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
