//! The wide [`Store`] port on the split storage ports: [`OnStorage`] answers every `Store`
//! method with reads of a [`Storage`] and commits to it, so the use cases run unchanged on an
//! adapter of the new ports while the others move over.

use super::commit::{Change, Commit, CommitError, Conflict};
use super::schedule::TimerKey;
use super::{
    Acceptance, EventQuery, Job, JobFailed, JobFailure, NewEvent, Purged, Storage, Store, StoreError,
};
use crate::event::{DeliveryRecord, DeliveryStatus, EventRecord};
use crate::ids::EventId;
use crate::time::UnixMillis;
use async_trait::async_trait;
use bytes::Bytes;

/// A [`Store`] made of a [`Storage`].
#[derive(Debug, Default)]
pub struct OnStorage<S>(pub S);

impl<S> OnStorage<S> {
    pub fn new(storage: S) -> Self {
        Self(storage)
    }
}

impl<S> std::ops::Deref for OnStorage<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.0
    }
}

fn store_error(e: CommitError) -> StoreError {
    match e {
        CommitError::Store(e) => e,
        CommitError::Conflict(c) => StoreError::Conflict(c.to_string()),
    }
}

impl<S: Storage> OnStorage<S> {
    /// Clears a timer (the job of a delivery already final, or of an event gone).
    async fn clear(&self, key: TimerKey, at: UnixMillis) -> Result<(), StoreError> {
        self.0.commit(Commit::new(at).with(Change::CancelTimer(key))).await.map_err(store_error)
    }

    /// Records a delivery dead with `why`; whether it was still open.
    async fn attempt_dead(
        &self,
        id: &EventId,
        mut d: DeliveryRecord,
        why: String,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        d.status = DeliveryStatus::Dead;
        d.next_attempt_at = None;
        d.last_error = Some(why);
        self.save(id, d, at).await
    }

    async fn save(&self, id: &EventId, d: DeliveryRecord, at: UnixMillis) -> Result<bool, StoreError> {
        let key = TimerKey::attempt(id, &d.id);
        let did = d.id.clone();
        match self.0.commit(Commit::new(at).with(Change::Attempt { event: id.clone(), delivery: d })).await {
            Ok(()) => Ok(true),
            Err(CommitError::Conflict(Conflict::AlreadyDone | Conflict::NoSuchEvent(_))) => {
                self.clear(key, at).await?;
                Ok(false)
            }
            Err(CommitError::Conflict(Conflict::NoSuchDelivery(..))) => {
                Err(StoreError::Corrupt(format!("event {id} has no delivery {did}")))
            }
            Err(e) => Err(store_error(e)),
        }
    }
}

#[async_trait]
impl<S: Storage> Store for OnStorage<S> {
    async fn accept(&self, event: NewEvent) -> Result<Acceptance, StoreError> {
        let id = event.id.clone();
        let at = event.received_at;
        match self.0.commit(Commit::new(at).with(Change::Accept(event))).await {
            Ok(()) => Ok(Acceptance::Accepted(id)),
            Err(CommitError::Conflict(Conflict::Duplicate(first))) => Ok(Acceptance::Duplicate(first)),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn accept_dispatched(
        &self,
        event: NewEvent,
        deliveries: Vec<DeliveryRecord>,
        error: Option<String>,
        at: UnixMillis,
    ) -> Result<Acceptance, StoreError> {
        let id = event.id.clone();
        let commit = Commit::new(at).with(Change::Accept(event)).with(Change::Dispatch {
            event: id.clone(),
            deliveries,
            error,
        });
        match self.0.commit(commit).await {
            Ok(()) => Ok(Acceptance::Accepted(id)),
            Err(CommitError::Conflict(Conflict::Duplicate(first))) => Ok(Acceptance::Duplicate(first)),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        self.0.event(id).await
    }

    async fn delivery(
        &self,
        id: &EventId,
        delivery: &crate::ids::DeliveryId,
    ) -> Result<Option<(crate::ids::SourceId, DeliveryRecord)>, StoreError> {
        self.0.delivery(id, delivery).await
    }

    async fn body(&self, id: &EventId) -> Result<Option<Bytes>, StoreError> {
        self.0.body(id).await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        Ok(self.0.page(query).await?.events)
    }

    async fn due_jobs(&self, now: UnixMillis, limit: usize) -> Result<Vec<Job>, StoreError> {
        Ok(self.0.due(now, limit).await?.into_iter().filter_map(|t| t.as_job().cloned()).collect())
    }

    async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError> {
        self.0.next_due().await
    }

    async fn save_dispatch(
        &self,
        id: &EventId,
        deliveries: Vec<DeliveryRecord>,
        error: Option<String>,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let change = Change::Dispatch { event: id.clone(), deliveries, error };
        match self.0.commit(Commit::new(at).with(change)).await {
            Ok(()) => Ok(true),
            Err(CommitError::Conflict(Conflict::AlreadyDone | Conflict::NoSuchEvent(_))) => Ok(false),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn save_attempt(&self, id: &EventId, delivery: DeliveryRecord) -> Result<bool, StoreError> {
        let at = delivery.last_attempt_at.unwrap_or(delivery.created_at);
        self.save(id, delivery, at).await
    }

    async fn requeue(&self, id: &EventId, at: UnixMillis) -> Result<bool, StoreError> {
        match self.0.commit(Commit::new(at).with(Change::Replay { event: id.clone() })).await {
            Ok(()) => Ok(true),
            Err(CommitError::Conflict(Conflict::NoSuchEvent(_))) => Ok(false),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn expires_at(&self, id: &EventId) -> Result<Option<UnixMillis>, StoreError> {
        self.0.expires_at(id).await
    }

    async fn purge(&self, now: UnixMillis, limit: usize) -> Result<Purged, StoreError> {
        self.0.purge(now, limit).await
    }

    async fn job_failed(&self, job: &Job, f: &JobFailure) -> Result<JobFailed, StoreError> {
        let key = TimerKey::of_job(job);
        let Some(timer) = self.0.timer(&key).await? else { return Ok(JobFailed::Gone) };
        let failures = timer.failures.saturating_add(1);
        if failures < f.max_failures.max(1) {
            let change = Change::TimerFailed { key, retry_at: f.retry_at };
            self.0.commit(Commit::new(f.at).with(change)).await.map_err(store_error)?;
            return Ok(JobFailed::Deferred { failures });
        }
        let why = format!("gave up after {failures} failed runs: {}", f.reason);
        match job {
            Job::Dispatch(id) => {
                let change = Change::Dispatch { event: id.clone(), deliveries: Vec::new(), error: Some(why) };
                match self.0.commit(Commit::new(f.at).with(change)).await {
                    Ok(()) => Ok(JobFailed::Dead { failures }),
                    Err(CommitError::Conflict(Conflict::NoSuchEvent(_))) => {
                        self.clear(key, f.at).await?;
                        Ok(JobFailed::Gone)
                    }
                    Err(CommitError::Conflict(Conflict::AlreadyDone)) => Ok(JobFailed::Gone),
                    Err(e) => Err(store_error(e)),
                }
            }
            Job::Attempt(id, did) => match self.0.delivery(id, did).await? {
                Some((_, d)) if !d.status.is_final() => {
                    if self.attempt_dead(id, d, why, f.at).await? {
                        Ok(JobFailed::Dead { failures })
                    } else {
                        Ok(JobFailed::Gone)
                    }
                }
                _ => {
                    self.clear(key, f.at).await?;
                    Ok(JobFailed::Gone)
                }
            },
        }
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.0.health().await
    }
}
