//! Handlebars templates, compiled at load: one registry per output kind, so escaping always fits
//! where the text lands (JSON string, URL, form body, plain text) and is never HTML escaping.

use super::helpers::{self, LookupTable};
use handlebars::Handlebars;
use handlebars::template::{Parameter, Template, TemplateElement};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Where a template's output goes, which decides how values are escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Escape {
    /// Map values and headers: inserted as data, no escaping.
    Plain,
    /// Inside a JSON document: values escaped as JSON string content.
    Json,
    /// A URL: values percent-encoded (RFC 3986 unreserved kept).
    Url,
    /// An `application/x-www-form-urlencoded` body.
    Form,
}

/// A compiled template: its registry kind and name.
#[derive(Clone, Debug)]
pub struct TemplateRef {
    pub escape: Escape,
    pub name: String,
}

/// Characters kept as-is in URL values: RFC 3986 unreserved.
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default().to_string()
}

fn url_escape(s: &str) -> String {
    utf8_percent_encode(s, URL_VALUE).to_string()
}

fn form_escape(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The templates of one mapping file.
pub struct Templates {
    registries: HashMap<Escape, Handlebars<'static>>,
    lookups: Arc<HashMap<String, LookupTable>>,
    next: usize,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").field("count", &self.next).finish()
    }
}

impl Templates {
    pub fn new(lookups: Arc<HashMap<String, LookupTable>>) -> Self {
        let mut registries = HashMap::new();
        for (kind, escape) in [
            (Escape::Plain, handlebars::no_escape as fn(&str) -> String),
            (Escape::Json, json_escape),
            (Escape::Url, url_escape),
            (Escape::Form, form_escape),
        ] {
            let mut hb = Handlebars::new();
            hb.set_strict_mode(true);
            hb.set_prevent_indent(true);
            hb.register_escape_fn(escape);
            helpers::register_helpers(&mut hb, lookups.clone());
            registries.insert(kind, hb);
        }
        Self { registries, lookups, next: 0 }
    }

    /// Compiles and registers `source`. Errors are reasons (the caller adds file and line).
    pub fn compile(&mut self, source: &str, escape: Escape) -> Result<TemplateRef, TemplateError> {
        let tpl = Template::compile(source).map_err(|e| match e.pos() {
            Some((line, col)) => TemplateError::Syntax { line, col, reason: e.reason().to_string() },
            None => TemplateError::SyntaxAnywhere(e.reason().to_string()),
        })?;
        check_elements(&tpl.elements, escape, &self.lookups)?;
        let name = format!("t{}", self.next);
        self.next += 1;
        let hb = self.registries.get_mut(&escape).ok_or(TemplateError::NoRegistry)?;
        hb.register_template(&name, tpl);
        Ok(TemplateRef { escape, name })
    }

    /// Renders `t`, telling a missing value apart from other failures.
    pub fn render(&self, t: &TemplateRef, env: &Env<'_>) -> Result<String, RenderFailure> {
        let Some(hb) = self.registries.get(&t.escape) else {
            return Err(RenderFailure::Failed("no registry".into()));
        };
        hb.render_with_context(&t.name, env.context()).map_err(|e| {
            let reason = render_reason(&e);
            if helpers::is_missing_error(&e) {
                RenderFailure::Missing(reason)
            } else {
                RenderFailure::Failed(reason)
            }
        })
    }
}

/// Why a template does not compile.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template error at {line}:{col} of the template: {reason}")]
    Syntax { line: usize, col: usize, reason: String },
    #[error("template error: {0}")]
    SyntaxAnywhere(String),
    #[error(
        "`{{{{{{...}}}}}}` would bypass escaping; use `{{{{...}}}}` (or `{{{{{{json x}}}}}}` to embed JSON)"
    )]
    BypassesEscaping,
    #[error("unknown block helper `#{name}` (block helpers: {known})")]
    UnknownBlockHelper { name: String, known: String },
    #[error("unknown helper `{0}`")]
    UnknownHelper(String),
    /// A call to a known helper that can never succeed (its arity, named or literal arguments).
    #[error("{helper}: {reason}")]
    HelperCall { helper: String, reason: String },
    /// A construct mapping templates do not support (partials, decorators).
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("no registry")]
    NoRegistry,
}

/// The document a route renders against: the JSON envelope for selectors, and the same as a
/// Handlebars context. A borrowed envelope gets its context on first use (building it copies
/// the envelope, which per template would dominate the cost of rendering); an owned one is the
/// context itself, so a `for_each` route copies the envelope once and swaps `item`/`index` in
/// place for each node.
pub struct Env<'a> {
    inner: Inner<'a>,
}

enum Inner<'a> {
    Borrowed { value: &'a Value, ctx: std::cell::OnceCell<handlebars::Context> },
    Owned(handlebars::Context),
}

impl<'a> Env<'a> {
    pub fn new(value: &'a Value) -> Self {
        Self { inner: Inner::Borrowed { value, ctx: std::cell::OnceCell::new() } }
    }

