//! Reading rows back into domain values, and the text forms of times and dates we store.
//!
//! Every row is parsed through the same fallible constructors as outside input: a row that
//! no longer parses is reported as `LedgerError::CorruptRow`, never trusted.

use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};
use uuid::Uuid;

use crate::account::{Account, AccountId, AccountState, AccountStatus};
use crate::approval::{
    ApprovalAction, ApprovalEvent, ApprovalQuery, ApprovalRequest, ApprovalStatus,
};
use crate::error::LedgerError;
use crate::money::{Amount, Currency};
use crate::transfer::{IdempotencyOutcome, Reason, StoredIdempotency, Transfer};

pub(crate) const ACCOUNT_COLUMNS: &str =
    "id, currency, status, overdraft_allowed, balance_minor, created_at, updated_at";

pub(crate) fn format_timestamp(timestamp: OffsetDateTime) -> String {
    timestamp
        .to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("a UTC timestamp of the current era formats as RFC 3339")
}

pub(crate) fn format_date(date: Date) -> String {
    date.format(format_description!("[year]-[month]-[day]"))
        .expect("a date of the current era formats as YYYY-MM-DD")
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> LedgerError {
    LedgerError::CorruptRow(format!("{what}: {detail}"))
}

fn parse_timestamp(text: &str) -> Result<OffsetDateTime, LedgerError> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|error| corrupt("timestamp", error))
}

fn parse_date(text: &str) -> Result<Date, LedgerError> {
    Date::parse(text, format_description!("[year]-[month]-[day]"))
        .map_err(|error| corrupt("business_date", error))
}

fn parse_uuid(text: &str) -> Result<Uuid, LedgerError> {
    Uuid::parse_str(text).map_err(|error| corrupt("uuid", error))
}

fn parse_account_id(text: &str) -> Result<AccountId, LedgerError> {
    AccountId::parse(text).map_err(|error| corrupt("account id", error))
}

fn parse_currency(text: &str) -> Result<Currency, LedgerError> {
    Currency::parse(text).map_err(|error| corrupt("currency", error))
}

pub(crate) fn account_from_row(row: &SqliteRow) -> Result<Account, LedgerError> {
    let status: String = row.try_get("status")?;
    Ok(Account {
        id: parse_account_id(row.try_get("id")?)?,
        currency: parse_currency(row.try_get("currency")?)?,
        status: AccountStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        overdraft_allowed: row.try_get("overdraft_allowed")?,
        balance_minor: row.try_get("balance_minor")?,
        created_at: parse_timestamp(row.try_get("created_at")?)?,
        updated_at: parse_timestamp(row.try_get("updated_at")?)?,
    })
}

pub(crate) fn transfer_from_row(row: &SqliteRow) -> Result<Transfer, LedgerError> {
    let currency = parse_currency(row.try_get("currency")?)?;
    let amount_minor: i64 = row.try_get("amount_minor")?;
    Ok(Transfer {
        id: parse_uuid(row.try_get("id")?)?,
        debit_account: parse_account_id(row.try_get("debit_account")?)?,
        credit_account: parse_account_id(row.try_get("credit_account")?)?,
        amount: Amount::from_minor_units(amount_minor, currency)
            .map_err(|error| corrupt("amount", error))?,
        end_to_end_id: row.try_get("end_to_end_id")?,
        purpose: row.try_get("purpose")?,
        remittance_info: row.try_get("remittance_info")?,
        decision_id: parse_uuid(row.try_get("decision_id")?)?,
        initiator_fingerprint: row.try_get("initiator_fingerprint")?,
        business_date: parse_date(row.try_get("business_date")?)?,
        posted_at: parse_timestamp(row.try_get("posted_at")?)?,
    })
}

pub(crate) fn idempotency_from_row(row: &SqliteRow) -> Result<StoredIdempotency, LedgerError> {
    let request_hash: Vec<u8> = row.try_get("request_hash")?;
    let outcome: String = row.try_get("outcome")?;
    let transfer_id: Option<String> = row.try_get("transfer_id")?;
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
        transfer_id: transfer_id.as_deref().map(parse_uuid).transpose()?,
        approval_id: row
            .try_get::<Option<String>, _>("approval_id")?
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
        decision_id: parse_uuid(row.try_get("decision_id")?)?,
        reasons: serde_json::from_str::<Vec<Reason>>(&reasons_json)
            .map_err(|error| corrupt("reasons_json", error))?,
        created_at: parse_timestamp(row.try_get("created_at")?)?,
    })
}

