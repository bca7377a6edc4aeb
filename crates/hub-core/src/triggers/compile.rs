//! The entity-file compiler and the `facts:` block of source files, with file:line:col
//! diagnostics; and the checks across files (a fact's entity exists, rules name facts that
//! some source states).

use super::spec::{self, EntityFileSpec};
use super::{
    CompiledEntity, CounterRule, EntityRoute, FactRule, FieldRule, JourneyRule, Match, On, PointRule,
    ScoreRule,
};
use crate::ids::{RouteId, is_valid_id};
use crate::mapping::compile::route::compile_routes;
use crate::mapping::compile::{duration, source::lookups};
use crate::mapping::condition::Condition;
use crate::mapping::diag::{Diagnostic, FileCtx};
use crate::mapping::node::{Loc, Node, NodeKind};
use crate::mapping::selector::Selector;
use crate::mapping::spec::{FactSpec, RouteSpec};
use crate::mapping::template::Templates;
use crate::mapping::value::MapNode;
use crate::mapping::{MappingSet, from_yaml};
use crate::secret::SecretSource;
use serde_saphyr::Spanned;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Whether a file is an entity file (a top-level `entity:` key) rather than a source file.
pub fn is_entity_file(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        entity: Option<serde::de::IgnoredAny>,
    }
    from_yaml::<Probe>(text).is_ok_and(|p| p.entity.is_some())
}

/// The longest window, wait or expiry a rule may name.
const MAX_SPAN: Duration = Duration::from_secs(400 * 86_400);
/// Most touches a journey keeps.
const MAX_KEEP: u32 = 500;

/// Compiles one entity file.
pub fn compile_entity(
    name: &str,
    text: &str,
    secrets: &dyn SecretSource,
) -> Result<(CompiledEntity, Loc), Vec<Diagnostic>> {
    let fx = FileCtx::new(name);
    let spec: EntityFileSpec = from_yaml(text).map_err(|e| vec![fx.from_yaml(&e)])?;
    let mut diags = Vec::new();
    let loc = Loc::of(&spec.entity);
    if !is_valid_id(&spec.entity.value) {
        diags.push(fx.at(loc, format!("entity name `{}` must be 1-64 of [a-z0-9_-]", spec.entity.value)));
    }
    let mut templates = Templates::new(Arc::new(lookups(&spec.lookups, &fx, &mut diags)));
    let mut names: HashMap<String, Loc> = HashMap::new();
    let mut claim = |n: &str, at: Loc, diags: &mut Vec<Diagnostic>| {
        if let Some(first) = names.get(n) {
            diags.push(fx.at(
                at,
                format!(
                    "`{n}` is declared twice in this entity (also at {}:{}); fields, scores, counters \
                     and journeys share one namespace",
                    first.line, first.col
                ),
            ));
        } else if !is_valid_id(n) {
            diags.push(fx.at(at, format!("`{n}` must be 1-64 of [a-z0-9_-]")));
        } else {
            names.insert(n.to_string(), at);
        }
    };
    let fields = spec
        .fields
        .iter()
        .filter_map(|(n, f)| {
            claim(n, Loc::of(f), &mut diags);
            let from = fact_names(&f.value.from, &fx).map_err(|d| diags.push(d)).ok()?;
            let value =
                MapNode::compile(&f.value.value, &fx, &mut templates).map_err(|d| diags.push(d)).ok()?;
            let version = match &f.value.version {
                None => None,
                Some(v) => Some(MapNode::compile(v, &fx, &mut templates).map_err(|d| diags.push(d)).ok()?),
            };
            Some(FieldRule { name: n.clone(), from, value, version })
        })
        .collect();
    let scores = spec
        .scores
        .iter()
        .filter_map(|(n, s)| {
            claim(n, Loc::of(s), &mut diags);
            score(n, s, &fx, &mut diags)
        })
        .collect();
    let counters = spec
        .counters
        .iter()
        .filter_map(|(n, c)| {
            claim(n, Loc::of(c), &mut diags);
            let on = fact_names(&c.value.on, &fx).map_err(|d| diags.push(d)).ok()?;
            let when = condition(c.value.when.as_ref(), &fx, &mut diags)?;
            let window = span(&c.value.window, &fx, &mut diags)?;
            Some(CounterRule { name: n.clone(), on, when, window })
        })
        .collect();
    let journeys = spec
        .journeys
        .iter()
        .filter_map(|(n, j)| {
            claim(n, Loc::of(j), &mut diags);
            journey(n, j, &fx, &mut templates, &mut diags)
        })
        .collect();
    let mut entity = CompiledEntity {
        name: spec.entity.value.clone(),
        file: name.to_string(),
        blocked: spec.blocked.iter().map(|b| b.trim().to_lowercase()).collect(),
        fields,
        scores,
        counters,
        journeys,
        routes: Vec::new(),
        uses: Vec::new(),
        templates: Templates::new(Arc::new(HashMap::new())),
        fx: fx.clone(),
    };
    let compiled = compile_routes(&spec.routes, &fx, &mut templates, secrets, &mut diags);
    for mut route in compiled {
        let Some(r) = spec.routes.iter().find(|r| r.value.id.value == route.id.as_str()) else { continue };
        let Some(on) = trigger(&r.value, Loc::of(r), &entity, &fx, &mut diags) else { continue };
        if r.value.for_each.is_some() {
            diags.push(
                fx.at(Loc::of(r), "`for_each` is for source routes; an entity route fires once per trigger"),
            );
        }
        let cooldown = r.value.cooldown.as_ref().and_then(|c| span(c, &fx, &mut diags));
        route.id = RouteId::new(format!("{}.{}", entity.name, route.id));
        entity.routes.push(EntityRoute {
            route,
            on,
            cooldown,
            max_fires: r.value.max_fires.as_ref().map(|m| m.value),
        });
    }
    entity.templates = templates;
    entity.uses = used_fact_names(&spec);
    if diags.is_empty() { Ok((entity, loc)) } else { Err(diags) }
}

