//! The observer port: what the hub did, as typed events, for metrics and logs (Prometheus for
//! `hub serve`, EMF lines on Lambda, a console's live view). Observers never fail and never
//! block: they count and forward.

use crate::error::ErrorCode;
use crate::ids::{EventId, RouteId, SourceId};
use crate::time::UnixMillis;

/// Something the hub did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubEvent {
    /// A webhook was stored and its dispatch queued.
    Accepted { source: SourceId, event: EventId },
    /// A webhook repeated one already stored.
    Duplicate { source: SourceId, event: EventId },
    /// A request was refused (bad signature, unknown source, bad body, store down).
    Rejected { source: Option<SourceId>, code: ErrorCode },
    /// An event's routes were evaluated into this many deliveries.
    Dispatched { event: EventId, deliveries: usize },
    /// A delivery reached its destination.
    Delivered { route: RouteId, status: u16, attempts: u32, elapsed_ms: u64 },
    /// An attempt failed and the delivery is due again.
    Retrying { route: RouteId, status: Option<u16>, next: UnixMillis },
    /// A delivery (or a dispatch, `route: None`) is dead.
    Dead { event: EventId, source: SourceId, route: Option<RouteId>, reason: String },
    /// A job failed on the store (`code`: [`super::StoreError::code`]).
    StoreFailed { code: &'static str },
}

/// Receives every [`HubEvent`].
pub trait Observer: Send + Sync {
    fn observe(&self, event: &HubEvent);
}

/// An observer that drops everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ignore;

impl Observer for Ignore {
    fn observe(&self, _event: &HubEvent) {}
}
