//! Standard Webhooks signatures, also sent by Svix, see <https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>
//!
//! Headers `webhook-id`, `webhook-timestamp`, `webhook-signature` (Svix: `svix-…`), signed content
//! `{id}.{timestamp}.{raw body}`. The signature header is a space-separated list of `v1,<base64
//! HMAC-SHA256>` (key = base64 of the secret after `whsec_`) and `v1a,<base64 Ed25519>` (key =
//! the `whpk_` public key) entries; any one that matches a configured key is enough.

use super::{ConfigError, Scheme, VerifyError, VerifyInput, check_fresh};
use crate::secret::Secret;
use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::Duration;

/// Header names: the unbranded spec set first, then Svix's branded one.
const FAMILIES: [[&str; 3]; 2] = [
    ["webhook-id", "webhook-timestamp", "webhook-signature"],
    ["svix-id", "svix-timestamp", "svix-signature"],
];

/// Ed25519 signatures hash the whole body once each, so only this many `v1a` entries are tried:
/// a sender rotating keys sends two, a header stuffed with hundreds must not cost hundreds of passes.
const MAX_ASYMMETRIC: usize = 8;

/// Secrets are often pasted without their `=` padding, and the spec's own libraries (Python,
/// JavaScript) ignore stray low bits in the last character: accept both.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Signatures are produced by a program, so they must be canonical; padding may be dropped.
const SIGNATURE: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

enum Key {
    /// Keyed once at load; each request continues from a clone.
    Hmac(Hmac<Sha256>),
    Ed25519(VerifyingKey),
}

/// Standard Webhooks / Svix verification with its keys (several during a rotation).
pub struct StandardWebhooks {
    keys: Vec<Key>,
    tolerance: Option<Duration>,
}

// Hand-written so that key material never reaches a log.
impl std::fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let symmetric = self.keys.iter().filter(|k| matches!(k, Key::Hmac(_))).count();
        f.debug_struct("StandardWebhooks")
            .field("symmetric_keys", &symmetric)
            .field("public_keys", &(self.keys.len() - symmetric))
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl StandardWebhooks {
    /// Each secret is `whsec_<base64>` (or the bare base64) for `v1`, or `whpk_<base64 of the
    /// 32-byte public key>` for `v1a`; both kinds may be mixed.
    pub fn new(secrets: Vec<Secret>, tolerance: Option<Duration>) -> Result<Self, ConfigError> {
        if secrets.is_empty() {
            return Err(ConfigError::NoKey {
                scheme: "standard-webhooks",
                text: "at least one secret is required".into(),
            });
        }
        let keys = super::parse_keys("standard-webhooks", "secret", &secrets, parse_key)?;
        Ok(Self { keys, tolerance })
    }
}

// Errors never quote the secret: they end up in logs.
fn parse_key(secret: &str) -> Result<Key, &'static str> {
    let secret = secret.trim();
    if let Some(b64) = secret.strip_prefix("whpk_") {
        let bytes = LENIENT.decode(b64).map_err(|_| "the whpk_ public key is not valid base64")?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|_| "the whpk_ public key must decode to 32 bytes (Ed25519)")?;
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|_| "the whpk_ public key is not an Ed25519 point")?;
        // A small-order key accepts forged signatures for many messages.
        if key.is_weak() {
            return Err("the whpk_ public key is a weak (small-order) Ed25519 key");
        }
        return Ok(Key::Ed25519(key));
    }
    if secret.starts_with("whsk_") {
        return Err("this is the sender's private signing key (whsk_); configure its public key (whpk_)");
    }
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    let bytes = LENIENT.decode(b64).map_err(|_| "the secret is not base64 (expected whsec_<base64>)")?;
    if bytes.is_empty() {
        return Err("the secret is empty");
    }
    <Hmac<Sha256> as KeyInit>::new_from_slice(&bytes).map(Key::Hmac).map_err(|_| "unusable HMAC key")
}

enum Sig {
    V1([u8; 32]),
    V1a([u8; 64]),
}

/// Decodes exactly `N` bytes of base64 into a fixed buffer (no allocation per entry).
fn decode_exact<const N: usize>(s: &str) -> Option<[u8; N]> {
    // Longer text cannot hold N bytes; refusing it first keeps the buffer below big enough.
    if s.len() > N.div_ceil(3) * 4 {
        return None;
    }
    let mut buf = [0u8; 96];
    let n = SIGNATURE.decode_slice(s, &mut buf).ok()?;
    buf.get(..n)?.try_into().ok()
}

