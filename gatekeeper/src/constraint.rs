//! Constraints (`constraints.gatekeeper.sh/v1beta1`, `v1alpha1`): a template kind, a name,
//! `spec.match`, `spec.parameters` and `spec.enforcementAction`, checked as frameworks'
//! client checks them when gator adds a constraint (`validateConstraintMetadata`,
//! `crds.ValidateCR`, the target's `ValidateConstraint`).

use serde_json::Value;

use crate::error::Error;
use crate::matcher::Match;
pub use crate::object::CONSTRAINT_GROUP;
use crate::object::{group_version, kind, metadata_str};

/// Versions of that group frameworks' `crds.ValidateCR` accepts.
const CONSTRAINT_VERSIONS: [&str; 2] = ["v1beta1", "v1alpha1"];

/// What happens to a review that violates a constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnforcementAction {
    /// The default: the webhook rejects the request; `gator test` exits non-zero.
    Deny,
    /// Reported as an admission warning; does not fail.
    Warn,
    /// Only recorded (audit); does not fail.
    Dryrun,
}

impl EnforcementAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementAction::Deny => "deny",
            EnforcementAction::Warn => "warn",
            EnforcementAction::Dryrun => "dryrun",
        }
    }

    /// Parses `spec.enforcementAction`. Gatekeeper's constraint controller only enforces
    /// `deny`, `warn`, `dryrun` (and `scoped`, which we do not support); anything else is
    /// refused here rather than silently treated as "not deny".
    pub fn parse(text: &str) -> Option<EnforcementAction> {
        match text {
            "deny" => Some(EnforcementAction::Deny),
            "warn" => Some(EnforcementAction::Warn),
            "dryrun" => Some(EnforcementAction::Dryrun),
            _ => None,
        }
    }
}

impl std::fmt::Display for EnforcementAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed, valid Constraint. Parameters are checked against (and defaulted from) the
/// template's schema when the constraint is added to a [`crate::PolicySet`].
#[derive(Debug, Clone)]
pub struct Constraint {
    kind: String,
    name: String,
    enforcement_action: EnforcementAction,
    matcher: Match,
    parameters: Value,
    document: Value,
}

impl Constraint {
    /// Parses a Constraint document (YAML/JSON already decoded).
    pub fn from_value(doc: &Value) -> Result<Constraint, Error> {
        let name = metadata_str(doc, "name").to_owned();
        let invalid = |message: String| Error::ConstraintInvalid {
            constraint: name.clone(),
            message,
        };
        if name.is_empty() {
            return Err(invalid("invalid Constraint: missing metadata.name".into()));
        }
        let kind = kind(doc).to_owned();
        if kind.is_empty() {
            return Err(invalid("invalid Constraint: missing kind".into()));
        }
        let (group, version) = group_version(doc);
        if group != CONSTRAINT_GROUP {
            return Err(invalid(format!(
                "invalid Constraint: wrong API Group for Constraint {name:?}, got {group:?} but need {CONSTRAINT_GROUP:?}"
            )));
        }
        if !CONSTRAINT_VERSIONS.contains(&version) {
            return Err(invalid(format!(
                "invalid Constraint: unsupported version {version:?} for Constraint {name:?}; supported versions: v1alpha1, v1beta1"
            )));
        }
        if let Some(problem) = dns1123_subdomain_problem(&name) {
            return Err(invalid(format!(
                "invalid Constraint: invalid name: {problem}"
            )));
        }
        let spec = doc.get("spec").cloned().unwrap_or(Value::Null);
        if !(spec.is_null() || spec.is_object()) {
            return Err(invalid("invalid Constraint: spec must be an object".into()));
        }
        let enforcement_action = match spec.get("enforcementAction") {
            None => EnforcementAction::Deny,
            Some(Value::String(text)) => EnforcementAction::parse(text).ok_or_else(|| {
                invalid(format!(
                    "unsupported enforcementAction {text:?}: supported are deny, warn, dryrun (scoped enforcement actions are not supported)"
                ))
            })?,
            Some(other) => {
                return Err(invalid(format!(
                    "invalid Constraint: invalid spec.enforcementAction {other}"
                )));
            }
        };
        let matcher = match spec.get("match") {
            None | Some(Value::Null) => Match::default(),
            Some(value) => Match::from_value(value).map_err(|message| {
                if message.starts_with(crate::matcher::LABEL_SELECTOR_INVALID) {
                    invalid(message)
                } else {
                    Error::ConstraintSchema {
                        constraint: name.clone(),
                        message,
                    }
                }
            })?,
        };
        let parameters = match spec.get("parameters") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(value) => value.clone(),
        };
        Ok(Constraint {
            kind,
            name,
            enforcement_action,
            matcher,
            parameters,
            document: doc.clone(),
        })
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn enforcement_action(&self) -> EnforcementAction {
        self.enforcement_action
    }

