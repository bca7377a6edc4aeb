//! Embedded storage adapter: the event log, scheduler, dedup index and state store in one redb
//! file, changed through commits.
//!
//! Every commit is one ACID transaction, made durable (fsync) before the caller hears `Ok`, so a
//! `kill -9` at any point loses nothing acknowledged. Writes go through one writer thread that
//! batches concurrent commits into a single transaction (group commit): under load many webhooks
//! share one fsync, alone each still gets its own. A commit of one change reads and checks
//! everything before it writes, so it can share the batch's transaction; a commit of several
//! changes gets a transaction of its own, dropped (nothing written) when one of its changes is
//! refused. A write that fails aborts the whole transaction, so no commit is ever applied by half.
//!
//! The file stays bounded: every event expires its retention after its last receipt, dispatch
//! or replay, and [`EventLog::purge`] deletes expired events (record, body, dedup key) a
//! bounded batch per commit through an expiry index, never by scanning a table.
//!
//! redb refuses every operation after one failed write to the file (a full disk, a file-size
//! limit): the writer then closes the database, answers `Unavailable` (and
//! [`EventLog::health`] says why) and reopens it by itself, retrying until the file can be
//! written again.
//!
//! Tables:
//! - `events`: event id → event record with its deliveries (JSON)
//! - `bodies`: event id → raw body bytes
//! - `dedup`: `source \0 key` → (held-until ms, event id); `dedup_exp`: (until ms, key) → ()
//! - `queue`: (due ms, timer key) → (), the schedule; `job_due`: timer key → due ms, its index
//! - `job_fails`: timer key → store failures in a row of that timer's runs
//! - `timer_data`: timer key → payload (JSON) of timers that are not pipeline jobs
//! - `state`: state key → (version, value as JSON)
//! - `expiry`: (expires ms, event id) → (); `event_exp`: event id → (expires ms, retention ms)
//! - `mapping_files`: (version, file name) → YAML text of each pushed mapping set
//! - `meta`: `schema` → layout version; `mappings` → the mapping set version in force
//!
//! Timer keys of pipeline jobs are `d/<event>` (dispatch) and `a/<event>/<delivery>` (attempt);
//! their payload is the key itself.

use async_trait::async_trait;
use hub_core::event::{DeliveryRecord, DeliveryStatus, EventRecord};
use hub_core::ids::{DeliveryId, EventId, SourceId};
use hub_core::ports::commit::{Change, Commit, CommitError, Committer, Conflict};
use hub_core::ports::dedup::DedupIndex;
use hub_core::ports::log::{EventLog, EventPage};
use hub_core::ports::schedule::{Scheduled, Scheduler, Timer, TimerKey, TimerPayload};
use hub_core::ports::state::{StateKey, StateStore, Versioned};
use hub_core::ports::{EventQuery, Job, NewEvent, Purged, StoreError};
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
const TIMER_DATA: TableDefinition<&str, &[u8]> = TableDefinition::new("timer_data");
const STATE: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("state");
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");
const EVENT_EXP: TableDefinition<&str, (u64, u64)> = TableDefinition::new("event_exp");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const MAPPING_FILES: TableDefinition<(u64, &str), &str> = TableDefinition::new("mapping_files");

