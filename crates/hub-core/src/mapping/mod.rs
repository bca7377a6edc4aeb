//! Mapping files: compiled once at load into sources and routes; at run time only evaluated.
//!
//! A file declares one **source** (endpoint id, body format, verification, dedup key, size cap)
//! and its **routes** (`when` → `map`/`body` → `to`, with a retry schedule). Selectors are
//! RFC 9535 JSONPath, strings with `{{` are Handlebars (strict, escaped for their output).
//! Both run against the *envelope*:
//! `{"body": ..., "headers": {lower-case: value}, "query": {...}, "event": {id, source, received_at}}`.
//!
//! This module holds the compiled types and what runs at delivery time; the compiler is in
//! `compile` (a module per section of the file), the template helpers in [`helpers`].

pub(crate) mod compile;
pub mod condition;
pub mod diag;
pub mod helpers;
pub mod node;
pub mod selector;
#[cfg(test)]
mod source_tests;
pub mod spec;
pub mod template;
mod url;
pub mod value;

use crate::body::BodyFormat;
use crate::event::OutgoingRequest;
use crate::ids::{DeliveryId, EventId, RouteId, SourceId};
use crate::request::{Headers, RawRequest};
use crate::retry::RetryPolicy;
use crate::secret::{Secret, SecretSource};
use crate::time::UnixMillis;
use crate::verify::Verifier;
use base64::Engine as _;
use bytes::Bytes;
pub use compile::compile_file;
use condition::Condition;
pub use diag::{Diagnostic, FileCtx};
use node::Loc;
use selector::Selector;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use template::{Env, TemplateRef, Templates};
pub use url::url_origin;
use url::{check_rendered_url, non_loopback_http_host};
use value::MapNode;
pub use value::{RenderError, RenderErrorKind};

/// How mapping and example files are read: YAML 1.2 booleans only (`yes`, `no`, `on`, `n`
/// stay strings, so a lookup key `no:` or a field `n:` means what it says), and numbers with
/// leading zeros stay strings (`007`, zip codes).
pub fn yaml_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.leading_zero_numbers_as_strings = true;
    o
}

/// Parses YAML with [`yaml_options`].
pub fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, yaml_options())
}

/// Default body cap: the AWS Lambda synchronous payload limit, so both shells agree.
pub const DEFAULT_MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// Most requests one route renders from one event with `for_each`.
pub const MAX_FAN_OUT: usize = 1000;
/// Most deliveries one dispatch of one event makes across all its routes. Sized so the AWS
/// event item (which lists each open delivery, about 160 bytes apiece, under a 300 KB cap)
/// holds one dispatch with room for a replay while it is still open.
pub const MAX_EVENT_DELIVERIES: usize = 1000;
/// Most bytes (bodies and headers) one dispatch of one event renders across all its routes.
pub const MAX_EVENT_RENDERED_BYTES: usize = 32 * 1024 * 1024;
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long events are kept after their last activity unless the source says otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Retention exceeds every route's `max_age` by at least this much, so that an event whose
/// delivery is still being retried (or was just replayed) is never deleted on a normal path.
pub const RETENTION_MARGIN: Duration = Duration::from_secs(24 * 3600);

/// Where a source finds a value (dedup key, event type): a JSONPath into the envelope or a
/// header.
#[derive(Clone, Debug)]
pub enum Locate {
    Path(Selector),
    Header(String),
}

impl Locate {
    /// The value as text; `None` when absent, null or empty.
    pub fn text(&self, env: &Value, headers: &Headers) -> Option<String> {
        match self {
            Locate::Header(h) => headers.get(h).map(str::to_string).filter(|s| !s.is_empty()),
            Locate::Path(sel) => match sel.first(env)? {
                Value::Null => None,
                Value::String(s) if s.is_empty() => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            },
        }
    }
}

/// Credentials added at send time (never stored with the rendered request).
#[derive(Clone, Debug)]
pub enum Auth {
    Bearer(Secret),
    Basic { username: String, password: Secret },
    ApiKey { header: String, value: Secret },
}

