//! The whole-ledger invariant check on PostgreSQL: the same checks and report as
//! `store::invariants` (SQLite), in PostgreSQL's SQL. Run inside one REPEATABLE READ snapshot.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::postgres::PgConnection;

use crate::error::LedgerError;
use crate::store::{CurrencyTotals, INVARIANT_VIOLATIONS_REPORTED_MAX, InvariantReport};

fn violation(report: &mut InvariantReport, description: String) {
    report.violations_total += 1;
    if report.violations.len() < INVARIANT_VIOLATIONS_REPORTED_MAX {
        report.violations.push(description);
    }
}

fn totals_of(
    currencies: &mut BTreeMap<String, CurrencyTotals>,
    currency: String,
) -> &mut CurrencyTotals {
    currencies
        .entry(currency.clone())
        .or_insert_with(|| CurrencyTotals {
            currency,
            debits_minor: 0,
            credits_minor: 0,
            balances_minor: 0,
        })
}

fn masked(id: &str) -> String {
    countersign_audit::mask_account_number(id)
}

/// Parses a `numeric` sum sent as text (sums of BIGINT are NUMERIC and may exceed i64).
fn sum(row: &sqlx::postgres::PgRow, column: &str) -> Result<i128, LedgerError> {
    let text: String = row.try_get(column)?;
    text.parse::<i128>()
        .map_err(|error| LedgerError::CorruptRow(format!("{column} sum {text:?}: {error}")))
}

