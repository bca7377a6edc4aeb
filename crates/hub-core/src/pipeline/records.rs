//! How the use cases write: each record is one [`Commit`] of the storage ports, and the
//! refusals that mean "this ran already" (queues deliver at least once) are answered as such
//! instead of as errors.

use super::Hub;
use crate::event::{DeliveryRecord, DeliveryStatus};
use crate::ids::{DeliveryId, EventId};
use crate::ports::commit::{Change, Commit, CommitError, Conflict};
use crate::ports::schedule::TimerKey;
use crate::ports::{Acceptance, Job, JobFailed, JobFailure, NewEvent, StoreError};
use crate::time::UnixMillis;

/// A commit's failure as the use cases report it: a conflict they did not expect is the store's
/// (retry at once).
pub(super) fn store_error(e: CommitError) -> StoreError {
    match e {
        CommitError::Store(e) => e,
        CommitError::Conflict(c) => StoreError::Conflict(c.to_string()),
    }
}

/// What a dispatch evaluated at acceptance made: its deliveries, or why it could make none.
pub(super) type Dispatched = (Vec<DeliveryRecord>, Option<String>);

impl Hub {
    /// Accepts an event; with `dispatched`, its dispatch is recorded in the same commit (no
    /// dispatch timer is left).
    pub(super) async fn record_accept(
        &self,
        event: NewEvent,
        dispatched: Option<Dispatched>,
        at: UnixMillis,
    ) -> Result<Acceptance, StoreError> {
        let id = event.id.clone();
        let mut commit = Commit::new(at).with(Change::Accept(event));
        if let Some((deliveries, error)) = dispatched {
            commit = commit.with(Change::Dispatch { event: id.clone(), deliveries, error });
        }
        match self.storage.commit(commit).await {
            Ok(()) => Ok(Acceptance::Accepted(id)),
            Err(CommitError::Conflict(Conflict::Duplicate(first))) => Ok(Acceptance::Duplicate(first)),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Records a dispatch; `false` (nothing changed) when it ran already or the event is gone.
    pub(super) async fn record_dispatch(
        &self,
        id: &EventId,
        deliveries: Vec<DeliveryRecord>,
        error: Option<String>,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let change = Change::Dispatch { event: id.clone(), deliveries, error };
        match self.storage.commit(Commit::new(at).with(change)).await {
            Ok(()) => Ok(true),
            Err(CommitError::Conflict(Conflict::AlreadyDone | Conflict::NoSuchEvent(_))) => Ok(false),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Records an attempt's outcome (its timer moves or is cleared with it); `false` when the
    /// delivery was final already or its event is gone: then only its timer is cleared.
    pub(super) async fn record_outcome(&self, id: &EventId, d: DeliveryRecord) -> Result<bool, StoreError> {
        let at = d.last_attempt_at.unwrap_or(d.created_at);
        self.commit_outcome(id, d, at).await
    }

    async fn commit_outcome(
        &self,
        id: &EventId,
        d: DeliveryRecord,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let key = TimerKey::attempt(id, &d.id);
        let did = d.id.clone();
        match self
            .storage
            .commit(Commit::new(at).with(Change::Attempt { event: id.clone(), delivery: d }))
            .await
        {
            Ok(()) => Ok(true),
            Err(CommitError::Conflict(Conflict::AlreadyDone | Conflict::NoSuchEvent(_))) => {
                self.clear_timer(key, at).await?;
                Ok(false)
            }
            Err(CommitError::Conflict(Conflict::NoSuchDelivery(..))) => {
                Err(StoreError::Corrupt(format!("event {id} has no delivery {did}")))
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// Records a delivery dead with `why`; whether it was still open.
    pub(super) async fn record_dead(
        &self,
        id: &EventId,
        mut d: DeliveryRecord,
        why: String,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        d.status = DeliveryStatus::Dead;
        d.next_attempt_at = None;
        d.last_error = Some(why);
        self.commit_outcome(id, d, at).await
    }

    /// Sets the event's dispatch again (a replay); `false` when there is no such event.
    pub(super) async fn record_replay(&self, id: &EventId, at: UnixMillis) -> Result<bool, StoreError> {
        match self.storage.commit(Commit::new(at).with(Change::Replay { event: id.clone() })).await {
            Ok(()) => Ok(true),
            Err(CommitError::Conflict(Conflict::NoSuchEvent(_))) => Ok(false),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Clears a timer (the job of a delivery already final, or of an event gone).
    async fn clear_timer(&self, key: TimerKey, at: UnixMillis) -> Result<(), StoreError> {
        self.storage.commit(Commit::new(at).with(Change::CancelTimer(key))).await.map_err(store_error)
    }

    /// Records that a run of `job` failed on the store: its timer is due again at `retry_at`, or,
    /// after `max_failures` runs without outcome, its dispatch or delivery is recorded dead.
    pub(super) async fn record_job_failed(&self, job: &Job, f: &JobFailure) -> Result<JobFailed, StoreError> {
        let key = TimerKey::of_job(job);
        let Some(timer) = self.storage.timer(&key).await? else { return Ok(JobFailed::Gone) };
        let failures = timer.failures.saturating_add(1);
        if failures < f.max_failures.max(1) {
            let change = Change::TimerFailed { key, retry_at: f.retry_at };
            self.storage.commit(Commit::new(f.at).with(change)).await.map_err(store_error)?;
            return Ok(JobFailed::Deferred { failures });
        }
        let why = format!("gave up after {failures} failed runs: {}", f.reason);
        let recorded = match job {
            Job::Dispatch(id) => self.record_dispatch(id, Vec::new(), Some(why), f.at).await?,
            Job::Attempt(id, did) => self.give_up_delivery(id, did, why, f.at).await?,
        };
        if recorded {
            Ok(JobFailed::Dead { failures })
        } else {
            self.clear_timer(key, f.at).await?;
            Ok(JobFailed::Gone)
        }
    }

    /// Records an open delivery dead with `why`; `false` when it is final already or gone.
    pub(super) async fn give_up_delivery(
        &self,
        id: &EventId,
        did: &DeliveryId,
        why: String,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        match self.storage.delivery(id, did).await? {
            Some((_, d)) if !d.status.is_final() => self.record_dead(id, d, why, at).await,
            _ => Ok(false),
        }
    }
}
