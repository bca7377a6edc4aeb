//! HubSpot request signatures (v1, v2, v3), see <https://developers.hubspot.com/docs/api/webhooks/validating-requests>
//!
//! - v3 (`X-HubSpot-Signature-v3` + `X-HubSpot-Request-Timestamp` in ms): base64
//!   HMAC-SHA256(client secret, method + URI + body + timestamp), with the percent-escapes HubSpot
//!   lists decoded in the URI.
//! - v2 (`X-HubSpot-Signature`, `X-HubSpot-Signature-Version: v2`): hex SHA-256(client secret +
//!   method + URI + body).
//! - v1 (same headers, `v1`): hex SHA-256(client secret + body).
//!
//! v3 is used whenever its header is present. v1/v2 sign no timestamp, so they cannot be checked
//! for freshness and a captured request replays forever; [`HubSpot::require_v3`] refuses them.

use super::{ConfigError, Scheme, VerifyError, VerifyInput, check_fresh};
use crate::secret::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::time::Duration;
use subtle::ConstantTimeEq;

const V3_HEADER: &str = "X-HubSpot-Signature-v3";
const TIMESTAMP: &str = "X-HubSpot-Request-Timestamp";
const HEADER: &str = "X-HubSpot-Signature";
const VERSION: &str = "X-HubSpot-Signature-Version";

/// HubSpot's schemes with the app's client secrets (several during a rotation).
#[derive(Debug)]
pub struct HubSpot {
    secrets: Vec<Secret>,
    tolerance: Option<Duration>,
    require_v3: bool,
}

impl HubSpot {
    /// `tolerance` applies to v3 only; HubSpot asks receivers to refuse v3 requests older than
    /// 5 minutes, so `Some(300 s)` is the documented setting.
    pub fn new(secrets: Vec<Secret>, tolerance: Option<Duration>) -> Result<Self, ConfigError> {
        // An empty key makes v1 a plain hash of the body that anyone can compute.
        super::require_keys("hubspot", "client secret", &secrets)?;
        Ok(Self { secrets, tolerance, require_v3: false })
    }

    /// Refuses v1/v2 requests (reported as a missing v3 header): they carry no timestamp, and a
    /// sender could otherwise strip the v3 header to fall back to them.
    pub fn require_v3(mut self) -> Self {
        self.require_v3 = true;
        self
    }

    fn verify_v3(&self, input: &VerifyInput<'_>, value: &str) -> Result<(), VerifyError> {
        let ts_raw =
            input.headers.get(TIMESTAMP).ok_or_else(|| VerifyError::Missing(TIMESTAMP.into()))?.trim();
        let sig: [u8; 32] =
            decode_b64_32(value.trim()).ok_or_else(|| VerifyError::Malformed(V3_HEADER.into()))?;
        let ts = ts_raw.parse::<i64>().map_err(|_| VerifyError::Malformed(TIMESTAMP.into()))?;
        check_fresh(input.now, i128::from(ts), self.tolerance)?;
        let url = input.url.ok_or(VerifyError::NoUrl)?;
        let matches = |secret: &Secret| {
            <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes()).is_ok_and(|mut mac| {
                mac.update(input.method.as_bytes());
                update_decoded_uri(&mut mac, url);
                mac.update(input.body);
                mac.update(ts_raw.as_bytes());
                mac.verify_slice(&sig).is_ok()
            })
        };
        if self.secrets.iter().any(matches) { Ok(()) } else { Err(VerifyError::Mismatch) }
    }

    fn verify_v1_v2(&self, input: &VerifyInput<'_>, value: &str) -> Result<(), VerifyError> {
        let version = input.headers.get(VERSION).ok_or_else(|| VerifyError::Missing(VERSION.into()))?.trim();
        let with_request_line = match version {
            "v1" => false,
            "v2" => true,
            _ => return Err(VerifyError::Malformed(VERSION.into())),
        };
        let mut sig = [0u8; 32];
        hex::decode_to_slice(value.trim(), &mut sig).map_err(|_| VerifyError::Malformed(HEADER.into()))?;
        let url = if with_request_line { Some(input.url.ok_or(VerifyError::NoUrl)?) } else { None };
        let matches = |secret: &Secret| {
            let mut hash = Sha256::new();
            hash.update(secret.expose().as_bytes());
            if let Some(url) = url {
                hash.update(input.method.as_bytes());
                hash.update(url.as_bytes());
            }
            hash.update(input.body);
            // A keyed plain hash, not an HMAC: compare in constant time by hand.
            bool::from(hash.finalize().as_slice().ct_eq(&sig))
        };
        if self.secrets.iter().any(matches) { Ok(()) } else { Err(VerifyError::Mismatch) }
    }
}

