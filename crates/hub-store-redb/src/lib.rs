//! Embedded store adapter: the event log, dedup index and job queue in one redb file.
//!
//! Every change is one ACID transaction, committed with fsync before the caller hears `Ok`, so a
//! `kill -9` at any point loses nothing acknowledged. Writes go through one writer thread that
//! batches concurrent requests into a single commit (group commit): under load many webhooks
//! share one fsync, alone each still gets its own.
//!
//! Tables:
//! - `events`: event id → event record (JSON)
//! - `bodies`: event id → raw body bytes
//! - `dedup`: `source \0 key` → (remember-until ms, event id)
//! - `queue`: (due ms, job key) → (), the schedule; `job_due`: job key → due ms, its index
//!
//! Job keys: `d/<event>` (dispatch) and `a/<event>/<delivery>` (attempt).

use async_trait::async_trait;
use hub_core::event::{DeliveryRecord, DeliveryStatus, EventRecord};
use hub_core::ids::{DeliveryId, EventId};
use hub_core::ports::{Acceptance, EventQuery, Job, NewEvent, Store, StoreError};
use hub_core::time::UnixMillis;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;

const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
const BODIES: TableDefinition<&str, &[u8]> = TableDefinition::new("bodies");
const DEDUP: TableDefinition<&str, (u64, &str)> = TableDefinition::new("dedup");
const QUEUE: TableDefinition<(u64, &str), ()> = TableDefinition::new("queue");
const JOB_DUE: TableDefinition<&str, u64> = TableDefinition::new("job_due");

/// Most operations folded into one commit.
const MAX_BATCH: usize = 128;

/// Operations waiting for the writer at most. Each can hold a whole body, so the queue is
/// bounded: when the disk cannot keep up, callers hear `Unavailable` (a sender gets 503 and
/// retries) instead of the process growing until it runs out of memory.
pub const DEFAULT_QUEUE_CAPACITY: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open store {path}: {source}")]
    Open { path: String, source: redb::DatabaseError },
    #[error("cannot initialise store: {0}")]
    Init(String),
}

impl OpenError {
    /// Another process (a running `hub serve`) holds the file.
    pub fn is_locked(&self) -> bool {
        matches!(self, OpenError::Open { source: redb::DatabaseError::DatabaseAlreadyOpen, .. })
    }
}

enum Op {
    Accept(NewEvent, oneshot::Sender<Result<Acceptance, StoreError>>),
    Dispatch(
        EventId,
        Vec<DeliveryRecord>,
        Option<String>,
        UnixMillis,
        oneshot::Sender<Result<bool, StoreError>>,
    ),
    Attempt(EventId, DeliveryRecord, oneshot::Sender<Result<bool, StoreError>>),
    Requeue(EventId, UnixMillis, oneshot::Sender<Result<bool, StoreError>>),
    Purge(UnixMillis, oneshot::Sender<Result<u64, StoreError>>),
}

/// The redb-backed store. Cheap to clone.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    writer: mpsc::SyncSender<Op>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the store file and starts its writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with_queue(path, DEFAULT_QUEUE_CAPACITY)
    }

    /// Like [`RedbStore::open`], with room for `capacity` operations waiting for the writer.
    pub fn open_with_queue(path: impl AsRef<Path>, capacity: usize) -> Result<Self, OpenError> {
        let path = path.as_ref();
        let db = Database::create(path)
            .map_err(|source| OpenError::Open { path: path.display().to_string(), source })?;
        let txn = db.begin_write().map_err(|e| OpenError::Init(e.to_string()))?;
        {
            let init = |e: redb::TableError| OpenError::Init(e.to_string());
            txn.open_table(EVENTS).map_err(init)?;
            txn.open_table(BODIES).map_err(init)?;
            txn.open_table(DEDUP).map_err(init)?;
            txn.open_table(QUEUE).map_err(init)?;
            txn.open_table(JOB_DUE).map_err(init)?;
        }
        txn.commit().map_err(|e| OpenError::Init(e.to_string()))?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let wdb = db.clone();
        std::thread::Builder::new()
            .name("hub-store-writer".into())
            .spawn(move || writer_loop(&wdb, &rx))
            .map_err(|e| OpenError::Init(e.to_string()))?;
        Ok(Self { db, writer: tx })
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.try_send(make(tx)).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => unavailable("the store's write queue is full"),
            mpsc::TrySendError::Disconnected(_) => unavailable("writer stopped"),
        })?;
        rx.await.map_err(|_| unavailable("writer stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(unavailable)?
    }
}

