//! `COUNTERSIGN_BENCH_DATABASE_URL=postgres://superuser@host/postgres cargo bench -p countersign
//! --bench audit_workspace` — measured, never asserted.
//!
//! Loads `COUNTERSIGN_BENCH_AUDIT_RECORDS` (default 10,000,000) audit records into the
//! PostgreSQL database `cs_bench_audit` on that server — records, seals, search-index rows,
//! roles, account tokens, minute buckets and a real Merkle tree over the seals — with
//! `generate_series` in SQL, then builds the production indexes (taken from
//! `ledger/migrations/0004_audit_index.sql`, so the bench measures exactly what ships), and
//! reports the first-page latency (p50/p99 over repeated runs) of the main filters through
//! the API's own query code (`countersign_audit::index::postgres::query`), plus the plan
//! PostgreSQL chose for each (`EXPLAIN (ANALYZE, BUFFERS)`), and inclusion-proof latency.
//!
//! The records are synthetic: the chain hashes are SHA-256 of the sequence number, not a real
//! hash chain (building one means hashing 10M records one after another; the query timing
//! does not depend on it). The Merkle nodes are real RFC 6962 nodes over those hashes. The
//! database is kept afterwards (a rerun with the same size reuses it); drop it with
//! `DROP DATABASE cs_bench_audit`.
//!
//! Without `--bench` (under `cargo test --all-targets`) it loads 20,000 records into
//! `cs_bench_audit_smoke` and runs each query a few times; without the variable it prints a
//! note and returns.

use std::time::{Duration, Instant};

use countersign_audit::index::{AuditQuery, postgres as index};
use countersign_audit::{Outcome, RecordKind, merkle};
use sqlx::{Connection, PgConnection, postgres::PgPoolOptions};
use time::{OffsetDateTime, macros::datetime};

/// Records per load statement: bounds one transaction's WAL and shows progress.
const LOAD_CHUNK_RECORDS: i64 = 1_000_000;
/// Timed runs per query (after warm-up).
const RUNS: usize = 50;
const WARMUP_RUNS: usize = 3;
/// Seconds between two records' timestamps (10M records span ~87 days).
const RECORD_SPACING_SECONDS: f64 = 0.75;
/// First record's time.
const START: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);
/// Distinct subjects (client certificates) and accounts in the synthetic trail.
const SUBJECTS: i64 = 50;
const ACCOUNTS: i64 = 100_000;

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn main() {
    let Ok(admin_url) = std::env::var("COUNTERSIGN_BENCH_DATABASE_URL") else {
        println!(
            "audit_workspace bench: COUNTERSIGN_BENCH_DATABASE_URL is not set (a PostgreSQL superuser URL); nothing to measure"
        );
        return;
    };
    let full = std::env::args().any(|argument| argument == "--bench");
    let records: i64 = std::env::var("COUNTERSIGN_BENCH_AUDIT_RECORDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(if full { 10_000_000 } else { 20_000 });
    let database = if full {
        "cs_bench_audit"
    } else {
        "cs_bench_audit_smoke"
    };
    let runs = std::env::var("COUNTERSIGN_BENCH_AUDIT_RUNS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(if full { RUNS } else { 3 });
    let database =
        std::env::var("COUNTERSIGN_BENCH_AUDIT_DATABASE").unwrap_or_else(|_| database.to_owned());
    let database = database.as_str();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(run(&admin_url, database, records, runs));
}

fn database_url(admin_url: &str, database: &str) -> String {
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("a URL with a database name");
    format!("{base}/{database}")
}

async fn run(admin_url: &str, database: &str, records: i64, runs: usize) {
    let url = database_url(admin_url, database);
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("admin connection");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    let loaded = if exists {
        let mut connection = PgConnection::connect(&url).await.unwrap();
        let size: Option<i64> = sqlx::query_scalar("SELECT tree_size FROM audit_index_state")
            .fetch_optional(&mut connection)
            .await
            .unwrap_or(None);
        size == Some(records)
    } else {
        false
    };
    if !loaded {
        if exists {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                r#"DROP DATABASE "{database}""#
            )))
            .execute(&mut admin)
            .await
            .unwrap();
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            r#"CREATE DATABASE "{database}""#
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        countersign_ledger::Store::migrate(&url)
            .await
            .expect("migrate");
        load(&url, records).await;
    } else {
        println!("reusing {database} with {records} records");
    }
    measure(&url, records, runs).await;
}

