//! Mapping files: compiled once at load into sources and routes; at run time only evaluated.
//!
//! A file declares one **source** (endpoint id, body format, verification, dedup key, size cap)
//! and its **routes** (`when` → `map`/`body` → `to`, with a retry schedule). Selectors are
//! RFC 9535 JSONPath, strings with `{{` are Handlebars (strict, escaped for their output).
//! Both run against the *envelope*:
//! `{"body": ..., "headers": {lower-case: value}, "query": {...}, "event": {id, source, received_at}}`.

pub mod condition;
pub mod diag;
pub mod helpers;
pub mod node;
pub mod selector;
#[cfg(test)]
mod source_tests;
pub mod spec;
pub mod template;
pub mod value;

use crate::body::BodyFormat;
use crate::event::OutgoingRequest;
use crate::ids::{DeliveryId, EventId, RouteId, SourceId, is_valid_id};
use crate::request::{Headers, RawRequest};
use crate::retry::RetryPolicy;
use crate::secret::{Secret, SecretRef, SecretSource};
use crate::time::UnixMillis;
use crate::verify::{Scheme, Verifier, presets, token};
use base64::Engine as _;
use bytes::Bytes;
use condition::Condition;
pub use diag::{Diagnostic, FileCtx};
use helpers::LookupTable;
use node::{Loc, Node};
use selector::Selector;
use serde_json::{Value, json};
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use template::{Env, Escape, TemplateRef, Templates};
use value::MapNode;
pub use value::RenderError;

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
        self.routes.len() <= INGEST_DISPATCH_ROUTES && self.routes.iter().all(|r| r.for_each.is_none())
    }

    pub fn route(&self, id: &RouteId) -> Option<&CompiledRoute> {
        self.routes.iter().find(|r| &r.id == id)
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
                Err(msg) => Err(RenderError(self.fx.at(r.loc, msg).to_string())),
            };
            if let Ok(o) = &result {
                bytes = bytes.saturating_add(o.size());
            }
            out.push(Rendered { route: r.id.clone(), delivery, result });
            if out.len() > MAX_EVENT_DELIVERIES {
                return Err(RenderError(format!(
                    "the event's routes make more than {MAX_EVENT_DELIVERIES} deliveries; nothing was sent"
                )));
            }
            if bytes > MAX_EVENT_RENDERED_BYTES {
                return Err(RenderError(format!(
                    "the event's routes render more than {MAX_EVENT_RENDERED_BYTES} bytes; nothing was sent"
                )));
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
        let fx = &self.fx;
        let tpl_err = |e: String| RenderError(fx.at(r.loc, format!("route `{}`: {e}", r.id)).to_string());
        let url = match &r.url {
            UrlPlan::Fixed(u) => u.clone(),
            UrlPlan::Template { template, .. } => {
                let url = self.templates.render(template, env).map_err(tpl_err)?;
                check_rendered_url(&url).map_err(tpl_err)?;
                url
            }
            UrlPlan::Secret { reference, .. } => reference.clone(),
        };
        let (content_type, body) = match &r.body {
            BodyPlan::Map(m) => {
                let v = m.render(env, &self.templates, fx)?.unwrap_or(Value::Null);
                ("application/json".to_string(), Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
            }
            BodyPlan::Template { template, content_type } => {
                (content_type.clone(), Bytes::from(self.templates.render(template, env).map_err(tpl_err)?))
            }
            BodyPlan::Raw => {
                (req.content_type().unwrap_or("application/octet-stream").to_string(), req.body.clone())
            }
        };
        let mut headers = vec![("content-type".to_string(), content_type)];
        for (name, v) in &r.headers {
            let value = match v {
                HeaderValue::Fixed(s) => s.clone(),
                HeaderValue::Template(t) => self.templates.render(t, env).map_err(tpl_err)?,
            };
            if value.contains(['\r', '\n']) {
                return Err(tpl_err(format!("header `{name}` would contain a line break")));
            }
            headers.retain(|(k, _)| k != name);
            headers.push((name.clone(), value));
        }
        let event_id = env.value().pointer("/event/id").and_then(Value::as_str).unwrap_or_default();
        headers.push(("x-hub-event-id".into(), event_id.to_string()));
        let key = match &r.idempotency_key {
            Some(t) => {
                let k = self.templates.render(t, env).map_err(tpl_err)?;
                if k.is_empty() || k.contains(['\r', '\n']) {
                    return Err(tpl_err("`idempotency_key` rendered empty or with a line break".into()));
                }
                k
            }
            None => delivery.to_string(),
        };
        headers.push(("idempotency-key".into(), key));
        Ok(OutgoingRequest { method: r.method.clone(), url, headers, body })
    }
}

/// The replay key of a body: `sha256:` and the hex digest.
pub fn body_digest_key(body: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)))
}

/// Every compiled source, by id.
#[derive(Debug, Default)]
pub struct MappingSet {
    pub sources: BTreeMap<SourceId, Arc<CompiledSource>>,
}

