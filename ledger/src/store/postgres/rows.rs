//! PostgreSQL rows into domain values (native `uuid`, `timestamptz`, `date` and `boolean`
//! columns), and the reads the writer and the readers share.
//!
//! Every row goes through the same fallible constructors as outside input: a row that no
//! longer parses is `LedgerError::CorruptRow`, never trusted.

use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::account::{Account, AccountId, AccountState, AccountStatus};
use crate::approval::{
    ApprovalAction, ApprovalEvent, ApprovalQuery, ApprovalRequest, ApprovalStatus,
};
use crate::error::LedgerError;
use crate::money::{Amount, Currency};
use crate::transfer::{IdempotencyOutcome, Reason, StoredIdempotency, Transfer};

const ACCOUNT_COLUMNS: &str =
    "id, currency, status, overdraft_allowed, balance_minor, created_at, updated_at";

fn corrupt(what: &str, detail: impl std::fmt::Display) -> LedgerError {
    LedgerError::CorruptRow(format!("{what}: {detail}"))
}

fn parse_account_id(text: &str) -> Result<AccountId, LedgerError> {
    AccountId::parse(text).map_err(|error| corrupt("account id", error))
}

fn parse_currency(text: &str) -> Result<Currency, LedgerError> {
    Currency::parse(text).map_err(|error| corrupt("currency", error))
}

/// `timestamptz` keeps microseconds; the writer rounds its clock down to them so what it
/// returns equals what a later read returns.
pub(crate) fn to_microseconds(timestamp: OffsetDateTime) -> OffsetDateTime {
    let nanoseconds = timestamp.nanosecond();
    timestamp
        .replace_nanosecond(nanoseconds - nanoseconds % 1_000)
        .unwrap_or(timestamp)
}

pub(crate) fn account_from_row(row: &PgRow) -> Result<Account, LedgerError> {
    let status: String = row.try_get("status")?;
    Ok(Account {
        id: parse_account_id(row.try_get("id")?)?,
        currency: parse_currency(row.try_get("currency")?)?,
        status: AccountStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        overdraft_allowed: row.try_get("overdraft_allowed")?,
        balance_minor: row.try_get("balance_minor")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) fn transfer_from_row(row: &PgRow) -> Result<Transfer, LedgerError> {
    let currency = parse_currency(row.try_get("currency")?)?;
    let amount_minor: i64 = row.try_get("amount_minor")?;
    Ok(Transfer {
        id: row.try_get("id")?,
        debit_account: parse_account_id(row.try_get("debit_account")?)?,
        credit_account: parse_account_id(row.try_get("credit_account")?)?,
        amount: Amount::from_minor_units(amount_minor, currency)
            .map_err(|error| corrupt("amount", error))?,
        end_to_end_id: row.try_get("end_to_end_id")?,
        purpose: row.try_get("purpose")?,
        remittance_info: row.try_get("remittance_info")?,
        decision_id: row.try_get("decision_id")?,
        initiator_fingerprint: row.try_get("initiator_fingerprint")?,
        business_date: row.try_get("business_date")?,
        posted_at: row.try_get("posted_at")?,
    })
}

pub(crate) fn idempotency_from_row(row: &PgRow) -> Result<StoredIdempotency, LedgerError> {
    let request_hash: Vec<u8> = row.try_get("request_hash")?;
    let outcome: String = row.try_get("outcome")?;
    let reasons_json: String = row.try_get("reasons_json")?;
    Ok(StoredIdempotency {
        scope: row.try_get("scope")?,
        key: row.try_get("key")?,
        request_hash: request_hash
            .try_into()
            .map_err(|_| corrupt("request_hash", "not 32 bytes"))?,
        outcome: match outcome.as_str() {
            "posted" => IdempotencyOutcome::Posted,
            "denied" => IdempotencyOutcome::Denied,
            "pending" => IdempotencyOutcome::Pending,
            other => return Err(corrupt("idempotency outcome", other)),
        },
        transfer_id: row.try_get("transfer_id")?,
        approval_id: row.try_get("approval_id")?,
        decision_id: row.try_get("decision_id")?,
        reasons: serde_json::from_str::<Vec<Reason>>(&reasons_json)
            .map_err(|error| corrupt("reasons_json", error))?,
        created_at: row.try_get("created_at")?,
    })
}

// Queries take a connection: the writer runs them inside its transaction (a batch sees its
// own earlier commands), readers inside one read-only snapshot.

pub(crate) async fn load_account(
    connection: &mut PgConnection,
    id: &AccountId,
) -> Result<Option<Account>, LedgerError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
    ));
    let row = sqlx::query(sql)
        .bind(id.as_str())
        .fetch_optional(&mut *connection)
        .await?;
    row.as_ref().map(account_from_row).transpose()
}

