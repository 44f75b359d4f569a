//! Prometheus metrics in the text exposition format.

use std::sync::atomic::AtomicI64;

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~13 s: decisions are µs, durable commits ms, timeouts seconds.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    pub http_request_duration: HistogramFamily,
    pub decisions: Family<Labels, Counter>,
    pub decision_reasons: Family<Labels, Counter>,
    pub policy_evaluation_duration: Histogram,
    pub ledger_commit_duration: Histogram,
    pub audit_backlog_records: Gauge<i64, AtomicI64>,
    pub outbox_backlog_records: Gauge<i64, AtomicI64>,
    pub kafka_records_published: Counter,
    pub kafka_publish_failures: Counter,
    pub tls_handshake_failures: Family<Labels, Counter>,
    pub policy_bundle_info: Family<Labels, Gauge<i64, AtomicI64>>,
    pub policy_reloads: Family<Labels, Counter>,
    /// Approve/reject steps by action and outcome (accepted, denied by the policy, refused
    /// by the ledger's four-eyes rules).
    pub approval_steps: Family<Labels, Counter>,
    pub approvals_expired: Counter,
    pub approval_sweep_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("countersign");
        let http_request_duration =
            HistogramFamily::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            http_request_duration.clone(),
        );
        let decisions = Family::<Labels, Counter>::default();
        registry.register(
            "decisions",
            "Policy decisions by action and outcome (allow, pending, deny, error)",
            decisions.clone(),
        );
        let decision_reasons = Family::<Labels, Counter>::default();
        registry.register(
            "decision_reasons",
            "Deny reasons by reason code",
            decision_reasons.clone(),
        );
        let policy_evaluation_duration = latency_histogram();
        registry.register(
            "policy_evaluation_duration_seconds",
            "Time to evaluate one policy decision",
            policy_evaluation_duration.clone(),
        );
        let ledger_commit_duration = latency_histogram();
        registry.register(
            "ledger_commit_duration_seconds",
            "Time from submitting a ledger command to its durable commit",
            ledger_commit_duration.clone(),
        );
        let audit_backlog_records = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "audit_backlog_records",
            "Audit records committed but not yet delivered to every sink",
            audit_backlog_records.clone(),
        );
        let outbox_backlog_records = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "outbox_backlog_records",
            "Audit records in the outbox not yet acknowledged by Kafka",
            outbox_backlog_records.clone(),
        );
        let kafka_records_published = Counter::default();
        registry.register(
            "kafka_records_published",
            "Audit records acknowledged by Kafka and marked delivered",
            kafka_records_published.clone(),
        );
        let kafka_publish_failures = Counter::default();
        registry.register(
            "kafka_publish_failures",
            "Failed outbox publishing attempts (broker or database unavailable)",
            kafka_publish_failures.clone(),
        );
        let tls_handshake_failures = Family::<Labels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "Refused or failed TLS handshakes by reason",
            tls_handshake_failures.clone(),
        );
        let policy_bundle_info = Family::<Labels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "policy_bundle_info",
            "The active policy bundle revision and evaluator (value 1)",
            policy_bundle_info.clone(),
        );
        let policy_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy bundle reload attempts by trigger and result (ok, refused)",
            policy_reloads.clone(),
        );
        let approval_steps = Family::<Labels, Counter>::default();
        registry.register(
            "approval_steps",
            "Approve/reject steps on held transfers by action (approve, reject) and outcome (accepted, denied by policy, refused by the ledger)",
            approval_steps.clone(),
        );
        let approvals_expired = Counter::default();
        registry.register(
            "approvals_expired",
            "Held transfers expired by the sweeper (reservation released)",
            approvals_expired.clone(),
        );
        let approval_sweep_failures = Counter::default();
        registry.register(
            "approval_sweep_failures",
            "Expiry sweeps that failed (store unavailable); the next sweep retries",
            approval_sweep_failures.clone(),
        );
        Metrics {
            policy_reloads,
            approval_steps,
            approvals_expired,
            approval_sweep_failures,
            registry,
            http_request_duration,
            decisions,
            decision_reasons,
            policy_evaluation_duration,
            ledger_commit_duration,
            audit_backlog_records,
            outbox_backlog_records,
            kafka_records_published,
            kafka_publish_failures,
            tls_handshake_failures,
            policy_bundle_info,
        }
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Exposes the active bundle as the only series of `policy_bundle_info`.
    pub fn set_policy_bundle(&self, revision: &str, evaluator: crate::policy::Evaluator) {
        self.policy_bundle_info.clear();
        self.policy_bundle_info
            .get_or_create(&vec![
                ("revision", revision.to_owned()),
                ("evaluator", format!("{evaluator:?}").to_lowercase()),
            ])
            .set(1);
    }

    /// One approve/reject step: `outcome` is `accepted`, `denied` (policy) or `refused`
    /// (ledger).
    pub fn record_approval_step(&self, action: &str, outcome: &str) {
        self.approval_steps
            .get_or_create(&vec![
                ("action", action.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    pub fn record_decision(&self, action: &str, outcome: &str, reason_codes: &[String]) {
        self.decisions
            .get_or_create(&vec![
                ("action", action.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        for code in reason_codes {
            self.decision_reasons
                .get_or_create(&vec![("reason", code.clone())])
                .inc();
        }
    }
}