/// The production indexes of the workspace tables: every `CREATE INDEX` of the migration.
fn production_indexes() -> Vec<(String, String)> {
    let migration = include_str!("../../ledger/migrations/0004_audit_index.sql");
    let mut indexes = Vec::new();
    let mut statement = String::new();
    for line in migration.lines() {
        let line = line.trim();
        if line.starts_with("CREATE INDEX") || !statement.is_empty() {
            statement.push_str(line);
            statement.push(' ');
            if line.ends_with(';') {
                let name = statement.split_whitespace().nth(2).unwrap().to_owned();
                indexes.push((name, std::mem::take(&mut statement)));
            }
        }
    }
    assert!(indexes.len() >= 8, "the migration's indexes are found");
    indexes
}

/// One synthetic record per sequence `i`, as SQL expressions (used by every table's load,
/// so records, seals and index rows agree).
const GENERATOR: &str = r#"
CREATE OR REPLACE FUNCTION bench_records(first_sequence bigint, last_sequence bigint)
RETURNS TABLE (sequence bigint, record_id uuid, at timestamptz, kind text, action text,
               outcome text, decision_id uuid, fingerprint text, common_name text, role text,
               bundle_revision text, amount_minor bigint, currency text, hot boolean)
LANGUAGE sql IMMUTABLE AS $$
    SELECT i,
           md5('r' || i)::uuid,
           TIMESTAMPTZ '2026-01-01 00:00:00+00' + make_interval(secs => i * SPACING),
           k.kind,
           CASE k.kind WHEN 'decision' THEN 'transfer.create' WHEN 'posting' THEN 'ledger.post'
                       WHEN 'reservation' THEN 'ledger.reserve' WHEN 'approval' THEN 'approval.approve'
                       ELSE 'ledger.release.expired' END,
           CASE WHEN k.kind = 'decision' THEN
                    CASE WHEN r < 45 THEN 'allow' WHEN r < 50 THEN 'deny' WHEN r < 53 THEN 'pending' ELSE 'error' END
                WHEN k.kind = 'posting' THEN 'posted' WHEN k.kind = 'reservation' THEN 'pending'
                WHEN k.kind = 'approval' THEN 'allow' ELSE 'voided' END,
           md5('d' || CASE WHEN k.kind = 'posting' THEN i - 1 ELSE i END)::uuid,
           encode(sha256(convert_to('fp' || s, 'UTF8')), 'hex'),
           CASE WHEN s < 30 THEN 'channel-' WHEN s < 45 THEN 'teller-' WHEN s < 48 THEN 'approver-' ELSE 'auditor-' END || s,
           CASE WHEN s < 30 THEN 'channel' WHEN s < 45 THEN 'teller' WHEN s < 48 THEN 'approver' ELSE 'auditor' END,
           'rev-' || (i / 2000000),
           CASE WHEN i % 1000 = 1 THEN 200000000 ELSE 100 + (i * 104729) % 10000000 END,
           CASE WHEN i % 10 = 0 THEN 'GBP' ELSE 'EUR' END,
           i % 100 = 7
    FROM generate_series(first_sequence, last_sequence) AS i,
         LATERAL (SELECT (i * 7919) % 100 AS r, (i * 31) % SUBJECTS AS s) AS draw,
         LATERAL (SELECT CASE WHEN r < 55 THEN 'decision' WHEN r < 85 THEN 'posting'
                              WHEN r < 90 THEN 'reservation' WHEN r < 95 THEN 'approval'
                              ELSE 'release' END AS kind) AS k
