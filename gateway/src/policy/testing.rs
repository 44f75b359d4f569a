//! `countersign test`: runs Rego unit tests with the semantics of `opa test`.
//!
//! What OPA does, and so what we do (OPA's `tester` package is the reference):
//! - every rule whose head ref has a ground term starting with `test_` is a test, and one
//!   starting with `todo_test_` is reported as skipped without being evaluated;
//! - each rule *definition* is a test of its own: a second `test_x` in the same package is
//!   renamed `test_x#01` before compiling, so two bodies of one test are never merged into one
//!   verdict;
//! - a test passes when its document is exactly `true`, fails when it is undefined or any
//!   other value, and errors on an evaluation error (including its time limit). Builtin
//!   errors are not raised (OPA's default): the expression is undefined and the test fails;
//! - a partial-object test (`test_x[name] if ...`) passes when every value in it is `true`.
//!
//! Tests run on the regorus *interpreter*, which supports `with` (the bytecode VM does not).
//! Each worker thread builds its own engine from the same sources, so tests share no state.

use std::{
    collections::{BTreeMap, BTreeSet},
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use regorus::{
    Engine, Value,
    unstable::{Expr, Rule, RuleHead},
    utils::limits::{ExecutionTimerConfig, PolicyLengthConfig},
};
use serde::Serialize;

use super::{Bundle, Module, PolicyError};

/// OPA's prefixes.
const TEST_PREFIX: &str = "test_";
const SKIP_TEST_PREFIX: &str = "todo_test_";
/// OPA's default per-test timeout.
pub const TEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// How many interpreter steps pass between two looks at the clock.
const TIMER_CHECK_INTERVAL_STEPS: u32 = 64;
/// A test source tree bigger than this is refused (same spirit as the bundle limits).
const TEST_FILES_MAX: usize = 20_000;
/// regorus refuses lines over 1,024 columns by default; OPA has no such limit and test
/// fixtures often hold long literals, so tests get generous (still finite) bounds.
const TEST_SOURCE_COLUMNS_MAX: u32 = 1 << 20;
const TEST_SOURCE_BYTES_MAX: usize = 64 * 1024 * 1024;
const TEST_SOURCE_LINES_MAX: usize = 1 << 20;

fn new_engine() -> Engine {
    let mut engine = Engine::new();
    engine.set_policy_length_config(PolicyLengthConfig {
        max_col: NonZeroU32::new(TEST_SOURCE_COLUMNS_MAX).expect("non-zero"),
        max_file_bytes: std::num::NonZeroUsize::new(TEST_SOURCE_BYTES_MAX).expect("non-zero"),
        max_lines: std::num::NonZeroUsize::new(TEST_SOURCE_LINES_MAX).expect("non-zero"),
    });
    engine
}

/// Everything a test run needs: modules (their `path` is the file name shown in reports)
/// and the data document.
#[derive(Debug, Clone)]
pub struct TestSuite {
    pub modules: Vec<Module>,
    pub data: serde_json::Value,
}

/// How paths are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// `-b`: every path is a bundle (directory), read with [`Bundle::load`].
    pub bundle_mode: bool,
    /// `--v0-compatible`: parse every module as Rego v0.
    pub v0_compatible: bool,
}

impl TestSuite {
    /// A bundle already in memory; module paths stay relative to the bundle root.
    pub fn from_bundle(bundle: &Bundle) -> TestSuite {
        TestSuite {
            modules: bundle.modules.clone(),
            data: bundle.data.clone(),
        }
    }

    /// Reads paths the way `opa test PATH...` does.
    ///
    /// With `-b` every path is a bundle (directory or `.tar.gz`) read by [`Bundle::load_with`],
    /// the loader `serve` and `eval` use: only `data.json`/`data.yaml` are data, the manifest
    /// sets the Rego version and roots. Without `-b`, OPA uses its plain file loader instead,
    /// and so do we: every `.rego` file is a module and *every* `.json`/`.yaml`/`.yml` file is
    /// a document mounted at its directory below the path given (a file given directly is
    /// mounted at the root). Module names are the paths as given, joined, as OPA reports them.
    pub fn load(paths: &[PathBuf], options: LoadOptions) -> Result<TestSuite, PolicyError> {
        let mut suite = TestSuite {
            modules: Vec::new(),
            data: serde_json::Value::Object(Default::default()),
        };
        for path in paths {
            if options.bundle_mode {
                let bundle = Bundle::load_with(
                    path,
                    &super::bundle::LoadOptions {
                        v0_compatible: options.v0_compatible,
                        ..Default::default()
                    },
                )?;
                for mut module in bundle.modules {
                    module.path = join_display(path, &module.path);
                    suite.modules.push(module);
                }
                merge_documents(&mut suite.data, bundle.data).map_err(|message| {
                    PolicyError::Read {
                        path: path.clone(),
                        message,
                    }
                })?;
            } else {
                let mut files_seen = 0;
                suite.load_file_tree(path, &[], options, &mut files_seen)?;
            }
        }
        Ok(suite)
    }