// The queries below take a connection rather than a pool: the writer runs them on its own
// connection inside the write transaction (so a batch sees its own earlier commands), and
// readers run them inside one read transaction (so the pieces form one snapshot).

pub(crate) async fn load_account(
    connection: &mut SqliteConnection,
    id: &AccountId,
) -> Result<Option<Account>, LedgerError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?"
    ));
    let row = sqlx::query(sql)
        .bind(id.as_str())
        .fetch_optional(&mut *connection)
        .await?;
    row.as_ref().map(account_from_row).transpose()
}

pub(crate) async fn load_account_state(
    connection: &mut SqliteConnection,
    id: &AccountId,
    business_date: Date,
) -> Result<Option<AccountState>, LedgerError> {
    // One statement: the row, its debits of the day and its reservations.
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {ACCOUNT_COLUMNS}, \
         (SELECT COALESCE(SUM(amount_minor), 0) FROM entries \
          WHERE account_id = ?1 AND direction = 'debit' AND business_date = ?2) \
         AS debited_today_minor, \
         (SELECT COALESCE(SUM(amount_minor), 0) FROM approval_requests \
          WHERE debit_account = ?1 AND status = 'pending') AS reserved_minor \
         FROM accounts WHERE id = ?1"
    ));
    let Some(row) = sqlx::query(sql)
        .bind(id.as_str())
        .bind(format_date(business_date))
        .fetch_optional(&mut *connection)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(AccountState {
        account: account_from_row(&row)?,
        debited_today_minor: row.try_get("debited_today_minor")?,
        reserved_minor: row.try_get("reserved_minor")?,
    }))
}

/// The account's pending (held for approval) debits: its reservations.
pub(crate) async fn reserved_minor(
    connection: &mut SqliteConnection,
    id: &AccountId,
) -> Result<i64, LedgerError> {
    let total: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(amount_minor), 0) FROM approval_requests \
         WHERE debit_account = ? AND status = 'pending'",
    )
    .bind(id.as_str())
    .fetch_one(&mut *connection)
    .await?;
    Ok(total)
}

fn unix_ms(timestamp: OffsetDateTime) -> i64 {
    i64::try_from(timestamp.unix_timestamp_nanos() / 1_000_000)
        .expect("a timestamp of the current era fits i64 milliseconds")
}

fn from_unix_ms(ms: i64) -> Result<OffsetDateTime, LedgerError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|error| corrupt("expires_at_ms", error))
}

/// Expiry is stored in milliseconds: the writer rounds it down so what it returns equals what
/// a later read returns.
pub(crate) fn to_milliseconds(timestamp: OffsetDateTime) -> OffsetDateTime {
    let nanoseconds = timestamp.nanosecond();
    timestamp
        .replace_nanosecond(nanoseconds - nanoseconds % 1_000_000)
        .unwrap_or(timestamp)
}

