//! The store end to end, on every back end: postings, refusals, idempotency, group commit,
//! durability. Tests of one back end's internals are marked as such.

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use countersign_audit::{Outcome, RecordKind};
use countersign_ledger::{
    AccountStatus, IdempotencyOutcome, LedgerError, NewAccount, SeedTransfer, StoreLimits,
    TransferOutcome, Verdict, reason_codes,
};
use uuid::Uuid;

// Each body below runs as `<name>::sqlite` and `<name>::postgres`.
on_both_backends!(
    posting_moves_balances_and_audits_decision_and_posting,
    decide_sees_the_fresh_state_it_is_posted_against,
    overdraft_is_refused_by_the_ledger_even_when_the_policy_allows,
    overdraft_allowed_accounts_may_go_negative,
    a_denied_verdict_writes_the_decision_record_and_no_posting,
    the_ledger_refuses_inactive_accounts_other_currencies_and_self_transfers,
    idempotent_replay_returns_the_first_outcome_and_a_different_body_conflicts,
    a_failing_command_in_a_batch_does_not_fail_its_neighbours,
    a_thousand_concurrent_transfers_among_ten_accounts_keep_every_invariant,
    balances_and_audit_trail_survive_a_reopen,
    shutdown_answers_queued_commands_then_refuses_new_ones,
    a_full_queue_sheds_load_after_the_enqueue_timeout,
    duplicates_are_refused,
    seeding_from_an_account_without_overdraft_is_refused,
    append_audit_extends_the_same_chain,
    concurrent_commands_are_group_committed,
    account_status_changes_are_audited_and_guarded,
);

fn posted(outcome: TransferOutcome) -> countersign_ledger::Transfer {
    match outcome {
        TransferOutcome::Posted { transfer, .. } => transfer,
        other => panic!("expected Posted, got {other:?}"),
    }
}

fn denied_codes(outcome: &TransferOutcome) -> Vec<String> {
    match outcome {
        TransferOutcome::Denied { reasons, .. } => {
            reasons.iter().map(|reason| reason.code.clone()).collect()
        }
        other => panic!("expected Denied, got {other:?}"),
    }
}

async fn alice_and_bob(store: &countersign_ledger::Store) {
    create_account(store, "DE89370400440532013000", false).await;
    create_account(store, "DE02120300000000202051", false).await;
}

const ALICE: &str = "DE89370400440532013000";
const BOB: &str = "DE02120300000000202051";

async fn posting_moves_balances_and_audits_decision_and_posting(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "100.00").await;
    assert_eq!(balance(store, ALICE).await, 10_000);
    let records_before = audit_count(store).await;

    let transfer = posted(
        store
            .submit_transfer(transfer_command(ALICE, BOB, eur_amount("30.50"), allow))
            .await
            .expect("submit"),
    );
    assert_eq!(balance(store, ALICE).await, 6_950);
    assert_eq!(balance(store, BOB).await, 3_050);
    assert_eq!(balance(store, FUNDING_EUR).await, -10_000);
    assert_eq!(
        store.transfer(transfer.id).await.expect("read"),
        Some(transfer.clone())
    );
    let state = store
        .account_state(&id(ALICE), transfer.business_date)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(state.debited_today_minor, 3_050);

    // One decision record and one posting record with the same decision id.
    assert_eq!(audit_count(store).await, records_before + 2);
    let records = read_audit(store, records_before, 10).await;
    assert_eq!(records[0].record.kind, RecordKind::Decision);
    assert_eq!(records[1].record.kind, RecordKind::Posting);
    assert_eq!(records[1].record.outcome, Outcome::Posted);
    assert_eq!(records[1].record.action, "ledger.post");
    assert_eq!(records[1].record.decision_id, transfer.decision_id);
    assert_eq!(records[0].record.decision_id, transfer.decision_id);
    assert_eq!(records[1].record.bundle_revision, "test-rev-1");
    assert_eq!(
        records[1].record.masked_input["debit_account"],
        "******************3000"
    );
    assert_eq!(records[1].record.result["amount"], "30.50");
    assert_invariants(store).await;
    ledger.store.shutdown().await.expect("shutdown");
}