fn score(
    name: &str,
    s: &Spanned<spec::ScoreSpec>,
    fx: &FileCtx,
    diags: &mut Vec<Diagnostic>,
) -> Option<ScoreRule> {
    let spec = &s.value;
    let mut rules = Vec::new();
    for r in &spec.rules {
        let at = Loc::of(r);
        let p = &r.value;
        let rule = match (&p.on, &p.while_) {
            (Some(on), None) => PointRule {
                on: fact_names(on, fx).map_err(|d| diags.push(d)).ok()?,
                when: condition(p.when.as_ref(), fx, diags)?,
                while_: None,
                points: p.points.value,
            },
            (None, Some(w)) if p.when.is_none() => PointRule {
                on: Vec::new(),
                when: None,
                while_: Some(Condition::compile(w, fx).map_err(|d| diags.push(d)).ok()?),
                points: p.points.value,
            },
            (None, Some(_)) => {
                diags.push(fx.at(
                    at,
                    "a `while` rule's condition is its `while`; `when` filters facts of an `on` rule",
                ));
                continue;
            }
            _ => {
                diags.push(fx.at(at, "a score rule needs exactly one of `on` (points per fact) or `while` (points while a condition holds)"));
                continue;
            }
        };
        if !rule.points.is_finite() {
            diags.push(fx.at(Loc::of(&p.points), "`points` must be a finite number"));
            continue;
        }
        rules.push(rule);
    }
    if let (Some(min), Some(max)) = (spec.min, spec.max)
        && min > max
    {
        diags.push(fx.at(Loc::of(s), format!("score `{name}`: `min` ({min}) is above `max` ({max})")));
    }
    let expire_after = match &spec.expire_after {
        None => None,
        Some(e) => Some(span(e, fx, diags)?),
    };
    Some(ScoreRule { name: name.to_string(), rules, expire_after, min: spec.min, max: spec.max })
}