fn writer_loop(db: &Database, rx: &mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        apply_batch(db, ops);
    }
}

/// Sends an op's result once the commit outcome (an error, or none) is known.
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;

/// Applies every op in one transaction; replies only after the commit is durable.
fn apply_batch(db: &Database, ops: Vec<Op>) {
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => return fail_all(ops, &e.to_string()),
    };
    let mut replies: Vec<Reply> = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Accept(ev, tx) => {
                let r = accept(&txn, ev);
                replies.push(Box::new(move |err| reply(tx, r, err)));
            }
            Op::Dispatch(id, ds, error, at, tx) => {
                let r = save_dispatch(&txn, &id, ds, error, at);
                replies.push(Box::new(move |err| reply(tx, r, err)));
            }
            Op::Attempt(id, d, tx) => {
                let r = save_attempt(&txn, &id, d);
                replies.push(Box::new(move |err| reply(tx, r, err)));
            }
            Op::Requeue(id, at, tx) => {
                let r = requeue(&txn, &id, at);
                replies.push(Box::new(move |err| reply(tx, r, err)));
            }
            Op::Purge(now, tx) => {
                let r = purge(&txn, now);
                replies.push(Box::new(move |err| reply(tx, r, err)));
            }
        }
    }
    let commit_err = txn.commit().err().map(|e| e.to_string());
    for r in replies {
        r(commit_err.as_deref());
    }
}

fn reply<T>(tx: oneshot::Sender<Result<T, StoreError>>, r: Result<T, StoreError>, commit_err: Option<&str>) {
    let r = match commit_err {
        Some(e) => Err(unavailable(format!("commit failed: {e}"))),
        None => r,
    };
    let _ = tx.send(r);
}

fn fail_all(ops: Vec<Op>, e: &str) {
    for op in ops {
        let _ = match op {
            Op::Accept(_, tx) => tx.send(Err(unavailable(e))).map_err(drop),
            Op::Dispatch(.., tx) => tx.send(Err(unavailable(e))).map_err(drop),
            Op::Attempt(_, _, tx) => tx.send(Err(unavailable(e))).map_err(drop),
            Op::Requeue(_, _, tx) => tx.send(Err(unavailable(e))).map_err(drop),
            Op::Purge(_, tx) => tx.send(Err(unavailable(e))).map_err(drop),
        };
    }
}

fn dispatch_key(id: &EventId) -> String {
    format!("d/{id}")
}

fn attempt_key(id: &EventId, d: &DeliveryId) -> String {
    format!("a/{id}/{d}")
}

fn parse_job(key: &str) -> Option<Job> {
    let mut parts = key.split('/');
    match (parts.next()?, parts.next(), parts.next()) {
        ("d", Some(e), None) => Some(Job::Dispatch(EventId::new(e))),
        ("a", Some(e), Some(d)) => Some(Job::Attempt(EventId::new(e), DeliveryId::new(d))),
        _ => None,
    }
}

/// Sets (or with `None` clears) a job's due time; returns the previous one.
fn set_job(txn: &WriteTransaction, key: &str, due: Option<UnixMillis>) -> Result<Option<u64>, StoreError> {
    let mut index = txn.open_table(JOB_DUE).map_err(unavailable)?;
    let mut queue = txn.open_table(QUEUE).map_err(unavailable)?;
    let old = index.remove(key).map_err(unavailable)?.map(|g| g.value());
    if let Some(old) = old {
        queue.remove((old, key)).map_err(unavailable)?;
    }
    if let Some(due) = due {
        index.insert(key, due.0).map_err(unavailable)?;
        queue.insert((due.0, key), ()).map_err(unavailable)?;
    }
    Ok(old)
}

fn load_event(txn: &WriteTransaction, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
    let t = txn.open_table(EVENTS).map_err(unavailable)?;
    let g = t.get(id.as_str()).map_err(unavailable)?;
    g.map(|g| serde_json::from_slice(g.value()).map_err(corrupt)).transpose()
}

fn put_event(txn: &WriteTransaction, ev: &EventRecord) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(ev).map_err(corrupt)?;
    let mut t = txn.open_table(EVENTS).map_err(unavailable)?;
    t.insert(ev.id.as_str(), bytes.as_slice()).map_err(unavailable)?;
    Ok(())
}

