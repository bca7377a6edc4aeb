//! `parse_body` with `BodyFormat::Multipart` and a boundary taken from the input.
//!
//! Byte 0: bits 0..=5 are the boundary length (0..=63), bit 6 quotes the boundary parameter,
//! bit 7 adds `; charset=windows-1251` (the default charset of text parts). Then the boundary
//! bytes (lossy UTF-8), then the body.
#![no_main]

use hub_core::body::{BodyFormat, BodyLimits, parse_body};
use hub_core::request::Headers;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let len = usize::from(ctl & 0x3f).min(rest.len());
    let (boundary, body) = rest.split_at(len);
    let boundary = String::from_utf8_lossy(boundary);
    let mut ct = String::from("multipart/form-data; boundary=");
    if ctl & 0x40 != 0 {
        ct.push('"');
        for c in boundary.chars() {
            if c == '"' || c == '\\' {
                ct.push('\\');
            }
            ct.push(c);
        }
        ct.push('"');
    } else {
        ct.push_str(&boundary);
    }
    if ctl & 0x80 != 0 {
        ct.push_str("; charset=windows-1251");
    }
    let mut headers = Headers::new();
    headers.push("Content-Type", ct);
    // Small limits too, so the over-limit paths are reached with short inputs.
    let limits = if body.len() % 2 == 0 {
        BodyLimits::default()
    } else {
        BodyLimits { max_decompressed_bytes: 1 << 20, max_attachment_bytes: 16, max_parts: 3 }
    };
    let _ = parse_body(BodyFormat::Multipart, &headers, body, &limits);
});
