//! The ports' conformance suites: every adapter runs the same checks with the same
//! expectations, so the in-memory, embedded and cloud adapters cannot drift apart.
//! [`storage_conformance!`](crate::storage_conformance) covers the storage ports,
//! [`mapping_store_conformance!`](crate::mapping_store_conformance) the mapping store.
//!
//! Each check takes a fresh, empty adapter and panics on a violation (they are test code).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::event::{DeliveryRecord, DeliveryStatus, OutgoingRequest};
use crate::ids::{DeliveryId, EventId, RouteId, SourceId};
use crate::ports::NewEvent;
use crate::request::Headers;
use crate::time::UnixMillis;
use bytes::Bytes;
use std::time::Duration;

pub mod mappings;
pub mod storage;
pub mod triggers;

/// Retention of the events the checks make unless they say otherwise.
const LONG: Duration = Duration::from_secs(30 * 24 * 3600);

/// A JSON webhook of `source` received at `at` (a dedup key held for a minute, if given).
pub fn new_event(source: &str, dedup: Option<&str>, at: u64) -> NewEvent {
    let mut headers = Headers::new();
    headers.push("Content-Type", "application/json");
    NewEvent {
        id: EventId::generate(),
        source: SourceId::new(source),
        received_at: UnixMillis(at),
        method: "POST".into(),
        path: format!("/hooks/{source}"),
        query: None,
        headers,
        remote_addr: Some("127.0.0.1".into()),
        body: Bytes::from_static(b"{\"a\":1}"),
        dedup: dedup.map(|k| (k.to_string(), UnixMillis(at + 60_000))),
        retention: LONG,
    }
}

/// A delivery of `route` made at `at`, pending and due at once.
pub fn delivery(route: &str, at: u64) -> DeliveryRecord {
    DeliveryRecord {
        id: DeliveryId::generate(),
        route: RouteId::new(route),
        status: DeliveryStatus::Pending,
        attempts: 0,
        created_at: UnixMillis(at),
        next_attempt_at: Some(UnixMillis(at)),
        last_attempt_at: None,
        last_status: None,
        last_error: None,
        request: Some(OutgoingRequest {
            method: "POST".into(),
            url: "https://x.test/".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from_static(b"{}"),
        }),
    }
}