impl Auth {
    pub fn header(&self) -> (String, String) {
        match self {
            Auth::Bearer(t) => ("authorization".into(), format!("Bearer {}", t.expose())),
            Auth::Basic { username, password } => {
                let raw = format!("{username}:{}", password.expose());
                (
                    "authorization".into(),
                    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)),
                )
            }
            Auth::ApiKey { header, value } => (header.to_ascii_lowercase(), value.expose().to_string()),
        }
    }
}

#[derive(Clone, Debug)]
enum BodyPlan {
    Map(MapNode),
    Template { template: TemplateRef, content_type: String },
    Raw,
}

/// Most routes of a source whose webhooks are dispatched at ingest.
pub const INGEST_DISPATCH_ROUTES: usize = 25;

#[derive(Debug)]
pub struct CompiledRoute {
    pub id: RouteId,
    loc: Loc,
    for_each: Option<Selector>,
    when: Option<Condition>,
    body: BodyPlan,
    method: String,
    url: UrlPlan,
    headers: Vec<(String, HeaderValue)>,
    /// The `Idempotency-Key` header's value; the delivery id when not set.
    idempotency_key: Option<TemplateRef>,
    pub auth: Option<Auth>,
    pub retry: RetryPolicy,
    /// Private networks this route may reach (`to.allow_net`); empty: public addresses only.
    pub allow_net: Vec<ipnet::IpNet>,
    /// Where `allow_net` was written (the route itself when it was not).
    allow_net_loc: Loc,
}

#[derive(Debug)]
enum UrlPlan {
    Fixed(String),
    /// A template whose scheme and host (`origin`) are literal.
    Template {
        template: TemplateRef,
        origin: String,
    },
    /// A URL that is itself a credential (a Slack incoming-webhook URL): stored and shown as its
    /// reference (`env:NAME`), put in only at send time.
    Secret {
        reference: String,
        value: Secret,
    },
}

#[derive(Debug)]
enum HeaderValue {
    Fixed(String),
    Template(TemplateRef),
}

/// A compiled source with its routes.
#[derive(Debug)]
pub struct CompiledSource {
    pub id: SourceId,
    pub file: String,
    pub format: BodyFormat,
    pub verifier: Verifier,
    pub dedup: Option<Locate>,
    pub dedup_window: Duration,
    /// How long events are kept after their last receipt, dispatch or replay.
    pub retention: Duration,
    /// Where the event type is (`$.event.type` in the envelope).
    pub event_type: Option<Locate>,
    /// The signature tolerance, when the source has one and no dedup key of its own: the body
    /// digest is then remembered for twice that long as a replay guard.
    pub replay: Option<Duration>,
    pub public_url: Option<String>,
    /// Source networks allowed to post (checked before the signature).
    pub ip_allow: Option<Verifier>,
    pub body_limits: crate::body::BodyLimits,
    /// `$.body.type` value of an endpoint-ownership challenge (from the provider preset).
    pub challenge_type: Option<&'static str>,
    pub max_body_bytes: usize,
    /// What of a request is replaced by `[redacted]` before it is stored.
    pub redact: crate::redact::Redaction,
    pub routes: Vec<CompiledRoute>,
    /// Facts each webhook states about entities (see [`crate::triggers`]).
    pub facts: Vec<crate::triggers::FactRule>,
    templates: Templates,
    fx: FileCtx,
}

/// One fired route's rendering.
#[derive(Debug)]
pub struct Rendered {
    pub route: RouteId,
    /// The delivery this rendering becomes (its id is never taken from a rendered header).
    pub delivery: DeliveryId,
    pub result: Result<OutgoingRequest, RenderError>,
}

/// The JSON document selectors and templates see.
pub fn envelope(
    event_id: &EventId,
    source: &SourceId,
    received_at: UnixMillis,
    headers: &Headers,
    query: Option<&str>,
    body: Value,
) -> Value {
    let query_json = match query {
        Some(q) if !q.is_empty() => crate::body::parse_form(q.as_bytes()),
        _ => Value::Object(serde_json::Map::new()),
    };
    json!({
        "body": body,
        "headers": headers.to_json(),
        "query": query_json,
        "event": {"id": event_id, "source": source, "received_at": received_at.to_rfc3339()},
    })
}