fn accept(txn: &WriteTransaction, ev: NewEvent) -> Result<Acceptance, StoreError> {
    if let Some((key, until)) = &ev.dedup {
        let dkey = format!("{}\0{}", ev.source, key);
        let mut dedup = txn.open_table(DEDUP).map_err(unavailable)?;
        let existing = dedup.get(dkey.as_str()).map_err(unavailable)?.map(|g| {
            let (u, id) = g.value();
            (u, id.to_string())
        });
        if let Some((u, id)) = existing
            && u > ev.received_at.0
        {
            return Ok(Acceptance::Duplicate(EventId::new(id)));
        }
        dedup.insert(dkey.as_str(), (until.0, ev.id.as_str())).map_err(unavailable)?;
    }
    let record = EventRecord {
        id: ev.id.clone(),
        source: ev.source,
        received_at: ev.received_at,
        method: ev.method,
        path: ev.path,
        query: ev.query,
        headers: ev.headers,
        remote_addr: ev.remote_addr,
        dedup_key: ev.dedup.map(|(k, _)| k),
        body_len: ev.body.len() as u64,
        dispatches: 0,
        dispatched_at: None,
        dispatch_error: None,
        deliveries: Vec::new(),
        latest_count: 0,
    };
    put_event(txn, &record)?;
    txn.open_table(BODIES)
        .map_err(unavailable)?
        .insert(ev.id.as_str(), ev.body.as_ref())
        .map_err(unavailable)?;
    set_job(txn, &dispatch_key(&ev.id), Some(ev.received_at))?;
    Ok(Acceptance::Accepted(ev.id))
}

fn save_dispatch(
    txn: &WriteTransaction,
    id: &EventId,
    deliveries: Vec<DeliveryRecord>,
    error: Option<String>,
    at: UnixMillis,
) -> Result<bool, StoreError> {
    if set_job(txn, &dispatch_key(id), None)?.is_none() {
        return Ok(false);
    }
    let Some(mut ev) = load_event(txn, id)? else { return Ok(false) };
    for d in &deliveries {
        let due = if d.status.is_final() { None } else { Some(d.next_attempt_at.unwrap_or(at)) };
        set_job(txn, &attempt_key(id, &d.id), due)?;
    }
    ev.dispatches += 1;
    ev.dispatched_at = Some(at);
    ev.dispatch_error = error;
    ev.latest_count = u32::try_from(deliveries.len()).unwrap_or(u32::MAX);
    ev.deliveries.extend(deliveries);
    put_event(txn, &ev)?;
    Ok(true)
}

fn save_attempt(txn: &WriteTransaction, id: &EventId, d: DeliveryRecord) -> Result<bool, StoreError> {
    let key = attempt_key(id, &d.id);
    let Some(mut ev) = load_event(txn, id)? else {
        set_job(txn, &key, None)?;
        return Ok(false);
    };
    let Some(slot) = ev.deliveries.iter_mut().find(|x| x.id == d.id) else {
        return Err(StoreError::Corrupt(format!("event {id} has no delivery {}", d.id)));
    };
    if slot.status.is_final() {
        set_job(txn, &key, None)?;
        return Ok(false);
    }
    let due = match d.status {
        DeliveryStatus::Pending | DeliveryStatus::Retrying => d.next_attempt_at,
        DeliveryStatus::Delivered | DeliveryStatus::Dead => None,
    };
    set_job(txn, &key, due)?;
    *slot = d;
    put_event(txn, &ev)?;
    Ok(true)
}

fn requeue(txn: &WriteTransaction, id: &EventId, at: UnixMillis) -> Result<bool, StoreError> {
    if load_event(txn, id)?.is_none() {
        return Ok(false);
    }
    set_job(txn, &dispatch_key(id), Some(at))?;
    Ok(true)
}

fn purge(txn: &WriteTransaction, now: UnixMillis) -> Result<u64, StoreError> {
    let mut dedup = txn.open_table(DEDUP).map_err(unavailable)?;
    let mut n = 0;
    dedup
        .retain(|_, (until, _)| {
            let keep = until > now.0;
            if !keep {
                n += 1;
            }
            keep
        })
        .map_err(unavailable)?;
    Ok(n)
}

#[async_trait]
impl Store for RedbStore {
    async fn accept(&self, event: NewEvent) -> Result<Acceptance, StoreError> {
        self.call(|tx| Op::Accept(event, tx)).await
    }

