//! Signature verification over the raw bytes, in constant time.
//!
//! Only a [`Verified`] request can reach routing: it can be built by [`Verifier::verify`] alone.
//! The generic HMAC scheme lives here; provider schemes implement [`Scheme`], and
//! [`presets`] maps provider names to them.

pub mod calendly;
pub mod ed25519;
pub mod hubspot;
pub mod liqpay;
pub mod mailgun;
pub mod mandrill;
pub mod paddle;
pub mod paddle_classic;
pub mod presets;
pub mod sendgrid;
pub mod slack;
pub mod square;
pub mod standard_webhooks;
pub mod stripe;
pub mod template_hmac;
pub mod token;
pub mod twilio;
pub mod webflow;

use crate::request::{Headers, RawRequest};
use crate::secret::Secret;
use crate::time::UnixMillis;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use std::borrow::Cow;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SigEncoding {
    #[default]
    Hex,
    Base64,
}

/// What a scheme sees of a request.
#[derive(Clone, Copy, Debug)]
pub struct VerifyInput<'a> {
    pub method: &'a str,
    /// The URL as the sender called it (`https://host/path?query`), for schemes that sign it
    /// (Twilio, Square, HubSpot v2/v3, Mandrill); `None` when it cannot be known.
    pub url: Option<&'a str>,
    pub headers: &'a Headers,
    pub body: &'a [u8],
    /// The verifier's clock, for timestamp tolerance.
    pub now: UnixMillis,
    pub remote_ip: Option<std::net::IpAddr>,
}

/// A provider's verification scheme with its resolved secrets (several during a rotation) and
/// timestamp tolerance (`None`: freshness not checked).
pub trait Scheme: Send + Sync + std::fmt::Debug {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError>;
}

/// A compiled verification scheme with its resolved secrets (several during a rotation).
#[derive(Clone, Debug)]
pub enum Verifier {
    /// No verification declared (e.g. a test source, or a sender that cannot sign).
    None,
    Hmac {
        algorithm: HmacAlgorithm,
        encoding: SigEncoding,
        header: String,
        prefix: String,
        secrets: Vec<Secret>,
    },
    /// A provider or generic scheme.
    Scheme(std::sync::Arc<dyn Scheme>),
    /// The scheme could not be built because its key is a placeholder (not set on this
    /// machine): every request is refused with the reason.
    Unavailable(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The header (or body field) carrying the signature is absent.
    #[error("missing signature header `{0}`")]
    Missing(String),
    /// The signature (or timestamp) is present but cannot be read.
    #[error("signature header `{0}` is malformed")]
    Malformed(String),
    #[error("signature does not match")]
    Mismatch,
    /// The signed timestamp is outside the tolerance window (a replay or a skewed clock).
    #[error("signature timestamp is outside the {tolerance_secs}s tolerance")]
    Expired { tolerance_secs: u64 },
    /// The scheme needs the URL the sender called and it is not known (set `public_url`).
    #[error("cannot verify: the public URL of this endpoint is not known")]
    NoUrl,
    /// Not a signature: the request is refused by an allow-list or a shared token.
    #[error("{0}")]
    NotAllowed(String),
    /// The source's key is not configured on this machine.
    #[error("verification is not configured: {0}")]
    NotConfigured(String),
}

/// Why a verification scheme cannot be built from its configuration. Every kind is permanent:
/// the mapping file or the secret has to change. The text is the integrator's diagnostic and
/// never quotes a key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No key is configured (`text` says which, in the scheme's words).
    #[error("{scheme}: {text}")]
    NoKey { scheme: &'static str, text: Cow<'static, str> },
    /// A key is empty or only whitespace: with it anyone could sign (or guess the token).
    #[error("{scheme}: a {what} is empty")]
    EmptyKey { scheme: &'static str, what: &'static str },
    /// Key number `index` (from 1) cannot be read as the scheme's key material.
    #[error("{scheme}: {what} #{index}: {reason}")]
    BadKey { scheme: &'static str, what: &'static str, index: usize, reason: &'static str },
    /// A header, parameter or field name the scheme reads is not valid.
    #[error("{scheme}: {text}")]
    BadName { scheme: &'static str, text: Cow<'static, str> },
    /// The signing template cannot be used.
    #[error("template-hmac: {0}")]
    BadTemplate(Cow<'static, str>),
    /// Another setting of the scheme is not valid.
    #[error("{scheme}: {text}")]
    BadSetting { scheme: &'static str, text: Cow<'static, str> },
    /// A tolerance is set but nothing signed carries a timestamp to check it against.
    #[error("{scheme}: a tolerance needs {needs}")]
    ToleranceWithoutTimestamp { scheme: &'static str, needs: &'static str },
    /// An allow-list entry is neither an address nor a CIDR network.
    #[error("ip allow-list: `{0}` is not an address or CIDR network")]
    BadNetwork(String),
    /// An allow-list without networks would refuse everything.
    #[error("ip allow-list: no network configured (it would refuse everything)")]
    NoNetwork,
}

impl ConfigError {
    /// A stable name of the kind, for logs and tooling (renaming one is a breaking change).
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::NoKey { .. } => "verify_no_key",
            ConfigError::EmptyKey { .. } => "verify_empty_key",
            ConfigError::BadKey { .. } => "verify_bad_key",
            ConfigError::BadName { .. } => "verify_bad_name",
            ConfigError::BadTemplate(_) => "verify_bad_template",
            ConfigError::BadSetting { .. } => "verify_bad_setting",
            ConfigError::ToleranceWithoutTimestamp { .. } => "verify_tolerance_without_timestamp",
            ConfigError::BadNetwork(_) => "verify_bad_network",
            ConfigError::NoNetwork => "verify_no_network",
        }
    }
}

