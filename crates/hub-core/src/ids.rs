//! Identifier newtypes, so a source id can never be passed where an event id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an already validated string.
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A source (webhook endpoint) id, as declared in a mapping file: `[a-z0-9_-]{1,64}`.
    SourceId
);
id_type!(
    /// A route id, unique within its source.
    RouteId
);
id_type!(
    /// An accepted event: `evt_` + a time-ordered UUIDv7, so ids sort by arrival.
    EventId
);
id_type!(
    /// One delivery of one event to one route: `dlv_` + UUIDv7. Sent as `Idempotency-Key`.
    DeliveryId
);

impl EventId {
    pub fn generate() -> Self {
        Self(format!("evt_{}", uuid::Uuid::now_v7().simple()))
    }
}

impl DeliveryId {
    pub fn generate() -> Self {
        Self(format!("dlv_{}", uuid::Uuid::now_v7().simple()))
    }
}

/// Whether `s` is acceptable as a source or route id (also used in URLs, so kept plain).
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
