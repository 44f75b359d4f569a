//! `countersign gatekeeper verify|test` driven like `gator verify|test`, from the real binary,
//! on suites and manifests written to temporary directories.
#![forbid(unsafe_code)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn countersign(directory: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg("gatekeeper")
        .args(args)
        .current_dir(directory)
        .output()
        .expect("countersign runs");
    Output {
        code: output.status.code().expect("exited"),
        stdout: String::from_utf8(output.stdout).expect("utf-8"),
        stderr: String::from_utf8(output.stderr).expect("utf-8"),
    }
}

fn write(root: &Path, relative: &str, text: &str) -> PathBuf {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

/// One violation per missing label, so counts above one can be asserted.
const LABELS_TEMPLATE: &str = r#"apiVersion: templates.gatekeeper.sh/v1
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
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8srequiredlabels

        violation[{"msg": msg, "details": {"missing": label}}] {
          label := input.parameters.labels[_]
          not input.review.object.metadata.labels[label]
          msg := sprintf("missing label <%v> on %v", [label, input.review.object.metadata.name])
        }
"#;

const LABELS_CONSTRAINT: &str = r#"apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sRequiredLabels
metadata:
  name: must-have-owner-and-app
spec:
  match:
    kinds:
      - apiGroups: [""]
        kinds: ["ConfigMap"]
  parameters:
    labels: ["owner", "app"]
"#;

const NO_LABELS: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bare\n  namespace: team\n";
const OWNER_ONLY: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: half\n  namespace: team\n  labels:\n    owner: payments\n";
const BOTH_LABELS: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: full\n  namespace: team\n  labels:\n    owner: payments\n    app: ledger\n";

/// A suite directory with the labels template and constraint and three objects.
fn labels_suite(suite: &str) -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    write(root, "labels/template.yaml", LABELS_TEMPLATE);
    write(root, "labels/samples/constraint.yaml", LABELS_CONSTRAINT);
    write(root, "labels/samples/bare.yaml", NO_LABELS);
    write(root, "labels/samples/half.yaml", OWNER_ONLY);
    write(root, "labels/samples/full.yaml", BOTH_LABELS);
    write(root, "labels/suite.yaml", suite);
    directory
}

const PASSING_SUITE: &str = r#"kind: Suite
apiVersion: test.gatekeeper.sh/v1alpha1
metadata:
  name: labels
tests:
- name: required-labels
  template: template.yaml
  constraint: samples/constraint.yaml
  cases:
  - name: bare
    object: samples/bare.yaml
    assertions:
    - violations: 2
    - message: owner
      violations: 1
    - message: "^missing label <app>"
      violations: yes
  - name: half
    object: samples/half.yaml
    assertions:
    - violations: yes
    - message: owner
      violations: no
  - name: full
    object: samples/full.yaml
    assertions:
    - violations: no
"#;

#[test]
fn a_passing_suite_exits_0_with_an_ok_line() {
    let directory = labels_suite(PASSING_SUITE);
    let output = countersign(directory.path(), &["verify", "labels/..."]);
    assert_eq!(output.code, 0, "{}{}", output.stdout, output.stderr);
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", output.stdout);
    assert!(
        lines[0].starts_with("ok\tlabels/suite.yaml\t") && lines[0].ends_with('s'),
        "{}",
        output.stdout
    );
    assert_eq!(lines[1], "PASS");
    // The same suite named as a file, and as a directory (not recursive).
    let output = countersign(directory.path(), &["verify", "labels/suite.yaml"]);
    assert_eq!(output.code, 0, "{}", output.stdout);
    assert!(output.stdout.starts_with("ok\tlabels/suite.yaml\t"));
    let output = countersign(directory.path(), &["verify", "labels"]);
    assert_eq!(output.code, 0, "{}", output.stdout);
    assert!(output.stderr.is_empty(), "{}", output.stderr);
    // A directory without suites directly in it runs nothing and passes, as gator, with a
    // note on stderr saying so.
    let output = countersign(directory.path(), &["verify", "."]);
    assert_eq!((output.code, output.stdout.as_str()), (0, "PASS\n"));
    assert!(
        output.stderr.contains("no Suite file") && output.stderr.contains("DIR/..."),
        "{}",
        output.stderr
    );
}

