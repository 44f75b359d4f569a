//! PostgreSQL-only behaviour: roles and append-only tables, the asynchronous sealer (also with
//! two replicas on one database), the Kafka outbox and its bound, lost connections, a killed
//! process, and the sealing rate. The behaviour both back ends share is in `store.rs`.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use countersign_audit::{BreakKind, Outcome};
use countersign_ledger::{
    IdempotencyClaim, LedgerError, OutboxFullPolicy, Store, StoreLimits, StoreOptions,
    TransferOutcome,
};
use sqlx::{ConnectOptions, Connection, Row};

const ALICE: &str = "DE89370400440532013000";
const BOB: &str = "DE02120300000000202051";

fn pg_store(store: &Store) -> &countersign_ledger::PgStore {
    match store {
        Store::Postgres(store) => store,
        other => panic!("expected a PostgreSQL store, got {other:?}"),
    }
}

/// `url` with its user and password replaced.
fn with_user(url: &str, user: &str, password: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |index| index + 3);
    let rest = &url[scheme_end..];
    let host_start = match (rest.find('@'), rest.find('/')) {
        (Some(at), Some(slash)) if at < slash => at + 1,
        (Some(at), None) => at + 1,
        _ => 0,
    };
    format!(
        "{}{user}:{password}@{}",
        &url[..scheme_end],
        &rest[host_start..]
    )
}

fn posted(outcome: TransferOutcome) -> countersign_ledger::Transfer {
    match outcome {
        TransferOutcome::Posted { transfer, .. } => transfer,
        other => panic!("expected Posted, got {other:?}"),
    }
}

async fn alice_and_bob(store: &Store) {
    create_account(store, ALICE, false).await;
    create_account(store, BOB, false).await;
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    format!("{}_{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_role_runs_the_ledger_but_cannot_rewrite_the_audit_trail() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    alice_and_bob(&ledger.store).await;
    fund(&ledger.store, ALICE, "100").await;
    settle(&ledger.store).await;
    ledger.store.shutdown().await.expect("shutdown");

    // The login the gateway would use: a member of the NOLOGIN role the migration created.
    let role = format!("app_login_{}", unique_suffix());
    let mut admin = admin_connection(&ledger.url).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'app-password' IN ROLE countersign_app"
    )))
    .execute(&mut admin)
    .await
    .expect("create app login");
    let app_url = with_user(&ledger.url, &role, "app-password");

    // As the app role, without migrating: the whole ledger works, sealer included.
    let app_store = Store::open_with(
        &app_url,
        StoreLimits::default(),
        StoreOptions {
            migrate_on_start: false,
            ..StoreOptions::default()
        },
    )
    .await
    .expect("open as the app role");
    posted(
        app_store
            .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
            .await
            .expect("submit as the app role"),
    );
    assert_invariants(&app_store).await;
    let pending = app_store.outbox_pending(10).await.expect("outbox");
    app_store
        .outbox_mark_delivered(&[pending[0].sealed.record.record_id])
        .await
        .expect("mark delivered as the app role");
    app_store.shutdown().await.expect("shutdown");

    let mut app = sqlx::postgres::PgConnectOptions::from_str(&app_url)
        .expect("url")
        .connect()
        .await
        .expect("connect as the app role");
    for statement in [
        "UPDATE audit_records SET action = 'rewritten'",
        "DELETE FROM audit_records",
        "TRUNCATE audit_records CASCADE",
        "UPDATE audit_seals SET hash = previous_hash",
        "DELETE FROM audit_seals",
        "TRUNCATE audit_seals",
        "UPDATE transfers SET amount_minor = 1",
        "DELETE FROM entries",
        "DELETE FROM outbox",
        "UPDATE outbox SET key = 'other'",
    ] {
        let result = sqlx::raw_sql(statement).execute(&mut app).await;
        let error = result.expect_err(statement).to_string();
        assert!(
            error.contains("permission denied") || error.contains("may only be marked"),
            "{statement}: {error}"
        );
    }
    app.close().await.expect("close");

    // The owner is stopped by the append-only triggers.
    for statement in [
        "UPDATE audit_records SET action = 'rewritten'",
        "DELETE FROM audit_seals",
        "TRUNCATE audit_records CASCADE",
        "UPDATE entries SET amount_minor = 1",
    ] {
        let error = sqlx::raw_sql(statement)
            .execute(&mut admin)
            .await
            .expect_err(statement)
            .to_string();
        assert!(error.contains("append-only"), "{statement}: {error}");
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE {role}")))
        .execute(&mut admin)
        .await
        .expect("drop app login");
    admin.close().await.expect("close");
}

