//! The OPA-compatible Data API over mTLS.

use serde_json::{Value, json};

use crate::support::TestApp;

async fn post_data(app: &TestApp, role: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app
        .client(role)
        .post(format!("{}/v1/data/{path}", app.base_url));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_clients_query_documents_as_they_would_ask_opa() {
    let app = TestApp::spawn().await;
    let records_before = app.audit_count().await;

    // A rule: the transfer decision for an input that is missing everything.
    let (status, body) = post_data(
        &app,
        "policy_client",
        "countersign/transfer/decision",
        Some(json!({"input": {"action": "transfer.create"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["allow"], false);
    assert!(body["decision_id"].is_string());

    // A data document (not a rule) from data.json.
    let (status, body) = post_data(
        &app,
        "policy_client",
        "countersign/config/initiator_roles",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], json!(["channel", "teller"]));

    // Undefined: 200 without a result, as OPA answers.
    let (status, body) = post_data(
        &app,
        "policy_client",
        "countersign/transfer/no_such_rule",
        Some(json!({"input": {}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("result").is_none(), "{body}");
    assert!(body["decision_id"].is_string());

    // Every answer is in the audit trail.
    assert_eq!(app.audit_count().await, records_before + 3);
    let records = app
        .state
        .store
        .read_sealed_after(records_before, 10)
        .await
        .unwrap();
    assert!(
        records
            .iter()
            .all(|sealed| sealed.record.action == "policy.data")
    );
    assert_eq!(records[0].record.outcome, countersign_audit::Outcome::Deny);

    // OPA's health endpoint.
    let response = app
        .client("policy_client")
        .get(format!("{}/health", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_without_the_role_and_bad_paths_are_refused() {
    let app = TestApp::spawn().await;
    let records_before = app.audit_count().await;
    let (status, body) = post_data(
        &app,
        "channel",
        "countersign/transfer/decision",
        Some(json!({"input": {}})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "role.required");
    let (status, body) = post_data(
        &app,
        "policy_client",
        "countersign/trans-fer",
        Some(json!({"input": {}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "path.invalid");
    let (status, body) = post_data(
        &app,
        "policy_client",
        "countersign/transfer/decision",
        Some(json!({"input": {}, "unknown": 1})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(app.audit_count().await, records_before);
    app.stop().await;
}
