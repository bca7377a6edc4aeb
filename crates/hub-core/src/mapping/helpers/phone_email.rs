//! Contact helpers: phone numbers to E.164, e-mail addresses normalized.

use super::{Call, HelperDecl, Literals, Run, text};
use handlebars::RenderError;
use rlibphonenumber::{PHONE_NUMBER_UTIL, PhoneNumberFormat, Region};
use serde_json::Value as Json;
use std::borrow::Cow;

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

fn check_e164(l: &Literals<'_>) -> Result<(), String> {
    for region in [l.arg(1), l.named("region")].into_iter().flatten() {
        let code = text(region);
        if !code.trim().is_empty() && known_region(&code).is_none() {
            return Err(format!("unknown region code `{code}`"));
        }
    }
    Ok(())
}

pub(super) const HELPERS: &[HelperDecl] = &[
    HelperDecl::new(
        "e164",
        "value [region]",
        1,
        2,
        Run::Simple(e164),
        "The phone number in E.164 (`+14155550132`), read in `region` (US by default); empty when it is not a valid number.",
    )
    .named(&["region"])
    .check(check_e164),
    HelperDecl::new(
        "normalize_email",
        "value",
        1,
        1,
        Run::Simple(normalize_email),
        "The e-mail address trimmed and lower-cased; empty when it does not look like one.",
    ),
];

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use serde_json::json;

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
}