    /// An envelope owned by the context: no further copy is made to render templates.
    pub fn owned(value: Value) -> Env<'static> {
        Env { inner: Inner::Owned(handlebars::Context::from(value)) }
    }

    /// The envelope.
    pub fn value(&self) -> &Value {
        match &self.inner {
            Inner::Borrowed { value, .. } => value,
            Inner::Owned(ctx) => ctx.data(),
        }
    }

    /// Puts the `for_each` node and its position in place (owned envelopes only; a borrowed
    /// one is left as it is).
    pub fn set_item(&mut self, item: Value, index: usize) {
        if let Inner::Owned(ctx) = &mut self.inner
            && let Value::Object(m) = ctx.data_mut()
        {
            m.insert("item".into(), item);
            m.insert("index".into(), Value::from(index));
        }
    }

    fn context(&self) -> &handlebars::Context {
        match &self.inner {
            Inner::Borrowed { value, ctx } => ctx.get_or_init(|| handlebars::Context::from((*value).clone())),
            Inner::Owned(ctx) => ctx,
        }
    }
}

/// Why a template did not render.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderFailure {
    /// A value it needs is absent (a field's `default` may cover that).
    #[error("{0}")]
    Missing(String),
    /// Anything else: a helper refused the data, or the output could not be written.
    #[error("{0}")]
    Failed(String),
}

impl RenderFailure {
    pub fn is_missing(&self) -> bool {
        matches!(self, RenderFailure::Missing(_))
    }
}

/// Whether a string needs Handlebars at all (most map values are plain literals).
pub fn is_template(s: &str) -> bool {
    s.contains("{{")
}

fn render_reason(e: &handlebars::RenderError) -> String {
    let reason = helpers::reason_text(e);
    match (e.line_no, e.column_no) {
        (Some(l), Some(c)) => format!("{reason} (template {l}:{c})"),
        _ => reason,
    }
}

fn check_elements(
    elements: &[TemplateElement],
    escape: Escape,
    lookups: &HashMap<String, LookupTable>,
) -> Result<(), TemplateError> {
    for el in elements {
        match el {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
            TemplateElement::HtmlExpression(h) => {
                // `{{{json x}}}` is how a JSON body embeds an array or object: the helper's
                // output is JSON already. Anything else unescaped could break the document.
                let is_json_call = matches!(&h.name, Parameter::Name(n) if n == "json");
                if escape != Escape::Plain && !(escape == Escape::Json && is_json_call) {
                    return Err(TemplateError::BypassesEscaping);
                }
                check_call(h, lookups)?;
            }
            TemplateElement::Expression(h) => check_call(h, lookups)?,
            TemplateElement::HelperBlock(h) => {
                if let Parameter::Name(n) = &h.name
                    && !helpers::block_helpers().any(|b| b == n)
                {
                    return Err(TemplateError::UnknownBlockHelper {
                        name: n.clone(),
                        known: helpers::block_helpers().collect::<Vec<_>>().join(", "),
                    });
                }
                check_params(h, lookups)?;
                if let Some(t) = &h.template {
                    check_elements(&t.elements, escape, lookups)?;
                }
                if let Some(t) = &h.inverse {
                    check_elements(&t.elements, escape, lookups)?;
                }
            }
            TemplateElement::DecoratorExpression(_)
            | TemplateElement::DecoratorBlock(_)
            | TemplateElement::PartialExpression(_)
            | TemplateElement::PartialBlock(_) => {
                return Err(TemplateError::Unsupported(
                    "partials and decorators are not supported in mapping templates",
                ));
            }
            _ => return Err(TemplateError::Unsupported("unsupported template construct")),
        }
    }
    Ok(())
}

fn check_call(
    h: &handlebars::template::HelperTemplate,
    lookups: &HashMap<String, LookupTable>,
) -> Result<(), TemplateError> {
    if let Parameter::Name(n) = &h.name {
        let is_call = !h.params.is_empty() || !h.hash.is_empty();
        let known = helpers::is_known(n);
        if is_call && !known {
            return Err(TemplateError::UnknownHelper(n.clone()));
        }
        if known {
            let literals: Vec<Option<&Value>> = h.params.iter().map(literal).collect();
            let hash: Vec<(&str, Option<&Value>)> =
                h.hash.iter().map(|(k, v)| (k.as_str(), literal(v))).collect();
            helpers::check_call(n, &literals, &hash, lookups)
                .map_err(|reason| TemplateError::HelperCall { helper: n.clone(), reason })?;
        }
    }
    check_params(h, lookups)
}

fn check_params(
    h: &handlebars::template::HelperTemplate,
    lookups: &HashMap<String, LookupTable>,
) -> Result<(), TemplateError> {
    for p in h.params.iter().chain(h.hash.values()) {
        if let Parameter::Subexpression(se) = p {
            match se.element.as_ref() {
                TemplateElement::Expression(inner) | TemplateElement::HtmlExpression(inner) => {
                    check_call(inner, lookups)?
                }
                _ => return Err(TemplateError::Unsupported("unsupported sub-expression")),
            }
        }
    }
    Ok(())
}