async fn decide_sees_the_fresh_state_it_is_posted_against(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "100.00").await;
    posted(
        store
            .submit_transfer(transfer_command(ALICE, BOB, eur_amount("10"), allow))
            .await
            .expect("submit"),
    );
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen_by_decide = seen.clone();
    let command = transfer_command(ALICE, BOB, eur_amount("1"), move |context| {
        *seen_by_decide.lock().expect("lock") = Some(context.clone());
        allow(context)
    });
    posted(store.submit_transfer(command).await.expect("submit"));
    let context = seen
        .lock()
        .expect("lock")
        .clone()
        .expect("decide was called");
    assert_eq!(context.debit.account.balance_minor, 9_000);
    assert_eq!(context.debit.debited_today_minor, 1_000);
    assert_eq!(context.credit.account.balance_minor, 1_000);
    assert_eq!(context.credit.debited_today_minor, 0);
    assert!(context.audit_writable);
}

async fn overdraft_is_refused_by_the_ledger_even_when_the_policy_allows(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "10.00").await;
    let records_before = audit_count(store).await;

    let command = transfer_command(ALICE, BOB, eur_amount("10.01"), allow);
    let claim = command.idempotency.clone();
    let outcome = store.submit_transfer(command).await.expect("submit");
    assert_eq!(denied_codes(&outcome), [reason_codes::INSUFFICIENT_FUNDS]);
    assert_eq!(balance(store, ALICE).await, 1_000);
    assert_eq!(balance(store, BOB).await, 0);
    // The policy's decision is kept; there is no posting record.
    assert_eq!(audit_count(store).await, records_before + 1);
    let stored = store
        .idempotency(&claim.scope, &claim.key)
        .await
        .expect("read")
        .expect("idempotency row");
    assert_eq!(stored.outcome, IdempotencyOutcome::Denied);
    assert_eq!(stored.transfer_id, None);
    assert_eq!(stored.reasons[0].code, reason_codes::INSUFFICIENT_FUNDS);

    // Exactly the balance is fine.
    posted(
        store
            .submit_transfer(transfer_command(ALICE, BOB, eur_amount("10"), allow))
            .await
            .expect("submit"),
    );
    assert_eq!(balance(store, ALICE).await, 0);
    assert_invariants(store).await;
}

async fn overdraft_allowed_accounts_may_go_negative(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    create_account(store, ALICE, true).await;
    create_account(store, BOB, false).await;
    posted(
        store
            .submit_transfer(transfer_command(ALICE, BOB, eur_amount("25"), allow))
            .await
            .expect("submit"),
    );
    assert_eq!(balance(store, ALICE).await, -2_500);
    assert_eq!(balance(store, BOB).await, 2_500);
    assert_invariants(store).await;
}

async fn a_denied_verdict_writes_the_decision_record_and_no_posting(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "100").await;
    let records_before = audit_count(store).await;

    let command = transfer_command(ALICE, BOB, eur_amount("5"), deny);
    let transfer_id = command.transfer_id;
    let outcome = store.submit_transfer(command).await.expect("submit");
    assert_eq!(denied_codes(&outcome), ["limits.daily_exceeded"]);
    assert_eq!(balance(store, ALICE).await, 10_000);
    assert_eq!(store.transfer(transfer_id).await.expect("read"), None);
    assert_eq!(audit_count(store).await, records_before + 1);
    let records = read_audit(store, records_before, 10).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].record.outcome, Outcome::Deny);
    assert_invariants(store).await;
}

