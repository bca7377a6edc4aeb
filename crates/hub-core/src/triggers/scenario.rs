//! Scenario files: facts or real webhooks in, on a test clock, and strict expectations on the
//! deliveries the triggers make and on entity state. `hub mappings test` and `cargo test` run
//! every `scenarios/*.yaml` under the mappings directory against the whole mapping set.
//!
//! ```yaml
//! description: Opens and clicks make Ann hot once; points expire; she re-arms.
//! clock: 2026-03-02T09:00:00Z          # the test clock starts here and never goes back
//! entity: contact                      # what `fact` steps are about unless they say
//! env: {SITE_TOKEN: t}                 # secrets the `send` steps' sources use
//! steps:
//!   - fact: {entity: contact, name: email.opened, key: ann@example.com, data: {message_id: m1}}
//!   - fact: {name: email.clicked, key: ann@example.com, at: +1h}   # event time; +dur is from the clock
//!   - send: {source: site-events, json: {...}, headers: {...}}     # a webhook through its source
//!   - advance: 31d                                                 # the clock moves on
//!   - expect:
//!       deliveries:                    # exactly these since the previous `expect`, in order
//!         - {route: hot-lead, json: {score: 20}}                   # `json`: these keys, these values
//!       state:
//!         contact/ann@example.com: {lead_score: 19, armed: {hot-lead: false}}
//! permute: [open-m3, sent-m3]          # steps (by `id`) that also run in every other order
//! ```
//!
//! A step's `at` is the fact's event time; the step is received at the later of the clock and
//! `at` (so an `at` in the past is a late arrival), and the clock moves there. With `permute`,
//! every order of the named steps must meet every expectation and end in the same state.

use super::state::EntityState;
use super::{Fact, Loaded};
use crate::evaluate::Verified;
use crate::event::DeliveryRecord;
use crate::ids::{EventId, SourceId};
use crate::mapping::MappingSet;
use crate::ports::state::StateKey;
use crate::request::{Headers, RawRequest};
use crate::time::UnixMillis;
use bytes::Bytes;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    #[serde(default)]
    pub description: Option<String>,
    pub clock: String,
    /// The entity `fact` steps are about when they do not say (default: the set's only one).
    #[serde(default)]
    pub entity: Option<String>,
    #[serde(default)]
    pub env: IndexMap<String, String>,
    pub steps: Vec<StepSpec>,
    #[serde(default)]
    pub permute: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub fact: Option<FactStep>,
    #[serde(default)]
    pub send: Option<SendStep>,
    #[serde(default)]
    pub advance: Option<String>,
    #[serde(default)]
    pub expect: Option<ExpectStep>,
    /// Event time of a `fact`, or receipt time of a `send`: RFC 3339 or `+dur` from the clock.
    #[serde(default)]
    pub at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactStep {
    /// Default: the set's only entity.
    #[serde(default)]
    pub entity: Option<String>,
    pub name: String,
    pub key: String,
    #[serde(default)]
    pub at: Option<String>,
    #[serde(default)]
    pub data: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendStep {
    pub source: String,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    #[serde(default)]
    pub json: Option<Value>,
    #[serde(default)]
    pub body: Option<String>,
    /// Path of the body, relative to the scenario file.
    #[serde(default)]
    pub body_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectStep {
    #[serde(default)]
    pub deliveries: Option<Vec<ExpectDelivery>>,
    #[serde(default)]
    pub state: IndexMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectDelivery {
    /// The route id (`hot-lead`, or in full `contact.hot-lead`).
    pub route: String,
    #[serde(default)]
    pub url: Option<String>,
    /// Keys the JSON body must have, with these values.
    #[serde(default)]
    pub json: Option<Value>,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
}

/// Runs a scenario; `Err` says every expectation that failed. `read` loads `body_file`s.
pub fn run(
    set: &MappingSet,
    spec: &ScenarioSpec,
    read: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<(), String> {
    let start = parse_instant(&spec.clock)
        .ok_or_else(|| format!("clock `{}` is not an RFC 3339 time", spec.clock))?;
    let order: Vec<usize> = (0..spec.steps.len()).collect();
    let first = run_order(set, spec, &order, start, read)?;
    if spec.permute.is_empty() {
        return Ok(());
    }
    let slots: Vec<usize> = spec
        .permute
        .iter()
        .map(|id| {
            spec.steps
                .iter()
                .position(|s| s.id.as_deref() == Some(id.as_str()))
                .ok_or_else(|| format!("permute: no step has id `{id}`"))
        })
        .collect::<Result<_, _>>()?;
    if slots.len() > 6 {
        return Err("permute: at most 6 steps (720 orders)".into());
    }
    let mut sorted = slots.clone();
    sorted.sort_unstable();
    for perm in permutations(&slots) {
        let mut order = order.clone();
        for (slot, step) in sorted.iter().zip(&perm) {
            order[*slot] = *step;
        }
        let ids: Vec<&str> = perm.iter().map(|i| spec.steps[*i].id.as_deref().unwrap_or("?")).collect();
        let end =
            run_order(set, spec, &order, start, read).map_err(|e| format!("in the order {ids:?}: {e}"))?;
        if end != first {
            return Err(format!(
                "in the order {ids:?} the final state differs:\n  first order: {}\n  this order:  {}",
                serde_json::to_string(&first).unwrap_or_default(),
                serde_json::to_string(&end).unwrap_or_default()
            ));
        }
    }
    Ok(())
}

fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let x = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, x);
            out.push(p);
        }
    }
    out
}

