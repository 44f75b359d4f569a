//! `suite`: gator verify semantics through the library API, on suites written to temporary
//! directories (path resolution, file selection, assertion counting, output).
#![forbid(unsafe_code)]

mod support;

use std::path::Path;

use countersign_gatekeeper::suite::{self, Filter, Report};
use support::WriteFiles as _;
use tempfile::TempDir;

/// The command-line `PATH` argument for `relative` below `directory` (kept as text: `DIR/...`
/// is not a path).
fn arg(directory: &TempDir, relative: &str) -> String {
    format!("{}/{relative}", directory.path().display())
}

const TEMPLATE: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8sdenyname
spec:
  crd:
    spec:
      names:
        kind: K8sDenyName
      validation:
        openAPIV3Schema:
          type: object
          properties:
            names:
              type: array
              items: {type: string}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8sdenyname

        violation[{"msg": msg}] {
          name := input.parameters.names[_]
          input.review.object.metadata.name == name
          msg := sprintf("name %v is denied (%v)", [name, input.review.kind.kind])
        }

        violation[{"msg": msg}] {
          input.review.object.metadata.name == "twice"
          msg := "second rule"
        }
"#;

const CONSTRAINT: &str = r#"apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sDenyName
metadata:
  name: deny-names
spec:
  parameters:
    names: ["bad", "twice"]
"#;

fn object(name: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n")
}

fn suite_with_cases(cases: &str) -> String {
    format!(
        "kind: Suite\napiVersion: test.gatekeeper.sh/v1alpha1\ntests:\n- name: deny\n  template: ../template.yaml\n  constraint: /constraint.yaml\n  cases:\n{cases}"
    )
}

/// A tree: `policy/template.yaml`, `policy/suites/constraint.yaml`, objects under
/// `policy/suites/objects/`, and the suite `policy/suites/suite.yaml`. The suite names the
/// template with `..` and the constraint with a leading `/`: both are relative to the
/// suite's folder, as in gator.
fn tree(cases: &str) -> TempDir {
    let directory = TempDir::new().unwrap();
    directory.write("policy/template.yaml", TEMPLATE);
    directory.write("policy/suites/constraint.yaml", CONSTRAINT);
    for name in ["good", "bad", "twice"] {
        directory.write(&format!("policy/suites/objects/{name}.yaml"), &object(name));
    }
    directory.write("policy/suites/suite.yaml", &suite_with_cases(cases));
    directory
}

fn run(paths: &[String], filter: &str) -> Report {
    suite::verify(paths, &Filter::parse(filter).unwrap()).unwrap()
}

/// The first failure message of the first case that failed.
fn first_failure(report: &Report) -> Option<String> {
    report
        .suites
        .iter()
        .flat_map(|suite| &suite.tests)
        .flat_map(|test| {
            test.error
                .clone()
                .into_iter()
                .chain(test.cases.iter().filter_map(|case| case.error.clone()))
        })
        .next()
}

#[test]
fn assertions_count_every_violation_and_filter_by_message() {
    // (assertions, expected failure substring or None when the case passes)
    let checks: &[(&str, Option<&str>)] = &[
        ("- violations: 2", None),
        ("- violations: yes", None),
        ("- {}", None), // violations defaults to yes
        ("- violations: no", Some("got 2 violations but want none")),
        (
            "- violations: 1",
            Some("got 2 violations but want exactly 1"),
        ),
        ("- message: second\n        violations: 1", None),
        (
            "- message: '^name twice is denied \\(Pod\\)$'\n        violations: 1",
            None,
        ),
        ("- message: nothing-matches\n        violations: no", None),
        (
            "- message: nothing-matches",
            Some("got 0 violations containing \"nothing-matches\" but want at least 1"),
        ),
        ("- violations: -1", Some("must be a nonnegative integer")),
        ("- violations: maybe", Some("must be a nonnegative integer")),
        ("- violations: \"2\"", Some("must be a nonnegative integer")),
        (
            "- message: '('",
            Some("message contains invalid regular expression"),
        ),
        // All assertions must hold.
        (
            "- violations: 2\n      - violations: no",
            Some("but want none"),
        ),
    ];
    for (assertions, expected) in checks {
        let cases = format!(
            "  - name: case\n    object: objects/twice.yaml\n    assertions:\n      {assertions}\n"
        );
        let directory = tree(&cases);
        let report = run(&[arg(&directory, "policy/suites/suite.yaml")], "");
        let failure = first_failure(&report);
        match expected {
            None => assert_eq!(failure, None, "{assertions}"),
            Some(expected) => {
                let failure = failure.unwrap_or_else(|| panic!("{assertions} should fail"));
                assert!(failure.contains(expected), "{assertions}: {failure}");
                assert!(!report.passed());
            }
        }
    }
}

