//! Route conditions (`when`): comparisons on JSONPath values or headers, nested with all/any/not.
//!
//! A leaf holds when any selected node satisfies its operator (`ne` when none equals; `exists`
//! when something was selected). Scalars compare loosely: form bodies carry only strings, so
//! `eq: 142` matches `"142"`.

use super::diag::{Diagnostic, FileCtx};
use super::node::{Node, NodeKind};
use super::selector::Selector;
use regex::Regex;
use serde_json::Value;

#[derive(Clone, Debug)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Leaf { target: Target, op: Op },
}

#[derive(Clone, Debug)]
pub enum Target {
    Path(Selector),
    /// Header name, lower-cased.
    Header(String),
}

#[derive(Clone, Debug)]
pub enum Op {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    Contains(Value),
    StartsWith(String),
    EndsWith(String),
    Exists(bool),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Regex(Regex),
}

const OPS: &[&str] =
    &["eq", "ne", "in", "contains", "starts_with", "ends_with", "exists", "gt", "gte", "lt", "lte", "regex"];

impl Condition {
    pub fn compile(node: &Node, fx: &FileCtx) -> Result<Condition, Diagnostic> {
        let Some(entries) = node.as_map() else {
            return Err(fx.at(node.loc, format!("a condition must be a mapping, found {}", node.type_name())));
        };
        if let [(k, v)] = entries {
            match k.as_str() {
                "all" | "any" => {
                    let NodeKind::Seq(items) = &v.kind else {
                        return Err(fx.at(v.loc, format!("`{k}` takes a list of conditions")));
                    };
                    if items.is_empty() {
                        return Err(fx.at(v.loc, format!("`{k}` needs at least one condition")));
                    }
                    let cs =
                        items.iter().map(|c| Condition::compile(c, fx)).collect::<Result<Vec<_>, _>>()?;
                    return Ok(if k == "all" { Condition::All(cs) } else { Condition::Any(cs) });
                }
                "not" => return Ok(Condition::Not(Box::new(Condition::compile(v, fx)?))),
                _ => {}
            }
        }
        let mut target = None;
        let mut op = None;
        for (k, v) in entries {
            match k.as_str() {
                "path" => {
                    let s = v.as_str().ok_or_else(|| fx.at(v.loc, "`path` must be a JSONPath string"))?;
                    target =
                        Some(Target::Path(Selector::compile(s).map_err(|e| fx.at(v.loc, e.to_string()))?));
                }
                "header" => {
                    let s = v.as_str().ok_or_else(|| fx.at(v.loc, "`header` must be a header name"))?;
                    target = Some(Target::Header(s.to_ascii_lowercase()));
                }
                o if OPS.contains(&o) => {
                    if op.is_some() {
                        return Err(
                            fx.at(v.loc, "a condition takes exactly one operator; combine with `all`")
                        );
                    }
                    op = Some(compile_op(o, v, fx)?);
                }
                "all" | "any" | "not" => {
                    return Err(fx.at(v.loc, format!("`{k}` must be the only key of its condition")));
                }
                other => {
                    return Err(fx.at(
                        v.loc,
                        format!(
                            "unknown key `{other}` in condition, expected `path` or `header` and one of {}, or all/any/not",
                            OPS.join(", ")
                        ),
                    ));
                }
            }
        }
        match (target, op) {
            (Some(target), Some(op)) => Ok(Condition::Leaf { target, op }),
            (None, _) => Err(fx.at(node.loc, "condition needs `path` (JSONPath) or `header`")),
            (_, None) => {
                Err(fx.at(node.loc, format!("condition needs an operator: one of {}", OPS.join(", "))))
            }
        }
    }

    pub fn eval(&self, envelope: &Value, headers: &crate::request::Headers) -> bool {
        match self {
            Condition::All(cs) => cs.iter().all(|c| c.eval(envelope, headers)),
            Condition::Any(cs) => cs.iter().any(|c| c.eval(envelope, headers)),
            Condition::Not(c) => !c.eval(envelope, headers),
            Condition::Leaf { target, op } => {
                let header_value;
                let values: Vec<&Value> = match target {
                    Target::Path(sel) => sel.select(envelope),
                    Target::Header(name) => {
                        header_value = headers.get(name).map(|s| Value::String(s.to_string()));
                        header_value.iter().collect()
                    }
                };
                op.holds(&values)
            }
        }
    }
}

fn compile_op(name: &str, v: &Node, fx: &FileCtx) -> Result<Op, Diagnostic> {
    let number = || -> Result<f64, Diagnostic> {
        match &v.kind {
            NodeKind::Int(i) => Ok(*i as f64),
            NodeKind::Float(f) => Ok(*f),
            _ => Err(fx.at(v.loc, format!("`{name}` compares numbers; found {}", v.type_name()))),
        }
    };
    let string = || -> Result<String, Diagnostic> {
        v.as_str().map(str::to_string).ok_or_else(|| fx.at(v.loc, format!("`{name}` takes a string")))
    };
    Ok(match name {
        "eq" => Op::Eq(v.to_json()),
        "ne" => Op::Ne(v.to_json()),
        "in" => match &v.kind {
            NodeKind::Seq(items) => Op::In(items.iter().map(Node::to_json).collect()),
            _ => return Err(fx.at(v.loc, "`in` takes a list of values")),
        },
        "contains" => Op::Contains(v.to_json()),
        "starts_with" => Op::StartsWith(string()?),
        "ends_with" => Op::EndsWith(string()?),
        "exists" => match v.kind {
            NodeKind::Bool(b) => Op::Exists(b),
            _ => return Err(fx.at(v.loc, "`exists` takes true or false")),
        },
        "gt" => Op::Gt(number()?),
        "gte" => Op::Gte(number()?),
        "lt" => Op::Lt(number()?),
        "lte" => Op::Lte(number()?),
        "regex" => {
            let s = string()?;
            Op::Regex(Regex::new(&s).map_err(|e| fx.at(v.loc, format!("invalid regex: {e}")))?)
        }
        _ => return Err(fx.at(v.loc, format!("unknown operator `{name}`"))),
    })
}

