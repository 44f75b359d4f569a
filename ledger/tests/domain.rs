//! Parsing of the domain types, table-driven: one `check` per type, one line per case.

use countersign_ledger::{AccountId, Amount, Currency, format_minor};

/// `expected`: `Ok(minor units)` or `Err(error code)`.
fn check_amount(text: &str, currency: &str, expected: Result<i64, &str>) {
    let currency = Currency::parse(currency).expect("test currency is known");
    let actual = Amount::parse(text, currency)
        .map(|amount| amount.minor_units())
        .map_err(|error| error.code());
    assert_eq!(actual, expected, "Amount::parse({text:?}, {currency})");
    if let Ok(amount) = Amount::parse(text, currency) {
        // Printing and parsing again is lossless.
        let printed = amount.to_decimal_string();
        let reparsed = Amount::parse(&printed, currency).expect("printed amount parses");
        assert_eq!(reparsed, amount, "round trip of {text:?} via {printed:?}");
    }
}

#[test]
fn amounts() {
    let cases: &[(&str, &str, Result<i64, &str>)] = &[
        // Well-formed, per currency precision.
        ("1500", "EUR", Ok(150_000)),
        ("1500.00", "EUR", Ok(150_000)),
        ("1500.5", "EUR", Ok(150_050)),
        ("0.01", "EUR", Ok(1)),
        ("007.10", "EUR", Ok(710)),
        ("1500", "JPY", Ok(1500)),
        ("1.234", "KWD", Ok(1234)),
        ("1.2", "BHD", Ok(1200)),
        ("99999999999999.99", "USD", Ok(9_999_999_999_999_999)),
        ("9999999999999999.99", "EUR", Ok(999_999_999_999_999_999)),
        ("999999999999999999", "JPY", Ok(999_999_999_999_999_999)),
        ("00000000000000000000000001", "EUR", Ok(100)),
        // Too precise for the currency: never rounded.
        ("1.001", "EUR", Err("amount.too_precise")),
        ("1.0", "JPY", Err("amount.too_precise")),
        ("1.2345", "KWD", Err("amount.too_precise")),
        ("0.000", "EUR", Err("amount.too_precise")),
        // Not positive.
        ("0", "EUR", Err("amount.not_positive")),
        ("0.00", "EUR", Err("amount.not_positive")),
        ("000", "JPY", Err("amount.not_positive")),
        // Malformed: sign, exponent, spaces, separators, empty parts.
        ("-1", "EUR", Err("amount.malformed")),
        ("+1", "EUR", Err("amount.malformed")),
        ("1e3", "EUR", Err("amount.malformed")),
        ("1E3", "EUR", Err("amount.malformed")),
        (" 1", "EUR", Err("amount.malformed")),
        ("1 ", "EUR", Err("amount.malformed")),
        ("1,00", "EUR", Err("amount.malformed")),
        ("1_000", "EUR", Err("amount.malformed")),
        (".5", "EUR", Err("amount.malformed")),
        ("5.", "EUR", Err("amount.malformed")),
        ("1.2.3", "EUR", Err("amount.malformed")),
        ("", "EUR", Err("amount.malformed")),
        ("NaN", "EUR", Err("amount.malformed")),
        ("١٢", "EUR", Err("amount.malformed")),
        // Too large: more than 18 significant digits at the currency's precision.
        ("10000000000000000.00", "EUR", Err("amount.too_large")),
        ("10000000000000000", "EUR", Err("amount.too_large")),
        ("1000000000000000000", "JPY", Err("amount.too_large")),
        ("9223372036854775807", "JPY", Err("amount.too_large")),
        (
            "99999999999999999999999999999",
            "EUR",
            Err("amount.too_large"),
        ),
    ];
    for &(text, currency, expected) in cases {
        check_amount(text, currency, expected);
    }
}

fn check_currency(code: &str, expected: Result<u8, &str>) {
    let actual = Currency::parse(code)
        .map(|currency| {
            assert_eq!(currency.code(), code);
            currency.minor_units()
        })
        .map_err(|error| error.code());
    assert_eq!(actual, expected, "Currency::parse({code:?})");
}

