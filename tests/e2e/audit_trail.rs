//! The audit trail: the chain verifies through the real `countersign audit verify` binary,
//! a single edited record is named by its sequence number, and the decision log file holds
//! every record after a clean shutdown.

use std::process::Command;

use serde_json::Value;

use crate::support::{ALICE, BOB, TestApp, transfer};

fn verify(database: &std::path::Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["audit", "verify", "--store"])
        .arg(format!("sqlite://{}", database.display()))
        .output()
        .expect("countersign runs");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn chain_verifies_and_an_edited_record_is_named() {
    let app = TestApp::spawn().await;
    app.open_account(ALICE, "EUR", "5000.00").await;
    app.open_account(BOB, "EUR", "0").await;
    for index in 0..5 {
        let (status, _) = app
            .post_transfer(&format!("a-{index}"), &transfer(ALICE, BOB, "10.00"))
            .await;
        assert_eq!(status, 201);
    }
    let (status, denied) = app
        .post_transfer("a-deny", &transfer(ALICE, BOB, "4999999.00"))
        .await;
    assert_eq!(status, 403);
    let total = app.audit_count().await;
    let database = app.database_path();
    let directory = app.stop().await;

    // Every record reached the decision log, with OPA's event fields.
    let log = std::fs::read_to_string(directory.path().join("decision-log.jsonl")).unwrap();
    let events: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len() as i64, total);
    let denial = events
        .iter()
        .find(|event| event["decision_id"] == denied["decision_id"])
        .expect("denial in the decision log");
    assert_eq!(denial["result"]["allow"], false);
    assert!(denial["bundles"].is_object());
    // Account numbers are masked to their last four characters in the trail.
    let masked = denial["input"]["transfer"]["debit_account"]
        .as_str()
        .unwrap();
    assert!(
        masked.ends_with("3000") && masked.starts_with("****"),
        "{masked}"
    );
    assert!(
        !log.contains(ALICE),
        "a full account number leaked into the decision log"
    );

    let (code, output) = verify(&database);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains(&format!("{total} records verified")),
        "{output}"
    );

    // Turn the denial into an allow, as a rogue operator might.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", database.display()))
        .await
        .unwrap();
    let sequence: i64 =
        sqlx::query_scalar("SELECT sequence FROM audit_records WHERE decision_id = ?")
            .bind(denied["decision_id"].as_str().unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    // The table refuses UPDATE through triggers; a rogue operator with file access drops them.
    sqlx::query("DROP TRIGGER audit_records_no_update")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_records SET outcome = 'allow' WHERE sequence = ?")
        .bind(sequence)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (code, output) = verify(&database);
    assert_ne!(code, 0, "{output}");
    assert!(output.contains(&format!("sequence {sequence}")), "{output}");
}
