//! The part of Kubernetes' structural-schema handling that Gatekeeper applies to a Constraint's
//! `spec.parameters` using the template's `openAPIV3Schema`: defaulting (`default:`, applied
//! before the constraint is stored, frameworks `ApplyDefaultParams`) and validation
//! (frameworks `crds.ValidateCR`, whose failure gator reports as "schema validation failed").
//!
//! Validation covers the keywords templates use: `type`, `enum`, `required`, `properties`,
//! `additionalProperties`, `items`, `pattern`, `minimum`/`maximum`, `minLength`/`maxLength`,
//! `minItems`/`maxItems`, `x-kubernetes-int-or-string`. `null` is accepted anywhere, as the API
//! server prunes nulls of non-nullable fields before validating.

use serde_json::Value;

/// Fills in `default` values of `schema` missing from `value`, recursively.
pub(crate) fn apply_defaults(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = schema.get("properties") {
                for (name, property) in properties {
                    if !map.contains_key(name)
                        && let Some(default) = property.get("default")
                    {
                        map.insert(name.clone(), default.clone());
                    }
                    if let Some(child) = map.get_mut(name) {
                        apply_defaults(child, property);
                    }
                }
            }
            if let Some(additional @ Value::Object(_)) = schema.get("additionalProperties") {
                for child in map.values_mut() {
                    apply_defaults(child, additional);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

/// Validates `value` (found at `path`) against `schema`; the first problem as a message.
pub(crate) fn validate(value: &Value, schema: &Value, path: &str) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if int_or_string {
        if !(value.is_string() || value.as_i64().is_some() || value.as_u64().is_some()) {
            return Err(format!("{path}: must be an integer or a string"));
        }
    } else if let Some(Value::String(expected)) = schema.get("type") {
        let fits = match expected.as_str() {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64() || is_integral_float(value),
            "number" => value.is_number(),
            _ => true,
        };
        if !fits {
            return Err(format!(
                "{path}: Invalid value: {}: {path} in body must be of type {expected}: \"{}\"",
                compact(value),
                json_type(value)
            ));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        let allowed: Vec<String> = allowed.iter().map(compact).collect();
        return Err(format!(
            "{path}: Unsupported value: {}: supported values: {}",
            compact(value),
            allowed.join(", ")
        ));
    }
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(required)) = schema.get("required") {
                for name in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(name) {
                        return Err(format!("{path}.{name}: Required value"));
                    }
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (name, child) in map {
                let child_path = format!("{path}.{name}");
                match properties.and_then(|properties| properties.get(name)) {
                    Some(property) => validate(child, property, &child_path)?,
                    None => {
                        if let Some(additional @ Value::Object(_)) =
                            schema.get("additionalProperties")
                        {
                            validate(child, additional, &child_path)?;
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            check_bound(schema, "minItems", items.len(), path, |n| {
                format!("should have at least {n} items")
            })?;
            check_upper(schema, "maxItems", items.len(), path, |n| {
                format!("should have at most {n} items")
            })?;
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    validate(item, item_schema, &format!("{path}[{index}]"))?;
                }
            }
        }
        Value::String(text) => {
            let length = text.chars().count();
            check_bound(schema, "minLength", length, path, |n| {
                format!("should be at least {n} chars long")
            })?;
            check_upper(schema, "maxLength", length, path, |n| {
                format!("should be at most {n} chars long")
            })?;
            if let Some(Value::String(pattern)) = schema.get("pattern")
                && let Ok(regex) = regex::Regex::new(pattern)
                && !regex.is_match(text)
            {
                return Err(format!(
                    "{path}: Invalid value: {}: {path} in body should match '{pattern}'",
                    compact(value)
                ));
            }
        }
        Value::Number(number) => {
            let number = number.as_f64().unwrap_or_default();
            if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64)
                && number < minimum
            {
                return Err(format!(
                    "{path}: Invalid value: {number}: {path} in body should be greater than or equal to {minimum}"
                ));
            }
            if let Some(maximum) = schema.get("maximum").and_then(Value::as_f64)
                && number > maximum
            {
                return Err(format!(
                    "{path}: Invalid value: {number}: {path} in body should be less than or equal to {maximum}"
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_bound(
    schema: &Value,
    keyword: &str,
    actual: usize,
    path: &str,
    message: impl Fn(u64) -> String,
) -> Result<(), String> {
    match schema.get(keyword).and_then(Value::as_u64) {
        Some(bound) if (actual as u64) < bound => Err(format!("{path}: {}", message(bound))),
        _ => Ok(()),
    }
}

fn check_upper(
    schema: &Value,
    keyword: &str,
    actual: usize,
    path: &str,
    message: impl Fn(u64) -> String,
) -> Result<(), String> {
    match schema.get(keyword).and_then(Value::as_u64) {
        Some(bound) if (actual as u64) > bound => Err(format!("{path}: {}", message(bound))),
        _ => Ok(()),
    }
}

fn is_integral_float(value: &Value) -> bool {
    value.as_f64().is_some_and(|number| number.fract() == 0.0)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_fill_missing_fields_only() {
        let schema = json!({"type": "object", "properties": {
            "a": {"type": "string", "default": "x"},
            "b": {"type": "array", "items": {"type": "object", "properties": {"c": {"default": 1}}}}
        }});
        let mut value = json!({"b": [{}, {"c": 2}]});
        apply_defaults(&mut value, &schema);
        assert_eq!(value, json!({"a": "x", "b": [{"c": 1}, {"c": 2}]}));
        let mut value = json!({"a": "y"});
        apply_defaults(&mut value, &schema);
        assert_eq!(value, json!({"a": "y"}));
    }

    #[test]
    fn validation_reports_type_enum_and_required() {
        let schema = json!({"type": "object", "required": ["r"], "properties": {
            "n": {"type": "integer"}, "e": {"type": "string", "enum": ["a", "b"]},
            "l": {"type": "array", "items": {"type": "string"}}, "r": {}
        }});
        assert!(validate(&json!({"r": 1, "n": 3, "e": "a", "l": ["x"]}), &schema, "p").is_ok());
        assert!(
            validate(&json!({"r": 1, "n": "3"}), &schema, "p")
                .unwrap_err()
                .contains("p.n")
        );
        assert!(
            validate(&json!({"r": 1, "e": "c"}), &schema, "p")
                .unwrap_err()
                .contains("Unsupported")
        );
        assert!(
            validate(&json!({"r": 1, "l": [1]}), &schema, "p")
                .unwrap_err()
                .contains("p.l[0]")
        );
        assert!(
            validate(&json!({}), &schema, "p")
                .unwrap_err()
                .contains("Required")
        );
        // Unknown fields are pruned by the API server, not refused.
        assert!(validate(&json!({"r": 1, "other": true}), &schema, "p").is_ok());
    }
}
