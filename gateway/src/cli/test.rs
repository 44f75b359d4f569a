//! `countersign test [PATH...]`: `opa test` with its flags, output and exit codes.
//!
//! Exit codes as OPA's: 0 when every test passed, 2 when a test failed or errored (or was
//! skipped, unless `-z`), 1 when the files could not be loaded or compiled.

use std::{io::Write, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::policy::testing::{
    FileCoverage, LoadOptions, RunOptions, SubResult, TEST_TIMEOUT_DEFAULT, TestResult, TestRun,
    TestSuite, Verdict, go_duration, parse_go_duration, run_tests,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Pretty,
    Json,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Rego files, data files (.json/.yaml) or directories, as for `opa test`.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print every test with its duration, grouped by file.
    #[arg(short, long)]
    pub verbose: bool,
    /// Only run tests whose full name (`data.pkg.test_x`) matches this regular expression.
    #[arg(short = 'r', long = "run", value_name = "REGEX")]
    pub run: Option<String>,
    #[arg(long, value_enum, default_value = "pretty")]
    pub format: OutputFormat,
    /// Report line coverage as JSON instead of the test report.
    #[arg(short, long)]
    pub coverage: bool,
    /// Fail (exit 2) when coverage is below this percentage; implies --coverage.
    #[arg(long, default_value_t = 0.0)]
    pub threshold: f64,
    /// Time limit per test, as a Go duration (`500ms`, `5s`, `1m`); default 5s.
    #[arg(long, value_parser = parse_go_duration)]
    pub timeout: Option<Duration>,
    /// Parse every module as Rego v0.
    #[arg(long)]
    pub v0_compatible: bool,
    /// Treat every path as a bundle.
    #[arg(short, long)]
    pub bundle: bool,
    /// Exit 1 when no test ran.
    #[arg(long)]
    pub fail_on_empty: bool,
    /// Skipped tests do not make the exit code non-zero.
    #[arg(short = 'z', long)]
    pub exit_zero_on_skipped: bool,
}

pub fn run(args: TestArgs) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let code = run_to(args, &mut out, &mut std::io::stderr());
    let _ = out.flush();
    ExitCode::from(code)
}

fn run_to(args: TestArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    if !(0.0..=100.0).contains(&args.threshold) {
        let _ = writeln!(err, "Code coverage threshold must be between 0 and 100");
        return 1;
    }
    let coverage = args.coverage || args.threshold > 0.0;
    let filter = match args.run.as_deref().map(regex::Regex::new).transpose() {
        Ok(filter) => filter,
        Err(error) => {
            let _ = writeln!(err, "{error}");
            return 1;
        }
    };
    let suite = match TestSuite::load(
        &args.paths,
        LoadOptions {
            bundle_mode: args.bundle,
            v0_compatible: args.v0_compatible,
        },
    ) {
        Ok(suite) => suite,
        Err(error) => {
            let _ = writeln!(err, "{error}");
            return 1;
        }
    };
    let options = RunOptions {
        filter,
        timeout: args
            .timeout
            .filter(|timeout| !timeout.is_zero())
            .unwrap_or(TEST_TIMEOUT_DEFAULT),
        coverage,
        ..RunOptions::default()
    };
    let run = match run_tests(&suite, &options) {
        Ok(run) => run,
        Err(error) => {
            let _ = writeln!(err, "{error}");
            return 1;
        }
    };
    let mut exit_code = 0;
    for result in &run.results {
        let tolerated_skip = result.verdict == Verdict::Skip && args.exit_zero_on_skipped;
        if !(result.passed() || tolerated_skip) {
            exit_code = 2;
        }
    }
    if coverage {
        // As OPA: the coverage report replaces the test report; a test that did not pass is
        // an error of the command.
        if let Some(result) = run.results.iter().find(|result| !result.passed()) {
            let _ = writeln!(err, "{}", one_line(result));
            return 1;
        }
        let report = coverage_report(&run);
        if report.coverage < args.threshold {
            let _ = writeln!(
                err,
                "Code coverage threshold not met: got {:.2} instead of {:.2}",
                report.coverage, args.threshold
            );
            return 2;
        }
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        );
    } else {
        match args.format {
            OutputFormat::Pretty => {
                let _ = out.write_all(pretty_report(&run.results, args.verbose).as_bytes());
            }
            OutputFormat::Json => {
                let _ = writeln!(out, "{}", json_report(&run.results));
            }
        }
    }
    if run.results.is_empty() && args.fail_on_empty {
        let _ = writeln!(err, "no tests were run");
        return 1;
    }
    exit_code
}