$$;
"#;

async fn load(url: &str, records: i64) {
    let started = Instant::now();
    let mut connection = PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(
        "SET synchronous_commit = off; SET maintenance_work_mem = '512MB'; SET max_parallel_maintenance_workers = 2;",
    )
    .execute(&mut connection)
    .await
    .unwrap();
    let generator = GENERATOR
        .replace("SPACING", &RECORD_SPACING_SECONDS.to_string())
        .replace("SUBJECTS", &SUBJECTS.to_string());
    sqlx::raw_sql(sqlx::AssertSqlSafe(generator))
        .execute(&mut connection)
        .await
        .unwrap();
    let indexes = production_indexes();
    for (name, _) in &indexes {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX {name}")))
            .execute(&mut connection)
            .await
            .unwrap();
    }
    let mut first = 1;
    while first <= records {
        let last = (first + LOAD_CHUNK_RECORDS - 1).min(records);
        let chunk = Instant::now();
        let statements = format!(
            "BEGIN;
             INSERT INTO audit_records (record_id, kind, decision_id, timestamp, subject_fingerprint,
                 subject_common_name, subject_roles, source_address, action, masked_input, result,
                 bundle_revision, outcome, redaction)
             SELECT record_id, kind, decision_id::text,
                    to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '000Z',
                    fingerprint, common_name, '[\"' || role || '\"]', '10.0.0.1:443', action,
                    CASE WHEN kind = 'decision'
                         THEN '{{\"transfer\":{{\"amount_minor\":' || amount_minor || ',\"currency\":\"' || currency || '\"}}}}'
                         ELSE '{{\"amount\":\"' || (amount_minor / 100) || '.' || lpad((amount_minor % 100)::text, 2, '0') || '\",\"currency\":\"' || currency || '\"}}' END,
                    '{{\"allow\":true}}', bundle_revision, outcome, '{{\"erased\":[],\"error\":null,\"masked\":[]}}'
             FROM bench_records({first}, {last});
             INSERT INTO audit_seals (sequence, record_id, previous_hash, hash)
             SELECT sequence, record_id, sha256(int8send(sequence - 1)), sha256(int8send(sequence))
             FROM bench_records({first}, {last});
             INSERT INTO audit_index (sequence, record_id, at, kind, action, outcome, decision_id,
                 subject_fingerprint, subject_common_name, bundle_revision, amount_minor, currency)
             SELECT sequence, record_id, at, kind, action, outcome, decision_id, fingerprint,
                    common_name, bundle_revision,
                    CASE WHEN kind IN ('decision', 'posting', 'reservation') THEN amount_minor END,
                    CASE WHEN kind IN ('decision', 'posting', 'reservation') THEN currency END
             FROM bench_records({first}, {last});
             INSERT INTO audit_index_roles (role, sequence)
             SELECT role, sequence FROM bench_records({first}, {last});
             INSERT INTO audit_index_accounts (token, sequence)
             SELECT DISTINCT token, sequence FROM bench_records({first}, {last}),
                 LATERAL (VALUES (left(md5('a' || (sequence * 13) % {ACCOUNTS}), 32)),
                                 (left(md5('a' || CASE WHEN hot THEN 0 ELSE (sequence * 17 + 1) % {ACCOUNTS} END), 32)))
                     AS tokens (token)
             WHERE kind IN ('decision', 'posting');
             COMMIT;"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(statements))
            .execute(&mut connection)
            .await
            .unwrap();
        println!(
            "loaded records {first}..={last} in {:.1} s",
            chunk.elapsed().as_secs_f64()
        );
        first = last + 1;
    }
    let step = Instant::now();
    sqlx::raw_sql(
        "INSERT INTO audit_index_minutes
         SELECT (extract(epoch FROM at)::bigint / 60) * 60, min(sequence), max(sequence), count(*),
                count(*) FILTER (WHERE kind = 'decision' AND outcome = 'allow'),
                count(*) FILTER (WHERE kind = 'decision' AND outcome = 'deny'),
                count(*) FILTER (WHERE kind = 'decision' AND outcome = 'pending'),
                count(*) FILTER (WHERE kind = 'decision' AND outcome = 'error')
         FROM audit_index GROUP BY 1",
    )
    .execute(&mut connection)
    .await
    .unwrap();
    println!("minute buckets in {:.1} s", step.elapsed().as_secs_f64());
    // The Merkle tree, level by level: level 1 from the leaves (SHA-256(0x00 || chain hash)).
    let step = Instant::now();
    sqlx::raw_sql(
        "INSERT INTO audit_merkle_nodes (level, idx, hash)
         SELECT 1, a.sequence / 2, sha256('\\x01'::bytea || sha256('\\x00'::bytea || a.hash) || sha256('\\x00'::bytea || b.hash))
         FROM audit_seals a JOIN audit_seals b ON b.sequence = a.sequence + 1
         WHERE a.sequence % 2 = 1",
    )
    .execute(&mut connection)
    .await
    .unwrap();
    let mut level: i16 = 1;
    loop {
        let inserted = sqlx::query(
            "INSERT INTO audit_merkle_nodes (level, idx, hash)
             SELECT $1 + 1, a.idx / 2, sha256('\\x01'::bytea || a.hash || b.hash)
             FROM audit_merkle_nodes a JOIN audit_merkle_nodes b
               ON b.level = a.level AND b.idx = a.idx + 1
             WHERE a.level = $1 AND a.idx % 2 = 0",
        )
        .bind(level)
        .execute(&mut connection)
        .await
        .unwrap();
        if inserted.rows_affected() == 0 {
            break;
        }
        level += 1;
    }
    sqlx::query("UPDATE audit_index_state SET tree_size = $1")
        .bind(records)
        .execute(&mut connection)
        .await
        .unwrap();
    println!(
        "merkle nodes (levels 1..={level}) in {:.1} s",
        step.elapsed().as_secs_f64()
    );
    let step = Instant::now();
    for (name, statement) in &indexes {
        let index = Instant::now();
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&mut connection)
            .await
            .unwrap();
        println!("index {name} in {:.1} s", index.elapsed().as_secs_f64());
    }
    sqlx::raw_sql("VACUUM ANALYZE")
        .execute(&mut connection)
        .await
        .unwrap();
    println!(
        "indexes and ANALYZE in {:.1} s; load total {:.1} s",
        step.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

async fn measure(url: &str, records: i64, runs: usize) {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap();
    let sizes: Vec<(String, String)> = sqlx::query_as(
        "SELECT relname::text, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class
         WHERE relname IN ('audit_records', 'audit_seals', 'audit_index', 'audit_index_roles',
                           'audit_index_accounts', 'audit_merkle_nodes', 'audit_index_minutes')
         ORDER BY pg_total_relation_size(oid) DESC",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    println!("table sizes (with indexes): {sizes:?}");
    let fingerprint: String =
        sqlx::query_scalar("SELECT encode(sha256(convert_to('fp7', 'UTF8')), 'hex')")
            .fetch_one(&pool)
            .await
            .unwrap();
    let hot_account: String = sqlx::query_scalar("SELECT left(md5('a0'), 32)")
        .fetch_one(&pool)
        .await
        .unwrap();
    let cold_account: String = sqlx::query_scalar("SELECT left(md5('a' || 4242), 32)")
        .fetch_one(&pool)
        .await
        .unwrap();
    let decision_id: uuid::Uuid = sqlx::query_scalar("SELECT md5('d' || ($1::bigint / 2))::uuid")
        .bind(records)
        .fetch_one(&pool)
        .await
        .unwrap();
    let span = time::Duration::seconds_f64(records as f64 * RECORD_SPACING_SECONDS);
    let end = START + span;
    let day = time::Duration::days(1);
    let base = AuditQuery::default();
    let cases: Vec<(&str, AuditQuery)> = vec![
        ("no filter", base.clone()),
        (
            "kind=posting",
            AuditQuery {
                kind: Some(RecordKind::Posting),
                ..base.clone()
            },
        ),
        (
            "kind=release",
            AuditQuery {
                kind: Some(RecordKind::Release),
                ..base.clone()
            },
        ),
        (
            "outcome=deny",
            AuditQuery {
                outcome: Some(Outcome::Deny),
                ..base.clone()
            },
        ),
        (
            "outcome=error",
            AuditQuery {
                outcome: Some(Outcome::Error),
                ..base.clone()
            },
        ),
        (
            "subject_cn",
            AuditQuery {
                subject_common_name: Some("teller-37".into()),
                ..base.clone()
            },
        ),
        (
            "subject_fingerprint",
            AuditQuery {
                subject_fingerprint: Some(fingerprint),
                ..base.clone()
            },
        ),
        (
            "role=approver",
            AuditQuery {
                role: Some("approver".into()),
                ..base.clone()
            },
        ),
        (
            "account (hot, 1% of records)",
            AuditQuery {
                account_token: Some(hot_account),
                ..base.clone()
            },
        ),
        (
            "account (typical)",
            AuditQuery {
                account_token: Some(cold_account),
                ..base.clone()
            },
        ),
        (
            "bundle_revision (oldest)",
            AuditQuery {
                bundle_revision: Some("rev-0".into()),
                ..base.clone()
            },
        ),
        (
            "decision_id",
            AuditQuery {
                decision_id: Some(decision_id),
                ..base.clone()
            },
        ),
        (
            "currency=GBP",
            AuditQuery {
                currency: Some("GBP".into()),
                ..base.clone()
            },
        ),
        (
            "EUR amount >= 1,000,000.00 (0.1%)",
            AuditQuery {
                currency: Some("EUR".into()),
                amount_min_minor: Some(100_000_000),
                ..base.clone()
            },
        ),
        (
            "EUR amount 100.00..500.00",
            AuditQuery {
                currency: Some("EUR".into()),
                amount_min_minor: Some(10_000),
                amount_max_minor: Some(50_000),
                ..base.clone()
            },
        ),
        (
            "last day",
            AuditQuery {
                from: Some(end - day),
                to: Some(end),
                ..base.clone()
            },
        ),
        (
            "a day in the middle + kind=posting",
            AuditQuery {
                from: Some(START + span / 2),
                to: Some(START + span / 2 + day),
                kind: Some(RecordKind::Posting),
                ..base.clone()
            },
        ),
        (
            "first month + outcome=deny + role=teller",
            AuditQuery {
                from: Some(START),
                to: Some(START + day * 30),
                outcome: Some(Outcome::Deny),
                role: Some("teller".into()),
                ..base.clone()
            },
        ),
        (
            "page 1000 of kind=posting (after = deep)",
            AuditQuery {
                kind: Some(RecordKind::Posting),
                after: records / 2,
                ..base.clone()
            },
        ),
    ];
    println!("\nfirst page (limit 100 + 1) over {records} records, {runs} runs each:");
    println!("| query | rows | p50 | p99 |");
    println!("|---|---:|---:|---:|");
    let mut explains = String::new();
    for (name, query) in &cases {
        let query = AuditQuery {
            limit: 101,
            ..query.clone()
        };
        for _ in 0..WARMUP_RUNS {
            index::query(&pool, &query).await.unwrap();
        }
        let mut timings = Vec::with_capacity(runs);
        let mut rows = 0;
        for _ in 0..runs {
            let started = Instant::now();
            rows = index::query(&pool, &query).await.unwrap().len();
            timings.push(started.elapsed());
        }
        timings.sort();
        println!(
            "| {name} | {rows} | {:.2} ms | {:.2} ms |",
            percentile(&timings, 0.5).as_secs_f64() * 1000.0,
            percentile(&timings, 0.99).as_secs_f64() * 1000.0
        );
        explains.push_str(&explain(&pool, name, &query).await);
    }
    // Inclusion proofs: nodes read + proof built, for random leaves under the full tree.
    let mut timings = Vec::new();
    for probe in 0..runs as u64 {
        let leaf = (probe * 7_919_993) % records as u64;
        let started = Instant::now();
        let ids = merkle::inclusion_node_ids(leaf, records as u64);
        let nodes = index::merkle_nodes(&pool, &ids).await.unwrap();
        let proof =
            merkle::inclusion_proof(leaf, records as u64, &|id| nodes.get(&id).copied()).unwrap();
        timings.push(started.elapsed());
        assert!(!proof.is_empty());
    }
    timings.sort();
    println!(
        "| inclusion proof (nodes + proof) | - | {:.2} ms | {:.2} ms |",
        percentile(&timings, 0.5).as_secs_f64() * 1000.0,
        percentile(&timings, 0.99).as_secs_f64() * 1000.0
    );
    let path = std::env::temp_dir().join("countersign-audit-bench-explain.txt");
    std::fs::write(&path, explains).unwrap();
    println!("\nplans (EXPLAIN ANALYZE, BUFFERS): {}", path.display());
    pool.close().await;
}

/// The plan of `query` as the API runs it (same SQL, same binds, custom plan).
async fn explain(pool: &sqlx::PgPool, name: &str, query: &AuditQuery) -> String {
    let range = if query.from.is_some() || query.to.is_some() {
        index::query_time_range(pool, query.from, query.to)
            .await
            .unwrap()
    } else {
        None
    };
    let sql = index::query_sql(query, range);
    // Inline the binds: EXPLAIN of a parameterised statement would show the generic plan.
    let mut literal = sql;
    let binds = bind_literals(query, range);
    for (position, value) in binds.iter().enumerate().rev() {
        literal = literal.replace(&format!("${}", position + 1), value);
    }
    let mut connection = pool.acquire().await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {literal}"
    )))
    .fetch_all(&mut *connection)
    .await
    .unwrap();
    format!("== {name}\n{}\n\n", plan.join("\n"))
}

