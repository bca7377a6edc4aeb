//! Stripe webhook signatures (`Stripe-Signature`), see <https://docs.stripe.com/webhooks#verify-manually>
//!
//! `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…][,v0=…]`, signed content
//! `{t}.{raw body}`, key = the whole endpoint secret (`whsec_…` included, not decoded).

use super::{ConfigError, Scheme, VerifyError, VerifyInput, check_fresh};
use crate::secret::Secret;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::Duration;

const HEADER: &str = "Stripe-Signature";

/// Stripe's scheme with the endpoint secrets (several during a rotation).
#[derive(Debug)]
pub struct Stripe {
    header: &'static str,
    secrets: Vec<Secret>,
    tolerance: Option<Duration>,
}

impl Stripe {
    pub fn new(secrets: Vec<Secret>, tolerance: Option<Duration>) -> Result<Self, ConfigError> {
        Self::with_header(HEADER, secrets, tolerance)
    }

    /// The same scheme under another header: senders that copied Stripe's layout (Calendly).
    pub fn with_header(
        header: &'static str,
        secrets: Vec<Secret>,
        tolerance: Option<Duration>,
    ) -> Result<Self, ConfigError> {
        // An empty HMAC key would let anyone sign.
        super::require_keys(header, "signing secret", &secrets)?;
        Ok(Self { header, secrets, tolerance })
    }
}

/// The header's `key=value` items; `None` for an item without `=`, which makes the header malformed.
fn items(value: &str) -> impl Iterator<Item = Option<(&str, &str)>> {
    value.split(',').map(|item| item.split_once('=').map(|(k, v)| (k.trim(), v.trim())))
}

/// The `v1` signatures that can be read; others (`v0`, future schemes, bad hex) are skipped, as
/// Stripe's libraries do, so that one odd entry cannot hide a good one.
fn v1_signatures(value: &str) -> impl Iterator<Item = [u8; 32]> {
    items(value).flatten().filter(|(k, _)| *k == "v1").filter_map(|(_, v)| {
        let mut sig = [0u8; 32];
        hex::decode_to_slice(v, &mut sig).ok().map(|()| sig)
    })
}

/// The timestamp as sent (it is signed verbatim) and its value, when the header is well formed:
/// every item is `key=value`, exactly one `t` that is an integer, at least one readable `v1`.
fn parse(value: &str) -> Option<(&str, i64)> {
    let mut t = None;
    for item in items(value) {
        let (k, v) = item?;
        if k == "t" {
            if t.is_some() {
                // Two timestamps: which one was signed is ambiguous, refuse rather than guess.
                return None;
            }
            t = Some((v, v.parse::<i64>().ok()?));
        }
    }
    v1_signatures(value).next()?;
    t
}

impl Scheme for Stripe {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let header = self.header;
        let value = input.headers.get(header).ok_or_else(|| VerifyError::Missing(header.into()))?;
        let (t_raw, t) = parse(value).ok_or_else(|| VerifyError::Malformed(header.into()))?;
        check_fresh(input.now, i128::from(t) * 1000, self.tolerance)?;
        for secret in &self.secrets {
            let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes()) else {
                continue;
            };
            mac.update(t_raw.as_bytes());
            mac.update(b".");
            mac.update(input.body);
            // The body is hashed once per secret; each candidate only finalizes a clone, so a header
            // stuffed with signatures costs no more than its own length.
            if v1_signatures(value).any(|sig| mac.clone().verify_slice(&sig).is_ok()) {
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

    // Vector from typeclasses/stripe (secret "secret", t=123, body "hello").
    const SIG: &str = "t=123,v1=f89c0a0e96fa6304a7ebd5ecaf13bc1beb859577cd7cafb7bdbc43c3bc2f6afa";

    fn run(s: &Stripe, header: Option<&str>, body: &[u8], now_secs: u64) -> Result<(), VerifyError> {
        let headers: Headers = header.map(|h| (HEADER, h)).into_iter().collect();
        s.verify(&VerifyInput {
            method: "POST",
            url: None,
            headers: &headers,
            body,
            now: UnixMillis::from_secs(now_secs),
            remote_ip: None,
        })
    }

    fn stripe(secrets: &[&str], tolerance: Option<u64>) -> Stripe {
        Stripe::new(secrets.iter().map(|s| Secret::new(*s)).collect(), tolerance.map(Duration::from_secs))
            .expect("valid config")
    }

    #[test]
    fn known_vector_verifies_with_freshness_off_and_rotation() {
        assert_eq!(run(&stripe(&["secret"], None), Some(SIG), b"hello", 1_700_000_000), Ok(()));
        assert_eq!(run(&stripe(&["old", "secret"], None), Some(SIG), b"hello", 0), Ok(()));
        let several = "t=123,v1=00,v0=ab,v1=f89c0a0e96fa6304a7ebd5ecaf13bc1beb859577cd7cafb7bdbc43c3bc2f6afa";
        assert_eq!(run(&stripe(&["secret"], None), Some(several), b"hello", 0), Ok(()));
    }

    #[test]
    fn tampered_body_wrong_secret_and_expired_fail() {
        let s = stripe(&["secret"], None);
        assert_eq!(run(&s, Some(SIG), b"hello!", 123), Err(VerifyError::Mismatch));
        assert_eq!(run(&stripe(&["other"], None), Some(SIG), b"hello", 123), Err(VerifyError::Mismatch));
        let strict = stripe(&["secret"], Some(300));
        assert_eq!(run(&strict, Some(SIG), b"hello", 123 + 300), Ok(()));
        assert_eq!(
            run(&strict, Some(SIG), b"hello", 123 + 301),
            Err(VerifyError::Expired { tolerance_secs: 300 })
        );
    }

    #[test]
    fn missing_and_malformed_headers() {
        let s = stripe(&["secret"], Some(300));
        assert_eq!(run(&s, None, b"x", 0), Err(VerifyError::Missing(HEADER.into())));
        for bad in [
            "bad_header",
            "v1,t=1",
            "t=",
            "t=1",
            "t=123,v1=bad_signature",
            "t=1,t=2,v1=f89c0a0e96fa6304a7ebd5ecaf13bc1beb859577cd7cafb7bdbc43c3bc2f6afa",
            "t=99999999999999999999,v1=00",
            "",
            "=,=,",
        ] {
            assert_eq!(run(&s, Some(bad), b"x", 0), Err(VerifyError::Malformed(HEADER.into())), "{bad}");
        }
    }

    #[test]
    fn unusable_secrets_are_refused() {
        assert!(Stripe::new(vec![], None).is_err());
        assert!(Stripe::new(vec![Secret::new("")], None).is_err());
    }
}
