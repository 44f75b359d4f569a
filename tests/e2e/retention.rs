//! Retention on PostgreSQL (issue 6, item 6), end to end with the real binary: records live in
//! monthly partitions; `countersign audit prune --before` refuses a cutoff inside the retention
//! period and a cut that would leave a hole in the chain, writes a signed checkpoint first,
//! drops the old partitions, and the remaining log still verifies with `audit verify` — while
//! a forged prune anchor does not.

use std::process::Command;
use std::time::Duration;

use countersign::config::{CheckpointsConfig, StoreConfig};
use countersign_audit::checkpoint::CheckpointSigner;
use sqlx::{ConnectOptions, Connection};

use crate::{
    services,
    support::{ALICE, BOB, TestApp, transfer},
};

const BINARY: &str = env!("CARGO_BIN_EXE_countersign");
const TRANSFERS: usize = 12;

struct Run {
    code: i32,
    stdout: String,
}

fn countersign(args: &[&str]) -> Run {
    let output = Command::new(BINARY)
        .args(args)
        .output()
        .expect("binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout,
    }
}

async fn owner(url: &str) -> sqlx::PgConnection {
    url.parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn scalar_i64(url: &str, sql: &str) -> i64 {
    let mut connection = owner(url).await;
    let value: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    value
}

async fn execute(url: &str, sql: &str) {
    let mut connection = owner(url).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
}

/// Moves the records of the first `records` sequences into January 2024 (as if ingested
/// then), into that month's partition: what an owner-run backfill would do; the test's
/// stand-in for waiting two years.
async fn backdate_prefix(url: &str, records: i64) {
    execute(
        url,
        &format!(
            "SELECT countersign_audit_partitions('2024-01-01', 1);
             SET session_replication_role = replica;
             UPDATE audit_records SET ingested_at = '2024-01-15 12:00:00+00'
             WHERE record_id IN (SELECT record_id FROM audit_seals WHERE sequence <= {records});"
        ),
    )
    .await;
}

/// A gateway on `database_url` that checkpoints often (every second or 4 records).
async fn spawn(database_url: &str, signing_key: &std::path::Path) -> TestApp {
    let store_url = database_url.to_owned();
    let signing_key = signing_key.to_owned();
    TestApp::spawn_with(move |config| {
        config.store = StoreConfig::new(store_url);
        config.audit.checkpoints = CheckpointsConfig {
            signing_key_file: Some(signing_key),
            interval_seconds: 1,
            records_max: 4,
        };
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_drops_old_months_and_the_rest_still_verifies() {
    let Some(admin_url) = services::shared_database_url() else {
        return;
    };
    let database_url = services::fresh_database(&admin_url).await;
    let keys = tempfile::TempDir::new().unwrap();
    let signer = CheckpointSigner::generate().unwrap();
    let key_path = keys.path().join("checkpoint.key");
    let public_path = keys.path().join("checkpoint.pub");
    std::fs::write(&key_path, signer.private_key_pem()).unwrap();
    std::fs::write(&public_path, signer.verifier().public_key_pem()).unwrap();

    let app = spawn(&database_url, &key_path).await;
    app.open_account(ALICE, "EUR", "1000.00").await;
    app.open_account(BOB, "EUR", "1.00").await;
    for index in 0..TRANSFERS {
        let (status, body) = app
            .post_transfer(&format!("r-{index}"), &transfer(ALICE, BOB, "1.00"))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    // Wait (bounded) until everything is sealed and in the Merkle tree.
    crate::support::indexed_through_head(&app).await;
    let store = app.state.store.clone();
    let total = store.audit_count().await.unwrap();
    app.stop().await;

    let url = database_url.as_str();
    let key = key_path.to_str().unwrap();
    let public = public_path.to_str().unwrap();
    let prune_with = |before: &str, extra: &[&str]| {
        let mut args = vec![
            "audit",
            "prune",
            "--store",
            url,
            "--before",
            before,
            "--signing-key",
            key,
        ];
        args.extend_from_slice(extra);
        countersign(&args)
    };
    let prune = |before: &str| prune_with(before, &[]);
    let prune_dry_run = |before: &str| prune_with(before, &["--dry-run"]);
    let verify = || countersign(&["audit", "verify", "--store", url, "--public-key", public]);
    assert_eq!(verify().code, 0);

    // A cutoff inside the retention period is refused, whatever is stored.
    let young = prune("2026-10-01");
    assert_eq!(young.code, 1, "{}", young.stdout);
    assert!(young.stdout.contains("retention"), "{}", young.stdout);

    // Nothing is that old yet.
    let nothing = prune("2024-02-01");
    assert_eq!(nothing.code, 0, "{}", nothing.stdout);
    assert!(
        nothing.stdout.contains("nothing to prune"),
        "{}",
        nothing.stdout
    );

    // A record of a kept month sealed between two old ones would leave a hole: refused.
    let pruned: i64 = 10;
    backdate_prefix(url, pruned).await;
    execute(
        url,
        "SET session_replication_role = replica;
         UPDATE audit_records SET ingested_at = now()
         WHERE record_id = (SELECT record_id FROM audit_seals WHERE sequence = 5);",
    )
    .await;
    let holey = prune("2024-02-01");
    assert_eq!(holey.code, 1, "{}", holey.stdout);
    assert!(holey.stdout.contains("cut the chain"), "{}", holey.stdout);

    // A clean prefix prunes: checkpoint first, partition dropped, chain starts after it.
    backdate_prefix(url, pruned).await;
    let dry = prune_dry_run("2024-02-01");
    assert_eq!(dry.code, 0, "{}", dry.stdout);
    assert_eq!(
        scalar_i64(url, "SELECT COUNT(*) FROM audit_records").await,
        total
    );
    let checkpoints_before = scalar_i64(url, "SELECT COUNT(*) FROM audit_checkpoints").await;
    let done = prune("2024-02-01");
    assert_eq!(done.code, 0, "{}", done.stdout);
    assert!(
        done.stdout
            .contains(&format!("starts at sequence {}", pruned + 1)),
        "{}",
        done.stdout
    );
    assert_eq!(
        scalar_i64(url, "SELECT COUNT(*) FROM audit_records").await,
        total - pruned
    );
    assert_eq!(
        scalar_i64(
            url,
            "SELECT COUNT(*) FROM pg_class WHERE relname = 'audit_records_2024_01'"
        )
        .await,
        0,
        "the month's partition is dropped"
    );
    assert!(
        scalar_i64(url, "SELECT COUNT(*) FROM audit_checkpoints").await >= checkpoints_before,
        "a checkpoint was written (or the latest already covered everything)"
    );
    assert_eq!(
        scalar_i64(url, "SELECT MIN(sequence) FROM audit_seals").await,
        pruned + 1
    );

    // What is left verifies: chain from the anchor, checkpoints, the anchor against its
    // signed checkpoint.
    let verified = verify();
    assert_eq!(verified.code, 0, "{}", verified.stdout);

    // The gateway keeps working on the pruned store: new records seal after the anchor.
    let app = spawn(&database_url, &key_path).await;
    let (status, body) = app
        .post_transfer("after-prune", &transfer(ALICE, BOB, "1.00"))
        .await;
    assert_eq!(status, 201, "{body}");
    let store = app.state.store.clone();
    assert!(store.wait_sealed(Duration::from_secs(10)).await.unwrap());
    app.stop().await;
    let again = verify();
    assert_eq!(again.code, 0, "{}", again.stdout);

    // A forged anchor (claiming more was pruned, to hide a cut) does not verify.
    execute(
        url,
        &format!(
            "INSERT INTO audit_prune_anchors (pruned_through, last_hash, checkpoint_tree_size, \
             inclusion_proof, before_month, records_pruned) \
             SELECT {}, hash, checkpoint_tree_size, inclusion_proof, before_month, 1 \
             FROM audit_seals, audit_prune_anchors WHERE sequence = {} LIMIT 1",
            pruned + 1,
            pruned + 2
        ),
    )
    .await;
    let forged = verify();
    assert_eq!(forged.code, 1, "{}", forged.stdout);
    assert!(forged.stdout.contains("anchor"), "{}", forged.stdout);
    drop(keys);
}