/// Edits the database as its owner with the triggers off for this session: what someone with
/// the owner's password (or the files) can do, and what the hash chain is for.
async fn tamper(url: &str, sql: &str) {
    let mut admin = admin_connection(url).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET session_replication_role = replica; {sql}"
    )))
    .execute(&mut admin)
    .await
    .expect("tamper");
    admin.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_recomputes_every_hash_from_the_stored_columns() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "100").await;
    for _ in 0..3 {
        posted(
            store
                .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
                .await
                .expect("submit"),
        );
    }
    assert_invariants(store).await;
    let pool = pg_store(store).pool().clone();
    let report = countersign_audit::postgres::verify(&pool)
        .await
        .expect("verify");
    assert!(report.is_intact());
    assert_eq!(report.records_checked, 11);
    let head = store.audit_head().await.expect("head").expect("not empty");
    assert_eq!(report.last_verified, Some(head));

    // An edited column, still canonical text: the hash no longer matches.
    tamper(
        &ledger.url,
        "UPDATE audit_records SET source_address = '10.6.6.6:1' \
         WHERE record_id = (SELECT record_id FROM audit_seals WHERE sequence = 7)",
    )
    .await;
    let report = store.verify_audit().await.expect("verify");
    let broken = report.first_broken.expect("tampering found");
    assert_eq!((broken.sequence, broken.kind), (7, BreakKind::HashMismatch));
    assert_eq!(report.records_checked, 6);

    // A non-canonical spelling of the same JSON is found too.
    tamper(
        &ledger.url,
        "UPDATE audit_records SET result = '{ \"allow\": true }' \
         WHERE record_id = (SELECT record_id FROM audit_seals WHERE sequence = 3)",
    )
    .await;
    let broken = store
        .verify_audit()
        .await
        .expect("verify")
        .first_broken
        .expect("tampering found");
    assert_eq!((broken.sequence, broken.kind), (3, BreakKind::NonCanonical));

    // A removed seal is a gap.
    tamper(&ledger.url, "DELETE FROM audit_seals WHERE sequence = 2").await;
    let broken = store
        .verify_audit()
        .await
        .expect("verify")
        .first_broken
        .expect("tampering found");
    assert_eq!((broken.sequence, broken.kind), (2, BreakKind::Missing));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_database_never_double_post() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    const ACCOUNTS: usize = 8;
    const TRANSFERS: usize = 600;
    const SHARED_KEYS: usize = 40;
    let ledger = open_ledger(
        &backend,
        StoreLimits {
            batch_commands_max: 16,
            ..StoreLimits::default()
        },
    )
    .await;
    let replica_a = ledger.store.clone();
    let replica_b = Arc::new(
        ledger
            .open_again(StoreLimits {
                batch_commands_max: 4,
                ..StoreLimits::default()
            })
            .await,
    );
    let accounts: Vec<String> = (0..ACCOUNTS)
        .map(|index| format!("ACCT-{index:04}"))
        .collect();
    for account in &accounts {
        create_account(&replica_a, account, false).await;
        fund(&replica_b, account, "100.00").await;
    }
    let records_before = audit_count(&replica_a).await;

    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pick = |next: &mut dyn FnMut() -> u64| {
        let debit = (next() % ACCOUNTS as u64) as usize;
        let credit = (debit + 1 + (next() % (ACCOUNTS as u64 - 1)) as usize) % ACCOUNTS;
        let cents = 1 + next() % 4_000;
        (
            accounts[debit].clone(),
            accounts[credit].clone(),
            countersign_ledger::Amount::from_minor_units(cents as i64, eur()).expect("positive"),
        )
    };

    // Independent transfers, alternating between the replicas.
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..TRANSFERS {
        let (debit, credit, amount) = pick(&mut next);
        let store = if index % 2 == 0 {
            replica_a.clone()
        } else {
            replica_b.clone()
        };
        tasks.spawn(async move {
            let result = store
                .submit_transfer(transfer_command(&debit, &credit, amount, allow))
                .await;
            (None, result)
        });
    }
    // The same idempotency key sent to both replicas at once; half with the same request,
    // half with a different one.
    for key_index in 0..SHARED_KEYS {
        let (debit, credit, amount) = pick(&mut next);
        let first = transfer_command(&debit, &credit, amount, allow);
        let mut second = transfer_command(&debit, &credit, amount, allow);
        second.idempotency = IdempotencyClaim {
            request_hash: if key_index % 2 == 0 {
                first.idempotency.request_hash
            } else {
                [0xEE; 32]
            },
            ..first.idempotency.clone()
        };
        for (store, command) in [(replica_a.clone(), first), (replica_b.clone(), second)] {
            tasks.spawn(async move { (Some(key_index), store.submit_transfer(command).await) });
        }
    }

    let (mut posted_count, mut denied_count) = (0usize, 0usize);
    let mut by_key: BTreeMap<usize, Vec<Result<TransferOutcome, LedgerError>>> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (key, result) = joined.expect("task");
        if let Some(key) = key {
            by_key.entry(key).or_default().push(result);
            continue;
        }
        match result.expect("independent transfers succeed") {
            TransferOutcome::Posted { .. } => posted_count += 1,
            TransferOutcome::Denied { reasons, .. } => {
                assert_eq!(reasons[0].code, "ledger.insufficient_funds");
                denied_count += 1;
            }
            TransferOutcome::Replayed(stored) => panic!("fresh key replayed: {stored:?}"),
            TransferOutcome::Pending { .. } => panic!("nothing here requires approval"),
        }
    }
    assert_eq!(posted_count + denied_count, TRANSFERS);
    let mut shared_records = 0;
    let mut shared_transfers = 0;
    for (key_index, results) in by_key {
        let mut firsts = 0;
        let mut replays = 0;
        let mut conflicts = 0;
        let mut first_transfer = None;
        let mut replayed_transfer = None;
        for result in results {
            match result {
                Ok(TransferOutcome::Posted { transfer, .. }) => {
                    firsts += 1;
                    shared_records += 2;
                    shared_transfers += 1;
                    first_transfer = Some(Some(transfer.id));
                }
                Ok(TransferOutcome::Denied { .. }) => {
                    firsts += 1;
                    shared_records += 1;
                    first_transfer = Some(None);
                }
                Ok(TransferOutcome::Replayed(stored)) => {
                    replays += 1;
                    replayed_transfer = Some(stored.transfer_id);
                }
                Ok(TransferOutcome::Pending { .. }) => panic!("nothing here requires approval"),
                Err(LedgerError::IdempotencyConflict { .. }) => conflicts += 1,
                Err(other) => panic!("key {key_index}: {other:?}"),
            }
        }
        assert_eq!(firsts, 1, "key {key_index} was decided exactly once");
        if key_index % 2 == 0 {
            assert_eq!(replays, 1, "key {key_index}");
            assert_eq!(replayed_transfer, first_transfer, "key {key_index}");
        } else {
            assert_eq!(conflicts, 1, "key {key_index}");
        }
    }

    let mut total = 0;
    for account in &accounts {
        let balance = balance(&replica_a, account).await;
        assert!(balance >= 0, "{account} overdrawn: {balance}");
        total += balance;
    }
    assert_eq!(
        total,
        ACCOUNTS as i64 * 10_000,
        "money created or destroyed"
    );
    let report = replica_b.check_invariants().await.expect("check");
    assert!(report.is_ok(), "{report:#?}");
    assert_eq!(
        report.transfers_checked,
        (ACCOUNTS + posted_count + shared_transfers) as i64
    );
    assert_eq!(
        audit_count(&replica_b).await,
        records_before + (TRANSFERS + posted_count) as i64 + shared_records
    );
    assert_invariants(&replica_a).await;
    assert!(
        !(pg_store(&replica_a).is_sealer_leader() && pg_store(&replica_b).is_sealer_leader()),
        "two sealer leaders"
    );

    // The follower takes over when the leader stops.
    let (leader, follower) = if pg_store(&replica_a).is_sealer_leader() {
        (replica_a.clone(), replica_b.clone())
    } else {
        (replica_b.clone(), replica_a.clone())
    };
    leader.shutdown().await.expect("shutdown leader");
    create_account(&follower, "LATE-0001", false).await;
    settle(&follower).await;
    assert_invariants(&follower).await;
    follower.shutdown().await.expect("shutdown follower");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_hands_out_sealed_records_in_chain_order_with_their_keys() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    let seed = fund(store, ALICE, "100").await;
    let transfer = posted(
        store
            .submit_transfer(transfer_command(ALICE, BOB, eur_amount("2.50"), allow))
            .await
            .expect("submit"),
    );
    store
        .append_audit(vec![decision_record("account.read", Outcome::Deny)])
        .await
        .expect("append");
    let records = audit_count(store).await;
    assert_eq!(records, 8);
    assert_eq!(store.outbox_backlog().await.expect("backlog"), records);

    let pending = store.outbox_pending(100).await.expect("pending");
    assert_eq!(
        pending
            .iter()
            .map(|item| item.sealed.sequence)
            .collect::<Vec<_>>(),
        (1..=records).collect::<Vec<_>>()
    );
    let mut account_keys = BTreeSet::new();
    for item in &pending {
        let record = &item.sealed.record;
        let expected = match record.action.as_str() {
            "account.create" => {
                account_keys.insert(item.key.clone());
                continue;
            }
            "ledger.seed" => FUNDING_EUR.to_owned(),
            "ledger.post" if record.decision_id == seed.decision_id => FUNDING_EUR.to_owned(),
            "ledger.post" | "transfer.create" => {
                assert_eq!(record.decision_id, transfer.decision_id);
                ALICE.to_owned()
            }
            "account.read" => "ab".repeat(32),
            other => panic!("unexpected record {other}"),
        };
        assert_eq!(item.key, expected, "{}", record.action);
    }
    assert_eq!(
        account_keys,
        BTreeSet::from([ALICE.to_owned(), BOB.to_owned(), FUNDING_EUR.to_owned()])
    );

    let delivered: Vec<_> = pending[..3]
        .iter()
        .map(|item| item.sealed.record.record_id)
        .collect();
    assert_eq!(
        store.outbox_mark_delivered(&delivered).await.expect("mark"),
        3
    );
    assert_eq!(
        store
            .outbox_mark_delivered(&delivered)
            .await
            .expect("mark again"),
        0
    );
    assert_eq!(store.outbox_backlog().await.expect("backlog"), records - 3);
    let rest = store.outbox_pending(2).await.expect("pending");
    assert_eq!(
        rest.iter()
            .map(|item| item.sealed.sequence)
            .collect::<Vec<_>>(),
        [4, 5]
    );
    assert_eq!(rest[0].sealed, pending[3].sealed);

    // Without an outbox, nothing is queued for Kafka.
    let quiet = open_ledger_with(
        &backend,
        StoreLimits::default(),
        StoreOptions {
            outbox_enabled: false,
            ..StoreOptions::default()
        },
    )
    .await;
    alice_and_bob(&quiet.store).await;
    settle(&quiet.store).await;
    assert_eq!(quiet.store.outbox_backlog().await.expect("backlog"), 0);
    assert_invariants(&quiet.store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_outbox_refuses_or_serves_transfers_by_policy() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    for policy in [OutboxFullPolicy::Refuse, OutboxFullPolicy::Serve] {
        let ledger = open_ledger(
            &backend,
            StoreLimits {
                outbox_rows_max: 6,
                outbox_full_policy: policy,
                ..StoreLimits::default()
            },
        )
        .await;
        let store = &ledger.store;
        alice_and_bob(store).await;
        fund(store, ALICE, "100").await; // 3 account records + seed decision + posting = 5
        posted(
            store
                .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
                .await
                .expect("below the bound"),
        );
        // The backlog (7) is seen once the cached count is refreshed.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let result = store
            .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
            .await;
        match policy {
            OutboxFullPolicy::Refuse => {
                assert!(
                    matches!(
                        result,
                        Err(LedgerError::OutboxFull {
                            backlog: 7,
                            rows_max: 6
                        })
                    ),
                    "{result:?}"
                );
                // Nothing was written for the refused transfer.
                assert_eq!(audit_count(store).await, 7);
                let pending = store.outbox_pending(100).await.expect("pending");
                let ids: Vec<_> = pending
                    .iter()
                    .map(|item| item.sealed.record.record_id)
                    .collect();
                store.outbox_mark_delivered(&ids).await.expect("mark");
                tokio::time::sleep(Duration::from_millis(150)).await;
                posted(
                    store
                        .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
                        .await
                        .expect("drained"),
                );
            }
            OutboxFullPolicy::Serve => {
                posted(result.expect("served although full"));
            }
        }
        assert_invariants(store).await;
        store.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_has_no_outbox() {
    let ledger = open_ledger(&Backend::Sqlite, StoreLimits::default()).await;
    for result in [
        ledger.store.outbox_backlog().await.map(|_| ()),
        ledger.store.outbox_pending(10).await.map(|_| ()),
        ledger.store.outbox_mark_delivered(&[]).await.map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(LedgerError::Unsupported { .. })),
            "{result:?}"
        );
    }
}

