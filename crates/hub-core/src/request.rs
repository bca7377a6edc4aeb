//! The raw inbound request as received, before any parsing or verification.

use crate::time::UnixMillis;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Header list with lower-cased names, in arrival order (repeated names kept).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self(Vec::new())
    }
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_ascii_lowercase(), value.into()));
    }
    /// First value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// Headers as a JSON object for selectors and templates; repeated names are joined with ", "
    /// as RFC 9110 allows for list-valued fields.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.0 {
            match m.get_mut(k) {
                Some(serde_json::Value::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(v);
                }
                _ => {
                    m.insert(k.clone(), serde_json::Value::String(v.clone()));
                }
            }
        }
        serde_json::Value::Object(m)
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (k, v) in iter {
            h.push(k.as_ref(), v);
        }
        h
    }
}

/// What a sender sent, byte for byte. Signatures are checked over `body` exactly as received.
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub method: String,
    /// Path as called (e.g. `/hooks/typeform`), without query.
    pub path: String,
    /// Raw query string without `?`, if any.
    pub query: Option<String>,
    pub headers: Headers,
    pub body: Bytes,
    pub received_at: UnixMillis,
    pub remote_addr: Option<String>,
}

impl RawRequest {
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get("content-type")
    }
}
