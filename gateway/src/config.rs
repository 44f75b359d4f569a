//! Typed configuration: a TOML file, then environment variables on top.
//!
//! Environment variables override file keys: `COUNTERSIGN__TLS__SERVER_CERT=/x` sets
//! `tls.server_cert`. Keys are matched case-insensitively; values are parsed as TOML
//! scalars when they look like one (numbers, booleans, arrays) and taken as strings otherwise.
//! Every error names the key it is about, so an operator can fix it in one go.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use countersign_ledger::OutboxFullPolicy;
use serde::Deserialize;

/// Environment prefix; a double underscore separates nesting levels.
pub const ENV_PREFIX: &str = "COUNTERSIGN__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid config key `{key}`: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the mutual-TLS listener for channel traffic.
    pub listen_address: SocketAddr,
    /// Optional plain-HTTP listener serving only `/healthz`, `/readyz` and `/metrics`, for
    /// Kubernetes probes and Prometheus, which do not present client certificates.
    #[serde(default)]
    pub ops_listen_address: Option<SocketAddr>,
    pub tls: TlsConfig,
    pub policy: PolicyConfig,
    pub store: StoreConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    /// The Kafka audit stream (needs the PostgreSQL store and its outbox). Absent: no stream.
    #[serde(default)]
    pub kafka: Option<crate::kafka::KafkaConfig>,
    #[serde(default)]
    pub limits: Limits,
    /// Maker-checker: how long a held transfer waits for approval, and the expiry sweeper.
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// How certificate attributes map to roles. A caller with no role can do nothing but
    /// read health endpoints.
    #[serde(default)]
    pub role_mapping: Vec<RoleMapping>,
    /// Policy-guarded reverse-proxy routes (`[[routes]]`): requests under a path prefix are
    /// decided by the policy and, if allowed, forwarded to an upstream. See `proxy`.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The Kubernetes admission webhook (`POST /v1/admission`): Gatekeeper ConstraintTemplates
    /// and Constraints evaluated on each `AdmissionReview`. Absent: the route answers 409
    /// `admission.not_configured`.
    #[serde(default)]
    pub admission: Option<AdmissionConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate chain.
    pub server_cert: PathBuf,
    /// PEM file with the server private key (PKCS#8, SEC1 or PKCS#1).
    pub server_key: PathBuf,
    /// PEM bundle of the CAs whose client certificates are accepted.
    pub client_ca_bundle: PathBuf,
    /// PEM or DER certificate revocation lists; a revoked client is refused at the handshake.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// A client that has not finished the handshake by then is disconnected.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Lowest TLS version offered: "1.3" (default) or "1.2".
    #[serde(default = "default_tls_min_version")]
    pub min_version: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Directory of the Rego bundle.
    pub bundle: PathBuf,
    /// A decision that takes longer is abandoned and the transfer denied (fail closed).
    #[serde(default = "default_decision_timeout_ms")]
    pub decision_timeout_ms: u64,
    /// Reload the bundle when its files change (besides SIGHUP and the admin endpoint).
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Changes are collected for this long before a reload, so an editor's or a
    /// deployment's burst of writes becomes one reload.
    #[serde(default = "default_watch_debounce_ms")]
    pub watch_debounce_ms: u64,
    /// Run the new bundle's own `test_*` rules before activating it; a failing test keeps
    /// the old bundle active. OPA has no such guard.
    #[serde(default = "default_true")]
    pub reload_requires_passing_tests: bool,
    /// Rego v0 for modules whose version the bundle manifest does not set (OPA's
    /// `--v0-compatible`).
    #[serde(default)]
    pub v0_compatible: bool,
    /// PEM public key (RSA or EC P-256) that must have signed the bundle's
    /// `.signatures.json`. Without it a signed bundle is refused, as in OPA.
    #[serde(default)]
    pub verification_key: Option<PathBuf>,
    /// `RS256` (default) or `ES256`.
    #[serde(default)]
    pub verification_alg: Option<String>,
    /// Key id, as OPA's `keys` config; takes precedence over the token's `kid`.
    #[serde(default)]
    pub key_id: Option<String>,
    /// Must equal the signature's `scope` claim.
    #[serde(default)]
    pub scope: Option<String>,
}

