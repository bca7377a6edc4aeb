//! Request body parsing: raw bytes + request headers → one JSON value the mappings work on.
//!
//! The steps, in order:
//!
//! 1. **Format.** An explicit [`BodyFormat`] wins; `auto` follows the media type of `Content-Type`:
//!    JSON (`application/json`, `text/json`, `*+json`), form (`application/x-www-form-urlencoded`),
//!    `multipart/form-data`, XML (`application/xml`, `text/xml`, `*+xml`), `text/plain`; no
//!    content type at all is read as JSON; anything else is [`BodyError::UnsupportedMediaType`].
//! 2. **Charset.** The `charset` parameter is resolved through the WHATWG label registry
//!    (`windows-1251`, `cp1251`, `koi8-r`, `iso-8859-1`, …); an unknown label is an error.
//! 3. **Content-Encoding.** `gzip`/`x-gzip`, `deflate` (zlib or raw) and `identity`, undone under a
//!    hard cap on the decompressed size ([`BodyLimits::max_decompressed_bytes`]).
//! 4. **Parse.** An all-whitespace body is `{}` in every format, so routes can still fire on headers
//!    alone. Otherwise:
//!    - JSON as is. Without a charset (or with UTF-8) invalid UTF-8 is an error; a declared charset
//!      is decoded first, and bytes invalid in it are an error too.
//!    - Form: PHP/Rails bracket nesting, see [`parse_form`]; values are always strings.
//!    - Multipart: text parts nest like form pairs; file parts become [`Attachment`]s referenced
//!      from the value (see `multipart.rs`).
//!    - XML: see `xml.rs` for the element → JSON convention.
//!    - Text: `{"text": "<decoded text>"}`.
//!
//! Signatures are verified elsewhere over the raw bytes; nothing here is security-relevant beyond
//! bounded work and memory on hostile input (fuzzed: no input may panic).

mod decode;
mod form;
mod multipart;
mod xml;

pub use form::parse_form;

use crate::request::Headers;
use bytes::Bytes;
use encoding_rs::{Encoding, UTF_8};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// How a source's bodies are read. `auto` follows the `Content-Type` header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    #[default]
    Auto,
    Json,
    Form,
    Multipart,
    Xml,
    Text,
}

/// Bounds on the work one body may cause. The defaults fit AWS Lambda's 6 MB payload limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BodyLimits {
    /// Largest body after undoing `Content-Encoding`; checked while inflating, so a compression bomb
    /// never allocates more than this. Uncompressed bodies are bounded by the transport's own limit.
    pub max_decompressed_bytes: usize,
    /// Largest single file part of a multipart body.
    pub max_attachment_bytes: usize,
    /// Most parts (fields and files together) in a multipart body.
    pub max_parts: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: 6 * 1024 * 1024,
            max_attachment_bytes: 5 * 1024 * 1024,
            max_parts: 100,
        }
    }
}

/// A file part of a multipart body. The value refers to it by its index in [`Parsed::attachments`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The part's field name as sent (brackets included, e.g. `contact[photo]`).
    pub field: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub size: usize,
    /// Lower-case hex SHA-256 of `data`.
    pub sha256: String,
    pub data: Bytes,
}

/// A parsed body: the JSON value mappings select from, plus any file parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub value: Value,
    pub attachments: Vec<Attachment>,
}

impl Parsed {
    fn from_value(value: Value) -> Self {
        Self { value, attachments: Vec::new() }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error(
        "unsupported content type `{0}` (this source accepts JSON, form-encoded, multipart/form-data, XML \
         and plain-text bodies)"
    )]
    UnsupportedMediaType(String),
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("body is not valid XML: {0}")]
    InvalidXml(String),
    #[error("body is not valid multipart/form-data: {0}")]
    InvalidMultipart(String),
    #[error("unsupported content encoding `{0}` (gzip, deflate and identity are accepted)")]
    UnsupportedEncoding(String),
    #[error("body could not be decoded as `{encoding}`: {reason}")]
    ContentDecoding { encoding: String, reason: String },
    #[error("decompressed body is larger than {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("attachment in field `{field}` is larger than {limit} bytes")]
    AttachmentTooLarge { field: String, limit: usize },
    #[error("multipart body has more than {limit} parts")]
    TooManyParts { limit: usize },
    #[error("unknown charset `{0}`")]
    UnknownCharset(String),
}

