//! Generic HMAC over a signed-content template, for senders without a dedicated scheme; the
//! pattern is surveyed at <https://webhooks.fyi/security/hmac>
//!
//! The integrator says what is signed, e.g. `{timestamp}.{body}` (Stripe-like) or
//! `{method}{url}{body}`, where the header and timestamp are, and how the MAC is written. The
//! template is parsed once, at load, into parts; a request only feeds those parts to the MAC.

use super::{
    ConfigError, HmacAlgorithm, Scheme, SigEncoding, VerifyError, VerifyInput, check_fresh,
    strip_prefix_ignore_case,
};
use crate::secret::Secret;
use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use std::time::Duration;

/// How a sender signs, as written in a mapping file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateHmacConfig {
    pub algorithm: HmacAlgorithm,
    #[serde(default)]
    pub encoding: SigEncoding,
    /// The header carrying the signature(s).
    pub signature_header: String,
    /// Text before each signature, e.g. `sha256=` or `v1=` (matched ignoring ASCII case).
    #[serde(default)]
    pub prefix: String,
    /// The header carrying the signed timestamp, in unix seconds or milliseconds (told apart by
    /// magnitude). Required by `{timestamp}` and by a tolerance.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// The signed content: literal text and `{body}`, `{timestamp}`, `{method}`, `{url}`,
    /// `{header:Name}`; `{{` and `}}` stand for literal braces.
    pub template: String,
    /// Splits a header holding several signatures (e.g. `,` or ` `); `None`: one signature.
    #[serde(default)]
    pub separator: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(Box<[u8]>),
    Body,
    Timestamp,
    Method,
    Url,
    Header(String),
}

/// A compiled [`TemplateHmacConfig`] with its secrets (several during a rotation).
#[derive(Debug)]
pub struct TemplateHmac {
    config: TemplateHmacConfig,
    parts: Vec<Part>,
    secrets: Vec<Secret>,
    tolerance: Option<Duration>,
}

/// A timestamp at least this large is read as milliseconds: as seconds it would be past the year
/// 5000, as milliseconds it is after March 1973.
const MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// Base64 as senders write it: with or without the `=` padding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl TemplateHmac {
    pub fn new(
        config: TemplateHmacConfig,
        secrets: Vec<Secret>,
        tolerance: Option<Duration>,
    ) -> Result<Self, ConfigError> {
        // An empty HMAC key would let anyone sign.
        super::require_keys("template-hmac", "secret", &secrets)?;
        check_header_name(&config.signature_header)?;
        if let Some(name) = &config.timestamp_header {
            check_header_name(name)?;
        }
        if config.separator.as_deref() == Some("") {
            return Err(ConfigError::BadSetting {
                scheme: "template-hmac",
                text: "`separator` must not be empty (omit it for a single signature)".into(),
            });
        }
        let parts = parse_template(&config.template)?;
        // Without the body in the MAC, anyone could swap the payload under a valid signature.
        if !parts.contains(&Part::Body) {
            return Err(ConfigError::BadTemplate(
                format!("template `{}` does not sign {{body}}", config.template).into(),
            ));
        }
        let signs_timestamp = parts.contains(&Part::Timestamp);
        match (&config.timestamp_header, signs_timestamp) {
            (None, true) => {
                return Err(ConfigError::BadTemplate(
                    "the template uses {timestamp} but no `timestamp_header` is set".into(),
                ));
            }
            // An unsigned timestamp can be rewritten by whoever replays the request.
            (Some(_), false) => {
                return Err(ConfigError::BadTemplate(
                    "`timestamp_header` is set but the template does not sign {timestamp}".into(),
                ));
            }
            _ => {}
        }
        if tolerance.is_some() && config.timestamp_header.is_none() {
            return Err(ConfigError::ToleranceWithoutTimestamp {
                scheme: "template-hmac",
                needs: "a `timestamp_header` to check",
            });
        }
        Ok(Self { config, parts, secrets, tolerance })
    }

    fn mac_len(&self) -> usize {
        match self.config.algorithm {
            HmacAlgorithm::Sha1 => 20,
            HmacAlgorithm::Sha256 => 32,
            HmacAlgorithm::Sha512 => 64,
        }
    }

    /// The signatures of the header that can be read, decoded into fixed buffers; entries without
    /// the prefix or of the wrong length are skipped.
    fn signatures<'a>(&'a self, value: &'a str) -> impl Iterator<Item = ([u8; 64], usize)> + 'a {
        let sep = self.config.separator.as_deref();
        let mut rest = Some(value);
        let pieces = std::iter::from_fn(move || {
            let r = rest?;
            match sep.and_then(|s| r.split_once(s)) {
                Some((piece, tail)) => {
                    rest = Some(tail);
                    Some(piece)
                }
                None => {
                    rest = None;
                    Some(r)
                }
            }
        });
        let len = self.mac_len();
        pieces.filter_map(move |piece| {
            let encoded = strip_prefix_ignore_case(piece.trim(), &self.config.prefix)?;
            let mut buf = [0u8; 64];
            match self.config.encoding {
                SigEncoding::Hex => hex::decode_to_slice(encoded, buf.get_mut(..len)?).ok()?,
                SigEncoding::Base64 => {
                    // Longer text cannot hold `len` bytes; refusing it first keeps `scratch` big enough.
                    if encoded.len() > len.div_ceil(3) * 4 {
                        return None;
                    }
                    let mut scratch = [0u8; 96];
                    let n = B64.decode_slice(encoded, &mut scratch).ok()?;
                    if n != len {
                        return None;
                    }
                    buf.get_mut(..len)?.copy_from_slice(scratch.get(..len)?);
                }
            }
            Some((buf, len))
        })
    }
}

