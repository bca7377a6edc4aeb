//! One unit of work: everything a use case changes, applied whole or not at all.
//!
//! A commit holds typed changes (an event accepted, a dispatch recorded, an attempt's outcome,
//! timers, state items) and their conditions. An adapter applies it as one transaction, or as
//! writes ordered so that readers never see part of it and a retry of the same commit completes
//! it without doubling anything; either way the caller hears `Ok` only once all of it is
//! durable, and a refused commit changed nothing.

use super::schedule::{Timer, TimerKey};
use super::state::StateKey;
use super::{NewEvent, StoreError};
use crate::event::DeliveryRecord;
use crate::ids::{DeliveryId, EventId};
use crate::time::UnixMillis;
use async_trait::async_trait;

/// One change of a [`Commit`].
#[derive(Clone, Debug)]
pub enum Change {
    /// A new event: its record, its body and its dedup key (refused with
    /// [`Conflict::Duplicate`] while another event holds the key), and its dispatch timer at
    /// `received_at`.
    Accept(NewEvent),
    /// The event's routes were evaluated: `deliveries` become its latest run (earlier runs stay
    /// as history), `error` says why none could be made. Requires the event's dispatch timer
    /// ([`Conflict::AlreadyDone`] otherwise: the dispatch ran already) and clears it; each
    /// delivery still open gets its attempt timer at its `next_attempt_at`. Re-arms the event's
    /// expiry from the commit's time.
    Dispatch { event: EventId, deliveries: Vec<DeliveryRecord>, error: Option<String> },
    /// An attempt's outcome replaces the delivery's record. Requires the stored delivery to be
    /// open ([`Conflict::AlreadyDone`] when it is final). Its attempt timer moves to the
    /// record's `next_attempt_at`, or is cleared when the record is final.
    Attempt { event: EventId, delivery: DeliveryRecord },
    /// A replay: the event's dispatch timer is set at the commit's time and its expiry re-armed
    /// ([`Conflict::NoSuchEvent`] when there is no such event).
    Replay { event: EventId },
    /// Sets a timer (moving it if its key is set).
    SetTimer(Timer),
    /// Clears a timer; clearing one that is not set changes nothing.
    CancelTimer(TimerKey),
    /// A run of the timer failed on the store: it is due again at `retry_at` and its count of
    /// failures in a row grows by one (any other change of the timer resets it). Nothing
    /// happens when it is not set.
    TimerFailed { key: TimerKey, retry_at: UnixMillis },
    /// Puts a state item, on condition that its version is still `read_version` (0: the item
    /// must not exist); it is stored as `read_version + 1` ([`Conflict::StateMoved`] otherwise).
    PutState { key: StateKey, value: serde_json::Value, read_version: u64 },
}

/// Changes applied together at `at`.
#[derive(Clone, Debug)]
pub struct Commit {
    pub at: UnixMillis,
    pub changes: Vec<Change>,
}

impl Commit {
    pub fn new(at: UnixMillis) -> Self {
        Self { at, changes: Vec::new() }
    }

    pub fn with(mut self, change: Change) -> Self {
        self.changes.push(change);
        self
    }
}

/// Why a commit was refused; nothing of it was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// The event's dedup key is held by this event.
    #[error("duplicate of event {0}")]
    Duplicate(EventId),
    /// The dispatch or attempt this commit records ran already (its timer is gone, or the
    /// delivery is final).
    #[error("already done")]
    AlreadyDone,
    #[error("no event {0}")]
    NoSuchEvent(EventId),
    #[error("event {0} has no delivery {1}")]
    NoSuchDelivery(EventId, DeliveryId),
    /// A state item changed since it was read.
    #[error("state {0} changed since it was read")]
    StateMoved(StateKey),
}

/// A refused or failed commit.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Contract: `commit` applies every change of the commit or none; on `Ok` all of it is
/// durable; on `Err(Conflict)` nothing changed and the conflict is the first condition that
/// failed; on `Err(Store)` nothing visible changed and the same commit may be tried again.
#[async_trait]
pub trait Committer: Send + Sync {
    async fn commit(&self, commit: Commit) -> Result<(), CommitError>;
}