pub(crate) async fn load_account_state(
    connection: &mut PgConnection,
    id: &AccountId,
    business_date: Date,
) -> Result<Option<AccountState>, LedgerError> {
    // One round trip: the row, its debits of the day and its reservations. SUM(bigint) is
    // numeric in PostgreSQL; these sums of one account fit in i64 (the cast fails loudly
    // rather than wrapping if they ever did not).
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {ACCOUNT_COLUMNS}, \
         (SELECT COALESCE(SUM(amount_minor), 0)::int8 FROM entries \
          WHERE account_id = $1 AND direction = 'debit' AND business_date = $2) \
         AS debited_today_minor, \
         (SELECT COALESCE(SUM(amount_minor), 0)::int8 FROM approval_requests \
          WHERE debit_account = $1 AND status = 'pending') AS reserved_minor \
         FROM accounts WHERE id = $1"
    ));
    let Some(row) = sqlx::query(sql)
        .bind(id.as_str())
        .bind(business_date)
        .fetch_optional(&mut *connection)
        .await?
    else {
        return Ok(None);
    };
    let account = account_from_row(&row)?;
    let debited_today_minor: i64 = row.try_get("debited_today_minor")?;
    let reserved_minor: i64 = row.try_get("reserved_minor")?;
    Ok(Some(AccountState {
        account,
        debited_today_minor,
        reserved_minor,
    }))
}

/// The account's pending (held for approval) debits: its reservations.
pub(crate) async fn reserved_minor(
    connection: &mut PgConnection,
    id: &AccountId,
) -> Result<i64, LedgerError> {
    let total: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(amount_minor), 0)::int8 FROM approval_requests \
         WHERE debit_account = $1 AND status = 'pending'",
    )
    .bind(id.as_str())
    .fetch_one(&mut *connection)
    .await?;
    Ok(total)
}

fn approval_from_row(row: &PgRow) -> Result<ApprovalRequest, LedgerError> {
    let currency = parse_currency(row.try_get("currency")?)?;
    let amount_minor: i64 = row.try_get("amount_minor")?;
    let status: String = row.try_get("status")?;
    let approvals_required: i32 = row.try_get("approvals_required")?;
    Ok(ApprovalRequest {
        id: row.try_get("id")?,
        transfer_id: row.try_get("transfer_id")?,
        debit_account: parse_account_id(row.try_get("debit_account")?)?,
        credit_account: parse_account_id(row.try_get("credit_account")?)?,
        amount: Amount::from_minor_units(amount_minor, currency)
            .map_err(|error| corrupt("amount", error))?,
        end_to_end_id: row.try_get("end_to_end_id")?,
        purpose: row.try_get("purpose")?,
        remittance_info: row.try_get("remittance_info")?,
        initiation_decision_id: row.try_get("initiation_decision_id")?,
        initiator_fingerprint: row.try_get("initiator_fingerprint")?,
        initiator_common_name: row.try_get("initiator_common_name")?,
        approvals_required: u32::try_from(approvals_required)
            .map_err(|error| corrupt("approvals_required", error))?,
        approver_roles: row.try_get("approver_roles")?,
        status: ApprovalStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        resolved_at: row.try_get("resolved_at")?,
        resolution_decision_id: row.try_get("resolution_decision_id")?,
        events: Vec::new(),
    })
}

fn approval_event_from_row(row: &PgRow) -> Result<ApprovalEvent, LedgerError> {
    let action: String = row.try_get("action")?;
    Ok(ApprovalEvent {
        action: ApprovalAction::parse(&action).ok_or_else(|| corrupt("action", &action))?,
        approver_fingerprint: row.try_get("approver_fingerprint")?,
        approver_common_name: row.try_get("approver_common_name")?,
        decision_id: row.try_get("decision_id")?,
        comment: row.try_get("comment")?,
        at: row.try_get("created_at")?,
    })
}

