//! Handlebars helpers that integrators call from mapping templates (strings, names, phones, e-mails,
//! dates, lookup tables, JSONPath), plus the compile-time check of their literal arguments.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Display;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use handlebars::{
    Context, Handlebars, Helper, HelperDef, PathAndJson, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};
use jiff::fmt::strtime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned, civil};
use jsonpath_rust::parser::model::JpQuery;
use regex::Regex;
use rlibphonenumber::{PHONE_NUMBER_UTIL, PhoneNumberFormat, Region};
use serde_json::Value as Json;

/// A lookup table declared in a mapping file: key → value, with an optional fallback.
#[derive(Clone, Debug, Default)]
pub struct LookupTable {
    pub entries: serde_json::Map<String, serde_json::Value>,
    pub default: Option<serde_json::Value>,
}

/// The lookup tables of one mapping file, shared by every render of that file.
pub type Lookups = Arc<HashMap<String, LookupTable>>;

/// Names of every helper this module registers, plus the handlebars built-ins we allow.
/// Used to reject unknown helpers at compile time.
pub const HELPER_NAMES: &[&str] = &[
    "trim",
    "lower",
    "upper",
    "split",
    "word",
    "join",
    "replace",
    "regex_replace",
    "digits",
    "default",
    "coalesce",
    "e164",
    "normalize_email",
    "format_date",
    "parse_date",
    "lookup",
    "to_number",
    "to_bool",
    "json",
    "parse_json",
    "decode_base64",
    "jp",
    "add",
    "subtract",
    "multiply",
    "divide",
    "round",
    "if",
    "unless",
    "each",
    "with",
    "log",
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "and",
    "or",
    "not",
    "len",
];

