//! Mailgun webhooks: lowercase-hex HMAC-SHA256 of `timestamp + token` with the HTTP webhook
//! signing key, the three values carried in the body.
//! <https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks>
//!
//! JSON bodies (current webhooks): `{"signature": {"timestamp", "token", "signature"}, "event-data": …}`.
//! Form bodies (legacy webhooks, routes): fields `timestamp`, `token`, `signature`.
//! The MAC does not cover the event itself; Mailgun relies on the timestamp (checked here) and on
//! receivers refusing a token seen before (not done here: that needs state).

use super::{ConfigError, Scheme, VerifyError, VerifyInput, parse_secs};
use crate::secret::Secret;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::time::Duration;

/// Verifies Mailgun webhooks with the signing key(s) (several during a rotation).
#[derive(Clone, Debug)]
pub struct Mailgun {
    secrets: Vec<Secret>,
    tolerance: Option<Duration>,
}

impl Mailgun {
    /// `secrets`: HTTP webhook signing keys; `tolerance`: allowed clock distance of the signed
    /// timestamp (`None`: not checked).
    pub fn new(secrets: Vec<Secret>, tolerance: Option<Duration>) -> Result<Self, ConfigError> {
        super::check_keys("mailgun", "webhook signing key", &secrets)?;
        Ok(Self { secrets, tolerance })
    }
}

/// The signed triple as found in the body.
#[derive(Debug, Default, PartialEq, Eq)]
struct Triple {
    timestamp: String,
    token: String,
    signature: String,
}

impl Scheme for Mailgun {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let t = extract(input.body)?;
        let provided =
            hex::decode(t.signature.trim()).map_err(|_| VerifyError::Malformed("signature".into()))?;
        if provided.is_empty() {
            return Err(VerifyError::Missing("signature".into()));
        }
        if let Some(tol) = self.tolerance {
            let ts = parse_secs(&t.timestamp).ok_or_else(|| VerifyError::Malformed("timestamp".into()))?;
            super::check_fresh(input.now, i128::from(ts) * 1000, Some(tol))?;
        }
        let ok = self.secrets.iter().any(|s| {
            let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(s.expose().as_bytes()) else {
                return false;
            };
            mac.update(t.timestamp.as_bytes());
            mac.update(t.token.as_bytes());
            // Constant-time comparison.
            mac.verify_slice(&provided).is_ok()
        });
        if ok { Ok(()) } else { Err(VerifyError::Mismatch) }
    }
}

/// Finds the triple in a JSON body (first non-space byte `{`) or a form body.
fn extract(body: &[u8]) -> Result<Triple, VerifyError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') { extract_json(body) } else { extract_form(body) }
}

fn extract_json(body: &[u8]) -> Result<Triple, VerifyError> {
    // Only `signature` is materialised; serde skips the rest (event-data) without building it,
    // and serde_json's recursion limit bounds nesting.
    #[derive(Deserialize)]
    struct Envelope {
        signature: Option<serde_json::Map<String, serde_json::Value>>,
    }
    let env: Envelope =
        serde_json::from_slice(body).map_err(|_| VerifyError::Malformed("signature".into()))?;
    let sig = env.signature.ok_or_else(|| VerifyError::Missing("signature".into()))?;
    let field = |name: &str| -> Result<String, VerifyError> {
        match sig.get(name) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            // Some senders and replays write the timestamp as a number.
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            Some(_) => Err(VerifyError::Malformed(name.into())),
            None => Err(VerifyError::Missing(name.into())),
        }
    };
    Ok(Triple { timestamp: field("timestamp")?, token: field("token")?, signature: field("signature")? })
}

fn extract_form(body: &[u8]) -> Result<Triple, VerifyError> {
    let mut slots: [Option<String>; 3] = [None, None, None];
    const NAMES: [&str; 3] = ["timestamp", "token", "signature"];
    for (k, v) in form_urlencoded::parse(body) {
        if let Some(i) = NAMES.iter().position(|n| *n == k) {
            // A repeated field is ambiguous (which one did Mailgun sign?): refuse it.
            if slots[i].replace(v.into_owned()).is_some() {
                return Err(VerifyError::Malformed(NAMES[i].into()));
            }
        }
    }
    let [timestamp, token, signature] = slots;
    Ok(Triple {
        timestamp: timestamp.ok_or_else(|| VerifyError::Missing("timestamp".into()))?,
        token: token.ok_or_else(|| VerifyError::Missing("token".into()))?,
        signature: signature.ok_or_else(|| VerifyError::Missing("signature".into()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use crate::time::UnixMillis;

    // mailgun-php test vector.
    const KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
    const TS: &str = "1403645220";
    const TOKEN: &str = "5egbgr1vjgqxtrnp65xfznchgdccwh5d6i09vijqi3whgowmn6";
    const SIG: &str = "9cfc5c41582e51246e73c88d34db3af0a3a2692a76fbab81492842f000256d33";

    fn run(body: &str, tolerance: Option<Duration>, now_secs: u64) -> Result<(), VerifyError> {
        let headers = Headers::new();
        let input = VerifyInput {
            method: "POST",
            url: None,
            headers: &headers,
            body: body.as_bytes(),
            now: UnixMillis::from_secs(now_secs),
            remote_ip: None,
        };
        Mailgun::new(vec![Secret::new("old"), Secret::new(KEY)], tolerance).expect("scheme").verify(&input)
    }

    fn json(ts: &str, sig: &str) -> String {
        format!(
            r#"{{"signature": {{"timestamp": "{ts}", "token": "{TOKEN}", "signature": "{sig}"}}, "event-data": {{"event": "delivered"}}}}"#
        )
    }

    #[test]
    fn json_and_form_bodies_verify() {
        assert_eq!(run(&json(TS, SIG), None, 0), Ok(()));
        let form = format!("timestamp={TS}&token={TOKEN}&signature={SIG}&event=delivered");
        assert_eq!(run(&form, None, 0), Ok(()));
    }

    #[test]
    fn tolerance_applies_to_the_signed_timestamp() {
        let ts: u64 = TS.parse().expect("digits");
        let five_min = Some(Duration::from_secs(300));
        assert_eq!(run(&json(TS, SIG), five_min, ts + 300), Ok(()));
        assert_eq!(
            run(&json(TS, SIG), five_min, ts + 301),
            Err(VerifyError::Expired { tolerance_secs: 300 })
        );
        assert!(matches!(run(&json("soon", SIG), five_min, ts), Err(VerifyError::Malformed(_))));
    }

    #[test]
    fn empty_tampered_and_ambiguous_bodies_fail() {
        // mailgun-php "empty" vector.
        let empty = r#"{"signature": {"timestamp": "0", "token": "", "signature": ""}}"#;
        assert!(run(empty, None, 0).is_err());
        assert_eq!(run(&json("1403645221", SIG), None, 0), Err(VerifyError::Mismatch));
        assert_eq!(run(r#"{"event-data": {}}"#, None, 0), Err(VerifyError::Missing("signature".into())));
        let twice = format!("timestamp={TS}&timestamp={TS}&token={TOKEN}&signature={SIG}");
        assert_eq!(run(&twice, None, 0), Err(VerifyError::Malformed("timestamp".into())));
        assert!(run("{\"signature\": [[[[", None, 0).is_err());
    }
}