impl PolicyConfig {
    /// Defaults for everything but the bundle path.
    pub fn new(bundle: PathBuf) -> PolicyConfig {
        PolicyConfig {
            bundle,
            decision_timeout_ms: default_decision_timeout_ms(),
            watch: true,
            watch_debounce_ms: default_watch_debounce_ms(),
            reload_requires_passing_tests: true,
            v0_compatible: false,
            verification_key: None,
            verification_alg: None,
            key_id: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path/to/file.db` (embedded, the default) or `postgres://user@host/db`
    /// (production: many replicas on one database).
    pub url: String,
    /// Apply the shipped migrations when the gateway starts. Needs a role that may change the
    /// schema; in production run `countersign migrate` as the owner once and set this to false
    /// for the application role.
    #[serde(default = "default_true")]
    pub migrate_on_start: bool,
    /// The Kafka outbox (PostgreSQL): records published by the relay, bounded.
    #[serde(default)]
    pub outbox: OutboxConfig,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> StoreConfig {
        StoreConfig {
            url: url.into(),
            migrate_on_start: true,
            outbox: OutboxConfig::default(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }
}

/// The outbox holds audit records not yet acknowledged by Kafka. It grows while the broker is
/// down; at `rows_max` the gateway does what `when_full` says: `"refuse"` transfers with 503
/// `outbox.full` until the relay catches up (the default here: the stream stays within the lag
/// the bank accepts), or `"serve"` on with a warning. Either way no record is lost: the records
/// are in the database; the outbox only says which are not yet in Kafka.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    pub rows_max: u64,
    pub when_full: OutboxFullPolicy,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            rows_max: 1_000_000,
            when_full: OutboxFullPolicy::Refuse,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Optional JSONL decision-log file (OPA decision-log event fields), fed from the store.
    #[serde(default)]
    pub decision_log: Option<PathBuf>,
    /// Encryption at rest of the unmasked policy input (`[audit.encryption]`). Absent: no
    /// unmasked input is stored at all (only the masked one) and reveals answer 409
    /// `reveal.not_configured`.
    #[serde(default)]
    pub encryption: Option<EncryptionConfig>,
    /// The auditors' workspace tree and signed checkpoints (`[audit.checkpoints]`).
    #[serde(default)]
    pub checkpoints: CheckpointsConfig,
}

/// `[audit.checkpoints]`: every sealed record is indexed and added to the Merkle tree; with a
/// signing key, a signed checkpoint (tree size, root, time) is written every
/// `interval_seconds` and at least every `records_max` records, whichever comes first, and
/// only when the tree grew. Without a key the index and the queries still work, but nothing
/// is signed and the proof endpoints say so.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointsConfig {
    /// PKCS#8 PEM Ed25519 private key (`openssl genpkey -algorithm ed25519`). Relative to the
    /// config file. Publish its public key (`GET /v1/audit/public-key`) to auditors.
    pub signing_key_file: Option<PathBuf>,
    /// 1..=86400.
    pub interval_seconds: u64,
    /// 1..=1000000.
    pub records_max: u64,
}

/// Bounds of `[audit.checkpoints]`, each named with its unit.
pub const CHECKPOINT_INTERVAL_SECONDS_MAX: u64 = 24 * 60 * 60;
pub const CHECKPOINT_RECORDS_MAX_MAX: u64 = 1_000_000;

impl Default for CheckpointsConfig {
    fn default() -> Self {
        CheckpointsConfig {
            signing_key_file: None,
            interval_seconds: 60,
            records_max: 10_000,
        }
    }
}

impl CheckpointsConfig {
    /// Checks every bound; errors name the key.
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=CHECKPOINT_INTERVAL_SECONDS_MAX).contains(&self.interval_seconds) {
            return Err(ConfigError::key(
                "audit.checkpoints.interval_seconds",
                format!("must be 1..={CHECKPOINT_INTERVAL_SECONDS_MAX} (1 second to 1 day)"),
            ));
        }
        if !(1..=CHECKPOINT_RECORDS_MAX_MAX).contains(&self.records_max) {
            return Err(ConfigError::key(
                "audit.checkpoints.records_max",
                format!("must be 1..={CHECKPOINT_RECORDS_MAX_MAX}"),
            ));
        }
        if let Some(path) = &self.signing_key_file
            && path.as_os_str().is_empty()
        {
            return Err(ConfigError::key(
                "audit.checkpoints.signing_key_file",
                "must be a path to a PKCS#8 PEM Ed25519 private key",
            ));
        }
        Ok(())
    }
}

/// `[audit.encryption]`: the keyring that seals every decision's unmasked input
/// (`countersign_audit::envelope`) and opens it for `GET /v1/audit/records/{id}/input`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// A JSON key file (`{"active", "keys", "index_secret"}`) or a directory with one file
    /// per entry (`active`, `index_secret`, `<kek id>.key`, as a Vault Agent or Kubernetes
    /// secret volume renders it). Read once at start; rotate by adding a key, making it
    /// active and restarting. Relative to the config file.
    pub key_file: PathBuf,
}

/// `[admission]`: the validating admission webhook. The templates and constraints are loaded
/// and compiled once at start (a change takes a restart, i.e. a rolling update in Kubernetes);
/// a file that does not load, or paths that hold no Constraint at all, stop the start rather
/// than serve a webhook that allows everything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Files or directories (read recursively) of ConstraintTemplates and Constraints, YAML
    /// or JSON, as `countersign gatekeeper verify` reads them. Relative to the config file.
    pub policies: Vec<PathBuf>,
    /// Largest `AdmissionReview` body accepted (413 beyond). An UPDATE carries the object
    /// twice. At most 1 MiB: the review is what is sealed in the audit trail, whose fields
    /// are bounded at that size.
    #[serde(default = "default_admission_body_bytes_max")]
    pub body_bytes_max: usize,
    /// Reviews evaluated at once, each on a blocking thread (Rego is CPU-bound); further
    /// requests wait for a slot within `limits.request_timeout_ms`. 1..=256.
    #[serde(default = "default_admission_evaluations_in_flight_max")]
    pub evaluations_in_flight_max: usize,
}

/// Bounds of `[admission]`, each named with its unit.
pub const ADMISSION_BODY_BYTES_MAX_MAX: usize = 1024 * 1024;
pub const ADMISSION_EVALUATIONS_IN_FLIGHT_MAX_MAX: usize = 256;

