//! Generic Ed25519 webhook signatures (RFC 8032), e.g. Discord interactions: signature of
//! `{timestamp}{body}` in `X-Signature-Ed25519` (hex), timestamp in `X-Signature-Timestamp`.
//! <https://discord.com/developers/docs/interactions/overview#setting-up-an-endpoint-validating-security-request-headers>

use super::{ConfigError, Scheme, VerifyError, VerifyInput, parse_secs};
use crate::secret::Secret;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use std::time::Duration;

/// How the signature bytes are written in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Ed25519Encoding {
    #[default]
    Hex,
    Base64,
}

/// Where the signature is and what it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ed25519Config {
    /// Header carrying the signature.
    pub header: String,
    /// Text before the signature in the header (`"v1="`, …), matched case-insensitively.
    pub prefix: String,
    pub encoding: Ed25519Encoding,
    /// When set, the signed content is `{value of this header}{body}` (Discord); else the body.
    pub timestamp_header: Option<String>,
    /// Allowed distance between the timestamp (unix seconds) and the clock; `None`: not checked.
    /// Needs `timestamp_header`.
    pub tolerance: Option<Duration>,
}

impl Ed25519Config {
    /// Discord interactions: hex signature in `X-Signature-Ed25519` over
    /// `X-Signature-Timestamp` + body.
    pub fn discord(tolerance: Option<Duration>) -> Self {
        Self {
            header: "X-Signature-Ed25519".into(),
            prefix: String::new(),
            encoding: Ed25519Encoding::Hex,
            timestamp_header: Some("X-Signature-Timestamp".into()),
            tolerance,
        }
    }

    /// The body alone, signed, signature in `header`.
    pub fn body_only(header: impl Into<String>, encoding: Ed25519Encoding) -> Self {
        Self {
            header: header.into(),
            prefix: String::new(),
            encoding,
            timestamp_header: None,
            tolerance: None,
        }
    }
}

/// Verifies Ed25519 signatures with the sender's public key(s) (several during a rotation).
#[derive(Clone, Debug)]
pub struct Ed25519 {
    keys: Vec<VerifyingKey>,
    config: Ed25519Config,
}

impl Ed25519 {
    /// `public_keys`: 32-byte Ed25519 public keys, hex (64 digits) or base64.
    pub fn new(public_keys: Vec<Secret>, config: Ed25519Config) -> Result<Self, ConfigError> {
        if public_keys.is_empty() {
            return Err(ConfigError::NoKey { scheme: "ed25519", text: "no public key configured".into() });
        }
        if config.tolerance.is_some() && config.timestamp_header.is_none() {
            return Err(ConfigError::ToleranceWithoutTimestamp {
                scheme: "ed25519",
                needs: "a timestamp header",
            });
        }
        let keys = super::parse_keys("ed25519", "public key", &public_keys, parse_key)?;
        Ok(Self { keys, config })
    }
}

fn parse_key(text: &str) -> Result<VerifyingKey, &'static str> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(t).ok()
    } else {
        decode_b64(t)
    }
    .ok_or("neither hex nor base64")?;
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| "not 32 bytes")?;
    // Rejects encodings that are not a curve point.
    VerifyingKey::from_bytes(&arr).map_err(|_| "not a valid Ed25519 public key")
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let bare = s.trim_end_matches('=');
    STANDARD
        .decode(s)
        .ok()
        .or_else(|| STANDARD_NO_PAD.decode(bare).ok())
        .or_else(|| URL_SAFE.decode(s).ok())
        .or_else(|| URL_SAFE_NO_PAD.decode(bare).ok())
}

impl Scheme for Ed25519 {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let c = &self.config;
        let value =
            input.headers.get(&c.header).ok_or_else(|| VerifyError::Missing(c.header.clone()))?.trim();
        let malformed = || VerifyError::Malformed(c.header.clone());
        let encoded = value
            .get(..c.prefix.len())
            .filter(|head| head.eq_ignore_ascii_case(&c.prefix))
            .and_then(|_| value.get(c.prefix.len()..))
            .ok_or_else(malformed)?;
        let raw = match c.encoding {
            Ed25519Encoding::Hex => hex::decode(encoded).ok(),
            Ed25519Encoding::Base64 => decode_b64(encoded),
        }
        .ok_or_else(malformed)?;
        let sig = Signature::from_slice(&raw).map_err(|_| malformed())?;

