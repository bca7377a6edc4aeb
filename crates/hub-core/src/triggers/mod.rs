//! Stateful triggers: sources state **facts** about **entities** (a contact, a deal), entity
//! files declare what the hub remembers of each entity (fields, scores, counters, journeys) and
//! the routes that fire when that state moves (a fact, a threshold crossed, a field changed).
//!
//! ```yaml
//! # mappings/_entities/contact.yaml
//! entity: contact
//! fields:
//!   job_title: {from: crm.contact_updated, value: $.fact.data.job_title}
//! scores:
//!   lead_score:
//!     rules:
//!       - {on: email.opened, points: 1}
//!       - {while: {path: $.state.contact.job_title, contains: owner}, points: 10}
//!     expire_after: 30d
//! routes:
//!   - id: hot-lead
//!     on: {crosses: lead_score, above: 20}
//!     map: {email: $.entity.contact.id, score: $.trigger.value}
//!     to: {url: https://crm.example.com/api/tasks}
//! ```
//!
//! Applying a fact is a pure function ([`apply::apply`]) from an entity's state, the fact and
//! the clock to the next state and the routes it fires; the pipeline commits the new state
//! together with the deliveries of the fires, on condition that the state is still the version
//! it read, so concurrent facts about one entity never both fire one crossing.

pub mod apply;
pub(crate) mod compile;
pub mod scenario;
pub mod spec;
pub mod state;

use crate::event::DeliveryRecord;
use crate::ids::{DeliveryId, EventId, SourceId};
use crate::mapping::condition::Condition;
use crate::mapping::diag::FileCtx;
use crate::mapping::node::Loc;
use crate::mapping::selector::Selector;
use crate::mapping::template::{Env, Templates};
use crate::mapping::value::MapNode;
use crate::mapping::{CompiledRoute, RenderError, render_route};
use crate::ports::state::StateKey;
use crate::request::RawRequest;
use crate::time::UnixMillis;
pub use compile::{compile_entity, is_entity_file};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

/// An entity file, compiled.
#[derive(Debug)]
pub struct CompiledEntity {
    pub name: String,
    pub file: String,
    /// Keys that never make an entity (lower-cased).
    pub blocked: Vec<String>,
    pub fields: Vec<FieldRule>,
    pub scores: Vec<ScoreRule>,
    pub counters: Vec<CounterRule>,
    pub journeys: Vec<JourneyRule>,
    pub routes: Vec<EntityRoute>,
    /// Fact names the rules and routes wait for, where written.
    pub(crate) uses: Vec<(String, Loc)>,
    pub(crate) templates: Templates,
    pub(crate) fx: FileCtx,
}

#[derive(Debug)]
pub struct FieldRule {
    pub name: String,
    pub from: Vec<String>,
    value: MapNode,
    version: Option<MapNode>,
}

#[derive(Debug)]
pub struct ScoreRule {
    pub name: String,
    rules: Vec<PointRule>,
    pub expire_after: Option<Duration>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// Points per fact (`on`, filtered by `when`), or while a condition holds (`while`).
#[derive(Debug)]
struct PointRule {
    on: Vec<String>,
    when: Option<Condition>,
    while_: Option<Condition>,
    points: f64,
}

#[derive(Debug)]
pub struct CounterRule {
    pub name: String,
    on: Vec<String>,
    when: Option<Condition>,
    pub window: Duration,
}

#[derive(Debug)]
pub struct JourneyRule {
    pub name: String,
    from: Vec<String>,
    when: Option<Condition>,
    touch: Vec<(String, MapNode)>,
    same_within: Option<Duration>,
    pub keep: usize,
}

/// A route of an entity file and what makes it fire.
#[derive(Debug)]
pub struct EntityRoute {
    /// Its id is `<entity>.<route id>`.
    pub route: CompiledRoute,
    pub on: On,
    pub cooldown: Option<Duration>,
    pub max_fires: Option<u32>,
}

/// What makes an entity route fire.
#[derive(Debug, Clone)]
pub enum On {
    /// Each of these facts.
    Fact(Vec<String>),
    /// A score or counter at `above` or more while armed; it re-arms under `rearm_below`
    /// (`reaches: counter, count: N` is this with `above: N`).
    Crosses { measure: String, above: f64, rearm_below: f64 },
    /// A field's value changed (optionally from / to given values).
    Changes { field: String, from: Option<Match>, to: Option<Match> },
}

/// A `from`/`to` value of a `changes` trigger.
#[derive(Debug, Clone)]
pub enum Match {
    /// The field was (or is) not set (`none`).
    Unset,
    Value(Value),
    Any(Vec<Value>),
}

impl Match {
    fn matches(&self, v: Option<&Value>) -> bool {
        use crate::mapping::condition::loose_eq;
        match (self, v) {
            (Match::Unset, None | Some(Value::Null)) => true,
            (Match::Unset, Some(_)) | (_, None) => false,
            (Match::Value(want), Some(v)) => loose_eq(want, v),
            (Match::Any(list), Some(v)) => list.iter().any(|w| loose_eq(w, v)),
        }
    }
}

/// A source's rule that states a fact about an entity.
#[derive(Debug)]
pub struct FactRule {
    pub entity: String,
    pub(crate) entity_loc: Loc,
    pub(crate) literal_name: Option<String>,
    key: MapNode,
    name: MapNode,
    at: Option<Selector>,
    data: Option<MapNode>,
    when: Option<Condition>,
}

/// Facts stated in the future by more than this are taken as of their receipt (clock skew).
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// A fact about one entity, as applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// `<event id>/<n>`: the same webhook states the same facts, so a second run applies none.
    pub id: String,
    pub name: String,
    pub entity: String,
    pub key: String,
    /// When it happened (event time).
    pub at: UnixMillis,
    #[serde(default)]
    pub data: Value,
    pub source: SourceId,
}

