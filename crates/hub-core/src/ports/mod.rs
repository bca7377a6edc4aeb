//! Ports: the small traits through which the core reaches storage and the network.
//!
//! Adapters implement them (embedded redb, DynamoDB + SQS, reqwest, in memory); one conformance
//! suite per port runs against every adapter so they cannot drift.
//!
//! Storage is split by capability: the [`log::EventLog`] (events, bodies, deliveries), the
//! [`schedule::Scheduler`] (timers by key with leases; pipeline jobs are timers), the
//! [`dedup::DedupIndex`], the [`state::StateStore`] (versioned items) and the
//! [`commit::Committer`] that changes all of them in one unit of work. A [`Storage`] is all five
//! over one database. [`mappings::MappingStore`] holds versioned mapping sets,
//! [`observe::Observer`] receives what the hub did.

pub mod commit;
pub mod dedup;
pub mod log;
pub mod mappings;
pub mod observe;
pub mod schedule;
pub mod state;

/// Every storage capability over one database, changed together through [`commit::Committer`].
pub trait Storage:
    log::EventLog + schedule::Scheduler + dedup::DedupIndex + state::StateStore + commit::Committer
{
}

impl<T> Storage for T where
    T: log::EventLog + schedule::Scheduler + dedup::DedupIndex + state::StateStore + commit::Committer
{
}

use crate::event::{EventRecord, OutgoingRequest};
use crate::ids::{DeliveryId, EventId, SourceId};
use crate::request::Headers;
use crate::time::UnixMillis;
use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;

/// An event to persist, as accepted at the trust boundary (already verified and parsed).
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub id: EventId,
    pub source: SourceId,
    pub received_at: UnixMillis,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Headers,
    pub remote_addr: Option<String>,
    pub body: Bytes,
    /// `(key, remember until)`: a second event of the same source with the same key before
    /// that time is a duplicate.
    pub dedup: Option<(String, UnixMillis)>,
    /// How long the event is kept after its last activity (receipt, dispatch, replay): then
    /// its record, body, deliveries and dedup key are deleted. A dedup key never outlives it.
    pub retention: Duration,
}

impl NewEvent {
    /// The record the event starts with once accepted: nothing dispatched yet.
    pub fn into_record(self) -> crate::event::EventRecord {
        crate::event::EventRecord {
            dedup_key: self.dedup.map(|(k, _)| k),
            body_len: self.body.len() as u64,
            id: self.id,
            source: self.source,
            received_at: self.received_at,
            method: self.method,
            path: self.path,
            query: self.query,
            headers: self.headers,
            remote_addr: self.remote_addr,
            dispatches: 0,
            dispatched_at: None,
            dispatch_error: None,
            deliveries: Vec::new(),
            latest_count: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acceptance {
    /// Stored durably and its dispatch is queued.
    Accepted(EventId),
    /// Same source and dedup key as an event already stored: nothing new was written.
    Duplicate(EventId),
}

/// Work the delivery worker does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// Evaluate the event's routes and create its deliveries.
    Dispatch(EventId),
    /// Attempt one delivery.
    Attempt(EventId, DeliveryId),
}

#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub source: Option<SourceId>,
    /// Only events with this status (`received`, `delivered`, ...).
    pub status: Option<crate::event::EventStatus>,
    /// Newest first, at most this many.
    pub limit: usize,
    /// Only events with an id lower than this (paging backwards in time).
    pub before: Option<EventId>,
}

impl EventQuery {
    /// Whether `ev` is one the query asks for (its source and status; paging aside).
    pub fn matches(&self, ev: &EventRecord) -> bool {
        self.source.as_ref().is_none_or(|s| s == &ev.source) && self.status.is_none_or(|s| s == ev.status())
    }
}

/// What one bounded purge pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Events deleted with their body and deliveries.
    pub events: u64,
    /// Dedup keys forgotten.
    pub dedup_keys: u64,
    /// The pass stopped at its limit: more is due now.
    pub more: bool,
}

