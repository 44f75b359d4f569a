//! Finding and reading gator Suite files, and the files they point to, the way gator reads
//! them (`pkg/gator/verify/read_suites.go`, `pkg/gator/reader/read_resources.go`).

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{Assertion, Case, Suite, SuiteFile, Test, Violations};
use crate::Error;
use crate::object::{group_version, kind};

/// API group and kind that make a YAML file a Suite; any other file is silently ignored.
const SUITE_GROUP: &str = "test.gatekeeper.sh";
const SUITE_KIND: &str = "Suite";

/// Suite files are YAML only (gator's `IsYAMLExtension`): `.json` files are not suites.
fn is_yaml_file_name(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|extension| extension.to_str()),
        Some("yaml" | "yml")
    )
}

/// The suites selected by one command-line `PATH`, sorted by absolute path:
/// - a file: that file, which must have a YAML extension (it is not an error if it is not a
///   Suite: it then selects nothing, as in gator);
/// - a directory: the YAML files directly in it;
/// - `DIR/...`: the YAML files in it and every folder below (hidden ones included, symbolic
///   links not followed, as Go's `fs.WalkDir`).
///
/// Every YAML file found is parsed; one that is not valid YAML fails the whole listing,
/// like gator's `listing test files` error.
pub fn read_suites(argument: &str) -> Result<Vec<SuiteFile>, Error> {
    let (shown, recursive) = match argument.strip_suffix("...") {
        Some(prefix) if prefix.ends_with('/') => (prefix.to_owned(), true),
        _ => (argument.to_owned(), false),
    };
    let target = absolute(Path::new(if shown.is_empty() { "." } else { &shown }))?;
    let metadata = std::fs::metadata(&target).map_err(|error| io_error(&target, &error))?;
    let mut files = Vec::new();
    match (metadata.is_dir(), recursive) {
        (false, false) => {
            if !is_yaml_file_name(&target) {
                return Err(Error::Io {
                    path: target,
                    message: "unsupported extension: a Suite file ends in .yaml or .yml".into(),
                });
            }
            files.push(target.clone());
        }
        (false, true) => {
            return Err(Error::Io {
                path: target,
                message: "not a directory: can only recursively traverse directories".into(),
            });
        }
        (true, false) => {
            for entry in sorted_entries(&target)? {
                if !entry.is_dir && is_yaml_file_name(&entry.path) {
                    files.push(entry.path);
                }
            }
        }
        (true, true) => walk(&target, &mut files)?,
    }
    let mut suites = Vec::new();
    for file in files {
        let Some(suite) = read_suite(&file)? else {
            continue;
        };
        let input_path = if file == target {
            shown.clone()
        } else {
            let relative = file
                .strip_prefix(&target)
                .expect("walked files are below the target")
                .to_string_lossy()
                .into_owned();
            if shown.is_empty() || shown.ends_with('/') {
                format!("{shown}{relative}")
            } else {
                format!("{shown}/{relative}")
            }
        };
        suites.push(SuiteFile {
            absolute_path: file,
            input_path,
            suite,
        });
    }
    suites.sort_by(|a, b| a.absolute_path.cmp(&b.absolute_path));
    Ok(suites)
}

struct Entry {
    path: PathBuf,
    is_dir: bool,
}

/// Directory entries sorted by file name (Go's `fs.ReadDir` order). A symbolic link counts
/// as a file, not a folder: `fs.WalkDir` does not follow links.
fn sorted_entries(directory: &Path) -> Result<Vec<Entry>, Error> {
    let reader = std::fs::read_dir(directory).map_err(|error| io_error(directory, &error))?;
    let mut entries = Vec::new();
    for entry in reader {
        let entry = entry.map_err(|error| io_error(directory, &error))?;
        let file_type = entry
            .file_type()
            .map_err(|error| io_error(&entry.path(), &error))?;
        entries.push(Entry {
            path: entry.path(),
            is_dir: file_type.is_dir(),
        });
    }
    entries.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
    Ok(entries)
}

fn walk(directory: &Path, files: &mut Vec<PathBuf>) -> Result<(), Error> {
    for entry in sorted_entries(directory)? {
        if entry.is_dir {
            walk(&entry.path, files)?;
        } else if is_yaml_file_name(&entry.path) {
            files.push(entry.path);
        }
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, Error> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let current = std::env::current_dir().map_err(|error| io_error(path, &error))?;
        current.join(path)
    };
    Ok(clean(&joined))
}

/// Lexical clean like Go's `path.Clean`: `.` dropped, `..` removes the previous component.
pub(crate) fn clean(path: &Path) -> PathBuf {
    let mut cleaned = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !cleaned.pop() {
                    cleaned.push("..");
                }
            }
            other => cleaned.push(other.as_os_str()),
        }
    }
    cleaned
}

