//! `spec.match` of a Constraint and Gatekeeper's matching semantics (gatekeeper
//! `pkg/mutation/match/match.go`, `pkg/target/matcher.go`, `pkg/wildcard`): every criterion
//! present must hold; an absent criterion matches everything.
//!
//! Facts reproduced on purpose:
//! - the object's own `apiVersion`/`kind` decide `kinds` (not the review's `kind`);
//! - a `Namespace` object (core group) is matched by its own name against `namespaces` /
//!   `excludedNamespaces` and by its own labels against `namespaceSelector`;
//! - a cluster-scoped non-Namespace object passes `namespaces`, `excludedNamespaces` and
//!   `namespaceSelector`;
//! - a namespaced object under `namespaceSelector` needs its Namespace object (from the
//!   review or the inventory); without it matching *fails* and Gatekeeper "autorejects":
//!   the constraint reports the matching error as a violation;
//! - for UPDATE the constraint matches if the object *or* the old object matches.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::object::{group_version, metadata_str};

/// `namespaces`, `excludedNamespaces` and `name` entries: a `*` at the front and/or end globs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wildcard(String);

/// Prefix of label selector errors that are not schema errors (the target's
/// `ValidateConstraint`, reported by frameworks as "invalid Constraint").
pub(crate) const LABEL_SELECTOR_INVALID: &str = "invalid label selector";

/// The match schema's pattern for wildcards (gatekeeper `pkg/wildcard`).
const WILDCARD_PATTERN: &str = r"^\*?[-:a-z0-9]*\*?$";

impl Wildcard {
    fn matches(&self, candidate: &str) -> bool {
        let pattern = self.0.as_str();
        match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
            (Some(rest), Some(_)) => candidate.contains(rest.strip_suffix('*').unwrap_or(rest)),
            (Some(suffix), None) => candidate.ends_with(suffix),
            (None, Some(prefix)) => candidate.starts_with(prefix),
            (None, None) => candidate == pattern,
        }
    }

    fn matches_generate_name(&self, candidate: &str) -> bool {
        let pattern = self.0.as_str();
        match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
            (Some(rest), Some(_)) => candidate.contains(rest.strip_suffix('*').unwrap_or(rest)),
            (None, Some(prefix)) => candidate.starts_with(prefix),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KindSelector {
    api_groups: Vec<String>,
    kinds: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

/// A Kubernetes `LabelSelector` (`matchLabels` + `matchExpressions`, all ANDed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LabelSelector {
    match_labels: BTreeMap<String, String>,
    expressions: Vec<Requirement>,
}

impl LabelSelector {
    fn from_value(value: &Value, path: &str) -> Result<LabelSelector, String> {
        let object = value
            .as_object()
            .ok_or_else(|| format!("{path}: must be an object"))?;
        let mut selector = LabelSelector::default();
        match object.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (key, value) in labels {
                    let value = value.as_str().ok_or_else(|| {
                        format!("{path}.matchLabels.{key}: must be of type string")
                    })?;
                    selector.match_labels.insert(key.clone(), value.to_owned());
                }
            }
            Some(_) => return Err(format!("{path}.matchLabels: must be of type object")),
        }
        match object.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(expressions)) => {
                for (index, expression) in expressions.iter().enumerate() {
                    let at = format!("{path}.matchExpressions[{index}]");
                    let key = expression
                        .get("key")
                        .and_then(Value::as_str)
                        .filter(|key| !key.is_empty())
                        .ok_or_else(|| format!("{at}.key: Required value"))?;
                    let operator = match expression.get("operator").and_then(Value::as_str) {
                        Some("In") => Operator::In,
                        Some("NotIn") => Operator::NotIn,
                        Some("Exists") => Operator::Exists,
                        Some("DoesNotExist") => Operator::DoesNotExist,
                        other => {
                            return Err(format!(
                                "{LABEL_SELECTOR_INVALID}: {at}.operator: Invalid value: {other:?}: not a valid selector operator"
                            ));
                        }
                    };
                    let values: Vec<String> = match expression.get("values") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Array(values)) => values
                            .iter()
                            .map(|value| {
                                value
                                    .as_str()
                                    .map(str::to_owned)
                                    .ok_or_else(|| format!("{at}.values: must be of type string"))
                            })
                            .collect::<Result<_, _>>()?,
                        Some(_) => return Err(format!("{at}.values: must be of type array")),
                    };
                    // metav1 validation: In/NotIn need values, Exists/DoesNotExist forbid them.
                    match operator {
                        Operator::In | Operator::NotIn if values.is_empty() => {
                            return Err(format!(
                                "{LABEL_SELECTOR_INVALID}: {at}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
                            ));
                        }
                        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                            return Err(format!(
                                "{LABEL_SELECTOR_INVALID}: {at}.values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                            ));
                        }
                        _ => {}
                    }
                    selector.expressions.push(Requirement {
                        key: key.to_owned(),
                        operator,
                        values,
                    });
                }
            }
            Some(_) => return Err(format!("{path}.matchExpressions: must be of type array")),
        }
        Ok(selector)
    }

    fn matches(&self, labels: &serde_json::Map<String, Value>) -> bool {
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.match_labels
            .iter()
            .all(|(key, value)| label(key) == Some(value.as_str()))
            && self.expressions.iter().all(|requirement| {
                let value = label(&requirement.key);
                match requirement.operator {
                    Operator::In => {
                        value.is_some_and(|value| requirement.values.iter().any(|v| v == value))
                    }
                    // As in Kubernetes: an absent label satisfies NotIn.
                    Operator::NotIn => {
                        value.is_none_or(|value| requirement.values.iter().all(|v| v != value))
                    }
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// `spec.match` of a Constraint.
#[derive(Debug, Clone, Default)]
pub(crate) struct Match {
    kinds: Vec<KindSelector>,
    scope: Option<String>,
    namespaces: Vec<Wildcard>,
    excluded_namespaces: Vec<Wildcard>,
    label_selector: Option<LabelSelector>,
    namespace_selector: Option<LabelSelector>,
    name: Option<Wildcard>,
    source: Option<String>,
}

fn string_list(value: Option<&Value>, path: &str) -> Result<Vec<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{path}[{index}]: must be of type string"))
            })
            .collect(),
        Some(_) => Err(format!("{path}: must be of type array")),
    }
}