fn literal(p: &Parameter) -> Option<&Value> {
    match p {
        Parameter::Literal(v) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t() -> Templates {
        Templates::new(Arc::new(HashMap::new()))
    }

    #[test]
    fn escaping_follows_the_output_kind() {
        let mut ts = t();
        let ctx = json!({"body": {"name": "A \"quoted\" <b>&/x y"}});
        let j = ts.compile(r#"{"n": "{{body.name}}"}"#, Escape::Json).expect("compiles");
        let out = ts.render(&j, &Env::new(&ctx)).expect("renders");
        assert_eq!(serde_json::from_str::<Value>(&out).expect("json"), json!({"n": "A \"quoted\" <b>&/x y"}));
        let u = ts.compile("https://x.test/c/{{body.name}}", Escape::Url).expect("compiles");
        assert_eq!(
            ts.render(&u, &Env::new(&ctx)).expect("renders"),
            "https://x.test/c/A%20%22quoted%22%20%3Cb%3E%26%2Fx%20y"
        );
        let p = ts.compile("{{body.name}}", Escape::Plain).expect("compiles");
        assert_eq!(ts.render(&p, &Env::new(&ctx)).expect("renders"), "A \"quoted\" <b>&/x y");
        let f = ts.compile("n={{body.name}}", Escape::Form).expect("compiles");
        assert_eq!(ts.render(&f, &Env::new(&ctx)).expect("renders"), "n=A+%22quoted%22+%3Cb%3E%26%2Fx+y");
    }

    #[test]
    fn json_bodies_embed_arrays_with_triple_stash_json() {
        let mut ts = t();
        let j = ts
            .compile(r#"{"tags": {{{json body.tags}}}, "n": "{{body.n}}"}"#, Escape::Json)
            .expect("compiles");
        let doc = json!({"body": {"tags": ["a", "b\"c"], "n": "x\"y"}});
        let out = ts.render(&j, &Env::new(&doc)).expect("renders");
        assert_eq!(
            serde_json::from_str::<Value>(&out).expect("valid JSON"),
            json!({"tags": ["a", "b\"c"], "n": "x\"y"})
        );
    }

    #[test]
    fn strict_mode_reports_missing_fields() {
        let mut ts = t();
        let p = ts.compile("{{body.nope}}", Escape::Plain).expect("compiles");
        let e = ts.render(&p, &Env::new(&json!({"body": {}}))).unwrap_err();
        assert!(e.is_missing() && e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn compile_rejects_unknown_helpers_triple_stash_and_partials() {
        let mut ts = t();
        assert!(
            ts.compile("{{shout body.x}}", Escape::Plain)
                .unwrap_err()
                .to_string()
                .contains("unknown helper `shout`")
        );
        assert!(
            ts.compile("{{lower (shout body.x)}}", Escape::Plain).unwrap_err().to_string().contains("shout")
        );
        assert!(
            ts.compile("{{#loop x}}{{/loop}}", Escape::Plain)
                .unwrap_err()
                .to_string()
                .contains("block helper")
        );
        assert!(ts.compile("{{{body.x}}}", Escape::Json).unwrap_err().to_string().contains("bypass"));
        assert!(ts.compile("{{{json body.x}}}", Escape::Url).unwrap_err().to_string().contains("bypass"));
        assert!(ts.compile("{{> other}}", Escape::Plain).unwrap_err().to_string().contains("partials"));
        assert!(ts.compile("{{#if x}}", Escape::Plain).unwrap_err().to_string().contains("template error"));
    }

    #[test]
    fn errors_are_typed() {
        let mut ts = t();
        assert_eq!(
            ts.compile("{{shout body.x}}", Escape::Plain).unwrap_err(),
            TemplateError::UnknownHelper("shout".into())
        );
        assert_eq!(
            ts.compile("{{trim a b}}", Escape::Plain).unwrap_err(),
            TemplateError::HelperCall { helper: "trim".into(), reason: "expects 1 argument, got 2".into() }
        );
        assert!(matches!(ts.compile("{{#if x}}", Escape::Plain), Err(TemplateError::Syntax { line: 1, .. })));
        let doc = json!({"body": {"x": "abc"}});
        let missing = ts.compile("{{trim body.nope}}", Escape::Plain).expect("compiles");
        assert!(
            matches!(ts.render(&missing, &Env::new(&doc)), Err(RenderFailure::Missing(m)) if m.starts_with("trim: `body.nope` is missing"))
        );
        let bad = ts.compile("{{to_number body.x}}", Escape::Plain).expect("compiles");
        assert!(
            matches!(ts.render(&bad, &Env::new(&doc)), Err(RenderFailure::Failed(m)) if m.starts_with("to_number: \"abc\" is not a number"))
        );
    }
}