/// The entries that can be read; unknown versions and undecodable values are skipped (the spec
/// asks verifiers to ignore what they do not understand).
fn signatures(value: &str) -> impl Iterator<Item = Sig> {
    value.split_ascii_whitespace().filter_map(|entry| match entry.split_once(',')? {
        ("v1", sig) => decode_exact(sig).map(Sig::V1),
        ("v1a", sig) => decode_exact(sig).map(Sig::V1a),
        _ => None,
    })
}

impl Scheme for StandardWebhooks {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let h = input.headers;
        // One family per request: mixing `svix-id` with `webhook-signature` is not something a
        // sender does, so the first family with any of its headers present is the one used.
        let names = FAMILIES.iter().find(|f| f.iter().any(|n| h.get(n).is_some())).unwrap_or(&FAMILIES[0]);
        let [id_name, ts_name, sig_name] = *names;
        let get = |name: &str| h.get(name).map(str::trim).ok_or_else(|| VerifyError::Missing(name.into()));
        let (id, ts_raw, value) = (get(id_name)?, get(ts_name)?, get(sig_name)?);
        let ts = ts_raw.parse::<i64>().map_err(|_| VerifyError::Malformed(ts_name.into()))?;
        if signatures(value).next().is_none() {
            return Err(VerifyError::Malformed(sig_name.into()));
        }
        check_fresh(input.now, i128::from(ts) * 1000, self.tolerance)?;

        // Built only when an Ed25519 check needs the content in one piece.
        let mut message: Option<Vec<u8>> = None;
        for key in &self.keys {
            match key {
                Key::Hmac(keyed) => {
                    let mut mac = keyed.clone();
                    for part in [id.as_bytes(), b".", ts_raw.as_bytes(), b".", input.body] {
                        mac.update(part);
                    }
                    // Each candidate only finalizes a clone: the body is hashed once per key.
                    let mut v1 = signatures(value).filter_map(|s| match s {
                        Sig::V1(sig) => Some(sig),
                        Sig::V1a(_) => None,
                    });
                    if v1.any(|sig| mac.clone().verify_slice(&sig).is_ok()) {
                        return Ok(());
                    }
                }
                Key::Ed25519(public) => {
                    let mut v1a = signatures(value)
                        .filter_map(|s| match s {
                            Sig::V1a(sig) => Some(Signature::from_bytes(&sig)),
                            Sig::V1(_) => None,
                        })
                        .take(MAX_ASYMMETRIC)
                        .peekable();
                    if v1a.peek().is_none() {
                        continue;
                    }
                    let msg = message.get_or_insert_with(|| {
                        [id.as_bytes(), b".", ts_raw.as_bytes(), b".", input.body].concat()
                    });
                    // `verify_strict` also refuses malleable (non-canonical) signatures.
                    if v1a.any(|sig| public.verify_strict(msg, &sig).is_ok()) {
                        return Ok(());
                    }
                }
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
    use ed25519_dalek::{Signer as _, SigningKey};

    // The fixed sign() vector of the spec's libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: u64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn sw(secrets: &[&str], tolerance: Option<u64>) -> StandardWebhooks {
        StandardWebhooks::new(
            secrets.iter().map(|s| Secret::new(*s)).collect(),
            tolerance.map(Duration::from_secs),
        )
        .expect("valid config")
    }

    fn run(s: &StandardWebhooks, headers: &[(&str, &str)], body: &[u8], now: u64) -> Result<(), VerifyError> {
        let headers: Headers = headers.iter().copied().collect();
        s.verify(&VerifyInput {
            method: "POST",
            url: None,
            headers: &headers,
            body,
            now: UnixMillis::from_secs(now),
            remote_ip: None,
        })
    }

    fn std_headers<'a>(prefix: &str, ts: &'a str, sig: &'a str) -> Vec<(String, &'a str)> {
        vec![
            (format!("{prefix}-id"), ID),
            (format!("{prefix}-timestamp"), ts),
            (format!("{prefix}-signature"), sig),
        ]
    }

    fn run_std(s: &StandardWebhooks, prefix: &str, ts: &str, sig: &str, now: u64) -> Result<(), VerifyError> {
        let h = std_headers(prefix, ts, sig);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        run(s, &h, BODY, now)
    }

