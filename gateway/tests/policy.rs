//! The Rego bundle in policies/: its own `_test.rego` tests pass under regorus, and the
//! bytecode VM that serves decisions agrees with the interpreter on a generated corpus.
#![forbid(unsafe_code)]

use std::{path::Path, time::Duration};

use countersign::policy::{
    Bundle, Evaluator, Module, PolicyEngine, TRANSFER_DECISION, run_bundle_tests,
};
use serde_json::{Value, json};

fn bundle() -> Bundle {
    Bundle::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")).expect("bundle loads")
}

#[test]
fn rego_unit_tests_pass() {
    let outcomes = run_bundle_tests(&bundle()).unwrap();
    assert!(
        outcomes.len() >= 25,
        "expected the bundle's tests, found {}",
        outcomes.len()
    );
    let failed: Vec<_> = outcomes.iter().filter(|outcome| !outcome.passed).collect();
    assert!(failed.is_empty(), "failing Rego tests: {failed:#?}");
}

#[test]
fn a_failing_rego_test_is_reported() {
    // The runner must be able to fail: a copy of the bundle with one broken expectation.
    let mut broken = bundle();
    broken.modules.push(Module::v1(
        "broken_test.rego",
        "package countersign.broken_test\n\ntest_always_false if { 1 == 2 }\n\ntest_fine if { true }\n",
    ));
    let outcomes = run_bundle_tests(&broken).unwrap();
    let by_name = |name: &str| outcomes.iter().find(|o| o.name == name).unwrap().passed;
    assert!(!by_name("data.countersign.broken_test.test_always_false"));
    assert!(by_name("data.countersign.broken_test.test_fine"));
}

/// A small xorshift generator: deterministic corpus, no extra dependency.
struct Corpus(u64);

