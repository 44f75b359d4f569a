//! The Kubernetes admission webhook (`POST /v1/admission`) over mTLS: real `AdmissionReview`
//! documents as the API server sends them, answered as Gatekeeper's validating webhook
//! answers, each decision audited.

use std::path::{Path, PathBuf};

use countersign::config::AdmissionConfig;
use countersign_audit::{Outcome, RecordKind, SealedRecord};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{AuditOutage, TestApp, TestPki, all_records, fingerprint, test_config};

const TEMPLATES: &str = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: testrequiredlabels
spec:
  crd:
    spec:
      names:
        kind: TestRequiredLabels
      validation:
        openAPIV3Schema:
          type: object
          properties:
            labels:
              type: array
              items:
                type: string
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package testrequiredlabels

        violation[{"msg": msg, "details": {"missing": label}}] {
          label := input.parameters.labels[_]
          not input.review.object.metadata.labels[label]
          msg := sprintf("the %v label is required", [label])
        }
---
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: testprotected
spec:
  crd:
    spec:
      names:
        kind: TestProtected
  targets:
    - target: admission.k8s.gatekeeper.sh
      # Only DELETE reaches this template at the webhook (frameworks `MatchesOperation`);
      # for a DELETE, Gatekeeper reviews the existing object as `object`.
      operations: ["DELETE"]
      rego: |
        package testprotected

        violation[{"msg": msg}] {
          input.review.object.metadata.labels.protected == "true"
          msg := sprintf("%v %v is protected", [input.review.kind.kind, input.review.object.metadata.name])
        }
---
# Referential: reads data.inventory, which the webhook does not have.
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: testuniquename
spec:
  crd:
    spec:
      names:
        kind: TestUniqueName
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package testuniquename

        violation[{"msg": msg}] {
          name := input.review.object.metadata.name
          other := data.inventory.namespace[namespace]["apps/v1"]["Deployment"][name]
          namespace != input.review.object.metadata.namespace
          msg := sprintf("the name %v is taken in namespace %v", [name, namespace])
        }
"#;

const CONSTRAINTS: &str = r#"
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: TestRequiredLabels
metadata:
  name: deployments-need-owner
spec:
  match:
    kinds:
      - apiGroups: ["apps"]
        kinds: ["Deployment"]
  parameters:
    labels: ["owner"]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: TestRequiredLabels
metadata:
  name: deployments-should-name-team
spec:
  enforcementAction: warn
  match:
    kinds:
      - apiGroups: ["apps"]
        kinds: ["Deployment"]
  parameters:
    labels: ["team"]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: TestRequiredLabels
metadata:
  name: deployments-may-name-cost-center
spec:
  enforcementAction: dryrun
  match:
    kinds:
      - apiGroups: ["apps"]
        kinds: ["Deployment"]
  parameters:
    labels: ["cost-center"]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: TestProtected
metadata:
  name: protected-configmaps
spec:
  match:
    kinds:
      - apiGroups: [""]
        kinds: ["ConfigMap"]
    excludedNamespaces: ["kube-*"]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: TestUniqueName
metadata:
  name: unique-deployment-names
spec:
  match:
    kinds:
      - apiGroups: ["apps"]
        kinds: ["Deployment"]
"#;

/// A directory with the templates and constraints above, in two files as an operator keeps
/// them.
fn write_policies(templates: &str, constraints: &str) -> TempDir {
    let directory = TempDir::new().unwrap();
    std::fs::create_dir_all(directory.path().join("templates")).unwrap();
    std::fs::write(directory.path().join("templates/templates.yaml"), templates).unwrap();
    std::fs::write(directory.path().join("constraints.yaml"), constraints).unwrap();
    directory
}

async fn spawn_with_policies(policies: &Path) -> TestApp {
    let policies = policies.to_owned();
    TestApp::spawn_with(move |config| {
        config.admission = Some(AdmissionConfig::new(vec![policies]));
    })
    .await
}

/// An AdmissionReview as the API server sends it (abridged only where Kubernetes itself
/// leaves fields out).
fn admission_review(
    uid: &str,
    operation: &str,
    kind: (&str, &str, &str),
    resource: &str,
    namespace: &str,
    object: Value,
    old_object: Value,
) -> Value {
    let (group, version, kind_name) = kind;
    let name = if operation == "DELETE" {
        &old_object
    } else {
        &object
    }["metadata"]["name"]
        .clone();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind_name},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind_name},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:ci:deployer",
                "uid": "0b6f7e52-6c1c-4a4e-9d0b-1d3f8c1c2a10",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"],
            },
            "object": object,
            "oldObject": old_object,
            "dryRun": false,
            "options": match operation {
                "CREATE" => json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"}),
                "UPDATE" => json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"}),
                _ => json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Background"}),
            },
        },
    })
}

