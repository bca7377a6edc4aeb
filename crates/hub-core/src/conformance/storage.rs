//! Conformance of the split storage ports ([`Storage`]): one module of checks per capability
//! (event log, scheduler, dedup index, state store, commits), each check on a fresh, empty
//! storage. [`storage_conformance!`](crate::storage_conformance) makes one `#[test]` of each.

use super::{delivery, new_event};
use crate::event::{DeliveryStatus, EventStatus};
use crate::ids::{EventId, SourceId};
use crate::ports::commit::{Change, Commit, CommitError, Conflict};
use crate::ports::schedule::{Timer, TimerKey, TimerPayload};
use crate::ports::state::StateKey;
use crate::ports::{EventQuery, Job, Storage};
use crate::time::UnixMillis;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Generates one `#[tokio::test]` per check of the split storage ports, in a module per port.
///
/// `make` is an async function returning `Option<(guard, storage)>`: a fresh, empty storage
/// and whatever must live as long as it (a temporary directory), or `None` when the adapter
/// cannot run here (the emulators are not up outside CI). `storage_conformance!(purge: make)`
/// adds the checks for storages that delete expired events themselves (DynamoDB deletes them
/// by TTL at `expires_at`, which the main checks cover), `storage_conformance!(dedup_purge:
/// make)` those for storages that forget expired dedup keys themselves.
#[macro_export]
macro_rules! storage_conformance {
    (purge: $make:ident) => {
        mod purge {
            $crate::storage_conformance!(@checks super::$make; log;
                purge_deletes_what_expired_and_keeps_what_still_has_work,
                purge_passes_are_bounded,
            );
        }
    };
    (dedup_purge: $make:ident) => {
        mod dedup_purge {
            $crate::storage_conformance!(@checks super::$make; dedup;
                purge_forgets_expired_keys_in_bounded_passes,
            );
        }
    };
    ($make:ident) => {
        mod event_log {
            $crate::storage_conformance!(@checks super::$make; log;
                an_accepted_event_reads_back_with_its_body_and_dispatch_timer,
                pages_walk_back_in_time_without_gaps_or_repeats,
                pages_filter_by_source_and_status,
                one_delivery_reads_back_alone,
                an_event_reads_back_with_its_body_in_one_call,
                large_bodies_and_fan_outs_round_trip,
                no_delivery_is_filtered_and_a_dead_one_sets_no_timer,
                expiry_counts_from_the_last_receipt_dispatch_or_replay,
                a_working_storage_is_healthy,
            );
        }
        mod scheduler {
            $crate::storage_conformance!(@checks super::$make; scheduler;
                timers_are_due_from_their_time_earliest_first,
                setting_a_timer_under_its_key_moves_it,
                a_cancelled_timer_is_gone_and_cancelling_nothing_is_fine,
                a_claim_moves_a_due_timer_and_one_of_two_concurrent_claims_wins,
                a_timer_not_due_or_not_set_cannot_be_claimed,
                failed_runs_are_counted_until_the_timer_changes,
                data_timers_keep_their_payload,
            );
        }
        mod dedup {
            $crate::storage_conformance!(@checks super::$make; dedup;
                a_key_is_held_by_its_event_until_its_time,
                a_held_key_refuses_the_accept_and_changes_nothing,
                keys_are_per_source,
                a_key_never_outlives_its_event,
                of_concurrent_accepts_with_one_key_one_wins,
            );
        }
        mod state {
            $crate::storage_conformance!(@checks super::$make; state;
                a_put_needs_the_version_it_read,
                of_two_writers_of_one_version_one_wins,
                a_refused_put_refuses_its_whole_commit,
                load_answers_in_the_order_of_the_keys,
            );
        }
        mod commit {
            $crate::storage_conformance!(@checks super::$make; commit;
                a_dispatch_records_its_run_once_and_sets_attempt_timers,
                an_attempt_moves_its_timer_and_a_final_one_clears_it,
                an_attempt_of_a_final_delivery_is_already_done,
                a_replay_sets_the_dispatch_again_and_keeps_the_history,
                a_failed_condition_refuses_the_whole_commit,
                fifty_concurrent_attempts_of_one_event_each_record_once,
                an_event_accepted_and_dispatched_at_once_has_its_deliveries_and_no_dispatch,
            );
        }
        mod triggers {
            $crate::storage_conformance!(@checks_in super::$make; triggers;
                two_hundred_concurrent_facts_add_two_hundred_points_and_fire_once,
            );
        }
    };
    (@checks_in $make:path; $module:ident; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some((_guard, storage)) = $make().await else { return };
                $crate::conformance::$module::$check(std::sync::Arc::new(storage)).await;
            }
        )+
    };
    (@checks $make:path; $port:ident; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some((_guard, storage)) = $make().await else { return };
                $crate::conformance::storage::$port::$check(std::sync::Arc::new(storage)).await;
            }
        )+
    };
}

const T0: u64 = 1_000_000;

fn at(ms: u64) -> UnixMillis {
    UnixMillis(ms)
}

async fn commit<S: Storage>(s: &S, when: u64, changes: Vec<Change>) -> Result<(), CommitError> {
    s.commit(Commit { at: at(when), changes }).await
}

