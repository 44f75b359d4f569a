//! `gator test`: reviews Kubernetes manifests against the ConstraintTemplates and
//! Constraints found among them, and reports violations as text, JSON or YAML.
//!
//! Gator behaviour reproduced here (gatekeeper's `cmd/gator/test`, `pkg/gator/test`,
//! `pkg/gator/reader`):
//! - each input is a file (`.yaml`, `.yml` or `.json`) or a directory walked recursively in
//!   lexical order (files with other extensions are skipped there); a file holds YAML
//!   documents or a stream of JSON objects; empty documents are skipped;
//! - every ConstraintTemplate (`templates.gatekeeper.sh`) is added, then every Constraint
//!   (`constraints.gatekeeper.sh/*`), then *every* object goes into `data.inventory`, and
//!   every object (templates and constraints included) is reviewed;
//! - a namespaced object is matched with its Namespace object when one is among the inputs
//!   (`default` is known even when absent); a cluster-scoped object with an empty one;
//! - results are sorted by enforcement action, then message; the exit status is non-zero
//!   when a `deny` violation is reported (`warn` and `dryrun` are printed but pass).
//!
//! Not reproduced: ExpansionTemplates (generated resources are not reviewed), `--image`
//! (OCI bundles), `--trace`, `--stats`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use serde::Serialize;
use serde_json::Value;

use crate::object::{
    ADMISSION_TARGET, CONSTRAINT_GROUP, TEMPLATE_GROUP, api_version, group_version, kind,
    metadata_str,
};
use crate::{Constraint, EnforcementAction, Error, Inventory, PolicySet, Review, Template};

/// Inputs (files, or a stream the caller reads) larger than this are refused rather than
/// read into memory.
pub const INPUT_BYTES_MAX: u64 = crate::yaml::FILE_BYTES_MAX;

/// One object read from the inputs, with where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct SourceObject {
    pub path: PathBuf,
    /// 1-based document (or JSON value) number within the file.
    pub document: usize,
    pub object: Value,
}

/// Reads every `-f` input in order: files as given, directories walked recursively.
pub fn read_inputs(paths: &[PathBuf]) -> Result<Vec<SourceObject>, Error> {
    let mut objects = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|error| Error::Io {
            path: path.clone(),
            message: format!("cannot read: {error}"),
        })?;
        let files = if metadata.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files)?;
            files
        } else if has_input_extension(path) {
            vec![path.clone()]
        } else {
            return Err(Error::Io {
                path: path.clone(),
                message: "must be of extensions [.yaml .yml .json]".into(),
            });
        };
        for file in files {
            let text = crate::yaml::read_text(&file)?;
            objects.extend(read_stream(&file, &text)?);
        }
    }
    Ok(objects)
}

