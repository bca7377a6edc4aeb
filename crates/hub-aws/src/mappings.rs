//! Versioned mapping sets in the table: `hub mappings push` and the admin function store a set
//! that compiled as a new version; functions load the newest and reload when it changes.
//!
//! Items: the pointer `pk = "mappings"`, `sk = "current"` → `version`, `pushed_at`, `token`,
//! `names` (the file names of that version); and per file `pk = "mappings#<token>"`,
//! `sk = "file#<name>"` → `text`. Every push writes its files under a token of its own, then
//! moves the pointer on the condition that the version did not change meanwhile. Readers load
//! exactly the files the pointer names under its token, so the files of a push that failed or
//! lost a race to another push are never part of any set.

use crate::AwsError;
use crate::secrets::LayeredSecrets;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use hub_core::mapping::MappingSet;
use hub_core::pipeline::Hub;
use hub_core::secret::SecretSource;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
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

/// The version in force and where its files are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pointer {
    /// 0 when nothing was pushed yet.
    pub version: u64,
    /// The push token the files are stored under.
    pub token: String,
    /// The file names of this version.
    pub names: Vec<String>,
}

/// Files written under a fresh token, not in force until [`MappingRepo::commit`] moves the
/// pointer to them.
#[derive(Clone, Debug)]
pub struct Staged {
    token: String,
    names: Vec<String>,
}

fn files_pk(token: &str) -> String {
    format!("mappings#{token}")
}

impl MappingRepo {
    pub fn new(ddb: Client, table: impl Into<String>) -> Self {
        Self { ddb, table: table.into() }
    }

    /// The pointer in force (version 0, no files, when nothing was pushed yet).
    pub async fn pointer(&self) -> Result<Pointer, AwsError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(POINTER_PK.into()))
            .key("sk", AttributeValue::S(POINTER_SK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::dynamodb("GetItem", &e))?;
        let Some(item) = out.item else { return Ok(Pointer::default()) };
        let version = item.get("version").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok());
        let token = item.get("token").and_then(|v| v.as_s().ok()).cloned();
        let names = item
            .get("names")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|n| n.as_s().ok().cloned()).collect::<Vec<_>>());
        // A pointer without a token (written by an older hub) still gives its version, so a
        // new push can replace it; loading it fails.
        Ok(Pointer {
            version: version.unwrap_or(0),
            token: token.unwrap_or_default(),
            names: names.unwrap_or_default(),
        })
    }

    /// The version in force, 0 when nothing was pushed yet.
    pub async fn current_version(&self) -> Result<u64, AwsError> {
        Ok(self.pointer().await?.version)
    }

    /// Stores `files` (already compiled by the caller) as the next version and puts it in force.
    /// Fails if another push moved the version meanwhile; nothing of this push is ever loaded
    /// then.
    pub async fn push(&self, files: &[(String, String)], now_ms: u64) -> Result<u64, AwsError> {
        let current = self.current_version().await?;
        let staged = self.stage(files).await?;
        self.commit(&staged, current, now_ms).await
    }

    /// Writes `files` under a fresh push token. They are invisible until committed.
    pub async fn stage(&self, files: &[(String, String)]) -> Result<Staged, AwsError> {
        for (name, text) in files {
            if text.len() > MAX_FILE_BYTES {
                return Err(AwsError::MappingFileTooLarge {
                    name: name.clone(),
                    bytes: text.len(),
                    max: MAX_FILE_BYTES,
                });
            }
        }
        let token = uuid::Uuid::now_v7().simple().to_string();
        let items = files
            .iter()
            .map(|(name, text)| {
                HashMap::from([
                    ("pk".to_string(), AttributeValue::S(files_pk(&token))),
                    ("sk".to_string(), AttributeValue::S(format!("file#{name}"))),
                    ("text".to_string(), AttributeValue::S(text.clone())),
                ])
            })
            .collect();
        crate::batch_put(&self.ddb, &self.table, items).await?;
        Ok(Staged { token, names: files.iter().map(|(n, _)| n.clone()).collect() })
    }

    /// Puts staged files in force as version `expected + 1` if the version in force is still
    /// `expected`.
    pub async fn commit(&self, staged: &Staged, expected: u64, now_ms: u64) -> Result<u64, AwsError> {
        let next = expected + 1;
        let names = staged.names.iter().map(|n| AttributeValue::S(n.clone())).collect();
        let r = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(POINTER_PK.into()))
            .item("sk", AttributeValue::S(POINTER_SK.into()))
            .item("version", AttributeValue::N(next.to_string()))
            .item("pushed_at", AttributeValue::N(now_ms.to_string()))
            .item("token", AttributeValue::S(staged.token.clone()))
            .item("names", AttributeValue::L(names))
            .item("files", AttributeValue::N(staged.names.len().to_string()))
            .condition_expression("attribute_not_exists(pk) OR version = :cur")
            .expression_attribute_values(":cur", AttributeValue::N(expected.to_string()))
            .send()
            .await;
        match r {
            Ok(_) => Ok(next),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                Err(AwsError::PushConflict { version: next })
            }
            Err(e) => Err(AwsError::dynamodb("PutItem", &e)),
        }
    }

    /// The files the pointer names, in its order. A named file that is missing is an error,
    /// never a smaller set.
    pub async fn load(&self, pointer: &Pointer) -> Result<Vec<(String, String)>, AwsError> {
        if pointer.version > 0 && pointer.token.is_empty() {
            return Err(AwsError::MappingSetOutdated { version: pointer.version });
        }
        let mut found: HashMap<String, String> = HashMap::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(files_pk(&pointer.token)))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| AwsError::dynamodb("Query", &e))?;
            for item in page.items.unwrap_or_default() {
                let name = item.get("sk").and_then(|v| v.as_s().ok()).and_then(|s| s.strip_prefix("file#"));
                let text = item.get("text").and_then(|v| v.as_s().ok());
                if let (Some(name), Some(text)) = (name, text) {
                    found.insert(name.to_string(), text.clone());
                }
            }
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        pointer
            .names
            .iter()
            .map(|n| {
                found
                    .remove(n)
                    .map(|t| (n.clone(), t))
                    .ok_or_else(|| AwsError::MappingFileMissing { version: pointer.version, name: n.clone() })
            })
            .collect()
    }

    /// The pointer in force and its files.
    pub async fn load_current(&self) -> Result<(Pointer, Vec<(String, String)>), AwsError> {
        let pointer = self.pointer().await?;
        let files = self.load(&pointer).await?;
        Ok((pointer, files))
    }

    /// Loads and compiles what the pointer names. `Ok(None)` when nothing was pushed yet.
    pub async fn compile(
        &self,
        pointer: &Pointer,
        secrets: &dyn SecretSource,
    ) -> Result<Option<MappingSet>, AwsError> {
        if pointer.version == 0 {
            return Ok(None);
        }
        let files = self.load(pointer).await?;
        let version = pointer.version;
        let set = MappingSet::compile(&files, secrets).map_err(|diags| AwsError::MappingSetInvalid {
            version,
            diagnostics: diags.iter().map(ToString::to_string).collect(),
        })?;
        Ok(Some(set))
    }
}

