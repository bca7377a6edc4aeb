//! The use cases of [`Hub`] on the in-memory adapters: ingest, duplicates, dispatch, every
//! attempt outcome, replay, and jobs that run twice, with no database, network or real clock.

use hmac::{Hmac, KeyInit, Mac};
use hub_core::error::ErrorCode;
use hub_core::event::{DeliveryStatus, EventStatus};
use hub_core::ids::EventId;
use hub_core::mapping::MappingSet;
use hub_core::pipeline::{Hub, JobOutcome, RunOptions};
use hub_core::ports::log::EventLog;
use hub_core::ports::{Job, SendOutcome};
use hub_core::request::RawRequest;
use hub_core::secret::MapSecrets;
use hub_core::testing::{ManualClock, MemoryStorage, RecordingQueue, ScriptedForwarder};
use hub_core::time::{Clock, UnixMillis};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "s3cr3t-for-tests";
const T0: UnixMillis = UnixMillis(1_750_000_000_000);

/// A signed lead source with two routes (one filtered by `when`) and fast retries.
const LEADS: &str = r#"source:
  id: leads
  verify:
    hmac: {algorithm: sha256, header: X-Signature, prefix: "sha256=", secret: env:LEAD_SECRET}
  dedup: {path: $.body.id}
routes:
  - id: crm
    map:
      email: "{{normalize_email body.email}}"
      lead: "{{body.id}}"
    to:
      url: https://crm.example/contacts
      auth: {bearer: env:CRM_TOKEN}
    retry: {initial_delay: 10s, max_delay: 10s, jitter: false, max_attempts: 3, timeout: 2s}
  - id: vip
    when: {path: $.body.vip, eq: true}
    map: {lead: "{{body.id}}"}
    to: {url: "https://vip.example/{{body.id}}"}
"#;

struct World {
    hub: Hub,
    store: Arc<MemoryStorage>,
    queue: Arc<RecordingQueue>,
    dest: Arc<ScriptedForwarder>,
    clock: Arc<ManualClock>,
}

