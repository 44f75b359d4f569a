//! The auditors' workspace API (role `auditor` only): search the sealed trail, read one record
//! with its inclusion proof against a signed checkpoint, list checkpoints, prove consistency
//! between two tree sizes, decision stats for the console's chart, and the checkpoint public
//! key.
//!
//! Every call — allowed or refused, whatever the reason — is appended to the audit trail
//! before the answer is sent (kind decision, action `audit.query` / `audit.read` /
//! `audit.proof` / `audit.stats`, subject = the caller, masked input = the request's
//! parameters as given, an `account` filter only as its blind-index token, result =
//! `{allowed, reason, count, sequences}`); if that append fails the caller gets 503 and no
//! data (PCI DSS 10.2.1.3: every access to audit logs is itself logged).
//!
//! Parameters are validated strictly: an unknown, repeated or malformed one is 400
//! `query.invalid` naming it, before anything is read.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Extension, Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use countersign_audit::{
    NewRecord, Outcome, RecordKind, SealedRecord,
    checkpoint::Checkpoint,
    encoding::format_timestamp,
    index::{
        AuditQuery, QUERY_LIMIT_DEFAULT, QUERY_LIMIT_MAX, StatsBucket, decimal_to_minor_units,
    },
    merkle,
};
use countersign_ledger::{AccountId, Currency, NO_POLICY_BUNDLE};
use serde::Serialize;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;

use super::{ApiError, transfers::subject_of};
use crate::app::{AppState, Caller};

/// The only role that may use the workspace.
pub const AUDITOR_ROLES: &[&str] = &["auditor"];
pub const ACTION_QUERY: &str = "audit.query";
pub const ACTION_READ: &str = "audit.read";
pub const ACTION_PROOF: &str = "audit.proof";
pub const ACTION_STATS: &str = "audit.stats";
/// Longest parameter value echoed into the audit record of a call; longer ones are cut, so a
/// caller cannot bloat the trail.
const ECHOED_VALUE_CHARS_MAX: usize = 256;
/// Most parameters echoed into the audit record (a valid call has at most 16).
const ECHOED_PARAMETERS_MAX: usize = 32;
/// Longest text filter value (common names, fingerprints, roles, revisions).
const TEXT_FILTER_BYTES_MAX: usize = 256;
/// Checkpoints per listing page unless the caller says.
const CHECKPOINTS_LIMIT_DEFAULT: u32 = 100;

/// Why a workspace call did not answer with data. `http/error.rs` maps each to its status and
/// code; [`WorkspaceError::audit_reason`] is what the call's audit record says.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("the caller lacks the auditor role")]
    RoleRequired,
    #[error("parameter `{parameter}`: {message}")]
    InvalidQuery { parameter: String, message: String },
    #[error("no sealed audit record {0}")]
    RecordNotFound(String),
    #[error("no checkpoint has been signed yet")]
    NoCheckpoint,
    #[error("no checkpoint signing key is configured")]
    NotConfigured,
    #[error("the audit store could not be read: {0}")]
    Store(#[from] countersign_ledger::LedgerError),
    #[error("the audit tree is incomplete: {0}")]
    Tree(String),
    /// The call itself could not be audited, so nothing is answered.
    #[error("the call could not be audited: {0}")]
    NotAudited(String),
}

