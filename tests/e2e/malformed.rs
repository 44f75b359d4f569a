//! Malformed requests: each gets a clear 4xx with a machine-readable code and writes nothing.

use serde_json::Value;

use crate::support::{ALICE, BOB, TestApp};

const GBP_ACCOUNT: &str = "GB29NWBK60161331926819";

/// (name, body, content type, idempotency key, expected status, expected code)
type Case = (
    &'static str,
    String,
    &'static str,
    Option<&'static str>,
    u16,
    &'static str,
);

fn body(debit: &str, credit: &str, amount: &str, currency: &str) -> String {
    format!(
        r#"{{"debit_account":"{debit}","credit_account":"{credit}","amount":"{amount}","currency":"{currency}"}}"#
    )
}

fn cases() -> Vec<Case> {
    let json = "application/json";
    let good = body(ALICE, BOB, "1.00", "EUR");
    let key = Some("malformed-key");
    vec![
        (
            "missing idempotency key",
            good.clone(),
            json,
            None,
            400,
            "idempotency_key.missing",
        ),
        (
            "empty idempotency key",
            good.clone(),
            json,
            Some(""),
            400,
            "idempotency_key.malformed",
        ),
        (
            "idempotency key too long",
            good.clone(),
            json,
            Some(Box::leak("k".repeat(129).into_boxed_str())),
            400,
            "idempotency_key.malformed",
        ),
        (
            "wrong content type",
            good.clone(),
            "text/plain",
            key,
            415,
            "content_type.unsupported",
        ),
        (
            "not JSON",
            "debit=1&credit=2".into(),
            json,
            key,
            400,
            "body.malformed_json",
        ),
        (
            "truncated JSON",
            r#"{"debit_account":"DE89"#.into(),
            json,
            key,
            400,
            "body.malformed_json",
        ),
        (
            "empty body",
            String::new(),
            json,
            key,
            400,
            "body.malformed_json",
        ),
        (
            "trailing garbage",
            format!("{good} x"),
            json,
            key,
            400,
            "body.malformed_json",
        ),
        ("JSON array", "[]".into(), json, key, 422, "body.invalid"),
        (
            "amount as number",
            format!(
                r#"{{"debit_account":"{ALICE}","credit_account":"{BOB}","amount":1.5,"currency":"EUR"}}"#
            ),
            json,
            key,
            422,
            "body.invalid",
        ),
        (
            "currency as number",
            format!(
                r#"{{"debit_account":"{ALICE}","credit_account":"{BOB}","amount":"1.00","currency":978}}"#
            ),
            json,
            key,
            422,
            "body.invalid",
        ),
        (
            "missing amount",
            format!(r#"{{"debit_account":"{ALICE}","credit_account":"{BOB}","currency":"EUR"}}"#),
            json,
            key,
            422,
            "body.invalid",
        ),
        (
            "missing credit account",
            format!(r#"{{"debit_account":"{ALICE}","amount":"1.00","currency":"EUR"}}"#),
            json,
            key,
            422,
            "body.invalid",
        ),
        (
            "unknown field",
            format!(
                r#"{{"debit_account":"{ALICE}","credit_account":"{BOB}","amount":"1.00","currency":"EUR","approved":true}}"#
            ),
            json,
            key,
            422,
            "body.invalid",
        ),
        (
            "null amount",
            format!(
                r#"{{"debit_account":"{ALICE}","credit_account":"{BOB}","amount":null,"currency":"EUR"}}"#
            ),
            json,
            key,
            422,
            "body.invalid",
        ),
        (
            "negative amount",
            body(ALICE, BOB, "-1.00", "EUR"),
            json,
            key,
            422,
            "amount.malformed",
        ),
        (
            "zero amount",
            body(ALICE, BOB, "0.00", "EUR"),
            json,
            key,
            422,
            "amount.not_positive",
        ),
        (
            "over-precise amount",
            body(ALICE, BOB, "1.001", "EUR"),
            json,
            key,
            422,
            "amount.too_precise",
        ),
        (
            "decimals on JPY",
            body(ALICE, BOB, "1.5", "JPY"),
            json,
            key,
            422,
            "amount.too_precise",
        ),
        (
            "exponent amount",
            body(ALICE, BOB, "1e3", "EUR"),
            json,
            key,
            422,
            "amount.malformed",
        ),
        (
            "amount with spaces",
            body(ALICE, BOB, " 1.00", "EUR"),
            json,
            key,
            422,
            "amount.malformed",
        ),
        (
            "huge amount",
            body(ALICE, BOB, "99999999999999999999999.00", "EUR"),
            json,
            key,
            422,
            "amount.too_large",
        ),
        (
            "unknown currency",
            body(ALICE, BOB, "1.00", "XYZ"),
            json,
            key,
            422,
            "currency.unknown",
        ),
        (
            "lowercase currency",
            body(ALICE, BOB, "1.00", "eur"),
            json,
            key,
            422,
            "currency.unknown",
        ),
        (
            "malformed account id",
            body("DE89 3704", BOB, "1.00", "EUR"),
            json,
            key,
            422,
            "account_id.malformed",
        ),
        (
            "unknown account",
            body("DE00000000000000000000", BOB, "1.00", "EUR"),
            json,
            key,
            422,
            "account.not_found",
        ),
        (
            "same account both sides",
            body(ALICE, ALICE, "1.00", "EUR"),
            json,
            key,
            422,
            "accounts.same",
        ),
        (
            "currency differs from account",
            body(ALICE, GBP_ACCOUNT, "1.00", "EUR"),
            json,
            key,
            422,
            "currency.mismatch",
        ),
        (
            "transfer currency differs from accounts",
            body(ALICE, BOB, "1.00", "GBP"),
            json,
            key,
            422,
            "currency.mismatch",
        ),
        (
            "end_to_end_id too long",
            format!(
                r#"{{"debit_account":"{ALICE}","credit_account":"{BOB}","amount":"1.00","currency":"EUR","end_to_end_id":"{}"}}"#,
                "E".repeat(36)
            ),
            json,
            key,
            422,
            "end_to_end_id.invalid",
        ),
        (
            "remittance info with control characters",
            format!(
                r#"{{"debit_account":"{ALICE}","credit_account":"{BOB}","amount":"1.00","currency":"EUR","remittance_info":"a\u0000b"}}"#
            ),
            json,
            key,
            422,
            "remittance_info.invalid",
        ),
        (
            "oversized body",
            format!(
                r#"{{"debit_account":"{ALICE}","credit_account":"{BOB}","amount":"1.00","currency":"EUR","purpose":"{}"}}"#,
                "x".repeat(64 * 1024)
            ),
            json,
            key,
            413,
            "body.too_large",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_a_clear_4xx_and_write_nothing() {
    let app = TestApp::spawn().await;
    app.open_account(ALICE, "EUR", "1000.00").await;
    app.open_account(BOB, "EUR", "0").await;
    app.open_account(GBP_ACCOUNT, "GBP", "0").await;
    let records_before = app.audit_count().await;
    let alice_before = app.balance_minor(ALICE).await;
    let cases = cases();
    assert!(cases.len() >= 25);
    let client = app.client("channel");
    for (name, body, content_type, key, status, code) in cases {
        let mut request = client
            .post(format!("{}/v1/transfers", app.base_url))
            .header("Content-Type", content_type)
            .body(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let answer: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: JSON error body: {e}"));
        assert_eq!(answer["code"], code, "{name}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: message"
        );
    }
    assert_eq!(
        app.audit_count().await,
        records_before,
        "malformed requests wrote audit records"
    );
    assert_eq!(app.balance_minor(ALICE).await, alice_before);
    // The key used by the refused requests is still free: nothing was stored under it.
    let (status, _) = app
        .post_transfer(
            "malformed-key",
            &crate::support::transfer(ALICE, BOB, "1.00"),
        )
        .await;
    assert_eq!(status, 201);
    app.stop().await;
}
