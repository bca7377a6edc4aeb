//! `multipart/form-data` bodies (RFC 7578) through `multer`, driven synchronously.
//!
//! Text parts (no `filename`) are decoded (the part's own `charset`, else the request's, else
//! UTF-8, invalid bytes replaced) and fed to the same bracket-nesting builder as form bodies, so
//! `contact[name]` nests and a repeated name becomes an array. File parts (a `filename`, even an
//! empty one) become [`Attachment`]s and are referenced from the value under their field name:
//!
//! ```text
//! contact[name]=Ann, contact[photo]=<me.png, 3 bytes>
//! → {"contact": {"name": "Ann",
//!                "photo": {"filename": "me.png", "content_type": "image/png", "size": 3,
//!                          "sha256": "<hex>", "attachment": 0}}}
//! ```
//!
//! Parts without a `name` are counted against `max_parts` and otherwise skipped (RFC 7578 requires
//! the name). A part with an unknown `charset` label falls back to the request default rather than
//! failing the whole body.

use super::decode::{decode_lossy, encoding_for_label};
use super::form::FormBuilder;
use super::{Attachment, BodyError, BodyLimits, Parsed, content_type_param};
use bytes::{Bytes, BytesMut};
use encoding_rs::{Encoding, UTF_8};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll, Waker};

/// `multer` is stream-based; the whole body is one ready chunk, so each of its futures completes
/// on the first poll. A few re-polls tolerate a cooperative yield; a real stall is an error rather
/// than a hang (a blocking executor would wait forever on a future that never wakes).
const MAX_POLLS: usize = 8;

fn run<F: Future>(fut: F) -> Result<F::Output, BodyError> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..MAX_POLLS {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Ok(out);
        }
    }
    Err(BodyError::InvalidMultipart("parser made no progress".into()))
}

fn invalid(e: multer::Error) -> BodyError {
    BodyError::InvalidMultipart(e.to_string())
}

pub(crate) fn parse_multipart(
    content_type: &str,
    body: Bytes,
    default_charset: Option<&'static Encoding>,
    limits: &BodyLimits,
) -> Result<Parsed, BodyError> {
    let boundary = content_type_param(content_type, "boundary")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| BodyError::InvalidMultipart("no boundary in the Content-Type".into()))?;
    let default_charset = default_charset.unwrap_or(UTF_8);
    let mut multipart =
        multer::Multipart::new(futures_util::stream::iter([Ok::<_, Infallible>(body)]), boundary);
    let mut builder = FormBuilder::default();
    let mut attachments: Vec<Attachment> = Vec::new();
    let mut parts = 0usize;
    while let Some(mut field) = run(multipart.next_field())?.map_err(invalid)? {
        parts += 1;
        if parts > limits.max_parts {
            return Err(BodyError::TooManyParts { limit: limits.max_parts });
        }
        let name = field.name().map(str::to_owned);
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(ToString::to_string);
        // Text fields are bounded by the (already capped) body as a whole; files by their own cap.
        let limit = if filename.is_some() { limits.max_attachment_bytes } else { usize::MAX };
        let data = read_field(&mut field, limit, name.as_deref().unwrap_or(""))?;
        let Some(name) = name else { continue };
        match filename {
            None => {
                let enc = content_type
                    .as_deref()
                    .and_then(|ct| content_type_param(ct, "charset"))
                    .and_then(|label| encoding_for_label(&label))
                    .unwrap_or(default_charset);
                builder.push(&name, Value::String(decode_lossy(&data, enc).into_owned()));
            }
            Some(filename) => {
                let sha256 = hex::encode(Sha256::digest(&data));
                builder.push(
                    &name,
                    json!({
                        "filename": filename,
                        "content_type": content_type,
                        "size": data.len(),
                        "sha256": sha256,
                        "attachment": attachments.len(),
                    }),
                );
                attachments.push(Attachment {
                    field: name,
                    filename: Some(filename),
                    content_type,
                    size: data.len(),
                    sha256,
                    data,
                });
            }
        }
    }
    Ok(Parsed { value: builder.finish(), attachments })
}

