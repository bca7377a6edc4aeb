//! The use cases: ingest a webhook, dispatch an event to its routes, attempt a delivery.
//!
//! Shells call these and nothing else: the HTTP surface calls [`Hub::ingest`]; the local worker
//! and the SQS consumer both feed jobs to [`Hub::run_job`].
//!
//! The store is the record of what is due; the [`Queue`] is only the fast path to whoever runs
//! jobs. Jobs may run twice (queues deliver at least once): the store ignores a second dispatch
//! of the same event and a second outcome for a delivery already final.

pub use crate::evaluate::IngestError;
use crate::evaluate::Verified;
use crate::event::{DeliveryRecord, DeliveryStatus, EventRecord};
use crate::ids::{DeliveryId, EventId, RouteId, SourceId};
use crate::mapping::MappingSet;
use crate::ports::log::EventPage;
use crate::ports::observe::{HubEvent, Ignore, Observer};
use crate::ports::{
    Acceptance, EventQuery, Forwarder, Job, JobFailed, JobFailure, NewEvent, Purged, Queue, SendPolicy,
    Storage, StoreError,
};
use crate::request::RawRequest;
use crate::retry::{Verdict, classify};
use crate::time::{Clock, UnixMillis};
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::sync::Arc;
use tracing::{info, warn};

mod facts;
mod records;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingested {
    pub event_id: EventId,
    pub duplicate: bool,
    /// A verified endpoint-ownership challenge (Slack `url_verification`): answer it, store
    /// nothing.
    pub challenge: Option<String>,
}

/// What a job left to do, for the shell that feeds jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Finished, or nothing to do (the job had run already).
    Done,
    /// The delivery failed and is due again at this time.
    RetryAt(UnixMillis),
    /// The delivery failed and its retries are exhausted: it is dead.
    Exhausted,
    /// The mapping set in force here lacks the job's source or route (with
    /// [`RunOptions::report_missing_mappings`]); nothing was recorded: load the newest set and
    /// run the job again.
    MappingsMissing,
}

/// An attempt this early is still run: clocks of the machines that schedule and run jobs
/// differ a little.
pub const DUE_TOLERANCE_MS: u64 = 1_000;

/// How a shell runs a job.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The queue will not hand this job over again: a failed attempt is the last one.
    pub last_chance: bool,
    /// Said in the record of a delivery whose retries ran out (e.g. where its message went).
    pub dead_letter_note: Option<String>,
    /// A job whose source or route the mapping set in force lacks is answered
    /// [`JobOutcome::MappingsMissing`] instead of being recorded dead (a shell whose sets may
    /// lag behind a push loads the newest first).
    pub report_missing_mappings: bool,
}

/// The hub's use cases over its ports. Shells reach the ports only through these.
pub struct Hub {
    mappings: ArcSwap<MappingSet>,
    storage: Arc<dyn Storage>,
    forwarder: Arc<dyn Forwarder>,
    clock: Arc<dyn Clock>,
    queue: Arc<dyn Queue>,
    observer: Arc<dyn Observer>,
    /// Dispatches in this process that apply facts to the same entity take turns (by a stripe
    /// of the entity's key), so they do not keep refusing each other's commits; across
    /// processes the state version decides.
    entity_locks: Arc<[futures_util::lock::Mutex<()>]>,
}

impl Hub {
    pub fn new(
        mappings: Arc<MappingSet>,
        storage: Arc<dyn Storage>,
        forwarder: Arc<dyn Forwarder>,
        clock: Arc<dyn Clock>,
        queue: Arc<dyn Queue>,
    ) -> Self {
        Self {
            mappings: ArcSwap::new(mappings),
            storage,
            forwarder,
            clock,
            queue,
            observer: Arc::new(Ignore),
            entity_locks: (0..facts::ENTITY_LOCK_STRIPES)
                .map(|_| futures_util::lock::Mutex::new(()))
                .collect(),
        }
    }

