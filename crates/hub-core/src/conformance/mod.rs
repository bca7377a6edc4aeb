//! The store port's conformance suite: every adapter runs these same checks with the same
//! expectations, so the embedded and cloud stores cannot drift apart.
//!
//! Each check takes a fresh, empty store and panics on a violation (they are test code).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::event::{DeliveryRecord, DeliveryStatus, EventStatus, OutgoingRequest};
use crate::ids::{DeliveryId, EventId, RouteId, SourceId};
use crate::ports::{Acceptance, EventQuery, Job, JobFailed, JobFailure, NewEvent, Purged, Store};
use crate::request::Headers;
use crate::time::UnixMillis;
use bytes::Bytes;
use std::time::Duration;

pub mod mappings;
pub mod storage;

/// Retention of the events the checks make unless they say otherwise.
const LONG: Duration = Duration::from_secs(30 * 24 * 3600);

pub(crate) fn new_event(source: &str, dedup: Option<&str>, at: u64) -> NewEvent {
    let mut headers = Headers::new();
    headers.push("Content-Type", "application/json");
    NewEvent {
        id: EventId::generate(),
        source: SourceId::new(source),
        received_at: UnixMillis(at),
        method: "POST".into(),
        path: format!("/hooks/{source}"),
        query: None,
        headers,
        remote_addr: Some("127.0.0.1".into()),
        body: Bytes::from_static(b"{\"a\":1}"),
        dedup: dedup.map(|k| (k.to_string(), UnixMillis(at + 60_000))),
        retention: LONG,
    }
}

pub(crate) fn delivery(route: &str, at: u64) -> DeliveryRecord {
    DeliveryRecord {
        id: DeliveryId::generate(),
        route: RouteId::new(route),
        status: DeliveryStatus::Pending,
        attempts: 0,
        created_at: UnixMillis(at),
        next_attempt_at: Some(UnixMillis(at)),
        last_attempt_at: None,
        last_status: None,
        last_error: None,
        request: Some(OutgoingRequest {
            method: "POST".into(),
            url: "https://x.test/".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from_static(b"{}"),
        }),
    }
}

/// Generates one `#[tokio::test]` per conformance check, so a failure names the check.
///
/// `make` is an async function returning `Option<(guard, store)>`: a fresh, empty store and
/// whatever must live as long as it (a temporary directory), or `None` when the adapter cannot
/// run here (the emulators are not up outside CI). `store_conformance!(purge: make)` adds the
/// checks for stores that delete expired events themselves in [`Store::purge`] (DynamoDB deletes
/// them by TTL at [`Store::expires_at`], which the main checks cover).
#[macro_export]
macro_rules! store_conformance {
    (purge: $make:path) => {
        $crate::store_conformance!(@checks $make;
            purge_deletes_expired_final_events_and_keeps_the_rest,
            purge_passes_are_bounded,
        );
    };
    (dedup_purge: $make:path) => {
        $crate::store_conformance!(@checks $make;
            purge_forgets_expired_dedup_keys_in_bounded_passes,
        );
    };
    ($make:path) => {
        $crate::store_conformance!(@checks $make;
            accept_stores_event_body_and_queues_dispatch,
            dedup_within_window_returns_the_first_event,
            dispatch_creates_attempt_jobs_and_removes_dispatch,
            attempt_reschedules_then_completes,
            filtered_and_dead_statuses,
            requeue_replays_and_unknown_is_false,
            list_is_newest_first_with_filters,
            jobs_that_ran_already_change_nothing,
            large_bodies_round_trip,
            concurrent_duplicates_are_accepted_once,
            expiry_counts_from_the_last_receipt_dispatch_or_replay,
            dedup_keys_expire_with_or_before_their_event,
            failing_dispatch_backs_off_then_is_recorded_dead,
            failing_attempt_backs_off_then_is_recorded_dead,
            a_working_store_is_healthy,
        );
    };
    (@checks $make:path; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some((_guard, store)) = $make().await else { return };
                $crate::conformance::$check(&store).await;
            }
        )+
    };
}

