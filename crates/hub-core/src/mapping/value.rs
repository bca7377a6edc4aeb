//! `map` trees: output fields built from JSONPath selections, templates and literals.

use super::diag::{Diagnostic, FileCtx};
use super::node::{Loc, Node, NodeKind};
use super::selector::Selector;
use super::template::{Escape, TemplateRef, Templates, is_template};
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

/// A failure while rendering one route; the message names file:line of the failing field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

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
    pub fn render(&self, env: &Value, ts: &Templates, fx: &FileCtx) -> Result<Option<Value>, RenderError> {
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
        let t = ts.compile(s, Escape::Plain).map_err(|e| fx.at(loc, e))?;
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
            let selector = Selector::compile(s).map_err(|e| fx.at(v.loc, e))?;
            let all = entries.iter().any(|(k, v)| k == "all" && matches!(v.kind, NodeKind::Bool(true)));
            FieldSource::Select { selector, all }
        }
        "template" => {
            let s = v.as_str().ok_or_else(|| fx.at(v.loc, "`template` must be a string"))?;
            FieldSource::Template(ts.compile(s, Escape::Plain).map_err(|e| fx.at(v.loc, e))?)
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

/// Absent: nothing selected, null, or an empty string.
fn is_absent(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

impl Field {
    fn render(&self, env: &Value, ts: &Templates, fx: &FileCtx) -> Result<Option<Value>, RenderError> {
        let at = |msg: String| RenderError(fx.at(self.loc, msg).to_string());
        let value = match &self.source {
            FieldSource::Value(v) => Some(v.clone()),
            FieldSource::Select { selector, all: true } => {
                Some(Value::Array(selector.select(env).into_iter().cloned().collect()))
            }
            FieldSource::Select { selector, all: false } => selector.first(env).cloned(),
            FieldSource::Template(t) => match ts.render(t, env) {
                Ok(s) => Some(Value::String(s)),
                // A default also covers a template whose variables are missing.
                Err(_) if self.default.is_some() => None,
                Err(e) => return Err(at(e)),
            },
        };
        let value = if is_absent(&value) {
            match &self.default {
                Some(d) => d.render(env, ts, fx)?,
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
