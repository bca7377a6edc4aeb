//! Temporary: replaced by the full helpers module.
use std::collections::HashMap;
use std::sync::Arc;
#[derive(Clone, Debug, Default)]
pub struct LookupTable {
    pub entries: serde_json::Map<String, serde_json::Value>,
    pub default: Option<serde_json::Value>,
}
pub type Lookups = Arc<HashMap<String, LookupTable>>;
pub const HELPER_NAMES: &[&str] = &["if", "unless", "each", "with", "eq", "lower"];
pub fn register_helpers(_hb: &mut handlebars::Handlebars<'static>, _lookups: Lookups) {}
pub fn check_call(
    _name: &str,
    _literal_args: &[Option<&serde_json::Value>],
    _hash: &[(&str, Option<&serde_json::Value>)],
    _lookups: &HashMap<String, LookupTable>,
) -> Result<(), String> {
    Ok(())
}
