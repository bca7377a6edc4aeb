//! The store port's conformance suite against the in-memory store.

use hub_core::testing::MemoryStore;

async fn fresh() -> Option<((), MemoryStore)> {
    Some(((), MemoryStore::new()))
}

hub_core::store_conformance!(fresh);
hub_core::store_conformance!(purge: fresh);
