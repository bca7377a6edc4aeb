//! The dedup port: which event holds a source's dedup key until when.
//!
//! Keys are claimed in the [`Commit`](super::commit::Commit) that accepts their event (a key
//! held by another event refuses the commit with its holder), so an event is never stored
//! without its key or a key without its event.

use super::StoreError;
use crate::ids::{EventId, SourceId};
use crate::time::UnixMillis;
use async_trait::async_trait;

/// Contract: a key is held from its event's acceptance until the `until` it was claimed with
/// (never past the event's own expiry); after that it is free, whether or not the store has
/// deleted it yet.
#[async_trait]
pub trait DedupIndex: Send + Sync {
    /// The event holding `key` of `source` at `now`, if any.
    async fn holder(
        &self,
        source: &SourceId,
        key: &str,
        now: UnixMillis,
    ) -> Result<Option<EventId>, StoreError>;
}