/// What a mapping set must fit in this deployment.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// Events expire this long after they were received (`None`: never).
    pub retention: Option<Duration>,
    /// How long the dead-letter queue keeps a message that may be moved back and run again.
    pub dlq_retention: Duration,
    /// The private networks routes may ask for with `to.allow_net` (`HUB_ALLOW_NETS`);
    /// `None` where they are not known (the CLI before a push: the admin function checks).
    pub allow_nets: Option<Vec<ipnet::IpNet>>,
}

/// SQS's longest message retention, which the template gives the dead-letter queue.
pub const DLQ_RETENTION: Duration = Duration::from_secs(14 * 86_400);

impl Limits {
    /// Every route's deliveries must be able to run to their `max_age`, and then sit in the
    /// dead-letter queue, while their event is still stored: an event deleted mid-delivery
    /// would turn its retries into nothing.
    ///
    /// Every network a route asks for must be one the deployment allows (`AllowNets`).
    pub fn check(&self, set: &MappingSet) -> Result<(), LimitsError> {
        if let Some(granted) = &self.allow_nets {
            set.check_reach(granted).map_err(|diags| LimitsError::NetNotAllowed {
                diagnostics: diags.iter().map(ToString::to_string).collect(),
            })?;
        }
        let Some(retention) = self.retention else { return Ok(()) };
        for source in set.sources.values() {
            for route in &source.routes {
                let needed = route.retry.max_age + self.dlq_retention;
                if needed > retention {
                    return Err(LimitsError::RetentionTooShort {
                        file: source.file.clone(),
                        route: route.id.to_string(),
                        source_id: source.id.to_string(),
                        max_age: route.retry.max_age,
                        dlq_retention: self.dlq_retention,
                        retention,
                    });
                }
            }
        }
        Ok(())
    }
}

