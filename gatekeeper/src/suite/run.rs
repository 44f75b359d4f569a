//! Running one test of a Suite and its cases (gator's `verify.Runner`), and checking
//! assertions (gator's `verify.Assertion`). Failure texts follow gator's error chains, so a
//! report reads the same; file paths are printed absolute.

use std::{path::Path, time::Instant};

use regex::Regex;
use serde_json::Value;

use super::{
    Assertion, Case, CaseResult, Filter, Test, TestResult, Violations,
    read::{join_relative, read_objects, read_single_object},
};
use crate::object::{
    ADMISSION_GROUP, CONSTRAINT_GROUP, TEMPLATE_GROUP, group_version, kind, metadata_str,
};
use crate::{Constraint, ErrorCode, Inventory, PolicySet, Review, Template, Violation};

/// Why a test's template and constraint could not be set up.
enum SetupError {
    /// The constraint failed validation against its template's schema: what a test with
    /// `invalid: true` expects.
    Schema(String),
    Other(String),
}

impl SetupError {
    fn message(&self) -> &str {
        match self {
            SetupError::Schema(message) | SetupError::Other(message) => message,
        }
    }
}

pub(super) fn run_test(suite_dir: &Path, filter: &Filter, test: &Test) -> TestResult {
    let started = Instant::now();
    let setup = set_up(suite_dir, test);
    let mut cases = Vec::new();
    let error = if test.invalid {
        match setup {
            Err(SetupError::Schema(_)) => None,
            Err(SetupError::Other(message)) => Some(format!(
                "constraint should have failed schema validation: got error {message} but want schema validation failed"
            )),
            Ok(_) => Some(
                "constraint should have failed schema validation: got error <nil> but want schema validation failed"
                    .to_owned(),
            ),
        }
    } else {
        match setup {
            Err(error) => Some(error.message().to_owned()),
            Ok(_) if !test.expansion.is_empty() => Some(format!(
                "expansion {:?}: ExpansionTemplates are not supported",
                test.expansion
            )),
            Ok(policy) => {
                for case in &test.cases {
                    if case.skip || !filter.matches_case(&test.name, &case.name) {
                        cases.push(CaseResult {
                            name: case.name.clone(),
                            skipped: true,
                            error: None,
                            runtime: std::time::Duration::ZERO,
                        });
                    } else {
                        cases.push(run_case(&policy, suite_dir, case));
                    }
                }
                None
            }
        }
    };
    TestResult {
        name: test.name.clone(),
        skipped: false,
        error,
        runtime: started.elapsed(),
        cases,
    }
}

/// Compiles the test's template and adds its constraint: a policy set holding exactly that
/// pair, which every case of the test reviews against.
fn set_up(suite_dir: &Path, test: &Test) -> Result<PolicySet, SetupError> {
    let other = SetupError::Other;
    if test.template.is_empty() {
        return Err(other("invalid Suite: missing template".into()));
    }
    let template_path = join_relative(suite_dir, &test.template);
    let document = read_single_object(&template_path, "ConstraintTemplate").map_err(other)?;
    let (group, _) = group_version(&document);
    if group != TEMPLATE_GROUP || kind(&document) != "ConstraintTemplate" {
        return Err(other(format!(
            "path {:?}: not a ConstraintTemplate",
            template_path.display()
        )));
    }
    let mut policy = PolicySet::new();
    Template::from_value(&document)
        .and_then(|template| policy.add_template(template))
        .map_err(|error| other(format!("adding template: {error}")))?;

    if test.constraint.is_empty() {
        return Err(other("invalid Suite: missing constraint".into()));
    }
    let constraint_path = join_relative(suite_dir, &test.constraint);
    let document = read_single_object(&constraint_path, "Constraint").map_err(other)?;
    let (group, _) = group_version(&document);
    if group != CONSTRAINT_GROUP {
        return Err(other("not a Constraint".into()));
    }
    Constraint::from_value(&document)
        .and_then(|constraint| policy.add_constraint(constraint))
        .map_err(|error| {
            let message = error.to_string();
            if error.error_code() == ErrorCode::ConstraintSchema {
                SetupError::Schema(message)
            } else {
                SetupError::Other(message)
            }
        })?;
    Ok(policy)
}

fn run_case(policy: &PolicySet, suite_dir: &Path, case: &Case) -> CaseResult {
    let started = Instant::now();
    let error = check_case(policy, suite_dir, case).err();
    CaseResult {
        name: case.name.clone(),
        skipped: false,
        error,
        runtime: started.elapsed(),
    }
}

