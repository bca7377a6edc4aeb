//! What the hub remembers about an accepted event and each of its deliveries.

use crate::ids::{DeliveryId, EventId, RouteId, SourceId};
use crate::request::Headers;
use crate::time::UnixMillis;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A request the hub will send (or would send, in a dry run). Holds no secrets: route auth is
/// applied at send time from the loaded mapping, so stored records and `hub events show` never
/// contain credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    #[serde(with = "body_serde")]
    pub body: Bytes,
}

impl OutgoingRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Bytes this request holds (URL, headers, body), for per-event caps.
    pub fn size(&self) -> usize {
        self.url.len() + self.body.len() + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }

    /// The body as JSON when it parses as JSON, else as text (for display and golden tests).
    pub fn body_for_display(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }
}

/// Bodies are stored as UTF-8 text when they are text (readable records), base64 otherwise.
mod body_serde {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Binary { base64: String },
    }

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(b) {
            Ok(t) => Repr::Text(t.to_string()).serialize(s),
            Err(_) => {
                Repr::Binary { base64: base64::engine::general_purpose::STANDARD.encode(b) }.serialize(s)
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(Bytes::from(t)),
            Repr::Binary { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map(Bytes::from)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Queued, not tried yet.
    Pending,
    /// Tried and failed with a retryable error; another attempt is scheduled.
    Retrying,
    Delivered,
    /// Permanent failure or retries exhausted. Kept for inspection and `hub replay`.
    Dead,
}

impl DeliveryStatus {
    pub fn is_final(self) -> bool {
        matches!(self, DeliveryStatus::Delivered | DeliveryStatus::Dead)
    }
}

/// One route's delivery of one event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub route: RouteId,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub created_at: UnixMillis,
    /// When the next attempt is due (pending / retrying only).
    pub next_attempt_at: Option<UnixMillis>,
    pub last_attempt_at: Option<UnixMillis>,
    /// HTTP status of the last response, if one came back.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// The rendered request; `None` when rendering failed (then `last_error` says why).
    pub request: Option<OutgoingRequest>,
}

/// Overall state of an event, derived from its deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Stored, routes not evaluated yet.
    Received,
    /// No route fired.
    Filtered,
    /// Deliveries queued, none tried yet.
    Pending,
    /// At least one delivery is waiting for another attempt.
    Retrying,
    Delivered,
    /// At least one delivery is dead and none is still in flight.
    Dead,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Received => "received",
            EventStatus::Filtered => "filtered",
            EventStatus::Pending => "pending",
            EventStatus::Retrying => "retrying",
            EventStatus::Delivered => "delivered",
            EventStatus::Dead => "dead",
        }
    }
}

/// What a list of events shows of each: no request headers, query or body (those are for
/// looking at one event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSummary {
    pub id: EventId,
    pub source: SourceId,
    /// RFC 3339.
    pub received_at: String,
    pub status: EventStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// The stored event (its body is kept apart: see the store port).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: EventId,
    pub source: SourceId,
    pub received_at: UnixMillis,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Headers,
    pub remote_addr: Option<String>,
    pub dedup_key: Option<String>,
    pub body_len: u64,
    /// Times the event's routes were evaluated (1 + replays).
    pub dispatches: u32,
    pub dispatched_at: Option<UnixMillis>,
    /// Why the last dispatch could not evaluate routes (e.g. the source was removed).
    pub dispatch_error: Option<String>,
    /// Every delivery ever made, oldest first; the last `latest_count` belong to the latest
    /// dispatch.
    pub deliveries: Vec<DeliveryRecord>,
    pub latest_count: u32,
}

impl EventRecord {
    /// The status of the latest dispatch: earlier deliveries (before a replay) are history.
    pub fn status(&self) -> EventStatus {
        if self.dispatched_at.is_none() {
            return EventStatus::Received;
        }
        if self.dispatch_error.is_some() {
            return EventStatus::Dead;
        }
        let current = self.current_deliveries();
        if current.is_empty() {
            return EventStatus::Filtered;
        }
        if current.iter().any(|d| d.status == DeliveryStatus::Retrying) {
            EventStatus::Retrying
        } else if current.iter().any(|d| d.status == DeliveryStatus::Pending) {
            EventStatus::Pending
        } else if current.iter().any(|d| d.status == DeliveryStatus::Dead) {
            EventStatus::Dead
        } else {
            EventStatus::Delivered
        }
    }

    pub fn summary(&self) -> EventSummary {
        EventSummary {
            id: self.id.clone(),
            source: self.source.clone(),
            received_at: self.received_at.to_rfc3339(),
            status: self.status(),
            attempts: self.attempts(),
            last_error: self.last_error().map(str::to_string),
        }
    }

    /// Deliveries created by the latest dispatch.
    pub fn current_deliveries(&self) -> &[DeliveryRecord] {
        let n = usize::try_from(self.latest_count).unwrap_or(usize::MAX);
        &self.deliveries[self.deliveries.len().saturating_sub(n)..]
    }

    /// Total attempts across the latest dispatch's deliveries.
    pub fn attempts(&self) -> u32 {
        self.current_deliveries().iter().map(|d| d.attempts).sum()
    }

    /// Last error of the latest dispatch, if any.
    pub fn last_error(&self) -> Option<&str> {
        self.dispatch_error.as_deref().or_else(|| {
            self.current_deliveries()
                .iter()
                .filter(|d| d.status != DeliveryStatus::Delivered)
                .find_map(|d| d.last_error.as_deref())
        })
    }
}
