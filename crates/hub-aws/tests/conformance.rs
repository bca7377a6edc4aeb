//! The store port's conformance suite on DynamoDB Local (+ moto S3 for large bodies): the same
//! checks the embedded store passes.

mod support;

use hub_aws::blobs::Blobs;
use hub_aws::dynamo::DynamoStore;

#[tokio::test]
async fn dynamodb_store_passes_the_store_conformance_suite() {
    let Some(c) = support::clients().await else { return };
    let mut stores = Vec::new();
    for _ in 0..hub_core::conformance::CHECKS {
        let table = support::table(&c).await;
        let blobs = Blobs::new(c.s3.clone(), support::bucket(&c).await);
        stores.push(DynamoStore::new(c.dynamodb.clone(), table, blobs, None));
    }
    let mut stores = stores.into_iter();
    hub_core::conformance::run_all(|| stores.next().expect("one store per check")).await;
}
