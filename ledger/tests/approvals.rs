//! Maker-checker in the ledger, on every back end: holds reserve funds, approvals post,
//! rejections and expiry release, the ledger's four-eyes rules hold whatever the policy says,
//! and exactly one outcome wins a race.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use countersign_audit::{Outcome, RecordKind, Subject};
use countersign_ledger::{
    ApprovalAction, ApprovalCommand, ApprovalContext, ApprovalOutcome, ApprovalQuery,
    ApprovalRequest, ApprovalRequirement, ApprovalStatus, ApprovalVerdict, DecisionContext,
    IdempotencyOutcome, LedgerError, Reason, Store, StoreLimits, TransferOutcome, Verdict,
    approval_reason_codes, reason_codes,
};
use time::OffsetDateTime;
use uuid::Uuid;

on_both_backends!(
    a_held_transfer_reserves_funds_and_posts_after_one_approval,
    two_approvals_by_different_people_are_needed_and_nobody_acts_twice,
    the_initiator_cannot_approve_even_when_the_policy_allows,
    a_policy_deny_changes_nothing,
    rejection_releases_the_reservation,
    expiry_releases_the_reservation_and_a_late_approval_loses,
    a_replayed_hold_points_at_its_request,
    approve_reject_and_expiry_race_to_exactly_one_outcome,
    the_ledger_refuses_to_post_an_approved_transfer_from_a_frozen_account,
    a_resolved_request_and_its_history_cannot_be_rewritten_in_the_database,
);

const ALICE: &str = "DE89370400440532013000";
const BOB: &str = "DE02120300000000202051";
/// The initiator of every held transfer here (see `common::transfer_command`).
const INITIATOR: &str = "abababababababababababababababababababababababababababababababab";

fn approver(name: &str) -> String {
    format!("{:0>64}", name.len()) + name
}

fn hold(approvals_required: u32, expires_in: Duration) -> impl FnOnce(&DecisionContext) -> Verdict {
    move |context: &DecisionContext| Verdict {
        allow: true,
        reasons: Vec::new(),
        approval: Some(ApprovalRequirement {
            approvals_required,
            approver_roles: vec!["approver".to_owned()],
            expires_at: context.now + expires_in,
        }),
        decision_record: decision_record("transfer.create", Outcome::Pending),
    }
}

fn step_record(
    action: ApprovalAction,
    allow: bool,
    fingerprint: &str,
) -> countersign_audit::NewRecord {
    let mut record = decision_record(
        &format!("transfer.{}", action.as_str()),
        if allow { Outcome::Allow } else { Outcome::Deny },
    );
    record.subject = Subject {
        fingerprint_sha256: fingerprint.to_owned(),
        common_name: Some("approver".to_owned()),
        roles: vec!["approver".to_owned()],
    };
    record
}

/// An approve/reject by `fingerprint` whose policy answers `allow`.
fn step(
    request: &ApprovalRequest,
    action: ApprovalAction,
    fingerprint: &str,
    allow: bool,
) -> ApprovalCommand {
    let record_fingerprint = fingerprint.to_owned();
    ApprovalCommand {
        transfer_id: request.transfer_id,
        debit_account: request.debit_account.clone(),
        credit_account: request.credit_account.clone(),
        action,
        approver_fingerprint: fingerprint.to_owned(),
        approver_common_name: Some("approver".to_owned()),
        comment: Some("checked".to_owned()),
        decide: Box::new(move |_: &ApprovalContext| ApprovalVerdict {
            allow,
            reasons: if allow {
                Vec::new()
            } else {
                vec![Reason::new(
                    "approval.role_not_authorized",
                    "not an approver",
                )]
            },
            decision_record: step_record(action, allow, &record_fingerprint),
        }),
    }
}

async fn held(
    store: &Store,
    amount: &str,
    approvals: u32,
    expires_in: Duration,
) -> ApprovalRequest {
    let outcome = store
        .submit_transfer(transfer_command(
            ALICE,
            BOB,
            eur_amount(amount),
            hold(approvals, expires_in),
        ))
        .await
        .expect("submit");
    match outcome {
        TransferOutcome::Pending { request, .. } => request,
        other => panic!("expected Pending, got {other:?}"),
    }
}

async fn alice_with(store: &Store, funds: &str) {
    create_account(store, ALICE, false).await;
    create_account(store, BOB, false).await;
    fund(store, ALICE, funds).await;
}

