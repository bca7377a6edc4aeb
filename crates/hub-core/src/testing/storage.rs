//! The storage ports in memory: the same contracts as the embedded and DynamoDB adapters (it
//! passes the same conformance suites), for unit tests of the use cases and for dry runs.
//!
//! Every call runs under one lock; a commit is applied to a copy of the tables and swapped in
//! only when every change of it passed, so a refused commit changes nothing.

use crate::event::{DeliveryRecord, DeliveryStatus, EventRecord};
use crate::ids::{DeliveryId, EventId, SourceId};
use crate::ports::commit::{Change, Commit, CommitError, Committer, Conflict};
use crate::ports::dedup::DedupIndex;
use crate::ports::log::{EventLog, EventPage};
use crate::ports::schedule::{Scheduled, Scheduler, Timer, TimerKey};
use crate::ports::state::{StateKey, StateStore, Versioned};
use crate::ports::{EventQuery, Job, NewEvent, Purged, StoreError};
use crate::time::UnixMillis;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The storage ports in memory.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    inner: Mutex<Tables>,
}

#[derive(Clone, Debug, Default)]
struct Tables {
    events: BTreeMap<EventId, EventRecord>,
    bodies: HashMap<EventId, Bytes>,
    /// `(source, key)` → (held until, event).
    dedup: HashMap<(SourceId, String), (UnixMillis, EventId)>,
    timers: HashMap<TimerKey, Scheduled>,
    /// The timers by due time.
    due: BTreeSet<(UnixMillis, TimerKey)>,
    /// Event → (expires at, retention in ms).
    expiry: HashMap<EventId, (UnixMillis, u64)>,
    state: HashMap<StateKey, Versioned>,
    /// Set by [`MemoryStorage::fail_writes`]: every write answers `Unavailable` with it.
    broken: Option<String>,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl MemoryStorage {
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

    /// Every pipeline job set, with its due time, earliest first.
    pub fn queued(&self) -> Vec<(Job, UnixMillis)> {
        let t = self.tables();
        t.due
            .iter()
            .filter_map(|(at, key)| {
                t.timers.get(key).and_then(|s| s.timer.as_job().map(|j| (j.clone(), *at)))
            })
            .collect()
    }

    fn writable(&self) -> Result<MutexGuard<'_, Tables>, StoreError> {
        let t = self.tables();
        match &t.broken {
            Some(reason) => Err(StoreError::Unavailable(reason.clone())),
            None => Ok(t),
        }
    }
}

impl Tables {
    fn set_timer(&mut self, timer: Timer, failures: u32) {
        self.cancel(&timer.key);
        self.due.insert((timer.due, timer.key.clone()));
        self.timers.insert(timer.key.clone(), Scheduled { timer, failures });
    }

