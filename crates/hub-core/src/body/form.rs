//! `application/x-www-form-urlencoded` bodies with PHP/Rails bracket nesting.
//!
//! `leads[status][0][id]=1` becomes `{"leads":{"status":[{"id":"1"}]}}`; `a[]=1&a[]=2` and a
//! repeated `a=1&a=2` become arrays; keys whose brackets are percent-encoded (`a%5Bb%5D`) nest the
//! same way. Values stay strings (forms carry no types); invalid UTF-8 is replaced, never fatal.
//! When a key is used both as a scalar and as a container (`a=1&a[b]=2`), the later one wins, as
//! in PHP.
//!
//! The nesting itself lives in [`FormBuilder`], which takes already-decoded pairs: form bodies in
//! any charset and the text fields of multipart bodies go through the same rules.

use encoding_rs::{Encoding, UTF_8};
use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Deeper bracket paths than this are kept as a literal key (bounded work per pair).
const MAX_DEPTH: usize = 32;

/// Parses a UTF-8 form body into nested JSON.
pub fn parse_form(body: &[u8]) -> Value {
    let mut builder = FormBuilder::default();
    for (key, value) in form_urlencoded::parse(body) {
        builder.push(&key, Value::String(value.into_owned()));
    }
    builder.finish()
}

/// Parses a form body whose percent-decoded bytes are in `enc`.
///
/// `form_urlencoded` decodes to UTF-8 lossily, which would destroy e.g. windows-1251 bytes before
/// the charset could be applied; so pairs are percent-decoded to bytes here and then decoded.
pub(crate) fn parse_form_in(body: &[u8], enc: &'static Encoding) -> Value {
    if enc == UTF_8 {
        return parse_form(body);
    }
    let mut builder = FormBuilder::default();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let key = percent_decode(key);
        let value = percent_decode(value);
        let key = enc.decode_without_bom_handling(&key).0;
        let value = enc.decode_without_bom_handling(&value).0;
        builder.push(&key, Value::String(value.into_owned()));
    }
    builder.finish()
}

/// `+` is a space, then `%XX` escapes are bytes (the `application/x-www-form-urlencoded` rules).
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let plus_as_space: Cow<'_, [u8]> = if raw.contains(&b'+') {
        Cow::Owned(raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect())
    } else {
        Cow::Borrowed(raw)
    };
    percent_encoding::percent_decode(&plus_as_space).collect()
}

/// Builds the nested value from decoded `(key, value)` pairs in arrival order.
#[derive(Debug, Default)]
pub(crate) struct FormBuilder {
    root: IndexMap<String, Node>,
}

/// The tree while pairs arrive. Leaves are kept apart from containers so that a leaf that is
/// itself an object (a multipart file reference) is never mistaken for a nesting level.
#[derive(Debug)]
enum Node {
    /// One value under a flat key.
    Leaf(Value),
    /// A flat key repeated (`a=1&a=2`).
    Leaves(Vec<Value>),
    /// A nesting level (`a[b]=…`, `a[]=…`); index-keyed levels become arrays in `finish`.
    Map(IndexMap<String, Node>),
}

impl FormBuilder {
    /// Adds one pair; `key` may carry bracket nesting (`contact[name]`, `tags[]`).
    pub(crate) fn push(&mut self, key: &str, value: Value) {
        let (base, segments) = split_key(key);
        insert(&mut self.root, base, &segments, value);
    }

