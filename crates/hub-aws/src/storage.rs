//! The split storage ports on DynamoDB (layout 2): one item per event, per delivery, per dedup
//! key, per state item and per application timer, indexes that copy only keys, and timers kept
//! as attributes of the item they belong to.
//!
//! # Items
//!
//! | item      | `pk`                      | `sk`            | attributes |
//! |-----------|---------------------------|-----------------|------------|
//! | event     | `e#<event id>`            | `e`             | `doc` (deflated JSON: the record as received), `body` (deflated) or `s3`, `src`, `ret`/`exp` (retention, expiry ms), `dispatches`, `dat`, `derr`, `latest`, `runs` (one token per dispatch), listing keys, dispatch timer, `ttl` |
//! | delivery  | `e#<event id>`            | `d#<delivery id>` | `doc` (deflated JSON record with its rendered request), `st` (status), `run` (its dispatch's token), `idx`, attempt timer, `ttl` |
//! | dedup key | `k#<source>#<sha256 key>` | `k`             | `ev`, `until` (ms), `ttl` |
//! | timer     | `t#<timer key>`           | `t`             | `payload` (JSON), timer |
//! | state     | `s#<state key>`           | `s`             | `v` (version), `val` (JSON) |
//!
//! A timer is three attributes of its item: `dpk` = `due#<shard>`, `dsk` = `<due ms:020>#<timer
//! key>` and `dfail` (failed runs in a row). Setting, moving or clearing one updates its own item
//! only.
//!
//! # Indexes (all `KEYS_ONLY`: an update that leaves the keys alone writes no index)
//!
//! | index    | partition key            | sort key | holds |
//! |----------|--------------------------|----------|-------|
//! | `list`   | `lpk` = `l#<shard>`      | `lsk` = event id (time-ordered) | every event |
//! | `source` | `spk` = `s#<source>#<shard>` | `ssk` = event id | every event, by source |
//! | `due`    | `dpk` = `due#<shard>`    | `dsk`    | every timer set |
//!
//! Shards spread the index writes over partitions (an index partition takes about 1,000 writes
//! a second): events by a hash of their id over `list_shards`, timers by a hash of their key over
//! `timer_shards`. Readers query every shard and merge, so the counts may be raised later, never
//! lowered.
//!
//! # Writes
//!
//! A commit of one change is one conditional write (an attempt's outcome is one `UpdateItem` of
//! its delivery item, with no read); a commit of several changes is one `TransactWriteItems`.
//! A dispatch of more deliveries than a transaction takes writes them first, marked with a new
//! run token, and then commits the token on the event on condition that the dispatch is still
//! due: deliveries of a run that lost are never read, and their timers are set only after the
//! token is committed. Expired items are deleted by DynamoDB's TTL; an expired dedup key is
//! free at once (its `until`), so nothing is purged by hand.

use crate::blobs::Blobs;
use crate::{AwsError, CallKind, Service, sdk_error};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, Put, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem, Update,
};
use bytes::Bytes;
use hub_core::event::{DeliveryRecord, DeliveryStatus, EventRecord};
use hub_core::ids::{DeliveryId, EventId, SourceId};
use hub_core::ports::commit::{Change, Commit, CommitError, Committer, Conflict};
use hub_core::ports::dedup::DedupIndex;
use hub_core::ports::log::{EventLog, EventPage};
use hub_core::ports::schedule::{Scheduled, Scheduler, Timer, TimerKey, TimerPayload};
use hub_core::ports::state::{StateKey, StateStore, Versioned};
use hub_core::ports::{EventQuery, Job, NewEvent, Purged, StoreError};
use hub_core::time::UnixMillis;
use std::collections::HashMap;
use std::io::{Read, Write as _};
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

pub const INDEX_LIST: &str = "list";
pub const INDEX_SOURCE: &str = "source";
pub const INDEX_DUE: &str = "due";

/// Index shards for events (listing) and for timers.
pub const DEFAULT_LIST_SHARDS: u32 = 16;
pub const DEFAULT_TIMER_SHARDS: u32 = 32;

/// Largest deflated body kept in the event item; larger ones go to the bodies bucket.
pub const INLINE_BODY_MAX: usize = 64 * 1024;
/// Largest deflated delivery document kept in its item (an item holds 400 KB).
pub const INLINE_DOC_MAX: usize = 100 * 1024;
/// How long a dedup key held by an event that was never stored stays held: longer than any
/// ingest call runs, so its writer has given up.
pub const DEDUP_TAKEOVER_MS: u64 = 120_000;
/// Most items in one transaction (DynamoDB's limit is 100; one is the event).
const TX_MAX: usize = 99;

/// The storage ports on one DynamoDB table of layout 2 (see the module docs).
#[derive(Clone, Debug)]
pub struct DynamoStorage {
    ddb: Client,
    table: String,
    blobs: Blobs,
    /// Whether items carry a TTL (`RetentionDays` > 0).
    expire: bool,
    list_shards: u32,
    timer_shards: u32,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn get_n(item: &Item, k: &str) -> Option<u64> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

/// A failed DynamoDB call as the store error of its kind.
fn call_failed<E>(operation: &'static str, e: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    AwsError::dynamodb(operation, e).into()
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn build_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("building a DynamoDB request: {e}"))
}

/// FNV-1a: stable across processes and versions (std's hasher is not).
fn shard(key: &str, shards: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % shards.max(1)
}

fn deflate(data: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).map_err(corrupt)?;
    enc.finish().map_err(corrupt)
}

fn inflate(data: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(data).read_to_end(&mut out).map_err(corrupt)?;
    Ok(out)
}

fn event_pk(id: &EventId) -> String {
    format!("e#{id}")
}

fn delivery_sk(id: &DeliveryId) -> String {
    format!("d#{id}")
}

fn dedup_pk(source: &SourceId, key: &str) -> String {
    use sha2::Digest;
    format!("k#{source}#{}", hex::encode(sha2::Sha256::digest(key.as_bytes())))
}

fn due_sk(due: UnixMillis, key: &TimerKey) -> String {
    format!("{:020}#{key}", due.0)
}

/// Every `dsk` due at or before `now` sorts below this bound.
fn due_bound(now: UnixMillis) -> String {
    format!("{:020}", now.0.saturating_add(1))
}

fn parse_due_sk(dsk: &str) -> Option<(UnixMillis, TimerKey)> {
    let (due, key) = dsk.split_once('#')?;
    Some((UnixMillis(due.parse().ok()?), TimerKey::from_stored(key)))
}

fn parse_job(key: &str) -> Option<Job> {
    let mut parts = key.split('/');
    match (parts.next()?, parts.next(), parts.next()) {
        ("d", Some(e), None) => Some(Job::Dispatch(EventId::new(e))),
        ("a", Some(e), Some(d)) => Some(Job::Attempt(EventId::new(e), DeliveryId::new(d))),
        _ => None,
    }
}

