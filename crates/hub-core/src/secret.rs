//! Secrets and references to them. A secret never prints: `Debug` and `Display` say `[redacted]`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A resolved secret value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>, bool);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(Arc::from(s.into()), false)
    }

    /// A stand-in for a secret that is not set (`validate`, `serve --dev`): usable as a MAC key
    /// or token, but never as key material that must parse (public keys).
    pub fn placeholder(s: impl Into<String>) -> Self {
        Self(Arc::from(s.into()), true)
    }

    pub fn is_placeholder(&self) -> bool {
        self.1
    }
    /// The value itself; call only where it is used (MAC key, auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret comes from, as written in a mapping file: `env:NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SecretRef {
    Env(String),
}

impl SecretRef {
    /// Parses `env:NAME`. Inline values are refused on purpose: mapping files live in git.
    /// The error never repeats the text: it may be the secret itself, and diagnostics end up in
    /// logs and API responses.
    pub fn parse(s: &str) -> Result<Self, SecretRefError> {
        match s.split_once(':') {
            Some(("env", name))
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                Ok(SecretRef::Env(name.to_string()))
            }
            Some(("env", _)) => Err(SecretRefError::BadVariableName),
            _ => Err(SecretRefError::NotAReference),
        }
    }
}

/// Why a text is not a secret reference. Neither kind repeats the text: it may be the secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretRefError {
    /// `env:` followed by something that is not a variable name.
    #[error("not a valid secret reference: the variable name after `env:` must be [A-Za-z0-9_]+")]
    BadVariableName,
    /// Not `env:NAME` at all: most likely the secret value written inline.
    #[error(
        "must be a secret reference `env:VARIABLE_NAME`, not a value (secrets are never written \
         inline; the text is not repeated here)"
    )]
    NotAReference,
}

impl SecretRefError {
    /// A stable name of the kind, for logs and tooling (renaming one is a breaking change).
    pub fn code(&self) -> &'static str {
        match self {
            SecretRefError::BadVariableName => "secret_ref_bad_variable_name",
            SecretRefError::NotAReference => "secret_ref_not_a_reference",
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
        }
    }
}

/// The secrets port: turns references into values once, at load time.
pub trait SecretSource: Send + Sync {
    fn resolve(&self, r: &SecretRef) -> Option<Secret>;
}

/// Whether a resolved value can serve as a secret: an empty or whitespace-only value (`NAME=` in
/// a compose file whose host variable is unset) is no secret at all.
pub fn is_usable(value: &str) -> bool {
    !value.trim().is_empty()
}

/// Reads `env:` references from the process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvSecrets;

impl SecretSource for EnvSecrets {
    fn resolve(&self, r: &SecretRef) -> Option<Secret> {
        match r {
            SecretRef::Env(name) => std::env::var(name).ok().map(Secret::new),
        }
    }
}

/// A fixed table of values (golden examples, tests), falling back to nothing.
#[derive(Debug, Default, Clone)]
pub struct MapSecrets(pub HashMap<String, String>);

impl MapSecrets {
    /// These values first, then placeholders, so examples and scenarios need not list every
    /// credential.
    pub fn or_placeholders(values: HashMap<String, String>) -> OrPlaceholders {
        OrPlaceholders(MapSecrets(values))
    }
}

/// A [`MapSecrets`] that resolves what it lacks to placeholders.
#[derive(Debug, Default, Clone)]
pub struct OrPlaceholders(pub MapSecrets);

impl SecretSource for OrPlaceholders {
    fn resolve(&self, r: &SecretRef) -> Option<Secret> {
        self.0.resolve(r).or_else(|| PlaceholderSecrets.resolve(r))
    }
}

impl SecretSource for MapSecrets {
    fn resolve(&self, r: &SecretRef) -> Option<Secret> {
        match r {
            SecretRef::Env(name) => self.0.get(name).cloned().map(Secret::new),
        }
    }
}

/// Resolves every reference to a fixed placeholder: lets `validate` and `render` compile files
/// whose secrets are not set on this machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlaceholderSecrets;

impl SecretSource for PlaceholderSecrets {
    fn resolve(&self, r: &SecretRef) -> Option<Secret> {
        Some(Secret::placeholder(format!("<{r}>")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_refs_parse_and_errors_name_their_kind() {
        assert_eq!(SecretRef::parse("env:STRIPE_KEY"), Ok(SecretRef::Env("STRIPE_KEY".into())));
        let bad = SecretRef::parse("env:A-B").unwrap_err();
        assert_eq!(bad, SecretRefError::BadVariableName);
        assert_eq!(bad.code(), "secret_ref_bad_variable_name");
        let inline = SecretRef::parse("whsec_abc").unwrap_err();
        assert_eq!(inline.code(), "secret_ref_not_a_reference");
        assert_eq!(
            inline.to_string(),
            "must be a secret reference `env:VARIABLE_NAME`, not a value (secrets are never written \
             inline; the text is not repeated here)"
        );
        assert!(!inline.to_string().contains("whsec"));
    }
}
