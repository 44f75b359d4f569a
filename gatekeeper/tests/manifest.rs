//! `manifest`: gator test semantics through the library API (inputs, inventory of all
//! objects, Namespace lookup for namespaceSelector, result order, output, deny detection).
#![forbid(unsafe_code)]

mod support;

use std::path::Path;

use countersign_gatekeeper::manifest::{self, OutputFormat, SourceObject};
use support::WriteFiles as _;
use tempfile::TempDir;

/// Referential: a ConfigMap whose `owner` label is used by another ConfigMap in the same
/// namespace (seen through data.inventory, which holds every input object).
const UNIQUE_OWNER: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8suniqueowner
spec:
  crd:
    spec:
      names:
        kind: K8sUniqueOwner
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8suniqueowner

        violation[{"msg": msg, "details": {"other": name}}] {
          namespace := input.review.object.metadata.namespace
          other := data.inventory.namespace[namespace]["v1"]["ConfigMap"][name]
          name != input.review.object.metadata.name
          other.metadata.labels.owner == input.review.object.metadata.labels.owner
          msg := sprintf("owner %v of %v is also used by %v", [other.metadata.labels.owner, input.review.object.metadata.name, name])
        }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sUniqueOwner
metadata:
  name: unique-owner
spec:
  enforcementAction: warn
  match:
    kinds: [{apiGroups: [""], kinds: ["ConfigMap"]}]
"#;

/// Denies every ConfigMap in namespaces labelled `strict: "true"`.
const STRICT_NAMESPACES: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8sdenyall
spec:
  crd:
    spec:
      names:
        kind: K8sDenyAll
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8sdenyall

        violation[{"msg": msg}] {
          msg := sprintf("%v is in a strict namespace", [input.review.object.metadata.name])
        }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sDenyAll
metadata:
  name: strict-namespaces
spec:
  match:
    kinds: [{apiGroups: [""], kinds: ["ConfigMap"]}]
    namespaceSelector:
      matchLabels:
        strict: "true"
"#;

const OBJECTS: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: locked
  labels:
    strict: "true"
---
apiVersion: v1
kind: Namespace
metadata:
  name: team
---
apiVersion: v1
kind: ConfigMap
metadata: {name: a, namespace: team, labels: {owner: payments}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: b, namespace: team, labels: {owner: payments}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: locked, labels: {owner: cards}}
"#;

fn inputs(directory: &TempDir) -> Vec<SourceObject> {
    directory.write("policies/unique.yaml", UNIQUE_OWNER);
    directory.write("policies/nested/strict.yml", STRICT_NAMESPACES);
    directory.write("policies/README.md", "not read: only .yaml, .yml and .json");
    let objects = directory.write("objects.yaml", OBJECTS);
    manifest::read_inputs(&[directory.path().join("policies"), objects]).unwrap()
}

#[test]
fn every_object_is_reviewed_with_all_objects_as_inventory() {
    let directory = TempDir::new().unwrap();
    let objects = inputs(&directory);
    // 2 templates + 2 constraints + 5 objects; the Markdown file is skipped.
    assert_eq!(objects.len(), 9);
    let report = manifest::test(&objects).unwrap();
    let found: Vec<(String, &str, String)> = report
        .findings
        .iter()
        .map(|finding| {
            (
                finding.constraint_name.clone(),
                finding.enforcement_action.as_str(),
                finding.msg.clone(),
            )
        })
        .collect();
    // deny before warn; then by message. `c` is denied only because the Namespace object
    // among the inputs carries the label the namespaceSelector asks for.
    assert_eq!(
        found,
        [
            (
                "strict-namespaces".to_owned(),
                "deny",
                "c is in a strict namespace".to_owned()
            ),
            (
                "unique-owner".to_owned(),
                "warn",
                "owner payments of a is also used by b".to_owned()
            ),
            (
                "unique-owner".to_owned(),
                "warn",
                "owner payments of b is also used by a".to_owned()
            ),
        ]
    );
    assert!(report.has_deny());
    assert_eq!(report.findings[1].details["other"], "b");
    assert_eq!(
        report.findings[0].constraint["metadata"]["name"],
        "strict-namespaces"
    );

    let text = report.render(OutputFormat::Text, false);
    assert_eq!(
        text.lines().next().unwrap(),
        r#"v1/ConfigMap locked/c: ["strict-namespaces"] Message: "c is in a strict namespace""#
    );
    let deny_only = report.render(OutputFormat::Text, true);
    assert_eq!(deny_only.lines().count(), 1);
    let json: serde_json::Value =
        serde_json::from_str(&report.render(OutputFormat::Json, false)).unwrap();
    assert_eq!(json[1]["enforcementAction"], "warn");
    assert_eq!(json[1]["violatingObject"]["metadata"]["name"], "a");
}

