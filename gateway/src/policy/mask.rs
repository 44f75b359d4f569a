//! Decision-log masking the OPA way: a bundle's `system.log.mask` rule names JSON pointers under
//! `/input` and `/result` to erase (a string, or `{"op": "remove", "path": ...}`) or to replace
//! (`{"op": "upsert", "path": ..., "value": ...}`). The rule sees the event being logged as its
//! input: `input.input`, `input.result`, `input.path`, `input.decision_id`.
//!
//! Unlike OPA, a failing mask never drops the record: it is written with the whole input
//! erased and the error noted (`Redaction::error`). OPA's `system.log.drop` is not honoured for
//! the same reason: every decision is recorded.

use countersign_audit::Redaction;
use serde_json::{Map, Value, json};

use super::{PolicyEngine, PolicyError};

/// The rule OPA evaluates to mask decision-log events (`decision_logs.mask_decision`).
pub const MASK_RULE: &str = "data.system.log.mask";

/// Most mask operations one decision may carry; a bound on the work a bundle can make
/// every audit append do.
pub const MASK_OPERATIONS_MAX: usize = 256;

/// A decision's input and result as they go into the audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedDecision {
    /// `Null` when `/input` was erased.
    pub input: Value,
    /// `Null` when `/result` was erased.
    pub result: Value,
    pub redaction: Redaction,
}

/// Which of the two documents a pointer addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Input,
    Result,
}

#[derive(Debug, Clone, PartialEq)]
enum Operation {
    Remove,
    Upsert(Value),
}

#[derive(Debug, Clone, PartialEq)]
struct MaskRule {
    /// As the bundle wrote it; listed in `erased` / `masked`.
    pointer: String,
    root: Root,
    /// Unescaped reference tokens below the root.
    tokens: Vec<String>,
    operation: Operation,
}

/// Applies the bundle's mask rule, if it has one, to a decision about to be recorded.
/// `path` is the decision's OPA path (e.g. `countersign/transfer/decision`).
pub fn mask_decision(
    engine: &PolicyEngine,
    path: &str,
    decision_id: uuid::Uuid,
    input: Value,
    result: Value,
) -> MaskedDecision {
    let Some(mask) = engine.decision_log_mask() else {
        return MaskedDecision {
            input,
            result,
            redaction: Redaction::default(),
        };
    };
    let event = json!({
        "input": input,
        "result": result,
        "path": path,
        "decision_id": decision_id.hyphenated().to_string(),
    });
    let rules = match mask.evaluate(&event) {
        Ok(document) => parse_rules(&document),
        // No mask applies to this event.
        Err(PolicyError::Undefined) => Ok(Vec::new()),
        Err(error) => Err(format!("evaluating {MASK_RULE}: {error}")),
    };
    let Value::Object(mut event) = event else {
        unreachable!("built as an object above");
    };
    let input = event.remove("input").unwrap_or(Value::Null);
    let result = event.remove("result").unwrap_or(Value::Null);
    match rules {
        Ok(rules) => apply(rules, input, result),
        Err(error) => {
            tracing::warn!(%error, "decision-log mask failed; recording the decision with its input erased");
            MaskedDecision {
                input: Value::Null,
                result,
                redaction: Redaction {
                    erased: vec!["/input".to_owned()],
                    masked: Vec::new(),
                    error: Some(error),
                },
            }
        }
    }
}

