//! A route: `for_each`, `when`, the body (`map`, `to.body` or `to.raw`), `to.url`, method,
//! headers, idempotency key, auth, `allow_net` and its retry schedule.

use super::super::condition::Condition;
use super::super::diag::{Diagnostic, FileCtx};
use super::super::node::Loc;
use super::super::selector::Selector;
use super::super::template::{self, Escape, Templates};
use super::super::url::url_origin;
use super::super::value::MapNode;
use super::super::{Auth, BodyPlan, CompiledRoute, HeaderValue, UrlPlan, spec};
use super::retry::compile_retry;
use super::verify::secret;
use crate::ids::{RouteId, is_valid_id};
use crate::retry::RetryPolicy;
use crate::secret::SecretSource;
use serde_saphyr::Spanned;

/// Every route of the file, in order; a repeated id or an empty list is a diagnostic.
pub(crate) fn compile_routes(
    specs: &[Spanned<spec::RouteSpec>],
    fx: &FileCtx,
    templates: &mut Templates,
    secrets: &dyn SecretSource,
    diags: &mut Vec<Diagnostic>,
) -> Vec<CompiledRoute> {
    let mut routes: Vec<CompiledRoute> = Vec::new();
    for r in specs {
        match compile_route(r, fx, templates, secrets) {
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
    routes
}

/// A source file's routes: at least one, none with the trigger keys of entity routes.
pub(super) fn source_routes(
    spec: &spec::FileSpec,
    fx: &FileCtx,
    templates: &mut Templates,
    secrets: &dyn SecretSource,
    diags: &mut Vec<Diagnostic>,
) -> Vec<CompiledRoute> {
    for r in &spec.routes {
        let r = &r.value;
        let trigger_key =
            r.on.as_ref()
                .map(|n| ("on", n.loc))
                .or(r.rearm.as_ref().map(|n| ("rearm", n.loc)))
                .or(r.cooldown.as_ref().map(|c| ("cooldown", Loc::of(c))))
                .or(r.max_fires.as_ref().map(|m| ("max_fires", Loc::of(m))));
        if let Some((key, loc)) = trigger_key {
            diags.push(fx.at(
                loc,
                format!(
                    "`{key}` belongs to routes of an entity file (`entity: ...`); a source's route \
                     fires on each webhook its `when` matches"
                ),
            ));
        }
    }
    if spec.routes.is_empty() {
        diags.push(fx.at(Loc::of(&spec.source), "a mapping file needs at least one route under `routes`"));
    }
    compile_routes(&spec.routes, fx, templates, secrets, diags)
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
    let for_each = spec.for_each.as_ref().and_then(|f| {
        Selector::compile(&f.value).map_err(|e| diags.push(fx.at(Loc::of(f), e.to_string()))).ok()
    });
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
                .map_err(|e| diags.push(fx.at(Loc::of(b), e.to_string())))
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
            .map_err(|e| diags.push(fx.at(Loc::of(&to.url), e.to_string())))
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
                    diags.push(fx.at(Loc::of(v), e.to_string()));
                    continue;
                }
            }
        } else {
            HeaderValue::Fixed(v.value.clone())
        };
        headers.push((lname, hv));
    }

    let idempotency_key = to.idempotency_key.as_ref().and_then(|k| {
        ts.compile(&k.value, Escape::Plain).map_err(|e| diags.push(fx.at(Loc::of(k), e.to_string()))).ok()
    });

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
