//! `countersign test` drives like `opa test`: output (snapshots) and exit codes, from the
//! real binary. Snapshots live in `tests/snapshots/`; run with `UPDATE_SNAPSHOTS=1` to
//! rewrite them after an intended change, then review the diff.
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

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opa_test")
}

/// Runs `countersign test ARGS...` in the fixture directory, so reported file names are
/// stable relative paths.
fn countersign_test(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg("test")
        .args(args)
        .current_dir(fixtures())
        .output()
        .expect("countersign runs");
    Output {
        code: output.status.code().expect("exited"),
        stdout: String::from_utf8(output.stdout).expect("utf-8"),
        stderr: String::from_utf8(output.stderr).expect("utf-8"),
    }
}

/// Durations vary run to run: `(1.2ms)` → `(DURATION)`, `"duration": 123` → `0`.
fn normalize(text: &str) -> String {
    let pretty = regex::Regex::new(r"\((\d+(\.\d+)?(ns|µs|ms|s|m))+\)").unwrap();
    let json = regex::Regex::new(r#""duration": \d+"#).unwrap();
    let text = pretty.replace_all(text, "(DURATION)");
    json.replace_all(&text, r#""duration": 0"#).into_owned()
}

fn check_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    let actual = normalize(actual);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!("{}: {error} (run with UPDATE_SNAPSHOTS=1)", path.display())
    });
    assert_eq!(
        actual, expected,
        "snapshot {name} differs (run with UPDATE_SNAPSHOTS=1 and review the diff)"
    );
}

#[test]
fn pretty_output_lists_only_what_did_not_pass() {
    let output = countersign_test(&["policy"]);
    assert_eq!(
        output.code, 2,
        "a failure and an error exit 2: {}",
        output.stderr
    );
    check_snapshot("opa_test_pretty.txt", &output.stdout);
}

#[test]
fn verbose_output_lists_every_test_by_file() {
    let output = countersign_test(&["-v", "policy"]);
    assert_eq!(output.code, 2);
    check_snapshot("opa_test_verbose.txt", &output.stdout);
}

#[test]
fn json_output_has_opa_fields() {
    let output = countersign_test(&["--format", "json", "policy"]);
    assert_eq!(output.code, 2);
    check_snapshot("opa_test_json.json", &output.stdout);
    let results: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let mocked = results
        .as_array()
        .unwrap()
        .iter()
        .find(|result| result["name"] == "test_admin_mocked_with_data")
        .unwrap();
    assert_eq!(mocked["location"]["file"], "policy/authz_test.rego");
    assert_eq!(mocked["package"], "data.authz_test");
    assert!(mocked.get("fail").is_none(), "`with data` mocking works");
}

#[test]
fn exit_codes_follow_opa() {
    // Only passing tests: 0.
    let output = countersign_test(&["-r", "admin|get", "policy"]);
    assert_eq!(output.code, 0, "{}{}", output.stdout, output.stderr);
    assert_eq!(output.stdout, "PASS: 3/3\n");
    // A skipped test exits 2, unless -z.
    let output = countersign_test(&["-r", "todo_|test_get", "policy"]);
    assert_eq!(output.code, 2);
    let output = countersign_test(&["-z", "-r", "todo_|test_get", "policy"]);
    assert_eq!(output.code, 0);
    // The filter sees the full name, `data.pkg.test_x`.
    let output = countersign_test(&["-r", r"^data\.authz_test\.test_get_allowed$", "policy"]);
    assert_eq!(output.stdout, "PASS: 1/1\n");
    // No test ran: 0, or 1 with --fail-on-empty.
    assert_eq!(countersign_test(&["-r", "nothing", "policy"]).code, 0);
    let output = countersign_test(&["--fail-on-empty", "-r", "nothing", "policy"]);
    assert_eq!(output.code, 1);
    assert_eq!(output.stderr, "no tests were run\n");
    // A file that does not parse is a load error: 1, with its location.
    let output = countersign_test(&["broken"]);
    assert_eq!(output.code, 1);
    assert!(
        output.stderr.contains("broken/broken.rego"),
        "{}",
        output.stderr
    );
    // A missing path too.
    assert_eq!(countersign_test(&["no-such-dir"]).code, 1);
}

#[test]
fn a_test_over_its_timeout_errors() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(
        directory.path().join("slow_test.rego"),
        "package slow\n\ntest_slow if {\n\tcount([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000)]) > 0\n}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["test", "--timeout", "50ms"])
        .arg(directory.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("test_slow: ERROR"), "{stdout}");
    assert!(stdout.contains("eval_cancel_error"), "{stdout}");
}

#[test]
fn coverage_report_replaces_the_test_report() {
    let output = countersign_test(&["-c", "-r", "admin|get", "policy"]);
    assert_eq!(output.code, 0, "{}", output.stderr);
    let report: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    assert!(report["coverage"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["files"]["policy/authz.rego"].is_object(), "{report}");
    // Below the threshold: 2, as OPA.
    let output = countersign_test(&["--threshold", "100", "-r", "admin", "policy"]);
    assert_eq!(output.code, 2, "{}", output.stderr);
    assert!(output.stderr.contains("Code coverage threshold not met"));
}

#[test]
fn the_shipped_bundle_passes() {
    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let output = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg("test")
        .arg(&bundle)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let passed: usize = stdout
        .trim()
        .strip_prefix("PASS: ")
        .and_then(|counts| counts.split('/').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {stdout}"));
    assert!(passed >= 51, "{stdout}");
    // Bundle mode reads the same directory as a bundle (manifest, roots) with the same verdicts.
    let output = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["test", "-b"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), stdout);
}