fn apply(rules: Vec<MaskRule>, mut input: Value, mut result: Value) -> MaskedDecision {
    let mut redaction = Redaction::default();
    let mut input_erased = false;
    let mut result_erased = false;
    for rule in rules {
        let removes = rule.operation == Operation::Remove;
        let (document, erased) = match rule.root {
            Root::Input => (&mut input, &mut input_erased),
            Root::Result => (&mut result, &mut result_erased),
        };
        let applied = match rule.operation {
            Operation::Remove if rule.tokens.is_empty() => {
                let was_present = !*erased;
                *document = Value::Null;
                *erased = true;
                was_present
            }
            Operation::Remove => !*erased && remove(document, &rule.tokens),
            Operation::Upsert(value) => {
                if rule.tokens.is_empty() {
                    *document = value;
                    *erased = false;
                    true
                } else {
                    !*erased && upsert(document, &rule.tokens, value)
                }
            }
        };
        if applied {
            let listed = if removes {
                &mut redaction.erased
            } else {
                &mut redaction.masked
            };
            listed.push(rule.pointer);
        }
    }
    MaskedDecision {
        input,
        result,
        redaction,
    }
}

/// Removes the value at `tokens`; false if there was none (OPA does not list it then).
fn remove(document: &mut Value, tokens: &[String]) -> bool {
    let Some((last, parents)) = tokens.split_last() else {
        return false;
    };
    let Some(parent) = descend(document, parents) else {
        return false;
    };
    match parent {
        Value::Object(map) => map.remove(last).is_some(),
        Value::Array(items) => match array_index(last, items.len()) {
            Some(index) => {
                items.remove(index);
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// Sets the value at `tokens`, creating missing parent objects; false if a parent exists but
/// is not an object or array that can hold it.
fn upsert(document: &mut Value, tokens: &[String], value: Value) -> bool {
    let Some((last, parents)) = tokens.split_last() else {
        return false;
    };
    let mut node = document;
    for token in parents {
        if node.is_null() {
            *node = Value::Object(Map::new());
        }
        node = match node {
            Value::Object(map) => map
                .entry(token.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => match array_index(token, items.len()) {
                Some(index) => &mut items[index],
                None => return false,
            },
            _ => return false,
        };
    }
    if node.is_null() {
        *node = Value::Object(Map::new());
    }
    match node {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            true
        }
        Value::Array(items) => match array_index(last, items.len()) {
            Some(index) => {
                items[index] = value;
                true
            }
            None => false,
        },
        _ => false,
    }
}

fn descend<'a>(mut node: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    for token in tokens {
        node = match node {
            Value::Object(map) => map.get_mut(token)?,
            Value::Array(items) => {
                let index = array_index(token, items.len())?;
                &mut items[index]
            }
            _ => return None,
        };
    }
    Some(node)
}

/// A JSON-pointer array index: decimal digits without a leading zero, inside the array.
fn array_index(token: &str, length: usize) -> Option<usize> {
    let well_formed = !token.is_empty()
        && token.bytes().all(|byte| byte.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    let index: usize = if well_formed {
        token.parse().ok()?
    } else {
        return None;
    };
    (index < length).then_some(index)
}

/// The mask rule's value: a set (JSON array) of pointers or `{op, path, value}` objects.
/// Any malformed entry fails the whole mask, as in OPA.
fn parse_rules(document: &Value) -> Result<Vec<MaskRule>, String> {
    let Value::Array(entries) = document else {
        return Err(format!(
            "{MASK_RULE} must be a set of JSON pointers or {{op, path, value}} objects"
        ));
    };
    if entries.len() > MASK_OPERATIONS_MAX {
        return Err(format!(
            "{MASK_RULE} gave {} operations; at most {MASK_OPERATIONS_MAX} are applied",
            entries.len()
        ));
    }
    entries.iter().map(parse_rule).collect()
}

fn parse_rule(entry: &Value) -> Result<MaskRule, String> {
    let (pointer, operation) = match entry {
        Value::String(pointer) => (pointer.clone(), Operation::Remove),
        Value::Object(fields) => {
            let pointer = fields
                .get("path")
                .and_then(Value::as_str)
                .ok_or("a mask object needs a string \"path\"")?
                .to_owned();
            let operation = match fields.get("op").and_then(Value::as_str) {
                None | Some("remove") => Operation::Remove,
                Some("upsert") => Operation::Upsert(
                    fields
                        .get("value")
                        .cloned()
                        .ok_or_else(|| format!("mask upsert of {pointer} needs a \"value\""))?,
                ),
                Some(other) => return Err(format!("mask op {other:?} is not remove or upsert")),
            };
            (pointer, operation)
        }
        other => return Err(format!("mask entry {other} is not a pointer or an object")),
    };
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!("mask path {pointer:?} is not a JSON pointer"));
    };
    let mut tokens = rest.split('/').map(unescape);
    let root = match tokens.next().as_deref() {
        Some("input") => Root::Input,
        Some("result") => Root::Result,
        _ => {
            return Err(format!(
                "mask path {pointer:?} is outside /input and /result"
            ));
        }
    };
    Ok(MaskRule {
        root,
        tokens: tokens.collect(),
        pointer,
        operation,
    })
}

/// RFC 6901: `~1` is `/`, `~0` is `~` (in that order).
fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(rules: Value, input: Value, result: Value) -> Result<MaskedDecision, String> {
        Ok(apply(parse_rules(&rules)?, input, result))
    }

    #[test]
    fn removes_and_upserts_and_lists_what_it_did() {
        let outcome = masked(
            json!([
                "/input/password",
                "/input/missing",
                {"op": "upsert", "path": "/input/card/number", "value": "****"},
                {"op": "upsert", "path": "/result/new/leaf", "value": 1},
                "/input/items/1"
            ]),
            json!({"password": "s3cret", "card": {"number": "4111"}, "items": [1, 2, 3], "keep": true}),
            json!({"allow": true}),
        )
        .expect("valid rules");
        assert_eq!(
            outcome.input,
            json!({"card": {"number": "****"}, "items": [1, 3], "keep": true})
        );
        assert_eq!(outcome.result, json!({"allow": true, "new": {"leaf": 1}}));
        assert_eq!(
            outcome.redaction.erased,
            ["/input/password", "/input/items/1"]
        );
        assert_eq!(
            outcome.redaction.masked,
            ["/input/card/number", "/result/new/leaf"]
        );
        assert_eq!(outcome.redaction.error, None);
    }

    #[test]
    fn erasing_a_whole_document_nulls_it() {
        let outcome = masked(
            json!(["/input", {"op": "remove", "path": "/result"}]),
            json!({"a": 1}),
            json!({"allow": false}),
        )
        .expect("valid rules");
        assert_eq!(outcome.input, Value::Null);
        assert_eq!(outcome.result, Value::Null);
        assert!(outcome.redaction.erased_whole("/input"));
        assert!(outcome.redaction.erased_whole("/result"));
    }

    #[test]
    fn escaped_tokens_address_keys_with_slashes_and_tildes() {
        let outcome = masked(
            json!(["/input/a~1b", "/input/c~0d"]),
            json!({"a/b": 1, "c~d": 2, "e": 3}),
            json!(null),
        )
        .expect("valid rules");
        assert_eq!(outcome.input, json!({"e": 3}));
    }

    #[test]
    fn malformed_rules_are_errors() {
        for rules in [
            json!("/input/x"),
            json!(["/data/x"]),
            json!(["input/x"]),
            json!([{"op": "replace", "path": "/input/x"}]),
            json!([{"op": "upsert", "path": "/input/x"}]),
            json!([42]),
        ] {
            assert!(parse_rules(&rules).is_err(), "{rules} should be refused");
        }
        let too_many: Vec<String> = (0..=MASK_OPERATIONS_MAX)
            .map(|index| format!("/input/{index}"))
            .collect();
        assert!(parse_rules(&json!(too_many)).is_err());
    }

    #[test]
    fn array_indexes_are_strict() {
        assert_eq!(array_index("0", 1), Some(0));
        assert_eq!(array_index("01", 5), None);
        assert_eq!(array_index("-", 5), None);
        assert_eq!(array_index("5", 5), None);
        assert_eq!(array_index("+1", 5), None);
    }
}