    /// Tells `observer` what the hub does (metrics, logs).
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    fn dead(&self, event: &EventId, source: &SourceId, route: Option<&RouteId>, reason: &str) {
        self.observer.observe(&HubEvent::Dead {
            event: event.clone(),
            source: source.clone(),
            route: route.cloned(),
            reason: reason.to_string(),
        });
    }

    /// The mapping set in force; a request holds on to one set from start to end.
    pub fn mappings(&self) -> Arc<MappingSet> {
        self.mappings.load_full()
    }

    /// Puts a newly loaded mapping set in force for requests and jobs that start from now on.
    pub fn set_mappings(&self, set: Arc<MappingSet>) {
        self.mappings.store(set);
    }

    /// The hub's clock.
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// Whether the store can take webhooks now; the error says why not.
    pub async fn health(&self) -> Result<(), StoreError> {
        self.storage.health().await
    }

    /// A page of events, newest first (see [`EventQuery`]; the page says where the next starts).
    pub async fn events(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        self.storage.page(query).await
    }

    /// One event with its deliveries.
    pub async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        self.storage.event(id).await
    }

    /// One entity's state, explained (`hub state show`).
    pub async fn entity_state(
        &self,
        entity: &str,
        key: &str,
    ) -> Result<crate::triggers::StateLookup, StoreError> {
        let stored =
            self.storage.load(&[crate::ports::state::StateKey::new(entity, key)]).await?.pop().flatten();
        crate::triggers::describe(&self.mappings(), entity, key, stored.as_ref(), self.clock.now())
            .map_err(|e| StoreError::Corrupt(format!("state {entity}/{key}: {e}")))
    }

    /// The body of one event as stored.
    pub async fn body(&self, id: &EventId) -> Result<Option<Bytes>, StoreError> {
        self.storage.body(id).await
    }

    /// Jobs due now, oldest due first, at most `limit` (for whoever sweeps the store).
    pub async fn due_jobs(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let due = self.storage.due(self.clock.now(), limit).await?;
        Ok(due.into_iter().filter_map(|t| t.as_job().cloned()).collect())
    }

    /// When the earliest queued job is due, if any.
    pub async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError> {
        self.storage.next_due().await
    }

    /// Records that running `job` failed on the store, not on its destination: the job is due
    /// again at `failure.retry_at`, or, once it failed `failure.max_failures` times in a row,
    /// its dispatch or delivery is recorded dead with the reason. Any recorded outcome of the
    /// job resets the count.
    pub async fn job_failed(&self, job: &Job, failure: &JobFailure) -> Result<JobFailed, StoreError> {
        let r = self.record_job_failed(job, failure).await?;
        if let JobFailed::Dead { .. } = r {
            self.observe_dead(job, &failure.reason).await;
        }
        Ok(r)
    }

    /// Says that `job`'s dispatch or delivery is dead (the event is read for its source).
    async fn observe_dead(&self, job: &Job, reason: &str) {
        let (id, route) = match job {
            Job::Dispatch(id) => (id, None),
            Job::Attempt(id, d) => (id, Some(d)),
        };
        if let Ok(Some(ev)) = self.storage.event(id).await {
            let route =
                route.and_then(|d| ev.deliveries.iter().find(|x| &x.id == d)).map(|d| d.route.clone());
            self.dead(id, &ev.source, route.as_ref(), reason);
        }
    }

    /// One bounded pass deleting what expired by now (see
    /// [`EventLog::purge`](crate::ports::log::EventLog::purge)).
    pub async fn purge(&self, limit: usize) -> Result<Purged, StoreError> {
        self.storage.purge(self.clock.now(), limit).await
    }

    /// Gives up a job that cannot be processed (its message cannot be read, it keeps crashing
    /// the run): a dispatch is recorded failed, a delivery dead, both with `reason`.
    pub async fn give_up(&self, job: &Job, reason: String) -> Result<(), StoreError> {
        let now = self.clock.now();
        let recorded = match job {
            Job::Dispatch(id) => self.record_dispatch(id, Vec::new(), Some(reason.clone()), now).await?,
            Job::Attempt(id, did) => self.give_up_delivery(id, did, reason.clone(), now).await?,
        };
        if recorded {
            self.observe_dead(job, &reason).await;
        }
        Ok(())
    }

    /// Hands jobs to the queue; a failure only delays them (the store still has them due).
    async fn enqueue(&self, jobs: &[(Job, UnixMillis)]) {
        if jobs.is_empty() {
            return;
        }
        if let Err(e) = self.queue.enqueue(jobs, self.clock.now()).await {
            warn!(error = %e, jobs = jobs.len(), "enqueue failed; the jobs run when overdue jobs are swept");
        }
    }

    /// Replays an event: its routes are evaluated again and new deliveries made. `false` when
    /// there is no such event.
    pub async fn replay(&self, id: &EventId) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let found = self.record_replay(id, now).await?;
        if found {
            self.enqueue(&[(Job::Dispatch(id.clone()), now)]).await;
        }
        Ok(found)
    }

    /// Accepts one webhook: on `Ok` the raw request is durably stored and its dispatch queued.
    pub async fn ingest(&self, source_id: &str, req: RawRequest) -> Result<Ingested, IngestError> {
        let mappings = self.mappings();
        let source =
            mappings.source(source_id).ok_or_else(|| IngestError::UnknownSource(source_id.into()))?;
        let checked = Verified::check(source, req)?;
        let id = EventId::generate();
        if let Some(c) = checked.challenge() {
            info!(source = %source.id, "answered an endpoint verification challenge");
            return Ok(Ingested { event_id: id, duplicate: false, challenge: Some(c) });
        }
        // The dedup key is taken from the request as received; what is stored, and rendered,
        // has its credentials redacted.
        let received_at = checked.request().received_at;
        let dedup = checked.dedup(&id).map(|(k, window)| (k, received_at.plus(window)));
        let stored = checked.redacted()?;
        // Routes that make a known, small number of deliveries are evaluated now, from the
        // stored copy, and committed with the event: no dispatch job, one commit.
        let planned = if source.dispatches_at_ingest() {
            let now = self.clock.now();
            Some(match stored.plan(&id, &mut DeliveryId::generate) {
                Ok(plan) => (plan.deliveries(now), None),
                Err(e) => (Vec::new(), Some(e.0)),
            })
        } else {
            None
        };
        let made = planned.as_ref().map(|(d, error)| Made::of(&id, d, error.clone(), received_at));
        let stored = stored.into_request();
        let event = NewEvent {
            id,
            source: source.id.clone(),
            received_at,
            method: stored.method,
            path: stored.path,
            query: stored.query,
            headers: stored.headers,
            remote_addr: stored.remote_addr,
            body: stored.body,
            dedup,
            retention: source.retention,
        };
        let at = if planned.is_some() { self.clock.now() } else { received_at };
        let accepted = self.record_accept(event, planned, at).await?;
        match accepted {
            Acceptance::Accepted(event_id) => {
                info!(source = %source.id, event = %event_id, "accepted");
                self.observer
                    .observe(&HubEvent::Accepted { source: source.id.clone(), event: event_id.clone() });
                match made {
                    Some(made) => self.announce(&event_id, &source.id, made).await,
                    None => self.enqueue(&[(Job::Dispatch(event_id.clone()), received_at)]).await,
                }
                Ok(Ingested { event_id, duplicate: false, challenge: None })
            }
            Acceptance::Duplicate(event_id) => {
                info!(source = %source.id, event = %event_id, "duplicate, not stored again");
                self.observer
                    .observe(&HubEvent::Duplicate { source: source.id.clone(), event: event_id.clone() });
                Ok(Ingested { event_id, duplicate: true, challenge: None })
            }
        }
    }

    /// Runs one job to completion and records its outcome. Errors are store errors only: the
    /// job stays queued and is retried by whoever feeds jobs.
    pub async fn run_job(&self, job: &Job) -> Result<JobOutcome, StoreError> {
        self.run_job_with(job, &RunOptions::default()).await
    }

    pub async fn run_job_with(&self, job: &Job, opts: &RunOptions) -> Result<JobOutcome, StoreError> {
        match job {
            Job::Dispatch(id) => self.dispatch(id, opts).await,
            Job::Attempt(id, d) => self.attempt(id, d, opts).await,
        }
    }

    /// Says what a recorded dispatch made (at acceptance or by a job) and hands its attempts to
    /// the queue.
    pub(super) async fn announce(&self, id: &EventId, source: &SourceId, made: Made) {
        self.observer.observe(&HubEvent::Dispatched { event: id.clone(), deliveries: made.fired });
        if let Some(e) = &made.error {
            self.dead(id, source, None, e);
        }
        for (route, reason) in &made.dead {
            self.dead(id, source, Some(route), reason);
        }
        self.enqueue(&made.jobs).await;
    }

    /// Records a dispatch that could make no deliveries, with why.
    async fn dispatch_failed(
        &self,
        id: &EventId,
        source: &SourceId,
        msg: String,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        if self.record_dispatch(id, Vec::new(), Some(msg.clone()), now).await? {
            self.dead(id, source, None, &msg);
        }
        Ok(())
    }

    async fn dispatch(&self, id: &EventId, opts: &RunOptions) -> Result<JobOutcome, StoreError> {
        let now = self.clock.now();
        let Some((ev, body)) = self.storage.event_with_body(id).await? else {
            warn!(event = %id, "dispatch of an unknown event dropped");
            self.record_dispatch(id, Vec::new(), Some("event not found".into()), now).await?;
            return Ok(JobOutcome::Done);
        };
        let mappings = self.mappings();
        let Some(source) = mappings.source(ev.source.as_str()) else {
            if opts.report_missing_mappings {
                return Ok(JobOutcome::MappingsMissing);
            }
            let msg = format!("source `{}` is not configured any more", ev.source);
            warn!(event = %id, "{msg}");
            self.dispatch_failed(id, &ev.source, msg, now).await?;
            return Ok(JobOutcome::Done);
        };
        let stored = match Verified::from_store(source, raw_request(&ev, body)) {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("body no longer parses for this source: {e}");
                self.dispatch_failed(id, &ev.source, msg, now).await?;
                return Ok(JobOutcome::Done);
            }
        };
        if !source.facts.is_empty() {
            return self.dispatch_facts(&ev, &stored, &mappings, now).await;
        }
        let deliveries = match stored.plan(&ev.id, &mut DeliveryId::generate) {
            Ok(plan) => plan.deliveries(now),
            Err(e) => {
                warn!(event = %id, error = %e, "dispatch over the per-event limits; the event is dead");
                self.dispatch_failed(id, &ev.source, e.0, now).await?;
                return Ok(JobOutcome::Done);
            }
        };
        let made = Made::of(id, &deliveries, None, now);
        if self.record_dispatch(id, deliveries, None, now).await? {
            info!(event = %id, fired = made.fired, "dispatched");
            self.announce(id, &ev.source, made).await;
        } else {
            info!(event = %id, "dispatched already; this run changed nothing");
        }
        Ok(JobOutcome::Done)
    }

    /// Records an attempt's outcome and, when it was recorded (not a second run), says what
    /// became of the delivery.
    async fn record_attempt(
        &self,
        id: &EventId,
        source: &SourceId,
        d: DeliveryRecord,
    ) -> Result<bool, StoreError> {
        let (route, status, attempts, next, reason) =
            (d.route.clone(), d.status, d.attempts, d.next_attempt_at, d.last_error.clone());
        let last_status = d.last_status;
        let elapsed_ms = d.last_attempt_at.map_or(0, |at| self.clock.now().0.saturating_sub(at.0));
        if !self.record_outcome(id, d).await? {
            return Ok(false);
        }
        match status {
            DeliveryStatus::Delivered => self.observer.observe(&HubEvent::Delivered {
                route,
                status: last_status.unwrap_or(0),
                attempts,
                elapsed_ms,
            }),
            DeliveryStatus::Dead => self.dead(id, source, Some(&route), reason.as_deref().unwrap_or("")),
            DeliveryStatus::Retrying | DeliveryStatus::Pending => {
                if let Some(next) = next {
                    self.observer.observe(&HubEvent::Retrying { route, status: last_status, next });
                }
            }
        }
        Ok(true)
    }

    async fn attempt(
        &self,
        id: &EventId,
        did: &DeliveryId,
        opts: &RunOptions,
    ) -> Result<JobOutcome, StoreError> {
        let Some((source_id, mut d)) = self.storage.delivery(id, did).await? else {
            return Ok(JobOutcome::Done);
        };
        if d.status.is_final() {
            // A stale job (e.g. after a crash between send and record): clear it.
            self.record_attempt(id, &source_id, d).await?;
            return Ok(JobOutcome::Done);
        }
        if let Some(due) = d.next_attempt_at
            && due.0 > self.clock.now().0.saturating_add(DUE_TOLERANCE_MS)
        {
            // A second job for a delivery already rescheduled (queues deliver at least once; a
            // sweep may resend a job whose message waits in a backlog). Sending now would
            // ignore the backoff; the store keeps the delivery due at its time.
            info!(event = %id, delivery = %d.id, due = due.0, "attempt not due yet; skipped");
            return Ok(JobOutcome::Done);
        }
        let mappings = self.mappings();
        let route = mappings.route(&source_id, &d.route);
        if route.is_none() && opts.report_missing_mappings {
            return Ok(JobOutcome::MappingsMissing);
        }
        let (Some(route), Some(mut request)) = (route, d.request.clone()) else {
            d.status = DeliveryStatus::Dead;
            d.next_attempt_at = None;
            d.last_error = Some(match d.request {
                None => d.last_error.clone().unwrap_or_else(|| "nothing to send".into()),
                Some(_) => {
                    format!("route `{}` of source `{}` is not configured any more", d.route, source_id)
                }
            });
            self.record_attempt(id, &source_id, d).await?;
            return Ok(JobOutcome::Done);
        };
        // The request was rendered for the route's destination as it was then. When the route
        // now points elsewhere, its current credentials (or secret URL) must not go to the old
        // destination, and the old request may not fit the new one: it is not sent. A replay
        // renders the event again for the new destination.
        let was = crate::mapping::url_origin(&request.url);
        let now_origin = route.origin();
        if !was.eq_ignore_ascii_case(now_origin) {
            let msg = format!(
                "route `{}` now sends to `{now_origin}`, not `{was}` as when this delivery was rendered; \
                 it was not sent (replay the event to deliver it to the new destination)",
                d.route
            );
            warn!(event = %id, delivery = %d.id, route = %d.route, "{msg}");
            d.status = DeliveryStatus::Dead;
            d.next_attempt_at = None;
            d.last_error = Some(msg);
            self.record_attempt(id, &source_id, d).await?;
            return Ok(JobOutcome::Done);
        }
        // Credentials (auth, a secret URL) are added here, never stored with the request.
        if let Some(auth) = &route.auth {
            request.headers.push(auth.header());
        }
        request.url = route.send_url(&request.url);
        let started = self.clock.now();
        let outcome = self
            .forwarder
            .send(&request, SendPolicy { timeout: route.retry.timeout, allow_net: &route.allow_net })
            .await;
        let now = self.clock.now();
        d.attempts += 1;
        d.last_attempt_at = Some(started);
        let result = match classify(&outcome) {
            Verdict::Delivered { status } => {
                d.status = DeliveryStatus::Delivered;
                d.last_status = Some(status);
                d.last_error = None;
                d.next_attempt_at = None;
                info!(event = %id, delivery = %d.id, route = %d.route, status, attempts = d.attempts, "delivered");
                JobOutcome::Done
            }
            Verdict::Retryable { status, reason, retry_after } => {
                d.last_status = status;
                let next = if opts.last_chance {
                    None
                } else {
                    route.retry.next_attempt(d.attempts, d.created_at, now, retry_after, jitter(&d))
                };
                let result = match next {
                    Some(at) => {
                        d.status = DeliveryStatus::Retrying;
                        d.next_attempt_at = Some(at);
                        d.last_error = Some(reason);
                        JobOutcome::RetryAt(at)
                    }
                    None => {
                        d.status = DeliveryStatus::Dead;
                        d.next_attempt_at = None;
                        let mut msg = format!("{reason} (gave up after {} attempts", d.attempts);
                        if let Some(note) = &opts.dead_letter_note {
                            msg.push_str("; ");
                            msg.push_str(note);
                        }
                        msg.push(')');
                        d.last_error = Some(msg);
                        JobOutcome::Exhausted
                    }
                };
                warn!(event = %id, delivery = %d.id, route = %d.route, attempts = d.attempts,
                      status = ?d.status, error = d.last_error.as_deref().unwrap_or(""), "attempt failed");
                result
            }
            Verdict::Permanent { status, reason } => {
                d.status = DeliveryStatus::Dead;
                d.last_status = status;
                d.next_attempt_at = None;
                d.last_error = Some(reason);
                warn!(event = %id, delivery = %d.id, route = %d.route, error = d.last_error.as_deref().unwrap_or(""),
                      "permanent failure, dead-lettered");
                JobOutcome::Done
            }
        };
        if self.record_attempt(id, &source_id, d).await? { Ok(result) } else { Ok(JobOutcome::Done) }
    }
}

