//! The store port on DynamoDB (one table), with bodies too large for an item in S3.
//!
//! See the crate documentation for the table design. Every change that must be atomic is one
//! `TransactWriteItems` or one conditional write on the event item, whose `version` attribute
//! makes concurrent writers (two Lambda invocations of the same job) retry instead of
//! overwriting each other.

use crate::blobs::Blobs;
use crate::metrics::{Dead, Metrics};
use crate::{AwsError, sdk_error};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    Projection, ProjectionType, Put, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem, Update,
};
use bytes::Bytes;
use hub_core::event::{DeliveryRecord, DeliveryStatus, EventRecord, EventStatus};
use hub_core::ids::{DeliveryId, EventId, SourceId};
use hub_core::ports::{
    Acceptance, EventQuery, Job, JobFailed, JobFailure, NewEvent, Purged, Store, StoreError,
};
use hub_core::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Partitions of the `by_time` and `due` indexes: spreads their writes (a GSI partition takes
/// about 1,000 writes/s) at the price of one query per shard when reading.
const SHARDS: u32 = 4;
/// Items larger than this keep their payload in S3 (a DynamoDB item is at most 400 KB).
pub const INLINE_MAX: usize = 300 * 1024;
/// Optimistic writes retried this many times before the store reports contention.
const MAX_TRIES: usize = 8;

const EVENT_SK: &str = "event";
const BODY_SK: &str = "body";
pub const INDEX_BY_TIME: &str = "by_time";
pub const INDEX_BY_SOURCE: &str = "by_source";
pub const INDEX_DUE: &str = "due";

/// The DynamoDB-backed store. Cheap to clone.
#[derive(Clone)]
pub struct DynamoStore {
    ddb: Client,
    table: String,
    blobs: Blobs,
    /// `Some`: an event's items expire (DynamoDB TTL) at the event's expiry, its last receipt,
    /// dispatch or replay plus its source's retention; the duration is the expiry of events
    /// stored before events carried their own. `None`: items never expire.
    retention: Option<Duration>,
    /// Where events that become dead are counted.
    metrics: Metrics,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore").field("table", &self.table).finish_non_exhaustive()
    }
}

/// What the event item keeps besides the record: the dispatch job, the open deliveries (their
/// jobs) and where each delivery's item is.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Meta {
    /// The record without its deliveries (they are items of their own).
    record: EventRecord,
    /// When the queued dispatch is due; `None` when no dispatch is queued.
    dispatch_due: Option<u64>,
    /// Tokens of the committed dispatches, in commit order: only their delivery items belong
    /// to the event, and this order is the deliveries' order.
    runs: Vec<String>,
    /// Deliveries not final yet (of any dispatch): their attempt jobs.
    open: BTreeMap<String, Open>,
    /// The latest dispatch's deliveries and their statuses, for the event's status.
    current: Vec<(String, DeliveryStatus)>,
    /// Runs of a job that began and have not recorded an outcome yet, by job key: a run in
    /// progress (its lease), or one that died without a word (crash, timeout, out of memory).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    started: BTreeMap<String, Started>,
    /// When the event expires (ms): last receipt, dispatch or replay plus `retention_ms`.
    #[serde(default)]
    expires: Option<u64>,
    #[serde(default)]
    retention_ms: Option<u64>,
    /// Store failures in a row of a queued job, by job key (as `started`).
    #[serde(default)]
    failures: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Started {
    /// Runs begun since the job's last outcome.
    runs: u32,
    /// The latest run holds the job until then (ms).
    until: u64,
}

/// The key of a dispatch job in [`Meta::started`] and [`Meta::failures`].
const DISPATCH_KEY: &str = "dispatch";

/// The key of a job in [`Meta::started`] and [`Meta::failures`]: a delivery's is its id.
fn job_key(job: &Job) -> String {
    match job {
        Job::Dispatch(_) => DISPATCH_KEY.into(),
        Job::Attempt(_, d) => d.to_string(),
    }
}

/// What [`DynamoStore::begin`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// Run it: the job is queued and this run now holds it. The event's source, so a shell
    /// can load a newer mapping set first when its own lacks that source.
    Run { source: SourceId },
    /// Nothing to run: no such event, or the job ran already (a duplicate message).
    Nothing,
    /// Another run holds the job until then: this one is a duplicate, or comes back too soon.
    Busy(UnixMillis),
    /// The job began this many runs and none recorded an outcome: it cannot be processed.
    Poisoned(u32),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Open {
    sk: String,
    due: u64,
}

impl Meta {
    /// The job recorded an outcome (or was queued afresh): its runs and failures start over.
    fn clear_job(&mut self, key: &str) {
        self.started.remove(key);
        self.failures.remove(key);
    }

    /// Moves the expiry to `at` plus the retention, unless it is later already.
    fn rearm(&mut self, at: UnixMillis) {
        if let Some(r) = self.retention_ms {
            let next = at.0.saturating_add(r);
            self.expires = Some(self.expires.map_or(next, |e| e.max(next)));
        }
    }

    fn earliest_due(&self) -> Option<u64> {
        self.open.values().map(|o| o.due).chain(self.dispatch_due).min()
    }