fn outcome(result: &TestResult) -> &'static str {
    match result.verdict {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Skip => "SKIPPED",
        Verdict::Error(_) => "ERROR",
    }
}

/// `data.pkg.test_x: PASS (1.2ms)`; skipped tests have no duration.
fn one_line(result: &TestResult) -> String {
    match result.verdict {
        Verdict::Skip => format!("{}: {}", result.full_name(), outcome(result)),
        _ => format!(
            "{}: {} ({})",
            result.full_name(),
            outcome(result),
            go_duration(result.duration)
        ),
    }
}

/// Depth-first, keys sorted: OPA's sub-result iteration.
fn walk_sub_results<'a>(
    children: &'a std::collections::BTreeMap<String, SubResult>,
    depth: usize,
    visit: &mut dyn FnMut(usize, &'a str, &'a SubResult),
) {
    for (name, child) in children {
        visit(depth, name, child);
        walk_sub_results(&child.children, depth + 1, visit);
    }
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|line| format!("{pad}{line}\n"))
        .collect::<String>()
}

/// OPA's pretty reporter. Without `-v` only tests that did not pass are listed; with `-v`
/// a FAILURES section comes first and every test is listed under SUMMARY. Tests are grouped
/// by file with a blank line between files. (OPA prints an evaluation trace under each
/// failure with `-v`; regorus records no trace, so that part is empty.)
pub fn pretty_report(results: &[TestResult], verbose: bool) -> String {
    let rule = "-".repeat(80);
    let (mut pass, mut fail, mut skip, mut errors) = (0, 0, 0, 0);
    for result in results {
        match result.verdict {
            Verdict::Skip => skip += 1,
            Verdict::Error(_) => errors += 1,
            _ if !result.sub_results.is_empty() => {
                walk_sub_results(&result.sub_results, 0, &mut |_, _, sub| {
                    if sub.children.is_empty() {
                        if sub.fail {
                            fail += 1;
                        } else {
                            pass += 1;
                        }
                    }
                });
            }
            Verdict::Pass => pass += 1,
            Verdict::Fail => fail += 1,
        }
    }
    let mut out = String::new();
    let mut dirty = false;
    if fail > 0 && verbose {
        out.push_str("FAILURES\n");
        out.push_str(&rule);
        out.push('\n');
        for failure in results.iter().filter(|r| r.verdict == Verdict::Fail) {
            out.push_str(&one_line(failure));
            out.push_str("\n\n");
            if !failure.sub_results.is_empty() {
                out.push('\n');
                walk_sub_results(&failure.sub_results, 0, &mut |depth, name, sub| {
                    if sub.fail && sub.children.is_empty() {
                        out.push_str(&format!("{}{name}: FAIL\n", "  ".repeat(depth + 1)));
                    }
                });
            }
            out.push('\n');
        }
        out.push_str("SUMMARY\n");
        out.push_str(&rule);
        out.push('\n');
    }
    let mut last_file: Option<&str> = None;
    for result in results {
        if verbose || !result.passed() {
            if last_file != Some(result.location.file.as_str()) {
                if last_file.is_some() {
                    out.push('\n');
                }
                out.push_str(&result.location.file);
                out.push_str(":\n");
                last_file = Some(&result.location.file);
            }
            dirty = true;
            out.push_str(&one_line(result));
            out.push('\n');
            walk_sub_results(&result.sub_results, 0, &mut |depth, name, sub| {
                if sub.fail || verbose {
                    let verdict = if sub.fail { "FAIL" } else { "PASS" };
                    out.push_str(&format!("{}{name}: {verdict}\n", "  ".repeat(depth + 1)));
                }
            });
            if !result.output.is_empty() {
                out.push('\n');
                out.push_str(&indent(result.output.trim(), 2));
                out.push('\n');
            }
        }
        if let Verdict::Error(error) = &result.verdict {
            out.push_str(&format!("  {error}\n"));
        }
    }
    if dirty {
        out.push_str(&rule);
        out.push('\n');
    }
    let total = pass + fail + skip + errors;
    for (label, count) in [
        ("PASS", pass),
        ("FAIL", fail),
        ("SKIPPED", skip),
        ("ERROR", errors),
    ] {
        if count != 0 {
            out.push_str(&format!("{label}: {count}/{total}\n"));
        }
    }
    out
}