impl WorkspaceError {
    fn invalid(parameter: &str, message: impl Into<String>) -> WorkspaceError {
        WorkspaceError::InvalidQuery {
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }

    fn audit_reason(&self) -> (&'static str, Outcome) {
        match self {
            WorkspaceError::RoleRequired => ("role.required", Outcome::Deny),
            WorkspaceError::InvalidQuery { .. } => ("query.invalid", Outcome::Deny),
            WorkspaceError::RecordNotFound(_) => ("audit_record.not_found", Outcome::Allow),
            WorkspaceError::NoCheckpoint => ("checkpoint.not_found", Outcome::Allow),
            WorkspaceError::NotConfigured => ("checkpoints.not_configured", Outcome::Deny),
            WorkspaceError::Store(_) => ("store.unavailable", Outcome::Error),
            WorkspaceError::Tree(_) => ("audit_tree.incomplete", Outcome::Error),
            WorkspaceError::NotAudited(_) => ("audit.unavailable", Outcome::Error),
        }
    }
}

/// What a call's audit record says it returned.
#[derive(Debug, Default)]
struct Returned {
    /// Records returned, by sequence (a page has at most 1,000).
    sequences: Vec<i64>,
    /// Anything else worth keeping (e.g. tree sizes of checkpoints returned).
    detail: Option<Value>,
}

/// A record as the API shows it (the export's record line has the same fields).
#[derive(Debug, Serialize)]
pub struct AuditRecordView {
    pub sequence: i64,
    pub record_id: Uuid,
    pub kind: RecordKind,
    pub decision_id: Uuid,
    pub timestamp: String,
    pub subject: countersign_audit::Subject,
    pub source_address: String,
    pub action: String,
    pub masked_input: Value,
    pub result: Value,
    pub bundle_revision: String,
    pub outcome: Outcome,
    pub redaction: countersign_audit::Redaction,
    pub previous_hash: String,
    pub hash: String,
}

impl AuditRecordView {
    pub fn from_sealed(sealed: SealedRecord) -> AuditRecordView {
        let record = sealed.record;
        AuditRecordView {
            sequence: sealed.sequence,
            record_id: record.record_id,
            kind: record.kind,
            decision_id: record.decision_id,
            timestamp: format_timestamp(record.timestamp),
            subject: record.subject,
            source_address: record.source_address,
            action: record.action,
            masked_input: record.masked_input,
            result: record.result,
            bundle_revision: record.bundle_revision,
            outcome: record.outcome,
            redaction: record.redaction,
            previous_hash: hex::encode(sealed.previous_hash),
            hash: hex::encode(sealed.hash),
        }
    }
}

/// The request's parameters, strictly: each at most once, only known names.
struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    fn parse(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        known: &[&str],
    ) -> Result<Params, WorkspaceError> {
        let Query(pairs) = query.map_err(|rejection| {
            WorkspaceError::invalid("(query string)", rejection.body_text())
        })?;
        let mut values = BTreeMap::new();
        for (name, value) in pairs {
            if !known.contains(&name.as_str()) {
                let shown: String = name.chars().take(64).collect();
                return Err(WorkspaceError::InvalidQuery {
                    message: format!("unknown parameter; known: {}", known.join(", ")),
                    parameter: shown,
                });
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(WorkspaceError::invalid(&name, "given more than once"));
            }
        }
        Ok(Params { values })
    }

    fn text(&self, name: &str) -> Result<Option<String>, WorkspaceError> {
        match self.values.get(name) {
            None => Ok(None),
            Some(value)
                if value.is_empty()
                    || value.len() > TEXT_FILTER_BYTES_MAX
                    || value.chars().any(char::is_control) =>
            {
                Err(WorkspaceError::invalid(
                    name,
                    format!(
                        "must be 1 to {TEXT_FILTER_BYTES_MAX} bytes without control characters"
                    ),
                ))
            }
            Some(value) => Ok(Some(value.clone())),
        }
    }

    fn time(&self, name: &str) -> Result<Option<OffsetDateTime>, WorkspaceError> {
        let Some(value) = self.values.get(name) else {
            return Ok(None);
        };
        let time = OffsetDateTime::parse(value, &Rfc3339).map_err(|error| {
            WorkspaceError::invalid(
                name,
                format!("must be an RFC 3339 time such as 2026-03-01T00:00:00Z ({error})"),
            )
        })?;
        if !time.nanosecond().is_multiple_of(1_000) {
            return Err(WorkspaceError::invalid(
                name,
                "must have at most 6 fraction digits (microseconds)",
            ));
        }
        Ok(Some(time.to_offset(time::UtcOffset::UTC)))
    }