impl BodyError {
    /// HTTP 413: the body (or a part of it) is over a [`BodyLimits`] bound.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            Self::DecompressedTooLarge { .. } | Self::AttachmentTooLarge { .. } | Self::TooManyParts { .. }
        )
    }

    /// HTTP 415: the sender used a media type or content coding this hub does not read. Everything
    /// that is neither this nor [`is_too_large`](Self::is_too_large) is a malformed body (400).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::UnsupportedMediaType(_) | Self::UnsupportedEncoding(_))
    }
}

/// The media type without parameters, lower-cased: `application/json; charset=utf-8` → `application/json`.
pub fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// A parameter of a `Content-Type`-like header value (name matched case-insensitively; quoted
/// strings unquoted, `\` escapes honoured). A parameter given without `=` has the value "".
pub(crate) fn content_type_param(content_type: &str, wanted: &str) -> Option<String> {
    let mut rest = content_type.split_once(';')?.1;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return None;
        }
        let name_end = rest.find(['=', ';']).unwrap_or(rest.len());
        let name = rest[..name_end].trim();
        rest = &rest[name_end..];
        let mut value = String::new();
        if let Some(after_eq) = rest.strip_prefix('=') {
            let after_eq = after_eq.trim_start();
            if let Some(quoted) = after_eq.strip_prefix('"') {
                // An unterminated quote runs to the end of the header: lenient, and still bounded.
                let mut end = quoted.len();
                let mut escaped = false;
                for (i, c) in quoted.char_indices() {
                    if escaped {
                        value.push(c);
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        end = i + 1;
                        break;
                    } else {
                        value.push(c);
                    }
                }
                rest = &quoted[end..];
            } else {
                let end = after_eq.find(';').unwrap_or(after_eq.len());
                value.push_str(after_eq[..end].trim());
                rest = &after_eq[end..];
            }
        }
        if name.eq_ignore_ascii_case(wanted) {
            return Some(value);
        }
    }
}

fn is_json_media(mt: &str) -> bool {
    mt == "application/json" || mt == "text/json" || mt.ends_with("+json")
}

fn is_xml_media(mt: &str) -> bool {
    mt == "application/xml" || mt == "text/xml" || mt.ends_with("+xml")
}

/// The concrete format after `auto` has been resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Json,
    Form,
    Multipart,
    Xml,
    Text,
}

fn resolve_kind(format: BodyFormat, media_type: &str) -> Result<Kind, BodyError> {
    Ok(match format {
        BodyFormat::Json => Kind::Json,
        BodyFormat::Form => Kind::Form,
        BodyFormat::Multipart => Kind::Multipart,
        BodyFormat::Xml => Kind::Xml,
        BodyFormat::Text => Kind::Text,
        BodyFormat::Auto => match media_type {
            mt if is_json_media(mt) => Kind::Json,
            "application/x-www-form-urlencoded" => Kind::Form,
            "multipart/form-data" => Kind::Multipart,
            mt if is_xml_media(mt) => Kind::Xml,
            "text/plain" => Kind::Text,
            // No content type at all: senders that omit it almost always send JSON.
            "" => Kind::Json,
            other => return Err(BodyError::UnsupportedMediaType(other.to_string())),
        },
    })
}