        let signed: std::borrow::Cow<'_, [u8]> = match &c.timestamp_header {
            None => input.body.into(),
            Some(th) => {
                let ts = input.headers.get(th).ok_or_else(|| VerifyError::Missing(th.clone()))?;
                if let Some(tol) = c.tolerance {
                    let secs = parse_secs(ts).ok_or_else(|| VerifyError::Malformed(th.clone()))?;
                    super::check_fresh(input.now, i128::from(secs) * 1000, Some(tol))?;
                }
                // The timestamp is signed exactly as sent, then the raw body.
                let mut m = Vec::with_capacity(ts.len() + input.body.len());
                m.extend_from_slice(ts.as_bytes());
                m.extend_from_slice(input.body);
                m.into()
            }
        };
        // `verify_strict` also refuses small-order keys/points and non-canonical signatures, which
        // honest signers never produce.
        if self.keys.iter().any(|k| k.verify_strict(&signed, &sig).is_ok()) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use crate::time::UnixMillis;
    use ed25519_dalek::{Signer, SigningKey};

    // RFC 8032 §7.1, TEST 2 (one-byte message 0x72).
    const RFC_PK: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    const RFC_SIG: &str = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";

    fn run(v: &Ed25519, headers: &[(&str, &str)], body: &[u8], now_secs: u64) -> Result<(), VerifyError> {
        let headers: Headers = headers.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let input = VerifyInput {
            method: "POST",
            url: None,
            headers: &headers,
            body,
            now: UnixMillis::from_secs(now_secs),
            remote_ip: None,
        };
        v.verify(&input)
    }

    #[test]
    fn rfc8032_vector_body_only_hex_and_base64_key() {
        let cfg = Ed25519Config::body_only("X-Sig", Ed25519Encoding::Hex);
        let v = Ed25519::new(vec![Secret::new(RFC_PK)], cfg.clone()).expect("key");
        assert_eq!(run(&v, &[("X-Sig", RFC_SIG)], &[0x72], 0), Ok(()));
        assert_eq!(run(&v, &[("X-Sig", RFC_SIG)], &[0x73], 0), Err(VerifyError::Mismatch));
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(RFC_PK).expect("hex"));
        let v = Ed25519::new(vec![Secret::new(b64)], cfg).expect("key");
        assert_eq!(run(&v, &[("X-Sig", RFC_SIG)], &[0x72], 0), Ok(()));
        assert_eq!(run(&v, &[("X-Sig", "zz")], &[0x72], 0), Err(VerifyError::Malformed("X-Sig".into())));
    }

    #[test]
    fn discord_style_timestamp_and_tolerance() {
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let pk = hex::encode(sk.verifying_key().to_bytes());
        let body = br#"{"type":1}"#;
        let ts = "1700000000";
        let sig = hex::encode(sk.sign(&[ts.as_bytes(), body].concat()).to_bytes());
        let v = Ed25519::new(vec![Secret::new(pk)], Ed25519Config::discord(Some(Duration::from_secs(5))))
            .expect("key");
        let h = [("X-Signature-Ed25519", sig.as_str()), ("X-Signature-Timestamp", ts)];
        assert_eq!(run(&v, &h, body, 1_700_000_003), Ok(()));
        assert_eq!(run(&v, &h, body, 1_700_000_006), Err(VerifyError::Expired { tolerance_secs: 5 }));
        let other_ts = [("X-Signature-Ed25519", sig.as_str()), ("X-Signature-Timestamp", "1700000001")];
        assert_eq!(run(&v, &other_ts, body, 1_700_000_001), Err(VerifyError::Mismatch));
        assert_eq!(run(&v, &h[..1], body, 0), Err(VerifyError::Missing("X-Signature-Timestamp".into())));
    }

    #[test]
    fn bad_keys_are_refused() {
        let cfg = Ed25519Config::discord(None);
        assert!(Ed25519::new(vec![Secret::new("abcd")], cfg.clone()).is_err());
        assert!(Ed25519::new(Vec::new(), cfg).is_err());
        let no_ts = Ed25519Config {
            tolerance: Some(Duration::from_secs(1)),
            ..Ed25519Config::body_only("X", Ed25519Encoding::Hex)
        };
        assert!(Ed25519::new(vec![Secret::new(RFC_PK)], no_ts).is_err());
    }
}