fn default_admission_body_bytes_max() -> usize {
    ADMISSION_BODY_BYTES_MAX_MAX
}
fn default_admission_evaluations_in_flight_max() -> usize {
    4
}

impl AdmissionConfig {
    /// Defaults for everything but the policy paths.
    pub fn new(policies: Vec<PathBuf>) -> AdmissionConfig {
        AdmissionConfig {
            policies,
            body_bytes_max: default_admission_body_bytes_max(),
            evaluations_in_flight_max: default_admission_evaluations_in_flight_max(),
        }
    }

    /// Checks every bound; errors name the key.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.policies.is_empty() {
            return Err(ConfigError::key(
                "admission.policies",
                "must name at least one file or directory of ConstraintTemplates and Constraints",
            ));
        }
        if let Some(index) = self
            .policies
            .iter()
            .position(|path| path.as_os_str().is_empty())
        {
            return Err(ConfigError::key(
                format!("admission.policies[{index}]"),
                "must be a path",
            ));
        }
        if !(1..=ADMISSION_BODY_BYTES_MAX_MAX).contains(&self.body_bytes_max) {
            return Err(ConfigError::key(
                "admission.body_bytes_max",
                format!("must be 1..={ADMISSION_BODY_BYTES_MAX_MAX} (1 MiB)"),
            ));
        }
        if !(1..=ADMISSION_EVALUATIONS_IN_FLIGHT_MAX_MAX).contains(&self.evaluations_in_flight_max)
        {
            return Err(ConfigError::key(
                "admission.evaluations_in_flight_max",
                format!("must be 1..={ADMISSION_EVALUATIONS_IN_FLIGHT_MAX_MAX}"),
            ));
        }
        Ok(())
    }
}

/// Every bound the gateway enforces, named with its unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub body_bytes_max: usize,
    pub headers_max: usize,
    pub connections_max: usize,
    pub request_timeout_ms: u64,
    pub shutdown_drain_ms: u64,
    pub ledger_queue_commands_max: usize,
    pub ledger_batch_commands_max: usize,
    pub audit_relay_batch_records_max: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 16 * 1024,
            headers_max: 64,
            connections_max: 4096,
            request_timeout_ms: 10_000,
            shutdown_drain_ms: 10_000,
            ledger_queue_commands_max: 4096,
            ledger_batch_commands_max: 256,
            audit_relay_batch_records_max: 512,
        }
    }
}

/// Maker-checker (`[approvals]`). A transfer the policy holds for approval reserves its amount
/// until it is approved, rejected or expires; expiry releases the reservation. Every replica
/// sweeps (the ledger serialises the sweeps), and an approve/reject that arrives after the
/// expiry finds the request expired even if no sweep has run yet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// A held transfer still pending this long after it was made expires.
    /// 1..=2592000 (30 days).
    pub timeout_seconds: u64,
    /// How often the sweeper looks for held transfers past their expiry. 10..=3600000.
    pub sweep_interval_ms: u64,
    /// Most held transfers one sweep expires in one ledger transaction; a full batch is
    /// followed by another at once. 1..=10000.
    pub sweep_batch_max: u32,
}

/// Bounds of `[approvals]`, each named with its unit.
pub const APPROVALS_TIMEOUT_SECONDS_MAX: u64 = 30 * 24 * 60 * 60;
pub const APPROVALS_SWEEP_INTERVAL_MS_MIN: u64 = 10;
pub const APPROVALS_SWEEP_INTERVAL_MS_MAX: u64 = 60 * 60 * 1000;
pub const APPROVALS_SWEEP_BATCH_MAX_MAX: u32 = 10_000;

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            timeout_seconds: 24 * 60 * 60,
            sweep_interval_ms: 1_000,
            sweep_batch_max: 100,
        }
    }
}

