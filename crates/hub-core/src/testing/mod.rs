//! In-memory adapters of the ports, for unit tests of the use cases (and of shells) without a
//! database, a network or a real clock. The memory storage passes the same conformance suites
//! as the embedded and DynamoDB adapters.

mod fakes;
mod storage;

pub use fakes::{ManualClock, MemoryMappings, RecordingObserver, RecordingQueue, ScriptedForwarder, Sent};
pub use storage::MemoryStorage;