    /// `spec.parameters` as Rego sees it (`input.parameters`): `{}` when absent, with the
    /// template's schema defaults applied once the constraint is in a [`crate::PolicySet`].
    pub fn parameters(&self) -> &Value {
        &self.parameters
    }

    /// The document this constraint was parsed from.
    pub fn document(&self) -> &Value {
        &self.document
    }

    pub(crate) fn matcher(&self) -> &Match {
        &self.matcher
    }

    pub(crate) fn parameters_mut(&mut self) -> &mut Value {
        &mut self.parameters
    }
}

/// Kubernetes' `IsDNS1123Subdomain`, as frameworks applies it to constraint names.
fn dns1123_subdomain_problem(name: &str) -> Option<String> {
    if name.len() > 253 {
        return Some(format!("{name:?}: must be no more than 253 characters"));
    }
    let valid = name.split('.').all(|label| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    if valid {
        None
    } else {
        Some(format!(
            "{name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn constraint(spec: Value) -> Value {
        json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "K8sX",
               "metadata": {"name": "x"}, "spec": spec})
    }

    #[test]
    fn enforcement_action_defaults_to_deny_and_parses_the_others() {
        let parsed = Constraint::from_value(&constraint(json!({}))).unwrap();
        assert_eq!(parsed.enforcement_action(), EnforcementAction::Deny);
        assert_eq!(parsed.parameters(), &json!({}));
        for (text, action) in [
            ("warn", EnforcementAction::Warn),
            ("dryrun", EnforcementAction::Dryrun),
            ("deny", EnforcementAction::Deny),
        ] {
            let parsed =
                Constraint::from_value(&constraint(json!({"enforcementAction": text}))).unwrap();
            assert_eq!(parsed.enforcement_action(), action);
            assert_eq!(action.as_str(), text);
        }
        let error = Constraint::from_value(&constraint(json!({"enforcementAction": "scoped"})))
            .unwrap_err();
        assert_eq!(error.code(), "constraint.invalid");
    }

    #[test]
    fn metadata_is_checked_like_frameworks() {
        let mut doc = constraint(json!({}));
        doc["apiVersion"] = json!("example.com/v1beta1");
        assert!(
            Constraint::from_value(&doc)
                .unwrap_err()
                .to_string()
                .contains("wrong API Group")
        );
        doc["apiVersion"] = json!("constraints.gatekeeper.sh/v2");
        assert!(
            Constraint::from_value(&doc)
                .unwrap_err()
                .to_string()
                .contains("unsupported version")
        );
        let mut doc = constraint(json!({}));
        doc["metadata"]["name"] = json!("Bad_Name");
        assert_eq!(
            Constraint::from_value(&doc).unwrap_err().code(),
            "constraint.invalid"
        );
        let mut doc = constraint(json!({}));
        doc["metadata"] = json!({});
        assert!(
            Constraint::from_value(&doc)
                .unwrap_err()
                .to_string()
                .contains("missing metadata.name")
        );
    }
}