pub(crate) async fn check(connection: &mut PgConnection) -> Result<InvariantReport, LedgerError> {
    let mut report = InvariantReport {
        accounts_checked: 0,
        transfers_checked: 0,
        entries_checked: 0,
        currencies: Vec::new(),
        violations: Vec::new(),
        violations_total: 0,
    };

    // Σ debits == Σ credits per currency, and Σ balances == 0 per currency.
    let entry_rows = sqlx::query(
        "SELECT currency, \
                COALESCE(SUM(amount_minor) FILTER (WHERE direction = 'debit'), 0)::text AS debits, \
                COALESCE(SUM(amount_minor) FILTER (WHERE direction = 'credit'), 0)::text AS credits, \
                COUNT(*) AS entries \
         FROM entries GROUP BY currency ORDER BY currency",
    )
    .fetch_all(&mut *connection)
    .await?;
    let balance_rows = sqlx::query(
        "SELECT currency, SUM(balance_minor)::text AS balances FROM accounts \
         GROUP BY currency ORDER BY currency",
    )
    .fetch_all(&mut *connection)
    .await?;
    let mut currencies = BTreeMap::<String, CurrencyTotals>::new();
    for row in &entry_rows {
        let debits = sum(row, "debits")?;
        let credits = sum(row, "credits")?;
        let totals = totals_of(&mut currencies, row.try_get("currency")?);
        totals.debits_minor = debits;
        totals.credits_minor = credits;
        report.entries_checked += row.try_get::<i64, _>("entries")?;
    }
    for row in &balance_rows {
        let balances = sum(row, "balances")?;
        totals_of(&mut currencies, row.try_get("currency")?).balances_minor = balances;
    }
    for totals in currencies.values() {
        if totals.debits_minor != totals.credits_minor {
            violation(
                &mut report,
                format!(
                    "{}: debits {} != credits {}",
                    totals.currency, totals.debits_minor, totals.credits_minor
                ),
            );
        }
        if totals.balances_minor != 0 {
            violation(
                &mut report,
                format!(
                    "{}: account balances sum to {}, not 0",
                    totals.currency, totals.balances_minor
                ),
            );
        }
    }
    report.currencies = currencies.into_values().collect();

    // Each balance is credits - debits of its own entries, in its own currency, and is not
    // negative unless overdraft is allowed.
    let account_rows = sqlx::query(
        "SELECT a.id, a.balance_minor, a.overdraft_allowed, \
                (COALESCE(SUM(e.amount_minor) FILTER (WHERE e.direction = 'credit'), 0) \
                  - COALESCE(SUM(e.amount_minor) FILTER (WHERE e.direction = 'debit'), 0))::text \
                  AS entries_balance, \
                COUNT(e.id) FILTER (WHERE e.currency <> a.currency) AS foreign_entries \
         FROM accounts a LEFT JOIN entries e ON e.account_id = a.id \
         GROUP BY a.id ORDER BY a.id",
    )
    .fetch_all(&mut *connection)
    .await?;
    for row in &account_rows {
        report.accounts_checked += 1;
        let id: String = row.try_get("id")?;
        let balance: i64 = row.try_get("balance_minor")?;
        let overdraft_allowed: bool = row.try_get("overdraft_allowed")?;
        let entries_balance = sum(row, "entries_balance")?;
        let foreign_entries: i64 = row.try_get("foreign_entries")?;
        if i128::from(balance) != entries_balance {
            violation(
                &mut report,
                format!(
                    "account {}: balance {balance} != credits - debits {entries_balance}",
                    masked(&id)
                ),
            );
        }
        if balance < 0 && !overdraft_allowed {
            violation(
                &mut report,
                format!(
                    "account {}: balance {balance} is negative without overdraft",
                    masked(&id)
                ),
            );
        }
        if foreign_entries != 0 {
            violation(
                &mut report,
                format!(
                    "account {}: {foreign_entries} entries in another currency",
                    masked(&id)
                ),
            );
        }
    }

    // Each transfer has exactly one debit entry on its debit account and one credit entry on
    // its credit account, both of its amount and currency.
    report.transfers_checked = sqlx::query_scalar("SELECT COUNT(*) FROM transfers")
        .fetch_one(&mut *connection)
        .await?;
    let limit = i64::try_from(INVARIANT_VIOLATIONS_REPORTED_MAX).unwrap_or(i64::MAX);
    let broken_transfers = sqlx::query(
        "SELECT t.id::text AS id FROM transfers t LEFT JOIN entries e ON e.transfer_id = t.id \
         GROUP BY t.id \
         HAVING COUNT(e.id) <> 2 \
             OR COUNT(e.id) FILTER (WHERE e.direction = 'debit' \
                    AND e.account_id = t.debit_account AND e.amount_minor = t.amount_minor \
                    AND e.currency = t.currency) <> 1 \
             OR COUNT(e.id) FILTER (WHERE e.direction = 'credit' \
                    AND e.account_id = t.credit_account AND e.amount_minor = t.amount_minor \
                    AND e.currency = t.currency) <> 1 \
         ORDER BY t.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *connection)
    .await?;
    for row in &broken_transfers {
        let id: String = row.try_get("id")?;
        violation(
            &mut report,
            format!("transfer {id}: entries do not match its debit/credit"),
        );
    }

    // Maker-checker. Reservations: without overdraft, balance minus pending debits held for
    // approval is never negative.
    let over_reserved = sqlx::query(
        "SELECT a.id, a.balance_minor, r.reserved_minor FROM accounts a \
         JOIN (SELECT debit_account, SUM(amount_minor)::int8 AS reserved_minor \
               FROM approval_requests WHERE status = 'pending' GROUP BY debit_account) r \
           ON r.debit_account = a.id \
         WHERE a.overdraft_allowed = false AND a.balance_minor - r.reserved_minor < 0 \
         ORDER BY a.id",
    )
    .fetch_all(&mut *connection)
    .await?;
    for row in &over_reserved {
        let id: String = row.try_get("id")?;
        let balance: i64 = row.try_get("balance_minor")?;
        let reserved: i64 = row.try_get("reserved_minor")?;
        violation(
            &mut report,
            format!(
                "account {}: balance {balance} is below its reservations {reserved} without overdraft",
                masked(&id)
            ),
        );
    }
    // A held transfer is posted exactly when its request says so, four eyes held (no
    // approver is the initiator), and a posted one had the approvals it needed.
    let broken_requests = sqlx::query(
        "SELECT r.transfer_id::text AS transfer_id, 'status and transfer row disagree' AS problem \
         FROM approval_requests r LEFT JOIN transfers t ON t.id = r.transfer_id \
         WHERE (r.status = 'posted') <> (t.id IS NOT NULL) \
         UNION ALL \
         SELECT r.transfer_id::text, 'acted on by its initiator' FROM approval_requests r \
         JOIN approval_events e ON e.approval_id = r.id \
         WHERE e.approver_fingerprint = r.initiator_fingerprint \
         UNION ALL \
         SELECT r.transfer_id::text, 'posted with too few approvals' FROM approval_requests r \
         WHERE r.status = 'posted' AND r.approvals_required > \
             (SELECT COUNT(*) FROM approval_events e \
              WHERE e.approval_id = r.id AND e.action = 'approve') \
         ORDER BY 1 LIMIT 100",
    )
    .fetch_all(&mut *connection)
    .await?;
    for row in &broken_requests {
        let transfer_id: String = row.try_get("transfer_id")?;
        let problem: String = row.try_get("problem")?;
        violation(
            &mut report,
            format!("held transfer {transfer_id}: {problem}"),
        );
    }
    Ok(report)
}
