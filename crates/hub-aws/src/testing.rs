//! For tests against the emulators `scripts/emulators` starts (DynamoDB Local, moto).

use crate::Clients;

/// Clients for the emulators, or `None` (after saying why) when they are not running. Under CI
/// (`CI` set) their absence is a failure, never a skip.
pub async fn emulator_clients() -> Option<Clients> {
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

/// A resource name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}