    fn status(&self) -> EventStatus {
        let mut r = self.record.clone();
        r.deliveries = self.current.iter().map(|(id, st)| placeholder_delivery(id, *st)).collect();
        r.latest_count = u32::try_from(r.deliveries.len()).unwrap_or(u32::MAX);
        r.status()
    }

    fn jobs_due(&self, id: &EventId, now: u64) -> Vec<(u64, Job)> {
        let mut out = Vec::new();
        if let Some(due) = self.dispatch_due.filter(|d| *d <= now) {
            out.push((due, Job::Dispatch(id.clone())));
        }
        for (did, o) in &self.open {
            if o.due <= now {
                out.push((o.due, Job::Attempt(id.clone(), DeliveryId::new(did.clone()))));
            }
        }
        out
    }
}

fn placeholder_delivery(id: &str, status: DeliveryStatus) -> DeliveryRecord {
    DeliveryRecord {
        id: DeliveryId::new(id),
        route: hub_core::ids::RouteId::new(""),
        status,
        attempts: 0,
        created_at: UnixMillis(0),
        next_attempt_at: None,
        last_attempt_at: None,
        last_status: None,
        last_error: None,
        request: None,
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn shard_of(key: &str) -> u32 {
    // FNV-1a: stable across processes and versions (std's hasher is not).
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % SHARDS
}

/// The `ClientRequestToken` of an event's accept transaction (at most 36 characters): the same
/// for every retry of it, different for every event.
fn accept_token(id: &EventId) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(id.as_str().as_bytes())[..16])
}

fn event_pk(id: &EventId) -> String {
    format!("evt#{id}")
}

fn due_sk(due: u64, tail: &str) -> String {
    format!("{due:020}#{tail}")
}