/// The request of held transfer `request` as stored now.
async fn stored(store: &Store, request: &ApprovalRequest) -> ApprovalRequest {
    store
        .approval(request.transfer_id)
        .await
        .expect("read")
        .expect("exists")
}

async fn reserved(store: &Store, account: &str) -> i64 {
    store
        .account_state(&id(account), OffsetDateTime::now_utc().date())
        .await
        .expect("read")
        .expect("exists")
        .reserved_minor
}

fn accepted(outcome: ApprovalOutcome) -> ApprovalRequest {
    match outcome {
        ApprovalOutcome::Accepted { request, .. } => request,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

fn denied_codes(outcome: &ApprovalOutcome) -> Vec<String> {
    match outcome {
        ApprovalOutcome::Denied { reasons, .. } => {
            reasons.iter().map(|reason| reason.code.clone()).collect()
        }
        other => panic!("expected Denied, got {other:?}"),
    }
}

const HOUR: Duration = Duration::from_secs(3600);

async fn a_held_transfer_reserves_funds_and_posts_after_one_approval(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_with(store, "2500000.00").await;

    let request = held(store, "2000000.00", 1, HOUR).await;
    assert_eq!(request.status, ApprovalStatus::Pending);
    assert_eq!(
        balance(store, ALICE).await,
        250_000_000,
        "nothing posted yet"
    );
    assert_eq!(reserved(store, ALICE).await, 200_000_000);
    assert_eq!(
        store.transfer(request.transfer_id).await.expect("read"),
        None
    );

    // The reservation blocks a transfer that would overdraw, not one that fits.
    let blocked = store
        .submit_transfer(transfer_command(ALICE, BOB, eur_amount("600000.00"), allow))
        .await
        .expect("submit");
    match &blocked {
        TransferOutcome::Denied { reasons, .. } => {
            assert_eq!(reasons[0].code, reason_codes::INSUFFICIENT_FUNDS)
        }
        other => panic!("expected Denied, got {other:?}"),
    }
    store
        .submit_transfer(transfer_command(ALICE, BOB, eur_amount("400000.00"), allow))
        .await
        .expect("submit");

    let pending = store
        .approvals(&ApprovalQuery {
            status: Some(ApprovalStatus::Pending),
            after: None,
            limit: 10,
        })
        .await
        .expect("list");
    assert_eq!(pending, vec![request.clone()]);

    let outcome = store
        .submit_approval(step(
            &request,
            ApprovalAction::Approve,
            &approver("alice"),
            true,
        ))
        .await
        .expect("approve");
    let ApprovalOutcome::Accepted {
        request: after,
        transfer,
        refusals,
        decision_id,
    } = outcome
    else {
        panic!("expected Accepted, got {outcome:?}");
    };
    assert!(refusals.is_empty());
    assert_eq!(after.status, ApprovalStatus::Posted);
    assert_eq!(after.resolution_decision_id, Some(decision_id));
    let transfer = transfer.expect("posted");
    assert_eq!(transfer.id, request.transfer_id);
    assert_eq!(transfer.decision_id, request.initiation_decision_id);
    assert_eq!(balance(store, ALICE).await, 10_000_000);
    assert_eq!(balance(store, BOB).await, 240_000_000);
    assert_eq!(reserved(store, ALICE).await, 0);
    let stored = stored(store, &request).await;
    assert_eq!(stored, after, "what the writer returned is what is stored");
    assert_eq!(stored.events.len(), 1);
    assert_eq!(stored.events[0].comment.as_deref(), Some("checked"));

    // The story in the trail, linked to the initiation decision.
    let records = read_audit(store, 0, 1_000).await;
    let story: Vec<(RecordKind, Outcome)> = records
        .iter()
        .filter(|sealed| {
            let record = &sealed.record;
            record.decision_id == request.initiation_decision_id
                || record
                    .result
                    .get("initiation_decision_id")
                    .and_then(|v| v.as_str())
                    == Some(request.initiation_decision_id.to_string().as_str())
                || record.decision_id == decision_id
        })
        .map(|sealed| (sealed.record.kind, sealed.record.outcome))
        .collect();
    assert_eq!(
        story,
        vec![
            (RecordKind::Decision, Outcome::Pending),
            (RecordKind::Reservation, Outcome::Pending),
            (RecordKind::Decision, Outcome::Allow),
            (RecordKind::Approval, Outcome::Allow),
            (RecordKind::Posting, Outcome::Posted),
        ]
    );
    assert_invariants(store).await;
}

async fn two_approvals_by_different_people_are_needed_and_nobody_acts_twice(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_with(store, "30000000.00").await;
    let request = held(store, "20000000.00", 2, HOUR).await;

    let first = accepted(
        store
            .submit_approval(step(
                &request,
                ApprovalAction::Approve,
                &approver("alice"),
                true,
            ))
            .await
            .expect("first"),
    );
    assert_eq!(first.status, ApprovalStatus::Pending);
    assert_eq!(first.approvals().count(), 1);
    assert_eq!(balance(store, ALICE).await, 3_000_000_000);

    // Same person again, with a policy that allows it: the ledger refuses.
    let again = store
        .submit_approval(step(
            &request,
            ApprovalAction::Approve,
            &approver("alice"),
            true,
        ))
        .await
        .expect("again");
    assert_eq!(
        denied_codes(&again),
        vec![approval_reason_codes::ALREADY_DECIDED]
    );

    let second = accepted(
        store
            .submit_approval(step(
                &request,
                ApprovalAction::Approve,
                &approver("dave"),
                true,
            ))
            .await
            .expect("second"),
    );
    assert_eq!(second.status, ApprovalStatus::Posted);
    assert_eq!(second.approvals().count(), 2);
    assert_eq!(balance(store, ALICE).await, 1_000_000_000);

    // Once posted, nothing changes it any more.
    let late = store
        .submit_approval(step(
            &request,
            ApprovalAction::Reject,
            &approver("erin"),
            true,
        ))
        .await
        .expect("late");
    assert_eq!(
        denied_codes(&late),
        vec![approval_reason_codes::NOT_PENDING]
    );
    assert_invariants(store).await;
}

async fn the_initiator_cannot_approve_even_when_the_policy_allows(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_with(store, "2500000.00").await;
    let request = held(store, "2000000.00", 1, HOUR).await;
    for action in [ApprovalAction::Approve, ApprovalAction::Reject] {
        let outcome = store
            .submit_approval(step(&request, action, INITIATOR, true))
            .await
            .expect("step");
        assert_eq!(
            denied_codes(&outcome),
            vec![approval_reason_codes::SELF_APPROVAL]
        );
    }
    let stored = stored(store, &request).await;
    assert_eq!(stored.status, ApprovalStatus::Pending);
    assert!(stored.events.is_empty());
    assert_eq!(reserved(store, ALICE).await, 200_000_000);
    // Both refusals are in the trail as approval records with outcome deny.
    let refused = read_audit(store, 0, 1_000)
        .await
        .into_iter()
        .filter(|sealed| {
            sealed.record.kind == RecordKind::Approval && sealed.record.outcome == Outcome::Deny
        })
        .count();
    assert_eq!(refused, 2);
    assert_invariants(store).await;
}

async fn a_policy_deny_changes_nothing(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_with(store, "2500000.00").await;
    let request = held(store, "2000000.00", 1, HOUR).await;
    let before = audit_count(store).await;
    let outcome = store
        .submit_approval(step(
            &request,
            ApprovalAction::Approve,
            &approver("mallory"),
            false,
        ))
        .await
        .expect("step");
    assert_eq!(denied_codes(&outcome), vec!["approval.role_not_authorized"]);
    assert_eq!(
        audit_count(store).await,
        before + 1,
        "only the decision record"
    );
    let stored = stored(store, &request).await;
    assert_eq!(stored, request);

    let unknown = store
        .submit_approval(ApprovalCommand {
            transfer_id: Uuid::now_v7(),
            ..step(&request, ApprovalAction::Approve, &approver("alice"), true)
        })
        .await;
    assert!(
        matches!(unknown, Err(LedgerError::ApprovalNotFound(_))),
        "{unknown:?}"
    );
    assert_eq!(
        audit_count(store).await,
        before + 1,
        "nothing written for an unknown id"
    );
}

async fn rejection_releases_the_reservation(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_with(store, "2500000.00").await;
    let request = held(store, "2000000.00", 1, HOUR).await;
    let outcome = accepted(
        store
            .submit_approval(step(
                &request,
                ApprovalAction::Reject,
                &approver("bob"),
                true,
            ))
            .await
            .expect("reject"),
    );
    assert_eq!(outcome.status, ApprovalStatus::Rejected);
    assert_eq!(reserved(store, ALICE).await, 0);
    assert_eq!(balance(store, ALICE).await, 250_000_000);
    let after = store
        .submit_approval(step(
            &request,
            ApprovalAction::Approve,
            &approver("alice"),
            true,
        ))
        .await
        .expect("approve");
    assert_eq!(
        denied_codes(&after),
        vec![approval_reason_codes::NOT_PENDING]
    );
    // The released funds are available again.
    store
        .submit_transfer(transfer_command(
            ALICE,
            BOB,
            eur_amount("2400000.00"),
            allow,
        ))
        .await
        .expect("submit");
    assert_eq!(balance(store, ALICE).await, 10_000_000);
    let releases: Vec<_> = read_audit(store, 0, 1_000)
        .await
        .into_iter()
        .filter(|sealed| sealed.record.kind == RecordKind::Release)
        .collect();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].record.outcome, Outcome::Voided);
    assert_eq!(
        releases[0].record.decision_id,
        request.initiation_decision_id
    );
    assert_eq!(releases[0].record.result["cause"], "rejected");
    assert_invariants(store).await;
}