pub async fn accept_stores_event_body_and_queues_dispatch<S: Store>(s: &S) {
    let ev = new_event("src", None, 1_000);
    let id = ev.id.clone();
    assert_eq!(s.accept(ev).await.unwrap(), Acceptance::Accepted(id.clone()));
    let rec = s.event(&id).await.unwrap().expect("stored");
    assert_eq!(rec.source.as_str(), "src");
    assert_eq!(rec.status(), EventStatus::Received);
    assert_eq!(rec.headers.get("content-type"), Some("application/json"));
    assert_eq!(s.body(&id).await.unwrap().as_deref(), Some(&b"{\"a\":1}"[..]));
    assert_eq!(s.due_jobs(UnixMillis(999), 10).await.unwrap(), vec![], "not due before received_at");
    assert_eq!(s.due_jobs(UnixMillis(1_000), 10).await.unwrap(), vec![Job::Dispatch(id)]);
    assert_eq!(s.next_due().await.unwrap(), Some(UnixMillis(1_000)));
}

pub async fn dedup_within_window_returns_the_first_event<S: Store>(s: &S) {
    let first = new_event("src", Some("k1"), 1_000);
    let first_id = first.id.clone();
    s.accept(first).await.unwrap();
    let again = new_event("src", Some("k1"), 2_000);
    assert_eq!(s.accept(again).await.unwrap(), Acceptance::Duplicate(first_id.clone()));
    // Same key on another source is not a duplicate.
    let other = new_event("other", Some("k1"), 2_000);
    assert!(matches!(s.accept(other).await.unwrap(), Acceptance::Accepted(_)));
    // After the window the key is free again.
    let late = new_event("src", Some("k1"), 70_000);
    assert!(matches!(s.accept(late).await.unwrap(), Acceptance::Accepted(_)));
    assert_eq!(s.due_jobs(UnixMillis(100_000), 10).await.unwrap().len(), 3);
}

pub async fn dispatch_creates_attempt_jobs_and_removes_dispatch<S: Store>(s: &S) {
    let ev = new_event("src", None, 1_000);
    let id = ev.id.clone();
    s.accept(ev).await.unwrap();
    let d1 = delivery("a", 2_000);
    let mut d2 = delivery("b", 2_000);
    d2.next_attempt_at = Some(UnixMillis(5_000));
    s.save_dispatch(&id, vec![d1.clone(), d2.clone()], None, UnixMillis(2_000)).await.unwrap();
    let jobs = s.due_jobs(UnixMillis(2_000), 10).await.unwrap();
    assert_eq!(jobs, vec![Job::Attempt(id.clone(), d1.id.clone())]);
    let later = s.due_jobs(UnixMillis(5_000), 10).await.unwrap();
    assert_eq!(later.len(), 2);
    let rec = s.event(&id).await.unwrap().unwrap();
    assert_eq!(rec.status(), EventStatus::Pending);
    assert_eq!(rec.dispatches, 1);
    assert_eq!(rec.current_deliveries().len(), 2);
}

pub async fn attempt_reschedules_then_completes<S: Store>(s: &S) {
    let ev = new_event("src", None, 1_000);
    let id = ev.id.clone();
    s.accept(ev).await.unwrap();
    let mut d = delivery("a", 1_000);
    s.save_dispatch(&id, vec![d.clone()], None, UnixMillis(1_000)).await.unwrap();
    d.attempts = 1;
    d.status = DeliveryStatus::Retrying;
    d.next_attempt_at = Some(UnixMillis(9_000));
    d.last_error = Some("HTTP 503".into());
    s.save_attempt(&id, d.clone()).await.unwrap();
    assert!(s.due_jobs(UnixMillis(8_999), 10).await.unwrap().is_empty());
    assert_eq!(
        s.due_jobs(UnixMillis(9_000), 10).await.unwrap(),
        vec![Job::Attempt(id.clone(), d.id.clone())]
    );
    let rec = s.event(&id).await.unwrap().unwrap();
    assert_eq!(rec.status(), EventStatus::Retrying);
    assert_eq!(rec.last_error(), Some("HTTP 503"));
    d.attempts = 2;
    d.status = DeliveryStatus::Delivered;
    d.next_attempt_at = None;
    d.last_error = None;
    s.save_attempt(&id, d).await.unwrap();
    assert!(s.due_jobs(UnixMillis(u64::MAX / 2), 10).await.unwrap().is_empty());
    assert_eq!(s.next_due().await.unwrap(), None);
    let rec = s.event(&id).await.unwrap().unwrap();
    assert_eq!(rec.status(), EventStatus::Delivered);
    assert_eq!(rec.attempts(), 2);
}

