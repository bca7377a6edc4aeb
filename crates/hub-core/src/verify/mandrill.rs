//! Mandrill (Mailchimp Transactional) `X-Mandrill-Signature`: base64 HMAC-SHA1 of the webhook URL
//! exactly as configured plus each POST field sorted by name (name + value).
//! <https://mailchimp.com/developer/transactional/guides/track-respond-activity-webhooks/#authenticating-webhook-requests>
//!
//! The signature has no timestamp, so there is no freshness check.

use super::{ConfigError, Scheme, VerifyError, VerifyInput, decode_base64};
use crate::secret::Secret;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use std::borrow::Cow;
use std::time::Duration;

const HEADER: &str = "X-Mandrill-Signature";

/// Verifies Mandrill webhooks with the webhook key(s) (several during a rotation).
#[derive(Clone, Debug)]
pub struct Mandrill {
    secrets: Vec<Secret>,
}

impl Mandrill {
    /// `secrets`: webhook keys. Mandrill signs no timestamp: `_tolerance` is ignored.
    pub fn new(secrets: Vec<Secret>, _tolerance: Option<Duration>) -> Result<Self, ConfigError> {
        super::check_keys("mandrill", "webhook key", &secrets)?;
        Ok(Self { secrets })
    }
}

impl Scheme for Mandrill {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let header = input.headers.get(HEADER).ok_or_else(|| VerifyError::Missing(HEADER.into()))?;
        let provided = decode_base64(header.trim()).ok_or_else(|| VerifyError::Malformed(HEADER.into()))?;
        // The URL exactly as configured in Mandrill (userinfo included when it has one).
        let url = input.url.ok_or(VerifyError::NoUrl)?;

        let mut fields: Vec<(Cow<'_, str>, Cow<'_, str>)> = form_urlencoded::parse(input.body).collect();
        fields.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Mandrill's reference code reads PHP's `$_POST`, where a repeated name keeps only its last
        // value, while our body parser turns it into an array: refuse the ambiguity.
        if let Some(w) = fields.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(VerifyError::Malformed(w[0].0.clone().into_owned()));
        }
        let mut signed = Vec::with_capacity(url.len() + input.body.len());
        signed.extend_from_slice(url.as_bytes());
        for (k, v) in &fields {
            signed.extend_from_slice(k.as_bytes());
            signed.extend_from_slice(v.as_bytes());
        }

        let ok = self.secrets.iter().any(|s| {
            let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(s.expose().as_bytes()) else {
                return false;
            };
            mac.update(&signed);
            // Constant-time comparison.
            mac.verify_slice(&provided).is_ok()
        });
        if ok { Ok(()) } else { Err(VerifyError::Mismatch) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use crate::time::UnixMillis;

    const URL: &str = "http://testserver/anymail/mandrill/";
    const BODY: &str = "mandrill_events=%5B%7B%22event%22%3A+%22send%22%7D%5D";

    fn run(sig: Option<&str>, url: Option<&str>, body: &str) -> Result<(), VerifyError> {
        let headers: Headers = sig.map(|s| (HEADER, s.to_string())).into_iter().collect();
        let input = VerifyInput {
            method: "POST",
            url,
            headers: &headers,
            body: body.as_bytes(),
            now: UnixMillis(0),
            remote_ip: None,
        };
        Mandrill::new(vec![Secret::new("rotated-out"), Secret::new("TEST_WEBHOOK_KEY")], None)
            .expect("scheme")
            .verify(&input)
    }

    #[test]
    fn anymail_vector_verifies() {
        assert_eq!(run(Some("EPCqVD9/Aj22hOHgCqaVuiXvGWY="), Some(URL), BODY), Ok(()));
    }

    #[test]
    fn wrong_url_body_or_missing_header_fail() {
        let sig = Some("EPCqVD9/Aj22hOHgCqaVuiXvGWY=");
        assert_eq!(run(sig, Some("http://testserver/other/"), BODY), Err(VerifyError::Mismatch));
        assert_eq!(run(sig, Some(URL), "mandrill_events=%5B%5D"), Err(VerifyError::Mismatch));
        assert_eq!(run(sig, None, BODY), Err(VerifyError::NoUrl));
        assert_eq!(run(None, Some(URL), BODY), Err(VerifyError::Missing(HEADER.into())));
        assert_eq!(run(sig, Some(URL), "a=1&a=2"), Err(VerifyError::Malformed("a".into())));
    }
}
