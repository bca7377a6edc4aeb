//! Credentials a sender put in a request (headers, query parameters, body fields), replaced by
//! `[redacted]` before the event is stored: stored copies, admin responses, `hub events show`,
//! replays and every rendering see only the redacted request.
//!
//! What is redacted: always `Authorization`, `Proxy-Authorization`, `Cookie` and `X-Api-Key`;
//! whatever the source's verifier reads as a credential (a query token, an API-key header, a
//! body field); and what the source lists under `redact:`. The dedup key and the signature are
//! taken from the request as received, before redaction.
//!
//! Bodies stay readable in their format: in JSON the value is replaced (an object or array
//! has each value inside it replaced, so its shape stays), a form body is written again with
//! the field's value replaced. Bodies in other formats (XML, multipart, text) that hold a value
//! to redact are stored as the JSON document the mappings see, with `Content-Type:
//! application/json` (a multipart file part is then kept as its description, without its
//! bytes). A rewritten body is stored as UTF-8 without `Content-Encoding`.

use crate::body::{self, BodyFormat};
use crate::mapping::selector::Selector;
use crate::request::{Headers, RawRequest};
use bytes::Bytes;
use serde_json::Value;

/// What a redacted value reads as.
pub const REDACTED: &str = "[redacted]";

/// Headers that are credentials whatever the source.
pub const ALWAYS_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie", "x-api-key"];

/// What one source redacts.
#[derive(Clone, Debug)]
pub struct Redaction {
    headers: Vec<String>,
    query: Vec<String>,
    /// Selectors into the envelope, all under `$.body`.
    body: Vec<Selector>,
}

impl Default for Redaction {
    fn default() -> Self {
        Self {
            headers: ALWAYS_HEADERS.iter().map(|h| h.to_string()).collect(),
            query: Vec::new(),
            body: Vec::new(),
        }
    }
}

impl Redaction {
    pub fn add_header(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        if !self.headers.contains(&name) {
            self.headers.push(name);
        }
    }

    pub fn add_query(&mut self, name: &str) {
        if !self.query.iter().any(|q| q == name) {
            self.query.push(name.to_string());
        }
    }

    /// Adds a body field by its selector into the envelope (`$.body.auth.token`).
    pub fn add_body(&mut self, selector: Selector) {
        if !self.body.iter().any(|s| s.as_str() == selector.as_str()) {
            self.body.push(selector);
        }
    }

    /// Adds a body field by its dotted path in the body (`auth.application_token`).
    pub fn add_body_field(&mut self, dotted: &str) {
        let mut path = String::from("$['body']");
        for part in dotted.split('.') {
            path.push_str(&format!("['{}']", part.replace('\\', "\\\\").replace('\'', "\\'")));
        }
        if let Ok(s) = Selector::compile(&path) {
            self.add_body(s);
        }
    }

    pub fn has_body_rules(&self) -> bool {
        !self.body.is_empty()
    }

    /// The request as it is stored: `parsed` is its body as `format` reads it.
    pub fn apply(&self, format: BodyFormat, req: &RawRequest, parsed: &Value) -> RawRequest {
        let mut out = req.clone();
        out.headers = Headers(
            req.headers
                .0
                .iter()
                .map(|(k, v)| {
                    let hide = self.headers.iter().any(|h| h.eq_ignore_ascii_case(k));
                    (k.clone(), if hide { REDACTED.to_string() } else { v.clone() })
                })
                .collect(),
        );
        out.query = req.query.as_deref().map(|q| self.redact_query(q));
        if let Some((body, content_type)) = self.redact_body(format, &req.headers, parsed) {
            out.body = body;
            out.headers.0.retain(|(k, _)| k != "content-encoding" && k != "content-length");
            match out.headers.0.iter_mut().find(|(k, _)| k == "content-type") {
                Some((_, v)) => *v = content_type,
                None => out.headers.push("content-type", content_type),
            }
        }
        out
    }