#[test]
fn verbose_lists_every_test_and_case() {
    let directory = labels_suite(PASSING_SUITE);
    let output = countersign(directory.path(), &["verify", "-v", "labels/..."]);
    assert_eq!(output.code, 0, "{}", output.stdout);
    let duration = regex::Regex::new(r"\(\d+\.\d{3}s\)").unwrap();
    let normalized = duration.replace_all(&output.stdout, "(D)");
    let expected = "=== RUN   required-labels\n\
                    \x20   === RUN   bare\n\
                    \x20   --- PASS: bare\t(D)\n\
                    \x20   === RUN   half\n\
                    \x20   --- PASS: half\t(D)\n\
                    \x20   === RUN   full\n\
                    \x20   --- PASS: full\t(D)\n\
                    --- PASS: required-labels\t(D)\n";
    assert!(normalized.starts_with(expected), "{normalized}");
}

#[test]
fn a_failing_assertion_exits_1_and_names_the_case() {
    let suite = PASSING_SUITE.replace("- violations: 2", "- violations: 3");
    let directory = labels_suite(&suite);
    let output = countersign(directory.path(), &["verify", "labels/..."]);
    assert_eq!(output.code, 1, "{}", output.stdout);
    assert!(
        output.stdout.contains("    --- FAIL: bare\t("),
        "{}",
        output.stdout
    );
    assert!(
        output.stdout.contains(
            "        unexpected number of violations: got 2 violations but want exactly 3: got messages [missing label <app> on bare missing label <owner> on bare]"
        ),
        "{}",
        output.stdout
    );
    assert!(output.stdout.contains("--- FAIL: required-labels\t("));
    assert!(output.stdout.contains("FAIL\tlabels/suite.yaml\t"));
    assert!(output.stdout.ends_with("FAIL\n"), "{}", output.stdout);
    // Passing cases are not listed without -v.
    assert!(!output.stdout.contains("half"), "{}", output.stdout);
}

#[test]
fn message_expressions_filter_what_is_counted() {
    let suite = PASSING_SUITE.replace(
        "    - message: owner\n      violations: no",
        "    - message: \"label <(owner|app)>\"\n      violations: 2",
    );
    let directory = labels_suite(&suite);
    let output = countersign(directory.path(), &["verify", "labels/..."]);
    assert_eq!(output.code, 1, "{}", output.stdout);
    assert!(
        output.stdout.contains(
            "got 1 violations containing \"label <(owner|app)>\" but want exactly 2: got messages [missing label <app> on half]"
        ),
        "{}",
        output.stdout
    );
}

#[test]
fn run_filters_tests_and_cases() {
    let suite = PASSING_SUITE.replace("- violations: 2", "- violations: 3");
    let directory = labels_suite(&suite);
    // Only the passing cases: the failing `bare` case is skipped.
    let output = countersign(
        directory.path(),
        &[
            "verify",
            "-v",
            "--run",
            "required//^(half|full)$",
            "labels/...",
        ],
    );
    assert_eq!(output.code, 0, "{}", output.stdout);
    assert!(
        output.stdout.contains("    === SKIP  bare\n"),
        "{}",
        output.stdout
    );
    // A test filtered out is skipped as a whole.
    let output = countersign(
        directory.path(),
        &["verify", "-v", "--run", "nomatch//", "labels"],
    );
    assert_eq!(output.code, 0, "{}", output.stdout);
    assert!(
        output.stdout.starts_with("=== SKIP  required-labels\n"),
        "{}",
        output.stdout
    );
    // A bad expression is a usage error.
    let output = countersign(directory.path(), &["verify", "--run", "a//b//c", "labels"]);
    assert_eq!(output.code, 2);
    assert!(
        output.stderr.contains("invalid test filter"),
        "{}",
        output.stderr
    );
}

