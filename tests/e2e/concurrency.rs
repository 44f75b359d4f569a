//! 1,000 concurrent transfers among 10 accounts: double entry holds, no overdraft, and the
//! audit trail has exactly one record per decision and per posting.

use std::sync::Arc;

use futures::{StreamExt, stream};
use serde_json::json;

use crate::support::TestApp;

const ACCOUNTS: usize = 10;
const TRANSFERS: usize = 1_000;
/// Requests in flight at once: enough to fill the ledger's group-commit batches.
const CONCURRENCY: usize = 64;

fn account(index: usize) -> String {
    format!("DE{:020}", 1_000 + index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_keep_the_books_balanced() {
    let app = Arc::new(TestApp::spawn().await);
    // Small balances so that many transfers would overdraw and must be refused.
    for index in 0..ACCOUNTS {
        app.open_account(&account(index), "EUR", "500.00").await;
    }
    let records_before = app.audit_count().await;
    let client = app.client("channel");

    // A deterministic pseudo-random plan: (debit, credit, amount in cents).
    let mut seed: u64 = 0x5eed_cafe;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let plan: Vec<(usize, usize, u64)> = (0..TRANSFERS)
        .map(|_| {
            let debit = (next() % ACCOUNTS as u64) as usize;
            let credit = (debit + 1 + (next() % (ACCOUNTS as u64 - 1)) as usize) % ACCOUNTS;
            (debit, credit, 1 + next() % 30_000)
        })
        .collect();

    let results: Vec<u16> = stream::iter(plan.into_iter().enumerate())
        .map(|(index, (debit, credit, cents))| {
            let client = client.clone();
            let app = app.clone();
            async move {
                let body = json!({
                    "debit_account": account(debit),
                    "credit_account": account(credit),
                    "amount": format!("{}.{:02}", cents / 100, cents % 100),
                    "currency": "EUR",
                });
                client
                    .post(format!("{}/v1/transfers", app.base_url))
                    .header("Idempotency-Key", format!("load-{index}"))
                    .json(&body)
                    .send()
                    .await
                    .expect("request completes")
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    let posted = results.iter().filter(|status| **status == 201).count() as i64;
    let denied = results.iter().filter(|status| **status == 403).count() as i64;
    assert_eq!(
        posted + denied,
        TRANSFERS as i64,
        "unexpected statuses: {results:?}"
    );
    assert!(
        posted > 100 && denied > 10,
        "posted {posted}, denied {denied}: the plan should exercise both"
    );

    let report = app.state.store.check_invariants().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    let mut total = 0;
    for index in 0..ACCOUNTS {
        let balance = app.balance_minor(&account(index)).await;
        assert!(balance >= 0, "account {index} overdrawn: {balance}");
        total += balance;
    }
    assert_eq!(
        total,
        ACCOUNTS as i64 * 50_000,
        "money was created or destroyed"
    );
    // One decision record per request that reached the policy, one posting per 201.
    assert_eq!(
        app.audit_count().await - records_before,
        (posted + denied) + posted
    );
    let report = app.state.store.verify_audit().await.unwrap();
    assert!(report.first_broken.is_none(), "{report:?}");
    Arc::into_inner(app).expect("sole owner").stop().await;
}
