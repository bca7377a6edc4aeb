//! The storage ports' conformance suites on DynamoDB Local (+ moto S3 for large payloads): the
//! same checks the memory and embedded storages pass.

use hub_aws::blobs::Blobs;
use hub_aws::storage::DynamoStorage;
use hub_aws::testing::{emulator_clients, unique};

/// A fresh table of layout 2 and a bucket on the emulators; `None` when they are not running
/// outside CI.
async fn fresh_storage() -> Option<((), DynamoStorage)> {
    let c = emulator_clients().await?;
    let table = unique("hub-test");
    hub_aws::storage::create_table(&c.dynamodb, &table).await.expect("create table");
    let bucket = unique("hub-bodies");
    c.s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    Some(((), DynamoStorage::new(c.dynamodb.clone(), table, Blobs::new(c.s3.clone(), bucket), true)))
}

mod storage {
    use super::fresh_storage;
    hub_core::storage_conformance!(fresh_storage);
}

/// The mapping repository on a fresh table.
async fn fresh_mappings() -> Option<((), hub_aws::mappings::MappingRepo)> {
    let c = emulator_clients().await?;
    let table = unique("hub-maps");
    hub_aws::storage::create_table(&c.dynamodb, &table).await.expect("create table");
    Some(((), hub_aws::mappings::MappingRepo::new(c.dynamodb.clone(), table)))
}

hub_core::mapping_store_conformance!(fresh_mappings);