pub async fn filtered_and_dead_statuses<S: Store>(s: &S) {
    let ev = new_event("src", None, 1_000);
    let id = ev.id.clone();
    s.accept(ev).await.unwrap();
    s.save_dispatch(&id, vec![], None, UnixMillis(1_000)).await.unwrap();
    assert_eq!(s.event(&id).await.unwrap().unwrap().status(), EventStatus::Filtered);
    assert!(s.due_jobs(UnixMillis(u64::MAX / 2), 10).await.unwrap().is_empty());

    let ev = new_event("src", None, 1_000);
    let id = ev.id.clone();
    s.accept(ev).await.unwrap();
    let mut dead = delivery("a", 1_000);
    dead.status = DeliveryStatus::Dead;
    dead.next_attempt_at = None;
    dead.request = None;
    dead.last_error = Some("mapping: required field".into());
    s.save_dispatch(&id, vec![dead], None, UnixMillis(1_000)).await.unwrap();
    let rec = s.event(&id).await.unwrap().unwrap();
    assert_eq!(rec.status(), EventStatus::Dead);
    assert!(
        s.due_jobs(UnixMillis(u64::MAX / 2), 10).await.unwrap().is_empty(),
        "dead deliveries queue nothing"
    );
}

pub async fn requeue_replays_and_unknown_is_false<S: Store>(s: &S) {
    let ev = new_event("src", None, 1_000);
    let id = ev.id.clone();
    s.accept(ev).await.unwrap();
    s.save_dispatch(&id, vec![], None, UnixMillis(1_000)).await.unwrap();
    assert!(s.requeue(&id, UnixMillis(3_000)).await.unwrap());
    assert_eq!(s.due_jobs(UnixMillis(3_000), 10).await.unwrap(), vec![Job::Dispatch(id.clone())]);
    let d = delivery("a", 3_000);
    s.save_dispatch(&id, vec![d], None, UnixMillis(3_000)).await.unwrap();
    let rec = s.event(&id).await.unwrap().unwrap();
    assert_eq!(rec.dispatches, 2);
    assert_eq!(rec.current_deliveries().len(), 1);
    assert!(!s.requeue(&EventId::new("evt_nope"), UnixMillis(0)).await.unwrap());
}