async fn the_ledger_refuses_inactive_accounts_other_currencies_and_self_transfers(
    backend: Backend,
) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "100").await;
    store
        .create_account(
            NewAccount {
                id: id("FROZEN-0001"),
                currency: eur(),
                overdraft_allowed: false,
                status: AccountStatus::Frozen,
            },
            decision_record("account.create", Outcome::Allow),
        )
        .await
        .expect("create");
    store
        .create_account(
            NewAccount {
                id: id("USD-0001"),
                currency: countersign_ledger::Currency::parse("USD").expect("known"),
                overdraft_allowed: false,
                status: AccountStatus::Active,
            },
            decision_record("account.create", Outcome::Allow),
        )
        .await
        .expect("create");

    let cases = [
        (ALICE, "FROZEN-0001", reason_codes::ACCOUNT_NOT_ACTIVE),
        (ALICE, "USD-0001", reason_codes::CURRENCY_MISMATCH),
        (ALICE, ALICE, reason_codes::SAME_ACCOUNT),
    ];
    for (debit, credit, code) in cases {
        let outcome = store
            .submit_transfer(transfer_command(debit, credit, eur_amount("1"), allow))
            .await
            .expect("submit");
        assert_eq!(denied_codes(&outcome), [code], "{debit} -> {credit}");
    }
    assert_eq!(balance(store, ALICE).await, 10_000);
    assert_invariants(store).await;
}

async fn idempotent_replay_returns_the_first_outcome_and_a_different_body_conflicts(
    backend: Backend,
) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "100").await;

    let first = transfer_command(ALICE, BOB, eur_amount("7"), allow);
    let claim = first.idempotency.clone();
    let transfer = posted(store.submit_transfer(first).await.expect("submit"));
    let records_after_first = audit_count(store).await;

    // Same key, same request: replayed, decide not called, nothing written.
    let decided = Arc::new(AtomicBool::new(false));
    let decided_flag = decided.clone();
    let mut again = transfer_command(ALICE, BOB, eur_amount("7"), move |context| {
        decided_flag.store(true, Ordering::SeqCst);
        allow(context)
    });
    again.idempotency = claim.clone();
    match store.submit_transfer(again).await.expect("submit") {
        TransferOutcome::Replayed(stored) => {
            assert_eq!(stored.outcome, IdempotencyOutcome::Posted);
            assert_eq!(stored.transfer_id, Some(transfer.id));
            assert_eq!(stored.decision_id, transfer.decision_id);
        }
        other => panic!("expected Replayed, got {other:?}"),
    }
    assert!(!decided.load(Ordering::SeqCst));
    assert_eq!(balance(store, ALICE).await, 9_300);
    assert_eq!(audit_count(store).await, records_after_first);

    // Same key, different request: conflict.
    let mut conflicting = transfer_command(ALICE, BOB, eur_amount("8"), allow);
    conflicting.idempotency = countersign_ledger::IdempotencyClaim {
        request_hash: [7; 32],
        ..claim.clone()
    };
    let error = store
        .submit_transfer(conflicting)
        .await
        .expect_err("conflict");
    assert!(
        matches!(error, LedgerError::IdempotencyConflict { .. }),
        "{error:?}"
    );

    // The same key in another scope is another request.
    let mut other_scope = transfer_command(ALICE, BOB, eur_amount("1"), allow);
    other_scope.idempotency = countersign_ledger::IdempotencyClaim {
        scope: "client-cd".to_owned(),
        ..claim
    };
    posted(store.submit_transfer(other_scope).await.expect("submit"));
    assert_eq!(balance(store, ALICE).await, 9_200);
    assert_invariants(store).await;
}

async fn a_failing_command_in_a_batch_does_not_fail_its_neighbours(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "1000").await;
    let records_before = audit_count(store).await;

    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..53 {
        let store = store.clone();
        tasks.spawn(async move {
            let command = match index {
                25 => transfer_command(ALICE, "DE00MISSING0000000000", eur_amount("1"), allow),
                26 => transfer_command(ALICE, BOB, eur_amount("1"), |_| panic!("policy bug")),
                27 => transfer_command(ALICE, BOB, eur_amount("1"), |context| Verdict {
                    // Contradicts its own record: allow=true, record says deny.
                    allow: true,
                    ..deny(context)
                }),
                _ => transfer_command(ALICE, BOB, eur_amount("1"), allow),
            };
            (index, store.submit_transfer(command).await)
        });
    }
    let mut posted_count = 0;
    while let Some(joined) = tasks.join_next().await {
        let (index, result) = joined.expect("task");
        match index {
            25 => assert!(
                matches!(result, Err(LedgerError::AccountNotFound(_))),
                "{result:?}"
            ),
            26 | 27 => assert!(
                matches!(result, Err(LedgerError::DecisionFailed(_))),
                "{result:?}"
            ),
            _ => {
                posted(result.expect("good command succeeds"));
                posted_count += 1;
            }
        }
    }
    assert_eq!(posted_count, 50);
    assert_eq!(balance(store, ALICE).await, 100_000 - 5_000);
    assert_eq!(balance(store, BOB).await, 5_000);
    assert_eq!(audit_count(store).await, records_before + 2 * 50);
    assert_invariants(store).await;
}