    fn unsigned(&self, name: &str, maximum: u64) -> Result<Option<u64>, WorkspaceError> {
        let Some(value) = self.values.get(name) else {
            return Ok(None);
        };
        value
            .parse::<u64>()
            .ok()
            .filter(|number| *number <= maximum && value.bytes().all(|byte| byte.is_ascii_digit()))
            .map(Some)
            .ok_or_else(|| {
                WorkspaceError::invalid(name, format!("must be an integer 0..={maximum}"))
            })
    }

    /// The parameters as given, for the call's audit record: `account` as its token (or
    /// masked when there is no keyring), every value cut to a bound.
    fn echo(&self, account_token: Option<&str>) -> Value {
        let mut echoed = serde_json::Map::new();
        for (name, value) in self.values.iter().take(ECHOED_PARAMETERS_MAX) {
            let shown = if name == "account" {
                match account_token {
                    Some(token) => json!({"token": token}),
                    None => json!({"masked": countersign_audit::mask_account_number(value)}),
                }
            } else {
                Value::String(value.chars().take(ECHOED_VALUE_CHARS_MAX).collect())
            };
            echoed.insert(name.clone(), shown);
        }
        Value::Object(echoed)
    }
}

fn require_auditor(caller: &Caller) -> Result<(), WorkspaceError> {
    if caller.identity.has_any_role(AUDITOR_ROLES) {
        Ok(())
    } else {
        Err(WorkspaceError::RoleRequired)
    }
}

/// Appends the call's audit record, then answers: the data if the call succeeded and was
/// audited, the error otherwise, 503 if the record could not be written.
async fn audited(
    state: &AppState,
    caller: &Caller,
    action: &str,
    request: Value,
    answer: Result<(Response, Returned), WorkspaceError>,
) -> Result<Response, ApiError> {
    let (result, outcome) = match &answer {
        Ok((_, returned)) => {
            let mut result = json!({
                "allowed": true,
                "reason": "answered",
                "count": returned.sequences.len(),
                "sequences": returned.sequences,
            });
            if let Some(detail) = &returned.detail {
                result["detail"] = detail.clone();
            }
            (result, Outcome::Allow)
        }
        Err(error) => {
            let (reason, outcome) = error.audit_reason();
            (
                json!({"allowed": !matches!(outcome, Outcome::Deny), "reason": reason, "count": 0, "sequences": []}),
                outcome,
            )
        }
    };
    // Decided by the gateway's role rule, not by a policy bundle.
    let appended = append_access_record(
        state,
        caller,
        action,
        request,
        result,
        outcome,
        NO_POLICY_BUNDLE.to_owned(),
    )
    .await;
    if let Err(error) = appended {
        tracing::error!(action, error = %error, "audit workspace call could not be audited; answering nothing");
        return Err(WorkspaceError::NotAudited(error.to_string()).into());
    }
    match answer {
        Ok((response, _)) => Ok(response),
        Err(error) => Err(error.into()),
    }
}

/// Appends the record of one look at the audit trail (a workspace call, an export, a
/// reveal), then counts it: kind decision, subject = the caller, no sealed input (what was
/// shown is never stored again). Each caller says what a failed append means for its answer.
pub(super) async fn append_access_record(
    state: &AppState,
    caller: &Caller,
    action: &str,
    masked_input: Value,
    result: Value,
    outcome: Outcome,
    bundle_revision: String,
) -> Result<(), countersign_ledger::LedgerError> {
    let record = NewRecord {
        record_id: Uuid::now_v7(),
        kind: RecordKind::Decision,
        decision_id: Uuid::now_v7(),
        timestamp: OffsetDateTime::now_utc(),
        subject: subject_of(caller),
        source_address: caller.remote_address.to_string(),
        action: action.to_owned(),
        masked_input,
        result,
        bundle_revision,
        outcome,
        redaction: Default::default(),
        sealed_input: None,
    };
    state.store.append_audit(vec![record]).await?;
    state.metrics.record_decision(action, outcome.as_str(), &[]);
    Ok(())
}

