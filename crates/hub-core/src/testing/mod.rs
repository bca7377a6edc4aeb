//! In-memory adapters of the ports, for unit tests of the use cases (and of shells) without a
//! database, a network or a real clock. The memory store passes the same conformance suite as
//! the embedded and DynamoDB stores.

mod fakes;
mod store;

pub use fakes::{ManualClock, RecordingQueue, ScriptedForwarder, Sent};
pub use store::MemoryStore;