fn journey(
    name: &str,
    j: &Spanned<spec::JourneySpec>,
    fx: &FileCtx,
    ts: &mut Templates,
    diags: &mut Vec<Diagnostic>,
) -> Option<JourneyRule> {
    let spec = &j.value;
    let from = fact_names(&spec.from, fx).map_err(|d| diags.push(d)).ok()?;
    let when = condition(spec.when.as_ref(), fx, diags)?;
    let mut touch = Vec::new();
    for (k, n) in &spec.touch.value {
        if matches!(k.as_str(), "at" | "fact_id" | "source_id" | "direct") {
            diags.push(
                fx.at(n.loc, format!("`{k}` is set by the hub on every touch; name the field otherwise")),
            );
            continue;
        }
        touch.push((k.clone(), MapNode::compile(n, fx, ts).map_err(|d| diags.push(d)).ok()?));
    }
    if touch.is_empty() {
        diags.push(fx.at(Loc::of(&spec.touch), "a journey's `touch` needs at least one field"));
    }
    let same_within = match &spec.same_touch_within {
        None => None,
        Some(d) => Some(span(d, fx, diags)?),
    };
    let keep = spec.keep.as_ref().map_or(50, |k| k.value);
    if !(2..=MAX_KEEP).contains(&keep) {
        let at = spec.keep.as_ref().map_or(Loc::of(j), Loc::of);
        diags.push(fx.at(at, format!("`keep` must be 2 to {MAX_KEEP} (the first touch and the newest)")));
    }
    Some(JourneyRule { name: name.to_string(), from, when, touch, same_within, keep: keep as usize })
}

/// A route's `on:` (with `rearm`), checked against what the entity declares.
fn trigger(
    r: &RouteSpec,
    at: Loc,
    e: &CompiledEntity,
    fx: &FileCtx,
    diags: &mut Vec<Diagnostic>,
) -> Option<On> {
    let Some(on) = &r.on else {
        diags.push(
            fx.at(at, "a route of an entity file needs `on:` (a fact, `crosses`, `reaches` or `changes`)"),
        );
        return None;
    };
    if let NodeKind::Str(_) | NodeKind::Seq(_) = on.kind {
        return Some(On::Fact(fact_names(on, fx).map_err(|d| diags.push(d)).ok()?));
    }
    let Some(entries) = on.as_map() else {
        diags.push(fx.at(on.loc, format!("`on` must be a fact name or a mapping, found {}", on.type_name())));
        return None;
    };
    let key = |k: &str| entries.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let allowed: &[&str] = match entries.first().map(|(k, _)| k.as_str()) {
        Some("fact") => &["fact"],
        Some("crosses") => &["crosses", "above"],
        Some("reaches") => &["reaches", "count"],
        Some("changes") => &["changes", "from", "to"],
        _ => {
            diags.push(fx.at(on.loc, "`on` starts with one of `fact`, `crosses`, `reaches` or `changes`"));
            return None;
        }
    };
    if let Some((k, v)) = entries.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        diags.push(fx.at(
            v.loc,
            format!("`{k}` does not go with `{}` (expected: {})", allowed[0], allowed[1..].join(", ")),
        ));
        return None;
    }
    let rearm = match &r.rearm {
        None => None,
        Some(n) => match n.get("below").and_then(number) {
            Some(b) if n.as_map().is_some_and(|m| m.len() == 1) => Some(b),
            _ => {
                diags.push(fx.at(n.loc, "`rearm` is `{below: N}`"));
                return None;
            }
        },
    };
    if rearm.is_some() && !matches!(allowed[0], "crosses" | "reaches") {
        diags.push(
            fx.at(r.rearm.as_ref().map_or(at, |n| n.loc), "`rearm` goes with `crosses` and `reaches` only"),
        );
    }
    let named = |k: &str, diags: &mut Vec<Diagnostic>| -> Option<(String, Loc)> {
        let n = key(k)?;
        match n.as_str() {
            Some(s) => Some((s.to_string(), n.loc)),
            None => {
                diags.push(fx.at(
                    n.loc,
                    format!(
                        "`{k}` names a declared {}",
                        match k {
                            "changes" => "field",
                            "reaches" => "counter",
                            _ => "score or counter",
                        }
                    ),
                ));
                None
            }
        }
    };
    match allowed[0] {
        "fact" => Some(On::Fact(fact_names(key("fact")?, fx).map_err(|d| diags.push(d)).ok()?)),
        "crosses" => {
            let (m, mloc) = named("crosses", diags)?;
            if !e.scores.iter().any(|s| s.name == m) && !e.counters.iter().any(|c| c.name == m) {
                diags.push(fx.at(mloc, format!("`{m}` is not a score or counter of entity `{}`", e.name)));
                return None;
            }
            let Some(above) = key("above").and_then(number) else {
                diags.push(fx.at(
                    on.loc,
                    "`crosses` needs `above: N` (fires when the value goes from under N to N or more)",
                ));
                return None;
            };
            let below = rearm.unwrap_or(above);
            if below > above {
                diags.push(fx.at(
                    r.rearm.as_ref().map_or(at, |n| n.loc),
                    format!("`rearm.below` ({below}) must not be above `above` ({above})"),
                ));
            }
            Some(On::Crosses { measure: m, above, rearm_below: below })
        }
        "reaches" => {
            let (c, cloc) = named("reaches", diags)?;
            if !e.counters.iter().any(|x| x.name == c) {
                diags.push(fx.at(cloc, format!("`{c}` is not a counter of entity `{}`", e.name)));
                return None;
            }
            let count = key("count").and_then(number).filter(|n| *n >= 1.0 && n.fract() == 0.0);
            let Some(count) = count else {
                diags.push(fx.at(on.loc, "`reaches` needs `count: N`, a whole number of 1 or more"));
                return None;
            };
            let below = rearm.unwrap_or(count);
            if below > count {
                diags.push(fx.at(
                    r.rearm.as_ref().map_or(at, |n| n.loc),
                    format!("`rearm.below` ({below}) must not be above `count` ({count})"),
                ));
            }
            Some(On::Crosses { measure: c, above: count, rearm_below: below })
        }
        _ => {
            let (f, floc) = named("changes", diags)?;
            if !e.fields.iter().any(|x| x.name == f) {
                diags.push(fx.at(floc, format!("`{f}` is not a field of entity `{}`", e.name)));
                return None;
            }
            Some(On::Changes { field: f, from: key("from").map(matcher), to: key("to").map(matcher) })
        }
    }
}