#[test]
fn warn_only_findings_do_not_deny() {
    let directory = TempDir::new().unwrap();
    let objects: Vec<SourceObject> = inputs(&directory)
        .into_iter()
        .filter(|source| source.object["metadata"]["namespace"] != "locked")
        .collect();
    let report = manifest::test(&objects).unwrap();
    assert_eq!(report.findings.len(), 2);
    assert!(!report.has_deny());
    // Without the Namespace object, a namespaceSelector cannot be decided: gator's matcher
    // reports an error, which Gatekeeper turns into a violation of the constraint.
    let objects: Vec<SourceObject> = objects
        .into_iter()
        .filter(|source| source.object["kind"] != "Namespace")
        .collect();
    let report = manifest::test(&objects).unwrap();
    assert!(report.has_deny());
    assert!(
        report.findings[0].msg.contains("missing Namespace"),
        "{:?}",
        report.findings[0]
    );
}

#[test]
fn input_errors_name_the_file() {
    let directory = TempDir::new().unwrap();
    let bad = directory.write("bad.yaml", "kind: ConfigMap\n---\nmetadata: [\n");
    let error = manifest::read_inputs(&[bad]).unwrap_err();
    assert!(error.to_string().contains("bad.yaml"), "{error}");
    let text = directory.write("notes.txt", "x");
    let error = manifest::read_inputs(&[text]).unwrap_err();
    assert!(error.to_string().contains("notes.txt"), "{error}");
    let error = manifest::read_inputs(&[directory.path().join("missing")]).unwrap_err();
    assert!(error.to_string().contains("missing"), "{error}");
    // A constraint whose template is not among the inputs.
    let constraint = directory.write(
        "constraint.yaml",
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sNothing\nmetadata:\n  name: orphan\n",
    );
    let objects = manifest::read_inputs(&[constraint]).unwrap();
    let error = manifest::test(&objects).unwrap_err();
    assert!(error.to_string().contains("constraint.yaml"), "{error}");
    assert!(directory.path().exists());
}

#[test]
fn alias_bomb_input_is_refused_with_its_file_and_document() {
    let directory = TempDir::new().unwrap();
    let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\n");
    text.push_str("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n");
    text.push_str("  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..12 {
        let items = vec![format!("*a{}", level - 1); 10].join(", ");
        text.push_str(&format!("  a{level}: &a{level} [{items}]\n"));
    }
    let path = directory.write("bomb.yaml", &text);
    let error = manifest::read_inputs(&[path]).unwrap_err();
    assert_eq!(error.code(), "yaml.invalid");
    let message = error.to_string();
    assert!(message.contains("bomb.yaml (document 2)"), "{message}");
}

#[test]
fn namespace_object_stays_null_as_in_gator() {
    // gator matches with the Namespace it derives (empty for a cluster-scoped object,
    // `default` when not given) but never hands it to the Rego.
    let template = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8snamespaceobject
spec:
  crd:
    spec:
      names:
        kind: K8sNamespaceObject
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8snamespaceobject

        violation[{"msg": msg}] {
          input.review.object.kind == "ConfigMap"
          msg := sprintf("%v", [input.review.namespaceObject])
        }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sNamespaceObject
metadata:
  name: show
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: in-default
  namespace: default
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cluster-wide
"#;
    let objects = manifest::read_stream(Path::new("in.yaml"), template).unwrap();
    let report = manifest::test(&objects).unwrap();
    let messages: Vec<&str> = report
        .findings
        .iter()
        .map(|finding| finding.msg.as_str())
        .collect();
    assert_eq!(messages, ["null", "null"]);
}