/// The item a timer lives on.
fn timer_item(key: &TimerKey) -> (String, String) {
    match parse_job(key.as_str()) {
        Some(Job::Dispatch(e)) => (event_pk(&e), "e".into()),
        Some(Job::Attempt(e, d)) => (event_pk(&e), delivery_sk(&d)),
        None => (format!("t#{key}"), "t".into()),
    }
}

/// What a failed condition of one write means.
#[derive(Clone, Debug)]
enum OnFail {
    /// The dedup key is held: the old item names its holder.
    Duplicate,
    AlreadyDone,
    NoSuchEvent(EventId),
    /// An attempt's delivery: missing, or final.
    Attempt(EventId, DeliveryId),
    StateMoved(StateKey),
    /// Nothing to do (a timer to clear or count that is not set): the write is dropped.
    Nothing,
}

/// One conditional write of a commit; without `op`, a refusal known before writing. `blob`
/// is a document too large for an item, put in the bodies bucket before the write.
struct Write {
    op: Option<TransactWriteItem>,
    on_fail: OnFail,
    blob: Option<(String, Bytes)>,
}

impl Write {
    fn conflict(&self, old: Option<&Item>) -> Option<Conflict> {
        Some(match &self.on_fail {
            OnFail::Duplicate => {
                let holder = old.and_then(|i| get_s(i, "ev")).map(EventId::new)?;
                Conflict::Duplicate(holder)
            }
            OnFail::AlreadyDone => Conflict::AlreadyDone,
            OnFail::NoSuchEvent(e) => Conflict::NoSuchEvent(e.clone()),
            OnFail::Attempt(e, d) => match old {
                None => Conflict::NoSuchDelivery(e.clone(), d.clone()),
                Some(_) => Conflict::AlreadyDone,
            },
            OnFail::StateMoved(k) => Conflict::StateMoved(k.clone()),
            OnFail::Nothing => return None,
        })
    }
}

fn update(
    table: &str,
    pk: String,
    sk: String,
    expr: String,
    cond: Option<&str>,
    values: Vec<(&str, AttributeValue)>,
) -> Result<TransactWriteItem, StoreError> {
    let mut u = Update::builder()
        .table_name(table)
        .key("pk", s(pk))
        .key("sk", s(sk))
        .update_expression(expr)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .set_condition_expression(cond.map(str::to_string));
    for (k, v) in values {
        u = u.expression_attribute_values(k, v);
    }
    if cond.is_some_and(|c| c.contains("#st")) {
        u = u.expression_attribute_names("#st", "st");
    }
    Ok(TransactWriteItem::builder().update(u.build().map_err(build_err)?).build())
}

fn put(
    table: &str,
    item: Item,
    cond: Option<&str>,
    values: Vec<(&str, AttributeValue)>,
) -> Result<TransactWriteItem, StoreError> {
    let mut p = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .set_condition_expression(cond.map(str::to_string));
    for (k, v) in values {
        p = p.expression_attribute_values(k, v);
    }
    Ok(TransactWriteItem::builder().put(p.build().map_err(build_err)?).build())
}

fn delete(table: &str, pk: String, sk: String) -> Result<TransactWriteItem, StoreError> {
    let d =
        Delete::builder().table_name(table).key("pk", s(pk)).key("sk", s(sk)).build().map_err(build_err)?;
    Ok(TransactWriteItem::builder().delete(d).build())
}

/// The event item's attributes that change after acceptance.
struct EventState {
    dispatches: u64,
    runs: Vec<String>,
    exp: u64,
    ret: u64,
    dispatch_due: bool,
}

impl EventState {
    fn of(item: &Item) -> Self {
        let runs = item
            .get("runs")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
            .unwrap_or_default();
        Self {
            dispatches: get_n(item, "dispatches").unwrap_or(0),
            runs,
            exp: get_n(item, "exp").unwrap_or(0),
            ret: get_n(item, "ret").unwrap_or(0),
            dispatch_due: item.contains_key("dsk"),
        }
    }

    /// The expiry after activity at `at`: never earlier than it is.
    fn rearmed(&self, at: UnixMillis) -> u64 {
        self.exp.max(at.0.saturating_add(self.ret))
    }
}

impl DynamoStorage {
    pub fn new(ddb: Client, table: impl Into<String>, blobs: Blobs, expire: bool) -> Self {
        Self {
            ddb,
            table: table.into(),
            blobs,
            expire,
            list_shards: DEFAULT_LIST_SHARDS,
            timer_shards: DEFAULT_TIMER_SHARDS,
        }
    }

    /// Other shard counts (raise only: readers query every shard up to the count).
    pub fn with_shards(mut self, list: u32, timers: u32) -> Self {
        self.list_shards = list.max(1);
        self.timer_shards = timers.max(1);
        self
    }

    fn ttl(&self, exp_ms: u64) -> Option<AttributeValue> {
        self.expire.then(|| n(exp_ms.div_ceil(1000)))
    }

