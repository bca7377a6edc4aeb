//! Number helpers: conversions and arithmetic that keep binary noise out of payloads.

use super::{Call, HelperDecl, Literals, Run, truthy};
use handlebars::RenderError;
use serde_json::Value as Json;

pub(super) fn is_plain_decimal(s: &str) -> bool {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let mut parts = unsigned.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next().unwrap_or_default();
    (!whole.is_empty() || !fraction.is_empty())
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
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

fn check_to_number(l: &Literals<'_>) -> Result<(), String> {
    if let Some(value) = l.arg(0) {
        number_of(value).ok_or_else(|| format!("{value} is not a number"))?;
    }
    Ok(())
}

pub(super) const HELPERS: &[HelperDecl] = &[
    HelperDecl::new(
        "to_number",
        "value",
        1,
        1,
        Run::Simple(to_number),
        "The number a string holds (`+12.50` is 12.5); anything else is an error.",
    )
    .check(check_to_number),
    HelperDecl::new(
        "to_bool",
        "value",
        1,
        1,
        Run::Simple(to_bool),
        "`true` for true, a non-zero number and `true`/`1`/`yes`/`y`/`on`; `false` for anything else.",
    ),
    HelperDecl::new("add", "a b", 2, 2, Run::Simple(add), "`a + b`."),
    HelperDecl::new("subtract", "a b", 2, 2, Run::Simple(subtract), "`a - b`."),
    HelperDecl::new("multiply", "a b", 2, 2, Run::Simple(multiply), "`a * b`."),
    HelperDecl::new("divide", "a b", 2, 2, Run::Simple(divide), "`a / b`; dividing by zero is an error."),
    HelperDecl::new(
        "round",
        "value [digits]",
        1,
        2,
        Run::Simple(round),
        "Rounded half away from zero, to `digits` (0-10) decimals.",
    ),
];

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use serde_json::json;

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
}