/// Decodes exactly 32 bytes of base64 into a fixed buffer.
fn decode_b64_32(s: &str) -> Option<[u8; 32]> {
    // Longer text cannot hold 32 bytes; refusing it first keeps the buffer big enough.
    if s.len() > 44 {
        return None;
    }
    let mut buf = [0u8; 36];
    let n = STANDARD.decode_slice(s, &mut buf).ok()?;
    buf.get(..n)?.try_into().ok()
}

/// The escapes HubSpot decodes in the URI before signing v3 (its docs list exactly these); any
/// other, e.g. `%20` or `%25`, stays as sent, so nothing is decoded twice.
fn decoded_escape(hex: &[u8]) -> Option<u8> {
    let byte = match hex {
        [a, b] => (hex_digit(*a)? << 4) | hex_digit(*b)?,
        _ => return None,
    };
    b":/?@!$'()*,;".contains(&byte).then_some(byte)
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Feeds the URI to the MAC with the listed escapes decoded, without building a copy of it.
fn update_decoded_uri(mac: &mut Hmac<Sha256>, uri: &str) {
    let bytes = uri.as_bytes();
    let mut done = 0;
    let mut i = 0;
    while let Some(pos) = bytes.get(i..).and_then(|rest| rest.iter().position(|&b| b == b'%')) {
        let at = i + pos;
        match bytes.get(at + 1..at + 3).and_then(decoded_escape) {
            Some(c) => {
                mac.update(bytes.get(done..at).unwrap_or_default());
                mac.update(&[c]);
                done = at + 3;
                i = at + 3;
            }
            None => i = at + 1,
        }
    }
    mac.update(bytes.get(done..).unwrap_or_default());
}

impl Scheme for HubSpot {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        if let Some(v3) = input.headers.get(V3_HEADER) {
            return self.verify_v3(input, v3);
        }
        match input.headers.get(HEADER) {
            Some(value) if !self.require_v3 => self.verify_v1_v2(input, value),
            _ => Err(VerifyError::Missing(V3_HEADER.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use crate::time::UnixMillis;

    // HubSpot's documented examples: client secret yyyyyyyy-…, POST https://www.example.com/webhook_uri.
    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const URL: &str = "https://www.example.com/webhook_uri";
    const BODY: &[u8] = br#"{"example_field":"example_value"}"#;
    const V1_BODY: &[u8] = br#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    const V1_SIG: &str = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de";
    const V2_SIG: &str = "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900";

    fn hubspot(secrets: &[&str]) -> HubSpot {
        HubSpot::new(secrets.iter().map(|s| Secret::new(*s)).collect(), Some(Duration::from_secs(300)))
            .expect("valid config")
    }

    fn run(
        s: &HubSpot,
        headers: &[(&str, &str)],
        method: &str,
        url: Option<&str>,
        body: &[u8],
        now_ms: u64,
    ) -> Result<(), VerifyError> {
        let headers: Headers = headers.iter().copied().collect();
        s.verify(&VerifyInput {
            method,
            url,
            headers: &headers,
            body,
            now: UnixMillis(now_ms),
            remote_ip: None,
        })
    }

    /// v3 signature as HubSpot computes it, over an already-decoded URI.
    fn sign_v3(secret: &str, method: &str, uri: &str, body: &[u8], ts: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key length");
        for part in [method.as_bytes(), uri.as_bytes(), body, ts.as_bytes()] {
            mac.update(part);
        }
        STANDARD.encode(mac.finalize().into_bytes())
    }

    #[test]
    fn documented_v1_and_v2_examples_verify() {
        let s = hubspot(&[SECRET]);
        let v1 = [(HEADER, V1_SIG), (VERSION, "v1")];
        assert_eq!(run(&s, &v1, "POST", None, V1_BODY, 0), Ok(()));
        let v2 = [(HEADER, V2_SIG), (VERSION, "v2")];
        assert_eq!(run(&hubspot(&["old", SECRET]), &v2, "POST", Some(URL), BODY, 0), Ok(()));
        assert_eq!(run(&s, &v2, "POST", None, BODY, 0), Err(VerifyError::NoUrl));
        assert_eq!(run(&s, &v2, "GET", Some(URL), BODY, 0), Err(VerifyError::Mismatch));
        assert_eq!(run(&s, &v1, "POST", None, BODY, 0), Err(VerifyError::Mismatch));
        assert_eq!(
            run(&s, &[(HEADER, V1_SIG)], "POST", None, V1_BODY, 0),
            Err(VerifyError::Missing(VERSION.into()))
        );
        let v9 = [(HEADER, V1_SIG), (VERSION, "v9")];
        assert_eq!(run(&s, &v9, "POST", None, V1_BODY, 0), Err(VerifyError::Malformed(VERSION.into())));
        assert_eq!(
            run(&s.require_v3(), &v1, "POST", None, V1_BODY, 0),
            Err(VerifyError::Missing(V3_HEADER.into()))
        );
    }

    #[test]
    fn v3_decodes_listed_escapes_and_checks_freshness() {
        let s = hubspot(&[SECRET]);
        let ts = "1700000000000";
        let now = 1_700_000_000_000;
        let sent = "https://www.example.com/webhook_uri%3Fx%3Dy%2Cz?q=a%20b%2a";
        let sig = sign_v3(SECRET, "POST", "https://www.example.com/webhook_uri?x%3Dy,z?q=a%20b*", BODY, ts);
        let h = [(V3_HEADER, sig.as_str()), (TIMESTAMP, ts)];
        assert_eq!(run(&s, &h, "POST", Some(sent), BODY, now), Ok(()));
        assert_eq!(run(&s, &h, "POST", Some(sent), BODY, now + 300_000), Ok(()));
        assert_eq!(
            run(&s, &h, "POST", Some(sent), BODY, now + 300_001),
            Err(VerifyError::Expired { tolerance_secs: 300 })
        );
        assert_eq!(run(&s, &h, "POST", Some(sent), b"{}", now), Err(VerifyError::Mismatch));
        assert_eq!(run(&s, &h, "POST", None, BODY, now), Err(VerifyError::NoUrl));
        // v3 wins over a (wrong) v1 header sent alongside it.
        let both = [(V3_HEADER, sig.as_str()), (TIMESTAMP, ts), (HEADER, V1_SIG), (VERSION, "v1")];
        assert_eq!(run(&s, &both, "POST", Some(sent), BODY, now), Ok(()));
        assert_eq!(
            run(&s, &[(V3_HEADER, sig.as_str())], "POST", Some(sent), BODY, now),
            Err(VerifyError::Missing(TIMESTAMP.into()))
        );
        let bad = [(V3_HEADER, "not base64"), (TIMESTAMP, ts)];
        assert_eq!(
            run(&s, &bad, "POST", Some(sent), BODY, now),
            Err(VerifyError::Malformed(V3_HEADER.into()))
        );
        let bad_ts = [(V3_HEADER, sig.as_str()), (TIMESTAMP, "yesterday")];
        assert_eq!(
            run(&s, &bad_ts, "POST", Some(sent), BODY, now),
            Err(VerifyError::Malformed(TIMESTAMP.into()))
        );
    }

    #[test]
    fn uri_decoding_never_panics_on_odd_escapes() {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"k").expect("any key length");
        for uri in ["%", "%3", "%3A", "a%", "%%3A", "%é", "%3é", "é%2F", "%2f%2F%zz"] {
            update_decoded_uri(&mut mac, uri);
        }
    }

    #[test]
    fn unusable_secrets_are_refused() {
        assert!(HubSpot::new(vec![], None).is_err());
        assert!(HubSpot::new(vec![Secret::new("")], None).is_err());
    }
}
