//! The DynamoDB store and mapping repository on DynamoDB Local: what only the AWS shell relies
//! on (job runs, sweeps, push tokens, idempotent accepts, the event item's size).

use bytes::Bytes;
use hub_aws::blobs::Blobs;
use hub_aws::dynamo::{Begin, DynamoStore};
use hub_aws::mappings::MappingRepo;
use hub_aws::metrics::Metrics;
use hub_aws::testing::{emulator_clients, unique};
use hub_aws::{AwsError, Clients};
use hub_core::event::{DeliveryRecord, DeliveryStatus, EventStatus, OutgoingRequest};
use hub_core::ids::{DeliveryId, EventId, RouteId, SourceId};
use hub_core::ports::{Acceptance, Job, NewEvent, Store};
use hub_core::request::Headers;
use hub_core::time::UnixMillis;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn store(c: &Clients) -> (DynamoStore, Arc<Mutex<Vec<String>>>) {
    let table = unique("hub-store");
    hub_aws::dynamo::create_table(&c.dynamodb, &table).await.expect("create table");
    let bucket = unique("hub-bodies");
    c.s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    let (metrics, lines) = Metrics::memory("hub/test");
    let s = DynamoStore::new(c.dynamodb.clone(), table, Blobs::new(c.s3.clone(), bucket), None)
        .with_metrics(metrics);
    (s, lines)
}

fn event(at: u64) -> NewEvent {
    NewEvent {
        id: EventId::generate(),
        source: SourceId::new("shop"),
        received_at: UnixMillis(at),
        method: "POST".into(),
        path: "/hooks/shop".into(),
        query: None,
        headers: Headers::new(),
        remote_addr: None,
        body: Bytes::from_static(b"{\"a\":1}"),
        dedup: None,
        retention: std::time::Duration::from_secs(30 * 24 * 3600),
    }
}

fn delivery(at: u64) -> DeliveryRecord {
    DeliveryRecord {
        id: DeliveryId::generate(),
        route: RouteId::new("crm"),
        status: DeliveryStatus::Pending,
        attempts: 0,
        created_at: UnixMillis(at),
        next_attempt_at: Some(UnixMillis(at)),
        last_attempt_at: None,
        last_status: None,
        last_error: None,
        request: Some(OutgoingRequest {
            method: "POST".into(),
            url: "https://crm.example/leads".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from_static(b"{}"),
        }),
    }
}

#[tokio::test]
async fn an_accept_sent_again_after_it_succeeded_is_acknowledged_not_refused() {
    let Some(c) = emulator_clients().await else { return };
    let (s, _) = store(&c).await;
    // An SDK retry of a transaction whose response was lost sends the same request again.
    let ev = event(1_000);
    let id = ev.id.clone();
    assert_eq!(s.accept(ev.clone()).await.expect("first"), Acceptance::Accepted(id.clone()));
    assert_eq!(s.accept(ev).await.expect("the same accept again"), Acceptance::Accepted(id.clone()));
    assert_eq!(s.due_jobs(UnixMillis(2_000), 10).await.expect("due"), vec![Job::Dispatch(id)]);
}

#[tokio::test]
async fn a_failed_or_losing_push_leaves_nothing_a_reader_loads() {
    let Some(c) = emulator_clients().await else { return };
    let table = unique("hub-maps");
    hub_aws::dynamo::create_table(&c.dynamodb, &table).await.expect("create table");
    let repo = MappingRepo::new(c.dynamodb.clone(), &table);
    let file = |n: &str, t: &str| (n.to_string(), t.to_string());
    assert_eq!(repo.push(&[file("a.yaml", "a1"), file("old.yaml", "o1")], 1).await.expect("v1"), 1);
    // Two pushes start from version 1; the second commits first, the first then loses.
    let loser = repo.stage(&[file("a.yaml", "lost"), file("z.yaml", "lost")]).await.expect("stage");
    let winner = repo.stage(&[file("a.yaml", "a2")]).await.expect("stage");
    assert_eq!(repo.commit(&winner, 1, 2).await.expect("winner"), 2);
    assert!(matches!(repo.commit(&loser, 1, 3).await, Err(AwsError::Conflict(_))));
    // A push that stops after writing its files (no pointer move) is invisible as well.
    repo.stage(&[file("b.yaml", "crashed")]).await.expect("stage");
    let (pointer, files) = repo.load_current().await.expect("load");
    assert_eq!(pointer.version, 2);
    assert_eq!(files, vec![file("a.yaml", "a2")], "exactly the winner's files: no old, lost or crashed ones");
    // The next push starts from version 2 and sees only its own files too.
    assert_eq!(repo.push(&[file("c.yaml", "c3")], 4).await.expect("v3"), 3);
    assert_eq!(repo.load_current().await.expect("load").1, vec![file("c.yaml", "c3")]);
}