/// Layout version: 2 added the expiry indexes and job failure counts, 3 timer payloads and
/// state (new tables only: a version 2 file is read as it is).
const SCHEMA: u64 = 3;
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
    Commit(Commit, oneshot::Sender<Result<(), CommitError>>),
    Claim(TimerKey, UnixMillis, UnixMillis, oneshot::Sender<Result<Option<Scheduled>, StoreError>>),
    Purge(UnixMillis, usize, oneshot::Sender<Result<Purged, StoreError>>),
    PushMappings(Vec<(String, String)>, Option<u64>, oneshot::Sender<Result<u64, CommitError>>),
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
type OpResult<T, E = StoreError> = Result<Result<T, E>, Broken>;

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
        txn.open_table(TIMER_DATA)?;
        txn.open_table(STATE)?;
        txn.open_table(MAPPING_FILES)?;
        txn.open_table(EXPIRY)?;
        txn.open_table(EVENT_EXP)?;
        let meta = txn.open_table(META)?;
        let schema = meta.get("schema")?.map(|g| g.value());
        drop(meta);
        if schema.is_none() {
            backfill_expiry(&txn)?;
        }
        if schema != Some(SCHEMA) {
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

/// Applies the batch: ops that read and check before they write share one transaction; a commit
/// of several changes runs in a transaction of its own afterwards. Replies only after commits
/// are durable. `Err` when the database must be reopened (every op not answered yet was told it
/// failed).
fn apply_batch(db: &Database, ops: Vec<Op>) -> Result<(), Broken> {
    let (solo, shared): (Vec<Op>, Vec<Op>) = ops
        .into_iter()
        .partition(|op| matches!(op, Op::Commit(c, _) if c.changes.len() > 1 && !accepts_dispatched(c)));
    let mut solo = solo.into_iter();
    if let Err(e) = apply_shared(db, shared) {
        fail_all(solo.collect(), &format!("write failed: {}", e.0));
        return Err(e);
    }
    while let Some(op) = solo.next() {
        let Op::Commit(commit, tx) = op else { continue };
        if let Err(e) = apply_solo(db, commit, tx) {
            fail_all(solo.collect(), &format!("write failed: {}", e.0));
            return Err(e);
        }
    }
    Ok(())
}

/// Ops that each check before writing, in one transaction.
fn apply_shared(db: &Database, ops: Vec<Op>) -> Result<(), Broken> {
    if ops.is_empty() {
        return Ok(());
    }
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
            Op::Commit(c, tx) => {
                let at = c.at;
                let mut changes = c.changes.into_iter();
                let r = match changes.next() {
                    Some(first) => match apply_change(&txn, at, first) {
                        // An event dispatched at acceptance: the dispatch cannot be refused
                        // right after the accept wrote its event and timer, and if it were, the
                        // event would simply stay due for a dispatch job.
                        Ok(Ok(())) => match changes.next() {
                            Some(dispatch) => apply_change(&txn, at, dispatch).map(|r| {
                                if let Err(e) = &r {
                                    warn!(error = %e, "dispatch at acceptance refused; the event stays due");
                                }
                                Ok(())
                            }),
                            None => Ok(Ok(())),
                        },
                        other => other,
                    },
                    None => Ok(Ok(())),
                };
                staged(tx, r)
            }
            Op::Claim(key, now, until, tx) => staged(tx, claim(&txn, &key, now, until)),
            Op::Purge(now, limit, tx) => staged(tx, purge(&txn, now, limit)),
            Op::PushMappings(files, expected, tx) => staged(tx, push_mappings(&txn, &files, expected)),
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

/// An event accepted and dispatched at once: it reads and checks before it writes like a
/// single change, so it shares the batch's transaction.
fn accepts_dispatched(c: &Commit) -> bool {
    matches!(c.changes.as_slice(), [Change::Accept(ev), Change::Dispatch { event, .. }] if &ev.id == event)
}

/// A commit of several changes in a transaction of its own: a refused change drops the
/// transaction, so nothing of the commit is written.
fn apply_solo(
    db: &Database,
    commit: Commit,
    tx: oneshot::Sender<Result<(), CommitError>>,
) -> Result<(), Broken> {
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            let _ = tx.send(Err(unavailable(&e).into()));
            return Err(e.into());
        }
    };
    let at = commit.at;
    for change in commit.changes {
        match apply_change(&txn, at, change) {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => {
                drop(txn);
                let _ = tx.send(Err(refused));
                return Ok(());
            }
            Err(Broken(e)) => {
                drop(txn);
                let _ = tx.send(Err(unavailable(format!("write failed: {e}")).into()));
                return Err(Broken(e));
            }
        }
    }
    match txn.commit() {
        Ok(()) => {
            let _ = tx.send(Ok(()));
            Ok(())
        }
        Err(e) => {
            let _ = tx.send(Err(unavailable(format!("commit failed: {e}")).into()));
            Err(e.into())
        }
    }
}

