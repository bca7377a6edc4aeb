//! Calendly webhook signatures (`Calendly-Webhook-Signature`), see <https://developer.calendly.com/api-docs/ZG9jOjM2MzE2MDM4-webhook-signatures>
//!
//! `Calendly-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, signed content
//! `{t}.{raw body}`, key = the webhook signing key given when the subscription was created.
//! The layout is Stripe's (Calendly's docs even reuse Stripe's sample header), so it is
//! Stripe's verifier under Calendly's header.

use super::ConfigError;
use super::stripe::Stripe;
use crate::secret::Secret;
use std::time::Duration;

const HEADER: &str = "Calendly-Webhook-Signature";

/// The Calendly verifier with the subscription signing keys (several during a rotation).
pub type Calendly = Stripe;

pub fn new(secrets: Vec<Secret>, tolerance: Option<Duration>) -> Result<Calendly, ConfigError> {
    Stripe::with_header(HEADER, secrets, tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use crate::time::UnixMillis;
    use crate::verify::{Scheme, VerifyError, VerifyInput};
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    // No published vector exists (the docs header reuses Stripe's sample with no key), so the
    // signature is computed here by the documented recipe.
    const KEY: &str = "calendly-signing-key";
    const T: u64 = 1_492_774_577;
    const BODY: &[u8] = br#"{"event":"invitee.created","payload":{}}"#;

    fn header(key: &str, t: u64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("any key length");
        for part in [t.to_string().as_bytes(), b".", body] {
            mac.update(part);
        }
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn calendly(keys: &[&str]) -> Calendly {
        new(keys.iter().map(|s| Secret::new(*s)).collect(), Some(Duration::from_secs(180)))
            .expect("valid config")
    }

    fn run(c: &Calendly, value: Option<&str>, body: &[u8], now: u64) -> Result<(), VerifyError> {
        let headers: Headers = value.map(|v| (HEADER, v)).into_iter().collect();
        c.verify(&VerifyInput {
            method: "POST",
            url: None,
            headers: &headers,
            body,
            now: UnixMillis::from_secs(now),
            remote_ip: None,
        })
    }

    #[test]
    fn signed_request_verifies_with_rotation() {
        let h = header(KEY, T, BODY);
        assert_eq!(run(&calendly(&[KEY]), Some(&h), BODY, T), Ok(()));
        assert_eq!(run(&calendly(&["old", KEY]), Some(&h), BODY, T + 180), Ok(()));
    }

    #[test]
    fn wrong_expired_missing_and_malformed_fail() {
        let c = calendly(&[KEY]);
        let h = header(KEY, T, BODY);
        assert_eq!(run(&c, Some(&h), b"{}", T), Err(VerifyError::Mismatch));
        assert_eq!(run(&c, Some(&header("other", T, BODY)), BODY, T), Err(VerifyError::Mismatch));
        assert_eq!(run(&c, Some(&h), BODY, T + 181), Err(VerifyError::Expired { tolerance_secs: 180 }));
        assert_eq!(run(&c, None, BODY, T), Err(VerifyError::Missing(HEADER.into())));
        // The docs' sample header parses but carries a v0 too, which is ignored.
        let sample = "t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39";
        assert_eq!(run(&c, Some(sample), BODY, T), Err(VerifyError::Mismatch));
        for bad in [
            "t=1492774577",
            "v1=5257a869",
            "t=x,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd",
            "garbage",
        ] {
            assert_eq!(run(&c, Some(bad), BODY, T), Err(VerifyError::Malformed(HEADER.into())), "{bad}");
        }
    }

    #[test]
    fn unusable_secrets_are_refused() {
        assert!(new(vec![], None).is_err());
        assert!(new(vec![Secret::new("")], None).is_err());
    }
}
