//! The in-process policy engine: a Rego bundle compiled once, evaluated per decision.
//!
//! Serving uses regorus's bytecode VM (`regorus::rvm`): the decision entrypoint is compiled
//! into a `Program` once per bundle and each decision only sets the input and executes
//! (~µs). Where the VM cannot compile a bundle we fall back to the regorus interpreter, and a
//! test keeps both agreeing on a generated corpus. The engine never decides "allow" on an
//! error: callers turn every `PolicyError` into a deny (fail closed).

use std::{
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use regorus::{
    Engine, Value,
    languages::rego::compiler::Compiler,
    rvm::{program::Program, vm::RegoVM},
    utils::limits::ExecutionTimerConfig,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The rule the gateway asks for each transfer.
pub const TRANSFER_DECISION: &str = "data.countersign.transfer.decision";

/// A bundle bigger than this is refused: policies are code, not data dumps.
const BUNDLE_FILES_MAX: usize = 2_000;
const BUNDLE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// How many VMs are kept warm for reuse; more concurrent decisions build throwaway ones.
const VM_POOL_MAX: usize = 64;
/// Instructions one decision may execute. The time limit is the primary bound; this one
/// stops a runaway loop deterministically (the VM's own default, 25,000, is too tight for
/// bundles bigger than ours).
const VM_INSTRUCTIONS_MAX: usize = 10_000_000;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy bundle {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("policy bundle is too large: {0}")]
    TooLarge(String),
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

/// A policy bundle read from disk: Rego modules and data documents.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub root: PathBuf,
    /// `.manifest` revision, or a content hash when the manifest has none.
    pub revision: String,
    /// (path relative to the root, source)
    pub modules: Vec<(String, String)>,
    /// All `data.json` documents merged at their directory paths.
    pub data: serde_json::Value,
}

impl Bundle {
    pub fn load(root: &Path) -> Result<Bundle, PolicyError> {
        let read_error = |path: &Path, error: &dyn std::fmt::Display| PolicyError::Read {
            path: path.to_owned(),
            message: error.to_string(),
        };
        let mut files = Vec::new();
        collect_files(root, root, &mut files).map_err(|error| read_error(root, &error))?;
        files.sort();
        if files.len() > BUNDLE_FILES_MAX {
            return Err(PolicyError::TooLarge(format!(
                "{} files (at most {BUNDLE_FILES_MAX})",
                files.len()
            )));
        }
        let mut total_bytes = 0_u64;
        let mut hasher = Sha256::new();
        let mut modules = Vec::new();
        let mut data = serde_json::Value::Object(Default::default());
        let mut manifest_revision = None;
        for relative in files {
            let path = root.join(&relative);
            let name = relative.to_string_lossy().replace('\\', "/");
            let is_rego = name.ends_with(".rego");
            let is_data = name == "data.json" || name.ends_with("/data.json");
            let is_manifest = name == ".manifest";
            if !(is_rego || is_data || is_manifest) {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|error| read_error(&path, &error))?;
            total_bytes += text.len() as u64;
            if total_bytes > BUNDLE_BYTES_MAX {
                return Err(PolicyError::TooLarge(format!(
                    "more than {BUNDLE_BYTES_MAX} bytes"
                )));
            }
            hasher.update((name.len() as u64).to_be_bytes());
            hasher.update(name.as_bytes());
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
            if is_rego {
                modules.push((name, text));
            } else if is_data {
                let document: serde_json::Value = serde_json::from_str(&text).map_err(|error| {
                    read_error(
                        &path,
                        &format!("{name}:{}:{}: {error}", error.line(), error.column()),
                    )
                })?;
                let directory: Vec<&str> = name
                    .trim_end_matches("data.json")
                    .split('/')
                    .filter(|segment| !segment.is_empty())
                    .collect();
                merge_at(&mut data, &directory, document)
                    .map_err(|message| read_error(&path, &message))?;
            } else {
                let manifest: serde_json::Value =
                    serde_json::from_str(&text).map_err(|error| read_error(&path, &error))?;
                manifest_revision = manifest
                    .get("revision")
                    .and_then(|revision| revision.as_str())
                    .map(str::to_owned);
            }
        }
        if modules.is_empty() {
            return Err(read_error(root, &"no .rego files found"));
        }
        let content_hash = hex::encode(hasher.finalize());
        let revision = match manifest_revision {
            Some(revision) if !revision.is_empty() => revision,
            _ => format!("sha256:{}", &content_hash[..16]),
        };
        Ok(Bundle {
            root: root.to_owned(),
            revision,
            modules,
            data,
        })
    }

    /// A fresh interpreter with the serving modules (not `*_test.rego`) and the data loaded.
    pub fn interpreter(&self) -> Result<Engine, PolicyError> {
        let mut engine = Engine::new();
        engine.set_rego_v0(false);
        for (name, source) in self
            .modules
            .iter()
            .filter(|(name, _)| !is_test_module(name))
        {
            engine
                .add_policy(name.clone(), source.clone())
                .map_err(|error| PolicyError::Compile(error.to_string()))?;
        }
        engine
            .add_data(Value::from(self.data.clone()))
            .map_err(|error| PolicyError::Compile(error.to_string()))?;
        Ok(engine)
    }
}

/// OPA's convention: test modules end in `_test.rego`; they never serve decisions.
fn is_test_module(name: &str) -> bool {
    name.ends_with("_test.rego")
}

fn collect_files(root: &Path, directory: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            collect_files(root, &path, out)?;
        } else if file_type.is_file() {
            out.push(
                path.strip_prefix(root)
                    .expect("walked below root")
                    .to_owned(),
            );
        }
        if out.len() > BUNDLE_FILES_MAX {
            return Ok(());
        }
    }
    Ok(())
}

