//! The crate's one error type. Callers act on [`Error::code`] (a stable machine code); the
//! message names the file, document, template or constraint concerned.

use std::path::PathBuf;

/// Stable, machine-readable error codes (`Error::code()` returns `ErrorCode::as_str()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Io,
    YamlInvalid,
    TemplateInvalid,
    TemplateCelOnly,
    RegoCompile,
    ConstraintInvalid,
    ConstraintSchema,
    ConstraintUnknownKind,
    ReviewInvalid,
    InventoryInvalid,
    RegoEval,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Io => "io",
            ErrorCode::YamlInvalid => "yaml.invalid",
            ErrorCode::TemplateInvalid => "template.invalid",
            ErrorCode::TemplateCelOnly => "template.cel_only",
            ErrorCode::RegoCompile => "rego.compile",
            ErrorCode::ConstraintInvalid => "constraint.invalid",
            ErrorCode::ConstraintSchema => "constraint.schema",
            ErrorCode::ConstraintUnknownKind => "constraint.unknown_kind",
            ErrorCode::ReviewInvalid => "review.invalid",
            ErrorCode::InventoryInvalid => "inventory.invalid",
            ErrorCode::RegoEval => "rego.eval",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    /// `document` is 1-based within a multi-document YAML file.
    #[error("{path} (document {document}): invalid YAML/JSON: {message}")]
    Yaml {
        path: PathBuf,
        document: usize,
        message: String,
    },
    #[error("ConstraintTemplate {template:?}: {message}")]
    TemplateInvalid { template: String, message: String },
    #[error(
        "ConstraintTemplate {template:?}: only CEL (K8sNativeValidation) code is given; CEL is not supported, only the Rego engine"
    )]
    TemplateCelOnly { template: String },
    #[error("ConstraintTemplate {template:?}: Rego does not compile: {message}")]
    RegoCompile { template: String, message: String },
    #[error("constraint {constraint:?}: {message}")]
    ConstraintInvalid { constraint: String, message: String },
    /// The constraint does not fit the template's schema (gator's "schema validation failed",
    /// what a Suite test with `invalid: true` expects).
    #[error("constraint {constraint:?}: schema validation failed: {message}")]
    ConstraintSchema { constraint: String, message: String },
    #[error("constraint {constraint:?}: no ConstraintTemplate defines kind {kind:?}")]
    ConstraintUnknownKind { constraint: String, kind: String },
    #[error("invalid review: {message}")]
    ReviewInvalid { message: String },
    #[error("invalid inventory object: {message}")]
    InventoryInvalid { message: String },
    #[error("constraint {constraint:?} (template {template:?}): Rego evaluation failed: {message}")]
    RegoEval {
        template: String,
        constraint: String,
        message: String,
    },
    /// Any of the above, found while loading `path` (document `document`, 1-based).
    #[error("{path} (document {document}): {source}")]
    InDocument {
        path: PathBuf,
        document: usize,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The machine code of this error (of the inner error for [`Error::InDocument`]).
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    pub fn error_code(&self) -> ErrorCode {
        match self {
            Error::Io { .. } => ErrorCode::Io,
            Error::Yaml { .. } => ErrorCode::YamlInvalid,
            Error::TemplateInvalid { .. } => ErrorCode::TemplateInvalid,
            Error::TemplateCelOnly { .. } => ErrorCode::TemplateCelOnly,
            Error::RegoCompile { .. } => ErrorCode::RegoCompile,
            Error::ConstraintInvalid { .. } => ErrorCode::ConstraintInvalid,
            Error::ConstraintSchema { .. } => ErrorCode::ConstraintSchema,
            Error::ConstraintUnknownKind { .. } => ErrorCode::ConstraintUnknownKind,
            Error::ReviewInvalid { .. } => ErrorCode::ReviewInvalid,
            Error::InventoryInvalid { .. } => ErrorCode::InventoryInvalid,
            Error::RegoEval { .. } => ErrorCode::RegoEval,
            Error::InDocument { source, .. } => source.error_code(),
        }
    }

    /// Attaches the file and document this error was found in.
    pub fn in_document(self, path: impl Into<PathBuf>, document: usize) -> Error {
        Error::InDocument {
            path: path.into(),
            document,
            source: Box::new(self),
        }
    }
}