impl CompiledSource {
    /// Whether this source checks no signature or token (`verify: none`); `ip_allow` may still
    /// restrict who can post.
    pub fn is_unverified(&self) -> bool {
        matches!(self.verifier, Verifier::None)
    }

    /// How an unverified source is open, for `validate` and the start-up log.
    pub fn openness(&self) -> &'static str {
        if self.ip_allow.is_some() {
            "no signature is checked, only `ip_allow`"
        } else {
            "accepts requests from anyone"
        }
    }

    /// Whether its routes are evaluated when a webhook is accepted, in the same commit: when
    /// they make a known, small number of deliveries (no `for_each`, at most
    /// [`INGEST_DISPATCH_ROUTES`]). Others are dispatched by a job.
    pub fn dispatches_at_ingest(&self) -> bool {
        self.facts.is_empty()
            && self.routes.len() <= INGEST_DISPATCH_ROUTES
            && self.routes.iter().all(|r| r.for_each.is_none())
    }

    pub fn route(&self, id: &RouteId) -> Option<&CompiledRoute> {
        self.routes.iter().find(|r| &r.id == id)
    }

    /// The facts a webhook states (its envelope `env`), in the order of the `facts:` block;
    /// a rule that cannot state its fact is reported with why, and the others still apply.
    pub fn facts_of(
        &self,
        env: &Value,
        event: &EventId,
        received_at: UnixMillis,
        set: &MappingSet,
    ) -> Vec<Result<crate::triggers::Fact, crate::triggers::FactError>> {
        let env = Env::new(env);
        self.facts
            .iter()
            .enumerate()
            .filter_map(|(i, rule)| {
                let blocked = set.entities.get(&rule.entity).map_or(&[][..], |e| &e.blocked[..]);
                let id = crate::triggers::fact_id(event, i);
                rule.state(&env, &self.templates, &self.fx, id, received_at, blocked).transpose()
            })
            .collect()
    }

    /// The dedup key of a request and how long to remember it: the source's (or its provider's)
    /// key, else a digest of the verified body for the tolerance window (a replay guard).
    ///
    /// The digest, not the signature header: header text has many spellings of one signature
    /// (hex case, list order, extra list items, re-encoded ECDSA signatures), the signed body
    /// has one. A provider's retry of the same event carries the same body, so it is a
    /// duplicate too.
    pub fn dedup_key(&self, env: &Value, headers: &Headers, body: &[u8]) -> Option<(String, Duration)> {
        if let Some(k) = self.dedup.as_ref().and_then(|d| d.text(env, headers)) {
            return Some((k, self.dedup_window));
        }
        let window = self.replay?;
        // Twice the tolerance: a signature is accepted up to `tolerance` either side of now.
        Some((body_digest_key(body), window * 2))
    }

    /// The challenge to echo when `body` is an endpoint-ownership check for this source.
    pub fn challenge(&self, body: &Value) -> Option<String> {
        let t = self.challenge_type?;
        (body.get("type")?.as_str()? == t).then(|| body.get("challenge")?.as_str().map(str::to_string))?
    }

    /// The envelope of a request to this source, with `event.type` filled in.
    pub fn envelope(
        &self,
        event_id: &EventId,
        received_at: UnixMillis,
        headers: &Headers,
        query: Option<&str>,
        body: Value,
    ) -> Value {
        let mut env = envelope(event_id, &self.id, received_at, headers, query, body);
        if let Some(t) = self.event_type.as_ref().and_then(|l| l.text(&env, headers))
            && let Some(ev) = env.get_mut("event").and_then(Value::as_object_mut)
        {
            ev.insert("type".into(), Value::String(t));
        }
        env
    }

    /// The URL the sender called, for URL-signing schemes: `public_url` plus the query, else
    /// the path and query (enough for query-token schemes).
    ///
    /// Never rebuilt from `Host` or `X-Forwarded-Host`/`-Proto`: the sender writes those, so
    /// trusting them would let a request signed for another endpoint (with the same key) pass
    /// here. That is why URL-signing schemes require `public_url`.
    pub fn public_url_of(&self, req: &RawRequest) -> Option<String> {
        let query =
            req.query.as_deref().filter(|q| !q.is_empty()).map(|q| format!("?{q}")).unwrap_or_default();
        match &self.public_url {
            Some(u) => Some(format!("{u}{query}")),
            None => Some(format!("{}{query}", req.path)),
        }
    }

    /// Evaluates every route's `when` and renders the ones that fire, in file order. A route
    /// with `for_each` is evaluated once per selected node, with the node at `$.item` and its
    /// position at `$.index`.
    ///
    /// `Err` when the event as a whole is over a per-event cap ([`MAX_EVENT_DELIVERIES`],
    /// [`MAX_EVENT_RENDERED_BYTES`]): nothing is sent for it, and the reason says which cap.
    pub fn evaluate(
        &self,
        env: &Value,
        req: &RawRequest,
        delivery_id: &mut dyn FnMut() -> DeliveryId,
    ) -> Result<Vec<Rendered>, RenderError> {
        let fires = |r: &CompiledRoute, e: &Value| r.when.as_ref().is_none_or(|c| c.eval(e, &req.headers));
        let mut out = Vec::new();
        let mut bytes = 0usize;
        // Renders one delivery (or records why it cannot be rendered) and checks the caps.
        let mut push = |out: &mut Vec<Rendered>, r: &CompiledRoute, env: Result<&Env<'_>, String>| {
            let delivery = delivery_id();
            let result = match env {
                Ok(env) => self.render_route(r, env, req, &delivery),
                Err(msg) => {
                    Err(RenderError::new(RenderErrorKind::FanOut, self.fx.at(r.loc, msg).to_string()))
                }
            };
            if let Ok(o) = &result {
                bytes = bytes.saturating_add(o.size());
            }
            out.push(Rendered { route: r.id.clone(), delivery, result });
            if out.len() > MAX_EVENT_DELIVERIES {
                return Err(RenderError::new(
                    RenderErrorKind::EventCap,
                    format!(
                        "the event's routes make more than {MAX_EVENT_DELIVERIES} deliveries; nothing was sent"
                    ),
                ));
            }
            if bytes > MAX_EVENT_RENDERED_BYTES {
                return Err(RenderError::new(
                    RenderErrorKind::EventCap,
                    format!(
                        "the event's routes render more than {MAX_EVENT_RENDERED_BYTES} bytes; nothing was sent"
                    ),
                ));
            }
            Ok(())
        };
        for r in &self.routes {
            let Some(each) = &r.for_each else {
                if fires(r, env) {
                    push(&mut out, r, Ok(&Env::new(env)))?;
                }
                continue;
            };
            let selected = each.select(env);
            if selected.len() > MAX_FAN_OUT {
                let msg = format!(
                    "for_each selected {} items; a route sends at most {MAX_FAN_OUT}",
                    selected.len()
                );
                push(&mut out, r, Err(msg))?;
                continue;
            }
            let items: Vec<Value> = selected.into_iter().cloned().collect();
            // One copy of the envelope for the whole route, with `item` and `index` swapped in
            // place: neither the envelope nor its template context is copied per item.
            let mut e = Env::owned(env.clone());
            for (i, item) in items.into_iter().enumerate() {
                e.set_item(item, i);
                if fires(r, e.value()) {
                    push(&mut out, r, Ok(&e))?;
                }
            }
        }
        Ok(out)
    }

    fn render_route(
        &self,
        r: &CompiledRoute,
        env: &Env<'_>,
        req: &RawRequest,
        delivery: &DeliveryId,
    ) -> Result<OutgoingRequest, RenderError> {
        render_route(&self.templates, &self.fx, r, env, req, delivery, None)
    }
}

