//! Provider presets: `provider: stripe` gives a source the provider's verification, dedup key,
//! event-type location and body format, each of which the mapping file may still override.

use super::hubspot::HubSpot;
use super::token::{SharedToken, TokenLocation};
use super::{ConfigError, HmacAlgorithm, Scheme, SigEncoding, Verifier};
use crate::body::BodyFormat;
use crate::secret::Secret;
use std::sync::Arc;
use std::time::Duration;

/// Where a preset finds a value: a JSONPath into the envelope or a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locator {
    Path(&'static str),
    Header(&'static str),
}

type Build = fn(Vec<Secret>, Option<Duration>) -> Result<Verifier, ConfigError>;

/// One provider's defaults.
#[derive(Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub format: BodyFormat,
    /// The provider's own delivery or event id, for dedup.
    pub dedup: Option<Locator>,
    /// Where the event type is (`$.event.type` in the envelope).
    pub event_type: Option<Locator>,
    /// The documented timestamp tolerance; `None` for schemes that sign no timestamp.
    pub tolerance: Option<Duration>,
    /// Whether the scheme signs the URL the sender called (needs `public_url` behind proxies).
    pub signs_url: bool,
    build: Build,
    /// The builder that also accepts the provider's older, timestamp-less signature versions
    /// (`allow_legacy_signatures: true`); `None` when the provider has none.
    legacy: Option<Build>,
}

impl std::fmt::Debug for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preset").field("name", &self.name).finish()
    }
}

/// A credential a preset's verifier reads from the request: redacted before the event is
/// stored (see [`crate::redact`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    Header(&'static str),
    Query(&'static str),
    /// A selector into the envelope (`$.body...`).
    Body(&'static str),
}

impl Preset {
    /// The credentials this preset's verifier reads (signatures are not credentials: they
    /// cannot be reused for another body).
    pub fn credentials(&self) -> &'static [Credential] {
        match self.name {
            "mailchimp" | "amocrm" => &[Credential::Query("token")],
            // Every event carries the application token and the portal's OAuth tokens.
            "bitrix24" => &[
                Credential::Body("$.body.auth.application_token"),
                Credential::Body("$.body.auth.access_token"),
                Credential::Body("$.body.auth.refresh_token"),
            ],
            _ => &[],
        }
    }

    /// A verified request whose `$.body.type` is this is an endpoint-ownership challenge: the
    /// hub answers `{"challenge": $.body.challenge}` and stores nothing (Slack's Events API).
    pub fn challenge_type(&self) -> Option<&'static str> {
        (self.name == "slack").then_some("url_verification")
    }

    /// The verifier with these secrets (several during a rotation) and tolerance (`None`:
    /// freshness not checked).
    pub fn verifier(
        &self,
        secrets: Vec<Secret>,
        tolerance: Option<Duration>,
    ) -> Result<Verifier, ConfigError> {
        self.build_with(self.build, secrets, tolerance)
    }

    /// Whether the provider has older signature versions that sign no timestamp.
    pub fn has_legacy_signatures(&self) -> bool {
        self.legacy.is_some()
    }

    /// The verifier that also accepts the older signature versions (replayable forever: they
    /// carry no timestamp); the same as [`Preset::verifier`] when there are none.
    pub fn legacy_verifier(
        &self,
        secrets: Vec<Secret>,
        tolerance: Option<Duration>,
    ) -> Result<Verifier, ConfigError> {
        self.build_with(self.legacy.unwrap_or(self.build), secrets, tolerance)
    }

    fn build_with(
        &self,
        build: Build,
        secrets: Vec<Secret>,
        tolerance: Option<Duration>,
    ) -> Result<Verifier, ConfigError> {
        let placeholder = secrets.iter().any(Secret::is_placeholder);
        match build(secrets, tolerance) {
            Ok(v) => Ok(v),
            // A placeholder is no key: the file is fine, this machine just lacks the secret.
            Err(e) if placeholder => Ok(Verifier::Unavailable(format!("{} secret not set ({e})", self.name))),
            Err(e) => Err(e),
        }
    }
}

fn scheme<S: Scheme + 'static>(r: Result<S, ConfigError>) -> Result<Verifier, ConfigError> {
    r.map(|s| Verifier::Scheme(Arc::new(s)))
}

fn hmac(
    algorithm: HmacAlgorithm,
    encoding: SigEncoding,
    header: &str,
    prefix: &str,
    secrets: Vec<Secret>,
) -> Result<Verifier, ConfigError> {
    super::check_keys("hmac", "secret", &secrets)?;
    Ok(Verifier::Hmac {
        algorithm,
        encoding,
        header: header.to_ascii_lowercase(),
        prefix: prefix.to_string(),
        secrets,
    })
}

