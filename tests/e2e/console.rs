//! The auditor console (issue 6, item 4) end to end: `/console` over real mTLS for auditors
//! only, with strict security headers; and the page itself in headless Chromium, driven by
//! `tests/browser/console.mjs` (Playwright presenting the auditor's client certificate)
//! against the real gateway: search, page, filter, open a record whose inclusion proof the
//! browser verifies, the outcome chart — then the screenshot is checked here, pixel by pixel.
//!
//! The browser test needs Node.js, Debian's Chromium and playwright-core, which `tests/run`
//! provisions (tests/services/browser.sh) and names in `COUNTERSIGN_NODE`,
//! `COUNTERSIGN_CHROMIUM` and `COUNTERSIGN_PLAYWRIGHT_DIR`. Without them it prints a note and
//! returns, and under `CI=true` it fails, as the service tests do (services.rs).

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::{ALICE, BOB, TestApp, all_records, transfer};

/// Bound on the Node script, browser start to screenshot (the script's own bound is 45 s).
const BROWSER_RUN_TIMEOUT_MS: u64 = 60_000;
/// Bound on the indexer and checkpointer covering the records this test wrote.
const INDEXED_WAIT_MS: u64 = 30_000;
/// Between two polls of the audit API while waiting for the checkpoint.
const POLL_INTERVAL_MS: u64 = 200;
/// The page's outcome colours (gateway/src/console/console.js, `OUTCOME_COLOURS`).
const ALLOW_RGB: [u8; 3] = [0x1b, 0x9e, 0x4b];
const DENY_RGB: [u8; 3] = [0xd7, 0x30, 0x1f];
const PENDING_RGB: [u8; 3] = [0xf2, 0xa9, 0x00];
/// The background of a verified proof status (console.css, `.proof[data-status="verified"]`).
const VERIFIED_RGB: [u8; 3] = [0xe6, 0xf5, 0xec];
/// Per channel: Chromium paints these flat fills exactly, this allows for colour management.
const COLOUR_TOLERANCE: u8 = 3;
/// The browser's viewport width (console.mjs); a full-page screenshot is this wide.
const VIEWPORT_WIDTH_PX: u32 = 1400;