    /// The query with the value of each listed parameter replaced; other pairs kept as sent.
    fn redact_query(&self, query: &str) -> String {
        if self.query.is_empty() {
            return query.to_string();
        }
        query
            .split('&')
            .map(|pair| {
                let raw_key = pair.split('=').next().unwrap_or(pair);
                let key: String =
                    form_urlencoded::parse(raw_key.as_bytes()).map(|(k, _)| k.into_owned()).collect();
                if self.query.contains(&key) {
                    format!(
                        "{raw_key}={}",
                        form_urlencoded::byte_serialize(REDACTED.as_bytes()).collect::<String>()
                    )
                } else {
                    pair.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The rewritten body and its content type, when a body rule matched anything.
    fn redact_body(&self, format: BodyFormat, headers: &Headers, parsed: &Value) -> Option<(Bytes, String)> {
        if self.body.is_empty() {
            return None;
        }
        let mut env = serde_json::json!({ "body": parsed });
        let mut hit = false;
        for s in &self.body {
            for pointer in s.pointers(&env) {
                if let Some(v) = env.pointer_mut(&pointer) {
                    redact_value(v);
                    hit = true;
                }
            }
        }
        if !hit {
            return None;
        }
        let body = env.get_mut("body").map(Value::take).unwrap_or(Value::Null);
        let mt = body::media_type(headers.get("content-type").unwrap_or(""));
        let form = format == BodyFormat::Form
            || (format == BodyFormat::Auto && mt == "application/x-www-form-urlencoded");
        if form {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            write_form(&mut ser, None, &body);
            return Some((Bytes::from(ser.finish()), "application/x-www-form-urlencoded".into()));
        }
        let json_ct =
            if format == BodyFormat::Json && !mt.is_empty() { mt } else { "application/json".into() };
        Some((Bytes::from(serde_json::to_vec(&body).unwrap_or_default()), json_ct))
    }
}

/// Replaces a value; in an object or array every value inside it, keeping the shape.
fn redact_value(v: &mut Value) {
    match v {
        Value::Object(m) => m.values_mut().for_each(redact_value),
        Value::Array(a) => a.iter_mut().for_each(redact_value),
        other => *other = Value::String(REDACTED.into()),
    }
}

/// Writes `v` as form pairs with bracket nesting (`a[b][0]=x`), which the form reader turns
/// back into the same value.
fn write_form(ser: &mut form_urlencoded::Serializer<'_, String>, key: Option<&str>, v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = key.map_or_else(|| k.clone(), |p| format!("{p}[{k}]"));
                write_form(ser, Some(&key), v);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let key = key.map_or_else(|| i.to_string(), |p| format!("{p}[{i}]"));
                write_form(ser, Some(&key), v);
            }
        }
        Value::String(s) => {
            ser.append_pair(key.unwrap_or_default(), s);
        }
        Value::Null => {
            ser.append_pair(key.unwrap_or_default(), "");
        }
        other => {
            ser.append_pair(key.unwrap_or_default(), &other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{BodyLimits, parse_body};
    use crate::time::UnixMillis;
    use serde_json::json;

    fn req(headers: &[(&str, &str)], query: Option<&str>, body: &str) -> RawRequest {
        RawRequest {
            method: "POST".into(),
            path: "/hooks/x".into(),
            query: query.map(str::to_string),
            headers: headers.iter().copied().collect(),
            body: Bytes::from(body.to_string()),
            received_at: UnixMillis(0),
            remote_addr: None,
        }
    }

    fn parsed(format: BodyFormat, r: &RawRequest) -> Value {
        parse_body(format, &r.headers, &r.body, &BodyLimits::default()).expect("parses").value
    }

    #[test]
    fn credential_headers_are_always_redacted_and_others_kept() {
        let r = req(
            &[
                ("Authorization", "Bearer abc"),
                ("Cookie", "s=1"),
                ("X-Api-Key", "k"),
                ("Proxy-Authorization", "p"),
                ("X-Other", "v"),
            ],
            None,
            "{}",
        );
        let out = Redaction::default().apply(BodyFormat::Json, &r, &json!({}));
        for h in ALWAYS_HEADERS {
            assert_eq!(out.headers.get(h), Some(REDACTED), "{h}");
        }
        assert_eq!(out.headers.get("x-other"), Some("v"));
    }

    #[test]
    fn query_tokens_are_redacted_and_other_pairs_kept_byte_for_byte() {
        let mut red = Redaction::default();
        red.add_query("token");
        let r = req(&[], Some("a=1%202&token=s3cret&b=x"), "{}");
        let out = red.apply(BodyFormat::Json, &r, &json!({}));
        assert_eq!(out.query.as_deref(), Some("a=1%202&token=%5Bredacted%5D&b=x"));
    }

    #[test]
    fn form_bodies_are_rewritten_and_still_parse_to_the_same_shape() {
        let mut red = Redaction::default();
        red.add_body_field("auth.application_token");
        red.add_body(Selector::compile("$.body.auth.refresh_token").expect("selector"));
        let body = "event=ADD&data%5BFIELDS%5D%5BID%5D=7&auth%5Bdomain%5D=d.example&auth%5Bapplication_token%5D=tok&auth%5Brefresh_token%5D=ref&tags%5B%5D=a&tags%5B%5D=b";
        let r = req(&[("content-type", "application/x-www-form-urlencoded")], None, body);
        let before = parsed(BodyFormat::Form, &r);
        let out = red.apply(BodyFormat::Form, &r, &before);
        let text = String::from_utf8(out.body.to_vec()).expect("utf-8");
        assert!(!text.contains("tok&") && !text.contains("=ref"), "{text}");
        let after = parsed(BodyFormat::Form, &out);
        let mut want = before.clone();
        want["auth"]["application_token"] = json!(REDACTED);
        want["auth"]["refresh_token"] = json!(REDACTED);
        assert_eq!(after, want);
    }

    #[test]
    fn json_values_are_replaced_keeping_objects_shaped() {
        let mut red = Redaction::default();
        red.add_body(Selector::compile("$.body.auth").expect("selector"));
        let r = req(
            &[("content-type", "application/json; charset=utf-8")],
            None,
            r#"{"id":1,"auth":{"a":"x","n":[1,2]}}"#,
        );
        let p = parsed(BodyFormat::Auto, &r);
        let out = red.apply(BodyFormat::Auto, &r, &p);
        assert_eq!(
            parsed(BodyFormat::Auto, &out),
            json!({"id": 1, "auth": {"a": REDACTED, "n": [REDACTED, REDACTED]}})
        );
    }

    #[test]
    fn a_body_without_the_field_is_stored_as_received() {
        let mut red = Redaction::default();
        red.add_body_field("auth.application_token");
        let r = req(&[("content-type", "application/json")], None, r#"{ "id": 1 }"#);
        let out = red.apply(BodyFormat::Json, &r, &parsed(BodyFormat::Json, &r));
        assert_eq!(out.body, r.body);
    }

    #[test]
    fn xml_bodies_with_a_credential_are_stored_as_their_json_document() {
        let mut red = Redaction::default();
        red.add_body(Selector::compile("$.body.note.key").expect("selector"));
        let r = req(&[("content-type", "application/xml")], None, "<note><key>k</key><to>x</to></note>");
        let p = parsed(BodyFormat::Auto, &r);
        let out = red.apply(BodyFormat::Auto, &r, &p);
        assert_eq!(out.headers.get("content-type"), Some("application/json"));
        let mut want = p.clone();
        want["note"]["key"] = json!(REDACTED);
        assert_eq!(parsed(BodyFormat::Auto, &out), want);
    }
}
