//! `lookup`: the file's lookup tables, or an index/key into an array or object.

use super::{Call, HelperDecl, Literals, Lookups, Run, text};
use handlebars::{Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, ScopedJson};
use serde_json::Value as Json;

fn lookup_key(v: &Json) -> Option<usize> {
    match v {
        Json::Number(n) => n.as_u64().and_then(|u| usize::try_from(u).ok()),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

struct Lookup {
    lookups: Lookups,
}

impl HelperDef for Lookup {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let c = Call::new("lookup", h)?;
        let source = c.arg(0)?;
        let key = c.lenient_arg(1);
        let fallback = c.opt_arg(2)?;
        let found = match source {
            Json::String(name) => {
                let table = self
                    .lookups
                    .get(name)
                    .ok_or_else(|| c.fail(format_args!("unknown lookup table `{name}`")))?;
                let hit = table.entries.get(text(key).as_ref()).or(table.default.as_ref()).or(fallback);
                return Ok(ScopedJson::Derived(hit.cloned().unwrap_or_else(|| Json::String(String::new()))));
            }
            Json::Array(items) => lookup_key(key).and_then(|i| items.get(i)),
            Json::Object(map) => map.get(text(key).as_ref()),
            other => {
                return Err(
                    c.fail(format_args!("expected a lookup table name, an object or an array, got {other}"))
                );
            }
        };
        match found.or(fallback) {
            Some(v) => Ok(ScopedJson::Derived(v.clone())),
            // Same contract as the built-in `lookup` this helper replaces.
            None if r.strict_mode() => Err(c.fail(format_args!("no entry {key} in {}", text(source)))),
            None => Ok(ScopedJson::Derived(Json::Null)),
        }
    }
}

fn check_lookup(l: &Literals<'_>) -> Result<(), String> {
    match l.arg(0) {
        Some(Json::String(table)) if !l.lookups().contains_key(table) => {
            let mut declared: Vec<&str> = l.lookups().keys().map(String::as_str).collect();
            declared.sort_unstable();
            let declared = if declared.is_empty() { "none".to_owned() } else { declared.join(", ") };
            Err(format!("unknown lookup table `{table}` (declared: {declared})"))
        }
        Some(Json::String(_)) | None => Ok(()),
        Some(other) => Err(format!("the first argument must name a lookup table, got {other}")),
    }
}

pub(super) const HELPERS: &[HelperDecl] = &[HelperDecl::new(
    "lookup",
    "table key [fallback]",
    2,
    3,
    Run::Stateful(|lookups| Box::new(Lookup { lookups: lookups.clone() })),
    "The value of `key` in the file's lookup table `table` (else its `_default`, else `fallback`); given an array or object, the item at that index or key.",
)
.check(check_lookup)];

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use serde_json::json;

    #[test]
    fn lookup_tables_and_collections() {
        assert_eq!(render("{{lookup \"stage\" body.stage}}", json!({"stage": "won"})), "Customer");
        assert_eq!(render("{{lookup \"stage\" body.stage}}", json!({"stage": "lost"})), "Other");
        assert_eq!(render("{{lookup \"stage\" body.stage}}", json!({})), "Other");
        assert_eq!(render("{{lookup \"stage\" body.n}}", json!({"n": 3})), "Three");
        assert_eq!(render("{{lookup \"owner\" body.region 1}}", json!({"region": "apac"})), "1");
        assert_eq!(render("[{{lookup \"owner\" body.region}}]", json!({"region": "apac"})), "[]");
        assert_eq!(
            render("{{#if (gt (lookup \"owner\" body.region) 10)}}ok{{/if}}", json!({"region": "emea"})),
            "ok"
        );
        let err = render_err("{{lookup body.table body.k}}", json!({"table": "nope", "k": "x"}));
        assert!(err.contains("lookup: unknown lookup table `nope`"), "{err}");
        let body = json!({"items": ["zero", "one"], "map": {"k": "v"}});
        assert_eq!(render("{{lookup body.items 1}}|{{lookup body.map \"k\"}}", body.clone()), "one|v");
        assert_eq!(
            render("{{#each body.items}}{{lookup ../body.items @index}};{{/each}}", body.clone()),
            "zero;one;"
        );
        assert_eq!(render("{{lookup body.map \"x\" \"fb\"}}", body.clone()), "fb");
        assert!(render_err("{{lookup body.items 7}}", body).contains("lookup: no entry 7"));
    }
}
