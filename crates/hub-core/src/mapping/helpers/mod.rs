//! Handlebars helpers that integrators call from mapping templates (strings, names, phones, e-mails,
//! dates, lookup tables, JSONPath), plus the compile-time check of their literal arguments.
//!
//! Every helper is declared once, in its family's `HELPERS` table (`text`, `numbers`, `dates`,
//! `phone_email`, `lookup`, `json`, and the Handlebars built-ins we allow in `builtin`): its
//! name, arity, named arguments, literal checks, the function that runs it and a one-line
//! description. Registration, [`check_call`], [`is_known`] and the helper reference
//! in the docs are all derived from those tables.

mod builtin;
mod dates;
mod json;
mod lookup;
mod numbers;
mod phone_email;
#[cfg(test)]
mod test_support;
mod text;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Display;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use handlebars::{
    Context, Handlebars, Helper, HelperDef, PathAndJson, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};
use serde_json::Value as Json;

/// Every helper family, in the order the docs list them.
const FAMILIES: &[&[HelperDecl]] = &[
    text::HELPERS,
    phone_email::HELPERS,
    dates::HELPERS,
    lookup::HELPERS,
    numbers::HELPERS,
    json::HELPERS,
    builtin::HELPERS,
];

/// A helper as declared: what the compiler checks and the docs list, and what runs it.
pub struct HelperDecl {
    pub name: &'static str,
    /// The positional arguments as the docs show them: `[x]` optional, `x…` repeated.
    pub args: &'static str,
    /// Fewest and most positional arguments ([`VARIADIC`]: no upper bound).
    pub min: usize,
    pub max: usize,
    /// Allowed named (hash) arguments.
    pub named: &'static [&'static str],
    /// Checks of literal arguments at compile time: the reason a call can never succeed.
    pub check: Option<CheckFn>,
    pub run: Run,
    /// One line for the helper reference.
    pub summary: &'static str,
}

/// How a helper runs.
#[derive(Clone, Copy)]
pub enum Run {
    /// A stateless function of its arguments.
    Simple(SimpleFn),
    /// A helper with state (a cache, the file's lookup tables), built once per registry.
    Stateful(fn(&Lookups) -> Box<dyn HelperDef + Send + Sync>),
    /// A Handlebars built-in, allowed as it is.
    Builtin,
    /// A Handlebars built-in block helper (`{{#name}}...{{/name}}`).
    Block,
}

/// Compile-time check of a call's literal arguments.
pub type CheckFn = fn(&Literals<'_>) -> Result<(), String>;

/// The literal arguments of one call found in a template (`None`: not a literal).
pub struct Literals<'a> {
    args: &'a [Option<&'a Json>],
    hash: &'a [(&'a str, Option<&'a Json>)],
    lookups: &'a HashMap<String, LookupTable>,
}

impl<'a> Literals<'a> {
    pub fn arg(&self, i: usize) -> Option<&'a Json> {
        self.args.get(i).copied().flatten()
    }

    pub fn named(&self, key: &str) -> Option<&'a Json> {
        self.hash.iter().find(|(k, _)| *k == key).and_then(|(_, v)| *v)
    }

    pub fn lookups(&self) -> &'a HashMap<String, LookupTable> {
        self.lookups
    }
}

pub const VARIADIC: usize = usize::MAX;

impl HelperDecl {
    /// A helper of `min..=max` positional arguments, no named ones, no literal checks.
    pub const fn new(
        name: &'static str,
        args: &'static str,
        min: usize,
        max: usize,
        run: Run,
        summary: &'static str,
    ) -> Self {
        HelperDecl { name, args, min, max, named: &[], check: None, run, summary }
    }

    pub const fn named(mut self, named: &'static [&'static str]) -> Self {
        self.named = named;
        self
    }

    pub const fn check(mut self, check: CheckFn) -> Self {
        self.check = Some(check);
        self
    }
}

/// Every declared helper, in the order the docs list them.
pub fn all() -> impl Iterator<Item = &'static HelperDecl> {
    FAMILIES.iter().flat_map(|family| family.iter())
}

fn decl(name: &str) -> Option<&'static HelperDecl> {
    all().find(|d| d.name == name)
}

/// Whether `name` is a helper a template may call.
pub fn is_known(name: &str) -> bool {
    decl(name).is_some()
}

/// The block helpers a template may open (`{{#if}}`, `{{#each}}`, ...).
pub fn block_helpers() -> impl Iterator<Item = &'static str> {
    all().filter(|d| matches!(d.run, Run::Block)).map(|d| d.name)
}