async fn a_thousand_concurrent_transfers_among_ten_accounts_keep_every_invariant(backend: Backend) {
    const ACCOUNTS: usize = 10;
    const TRANSFERS: usize = 1_000;
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    let accounts: Vec<String> = (0..ACCOUNTS)
        .map(|index| format!("ACCT-{index:04}"))
        .collect();
    for account in &accounts {
        create_account(store, account, false).await;
        fund(store, account, "100.00").await;
    }
    let records_before = audit_count(store).await;

    // Deterministic pseudo-random choice (xorshift), so a failure reproduces.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TRANSFERS {
        let debit = accounts[(next() % ACCOUNTS as u64) as usize].clone();
        let mut credit = accounts[(next() % ACCOUNTS as u64) as usize].clone();
        if credit == debit {
            credit = accounts
                [(accounts.iter().position(|a| *a == debit).expect("known") + 1) % ACCOUNTS]
                .clone();
        }
        let cents = 1 + next() % 3_000;
        let amount =
            countersign_ledger::Amount::from_minor_units(cents as i64, eur()).expect("positive");
        let store = store.clone();
        tasks.spawn(async move {
            store
                .submit_transfer(transfer_command(&debit, &credit, amount, allow))
                .await
        });
    }
    let (mut posted_count, mut denied_count) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task").expect("submit") {
            TransferOutcome::Posted { .. } => posted_count += 1,
            outcome => {
                assert_eq!(denied_codes(&outcome), [reason_codes::INSUFFICIENT_FUNDS]);
                denied_count += 1;
            }
        }
    }
    assert_eq!(posted_count + denied_count, TRANSFERS);
    let mut total = 0;
    for account in &accounts {
        let balance = balance(store, account).await;
        assert!(balance >= 0, "{account} overdrawn: {balance}");
        total += balance;
    }
    assert_eq!(
        total,
        ACCOUNTS as i64 * 10_000,
        "money was created or destroyed"
    );
    // Every transfer has a decision record; posted ones also a posting record.
    assert_eq!(
        audit_count(store).await,
        records_before + (TRANSFERS + posted_count) as i64
    );
    let report = store.check_invariants().await.expect("check");
    assert_eq!(report.transfers_checked, (posted_count + ACCOUNTS) as i64);
    assert_invariants(store).await;
}

async fn balances_and_audit_trail_survive_a_reopen(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    alice_and_bob(&ledger.store).await;
    fund(&ledger.store, ALICE, "100").await;
    let transfer = posted(
        ledger
            .store
            .submit_transfer(transfer_command(ALICE, BOB, eur_amount("42.42"), allow))
            .await
            .expect("submit"),
    );
    let records = audit_count(&ledger.store).await;
    ledger.store.shutdown().await.expect("shutdown");

    let reopened = ledger.open_again(StoreLimits::default()).await;
    assert_eq!(balance(&reopened, ALICE).await, 10_000 - 4_242);
    assert_eq!(balance(&reopened, BOB).await, 4_242);
    assert_eq!(
        reopened.transfer(transfer.id).await.expect("read"),
        Some(transfer)
    );
    assert_eq!(audit_count(&reopened).await, records);
    assert_invariants(&reopened).await;
    // The chain continues across the reopen.
    posted(
        reopened
            .submit_transfer(transfer_command(BOB, ALICE, eur_amount("2.42"), allow))
            .await
            .expect("submit"),
    );
    assert_invariants(&reopened).await;
    reopened.shutdown().await.expect("shutdown");
}