#[test]
fn template_and_constraint_errors_fail_the_test() {
    let directory = labels_suite(PASSING_SUITE);
    let root = directory.path();
    // Rego that does not compile.
    write(
        root,
        "labels/template.yaml",
        &LABELS_TEMPLATE.replace("label := input.parameters.labels[_]", "label := := ["),
    );
    let output = countersign(root, &["verify", "labels/..."]);
    assert_eq!(output.code, 1, "{}", output.stdout);
    assert!(
        output.stdout.contains("--- FAIL: required-labels\t("),
        "{}",
        output.stdout
    );
    assert!(
        output.stdout.contains("\n  adding template: "),
        "{}",
        output.stdout
    );

    // A template with only CEL code: the Rego engine cannot run it.
    let cel_only = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8srequiredlabels
spec:
  crd:
    spec:
      names:
        kind: K8sRequiredLabels
  targets:
    - target: admission.k8s.gatekeeper.sh
      code:
        - engine: K8sNativeValidation
          source:
            validations:
              - expression: "has(object.metadata.labels)"
                message: "labels required"
"#;
    write(root, "labels/template.yaml", cel_only);
    let output = countersign(root, &["verify", "labels/..."]);
    assert_eq!(output.code, 1, "{}", output.stdout);
    assert!(
        output.stdout.contains("adding template: "),
        "{}",
        output.stdout
    );
    assert!(output.stdout.contains("CEL"), "{}", output.stdout);

    // The template file is not a template.
    write(root, "labels/template.yaml", NO_LABELS);
    let output = countersign(root, &["verify", "labels/..."]);
    assert_eq!(output.code, 1);
    assert!(
        output.stdout.contains("not a ConstraintTemplate"),
        "{}",
        output.stdout
    );
}

#[test]
fn an_invalid_constraint_can_be_expected() {
    let suite = r#"kind: Suite
apiVersion: test.gatekeeper.sh/v1alpha1
tests:
- name: wrong-parameter-type
  template: template.yaml
  constraint: samples/bad-constraint.yaml
  invalid: true
- name: valid-but-expected-invalid
  template: template.yaml
  constraint: samples/constraint.yaml
  invalid: true
"#;
    let directory = labels_suite(suite);
    write(
        directory.path(),
        "labels/samples/bad-constraint.yaml",
        &LABELS_CONSTRAINT.replace("labels: [\"owner\", \"app\"]", "labels: \"owner\""),
    );
    let output = countersign(directory.path(), &["verify", "-v", "labels"]);
    assert_eq!(output.code, 1, "{}", output.stdout);
    assert!(
        output.stdout.contains("--- PASS: wrong-parameter-type\t"),
        "{}",
        output.stdout
    );
    assert!(
        output
            .stdout
            .contains("--- FAIL: valid-but-expected-invalid\t"),
        "{}",
        output.stdout
    );
    assert!(
        output
            .stdout
            .contains("constraint should have failed schema validation"),
        "{}",
        output.stdout
    );
}