/// A request whose signature was checked (or whose source declares no verification).
#[derive(Debug)]
pub struct Verified<'a>(&'a RawRequest);

impl<'a> Verified<'a> {
    pub fn request(&self) -> &'a RawRequest {
        self.0
    }
}

impl Verifier {
    pub fn verify<'a>(&self, req: &'a RawRequest) -> Result<Verified<'a>, VerifyError> {
        self.verify_with(req, None, req.received_at)
    }

    /// Verifies with the URL the sender called (for URL-signing schemes) and the verifier's clock.
    pub fn verify_with<'a>(
        &self,
        req: &'a RawRequest,
        url: Option<&str>,
        now: UnixMillis,
    ) -> Result<Verified<'a>, VerifyError> {
        match self {
            Verifier::None => Ok(Verified(req)),
            Verifier::Unavailable(why) => Err(VerifyError::NotConfigured(why.clone())),
            Verifier::Scheme(s) => {
                let input = VerifyInput {
                    method: &req.method,
                    url,
                    headers: &req.headers,
                    body: &req.body,
                    now,
                    remote_ip: req.remote_addr.as_deref().and_then(|a| a.parse().ok()),
                };
                s.verify(&input).map(|()| Verified(req))
            }
            Verifier::Hmac { algorithm, encoding, header, prefix, secrets } => {
                let value = req.headers.get(header).ok_or_else(|| VerifyError::Missing(header.clone()))?;
                let value = value.trim();
                let encoded = if prefix.is_empty() {
                    value
                } else {
                    strip_prefix_ignore_case(value, prefix)
                        .ok_or_else(|| VerifyError::Malformed(header.clone()))?
                };
                let provided =
                    decode(*encoding, encoded).ok_or_else(|| VerifyError::Malformed(header.clone()))?;
                // An empty key is never a match, even if one slipped past compilation.
                if secrets.iter().any(|s| {
                    !s.expose().trim().is_empty()
                        && hmac_matches(*algorithm, s.expose().as_bytes(), &req.body, &provided)
                }) {
                    Ok(Verified(req))
                } else {
                    Err(VerifyError::Mismatch)
                }
            }
        }
    }

    /// Signs `body` with the first secret, as a sender would (used by `hub mappings render`
    /// examples and tests); `None` when the scheme has nothing to sign.
    pub fn sign(&self, body: &[u8]) -> Option<(String, String)> {
        match self {
            Verifier::None | Verifier::Scheme(_) | Verifier::Unavailable(_) => None,
            Verifier::Hmac { algorithm, encoding, header, prefix, secrets } => {
                let key = secrets.first()?.expose().as_bytes();
                let mac = hmac_bytes(*algorithm, key, body);
                let enc = match encoding {
                    SigEncoding::Hex => hex::encode(mac),
                    SigEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(mac),
                };
                Some((header.clone(), format!("{prefix}{enc}")))
            }
        }
    }
}