async fn expiry_releases_the_reservation_and_a_late_approval_loses(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_with(store, "5000000.00").await;
    let swept = held(store, "2000000.00", 1, Duration::from_millis(300)).await;
    let late = held(store, "2000000.00", 1, Duration::from_millis(300)).await;
    assert_eq!(reserved(store, ALICE).await, 400_000_000);
    assert!(
        store.expire_approvals(100).await.expect("sweep").is_empty(),
        "not due yet"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;

    // `late` is found expired by the approval itself, before any sweep.
    let outcome = store
        .submit_approval(step(
            &late,
            ApprovalAction::Approve,
            &approver("alice"),
            true,
        ))
        .await
        .expect("approve");
    assert_eq!(
        denied_codes(&outcome),
        vec![approval_reason_codes::NOT_PENDING]
    );
    let expired = store.expire_approvals(100).await.expect("sweep");
    assert_eq!(
        expired.iter().map(|request| request.id).collect::<Vec<_>>(),
        vec![swept.id]
    );
    assert_eq!(expired[0].status, ApprovalStatus::Expired);
    assert!(store.expire_approvals(100).await.expect("sweep").is_empty());
    for request in [&swept, &late] {
        let stored = stored(store, request).await;
        assert_eq!(stored.status, ApprovalStatus::Expired);
        assert_eq!(stored.resolution_decision_id, None);
    }
    assert_eq!(reserved(store, ALICE).await, 0);
    assert_eq!(balance(store, ALICE).await, 500_000_000);
    let releases = read_audit(store, 0, 1_000)
        .await
        .into_iter()
        .filter(|sealed| sealed.record.kind == RecordKind::Release)
        .count();
    assert_eq!(releases, 2);
    assert_invariants(store).await;
}

async fn a_replayed_hold_points_at_its_request(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_with(store, "2500000.00").await;
    let command = transfer_command(ALICE, BOB, eur_amount("2000000.00"), hold(1, HOUR));
    let claim = command.idempotency.clone();
    let request = match store.submit_transfer(command).await.expect("submit") {
        TransferOutcome::Pending { request, .. } => request,
        other => panic!("expected Pending, got {other:?}"),
    };
    let mut again = transfer_command(ALICE, BOB, eur_amount("2000000.00"), hold(1, HOUR));
    again.idempotency = claim;
    match store.submit_transfer(again).await.expect("replay") {
        TransferOutcome::Replayed(stored) => {
            assert_eq!(stored.outcome, IdempotencyOutcome::Pending);
            assert_eq!(stored.approval_id, Some(request.id));
            assert_eq!(stored.transfer_id, None);
            assert_eq!(stored.decision_id, request.initiation_decision_id);
        }
        other => panic!("expected Replayed, got {other:?}"),
    }
    assert_eq!(
        store.approval_by_id(request.id).await.expect("read"),
        Some(request)
    );
    assert_eq!(reserved(store, ALICE).await, 200_000_000, "reserved once");
}

/// Per request: approver A approves, approver B approves (two-approval requests) or rejects,
/// while the sweeper runs and the expiry falls in the middle of it all. Exactly one outcome
/// each, and the books balance.
async fn approve_reject_and_expiry_race_to_exactly_one_outcome(backend: Backend) {
    const REQUESTS: usize = 50;
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = ledger.store.clone();
    alice_with(&store, "1100000000.00").await;
    let mut requests = Vec::new();
    for index in 0..REQUESTS {
        let approvals = 1 + (index % 2) as u32;
        let expires_in = Duration::from_millis(100 + 10 * (index as u64 % 20));
        requests.push(held(&store, "20000000.00", approvals, expires_in).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (index, request) in requests.iter().enumerate() {
        let second = if index % 2 == 0 {
            ApprovalAction::Reject
        } else {
            ApprovalAction::Approve
        };
        for (action, who, delay_ms) in [
            (ApprovalAction::Approve, "alice", (index as u64 * 31) % 300),
            (second, "bob", (index as u64 * 17) % 300),
        ] {
            let store = store.clone();
            let command = step(request, action, &approver(who), true);
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                store.submit_approval(command).await
            });
        }
    }
    let sweeper = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                store.expire_approvals(7).await.expect("sweep");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut winners = std::collections::HashMap::<Uuid, usize>::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task").expect("step") {
            ApprovalOutcome::Accepted { request, .. }
                if request.status != ApprovalStatus::Pending =>
            {
                *winners.entry(request.id).or_default() += 1;
            }
            ApprovalOutcome::Accepted { .. } | ApprovalOutcome::Denied { .. } => {}
        }
    }
    sweeper.await.expect("sweeper");
    tokio::time::sleep(Duration::from_millis(400)).await;
    store.expire_approvals(1_000).await.expect("final sweep");

    let mut posted_minor = 0;
    let mut endings = std::collections::BTreeMap::<&str, usize>::new();
    for request in &requests {
        let stored = stored(&store, request).await;
        let won_by_a_step = winners.get(&request.id).copied().unwrap_or(0);
        match stored.status {
            ApprovalStatus::Pending => panic!("{} still pending after its expiry", request.id),
            ApprovalStatus::Expired => assert_eq!(won_by_a_step, 0, "{}", request.id),
            ApprovalStatus::Posted | ApprovalStatus::Rejected => {
                assert_eq!(won_by_a_step, 1, "{} ended by exactly one step", request.id)
            }
            ApprovalStatus::Failed => panic!("{}: nothing here fails", request.id),
        }
        *endings.entry(stored.status.as_str()).or_default() += 1;
        let transfer = store.transfer(request.transfer_id).await.expect("read");
        assert_eq!(transfer.is_some(), stored.status == ApprovalStatus::Posted);
        if stored.status == ApprovalStatus::Posted {
            assert_eq!(
                stored.approvals().count(),
                stored.approvals_required as usize
            );
            posted_minor += 2_000_000_000;
        }
    }
    // The schedule (steps at 0..300 ms, expiries at 100..290 ms) makes every ending happen;
    // a run where one never does did not race what it claims to.
    for ending in ["posted", "rejected", "expired"] {
        assert!(
            endings.get(ending).is_some_and(|count| *count > 0),
            "{endings:?}"
        );
    }
    assert_eq!(reserved(&store, ALICE).await, 0);
    assert_eq!(balance(&store, ALICE).await, 110_000_000_000 - posted_minor);
    assert_eq!(balance(&store, BOB).await, posted_minor);
    assert_invariants(&store).await;
}

