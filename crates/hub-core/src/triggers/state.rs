//! What the hub remembers of one entity (stored as one versioned state item), and the view of it
//! that mappings see at `$.state.<entity>`.

use super::{CompiledEntity, On};
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, VecDeque};

/// Ledger entries kept per score; older ones are merged (see [`EntityState`]).
pub const MAX_LEDGER: usize = 500;
/// Fact times kept per counter.
pub const MAX_COUNTED: usize = 1_000;
/// Fact ids remembered as applied (a fact seen again within these is not applied twice).
pub const MAX_APPLIED: usize = 1_000;

/// One entity's state.
///
/// Bounds: a score keeps [`MAX_LEDGER`] entries (beyond, the two oldest are merged into one
/// that expires with the later of them); a counter keeps the [`MAX_COUNTED`] newest times in
/// its window; a journey its first touch and the newest `keep − 1`; [`MAX_APPLIED`] fact ids.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityState {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldValue>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<String, Vec<Points>>,
    /// Event times (ms) of the counted facts, oldest first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, Vec<u64>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub journeys: BTreeMap<String, Journey>,
    /// Per route (by its id): armed or not, how often and when it last fired.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub triggers: BTreeMap<String, TriggerState>,
    /// Ids of the facts applied, newest last.
    #[serde(default)]
    pub applied: VecDeque<String>,
    /// Facts applied in all.
    #[serde(default)]
    pub facts: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldValue {
    pub value: Value,
    /// What orders updates (the fact's time in ms unless the field names a version).
    pub version: Value,
    pub fact: String,
}

