//! Reading the type and identity of a Kubernetes object (`apiVersion`, `kind`,
//! `metadata.*`), and the Gatekeeper API groups and target name, in one place.
//!
//! A missing or non-string field reads as `""`, as Go's `unstructured` getters return it:
//! gator's checks and messages compare with and print the empty string, so callers here do
//! too rather than handle `None`.

use serde_json::Value;

/// The only validation target Gatekeeper's webhook and gator know; every result names it.
pub const ADMISSION_TARGET: &str = "admission.k8s.gatekeeper.sh";
/// The API group of ConstraintTemplates.
pub(crate) const TEMPLATE_GROUP: &str = "templates.gatekeeper.sh";
/// The API group of every Constraint.
pub const CONSTRAINT_GROUP: &str = "constraints.gatekeeper.sh";
/// The API group of `AdmissionReview`.
pub(crate) const ADMISSION_GROUP: &str = "admission.k8s.io";

/// `apiVersion`.
pub(crate) fn api_version(object: &Value) -> &str {
    object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `apiVersion` as (group, version); the core group (`v1`) is `""`.
pub(crate) fn group_version(object: &Value) -> (&str, &str) {
    let api_version = api_version(object);
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

/// `kind`.
pub(crate) fn kind(object: &Value) -> &str {
    object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.<field>` when it is a string (`name`, `namespace`, `generateName`).
pub(crate) fn metadata_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_read_as_go_unstructured_getters() {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                                "metadata": {"name": "web", "namespace": "prod"}});
        assert_eq!(group_version(&deployment), ("apps", "v1"));
        assert_eq!(kind(&deployment), "Deployment");
        assert_eq!(metadata_str(&deployment, "namespace"), "prod");
        let core = json!({"apiVersion": "v1", "metadata": {"name": 3}});
        assert_eq!(group_version(&core), ("", "v1"));
        assert_eq!(kind(&core), "");
        assert_eq!(metadata_str(&core, "name"), "");
        assert_eq!(group_version(&json!("not an object")), ("", ""));
    }
}