/// Registers all helpers on `hb`. `lookups` are the calling mapping file's tables.
pub fn register_helpers(hb: &mut Handlebars<'static>, lookups: Lookups) {
    let simple: [(&'static str, SimpleFn); 24] = [
        ("trim", trim),
        ("lower", lower),
        ("upper", upper),
        ("split", split),
        ("word", word),
        ("join", join),
        ("replace", replace),
        ("digits", digits),
        ("default", default),
        ("coalesce", coalesce),
        ("e164", e164),
        ("normalize_email", normalize_email),
        ("format_date", format_date),
        ("parse_date", parse_date),
        ("to_number", to_number),
        ("to_bool", to_bool),
        ("json", json),
        ("parse_json", parse_json),
        ("decode_base64", decode_base64),
        ("add", add),
        ("subtract", subtract),
        ("multiply", multiply),
        ("divide", divide),
        ("round", round),
    ];
    for (name, f) in simple {
        hb.register_helper(name, Box::new(Simple { name, f }));
    }
    hb.register_helper("regex_replace", Box::new(RegexReplace::default()));
    // Replaces the built-in `lookup`; collections still behave as the built-in did.
    hb.register_helper("lookup", Box::new(Lookup { lookups }));
    hb.register_helper("jp", Box::new(JsonPathHelper::default()));
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
    let spec = spec(name).ok_or_else(|| format!("unknown helper `{name}`"))?;
    spec.check_arity(literal_args.len())?;
    if let Some((key, _)) = hash.iter().find(|(key, _)| !spec.hash.contains(key)) {
        return Err(match spec.hash {
            [] => format!("takes no named arguments, got `{key}`"),
            allowed => format!("unknown named argument `{key}` (allowed: {})", allowed.join(", ")),
        });
    }
    let arg = |i: usize| literal_args.get(i).copied().flatten();
    let named = |key: &str| hash.iter().find(|(k, _)| *k == key).and_then(|(_, v)| *v);
    check_literals(name, &arg, &named, lookups)
}

fn check_literals<'v>(
    name: &str,
    arg: &dyn Fn(usize) -> Option<&'v Json>,
    named: &dyn Fn(&str) -> Option<&'v Json>,
    lookups: &HashMap<String, LookupTable>,
) -> Result<(), String> {
    match name {
        "split" if arg(1).is_some_and(|sep| text(sep).is_empty()) => {
            return Err("the separator must not be empty".to_owned());
        }
        "word" => {
            if let Some(index) = arg(1) {
                word_index(index).ok_or_else(|| format!("index must be an integer, got {index}"))?;
            }
        }
        // Patterns and paths are checked here, once: one taken from the request could be made
        // as costly to compile or run as its sender likes.
        "regex_replace" => {
            let pattern = arg(1).map(text).ok_or("the pattern must be a literal string")?;
            compile_regex(&pattern).map_err(|e| format!("invalid regex `{pattern}`: {e}"))?;
        }
        "e164" => {
            for region in [arg(1), named("region")].into_iter().flatten() {
                let code = text(region);
                if !code.trim().is_empty() && known_region(&code).is_none() {
                    return Err(format!("unknown region code `{code}`"));
                }
            }
        }
        "format_date" | "parse_date" => {
            let tz = match named("tz") {
                Some(tz) => time_zone(tz)?,
                None => TimeZone::UTC,
            };
            if let Some(format) = arg(1) {
                check_strftime(&text(format))?;
            }
            if name == "format_date"
                && let Some(value) = arg(0)
            {
                parse_instant(value, &tz).ok_or_else(|| format!("cannot parse {value} as a date"))?;
            }
        }
        "lookup" => match arg(0) {
            Some(Json::String(table)) if !lookups.contains_key(table) => {
                let mut declared: Vec<&str> = lookups.keys().map(String::as_str).collect();
                declared.sort_unstable();
                let declared = if declared.is_empty() { "none".to_owned() } else { declared.join(", ") };
                return Err(format!("unknown lookup table `{table}` (declared: {declared})"));
            }
            Some(Json::String(_)) | None => {}
            Some(other) => return Err(format!("the first argument must name a lookup table, got {other}")),
        },
        "jp" => match arg(0) {
            Some(Json::String(path)) => {
                jsonpath_rust::parser::parse_json_path(path)
                    .map_err(|e| format!("invalid JSONPath `{path}`: {e}"))?;
                // jsonpath-rust also accepts non-RFC 9535 syntax (e.g. `$.first name`); the stricter
                // parser keeps mapping files portable.
                serde_json_path::JsonPath::parse(path)
                    .map_err(|e| format!("invalid JSONPath `{path}`: {e}"))?;
            }
            Some(other) => return Err(format!("the path must be a string, got {other}")),
            None => return Err("the path must be a literal string".to_owned()),
        },
        "to_number" => {
            if let Some(value) = arg(0) {
                number_of(value).ok_or_else(|| format!("{value} is not a number"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Arity and allowed named arguments of one helper, shared by `check_call` and the helpers themselves.
struct Spec {
    name: &'static str,
    min: usize,
    max: usize,
    hash: &'static [&'static str],
}

const VARIADIC: usize = usize::MAX;

const fn sp(name: &'static str, min: usize, max: usize, hash: &'static [&'static str]) -> Spec {
    Spec { name, min, max, hash }
}

const SPECS: &[Spec] = &[
    sp("trim", 1, 1, &[]),
    sp("lower", 1, 1, &[]),
    sp("upper", 1, 1, &[]),
    sp("split", 1, 2, &[]),
    sp("word", 2, 2, &["rest"]),
    sp("join", 1, 2, &[]),
    sp("replace", 3, 3, &[]),
    sp("regex_replace", 3, 3, &[]),
    sp("digits", 1, 1, &[]),
    sp("default", 2, 2, &[]),
    sp("coalesce", 1, VARIADIC, &[]),
    sp("e164", 1, 2, &["region"]),
    sp("normalize_email", 1, 1, &[]),
    sp("format_date", 2, 2, &["tz"]),
    sp("parse_date", 2, 2, &["tz"]),
    sp("lookup", 2, 3, &[]),
    sp("to_number", 1, 1, &[]),
    sp("to_bool", 1, 1, &[]),
    sp("json", 1, 1, &[]),
    sp("parse_json", 1, 1, &[]),
    sp("decode_base64", 1, 1, &[]),
    sp("jp", 1, 1, &["all"]),
    sp("add", 2, 2, &[]),
    sp("subtract", 2, 2, &[]),
    sp("multiply", 2, 2, &[]),
    sp("divide", 2, 2, &[]),
    sp("round", 1, 2, &[]),
    sp("if", 1, 1, &["includeZero"]),
    sp("unless", 1, 1, &["includeZero"]),
    sp("each", 1, 1, &[]),
    sp("with", 1, 1, &[]),
    sp("log", 0, VARIADIC, &["level"]),
    sp("eq", 2, 2, &[]),
    sp("ne", 2, 2, &[]),
    sp("gt", 2, 2, &[]),
    sp("gte", 2, 2, &[]),
    sp("lt", 2, 2, &[]),
    sp("lte", 2, 2, &[]),
    sp("and", 1, VARIADIC, &[]),
    sp("or", 1, VARIADIC, &[]),
    sp("not", 1, 1, &[]),
    sp("len", 1, 1, &[]),
];

fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

impl Spec {
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

/// One invocation of a helper: argument access with error messages that name the helper and the path.
struct Call<'a, 'rc> {
    name: &'static str,
    h: &'a Helper<'rc>,
}

static NULL: Json = Json::Null;

impl<'a, 'rc> Call<'a, 'rc> {
    fn new(name: &'static str, h: &'a Helper<'rc>) -> Result<Self, RenderError> {
        let call = Call { name, h };
        if let Some(spec) = spec(name) {
            spec.check_arity(h.params().len()).map_err(|e| call.fail(e))?;
        }
        Ok(call)
    }

    fn fail(&self, msg: impl Display) -> RenderError {
        RenderErrorReason::Other(format!("{}: {msg}", self.name)).into()
    }

    fn missing(&self, p: &PathAndJson<'rc>, what: impl Display) -> RenderError {
        match p.relative_path() {
            Some(path) => self.fail(format_args!("`{path}` is missing")),
            None => self.fail(format_args!("{what} is missing")),
        }
    }

    /// A required positional argument; a missing variable is an error.
    fn arg(&self, i: usize) -> Result<&'a Json, RenderError> {
        match self.h.param(i) {
            None => Err(self.fail(format_args!("argument {} is required", i + 1))),
            Some(p) if p.is_value_missing() => Err(self.missing(p, format_args!("argument {}", i + 1))),
            Some(p) => Ok(p.value()),
        }
    }

    /// An optional positional argument; absent is `None`, but a missing variable is still an error.
    fn opt_arg(&self, i: usize) -> Result<Option<&'a Json>, RenderError> {
        if self.h.param(i).is_none() { Ok(None) } else { self.arg(i).map(Some) }
    }

    /// An argument for the helpers whose whole point is to cope with absent data.
    fn lenient_arg(&self, i: usize) -> &'a Json {
        match self.h.param(i) {
            Some(p) if !p.is_value_missing() => p.value(),
            _ => &NULL,
        }
    }

    fn named(&self, key: &str) -> Result<Option<&'a Json>, RenderError> {
        match self.h.hash_get(key) {
            None => Ok(None),
            Some(p) if p.is_value_missing() => Err(self.missing(p, format_args!("`{key}=`"))),
            Some(p) => Ok(Some(p.value())),
        }
    }

    fn str_arg(&self, i: usize) -> Result<Cow<'a, str>, RenderError> {
        self.arg(i).map(text)
    }
}

type SimpleFn = fn(&Call<'_, '_>) -> Result<Json, RenderError>;

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
fn text(v: &Json) -> Cow<'_, str> {
    match v {
        Json::String(s) => Cow::Borrowed(s),
        Json::Null => Cow::Borrowed(""),
        Json::Bool(b) => Cow::Owned(b.to_string()),
        Json::Number(n) => Cow::Owned(n.to_string()),
        Json::Array(_) | Json::Object(_) => Cow::Owned(v.to_string()),
    }
}

fn is_blank(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

fn truthy(v: &Json) -> bool {
    match v {
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Json::String(s) => {
            matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "y" | "on")
        }
        Json::Null | Json::Array(_) | Json::Object(_) => false,
    }
}

fn trim(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    Ok(Json::String(c.str_arg(0)?.trim().to_owned()))
}

fn lower(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    Ok(Json::String(c.str_arg(0)?.to_lowercase()))
}

fn upper(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    Ok(Json::String(c.str_arg(0)?.to_uppercase()))
}

fn split(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    let sep = c.opt_arg(1)?.map(text).unwrap_or(Cow::Borrowed(","));
    if sep.is_empty() {
        return Err(c.fail("the separator must not be empty"));
    }
    let pieces: Vec<Json> = match c.arg(0)? {
        // Forms send multi-selects either as "a,b" or as ["a","b"]; both end up as the same array.
        Json::Array(items) => items.iter().map(|item| text(item).trim().to_owned()).collect::<Vec<_>>(),
        other => text(other).split(sep.as_ref()).map(|piece| piece.trim().to_owned()).collect(),
    }
    .into_iter()
    .filter(|piece| !piece.is_empty())
    .map(Json::String)
    .collect();
    Ok(Json::Array(pieces))
}

fn word_index(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn word(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    let source = c.str_arg(0)?;
    let index = c.arg(1)?;
    let index =
        word_index(index).ok_or_else(|| c.fail(format_args!("index must be an integer, got {index}")))?;
    let rest = c.named("rest")?.is_some_and(truthy);
    let words: Vec<&str> = source.split_whitespace().collect();
    let len = i64::try_from(words.len()).unwrap_or(i64::MAX);
    let position = if index < 0 { index.saturating_add(len) } else { index };
    let picked = match usize::try_from(position).ok().filter(|&p| p < words.len()) {
        None => String::new(),
        Some(p) if rest => words[p..].join(" "),
        Some(p) => words[p].to_owned(),
    };
    Ok(Json::String(picked))
}

fn join(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    let value = c.arg(0)?;
    let sep = c.opt_arg(1)?.map(text).unwrap_or(Cow::Borrowed(", "));
    let joined = match value {
        Json::Array(items) => {
            let parts: Vec<Cow<'_, str>> = items.iter().filter(|item| !is_blank(item)).map(text).collect();
            parts.join(sep.as_ref())
        }
        other => text(other).into_owned(),
    };
    Ok(Json::String(joined))
}

fn replace(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    let source = c.str_arg(0)?;
    let from = c.str_arg(1)?;
    let to = c.str_arg(2)?;
    // An empty needle would splice `to` between every character, which is never what a mapping wants.
    if from.is_empty() {
        return Ok(Json::String(source.into_owned()));
    }
    Ok(Json::String(source.replace(from.as_ref(), &to)))
}

fn digits(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    Ok(Json::String(c.str_arg(0)?.chars().filter(char::is_ascii_digit).collect()))
}

fn default(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    let value = c.lenient_arg(0);
    Ok(if is_blank(value) { c.lenient_arg(1) } else { value }.clone())
}

fn coalesce(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    let first = (0..c.h.params().len()).map(|i| c.lenient_arg(i)).find(|v| !is_blank(v));
    Ok(first.cloned().unwrap_or(Json::Null))
}

/// Entries in the caches below are compiled from template text, so a small bound is plenty; it only
/// guards against patterns built from request data growing the cache without limit.
const CACHE_CAPACITY: usize = 256;

struct BoundedCache<T> {
    map: Mutex<HashMap<String, T>>,
}

impl<T> Default for BoundedCache<T> {
    fn default() -> Self {
        BoundedCache { map: Mutex::new(HashMap::new()) }
    }
}

impl<T: Clone> BoundedCache<T> {
    fn get_or_try_insert<E>(&self, key: &str, build: impl FnOnce(&str) -> Result<T, E>) -> Result<T, E> {
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

/// Largest compiled form of one pattern (the `regex` default is 10 MB; `\w{50}` is about
/// 2 MB): a mapping's patterns are small, and each render thread may hold every one of them.
const REGEX_SIZE_LIMIT: usize = 2 << 20;

/// Compile-time checks and renders must agree on what is a valid pattern, so both go through here.
fn compile_regex(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).dfa_size_limit(REGEX_SIZE_LIMIT).build()
}

#[derive(Default)]
struct RegexReplace {
    cache: BoundedCache<Regex>,
}

impl HelperDef for RegexReplace {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let c = Call::new("regex_replace", h)?;
        let source = c.str_arg(0)?;
        let pattern = c.str_arg(1)?;
        let replacement = c.str_arg(2)?;
        let regex = self
            .cache
            .get_or_try_insert(&pattern, compile_regex)
            .map_err(|e| c.fail(format_args!("invalid regex `{pattern}`: {e}")))?;
        Ok(ScopedJson::Derived(Json::String(regex.replace_all(&source, replacement.as_ref()).into_owned())))
    }
}

/// A region code that libphonenumber has metadata for; `Region::from_code` alone accepts any two letters.
fn known_region(code: &str) -> Option<Region> {
    let region = Region::from_code(code.trim()).ok()?;
    PHONE_NUMBER_UTIL.get_country_code_for_region(region).map(|_| region)
}

fn to_e164(raw: &str, region: Option<Region>) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    // "00" is the international prefix in most of the world but not in the default region (US: 011).
    let raw = match raw.strip_prefix("00") {
        Some(rest) => Cow::Owned(format!("+{rest}")),
        None => Cow::Borrowed(raw),
    };
    let number = PHONE_NUMBER_UTIL.parse(raw.as_ref(), region).ok()?;
    PHONE_NUMBER_UTIL
        .is_valid_number(&number)
        .then(|| PHONE_NUMBER_UTIL.format(&number, PhoneNumberFormat::E164).into_owned())
}

fn e164(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    let raw = c.str_arg(0)?;
    let region = match c.opt_arg(1)? {
        Some(region) => Some(region),
        None => c.named("region")?,
    };
    let code = region.map(text).filter(|code| !code.trim().is_empty()).unwrap_or(Cow::Borrowed("US"));
    // A region taken from request data may be garbage; numbers in international form still parse
    // without one, and anything else yields "" so the lead is still delivered.
    Ok(Json::String(to_e164(&raw, known_region(&code)).unwrap_or_default()))
}

fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && !s.chars().any(char::is_whitespace)
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| !label.is_empty())
}