/// What a dispatch made, taken before its deliveries go to the store: said and queued once it
/// is recorded.
pub(super) struct Made {
    fired: usize,
    error: Option<String>,
    /// Routes of the deliveries dead from the start (rendering failed), with why.
    dead: Vec<(RouteId, String)>,
    /// An attempt for each open delivery, at its time.
    jobs: Vec<(Job, UnixMillis)>,
}

impl Made {
    pub(super) fn of(
        id: &EventId,
        deliveries: &[DeliveryRecord],
        error: Option<String>,
        at: UnixMillis,
    ) -> Self {
        Self {
            fired: deliveries.len(),
            error,
            dead: deliveries
                .iter()
                .filter(|d| d.status == DeliveryStatus::Dead)
                .map(|d| (d.route.clone(), d.last_error.clone().unwrap_or_default()))
                .collect(),
            jobs: deliveries
                .iter()
                .filter(|d| !d.status.is_final())
                .map(|d| (Job::Attempt(id.clone(), d.id.clone()), d.next_attempt_at.unwrap_or(at)))
                .collect(),
        }
    }
}

/// Rebuilds the request as received from its stored record.
pub fn raw_request(ev: &EventRecord, body: Bytes) -> RawRequest {
    RawRequest {
        method: ev.method.clone(),
        path: ev.path.clone(),
        query: ev.query.clone(),
        headers: ev.headers.clone(),
        body,
        received_at: ev.received_at,
        remote_addr: ev.remote_addr.clone(),
    }
}

/// A jitter input in [0, 1) that differs between deliveries and attempts (decorrelating retries
/// is all jitter is for) while keeping the core free of a random source.
fn jitter(d: &DeliveryRecord) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    d.id.hash(&mut h);
    d.attempts.hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
