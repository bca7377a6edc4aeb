//! The store port in memory: the same contract as the embedded and DynamoDB stores (it passes
//! the same conformance suite), for unit tests of the use cases and for dry runs.

use crate::event::{DeliveryRecord, DeliveryStatus, EventRecord};
use crate::ids::EventId;
use crate::ports::{Acceptance, EventQuery, Job, JobFailed, JobFailure, NewEvent, Purged, Store, StoreError};
use crate::time::UnixMillis;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// An in-memory [`Store`]. Every operation runs under one lock, so each is atomic.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    events: BTreeMap<EventId, EventRecord>,
    bodies: HashMap<EventId, Bytes>,
    /// `(source, key)` → (remember until, event).
    dedup: HashMap<(String, String), (UnixMillis, EventId)>,
    /// The schedule: (due, job) and its index job → due.
    queue: BTreeSet<(UnixMillis, JobKey)>,
    due: HashMap<JobKey, UnixMillis>,
    failures: HashMap<JobKey, u32>,
    /// Event → (expires at, retention in ms).
    expiry: HashMap<EventId, (UnixMillis, u64)>,
    /// Set by [`MemoryStore::fail_writes`]: every write answers `Unavailable` with it.
    broken: Option<String>,
}

/// A job in a sortable form (`Job` itself has no order).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum JobKey {
    Dispatch(EventId),
    Attempt(EventId, crate::ids::DeliveryId),
}

impl From<&Job> for JobKey {
    fn from(job: &Job) -> Self {
        match job {
            Job::Dispatch(id) => JobKey::Dispatch(id.clone()),
            Job::Attempt(id, d) => JobKey::Attempt(id.clone(), d.clone()),
        }
    }
}

impl From<&JobKey> for Job {
    fn from(key: &JobKey) -> Self {
        match key {
            JobKey::Dispatch(id) => Job::Dispatch(id.clone()),
            JobKey::Attempt(id, d) => Job::Attempt(id.clone(), d.clone()),
        }
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on every write fails with `Unavailable(reason)` (a full disk, an outage);
    /// `None` heals the store. Reads keep working.
    pub fn fail_writes(&self, reason: Option<&str>) {
        self.tables().broken = reason.map(str::to_string);
    }

    /// Every job queued, with its due time, earliest first.
    pub fn queued(&self) -> Vec<(Job, UnixMillis)> {
        self.tables().queue.iter().map(|(at, key)| (Job::from(key), *at)).collect()
    }

    fn write(&self) -> Result<MutexGuard<'_, Tables>, StoreError> {
        let t = self.tables();
        match &t.broken {
            Some(reason) => Err(StoreError::Unavailable(reason.clone())),
            None => Ok(t),
        }
    }
}

impl Tables {
    /// Sets (or with `None` clears) a job's due time and forgets its failures.
    fn set_job(&mut self, key: JobKey, due: Option<UnixMillis>) {
        if let Some(old) = self.due.remove(&key) {
            self.queue.remove(&(old, key.clone()));
        }
        self.failures.remove(&key);
        if let Some(at) = due {
            self.queue.insert((at, key.clone()));
            self.due.insert(key, at);
        }
    }

    fn queued(&self, key: &JobKey) -> bool {
        self.due.contains_key(key)
    }

    /// Moves an event's expiry to `at` plus its retention, unless it is later already.
    fn rearm(&mut self, id: &EventId, at: UnixMillis) {
        if let Some((until, retention)) = self.expiry.get_mut(id) {
            let next = UnixMillis(at.0.saturating_add(*retention));
            if next > *until {
                *until = next;
            }
        }
    }