impl ApprovalsConfig {
    /// Checks every bound; errors name the key.
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=APPROVALS_TIMEOUT_SECONDS_MAX).contains(&self.timeout_seconds) {
            return Err(ConfigError::key(
                "approvals.timeout_seconds",
                format!(
                    "must be 1..={APPROVALS_TIMEOUT_SECONDS_MAX} (1 second to 30 days); a held transfer keeps its funds reserved that long"
                ),
            ));
        }
        if !(APPROVALS_SWEEP_INTERVAL_MS_MIN..=APPROVALS_SWEEP_INTERVAL_MS_MAX)
            .contains(&self.sweep_interval_ms)
        {
            return Err(ConfigError::key(
                "approvals.sweep_interval_ms",
                format!(
                    "must be {APPROVALS_SWEEP_INTERVAL_MS_MIN}..={APPROVALS_SWEEP_INTERVAL_MS_MAX} (10 ms to 1 hour)"
                ),
            ));
        }
        if !(1..=APPROVALS_SWEEP_BATCH_MAX_MAX).contains(&self.sweep_batch_max) {
            return Err(ConfigError::key(
                "approvals.sweep_batch_max",
                format!("must be 1..={APPROVALS_SWEEP_BATCH_MAX_MAX}"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// "pretty" for people, "json" for an ELK pipeline.
    pub format: LogFormat,
    /// A `tracing` filter such as "info" or "countersign=debug,info".
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// One rule of the role mapping. Exactly one matcher must be set.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    /// Matches when the subject has this organizational unit (OU).
    #[serde(default)]
    pub match_ou: Option<String>,
    /// Matches when a SAN URI starts with this prefix (e.g. a SPIFFE trust domain path).
    #[serde(default)]
    pub match_san_uri_prefix: Option<String>,
    /// Matches this exact subject common name.
    #[serde(default)]
    pub match_common_name: Option<String>,
    pub roles: Vec<String>,
}

/// One reverse-proxy route. Every bound has a default sized for API traffic.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Lower-case letters, digits, `-` and `_`: the policy sees it as `input.route.name`, the
    /// audit trail as action `proxy.<name>`.
    pub name: String,
    /// Requests whose path is this prefix or lies below it (`/statements`,
    /// `/statements/2026?x=1`, not `/statements2`) take this route. Starts with `/`, no
    /// trailing `/`, plain segments only; must not overlap the gateway's own paths or another
    /// route.
    pub path_prefix: String,
    /// `http://host:port[/base]`. The request path (prefix included) and query are appended
    /// to the base path. Plain HTTP: the upstream is expected on a trusted local network.
    pub upstream: String,
    /// The rule that decides each request; its value must be a decision document
    /// `{"allow": bool, "reasons": [...]}` (see policies/README.md).
    #[serde(default = "default_route_decision")]
    pub decision: String,
    /// A TCP connect to the upstream that takes longer fails with 502.
    #[serde(default = "default_route_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// From sending the request to receiving the upstream's response headers; past it the
    /// caller gets 504. Must be below `limits.request_timeout_ms`. Streamed bodies are not
    /// cut by it once the response headers are in, but an upstream that answers only after
    /// reading the whole request body must have read it by then: size it for the largest
    /// upload.
    #[serde(default = "default_route_response_headers_timeout_ms")]
    pub response_headers_timeout_ms: u64,
    /// Largest request body forwarded (streamed, counted as it passes; a declared larger
    /// Content-Length is refused with 413 before the policy is asked).
    #[serde(default = "default_route_body_bytes_max")]
    pub request_body_bytes_max: u64,
    /// Largest response body relayed; a longer one is cut off and the exchange aborted.
    #[serde(default = "default_route_body_bytes_max")]
    pub response_body_bytes_max: u64,
    /// Requests of this route in flight at once (each holds an upstream connection); past
    /// it the caller gets 503 `upstream.busy`, before anything is decided.
    #[serde(default = "default_route_requests_in_flight_max")]
    pub requests_in_flight_max: usize,
    /// Idle pooled connections kept per upstream host.
    #[serde(default = "default_route_pool_max_idle_per_host")]
    pub pool_max_idle_per_host: usize,
    /// A pooled connection idle for longer is closed.
    #[serde(default = "default_route_pool_idle_timeout_ms")]
    pub pool_idle_timeout_ms: u64,
}

/// Paths the gateway serves itself; a route may neither equal, contain nor lie below them.
pub const RESERVED_PATHS: &[&str] = &[
    "/v1/transfers",
    "/v1/approvals",
    "/v1/accounts",
    "/v1/data",
    "/health",
    "/healthz",
    "/readyz",
    "/metrics",
    "/console",
    "/v1/audit",
    "/v1/admission",
];

fn default_route_decision() -> String {
    "data.countersign.proxy.decision".to_owned()
}
fn default_route_connect_timeout_ms() -> u64 {
    1_000
}
fn default_route_response_headers_timeout_ms() -> u64 {
    5_000
}
fn default_route_body_bytes_max() -> u64 {
    16 * 1024 * 1024
}
fn default_route_requests_in_flight_max() -> usize {
    1_024
}
fn default_route_pool_max_idle_per_host() -> usize {
    32
}
fn default_route_pool_idle_timeout_ms() -> u64 {
    60_000
}

fn default_handshake_timeout_ms() -> u64 {
    5_000
}
fn default_tls_min_version() -> String {
    "1.3".to_owned()
}
fn default_decision_timeout_ms() -> u64 {
    50
}
fn default_watch_debounce_ms() -> u64 {
    250
}
fn default_true() -> bool {
    true
}

/// The role names the gateway itself knows about; the policy may use more.
pub const KNOWN_ROLES: &[&str] = &[
    "channel",
    "teller",
    "approver",
    "auditor",
    "admin",
    "policy_client",
    // May have one audit record's unmasked input decrypted (`GET /v1/audit/records/{id}/input`).
    "revealer",
    // The Kubernetes API server calling the admission webhook (`POST /v1/admission`).
    "admission",
];

impl Config {
    /// Reads `path`, applies `COUNTERSIGN__*` variables from `env`, and validates.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut table: toml::Table =
            text.parse()
                .map_err(|error: toml::de::Error| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: error.message().to_owned(),
                })?;
        apply_env(&mut table, env)?;
        let config = Self::from_table(table)?;
        // Relative paths in a file are relative to that file, as operators expect.
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(config.resolve_paths(base))
    }

    /// Deserializes and validates an already merged table.
    pub fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
        let deserializer = toml::Value::Table(table);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = error.path().to_string();
            ConfigError::key(
                if key == "." { "(root)".to_owned() } else { key },
                error.into_inner().message().to_owned(),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(mut self, base: &Path) -> Config {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        resolve(&mut self.tls.server_cert);
        resolve(&mut self.tls.server_key);
        resolve(&mut self.tls.client_ca_bundle);
        self.tls.crls.iter_mut().for_each(resolve);
        resolve(&mut self.policy.bundle);
        if let Some(path) = self.audit.decision_log.as_mut() {
            resolve(path);
        }
        if let Some(encryption) = self.audit.encryption.as_mut() {
            resolve(&mut encryption.key_file);
        }
        if let Some(path) = self.audit.checkpoints.signing_key_file.as_mut() {
            resolve(path);
        }
        if let Some(admission) = self.admission.as_mut() {
            admission.policies.iter_mut().for_each(resolve);
        }
        if let Some(rest) = self.store.url.strip_prefix("sqlite://")
            && !rest.starts_with('/')
            && !rest.starts_with(':')
        {
            self.store.url = format!("sqlite://{}", base.join(rest).display());
        }
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.tls.min_version.as_str(), "1.2" | "1.3") {
            return Err(ConfigError::key(
                "tls.min_version",
                "must be \"1.3\" or \"1.2\"",
            ));
        }
        if self.tls.handshake_timeout_ms == 0 {
            return Err(ConfigError::key(
                "tls.handshake_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.policy.decision_timeout_ms == 0 {
            return Err(ConfigError::key(
                "policy.decision_timeout_ms",
                "must be greater than 0",
            ));
        }
        if !self.store.url.starts_with("sqlite://") && !self.store.is_postgres() {
            return Err(ConfigError::key(
                "store.url",
                "must be sqlite://PATH or postgres://USER@HOST/DATABASE",
            ));
        }
        if self.store.outbox.rows_max == 0 {
            return Err(ConfigError::key(
                "store.outbox.rows_max",
                "must be greater than 0",
            ));
        }
        let limits = &self.limits;
        for (key, value) in [
            ("limits.body_bytes_max", limits.body_bytes_max),
            ("limits.headers_max", limits.headers_max),
            ("limits.connections_max", limits.connections_max),
            (
                "limits.ledger_queue_commands_max",
                limits.ledger_queue_commands_max,
            ),
            (
                "limits.ledger_batch_commands_max",
                limits.ledger_batch_commands_max,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::key(key, "must be greater than 0"));
            }
        }
        if limits.body_bytes_max > 1024 * 1024 {
            return Err(ConfigError::key(
                "limits.body_bytes_max",
                "must be at most 1048576 (1 MiB); transfers are small",
            ));
        }
        if limits.audit_relay_batch_records_max <= 0 {
            return Err(ConfigError::key(
                "limits.audit_relay_batch_records_max",
                "must be greater than 0",
            ));
        }
        self.approvals.validate()?;
        self.audit.checkpoints.validate()?;
        if let Some(admission) = &self.admission {
            admission.validate()?;
        }
        if let Some(kafka) = &self.kafka {
            if !self.store.is_postgres() {
                return Err(ConfigError::key(
                    "kafka",
                    "the Kafka stream is fed from the PostgreSQL outbox; set store.url to postgres://…",
                ));
            }
            kafka
                .validate()
                .map_err(|error| ConfigError::key("kafka", error.to_string()))?;
        }
        for (index, mapping) in self.role_mapping.iter().enumerate() {
            let matchers = [
                mapping.match_ou.is_some(),
                mapping.match_san_uri_prefix.is_some(),
                mapping.match_common_name.is_some(),
            ];
            if matchers.iter().filter(|set| **set).count() != 1 {
                return Err(ConfigError::key(
                    format!("role_mapping[{index}]"),
                    "set exactly one of match_ou, match_san_uri_prefix, match_common_name",
                ));
            }
            if mapping.roles.is_empty() {
                return Err(ConfigError::key(
                    format!("role_mapping[{index}].roles"),
                    "must name at least one role",
                ));
            }
        }
        validate_routes(&self.routes, &self.limits)
    }

    /// The SQLite file of an embedded store; `None` for PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&str> {
        self.store.url.strip_prefix("sqlite://")
    }
}