    fn due_pk(&self, key: &TimerKey) -> String {
        format!("due#{}", shard(key.as_str(), self.timer_shards))
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| call_failed("GetItem", &e))?;
        Ok(out.item)
    }

    /// The body kept in an event item, or in S3 when it was too large for the item.
    async fn body_of(&self, id: &EventId, item: &Item) -> Result<Bytes, StoreError> {
        if let Some(b) = item.get("body").and_then(|v| v.as_b().ok()) {
            return Ok(Bytes::from(inflate(b.as_ref())?));
        }
        match get_s(item, "s3") {
            Some(key) => self.blobs.get(key).await,
            None => Err(corrupt(format!("event {id} has no body"))),
        }
    }

    /// The event item and its deliveries (of committed runs only, in dispatch order).
    async fn event_items(&self, id: &EventId) -> Result<Option<(Item, Vec<Item>)>, StoreError> {
        let mut event = None;
        let mut deliveries = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .ddb
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(event_pk(id)))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| call_failed("Query", &e))?;
            for item in out.items.unwrap_or_default() {
                match get_s(&item, "sk") {
                    Some("e") => event = Some(item),
                    Some(sk) if sk.starts_with("d#") => deliveries.push(item),
                    _ => {}
                }
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        let Some(event) = event else { return Ok(None) };
        let runs = EventState::of(&event).runs;
        let position = |d: &Item| get_s(d, "run").and_then(|r| runs.iter().position(|x| x == r));
        let mut committed: Vec<(usize, u64, Item)> = deliveries
            .into_iter()
            .filter_map(|d| position(&d).map(|p| (p, get_n(&d, "idx").unwrap_or(0), d)))
            .collect();
        committed.sort_by_key(|(p, i, _)| (*p, *i));
        Ok(Some((event, committed.into_iter().map(|(_, _, d)| d).collect())))
    }

    async fn record_of(&self, event: &Item, deliveries: &[Item]) -> Result<EventRecord, StoreError> {
        let doc =
            event.get("doc").and_then(|v| v.as_b().ok()).ok_or_else(|| corrupt("event item without doc"))?;
        let mut rec: EventRecord = serde_json::from_slice(&inflate(doc.as_ref())?).map_err(corrupt)?;
        rec.dispatches = u32::try_from(get_n(event, "dispatches").unwrap_or(0)).unwrap_or(u32::MAX);
        rec.dispatched_at = get_n(event, "dat").map(UnixMillis);
        rec.dispatch_error = get_s(event, "derr").map(str::to_string);
        rec.latest_count = u32::try_from(get_n(event, "latest").unwrap_or(0)).unwrap_or(u32::MAX);
        let docs = futures_util::future::join_all(deliveries.iter().map(|d| self.delivery_of(d))).await;
        rec.deliveries = docs.into_iter().collect::<Result<_, _>>()?;
        Ok(rec)
    }

    async fn delivery_of(&self, item: &Item) -> Result<DeliveryRecord, StoreError> {
        let doc = match (item.get("doc").and_then(|v| v.as_b().ok()), get_s(item, "docs3")) {
            (Some(b), _) => inflate(b.as_ref())?,
            (None, Some(key)) => inflate(&self.blobs.get(key).await?)?,
            (None, None) => return Err(corrupt("delivery item without doc")),
        };
        serde_json::from_slice(&doc).map_err(corrupt)
    }

    /// The attributes of a delivery item (without its timer).
    fn delivery_item(
        &self,
        event: &EventId,
        d: &DeliveryRecord,
        run: &str,
        idx: usize,
        exp: u64,
    ) -> Result<(Item, Option<(String, Bytes)>), StoreError> {
        let (doc, blob) = match delivery_doc(event, d)? {
            Doc::Inline(b) => (("doc", AttributeValue::B(b.into())), None),
            Doc::Blob(key, bytes) => (("docs3", s(&key)), Some((key, bytes))),
        };
        let mut item: Item = [
            ("pk", s(event_pk(event))),
            ("sk", s(delivery_sk(&d.id))),
            doc,
            ("st", s(status_name(d.status))),
            ("run", s(run)),
            ("idx", n(idx as u64)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(ttl) = self.ttl(exp) {
            item.insert("ttl".into(), ttl);
        }
        Ok((item, blob))
    }

    fn set_due(&self, item: &mut Item, key: &TimerKey, due: UnixMillis) {
        item.insert("dpk".into(), s(self.due_pk(key)));
        item.insert("dsk".into(), s(due_sk(due, key)));
    }

    /// The writes of one change, reading what they depend on.
    async fn writes(&self, at: UnixMillis, change: Change, solo: bool) -> Result<Vec<Write>, StoreError> {
        let t = self.table.as_str();
        Ok(match change {
            Change::Accept(ev) => self.accept_writes(ev, None).await?,
            Change::Dispatch { event, deliveries, error } => {
                let Some(item) = self.get(event_pk(&event), "e").await? else {
                    return Ok(vec![refused(OnFail::NoSuchEvent(event))]);
                };
                let state = EventState::of(&item);
                if !state.dispatch_due {
                    return Ok(vec![refused(OnFail::AlreadyDone)]);
                }
                self.dispatch_writes(at, &event, &state, &deliveries, error.as_deref(), true)?
            }
            Change::Attempt { event, delivery } => vec![self.attempt_write(&event, &delivery)?],
            Change::Replay { event } => {
                let Some(item) = self.get(event_pk(&event), "e").await? else {
                    return Ok(vec![refused(OnFail::NoSuchEvent(event))]);
                };
                let exp = EventState::of(&item).rearmed(at);
                let key = TimerKey::dispatch(&event);
                let mut values =
                    vec![(":dpk", s(self.due_pk(&key))), (":dsk", s(due_sk(at, &key))), (":exp", n(exp))];
                let mut expr = "SET dpk = :dpk, dsk = :dsk, exp = :exp".to_string();
                if let Some(ttl) = self.ttl(exp) {
                    expr.push_str(", #ttl_v = :ttl");
                    values.push((":ttl", ttl));
                }
                expr.push_str(" REMOVE dfail");
                let op = update(t, event_pk(&event), "e".into(), expr, Some("attribute_exists(pk)"), values)?;
                vec![write(with_ttl_name(op), OnFail::NoSuchEvent(event))]
            }
            Change::SetTimer(timer) => vec![self.set_timer_write(&timer)?],
            Change::CancelTimer(key) => {
                let (pk, sk) = timer_item(&key);
                if parse_job(key.as_str()).is_none() {
                    vec![write(delete(t, pk, sk)?, OnFail::Nothing)]
                } else if !solo && self.get(pk.clone(), &sk).await?.is_none() {
                    Vec::new()
                } else {
                    let op = update(
                        t,
                        pk,
                        sk,
                        "REMOVE dpk, dsk, dfail".into(),
                        Some("attribute_exists(pk)"),
                        vec![],
                    )?;
                    vec![write(op, OnFail::Nothing)]
                }
            }
            Change::TimerFailed { key, retry_at } => {
                let (pk, sk) = timer_item(&key);
                if !solo && self.get(pk.clone(), &sk).await?.is_none_or(|i| !i.contains_key("dsk")) {
                    return Ok(Vec::new());
                }
                let values = vec![(":dsk", s(due_sk(retry_at, &key))), (":one", n(1))];
                let op = update(
                    t,
                    pk,
                    sk,
                    "SET dsk = :dsk ADD dfail :one".into(),
                    Some("attribute_exists(dsk)"),
                    values,
                )?;
                vec![write(op, OnFail::Nothing)]
            }
            Change::PutState { key, value, read_version } => {
                let item: Item = [
                    ("pk", s(format!("s#{key}"))),
                    ("sk", s("s")),
                    ("v", n(read_version + 1)),
                    ("val", s(serde_json::to_string(&value).map_err(corrupt)?)),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                let op = if read_version == 0 {
                    put(t, item, Some("attribute_not_exists(pk)"), vec![])?
                } else {
                    put(t, item, Some("v = :rv"), vec![(":rv", n(read_version))])?
                };
                vec![write(op, OnFail::StateMoved(key))]
            }
        })
    }

    /// The dedup key (when the event has one) and the event item; with `dispatch`, the event
    /// is stored dispatched (its deliveries are written by the caller) instead of due.
    async fn accept_writes(
        &self,
        ev: NewEvent,
        dispatch: Option<(UnixMillis, &str, usize, Option<&str>)>,
    ) -> Result<Vec<Write>, StoreError> {
        let t = self.table.as_str();
        let retention = u64::try_from(ev.retention.as_millis()).unwrap_or(u64::MAX);
        let exp = ev.received_at.0.saturating_add(retention);
        let mut writes = Vec::new();
        if let Some((key, until)) = &ev.dedup {
            // A key never outlives its event.
            let until = until.0.min(exp);
            let mut item: Item = [
                ("pk", s(dedup_pk(&ev.source, key))),
                ("sk", s("k")),
                ("ev", s(ev.id.as_str())),
                ("until", n(until)),
                ("at", n(ev.received_at.0)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            if let Some(ttl) = self.ttl(until) {
                item.insert("ttl".into(), ttl);
            }
            let cond = "attribute_not_exists(pk) OR #until <= :received OR ev = :id";
            let values = vec![(":received", n(ev.received_at.0)), (":id", s(ev.id.as_str()))];
            let op = put(t, item, Some(cond), values)?;
            writes.push(write(with_name(op, "#until", "until"), OnFail::Duplicate));
        }
        let body = deflate(&ev.body)?;
        let id = ev.id.clone();
        let mut item: Item = HashMap::new();
        if body.len() <= INLINE_BODY_MAX {
            item.insert("body".into(), AttributeValue::B(body.into()));
        } else {
            let key = format!("bodies/{id}");
            self.blobs.put(&key, ev.body.clone()).await?;
            item.insert("s3".into(), s(key));
        }
        let source = ev.source.clone();
        let received_at = ev.received_at;
        let rec = ev.into_record();
        let doc = deflate(&serde_json::to_vec(&rec).map_err(corrupt)?)?;
        let attrs = [
            ("pk", s(event_pk(&id))),
            ("sk", s("e")),
            ("doc", AttributeValue::B(doc.into())),
            ("src", s(source.as_str())),
            ("ret", n(retention)),
            ("exp", n(exp)),
            ("lpk", s(format!("l#{}", shard(id.as_str(), self.list_shards)))),
            ("lsk", s(id.as_str())),
            ("spk", s(format!("s#{source}#{}", shard(id.as_str(), self.list_shards)))),
            ("ssk", s(id.as_str())),
        ];
        item.extend(attrs.into_iter().map(|(k, v)| (k.to_string(), v)));
        match dispatch {
            None => {
                item.insert("dispatches".into(), n(0));
                item.insert("runs".into(), AttributeValue::L(Vec::new()));
                self.set_due(&mut item, &TimerKey::dispatch(&id), received_at);
            }
            Some((at, run, count, error)) => {
                item.insert("dispatches".into(), n(1));
                item.insert("runs".into(), AttributeValue::L(vec![s(run)]));
                item.insert("dat".into(), n(at.0));
                item.insert("latest".into(), n(count as u64));
                if let Some(e) = error {
                    item.insert("derr".into(), s(e));
                }
                let exp = exp.max(at.0.saturating_add(retention));
                item.insert("exp".into(), n(exp));
            }
        }
        if let Some(ttl) = self.ttl(get_n(&item, "exp").unwrap_or(exp)) {
            item.insert("ttl".into(), ttl);
        }
        // A repeat of this very write (an SDK retry after a lost answer) finds its own item.
        let op = put(t, item, Some("attribute_not_exists(pk) OR lsk = :id"), vec![(":id", s(id.as_str()))])?;
        writes.push(write(op, OnFail::AlreadyDone));
        Ok(writes)
    }

    /// A dispatch of `deliveries` on an event whose state was read: the deliveries of a new run
    /// and the event update that commits it (on condition that the dispatch is still due).
    fn dispatch_writes(
        &self,
        at: UnixMillis,
        event: &EventId,
        state: &EventState,
        deliveries: &[DeliveryRecord],
        error: Option<&str>,
        with_timers: bool,
    ) -> Result<Vec<Write>, StoreError> {
        let t = self.table.as_str();
        let run = uuid::Uuid::now_v7().simple().to_string();
        let exp = state.rearmed(at);
        let mut writes = Vec::new();
        for (i, d) in deliveries.iter().enumerate() {
            let (mut item, blob) = self.delivery_item(event, d, &run, i, exp)?;
            if with_timers && !d.status.is_final() {
                let key = TimerKey::attempt(event, &d.id);
                self.set_due(&mut item, &key, d.next_attempt_at.unwrap_or(at));
            }
            writes.push(Write { blob, ..write(put(t, item, None, vec![])?, OnFail::Nothing) });
        }
        let mut values = vec![
            (":n", n(state.dispatches)),
            (":n1", n(state.dispatches + 1)),
            (":dat", n(at.0)),
            (":latest", n(deliveries.len() as u64)),
            (":run", AttributeValue::L(vec![s(&run)])),
            (":exp", n(exp)),
        ];
        let mut expr =
            "SET dispatches = :n1, dat = :dat, latest = :latest, runs = list_append(runs, :run), exp = :exp"
                .to_string();
        if let Some(ttl) = self.ttl(exp) {
            expr.push_str(", #ttl_v = :ttl");
            values.push((":ttl", ttl));
        }
        if let Some(e) = error {
            expr.push_str(", derr = :derr");
            values.push((":derr", s(e)));
        }
        expr.push_str(" REMOVE dpk, dsk, dfail");
        if error.is_none() {
            expr.push_str(", derr");
        }
        let cond = "attribute_exists(dsk) AND dispatches = :n";
        let op = update(t, event_pk(event), "e".into(), expr, Some(cond), values)?;
        writes.push(write(with_ttl_name(op), OnFail::AlreadyDone));
        Ok(writes)
    }

    fn attempt_write(&self, event: &EventId, d: &DeliveryRecord) -> Result<Write, StoreError> {
        let (doc_set, doc_value, blob) = match delivery_doc(event, d)? {
            Doc::Inline(b) => ("doc = :doc", AttributeValue::B(b.into()), None),
            Doc::Blob(key, bytes) => ("docs3 = :doc", s(&key), Some((key, bytes))),
        };
        let mut values = vec![
            (":doc", doc_value),
            (":st", s(status_name(d.status))),
            (":p", s(status_name(DeliveryStatus::Pending))),
            (":r", s(status_name(DeliveryStatus::Retrying))),
        ];
        let open = matches!(d.status, DeliveryStatus::Pending | DeliveryStatus::Retrying);
        let expr = match (open, d.next_attempt_at) {
            (true, Some(due)) => {
                let key = TimerKey::attempt(event, &d.id);
                values.push((":dpk", s(self.due_pk(&key))));
                values.push((":dsk", s(due_sk(due, &key))));
                format!("SET {doc_set}, #st = :st, dpk = :dpk, dsk = :dsk REMOVE dfail")
            }
            _ => format!("SET {doc_set}, #st = :st REMOVE dpk, dsk, dfail"),
        };
        let cond = "attribute_exists(pk) AND (#st = :p OR #st = :r)";
        let op = update(&self.table, event_pk(event), delivery_sk(&d.id), expr, Some(cond), values)?;
        let op = with_name(op, "#st", "st");
        Ok(Write { blob, ..write(op, OnFail::Attempt(event.clone(), d.id.clone())) })
    }

    fn set_timer_write(&self, timer: &Timer) -> Result<Write, StoreError> {
        let (pk, sk) = timer_item(&timer.key);
        let values = vec![(":dpk", s(self.due_pk(&timer.key))), (":dsk", s(due_sk(timer.due, &timer.key)))];
        Ok(match &timer.payload {
            TimerPayload::Job(_) => {
                let op = update(
                    &self.table,
                    pk,
                    sk,
                    "SET dpk = :dpk, dsk = :dsk REMOVE dfail".into(),
                    Some("attribute_exists(pk)"),
                    values,
                )?;
                let on_fail = match parse_job(timer.key.as_str()) {
                    Some(Job::Dispatch(e) | Job::Attempt(e, _)) => OnFail::NoSuchEvent(e),
                    None => OnFail::Nothing,
                };
                write(op, on_fail)
            }
            TimerPayload::Data(v) => {
                let mut item: Item = [
                    ("pk", s(pk)),
                    ("sk", s(sk)),
                    ("payload", s(serde_json::to_string(v).map_err(corrupt)?)),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                self.set_due(&mut item, &timer.key, timer.due);
                write(put(&self.table, item, None, vec![])?, OnFail::Nothing)
            }
        })
    }

    /// Sends writes: one conditional write alone, several as one transaction.
    async fn send(&self, mut writes: Vec<Write>) -> Result<(), CommitError> {
        if writes.is_empty() {
            return Ok(());
        }
        self.put_blobs(&writes).await?;
        if writes.len() == 1 {
            let w = writes.remove(0);
            return self.send_one(w).await;
        }
        if writes.len() > 100 {
            return Err(StoreError::TooLarge(format!(
                "a commit of {} item writes (at most 100)",
                writes.len()
            ))
            .into());
        }
        let ops: Vec<TransactWriteItem> = writes.iter().filter_map(|w| w.op.clone()).collect();
        let mut backoff = Duration::from_millis(20);
        let mut tries = 0;
        loop {
            let req = self.ddb.transact_write_items().set_transact_items(Some(ops.clone()));
            match req.send().await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
                    let Some(E::TransactionCanceledException(tc)) = e.as_service_error() else {
                        return Err(call_failed("TransactWriteItems", &e).into());
                    };
                    let reasons = tc.cancellation_reasons();
                    if let Some((w, r)) =
                        writes.iter().zip(reasons).find(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                    {
                        return match w.conflict(r.item()) {
                            Some(c) => Err(c.into()),
                            // A timer to clear that is gone meanwhile: try the rest again.
                            None => Err(StoreError::Conflict("a timer changed meanwhile".into()).into()),
                        };
                    }
                    if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) && tries < 4 {
                        tries += 1;
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        continue;
                    }
                    // Cancelled for another reason: the first one given says of what kind.
                    let kind = reasons
                        .iter()
                        .find_map(|r| {
                            r.code()
                                .filter(|c| *c != "None")
                                .map(|c| CallKind::of_answer(Some(c), r.message(), None))
                        })
                        .unwrap_or(CallKind::Conflict);
                    let e = AwsError::Call {
                        service: Service::DynamoDb,
                        operation: "TransactWriteItems",
                        kind,
                        detail: sdk_error(&e),
                    };
                    return Err(StoreError::from(e).into());
                }
            }
        }
    }

    /// An accept without a transaction: the dedup key first (a held key refuses the accept
    /// before anything else is written), then the deliveries, then the event item, which makes
    /// it visible. A failure in between leaves a key held by an event that does not exist:
    /// once [`DEDUP_TAKEOVER_MS`] has passed (no writer is still at it), the next copy of the
    /// webhook takes the key over. Deliveries without their event are never read (an attempt
    /// reads the event) and expire.
    async fn accept_in_order(
        &self,
        received_at: UnixMillis,
        mut writes: Vec<Write>,
    ) -> Result<(), CommitError> {
        if writes.first().is_some_and(|w| matches!(w.on_fail, OnFail::Duplicate)) {
            let dedup = writes.remove(0);
            self.claim_dedup(dedup, received_at).await?;
        }
        let event = writes.pop().ok_or_else(|| corrupt("no event write"))?;
        self.put_blobs(&writes).await?;
        let items: Vec<Item> = writes
            .iter()
            .filter_map(|w| w.op.as_ref().and_then(|o| o.put()).map(|p| p.item().clone()))
            .collect();
        if !items.is_empty() {
            crate::batch_put(&self.ddb, &self.table, items).await.map_err(StoreError::from)?;
        }
        self.send_one(event).await
    }

    /// Puts a dedup key on condition that it is free; a key held by an event that was never
    /// stored (its writer failed half-way) is taken over after [`DEDUP_TAKEOVER_MS`].
    async fn claim_dedup(&self, w: Write, received_at: UnixMillis) -> Result<(), CommitError> {
        let Some(p) = w.op.as_ref().and_then(|o| o.put()) else { return Ok(()) };
        let item = p.item().clone();
        let Some(old) = self.put_one(p).await? else { return Ok(()) };
        let old = old.unwrap_or_default();
        let Some(holder) = get_s(&old, "ev").map(EventId::new) else {
            return Err(corrupt("dedup item without its event").into());
        };
        let claimed_at = get_n(&old, "at").unwrap_or(0);
        let fresh = received_at.0 < claimed_at.saturating_add(DEDUP_TAKEOVER_MS);
        // A copy accepted at this very moment: its event item follows its key within
        // milliseconds, so look a few times before answering.
        for _ in 0..if fresh { 20 } else { 1 } {
            if self.get(event_pk(&holder), "e").await?.is_some() {
                return Err(Conflict::Duplicate(holder).into());
            }
            if fresh {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if fresh {
            return Err(StoreError::Conflict(
                "the first copy of this webhook is still being stored; send it again shortly".into(),
            )
            .into());
        }
        let r = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("ev = :holder")
            .expression_attribute_values(":holder", s(holder.as_str()))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StoreError::Conflict("another copy of this webhook took its dedup key first".into())
                    .into())
            }
            Err(e) => Err(call_failed("PutItem", &e).into()),
        }
    }

    /// Puts the documents too large for their items in the bucket (before the items that name
    /// them are written: an item never points at a missing object).
    async fn put_blobs(&self, writes: &[Write]) -> Result<(), StoreError> {
        let puts = writes.iter().filter_map(|w| w.blob.as_ref()).map(|(k, b)| self.blobs.put(k, b.clone()));
        for r in futures_util::future::join_all(puts).await {
            r?;
        }
        Ok(())
    }

    /// One conditional PutItem: `None` when it was written, `Some(old item)` when its condition
    /// failed (the old item when there was one).
    async fn put_one(&self, p: &Put) -> Result<Option<Option<Item>>, StoreError> {
        let r = self
            .ddb
            .put_item()
            .table_name(p.table_name())
            .set_item(Some(p.item().clone()))
            .set_condition_expression(p.condition_expression().map(str::to_string))
            .set_expression_attribute_names(p.expression_attribute_names().cloned())
            .set_expression_attribute_values(p.expression_attribute_values().cloned())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match r {
            Ok(_) => Ok(None),
            Err(e) => match e.as_service_error() {
                Some(
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c),
                ) => Ok(Some(c.item().cloned())),
                _ => Err(call_failed("PutItem", &e)),
            },
        }
    }

    async fn send_one(&self, w: Write) -> Result<(), CommitError> {
        self.put_blobs(std::slice::from_ref(&w)).await?;
        let failed = |old: Option<Item>| -> Result<(), CommitError> {
            match w.conflict(old.as_ref()) {
                Some(c) => Err(c.into()),
                None => Ok(()),
            }
        };
        let Some(op) = w.op.as_ref() else { return failed(None) };
        if let Some(p) = op.put() {
            return match self.put_one(p).await? {
                None => Ok(()),
                Some(old) => failed(old),
            };
        }
        if let Some(u) = op.update() {
            let r = self
                .ddb
                .update_item()
                .table_name(u.table_name())
                .set_key(Some(u.key().clone()))
                .update_expression(u.update_expression())
                .set_condition_expression(u.condition_expression().map(str::to_string))
                .set_expression_attribute_names(u.expression_attribute_names().cloned())
                .set_expression_attribute_values(u.expression_attribute_values().cloned())
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            return match r {
                Ok(_) => Ok(()),
                Err(e) => match e.as_service_error() {
                    Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c)) => {
                        failed(c.item().cloned())
                    }
                    _ => Err(call_failed("UpdateItem", &e).into()),
                },
            };
        }
        if let Some(d) = op.delete() {
            self.ddb
                .delete_item()
                .table_name(d.table_name())
                .set_key(Some(d.key().clone()))
                .send()
                .await
                .map_err(|e| call_failed("DeleteItem", &e))?;
            return Ok(());
        }
        Ok(())
    }

    /// A dispatch too big for one transaction: deliveries first under a new run token, then the
    /// token committed on the event, then the timers of the open deliveries.
    async fn dispatch_in_steps(
        &self,
        at: UnixMillis,
        event: &EventId,
        deliveries: &[DeliveryRecord],
        error: Option<&str>,
    ) -> Result<(), CommitError> {
        let Some(item) = self.get(event_pk(event), "e").await? else {
            return Err(Conflict::NoSuchEvent(event.clone()).into());
        };
        let state = EventState::of(&item);
        if !state.dispatch_due {
            return Err(Conflict::AlreadyDone.into());
        }
        let mut writes = self.dispatch_writes(at, event, &state, deliveries, error, false)?;
        let commit = writes.pop().ok_or_else(|| corrupt("no event write"))?;
        self.put_blobs(&writes).await?;
        let items: Vec<Item> = writes
            .iter()
            .filter_map(|w| w.op.as_ref().and_then(|o| o.put()).map(|p| p.item().clone()))
            .collect();
        crate::batch_put(&self.ddb, &self.table, items).await.map_err(StoreError::from)?;
        self.send_one(commit).await?;
        let timers: Vec<Write> = deliveries
            .iter()
            .filter(|d| !d.status.is_final())
            .map(|d| {
                let job = Job::Attempt(event.clone(), d.id.clone());
                self.set_timer_write(&Timer::job(job, d.next_attempt_at.unwrap_or(at)))
            })
            .collect::<Result<_, _>>()?;
        let sends = timers.into_iter().map(|w| self.send_one(w));
        for r in futures_util::future::join_all(sends).await {
            r?;
        }
        Ok(())
    }

    /// Timers of one due shard at or before `now`, earliest first.
    async fn due_in_shard(
        &self,
        shard: u32,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<(UnixMillis, TimerKey)>, StoreError> {
        let out = self
            .ddb
            .query()
            .table_name(&self.table)
            .index_name(INDEX_DUE)
            .key_condition_expression("dpk = :p AND dsk < :b")
            .expression_attribute_values(":p", s(format!("due#{shard}")))
            .expression_attribute_values(":b", s(due_bound(now)))
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| call_failed("Query", &e))?;
        Ok(out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|i| get_s(i, "dsk").and_then(parse_due_sk))
            .collect())
    }

    async fn payload(&self, key: &TimerKey) -> Result<Option<TimerPayload>, StoreError> {
        if let Some(job) = parse_job(key.as_str()) {
            return Ok(Some(TimerPayload::Job(job)));
        }
        let (pk, sk) = timer_item(key);
        match self.get(pk, &sk).await? {
            Some(item) => get_s(&item, "payload")
                .map(|p| serde_json::from_str(p).map(TimerPayload::Data).map_err(corrupt))
                .transpose(),
            None => Ok(None),
        }
    }

    /// One listing shard's event ids (newest first) older than `before`.
    async fn ids_in_shard(
        &self,
        q: &EventQuery,
        shard: u32,
        before: Option<&EventId>,
        limit: usize,
    ) -> Result<Vec<EventId>, StoreError> {
        let (index, pk_name, sk_name, pk) = match &q.source {
            Some(src) => (INDEX_SOURCE, "spk", "ssk", format!("s#{src}#{shard}")),
            None => (INDEX_LIST, "lpk", "lsk", format!("l#{shard}")),
        };
        let mut req = self
            .ddb
            .query()
            .table_name(&self.table)
            .index_name(index)
            .scan_index_forward(false)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .expression_attribute_values(":p", s(pk));
        req = match before {
            Some(b) => req
                .key_condition_expression(format!("{pk_name} = :p AND {sk_name} < :b"))
                .expression_attribute_values(":b", s(b.as_str())),
            None => req.key_condition_expression(format!("{pk_name} = :p")),
        };
        let out = req.send().await.map_err(|e| call_failed("Query", &e))?;
        Ok(out.items.unwrap_or_default().iter().filter_map(|i| get_s(i, sk_name).map(EventId::new)).collect())
    }
}