const RECORDS_PARAMETERS: &[&str] = &[
    "from",
    "to",
    "kind",
    "outcome",
    "subject_cn",
    "subject_fingerprint",
    "role",
    "account",
    "amount_min",
    "amount_max",
    "currency",
    "bundle_revision",
    "decision_id",
    "after",
    "limit",
];

/// `GET /v1/audit/records`.
pub async fn records(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = Params::parse(query, RECORDS_PARAMETERS);
    // The token is computed once: it goes into the query and into the audit record.
    let account_token = match &params {
        Ok(params) => params
            .values
            .get("account")
            .and_then(|account| AccountId::parse(account).ok())
            .and_then(|account| {
                state
                    .keyring
                    .as_ref()
                    .map(|keyring| keyring.account_token(account.as_str()))
            }),
        Err(_) => None,
    };
    let request = json!({
        "path": "/v1/audit/records",
        "query": params.as_ref().map_or(Value::Null, |params| params.echo(account_token.as_deref())),
    });
    let answer = async {
        require_auditor(&caller)?;
        let params = params?;
        let query = parse_records_query(&state, &params, account_token.clone())?;
        let page_limit = query.limit;
        let mut records = state
            .store
            .audit_query(&AuditQuery {
                limit: page_limit + 1,
                ..query
            })
            .await?;
        let next_after = if records.len() > page_limit as usize {
            records.truncate(page_limit as usize);
            records.last().map(|record| record.sequence)
        } else {
            None
        };
        let sequences = records.iter().map(|record| record.sequence).collect();
        let views: Vec<AuditRecordView> = records
            .into_iter()
            .map(AuditRecordView::from_sealed)
            .collect();
        Ok((
            Json(json!({"records": views, "next_after": next_after})).into_response(),
            Returned {
                sequences,
                detail: None,
            },
        ))
    }
    .await;
    audited(&state, &caller, ACTION_QUERY, request, answer).await
}

fn parse_records_query(
    state: &AppState,
    params: &Params,
    account_token: Option<String>,
) -> Result<AuditQuery, WorkspaceError> {
    let from = params.time("from")?;
    let to = params.time("to")?;
    if let (Some(from), Some(to)) = (from, to)
        && to <= from
    {
        return Err(WorkspaceError::invalid("to", "must be after from"));
    }
    let kind = params
        .values
        .get("kind")
        .map(|kind| {
            RecordKind::parse(kind).ok_or_else(|| {
                WorkspaceError::invalid(
                    "kind",
                    "must be decision, posting, reservation, approval or release",
                )
            })
        })
        .transpose()?;
    let outcome = params
        .values
        .get("outcome")
        .map(|outcome| {
            Outcome::parse(outcome).ok_or_else(|| {
                WorkspaceError::invalid(
                    "outcome",
                    "must be allow, deny, pending, error, posted or voided",
                )
            })
        })
        .transpose()?;
    let currency = params
        .values
        .get("currency")
        .map(|code| {
            Currency::parse(code)
                .map_err(|error| WorkspaceError::invalid("currency", error.to_string()))
        })
        .transpose()?;
    let amount = |name: &str| -> Result<Option<i64>, WorkspaceError> {
        let Some(text) = params.values.get(name) else {
            return Ok(None);
        };
        let currency = currency.ok_or_else(|| {
            WorkspaceError::invalid(
                name,
                "needs currency: amounts compare in minor units of one currency",
            )
        })?;
        decimal_to_minor_units(text, currency.minor_units())
            .map(Some)
            .ok_or_else(|| {
                WorkspaceError::invalid(
                    name,
                    format!(
                        "must be a plain decimal amount with at most {} decimals for {}",
                        currency.minor_units(),
                        currency.code()
                    ),
                )
            })
    };
    let amount_min_minor = amount("amount_min")?;
    let amount_max_minor = amount("amount_max")?;
    if let (Some(minimum), Some(maximum)) = (amount_min_minor, amount_max_minor)
        && maximum < minimum
    {
        return Err(WorkspaceError::invalid(
            "amount_max",
            "must not be below amount_min",
        ));
    }
    let account_token = match params.values.get("account") {
        None => None,
        Some(account) => {
            AccountId::parse(account)
                .map_err(|error| WorkspaceError::invalid("account", error.to_string()))?;
            if state.keyring.is_none() {
                return Err(WorkspaceError::invalid(
                    "account",
                    "searching by account needs [audit.encryption]: accounts are indexed only as keyed tokens of the keyring's index secret",
                ));
            }
            account_token
        }
    };
    let decision_id = params
        .values
        .get("decision_id")
        .map(|text| {
            Uuid::parse_str(text)
                .map_err(|_| WorkspaceError::invalid("decision_id", "must be a UUID"))
        })
        .transpose()?;
    let after = params.unsigned("after", i64::MAX as u64)?.unwrap_or(0);
    let limit = params
        .unsigned("limit", u64::from(QUERY_LIMIT_MAX))?
        .unwrap_or(u64::from(QUERY_LIMIT_DEFAULT));
    if limit == 0 {
        return Err(WorkspaceError::invalid(
            "limit",
            format!("must be 1..={QUERY_LIMIT_MAX}"),
        ));
    }
    Ok(AuditQuery {
        from,
        to,
        kind,
        outcome,
        subject_common_name: params.text("subject_cn")?,
        subject_fingerprint: params.text("subject_fingerprint")?,
        role: params.text("role")?,
        account_token,
        currency: currency.map(|currency| currency.code().to_owned()),
        amount_min_minor,
        amount_max_minor,
        bundle_revision: params.text("bundle_revision")?,
        decision_id,
        after: i64::try_from(after).unwrap_or(i64::MAX),
        limit: u32::try_from(limit).unwrap_or(QUERY_LIMIT_MAX),
    })
}

