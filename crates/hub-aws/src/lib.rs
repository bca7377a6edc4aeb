//! AWS adapters of the hub: the store port on DynamoDB (+ S3 for large payloads), the queue port
//! on SQS, versioned mapping sets and secrets from Secrets Manager.
//!
//! # Table design (one table)
//!
//! Events, deliveries, dedup keys, timers and state items: see [`storage`] (layout 2: an item
//! each, keys-only indexes sharded for write throughput, timers as attributes of their item).
//! The mapping set: see [`mappings`] (`mappings` / `current` is the pointer to the version in
//! force, `mappings#<push token>` / `file#<name>` its files).
//!
//! Only the admin function writes items whose key starts with `mappings`; the template limits
//! the other functions' writes to `e#*` (events and their deliveries), `k#*` (dedup keys,
//! ingest) and `t#*` (timers, the tick) with `dynamodb:LeadingKeys`.

pub mod blobs;
pub mod capacity;
mod error;
pub mod mappings;
pub mod metrics;
pub mod secrets;
pub mod sqs;
pub mod storage;
pub mod testing;

pub use error::{AwsError, CallKind, Service, SettingsError};

use std::time::Duration;

/// Puts items in batches of 25, retrying what DynamoDB leaves unprocessed (throttling) with
/// exponential backoff.
pub async fn batch_put(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    items: Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
) -> Result<(), AwsError> {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    for chunk in items.chunks(25) {
        let mut pending: Vec<WriteRequest> = chunk
            .iter()
            .map(|item| {
                PutRequest::builder()
                    .set_item(Some(item.clone()))
                    .build()
                    .map(|p| WriteRequest::builder().put_request(p).build())
                    .map_err(AwsError::build)
            })
            .collect::<Result<_, _>>()?;
        let mut backoff = Duration::from_millis(50);
        for _ in 0..8 {
            let out = ddb
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .map_err(|e| AwsError::dynamodb("BatchWriteItem", &e))?;
            pending = out.unprocessed_items.and_then(|mut m| m.remove(table)).unwrap_or_default();
            if pending.is_empty() {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        if !pending.is_empty() {
            return Err(AwsError::Call {
                service: Service::DynamoDb,
                operation: "BatchWriteItem",
                kind: CallKind::Throttled,
                detail: "DynamoDB kept throttling a batch write".into(),
            });
        }
    }
    Ok(())
}

/// An SDK error with its whole chain of causes on one line.
pub fn sdk_error<E: std::error::Error + 'static>(e: &E) -> String {
    aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()
}

/// The settings of the AWS shell, from the environment the SAM template sets.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `HUB_TABLE`
    pub table: String,
    /// `HUB_BODIES_BUCKET`: where bodies larger than an item go.
    pub bucket: Option<String>,
    /// `HUB_QUEUE_URL`
    pub queue_url: Option<String>,
    /// `HUB_DLQ_URL`
    pub dlq_url: Option<String>,
    /// `HUB_MAX_RECEIVE_COUNT`: the queue's redrive `maxReceiveCount`.
    pub max_receive: u32,
    /// `HUB_SECRETS_ID`: a Secrets Manager secret holding a JSON object of secrets.
    pub secrets_id: Option<String>,
    /// `HUB_INBOUND_SECRETS_ID`: a second such secret (verification secrets kept apart from
    /// destination credentials).
    pub inbound_secrets_id: Option<String>,
    /// `HUB_SECRETS_HELD`: `all` (default): every reference must resolve from this function's
    /// secrets; `some`: the function holds only part of the deployment's secrets, and the
    /// other references resolve to a value nothing matches.
    pub secrets_held_some: bool,
    /// `HUB_RETENTION_DAYS`: events expire (DynamoDB TTL) this long after they were received.
    pub retention: Option<Duration>,
    /// `HUB_MAPPINGS_REFRESH_SECS`: how often functions check for a newly pushed mapping set.
    pub mappings_refresh: Duration,
    /// `HUB_SWEEP_GRACE_SECS`: a job this overdue was missed by the queue; the tick sends it.
    pub sweep_grace: Duration,
    /// `HUB_SWEEP_LEASE_SECS`: a job the tick sent is not sent again for this long (its
    /// message may wait in a backlog).
    pub sweep_lease: Duration,
    /// `HUB_JOB_LEASE_SECS`: a run holds its job this long (longer than the function's
    /// timeout), so a duplicate message of a job in progress is put back, not run twice.
    pub job_lease: Duration,
    /// `HUB_MAX_RUNS`: a job whose runs ended this many times without an outcome (crash,
    /// timeout, out of memory) is recorded dead.
    pub max_runs: u32,
    /// `HUB_SECRETS_REFRESH_SECS`: how often the secret is read again (a rotated value reaches
    /// running functions within this).
    pub secrets_refresh: Duration,
    /// `HUB_METRICS_NAMESPACE`: the CloudWatch namespace of the hub's own metrics.
    pub metrics_namespace: String,
    /// `HUB_ALLOW_NETS` (comma-separated): private networks routes may reach with
    /// `to.allow_net` (a function in a VPC next to an on-premises CRM); none by default.
    pub allow_nets: Vec<ipnet::IpNet>,
    /// `HUB_LIST_SHARDS`: partitions the listing indexes spread events over (raise only).
    pub list_shards: u32,
    /// `HUB_TIMER_SHARDS`: partitions the due index spreads timers over (raise only).
    pub timer_shards: u32,
}