fn refused(on_fail: OnFail) -> Write {
    Write { op: None, on_fail, blob: None }
}

fn write(op: TransactWriteItem, on_fail: OnFail) -> Write {
    Write { op: Some(op), on_fail, blob: None }
}

/// A delivery's document: inline when it fits an item comfortably, else a key in the bodies
/// bucket (and the bytes to put there).
enum Doc {
    Inline(Vec<u8>),
    Blob(String, Bytes),
}

fn delivery_doc(event: &EventId, d: &DeliveryRecord) -> Result<Doc, StoreError> {
    let doc = deflate(&serde_json::to_vec(d).map_err(corrupt)?)?;
    Ok(if doc.len() <= INLINE_DOC_MAX {
        Doc::Inline(doc)
    } else {
        Doc::Blob(format!("deliveries/{event}/{}", d.id), Bytes::from(doc))
    })
}

fn with_name(op: TransactWriteItem, name: &str, attr: &str) -> TransactWriteItem {
    let mut op = op;
    if let Some(p) = op.put.as_mut() {
        p.expression_attribute_names.get_or_insert_with(HashMap::new).insert(name.into(), attr.into());
    }
    if let Some(u) = op.update.as_mut() {
        u.expression_attribute_names.get_or_insert_with(HashMap::new).insert(name.into(), attr.into());
    }
    op
}

