//! Applying one fact to one entity's state: a pure function of (entity file, state, fact,
//! the webhook's envelope, now), so every shell, the scenario runner and a retry after a
//! conflicting write compute the same next state and the same fires.
//!
//! Semantics:
//! - A fact already applied (its id is remembered) changes nothing and fires nothing.
//! - Fields: last write wins by `(version, fact id)`; an older update changes nothing.
//! - Scores: each matching `on` rule adds an entry that expires `expire_after` after the fact's
//!   time; `while` rules count while their condition on the fields holds; `min`/`max` clamp.
//! - Counters count matching facts whose time is inside the sliding window (event time).
//! - `crosses`/`reaches` fire when the value is at or above the threshold and the route is
//!   armed (and its `when` holds); firing disarms it, and it re-arms once the value is under
//!   `rearm.below` (checked before and after each fact, with expired points gone). A crossing
//!   that `cooldown` or `max_fires` holds back also disarms.
//! - `changes` fires when a field's stored value changes; `$.trigger.from`/`to` hold both.
//! - Routes fire at processing time (`now`); state is kept in event time.

use super::state::{EntityState, FieldValue, MAX_APPLIED, MAX_COUNTED, MAX_LEDGER, Points, Touch};
use super::{CompiledEntity, Fact, Fire, On, fire_id};
use crate::mapping::condition::loose_eq;
use crate::mapping::template::Env;
use crate::request::Headers;
use crate::time::UnixMillis;
use serde_json::{Map, Value, json};
use std::cmp::Ordering;

/// What a fact did to an entity.
#[derive(Debug)]
pub struct Applied {
    pub state: EntityState,
    /// False when the fact had been applied already: nothing to write, nothing fired.
    pub changed: bool,
    /// Fields whose update was older than the stored one (and so ignored).
    pub stale: Vec<String>,
    pub fires: Vec<Fire>,
}