    /// OPA's file loader: recurse, mounting documents at the directories below the root.
    fn load_file_tree(
        &mut self,
        path: &Path,
        data_path: &[String],
        options: LoadOptions,
        files_seen: &mut usize,
    ) -> Result<(), PolicyError> {
        let read_error = |message: String| PolicyError::Read {
            path: path.to_owned(),
            message,
        };
        let metadata = std::fs::metadata(path).map_err(|error| read_error(error.to_string()))?;
        if metadata.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|error| read_error(error.to_string()))?
                .map(|entry| entry.map(|entry| entry.path()))
                .collect::<Result<_, _>>()
                .map_err(|error| read_error(error.to_string()))?;
            entries.sort();
            for entry in entries {
                let mut below = data_path.to_vec();
                if entry.is_dir() {
                    below.push(
                        entry
                            .file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into(),
                    );
                }
                self.load_file_tree(&entry, &below, options, files_seen)?;
            }
            return Ok(());
        }
        let name = path.to_string_lossy().replace('\\', "/");
        let name = name.strip_prefix("./").unwrap_or(&name).to_owned();
        let is_rego = name.ends_with(".rego");
        let is_json = name.ends_with(".json");
        let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if !(is_rego || is_json || is_yaml) {
            return Ok(());
        }
        *files_seen += 1;
        if *files_seen > TEST_FILES_MAX {
            return Err(PolicyError::TooLarge(format!(
                "more than {TEST_FILES_MAX} files"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|error| read_error(error.to_string()))?;
        if is_rego {
            self.modules.push(Module {
                path: name,
                source: text,
                rego_v1: !options.v0_compatible,
            });
            return Ok(());
        }
        let document: serde_json::Value = if is_json {
            serde_json::from_str(&text).map_err(|error| {
                read_error(format!(
                    "{name}:{}:{}: {error}",
                    error.line(),
                    error.column()
                ))
            })?
        } else {
            serde_norway::from_str(&text).map_err(|error| read_error(format!("{name}: {error}")))?
        };
        let mut mounted = document;
        for segment in data_path.iter().rev() {
            let mut object = serde_json::Map::new();
            object.insert(segment.clone(), mounted);
            mounted = serde_json::Value::Object(object);
        }
        merge_documents(&mut self.data, mounted).map_err(read_error)
    }
}

/// `policies/` + `a/b.rego` → `policies/a/b.rego`, like Go's `filepath.Join` (cleaned).
fn join_display(root: &Path, relative: &str) -> String {
    let root = root.to_string_lossy().replace('\\', "/");
    let root = root.trim_end_matches('/');
    let joined = if root.is_empty() || root == "." {
        relative.to_owned()
    } else {
        format!("{root}/{relative}")
    };
    joined.strip_prefix("./").unwrap_or(&joined).to_owned()
}

/// Deep merge; a key defined twice with different non-object values is a load error, as
/// in OPA.
fn merge_documents(
    target: &mut serde_json::Value,
    source: serde_json::Value,
) -> Result<(), String> {
    match (target, source) {
        (serde_json::Value::Object(target), serde_json::Value::Object(source)) => {
            for (key, value) in source {
                match target.get_mut(&key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge_documents(existing, value)?;
                    }
                    Some(_) => return Err(format!("merge error: data key `{key}` defined twice")),
                    None => {
                        target.insert(key, value);
                    }
                }
            }
            Ok(())
        }
        _ => Err("a data document must be a JSON object".to_owned()),
    }
}

