//! Paddle Billing webhook signatures (`Paddle-Signature`), see <https://developer.paddle.com/webhooks/signature-verification>
//!
//! `Paddle-Signature: ts=<unix seconds>;h1=<hex HMAC-SHA256>[;h1=…]`, signed content
//! `{ts}:{raw body}`, key = the whole notification-destination secret (`pdl_ntfset_…`).
//! Paddle Classic (RSA `p_signature`) is a different scheme and is not handled here.

use super::{ConfigError, Scheme, VerifyError, VerifyInput, check_fresh};
use crate::secret::Secret;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::Duration;

const HEADER: &str = "Paddle-Signature";

/// Paddle Billing's scheme with the destination secrets (several during a rotation).
#[derive(Debug)]
pub struct Paddle {
    secrets: Vec<Secret>,
    tolerance: Option<Duration>,
}

impl Paddle {
    /// Paddle's SDKs allow 5 s of drift by default.
    pub fn new(secrets: Vec<Secret>, tolerance: Option<Duration>) -> Result<Self, ConfigError> {
        // An empty HMAC key would let anyone sign.
        super::require_keys("paddle", "secret key", &secrets)?;
        Ok(Self { secrets, tolerance })
    }
}

/// The header's `key=value` items; `None` for an item without `=`, which makes the header malformed.
fn items(value: &str) -> impl Iterator<Item = Option<(&str, &str)>> {
    value.split(';').map(|item| item.split_once('=').map(|(k, v)| (k.trim(), v.trim())))
}

/// The `h1` signatures that can be read; unreadable ones (Paddle's own tests send `h1=dummy`
/// next to a good one) and other keys are skipped.
fn h1_signatures(value: &str) -> impl Iterator<Item = [u8; 32]> {
    items(value).flatten().filter(|(k, _)| *k == "h1").filter_map(|(_, v)| {
        let mut sig = [0u8; 32];
        hex::decode_to_slice(v, &mut sig).ok().map(|()| sig)
    })
}

/// The timestamp as sent (it is signed verbatim) and its value, when the header is well formed:
/// every item is `key=value`, exactly one integer `ts`, at least one readable `h1`.
fn parse(value: &str) -> Option<(&str, i64)> {
    let mut ts = None;
    for item in items(value) {
        let (k, v) = item?;
        if k == "ts" {
            if ts.is_some() {
                // Two timestamps: which one was signed is ambiguous, refuse rather than guess.
                return None;
            }
            ts = Some((v, v.parse::<i64>().ok()?));
        }
    }
    h1_signatures(value).next()?;
    ts
}

impl Scheme for Paddle {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let value = input.headers.get(HEADER).ok_or_else(|| VerifyError::Missing(HEADER.into()))?;
        let (ts_raw, ts) = parse(value).ok_or_else(|| VerifyError::Malformed(HEADER.into()))?;
        check_fresh(input.now, i128::from(ts) * 1000, self.tolerance)?;
        for secret in &self.secrets {
            let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes()) else {
                continue;
            };
            mac.update(ts_raw.as_bytes());
            mac.update(b":");
            mac.update(input.body);
            // The body is hashed once per secret; each candidate only finalizes a clone.
            if h1_signatures(value).any(|sig| mac.clone().verify_slice(&sig).is_ok()) {
                return Ok(());
            }
        }
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use crate::time::UnixMillis;

    // paddle-node-sdk vector: secret "VALID_SECRET", ts 1698796800, body {"data": ["1", "2"]}.
    const BODY: &[u8] = br#"{"data": ["1", "2"]}"#;
    const TS: u64 = 1_698_796_800;
    const SIG: &str = "ts=1698796800;h1=a300428748dce5c70e4da19bffd60769591ea969c99dea3105d0ec9612cf43f9";

    fn paddle(secrets: &[&str], tolerance: Option<u64>) -> Paddle {
        Paddle::new(secrets.iter().map(|s| Secret::new(*s)).collect(), tolerance.map(Duration::from_secs))
            .expect("valid config")
    }

    fn run(p: &Paddle, header: Option<&str>, body: &[u8], now: u64) -> Result<(), VerifyError> {
        let headers: Headers = header.map(|h| (HEADER, h)).into_iter().collect();
        p.verify(&VerifyInput {
            method: "POST",
            url: None,
            headers: &headers,
            body,
            now: UnixMillis::from_secs(now),
            remote_ip: None,
        })
    }

    #[test]
    fn sdk_vector_verifies_within_five_seconds_and_with_rotation() {
        let p = paddle(&["VALID_SECRET"], Some(5));
        assert_eq!(run(&p, Some(SIG), BODY, TS), Ok(()));
        assert_eq!(run(&p, Some(SIG), BODY, TS + 5), Ok(()));
        let several = format!("{SIG};h1=dummy");
        assert_eq!(run(&paddle(&["INVALID", "VALID_SECRET"], Some(5)), Some(&several), BODY, TS), Ok(()));
    }

    #[test]
    fn wrong_secret_body_and_stale_timestamp_fail() {
        let p = paddle(&["VALID_SECRET"], Some(5));
        assert_eq!(
            run(&paddle(&["INVALID_VALID_SECRET"], Some(5)), Some(SIG), BODY, TS),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(run(&p, Some(SIG), br#"{"data": ["1",  "2"]}"#, TS), Err(VerifyError::Mismatch));
        assert_eq!(
            run(&p, Some(SIG), BODY, TS + 4 * 86_400),
            Err(VerifyError::Expired { tolerance_secs: 5 })
        );
        assert_eq!(run(&paddle(&["VALID_SECRET"], None), Some(SIG), BODY, TS + 4 * 86_400), Ok(()));
    }

    #[test]
    fn missing_and_malformed_headers() {
        let p = paddle(&["VALID_SECRET"], Some(5));
        assert_eq!(run(&p, None, BODY, TS), Err(VerifyError::Missing(HEADER.into())));
        for bad in [
            "invalid_header",
            "h1=invalid_header",
            "ts=1234;h2=invalid_header",
            "ts=1234;h1=invalid_signature",
            "",
            ";;",
        ] {
            assert_eq!(run(&p, Some(bad), BODY, TS), Err(VerifyError::Malformed(HEADER.into())), "{bad}");
        }
    }

    #[test]
    fn unusable_secrets_are_refused() {
        assert!(Paddle::new(vec![], None).is_err());
        assert!(Paddle::new(vec![Secret::new("")], None).is_err());
    }
}