fn wildcards(value: Option<&Value>, path: &str) -> Result<Vec<Wildcard>, String> {
    let pattern = regex::Regex::new(WILDCARD_PATTERN).expect("static pattern");
    string_list(value, path)?
        .into_iter()
        .enumerate()
        .map(|(index, text)| {
            if pattern.is_match(&text) {
                Ok(Wildcard(text))
            } else {
                Err(format!(
                    "{path}[{index}]: Invalid value: {text:?}: should match '{WILDCARD_PATTERN}'"
                ))
            }
        })
        .collect()
}

impl Match {
    /// Parses `spec.match`; errors are schema errors (Gatekeeper's match schema).
    pub(crate) fn from_value(value: &Value) -> Result<Match, String> {
        let object = value
            .as_object()
            .ok_or("spec.match: must be of type object")?;
        let mut matcher = Match::default();
        match object.get("kinds") {
            None | Some(Value::Null) => {}
            Some(Value::Array(kinds)) => {
                for (index, kind) in kinds.iter().enumerate() {
                    let at = format!("spec.match.kinds[{index}]");
                    if !kind.is_object() {
                        return Err(format!("{at}: must be of type object"));
                    }
                    matcher.kinds.push(KindSelector {
                        api_groups: string_list(kind.get("apiGroups"), &format!("{at}.apiGroups"))?,
                        kinds: string_list(kind.get("kinds"), &format!("{at}.kinds"))?,
                    });
                }
            }
            Some(_) => return Err("spec.match.kinds: must be of type array".into()),
        }
        matcher.scope = optional_string(object.get("scope"), "spec.match.scope")?;
        matcher.source = optional_string(object.get("source"), "spec.match.source")?;
        if let Some(source) = &matcher.source
            && !["All", "Original", "Generated"].contains(&source.as_str())
        {
            return Err(format!(
                "spec.match.source: Unsupported value: {source:?}: supported values: \"All\", \"Generated\", \"Original\""
            ));
        }
        matcher.namespaces = wildcards(object.get("namespaces"), "spec.match.namespaces")?;
        matcher.excluded_namespaces = wildcards(
            object.get("excludedNamespaces"),
            "spec.match.excludedNamespaces",
        )?;
        if let Some(name) = optional_string(object.get("name"), "spec.match.name")? {
            matcher.name = wildcards(Some(&Value::from(vec![name])), "spec.match.name")?.pop();
        }
        for (field, slot) in [
            ("labelSelector", &mut matcher.label_selector),
            ("namespaceSelector", &mut matcher.namespace_selector),
        ] {
            if let Some(value) = object.get(field).filter(|value| !value.is_null()) {
                *slot = Some(LabelSelector::from_value(
                    value,
                    &format!("spec.match.{field}"),
                )?);
            }
        }
        Ok(matcher)
    }

