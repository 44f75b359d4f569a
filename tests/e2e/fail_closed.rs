//! Fail closed: a policy that errors, times out or says nothing denies (and is audited);
//! an audit trail that cannot be written lets nothing post (503) and recovers by itself.

use std::path::Path;

use crate::support::{ALICE, AuditOutage, BOB, TestApp, readiness, transfer};

/// A bundle with only `decision.rego` holding `source`.
fn bundle_with(directory: &Path, source: &str) -> std::path::PathBuf {
    let bundle = directory.join("bundle");
    std::fs::create_dir_all(bundle.join("countersign/transfer")).unwrap();
    std::fs::write(bundle.join("countersign/transfer/decision.rego"), source).unwrap();
    bundle
}

async fn check_policy_failure(source: &str, timeout_ms: u64, expected_codes: &[&str]) {
    let scratch = tempfile::TempDir::new().unwrap();
    let bundle = bundle_with(scratch.path(), source);
    let app = TestApp::spawn_with(|config| {
        config.policy.bundle = bundle;
        config.policy.decision_timeout_ms = timeout_ms;
    })
    .await;
    app.open_account(ALICE, "EUR", "100.00").await;
    app.open_account(BOB, "EUR", "0").await;
    let records_before = app.audit_count().await;
    let (status, body) = app
        .post_transfer("fc-1", &transfer(ALICE, BOB, "1.00"))
        .await;
    assert_eq!(status, 403, "{expected_codes:?}: {body}");
    let code = body["reasons"][0]["code"].as_str().unwrap_or_default();
    assert!(expected_codes.contains(&code), "{expected_codes:?}: {body}");
    assert_eq!(app.balance_minor(BOB).await, 0);
    // The failed decision is in the trail, with outcome "error".
    assert_eq!(app.audit_count().await, records_before + 1);
    let record = app
        .state
        .store
        .read_sealed_after(records_before, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(record.record.outcome, countersign_audit::Outcome::Error);
    assert_eq!(record.record.result["allow"], false);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_runtime_error_denies() {
    check_policy_failure(
        "package countersign.transfer\n\ndecision := {\"allow\": true, \"reasons\": [], \"n\": 1 / (input.transfer.currency_minor_units - 2)}\n",
        1_000,
        // The interpreter raises a runtime error; regorus's VM turns it into an undefined
        // result. Either way: deny, outcome "error".
        &["policy.error", "policy.undefined"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undefined_decision_denies() {
    check_policy_failure(
        "package countersign.transfer\n\ndecision := {\"allow\": true, \"reasons\": []} if input.never_set == 42\n",
        1_000,
        &["policy.undefined"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_decision_denies() {
    check_policy_failure(
        "package countersign.transfer\n\ndecision := {\"allow\": \"yes\"}\n",
        1_000,
        &["policy.error"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_policy_denies() {
    check_policy_failure(
        "package countersign.transfer\n\nspin := count([1 | some i in numbers.range(1, 4000); some j in numbers.range(1, 4000)])\n\ndecision := {\"allow\": spin > 0, \"reasons\": []}\n",
        5,
        &["policy.timeout"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_audit_trail_posts_nothing_and_recovers() {
    let app = TestApp::spawn().await;
    app.open_account(ALICE, "EUR", "100.00").await;
    app.open_account(BOB, "EUR", "0").await;
    let records_before = app.audit_count().await;

    // Make every audit insert fail, as a full or read-only audit volume would.
    let outage = AuditOutage::begin(&app).await;

    let (status, body) = app
        .post_transfer("au-1", &transfer(ALICE, BOB, "1.00"))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "store.unavailable");
    assert_eq!(app.balance_minor(BOB).await, 0);
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["audit_writable"], false);

    // The volume comes back: the next transfer posts and readiness returns.
    outage.end().await;
    let (status, body) = app
        .post_transfer("au-2", &transfer(ALICE, BOB, "1.00"))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(app.balance_minor(BOB).await, 100);
    let (status, _) = readiness(&app).await;
    assert_eq!(status, 200);
    // Only the successful transfer's two records exist.
    assert_eq!(app.audit_count().await, records_before + 2);
    app.stop().await;
}