/// Fetches the nodes `ids` and builds a proof with `build`.
pub(super) async fn with_nodes<T>(
    state: &AppState,
    ids: Vec<merkle::NodeId>,
    build: impl FnOnce(
        &dyn Fn(merkle::NodeId) -> Option<merkle::Hash>,
    ) -> Result<T, merkle::MerkleError>,
) -> Result<T, WorkspaceError> {
    let nodes = state.store.merkle_nodes(&ids).await?;
    build(&|id| nodes.get(&id).copied()).map_err(|error| WorkspaceError::Tree(error.to_string()))
}

/// `GET /v1/audit/records/{record_id}`: the record and its inclusion proof against the
/// latest checkpoint (`"proof": null` with a `proof_status` when none covers it yet).
pub async fn record(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(requested): Path<String>,
) -> Result<Response, ApiError> {
    let shown: String = requested.chars().take(64).collect();
    let request = json!({"path": "/v1/audit/records/{record_id}", "record_id": shown});
    let answer = async {
        require_auditor(&caller)?;
        let record_id = Uuid::parse_str(&requested)
            .map_err(|_| WorkspaceError::RecordNotFound(shown.clone()))?;
        let sealed = state
            .store
            .audit_record(record_id)
            .await?
            .ok_or_else(|| WorkspaceError::RecordNotFound(shown.clone()))?;
        let sequence = sealed.sequence;
        let leaf_index = u64::try_from(sequence - 1).unwrap_or(0);
        let latest = state.store.latest_checkpoint().await?;
        let (proof, status) = match latest {
            Some(checkpoint) if checkpoint.tree_size > leaf_index => {
                let tree_size = checkpoint.tree_size;
                let inclusion = with_nodes(
                    &state,
                    merkle::inclusion_node_ids(leaf_index, tree_size),
                    |node| merkle::inclusion_proof(leaf_index, tree_size, node),
                )
                .await?;
                (
                    json!({
                        "leaf_index": leaf_index,
                        "tree_size": tree_size,
                        "leaf_hash": hex::encode(merkle::leaf_hash(&sealed.hash)),
                        "inclusion": inclusion.iter().map(hex::encode).collect::<Vec<_>>(),
                        "checkpoint": checkpoint,
                    }),
                    "proved",
                )
            }
            _ if state.checkpoint_signer.get().is_none() => (Value::Null, "not_configured"),
            _ => (Value::Null, "pending"),
        };
        let message = match status {
            "pending" => Some("no signed checkpoint covers this record yet; retry after the next checkpoint"),
            "not_configured" => Some("no checkpoint signing key is configured ([audit.checkpoints] signing_key_file): records are searchable but not provable"),
            _ => None,
        };
        let mut body = json!({
            "record": AuditRecordView::from_sealed(sealed),
            "proof": proof,
            "proof_status": status,
        });
        if let Some(message) = message {
            body["proof_message"] = json!(message);
        }
        Ok((
            Json(body).into_response(),
            Returned {
                sequences: vec![sequence],
                detail: Some(json!({"record_id": record_id, "proof_status": status})),
            },
        ))
    }
    .await;
    audited(&state, &caller, ACTION_READ, request, answer).await
}

