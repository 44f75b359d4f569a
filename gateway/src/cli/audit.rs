//! `countersign audit …`: the auditors' tools.
//!
//! - `verify` — the hash chain (and, with a public key, the signed checkpoints and the
//!   Merkle tree) of a live store, or `--offline` an export file with only the public key.
//! - `query` — `GET /v1/audit/records` over mTLS with the auditor's certificate, every page,
//!   printed as an aligned table, RFC 4180 CSV, a JSON array or JSON lines.
//! - `export` — `GET /v1/audit/export` streamed to a file (never held in memory) with a
//!   progress bar on stderr.
//! - `keygen` — a checkpoint signing key pair (Ed25519, PKCS#8 + SPKI PEM).
//!
//! `query` and `export` go through the gateway, never to the database, so every look at the
//! trail is itself audited there. Exit codes of every `audit` command: **0** all good,
//! **1** verification failed (tampered, incomplete or unbalanced), **2** usage, I/O or
//! gateway error (nothing was verified).

use std::{
    fs::File,
    io::{self, BufReader, BufWriter, IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use countersign_audit::{
    checkpoint::{CheckpointSigner, CheckpointVerifier},
    export::{ExportFailure, ExportReport, verify_export},
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::{StoreArgs, redact_url, runtime, store_url};
use crate::dev;

/// Exit code: everything verified (or the command did its job).
const EXIT_OK: u8 = 0;
/// Exit code: verification found tampering, a gap or unbalanced books.
const EXIT_FAILED: u8 = 1;
/// Exit code: usage, I/O or gateway error; nothing was verified.
const EXIT_ERROR: u8 = 2;

/// File names `keygen` writes: the ones `serve --dev` uses under `var/dev-pki`.
use dev::{
    DEV_CHECKPOINT_KEY_FILE as CHECKPOINT_KEY_FILE,
    DEV_CHECKPOINT_PUBLIC_KEY_FILE as CHECKPOINT_PUBLIC_KEY_FILE,
};

/// How long `query` waits for one page, and `export` for the next bytes of the stream.
const REQUEST_TIMEOUT_MS: u64 = 60_000;
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Rows one `query` page asks for (the API's maximum).
const QUERY_PAGE_ROWS_MAX: u64 = 1_000;
/// Longest response body of one query page (1,000 records of at most a few KiB each, well
/// below; a larger answer is not from a Countersign gateway).
const QUERY_PAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest error body read from the gateway for a message.
const ERROR_BODY_BYTES_MAX: usize = 16 * 1024;
/// Longest header line of an export we keep to learn the record count.
const EXPORT_HEADER_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify a live store's chain and checkpoints, or an export file offline.
    ///
    /// Exit codes: 0 verified, 1 tampered/incomplete/unbalanced, 2 usage or I/O error.
    Verify(VerifyArgs),
    /// Search the audit trail through the gateway (auditor certificate).
    // Boxed: the filters make it the largest variant by far (clippy::large_enum_variant).
    Query(Box<QueryArgs>),
    /// Export a range of the trail with its checkpoints and proofs to a JSONL file.
    Export(ExportArgs),
    /// Write an Ed25519 checkpoint signing key (PKCS#8 PEM, mode 0600) and its public key.
    Keygen(KeygenArgs),
    /// Drop audit partitions of months past retention (PostgreSQL, as the schema owner),
    /// after a signed checkpoint so the remaining log still verifies.
    Prune(super::prune::PruneArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Verify this export file instead of a store, with only --public-key.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dev", "config", "store"], requires = "public_key")]
    pub offline: Option<PathBuf>,
    /// The checkpoint signer's public key (SPKI PEM). Required with --offline; with a store
    /// it also verifies the signed checkpoints and the Merkle tree (`--dev` finds the dev key).
    #[arg(long, value_name = "PEM")]
    pub public_key: Option<PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Where the gateway is and which certificate to show it.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Use the dev quickstart's auditor certificate under --var and its listen address.
    #[arg(long)]
    pub dev: bool,
    /// --dev only: state directory.
    #[arg(long, default_value = "var")]
    pub var: PathBuf,
    /// Gateway base URL, e.g. https://countersign.internal:8443
    #[arg(long, value_name = "URL")]
    pub gateway: Option<String>,
    /// Client certificate (PEM) with the auditor role.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that issued the gateway's server certificate.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for a terminal.
    Table,
    /// RFC 4180: header row, CRLF line ends, quoted where needed.
    Csv,
    /// One JSON array of record views.
    Json,
    /// One record view per line.
    Jsonl,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Records stamped at or after this instant (RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// Records stamped before this instant (RFC 3339).
    #[arg(long)]
    pub to: Option<String>,
    /// decision, posting, reservation, approval or release.
    #[arg(long)]
    pub kind: Option<String>,
    /// allow, deny, pending, error, posted or voided.
    #[arg(long)]
    pub outcome: Option<String>,
    /// The caller's certificate common name.
    #[arg(long)]
    pub subject_cn: Option<String>,
    /// The caller's certificate SHA-256 fingerprint (hex).
    #[arg(long)]
    pub subject_fingerprint: Option<String>,
    #[arg(long)]
    pub role: Option<String>,
    /// A full account number (the gateway turns it into its blind-index token).
    #[arg(long)]
    pub account: Option<String>,
    /// Decimal amount bounds (need --currency).
    #[arg(long)]
    pub amount_min: Option<String>,
    #[arg(long)]
    pub amount_max: Option<String>,
    #[arg(long)]
    pub currency: Option<String>,
    #[arg(long)]
    pub bundle_revision: Option<String>,
    #[arg(long)]
    pub decision_id: Option<String>,
    /// Start after this sequence number (keyset pagination).
    #[arg(long)]
    pub after: Option<u64>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Most records to print.
    #[arg(long, default_value_t = 100, conflicts_with = "all")]
    pub limit: u64,
    /// Every matching record, page after page.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// First record: an RFC 3339 instant or a sequence number (default: the first record).
    #[arg(long)]
    pub from: Option<String>,
    /// End: an RFC 3339 instant (exclusive) or a sequence number (inclusive); default: the
    /// last indexed record.
    #[arg(long)]
    pub to: Option<String>,
    /// The export file to write (replaced only once the export is complete).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory for audit-checkpoint.key and audit-checkpoint.pub (created if missing;
    /// existing key files are never overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Runs an `audit` command; errors print on stderr and exit 2.
pub fn run(command: AuditCommand) -> ExitCode {
    let result = match command {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Query(args) => query(*args),
        AuditCommand::Export(args) => export(args),
        AuditCommand::Keygen(args) => keygen(args),
        AuditCommand::Prune(args) => super::prune::prune(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------------

fn verify(args: VerifyArgs) -> Result<u8> {
    match &args.offline {
        Some(path) => {
            let key = args
                .public_key
                .as_deref()
                .expect("clap requires --public-key with --offline");
            verify_offline(path, key, args.json)
        }
        None => verify_store(args),
    }
}

fn verify_offline(path: &Path, key_path: &Path, json: bool) -> Result<u8> {
    let key = CheckpointVerifier::from_pem_file(key_path)
        .with_context(|| format!("public key {}", key_path.display()))?;
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let length = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let progress = progress_bar(
        Some(length),
        "{spinner} verifying [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})",
    );
    let started = Instant::now();
    let reader = BufReader::with_capacity(1 << 20, progress.wrap_read(file));
    let report =
        verify_export(reader, &key).with_context(|| format!("verifying {}", path.display()))?;
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", offline_report_text(path, &key, &report, elapsed));
    }
    Ok(if report.is_verified() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// The human report of an offline verification.
fn offline_report_text(
    path: &Path,
    key: &CheckpointVerifier,
    report: &ExportReport,
    elapsed: Duration,
) -> String {
    let mut text = String::new();
    let range = match (report.first_sequence, report.last_sequence) {
        (Some(first), Some(last)) => format!("records {first}..={last}"),
        _ => "no readable header".to_owned(),
    };
    text.push_str(&format!(
        "export {} ({range}), checked with public key {}\n",
        path.display(),
        key.key_id()
    ));
    let seconds = elapsed.as_secs_f64().max(1e-9);
    text.push_str(&format!(
        "  records      {} verified ({} decisions, {} postings) in {:.2} s, {:.0} records/s\n",
        report.records,
        report.decisions,
        report.postings,
        elapsed.as_secs_f64(),
        report.records as f64 / seconds
    ));
    if report.postings_decided_before_export > 0 {
        text.push_str(&format!(
            "  postings     {} decided before the export's first record (their decisions are \
             outside the export)\n",
            report.postings_decided_before_export
        ));
    }
    text.push_str(&format!(
        "  checkpoints  {} signatures verified",
        report.checkpoints
    ));
    match report.covering_checkpoint {
        Some(size) => text.push_str(&format!(
            "; checkpoint {size} covers the export (consistency proof verified)\n"
        )),
        None => text.push('\n'),
    }
    for (currency, totals) in &report.currencies {
        text.push_str(&format!(
            "  {currency:<12} debit {} ({} legs), credit {} ({} legs): {}\n",
            totals.debit_total,
            totals.debit_legs,
            totals.credit_total,
            totals.credit_legs,
            if totals.is_balanced() {
                "balanced"
            } else {
                "NOT BALANCED"
            }
        ));
    }
    match &report.failure {
        None => text.push_str(
            "OK: every record, link and checkpoint verified; debits equal credits per currency\n",
        ),
        Some(failure) => text.push_str(&failure_text(failure)),
    }
    text
}

fn failure_text(failure: &ExportFailure) -> String {
    format!(
        "FAILED at {} (line {}, {}): {}\n",
        failure.location,
        failure.line,
        serde_json::to_value(failure.kind)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default(),
        failure.reason
    )
}

/// The live check: the chain (as before), then, with a public key, the checkpoints and tree.
fn verify_store(args: VerifyArgs) -> Result<u8> {
    let url = store_url(&args.store)?;
    let verifier = checkpoint_verifier_for_store(&args)?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let pool = open_pool_for_verify(&url).await?;
        let report = match &pool {
            Pool::Sqlite(pool) => countersign_audit::sqlite::verify(pool).await,
            Pool::Postgres(pool) => countersign_audit::postgres::verify(pool).await,
        }
        .with_context(|| format!("reading {}", redact_url(&url)))?;
        let mut code = EXIT_OK;
        match &report.first_broken {
            None => println!(
                "audit chain OK: {} records verified",
                report.records_checked
            ),
            Some(broken) => {
                println!(
                    "audit chain BROKEN at sequence {}: {} ({} records checked before it)",
                    broken.sequence, broken.reason, report.records_checked
                );
                code = EXIT_FAILED;
            }
        }
        let Some(verifier) = &verifier else {
            println!(
                "checkpoints not verified: pass --public-key PEM (the checkpoint signer's public \
                 key) to verify them"
            );
            return Ok(code);
        };
        let checkpoints = match &pool {
            Pool::Sqlite(pool) => {
                countersign_audit::index::sqlite::verify_checkpoints(pool, verifier).await
            }
            Pool::Postgres(pool) => {
                countersign_audit::index::postgres::verify_checkpoints(pool, verifier).await
            }
        }
        .with_context(|| format!("reading the checkpoints of {}", redact_url(&url)))?;
        // After a retention prune the chain starts at an anchor: it must be a leaf of the
        // signed checkpoint written before the prune, or it was made up to hide a cut.
        if let Pool::Postgres(pool) = &pool {
            match countersign_audit::retention::verify_anchor(pool, verifier)
                .await
                .with_context(|| format!("reading the prune anchor of {}", redact_url(&url)))?
            {
                None => {}
                Some(Ok(anchor)) => println!(
                    "prune anchor OK: records 1..={} were pruned; record {} is in signed \
                     checkpoint {}",
                    anchor.pruned_through, anchor.pruned_through, anchor.checkpoint_tree_size
                ),
                Some(Err(reason)) => {
                    println!("prune anchor BROKEN: {reason}");
                    code = EXIT_FAILED;
                }
            }
        }
        match &checkpoints.first_broken {
            None => println!(
                "checkpoints OK: {} signed checkpoints (key {}), {} leaves and {} stored nodes of \
                 the Merkle tree verified (indexed size {})",
                checkpoints.checkpoints_checked,
                verifier.key_id(),
                checkpoints.leaves_checked,
                checkpoints.nodes_checked,
                checkpoints.indexed_size
            ),
            Some(broken) => {
                let at = match (broken.checkpoint_tree_size, broken.sequences) {
                    (Some(size), _) => format!("checkpoint {size}"),
                    (None, Some((first, last))) => {
                        format!("the tree node over sequences {first}..={last}")
                    }
                    (None, None) => "the tree".to_owned(),
                };
                println!(
                    "checkpoints BROKEN at {at}: {} ({} checkpoints verified before it)",
                    broken.reason, checkpoints.checkpoints_checked
                );
                code = EXIT_FAILED;
            }
        }
        Ok(code)
    })
}

/// The key to check a store's checkpoints with: `--public-key`, else the dev key (`--dev`),
/// else the public half of the configured signing key (`--config`); none with a bare
/// `--store` (a key read from the store itself would prove nothing).
fn checkpoint_verifier_for_store(args: &VerifyArgs) -> Result<Option<CheckpointVerifier>> {
    if let Some(path) = &args.public_key {
        return CheckpointVerifier::from_pem_file(path)
            .map(Some)
            .with_context(|| format!("public key {}", path.display()));
    }
    if args.store.dev {
        let path = args
            .store
            .var
            .join("dev-pki")
            .join(CHECKPOINT_PUBLIC_KEY_FILE);
        if !path.exists() {
            return Ok(None);
        }
        return CheckpointVerifier::from_pem_file(&path)
            .map(Some)
            .with_context(|| format!("public key {}", path.display()));
    }
    if let Some(config) = &args.store.config {
        let config = crate::config::Config::load(config, std::env::vars())?;
        if let Some(path) = &config.audit.checkpoints.signing_key_file {
            return CheckpointSigner::from_pem_file(path)
                .map(|signer| Some(signer.verifier()))
                .with_context(|| format!("signing key {}", path.display()));
        }
    }
    Ok(None)
}

enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// A read-only connection to the store (the verifier never writes, and never migrates).
async fn open_pool_for_verify(url: &str) -> Result<Pool> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if !Path::new(path).exists() {
            bail!("store {path} does not exist");
        }
        return Ok(Pool::Sqlite(
            countersign_ledger::SqliteStore::open_read_only(path).await?,
        ));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .with_context(|| format!("connecting to {}", redact_url(url)))?;
        return Ok(Pool::Postgres(pool));
    }
    bail!("--store must be sqlite://PATH or postgres://USER@HOST/DATABASE")
}

// ---------------------------------------------------------------------------------------------
// The gateway client
// ---------------------------------------------------------------------------------------------

/// Resolved connection settings.
struct Gateway {
    base: reqwest::Url,
    client: reqwest::Client,
}

impl GatewayArgs {
    fn resolve(&self) -> Result<Gateway> {
        let pki = self.var.join("dev-pki");
        let pick = |given: &Option<PathBuf>, dev_file: &str, flag: &str| -> Result<PathBuf> {
            match (given, self.dev) {
                (Some(path), _) => Ok(path.clone()),
                (None, true) => Ok(pki.join(dev_file)),
                (None, false) => Err(anyhow!("{flag} is required (or --dev)")),
            }
        };
        let cert = pick(&self.cert, "auditor.crt", "--cert")?;
        let key = pick(&self.key, "auditor.key", "--key")?;
        let cacert = pick(&self.cacert, "ca.crt", "--cacert")?;
        let base = match (&self.gateway, self.dev) {
            (Some(url), _) => url.clone(),
            (None, true) => {
                let port = dev::DEV_LISTEN_ADDRESS
                    .rsplit_once(':')
                    .map_or("8443", |(_, port)| port);
                format!("https://localhost:{port}")
            }
            (None, false) => bail!("--gateway is required (or --dev)"),
        };
        let base = reqwest::Url::parse(&base).with_context(|| format!("--gateway {base}"))?;
        if base.scheme() != "https" {
            bail!("--gateway must be an https:// URL: the gateway only speaks mutual TLS");
        }
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut identity_pem = read(&cert)?;
        identity_pem.push(b'\n');
        identity_pem.extend(read(&key)?);
        let identity = reqwest::Identity::from_pem(&identity_pem).with_context(|| {
            format!(
                "{} / {} are not a PEM certificate and key",
                cert.display(),
                key.display()
            )
        })?;
        let roots = reqwest::Certificate::from_pem_bundle(&read(&cacert)?)
            .with_context(|| format!("{} is not a PEM CA bundle", cacert.display()))?;
        let client = reqwest::Client::builder()
            .tls_certs_only(roots)
            .identity(identity)
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .read_timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .build()
            .context("cannot build the HTTPS client")?;
        Ok(Gateway { base, client })
    }
}

impl Gateway {
    fn url(&self, path: &str, parameters: &[(&str, String)]) -> Result<reqwest::Url> {
        let mut url = self
            .base
            .join(path)
            .with_context(|| format!("{path} on {}", self.base))?;
        if !parameters.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in parameters {
                pairs.append_pair(name, value);
            }
        }
        Ok(url)
    }

    async fn get(&self, url: reqwest::Url) -> Result<reqwest::Response> {
        let response = self
            .client
            .get(url.clone())
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = read_bounded(response, ERROR_BODY_BYTES_MAX)
            .await
            .unwrap_or_default();
        let detail = serde_json::from_slice::<Value>(&body)
            .ok()
            .map(|value| {
                format!(
                    "{}: {}",
                    value["code"].as_str().unwrap_or("error"),
                    value["message"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("the gateway answered {status} to {}: {detail}", url.path())
    }
}

/// A response body of at most `bytes_max` bytes.
async fn read_bounded(mut response: reqwest::Response, bytes_max: usize) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > bytes_max {
            bail!("the gateway's answer is larger than {bytes_max} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
fn progress_bar(length: Option<u64>, template: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

// ---------------------------------------------------------------------------------------------
// query
// ---------------------------------------------------------------------------------------------

fn query(args: QueryArgs) -> Result<u8> {
    let gateway = args.gateway.resolve()?;
    let mut parameters: Vec<(&str, String)> = Vec::new();
    for (name, value) in [
        ("from", &args.from),
        ("to", &args.to),
        ("kind", &args.kind),
        ("outcome", &args.outcome),
        ("subject_cn", &args.subject_cn),
        ("subject_fingerprint", &args.subject_fingerprint),
        ("role", &args.role),
        ("account", &args.account),
        ("amount_min", &args.amount_min),
        ("amount_max", &args.amount_max),
        ("currency", &args.currency),
        ("bundle_revision", &args.bundle_revision),
        ("decision_id", &args.decision_id),
    ] {
        if let Some(value) = value {
            parameters.push((name, value.clone()));
        }
    }
    let rows_max = if args.all { u64::MAX } else { args.limit };
    let runtime = runtime()?;
    runtime.block_on(async move {
        let stdout = io::stdout();
        let mut out = RecordPrinter::new(args.format, BufWriter::new(stdout.lock()));
        let mut after = args.after.unwrap_or(0);
        let mut printed = 0u64;
        while printed < rows_max {
            let page_rows = (rows_max - printed).min(QUERY_PAGE_ROWS_MAX);
            let mut page_parameters = parameters.clone();
            page_parameters.push(("after", after.to_string()));
            page_parameters.push(("limit", page_rows.to_string()));
            let url = gateway.url("/v1/audit/records", &page_parameters)?;
            let body = read_bounded(gateway.get(url).await?, QUERY_PAGE_BYTES_MAX).await?;
            let page: Value = serde_json::from_slice(&body)
                .context("the gateway's answer to /v1/audit/records is not JSON")?;
            let records = page["records"]
                .as_array()
                .ok_or_else(|| anyhow!("the gateway's answer has no records array"))?;
            for record in records.iter().take(page_rows as usize) {
                out.record(record)?;
                printed += 1;
            }
            match page["next_after"].as_u64() {
                Some(next) if !records.is_empty() && next > after => after = next,
                _ => break,
            }
        }
        out.finish()?;
        if args.format == OutputFormat::Table {
            eprintln!("{printed} records");
        }
        Ok(EXIT_OK)
    })
}

/// The columns of `table` and `csv`, with how to read each from a record view.
/// A column: its name and how to read its cell from a record view.
type Column = (&'static str, fn(&Value) -> String);

const COLUMNS: &[Column] = &[
    ("sequence", |r| text(&r["sequence"])),
    ("timestamp", |r| text(&r["timestamp"])),
    ("kind", |r| text(&r["kind"])),
    ("action", |r| text(&r["action"])),
    ("outcome", |r| text(&r["outcome"])),
    ("subject_cn", |r| text(&r["subject"]["common_name"])),
    ("subject_roles", |r| {
        r["subject"]["roles"]
            .as_array()
            .map(|roles| roles.iter().map(text).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }),
    ("decision_id", |r| text(&r["decision_id"])),
    ("record_id", |r| text(&r["record_id"])),
    ("subject_fingerprint", |r| {
        text(&r["subject"]["fingerprint_sha256"])
    }),
    ("source_address", |r| text(&r["source_address"])),
    ("bundle_revision", |r| text(&r["bundle_revision"])),
    ("masked_input", |r| compact(&r["masked_input"])),
    ("result", |r| compact(&r["result"])),
    ("hash", |r| text(&r["hash"])),
];

/// Columns shown in `table` (the rest are long; use csv or json for them).
const TABLE_COLUMNS: usize = 8;

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// RFC 4180: quote a field holding a comma, quote, CR or LF; double the quotes inside.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// Prints record views one at a time in the chosen format.
struct RecordPrinter<W: Write> {
    format: OutputFormat,
    out: W,
    rows: u64,
    /// Table column widths, fixed from the first page so later rows line up without
    /// holding every row (long values extend their cell).
    widths: Vec<usize>,
}

impl<W: Write> RecordPrinter<W> {
    fn new(format: OutputFormat, out: W) -> RecordPrinter<W> {
        RecordPrinter {
            format,
            out,
            rows: 0,
            widths: Vec::new(),
        }
    }

    fn record(&mut self, record: &Value) -> Result<()> {
        match self.format {
            OutputFormat::Jsonl => writeln!(self.out, "{}", compact(record))?,
            OutputFormat::Json => {
                let separator = if self.rows == 0 { "[\n" } else { ",\n" };
                write!(self.out, "{separator}{}", compact(record))?;
            }
            OutputFormat::Csv => {
                if self.rows == 0 {
                    let header: Vec<&str> = COLUMNS.iter().map(|(name, _)| *name).collect();
                    write!(self.out, "{}\r\n", header.join(","))?;
                }
                let fields: Vec<String> = COLUMNS
                    .iter()
                    .map(|(_, read)| csv_field(&read(record)))
                    .collect();
                write!(self.out, "{}\r\n", fields.join(","))?;
            }
            OutputFormat::Table => {
                let cells: Vec<String> = COLUMNS[..TABLE_COLUMNS]
                    .iter()
                    .map(|(_, read)| read(record).replace(['\n', '\r', '\t'], " "))
                    .collect();
                if self.rows == 0 {
                    // Typical widths: the header, a full timestamp and a UUID.
                    self.widths = COLUMNS[..TABLE_COLUMNS]
                        .iter()
                        .zip(&cells)
                        .map(|((name, _), cell)| name.len().max(cell.chars().count()))
                        .collect();
                    self.widths[1] = self.widths[1].max(30);
                    self.widths[3] = self.widths[3].max(16);
                    let header: Vec<String> = COLUMNS[..TABLE_COLUMNS]
                        .iter()
                        .map(|(name, _)| name.to_uppercase())
                        .collect();
                    self.table_row(&header)?;
                }
                self.table_row(&cells)?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    fn table_row(&mut self, cells: &[String]) -> Result<()> {
        let mut line = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index > 0 {
                line.push_str("  ");
            }
            let width = self.widths.get(index).copied().unwrap_or(0);
            if index + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}"));
            }
        }
        writeln!(self.out, "{}", line.trim_end())?;
        Ok(())
    }

    fn finish(mut self) -> Result<W> {
        match self.format {
            OutputFormat::Json if self.rows == 0 => writeln!(self.out, "[]")?,
            OutputFormat::Json => writeln!(self.out, "\n]")?,
            OutputFormat::Csv if self.rows == 0 => {
                let header: Vec<&str> = COLUMNS.iter().map(|(name, _)| *name).collect();
                write!(self.out, "{}\r\n", header.join(","))?;
            }
            _ => {}
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

// ---------------------------------------------------------------------------------------------
// export
// ---------------------------------------------------------------------------------------------

fn export(args: ExportArgs) -> Result<u8> {
    let gateway = args.gateway.resolve()?;
    let mut parameters = Vec::new();
    if let Some(from) = &args.from {
        parameters.push(("from", from.clone()));
    }
    if let Some(to) = &args.to {
        parameters.push(("to", to.clone()));
    }
    let output = args.output;
    let partial = partial_path(&output);
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let url = gateway.url("/v1/audit/export", &parameters)?;
        let started = Instant::now();
        let mut response = gateway.get(url).await?;
        let file = File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        let progress = progress_bar(
            None,
            "{spinner} exporting [{elapsed_precise}] {bar:30} {pos}/{len} records ({per_sec}, ETA {eta})",
        );
        let mut scan = ExportScan::default();
        while let Some(chunk) = response
            .chunk()
            .await
            .context("the export stream broke off")?
        {
            file.write_all(&chunk)
                .with_context(|| format!("writing {}", partial.display()))?;
            scan.feed(&chunk);
            if let (Some(total), true) = (scan.total_records, progress.length().is_none()) {
                progress.set_length(total);
            }
            progress.set_position(scan.records);
        }
        progress.finish_and_clear();
        file.flush()
            .with_context(|| format!("writing {}", partial.display()))?;
        file.get_ref()
            .sync_all()
            .with_context(|| format!("writing {}", partial.display()))?;
        Ok::<_, anyhow::Error>((scan, started.elapsed()))
    });
    let (scan, elapsed) = match result {
        Ok(done) => done,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    let Some(summary) = scan.summary() else {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "the export ended early ({} records received, no consistency proof): nothing was \
             written to {}",
            scan.records,
            output.display()
        );
    };
    std::fs::rename(&partial, &output)
        .with_context(|| format!("cannot move the export to {}", output.display()))?;
    let bytes = std::fs::metadata(&output).map_or(0, |metadata| metadata.len());
    println!(
        "exported records {}..={} ({} records, {} checkpoints, {:.1} MiB) to {} in {:.1} s",
        summary.first_sequence,
        summary.last_sequence,
        scan.records,
        scan.checkpoints,
        bytes as f64 / (1024.0 * 1024.0),
        output.display(),
        elapsed.as_secs_f64()
    );
    println!(
        "covering checkpoint: tree size {}, signed by key {}",
        summary.covering_tree_size, summary.key_id
    );
    println!(
        "verify offline with the pinned public key: countersign audit verify --offline {} \
         --public-key <audit-checkpoint.pub>",
        output.display()
    );
    Ok(EXIT_OK)
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output
        .file_name()
        .map(|name| name.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    output.with_file_name(name)
}

/// Follows the export stream line by line without keeping it: counts record and checkpoint
/// lines (by their first bytes) and keeps the header and the last line (both small).
#[derive(Default)]
struct ExportScan {
    /// The start of the current line (at most `LINE_PREFIX_BYTES`).
    prefix: Vec<u8>,
    /// The header line while it is being read, then parsed.
    header: Option<Vec<u8>>,
    header_done: bool,
    total_records: Option<u64>,
    first_sequence: Option<u64>,
    key_id: Option<String>,
    /// The current line if it may be the consistency line (starts with its prefix).
    tail: Option<Vec<u8>>,
    last_consistency: Option<Value>,
    records: u64,
    checkpoints: u64,
}

struct ExportSummary {
    first_sequence: u64,
    last_sequence: u64,
    covering_tree_size: u64,
    key_id: String,
}

const LINE_PREFIX_BYTES: usize = 24;
const CONSISTENCY_PREFIX: &[u8] = br#"{"type":"consistency""#;

impl ExportScan {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (line, rest, complete) = match bytes.iter().position(|byte| *byte == b'\n') {
                Some(end) => (&bytes[..end], &bytes[end + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            if self.prefix.len() < LINE_PREFIX_BYTES {
                let take = (LINE_PREFIX_BYTES - self.prefix.len()).min(line.len());
                self.prefix.extend_from_slice(&line[..take]);
            }
            if !self.header_done {
                let header = self.header.get_or_insert_with(Vec::new);
                if header.len() + line.len() <= EXPORT_HEADER_BYTES_MAX {
                    header.extend_from_slice(line);
                }
            } else if self.prefix.starts_with(CONSISTENCY_PREFIX)
                || CONSISTENCY_PREFIX.starts_with(&self.prefix)
            {
                let tail = self.tail.get_or_insert_with(Vec::new);
                if tail.len() + line.len() <= EXPORT_HEADER_BYTES_MAX {
                    tail.extend_from_slice(line);
                }
            }
            if complete {
                self.end_line();
            }
        }
    }

    fn end_line(&mut self) {
        if !self.header_done {
            self.header_done = true;
            if let Some(header) = self
                .header
                .take()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            {
                let first = header["first_sequence"].as_u64();
                let last = header["last_sequence"].as_u64();
                if let (Some(first), Some(last)) = (first, last) {
                    self.total_records = Some(last.saturating_sub(first) + 1);
                }
                self.first_sequence = first;
                self.key_id = header["key_id"].as_str().map(str::to_owned);
            }
        } else if self.prefix.starts_with(br#"{"type":"record""#) {
            self.records += 1;
        } else if self.prefix.starts_with(br#"{"type":"checkpoint""#) {
            self.checkpoints += 1;
        } else if let Some(tail) = self.tail.take() {
            self.last_consistency = serde_json::from_slice(&tail).ok();
        }
        self.tail = None;
        self.prefix.clear();
    }

    /// What the finished export holds, if it ended with its consistency proof.
    fn summary(&self) -> Option<ExportSummary> {
        let consistency = self.last_consistency.as_ref()?;
        Some(ExportSummary {
            first_sequence: self.first_sequence?,
            last_sequence: consistency["from"].as_u64()?,
            covering_tree_size: consistency["to"].as_u64()?,
            key_id: self.key_id.clone().unwrap_or_default(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// keygen
// ---------------------------------------------------------------------------------------------

fn keygen(args: KeygenArgs) -> Result<u8> {
    let (signer, private, public) = write_key_pair(&args.out)?;
    println!(
        "checkpoint signing key {} written to {} (mode 0600) and its public key to {}",
        signer.key_id(),
        private.display(),
        public.display()
    );
    println!(
        "configure it with [audit.checkpoints] signing_key_file = \"{}\"; give auditors {}",
        private.display(),
        public.display()
    );
    Ok(EXIT_OK)
}

/// Writes a fresh key pair into `directory`; never overwrites an existing key file.
pub fn write_key_pair(directory: &Path) -> Result<(CheckpointSigner, PathBuf, PathBuf)> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    let private = directory.join(CHECKPOINT_KEY_FILE);
    let public = directory.join(CHECKPOINT_PUBLIC_KEY_FILE);
    for path in [&private, &public] {
        if path.exists() {
            bail!(
                "{} exists; refusing to overwrite a checkpoint key (move it away first)",
                path.display()
            );
        }
    }
    let signer = CheckpointSigner::generate().context("cannot generate a key")?;
    write_new_file(&private, signer.private_key_pem().as_bytes(), 0o600)?;
    write_new_file(
        &public,
        signer.verifier().public_key_pem().as_bytes(),
        0o644,
    )?;
    Ok((signer, private, public))
}

/// Creates `path` (failing if it exists) with `mode` from the start, so the private key is
/// never readable by others, not even for a moment.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Lines of a text stream, for tests of the printers.
#[cfg(test)]
fn lines_of(bytes: &[u8]) -> Vec<String> {
    use std::io::BufRead as _;
    BufReader::new(bytes)
        .lines()
        .map(|line| line.expect("UTF-8"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(sequence: u64, note: &str) -> Value {
        json!({
            "sequence": sequence,
            "record_id": "0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b",
            "kind": "decision",
            "decision_id": "0190a5b2-7c3d-7e4f-8a1b-000000000001",
            "timestamp": "2026-03-14T15:09:26.535897932Z",
            "subject": {"fingerprint_sha256": "ab", "common_name": "teller, \"main\"", "roles": ["teller", "reader"]},
            "source_address": "10.1.2.3:1",
            "action": "transfer.create",
            "masked_input": {"note": note},
            "result": {"allow": true},
            "bundle_revision": "rev-1",
            "outcome": "allow",
            "redaction": {"erased": [], "masked": [], "error": null},
            "previous_hash": "00",
            "hash": "ff",
        })
    }

    fn render(format: OutputFormat, records: &[Value]) -> String {
        let mut printer = RecordPrinter::new(format, Vec::new());
        for record in records {
            printer.record(record).unwrap();
        }
        String::from_utf8(printer.finish().unwrap()).unwrap()
    }

    #[test]
    fn csv_is_rfc_4180() {
        let text = render(OutputFormat::Csv, &[view(1, "a,b"), view(2, "line\nbreak")]);
        assert!(text.ends_with("\r\n"));
        let rows: Vec<&str> = text.split("\r\n").collect();
        assert!(rows[0].starts_with("sequence,timestamp,kind,action,outcome,subject_cn,"));
        // Quotes doubled inside a quoted field; embedded newline kept inside quotes.
        assert!(rows[1].contains(r#""teller, ""main""""#), "{}", rows[1]);
        assert!(rows[1].contains(r#""{""note"":""a,b""}""#), "{}", rows[1]);
        assert!(
            text.contains("\"{\"\"note\"\":\"\"line\\nbreak\"\"}\""),
            "{text}"
        );
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_field("cr\r"), "\"cr\r\"");
    }

    #[test]
    fn empty_results_still_print_a_header_or_an_empty_array() {
        assert_eq!(
            render(OutputFormat::Csv, &[]),
            format!(
                "{}\r\n",
                COLUMNS
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        );
        assert_eq!(render(OutputFormat::Json, &[]), "[]\n");
        assert_eq!(render(OutputFormat::Jsonl, &[]), "");
    }

    #[test]
    fn json_is_an_array_and_jsonl_one_record_per_line() {
        let records = [view(1, "x"), view(2, "y")];
        let array: Value = serde_json::from_str(&render(OutputFormat::Json, &records)).unwrap();
        assert_eq!(array.as_array().unwrap().len(), 2);
        let lines = lines_of(render(OutputFormat::Jsonl, &records).as_bytes());
        assert_eq!(lines.len(), 2);
        assert_eq!(
            serde_json::from_str::<Value>(&lines[1]).unwrap()["sequence"],
            2
        );
    }

    #[test]
    fn table_columns_line_up() {
        let text = render(OutputFormat::Table, &[view(1, "x"), view(1234, "y")]);
        let lines = lines_of(text.as_bytes());
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("SEQUENCE  TIMESTAMP"), "{text}");
        let column = |line: &str| line.find("2026-03-14").unwrap();
        assert_eq!(column(&lines[1]), column(&lines[2]), "{text}");
        assert_eq!(lines[0].find("TIMESTAMP").unwrap(), column(&lines[1]));
    }

    #[test]
    fn the_export_scan_counts_records_across_chunk_boundaries() {
        let export = concat!(
            r#"{"type":"header","format":"countersign-audit-export/v1","first_sequence":5,"last_sequence":7,"key_id":"k"}"#,
            "\n",
            r#"{"type":"frontier","size":4,"nodes":[]}"#,
            "\n",
            r#"{"type":"record","sequence":5}"#,
            "\n",
            r#"{"type":"record","sequence":6}"#,
            "\n",
            r#"{"type":"checkpoint","tree_size":6}"#,
            "\n",
            r#"{"type":"record","sequence":7}"#,
            "\n",
            r#"{"type":"checkpoint","tree_size":8}"#,
            "\n",
            r#"{"type":"consistency","from":7,"to":8,"proof":[]}"#,
            "\n",
        );
        for chunk_bytes in [1, 2, 7, 1000] {
            let mut scan = ExportScan::default();
            for chunk in export.as_bytes().chunks(chunk_bytes) {
                scan.feed(chunk);
            }
            assert_eq!(scan.total_records, Some(3));
            assert_eq!((scan.records, scan.checkpoints), (3, 2), "{chunk_bytes}");
            let summary = scan.summary().expect("complete");
            assert_eq!(
                (
                    summary.first_sequence,
                    summary.last_sequence,
                    summary.covering_tree_size
                ),
                (5, 7, 8)
            );
            assert_eq!(summary.key_id, "k");
        }
        // Cut before the proof: not complete.
        let mut scan = ExportScan::default();
        scan.feed(&export.as_bytes()[..export.len() - 60]);
        assert!(scan.summary().is_none());
    }

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites() {
        let directory = tempfile::TempDir::new().unwrap();
        let (signer, private, public) = write_key_pair(directory.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = CheckpointSigner::from_pem_file(&private).unwrap();
        assert_eq!(loaded.key_id(), signer.key_id());
        let verifier = CheckpointVerifier::from_pem_file(&public).unwrap();
        assert_eq!(verifier.key_id(), signer.key_id());
        assert!(
            std::fs::read_to_string(&public)
                .unwrap()
                .contains("BEGIN PUBLIC KEY")
        );
        let error = write_key_pair(directory.path()).err().unwrap();
        assert!(
            error.to_string().contains("refusing to overwrite"),
            "{error}"
        );
        assert_eq!(
            CheckpointSigner::from_pem_file(&private).unwrap().key_id(),
            signer.key_id()
        );
    }
}