/// Each entity's view at the end, by state key.
type EndState = BTreeMap<String, Value>;

fn run_order(
    set: &MappingSet,
    spec: &ScenarioSpec,
    order: &[usize],
    start: UnixMillis,
    read: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<EndState, String> {
    let mut clock = start;
    let mut states: BTreeMap<StateKey, EntityState> = BTreeMap::new();
    let mut made: Vec<DeliveryRecord> = Vec::new();
    let mut failures = Vec::new();
    for &i in order {
        let step = &spec.steps[i];
        let name = step.id.clone().unwrap_or_else(|| format!("step {}", i + 1));
        let at = |text: Option<&String>, clock: UnixMillis| -> Result<Option<UnixMillis>, String> {
            text.map(|t| {
                instant(t, clock).ok_or_else(|| format!("{name}: `{t}` is not an RFC 3339 time or +duration"))
            })
            .transpose()
        };
        if let Some(f) = &step.fact {
            let entity = match f.entity.as_ref().or(spec.entity.as_ref()) {
                Some(e) => e.clone(),
                None if set.entities.len() == 1 => set.entities.keys().next().cloned().unwrap_or_default(),
                None => return Err(format!("{name}: say which `entity` the fact is about")),
            };
            if !set.entities.contains_key(&entity) {
                return Err(format!("{name}: no entity `{entity}`"));
            }
            let when = at(f.at.as_ref().or(step.at.as_ref()), clock)?.unwrap_or(clock);
            clock = clock.max(when);
            let fact = Fact {
                id: format!("scenario/{}", step.id.clone().unwrap_or_else(|| i.to_string())),
                name: f.name.clone(),
                entity,
                key: f.key.clone(),
                at: when,
                data: f.data.clone(),
                source: SourceId::new("scenario"),
            };
            let base = serde_json::json!({"event": {"id": fact.id, "source": "scenario", "received_at": clock.to_rfc3339()}});
            let req = RawRequest {
                method: "POST".into(),
                path: "/scenario".into(),
                query: None,
                headers: Headers::default(),
                body: Bytes::new(),
                received_at: clock,
                remote_addr: None,
            };
            made.extend(apply_facts(set, std::slice::from_ref(&fact), &mut states, &base, &req, clock).0);
        }
        if let Some(s) = &step.send {
            let when = at(step.at.as_ref(), clock)?.unwrap_or(clock);
            clock = clock.max(when);
            let source = set.source(&s.source).ok_or_else(|| format!("{name}: no source `{}`", s.source))?;
            let body = match (&s.json, &s.body, &s.body_file) {
                (Some(j), None, None) => serde_json::to_vec(j).unwrap_or_default(),
                (None, Some(b), None) => b.clone().into_bytes(),
                (None, None, Some(f)) => read(f).map_err(|e| format!("{name}: {e}"))?,
                _ => return Err(format!("{name}: a send needs exactly one of `json`, `body`, `body_file`")),
            };
            let mut headers: Vec<(String, String)> =
                s.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
            if s.json.is_some() && !headers.iter().any(|(k, _)| k == "content-type") {
                headers.push(("content-type".into(), "application/json".into()));
            }
            let req = RawRequest {
                method: "POST".into(),
                path: format!("/hooks/{}", s.source),
                query: s.query.clone(),
                headers: Headers(headers),
                body: Bytes::from(body),
                received_at: clock,
                remote_addr: None,
            };
            let checked =
                Verified::check(source, req).map_err(|e| format!("{name}: the webhook was refused: {e}"))?;
            let stored = checked.redacted().map_err(|e| format!("{name}: {e}"))?;
            let id = EventId::new(format!("evt_scenario_{i}"));
            let facts: Vec<Fact> = stored
                .facts(&id, set)
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{name}: {e}"))?;
            let base = stored.envelope(&id);
            let (fired, loaded) = apply_facts(set, &facts, &mut states, &base, stored.request(), clock);
            let extra = super::fact_envelope(&facts, &loaded, set, clock);
            let mut ids = crate::ids::DeliveryId::generate;
            let plan = stored.plan_with(&id, extra, &mut ids).map_err(|e| format!("{name}: {e}"))?;
            made.extend(plan.deliveries(clock));
            made.extend(fired);
        }
        if let Some(a) = &step.advance {
            let d = humantime::parse_duration(a.trim()).map_err(|e| format!("{name}: advance `{a}`: {e}"))?;
            clock = clock.plus(d);
        }
        if let Some(e) = &step.expect {
            if let Some(want) = &e.deliveries {
                failures.extend(compare_deliveries(&name, want, &made));
            }
            for (key, want) in &e.state {
                failures.extend(compare_state(&name, set, &states, key, want, clock));
            }
            made.clear();
        }
    }
    if !made.is_empty() {
        let routes: Vec<&str> = made.iter().map(|d| d.route.as_str()).collect();
        failures.push(format!("deliveries after the last `expect` that no `expect` lists: {routes:?}"));
    }
    if !failures.is_empty() {
        return Err(failures.join("\n"));
    }
    Ok(states
        .iter()
        .filter_map(|(k, s)| {
            let entity = set.entities.get(k.as_str().split('/').next()?)?;
            Some((k.to_string(), s.explain(entity, clock)))
        })
        .collect())
}

/// Applies facts to the scenario's states; the deliveries fired and the states as loaded.
fn apply_facts(
    set: &MappingSet,
    facts: &[Fact],
    states: &mut BTreeMap<StateKey, EntityState>,
    base: &Value,
    req: &RawRequest,
    now: UnixMillis,
) -> (Vec<DeliveryRecord>, Vec<Loaded>) {
    let mut loaded: Vec<Loaded> = Vec::new();
    for f in facts {
        let key = f.state_key();
        if !loaded.iter().any(|l| l.key == key) {
            let state = states.get(&key).cloned().unwrap_or_default();
            loaded.push(Loaded { key, state, version: 0, changed: false });
        }
    }
    let fired = super::apply_all(set, facts, &mut loaded, base, req, now);
    for l in &loaded {
        states.insert(l.key.clone(), l.state.clone());
    }
    (fired, loaded)
}

fn compare_deliveries(step: &str, want: &[ExpectDelivery], got: &[DeliveryRecord]) -> Vec<String> {
    let shown: Vec<String> = got.iter().map(describe).collect();
    if want.len() != got.len() {
        return vec![format!(
            "{step}: expected {} deliveries, got {}:\n    {}",
            want.len(),
            got.len(),
            if shown.is_empty() { "(none)".to_string() } else { shown.join("\n    ") }
        )];
    }
    let mut out = Vec::new();
    for (n, (w, d)) in want.iter().zip(got).enumerate() {
        let route = d.route.as_str();
        if route != w.route && route.split_once('.').map(|(_, r)| r) != Some(w.route.as_str()) {
            out.push(format!("{step}: delivery {}: expected route `{}`, got {}", n + 1, w.route, shown[n]));
            continue;
        }
        let Some(req) = &d.request else {
            out.push(format!(
                "{step}: delivery {} did not render: {}",
                n + 1,
                d.last_error.as_deref().unwrap_or("")
            ));
            continue;
        };
        if let Some(url) = &w.url
            && url != &req.url
        {
            out.push(format!("{step}: delivery {}: expected url {url}, got {}", n + 1, req.url));
        }
        for (k, v) in &w.headers {
            let got = req.headers.iter().find(|(h, _)| h.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str());
            if got != Some(v.as_str()) {
                out.push(format!("{step}: delivery {}: header {k}: expected {v:?}, got {got:?}", n + 1));
            }
        }
        if let Some(j) = &w.json {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            if let Some(diff) = subset(j, &body, "$") {
                out.push(format!("{step}: delivery {}: {diff}\n    body: {body}", n + 1));
            }
        }
    }
    out
}

fn describe(d: &DeliveryRecord) -> String {
    match &d.request {
        Some(r) => format!("{} {}", d.route, String::from_utf8_lossy(&r.body)),
        None => format!("{} (not rendered: {})", d.route, d.last_error.as_deref().unwrap_or("")),
    }
}

fn compare_state(
    step: &str,
    set: &MappingSet,
    states: &BTreeMap<StateKey, EntityState>,
    key: &str,
    want: &Value,
    now: UnixMillis,
) -> Vec<String> {
    let Some((entity, _)) = key.split_once('/') else {
        return vec![format!("{step}: state key `{key}` is `<entity>/<key>`")];
    };
    let Some(e) = set.entities.get(entity) else { return vec![format!("{step}: no entity `{entity}`")] };
    let state = states.get(&StateKey::new(entity, &key[entity.len() + 1..])).cloned().unwrap_or_default();
    let explained = state.explain(e, now);
    let mut want = want.clone();
    let mut out = Vec::new();
    if let Some(armed) = want.as_object_mut().and_then(|m| m.remove("armed")) {
        for (route, expected) in armed.as_object().into_iter().flatten() {
            let full = format!("{entity}.{route}");
            let got = explained.pointer(&format!("/triggers/{}/armed", full.replace('/', "~1"))).cloned();
            if got.as_ref() != Some(expected) {
                out.push(format!("{step}: {key}: route `{route}` armed: expected {expected}, got {got:?}"));
            }
        }
    }
    if let Some(diff) = subset(&want, &explained["view"], "$") {
        out.push(format!("{step}: {key}: {diff}\n    state: {}", explained["view"]));
    }
    out
}

/// Where `got` differs from `want` (every key of `want` must be in `got` with an equal value).
fn subset(want: &Value, got: &Value, path: &str) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().find_map(|(k, v)| match g.get(k) {
            None => Some(format!("{path}.{k}: expected {v}, absent")),
            Some(gv) => subset(v, gv, &format!("{path}.{k}")),
        }),
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => None,
        (w, g) if w == g => None,
        (w, g) => Some(format!("{path}: expected {w}, got {g}")),
    }
}

fn parse_instant(s: &str) -> Option<UnixMillis> {
    super::instant_of(&Value::String(s.to_string()))
}

/// `+dur` from `clock`, or an RFC 3339 time.
fn instant(s: &str, clock: UnixMillis) -> Option<UnixMillis> {
    match s.trim().strip_prefix('+') {
        Some(d) => humantime::parse_duration(d.trim()).ok().map(|d: Duration| clock.plus(d)),
        None => parse_instant(s),
    }
}