#[tokio::test]
async fn a_run_holds_its_job_and_a_job_whose_runs_never_end_is_found_out() {
    let Some(c) = emulator_clients().await else { return };
    let (s, _) = store(&c).await;
    let ev = event(1_000);
    let id = ev.id.clone();
    s.accept(ev).await.expect("accept");
    let job = Job::Dispatch(id.clone());
    let lease = Duration::from_secs(60);
    let run = Begin::Run { source: SourceId::new("shop") };
    assert_eq!(s.begin(&job, UnixMillis(2_000), lease, 3).await.expect("begin"), run);
    // A duplicate message while the run holds the job.
    assert_eq!(
        s.begin(&job, UnixMillis(3_000), lease, 3).await.expect("begin"),
        Begin::Busy(UnixMillis(62_000))
    );
    // The run died without an outcome; its lease ends and the job is run again, twice more.
    assert_eq!(s.begin(&job, UnixMillis(62_000), lease, 3).await.expect("begin"), run);
    assert_eq!(s.begin(&job, UnixMillis(122_000), lease, 3).await.expect("begin"), run);
    assert_eq!(s.begin(&job, UnixMillis(182_000), lease, 3).await.expect("begin"), Begin::Poisoned(3));
    // An outcome clears the count: after a replay the job runs again.
    assert!(
        s.save_dispatch(&id, vec![], Some("cannot be processed".into()), UnixMillis(183_000))
            .await
            .expect("save")
    );
    assert_eq!(
        s.begin(&job, UnixMillis(184_000), lease, 3).await.expect("begin"),
        Begin::Nothing,
        "ran already"
    );
    assert!(s.requeue(&id, UnixMillis(185_000)).await.expect("replay"));
    assert_eq!(s.begin(&job, UnixMillis(186_000), lease, 3).await.expect("begin"), run);
}

#[tokio::test]
async fn a_sweep_claims_the_jobs_it_returns() {
    let Some(c) = emulator_clients().await else { return };
    let (s, _) = store(&c).await;
    let ev = event(1_000);
    let id = ev.id.clone();
    s.accept(ev).await.expect("accept");
    let until = UnixMillis(900_000);
    assert_eq!(s.sweep(UnixMillis(5_000), 10, until).await.expect("sweep"), vec![Job::Dispatch(id.clone())]);
    assert!(
        s.sweep(UnixMillis(6_000), 10, until).await.expect("sweep").is_empty(),
        "claimed by the first sweep"
    );
    // Its run never came: once the claim has passed, the next sweep sends it again.
    assert_eq!(
        s.sweep(UnixMillis(900_000), 10, UnixMillis(1_800_000)).await.expect("sweep"),
        vec![Job::Dispatch(id)]
    );
}

#[tokio::test]
async fn a_dispatch_too_large_for_the_event_item_is_recorded_failed_and_counted() {
    let Some(c) = emulator_clients().await else { return };
    let (s, lines) = store(&c).await;
    let ev = event(1_000);
    let id = ev.id.clone();
    s.accept(ev).await.expect("accept");
    // Each open delivery takes ~150 bytes of the event item: 4,000 do not fit 300 KB.
    let many: Vec<DeliveryRecord> = (0..4_000).map(|_| delivery(2_000)).collect();
    assert!(s.save_dispatch(&id, many, None, UnixMillis(2_000)).await.expect("recorded, not unavailable"));
    let rec = s.event(&id).await.expect("read").expect("event");
    assert_eq!(rec.status(), EventStatus::Dead);
    let err = rec.dispatch_error.expect("reason");
    assert!(err.contains("4000 deliveries are more than one event can record"), "{err}");
    assert!(s.due_jobs(UnixMillis(10_000), 10).await.expect("due").is_empty(), "nothing comes back");
    let lines = lines.lock().expect("lines");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(r#""kind":"dispatch""#) && lines[0].contains("DeadEvents"), "{}", lines[0]);
}

#[tokio::test]
async fn every_delivery_that_becomes_dead_is_counted_once() {
    let Some(c) = emulator_clients().await else { return };
    let (s, lines) = store(&c).await;
    let ev = event(1_000);
    let id = ev.id.clone();
    s.accept(ev).await.expect("accept");
    let ok = delivery(2_000);
    let mut unrenderable = delivery(2_000);
    unrenderable.status = DeliveryStatus::Dead;
    unrenderable.request = None;
    unrenderable.last_error = Some("mapping: `email` is required".into());
    s.save_dispatch(&id, vec![ok.clone(), unrenderable], None, UnixMillis(2_000)).await.expect("dispatch");
    let mut gone = ok.clone();
    gone.status = DeliveryStatus::Dead;
    gone.next_attempt_at = None;
    gone.last_status = Some(401);
    gone.last_error = Some("401 Unauthorized".into());
    assert!(s.save_attempt(&id, gone.clone()).await.expect("attempt"));
    // A late duplicate outcome changes nothing and is not counted again.
    assert!(!s.save_attempt(&id, gone).await.expect("again"));
    let lines = lines.lock().expect("lines");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("is required") && lines[1].contains("401 Unauthorized"), "{lines:?}");
}