fn normalize_email(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    let email = c.str_arg(0)?.trim().to_lowercase();
    Ok(Json::String(if looks_like_email(&email) { email } else { String::new() }))
}

fn time_zone(v: &Json) -> Result<TimeZone, String> {
    let name = text(v);
    let name = name.trim();
    if name.is_empty() {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|_| format!("unknown time zone `{name}`"))
}

fn tz_arg(c: &Call<'_, '_>) -> Result<TimeZone, RenderError> {
    match c.named("tz")? {
        Some(tz) => time_zone(tz).map_err(|e| c.fail(e)),
        None => Ok(TimeZone::UTC),
    }
}

/// Seconds below this are plausible unix times (until year 5138); larger values are milliseconds.
const MILLIS_THRESHOLD: f64 = 1e11;

fn from_unix(n: f64) -> Option<Timestamp> {
    let millis = if n.abs() > MILLIS_THRESHOLD { n } else { n * 1000.0 };
    // The range check keeps the float-to-int cast exact enough and inside jiff's supported range.
    if !millis.is_finite() || millis.abs() > 1e15 {
        return None;
    }
    Timestamp::from_millisecond(millis.round() as i64).ok()
}

fn is_plain_decimal(s: &str) -> bool {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let mut parts = unsigned.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next().unwrap_or_default();
    (!whole.is_empty() || !fraction.is_empty())
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

/// Accepts what webhook senders actually put in date fields; civil times are read in `tz`.
fn parse_instant(value: &Json, tz: &TimeZone) -> Option<Timestamp> {
    let s = match value {
        Json::Number(n) => return n.as_i64().map(|i| i as f64).or_else(|| n.as_f64()).and_then(from_unix),
        Json::String(s) => s.trim(),
        _ => return None,
    };
    if is_plain_decimal(s) {
        return s.parse::<f64>().ok().and_then(from_unix);
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Some(ts);
    }
    if let Ok(dt) = s.parse::<civil::DateTime>() {
        return dt.to_zoned(tz.clone()).ok().map(|z| z.timestamp());
    }
    if let Ok(date) = s.parse::<civil::Date>() {
        return date.to_zoned(tz.clone()).ok().map(|z| z.timestamp());
    }
    jiff::fmt::rfc2822::parse(s).ok().map(|z| z.timestamp())
}

fn check_strftime(format: &str) -> Result<(), String> {
    let sample = Zoned::new(Timestamp::UNIX_EPOCH, TimeZone::UTC);
    strtime::format(format, &sample).map(drop).map_err(|e| format!("invalid date format `{format}`: {e}"))
}

fn format_date(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    let value = c.arg(0)?;
    let format = c.str_arg(1)?;
    let tz = tz_arg(c)?;
    let ts =
        parse_instant(value, &tz).ok_or_else(|| c.fail(format_args!("cannot parse {value} as a date")))?;
    strtime::format(format.as_ref(), &ts.to_zoned(tz))
        .map(Json::String)
        .map_err(|e| c.fail(format_args!("invalid date format `{format}`: {e}")))
}

fn parse_date(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    let value = c.str_arg(0)?;
    let format = c.str_arg(1)?;
    let tz = tz_arg(c)?;
    let fail = |e: jiff::Error| c.fail(format_args!("cannot parse `{value}` with format `{format}`: {e}"));
    let tm = strtime::parse(format.as_ref(), value.trim()).map_err(fail)?;
    let ts = if let Some(ts) = tm.timestamp() {
        ts
    } else if tm.offset().is_some() || tm.iana_time_zone().is_some() {
        tm.to_zoned().map_err(fail)?.timestamp()
    } else {
        tm.to_datetime().and_then(|dt| dt.to_zoned(tz)).map_err(fail)?.timestamp()
    };
    Ok(Json::String(ts.to_string()))
}

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

fn number_of(v: &Json) -> Option<Json> {
    let s = match v {
        Json::Number(_) => return Some(v.clone()),
        Json::String(s) => s.trim(),
        _ => return None,
    };
    let unsigned = s.strip_prefix('+');
    let s = unsigned.unwrap_or(s);
    if !is_plain_decimal(s) || (unsigned.is_some() && s.starts_with('-')) {
        return None;
    }
    if let Ok(i) = s.parse::<i64>() {
        return Some(Json::from(i));
    }
    if let Ok(u) = s.parse::<u64>() {
        return Some(Json::from(u));
    }
    s.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Json::Number)
}

