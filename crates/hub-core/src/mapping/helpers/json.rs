//! JSON helpers: serialize, parse, decode base64, and JSONPath into the envelope.

use super::{BoundedCache, Call, HelperDecl, Literals, Run, truthy};
use handlebars::{Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, ScopedJson};
use jsonpath_rust::parser::model::JpQuery;
use serde_json::Value as Json;
use std::sync::Arc;

/// `parse_json s`: the JSON value a string holds (LiqPay `data` after `decode_base64`, Mandrill's
/// `mandrill_events`), so its fields can be selected: `{{lookup (parse_json body.x) "id"}}`.
fn parse_json(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    match c.arg(0)? {
        Json::String(s) => serde_json::from_str(s).map_err(|e| c.fail(format_args!("not JSON: {e}"))),
        other => Ok(other.clone()),
    }
}

/// `decode_base64 s`: standard or URL-safe alphabet, padding optional; the bytes must be UTF-8.
fn decode_base64(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let v = c.arg(0)?;
    let Json::String(s) = v else { return Err(c.fail(format_args!("{v} is not a string"))) };
    let t = s.trim().trim_end_matches('=');
    let bytes =
        STANDARD_NO_PAD.decode(t).or_else(|_| URL_SAFE_NO_PAD.decode(t)).map_err(|_| c.fail("not base64"))?;
    String::from_utf8(bytes).map(Json::String).map_err(|_| c.fail("decoded bytes are not UTF-8 text"))
}

fn json(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    Ok(Json::String(c.arg(0)?.to_string()))
}

#[derive(Default)]
struct JsonPathHelper {
    cache: BoundedCache<Arc<JpQuery>>,
}

impl HelperDef for JsonPathHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let c = Call::new("jp", h)?;
        let Json::String(path) = c.arg(0)? else {
            return Err(c.fail("the path must be a string"));
        };
        let all = c.named("all")?.is_some_and(truthy);
        let query = self
            .cache
            .get_or_try_insert(path, |p| jsonpath_rust::parser::parse_json_path(p).map(Arc::new))
            .map_err(|e| c.fail(format_args!("invalid JSONPath `{path}`: {e}")))?;
        // Always the root envelope, so a path means the same thing inside `#each` and `#with`.
        let matches = jsonpath_rust::query::js_path_process(&query, ctx.data())
            .map_err(|e| c.fail(format_args!("cannot evaluate `{path}`: {e}")))?;
        let result = if all {
            Json::Array(matches.into_iter().map(|m| m.val().clone()).collect())
        } else {
            matches.into_iter().next().map(|m| m.val().clone()).unwrap_or(Json::Null)
        };
        Ok(ScopedJson::Derived(result))
    }
}

/// Paths are checked here, once: one taken from the request could be made as costly to run as
/// its sender likes.
fn check_jp(l: &Literals<'_>) -> Result<(), String> {
    match l.arg(0) {
        Some(Json::String(path)) => {
            jsonpath_rust::parser::parse_json_path(path)
                .map_err(|e| format!("invalid JSONPath `{path}`: {e}"))?;
            // jsonpath-rust also accepts non-RFC 9535 syntax (e.g. `$.first name`); the stricter
            // parser keeps mapping files portable.
            serde_json_path::JsonPath::parse(path).map_err(|e| format!("invalid JSONPath `{path}`: {e}"))?;
            Ok(())
        }
        Some(other) => Err(format!("the path must be a string, got {other}")),
        None => Err("the path must be a literal string".to_owned()),
    }
}

pub(super) const HELPERS: &[HelperDecl] = &[
    HelperDecl::new("json", "value", 1, 1, Run::Simple(json), "The value as JSON text (`{{{json x}}}` embeds it in a JSON body)."),
    HelperDecl::new(
        "parse_json",
        "value",
        1,
        1,
        Run::Simple(parse_json),
        "The JSON value a string holds, so its fields can be selected.",
    ),
    HelperDecl::new(
        "decode_base64",
        "value",
        1,
        1,
        Run::Simple(decode_base64),
        "The UTF-8 text of a base64 string (standard or URL-safe alphabet, padding optional).",
    ),
    HelperDecl::new(
        "jp",
        "path",
        1,
        1,
        Run::Stateful(|_| Box::new(JsonPathHelper::default())),
        "The first node the literal JSONPath `path` selects in the envelope; with `all=true`, every node as an array.",
    )
    .named(&["all"])
    .check(check_jp),
];

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use serde_json::json;

    #[test]
    fn json_serialization() {
        let body = json!({"obj": {"a": 1, "b": [true, null]}, "s": "x\"y"});
        assert_eq!(render("{{json body.obj}}", body.clone()), r#"{"a":1,"b":[true,null]}"#);
        assert_eq!(render("{{json body.s}}", body.clone()), r#""x\"y""#);
        assert!(render_err("{{json body.nope}}", body).contains("json: `body.nope` is missing"));
    }

    #[test]
    fn jp_queries_root_envelope() {
        let body = json!({"form_response": {"answers": [
            {"field": {"ref": "email"}, "type": "email", "email": "a@b.co"},
            {"field": {"ref": "company_size"}, "type": "choice", "choice": {"label": "51-200"}},
            {"field": {"ref": "tags"}, "type": "choice", "choice": {"label": "b2b"}}
        ]}});
        let t = r#"{{jp "$.body.form_response.answers[?@.field.ref=='company_size'].choice.label"}}"#;
        assert_eq!(render(t, body.clone()), "51-200");
        let t = r#"{{json (jp "$.body.form_response.answers[*].choice.label" all=true)}}"#;
        assert_eq!(render(t, body.clone()), r#"["51-200","b2b"]"#);
        let t = r#"{{default (jp "$.body.form_response.answers[?@.field.ref=='phone'].phone_number") "x"}}"#;
        assert_eq!(render(t, body.clone()), "x");
        let t = r#"{{#with body.form_response}}{{jp "$.headers['x-source']"}}{{/with}}"#;
        assert_eq!(render(t, body.clone()), "typeform");
        assert!(
            render_err("{{jp body.form_response}}", body.clone()).contains("jp: the path must be a string")
        );
        let err = render_err(r#"{{jp "$.body[?"}}"#, body);
        assert!(err.contains("jp: invalid JSONPath"), "{err}");
    }

    #[test]
    fn decoding_helpers() {
        // LiqPay's `data`: base64 of a JSON document.
        let body =
            json!({"data": "eyJvcmRlcl9pZCI6IjQyIiwiYW1vdW50IjoxLjV9", "raw": "{\"a\": [1]}", "bad": "%%"});
        assert_eq!(
            render("{{lookup (parse_json (decode_base64 body.data)) \"order_id\"}}", body.clone()),
            "42"
        );
        assert_eq!(render("{{json (parse_json body.raw)}}", body.clone()), r#"{"a":[1]}"#);
        assert!(render_err("{{decode_base64 body.bad}}", body.clone()).contains("not base64"));
        assert!(render_err("{{parse_json body.bad}}", body).contains("not JSON"));
    }
}