    fn is_active(&self, ev: &EventRecord) -> bool {
        self.queued(&JobKey::Dispatch(ev.id.clone())) || ev.deliveries.iter().any(|d| !d.status.is_final())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn accept(&self, ev: NewEvent) -> Result<Acceptance, StoreError> {
        let mut t = self.write()?;
        let retention = millis(ev.retention);
        let expires = UnixMillis(ev.received_at.0.saturating_add(retention));
        if let Some((key, _)) = &ev.dedup
            && let Some((until, first)) = t.dedup.get(&(ev.source.to_string(), key.clone()))
            && *until > ev.received_at
        {
            return Ok(Acceptance::Duplicate(first.clone()));
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
        if let Some((key, until)) = ev.dedup {
            // A key never outlives its event.
            t.dedup.insert((ev.source.to_string(), key), ((until).min(expires), ev.id.clone()));
        }
        t.events.insert(ev.id.clone(), record);
        t.bodies.insert(ev.id.clone(), ev.body);
        t.set_job(JobKey::Dispatch(ev.id.clone()), Some(ev.received_at));
        t.expiry.insert(ev.id.clone(), (expires, retention));
        Ok(Acceptance::Accepted(ev.id))
    }

    async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        Ok(self.tables().events.get(id).cloned())
    }

    async fn body(&self, id: &EventId) -> Result<Option<Bytes>, StoreError> {
        Ok(self.tables().bodies.get(id).cloned())
    }

    async fn list_events(&self, q: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        let t = self.tables();
        let range = match &q.before {
            Some(b) => t.events.range(..b.clone()),
            None => t.events.range(..),
        };
        Ok(range
            .rev()
            .map(|(_, ev)| ev)
            .filter(|ev| q.source.as_ref().is_none_or(|s| s == &ev.source))
            .filter(|ev| q.status.is_none_or(|s| s == ev.status()))
            .take(q.limit.max(1))
            .cloned()
            .collect())
    }

    async fn due_jobs(&self, now: UnixMillis, limit: usize) -> Result<Vec<Job>, StoreError> {
        let t = self.tables();
        Ok(t.queue.iter().take_while(|(at, _)| *at <= now).take(limit).map(|(_, k)| Job::from(k)).collect())
    }

    async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError> {
        Ok(self.tables().queue.first().map(|(at, _)| *at))
    }

    async fn save_dispatch(
        &self,
        id: &EventId,
        deliveries: Vec<DeliveryRecord>,
        error: Option<String>,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let mut t = self.write()?;
        let key = JobKey::Dispatch(id.clone());
        if !t.queued(&key) || !t.events.contains_key(id) {
            return Ok(false);
        }
        let jobs: Vec<(JobKey, Option<UnixMillis>)> = deliveries
            .iter()
            .map(|d| {
                let due = if d.status.is_final() { None } else { Some(d.next_attempt_at.unwrap_or(at)) };
                (JobKey::Attempt(id.clone(), d.id.clone()), due)
            })
            .collect();
        if let Some(ev) = t.events.get_mut(id) {
            ev.dispatches += 1;
            ev.dispatched_at = Some(at);
            ev.dispatch_error = error;
            ev.latest_count = u32::try_from(deliveries.len()).unwrap_or(u32::MAX);
            ev.deliveries.extend(deliveries);
        }
        t.set_job(key, None);
        for (key, due) in jobs {
            t.set_job(key, due);
        }
        t.rearm(id, at);
        Ok(true)
    }

    async fn save_attempt(&self, id: &EventId, d: DeliveryRecord) -> Result<bool, StoreError> {
        let mut t = self.write()?;
        let key = JobKey::Attempt(id.clone(), d.id.clone());
        let Some(ev) = t.events.get_mut(id) else {
            t.set_job(key, None);
            return Ok(false);
        };
        let Some(slot) = ev.deliveries.iter_mut().find(|x| x.id == d.id) else {
            return Err(StoreError::Corrupt(format!("event {id} has no delivery {}", d.id)));
        };
        if slot.status.is_final() {
            t.set_job(key, None);
            return Ok(false);
        }
        let due = match d.status {
            DeliveryStatus::Pending | DeliveryStatus::Retrying => d.next_attempt_at,
            DeliveryStatus::Delivered | DeliveryStatus::Dead => None,
        };
        *slot = d;
        t.set_job(key, due);
        Ok(true)
    }

    async fn requeue(&self, id: &EventId, at: UnixMillis) -> Result<bool, StoreError> {
        let mut t = self.write()?;
        if !t.events.contains_key(id) {
            return Ok(false);
        }
        t.set_job(JobKey::Dispatch(id.clone()), Some(at));
        t.rearm(id, at);
        Ok(true)
    }

    async fn expires_at(&self, id: &EventId) -> Result<Option<UnixMillis>, StoreError> {
        Ok(self.tables().expiry.get(id).map(|(at, _)| *at))
    }

    async fn purge(&self, now: UnixMillis, limit: usize) -> Result<Purged, StoreError> {
        let mut t = self.write()?;
        let limit = limit.max(1);
        let mut expired: Vec<(UnixMillis, EventId)> = t
            .expiry
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, (at, _))| (*at, id.clone()))
            .collect();
        expired.sort();
        let mut purged = Purged { more: expired.len() >= limit, ..Purged::default() };
        for (_, id) in expired.into_iter().take(limit) {
            let active = t.events.get(&id).is_some_and(|ev| t.is_active(ev));
            if active {
                // Still being worked on: kept, and counted from now.
                t.rearm(&id, now);
                continue;
            }
            t.expiry.remove(&id);
            t.bodies.remove(&id);
            if let Some(ev) = t.events.remove(&id)
                && let Some(key) = ev.dedup_key
            {
                let k = (ev.source.to_string(), key);
                if t.dedup.get(&k).is_some_and(|(_, owner)| owner == &id) {
                    t.dedup.remove(&k);
                    purged.dedup_keys += 1;
                }
            }
            purged.events += 1;
        }
        let mut keys: Vec<((String, String), UnixMillis)> = t
            .dedup
            .iter()
            .filter(|(_, (until, _))| *until <= now)
            .map(|(k, (until, _))| (k.clone(), *until))
            .collect();
        keys.sort_by_key(|(_, until)| *until);
        purged.more |= keys.len() >= limit;
        for (k, _) in keys.into_iter().take(limit) {
            t.dedup.remove(&k);
            purged.dedup_keys += 1;
        }
        Ok(purged)
    }

    async fn job_failed(&self, job: &Job, f: &JobFailure) -> Result<JobFailed, StoreError> {
        let mut t = self.write()?;
        let key = JobKey::from(job);
        if !t.queued(&key) {
            return Ok(JobFailed::Gone);
        }
        let failures = t.failures.get(&key).copied().unwrap_or(0).saturating_add(1);
        if failures < f.max_failures.max(1) {
            t.set_job(key.clone(), Some(f.retry_at));
            t.failures.insert(key, failures);
            return Ok(JobFailed::Deferred { failures });
        }
        let id = match job {
            Job::Dispatch(id) | Job::Attempt(id, _) => id,
        };
        let why = format!("gave up after {failures} failed runs: {}", f.reason);
        let Some(ev) = t.events.get_mut(id) else {
            t.set_job(key, None);
            return Ok(JobFailed::Gone);
        };
        match job {
            Job::Dispatch(_) => {
                ev.dispatches += 1;
                ev.dispatched_at = Some(f.at);
                ev.dispatch_error = Some(why);
                ev.latest_count = 0;
            }
            Job::Attempt(_, did) => {
                let Some(d) = ev.deliveries.iter_mut().find(|d| &d.id == did && !d.status.is_final()) else {
                    t.set_job(key, None);
                    return Ok(JobFailed::Gone);
                };
                d.status = DeliveryStatus::Dead;
                d.next_attempt_at = None;
                d.last_error = Some(why);
            }
        }
        t.set_job(key, None);
        Ok(JobFailed::Dead { failures })
    }

    async fn health(&self) -> Result<(), StoreError> {
        match &self.tables().broken {
            Some(reason) => Err(StoreError::Unavailable(reason.clone())),
            None => Ok(()),
        }
    }
}