    /// Whether the review matches: its object or (UPDATE/DELETE) old object.
    /// `Err` is a matching error, which Gatekeeper turns into an autoreject result.
    pub(crate) fn matches_review(
        &self,
        object: Option<&Value>,
        old_object: Option<&Value>,
        namespace: Option<&Value>,
    ) -> Result<bool, String> {
        let candidates: Vec<&Value> = [object, old_object]
            .into_iter()
            .flatten()
            .filter(|candidate| candidate.is_object())
            .collect();
        if candidates.is_empty() {
            return Err("invalid request object: neither object nor old object are defined".into());
        }
        for candidate in candidates {
            if self.matches_object(candidate, namespace).map_err(|error| {
                format!(
                    "error matching the requested object: {} :failed to run Match criteria: {error}",
                    metadata_str(candidate, "name")
                )
            })? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn matches_object(&self, object: &Value, namespace: Option<&Value>) -> Result<bool, String> {
        let (group, _version) = group_version(object);
        let kind = crate::object::kind(object);
        let is_namespace = kind == "Namespace" && group.is_empty();
        let object_namespace = metadata_str(object, "namespace");

        // kinds
        if !self.kinds.is_empty()
            && !self.kinds.iter().any(|selector| {
                let kind_ok = selector.kinds.is_empty()
                    || selector.kinds.iter().any(|k| k == "*" || k == kind);
                let group_ok = selector.api_groups.is_empty()
                    || selector.api_groups.iter().any(|g| g == "*" || *g == group);
                kind_ok && group_ok
            })
        {
            return Ok(false);
        }

        // scope
        let has_namespace = !object_namespace.is_empty() || namespace.is_some();
        match self.scope.as_deref() {
            // Cluster scope: Namespace objects and objects without a namespace.
            Some("Cluster") if !is_namespace && has_namespace => return Ok(false),
            // Namespaced scope: objects in a namespace, never a Namespace itself.
            Some("Namespaced") if is_namespace || !has_namespace => return Ok(false),
            _ => {}
        }

        // namespaces / excludedNamespaces: which namespace name the object is judged by.
        let judged_namespace: Option<&str> = if is_namespace {
            Some(metadata_str(object, "name"))
        } else if let Some(namespace) = namespace {
            Some(metadata_str(namespace, "name"))
        } else if !object_namespace.is_empty() {
            Some(object_namespace)
        } else {
            None
        };
        if let Some(judged) = judged_namespace {
            if !self.namespaces.is_empty()
                && !self
                    .namespaces
                    .iter()
                    .any(|pattern| pattern.matches(judged))
            {
                return Ok(false);
            }
            if self
                .excluded_namespaces
                .iter()
                .any(|pattern| pattern.matches(judged))
            {
                return Ok(false);
            }
        }

        // labelSelector
        if let Some(selector) = &self.label_selector
            && !selector.matches(&labels(object))
        {
            return Ok(false);
        }

        // namespaceSelector
        if let Some(selector) = &self.namespace_selector {
            let cluster_scoped =
                !is_namespace && namespace.is_none() && object_namespace.is_empty();
            if !cluster_scoped {
                let matched = if is_namespace {
                    selector.matches(&labels(object))
                } else {
                    match namespace {
                        Some(namespace) => selector.matches(&labels(namespace)),
                        None => {
                            return Err(
                                "namespace selector for namespace-scoped object but missing Namespace"
                                    .into(),
                            );
                        }
                    }
                };
                if !matched {
                    return Ok(false);
                }
            }
        }

        // name
        if let Some(pattern) = self.name.as_ref().filter(|pattern| !pattern.0.is_empty())
            && !(pattern.matches(metadata_str(object, "name"))
                || pattern.matches_generate_name(metadata_str(object, "generateName")))
        {
            return Ok(false);
        }

        // source: every review we build is an original (not expanded) resource.
        if self.source.as_deref() == Some("Generated") {
            return Ok(false);
        }
        Ok(true)
    }
}

fn optional_string(value: Option<&Value>, path: &str) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(format!("{path}: must be of type string")),
    }
}

