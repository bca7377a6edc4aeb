//! The store port's conformance suite on DynamoDB Local (+ moto S3 for large bodies): the same
//! checks the embedded store passes.

use hub_aws::blobs::Blobs;
use hub_aws::dynamo::DynamoStore;
use hub_aws::testing::{emulator_clients, unique};

/// A fresh table (and bucket for large bodies) on the emulators; `None` when they are not
/// running outside CI.
async fn fresh() -> Option<((), DynamoStore)> {
    let c = emulator_clients().await?;
    let table = unique("hub-test");
    hub_aws::dynamo::create_table(&c.dynamodb, &table).await.expect("create table");
    let bucket = unique("hub-bodies");
    c.s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    Some(((), DynamoStore::new(c.dynamodb.clone(), table, Blobs::new(c.s3.clone(), bucket), None)))
}

hub_core::store_conformance!(fresh);
hub_core::store_conformance!(dedup_purge: fresh);

/// Items expire (TTL) at the event's expiry: receipt plus its source's retention, re-armed by a
/// replay, on the event, its body and the deliveries written after.
#[tokio::test]
async fn dynamodb_items_expire_at_the_event_expiry() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use hub_core::ports::{NewEvent, Store};
    use hub_core::time::UnixMillis;
    use std::time::Duration;
    let Some(c) = emulator_clients().await else { return };
    let table = unique("hub-test");
    hub_aws::dynamo::create_table(&c.dynamodb, &table).await.expect("create table");
    let bucket = unique("hub-bodies");
    c.s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    let store = DynamoStore::new(
        c.dynamodb.clone(),
        table.clone(),
        Blobs::new(c.s3.clone(), bucket),
        Some(Duration::from_secs(30 * 86_400)),
    );
    let id = hub_core::ids::EventId::generate();
    let received = 1_700_000_000_000;
    store
        .accept(NewEvent {
            id: id.clone(),
            source: hub_core::ids::SourceId::new("src"),
            received_at: UnixMillis(received),
            method: "POST".into(),
            path: "/hooks/src".into(),
            query: None,
            headers: hub_core::request::Headers::new(),
            remote_addr: None,
            body: bytes::Bytes::from_static(b"{}"),
            dedup: Some(("k".into(), UnixMillis(received + 90 * 86_400_000))),
            retention: Duration::from_secs(2 * 86_400),
        })
        .await
        .expect("accept");
    let ttl = |sk: &'static str| {
        let (ddb, table, pk) = (c.dynamodb.clone(), table.clone(), format!("evt#{id}"));
        async move {
            let out = ddb
                .get_item()
                .table_name(table)
                .key("pk", AttributeValue::S(pk))
                .key("sk", AttributeValue::S(sk.into()))
                .consistent_read(true)
                .send()
                .await
                .expect("get");
            out.item
                .and_then(|i| i.get("ttl").and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u64>().ok()))
        }
    };
    let two_days = 2 * 86_400;
    assert_eq!(ttl("event").await, Some(received / 1000 + two_days));
    assert_eq!(ttl("body").await, Some(received / 1000 + two_days));
    let replay = received + 86_400_000;
    assert!(store.requeue(&id, UnixMillis(replay)).await.expect("requeue"));
    assert_eq!(ttl("event").await, Some(replay / 1000 + two_days), "a replay re-arms the event");
    assert_eq!(ttl("body").await, Some(replay / 1000 + two_days), "and its body");
    assert_eq!(store.expires_at(&id).await.expect("expiry"), Some(UnixMillis(replay + two_days * 1000)));
}

/// A fresh table of layout 2 (and a bucket) for the split storage ports.
async fn fresh_storage() -> Option<((), hub_aws::storage::DynamoStorage)> {
    let c = emulator_clients().await?;
    let table = unique("hub-v2");
    hub_aws::storage::create_table(&c.dynamodb, &table).await.expect("create table");
    let bucket = unique("hub-bodies");
    c.s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    Some((
        (),
        hub_aws::storage::DynamoStorage::new(
            c.dynamodb.clone(),
            table,
            Blobs::new(c.s3.clone(), bucket),
            true,
        ),
    ))
}

/// The wide store port on it.
async fn fresh_on_storage()
-> Option<((), hub_core::ports::legacy::OnStorage<hub_aws::storage::DynamoStorage>)> {
    fresh_storage().await.map(|(g, s)| (g, hub_core::ports::legacy::OnStorage::new(s)))
}

mod storage {
    use super::fresh_storage;
    hub_core::storage_conformance!(fresh_storage);
}

mod on_storage {
    use super::fresh_on_storage;
    hub_core::store_conformance!(fresh_on_storage);
}