impl Fact {
    pub fn state_key(&self) -> StateKey {
        StateKey::new(&self.entity, &self.key)
    }

    /// `$.fact` in the envelope.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "entity": self.entity, "key": self.key,
            "at": self.at.to_rfc3339(), "data": self.data, "source": self.source,
        })
    }
}

/// Why a fact rule stated no fact.
#[derive(Debug, thiserror::Error)]
pub enum FactError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("fact name `{0}` is not a fact name (letters, digits, `.`, `_`, `-`)")]
    BadName(String),
}

impl FactRule {
    /// The fact this rule states about the webhook whose envelope is `env` (`Ok(None)`: the
    /// rule's `when` does not hold, or the key is empty or blocked).
    pub fn state(
        &self,
        env: &Env<'_>,
        ts: &Templates,
        fx: &FileCtx,
        id: String,
        received_at: UnixMillis,
        blocked: &[String],
    ) -> Result<Option<Fact>, FactError> {
        let headers = crate::request::Headers::default();
        if self.when.as_ref().is_some_and(|c| !c.eval(env.value(), &headers)) {
            return Ok(None);
        }
        let Some(key) = self.key.render(env, ts, fx)?.map(|v| text_of(&v)) else { return Ok(None) };
        let key = key.trim().to_string();
        if key.is_empty() || blocked.contains(&key.to_lowercase()) {
            return Ok(None);
        }
        let Some(name) = self.name.render(env, ts, fx)?.map(|v| text_of(&v)) else { return Ok(None) };
        if !compile::is_fact_name_text(&name) {
            return Err(FactError::BadName(name));
        }
        let at = self.at.as_ref().and_then(|s| s.first(env.value())).and_then(instant_of);
        let latest = received_at.plus(MAX_SKEW);
        let at = at.filter(|a| *a <= latest).unwrap_or(received_at);
        let data = match &self.data {
            Some(d) => d.render(env, ts, fx)?.unwrap_or(Value::Null),
            None => Value::Object(Default::default()),
        };
        let source = env.value().pointer("/event/source").and_then(Value::as_str).unwrap_or_default();
        Ok(Some(Fact { id, name, entity: self.entity.clone(), key, at, data, source: SourceId::new(source) }))
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An instant from unix seconds (with a fraction), unix milliseconds (a number over 10^11) or
/// RFC 3339 text.
pub fn instant_of(v: &Value) -> Option<UnixMillis> {
    let from_number = |n: f64| {
        if !n.is_finite() || n < 0.0 {
            return None;
        }
        let ms = if n < 1e11 { n * 1000.0 } else { n };
        Some(UnixMillis(ms as u64))
    };
    match v {
        Value::Number(n) => from_number(n.as_f64()?),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(n) => from_number(n),
            Err(_) => {
                let t: jiff::Timestamp = s.trim().parse().ok()?;
                u64::try_from(t.as_millisecond()).ok().map(UnixMillis)
            }
        },
        _ => None,
    }
}

/// A route fired by a fact: which, why (`$.trigger`), and the envelope it renders from.
#[derive(Debug, Clone)]
pub struct Fire {
    /// Index into [`CompiledEntity::routes`].
    pub route: usize,
    /// `fire_` + a digest of route, entity and occurrence: the same occurrence always has the
    /// same id, whichever run computes it.
    pub id: String,
    pub envelope: Value,
}

impl CompiledEntity {
    /// The delivery a fire makes: rendered now, with the fire id as its `Idempotency-Key` and
    /// (derived from it) its delivery id.
    pub fn deliver(&self, fire: &Fire, req: &RawRequest, now: UnixMillis) -> DeliveryRecord {
        let r = &self.routes[fire.route].route;
        let id = DeliveryId::new(format!("dlv_{}", fire.id.trim_start_matches("fire_")));
        let env = Env::new(&fire.envelope);
        let rendered = render_route(&self.templates, &self.fx, r, &env, req, &id, Some(&fire.id));
        crate::evaluate::new_delivery(r.id.clone(), id, rendered.map_err(|e| e.0), now)
    }

