//! ConstraintTemplates (`templates.gatekeeper.sh/v1`, `v1beta1`, `v1alpha1`), checked as gator
//! checks them before compiling (frameworks `client.AddTemplate`, `drivers/rego/compilers.go`,
//! `regorewriter`):
//! - exactly one target, `admission.k8s.gatekeeper.sh`;
//! - `spec.crd.spec.names.kind` set and `metadata.name` equal to its lowercase;
//! - Rego from `targets[0].rego` + `libs` (which, as Gatekeeper's conversion does, replaces
//!   the source of a `code[]` entry with `engine: Rego`, and is always Rego v0), else from the
//!   first `code[]` entry with `engine: Rego` (`source.rego`, `source.libs`,
//!   `source.version`: `"v1"` means Rego v1, anything else v0);
//! - only CEL (`K8sNativeValidation`) code → [`Error::TemplateCelOnly`];
//! - the entry module defines a `violation` rule; every lib's package is under `lib.` (not
//!   `lib` itself); imports only `data.lib...` / `future...`; `data` references only under
//!   `data.lib` / `data.inventory`.

use serde_json::Value;

use crate::error::Error;
pub use crate::object::ADMISSION_TARGET;
use crate::object::{api_version, kind, metadata_str};
use crate::rego_refs;

const TEMPLATE_API_VERSIONS: [&str; 3] = [
    "templates.gatekeeper.sh/v1",
    "templates.gatekeeper.sh/v1beta1",
    "templates.gatekeeper.sh/v1alpha1",
];

/// Which Rego syntax a template's modules are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegoVersion {
    V0,
    V1,
}

/// A parsed, checked ConstraintTemplate (not yet compiled: see `PolicySet::add_template`).
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    kind: String,
    rego_version: RegoVersion,
    referential: bool,
    rego: String,
    libs: Vec<String>,
    parameters_schema: Option<Value>,
    operations: Vec<String>,
    document: Value,
}