    fn cancel(&mut self, key: &TimerKey) {
        if let Some(old) = self.timers.remove(key) {
            self.due.remove(&(old.timer.due, key.clone()));
        }
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

    /// Whether an event still has work to do: its dispatch, or a delivery not final.
    fn is_active(&self, ev: &EventRecord) -> bool {
        self.timers.contains_key(&TimerKey::dispatch(&ev.id))
            || ev.deliveries.iter().any(|d| !d.status.is_final())
    }

    fn apply(&mut self, at: UnixMillis, change: Change) -> Result<(), Conflict> {
        match change {
            Change::Accept(ev) => self.accept(ev),
            Change::Dispatch { event, deliveries, error } => self.dispatch(at, event, deliveries, error),
            Change::Attempt { event, delivery } => self.attempt(event, delivery),
            Change::Replay { event } => {
                if !self.events.contains_key(&event) {
                    return Err(Conflict::NoSuchEvent(event));
                }
                self.set_timer(Timer::job(Job::Dispatch(event.clone()), at), 0);
                self.rearm(&event, at);
                Ok(())
            }
            Change::SetTimer(timer) => {
                self.set_timer(timer, 0);
                Ok(())
            }
            Change::CancelTimer(key) => {
                self.cancel(&key);
                Ok(())
            }
            Change::TimerFailed { key, retry_at } => {
                if let Some(s) = self.timers.get(&key).cloned() {
                    self.set_timer(Timer { due: retry_at, ..s.timer }, s.failures.saturating_add(1));
                }
                Ok(())
            }
            Change::PutState { key, value, read_version } => {
                let current = self.state.get(&key).map_or(0, |v| v.version);
                if current != read_version {
                    return Err(Conflict::StateMoved(key));
                }
                self.state.insert(key, Versioned { value, version: read_version + 1 });
                Ok(())
            }
        }
    }

    fn accept(&mut self, ev: NewEvent) -> Result<(), Conflict> {
        if let Some((key, _)) = &ev.dedup
            && let Some((until, holder)) = self.dedup.get(&(ev.source.clone(), key.clone()))
            && *until > ev.received_at
            && *holder != ev.id
        {
            return Err(Conflict::Duplicate(holder.clone()));
        }
        if self.events.contains_key(&ev.id) {
            // The same commit again (a retry after a lost answer): it is applied already.
            return Ok(());
        }
        let retention = millis(ev.retention);
        let expires = UnixMillis(ev.received_at.0.saturating_add(retention));
        if let Some((key, until)) = &ev.dedup {
            // A key never outlives its event.
            self.dedup.insert((ev.source.clone(), key.clone()), ((*until).min(expires), ev.id.clone()));
        }
        self.set_timer(Timer::job(Job::Dispatch(ev.id.clone()), ev.received_at), 0);
        self.expiry.insert(ev.id.clone(), (expires, retention));
        self.bodies.insert(ev.id.clone(), ev.body.clone());
        self.events.insert(ev.id.clone(), ev.into_record());
        Ok(())
    }

    fn dispatch(
        &mut self,
        at: UnixMillis,
        id: EventId,
        deliveries: Vec<DeliveryRecord>,
        error: Option<String>,
    ) -> Result<(), Conflict> {
        if !self.events.contains_key(&id) {
            return Err(Conflict::NoSuchEvent(id));
        }
        let key = TimerKey::dispatch(&id);
        if !self.timers.contains_key(&key) {
            return Err(Conflict::AlreadyDone);
        }
        self.cancel(&key);
        for d in deliveries.iter().filter(|d| !d.status.is_final()) {
            let due = d.next_attempt_at.unwrap_or(at);
            self.set_timer(Timer::job(Job::Attempt(id.clone(), d.id.clone()), due), 0);
        }
        if let Some(ev) = self.events.get_mut(&id) {
            ev.dispatches += 1;
            ev.dispatched_at = Some(at);
            ev.dispatch_error = error;
            ev.latest_count = u32::try_from(deliveries.len()).unwrap_or(u32::MAX);
            ev.deliveries.extend(deliveries);
        }
        self.rearm(&id, at);
        Ok(())
    }

    fn attempt(&mut self, id: EventId, d: DeliveryRecord) -> Result<(), Conflict> {
        let Some(ev) = self.events.get_mut(&id) else { return Err(Conflict::NoSuchEvent(id)) };
        let Some(slot) = ev.deliveries.iter_mut().find(|x| x.id == d.id) else {
            return Err(Conflict::NoSuchDelivery(id, d.id));
        };
        if slot.status.is_final() {
            return Err(Conflict::AlreadyDone);
        }
        let due = match d.status {
            DeliveryStatus::Pending | DeliveryStatus::Retrying => d.next_attempt_at,
            DeliveryStatus::Delivered | DeliveryStatus::Dead => None,
        };
        let key = TimerKey::attempt(&id, &d.id);
        let job = Job::Attempt(id, d.id.clone());
        *slot = d;
        match due {
            Some(at) => self.set_timer(Timer::job(job, at), 0),
            None => self.cancel(&key),
        }
        Ok(())
    }
}

#[async_trait]
impl Committer for MemoryStorage {
    async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        let mut t = self.writable()?;
        let mut next = t.clone();
        for change in commit.changes {
            next.apply(commit.at, change)?;
        }
        *t = next;
        Ok(())
    }
}