async fn the_ledger_refuses_to_post_an_approved_transfer_from_a_frozen_account(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_with(store, "2500000.00").await;
    let request = held(store, "2000000.00", 1, HOUR).await;
    store
        .set_account_status(
            &id(ALICE),
            countersign_ledger::AccountStatus::Frozen,
            decision_record("account.freeze", Outcome::Allow),
        )
        .await
        .expect("freeze");
    let outcome = store
        .submit_approval(step(
            &request,
            ApprovalAction::Approve,
            &approver("alice"),
            true,
        ))
        .await
        .expect("approve");
    let ApprovalOutcome::Accepted {
        request: after,
        transfer,
        refusals,
        ..
    } = outcome
    else {
        panic!("expected Accepted, got {outcome:?}");
    };
    assert_eq!(after.status, ApprovalStatus::Failed);
    assert_eq!(transfer, None);
    assert_eq!(refusals[0].code, reason_codes::ACCOUNT_NOT_ACTIVE);
    assert_eq!(reserved(store, ALICE).await, 0);
    assert_eq!(balance(store, ALICE).await, 250_000_000);
    assert_invariants(store).await;
}

/// A database made before held transfers existed: its `idempotency` table refuses outcome
/// `pending`. Opening it upgrades the table once, keeping its rows.
#[tokio::test]
async fn an_old_sqlite_idempotency_table_is_upgraded_on_open() {
    use sqlx::{ConnectOptions, Connection};
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("old.sqlite");
    let mut old = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .connect()
        .await
        .expect("create");
    sqlx::raw_sql(
        "CREATE TABLE idempotency (
            scope TEXT NOT NULL, key TEXT NOT NULL,
            request_hash BLOB NOT NULL CHECK (length(request_hash) = 32),
            outcome TEXT NOT NULL CHECK (outcome IN ('posted', 'denied')),
            transfer_id TEXT, decision_id TEXT NOT NULL, reasons_json TEXT NOT NULL,
            created_at TEXT NOT NULL, PRIMARY KEY (scope, key),
            CHECK ((outcome = 'posted') = (transfer_id IS NOT NULL))) STRICT;
         INSERT INTO idempotency VALUES ('client-ab', 'old-key', zeroblob(32), 'denied', NULL,
            '0193a5a0-0000-7000-8000-000000000000', '[]', '2026-11-01T00:00:00Z');",
    )
    .execute(&mut old)
    .await
    .expect("old schema");
    old.close().await.expect("close");

    let store = Store::open(path.to_str().expect("utf-8"), StoreLimits::default())
        .await
        .expect("open upgrades");
    let kept = store
        .idempotency("client-ab", "old-key")
        .await
        .expect("read")
        .expect("row kept");
    assert_eq!(kept.outcome, IdempotencyOutcome::Denied);
    alice_with(&store, "2500000.00").await;
    let request = held(&store, "2000000.00", 1, HOUR).await;
    assert_eq!(request.status, ApprovalStatus::Pending);
    store.shutdown().await.expect("shutdown");
    // Opening again is a no-op.
    let store = Store::open(path.to_str().expect("utf-8"), StoreLimits::default())
        .await
        .expect("reopen");
    assert!(
        store
            .approval(request.transfer_id)
            .await
            .expect("read")
            .is_some()
    );
    store.shutdown().await.expect("shutdown");
}

