//! Embedded store adapter: the event log, dedup index and job queue in one redb file.
//!
//! Every change is one ACID transaction, committed with fsync before the caller hears `Ok`, so a
//! `kill -9` at any point loses nothing acknowledged. Writes go through one writer thread that
//! batches concurrent requests into a single commit (group commit): under load many webhooks
//! share one fsync, alone each still gets its own. Each operation reads and checks everything
//! before it writes, and a write that fails aborts the whole commit, so no operation is ever
//! committed by half.
//!
//! The file stays bounded: every event expires its retention after its last receipt, dispatch
//! or replay, and [`Store::purge`] deletes expired events (record, body, deliveries, dedup key)
//! a bounded batch per commit through an expiry index, never by scanning a table.
//!
//! redb refuses every operation after one failed write to the file (a full disk, a file-size
//! limit): the writer then closes the database, answers `Unavailable` (and [`Store::health`]
//! says why) and reopens it by itself, retrying until the file can be written again.
//!
//! Tables:
//! - `events`: event id → event record (JSON)
//! - `bodies`: event id → raw body bytes
//! - `dedup`: `source \0 key` → (remember-until ms, event id); `dedup_exp`: (until ms, key) → ()
//! - `queue`: (due ms, job key) → (), the schedule; `job_due`: job key → due ms, its index
//! - `job_fails`: job key → store failures in a row of that job
//! - `expiry`: (expires ms, event id) → (); `event_exp`: event id → (expires ms, retention ms)
//! - `meta`: `schema` → layout version
//!
//! Job keys: `d/<event>` (dispatch) and `a/<event>/<delivery>` (attempt).

use async_trait::async_trait;
use hub_core::event::{DeliveryRecord, DeliveryStatus, EventRecord};
use hub_core::ids::{DeliveryId, EventId};
use hub_core::ports::{
    Acceptance, EventQuery, Job, JobFailed, JobFailure, NewEvent, Purged, Store, StoreError,
};
use hub_core::time::UnixMillis;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
const BODIES: TableDefinition<&str, &[u8]> = TableDefinition::new("bodies");
const DEDUP: TableDefinition<&str, (u64, &str)> = TableDefinition::new("dedup");
const DEDUP_EXP: TableDefinition<(u64, &str), ()> = TableDefinition::new("dedup_exp");
const QUEUE: TableDefinition<(u64, &str), ()> = TableDefinition::new("queue");
const JOB_DUE: TableDefinition<&str, u64> = TableDefinition::new("job_due");
const JOB_FAILS: TableDefinition<&str, u32> = TableDefinition::new("job_fails");
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");
const EVENT_EXP: TableDefinition<&str, (u64, u64)> = TableDefinition::new("event_exp");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Layout version: 2 added the expiry indexes and job failure counts.
const SCHEMA: u64 = 2;
/// Retention given to events stored before events had one.
const LEGACY_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most operations folded into one commit.
const MAX_BATCH: usize = 128;
/// How often a closed database is tried again.
const REOPEN_EVERY: Duration = Duration::from_millis(250);

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
    Purge(UnixMillis, usize, oneshot::Sender<Result<Purged, StoreError>>),
    JobFailed(Job, JobFailure, oneshot::Sender<Result<JobFailed, StoreError>>),
}

/// What the handles and the writer thread share.
struct Shared {
    path: PathBuf,
    /// `None` while the database is closed after a failed write.
    db: RwLock<Option<Arc<Database>>>,
    /// Why the store cannot be used right now; `None` when it can.
    trouble: Mutex<Option<String>>,
}

impl Shared {
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        let slot = self.db.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*slot {
            Some(db) => Ok(db.clone()),
            None => Err(unavailable(self.trouble().unwrap_or_else(|| "the store is closed".into()))),
        }
    }

    fn trouble(&self) -> Option<String> {
        self.trouble.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_trouble(&self, t: Option<String>) {
        *self.trouble.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = t;
    }
}

