//! The handshake refuses every caller without a valid client certificate, and identity
//! comes only from the certificate.

use std::sync::Arc;

use countersign::pki::IssuedCertificate;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use crate::support::TestApp;

/// Connects with `certificate` (or none), sends one HTTP/1.1 request, and returns the status
/// line or the TLS error. Under TLS 1.3 the server judges the client certificate after the
/// client has finished its side, so a refusal arrives as an alert on the first read.
async fn exchange(
    app: &TestApp,
    certificate: Option<&IssuedCertificate>,
) -> Result<String, String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(app.pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match certificate {
        Some(certificate) => builder
            .with_client_auth_cert(
                vec![
                    CertificateDer::from_pem_slice(certificate.certificate_pem.as_bytes()).unwrap(),
                ],
                PrivateKeyDer::from_pem_slice(certificate.private_key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let stream = TcpStream::connect(app.address).await.unwrap();
    let connector = TlsConnector::from(Arc::new(config));
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .map_err(|error| error.to_string())?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|error| error.to_string())?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response)
        .await
        .map_err(|error| error.to_string())?;
    let text = String::from_utf8_lossy(&response);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_client_certificate_is_served() {
    let app = TestApp::spawn().await;
    let status_line = exchange(&app, Some(&app.pki.clients["channel"])).await;
    assert_eq!(status_line.as_deref(), Ok("HTTP/1.1 200 OK"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn handshake_refuses_bad_client_certificates() {
    let app = TestApp::spawn().await;
    let cases: [(&str, Option<&IssuedCertificate>, &str); 5] = [
        ("no certificate", None, "CertificateRequired"),
        (
            "certificate from another CA",
            Some(&app.pki.foreign),
            "UnknownCA",
        ),
        (
            "expired certificate",
            Some(&app.pki.expired),
            "CertificateExpired",
        ),
        (
            "not yet valid certificate",
            Some(&app.pki.not_yet_valid),
            "CertificateExpired",
        ),
        (
            "certificate revoked by CRL",
            Some(&app.pki.revoked),
            "CertificateRevoked",
        ),
    ];
    for (name, certificate, alert) in cases {
        let outcome = exchange(&app, certificate).await;
        let error = outcome.expect_err(name);
        assert!(
            error.contains(alert),
            "{name}: expected alert {alert}, got {error}"
        );
    }
    let text = app.state.metrics.encode();
    assert!(
        text.contains("countersign_tls_handshake_failures_total{reason=\"refused\"} 5"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_headers_from_clients_are_not_trusted() {
    let app = TestApp::spawn().await;
    // A channel caller claims to be an admin through headers a proxy would set.
    let response = app
        .client("channel")
        .post(format!("{}/v1/accounts", app.base_url))
        .header(
            "X-Forwarded-Client-Cert",
            "By=spiffe://x;Hash=00;Subject=\"OU=admin,CN=admin\"",
        )
        .header("X-Countersign-Roles", "admin")
        .header("X-SSL-Client-DN", "CN=admin-carol,OU=admin")
        .json(&json!({"id": "DE00123456780000000001", "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "role.required");

    // The admin's own certificate can.
    let response = app
        .client("admin")
        .post(format!("{}/v1/accounts", app.base_url))
        .json(&json!({"id": "DE00123456780000000001", "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_without_a_mapped_role_can_read_nothing_and_transfer_nothing() {
    let app = TestApp::spawn().await;
    app.open_account(crate::support::ALICE, "EUR", "10.00")
        .await;
    app.open_account(crate::support::BOB, "EUR", "0").await;
    let client = app.client_with(&app.pki.roleless);
    let response = client
        .get(format!(
            "{}/v1/accounts/{}",
            app.base_url,
            crate::support::ALICE
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let response = client
        .post(format!("{}/v1/transfers", app.base_url))
        .header("Idempotency-Key", "roleless-1")
        .json(&crate::support::transfer(
            crate::support::ALICE,
            crate::support::BOB,
            "1.00",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["reasons"][0]["code"], "subject.role_not_authorized");
    assert_eq!(app.balance_minor(crate::support::ALICE).await, 1_000);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_2_is_refused_by_default() {
    let app = TestApp::spawn().await;
    let certificate = &app.pki.clients["channel"];
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(app.pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(certificate.certificate_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(certificate.private_key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let stream = TcpStream::connect(app.address).await.unwrap();
    let error = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .expect_err("TLS 1.2 must be refused");
    assert!(error.to_string().contains("ProtocolVersion"), "{error}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_finishes_the_handshake_is_disconnected() {
    let app = TestApp::spawn_with(|config| config.tls.handshake_timeout_ms = 200).await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    // Send nothing. The server must hang up on its own; the outer bound only keeps a broken
    // server from hanging the suite.
    let mut buffer = [0_u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buffer))
        .await
        .expect("server closed the idle connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let text = app.state.metrics.encode();
    assert!(
        text.contains("countersign_tls_handshake_failures_total{reason=\"timeout\"} 1"),
        "{text}"
    );
    app.stop().await;
}