/// Accepts an event and returns its id.
async fn accept<S: Storage>(s: &S, source: &str, dedup: Option<&str>, when: u64) -> EventId {
    let ev = new_event(source, dedup, when);
    let id = ev.id.clone();
    commit(s, when, vec![Change::Accept(ev)]).await.expect("accept");
    id
}

fn conflict(r: Result<(), CommitError>) -> Conflict {
    match r {
        Err(CommitError::Conflict(c)) => c,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn data(owner: &str, name: &str, due: u64, n: u64) -> Timer {
    Timer { key: TimerKey::new(owner, name), due: at(due), payload: TimerPayload::Data(json!({ "n": n })) }
}

/// Checks of the event log.
pub mod log {
    use super::*;

    pub async fn an_accepted_event_reads_back_with_its_body_and_dispatch_timer<S: Storage>(s: Arc<S>) {
        let id = accept(&*s, "src", None, T0).await;
        let ev = s.event(&id).await.unwrap().expect("stored");
        assert_eq!((ev.source.as_str(), ev.status(), ev.received_at), ("src", EventStatus::Received, at(T0)));
        assert_eq!(s.body(&id).await.unwrap().as_deref(), Some(&b"{\"a\":1}"[..]));
        let timer = s.timer(&TimerKey::dispatch(&id)).await.unwrap().expect("dispatch timer");
        assert_eq!(
            (timer.timer.due, timer.timer.as_job(), timer.failures),
            (at(T0), Some(&Job::Dispatch(id)), 0)
        );
    }

    pub async fn pages_walk_back_in_time_without_gaps_or_repeats<S: Storage>(s: Arc<S>) {
        let mut ids = Vec::new();
        for n in 0..7 {
            ids.push(accept(&*s, "src", None, T0 + n).await);
        }
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = s
                .page(&EventQuery { limit: 3, before: before.clone(), ..EventQuery::default() })
                .await
                .unwrap();
            assert!(page.events.len() <= 3);
            seen.extend(page.events.iter().map(|e| e.id.clone()));
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        ids.reverse();
        assert_eq!(seen, ids, "newest first, every event once");
    }

    pub async fn pages_filter_by_source_and_status<S: Storage>(s: Arc<S>) {
        let a = accept(&*s, "a", None, T0).await;
        let b = accept(&*s, "b", None, T0 + 1).await;
        commit(&*s, T0 + 2, vec![Change::Dispatch { event: b.clone(), deliveries: Vec::new(), error: None }])
            .await
            .unwrap();
        let q = |source: Option<&str>, status| EventQuery {
            source: source.map(SourceId::new),
            status,
            limit: 10,
            before: None,
        };
        let ids = |p: crate::ports::log::EventPage| p.events.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(s.page(&q(Some("a"), None)).await.unwrap()), vec![a.clone()]);
        assert_eq!(ids(s.page(&q(None, Some(EventStatus::Filtered))).await.unwrap()), vec![b]);
        assert_eq!(ids(s.page(&q(None, Some(EventStatus::Received))).await.unwrap()), vec![a]);
    }

    pub async fn one_delivery_reads_back_alone<S: Storage>(s: Arc<S>) {
        let id = accept(&*s, "src", None, T0).await;
        let (d1, d2) = (delivery("r1", T0), delivery("r2", T0));
        let change =
            Change::Dispatch { event: id.clone(), deliveries: vec![d1.clone(), d2.clone()], error: None };
        commit(&*s, T0, vec![change]).await.unwrap();
        assert_eq!(s.delivery(&id, &d2.id).await.unwrap(), Some((SourceId::new("src"), d2)));
        assert_eq!(s.delivery(&id, &crate::ids::DeliveryId::generate()).await.unwrap(), None);
        assert_eq!(s.delivery(&EventId::generate(), &d1.id).await.unwrap(), None);
    }

    pub async fn an_event_reads_back_with_its_body_in_one_call<S: Storage>(s: Arc<S>) {
        let id = accept(&*s, "src", None, T0).await;
        let (ev, body) = s.event_with_body(&id).await.unwrap().expect("stored");
        assert_eq!((ev.id, ev.source.as_str(), body.as_ref()), (id, "src", &b"{\"a\":1}"[..]));
        assert!(s.event_with_body(&EventId::generate()).await.unwrap().is_none());
    }

    /// Bodies and rendered requests far larger than a database item (DynamoDB: 400 KB), and a
    /// fan-out of many deliveries, round-trip whole and in order.
    pub async fn large_bodies_and_fan_outs_round_trip<S: Storage>(s: Arc<S>) {
        let mut ev = new_event("src", None, T0);
        let body: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
        ev.body = bytes::Bytes::from(body.clone());
        let id = ev.id.clone();
        commit(&*s, T0, vec![Change::Accept(ev)]).await.unwrap();
        assert_eq!(s.body(&id).await.unwrap().as_deref(), Some(&body[..]));
        assert_eq!(s.event(&id).await.unwrap().unwrap().body_len, 1_500_000);
        assert_eq!(s.event_with_body(&id).await.unwrap().unwrap().1.as_ref(), &body[..]);
        let mut d = delivery("a", T0);
        let big = "x".repeat(600_000);
        if let Some(r) = d.request.as_mut() {
            r.body = bytes::Bytes::from(format!("{{\"blob\":\"{big}\"}}"));
        }
        let many: Vec<_> = std::iter::once(d.clone()).chain((0..150).map(|_| delivery("b", T0))).collect();
        commit(&*s, T0, vec![Change::Dispatch { event: id.clone(), deliveries: many, error: None }])
            .await
            .unwrap();
        let rec = s.event(&id).await.unwrap().unwrap();
        assert_eq!(rec.deliveries.len(), 151, "a fan-out of many deliveries is kept whole");
        assert_eq!(rec.deliveries[0], d, "deliveries keep their order and content");
        assert_eq!(s.delivery(&id, &d.id).await.unwrap().map(|(_, x)| x), Some(d));
        assert_eq!(s.due(at(T0), 1_000).await.unwrap().len(), 151);
    }

    pub async fn no_delivery_is_filtered_and_a_dead_one_sets_no_timer<S: Storage>(s: Arc<S>) {
        let filtered = accept(&*s, "src", None, T0).await;
        commit(
            &*s,
            T0,
            vec![Change::Dispatch { event: filtered.clone(), deliveries: Vec::new(), error: None }],
        )
        .await
        .unwrap();
        assert_eq!(s.event(&filtered).await.unwrap().unwrap().status(), EventStatus::Filtered);
        let dead_one = accept(&*s, "src", None, T0).await;
        let mut dead = delivery("a", T0);
        dead.status = DeliveryStatus::Dead;
        dead.next_attempt_at = None;
        dead.request = None;
        dead.last_error = Some("mapping: required field".into());
        let change = Change::Dispatch { event: dead_one.clone(), deliveries: vec![dead], error: None };
        commit(&*s, T0, vec![change]).await.unwrap();
        assert_eq!(s.event(&dead_one).await.unwrap().unwrap().status(), EventStatus::Dead);
        assert!(s.due(at(u64::MAX / 2), 10).await.unwrap().is_empty(), "nothing is left due");
    }

    pub async fn expiry_counts_from_the_last_receipt_dispatch_or_replay<S: Storage>(s: Arc<S>) {
        let mut ev = new_event("src", None, T0);
        ev.retention = Duration::from_secs(10);
        let id = ev.id.clone();
        commit(&*s, T0, vec![Change::Accept(ev)]).await.unwrap();
        assert_eq!(s.expires_at(&id).await.unwrap(), Some(at(T0 + 10_000)));
        commit(
            &*s,
            T0 + 3_000,
            vec![Change::Dispatch { event: id.clone(), deliveries: Vec::new(), error: None }],
        )
        .await
        .unwrap();
        assert_eq!(s.expires_at(&id).await.unwrap(), Some(at(T0 + 13_000)));
        commit(&*s, T0 + 5_000, vec![Change::Replay { event: id.clone() }]).await.unwrap();
        assert_eq!(s.expires_at(&id).await.unwrap(), Some(at(T0 + 15_000)));
        assert_eq!(s.expires_at(&EventId::generate()).await.unwrap(), None);
    }

    pub async fn a_working_storage_is_healthy<S: Storage>(s: Arc<S>) {
        s.health().await.expect("healthy");
    }

    pub async fn purge_deletes_what_expired_and_keeps_what_still_has_work<S: Storage>(s: Arc<S>) {
        let short = |source: &str, dedup: Option<&str>| {
            let mut ev = new_event(source, dedup, T0);
            ev.retention = Duration::from_secs(1);
            ev
        };
        let (done, busy) = (short("src", Some("k")), short("src", None));
        let (done_id, busy_id) = (done.id.clone(), busy.id.clone());
        commit(&*s, T0, vec![Change::Accept(done), Change::Accept(busy)]).await.unwrap();
        commit(
            &*s,
            T0,
            vec![Change::Dispatch { event: done_id.clone(), deliveries: Vec::new(), error: None }],
        )
        .await
        .unwrap();
        let later = at(T0 + 5_000);
        let p = s.purge(later, 10).await.unwrap();
        assert_eq!((p.events, p.dedup_keys), (1, 1), "{p:?}");
        assert!(s.event(&done_id).await.unwrap().is_none() && s.body(&done_id).await.unwrap().is_none());
        assert!(s.event(&busy_id).await.unwrap().is_some(), "an event whose dispatch is still due is kept");
        assert_eq!(
            s.expires_at(&busy_id).await.unwrap(),
            Some(at(T0 + 6_000)),
            "counted again from the pass"
        );
    }

    /// One pass deletes at most `limit` events; the rest wait for the next pass.
    pub async fn purge_passes_are_bounded<S: Storage>(s: Arc<S>) {
        for _ in 0..5 {
            let mut ev = new_event("src", None, T0);
            ev.retention = Duration::from_secs(1);
            let id = ev.id.clone();
            let dispatch = Change::Dispatch { event: id, deliveries: Vec::new(), error: None };
            commit(&*s, T0, vec![Change::Accept(ev), dispatch]).await.unwrap();
        }
        let all = EventQuery { limit: 100, ..EventQuery::default() };
        let later = at(T0 + 5_000);
        let first = s.purge(later, 2).await.unwrap();
        assert_eq!((first.events, first.more), (2, true), "{first:?}");
        assert_eq!(s.page(&all).await.unwrap().events.len(), 3);
        let second = s.purge(later, 2).await.unwrap();
        assert_eq!((second.events, second.more), (2, true), "{second:?}");
        let third = s.purge(later, 2).await.unwrap();
        assert_eq!((third.events, third.more), (1, false), "{third:?}");
        assert!(s.page(&all).await.unwrap().events.is_empty());
    }
}

/// Checks of the scheduler.
pub mod scheduler {
    use super::*;

    pub async fn timers_are_due_from_their_time_earliest_first<S: Storage>(s: Arc<S>) {
        let changes = vec![
            Change::SetTimer(data("t", "late", T0 + 20, 1)),
            Change::SetTimer(data("t", "early", T0 + 10, 2)),
            Change::SetTimer(data("t", "future", T0 + 99, 3)),
        ];
        commit(&*s, T0, changes).await.unwrap();
        let keys = |v: Vec<Timer>| v.into_iter().map(|t| t.key).collect::<Vec<_>>();
        assert!(s.due(at(T0 + 9), 10).await.unwrap().is_empty());
        assert_eq!(
            keys(s.due(at(T0 + 20), 10).await.unwrap()),
            vec![TimerKey::new("t", "early"), TimerKey::new("t", "late")]
        );
        assert_eq!(keys(s.due(at(T0 + 20), 1).await.unwrap()), vec![TimerKey::new("t", "early")]);
        assert_eq!(s.next_due().await.unwrap(), Some(at(T0 + 10)));
    }

    pub async fn setting_a_timer_under_its_key_moves_it<S: Storage>(s: Arc<S>) {
        commit(&*s, T0, vec![Change::SetTimer(data("t", "x", T0 + 10, 1))]).await.unwrap();
        commit(&*s, T0, vec![Change::SetTimer(data("t", "x", T0 + 50, 2))]).await.unwrap();
        assert!(s.due(at(T0 + 49), 10).await.unwrap().is_empty(), "not due at its old time");
        let due = s.due(at(T0 + 50), 10).await.unwrap();
        assert_eq!(due, vec![data("t", "x", T0 + 50, 2)]);
    }

    pub async fn a_cancelled_timer_is_gone_and_cancelling_nothing_is_fine<S: Storage>(s: Arc<S>) {
        commit(&*s, T0, vec![Change::SetTimer(data("t", "x", T0, 1))]).await.unwrap();
        commit(&*s, T0, vec![Change::CancelTimer(TimerKey::new("t", "x"))]).await.unwrap();
        commit(&*s, T0, vec![Change::CancelTimer(TimerKey::new("t", "never"))]).await.unwrap();
        assert!(s.timer(&TimerKey::new("t", "x")).await.unwrap().is_none());
        assert!(s.due(at(T0 + 1_000), 10).await.unwrap().is_empty());
        assert_eq!(s.next_due().await.unwrap(), None);
    }

    pub async fn a_claim_moves_a_due_timer_and_one_of_two_concurrent_claims_wins<S: Storage>(s: Arc<S>) {
        commit(&*s, T0, vec![Change::SetTimer(data("t", "x", T0, 1))]).await.unwrap();
        let key = TimerKey::new("t", "x");
        let (a, b) = futures_util::future::join(
            s.claim(&key, at(T0 + 5), at(T0 + 60_000)),
            s.claim(&key, at(T0 + 5), at(T0 + 60_000)),
        )
        .await;
        let won = [a.unwrap(), b.unwrap()].into_iter().flatten().collect::<Vec<_>>();
        assert_eq!(won.len(), 1, "exactly one claim wins: {won:?}");
        assert_eq!((won[0].timer.due, won[0].failures), (at(T0 + 60_000), 1), "the claim counts a run");
        assert!(s.due(at(T0 + 59_999), 10).await.unwrap().is_empty(), "leased until the claim's end");
        assert_eq!(s.due(at(T0 + 60_000), 10).await.unwrap().len(), 1, "due again when the lease ends");
        let again = s.claim(&key, at(T0 + 60_000), at(T0 + 120_000)).await.unwrap().expect("claimed again");
        assert_eq!(again.failures, 2, "every run without an outcome counts");
        commit(&*s, T0, vec![Change::SetTimer(data("t", "x", T0 + 200_000, 1))]).await.unwrap();
        assert_eq!(
            s.timer(&key).await.unwrap().expect("set").failures,
            0,
            "an outcome starts the count again"
        );
    }

    pub async fn a_timer_not_due_or_not_set_cannot_be_claimed<S: Storage>(s: Arc<S>) {
        commit(&*s, T0, vec![Change::SetTimer(data("t", "x", T0 + 100, 1))]).await.unwrap();
        assert_eq!(s.claim(&TimerKey::new("t", "x"), at(T0), at(T0 + 1_000)).await.unwrap(), None);
        assert_eq!(s.claim(&TimerKey::new("t", "nope"), at(T0), at(T0 + 1_000)).await.unwrap(), None);
        assert_eq!(s.timer(&TimerKey::new("t", "x")).await.unwrap().expect("set").timer.due, at(T0 + 100));
    }

    pub async fn failed_runs_are_counted_until_the_timer_changes<S: Storage>(s: Arc<S>) {
        let key = TimerKey::new("t", "x");
        commit(&*s, T0, vec![Change::SetTimer(data("t", "x", T0, 1))]).await.unwrap();
        for n in 1..=3 {
            commit(&*s, T0, vec![Change::TimerFailed { key: key.clone(), retry_at: at(T0 + n * 100) }])
                .await
                .unwrap();
            let t = s.timer(&key).await.unwrap().expect("set");
            assert_eq!((t.failures, t.timer.due), (u32::try_from(n).unwrap(), at(T0 + n * 100)));
        }
        commit(&*s, T0, vec![Change::SetTimer(data("t", "x", T0 + 1_000, 1))]).await.unwrap();
        assert_eq!(
            s.timer(&key).await.unwrap().expect("set").failures,
            0,
            "a new time starts the count again"
        );
        commit(&*s, T0, vec![Change::TimerFailed { key: TimerKey::new("t", "gone"), retry_at: at(T0) }])
            .await
            .unwrap();
        assert!(s.timer(&TimerKey::new("t", "gone")).await.unwrap().is_none(), "a failure sets no timer");
    }

    pub async fn data_timers_keep_their_payload<S: Storage>(s: Arc<S>) {
        let t = Timer {
            key: TimerKey::new("trigger", "follow-up/ann@example.com"),
            due: at(T0),
            payload: TimerPayload::Data(
                json!({"rule": "follow-up", "entity": "ann@example.com", "n": [1, 2.5, null]}),
            ),
        };
        commit(&*s, T0, vec![Change::SetTimer(t.clone())]).await.unwrap();
        assert_eq!(s.due(at(T0), 10).await.unwrap(), vec![t.clone()]);
        assert_eq!(s.timer(&t.key).await.unwrap().expect("set").timer, t);
    }
}

/// Checks of the dedup index.
pub mod dedup {
    use super::*;

    pub async fn a_key_is_held_by_its_event_until_its_time<S: Storage>(s: Arc<S>) {
        let id = accept(&*s, "src", Some("k1"), T0).await;
        let src = SourceId::new("src");
        assert_eq!(s.holder(&src, "k1", at(T0 + 59_999)).await.unwrap(), Some(id));
        assert_eq!(s.holder(&src, "k1", at(T0 + 60_000)).await.unwrap(), None, "free at its time");
        assert_eq!(s.holder(&src, "k2", at(T0)).await.unwrap(), None);
        let late = accept(&*s, "src", Some("k1"), T0 + 60_000).await;
        assert_eq!(
            s.holder(&src, "k1", at(T0 + 60_001)).await.unwrap(),
            Some(late),
            "a free key is taken again"
        );
    }

    pub async fn a_held_key_refuses_the_accept_and_changes_nothing<S: Storage>(s: Arc<S>) {
        let first = accept(&*s, "src", Some("k1"), T0).await;
        let again = new_event("src", Some("k1"), T0 + 1_000);
        let again_id = again.id.clone();
        let with_timer = vec![Change::Accept(again), Change::SetTimer(data("t", "x", T0, 1))];
        assert_eq!(conflict(commit(&*s, T0 + 1_000, with_timer).await), Conflict::Duplicate(first));
        assert!(s.event(&again_id).await.unwrap().is_none());
        assert!(s.timer(&TimerKey::new("t", "x")).await.unwrap().is_none(), "nothing of the commit applied");
    }

    pub async fn keys_are_per_source<S: Storage>(s: Arc<S>) {
        let a = accept(&*s, "a", Some("k"), T0).await;
        let b = accept(&*s, "b", Some("k"), T0).await;
        assert_ne!(a, b);
        assert_eq!(s.holder(&SourceId::new("b"), "k", at(T0)).await.unwrap(), Some(b));
    }

    pub async fn a_key_never_outlives_its_event<S: Storage>(s: Arc<S>) {
        let mut ev = new_event("src", None, T0);
        ev.dedup = Some(("k".into(), at(T0 + 90 * 86_400_000)));
        ev.retention = Duration::from_secs(3_600);
        let id = ev.id.clone();
        commit(&*s, T0, vec![Change::Accept(ev)]).await.unwrap();
        let src = SourceId::new("src");
        assert_eq!(s.holder(&src, "k", at(T0 + 3_599_999)).await.unwrap(), Some(id));
        assert_eq!(s.holder(&src, "k", at(T0 + 3_600_000)).await.unwrap(), None);
    }

    pub async fn of_concurrent_accepts_with_one_key_one_wins<S: Storage>(s: Arc<S>) {
        let tries = (0..8).map(|_| {
            let s = s.clone();
            async move {
                let ev = new_event("src", Some("same"), T0);
                let id = ev.id.clone();
                (id, commit(&*s, T0, vec![Change::Accept(ev)]).await)
            }
        });
        let mut won = Vec::new();
        let mut holders = Vec::new();
        for (id, r) in futures_util::future::join_all(tries).await {
            match r {
                Ok(()) => won.push(id),
                Err(CommitError::Conflict(Conflict::Duplicate(h))) => holders.push(h),
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(won.len(), 1, "one accept wins");
        assert!(holders.iter().all(|h| h == &won[0]), "the others name the winner");
    }

    /// For storages that forget dedup keys themselves: passes are bounded, a key still held is
    /// kept, a forgotten key is free again.
    pub async fn purge_forgets_expired_keys_in_bounded_passes<S: Storage>(s: Arc<S>) {
        for k in ["old1", "old2", "old3"] {
            accept(&*s, "src", Some(k), 1_000).await;
        }
        let held = accept(&*s, "src", Some("new"), 100_000).await;
        let first = s.purge(at(80_000), 2).await.unwrap();
        assert_eq!((first.events, first.dedup_keys, first.more), (0, 2, true), "{first:?}");
        let second = s.purge(at(80_000), 2).await.unwrap();
        assert_eq!((second.events, second.dedup_keys, second.more), (0, 1, false), "{second:?}");
        assert_eq!(s.purge(at(80_000), 2).await.unwrap(), crate::ports::Purged::default());
        let src = SourceId::new("src");
        assert_eq!(s.holder(&src, "new", at(100_001)).await.unwrap(), Some(held));
        assert_eq!(s.holder(&src, "old1", at(80_001)).await.unwrap(), None);
        accept(&*s, "src", Some("old1"), 80_001).await;
    }
}

/// Checks of the state store.
pub mod state {
    use super::*;

    pub async fn a_put_needs_the_version_it_read<S: Storage>(s: Arc<S>) {
        let key = StateKey::new("contact", "ann@example.com");
        let put = |v: u64, n: i64| Change::PutState {
            key: key.clone(),
            value: json!({"score": n}),
            read_version: v,
        };
        commit(&*s, T0, vec![put(0, 5)]).await.unwrap();
        let got = s.load(std::slice::from_ref(&key)).await.unwrap();
        assert_eq!(got[0].as_ref().map(|v| (v.version, v.value.clone())), Some((1, json!({"score": 5}))));
        assert_eq!(conflict(commit(&*s, T0, vec![put(0, 6)]).await), Conflict::StateMoved(key.clone()));
        commit(&*s, T0, vec![put(1, 7)]).await.unwrap();
        assert_eq!(conflict(commit(&*s, T0, vec![put(1, 8)]).await), Conflict::StateMoved(key.clone()));
        let got = s.load(std::slice::from_ref(&key)).await.unwrap();
        assert_eq!(got[0].as_ref().map(|v| (v.version, v.value.clone())), Some((2, json!({"score": 7}))));
    }

    pub async fn of_two_writers_of_one_version_one_wins<S: Storage>(s: Arc<S>) {
        let key = StateKey::new("contact", "bob");
        commit(&*s, T0, vec![Change::PutState { key: key.clone(), value: json!(0), read_version: 0 }])
            .await
            .unwrap();
        let tries =
            (0..6).map(|n| {
                let (s, key) = (s.clone(), key.clone());
                async move {
                    commit(&*s, T0, vec![Change::PutState { key, value: json!(n), read_version: 1 }]).await
                }
            });
        let mut ok = 0;
        for r in futures_util::future::join_all(tries).await {
            match r {
                Ok(()) => ok += 1,
                Err(CommitError::Conflict(Conflict::StateMoved(_))) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(ok, 1);
        assert_eq!(s.load(&[key]).await.unwrap()[0].as_ref().map(|v| v.version), Some(2));
    }

    pub async fn a_refused_put_refuses_its_whole_commit<S: Storage>(s: Arc<S>) {
        let key = StateKey::new("contact", "cy");
        let ev = new_event("src", None, T0);
        let id = ev.id.clone();
        let changes = vec![
            Change::Accept(ev),
            Change::SetTimer(data("trigger", "cy", T0 + 10, 1)),
            Change::PutState { key: key.clone(), value: json!(1), read_version: 3 },
        ];
        assert_eq!(conflict(commit(&*s, T0, changes).await), Conflict::StateMoved(key.clone()));
        assert!(s.event(&id).await.unwrap().is_none(), "the event of a refused commit is not stored");
        assert!(s.timer(&TimerKey::new("trigger", "cy")).await.unwrap().is_none(), "nor its timer");
        assert_eq!(s.load(&[key]).await.unwrap(), vec![None]);
    }

    pub async fn load_answers_in_the_order_of_the_keys<S: Storage>(s: Arc<S>) {
        let (a, b, c) = (StateKey::new("k", "a"), StateKey::new("k", "b"), StateKey::new("k", "c"));
        let changes = vec![
            Change::PutState { key: a.clone(), value: json!("A"), read_version: 0 },
            Change::PutState { key: c.clone(), value: json!("C"), read_version: 0 },
        ];
        commit(&*s, T0, changes).await.unwrap();
        let got: Vec<Option<serde_json::Value>> =
            s.load(&[c, b, a]).await.unwrap().into_iter().map(|v| v.map(|v| v.value)).collect();
        assert_eq!(got, vec![Some(json!("C")), None, Some(json!("A"))]);
    }
}

/// Checks of commits of the delivery pipeline.
pub mod commit {
    use super::*;

    pub async fn a_dispatch_records_its_run_once_and_sets_attempt_timers<S: Storage>(s: Arc<S>) {
        let id = accept(&*s, "src", None, T0).await;
        let open = delivery("r1", T0 + 5);
        let mut dead = delivery("r2", T0 + 5);
        dead.status = DeliveryStatus::Dead;
        dead.next_attempt_at = None;
        let change = || Change::Dispatch {
            event: id.clone(),
            deliveries: vec![open.clone(), dead.clone()],
            error: None,
        };
        commit(&*s, T0 + 5, vec![change()]).await.unwrap();
        assert_eq!(conflict(commit(&*s, T0 + 6, vec![change()]).await), Conflict::AlreadyDone);
        let ev = s.event(&id).await.unwrap().expect("stored");
        assert_eq!((ev.dispatches, ev.deliveries.len(), ev.dispatched_at), (1, 2, Some(at(T0 + 5))));
        assert!(s.timer(&TimerKey::dispatch(&id)).await.unwrap().is_none(), "the dispatch is done");
        let jobs: Vec<Job> =
            s.due(at(T0 + 5), 10).await.unwrap().iter().filter_map(|t| t.as_job().cloned()).collect();
        assert_eq!(
            jobs,
            vec![Job::Attempt(id.clone(), open.id.clone())],
            "a timer for the open delivery only"
        );
        let other = EventId::generate();
        let change = Change::Dispatch { event: other.clone(), deliveries: Vec::new(), error: None };
        assert_eq!(conflict(commit(&*s, T0, vec![change]).await), Conflict::NoSuchEvent(other));
    }

    pub async fn an_attempt_moves_its_timer_and_a_final_one_clears_it<S: Storage>(s: Arc<S>) {
        let id = accept(&*s, "src", None, T0).await;
        let mut d = delivery("r1", T0);
        commit(
            &*s,
            T0,
            vec![Change::Dispatch { event: id.clone(), deliveries: vec![d.clone()], error: None }],
        )
        .await
        .unwrap();
        d.status = DeliveryStatus::Retrying;
        d.attempts = 1;
        d.next_attempt_at = Some(at(T0 + 30_000));
        commit(&*s, T0 + 10, vec![Change::Attempt { event: id.clone(), delivery: d.clone() }]).await.unwrap();
        let key = TimerKey::attempt(&id, &d.id);
        assert_eq!(s.timer(&key).await.unwrap().expect("set").timer.due, at(T0 + 30_000));
        assert_eq!(s.event(&id).await.unwrap().expect("stored").status(), EventStatus::Retrying);
        d.status = DeliveryStatus::Delivered;
        d.attempts = 2;
        d.next_attempt_at = None;
        commit(&*s, T0 + 30_000, vec![Change::Attempt { event: id.clone(), delivery: d.clone() }])
            .await
            .unwrap();
        assert!(s.timer(&key).await.unwrap().is_none());
        assert_eq!(s.delivery(&id, &d.id).await.unwrap().map(|(_, d)| d), Some(d));
        assert_eq!(s.event(&id).await.unwrap().expect("stored").status(), EventStatus::Delivered);
    }

    pub async fn an_attempt_of_a_final_delivery_is_already_done<S: Storage>(s: Arc<S>) {
        let id = accept(&*s, "src", None, T0).await;
        let mut d = delivery("r1", T0);
        commit(
            &*s,
            T0,
            vec![Change::Dispatch { event: id.clone(), deliveries: vec![d.clone()], error: None }],
        )
        .await
        .unwrap();
        d.status = DeliveryStatus::Delivered;
        d.attempts = 1;
        d.next_attempt_at = None;
        commit(&*s, T0, vec![Change::Attempt { event: id.clone(), delivery: d.clone() }]).await.unwrap();
        let mut late = d.clone();
        late.status = DeliveryStatus::Dead;
        late.last_error = Some("a second run".into());
        assert_eq!(
            conflict(commit(&*s, T0, vec![Change::Attempt { event: id.clone(), delivery: late }]).await),
            Conflict::AlreadyDone
        );
        assert_eq!(s.delivery(&id, &d.id).await.unwrap().map(|(_, d)| d), Some(d.clone()), "unchanged");
        let stray = delivery("r9", T0);
        let stray_id = stray.id.clone();
        assert_eq!(
            conflict(commit(&*s, T0, vec![Change::Attempt { event: id.clone(), delivery: stray }]).await),
            Conflict::NoSuchDelivery(id, stray_id)
        );
    }

    pub async fn a_replay_sets_the_dispatch_again_and_keeps_the_history<S: Storage>(s: Arc<S>) {
        let id = accept(&*s, "src", None, T0).await;
        let d = delivery("r1", T0);
        commit(
            &*s,
            T0,
            vec![Change::Dispatch { event: id.clone(), deliveries: vec![d.clone()], error: None }],
        )
        .await
        .unwrap();
        commit(&*s, T0 + 100, vec![Change::Replay { event: id.clone() }]).await.unwrap();
        let t = s.timer(&TimerKey::dispatch(&id)).await.unwrap().expect("dispatch again");
        assert_eq!(t.timer.due, at(T0 + 100));
        let d2 = delivery("r1", T0 + 100);
        commit(
            &*s,
            T0 + 100,
            vec![Change::Dispatch { event: id.clone(), deliveries: vec![d2.clone()], error: None }],
        )
        .await
        .unwrap();
        let ev = s.event(&id).await.unwrap().expect("stored");
        assert_eq!((ev.dispatches, ev.deliveries.len()), (2, 2));
        assert_eq!(ev.current_deliveries(), &[d2][..]);
        let other = EventId::generate();
        assert_eq!(
            conflict(commit(&*s, T0, vec![Change::Replay { event: other.clone() }]).await),
            Conflict::NoSuchEvent(other)
        );
    }

    pub async fn a_failed_condition_refuses_the_whole_commit<S: Storage>(s: Arc<S>) {
        let id = accept(&*s, "src", None, T0).await;
        commit(&*s, T0, vec![Change::Dispatch { event: id.clone(), deliveries: Vec::new(), error: None }])
            .await
            .unwrap();
        let changes = vec![
            Change::SetTimer(data("t", "x", T0, 1)),
            Change::PutState { key: StateKey::new("k", "a"), value: json!(1), read_version: 0 },
            Change::Dispatch { event: id.clone(), deliveries: vec![delivery("r1", T0)], error: None },
        ];
        assert_eq!(conflict(commit(&*s, T0, changes).await), Conflict::AlreadyDone);
        assert!(s.timer(&TimerKey::new("t", "x")).await.unwrap().is_none());
        assert_eq!(s.load(&[StateKey::new("k", "a")]).await.unwrap(), vec![None]);
        assert!(s.event(&id).await.unwrap().expect("stored").deliveries.is_empty());
    }

    /// Accept and dispatch in one commit (routes evaluated at ingest): the event is stored
    /// dispatched, its open deliveries have their attempt timers, no dispatch is due; a held
    /// dedup key refuses all of it.
    pub async fn an_event_accepted_and_dispatched_at_once_has_its_deliveries_and_no_dispatch<S: Storage>(
        s: Arc<S>,
    ) {
        let ev = new_event("src", Some("k1"), T0);
        let id = ev.id.clone();
        let (open, mut dead) = (delivery("r1", T0), delivery("r2", T0));
        dead.status = DeliveryStatus::Dead;
        dead.next_attempt_at = None;
        dead.last_error = Some("mapping: missing field".into());
        let both = |ev, id: &EventId| {
            vec![
                Change::Accept(ev),
                Change::Dispatch {
                    event: id.clone(),
                    deliveries: vec![open.clone(), dead.clone()],
                    error: None,
                },
            ]
        };
        commit(&*s, T0 + 2, both(ev, &id)).await.unwrap();
        let rec = s.event(&id).await.unwrap().expect("stored");
        assert_eq!((rec.dispatches, rec.deliveries.len(), rec.status()), (1, 2, EventStatus::Pending));
        assert!(s.timer(&TimerKey::dispatch(&id)).await.unwrap().is_none(), "no dispatch is due");
        let jobs: Vec<Job> =
            s.due(at(T0 + 2), 10).await.unwrap().iter().filter_map(|t| t.as_job().cloned()).collect();
        assert_eq!(jobs, vec![Job::Attempt(id.clone(), open.id.clone())]);
        assert_eq!(s.body(&id).await.unwrap().as_deref(), Some(&b"{\"a\":1}"[..]));
        let again = new_event("src", Some("k1"), T0 + 5);
        let again_id = again.id.clone();
        assert_eq!(conflict(commit(&*s, T0 + 5, both(again, &again_id)).await), Conflict::Duplicate(id));
        assert!(s.event(&again_id).await.unwrap().is_none(), "nothing of the refused commit is stored");
    }

    /// A 50-route fan-out whose attempts all finish at once: each records once; the same
    /// outcomes again (a queue handing every message over twice) are all refused.
    pub async fn fifty_concurrent_attempts_of_one_event_each_record_once<S: Storage>(s: Arc<S>) {
        let id = accept(&*s, "src", None, T0).await;
        let deliveries: Vec<_> = (0..50).map(|n| delivery(&format!("r{n}"), T0)).collect();
        commit(
            &*s,
            T0,
            vec![Change::Dispatch { event: id.clone(), deliveries: deliveries.clone(), error: None }],
        )
        .await
        .unwrap();
        let run = |round: u32| {
            let tries = deliveries.iter().map(|d| {
                let (s, id, mut d) = (s.clone(), id.clone(), d.clone());
                d.status = DeliveryStatus::Delivered;
                d.attempts = round;
                d.last_status = Some(200);
                d.next_attempt_at = None;
                async move { commit(&*s, T0 + 1, vec![Change::Attempt { event: id, delivery: d }]).await }
            });
            futures_util::future::join_all(tries)
        };
        for r in run(1).await {
            r.expect("each first outcome records");
        }
        for r in run(2).await {
            assert_eq!(conflict(r), Conflict::AlreadyDone, "a second outcome never records");
        }
        let ev = s.event(&id).await.unwrap().expect("stored");
        assert_eq!(ev.deliveries.len(), 50);
        assert!(ev.deliveries.iter().all(|d| d.status == DeliveryStatus::Delivered && d.attempts == 1));
        assert_eq!(ev.status(), EventStatus::Delivered);
        assert!(s.due(at(u64::MAX / 2), 100).await.unwrap().is_empty(), "no timer left");
    }
}