/// Renders one route's request against `env`, with the templates and file of the file that
/// declares it. `key` is the `Idempotency-Key` when the route sets none (the delivery id
/// otherwise).
pub(crate) fn render_route(
    templates: &Templates,
    fx: &FileCtx,
    r: &CompiledRoute,
    env: &Env<'_>,
    req: &RawRequest,
    delivery: &DeliveryId,
    key: Option<&str>,
) -> Result<OutgoingRequest, RenderError> {
    let tpl_err = |e: &dyn std::fmt::Display| {
        RenderError::new(RenderErrorKind::Request, fx.at(r.loc, format!("route `{}`: {e}", r.id)).to_string())
    };
    let url = match &r.url {
        UrlPlan::Fixed(u) => u.clone(),
        UrlPlan::Template { template, .. } => {
            let url = templates.render(template, env).map_err(|e| tpl_err(&e))?;
            check_rendered_url(&url).map_err(|e| tpl_err(&e))?;
            url
        }
        UrlPlan::Secret { reference, .. } => reference.clone(),
    };
    let (content_type, body) = match &r.body {
        BodyPlan::Map(m) => {
            let v = m.render(env, templates, fx)?.unwrap_or(Value::Null);
            ("application/json".to_string(), Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
        }
        BodyPlan::Template { template, content_type } => {
            (content_type.clone(), Bytes::from(templates.render(template, env).map_err(|e| tpl_err(&e))?))
        }
        BodyPlan::Raw => {
            (req.content_type().unwrap_or("application/octet-stream").to_string(), req.body.clone())
        }
    };
    let mut headers = vec![("content-type".to_string(), content_type)];
    for (name, v) in &r.headers {
        let value = match v {
            HeaderValue::Fixed(s) => s.clone(),
            HeaderValue::Template(t) => templates.render(t, env).map_err(|e| tpl_err(&e))?,
        };
        if value.contains(['\r', '\n']) {
            return Err(tpl_err(&format_args!("header `{name}` would contain a line break")));
        }
        headers.retain(|(k, _)| k != name);
        headers.push((name.clone(), value));
    }
    let event_id = env.value().pointer("/event/id").and_then(Value::as_str).unwrap_or_default();
    headers.push(("x-hub-event-id".into(), event_id.to_string()));
    let key = match &r.idempotency_key {
        Some(t) => {
            let k = templates.render(t, env).map_err(|e| tpl_err(&e))?;
            if k.is_empty() || k.contains(['\r', '\n']) {
                return Err(tpl_err(&"`idempotency_key` rendered empty or with a line break"));
            }
            k
        }
        None => key.map_or_else(|| delivery.to_string(), str::to_string),
    };
    headers.push(("idempotency-key".into(), key));
    Ok(OutgoingRequest { method: r.method.clone(), url, headers, body })
}

/// The replay key of a body: `sha256:` and the hex digest.
pub fn body_digest_key(body: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)))
}