fn validate_routes(routes: &[RouteConfig], limits: &Limits) -> Result<(), ConfigError> {
    /// Two prefixes overlap when one equals the other or lies below it.
    fn overlaps(a: &str, b: &str) -> bool {
        let below = |inner: &str, outer: &str| {
            inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        below(a, b) || below(b, a)
    }
    for (index, route) in routes.iter().enumerate() {
        let key = |field: &str| format!("routes[{index}].{field}");
        let name_ok = !route.name.is_empty()
            && route.name.len() <= 64
            && route.name.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
            });
        if !name_ok {
            return Err(ConfigError::key(
                key("name"),
                "must be 1 to 64 of a-z, 0-9, '-', '_'",
            ));
        }
        if routes[..index].iter().any(|other| other.name == route.name) {
            return Err(ConfigError::key(key("name"), "is used by another route"));
        }
        let prefix = route.path_prefix.as_str();
        // Plain segments only: the prefix becomes an axum route, where `{`, `*` and `:`
        // mean something, and `.`/`..` segments would let two spellings reach one upstream.
        let segments_ok = prefix.starts_with('/')
            && prefix.len() > 1
            && prefix.len() <= 256
            && prefix[1..].split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment.bytes().all(|byte| {
                        byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~')
                    })
            });
        if !segments_ok {
            return Err(ConfigError::key(
                key("path_prefix"),
                "must start with '/', have no trailing '/', and use only plain segments of A-Z, a-z, 0-9, '-', '_', '.', '~'",
            ));
        }
        if let Some(reserved) = RESERVED_PATHS.iter().find(|path| overlaps(prefix, path)) {
            return Err(ConfigError::key(
                key("path_prefix"),
                format!("overlaps {reserved}, which the gateway serves itself"),
            ));
        }
        if let Some(other) = routes[..index]
            .iter()
            .find(|other| overlaps(prefix, &other.path_prefix))
        {
            return Err(ConfigError::key(
                key("path_prefix"),
                format!(
                    "overlaps the path_prefix {} of route {}",
                    other.path_prefix, other.name
                ),
            ));
        }
        let upstream: Option<axum::http::Uri> = route.upstream.parse().ok();
        let upstream_ok = upstream.as_ref().is_some_and(|uri| {
            uri.scheme_str() == Some("http")
                && uri.authority().is_some_and(|authority| {
                    !authority.host().is_empty() && !authority.as_str().contains('@')
                })
                && uri.query().is_none()
        });
        if !upstream_ok {
            return Err(ConfigError::key(
                key("upstream"),
                "must be an http:// URL with a host, no credentials and no query",
            ));
        }
        let decision_ok = route.decision.strip_prefix("data.").is_some_and(|path| {
            !path.is_empty()
                && path.split('.').all(|segment| {
                    !segment.is_empty()
                        && segment
                            .bytes()
                            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
                })
        });
        if !decision_ok {
            return Err(ConfigError::key(
                key("decision"),
                "must be a rule path such as data.countersign.proxy.decision",
            ));
        }
        for (field, value) in [
            ("connect_timeout_ms", route.connect_timeout_ms),
            (
                "response_headers_timeout_ms",
                route.response_headers_timeout_ms,
            ),
            ("request_body_bytes_max", route.request_body_bytes_max),
            ("response_body_bytes_max", route.response_body_bytes_max),
            (
                "requests_in_flight_max",
                route.requests_in_flight_max as u64,
            ),
            (
                "pool_max_idle_per_host",
                route.pool_max_idle_per_host as u64,
            ),
            ("pool_idle_timeout_ms", route.pool_idle_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::key(key(field), "must be greater than 0"));
            }
        }
        if route.response_headers_timeout_ms >= limits.request_timeout_ms {
            return Err(ConfigError::key(
                key("response_headers_timeout_ms"),
                format!(
                    "must be below limits.request_timeout_ms ({}), which bounds the whole request",
                    limits.request_timeout_ms
                ),
            ));
        }
        if route.pool_max_idle_per_host > 1024 {
            return Err(ConfigError::key(
                key("pool_max_idle_per_host"),
                "must be at most 1024",
            ));
        }
    }
    Ok(())
}