fn with_ttl_name(op: TransactWriteItem) -> TransactWriteItem {
    let uses = op.update().is_some_and(|u| u.update_expression().contains("#ttl_v"));
    if uses { with_name(op, "#ttl_v", "ttl") } else { op }
}

fn status_name(s: DeliveryStatus) -> &'static str {
    match s {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Retrying => "retrying",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Dead => "dead",
    }
}

#[async_trait]
impl Committer for DynamoStorage {
    async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        let at = commit.at;
        let mut changes = commit.changes;
        // Accepting an event and dispatching it at once: the event is written dispatched.
        if let [Change::Accept(ev), Change::Dispatch { event, .. }, ..] = changes.as_slice()
            && &ev.id == event
        {
            let Change::Dispatch { deliveries, error, .. } = changes.remove(1) else {
                unreachable!("matched above")
            };
            let Change::Accept(ev) = changes.remove(0) else { unreachable!("matched above") };
            if !changes.is_empty() || deliveries.len() >= TX_MAX {
                return Err(StoreError::TooLarge(
                    "an accept dispatched at once takes no other change and fewer than 99 deliveries".into(),
                )
                .into());
            }
            let id = ev.id.clone();
            let run = uuid::Uuid::now_v7().simple().to_string();
            let retention = u64::try_from(ev.retention.as_millis()).unwrap_or(u64::MAX);
            let exp = ev.received_at.0.saturating_add(retention).max(at.0.saturating_add(retention));
            let received_at = ev.received_at;
            let mut writes =
                self.accept_writes(ev, Some((at, &run, deliveries.len(), error.as_deref()))).await?;
            let event_write = writes.pop().ok_or_else(|| corrupt("no event write"))?;
            for (i, d) in deliveries.iter().enumerate() {
                let (mut item, blob) = self.delivery_item(&id, d, &run, i, exp)?;
                if !d.status.is_final() {
                    self.set_due(&mut item, &TimerKey::attempt(&id, &d.id), d.next_attempt_at.unwrap_or(at));
                }
                writes.push(Write { blob, ..write(put(&self.table, item, None, vec![])?, OnFail::Nothing) });
            }
            writes.push(event_write);
            return self.accept_in_order(received_at, writes).await;
        }
        if let [Change::Accept(_)] = changes.as_slice() {
            let Some(Change::Accept(ev)) = changes.pop() else { unreachable!("matched above") };
            let received_at = ev.received_at;
            let writes = self.accept_writes(ev, None).await?;
            return self.accept_in_order(received_at, writes).await;
        }
        if let [Change::Dispatch { deliveries, .. }] = changes.as_slice()
            && deliveries.len() >= TX_MAX
        {
            let Some(Change::Dispatch { event, deliveries, error }) = changes.pop() else {
                unreachable!("matched above")
            };
            return self.dispatch_in_steps(at, &event, &deliveries, error.as_deref()).await;
        }
        let solo = changes.len() == 1;
        let mut writes = Vec::new();
        for change in changes {
            writes.extend(self.writes(at, change, solo).await?);
        }
        if let Some(w) = writes.iter().find(|w| w.op.is_none()) {
            // Refused before writing (the event is missing, the dispatch ran already).
            return match w.conflict(None) {
                Some(c) => Err(c.into()),
                None => Ok(()),
            };
        }
        self.send(writes).await
    }
}

