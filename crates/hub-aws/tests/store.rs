//! The DynamoDB storage (layout 2) and mapping repository on DynamoDB Local: what only the AWS
//! shell relies on (idempotent accepts, documents too large for an item, TTL, push tokens).

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use hub_aws::AwsError;
use hub_aws::blobs::Blobs;
use hub_aws::mappings::MappingRepo;
use hub_aws::storage::DynamoStorage;
use hub_aws::testing::{emulator_clients, unique};
use hub_core::event::{DeliveryRecord, DeliveryStatus, OutgoingRequest};
use hub_core::ids::{DeliveryId, EventId, RouteId, SourceId};
use hub_core::ports::NewEvent;
use hub_core::ports::commit::{Change, Commit, Committer};
use hub_core::ports::log::EventLog;
use hub_core::ports::schedule::{Scheduler, TimerKey};
use hub_core::request::Headers;
use hub_core::time::UnixMillis;
use std::time::Duration;

async fn storage(c: &hub_aws::Clients) -> (DynamoStorage, String) {
    let table = unique("hub-store");
    hub_aws::storage::create_table(&c.dynamodb, &table).await.expect("create table");
    let bucket = unique("hub-bodies");
    c.s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    (DynamoStorage::new(c.dynamodb.clone(), table.clone(), Blobs::new(c.s3.clone(), bucket), true), table)
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
        dedup: Some(("k-1".into(), UnixMillis(at + 60_000))),
        retention: Duration::from_secs(2 * 86_400),
    }
}

fn delivery(at: u64, body: Bytes) -> DeliveryRecord {
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
            body,
        }),
    }
}

#[tokio::test]
async fn an_accept_sent_again_after_it_succeeded_is_acknowledged_not_refused() {
    let Some(c) = emulator_clients().await else { return };
    let (s, _) = storage(&c).await;
    // An SDK retry of a write whose response was lost sends the same request again.
    let ev = event(1_000);
    let id = ev.id.clone();
    s.commit(Commit::new(UnixMillis(1_000)).with(Change::Accept(ev.clone()))).await.expect("first");
    s.commit(Commit::new(UnixMillis(1_000)).with(Change::Accept(ev))).await.expect("the same accept again");
    let due = s.due(UnixMillis(2_000), 10).await.expect("due");
    assert_eq!(due.iter().map(|t| t.key.clone()).collect::<Vec<_>>(), vec![TimerKey::dispatch(&id)]);
}

/// A dedup key whose event was never stored (its writer failed between the two writes) is
/// taken over by the next copy once no writer can still be at it; before that, the copy is
/// answered with a retryable conflict, never as a duplicate of nothing.
#[tokio::test]
async fn a_dedup_key_of_an_event_never_stored_is_taken_over() {
    let Some(c) = emulator_clients().await else { return };
    let (s, table) = storage(&c).await;
    let received = 10_000_000;
    let put_key = |at: u64| {
        let (ddb, table) = (c.dynamodb.clone(), table.clone());
        async move {
            let pk = {
                use sha2::Digest;
                format!("k#shop#{}", hex::encode(sha2::Sha256::digest(b"k-1")))
            };
            ddb.put_item()
                .table_name(table)
                .item("pk", AttributeValue::S(pk))
                .item("sk", AttributeValue::S("k".into()))
                .item("ev", AttributeValue::S("evt_never_stored".into()))
                .item("until", AttributeValue::N((received + 60_000).to_string()))
                .item("at", AttributeValue::N(at.to_string()))
                .send()
                .await
                .expect("put");
        }
    };
    put_key(received - 1_000).await;
    let ev = event(received);
    let r = s.commit(Commit::new(UnixMillis(received)).with(Change::Accept(ev.clone()))).await;
    assert!(
        matches!(&r, Err(hub_core::ports::commit::CommitError::Store(e)) if e.is_retryable()),
        "a fresh key is someone's write in progress: {r:?}"
    );
    put_key(received - hub_aws::storage::DEDUP_TAKEOVER_MS - 1).await;
    s.commit(Commit::new(UnixMillis(received)).with(Change::Accept(ev.clone()))).await.expect("taken over");
    assert!(s.event(&ev.id).await.expect("read").is_some());
}