/// Lost connections and a database that refuses connections: commands fail with `Storage`,
/// the trail is reported unwritable, and everything recovers without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn lost_connections_fail_with_storage_and_recover_by_themselves() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let Backend::Postgres { admin_url } = &backend else {
        unreachable!()
    };
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    alice_and_bob(store).await;
    fund(store, ALICE, "100").await;
    let database = ledger
        .url
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .expect("database name")
        .to_owned();
    let mut admin = admin_connection(admin_url).await;
    let terminate = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
    );
    let allow_connections = |allowed: bool| {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS {allowed}"
        )))
    };

    // "PostgreSQL is down" for this database: no new connections, existing ones killed.
    allow_connections(false)
        .execute(&mut admin)
        .await
        .expect("refuse connections");
    sqlx::raw_sql(sqlx::AssertSqlSafe(terminate.clone()))
        .execute(&mut admin)
        .await
        .expect("terminate");
    for _ in 0..3 {
        let result = store
            .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
            .await;
        assert!(matches!(result, Err(LedgerError::Storage(_))), "{result:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!store.audit_writable());
    assert!(!store.check_audit_writable().await);
    assert!(store.account(&id(ALICE)).await.is_err());

    // Back up: the writer reconnects (bounded backoff), the pool and the sealer too.
    allow_connections(true)
        .execute(&mut admin)
        .await
        .expect("allow connections");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store
            .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
            .await
        {
            Ok(outcome) => {
                posted(outcome);
                break;
            }
            Err(LedgerError::Storage(error)) if Instant::now() < deadline => {
                tracing::debug!(%error, "still down");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("did not recover: {other:?}"),
        }
    }
    assert!(store.audit_writable());
    assert!(store.check_audit_writable().await);
    assert_eq!(balance(store, BOB).await, 100);

    // Killing every session again (without refusing new ones) costs at most a batch.
    sqlx::raw_sql(sqlx::AssertSqlSafe(terminate))
        .execute(&mut admin)
        .await
        .expect("terminate");
    let mut recovered = false;
    for _ in 0..50 {
        if store
            .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
            .await
            .is_ok()
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "writer did not reconnect");
    assert_invariants(store).await;
    admin.close().await.expect("close");
    store.shutdown().await.expect("shutdown");
}

/// A process killed mid-batch (its runtime and sockets dropped, as SIGKILL would) leaves no
/// half-written transfer; a new process seals what was committed and the outbox goes on.
#[test]
fn a_killed_process_leaves_nothing_half_written() {
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let url = runtime().block_on(fresh_database(&admin_url));

    let doomed = runtime();
    doomed.block_on(async {
        let store = Arc::new(
            Store::open(&url, StoreLimits::default())
                .await
                .expect("open"),
        );
        alice_and_bob(&store).await;
        fund(&store, ALICE, "1000").await;
        for _ in 0..400 {
            let store = store.clone();
            tokio::spawn(async move {
                let _ = store
                    .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
                    .await;
            });
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    });
    // Kill: every task and connection of that "process" is dropped where it stands.
    doomed.shutdown_background();

    runtime().block_on(async {
        let store = Store::open(&url, StoreLimits::default())
            .await
            .expect("restart");
        assert_invariants(&store).await;
        let pool = pg_store(&store).pool().clone();
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM transfers) AS transfers, \
                    (SELECT COUNT(*) FROM audit_records WHERE kind = 'posting') AS postings, \
                    (SELECT COUNT(*) FROM idempotency) AS keys, \
                    (SELECT COUNT(*) FROM audit_records WHERE action = 'transfer.create') \
                        AS decisions, \
                    (SELECT COUNT(*) FROM audit_records) AS records",
        )
        .fetch_one(&pool)
        .await
        .expect("counts");
        let count = |column: &str| row.try_get::<i64, _>(column).expect("count");
        assert_eq!(count("transfers"), count("postings"));
        assert_eq!(count("keys"), count("decisions"));
        assert_eq!(store.audit_count().await.expect("count"), count("records"));
        assert_eq!(
            store.outbox_backlog().await.expect("backlog"),
            count("records")
        );
        let transfers_posted = count("transfers") - 1;
        assert_eq!(balance(&store, BOB).await, transfers_posted * 100);
        // The restarted process writes on.
        posted(
            store
                .submit_transfer(transfer_command(ALICE, BOB, eur_amount("1"), allow))
                .await
                .expect("submit after restart"),
        );
        assert_invariants(&store).await;
        store.shutdown().await.expect("shutdown");
    });
}

