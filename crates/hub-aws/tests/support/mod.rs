//! Test resources on the emulators `scripts/emulators` starts (DynamoDB Local, moto): each test
//! gets tables, buckets and queues of its own.

#![allow(dead_code)]

use hub_aws::Clients;

/// `None` (after saying why) when the emulators are not running; under CI that is a failure.
pub async fn clients() -> Option<Clients> {
    if std::env::var_os("HUB_TEST_DYNAMODB").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "HUB_TEST_DYNAMODB is not set: run the tests through scripts/test, which starts DynamoDB Local and moto"
        );
        eprintln!("skipped: the AWS emulators are not running (scripts/test starts them)");
        return None;
    }
    Some(Clients::from_env().await)
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

pub async fn table(c: &Clients) -> String {
    let name = unique("hub-test");
    hub_aws::dynamo::create_table(&c.dynamodb, &name).await.expect("create table");
    name
}

pub async fn bucket(c: &Clients) -> String {
    let name = unique("hub-bodies");
    c.s3.create_bucket().bucket(&name).send().await.expect("create bucket");
    name
}
