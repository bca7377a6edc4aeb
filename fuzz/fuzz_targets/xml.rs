//! `parse_body` with `BodyFormat::Xml`. Byte 0 picks the `Content-Type` (and so the charset the
//! parser starts from); the rest is the body.
#![no_main]

use hub_core::body::{BodyFormat, BodyLimits, parse_body};
use hub_core::request::Headers;
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/xml"),
    Some("text/xml; charset=utf-8"),
    Some("application/xml; charset=windows-1251"),
    Some("application/atom+xml; charset=utf-16le"),
    Some("text/xml; charset=utf-16be"),
    Some("application/xml; charset=koi8-r"),
    Some("application/xml; charset=shift_jis"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let mut headers = Headers::new();
    if let Some(ct) = CONTENT_TYPES[usize::from(sel) % CONTENT_TYPES.len()] {
        headers.push("Content-Type", ct);
    }
    let _ = parse_body(BodyFormat::Xml, &headers, body, &BodyLimits::default());
});