/// Applies `fact` to `state` at `now`. `base` is the envelope of the webhook that stated it
/// (`$.body`, `$.event`, ...); rules and routes see it with `$.fact`, `$.state`, `$.entity`
/// and, for routes, `$.trigger`.
pub fn apply(
    e: &CompiledEntity,
    mut state: EntityState,
    fact: &Fact,
    base: &Value,
    now: UnixMillis,
) -> Applied {
    if state.applied.iter().any(|id| id == &fact.id) {
        return Applied { state, changed: false, stale: Vec::new(), fires: Vec::new() };
    }
    let key = fact.state_key();
    rearm(e, &mut state, now);
    prune(e, &mut state, now);
    let env = envelope(e, base, fact, &state.view(e, now), None);
    let env = Env::owned(env);
    let headers = Headers::default();
    let holds = |c: &Option<crate::mapping::condition::Condition>| {
        c.as_ref().is_none_or(|c| c.eval(env.value(), &headers))
    };
    let render = |n: &crate::mapping::value::MapNode| n.render(&env, &e.templates, &e.fx).ok().flatten();

    // Fields, last write wins.
    let mut changes: Vec<(String, Option<Value>, Value)> = Vec::new();
    let mut stale = Vec::new();
    for f in e.fields.iter().filter(|f| f.from.contains(&fact.name)) {
        let Some(value) = render(&f.value) else { continue };
        let version = f.version.as_ref().and_then(render).unwrap_or_else(|| Value::from(fact.at.0));
        let newer = match state.fields.get(&f.name) {
            None => true,
            Some(old) => match compare_versions(&version, &old.version) {
                Ordering::Greater => true,
                Ordering::Equal => fact.id > old.fact,
                Ordering::Less => false,
            },
        };
        if !newer {
            stale.push(f.name.clone());
            continue;
        }
        let old = state
            .fields
            .insert(f.name.clone(), FieldValue { value: value.clone(), version, fact: fact.id.clone() });
        let old = old.map(|o| o.value);
        if old.as_ref().is_none_or(|o| !loose_eq(o, &value) || o.is_null() != value.is_null()) {
            changes.push((f.name.clone(), old, value));
        }
    }

    // Scores.
    for s in &e.scores {
        let expires = s.expire_after.map(|d| fact.at.plus(d).0);
        if expires.is_some_and(|x| x <= now.0) {
            continue;
        }
        for r in s.rules.iter().filter(|r| r.on.contains(&fact.name) && holds(&r.when)) {
            let ledger = state.scores.entry(s.name.clone()).or_default();
            let at = ledger.partition_point(|p| p.at <= fact.at.0);
            ledger.insert(at, Points { fact: fact.id.clone(), points: r.points, at: fact.at.0, expires });
            if ledger.len() > MAX_LEDGER {
                let second = ledger.remove(1);
                let first = &mut ledger[0];
                first.points += second.points;
                first.expires = match (first.expires, second.expires) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                first.fact = "merged".into();
            }
        }
    }

    // Counters.
    for c in e.counters.iter().filter(|c| c.on.contains(&fact.name) && holds(&c.when)) {
        if fact.at.0 <= now.0.saturating_sub(c.window.as_millis() as u64) {
            continue;
        }
        let times = state.counters.entry(c.name.clone()).or_default();
        let at = times.partition_point(|t| *t <= fact.at.0);
        times.insert(at, fact.at.0);
        if times.len() > MAX_COUNTED {
            times.remove(0);
        }
    }

    // Journeys.
    for j in e.journeys.iter().filter(|j| j.from.contains(&fact.name) && holds(&j.when)) {
        let data: Map<String, Value> = j
            .touch
            .iter()
            .filter_map(|(k, n)| render(n).filter(|v| !v.is_null()).map(|v| (k.clone(), v)))
            .collect();
        let has = |k: &str| data.get(k).is_some_and(|v| v.as_str() != Some(""));
        let direct = !has("source") && !has("click_id");
        let journey = state.journeys.entry(j.name.clone()).or_default();
        if journey.touches.iter().any(|t| t.fact == fact.id) {
            continue;
        }
        let at = journey.touches.partition_point(|t| t.at <= fact.at.0);
        let same =
            |t: &Touch| ["source", "medium", "campaign"].iter().all(|k| t.data.get(*k) == data.get(*k));
        let repeat = j.same_within.is_some_and(|w| {
            at > 0 && {
                let prev = &journey.touches[at - 1];
                same(prev) && fact.at.0.saturating_sub(prev.at) <= w.as_millis() as u64
            }
        });
        if repeat {
            continue;
        }
        journey.touches.insert(
            at,
            Touch { at: fact.at.0, fact: fact.id.clone(), source_id: fact.source.to_string(), direct, data },
        );
        journey.count += 1;
        if journey.touches.len() > j.keep {
            journey.touches.remove(1);
        }
    }

    state.applied.push_back(fact.id.clone());
    while state.applied.len() > MAX_APPLIED {
        state.applied.pop_front();
    }
    state.facts += 1;
    rearm(e, &mut state, now);

    // Routes.
    let view = state.view(e, now);
    let mut fires = Vec::new();
    for (i, r) in e.routes.iter().enumerate() {
        let rid = r.route.id.to_string();
        let t = state.triggers.get(&rid).cloned().unwrap_or_default();
        let (trigger, occurrence, crossing) = match &r.on {
            On::Fact(names) if names.contains(&fact.name) => {
                (json!({"kind": "fact", "fact": fact.name}), fact.id.clone(), false)
            }
            On::Changes { field, from, to } => {
                let Some((_, old, new)) = changes.iter().find(|(f, ..)| f == field) else { continue };
                if !from.as_ref().is_none_or(|m| m.matches(old.as_ref()))
                    || !to.as_ref().is_none_or(|m| m.matches(Some(new)))
                {
                    continue;
                }
                (
                    json!({"kind": "changes", "field": field, "from": old.clone().unwrap_or(Value::Null), "to": new}),
                    fact.id.clone(),
                    false,
                )
            }
            On::Crosses { measure, above, .. } => {
                if t.disarmed {
                    continue;
                }
                let value = state.measure(e, measure, now);
                if value < *above {
                    continue;
                }
                let kind = if e.counters.iter().any(|c| &c.name == measure) { "reaches" } else { "crosses" };
                (
                    json!({"kind": kind, "measure": measure, "value": super::state::number(value), "threshold": super::state::number(*above)}),
                    format!("crossing-{}", t.fires + 1),
                    true,
                )
            }
            On::Fact(_) => continue,
        };
        let held = r.max_fires.is_some_and(|m| t.fires >= m)
            || r.cooldown.zip(t.last_fired_at).is_some_and(|(c, last)| UnixMillis(last).plus(c) > now);
        let id = fire_id(&rid, &key, &occurrence);
        let mut trigger = trigger;
        if let Value::Object(m) = &mut trigger {
            m.insert("route".into(), Value::String(rid.clone()));
            m.insert("at".into(), Value::String(now.to_rfc3339()));
            m.insert("fire_id".into(), Value::String(id.clone()));
        }
        let env = envelope(e, base, fact, &view, Some(trigger));
        if held {
            if crossing {
                state.triggers.entry(rid).or_default().disarmed = true;
            }
            continue;
        }
        if !r.route.holds(&env) {
            continue;
        }
        let ts = state.triggers.entry(rid).or_default();
        ts.fires += 1;
        ts.last_fired_at = Some(now.0);
        if crossing {
            ts.disarmed = true;
        }
        fires.push(Fire { route: i, id, envelope: env });
    }
    Applied { state, changed: true, stale, fires }
}