/// The reply of an op applied to the transaction, or, when its write failed, the failure (told
/// to its caller at once).
fn staged<T: Send + 'static, E: From<StoreError> + Send + 'static>(
    tx: oneshot::Sender<Result<T, E>>,
    r: OpResult<T, E>,
) -> Result<Reply, Broken> {
    match r {
        Ok(r) => Ok(Box::new(move |err| reply(tx, r, err))),
        Err(Broken(e)) => {
            let _ = tx.send(Err(unavailable(format!("write failed: {e}")).into()));
            Err(Broken(e))
        }
    }
}

fn reply<T, E: From<StoreError>>(
    tx: oneshot::Sender<Result<T, E>>,
    r: Result<T, E>,
    commit_err: Option<&str>,
) {
    let r = match commit_err {
        Some(e) => Err(unavailable(format!("commit failed: {e}")).into()),
        None => r,
    };
    let _ = tx.send(r);
}

fn fail_all(ops: Vec<Op>, e: &str) {
    for op in ops {
        let _ = match op {
            Op::Commit(_, tx) => tx.send(Err(unavailable(e).into())).map_err(drop),
            Op::Claim(.., tx) => tx.send(Err(unavailable(e))).map_err(drop),
            Op::Purge(_, _, tx) => tx.send(Err(unavailable(e))).map_err(drop),
            Op::PushMappings(.., tx) => tx.send(Err(unavailable(e).into())).map_err(drop),
        };
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

/// Whether an event still has work queued: its dispatch, or a delivery not final.
fn is_active(txn: &WriteTransaction, ev: &EventRecord) -> Result<bool, Broken> {
    if txn.open_table(JOB_DUE)?.get(TimerKey::dispatch(&ev.id).as_str())?.is_some() {
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

/// Stores `files` as the next mapping set version if `expected` (when given) is in force.
fn push_mappings(
    txn: &WriteTransaction,
    files: &[(String, String)],
    expected: Option<u64>,
) -> OpResult<u64, CommitError> {
    let current = txn.open_table(META)?.get("mappings")?.map_or(0, |g| g.value());
    if expected.is_some_and(|e| e != current) {
        return Ok(Err(Conflict::AlreadyDone.into()));
    }
    let next = current + 1;
    let mut t = txn.open_table(MAPPING_FILES)?;
    for (name, text) in files {
        t.insert((next, name.as_str()), text.as_str())?;
    }
    drop(t);
    txn.open_table(META)?.insert("mappings", next)?;
    Ok(Ok(next))
}

/// Sets a timer (its failures forgotten) with its payload.
fn set_timer(txn: &WriteTransaction, timer: &Timer) -> Result<(), Broken> {
    let key = timer.key.as_str();
    set_job(txn, key, Some(timer.due))?;
    let mut data = txn.open_table(TIMER_DATA)?;
    match &timer.payload {
        TimerPayload::Job(_) => {
            data.remove(key)?;
        }
        TimerPayload::Data(v) => {
            data.insert(key, serde_json::to_vec(v)?.as_slice())?;
        }
    }
    Ok(())
}

/// Clears a timer and its payload.
fn cancel_timer(txn: &WriteTransaction, key: &str) -> Result<(), Broken> {
    set_job(txn, key, None)?;
    txn.open_table(TIMER_DATA)?.remove(key)?;
    Ok(())
}

/// The payload of the timer under `key` (a job's is its key).
fn payload_of(
    data: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<TimerPayload>, StoreError> {
    if let Some(job) = parse_job(key) {
        return Ok(Some(TimerPayload::Job(job)));
    }
    match data.get(key).map_err(unavailable)? {
        Some(g) => serde_json::from_slice(g.value()).map(TimerPayload::Data).map(Some).map_err(corrupt),
        None => Ok(None),
    }
}

/// Applies one change to the transaction; `Ok(Err(_))` when it is refused (nothing written).
fn apply_change(txn: &WriteTransaction, at: UnixMillis, change: Change) -> OpResult<(), CommitError> {
    match change {
        Change::Accept(ev) => accept(txn, ev),
        Change::Dispatch { event, deliveries, error } => dispatch(txn, &event, deliveries, error, at),
        Change::Attempt { event, delivery } => attempt(txn, &event, delivery),
        Change::Replay { event } => {
            if txn.open_table(EVENTS)?.get(event.as_str())?.is_none() {
                return Ok(Err(Conflict::NoSuchEvent(event).into()));
            }
            set_timer(txn, &Timer::job(Job::Dispatch(event.clone()), at))?;
            rearm(txn, &event, at)?;
            Ok(Ok(()))
        }
        Change::SetTimer(timer) => {
            set_timer(txn, &timer)?;
            Ok(Ok(()))
        }
        Change::CancelTimer(key) => {
            cancel_timer(txn, key.as_str())?;
            Ok(Ok(()))
        }
        Change::TimerFailed { key, retry_at } => {
            let key = key.as_str();
            if txn.open_table(JOB_DUE)?.get(key)?.is_some() {
                let fails = txn.open_table(JOB_FAILS)?.get(key)?.map_or(0, |g| g.value()).saturating_add(1);
                set_job(txn, key, Some(retry_at))?;
                txn.open_table(JOB_FAILS)?.insert(key, fails)?;
            }
            Ok(Ok(()))
        }
        Change::PutState { key, value, read_version } => {
            let current = txn.open_table(STATE)?.get(key.as_str())?.map_or(0, |g| g.value().0);
            if current != read_version {
                return Ok(Err(Conflict::StateMoved(key).into()));
            }
            let bytes = serde_json::to_vec(&value)?;
            txn.open_table(STATE)?.insert(key.as_str(), (read_version + 1, bytes.as_slice()))?;
            Ok(Ok(()))
        }
    }
}

fn accept(txn: &WriteTransaction, ev: NewEvent) -> OpResult<(), CommitError> {
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
        if let Some((u, holder)) = existing {
            if u > ev.received_at.0 && holder != ev.id.as_str() {
                return Ok(Err(Conflict::Duplicate(EventId::new(holder)).into()));
            }
            old_dedup = Some(u);
        }
    }
    if txn.open_table(EVENTS)?.get(ev.id.as_str())?.is_some() {
        // The same commit again (a retry after a lost answer): it is applied already.
        return Ok(Ok(()));
    }
    let (id, body, dedup, received_at) = (ev.id.clone(), ev.body.clone(), ev.dedup.clone(), ev.received_at);
    let source = ev.source.clone();
    let bytes = match encode(&ev.into_record()) {
        Ok(b) => b,
        Err(e) => return Ok(Err(e.into())),
    };
    if let Some((key, until)) = &dedup {
        // A key never outlives its event.
        let until = until.0.min(expires);
        let dkey = dedup_key(source.as_str(), key);
        let mut dexp = txn.open_table(DEDUP_EXP)?;
        if let Some(old) = old_dedup {
            dexp.remove((old, dkey.as_str()))?;
        }
        dexp.insert((until, dkey.as_str()), ())?;
        txn.open_table(DEDUP)?.insert(dkey.as_str(), (until, id.as_str()))?;
    }
    put_event(txn, &id, &bytes)?;
    txn.open_table(BODIES)?.insert(id.as_str(), body.as_ref())?;
    set_timer(txn, &Timer::job(Job::Dispatch(id.clone()), received_at))?;
    set_expiry(txn, &id, expires, retention)?;
    Ok(Ok(()))
}

fn dispatch(
    txn: &WriteTransaction,
    id: &EventId,
    deliveries: Vec<DeliveryRecord>,
    error: Option<String>,
    at: UnixMillis,
) -> OpResult<(), CommitError> {
    let mut ev = match load_event(txn, id) {
        Ok(Some(ev)) => ev,
        Ok(None) => return Ok(Err(Conflict::NoSuchEvent(id.clone()).into())),
        Err(e) => return Ok(Err(e.into())),
    };
    let key = TimerKey::dispatch(id);
    if txn.open_table(JOB_DUE)?.get(key.as_str())?.is_none() {
        return Ok(Err(Conflict::AlreadyDone.into()));
    }
    let timers: Vec<Timer> = deliveries
        .iter()
        .filter(|d| !d.status.is_final())
        .map(|d| Timer::job(Job::Attempt(id.clone(), d.id.clone()), d.next_attempt_at.unwrap_or(at)))
        .collect();
    ev.dispatches += 1;
    ev.dispatched_at = Some(at);
    ev.dispatch_error = error;
    ev.latest_count = u32::try_from(deliveries.len()).unwrap_or(u32::MAX);
    ev.deliveries.extend(deliveries);
    let bytes = match encode(&ev) {
        Ok(b) => b,
        Err(e) => return Ok(Err(e.into())),
    };
    cancel_timer(txn, key.as_str())?;
    for t in &timers {
        set_timer(txn, t)?;
    }
    put_event(txn, id, &bytes)?;
    rearm(txn, id, at)?;
    Ok(Ok(()))
}

fn attempt(txn: &WriteTransaction, id: &EventId, d: DeliveryRecord) -> OpResult<(), CommitError> {
    let mut ev = match load_event(txn, id) {
        Ok(Some(ev)) => ev,
        Ok(None) => return Ok(Err(Conflict::NoSuchEvent(id.clone()).into())),
        Err(e) => return Ok(Err(e.into())),
    };
    let Some(slot) = ev.deliveries.iter_mut().find(|x| x.id == d.id) else {
        return Ok(Err(Conflict::NoSuchDelivery(id.clone(), d.id).into()));
    };
    if slot.status.is_final() {
        return Ok(Err(Conflict::AlreadyDone.into()));
    }
    let due = match d.status {
        DeliveryStatus::Pending | DeliveryStatus::Retrying => d.next_attempt_at,
        DeliveryStatus::Delivered | DeliveryStatus::Dead => None,
    };
    let key = TimerKey::attempt(id, &d.id);
    let job = Job::Attempt(id.clone(), d.id.clone());
    *slot = d;
    let bytes = match encode(&ev) {
        Ok(b) => b,
        Err(e) => return Ok(Err(e.into())),
    };
    match due {
        Some(at) => set_timer(txn, &Timer::job(job, at))?,
        None => cancel_timer(txn, key.as_str())?,
    }
    put_event(txn, id, &bytes)?;
    Ok(Ok(()))
}

fn claim(
    txn: &WriteTransaction,
    key: &TimerKey,
    now: UnixMillis,
    until: UnixMillis,
) -> OpResult<Option<Scheduled>> {
    let k = key.as_str();
    let Some(due) = txn.open_table(JOB_DUE)?.get(k)?.map(|g| g.value()) else { return Ok(Ok(None)) };
    if due > now.0 {
        return Ok(Ok(None));
    }
    let payload = match payload_of(&txn.open_table(TIMER_DATA)?, k) {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(Err(StoreError::Corrupt(format!("timer {k} has no payload")))),
        Err(e) => return Ok(Err(e)),
    };
    let failures = txn.open_table(JOB_FAILS)?.get(k)?.map_or(0, |g| g.value()).saturating_add(1);
    set_job(txn, k, Some(until))?;
    txn.open_table(JOB_FAILS)?.insert(k, failures)?;
    Ok(Ok(Some(Scheduled { timer: Timer { key: key.clone(), due: until, payload }, failures })))
}

impl RedbStore {
    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        self.call(make).await
    }
}

#[async_trait]
impl Committer for RedbStore {
    async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        let (tx, rx) = oneshot::channel();
        self.writer.try_send(Op::Commit(commit, tx)).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => unavailable("the store's write queue is full"),
            mpsc::TrySendError::Disconnected(_) => unavailable("writer stopped"),
        })?;
        rx.await.map_err(|_| unavailable("writer stopped"))?
    }
}