/// Points one fact awarded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Points {
    pub fact: String,
    pub points: f64,
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Journey {
    /// Oldest first.
    pub touches: Vec<Touch>,
    /// Touches recorded in all (including ones no longer kept).
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Touch {
    pub at: u64,
    pub fact: String,
    /// The hub source that stated it.
    pub source_id: String,
    /// Neither a `source` nor a `click_id`: a direct visit.
    pub direct: bool,
    pub data: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TriggerState {
    /// Fired (or its crossing consumed) and not yet back under its re-arm level.
    #[serde(default)]
    pub disarmed: bool,
    #[serde(default)]
    pub fires: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired_at: Option<u64>,
}

impl EntityState {
    /// A stored item (an item that does not parse as state is an error, never a reset).
    pub fn from_json(v: &Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(v.clone())
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Field values only: what `while` rules see.
    pub(crate) fn fields_view(&self) -> Map<String, Value> {
        self.fields.iter().map(|(k, f)| (k.clone(), f.value.clone())).collect()
    }

    /// A score's value at `now`: live points plus `while` points, within `min`/`max`.
    pub fn score(&self, e: &CompiledEntity, name: &str, now: UnixMillis) -> f64 {
        let Some(rule) = e.scores.iter().find(|s| s.name == name) else { return 0.0 };
        let live: f64 = self
            .scores
            .get(name)
            .map(|l| l.iter().filter(|p| p.expires.is_none_or(|x| x > now.0)).map(|p| p.points).sum())
            .unwrap_or(0.0);
        let env = json!({"state": {e.name.clone(): Value::Object(self.fields_view())}});
        let headers = crate::request::Headers::default();
        let held: f64 = rule
            .rules
            .iter()
            .filter(|r| r.while_.as_ref().is_some_and(|c| c.eval(&env, &headers)))
            .map(|r| r.points)
            .sum();
        let mut v = live + held;
        if let Some(min) = rule.min {
            v = v.max(min);
        }
        if let Some(max) = rule.max {
            v = v.min(max);
        }
        v
    }

    /// How many counted facts are in the counter's window at `now`.
    pub fn count(&self, e: &CompiledEntity, name: &str, now: UnixMillis) -> u64 {
        let Some(rule) = e.counters.iter().find(|c| c.name == name) else { return 0 };
        let from = now.0.saturating_sub(rule.window.as_millis() as u64);
        self.counters.get(name).map_or(0, |t| t.iter().filter(|t| **t > from).count() as u64)
    }

    /// A score's or counter's value at `now`.
    pub fn measure(&self, e: &CompiledEntity, name: &str, now: UnixMillis) -> f64 {
        if e.counters.iter().any(|c| c.name == name) {
            self.count(e, name, now) as f64
        } else {
            self.score(e, name, now)
        }
    }

    /// `$.state.<entity>`: fields by name, scores and counters as numbers, journeys as
    /// `{first, last, last_non_direct, all, count}`.
    pub fn view(&self, e: &CompiledEntity, now: UnixMillis) -> Value {
        let mut out = self.fields_view();
        for s in &e.scores {
            out.insert(s.name.clone(), number(self.score(e, &s.name, now)));
        }
        for c in &e.counters {
            out.insert(c.name.clone(), Value::from(self.count(e, &c.name, now)));
        }
        for j in &e.journeys {
            let journey = self.journeys.get(&j.name).cloned().unwrap_or_default();
            let all: Vec<Value> = journey.touches.iter().map(Touch::to_json).collect();
            let last_non_direct = journey
                .touches
                .iter()
                .rev()
                .find(|t| !t.direct)
                .or(journey.touches.last())
                .map(Touch::to_json);
            out.insert(
                j.name.clone(),
                json!({
                    "first": all.first().cloned().unwrap_or(Value::Null),
                    "last": all.last().cloned().unwrap_or(Value::Null),
                    "last_non_direct": last_non_direct.unwrap_or(Value::Null),
                    "all": all,
                    "count": journey.count,
                }),
            );
        }
        Value::Object(out)
    }

    /// What `hub state show` prints: the view, plus each score's ledger, each counter's times,
    /// each route's trigger state.
    pub fn explain(&self, e: &CompiledEntity, now: UnixMillis) -> Value {
        let ledger: Map<String, Value> = self
            .scores
            .iter()
            .map(|(k, l)| {
                let entries = l
                    .iter()
                    .map(|p| {
                        json!({
                            "fact": p.fact, "points": number(p.points), "at": UnixMillis(p.at).to_rfc3339(),
                            "expires": p.expires.map(|x| UnixMillis(x).to_rfc3339()),
                            "live": p.expires.is_none_or(|x| x > now.0),
                        })
                    })
                    .collect();
                (k.clone(), Value::Array(entries))
            })
            .collect();
        let triggers: Map<String, Value> = e
            .routes
            .iter()
            .map(|r| {
                let t = self.triggers.get(r.route.id.as_str()).cloned().unwrap_or_default();
                // Re-arming happens when the next fact is applied; shown as it will be then.
                let armed = match &r.on {
                    On::Crosses { measure, rearm_below, .. } => {
                        Value::Bool(!t.disarmed || self.measure(e, measure, now) < *rearm_below)
                    }
                    _ => Value::Null,
                };
                (
                    r.route.id.to_string(),
                    json!({
                        "armed": armed, "fires": t.fires,
                        "last_fired_at": t.last_fired_at.map(|x| UnixMillis(x).to_rfc3339()),
                    }),
                )
            })
            .collect();
        json!({
            "view": self.view(e, now),
            "ledger": ledger,
            "triggers": triggers,
            "facts": self.facts,
        })
    }
}

impl Touch {
    fn to_json(&self) -> Value {
        let mut m = self.data.clone();
        m.insert("at".into(), Value::String(UnixMillis(self.at).to_rfc3339()));
        m.insert("source_id".into(), Value::String(self.source_id.clone()));
        m.insert("direct".into(), Value::Bool(self.direct));
        m.insert("fact_id".into(), Value::String(self.fact.clone()));
        Value::Object(m)
    }
}

/// A whole number as an integer, otherwise a float.
pub(crate) fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}