/// Refuses a key list that is empty or holds an empty (or whitespace-only) key: with an empty
/// key anyone can compute the MAC (or guess the token), so a scheme must never be built with one.
pub(crate) fn check_keys(
    scheme: &'static str,
    what: &'static str,
    keys: &[Secret],
) -> Result<(), ConfigError> {
    if keys.is_empty() {
        return Err(ConfigError::NoKey { scheme, text: format!("no {what} configured").into() });
    }
    non_empty_keys(scheme, what, keys)
}

/// [`check_keys`] for the schemes whose message asks for "at least one" key.
pub(crate) fn require_keys(
    scheme: &'static str,
    what: &'static str,
    keys: &[Secret],
) -> Result<(), ConfigError> {
    if keys.is_empty() {
        return Err(ConfigError::NoKey { scheme, text: format!("at least one {what} is required").into() });
    }
    non_empty_keys(scheme, what, keys)
}

fn non_empty_keys(scheme: &'static str, what: &'static str, keys: &[Secret]) -> Result<(), ConfigError> {
    if keys.iter().any(|k| k.expose().trim().is_empty()) {
        return Err(ConfigError::EmptyKey { scheme, what });
    }
    Ok(())
}

/// Parses each key with `parse`; a failure names the key by its position in the list.
pub(crate) fn parse_keys<K>(
    scheme: &'static str,
    what: &'static str,
    keys: &[Secret],
    parse: impl Fn(&str) -> Result<K, &'static str>,
) -> Result<Vec<K>, ConfigError> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            parse(k.expose()).map_err(|reason| ConfigError::BadKey { scheme, what, index: i + 1, reason })
        })
        .collect()
}

/// Unix seconds as senders write them: ASCII digits only, within u64.
pub(crate) fn parse_secs(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether a signed timestamp is within `tolerance` of the verifier's clock (`None`: not
/// checked). Both directions count: a timestamp far in the future is as suspect as an old one.
pub(crate) fn check_fresh(
    now: UnixMillis,
    signed_ms: i128,
    tolerance: Option<Duration>,
) -> Result<(), VerifyError> {
    let Some(tol) = tolerance else { return Ok(()) };
    if (i128::from(now.0) - signed_ms).unsigned_abs() > tol.as_millis() {
        return Err(VerifyError::Expired { tolerance_secs: tol.as_secs() });
    }
    Ok(())
}

/// `value` without `prefix`, matched ignoring ASCII case (`sha256=`, `v1=`).
pub(crate) fn strip_prefix_ignore_case<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| value.get(prefix.len()..)).flatten()
}

/// Standard-alphabet base64, with or without padding (senders differ).
pub(crate) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    STANDARD.decode(s).ok().or_else(|| STANDARD_NO_PAD.decode(s.trim_end_matches('=')).ok())
}

fn decode(encoding: SigEncoding, s: &str) -> Option<Vec<u8>> {
    match encoding {
        SigEncoding::Hex => hex::decode(s).ok(),
        SigEncoding::Base64 => decode_base64(s),
    }
}