#[async_trait]
impl EventLog for RedbStore {
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

    async fn delivery(
        &self,
        event: &EventId,
        delivery: &DeliveryId,
    ) -> Result<Option<(SourceId, DeliveryRecord)>, StoreError> {
        let ev = EventLog::event(self, event).await?;
        Ok(ev.and_then(|ev| {
            let source = ev.source;
            ev.deliveries.into_iter().find(|d| &d.id == delivery).map(|d| (source, d))
        }))
    }

    async fn page(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        let q = query.clone();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let t = txn.open_table(EVENTS).map_err(unavailable)?;
            let range = match &q.before {
                Some(b) => t.range::<&str>(..b.as_str()),
                None => t.range::<&str>(..),
            }
            .map_err(unavailable)?;
            let limit = q.limit.max(1);
            let mut events = Vec::new();
            let mut more = false;
            for item in range.rev() {
                let (_, v) = item.map_err(unavailable)?;
                let ev: EventRecord = serde_json::from_slice(v.value()).map_err(corrupt)?;
                if !q.matches(&ev) {
                    continue;
                }
                if events.len() == limit {
                    more = true;
                    break;
                }
                events.push(ev);
            }
            let next = if more { events.last().map(|e: &EventRecord| e.id.clone()) } else { None };
            Ok(EventPage { events, next })
        })
        .await
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
        self.write(|tx| Op::Purge(now, limit, tx)).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        if let Some(t) = self.shared.trouble() {
            return Err(unavailable(t));
        }
        self.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            txn.open_table(META).map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Scheduler for RedbStore {
    async fn due(&self, now: UnixMillis, limit: usize) -> Result<Vec<Timer>, StoreError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let t = txn.open_table(QUEUE).map_err(unavailable)?;
            let data = txn.open_table(TIMER_DATA).map_err(unavailable)?;
            let mut out = Vec::new();
            for item in t.range::<(u64, &str)>(..(now.0.saturating_add(1), "")).map_err(unavailable)? {
                if out.len() >= limit {
                    break;
                }
                let (k, _) = item.map_err(unavailable)?;
                let (due, key) = k.value();
                if let Some(payload) = payload_of(&data, key)? {
                    out.push(Timer { key: TimerKey::from_stored(key), due: UnixMillis(due), payload });
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
            let first = t.first().map_err(unavailable)?;
            Ok(first.map(|(k, _)| UnixMillis(k.value().0)))
        })
        .await
    }

    async fn timer(&self, key: &TimerKey) -> Result<Option<Scheduled>, StoreError> {
        let key = key.clone();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let k = key.as_str();
            let Some(due) =
                txn.open_table(JOB_DUE).map_err(unavailable)?.get(k).map_err(unavailable)?.map(|g| g.value())
            else {
                return Ok(None);
            };
            let failures = txn
                .open_table(JOB_FAILS)
                .map_err(unavailable)?
                .get(k)
                .map_err(unavailable)?
                .map_or(0, |g| g.value());
            let data = txn.open_table(TIMER_DATA).map_err(unavailable)?;
            let Some(payload) = payload_of(&data, k)? else { return Ok(None) };
            Ok(Some(Scheduled { timer: Timer { key: key.clone(), due: UnixMillis(due), payload }, failures }))
        })
        .await
    }

    async fn claim(
        &self,
        key: &TimerKey,
        now: UnixMillis,
        until: UnixMillis,
    ) -> Result<Option<Scheduled>, StoreError> {
        let key = key.clone();
        self.write(move |tx| Op::Claim(key, now, until, tx)).await
    }
}