#[async_trait]
impl EventLog for DynamoStorage {
    async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        match self.event_items(id).await? {
            Some((event, deliveries)) => Ok(Some(self.record_of(&event, &deliveries).await?)),
            None => Ok(None),
        }
    }

    async fn body(&self, id: &EventId) -> Result<Option<Bytes>, StoreError> {
        let Some(item) = self.get(event_pk(id), "e").await? else { return Ok(None) };
        Ok(Some(self.body_of(id, &item).await?))
    }

    /// One read of the event item: its record (without deliveries, which a dispatch does not
    /// need) and its body.
    async fn event_with_body(&self, id: &EventId) -> Result<Option<(EventRecord, Bytes)>, StoreError> {
        let Some(item) = self.get(event_pk(id), "e").await? else { return Ok(None) };
        let body = self.body_of(id, &item).await?;
        Ok(Some((self.record_of(&item, &[]).await?, body)))
    }

    async fn delivery(
        &self,
        event: &EventId,
        delivery: &DeliveryId,
    ) -> Result<Option<(SourceId, DeliveryRecord)>, StoreError> {
        let (ev, d) = futures_util::future::join(
            self.get(event_pk(event), "e"),
            self.get(event_pk(event), &delivery_sk(delivery)),
        )
        .await;
        let (Some(ev), Some(d)) = (ev?, d?) else { return Ok(None) };
        let runs = EventState::of(&ev).runs;
        if !get_s(&d, "run").is_some_and(|r| runs.iter().any(|x| x == r)) {
            // Written by a dispatch that lost its race: never committed.
            return Ok(None);
        }
        let source = get_s(&ev, "src").map(SourceId::new).ok_or_else(|| corrupt("event item without src"))?;
        Ok(Some((source, self.delivery_of(&d).await?)))
    }

    async fn page(&self, q: &EventQuery) -> Result<EventPage, StoreError> {
        let limit = q.limit.max(1);
        let mut events = Vec::new();
        let mut before = q.before.clone();
        let mut more = false;
        // Status is known only from an event's deliveries: read pages until enough match.
        for _ in 0..50 {
            let per_shard = limit + 1;
            let queries =
                (0..self.list_shards).map(|sh| self.ids_in_shard(q, sh, before.as_ref(), per_shard));
            let mut ids: Vec<EventId> = Vec::new();
            for r in futures_util::future::join_all(queries).await {
                ids.extend(r?);
            }
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids.dedup();
            let take: Vec<EventId> = ids.into_iter().take(per_shard).collect();
            if take.is_empty() {
                break;
            }
            let reads = take.iter().map(|id| self.event(id));
            let records = futures_util::future::join_all(reads).await;
            for (id, r) in take.iter().zip(records) {
                before = Some(id.clone());
                let Some(ev) = r? else { continue };
                // The index queried already narrowed them to the source; the status is known only now.
                if !q.matches(&ev) {
                    continue;
                }
                if events.len() == limit {
                    more = true;
                    break;
                }
                events.push(ev);
            }
            if more || take.len() < per_shard {
                break;
            }
        }
        let next = if more { events.last().map(|e: &EventRecord| e.id.clone()) } else { None };
        Ok(EventPage { events, next })
    }

    async fn expires_at(&self, id: &EventId) -> Result<Option<UnixMillis>, StoreError> {
        Ok(self.get(event_pk(id), "e").await?.and_then(|i| get_n(&i, "exp")).map(UnixMillis))
    }

    async fn purge(&self, _now: UnixMillis, _limit: usize) -> Result<Purged, StoreError> {
        // DynamoDB's TTL deletes expired items; an expired dedup key is free from its `until`.
        Ok(Purged::default())
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.get("health".into(), "health").await.map(|_| ())
    }
}