/// Applies `COUNTERSIGN__A__B=value` as `a.b = value`.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let segments: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        let key = segments.join(".");
        if segments.iter().any(String::is_empty) {
            return Err(ConfigError::key(
                key,
                format!("malformed variable name {name}"),
            ));
        }
        let value = parse_env_value(&raw);
        let (last, parents) = segments
            .split_last()
            .expect("split produced at least one segment");
        let mut cursor = &mut *table;
        for segment in parents {
            let entry = cursor
                .entry(segment.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cursor = match entry {
                toml::Value::Table(inner) => inner,
                _ => {
                    return Err(ConfigError::key(
                        key,
                        format!("{name} descends into `{segment}`, which is not a table"),
                    ));
                }
            };
        }
        cursor.insert(last.clone(), value);
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    // Integers, booleans and arrays keep their TOML type; everything else (including "1.2",
    // which no numeric key takes) stays a string, so versions and paths are never mangled.
    if let Ok(integer) = raw.parse::<i64>() {
        return toml::Value::Integer(integer);
    }
    if let Ok(boolean) = raw.parse::<bool>() {
        return toml::Value::Boolean(boolean);
    }
    if raw.trim_start().starts_with('[')
        && let Ok(mut parsed) = format!("x = {raw}").parse::<toml::Table>()
        && let Some(value) = parsed.remove("x")
    {
        return value;
    }
    toml::Value::String(raw.to_owned())
}

