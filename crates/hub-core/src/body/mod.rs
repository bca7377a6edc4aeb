//! Request body parsing: raw bytes + content type → a JSON value the mappings work on.

mod form;

pub use form::parse_form;

use serde::Deserialize;
use serde_json::Value;

/// How a source's bodies are read. `auto` follows the `Content-Type` header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    #[default]
    Auto,
    Json,
    Form,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("unsupported content type `{0}` (this source accepts JSON and form-encoded bodies)")]
    UnsupportedMediaType(String),
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
}

/// The media type without parameters, lower-cased: `application/json; charset=utf-8` → `application/json`.
pub fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn is_json_media(mt: &str) -> bool {
    mt == "application/json" || mt == "text/json" || mt.ends_with("+json")
}

/// Parses `body` by `format`, consulting `content_type` when the format is `auto`.
///
/// An empty body parses to an empty object, so routes can still fire on headers alone.
pub fn parse_body(format: BodyFormat, content_type: Option<&str>, body: &[u8]) -> Result<Value, BodyError> {
    let effective = match format {
        BodyFormat::Json => BodyFormat::Json,
        BodyFormat::Form => BodyFormat::Form,
        BodyFormat::Auto => {
            let mt = content_type.map(media_type).unwrap_or_default();
            if is_json_media(&mt) {
                BodyFormat::Json
            } else if mt == "application/x-www-form-urlencoded" {
                BodyFormat::Form
            } else if mt.is_empty() {
                // No content type at all: senders that omit it almost always send JSON.
                BodyFormat::Json
            } else {
                return Err(BodyError::UnsupportedMediaType(mt));
            }
        }
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    match effective {
        BodyFormat::Form => Ok(parse_form(body)),
        _ => serde_json::from_slice(body).map_err(|e| BodyError::InvalidJson(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auto_follows_content_type() {
        assert_eq!(
            parse_body(BodyFormat::Auto, Some("application/json; charset=utf-8"), br#"{"a":1}"#),
            Ok(json!({"a": 1}))
        );
        assert_eq!(parse_body(BodyFormat::Auto, Some("application/vnd.api+json"), br#"[1]"#), Ok(json!([1])));
        assert_eq!(
            parse_body(BodyFormat::Auto, Some("application/x-www-form-urlencoded"), b"a=1&b=x+y"),
            Ok(json!({"a": "1", "b": "x y"}))
        );
        assert_eq!(
            parse_body(BodyFormat::Auto, Some("text/csv"), b"a,b"),
            Err(BodyError::UnsupportedMediaType("text/csv".into()))
        );
        assert_eq!(parse_body(BodyFormat::Auto, None, b"  "), Ok(json!({})));
    }

    #[test]
    fn bad_json_is_an_error_not_a_panic() {
        let e = parse_body(BodyFormat::Json, Some("text/plain"), b"{\"a\":").unwrap_err();
        assert!(matches!(e, BodyError::InvalidJson(_)));
    }

    #[test]
    fn explicit_format_overrides_content_type() {
        assert_eq!(parse_body(BodyFormat::Form, Some("text/plain"), b"x=1"), Ok(json!({"x": "1"})));
    }
}