/// `GET /v1/audit/checkpoints?after=&limit=`.
pub async fn checkpoints(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = Params::parse(query, &["after", "limit"]);
    let request = json!({
        "path": "/v1/audit/checkpoints",
        "query": params.as_ref().map_or(Value::Null, |params| params.echo(None)),
    });
    let answer = async {
        require_auditor(&caller)?;
        let params = params?;
        let after = params.unsigned("after", i64::MAX as u64)?.unwrap_or(0);
        let limit = params
            .unsigned(
                "limit",
                u64::from(countersign_audit::index::CHECKPOINTS_PAGE_MAX),
            )?
            .unwrap_or(u64::from(CHECKPOINTS_LIMIT_DEFAULT));
        if limit == 0 {
            return Err(WorkspaceError::invalid("limit", "must be at least 1"));
        }
        let limit = u32::try_from(limit).unwrap_or(CHECKPOINTS_LIMIT_DEFAULT);
        let mut checkpoints = state.store.checkpoints(after, limit + 1).await?;
        let next_after = if checkpoints.len() > limit as usize {
            checkpoints.truncate(limit as usize);
            checkpoints.last().map(|checkpoint| checkpoint.tree_size)
        } else {
            None
        };
        let sizes: Vec<u64> = checkpoints
            .iter()
            .map(|checkpoint| checkpoint.tree_size)
            .collect();
        Ok((
            Json(json!({"checkpoints": checkpoints, "next_after": next_after})).into_response(),
            Returned {
                sequences: Vec::new(),
                detail: Some(json!({"checkpoint_tree_sizes": sizes})),
            },
        ))
    }
    .await;
    audited(&state, &caller, ACTION_PROOF, request, answer).await
}

/// `GET /v1/audit/checkpoints/latest`.
pub async fn latest_checkpoint(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let request = json!({"path": "/v1/audit/checkpoints/latest"});
    let answer = async {
        require_auditor(&caller)?;
        let checkpoint: Checkpoint = match state.store.latest_checkpoint().await? {
            Some(checkpoint) => checkpoint,
            None if state.checkpoint_signer.get().is_none() => {
                return Err(WorkspaceError::NotConfigured);
            }
            None => return Err(WorkspaceError::NoCheckpoint),
        };
        let size = checkpoint.tree_size;
        Ok((
            Json(&checkpoint).into_response(),
            Returned {
                sequences: Vec::new(),
                detail: Some(json!({"checkpoint_tree_sizes": [size]})),
            },
        ))
    }
    .await;
    audited(&state, &caller, ACTION_PROOF, request, answer).await
}

