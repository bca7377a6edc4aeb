//! The mapping file as written (YAML), before compilation. Unknown keys are rejected.

use super::node::Node;
use crate::body::BodyFormat;
use crate::verify::{HmacAlgorithm, SigEncoding};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub source: Spanned<SourceSpec>,
    /// Tables for the `lookup` helper: `name: {key: value, ..., _default: value}`.
    #[serde(default)]
    pub lookups: IndexMap<String, Node>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub id: Spanned<String>,
    /// What the source is for; required with `verify: none`, to say why it is open.
    #[serde(default)]
    pub description: Option<String>,
    /// A provider preset (`stripe`, `github`, ...): verification, dedup key, event type and
    /// body format; each can still be set below.
    #[serde(default)]
    pub provider: Option<Spanned<String>>,
    /// The provider's secret (`env:NAME`), or several during a rotation.
    #[serde(default)]
    pub secret: Option<Spanned<String>>,
    #[serde(default)]
    pub secrets: Option<Vec<Spanned<String>>>,
    /// Timestamp tolerance for the provider's signature (`5m`, or `none` to not check).
    #[serde(default)]
    pub tolerance: Option<Spanned<String>>,
    /// Also accept the provider's older signature versions that sign no timestamp (HubSpot
    /// v1/v2); off by default because such a request, once captured, replays forever.
    #[serde(default)]
    pub allow_legacy_signatures: Option<Spanned<bool>>,
    /// This endpoint's URL as senders call it, for schemes that sign the URL; without it the
    /// URL is rebuilt from `X-Forwarded-Proto`/`X-Forwarded-Host`/`Host`.
    #[serde(default)]
    pub public_url: Option<Spanned<String>>,
    #[serde(default)]
    pub format: Option<BodyFormat>,
    #[serde(default)]
    pub verify: Option<Spanned<VerifySpec>>,
    /// Only these source networks may post (checked before any signature).
    #[serde(default)]
    pub ip_allow: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub dedup: Option<Spanned<DedupSpec>>,
    /// Where the event type is, shown to mappings as `$.event.type`.
    #[serde(default)]
    pub event_type: Option<Spanned<DedupSpec>>,
    /// Caps for decompressed bodies and multipart attachments.
    #[serde(default)]
    pub body_limits: Option<crate::body::BodyLimits>,
    /// Largest accepted body in bytes (default 6 MB, the Lambda payload limit).
    #[serde(default)]
    pub max_body_bytes: Option<Spanned<u64>>,
    /// How long an event, its body and deliveries are kept after its last receipt, dispatch or
    /// replay (default 30 days), e.g. `7d`. At least the longest route `max_age` plus a day.
    #[serde(default)]
    pub retention: Option<Spanned<String>>,
    /// Request values replaced by `[redacted]` before the event is stored, besides the ones
    /// always redacted and the verifier's own.
    #[serde(default)]
    pub redact: Option<Spanned<RedactSpec>>,
    /// Named facts about entities that each webhook states (see [`crate::triggers`]).
    #[serde(default)]
    pub facts: Vec<Spanned<FactSpec>>,
}