#[test]
fn an_invalid_message_expression_is_not_compiled_without_violations() {
    // gator compiles the expression only to match a violation against it.
    let cases = "  - name: case\n    object: objects/good.yaml\n    assertions:\n    - message: '('\n      violations: no\n";
    let directory = tree(cases);
    let report = run(&[arg(&directory, "policy/suites/suite.yaml")], "");
    assert!(report.passed(), "{}", report.render(true));
}

#[test]
fn failures_carry_messages_and_render_like_go_test() {
    let cases = "  - name: bad-fails\n    object: objects/bad.yaml\n    assertions:\n    - violations: no\n  - name: good-passes\n    object: objects/good.yaml\n    assertions:\n    - violations: no\n";
    let directory = tree(cases);
    let path = arg(&directory, "policy/suites/suite.yaml");
    let report = run(std::slice::from_ref(&path), "");
    let duration = regex::Regex::new(r"\d+\.\d{3}s").unwrap();
    let text = report.render(false);
    let text = duration.replace_all(&text, "D");
    assert_eq!(
        text,
        format!(
            "    --- FAIL: bad-fails\t(D)\n        unexpected number of violations: got 1 violations but want none: got messages [name bad is denied (Pod)]\n--- FAIL: deny\t(D)\nFAIL\t{path}\tD\nFAIL\n"
        )
    );
    let counts = report.counts();
    assert_eq!(
        (
            counts.suites,
            counts.tests,
            counts.tests_failed,
            counts.cases,
            counts.cases_failed
        ),
        (1, 1, 1, 2, 1)
    );
}

#[test]
fn paths_select_files_like_gator() {
    let cases =
        "  - name: good\n    object: objects/good.yaml\n    assertions:\n    - violations: no\n";
    let directory = tree(cases);
    // A second suite deeper down, a non-suite YAML file, a .json file and a .yml suite.
    directory.write(
        "policy/suites/deeper/more.yml",
        &suite_with_cases(cases).replace("../template.yaml", "../../template.yaml"),
    );
    directory.write("policy/suites/deeper/objects/good.yaml", &object("good"));
    directory.write("policy/suites/deeper/constraint.yaml", CONSTRAINT);
    directory.write("policy/suites/deeper/notes.yaml", "just: data\n");
    directory.write(
        "policy/suites/deeper/suite.json",
        "{\"kind\": \"Suite\", \"apiVersion\": \"test.gatekeeper.sh/v1alpha1\"}",
    );
    let names = |report: &Report| -> Vec<String> {
        report
            .suites
            .iter()
            .map(|suite| suite.path.clone())
            .collect()
    };
    let root = directory.path().display().to_string();
    // Recursive: both suites, displayed as given plus the part below.
    let report = run(&[arg(&directory, "policy/...")], "");
    assert_eq!(
        names(&report),
        [
            format!("{root}/policy/suites/deeper/more.yml"),
            format!("{root}/policy/suites/suite.yaml")
        ]
    );
    assert!(report.passed(), "{}", report.render(true));
    // A directory without `...`: only the suites directly in it.
    let report = run(&[arg(&directory, "policy/suites")], "");
    assert_eq!(names(&report), [format!("{root}/policy/suites/suite.yaml")]);
    // No suite directly in `policy`.
    assert!(run(&[arg(&directory, "policy")], "").suites.is_empty());
    // `...` on a file, a file that is not YAML, a missing path: errors naming the path.
    for (argument, expected) in [
        ("policy/suites/suite.yaml/...", "not a directory"),
        ("policy/suites/deeper/suite.json", "unsupported extension"),
        ("missing/...", "missing"),
    ] {
        let error = suite::verify(&[arg(&directory, argument)], &Filter::All).unwrap_err();
        assert!(error.to_string().contains(expected), "{argument}: {error}");
    }
    // Any YAML file that does not parse stops the listing.
    directory.write("policy/suites/deeper/broken.yaml", "a: [\n");
    let error = suite::verify(&[arg(&directory, "policy/...")], &Filter::All).unwrap_err();
    assert!(error.to_string().contains("broken.yaml"), "{error}");
}