async fn shutdown_answers_queued_commands_then_refuses_new_ones(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "100").await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
                .await
        });
    }
    // Let the tasks enqueue before shutting down.
    tokio::task::yield_now().await;
    store.shutdown().await.expect("shutdown");
    let mut answered = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task") {
            Ok(outcome) => {
                posted(outcome);
                answered += 1;
            }
            // A task that had not enqueued yet when the queue closed.
            Err(LedgerError::ShuttingDown) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let error = store
        .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
        .await
        .expect_err("closed");
    assert!(matches!(error, LedgerError::ShuttingDown), "{error:?}");
    store.shutdown().await.expect("second shutdown is a no-op");

    let reopened = ledger.open_again(StoreLimits::default()).await;
    assert_eq!(balance(&reopened, BOB).await, answered * 100);
    assert_invariants(&reopened).await;
}

async fn a_full_queue_sheds_load_after_the_enqueue_timeout(backend: Backend) {
    let limits = StoreLimits {
        queue_commands_max: 1,
        batch_commands_max: 1,
        enqueue_timeout_ms: 50,
        ..StoreLimits::default()
    };
    let ledger = open_ledger(&backend, limits).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "100").await;

    // A decide that blocks the writer until released.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (entered, writer_blocked) = tokio::sync::oneshot::channel::<()>();
    let blocking = transfer_command(ALICE, BOB, eur_amount("1"), move |context| {
        let _ = entered.send(());
        released.recv().expect("released");
        allow(context)
    });
    let blocked_store = store.clone();
    let blocked = tokio::spawn(async move { blocked_store.submit_transfer(blocking).await });
    writer_blocked.await.expect("writer is inside decide");

    // One command fits in the queue; the next waits 50 ms and is shed.
    let queued_store = store.clone();
    let queued = tokio::spawn(async move {
        queued_store
            .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let error = store
        .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
        .await
        .expect_err("overloaded");
    assert!(matches!(error, LedgerError::Overloaded), "{error:?}");

    release.send(()).expect("writer waits");
    posted(blocked.await.expect("task").expect("submit"));
    posted(queued.await.expect("task").expect("submit"));
    assert_invariants(store).await;
}

async fn duplicates_are_refused(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "100").await;
    let records_before = audit_count(store).await;

    let error = store
        .create_account(
            NewAccount {
                id: id(ALICE),
                currency: eur(),
                overdraft_allowed: true,
                status: AccountStatus::Active,
            },
            decision_record("account.create", Outcome::Allow),
        )
        .await
        .expect_err("duplicate");
    assert!(matches!(error, LedgerError::AccountExists(_)), "{error:?}");

    let first = transfer_command(ALICE, BOB, eur_amount("1"), allow);
    let transfer_id = first.transfer_id;
    posted(store.submit_transfer(first).await.expect("submit"));
    let mut reused = transfer_command(ALICE, BOB, eur_amount("1"), allow);
    reused.transfer_id = transfer_id;
    let error = store
        .submit_transfer(reused)
        .await
        .expect_err("duplicate id");
    assert!(matches!(error, LedgerError::TransferExists(_)), "{error:?}");

    // Failed commands leave no audit record behind.
    assert_eq!(audit_count(store).await, records_before + 2);
    assert_invariants(store).await;
}