fn deployment(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "payments",
            "labels": labels,
            "uid": "3f1c2b9e-8f5e-4a51-a1d3-5f0c2e7d9b44",
            "generation": 1,
            "creationTimestamp": "2026-01-12T09:30:00Z",
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": name,
                    "image": "registry.bank.example/payments/api@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                }]},
            },
        },
        "status": {},
    })
}

fn config_map(name: &str, namespace: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"limits.json": "{\"daily\": \"10000.00\"}"},
    })
}

/// A running Pod, with or without the ephemeral container `kubectl debug` adds.
fn debugged_pod(debugged: bool) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "api-7d4b9c-x2x7q", "namespace": "payments", "labels": {"app": "api"}},
        "spec": {"containers": [{"name": "api", "image": "registry.bank.example/payments/api:1"}]},
    });
    if debugged {
        pod["spec"]["ephemeralContainers"] =
            json!([{"name": "debugger", "image": "busybox:1.36", "targetContainerName": "api"}]);
    }
    pod
}

const DEPLOYMENT: (&str, &str, &str) = ("apps", "v1", "Deployment");
const CONFIG_MAP: (&str, &str, &str) = ("", "v1", "ConfigMap");

async fn post_review(app: &TestApp, role: &str, body: &Value) -> (u16, Value) {
    let response = app
        .client(role)
        .post(format!("{}/v1/admission", app.base_url))
        .json(body)
        .send()
        .await
        .expect("request reaches the gateway");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// Posts a review as the API server (role `admission`), expects 200, and returns the
/// response and the one audit record it added.
async fn review(app: &TestApp, body: &Value) -> (Value, SealedRecord) {
    let before = app.audit_count().await;
    let (status, response) = post_review(app, "admission", body).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(
        app.audit_count().await,
        before + 1,
        "one record per decision"
    );
    let record = all_records(app).await.pop().unwrap();
    assert_eq!(
        response["response"]["auditAnnotations"]["decision-id"],
        record.record.decision_id.to_string(),
        "the response names its audit record"
    );
    (response, record)
}

/// The AdmissionReview a decision answers with.
fn expected_review(uid: &str, record: &SealedRecord, fields: Value) -> Value {
    let mut response = json!({
        "uid": uid,
        "auditAnnotations": {"decision-id": record.record.decision_id.to_string()},
    });
    response
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

fn violation(kind: &str, name: &str, action: &str, msg: &str) -> Value {
    json!({"constraint_kind": kind, "constraint_name": name, "enforcement_action": action, "msg": msg})
}

/// One review of the decision table: the request as the API server sends it, and what must
/// come back and be audited.
struct Case {
    what: &'static str,
    uid: &'static str,
    operation: &'static str,
    kind: (&'static str, &'static str, &'static str),
    resource: &'static str,
    namespace: &'static str,
    object: Value,
    old_object: Value,
    /// Fields set on top of the request (`dryRun`, `subResource`), and the review's
    /// `apiVersion` (`admission.k8s.io/v1` when `None`).
    request_fields: Value,
    api_version: Option<&'static str>,
    /// The response's fields besides `uid` and `auditAnnotations`.
    answer: Value,
    outcome: Outcome,
    /// The record's violations, dryrun ones included, in the engine's order.
    violations: Value,
    skipped_referential: Value,
}

impl Case {
    fn body(&self) -> Value {
        let mut body = admission_review(
            self.uid,
            self.operation,
            self.kind,
            self.resource,
            self.namespace,
            self.object.clone(),
            self.old_object.clone(),
        );
        if let Some(fields) = self.request_fields.as_object() {
            for (field, value) in fields {
                body["request"][field] = value.clone();
            }
        }
        if let Some(api_version) = self.api_version {
            body["apiVersion"] = json!(api_version);
        }
        body
    }

    /// What the audit record shows of the request: who did what to which object, never the
    /// object's contents.
    fn summary(&self) -> Value {
        let object = if self.operation == "DELETE" {
            &self.old_object
        } else {
            &self.object
        };
        json!({
            "uid": self.uid,
            "api_version": self.api_version.unwrap_or("admission.k8s.io/v1"),
            "kind": {"group": self.kind.0, "version": self.kind.1, "kind": self.kind.2},
            "sub_resource": self.request_fields.get("subResource"),
            "namespace": self.namespace,
            "name": object["metadata"]["name"],
            "operation": self.operation,
            "user": "system:serviceaccount:ci:deployer",
            "dry_run": self.request_fields.get("dryRun").unwrap_or(&json!(false)),
        })
    }
}

/// Posts the case's review and checks the whole answer and the whole audit record.
async fn check(app: &TestApp, case: &Case) {
    let (response, record) = review(app, &case.body()).await;
    let mut expected = expected_review(case.uid, &record, case.answer.clone());
    if let Some(api_version) = case.api_version {
        expected["apiVersion"] = json!(api_version);
    }
    assert_eq!(response, expected, "{}: the answer", case.what);
    let result = json!({
        "allowed": case.answer["allowed"],
        "status_code": case.answer["status"]["code"],
        "violations": case.violations,
        "skipped_referential": case.skipped_referential,
    });
    check_record(
        app,
        &record,
        case.outcome,
        case.summary(),
        result,
        case.what,
    );
}

fn check_record(
    app: &TestApp,
    record: &SealedRecord,
    outcome: Outcome,
    input: Value,
    result: Value,
    what: &str,
) {
    let record = &record.record;
    assert_eq!(record.kind, RecordKind::Decision, "{what}");
    assert_eq!(record.action, "admission.review", "{what}");
    assert_eq!(record.outcome, outcome, "{what}");
    assert_eq!(
        record.masked_input, input,
        "{what}: the record's request summary"
    );
    assert_eq!(record.result, result, "{what}: the record's result");
    assert_eq!(
        record.subject.fingerprint_sha256,
        fingerprint(&app.pki.clients["admission"].certificate_pem),
        "{what}"
    );
    assert_eq!(record.subject.roles, ["admission"], "{what}");
    assert_eq!(
        record.bundle_revision,
        app.state.admission.get().unwrap().revision(),
        "{what}"
    );
    assert!(
        record.bundle_revision.starts_with("sha256:"),
        "{what}: {}",
        record.bundle_revision
    );
}

/// The decision table: CREATE, UPDATE and DELETE (of the existing object, `oldObject`), deny,
/// warn, dryrun, no match, excluded namespace, a referential constraint skipped, a dry-run
/// request, a subresource and v1beta1, each answered as Gatekeeper answers and audited.
#[tokio::test(flavor = "multi_thread")]
async fn reviews_are_answered_as_gatekeeper_answers_and_audited() {
    let policies = write_policies(TEMPLATES, CONSTRAINTS);
    let app = spawn_with_policies(policies.path()).await;
    let skipped = || json!(["unique-deployment-names"]);
    let dryrun_cost_center = || {
        violation(
            "TestRequiredLabels",
            "deployments-may-name-cost-center",
            "dryrun",
            "the cost-center label is required",
        )
    };
    let warn_team = || {
        violation(
            "TestRequiredLabels",
            "deployments-should-name-team",
            "warn",
            "the team label is required",
        )
    };
    let deny_owner = || {
        violation(
            "TestRequiredLabels",
            "deployments-need-owner",
            "deny",
            "the owner label is required",
        )
    };
    let refused_for_owner = || {
        json!({
            "allowed": false,
            "status": {
                "code": 403,
                "reason": "Forbidden",
                "message": "[deployments-need-owner] the owner label is required",
            },
        })
    };
    let allowed = || json!({"allowed": true, "status": {"code": 200}});
    let owner = || json!({"owner": "payments-team"});
    let labelled =
        || json!({"owner": "payments-team", "team": "payments", "cost-center": "cc-4711"});
    let protected = || json!({"protected": "true"});
    let case = |what, uid, operation, kind, resource, namespace, object, old_object| Case {
        what,
        uid,
        operation,
        kind,
        resource,
        namespace,
        object,
        old_object,
        request_fields: json!({}),
        api_version: None,
        answer: allowed(),
        outcome: Outcome::Allow,
        violations: json!([]),
        skipped_referential: json!([]),
    };
    let cases = [
        Case {
            answer: json!({
                "allowed": false,
                "status": {
                    "code": 403,
                    "reason": "Forbidden",
                    "message": "[deployments-need-owner] the owner label is required",
                },
                "warnings": ["[deployments-should-name-team] the team label is required"],
            }),
            outcome: Outcome::Deny,
            violations: json!([
                dryrun_cost_center(),
                violation(
                    "TestRequiredLabels",
                    "deployments-need-owner",
                    "deny",
                    "the owner label is required"
                ),
                warn_team(),
            ]),
            skipped_referential: skipped(),
            ..case(
                "CREATE without labels: deny refuses, warn warns, dryrun only audited, referential skipped",
                "7a1f5c9e-0b7d-4d0e-9a51-2d8f3c6b1e01",
                "CREATE",
                DEPLOYMENT,
                "deployments",
                "payments",
                deployment("api", json!({})),
                Value::Null,
            )
        },
        Case {
            answer: json!({
                "allowed": true,
                "status": {"code": 299},
                "warnings": ["[deployments-should-name-team] the team label is required"],
            }),
            violations: json!([dryrun_cost_center(), warn_team()]),
            skipped_referential: skipped(),
            ..case(
                "UPDATE adding the owner: allowed with the warning, status 299",
                "7a1f5c9e-0b7d-4d0e-9a51-2d8f3c6b1e02",
                "UPDATE",
                DEPLOYMENT,
                "deployments",
                "payments",
                deployment("api", owner()),
                deployment("api", json!({})),
            )
        },
        Case {
            violations: json!([dryrun_cost_center()]),
            skipped_referential: skipped(),
            ..case(
                "UPDATE with owner and team: a dryrun violation alone changes nothing in the answer",
                "7a1f5c9e-0b7d-4d0e-9a51-2d8f3c6b1e03",
                "UPDATE",
                DEPLOYMENT,
                "deployments",
                "payments",
                deployment("api", json!({"owner": "payments-team", "team": "payments"})),
                deployment("api", owner()),
            )
        },
        Case {
            skipped_referential: skipped(),
            ..case(
                "CREATE fully labelled: no violation",
                "7a1f5c9e-0b7d-4d0e-9a51-2d8f3c6b1e04",
                "CREATE",
                DEPLOYMENT,
                "deployments",
                "payments",
                deployment("ledger", labelled()),
                Value::Null,
            )
        },
        case(
            "CREATE of an object no constraint matches",
            "7a1f5c9e-0b7d-4d0e-9a51-2d8f3c6b1e05",
            "CREATE",
            CONFIG_MAP,
            "configmaps",
            "payments",
            config_map("limits", "payments", json!({})),
            Value::Null,
        ),
        // A dry-run request (`kubectl apply --dry-run=server`) is decided like any other, as
        // Gatekeeper does, and marked in the record.
        Case {
            request_fields: json!({"dryRun": true}),
            answer: refused_for_owner(),
            outcome: Outcome::Deny,
            violations: json!([deny_owner()]),
            skipped_referential: skipped(),
            ..case(
                "a dry-run UPDATE dropping the owner: refused all the same",
                "7a1f5c9e-0b7d-4d0e-9a51-2d8f3c6b1e06",
                "UPDATE",
                DEPLOYMENT,
                "deployments",
                "payments",
                deployment("api", json!({"team": "payments", "cost-center": "cc-4711"})),
                deployment("api", labelled()),
            )
        },
        // `kubectl debug` adds an ephemeral container through a subresource: an UPDATE whose
        // object is the whole Pod, reviewed like any Pod and named in the record.
        Case {
            request_fields: json!({"subResource": "ephemeralcontainers"}),
            ..case(
                "an UPDATE of pods/ephemeralcontainers",
                "7a1f5c9e-0b7d-4d0e-9a51-2d8f3c6b1e07",
                "UPDATE",
                ("", "v1", "Pod"),
                "pods",
                "payments",
                debugged_pod(true),
                debugged_pod(false),
            )
        },
        Case {
            api_version: Some("admission.k8s.io/v1beta1"),
            answer: refused_for_owner(),
            outcome: Outcome::Deny,
            violations: json!([deny_owner()]),
            skipped_referential: skipped(),
            ..case(
                "a v1beta1 review is answered in v1beta1",
                "5e0d7c1a-2b3c-4d5e-8f90-a1b2c3d4e5f6",
                "CREATE",
                DEPLOYMENT,
                "deployments",
                "payments",
                deployment("api", json!({"team": "payments", "cost-center": "cc-1"})),
                Value::Null,
            )
        },
        Case {
            answer: json!({
                "allowed": false,
                "status": {
                    "code": 403,
                    "reason": "Forbidden",
                    "message": "[protected-configmaps] ConfigMap limits is protected",
                },
            }),
            outcome: Outcome::Deny,
            violations: json!([violation(
                "TestProtected",
                "protected-configmaps",
                "deny",
                "ConfigMap limits is protected"
            )]),
            ..case(
                "DELETE reviews the existing object (oldObject): a protected one is refused",
                "c2d0a3b4-1e2f-4a5b-8c7d-000000000001",
                "DELETE",
                CONFIG_MAP,
                "configmaps",
                "payments",
                Value::Null,
                config_map("limits", "payments", protected()),
            )
        },
        case(
            "CREATE of a protected object: the template's operations are DELETE only",
            "c2d0a3b4-1e2f-4a5b-8c7d-000000000004",
            "CREATE",
            CONFIG_MAP,
            "configmaps",
            "payments",
            config_map("limits", "payments", protected()),
            Value::Null,
        ),
        case(
            "UPDATE of a protected object: not reviewed by a DELETE-only template",
            "c2d0a3b4-1e2f-4a5b-8c7d-000000000005",
            "UPDATE",
            CONFIG_MAP,
            "configmaps",
            "payments",
            config_map("limits", "payments", protected()),
            config_map("limits", "payments", protected()),
        ),
        case(
            "DELETE of an unprotected object",
            "c2d0a3b4-1e2f-4a5b-8c7d-000000000002",
            "DELETE",
            CONFIG_MAP,
            "configmaps",
            "payments",
            Value::Null,
            config_map("limits", "payments", json!({})),
        ),
        case(
            "DELETE of a protected object in an excluded namespace (kube-*)",
            "c2d0a3b4-1e2f-4a5b-8c7d-000000000003",
            "DELETE",
            CONFIG_MAP,
            "configmaps",
            "kube-system",
            Value::Null,
            config_map("limits", "kube-system", protected()),
        ),
    ];
    for case in &cases {
        check(&app, case).await;
    }

    // The webhook's body limit is its own (1 MiB by default), not the 16 KiB of transfers:
    // kubectl's last-applied annotation alone often exceeds that.
    let mut large = deployment("ledger", labelled());
    large["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(64 * 1024),
    });
    check(
        &app,
        &Case {
            skipped_referential: skipped(),
            ..case(
                "an UPDATE of 128 KiB",
                "7a1f5c9e-0b7d-4d0e-9a51-2d8f3c6b1e08",
                "UPDATE",
                DEPLOYMENT,
                "deployments",
                "payments",
                large.clone(),
                large,
            )
        },
    )
    .await;

    let metrics = app.state.metrics.encode();
    for outcome in ["deny", "allow"] {
        assert!(
            metrics.contains(&format!(
                "action=\"admission.review\",outcome=\"{outcome}\""
            )),
            "{metrics}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_without_the_admission_role_are_refused_and_nothing_is_written() {
    let policies = write_policies(TEMPLATES, CONSTRAINTS);
    let app = spawn_with_policies(policies.path()).await;
    let before = app.audit_count().await;
    let body = admission_review(
        "u-1",
        "CREATE",
        DEPLOYMENT,
        "deployments",
        "payments",
        deployment("api", json!({})),
        Value::Null,
    );
    for role in ["channel", "admin", "policy_client", "auditor"] {
        let (status, response) = post_review(&app, role, &body).await;
        assert_eq!(status, 403, "{role}: {response}");
        assert_eq!(
            response,
            json!({"code": "role.required", "message": "this operation requires one of the roles: admission"})
        );
    }
    let response = app
        .client_with(&app.pki.roleless)
        .post(format!("{}/v1/admission", app.base_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(app.audit_count().await, before);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_reviews_are_refused_with_400_and_nothing_is_written() {
    let policies = write_policies(TEMPLATES, CONSTRAINTS);
    let app = {
        let policies = policies.path().to_owned();
        TestApp::spawn_with(move |config| {
            config.admission = Some(AdmissionConfig {
                body_bytes_max: 8 * 1024,
                ..AdmissionConfig::new(vec![policies])
            });
        })
        .await
    };
    let before = app.audit_count().await;
    let valid = admission_review(
        "u-2",
        "CREATE",
        DEPLOYMENT,
        "deployments",
        "payments",
        deployment("api", json!({})),
        Value::Null,
    );
    let with = |pointer: &str, value: Value| {
        let mut body = valid.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        body.to_string()
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body["request"].as_object_mut().unwrap().remove(field);
        body.to_string()
    };
    let mut too_large = valid.clone();
    too_large["request"]["object"]["metadata"]["annotations"] =
        json!({"note": "x".repeat(9 * 1024)});
    let cases: Vec<(&str, String, &str, u16, &str, &str)> = vec![
        (
            "not JSON",
            "{\"apiVersion\": ".into(),
            "application/json",
            400,
            "body.malformed_json",
            "not valid JSON",
        ),
        (
            "an array",
            "[]".into(),
            "application/json",
            400,
            "admission_review.invalid",
            "AdmissionReview object",
        ),
        (
            "no request",
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string(),
            "application/json",
            400,
            "admission_review.invalid",
            "missing field `request`",
        ),
        (
            "no uid",
            without("uid"),
            "application/json",
            400,
            "admission_review.invalid",
            "missing field `uid`",
        ),
        (
            "no kind",
            without("kind"),
            "application/json",
            400,
            "admission_review.invalid",
            "missing field `kind`",
        ),
        (
            "wrong apiVersion",
            with("/apiVersion", json!("admission.k8s.io/v2")),
            "application/json",
            400,
            "admission_review.invalid",
            "apiVersion",
        ),
        (
            "wrong kind",
            with("/kind", json!("TokenReview")),
            "application/json",
            400,
            "admission_review.invalid",
            "TokenReview",
        ),
        (
            "unknown operation",
            with("/request/operation", json!("PATCH")),
            "application/json",
            400,
            "admission_review.invalid",
            "request.operation",
        ),
        (
            "CREATE without object",
            with("/request/object", Value::Null),
            "application/json",
            400,
            "admission_review.invalid",
            "request.object",
        ),
        (
            "DELETE without oldObject",
            with("/request/operation", json!("DELETE")),
            "application/json",
            400,
            "admission_review.invalid",
            "request.oldObject",
        ),
        (
            "not JSON content",
            valid.to_string(),
            "text/plain",
            415,
            "content_type.unsupported",
            "application/json",
        ),
        (
            "too large",
            too_large.to_string(),
            "application/json",
            413,
            "body.too_large",
            "8192 bytes",
        ),
    ];
    for (case, body, content_type, expected_status, expected_code, message_part) in cases {
        let response = app
            .client("admission")
            .post(format!("{}/v1/admission", app.base_url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let response: Value = response.json().await.unwrap();
        assert_eq!(status, expected_status, "{case}: {response}");
        assert_eq!(response["code"], expected_code, "{case}: {response}");
        assert!(
            response["message"].as_str().unwrap().contains(message_part),
            "{case}: {response}"
        );
        assert!(
            response.get("response").is_none(),
            "{case}: no review answer"
        );
    }
    assert_eq!(
        app.audit_count().await,
        before,
        "a refused call writes nothing"
    );
    // The same review, well-formed and within the limit, is answered.
    let (status, _) = post_review(&app, "admission", &valid).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_admission_section_the_webhook_says_it_is_not_configured() {
    let app = TestApp::spawn().await;
    let before = app.audit_count().await;
    let body = admission_review(
        "u-3",
        "CREATE",
        DEPLOYMENT,
        "deployments",
        "payments",
        deployment("api", json!({})),
        Value::Null,
    );
    let (status, response) = post_review(&app, "admission", &body).await;
    assert_eq!(status, 409, "{response}");
    assert_eq!(
        response,
        json!({"code": "admission.not_configured", "message": "the admission webhook is not configured ([admission] policies)"})
    );
    let (status, response) = post_review(&app, "channel", &body).await;
    assert_eq!((status, &response["code"]), (403, &json!("role.required")));
    assert_eq!(app.audit_count().await, before);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_answer_without_its_audit_record() {
    let policies = write_policies(TEMPLATES, CONSTRAINTS);
    let app = spawn_with_policies(policies.path()).await;
    let labels = json!({"owner": "payments-team", "team": "payments", "cost-center": "cc-4711"});
    let body = admission_review(
        "u-4",
        "CREATE",
        DEPLOYMENT,
        "deployments",
        "payments",
        deployment("api", labels),
        Value::Null,
    );
    let outage = AuditOutage::begin(&app).await;
    let before = app.audit_count().await;
    let (status, response) = post_review(&app, "admission", &body).await;
    assert_eq!(status, 503, "{response}");
    assert_eq!(response["code"], "audit.unavailable");
    assert!(
        response.get("response").is_none(),
        "no allow without a record: {response}"
    );
    assert_eq!(app.audit_count().await, before);
    outage.end().await;
    let (response, record) = review(&app, &body).await;
    assert_eq!(response["response"]["allowed"], true);
    assert_eq!(record.record.masked_input["uid"], "u-4");
    app.stop().await;
}

/// A template whose result cannot be read (a `msg` that is not a string fails the whole
/// query, as in Gatekeeper's framework): the review is refused in-band (allowed false, code
/// 500, as Gatekeeper's `admission.Errored`) and audited as an error. (A Rego error inside
/// one constraint is, as in Gatekeeper, a violation of that constraint instead.)
#[tokio::test(flavor = "multi_thread")]
async fn a_policy_that_cannot_be_evaluated_refuses_the_object() {
    let templates = format!(
        "{TEMPLATES}---\n{}",
        r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: testbroken
spec:
  crd:
    spec:
      names:
        kind: TestBroken
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package testbroken

        violation[{"msg": msg}] {
          msg := count(input.review.object.metadata.labels)
        }
"#
    );
    let constraints = format!(
        "{CONSTRAINTS}---\n{}",
        r#"apiVersion: constraints.gatekeeper.sh/v1beta1
kind: TestBroken
metadata:
  name: broken
spec:
  match:
    kinds:
      - apiGroups: ["apps"]
        kinds: ["Deployment"]
"#
    );
    let policies = write_policies(&templates, &constraints);
    let app = spawn_with_policies(policies.path()).await;
    let labels = json!({"owner": "payments-team", "team": "payments", "cost-center": "cc-4711"});
    let uid = "e0e0e0e0-1111-4222-8333-444444444444";
    let body = admission_review(
        uid,
        "CREATE",
        DEPLOYMENT,
        "deployments",
        "payments",
        deployment("api", labels),
        Value::Null,
    );
    let (response, record) = review(&app, &body).await;
    assert_eq!(response["response"]["uid"], uid);
    assert_eq!(response["response"]["allowed"], false, "{response}");
    assert_eq!(response["response"]["status"]["code"], 500, "{response}");
    let message = response["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the admission policies could not be evaluated: ")
            && message.contains("broken"),
        "{message}"
    );
    assert_eq!(record.record.outcome, Outcome::Error);
    assert_eq!(record.record.result["allowed"], false);
    assert_eq!(record.record.result["status_code"], 500);
    assert!(
        record.record.result["error"]["code"]
            .as_str()
            .unwrap()
            .starts_with("rego."),
        "{}",
        record.record.result
    );
    app.stop().await;
}

async fn start_error(policies: Vec<PathBuf>) -> String {
    let directory = TempDir::new().unwrap();
    let _pki = TestPki::generate(directory.path());
    let mut config = test_config(directory.path(), crate::support::bundle_path());
    config.admission = Some(AdmissionConfig::new(policies));
    match countersign::server::Gateway::build(config).await {
        Ok(_) => panic!("the gateway must not start with these admission policies"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_that_do_not_load_stop_the_start() {
    // Rego that does not compile: named with its template.
    let broken = TEMPLATES.replace(
        "not input.review.object.metadata.labels[label]",
        "not input.review.object.metadata.labels[label",
    );
    let policies = write_policies(&broken, CONSTRAINTS);
    let error = start_error(vec![policies.path().to_owned()]).await;
    assert!(
        error.starts_with("admission.policies: ") && error.contains("testrequiredlabels"),
        "{error}"
    );

    // A constraint of a kind no template defines.
    let policies = write_policies(
        TEMPLATES,
        &CONSTRAINTS.replace("kind: TestProtected", "kind: TestMissing"),
    );
    let error = start_error(vec![policies.path().to_owned()]).await;
    assert!(error.contains("TestMissing"), "{error}");

    // Templates only: a webhook without constraints would allow everything.
    let policies = write_policies(TEMPLATES, "");
    let error = start_error(vec![policies.path().to_owned()]).await;
    assert!(error.contains("no Constraint found"), "{error}");

    // A path that does not exist.
    let missing = policies.path().join("missing");
    let error = start_error(vec![missing]).await;
    assert!(error.contains("missing"), "{error}");
}

/// The repository's own policies (`gatekeeper/policies`, samples included: the loader takes
/// only templates and constraints), on its own AdmissionReview sample.
#[tokio::test(flavor = "multi_thread")]
async fn the_repositorys_own_policies_guard_a_deployment_update() {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gatekeeper/policies");
    let app = spawn_with_policies(&policies).await;
    let sample = std::fs::read_to_string(
        policies.join("pod-security/samples/disallowed-admission-review-update-to-root.yaml"),
    )
    .unwrap();
    let update: Value = serde_norway::from_str(&sample).unwrap();
    let skipped = json!(["countersign-pod-disruption-budget"]);

    // UPDATE to run as root: refused by the pod-security constraint alone.
    let (response, record) = review(&app, &update).await;
    let answer = &response["response"];
    assert_eq!(answer["uid"], update["request"]["uid"]);
    assert_eq!(answer["allowed"], false, "{response}");
    assert_eq!(answer["status"]["code"], 403);
    assert_eq!(answer["status"]["reason"], "Forbidden");
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(
        message
            .lines()
            .all(|line| line.starts_with("[countersign-pod-security] ")
                && line.contains("runAsUser")),
        "{message}"
    );
    assert!(answer.get("warnings").is_none(), "{response}");
    assert_eq!(record.record.outcome, Outcome::Deny);
    assert_eq!(record.record.result["skipped_referential"], skipped);
    assert_eq!(
        record.record.masked_input,
        json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "api_version": "admission.k8s.io/v1",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "sub_resource": null,
            "namespace": "countersign",
            "name": "countersign-gateway",
            "operation": "UPDATE",
            "user": "system:serviceaccount:ci:deployer",
            "dry_run": false,
        })
    );

    // The compliant version before the change, created: allowed, nothing violated (the PDB
    // constraint needs an inventory and is skipped).
    let mut create = update.clone();
    create["request"]["uid"] = json!("705ab4f5-6393-11e8-b7cc-42010a800003");
    create["request"]["operation"] = json!("CREATE");
    create["request"]["object"] = update["request"]["oldObject"].clone();
    create["request"]["oldObject"] = Value::Null;
    let (response, record) = review(&app, &create).await;
    assert_eq!(
        response,
        expected_review(
            "705ab4f5-6393-11e8-b7cc-42010a800003",
            &record,
            json!({"allowed": true, "status": {"code": 200}})
        )
    );
    assert_eq!(
        record.record.result,
        json!({"allowed": true, "status_code": 200, "violations": [], "skipped_referential": skipped})
    );
    app.stop().await;
}

/// With `[audit.encryption]`, the whole request is sealed with its record and a revealer
/// gets it back, except a Secret's values.
#[tokio::test(flavor = "multi_thread")]
async fn the_full_request_is_sealed_without_a_secrets_values() {
    let policies = write_policies(TEMPLATES, CONSTRAINTS);
    let keys = TempDir::new().unwrap();
    let key_path = keys.path().join("keyring.json");
    std::fs::write(
        &key_path,
        countersign_audit::KeyFile::generate("kek-admission")
            .unwrap()
            .to_json(),
    )
    .unwrap();
    let app = {
        let policies = policies.path().to_owned();
        TestApp::spawn_with(move |config| {
            config.admission = Some(AdmissionConfig::new(vec![policies]));
            config.audit.encryption =
                Some(countersign::config::EncryptionConfig { key_file: key_path });
        })
        .await
    };
    let reveal = |record_id: String| {
        let client = app.client("revealer");
        let url = format!("{}/v1/audit/records/{record_id}/input", app.base_url);
        async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
            response.json::<Value>().await.unwrap()["input"].clone()
        }
    };

    let deployment_review = admission_review(
        "s-1",
        "CREATE",
        DEPLOYMENT,
        "deployments",
        "payments",
        deployment("api", json!({})),
        Value::Null,
    );
    let (_, record) = review(&app, &deployment_review).await;
    assert_eq!(
        reveal(record.record.record_id.to_string()).await,
        deployment_review["request"]
    );

    let secret = |password: &str| {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "database", "namespace": "payments"},
            "type": "Opaque",
            "data": {"password": password},
        })
    };
    let secret_review = admission_review(
        "s-2",
        "UPDATE",
        ("", "v1", "Secret"),
        "secrets",
        "payments",
        secret("bmV3LXNlY3JldA=="),
        secret("b2xkLXNlY3JldA=="),
    );
    let (response, record) = review(&app, &secret_review).await;
    assert_eq!(response["response"]["allowed"], true);
    let sealed = reveal(record.record.record_id.to_string()).await;
    let mut expected = secret_review["request"].clone();
    expected["object"]["data"] = json!("(removed)");
    expected["oldObject"]["data"] = json!("(removed)");
    assert_eq!(sealed, expected);
    app.stop().await;
}