fn to_number(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    let value = c.arg(0)?;
    number_of(value).ok_or_else(|| c.fail(format_args!("{value} is not a number")))
}

fn to_bool(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    Ok(Json::Bool(truthy(c.lenient_arg(0))))
}

/// An argument as a finite number (numbers, or strings holding one).
fn num_arg(c: &Call<'_, '_>, i: usize) -> Result<f64, RenderError> {
    let v = c.arg(i)?;
    number_of(v)
        .and_then(|n| n.as_f64())
        .filter(|f| f.is_finite())
        .ok_or_else(|| c.fail(format_args!("{v} is not a number")))
}

/// A result as JSON: an integer when it is one (1900 / 100 → 19), else a float rounded to 10
/// decimals so binary noise (0.1 + 0.2) does not reach destinations.
fn number_json(c: &Call<'_, '_>, f: f64) -> Result<Json, RenderError> {
    if !f.is_finite() {
        return Err(c.fail("result is not a finite number"));
    }
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        return Ok(Json::from(f as i64));
    }
    let r = (f * 1e10).round() / 1e10;
    serde_json::Number::from_f64(r).map(Json::Number).ok_or_else(|| c.fail("result is not a finite number"))
}

fn add(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    number_json(c, num_arg(c, 0)? + num_arg(c, 1)?)
}