/// `path.Join(suiteDir, relative)`: the file a Suite names, always relative to the Suite's
/// folder, even when it starts with `/` (gator joins, it does not resolve).
pub(crate) fn join_relative(suite_dir: &Path, relative: &str) -> PathBuf {
    clean(&suite_dir.join(relative.trim_start_matches('/')))
}

pub(crate) fn io_error(path: &Path, error: &std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

/// The first YAML document of `text` as a mapping, as Go's `yaml.Unmarshal` into a map reads
/// it: later documents are ignored, an empty or null document is an empty object, and a
/// document that is not a mapping is an error.
pub(crate) fn first_document(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    match crate::yaml::first_document(text)? {
        Some(Value::Object(map)) => Ok(map),
        None | Some(Value::Null) => Ok(serde_json::Map::new()),
        Some(other) => Err(format!(
            "the document is a {}, not a mapping",
            json_type_name(&other)
        )),
    }
}

pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "sequence",
        Value::Object(_) => "mapping",
    }
}

/// Reads `path`; `Ok(None)` when it is valid YAML but not a Suite.
fn read_suite(path: &Path) -> Result<Option<Suite>, Error> {
    let text = crate::yaml::read_text(path)?;
    let object = first_document(&text).map_err(|message| Error::Yaml {
        path: path.to_path_buf(),
        document: 1,
        message,
    })?;
    let object = Value::Object(object);
    let (group, _) = group_version(&object);
    if group != SUITE_GROUP || kind(&object) != SUITE_KIND {
        return Ok(None);
    }
    parse_suite(&object)
        .map(Some)
        .map_err(|message| Error::Yaml {
            path: path.to_path_buf(),
            document: 1,
            message: format!("not a valid Suite: {message}"),
        })
}

/// The Suite fields gator decodes (Go's `encoding/json` into `verify.Suite`): unknown fields
/// are ignored, a field of the wrong type is an error.
#[derive(Deserialize)]
struct RawSuite {
    #[serde(default)]
    tests: Option<Vec<RawTest>>,
    #[serde(default)]
    skip: Option<bool>,
}

#[derive(Deserialize)]
struct RawTest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    constraint: Option<String>,
    #[serde(default)]
    expansion: Option<String>,
    #[serde(default)]
    cases: Option<Vec<Option<RawCase>>>,
    #[serde(default)]
    invalid: Option<bool>,
    #[serde(default)]
    skip: Option<bool>,
}

#[derive(Deserialize)]
struct RawCase {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    inventory: Option<Vec<String>>,
    #[serde(default)]
    assertions: Option<Vec<RawAssertion>>,
    #[serde(default)]
    skip: Option<bool>,
}

#[derive(Deserialize)]
struct RawAssertion {
    #[serde(default)]
    violations: Option<Value>,
    #[serde(default)]
    message: Option<String>,
}

fn parse_suite(value: &Value) -> Result<Suite, String> {
    let raw = RawSuite::deserialize(value).map_err(|error| error.to_string())?;
    let mut tests = Vec::new();
    for raw_test in raw.tests.unwrap_or_default() {
        let mut cases = Vec::new();
        // A `null` entry in `cases` is a nil *Case in Go: gator would crash on it; it is
        // refused here instead.
        for raw_case in raw_test.cases.unwrap_or_default() {
            let raw_case = raw_case.ok_or("a case is null")?;
            let mut assertions = Vec::new();
            for raw_assertion in raw_case.assertions.unwrap_or_default() {
                assertions.push(Assertion {
                    violations: parse_violations(raw_assertion.violations)?,
                    message: raw_assertion.message,
                });
            }
            cases.push(Case {
                name: raw_case.name.unwrap_or_default(),
                object: raw_case.object.unwrap_or_default(),
                inventory: raw_case.inventory.unwrap_or_default(),
                assertions,
                skip: raw_case.skip.unwrap_or(false),
            });
        }
        tests.push(Test {
            name: raw_test.name.unwrap_or_default(),
            template: raw_test.template.unwrap_or_default(),
            constraint: raw_test.constraint.unwrap_or_default(),
            expansion: raw_test.expansion.unwrap_or_default(),
            cases,
            invalid: raw_test.invalid.unwrap_or(false),
            skip: raw_test.skip.unwrap_or(false),
        });
    }
    Ok(Suite {
        tests,
        skip: raw.skip.unwrap_or(false),
    })
}

/// `violations` is Kubernetes' IntOrString: an integer or a string. Which strings are valid
/// (`yes`, `no`) and whether the integer is negative is only checked when the assertion runs,
/// as gator does; anything else (a boolean, a list) makes the Suite unreadable.
fn parse_violations(value: Option<Value>) -> Result<Option<Violations>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(Violations::Text(text))),
        Some(Value::Number(number)) => match number.as_i64() {
            Some(count) if i32::try_from(count).is_ok() => Ok(Some(Violations::Count(count))),
            _ => Err(format!(
                "assertion violations {number} is not a 32-bit integer"
            )),
        },
        Some(other) => Err(format!(
            "assertion violations must be an integer or a string, not a {}",
            json_type_name(&other)
        )),
    }
}