/// How tests are run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `-r`: only tests whose full name (`data.pkg.test_x`) matches.
    pub filter: Option<regex::Regex>,
    /// Per test, as `opa test --timeout`.
    pub timeout: Duration,
    /// `-c`: gather line coverage.
    pub coverage: bool,
    /// Worker threads; at least one.
    pub workers: usize,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            filter: None,
            timeout: TEST_TIMEOUT_DEFAULT,
            coverage: false,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// Where a test rule starts; serialized like OPA's `ast.Location`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub row: u32,
    pub col: u32,
}

/// An evaluation error, serialized like OPA's `topdown.Error` (`code`, `message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestError {
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

impl TestError {
    /// regorus reports `--> file:row:col`, a source excerpt and `error: message`; OPA prints
    /// one line, `file:row: code: message`.
    fn from_regorus(message: &str) -> TestError {
        let code = if message.contains("exceeded time limit") {
            "eval_cancel_error"
        } else if message.contains("conflicts with rule") {
            "eval_conflict_error"
        } else {
            "eval_error"
        };
        let location = message.lines().find_map(|line| {
            let position = line.trim().strip_prefix("--> ")?;
            let mut parts = position.rsplitn(3, ':');
            let col = parts.next()?.parse().ok()?;
            let row = parts.next()?.parse().ok()?;
            let file = parts.next()?.to_owned();
            Some(Location { file, row, col })
        });
        let text = message
            .lines()
            .rev()
            .find_map(|line| line.trim().strip_prefix("error: "))
            .unwrap_or(message.trim());
        TestError {
            code,
            message: text.to_owned(),
            location,
        }
    }
}

impl std::fmt::Display for TestError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(location) = &self.location {
            write!(formatter, "{}:{}: ", location.file, location.row)?;
        }
        write!(formatter, "{}: {}", self.code, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Skip,
    Error(TestError),
}

/// One case of a partial-object test (`test_x[name] if ...`), as OPA's sub-results.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubResult {
    pub fail: bool,
    pub children: BTreeMap<String, SubResult>,
}

/// The result of one test rule.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub location: Location,
    /// `data.pkg`, as OPA prints a package path.
    pub package: String,
    /// The rule ref below the package, e.g. `test_x` or `test_x#01`.
    pub name: String,
    pub duration: Duration,
    pub verdict: Verdict,
    pub sub_results: BTreeMap<String, SubResult>,
    /// What `print()` wrote during the test, one message a line.
    pub output: String,
}

impl TestResult {
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.package, self.name)
    }

    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }
}

/// Line coverage of one file, from regorus's coverage report.
#[derive(Debug, Clone, Default)]
pub struct FileCoverage {
    pub covered: BTreeSet<u32>,
    pub not_covered: BTreeSet<u32>,
}

#[derive(Debug)]
pub struct TestRun {
    /// In file order, then in the order the rules appear in their file.
    pub results: Vec<TestResult>,
    /// Present when [`RunOptions::coverage`] was set.
    pub coverage: Option<BTreeMap<String, FileCoverage>>,
}

/// A test found in the sources.
#[derive(Debug, Clone)]
struct TestCase {
    location: Location,
    package: String,
    name: String,
    /// The path handed to the interpreter (duplicates carry their rewritten name).
    query: String,
    skip: bool,
    partial_object: bool,
}

/// One term of a rule head ref.
enum HeadTerm {
    Name {
        text: String,
        span_start: u32,
        span_end: u32,
        quoted: bool,
    },
    NonGround,
}

fn head_terms(expr: &Expr, out: &mut Vec<HeadTerm>) {
    match expr {
        Expr::Var { span, value, .. } => out.push(match value.as_string() {
            Ok(text) => HeadTerm::Name {
                text: text.to_string(),
                span_start: span.start,
                span_end: span.end,
                quoted: false,
            },
            Err(_) => HeadTerm::NonGround,
        }),
        Expr::RefDot { refr, field, .. } => {
            head_terms(refr, out);
            out.push(match field.1.as_string() {
                Ok(text) => HeadTerm::Name {
                    text: text.to_string(),
                    span_start: field.0.start,
                    span_end: field.0.end,
                    quoted: false,
                },
                Err(_) => HeadTerm::NonGround,
            });
        }
        Expr::RefBrack { refr, index, .. } => {
            head_terms(refr, out);
            out.push(match index.as_ref() {
                Expr::String { span, value, .. } | Expr::RawString { span, value, .. } => {
                    match value.as_string() {
                        Ok(text) => HeadTerm::Name {
                            text: text.to_string(),
                            span_start: span.start,
                            span_end: span.end,
                            quoted: true,
                        },
                        Err(_) => HeadTerm::NonGround,
                    }
                }
                _ => HeadTerm::NonGround,
            });
        }
        _ => out.push(HeadTerm::NonGround),
    }
}

