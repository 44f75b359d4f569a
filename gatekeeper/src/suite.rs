//! `gator verify`: runs Gatekeeper Suite files (`kind: Suite`, `test.gatekeeper.sh/v1alpha1`)
//! with gator's semantics and prints Go-test-style results.
//!
//! A Suite lists tests; a test names a ConstraintTemplate and a Constraint (paths relative to
//! the Suite file) and either cases or `invalid: true`. A case names an object file (a plain
//! object, or an `AdmissionReview`), optional inventory files, and assertions
//! (`violations: yes | no | N`, optional `message` regular expression).
//!
//! Gator behaviour reproduced here (from gatekeeper's `pkg/gator/verify` and
//! `pkg/gator/reader`):
//! - `PATH` is a Suite file, a directory (its YAML files), or `DIR/...` (recursive); every
//!   `.yaml`/`.yml` file found is parsed, only the first document counts, and files whose
//!   `apiVersion` group / `kind` are not `test.gatekeeper.sh` / `Suite` are ignored.
//! - Each test compiles its template and constraint once to report errors (`invalid: true`
//!   expects the constraint to fail its schema), then reviews each case's object with only
//!   that constraint and `data.inventory` built from the case's inventory files.
//! - An object file must hold exactly one object (documents split at lines starting `---`).
//! - A case without assertions, or without an object, fails; each assertion counts the
//!   violations whose message matches its `message` expression (all of them without one);
//!   `violations` defaults to `yes`.
//! - `skip: true` on a suite, test or case skips it; `--run` filters tests and cases.
//!
//! Not reproduced: `expansion` (ExpansionTemplates) fails the test with a clear message;
//! `--trace` and the output of Rego `print` calls are not shown.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

mod filter;
mod read;
mod run;

pub use filter::{Filter, InvalidFilter};
pub use read::read_suites;

use crate::Error;

/// A Suite file found on disk.
#[derive(Debug, Clone)]
pub struct SuiteFile {
    pub absolute_path: PathBuf,
    /// The path as the user gave it, plus the part below it: what the report prints.
    pub input_path: String,
    pub suite: Suite,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    pub tests: Vec<Test>,
    pub skip: bool,
}

/// One template and constraint pair with the cases run against it.
#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    pub name: String,
    pub template: String,
    pub constraint: String,
    pub expansion: String,
    pub cases: Vec<Case>,
    /// The constraint is expected to fail schema validation; the cases are not run.
    pub invalid: bool,
    pub skip: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    pub object: String,
    pub inventory: Vec<String>,
    pub assertions: Vec<Assertion>,
    pub skip: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    /// `None` means `yes`.
    pub violations: Option<Violations>,
    /// Regular expression searched in each violation's message.
    pub message: Option<String>,
}

/// Kubernetes IntOrString as gator reads it; validity is checked when the assertion runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violations {
    Count(i64),
    Text(String),
}

#[derive(Debug, Clone)]
pub struct SuiteResult {
    pub path: String,
    pub skipped: bool,
    pub runtime: Duration,
    pub tests: Vec<TestResult>,
}

#[derive(Debug, Clone)]
pub struct TestResult {
    pub name: String,
    pub skipped: bool,
    /// Why the test could not run its cases (or, with `invalid: true`, why the constraint
    /// was not refused as expected).
    pub error: Option<String>,
    pub runtime: Duration,
    pub cases: Vec<CaseResult>,
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub skipped: bool,
    /// Why the case failed: an assertion that does not hold, or an error running it.
    pub error: Option<String>,
    pub runtime: Duration,
}

impl CaseResult {
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

impl TestResult {
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.cases.iter().any(CaseResult::failed)
    }
}

impl SuiteResult {
    pub fn failed(&self) -> bool {
        self.tests.iter().any(TestResult::failed)
    }
}

/// Counts of a run, for summaries and comparisons (skipped items are not counted as run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub suites: usize,
    pub tests: usize,
    pub tests_failed: usize,
    pub cases: usize,
    pub cases_failed: usize,
}