// -------------------------------------------------------------------------------------------
// /console over mTLS
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn console_is_served_to_auditors_only_with_strict_security_headers() {
    let app = TestApp::spawn().await;

    for role in ["channel", "teller", "approver", "admin"] {
        for path in ["/console", "/console/console.js"] {
            let response = app
                .client(role)
                .get(format!("{}{path}", app.base_url))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 403, "{role} {path}");
            assert_security_headers(&response, &format!("{role} {path}"));
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "role.required", "{role} {path}: {body}");
            assert!(
                body["message"].as_str().unwrap().contains("auditor"),
                "{body}"
            );
        }
    }
    let response = app
        .client_with(&app.pki.roleless)
        .get(format!("{}/console", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);

    let auditor = app.client("auditor");
    let response = auditor
        .get(format!("{}/console", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_security_headers(&response, "auditor /console");
    assert_eq!(
        header(&response, "content-type"),
        "text/html; charset=utf-8"
    );
    let page = response.text().await.unwrap();
    assert!(
        page.contains(r#"<script src="/console/console.js" defer></script>"#),
        "{page}"
    );

    for (path, content_type, needle) in [
        (
            "/console/console.js",
            "text/javascript; charset=utf-8",
            "rootFromInclusionProof",
        ),
        ("/console/console.css", "text/css; charset=utf-8", "--allow"),
        ("/console/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let response = auditor
            .get(format!("{}{path}", app.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        assert_security_headers(&response, path);
        assert_eq!(header(&response, "content-type"), content_type, "{path}");
        assert!(response.text().await.unwrap().contains(needle), "{path}");
    }
    let response = auditor
        .get(format!("{}/console/secrets.txt", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_security_headers(&response, "/console/secrets.txt");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "console.not_found", "{body}");

    app.stop().await;
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn assert_security_headers(response: &reqwest::Response, what: &str) {
    let csp = header(response, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            csp.contains(directive),
            "{what}: CSP {csp:?} lacks {directive}"
        );
    }
    assert!(!csp.contains("unsafe"), "{what}: CSP {csp:?}");
    assert_eq!(
        header(response, "x-content-type-options"),
        "nosniff",
        "{what}"
    );
    assert_eq!(header(response, "cache-control"), "no-store", "{what}");
    assert_eq!(header(response, "x-frame-options"), "DENY", "{what}");
}

// -------------------------------------------------------------------------------------------
// The page in headless Chromium
// -------------------------------------------------------------------------------------------

/// Node.js, Chromium and playwright-core, as `tests/run` provisions them.
struct BrowserTools {
    node: PathBuf,
    chromium: PathBuf,
    playwright_dir: PathBuf,
}

impl BrowserTools {
    /// The tools from the environment (defaults: `node` on PATH, `/usr/bin/chromium`, the
    /// tests/run cache); `None` after a note when one is missing outside CI, a panic in CI.
    fn from_env() -> Option<BrowserTools> {
        let node = std::env::var_os("COUNTERSIGN_NODE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("node"));
        let chromium = std::env::var_os("COUNTERSIGN_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        let playwright_dir = std::env::var_os("COUNTERSIGN_PLAYWRIGHT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("COUNTERSIGN_TOOLS")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        Path::new(&std::env::var_os("HOME").unwrap_or_default())
                            .join(".cache/countersign-tools")
                    })
                    .join("node")
            });
        let node_runs = Command::new(&node)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        let missing = if !node_runs {
            Some(format!("Node.js ({}) does not run", node.display()))
        } else if !chromium.is_file() {
            Some(format!("no Chromium at {}", chromium.display()))
        } else if !playwright_dir
            .join("node_modules/playwright-core/package.json")
            .is_file()
        {
            Some(format!(
                "no playwright-core under {}",
                playwright_dir.display()
            ))
        } else {
            None
        };
        match missing {
            None => Some(BrowserTools {
                node,
                chromium,
                playwright_dir,
            }),
            Some(what) => {
                assert!(
                    !running_in_ci(),
                    "{what} and CI=true: the console's browser test needs it. Run the tests \
                     with `bash tests/run`, which installs Chromium and playwright-core \
                     (README, \"Tests\")."
                );
                eprintln!(
                    "note: {what}, so the browser test returns without running; `bash tests/run` \
                     installs the browser tools (with CI=true this is a failure)"
                );
                None
            }
        }
    }
}

fn running_in_ci() -> bool {
    std::env::var("CI")
        .map(|value| value.eq_ignore_ascii_case("true") || value == "1")
        .unwrap_or(false)
}

/// Where the screenshot is kept after the test (printed): `COUNTERSIGN_ARTIFACTS_DIR` if set,
/// else cargo's scratch directory for integration tests under `target/`.
fn artifacts_dir() -> PathBuf {
    let directory = std::env::var_os("COUNTERSIGN_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console"));
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

#[tokio::test(flavor = "multi_thread")]
async fn console_in_headless_chromium_searches_verifies_a_proof_and_charts_outcomes() {
    let Some(tools) = BrowserTools::from_env() else {
        return;
    };
    let app = TestApp::spawn_with(fast_checkpoints).await;

    // Decisions of three outcomes for the chart: allowed, denied, held for approval.
    app.open_account(ALICE, "EUR", "2500000.00").await;
    app.open_account(BOB, "EUR", "0").await;
    for index in 0..4 {
        let (status, body) = app
            .post_transfer(&format!("allow-{index}"), &transfer(ALICE, BOB, "100.00"))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    for index in 0..3 {
        // BOB holds 400.00: 5,000.00 is more than he has.
        let (status, body) = app
            .post_transfer(&format!("deny-{index}"), &transfer(BOB, ALICE, "5000.00"))
            .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["code"], "policy.denied", "{body}");
    }
    // Above the single-transfer limit from a teller: held for one approval (202, pending).
    let (status, body) = app
        .post_transfer_as("teller", "held-0", &transfer(ALICE, BOB, "2000000.00"))
        .await;
    assert_eq!(status, 202, "{body}");

    wait_until_checkpointed(&app, app.audit_count().await, 3).await;

    let directory = tempfile::TempDir::new().unwrap();
    let auditor = &app.pki.clients["auditor"];
    let certificate = directory.path().join("auditor.crt");
    let key = directory.path().join("auditor.key");
    let ca = directory.path().join("ca.crt");
    std::fs::write(&certificate, &auditor.certificate_pem).unwrap();
    std::fs::write(&key, &auditor.private_key_pem).unwrap();
    std::fs::write(&ca, &app.pki.ca_pem).unwrap();
    let artifacts = artifacts_dir();
    let screenshot = artifacts.join("console-e2e.png");
    let boxes_path = artifacts.join("console-e2e.json");
    let _ = std::fs::remove_file(&screenshot);
    let _ = std::fs::remove_file(&boxes_path);
    let records_before_browser = app.audit_count().await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser/console.mjs");
    let mut command = Command::new(&tools.node);
    command
        .arg(script)
        .args(["--origin", &app.base_url])
        .arg("--cert")
        .arg(&certificate)
        .arg("--key")
        .arg(&key)
        .arg("--screenshot")
        .arg(&screenshot)
        .arg("--boxes")
        .arg(&boxes_path)
        .args(["--expect-outcomes", "allow,deny,pending"])
        // Playwright's TLS proxy verifies the gateway with Node's CA store: trust the test CA
        // (no ignoreHTTPSErrors).
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .env("COUNTERSIGN_CHROMIUM", &tools.chromium)
        .env("COUNTERSIGN_PLAYWRIGHT_DIR", &tools.playwright_dir);
    let started = Instant::now();
    let (success, output) = tokio::task::spawn_blocking(move || run_bounded(command))
        .await
        .unwrap();
    println!(
        "console.mjs ({} ms):\n{output}",
        started.elapsed().as_millis()
    );
    assert!(success, "the browser test failed:\n{output}");
    println!("console screenshot: {}", screenshot.display());

    let boxes: Value = serde_json::from_slice(&std::fs::read(&boxes_path).unwrap()).unwrap();
    check_screenshot(&screenshot, &boxes);

    // The browser's searches and the record it opened are in the audit trail, as the
    // auditor's own.
    let records = all_records(&app).await;
    let by_browser = |action: &str| {
        records
            .iter()
            .filter(|record| record.sequence > records_before_browser)
            .filter(|record| record.record.action == action)
            .filter(|record| record.record.subject.common_name.as_deref() == Some("auditor-client"))
            .count()
    };
    assert!(by_browser("audit.query") >= 4, "searches audited");
    assert!(by_browser("audit.read") >= 1, "record read audited");

    app.stop().await;
}

/// The test gateway signs a checkpoint every second (with a key of its own when the harness
/// gave it none), so the records this test writes are provable within a poll or two.
fn fast_checkpoints(config: &mut countersign::config::Config) {
    let checkpoints = &mut config.audit.checkpoints;
    checkpoints.interval_seconds = 1;
    if checkpoints.signing_key_file.is_none() {
        // The test's own directory: the one the harness wrote the server certificate into.
        let directory = config.tls.server_cert.parent().unwrap().to_owned();
        let key = directory.join("console-checkpoint.key");
        let signer = countersign_audit::checkpoint::CheckpointSigner::generate().unwrap();
        std::fs::write(&key, signer.private_key_pem()).unwrap();
        checkpoints.signing_key_file = Some(key);
    }
}

/// Waits (bounded) until a signed checkpoint covers the first `records` records and the index
/// finds the `denied` deny decisions, polling the API as the auditor.
async fn wait_until_checkpointed(app: &TestApp, records: i64, denied: usize) {
    let auditor = app.client("auditor");
    let deadline = Instant::now() + Duration::from_millis(INDEXED_WAIT_MS);
    loop {
        let checkpoint = auditor
            .get(format!("{}/v1/audit/checkpoints/latest", app.base_url))
            .send()
            .await
            .unwrap();
        let checkpoint_status = checkpoint.status().as_u16();
        let checkpoint: Value = checkpoint.json().await.unwrap_or(Value::Null);
        let covered = checkpoint_status == 200
            && checkpoint["tree_size"]
                .as_i64()
                .is_some_and(|size| size >= records);
        let last = if covered {
            let denials: Value = auditor
                .get(format!(
                    "{}/v1/audit/records?kind=decision&outcome=deny&limit=100",
                    app.base_url
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let found = denials["records"].as_array().map_or(0, Vec::len);
            if found >= denied {
                return;
            }
            format!("checkpoint {checkpoint}; {found} deny records indexed")
        } else {
            format!("checkpoint {checkpoint_status} {checkpoint}")
        };
        assert!(
            Instant::now() < deadline,
            "no checkpoint covering {records} records with {denied} denials indexed within \
             {INDEXED_WAIT_MS} ms; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

/// Runs `command` with its output captured, killing it after `BROWSER_RUN_TIMEOUT_MS`.
fn run_bounded(mut command: Command) -> (bool, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_millis(BROWSER_RUN_TIMEOUT_MS);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    match status {
        Some(status) => (status.success(), output),
        None => (
            false,
            format!("{output}\nkilled after {BROWSER_RUN_TIMEOUT_MS} ms"),
        ),
    }
}

// -------------------------------------------------------------------------------------------
// The screenshot
// -------------------------------------------------------------------------------------------

/// An RGB image decoded from the PNG.
struct Image {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Image {
    fn read(path: &Path) -> Image {
        let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let mut decoder = png::Decoder::new(file);
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buffer).unwrap();
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("unexpected PNG colour type {other:?}"),
        };
        let rgb = buffer[..info.buffer_size()]
            .chunks_exact(channels)
            .flat_map(|pixel| [pixel[0], pixel[1], pixel[2]])
            .collect();
        Image {
            width: info.width,
            height: info.height,
            rgb,
        }
    }

    /// The pixels of a box from console.mjs (`{x, y, width, height}`), clipped to the image.
    fn pixels_in(&self, region: &Value) -> Vec<[u8; 3]> {
        let get = |name: &str| region[name].as_u64().unwrap_or(0) as u32;
        let (x0, y0) = (get("x"), get("y"));
        let x1 = (x0 + get("width")).min(self.width);
        let y1 = (y0 + get("height")).min(self.height);
        let mut pixels = Vec::new();
        for y in y0..y1 {
            for x in x0..x1 {
                let at = ((y * self.width + x) * 3) as usize;
                pixels.push([self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]]);
            }
        }
        pixels
    }
}

fn close_to(pixel: [u8; 3], colour: [u8; 3]) -> bool {
    pixel
        .iter()
        .zip(colour)
        .all(|(have, want)| have.abs_diff(want) <= COLOUR_TOLERANCE)
}

fn count(pixels: &[[u8; 3]], colour: [u8; 3]) -> usize {
    pixels
        .iter()
        .filter(|pixel| close_to(**pixel, colour))
        .count()
}

/// The screenshot shows the chart with bars of the allow, deny and pending colours, a results
/// table with text in it, and a verified proof.
fn check_screenshot(path: &Path, boxes: &Value) {
    let image = Image::read(path);
    assert_eq!(image.width, VIEWPORT_WIDTH_PX, "screenshot width");
    assert!(
        image.height >= 900,
        "a full-page screenshot is at least the viewport high: {}",
        image.height
    );
    let boxes = &boxes["boxes"];

    let chart = image.pixels_in(&boxes["chart"]);
    assert!(chart.len() > 100_000, "chart box {}", boxes["chart"]);
    let not_white = chart
        .iter()
        .filter(|pixel| pixel.iter().any(|channel| *channel < 240))
        .count();
    assert!(
        not_white * 50 > chart.len(),
        "the chart region is (nearly) blank: {not_white} of {} pixels not white",
        chart.len()
    );
    let bars = image.pixels_in(&boxes["chart_bars"]);
    let (allow, deny, pending) = (
        count(&bars, ALLOW_RGB),
        count(&bars, DENY_RGB),
        count(&bars, PENDING_RGB),
    );
    println!("chart pixels: allow {allow}, deny {deny}, pending {pending}");
    // The smallest segment (one pending decision among dozens) is a few pixels high and
    // dozens wide.
    assert!(allow >= 500, "allow-coloured pixels in the chart: {allow}");
    assert!(deny >= 100, "deny-coloured pixels in the chart: {deny}");
    assert!(
        pending >= 30,
        "pending-coloured pixels in the chart: {pending}"
    );

    let table = image.pixels_in(&boxes["results_body"]);
    let ink = table
        .iter()
        .filter(|pixel| pixel.iter().map(|channel| u32::from(*channel)).sum::<u32>() < 3 * 128)
        .count();
    assert!(
        ink >= 2_000,
        "the results table shows (almost) no text: {ink} dark pixels in {}",
        boxes["results_body"]
    );

    let proof = image.pixels_in(&boxes["proof_status"]);
    let verified = count(&proof, VERIFIED_RGB);
    assert!(
        verified * 2 > proof.len(),
        "the proof status is not shown as verified: {verified} of {} pixels",
        proof.len()
    );
}
