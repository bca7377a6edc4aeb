//! Public error codes: what a sender (or an admin client) is told, stable across releases.
//!
//! Each failure has two audiences: the sender gets a [`PublicError`] (status + stable code + safe
//! message); the operator's log gets the full detail from the typed error that produced it.

use serde::Serialize;

/// Stable error codes of the HTTP surface. Renaming one is a breaking change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    UnknownSource,
    NotFound,
    MethodNotAllowed,
    SignatureMissing,
    SignatureInvalid,
    /// An admin request without the right bearer token.
    Unauthorized,
    Forbidden,
    /// A request for a host name this listener does not serve (e.g. a DNS-rebinding page).
    MisdirectedRequest,
    /// The request body did not arrive within the server's deadline.
    RequestTimeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidBody,
    /// A pushed mapping set does not compile.
    InvalidMapping,
    /// Someone else changed the same thing first (e.g. two mapping pushes).
    Conflict,
    StoreUnavailable,
    /// The server is at its limit of requests in flight; the sender should retry.
    Overloaded,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::UnknownSource | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::SignatureMissing | ErrorCode::SignatureInvalid | ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::MisdirectedRequest => 421,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::InvalidBody => 400,
            ErrorCode::InvalidMapping => 422,
            ErrorCode::Conflict => 409,
            ErrorCode::StoreUnavailable | ErrorCode::Overloaded => 503,
            ErrorCode::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownSource => "unknown_source",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::SignatureMissing => "signature_missing",
            ErrorCode::SignatureInvalid => "signature_invalid",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::MisdirectedRequest => "misdirected_request",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::InvalidMapping => "invalid_mapping",
            ErrorCode::Conflict => "conflict",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Internal => "internal",
        }
    }
}

/// The error body every non-2xx answer carries: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicError {
    #[serde(skip)]
    pub status: u16,
    pub code: ErrorCode,
    pub message: String,
}

impl PublicError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status: code.status(), code, message: message.into() }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code, "message": self.message } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialised_code_is_the_stable_name_with_its_status() {
        for (code, name, status) in [
            (ErrorCode::Unauthorized, "unauthorized", 401),
            (ErrorCode::MisdirectedRequest, "misdirected_request", 421),
            (ErrorCode::RequestTimeout, "request_timeout", 408),
            (ErrorCode::Overloaded, "overloaded", 503),
            (ErrorCode::StoreUnavailable, "store_unavailable", 503),
        ] {
            assert_eq!(serde_json::to_value(code).expect("json"), serde_json::json!(name));
            assert_eq!(code.as_str(), name);
            assert_eq!(code.status(), status);
        }
    }
}
