//! `input.review`: what Gatekeeper hands to a template's Rego, built the way gator builds it.
//!
//! Gatekeeper wraps an `admission.k8s.io/v1` `AdmissionRequest` (frameworks `gkReview`) and
//! marshals it to JSON, then adds `namespaceObject`. So the Rego sees every `AdmissionRequest`
//! field with Go's JSON encoding: `uid`, `kind` and `resource` always present (empty strings
//! when unknown), `operation` always present, `userInfo` an object, `object` / `oldObject` /
//! `options` `null` when absent, `name` / `namespace` / `subResource` / `requestKind` /
//! `requestResource` / `requestSubResource` / `dryRun` omitted when empty.
//!
//! - From a plain object (gator `verify` / `test`, `target.AugmentedUnstructured`): only
//!   `kind`, `name`, `namespace`, `object` are set; `operation` is `""` — gator does not say
//!   CREATE.
//! - From an `AdmissionReview`: the `request` as given (unknown fields dropped, as the typed
//!   Go struct drops them); for DELETE, `object` is replaced by `oldObject` (Gatekeeper's
//!   `setObjectOnDelete`), which must then be present.
//! - `namespaceObject` is `null` unless the caller supplies it (the webhook does; gator does
//!   not), see [`Review::with_namespace_object`].

use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::object::{ADMISSION_GROUP, api_version, group_version, kind, metadata_str};

/// The review of one object, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Review {
    value: Value,
    /// The Namespace `spec.match` is judged with (shown to the Rego or not).
    match_namespace: Option<Value>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::ReviewInvalid {
        message: message.into(),
    }
}

impl Review {
    /// The review gator builds for a plain Kubernetes object.
    pub fn from_object(object: &Value) -> Result<Review, Error> {
        if !object.is_object() {
            return Err(invalid("the object to review must be a mapping"));
        }
        let kind = kind(object);
        if kind.is_empty() {
            return Err(invalid("Object 'Kind' is missing"));
        }
        let (group, version) = group_version(object);
        let mut request = Map::new();
        request.insert("uid".into(), json!(""));
        request.insert(
            "kind".into(),
            json!({"group": group, "version": version, "kind": kind}),
        );
        request.insert(
            "resource".into(),
            json!({"group": "", "version": "", "resource": ""}),
        );
        insert_nonempty(
            &mut request,
            "name",
            metadata_str(object, "name").to_owned(),
        );
        insert_nonempty(
            &mut request,
            "namespace",
            metadata_str(object, "namespace").to_owned(),
        );
        request.insert("operation".into(), json!(""));
        request.insert("userInfo".into(), json!({}));
        request.insert("object".into(), object.clone());
        request.insert("oldObject".into(), Value::Null);
        request.insert("options".into(), Value::Null);
        request.insert("namespaceObject".into(), Value::Null);
        Ok(Review {
            value: Value::Object(request),
            match_namespace: None,
        })
    }

    /// The review Gatekeeper builds from an `AdmissionReview` (`admission.k8s.io/v1` or
    /// `v1beta1`) document: its `request`, with DELETE's `oldObject` as `object`.
    pub fn from_admission_review(doc: &Value) -> Result<Review, Error> {
        let kind = kind(doc);
        let api_version = api_version(doc);
        let in_admission_group = api_version
            .strip_prefix(ADMISSION_GROUP)
            .is_some_and(|version| version.starts_with('/'));
        if kind != "AdmissionReview" || !in_admission_group {
            return Err(invalid(format!(
                "expected an admission.k8s.io AdmissionReview, got apiVersion {api_version:?} kind {kind:?}"
            )));
        }
        let request = match doc.get("request") {
            Some(Value::Object(request)) => request,
            _ => {
                return Err(invalid(
                    "request did not actually pass in an AdmissionRequest",
                ));
            }
        };
        Self::from_admission_request(request)
    }