fn has_input_extension(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|extension| extension.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Files below `directory` in lexical order (Go's `filepath.Walk`; links are not followed
/// into directories).
fn walk(directory: &Path, files: &mut Vec<PathBuf>) -> Result<(), Error> {
    let io = |path: &Path, error: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        message: error.to_string(),
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(directory).map_err(|error| io(directory, error))? {
        let entry = entry.map_err(|error| io(directory, error))?;
        let is_dir = entry
            .file_type()
            .map_err(|error| io(&entry.path(), error))?
            .is_dir();
        entries.push((entry.path(), is_dir));
    }
    entries.sort();
    for (path, is_dir) in entries {
        if is_dir {
            walk(&path, files)?;
        } else if has_input_extension(&path) {
            files.push(path);
        }
    }
    Ok(())
}

/// The objects in one file or stream, like Kubernetes' YAML-or-JSON decoder: text starting
/// with `{` is a stream of JSON objects, anything else YAML documents. Empty documents are
/// skipped; a document that is not a mapping is an error naming its number.
pub fn read_stream(path: &Path, text: &str) -> Result<Vec<SourceObject>, Error> {
    let yaml_error = |document: usize, message: String| Error::Yaml {
        path: path.to_path_buf(),
        document,
        message,
    };
    let values = if text.trim_start().starts_with('{') {
        let mut values = Vec::new();
        for (index, value) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            values.push(value.map_err(|error| yaml_error(index + 1, error.to_string()))?);
        }
        values
    } else {
        crate::yaml::documents(text).map_err(|(index, message)| yaml_error(index, message))?
    };
    let mut objects = Vec::new();
    for (index, value) in values.into_iter().enumerate() {
        match value {
            Value::Null => {}
            Value::Object(map) if map.is_empty() => {}
            Value::Object(_) => objects.push(SourceObject {
                path: path.to_path_buf(),
                document: index + 1,
                object: value,
            }),
            _ => {
                return Err(yaml_error(
                    index + 1,
                    "a document must be a mapping (a Kubernetes object)".into(),
                ));
            }
        }
    }
    Ok(objects)
}

fn is_template(object: &Value) -> bool {
    group_version(object).0 == TEMPLATE_GROUP && kind(object) == "ConstraintTemplate"
}

fn is_constraint(object: &Value) -> bool {
    group_version(object).0 == CONSTRAINT_GROUP
}

/// One violation of one constraint by one input object.
#[derive(Debug, Clone)]
pub struct Finding {
    pub msg: String,
    pub details: Value,
    pub enforcement_action: EnforcementAction,
    pub constraint_name: String,
    /// The constraint document as read.
    pub constraint: Value,
    pub object: Value,
}

impl Finding {
    pub fn is_deny(&self) -> bool {
        self.enforcement_action == EnforcementAction::Deny
    }
}

#[derive(Debug, Clone, Default)]
pub struct TestReport {
    /// Sorted by enforcement action, then message (gator's order).
    pub findings: Vec<Finding>,
}

/// Output formats of `gator test -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
    Yaml,
}

impl TestReport {
    /// Whether any `deny` violation was found: the command then exits non-zero.
    pub fn has_deny(&self) -> bool {
        self.findings.iter().any(Finding::is_deny)
    }

    /// The report in `format`; `deny_only` keeps only `deny` findings (gator's `--deny-only`).
    pub fn render(&self, format: OutputFormat, deny_only: bool) -> String {
        let findings: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|finding| !deny_only || finding.is_deny())
            .collect();
        match format {
            OutputFormat::Text => render_text(&findings),
            OutputFormat::Json => render_json(&findings),
            OutputFormat::Yaml => render_yaml(&findings),
        }
    }
}

/// `apps/v1/Deployment ns/name: ["constraint"] Message: "msg"`, one line per finding.
fn render_text(findings: &[&Finding]) -> String {
    let mut out = String::new();
    for finding in findings {
        let object = &finding.object;
        let api_version = api_version(object);
        let namespace = metadata_str(object, "namespace");
        let name = metadata_str(object, "name");
        let qualified_name = if namespace.is_empty() {
            name.to_owned()
        } else {
            format!("{namespace}/{name}")
        };
        let _ = writeln!(
            out,
            "{api_version}/{} {qualified_name}: [{}] Message: {}",
            kind(object),
            go_quote(&finding.constraint_name),
            go_quote(&finding.msg)
        );
    }
    out
}

/// One result as gator's JSON prints it: the framework's `Result` fields, then the object.
#[derive(Serialize)]
struct JsonResult<'a> {
    target: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    msg: &'a str,
    metadata: Value,
    constraint: Value,
    #[serde(rename = "enforcementAction")]
    enforcement_action: &'static str,
    #[serde(rename = "violatingObject")]
    violating_object: Value,
    trace: Option<String>,
}

fn json_result(finding: &Finding) -> JsonResult<'_> {
    JsonResult {
        target: ADMISSION_TARGET,
        msg: &finding.msg,
        metadata: sorted(&serde_json::json!({ "details": finding.details })),
        constraint: sorted(&finding.constraint),
        enforcement_action: finding.enforcement_action.as_str(),
        violating_object: sorted(&finding.object),
        trace: None,
    }
}