/// Parses `body` by `format`, consulting the `Content-Type` header when the format is `auto` and
/// for its `charset`/`boundary` parameters, and undoing `Content-Encoding` first.
///
/// An empty (all-whitespace) body parses to an empty object in every format, so routes can still
/// fire on headers alone.
pub fn parse_body(
    format: BodyFormat,
    headers: &Headers,
    body: &[u8],
    limits: &BodyLimits,
) -> Result<Parsed, BodyError> {
    let content_type = headers.get("content-type").unwrap_or("");
    // Cheap header checks first, so a 415 never costs a decompression.
    let kind = resolve_kind(format, &media_type(content_type))?;
    let charset = decode::charset(content_type)?;
    let codings = decode::content_codings(headers)?;
    let body = decode::decode_content(&codings, body, limits.max_decompressed_bytes)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Parsed::from_value(Value::Object(serde_json::Map::new())));
    }
    match kind {
        Kind::Json => parse_json(&body, charset).map(Parsed::from_value),
        Kind::Form => Ok(Parsed::from_value(form::parse_form_in(&body, charset.unwrap_or(UTF_8)))),
        Kind::Multipart => {
            let body = match body {
                Cow::Owned(v) => Bytes::from(v),
                Cow::Borrowed(b) => Bytes::copy_from_slice(b),
            };
            multipart::parse_multipart(content_type, body, charset, limits)
        }
        Kind::Xml => xml::parse_xml(&body, charset).map(Parsed::from_value),
        Kind::Text => {
            let text = decode::decode_lossy(&body, charset.unwrap_or(UTF_8));
            Ok(Parsed::from_value(serde_json::json!({ "text": text })))
        }
    }
}