impl MappingSet {
    pub fn source(&self, id: &str) -> Option<&Arc<CompiledSource>> {
        self.sources.get(&SourceId::new(id))
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
        for (name, text) in files {
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

/// Compiles one file; returns the source and where its id was written.
pub fn compile_file(
    name: &str,
    text: &str,
    secrets: &dyn SecretSource,
) -> Result<(CompiledSource, Loc), Vec<Diagnostic>> {
    let fx = FileCtx::new(name);
    let spec: spec::FileSpec = from_yaml(text).map_err(|e| vec![fx.from_yaml(&e)])?;
    let mut diags = Vec::new();
    let mut lookups = HashMap::new();
    for (tname, node) in &spec.lookups {
        match lookup_table(node, &fx) {
            Ok(t) => {
                lookups.insert(tname.clone(), t);
            }
            Err(d) => diags.push(d),
        }
    }
    let mut templates = Templates::new(Arc::new(lookups));
    let src = &spec.source.value;
    let id_loc = Loc::of(&src.id);
    if !is_valid_id(&src.id.value) {
        diags.push(fx.at(id_loc, format!("source id `{}` must be 1-64 of [a-z0-9_-]", src.id.value)));
    }
    let preset = src.provider.as_ref().and_then(|p| {
        let found = presets::preset(&p.value);
        if found.is_none() {
            diags.push(fx.at(
                Loc::of(p),
                format!("unknown provider `{}` (known: {})", p.value, presets::names().join(", ")),
            ));
        }
        found
    });
    // `tolerance: none` turns freshness off; absent, the provider's documented default applies.
    let tolerance = match &src.tolerance {
        None => preset.and_then(|p| p.tolerance),
        Some(t) => tolerance_of(t, &fx).unwrap_or_else(|d| {
            diags.push(d);
            None
        }),
    };
    let (source_secrets, secrets_ok) =
        match secret_list(SECRET_KEYS, src.secret.as_ref(), src.secrets.as_deref(), &fx, secrets) {
            Ok(s) => (s, true),
            Err(d) => {
                diags.push(d);
                (Vec::new(), false)
            }
        };
    let verifier = match (&src.verify, preset) {
        (Some(v), _) if matches!(v.value, spec::VerifySpec::None) => {
            if src.description.as_deref().is_none_or(|d| d.trim().is_empty()) {
                diags.push(fx.at(
                    Loc::of(v),
                    "`verify: none` accepts requests from anyone: give the source a `description` \
                     saying why it is open",
                ));
            }
            if let Some(s) = src.secret.as_ref().or_else(|| src.secrets.as_ref().and_then(|v| v.first())) {
                diags.push(fx.at(Loc::of(s), "`secret` has no use with `verify: none`"));
            }
            Verifier::None
        }
        (Some(v), _) => compile_verify(v, &fx, secrets).unwrap_or_else(|d| {
            diags.push(d);
            Verifier::None
        }),
        // The secret's own diagnostic says what is wrong; building without it would only add noise.
        (None, Some(_)) if !secrets_ok => Verifier::None,
        (None, Some(p)) => {
            let at = src.provider.as_ref().map(Loc::of).unwrap_or(id_loc);
            if source_secrets.is_empty() && src.secret.is_none() && src.secrets.is_none() {
                diags.push(
                    fx.at(at, format!("provider `{}` needs `secret: env:NAME` (or `secrets:`)", p.name)),
                );
                Verifier::None
            } else {
                let legacy = src.allow_legacy_signatures.as_ref().is_some_and(|a| a.value);
                if let Some(a) = &src.allow_legacy_signatures
                    && !p.has_legacy_signatures()
                {
                    diags.push(fx.at(
                        Loc::of(a),
                        format!("provider `{}` has no older signature versions to allow", p.name),
                    ));
                }
                let built = if legacy {
                    p.legacy_verifier(source_secrets, tolerance)
                } else {
                    p.verifier(source_secrets, tolerance)
                };
                built.unwrap_or_else(|e| {
                    diags.push(fx.at(at, format!("provider `{}`: {e}", p.name)));
                    Verifier::None
                })
            }
        }
        (None, None) => {
            if let Some(s) = src.secret.as_ref().or_else(|| src.secrets.as_ref().and_then(|v| v.first())) {
                diags.push(fx.at(Loc::of(s), "`secret` needs a `provider` (or put it under `verify`)"));
            } else {
                // An open endpoint must be a decision written in the file, never a forgotten block.
                diags.push(fx.at(
                    id_loc,
                    "source has no verification: set `provider`, or `verify:` (write `verify: none` \
                     with a `description` to accept requests from anyone)",
                ));
            }
            Verifier::None
        }
    };
    if let Some(a) = &src.allow_legacy_signatures
        && (src.verify.is_some() || preset.is_none())
    {
        diags.push(fx.at(Loc::of(a), "`allow_legacy_signatures` applies to a `provider` preset only"));
    }
    let locate = |spec: &Spanned<spec::DedupSpec>,
                  what: &str,
                  diags: &mut Vec<Diagnostic>|
     -> Option<Locate> {
        match (&spec.value.path, &spec.value.header) {
            (Some(p), None) => Selector::compile(&p.value)
                .map(Locate::Path)
                .map_err(|e| diags.push(fx.at(Loc::of(p), e)))
                .ok(),
            (None, Some(h)) => Some(Locate::Header(h.value.to_ascii_lowercase())),
            _ => {
                diags.push(fx.at(Loc::of(spec), format!("{what} takes exactly one of `path` or `header`")));
                None
            }
        }
    };
    let from_preset = |l: Option<presets::Locator>| match l? {
        presets::Locator::Path(p) => Selector::compile(p).ok().map(Locate::Path),
        presets::Locator::Header(h) => Some(Locate::Header(h.to_string())),
    };
    let mut dedup_window = DEFAULT_DEDUP_WINDOW;
    let dedup = match &src.dedup {
        Some(d) => {
            if let Some(w) = &d.value.window {
                match duration(w, &fx) {
                    Ok(w) => dedup_window = w,
                    Err(e) => diags.push(e),
                }
            }
            locate(d, "dedup", &mut diags)
        }
        None => from_preset(preset.and_then(|p| p.dedup)),
    };
    let event_type = match &src.event_type {
        Some(e) => {
            if let Some(w) = &e.value.window {
                diags.push(fx.at(Loc::of(w), "`window` applies to `dedup` only"));
            }
            locate(e, "event_type", &mut diags)
        }
        None => from_preset(preset.and_then(|p| p.event_type)),
    };
    // Only a verified, timestamped request gets the guard: the tolerance bounds how long a
    // captured one could be replayed, so remembering its body that long refuses every replay.
    let replay = preset.and(tolerance);
    let public_url = src.public_url.as_ref().and_then(|u| {
        let v = u.value.trim().to_string();
        if v.starts_with("https://") || v.starts_with("http://") {
            Some(v)
        } else {
            diags.push(fx.at(Loc::of(u), "public_url must start with https:// or http://"));
            None
        }
    });
    // A scheme that signs the URL must know it from the file: nothing in the request can say
    // it truthfully.
    let signs_url = match &src.verify {
        Some(v) => {
            matches!(&v.value, spec::VerifySpec::TemplateHmac(t) if t.template.value.contains("{url}"))
        }
        None => preset.is_some_and(|p| p.signs_url),
    };
    if signs_url && src.public_url.is_none() {
        let at = src.provider.as_ref().map(Loc::of).or(src.verify.as_ref().map(Loc::of)).unwrap_or(id_loc);
        diags.push(fx.at(
            at,
            "this scheme signs the URL the sender called: set `public_url` to this endpoint's URL as \
             the sender calls it (e.g. https://hooks.example.com/hooks/<id>)",
        ));
    }
    let ip_allow = src.ip_allow.as_ref().and_then(|l| {
        token::IpAllowList::new(l.value.iter())
            .map(|list| Verifier::Scheme(Arc::new(list)))
            .map_err(|e| diags.push(fx.at(Loc::of(l), e.to_string())))
            .ok()
    });
    let format = src.format.or(preset.map(|p| p.format)).unwrap_or_default();
    let body_limits = src.body_limits.unwrap_or_default();
    let max_body_bytes = match &src.max_body_bytes {
        Some(m) if m.value == 0 => {
            diags.push(fx.at(Loc::of(m), "max_body_bytes must be positive"));
            DEFAULT_MAX_BODY_BYTES
        }
        Some(m) => usize::try_from(m.value).unwrap_or(usize::MAX),
        None => DEFAULT_MAX_BODY_BYTES,
    };
    let mut redact = crate::redact::Redaction::default();
    for c in preset.map(|p| p.credentials()).unwrap_or_default() {
        match c {
            presets::Credential::Header(h) => redact.add_header(h),
            presets::Credential::Query(q) => redact.add_query(q),
            presets::Credential::Body(b) => {
                if let Ok(sel) = Selector::compile(b) {
                    redact.add_body(sel);
                }
            }
        }
    }
    if let Some(v) = &src.verify {
        match &v.value {
            spec::VerifySpec::BasicAuth { .. } => redact.add_header("authorization"),
            spec::VerifySpec::ApiKey { header, .. } => redact.add_header(header),
            spec::VerifySpec::Token(t) => {
                if let Some(q) = &t.query {
                    redact.add_query(q);
                }
                if let Some(h) = &t.header {
                    redact.add_header(h);
                }
                if let Some(b) = &t.body_field {
                    redact.add_body_field(b);
                }
            }
            _ => {}
        }
    }
    if let Some(r) = &src.redact {
        for h in &r.value.headers {
            if http::HeaderName::try_from(h.as_str()).is_err() {
                diags.push(fx.at(Loc::of(r), format!("`{h}` is not a valid header name")));
            }
            redact.add_header(h);
        }
        for q in &r.value.query {
            redact.add_query(q);
        }
        for b in &r.value.body {
            if !(b.value == "$.body" || b.value.starts_with("$.body.") || b.value.starts_with("$.body[")) {
                diags.push(
                    fx.at(Loc::of(b), format!("`{}`: redact.body selectors start with `$.body`", b.value)),
                );
                continue;
            }
            match Selector::compile(&b.value) {
                Ok(sel) => redact.add_body(sel),
                Err(e) => diags.push(fx.at(Loc::of(b), e)),
            }
        }
        if !r.value.body.is_empty()
            && matches!(format, BodyFormat::Xml | BodyFormat::Multipart | BodyFormat::Text)
        {
            diags.push(fx.at(
                Loc::of(r),
                "redact.body rewrites JSON and form bodies; this source's format cannot keep a redacted body \
                 readable (use `format: auto` to store such bodies as their JSON document)",
            ));
        }
    }
    let mut routes: Vec<CompiledRoute> = Vec::new();
    for r in &spec.routes {
        match compile_route(r, &fx, &mut templates, secrets) {
            Ok(route) => {
                if routes.iter().any(|x| x.id == route.id) {
                    diags.push(fx.at(Loc::of(&r.value.id), format!("duplicate route id `{}`", route.id)));
                } else {
                    routes.push(route);
                }
            }
            Err(mut d) => diags.append(&mut d),
        }
    }
    if spec.routes.is_empty() {
        diags.push(fx.at(Loc::of(&spec.source), "a mapping file needs at least one route under `routes`"));
    }
    let retention = compile_retention(
        src,
        &spec.routes,
        &routes,
        dedup.is_some().then_some(dedup_window),
        &fx,
        &mut diags,
    );
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok((
        CompiledSource {
            id: SourceId::new(src.id.value.clone()),
            file: name.to_string(),
            format,
            verifier,
            dedup,
            dedup_window,
            retention,
            event_type,
            replay,
            public_url,
            ip_allow,
            body_limits,
            challenge_type: preset.and_then(|p| p.challenge_type()),
            max_body_bytes,
            redact,
            routes,
            templates,
            fx,
        },
        id_loc,
    ))
}

fn lookup_table(node: &Node, fx: &FileCtx) -> Result<LookupTable, Diagnostic> {
    let Some(entries) = node.as_map() else {
        return Err(fx.at(node.loc, "a lookup table is a mapping of key: value (and optional `_default`)"));
    };
    let mut t = LookupTable::default();
    for (k, v) in entries {
        if k == "_default" {
            t.default = Some(v.to_json());
        } else {
            t.entries.insert(k.clone(), v.to_json());
        }
    }
    Ok(t)
}

fn secret(s: &Spanned<String>, fx: &FileCtx, secrets: &dyn SecretSource) -> Result<Secret, Diagnostic> {
    secret_at("this value", s, fx, secrets)
}

/// Resolves the secret reference written at `key`. A value that resolves to nothing but
/// whitespace fails like an unset one: an empty key lets anyone sign.
fn secret_at(
    key: &str,
    s: &Spanned<String>,
    fx: &FileCtx,
    secrets: &dyn SecretSource,
) -> Result<Secret, Diagnostic> {
    let r = SecretRef::parse(&s.value).map_err(|e| fx.at(Loc::of(s), format!("{key}: {e}")))?;
    let value = secrets.resolve(&r).ok_or_else(|| fx.at(Loc::of(s), format!("secret `{r}` is not set")))?;
    if !crate::secret::is_usable(value.expose()) {
        return Err(
            fx.at(Loc::of(s), format!("secret `{r}` is empty (an empty secret would let anyone sign)"))
        );
    }
    Ok(value)
}

const SECRET_KEYS: [&str; 2] = ["`secret`", "`secrets`"];

/// Resolves `secret` / `secrets` (or the keys named in `keys`) into values; empty when neither
/// is given.
fn secret_list(
    [one_key, many_key]: [&str; 2],
    one: Option<&Spanned<String>>,
    many: Option<&[Spanned<String>]>,
    fx: &FileCtx,
    secrets: &dyn SecretSource,
) -> Result<Vec<Secret>, Diagnostic> {
    match (one, many) {
        (Some(s), None) => Ok(vec![secret_at(one_key, s, fx, secrets)?]),
        (None, Some(list)) => list.iter().map(|s| secret_at(many_key, s, fx, secrets)).collect(),
        (None, None) => Ok(Vec::new()),
        (Some(s), Some(_)) => Err(fx.at(Loc::of(s), format!("give {one_key} or {many_key}, not both"))),
    }
}

/// `none` → no freshness check; otherwise a duration.
fn tolerance_of(t: &Spanned<String>, fx: &FileCtx) -> Result<Option<Duration>, Diagnostic> {
    if t.value.trim().eq_ignore_ascii_case("none") { Ok(None) } else { duration(t, fx).map(Some) }
}

/// Builds a scheme; a key that cannot be built because it is a placeholder (secret not set on
/// this machine) gives a verifier that refuses everything, so the file still validates.
fn build_scheme<S: Scheme + 'static>(
    keys: &[Secret],
    built: Result<S, crate::verify::ConfigError>,
    loc: Loc,
    fx: &FileCtx,
) -> Result<Verifier, Diagnostic> {
    match built {
        Ok(s) => Ok(Verifier::Scheme(Arc::new(s))),
        Err(e) if keys.iter().any(Secret::is_placeholder) => {
            Ok(Verifier::Unavailable(format!("secret not set ({e})")))
        }
        Err(e) => Err(fx.at(loc, e.to_string())),
    }
}

fn compile_verify(
    v: &Spanned<spec::VerifySpec>,
    fx: &FileCtx,
    secrets: &dyn SecretSource,
) -> Result<Verifier, Diagnostic> {
    use crate::verify::{ed25519, template_hmac};
    let loc = Loc::of(v);
    let need = |list: Vec<Secret>, what: &str| -> Result<Vec<Secret>, Diagnostic> {
        if list.is_empty() {
            Err(fx.at(
                loc,
                format!("{what} needs a secret reference: `secret: env:NAME` (or `secrets:` for a rotation)"),
            ))
        } else {
            Ok(list)
        }
    };
    match &v.value {
        spec::VerifySpec::None => Ok(Verifier::None),
        spec::VerifySpec::Hmac(h) => {
            let secrets = need(
                secret_list(SECRET_KEYS, h.secret.as_ref(), h.secrets.as_deref(), fx, secrets)?,
                "hmac verification",
            )?;
            if http::HeaderName::try_from(h.header.value.as_str()).is_err() {
                return Err(
                    fx.at(Loc::of(&h.header), format!("`{}` is not a valid header name", h.header.value))
                );
            }
            Ok(Verifier::Hmac {
                algorithm: h.algorithm,
                encoding: h.encoding,
                header: h.header.value.to_ascii_lowercase(),
                prefix: h.prefix.clone().unwrap_or_default(),
                secrets,
            })
        }
        spec::VerifySpec::TemplateHmac(t) => {
            let keys = need(
                secret_list(SECRET_KEYS, t.secret.as_ref(), t.secrets.as_deref(), fx, secrets)?,
                "template_hmac",
            )?;
            let tolerance = match &t.tolerance {
                Some(x) => tolerance_of(x, fx)?,
                None if t.timestamp_header.is_some() => Some(Duration::from_secs(300)),
                None => None,
            };
            let config = template_hmac::TemplateHmacConfig {
                algorithm: t.algorithm,
                encoding: t.encoding,
                signature_header: t.header.clone(),
                prefix: t.prefix.clone(),
                timestamp_header: t.timestamp_header.clone(),
                template: t.template.value.clone(),
                separator: t.separator.clone(),
            };
            let built = template_hmac::TemplateHmac::new(config, keys.clone(), tolerance);
            build_scheme(&keys, built, Loc::of(&t.template), fx)
        }
        spec::VerifySpec::Ed25519(e) => {
            let keys = need(
                secret_list(
                    ["`public_key`", "`public_keys`"],
                    e.public_key.as_ref(),
                    e.public_keys.as_deref(),
                    fx,
                    secrets,
                )?,
                "ed25519",
            )?;
            let tolerance = match &e.tolerance {
                Some(x) => tolerance_of(x, fx)?,
                None if e.timestamp_header.is_some() => Some(Duration::from_secs(300)),
                None => None,
            };
            let config = ed25519::Ed25519Config {
                header: e.header.clone(),
                prefix: e.prefix.clone(),
                encoding: match e.encoding {
                    crate::verify::SigEncoding::Hex => ed25519::Ed25519Encoding::Hex,
                    crate::verify::SigEncoding::Base64 => ed25519::Ed25519Encoding::Base64,
                },
                timestamp_header: e.timestamp_header.clone(),
                tolerance,
            };
            build_scheme(&keys, ed25519::Ed25519::new(keys.clone(), config), loc, fx)
        }
        spec::VerifySpec::BasicAuth { username, password } => {
            let keys = vec![secret_at("`password`", password, fx, secrets)?];
            build_scheme(&keys, token::BasicAuth::new(username.clone(), keys.clone()), loc, fx)
        }
        spec::VerifySpec::ApiKey { header, secret: s } => {
            let keys = vec![secret_at("`secret`", s, fx, secrets)?];
            build_scheme(&keys, token::ApiKeyHeader::new(header.clone(), keys.clone()), loc, fx)
        }
        spec::VerifySpec::Token(t) => {
            let keys = need(
                secret_list(SECRET_KEYS, t.secret.as_ref(), t.secrets.as_deref(), fx, secrets)?,
                "token",
            )?;
            let location = match (&t.query, &t.header, &t.body_field) {
                (Some(q), None, None) => token::TokenLocation::Query(q.clone()),
                (None, Some(h), None) => token::TokenLocation::Header(h.clone()),
                (None, None, Some(b)) => token::TokenLocation::BodyField(b.clone()),
                _ => return Err(fx.at(loc, "token takes exactly one of `query`, `header` or `body_field`")),
            };
            build_scheme(&keys, token::SharedToken::new(location, keys.clone()), loc, fx)
        }
    }
}

/// The source's retention: never shorter than its longest route `max_age` plus the margin (an
/// event still being retried must keep its record) nor than its dedup window (a dedup key must
/// not point at a deleted event).
fn compile_retention(
    src: &spec::SourceSpec,
    route_specs: &[Spanned<spec::RouteSpec>],
    routes: &[CompiledRoute],
    dedup_window: Option<Duration>,
    fx: &FileCtx,
    diags: &mut Vec<Diagnostic>,
) -> Duration {
    let retention = match &src.retention {
        Some(r) => match duration(r, fx) {
            Ok(d) if d.is_zero() => {
                diags.push(fx.at(Loc::of(r), "retention must be positive"));
                return DEFAULT_RETENTION;
            }
            Ok(d) => d,
            Err(e) => {
                diags.push(e);
                return DEFAULT_RETENTION;
            }
        },
        None => DEFAULT_RETENTION,
    };
    // As an author writes them (`40d`, `36h`); humantime would print months of 30.44 days.
    let show = |d: Duration| match d.as_secs() {
        s if d.subsec_nanos() == 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if d.subsec_nanos() == 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if d.subsec_nanos() == 0 && s % 60 == 0 => format!("{}m", s / 60),
        _ => humantime::format_duration(d).to_string(),
    };
    let longest = routes.iter().max_by_key(|r| r.retry.max_age);
    if let Some(route) = longest
        && retention < route.retry.max_age + RETENTION_MARGIN
    {
        let need = route.retry.max_age + RETENTION_MARGIN;
        let msg = format!(
            "retention {} is shorter than route `{}`'s max_age {} plus a margin of {}: set `retention` to at least {}",
            show(retention),
            route.id,
            show(route.retry.max_age),
            show(RETENTION_MARGIN),
            show(need)
        );
        // Point at what the author wrote: the retention, else the route's max_age.
        let at = src.retention.as_ref().map(Loc::of).or_else(|| {
            route_specs.iter().find(|r| r.value.id.value == route.id.as_str()).map(|r| {
                match r.value.retry.as_ref().and_then(|x| x.value.max_age.as_ref()) {
                    Some(m) => Loc::of(m),
                    None => Loc::of(r),
                }
            })
        });
        diags.push(fx.at(at.unwrap_or_else(|| Loc::of(&src.id)), msg));
    }
    if let Some(dedup_window) = dedup_window.filter(|w| *w > retention) {
        let at = src
            .dedup
            .as_ref()
            .and_then(|d| d.value.window.as_ref().map(Loc::of))
            .or_else(|| src.retention.as_ref().map(Loc::of))
            .unwrap_or_else(|| Loc::of(&src.id));
        diags.push(fx.at(
            at,
            format!(
                "dedup window {} is longer than the retention {}: a key would outlive its event",
                show(dedup_window),
                show(retention)
            ),
        ));
    }
    retention
}

fn duration(s: &Spanned<String>, fx: &FileCtx) -> Result<Duration, Diagnostic> {
    humantime::parse_duration(s.value.trim())
        .map_err(|e| fx.at(Loc::of(s), format!("`{}` is not a duration like 30s, 5m, 24h, 7d: {e}", s.value)))
}

const METHODS: &[&str] = &["POST", "PUT", "PATCH", "DELETE", "GET"];

fn compile_route(
    r: &Spanned<spec::RouteSpec>,
    fx: &FileCtx,
    ts: &mut Templates,
    secrets: &dyn SecretSource,
) -> Result<CompiledRoute, Vec<Diagnostic>> {
    let spec = &r.value;
    let loc = Loc::of(r);
    let mut diags = Vec::new();
    if !is_valid_id(&spec.id.value) {
        diags.push(
            fx.at(Loc::of(&spec.id), format!("route id `{}` must be 1-64 of [a-z0-9_-]", spec.id.value)),
        );
    }
    let when = spec.when.as_ref().and_then(|w| Condition::compile(w, fx).map_err(|d| diags.push(d)).ok());
    let for_each = spec
        .for_each
        .as_ref()
        .and_then(|f| Selector::compile(&f.value).map_err(|e| diags.push(fx.at(Loc::of(f), e))).ok());
    let to = &spec.to.value;
    let to_loc = Loc::of(&spec.to);

    let body = match (&spec.map, &to.body, to.raw) {
        (Some(m), None, false) => {
            MapNode::compile(m, fx, ts).map(BodyPlan::Map).map_err(|d| diags.push(d)).ok()
        }
        (None, Some(b), false) => {
            let ct = to
                .content_type
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or_else(|| "application/json".into());
            let mt = crate::body::media_type(&ct);
            let escape = if mt == "application/json" || mt.ends_with("+json") {
                Escape::Json
            } else if mt == "application/x-www-form-urlencoded" {
                Escape::Form
            } else {
                Escape::Plain
            };
            ts.compile(&b.value, escape)
                .map(|template| BodyPlan::Template { template, content_type: ct })
                .map_err(|e| diags.push(fx.at(Loc::of(b), e)))
                .ok()
        }
        (None, None, true) => Some(BodyPlan::Raw),
        _ => {
            diags.push(fx.at(to_loc, "a route needs exactly one of `map`, `to.body` or `to.raw: true`"));
            None
        }
    };
    if let (Some(ct), Some(BodyPlan::Map(_)) | Some(BodyPlan::Raw)) = (&to.content_type, &body) {
        diags.push(
            fx.at(Loc::of(ct), "`content_type` applies to `to.body` templates only (`map` sends JSON)"),
        );
    }

    let url_text = to.url.value.trim();
    let url = if url_text.starts_with("env:") {
        secret(&to.url, fx, secrets)
            .and_then(|value| {
                let v = value.expose();
                if value.is_placeholder() || v.starts_with("https://") || v.starts_with("http://") {
                    Ok(UrlPlan::Secret { reference: url_text.to_string(), value })
                } else {
                    Err(fx.at(
                        Loc::of(&to.url),
                        format!("`{url_text}` must hold a URL starting with https:// or http://"),
                    ))
                }
            })
            .map_err(|d| diags.push(d))
            .ok()
    } else if !(url_text.starts_with("https://") || url_text.starts_with("http://")) {
        diags.push(fx.at(
            Loc::of(&to.url),
            format!(
                "url `{url_text}` must start with https:// or http:// (or be a secret reference `env:NAME`)"
            ),
        ));
        None
    } else if template::is_template(url_text) && template::is_template(url_origin(url_text)) {
        diags.push(fx.at(
            Loc::of(&to.url),
            "the scheme and host of `to.url` must be written out (only its path and query may use \
             `{{...}}`), or the whole URL be a secret reference `env:NAME`",
        ));
        None
    } else if template::is_template(url_text) {
        ts.compile(url_text, Escape::Url)
            .map(|template| UrlPlan::Template { template, origin: url_origin(url_text).to_string() })
            .map_err(|e| diags.push(fx.at(Loc::of(&to.url), e)))
            .ok()
    } else {
        Some(UrlPlan::Fixed(url_text.to_string()))
    };

    let method = match &to.method {
        None => "POST".to_string(),
        Some(m) => {
            let up = m.value.to_ascii_uppercase();
            if !METHODS.contains(&up.as_str()) {
                diags.push(
                    fx.at(Loc::of(m), format!("method `{}` must be one of {}", m.value, METHODS.join(", "))),
                );
            }
            up
        }
    };

    let mut headers = Vec::new();
    for (name, v) in &to.headers {
        if http::HeaderName::try_from(name.as_str()).is_err() {
            diags.push(fx.at(Loc::of(v), format!("`{name}` is not a valid header name")));
            continue;
        }
        let lname = name.to_ascii_lowercase();
        if lname == "authorization" {
            diags.push(
                fx.at(Loc::of(v), "set credentials with `auth:` (secret references), not a literal header"),
            );
            continue;
        }
        if lname == "idempotency-key" || lname == "x-hub-event-id" {
            diags.push(fx.at(
                Loc::of(v),
                format!(
                    "`{name}` is set by the hub on every request; use `idempotency_key:` to choose the \
                     Idempotency-Key value"
                ),
            ));
            continue;
        }
        let hv = if template::is_template(&v.value) {
            match ts.compile(&v.value, Escape::Plain) {
                Ok(t) => HeaderValue::Template(t),
                Err(e) => {
                    diags.push(fx.at(Loc::of(v), e));
                    continue;
                }
            }
        } else {
            HeaderValue::Fixed(v.value.clone())
        };
        headers.push((lname, hv));
    }

    let idempotency_key = to
        .idempotency_key
        .as_ref()
        .and_then(|k| ts.compile(&k.value, Escape::Plain).map_err(|e| diags.push(fx.at(Loc::of(k), e))).ok());

    if let (Some(a), Some(url)) = (&to.auth, &url)
        && let Some(reason) = url.plain_http_host()
    {
        diags.push(fx.at(
            Loc::of(a),
            format!("`auth` is sent over plain http:// only to a loopback host (the URL's host is {reason}); use https://"),
        ));
    }

    let auth = to.auth.as_ref().and_then(|a| {
        let res = match &a.value {
            spec::AuthSpec::Bearer(t) => secret(t, fx, secrets).map(Auth::Bearer),
            spec::AuthSpec::Basic { username, password } => {
                secret(password, fx, secrets).map(|p| Auth::Basic { username: username.clone(), password: p })
            }
            spec::AuthSpec::ApiKey { header, value } => {
                if http::HeaderName::try_from(header.as_str()).is_err() {
                    Err(fx.at(Loc::of(a), format!("`{header}` is not a valid header name")))
                } else {
                    secret(value, fx, secrets).map(|v| Auth::ApiKey { header: header.clone(), value: v })
                }
            }
        };
        res.map_err(|d| diags.push(d)).ok()
    });

    let mut allow_net = Vec::new();
    if let Some(list) = &to.allow_net {
        for text in &list.value {
            match crate::net::parse_network(text) {
                Some(net) => allow_net.push(net),
                None => diags.push(fx.at(
                    Loc::of(list),
                    format!("allow_net: `{text}` is not an address or CIDR network (e.g. 10.1.0.0/16)"),
                )),
            }
        }
    }
    allow_net.sort_unstable();
    allow_net.dedup();
    let allow_net_loc = to.allow_net.as_ref().map_or(loc, Loc::of);

    let retry = match &spec.retry {
        None => RetryPolicy::default(),
        Some(rs) => compile_retry(rs, fx).unwrap_or_else(|mut d| {
            diags.append(&mut d);
            RetryPolicy::default()
        }),
    };

    match (diags.is_empty(), body, url) {
        (true, Some(body), Some(url)) => Ok(CompiledRoute {
            id: RouteId::new(spec.id.value.clone()),
            loc,
            for_each,
            when,
            body,
            method,
            url,
            headers,
            idempotency_key,
            auth,
            retry,
            allow_net,
            allow_net_loc,
        }),
        _ => Err(diags),
    }
}

fn compile_retry(rs: &Spanned<spec::RetrySpec>, fx: &FileCtx) -> Result<RetryPolicy, Vec<Diagnostic>> {
    let s = &rs.value;
    let mut p = RetryPolicy::default();
    let mut diags = Vec::new();
    let mut dur = |v: &Option<Spanned<String>>, slot: &mut Duration| {
        if let Some(v) = v {
            match duration(v, fx) {
                Ok(d) => *slot = d,
                Err(e) => diags.push(e),
            }
        }
    };
    dur(&s.max_age, &mut p.max_age);
    dur(&s.initial_delay, &mut p.initial_delay);
    dur(&s.max_delay, &mut p.max_delay);
    dur(&s.timeout, &mut p.timeout);
    if let Some(m) = &s.max_attempts {
        if m.value == 0 {
            diags.push(fx.at(Loc::of(m), "max_attempts must be at least 1"));
        }
        p.max_attempts = m.value;
    }
    if let Some(m) = &s.multiplier {
        if !(1.0..=10.0).contains(&m.value) {
            diags.push(fx.at(Loc::of(m), "multiplier must be between 1 and 10"));
        }
        p.multiplier = m.value;
    }
    if let Some(j) = s.jitter {
        p.jitter = j;
    }
    if p.timeout.is_zero() || p.timeout > Duration::from_secs(300) {
        diags.push(fx.at(Loc::of(rs), "timeout must be between 1ms and 5m"));
    }
    if diags.is_empty() { Ok(p) } else { Err(diags) }
}

/// The scheme and authority of an `http(s)://` URL (`https://host:port`), or the whole text of
/// anything else (a secret reference `env:NAME`).
pub fn url_origin(url: &str) -> &str {
    let Some(scheme_end) = url.find("://") else { return url };
    let rest = &url[scheme_end + 3..];
    let end = rest.find(['/', '?', '#']).map_or(url.len(), |i| scheme_end + 3 + i);
    &url[..end]
}

/// The host of an `http://` origin unless it is loopback (`127.0.0.0/8`, `::1`, `localhost`).
fn non_loopback_http_host(origin: &str) -> Option<String> {
    let authority = origin.strip_prefix("http://")?;
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        host_port.split(':').next().unwrap_or(host_port)
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| format!("`{host}`"))
}

/// A rendered URL whose path has a `.` or `..` segment would address another resource than
/// the route was written for (URL parsers resolve them, `%2e` forms included).
fn check_rendered_url(url: &str) -> Result<(), String> {
    let rest = &url[url_origin(url).len()..];
    let path = rest.split(['?', '#']).next().unwrap_or(rest);
    for seg in path.split('/') {
        let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
        if decoded == "." || decoded == ".." {
            return Err(format!("the URL would contain the path segment `{seg}`, which is refused"));
        }
    }
    Ok(())
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