#[test]
fn admission_reviews_inventory_and_bad_cases() {
    let suite = r#"kind: Suite
apiVersion: test.gatekeeper.sh/v1alpha1
tests:
- name: labels
  template: template.yaml
  constraint: samples/constraint.yaml
  cases:
  - name: update-review
    object: samples/review.yaml
    assertions:
    - violations: 1
      message: app
  - name: missing-object-file
    object: samples/nope.yaml
    assertions:
    - violations: no
  - name: two-objects
    object: samples/two.yaml
    assertions:
    - violations: no
  - name: no-assertions
    object: samples/full.yaml
  - name: skipped
    skip: true
    object: samples/bare.yaml
    assertions:
    - violations: no
- name: unique-owner
  template: unique/template.yaml
  constraint: unique/constraint.yaml
  cases:
  - name: taken
    object: samples/full.yaml
    inventory: [unique/inventory.yaml]
    assertions:
    - violations: 1
      message: "owner payments already used by other"
  - name: free
    object: samples/full.yaml
    assertions:
    - violations: no
"#;
    let directory = labels_suite(suite);
    let root = directory.path();
    write(
        root,
        "labels/samples/review.yaml",
        r#"kind: AdmissionReview
apiVersion: admission.k8s.io/v1
request:
  operation: UPDATE
  kind: {group: "", version: v1, kind: ConfigMap}
  name: half
  namespace: team
  object:
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: half, namespace: team, labels: {owner: payments}}
  oldObject:
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: half, namespace: team}
"#,
    );
    write(
        root,
        "labels/samples/two.yaml",
        &format!("{NO_LABELS}---\n# second\n{BOTH_LABELS}"),
    );
    write(
        root,
        "labels/unique/template.yaml",
        r#"apiVersion: templates.gatekeeper.sh/v1
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

        violation[{"msg": msg}] {
          namespace := input.review.object.metadata.namespace
          other := data.inventory.namespace[namespace]["v1"]["ConfigMap"][name]
          name != input.review.object.metadata.name
          other.metadata.labels.owner == input.review.object.metadata.labels.owner
          msg := sprintf("owner %v already used by %v", [other.metadata.labels.owner, name])
        }
"#,
    );
    write(
        root,
        "labels/unique/constraint.yaml",
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sUniqueOwner\nmetadata:\n  name: unique-owner\n",
    );
    write(
        root,
        "labels/unique/inventory.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n  namespace: team\n  labels:\n    owner: payments\n",
    );
    let output = countersign(root, &["verify", "-v", "labels/suite.yaml"]);
    let stdout = &output.stdout;
    assert_eq!(output.code, 1, "{stdout}");
    assert!(stdout.contains("    --- PASS: update-review\t"), "{stdout}");
    assert!(
        stdout.contains("    --- FAIL: missing-object-file\t"),
        "{stdout}"
    );
    assert!(stdout.contains("samples/nope.yaml"), "{stdout}");
    assert!(
        stdout.contains("object file must contain exactly one object"),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid Case: assertions must be non-empty"),
        "{stdout}"
    );
    assert!(stdout.contains("    === SKIP  skipped\n"), "{stdout}");
    assert!(stdout.contains("    --- PASS: taken\t"), "{stdout}");
    assert!(stdout.contains("    --- PASS: free\t"), "{stdout}");
    assert!(stdout.contains("--- PASS: unique-owner\t"), "{stdout}");
}

#[test]
fn unreadable_input_is_a_usage_error() {
    let directory = labels_suite(PASSING_SUITE);
    let root = directory.path();
    let output = countersign(root, &["verify", "no-such-dir/..."]);
    assert_eq!(output.code, 2, "{}", output.stdout);
    assert!(output.stderr.contains("no-such-dir"), "{}", output.stderr);
    // A YAML file that does not parse anywhere below the path stops the listing.
    write(root, "labels/broken.yaml", "kind: [\n");
    let output = countersign(root, &["verify", "labels/..."]);
    assert_eq!(output.code, 2, "{}", output.stdout);
    assert!(output.stderr.contains("broken.yaml"), "{}", output.stderr);
    assert!(!output.stderr.contains("panicked"), "{}", output.stderr);
    // `test`: a missing file, a bad document, a wrong extension.
    let output = countersign(root, &["test", "-f", "missing.yaml"]);
    assert_eq!(output.code, 2);
    assert!(output.stderr.contains("missing.yaml"), "{}", output.stderr);
    let output = countersign(root, &["test", "-f", "labels/broken.yaml"]);
    assert_eq!(output.code, 2);
    assert!(
        output.stderr.contains("labels/broken.yaml"),
        "{}",
        output.stderr
    );
    write(root, "notes.txt", "hello");
    let output = countersign(root, &["test", "-f", "notes.txt"]);
    assert_eq!(output.code, 2);
    assert!(output.stderr.contains("notes.txt"), "{}", output.stderr);
}