fn approval_from_row(row: &SqliteRow) -> Result<ApprovalRequest, LedgerError> {
    let currency = parse_currency(row.try_get("currency")?)?;
    let amount_minor: i64 = row.try_get("amount_minor")?;
    let status: String = row.try_get("status")?;
    let approver_roles: String = row.try_get("approver_roles")?;
    let approvals_required: i64 = row.try_get("approvals_required")?;
    Ok(ApprovalRequest {
        id: parse_uuid(row.try_get("id")?)?,
        transfer_id: parse_uuid(row.try_get("transfer_id")?)?,
        debit_account: parse_account_id(row.try_get("debit_account")?)?,
        credit_account: parse_account_id(row.try_get("credit_account")?)?,
        amount: Amount::from_minor_units(amount_minor, currency)
            .map_err(|error| corrupt("amount", error))?,
        end_to_end_id: row.try_get("end_to_end_id")?,
        purpose: row.try_get("purpose")?,
        remittance_info: row.try_get("remittance_info")?,
        initiation_decision_id: parse_uuid(row.try_get("initiation_decision_id")?)?,
        initiator_fingerprint: row.try_get("initiator_fingerprint")?,
        initiator_common_name: row.try_get("initiator_common_name")?,
        approvals_required: u32::try_from(approvals_required)
            .map_err(|error| corrupt("approvals_required", error))?,
        approver_roles: serde_json::from_str(&approver_roles)
            .map_err(|error| corrupt("approver_roles", error))?,
        status: ApprovalStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        created_at: parse_timestamp(row.try_get("created_at")?)?,
        expires_at: from_unix_ms(row.try_get("expires_at_ms")?)?,
        resolved_at: row
            .try_get::<Option<String>, _>("resolved_at")?
            .as_deref()
            .map(parse_timestamp)
            .transpose()?,
        resolution_decision_id: row
            .try_get::<Option<String>, _>("resolution_decision_id")?
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
        events: Vec::new(),
    })
}

fn approval_event_from_row(row: &SqliteRow) -> Result<ApprovalEvent, LedgerError> {
    let action: String = row.try_get("action")?;
    Ok(ApprovalEvent {
        action: ApprovalAction::parse(&action).ok_or_else(|| corrupt("action", &action))?,
        approver_fingerprint: row.try_get("approver_fingerprint")?,
        approver_common_name: row.try_get("approver_common_name")?,
        decision_id: parse_uuid(row.try_get("decision_id")?)?,
        comment: row.try_get("comment")?,
        at: parse_timestamp(row.try_get("created_at")?)?,
    })
}

async fn with_events(
    connection: &mut SqliteConnection,
    mut request: ApprovalRequest,
) -> Result<ApprovalRequest, LedgerError> {
    let rows = sqlx::query("SELECT * FROM approval_events WHERE approval_id = ? ORDER BY id")
        .bind(request.id.to_string())
        .fetch_all(&mut *connection)
        .await?;
    request.events = rows
        .iter()
        .map(approval_event_from_row)
        .collect::<Result<_, _>>()?;
    Ok(request)
}

/// The approval request of the held transfer `transfer_id`, with its events.
pub(crate) async fn load_approval(
    connection: &mut SqliteConnection,
    transfer_id: Uuid,
) -> Result<Option<ApprovalRequest>, LedgerError> {
    let row = sqlx::query("SELECT * FROM approval_requests WHERE transfer_id = ?")
        .bind(transfer_id.to_string())
        .fetch_optional(&mut *connection)
        .await?;
    match row.as_ref().map(approval_from_row).transpose()? {
        Some(request) => Ok(Some(with_events(connection, request).await?)),
        None => Ok(None),
    }
}