fn check_header_name(name: &str) -> Result<(), ConfigError> {
    // RFC 9110 token characters.
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(ConfigError::BadName {
            scheme: "template-hmac",
            text: format!("`{name}` is not a valid header name").into(),
        });
    }
    Ok(())
}

fn parse_template(template: &str) -> Result<Vec<Part>, ConfigError> {
    let bad = |text: String| ConfigError::BadTemplate(text.into());
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    let flush = |literal: &mut String, parts: &mut Vec<Part>| {
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(literal).into_bytes().into_boxed_slice()));
        }
    };
    while let Some(i) = rest.find(['{', '}']) {
        let (text, tail) = rest.split_at(i);
        literal.push_str(text);
        if let Some(after) = tail.strip_prefix("{{") {
            literal.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            literal.push('}');
            rest = after;
        } else if let Some(after) = tail.strip_prefix('{') {
            let (name, after) = after
                .split_once('}')
                .ok_or_else(|| bad(format!("unclosed `{{` in template `{template}`")))?;
            let part = match name {
                "body" => Part::Body,
                "timestamp" => Part::Timestamp,
                "method" => Part::Method,
                "url" => Part::Url,
                _ => match name.strip_prefix("header:") {
                    Some(header) => {
                        check_header_name(header)?;
                        Part::Header(header.to_string())
                    }
                    None => {
                        return Err(bad(format!(
                            "unknown placeholder `{{{name}}}` in template `{template}`; \
                             expected {{body}}, {{timestamp}}, {{method}}, {{url}} or {{header:Name}} \
                             (write `{{{{` for a literal brace)"
                        )));
                    }
                },
            };
            flush(&mut literal, &mut parts);
            parts.push(part);
            rest = after;
        } else {
            return Err(bad(format!(
                "lone `}}` in template `{template}` (write `}}}}` for a literal brace)"
            )));
        }
    }
    literal.push_str(rest);
    flush(&mut literal, &mut parts);
    Ok(parts)
}

/// Keys a MAC, feeds it the content once, then tries each candidate on a clone of it.
fn any_matches<M: Mac + KeyInit + Clone>(
    key: &[u8],
    content: &[&[u8]],
    mut candidates: impl Iterator<Item = ([u8; 64], usize)>,
) -> bool {
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else { return false };
    for part in content {
        mac.update(part);
    }
    candidates.any(|(buf, len)| buf.get(..len).is_some_and(|sig| mac.clone().verify_slice(sig).is_ok()))
}