/// Whether `text` prints as `.text` in an OPA ref (a var-compatible string).
fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(
            text,
            "as" | "default"
                | "else"
                | "false"
                | "import"
                | "not"
                | "null"
                | "package"
                | "some"
                | "true"
                | "with"
                | "if"
                | "in"
                | "every"
                | "contains"
        )
}

/// Appends one ref term the way OPA's `Ref.String()` prints it.
fn push_ref_term(out: &mut String, text: &str) {
    if is_identifier(text) {
        out.push('.');
        out.push_str(text);
    } else {
        out.push('[');
        out.push_str(&serde_json::Value::String(text.to_owned()).to_string());
        out.push(']');
    }
}

/// A rule ref below its package, as OPA prints it: `test_x`, `p.test_x`, `p["test-x"]`.
fn render_ref(terms: &[&str]) -> String {
    let mut out = String::new();
    for (index, text) in terms.iter().enumerate() {
        if index == 0 {
            out.push_str(text);
        } else {
            push_ref_term(&mut out, text);
        }
    }
    out
}

/// Finds the tests of every module and renames duplicate test definitions (`test_x#01`),
/// returning the rewritten modules.
fn discover(modules: &[Module]) -> Result<(Vec<Module>, Vec<TestCase>), PolicyError> {
    // Sorted by file name: OPA numbers duplicates in module order, and reports by file.
    let mut modules: Vec<Module> = modules.to_vec();
    modules.sort_by(|a, b| a.path.cmp(&b.path));
    let mut parser = new_engine();
    for module in &modules {
        parser.set_rego_v0(!module.rego_v1);
        parser
            .add_policy(module.path.clone(), module.source.clone())
            .map_err(|error| PolicyError::Compile(error.to_string()))?;
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut tests = Vec::new();
    let mut rewritten = Vec::with_capacity(modules.len());
    let parsed = parser.get_modules().clone();
    for (module, parsed) in modules.iter().zip(parsed.iter()) {
        let mut package_terms = Vec::new();
        head_terms(&parsed.package.refr, &mut package_terms);
        let mut package = String::from("data");
        for term in &package_terms {
            if let HeadTerm::Name { text, .. } = term {
                push_ref_term(&mut package, text);
            }
        }
        // (start, end, replacement) edits to the source, applied back to front.
        let mut edits: Vec<(usize, usize, String)> = Vec::new();
        for rule in &parsed.policy {
            let (refr, partial_object_head) = match rule.as_ref() {
                Rule::Spec { head, .. } => match head {
                    RuleHead::Compr { refr, .. } => (refr, true),
                    RuleHead::Set { refr, .. } | RuleHead::Func { refr, .. } => (refr, false),
                },
                Rule::Default { refr, .. } => (refr, false),
            };
            let mut terms = Vec::new();
            head_terms(refr, &mut terms);
            let non_ground_tail = matches!(terms.last(), Some(HeadTerm::NonGround));
            // The ground prefix of the head ref up to the first `test_`/`todo_test_` term.
            let mut texts: Vec<&str> = Vec::new();
            let mut found = None;
            for (index, term) in terms.iter().enumerate() {
                let HeadTerm::Name { text, .. } = term else {
                    break;
                };
                texts.push(text);
                if text.starts_with(TEST_PREFIX) || text.starts_with(SKIP_TEST_PREFIX) {
                    found = Some(index);
                    break;
                }
            }
            let Some(found) = found else { continue };
            let HeadTerm::Name {
                text,
                span_start,
                span_end,
                quoted,
            } = &terms[found]
            else {
                unreachable!("found points at a name");
            };
            let skip = text.starts_with(SKIP_TEST_PREFIX);
            let span = rule.span();
            let name = render_ref(&texts);
            let key = format!("{package}.{name}");
            let mut reported_name = name.clone();
            let mut query = key.clone();
            if !skip {
                let count = seen.entry(key.clone()).or_insert(0);
                if *count > 0 {
                    // OPA renames the later definitions `test_x#01`, `#02`, …; `#` cannot
                    // appear in a Rego identifier, so the source gets a private spelling
                    // and the report shows OPA's.
                    let suffix = format!("{:02}", *count);
                    let private = format!("{text}__countersign_duplicate_{suffix}");
                    let replacement = if *quoted {
                        serde_json::Value::String(private.clone()).to_string()
                    } else {
                        private.clone()
                    };
                    edits.push((*span_start as usize, *span_end as usize, replacement));
                    let reported_last = format!("{text}#{suffix}");
                    let mut reported_terms = texts.clone();
                    reported_terms[found] = &reported_last;
                    reported_name = render_ref(&reported_terms);
                    let mut query_terms = texts.clone();
                    query_terms[found] = &private;
                    query = format!("{package}.{}", render_ref(&query_terms));
                }
                *count += 1;
            }
            tests.push(TestCase {
                location: Location {
                    file: module.path.clone(),
                    row: span.line,
                    col: span.col,
                },
                package: package.clone(),
                name: reported_name,
                query,
                skip,
                partial_object: partial_object_head && non_ground_tail && found + 1 < terms.len(),
            });
        }
        let mut source = module.source.clone();
        edits.sort_by_key(|edit| std::cmp::Reverse(edit.0));
        for (start, end, replacement) in edits {
            source.replace_range(start..end, &replacement);
        }
        rewritten.push(Module {
            path: module.path.clone(),
            source,
            rego_v1: module.rego_v1,
        });
    }
    Ok((rewritten, tests))
}

/// A fresh interpreter with every module (tests included) and the data, set up like
/// `opa test` evaluates: builtin errors make an expression undefined, prints are captured.
fn test_engine(
    modules: &[Module],
    data: &Value,
    options: &RunOptions,
) -> Result<Engine, PolicyError> {
    let mut engine = new_engine();
    for module in modules {
        engine.set_rego_v0(!module.rego_v1);
        engine
            .add_policy(module.path.clone(), module.source.clone())
            .map_err(|error| PolicyError::Compile(error.to_string()))?;
    }
    engine
        .add_data(data.clone())
        .map_err(|error| PolicyError::Compile(error.to_string()))?;
    engine.set_strict_builtin_errors(false);
    engine.set_gather_prints(true);
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: options.timeout,
        check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL_STEPS).expect("non-zero"),
    });
    if options.coverage {
        engine.set_enable_coverage(true);
    }
    Ok(engine)
}