/// The role mapping the dev PKI is issued for; also a sensible example for operators.
pub fn default_role_mapping() -> Vec<RoleMapping> {
    KNOWN_ROLES
        .iter()
        .map(|role| RoleMapping {
            match_ou: Some((*role).to_owned()),
            match_san_uri_prefix: None,
            match_common_name: None,
            roles: vec![(*role).to_owned()],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> toml::Table {
        r#"
            listen_address = "127.0.0.1:8443"
            [tls]
            server_cert = "server.crt"
            server_key = "server.key"
            client_ca_bundle = "ca.crt"
            [policy]
            bundle = "policies"
            [store]
            url = "sqlite://var/countersign.db"
        "#
        .parse()
        .unwrap()
    }

    fn check_error(env: &[(&str, &str)], expected_key: &str) {
        let mut table = base();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let error = apply_env(&mut table, env)
            .and_then(|()| Config::from_table(table))
            .expect_err("config should be refused");
        match error {
            ConfigError::Key { key, .. } => assert_eq!(key, expected_key),
            other => panic!("expected a key error, got {other}"),
        }
    }

    #[test]
    fn env_overrides_file() {
        let mut table = base();
        apply_env(
            &mut table,
            [
                ("COUNTERSIGN__LIMITS__BODY_BYTES_MAX".into(), "2048".into()),
                ("COUNTERSIGN__TLS__MIN_VERSION".into(), "1.2".into()),
                ("UNRELATED".into(), "x".into()),
            ],
        )
        .unwrap();
        let config = Config::from_table(table).unwrap();
        assert_eq!(config.limits.body_bytes_max, 2048);
        assert_eq!(config.tls.min_version, "1.2");
    }

    #[test]
    fn errors_name_the_key() {
        check_error(
            &[("COUNTERSIGN__LIMITS__BODY_BYTES_MAX", "lots")],
            "limits.body_bytes_max",
        );
        check_error(
            &[("COUNTERSIGN__LIMITS__BODY_BYTES_MAX", "0")],
            "limits.body_bytes_max",
        );
        check_error(
            &[("COUNTERSIGN__TLS__MIN_VERSION", "1.1")],
            "tls.min_version",
        );
        check_error(
            &[("COUNTERSIGN__LISTEN_ADDRESS", "nowhere")],
            "listen_address",
        );
        check_error(&[("COUNTERSIGN__STORE__URL", "mysql://x")], "store.url");
        check_error(&[("COUNTERSIGN__TLS__SURPRISE", "1")], "tls.surprise");
        check_error(
            &[("COUNTERSIGN__POLICY__DECISION_TIMEOUT_MS", "0")],
            "policy.decision_timeout_ms",
        );
    }

    #[test]
    fn approvals_have_defaults_and_bounds() {
        let config = Config::from_table(base()).unwrap();
        assert_eq!(config.approvals, ApprovalsConfig::default());
        assert_eq!(config.approvals.timeout_seconds, 86_400);
        assert_eq!(config.approvals.sweep_interval_ms, 1_000);
        assert_eq!(config.approvals.sweep_batch_max, 100);

        let mut table = base();
        apply_env(
            &mut table,
            [
                (
                    "COUNTERSIGN__APPROVALS__TIMEOUT_SECONDS".into(),
                    "2592000".into(),
                ),
                (
                    "COUNTERSIGN__APPROVALS__SWEEP_INTERVAL_MS".into(),
                    "10".into(),
                ),
                (
                    "COUNTERSIGN__APPROVALS__SWEEP_BATCH_MAX".into(),
                    "10000".into(),
                ),
            ],
        )
        .unwrap();
        let config = Config::from_table(table).unwrap();
        assert_eq!(
            config.approvals,
            ApprovalsConfig {
                timeout_seconds: 2_592_000,
                sweep_interval_ms: 10,
                sweep_batch_max: 10_000,
            }
        );

        for (variable, value, key) in [
            ("TIMEOUT_SECONDS", "0", "approvals.timeout_seconds"),
            ("TIMEOUT_SECONDS", "2592001", "approvals.timeout_seconds"),
            ("TIMEOUT_SECONDS", "-1", "approvals.timeout_seconds"),
            ("TIMEOUT_SECONDS", "a day", "approvals.timeout_seconds"),
            ("SWEEP_INTERVAL_MS", "9", "approvals.sweep_interval_ms"),
            (
                "SWEEP_INTERVAL_MS",
                "3600001",
                "approvals.sweep_interval_ms",
            ),
            ("SWEEP_BATCH_MAX", "0", "approvals.sweep_batch_max"),
            ("SWEEP_BATCH_MAX", "10001", "approvals.sweep_batch_max"),
            ("SURPRISE", "1", "approvals.surprise"),
        ] {
            let name = format!("COUNTERSIGN__APPROVALS__{variable}");
            check_error(&[(name.as_str(), value)], key);
        }
    }

    #[test]
    fn audit_checkpoints_have_defaults_and_bounds() {
        let config = Config::from_table(base()).unwrap();
        assert_eq!(config.audit.checkpoints, CheckpointsConfig::default());
        assert_eq!(config.audit.checkpoints.interval_seconds, 60);
        assert_eq!(config.audit.checkpoints.records_max, 10_000);
        assert_eq!(config.audit.checkpoints.signing_key_file, None);
        for (variable, value, key) in [
            (
                "INTERVAL_SECONDS",
                "0",
                "audit.checkpoints.interval_seconds",
            ),
            (
                "INTERVAL_SECONDS",
                "86401",
                "audit.checkpoints.interval_seconds",
            ),
            ("RECORDS_MAX", "0", "audit.checkpoints.records_max"),
            ("RECORDS_MAX", "1000001", "audit.checkpoints.records_max"),
            ("SIGNING_KEY_FILE", "", "audit.checkpoints.signing_key_file"),
            ("SURPRISE", "1", "audit.checkpoints.surprise"),
        ] {
            let name = format!("COUNTERSIGN__AUDIT__CHECKPOINTS__{variable}");
            check_error(&[(name.as_str(), value)], key);
        }
    }

    fn check_route_error(route: &str, expected_key: &str) {
        let mut table = base();
        let routes: toml::Table = format!(
            "[[routes]]\nname = \"ok\"\npath_prefix = \"/ok\"\nupstream = \"http://127.0.0.1:9000\"\n[[routes]]\n{route}"
        )
        .parse()
        .unwrap();
        table.extend(routes);
        match Config::from_table(table).expect_err("route should be refused") {
            ConfigError::Key { key, .. } => assert_eq!(key, expected_key, "{route}"),
            other => panic!("expected a key error, got {other}"),
        }
    }

    #[test]
    fn routes_are_validated_and_errors_name_the_key() {
        const UP: &str = "http://127.0.0.1:9000";
        for (name, prefix, upstream, extra, key) in [
            ("Bad", "/b", UP, "", "routes[1].name"),
            ("ok", "/b", UP, "", "routes[1].name"),
            ("b", "b", UP, "", "routes[1].path_prefix"),
            ("b", "/b/", UP, "", "routes[1].path_prefix"),
            ("b", "/b/{id}", UP, "", "routes[1].path_prefix"),
            ("b", "/", UP, "", "routes[1].path_prefix"),
            ("b", "/v1", UP, "", "routes[1].path_prefix"),
            ("b", "/v1/transfers/x", UP, "", "routes[1].path_prefix"),
            ("b", "/metrics", UP, "", "routes[1].path_prefix"),
            ("b", "/ok/deeper", UP, "", "routes[1].path_prefix"),
            ("b", "/b", "https://x", "", "routes[1].upstream"),
            ("b", "/b", "/relative", "", "routes[1].upstream"),
            ("b", "/b", UP, "decision = \"allow\"", "routes[1].decision"),
            (
                "b",
                "/b",
                UP,
                "connect_timeout_ms = 0",
                "routes[1].connect_timeout_ms",
            ),
            (
                "b",
                "/b",
                UP,
                "response_headers_timeout_ms = 60000",
                "routes[1].response_headers_timeout_ms",
            ),
            ("b", "/b", UP, "surprise = 1", "routes[1].surprise"),
        ] {
            let route = format!(
                "name = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{extra}"
            );
            check_route_error(&route, key);
        }
        let mut table = base();
        table.extend(
            "[[routes]]\nname = \"statements\"\npath_prefix = \"/statements\"\nupstream = \"http://127.0.0.1:9000/api\"\n"
                .parse::<toml::Table>()
                .unwrap(),
        );
        let config = Config::from_table(table).unwrap();
        assert_eq!(config.routes[0].decision, "data.countersign.proxy.decision");
        assert_eq!(config.routes[0].request_body_bytes_max, 16 * 1024 * 1024);
    }

    #[test]
    fn audit_encryption_is_optional_and_its_key_file_is_relative_to_the_config() {
        assert_eq!(Config::from_table(base()).unwrap().audit.encryption, None);
        let mut table = base();
        apply_env(
            &mut table,
            [(
                "COUNTERSIGN__AUDIT__ENCRYPTION__KEY_FILE".into(),
                "keys/audit-keyring.json".into(),
            )],
        )
        .unwrap();
        let config = Config::from_table(table)
            .unwrap()
            .resolve_paths(Path::new("/etc/countersign"));
        assert_eq!(
            config.audit.encryption,
            Some(EncryptionConfig {
                key_file: PathBuf::from("/etc/countersign/keys/audit-keyring.json"),
            })
        );
        check_error(
            &[("COUNTERSIGN__AUDIT__ENCRYPTION__SURPRISE", "1")],
            "audit.encryption.surprise",
        );
        assert!(KNOWN_ROLES.contains(&"revealer"));
    }
    #[test]
    fn admission_is_optional_with_bounds_and_paths_relative_to_the_config() {
        assert_eq!(Config::from_table(base()).unwrap().admission, None);
        assert!(KNOWN_ROLES.contains(&"admission"));
        let mut table = base();
        table.extend(
            "[admission]\npolicies = [\"gatekeeper/policies\", \"/srv/extra\"]\n"
                .parse::<toml::Table>()
                .unwrap(),
        );
        let config = Config::from_table(table)
            .unwrap()
            .resolve_paths(Path::new("/etc/countersign"));
        assert_eq!(
            config.admission,
            Some(AdmissionConfig {
                policies: vec![
                    PathBuf::from("/etc/countersign/gatekeeper/policies"),
                    PathBuf::from("/srv/extra"),
                ],
                body_bytes_max: 1024 * 1024,
                evaluations_in_flight_max: 4,
            })
        );
        for (variable, value, key) in [
            ("POLICIES", "[]", "admission.policies"),
            ("POLICIES", "[\"\"]", "admission.policies[0]"),
            ("BODY_BYTES_MAX", "0", "admission.body_bytes_max"),
            ("BODY_BYTES_MAX", "1048577", "admission.body_bytes_max"),
            (
                "EVALUATIONS_IN_FLIGHT_MAX",
                "0",
                "admission.evaluations_in_flight_max",
            ),
            (
                "EVALUATIONS_IN_FLIGHT_MAX",
                "257",
                "admission.evaluations_in_flight_max",
            ),
            ("SURPRISE", "1", "admission.surprise"),
        ] {
            let mut env = vec![(
                "COUNTERSIGN__ADMISSION__POLICIES".to_owned(),
                "[\"policies\"]".to_owned(),
            )];
            env.push((
                format!("COUNTERSIGN__ADMISSION__{variable}"),
                value.to_owned(),
            ));
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            check_error(&env, key);
        }
    }
}