impl Settings {
    pub fn from_env() -> Result<Self, AwsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, AwsError> {
        let opt = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let num = |k: &'static str, default: u64| -> Result<u64, AwsError> {
            match opt(k) {
                None => Ok(default),
                Some(v) => {
                    v.trim().parse().map_err(|_| SettingsError::NotANumber { name: k, value: v }.into())
                }
            }
        };
        let table = opt("HUB_TABLE").ok_or(SettingsError::Missing("HUB_TABLE"))?;
        let max_receive = u32::try_from(num("HUB_MAX_RECEIVE_COUNT", 15)?)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or(SettingsError::OutOfRange { name: "HUB_MAX_RECEIVE_COUNT", range: "at least 1" })?;
        let days = num("HUB_RETENTION_DAYS", 30)?;
        let shards = |k: &'static str, default: u32| -> Result<u32, AwsError> {
            u32::try_from(num(k, u64::from(default))?)
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| SettingsError::OutOfRange { name: k, range: "between 1 and 1024" }.into())
        };
        let allow_nets = opt("HUB_ALLOW_NETS")
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.trim().is_empty())
            .map(|t| {
                hub_core::net::parse_network(t).ok_or_else(|| SettingsError::BadNetwork {
                    name: "HUB_ALLOW_NETS",
                    value: t.trim().to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            table,
            bucket: opt("HUB_BODIES_BUCKET"),
            queue_url: opt("HUB_QUEUE_URL"),
            dlq_url: opt("HUB_DLQ_URL"),
            max_receive,
            secrets_id: opt("HUB_SECRETS_ID"),
            inbound_secrets_id: opt("HUB_INBOUND_SECRETS_ID"),
            secrets_held_some: match opt("HUB_SECRETS_HELD").as_deref().map(str::trim) {
                None | Some("all") => false,
                Some("some") => true,
                Some(v) => {
                    return Err(SettingsError::BadChoice {
                        name: "HUB_SECRETS_HELD",
                        value: v.to_string(),
                        expected: "`all` or `some`",
                    }
                    .into());
                }
            },
            retention: (days > 0).then(|| Duration::from_secs(days * 86_400)),
            mappings_refresh: Duration::from_secs(num("HUB_MAPPINGS_REFRESH_SECS", 30)?),
            sweep_grace: Duration::from_secs(num("HUB_SWEEP_GRACE_SECS", 300)?),
            sweep_lease: Duration::from_secs(num("HUB_SWEEP_LEASE_SECS", 900)?),
            job_lease: Duration::from_secs(num("HUB_JOB_LEASE_SECS", 90)?),
            max_runs: u32::try_from(num("HUB_MAX_RUNS", 5)?)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or(SettingsError::OutOfRange { name: "HUB_MAX_RUNS", range: "at least 1" })?,
            secrets_refresh: Duration::from_secs(num("HUB_SECRETS_REFRESH_SECS", 300)?),
            metrics_namespace: opt("HUB_METRICS_NAMESPACE")
                .unwrap_or_else(|| metrics::DEFAULT_NAMESPACE.to_string()),
            allow_nets,
            list_shards: shards("HUB_LIST_SHARDS", storage::DEFAULT_LIST_SHARDS)?,
            timer_shards: shards("HUB_TIMER_SHARDS", storage::DEFAULT_TIMER_SHARDS)?,
        })
    }

    /// The secrets this function reads.
    pub fn secret_ids(&self) -> Vec<String> {
        self.secrets_id.iter().chain(&self.inbound_secrets_id).cloned().collect()
    }

    pub fn queue_url(&self) -> Result<&str, AwsError> {
        self.queue_url.as_deref().ok_or(SettingsError::Missing("HUB_QUEUE_URL").into())
    }
}