impl Corpus {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

fn generated_input(corpus: &mut Corpus) -> Value {
    let currency = *corpus.pick(&["EUR", "USD", "GBP", "JPY", "CHF", "SEK"]);
    let amounts: [i64; 11] = [
        1,
        99_999_999,
        100_000_000,
        100_000_001,
        499_999_999,
        500_000_000,
        1_000_000,
        1_000_001,
        200_000_000,
        1_000_000_001,
        5_000_000_001,
    ];
    let amount_minor = *corpus.pick(&amounts);
    let accounts = [
        "DE89370400440532013000",
        "FR1420041010050500013M02606",
        "IR062960000000100324200001",
        "KP0000000000000000",
        "GB29NWBK60161331926819",
    ];
    let debit = *corpus.pick(&accounts);
    let credit = *corpus.pick(&accounts);
    let account = |corpus: &mut Corpus, id: &str| {
        let balance_minor = *corpus.pick(&[0_i64, 50, 100_000_000, 900_000_000, 9_000_000_000]);
        let debited_today_minor = *corpus.pick(&[0_i64, 400_000_000, 499_999_999]);
        let reserved_minor = *corpus.pick(&[0_i64, 0, 50, 200_000_000]);
        json!({
            "id": id,
            "status": *corpus.pick(&["active", "active", "active", "frozen", "closed"]),
            "currency": currency,
            "overdraft_allowed": *corpus.pick(&[false, false, true]),
            "balance": balance_minor.to_string(),
            "balance_minor": balance_minor,
            "debited_today": debited_today_minor.to_string(),
            "debited_today_minor": debited_today_minor,
            "reserved": reserved_minor.to_string(),
            "reserved_minor": reserved_minor,
            "available": (balance_minor - reserved_minor).to_string(),
            "available_minor": balance_minor - reserved_minor,
        })
    };
    let roles: &[&[&str]] = &[
        &["channel"],
        &["teller"],
        &["auditor"],
        &[],
        &["approver", "teller"],
    ];
    json!({
        "action": "transfer.create",
        "transfer": {
            "id": "00000000-0000-0000-0000-000000000000",
            "debit_account": debit,
            "credit_account": credit,
            "amount": amount_minor.to_string(),
            "amount_minor": amount_minor,
            "currency": currency,
            "currency_minor_units": if currency == "JPY" { 0 } else { 2 },
            "end_to_end_id": null,
            "purpose": null,
            "remittance_info": null,
        },
        "subject": {
            "common_name": "corpus",
            "organization": [],
            "organizational_units": [],
            "san_uris": [],
            "serial": "01",
            "fingerprint_sha256": "00",
            "roles": *corpus.pick(roles),
        },
        "accounts": {"debit": account(corpus, debit), "credit": account(corpus, credit)},
        "context": {
            "time": "2026-11-26T12:00:00Z",
            "request_id": "r",
            "channel": "corpus",
            "audit": {"enabled": *corpus.pick(&[true, true, true, false])},
        },
    })
}

#[test]
fn vm_and_interpreter_agree_on_a_generated_corpus() {
    let engine =
        PolicyEngine::compile(&bundle(), TRANSFER_DECISION, Duration::from_secs(5)).unwrap();
    assert_eq!(
        engine.evaluator(),
        Evaluator::Vm,
        "the VM must serve the shipped bundle"
    );
    let mut corpus = Corpus(0x0ddba11);
    let mut allowed = 0;
    let mut held = 0;
    for case in 0..2_000 {
        let input = generated_input(&mut corpus);
        let vm = engine.evaluate(&input).expect("VM decides");
        let interpreter = engine
            .evaluate_interpreter(&input)
            .expect("interpreter decides");
        assert_eq!(vm, interpreter, "case {case}: input {input}");
        if vm["allow"] == true {
            allowed += 1;
            if vm["obligations"][0]["type"] == "require_approval" {
                held += 1;
            }
        }
    }
    assert!(
        allowed > 20 && held > 5,
        "corpus should contain allowed and held transfers, got {allowed} allowed, {held} held"
    );
    // Degenerate inputs still get a decision (deny), never an undefined result.
    for input in [
        json!({}),
        json!({"transfer": {"amount_minor": "x"}}),
        json!(null),
    ] {
        let decision = engine.evaluate(&input).expect("defined");
        assert_eq!(decision["allow"], false, "{input}");
        assert_eq!(engine.evaluate_interpreter(&input).unwrap(), decision);
    }
}

fn generated_approval_input(corpus: &mut Corpus) -> Value {
    let fingerprints = ["aa".repeat(32), "bb".repeat(32), "cc".repeat(32)];
    let approver = corpus.pick(&fingerprints).clone();
    let initiator = corpus.pick(&fingerprints).clone();
    let earlier = corpus.pick(&fingerprints).clone();
    let roles: &[&[&str]] = &[&["approver"], &["teller"], &[], &["auditor", "approver"]];
    let amount_minor =
        *corpus.pick(&[100_000_001_i64, 2_000_000_000, 5_000_000_000, 5_000_000_001]);
    let approvals = if corpus.next().is_multiple_of(2) {
        json!([])
    } else {
        json!([{"fingerprint_sha256": earlier, "common_name": "x", "decision_id": "d", "at": "2026-11-26T11:00:00Z"}])
    };
    json!({
        "action": *corpus.pick(&["approve", "approve", "reject", "delete"]),
        "approver": {"fingerprint_sha256": approver, "common_name": "approver", "roles": *corpus.pick(roles)},
        "initiator": {"fingerprint_sha256": initiator, "common_name": "teller"},
        "transfer": {
            "id": "t", "debit_account": "DE89370400440532013000",
            "credit_account": "FR1420041010050500013M02606",
            "amount": amount_minor.to_string(), "amount_minor": amount_minor,
            "currency": *corpus.pick(&["EUR", "JPY", "SEK"]), "currency_minor_units": 2,
            "end_to_end_id": null, "purpose": null, "remittance_info": null,
        },
        "approval": {
            "id": "a", "status": *corpus.pick(&["pending", "pending", "posted", "expired"]),
            "approvals_required": *corpus.pick(&[1, 2]), "approver_roles": ["approver"],
            "approvals": approvals, "expires_at": "2026-11-27T12:00:00Z",
            "initiation_decision_id": "d0",
        },
        "comment": *corpus.pick(&[json!(null), json!("ok"), json!(5)]),
        "context": {
            "time": "2026-11-26T12:00:00Z", "request_id": "r", "source_address": "127.0.0.1:1",
            "audit": {"enabled": *corpus.pick(&[true, true, true, false])},
        },
    })
}

#[test]
fn the_approval_decision_agrees_between_vm_and_interpreter() {
    let engine =
        PolicyEngine::compile(&bundle(), TRANSFER_DECISION, Duration::from_secs(5)).unwrap();
    let approval = engine
        .for_entrypoint("data.countersign.approval.decision")
        .unwrap();
    assert_eq!(approval.evaluator(), Evaluator::Vm);
    let mut corpus = Corpus(0x5eed);
    let mut allowed = 0;
    for case in 0..2_000 {
        let input = generated_approval_input(&mut corpus);
        let vm = approval.evaluate(&input).expect("VM decides");
        let interpreter = approval
            .evaluate_interpreter(&input)
            .expect("interpreter decides");
        assert_eq!(vm, interpreter, "case {case}: input {input}");
        if vm["allow"] == true {
            allowed += 1;
        }
    }
    assert!(
        allowed > 20,
        "corpus should contain allowed steps, got {allowed}"
    );
}

#[test]
fn a_slow_policy_times_out() {
    let mut slow = bundle();
    slow.modules.push(Module::v1(
        "slow.rego",
        "package slow\n\ndecision := count([1 | some i in numbers.range(1, 5000); some j in numbers.range(1, 5000)])\n",
    ));
    let engine =
        PolicyEngine::compile(&slow, "data.slow.decision", Duration::from_millis(20)).unwrap();
    let error = engine.evaluate(&json!({})).expect_err("must time out");
    assert_eq!(error.code(), "policy.timeout", "{error}");
    let error = engine
        .evaluate_interpreter(&json!({}))
        .expect_err("the interpreter must time out too");
    assert_eq!(error.code(), "policy.timeout", "{error}");
}

#[test]
fn proxy_decision_runs_on_the_vm_as_a_sibling_and_agrees_with_the_interpreter() {
    let engine =
        PolicyEngine::compile(&bundle(), TRANSFER_DECISION, Duration::from_millis(500)).unwrap();
    let proxy = engine
        .for_entrypoint("data.countersign.proxy.decision")
        .unwrap();
    assert_eq!(proxy.evaluator(), Evaluator::Vm);
    assert_eq!(proxy.revision(), engine.revision());
    // Compiled once per bundle: the second ask returns the same engine.
    let again = engine
        .for_entrypoint("data.countersign.proxy.decision")
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(&proxy, &again));
    assert!(
        engine
            .for_entrypoint("data.countersign.nope.decision")
            .is_err()
    );
    let request = |role: &str, method: &str, route: &str| {
        json!({
            "action": format!("proxy.{route}"),
            "route": {"name": route, "path_prefix": "/documents"},
            "attributes": {"request": {"http": {
                "method": method, "path": "/documents/1?a=b", "query": "a=b",
                "headers": {"accept": "*/*"},
            }}},
            "subject": {"roles": [role]},
            "context": {"audit": {"enabled": true}},
        })
    };
    for (input, allow) in [
        (request("channel", "GET", "documents"), true),
        (request("teller", "PUT", "documents"), true),
        (request("auditor", "GET", "documents"), false),
        (request("channel", "DELETE", "documents"), false),
        (request("channel", "GET", "elsewhere"), false),
        (json!({}), false),
        (json!(null), false),
    ] {
        let decision = proxy.evaluate(&input).expect("defined");
        assert_eq!(decision["allow"], allow, "{input}: {decision}");
        assert_eq!(proxy.evaluate_interpreter(&input).unwrap(), decision);
    }
}