async fn seeding_from_an_account_without_overdraft_is_refused(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    let error = store
        .seed_transfer(SeedTransfer {
            transfer_id: Uuid::now_v7(),
            debit_account: id(ALICE),
            credit_account: id(BOB),
            amount: eur_amount("1"),
            remittance_info: None,
        })
        .await
        .expect_err("refused");
    assert!(
        matches!(
            error,
            LedgerError::Refused {
                reason_code: reason_codes::INSUFFICIENT_FUNDS
            }
        ),
        "{error:?}"
    );

    let transfer = fund(store, BOB, "3").await;
    let records = read_audit(store, 0, 100).await;
    let seed_records: Vec<_> = records
        .iter()
        .filter(|sealed| sealed.record.decision_id == transfer.decision_id)
        .collect();
    assert_eq!(seed_records.len(), 2);
    assert_eq!(seed_records[0].record.action, "ledger.seed");
    assert_eq!(seed_records[0].record.outcome, Outcome::Allow);
    assert_eq!(seed_records[0].record.subject.fingerprint_sha256, "system");
    assert_eq!(seed_records[1].record.kind, RecordKind::Posting);
    assert_invariants(store).await;
}

async fn append_audit_extends_the_same_chain(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    let appended = store
        .append_audit(vec![
            decision_record("transfer.create", Outcome::Deny),
            decision_record("account.read", Outcome::Allow),
        ])
        .await
        .expect("append");
    assert_eq!(appended, 2);
    let sealed = read_audit(store, 0, 10).await;
    assert_eq!(
        sealed
            .iter()
            .map(|record| (record.sequence, record.record.action.as_str()))
            .collect::<Vec<_>>(),
        [(1, "transfer.create"), (2, "account.read")]
    );
    assert!(store.audit_writable());
    assert_invariants(store).await;
}

/// SQLite internals.
#[tokio::test(flavor = "multi_thread")]
async fn the_read_pool_cannot_write() {
    let ledger = open_ledger(&Backend::Sqlite, StoreLimits::default()).await;
    let result = sqlx::query("DELETE FROM accounts")
        .execute(ledger.sqlite().pool())
        .await;
    assert!(result.is_err(), "read pool accepted a write");
}

async fn concurrent_commands_are_group_committed(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "1000").await;
    let before = store.writer_stats();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
                .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        posted(joined.expect("task").expect("submit"));
    }
    let after = store.writer_stats();
    let commands = after.commands_committed - before.commands_committed;
    let batches = after.batches_committed - before.batches_committed;
    assert_eq!(commands, 200);
    assert!(
        batches < commands,
        "no group commit: {batches} batches for {commands} commands"
    );
    assert_eq!(after.batches_aborted, 0);
    assert_eq!(after.queued_commands, 0);
}

/// SQLite internals.
#[tokio::test(flavor = "multi_thread")]
async fn check_invariants_reports_a_tampered_balance_and_entries_are_append_only() {
    let ledger = open_ledger(&Backend::Sqlite, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "100").await;
    posted(
        store
            .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
            .await
            .expect("submit"),
    );
    assert_invariants(store).await;

    // Someone edits the file behind the ledger's back.
    use sqlx::{ConnectOptions, Connection};
    let mut intruder = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&ledger.url)
        .connect()
        .await
        .expect("connect");
    let edit_entry = sqlx::query("UPDATE entries SET amount_minor = 1")
        .execute(&mut intruder)
        .await;
    assert!(edit_entry.is_err(), "entries accepted an update");
    sqlx::query("UPDATE accounts SET balance_minor = balance_minor + 1 WHERE id = ?")
        .bind(BOB)
        .execute(&mut intruder)
        .await
        .expect("tamper");
    intruder.close().await.expect("close");

    let report = store.check_invariants().await.expect("check");
    assert!(!report.is_ok());
    assert_eq!(report.violations_total, 2, "{report:#?}");
    assert!(
        report
            .violations
            .iter()
            .any(|violation| violation.contains("*2051: balance 101 != credits - debits 100"))
    );
    assert!(
        report
            .violations
            .iter()
            .any(|violation| violation.contains("sum to 1"))
    );
}

/// Code written against the trait (as the gateway may be later) works, and its futures are
/// `Send`, so handlers can be spawned.
async fn balance_through_trait<S: countersign_ledger::LedgerStore>(
    store: &S,
    account: &str,
) -> i64 {
    store
        .account(&id(account))
        .await
        .expect("read")
        .expect("exists")
        .balance_minor
}

