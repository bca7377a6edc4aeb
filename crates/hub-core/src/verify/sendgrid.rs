//! SendGrid (Twilio SendGrid) Event Webhook: ECDSA P-256 / SHA-256 over `timestamp + raw body`,
//! DER signature in base64, verified with the public verification key.
//! <https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features>

use super::{ConfigError, Scheme, VerifyError, VerifyInput, parse_secs};
use crate::secret::Secret;
use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256};
use std::time::Duration;

const SIG_HEADER: &str = "X-Twilio-Email-Event-Webhook-Signature";
const TS_HEADER: &str = "X-Twilio-Email-Event-Webhook-Timestamp";

/// Verifies SendGrid event webhooks with the verification key(s) (several during a rotation).
#[derive(Clone, Debug)]
pub struct SendGrid {
    keys: Vec<VerifyingKey>,
    tolerance: Option<Duration>,
}

impl SendGrid {
    /// `secrets`: public verification keys as SendGrid shows them (base64 DER
    /// SubjectPublicKeyInfo; a PEM `PUBLIC KEY` block is accepted too), parsed once here.
    /// `tolerance`: allowed clock distance of the timestamp header (`None`: not checked).
    pub fn new(secrets: Vec<Secret>, tolerance: Option<Duration>) -> Result<Self, ConfigError> {
        if secrets.is_empty() {
            return Err(ConfigError::NoKey {
                scheme: "sendgrid",
                text: "no verification key configured".into(),
            });
        }
        let keys = super::parse_keys("sendgrid", "verification key", &secrets, parse_key)?;
        Ok(Self { keys, tolerance })
    }
}

fn parse_key(text: &str) -> Result<VerifyingKey, &'static str> {
    // PEM armour, if any, is dropped: the payload is the same base64 DER.
    let b64: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| "not base64 (expected the base64 DER public key)")?;
    VerifyingKey::from_public_key_der(&der).map_err(|_| "not a P-256 SubjectPublicKeyInfo public key")
}

impl Scheme for SendGrid {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let sig_b64 = input.headers.get(SIG_HEADER).ok_or_else(|| VerifyError::Missing(SIG_HEADER.into()))?;
        let ts = input.headers.get(TS_HEADER).ok_or_else(|| VerifyError::Missing(TS_HEADER.into()))?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(sig_b64.trim())
            .map_err(|_| VerifyError::Malformed(SIG_HEADER.into()))?;
        let sig = Signature::from_der(&der).map_err(|_| VerifyError::Malformed(SIG_HEADER.into()))?;
        // Freshness before the (comparatively costly) ECDSA check: stale replays are cheap to drop.
        if let Some(tol) = self.tolerance {
            let secs = parse_secs(ts).ok_or_else(|| VerifyError::Malformed(TS_HEADER.into()))?;
            super::check_fresh(input.now, i128::from(secs) * 1000, Some(tol))?;
        }
        // The timestamp is signed exactly as sent (untrimmed), followed by the raw body.
        let digest = Sha256::new().chain_update(ts.as_bytes()).chain_update(input.body).finalize();
        if self.keys.iter().any(|k| k.verify_prehash(&digest, &sig).is_ok()) {
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

    // sendgrid-nodejs packages/eventwebhook test vectors.
    const KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";
    const OTHER_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA==";
    const SIG: &str =
        "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM=";
    const TS: &str = "1600112502";
    const BODY: &str = "[{\"email\":\"hello@world.com\",\"event\":\"dropped\",\"reason\":\"Bounced Address\",\"sg_event_id\":\"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA\",\"sg_message_id\":\"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0\",\"smtp-id\":\"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>\",\"timestamp\":1600112492}]\r\n";

    fn run(
        keys: &[&str],
        sig: &str,
        ts: &str,
        body: &str,
        tol: Option<u64>,
        now: u64,
    ) -> Result<(), VerifyError> {
        let headers: Headers = [(SIG_HEADER, sig), (TS_HEADER, ts)].into_iter().collect();
        let input = VerifyInput {
            method: "POST",
            url: None,
            headers: &headers,
            body: body.as_bytes(),
            now: UnixMillis::from_secs(now),
            remote_ip: None,
        };
        let secrets = keys.iter().map(|k| Secret::new(*k)).collect();
        SendGrid::new(secrets, tol.map(Duration::from_secs)).expect("keys").verify(&input)
    }

    #[test]
    fn documented_vector_verifies_with_rotation() {
        assert_eq!(run(&[OTHER_KEY, KEY], SIG, TS, BODY, None, 0), Ok(()));
        assert_eq!(run(&[KEY], SIG, TS, BODY, Some(300), 1600112502 + 60), Ok(()));
    }

    #[test]
    fn wrong_key_body_timestamp_fail() {
        assert_eq!(run(&[OTHER_KEY], SIG, TS, BODY, None, 0), Err(VerifyError::Mismatch));
        assert_eq!(run(&[KEY], SIG, TS, "payload", None, 0), Err(VerifyError::Mismatch));
        assert_eq!(run(&[KEY], SIG, "timestamp", BODY, None, 0), Err(VerifyError::Mismatch));
        assert_eq!(
            run(&[KEY], SIG, TS, BODY, Some(300), 1600112502 + 301),
            Err(VerifyError::Expired { tolerance_secs: 300 })
        );
        assert_eq!(run(&[KEY], "MEUC", TS, BODY, None, 0), Err(VerifyError::Malformed(SIG_HEADER.into())));
    }

    #[test]
    fn bad_key_material_is_refused_at_construction() {
        assert!(SendGrid::new(vec![Secret::new("not base64!")], None).is_err());
        assert!(SendGrid::new(vec![Secret::new("AAAA")], None).is_err());
        assert!(SendGrid::new(Vec::new(), None).is_err());
        let pem =
            format!("-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n", &KEY[..64], &KEY[64..]);
        assert!(SendGrid::new(vec![Secret::new(pem)], None).is_ok());
    }
}
