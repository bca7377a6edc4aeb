//! Date helpers: format an instant in a time zone, parse a date with a format.

use super::numbers::is_plain_decimal;
use super::{Call, HelperDecl, Literals, Run, text};
use handlebars::RenderError;
use jiff::fmt::strtime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned, civil};
use serde_json::Value as Json;

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

fn check_date(l: &Literals<'_>, reads_value: bool) -> Result<(), String> {
    let tz = match l.named("tz") {
        Some(tz) => time_zone(tz)?,
        None => TimeZone::UTC,
    };
    if let Some(format) = l.arg(1) {
        check_strftime(&text(format))?;
    }
    if reads_value && let Some(value) = l.arg(0) {
        parse_instant(value, &tz).ok_or_else(|| format!("cannot parse {value} as a date"))?;
    }
    Ok(())
}

pub(super) const HELPERS: &[HelperDecl] = &[
    HelperDecl::new(
        "format_date",
        "value format",
        2,
        2,
        Run::Simple(format_date),
        "A date (RFC 3339, RFC 2822, a civil date or time, unix seconds or milliseconds) written with the strftime `format` in `tz` (UTC by default).",
    )
    .named(&["tz"])
    .check(|l| check_date(l, true)),
    HelperDecl::new(
        "parse_date",
        "value format",
        2,
        2,
        Run::Simple(parse_date),
        "The text read with the strftime `format` (in `tz` unless it carries an offset), as an RFC 3339 UTC timestamp.",
    )
    .named(&["tz"])
    .check(|l| check_date(l, false)),
];

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use serde_json::json;

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
}
