//! The event log port: events as received (record and body), their deliveries and attempts,
//! listing with paging, and their expiry.
//!
//! The log is written only through [`Commit`](super::commit::Commit)s; this trait reads it and
//! keeps it bounded.

use super::{EventQuery, Purged, StoreError};
use crate::event::{DeliveryRecord, EventRecord};
use crate::ids::{DeliveryId, EventId, SourceId};
use crate::time::UnixMillis;
use async_trait::async_trait;
use bytes::Bytes;

/// One page of a listing, newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventPage {
    pub events: Vec<EventRecord>,
    /// Where the next (older) page starts: pass it as [`EventQuery::before`]. `None` on the
    /// last page.
    pub next: Option<EventId>,
}

/// Contract: what a committed change wrote is read back at once (read-your-writes); a listing
/// pages backwards in time with no event skipped or repeated across pages while no new event
/// is older than the cursor; an event and everything stored about it expire together, at its
/// last receipt, dispatch or replay plus its retention, and an event with work still due never
/// expires.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// The event with every delivery it ever had.
    async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError>;
    /// Its body as stored.
    async fn body(&self, id: &EventId) -> Result<Option<Bytes>, StoreError>;
    /// The event and its body, for a dispatch (an adapter that keeps both in one record reads
    /// it once). `None` when either is missing.
    async fn event_with_body(&self, id: &EventId) -> Result<Option<(EventRecord, Bytes)>, StoreError> {
        let Some(ev) = self.event(id).await? else { return Ok(None) };
        Ok(self.body(id).await?.map(|b| (ev, b)))
    }
    /// One delivery of the event, with the event's source (what an attempt needs, without
    /// reading every delivery of the event).
    async fn delivery(
        &self,
        event: &EventId,
        delivery: &DeliveryId,
    ) -> Result<Option<(SourceId, DeliveryRecord)>, StoreError>;
    /// A page of events matching the query, newest first.
    async fn page(&self, query: &EventQuery) -> Result<EventPage, StoreError>;
    /// When the event may be deleted; `None` when there is no such event.
    async fn expires_at(&self, id: &EventId) -> Result<Option<UnixMillis>, StoreError>;
    /// One bounded pass deleting at most `limit` events expired at `now` (with their bodies,
    /// deliveries and dedup keys) and at most `limit` expired dedup keys. An event with a timer
    /// set is kept, its expiry moved to `now` plus its retention. A store whose database
    /// expires items itself only forgets what it must.
    async fn purge(&self, now: UnixMillis, limit: usize) -> Result<Purged, StoreError>;
    /// Whether the store can serve reads and writes now; the error says why not.
    async fn health(&self) -> Result<(), StoreError>;
}
