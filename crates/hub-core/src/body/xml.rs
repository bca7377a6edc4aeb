//! XML bodies to JSON through `quick-xml`'s event reader, with a fixed, lossless-enough convention.
//!
//! (Deserializing into `serde_json::Value` would drop the root element and all but one of each
//! repeated element, so the tree is built from events here.)
//!
//! - The root element is the single top-level key.
//! - Attributes become `"@name"` keys (namespace declarations included: `"@xmlns:soap"`).
//! - An element with only text is a string, kept exactly (entities and CDATA decoded, line ends
//!   normalized as XML requires); an empty element is `""`.
//! - An element with attributes or child elements is an object: attributes first, then children in
//!   document order, then its own text under `"#text"` (whitespace-trimmed, left out when empty),
//!   so `<a x="1"/>` is `{"@x": "1"}`.
//! - Repeated sibling elements become an array in document order (interleaving with other names
//!   is not kept).
//! - Names are kept as written, prefixes included (`soap:Envelope`); every value is a string: no
//!   type guessing, so `+380441234567` and `007` survive.
//!
//! ```text
//! <?xml version="1.0"?>
//! <soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
//!   <soap:Body>
//!     <order id="42" status="paid">
//!       <item sku="A-1">2</item><item sku="B-2">1</item>
//!       <phone>+380441234567</phone><note><![CDATA[<b>gift</b> & wrap]]></note><gift/>
//!     </order>
//!   </soap:Body>
//! </soap:Envelope>
//! →
//! {"soap:Envelope": {"@xmlns:soap": "http://schemas.xmlsoap.org/soap/envelope/",
//!   "soap:Body": {"order": {"@id": "42", "@status": "paid",
//!     "item": [{"@sku": "A-1", "#text": "2"}, {"@sku": "B-2", "#text": "1"}],
//!     "phone": "+380441234567", "note": "<b>gift</b> & wrap", "gift": ""}}}}
//! ```
//!
//! Safety: nesting deeper than [`MAX_DEPTH`] elements is rejected; a `<!DOCTYPE>` with an internal
//! subset (where entity declarations live) is rejected, and only the five predefined entities and
//! character references are decoded, so no entity expansion (billion laughs) or external fetch can
//! happen. The encoding is the `charset` parameter, else a byte-order mark, else the XML
//! declaration's `encoding`, else UTF-8; bytes invalid in it are an error.

use super::BodyError;
use super::decode::{ascii_compatible, decode_strict, encoding_for_label};
use encoding_rs::{Encoding, UTF_8};
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Element nesting limit: far beyond any real webhook, far below any stack or memory concern.
pub(crate) const MAX_DEPTH: usize = 64;

fn invalid(msg: impl Into<String>) -> BodyError {
    BodyError::InvalidXml(msg.into())
}

/// An element being read: attributes and finished children so far, and its own text.
struct Frame {
    name: String,
    obj: Map<String, Value>,
    has_attributes: bool,
    has_children: bool,
    text: String,
}

impl Frame {
    fn open(start: &BytesStart<'_>) -> Result<Self, BodyError> {
        let mut obj = Map::new();
        for attr in start.attributes() {
            let attr = attr.map_err(|e| invalid(e.to_string()))?;
            let value = attr.normalized_value(XmlVersion::Implicit1_0).map_err(|e| invalid(e.to_string()))?;
            obj.insert(format!("@{}", attr.key.0), Value::String(value.into_owned()));
        }
        Ok(Frame {
            name: start.name().0.to_string(),
            has_attributes: !obj.is_empty(),
            obj,
            has_children: false,
            text: String::new(),
        })
    }

    fn into_value(self) -> (String, Value) {
        if !self.has_attributes && !self.has_children {
            return (self.name, Value::String(self.text));
        }
        let mut obj = self.obj;
        let text = self.text.trim();
        if !text.is_empty() {
            obj.insert("#text".into(), Value::String(text.to_string()));
        }
        (self.name, Value::Object(obj))
    }
}

