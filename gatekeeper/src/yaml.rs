//! The one place this crate reads policy text: files with a size bound, and YAML (a superset
//! of JSON) decoded into `serde_json::Value` with a bound on what aliases may expand to.
//!
//! Why the expansion bound: serde_norway resolves an alias by replaying the anchored events,
//! and only limits the *number* of replays (100 per event of the document), not their size.
//! Nested anchors (the "billion laughs") or one long anchored string aliased many times turn
//! a small file into gigabytes. Each file gets a budget of decoded size proportional to its
//! length; every decoded node and string byte is charged, replays included.

use std::io::Read as _;
use std::path::Path;

use serde::Deserialize as _;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::Error;

/// Files (and streams) larger than this are refused rather than read into memory.
pub const FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Decoded size a text may reach, per byte of text: room for plain YAML (a one-byte scalar
/// plus its separator decodes to one node), far below what alias bombs need.
const DECODED_UNITS_PER_TEXT_BYTE_MAX: usize = 16;
/// Decoded size every text may reach whatever its length (small files with a few aliases).
const DECODED_UNITS_FLOOR: usize = 1024 * 1024;
/// What one node (scalar, sequence or mapping, and a mapping key) costs, on top of the bytes
/// of its strings: roughly the size of a `serde_json::Value`.
const NODE_UNITS: usize = 16;

/// Reads `path` as UTF-8 text, refusing files over [`FILE_BYTES_MAX`] (checked on the bytes
/// read, so a special file that reports no length is bounded too).
pub fn read_text(path: &Path) -> Result<String, Error> {
    let io = |message: String| Error::Io {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|error| io(error.to_string()))?;
    let mut bytes = Vec::new();
    file.take(FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| io(error.to_string()))?;
    if bytes.len() as u64 > FILE_BYTES_MAX {
        return Err(io(format!(
            "larger than the limit of {FILE_BYTES_MAX} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| Error::Yaml {
        path: path.to_path_buf(),
        document: 1,
        message: "not UTF-8 text".into(),
    })
}

/// Every YAML document of `text`, `null` for an empty one, in order. The error carries the
/// 1-based number of the document at fault.
pub fn documents(text: &str) -> Result<Vec<Value>, (usize, String)> {
    let mut budget = Budget::for_text(text);
    let mut values = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = ValueSeed {
            budget: &mut budget,
        }
        .deserialize(document)
        .map_err(|error| (index + 1, error.to_string()))?;
        values.push(value);
    }
    Ok(values)
}

/// The first YAML document of `text` (`None` or `null` when the text holds none); later documents are
/// neither parsed nor checked, as Go's `yaml.Unmarshal` reads only the first.
pub fn first_document(text: &str) -> Result<Option<Value>, String> {
    let Some(document) = serde_norway::Deserializer::from_str(text).next() else {
        return Ok(None);
    };
    let mut budget = Budget::for_text(text);
    ValueSeed {
        budget: &mut budget,
    }
    .deserialize(document)
    .map(Some)
    .map_err(|error| error.to_string())
}

/// Decoded size units left for one text.
struct Budget {
    remaining_units: usize,
    limit_units: usize,
}

impl Budget {
    fn for_text(text: &str) -> Budget {
        let limit_units = text
            .len()
            .saturating_mul(DECODED_UNITS_PER_TEXT_BYTE_MAX)
            .max(DECODED_UNITS_FLOOR);
        Budget {
            remaining_units: limit_units,
            limit_units,
        }
    }

    fn charge<E: serde::de::Error>(&mut self, string_bytes: usize) -> Result<(), E> {
        let cost = NODE_UNITS.saturating_add(string_bytes);
        match self.remaining_units.checked_sub(cost) {
            Some(remaining) => {
                self.remaining_units = remaining;
                Ok(())
            }
            None => Err(E::custom(format!(
                "the document expands to more than {} units of decoded data (aliases repeated too often?)",
                self.limit_units
            ))),
        }
    }
}

/// Builds a `serde_json::Value` as `Value::deserialize` does (non-finite floats become
/// `null`, mapping keys are read as strings), charging the budget for every node.
struct ValueSeed<'a> {
    budget: &'a mut Budget,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Value, E> {
        self.budget.charge(value.len())?;
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Value, E> {
        self.budget.charge(value.len())?;
        Ok(Value::String(value))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<Value, A::Error> {
        self.budget.charge(0)?;
        let mut items = Vec::new();
        while let Some(item) = sequence.next_element_seed(ValueSeed {
            budget: &mut *self.budget,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut mapping: A) -> Result<Value, A::Error> {
        self.budget.charge(0)?;
        let mut map = Map::new();
        while let Some(key) = mapping.next_key_seed(KeySeed {
            budget: &mut *self.budget,
        })? {
            let value = mapping.next_value_seed(ValueSeed {
                budget: &mut *self.budget,
            })?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// A mapping key, read as a string like `serde_json::Value` reads keys.
struct KeySeed<'a> {
    budget: &'a mut Budget,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        let key = String::deserialize(deserializer)?;
        self.budget.charge(key.len())?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_like_serde_json_value() {
        let text = "a: 1\nb: [true, null, 1.5, -2, x]\n'c': {d: \"e\"}\n1: one\nf: .nan\n";
        let expected: Value = serde_norway::from_str::<Value>(text).unwrap();
        assert_eq!(documents(text).unwrap(), vec![expected]);
        assert_eq!(
            documents("a: 1\n---\n---\nb: [1, 2]\n").unwrap(),
            vec![json!({"a": 1}), Value::Null, json!({"b": [1, 2]})]
        );
        assert_eq!(documents("a: 1\n---\nb: [\n").unwrap_err().0, 2);
        assert!(matches!(
            first_document("").unwrap(),
            None | Some(Value::Null)
        ));
        assert_eq!(
            first_document("a: 1\n---\nb: [\n").unwrap(),
            Some(json!({"a": 1}))
        );
    }

    #[test]
    fn small_aliases_decode() {
        let text = "base: &base {cpu: 100m, memory: 64Mi}\nlimits: *base\nrequests: *base\n";
        assert_eq!(
            documents(text).unwrap()[0]["requests"],
            json!({"cpu": "100m", "memory": "64Mi"})
        );
    }

    #[test]
    fn alias_bombs_are_refused_not_expanded() {
        // Ten levels of ten aliases each: 10^10 leaves from a few hundred bytes.
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for level in 1..10 {
            let previous = format!("*a{}", level - 1);
            let items = [previous.as_str(); 10].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        let (document, message) = documents(&text).unwrap_err();
        assert_eq!(document, 1);
        assert!(message.contains("units of decoded data"), "{message}");
        assert!(first_document(&text).is_err());

        // One long string repeated through aliases.
        let long = "x".repeat(100_000);
        let mut text = format!("s: &s \"{long}\"\nlist: [");
        text.push_str(&["*s"; 1_000].join(", "));
        text.push_str("]\n");
        assert!(documents(&text).is_err());
    }

    #[test]
    fn read_text_refuses_oversized_and_non_utf8_files() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("big.yaml");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(FILE_BYTES_MAX + 1).unwrap();
        let error = read_text(&path).unwrap_err();
        assert_eq!(error.code(), "io");
        assert!(
            error.to_string().contains("larger than the limit"),
            "{error}"
        );
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert_eq!(read_text(&path).unwrap_err().code(), "yaml.invalid");
    }
}