fn matcher(n: &Node) -> Match {
    match &n.kind {
        NodeKind::Str(s) if s == "none" => Match::Unset,
        NodeKind::Null => Match::Unset,
        NodeKind::Seq(items) => Match::Any(items.iter().map(Node::to_json).collect()),
        _ => Match::Value(n.to_json()),
    }
}

fn number(n: &Node) -> Option<f64> {
    match n.kind {
        NodeKind::Int(i) => Some(i as f64),
        NodeKind::Float(f) if f.is_finite() => Some(f),
        _ => None,
    }
}

/// A fact name or a list of them.
fn fact_names(n: &Node, fx: &FileCtx) -> Result<Vec<String>, Diagnostic> {
    let one = |n: &Node| match n.as_str() {
        Some(s) if is_fact_name_text(s) => Ok(s.to_string()),
        Some(s) => Err(fx.at(n.loc, format!("`{s}` is not a fact name (letters, digits, `.`, `_`, `-`)"))),
        None => Err(fx.at(n.loc, format!("a fact name must be a string, found {}", n.type_name()))),
    };
    match &n.kind {
        NodeKind::Seq(items) if items.is_empty() => Err(fx.at(n.loc, "name at least one fact")),
        NodeKind::Seq(items) => items.iter().map(one).collect(),
        _ => Ok(vec![one(n)?]),
    }
}