/// Every compiled source, by id, and every entity file, by entity name.
#[derive(Debug, Default)]
pub struct MappingSet {
    pub sources: BTreeMap<SourceId, Arc<CompiledSource>>,
    pub entities: BTreeMap<String, Arc<crate::triggers::CompiledEntity>>,
}

impl MappingSet {
    pub fn source(&self, id: &str) -> Option<&Arc<CompiledSource>> {
        self.sources.get(&SourceId::new(id))
    }

    /// The route a delivery of an event of `source` names: one of the source's own, or (an id
    /// `<entity>.<route>`) a route of an entity file.
    pub fn route(&self, source: &SourceId, route: &RouteId) -> Option<&CompiledRoute> {
        if let Some((entity, _)) = route.as_str().split_once('.') {
            return self.entities.get(entity)?.route(route);
        }
        self.sources.get(source)?.route(route)
    }

    /// Compiles `(file name, text)` pairs. Every problem in every file is reported; a set is
    /// returned only when there is none.
    pub fn compile(
        files: &[(String, String)],
        secrets: &dyn SecretSource,
    ) -> Result<MappingSet, Vec<Diagnostic>> {
        let mut diags = Vec::new();
        let mut set = MappingSet::default();
        let mut seen: HashMap<SourceId, (String, Loc)> = HashMap::new();
        let mut entities: HashMap<String, (String, Loc)> = HashMap::new();
        for (name, text) in files {
            if crate::triggers::is_entity_file(text) {
                match crate::triggers::compile_entity(name, text, secrets) {
                    Ok((e, loc)) => {
                        if let Some((other, oloc)) = entities.get(&e.name) {
                            diags.push(FileCtx::new(name).at(
                                loc,
                                format!(
                                    "entity `{}` is declared twice (also in {other}:{}:{})",
                                    e.name, oloc.line, oloc.col
                                ),
                            ));
                            continue;
                        }
                        entities.insert(e.name.clone(), (name.clone(), loc));
                        set.entities.insert(e.name.clone(), Arc::new(e));
                    }
                    Err(mut d) => diags.append(&mut d),
                }
                continue;
            }
            match compile_file(name, text, secrets) {
                Ok((src, loc)) => {
                    if let Some((other, oloc)) = seen.get(&src.id) {
                        diags.push(FileCtx::new(name).at(
                            loc,
                            format!(
                                "duplicate source id `{}` (also in {other}:{}:{})",
                                src.id, oloc.line, oloc.col
                            ),
                        ));
                        continue;
                    }
                    seen.insert(src.id.clone(), (name.clone(), loc));
                    set.sources.insert(src.id.clone(), Arc::new(src));
                }
                Err(mut d) => diags.append(&mut d),
            }
        }
        if diags.is_empty() {
            diags = crate::triggers::compile::check_set(&set);
        }
        if diags.is_empty() { Ok(set) } else { Err(diags) }
    }