/// A job run that failed on the store (not on the destination), as the worker reports it.
#[derive(Clone, Debug)]
pub struct JobFailure {
    pub reason: String,
    pub at: UnixMillis,
    /// When to run the job again, if it is not given up.
    pub retry_at: UnixMillis,
    /// After this many failures in a row the dispatch or delivery is recorded dead.
    pub max_failures: u32,
}

/// What became of a failed job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobFailed {
    /// Due again at `retry_at`; it failed this many times in a row.
    Deferred { failures: u32 },
    /// Given up: the dispatch or delivery is recorded dead with the reason.
    Dead { failures: u32 },
    /// Nothing of the job is queued any more (it finished, or the event is gone).
    Gone,
}

/// Why a store could not do what was asked. The variant is the decision: whether running the
/// same thing again can succeed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or written right now (an outage, throttling, a full disk):
    /// retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Another writer changed the same record at the same time: retry at once.
    #[error("store conflict: {0}")]
    Conflict(String),
    /// The record no longer fits what the store can hold: retrying will not help.
    #[error("too large for the store: {0}")]
    TooLarge(String),
    /// What is stored cannot be read: retrying will not help.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("no event {0}")]
    NoSuchEvent(EventId),
}

impl StoreError {
    /// Whether running the same operation again can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Conflict(_))
    }

    /// A stable name of the kind, for logs and metrics (renaming one is a breaking change).
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "store_unavailable",
            StoreError::Conflict(_) => "store_conflict",
            StoreError::TooLarge(_) => "store_too_large",
            StoreError::Corrupt(_) => "store_corrupt",
            StoreError::NoSuchEvent(_) => "no_such_event",
        }
    }
}

/// Why jobs could not be queued. Either way they stay due in the store and run when overdue
/// jobs are swept: a queue error delays work, it never loses it.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue cannot be reached or refused the request (throttling, an outage): retry later.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// Part of a batch was not queued (the rest was).
    #[error("{failed} of {sent} jobs not queued: {reason}")]
    Partial { failed: usize, sent: usize, reason: String },
    /// The request could not be built (a job too large for a message): retrying will not help.
    #[error("job cannot be queued: {0}")]
    Invalid(String),
}

/// The fast path to whoever runs jobs: the local worker's wake-up or an SQS queue.
///
/// The store stays the record of what is due (its `due_jobs`); a job that could not be
/// enqueued is still run, later, by whoever sweeps overdue jobs (the local worker's poll, the
/// `schedule-tick` function). So an enqueue failure never loses work, it only delays it.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Queues `jobs`, each to run at its time (now or later).
    async fn enqueue(&self, jobs: &[(Job, UnixMillis)], now: UnixMillis) -> Result<(), QueueError>;
}

/// What came of one send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The destination answered (any status).
    Response {
        status: u16,
        /// `Retry-After`, when the destination sent one.
        retry_after: Option<Duration>,
        /// The start of the response body, for the operator.
        body_snippet: String,
    },
    /// No answer.
    Failed { kind: SendFailure, message: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFailure {
    Timeout,
    Connect,
    /// Refused by the outbound guard (private address, bad scheme): retrying will not help.
    Blocked,
    /// The request could not be built (bad URL or header): retrying will not help.
    InvalidRequest,
    /// Anything else on the wire (reset, protocol error): worth retrying.
    Other,
}

/// What a route allows one request: how long it may take and where it may go.
#[derive(Clone, Copy, Debug)]
pub struct SendPolicy<'a> {
    /// The whole request, from connecting to the last byte read.
    pub timeout: Duration,
    /// Private networks the request may reach besides public addresses (the route's
    /// `to.allow_net`); an adapter refuses (`Blocked`) any it was not started to allow.
    pub allow_net: &'a [ipnet::IpNet],
}

/// The outbound HTTP port.
#[async_trait]
pub trait Forwarder: Send + Sync {
    async fn send(&self, request: &OutgoingRequest, policy: SendPolicy<'_>) -> SendOutcome;
}