    /// The finished value. Levels keyed exactly `0..n` become arrays (the top level too, as
    /// before: `0=a&1=b` is `["a","b"]`); an empty form is `{}`.
    pub(crate) fn finish(self) -> Value {
        Node::Map(self.root).into_value()
    }
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

fn insert(map: &mut IndexMap<String, Node>, key: &str, rest: &[Option<&str>], value: Value) {
    let Some((first, rest)) = rest.split_first() else {
        match map.get_mut(key) {
            Some(Node::Leaf(prev)) => {
                let prev = std::mem::take(prev);
                map.insert(key.to_string(), Node::Leaves(vec![prev, value]));
            }
            Some(Node::Leaves(items)) => items.push(value),
            // A leaf after a container under the same key: the later pair wins, as in PHP.
            _ => {
                map.insert(key.to_string(), Node::Leaf(value));
            }
        }
        return;
    };
    let slot = map.entry(key.to_string()).or_insert_with(|| Node::Map(IndexMap::new()));
    make_level(slot);
    if let Node::Map(child) = slot {
        let next_key = match first {
            Some(k) => (*k).to_string(),
            None => child.len().to_string(),
        };
        insert(child, &next_key, rest, value);
    }
}

/// Makes `slot` a level to descend into: repeated leaves become an index-keyed level (an array
/// again in `finish`); a single leaf is replaced, as the later pair wins.
fn make_level(slot: &mut Node) {
    match slot {
        Node::Map(_) => {}
        Node::Leaves(items) => {
            let m =
                std::mem::take(items).into_iter().enumerate().map(|(i, v)| (i.to_string(), Node::Leaf(v)));
            *slot = Node::Map(m.collect());
        }
        Node::Leaf(_) => *slot = Node::Map(IndexMap::new()),
    }
}

impl Node {
    fn into_value(self) -> Value {
        match self {
            Node::Leaf(v) => v,
            Node::Leaves(items) => Value::Array(items),
            Node::Map(m) if is_dense(&m) => {
                // Keys are exactly the canonical decimals 0..n, so each index has one slot.
                let mut slots: Vec<Value> = vec![Value::Null; m.len()];
                for (k, v) in m {
                    if let Some(slot) = k.parse::<usize>().ok().and_then(|i| slots.get_mut(i)) {
                        *slot = v.into_value();
                    }
                }
                Value::Array(slots)
            }
            Node::Map(m) => {
                Value::Object(m.into_iter().map(|(k, v)| (k, v.into_value())).collect::<Map<_, _>>())
            }
        }
    }
}

/// A level whose keys are exactly `0..n` (canonical decimal, any order) is an array.
fn is_dense(m: &IndexMap<String, Node>) -> bool {
    let n = m.len();
    n > 0
        && m.keys().all(|k| match k.parse::<usize>() {
            // Distinct canonical keys below n: a permutation of 0..n.
            Ok(i) => i < n && i.to_string() == *k,
            Err(_) => false,
        })
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
    fn charset_pairs_are_decoded_from_bytes() {
        let cp1251 = encoding_rs::WINDOWS_1251;
        // "Иван Петров" in windows-1251; the bracket key is percent-encoded too.
        let body = b"name=%C8%E2%E0%ED+%CF%E5%F2%F0%EE%E2&a%5B%E8%EC%FF%5D=1&&flag&plus=%2B";
        assert_eq!(
            parse_form_in(body, cp1251),
            json!({"name": "Иван Петров", "a": {"имя": "1"}, "flag": "", "plus": "+"})
        );
        assert_eq!(parse_form_in(b"a=%D0%98", UTF_8), json!({"a": "И"}));
        // A stray `%` is kept literally, as form_urlencoded does.
        assert_eq!(parse_form_in(b"a=100%&b=%zz", cp1251), json!({"a": "100%", "b": "%zz"}));
    }

    #[test]
    fn builder_keeps_object_leaves_apart_from_levels() {
        let mut b = FormBuilder::default();
        b.push("file", json!({"attachment": 0}));
        b.push("file", json!({"attachment": 1}));
        b.push("c[photo]", json!({"attachment": 2}));
        b.push("c[name]", json!("Ann"));
        assert_eq!(
            b.finish(),
            json!({"file": [{"attachment": 0}, {"attachment": 1}], "c": {"photo": {"attachment": 2}, "name": "Ann"}})
        );
    }

    #[test]
    fn repeated_then_appended_and_index_keyed_top_level() {
        assert_eq!(parse_form(b"a=1&a=2&a[]=3"), json!({"a": ["1", "2", "3"]}));
        assert_eq!(parse_form(b"0=a&1=b"), json!(["a", "b"]));
        assert_eq!(parse_form(b""), json!({}));
    }

    #[test]
    fn depth_is_bounded() {
        let key = "a".to_string() + &"[x]".repeat(40);
        let body = format!("{key}=1");
        let v = parse_form(body.as_bytes());
        assert_eq!(v, json!({ key: "1" }));
    }
}