    pub fn route(&self, id: &crate::ids::RouteId) -> Option<&CompiledRoute> {
        self.routes.iter().map(|r| &r.route).find(|r| &r.id == id)
    }
}

/// A fire id: `fire_` and 32 hex digits of SHA-256 over route, entity key and occurrence.
pub fn fire_id(route: &str, key: &StateKey, occurrence: &str) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for part in [route, key.as_str(), occurrence] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("fire_{}", &hex::encode(h.finalize())[..32])
}

/// The ids of the facts a webhook states: `<event id>/<n>`.
pub fn fact_id(event: &EventId, n: usize) -> String {
    format!("{event}/{n}")
}

/// One entity's state while a webhook's facts are applied.
#[derive(Debug)]
pub struct Loaded {
    pub key: StateKey,
    pub state: state::EntityState,
    /// The version read (0: none stored).
    pub version: u64,
    /// Whether a fact changed it (it is then written).
    pub changed: bool,
}

/// Applies `facts` in order to their entities' states in `loaded` and renders the deliveries of
/// the routes they fire. `base` is the webhook's envelope and `req` its request.
pub fn apply_all(
    set: &crate::mapping::MappingSet,
    facts: &[Fact],
    loaded: &mut [Loaded],
    base: &Value,
    req: &RawRequest,
    now: UnixMillis,
) -> Vec<DeliveryRecord> {
    let mut fired = Vec::new();
    for fact in facts {
        let key = fact.state_key();
        let (Some(entity), Some(l)) =
            (set.entities.get(&fact.entity), loaded.iter_mut().find(|l| l.key == key))
        else {
            continue;
        };
        let applied = apply::apply(entity, std::mem::take(&mut l.state), fact, base, now);
        l.changed |= applied.changed;
        l.state = applied.state;
        for field in &applied.stale {
            tracing::info!(fact = %fact.id, field, "stale update ignored (a newer value is stored)");
        }
        fired.extend(applied.fires.iter().map(|f| entity.deliver(f, req, now)));
    }
    fired
}

/// What a source's own routes see of its facts: `$.fact` (the first), `$.facts`, and
/// `$.state.<entity>` and `$.entity.<entity>` after they were applied.
pub fn fact_envelope(
    facts: &[Fact],
    loaded: &[Loaded],
    set: &crate::mapping::MappingSet,
    now: UnixMillis,
) -> serde_json::Map<String, Value> {
    let mut state = serde_json::Map::new();
    let mut entity = serde_json::Map::new();
    for f in facts {
        if let (Some(e), Some(l)) =
            (set.entities.get(&f.entity), loaded.iter().find(|l| l.key == f.state_key()))
            && !state.contains_key(&f.entity)
        {
            state.insert(f.entity.clone(), l.state.view(e, now));
            entity.insert(f.entity.clone(), json!({"id": f.key}));
        }
    }
    let mut m = serde_json::Map::new();
    if let Some(first) = facts.first() {
        m.insert("fact".into(), first.to_json());
    }
    m.insert("facts".into(), Value::Array(facts.iter().map(Fact::to_json).collect()));
    m.insert("state".into(), Value::Object(state));
    m.insert("entity".into(), Value::Object(entity));
    m
}

/// What `hub state show` answers for one entity.
#[derive(Debug, Clone, PartialEq)]
pub enum StateLookup {
    /// No entity file declares this entity.
    UnknownEntity,
    /// Nothing is stored for this key (no fact about it was applied).
    NotStored,
    /// The state as stored (`version`) and explained at `now`: its view, each score's ledger,
    /// each route's trigger state.
    Found(Value),
}

/// Explains a stored state item of `entity`/`key` (see [`StateLookup`]).
pub fn describe(
    set: &crate::mapping::MappingSet,
    entity: &str,
    key: &str,
    stored: Option<&crate::ports::state::Versioned>,
    now: UnixMillis,
) -> Result<StateLookup, serde_json::Error> {
    let Some(e) = set.entities.get(entity) else { return Ok(StateLookup::UnknownEntity) };
    let Some(v) = stored else { return Ok(StateLookup::NotStored) };
    let state = state::EntityState::from_json(&v.value)?;
    let mut out = state.explain(e, now);
    if let Value::Object(m) = &mut out {
        m.insert("entity".into(), Value::String(entity.to_string()));
        m.insert("key".into(), Value::String(key.to_string()));
        m.insert("version".into(), Value::from(v.version));
    }
    Ok(StateLookup::Found(out))
}