/// Borrowed: matching runs per constraint on every review, so the labels are not copied.
fn labels(object: &Value) -> Cow<'_, serde_json::Map<String, Value>> {
    match object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
    {
        Some(labels) => Cow::Borrowed(labels),
        None => Cow::Owned(serde_json::Map::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wildcard(text: &str) -> Wildcard {
        Wildcard(text.to_owned())
    }

    #[test]
    fn wildcards_glob_only_at_the_ends() {
        assert!(wildcard("kube-*").matches("kube-system"));
        assert!(!wildcard("kube-*").matches("my-kube-system"));
        assert!(wildcard("*-system").matches("gatekeeper-system"));
        assert!(!wildcard("*-system").matches("system-x"));
        assert!(wildcard("*sys*").matches("a-sys-b"));
        assert!(wildcard("*").matches("anything"));
        assert!(wildcard("exact").matches("exact"));
        assert!(!wildcard("exact").matches("exact2"));
        assert!(wildcard("web-*").matches_generate_name("web-"));
        assert!(!wildcard("web").matches_generate_name("web"));
    }

    #[test]
    fn label_selector_operators() {
        let selector = LabelSelector::from_value(
            &json!({"matchLabels": {"a": "1"}, "matchExpressions": [
                {"key": "b", "operator": "In", "values": ["x", "y"]},
                {"key": "c", "operator": "NotIn", "values": ["bad"]},
                {"key": "d", "operator": "Exists"},
                {"key": "e", "operator": "DoesNotExist"}
            ]}),
            "s",
        )
        .unwrap();
        let labels = |value: Value| value.as_object().unwrap().clone();
        assert!(selector.matches(&labels(json!({"a": "1", "b": "x", "d": ""}))));
        assert!(!selector.matches(&labels(json!({"a": "2", "b": "x", "d": ""}))));
        assert!(!selector.matches(&labels(json!({"a": "1", "b": "z", "d": ""}))));
        assert!(!selector.matches(&labels(json!({"a": "1", "b": "x", "c": "bad", "d": ""}))));
        assert!(!selector.matches(&labels(json!({"a": "1", "b": "x"}))));
        assert!(!selector.matches(&labels(json!({"a": "1", "b": "x", "d": "", "e": "1"}))));
        assert!(
            LabelSelector::from_value(
                &json!({"matchExpressions": [{"key": "k", "operator": "In"}]}),
                "s"
            )
            .is_err()
        );
        assert!(
            LabelSelector::from_value(
                &json!({"matchExpressions": [{"key": "k", "operator": "Exists", "values": ["v"]}]}),
                "s"
            )
            .is_err()
        );
        assert!(
            LabelSelector::from_value(
                &json!({"matchExpressions": [{"key": "k", "operator": "Gt", "values": ["1"]}]}),
                "s"
            )
            .is_err()
        );
    }

    #[test]
    fn wildcard_pattern_is_enforced() {
        assert!(Match::from_value(&json!({"namespaces": ["Bad_NS"]})).is_err());
        assert!(Match::from_value(&json!({"namespaces": ["kube-*"]})).is_ok());
    }
}