/// The redb-backed store. Cheap to clone.
#[derive(Clone)]
pub struct RedbStore {
    shared: Arc<Shared>,
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

/// A write that failed after the operation had begun to write: the whole commit is dropped.
struct Broken(String);

impl<E: std::fmt::Display> From<E> for Broken {
    fn from(e: E) -> Self {
        Broken(e.to_string())
    }
}

/// An operation's result: `Err(Broken)` when the commit must be abandoned, `Ok(Err(_))` when the
/// operation refused and wrote nothing.
type OpResult<T> = Result<Result<T, StoreError>, Broken>;

fn open_db(path: &Path) -> Result<Database, OpenError> {
    let db = Database::create(path)
        .map_err(|source| OpenError::Open { path: path.display().to_string(), source })?;
    init(&db).map_err(|b| OpenError::Init(b.0))?;
    Ok(db)
}

/// Creates the tables and brings a store written by an older version up to date.
fn init(db: &Database) -> Result<(), Broken> {
    let txn = db.begin_write()?;
    {
        txn.open_table(EVENTS)?;
        txn.open_table(BODIES)?;
        txn.open_table(DEDUP)?;
        txn.open_table(DEDUP_EXP)?;
        txn.open_table(QUEUE)?;
        txn.open_table(JOB_DUE)?;
        txn.open_table(JOB_FAILS)?;
        txn.open_table(EXPIRY)?;
        txn.open_table(EVENT_EXP)?;
        let meta = txn.open_table(META)?;
        let schema = meta.get("schema")?.map(|g| g.value());
        if schema.is_none() {
            drop(meta);
            backfill_expiry(&txn)?;
            txn.open_table(META)?.insert("schema", SCHEMA)?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Gives events and dedup keys stored before expiry existed their index entries (once).
fn backfill_expiry(txn: &WriteTransaction) -> Result<(), Broken> {
    let events = txn.open_table(EVENTS)?;
    let mut exp = txn.open_table(EVENT_EXP)?;
    let mut index = txn.open_table(EXPIRY)?;
    let retention = u64::try_from(LEGACY_RETENTION.as_millis()).unwrap_or(u64::MAX);
    for item in events.iter()? {
        let (k, v) = item?;
        let Ok(ev) = serde_json::from_slice::<EventRecord>(v.value()) else { continue };
        let last = ev.dispatched_at.unwrap_or(ev.received_at).max(ev.received_at);
        let until = last.0.saturating_add(retention);
        exp.insert(k.value(), (until, retention))?;
        index.insert((until, k.value()), ())?;
    }
    let dedup = txn.open_table(DEDUP)?;
    let mut dexp = txn.open_table(DEDUP_EXP)?;
    for item in dedup.iter()? {
        let (k, v) = item?;
        dexp.insert((v.value().0, k.value()), ())?;
    }
    Ok(())
}

impl RedbStore {
    /// Opens (or creates) the store file and starts its writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with_queue(path, DEFAULT_QUEUE_CAPACITY)
    }

    /// Like [`RedbStore::open`], with room for `capacity` operations waiting for the writer.
    pub fn open_with_queue(path: impl AsRef<Path>, capacity: usize) -> Result<Self, OpenError> {
        let path = path.as_ref();
        let db = open_db(path)?;
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
            trouble: Mutex::new(None),
        });
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let w = shared.clone();
        std::thread::Builder::new()
            .name("hub-store-writer".into())
            .spawn(move || Writer { shared: w, closing: None, last_try: None }.run(&rx))
            .map_err(|e| OpenError::Init(e.to_string()))?;
        Ok(Self { shared, writer: tx })
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
        let db = self.shared.db()?;
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(unavailable)?
    }
}

/// The writer thread: applies batches, and closes and reopens the database after a failed
/// write (redb accepts nothing more on an instance that failed one).
struct Writer {
    shared: Arc<Shared>,
    /// The instance being closed: dropped once no read holds it any more.
    closing: Option<Arc<Database>>,
    last_try: Option<Instant>,
}

impl Writer {
    fn run(mut self, rx: &mpsc::Receiver<Op>) {
        loop {
            let closed = self.current().is_none();
            let first = if closed {
                match rx.recv_timeout(REOPEN_EVERY) {
                    Ok(op) => Some(op),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match rx.recv() {
                    Ok(op) => Some(op),
                    Err(_) => return,
                }
            };
            let db = match self.current() {
                Some(db) => Some(db),
                None => self.reopen(),
            };
            let Some(first) = first else { continue };
            let mut ops = vec![first];
            while ops.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            match db {
                Some(db) => {
                    if let Err(Broken(e)) = apply_batch(&db, ops) {
                        drop(db);
                        self.close(&e);
                    } else if self.shared.trouble().is_some() {
                        info!("store writes succeed again");
                        self.shared.set_trouble(None);
                    }
                }
                None => {
                    let why = self.shared.trouble().unwrap_or_else(|| "the store is closed".into());
                    fail_all(ops, &why);
                }
            }
        }
    }

    fn current(&self) -> Option<Arc<Database>> {
        self.shared.db.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Takes the database out of service after a failed write.
    fn close(&mut self, why: &str) {
        error!(error = why, path = %self.shared.path.display(), "store write failed; reopening the store");
        self.shared.set_trouble(Some(format!("writes fail: {why}")));
        let old = self.shared.db.write().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        self.closing = old;
        self.last_try = None;
    }

    /// Opens the file again (redb repairs it if needed). Stays closed while a read still holds
    /// the old instance or the file cannot be opened, and says so in the trouble.
    fn reopen(&mut self) -> Option<Arc<Database>> {
        if self.last_try.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
            return None;
        }
        self.last_try = Some(Instant::now());
        if let Some(old) = self.closing.take() {
            match Arc::try_unwrap(old) {
                Ok(db) => drop(db),
                Err(still_used) => {
                    self.closing = Some(still_used);
                    return None;
                }
            }
        }
        match open_db(&self.shared.path) {
            Ok(db) => {
                let db = Arc::new(db);
                *self.shared.db.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(db.clone());
                // Healthy again only once a write commits (the disk may still be full).
                let before = self.shared.trouble().unwrap_or_default();
                self.shared.set_trouble(Some(format!("{before}; reopened, waiting for a write to succeed")));
                warn!("store reopened");
                Some(db)
            }
            Err(e) => {
                warn!(error = %e, "store cannot be reopened yet");
                self.shared.set_trouble(Some(format!("closed after a failed write; reopening fails: {e}")));
                None
            }
        }
    }
}

/// Sends an op's result once the commit outcome (an error, or none) is known.
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;

/// Applies every op in one transaction; replies only after the commit is durable. `Err` when the
/// database must be reopened (every op was told it failed).
fn apply_batch(db: &Database, ops: Vec<Op>) -> Result<(), Broken> {
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            fail_all(ops, &e.to_string());
            return Err(e.into());
        }
    };
    let mut replies: Vec<Reply> = Vec::with_capacity(ops.len());
    let mut ops = ops.into_iter();
    let mut broken = None;
    for op in ops.by_ref() {
        let step = match op {
            Op::Accept(ev, tx) => staged(tx, accept(&txn, ev)),
            Op::Dispatch(id, ds, error, at, tx) => staged(tx, save_dispatch(&txn, &id, ds, error, at)),
            Op::Attempt(id, d, tx) => staged(tx, save_attempt(&txn, &id, d)),
            Op::Requeue(id, at, tx) => staged(tx, requeue(&txn, &id, at)),
            Op::Purge(now, limit, tx) => staged(tx, purge(&txn, now, limit)),
            Op::JobFailed(job, f, tx) => staged(tx, job_failed(&txn, &job, &f)),
        };
        match step {
            Ok(reply) => replies.push(reply),
            Err(Broken(e)) => {
                // Nothing of this transaction is committed: every op of the batch failed.
                broken = Some(e);
                break;
            }
        }
    }
    if let Some(e) = broken {
        drop(txn);
        let msg = format!("write failed: {e}");
        for r in replies {
            r(Some(&msg));
        }
        fail_all(ops.collect(), &msg);
        return Err(Broken(e));
    }
    let commit_err = txn.commit().err().map(|e| e.to_string());
    for r in replies {
        r(commit_err.as_deref());
    }
    match commit_err {
        Some(e) => Err(Broken(e)),
        None => Ok(()),
    }
}

