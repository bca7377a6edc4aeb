//! Pure core of the webhook hub: everything that decides, nothing that does I/O.
//!
//! Body parsing, signature verification, mapping compile + render, the one evaluation path
//! ([`evaluate`]), retry policy, the use cases ([`pipeline::Hub`]) and the domain types live
//! here. The ports ([`ports`], one trait per capability) are implemented by adapter crates
//! (embedded store, DynamoDB, HTTP forwarder) and in memory ([`testing`]); [`conformance`]
//! holds the suites every adapter passes.

pub mod body;
pub mod conformance;
pub mod error;
pub mod evaluate;
pub mod event;
pub mod golden;
pub mod ids;
pub mod mapping;
pub mod net;
pub mod pipeline;
pub mod ports;
pub mod redact;
pub mod request;
pub mod retry;
pub mod secret;
pub mod testing;
pub mod time;
pub mod triggers;
pub mod verify;

pub use error::{ErrorCode, PublicError};
pub use ids::{DeliveryId, EventId, RouteId, SourceId};
pub use time::UnixMillis;
