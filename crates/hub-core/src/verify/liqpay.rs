//! LiqPay server callbacks: form fields `data` (base64 JSON) and
//! `signature` = base64(sha1(private_key + data + private_key)) — a keyed hash, not an HMAC.
//! <https://www.liqpay.ua/en/doc/api/callback>
//!
//! Nothing signed is checked for freshness here: the time fields sit inside `data` and belong to
//! the payment, not to the delivery.

use super::{ConfigError, Scheme, VerifyError, VerifyInput};
use crate::secret::Secret;
use base64::Engine as _;
use sha1::{Digest, Sha1};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Verifies LiqPay callbacks with the merchant private key(s) (several during a rotation).
#[derive(Clone, Debug)]
pub struct LiqPay {
    secrets: Vec<Secret>,
}

impl LiqPay {
    /// `secrets`: merchant private keys. `_tolerance` is ignored (no delivery timestamp).
    pub fn new(secrets: Vec<Secret>, _tolerance: Option<Duration>) -> Result<Self, ConfigError> {
        super::check_keys("liqpay", "private key", &secrets)?;
        Ok(Self { secrets })
    }
}

impl Scheme for LiqPay {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let mut data = None;
        let mut signature = None;
        for (k, v) in form_urlencoded::parse(input.body) {
            let slot = match k.as_ref() {
                "data" => &mut data,
                "signature" => &mut signature,
                _ => continue,
            };
            // A repeated field is ambiguous (which one was signed?): refuse it.
            if slot.replace(v).is_some() {
                return Err(VerifyError::Malformed(k.into_owned()));
            }
        }
        let data = data.ok_or_else(|| VerifyError::Missing("data".into()))?;
        let signature = signature.ok_or_else(|| VerifyError::Missing("signature".into()))?;
        // A `+` sent unencoded arrives as a space; spaces are never base64, so mapping them back
        // cannot make a wrong signature pass.
        let provided = base64::engine::general_purpose::STANDARD
            .decode(signature.trim().replace(' ', "+"))
            .map_err(|_| VerifyError::Malformed("signature".into()))?;

        let ok = self.secrets.iter().any(|s| {
            let key = s.expose().as_bytes();
            let expected =
                Sha1::new().chain_update(key).chain_update(data.as_bytes()).chain_update(key).finalize();
            // Constant time (a length difference returns false at once, which reveals nothing).
            bool::from(expected.as_slice().ct_eq(&provided))
        });
        if ok { Ok(()) } else { Err(VerifyError::Mismatch) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use crate::time::UnixMillis;

    // liqpay/sdk-java LiqPayTest vectors.
    const FIELD_VALUE: &str = "data=eyJmaWVsZCI6InZhbHVlIn0%3D&signature=d3dP%2F5qWQFlZgFR53eAwqJ%2BxIOQ%3D";
    const CNB: &str = "data=eyJhbW91bnQiOiIxLjUiLCJkZXNjcmlwdGlvbiI6IkRlc2NyaXB0aW9uIiwibGFuZ3VhZ2UiOiJlbyIsInB1YmxpY19rZXkiOiJwdWJsaWNLZXkiLCJ2ZXJzaW9uIjoiMyIsImN1cnJlbmN5IjoiVVNEIn0%3D&signature=DEggXkxcCsuZFwt%2FR4%2BzDekMPZ4%3D";

    fn run(key: &str, body: &str) -> Result<(), VerifyError> {
        let headers = Headers::new();
        let input = VerifyInput {
            method: "POST",
            url: None,
            headers: &headers,
            body: body.as_bytes(),
            now: UnixMillis(0),
            remote_ip: None,
        };
        LiqPay::new(vec![Secret::new("old"), Secret::new(key)], None).expect("scheme").verify(&input)
    }

    #[test]
    fn sdk_vectors_verify() {
        assert_eq!(run("privateKey", FIELD_VALUE), Ok(()));
        assert_eq!(run("privateKey", CNB), Ok(()));
        // An unencoded `+` in the signature (arrives as a space).
        assert_eq!(run("privateKey", &CNB.replace("%2B", "+")), Ok(()));
    }

    #[test]
    fn wrong_key_missing_and_duplicate_fields_fail() {
        assert_eq!(run("publicKey", CNB), Err(VerifyError::Mismatch));
        assert_eq!(run("privateKey", "data=e30%3D"), Err(VerifyError::Missing("signature".into())));
        assert_eq!(
            run("privateKey", &format!("{CNB}&data=e30%3D")),
            Err(VerifyError::Malformed("data".into()))
        );
        assert_eq!(run("privateKey", "data=x&signature=%%"), Err(VerifyError::Malformed("signature".into())));
    }
}
