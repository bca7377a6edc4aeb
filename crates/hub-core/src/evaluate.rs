//! The one evaluation path: from a request its source accepted to the deliveries its routes make.
//!
//! Ingest and dispatch (in both shells), golden examples, `hub mappings render` and the
//! benchmark all go through [`Verified`], so they cannot disagree about what a webhook does.
//! Only [`Verified::check`] (the trust boundary: size, `ip_allow`, signature over the raw bytes,
//! body) and [`Verified::from_store`] (an event the store holds, checked when it was accepted)
//! make one: routes never see a request that was not verified.

use crate::body::{BodyError, parse_body};
use crate::error::{ErrorCode, PublicError};
use crate::event::DeliveryRecord;
use crate::event::DeliveryStatus;
use crate::ids::RouteId;
use crate::ids::{DeliveryId, EventId};
use crate::mapping::{CompiledSource, RenderError, Rendered};
use crate::ports::StoreError;
use crate::request::RawRequest;
use crate::time::UnixMillis;
use crate::verify::VerifyError;
use serde_json::Value;
use std::time::Duration;

/// A request that passed its source's checks, with its parsed body.
#[derive(Debug)]
pub struct Verified<'s> {
    source: &'s CompiledSource,
    request: RawRequest,
    body: Value,
}

/// What a source's routes make of one event.
#[derive(Debug)]
pub struct Plan {
    /// One per route that fired (and per `for_each` item), in route order, each rendered or with
    /// why it could not be.
    pub rendered: Vec<Rendered>,
}

impl Plan {
    /// The deliveries to commit: pending and due at `now`, or dead with the rendering error.
    pub fn deliveries(self, now: UnixMillis) -> Vec<DeliveryRecord> {
        self.rendered
            .into_iter()
            .map(|r| new_delivery(r.route, r.delivery, r.result.map_err(|e| e.0), now))
            .collect()
    }
}

impl<'s> Verified<'s> {
    /// Checks a request at the trust boundary: its size, the source's `ip_allow`, its signature
    /// over the raw bytes, and its body.
    pub fn check(source: &'s CompiledSource, request: RawRequest) -> Result<Self, IngestError> {
        let body = admit(source, &request, true)?;
        Ok(Self { source, request, body })
    }

    /// An event the store holds (checked when it was accepted; signatures expire, so it is not
    /// checked again): its stored copy parsed again.
    pub fn from_store(source: &'s CompiledSource, request: RawRequest) -> Result<Self, IngestError> {
        let body = admit(source, &request, false)?;
        Ok(Self { source, request, body })
    }