#[test]
fn object_files_hold_exactly_one_object() {
    let cases = "  - name: two\n    object: objects/two.yaml\n    assertions:\n    - violations: no\n  - name: comments-only-between\n    object: objects/commented.yaml\n    assertions:\n    - violations: 1\n  - name: empty\n    object: objects/empty.yaml\n    assertions:\n    - violations: no\n  - name: kindless\n    object: objects/kindless.yaml\n    assertions:\n    - violations: no\n";
    let directory = tree(cases);
    directory.write(
        "policy/suites/objects/two.yaml",
        &format!("{}---\n{}", object("good"), object("bad")),
    );
    // Pieces holding only comments are not objects; one holding `---` alone is an object
    // without a kind, which gator's decoder refuses.
    directory.write(
        "policy/suites/objects/commented.yaml",
        &format!("# header\n---\n{}---\n# trailer\n", object("bad")),
    );
    directory.write(
        "policy/suites/objects/kindless.yaml",
        &format!("---\n# header\n---\n{}", object("bad")),
    );
    directory.write("policy/suites/objects/empty.yaml", "# nothing\n");
    let report = run(&[arg(&directory, "policy/suites/suite.yaml")], "");
    let cases = &report.suites[0].tests[0].cases;
    assert!(
        cases[0]
            .error
            .as_deref()
            .unwrap()
            .contains("defines 2 objects")
    );
    assert_eq!(cases[1].error, None);
    assert!(
        cases[2]
            .error
            .as_deref()
            .unwrap()
            .contains("defines no YAML objects")
    );
}

#[test]
fn skip_and_run_filters() {
    let cases = "  - name: bad-fails\n    object: objects/bad.yaml\n    assertions:\n    - violations: no\n  - name: skipped\n    skip: true\n    object: objects/bad.yaml\n    assertions:\n    - violations: no\n  - name: good\n    object: objects/good.yaml\n    assertions:\n    - violations: no\n";
    let directory = tree(cases);
    let path = arg(&directory, "policy/suites/suite.yaml");
    let report = run(std::slice::from_ref(&path), "//^good$");
    assert!(report.passed());
    let skipped: Vec<bool> = report.suites[0].tests[0]
        .cases
        .iter()
        .map(|case| case.skipped)
        .collect();
    assert_eq!(skipped, [true, true, false]);
    // Skipping the whole suite.
    directory.write(
        "policy/suites/suite.yaml",
        &suite_with_cases(cases).replace("tests:", "skip: true\ntests:"),
    );
    let report = run(std::slice::from_ref(&path), "");
    assert!(report.suites[0].skipped && report.passed());
    assert!(
        report
            .render(false)
            .starts_with(&format!("ok\t{path}\t0.000s\n"))
    );
}

#[test]
fn missing_template_or_constraint_fails_the_test() {
    let directory = tree(
        "  - name: good\n    object: objects/good.yaml\n    assertions:\n    - violations: no\n",
    );
    let suite_path = directory.path().join("policy/suites/suite.yaml");
    let original = std::fs::read_to_string(&suite_path).unwrap();
    for (from, to, expected) in [
        (
            "  template: ../template.yaml\n",
            "",
            "invalid Suite: missing template",
        ),
        (
            "  constraint: /constraint.yaml\n",
            "",
            "invalid Suite: missing constraint",
        ),
        (
            "../template.yaml",
            "../nope.yaml",
            "reading ConstraintTemplate from",
        ),
        ("/constraint.yaml", "objects/good.yaml", "not a Constraint"),
    ] {
        std::fs::write(&suite_path, original.replace(from, to)).unwrap();
        let report = run(&[suite_path.display().to_string()], "");
        let error = report.suites[0].tests[0].error.clone().unwrap_or_default();
        assert!(error.contains(expected), "{expected}: {error}");
    }
    assert!(Path::new(&suite_path).exists());
}