pub async fn list_is_newest_first_with_filters<S: Store>(s: &S) {
    let mut ids = Vec::new();
    for (i, src) in ["a", "b", "a"].iter().enumerate() {
        let ev = new_event(src, None, 1_000 + i as u64);
        ids.push(ev.id.clone());
        s.accept(ev).await.unwrap();
    }
    let all = s.list_events(&EventQuery { limit: 10, ..Default::default() }).await.unwrap();
    let got: Vec<_> = all.iter().map(|e| e.id.clone()).collect();
    assert_eq!(got, vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]);
    let only_a = s
        .list_events(&EventQuery { source: Some(SourceId::new("a")), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(only_a.len(), 2);
    let limited = s.list_events(&EventQuery { limit: 1, ..Default::default() }).await.unwrap();
    assert_eq!(limited.len(), 1);
    let before = s
        .list_events(&EventQuery { before: Some(ids[1].clone()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(before.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![ids[0].clone()]);
    s.save_dispatch(&ids[0], vec![], None, UnixMillis(2_000)).await.unwrap();
    let filtered = s
        .list_events(&EventQuery { status: Some(EventStatus::Filtered), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(filtered.len(), 1);
}

pub async fn purge_forgets_expired_dedup_keys_in_bounded_passes<S: Store>(s: &S) {
    for k in ["old1", "old2", "old3"] {
        s.accept(new_event("src", Some(k), 1_000)).await.unwrap();
    }
    s.accept(new_event("src", Some("new"), 100_000)).await.unwrap();
    let first = s.purge(UnixMillis(80_000), 2).await.unwrap();
    assert_eq!((first.events, first.dedup_keys, first.more), (0, 2, true), "{first:?}");
    let second = s.purge(UnixMillis(80_000), 2).await.unwrap();
    assert_eq!((second.events, second.dedup_keys, second.more), (0, 1, false), "{second:?}");
    assert_eq!(s.purge(UnixMillis(80_000), 2).await.unwrap(), Purged::default());
    assert!(matches!(
        s.accept(new_event("src", Some("new"), 100_001)).await.unwrap(),
        Acceptance::Duplicate(_)
    ));
    // A forgotten key is free again (its window had passed anyway).
    assert!(matches!(
        s.accept(new_event("src", Some("old1"), 80_001)).await.unwrap(),
        Acceptance::Accepted(_)
    ));
}

pub async fn jobs_that_ran_already_change_nothing<S: Store>(s: &S) {
    let ev = new_event("src", None, 1_000);
    let id = ev.id.clone();
    s.accept(ev).await.unwrap();
    let mut d = delivery("a", 1_000);
    assert!(s.save_dispatch(&id, vec![d.clone()], None, UnixMillis(1_000)).await.unwrap());
    let again = s.save_dispatch(&id, vec![delivery("a", 1_001)], None, UnixMillis(1_001)).await.unwrap();
    assert!(!again, "a second run of the same dispatch is ignored");
    let rec = s.event(&id).await.unwrap().unwrap();
    assert_eq!((rec.dispatches, rec.deliveries.len()), (1, 1));
    d.attempts = 1;
    d.status = DeliveryStatus::Delivered;
    d.next_attempt_at = None;
    d.last_status = Some(200);
    assert!(s.save_attempt(&id, d.clone()).await.unwrap());
    let mut late = d.clone();
    late.attempts = 2;
    late.status = DeliveryStatus::Dead;
    late.last_error = Some("a late duplicate run".into());
    assert!(!s.save_attempt(&id, late).await.unwrap(), "a final delivery is not overwritten");
    let rec = s.event(&id).await.unwrap().unwrap();
    assert_eq!(rec.deliveries[0], d);
    assert_eq!(rec.status(), EventStatus::Delivered);
    assert!(s.due_jobs(UnixMillis(u64::MAX / 2), 10).await.unwrap().is_empty());
    // A dispatch for an event that does not exist changes nothing either.
    assert!(!s.save_dispatch(&EventId::new("evt_nope"), vec![], None, UnixMillis(1)).await.unwrap());
}

/// Bodies and rendered requests far larger than a database item (DynamoDB: 400 KB) round-trip.
pub async fn large_bodies_round_trip<S: Store>(s: &S) {
    let mut ev = new_event("src", None, 1_000);
    let body: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    ev.body = Bytes::from(body.clone());
    let id = ev.id.clone();
    s.accept(ev).await.unwrap();
    assert_eq!(s.body(&id).await.unwrap().as_deref(), Some(&body[..]));
    assert_eq!(s.event(&id).await.unwrap().unwrap().body_len, 1_500_000);
    let mut d = delivery("a", 1_000);
    let big = "x".repeat(600_000);
    if let Some(r) = d.request.as_mut() {
        r.body = Bytes::from(format!("{{\"blob\":\"{big}\"}}"));
    }
    let many: Vec<_> = std::iter::once(d.clone()).chain((0..150).map(|_| delivery("b", 1_000))).collect();
    assert!(s.save_dispatch(&id, many, None, UnixMillis(1_000)).await.unwrap());
    let rec = s.event(&id).await.unwrap().unwrap();
    assert_eq!(rec.deliveries.len(), 151, "a fan-out of many deliveries is kept whole");
    assert_eq!(rec.deliveries[0], d, "deliveries keep their order and content");
    assert_eq!(s.due_jobs(UnixMillis(1_000), 1_000).await.unwrap().len(), 151);
}

/// A sender's retries racing each other: exactly one is accepted, the others are told its id.
pub async fn concurrent_duplicates_are_accepted_once<S: Store>(s: &S) {
    use futures_util::future::join;
    let evs: Vec<NewEvent> = (0..4).map(|i| new_event("src", Some("race"), 1_000 + i)).collect();
    let [a, b, c, d] = <[NewEvent; 4]>::try_from(evs).expect("four events");
    let ((ra, rb), (rc, rd)) = join(join(s.accept(a), s.accept(b)), join(s.accept(c), s.accept(d))).await;
    let results = [ra.unwrap(), rb.unwrap(), rc.unwrap(), rd.unwrap()];
    let accepted: Vec<_> = results
        .iter()
        .filter_map(|r| if let Acceptance::Accepted(id) = r { Some(id.clone()) } else { None })
        .collect();
    assert_eq!(accepted.len(), 1, "{results:?}");
    for r in &results {
        if let Acceptance::Duplicate(id) = r {
            assert_eq!(id, &accepted[0]);
        }
    }
    assert_eq!(s.due_jobs(UnixMillis(10_000), 10).await.unwrap().len(), 1, "one dispatch queued");
}

fn with_retention(mut ev: NewEvent, ms: u64) -> NewEvent {
    ev.retention = Duration::from_millis(ms);
    ev
}

/// Expiry is the last activity plus the retention: a replay or a later dispatch re-arms it.
pub async fn expiry_counts_from_the_last_receipt_dispatch_or_replay<S: Store>(s: &S) {
    let ev = with_retention(new_event("src", None, 1_000), 100_000);
    let id = ev.id.clone();
    s.accept(ev).await.unwrap();
    assert_eq!(s.expires_at(&id).await.unwrap(), Some(UnixMillis(101_000)));
    s.save_dispatch(&id, vec![delivery("a", 5_000)], None, UnixMillis(5_000)).await.unwrap();
    assert_eq!(s.expires_at(&id).await.unwrap(), Some(UnixMillis(105_000)), "dispatch re-arms");
    assert!(s.requeue(&id, UnixMillis(50_000)).await.unwrap());
    assert_eq!(s.expires_at(&id).await.unwrap(), Some(UnixMillis(150_000)), "replay re-arms");
    // An earlier time never shortens it.
    assert!(s.requeue(&id, UnixMillis(10_000)).await.unwrap());
    assert_eq!(s.expires_at(&id).await.unwrap(), Some(UnixMillis(150_000)));
    assert_eq!(s.expires_at(&EventId::new("evt_nope")).await.unwrap(), None);
}

/// A dedup window longer than the event's retention ends with the event: a key never names an
/// event that is gone.
pub async fn dedup_keys_expire_with_or_before_their_event<S: Store>(s: &S) {
    let mut ev = with_retention(new_event("src", Some("k"), 1_000), 10_000);
    ev.dedup = Some(("k".into(), UnixMillis(1_000 + 60_000)));
    s.accept(ev).await.unwrap();
    assert!(matches!(s.accept(new_event("src", Some("k"), 10_999)).await.unwrap(), Acceptance::Duplicate(_)));
    s.purge(UnixMillis(11_000), 100).await.unwrap();
    assert!(
        matches!(s.accept(new_event("src", Some("k"), 11_000)).await.unwrap(), Acceptance::Accepted(_)),
        "the key ended with its event's retention"
    );
}

fn failure(reason: &str, at: u64, retry_at: u64) -> JobFailure {
    JobFailure { reason: reason.into(), at: UnixMillis(at), retry_at: UnixMillis(retry_at), max_failures: 3 }
}

/// A dispatch that keeps failing on the store moves back in the queue, then is given up.
pub async fn failing_dispatch_backs_off_then_is_recorded_dead<S: Store>(s: &S) {
    let ev = new_event("src", None, 1_000);
    let id = ev.id.clone();
    s.accept(ev).await.unwrap();
    let job = Job::Dispatch(id.clone());
    let r = s.job_failed(&job, &failure("boom", 1_000, 5_000)).await.unwrap();
    assert_eq!(r, JobFailed::Deferred { failures: 1 });
    assert!(s.due_jobs(UnixMillis(4_999), 10).await.unwrap().is_empty(), "backed off");
    assert_eq!(s.due_jobs(UnixMillis(5_000), 10).await.unwrap(), vec![job.clone()]);
    assert_eq!(
        s.job_failed(&job, &failure("boom", 5_000, 9_000)).await.unwrap(),
        JobFailed::Deferred { failures: 2 }
    );
    assert_eq!(
        s.job_failed(&job, &failure("boom again", 9_000, 20_000)).await.unwrap(),
        JobFailed::Dead { failures: 3 }
    );
    assert!(s.due_jobs(UnixMillis(u64::MAX / 2), 10).await.unwrap().is_empty(), "given up");
    let rec = s.event(&id).await.unwrap().unwrap();
    assert_eq!(rec.status(), EventStatus::Dead);
    assert!(rec.last_error().is_some_and(|e| e.contains("boom again") && e.contains('3')), "{rec:?}");
    assert_eq!(s.job_failed(&job, &failure("late", 9_000, 20_000)).await.unwrap(), JobFailed::Gone);
    // A replay starts a fresh count.
    assert!(s.requeue(&id, UnixMillis(30_000)).await.unwrap());
    assert_eq!(
        s.job_failed(&job, &failure("x", 30_000, 31_000)).await.unwrap(),
        JobFailed::Deferred { failures: 1 }
    );
}

/// An attempt that keeps failing on the store: same, and its delivery is the one recorded dead.
pub async fn failing_attempt_backs_off_then_is_recorded_dead<S: Store>(s: &S) {
    let ev = new_event("src", None, 1_000);
    let id = ev.id.clone();
    s.accept(ev).await.unwrap();
    let d = delivery("a", 1_000);
    let other = delivery("b", 1_000);
    s.save_dispatch(&id, vec![d.clone(), other.clone()], None, UnixMillis(1_000)).await.unwrap();
    let job = Job::Attempt(id.clone(), d.id.clone());
    let r = s.job_failed(&job, &failure("disk", 1_000, 4_000)).await.unwrap();
    assert_eq!(r, JobFailed::Deferred { failures: 1 });
    assert_eq!(
        s.due_jobs(UnixMillis(3_999), 10).await.unwrap(),
        vec![Job::Attempt(id.clone(), other.id.clone())],
        "the failing job no longer heads the queue"
    );
    // A recorded outcome resets the count.
    let mut retry = d.clone();
    retry.attempts = 1;
    retry.status = DeliveryStatus::Retrying;
    retry.next_attempt_at = Some(UnixMillis(6_000));
    assert!(s.save_attempt(&id, retry).await.unwrap());
    for (i, n) in [(1u32, 6_000u64), (2, 7_000)] {
        assert_eq!(
            s.job_failed(&job, &failure("disk", n, n + 1_000)).await.unwrap(),
            JobFailed::Deferred { failures: i }
        );
    }
    assert_eq!(
        s.job_failed(&job, &failure("disk", 8_000, 9_000)).await.unwrap(),
        JobFailed::Dead { failures: 3 }
    );
    let rec = s.event(&id).await.unwrap().unwrap();
    let got = rec.deliveries.iter().find(|x| x.id == d.id).unwrap();
    assert_eq!(got.status, DeliveryStatus::Dead);
    assert!(got.last_error.as_deref().is_some_and(|e| e.contains("disk")), "{got:?}");
    assert_eq!(got.next_attempt_at, None);
    assert_eq!(
        s.due_jobs(UnixMillis(u64::MAX / 2), 10).await.unwrap(),
        vec![Job::Attempt(id.clone(), other.id.clone())],
        "the other delivery is untouched"
    );
}

pub async fn a_working_store_is_healthy<S: Store>(s: &S) {
    s.health().await.unwrap();
    s.accept(new_event("src", None, 1_000)).await.unwrap();
    s.health().await.unwrap();
}

/// Old events whose deliveries are all final go with their bodies, deliveries and dedup keys;
/// recent ones and ones still being retried stay.
pub async fn purge_deletes_expired_final_events_and_keeps_the_rest<S: Store>(s: &S) {
    let retention = 10_000;
    // Delivered, old.
    let ev = with_retention(new_event("src", Some("delivered"), 1_000), retention);
    let delivered = ev.id.clone();
    s.accept(ev).await.unwrap();
    let mut d = delivery("a", 1_000);
    s.save_dispatch(&delivered, vec![d.clone()], None, UnixMillis(1_000)).await.unwrap();
    d.status = DeliveryStatus::Delivered;
    d.attempts = 1;
    d.next_attempt_at = None;
    s.save_attempt(&delivered, d).await.unwrap();
    // Filtered, old.
    let ev = with_retention(new_event("src", None, 1_000), retention);
    let filtered = ev.id.clone();
    s.accept(ev).await.unwrap();
    s.save_dispatch(&filtered, vec![], None, UnixMillis(1_000)).await.unwrap();
    // Still retrying, old.
    let ev = with_retention(new_event("src", None, 1_000), retention);
    let retrying = ev.id.clone();
    s.accept(ev).await.unwrap();
    let mut r = delivery("a", 1_000);
    s.save_dispatch(&retrying, vec![r.clone()], None, UnixMillis(1_000)).await.unwrap();
    r.status = DeliveryStatus::Retrying;
    r.attempts = 1;
    r.next_attempt_at = Some(UnixMillis(40_000));
    s.save_attempt(&retrying, r).await.unwrap();
    // Replayed (re-armed) after being delivered: old receipt, recent replay.
    let ev = with_retention(new_event("src", None, 1_000), retention);
    let replayed = ev.id.clone();
    s.accept(ev).await.unwrap();
    s.save_dispatch(&replayed, vec![], None, UnixMillis(1_000)).await.unwrap();
    s.requeue(&replayed, UnixMillis(15_000)).await.unwrap();
    s.save_dispatch(&replayed, vec![], None, UnixMillis(15_000)).await.unwrap();
    // Recent.
    let ev = with_retention(new_event("src", Some("recent"), 20_000), retention);
    let recent = ev.id.clone();
    s.accept(ev).await.unwrap();

    let p = s.purge(UnixMillis(20_000), 100).await.unwrap();
    assert_eq!((p.events, p.more), (2, false), "{p:?}");
    for gone in [&delivered, &filtered] {
        assert_eq!(s.event(gone).await.unwrap(), None);
        assert_eq!(s.body(gone).await.unwrap(), None);
        assert_eq!(s.expires_at(gone).await.unwrap(), None);
    }
    assert!(
        matches!(
            s.accept(new_event("src", Some("delivered"), 20_001)).await.unwrap(),
            Acceptance::Accepted(_)
        ),
        "the dedup key went with its event"
    );
    for kept in [&retrying, &replayed, &recent] {
        assert!(s.event(kept).await.unwrap().is_some());
        assert!(s.body(kept).await.unwrap().is_some());
    }
    assert!(matches!(
        s.accept(new_event("src", Some("recent"), 20_002)).await.unwrap(),
        Acceptance::Duplicate(_)
    ));
    // The retrying event's expiry moved on instead; its job is still there.
    assert!(s.expires_at(&retrying).await.unwrap().unwrap() > UnixMillis(20_000));
    assert!(
        s.due_jobs(UnixMillis(40_000), 10)
            .await
            .unwrap()
            .iter()
            .any(|j| matches!(j, Job::Attempt(e, _) if e == &retrying))
    );
}

/// One pass deletes at most `limit` events; the rest wait for the next pass.
pub async fn purge_passes_are_bounded<S: Store>(s: &S) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let ev = with_retention(new_event("src", None, 1_000), 1_000);
        ids.push(ev.id.clone());
        s.accept(ev).await.unwrap();
        s.save_dispatch(ids.last().unwrap(), vec![], None, UnixMillis(1_000)).await.unwrap();
    }
    let first = s.purge(UnixMillis(5_000), 2).await.unwrap();
    assert_eq!((first.events, first.more), (2, true), "{first:?}");
    let left = s.list_events(&EventQuery { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(left.len(), 3);
    let second = s.purge(UnixMillis(5_000), 2).await.unwrap();
    assert_eq!((second.events, second.more), (2, true), "{second:?}");
    let third = s.purge(UnixMillis(5_000), 2).await.unwrap();
    assert_eq!((third.events, third.more), (1, false), "{third:?}");
    assert!(s.list_events(&EventQuery { limit: 100, ..Default::default() }).await.unwrap().is_empty());
}