fn hmac_matches(alg: HmacAlgorithm, key: &[u8], body: &[u8], provided: &[u8]) -> bool {
    // `verify_slice` compares in constant time.
    macro_rules! check {
        ($d:ty) => {{
            match <Hmac<$d> as KeyInit>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(body);
                    m.verify_slice(provided).is_ok()
                }
                Err(_) => false,
            }
        }};
    }
    match alg {
        HmacAlgorithm::Sha1 => check!(sha1::Sha1),
        HmacAlgorithm::Sha256 => check!(sha2::Sha256),
        HmacAlgorithm::Sha512 => check!(sha2::Sha512),
    }
}

fn hmac_bytes(alg: HmacAlgorithm, key: &[u8], body: &[u8]) -> Vec<u8> {
    macro_rules! mac {
        ($d:ty) => {{
            match <Hmac<$d> as KeyInit>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(body);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }};
    }
    match alg {
        HmacAlgorithm::Sha1 => mac!(sha1::Sha1),
        HmacAlgorithm::Sha256 => mac!(sha2::Sha256),
        HmacAlgorithm::Sha512 => mac!(sha2::Sha512),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use crate::time::UnixMillis;

    fn req(headers: &[(&str, &str)], body: &str) -> RawRequest {
        RawRequest {
            method: "POST".into(),
            path: "/hooks/x".into(),
            query: None,
            headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect::<Headers>(),
            body: bytes::Bytes::from(body.to_string()),
            received_at: UnixMillis(0),
            remote_addr: None,
        }
    }

    fn github(secrets: &[&str]) -> Verifier {
        Verifier::Hmac {
            algorithm: HmacAlgorithm::Sha256,
            encoding: SigEncoding::Hex,
            header: "X-Hub-Signature-256".into(),
            prefix: "sha256=".into(),
            secrets: secrets.iter().map(|s| Secret::new(*s)).collect(),
        }
    }

    // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
    const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn documented_github_vector_verifies() {
        let r = req(&[("X-Hub-Signature-256", GH_SIG)], "Hello, World!");
        assert!(github(&["It's a Secret to Everybody"]).verify(&r).is_ok());
    }

    #[test]
    fn rotation_accepts_any_listed_secret() {
        let r = req(&[("X-Hub-Signature-256", GH_SIG)], "Hello, World!");
        assert!(github(&["old", "It's a Secret to Everybody"]).verify(&r).is_ok());
    }

    #[test]
    fn tampered_body_missing_and_malformed_headers_fail() {
        let v = github(&["It's a Secret to Everybody"]);
        assert_eq!(
            v.verify(&req(&[("X-Hub-Signature-256", GH_SIG)], "Hello, World?")).unwrap_err(),
            VerifyError::Mismatch
        );
        assert!(matches!(v.verify(&req(&[], "x")).unwrap_err(), VerifyError::Missing(_)));
        assert!(matches!(
            v.verify(&req(&[("X-Hub-Signature-256", "sha256=zz")], "x")).unwrap_err(),
            VerifyError::Malformed(_)
        ));
        assert!(matches!(
            v.verify(&req(&[("X-Hub-Signature-256", "md5=00")], "x")).unwrap_err(),
            VerifyError::Malformed(_)
        ));
    }

    #[test]
    fn an_empty_hmac_key_never_matches() {
        // HMAC-SHA256 of "Hello, World!" under the empty key: what a forger would send.
        let forged =
            format!("sha256={}", hex::encode(hmac_bytes(HmacAlgorithm::Sha256, b"", b"Hello, World!")));
        for key in ["", "  "] {
            let r = req(&[("X-Hub-Signature-256", forged.as_str())], "Hello, World!");
            assert_eq!(github(&[key]).verify(&r).unwrap_err(), VerifyError::Mismatch, "key {key:?}");
        }
    }

    #[test]
    fn schemes_refuse_empty_keys_when_built() {
        let empty = || vec![Secret::new("")];
        let blank = || vec![Secret::new(" \t")];
        assert!(token::BasicAuth::new("user", empty()).is_err());
        assert!(token::BasicAuth::new("user", blank()).is_err());
        assert!(token::BasicAuth::new("user", vec![Secret::new("pw"), Secret::new("")]).is_err());
        assert!(token::SharedToken::new(token::TokenLocation::Query("t".into()), blank()).is_err());
        assert!(token::ApiKeyHeader::new("X-Key", blank()).is_err());
        assert!(mailgun::Mailgun::new(empty(), None).is_err());
        assert!(mandrill::Mandrill::new(blank(), None).is_err());
        assert!(twilio::Twilio::new(empty(), None).is_err());
        assert!(liqpay::LiqPay::new(blank(), None).is_err());
        assert!(slack::Slack::new(blank(), None).is_err());
        assert!(stripe::Stripe::new(blank(), None).is_err());
        assert!(hubspot::HubSpot::new(blank(), None).is_err());
        assert!(square::Square::new(blank(), None).is_err());
        assert!(paddle::Paddle::new(blank(), None).is_err());
        assert!(webflow::Webflow::new(blank(), None).is_err());
        assert!(calendly::new(blank(), None).is_err());
        assert!(standard_webhooks::StandardWebhooks::new(blank(), None).is_err());
        assert!(sendgrid::SendGrid::new(blank(), None).is_err());
        assert!(paddle_classic::PaddleClassic::new(blank(), None).is_err());
        assert!(check_keys("x", "key", &[Secret::new("k")]).is_ok());
    }

    #[test]
    fn config_errors_keep_their_text_and_name_their_kind() {
        let cases: Vec<(ConfigError, &str, &str)> = vec![
            (
                mailgun::Mailgun::new(vec![], None).unwrap_err(),
                "verify_no_key",
                "mailgun: no webhook signing key configured",
            ),
            (
                slack::Slack::new(vec![], None).unwrap_err(),
                "verify_no_key",
                "slack: at least one signing secret is required",
            ),
            (
                hubspot::HubSpot::new(vec![Secret::new(" ")], None).unwrap_err(),
                "verify_empty_key",
                "hubspot: a client secret is empty",
            ),
            (
                ed25519::Ed25519::new(
                    vec![Secret::new("zz")],
                    ed25519::Ed25519Config::body_only("X-Sig", ed25519::Ed25519Encoding::Hex),
                )
                .unwrap_err(),
                "verify_bad_key",
                "ed25519: public key #1: neither hex nor base64",
            ),
            (
                token::ApiKeyHeader::new("", vec![Secret::new("k")]).unwrap_err(),
                "verify_bad_name",
                "api key: empty header name",
            ),
            (
                token::IpAllowList::new(["10.0.0.0/33"]).unwrap_err(),
                "verify_bad_network",
                "ip allow-list: `10.0.0.0/33` is not an address or CIDR network",
            ),
            (
                token::IpAllowList::new(Vec::<String>::new()).unwrap_err(),
                "verify_no_network",
                "ip allow-list: no network configured (it would refuse everything)",
            ),
        ];
        for (err, code, text) in cases {
            assert_eq!((err.code(), err.to_string().as_str()), (code, text));
        }
        let tol = ed25519::Ed25519Config {
            tolerance: Some(Duration::from_secs(5)),
            ..ed25519::Ed25519Config::body_only("X-Sig", ed25519::Ed25519Encoding::Hex)
        };
        let err = ed25519::Ed25519::new(vec![Secret::new("k")], tol).unwrap_err();
        assert_eq!(err.code(), "verify_tolerance_without_timestamp");
        assert_eq!(err.to_string(), "ed25519: a tolerance needs a timestamp header");
    }

    #[test]
    fn sign_round_trips_in_base64() {
        let v = Verifier::Hmac {
            algorithm: HmacAlgorithm::Sha512,
            encoding: SigEncoding::Base64,
            header: "X-Sig".into(),
            prefix: String::new(),
            secrets: vec![Secret::new("k")],
        };
        let (h, s) = v.sign(b"body").expect("signable");
        assert!(v.verify(&req(&[(h.as_str(), s.as_str())], "body")).is_ok());
    }
}