/// Objects in a case's `object` or `inventory` file, read like gator's `ReadUnstructureds`:
/// the text is split at every line starting with `---`, blank and comment-only lines are
/// dropped, empty pieces are skipped, and each piece is one object (a mapping).
pub(crate) fn read_objects(path: &Path) -> Result<Vec<Value>, String> {
    let text = crate::yaml::read_text(path).map_err(|error| error.to_string())?;
    let mut objects = Vec::new();
    for piece in text.split("\n---") {
        let cleaned = clean_yaml(piece);
        if cleaned.is_empty() {
            continue;
        }
        let object = first_document(&cleaned)
            .and_then(require_kind)
            .map_err(|message| format!("reading {:?}: invalid yaml: {message}", path.display()))?;
        objects.push(object);
    }
    if objects.is_empty() {
        return Err(format!(
            "missing objects: path {:?} defines no YAML objects",
            path.display()
        ));
    }
    Ok(objects)
}

/// Kubernetes' unstructured decoder, which gator reads every object through, refuses an
/// object without a `kind` (so a document holding only `---` is an error, not an object).
fn require_kind(object: serde_json::Map<String, Value>) -> Result<Value, String> {
    let object = Value::Object(object);
    if kind(&object).is_empty() {
        return Err(format!("Object 'Kind' is missing in '{object}'"));
    }
    Ok(object)
}

/// Drops empty, blank and comment-only lines (gator's `clean`), so a piece holding only
/// comments is not read as an empty object.
fn clean_yaml(piece: &str) -> String {
    let mut cleaned = String::new();
    for line in piece.split('\n') {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        cleaned.push_str(line);
        cleaned.push('\n');
    }
    cleaned
}

/// The first document of a template or constraint file (gator's `ReadUnstructured`).
pub(crate) fn read_single_object(path: &Path, what: &str) -> Result<Value, String> {
    let text = crate::yaml::read_text(path).map_err(|error| match error {
        Error::Io { message, .. } | Error::Yaml { message, .. } => {
            format!("reading {what} from {:?}: {message}", path.display())
        }
        other => other.to_string(),
    })?;
    first_document(&text)
        .and_then(require_kind)
        .map_err(|message| {
            let prefix = if what == "ConstraintTemplate" {
                "adding template: parsing ConstraintTemplate YAML"
            } else {
                "adding constraint: parsing Constraint"
            };
            format!("{prefix} from {:?}: {message}", path.display())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_document_ignores_later_documents_and_refuses_lists() {
        let map = first_document("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(Value::Object(map), serde_json::json!({"a": 1}));
        assert!(first_document("").unwrap().is_empty());
        assert!(first_document("# only a comment\n").unwrap().is_empty());
        assert!(first_document("- a\n- b\n").is_err());
        assert!(first_document("a: [\n").is_err());
    }

    #[test]
    fn yes_and_no_stay_strings() {
        let map = first_document("violations: yes\nother: no\n").unwrap();
        assert_eq!(map["violations"], Value::String("yes".into()));
        assert_eq!(map["other"], Value::String("no".into()));
    }

    #[test]
    fn clean_drops_blank_and_comment_lines() {
        assert_eq!(clean_yaml("\n# c\n  \na: 1\n  # d\nb: 2"), "a: 1\nb: 2\n");
        assert_eq!(clean_yaml("\n  # only\n"), "");
    }

    #[test]
    fn join_relative_stays_below_the_suite_folder() {
        let dir = Path::new("/s/suite");
        assert_eq!(
            join_relative(dir, "samples/a.yaml"),
            PathBuf::from("/s/suite/samples/a.yaml")
        );
        assert_eq!(
            join_relative(dir, "/abs.yaml"),
            PathBuf::from("/s/suite/abs.yaml")
        );
        assert_eq!(
            join_relative(dir, "../t/./x.yaml"),
            PathBuf::from("/s/t/x.yaml")
        );
    }

    #[test]
    fn violations_accept_integers_and_strings_only() {
        assert_eq!(
            parse_violations(Some(serde_json::json!(2))).unwrap(),
            Some(Violations::Count(2))
        );
        assert_eq!(
            parse_violations(Some(serde_json::json!("yes"))).unwrap(),
            Some(Violations::Text("yes".into()))
        );
        assert_eq!(parse_violations(None).unwrap(), None);
        assert!(parse_violations(Some(serde_json::json!(true))).is_err());
        assert!(parse_violations(Some(serde_json::json!(1.5))).is_err());
    }
}