/// How a mapping set does not fit the deployment. Both kinds are the integrator's to fix (in
/// the file or in the deployment's parameters); the text says how.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// Routes ask for private networks the deployment does not allow (one diagnostic each).
    #[error("{}", diagnostics.join("\n"))]
    NetNotAllowed { diagnostics: Vec<String> },
    /// A route retries for longer than the deployment keeps its events (with the dead-letter
    /// queue's retention on top).
    #[error(
        "{file}: route `{route}` of source `{source_id}` retries for up to {} days, which with the \
         dead-letter queue's {} days is more than the deployment keeps events \
         ({} days, RetentionDays); lower its retry.max_age or raise RetentionDays",
        days(*max_age),
        days(*dlq_retention),
        days(*retention)
    )]
    RetentionTooShort {
        file: String,
        route: String,
        source_id: String,
        max_age: Duration,
        dlq_retention: Duration,
        retention: Duration,
    },
}

impl LimitsError {
    /// A stable name of the kind, for logs and tooling (renaming one is a breaking change).
    pub fn code(&self) -> &'static str {
        match self {
            LimitsError::NetNotAllowed { .. } => "limits_net_not_allowed",
            LimitsError::RetentionTooShort { .. } => "limits_retention_too_short",
        }
    }
}

/// A set in force that does not fit the deployment (pushed around the admin function's check)
/// still runs, since refusing it would stop every source; its risk is logged.
fn warn_limits(limits: &Limits, version: u64, set: &MappingSet) {
    if let Err(m) = limits.check(set) {
        error!(version, "{m}; such deliveries can lose their event before they end");
    }
}

fn days(d: Duration) -> String {
    let days = d.as_secs_f64() / 86_400.0;
    if days.fract() == 0.0 { format!("{days:.0}") } else { format!("{days:.2}") }
}

/// Re-reads the function's secrets on an interval, so a rotated value reaches warm functions.
pub struct SecretRefresh {
    pub client: aws_sdk_secretsmanager::Client,
    pub ids: Vec<String>,
    /// The function holds only some of the deployment's secrets (see [`LayeredSecrets`]).
    pub held_some: bool,
    pub every: Duration,
}

/// The mapping set a function runs with, reloaded when a push moves the version or the
/// secret it was compiled with changes.
pub struct LiveMappings {
    repo: MappingRepo,
    secrets: RwLock<Arc<LayeredSecrets>>,
    secret_refresh: Option<SecretRefresh>,
    limits: Limits,
    version: AtomicU64,
    /// How often the version is checked (at most once per this interval, on use).
    every: Duration,
    last_check: Mutex<Instant>,
    last_secret_check: Mutex<Instant>,
}