/// Three constraints of one template, one per enforcement action.
fn manifest_dir() -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    write(root, "policy/template.yaml", LABELS_TEMPLATE);
    let constraints = [
        ("deny", "deny-owner", "[\"owner\"]"),
        ("warn", "warn-app", "[\"app\"]"),
        ("dryrun", "dryrun-tier", "[\"tier\"]"),
    ]
    .map(|(action, name, labels)| {
        format!(
            "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\nmetadata:\n  name: {name}\nspec:\n  enforcementAction: {action}\n  match:\n    kinds:\n      - apiGroups: [\"\"]\n        kinds: [\"ConfigMap\"]\n  parameters:\n    labels: {labels}\n"
        )
    });
    write(root, "policy/constraints.yaml", &constraints.join("---\n"));
    write(root, "manifests/half.yaml", OWNER_ONLY);
    write(root, "manifests/bare.json", &serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bare", "namespace": "team"}
    }).to_string());
    directory
}

#[test]
fn test_reports_deny_warn_and_dryrun_and_fails_only_on_deny() {
    let directory = manifest_dir();
    let root = directory.path();
    let output = countersign(root, &["test", "-f", "policy", "-f", "manifests"]);
    assert_eq!(output.code, 1, "{}{}", output.stdout, output.stderr);
    assert_eq!(
        output.stdout,
        "v1/ConfigMap team/bare: [\"deny-owner\"] Message: \"missing label <owner> on bare\"\n\
         v1/ConfigMap team/bare: [\"dryrun-tier\"] Message: \"missing label <tier> on bare\"\n\
         v1/ConfigMap team/half: [\"dryrun-tier\"] Message: \"missing label <tier> on half\"\n\
         v1/ConfigMap team/bare: [\"warn-app\"] Message: \"missing label <app> on bare\"\n\
         v1/ConfigMap team/half: [\"warn-app\"] Message: \"missing label <app> on half\"\n"
    );
    // Without the object that breaks the deny constraint: warn and dryrun only, exit 0.
    let output = countersign(root, &["test", "-f", "policy", "-f", "manifests/half.yaml"]);
    assert_eq!(output.code, 0, "{}", output.stdout);
    assert_eq!(output.stdout.lines().count(), 2, "{}", output.stdout);
    // --deny-only hides them.
    let output = countersign(
        root,
        &[
            "test",
            "--deny-only",
            "-f",
            "policy",
            "-f",
            "manifests/half.yaml",
        ],
    );
    assert_eq!((output.code, output.stdout.as_str()), (0, ""));
}

#[test]
fn test_json_output_has_gator_fields() {
    let directory = manifest_dir();
    let output = countersign(
        directory.path(),
        &["test", "-o", "json", "-f", "policy", "-f", "manifests"],
    );
    assert_eq!(output.code, 1, "{}", output.stderr);
    let results: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 5);
    let first = &results[0];
    assert_eq!(first["target"], "admission.k8s.gatekeeper.sh");
    assert_eq!(first["msg"], "missing label <owner> on bare");
    assert_eq!(first["enforcementAction"], "deny");
    assert_eq!(first["metadata"]["details"]["missing"], "owner");
    assert_eq!(first["constraint"]["metadata"]["name"], "deny-owner");
    assert_eq!(first["violatingObject"]["metadata"]["name"], "bare");
    assert!(first["trace"].is_null());
    // Go's encoder escapes `<` and `>`; four-space indent.
    assert!(
        output.stdout.contains("\\u003cowner\\u003e"),
        "{}",
        output.stdout
    );
    assert!(
        output.stdout.contains("\n    {\n        \"target\""),
        "{}",
        output.stdout
    );
    // YAML keeps the framework result under `result`.
    let output = countersign(
        directory.path(),
        &["test", "-o", "yaml", "-f", "policy", "-f", "manifests"],
    );
    assert_eq!(output.code, 1);
    let results: serde_json::Value = serde_norway::from_str(&output.stdout).unwrap();
    assert_eq!(results[0]["result"]["enforcementaction"], "deny");
    assert_eq!(results[0]["violatingObject"]["metadata"]["name"], "bare");
    // No violation at all: `null`, exit 0.
    let output = countersign(directory.path(), &["test", "-o", "json", "-f", "policy"]);
    assert_eq!(
        (output.code, output.stdout.as_str()),
        (0, "null\n"),
        "{}",
        output.stderr
    );
}