/// Loads, discovers and runs the tests of `suite`. A compile error is an `Err` (exit 1 in the
/// CLI); test failures and errors are results.
pub fn run_tests(suite: &TestSuite, options: &RunOptions) -> Result<TestRun, PolicyError> {
    let (modules, tests) = discover(&suite.modules)?;
    let tests: Vec<TestCase> = tests
        .into_iter()
        .filter(|test| {
            options
                .filter
                .as_ref()
                .is_none_or(|filter| filter.is_match(&format!("{}.{}", test.package, test.name)))
        })
        .collect();
    let data = Value::from(suite.data.clone());
    // Compile once up front so a broken module is reported as a load error, not once per test.
    let mut probe = test_engine(&modules, &data, options)?;
    if let Some(test) = tests.iter().find(|test| !test.skip) {
        // regorus resolves rules lazily; a first evaluation surfaces compile errors such as
        // unknown functions or conflicting rules before the workers start.
        if let Err(error) = probe.eval_rule(test.query.clone()) {
            let message = error.to_string();
            if is_compile_error(&message) {
                return Err(PolicyError::Compile(message));
            }
        }
    }
    drop(probe);

    let workers = options.workers.clamp(1, tests.len().max(1));
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<TestResult>>> = Mutex::new(vec![None; tests.len()]);
    let coverage: Mutex<BTreeMap<String, FileCoverage>> = Mutex::new(BTreeMap::new());
    let setup_error: Mutex<Option<PolicyError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut engine = match test_engine(&modules, &data, options) {
                    Ok(engine) => engine,
                    Err(error) => {
                        *setup_error.lock().expect("lock") = Some(error);
                        return;
                    }
                };
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(test) = tests.get(index) else { break };
                    let result = run_one(&mut engine, test, &modules);
                    slots.lock().expect("lock")[index] = Some(result);
                }
                if options.coverage
                    && let Ok(report) = engine.get_coverage_report()
                {
                    let mut coverage = coverage.lock().expect("lock");
                    for file in report.files {
                        let entry = coverage.entry(file.path).or_default();
                        entry.covered.extend(file.covered);
                        entry.not_covered.extend(file.not_covered);
                    }
                }
            });
        }
    });
    if let Some(error) = setup_error.into_inner().expect("lock") {
        return Err(error);
    }
    let results = slots
        .into_inner()
        .expect("lock")
        .into_iter()
        .map(|slot| slot.expect("every test ran"))
        .collect();
    let coverage = options.coverage.then(|| {
        let mut coverage = coverage.into_inner().expect("lock");
        for file in coverage.values_mut() {
            // A line one worker covered is covered, whatever the others saw.
            let covered = file.covered.clone();
            file.not_covered.retain(|line| !covered.contains(line));
        }
        coverage
    });
    Ok(TestRun { results, coverage })
}