pub(crate) fn is_fact_name_text(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn condition(n: Option<&Node>, fx: &FileCtx, diags: &mut Vec<Diagnostic>) -> Option<Option<Condition>> {
    match n {
        None => Some(None),
        Some(n) => Condition::compile(n, fx).map(Some).map_err(|d| diags.push(d)).ok(),
    }
}

fn span(s: &Spanned<String>, fx: &FileCtx, diags: &mut Vec<Diagnostic>) -> Option<Duration> {
    let d = duration(s, fx).map_err(|d| diags.push(d)).ok()?;
    if d.is_zero() || d > MAX_SPAN {
        diags.push(fx.at(Loc::of(s), format!("`{}` must be more than 0 and at most 400 days", s.value)));
        return None;
    }
    Some(d)
}

/// A source's `facts:` block.
pub(crate) fn compile_facts(
    facts: &[Spanned<FactSpec>],
    fx: &FileCtx,
    ts: &mut Templates,
    diags: &mut Vec<Diagnostic>,
) -> Vec<FactRule> {
    let mut out = Vec::new();
    for f in facts {
        let spec = &f.value;
        let mut ok = true;
        let mut node = |n: &Node, diags: &mut Vec<Diagnostic>| {
            MapNode::compile(n, fx, ts).map_err(|d| {
                ok = false;
                diags.push(d)
            })
        };
        let key = node(&spec.key, diags);
        let name = node(&spec.name, diags);
        let data = spec.data.as_ref().map(|d| node(d, diags));
        let literal = spec.name.as_str().filter(|s| !s.contains("{{") && !s.starts_with('$'));
        if let Some(n) = literal.filter(|s| !is_fact_name_text(s)) {
            diags.push(
                fx.at(spec.name.loc, format!("`{n}` is not a fact name (letters, digits, `.`, `_`, `-`)")),
            );
            ok = false;
        }
        let at = spec.at.as_ref().and_then(|a| {
            Selector::compile(&a.value)
                .map_err(|e| {
                    ok = false;
                    diags.push(fx.at(Loc::of(a), e.to_string()))
                })
                .ok()
        });
        let when = condition(spec.when.as_ref(), fx, diags);
        if let (true, Ok(key), Ok(name), Some(when)) = (ok, key, name, when) {
            out.push(FactRule {
                entity: spec.entity.value.clone(),
                entity_loc: Loc::of(&spec.entity),
                literal_name: literal.map(str::to_string),
                key,
                name,
                at,
                data: data.and_then(Result::ok),
                when,
            });
        }
    }
    out
}

/// Checks across the files of a set: every fact names a declared entity, and every fact name an
/// entity's rules wait for is stated by some source (when all of its sources name their facts
/// literally).
pub(crate) fn check_set(set: &MappingSet) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let mut stated: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    let mut templated: BTreeSet<&str> = BTreeSet::new();
    for s in set.sources.values() {
        for f in &s.facts {
            if !set.entities.contains_key(&f.entity) {
                let known: Vec<&str> = set.entities.keys().map(String::as_str).collect();
                diags.push(FileCtx::new(s.file.clone()).at(
                    f.entity_loc,
                    format!(
                        "no entity file declares `entity: {}` (declared: {})",
                        f.entity,
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                ));
            }
            match &f.literal_name {
                Some(n) => {
                    stated.entry(f.entity.as_str()).or_default().insert(n.as_str());
                }
                None => {
                    templated.insert(f.entity.as_str());
                }
            }
        }
    }
    for e in set.entities.values() {
        if templated.contains(e.name.as_str()) {
            continue;
        }
        let names = stated.get(e.name.as_str()).cloned().unwrap_or_default();
        for (wanted, at) in &e.uses {
            if !names.contains(wanted.as_str()) {
                let hint =
                    closest(wanted, &names).map(|c| format!("; did you mean `{c}`?")).unwrap_or_default();
                diags.push(
                    e.fx.at(*at, format!("no source states the fact `{wanted}` about `{}`{hint}", e.name)),
                );
            }
        }
    }
    diags
}

fn closest<'a>(word: &str, names: &BTreeSet<&'a str>) -> Option<&'a str> {
    names.iter().map(|n| (strsim::levenshtein(word, n), *n)).filter(|(d, _)| *d <= 3).min().map(|(_, n)| n)
}

/// Every fact name the entity's rules and routes wait for, where it is written.
fn used_fact_names(spec: &EntityFileSpec) -> Vec<(String, Loc)> {
    fn push(n: &Node, out: &mut Vec<(String, Loc)>) {
        match &n.kind {
            NodeKind::Str(s) => out.push((s.clone(), n.loc)),
            NodeKind::Seq(items) => items.iter().for_each(|i| push(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    spec.fields.values().for_each(|f| push(&f.value.from, &mut out));
    for s in spec.scores.values() {
        s.value.rules.iter().filter_map(|r| r.value.on.as_ref()).for_each(|n| push(n, &mut out));
    }
    spec.counters.values().for_each(|c| push(&c.value.on, &mut out));
    spec.journeys.values().for_each(|j| push(&j.value.from, &mut out));
    for r in &spec.routes {
        match r.value.on.as_ref() {
            Some(n @ Node { kind: NodeKind::Str(_) | NodeKind::Seq(_), .. }) => push(n, &mut out),
            Some(n) => {
                if let Some(f) = n.get("fact") {
                    push(f, &mut out)
                }
            }
            None => {}
        }
    }
    out
}
