//! `parse_body(BodyFormat::Auto, …)`: byte 0 picks the `Content-Type`, byte 1 the
//! `Content-Encoding` handling, the rest is the body.
//!
//! Encoding modes 1, 2 and 7 hand the fuzz bytes to the decompressor as they are (fuzzing the
//! inflate path and its size cap); modes 3..=6 compress the body in the harness first, so the
//! parsers behind a `Content-Encoding` are reached too.
#![no_main]

use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use hub_core::body::{BodyFormat, BodyLimits, parse_body};
use hub_core::request::Headers;
use libfuzzer_sys::fuzz_target;
use std::io::Write;

const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/x-www-form-urlencoded"),
    Some("application/x-www-form-urlencoded; charset=windows-1251"),
    Some("multipart/form-data; boundary=XyZ"),
    Some("application/xml"),
    Some("text/xml; charset=windows-1251"),
    Some("text/plain"),
    None,
    Some("text/plain; charset=utf-16le"),
    Some("application/json; charset=windows-1251"),
    Some("multipart/form-data; boundary=XyZ; charset=koi8-r"),
    Some("application/vnd.api+json; charset=utf-16be"),
    Some("application/atom+xml; charset=utf-8"),
    Some("text/csv"),
    Some("application/x-www-form-urlencoded; charset=\"cp1251\""),
];

fn compress(mode: u8, body: &[u8]) -> Vec<u8> {
    fn fin<W: Write>(mut w: W, body: &[u8], finish: impl FnOnce(W) -> std::io::Result<Vec<u8>>) -> Vec<u8> {
        w.write_all(body).expect("in-memory write");
        finish(w).expect("in-memory finish")
    }
    match mode {
        3 | 6 => fin(GzEncoder::new(Vec::new(), Compression::fast()), body, GzEncoder::finish),
        4 => fin(ZlibEncoder::new(Vec::new(), Compression::fast()), body, ZlibEncoder::finish),
        _ => fin(DeflateEncoder::new(Vec::new(), Compression::fast()), body, DeflateEncoder::finish),
    }
}

fuzz_target!(|data: &[u8]| {
    let [ct, enc, body @ ..] = data else { return };
    let mut headers = Headers::new();
    if let Some(ct) = CONTENT_TYPES[usize::from(*ct) % CONTENT_TYPES.len()] {
        headers.push("Content-Type", ct);
    }
    let mode = enc % 8;
    let compressed;
    let body: &[u8] = match mode {
        0 => body,
        1 | 7 => {
            headers.push("Content-Encoding", if mode == 1 { "gzip" } else { "gzip, deflate" });
            body
        }
        2 => {
            headers.push("Content-Encoding", "deflate");
            body
        }
        _ => {
            headers.push(
                "Content-Encoding",
                match mode {
                    3 => "gzip",
                    4 | 5 => "deflate",
                    _ => "identity, x-gzip",
                },
            );
            compressed = compress(mode, body);
            &compressed
        }
    };
    let _ = parse_body(BodyFormat::Auto, &headers, body, &BodyLimits::default());
});
