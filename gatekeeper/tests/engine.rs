//! The engine against real templates and constraints: each match criterion (positive and
//! negative), each enforcement action, Rego v0/v1, libs, refused templates and constraints,
//! inventory, AdmissionReview UPDATE/DELETE.

use countersign_gatekeeper::{
    Constraint, EnforcementAction, Error, Inventory, PolicySet, Review, Template,
};
use serde_json::{Value, json};

fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).expect("test YAML parses")
}

const REQUIRED_LABELS: &str = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8srequiredlabels
spec:
  crd:
    spec:
      names:
        kind: K8sRequiredLabels
      validation:
        openAPIV3Schema:
          type: object
          properties:
            labels:
              type: array
              items:
                type: string
            message:
              type: string
              default: "missing labels"
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8srequiredlabels

        violation[{"msg": msg, "details": {"missing_labels": missing}}] {
          provided := {label | input.review.object.metadata.labels[label]}
          required := {label | label := input.parameters.labels[_]}
          missing := required - provided
          count(missing) > 0
          msg := sprintf("%v: %v", [input.parameters.message, missing])
        }
"#;

fn template(text: &str) -> Template {
    Template::from_value(&yaml(text)).expect("template parses")
}

fn constraint(kind: &str, name: &str, spec: Value) -> Constraint {
    Constraint::from_value(&json!({
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("constraint parses")
}

fn policy(spec: Value) -> PolicySet {
    let mut set = PolicySet::new();
    set.add_template(template(REQUIRED_LABELS)).unwrap();
    let mut spec = spec;
    spec["parameters"] = json!({"labels": ["owner"]});
    set.add_constraint(constraint("K8sRequiredLabels", "must-have-owner", spec))
        .unwrap();
    set
}

fn object(
    api_version: &str,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    labels: Value,
) -> Value {
    let mut metadata = json!({"name": name, "labels": labels});
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    json!({"apiVersion": api_version, "kind": kind, "metadata": metadata})
}

fn pod(namespace: &str) -> Value {
    object("v1", "Pod", "web-1", Some(namespace), json!({"app": "web"}))
}

/// How many violations `set` reports for `object` (with `inventory` if given).
fn violations(set: &PolicySet, object: &Value, inventory: Option<&Inventory>) -> usize {
    let review = Review::from_object(object).unwrap();
    set.review(&review, inventory).unwrap().violations.len()
}

#[test]
fn violation_message_details_and_schema_defaults() {
    let set = policy(json!({}));
    let outcome = set
        .review(&Review::from_object(&pod("prod")).unwrap(), None)
        .unwrap();
    assert_eq!(outcome.violations.len(), 1);
    let violation = &outcome.violations[0];
    // `message` came from the schema default.
    assert_eq!(violation.msg, r#"missing labels: {"owner"}"#);
    assert_eq!(violation.details, json!({"missing_labels": ["owner"]}));
    assert_eq!(violation.constraint_kind, "K8sRequiredLabels");
    assert_eq!(violation.enforcement_action, EnforcementAction::Deny);
    assert_eq!(
        violation.display_message(),
        r#"[must-have-owner] missing labels: {"owner"}"#
    );
    let labelled = object("v1", "Pod", "p", Some("prod"), json!({"owner": "team"}));
    assert_eq!(violations(&set, &labelled, None), 0);
}

#[test]
fn match_kinds() {
    let set = policy(json!({"match": {"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]}}));
    assert_eq!(violations(&set, &pod("prod"), None), 1);
    let deployment = object("apps/v1", "Deployment", "d", Some("prod"), json!({}));
    assert_eq!(violations(&set, &deployment, None), 0);
    let set = policy(json!({"match": {"kinds": [{"apiGroups": ["*"], "kinds": ["Deployment"]}]}}));
    assert_eq!(violations(&set, &deployment, None), 1);
    assert_eq!(violations(&set, &pod("prod"), None), 0);
    let set = policy(json!({"match": {"kinds": [{"apiGroups": ["apps"], "kinds": ["*"]}]}}));
    assert_eq!(violations(&set, &deployment, None), 1);
    assert_eq!(violations(&set, &pod("prod"), None), 0);
}

#[test]
fn match_namespaces_and_excluded_namespaces_with_globs() {
    let set = policy(json!({"match": {"namespaces": ["prod-*", "*-live"]}}));
    assert_eq!(violations(&set, &pod("prod-eu"), None), 1);
    assert_eq!(violations(&set, &pod("shop-live"), None), 1);
    assert_eq!(violations(&set, &pod("dev"), None), 0);
    // A cluster-scoped object has no namespace to disqualify it.
    let cluster_role = object(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "r",
        None,
        json!({}),
    );
    assert_eq!(violations(&set, &cluster_role, None), 1);
    // A Namespace is judged by its own name.
    let namespace = object("v1", "Namespace", "dev", None, json!({}));
    assert_eq!(violations(&set, &namespace, None), 0);

    let set = policy(json!({"match": {"excludedNamespaces": ["kube-*", "gatekeeper-system"]}}));
    assert_eq!(violations(&set, &pod("kube-system"), None), 0);
    assert_eq!(violations(&set, &pod("gatekeeper-system"), None), 0);
    assert_eq!(violations(&set, &pod("prod"), None), 1);
    let kube_namespace = object("v1", "Namespace", "kube-public", None, json!({}));
    assert_eq!(violations(&set, &kube_namespace, None), 0);
}

#[test]
fn match_label_selector() {
    let set = policy(json!({"match": {"labelSelector": {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["batch"]}]
    }}}));
    assert_eq!(violations(&set, &pod("prod"), None), 1);
    let batch = object(
        "v1",
        "Pod",
        "p",
        Some("prod"),
        json!({"app": "web", "tier": "batch"}),
    );
    assert_eq!(violations(&set, &batch, None), 0);
    let other = object("v1", "Pod", "p", Some("prod"), json!({"app": "db"}));
    assert_eq!(violations(&set, &other, None), 0);
}

#[test]
fn match_namespace_selector() {
    let set = policy(json!({"match": {"namespaceSelector": {
        "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]
    }}}));
    let prod = object("v1", "Namespace", "shop", None, json!({"env": "prod"}));
    let dev = object("v1", "Namespace", "lab", None, json!({"env": "dev"}));
    let mut inventory = Inventory::new();
    inventory.add(&prod).unwrap();
    inventory.add(&dev).unwrap();
    // Namespaced objects: their Namespace comes from the inventory (gator) ...
    assert_eq!(violations(&set, &pod("shop"), Some(&inventory)), 1);
    assert_eq!(violations(&set, &pod("lab"), Some(&inventory)), 0);
    // ... or from the review (webhook), which also becomes input.review.namespaceObject.
    let review = Review::from_object(&pod("shop"))
        .unwrap()
        .with_namespace_object(prod.clone());
    assert_eq!(review.as_value()["namespaceObject"], prod);
    assert_eq!(set.review(&review, None).unwrap().violations.len(), 1);
    let review = Review::from_object(&pod("lab"))
        .unwrap()
        .with_namespace_object(dev.clone());
    assert_eq!(set.review(&review, None).unwrap().violations.len(), 0);
    // A Namespace object is judged by its own labels; cluster-scoped objects always match.
    assert_eq!(violations(&set, &prod, None), 1);
    assert_eq!(violations(&set, &dev, None), 0);
    let cluster_role = object(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "r",
        None,
        json!({}),
    );
    assert_eq!(violations(&set, &cluster_role, None), 1);
    // Unknown Namespace: Gatekeeper cannot match and autorejects.
    let outcome = set
        .review(
            &Review::from_object(&pod("unknown")).unwrap(),
            Some(&inventory),
        )
        .unwrap();
    assert_eq!(outcome.violations.len(), 1);
    assert!(
        outcome.violations[0]
            .msg
            .contains("namespace selector for namespace-scoped object but missing Namespace"),
        "{}",
        outcome.violations[0].msg
    );
}

#[test]
fn match_name_and_scope() {
    let set = policy(json!({"match": {"name": "web-*"}}));
    assert_eq!(violations(&set, &pod("prod"), None), 1);
    let other = object("v1", "Pod", "db-1", Some("prod"), json!({}));
    assert_eq!(violations(&set, &other, None), 0);

    let namespaced = policy(json!({"match": {"scope": "Namespaced"}}));
    let cluster = policy(json!({"match": {"scope": "Cluster"}}));
    let any = policy(json!({"match": {"scope": "*"}}));
    let cluster_role = object(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "r",
        None,
        json!({}),
    );
    let namespace = object("v1", "Namespace", "n", None, json!({}));
    assert_eq!(violations(&namespaced, &pod("prod"), None), 1);
    assert_eq!(violations(&namespaced, &cluster_role, None), 0);
    assert_eq!(violations(&namespaced, &namespace, None), 0);
    assert_eq!(violations(&cluster, &pod("prod"), None), 0);
    assert_eq!(violations(&cluster, &cluster_role, None), 1);
    assert_eq!(violations(&cluster, &namespace, None), 1);
    assert_eq!(violations(&any, &pod("prod"), None), 1);
    assert_eq!(violations(&any, &cluster_role, None), 1);
}

#[test]
fn enforcement_actions_are_carried_to_violations() {
    for (action, expected) in [
        ("deny", EnforcementAction::Deny),
        ("warn", EnforcementAction::Warn),
        ("dryrun", EnforcementAction::Dryrun),
    ] {
        let set = policy(json!({"enforcementAction": action}));
        let outcome = set
            .review(&Review::from_object(&pod("prod")).unwrap(), None)
            .unwrap();
        assert_eq!(outcome.violations[0].enforcement_action, expected);
    }
}

fn code_template(kind: &str, version: Option<&str>, rego: &str, libs: &[&str]) -> Value {
    let mut source = json!({"rego": rego, "libs": libs});
    if let Some(version) = version {
        source["version"] = json!(version);
    }
    json!({
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": kind.to_lowercase()},
        "spec": {
            "crd": {"spec": {"names": {"kind": kind}}},
            "targets": [{"target": "admission.k8s.gatekeeper.sh", "code": [
                {"engine": "K8sNativeValidation", "source": {"validations": []}},
                {"engine": "Rego", "source": source}
            ]}]
        }
    })
}

fn single(template: Value, object: &Value) -> Result<Vec<String>, Error> {
    let template = Template::from_value(&template)?;
    let kind = template.kind().to_owned();
    let mut set = PolicySet::new();
    set.add_template(template)?;
    set.add_constraint(constraint(&kind, "c", json!({})))?;
    let outcome = set.review(&Review::from_object(object)?, Some(&Inventory::new()))?;
    Ok(outcome
        .violations
        .into_iter()
        .map(|violation| violation.msg)
        .collect())
}

const V1_REGO: &str = "package k8sv1\n\nviolation contains {\"msg\": msg} if {\n  input.review.object.kind == \"Pod\"\n  msg := \"v1 syntax\"\n}\n";
const V0_REGO: &str = "package k8sv0\n\nviolation[{\"msg\": msg}] {\n  input.review.object.kind == \"Pod\"\n  msg := \"v0 syntax\"\n}\n";

#[test]
fn rego_v0_by_default_and_v1_when_the_source_says_so() {
    let v1 = code_template("K8sV1", Some("v1"), V1_REGO, &[]);
    assert_eq!(
        Template::from_value(&v1).unwrap().rego_version(),
        countersign_gatekeeper::RegoVersion::V1
    );
    assert_eq!(single(v1, &pod("prod")).unwrap(), vec!["v1 syntax"]);
    let v0 = code_template("K8sV0", None, V0_REGO, &[]);
    assert_eq!(single(v0, &pod("prod")).unwrap(), vec!["v0 syntax"]);
    // v1 syntax without `version: v1` is v0 and does not parse; v0 syntax under v1 neither.
    let error = single(code_template("K8sV1", None, V1_REGO, &[]), &pod("prod")).unwrap_err();
    assert_eq!(error.code(), "rego.compile", "{error}");
    let error = single(
        code_template("K8sV0", Some("v1"), V0_REGO, &[]),
        &pod("prod"),
    )
    .unwrap_err();
    assert_eq!(error.code(), "rego.compile", "{error}");
}

#[test]
fn libs_are_imported_from_data_lib() {
    let rego = "package k8slibs\nimport data.lib.naming.bad_name\nviolation[{\"msg\": msg}] {\n  bad_name(input.review.object.metadata.name)\n  msg := \"bad name\"\n}\n";
    let lib = "package lib.naming\nbad_name(name) { startswith(name, \"web\") }\n";
    assert_eq!(
        single(code_template("K8sLibs", None, rego, &[lib]), &pod("prod")).unwrap(),
        vec!["bad name"]
    );
    let other = object("v1", "Pod", "db", Some("prod"), json!({}));
    assert!(
        single(code_template("K8sLibs", None, rego, &[lib]), &other)
            .unwrap()
            .is_empty()
    );
    let outside = "package naming\nbad_name(name) { true }\n";
    let error = single(
        code_template("K8sLibs", None, rego, &[outside]),
        &pod("prod"),
    )
    .unwrap_err();
    assert_eq!(error.code(), "template.invalid");
    assert!(
        error.to_string().contains("not found in lib prefixes"),
        "{error}"
    );
}

#[test]
fn cel_only_templates_are_refused() {
    let mut doc = code_template("K8sCel", None, V0_REGO, &[]);
    doc["spec"]["targets"][0]["code"]
        .as_array_mut()
        .unwrap()
        .pop();
    let error = Template::from_value(&doc).unwrap_err();
    assert_eq!(error.code(), "template.cel_only");
    assert!(error.to_string().contains("k8scel"), "{error}");
}

#[test]
fn invalid_templates_are_refused_with_their_codes() {
    let check = |mutate: &dyn Fn(&mut Value), code: &str, message: &str| {
        let mut doc = code_template("K8sV0", None, V0_REGO, &[]);
        mutate(&mut doc);
        let error = Template::from_value(&doc)
            .and_then(|template| PolicySet::new().add_template(template))
            .unwrap_err();
        assert_eq!(error.code(), code, "{error}");
        assert!(error.to_string().contains(message), "{error}");
    };
    check(
        &|doc| doc["metadata"]["name"] = json!("other"),
        "template.invalid",
        "lowercase of CRD's Kind",
    );
    check(
        &|doc| doc["spec"]["crd"] = json!({}),
        "template.invalid",
        "does not specify CRD Kind",
    );
    check(
        &|doc| doc["spec"]["targets"][0]["target"] = json!("other.target"),
        "template.invalid",
        "not recognized",
    );
    check(
        &|doc| {
            let target = doc["spec"]["targets"][0].clone();
            doc["spec"]["targets"] = json!([target.clone(), target]);
        },
        "template.invalid",
        "exactly one target",
    );
    check(
        &|doc| {
            doc["spec"]["targets"][0]["code"][1]["source"]["rego"] =
                json!("package k8sv0\ndeny[x] { x := 1 }\n")
        },
        "template.invalid",
        "missing required rules: [violation]",
    );
    check(
        &|doc| {
            doc["spec"]["targets"][0]["code"][1]["source"]["rego"] =
                json!("package k8sv0\nviolation[{\"msg\": m}] { m := data.secrets.x }\n")
        },
        "template.invalid",
        "disallowed ref data.secrets.x",
    );
    check(
        &|doc| {
            doc["spec"]["targets"][0]["code"][1]["source"]["rego"] =
                json!("package k8sv0\nviolation[{\"msg\": m}] {\n")
        },
        "rego.compile",
        "k8sv0",
    );
}

#[test]
fn invalid_constraints_are_refused_with_their_codes() {
    let mut set = PolicySet::new();
    set.add_template(template(REQUIRED_LABELS)).unwrap();
    let error = set
        .add_constraint(constraint("K8sUnknown", "c", json!({})))
        .unwrap_err();
    assert_eq!(error.code(), "constraint.unknown_kind");
    let error = set
        .add_constraint(constraint(
            "K8sRequiredLabels",
            "c",
            json!({"parameters": {"labels": "owner"}}),
        ))
        .unwrap_err();
    assert_eq!(error.code(), "constraint.schema", "{error}");
    let error = Constraint::from_value(&json!({
        "apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "K8sRequiredLabels",
        "metadata": {"name": "c"},
        "spec": {"match": {"labelSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}}
    }))
    .unwrap_err();
    assert_eq!(error.code(), "constraint.invalid", "{error}");
    let error = Constraint::from_value(&json!({
        "apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "K8sRequiredLabels",
        "metadata": {"name": "c"}, "spec": {"match": {"kinds": "Pod"}}
    }))
    .unwrap_err();
    assert_eq!(error.code(), "constraint.schema", "{error}");
}

const UNIQUE_HOST: &str = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8suniquehost
spec:
  crd:
    spec:
      names:
        kind: K8sUniqueHost
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8suniquehost

        violation[{"msg": msg}] {
          host := input.review.object.spec.host
          other := data.inventory.namespace[ns]["networking.k8s.io/v1"]["Ingress"][name]
          other.spec.host == host
          not same(other)
          msg := sprintf("host %v also used by %v/%v", [host, ns, name])
        }

        same(other) {
          other.metadata.namespace == input.review.object.metadata.namespace
          other.metadata.name == input.review.object.metadata.name
        }
"#;

#[test]
fn referential_templates_read_the_inventory_or_are_skipped() {
    let template = template(UNIQUE_HOST);
    assert!(template.is_referential());
    assert!(!self::template(REQUIRED_LABELS).is_referential());
    let mut set = PolicySet::new();
    set.add_template(template).unwrap();
    set.add_constraint(constraint("K8sUniqueHost", "unique-host", json!({})))
        .unwrap();
    let ingress = |namespace: &str, name: &str| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": name, "namespace": namespace}, "spec": {"host": "shop.example"}})
    };
    let mut inventory = Inventory::new();
    inventory.add(&ingress("other", "taken")).unwrap();
    let review = Review::from_object(&ingress("prod", "new")).unwrap();
    let outcome = set.review(&review, Some(&inventory)).unwrap();
    assert_eq!(
        outcome
            .violations
            .iter()
            .map(|v| v.msg.as_str())
            .collect::<Vec<_>>(),
        vec!["host shop.example also used by other/taken"]
    );
    assert_eq!(
        set.review(&review, Some(&Inventory::new()))
            .unwrap()
            .violations
            .len(),
        0
    );
    let skipped = set.review(&review, None).unwrap();
    assert!(skipped.violations.is_empty());
    assert_eq!(skipped.skipped_referential, vec!["unique-host".to_owned()]);
}

const OPERATION: &str = r#"
apiVersion: templates.gatekeeper.sh/v1beta1
kind: ConstraintTemplate
metadata:
  name: k8soperation
spec:
  crd:
    spec:
      names:
        kind: K8sOperation
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8soperation

        violation[{"msg": msg}] {
          msg := sprintf("%v %v old=%v", [input.review.operation, input.review.object.metadata.name, object.get(input.review, ["oldObject", "metadata", "name"], "none")])
        }
"#;

fn admission(operation: &str, object: Value, old_object: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
           "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                       "resource": {"group": "", "version": "v1", "resource": "pods"},
                       "name": "web-1", "namespace": "prod", "operation": operation,
                       "userInfo": {"username": "alice"}, "object": object, "oldObject": old_object}})
}

#[test]
fn admission_reviews_create_update_delete() {
    let mut set = PolicySet::new();
    set.add_template(template(OPERATION)).unwrap();
    set.add_constraint(constraint(
        "K8sOperation",
        "op",
        json!({"match": {"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]}}),
    ))
    .unwrap();
    let messages = |doc: Value| -> Vec<String> {
        let review = Review::from_admission_review(&doc).unwrap();
        set.review(&review, None)
            .unwrap()
            .violations
            .into_iter()
            .map(|violation| violation.msg)
            .collect()
    };
    let mut old = pod("prod");
    old["metadata"]["name"] = json!("old-name");
    assert_eq!(
        messages(admission("CREATE", pod("prod"), Value::Null)),
        vec!["CREATE web-1 old=none"]
    );
    assert_eq!(
        messages(admission("UPDATE", pod("prod"), old.clone())),
        vec!["UPDATE web-1 old=old-name"]
    );
    assert_eq!(
        messages(admission("DELETE", Value::Null, old.clone())),
        vec!["DELETE old-name old=old-name"]
    );
    let error =
        Review::from_admission_review(&admission("DELETE", pod("prod"), Value::Null)).unwrap_err();
    assert_eq!(error.code(), "review.invalid");
    // UPDATE matches if the old object matches even when the new one does not.
    let mut renamed = pod("prod");
    renamed["apiVersion"] = json!("example.com/v1");
    assert_eq!(messages(admission("UPDATE", renamed, old)).len(), 1);
}

#[test]
fn evaluation_errors_become_violations_like_gatekeeper() {
    let rego = "package k8sconflict\nvalue = 1 { true }\nvalue = 2 { true }\nviolation[{\"msg\": msg}] {\n  msg := sprintf(\"%v\", [value])\n}\n";
    let messages = single(code_template("K8sConflict", None, rego, &[]), &pod("prod")).unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(!messages[0].is_empty());
}

#[test]
fn evaluation_is_bounded_by_the_timer() {
    let rego = "package k8sslow\nviolation[{\"msg\": msg}] {\n  n := count([x | x := numbers.range(1, 50000000)[_]; x % 7 == 0])\n  msg := sprintf(\"%v\", [n])\n}\n";
    let template = Template::from_value(&code_template("K8sSlow", None, rego, &[])).unwrap();
    let mut set = PolicySet::new();
    set.set_evaluation_timeout(std::time::Duration::from_millis(1));
    set.add_template(template).unwrap();
    set.add_constraint(constraint("K8sSlow", "slow", json!({})))
        .unwrap();
    let outcome = set
        .review(&Review::from_object(&pod("prod")).unwrap(), None)
        .unwrap();
    assert_eq!(outcome.violations.len(), 1);
    assert!(
        outcome.violations[0]
            .msg
            .contains("exceeded its limit of 1 ms"),
        "{}",
        outcome.violations[0].msg
    );
}

#[test]
fn load_paths_reads_templates_before_constraints_and_names_the_file() {
    let directory = tempfile::tempdir().unwrap();
    // Sorted first, but a constraint: it must still find its template.
    std::fs::write(
        directory.path().join("a-constraint.yaml"),
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\nmetadata:\n  name: must-have-owner\nspec:\n  parameters:\n    labels: [owner]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: sample\n",
    )
    .unwrap();
    std::fs::create_dir(directory.path().join("nested")).unwrap();
    std::fs::write(
        directory.path().join("nested/template.yaml"),
        REQUIRED_LABELS,
    )
    .unwrap();
    std::fs::write(directory.path().join("notes.txt"), "not: [yaml").unwrap();
    let set = PolicySet::load_paths(&[directory.path().to_owned()]).unwrap();
    assert_eq!(set.templates().count(), 1);
    assert_eq!(
        set.constraints().map(|c| c.name()).collect::<Vec<_>>(),
        vec!["must-have-owner"]
    );
    assert_eq!(violations(&set, &pod("prod"), None), 1);

    std::fs::write(
        directory.path().join("b-broken.yaml"),
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sMissing\nmetadata:\n  name: x\n",
    )
    .unwrap();
    let error = PolicySet::load_paths(&[directory.path().to_owned()]).unwrap_err();
    assert_eq!(error.code(), "constraint.unknown_kind");
    assert!(error.to_string().contains("b-broken.yaml"), "{error}");
    std::fs::write(directory.path().join("b-broken.yaml"), "a: [\n").unwrap();
    assert_eq!(
        PolicySet::load_paths(&[directory.path().to_owned()])
            .unwrap_err()
            .code(),
        "yaml.invalid"
    );
}

#[test]
fn policy_set_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicySet>();
    assert_send_sync::<Review>();
    assert_send_sync::<Inventory>();
}

#[test]
fn results_differing_only_outside_msg_and_details_are_one_violation() {
    // Gatekeeper's hook builds `{"key", "details", "msg"}` from each element of the template's
    // `violation` set and collects them in a set: elements that differ only in other fields
    // are one result. Elements without `msg`, and non-objects, are dropped.
    let rego = "package k8sdup\nviolation[{\"msg\": \"same\", \"extra\": n}] { n := [1, 2][_] }\nviolation[{\"msg\": \"other\", \"details\": {\"n\": n}}] { n := [1, 2][_] }\nviolation[{\"no_msg\": true}] { true }\nviolation[\"a string\"] { true }\n";
    let mut messages = single(code_template("K8sDup", None, rego, &[]), &pod("prod")).unwrap();
    messages.sort();
    assert_eq!(messages, ["other", "other", "same"]);
}

#[test]
fn template_operations_limit_the_webhook_only() {
    let mut document = yaml(OPERATION);
    document["spec"]["targets"][0]["operations"] = json!(["CREATE"]);
    let mut set = PolicySet::new();
    set.add_template(Template::from_value(&document).unwrap())
        .unwrap();
    set.add_constraint(constraint("K8sOperation", "op", json!({})))
        .unwrap();
    let pod = pod("prod");
    let review = |operation: &str| {
        Review::from_admission_review(&admission(operation, pod.clone(), pod.clone())).unwrap()
    };
    let count = |outcome: countersign_gatekeeper::ReviewOutcome| outcome.violations.len();
    assert_eq!(count(set.review_admission(&review("CREATE")).unwrap()), 1);
    assert_eq!(count(set.review_admission(&review("UPDATE")).unwrap()), 0);
    // gator (verify / test) evaluates every template whatever its operations.
    assert_eq!(count(set.review(&review("UPDATE"), None).unwrap()), 1);

    document["spec"]["targets"][0]["operations"] = json!(["*"]);
    let any = Template::from_value(&document).unwrap();
    assert!(any.matches_operation("DELETE"));
    document["spec"]["targets"][0]["operations"] = json!("CREATE");
    assert_eq!(
        Template::from_value(&document).unwrap_err().code(),
        "template.invalid"
    );
}