/// regorus reports some compile-time problems only when a rule is first evaluated.
fn is_compile_error(message: &str) -> bool {
    message.contains("could not find function") || message.contains("unknown function")
}

fn run_one(engine: &mut Engine, test: &TestCase, modules: &[Module]) -> TestResult {
    let mut result = TestResult {
        location: test.location.clone(),
        package: test.package.clone(),
        name: test.name.clone(),
        duration: Duration::ZERO,
        verdict: Verdict::Skip,
        sub_results: BTreeMap::new(),
        output: String::new(),
    };
    if test.skip {
        return result;
    }
    let started = Instant::now();
    let evaluated = engine.eval_rule(test.query.clone());
    result.duration = started.elapsed();
    result.verdict = match evaluated {
        Ok(Value::Bool(true)) => Verdict::Pass,
        Ok(Value::Object(_)) if test.partial_object => {
            let value = evaluated_json(&evaluated);
            let (fail, children) = sub_results(&value);
            result.sub_results = children;
            if fail { Verdict::Fail } else { Verdict::Pass }
        }
        Ok(_) => Verdict::Fail,
        Err(error) => Verdict::Error(TestError::from_regorus(&error.to_string())),
    };
    if let Ok(prints) = engine.take_prints() {
        for line in prints {
            result.output.push_str(strip_print_location(&line, modules));
            result.output.push('\n');
        }
    }
    result
}

fn evaluated_json(evaluated: &Result<Value, anyhow::Error>) -> serde_json::Value {
    match evaluated {
        Ok(value) => serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::Null,
    }
}

/// OPA's sub-results: a case fails unless its value is `true` (or, nested, all of it is).
fn sub_results(value: &serde_json::Value) -> (bool, BTreeMap<String, SubResult>) {
    let mut fail = false;
    let mut children = BTreeMap::new();
    if let serde_json::Value::Object(object) = value {
        for (key, value) in object {
            let child = match value {
                serde_json::Value::Object(_) => {
                    let (fail, children) = sub_results(value);
                    SubResult { fail, children }
                }
                serde_json::Value::Bool(passed) => SubResult {
                    fail: !passed,
                    children: BTreeMap::new(),
                },
                _ => SubResult {
                    fail: true,
                    children: BTreeMap::new(),
                },
            };
            fail |= child.fail;
            children.insert(key.clone(), child);
        }
    }
    (fail, children)
}

/// regorus prefixes gathered prints with `file:line: `; OPA's test output is the bare message.
fn strip_print_location<'a>(line: &'a str, modules: &[Module]) -> &'a str {
    for module in modules {
        if let Some(rest) = line.strip_prefix(module.path.as_str())
            && let Some(rest) = rest.strip_prefix(':')
            && let Some((row, message)) = rest.split_once(": ")
            && row.chars().all(|c| c.is_ascii_digit())
        {
            return message;
        }
    }
    line
}

/// Summary of one test for callers that only need a verdict (hot reload refuses a bundle
/// whose own tests fail).
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    /// Full rule path, e.g. `data.countersign.transfer_test.test_allows`.
    pub name: String,
    /// Passed, or skipped (`todo_test_*`): nothing failed.
    pub passed: bool,
    pub error: Option<String>,
}