#[async_trait]
impl DedupIndex for RedbStore {
    async fn holder(
        &self,
        source: &SourceId,
        key: &str,
        now: UnixMillis,
    ) -> Result<Option<EventId>, StoreError> {
        let dkey = dedup_key(source.as_str(), key);
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let t = txn.open_table(DEDUP).map_err(unavailable)?;
            Ok(t.get(dkey.as_str())
                .map_err(unavailable)?
                .map(|g| (g.value().0, g.value().1.to_string()))
                .filter(|(until, _)| *until > now.0)
                .map(|(_, id)| EventId::new(id)))
        })
        .await
    }
}

#[async_trait]
impl StateStore for RedbStore {
    async fn load(&self, keys: &[StateKey]) -> Result<Vec<Option<Versioned>>, StoreError> {
        let keys = keys.to_vec();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let t = txn.open_table(STATE).map_err(unavailable)?;
            keys.iter()
                .map(|k| {
                    t.get(k.as_str())
                        .map_err(unavailable)?
                        .map(|g| {
                            let (version, bytes) = g.value();
                            serde_json::from_slice(bytes)
                                .map(|value| Versioned { value, version })
                                .map_err(corrupt)
                        })
                        .transpose()
                })
                .collect()
        })
        .await
    }
}

#[async_trait]
impl hub_core::ports::mappings::MappingStore for RedbStore {
    async fn current_version(&self) -> Result<u64, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let meta = txn.open_table(META).map_err(unavailable)?;
            Ok(meta.get("mappings").map_err(unavailable)?.map_or(0, |g| g.value()))
        })
        .await
    }

    async fn current(&self) -> Result<Option<hub_core::ports::mappings::MappingVersion>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let version = txn
                .open_table(META)
                .map_err(unavailable)?
                .get("mappings")
                .map_err(unavailable)?
                .map_or(0, |g| g.value());
            if version == 0 {
                return Ok(None);
            }
            let t = txn.open_table(MAPPING_FILES).map_err(unavailable)?;
            let mut files = Vec::new();
            for item in t.range::<(u64, &str)>((version, "")..(version + 1, "")).map_err(unavailable)? {
                let (k, v) = item.map_err(unavailable)?;
                files.push((k.value().1.to_string(), v.value().to_string()));
            }
            Ok(Some(hub_core::ports::mappings::MappingVersion { version, files }))
        })
        .await
    }

    async fn push(
        &self,
        files: &[(String, String)],
        expected: Option<u64>,
        _at: UnixMillis,
    ) -> Result<u64, CommitError> {
        let (tx, rx) = oneshot::channel();
        self.writer.try_send(Op::PushMappings(files.to_vec(), expected, tx)).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => unavailable("the store's write queue is full"),
            mpsc::TrySendError::Disconnected(_) => unavailable("writer stopped"),
        })?;
        rx.await.map_err(|_| unavailable("writer stopped"))?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use hub_core::ids::SourceId;
    use hub_core::ports::commit::{Change, Commit, CommitError, Committer};
    use hub_core::request::Headers;

    async fn accept(s: &RedbStore, ev: NewEvent) -> Result<(), CommitError> {
        s.commit(Commit::new(ev.received_at).with(Change::Accept(ev))).await
    }

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
        accept(&store, ev).await.unwrap();
        let other = event(1_000);
        let other_id = other.id.clone();
        accept(&store, other).await.unwrap();
        {
            let db = store.shared.db().unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(EVENTS).unwrap().insert(id.as_str(), &b"not json"[..]).unwrap();
            txn.commit().unwrap();
        }
        // Both in one batch: the good one commits, the bad one changes nothing.
        let dispatch = |id: &EventId| {
            let change = Change::Dispatch { event: id.clone(), deliveries: vec![], error: None };
            store.commit(Commit::new(UnixMillis(2_000)).with(change))
        };
        let (bad, good) = tokio::join!(dispatch(&id), dispatch(&other_id));
        assert!(matches!(bad, Err(CommitError::Store(StoreError::Corrupt(_)))), "{bad:?}");
        good.unwrap();
        let due = store.due(UnixMillis(10_000), 10).await.unwrap();
        let jobs: Vec<Job> = due.iter().filter_map(|t| t.as_job().cloned()).collect();
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
    /// A file of layout 2 (before timer payloads and state) opens as it is: its queued jobs
    /// are due timers, and timers with payloads and state items can be added.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_layout_2_file_keeps_its_jobs_and_gains_timers_and_state() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("v2.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(QUEUE).unwrap().insert((5_000, "d/evt_v2"), ()).unwrap();
            txn.open_table(JOB_DUE).unwrap().insert("d/evt_v2", 5_000).unwrap();
            txn.open_table(JOB_FAILS).unwrap().insert("d/evt_v2", 2).unwrap();
            txn.open_table(META).unwrap().insert("schema", 2).unwrap();
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let due = Scheduler::due(&store, UnixMillis(5_000), 10).await.unwrap();
        assert_eq!(due, vec![Timer::job(Job::Dispatch(EventId::new("evt_v2")), UnixMillis(5_000))]);
        let key = TimerKey::dispatch(&EventId::new("evt_v2"));
        assert_eq!(store.timer(&key).await.unwrap().map(|s| s.failures), Some(2));
        let wake = Timer {
            key: TimerKey::new("trigger", "x"),
            due: UnixMillis(9_000),
            payload: TimerPayload::Data(serde_json::json!({"n": 1})),
        };
        let put = Change::PutState {
            key: StateKey::new("contact", "a"),
            value: serde_json::json!(1),
            read_version: 0,
        };
        store
            .commit(Commit { at: UnixMillis(6_000), changes: vec![Change::SetTimer(wake.clone()), put] })
            .await
            .unwrap();
        assert_eq!(store.timer(&wake.key).await.unwrap().map(|s| s.timer), Some(wake));
        assert_eq!(
            store.load(&[StateKey::new("contact", "a")]).await.unwrap()[0].as_ref().map(|v| v.version),
            Some(1)
        );
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;
    use hub_core::ids::SourceId;
    use hub_core::ports::commit::{Change, Commit, CommitError, Committer};

    async fn accept(s: &RedbStore, ev: NewEvent) -> Result<(), CommitError> {
        s.commit(Commit::new(ev.received_at).with(Change::Accept(ev))).await
    }

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
        let store = Arc::new(RedbStore::open_with_queue(dir.path().join("s.redb"), 2).expect("open"));
        // An open write transaction stalls the writer thread, as a slow disk would; a first op
        // is in its hands (it waits for the transaction) before the others arrive.
        let db = store.shared.db().expect("db");
        let stall = db.begin_write().expect("write txn");
        let first = {
            let s = store.clone();
            tokio::spawn(async move { accept(&s, event(100)).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let calls: Vec<_> = (0..8)
            .map(|n| {
                let s = store.clone();
                tokio::spawn(async move { accept(&s, event(n)).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        drop(stall);
        assert!(matches!(first.await.expect("task"), Ok(())));
        let mut accepted = 0;
        let mut refused = 0;
        for c in calls {
            match c.await.expect("task") {
                Ok(()) => accepted += 1,
                Err(CommitError::Store(StoreError::Unavailable(m))) if m.contains("queue is full") => {
                    refused += 1
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Two fit the queue while the writer is stalled: the rest are refused at once.
        assert_eq!((accepted, refused), (2, 6), "the queue holds two");
        let mut stored = 0;
        for n in 0..8 {
            if store.event(&EventId::new(format!("evt_{n:04}"))).await.expect("read").is_some() {
                stored += 1;
            }
        }
        assert_eq!(stored, accepted, "exactly the accepted events are stored");
    }
}
