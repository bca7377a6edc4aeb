//! The store port's conformance suite on DynamoDB Local (+ moto S3 for large bodies): the same
//! checks the embedded store passes.

use hub_aws::blobs::Blobs;
use hub_aws::dynamo::DynamoStore;
use hub_aws::testing::{emulator_clients, unique};

#[tokio::test]
async fn dynamodb_store_passes_the_store_conformance_suite() {
    let Some(c) = emulator_clients().await else { return };
    let mut stores = Vec::new();
    for _ in 0..hub_core::conformance::CHECKS {
        let table = unique("hub-test");
        hub_aws::dynamo::create_table(&c.dynamodb, &table).await.expect("create table");
        let bucket = unique("hub-bodies");
        c.s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
        stores.push(DynamoStore::new(c.dynamodb.clone(), table, Blobs::new(c.s3.clone(), bucket), None));
    }
    let mut stores = stores.into_iter();
    hub_core::conformance::run_all(|| stores.next().expect("one store per check")).await;
}