/// Registers all helpers on `hb`. `lookups` are the calling mapping file's tables.
pub fn register_helpers(hb: &mut Handlebars<'static>, lookups: Lookups) {
    for d in all() {
        match d.run {
            Run::Simple(f) => hb.register_helper(d.name, Box::new(Simple { name: d.name, f })),
            // `lookup` replaces the built-in; collections still behave as the built-in did.
            Run::Stateful(make) => hb.register_helper(d.name, make(&lookups)),
            Run::Builtin | Run::Block => {}
        }
    }
}

/// Compile-time check of literal arguments, called by the mapping compiler for each helper call it finds
/// in a template. `literal_args` holds the positional params (None for a non-literal param), `hash` the
/// hash args (None for a non-literal value). Returns the reason a call can never succeed, without the
/// helper name (the compiler prefixes it).
pub fn check_call(
    name: &str,
    literal_args: &[Option<&serde_json::Value>],
    hash: &[(&str, Option<&serde_json::Value>)],
    lookups: &HashMap<String, LookupTable>,
) -> Result<(), String> {
    let decl = decl(name).ok_or_else(|| format!("unknown helper `{name}`"))?;
    decl.check_arity(literal_args.len())?;
    if let Some((key, _)) = hash.iter().find(|(key, _)| !decl.named.contains(key)) {
        return Err(match decl.named {
            [] => format!("takes no named arguments, got `{key}`"),
            allowed => format!("unknown named argument `{key}` (allowed: {})", allowed.join(", ")),
        });
    }
    match decl.check {
        Some(check) => check(&Literals { args: literal_args, hash, lookups }),
        None => Ok(()),
    }
}

/// A lookup table declared in a mapping file: key → value, with an optional fallback.
#[derive(Clone, Debug, Default)]
pub struct LookupTable {
    pub entries: serde_json::Map<String, serde_json::Value>,
    pub default: Option<serde_json::Value>,
}

/// The lookup tables of one mapping file, shared by every render of that file.
pub type Lookups = Arc<HashMap<String, LookupTable>>;

/// One invocation of a helper: argument access with error messages that name the helper and the path.
pub struct Call<'a, 'rc> {
    name: &'static str,
    pub(crate) h: &'a Helper<'rc>,
}

static NULL: Json = Json::Null;

impl<'a, 'rc> Call<'a, 'rc> {
    fn new(name: &'static str, h: &'a Helper<'rc>) -> Result<Self, RenderError> {
        let call = Call { name, h };
        if let Some(decl) = decl(name) {
            decl.check_arity(h.params().len()).map_err(|e| call.fail(e))?;
        }
        Ok(call)
    }

    pub(crate) fn fail(&self, msg: impl Display) -> RenderError {
        RenderErrorReason::Other(format!("{}: {msg}", self.name)).into()
    }

    /// A variable the call needs is absent: typed, so a field's `default` can cover it.
    fn missing(&self, p: &PathAndJson<'rc>, what: impl Display) -> RenderError {
        let message = match p.relative_path() {
            Some(path) => format!("{}: `{path}` is missing", self.name),
            None => format!("{}: {what} is missing", self.name),
        };
        RenderErrorReason::NestedError(Box::new(MissingArgument(message))).into()
    }

    /// A required positional argument; a missing variable is an error.
    pub(crate) fn arg(&self, i: usize) -> Result<&'a Json, RenderError> {
        match self.h.param(i) {
            None => Err(self.fail(format_args!("argument {} is required", i + 1))),
            Some(p) if p.is_value_missing() => Err(self.missing(p, format_args!("argument {}", i + 1))),
            Some(p) => Ok(p.value()),
        }
    }

    /// An optional positional argument; absent is `None`, but a missing variable is still an error.
    pub(crate) fn opt_arg(&self, i: usize) -> Result<Option<&'a Json>, RenderError> {
        if self.h.param(i).is_none() { Ok(None) } else { self.arg(i).map(Some) }
    }

    /// An argument for the helpers whose whole point is to cope with absent data.
    pub(crate) fn lenient_arg(&self, i: usize) -> &'a Json {
        match self.h.param(i) {
            Some(p) if !p.is_value_missing() => p.value(),
            _ => &NULL,
        }
    }

    pub(crate) fn named(&self, key: &str) -> Result<Option<&'a Json>, RenderError> {
        match self.h.hash_get(key) {
            None => Ok(None),
            Some(p) if p.is_value_missing() => Err(self.missing(p, format_args!("`{key}=`"))),
            Some(p) => Ok(Some(p.value())),
        }
    }

    pub(crate) fn str_arg(&self, i: usize) -> Result<Cow<'a, str>, RenderError> {
        self.arg(i).map(text)
    }
}