fn compile(files: &[(&str, &str)]) -> Arc<MappingSet> {
    let secrets = MapSecrets(
        [("LEAD_SECRET", SECRET), ("CRM_TOKEN", "crm-token")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let files: Vec<(String, String)> = files.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    Arc::new(MappingSet::compile(&files, &secrets).expect("mappings compile"))
}

fn world() -> World {
    let store = Arc::new(MemoryStorage::new());
    let queue = Arc::new(RecordingQueue::default());
    let dest = Arc::new(ScriptedForwarder::default());
    let clock = Arc::new(ManualClock::at(T0));
    let hub = Hub::new(
        compile(&[("leads.yaml", LEADS)]),
        store.clone(),
        dest.clone(),
        clock.clone(),
        queue.clone(),
    );
    World { hub, store, queue, dest, clock }
}

fn signed(body: &str, at: UnixMillis) -> RawRequest {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    RawRequest {
        method: "POST".into(),
        path: "/hooks/leads".into(),
        query: None,
        headers: [("content-type", "application/json"), ("x-signature", sig.as_str())].into_iter().collect(),
        body: bytes::Bytes::from(body.to_string()),
        received_at: at,
        remote_addr: Some("203.0.113.9".into()),
    }
}

fn lead(id: &str, vip: bool) -> String {
    format!(r#"{{"id": "{id}", "email": " Ann@Example.COM ", "vip": {vip}}}"#)
}

impl World {
    async fn ingest(&self, body: &str) -> EventId {
        let got = self.hub.ingest("leads", signed(body, self.clock.now())).await.expect("accepted");
        assert!(!got.duplicate);
        got.event_id
    }

    /// Runs every job due now, the way a worker does, until none is due; returns their outcomes.
    async fn run_due(&self) -> Vec<(Job, JobOutcome)> {
        let mut ran = Vec::new();
        loop {
            let jobs = self.hub.due_jobs(100).await.expect("due");
            if jobs.is_empty() {
                return ran;
            }
            for job in jobs {
                let outcome = self.hub.run_job(&job).await.expect("job runs");
                ran.push((job, outcome));
            }
        }
    }

    async fn status(&self, id: &EventId) -> EventStatus {
        self.store.event(id).await.expect("read").expect("stored").status()
    }
}

#[tokio::test]
async fn an_accepted_webhook_is_stored_with_its_deliveries_and_their_attempts_queued() {
    let w = world();
    let id = w.ingest(&lead("L-1", false)).await;
    let ev = w.store.event(&id).await.expect("read").expect("stored");
    assert_eq!((ev.source.as_str(), ev.status(), ev.received_at), ("leads", EventStatus::Pending, T0));
    assert_eq!(w.store.body(&id).await.expect("read").as_deref(), Some(lead("L-1", false).as_bytes()));
    // Routes were evaluated at acceptance, in the same commit: no dispatch job.
    assert_eq!((ev.dispatches, ev.deliveries.len()), (1, 1));
    let attempt = Job::Attempt(id.clone(), ev.deliveries[0].id.clone());
    assert_eq!(w.queue.take(), vec![(attempt.clone(), T0)], "the fast path was told");
    assert_eq!(w.store.queued(), vec![(attempt, T0)], "and the store has it due");
}

#[tokio::test]
async fn a_source_that_fans_out_is_dispatched_by_a_job() {
    let fan = LEADS.replace("  - id: vip\n", "  - id: vip\n    for_each: $.body.tags[*]\n");
    let w = world();
    w.hub.set_mappings(compile(&[("leads.yaml", &fan)]));
    let id = w.ingest(r#"{"id": "L-9", "email": "a@b.c", "vip": true, "tags": ["x", "y"]}"#).await;
    assert_eq!(w.status(&id).await, EventStatus::Received);
    assert_eq!(w.queue.take(), vec![(Job::Dispatch(id.clone()), T0)]);
    w.run_due().await;
    let ev = w.store.event(&id).await.expect("read").expect("stored");
    assert_eq!((ev.deliveries.len(), ev.status()), (3, EventStatus::Delivered));
}

#[tokio::test]
async fn a_duplicate_is_answered_with_the_first_event_and_stores_nothing() {
    let w = world();
    let first = w.ingest(&lead("L-1", false)).await;
    w.queue.take();
    w.clock.advance(Duration::from_secs(5));
    let again = w.hub.ingest("leads", signed(&lead("L-1", false), w.clock.now())).await.expect("answered");
    assert!(again.duplicate);
    assert_eq!(again.event_id, first);
    assert!(w.queue.take().is_empty(), "nothing queued for a duplicate");
    let all = w.store.page(&Default::default()).await.expect("list").events;
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn requests_that_fail_verification_or_name_no_source_are_refused_with_stable_codes() {
    let w = world();
    let mut forged = signed(&lead("L-1", false), T0);
    forged.body = bytes::Bytes::from(lead("L-2", false));
    let e = w.hub.ingest("leads", forged).await.expect_err("forged");
    assert_eq!(e.public().code, ErrorCode::SignatureInvalid);
    let mut unsigned = signed(&lead("L-1", false), T0);
    unsigned.headers = [("content-type", "application/json")].into_iter().collect();
    assert_eq!(
        w.hub.ingest("leads", unsigned).await.expect_err("unsigned").public().code,
        ErrorCode::SignatureMissing
    );
    let e = w.hub.ingest("nope", signed("{}", T0)).await.expect_err("unknown");
    assert_eq!(e.public().code, ErrorCode::UnknownSource);
    let e = w.hub.ingest("leads", signed("{not json", T0)).await.expect_err("bad body");
    assert_eq!(e.public().code, ErrorCode::InvalidBody);
    assert!(w.store.page(&Default::default()).await.expect("list").events.is_empty(), "nothing stored");
}

#[tokio::test]
async fn a_store_outage_is_a_503_and_nothing_is_acknowledged() {
    let w = world();
    w.store.fail_writes(Some("disk full"));
    let e = w.hub.ingest("leads", signed(&lead("L-1", false), T0)).await.expect_err("refused");
    assert_eq!(e.public().code, ErrorCode::StoreUnavailable);
    assert!(!e.public().message.contains("disk"), "store details stay in the log");
    assert!(w.queue.take().is_empty());
    w.store.fail_writes(None);
    w.ingest(&lead("L-1", false)).await;
}

#[tokio::test]
async fn a_lost_enqueue_still_runs_from_the_store() {
    let w = world();
    w.queue.fail(Some("queue down"));
    let id = w.ingest(&lead("L-1", false)).await;
    let did = w.store.event(&id).await.expect("read").expect("stored").deliveries[0].id.clone();
    assert_eq!(w.store.queued(), vec![(Job::Attempt(id.clone(), did), T0)]);
    w.run_due().await;
    assert_eq!(w.status(&id).await, EventStatus::Delivered);
}

#[tokio::test]
async fn the_routes_that_fire_are_rendered_and_the_attempt_adds_credentials() {
    let w = world();
    let id = w.ingest(&lead("L-1", true)).await;
    let ev = w.store.event(&id).await.expect("read").expect("stored");
    assert_eq!(ev.status(), EventStatus::Pending);
    let routes: Vec<&str> = ev.current_deliveries().iter().map(|d| d.route.as_str()).collect();
    assert_eq!(routes, ["crm", "vip"]);
    let crm = &ev.current_deliveries()[0];
    let stored = crm.request.as_ref().expect("rendered");
    assert!(stored.headers.iter().all(|(k, _)| k != "authorization"), "credentials are never stored");
    let queued: Vec<Job> = w.queue.take().into_iter().map(|(j, _)| j).collect();
    assert_eq!(queued.len(), 2, "one attempt per delivery: {queued:?}");
    // A dispatch job for it (a duplicate message, a sweep) changes nothing.
    assert_eq!(w.hub.run_job(&Job::Dispatch(id.clone())).await.expect("dispatch"), JobOutcome::Done);
    assert_eq!(w.store.event(&id).await.expect("read").expect("stored").dispatches, 1);

    w.run_due().await;
    let sent = w.dest.sent();
    assert_eq!(sent.len(), 2);
    let crm = sent.iter().find(|s| s.request.url == "https://crm.example/contacts").expect("crm sent");
    let body: serde_json::Value = serde_json::from_slice(&crm.request.body).expect("json");
    assert_eq!(body, serde_json::json!({"email": "ann@example.com", "lead": "L-1"}));
    assert!(
        crm.request
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("authorization") && v == "Bearer crm-token")
    );
    assert_eq!(crm.timeout, Duration::from_secs(2));
    assert!(sent.iter().any(|s| s.request.url == "https://vip.example/L-1"));
    assert_eq!(w.status(&id).await, EventStatus::Delivered);
}

#[tokio::test]
async fn an_event_no_route_fires_for_is_filtered() {
    let w = world();
    let set = LEADS.replace("  - id: crm\n", "  - id: crm\n    when: {path: $.body.vip, eq: true}\n");
    w.hub.set_mappings(compile(&[("leads.yaml", &set)]));
    let id = w.ingest(&lead("L-1", false)).await;
    w.run_due().await;
    assert_eq!(w.status(&id).await, EventStatus::Filtered);
    assert!(w.dest.sent().is_empty());
}

#[tokio::test]
async fn a_failed_attempt_is_retried_after_its_backoff_then_delivered() {
    let w = world();
    w.dest.script([ScriptedForwarder::status(503)]);
    let id = w.ingest(&lead("L-1", false)).await;
    let ran = w.run_due().await;
    let retry_at = T0.plus(Duration::from_secs(10));
    assert!(ran.iter().any(|(_, o)| *o == JobOutcome::RetryAt(retry_at)), "{ran:?}");
    let ev = w.store.event(&id).await.expect("read").expect("stored");
    let d = &ev.current_deliveries()[0];
    assert_eq!((d.status, d.attempts, d.last_status), (DeliveryStatus::Retrying, 1, Some(503)));
    assert_eq!(d.next_attempt_at, Some(retry_at));
    assert_eq!(ev.status(), EventStatus::Retrying);

    w.clock.advance(Duration::from_secs(9));
    assert!(w.run_due().await.is_empty(), "not due before its backoff");
    w.clock.advance(Duration::from_secs(1));
    w.run_due().await;
    let d = w.store.event(&id).await.expect("read").expect("stored").current_deliveries()[0].clone();
    assert_eq!(
        (d.status, d.attempts, d.last_status, d.last_error),
        (DeliveryStatus::Delivered, 2, Some(200), None)
    );
    assert_eq!(w.dest.sent().len(), 2);
}

#[tokio::test]
async fn retry_after_from_the_destination_sets_the_next_attempt() {
    let w = world();
    w.dest.script([SendOutcome::Response {
        status: 429,
        retry_after: Some(Duration::from_secs(60)),
        body_snippet: "slow down".into(),
    }]);
    let id = w.ingest(&lead("L-1", false)).await;
    w.run_due().await;
    let d = w.store.event(&id).await.expect("read").expect("stored").current_deliveries()[0].clone();
    assert_eq!(d.next_attempt_at, Some(T0.plus(Duration::from_secs(60))));
    assert_eq!(d.last_error.as_deref(), Some("HTTP 429: slow down"));
}

#[tokio::test]
async fn retries_run_out_and_the_delivery_is_dead() {
    let w = world();
    w.dest.answer_by_default(ScriptedForwarder::unreachable());
    let id = w.ingest(&lead("L-1", false)).await;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.extend(w.run_due().await.into_iter().map(|(_, o)| o));
        w.clock.advance(Duration::from_secs(10));
    }
    assert_eq!(outcomes.last(), Some(&JobOutcome::Exhausted), "{outcomes:?}");
    let d = w.store.event(&id).await.expect("read").expect("stored").current_deliveries()[0].clone();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Dead, 3));
    assert!(d.last_error.as_deref().is_some_and(|e| e.contains("gave up after 3 attempts")), "{d:?}");
    assert_eq!(w.status(&id).await, EventStatus::Dead);
    assert!(w.store.queued().is_empty(), "a dead delivery leaves no job");
}

#[tokio::test]
async fn a_last_chance_attempt_is_dead_at_once_with_the_shells_note() {
    let w = world();
    w.dest.script([ScriptedForwarder::status(500)]);
    let id = w.ingest(&lead("L-1", false)).await;
    w.hub.run_job(&Job::Dispatch(id.clone())).await.expect("dispatch");
    let did = w.store.event(&id).await.expect("read").expect("stored").current_deliveries()[0].id.clone();
    let opts = RunOptions {
        last_chance: true,
        dead_letter_note: Some("moved to the dead-letter queue".into()),
        ..RunOptions::default()
    };
    let outcome = w.hub.run_job_with(&Job::Attempt(id.clone(), did), &opts).await.expect("attempt");
    assert_eq!(outcome, JobOutcome::Exhausted);
    let d = w.store.event(&id).await.expect("read").expect("stored").current_deliveries()[0].clone();
    assert!(d.last_error.as_deref().is_some_and(|e| e.contains("moved to the dead-letter queue")), "{d:?}");
}

#[tokio::test]
async fn a_client_error_is_permanent_and_not_retried() {
    let w = world();
    w.dest.script([ScriptedForwarder::status(422)]);
    let id = w.ingest(&lead("L-1", false)).await;
    w.run_due().await;
    w.clock.advance(Duration::from_secs(3600));
    assert!(w.run_due().await.is_empty());
    let d = w.store.event(&id).await.expect("read").expect("stored").current_deliveries()[0].clone();
    assert_eq!((d.status, d.attempts, d.last_status), (DeliveryStatus::Dead, 1, Some(422)));
    assert_eq!(w.dest.sent().len(), 1);
}

#[tokio::test]
async fn a_job_run_twice_sends_once() {
    let w = world();
    let id = w.ingest(&lead("L-1", false)).await;
    let dispatch = Job::Dispatch(id.clone());
    w.hub.run_job(&dispatch).await.expect("dispatch");
    // The queue hands the dispatch over again: no second set of deliveries.
    assert_eq!(w.hub.run_job(&dispatch).await.expect("again"), JobOutcome::Done);
    let ev = w.store.event(&id).await.expect("read").expect("stored");
    assert_eq!((ev.dispatches, ev.deliveries.len()), (1, 1));
    let attempt = Job::Attempt(id.clone(), ev.deliveries[0].id.clone());
    w.hub.run_job(&attempt).await.expect("attempt");
    assert_eq!(w.hub.run_job(&attempt).await.expect("again"), JobOutcome::Done);
    assert_eq!(w.dest.sent().len(), 1, "a delivery already final is not sent again");
}

#[tokio::test]
async fn an_attempt_job_that_arrives_early_is_skipped_and_stays_due() {
    let w = world();
    w.dest.script([ScriptedForwarder::status(503)]);
    let id = w.ingest(&lead("L-1", false)).await;
    w.run_due().await;
    let ev = w.store.event(&id).await.expect("read").expect("stored");
    let attempt = Job::Attempt(id.clone(), ev.deliveries[0].id.clone());
    // A duplicate message of the retried job, long before its backoff ends.
    assert_eq!(w.hub.run_job(&attempt).await.expect("early"), JobOutcome::Done);
    assert_eq!(w.dest.sent().len(), 1);
    assert_eq!(w.store.queued(), vec![(attempt, T0.plus(Duration::from_secs(10)))]);
}

#[tokio::test]
async fn replay_renders_the_event_again_and_keeps_the_history() {
    let w = world();
    w.dest.script([ScriptedForwarder::status(422)]);
    let id = w.ingest(&lead("L-1", false)).await;
    w.run_due().await;
    assert_eq!(w.status(&id).await, EventStatus::Dead);
    w.queue.take();
    w.clock.advance(Duration::from_secs(60));
    assert!(w.hub.replay(&id).await.expect("replay"));
    assert_eq!(w.queue.take(), vec![(Job::Dispatch(id.clone()), w.clock.now())]);
    w.run_due().await;
    let ev = w.store.event(&id).await.expect("read").expect("stored");
    assert_eq!((ev.dispatches, ev.deliveries.len(), ev.status()), (2, 2, EventStatus::Delivered));
    assert_eq!(ev.deliveries[0].status, DeliveryStatus::Dead, "the first run is kept as history");
    assert!(!w.hub.replay(&EventId::new("evt_missing")).await.expect("replay"), "unknown event");
}

#[tokio::test]
async fn a_pending_delivery_whose_route_moved_is_not_sent_to_the_old_host() {
    let w = world();
    let id = w.ingest(&lead("L-1", false)).await;
    w.hub.run_job(&Job::Dispatch(id.clone())).await.expect("dispatch");
    w.hub.set_mappings(compile(&[("leads.yaml", &LEADS.replace("crm.example", "crm2.example"))]));
    w.run_due().await;
    assert!(w.dest.sent().is_empty(), "neither the old host nor the old token is used");
    let d = w.store.event(&id).await.expect("read").expect("stored").current_deliveries()[0].clone();
    assert_eq!(d.status, DeliveryStatus::Dead);
    assert!(d.last_error.as_deref().is_some_and(|e| e.contains("replay")), "{d:?}");
    // The replay renders it for the new destination.
    w.hub.replay(&id).await.expect("replay");
    w.run_due().await;
    assert_eq!(w.dest.sent()[0].request.url, "https://crm2.example/contacts");
}

#[tokio::test]
async fn a_source_removed_before_its_delivery_or_replay_is_recorded_dead_with_the_reason() {
    let w = world();
    let id = w.ingest(&lead("L-1", false)).await;
    w.hub.set_mappings(compile(&[(
        "other.yaml",
        "source:\n  id: other\n  description: test\n  verify: none\nroutes:\n  - id: r\n    map: {a: 1}\n    to: {url: https://x.example/}\n",
    )]));
    w.run_due().await;
    let ev = w.store.event(&id).await.expect("read").expect("stored");
    assert_eq!(ev.status(), EventStatus::Dead);
    let d = &ev.current_deliveries()[0];
    assert!(d.last_error.as_deref().is_some_and(|e| e.contains("not configured")), "{ev:?}");
    assert!(w.dest.sent().is_empty());
    // A replay cannot dispatch it either: the dispatch is dead with the reason.
    w.hub.replay(&id).await.expect("replay");
    w.run_due().await;
    let ev = w.store.event(&id).await.expect("read").expect("stored");
    assert_eq!(ev.status(), EventStatus::Dead);
    assert!(ev.dispatch_error.as_deref().is_some_and(|e| e.contains("not configured")), "{ev:?}");
}

#[tokio::test]
async fn a_store_failure_while_recording_an_attempt_is_an_error_for_the_shell() {
    let w = world();
    let id = w.ingest(&lead("L-1", false)).await;
    w.hub.run_job(&Job::Dispatch(id.clone())).await.expect("dispatch");
    let did = w.store.event(&id).await.expect("read").expect("stored").deliveries[0].id.clone();
    w.store.fail_writes(Some("disk full"));
    let job = Job::Attempt(id.clone(), did);
    assert!(w.hub.run_job(&job).await.is_err(), "the job stays queued for the shell to retry");
    w.store.fail_writes(None);
    assert_eq!(w.store.queued().len(), 1);
}

#[tokio::test]
async fn the_observer_hears_what_became_of_each_webhook() {
    use hub_core::ports::observe::HubEvent;
    let w = world();
    let seen = Arc::new(hub_core::testing::RecordingObserver::default());
    let hub = Hub::new(
        compile(&[("leads.yaml", LEADS)]),
        w.store.clone(),
        w.dest.clone(),
        w.clock.clone(),
        w.queue.clone(),
    )
    .with_observer(seen.clone());
    let w = World { hub, ..w };
    w.dest.script([ScriptedForwarder::status(200), ScriptedForwarder::status(410)]);
    let id = w.ingest(&lead("L-1", true)).await;
    w.hub.ingest("leads", signed(&lead("L-1", true), w.clock.now())).await.expect("duplicate");
    w.run_due().await;
    let events = seen.take();
    assert!(
        events.contains(&HubEvent::Accepted {
            source: hub_core::ids::SourceId::new("leads"),
            event: id.clone()
        }),
        "{events:?}"
    );
    assert!(
        events.contains(&HubEvent::Duplicate {
            source: hub_core::ids::SourceId::new("leads"),
            event: id.clone()
        }),
        "{events:?}"
    );
    assert!(events.contains(&HubEvent::Dispatched { event: id.clone(), deliveries: 2 }), "{events:?}");
    let delivered =
        events.iter().filter(|e| matches!(e, HubEvent::Delivered { status: 200, attempts: 1, .. })).count();
    let dead: Vec<&HubEvent> = events.iter().filter(|e| matches!(e, HubEvent::Dead { .. })).collect();
    assert_eq!(delivered, 1, "{events:?}");
    assert_eq!(dead.len(), 1, "{events:?}");
    let HubEvent::Dead { event, source, route, reason } = dead[0] else { unreachable!() };
    assert_eq!((event, source.as_str(), route.is_some()), (&id, "leads", true));
    assert!(reason.contains("410"), "{reason}");

    // A dispatch that cannot run is dead without a route.
    let gone = w.ingest(&lead("L-2", false)).await;
    w.hub.set_mappings(compile(&[(
        "other.yaml",
        "source:\n  id: other\n  description: test\n  verify: none\nroutes:\n  - id: r\n    map: {a: 1}\n    to: {url: https://x.example/}\n",
    )]));
    w.run_due().await;
    w.hub.replay(&gone).await.expect("replay");
    w.run_due().await;
    let events = seen.take();
    assert!(
        events.iter().any(|e| matches!(e, HubEvent::Dead { event, route: None, .. } if *event == gone)),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_shell_whose_mappings_may_lag_hears_of_a_missing_route_before_anything_is_recorded() {
    let w = world();
    let id = w.ingest(&lead("L-1", false)).await;
    let did = w.store.event(&id).await.expect("read").expect("stored").deliveries[0].id.clone();
    w.hub.set_mappings(compile(&[("leads.yaml", &LEADS.replace("id: crm", "id: crm-v2"))]));
    let job = Job::Attempt(id.clone(), did);
    let opts = RunOptions { report_missing_mappings: true, ..RunOptions::default() };
    assert_eq!(w.hub.run_job_with(&job, &opts).await.expect("run"), JobOutcome::MappingsMissing);
    assert_eq!(w.status(&id).await, EventStatus::Pending, "nothing recorded");
    assert!(w.dest.sent().is_empty());
    // Still missing once the newest set is loaded: now it is recorded dead.
    assert_eq!(w.hub.run_job(&job).await.expect("run"), JobOutcome::Done);
    assert_eq!(w.status(&id).await, EventStatus::Dead);
}

fn store_failure(reason: &str, at: UnixMillis, retry_in_ms: u64) -> hub_core::ports::JobFailure {
    hub_core::ports::JobFailure {
        reason: reason.into(),
        at,
        retry_at: UnixMillis(at.0 + retry_in_ms),
        max_failures: 3,
    }
}

#[tokio::test]
async fn a_dispatch_failing_on_the_store_backs_off_then_is_recorded_dead_and_a_replay_counts_afresh() {
    use hub_core::ports::JobFailed;
    let w = world();
    let id = w.ingest(&lead("L-1", false)).await;
    w.run_due().await;
    assert!(w.hub.replay(&id).await.expect("replay"));
    let job = Job::Dispatch(id.clone());
    let r = w.hub.job_failed(&job, &store_failure("boom", w.clock.now(), 4_000)).await.expect("recorded");
    assert_eq!(r, JobFailed::Deferred { failures: 1 });
    assert!(w.hub.due_jobs(10).await.expect("due").is_empty(), "backed off");
    w.clock.advance(Duration::from_secs(4));
    assert_eq!(w.hub.due_jobs(10).await.expect("due"), vec![job.clone()]);
    let r = w.hub.job_failed(&job, &store_failure("boom", w.clock.now(), 4_000)).await.expect("recorded");
    assert_eq!(r, JobFailed::Deferred { failures: 2 });
    let r =
        w.hub.job_failed(&job, &store_failure("boom again", w.clock.now(), 4_000)).await.expect("recorded");
    assert_eq!(r, JobFailed::Dead { failures: 3 });
    w.clock.advance(Duration::from_secs(3_600));
    assert!(w.hub.due_jobs(10).await.expect("due").is_empty(), "given up");
    let ev = w.store.event(&id).await.expect("read").expect("stored");
    assert!(
        ev.dispatch_error.as_deref().is_some_and(|e| e.contains("boom again") && e.contains('3')),
        "{ev:?}"
    );
    let late = w.hub.job_failed(&job, &store_failure("late", w.clock.now(), 4_000)).await.expect("recorded");
    assert_eq!(late, JobFailed::Gone);
    assert!(w.hub.replay(&id).await.expect("replay"));
    let r = w.hub.job_failed(&job, &store_failure("x", w.clock.now(), 1_000)).await.expect("recorded");
    assert_eq!(r, JobFailed::Deferred { failures: 1 }, "a replay starts a fresh count");
}

#[tokio::test]
async fn an_attempt_failing_on_the_store_backs_off_and_only_its_delivery_is_recorded_dead() {
    use hub_core::ports::JobFailed;
    let w = world();
    let id = w.ingest(&lead("L-1", true)).await;
    let ev = w.store.event(&id).await.expect("read").expect("stored");
    let (crm, vip) = (ev.deliveries[0].id.clone(), ev.deliveries[1].id.clone());
    let job = Job::Attempt(id.clone(), crm.clone());
    let r = w.hub.job_failed(&job, &store_failure("disk", w.clock.now(), 3_000)).await.expect("recorded");
    assert_eq!(r, JobFailed::Deferred { failures: 1 });
    assert_eq!(
        w.hub.due_jobs(10).await.expect("due"),
        vec![Job::Attempt(id.clone(), vip.clone())],
        "the failing job no longer heads the queue"
    );
    // A recorded outcome resets the count.
    w.clock.advance(Duration::from_secs(3));
    w.dest.script([ScriptedForwarder::status(503)]);
    assert!(matches!(w.hub.run_job(&job).await.expect("runs"), JobOutcome::RetryAt(_)));
    for n in 1..3 {
        let r = w.hub.job_failed(&job, &store_failure("disk", w.clock.now(), 1_000)).await.expect("recorded");
        assert_eq!(r, JobFailed::Deferred { failures: n });
    }
    let r = w.hub.job_failed(&job, &store_failure("disk", w.clock.now(), 1_000)).await.expect("recorded");
    assert_eq!(r, JobFailed::Dead { failures: 3 });
    let ev = w.store.event(&id).await.expect("read").expect("stored");
    let got = ev.deliveries.iter().find(|d| d.id == crm).expect("crm delivery");
    assert_eq!((got.status, got.next_attempt_at), (DeliveryStatus::Dead, None));
    assert!(got.last_error.as_deref().is_some_and(|e| e.contains("disk")), "{got:?}");
    assert_eq!(got.attempts, 1, "no attempt is counted for a run that never sent");
    let vip_now = ev.deliveries.iter().find(|d| d.id == vip).expect("vip delivery");
    assert_eq!(vip_now.status, DeliveryStatus::Pending, "the other delivery is untouched");
    assert_eq!(
        w.store.queued().iter().map(|(j, _)| j.clone()).collect::<Vec<_>>(),
        vec![Job::Attempt(id, vip)]
    );
}

/// An entity file and a source stating facts about it: a lead score whose threshold calls
/// sales, and a deal-stage-like field whose change is announced.
const CONTACT: &str = r#"entity: contact
fields:
  plan: {from: lead.scored, value: $.fact.data.plan, version: $.fact.data.version}
scores:
  lead_score:
    rules:
      - {on: lead.scored, points: 10}
routes:
  - id: hot
    on: {crosses: lead_score, above: 20}
    map: {email: $.entity.contact.id, score: $.trigger.value}
    to: {url: "https://sales.example/hot"}
  - id: plan-changed
    on: {changes: plan, to: pro}
    map: {email: $.entity.contact.id, from: $.trigger.from}
    to: {url: "https://billing.example/plan"}
"#;

fn stateful_world() -> World {
    let leads = LEADS.replace(
        "  dedup: {path: $.body.id}\n",
        "  dedup: {path: $.body.id}\n  facts:\n    - {entity: contact, key: '{{normalize_email body.email}}', name: lead.scored, data: {plan: $.body.plan, version: $.body.n}}\n",
    );
    let mut w = world();
    w.hub = Hub::new(
        compile(&[("leads.yaml", &leads), ("contact.yaml", CONTACT)]),
        w.store.clone(),
        w.dest.clone(),
        w.clock.clone(),
        w.queue.clone(),
    );
    w
}

fn scored(id: &str, plan: &str, n: u32) -> String {
    format!(r#"{{"id": "{id}", "email": " Ann@Example.COM ", "vip": false, "plan": "{plan}", "n": {n}}}"#)
}

#[tokio::test]
async fn facts_fire_entity_routes_once_through_dispatch_and_attempt() {
    let w = stateful_world();
    let first = w.ingest(&scored("L-1", "free", 1)).await;
    // A source that states facts is dispatched by a job (its state is read there).
    assert_eq!(w.queue.take(), vec![(Job::Dispatch(first.clone()), T0)]);
    w.run_due().await;
    assert_eq!(w.dest.sent().len(), 1, "only the source's own route: 10 points, plan set");
    w.ingest(&scored("L-2", "pro", 2)).await;
    w.ingest(&scored("L-3", "pro", 3)).await;
    w.run_due().await;
    let sent = w.dest.sent();
    let to = |host: &str| sent.iter().filter(|s| s.request.url.contains(host)).collect::<Vec<_>>();
    assert_eq!(to("crm.example").len(), 3, "one CRM call per webhook");
    let hot = to("sales.example");
    assert_eq!(hot.len(), 1, "the score reached 20 once (30 after the third)");
    let body: serde_json::Value = serde_json::from_slice(&hot[0].request.body).expect("json");
    assert_eq!(body, serde_json::json!({"email": "ann@example.com", "score": 20}));
    let key = hot[0].request.headers.iter().find(|(k, _)| k == "idempotency-key").map(|(_, v)| v.clone());
    assert!(
        key.as_deref().is_some_and(|k| k.starts_with("fire_")),
        "the fire id is the Idempotency-Key: {key:?}"
    );
    let plan = to("billing.example");
    assert_eq!(plan.len(), 1, "free → pro once; pro → pro is no change");
    let body: serde_json::Value = serde_json::from_slice(&plan[0].request.body).expect("json");
    assert_eq!(body["from"], "free");
}

#[tokio::test]
async fn a_replayed_event_applies_its_facts_once() {
    let w = stateful_world();
    let a = w.ingest(&scored("L-1", "free", 1)).await;
    w.ingest(&scored("L-2", "free", 2)).await;
    w.run_due().await;
    assert_eq!(w.dest.sent().iter().filter(|s| s.request.url.contains("sales.example")).count(), 1);
    assert!(w.hub.replay(&a).await.expect("replay"));
    w.run_due().await;
    let sent = w.dest.sent();
    assert_eq!(
        sent.iter().filter(|s| s.request.url.contains("crm.example")).count(),
        3,
        "the replay re-sends the source route"
    );
    assert_eq!(
        sent.iter().filter(|s| s.request.url.contains("sales.example")).count(),
        1,
        "but adds no points and fires nothing"
    );
}

#[tokio::test]
async fn a_late_older_update_changes_no_field_and_fires_nothing() {
    let w = stateful_world();
    w.ingest(&scored("L-1", "free", 1)).await;
    w.ingest(&scored("L-3", "pro", 3)).await;
    w.run_due().await;
    // Version 2 arrives last: older than the stored version 3, it is ignored.
    w.ingest(&scored("L-2", "free", 2)).await;
    w.run_due().await;
    let plan: Vec<_> =
        w.dest.sent().into_iter().filter(|s| s.request.url.contains("billing.example")).collect();
    assert_eq!(plan.len(), 1);
}