/// Re-arms each disarmed `crosses`/`reaches` route whose value is under its re-arm level.
fn rearm(e: &CompiledEntity, state: &mut EntityState, now: UnixMillis) {
    for r in &e.routes {
        if let On::Crosses { measure, rearm_below, .. } = &r.on {
            let id = r.route.id.as_str();
            if state.triggers.get(id).is_some_and(|t| t.disarmed)
                && state.measure(e, measure, now) < *rearm_below
                && let Some(t) = state.triggers.get_mut(id)
            {
                t.disarmed = false;
            }
        }
    }
}

/// Drops expired points and counted times outside their window.
fn prune(e: &CompiledEntity, state: &mut EntityState, now: UnixMillis) {
    for (name, ledger) in state.scores.iter_mut() {
        if e.scores.iter().any(|s| &s.name == name) {
            ledger.retain(|p| p.expires.is_none_or(|x| x > now.0));
        }
    }
    for c in &e.counters {
        let from = now.0.saturating_sub(c.window.as_millis() as u64);
        if let Some(t) = state.counters.get_mut(&c.name) {
            t.retain(|t| *t > from);
        }
    }
    state.scores.retain(|_, l| !l.is_empty());
    state.counters.retain(|_, t| !t.is_empty());
}

/// The envelope rules and routes see: the webhook's, with `$.fact`, `$.state`, `$.entity` and
/// (for routes) `$.trigger`.
pub fn envelope(
    e: &CompiledEntity,
    base: &Value,
    fact: &Fact,
    view: &Value,
    trigger: Option<Value>,
) -> Value {
    let mut env = match base {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    env.insert("fact".into(), fact.to_json());
    env.insert("state".into(), json!({e.name.clone(): view}));
    env.insert("entity".into(), json!({e.name.clone(): {"id": fact.key}}));
    if let Some(t) = trigger {
        env.insert("trigger".into(), t);
    }
    Value::Object(env)
}

/// Orders two versions: numbers numerically, RFC 3339 times as instants, other text as text.
fn compare_versions(a: &Value, b: &Value) -> Ordering {
    let instant = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => super::instant_of(v).map(|t| t.0 as f64).or_else(|| s.parse().ok()),
        _ => None,
    };
    match (instant(a), instant(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.to_string().cmp(&b.to_string()),
    }
}