/// The approval request with approval id `id`, with its events.
pub(crate) async fn load_approval_by_id(
    connection: &mut SqliteConnection,
    id: Uuid,
) -> Result<Option<ApprovalRequest>, LedgerError> {
    let row = sqlx::query("SELECT * FROM approval_requests WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut *connection)
        .await?;
    match row.as_ref().map(approval_from_row).transpose()? {
        Some(request) => Ok(Some(with_events(connection, request).await?)),
        None => Ok(None),
    }
}

/// Requests matching `query`, oldest first, with their events.
pub(crate) async fn list_approvals(
    connection: &mut SqliteConnection,
    query: &ApprovalQuery,
) -> Result<Vec<ApprovalRequest>, LedgerError> {
    let rows = sqlx::query(
        "SELECT * FROM approval_requests \
         WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR id > ?2) \
         ORDER BY id LIMIT ?3",
    )
    .bind(query.status.map(ApprovalStatus::as_str))
    .bind(query.after.map(|id| id.to_string()))
    .bind(i64::from(query.limit))
    .fetch_all(&mut *connection)
    .await?;
    let mut requests = Vec::with_capacity(rows.len());
    for row in &rows {
        requests.push(with_events(connection, approval_from_row(row)?).await?);
    }
    Ok(requests)
}

/// Pending requests whose expiry is at or before `now`, soonest first, at most `limit`.
pub(crate) async fn due_approvals(
    connection: &mut SqliteConnection,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<ApprovalRequest>, LedgerError> {
    let rows = sqlx::query(
        "SELECT * FROM approval_requests WHERE status = 'pending' AND expires_at_ms <= ? \
         ORDER BY expires_at_ms LIMIT ?",
    )
    .bind(unix_ms(now))
    .bind(i64::from(limit))
    .fetch_all(&mut *connection)
    .await?;
    let mut requests = Vec::with_capacity(rows.len());
    for row in &rows {
        requests.push(with_events(connection, approval_from_row(row)?).await?);
    }
    Ok(requests)
}

pub(crate) async fn insert_approval_request(
    connection: &mut SqliteConnection,
    request: &ApprovalRequest,
) -> Result<(), LedgerError> {
    assert_eq!(
        request.status,
        ApprovalStatus::Pending,
        "a new request is pending"
    );
    sqlx::query(
        "INSERT INTO approval_requests (id, transfer_id, debit_account, credit_account, \
         amount_minor, currency, end_to_end_id, purpose, remittance_info, \
         initiation_decision_id, initiator_fingerprint, initiator_common_name, \
         approvals_required, approver_roles, status, created_at, expires_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
    )
    .bind(request.id.to_string())
    .bind(request.transfer_id.to_string())
    .bind(request.debit_account.as_str())
    .bind(request.credit_account.as_str())
    .bind(request.amount.minor_units())
    .bind(request.amount.currency().code())
    .bind(request.end_to_end_id.as_deref())
    .bind(request.purpose.as_deref())
    .bind(request.remittance_info.as_deref())
    .bind(request.initiation_decision_id.to_string())
    .bind(&request.initiator_fingerprint)
    .bind(request.initiator_common_name.as_deref())
    .bind(i64::from(request.approvals_required))
    .bind(serde_json::to_string(&request.approver_roles).expect("strings serialise"))
    .bind(format_timestamp(request.created_at))
    .bind(unix_ms(request.expires_at))
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn insert_approval_event(
    connection: &mut SqliteConnection,
    approval_id: Uuid,
    event: &ApprovalEvent,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO approval_events (approval_id, action, approver_fingerprint, \
         approver_common_name, decision_id, comment, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(approval_id.to_string())
    .bind(event.action.as_str())
    .bind(&event.approver_fingerprint)
    .bind(event.approver_common_name.as_deref())
    .bind(event.decision_id.to_string())
    .bind(event.comment.as_deref())
    .bind(format_timestamp(event.at))
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Stores `request`'s final status. Only a pending request changes (the writer holds it, so
/// anything else is a bug).
pub(crate) async fn resolve_approval(
    connection: &mut SqliteConnection,
    request: &ApprovalRequest,
) -> Result<(), LedgerError> {
    assert_ne!(
        request.status,
        ApprovalStatus::Pending,
        "resolving to pending"
    );
    let resolved_at = request
        .resolved_at
        .expect("a resolved request has resolved_at");
    let updated = sqlx::query(
        "UPDATE approval_requests SET status = ?, resolved_at = ?, resolution_decision_id = ? \
         WHERE id = ? AND status = 'pending'",
    )
    .bind(request.status.as_str())
    .bind(format_timestamp(resolved_at))
    .bind(request.resolution_decision_id.map(|id| id.to_string()))
    .bind(request.id.to_string())
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
    connection: &mut SqliteConnection,
    id: Uuid,
) -> Result<Option<Transfer>, LedgerError> {
    let row = sqlx::query("SELECT * FROM transfers WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut *connection)
        .await?;
    row.as_ref().map(transfer_from_row).transpose()
}

pub(crate) async fn load_idempotency(
    connection: &mut SqliteConnection,
    scope: &str,
    key: &str,
) -> Result<Option<StoredIdempotency>, LedgerError> {
    let row = sqlx::query("SELECT * FROM idempotency WHERE scope = ? AND key = ?")
        .bind(scope)
        .bind(key)
        .fetch_optional(&mut *connection)
        .await?;
    row.as_ref().map(idempotency_from_row).transpose()
}