/// Seals 20 000 records appended beforehand and prints the rate (the lead's benchmark reads
/// the line; the assertion only checks the chain).
#[tokio::test(flavor = "multi_thread")]
async fn sealing_throughput() {
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    const RECORDS: u32 = 20_000;
    const RECORDS_PER_TRANSACTION: u32 = 500;
    let url = fresh_database(&admin_url).await;
    Store::migrate(&url).await.expect("migrate");
    let mut connection = admin_connection(&url).await;
    let mut appended = 0;
    while appended < RECORDS {
        let mut transaction = connection.begin().await.expect("begin");
        let records = (0..RECORDS_PER_TRANSACTION)
            .map(|_| {
                let record = decision_record("transfer.create", Outcome::Allow);
                (record, ALICE.to_owned())
            })
            .collect();
        countersign_audit::postgres::append(&mut transaction, records, true)
            .await
            .expect("append");
        transaction.commit().await.expect("commit");
        appended += RECORDS_PER_TRANSACTION;
    }
    let started = Instant::now();
    let mut sealed = 0;
    loop {
        let step = countersign_audit::postgres::seal_pending(
            &mut connection,
            countersign_audit::postgres::SEAL_BATCH_RECORDS_MAX,
        )
        .await
        .expect("seal");
        if step == 0 {
            break;
        }
        sealed += step;
    }
    let elapsed = started.elapsed();
    assert_eq!(sealed, RECORDS as usize);
    eprintln!(
        "sealing throughput: {sealed} records in {:.3} s = {:.0} records/s (batches of {})",
        elapsed.as_secs_f64(),
        sealed as f64 / elapsed.as_secs_f64(),
        countersign_audit::postgres::SEAL_BATCH_RECORDS_MAX
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("pool");
    let report = countersign_audit::postgres::verify(&pool)
        .await
        .expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records_checked, u64::from(RECORDS));
    pool.close().await;
    connection.close().await.expect("close");
}