/// The binds of `search_plan` as SQL literals, in order (mirrors its order; benchmark only).
fn bind_literals(query: &AuditQuery, range: Option<(i64, i64)>) -> Vec<String> {
    let text = |value: &str| format!("'{}'", value.replace('\'', "''"));
    let mut binds = Vec::new();
    if let Some(role) = &query.role {
        binds.push(text(role));
    }
    if let Some(token) = &query.account_token {
        binds.push(text(token));
    }
    binds.push(query.after.to_string());
    if let Some((first, last)) = range {
        binds.push(first.to_string());
        binds.push(last.to_string());
    }
    let time = |time: OffsetDateTime| {
        format!(
            "'{}'::timestamptz",
            time.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        )
    };
    if let Some(from) = query.from {
        binds.push(time(from));
    }
    if let Some(to) = query.to {
        binds.push(time(to));
    }
    if let Some(kind) = query.kind {
        binds.push(text(kind.as_str()));
    }
    if let Some(outcome) = query.outcome {
        binds.push(text(outcome.as_str()));
    }
    if let Some(name) = &query.subject_common_name {
        binds.push(text(name));
    }
    if let Some(fingerprint) = &query.subject_fingerprint {
        binds.push(text(fingerprint));
    }
    if let Some(currency) = &query.currency {
        binds.push(text(currency));
    }
    if let Some(minimum) = query.amount_min_minor {
        binds.push(minimum.to_string());
    }
    if let Some(maximum) = query.amount_max_minor {
        binds.push(maximum.to_string());
    }
    if let Some(revision) = &query.bundle_revision {
        binds.push(text(revision));
    }
    if let Some(decision_id) = query.decision_id {
        binds.push(format!("'{decision_id}'::uuid"));
    }
    binds.push(query.limit.to_string());
    binds
}
