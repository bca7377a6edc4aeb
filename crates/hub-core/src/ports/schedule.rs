//! The scheduler port: timers by key, each due at a time with a payload, claimed with a lease.
//!
//! The delivery pipeline's jobs are timers (an event's dispatch, a delivery's next attempt), and
//! triggers add their own (delays, dates, absence windows). Timers are set, moved and cleared in
//! a [`Commit`](super::commit::Commit) together with what makes them due, so a timer never
//! exists without its reason or the other way round.

use super::{Job, StoreError};
use crate::ids::{DeliveryId, EventId};
use crate::time::UnixMillis;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A timer's unique key: setting a timer under a key that exists moves that timer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimerKey(String);

impl TimerKey {
    /// An application timer's key (`owner` names who set it, e.g. a trigger, so keys of
    /// different owners never collide).
    pub fn new(owner: &str, name: &str) -> Self {
        Self(format!("t/{owner}/{name}"))
    }

    /// The key of an event's dispatch.
    pub fn dispatch(event: &EventId) -> Self {
        Self(format!("d/{event}"))
    }

    /// The key of a delivery's next attempt.
    pub fn attempt(event: &EventId, delivery: &DeliveryId) -> Self {
        Self(format!("a/{event}/{delivery}"))
    }

    /// The key of a pipeline job.
    pub fn of_job(job: &Job) -> Self {
        match job {
            Job::Dispatch(e) => Self::dispatch(e),
            Job::Attempt(e, d) => Self::attempt(e, d),
        }
    }

    /// A key as an adapter stored it ([`TimerKey::as_str`] of a key made here).
    pub fn from_stored(key: &str) -> Self {
        Self(key.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TimerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a timer does when it is due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerPayload {
    /// A pipeline job (dispatch an event, attempt a delivery).
    Job(Job),
    /// Data for whoever set the timer (a trigger's wake-up).
    Data(serde_json::Value),
}

/// A timer as set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    pub key: TimerKey,
    pub due: UnixMillis,
    pub payload: TimerPayload,
}

impl Timer {
    /// The timer that runs `job` at `due`.
    pub fn job(job: Job, due: UnixMillis) -> Self {
        Self { key: TimerKey::of_job(&job), due, payload: TimerPayload::Job(job) }
    }

    /// The pipeline job it runs, if it is one.
    pub fn as_job(&self) -> Option<&Job> {
        match &self.payload {
            TimerPayload::Job(j) => Some(j),
            TimerPayload::Data(_) => None,
        }
    }
}

/// A timer as stored: with how many of its runs failed on the store in a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub timer: Timer,
    pub failures: u32,
}

/// Contract: a timer is due from its `due` time until it is cleared or moved; [`Scheduler::due`]
/// returns due timers earliest first; a claim moves a due timer's time forward (its lease) so
/// that no other sweeper picks it before the lease ends, only one of two concurrent claims of
/// the same timer succeeds, and each claim counts as a run without outcome (its `failures`
/// grow by one until something sets, moves or clears the timer). Timers fire at least once: whoever runs one must tolerate a second
/// run (the commit that clears it says whether it ran already).
#[async_trait]
pub trait Scheduler: Send + Sync {
    /// Timers due at or before `now`, earliest first, at most `limit`.
    async fn due(&self, now: UnixMillis, limit: usize) -> Result<Vec<Timer>, StoreError>;
    /// When the earliest timer is due, if any is set.
    async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError>;
    /// The timer under `key`, if set.
    async fn timer(&self, key: &TimerKey) -> Result<Option<Scheduled>, StoreError>;
    /// If the timer is due at `now`, moves it to `until`, counts the run, and returns it with
    /// its count; `None` when it is not set, not due yet, or claimed by someone else first.
    async fn claim(
        &self,
        key: &TimerKey,
        now: UnixMillis,
        until: UnixMillis,
    ) -> Result<Option<Scheduled>, StoreError>;
}