impl LiveMappings {
    /// Loads the version in force. A set that does not compile (or does not fit `limits`)
    /// fails (and so fails the cold start); no set pushed yet gives an empty set, so that a
    /// fresh deployment answers `unknown_source` until the first push.
    pub async fn load(
        repo: MappingRepo,
        secrets: LayeredSecrets,
        secret_refresh: Option<SecretRefresh>,
        limits: Limits,
        every: Duration,
    ) -> Result<(Self, MappingSet), AwsError> {
        let pointer = repo.pointer().await?;
        let set = repo.compile(&pointer, &secrets).await?.unwrap_or_default();
        warn_limits(&limits, pointer.version, &set);
        if pointer.version == 0 {
            tracing::warn!("no mapping set pushed yet; every source is unknown until `hub mappings push`");
        } else {
            info!(version = pointer.version, sources = set.sources.len(), "mapping set loaded");
        }
        let live = Self {
            repo,
            secrets: RwLock::new(Arc::new(secrets)),
            secret_refresh,
            limits,
            version: AtomicU64::new(pointer.version),
            every,
            last_check: Mutex::new(Instant::now()),
            last_secret_check: Mutex::new(Instant::now()),
        };
        Ok((live, set))
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// The secrets mappings are compiled with now.
    pub fn secrets(&self) -> Arc<LayeredSecrets> {
        self.secrets.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks the version (and the secret) if their intervals have passed and swaps in a set
    /// compiled from what changed. A set that does not compile (e.g. a secret missing here)
    /// is logged and the current one kept.
    pub async fn refresh(&self, hub: &Hub) {
        let secrets_changed = self.refresh_secrets().await;
        {
            let mut last = self.last_check.lock().await;
            if !secrets_changed && last.elapsed() < self.every {
                return;
            }
            *last = Instant::now();
        }
        self.refresh_now(hub, secrets_changed).await;
    }

    /// Checks the version now, whatever the interval (e.g. an event names a source this set
    /// does not have: a push may have added it). Returns whether a newer set is in force.
    pub async fn refresh_forced(&self, hub: &Hub) -> bool {
        *self.last_check.lock().await = Instant::now();
        self.refresh_now(hub, false).await
    }

    /// Re-reads the secret when its interval has passed; `true` when its version changed.
    async fn refresh_secrets(&self) -> bool {
        let Some(r) = &self.secret_refresh else { return false };
        {
            let mut last = self.last_secret_check.lock().await;
            if last.elapsed() < r.every {
                return false;
            }
            *last = Instant::now();
        }
        let ids: Vec<&str> = r.ids.iter().map(String::as_str).collect();
        let loaded = crate::secrets::load_all(&r.client, &ids).await;
        match loaded.map(|l| if r.held_some { l.holding_some() } else { l }) {
            Ok(fresh) if fresh.version != self.secrets().version => {
                info!(from = ?self.secrets().version, to = ?fresh.version, "secret changed; recompiling the mapping set");
                *self.secrets.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
                true
            }
            Ok(_) => false,
            Err(e) => {
                error!(error = %e, "cannot re-read the secret; keeping the values in use");
                false
            }
        }
    }

    /// Puts `set`, compiled from `version`, in force (also right after a push from here).
    pub fn install(&self, hub: &Hub, version: u64, set: MappingSet) {
        hub.set_mappings(Arc::new(set));
        self.version.store(version, Ordering::Relaxed);
    }

    async fn refresh_now(&self, hub: &Hub, recompile: bool) -> bool {
        let latest = match self.repo.pointer().await {
            Ok(p) => p,
            Err(e) => {
                error!(error = %e, "cannot check the mapping version; keeping the current set");
                return false;
            }
        };
        if latest.version == self.version() && !recompile {
            return false;
        }
        let secrets = self.secrets();
        match self.repo.compile(&latest, secrets.as_ref()).await {
            Ok(set) => {
                let set = set.unwrap_or_default();
                warn_limits(&self.limits, latest.version, &set);
                info!(
                    from = self.version(),
                    to = latest.version,
                    sources = set.sources.len(),
                    "mapping set reloaded"
                );
                self.install(hub, latest.version, set);
                true
            }
            Err(e) => {
                error!(version = latest.version, error = %e, "new mapping set not loaded; keeping the current one");
                false
            }
        }
    }
}

#[async_trait::async_trait]
impl hub_core::ports::mappings::MappingStore for MappingRepo {
    async fn current_version(&self) -> Result<u64, hub_core::ports::StoreError> {
        MappingRepo::current_version(self).await.map_err(hub_core::ports::StoreError::from)
    }

    async fn current(
        &self,
    ) -> Result<Option<hub_core::ports::mappings::MappingVersion>, hub_core::ports::StoreError> {
        let (pointer, mut files) = self.load_current().await.map_err(hub_core::ports::StoreError::from)?;
        if pointer.version == 0 {
            return Ok(None);
        }
        files.sort();
        Ok(Some(hub_core::ports::mappings::MappingVersion { version: pointer.version, files }))
    }

    async fn push(
        &self,
        files: &[(String, String)],
        expected: Option<u64>,
        at: hub_core::time::UnixMillis,
    ) -> Result<u64, hub_core::ports::commit::CommitError> {
        let expected = match expected {
            Some(v) => v,
            None => MappingRepo::current_version(self).await.map_err(hub_core::ports::StoreError::from)?,
        };
        let staged = self.stage(files).await.map_err(hub_core::ports::StoreError::from)?;
        match self.commit(&staged, expected, at.0).await {
            Ok(v) => Ok(v),
            Err(AwsError::PushConflict { .. }) => Err(hub_core::ports::commit::Conflict::AlreadyDone.into()),
            Err(e) => Err(hub_core::ports::StoreError::from(e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_errors_keep_their_text_and_name_their_kind() {
        let day = Duration::from_secs(86_400);
        let short = LimitsError::RetentionTooShort {
            file: "crm.yaml".into(),
            route: "to_crm".into(),
            source_id: "forms".into(),
            max_age: day * 20,
            dlq_retention: day * 14,
            retention: day * 30,
        };
        assert_eq!(short.code(), "limits_retention_too_short");
        assert_eq!(
            short.to_string(),
            "crm.yaml: route `to_crm` of source `forms` retries for up to 20 days, which with the \
             dead-letter queue's 14 days is more than the deployment keeps events (30 days, \
             RetentionDays); lower its retry.max_age or raise RetentionDays"
        );
        let nets =
            LimitsError::NetNotAllowed { diagnostics: vec!["a.yaml:3: x".into(), "b.yaml:9: y".into()] };
        assert_eq!(
            (nets.code(), nets.to_string().as_str()),
            ("limits_net_not_allowed", "a.yaml:3: x\nb.yaml:9: y")
        );
    }
}