    #[test]
    fn known_vector_verifies_under_both_header_families() {
        let s = sw(&[SECRET], Some(300));
        assert_eq!(run_std(&s, "webhook", "1614265330", SIG, TS), Ok(()));
        assert_eq!(run_std(&s, "svix", "1614265330", SIG, TS), Ok(()));
        // Without the prefix, with rotation, and among other signatures.
        assert_eq!(
            run_std(&sw(&["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], None), "webhook", "1614265330", SIG, 0),
            Ok(())
        );
        assert_eq!(run_std(&sw(&["whsec_AAAA", SECRET], None), "webhook", "1614265330", SIG, 0), Ok(()));
        let several = format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,xyz {SIG}");
        assert_eq!(run_std(&s, "webhook", "1614265330", &several, TS), Ok(()));
    }

    #[test]
    fn unpadded_secret_with_trailing_bits_is_accepted() {
        // sw-secret-unpadded-1: 31 base64 characters, the last one carrying non-zero spare bits.
        let s = sw(&["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS"], Some(300));
        let sig = "v1,LVOXivKoo4FWasi/IaHvzhE/u+7/cu2AME+zS/nXqzk=";
        assert_eq!(run_std(&s, "webhook", "1614265330", sig, TS), Ok(()));
    }

    #[test]
    fn wrong_expired_missing_and_malformed() {
        let s = sw(&[SECRET], Some(300));
        let wrong = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";
        assert_eq!(run_std(&s, "webhook", "1614265330", wrong, TS), Err(VerifyError::Mismatch));
        assert_eq!(run_std(&s, "webhook", "1614265330", SIG, TS + 299), Ok(()));
        assert_eq!(
            run_std(&s, "webhook", "1614265330", SIG, TS + 301),
            Err(VerifyError::Expired { tolerance_secs: 300 })
        );
        assert_eq!(run_std(&s, "svix", "-1", SIG, TS), Err(VerifyError::Expired { tolerance_secs: 300 }));
        assert_eq!(
            run_std(&s, "webhook", "hello", SIG, TS),
            Err(VerifyError::Malformed("webhook-timestamp".into()))
        );
        for bad in ["v1,", "v1,dawfeoifkpqwoekfpqoekf", "v1,g0hM9", "", "v2,abc", ",,, ,"] {
            let got = run_std(&s, "webhook", "1614265330", bad, TS);
            assert_eq!(got, Err(VerifyError::Malformed("webhook-signature".into())), "{bad}");
        }
        let h = [("webhook-timestamp", "1614265330"), ("webhook-signature", SIG)];
        assert_eq!(run(&s, &h, BODY, TS), Err(VerifyError::Missing("webhook-id".into())));
        assert_eq!(run(&s, &[], BODY, TS), Err(VerifyError::Missing("webhook-id".into())));
        let h = [("svix-id", ID), ("svix-timestamp", "1614265330")];
        assert_eq!(run(&s, &h, BODY, TS), Err(VerifyError::Missing("svix-signature".into())));
    }

    #[test]
    fn ed25519_v1a_signatures_verify_against_the_public_key() {
        let signing = SigningKey::from_bytes(&[7u8; 32]);
        let public = format!(
            "whpk_{}",
            base64::engine::general_purpose::STANDARD.encode(signing.verifying_key().as_bytes())
        );
        let content = [ID.as_bytes(), b".1614265330.", BODY].concat();
        let sig = base64::engine::general_purpose::STANDARD.encode(signing.sign(&content).to_bytes());
        let s = sw(&[SECRET, &public], Some(300));
        assert_eq!(run_std(&s, "webhook", "1614265330", &format!("v1,AAAA v1a,{sig}"), TS), Ok(()));
        // The HMAC key alone does not accept an Ed25519 signature, and a tampered body fails.
        let hmac_only = sw(&[SECRET], Some(300));
        assert_eq!(
            run_std(&hmac_only, "webhook", "1614265330", &format!("v1a,{sig}"), TS),
            Err(VerifyError::Mismatch)
        );
        let v1a = format!("v1a,{sig}");
        let h = std_headers("webhook", "1614265330", &v1a);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(run(&s, &h, b"{}", TS), Err(VerifyError::Mismatch));
    }

    #[test]
    fn unusable_key_material_is_refused() {
        for bad in ["whpk_not base64!", "whpk_AAAA", "whsk_AAAA", "whsec_***", "whsec_", ""] {
            assert!(StandardWebhooks::new(vec![Secret::new(bad)], None).is_err(), "{bad}");
        }
        // The identity point is a valid encoding but a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = format!("whpk_{}", base64::engine::general_purpose::STANDARD.encode(identity));
        assert!(StandardWebhooks::new(vec![Secret::new(weak)], None).is_err());
        assert!(StandardWebhooks::new(vec![], None).is_err());
    }
}
