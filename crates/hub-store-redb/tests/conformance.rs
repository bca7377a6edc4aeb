//! The store port's conformance suite against the embedded redb adapter.

use hub_core::ports::legacy::OnStorage;
use hub_store_redb::RedbStore;

/// A fresh storage in its own temporary directory (kept as long as the storage).
async fn fresh_storage() -> Option<(tempfile::TempDir, RedbStore)> {
    let dir = tempfile::tempdir().expect("tmp");
    let store = RedbStore::open(dir.path().join("s.redb")).expect("open");
    Some((dir, store))
}

/// The wide store port on it.
async fn fresh() -> Option<(tempfile::TempDir, OnStorage<RedbStore>)> {
    fresh_storage().await.map(|(dir, s)| (dir, OnStorage::new(s)))
}

hub_core::store_conformance!(fresh);
hub_core::store_conformance!(purge: fresh);
hub_core::store_conformance!(dedup_purge: fresh);

hub_core::mapping_store_conformance!(fresh_storage);

mod storage {
    use super::fresh_storage;
    hub_core::storage_conformance!(fresh_storage);
    hub_core::storage_conformance!(purge: fresh_storage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopen() {
    use hub_core::ports::Store;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("s.redb");
    let store = OnStorage::new(RedbStore::open(&path).expect("open"));
    hub_core::conformance::accept_stores_event_body_and_queues_dispatch(&store).await;
    drop(store);
    // The writer thread holds the database until its channel closes; give it a moment.
    let mut reopened = None;
    for _ in 0..50 {
        match RedbStore::open(&path) {
            Ok(s) => {
                reopened = Some(OnStorage::new(s));
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    let s = reopened.expect("reopen");
    let jobs = s.due_jobs(hub_core::time::UnixMillis(u64::MAX / 2), 10).await.expect("jobs");
    assert_eq!(jobs.len(), 1, "the queued dispatch survives a reopen");
}