/// The reply of an op applied to the transaction, or, when its write failed, the failure (told
/// to its caller at once).
fn staged<T: Send + 'static>(
    tx: oneshot::Sender<Result<T, StoreError>>,
    r: OpResult<T>,
) -> Result<Reply, Broken> {
    match r {
        Ok(r) => Ok(Box::new(move |err| reply(tx, r, err))),
        Err(Broken(e)) => {
            let _ = tx.send(Err(unavailable(format!("write failed: {e}"))));
            Err(Broken(e))
        }
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
            Op::Purge(_, _, tx) => tx.send(Err(unavailable(e))).map_err(drop),
            Op::JobFailed(_, _, tx) => tx.send(Err(unavailable(e))).map_err(drop),
        };
    }
}

fn dispatch_key(id: &EventId) -> String {
    format!("d/{id}")
}

fn attempt_key(id: &EventId, d: &DeliveryId) -> String {
    format!("a/{id}/{d}")
}

fn job_key(job: &Job) -> String {
    match job {
        Job::Dispatch(id) => dispatch_key(id),
        Job::Attempt(id, d) => attempt_key(id, d),
    }
}

fn parse_job(key: &str) -> Option<Job> {
    let mut parts = key.split('/');
    match (parts.next()?, parts.next(), parts.next()) {
        ("d", Some(e), None) => Some(Job::Dispatch(EventId::new(e))),
        ("a", Some(e), Some(d)) => Some(Job::Attempt(EventId::new(e), DeliveryId::new(d))),
        _ => None,
    }
}