/// The SDK clients, built once per process (a Lambda cold start) from the default chain:
/// region, credentials and `AWS_ENDPOINT_URL_*` overrides (DynamoDB Local, moto) from the
/// environment.
#[derive(Clone, Debug)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl Clients {
    pub async fn from_env() -> Self {
        let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        // An S3 endpoint override (moto in tests) answers path-style requests only.
        let path_style = std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&conf).force_path_style(path_style).build(),
        );
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(&conf),
            s3,
            sqs: aws_sdk_sqs::Client::new(&conf),
            secrets: aws_sdk_secretsmanager::Client::new(&conf),
        }
    }

    /// The storage on these clients.
    pub fn storage(&self, settings: &Settings) -> storage::DynamoStorage {
        let blobs = match &settings.bucket {
            Some(b) => blobs::Blobs::new(self.s3.clone(), b.clone()),
            None => blobs::Blobs::none(),
        };
        storage::DynamoStorage::new(
            self.dynamodb.clone(),
            settings.table.clone(),
            blobs,
            settings.retention.is_some(),
        )
        .with_shards(settings.list_shards, settings.timer_shards)
    }

    /// Secrets for mappings: the Secrets Manager secret when configured; without one, no
    /// reference resolves (the process environment is never read).
    pub async fn secrets(&self, settings: &Settings) -> Result<secrets::LayeredSecrets, AwsError> {
        let ids = settings.secret_ids();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let all = secrets::load_all(&self.secrets, &ids).await?;
        Ok(if settings.secrets_held_some { all.holding_some() } else { all })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, AwsError> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn settings_need_a_table_and_read_numbers_strictly() {
        assert!(settings(&[]).unwrap_err().to_string().contains("HUB_TABLE"));
        let s = settings(&[("HUB_TABLE", "t"), ("HUB_SECRETS_ID", "")]).unwrap();
        assert_eq!(
            (s.max_receive, s.secrets_id, s.retention),
            (15, None, Some(Duration::from_secs(30 * 86_400)))
        );
        let e = settings(&[("HUB_TABLE", "t"), ("HUB_MAX_RECEIVE_COUNT", "ten")]).unwrap_err();
        assert!(e.to_string().contains("HUB_MAX_RECEIVE_COUNT=`ten`"));
        assert!(settings(&[("HUB_TABLE", "t"), ("HUB_MAX_RECEIVE_COUNT", "0")]).is_err());
        assert!(!s.secrets_held_some);
        let split = settings(&[
            ("HUB_TABLE", "t"),
            ("HUB_SECRETS_ID", "out"),
            ("HUB_INBOUND_SECRETS_ID", "in"),
            ("HUB_SECRETS_HELD", "some"),
        ])
        .unwrap();
        assert_eq!(
            (split.secret_ids(), split.secrets_held_some),
            (vec!["out".to_string(), "in".to_string()], true)
        );
        assert!(settings(&[("HUB_TABLE", "t"), ("HUB_SECRETS_HELD", "half")]).is_err());
        assert_eq!(settings(&[("HUB_TABLE", "t"), ("HUB_RETENTION_DAYS", "0")]).unwrap().retention, None);
        assert!(s.allow_nets.is_empty());
        let nets = settings(&[("HUB_TABLE", "t"), ("HUB_ALLOW_NETS", "10.0.0.0/8, 192.168.1.7")]).unwrap();
        assert_eq!(
            nets.allow_nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.0.0/8", "192.168.1.7/32"]
        );
        let e = settings(&[("HUB_TABLE", "t"), ("HUB_ALLOW_NETS", "10.0.0.0/33")]).unwrap_err();
        assert!(e.to_string().contains("HUB_ALLOW_NETS: `10.0.0.0/33`"), "{e}");
    }
}
