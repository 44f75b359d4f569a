//! `data.inventory`, as Gatekeeper's target stores synced objects (gatekeeper
//! `pkg/target/target.go` `processUnstructured`): cluster-scoped objects at
//! `cluster[groupVersion][kind][name]`, namespaced ones at
//! `namespace[namespace][groupVersion][kind][name]`; `groupVersion` is `v1` for the core group
//! and `group/version` otherwise.

use serde_json::{Map, Value};

use crate::error::Error;
use crate::object::{api_version, group_version, kind, metadata_str};

/// Objects available to referential templates. Later additions of the same key replace
/// earlier ones, as Gatekeeper's `AddData` does.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    cluster: Map<String, Value>,
    namespace: Map<String, Value>,
}

impl Inventory {
    pub fn new() -> Inventory {
        Inventory::default()
    }

    /// Adds one object; it needs `apiVersion` (with a version), `kind` and `metadata.name`.
    pub fn add(&mut self, object: &Value) -> Result<(), Error> {
        let name = metadata_str(object, "name");
        let api_version = api_version(object);
        let (_group, version) = group_version(object);
        let kind = kind(object);
        let invalid = |message: String| Error::InventoryInvalid { message };
        if !object.is_object() {
            return Err(invalid("an inventory object must be a mapping".into()));
        }
        if version.is_empty() {
            return Err(invalid(format!(
                "invalid request object: resource {name} has no version"
            )));
        }
        if kind.is_empty() {
            return Err(invalid(format!(
                "invalid request object: resource {name} has no kind"
            )));
        }
        let namespace = metadata_str(object, "namespace");
        let root = if namespace.is_empty() {
            &mut self.cluster
        } else {
            self.namespace
                .entry(namespace.to_owned())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("inventory namespaces are objects")
        };
        let by_kind = root
            .entry(api_version.to_owned())
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("inventory group versions are objects")
            .entry(kind.to_owned())
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("inventory kinds are objects");
        by_kind.insert(name.to_owned(), object.clone());
        Ok(())
    }

    /// `data.inventory`: `{"cluster": {...}, "namespace": {...}}`.
    pub fn to_value(&self) -> Value {
        let mut inventory = Map::new();
        inventory.insert("cluster".into(), Value::Object(self.cluster.clone()));
        inventory.insert("namespace".into(), Value::Object(self.namespace.clone()));
        Value::Object(inventory)
    }

    /// The core `v1` Namespace object `name`, if present: Gatekeeper's namespace cache,
    /// which `namespaceSelector` consults for objects in that namespace.
    pub fn namespace_object(&self, name: &str) -> Option<&Value> {
        self.cluster.get("v1")?.get("Namespace")?.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.cluster.is_empty() && self.namespace.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_are_keyed_like_gatekeeper() {
        let mut inventory = Inventory::new();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}});
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                                "metadata": {"name": "web", "namespace": "prod"}});
        inventory.add(&ns).unwrap();
        inventory.add(&deployment).unwrap();
        let value = inventory.to_value();
        assert_eq!(value["cluster"]["v1"]["Namespace"]["prod"], ns);
        assert_eq!(
            value["namespace"]["prod"]["apps/v1"]["Deployment"]["web"],
            deployment
        );
        assert_eq!(inventory.namespace_object("prod"), Some(&ns));
        assert_eq!(
            inventory
                .add(&json!({"kind": "X", "metadata": {"name": "a"}}))
                .unwrap_err()
                .code(),
            "inventory.invalid"
        );
    }
}