/// The results of every suite selected by the paths, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub suites: Vec<SuiteResult>,
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.suites.iter().any(SuiteResult::failed)
    }

    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for suite in self.suites.iter().filter(|suite| !suite.skipped) {
            counts.suites += 1;
            for test in suite.tests.iter().filter(|test| !test.skipped) {
                counts.tests += 1;
                counts.tests_failed += usize::from(test.failed());
                for case in test.cases.iter().filter(|case| !case.skipped) {
                    counts.cases += 1;
                    counts.cases_failed += usize::from(case.failed());
                }
            }
        }
        counts
    }

    /// Go-test-style text, as gator's `PrinterGo`: failures (everything with `verbose`),
    /// an `ok` or `FAIL` line per suite, and a final `PASS` or `FAIL`.
    pub fn render(&self, verbose: bool) -> String {
        let mut out = String::new();
        for suite in &self.suites {
            for test in &suite.tests {
                render_test(&mut out, test, verbose);
            }
            let status = if suite.failed() { "FAIL" } else { "ok" };
            let _ = writeln!(
                out,
                "{status}\t{}\t{}",
                suite.path,
                go_seconds(suite.runtime)
            );
        }
        out.push_str(if self.passed() { "PASS\n" } else { "FAIL\n" });
        out
    }
}

fn render_test(out: &mut String, test: &TestResult, verbose: bool) {
    if verbose {
        if test.skipped {
            let _ = writeln!(out, "=== SKIP  {}", test.name);
            return;
        }
        let _ = writeln!(out, "=== RUN   {}", test.name);
    }
    for case in &test.cases {
        render_case(out, case, verbose);
    }
    if test.failed() {
        let _ = writeln!(
            out,
            "--- FAIL: {}\t({})",
            test.name,
            go_seconds(test.runtime)
        );
        if let Some(error) = &test.error {
            let _ = writeln!(out, "  {error}");
        }
    } else if verbose {
        let _ = writeln!(
            out,
            "--- PASS: {}\t({})",
            test.name,
            go_seconds(test.runtime)
        );
    }
}

fn render_case(out: &mut String, case: &CaseResult, verbose: bool) {
    if verbose {
        if case.skipped {
            let _ = writeln!(out, "    === SKIP  {}", case.name);
            return;
        }
        let _ = writeln!(out, "    === RUN   {}", case.name);
    }
    if let Some(error) = &case.error {
        let _ = writeln!(
            out,
            "    --- FAIL: {}\t({})\n        {error}",
            case.name,
            go_seconds(case.runtime)
        );
    } else if verbose {
        let _ = writeln!(
            out,
            "    --- PASS: {}\t({})",
            case.name,
            go_seconds(case.runtime)
        );
    }
}

/// gator's duration format: seconds with three decimals (`0.012s`).
fn go_seconds(duration: Duration) -> String {
    format!("{:.3}s", duration.as_secs_f64())
}

/// Reads every suite selected by `paths` (see [`read_suites`]) and runs them in order.
/// Errors are about finding and reading Suite files; everything that goes wrong inside a
/// suite is a failed test or case in the report, as in gator.
pub fn verify(paths: &[String], filter: &Filter) -> Result<Report, Error> {
    let mut files = Vec::new();
    for path in paths {
        files.extend(read_suites(path)?);
    }
    Ok(Report {
        suites: files.iter().map(|file| run_suite(file, filter)).collect(),
    })
}

/// Runs one suite.
pub fn run_suite(file: &SuiteFile, filter: &Filter) -> SuiteResult {
    let started = std::time::Instant::now();
    if file.suite.skip {
        return SuiteResult {
            path: file.input_path.clone(),
            skipped: true,
            runtime: Duration::ZERO,
            tests: Vec::new(),
        };
    }
    let suite_dir = file
        .absolute_path
        .parent()
        .unwrap_or_else(|| Path::new("/"));
    let tests = file
        .suite
        .tests
        .iter()
        .map(|test| {
            if test.skip || !filter.matches_test(test) {
                TestResult {
                    name: test.name.clone(),
                    skipped: true,
                    error: None,
                    runtime: Duration::ZERO,
                    cases: Vec::new(),
                }
            } else {
                run::run_test(suite_dir, filter, test)
            }
        })
        .collect();
    SuiteResult {
        path: file.input_path.clone(),
        skipped: false,
        runtime: started.elapsed(),
        tests,
    }
}
