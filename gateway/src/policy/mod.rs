//! The in-process policy engine: a Rego bundle compiled once, evaluated per decision.
//!
//! Serving uses regorus's bytecode VM (`regorus::rvm`): the decision entrypoint is compiled
//! into a `Program` once per bundle and each decision only sets the input and executes
//! (~µs). Where the VM cannot compile a bundle we fall back to the regorus interpreter, and a
//! test keeps both agreeing on a generated corpus. The engine never decides "allow" on an
//! error: callers turn every `PolicyError` into a deny (fail closed).

use std::path::PathBuf;

mod bundle;
mod engine;
pub mod mask;
pub mod signing;
pub mod testing;

pub use bundle::{Bundle, LoadOptions, Manifest, Module, SignaturePolicy};
pub use engine::{Evaluator, PolicyEngine};
pub use testing::{TestOutcome, run_bundle_tests};

/// The rule the gateway asks for each transfer.
pub const TRANSFER_DECISION: &str = "data.countersign.transfer.decision";
/// The rule the gateway asks for each approve/reject of a held transfer (maker-checker).
pub const APPROVAL_DECISION: &str = "data.countersign.approval.decision";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy bundle {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("policy bundle is too large: {0}")]
    TooLarge(String),
    /// A bundle file is malformed; the message starts with `file:row:col` where known.
    #[error("{0}")]
    Invalid(String),
    #[error("policy bundle signature verification failed: {0}")]
    Signature(#[from] signing::SignatureError),
    #[error("policy compile error: {0}")]
    Compile(String),
    #[error("policy evaluation failed: {0}")]
    Evaluation(String),
    #[error("policy evaluation exceeded its time limit of {0} ms")]
    Timeout(u64),
    #[error("policy evaluation exceeded a limit: {0}")]
    LimitExceeded(String),
    #[error("policy returned no decision (undefined)")]
    Undefined,
}

impl PolicyError {
    /// A machine-readable code for decision records and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::Timeout(_) => "policy.timeout",
            PolicyError::LimitExceeded(_) => "policy.limit_exceeded",
            PolicyError::Undefined => "policy.undefined",
            _ => "policy.error",
        }
    }
}