pub type SimpleFn = fn(&Call<'_, '_>) -> Result<Json, RenderError>;

/// A stateless helper; returning through `call_inner` keeps JSON types intact in subexpressions.
struct Simple {
    name: &'static str,
    f: SimpleFn,
}

impl HelperDef for Simple {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let call = Call::new(self.name, h)?;
        (self.f)(&call).map(ScopedJson::Derived)
    }
}

/// The text form of a value as integrators expect to see it in a payload.
pub(crate) fn text(v: &Json) -> Cow<'_, str> {
    match v {
        Json::String(s) => Cow::Borrowed(s),
        Json::Null => Cow::Borrowed(""),
        Json::Bool(b) => Cow::Owned(b.to_string()),
        Json::Number(n) => Cow::Owned(n.to_string()),
        Json::Array(_) | Json::Object(_) => Cow::Owned(v.to_string()),
    }
}

pub(crate) fn is_blank(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

pub(crate) fn truthy(v: &Json) -> bool {
    match v {
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Json::String(s) => {
            matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "y" | "on")
        }
        Json::Null | Json::Array(_) | Json::Object(_) => false,
    }
}

/// Entries in the caches below are compiled from template text, so a small bound is plenty; it only
/// guards against patterns built from request data growing the cache without limit.
const CACHE_CAPACITY: usize = 256;

pub(crate) struct BoundedCache<T> {
    map: Mutex<HashMap<String, T>>,
}

impl<T> Default for BoundedCache<T> {
    fn default() -> Self {
        BoundedCache { map: Mutex::new(HashMap::new()) }
    }
}

