//! The transfer API over mTLS: allow, deny, idempotency, overdraft.

use serde_json::Value;

use crate::support::{ALICE, BOB, TestApp, transfer};

async fn funded_app() -> TestApp {
    let app = TestApp::spawn().await;
    app.open_account(ALICE, "EUR", "2500000.00").await;
    app.open_account(BOB, "EUR", "100.00").await;
    app
}

fn reason_codes(body: &Value) -> Vec<String> {
    body["reasons"]
        .as_array()
        .expect("reasons array")
        .iter()
        .map(|reason| reason["code"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_transfer_moves_balances_and_is_audited() {
    let app = funded_app().await;
    let records_before = app.audit_count().await;
    let (status, body) = app
        .post_transfer("t-1", &transfer(ALICE, BOB, "250.00"))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["transfer"]["amount"], "250.00");
    assert_eq!(body["transfer"]["status"], "posted");
    assert!(body["decision_id"].is_string());
    assert_eq!(app.balance_minor(ALICE).await, 250_000_000 - 25_000);
    assert_eq!(app.balance_minor(BOB).await, 10_000 + 25_000);
    // One decision record and one posting record, in the same transaction.
    assert_eq!(app.audit_count().await, records_before + 2);

    // The transfer reads back the same, and the account shows the balance as a decimal.
    let id = body["transfer"]["id"].as_str().unwrap();
    let mut shown: Value = app
        .client("teller")
        .get(format!("{}/v1/transfers/{id}", app.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Straight through: it was never held for approval.
    assert_eq!(shown["approval"], Value::Null);
    shown.as_object_mut().unwrap().remove("approval");
    assert_eq!(shown, body["transfer"]);
    let account: Value = app
        .client("channel")
        .get(format!("{}/v1/accounts/{BOB}", app.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(account["balance"], "350.00");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_transfer_changes_nothing_and_is_audited() {
    let app = funded_app().await;
    let records_before = app.audit_count().await;
    // Above the single-transfer limit it would be held for approval, but Alice's
    // 2,500,000.00 do not cover it: refused outright (a denial wins over the obligation).
    let (status, body) = app
        .post_transfer("t-over", &transfer(ALICE, BOB, "2500000.01"))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "policy.denied");
    assert!(body["decision_id"].is_string());
    assert_eq!(reason_codes(&body), vec!["funds.insufficient"]);
    assert_eq!(app.balance_minor(ALICE).await, 250_000_000);
    assert_eq!(app.balance_minor(BOB).await, 10_000);
    // The denial is a decision record, with no posting.
    assert_eq!(app.audit_count().await, records_before + 1);

    // Exactly at the limit is allowed.
    let (status, body) = app
        .post_transfer("t-at-limit", &transfer(ALICE, BOB, "1000000.00"))
        .await;
    assert_eq!(status, 201, "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn caller_without_initiator_role_is_denied_by_policy() {
    let app = funded_app().await;
    let (status, body) = app
        .post_transfer_as("auditor", "t-auditor", &transfer(ALICE, BOB, "1.00"))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(reason_codes(&body), vec!["subject.role_not_authorized"]);
    let (status, _) = app
        .post_transfer_as("teller", "t-teller", &transfer(ALICE, BOB, "1.00"))
        .await;
    assert_eq!(status, 201);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn overdraft_is_refused() {
    let app = funded_app().await;
    let (status, body) = app
        .post_transfer("t-od", &transfer(BOB, ALICE, "100.01"))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(reason_codes(&body), vec!["funds.insufficient"]);
    assert_eq!(app.balance_minor(BOB).await, 10_000);
    // The whole balance can go.
    let (status, _) = app
        .post_transfer("t-all", &transfer(BOB, ALICE, "100.00"))
        .await;
    assert_eq!(status, 201);
    assert_eq!(app.balance_minor(BOB).await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotent_retry_posts_once_and_returns_the_identical_response() {
    let app = funded_app().await;
    let body = transfer(ALICE, BOB, "10.00");
    let first = app
        .client("channel")
        .post(format!("{}/v1/transfers", app.base_url))
        .header("Idempotency-Key", "retry-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let first_bytes = first.bytes().await.unwrap();
    let records_after_first = app.audit_count().await;

    // Same key, same body (re-ordered keys and extra whitespace do not matter).
    let reordered = r#"{ "currency": "EUR", "amount": "10.00",
        "credit_account": "FR1420041010050500013M02606", "debit_account": "DE89370400440532013000" }"#;
    for _ in 0..3 {
        let retry = app
            .client("channel")
            .post(format!("{}/v1/transfers", app.base_url))
            .header("Idempotency-Key", "retry-1")
            .header("Content-Type", "application/json")
            .body(reordered)
            .send()
            .await
            .unwrap();
        assert_eq!(retry.status().as_u16(), 201);
        assert_eq!(retry.bytes().await.unwrap(), first_bytes);
    }
    assert_eq!(app.balance_minor(BOB).await, 10_000 + 1_000);
    assert_eq!(app.audit_count().await, records_after_first);

    // A denial is replayed too.
    let (status, denied) = app
        .post_transfer("retry-2", &transfer(ALICE, BOB, "2500000.01"))
        .await;
    assert_eq!(status, 403);
    let (status, replayed) = app
        .post_transfer("retry-2", &transfer(ALICE, BOB, "2500000.01"))
        .await;
    assert_eq!(status, 403);
    assert_eq!(denied, replayed);

    // The same key from another caller is another key.
    let (status, _) = app
        .post_transfer_as("teller", "retry-1", &transfer(ALICE, BOB, "10.00"))
        .await;
    assert_eq!(status, 201);
    assert_eq!(app.balance_minor(BOB).await, 10_000 + 2_000);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_reuse_with_another_body_is_refused() {
    let app = funded_app().await;
    let (status, _) = app
        .post_transfer("reuse-1", &transfer(ALICE, BOB, "10.00"))
        .await;
    assert_eq!(status, 201);
    let records = app.audit_count().await;
    let (status, body) = app
        .post_transfer("reuse-1", &transfer(ALICE, BOB, "11.00"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "idempotency_key.reused");
    assert_eq!(app.balance_minor(BOB).await, 10_000 + 1_000);
    assert_eq!(app.audit_count().await, records);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_in_flight_is_a_conflict() {
    let app = funded_app().await;
    // Hold the key as a concurrent first request would.
    let scope = crate::support::fingerprint(&app.pki.clients["channel"].certificate_pem);
    let guard = app
        .state
        .claim_idempotency_key(&scope, "busy-1")
        .expect("free key");
    let (status, body) = app
        .post_transfer("busy-1", &transfer(ALICE, BOB, "1.00"))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "idempotency_key.in_flight");
    drop(guard);
    let (status, _) = app
        .post_transfer("busy-1", &transfer(ALICE, BOB, "1.00"))
        .await;
    assert_eq!(status, 201);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn frozen_and_sanctioned_accounts_are_refused() {
    let app = funded_app().await;
    // Freeze Bob through the ledger, as an operator would.
    app.state
        .store
        .set_account_status(
            &countersign_ledger::AccountId::parse(BOB).unwrap(),
            countersign_ledger::AccountStatus::Frozen,
            countersign::dev::system_record(
                "account.set_status",
                serde_json::json!({"status": "frozen"}),
                "test",
            ),
        )
        .await
        .unwrap();
    let (status, body) = app
        .post_transfer("frozen-1", &transfer(ALICE, BOB, "1.00"))
        .await;
    assert_eq!(status, 403);
    assert_eq!(reason_codes(&body), vec!["account.credit_not_active"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics() {
    let app = funded_app().await;
    let client = app.client("auditor");
    let ready: Value = client
        .get(format!("{}/readyz", app.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["audit_writable"], true);
    assert_eq!(ready["policy"]["evaluator"], "vm");
    let (status, _) = app
        .post_transfer("m-1", &transfer(ALICE, BOB, "1.00"))
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .post_transfer("m-2", &transfer(ALICE, BOB, "2500000.01"))
        .await;
    assert_eq!(status, 403);
    let text = client
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "countersign_decisions_total{action=\"transfer.create\",outcome=\"allow\"} 1",
        "countersign_decisions_total{action=\"transfer.create\",outcome=\"deny\"} 1",
        "countersign_decision_reasons_total{reason=\"funds.insufficient\"} 1",
        "route=\"/v1/transfers\",method=\"POST\",status=\"201\"}",
        "countersign_ledger_commit_duration_seconds_count 2",
        "countersign_audit_backlog_records",
    ] {
        assert!(text.contains(expected), "metrics lack {expected}:\n{text}");
    }
    app.stop().await;
}
