//! Decision-log masking the OPA way: a `system.log.mask` rule in the bundle erases and upserts
//! paths of the recorded input and result; a failing mask still writes the record, with the
//! whole input erased and the error noted.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{ALICE, BOB, TestApp, all_records, bundle_path, copy_tree, transfer};

/// Our bundle plus `system/log/mask.rego` with `mask_body`, and `system` added to the roots.
fn bundle_with_mask(directory: &Path, mask_body: &str) -> PathBuf {
    let bundle = directory.join("bundle");
    copy_tree(&bundle_path(), &bundle);
    let manifest_path = bundle.join(".manifest");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["roots"]
        .as_array_mut()
        .unwrap()
        .push(Value::from("system/log"));
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    std::fs::create_dir_all(bundle.join("system/log")).unwrap();
    std::fs::write(
        bundle.join("system/log/mask.rego"),
        format!("package system.log\n\n{mask_body}\n"),
    )
    .unwrap();
    bundle
}

async fn spawn_with_mask(mask_body: &str) -> (TestApp, tempfile::TempDir) {
    let scratch = tempfile::TempDir::new().unwrap();
    let bundle = bundle_with_mask(scratch.path(), mask_body);
    let app = TestApp::spawn_with(|config| config.policy.bundle = bundle).await;
    app.open_account(ALICE, "EUR", "5000.00").await;
    app.open_account(BOB, "EUR", "0").await;
    (app, scratch)
}

fn decision_record<'a>(
    records: &'a [countersign_audit::SealedRecord],
    decision_id: &Value,
) -> &'a countersign_audit::NewRecord {
    let decision_id = decision_id.as_str().expect("decision_id in the response");
    &records
        .iter()
        .find(|sealed| {
            sealed.record.kind == countersign_audit::RecordKind::Decision
                && sealed.record.decision_id.to_string() == decision_id
        })
        .expect("the decision is in the trail")
        .record
}

#[tokio::test(flavor = "multi_thread")]
async fn mask_rule_erases_and_upserts_and_the_log_says_so() {
    let (app, _scratch) = spawn_with_mask(
        r#"
mask contains "/input/transfer/purpose"
mask contains "/input/no/such/path"
mask contains {"op": "upsert", "path": "/input/subject/common_name", "value": "[masked]"}
mask contains "/result/reasons" if input.result.allow == false
"#,
    )
    .await;
    let mut body = transfer(ALICE, BOB, "10.00");
    body["purpose"] = Value::from("SALA");
    let (status, posted) = app.post_transfer("m-1", &body).await;
    assert_eq!(status, 201, "{posted}");
    let (status, denied) = app
        .post_transfer("m-2", &transfer(ALICE, BOB, "4999999.00"))
        .await;
    assert_eq!(status, 403, "{denied}");
    // The caller still sees the reasons; only the logged copy is masked.
    assert!(denied["reasons"].as_array().is_some_and(|r| !r.is_empty()));

    let records = all_records(&app).await;
    let allowed = decision_record(&records, &posted["decision_id"]);
    assert_eq!(allowed.masked_input["transfer"].get("purpose"), None);
    assert_eq!(allowed.masked_input["subject"]["common_name"], "[masked]");
    assert_eq!(allowed.result["allow"], true);
    // Only what was there is listed as erased, in OPA's order of application.
    assert_eq!(allowed.redaction.erased, ["/input/transfer/purpose"]);
    assert_eq!(allowed.redaction.masked, ["/input/subject/common_name"]);
    assert_eq!(allowed.redaction.error, None);
    // The built-in masking still applies on top of the bundle's.
    assert_eq!(
        allowed.masked_input["transfer"]["debit_account"],
        "******************3000"
    );

    let refused = decision_record(&records, &denied["decision_id"]);
    assert_eq!(refused.result["allow"], false);
    assert_eq!(refused.result.get("reasons"), None);
    assert!(
        refused
            .redaction
            .erased
            .contains(&"/result/reasons".to_owned())
    );

    let directory = app.stop().await;
    let log = std::fs::read_to_string(directory.path().join("decision-log.jsonl")).unwrap();
    let event: Value = log
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|event| event["decision_id"] == posted["decision_id"])
        .expect("the decision is in the decision log");
    assert_eq!(
        event["erased"],
        serde_json::json!(["/input/transfer/purpose"])
    );
    assert_eq!(
        event["masked"],
        serde_json::json!(["/input/subject/common_name"])
    );
    assert_eq!(event["input"]["transfer"].get("purpose"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_mask_still_writes_the_record_with_the_input_erased() {
    // A pointer outside /input and /result is an error in OPA, which then drops the event.
    let (app, _scratch) = spawn_with_mask(r#"mask contains "/data/secret""#).await;
    let (status, posted) = app
        .post_transfer("f-1", &transfer(ALICE, BOB, "10.00"))
        .await;
    assert_eq!(
        status, 201,
        "a mask failure never blocks the decision: {posted}"
    );
    let records = all_records(&app).await;
    let record = decision_record(&records, &posted["decision_id"]);
    assert_eq!(record.masked_input, Value::Null);
    assert_eq!(record.redaction.erased, ["/input"]);
    let error = record
        .redaction
        .error
        .as_deref()
        .expect("the error is noted");
    assert!(error.contains("/data/secret"), "{error}");
    assert_eq!(record.result["allow"], true);

    let directory = app.stop().await;
    let log = std::fs::read_to_string(directory.path().join("decision-log.jsonl")).unwrap();
    let event: Value = log
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|event| event["decision_id"] == posted["decision_id"])
        .expect("the decision is in the decision log");
    assert_eq!(
        event.get("input"),
        None,
        "an erased input is absent: {event}"
    );
    assert_eq!(event["erased"], serde_json::json!(["/input"]));
    assert!(event["countersign"]["mask_error"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mask_rule_that_does_not_compile_refuses_the_bundle() {
    let scratch = tempfile::TempDir::new().unwrap();
    let bundle = bundle_with_mask(scratch.path(), "mask contains x if { x := }");
    let config = crate::support::test_config(scratch.path(), bundle);
    let error = countersign::policy::Bundle::load(&config.policy.bundle)
        .and_then(|bundle| {
            countersign::policy::PolicyEngine::compile(
                &bundle,
                countersign::policy::TRANSFER_DECISION,
                std::time::Duration::from_secs(1),
            )
        })
        .expect_err("a broken mask rule is a broken bundle");
    assert!(error.to_string().contains("mask.rego"), "{error}");
}