#[async_trait]
impl Scheduler for DynamoStorage {
    async fn due(&self, now: UnixMillis, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let queries = (0..self.timer_shards).map(|sh| self.due_in_shard(sh, now, limit));
        let mut due: Vec<(UnixMillis, TimerKey)> = Vec::new();
        for r in futures_util::future::join_all(queries).await {
            due.extend(r?);
        }
        due.sort();
        due.truncate(limit);
        let mut out = Vec::with_capacity(due.len());
        for (at, key) in due {
            if let Some(payload) = self.payload(&key).await? {
                out.push(Timer { key, due: at, payload });
            }
        }
        Ok(out)
    }

    async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError> {
        let queries = (0..self.timer_shards).map(|sh| self.due_in_shard(sh, UnixMillis(u64::MAX / 2), 1));
        let mut first = None;
        for r in futures_util::future::join_all(queries).await {
            if let Some((at, _)) = r?.into_iter().next() {
                first = Some(first.map_or(at, |f: UnixMillis| f.min(at)));
            }
        }
        Ok(first)
    }

    async fn timer(&self, key: &TimerKey) -> Result<Option<Scheduled>, StoreError> {
        let (pk, sk) = timer_item(key);
        let Some(item) = self.get(pk, &sk).await? else { return Ok(None) };
        let Some((due, _)) = get_s(&item, "dsk").and_then(parse_due_sk) else { return Ok(None) };
        let payload = match parse_job(key.as_str()) {
            Some(job) => TimerPayload::Job(job),
            None => match get_s(&item, "payload") {
                Some(p) => TimerPayload::Data(serde_json::from_str(p).map_err(corrupt)?),
                None => return Ok(None),
            },
        };
        let failures = u32::try_from(get_n(&item, "dfail").unwrap_or(0)).unwrap_or(u32::MAX);
        Ok(Some(Scheduled { timer: Timer { key: key.clone(), due, payload }, failures }))
    }

