//! Compiled JSONPath selectors (RFC 9535), parsed once at load.

use jsonpath_rust::parser::model::JpQuery;
use serde_json::Value;

/// A path that is not RFC 9535 JSONPath: the path, and the parser's reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSONPath `{path}`: {reason}")]
pub struct SelectorError {
    pub path: String,
    pub reason: String,
}

#[derive(Clone, Debug)]
pub struct Selector {
    source: String,
    query: JpQuery,
}

impl Selector {
    /// Compiles `path`. Both jsonpath-rust (the evaluator) and serde_json_path (a strict RFC 9535
    /// parser) must accept it: the former alone reads `$.first name` or `@.a in [..]` as odd
    /// names and silently matches nothing.
    pub fn compile(path: &str) -> Result<Self, SelectorError> {
        let invalid = |reason: String| SelectorError { path: path.to_string(), reason };
        if let Err(e) = serde_json_path::JsonPath::parse(path) {
            return Err(invalid(e.to_string()));
        }
        let query = jsonpath_rust::parser::parse_json_path(path).map_err(|e| invalid(e.to_string()))?;
        Ok(Self { source: path.to_string(), query })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Every node the query selects, in document order.
    pub fn select<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        match jsonpath_rust::query::js_path_process(&self.query, value) {
            Ok(refs) => refs.into_iter().map(|r| r.val()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Where each selected node is, as JSON Pointers (RFC 6901), in document order.
    pub fn pointers(&self, value: &Value) -> Vec<String> {
        use jsonpath_rust::parser::model::{Segment, Selector as Sel};
        let Ok(refs) = jsonpath_rust::query::js_path_process(&self.query, value) else { return Vec::new() };
        refs.into_iter()
            .filter_map(|r| {
                // Result paths are normalized paths (`$['a'][0]`): names and indices only.
                let q = jsonpath_rust::parser::parse_json_path(&r.path()).ok()?;
                let mut pointer = String::new();
                for seg in q.segments {
                    match seg {
                        Segment::Selector(Sel::Name(n)) => {
                            pointer.push('/');
                            pointer.push_str(&n.replace('~', "~0").replace('/', "~1"));
                        }
                        Segment::Selector(Sel::Index(i)) => pointer.push_str(&format!("/{i}")),
                        _ => return None,
                    }
                }
                Some(pointer)
            })
            .collect()
    }

    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.select(value).into_iter().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_with_filters() {
        let v = json!({"answers": [
            {"field": {"ref": "name"}, "text": "Ann"},
            {"field": {"ref": "company_size"}, "choice": {"label": "11-50"}}
        ]});
        let s = Selector::compile("$.answers[?@.field.ref=='company_size'].choice.label").expect("valid");
        assert_eq!(s.first(&v), Some(&json!("11-50")));
        assert!(Selector::compile("$.missing").expect("valid").select(&v).is_empty());
    }

    #[test]
    fn rejects_non_rfc_paths() {
        assert!(Selector::compile("$.first name").is_err());
        assert!(Selector::compile("$[?@.a in ['x']]").is_err());
        assert!(Selector::compile("body.x").is_err());
        assert!(Selector::compile("$[").is_err());
        let e = Selector::compile("body.x").expect_err("no root");
        assert_eq!(e.path, "body.x");
        assert!(e.to_string().starts_with("invalid JSONPath `body.x`: "), "{e}");
    }
}