    /// Every network a route asks for with `to.allow_net` must lie inside `granted`, the
    /// networks the hub was started to allow: the operator decides what is reachable, a
    /// mapping file only which of it each route uses.
    pub fn check_reach(&self, granted: &[ipnet::IpNet]) -> Result<(), Vec<Diagnostic>> {
        let mut diags = Vec::new();
        for source in self.sources.values() {
            let fx = FileCtx::new(source.file.clone());
            for route in &source.routes {
                for net in route.allow_net.iter().filter(|n| !crate::net::is_within(n, granted)) {
                    diags.push(fx.at(
                        route.allow_net_loc,
                        format!(
                            "route `{}` asks to reach {net}, which this hub is not started to allow \
                             (add it to --allow-net / HUB_ALLOW_NETS, or AllowNets on AWS)",
                            route.id
                        ),
                    ));
                }
            }
        }
        if diags.is_empty() { Ok(()) } else { Err(diags) }
    }
}

impl UrlPlan {
    /// The origin requests of this plan go to (a secret URL: its reference, as stored).
    fn origin(&self) -> &str {
        match self {
            UrlPlan::Fixed(u) => url_origin(u),
            UrlPlan::Template { origin, .. } => origin,
            UrlPlan::Secret { reference, .. } => reference,
        }
    }

    /// Why `auth` may not go to this URL: a plain-http host that is not loopback.
    fn plain_http_host(&self) -> Option<String> {
        match self {
            UrlPlan::Fixed(u) => non_loopback_http_host(url_origin(u)),
            UrlPlan::Template { origin, .. } => non_loopback_http_host(origin),
            UrlPlan::Secret { value, .. } if !value.is_placeholder() => {
                non_loopback_http_host(url_origin(value.expose()))
            }
            UrlPlan::Secret { .. } => None,
        }
    }
}

impl CompiledRoute {
    /// Whether the route's `when` holds on `env` (no `when`: always).
    pub fn holds(&self, env: &Value) -> bool {
        self.when.as_ref().is_none_or(|c| c.eval(env, &Headers::default()))
    }

    /// The URL to send to: a stored secret reference becomes the secret's value; any other URL
    /// is sent as rendered.
    pub fn send_url(&self, stored: &str) -> String {
        match &self.url {
            UrlPlan::Secret { reference, value } if reference == stored => value.expose().to_string(),
            _ => stored.to_string(),
        }
    }

    /// Where this route sends: the scheme and host of its URL (a secret URL: its reference).
    /// Requests rendered for another origin are not sent with this route's credentials.
    pub fn origin(&self) -> &str {
        self.url.origin()
    }

    /// The route's auth header, shown redacted (for dry runs).
    pub fn redacted_auth_header(&self) -> Option<(String, String)> {
        self.auth.as_ref().map(|a| {
            let (k, _) = a.header();
            (k, "[redacted]".to_string())
        })
    }
}

#[cfg(test)]
mod tests;