impl<T: Clone> BoundedCache<T> {
    pub(crate) fn get_or_try_insert<E>(
        &self,
        key: &str,
        build: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, E> {
        if let Some(found) = self.lock().get(key) {
            return Ok(found.clone());
        }
        // Built outside the lock so one slow compilation does not stall every other render.
        let built = build(key)?;
        let mut map = self.lock();
        if map.len() >= CACHE_CAPACITY {
            map.clear();
        }
        map.insert(key.to_owned(), built.clone());
        Ok(built)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, T>> {
        // The map is always left consistent, so a panic elsewhere while it was held is harmless.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether a render error is a missing variable (strict mode) or a helper's missing argument,
/// which a field's `default` covers; other errors (bad data) are reported.
pub fn is_missing_error(e: &RenderError) -> bool {
    match e.reason() {
        RenderErrorReason::MissingVariable(_) => true,
        RenderErrorReason::NestedError(inner) => inner.is::<MissingArgument>(),
        _ => false,
    }
}

/// A helper's argument that names a value the data does not have.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MissingArgument(pub String);

/// The reason of a render error as integrators read it: a helper's own message as it wrote it.
pub fn reason_text(e: &RenderError) -> String {
    match e.reason() {
        RenderErrorReason::NestedError(inner) if inner.is::<MissingArgument>() => inner.to_string(),
        other => other.to_string(),
    }
}

impl HelperDecl {
    fn check_arity(&self, got: usize) -> Result<(), String> {
        if (self.min..=self.max).contains(&got) {
            return Ok(());
        }
        let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
        Err(match (self.min, self.max) {
            (min, VARIADIC) => format!("expects at least {min} {}, got {got}", plural(min)),
            (min, max) if min == max => format!("expects {min} {}, got {got}", plural(min)),
            (min, max) => format!("expects {min} to {max} arguments, got {got}"),
        })
    }
}
#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use serde_json::json;

    /// The helper reference (`docs/helpers.md`), generated from the declarations.
    fn reference() -> String {
        let mut out = String::from(
            "# Template helpers\n\n\
             <!-- Generated from the `HELPERS` tables in crates/hub-core/src/mapping/helpers; \
             `UPDATE_DOCS=1 cargo test -p hub-core helpers` rewrites it. -->\n\n\
             Strings with `{{` in a mapping file are Handlebars templates (strict mode). These are the \
             helpers they may call. A call with the wrong number of arguments, an unknown named argument \
             or a literal argument that can never work is an error when the file is loaded, with its \
             file:line.\n\n\
             | Helper | Arguments | Named | What it gives |\n|---|---|---|---|\n",
        );
        for d in all() {
            let name = if matches!(d.run, Run::Block) { format!("#{}", d.name) } else { d.name.to_string() };
            let named: Vec<String> = d.named.iter().map(|n| format!("`{n}=`")).collect();
            out.push_str(&format!("| `{name}` | `{}` | {} | {} |\n", d.args, named.join(" "), d.summary));
        }
        out
    }

    /// The helper names the README lists, wrapped as its list item is.
    fn readme_list() -> String {
        let ours: Vec<&str> =
            all().filter(|d| matches!(d.run, Run::Simple(_) | Run::Stateful(_))).map(|d| d.name).collect();
        let builtins: Vec<&str> =
            all().filter(|d| matches!(d.run, Run::Builtin | Run::Block)).map(|d| d.name).collect();
        let text = format!("`{}`, plus the Handlebars built-ins `{}`.", ours.join(" "), builtins.join(" "));
        let mut lines = vec![String::from(" ")];
        for word in text.split(' ') {
            let last = lines.last_mut().expect("a line");
            if last.len() + 1 + word.len() > 100 {
                lines.push(format!("  {word}"));
            } else {
                last.push(' ');
                last.push_str(word);
            }
        }
        lines.join("\n") + "\n"
    }

    const README_BEGIN: &str = "  <!-- helpers:begin -->\n";
    const README_END: &str = "  <!-- helpers:end -->\n";

    fn repo_file(path: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
    }

    /// The docs list exactly the declared helpers, with their arguments and descriptions; with
    /// `UPDATE_DOCS=1` they are rewritten instead.
    #[test]
    fn docs_list_exactly_the_declared_helpers() {
        let update = std::env::var_os("UPDATE_DOCS").is_some();
        let reference_path = repo_file("docs/helpers.md");
        let readme_path = repo_file("README.md");
        let readme = std::fs::read_to_string(&readme_path).expect("README.md");
        let (Some(begin), Some(end)) = (readme.find(README_BEGIN), readme.find(README_END)) else {
            panic!("README.md has no helpers:begin / helpers:end markers");
        };
        let listed = &readme[begin + README_BEGIN.len()..end];
        if update {
            std::fs::write(&reference_path, reference()).expect("write docs/helpers.md");
            let fresh =
                format!("{}{}{}", &readme[..begin + README_BEGIN.len()], readme_list(), &readme[end..]);
            std::fs::write(&readme_path, fresh).expect("write README.md");
            return;
        }
        let hint = "run `UPDATE_DOCS=1 cargo test -p hub-core helpers` to regenerate";
        let written = std::fs::read_to_string(&reference_path).unwrap_or_default();
        assert_eq!(written, reference(), "docs/helpers.md is out of date: {hint}");
        assert_eq!(listed, readme_list(), "README.md's helper list is out of date: {hint}");
    }

    /// The argument synopsis the docs show agrees with the arity the compiler checks.
    #[test]
    fn argument_synopsis_matches_arity() {
        for d in all() {
            let words: Vec<&str> = d.args.split_whitespace().collect();
            let required = words.iter().filter(|w| !w.starts_with('[')).count();
            let repeated = words.iter().any(|w| w.trim_end_matches(']').ends_with('…'));
            let max = if repeated { VARIADIC } else { words.len() };
            assert_eq!((d.min, d.max), (required, max), "`{}`: `{}`", d.name, d.args);
        }
    }

    #[test]
    fn each_helper_is_declared_once() {
        let mut names: Vec<&str> = all().map(|d| d.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a helper name is declared twice");
    }

    #[test]
    fn json_escaping_registry_gets_plain_values() {
        let mut hb = registry();
        hb.register_escape_fn(|s| {
            let quoted = serde_json::to_string(s).unwrap_or_default();
            quoted[1..quoted.len() - 1].to_owned()
        });
        let out = hb
            .render_template(r#"{"name": "{{trim body.name}}"}"#, &envelope(json!({"name": " Say \"hi\" "})))
            .expect("render");
        assert_eq!(out, r#"{"name": "Say \"hi\""}"#);
    }

    #[test]
    fn missing_variable_errors_name_helper_and_path() {
        let err = render_err("{{trim body.name}}", json!({}));
        assert!(err.contains("trim: `body.name` is missing"), "{err}");
        let err = render_err("{{upper (trim headers.x-missing)}}", json!({}));
        assert!(err.contains("trim: `headers.x-missing` is missing"), "{err}");
        let err = render_err("{{e164 body.phone}}", json!({}));
        assert!(err.contains("e164: `body.phone` is missing"), "{err}");
        let err = render_err("{{format_date body.at \"%Y\" tz=body.tz}}", json!({"at": 0}));
        assert!(err.contains("format_date: `body.tz` is missing"), "{err}");
    }

    #[test]
    fn check_call_accepts_good_calls() {
        let s = |v: &str| Some(json!(v));
        assert_eq!(check("trim", &[None], &[]), Ok(()));
        assert_eq!(check("regex_replace", &[None, s(r"(\d+)-(\d+)"), s("$2")], &[]), Ok(()));
        assert_eq!(check("jp", &[s("$.body.answers[?@.field.ref=='x'].choice.label")], &[]), Ok(()));
        assert_eq!(check("lookup", &[s("stage"), None], &[]), Ok(()));
        assert_eq!(check("lookup", &[None, s("k")], &[]), Ok(()));
        assert_eq!(check("e164", &[None], &[("region", s("UA"))]), Ok(()));
        assert_eq!(check("format_date", &[None, s("%Y-%m-%d")], &[("tz", s("Europe/Kyiv"))]), Ok(()));
        assert_eq!(check("parse_date", &[None, s("%d/%m/%Y")], &[("tz", None)]), Ok(()));
        assert_eq!(check("coalesce", &[None, None, None, s("x")], &[]), Ok(()));
        assert_eq!(check("if", &[None], &[("includeZero", Some(json!(true)))]), Ok(()));
        assert_eq!(check("word", &[None, Some(json!(-1))], &[("rest", Some(json!(true)))]), Ok(()));
    }

    #[test]
    fn patterns_and_paths_must_be_literals() {
        let s = |v: &str| Some(json!(v));
        assert_eq!(
            check("regex_replace", &[None, None, s("")], &[]),
            Err("the pattern must be a literal string".to_owned())
        );
        assert_eq!(check("jp", &[None], &[]), Err("the path must be a literal string".to_owned()));
    }

    #[test]
    fn check_call_rejects_bad_literals() {
        let s = |v: &str| Some(json!(v));
        let err = check("regex_replace", &[None, s("(unclosed"), s("")], &[]).expect_err("bad regex");
        assert!(err.starts_with("invalid regex `(unclosed`"), "{err}");
        let err = check("jp", &[s("$.first name")], &[]).expect_err("space in name");
        assert!(err.starts_with("invalid JSONPath `$.first name`"), "{err}");
        assert!(check("jp", &[s("$.body[?")], &[]).is_err());
        let err = check("lookup", &[s("stages"), None], &[]).expect_err("unknown table");
        assert_eq!(err, "unknown lookup table `stages` (declared: owner, stage)");
        let err =
            check_call("lookup", &[Some(&json!("x")), None], &[], &HashMap::new()).expect_err("no tables");
        assert_eq!(err, "unknown lookup table `x` (declared: none)");
        let err = check("format_date", &[None, s("%Y")], &[("tz", s("Europe/Kiev2"))]).expect_err("tz");
        assert_eq!(err, "unknown time zone `Europe/Kiev2`");
        assert!(check("parse_date", &[None, s("%Y")], &[("tz", s("Nowhere"))]).is_err());
        assert!(check("format_date", &[None, s("%Y-%m-%d %!")], &[]).is_err());
        assert!(check("format_date", &[s("yesterday"), s("%Y")], &[]).is_err());
        let err = check("e164", &[None, s("XX")], &[]).expect_err("region");
        assert_eq!(err, "unknown region code `XX`");
        assert!(check("e164", &[None], &[("region", s("QQ"))]).is_err());
        assert_eq!(check("trim", &[None, None], &[]), Err("expects 1 argument, got 2".to_owned()));
        assert_eq!(check("replace", &[None], &[]), Err("expects 3 arguments, got 1".to_owned()));
        assert_eq!(check("lookup", &[None], &[]), Err("expects 2 to 3 arguments, got 1".to_owned()));
        assert_eq!(check("coalesce", &[], &[]), Err("expects at least 1 argument, got 0".to_owned()));
        assert_eq!(check("eq", &[None], &[]), Err("expects 2 arguments, got 1".to_owned()));
        assert!(
            check("trim", &[None], &[("tz", None)]).expect_err("hash").contains("takes no named arguments")
        );
        assert!(check("word", &[None, s("two")], &[]).is_err());
        assert!(check("split", &[None, s("")], &[]).is_err());
        assert!(check("to_number", &[s("12abc")], &[]).is_err());
        assert!(check("lookup", &[Some(json!(5)), None], &[]).is_err());
        assert_eq!(check("shout", &[None], &[]), Err("unknown helper `shout`".to_owned()));
    }

    #[test]
    fn runtime_arity_is_enforced() {
        let err = render_err("{{trim}}", json!({}));
        assert!(err.contains("trim: expects 1 argument, got 0"), "{err}");
    }
}
