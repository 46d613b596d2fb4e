//! JSON objects written in a chosen key order.
//!
//! Payloads and results are kept as `serde_json::Value` and stored as
//! jsonb; neither keeps the order keys were written in (serde_json's map is
//! sorted, jsonb sorts its own way). Receivers still see an order: the
//! product page shows `job_id`, `template_id`, `static_values`, `result`,
//! and people read `result` against their template, field by field; Python
//! clients iterate it in the order it arrived. So the order is chosen when
//! the JSON is written: the keys listed first, in that order, then any
//! others as stored.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// A webhook payload's keys in the order the product page shows them, then
/// the ones Paperhook adds (`type` first: it tells a test event apart
/// before anything else is read).
pub const PAYLOAD: &[&str] = &[
    "type",
    "job_id",
    "template_id",
    "static_values",
    "result",
    "document",
    "status",
    "error",
];
/// The payload's `document`.
pub const DOCUMENT: &[&str] = &["index", "file_name", "pages"];
/// An `error` object.
pub const ERROR: &[&str] = &["code", "message"];

/// `value` with the keys `first` names written first, in that order, then
/// the others; anything but an object is written as it is.
pub struct KeysFirst<'a, K> {
    pub value: &'a Value,
    pub first: &'a [K],
}

impl<K: AsRef<str>> Serialize for KeysFirst<'_, K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        write_map(s, self.value, self.first, |_, v, out| {
            out.serialize_value(v)
        })
    }
}

/// A webhook payload as sent: top-level keys in [`PAYLOAD`] order, `result`
/// in the order of the template's fields, `document` and `error` in theirs.
pub struct Payload<'a, K> {
    pub payload: &'a Value,
    /// The template's field names ([`field_names`]).
    pub fields: &'a [K],
}

impl<K: AsRef<str>> Serialize for Payload<'_, K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        write_map(s, self.payload, PAYLOAD, |key, value, out| {
            let keys_first = |first| KeysFirst { value, first };
            match key {
                "result" => out.serialize_value(&KeysFirst {
                    value,
                    first: self.fields,
                }),
                "document" => out.serialize_value(&keys_first(DOCUMENT)),
                "error" => out.serialize_value(&keys_first(ERROR)),
                _ => out.serialize_value(value),
            }
        })
    }
}

/// An object keyed by a template's fields (a result, or where each field
/// was found), owned, with the fields' order: for the answers that hold
/// results among other data.
#[derive(Debug, Clone)]
pub struct InTemplateOrder {
    pub value: Value,
    pub fields: std::sync::Arc<[String]>,
}

impl Serialize for InTemplateOrder {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        KeysFirst {
            value: &self.value,
            first: &self.fields,
        }
        .serialize(s)
    }
}

/// Writes `value`'s entries, those named in `first` first; `write` writes
/// each entry's value (given its key).
fn write_map<S, K, W>(s: S, value: &Value, first: &[K], write: W) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    K: AsRef<str>,
    W: Fn(&str, &Value, &mut S::SerializeMap) -> Result<(), S::Error>,
{
    let Some(map) = value.as_object() else {
        return value.serialize(s);
    };
    let listed = |key: &str| first.iter().any(|k| k.as_ref() == key);
    let mut out = s.serialize_map(Some(map.len()))?;
    for (i, key) in first.iter().map(AsRef::as_ref).enumerate() {
        // A name listed twice is written once.
        if first[..i].iter().any(|k| k.as_ref() == key) {
            continue;
        }
        if let Some((key, v)) = map.get_key_value(key) {
            out.serialize_key(key)?;
            write(key, v, &mut out)?;
        }
    }
    for (key, v) in map.iter().filter(|(key, _)| !listed(key)) {
        out.serialize_key(key)?;
        write(key, v, &mut out)?;
    }
    out.end()
}

/// The names of a template's fields, in the template's order.
pub fn field_names(spec: &Value) -> Vec<String> {
    spec.get("fields")
        .and_then(Value::as_array)
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| f.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::object_in_order;

    fn keys(json: &str) -> Vec<String> {
        object_in_order(json).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn listed_keys_come_first_in_their_order_then_the_rest() {
        let v = json!({"a": 1, "b": 2, "c": 3, "d": {"z": 1, "y": 2}});
        let text = serde_json::to_string(&KeysFirst {
            value: &v,
            first: &["d", "missing", "b", "d"],
        })
        .unwrap();
        assert_eq!(keys(&text), ["d", "b", "a", "c"]);
        // The same values: only the order changed (nested objects as stored).
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
        assert!(text.contains(r#""d":{"y":2,"z":1}"#), "{text}");
        // Not an object: as it is.
        for v in [json!(null), json!([1, 2]), json!("x")] {
            let text = serde_json::to_string(&KeysFirst {
                value: &v,
                first: &["a"],
            })
            .unwrap();
            assert_eq!(text, v.to_string());
        }
    }

    #[test]
    fn a_payload_is_written_in_the_product_pages_order() {
        let p = json!({
            "status": "FAILED",
            "error": {"message": "m", "code": "c"},
            "document": {"pages": 1, "file_name": "f.pdf", "index": 0},
            "result": {"vendor": "V", "total": "1", "invoice_number": "N", "extra": true},
            "static_values": {"b": 1, "a": 2},
            "template_id": "t",
            "job_id": "j",
            "later": 1,
        });
        let fields = ["invoice_number", "total", "vendor"].map(String::from);
        let text = serde_json::to_string(&Payload {
            payload: &p,
            fields: &fields,
        })
        .unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), p);
        let top = object_in_order(&text);
        let top_keys: Vec<&str> = top.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            top_keys,
            [
                "job_id",
                "template_id",
                "static_values",
                "result",
                "document",
                "status",
                "error",
                "later"
            ]
        );
        let inner = |name: &str| keys(top.iter().find(|(k, _)| k == name).unwrap().1.get());
        assert_eq!(
            inner("result"),
            ["invoice_number", "total", "vendor", "extra"]
        );
        assert_eq!(inner("document"), ["index", "file_name", "pages"]);
        assert_eq!(inner("error"), ["code", "message"]);
        assert_eq!(inner("static_values"), ["a", "b"]);
    }

    #[test]
    fn field_names_follow_the_template() {
        let spec = json!({"fields": [{"name": "b"}, {"name": "a"}, {"label": "no name"}]});
        assert_eq!(field_names(&spec), ["b", "a"]);
        assert!(field_names(&json!({})).is_empty());
    }
}
