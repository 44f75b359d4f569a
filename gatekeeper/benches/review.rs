//! `cargo bench -p countersign-gatekeeper --bench review` — measured, never asserted.
//!
//! Our own templates and constraints (`gatekeeper/policies/`, seven constraints) on one
//! Deployment, as the admission webhook and `gatekeeper test` evaluate it:
//! 1. loading and compiling the policies (what `Gateway::build` and `gatekeeper test` pay once);
//! 2. one review of a compliant Deployment with an inventory holding its PodDisruptionBudget
//!    (`gatekeeper test`), and without inventory (the webhook: the referential constraint is
//!    skipped), on one thread: p50 / p99;
//! 3. a Deployment violating five constraints (messages formatted);
//! 4. reviews/s with one thread per core sharing one `PolicySet`;
//! 5. `gatekeeper verify gatekeeper/` (the 105 cases of `gatekeeper/suite.yaml`) in-process.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs a tiny smoke version, so
//! the benchmark is compiled and exercised by the test suite without slowing it down.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use countersign_gatekeeper::{Inventory, PolicySet, Review, suite};
use serde_json::{Value, json};

struct Scale {
    loads: usize,
    reviews: usize,
    verifies: usize,
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn micros(duration: Duration) -> String {
    format!("{:.1} µs", duration.as_secs_f64() * 1e6)
}

fn labels() -> Value {
    json!({"app": "countersign", "owner": "payments-platform", "data-classification": "confidential"})
}

/// A Deployment that passes every one of our constraints (like `deploy/overlays/prod`).
fn compliant_deployment() -> Value {
    let container = json!({
        "name": "gateway",
        "image": format!("registry.bank.example/countersign/countersign:0.1.0@sha256:{}", "ab".repeat(32)),
        "resources": {
            "requests": {"cpu": "500m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "512Mi"},
        },
        "securityContext": {
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
        },
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 9090}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 9090}},
    });
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "countersign", "namespace": "countersign", "labels": labels()},
        "spec": {
            "replicas": 10,
            "selector": {"matchLabels": {"app": "countersign"}},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 10001},
                    "affinity": {"podAntiAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [{
                            "labelSelector": {"matchLabels": {"app": "countersign"}},
                            "topologyKey": "kubernetes.io/hostname",
                        }],
                    }},
                    "containers": [container],
                },
            },
        },
    })
}

/// Unlabelled, unpinned image from elsewhere, no resources, root, no probes, no anti-affinity.
fn non_compliant_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "legacy", "namespace": "payments"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "legacy"}},
            "template": {
                "metadata": {"labels": {"app": "legacy"}},
                "spec": {"containers": [{"name": "legacy", "image": "docker.io/library/nginx:latest"}]},
            },
        },
    })
}

fn inventory() -> Inventory {
    let mut inventory = Inventory::new();
    inventory
        .add(&json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "countersign", "namespace": "countersign", "labels": labels()},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "countersign"}}},
        }))
        .expect("the PodDisruptionBudget is a valid inventory object");
    inventory
}

fn load() -> PolicySet {
    PolicySet::load_paths(&[repository().join("gatekeeper/policies")])
        .expect("gatekeeper/policies loads")
}

/// Reviews `object` `count` times; each duration sorted. Asserts the expected verdict once, so
/// a policy change cannot turn the benchmark into a measurement of something else.
fn time_reviews(
    policies: &PolicySet,
    object: &Value,
    inventory: Option<&Inventory>,
    count: usize,
    expected_violations: usize,
) -> Vec<Duration> {
    let review = Review::from_object(object).expect("a valid object");
    // With an inventory, `gatekeeper test`'s evaluation; without, the webhook's.
    let evaluate = |review: &Review| match inventory {
        Some(inventory) => policies.review(review, Some(inventory)),
        None => policies.review_admission(review),
    };
    let outcome = evaluate(&review).expect("review");
    assert_eq!(
        outcome.violations.len(),
        expected_violations,
        "{:#?}",
        outcome.violations
    );
    let mut durations = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let outcome = evaluate(&review).expect("review");
        durations.push(started.elapsed());
        std::hint::black_box(outcome);
    }
    durations.sort();
    durations
}

fn main() {
    let measuring = std::env::args().any(|argument| argument == "--bench");
    let scale = if measuring {
        Scale {
            loads: 20,
            reviews: 5_000,
            verifies: 20,
        }
    } else {
        Scale {
            loads: 1,
            reviews: 10,
            verifies: 1,
        }
    };

    let mut loads = Vec::with_capacity(scale.loads);
    for _ in 0..scale.loads {
        let started = Instant::now();
        std::hint::black_box(load());
        loads.push(started.elapsed());
    }
    loads.sort();
    let policies = Arc::new(load());
    println!(
        "load + compile gatekeeper/policies ({} templates, {} constraints): p50 {:.2} ms, max {:.2} ms",
        policies.templates().count(),
        policies.constraints().count(),
        percentile(&loads, 0.5).as_secs_f64() * 1e3,
        percentile(&loads, 1.0).as_secs_f64() * 1e3,
    );

    let inventory = inventory();
    for (name, object, inventory, expected) in [
        (
            "compliant Deployment, inventory (gatekeeper test)",
            compliant_deployment(),
            Some(&inventory),
            0,
        ),
        (
            "compliant Deployment, no inventory (webhook)",
            compliant_deployment(),
            None,
            0,
        ),
        (
            "Deployment violating 6 constraints, no inventory",
            non_compliant_deployment(),
            None,
            // One violation per missing label/field: the count is what the policies say today.
            count_violations(&policies, &non_compliant_deployment()),
        ),
    ] {
        let durations = time_reviews(&policies, &object, inventory, scale.reviews, expected);
        println!(
            "review, {name}: p50 {}, p99 {}, {} reviews",
            micros(percentile(&durations, 0.5)),
            micros(percentile(&durations, 0.99)),
            durations.len(),
        );
    }

    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let review = Review::from_object(&compliant_deployment()).expect("a valid object");
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let policies = policies.clone();
            let review = review.clone();
            scope.spawn(move || {
                for _ in 0..scale.reviews {
                    std::hint::black_box(policies.review_admission(&review).expect("review"));
                }
            });
        }
    });
    let elapsed = started.elapsed();
    println!(
        "reviews/s, {threads} threads sharing one PolicySet (webhook path): {:.0}",
        (threads * scale.reviews) as f64 / elapsed.as_secs_f64()
    );

    let suite_path = repository().join("gatekeeper").display().to_string();
    let filter = suite::Filter::parse("").expect("the empty filter");
    let mut verifies = Vec::with_capacity(scale.verifies);
    let mut cases = 0;
    for _ in 0..scale.verifies {
        let started = Instant::now();
        let report = suite::verify(std::slice::from_ref(&suite_path), &filter).expect("verify");
        verifies.push(started.elapsed());
        assert!(report.passed(), "{}", report.render(false));
        cases = report.counts().cases;
    }
    verifies.sort();
    println!(
        "gatekeeper verify gatekeeper/ ({cases} cases): p50 {:.1} ms",
        percentile(&verifies, 0.5).as_secs_f64() * 1e3
    );
}

fn count_violations(policies: &PolicySet, object: &Value) -> usize {
    let review = Review::from_object(object).expect("a valid object");
    let outcome = policies.review_admission(&review).expect("review");
    let constraints: std::collections::BTreeSet<&str> = outcome
        .violations
        .iter()
        .map(|violation| violation.constraint_name.as_str())
        .collect();
    assert_eq!(constraints.len(), 6, "{:#?}", outcome.violations);
    outcome.violations.len()
}
