//! An entity file as written (YAML), before compilation. Unknown keys are rejected.

use crate::mapping::node::Node;
use crate::mapping::spec::RouteSpec;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityFileSpec {
    /// The entity's name (`contact`), as facts name it: `[a-z0-9_-]{1,64}`.
    pub entity: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// What the key is (`email`), for people reading the file.
    #[serde(default)]
    pub key: Option<String>,
    /// Key values that never make an entity (`''`, `null`, test addresses); compared after the
    /// fact's key template ran, ignoring case.
    #[serde(default)]
    pub blocked: Vec<String>,
    /// Tables for the `lookup` helper, as in source files.
    #[serde(default)]
    pub lookups: IndexMap<String, Node>,
    #[serde(default)]
    pub fields: IndexMap<String, Spanned<FieldSpec>>,
    #[serde(default)]
    pub scores: IndexMap<String, Spanned<ScoreSpec>>,
    #[serde(default)]
    pub counters: IndexMap<String, Spanned<CounterSpec>>,
    #[serde(default)]
    pub journeys: IndexMap<String, Spanned<JourneySpec>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteSpec>>,
}

/// A field: set from facts, last write wins by version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// The fact name (or names) that set it.
    pub from: Node,
    /// Its value, as a `map` leaf on the fact's envelope (`$.fact.data.stage`).
    pub value: Node,
    /// What orders updates (`$.fact.data.updated_at`); default the fact's time.
    #[serde(default)]
    pub version: Option<Node>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreSpec {
    pub rules: Vec<Spanned<PointsSpec>>,
    /// Points awarded by a fact expire this long after the fact (`30d`).
    #[serde(default)]
    pub expire_after: Option<Spanned<String>>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// Points for a fact (`on`), or while a condition on the entity's state holds (`while`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsSpec {
    #[serde(default)]
    pub on: Option<Node>,
    #[serde(default)]
    pub when: Option<Node>,
    #[serde(default, rename = "while")]
    pub while_: Option<Node>,
    pub points: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterSpec {
    pub on: Node,
    #[serde(default)]
    pub when: Option<Node>,
    /// A sliding window in event time (`7d`).
    pub window: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneySpec {
    pub from: Node,
    #[serde(default)]
    pub when: Option<Node>,
    /// The touch's fields, each a `map` leaf on the fact's envelope. `source`, `medium`,
    /// `campaign` and `click_id` have a meaning (repeats, direct visits).
    pub touch: Spanned<IndexMap<String, Node>>,
    /// A repeat of the previous touch's source, medium and campaign within this long is the
    /// same touch.
    #[serde(default)]
    pub same_touch_within: Option<Spanned<String>>,
    /// Touches kept: the first, then the newest (default 50).
    #[serde(default)]
    pub keep: Option<Spanned<u32>>,
}
