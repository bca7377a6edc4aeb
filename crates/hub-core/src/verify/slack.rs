//! Slack request signing (`X-Slack-Signature`, `v0`), see <https://api.slack.com/authentication/verifying-requests-from-slack>
//!
//! `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:{X-Slack-Request-Timestamp}:{raw body}")>`.

use super::{ConfigError, Scheme, VerifyError, VerifyInput, check_fresh};
use crate::secret::Secret;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::Duration;

const SIGNATURE: &str = "X-Slack-Signature";
const TIMESTAMP: &str = "X-Slack-Request-Timestamp";

/// Slack's `v0` scheme with the app's signing secrets (several during a rotation).
#[derive(Debug)]
pub struct Slack {
    secrets: Vec<Secret>,
    tolerance: Option<Duration>,
}

impl Slack {
    pub fn new(secrets: Vec<Secret>, tolerance: Option<Duration>) -> Result<Self, ConfigError> {
        // An empty HMAC key would let anyone sign.
        super::require_keys("slack", "signing secret", &secrets)?;
        Ok(Self { secrets, tolerance })
    }
}

impl Scheme for Slack {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let h = input.headers;
        let value = h.get(SIGNATURE).ok_or_else(|| VerifyError::Missing(SIGNATURE.into()))?;
        let ts_raw = h.get(TIMESTAMP).ok_or_else(|| VerifyError::Missing(TIMESTAMP.into()))?.trim();
        let malformed = || VerifyError::Malformed(SIGNATURE.into());
        // `v0` is the only version Slack has published; another one is not ours to guess at.
        let hex_sig = value.trim().strip_prefix("v0=").ok_or_else(malformed)?;
        let mut sig = [0u8; 32];
        hex::decode_to_slice(hex_sig, &mut sig).map_err(|_| malformed())?;
        let ts = ts_raw.parse::<i64>().map_err(|_| VerifyError::Malformed(TIMESTAMP.into()))?;
        check_fresh(input.now, i128::from(ts) * 1000, self.tolerance)?;
        let matches = |secret: &Secret| {
            <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes()).is_ok_and(|mut mac| {
                for part in [b"v0:".as_slice(), ts_raw.as_bytes(), b":", input.body] {
                    mac.update(part);
                }
                mac.verify_slice(&sig).is_ok()
            })
        };
        if self.secrets.iter().any(matches) { Ok(()) } else { Err(VerifyError::Mismatch) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use crate::time::UnixMillis;

    // Slack's documented example (python-slack-sdk tests), trimmed to its signing inputs.
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V\
        &channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=\
        &response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN\
        &trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

    fn slack(secrets: &[&str]) -> Slack {
        Slack::new(secrets.iter().map(|s| Secret::new(*s)).collect(), Some(Duration::from_secs(300)))
            .expect("valid config")
    }

    fn run(s: &Slack, headers: &[(&str, &str)], body: &str, now: u64) -> Result<(), VerifyError> {
        let headers: Headers = headers.iter().copied().collect();
        s.verify(&VerifyInput {
            method: "POST",
            url: None,
            headers: &headers,
            body: body.as_bytes(),
            now: UnixMillis::from_secs(now),
            remote_ip: None,
        })
    }

    const NOW: u64 = 1_531_420_618;

    #[test]
    fn documented_example_verifies() {
        let h = [(SIGNATURE, SIG), (TIMESTAMP, TS)];
        assert_eq!(run(&slack(&[SECRET]), &h, BODY, NOW), Ok(()));
        assert_eq!(run(&slack(&["rotated-out", SECRET]), &h, BODY, NOW + 300), Ok(()));
    }

    #[test]
    fn modified_body_expired_missing_and_malformed_fail() {
        let s = slack(&[SECRET]);
        let h = [(SIGNATURE, SIG), (TIMESTAMP, TS)];
        assert_eq!(run(&s, &h, &format!("{BODY}------"), NOW), Err(VerifyError::Mismatch));
        assert_eq!(run(&s, &h, BODY, NOW + 301), Err(VerifyError::Expired { tolerance_secs: 300 }));
        assert_eq!(run(&s, &[(SIGNATURE, SIG)], BODY, NOW), Err(VerifyError::Missing(TIMESTAMP.into())));
        assert_eq!(run(&s, &[(TIMESTAMP, TS)], BODY, NOW), Err(VerifyError::Missing(SIGNATURE.into())));
        for bad in [
            "a2114d57",
            "v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            "v0=zz",
            "v0=é",
        ] {
            let got = run(&s, &[(SIGNATURE, bad), (TIMESTAMP, TS)], BODY, NOW);
            assert_eq!(got, Err(VerifyError::Malformed(SIGNATURE.into())), "{bad}");
        }
        let got = run(&s, &[(SIGNATURE, SIG), (TIMESTAMP, "soon")], BODY, NOW);
        assert_eq!(got, Err(VerifyError::Malformed(TIMESTAMP.into())));
    }

    #[test]
    fn unusable_secrets_are_refused() {
        assert!(Slack::new(vec![], None).is_err());
        assert!(Slack::new(vec![Secret::new("")], None).is_err());
    }
}