/// Reads the requests the rows name, each with its events (one more round trip in all).
async fn with_events(
    connection: &mut PgConnection,
    rows: Vec<PgRow>,
) -> Result<Vec<ApprovalRequest>, LedgerError> {
    let mut requests = rows
        .iter()
        .map(approval_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    if requests.is_empty() {
        return Ok(requests);
    }
    let ids: Vec<Uuid> = requests.iter().map(|request| request.id).collect();
    let events =
        sqlx::query("SELECT * FROM approval_events WHERE approval_id = ANY($1) ORDER BY id")
            .bind(&ids)
            .fetch_all(&mut *connection)
            .await?;
    for row in &events {
        let approval_id: Uuid = row.try_get("approval_id")?;
        let event = approval_event_from_row(row)?;
        if let Some(request) = requests
            .iter_mut()
            .find(|request| request.id == approval_id)
        {
            request.events.push(event);
        }
    }
    Ok(requests)
}

/// The approval request of held transfer `transfer_id`, with its events. `lock` takes the
/// row lock (`FOR UPDATE`): the writer holds the request until COMMIT, so a concurrent
/// approval, rejection or expiry on another replica waits and then sees the outcome.
pub(crate) async fn load_approval(
    connection: &mut PgConnection,
    transfer_id: Uuid,
    lock: bool,
) -> Result<Option<ApprovalRequest>, LedgerError> {
    let sql = if lock {
        "SELECT * FROM approval_requests WHERE transfer_id = $1 FOR UPDATE"
    } else {
        "SELECT * FROM approval_requests WHERE transfer_id = $1"
    };
    let rows = sqlx::query(sql)
        .bind(transfer_id)
        .fetch_all(&mut *connection)
        .await?;
    Ok(with_events(connection, rows).await?.pop())
}

pub(crate) async fn load_approval_by_id(
    connection: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ApprovalRequest>, LedgerError> {
    let rows = sqlx::query("SELECT * FROM approval_requests WHERE id = $1")
        .bind(id)
        .fetch_all(&mut *connection)
        .await?;
    Ok(with_events(connection, rows).await?.pop())
}

pub(crate) async fn list_approvals(
    connection: &mut PgConnection,
    query: &ApprovalQuery,
) -> Result<Vec<ApprovalRequest>, LedgerError> {
    let rows = sqlx::query(
        "SELECT * FROM approval_requests \
         WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR id > $2) \
         ORDER BY id LIMIT $3",
    )
    .bind(query.status.map(ApprovalStatus::as_str))
    .bind(query.after)
    .bind(i64::from(query.limit))
    .fetch_all(&mut *connection)
    .await?;
    with_events(connection, rows).await
}

/// Pending requests past their expiry, locked; rows another replica holds right now (it is
/// approving, rejecting or expiring them) are skipped, not waited for.
pub(crate) async fn lock_due_approvals(
    connection: &mut PgConnection,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<ApprovalRequest>, LedgerError> {
    let rows = sqlx::query(
        "SELECT * FROM approval_requests WHERE status = 'pending' AND expires_at <= $1 \
         ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(&mut *connection)
    .await?;
    with_events(connection, rows).await
}

pub(crate) async fn insert_approval_request(
    connection: &mut PgConnection,
    request: &ApprovalRequest,
) -> Result<(), LedgerError> {
    assert_eq!(
        request.status,
        ApprovalStatus::Pending,
        "a new request is pending"
    );
    let approvals_required =
        i32::try_from(request.approvals_required).expect("approvals_required was validated");
    sqlx::query(
        "INSERT INTO approval_requests (id, transfer_id, debit_account, credit_account, \
         amount_minor, currency, end_to_end_id, purpose, remittance_info, \
         initiation_decision_id, initiator_fingerprint, initiator_common_name, \
         approvals_required, approver_roles, status, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'pending', $15, $16)",
    )
    .bind(request.id)
    .bind(request.transfer_id)
    .bind(request.debit_account.as_str())
    .bind(request.credit_account.as_str())
    .bind(request.amount.minor_units())
    .bind(request.amount.currency().code())
    .bind(request.end_to_end_id.as_deref())
    .bind(request.purpose.as_deref())
    .bind(request.remittance_info.as_deref())
    .bind(request.initiation_decision_id)
    .bind(&request.initiator_fingerprint)
    .bind(request.initiator_common_name.as_deref())
    .bind(approvals_required)
    .bind(&request.approver_roles)
    .bind(request.created_at)
    .bind(request.expires_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn insert_approval_event(
    connection: &mut PgConnection,
    approval_id: Uuid,
    event: &ApprovalEvent,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO approval_events (approval_id, action, approver_fingerprint, \
         approver_common_name, decision_id, comment, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(approval_id)
    .bind(event.action.as_str())
    .bind(&event.approver_fingerprint)
    .bind(event.approver_common_name.as_deref())
    .bind(event.decision_id)
    .bind(event.comment.as_deref())
    .bind(event.at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Stores `request`'s final status. The writer holds the row lock, so it is still pending;
/// anything else is a bug.
pub(crate) async fn resolve_approval(
    connection: &mut PgConnection,
    request: &ApprovalRequest,
) -> Result<(), LedgerError> {
    assert_ne!(
        request.status,
        ApprovalStatus::Pending,
        "resolving to pending"
    );
    let updated = sqlx::query(
        "UPDATE approval_requests SET status = $1, resolved_at = $2, resolution_decision_id = $3 \
         WHERE id = $4 AND status = 'pending'",
    )
    .bind(request.status.as_str())
    .bind(request.resolved_at)
    .bind(request.resolution_decision_id)
    .bind(request.id)
    .execute(&mut *connection)
    .await?;
    assert_eq!(
        updated.rows_affected(),
        1,
        "ledger invariant broken: approval request {} left pending twice",
        request.id
    );
    Ok(())
}

pub(crate) async fn load_transfer(
    connection: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Transfer>, LedgerError> {
    let row = sqlx::query("SELECT * FROM transfers WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    row.as_ref().map(transfer_from_row).transpose()
}

pub(crate) async fn load_idempotency(
    connection: &mut PgConnection,
    scope: &str,
    key: &str,
) -> Result<Option<StoredIdempotency>, LedgerError> {
    let row = sqlx::query("SELECT * FROM idempotency WHERE scope = $1 AND key = $2")
        .bind(scope)
        .bind(key)
        .fetch_optional(&mut *connection)
        .await?;
    row.as_ref().map(idempotency_from_row).transpose()
}