pub(crate) fn parse_xml(body: &[u8], charset: Option<&'static Encoding>) -> Result<Value, BodyError> {
    let text = decode_document(body, charset)?;
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    loop {
        let event = reader.read_event().map_err(|e| invalid(e.to_string()))?;
        match event {
            Event::Start(start) => {
                let frame = open_checked(&start, &stack, &root)?;
                stack.push(frame);
            }
            Event::Empty(start) => {
                let frame = open_checked(&start, &stack, &root)?;
                close(frame, &mut stack, &mut root);
            }
            Event::End(_) => {
                // quick-xml already rejects mismatched and unmatched end tags.
                let frame = stack.pop().ok_or_else(|| invalid("end tag without a start tag"))?;
                close(frame, &mut stack, &mut root);
            }
            Event::Text(t) => append_text(&mut stack, &t.xml10_content())?,
            Event::CData(c) => append_text(&mut stack, &c.xml10_content())?,
            Event::GeneralRef(r) => {
                let resolved: Cow<'_, str> = match r.resolve_char_ref().map_err(|e| invalid(e.to_string()))? {
                    Some(c) => Cow::Owned(c.to_string()),
                    None => match resolve_predefined_entity(&r) {
                        Some(s) => Cow::Borrowed(s),
                        None => return Err(invalid(format!("undefined entity `&{};`", &*r))),
                    },
                };
                append_text(&mut stack, &resolved)?;
            }
            Event::DocType(d) => {
                if d.contains('[') {
                    return Err(invalid(
                        "a DOCTYPE with an internal subset (entity declarations) is not accepted",
                    ));
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(invalid(format!("element `{}` is not closed", open.name)));
    }
    let (name, value) = root.ok_or_else(|| invalid("no root element"))?;
    let mut top = Map::new();
    top.insert(name, value);
    Ok(Value::Object(top))
}

fn open_checked(
    start: &BytesStart<'_>,
    stack: &[Frame],
    root: &Option<(String, Value)>,
) -> Result<Frame, BodyError> {
    if stack.is_empty() && root.is_some() {
        return Err(invalid("more than one root element"));
    }
    if stack.len() >= MAX_DEPTH {
        return Err(invalid(format!("elements nested deeper than {MAX_DEPTH}")));
    }
    Frame::open(start)
}

/// Hands a finished element to its parent (repeated names become an array), or makes it the root.
fn close(frame: Frame, stack: &mut [Frame], root: &mut Option<(String, Value)>) {
    let (name, value) = frame.into_value();
    let Some(parent) = stack.last_mut() else {
        *root = Some((name, value));
        return;
    };
    parent.has_children = true;
    // An element's value is never an array, so an array here is a run of repeated siblings.
    match parent.obj.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        Some(prev) => {
            let first = std::mem::take(prev);
            *prev = Value::Array(vec![first, value]);
        }
        None => {
            parent.obj.insert(name, value);
        }
    }
}

fn append_text(stack: &mut [Frame], text: &str) -> Result<(), BodyError> {
    match stack.last_mut() {
        Some(frame) => frame.text.push_str(text),
        // Outside the root only whitespace may appear (around the prolog and after the root).
        None if text.chars().all(char::is_whitespace) => {}
        None => return Err(invalid("text outside the root element")),
    }
    Ok(())
}

/// The document as UTF-8 text, by `charset` parameter > byte-order mark > XML declaration > UTF-8.
fn decode_document<'a>(
    body: &'a [u8],
    charset: Option<&'static Encoding>,
) -> Result<Cow<'a, str>, BodyError> {
    let enc = match charset {
        Some(enc) => enc,
        None => match Encoding::for_bom(body) {
            Some((enc, _)) => enc,
            None => match declared_encoding(body) {
                Some(label) => encoding_for_label(label)
                    .map(ascii_compatible)
                    .ok_or_else(|| BodyError::UnknownCharset(label.to_string()))?,
                None => UTF_8,
            },
        },
    };
    decode_strict(body, enc).ok_or_else(|| invalid(format!("body is not valid {}", enc.name())))
}