/// One element of OPA's JSON test report, fields in OPA's order.
#[derive(Serialize)]
struct JsonResult<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a crate::policy::testing::TestError>,
    location: &'a crate::policy::testing::Location,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_results: Option<serde_json::Value>,
    package: &'a str,
    name: &'a str,
    /// Go marshals `[]byte` as base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    /// Nanoseconds, as Go's `time.Duration`.
    duration: u128,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    fail: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    skip: bool,
}

fn sub_results_json(children: &std::collections::BTreeMap<String, SubResult>) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for (name, sub) in children {
        let mut entry = serde_json::Map::new();
        if !sub.children.is_empty() {
            entry.insert("sub_results".into(), sub_results_json(&sub.children));
        }
        entry.insert("name".into(), name.clone().into());
        if sub.fail {
            entry.insert("fail".into(), true.into());
        }
        object.insert(name.clone(), entry.into());
    }
    object.into()
}

pub fn json_report(results: &[TestResult]) -> String {
    let report: Vec<JsonResult<'_>> = results
        .iter()
        .map(|result| JsonResult {
            error: match &result.verdict {
                Verdict::Error(error) => Some(error),
                _ => None,
            },
            location: &result.location,
            sub_results: (!result.sub_results.is_empty())
                .then(|| sub_results_json(&result.sub_results)),
            package: &result.package,
            name: &result.name,
            output: (!result.output.is_empty()).then(|| base64(result.output.as_bytes())),
            duration: result.duration.as_nanos(),
            fail: result.verdict == Verdict::Fail,
            skip: result.verdict == Verdict::Skip,
        })
        .collect();
    serde_json::to_string_pretty(&report).expect("serializable")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// OPA's coverage report (`cover.Report`): covered and not covered line ranges per file.
#[derive(Serialize)]
struct CoverageReport {
    files: std::collections::BTreeMap<String, FileReport>,
    covered_lines: usize,
    not_covered_lines: usize,
    coverage: f64,
}

#[derive(Serialize)]
struct FileReport {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    covered: Vec<LineRange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_covered: Vec<LineRange>,
    covered_lines: usize,
    not_covered_lines: usize,
    coverage: f64,
}

#[derive(Serialize)]
struct LineRange {
    start: Row,
    end: Row,
}

#[derive(Serialize)]
struct Row {
    row: u32,
}

fn ranges(lines: &std::collections::BTreeSet<u32>) -> Vec<LineRange> {
    let mut out: Vec<LineRange> = Vec::new();
    for &line in lines {
        match out.last_mut() {
            Some(range) if range.end.row + 1 == line => range.end.row = line,
            _ => out.push(LineRange {
                start: Row { row: line },
                end: Row { row: line },
            }),
        }
    }
    out
}

fn percent(covered: usize, not_covered: usize) -> f64 {
    let total = covered + not_covered;
    if total == 0 {
        return 0.0;
    }
    (covered as f64 * 10_000.0 / total as f64).round() / 100.0
}

fn coverage_report(run: &TestRun) -> CoverageReport {
    let empty = std::collections::BTreeMap::<String, FileCoverage>::new();
    let files = run.coverage.as_ref().unwrap_or(&empty);
    let mut report = CoverageReport {
        files: Default::default(),
        covered_lines: 0,
        not_covered_lines: 0,
        coverage: 0.0,
    };
    for (path, file) in files {
        report.covered_lines += file.covered.len();
        report.not_covered_lines += file.not_covered.len();
        report.files.insert(
            path.clone(),
            FileReport {
                covered: ranges(&file.covered),
                not_covered: ranges(&file.not_covered),
                covered_lines: file.covered.len(),
                not_covered_lines: file.not_covered.len(),
                coverage: percent(file.covered.len(), file.not_covered.len()),
            },
        );
    }
    report.coverage = percent(report.covered_lines, report.not_covered_lines);
    report
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b"hi\n"), "aGkK");
        assert_eq!(base64(b"fake print output\n"), "ZmFrZSBwcmludCBvdXRwdXQK");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