    async fn claim(
        &self,
        key: &TimerKey,
        now: UnixMillis,
        until: UnixMillis,
    ) -> Result<Option<Scheduled>, StoreError> {
        let Some(payload) = self.payload(key).await? else { return Ok(None) };
        let (pk, sk) = timer_item(key);
        let r = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression("SET dsk = :new ADD dfail :one")
            .condition_expression("attribute_exists(dsk) AND dsk < :bound")
            .expression_attribute_values(":new", s(due_sk(until, key)))
            .expression_attribute_values(":bound", s(due_bound(now)))
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await;
        match r {
            Ok(out) => {
                let failures = out.attributes.as_ref().and_then(|a| get_n(a, "dfail")).unwrap_or(1);
                let failures = u32::try_from(failures).unwrap_or(u32::MAX);
                Ok(Some(Scheduled { timer: Timer { key: key.clone(), due: until, payload }, failures }))
            }
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(_)) => Ok(None),
                _ => Err(call_failed("UpdateItem", &e)),
            },
        }
    }
}

#[async_trait]
impl DedupIndex for DynamoStorage {
    async fn holder(
        &self,
        source: &SourceId,
        key: &str,
        now: UnixMillis,
    ) -> Result<Option<EventId>, StoreError> {
        let item = self.get(dedup_pk(source, key), "k").await?;
        Ok(item
            .filter(|i| get_n(i, "until").is_some_and(|u| u > now.0))
            .and_then(|i| get_s(&i, "ev").map(EventId::new)))
    }
}

#[async_trait]
impl StateStore for DynamoStorage {
    async fn load(&self, keys: &[StateKey]) -> Result<Vec<Option<Versioned>>, StoreError> {
        let mut found: HashMap<String, Versioned> = HashMap::new();
        for chunk in keys.chunks(100) {
            let mut ka = KeysAndAttributes::builder().consistent_read(true);
            for k in chunk {
                ka = ka.keys(
                    [("pk".to_string(), s(format!("s#{k}"))), ("sk".to_string(), s("s"))]
                        .into_iter()
                        .collect(),
                );
            }
            let mut request = Some(HashMap::from([(self.table.clone(), ka.build().map_err(build_err)?)]));
            while let Some(items) = request.take().filter(|r| !r.is_empty()) {
                let out = self
                    .ddb
                    .batch_get_item()
                    .set_request_items(Some(items))
                    .send()
                    .await
                    .map_err(|e| call_failed("BatchGetItem", &e))?;
                for item in out.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default() {
                    let (Some(pk), Some(v), Some(val)) =
                        (get_s(&item, "pk"), get_n(&item, "v"), get_s(&item, "val"))
                    else {
                        continue;
                    };
                    let value = serde_json::from_str(val).map_err(corrupt)?;
                    found.insert(pk.to_string(), Versioned { value, version: v });
                }
                request = out.unprocessed_keys;
            }
        }
        Ok(keys.iter().map(|k| found.remove(&format!("s#{k}"))).collect())
    }
}

/// Creates a table of layout 2 (on demand, TTL on `ttl`), as the template does.
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
            .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
            .build()
            .map_err(AwsError::build)
    };
    let mut req = ddb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash).map_err(AwsError::build)?)
        .key_schema(key("sk", KeyType::Range).map_err(AwsError::build)?)
        .global_secondary_indexes(gsi(INDEX_LIST, "lpk", "lsk")?)
        .global_secondary_indexes(gsi(INDEX_SOURCE, "spk", "ssk")?)
        .global_secondary_indexes(gsi(INDEX_DUE, "dpk", "dsk")?);
    for a in ["pk", "sk", "lpk", "lsk", "spk", "ssk", "dpk", "dsk"] {
        req = req.attribute_definitions(attr(a).map_err(AwsError::build)?);
    }
    req.send().await.map_err(|e| AwsError::dynamodb("CreateTable", &e))?;
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
        .map_err(|e| AwsError::dynamodb("UpdateTimeToLive", &e))?;
    Ok(())
}
