//! Selectors and organizations: how users name deployments.

use std::fmt;

/// Longest selector, in characters.
pub const MAX_SELECTOR_CHARS: usize = 256;

/// Any 1..=256 printable characters without control characters or commas;
/// no meaning attached (`prod/us-east-1`, `staging eu`, `développement`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Selector(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("a selector must not be empty")]
    Empty,
    #[error("a selector is at most {MAX_SELECTOR_CHARS} characters; this one has {0}")]
    TooLong(usize),
    #[error("a selector must not contain commas (they separate selectors in queries)")]
    Comma,
    #[error("a selector must not contain control characters such as newlines or tabs")]
    Control,
}

impl Selector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let chars = s.chars().count();
        if chars == 0 {
            Err(SelectorError::Empty)
        } else if chars > MAX_SELECTOR_CHARS {
            Err(SelectorError::TooLong(chars))
        } else if s.contains(',') {
            Err(SelectorError::Comma)
        } else if s.chars().any(char::is_control) {
            Err(SelectorError::Control)
        } else {
            Ok(Self(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An organization label: `[A-Za-z0-9._-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Organization(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an organization is 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'")]
pub struct OrganizationError;

impl Organization {
    pub fn parse(s: &str) -> Result<Self, OrganizationError> {
        let valid = (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid { Ok(Self(s.to_string())) } else { Err(OrganizationError) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Organization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_follow_the_contract() {
        for good in ["prod/us-east-1", "staging eu", "développement/東京", "a", &"x".repeat(256)] {
            assert!(Selector::parse(good).is_ok(), "{good}");
        }
        assert_eq!(Selector::parse(""), Err(SelectorError::Empty));
        assert_eq!(Selector::parse(&"é".repeat(257)), Err(SelectorError::TooLong(257)));
        assert_eq!(Selector::parse("a,b"), Err(SelectorError::Comma));
        assert_eq!(Selector::parse("a\nb"), Err(SelectorError::Control));
        assert_eq!(Selector::parse("a\u{7f}"), Err(SelectorError::Control));
    }

    #[test]
    fn organizations_follow_the_contract() {
        for good in ["acme", "Acme.Corp_1-x", &"o".repeat(64)] {
            assert!(Organization::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", &"o".repeat(65)] {
            assert!(Organization::parse(bad).is_err(), "{bad}");
        }
    }
}
