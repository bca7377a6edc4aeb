//! Text helpers: trimming, case, splitting and joining, replacing, defaults.

use super::{BoundedCache, Call, HelperDecl, Literals, Run, VARIADIC, is_blank, text, truthy};
use handlebars::{Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, ScopedJson};
use regex::Regex;
use serde_json::Value as Json;
use std::borrow::Cow;

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

fn check_split(l: &Literals<'_>) -> Result<(), String> {
    if l.arg(1).is_some_and(|sep| text(sep).is_empty()) {
        return Err("the separator must not be empty".to_owned());
    }
    Ok(())
}

fn check_word(l: &Literals<'_>) -> Result<(), String> {
    if let Some(index) = l.arg(1) {
        word_index(index).ok_or_else(|| format!("index must be an integer, got {index}"))?;
    }
    Ok(())
}

/// Patterns are checked here, once: one taken from the request could be made as costly to
/// compile or run as its sender likes.
fn check_regex_replace(l: &Literals<'_>) -> Result<(), String> {
    let pattern = l.arg(1).map(text).ok_or("the pattern must be a literal string")?;
    compile_regex(&pattern).map_err(|e| format!("invalid regex `{pattern}`: {e}"))?;
    Ok(())
}

pub(super) const HELPERS: &[HelperDecl] = &[
    HelperDecl::new("trim", "value", 1, 1, Run::Simple(trim), "The text without leading and trailing whitespace."),
    HelperDecl::new("lower", "value", 1, 1, Run::Simple(lower), "The text in lower case."),
    HelperDecl::new("upper", "value", 1, 1, Run::Simple(upper), "The text in upper case."),
    HelperDecl::new(
        "split",
        "value [separator]",
        1,
        2,
        Run::Simple(split),
        "The trimmed, non-empty pieces of the text as an array (separator `,` by default); an array is trimmed item by item.",
    )
    .check(check_split),
    HelperDecl::new(
        "word",
        "value index",
        2,
        2,
        Run::Simple(word),
        "The word at `index` (negative counts from the end); with `rest=true`, that word and every one after it.",
    )
    .named(&["rest"])
    .check(check_word),
    HelperDecl::new(
        "join",
        "value [separator]",
        1,
        2,
        Run::Simple(join),
        "The non-blank items of an array joined by `separator` (`, ` by default).",
    ),
    HelperDecl::new("replace", "value from to", 3, 3, Run::Simple(replace), "Every `from` in the text replaced by `to`."),
    HelperDecl::new(
        "regex_replace",
        "value pattern replacement",
        3,
        3,
        Run::Stateful(|_| Box::new(RegexReplace::default())),
        "Every match of the literal regex `pattern` replaced by `replacement` (`$1` for a group).",
    )
    .check(check_regex_replace),
    HelperDecl::new("digits", "value", 1, 1, Run::Simple(digits), "Only the ASCII digits of the text."),
    HelperDecl::new(
        "default",
        "value fallback",
        2,
        2,
        Run::Simple(default),
        "`value`, or `fallback` when it is missing, null or blank.",
    ),
    HelperDecl::new(
        "coalesce",
        "value…",
        1,
        VARIADIC,
        Run::Simple(coalesce),
        "The first argument that is not missing, null or blank.",
    ),
];

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use serde_json::json;

    #[test]
    fn trim_lower_upper() {
        let body = json!({"name": "  Mary Ann  ", "city": "KYIV", "n": 42, "nothing": null});
        assert_eq!(render("[{{trim body.name}}]", body.clone()), "[Mary Ann]");
        assert_eq!(render("{{lower body.city}} {{upper (trim body.name)}}", body.clone()), "kyiv MARY ANN");
        assert_eq!(render("{{upper body.n}}|{{trim body.nothing}}|{{lower true}}", body), "42||true");
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
    fn a_pattern_that_compiles_too_large_is_refused() {
        let s = |v: &str| Some(json!(v));
        // Fine with the `regex` crate's 10 MB default, over this crate's bound.
        let big = r"\w{100}";
        assert!(regex::Regex::new(big).is_ok());
        let err = check("regex_replace", &[None, s(big), s("")], &[]).expect_err("too large");
        assert!(err.contains("size limit"), "{err}");
        assert!(check("regex_replace", &[None, s(r"\w{20}"), s("")], &[]).is_ok());
    }
}
