//! Transport decoding: `Content-Encoding` undone under a hard size cap, and `charset` labels
//! resolved to decoders.
//!
//! Labels go through the WHATWG Encoding Standard registry (`encoding_rs`), the same table browsers
//! use, so `cp1251`, `windows-1251`, `koi8-r`, `latin1`/`iso-8859-1` (read as windows-1252, its
//! superset) all work. Labels that map to the WHATWG "replacement" decoder (ISO-2022-KR and kin)
//! are reported as unknown rather than silently turning the body into one U+FFFD.

use super::{BodyError, content_type_param};
use crate::request::Headers;
use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE};
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use std::borrow::Cow;
use std::io::Read;

/// More stacked codings than this is not something a real sender does; refusing bounds the work.
const MAX_CODINGS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coding {
    Gzip,
    Deflate,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

/// The codings of every `Content-Encoding` header, in the order the sender applied them
/// (`identity` dropped). An unknown coding is [`BodyError::UnsupportedEncoding`].
pub(crate) fn content_codings(headers: &Headers) -> Result<Vec<Coding>, BodyError> {
    let mut codings = Vec::new();
    let values = headers.0.iter().filter(|(k, _)| k.eq_ignore_ascii_case("content-encoding"));
    for token in values.flat_map(|(_, v)| v.split(',')) {
        let token = token.trim();
        let coding = match token.to_ascii_lowercase().as_str() {
            "" | "identity" => continue,
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            _ => return Err(BodyError::UnsupportedEncoding(token.to_string())),
        };
        if codings.len() == MAX_CODINGS {
            return Err(BodyError::UnsupportedEncoding(format!("more than {MAX_CODINGS} stacked codings")));
        }
        codings.push(coding);
    }
    Ok(codings)
}

/// Undoes `codings` (last applied first). Each stage's output is capped at `max` bytes.
pub(crate) fn decode_content<'a>(
    codings: &[Coding],
    body: &'a [u8],
    max: usize,
) -> Result<Cow<'a, [u8]>, BodyError> {
    // An empty body carries nothing to inflate; some senders label even those.
    if body.is_empty() {
        return Ok(Cow::Borrowed(body));
    }
    let mut data = Cow::Borrowed(body);
    for &coding in codings.iter().rev() {
        data = Cow::Owned(inflate(coding, &data, max)?);
    }
    Ok(data)
}

fn inflate(coding: Coding, input: &[u8], max: usize) -> Result<Vec<u8>, BodyError> {
    match coding {
        Coding::Gzip => read_capped(MultiGzDecoder::new(input), coding, max),
        // HTTP's "deflate" is zlib-wrapped (RFC 9110), but some servers send raw deflate; a zlib
        // header is two bytes with CM = 8 whose big-endian value is a multiple of 31.
        Coding::Deflate if looks_like_zlib(input) => read_capped(ZlibDecoder::new(input), coding, max),
        Coding::Deflate => read_capped(DeflateDecoder::new(input), coding, max),
    }
}

fn looks_like_zlib(input: &[u8]) -> bool {
    match input {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// Reads `r` to the end, failing as soon as the output would exceed `max`. The buffer grows
/// geometrically but never beyond `max`, so a bomb cannot make us reserve more than the cap.
fn read_capped(mut r: impl Read, coding: Coding, max: usize) -> Result<Vec<u8>, BodyError> {
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(BodyError::ContentDecoding {
                    encoding: coding.name().into(),
                    reason: e.to_string(),
                });
            }
        };
        if n > max - out.len() {
            return Err(BodyError::DecompressedTooLarge { limit: max });
        }
        let needed = out.len() + n;
        if needed > out.capacity() {
            let target = out.capacity().saturating_mul(2).max(needed).max(8 * 1024).min(max);
            out.reserve_exact(target.max(needed) - out.len());
        }
        out.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// The decoder named by the `charset` parameter of `content_type`, if there is one.
pub(crate) fn charset(content_type: &str) -> Result<Option<&'static Encoding>, BodyError> {
    match content_type_param(content_type, "charset") {
        None => Ok(None),
        Some(label) if label.trim().is_empty() => Ok(None),
        Some(label) => encoding_for_label(&label).map(Some).ok_or(BodyError::UnknownCharset(label)),
    }
}

pub(crate) fn encoding_for_label(label: &str) -> Option<&'static Encoding> {
    Encoding::for_label_no_replacement(label.trim().as_bytes())
}

pub(crate) fn strip_utf8_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

/// Decodes `bytes` (a byte-order mark overrides `enc`, as in browsers); `None` when any byte
/// sequence is invalid in the encoding.
pub(crate) fn decode_strict<'a>(bytes: &'a [u8], enc: &'static Encoding) -> Option<Cow<'a, str>> {
    let (text, _, had_errors) = enc.decode(bytes);
    (!had_errors).then_some(text)
}

/// Decodes `bytes` with invalid sequences replaced by U+FFFD (a byte-order mark overrides `enc`).
pub(crate) fn decode_lossy<'a>(bytes: &'a [u8], enc: &'static Encoding) -> Cow<'a, str> {
    enc.decode(bytes).0
}

/// For an encoding named inside an ASCII-compatible document (an XML declaration), UTF-16 cannot
/// be right: the declaration itself was readable as ASCII. Browsers read such documents as UTF-8.
pub(crate) fn ascii_compatible(enc: &'static Encoding) -> &'static Encoding {
    if enc == UTF_16LE || enc == UTF_16BE { UTF_8 } else { enc }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for (label, name) in [
            ("cp1251", "windows-1251"),
            ("Windows-1251", "windows-1251"),
            ("koi8-r", "KOI8-R"),
            ("iso-8859-1", "windows-1252"),
            ("utf8", "UTF-8"),
        ] {
            assert_eq!(encoding_for_label(label).map(Encoding::name), Some(name), "{label}");
        }
        assert_eq!(encoding_for_label("iso-2022-kr"), None);
        assert_eq!(charset("text/plain; charset=\"\""), Ok(None));
    }

    #[test]
    fn zlib_header_detection() {
        assert!(looks_like_zlib(&[0x78, 0x9c]));
        assert!(looks_like_zlib(&[0x78, 0x01]));
        assert!(!looks_like_zlib(&[0xcb, 0x48]));
        assert!(!looks_like_zlib(&[0x78]));
    }

    #[test]
    fn capped_reader_reserves_at_most_the_cap() {
        let data = vec![7u8; 100_000];
        let out = read_capped(&data[..], Coding::Gzip, 100_000).unwrap();
        assert_eq!(out.len(), 100_000);
        assert!(out.capacity() <= 100_000);
        assert_eq!(
            read_capped(&data[..], Coding::Gzip, 99_999),
            Err(BodyError::DecompressedTooLarge { limit: 99_999 })
        );
    }
}
