//! `map` trees: output fields built from JSONPath selections, templates and literals.

use super::diag::{Diagnostic, FileCtx};
use super::node::{Loc, Node, NodeKind};
use super::selector::Selector;
use super::template::{Env, Escape, TemplateRef, Templates, is_template};
use serde_json::{Map, Value};

/// A compiled output value.
#[derive(Clone, Debug)]
pub enum MapNode {
    Literal(Value),
    Object(Vec<(String, MapNode)>),
    Array(Vec<MapNode>),
    Field(Box<Field>),
}

/// A computed leaf and its modifiers.
#[derive(Clone, Debug)]
pub struct Field {
    pub loc: Loc,
    pub source: FieldSource,
    pub default: Option<MapNode>,
    pub required: bool,
    pub coerce: Option<Coerce>,
}

#[derive(Clone, Debug)]
pub enum FieldSource {
    /// First match, or every match as an array with `all: true`.
    Select {
        selector: Selector,
        all: bool,
    },
    Template(TemplateRef),
    Value(Value),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coerce {
    String,
    Number,
    Integer,
    Boolean,
    Json,
}

const LEAF_KEYS: &[&str] = &["path", "template", "value"];
const MODIFIERS: &[&str] = &["default", "required", "all", "type"];

/// A failure while rendering an event's routes: the message (`.0`, naming file:line of what
/// failed) and what failed (`.1`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String, pub RenderErrorKind);

/// What a [`RenderError`] is about: one delivery, or the event as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenderErrorKind {
    /// A `map` field: required and empty, not of its `type`, or its template failed.
    Field,
    /// The request of one delivery: its URL, a header, its body template or idempotency key.
    Request,
    /// A `for_each` selected more items than a route sends.
    FanOut,
    /// The event's routes make more deliveries, or render more bytes, than one event may:
    /// nothing is sent for it.
    EventCap,
}

impl RenderError {
    pub fn new(kind: RenderErrorKind, message: impl Into<String>) -> Self {
        RenderError(message.into(), kind)
    }

