//! Golden examples: a sample request and the requests a mapping must produce from it.
//!
//! Each `examples/*.yaml` next to a mapping file is one case. `hub mappings test` and `cargo test`
//! run them all; a difference prints as a unified diff.
//!
//! ```yaml
//! description: a lead with UTM tags
//! env: {TYPEFORM_SECRET: test-secret}        # secrets this example signs with
//! request:
//!   headers: {Content-Type: application/json, Typeform-Signature: "sha256=..."}
//!   body_file: lead.json                     # or `body: "..."` or `json: {...}`
//! expect:
//!   deliveries:                              # [] = no route fires
//!     - route: crm-contact
//!       url: https://api.example.com/contacts
//!       headers: {content-type: application/json}   # only the listed headers are compared
//!       json: {...}                          # or `body: "..."` (exact text)
//!     - route: crm-contact                   # a route may fire more than once (`for_each`)
//!       error: "required field"              # or: must fail to render, with this in the error
//! # or: expect: {error: signature_invalid}
//! ```

use crate::evaluate::Verified;
use crate::ids::{DeliveryId, EventId};
use crate::mapping::{Diagnostic, FileCtx, compile_file};
use crate::request::{Headers, RawRequest};
use crate::secret::MapSecrets;
use crate::time::UnixMillis;
use bytes::Bytes;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleSpec {
    #[serde(default)]
    pub description: Option<String>,
    /// Values for `env:` secret references; others resolve to `<env:NAME>` placeholders.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// When the request arrived (RFC 3339); default 2024-01-01T00:00:00Z.
    #[serde(default)]
    pub received_at: Option<String>,
    pub request: RequestSpec,
    pub expect: ExpectSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Path of the body, relative to the example file.
    #[serde(default)]
    pub body_file: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub json: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// The public error code the request must be rejected with.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub dedup_key: Option<String>,
    #[serde(default)]
    pub deliveries: Option<Vec<ExpectDelivery>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectDelivery {
    pub route: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    #[serde(default)]
    pub json: Option<Value>,
    #[serde(default)]
    pub body: Option<String>,
    /// The route must fail to render with an error containing this text.
    #[serde(default)]
    pub error: Option<String>,
}

impl ExampleSpec {
    pub fn parse(name: &str, text: &str) -> Result<Self, Diagnostic> {
        let spec: ExampleSpec =
            crate::mapping::from_yaml(text).map_err(|e| FileCtx::new(name).from_yaml(&e))?;
        let n = [spec.request.body_file.is_some(), spec.request.body.is_some(), spec.request.json.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if n > 1 {
            return Err(
                FileCtx::new(name).at(Default::default(), "request takes one of body_file, body, json")
            );
        }
        if spec.expect.error.is_some() == spec.expect.deliveries.is_some() {
            return Err(FileCtx::new(name)
                .at(Default::default(), "expect takes exactly one of `error` or `deliveries`"));
        }
        Ok(spec)
    }

    /// Runs the example against the mapping `(name, text)`. `body_file` is the content of
    /// `request.body_file`, read by the caller. Returns the differences (empty = pass).
    pub fn run(&self, mapping_name: &str, mapping_text: &str, body_file: Option<Bytes>) -> Vec<String> {
        let secrets =
            MapSecrets::or_placeholders(self.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        let source = match compile_file(mapping_name, mapping_text, &secrets) {
            Ok((s, _)) => s,
            Err(diags) => return diags.iter().map(ToString::to_string).collect(),
        };
        let received_at = match self.received_at.as_deref().map(str::parse::<jiff::Timestamp>) {
            None => UnixMillis(1_704_067_200_000),
            Some(Ok(t)) => UnixMillis(u64::try_from(t.as_millisecond()).unwrap_or(0)),
            Some(Err(e)) => return vec![format!("received_at: {e}")],
        };
        let body = match (&self.request.body_file, &self.request.body, &self.request.json) {
            (Some(_), _, _) => body_file.unwrap_or_default(),
            (_, Some(b), _) => Bytes::from(b.clone()),
            (_, _, Some(j)) => Bytes::from(serde_json::to_vec(j).unwrap_or_default()),
            _ => Bytes::new(),
        };
        let mut headers: Headers =
            self.request.headers.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        if self.request.json.is_some() && headers.get("content-type").is_none() {
            headers.push("content-type", "application/json");
        }
        let req = RawRequest {
            method: self.request.method.clone().unwrap_or_else(|| "POST".into()),
            path: format!("/hooks/{}", source.id),
            query: self.request.query.clone(),
            headers,
            body,
            received_at,
            remote_addr: None,
        };
        let mut diffs = Vec::new();
        let checked = match Verified::check(&source, req) {
            Ok(v) => v,
            Err(e) => {
                let code = e.public().code.as_str();
                match &self.expect.error {
                    Some(want) if want == code => {}
                    Some(want) => diffs.push(format!("expected rejection `{want}`, got `{code}`: {e}")),
                    None => diffs.push(format!("request was rejected ({code}): {e}")),
                }
                return diffs;
            }
        };
        if let Some(want) = &self.expect.error {
            diffs.push(format!("expected rejection `{want}`, but the request was accepted"));
            return diffs;
        }
        let event_id = EventId::new("evt_example");
        if let Some(want) = &self.expect.dedup_key {
            let got = checked.dedup(&event_id).map(|(k, _)| k);
            if got.as_deref() != Some(want.as_str()) {
                diffs.push(format!("dedup key: expected `{want}`, got {got:?}"));
            }
        }
        // Routes render from the stored (redacted) copy, as a dispatch does.
        let stored = match checked.redacted() {
            Ok(x) => x,
            Err(e) => {
                diffs.push(format!("the stored copy of the request does not parse: {e}"));
                return diffs;
            }
        };
        let mut n = 0;
        let rendered = match stored.plan(&event_id, &mut || {
            n += 1;
            DeliveryId::new(format!("dlv_example_{n}"))
        }) {
            Ok(plan) => plan.rendered,
            Err(e) => {
                diffs.push(format!("the event was refused: {e}"));
                return diffs;
            }
        };
        let want = self.expect.deliveries.as_deref().unwrap_or_default();
        let got_routes: Vec<&str> = rendered.iter().map(|r| r.route.as_str()).collect();
        let want_routes: Vec<&str> = want.iter().map(|w| w.route.as_str()).collect();
        if got_routes != want_routes {
            diffs.push(format!("routes fired: expected {want_routes:?}, got {got_routes:?}"));
            return diffs;
        }
        for (w, r) in want.iter().zip(&rendered) {
            let route = &w.route;
            let mut out = match (&r.result, &w.error) {
                (Ok(o), None) => o.clone(),
                (Err(e), None) => {
                    diffs.push(format!("route `{route}`: rendering failed: {e}"));
                    continue;
                }
                (Err(e), Some(want)) => {
                    if !e.0.contains(want.as_str()) {
                        diffs.push(format!(
                            "route `{route}`: expected an error containing {want:?}, got: {e}"
                        ));
                    }
                    continue;
                }
                (Ok(_), Some(want)) => {
                    diffs.push(format!(
                        "route `{route}`: expected an error containing {want:?}, but it rendered"
                    ));
                    continue;
                }
            };
            if let Some(auth) = source.route(&r.route).and_then(|rt| rt.auth.as_ref()) {
                out.headers.push(auth.header());
            }
            if let Some(m) = &w.method
                && !m.eq_ignore_ascii_case(&out.method)
            {
                diffs.push(format!("route `{route}`: method: expected {m}, got {}", out.method));
            }
            if let Some(u) = &w.url
                && u != &out.url
            {
                diffs.push(format!("route `{route}`: url:\n  expected {u}\n  got      {}", out.url));
            }
            for (k, v) in &w.headers {
                match out.header(k) {
                    Some(got) if got == v => {}
                    got => diffs.push(format!("route `{route}`: header `{k}`: expected {v:?}, got {got:?}")),
                }
            }
            if let Some(j) = &w.json {
                match serde_json::from_slice::<Value>(&out.body) {
                    Ok(got) if json_eq(&got, j) => {}
                    Ok(got) => {
                        diffs.push(format!("route `{route}`: json body differs:\n{}", diff_json(j, &got)))
                    }
                    Err(e) => diffs.push(format!("route `{route}`: body is not JSON ({e})")),
                }
            }
            if let Some(b) = &w.body {
                let got = String::from_utf8_lossy(&out.body);
                if got != *b {
                    diffs.push(format!("route `{route}`: body differs:\n{}", diff_text(b, &got)));
                }
            }
        }
        diffs
    }
}

/// JSON equality where numbers compare by value (`19` equals `19.0`: YAML and arithmetic helpers
/// may write the same number either way; destinations read them alike).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// A unified diff of two JSON documents, pretty-printed.
pub fn diff_json(expected: &Value, got: &Value) -> String {
    let a = serde_json::to_string_pretty(expected).unwrap_or_default();
    let b = serde_json::to_string_pretty(got).unwrap_or_default();
    diff_text(&a, &b)
}

pub fn diff_text(expected: &str, got: &str) -> String {
    similar::TextDiff::from_lines(expected, got)
        .unified_diff()
        .context_radius(3)
        .header("expected", "got")
        .to_string()
}
