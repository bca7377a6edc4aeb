//! Versioned mapping sets in the table: `hub mappings push` and the admin function store a set
//! that compiled as a new version; functions load the newest and reload when it changes.
//!
//! Items: `pk = "mappings"`, `sk = "current"` → `version`, `pushed_at`, `files`; and per file
//! `pk = "mappings#v<version:010>"`, `sk = "file#<name>"` → `text`. A version's files are
//! written before the pointer moves, so a reader never sees half a set.

use crate::{AwsError, sdk_error};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use hub_core::mapping::MappingSet;
use hub_core::pipeline::Hub;
use hub_core::secret::SecretSource;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tracing::{error, info};

const POINTER_PK: &str = "mappings";
const POINTER_SK: &str = "current";
/// A file larger than this does not fit one item.
const MAX_FILE_BYTES: usize = 350 * 1024;

#[derive(Clone, Debug)]
pub struct MappingRepo {
    ddb: Client,
    table: String,
}

fn version_pk(v: u64) -> String {
    format!("mappings#v{v:010}")
}

impl MappingRepo {
    pub fn new(ddb: Client, table: impl Into<String>) -> Self {
        Self { ddb, table: table.into() }
    }

    /// The version in force, 0 when nothing was pushed yet.
    pub async fn current_version(&self) -> Result<u64, AwsError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(POINTER_PK.into()))
            .key("sk", AttributeValue::S(POINTER_SK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::Call(sdk_error(&e)))?;
        Ok(out
            .item
            .as_ref()
            .and_then(|i| i.get("version"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Stores `files` (already compiled by the caller) as the next version and puts it in force.
    /// Fails if another push moved the version meanwhile.
    pub async fn push(&self, files: &[(String, String)], now_ms: u64) -> Result<u64, AwsError> {
        for (name, text) in files {
            if text.len() > MAX_FILE_BYTES {
                return Err(AwsError::Config(format!(
                    "{name}: {} bytes; a mapping file can have at most {MAX_FILE_BYTES}",
                    text.len()
                )));
            }
        }
        let current = self.current_version().await?;
        let next = current + 1;
        let items = files
            .iter()
            .map(|(name, text)| {
                HashMap::from([
                    ("pk".to_string(), AttributeValue::S(version_pk(next))),
                    ("sk".to_string(), AttributeValue::S(format!("file#{name}"))),
                    ("text".to_string(), AttributeValue::S(text.clone())),
                ])
            })
            .collect();
        crate::batch_put(&self.ddb, &self.table, items).await?;
        let r = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(POINTER_PK.into()))
            .item("sk", AttributeValue::S(POINTER_SK.into()))
            .item("version", AttributeValue::N(next.to_string()))
            .item("pushed_at", AttributeValue::N(now_ms.to_string()))
            .item("files", AttributeValue::N(files.len().to_string()))
            .condition_expression("attribute_not_exists(pk) OR version = :cur")
            .expression_attribute_values(":cur", AttributeValue::N(current.to_string()))
            .send()
            .await;
        match r {
            Ok(_) => Ok(next),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                Err(AwsError::Conflict(format!("another push made version {next} first; push again")))
            }
            Err(e) => Err(AwsError::Call(sdk_error(&e))),
        }
    }

    /// The files of one version, by name.
    pub async fn load(&self, version: u64) -> Result<Vec<(String, String)>, AwsError> {
        let mut files = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(version_pk(version)))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| AwsError::Call(sdk_error(&e)))?;
            for item in page.items.unwrap_or_default() {
                let name = item.get("sk").and_then(|v| v.as_s().ok()).and_then(|s| s.strip_prefix("file#"));
                let text = item.get("text").and_then(|v| v.as_s().ok());
                if let (Some(name), Some(text)) = (name, text) {
                    files.push((name.to_string(), text.clone()));
                }
            }
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(files),
            }
        }
    }

    /// Loads and compiles one version. `Ok(None)` when nothing was pushed yet.
    pub async fn compile(
        &self,
        version: u64,
        secrets: &dyn SecretSource,
    ) -> Result<Option<MappingSet>, AwsError> {
        if version == 0 {
            return Ok(None);
        }
        let files = self.load(version).await?;
        MappingSet::compile(&files, secrets).map(Some).map_err(|diags| {
            let list: Vec<String> = diags.iter().map(ToString::to_string).collect();
            AwsError::Config(format!("mapping set v{version} does not compile:\n{}", list.join("\n")))
        })
    }
}

/// The mapping set a function runs with, reloaded when a push moves the version.
pub struct LiveMappings {
    repo: MappingRepo,
    secrets: Arc<dyn SecretSource>,
    version: AtomicU64,
    /// How often the version is checked (at most once per this interval, on use).
    every: Duration,
    last_check: Mutex<Instant>,
}

impl LiveMappings {
    /// Loads the version in force. A set that does not compile fails (and so fails the cold
    /// start); no set pushed yet gives an empty set, so that a fresh deployment answers
    /// `unknown_source` until the first push.
    pub async fn load(
        repo: MappingRepo,
        secrets: Arc<dyn SecretSource>,
        every: Duration,
    ) -> Result<(Self, MappingSet), AwsError> {
        let version = repo.current_version().await?;
        let set = repo.compile(version, secrets.as_ref()).await?.unwrap_or_default();
        if version == 0 {
            tracing::warn!("no mapping set pushed yet; every source is unknown until `hub mappings push`");
        } else {
            info!(version, sources = set.sources.len(), "mapping set loaded");
        }
        let live = Self {
            repo,
            secrets,
            version: AtomicU64::new(version),
            every,
            last_check: Mutex::new(Instant::now()),
        };
        Ok((live, set))
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Checks the version if the interval has passed and swaps in a newer set. A newer set that
    /// does not compile (e.g. a secret missing here) is logged and the current one kept.
    pub async fn refresh(&self, hub: &Hub) {
        {
            let mut last = self.last_check.lock().await;
            if last.elapsed() < self.every {
                return;
            }
            *last = Instant::now();
        }
        self.refresh_now(hub).await;
    }

    /// Puts `set`, compiled from `version`, in force (also right after a push from here).
    pub fn install(&self, hub: &Hub, version: u64, set: MappingSet) {
        hub.set_mappings(Arc::new(set));
        self.version.store(version, Ordering::Relaxed);
    }

    async fn refresh_now(&self, hub: &Hub) {
        let latest = match self.repo.current_version().await {
            Ok(v) => v,
            Err(e) => return error!(error = %e, "cannot check the mapping version; keeping the current set"),
        };
        if latest == self.version() {
            return;
        }
        match self.repo.compile(latest, self.secrets.as_ref()).await {
            Ok(set) => {
                let set = set.unwrap_or_default();
                info!(
                    from = self.version(),
                    to = latest,
                    sources = set.sources.len(),
                    "mapping set reloaded"
                );
                self.install(hub, latest, set);
            }
            Err(e) => {
                error!(version = latest, error = %e, "new mapping set not loaded; keeping the current one")
            }
        }
    }
}
