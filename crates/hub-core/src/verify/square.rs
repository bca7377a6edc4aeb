//! Square webhook signatures (`x-square-hmacsha256-signature`), see <https://developer.squareup.com/docs/webhooks/step3validate>
//!
//! base64 HMAC-SHA256(signature key, notification URL + raw body). Older subscriptions also sent
//! `x-square-signature`, the same over HMAC-SHA1; it is read only when the SHA-256 header is absent.
//! Square signs no timestamp, so there is no freshness check.

use super::{ConfigError, Scheme, VerifyError, VerifyInput};
use crate::secret::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use std::time::Duration;

const HEADER: &str = "x-square-hmacsha256-signature";
const LEGACY_HEADER: &str = "x-square-signature";

/// Square's scheme with the subscription signature keys (several during a rotation).
#[derive(Debug)]
pub struct Square {
    secrets: Vec<Secret>,
}

impl Square {
    /// `tolerance` is accepted for a uniform constructor and ignored: Square signs no timestamp.
    pub fn new(secrets: Vec<Secret>, tolerance: Option<Duration>) -> Result<Self, ConfigError> {
        let _ = tolerance;
        // An empty HMAC key would let anyone sign.
        super::require_keys("square", "signature key", &secrets)?;
        Ok(Self { secrets })
    }
}

/// Decodes exactly `N` bytes of base64 into a fixed buffer.
fn decode_exact<const N: usize>(s: &str) -> Option<[u8; N]> {
    // Longer text cannot hold N bytes; refusing it first keeps the buffer below big enough.
    if s.len() > N.div_ceil(3) * 4 {
        return None;
    }
    let mut buf = [0u8; 48];
    let n = STANDARD.decode_slice(s, &mut buf).ok()?;
    buf.get(..n)?.try_into().ok()
}

fn matches<M: Mac + KeyInit>(key: &[u8], url: &str, body: &[u8], sig: &[u8]) -> bool {
    <M as KeyInit>::new_from_slice(key).is_ok_and(|mut mac| {
        mac.update(url.as_bytes());
        mac.update(body);
        mac.verify_slice(sig).is_ok()
    })
}

impl Scheme for Square {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let h = input.headers;
        enum Sig {
            Sha256([u8; 32]),
            Sha1([u8; 20]),
        }
        let sig = if let Some(v) = h.get(HEADER) {
            Sig::Sha256(decode_exact(v.trim()).ok_or_else(|| VerifyError::Malformed(HEADER.into()))?)
        } else if let Some(v) = h.get(LEGACY_HEADER) {
            Sig::Sha1(decode_exact(v.trim()).ok_or_else(|| VerifyError::Malformed(LEGACY_HEADER.into()))?)
        } else {
            return Err(VerifyError::Missing(HEADER.into()));
        };
        // The URL is part of the signed content: without it nothing can be checked.
        let url = input.url.ok_or(VerifyError::NoUrl)?;
        let ok = self.secrets.iter().any(|s| {
            let key = s.expose().as_bytes();
            match &sig {
                Sig::Sha256(sig) => matches::<Hmac<Sha256>>(key, url, input.body, sig),
                Sig::Sha1(sig) => matches::<Hmac<Sha1>>(key, url, input.body, sig),
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

    // square-nodejs-sdk webhooks test: key "signature-key", URL https://webhook.site/webhooks.
    const BODY: &[u8] = br#"{"data":{"type":"webhooks","id":"fake_id"}}"#;
    const URL: &str = "https://webhook.site/webhooks";
    const SIG: &str = "W3FlCNk5IA3ZQ2LHTWoajvzfaDu/OwY2tNHIHC3IUOA=";

    fn square(secrets: &[&str]) -> Square {
        Square::new(secrets.iter().map(|s| Secret::new(*s)).collect(), None).expect("valid config")
    }

    fn run(s: &Square, headers: &[(&str, &str)], url: Option<&str>, body: &[u8]) -> Result<(), VerifyError> {
        let headers: Headers = headers.iter().copied().collect();
        s.verify(&VerifyInput {
            method: "POST",
            url,
            headers: &headers,
            body,
            now: UnixMillis(0),
            remote_ip: None,
        })
    }

    #[test]
    fn sdk_vector_verifies_with_rotation() {
        assert_eq!(run(&square(&["signature-key"]), &[(HEADER, SIG)], Some(URL), BODY), Ok(()));
        assert_eq!(run(&square(&["old-key", "signature-key"]), &[(HEADER, SIG)], Some(URL), BODY), Ok(()));
    }

    #[test]
    fn legacy_sha1_header_is_read_when_alone() {
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(b"signature-key").expect("any key length");
        mac.update(URL.as_bytes());
        mac.update(BODY);
        let legacy = STANDARD.encode(mac.finalize().into_bytes());
        let s = square(&["signature-key"]);
        assert_eq!(run(&s, &[(LEGACY_HEADER, &legacy)], Some(URL), BODY), Ok(()));
        // With both present only the SHA-256 one counts.
        let got = run(
            &s,
            &[(HEADER, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), (LEGACY_HEADER, &legacy)],
            Some(URL),
            BODY,
        );
        assert_eq!(got, Err(VerifyError::Mismatch));
    }

    #[test]
    fn url_key_body_mismatches_and_header_errors() {
        let s = square(&["signature-key"]);
        let h = [(HEADER, SIG)];
        assert_eq!(run(&s, &h, Some("https://webhook.site/webhook"), BODY), Err(VerifyError::Mismatch));
        assert_eq!(run(&square(&["other"]), &h, Some(URL), BODY), Err(VerifyError::Mismatch));
        assert_eq!(run(&s, &h, Some(URL), b"{}"), Err(VerifyError::Mismatch));
        assert_eq!(run(&s, &h, None, BODY), Err(VerifyError::NoUrl));
        assert_eq!(run(&s, &[], Some(URL), BODY), Err(VerifyError::Missing(HEADER.into())));
        // A SHA-1-sized value in the SHA-256 header.
        let got = run(&s, &[(HEADER, "1z2n3DEJJiUPKcPzQo1ftvbxGdw=")], Some(URL), BODY);
        assert_eq!(got, Err(VerifyError::Malformed(HEADER.into())));
    }

    #[test]
    fn unusable_secrets_are_refused() {
        assert!(Square::new(vec![], None).is_err());
        assert!(Square::new(vec![Secret::new("")], None).is_err());
    }
}