fn merge_at(
    data: &mut serde_json::Value,
    path: &[&str],
    document: serde_json::Value,
) -> Result<(), String> {
    let mut cursor = data;
    for segment in path {
        let object = cursor
            .as_object_mut()
            .ok_or_else(|| format!("data path conflict at `{segment}`"))?;
        cursor = object
            .entry((*segment).to_owned())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
    match (cursor, document) {
        (serde_json::Value::Object(target), serde_json::Value::Object(source)) => {
            for (key, value) in source {
                if target.insert(key.clone(), value).is_some() {
                    return Err(format!("data key `{key}` defined twice"));
                }
            }
            Ok(())
        }
        _ => Err("data.json must hold a JSON object".to_owned()),
    }
}

/// Which evaluator serves decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Evaluator {
    Vm,
    Interpreter,
}

/// A compiled bundle ready to decide. Cheap to share (`Arc`), built once per bundle.
pub struct PolicyEngine {
    revision: String,
    entrypoint: String,
    evaluator: Evaluator,
    timer: ExecutionTimerConfig,
    timeout_ms: u64,
    data: Value,
    program: Option<Arc<Program>>,
    vm_pool: Mutex<Vec<RegoVM>>,
    interpreter: Mutex<Engine>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("revision", &self.revision)
            .field("entrypoint", &self.entrypoint)
            .field("evaluator", &self.evaluator)
            .finish()
    }
}

impl PolicyEngine {
    /// Compiles `entrypoint` of `bundle`; the VM is used unless it cannot compile the bundle.
    pub fn compile(
        bundle: &Bundle,
        entrypoint: &str,
        timeout: Duration,
    ) -> Result<PolicyEngine, PolicyError> {
        let timer = ExecutionTimerConfig {
            limit: timeout,
            // Check the clock every 64 work units: frequent enough for a ms-scale limit,
            // rare enough not to show in a µs-scale decision.
            check_interval: NonZeroU32::new(64).expect("non-zero literal"),
        };
        let mut interpreter = bundle.interpreter()?;
        interpreter.set_execution_timer_config(timer);
        // Evaluate once so a bundle whose entrypoint does not exist fails here, not per request.
        let probe = interpreter
            .eval_rule(entrypoint.to_owned())
            .map_err(|error| PolicyError::Compile(error.to_string()));
        if let Err(PolicyError::Compile(message)) = &probe
            && message.contains("not a valid rule path")
        {
            return Err(PolicyError::Compile(message.clone()));
        }
        let data = Value::from(bundle.data.clone());
        let program = compile_program(&mut interpreter, entrypoint);
        let evaluator = match &program {
            Ok(_) => Evaluator::Vm,
            Err(error) => {
                tracing::warn!(error = %error, entrypoint, "bytecode VM cannot compile the bundle; using the interpreter");
                Evaluator::Interpreter
            }
        };
        Ok(PolicyEngine {
            revision: bundle.revision.clone(),
            entrypoint: entrypoint.to_owned(),
            evaluator,
            timer,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            data,
            program: program.ok(),
            vm_pool: Mutex::new(Vec::new()),
            interpreter: Mutex::new(interpreter),
        })
    }

    pub fn revision(&self) -> &str {
        &self.revision
    }

