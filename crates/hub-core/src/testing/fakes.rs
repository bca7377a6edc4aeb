//! Fakes of the other ports: a clock the test moves, a queue that remembers what it was given,
//! and a destination that answers from a script.

use crate::event::OutgoingRequest;
use crate::ports::{Forwarder, Job, Queue, QueueError, SendFailure, SendOutcome, SendPolicy};
use crate::time::{Clock, UnixMillis};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A clock that stands still until the test moves it.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn at(now: UnixMillis) -> Self {
        Self(AtomicU64::new(now.0))
    }

    pub fn set(&self, now: UnixMillis) {
        self.0.store(now.0, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

/// A queue that keeps what it is given (in order) and can be told to fail.
#[derive(Debug, Default)]
pub struct RecordingQueue {
    jobs: Mutex<Vec<(Job, UnixMillis)>>,
    failing: Mutex<Option<String>>,
}

impl RecordingQueue {
    /// Takes the jobs enqueued so far.
    pub fn take(&self) -> Vec<(Job, UnixMillis)> {
        std::mem::take(&mut *lock(&self.jobs))
    }

    /// From now on `enqueue` fails with this reason (`None`: works again).
    pub fn fail(&self, reason: Option<&str>) {
        *lock(&self.failing) = reason.map(str::to_string);
    }
}

#[async_trait]
impl Queue for RecordingQueue {
    async fn enqueue(&self, jobs: &[(Job, UnixMillis)], _now: UnixMillis) -> Result<(), QueueError> {
        if let Some(reason) = lock(&self.failing).clone() {
            return Err(QueueError::Unavailable(reason));
        }
        lock(&self.jobs).extend_from_slice(jobs);
        Ok(())
    }
}

/// One request as the fake destination received it, with what the route allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub request: OutgoingRequest,
    pub timeout: Duration,
    pub allow_net: Vec<ipnet::IpNet>,
}

/// A destination that answers each request with the next scripted outcome, then with its
/// default (200 unless set).
#[derive(Debug)]
pub struct ScriptedForwarder {
    script: Mutex<VecDeque<SendOutcome>>,
    default: Mutex<SendOutcome>,
    sent: Mutex<Vec<Sent>>,
}

impl Default for ScriptedForwarder {
    fn default() -> Self {
        Self {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Self::status(200)),
            sent: Mutex::new(Vec::new()),
        }
    }
}

impl ScriptedForwarder {
    /// An answer with this status and no body.
    pub fn status(status: u16) -> SendOutcome {
        SendOutcome::Response { status, retry_after: None, body_snippet: String::new() }
    }

    /// No answer at all (the connection was refused).
    pub fn unreachable() -> SendOutcome {
        SendOutcome::Failed { kind: SendFailure::Connect, message: "connection refused".into() }
    }

    /// The next requests get these outcomes, in order.
    pub fn script(&self, outcomes: impl IntoIterator<Item = SendOutcome>) {
        lock(&self.script).extend(outcomes);
    }

    /// Requests past the script get this outcome.
    pub fn answer_by_default(&self, outcome: SendOutcome) {
        *lock(&self.default) = outcome;
    }

    /// Every request received so far, oldest first.
    pub fn sent(&self) -> Vec<Sent> {
        lock(&self.sent).clone()
    }
}

#[async_trait]
impl Forwarder for ScriptedForwarder {
    async fn send(&self, request: &OutgoingRequest, policy: SendPolicy<'_>) -> SendOutcome {
        lock(&self.sent).push(Sent {
            request: request.clone(),
            timeout: policy.timeout,
            allow_net: policy.allow_net.to_vec(),
        });
        let next = lock(&self.script).pop_front();
        next.unwrap_or_else(|| lock(&self.default).clone())
    }
}

/// An observer that keeps every event it is given.
#[derive(Debug, Default)]
pub struct RecordingObserver(Mutex<Vec<crate::ports::observe::HubEvent>>);

impl RecordingObserver {
    /// Takes the events observed so far.
    pub fn take(&self) -> Vec<crate::ports::observe::HubEvent> {
        std::mem::take(&mut *lock(&self.0))
    }
}

impl crate::ports::observe::Observer for RecordingObserver {
    fn observe(&self, event: &crate::ports::observe::HubEvent) {
        lock(&self.0).push(event.clone());
    }
}

/// Versioned mapping sets in memory.
#[derive(Debug, Default)]
pub struct MemoryMappings(Mutex<Vec<Vec<(String, String)>>>);

#[async_trait]
impl crate::ports::mappings::MappingStore for MemoryMappings {
    async fn current_version(&self) -> Result<u64, crate::ports::StoreError> {
        Ok(lock(&self.0).len() as u64)
    }

    async fn current(
        &self,
    ) -> Result<Option<crate::ports::mappings::MappingVersion>, crate::ports::StoreError> {
        let v = lock(&self.0);
        Ok(v.last().map(|files| crate::ports::mappings::MappingVersion {
            version: v.len() as u64,
            files: files.clone(),
        }))
    }

    async fn push(
        &self,
        files: &[(String, String)],
        expected: Option<u64>,
        _at: UnixMillis,
    ) -> Result<u64, crate::ports::commit::CommitError> {
        let mut v = lock(&self.0);
        if expected.is_some_and(|e| e != v.len() as u64) {
            return Err(crate::ports::commit::Conflict::AlreadyDone.into());
        }
        let mut files = files.to_vec();
        files.sort();
        v.push(files);
        Ok(v.len() as u64)
    }
}
