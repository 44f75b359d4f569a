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
            other => return Err(corrupt("idempotency outcome", other)),
        },
        transfer_id: row.try_get("transfer_id")?,
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
    // One round trip: the row and its debits of the day. SUM(bigint) is numeric in
    // PostgreSQL; one day's debits of one account fit in i64 (the cast fails loudly rather
    // than wrapping if they ever did not).
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {ACCOUNT_COLUMNS}, \
         (SELECT COALESCE(SUM(amount_minor), 0)::int8 FROM entries \
          WHERE account_id = $1 AND direction = 'debit' AND business_date = $2) \
         AS debited_today_minor \
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
    Ok(Some(AccountState {
        account,
        debited_today_minor,
    }))
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