    pub fn evaluator(&self) -> Evaluator {
        self.evaluator
    }

    /// Evaluates the entrypoint for `input` with the serving evaluator.
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<serde_json::Value, PolicyError> {
        match &self.program {
            Some(program) => self.evaluate_vm(program, input),
            None => self.evaluate_interpreter(input),
        }
    }

    /// Evaluates with the interpreter regardless of the serving evaluator (for the
    /// differential test and as a diagnostic).
    pub fn evaluate_interpreter(
        &self,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, PolicyError> {
        let mut engine = self
            .interpreter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        engine.set_input(Value::from(input.clone()));
        let result = engine
            .eval_rule(self.entrypoint.clone())
            .map_err(|error| self.classify(error.to_string()))?;
        to_json(result)
    }

    fn evaluate_vm(
        &self,
        program: &Arc<Program>,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, PolicyError> {
        let pooled = self
            .vm_pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let mut vm = match pooled {
            Some(vm) => vm,
            None => {
                let mut vm = RegoVM::new();
                vm.load_program(program.clone());
                vm.set_data(self.data.clone())
                    .map_err(|error| PolicyError::Evaluation(error.to_string()))?;
                vm.set_execution_timer_config(Some(self.timer));
                vm.set_max_instructions(VM_INSTRUCTIONS_MAX);
                vm
            }
        };
        vm.set_input(Value::from(input.clone()));
        let result = vm.execute();
        // A VM that failed mid-run is dropped rather than reused: its state is not ours to trust.
        let result = match result {
            Ok(value) => {
                let mut pool = self
                    .vm_pool
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if pool.len() < VM_POOL_MAX {
                    pool.push(vm);
                }
                value
            }
            Err(error) => return Err(self.classify(error.to_string())),
        };
        to_json(result)
    }

    fn classify(&self, message: String) -> PolicyError {
        let lowered = message.to_ascii_lowercase();
        if lowered.contains("time limit") || lowered.contains("timelimit") {
            PolicyError::Timeout(self.timeout_ms)
        } else if lowered.contains("instruction limit") {
            PolicyError::LimitExceeded(message)
        } else {
            PolicyError::Evaluation(message)
        }
    }
}

fn compile_program(interpreter: &mut Engine, entrypoint: &str) -> Result<Arc<Program>, String> {
    let rule: regorus::Rc<str> = entrypoint.into();
    let compiled = interpreter
        .compile_with_entrypoint(&rule)
        .map_err(|error| error.to_string())?;
    let program = Compiler::compile_from_policy(&compiled, &[entrypoint])
        .map_err(|error| error.to_string())?;
    Ok(program)
}

fn to_json(value: Value) -> Result<serde_json::Value, PolicyError> {
    if value == Value::Undefined {
        return Err(PolicyError::Undefined);
    }
    serde_json::to_value(&value).map_err(|error| PolicyError::Evaluation(error.to_string()))
}

/// Result of one Rego unit test (rules named `test_*`).
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    /// Full rule path, e.g. `data.countersign.transfer_test.test_allows`.
    pub name: String,
    pub passed: bool,
    pub error: Option<String>,
}

/// Runs the bundle's `test_*` rules with the interpreter (the VM has no `with`).
/// A test passes when it evaluates to exactly `true`.
pub fn run_bundle_tests(bundle: &Bundle) -> Result<Vec<TestOutcome>, PolicyError> {
    let mut engine = Engine::new();
    engine.set_rego_v0(false);
    let mut tests = Vec::new();
    for (name, source) in &bundle.modules {
        let package = engine
            .add_policy(name.clone(), source.clone())
            .map_err(|error| PolicyError::Compile(error.to_string()))?;
        for line in source.lines() {
            let Some(rest) = line.strip_prefix("test_") else {
                continue;
            };
            let identifier: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let path = format!("{package}.test_{identifier}");
            if !tests.contains(&path) {
                tests.push(path);
            }
        }
    }
    engine
        .add_data(Value::from(bundle.data.clone()))
        .map_err(|error| PolicyError::Compile(error.to_string()))?;
    let mut outcomes = Vec::with_capacity(tests.len());
    for name in tests {
        let outcome = match engine.eval_rule(name.clone()) {
            Ok(Value::Bool(true)) => TestOutcome {
                name,
                passed: true,
                error: None,
            },
            Ok(other) => TestOutcome {
                name,
                passed: false,
                error: Some(format!("evaluated to {other}")),
            },
            Err(error) => TestOutcome {
                name,
                passed: false,
                error: Some(error.to_string()),
            },
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}
