//! [`PolicySet`]: compiled templates + constraints, and the evaluation of a review as
//! Gatekeeper's Rego driver does it (frameworks `drivers/rego`): for each constraint whose
//! `spec.match` matches, `data.<package>.violation` is evaluated with
//! `input = {"review": ..., "parameters": ...}` and `data.inventory`; each element's `msg`
//! (elements without one are dropped) and `details` (default `{}`) become a [`Violation`].
//!
//! Gatekeeper behaviours kept on purpose:
//! - a Rego evaluation error (or our time limit) is not an error of the review: it becomes a
//!   violation of each affected constraint whose message is the error (frameworks
//!   `Driver.Query`), so a broken template fails closed under `deny`;
//! - a matching error (e.g. `namespaceSelector` without a known Namespace) "autorejects": a
//!   violation with the matching error as message (frameworks `constraintMatchResult`);
//! - results are ordered by constraint kind, then name (frameworks `Response.Sort`).
//!
//! Concurrency: regorus' `Engine` is `Send` but not `Sync`. Each template is compiled once
//! into a prototype engine; evaluations take an engine from a small per-template pool (a
//! clone of the prototype when the pool is empty — cheap, the compiled modules are shared)
//! and put it back afterwards, so concurrent webhook requests do not serialise on one lock.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use serde_json::{Value, json};

use crate::constraint::{Constraint, EnforcementAction};
use crate::deprecated;
use crate::error::Error;
use crate::inventory::Inventory;
use crate::load::PolicyFile;
use crate::review::Review;
use crate::schema;
use crate::template::{RegoVersion, Template};

/// Time one constraint's evaluation may take before it is reported as an evaluation error.
pub const EVALUATION_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Engines kept warm per template for reuse; more concurrent evaluations clone throwaway ones.
const ENGINE_POOL_MAX: usize = 16;
/// regorus messages of errors OPA's compiler would have reported when loading the module.
const STATIC_ERROR_MARKERS: [&str; 4] = [
    "is unsafe",
    "could not find function",
    "used before definition",
    "unknown function",
];
/// OPA's default, which Gatekeeper keeps: a builtin error makes the expression undefined.
const STRICT_BUILTIN_ERRORS: bool = false;
/// Lines of Rego `print` output kept per evaluation are discarded; gathering them (instead of
/// regorus writing them to stderr) keeps a template's prints off our process output.
const GATHER_PRINTS: bool = true;

/// One violation of one constraint.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Violation {
    pub constraint_kind: String,
    pub constraint_name: String,
    pub enforcement_action: EnforcementAction,
    pub msg: String,
    pub details: Value,
}

impl Violation {
    /// `[constraint_name] msg`, as Gatekeeper's webhook words a denial or warning.
    pub fn display_message(&self) -> String {
        format!("[{}] {}", self.constraint_name, self.msg)
    }
}

/// The result of reviewing one object.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ReviewOutcome {
    pub violations: Vec<Violation>,
    /// Names of matching constraints of referential templates that were not evaluated
    /// because no inventory was given.
    pub skipped_referential: Vec<String>,
}

/// Where a review happens: frameworks applies some rules at one enforcement point only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnforcementPoint {
    /// `gator.gatekeeper.sh`: `gatekeeper verify` / `test`.
    Gator,
    /// `validation.gatekeeper.sh`: the admission webhook (template operations apply).
    Webhook,
}

struct CompiledTemplate {
    template: Template,
    /// `data.<package>.violation`.
    rule: String,
    prototype: Mutex<regorus::Engine>,
    pool: Mutex<Vec<regorus::Engine>>,
}

struct CompiledConstraint {
    constraint: Constraint,
    /// `input.parameters`, converted once (defaults applied) rather than on every review.
    parameters: regorus::Value,
}

/// Compiled templates and their constraints. `Send + Sync`: share it behind an `Arc`.
pub struct PolicySet {
    /// By template kind.
    templates: BTreeMap<String, CompiledTemplate>,
    /// By (kind, name): the order Gatekeeper reports results in.
    constraints: BTreeMap<(String, String), CompiledConstraint>,
    evaluation_timeout: Duration,
}

