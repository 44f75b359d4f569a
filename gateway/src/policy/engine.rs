//! The compiled policy: the RVM program for one entrypoint, a pool of VMs, and the
//! interpreter as fallback and reference.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use regorus::{
    Engine, Value,
    languages::rego::compiler::Compiler,
    rvm::{
        program::Program,
        vm::{RegoVM, VmError},
    },
    utils::limits::ExecutionTimerConfig,
};
use serde::Serialize;

use super::{Bundle, PolicyError};

/// How many VMs are kept warm for reuse; more concurrent decisions build throwaway ones.
const VM_POOL_MAX: usize = 64;
/// Instructions one decision may execute. The time limit is the primary bound; this one
/// stops a runaway loop deterministically (the VM's own default, 25,000, is too tight for
/// bundles bigger than ours).
const VM_INSTRUCTIONS_MAX: usize = 10_000_000;
/// Entrypoints compiled and kept per bundle besides the main one (proxy routes' rules).
const SIBLINGS_MAX: usize = 64;

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
    /// Other entrypoints of this bundle, see [`PolicyEngine::for_entrypoint`].
    siblings: Mutex<HashMap<String, Arc<PolicyEngine>>>,
    /// The bundle's decision-log mask rule (`data.system.log.mask`), if it has one.
    mask: Option<Arc<PolicyEngine>>,
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
        let mut engine = Self::from_interpreter(
            interpreter,
            bundle.revision.clone(),
            Value::from(bundle.data.clone()),
            entrypoint,
            timer,
        )?;
        // Compiled with the bundle, so a mask rule that cannot compile refuses the bundle
        // instead of failing (and erasing) every decision's input later.
        engine.mask = match engine.for_entrypoint(super::mask::MASK_RULE) {
            Ok(mask) => Some(mask),
            Err(PolicyError::Compile(message)) if message.contains("not a valid rule path") => None,
            Err(error) => return Err(error),
        };
        Ok(engine)
    }

    /// The bundle's `system.log.mask` rule, compiled; `None` if the bundle has none.
    pub fn decision_log_mask(&self) -> Option<&PolicyEngine> {
        self.mask.as_deref()
    }

    fn from_interpreter(
        mut interpreter: Engine,
        revision: String,
        data: Value,
        entrypoint: &str,
        timer: ExecutionTimerConfig,
    ) -> Result<PolicyEngine, PolicyError> {
        // Evaluate once so a bundle whose entrypoint does not exist fails here, not per request.
        let probe = interpreter
            .eval_rule(entrypoint.to_owned())
            .map_err(|error| PolicyError::Compile(error.to_string()));
        if let Err(PolicyError::Compile(message)) = &probe
            && message.contains("not a valid rule path")
        {
            return Err(PolicyError::Compile(message.clone()));
        }
        let program = compile_program(&mut interpreter, entrypoint);
        let evaluator = match &program {
            Ok(_) => Evaluator::Vm,
            Err(error) => {
                tracing::warn!(error = %error, entrypoint, "bytecode VM cannot compile the bundle; using the interpreter");
                Evaluator::Interpreter
            }
        };
        Ok(PolicyEngine {
            revision,
            entrypoint: entrypoint.to_owned(),
            evaluator,
            timer,
            timeout_ms: u64::try_from(timer.limit.as_millis()).unwrap_or(u64::MAX),
            data,
            program: program.ok(),
            vm_pool: Mutex::new(Vec::new()),
            interpreter: Mutex::new(interpreter),
            siblings: Mutex::new(HashMap::new()),
            mask: None,
        })
    }

    /// The engine for another entrypoint of the same bundle (e.g. a proxy route's rule),
    /// compiled on first use and kept with this engine: compile once per bundle per
    /// entrypoint, and a reload (a new `PolicyEngine`) recompiles them from the new bundle.
    /// Callers warm the cache when they build the engine so no request pays for a compile.
    pub fn for_entrypoint(&self, entrypoint: &str) -> Result<Arc<PolicyEngine>, PolicyError> {
        if let Some(sibling) = self.lock_siblings().get(entrypoint) {
            return Ok(sibling.clone());
        }
        // Compiled outside the lock: a compile takes milliseconds and must not stall lookups
        // of the other entrypoints. Two racing first uses compile twice; the first one wins.
        let interpreter = self
            .interpreter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let sibling = Arc::new(Self::from_interpreter(
            interpreter,
            self.revision.clone(),
            self.data.clone(),
            entrypoint,
            self.timer,
        )?);
        let mut siblings = self.lock_siblings();
        if siblings.len() >= SIBLINGS_MAX && !siblings.contains_key(entrypoint) {
            // Past the bound the engine still answers, it just is not kept.
            return Ok(sibling);
        }
        Ok(siblings
            .entry(entrypoint.to_owned())
            .or_insert(sibling)
            .clone())
    }

    fn lock_siblings(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PolicyEngine>>> {
        self.siblings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
            .map_err(|error| self.classify_interpreter(error))?;
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
            Err(error) => return Err(self.classify_vm(error)),
        };
        to_json(result)
    }

    /// The VM reports its limits as typed errors.
    fn classify_vm(&self, error: VmError) -> PolicyError {
        match error {
            VmError::TimeLimitExceeded { .. } => PolicyError::Timeout(self.timeout_ms),
            VmError::InstructionLimitExceeded { .. } => {
                PolicyError::LimitExceeded(error.to_string())
            }
            other => PolicyError::Evaluation(other.to_string()),
        }
    }

    /// The interpreter's errors are `anyhow`; its time limit arrives as a `LimitError`.
    fn classify_interpreter(&self, error: anyhow::Error) -> PolicyError {
        match error.downcast_ref::<regorus::LimitError>() {
            Some(regorus::LimitError::TimeLimitExceeded { .. }) => {
                PolicyError::Timeout(self.timeout_ms)
            }
            Some(limit) => PolicyError::LimitExceeded(limit.to_string()),
            None => PolicyError::Evaluation(error.to_string()),
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

impl PolicyEngine {
    /// The document at `path` (e.g. `data.countersign.transfer.decision`, or a whole package
    /// such as `data.countersign.transfer`) for `input`, as OPA's Data API answers it:
    /// `Ok(None)` when undefined. Rules go through the compiled entrypoint cache (the VM);
    /// other documents through the interpreter.
    pub fn query(
        &self,
        path: &str,
        input: Option<&serde_json::Value>,
    ) -> Result<Option<serde_json::Value>, PolicyError> {
        let undefined_input = serde_json::Value::Null;
        match self.for_entrypoint(path) {
            Ok(engine) => match engine.evaluate(input.unwrap_or(&undefined_input)) {
                Ok(value) => Ok(Some(value)),
                Err(PolicyError::Undefined) => Ok(None),
                Err(error) => Err(error),
            },
            Err(PolicyError::Compile(message)) if message.contains("not a valid rule path") => {
                self.query_document(path, input)
            }
            Err(error) => Err(error),
        }
    }

    fn query_document(
        &self,
        path: &str,
        input: Option<&serde_json::Value>,
    ) -> Result<Option<serde_json::Value>, PolicyError> {
        let mut engine = self
            .interpreter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        engine.set_input(input.map_or(Value::Undefined, |input| Value::from(input.clone())));
        let results = engine
            .eval_query(path.to_owned(), false)
            .map_err(|error| self.classify_interpreter(error))?;
        let value = results
            .result
            .into_iter()
            .next()
            .and_then(|result| result.expressions.into_iter().next())
            .map(|expression| expression.value);
        match value {
            None | Some(Value::Undefined) => Ok(None),
            Some(value) => to_json(value).map(Some),
        }
    }
}