/// Runs `sql` on the database directly (as its owner), next to the store.
async fn raw_execute(ledger: &TestLedger, sql: &str) -> Result<(), String> {
    use sqlx::{ConnectOptions, Connection};
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if ledger.is_postgres() {
        let mut connection = admin_connection(&ledger.url).await;
        let result = sqlx::raw_sql(sql).execute(&mut connection).await;
        connection.close().await.expect("close");
        result.map(|_| ()).map_err(|error| error.to_string())
    } else {
        let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&ledger.url)
            .busy_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect");
        let result = sqlx::raw_sql(sql).execute(&mut connection).await;
        connection.close().await.expect("close");
        result.map(|_| ()).map_err(|error| error.to_string())
    }
}

async fn a_resolved_request_and_its_history_cannot_be_rewritten_in_the_database(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_with(store, "2500000.00").await;
    let request = held(store, "2000000.00", 1, HOUR).await;
    accepted(
        store
            .submit_approval(step(
                &request,
                ApprovalAction::Approve,
                &approver("alice"),
                true,
            ))
            .await
            .expect("approve"),
    );
    for statement in [
        "UPDATE approval_requests SET status = 'pending', resolved_at = NULL",
        "UPDATE approval_requests SET status = 'rejected'",
        "DELETE FROM approval_requests",
        "UPDATE approval_events SET approver_fingerprint = 'someone-else'",
        "DELETE FROM approval_events",
    ] {
        let error = raw_execute(&ledger, statement).await.expect_err(statement);
        assert!(
            error.contains("pending once")
                || error.contains("append-only")
                || error.contains("never deleted")
                || error.contains("(refused)"),
            "{statement}: {error}"
        );
    }
    // A pending request may only move to a final status, and only its outcome columns.
    let pending = held(store, "100000.00", 1, HOUR).await;
    let error = raw_execute(
        &ledger,
        &format!(
            "UPDATE approval_requests SET amount_minor = 1 WHERE id = '{}'",
            pending.id
        ),
    )
    .await
    .expect_err("amount change");
    assert!(error.contains("pending once"), "{error}");
    assert_invariants(store).await;
}