/// Every `due_sk` at or before `now` sorts below this bound.
fn due_bound(now: u64) -> String {
    format!("{:020}", now.saturating_add(1))
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl From<AwsError> for StoreError {
    fn from(e: AwsError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn get_n(item: &HashMap<String, AttributeValue>, k: &str) -> Option<u64> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

/// Whether a failed transaction was cancelled by a condition (a race or a duplicate), and the
/// old item of the first failed condition when DynamoDB returned it.
fn condition_failure(
    e: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
    >,
) -> Option<Vec<Option<HashMap<String, AttributeValue>>>> {
    let svc = e.as_service_error()?;
    let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
        tc,
    ) = svc
    else {
        return None;
    };
    let reasons = tc.cancellation_reasons();
    if !reasons.iter().any(|r| r.code() == Some("ConditionalCheckFailed")) {
        return None;
    }
    Some(
        reasons
            .iter()
            .map(|r| if r.code() == Some("ConditionalCheckFailed") { r.item().cloned() } else { None })
            .collect(),
    )
}

/// Whether a transaction was cancelled because another one touched the same item meanwhile
/// (worth sending again).
fn is_conflict(
    e: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
    >,
) -> bool {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    match e.as_service_error() {
        Some(E::TransactionCanceledException(tc)) => {
            tc.cancellation_reasons().iter().any(|r| r.code() == Some("TransactionConflict"))
        }
        _ => false,
    }
}

type TransactResult = Result<
    (),
    aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
    >,
>;

impl DynamoStore {
    /// One transaction, sent again (a few times, with backoff) while it only conflicts with
    /// another transaction on the same items. With a `token`, DynamoDB answers a repeat of a
    /// transaction that succeeded (an SDK retry after a lost response) with success instead of
    /// running it again, for 10 minutes.
    async fn transact(&self, items: Vec<TransactWriteItem>, token: Option<&str>) -> TransactResult {
        let mut backoff = Duration::from_millis(20);
        let mut tries = 0;
        loop {
            let req = self
                .ddb
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .set_client_request_token(token.map(str::to_string));
            match req.send().await {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) && tries < 4 => {
                    tries += 1;
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn new(ddb: Client, table: impl Into<String>, blobs: Blobs, retention: Option<Duration>) -> Self {
        Self { ddb, table: table.into(), blobs, retention, metrics: Metrics::default() }
    }

    /// Counts every event that becomes dead (a dead delivery, a failed dispatch) in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn client(&self) -> &Client {
        &self.ddb
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The TTL (unix seconds) of an event's items.
    fn ttl_of(&self, meta: &Meta) -> Option<u64> {
        let r = self.retention?;
        let expires = meta.expires.unwrap_or_else(|| {
            meta.record.received_at.0.saturating_add(u64::try_from(r.as_millis()).unwrap_or(u64::MAX))
        });
        Some(expires.div_ceil(1000))
    }

    /// The event's expiry: stored, or for an event stored before expiries were, its receipt
    /// plus the store's retention.
    fn expiry_of(&self, meta: &Meta) -> Option<u64> {
        meta.expires.or_else(|| {
            self.retention.map(|r| {
                meta.record.received_at.0.saturating_add(u64::try_from(r.as_millis()).unwrap_or(u64::MAX))
            })
        })
    }

    /// The event item as it is stored: index attributes derived from `meta`, `version` next.
    fn event_item(&self, meta: &Meta, version: u64) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let id = &meta.record.id;
        let shard = shard_of(id.as_str());
        let doc = serde_json::to_string(meta).map_err(corrupt)?;
        if doc.len() > INLINE_MAX {
            return Err(StoreError::TooLarge(format!(
                "event {id}: its record ({} bytes) no longer fits one item",
                doc.len()
            )));
        }
        let mut item = HashMap::from([
            ("pk".to_string(), s(event_pk(id))),
            ("sk".to_string(), s(EVENT_SK)),
            ("doc".to_string(), s(doc)),
            ("version".to_string(), n(version)),
            ("source".to_string(), s(meta.record.source.as_str())),
            ("status".to_string(), s(meta.status().as_str())),
            ("gsi1pk".to_string(), s(format!("events#{shard}"))),
            ("gsi1sk".to_string(), s(id.as_str())),
            ("gsi2pk".to_string(), s(format!("src#{}", meta.record.source))),
            ("gsi2sk".to_string(), s(id.as_str())),
        ]);
        if let Some(due) = meta.earliest_due() {
            item.insert("due_pk".into(), s(format!("due#{shard}")));
            item.insert("due_sk".into(), s(due_sk(due, id.as_str())));
        }
        if let Some(ttl) = self.ttl_of(meta) {
            item.insert("ttl".into(), n(ttl));
        }
        Ok(item)
    }

    async fn load_meta(&self, id: &EventId) -> Result<Option<(Meta, u64)>, StoreError> {
        self.get(event_pk(id), EVENT_SK).await?.as_ref().map(parse_meta).transpose()
    }

    /// Writes the event item if its version is still `version` (and, with `extra`, the other
    /// items in the same transaction). `Ok(false)` when another writer got there first.
    async fn commit_meta(
        &self,
        meta: &Meta,
        version: u64,
        extra: Vec<TransactWriteItem>,
    ) -> Result<bool, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.event_item(meta, version + 1)?))
            .condition_expression("#v = :v")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":v", n(version))
            .build()
            .map_err(unavailable)?;
        let mut items = extra;
        items.push(TransactWriteItem::builder().put(put).build());
        match self.transact(items, None).await {
            Ok(()) => Ok(true),
            Err(e) if condition_failure(&e).is_some() => Ok(false),
            Err(e) => Err(unavailable(sdk_error(&e))),
        }
    }

    /// Runs `change` on the event's meta until its conditional write wins. `change` returns
    /// `None` to write nothing (and the result to return).
    async fn update_meta<T>(
        &self,
        id: &EventId,
        missing: T,
        mut change: impl FnMut(&mut Meta) -> Result<Result<(T, Vec<TransactWriteItem>), T>, StoreError>,
    ) -> Result<T, StoreError> {
        for _ in 0..MAX_TRIES {
            let Some((mut meta, version)) = self.load_meta(id).await? else { return Ok(missing) };
            let (result, extra) = match change(&mut meta)? {
                Ok(x) => x,
                Err(unchanged) => return Ok(unchanged),
            };
            if self.commit_meta(&meta, version, extra).await? {
                return Ok(result);
            }
        }
        Err(StoreError::Conflict(format!("event {id}: too many concurrent writers")))
    }

    fn delivery_item(
        &self,
        id: &EventId,
        sk: &str,
        doc: Result<String, String>,
        ttl: Option<u64>,
    ) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::from([("pk".to_string(), s(event_pk(id))), ("sk".to_string(), s(sk))]);
        match doc {
            Ok(inline) => item.insert("doc".into(), s(inline)),
            Err(key) => item.insert("s3_key".into(), s(key)),
        };
        if let Some(ttl) = ttl {
            item.insert("ttl".into(), n(ttl));
        }
        item
    }

    /// A delivery's JSON, inline when small, else put in S3 under a fresh key (`Err(key)`).
    async fn delivery_doc(
        &self,
        id: &EventId,
        d: &DeliveryRecord,
    ) -> Result<Result<String, String>, StoreError> {
        let doc = serde_json::to_string(d).map_err(corrupt)?;
        if doc.len() <= INLINE_MAX {
            return Ok(Ok(doc));
        }
        // A fresh key per write: a losing concurrent writer cannot overwrite the winner's object.
        let key = format!("deliveries/{id}/{}/{}", d.id, uuid::Uuid::now_v7().simple());
        self.blobs.put(&key, Bytes::from(doc)).await?;
        Ok(Err(key))
    }

    async fn batch_put(&self, items: Vec<HashMap<String, AttributeValue>>) -> Result<(), StoreError> {
        Ok(crate::batch_put(&self.ddb, &self.table, items).await?)
    }

    /// One item by key, read consistently.
    async fn get(&self, pk: String, sk: &str) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(sdk_error(&e)))?;
        Ok(out.item)
    }

    async fn query_all(
        &self,
        build: impl Fn(
            aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        want: usize,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let q = build(self.ddb.query().table_name(&self.table)).set_exclusive_start_key(start.take());
            let page = q.send().await.map_err(|e| unavailable(sdk_error(&e)))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if out.len() < want => start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    /// Items of one `due` index partition due at or before `now`, earliest first.
    async fn due_by(
        &self,
        partition: String,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        self.query_all(
            |b| {
                b.index_name(INDEX_DUE)
                    .key_condition_expression("due_pk = :pk AND due_sk < :bound")
                    .expression_attribute_values(":pk", s(partition.clone()))
                    .expression_attribute_values(":bound", s(due_bound(now.0)))
                    .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            },
            limit,
        )
        .await
    }

    /// Event ids newest first from one index partition.
    async fn list_partition(
        &self,
        index: &str,
        pk_attr: &str,
        sk_attr: &str,
        pk: String,
        q: &EventQuery,
    ) -> Result<Vec<(EventId, Meta)>, StoreError> {
        let items = self
            .query_all(
                |b| {
                    let mut cond = format!("{pk_attr} = :pk");
                    let mut b = b
                        .index_name(index)
                        .scan_index_forward(false)
                        .expression_attribute_values(":pk", s(pk.clone()));
                    if let Some(before) = &q.before {
                        cond.push_str(&format!(" AND {sk_attr} < :before"));
                        b = b.expression_attribute_values(":before", s(before.as_str()));
                    }
                    if let Some(st) = q.status {
                        b = b
                            .filter_expression("#st = :st")
                            .expression_attribute_names("#st", "status")
                            .expression_attribute_values(":st", s(st.as_str()));
                    }
                    b.key_condition_expression(cond).limit(i32::try_from(q.limit.max(1)).unwrap_or(i32::MAX))
                },
                q.limit,
            )
            .await?;
        items.iter().take(q.limit).map(|it| parse_meta(it).map(|(m, _)| (m.record.id.clone(), m))).collect()
    }

    /// Loads the delivery items of an event that belong to a committed dispatch, oldest first.
    async fn deliveries(&self, meta: &Meta) -> Result<Vec<DeliveryRecord>, StoreError> {
        let id = &meta.record.id;
        let items = self
            .query_all(
                |b| {
                    b.key_condition_expression("pk = :pk AND begins_with(sk, :dlv)")
                        .expression_attribute_values(":pk", s(event_pk(id)))
                        .expression_attribute_values(":dlv", s("dlv#"))
                        .consistent_read(true)
                },
                usize::MAX,
            )
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let sk = get_s(item, "sk").unwrap_or_default();
            // `dlv#<run token>#<index>`
            let token = sk.strip_prefix("dlv#").and_then(|r| r.split_once('#')).map(|(t, _)| t);
            let Some(run) = token.and_then(|t| meta.runs.iter().position(|r| r == t)) else {
                continue; // written by a dispatch that lost a race or crashed: not part of the event
            };
            let doc = match (get_s(item, "doc"), get_s(item, "s3_key")) {
                (Some(d), _) => Bytes::copy_from_slice(d.as_bytes()),
                (None, Some(key)) => self.blobs.get(key).await?,
                (None, None) => return Err(corrupt(format!("{sk} of {id} has no content"))),
            };
            out.push((run, serde_json::from_slice::<DeliveryRecord>(&doc).map_err(corrupt)?));
        }
        // Items come sorted by sk (index order within a run); runs go in commit order.
        out.sort_by_key(|(run, _)| *run);
        Ok(out.into_iter().map(|(_, d)| d).collect())
    }

    async fn record(&self, meta: Meta) -> Result<EventRecord, StoreError> {
        let deliveries = self.deliveries(&meta).await?;
        let mut r = meta.record;
        r.deliveries = deliveries;
        Ok(r)
    }

    /// Marks the start of a run of `job`: the run holds the job for `lease` and counts towards
    /// `max_runs`. A run that records its outcome (`save_dispatch`, `save_attempt`) clears
    /// both; a run that dies without one (crash, timeout, out of memory: nothing of it is
    /// written) leaves its count, so a job that kills every run is found out after `max_runs`
    /// and is not handed over forever.
    pub async fn begin(
        &self,
        job: &Job,
        now: UnixMillis,
        lease: Duration,
        max_runs: u32,
    ) -> Result<Begin, StoreError> {
        let (id, key) = match job {
            Job::Dispatch(id) | Job::Attempt(id, _) => (id, job_key(job)),
        };
        let until = now.0.saturating_add(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
        self.update_meta(id, Begin::Nothing, |m| {
            let queued = match job {
                Job::Dispatch(_) => m.dispatch_due.is_some(),
                Job::Attempt(_, d) => m.open.contains_key(d.as_str()),
            };
            if !queued {
                return Ok(Err(Begin::Nothing));
            }
            let entry = m.started.entry(key.clone()).or_insert(Started { runs: 0, until: 0 });
            if entry.until > now.0 {
                return Ok(Err(Begin::Busy(UnixMillis(entry.until))));
            }
            if entry.runs >= max_runs {
                return Ok(Err(Begin::Poisoned(entry.runs)));
            }
            entry.runs += 1;
            entry.until = until;
            Ok(Ok((Begin::Run { source: m.record.source.clone() }, Vec::new())))
        })
        .await
    }

    /// Jobs due at or before `cutoff` (at most `limit`, oldest first), each claimed on the way:
    /// its due time moves to `until`, so the next sweep does not send it again while the
    /// message sent now waits in the queue. A job whose run never records an outcome comes
    /// back once `until` has passed.
    pub async fn sweep(
        &self,
        cutoff: UnixMillis,
        limit: usize,
        until: UnixMillis,
    ) -> Result<Vec<Job>, StoreError> {
        let mut claimed = Vec::new();
        for job in self.due_jobs(cutoff, limit).await? {
            let id = match &job {
                Job::Dispatch(id) | Job::Attempt(id, _) => id.clone(),
            };
            let won = self
                .update_meta(&id, false, |m| {
                    let due = match &job {
                        Job::Dispatch(_) => m.dispatch_due.as_mut(),
                        Job::Attempt(_, d) => m.open.get_mut(d.as_str()).map(|o| &mut o.due),
                    };
                    match due {
                        Some(due) if *due <= cutoff.0 => {
                            *due = until.0;
                            Ok(Ok((true, Vec::new())))
                        }
                        // Done or rescheduled meanwhile.
                        _ => Ok(Err(false)),
                    }
                })
                .await?;
            if won {
                claimed.push(job);
            }
        }
        Ok(claimed)
    }

    /// Dedup keys can be long (a signature header): the key attribute stays within limits.
    fn dedup_pk(source: &SourceId, key: &str) -> String {
        let pk = format!("dedup#{source}#{key}");
        if pk.len() <= 1024 {
            return pk;
        }
        use sha2::Digest;
        format!("dedup#{source}#sha256:{}", hex::encode(sha2::Sha256::digest(key.as_bytes())))
    }
}

/// A committed dispatch as the event item records it: `placed` are the sort keys of the
/// deliveries' items.
fn apply_dispatch(
    m: &mut Meta,
    deliveries: &[DeliveryRecord],
    error: Option<String>,
    token: String,
    placed: &[String],
    at: UnixMillis,
) {
    m.dispatch_due = None;
    m.record.dispatches += 1;
    m.record.dispatched_at = Some(at);
    m.record.dispatch_error = error;
    m.record.latest_count = u32::try_from(deliveries.len()).unwrap_or(u32::MAX);
    m.runs.push(token);
    m.clear_job(DISPATCH_KEY);
    m.current = deliveries.iter().map(|d| (d.id.to_string(), d.status)).collect();
    for (d, sk) in deliveries.iter().zip(placed) {
        if !d.status.is_final() {
            let due = d.next_attempt_at.unwrap_or(at).0;
            m.open.insert(d.id.to_string(), Open { sk: sk.clone(), due });
        }
    }
}

fn parse_meta(item: &HashMap<String, AttributeValue>) -> Result<(Meta, u64), StoreError> {
    let doc = get_s(item, "doc").ok_or_else(|| corrupt("event item without doc"))?;
    let meta: Meta = serde_json::from_str(doc).map_err(corrupt)?;
    Ok((meta, get_n(item, "version").unwrap_or(0)))
}

#[async_trait]
impl Store for DynamoStore {
    async fn accept(&self, ev: NewEvent) -> Result<Acceptance, StoreError> {
        let id = ev.id.clone();
        let retention_ms = u64::try_from(ev.retention.as_millis()).unwrap_or(u64::MAX);
        let expires = ev.received_at.0.saturating_add(retention_ms);
        let body_ttl = self.retention.map(|_| expires.div_ceil(1000));
        let body_item = {
            let mut item =
                HashMap::from([("pk".to_string(), s(event_pk(&id))), ("sk".to_string(), s(BODY_SK))]);
            if ev.body.len() <= INLINE_MAX {
                item.insert("data".into(), AttributeValue::B(ev.body.to_vec().into()));
            } else {
                // Written before the transaction: if it then fails, the object is an orphan
                // that the bucket's lifecycle rule removes; never an item without its body.
                let key = format!("bodies/{id}");
                self.blobs.put(&key, ev.body.clone()).await?;
                item.insert("s3_key".into(), s(key));
            }
            if let Some(ttl) = body_ttl {
                item.insert("ttl".into(), n(ttl));
            }
            item
        };
        let record = EventRecord {
            id: id.clone(),
            source: ev.source.clone(),
            received_at: ev.received_at,
            method: ev.method,
            path: ev.path,
            query: ev.query,
            headers: ev.headers,
            remote_addr: ev.remote_addr,
            dedup_key: ev.dedup.as_ref().map(|(k, _)| k.clone()),
            body_len: ev.body.len() as u64,
            dispatches: 0,
            dispatched_at: None,
            dispatch_error: None,
            deliveries: Vec::new(),
            latest_count: 0,
        };
        let meta = Meta {
            record,
            dispatch_due: Some(ev.received_at.0),
            runs: Vec::new(),
            open: BTreeMap::new(),
            current: Vec::new(),
            started: BTreeMap::new(),
            expires: Some(expires),
            retention_ms: Some(retention_ms),
            failures: BTreeMap::new(),
        };
        let mut items = Vec::with_capacity(3);
        if let Some((key, until)) = &ev.dedup {
            // A key never outlives its event.
            let until = UnixMillis(until.0.min(expires));
            let pk = Self::dedup_pk(&ev.source, key);
            let item = HashMap::from([
                ("pk".to_string(), s(pk.clone())),
                ("sk".to_string(), s("dedup")),
                ("event_id".to_string(), s(id.as_str())),
                ("until".to_string(), n(until.0)),
                ("ttl".to_string(), n(until.0 / 1000 + 1)),
                ("due_pk".to_string(), s(format!("dedup#{}", shard_of(&pk)))),
                ("due_sk".to_string(), s(due_sk(until.0, &pk))),
            ]);
            // TTL deletes lazily (within days): an expired key still present is free again.
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR #until <= :now")
                .expression_attribute_names("#until", "until")
                .expression_attribute_values(":now", n(ev.received_at.0))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .build()
                .map_err(unavailable)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let event_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.event_item(&meta, 1)?))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(unavailable)?;
        items.push(TransactWriteItem::builder().put(event_put).build());
        let body_put =
            Put::builder().table_name(&self.table).set_item(Some(body_item)).build().map_err(unavailable)?;
        items.push(TransactWriteItem::builder().put(body_put).build());

        match self.transact(items, Some(&accept_token(&id))).await {
            Ok(()) => Ok(Acceptance::Accepted(id)),
            Err(e) => match condition_failure(&e) {
                Some(reasons) if ev.dedup.is_some() => {
                    let first = reasons.into_iter().next().flatten();
                    let original = match first.as_ref().and_then(|it| get_s(it, "event_id")) {
                        Some(orig) => EventId::new(orig),
                        None => {
                            // The old item was not returned: read it.
                            let (key, _) = ev.dedup.as_ref().ok_or_else(|| corrupt("dedup vanished"))?;
                            let item = self.get(Self::dedup_pk(&ev.source, key), "dedup").await?;
                            let Some(orig) = item.as_ref().and_then(|it| get_s(it, "event_id")) else {
                                return Err(unavailable("dedup key changed while accepting; retry"));
                            };
                            EventId::new(orig)
                        }
                    };
                    Ok(Acceptance::Duplicate(original))
                }
                Some(_) => Err(corrupt(format!("event id {id} exists already"))),
                None => Err(unavailable(sdk_error(&e))),
            },
        }
    }

    async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        match self.load_meta(id).await? {
            Some((meta, _)) => self.record(meta).await.map(Some),
            None => Ok(None),
        }
    }

    async fn body(&self, id: &EventId) -> Result<Option<Bytes>, StoreError> {
        let Some(item) = self.get(event_pk(id), BODY_SK).await? else { return Ok(None) };
        if let Some(AttributeValue::B(b)) = item.get("data") {
            return Ok(Some(Bytes::copy_from_slice(b.as_ref())));
        }
        match get_s(&item, "s3_key") {
            Some(key) => self.blobs.get(key).await.map(Some),
            None => Err(corrupt(format!("body of {id} has no content"))),
        }
    }

    async fn list_events(&self, q: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        let mut found: Vec<(EventId, Meta)> = match &q.source {
            Some(src) => {
                self.list_partition(INDEX_BY_SOURCE, "gsi2pk", "gsi2sk", format!("src#{src}"), q).await?
            }
            None => {
                let mut all = Vec::new();
                for shard in 0..SHARDS {
                    all.extend(
                        self.list_partition(INDEX_BY_TIME, "gsi1pk", "gsi1sk", format!("events#{shard}"), q)
                            .await?,
                    );
                }
                all
            }
        };
        // Event ids are time-ordered (UUIDv7): newest first is descending id order.
        found.sort_by(|a, b| b.0.as_str().cmp(a.0.as_str()));
        found.truncate(q.limit);
        let mut out = Vec::with_capacity(found.len());
        for (_, meta) in found {
            out.push(self.record(meta).await?);
        }
        Ok(out)
    }

    async fn due_jobs(&self, now: UnixMillis, limit: usize) -> Result<Vec<Job>, StoreError> {
        let mut due: Vec<(u64, Job)> = Vec::new();
        for shard in 0..SHARDS {
            let items = self.due_by(format!("due#{shard}"), now, limit).await?;
            for item in &items {
                let (meta, _) = parse_meta(item)?;
                due.extend(meta.jobs_due(&meta.record.id, now.0));
            }
        }
        due.sort_by_key(|(at, _)| *at);
        due.truncate(limit);
        Ok(due.into_iter().map(|(_, j)| j).collect())
    }

    async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError> {
        let mut earliest: Option<u64> = None;
        for shard in 0..SHARDS {
            let out = self
                .ddb
                .query()
                .table_name(&self.table)
                .index_name(INDEX_DUE)
                .key_condition_expression("due_pk = :pk")
                .expression_attribute_values(":pk", s(format!("due#{shard}")))
                .limit(1)
                .send()
                .await
                .map_err(|e| unavailable(sdk_error(&e)))?;
            let first = out.items.unwrap_or_default().into_iter().next();
            if let Some(at) = first.as_ref().and_then(|it| get_s(it, "due_sk")).and_then(|k| k.get(..20)) {
                let at: u64 = at.parse().map_err(corrupt)?;
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        Ok(earliest.map(UnixMillis))
    }

    async fn save_dispatch(
        &self,
        id: &EventId,
        deliveries: Vec<DeliveryRecord>,
        error: Option<String>,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let Some((meta, _)) = self.load_meta(id).await? else { return Ok(false) };
        if meta.dispatch_due.is_none() {
            return Ok(false);
        }
        // An event item that could not hold these deliveries would fail every write of it,
        // and the dispatch would come back forever: record the dispatch as failed instead.
        let (deliveries, error) = {
            let mut trial = meta.clone();
            let token = "0".repeat(32);
            let sks: Vec<String> = (0..deliveries.len()).map(|i| format!("dlv#{token}#{i:05}")).collect();
            apply_dispatch(&mut trial, &deliveries, error.clone(), token, &sks, at);
            match serde_json::to_string(&trial).map_err(corrupt)?.len() {
                n if n > INLINE_MAX => (
                    Vec::new(),
                    Some(format!(
                        "{} deliveries are more than one event can record (its record would be {n} \
                         bytes, at most {INLINE_MAX}); no delivery was made",
                        deliveries.len()
                    )),
                ),
                _ => (deliveries, error),
            }
        };
        // The delivery items go first, under a token of this run; they belong to the event
        // only once the event item lists the token, so a run that loses a race or crashes
        // leaves items nobody reads (they expire with the event).
        let token = uuid::Uuid::now_v7().simple().to_string();
        let mut items = Vec::with_capacity(deliveries.len());
        let mut placed = Vec::with_capacity(deliveries.len());
        // Delivery items live as long as the event after this dispatch.
        let ttl = {
            let mut armed = meta.clone();
            armed.rearm(at);
            self.ttl_of(&armed)
        };
        for (i, d) in deliveries.iter().enumerate() {
            let sk = format!("dlv#{token}#{i:05}");
            let doc = self.delivery_doc(id, d).await?;
            items.push(self.delivery_item(id, &sk, doc, ttl));
            placed.push(sk);
        }
        self.batch_put(items).await?;
        let saved = self
            .update_meta(id, false, |m| {
                if m.dispatch_due.is_none() {
                    return Ok(Err(false));
                }
                apply_dispatch(m, &deliveries, error.clone(), token.clone(), &placed, at);
                m.rearm(at);
                Ok(Ok((true, Vec::new())))
            })
            .await?;
        if saved {
            let source = meta.record.source.as_str();
            if let Some(e) = &error {
                self.metrics.dead(Dead::Dispatch, id.as_str(), source, None, e);
            }
            for d in deliveries.iter().filter(|d| d.status == DeliveryStatus::Dead) {
                let reason = d.last_error.as_deref().unwrap_or("");
                self.metrics.dead(Dead::Delivery, id.as_str(), source, Some(d.route.as_str()), reason);
            }
        }
        Ok(saved)
    }

    async fn save_attempt(&self, id: &EventId, d: DeliveryRecord) -> Result<bool, StoreError> {
        let did = d.id.to_string();
        let doc = self.delivery_doc(id, &d).await?;
        let mut source = String::new();
        let saved = self
            .update_meta(id, false, |m| {
                source = m.record.source.to_string();
                // Not open: final already (or never queued), nothing changes.
                let ttl = self.ttl_of(m);
                let Some(open) = m.open.get_mut(&did) else { return Ok(Err(false)) };
                let item = self.delivery_item(id, &open.sk, doc.clone(), ttl);
                match (d.status.is_final(), d.next_attempt_at) {
                    (false, Some(at)) => open.due = at.0,
                    (false, None) => {}
                    (true, _) => {
                        m.open.remove(&did);
                    }
                }
                m.clear_job(&did);
                if let Some(c) = m.current.iter_mut().find(|(x, _)| *x == did) {
                    c.1 = d.status;
                }
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .build()
                    .map_err(unavailable)?;
                Ok(Ok((true, vec![TransactWriteItem::builder().put(put).build()])))
            })
            .await?;
        if saved && d.status == DeliveryStatus::Dead {
            let reason = d.last_error.as_deref().unwrap_or("");
            self.metrics.dead(Dead::Delivery, id.as_str(), &source, Some(d.route.as_str()), reason);
        }
        Ok(saved)
    }

    async fn requeue(&self, id: &EventId, at: UnixMillis) -> Result<bool, StoreError> {
        self.update_meta(id, false, |m| {
            m.dispatch_due = Some(at.0);
            m.clear_job(DISPATCH_KEY);
            m.rearm(at);
            // The body item lives as long as the event.
            let mut extra = Vec::new();
            if let Some(ttl) = self.ttl_of(m) {
                let update = Update::builder()
                    .table_name(&self.table)
                    .key("pk", s(event_pk(id)))
                    .key("sk", s(BODY_SK))
                    .update_expression("SET #ttl = :ttl")
                    .expression_attribute_names("#ttl", "ttl")
                    .expression_attribute_values(":ttl", n(ttl))
                    .build()
                    .map_err(unavailable)?;
                extra.push(TransactWriteItem::builder().update(update).build());
            }
            Ok(Ok((true, extra)))
        })
        .await
    }

    async fn expires_at(&self, id: &EventId) -> Result<Option<UnixMillis>, StoreError> {
        Ok(self.load_meta(id).await?.and_then(|(m, _)| self.expiry_of(&m)).map(UnixMillis))
    }

    /// Events expire by TTL; this forgets dedup keys, at most `limit`, through the due index.
    async fn purge(&self, now: UnixMillis, limit: usize) -> Result<Purged, StoreError> {
        let limit = limit.max(1);
        let mut purged = Purged::default();
        let mut seen = 0usize;
        for shard in 0..SHARDS {
            if seen >= limit {
                break;
            }
            let items = self.due_by(format!("dedup#{shard}"), now, limit - seen).await?;
            for item in items.into_iter().take(limit - seen) {
                seen += 1;
                let Some(pk) = get_s(&item, "pk") else { continue };
                // Deleted only if still expired: a key reused meanwhile is kept.
                let r = self
                    .ddb
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", s(pk))
                    .key("sk", s("dedup"))
                    .condition_expression("#until <= :now")
                    .expression_attribute_names("#until", "until")
                    .expression_attribute_values(":now", n(now.0))
                    .send()
                    .await;
                match r {
                    Ok(_) => purged.dedup_keys += 1,
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                    Err(e) => return Err(unavailable(sdk_error(&e))),
                }
            }
        }
        purged.more = seen >= limit;
        Ok(purged)
    }

    async fn job_failed(&self, job: &Job, f: &JobFailure) -> Result<JobFailed, StoreError> {
        let (Job::Dispatch(id) | Job::Attempt(id, _)) = job;
        let key = job_key(job);
        let max = f.max_failures.max(1);
        let counted = self
            .update_meta(id, None, |m| {
                let queued = match job {
                    Job::Dispatch(_) => m.dispatch_due.is_some(),
                    Job::Attempt(..) => m.open.contains_key(&key),
                };
                if !queued {
                    return Ok(Err(None));
                }
                let failures = m.failures.get(&key).copied().unwrap_or(0).saturating_add(1);
                if failures >= max {
                    return Ok(Err(Some(failures)));
                }
                m.failures.insert(key.clone(), failures);
                match job {
                    Job::Dispatch(_) => m.dispatch_due = Some(f.retry_at.0),
                    Job::Attempt(..) => {
                        if let Some(o) = m.open.get_mut(&key) {
                            o.due = f.retry_at.0;
                        }
                    }
                }
                Ok(Ok((Some(failures), Vec::new())))
            })
            .await?;
        let Some(failures) = counted else { return Ok(JobFailed::Gone) };
        if failures < max {
            return Ok(JobFailed::Deferred { failures });
        }
        // Given up: recorded like any other outcome of the job, which also clears its count.
        let why = format!("gave up after {failures} failed runs: {}", f.reason);
        let recorded = match job {
            Job::Dispatch(_) => self.save_dispatch(id, Vec::new(), Some(why), f.at).await?,
            Job::Attempt(_, did) => {
                let Some(ev) = self.event(id).await? else { return Ok(JobFailed::Gone) };
                let Some(mut d) = ev.deliveries.into_iter().find(|d| &d.id == did) else {
                    return Ok(JobFailed::Gone);
                };
                d.status = DeliveryStatus::Dead;
                d.next_attempt_at = None;
                d.last_error = Some(why);
                self.save_attempt(id, d).await?
            }
        };
        Ok(if recorded { JobFailed::Dead { failures } } else { JobFailed::Gone })
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.get("health".into(), "health").await.map(drop)
    }
}

/// Creates the table as the SAM template does (keys, the three indexes, TTL): for tests and
/// for trying the AWS shell against DynamoDB Local.
pub async fn create_table(ddb: &Client, table: &str) -> Result<(), AwsError> {
    let attr = |name: &str| {
        AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build()
    };
    let key = |name: &str, t: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(t).build();
    let gsi = |name: &str, pk: &str, sk: &str| -> Result<GlobalSecondaryIndex, AwsError> {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(key(pk, KeyType::Hash).map_err(AwsError::build)?)
            .key_schema(key(sk, KeyType::Range).map_err(AwsError::build)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
            .map_err(AwsError::build)
    };
    let mut req = ddb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash).map_err(AwsError::build)?)
        .key_schema(key("sk", KeyType::Range).map_err(AwsError::build)?)
        .global_secondary_indexes(gsi(INDEX_BY_TIME, "gsi1pk", "gsi1sk")?)
        .global_secondary_indexes(gsi(INDEX_BY_SOURCE, "gsi2pk", "gsi2sk")?)
        .global_secondary_indexes(gsi(INDEX_DUE, "due_pk", "due_sk")?);
    for a in ["pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "due_pk", "due_sk"] {
        req = req.attribute_definitions(attr(a).map_err(AwsError::build)?);
    }
    req.send().await.map_err(|e| AwsError::Call(sdk_error(&e)))?;
    ddb.update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("ttl")
                .build()
                .map_err(AwsError::build)?,
        )
        .send()
        .await
        .map_err(|e| AwsError::Call(sdk_error(&e)))?;
    Ok(())
}