    async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        let id = id.clone();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let t = txn.open_table(EVENTS).map_err(unavailable)?;
            let g = t.get(id.as_str()).map_err(unavailable)?;
            g.map(|g| serde_json::from_slice(g.value()).map_err(corrupt)).transpose()
        })
        .await
    }

    async fn body(&self, id: &EventId) -> Result<Option<bytes::Bytes>, StoreError> {
        let id = id.clone();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let t = txn.open_table(BODIES).map_err(unavailable)?;
            let g = t.get(id.as_str()).map_err(unavailable)?;
            Ok(g.map(|g| bytes::Bytes::copy_from_slice(g.value())))
        })
        .await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        let q = query.clone();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let t = txn.open_table(EVENTS).map_err(unavailable)?;
            let range = match &q.before {
                Some(b) => t.range::<&str>(..b.as_str()),
                None => t.range::<&str>(..),
            }
            .map_err(unavailable)?;
            let mut out = Vec::new();
            for item in range.rev() {
                let (_, v) = item.map_err(unavailable)?;
                let ev: EventRecord = serde_json::from_slice(v.value()).map_err(corrupt)?;
                if q.source.as_ref().is_some_and(|s| s != &ev.source) {
                    continue;
                }
                if q.status.is_some_and(|s| s != ev.status()) {
                    continue;
                }
                out.push(ev);
                if out.len() >= q.limit.max(1) {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn due_jobs(&self, now: UnixMillis, limit: usize) -> Result<Vec<Job>, StoreError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let t = txn.open_table(QUEUE).map_err(unavailable)?;
            let mut out = Vec::new();
            for item in t.range::<(u64, &str)>(..(now.0.saturating_add(1), "")).map_err(unavailable)? {
                let (k, _) = item.map_err(unavailable)?;
                let (_, key) = k.value();
                if let Some(job) = parse_job(key) {
                    out.push(job);
                }
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let t = txn.open_table(QUEUE).map_err(unavailable)?;
            Ok(t.first().map_err(unavailable)?.map(|(k, _)| UnixMillis(k.value().0)))
        })
        .await
    }

    async fn save_dispatch(
        &self,
        id: &EventId,
        deliveries: Vec<DeliveryRecord>,
        error: Option<String>,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let id = id.clone();
        self.call(|tx| Op::Dispatch(id, deliveries, error, at, tx)).await
    }

    async fn save_attempt(&self, id: &EventId, delivery: DeliveryRecord) -> Result<bool, StoreError> {
        let id = id.clone();
        self.call(|tx| Op::Attempt(id, delivery, tx)).await
    }

    async fn requeue(&self, id: &EventId, at: UnixMillis) -> Result<bool, StoreError> {
        let id = id.clone();
        self.call(|tx| Op::Requeue(id, at, tx)).await
    }

    async fn purge_dedup(&self, now: UnixMillis) -> Result<u64, StoreError> {
        self.call(|tx| Op::Purge(now, tx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub_core::ids::SourceId;

    fn event(n: usize) -> NewEvent {
        NewEvent {
            id: EventId::new(format!("evt_{n:04}")),
            source: SourceId::new("s"),
            received_at: UnixMillis(1_000),
            method: "POST".into(),
            path: "/hooks/s".into(),
            query: None,
            headers: hub_core::request::Headers::new(),
            remote_addr: None,
            body: bytes::Bytes::from_static(b"{}"),
            dedup: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_write_queue_answers_unavailable_instead_of_growing() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = RedbStore::open_with_queue(dir.path().join("s.redb"), 2).expect("open");
        // An open write transaction stalls the writer thread, as a slow disk would.
        let stall = store.db.begin_write().expect("write txn");
        let calls: Vec<_> = (0..8)
            .map(|n| {
                let s = store.clone();
                tokio::spawn(async move { s.accept(event(n)).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        drop(stall);
        let mut accepted = 0;
        let mut refused = 0;
        for c in calls {
            match c.await.expect("task") {
                Ok(Acceptance::Accepted(_)) => accepted += 1,
                Err(StoreError::Unavailable(m)) if m.contains("queue is full") => refused += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        // One op in the writer's hands, two waiting: the rest are refused at once.
        assert!(refused >= 8 - 3, "refused {refused} of 8");
        assert!(accepted >= 1, "the ops that were queued are committed once the writer runs");
        let mut stored = 0;
        for n in 0..8 {
            if store.event(&EventId::new(format!("evt_{n:04}"))).await.expect("read").is_some() {
                stored += 1;
            }
        }
        assert_eq!(stored, accepted, "exactly the accepted events are stored");
    }
}