impl Template {
    /// Parses and checks a ConstraintTemplate document.
    pub fn from_value(doc: &Value) -> Result<Template, Error> {
        let name = metadata_str(doc, "name").to_owned();
        let invalid = |message: String| Error::TemplateInvalid {
            template: name.clone(),
            message,
        };
        let api_version = api_version(doc);
        let kind_of_doc = kind(doc);
        if kind_of_doc != "ConstraintTemplate" || !TEMPLATE_API_VERSIONS.contains(&api_version) {
            return Err(invalid(format!(
                "not a ConstraintTemplate: apiVersion {api_version:?} kind {kind_of_doc:?} (want templates.gatekeeper.sh/v1, v1beta1 or v1alpha1)"
            )));
        }
        let targets = match doc.pointer("/spec/targets") {
            Some(Value::Array(targets)) => targets,
            None | Some(Value::Null) => {
                return Err(invalid(
                    "invalid ConstraintTemplate: field \"targets\" not specified in ConstraintTemplate spec".into(),
                ));
            }
            Some(_) => return Err(invalid("spec.targets must be a list".into())),
        };
        if targets.len() != 1 {
            return Err(invalid(
                "invalid ConstraintTemplate: must declare exactly one target".into(),
            ));
        }
        let target = &targets[0];
        let target_name = target
            .get("target")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if target_name.is_empty() {
            return Err(invalid(
                "invalid ConstraintTemplate: target name must not be empty".into(),
            ));
        }
        let kind = doc
            .pointer("/spec/crd/spec/names/kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if kind.is_empty() {
            return Err(invalid(format!(
                "invalid ConstraintTemplate: ConstraintTemplate {name:?} does not specify CRD Kind"
            )));
        }
        if name != kind.to_lowercase() {
            return Err(invalid(format!(
                "invalid ConstraintTemplate: the ConstraintTemplate's name {name:?} is not equal to the lowercase of CRD's Kind: {:?}",
                kind.to_lowercase()
            )));
        }
        if target_name != ADMISSION_TARGET {
            return Err(invalid(format!(
                "invalid ConstraintTemplate: target {target_name:?} not recognized, known targets [{ADMISSION_TARGET}]"
            )));
        }

        let (rego, libs, rego_version) =
            rego_source(target).map_err(&invalid)?.ok_or_else(|| {
                let has_cel = target
                    .get("code")
                    .and_then(Value::as_array)
                    .is_some_and(|code| {
                        code.iter().any(|entry| {
                            entry.get("engine").and_then(Value::as_str)
                                == Some("K8sNativeValidation")
                        })
                    });
                if has_cel {
                    Error::TemplateCelOnly {
                        template: name.clone(),
                    }
                } else {
                    invalid("could not extract Rego from the constraint template".into())
                }
            })?;

        let entry_refs = rego_refs::scan(&rego);
        let mut referential = entry_refs.reads_inventory();
        if let Some(problem) = entry_refs.first_violation() {
            return Err(invalid(format!("invalid ConstraintTemplate: {problem}")));
        }
        for (index, lib) in libs.iter().enumerate() {
            let refs = rego_refs::scan(lib);
            referential |= refs.reads_inventory();
            if let Some(problem) = refs.first_violation() {
                return Err(invalid(format!(
                    "invalid ConstraintTemplate: lib {index}: {problem}"
                )));
            }
        }

        let parameters_schema = doc
            .pointer("/spec/crd/spec/validation/openAPIV3Schema")
            .filter(|schema| schema.is_object())
            .cloned();
        // `targets[0].operations` limits which admission operations the *webhook* evaluates
        // the template for (frameworks `templateClient.MatchesOperation`, applied only at the
        // `validation.gatekeeper.sh` enforcement point); gator ignores it.
        let operations = match target.get("operations") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(operations)) => operations
                .iter()
                .map(|operation| {
                    operation.as_str().map(str::to_owned).ok_or_else(|| {
                        invalid("targets[0].operations must be a list of strings".into())
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(invalid(
                    "targets[0].operations must be a list of strings".into(),
                ));
            }
        };
        Ok(Template {
            name,
            kind,
            rego_version,
            referential,
            rego,
            libs,
            parameters_schema,
            operations,
            document: doc.clone(),
        })
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the Rego reads `data.inventory` (needs an [`crate::Inventory`] to evaluate).
    pub fn is_referential(&self) -> bool {
        self.referential
    }

    pub fn rego_version(&self) -> RegoVersion {
        self.rego_version
    }

    /// The entry module's source.
    pub fn rego(&self) -> &str {
        &self.rego
    }

    pub fn libs(&self) -> &[String] {
        &self.libs
    }

    /// `spec.crd.spec.validation.openAPIV3Schema`: the schema of constraints' `spec.parameters`.
    pub fn parameters_schema(&self) -> Option<&Value> {
        self.parameters_schema.as_ref()
    }

    /// `targets[0].operations`: the admission operations Gatekeeper's webhook evaluates this
    /// template for (empty: all). gator ignores it.
    pub fn operations(&self) -> &[String] {
        &self.operations
    }

    /// Whether the webhook evaluates this template for `operation` (`CREATE`, `UPDATE`, …):
    /// yes when no operations are listed, when `operation` is listed, or when `*` is.
    pub fn matches_operation(&self, operation: &str) -> bool {
        self.operations.is_empty()
            || self
                .operations
                .iter()
                .any(|listed| listed == operation || listed == "*")
    }

    /// The document this template was parsed from.
    pub fn document(&self) -> &Value {
        &self.document
    }
}

type RegoSource = (String, Vec<String>, RegoVersion);

/// The template's Rego: `Ok(None)` when it has none.
fn rego_source(target: &Value) -> Result<Option<RegoSource>, String> {
    let string_list = |value: Option<&Value>, field: &str| -> Result<Vec<String>, String> {
        match value {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{field} must be a list of strings"))
                })
                .collect(),
            Some(_) => Err(format!("{field} must be a list of strings")),
        }
    };
    // `rego` (v1 `Target.Rego`) wins and is v0: the conversion builds a source without version.
    match target.get("rego") {
        Some(Value::String(rego)) if !rego.is_empty() => {
            let libs = string_list(target.get("libs"), "libs")?;
            return Ok(Some((rego.clone(), libs, RegoVersion::V0)));
        }
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => return Err("targets[0].rego must be a string".into()),
    }
    let Some(code) = target.get("code").and_then(Value::as_array) else {
        return Ok(None);
    };
    let Some(entry) = code
        .iter()
        .find(|entry| entry.get("engine").and_then(Value::as_str) == Some("Rego"))
    else {
        return Ok(None);
    };
    let source = match entry.get("source") {
        Some(Value::Object(source)) => source,
        None | Some(Value::Null) => return Err("rego source missing required field: source".into()),
        Some(_) => return Err("could not recognize the type of the Rego source".into()),
    };
    let rego = match source.get("rego") {
        Some(Value::String(rego)) => rego.clone(),
        None => return Err("rego source missing required field: rego".into()),
        Some(_) => return Err("rego source: .rego must be a string".into()),
    };
    let version = match source.get("version") {
        None | Some(Value::Null) => RegoVersion::V0,
        Some(Value::String(version)) if version == "v1" => RegoVersion::V1,
        Some(Value::String(_)) => RegoVersion::V0,
        Some(_) => return Err("rego source: .version must be a string".into()),
    };
    let libs = string_list(source.get("libs"), "source.libs")?;
    Ok(Some((rego, libs, version)))
}