    /// As [`Review::from_admission_review`], from the `request` object alone.
    pub fn from_admission_request(request: &Map<String, Value>) -> Result<Review, Error> {
        let string = |field: &str| -> Result<String, Error> {
            match request.get(field) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(text)) => Ok(text.clone()),
                Some(_) => Err(invalid(format!("request.{field} must be a string"))),
            }
        };
        let triple = |field: &str, names: [&str; 3]| -> Result<Option<Value>, Error> {
            match request.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Object(given)) => {
                    let mut out = Map::new();
                    for name in names {
                        let value = match given.get(name) {
                            None | Some(Value::Null) => String::new(),
                            Some(Value::String(text)) => text.clone(),
                            Some(_) => {
                                return Err(invalid(format!(
                                    "request.{field}.{name} must be a string"
                                )));
                            }
                        };
                        out.insert(name.to_owned(), Value::String(value));
                    }
                    Ok(Some(Value::Object(out)))
                }
                Some(_) => Err(invalid(format!("request.{field} must be an object"))),
            }
        };
        let gvk = ["group", "version", "kind"];
        let gvr = ["group", "version", "resource"];
        let operation = string("operation")?;
        let mut object = request.get("object").cloned().unwrap_or(Value::Null);
        let old_object = request.get("oldObject").cloned().unwrap_or(Value::Null);
        if object.is_null() && old_object.is_null() {
            return Err(invalid(
                "AdmissionRequest does not contain an \"object\" or \"oldObject\" to review",
            ));
        }
        for (field, value) in [("object", &object), ("oldObject", &old_object)] {
            if !(value.is_null() || value.is_object()) {
                return Err(invalid(format!("request.{field} must be an object")));
            }
            if value.is_object() && value.get("kind").and_then(Value::as_str).is_none() {
                return Err(invalid(format!(
                    "request.{field}: Object 'Kind' is missing"
                )));
            }
        }
        if operation == "DELETE" {
            if old_object.is_null() {
                return Err(invalid("oldObject cannot be nil for DELETE operations"));
            }
            object = old_object.clone();
        }

        let mut out = Map::new();
        out.insert("uid".into(), Value::String(string("uid")?));
        out.insert(
            "kind".into(),
            triple("kind", gvk)?.unwrap_or_else(|| json!({"group": "", "version": "", "kind": ""})),
        );
        out.insert(
            "resource".into(),
            triple("resource", gvr)?
                .unwrap_or_else(|| json!({"group": "", "version": "", "resource": ""})),
        );
        insert_nonempty(&mut out, "subResource", string("subResource")?);
        if let Some(value) = triple("requestKind", gvk)? {
            out.insert("requestKind".into(), value);
        }
        if let Some(value) = triple("requestResource", gvr)? {
            out.insert("requestResource".into(), value);
        }
        insert_nonempty(
            &mut out,
            "requestSubResource",
            string("requestSubResource")?,
        );
        insert_nonempty(&mut out, "name", string("name")?);
        insert_nonempty(&mut out, "namespace", string("namespace")?);
        out.insert("operation".into(), Value::String(operation));
        out.insert("userInfo".into(), user_info(request.get("userInfo"))?);
        out.insert("object".into(), object);
        out.insert("oldObject".into(), old_object);
        match request.get("dryRun") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(dry_run)) => {
                out.insert("dryRun".into(), Value::Bool(*dry_run));
            }
            Some(_) => return Err(invalid("request.dryRun must be a boolean")),
        }
        out.insert(
            "options".into(),
            request.get("options").cloned().unwrap_or(Value::Null),
        );
        out.insert("namespaceObject".into(), Value::Null);
        Ok(Review {
            value: Value::Object(out),
            match_namespace: None,
        })
    }

    /// Supplies the reviewed object's Namespace, as Gatekeeper's webhook does: it becomes
    /// `input.review.namespaceObject` and is what `namespaceSelector` (and `namespaces`) match.
    pub fn with_namespace_object(mut self, ns: Value) -> Review {
        if let Value::Object(review) = &mut self.value {
            review.insert("namespaceObject".into(), ns.clone());
        }
        self.match_namespace = Some(ns);
        self
    }

    /// Supplies a Namespace to *match* with (`namespaceSelector`, `namespaces`, `scope`)
    /// without showing it to the Rego: gator's `AugmentedUnstructured.Namespace`, which
    /// leaves `input.review.namespaceObject` `null`.
    pub(crate) fn with_match_namespace(mut self, ns: Value) -> Review {
        self.match_namespace = Some(ns);
        self
    }

    /// `input.review` as the Rego sees it.
    pub fn as_value(&self) -> &Value {
        &self.value
    }

    /// `request.operation` (`""` for a plain object, as gator leaves it).
    pub fn operation(&self) -> &str {
        self.field_str("operation")
    }

    /// `request.namespace` (the object's namespace for a plain object).
    pub fn namespace(&self) -> &str {
        self.field_str("namespace")
    }

    /// `request.name`.
    pub fn name(&self) -> &str {
        self.field_str("name")
    }

    /// The object under review (`oldObject` for DELETE), if any.
    pub fn object(&self) -> Option<&Value> {
        self.value.get("object").filter(|object| !object.is_null())
    }

    pub(crate) fn old_object(&self) -> Option<&Value> {
        self.value
            .get("oldObject")
            .filter(|object| !object.is_null())
    }

    pub(crate) fn match_namespace(&self) -> Option<&Value> {
        self.match_namespace.as_ref()
    }

    fn field_str(&self, field: &str) -> &str {
        self.value
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

fn insert_nonempty(map: &mut Map<String, Value>, field: &str, value: String) {
    if !value.is_empty() {
        map.insert(field.to_owned(), Value::String(value));
    }
}

/// `authenticationv1.UserInfo`: every field `omitempty`.
fn user_info(value: Option<&Value>) -> Result<Value, Error> {
    let mut out = Map::new();
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Ok(Value::Object(out));
    };
    let given = value
        .as_object()
        .ok_or_else(|| invalid("request.userInfo must be an object"))?;
    for field in ["username", "uid"] {
        match given.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) if text.is_empty() => {}
            Some(Value::String(text)) => {
                out.insert(field.to_owned(), Value::String(text.clone()));
            }
            Some(_) => {
                return Err(invalid(format!(
                    "request.userInfo.{field} must be a string"
                )));
            }
        }
    }
    match given.get("groups") {
        None | Some(Value::Null) => {}
        Some(Value::Array(groups)) if groups.is_empty() => {}
        Some(Value::Array(groups)) if groups.iter().all(Value::is_string) => {
            out.insert("groups".into(), Value::Array(groups.clone()));
        }
        Some(_) => return Err(invalid("request.userInfo.groups must be a list of strings")),
    }
    match given.get("extra") {
        None | Some(Value::Null) => {}
        Some(Value::Object(extra)) if extra.is_empty() => {}
        Some(Value::Object(extra)) => {
            out.insert("extra".into(), Value::Object(extra.clone()));
        }
        Some(_) => return Err(invalid("request.userInfo.extra must be an object")),
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_object_review_has_gators_shape() {
        let object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                            "metadata": {"name": "web", "namespace": "prod"}});
        let review = Review::from_object(&object).unwrap();
        assert_eq!(
            review.as_value(),
            &json!({
                "uid": "", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "", "version": "", "resource": ""},
                "name": "web", "namespace": "prod", "operation": "", "userInfo": {},
                "object": object, "oldObject": null, "options": null, "namespaceObject": null
            })
        );
        let cluster = Review::from_object(&json!({"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": "prod"}}))
        .unwrap();
        assert!(cluster.as_value().get("namespace").is_none());
        assert_eq!(cluster.as_value()["kind"]["group"], "");
        assert_eq!(
            Review::from_object(&json!({"metadata": {}}))
                .unwrap_err()
                .code(),
            "review.invalid"
        );
    }

    #[test]
    fn delete_reviews_the_old_object() {
        let old = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        let doc = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "1", "operation": "DELETE", "oldObject": old,
                        "userInfo": {"username": "alice", "groups": []}, "unknownField": 1}});
        let review = Review::from_admission_review(&doc).unwrap();
        assert_eq!(review.as_value()["object"], old);
        assert_eq!(review.as_value()["userInfo"], json!({"username": "alice"}));
        assert!(review.as_value().get("unknownField").is_none());
        let missing = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"operation": "DELETE", "object": old}});
        assert!(
            Review::from_admission_review(&missing)
                .unwrap_err()
                .to_string()
                .contains("oldObject cannot be nil")
        );
    }
}