fn dedup_key(source: &str, key: &str) -> String {
    format!("{source}\0{key}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Sets (or with `None` clears) a job's due time and forgets its failures; returns the previous
/// due time.
fn set_job(txn: &WriteTransaction, key: &str, due: Option<UnixMillis>) -> Result<Option<u64>, Broken> {
    let mut index = txn.open_table(JOB_DUE)?;
    let mut queue = txn.open_table(QUEUE)?;
    let old = index.remove(key)?.map(|g| g.value());
    if let Some(old) = old {
        queue.remove((old, key))?;
    }
    if let Some(due) = due {
        index.insert(key, due.0)?;
        queue.insert((due.0, key), ())?;
    }
    txn.open_table(JOB_FAILS)?.remove(key)?;
    Ok(old)
}

fn job_queued(txn: &WriteTransaction, key: &str) -> Result<bool, StoreError> {
    let index = txn.open_table(JOB_DUE).map_err(unavailable)?;
    Ok(index.get(key).map_err(unavailable)?.is_some())
}

fn load_event(txn: &WriteTransaction, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
    let t = txn.open_table(EVENTS).map_err(unavailable)?;
    let g = t.get(id.as_str()).map_err(unavailable)?;
    g.map(|g| serde_json::from_slice(g.value()).map_err(corrupt)).transpose()
}

fn encode(ev: &EventRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(ev).map_err(corrupt)
}

fn put_event(txn: &WriteTransaction, id: &EventId, bytes: &[u8]) -> Result<(), Broken> {
    txn.open_table(EVENTS)?.insert(id.as_str(), bytes)?;
    Ok(())
}

/// Sets an event's expiry (and its retention).
fn set_expiry(txn: &WriteTransaction, id: &EventId, until: u64, retention: u64) -> Result<(), Broken> {
    let mut exp = txn.open_table(EVENT_EXP)?;
    let mut index = txn.open_table(EXPIRY)?;
    if let Some((old, _)) = exp.insert(id.as_str(), (until, retention))?.map(|g| g.value()) {
        index.remove((old, id.as_str()))?;
    }
    index.insert((until, id.as_str()), ())?;
    Ok(())
}

/// Moves an event's expiry to `at` plus its retention, unless it is later already.
fn rearm(txn: &WriteTransaction, id: &EventId, at: UnixMillis) -> Result<(), Broken> {
    let current = txn.open_table(EVENT_EXP)?.get(id.as_str())?.map(|g| g.value());
    if let Some((until, retention)) = current {
        let next = at.0.saturating_add(retention);
        if next > until {
            set_expiry(txn, id, next, retention)?;
        }
    }
    Ok(())
}

fn accept(txn: &WriteTransaction, ev: NewEvent) -> OpResult<Acceptance> {
    let retention = millis(ev.retention);
    let expires = ev.received_at.0.saturating_add(retention);
    let mut old_dedup = None;
    if let Some((key, _)) = &ev.dedup {
        let dkey = dedup_key(ev.source.as_str(), key);
        let dedup = txn.open_table(DEDUP)?;
        let existing = dedup.get(dkey.as_str())?.map(|g| {
            let (u, id) = g.value();
            (u, id.to_string())
        });
        if let Some((u, id)) = existing {
            if u > ev.received_at.0 {
                return Ok(Ok(Acceptance::Duplicate(EventId::new(id))));
            }
            old_dedup = Some(u);
        }
    }
    let record = EventRecord {
        id: ev.id.clone(),
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
    let bytes = match encode(&record) {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    if let Some((key, until)) = &ev.dedup {
        // A key never outlives its event.
        let until = until.0.min(expires);
        let dkey = dedup_key(ev.source.as_str(), key);
        let mut dexp = txn.open_table(DEDUP_EXP)?;
        if let Some(old) = old_dedup {
            dexp.remove((old, dkey.as_str()))?;
        }
        dexp.insert((until, dkey.as_str()), ())?;
        txn.open_table(DEDUP)?.insert(dkey.as_str(), (until, ev.id.as_str()))?;
    }
    put_event(txn, &ev.id, &bytes)?;
    txn.open_table(BODIES)?.insert(ev.id.as_str(), ev.body.as_ref())?;
    set_job(txn, &dispatch_key(&ev.id), Some(ev.received_at))?;
    set_expiry(txn, &ev.id, expires, retention)?;
    Ok(Ok(Acceptance::Accepted(ev.id)))
}

fn save_dispatch(
    txn: &WriteTransaction,
    id: &EventId,
    deliveries: Vec<DeliveryRecord>,
    error: Option<String>,
    at: UnixMillis,
) -> OpResult<bool> {
    match job_queued(txn, &dispatch_key(id)) {
        Ok(true) => {}
        Ok(false) => return Ok(Ok(false)),
        Err(e) => return Ok(Err(e)),
    }
    let mut ev = match load_event(txn, id) {
        Ok(Some(ev)) => ev,
        Ok(None) => return Ok(Ok(false)),
        Err(e) => return Ok(Err(e)),
    };
    let jobs: Vec<(String, Option<UnixMillis>)> = deliveries
        .iter()
        .map(|d| {
            let due = if d.status.is_final() { None } else { Some(d.next_attempt_at.unwrap_or(at)) };
            (attempt_key(id, &d.id), due)
        })
        .collect();
    ev.dispatches += 1;
    ev.dispatched_at = Some(at);
    ev.dispatch_error = error;
    ev.latest_count = u32::try_from(deliveries.len()).unwrap_or(u32::MAX);
    ev.deliveries.extend(deliveries);
    let bytes = match encode(&ev) {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    set_job(txn, &dispatch_key(id), None)?;
    for (key, due) in jobs {
        set_job(txn, &key, due)?;
    }
    put_event(txn, id, &bytes)?;
    rearm(txn, id, at)?;
    Ok(Ok(true))
}

fn save_attempt(txn: &WriteTransaction, id: &EventId, d: DeliveryRecord) -> OpResult<bool> {
    let key = attempt_key(id, &d.id);
    let mut ev = match load_event(txn, id) {
        Ok(Some(ev)) => ev,
        Ok(None) => {
            set_job(txn, &key, None)?;
            return Ok(Ok(false));
        }
        Err(e) => return Ok(Err(e)),
    };
    let Some(slot) = ev.deliveries.iter_mut().find(|x| x.id == d.id) else {
        return Ok(Err(StoreError::Corrupt(format!("event {id} has no delivery {}", d.id))));
    };
    if slot.status.is_final() {
        set_job(txn, &key, None)?;
        return Ok(Ok(false));
    }
    let due = match d.status {
        DeliveryStatus::Pending | DeliveryStatus::Retrying => d.next_attempt_at,
        DeliveryStatus::Delivered | DeliveryStatus::Dead => None,
    };
    *slot = d;
    let bytes = match encode(&ev) {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    set_job(txn, &key, due)?;
    put_event(txn, id, &bytes)?;
    Ok(Ok(true))
}

fn requeue(txn: &WriteTransaction, id: &EventId, at: UnixMillis) -> OpResult<bool> {
    match load_event(txn, id) {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(Ok(false)),
        Err(e) => return Ok(Err(e)),
    }
    set_job(txn, &dispatch_key(id), Some(at))?;
    rearm(txn, id, at)?;
    Ok(Ok(true))
}

/// Whether an event still has work queued: its dispatch, or a delivery not final.
fn is_active(txn: &WriteTransaction, ev: &EventRecord) -> Result<bool, Broken> {
    if txn.open_table(JOB_DUE)?.get(dispatch_key(&ev.id).as_str())?.is_some() {
        return Ok(true);
    }
    Ok(ev.deliveries.iter().any(|d| !d.status.is_final()))
}

fn purge(txn: &WriteTransaction, now: UnixMillis, limit: usize) -> OpResult<Purged> {
    let limit = limit.max(1);
    let bound = (now.0.saturating_add(1), "");
    let expired: Vec<(u64, String)> = {
        let index = txn.open_table(EXPIRY)?;
        let mut out = Vec::new();
        for item in index.range::<(u64, &str)>(..bound)?.take(limit) {
            let (k, _) = item?;
            let (at, id) = k.value();
            out.push((at, id.to_string()));
        }
        out
    };
    let mut purged = Purged { more: expired.len() >= limit, ..Purged::default() };
    for (at, id) in expired {
        let id = EventId::new(id);
        let ev = txn
            .open_table(EVENTS)?
            .get(id.as_str())?
            .and_then(|g| serde_json::from_slice::<EventRecord>(g.value()).ok());
        if let Some(ev) = &ev
            && is_active(txn, ev)?
        {
            // Still being worked on: kept, and counted from now.
            rearm(txn, &id, now)?;
            continue;
        }
        txn.open_table(EXPIRY)?.remove((at, id.as_str()))?;
        txn.open_table(EVENT_EXP)?.remove(id.as_str())?;
        txn.open_table(BODIES)?.remove(id.as_str())?;
        txn.open_table(EVENTS)?.remove(id.as_str())?;
        if let Some(key) = ev.as_ref().and_then(|e| e.dedup_key.as_ref().map(|k| (e.source.as_str(), k))) {
            let dkey = dedup_key(key.0, key.1);
            let mut dedup = txn.open_table(DEDUP)?;
            let entry = dedup.get(dkey.as_str())?.map(|g| (g.value().0, g.value().1.to_string()));
            if let Some((until, owner)) = entry
                && owner == id.as_str()
            {
                dedup.remove(dkey.as_str())?;
                txn.open_table(DEDUP_EXP)?.remove((until, dkey.as_str()))?;
                purged.dedup_keys += 1;
            }
        }
        purged.events += 1;
    }
    let keys: Vec<(u64, String)> = {
        let index = txn.open_table(DEDUP_EXP)?;
        let mut out = Vec::new();
        for item in index.range::<(u64, &str)>(..bound)?.take(limit) {
            let (k, _) = item?;
            let (at, key) = k.value();
            out.push((at, key.to_string()));
        }
        out
    };
    purged.more |= keys.len() >= limit;
    let mut dedup = txn.open_table(DEDUP)?;
    let mut dexp = txn.open_table(DEDUP_EXP)?;
    for (until, key) in keys {
        dexp.remove((until, key.as_str()))?;
        let current = dedup.get(key.as_str())?.map(|g| g.value().0);
        if current == Some(until) {
            dedup.remove(key.as_str())?;
            purged.dedup_keys += 1;
        }
    }
    Ok(Ok(purged))
}

fn job_failed(txn: &WriteTransaction, job: &Job, f: &JobFailure) -> OpResult<JobFailed> {
    let key = job_key(job);
    match job_queued(txn, &key) {
        Ok(true) => {}
        Ok(false) => return Ok(Ok(JobFailed::Gone)),
        Err(e) => return Ok(Err(e)),
    }
    let failures = txn.open_table(JOB_FAILS)?.get(key.as_str())?.map_or(0, |g| g.value()).saturating_add(1);
    if failures < f.max_failures.max(1) {
        set_job(txn, &key, Some(f.retry_at))?;
        txn.open_table(JOB_FAILS)?.insert(key.as_str(), failures)?;
        return Ok(Ok(JobFailed::Deferred { failures }));
    }
    let id = match job {
        Job::Dispatch(id) | Job::Attempt(id, _) => id,
    };
    let mut ev = match load_event(txn, id) {
        Ok(Some(ev)) => ev,
        Ok(None) => {
            set_job(txn, &key, None)?;
            return Ok(Ok(JobFailed::Gone));
        }
        Err(e) => {
            // The record itself cannot be read: the job is dropped, the event stays for
            // inspection.
            warn!(event = %id, error = %e, "giving up a job whose event cannot be read");
            set_job(txn, &key, None)?;
            return Ok(Ok(JobFailed::Dead { failures }));
        }
    };
    let why = format!("gave up after {failures} failed runs: {}", f.reason);
    match job {
        Job::Dispatch(_) => {
            ev.dispatches += 1;
            ev.dispatched_at = Some(f.at);
            ev.dispatch_error = Some(why);
            ev.latest_count = 0;
        }
        Job::Attempt(_, did) => {
            let Some(d) = ev.deliveries.iter_mut().find(|d| &d.id == did && !d.status.is_final()) else {
                set_job(txn, &key, None)?;
                return Ok(Ok(JobFailed::Gone));
            };
            d.status = DeliveryStatus::Dead;
            d.next_attempt_at = None;
            d.last_error = Some(why);
        }
    }
    let bytes = match encode(&ev) {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    set_job(txn, &key, None)?;
    put_event(txn, id, &bytes)?;
    Ok(Ok(JobFailed::Dead { failures }))
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

    async fn expires_at(&self, id: &EventId) -> Result<Option<UnixMillis>, StoreError> {
        let id = id.clone();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let t = txn.open_table(EVENT_EXP).map_err(unavailable)?;
            Ok(t.get(id.as_str()).map_err(unavailable)?.map(|g| UnixMillis(g.value().0)))
        })
        .await
    }

    async fn purge(&self, now: UnixMillis, limit: usize) -> Result<Purged, StoreError> {
        self.call(|tx| Op::Purge(now, limit, tx)).await
    }

    async fn job_failed(&self, job: &Job, failure: &JobFailure) -> Result<JobFailed, StoreError> {
        let (job, failure) = (job.clone(), failure.clone());
        self.call(|tx| Op::JobFailed(job, failure, tx)).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        if let Some(t) = self.shared.trouble() {
            return Err(StoreError::Unavailable(t));
        }
        self.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            txn.open_table(QUEUE).map_err(unavailable)?.first().map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use hub_core::ids::SourceId;
    use hub_core::request::Headers;

    fn event(at: u64) -> NewEvent {
        NewEvent {
            id: EventId::generate(),
            source: SourceId::new("src"),
            received_at: UnixMillis(at),
            method: "POST".into(),
            path: "/hooks/src".into(),
            query: None,
            headers: Headers::new(),
            remote_addr: None,
            body: bytes::Bytes::from_static(b"{}"),
            dedup: None,
            retention: Duration::from_secs(3600),
        }
    }

    /// An operation that fails part-way commits none of its writes: a dispatch whose record
    /// cannot be read keeps its job queued (it used to be removed before the record was read).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_operation_commits_nothing_of_itself() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = RedbStore::open(dir.path().join("s.redb")).unwrap();
        let ev = event(1_000);
        let id = ev.id.clone();
        store.accept(ev).await.unwrap();
        let other = event(1_000);
        let other_id = other.id.clone();
        store.accept(other).await.unwrap();
        {
            let db = store.shared.db().unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(EVENTS).unwrap().insert(id.as_str(), &b"not json"[..]).unwrap();
            txn.commit().unwrap();
        }
        // Both in one batch: the good one commits, the bad one changes nothing.
        let (bad, good) = tokio::join!(
            store.save_dispatch(&id, vec![], None, UnixMillis(2_000)),
            store.save_dispatch(&other_id, vec![], None, UnixMillis(2_000)),
        );
        assert!(matches!(bad, Err(StoreError::Corrupt(_))), "{bad:?}");
        assert!(good.unwrap());
        let jobs = store.due_jobs(UnixMillis(10_000), 10).await.unwrap();
        assert_eq!(jobs, vec![Job::Dispatch(id.clone())], "the failed dispatch is still queued");
        assert_eq!(store.expires_at(&id).await.unwrap(), Some(UnixMillis(1_000 + 3_600_000)));
    }

    /// A store written before expiry existed gets every event and dedup key indexed on open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_stored_before_expiry_existed_are_indexed_on_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("old.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let rec = EventRecord {
                id: EventId::new("evt_old"),
                source: SourceId::new("src"),
                received_at: UnixMillis(1_000),
                method: "POST".into(),
                path: "/hooks/src".into(),
                query: None,
                headers: Headers::new(),
                remote_addr: None,
                dedup_key: Some("k".into()),
                body_len: 2,
                dispatches: 1,
                dispatched_at: Some(UnixMillis(2_000)),
                dispatch_error: None,
                deliveries: vec![],
                latest_count: 0,
            };
            txn.open_table(EVENTS)
                .unwrap()
                .insert("evt_old", serde_json::to_vec(&rec).unwrap().as_slice())
                .unwrap();
            txn.open_table(BODIES).unwrap().insert("evt_old", &b"{}"[..]).unwrap();
            txn.open_table(DEDUP).unwrap().insert("src\0k", (5_000, "evt_old")).unwrap();
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let id = EventId::new("evt_old");
        let until = 2_000 + millis(LEGACY_RETENTION);
        assert_eq!(store.expires_at(&id).await.unwrap(), Some(UnixMillis(until)));
        let p = store.purge(UnixMillis(until), 10).await.unwrap();
        assert_eq!((p.events, p.dedup_keys), (1, 1), "{p:?}");
        assert_eq!(store.event(&id).await.unwrap(), None);
    }
}

#[cfg(test)]
mod queue_tests {
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
            retention: std::time::Duration::from_secs(30 * 24 * 3600),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_write_queue_answers_unavailable_instead_of_growing() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = RedbStore::open_with_queue(dir.path().join("s.redb"), 2).expect("open");
        // An open write transaction stalls the writer thread, as a slow disk would.
        let db = store.shared.db().expect("db");
        let stall = db.begin_write().expect("write txn");
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
