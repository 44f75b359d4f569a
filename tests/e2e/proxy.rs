//! Policy-guarded proxy routes against a real upstream HTTP server on 127.0.0.1:0: allowed and
//! denied requests, bodies far larger than any buffer streamed both ways, hop-by-hop and
//! identity headers, an upstream that is down or slow, and the audit record of every decision.
//!
//! Streaming is proven without timing: the upstream only sends the rest of a response after
//! the client has read its first chunk, and the client only sends the rest of an upload after
//! the upstream has read its first chunk. A proxy that buffered either body would deadlock
//! (and fail on the hang guard) instead of passing.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use countersign::config::RouteConfig;
use countersign_audit::{Outcome, SealedRecord};
use futures::StreamExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::{net::TcpListener, sync::Notify};

use crate::support::{AuditOutage, TestApp, bundle_path, copy_tree, fingerprint};

const MIB: usize = 1024 * 1024;
/// Far above `limits.body_bytes_max` (16 KiB) and any buffer on the way.
const STREAMED_BYTES: usize = 64 * MIB;
/// A request that hangs because something buffered fails here instead of blocking CI.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// Signals between the test client and the upstream for the streaming tests.
#[derive(Default)]
struct Signals {
    upstream_read_first_chunk: Notify,
    client_read_first_chunk: Notify,
    /// Requests that reached the echo endpoint.
    echoed: AtomicUsize,
}

struct Upstream {
    address: std::net::SocketAddr,
    signals: Arc<Signals>,
}

async fn spawn_upstream() -> Upstream {
    let signals = Arc::new(Signals::default());
    let app = Router::new()
        .route("/documents/echo", any(echo))
        .route("/documents/upload", post(upload))
        .route("/tiny/upload", post(upload))
        .route("/documents/download", get(download))
        .route("/slow/{*rest}", any(slow))
        .with_state(signals.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Upstream { address, signals }
}

/// Answers with what arrived, and with hop-by-hop headers the proxy must not pass back.
async fn echo(State(signals): State<Arc<Signals>>, request: Request) -> Response {
    signals.echoed.fetch_add(1, Ordering::SeqCst);
    let headers: BTreeMap<String, String> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or("<binary>").to_owned(),
            )
        })
        .collect();
    let body = json!({
        "method": request.method().as_str(),
        "uri": request.uri().to_string(),
        "headers": headers,
    });
    let mut response = Json(body).into_response();
    for (name, value) in [
        ("connection", "x-upstream-hop"),
        ("x-upstream-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-authenticate", "Basic realm=\"upstream\""),
        ("x-upstream-kept", "yes"),
    ] {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn upload(State(signals): State<Arc<Signals>>, request: Request) -> Json<Value> {
    let mut stream = request.into_body().into_data_stream();
    let mut bytes = 0_usize;
    let mut first = true;
    while let Some(chunk) = stream.next().await {
        // A body cut off by the proxy's bound ends the count; the proxy answered already.
        let Ok(chunk) = chunk else { break };
        bytes += chunk.len();
        if first {
            first = false;
            signals.upstream_read_first_chunk.notify_one();
        }
    }
    Json(json!({"bytes": bytes}))
}

async fn download(State(signals): State<Arc<Signals>>) -> Response {
    let chunks = futures::stream::unfold(0_usize, move |sent| {
        let signals = signals.clone();
        async move {
            if sent == STREAMED_BYTES {
                return None;
            }
            if sent == MIB {
                // The rest only once the client holds the first chunk: a proxy that waits
                // for the whole body never gets it.
                signals.client_read_first_chunk.notified().await;
            }
            Some((
                Ok::<_, std::io::Error>(Bytes::from(vec![7_u8; MIB])),
                sent + MIB,
            ))
        }
    });
    Body::from_stream(chunks).into_response()
}

async fn slow() -> StatusCode {
    tokio::time::sleep(Duration::from_secs(60)).await;
    StatusCode::OK
}

fn route(name: &str, prefix: &str, upstream: String) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        path_prefix: prefix.into(),
        upstream,
        decision: "data.countersign.proxy.decision".into(),
        connect_timeout_ms: 1_000,
        response_headers_timeout_ms: 9_000,
        request_body_bytes_max: 128 * MIB as u64,
        response_body_bytes_max: 128 * MIB as u64,
        requests_in_flight_max: 64,
        pool_max_idle_per_host: 8,
        pool_idle_timeout_ms: 30_000,
    }
}

