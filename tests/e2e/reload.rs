//! Hot reload: 20 swaps under load fail no request; a broken bundle and a bundle whose own
//! tests fail are refused while the active one keeps serving; file changes are picked up.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::Value;

use crate::support::{TestApp, bundle_path, copy_tree, readiness, transfer};

const LOAD_CLIENTS: usize = 8;
const SWAPS: usize = 20;

fn bundle_copy(directory: &Path, revision: &str) -> PathBuf {
    let bundle = directory.join("bundle");
    copy_tree(&bundle_path(), &bundle);
    set_revision(&bundle, revision);
    bundle
}

fn set_revision(bundle: &Path, revision: &str) {
    let manifest =
        serde_json::json!({"revision": revision, "roots": ["countersign"], "rego_version": 1});
    std::fs::write(bundle.join(".manifest"), manifest.to_string()).unwrap();
}

async fn reload(app: &TestApp) -> (u16, Value) {
    let response = app
        .client("admin")
        .post(format!("{}/v1/admin/policy/reload", app.base_url))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn account(index: usize) -> String {
    format!("DE{:020}", 7_000 + index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_the_bundle_under_load_fails_no_request() {
    let scratch = tempfile::TempDir::new().unwrap();
    let bundle = bundle_copy(scratch.path(), "rev-0");
    let app = Arc::new(
        TestApp::spawn_with(|config| {
            config.policy.bundle = bundle.clone();
            // Swaps are driven through the admin endpoint here; the watcher has its own test.
            config.policy.watch = false;
        })
        .await,
    );
    for index in 0..LOAD_CLIENTS * 2 {
        app.open_account(&account(index), "EUR", "1000000.00").await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client_index in 0..LOAD_CLIENTS {
        let app = app.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut sequence = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = transfer(
                    &account(client_index * 2),
                    &account(client_index * 2 + 1),
                    "1.00",
                );
                let (status, _) = app
                    .post_transfer(&format!("load-{client_index}-{sequence}"), &body)
                    .await;
                statuses.push(status);
                sequence += 1;
            }
            statuses
        }));
    }

    for swap in 1..=SWAPS {
        let revision = format!("rev-{swap}");
        set_revision(&bundle, &revision);
        let (status, body) = reload(&app).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["revision"], revision);
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        let statuses = client.await.unwrap();
        assert!(statuses.iter().all(|status| *status == 201), "{statuses:?}");
        total += statuses.len();
    }
    assert!(
        total >= LOAD_CLIENTS,
        "the clients must have sent transfers during the swaps"
    );

    // The trail shows the decisions of more than one revision.
    let records = crate::support::all_records(&app).await;
    let mut revisions: Vec<&str> = records
        .iter()
        .filter(|sealed| sealed.record.action == "transfer.create")
        .map(|sealed| sealed.record.bundle_revision.as_str())
        .collect();
    revisions.sort();
    revisions.dedup();
    assert!(revisions.len() >= 2, "{revisions:?}");
    let reloads = records
        .iter()
        .filter(|sealed| sealed.record.action == "policy.reload")
        .count();
    assert_eq!(reloads, SWAPS);

    // A bundle that does not compile is refused; the active one keeps serving.
    let broken = bundle.join("countersign/transfer/broken.rego");
    std::fs::write(&broken, "package countersign.transfer\n\nbroken := {\n").unwrap();
    let (status, body) = reload(&app).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "policy.reload_refused");
    assert!(
        body["message"].as_str().unwrap().contains("broken.rego"),
        "{body}"
    );
    let ready = readiness(&app).await.1;
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["policy"]["revision"], format!("rev-{SWAPS}"));
    assert!(
        ready["policy"]["last_reload"]["last_error"].is_string(),
        "{ready}"
    );
    let (status, _) = app
        .post_transfer("after-broken", &transfer(&account(0), &account(1), "1.00"))
        .await;
    assert_eq!(status, 201);
    std::fs::remove_file(&broken).unwrap();

    // A bundle whose own tests fail is refused too (beyond OPA).
    let failing = bundle.join("countersign/transfer/extra_test.rego");
    std::fs::write(
        &failing,
        "package countersign.transfer_extra_test\n\nimport data.countersign.transfer\n\ntest_everything_is_allowed if {\n\ttransfer.decision.allow with input as {}\n}\n",
    )
    .unwrap();
    set_revision(&bundle, "rev-failing-tests");
    let (status, body) = reload(&app).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("test_everything_is_allowed"),
        "{body}"
    );
    assert_eq!(
        readiness(&app).await.1["policy"]["revision"],
        format!("rev-{SWAPS}")
    );
    std::fs::remove_file(&failing).unwrap();

    // Fixed: it activates, and the error is cleared.
    set_revision(&bundle, "rev-fixed");
    let (status, body) = reload(&app).await;
    assert_eq!(status, 200, "{body}");
    let ready = readiness(&app).await.1;
    assert_eq!(ready["policy"]["revision"], "rev-fixed");
    assert!(
        ready["policy"]["last_reload"]["last_error"].is_null(),
        "{ready}"
    );
    let metrics = app.state.metrics.encode();
    assert!(
        metrics
            .contains("countersign_policy_reloads_total{trigger=\"admin\",result=\"refused\"} 2"),
        "{metrics}"
    );
    Arc::into_inner(app).expect("sole owner").stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_bundle_file_is_picked_up_by_the_watcher() {
    let scratch = tempfile::TempDir::new().unwrap();
    let bundle = bundle_copy(scratch.path(), "watched-1");
    let app = TestApp::spawn_with(|config| {
        config.policy.bundle = bundle.clone();
        config.policy.watch_debounce_ms = 50;
    })
    .await;
    assert_eq!(readiness(&app).await.1["policy"]["revision"], "watched-1");
    set_revision(&bundle, "watched-2");
    // Event-driven; the bound only keeps a broken watcher from hanging the suite.
    let mut revision = Value::Null;
    for _ in 0..200 {
        revision = readiness(&app).await.1["policy"]["revision"].clone();
        if revision == "watched-2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(revision, "watched-2");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_admins_can_reload() {
    let app = TestApp::spawn().await;
    let response = app
        .client("channel")
        .post(format!("{}/v1/admin/policy/reload", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    app.stop().await;
}
