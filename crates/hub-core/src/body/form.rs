//! `application/x-www-form-urlencoded` bodies with PHP/Rails bracket nesting.
//!
//! `leads[status][0][id]=1` becomes `{"leads":{"status":[{"id":"1"}]}}`; `a[]=1&a[]=2` and a
//! repeated `a=1&a=2` become arrays; keys whose brackets are percent-encoded (`a%5Bb%5D`) nest the
//! same way. Values stay strings (forms carry no types); invalid UTF-8 is replaced, never fatal.
//! When a key is used both as a scalar and as a container (`a=1&a[b]=2`), the later one wins, as
//! in PHP.

use serde_json::{Map, Value};

/// Deeper bracket paths than this are kept as a literal key (bounded work per pair).
const MAX_DEPTH: usize = 32;

/// Parses a form body into nested JSON.
pub fn parse_form(body: &[u8]) -> Value {
    let mut root = Map::new();
    for (key, value) in form_urlencoded::parse(body) {
        let (base, segments) = split_key(&key);
        insert(&mut root, base, &segments, Value::String(value.into_owned()));
    }
    let mut v = Value::Object(root);
    densify(&mut v);
    v
}

/// `a[b][]` → (`a`, [Some("b"), None]); `None` is an append (`[]`). A key whose brackets do not
/// parse cleanly is taken literally.
fn split_key(key: &str) -> (&str, Vec<Option<&str>>) {
    let Some(open) = key.find('[') else { return (key, Vec::new()) };
    if open == 0 {
        return (key, Vec::new());
    }
    let (base, mut rest) = key.split_at(open);
    let mut segs = Vec::new();
    while let Some(stripped) = rest.strip_prefix('[') {
        let Some(close) = stripped.find(']') else { return (key, Vec::new()) };
        let seg = &stripped[..close];
        segs.push(if seg.is_empty() { None } else { Some(seg) });
        rest = &stripped[close + 1..];
        if segs.len() > MAX_DEPTH {
            return (key, Vec::new());
        }
    }
    if !rest.is_empty() {
        // Trailing text after the last bracket (`a[b]c`): PHP drops it; keeping the key literal
        // loses nothing.
        return (key, Vec::new());
    }
    (base, segs)
}

fn insert(map: &mut Map<String, Value>, key: &str, rest: &[Option<&str>], value: Value) {
    if rest.is_empty() {
        match map.get_mut(key) {
            Some(Value::String(prev)) => {
                let prev = std::mem::take(prev);
                map.insert(key.to_string(), Value::Array(vec![Value::String(prev), value]));
            }
            Some(Value::Array(items)) => items.push(value),
            _ => {
                map.insert(key.to_string(), value);
            }
        }
        return;
    }
    let slot = map.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    let child = as_container(slot);
    let next_key = match rest[0] {
        Some(k) => k.to_string(),
        None => child.len().to_string(),
    };
    insert(child, &next_key, &rest[1..], value);
}

/// Makes `slot` an object to descend into: arrays become index-keyed objects (densified back at
/// the end); a scalar is replaced, as the later pair wins.
fn as_container(slot: &mut Value) -> &mut Map<String, Value> {
    if let Value::Array(items) = slot {
        let m: Map<String, Value> =
            std::mem::take(items).into_iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect();
        *slot = Value::Object(m);
    }
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("slot was just made an object"),
    }
}

/// Objects whose keys are exactly `0..n` (canonical decimal) become arrays in index order.
fn densify(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(densify),
        Value::Object(m) => {
            m.values_mut().for_each(densify);
            let n = m.len();
            if n == 0 {
                return;
            }
            let mut slots: Vec<Option<Value>> = vec![None; n];
            for k in m.keys() {
                match k.parse::<usize>() {
                    Ok(i) if i < n && i.to_string() == *k && slots[i].is_none() => {
                        slots[i] = Some(Value::Null)
                    }
                    _ => return,
                }
            }
            let mut taken = std::mem::take(m);
            let items = (0..n).map(|i| taken.remove(&i.to_string()).unwrap_or(Value::Null)).collect();
            *v = Value::Array(items);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flat_pairs_and_plus_decoding() {
        assert_eq!(parse_form(b"name=Ann+Lee&email=a%40b.c"), json!({"name": "Ann Lee", "email": "a@b.c"}));
    }

    #[test]
    fn amocrm_style_nesting() {
        let body = b"leads%5Bstatus%5D%5B0%5D%5Bid%5D=25399013&leads%5Bstatus%5D%5B0%5D%5Bstatus_id%5D=142\
&leads[status][1][id]=7&account[subdomain]=test";
        assert_eq!(
            parse_form(body),
            json!({
                "leads": {"status": [{"id": "25399013", "status_id": "142"}, {"id": "7"}]},
                "account": {"subdomain": "test"}
            })
        );
    }

    #[test]
    fn append_and_repeated_keys_become_arrays() {
        assert_eq!(parse_form(b"a[]=1&a[]=2&b=x&b=y&b=z"), json!({"a": ["1", "2"], "b": ["x", "y", "z"]}));
    }

    #[test]
    fn sparse_indices_stay_objects() {
        assert_eq!(parse_form(b"a[1]=x&a[3]=y"), json!({"a": {"1": "x", "3": "y"}}));
        assert_eq!(parse_form(b"a[01]=x"), json!({"a": {"01": "x"}}));
    }

    #[test]
    fn later_pair_wins_on_shape_conflict() {
        assert_eq!(parse_form(b"a=1&a[b]=2"), json!({"a": {"b": "2"}}));
    }

    #[test]
    fn malformed_brackets_are_literal_keys() {
        assert_eq!(parse_form(b"a[b=1&[x]=2&c[d]e=3"), json!({"a[b": "1", "[x]": "2", "c[d]e": "3"}));
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(parse_form(b"n=%FF%FEok"), json!({"n": "\u{FFFD}\u{FFFD}ok"}));
    }

    #[test]
    fn depth_is_bounded() {
        let key = "a".to_string() + &"[x]".repeat(40);
        let body = format!("{key}=1");
        let v = parse_form(body.as_bytes());
        assert_eq!(v, json!({ key: "1" }));
    }
}