/// The shipped bundle with the test routes added to `proxy_routes` (the shipped one,
/// `documents`, stays as it is; `unlisted` is deliberately absent).
fn bundle_with_test_routes(directory: &Path) -> PathBuf {
    let bundle = directory.join("bundle");
    copy_tree(&bundle_path(), &bundle);
    let data_path = bundle.join("countersign/config/data.json");
    let mut data: Value =
        serde_json::from_str(&std::fs::read_to_string(&data_path).unwrap()).unwrap();
    let everyone = json!({"roles": ["channel"], "methods": ["GET", "POST"]});
    for name in ["slow", "down", "tiny"] {
        data["proxy_routes"][name] = everyone.clone();
    }
    std::fs::write(&data_path, serde_json::to_vec(&data).unwrap()).unwrap();
    bundle
}

struct ProxyTest {
    app: TestApp,
    upstream: Upstream,
    _bundle: TempDir,
}

async fn spawn_proxy() -> ProxyTest {
    let upstream = spawn_upstream().await;
    let base = format!("http://{}", upstream.address);
    // A port nothing listens on: bound, then released.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let bundle_directory = TempDir::new().unwrap();
    let bundle = bundle_with_test_routes(bundle_directory.path());
    let app = TestApp::spawn_with(|config| {
        config.policy.bundle = bundle;
        let mut slow = route("slow", "/slow", base.clone());
        slow.response_headers_timeout_ms = 300;
        let mut tiny = route("tiny", "/tiny", base.clone());
        tiny.request_body_bytes_max = 1_024;
        config.routes = vec![
            route("documents", "/documents", base.clone()),
            slow,
            route("down", "/down", format!("http://{closed}")),
            tiny,
            route("unlisted", "/unlisted", base.clone()),
        ];
    })
    .await;
    ProxyTest {
        app,
        upstream,
        _bundle: bundle_directory,
    }
}

impl ProxyTest {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.base_url)
    }

    /// An HTTP/1.1-only client: hop-by-hop headers only exist in HTTP/1.1.
    fn http1_client(&self, role: &str) -> reqwest::Client {
        let certificate = &self.app.pki.clients[role];
        let identity = reqwest::Identity::from_pem(
            format!(
                "{}{}",
                certificate.certificate_pem, certificate.private_key_pem
            )
            .as_bytes(),
        )
        .unwrap();
        reqwest::Client::builder()
            .tls_certs_only([
                reqwest::Certificate::from_pem(self.app.pki.ca_pem.as_bytes()).unwrap(),
            ])
            .identity(identity)
            .resolve("localhost", self.app.address)
            .http1_only()
            .timeout(HANG_GUARD)
            .build()
            .unwrap()
    }

    async fn proxy_records(&self) -> Vec<SealedRecord> {
        self.app
            .state
            .store
            .read_sealed_after(0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|sealed| sealed.record.action.starts_with("proxy."))
            .collect()
    }

    async fn record_of(&self, decision_id: &str) -> SealedRecord {
        self.proxy_records()
            .await
            .into_iter()
            .find(|sealed| sealed.record.decision_id.to_string() == decision_id)
            .unwrap_or_else(|| panic!("no audit record for decision {decision_id}"))
    }
}

