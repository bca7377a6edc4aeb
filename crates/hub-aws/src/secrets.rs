//! Secrets from AWS Secrets Manager: secrets whose value is a JSON object `NAME → value`;
//! mapping references `env:NAME` resolve there and nowhere else.
//!
//! A deployment may keep verification secrets (inbound) and destination credentials
//! (outbound) in two secrets, so that the Internet-facing ingest function cannot read the
//! credentials of the systems the hub writes to. Every function compiles the whole mapping
//! set, so a function that holds only some of the secrets resolves the other references to a
//! value nothing matches: a request verified with it is refused, a credential sent with it is
//! refused by the destination. The admin function holds both and compiles pushes strictly.
//!
//! The function's own environment is never consulted: in Lambda it holds the role's
//! credentials (`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, ...), and a pushed mapping could
//! otherwise send them to any destination as an auth header.

use crate::{AwsError, Service};
use hub_core::secret::{MapSecrets, Secret, SecretRef, SecretSource};
use std::collections::HashMap;

/// The values of the function's Secrets Manager secrets, with the versions they were read at.
#[derive(Debug, Default, Clone)]
pub struct LayeredSecrets {
    pub primary: MapSecrets,
    /// The secrets' `VersionId`s when read; `None` without a secret.
    pub version: Option<String>,
    /// Set when this function holds only some of the deployment's secrets: what a reference
    /// not among them resolves to (random per process, so nothing can match it).
    pub unheld: Option<String>,
}

impl SecretSource for LayeredSecrets {
    fn resolve(&self, r: &SecretRef) -> Option<Secret> {
        self.primary.resolve(r).or_else(|| self.unheld.as_ref().map(|v| Secret::placeholder(v.clone())))
    }
}

impl LayeredSecrets {
    /// References not in these secrets stand for secrets another function holds.
    pub fn holding_some(mut self) -> Self {
        let random = format!("unheld-{}{}", uuid::Uuid::now_v7().simple(), uuid::Uuid::now_v7().simple());
        self.unheld = Some(random);
        self
    }

    /// The values of `other` added (a reference in both resolves to `other`'s value).
    fn merge(mut self, other: LayeredSecrets) -> Self {
        self.primary.0.extend(other.primary.0);
        self.version = match (self.version, other.version) {
            (Some(a), Some(b)) => Some(format!("{a}+{b}")),
            (a, b) => a.or(b),
        };
        self
    }
}

/// Reads and merges the secrets `ids` (names or ARNs).
pub async fn load_all(
    client: &aws_sdk_secretsmanager::Client,
    ids: &[&str],
) -> Result<LayeredSecrets, AwsError> {
    let mut all = LayeredSecrets::default();
    for id in ids {
        all = all.merge(load(client, id).await?);
    }
    Ok(all)
}

/// Reads the secret `id` (name or ARN). Its value must be a JSON object of strings.
pub async fn load(client: &aws_sdk_secretsmanager::Client, id: &str) -> Result<LayeredSecrets, AwsError> {
    let out = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| AwsError::call(Service::SecretsManager, "GetSecretValue", &e))?;
    let text = out.secret_string().ok_or_else(|| AwsError::SecretNotText { id: id.to_string() })?;
    let map: HashMap<String, String> = serde_json::from_str(text)
        .map_err(|e| AwsError::SecretNotObject { id: id.to_string(), reason: json_error_kind(&e) })?;
    Ok(LayeredSecrets {
        primary: MapSecrets(map),
        version: out.version_id().map(str::to_string),
        unheld: None,
    })
}

/// The kind of a JSON error only: serde's message may quote part of the secret.
fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "values must be strings",
        serde_json::error::Category::Eof => "truncated JSON",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_from_the_secret_only_never_from_the_environment() {
        // Every process has PATH; a Lambda function also has its role's credentials there.
        assert!(std::env::var_os("PATH").is_some());
        let s = LayeredSecrets {
            primary: MapSecrets(HashMap::from([("TOKEN".to_string(), "t0k".to_string())])),
            version: Some("v1".into()),
            unheld: None,
        };
        assert_eq!(
            s.resolve(&SecretRef::Env("TOKEN".into())).map(|v| v.expose().to_string()),
            Some("t0k".into())
        );
        assert!(s.resolve(&SecretRef::Env("PATH".into())).is_none());
        assert!(LayeredSecrets::default().resolve(&SecretRef::Env("PATH".into())).is_none());
    }

    #[test]
    fn a_function_holding_some_secrets_resolves_the_others_to_a_value_nothing_matches() {
        let held = LayeredSecrets {
            primary: MapSecrets(HashMap::from([("IN".to_string(), "v".to_string())])),
            ..Default::default()
        };
        assert!(held.clone().resolve(&SecretRef::Env("OUT".into())).is_none(), "all held: strict");
        let a = held.clone().holding_some();
        let b = held.holding_some();
        let out = |s: &LayeredSecrets| s.resolve(&SecretRef::Env("OUT".into())).expect("stands in");
        assert!(out(&a).is_placeholder());
        assert_ne!(out(&a).expose(), out(&b).expose(), "unpredictable, never a fixed value");
        assert!(out(&a).expose().len() >= 60);
        assert_eq!(a.resolve(&SecretRef::Env("IN".into())).map(|v| v.expose().to_string()), Some("v".into()));
        assert!(
            a.resolve(&SecretRef::Env("PATH".into()))
                .is_some_and(|v| v.expose() != std::env::var("PATH").unwrap_or_default())
        );
    }
}