/// Go's `json.MarshalIndent(results, "", "    ")`: object keys sorted, four-space indent,
/// `null` for no results, and `<`, `>`, `&` escaped as Go escapes them.
fn render_json(findings: &[&Finding]) -> String {
    if findings.is_empty() {
        return "null".into();
    }
    let results: Vec<JsonResult<'_>> = findings
        .iter()
        .map(|finding| json_result(finding))
        .collect();
    let mut bytes = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, formatter);
    results
        .serialize(&mut serializer)
        .expect("JSON values serialize");
    let text = String::from_utf8(bytes).expect("serde_json writes UTF-8");
    // These characters only occur inside JSON strings, where the escapes mean the same.
    text.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// gator's YAML output keeps the framework result under `result` (its Go field names
/// lower-cased) and the constraint under `object`, as Go's YAML encoder writes them.
fn render_yaml(findings: &[&Finding]) -> String {
    let results: Vec<Value> = findings
        .iter()
        .map(|finding| {
            let mut result = serde_json::Map::new();
            result.insert("target".into(), ADMISSION_TARGET.into());
            result.insert("msg".into(), finding.msg.clone().into());
            result.insert(
                "metadata".into(),
                sorted(&serde_json::json!({ "details": finding.details })),
            );
            result.insert(
                "constraint".into(),
                serde_json::json!({ "object": sorted(&finding.constraint) }),
            );
            result.insert(
                "enforcementaction".into(),
                finding.enforcement_action.as_str().into(),
            );
            result.insert("scopedenforcementactions".into(), Value::Array(Vec::new()));
            let mut entry = serde_json::Map::new();
            entry.insert("result".into(), Value::Object(result));
            entry.insert("violatingObject".into(), sorted(&finding.object));
            entry.insert("trace".into(), Value::Null);
            Value::Object(entry)
        })
        .collect();
    serde_norway::to_string(&results).expect("JSON values serialize as YAML")
}