fn subtract(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    number_json(c, num_arg(c, 0)? - num_arg(c, 1)?)
}

fn multiply(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    number_json(c, num_arg(c, 0)? * num_arg(c, 1)?)
}

fn divide(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    let d = num_arg(c, 1)?;
    if d == 0.0 {
        return Err(c.fail("division by zero"));
    }
    number_json(c, num_arg(c, 0)? / d)
}

/// `round x [digits]`: half away from zero, `digits` (0-10) after the point.
fn round(c: &Call<'_, '_>) -> Result<Json, RenderError> {
    let x = num_arg(c, 0)?;
    let digits = match c.h.param(1) {
        None => 0,
        Some(_) => {
            let d = num_arg(c, 1)?;
            if !(0.0..=10.0).contains(&d) || d.fract() != 0.0 {
                return Err(c.fail("digits must be a whole number from 0 to 10"));
            }
            d as i32
        }
    };
    let m = 10f64.powi(digits);
    number_json(c, (x * m).round() / m)
}

/// Whether a render error is a missing variable (strict mode) or a helper's missing argument,
/// which a field's `default` covers; other errors (bad data) are reported.
pub fn is_missing_error(e: &RenderError) -> bool {
    match e.reason() {
        RenderErrorReason::MissingVariable(_) => true,
        RenderErrorReason::Other(msg) => msg.ends_with(" is missing"),
        _ => false,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tables() -> HashMap<String, LookupTable> {
        let mut tables = HashMap::new();
        let mut stages = serde_json::Map::new();
        stages.insert("new".into(), json!("Lead"));
        stages.insert("won".into(), json!("Customer"));
        stages.insert("3".into(), json!("Three"));
        tables.insert("stage".to_owned(), LookupTable { entries: stages, default: Some(json!("Other")) });
        let mut owners = serde_json::Map::new();
        owners.insert("emea".into(), json!(17));
        tables.insert("owner".to_owned(), LookupTable { entries: owners, default: None });
        tables
    }

    fn registry() -> Handlebars<'static> {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        register_helpers(&mut hb, Arc::new(tables()));
        hb
    }

    fn envelope(body: Json) -> Json {
        json!({
            "body": body,
            "headers": {"content-type": "application/json", "x-source": "typeform"},
            "query": {"campaign": "spring"},
            "event": {"id": "evt_1", "source": "forms", "received_at": "2024-03-01T10:00:00Z"}
        })
    }

    fn try_render(template: &str, body: Json) -> Result<String, String> {
        registry().render_template(template, &envelope(body)).map_err(|e| e.to_string())
    }

    fn render(template: &str, body: Json) -> String {
        match try_render(template, body) {
            Ok(out) => out,
            Err(e) => panic!("rendering {template:?} failed: {e}"),
        }
    }

    fn render_err(template: &str, body: Json) -> String {
        match try_render(template, body) {
            Ok(out) => panic!("rendering {template:?} should fail, got {out:?}"),
            Err(e) => e,
        }
    }

    fn check(name: &str, args: &[Option<Json>], hash: &[(&str, Option<Json>)]) -> Result<(), String> {
        let args: Vec<Option<&Json>> = args.iter().map(Option::as_ref).collect();
        let hash: Vec<(&str, Option<&Json>)> = hash.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        check_call(name, &args, &hash, &tables())
    }

    #[test]
    fn helper_names_match_specs() {
        let specs: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
        assert_eq!(specs, HELPER_NAMES);
    }

    #[test]
    fn trim_lower_upper() {
        let body = json!({"name": "  Mary Ann  ", "city": "KYIV", "n": 42, "nothing": null});
        assert_eq!(render("[{{trim body.name}}]", body.clone()), "[Mary Ann]");
        assert_eq!(render("{{lower body.city}} {{upper (trim body.name)}}", body.clone()), "kyiv MARY ANN");
        assert_eq!(render("{{upper body.n}}|{{trim body.nothing}}|{{lower true}}", body), "42||true");
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
    fn split_to_array() {
        let body = json!({"tags": " a, b,,c ,", "list": ["x", " ", "y"], "none": null});
        assert_eq!(render("{{json (split body.tags)}}", body.clone()), r#"["a","b","c"]"#);
        assert_eq!(render("{{json (split \"a | b\" \"|\")}}", body.clone()), r#"["a","b"]"#);
        assert_eq!(render("{{json (split body.list)}}", body.clone()), r#"["x","y"]"#);
        assert_eq!(render("{{json (split body.none)}}", body.clone()), "[]");
        assert!(render_err("{{split body.tags \"\"}}", body).contains("separator"));
    }

    #[test]
    fn word_splits_names() {
        let body = json!({"name": "Mary Ann Smith", "single": "Cher", "spaced": "  Jean   Paul  Gaultier "});
        let t =
            "{{word body.name 0}}|{{word body.name 1 rest=true}}|{{word body.name -1}}|{{word body.name 5}}";
        assert_eq!(render(t, body.clone()), "Mary|Ann Smith|Smith|");
        assert_eq!(render("{{word body.single 0}}|{{word body.single 1 rest=true}}", body.clone()), "Cher|");
        assert_eq!(
            render("{{word body.spaced 0}}|{{word body.spaced 1 rest=true}}", body.clone()),
            "Jean|Paul Gaultier"
        );
        assert_eq!(
            render("{{word body.name -2 rest=true}}|{{word body.name -9}}", body.clone()),
            "Ann Smith|"
        );
        assert!(render_err("{{word body.name \"x\"}}", body).contains("word: index must be an integer"));
    }

    #[test]
    fn join_arrays() {
        let body = json!({"items": ["a", null, "", 3, true], "one": "solo", "empty": []});
        assert_eq!(render("{{join body.items}}", body.clone()), "a, 3, true");
        assert_eq!(render("{{join body.items \"/\"}}", body.clone()), "a/3/true");
        assert_eq!(render("[{{join body.one}}][{{join body.empty}}]", body), "[solo][]");
    }

    #[test]
    fn replace_literal() {
        let body = json!({"s": "a.b.c (x)"});
        assert_eq!(render("{{replace body.s \".\" \"-\"}}", body.clone()), "a-b-c (x)");
        assert_eq!(render("{{replace body.s \"\" \"-\"}}", body.clone()), "a.b.c (x)");
        assert_eq!(render("{{replace body.s \"(x)\" \"\"}}", body), "a.b.c ");
    }

    #[test]
    fn regex_replace_with_groups() {
        let body = json!({"phone": "tel: 415-555-0132", "date": "01/03/2024"});
        // Template string literals are JSON strings, so a regex backslash is written twice.
        let t = r#"{{regex_replace body.date "(\\d+)/(\\d+)/(\\d+)" "$3-$2-$1"}}"#;
        assert_eq!(render(t, body.clone()), "2024-03-01");
        // The same pattern twice exercises the cache.
        let t = r#"{{regex_replace body.phone "[^0-9]" ""}}{{regex_replace body.phone "[^0-9]" ""}}"#;
        assert_eq!(render(t, body.clone()), "41555501324155550132");
        let err =
            render_err(r#"{{regex_replace body.phone body.date "x"}}"#, json!({"phone": "1", "date": "("}));
        assert!(err.contains("regex_replace: invalid regex `(`"), "{err}");
    }

    #[test]
    fn digits_only() {
        let body = json!({"p": "+1 (415) 555-0132", "n": 12.5, "x": "none"});
        assert_eq!(render("{{digits body.p}}|{{digits body.n}}|{{digits body.x}}", body), "14155550132|125|");
    }

    #[test]
    fn default_and_coalesce() {
        let t = r#"{{default body.utm_source "direct"}}"#;
        assert_eq!(render(t, json!({})), "direct");
        assert_eq!(render(t, json!({"utm_source": ""})), "direct");
        assert_eq!(render(t, json!({"utm_source": "   "})), "direct");
        assert_eq!(render(t, json!({"utm_source": null})), "direct");
        assert_eq!(render(t, json!({"utm_source": "google"})), "google");
        // JSON types survive, so the result can feed comparisons.
        assert_eq!(render("{{#if (gt (default body.n 5) 3)}}big{{/if}}", json!({"n": 0})), "");
        assert_eq!(render("{{default body.missing body.also_missing}}", json!({})), "");
        let t = r#"{{coalesce body.a body.b headers.x-source "none"}}"#;
        assert_eq!(render(t, json!({"b": " "})), "typeform");
        assert_eq!(render(t, json!({"a": "first", "b": "second"})), "first");
        assert_eq!(render("[{{coalesce body.a body.b}}]", json!({"a": null})), "[]");
    }

    #[test]
    fn e164_phone_numbers() {
        let t = "{{e164 body.phone}}";
        assert_eq!(render(t, json!({"phone": "(415) 555-0132"})), "+14155550132");
        assert_eq!(render(t, json!({"phone": "1-415-555-0132"})), "+14155550132");
        assert_eq!(render(t, json!({"phone": "0044 20 7183 8750"})), "+442071838750");
        assert_eq!(render(t, json!({"phone": 4155550132_u64})), "+14155550132");
        assert_eq!(render("{{e164 body.phone \"UA\"}}", json!({"phone": "067 123 4567"})), "+380671234567");
        assert_eq!(
            render("{{e164 body.phone region=\"ua\"}}", json!({"phone": "067 123 4567"})),
            "+380671234567"
        );
        assert_eq!(render(t, json!({"phone": "12345"})), "");
        assert_eq!(render(t, json!({"phone": "call me maybe"})), "");
        assert_eq!(render(t, json!({"phone": ""})), "");
        assert_eq!(render(t, json!({"phone": null})), "");
        // A bogus region from data only loses national-format numbers.
        let t = "{{e164 body.phone body.country}}";
        assert_eq!(render(t, json!({"phone": "+380 67 123 4567", "country": "ZZ"})), "+380671234567");
        assert_eq!(render(t, json!({"phone": "067 123 4567", "country": "ZZ"})), "");
    }

    #[test]
    fn normalize_emails() {
        let t = "{{normalize_email body.email}}";
        assert_eq!(render(t, json!({"email": "  John.Doe@Example.COM "})), "john.doe@example.com");
        for bad in ["john", "john@localhost", "a@b@c.com", "jo hn@x.com", "@x.com", "a@x.", "a@.com", ""] {
            assert_eq!(render(t, json!({ "email": bad })), "", "{bad}");
        }
    }

    #[test]
    fn format_date_values_and_zones() {
        let t = r#"{{format_date body.at "%Y-%m-%d %H:%M %Z" tz="America/New_York"}}"#;
        // The same UTC wall time on either side of the 2024-03-10 DST switch.
        assert_eq!(render(t, json!({"at": "2024-03-09T12:00:00Z"})), "2024-03-09 07:00 EST");
        assert_eq!(render(t, json!({"at": "2024-03-11T12:00:00Z"})), "2024-03-11 08:00 EDT");
        // Civil times are read in `tz`; 02:30 on the switch day does not exist and moves forward.
        assert_eq!(render(t, json!({"at": "2024-03-10 02:30:00"})), "2024-03-10 03:30 EDT");
        let utc = r#"{{format_date body.at "%Y-%m-%dT%H:%M:%S"}}"#;
        assert_eq!(render(utc, json!({"at": 1709287200})), "2024-03-01T10:00:00");
        assert_eq!(render(utc, json!({"at": 1709287200000_i64})), "2024-03-01T10:00:00");
        assert_eq!(render(utc, json!({"at": "1709287200"})), "2024-03-01T10:00:00");
        assert_eq!(render(utc, json!({"at": "2024-03-01"})), "2024-03-01T00:00:00");
        assert_eq!(render(utc, json!({"at": "2024-03-01T10:00:00+02:00"})), "2024-03-01T08:00:00");
        assert_eq!(render(utc, json!({"at": "Fri, 01 Mar 2024 10:00:00 +0000"})), "2024-03-01T10:00:00");
        let kyiv = r#"{{format_date event.received_at "%d.%m.%Y %H:%M" tz="Europe/Kyiv"}}"#;
        assert_eq!(render(kyiv, json!({})), "01.03.2024 12:00");
        let err = render_err(utc, json!({"at": "next tuesday"}));
        assert!(err.contains("format_date: cannot parse \"next tuesday\" as a date"), "{err}");
        let err =
            render_err(r#"{{format_date body.at "%Y" tz=body.tz}}"#, json!({"at": 0, "tz": "Mars/Base"}));
        assert!(err.contains("unknown time zone `Mars/Base`"), "{err}");
    }

    #[test]
    fn parse_date_to_utc() {
        let t = r#"{{parse_date body.d "%d/%m/%Y %H:%M" tz="Europe/Kyiv"}}"#;
        assert_eq!(render(t, json!({"d": "01/03/2024 10:00"})), "2024-03-01T08:00:00Z");
        assert_eq!(
            render(r#"{{parse_date body.d "%d/%m/%Y"}}"#, json!({"d": "01/03/2024"})),
            "2024-03-01T00:00:00Z"
        );
        // An offset in the input wins over `tz`.
        let t = r#"{{parse_date body.d "%Y-%m-%d %H:%M %z" tz="Europe/Kyiv"}}"#;
        assert_eq!(render(t, json!({"d": "2024-03-01 10:00 -0500"})), "2024-03-01T15:00:00Z");
        let err = render_err(r#"{{parse_date body.d "%d/%m/%Y"}}"#, json!({"d": "2024-03-01"}));
        assert!(err.contains("parse_date: cannot parse `2024-03-01` with format `%d/%m/%Y`"), "{err}");
    }

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

    #[test]
    fn to_number_and_to_bool() {
        let body = json!({"amount": " 150 ", "price": "+12.50", "neg": "-3", "n": 7, "bad": "1 234,5"});
        assert_eq!(render("{{#if (gt (to_number body.amount) 100)}}big{{/if}}", body.clone()), "big");
        assert_eq!(
            render("{{to_number body.price}}|{{to_number body.neg}}|{{to_number body.n}}", body.clone()),
            "12.5|-3|7"
        );
        assert_eq!(render("{{json (to_number body.amount)}}", body.clone()), "150");
        for bad in ["body.bad", "\"\"", "\"1e5\"", "\"+-1\"", "null"] {
            let err = render_err(&format!("{{{{to_number {bad}}}}}"), body.clone());
            assert!(err.contains("to_number: "), "{bad}: {err}");
        }
        let t = "{{to_bool body.a}}";
        for (value, expected) in [
            (json!("Yes"), "true"),
            (json!(" on "), "true"),
            (json!("1"), "true"),
            (json!(2), "true"),
            (json!(true), "true"),
            (json!("no"), "false"),
            (json!(0), "false"),
            (json!(""), "false"),
            (json!(null), "false"),
        ] {
            assert_eq!(render(t, json!({ "a": value })), expected, "{value}");
        }
        assert_eq!(render(t, json!({})), "false");
    }

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
    fn a_pattern_that_compiles_too_large_is_refused() {
        let s = |v: &str| Some(json!(v));
        // Fine with the `regex` crate's 10 MB default, over this crate's bound.
        let big = r"\w{100}";
        assert!(regex::Regex::new(big).is_ok());
        let err = check("regex_replace", &[None, s(big), s("")], &[]).expect_err("too large");
        assert!(err.contains("size limit"), "{err}");
        assert!(check("regex_replace", &[None, s(r"\w{20}"), s("")], &[]).is_ok());
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

    #[test]
    fn arithmetic_helpers() {
        let body = json!({"cents": 1900, "odd": "105", "qty": "3", "price": 0.1, "zero": 0});
        let r = |t: &str| render(t, body.clone());
        assert_eq!(r("{{divide body.cents 100}}"), "19");
        assert_eq!(r("{{divide body.odd 100}}"), "1.05");
        assert_eq!(r("{{multiply body.qty body.price}}"), "0.3");
        assert_eq!(r("{{add body.price 0.2}}"), "0.3");
        assert_eq!(r("{{subtract body.cents 1}}"), "1899");
        assert_eq!(r("{{round 2.675 2}}"), "2.68");
        assert_eq!(r("{{round 2.5}}"), "3");
        assert!(render_err("{{divide body.cents body.zero}}", body.clone()).contains("division by zero"));
        assert!(render_err("{{add body.cents \"x\"}}", body.clone()).contains("is not a number"));
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