/// Runs a bundle's tests with the `opa test` semantics and default options.
pub fn run_bundle_tests(bundle: &Bundle) -> Result<Vec<TestOutcome>, PolicyError> {
    let run = run_tests(&TestSuite::from_bundle(bundle), &RunOptions::default())?;
    Ok(run
        .results
        .into_iter()
        .map(|result| TestOutcome {
            name: result.full_name(),
            passed: matches!(result.verdict, Verdict::Pass | Verdict::Skip),
            error: match result.verdict {
                Verdict::Error(error) => Some(error.to_string()),
                Verdict::Fail => Some("undefined or not true".to_owned()),
                Verdict::Pass | Verdict::Skip => None,
            },
        })
        .collect())
}

/// Go's `time.Duration.String()`, which `opa test` prints: `426ns`, `1.417µs`, `1.2ms`,
/// `2.5s`, `1m30s`.
pub fn go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let fraction = |value: u128, unit: u128, suffix: &str| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            format!("{whole}{suffix}")
        } else {
            let digits = unit.to_string().len() - 1;
            let rest = format!("{rest:0digits$}");
            format!("{whole}.{}{suffix}", rest.trim_end_matches('0'))
        }
    };
    if nanos < 1_000 {
        format!("{nanos}ns")
    } else if nanos < 1_000_000 {
        fraction(nanos, 1_000, "µs")
    } else if nanos < 1_000_000_000 {
        fraction(nanos, 1_000_000, "ms")
    } else {
        let total_seconds = nanos / 1_000_000_000;
        let hours = total_seconds / 3600;
        let minutes = (total_seconds % 3600) / 60;
        let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000, "s");
        match (hours, minutes) {
            (0, 0) => seconds,
            (0, minutes) => format!("{minutes}m{seconds}"),
            (hours, minutes) => format!("{hours}h{minutes}m{seconds}"),
        }
    }
}

/// Parses a Go duration as `opa test --timeout` takes it: `500ms`, `5s`, `1m30s`, `1.5s`.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?}");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total_nanos = 0_f64;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        if number_len == 0 {
            return Err(invalid());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        total_nanos += number * unit_nanos;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_nanos(total_nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (nanos, expected) in [
            (0, "0s"),
            (426, "426ns"),
            (1_417, "1.417µs"),
            (1_200_000, "1.2ms"),
            (1_234_567, "1.234567ms"),
            (2_500_000_000, "2.5s"),
            (90_000_000_000, "1m30s"),
        ] {
            assert_eq!(go_duration(Duration::from_nanos(nanos)), expected);
        }
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_go_duration("5").is_err());
    }

    fn suite(files: &[(&str, &str)]) -> TestSuite {
        TestSuite {
            modules: files
                .iter()
                .map(|(path, source)| Module::v1(*path, *source))
                .collect(),
            data: serde_json::json!({}),
        }
    }

    fn verdicts(suite: &TestSuite) -> Vec<(String, Verdict)> {
        run_tests(suite, &RunOptions::default())
            .unwrap()
            .results
            .into_iter()
            .map(|result| (result.full_name(), result.verdict))
            .collect()
    }

    #[test]
    fn every_definition_of_a_test_is_its_own_test() {
        let results = verdicts(&suite(&[(
            "a_test.rego",
            "package a\n\ntest_x if { true }\n\ntest_x if { false }\n\ntodo_test_y if { false }\n",
        )]));
        assert_eq!(
            results,
            [
                ("data.a.test_x".to_owned(), Verdict::Pass),
                ("data.a.test_x#01".to_owned(), Verdict::Fail),
                ("data.a.todo_test_y".to_owned(), Verdict::Skip),
            ]
        );
    }

    #[test]
    fn only_exactly_true_passes_and_builtin_errors_are_undefined() {
        let results = verdicts(&suite(&[(
            "b_test.rego",
            "package b\n\ntest_one := 1\n\ntest_undefined if { input.missing }\n\ntest_builtin if { to_number(\"x\") == 1 }\n",
        )]));
        assert_eq!(results[0].1, Verdict::Fail);
        assert_eq!(results[1].1, Verdict::Fail);
        assert_eq!(results[2].1, Verdict::Fail, "{results:?}");
    }
}