/// The part's bytes, failing once they pass `limit`. With the body in one chunk `multer` hands the
/// part over as one zero-copy slice; several chunks are joined.
fn read_field(field: &mut multer::Field<'_>, limit: usize, name: &str) -> Result<Bytes, BodyError> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut size = 0usize;
    while let Some(chunk) = run(field.chunk())?.map_err(invalid)? {
        size = size.saturating_add(chunk.len());
        if size > limit {
            return Err(BodyError::AttachmentTooLarge { field: name.to_string(), limit });
        }
        chunks.push(chunk);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(size);
            chunks.iter().for_each(|c| all.extend_from_slice(c));
            all.freeze()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::{BodyFormat, parse_body};
    use super::*;
    use crate::request::Headers;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    fn part(name: &str, filename: Option<&str>, content_type: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut p = format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"");
        if let Some(f) = filename {
            p.push_str(&format!("; filename=\"{f}\""));
        }
        p.push_str("\r\n");
        if let Some(ct) = content_type {
            p.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        p.push_str("\r\n");
        let mut v = p.into_bytes();
        v.extend_from_slice(data);
        v.extend_from_slice(b"\r\n");
        v
    }

    fn body(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut b = parts.concat();
        b.extend_from_slice(b"--XyZ--\r\n");
        b
    }

    fn parse(ct: &str, body: &[u8], limits: &BodyLimits) -> Result<Parsed, BodyError> {
        let headers: Headers = [("Content-Type", ct)].into_iter().collect();
        parse_body(BodyFormat::Auto, &headers, body, limits)
    }

    #[test]
    fn fields_files_and_nesting() {
        let png = b"\x89PNG\r\n\x1a\n--XyZ-not-a-boundary\r\n";
        let b = body(&[
            part("contact[name]", None, None, "Ann Lee".as_bytes()),
            part("contact[city]", None, Some("text/plain; charset=windows-1251"), b"\xca\xe8\xe5\xe2"),
            part("tags[]", None, None, b"a"),
            part("tags[]", None, None, b"b"),
            part("note", None, None, b"x"),
            part("note", None, None, b"y"),
            part("contact[photo]", Some("me.png"), Some("image/png"), png),
            part("имя", None, None, "Иван".as_bytes()),
        ]);
        let parsed = parse(CT, &b, &BodyLimits::default()).unwrap();
        let real_sha = hex::encode(Sha256::digest(png));
        assert_eq!(
            parsed.value,
            json!({
                "contact": {
                    "name": "Ann Lee",
                    "city": "Киев",
                    "photo": {"filename": "me.png", "content_type": "image/png", "size": png.len(),
                              "sha256": real_sha, "attachment": 0}
                },
                "tags": ["a", "b"],
                "note": ["x", "y"],
                "имя": "Иван"
            })
        );
        assert_eq!(parsed.attachments.len(), 1);
        let a = &parsed.attachments[0];
        assert_eq!(a.field, "contact[photo]");
        assert_eq!(a.filename.as_deref(), Some("me.png"));
        assert_eq!(a.content_type.as_deref(), Some("image/png"));
        assert_eq!(a.size, png.len());
        assert_eq!(&a.data[..], png);
        // SHA-256 of the bytes, checked against a digest computed independently of the parser.
        assert_eq!(a.sha256, hex::encode(Sha256::digest(&a.data[..])));
        assert_eq!(
            hex::encode(Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn known_sha256_and_repeated_files() {
        let b = body(&[
            part("docs", Some("a.txt"), Some("text/plain"), b"abc"),
            part("docs", Some(""), None, b""),
        ]);
        let parsed = parse(CT, &b, &BodyLimits::default()).unwrap();
        assert_eq!(
            parsed.value,
            json!({"docs": [
                {"filename": "a.txt", "content_type": "text/plain", "size": 3,
                 "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "attachment": 0},
                {"filename": "", "content_type": null, "size": 0,
                 "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "attachment": 1}
            ]})
        );
        assert_eq!(parsed.attachments[1].data, Bytes::new());
    }

    #[test]
    fn request_charset_is_the_default_for_text_parts() {
        let b = body(&[part("n", None, None, b"\xf0\xd2\xc9\xd7\xc5\xd4")]);
        let parsed = parse("multipart/form-data; boundary=XyZ; charset=koi8-r", &b, &BodyLimits::default());
        assert_eq!(parsed.unwrap().value, json!({"n": "Привет"}));
    }

    #[test]
    fn attachment_over_the_cap() {
        let limits = BodyLimits { max_attachment_bytes: 10, ..BodyLimits::default() };
        let ok = body(&[part("f", Some("a.bin"), None, &[1u8; 10])]);
        assert_eq!(parse(CT, &ok, &limits).unwrap().attachments[0].size, 10);
        let big = body(&[part("f", Some("a.bin"), None, &[1u8; 11])]);
        let e = parse(CT, &big, &limits).unwrap_err();
        assert_eq!(e, BodyError::AttachmentTooLarge { field: "f".into(), limit: 10 });
        assert!(e.is_too_large());
        // Text fields are not attachments: the per-file cap does not apply to them.
        let text = body(&[part("t", None, None, &[b'a'; 11])]);
        assert!(parse(CT, &text, &limits).is_ok());
    }

    #[test]
    fn too_many_parts() {
        let limits = BodyLimits { max_parts: 2, ..BodyLimits::default() };
        let two = body(&[part("a", None, None, b"1"), part("b", None, None, b"2")]);
        assert!(parse(CT, &two, &limits).is_ok());
        let three =
            body(&[part("a", None, None, b"1"), part("b", None, None, b"2"), part("c", None, None, b"3")]);
        let e = parse(CT, &three, &limits).unwrap_err();
        assert_eq!(e, BodyError::TooManyParts { limit: 2 });
        assert!(e.is_too_large());
    }

    #[test]
    fn missing_boundary_and_malformed_bodies() {
        let b = body(&[part("a", None, None, b"1")]);
        let e = parse("multipart/form-data", &b, &BodyLimits::default()).unwrap_err();
        assert!(matches!(e, BodyError::InvalidMultipart(_)), "{e:?}");
        assert!(!e.is_unsupported() && !e.is_too_large());
        // Explicit format, no content type at all.
        let e = parse_body(BodyFormat::Multipart, &Headers::new(), &b, &BodyLimits::default()).unwrap_err();
        assert!(matches!(e, BodyError::InvalidMultipart(_)));
        // Wrong boundary, missing closing delimiter, truncated headers.
        for bad in [
            &b"--Other\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--Other--\r\n"[..],
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n",
            b"--XyZ\r\n\xff\xfe: x\r\n\r\n1\r\n--XyZ--",
        ] {
            assert!(matches!(parse(CT, bad, &BodyLimits::default()), Err(BodyError::InvalidMultipart(_))));
        }
    }

    #[test]
    fn quoted_boundary_and_preamble() {
        let b =
            b"preamble\r\n--a b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--a b--\r\nepilogue";
        let parsed = parse("multipart/form-data; boundary=\"a b\"", b, &BodyLimits::default()).unwrap();
        assert_eq!(parsed.value, json!({"x": "1"}));
    }

    #[test]
    fn nameless_parts_are_skipped() {
        let b = b"--XyZ\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n";
        assert_eq!(parse(CT, b, &BodyLimits::default()).unwrap().value, json!({}));
    }
}