/// One fact a webhook states about an entity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactSpec {
    /// The entity file it is about (`contact`).
    pub entity: Spanned<String>,
    /// The entity's key (a template or JSONPath, e.g. `{{normalize_email body.email}}`); a key
    /// that renders empty or blocked states no fact.
    pub key: Node,
    /// The fact's name (`email.opened`), literal or a template.
    pub name: Node,
    /// When it happened (JSONPath to unix seconds, milliseconds or RFC 3339); default: when the
    /// webhook was received.
    #[serde(default)]
    pub at: Option<Spanned<String>>,
    /// What the fact carries, as a `map` tree (`$.fact.data` to entity rules).
    #[serde(default)]
    pub data: Option<Node>,
    /// Only when this holds.
    #[serde(default)]
    pub when: Option<Node>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactSpec {
    /// Header names.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Query parameter names.
    #[serde(default)]
    pub query: Vec<String>,
    /// JSONPath selectors under `$.body`.
    #[serde(default)]
    pub body: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum VerifySpec {
    /// No verification, on purpose (a sender that cannot sign); needs a `description` saying why.
    None,
    Hmac(HmacSpec),
    /// HMAC over a signed-content template (`{timestamp}.{body}`).
    TemplateHmac(TemplateHmacSpec),
    Ed25519(Ed25519Spec),
    BasicAuth {
        username: String,
        password: Spanned<String>,
    },
    ApiKey {
        header: String,
        secret: Spanned<String>,
    },
    /// A shared token in the query, a header or a body field.
    Token(TokenSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateHmacSpec {
    pub algorithm: HmacAlgorithm,
    #[serde(default)]
    pub encoding: SigEncoding,
    pub header: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub timestamp_header: Option<String>,
    pub template: Spanned<String>,
    #[serde(default)]
    pub separator: Option<String>,
    #[serde(default)]
    pub secret: Option<Spanned<String>>,
    #[serde(default)]
    pub secrets: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub tolerance: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ed25519Spec {
    pub header: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub encoding: SigEncoding,
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// Public key(s), hex or base64, as `env:` references.
    #[serde(default)]
    pub public_key: Option<Spanned<String>>,
    #[serde(default)]
    pub public_keys: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub tolerance: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
    /// Dotted path into the body (`auth.application_token`).
    #[serde(default)]
    pub body_field: Option<String>,
    #[serde(default)]
    pub secret: Option<Spanned<String>>,
    #[serde(default)]
    pub secrets: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacSpec {
    pub algorithm: HmacAlgorithm,
    #[serde(default)]
    pub encoding: SigEncoding,
    pub header: Spanned<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    /// One secret reference (`env:NAME`) ...
    #[serde(default)]
    pub secret: Option<Spanned<String>>,
    /// ... or several, during a rotation.
    #[serde(default)]
    pub secrets: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupSpec {
    /// JSONPath into the envelope (`$.body.id`, `$.headers['x-request-id']`).
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub header: Option<Spanned<String>>,
    /// How long a key is remembered (default 7 days), e.g. `24h`, `7d`.
    #[serde(default)]
    pub window: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Fan out: render one request per node this JSONPath selects (`$.item`, `$.index`).
    #[serde(default)]
    pub for_each: Option<Spanned<String>>,
    #[serde(default)]
    pub when: Option<Node>,
    #[serde(default)]
    pub map: Option<Node>,
    pub to: Spanned<ToSpec>,
    #[serde(default)]
    pub retry: Option<Spanned<RetrySpec>>,
    /// What makes a route of an entity file fire (a fact, a threshold crossed, a change).
    #[serde(default)]
    pub on: Option<Node>,
    /// When a fired `crosses`/`reaches` route may fire again: `{below: N}`.
    #[serde(default)]
    pub rearm: Option<Node>,
    /// Never fire again within this long of the last fire.
    #[serde(default)]
    pub cooldown: Option<Spanned<String>>,
    /// Fire at most this many times per entity.
    #[serde(default)]
    pub max_fires: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToSpec {
    pub url: Spanned<String>,
    #[serde(default)]
    pub method: Option<Spanned<String>>,
    #[serde(default)]
    pub headers: IndexMap<String, Spanned<String>>,
    #[serde(default)]
    pub auth: Option<Spanned<AuthSpec>>,
    /// The `Idempotency-Key` header's value (a template, e.g. `{{body.id}}`), for destinations
    /// that deduplicate across replays; by default it is the delivery id.
    #[serde(default)]
    pub idempotency_key: Option<Spanned<String>>,
    /// A Handlebars body template (instead of `map`), escaped for `content_type`.
    #[serde(default)]
    pub body: Option<Spanned<String>>,
    #[serde(default)]
    pub content_type: Option<Spanned<String>>,
    /// Forward the original body and content type unchanged.
    #[serde(default)]
    pub raw: bool,
    /// Private networks (CIDR or single addresses) this route may reach, e.g. an on-premises
    /// CRM; each must lie inside what the hub is started to allow (`--allow-net`).
    #[serde(default)]
    pub allow_net: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum AuthSpec {
    Bearer(Spanned<String>),
    Basic { username: String, password: Spanned<String> },
    ApiKey { header: String, value: Spanned<String> },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    #[serde(default)]
    pub max_attempts: Option<Spanned<u32>>,
    #[serde(default)]
    pub max_age: Option<Spanned<String>>,
    #[serde(default)]
    pub initial_delay: Option<Spanned<String>>,
    #[serde(default)]
    pub max_delay: Option<Spanned<String>>,
    #[serde(default)]
    pub multiplier: Option<Spanned<f64>>,
    #[serde(default)]
    pub jitter: Option<bool>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
}