fn parse_json(body: &[u8], charset: Option<&'static Encoding>) -> Result<Value, BodyError> {
    let invalid = |e: serde_json::Error| BodyError::InvalidJson(e.to_string());
    match charset {
        None => serde_json::from_slice(decode::strip_utf8_bom(body)).map_err(invalid),
        Some(enc) if enc == UTF_8 => serde_json::from_slice(decode::strip_utf8_bom(body)).map_err(invalid),
        Some(enc) => {
            let text = decode::decode_strict(body, enc)
                .ok_or_else(|| BodyError::InvalidJson(format!("body is not valid {}", enc.name())))?;
            serde_json::from_str(&text).map_err(invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().copied().collect()
    }

    fn ct(content_type: &str) -> Headers {
        headers(&[("Content-Type", content_type)])
    }

    fn parse(format: BodyFormat, h: &Headers, body: &[u8]) -> Result<Value, BodyError> {
        parse_body(format, h, body, &BodyLimits::default()).map(|p| p.value)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn auto_follows_content_type() {
        assert_eq!(
            parse(BodyFormat::Auto, &ct("application/json; charset=utf-8"), br#"{"a":1}"#),
            Ok(json!({"a": 1}))
        );
        assert_eq!(parse(BodyFormat::Auto, &ct("application/vnd.api+json"), br#"[1]"#), Ok(json!([1])));
        assert_eq!(
            parse(BodyFormat::Auto, &ct("application/x-www-form-urlencoded"), b"a=1&b=x+y"),
            Ok(json!({"a": "1", "b": "x y"}))
        );
        assert_eq!(
            parse(BodyFormat::Auto, &ct("text/csv"), b"a,b"),
            Err(BodyError::UnsupportedMediaType("text/csv".into()))
        );
        assert_eq!(parse(BodyFormat::Auto, &Headers::new(), b"  "), Ok(json!({})));
        assert_eq!(parse(BodyFormat::Auto, &ct("text/plain"), b"hi there"), Ok(json!({"text": "hi there"})));
        assert_eq!(parse(BodyFormat::Auto, &ct("application/atom+xml"), b"<a>1</a>"), Ok(json!({"a": "1"})));
        assert_eq!(parse(BodyFormat::Auto, &ct("text/xml"), b"<a/>"), Ok(json!({"a": ""})));
    }

    #[test]
    fn bad_json_is_an_error_not_a_panic() {
        let e = parse(BodyFormat::Json, &ct("text/plain"), b"{\"a\":").unwrap_err();
        assert!(matches!(e, BodyError::InvalidJson(_)));
    }

    #[test]
    fn explicit_format_overrides_content_type() {
        assert_eq!(parse(BodyFormat::Form, &ct("text/plain"), b"x=1"), Ok(json!({"x": "1"})));
        assert_eq!(parse(BodyFormat::Text, &ct("application/json"), b"{"), Ok(json!({"text": "{"})));
    }

    #[test]
    fn json_utf8_is_strict_unless_a_charset_says_otherwise() {
        let cp1251 = b"{\"name\":\"\xc8\xe2\xe0\xed\"}"; // "Иван" in windows-1251
        assert!(matches!(
            parse(BodyFormat::Auto, &ct("application/json"), cp1251),
            Err(BodyError::InvalidJson(_))
        ));
        assert_eq!(
            parse(BodyFormat::Auto, &ct("application/json; charset=windows-1251"), cp1251),
            Ok(json!({"name": "Иван"}))
        );
        // A UTF-8 byte-order mark is tolerated (RFC 8259 lets parsers ignore it).
        assert_eq!(parse(BodyFormat::Json, &Headers::new(), b"\xEF\xBB\xBF{\"a\":1}"), Ok(json!({"a": 1})));
    }

    #[test]
    fn gzip_json() {
        let h = headers(&[("Content-Type", "application/json"), ("Content-Encoding", "gzip")]);
        assert_eq!(parse(BodyFormat::Auto, &h, &gzip(br#"{"a":[1,2]}"#)), Ok(json!({"a": [1, 2]})));
        let h = headers(&[("Content-Type", "application/json"), ("Content-Encoding", "X-GZIP")]);
        assert_eq!(parse(BodyFormat::Auto, &h, &gzip(br#"{"b":1}"#)), Ok(json!({"b": 1})));
    }

    #[test]
    fn gzip_bomb_over_the_cap_is_too_large() {
        // 16 MiB of zeros compresses to ~16 KiB; the cap is 1 MiB.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..16 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
        let limits = BodyLimits { max_decompressed_bytes: 1 << 20, ..BodyLimits::default() };
        let h = headers(&[("Content-Type", "application/json"), ("Content-Encoding", "gzip")]);
        let e = parse_body(BodyFormat::Auto, &h, &bomb, &limits).unwrap_err();
        assert_eq!(e, BodyError::DecompressedTooLarge { limit: 1 << 20 });
        assert!(e.is_too_large() && !e.is_unsupported());
        // Exactly at the cap is fine.
        let exact = gzip(&vec![b' '; 1 << 20]);
        assert_eq!(parse_body(BodyFormat::Json, &h, &exact, &limits).map(|p| p.value), Ok(json!({})));
    }

    #[test]
    fn deflate_zlib_and_raw() {
        let h = headers(&[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Encoding", "deflate"),
        ]);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"a=1&b=2").unwrap();
        assert_eq!(parse(BodyFormat::Auto, &h, &z.finish().unwrap()), Ok(json!({"a": "1", "b": "2"})));
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(b"a=3").unwrap();
        assert_eq!(parse(BodyFormat::Auto, &h, &d.finish().unwrap()), Ok(json!({"a": "3"})));
    }

    #[test]
    fn stacked_and_identity_encodings() {
        let h = headers(&[("Content-Type", "application/json"), ("Content-Encoding", "identity, gzip")]);
        assert_eq!(parse(BodyFormat::Auto, &h, &gzip(b"[1]")), Ok(json!([1])));
        let h = headers(&[("Content-Type", "application/json"), ("Content-Encoding", "gzip, gzip")]);
        assert_eq!(parse(BodyFormat::Auto, &h, &gzip(&gzip(b"[2]"))), Ok(json!([2])));
        let h = headers(&[("Content-Type", "application/json"), ("Content-Encoding", "identity")]);
        assert_eq!(parse(BodyFormat::Auto, &h, b"[3]"), Ok(json!([3])));
    }

    #[test]
    fn unknown_or_broken_encoding() {
        let h = headers(&[("Content-Type", "application/json"), ("Content-Encoding", "br")]);
        let e = parse(BodyFormat::Auto, &h, b"\x0b\x01\x80[]\x03").unwrap_err();
        assert_eq!(e, BodyError::UnsupportedEncoding("br".into()));
        assert!(e.is_unsupported() && !e.is_too_large());
        let h = headers(&[("Content-Type", "application/json"), ("Content-Encoding", "gzip")]);
        let e = parse(BodyFormat::Auto, &h, b"{\"not\":\"gzip\"}").unwrap_err();
        assert!(matches!(e, BodyError::ContentDecoding { .. }), "{e:?}");
        assert!(!e.is_unsupported() && !e.is_too_large());
        let mut truncated = gzip(br#"{"a":"some longer text to compress"}"#);
        truncated.truncate(truncated.len() - 6);
        assert!(matches!(parse(BodyFormat::Auto, &h, &truncated), Err(BodyError::ContentDecoding { .. })));
    }

    #[test]
    fn cp1251_form() {
        // "Иван Петров" percent-encoded in windows-1251, as older CRMs post it.
        let body = b"name=%C8%E2%E0%ED+%CF%E5%F2%F0%EE%E2&contact[city]=%CA%E8%E5%E2";
        for label in ["windows-1251", "cp1251", "\"CP1251\""] {
            let h = ct(&format!("application/x-www-form-urlencoded; charset={label}"));
            assert_eq!(
                parse(BodyFormat::Auto, &h, body),
                Ok(json!({"name": "Иван Петров", "contact": {"city": "Киев"}})),
                "{label}"
            );
        }
        // Without the charset the same bytes are invalid UTF-8: replaced, never fatal.
        let v = parse(BodyFormat::Auto, &ct("application/x-www-form-urlencoded"), body).unwrap();
        assert!(v["name"].as_str().unwrap().contains('\u{FFFD}'));
    }

    #[test]
    fn koi8r_and_latin1_text() {
        let koi8 = b"\xf0\xd2\xc9\xd7\xc5\xd4"; // "Привет" in KOI8-R
        assert_eq!(
            parse(BodyFormat::Auto, &ct("text/plain; charset=koi8-r"), koi8),
            Ok(json!({"text": "Привет"}))
        );
        assert_eq!(
            parse(BodyFormat::Auto, &ct("text/plain; charset=ISO-8859-1"), b"caf\xe9"),
            Ok(json!({"text": "café"}))
        );
    }

    #[test]
    fn unknown_charset_is_an_error() {
        let e = parse(BodyFormat::Auto, &ct("text/plain; charset=klingon"), b"x").unwrap_err();
        assert_eq!(e, BodyError::UnknownCharset("klingon".into()));
        assert!(!e.is_unsupported() && !e.is_too_large());
    }

    #[test]
    fn content_type_params() {
        let ct = r#"multipart/form-data; charset=UTF-8 ;BOUNDARY="a \"b\"; c"; x"#;
        assert_eq!(content_type_param(ct, "boundary").as_deref(), Some(r#"a "b"; c"#));
        assert_eq!(content_type_param(ct, "charset").as_deref(), Some("UTF-8"));
        assert_eq!(content_type_param(ct, "x").as_deref(), Some(""));
        assert_eq!(content_type_param(ct, "y"), None);
        assert_eq!(content_type_param("text/plain", "charset"), None);
        assert_eq!(content_type_param("a/b; q=\"unterminated", "q").as_deref(), Some("unterminated"));
    }

    #[test]
    fn limits_default_and_deserialize() {
        let l: BodyLimits = serde_json::from_value(json!({"max_parts": 3})).unwrap();
        assert_eq!(l, BodyLimits { max_parts: 3, ..BodyLimits::default() });
        assert_eq!(BodyLimits::default().max_decompressed_bytes, 6 * 1024 * 1024);
    }
}