/// A copy with every object's keys in sorted order, whatever order the map type keeps.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for key in keys {
                out.insert(key.clone(), sorted(&map[key]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Go's `%q` (`strconv.Quote`): double quotes, backslash escapes for quotes, backslashes
/// and control characters; other characters as they are.
pub fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reviews every input object as `gator test` does (see the module documentation).
pub fn test(objects: &[SourceObject]) -> Result<TestReport, Error> {
    let mut policy = PolicySet::new();
    for source in objects.iter().filter(|source| is_template(&source.object)) {
        Template::from_value(&source.object)
            .and_then(|template| policy.add_template(template))
            .map_err(|error| error.in_document(&source.path, source.document))?;
    }
    // The constraint documents as read, for the report (gator prints the whole constraint).
    let mut constraints: Vec<(String, String, Value)> = Vec::new();
    for source in objects
        .iter()
        .filter(|source| is_constraint(&source.object))
    {
        let constraint = Constraint::from_value(&source.object)
            .map_err(|error| error.in_document(&source.path, source.document))?;
        constraints.push((
            constraint.kind().to_owned(),
            constraint.name().to_owned(),
            source.object.clone(),
        ));
        policy
            .add_constraint(constraint)
            .map_err(|error| error.in_document(&source.path, source.document))?;
    }
    let mut inventory = Inventory::default();
    // Names of the Namespace objects among the inputs.
    let mut namespaces: Vec<&str> = Vec::new();
    for source in objects {
        inventory
            .add(&source.object)
            .map_err(|error| error.in_document(&source.path, source.document))?;
        if kind(&source.object) == "Namespace" && group_version(&source.object).0.is_empty() {
            namespaces.push(metadata_str(&source.object, "name"));
        }
    }
    let mut findings = Vec::new();
    for source in objects {
        let review = Review::from_object(&source.object)
            .map_err(|error| error.in_document(&source.path, source.document))?;
        let review = match namespace_for(&source.object, &namespaces) {
            Some(namespace) => review.with_match_namespace(namespace),
            None => review,
        };
        let outcome = policy
            .review(&review, Some(&inventory))
            .map_err(|error| error.in_document(&source.path, source.document))?;
        for violation in outcome.violations {
            let constraint = constraints
                .iter()
                .rev()
                .find(|(kind, name, _)| {
                    *kind == violation.constraint_kind && *name == violation.constraint_name
                })
                .map_or(Value::Null, |(_, _, document)| document.clone());
            findings.push(Finding {
                msg: violation.msg,
                details: violation.details,
                enforcement_action: violation.enforcement_action,
                constraint_name: violation.constraint_name,
                constraint,
                object: source.object.clone(),
            });
        }
    }
    findings.sort_by(|a, b| {
        a.enforcement_action
            .as_str()
            .cmp(b.enforcement_action.as_str())
            .then_with(|| a.msg.cmp(&b.msg))
    });
    Ok(TestReport { findings })
}

/// The Namespace an object is matched with, beyond what `data.inventory` gives (gator's
/// `NamespaceForResource`). A Namespace among the inputs is found through the inventory
/// (Gatekeeper's namespace cache, which the policy set consults): `None` here. gator adds
/// two of its own: a cluster-scoped object gets an empty Namespace (so a `namespaceSelector`
/// is matched against no labels), and `default` exists even when not given. They are only
/// matched with: `input.review.namespaceObject` stays `null`, as in gator.
fn namespace_for(object: &Value, namespaces: &[&str]) -> Option<Value> {
    let namespace = metadata_str(object, "namespace");
    if namespace.is_empty() {
        return Some(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {}
        }));
    }
    if namespaces.contains(&namespace) {
        return None;
    }
    (namespace == "default").then(|| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_escapes_like_strconv_quote() {
        assert_eq!(go_quote("plain"), r#""plain""#);
        assert_eq!(go_quote("a \"b\"\n\\"), r#""a \"b\"\n\\""#);
        assert_eq!(go_quote("tab\tbell\u{7}"), r#""tab\tbell\a""#);
        assert_eq!(go_quote("\u{1}é"), "\"\\x01é\"");
    }

    #[test]
    fn read_stream_reads_yaml_documents_and_json_streams() {
        let path = Path::new("in.yaml");
        let yaml = "---\n# comment only\n---\nkind: A\n---\n\n---\nkind: B\n";
        let kinds: Vec<String> = read_stream(path, yaml)
            .unwrap()
            .iter()
            .map(|source| format!("{}@{}", kind(&source.object), source.document))
            .collect();
        assert_eq!(kinds, ["A@2", "B@4"]);
        let json = "{\"kind\": \"A\"}\n{\"kind\": \"B\"}";
        assert_eq!(read_stream(path, json).unwrap().len(), 2);
        let error = read_stream(path, "kind: A\n---\n- not\n- a map\n").unwrap_err();
        assert!(error.to_string().contains("document 2"), "{error}");
        assert!(read_stream(path, "kind: [\n").is_err());
    }

    #[test]
    fn namespace_for_follows_gator() {
        let namespaces = ["team"];
        let in_team = serde_json::json!({"metadata": {"name": "x", "namespace": "team"}});
        let in_default = serde_json::json!({"metadata": {"name": "x", "namespace": "default"}});
        let elsewhere = serde_json::json!({"metadata": {"name": "x", "namespace": "other"}});
        let cluster = serde_json::json!({"metadata": {"name": "x"}});
        assert_eq!(namespace_for(&in_team, &namespaces), None);
        assert_eq!(
            namespace_for(&in_default, &namespaces).unwrap()["metadata"]["name"],
            "default"
        );
        assert_eq!(namespace_for(&elsewhere, &namespaces), None);
        assert_eq!(
            namespace_for(&cluster, &namespaces).unwrap()["metadata"],
            serde_json::json!({})
        );
    }
}