const FIVE_MIN: Option<Duration> = Some(Duration::from_secs(300));

macro_rules! preset {
    ($name:expr, $format:expr, $dedup:expr, $event:expr, $tol:expr, $url:expr, $build:expr) => {
        preset!($name, $format, $dedup, $event, $tol, $url, None, $build)
    };
    ($name:expr, $format:expr, $dedup:expr, $event:expr, $tol:expr, $url:expr, $legacy:expr, $build:expr) => {
        Preset {
            name: $name,
            format: $format,
            dedup: $dedup,
            event_type: $event,
            tolerance: $tol,
            signs_url: $url,
            build: $build,
            legacy: $legacy,
        }
    };
}

use BodyFormat::{Auto, Form, Json};
use Locator::{Header as H, Path as P};

/// Every preset, by the name a mapping file uses.
pub const PRESETS: &[Preset] = &[
    preset!("stripe", Json, Some(P("$.body.id")), Some(P("$.body.type")), FIVE_MIN, false, |s, t| {
        scheme(super::stripe::Stripe::new(s, t))
    }),
    preset!("github", Json, Some(H("x-github-delivery")), Some(H("x-github-event")), None, false, |s, _| {
        hmac(HmacAlgorithm::Sha256, SigEncoding::Hex, "x-hub-signature-256", "sha256=", s)
    }),
    preset!(
        "shopify",
        Json,
        Some(H("x-shopify-webhook-id")),
        Some(H("x-shopify-topic")),
        None,
        false,
        |s, _| hmac(HmacAlgorithm::Sha256, SigEncoding::Base64, "x-shopify-hmac-sha256", "", s)
    ),
    preset!(
        "standard-webhooks",
        Json,
        Some(H("webhook-id")),
        Some(P("$.body.type")),
        FIVE_MIN,
        false,
        |s, t| scheme(super::standard_webhooks::StandardWebhooks::new(s, t))
    ),
    preset!("svix", Json, Some(H("svix-id")), Some(P("$.body.type")), FIVE_MIN, false, |s, t| {
        scheme(super::standard_webhooks::StandardWebhooks::new(s, t))
    }),
    preset!("slack", Auto, None, Some(P("$.body.type")), FIVE_MIN, false, |s, t| {
        scheme(super::slack::Slack::new(s, t))
    }),
    preset!("twilio", Form, Some(H("i-twilio-idempotency-token")), None, None, true, |s, t| {
        scheme(super::twilio::Twilio::new(s, t))
    }),
    preset!(
        "hubspot",
        Json,
        None,
        Some(P("$.body[0].subscriptionType")),
        FIVE_MIN,
        true,
        // v1/v2 sign no timestamp: a captured request stripped of its v3 headers would replay
        // forever, so only sources that opt in accept them.
        Some(|s, t| scheme(HubSpot::new(s, t))),
        |s, t| scheme(HubSpot::new(s, t).map(HubSpot::require_v3))
    ),
    preset!(
        "mailgun",
        Auto,
        // The signed token, not the event id: the signature covers timestamp + token only, so
        // remembering the token is what stops a captured signature carrying a forged event.
        Some(P("$.body.signature.token")),
        Some(P("$.body['event-data'].event")),
        FIVE_MIN,
        false,
        |s, t| scheme(super::mailgun::Mailgun::new(s, t))
    ),
    preset!(
        "sendgrid",
        Json,
        None,
        Some(P("$.body[0].event")),
        // SendGrid documents no tolerance; five minutes, as for the other timestamped schemes.
        FIVE_MIN,
        false,
        |s, t| scheme(super::sendgrid::SendGrid::new(s, t))
    ),
    preset!("square", Json, Some(P("$.body.event_id")), Some(P("$.body.type")), None, true, |s, t| {
        scheme(super::square::Square::new(s, t))
    }),
    preset!(
        "paddle",
        Json,
        Some(P("$.body.event_id")),
        Some(P("$.body.event_type")),
        // Paddle's documentation and SDKs allow five seconds.
        Some(Duration::from_secs(5)),
        false,
        |s, t| { scheme(super::paddle::Paddle::new(s, t)) }
    ),
    preset!(
        "paddle-classic",
        Form,
        Some(P("$.body.alert_id")),
        Some(P("$.body.alert_name")),
        None,
        false,
        |s, t| scheme(super::paddle_classic::PaddleClassic::new(s, t))
    ),
    preset!("liqpay", Form, Some(P("$.body.signature")), None, None, false, |s, t| {
        scheme(super::liqpay::LiqPay::new(s, t))
    }),
    preset!("mandrill", Form, None, None, None, true, |s, t| scheme(super::mandrill::Mandrill::new(s, t))),
    preset!(
        "typeform",
        Json,
        Some(P("$.body.event_id")),
        Some(P("$.body.event_type")),
        None,
        false,
        |s, _| hmac(HmacAlgorithm::Sha256, SigEncoding::Base64, "typeform-signature", "sha256=", s)
    ),
    preset!("webflow", Json, None, Some(P("$.body.triggerType")), FIVE_MIN, false, |s, t| scheme(
        super::webflow::Webflow::new(s, t)
    )),
    preset!(
        "calendly",
        Json,
        None,
        Some(P("$.body.event")),
        // Calendly's documented example refuses signatures older than three minutes.
        Some(Duration::from_secs(180)),
        false,
        |s, t| scheme(super::calendly::new(s, t))
    ),
    // Mailchimp cannot sign: its documented advice is a secret in the webhook URL.
    preset!("mailchimp", Form, None, Some(P("$.body.type")), None, false, |s, _| {
        scheme(SharedToken::new(TokenLocation::Query("token".into()), s))
    }),
    // Bitrix24 puts the application's token in every event body.
    preset!("bitrix24", Form, None, Some(P("$.body.event")), None, false, |s, _| {
        scheme(SharedToken::new(TokenLocation::BodyField("auth.application_token".into()), s))
    }),
    // amoCRM's legacy webhooks are unsigned: a secret query token in the configured URL.
    preset!("amocrm", Form, None, None, None, false, |s, _| {
        scheme(SharedToken::new(TokenLocation::Query("token".into()), s))
    }),
];

pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds `provider` with each unusable key list; every one must be refused.
    fn refuses_empty_keys(provider: &str) {
        let p = preset(provider).expect("known preset");
        for keys in [vec![], vec![""], vec!["  "], vec!["\t\n"], vec!["a-real-looking-key", ""]] {
            let secrets = keys.iter().map(|k| Secret::new(*k)).collect();
            assert!(p.verifier(secrets, p.tolerance).is_err(), "{provider} accepted keys {keys:?}");
        }
        if p.has_legacy_signatures() {
            assert!(p.legacy_verifier(vec![Secret::new("")], p.tolerance).is_err(), "{provider} (legacy)");
        }
    }

    macro_rules! empty_key_tests {
        ($($test:ident => $name:expr),* $(,)?) => {
            $(#[test] fn $test() { refuses_empty_keys($name) })*

            #[test]
            fn every_preset_has_an_empty_key_test() {
                let covered = [$($name),*];
                for p in PRESETS {
                    assert!(covered.contains(&p.name), "no empty-key test for `{}`", p.name);
                }
            }
        };
    }

    empty_key_tests! {
        stripe_refuses_an_empty_key => "stripe",
        github_refuses_an_empty_key => "github",
        shopify_refuses_an_empty_key => "shopify",
        standard_webhooks_refuses_an_empty_key => "standard-webhooks",
        svix_refuses_an_empty_key => "svix",
        slack_refuses_an_empty_key => "slack",
        twilio_refuses_an_empty_key => "twilio",
        hubspot_refuses_an_empty_key => "hubspot",
        mailgun_refuses_an_empty_key => "mailgun",
        sendgrid_refuses_an_empty_key => "sendgrid",
        square_refuses_an_empty_key => "square",
        paddle_refuses_an_empty_key => "paddle",
        paddle_classic_refuses_an_empty_key => "paddle-classic",
        liqpay_refuses_an_empty_key => "liqpay",
        mandrill_refuses_an_empty_key => "mandrill",
        typeform_refuses_an_empty_key => "typeform",
        webflow_refuses_an_empty_key => "webflow",
        calendly_refuses_an_empty_key => "calendly",
        mailchimp_refuses_an_empty_key => "mailchimp",
        bitrix24_refuses_an_empty_key => "bitrix24",
        amocrm_refuses_an_empty_key => "amocrm",
    }

    #[test]
    fn documented_tolerances() {
        let tol = |name| preset(name).and_then(|p| p.tolerance).map(|d| d.as_secs());
        assert_eq!(tol("paddle"), Some(5));
        assert_eq!(tol("calendly"), Some(180));
        assert_eq!(tol("sendgrid"), Some(300));
        for name in ["stripe", "slack", "standard-webhooks", "svix", "hubspot", "webflow", "mailgun"] {
            assert_eq!(tol(name), Some(300), "{name}");
        }
        for name in ["github", "shopify", "twilio", "square", "typeform", "liqpay", "mandrill"] {
            assert_eq!(tol(name), None, "{name} signs no timestamp");
        }
    }
}