fn decision_header(headers: &HeaderMap) -> String {
    headers["x-countersign-decision-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_request_is_forwarded_with_sanitized_headers_and_audited() {
    let test = spawn_proxy().await;
    let response = test
        .http1_client("channel")
        .post(test.url("/documents/echo?year=2026&kind=pdf"))
        .header("connection", "keep-alive, x-custom-hop")
        .header("x-custom-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("authorization", "Bearer channel-token")
        .header(
            "x-forwarded-client-cert",
            "Hash=forged;Subject=\"CN=admin\"",
        )
        .header("x-countersign-client", "fingerprint=forged;roles=admin")
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-request-tag", "kept")
        .body("hello upstream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    // Hop-by-hop headers of the upstream's response stop at the proxy; the rest passes.
    assert_eq!(headers["x-upstream-kept"], "yes");
    for name in ["x-upstream-hop", "keep-alive", "proxy-authenticate"] {
        assert!(!headers.contains_key(name), "{name} reached the client");
    }
    let decision_id = decision_header(&headers);
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["uri"], "/documents/echo?year=2026&kind=pdf");
    let seen = echoed["headers"].as_object().unwrap();
    for name in [
        "x-custom-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "x-forwarded-client-cert",
    ] {
        assert!(!seen.contains_key(name), "{name} reached the upstream");
    }
    assert_eq!(seen["x-request-tag"], "kept");
    assert_eq!(seen["authorization"], "Bearer channel-token");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "https");
    let forwarded = seen["forwarded"].as_str().unwrap();
    assert!(forwarded.starts_with("for=\"127.0.0.1:"), "{forwarded}");
    assert!(forwarded.contains(";proto=https"), "{forwarded}");
    assert_eq!(seen["x-countersign-decision-id"], decision_id.as_str());
    let channel_fingerprint = fingerprint(&test.app.pki.clients["channel"].certificate_pem);
    let client = seen["x-countersign-client"].as_str().unwrap();
    assert!(
        client.starts_with(&format!("fingerprint={channel_fingerprint};serial=")),
        "{client}"
    );
    assert!(
        client.ends_with(";cn=channel-client;roles=channel"),
        "{client}"
    );

    let sealed = test.record_of(&decision_id).await;
    let record = &sealed.record;
    assert_eq!(record.action, "proxy.documents");
    assert_eq!(record.outcome, Outcome::Allow);
    assert_eq!(record.result["allow"], true);
    assert_eq!(record.subject.fingerprint_sha256, channel_fingerprint);
    let http = &record.masked_input["attributes"]["request"]["http"];
    assert_eq!(http["method"], "POST");
    assert_eq!(http["path"], "/documents/echo?year=2026&kind=pdf");
    assert_eq!(http["query"], "year=2026&kind=pdf");
    assert_eq!(record.masked_input["parsed_query"]["year"], json!(["2026"]));
    assert_eq!(
        record.masked_input["parsed_path"],
        json!(["documents", "echo"])
    );
    // The policy saw the credential; the trail keeps only a marker. Identity headers were
    // stripped before the policy ran.
    assert_eq!(http["headers"]["authorization"], "[redacted]");
    assert!(http["headers"].get("x-forwarded-client-cert").is_none());
    assert_eq!(record.masked_input["route"]["name"], "documents");
    assert_eq!(record.masked_input["subject"]["roles"], json!(["channel"]));
    test.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_requests_get_403_with_the_audited_decision() {
    let test = spawn_proxy().await;
    let cases = [
        (
            "auditor",
            "GET",
            "/documents/echo",
            "subject.role_not_authorized",
        ),
        ("channel", "DELETE", "/documents/echo", "method.not_allowed"),
        (
            "channel",
            "GET",
            "/unlisted/anything",
            "route.not_configured",
        ),
    ];
    for (role, method, path, code) in cases {
        let response = test
            .app
            .client(role)
            .request(method.parse().unwrap(), test.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{role} {method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "policy.denied");
        assert_eq!(body["reasons"][0]["code"], code, "{body}");
        let decision_id = body["decision_id"].as_str().unwrap();
        let record = test.record_of(decision_id).await.record;
        assert_eq!(record.outcome, Outcome::Deny);
        assert_eq!(record.result["reasons"][0]["code"], code);
        assert_eq!(record.subject.roles, [role]);
    }
    // A denial never reached the upstream: the echo would have answered 200.
    let records = test.proxy_records().await;
    assert_eq!(records.len(), cases.len());
    let metrics = test.app.state.metrics.encode();
    assert!(
        metrics.contains("action=\"proxy.documents\",outcome=\"deny\""),
        "{metrics}"
    );
    test.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn request_body_streams_to_the_upstream() {
    let test = spawn_proxy().await;
    let signals = test.upstream.signals.clone();
    // First chunk, then nothing until the upstream has read it, then the rest.
    let chunks = futures::stream::unfold(0_usize, move |sent| {
        let signals = signals.clone();
        async move {
            if sent == STREAMED_BYTES {
                return None;
            }
            if sent == MIB {
                signals.upstream_read_first_chunk.notified().await;
            }
            Some((Ok::<_, std::io::Error>(vec![3_u8; MIB]), sent + MIB))
        }
    });
    let response = tokio::time::timeout(
        HANG_GUARD,
        test.app
            .client("channel")
            .post(test.url("/documents/upload"))
            .body(reqwest::Body::wrap_stream(chunks))
            .send(),
    )
    .await
    .expect("the upload streams instead of waiting for its end")
    .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["bytes"], STREAMED_BYTES);
    test.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn response_body_streams_to_the_client() {
    let test = spawn_proxy().await;
    let mut response = test
        .app
        .client("channel")
        .get(test.url("/documents/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0_usize;
    let mut told_upstream = false;
    while let Some(chunk) = tokio::time::timeout(HANG_GUARD, response.chunk())
        .await
        .expect("the download streams instead of waiting for its end")
        .unwrap()
    {
        received += chunk.len();
        if !told_upstream {
            told_upstream = true;
            test.upstream.signals.client_read_first_chunk.notify_one();
        }
    }
    assert_eq!(received, STREAMED_BYTES);
    test.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_502_and_slow_is_504() {
    let test = spawn_proxy().await;
    let client = test.app.client("channel");
    let check = |path: &'static str, status: u16, code: &'static str| {
        let client = client.clone();
        let url = test.url(path);
        async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), status, "{path}");
            let decision_id = response
                .headers()
                .get("x-countersign-decision-id")
                .map(|value| value.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], code, "{path}: {body}");
            decision_id
        }
    };
    check("/down/anything", 502, "upstream.unavailable").await;
    check("/slow/anything", 504, "upstream.timeout").await;
    // Both were allowed, and audited before the forwarding failed.
    let records = test.proxy_records().await;
    let actions: Vec<&str> = records.iter().map(|s| s.record.action.as_str()).collect();
    assert_eq!(actions, ["proxy.down", "proxy.slow"]);
    assert!(records.iter().all(|s| s.record.outcome == Outcome::Allow));
    test.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_ambiguous_requests_are_refused() {
    let test = spawn_proxy().await;
    let client = test.http1_client("channel");
    let response = client
        .post(test.url("/tiny/upload"))
        .body(vec![0_u8; 2_048])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "body.too_large");
    assert!(test.proxy_records().await.is_empty());
    // Without a declared length the bound is enforced as the body streams: the request was
    // decided and audited, then cut off on its way to the upstream.
    let chunks = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![1_u8; 1_024])));
    let response = client
        .post(test.url("/tiny/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "body.too_large");
    assert_eq!(test.proxy_records().await.len(), 1);
    let response = client
        .get(test.url("/documents/a%2Fb"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "path.not_normalized");
    assert_eq!(test.proxy_records().await.len(), 1);
    test.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_audit_trail_forwards_nothing() {
    let test = spawn_proxy().await;
    let client = test.app.client("channel");
    let echo = test.url("/documents/echo");
    assert_eq!(client.get(&echo).send().await.unwrap().status(), 200);
    assert_eq!(test.upstream.signals.echoed.load(Ordering::SeqCst), 1);

    // Every audit insert fails, as on a full or read-only audit volume.
    let outage = AuditOutage::begin(&test.app).await;
    for _ in 0..2 {
        let response = client.get(&echo).send().await.unwrap();
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "store.unavailable", "{body}");
    }
    assert_eq!(test.upstream.signals.echoed.load(Ordering::SeqCst), 1);

    // The volume comes back. The proxy has the trail probed before it decides, so the very
    // next request sees `audit.enabled` true again and goes through.
    outage.end().await;
    assert_eq!(client.get(&echo).send().await.unwrap().status(), 200);
    assert_eq!(test.upstream.signals.echoed.load(Ordering::SeqCst), 2);
    let outcomes: Vec<Outcome> = test
        .proxy_records()
        .await
        .iter()
        .map(|sealed| sealed.record.outcome)
        .collect();
    assert_eq!(outcomes, [Outcome::Allow, Outcome::Allow]);
    test.app.stop().await;
}
