//! The Kubernetes validating admission webhook: `POST /v1/admission` takes an
//! `AdmissionReview` (`admission.k8s.io/v1`, or `v1beta1`) from the API server, evaluates its
//! request against the Gatekeeper ConstraintTemplates and Constraints of `[admission]`
//! (`countersign_gatekeeper::PolicySet`), and answers as Gatekeeper's validating webhook does
//! (facts from its `pkg/webhook/policy.go`):
//!
//! - a violation of a `deny` constraint: `allowed: false`, `status: {code: 403, reason:
//!   "Forbidden", message}`, the message being each `"[constraint-name] msg"`, one per line;
//! - a violation of a `warn` constraint: allowed, `"[constraint-name] msg"` in `warnings`
//!   (and `status.code` 299 when there are warnings, 200 otherwise);
//! - a violation of a `dryrun` constraint: allowed, only logged and audited;
//! - a policy that cannot be evaluated: `allowed: false` with `status.code` 500, in the
//!   review like Gatekeeper's `admission.Errored`, so the API server refuses the object
//!   whatever the webhook's `failurePolicy` (fail closed).
//!
//! As at Gatekeeper's webhook (and unlike gator), a template whose `targets[0].operations`
//! does not list the request's operation (or `*`) is not evaluated for it.
//!
//! Every answer in a review is a decision: it is appended to the audit trail (action
//! `admission.review`) before it is sent, and if the trail cannot take it the API server gets
//! 503 and no answer. Refused calls (wrong role, malformed review) write nothing, as on the
//! Data API; they are HTTP errors from `error.rs`, which the API server treats as a failed
//! call (its `failurePolicy` decides).
//!
//! What this webhook does not do, unlike Gatekeeper in a cluster: it has no inventory of the
//! cluster, so constraints of referential templates (those reading `data.inventory`) are
//! skipped, logged and listed in the audit record (`skipped_referential`); it has no
//! Namespace objects, so `namespaceSelector` sees none; it does not validate Gatekeeper's own
//! resources, expand generators or apply mutators; and its namespace exclusions are the
//! constraints' own `match` and the `ValidatingWebhookConfiguration`'s `namespaceSelector`
//! (Gatekeeper's `Config` exclusions have no counterpart here).

use std::borrow::Cow;
use std::{path::PathBuf, sync::Arc};

