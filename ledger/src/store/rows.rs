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
            other => return Err(corrupt("idempotency outcome", other)),
        },
        transfer_id: transfer_id.as_deref().map(parse_uuid).transpose()?,
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

pub(crate) async fn debited_on(
    connection: &mut SqliteConnection,
    id: &AccountId,
    business_date: Date,
) -> Result<i64, LedgerError> {
    let total: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(amount_minor), 0) FROM entries \
         WHERE account_id = ? AND direction = 'debit' AND business_date = ?",
    )
    .bind(id.as_str())
    .bind(format_date(business_date))
    .fetch_one(&mut *connection)
    .await?;
    Ok(total)
}

pub(crate) async fn load_account_state(
    connection: &mut SqliteConnection,
    id: &AccountId,
    business_date: Date,
) -> Result<Option<AccountState>, LedgerError> {
    let Some(account) = load_account(connection, id).await? else {
        return Ok(None);
    };
    let debited_today_minor = debited_on(connection, id, business_date).await?;
    Ok(Some(AccountState {
        account,
        debited_today_minor,
    }))
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
