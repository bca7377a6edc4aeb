//! Secrets from AWS Secrets Manager: one secret whose value is a JSON object `NAME → value`;
//! mapping references `env:NAME` look there first, then in the environment.

use crate::{AwsError, sdk_error};
use hub_core::secret::{EnvSecrets, MapSecrets, Secret, SecretRef, SecretSource};
use std::collections::HashMap;

/// The secret's values over the process environment.
#[derive(Debug, Default, Clone)]
pub struct LayeredSecrets {
    pub primary: MapSecrets,
}

impl SecretSource for LayeredSecrets {
    fn resolve(&self, r: &SecretRef) -> Option<Secret> {
        self.primary.resolve(r).or_else(|| EnvSecrets.resolve(r))
    }
}

/// Reads the secret `id` (name or ARN). Its value must be a JSON object of strings.
pub async fn load(client: &aws_sdk_secretsmanager::Client, id: &str) -> Result<LayeredSecrets, AwsError> {
    let out =
        client.get_secret_value().secret_id(id).send().await.map_err(|e| AwsError::Call(sdk_error(&e)))?;
    let text = out.secret_string().ok_or_else(|| {
        AwsError::Config(format!("secret {id} has no string value (a JSON object is expected)"))
    })?;
    let map: HashMap<String, String> = serde_json::from_str(text).map_err(|e| {
        AwsError::Config(format!("secret {id} is not a JSON object of strings ({})", json_error_kind(&e)))
    })?;
    Ok(LayeredSecrets { primary: MapSecrets(map) })
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