fn check_case(policy: &PolicySet, suite_dir: &Path, case: &Case) -> Result<(), String> {
    if case.object.is_empty() {
        return Err("invalid Case: must define object".into());
    }
    if case.assertions.is_empty() {
        return Err("invalid Case: assertions must be non-empty".into());
    }
    let object_path = join_relative(suite_dir, &case.object);
    let mut objects = read_objects(&object_path)?;
    if objects.len() != 1 {
        return Err(format!(
            "object file must contain exactly one object: {:?} defines {} objects",
            object_path.display(),
            objects.len()
        ));
    }
    let object = objects.remove(0);

    let mut inventory = Inventory::default();
    for relative in &case.inventory {
        let path = join_relative(suite_dir, relative);
        for item in read_objects(&path)? {
            inventory.add(&item).map_err(|error| {
                format!(
                    "unable to add object to data.inventory: {}: {error}",
                    describe(&item)
                )
            })?;
        }
    }

    let (group, _) = group_version(&object);
    let review = if kind(&object) == "AdmissionReview" && group == ADMISSION_GROUP {
        admission_review(&object)?
    } else {
        Review::from_object(&object)
            .map_err(|error| format!("reviewing {}: {error}", describe(&object)))?
    };
    // Every case has an inventory (maybe empty): referential templates are evaluated, as
    // gator evaluates them against whatever data.inventory holds.
    let outcome = policy
        .review(&review, Some(&inventory))
        .map_err(|error| format!("reviewing {}: {error}", describe(&object)))?;
    for assertion in &case.assertions {
        check_assertion(assertion, &outcome.violations)?;
    }
    Ok(())
}

/// gator's checks on an AdmissionReview object before it is reviewed.
fn admission_review(document: &Value) -> Result<Review, String> {
    let Some(request) = document.get("request").filter(|request| !request.is_null()) else {
        return Err("missing an AdmissionRequest object: request did not actually pass in an AdmissionRequest".into());
    };
    let present = |field: &str| request.get(field).is_some_and(|value| !value.is_null());
    if !present("object") && !present("oldObject") {
        return Err(
            "no object or oldObject found to review: AdmissionRequest does not contain an \"object\" or \"oldObject\" to review"
                .into(),
        );
    }
    Review::from_admission_review(document)
        .map_err(|error| format!("not a valid AdmissionReview object: {error}"))
}

/// `apps/v1, Kind=Deployment ns/name`, Go's GroupVersionKind and namespace/name as gator
/// prints them in errors.
fn describe(object: &Value) -> String {
    let (group, version) = group_version(object);
    format!(
        "{group}/{version}, Kind={} {}/{}",
        kind(object),
        metadata_str(object, "namespace"),
        metadata_str(object, "name")
    )
}

/// Checks one assertion against all violations of the review. Like gator, the message
/// expression is compiled only when there is a violation to match it against, and the
/// count is checked after.
pub(super) fn check_assertion(
    assertion: &Assertion,
    violations: &[Violation],
) -> Result<(), String> {
    let mut regex: Option<Regex> = None;
    let mut matching: i64 = 0;
    for violation in violations {
        let matches = match &assertion.message {
            None => true,
            Some(expression) => {
                if regex.is_none() {
                    regex = Some(Regex::new(expression).map_err(|error| {
                        format!("message contains invalid regular expression: {error}")
                    })?);
                }
                regex
                    .as_ref()
                    .expect("compiled above")
                    .is_match(&violation.msg)
            }
        };
        matching += i64::from(matches);
    }
    let messages = format!(
        "[{}]",
        violations
            .iter()
            .map(|violation| violation.msg.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let containing = match &assertion.message {
        Some(expression) => format!(" containing {expression:?}"),
        None => String::new(),
    };
    let invalid = r#"invalid yaml: assertion.violation, if set, must be a nonnegative integer, "yes", or "no""#;
    let mismatch = match &assertion.violations {
        Some(Violations::Count(want)) if *want < 0 => Some(invalid.to_owned()),
        Some(Violations::Count(want)) => (matching != *want).then(|| {
            format!("unexpected number of violations: got {matching} violations{containing} but want exactly {want}")
        }),
        None => (matching == 0).then(|| {
            format!("unexpected number of violations: got {matching} violations{containing} but want at least 1")
        }),
        Some(Violations::Text(text)) => match text.as_str() {
            "yes" => (matching == 0).then(|| {
                format!("unexpected number of violations: got {matching} violations{containing} but want at least 1")
            }),
            "no" => (matching > 0).then(|| {
                format!("unexpected number of violations: got {matching} violations{containing} but want none")
            }),
            _ => Some(invalid.to_owned()),
        },
    };
    match mismatch {
        Some(mismatch) => Err(format!("{mismatch}: got messages {messages}")),
        None => Ok(()),
    }
}
