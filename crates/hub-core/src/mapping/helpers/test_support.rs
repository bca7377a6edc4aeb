//! What the helper tests share: two lookup tables, a strict registry and the envelope.

pub use super::{LookupTable, check_call, register_helpers};
pub use handlebars::Handlebars;
pub use serde_json::Value as Json;
use serde_json::json;
pub use std::collections::HashMap;
use std::sync::Arc;

pub fn tables() -> HashMap<String, LookupTable> {
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

pub fn registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    register_helpers(&mut hb, Arc::new(tables()));
    hb
}

pub fn envelope(body: Json) -> Json {
    json!({
        "body": body,
        "headers": {"content-type": "application/json", "x-source": "typeform"},
        "query": {"campaign": "spring"},
        "event": {"id": "evt_1", "source": "forms", "received_at": "2024-03-01T10:00:00Z"}
    })
}

pub fn try_render(template: &str, body: Json) -> Result<String, String> {
    registry().render_template(template, &envelope(body)).map_err(|e| e.to_string())
}

pub fn render(template: &str, body: Json) -> String {
    match try_render(template, body) {
        Ok(out) => out,
        Err(e) => panic!("rendering {template:?} failed: {e}"),
    }
}

pub fn render_err(template: &str, body: Json) -> String {
    match try_render(template, body) {
        Ok(out) => panic!("rendering {template:?} should fail, got {out:?}"),
        Err(e) => e,
    }
}

pub fn check(name: &str, args: &[Option<Json>], hash: &[(&str, Option<Json>)]) -> Result<(), String> {
    let args: Vec<Option<&Json>> = args.iter().map(Option::as_ref).collect();
    let hash: Vec<(&str, Option<&Json>)> = hash.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    check_call(name, &args, &hash, &tables())
}
