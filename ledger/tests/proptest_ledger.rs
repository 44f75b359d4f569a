//! Property test: random transfer sequences, sequential or concurrent, keep every invariant.

mod common;

use common::*;
use countersign_ledger::{Amount, StoreLimits, TransferOutcome, reason_codes};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Scenario {
    overdraft_allowed: Vec<bool>,
    /// Seeded from the funding account first, in minor units; 0 = not funded.
    funding_minor: Vec<i64>,
    /// (debit index, credit index, minor units)
    transfers: Vec<(usize, usize, i64)>,
    /// Submit all transfers at once (outcomes depend on batch order) or one by one (outcomes
    /// are predicted exactly by a model).
    concurrent: bool,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (2usize..=6)
        .prop_flat_map(|accounts| {
            (
                proptest::collection::vec(proptest::bool::weighted(0.3), accounts),
                proptest::collection::vec(0i64..=50_000, accounts),
                proptest::collection::vec((0..accounts, 0..accounts, 1i64..=20_000), 1..40),
                any::<bool>(),
            )
        })
        .prop_map(
            |(overdraft_allowed, funding_minor, transfers, concurrent)| Scenario {
                overdraft_allowed,
                funding_minor,
                transfers,
                concurrent,
            },
        )
}

fn account_name(index: usize) -> String {
    format!("PROP-{index:04}")
}

async fn run(backend: Backend, scenario: Scenario) {
    let ledger = open_ledger(
        &backend,
        StoreLimits {
            batch_commands_max: 8,
            ..StoreLimits::default()
        },
    )
    .await;
    let store = &ledger.store;
    let accounts = scenario.overdraft_allowed.len();
    let mut model = vec![0i64; accounts];
    let mut seeds = 0;
    let accounts_and_funding = scenario
        .overdraft_allowed
        .iter()
        .zip(&scenario.funding_minor)
        .enumerate();
    for (index, (&overdraft_allowed, &funding)) in accounts_and_funding {
        create_account(store, &account_name(index), overdraft_allowed).await;
        if funding > 0 {
            let amount = Amount::from_minor_units(funding, eur()).expect("positive");
            fund(store, &account_name(index), &amount.to_decimal_string()).await;
            model[index] += funding;
            seeds += 1;
        }
    }
    let records_before = audit_count(store).await;
    let commands = scenario.transfers.iter().map(|&(debit, credit, minor)| {
        let amount = Amount::from_minor_units(minor, eur()).expect("positive");
        transfer_command(&account_name(debit), &account_name(credit), amount, allow)
    });

    let outcomes: Vec<TransferOutcome> = if scenario.concurrent {
        let mut tasks = tokio::task::JoinSet::new();
        for (position, command) in commands.enumerate() {
            let store = store.clone();
            tasks.spawn(async move { (position, store.submit_transfer(command).await) });
        }
        let mut outcomes: Vec<Option<TransferOutcome>> = vec![None; scenario.transfers.len()];
        while let Some(joined) = tasks.join_next().await {
            let (position, result) = joined.expect("task");
            outcomes[position] = Some(result.expect("submit"));
        }
        outcomes
            .into_iter()
            .map(|outcome| outcome.expect("answered"))
            .collect()
    } else {
        let mut outcomes = Vec::new();
        for command in commands {
            outcomes.push(store.submit_transfer(command).await.expect("submit"));
        }
        outcomes
    };

    let mut posted = 0;
    // Sequential runs are predicted step by step; concurrent ones are checked against the
    // postings that actually happened, whatever their order.
    let mut predicted = model.clone();
    for (&(debit, credit, minor), outcome) in scenario.transfers.iter().zip(&outcomes) {
        let expected_refusal = if debit == credit {
            Some(reason_codes::SAME_ACCOUNT)
        } else if !scenario.overdraft_allowed[debit] && predicted[debit] < minor {
            Some(reason_codes::INSUFFICIENT_FUNDS)
        } else {
            None
        };
        match outcome {
            TransferOutcome::Posted { transfer, .. } => {
                assert_eq!(transfer.amount.minor_units(), minor);
                if !scenario.concurrent {
                    assert_eq!(
                        expected_refusal, None,
                        "model refuses {debit}->{credit} {minor}"
                    );
                }
                model[debit] -= minor;
                model[credit] += minor;
                predicted[debit] -= minor;
                predicted[credit] += minor;
                posted += 1;
            }
            TransferOutcome::Denied { reasons, .. } => {
                let codes: Vec<&str> = reasons.iter().map(|reason| reason.code.as_str()).collect();
                if scenario.concurrent {
                    assert!(
                        codes == [reason_codes::SAME_ACCOUNT]
                            || codes == [reason_codes::INSUFFICIENT_FUNDS],
                        "unexpected refusal {codes:?}"
                    );
                } else {
                    assert_eq!(codes, [expected_refusal.expect("model posts")]);
                }
            }
            TransferOutcome::Replayed(_) => panic!("fresh keys never replay"),
            TransferOutcome::Pending { .. } => panic!("nothing here requires approval"),
        }
    }

    for (index, expected) in model.iter().enumerate() {
        let actual = balance(store, &account_name(index)).await;
        assert_eq!(actual, *expected, "balance of account {index}");
        if !scenario.overdraft_allowed[index] {
            assert!(actual >= 0, "account {index} overdrawn without overdraft");
        }
    }
    let transfers = scenario.transfers.len() as i64;
    assert_eq!(
        audit_count(store).await,
        records_before + transfers + posted
    );
    let report = store.check_invariants().await.expect("check");
    assert_eq!(report.transfers_checked, seeds + posted);
    assert_invariants(store).await;
    store.shutdown().await.expect("shutdown");
}

proptest! {
    // Each case creates a database file and commits with fsync: keep the count moderate.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_transfer_sequences_keep_every_invariant(scenario in scenario()) {
        block_on(run(Backend::Sqlite, scenario));
    }
}

proptest! {
    // Each case creates a PostgreSQL database: fewer cases.
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_transfer_sequences_keep_every_invariant_on_postgres(scenario in scenario()) {
        if let Some(backend) = Backend::postgres() {
            block_on(run(backend, scenario));
        }
    }
}

fn block_on(test: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(test);
}
