//! The state port: versioned items per key (an entity's fields, scores, counters, journey; a
//! destination's limiter), read as a snapshot and changed only in a
//! [`Commit`](super::commit::Commit) that names the version it read, together with the timers
//! and deliveries the change implies (the outbox).

use super::StoreError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A state item's key, `<kind>/<id>` (e.g. `contact/ann@example.com`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StateKey(String);

impl StateKey {
    pub fn new(kind: &str, id: &str) -> Self {
        Self(format!("{kind}/{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A state item with the version it was read at (1 for the first write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: serde_json::Value,
    pub version: u64,
}

/// Contract: [`StateStore::load`] returns, for each key, the item as last committed (or `None`);
/// a commit that puts an item names the version it read (0: none) and is refused whole with a
/// conflict when the item moved on since, so two writers that read the same version never both
/// win.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The items under `keys`, in the same order (`None` where nothing is stored).
    async fn load(&self, keys: &[StateKey]) -> Result<Vec<Option<Versioned>>, StoreError>;
}