use axum::{
    Extension, Json,
    extract::{State, rejection::BytesRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use countersign_audit::{NewRecord, Outcome, RecordKind};
use countersign_gatekeeper::{
    EnforcementAction, PolicySet, Review, ReviewOutcome,
    load::{PolicyFile, read_policy_files},
};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{ApiError, decode_json, transfers::subject_of};
use crate::{
    app::{AppState, Caller},
    config::AdmissionConfig,
    policy::mask::mask_decision,
};

pub const ACTION_ADMISSION: &str = "admission.review";
pub const ADMISSION_ROLES: &[&str] = &["admission"];
/// The path the bundle's `system.log.mask` rule sees for admission decisions.
const MASK_PATH: &str = "countersign/admission/review";
/// The key under which the response's `auditAnnotations` carry our decision id; the API
/// server prefixes it with the webhook's name in the cluster's audit log, which links that
/// log to our trail.
const AUDIT_ANNOTATION_DECISION_ID: &str = "decision-id";
/// Longest `request.uid` accepted (the API server sends a 36-character UUID).
const UID_BYTES_MAX: usize = 128;
/// HTTP 299: the code Gatekeeper puts in `status` of an allowed response with warnings.
const STATUS_CODE_WARNING: u16 = 299;

/// The compiled admission policies, loaded once at start (`Gateway::build`).
pub struct AdmissionPolicies {
    policy_set: Arc<PolicySet>,
    /// `sha256:` and 16 hex digits of the policy files' paths and bytes: the audit records'
    /// `bundle_revision`, so an auditor can tell which policies decided.
    revision: String,
    /// Bounds the reviews evaluated at once (`evaluations_in_flight_max`), each of which
    /// holds a blocking thread.
    evaluations: Arc<Semaphore>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdmissionLoadError {
    #[error(transparent)]
    Policies(#[from] countersign_gatekeeper::Error),
    #[error(
        "no Constraint found under {paths}: a webhook without constraints would allow everything"
    )]
    NoConstraints { paths: String },
    #[error("loading the admission policies failed: {0}")]
    Task(String),
}

impl AdmissionPolicies {
    /// Loads and compiles `[admission] policies`. CPU work (Rego compiles): call it on a
    /// blocking thread.
    pub fn load(config: &AdmissionConfig) -> Result<AdmissionPolicies, AdmissionLoadError> {
        // One read of the files: the revision covers exactly the text the set compiled.
        let files = read_policy_files(&config.policies)?;
        let policy_set = PolicySet::load_files(&files)?;
        if policy_set.constraints().next().is_none() {
            return Err(AdmissionLoadError::NoConstraints {
                paths: display_paths(&config.policies),
            });
        }
        let revision = policy_files_revision(&files);
        let referential_kinds: Vec<&str> = policy_set
            .templates()
            .filter(|template| template.is_referential())
            .map(|template| template.kind())
            .collect();
        let skipped: Vec<&str> = policy_set
            .constraints()
            .filter(|constraint| referential_kinds.contains(&constraint.kind()))
            .map(|constraint| constraint.name())
            .collect();
        if !skipped.is_empty() {
            tracing::warn!(
                constraints = ?skipped,
                "these constraints read data.inventory, which the webhook does not have: they are skipped at admission (check them with `countersign gatekeeper test`)"
            );
        }
        // Gatekeeper "autorejects" a namespaced object under a namespaceSelector when it does
        // not know the Namespace; the webhook never does.
        let namespace_selectors: Vec<&str> = policy_set
            .constraints()
            .filter(|constraint| {
                constraint
                    .document()
                    .pointer("/spec/match/namespaceSelector")
                    .is_some_and(|selector| !selector.is_null())
            })
            .map(|constraint| constraint.name())
            .collect();
        if !namespace_selectors.is_empty() {
            tracing::warn!(
                constraints = ?namespace_selectors,
                "these constraints select namespaces by label, but the webhook has no Namespace objects: they refuse every namespaced object they would otherwise match"
            );
        }
        tracing::info!(
            templates = policy_set.templates().count(),
            constraints = policy_set.constraints().count(),
            %revision,
            paths = %display_paths(&config.policies),
            "admission policies loaded"
        );
        Ok(AdmissionPolicies {
            policy_set: Arc::new(policy_set),
            revision,
            evaluations: Arc::new(Semaphore::new(config.evaluations_in_flight_max)),
        })
    }

    pub fn revision(&self) -> &str {
        &self.revision
    }

    pub fn policy_set(&self) -> &PolicySet {
        &self.policy_set
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A digest of the policy files the set was loaded from, in load order, each by its path
/// relative to its configured root (so replicas with different mount points agree) and its
/// bytes. The crate's walk decides which files those are (hidden names, such as a ConfigMap
/// volume's `..data` links, are skipped).
fn policy_files_revision(files: &[PolicyFile]) -> String {
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.relative_path.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update((file.text.len() as u64).to_be_bytes());
        hasher.update(file.text.as_bytes());
    }
    let digest = hasher.finalize();
    format!("sha256:{}", hex::encode(&digest[..8]))
}

/// The `AdmissionReview` versions the API server may send (`admissionReviewVersions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReviewVersion {
    V1,
    V1beta1,
}

impl ReviewVersion {
    fn parse(api_version: &str) -> Option<ReviewVersion> {
        match api_version {
            "admission.k8s.io/v1" => Some(ReviewVersion::V1),
            "admission.k8s.io/v1beta1" => Some(ReviewVersion::V1beta1),
            _ => None,
        }
    }

    /// The response is of the request's version, as the API server requires.
    fn api_version(self) -> &'static str {
        match self {
            ReviewVersion::V1 => "admission.k8s.io/v1",
            ReviewVersion::V1beta1 => "admission.k8s.io/v1beta1",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    fn parse(operation: &str) -> Option<Operation> {
        match operation {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            "CONNECT" => Some(Operation::Connect),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }

    /// The object under review: the existing one (`oldObject`) for a DELETE, else `object`.
    fn object_field(self) -> &'static str {
        match self {
            Operation::Delete => "oldObject",
            _ => "object",
        }
    }
}

/// The fields of an `AdmissionReview` the webhook reads itself (the policy input is built
/// from the whole document by `Review::from_admission_review`). Unknown fields are allowed:
/// the API server adds new ones over time.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionReviewWire {
    api_version: String,
    kind: String,
    request: RequestWire,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestWire {
    uid: String,
    kind: GroupVersionKindWire,
    operation: String,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    user_info: Option<UserInfoWire>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct GroupVersionKindWire {
    #[serde(default)]
    group: String,
    version: String,
    kind: String,
}

#[derive(Debug, Deserialize)]
struct UserInfoWire {
    #[serde(default)]
    username: Option<String>,
}

/// A checked admission request: what is logged, audited and echoed.
#[derive(Debug)]
struct AdmissionRequest {
    version: ReviewVersion,
    uid: String,
    group: String,
    kind_version: String,
    kind: String,
    sub_resource: Option<String>,
    namespace: Option<String>,
    /// `request.name`, or the object's `metadata.name` (a CREATE with `generateName` has
    /// neither), as Gatekeeper names the resource in its logs.
    name: Option<String>,
    operation: Operation,
    username: Option<String>,
    dry_run: bool,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("admission_review.invalid", message)
}

impl AdmissionRequest {
    /// Checks the review at the edge; every refusal is a 400 naming the field.
    fn parse(document: &Value) -> Result<AdmissionRequest, ApiError> {
        if !document.is_object() {
            return Err(invalid("the body must be an AdmissionReview object"));
        }
        let wire: AdmissionReviewWire =
            serde_path_to_error::deserialize(document).map_err(|error| {
                let path = error.path().to_string();
                let inner = error.into_inner();
                if path == "." {
                    invalid(format!("AdmissionReview: {inner}"))
                } else {
                    invalid(format!("{path}: {inner}"))
                }
            })?;
        let version = ReviewVersion::parse(&wire.api_version).ok_or_else(|| {
            invalid(format!(
                "apiVersion: {:?} is not admission.k8s.io/v1 or admission.k8s.io/v1beta1",
                wire.api_version
            ))
        })?;
        if wire.kind != "AdmissionReview" {
            return Err(invalid(format!(
                "kind: {:?} is not AdmissionReview",
                wire.kind
            )));
        }
        let request = wire.request;
        if request.uid.is_empty() || request.uid.len() > UID_BYTES_MAX {
            return Err(invalid(format!(
                "request.uid: must be 1 to {UID_BYTES_MAX} bytes"
            )));
        }
        if request.kind.kind.is_empty() || request.kind.version.is_empty() {
            return Err(invalid("request.kind: kind and version must not be empty"));
        }
        let operation = Operation::parse(&request.operation).ok_or_else(|| {
            invalid(format!(
                "request.operation: {:?} is not CREATE, UPDATE, DELETE or CONNECT",
                request.operation
            ))
        })?;
        let object = &document["request"][operation.object_field()];
        if !object.is_object() {
            return Err(invalid(format!(
                "request.{}: a {} review must carry the object{}",
                operation.object_field(),
                operation.as_str(),
                if operation == Operation::Delete {
                    " being deleted (API servers since Kubernetes 1.15 send it)"
                } else {
                    ""
                }
            )));
        }
        let non_empty = |value: Option<String>| value.filter(|value| !value.is_empty());
        let name = non_empty(request.name).or_else(|| {
            object["metadata"]["name"]
                .as_str()
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
        });
        // Gatekeeper treats a Namespace as cluster-scoped even when server-side apply sends
        // its own name as the request's namespace.
        let is_namespace = request.kind.group.is_empty() && request.kind.kind == "Namespace";
        Ok(AdmissionRequest {
            version,
            uid: request.uid,
            group: request.kind.group,
            kind_version: request.kind.version,
            kind: request.kind.kind,
            sub_resource: non_empty(request.sub_resource),
            namespace: non_empty(request.namespace).filter(|_| !is_namespace),
            name,
            operation,
            username: request.user_info.and_then(|user| non_empty(user.username)),
            dry_run: request.dry_run.unwrap_or(false),
        })
    }

    /// What the audit record shows of the request: who did what to which object, never the
    /// object's contents (those are only in the sealed input).
    fn summary(&self) -> Value {
        json!({
            "uid": self.uid,
            "api_version": self.version.api_version(),
            "kind": {"group": self.group, "version": self.kind_version, "kind": self.kind},
            "sub_resource": self.sub_resource,
            "namespace": self.namespace,
            "name": self.name,
            "operation": self.operation.as_str(),
            "user": self.username,
            "dry_run": self.dry_run,
        })
    }
}

/// The request as sealed in the audit trail: complete, except a Secret's values, which are
/// not evidence of a policy decision and must not become readable to revealers.
fn sealed_request(document: &Value, request: &AdmissionRequest) -> Value {
    let mut sealed = document["request"].clone();
    if request.group.is_empty() && request.kind == "Secret" {
        for field in ["object", "oldObject"] {
            if let Some(object) = sealed.get_mut(field).and_then(Value::as_object_mut) {
                for values in ["data", "stringData"] {
                    if object.remove(values).is_some() {
                        object.insert(values.to_owned(), json!("(removed)"));
                    }
                }
            }
        }
    }
    sealed
}

/// What the policies said about one review.
enum Evaluation {
    Reviewed(ReviewOutcome),
    /// The policies could not be evaluated (fail closed: not allowed).
    Failed {
        code: &'static str,
        message: String,
    },
}

/// The webhook's answer, built from an evaluation.
struct Verdict {
    allowed: bool,
    /// `status` of the AdmissionResponse.
    status: Value,
    warnings: Vec<String>,
    outcome: Outcome,
}

impl Verdict {
    fn of(evaluation: &Evaluation) -> Verdict {
        match evaluation {
            Evaluation::Failed { message, .. } => Verdict {
                allowed: false,
                status: json!({
                    "code": 500,
                    "message": format!("the admission policies could not be evaluated: {message}"),
                }),
                warnings: Vec::new(),
                outcome: Outcome::Error,
            },
            Evaluation::Reviewed(outcome) => {
                let messages = |action: EnforcementAction| -> Vec<String> {
                    outcome
                        .violations
                        .iter()
                        .filter(|violation| violation.enforcement_action == action)
                        .map(|violation| violation.display_message())
                        .collect()
                };
                let denials = messages(EnforcementAction::Deny);
                let warnings = messages(EnforcementAction::Warn);
                if denials.is_empty() {
                    let code = if warnings.is_empty() {
                        200
                    } else {
                        STATUS_CODE_WARNING
                    };
                    Verdict {
                        allowed: true,
                        status: json!({"code": code}),
                        warnings,
                        outcome: Outcome::Allow,
                    }
                } else {
                    Verdict {
                        allowed: false,
                        status: json!({
                            "code": 403,
                            "reason": "Forbidden",
                            "message": denials.join("\n"),
                        }),
                        warnings,
                        outcome: Outcome::Deny,
                    }
                }
            }
        }
    }

    /// The `AdmissionReview` sent back to the API server.
    fn review(&self, request: &AdmissionRequest, decision_id: Uuid) -> Value {
        let mut response = json!({
            "uid": request.uid,
            "allowed": self.allowed,
            "status": self.status,
            "auditAnnotations": {AUDIT_ANNOTATION_DECISION_ID: decision_id.to_string()},
        });
        if !self.warnings.is_empty() {
            response["warnings"] = json!(self.warnings);
        }
        json!({
            "apiVersion": request.version.api_version(),
            "kind": "AdmissionReview",
            "response": response,
        })
    }
}

/// The audit record's `result`: the answer and every violation, dryrun ones included.
fn result_document(evaluation: &Evaluation, verdict: &Verdict) -> Value {
    match evaluation {
        Evaluation::Reviewed(outcome) => json!({
            "allowed": verdict.allowed,
            "status_code": verdict.status["code"],
            "violations": outcome.violations.iter().map(|violation| json!({
                "constraint_kind": violation.constraint_kind,
                "constraint_name": violation.constraint_name,
                "enforcement_action": violation.enforcement_action.as_str(),
                "msg": violation.msg,
            })).collect::<Vec<_>>(),
            "skipped_referential": outcome.skipped_referential,
        }),
        Evaluation::Failed { code, message } => json!({
            "allowed": verdict.allowed,
            "status_code": verdict.status["code"],
            "error": {"code": code, "message": message},
        }),
    }
}

/// `POST /v1/admission` (role `admission`).
pub async fn review(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !caller.identity.has_any_role(ADMISSION_ROLES) {
        return Err(ApiError::RoleRequired {
            roles: ADMISSION_ROLES,
        });
    }
    let Some(policies) = state.admission.get().cloned() else {
        return Err(ApiError::Conflict {
            code: "admission.not_configured",
            message: "the admission webhook is not configured ([admission] policies)".into(),
        });
    };
    let body_bytes_max = state
        .config
        .admission
        .as_ref()
        .map_or(state.config.limits.body_bytes_max, |admission| {
            admission.body_bytes_max
        });
    let document: Value = decode_json(&headers, body, body_bytes_max)?;
    let request = AdmissionRequest::parse(&document)?;
    let review =
        Review::from_admission_review(&document).map_err(|error| invalid(error.to_string()))?;

    // Rego is CPU-bound: evaluate on a blocking thread, at most `evaluations_in_flight_max`
    // at once; a request waits for a slot within the request timeout.
    let permit = policies
        .evaluations
        .clone()
        .acquire_owned()
        .await
        .expect("the admission semaphore is never closed");
    let policy_set = policies.policy_set.clone();
    let evaluated = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        policy_set.review_admission(&review)
    })
    .await;
    let evaluation = match evaluated {
        Ok(Ok(outcome)) => Evaluation::Reviewed(outcome),
        Ok(Err(error)) => Evaluation::Failed {
            code: error.code(),
            message: error.to_string(),
        },
        Err(error) => Evaluation::Failed {
            code: "internal",
            message: format!("the evaluation task failed: {error}"),
        },
    };
    let verdict = Verdict::of(&evaluation);
    let decision_id = Uuid::now_v7();
    log_decision(&request, &evaluation, &verdict, decision_id);

    // The record before the answer: no record, no answer (503).
    let record_id = Uuid::now_v7();
    let sealed_input = super::reveal::seal_input(
        &state,
        record_id,
        || Cow::Owned(sealed_request(&document, &request)),
        &[],
    )
    .map_err(|error| {
        tracing::error!(%decision_id, error = %error, "cannot seal the admission request; not answering");
        ApiError::from(error)
    })?;
    let engine = state.policy.load_full();
    let masked = mask_decision(
        &engine,
        MASK_PATH,
        decision_id,
        request.summary(),
        result_document(&evaluation, &verdict),
    );
    let record = NewRecord {
        record_id,
        kind: RecordKind::Decision,
        decision_id,
        timestamp: OffsetDateTime::now_utc(),
        subject: subject_of(&caller),
        source_address: caller.remote_address.to_string(),
        action: ACTION_ADMISSION.to_owned(),
        masked_input: masked.input,
        result: masked.result,
        bundle_revision: policies.revision.clone(),
        outcome: verdict.outcome,
        redaction: masked.redaction,
        sealed_input,
    };
    if let Err(error) = state.store.append_audit(vec![record]).await {
        tracing::error!(%decision_id, uid = %request.uid, error = %error, "cannot audit the admission decision; not answering");
        return Err(ApiError::Unavailable {
            code: "audit.unavailable",
            message: "the admission decision could not be recorded in the audit trail; nothing was answered".into(),
        });
    }
    state
        .metrics
        .record_decision(ACTION_ADMISSION, verdict.outcome.as_str(), &[]);
    Ok(Json(verdict.review(&request, decision_id)).into_response())
}

/// Every violation is logged, as Gatekeeper's `--log-denies` does (dryrun ones are only
/// logged and audited), and so is a review that could not be evaluated.
fn log_decision(
    request: &AdmissionRequest,
    evaluation: &Evaluation,
    verdict: &Verdict,
    decision_id: Uuid,
) {
    let resource_group = request.group.as_str();
    let resource_kind = request.kind.as_str();
    let namespace = request.namespace.as_deref().unwrap_or("");
    let name = request.name.as_deref().unwrap_or("");
    let user = request.username.as_deref().unwrap_or("");
    let operation = request.operation.as_str();
    match evaluation {
        Evaluation::Failed { code, message } => tracing::error!(
            %decision_id, uid = %request.uid, resource_group, resource_kind, namespace, name,
            operation, user, code, error = %message,
            "admission policies could not be evaluated; denied"
        ),
        Evaluation::Reviewed(outcome) => {
            for violation in &outcome.violations {
                tracing::info!(
                    %decision_id, uid = %request.uid, resource_group, resource_kind, namespace,
                    name, operation, user,
                    constraint_kind = %violation.constraint_kind,
                    constraint_name = %violation.constraint_name,
                    enforcement_action = violation.enforcement_action.as_str(),
                    msg = %violation.msg,
                    "admission violation"
                );
            }
            tracing::debug!(
                %decision_id, uid = %request.uid, resource_group, resource_kind, namespace, name,
                operation, allowed = verdict.allowed,
                violations = outcome.violations.len(),
                skipped_referential = ?outcome.skipped_referential,
                "admission reviewed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review_document(request: Value) -> Value {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
    }

    fn deployment_request(operation: &str) -> Value {
        json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": "payments",
            "operation": operation,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": {"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "api", "namespace": "payments"}},
            "oldObject": null,
            "dryRun": false,
        })
    }

    fn check_invalid(document: Value, message_part: &str) {
        match AdmissionRequest::parse(&document) {
            Err(ApiError::BadRequest { code, message }) => {
                assert_eq!(code, "admission_review.invalid");
                assert!(
                    message.contains(message_part),
                    "{message:?} lacks {message_part:?}"
                );
            }
            other => panic!("expected a 400 for {document}, got {other:?}"),
        }
    }

    #[test]
    fn a_review_is_checked_at_the_edge_and_each_refusal_names_the_field() {
        let request = AdmissionRequest::parse(&review_document(deployment_request("CREATE")))
            .expect("a CREATE review parses");
        assert_eq!(request.name.as_deref(), Some("api"), "name from the object");
        assert_eq!(
            request.summary(),
            json!({
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "api_version": "admission.k8s.io/v1",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "sub_resource": null, "namespace": "payments", "name": "api",
                "operation": "CREATE", "user": "alice", "dry_run": false,
            })
        );

        check_invalid(json!([1]), "AdmissionReview object");
        check_invalid(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
            "missing field `request`",
        );
        let mut document = review_document(deployment_request("CREATE"));
        document["apiVersion"] = json!("admission.k8s.io/v2");
        check_invalid(document, "apiVersion");
        let mut document = review_document(deployment_request("CREATE"));
        document["kind"] = json!("Review");
        check_invalid(document, "kind: \"Review\"");
        let mut request = deployment_request("CREATE");
        request.as_object_mut().unwrap().remove("uid");
        check_invalid(review_document(request), "missing field `uid`");
        let mut request = deployment_request("CREATE");
        request["uid"] = json!("");
        check_invalid(review_document(request), "request.uid");
        let mut request = deployment_request("CREATE");
        request["uid"] = json!(7);
        check_invalid(review_document(request), "request.uid");
        let mut request = deployment_request("CREATE");
        request.as_object_mut().unwrap().remove("kind");
        check_invalid(review_document(request), "missing field `kind`");
        check_invalid(
            review_document(deployment_request("PATCH")),
            "request.operation",
        );
        let mut request = deployment_request("UPDATE");
        request["object"] = Value::Null;
        check_invalid(review_document(request), "request.object");
        // A DELETE reviews the existing object.
        check_invalid(
            review_document(deployment_request("DELETE")),
            "request.oldObject",
        );
    }

    #[test]
    fn v1beta1_is_answered_in_kind_and_namespaces_are_cluster_scoped() {
        let mut request = deployment_request("DELETE");
        request["oldObject"] = request["object"].take();
        request["kind"] = json!({"group": "", "version": "v1", "kind": "Namespace"});
        request["namespace"] = json!("payments");
        request["name"] = json!("payments");
        let mut document = review_document(request);
        document["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let request = AdmissionRequest::parse(&document).unwrap();
        assert_eq!(request.version, ReviewVersion::V1beta1);
        assert_eq!(request.namespace, None);
        assert_eq!(request.name.as_deref(), Some("payments"));
        let verdict = Verdict::of(&Evaluation::Reviewed(ReviewOutcome {
            violations: Vec::new(),
            skipped_referential: Vec::new(),
        }));
        let decision_id = Uuid::nil();
        assert_eq!(
            verdict.review(&request, decision_id),
            json!({
                "apiVersion": "admission.k8s.io/v1beta1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                    "allowed": true,
                    "status": {"code": 200},
                    "auditAnnotations": {"decision-id": decision_id.to_string()},
                },
            })
        );
    }

    #[test]
    fn a_secrets_values_are_not_sealed() {
        let mut request = deployment_request("UPDATE");
        request["kind"] = json!({"group": "", "version": "v1", "kind": "Secret"});
        request["object"] =
            json!({"kind": "Secret", "metadata": {"name": "db"}, "data": {"password": "c2VjcmV0"}});
        request["oldObject"] = json!({"kind": "Secret", "metadata": {"name": "db"}, "stringData": {"password": "old"}});
        let document = review_document(request);
        let parsed = AdmissionRequest::parse(&document).unwrap();
        let sealed = sealed_request(&document, &parsed);
        assert_eq!(sealed["object"]["data"], "(removed)");
        assert_eq!(sealed["oldObject"]["stringData"], "(removed)");
        assert_eq!(sealed["object"]["metadata"]["name"], "db");
        assert!(!sealed.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn the_revision_covers_policy_files_only_and_ignores_configmap_links() {
        let revision_of = |root: &PathBuf| {
            policy_files_revision(&read_policy_files(std::slice::from_ref(root)).unwrap())
        };
        let directory = tempfile::TempDir::new().unwrap();
        let root = directory.path().join("policies");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/template.yaml"), "kind: ConstraintTemplate\n").unwrap();
        let first = revision_of(&root);
        assert!(
            first.starts_with("sha256:") && first.len() == 7 + 16,
            "{first}"
        );
        std::fs::write(root.join("README.md"), "not a policy").unwrap();
        std::fs::create_dir_all(root.join("..data")).unwrap();
        std::fs::write(root.join("..data/template.yaml"), "a copy").unwrap();
        assert_eq!(revision_of(&root), first);
        std::fs::write(
            root.join("a/template.yaml"),
            "kind: ConstraintTemplate # changed\n",
        )
        .unwrap();
        assert_ne!(revision_of(&root), first);
    }
}