impl Default for PolicySet {
    fn default() -> Self {
        PolicySet::new()
    }
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("templates", &self.templates.keys().collect::<Vec<_>>())
            .field("constraints", &self.constraints.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PolicySet {
    pub fn new() -> PolicySet {
        PolicySet {
            templates: BTreeMap::new(),
            constraints: BTreeMap::new(),
            evaluation_timeout: Duration::from_millis(EVALUATION_TIMEOUT_MS_DEFAULT),
        }
    }

    /// Bounds each constraint's Rego evaluation (applies to templates added afterwards too).
    pub fn set_evaluation_timeout(&mut self, timeout: Duration) {
        self.evaluation_timeout = timeout;
        let timer = timer_config(timeout);
        for compiled in self.templates.values_mut() {
            lock(&compiled.prototype).set_execution_timer_config(timer);
            lock(&compiled.pool).clear();
        }
    }

    /// Compiles the template's Rego (v0 unless the template says v1) and adds it, replacing
    /// a template of the same kind (its constraints stay, as in Gatekeeper).
    pub fn add_template(&mut self, template: Template) -> Result<(), Error> {
        let (engine, rule) = compile(&template, self.evaluation_timeout)?;
        self.templates.insert(
            template.kind().to_owned(),
            CompiledTemplate {
                template,
                rule,
                prototype: Mutex::new(engine),
                pool: Mutex::new(Vec::new()),
            },
        );
        Ok(())
    }

    /// Adds a constraint of a known template kind, replacing one of the same kind and name.
    /// Its parameters are validated against, and defaulted from, the template's schema.
    pub fn add_constraint(&mut self, mut constraint: Constraint) -> Result<(), Error> {
        let Some(compiled) = self.templates.get(constraint.kind()) else {
            return Err(Error::ConstraintUnknownKind {
                constraint: constraint.name().to_owned(),
                kind: constraint.kind().to_owned(),
            });
        };
        if let Some(parameters_schema) = compiled.template.parameters_schema() {
            schema::validate(
                constraint.parameters(),
                parameters_schema,
                "spec.parameters",
            )
            .map_err(|message| Error::ConstraintSchema {
                constraint: constraint.name().to_owned(),
                message,
            })?;
            schema::apply_defaults(constraint.parameters_mut(), parameters_schema);
        }
        let parameters = regorus::Value::from(constraint.parameters().clone());
        self.constraints.insert(
            (constraint.kind().to_owned(), constraint.name().to_owned()),
            CompiledConstraint {
                constraint,
                parameters,
            },
        );
        Ok(())
    }

    /// Every YAML/JSON file under `paths` (recursively, in sorted order; multi-document YAML):
    /// ConstraintTemplates first, then Constraints; other documents are ignored.
    pub fn load_paths(paths: &[PathBuf]) -> Result<PolicySet, Error> {
        PolicySet::load_files(&crate::load::read_policy_files(paths)?)
    }

    /// As [`PolicySet::load_paths`], from files already read
    /// ([`crate::load::read_policy_files`]).
    pub fn load_files(files: &[PolicyFile]) -> Result<PolicySet, Error> {
        let documents = crate::load::documents_of(files)?;
        let mut set = PolicySet::new();
        for document in documents.iter().filter(|document| document.is_template()) {
            let template = Template::from_value(&document.value)
                .map_err(|error| error.in_document(&document.path, document.index))?;
            set.add_template(template)
                .map_err(|error| error.in_document(&document.path, document.index))?;
        }
        for document in documents.iter().filter(|document| document.is_constraint()) {
            let constraint = Constraint::from_value(&document.value)
                .map_err(|error| error.in_document(&document.path, document.index))?;
            set.add_constraint(constraint)
                .map_err(|error| error.in_document(&document.path, document.index))?;
        }
        Ok(set)
    }

    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.templates.values().map(|compiled| &compiled.template)
    }

    /// Constraints ordered by kind, then name.
    pub fn constraints(&self) -> impl Iterator<Item = &Constraint> {
        self.constraints
            .values()
            .map(|compiled| &compiled.constraint)
    }

    pub fn template(&self, kind: &str) -> Option<&Template> {
        self.templates.get(kind).map(|compiled| &compiled.template)
    }

    /// Reviews one object against every constraint (see the module docs for the semantics).
    /// `inventory: None` means the caller has none (the webhook): constraints of referential
    /// templates are then skipped and named in [`ReviewOutcome::skipped_referential`].
    pub fn review(
        &self,
        review: &Review,
        inventory: Option<&Inventory>,
    ) -> Result<ReviewOutcome, Error> {
        self.review_at(review, inventory, EnforcementPoint::Gator)
    }

    /// Reviews an admission request as Gatekeeper's validating webhook does: as
    /// [`PolicySet::review`] without an inventory, and only with templates whose
    /// `targets[0].operations` include the request's operation
    /// ([`Template::matches_operation`]; gator does not apply that filter).
    pub fn review_admission(&self, review: &Review) -> Result<ReviewOutcome, Error> {
        self.review_at(review, None, EnforcementPoint::Webhook)
    }

    fn review_at(
        &self,
        review: &Review,
        inventory: Option<&Inventory>,
        enforcement_point: EnforcementPoint,
    ) -> Result<ReviewOutcome, Error> {
        let namespace = review.match_namespace().or_else(|| {
            let name = review.namespace();
            if name.is_empty() {
                None
            } else {
                inventory.and_then(|inventory| inventory.namespace_object(name))
            }
        });
        let review_value = regorus::Value::from(review.as_value().clone());
        let mut inventory_data: Option<regorus::Value> = None;
        let mut outcome = ReviewOutcome::default();

        for ((kind, name), compiled_constraint) in &self.constraints {
            let constraint = &compiled_constraint.constraint;
            let compiled = self
                .templates
                .get(kind)
                .expect("constraints are only added for known templates");
            if enforcement_point == EnforcementPoint::Webhook
                && !compiled.template.matches_operation(review.operation())
            {
                continue;
            }
            let matched = constraint.matcher().matches_review(
                review.object(),
                review.old_object(),
                namespace,
            );
            match matched {
                Ok(false) => continue,
                Err(error) => {
                    outcome.violations.push(Violation {
                        constraint_kind: kind.clone(),
                        constraint_name: name.clone(),
                        enforcement_action: constraint.enforcement_action(),
                        msg: format!("unable to match constraints: {error}"),
                        details: Value::Null,
                    });
                    continue;
                }
                Ok(true) => {}
            }
            let data = if compiled.template.is_referential() {
                let Some(inventory) = inventory else {
                    outcome.skipped_referential.push(name.clone());
                    continue;
                };
                if inventory.is_empty() {
                    None
                } else {
                    Some(
                        inventory_data
                            .get_or_insert_with(|| {
                                regorus::Value::from(json!({"inventory": inventory.to_value()}))
                            })
                            .clone(),
                    )
                }
            } else {
                None
            };
            let mut input = regorus::Value::new_object();
            {
                let fields = input.as_object_mut().expect("new_object is an object");
                fields.insert(regorus::Value::from("review"), review_value.clone());
                fields.insert(
                    regorus::Value::from("parameters"),
                    compiled_constraint.parameters.clone(),
                );
            }
            let results = match self.evaluate(compiled, input, data, constraint) {
                Ok(results) => results,
                Err(message) => {
                    outcome.violations.push(Violation {
                        constraint_kind: kind.clone(),
                        constraint_name: name.clone(),
                        enforcement_action: constraint.enforcement_action(),
                        msg: message,
                        details: Value::Null,
                    });
                    continue;
                }
            };
            // Gatekeeper's hook turns each element `r` into `{"key", "details", "msg"}` and
            // collects those in a set: elements alike in `msg` and `details` are one result.
            let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
            for result in results {
                // `r.msg` undefined drops the result (the hook's body fails); a non-string msg
                // fails the whole query in frameworks' `ToResult`.
                let Some(msg) = result.get("msg") else {
                    continue;
                };
                let Value::String(msg) = msg else {
                    return Err(Error::RegoEval {
                        template: compiled.template.name().to_owned(),
                        constraint: name.clone(),
                        message: format!("extracting message binding: msg is not a string: {msg}"),
                    });
                };
                let details = result.get("details").cloned().unwrap_or_else(|| json!({}));
                if !seen.insert((msg.clone(), details.to_string())) {
                    continue;
                }
                outcome.violations.push(Violation {
                    constraint_kind: kind.clone(),
                    constraint_name: name.clone(),
                    enforcement_action: constraint.enforcement_action(),
                    msg: msg.clone(),
                    details,
                });
            }
        }
        Ok(outcome)
    }

    /// Evaluates the template's `violation` rule; the elements that are objects, or the
    /// evaluation error as Gatekeeper would word it in the violation it reports.
    fn evaluate(
        &self,
        compiled: &CompiledTemplate,
        input: regorus::Value,
        data: Option<regorus::Value>,
        constraint: &Constraint,
    ) -> Result<Vec<serde_json::Map<String, Value>>, String> {
        let pooled = lock(&compiled.pool).pop();
        let mut engine = pooled.unwrap_or_else(|| lock(&compiled.prototype).clone());
        // Changing an engine's data makes regorus analyse every module again before the next
        // evaluation (most of a review's time), so only referential templates' engines, whose
        // data.inventory changes with each review, ever get data; the others stay prepared.
        if compiled.template.is_referential() {
            engine.clear_data();
            if let Some(data) = data {
                engine
                    .add_data(data)
                    .map_err(|error| format!("loading data.inventory: {error}"))?;
            }
        } else {
            debug_assert!(
                data.is_none(),
                "data is only built for referential templates"
            );
        }
        engine.set_input(input);
        let result = engine.eval_rule(compiled.rule.clone());
        if GATHER_PRINTS {
            // Discard print output so it neither reaches stderr nor accumulates.
            let _ = engine.take_prints();
        }
        let value = match result {
            Ok(value) => value,
            Err(error) => {
                // An engine that failed mid-evaluation is dropped, not pooled.
                return Err(match error.downcast_ref::<regorus::LimitError>() {
                    Some(regorus::LimitError::TimeLimitExceeded { .. }) => format!(
                        "constraint {:?}: Rego evaluation exceeded its limit of {} ms",
                        constraint.name(),
                        self.evaluation_timeout.as_millis()
                    ),
                    _ => error.to_string(),
                });
            }
        };
        {
            let mut pool = lock(&compiled.pool);
            if pool.len() < ENGINE_POOL_MAX {
                pool.push(engine);
            }
        }
        let value = serde_json::to_value(&value).map_err(|error| error.to_string())?;
        Ok(match value {
            Value::Array(items) => items
                .into_iter()
                .filter_map(|item| match item {
                    Value::Object(object) => Some(object),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn timer_config(timeout: Duration) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit: timeout,
        // Check the clock every 64 work units: often enough for a ms-scale limit, rarely
        // enough not to show in a µs-scale evaluation.
        check_interval: NonZeroU32::new(64).expect("non-zero literal"),
    }
}

/// Builds the template's engine: entry module and libs in the template's Rego version, the
/// lib packages checked, the `violation` rule required.
fn compile(template: &Template, timeout: Duration) -> Result<(regorus::Engine, String), Error> {
    let rego_compile = |message: String| Error::RegoCompile {
        template: template.name().to_owned(),
        message,
    };
    let invalid = |message: String| Error::TemplateInvalid {
        template: template.name().to_owned(),
        message,
    };
    let v0 = template.rego_version() == RegoVersion::V0;
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(v0);
    engine.set_strict_builtin_errors(STRICT_BUILTIN_ERRORS);
    engine.set_gather_prints(GATHER_PRINTS);
    engine.set_execution_timer_config(timer_config(timeout));
    let package = engine
        .add_policy(
            format!("{}.rego", template.name()),
            template.rego().to_owned(),
        )
        .map_err(|error| rego_compile(error.to_string()))?;
    for (index, lib) in template.libs().iter().enumerate() {
        let lib_package = engine
            .add_policy(format!("{}/lib_{index}.rego", template.name()), lib.clone())
            .map_err(|error| rego_compile(error.to_string()))?;
        if !lib_package.starts_with("data.lib.") {
            return Err(invalid(format!(
                "invalid ConstraintTemplate: invalid libs: path {lib_package} not found in lib prefixes"
            )));
        }
    }
    // OPA's deprecated built-ins (`any`, `re_match`, ...): v0 modules have them (regorus
    // extensions, registered for v0 templates only); Rego v1 refuses their calls when parsing.
    // (The other way to be v1, `import rego.v1` in a v0 module, is refused by Gatekeeper's
    // import check already.)
    if v0 {
        deprecated::register(&mut engine, STRICT_BUILTIN_ERRORS).map_err(rego_compile)?;
    } else {
        let modules =
            std::iter::once(template.rego()).chain(template.libs().iter().map(String::as_str));
        if let Some(name) = modules.filter_map(deprecated::first_call).next() {
            return Err(rego_compile(format!(
                "deprecated built-in function calls in expression: {name}"
            )));
        }
    }
    let rule = format!("{package}.violation");
    if let Err(error) = engine.compile_with_entrypoint(&rule.as_str().into()) {
        let message = error.to_string();
        if message.contains("not a valid rule path") {
            return Err(invalid(
                "invalid ConstraintTemplate: invalid rego: invalid module: missing required rules: [violation]"
                    .into(),
            ));
        }
        return Err(rego_compile(message));
    }
    // regorus checks rule safety and resolves functions lazily, at evaluation, where OPA's
    // compiler refuses the module up front. One evaluation with an empty review surfaces the
    // errors reachable from it; only those that are static by nature refuse the template
    // (a runtime error on an empty review says nothing about the template).
    engine.set_input(regorus::Value::from(
        json!({"review": {}, "parameters": {}}),
    ));
    if let Err(error) = engine.eval_rule(rule.clone()) {
        let message = error.to_string();
        if STATIC_ERROR_MARKERS
            .iter()
            .any(|marker| message.contains(marker))
        {
            return Err(rego_compile(message));
        }
    }
    if GATHER_PRINTS {
        let _ = engine.take_prints();
    }
    engine.set_input(regorus::Value::Undefined);
    Ok((engine, rule))
}

// The webhook shares a PolicySet across tasks.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicySet>();
};
