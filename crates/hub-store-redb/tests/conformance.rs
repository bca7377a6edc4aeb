//! The ports' conformance suites against the embedded redb adapter.

use hub_core::ports::commit::{Change, Commit};
use hub_core::ports::log::EventLog;
use hub_core::ports::schedule::Scheduler;
use hub_store_redb::RedbStore;

/// A fresh storage in its own temporary directory (kept as long as the storage).
async fn fresh_storage() -> Option<(tempfile::TempDir, RedbStore)> {
    let dir = tempfile::tempdir().expect("tmp");
    let store = RedbStore::open(dir.path().join("s.redb")).expect("open");
    Some((dir, store))
}

hub_core::mapping_store_conformance!(fresh_storage);

mod storage {
    use super::fresh_storage;
    hub_core::storage_conformance!(fresh_storage);
    hub_core::storage_conformance!(purge: fresh_storage);
    hub_core::storage_conformance!(dedup_purge: fresh_storage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopen() {
    use hub_core::ports::commit::Committer;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("s.redb");
    let store = RedbStore::open(&path).expect("open");
    let ev = hub_core::conformance::new_event("src", None, 1_000);
    let id = ev.id.clone();
    store.commit(Commit::new(ev.received_at).with(Change::Accept(ev))).await.expect("accept");
    drop(store);
    // The writer thread holds the database until its channel closes; give it a moment.
    let mut reopened = None;
    for _ in 0..50 {
        match RedbStore::open(&path) {
            Ok(s) => {
                reopened = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    let s = reopened.expect("reopen");
    assert!(s.event(&id).await.expect("read").is_some(), "the event survives a reopen");
    let due = s.due(hub_core::time::UnixMillis(u64::MAX / 2), 10).await.expect("due");
    assert_eq!(due.len(), 1, "the queued dispatch survives a reopen");
}