#[async_trait]
impl EventLog for MemoryStorage {
    async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        Ok(self.tables().events.get(id).cloned())
    }

    async fn body(&self, id: &EventId) -> Result<Option<Bytes>, StoreError> {
        Ok(self.tables().bodies.get(id).cloned())
    }

    async fn delivery(
        &self,
        event: &EventId,
        delivery: &DeliveryId,
    ) -> Result<Option<(SourceId, DeliveryRecord)>, StoreError> {
        let t = self.tables();
        Ok(t.events.get(event).and_then(|ev| {
            ev.deliveries.iter().find(|d| &d.id == delivery).map(|d| (ev.source.clone(), d.clone()))
        }))
    }

    async fn page(&self, q: &EventQuery) -> Result<EventPage, StoreError> {
        let t = self.tables();
        let limit = q.limit.max(1);
        let range = match &q.before {
            Some(b) => t.events.range(..b.clone()),
            None => t.events.range(..),
        };
        let mut events: Vec<EventRecord> =
            range.rev().map(|(_, ev)| ev).filter(|ev| q.matches(ev)).take(limit + 1).cloned().collect();
        let more = events.len() > limit;
        events.truncate(limit);
        let next = if more { events.last().map(|e| e.id.clone()) } else { None };
        Ok(EventPage { events, next })
    }

    async fn expires_at(&self, id: &EventId) -> Result<Option<UnixMillis>, StoreError> {
        Ok(self.tables().expiry.get(id).map(|(at, _)| *at))
    }

    async fn purge(&self, now: UnixMillis, limit: usize) -> Result<Purged, StoreError> {
        let mut t = self.writable()?;
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
            if t.events.get(&id).is_some_and(|ev| t.is_active(ev)) {
                // Still being worked on: kept, and counted from now.
                t.rearm(&id, now);
                continue;
            }
            t.expiry.remove(&id);
            t.bodies.remove(&id);
            if let Some(ev) = t.events.remove(&id)
                && let Some(key) = ev.dedup_key
            {
                let k = (ev.source, key);
                if t.dedup.get(&k).is_some_and(|(_, holder)| holder == &id) {
                    t.dedup.remove(&k);
                    purged.dedup_keys += 1;
                }
            }
            purged.events += 1;
        }
        let mut keys: Vec<((SourceId, String), UnixMillis)> = t
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

    async fn health(&self) -> Result<(), StoreError> {
        match &self.tables().broken {
            Some(reason) => Err(StoreError::Unavailable(reason.clone())),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Scheduler for MemoryStorage {
    async fn due(&self, now: UnixMillis, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let t = self.tables();
        Ok(t.due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .filter_map(|(_, k)| t.timers.get(k).map(|s| s.timer.clone()))
            .collect())
    }

    async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError> {
        Ok(self.tables().due.first().map(|(at, _)| *at))
    }

    async fn timer(&self, key: &TimerKey) -> Result<Option<Scheduled>, StoreError> {
        Ok(self.tables().timers.get(key).cloned())
    }

    async fn claim(
        &self,
        key: &TimerKey,
        now: UnixMillis,
        until: UnixMillis,
    ) -> Result<Option<Scheduled>, StoreError> {
        let mut t = self.writable()?;
        let Some(s) = t.timers.get(key).cloned() else { return Ok(None) };
        if s.timer.due > now {
            return Ok(None);
        }
        let claimed =
            Scheduled { timer: Timer { due: until, ..s.timer }, failures: s.failures.saturating_add(1) };
        t.set_timer(claimed.timer.clone(), claimed.failures);
        Ok(Some(claimed))
    }
}

#[async_trait]
impl DedupIndex for MemoryStorage {
    async fn holder(
        &self,
        source: &SourceId,
        key: &str,
        now: UnixMillis,
    ) -> Result<Option<EventId>, StoreError> {
        let t = self.tables();
        Ok(t.dedup
            .get(&(source.clone(), key.to_string()))
            .filter(|(until, _)| *until > now)
            .map(|(_, id)| id.clone()))
    }
}

#[async_trait]
impl StateStore for MemoryStorage {
    async fn load(&self, keys: &[StateKey]) -> Result<Vec<Option<Versioned>>, StoreError> {
        let t = self.tables();
        Ok(keys.iter().map(|k| t.state.get(k).cloned()).collect())
    }
}
