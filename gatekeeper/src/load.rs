//! Reading policy files: every `.yaml`, `.yml` and `.json` file under the given paths,
//! recursively, in sorted path order, each YAML file split into its documents.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::Error;

/// Directory levels followed below each given path (a bound against symlink loops).
const DIRECTORY_DEPTH_MAX: usize = 32;

/// One decoded document and where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    pub path: PathBuf,
    /// 1-based position within its file.
    pub index: usize,
    pub value: Value,
}

impl Document {
    pub fn is_template(&self) -> bool {
        self.value.get("kind").and_then(Value::as_str) == Some("ConstraintTemplate")
            && self
                .value
                .get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|api_version| api_version.starts_with("templates.gatekeeper.sh/"))
    }

    pub fn is_constraint(&self) -> bool {
        self.value
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|api_version| {
                api_version.starts_with(&format!("{}/", crate::constraint::CONSTRAINT_GROUP))
            })
    }
}

/// The policy files under `paths` (files given directly are taken whatever their extension).
pub fn policy_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|error| Error::Io {
            path: path.clone(),
            message: error.to_string(),
        })?;
        if metadata.is_dir() {
            let mut found = Vec::new();
            walk(path, 0, &mut found)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(directory: &Path, depth: usize, found: &mut Vec<PathBuf>) -> Result<(), Error> {
    if depth > DIRECTORY_DEPTH_MAX {
        return Err(Error::Io {
            path: directory.to_owned(),
            message: format!("more than {DIRECTORY_DEPTH_MAX} directory levels"),
        });
    }
    let entries = std::fs::read_dir(directory).map_err(|error| Error::Io {
        path: directory.to_owned(),
        message: error.to_string(),
    })?;
    for entry in entries {
        let entry = entry.map_err(|error| Error::Io {
            path: directory.to_owned(),
            message: error.to_string(),
        })?;
        let path = entry.path();
        // Hidden entries are skipped: a ConfigMap volume holds every file twice, once under
        // `..data/` and once under a timestamped `..2026_…/` directory.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(&path, depth + 1, found)?;
        } else if matches!(
            path.extension().and_then(|extension| extension.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            found.push(path);
        }
    }
    Ok(())
}

/// Every document of every policy file under `paths`, in order.
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<Document>, Error> {
    let mut documents = Vec::new();
    for path in policy_files(paths)? {
        let text = std::fs::read_to_string(&path).map_err(|error| Error::Io {
            path: path.clone(),
            message: error.to_string(),
        })?;
        for (index, value) in parse_documents(&text)
            .map_err(|(index, message)| Error::Yaml {
                path: path.clone(),
                document: index,
                message,
            })?
            .into_iter()
            .enumerate()
        {
            documents.push(Document {
                path: path.clone(),
                index: index + 1,
                value,
            });
        }
    }
    Ok(documents)
}

/// Splits YAML (a superset of JSON) into its non-empty documents. The error carries the
/// 1-based document number.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, (usize, String)> {
    use serde::Deserialize;
    let mut values = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document).map_err(|error| (index + 1, error.to_string()))?;
        if !value.is_null() {
            values.push(value);
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_skips_empty_documents() {
        let values = parse_documents("a: 1\n---\n---\nb: [1, 2]\n").unwrap();
        assert_eq!(
            values,
            vec![
                serde_json::json!({"a": 1}),
                serde_json::json!({"b": [1, 2]})
            ]
        );
        assert_eq!(parse_documents("a: 1\n---\nb: [\n").unwrap_err().0, 2);
    }
}