/// SQLite internals.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_is_usable_through_the_trait_from_spawned_tasks() {
    let ledger = open_ledger(&Backend::Sqlite, StoreLimits::default()).await;
    alice_and_bob(&ledger.store).await;
    fund(&ledger.store, ALICE, "5").await;
    let store = Arc::new(ledger);
    let ledger = store.clone();
    let balance = tokio::spawn(async move { balance_through_trait(store.sqlite(), ALICE).await })
        .await
        .expect("task");
    assert_eq!(balance, 500);
    countersign_ledger::LedgerStore::shutdown(ledger.sqlite())
        .await
        .expect("shutdown");
}

async fn account_status_changes_are_audited_and_guarded(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "10").await;
    let records_before = audit_count(store).await;
    let status_record = || decision_record("account.set_status", Outcome::Allow);

    let frozen = store
        .set_account_status(&id(ALICE), AccountStatus::Frozen, status_record())
        .await
        .expect("freeze");
    assert_eq!(frozen.status, AccountStatus::Frozen);
    assert_eq!(frozen.balance_minor, 1_000);
    let outcome = store
        .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
        .await
        .expect("submit");
    assert_eq!(denied_codes(&outcome), [reason_codes::ACCOUNT_NOT_ACTIVE]);

    let refused = store
        .set_account_status(&id(ALICE), AccountStatus::Closed, status_record())
        .await
        .expect_err("money on it");
    assert!(
        matches!(
            refused,
            LedgerError::Refused {
                reason_code: reason_codes::BALANCE_NOT_ZERO
            }
        ),
        "{refused:?}"
    );
    store
        .set_account_status(&id(BOB), AccountStatus::Closed, status_record())
        .await
        .expect("close empty account");
    let refused = store
        .set_account_status(&id(BOB), AccountStatus::Active, status_record())
        .await
        .expect_err("closed is terminal");
    assert!(
        matches!(
            refused,
            LedgerError::Refused {
                reason_code: reason_codes::ACCOUNT_CLOSED
            }
        ),
        "{refused:?}"
    );
    let missing = store
        .set_account_status(
            &id("DE00MISSING0000000000"),
            AccountStatus::Frozen,
            status_record(),
        )
        .await
        .expect_err("missing");
    assert!(
        matches!(missing, LedgerError::AccountNotFound(_)),
        "{missing:?}"
    );
    // freeze + transfer decision + close = 3 records; refused changes leave none.
    assert_eq!(audit_count(store).await, records_before + 3);
    assert_invariants(store).await;
}

/// SQLite internals.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_pool_verifies_a_closed_or_live_database() {
    let ledger = open_ledger(&Backend::Sqlite, StoreLimits::default()).await;
    alice_and_bob(&ledger.store).await;
    fund(&ledger.store, ALICE, "10").await;
    let path = ledger.url.clone();

    // While the writer is live.
    let pool = countersign_ledger::SqliteStore::open_read_only(&path)
        .await
        .expect("open read-only");
    let report = countersign_ledger::SqliteStore::check_invariants_in(&pool)
        .await
        .expect("check");
    assert!(report.is_ok(), "{report:#?}");
    let verify = countersign_audit::sqlite::verify(&pool)
        .await
        .expect("verify");
    assert!(verify.is_intact());
    pool.close().await;

    // After shutdown (WAL checkpointed and removed).
    ledger.store.shutdown().await.expect("shutdown");
    let pool = countersign_ledger::SqliteStore::open_read_only(&path)
        .await
        .expect("open read-only");
    let verify = countersign_audit::sqlite::verify(&pool)
        .await
        .expect("verify");
    assert!(verify.is_intact());
    assert_eq!(verify.records_checked, 5); // 3 accounts (incl. funding) + seed decision + posting
    pool.close().await;

    let missing = ledger
        .directory
        .as_ref()
        .expect("sqlite has a directory")
        .path()
        .join("missing.sqlite");
    assert!(
        countersign_ledger::SqliteStore::open_read_only(missing.to_str().expect("utf-8"))
            .await
            .is_err()
    );
}