/// A rendered request too large for an item (a raw forward of a big body) is kept in the
/// bucket, read back whole, and replaced by its attempt's outcome.
#[tokio::test]
async fn a_delivery_too_large_for_an_item_is_kept_in_the_bucket() {
    let Some(c) = emulator_clients().await else { return };
    let (s, _) = storage(&c).await;
    let ev = event(1_000);
    let id = ev.id.clone();
    s.commit(Commit::new(UnixMillis(1_000)).with(Change::Accept(ev))).await.expect("accept");
    // Random-looking bytes do not deflate: about 1.5 MB stays 1.5 MB.
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut d = delivery(1_000, Bytes::from(big.clone()));
    let change = Change::Dispatch { event: id.clone(), deliveries: vec![d.clone()], error: None };
    s.commit(Commit::new(UnixMillis(1_000)).with(change)).await.expect("dispatch");
    let (_, got) = s.delivery(&id, &d.id).await.expect("read").expect("stored");
    assert_eq!(got.request.as_ref().map(|r| r.body.len()), Some(big.len()));
    assert_eq!(got, d);
    d.status = DeliveryStatus::Delivered;
    d.attempts = 1;
    d.next_attempt_at = None;
    s.commit(Commit::new(UnixMillis(2_000)).with(Change::Attempt { event: id.clone(), delivery: d.clone() }))
        .await
        .expect("attempt");
    let ev = s.event(&id).await.expect("read").expect("stored");
    assert_eq!(ev.deliveries, vec![d]);
}

/// Every item of an event expires (TTL) at its expiry: receipt plus its retention, moved by a
/// dispatch or replay; the dedup key at its own end.
#[tokio::test]
async fn items_expire_at_the_event_expiry() {
    let Some(c) = emulator_clients().await else { return };
    let (s, table) = storage(&c).await;
    let received = 1_700_000_000_000;
    let ev = event(received);
    let id = ev.id.clone();
    s.commit(Commit::new(UnixMillis(received)).with(Change::Accept(ev))).await.expect("accept");
    let ttl = |pk: String, sk: String| {
        let (ddb, table) = (c.dynamodb.clone(), table.clone());
        async move {
            let out = ddb
                .get_item()
                .table_name(table)
                .key("pk", AttributeValue::S(pk))
                .key("sk", AttributeValue::S(sk))
                .consistent_read(true)
                .send()
                .await
                .expect("get");
            out.item
                .and_then(|i| i.get("ttl").and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u64>().ok()))
        }
    };
    let two_days = 2 * 86_400;
    let epk = format!("e#{id}");
    assert_eq!(ttl(epk.clone(), "e".into()).await, Some(received / 1000 + two_days));
    let replay = received + 86_400_000;
    s.commit(Commit::new(UnixMillis(replay)).with(Change::Replay { event: id.clone() }))
        .await
        .expect("replay");
    assert_eq!(
        ttl(epk.clone(), "e".into()).await,
        Some(replay / 1000 + two_days),
        "a replay re-arms the event"
    );
    let d = delivery(replay, Bytes::from_static(b"{}"));
    let change = Change::Dispatch { event: id.clone(), deliveries: vec![d.clone()], error: None };
    s.commit(Commit::new(UnixMillis(replay)).with(change)).await.expect("dispatch");
    assert_eq!(ttl(epk, format!("d#{}", d.id)).await, Some(replay / 1000 + two_days), "its deliveries too");
    assert_eq!(s.expires_at(&id).await.expect("expiry"), Some(UnixMillis(replay + two_days * 1000)));
}

#[tokio::test]
async fn a_failed_or_losing_push_leaves_nothing_a_reader_loads() {
    let Some(c) = emulator_clients().await else { return };
    let table = unique("hub-maps");
    hub_aws::storage::create_table(&c.dynamodb, &table).await.expect("create table");
    let repo = MappingRepo::new(c.dynamodb.clone(), &table);
    let file = |n: &str, t: &str| (n.to_string(), t.to_string());
    assert_eq!(repo.push(&[file("a.yaml", "a1"), file("old.yaml", "o1")], 1).await.expect("v1"), 1);
    // Two pushes start from version 1; the second commits first, the first then loses.
    let loser = repo.stage(&[file("a.yaml", "lost"), file("z.yaml", "lost")]).await.expect("stage");
    let winner = repo.stage(&[file("a.yaml", "a2")]).await.expect("stage");
    assert_eq!(repo.commit(&winner, 1, 2).await.expect("winner"), 2);
    assert!(matches!(repo.commit(&loser, 1, 3).await, Err(AwsError::PushConflict { .. })));
    // A push that stops after writing its files (no pointer move) is invisible as well.
    repo.stage(&[file("b.yaml", "crashed")]).await.expect("stage");
    let (pointer, files) = repo.load_current().await.expect("load");
    assert_eq!(pointer.version, 2);
    assert_eq!(files, vec![file("a.yaml", "a2")], "exactly the winner's files: no old, lost or crashed ones");
    // The next push starts from version 2 and sees only its own files too.
    assert_eq!(repo.push(&[file("c.yaml", "c3")], 4).await.expect("v3"), 3);
    assert_eq!(repo.load_current().await.expect("load").1, vec![file("c.yaml", "c3")]);
}