impl Scheme for TemplateHmac {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let h = input.headers;
        let sig_name = &self.config.signature_header;
        let value = h.get(sig_name).ok_or_else(|| VerifyError::Missing(sig_name.clone()))?;
        if self.signatures(value).next().is_none() {
            return Err(VerifyError::Malformed(sig_name.clone()));
        }
        let mut ts_raw = "";
        if let Some(ts_name) = &self.config.timestamp_header {
            ts_raw = h.get(ts_name).ok_or_else(|| VerifyError::Missing(ts_name.clone()))?.trim();
            let ts = ts_raw.parse::<i64>().map_err(|_| VerifyError::Malformed(ts_name.clone()))?;
            let ms = if ts.unsigned_abs() >= MILLIS_THRESHOLD.unsigned_abs() {
                i128::from(ts)
            } else {
                i128::from(ts) * 1000
            };
            check_fresh(input.now, ms, self.tolerance)?;
        }
        // Resolved once per request; the list is as long as the template, not the request.
        let content = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Literal(bytes) => Ok(&bytes[..]),
                Part::Body => Ok(input.body),
                Part::Timestamp => Ok(ts_raw.as_bytes()),
                Part::Method => Ok(input.method.as_bytes()),
                Part::Url => input.url.map(str::as_bytes).ok_or(VerifyError::NoUrl),
                Part::Header(name) => {
                    h.get(name).map(str::as_bytes).ok_or_else(|| VerifyError::Missing(name.clone()))
                }
            })
            .collect::<Result<Vec<&[u8]>, _>>()?;
        let ok = self.secrets.iter().any(|secret| {
            let key = secret.expose().as_bytes();
            let candidates = self.signatures(value);
            match self.config.algorithm {
                HmacAlgorithm::Sha1 => any_matches::<Hmac<sha1::Sha1>>(key, &content, candidates),
                HmacAlgorithm::Sha256 => any_matches::<Hmac<sha2::Sha256>>(key, &content, candidates),
                HmacAlgorithm::Sha512 => any_matches::<Hmac<sha2::Sha512>>(key, &content, candidates),
            }
        });
        if ok { Ok(()) } else { Err(VerifyError::Mismatch) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use crate::time::UnixMillis;

    fn config(template: &str) -> TemplateHmacConfig {
        TemplateHmacConfig {
            algorithm: HmacAlgorithm::Sha256,
            encoding: SigEncoding::Hex,
            signature_header: "X-Sig".into(),
            prefix: String::new(),
            timestamp_header: None,
            template: template.into(),
            separator: None,
        }
    }

    fn build(config: TemplateHmacConfig, secrets: &[&str], tolerance: Option<u64>) -> TemplateHmac {
        TemplateHmac::new(
            config,
            secrets.iter().map(|s| Secret::new(*s)).collect(),
            tolerance.map(Duration::from_secs),
        )
        .expect("valid config")
    }

    fn run(
        t: &TemplateHmac,
        headers: &[(&str, &str)],
        url: Option<&str>,
        body: &[u8],
        now: UnixMillis,
    ) -> Result<(), VerifyError> {
        let headers: Headers = headers.iter().copied().collect();
        t.verify(&VerifyInput { method: "POST", url, headers: &headers, body, now, remote_ip: None })
    }

    // Stripe's typeclasses vector (secret "secret", t=123, body "hello") through a template.
    const STRIPE_SIG: &str = "f89c0a0e96fa6304a7ebd5ecaf13bc1beb859577cd7cafb7bdbc43c3bc2f6afa";

    fn stripe_like(tolerance: Option<u64>) -> TemplateHmac {
        let c = TemplateHmacConfig {
            prefix: "v1=".into(),
            timestamp_header: Some("X-Ts".into()),
            separator: Some(",".into()),
            ..config("{timestamp}.{body}")
        };
        build(c, &["secret"], tolerance)
    }

    #[test]
    fn stripe_vector_through_a_template_with_several_signatures() {
        let t = stripe_like(None);
        let sig = format!("v0=00, v1=abcd,v1={STRIPE_SIG}");
        let h = [("X-Sig", sig.as_str()), ("X-Ts", "123")];
        assert_eq!(run(&t, &h, None, b"hello", UnixMillis(0)), Ok(()));
        assert_eq!(run(&t, &h, None, b"hello!", UnixMillis(0)), Err(VerifyError::Mismatch));
        let strict = stripe_like(Some(300));
        let expired = run(&strict, &h, None, b"hello", UnixMillis::from_secs(123 + 301));
        assert_eq!(expired, Err(VerifyError::Expired { tolerance_secs: 300 }));
        assert_eq!(run(&strict, &h, None, b"hello", UnixMillis::from_secs(123 + 300)), Ok(()));
    }

    #[test]
    fn github_and_shopify_vectors_through_templates() {
        // GitHub's documented vector and the corpus Shopify vector.
        let gh = build(
            TemplateHmacConfig {
                prefix: "sha256=".into(),
                signature_header: "X-Hub-Signature-256".into(),
                ..config("{body}")
            },
            &["It's a Secret to Everybody"],
            None,
        );
        let h = [(
            "X-Hub-Signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )];
        assert_eq!(run(&gh, &h, None, b"Hello, World!", UnixMillis(0)), Ok(()));
        let shopify = build(
            TemplateHmacConfig {
                encoding: SigEncoding::Base64,
                signature_header: "X-Shopify-Hmac-Sha256".into(),
                ..config("{body}")
            },
            &["test-webhook-secret"],
            None,
        );
        let body = br#"{"id":1234567890,"email":"customer@example.com","total_price":"123.45"}"#;
        // Unpadded base64 is accepted too.
        let h = [("X-Shopify-Hmac-Sha256", "QNyObTlKbMx2qDlPF/ZOZcBqg5OgPg+2oky3zldc0Gw")];
        assert_eq!(run(&shopify, &h, None, body, UnixMillis(0)), Ok(()));
        assert_eq!(run(&shopify, &h, None, b"other", UnixMillis(0)), Err(VerifyError::Mismatch));
    }

    #[test]
    fn method_url_headers_and_millisecond_timestamps() {
        let c = TemplateHmacConfig {
            algorithm: HmacAlgorithm::Sha512,
            encoding: SigEncoding::Base64,
            timestamp_header: Some("X-Ts".into()),
            ..config("{method} {url}\n{header:X-Id}:{timestamp}:{{{body}}}")
        };
        let t = build(c, &["k"], Some(60));
        let mut mac = <Hmac<sha2::Sha512> as KeyInit>::new_from_slice(b"k").expect("any key length");
        mac.update(b"POST https://h/p?q\nabc:1700000000123:{payload}");
        let sig = base64::engine::general_purpose::STANDARD_NO_PAD.encode(mac.finalize().into_bytes());
        let h = [("X-Sig", sig.as_str()), ("X-Ts", "1700000000123"), ("x-id", "abc")];
        let now = UnixMillis(1_700_000_000_123);
        assert_eq!(run(&t, &h, Some("https://h/p?q"), b"payload", now), Ok(()));
        assert_eq!(run(&t, &h, None, b"payload", now), Err(VerifyError::NoUrl));
        assert_eq!(
            run(&t, &h[..2], Some("https://h/p?q"), b"payload", now),
            Err(VerifyError::Missing("X-Id".into()))
        );
        let later = UnixMillis(1_700_000_061_124);
        assert_eq!(
            run(&t, &h, Some("https://h/p?q"), b"payload", later),
            Err(VerifyError::Expired { tolerance_secs: 60 })
        );
    }

    #[test]
    fn header_errors() {
        let t = stripe_like(Some(300));
        let sig = format!("v1={STRIPE_SIG}");
        assert_eq!(
            run(&t, &[("X-Ts", "123")], None, b"hello", UnixMillis(0)),
            Err(VerifyError::Missing("X-Sig".into()))
        );
        assert_eq!(
            run(&t, &[("X-Sig", &sig)], None, b"hello", UnixMillis(0)),
            Err(VerifyError::Missing("X-Ts".into()))
        );
        let bad_ts = [("X-Sig", sig.as_str()), ("X-Ts", "12:00")];
        assert_eq!(
            run(&t, &bad_ts, None, b"hello", UnixMillis(0)),
            Err(VerifyError::Malformed("X-Ts".into()))
        );
        for bad in ["", "v1=", "sha256=f89c", STRIPE_SIG, "v1=zz,v1=é"] {
            let got = run(&t, &[("X-Sig", bad), ("X-Ts", "123")], None, b"hello", UnixMillis(0));
            assert_eq!(got, Err(VerifyError::Malformed("X-Sig".into())), "{bad}");
        }
    }

    #[test]
    fn template_is_parsed_once_and_bad_configs_are_refused() {
        let parts = parse_template("a{{b}}{body}.{header:X-A}c").expect("valid template");
        assert_eq!(
            parts,
            vec![
                Part::Literal(b"a{b}".to_vec().into_boxed_slice()),
                Part::Body,
                Part::Literal(b".".to_vec().into_boxed_slice()),
                Part::Header("X-A".into()),
                Part::Literal(b"c".to_vec().into_boxed_slice()),
            ]
        );
        let secrets = || vec![Secret::new("k")];
        for (template, needle) in [
            ("{bodyy}", "unknown placeholder `{bodyy}`"),
            ("{body", "unclosed"),
            ("{body}}", "lone `}`"),
            ("{timestamp}", "does not sign {body}"),
            ("{timestamp}{body}", "no `timestamp_header`"),
            ("{header:}{body}", "not a valid header name"),
            ("{header:a b}{body}", "not a valid header name"),
        ] {
            let err = TemplateHmac::new(config(template), secrets(), None).expect_err(template);
            assert!(err.to_string().contains(needle), "{template}: {err}");
        }
        let unsigned_ts = TemplateHmacConfig { timestamp_header: Some("X-Ts".into()), ..config("{body}") };
        assert!(TemplateHmac::new(unsigned_ts, secrets(), None).is_err());
        assert!(TemplateHmac::new(config("{body}"), secrets(), Some(Duration::from_secs(1))).is_err());
        let empty_sep = TemplateHmacConfig { separator: Some(String::new()), ..config("{body}") };
        assert!(TemplateHmac::new(empty_sep, secrets(), None).is_err());
        assert!(TemplateHmac::new(config("{body}"), vec![], None).is_err());
        assert!(TemplateHmac::new(config("{body}"), vec![Secret::new("")], None).is_err());
    }
}
