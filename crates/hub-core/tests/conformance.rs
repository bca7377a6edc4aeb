//! The ports' conformance suites against the in-memory adapters.

/// The storage ports on the memory storage.
async fn fresh_storage() -> Option<((), hub_core::testing::MemoryStorage)> {
    Some(((), hub_core::testing::MemoryStorage::new()))
}

mod storage {
    use super::fresh_storage;
    hub_core::storage_conformance!(fresh_storage);
    hub_core::storage_conformance!(purge: fresh_storage);
    hub_core::storage_conformance!(dedup_purge: fresh_storage);
}

/// The mapping store in memory.
async fn fresh_mappings() -> Option<((), hub_core::testing::MemoryMappings)> {
    Some(((), hub_core::testing::MemoryMappings::default()))
}

hub_core::mapping_store_conformance!(fresh_mappings);