    pub fn source(&self) -> &'s CompiledSource {
        self.source
    }

    pub fn request(&self) -> &RawRequest {
        &self.request
    }

    /// The request, taken back (what the store keeps of it).
    pub fn into_request(self) -> RawRequest {
        self.request
    }

    /// An endpoint-ownership challenge to answer instead of storing anything.
    pub fn challenge(&self) -> Option<String> {
        self.source.challenge(&self.body)
    }

    /// The envelope mappings see (`$.body`, `$.headers`, `$.event`, ...).
    pub fn envelope(&self, id: &EventId) -> Value {
        let r = &self.request;
        self.source.envelope(id, r.received_at, &r.headers, r.query.as_deref(), self.body.clone())
    }

    /// The dedup key and how long it holds, from the request as received.
    pub fn dedup(&self, id: &EventId) -> Option<(String, Duration)> {
        self.source.dedup_key(&self.envelope(id), &self.request.headers, &self.request.body)
    }

    /// The copy the hub stores: credentials redacted (see [`crate::redact`]), its body parsed
    /// again when redaction changed it. A dispatch, a replay, a golden example and `hub mappings
    /// render` all render from this copy, so they agree.
    pub fn redacted(self) -> Result<Self, IngestError> {
        let stored = self.source.redact.apply(self.source.format, &self.request, &self.body);
        if stored.body == self.request.body {
            return Ok(Self { request: stored, ..self });
        }
        Self::from_store(self.source, stored)
    }

    /// What the source's routes make of the event `id`: every route whose `when` holds,
    /// rendered; `Err` when the event is over the per-event limits (fan-out, rendered bytes).
    pub fn plan(&self, id: &EventId, ids: &mut dyn FnMut() -> DeliveryId) -> Result<Plan, RenderError> {
        let rendered = self.source.evaluate(&self.envelope(id), &self.request, ids)?;
        Ok(Plan { rendered })
    }

    /// [`Verified::plan`] with more of the envelope: what the event's facts made (`$.fact`,
    /// `$.facts`, `$.state`, `$.entity`).
    pub fn plan_with(
        &self,
        id: &EventId,
        extra: serde_json::Map<String, Value>,
        ids: &mut dyn FnMut() -> DeliveryId,
    ) -> Result<Plan, RenderError> {
        let mut env = self.envelope(id);
        if let Value::Object(m) = &mut env {
            m.extend(extra);
        }
        let rendered = self.source.evaluate(&env, &self.request, ids)?;
        Ok(Plan { rendered })
    }

    /// The facts the event `id` states, in the order of its source's `facts:` block.
    pub fn facts(
        &self,
        id: &EventId,
        set: &crate::mapping::MappingSet,
    ) -> Vec<Result<crate::triggers::Fact, crate::triggers::FactError>> {
        self.source.facts_of(&self.envelope(id), id, self.request.received_at, set)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("unknown source `{0}`")]
    UnknownSource(String),
    #[error("body of {size} bytes exceeds this source's limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Signature(#[from] VerifyError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IngestError {
    /// What the sender is told. Store details stay in the operator's log.
    pub fn public(&self) -> PublicError {
        match self {
            IngestError::UnknownSource(s) => {
                PublicError::new(ErrorCode::UnknownSource, format!("no source `{s}`"))
            }
            IngestError::TooLarge { limit, .. } => {
                PublicError::new(ErrorCode::PayloadTooLarge, format!("body exceeds {limit} bytes"))
            }
            IngestError::Signature(VerifyError::Missing(h)) => {
                PublicError::new(ErrorCode::SignatureMissing, format!("missing signature header `{h}`"))
            }
            IngestError::Signature(e @ VerifyError::NotAllowed(_)) => {
                PublicError::new(ErrorCode::Forbidden, e.to_string())
            }
            IngestError::Signature(VerifyError::NotConfigured(_)) => {
                PublicError::new(ErrorCode::SignatureInvalid, "this source cannot verify requests right now")
            }
            IngestError::Signature(e) => PublicError::new(ErrorCode::SignatureInvalid, e.to_string()),
            IngestError::Body(e) if e.is_unsupported() => {
                PublicError::new(ErrorCode::UnsupportedMediaType, e.to_string())
            }
            IngestError::Body(e) if e.is_too_large() => {
                PublicError::new(ErrorCode::PayloadTooLarge, e.to_string())
            }
            IngestError::Body(e) => PublicError::new(ErrorCode::InvalidBody, e.to_string()),
            IngestError::Store(_) => {
                PublicError::new(ErrorCode::StoreUnavailable, "the event could not be stored; retry later")
            }
        }
    }
}

/// Checks a request passes before it is accepted: size, signature over the raw bytes, body.
/// Returns the parsed body. Reached through [`crate::evaluate::Verified`].
pub(crate) fn admit(source: &CompiledSource, req: &RawRequest, verify: bool) -> Result<Value, IngestError> {
    if req.body.len() > source.max_body_bytes {
        return Err(IngestError::TooLarge { size: req.body.len(), limit: source.max_body_bytes });
    }
    if verify {
        if let Some(ips) = &source.ip_allow {
            ips.verify_with(req, None, req.received_at)?;
        }
        let url = source.public_url_of(req);
        source.verifier.verify_with(req, url.as_deref(), req.received_at)?;
    }
    Ok(parse_body(source.format, &req.headers, &req.body, &source.body_limits)?.value)
}

/// A delivery as created by a dispatch: pending and due now, or dead when rendering failed.
pub fn new_delivery(
    route: RouteId,
    id: DeliveryId,
    rendered: Result<crate::event::OutgoingRequest, String>,
    now: UnixMillis,
) -> DeliveryRecord {
    let (status, request, last_error, next) = match rendered {
        Ok(r) => (DeliveryStatus::Pending, Some(r), None, Some(now)),
        Err(e) => (DeliveryStatus::Dead, None, Some(format!("mapping: {e}")), None),
    };
    DeliveryRecord {
        id,
        route,
        status,
        attempts: 0,
        created_at: now,
        next_attempt_at: next,
        last_attempt_at: None,
        last_status: None,
        last_error,
        request,
    }
}