/// `GET /v1/audit/proofs/consistency?from=&to=`: the RFC 9162 consistency proof between the
/// trees of `from` and `to` leaves (1 <= from <= to <= the indexed size).
pub async fn consistency(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = Params::parse(query, &["from", "to"]);
    let request = json!({
        "path": "/v1/audit/proofs/consistency",
        "query": params.as_ref().map_or(Value::Null, |params| params.echo(None)),
    });
    let answer = async {
        require_auditor(&caller)?;
        let params = params?;
        let indexed = state.store.indexed_size().await?;
        let size = |name: &str| -> Result<u64, WorkspaceError> {
            params
                .unsigned(name, indexed)?
                .ok_or_else(|| WorkspaceError::invalid(name, "is required"))
                .and_then(|size| {
                    if size == 0 {
                        Err(WorkspaceError::invalid(
                            name,
                            format!("must be a tree size 1..={indexed} (the indexed size)"),
                        ))
                    } else {
                        Ok(size)
                    }
                })
        };
        for name in ["from", "to"] {
            if !params.values.contains_key(name) {
                return Err(WorkspaceError::invalid(name, "is required"));
            }
        }
        let (from, to) = (size("from")?, size("to")?);
        if from > to {
            return Err(WorkspaceError::invalid("from", "must not be above to"));
        }
        let proof = with_nodes(&state, merkle::consistency_node_ids(from, to), |node| {
            merkle::consistency_proof(from, to, node)
        })
        .await?;
        Ok((
            Json(json!({
                "from": from,
                "to": to,
                "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
            }))
            .into_response(),
            Returned {
                sequences: Vec::new(),
                detail: Some(json!({"from": from, "to": to})),
            },
        ))
    }
    .await;
    audited(&state, &caller, ACTION_PROOF, request, answer).await
}

/// `GET /v1/audit/stats?from=&to=&bucket=hour|day`: decision records by outcome per bucket
/// over `[floor(from), to)` (whole buckets), for the console's chart.
pub async fn stats(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = Params::parse(query, &["from", "to", "bucket"]);
    let request = json!({
        "path": "/v1/audit/stats",
        "query": params.as_ref().map_or(Value::Null, |params| params.echo(None)),
    });
    let answer = async {
        require_auditor(&caller)?;
        let params = params?;
        let from = params
            .time("from")?
            .ok_or_else(|| WorkspaceError::invalid("from", "is required"))?;
        let to = params
            .time("to")?
            .ok_or_else(|| WorkspaceError::invalid("to", "is required"))?;
        let bucket = match params.values.get("bucket") {
            None => StatsBucket::Hour,
            Some(text) => StatsBucket::parse(text)
                .ok_or_else(|| WorkspaceError::invalid("bucket", "must be hour or day"))?,
        };
        if to <= from {
            return Err(WorkspaceError::invalid("to", "must be after from"));
        }
        let rows = state
            .store
            .audit_stats(from, to, bucket)
            .await
            .map_err(|error| {
                if let countersign_ledger::LedgerError::Audit(audit) = &error
                    && let countersign_audit::AuditError::InvalidQuery { parameter, message } =
                        &**audit
                {
                    return WorkspaceError::invalid(parameter, message.clone());
                }
                WorkspaceError::Store(error)
            })?;
        let buckets = rows.len();
        Ok((
            Json(json!({"buckets": rows})).into_response(),
            Returned {
                sequences: Vec::new(),
                detail: Some(json!({"buckets": buckets})),
            },
        ))
    }
    .await;
    audited(&state, &caller, ACTION_STATS, request, answer).await
}

/// `GET /v1/audit/public-key`: the checkpoint public key (SPKI PEM), for auditors to pin.
pub async fn public_key(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let request = json!({"path": "/v1/audit/public-key"});
    let answer = async {
        require_auditor(&caller)?;
        let signer = state
            .checkpoint_signer
            .get()
            .ok_or(WorkspaceError::NotConfigured)?;
        let verifier = signer.verifier();
        let mut response = verifier.public_key_pem().into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-pem-file"),
        );
        if let Ok(key_id) = HeaderValue::from_str(verifier.key_id()) {
            response
                .headers_mut()
                .insert("x-countersign-key-id", key_id);
        }
        Ok((
            response,
            Returned {
                sequences: Vec::new(),
                detail: Some(json!({"key_id": verifier.key_id()})),
            },
        ))
    }
    .await;
    audited(&state, &caller, ACTION_PROOF, request, answer).await
}