/// The `encoding` pseudo-attribute of a leading `<?xml … ?>` declaration, read as ASCII.
fn declared_encoding(body: &[u8]) -> Option<&str> {
    let head = body.strip_prefix(b"<?xml")?;
    let end = head.windows(2).take(512).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(head.get(..end)?).ok()?;
    let after = decl.split_once("encoding")?.1.trim_start().strip_prefix('=')?.trim_start();
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = after.get(1..)?;
    value.split_once(quote).map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(xml: &str) -> Result<Value, BodyError> {
        parse_xml(xml.as_bytes(), None)
    }

    #[test]
    fn module_doc_example() {
        let xml = r#"<?xml version="1.0"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <order id="42" status="paid">
      <item sku="A-1">2</item><item sku="B-2">1</item>
      <phone>+380441234567</phone><note><![CDATA[<b>gift</b> & wrap]]></note><gift/>
    </order>
  </soap:Body>
</soap:Envelope>"#;
        assert_eq!(
            parse(xml).unwrap(),
            json!({"soap:Envelope": {"@xmlns:soap": "http://schemas.xmlsoap.org/soap/envelope/",
              "soap:Body": {"order": {"@id": "42", "@status": "paid",
                "item": [{"@sku": "A-1", "#text": "2"}, {"@sku": "B-2", "#text": "1"}],
                "phone": "+380441234567", "note": "<b>gift</b> & wrap", "gift": ""}}}})
        );
    }

    #[test]
    fn attributes_text_and_empty_elements() {
        assert_eq!(parse("<a>hi</a>").unwrap(), json!({"a": "hi"}));
        assert_eq!(parse("<a> spaced </a>").unwrap(), json!({"a": " spaced "}));
        assert_eq!(parse("<a></a>").unwrap(), json!({"a": ""}));
        assert_eq!(parse(r#"<a x="1"/>"#).unwrap(), json!({"a": {"@x": "1"}}));
        assert_eq!(parse(r#"<a x="1"> t </a>"#).unwrap(), json!({"a": {"@x": "1", "#text": "t"}}));
        assert_eq!(parse("<a>x<b>1</b>y</a>").unwrap(), json!({"a": {"b": "1", "#text": "xy"}}));
        assert_eq!(parse("<a><n>007</n><n>1.50</n></a>").unwrap(), json!({"a": {"n": ["007", "1.50"]}}));
    }

    #[test]
    fn repeated_elements_keep_document_order() {
        let v = parse("<r><i>1</i><j>x</j><i>2</i><i>3</i></r>").unwrap();
        assert_eq!(v, json!({"r": {"i": ["1", "2", "3"], "j": "x"}}));
    }

    #[test]
    fn entities_and_char_refs() {
        let v = parse(
            r#"<a t="&lt;&amp;&#x41;&#66;">&lt;tag&gt; &amp; &quot;q&quot; &apos;s&apos; &#1048;&#x432;</a>"#,
        );
        assert_eq!(v.unwrap(), json!({"a": {"@t": "<&AB", "#text": "<tag> & \"q\" 's' Ив"}}));
        assert!(matches!(parse("<a>&nbsp;</a>"), Err(BodyError::InvalidXml(_))));
        assert!(matches!(parse("<a>&#0;</a>"), Err(BodyError::InvalidXml(_))));
    }

    #[test]
    fn line_ends_are_normalized() {
        assert_eq!(parse("<a>1\r\n2\r3</a>").unwrap(), json!({"a": "1\n2\n3"}));
    }

    #[test]
    fn malformed_xml_is_an_error() {
        for bad in [
            "<a>",
            "<a></b>",
            "</a>",
            "<a><b></a>",
            "<a>1</a><b>2</b>",
            "text",
            "<a>1</a>tail",
            "<a x='1' x='2'/>",
            "<a x=1/>",
            "<a",
            "<!-- only a comment -->",
            "<a>&amp</a>",
        ] {
            assert!(matches!(parse(bad), Err(BodyError::InvalidXml(_))), "{bad}");
        }
    }

    #[test]
    fn depth_bomb_is_rejected() {
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(matches!(parse(&deep), Err(BodyError::InvalidXml(m)) if m.contains("deeper")));
        let deep_empty = "<a>".repeat(MAX_DEPTH) + "<b/>" + &"</a>".repeat(MAX_DEPTH);
        assert!(matches!(parse(&deep_empty), Err(BodyError::InvalidXml(_))));
        // Unclosed and very deep: rejected at the limit, not after reading a million levels.
        let huge = "<a>".repeat(1_000_000);
        assert!(matches!(parse(&huge), Err(BodyError::InvalidXml(m)) if m.contains("deeper")));
    }

    #[test]
    fn entity_declarations_are_refused() {
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert!(matches!(parse(laughs), Err(BodyError::InvalidXml(m)) if m.contains("DOCTYPE")));
        let xxe = r#"<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
        assert!(matches!(parse(xxe), Err(BodyError::InvalidXml(_))));
        // A DOCTYPE without an internal subset declares nothing and is ignored.
        assert_eq!(parse(r#"<!DOCTYPE r SYSTEM "r.dtd"><r>1</r>"#).unwrap(), json!({"r": "1"}));
    }

    #[test]
    fn encodings() {
        // Declared in the prolog.
        let cp = b"<?xml version=\"1.0\" encoding=\"windows-1251\"?><n>\xc8\xe2\xe0\xed</n>";
        assert_eq!(parse_xml(cp, None).unwrap(), json!({"n": "Иван"}));
        // The charset parameter wins over the declaration.
        let koi = b"<?xml version=\"1.0\" encoding=\"windows-1251\"?><n>\xf0\xd2\xc9\xd7\xc5\xd4</n>";
        assert_eq!(parse_xml(koi, encoding_for_label("koi8-r")).unwrap(), json!({"n": "Привет"}));
        // UTF-16 with a byte-order mark.
        let mut utf16 = vec![0xFF, 0xFE];
        utf16.extend("<a>ü</a>".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(parse_xml(&utf16, None).unwrap(), json!({"a": "ü"}));
        // A declaration claiming UTF-16 in an ASCII document is read as UTF-8.
        assert_eq!(
            parse_xml("<?xml version='1.0' encoding='UTF-16'?><a>ü</a>".as_bytes(), None).unwrap(),
            json!({"a": "ü"})
        );
        assert_eq!(
            parse_xml(b"<?xml version='1.0' encoding='nope'?><a/>", None),
            Err(BodyError::UnknownCharset("nope".into()))
        );
        assert!(matches!(parse_xml(b"<a>\xff</a>", None), Err(BodyError::InvalidXml(_))));
    }
}