    pub fn kind(&self) -> RenderErrorKind {
        self.1
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl MapNode {
    pub fn compile(node: &Node, fx: &FileCtx, ts: &mut Templates) -> Result<MapNode, Diagnostic> {
        Ok(match &node.kind {
            NodeKind::Str(s) => compile_string(s, node.loc, fx, ts)?,
            NodeKind::Seq(items) => {
                MapNode::Array(items.iter().map(|n| MapNode::compile(n, fx, ts)).collect::<Result<_, _>>()?)
            }
            NodeKind::Map(entries) if entries.iter().any(|(k, _)| LEAF_KEYS.contains(&k.as_str())) => {
                compile_field(node, entries, fx, ts)?
            }
            NodeKind::Map(entries) => MapNode::Object(
                entries.iter().map(|(k, v)| Ok((k.clone(), MapNode::compile(v, fx, ts)?))).collect::<Result<
                    _,
                    Diagnostic,
                >>(
                )?,
            ),
            _ => MapNode::Literal(node.to_json()),
        })
    }

    /// Renders against the envelope. `None` means "absent": the field is left out of its object.
    pub fn render(&self, env: &Env<'_>, ts: &Templates, fx: &FileCtx) -> Result<Option<Value>, RenderError> {
        match self {
            MapNode::Literal(v) => Ok(Some(v.clone())),
            MapNode::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    if let Some(v) = i.render(env, ts, fx)? {
                        out.push(v);
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            MapNode::Object(entries) => {
                let mut out = Map::new();
                for (k, n) in entries {
                    if let Some(v) = n.render(env, ts, fx)? {
                        out.insert(k.clone(), v);
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            MapNode::Field(f) => f.render(env, ts, fx),
        }
    }
}

fn compile_string(s: &str, loc: Loc, fx: &FileCtx, ts: &mut Templates) -> Result<MapNode, Diagnostic> {
    if s.starts_with('$') {
        let selector = Selector::compile(s).map_err(|e| {
            fx.at(
                loc,
                format!("{e} (strings starting with `$` are JSONPath; write a literal as {{value: ...}})"),
            )
        })?;
        return Ok(MapNode::Field(Box::new(Field {
            loc,
            source: FieldSource::Select { selector, all: false },
            default: None,
            required: false,
            coerce: None,
        })));
    }
    if is_template(s) {
        let t = ts.compile(s, Escape::Plain).map_err(|e| fx.at(loc, e.to_string()))?;
        return Ok(MapNode::Field(Box::new(Field {
            loc,
            source: FieldSource::Template(t),
            default: None,
            required: false,
            coerce: None,
        })));
    }
    Ok(MapNode::Literal(Value::String(s.to_string())))
}

fn compile_field(
    node: &Node,
    entries: &[(String, Node)],
    fx: &FileCtx,
    ts: &mut Templates,
) -> Result<MapNode, Diagnostic> {
    let Some((key, v)) = entries.iter().find(|(k, _)| LEAF_KEYS.contains(&k.as_str())) else {
        return Err(fx.at(node.loc, "field needs `path`, `template` or `value`"));
    };
    let source = match key.as_str() {
        "path" => {
            let s = v.as_str().ok_or_else(|| fx.at(v.loc, "`path` must be a JSONPath string"))?;
            let selector = Selector::compile(s).map_err(|e| fx.at(v.loc, e.to_string()))?;
            let all = entries.iter().any(|(k, v)| k == "all" && matches!(v.kind, NodeKind::Bool(true)));
            FieldSource::Select { selector, all }
        }
        "template" => {
            let s = v.as_str().ok_or_else(|| fx.at(v.loc, "`template` must be a string"))?;
            FieldSource::Template(ts.compile(s, Escape::Plain).map_err(|e| fx.at(v.loc, e.to_string()))?)
        }
        _ => FieldSource::Value(v.to_json()),
    };
    finish(node, entries, source, fx, ts)
}

fn finish(
    node: &Node,
    entries: &[(String, Node)],
    source: FieldSource,
    fx: &FileCtx,
    ts: &mut Templates,
) -> Result<MapNode, Diagnostic> {
    let mut field = Field { loc: node.loc, source, default: None, required: false, coerce: None };
    let mut seen_source = false;
    for (k, v) in entries {
        match k.as_str() {
            "path" | "template" | "value" => {
                if seen_source {
                    return Err(fx.at(v.loc, "a field takes one of `path`, `template` or `value`"));
                }
                seen_source = true;
            }
            "default" => field.default = Some(MapNode::compile(v, fx, ts)?),
            "required" => match v.kind {
                NodeKind::Bool(b) => field.required = b,
                _ => return Err(fx.at(v.loc, "`required` takes true or false")),
            },
            "all" => match (&field.source, &v.kind) {
                (FieldSource::Select { .. }, NodeKind::Bool(_)) => {}
                (FieldSource::Select { .. }, _) => return Err(fx.at(v.loc, "`all` takes true or false")),
                _ => return Err(fx.at(v.loc, "`all` applies to `path` fields only")),
            },
            "type" => {
                field.coerce = Some(match v.as_str() {
                    Some("string") => Coerce::String,
                    Some("number") => Coerce::Number,
                    Some("integer") => Coerce::Integer,
                    Some("boolean") => Coerce::Boolean,
                    Some("json") => Coerce::Json,
                    _ => {
                        return Err(fx.at(v.loc, "`type` is one of string, number, integer, boolean, json"));
                    }
                })
            }
            other => {
                return Err(fx.at(
                    v.loc,
                    format!(
                        "unknown key `{other}` in field, expected one of {} and {} (to build an object with \
                         a key named like these, wrap it as {{value: ...}})",
                        LEAF_KEYS.join("/"),
                        MODIFIERS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(MapNode::Field(Box::new(field)))
}

/// Absent: nothing selected, null, or a blank string.
fn is_absent(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        _ => false,
    }
}

impl Field {
    fn render(&self, env: &Env<'_>, ts: &Templates, fx: &FileCtx) -> Result<Option<Value>, RenderError> {
        let at = |msg: String| RenderError::new(RenderErrorKind::Field, fx.at(self.loc, msg).to_string());
        let value = match &self.source {
            FieldSource::Value(v) => Some(v.clone()),
            FieldSource::Select { selector, all: true } => {
                Some(Value::Array(selector.select(env.value()).into_iter().cloned().collect()))
            }
            FieldSource::Select { selector, all: false } => selector.first(env.value()).cloned(),
            FieldSource::Template(t) => match ts.render(t, env) {
                Ok(s) => Some(Value::String(s)),
                // A default covers a template whose input is missing, not one whose input is bad.
                Err(e) if e.is_missing() && self.default.is_some() => None,
                Err(e) => return Err(at(e.to_string())),
            },
        };
        let value = if is_absent(&value) {
            match &self.default {
                Some(d) => d.render(env, ts, fx)?,
                // A template that renders blank leaves the field out: sending "" would clear
                // the destination's value (e.g. a CRM property) instead of leaving it alone.
                None if matches!(self.source, FieldSource::Template(_)) => None,
                None => value,
            }
        } else {
            value
        };
        if self.required && is_absent(&value) {
            let what = match &self.source {
                FieldSource::Select { selector, .. } => format!("`{}` selected nothing", selector.as_str()),
                _ => "value is empty".to_string(),
            };
            return Err(at(format!("required field: {what}")));
        }
        match (value, self.coerce) {
            (Some(v), Some(c)) => coerce(v, c).map(Some).map_err(at),
            (v, _) => Ok(v),
        }
    }
}

fn coerce(v: Value, c: Coerce) -> Result<Value, String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    };
    match c {
        Coerce::String => Ok(match v {
            Value::String(_) => v,
            Value::Null => Value::String(String::new()),
            other => Value::String(other.to_string()),
        }),
        Coerce::Number => {
            if v.is_number() {
                return Ok(v);
            }
            let t = text(&v);
            if let Ok(i) = t.parse::<i64>() {
                return Ok(Value::from(i));
            }
            t.parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("cannot convert `{t}` to a number"))
        }
        Coerce::Integer => {
            let t = text(&v);
            t.parse::<i64>()
                .ok()
                .or_else(|| {
                    t.parse::<f64>().ok().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)
                })
                .map(Value::from)
                .ok_or_else(|| format!("cannot convert `{t}` to an integer"))
        }
        Coerce::Boolean => Ok(Value::Bool(match &v {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Value::Null => false,
            other => matches!(text(other).to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "y" | "on"),
        })),
        Coerce::Json => match v {
            Value::String(s) => serde_json::from_str(&s).map_err(|e| format!("value is not JSON: {e}")),
            other => Ok(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::helpers::LookupTable;
    use crate::mapping::template::Env;
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn render(yaml: &str, body: Value) -> Result<Option<Value>, RenderError> {
        let node: Node = crate::mapping::from_yaml(yaml).expect("yaml");
        let fx = FileCtx::new("m.yaml");
        let mut ts = Templates::new(Arc::new(HashMap::<String, LookupTable>::new()));
        let m = MapNode::compile(&node, &fx, &mut ts).expect("compiles");
        let doc = json!({"body": body});
        m.render(&Env::new(&doc), &ts, &fx)
    }

    #[test]
    fn selectors_literals_templates_and_absence() {
        let out = render(
            "{id: $.body.id, tags: {path: '$.body.tags[*]', all: true}, kind: lead, n: 3, \
             missing: $.body.nope, nul: $.body.nul, blank: '{{body.blank}}', price: {value: '$5'}}",
            json!({"id": 7, "tags": ["a", "b"], "nul": null, "blank": " "}),
        );
        assert_eq!(
            out.expect("renders"),
            Some(json!({"id": 7, "tags": ["a", "b"], "kind": "lead", "n": 3, "nul": null, "price": "$5"}))
        );
    }

    #[test]
    fn defaults_cover_missing_input_but_not_bad_input() {
        let r = render(
            "{a: {path: $.body.x, default: direct}, b: {template: '{{trim body.y}}', default: none}}",
            json!({}),
        );
        assert_eq!(r.expect("renders"), Some(json!({"a": "direct", "b": "none"})));
        let bad = render("{n: {template: '{{to_number body.x}}', default: 0}}", json!({"x": "abc"}));
        assert!(bad.expect_err("bad data is an error").0.contains("not a number"));
    }

    #[test]
    fn required_and_type_coercion() {
        let e = render("{email: {path: $.body.email, required: true}}", json!({})).expect_err("required");
        assert!(e.0.starts_with("m.yaml:1:"), "{}", e.0);
        assert_eq!(e.kind(), RenderErrorKind::Field);
        assert!(e.0.contains("`$.body.email` selected nothing"), "{}", e.0);
        let out = render(
            "{a: {path: $.body.a, type: number}, b: {path: $.body.b, type: integer}, c: {path: $.body.c, type: boolean}, \
             d: {path: $.body.d, type: string}, e: {path: $.body.e, type: json}}",
            json!({"a": "12.5", "b": "42", "c": "yes", "d": 5, "e": "{\"k\":[1]}"}),
        );
        assert_eq!(
            out.expect("renders"),
            Some(json!({"a": 12.5, "b": 42, "c": true, "d": "5", "e": {"k": [1]}}))
        );
        assert!(render("{a: {path: $.body.a, type: integer}}", json!({"a": "1.5"})).is_err());
    }

    #[test]
    fn field_key_errors_point_at_the_key() {
        let node: Node = crate::mapping::from_yaml("a:\n  path: $.x\n  typo: 1\n").expect("yaml");
        let mut ts = Templates::new(Arc::new(HashMap::new()));
        let e = MapNode::compile(&node, &FileCtx::new("m.yaml"), &mut ts).expect_err("typo");
        assert_eq!((e.line, e.col), (3, 9));
        assert!(e.message.contains("unknown key `typo`"), "{}", e.message);
    }
}