/// Text form of a scalar for loose comparison; `None` for arrays, objects and null.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Equality that lets `"142"` equal `142` and `"1.50"` equal `1.5`.
pub fn loose_eq(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a, b) {
        (Value::Number(_), Value::String(_)) | (Value::String(_), Value::Number(_)) => {
            match (as_number(a), as_number(b)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
        }
        (Value::Bool(_), Value::String(_)) | (Value::String(_), Value::Bool(_)) => {
            scalar_text(a).zip(scalar_text(b)).is_some_and(|(x, y)| x.eq_ignore_ascii_case(&y))
        }
        _ => false,
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

impl Op {
    fn holds(&self, values: &[&Value]) -> bool {
        match self {
            Op::Exists(want) => values.is_empty() != *want,
            Op::Ne(x) => !values.iter().any(|v| loose_eq(v, x)),
            _ => values.iter().any(|v| self.holds_one(v)),
        }
    }

    fn holds_one(&self, v: &Value) -> bool {
        match self {
            Op::Eq(x) => loose_eq(v, x),
            Op::In(xs) => xs.iter().any(|x| loose_eq(v, x)),
            Op::Contains(x) => match v {
                Value::Array(items) => items.iter().any(|i| loose_eq(i, x)),
                Value::String(s) => scalar_text(x).is_some_and(|t| s.contains(&t)),
                Value::Object(m) => x.as_str().is_some_and(|k| m.contains_key(k)),
                _ => false,
            },
            Op::StartsWith(p) => scalar_text(v).is_some_and(|s| s.starts_with(p.as_str())),
            Op::EndsWith(p) => scalar_text(v).is_some_and(|s| s.ends_with(p.as_str())),
            Op::Gt(n) => as_number(v).is_some_and(|x| x > *n),
            Op::Gte(n) => as_number(v).is_some_and(|x| x >= *n),
            Op::Lt(n) => as_number(v).is_some_and(|x| x < *n),
            Op::Lte(n) => as_number(v).is_some_and(|x| x <= *n),
            Op::Regex(r) => scalar_text(v).is_some_and(|s| r.is_match(&s)),
            Op::Exists(_) | Op::Ne(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use serde_json::json;

    fn cond(yaml: &str) -> Result<Condition, Diagnostic> {
        let node: Node = crate::mapping::from_yaml(yaml).expect("yaml");
        Condition::compile(&node, &FileCtx::new("t.yaml"))
    }

    fn eval(yaml: &str, env: &Value) -> bool {
        let mut h = Headers::new();
        h.push("X-Event", "lead.created");
        cond(yaml).expect("compiles").eval(env, &h)
    }

    #[test]
    fn operators() {
        let env =
            json!({"body": {"status": "142", "amount": 120.5, "tags": ["vip", "b2b"], "email": "a@ex.com"}});
        assert!(eval("{path: $.body.status, eq: 142}", &env));
        assert!(eval("{path: $.body.status, in: [141, 142]}", &env));
        assert!(!eval("{path: $.body.status, ne: '142'}", &env));
        assert!(eval("{path: $.body.tags, contains: vip}", &env));
        assert!(eval("{path: $.body.email, ends_with: '@ex.com'}", &env));
        assert!(eval("{path: $.body.amount, gt: 100}", &env));
        assert!(!eval("{path: $.body.amount, lte: 100}", &env));
        assert!(eval("{path: $.body.missing, exists: false}", &env));
        assert!(eval("{path: $.body.email, regex: '^[^@]+@ex\\.com$'}", &env));
        assert!(eval("{header: x-event, starts_with: lead.}", &env));
        assert!(eval("{path: '$.body.tags[*]', eq: b2b}", &env));
    }

    #[test]
    fn nesting() {
        let env = json!({"body": {"a": "1", "b": "2"}});
        assert!(eval("all: [{path: $.body.a, eq: 1}, {not: {path: $.body.b, eq: 3}}]", &env));
        assert!(eval("any: [{path: $.body.a, eq: 9}, {path: $.body.b, eq: 2}]", &env));
        assert!(!eval("any: [{path: $.body.a, eq: 9}, {path: $.body.b, eq: 9}]", &env));
    }

    #[test]
    fn compile_errors_point_at_the_line() {
        let e = cond("all:\n  - path: $.a\n    eq: 1\n  - path: $.b\n    equals: 2\n").unwrap_err();
        assert_eq!((e.line, e.col), (5, 13));
        assert!(e.message.contains("unknown key `equals`"), "{}", e.message);
        let e = cond("path: '$.first name'\neq: 1\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(cond("path: $.a\ngt: abc\n").unwrap_err().message.contains("compares numbers"));
        assert!(cond("path: $.a\nregex: '('\n").unwrap_err().message.contains("invalid regex"));
        assert!(cond("path: $.a\n").unwrap_err().message.contains("needs an operator"));
    }
}