#[test]
fn currencies() {
    let cases: &[(&str, Result<u8, &str>)] = &[
        ("EUR", Ok(2)),
        ("USD", Ok(2)),
        ("GBP", Ok(2)),
        ("CHF", Ok(2)),
        ("JPY", Ok(0)),
        ("KWD", Ok(3)),
        ("BHD", Ok(3)),
        ("SEK", Ok(2)),
        ("HUF", Ok(2)),
        ("ZAR", Ok(2)),
        ("eur", Err("currency.unknown")),
        ("Eur", Err("currency.unknown")),
        ("XXX", Err("currency.unknown")),
        ("XAU", Err("currency.unknown")),
        ("EURO", Err("currency.unknown")),
        ("", Err("currency.unknown")),
        (" EUR", Err("currency.unknown")),
    ];
    for &(code, expected) in cases {
        check_currency(code, expected);
    }
}

fn check_account_id(text: &str, expected: Result<&str, &str>) {
    let actual = AccountId::parse(text).map(|id| id.masked());
    let actual = actual.as_deref().map_err(|error| error.code());
    assert_eq!(actual, expected, "AccountId::parse({text:?})");
}

#[test]
fn account_ids() {
    // Ok holds the masked form.
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("DE89370400440532013000", Ok("******************3000")),
        ("SYSTEM-FUNDING-EUR", Ok("**************-EUR")),
        ("ABCDE", Ok("*BCDE")),
        ("ABCD", Ok("****")),
        (
            "MT84MALT011000012345MTLCAST001SXYZ",
            Ok("******************************SXYZ"),
        ),
        ("ABC", Err("account_id.malformed")),
        (
            "MT84MALT011000012345MTLCAST001SXYZA",
            Err("account_id.malformed"),
        ),
        ("de89370400440532013000", Err("account_id.malformed")),
        ("DE89 3704 0044", Err("account_id.malformed")),
        ("DE89_3704", Err("account_id.malformed")),
        ("DE89370400440532013000\n", Err("account_id.malformed")),
        ("ÄBCDE", Err("account_id.malformed")),
        ("", Err("account_id.malformed")),
    ];
    for &(text, expected) in cases {
        check_account_id(text, expected);
    }
    let id = AccountId::parse("DE89370400440532013000").expect("valid");
    assert_eq!(id.as_str(), "DE89370400440532013000");
    // Debug output never shows the full number.
    assert!(!format!("{id:?}").contains("DE8937"));
}

fn check_format(minor_units: i64, currency: &str, expected: &str) {
    let currency = Currency::parse(currency).expect("known");
    assert_eq!(
        format_minor(minor_units, currency),
        expected,
        "{minor_units} {currency}"
    );
}

#[test]
fn formatting_minor_units() {
    let cases: &[(i64, &str, &str)] = &[
        (150_000, "EUR", "1500.00"),
        (5, "EUR", "0.05"),
        (-5, "EUR", "-0.05"),
        (0, "EUR", "0.00"),
        (-150_050, "EUR", "-1500.50"),
        (1500, "JPY", "1500"),
        (-1500, "JPY", "-1500"),
        (1, "KWD", "0.001"),
        (i64::MAX, "EUR", "92233720368547758.07"),
        (i64::MIN, "EUR", "-92233720368547758.08"),
    ];
    for &(minor_units, currency, expected) in cases {
        check_format(minor_units, currency, expected);
    }
    let amount = Amount::parse("1500", Currency::parse("EUR").expect("known")).expect("valid");
    assert_eq!(amount.to_decimal_string(), "1500.00");
}

#[test]
fn serde_uses_the_parsers() {
    let currency: Currency = serde_json::from_str("\"EUR\"").expect("EUR deserialises");
    assert_eq!(currency.code(), "EUR");
    assert!(serde_json::from_str::<Currency>("\"eur\"").is_err());
    assert!(serde_json::from_str::<AccountId>("\"abc\"").is_err());
    assert_eq!(
        serde_json::to_string(&currency).expect("serialises"),
        "\"EUR\""
    );
}
