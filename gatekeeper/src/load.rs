//! Reading policy files: every `.yaml`, `.yml` and `.json` file under the given paths,
//! recursively, in sorted path order, each YAML file split into its documents.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::Error;
use crate::object::{CONSTRAINT_GROUP, TEMPLATE_GROUP, api_version, kind};

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
        kind(&self.value) == "ConstraintTemplate" && in_group(&self.value, TEMPLATE_GROUP)
    }

    pub fn is_constraint(&self) -> bool {
        in_group(&self.value, CONSTRAINT_GROUP)
    }
}

/// `apiVersion` is `group/<any version>`: the version is checked later, by
/// [`crate::Template::from_value`] and [`crate::Constraint::from_value`], which name it.
fn in_group(value: &Value, group: &str) -> bool {
    api_version(value)
        .strip_prefix(group)
        .is_some_and(|version| version.starts_with('/'))
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

/// One policy file as read: the text the documents are decoded from, so a caller can
/// fingerprint exactly what was loaded (the webhook's `bundle_revision`).
#[derive(Debug, Clone)]
pub struct PolicyFile {
    pub path: PathBuf,
    /// `path` relative to the given path it was found under (empty for a file given
    /// directly): the same for every mount point of the same files.
    pub relative_path: PathBuf,
    pub text: String,
}

/// Every policy file under `paths`, in order, read with the size bound of `crate::yaml`.
pub fn read_policy_files(paths: &[PathBuf]) -> Result<Vec<PolicyFile>, Error> {
    let mut files = Vec::new();
    for root in paths {
        for path in policy_files(std::slice::from_ref(root))? {
            let text = crate::yaml::read_text(&path)?;
            let relative_path = path.strip_prefix(root).unwrap_or(&path).to_owned();
            files.push(PolicyFile {
                path,
                relative_path,
                text,
            });
        }
    }
    Ok(files)
}

/// Every non-empty document of every policy file under `paths`, in order. Files are
/// bounded in size and in what their YAML aliases may expand to (see `crate::yaml`).
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<Document>, Error> {
    documents_of(&read_policy_files(paths)?)
}

/// Every non-empty document of `files`, in order.
pub fn documents_of(files: &[PolicyFile]) -> Result<Vec<Document>, Error> {
    let mut documents = Vec::new();
    for file in files {
        let parsed = parse_documents(&file.text).map_err(|(index, message)| Error::Yaml {
            path: file.path.clone(),
            document: index,
            message,
        })?;
        documents.extend(parsed.into_iter().map(|(index, value)| Document {
            path: file.path.clone(),
            index,
            value,
        }));
    }
    Ok(documents)
}

/// Splits YAML (a superset of JSON) into its non-empty documents, each with its 1-based
/// position in the text (empty documents count, so the number is the one an editor shows).
/// The error carries the number of the document at fault.
pub fn parse_documents(text: &str) -> Result<Vec<(usize, Value)>, (usize, String)> {
    Ok(crate::yaml::documents(text)?
        .into_iter()
        .enumerate()
        .filter(|(_, value)| !value.is_null())
        .map(|(index, value)| (index + 1, value))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_skips_empty_documents_but_counts_them() {
        let values = parse_documents("a: 1\n---\n---\nb: [1, 2]\n").unwrap();
        assert_eq!(
            values,
            vec![
                (1, serde_json::json!({"a": 1})),
                (3, serde_json::json!({"b": [1, 2]}))
            ]
        );
        assert_eq!(parse_documents("a: 1\n---\nb: [\n").unwrap_err().0, 2);
    }

    #[test]
    fn documents_are_numbered_as_in_the_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("policies.yaml");
        std::fs::write(
            &path,
            "---\n# header only\n---\nkind: A\n---\n---\nkind: B\n",
        )
        .unwrap();
        let documents = read_documents(std::slice::from_ref(&path)).unwrap();
        let numbers: Vec<usize> = documents.iter().map(|document| document.index).collect();
        assert_eq!(numbers, [2, 4]);
    }
}
