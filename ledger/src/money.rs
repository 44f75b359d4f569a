//! Currencies and amounts. Money is integer minor units (`i64`) with checked arithmetic;
//! there is no float anywhere in this module.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DomainError;

/// Active ISO 4217 codes we accept, with their number of minor units (decimals).
///
/// Deliberately a short, hand-written table: a currency we have not reviewed (funds codes,
/// precious metals, historic codes) is rejected rather than guessed.
const ISO_4217: &[(&str, u8)] = &[
    ("AED", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

/// Digits an amount may have in total (integer + fraction). 18 decimal digits always fit
/// in an `i64` (max ~9.2e18), so a parsed amount can never overflow on the way in.
const AMOUNT_DIGITS_MAX: usize = 18;

/// An ISO 4217 currency from our table. Once you hold one, it is known and upper case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    minor_units: u8,
}

impl Currency {
    /// Parses an upper-case ISO 4217 code such as `"EUR"`. Lower case is rejected rather
    /// than normalised, so that what is stored and audited is exactly what was sent.
    pub fn parse(code: &str) -> Result<Currency, DomainError> {
        ISO_4217
            .iter()
            .find(|(known, _)| *known == code)
            .map(|&(code, minor_units)| Currency { code, minor_units })
            .ok_or(DomainError::CurrencyUnknown)
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Number of decimals of the currency's minor unit (EUR 2, JPY 0, KWD 3).
    pub fn minor_units(&self) -> u8 {
        self.minor_units
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Currency::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A strictly positive amount of money in one currency, held as integer minor units.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amount {
    minor_units: i64,
    currency: Currency,
}

impl Amount {
    /// Parses `^[0-9]+(\.[0-9]+)?$` (no sign, exponent, spaces, grouping or leading '.').
    /// The number of decimals may not exceed the currency's minor units: "1.5" EUR is fine,
    /// "1.505" EUR is `amount.too_precise` (we never round money we were sent).
    pub fn parse(text: &str, currency: Currency) -> Result<Amount, DomainError> {
        let (integer_digits, fraction_digits) = match text.split_once('.') {
            Some((integer, fraction)) => (integer, fraction),
            None => (text, ""),
        };
        let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if integer_digits.is_empty()
            || !all_digits(integer_digits)
            || !all_digits(fraction_digits)
            || (text.contains('.') && fraction_digits.is_empty())
        {
            return Err(DomainError::AmountMalformed);
        }
        let decimals_max = usize::from(currency.minor_units);
        if fraction_digits.len() > decimals_max {
            return Err(DomainError::AmountTooPrecise {
                currency: currency.code,
                decimals_max: currency.minor_units,
            });
        }
        // Leading zeros carry no value; only significant digits count against the cap.
        let significant_integer = integer_digits.trim_start_matches('0');
        if significant_integer.len() + decimals_max > AMOUNT_DIGITS_MAX {
            return Err(DomainError::AmountTooLarge);
        }

        let mut minor_units: i64 = 0;
        let padding = decimals_max - fraction_digits.len();
        let digits = significant_integer
            .bytes()
            .chain(fraction_digits.bytes())
            .chain(std::iter::repeat_n(b'0', padding));
        for digit in digits {
            minor_units = minor_units
                .checked_mul(10)
                .and_then(|value| value.checked_add(i64::from(digit - b'0')))
                .ok_or(DomainError::AmountTooLarge)?;
        }
        Amount::from_minor_units(minor_units, currency)
    }

    /// Builds an amount from minor units (as stored in the ledger). Must be > 0.
    pub fn from_minor_units(minor_units: i64, currency: Currency) -> Result<Amount, DomainError> {
        if minor_units <= 0 {
            return Err(DomainError::AmountNotPositive);
        }
        Ok(Amount {
            minor_units,
            currency,
        })
    }

    pub fn minor_units(&self) -> i64 {
        self.minor_units
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Always exactly the currency's decimals: "1500.00" EUR, "1500" JPY, "1.500" KWD.
    pub fn to_decimal_string(&self) -> String {
        format_minor(self.minor_units, self.currency)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.to_decimal_string(), self.currency)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.to_decimal_string(), self.currency)
    }
}

/// Formats a (possibly negative or zero) balance in minor units with exactly the currency's
/// decimals: `format_minor(-5, EUR) == "-0.05"`.
pub fn format_minor(minor_units: i64, currency: Currency) -> String {
    // unsigned_abs: i64::MIN has no positive i64 counterpart.
    let magnitude = minor_units.unsigned_abs();
    let sign = if minor_units < 0 { "-" } else { "" };
    let decimals = u32::from(currency.minor_units);
    if decimals == 0 {
        return format!("{sign}{magnitude}");
    }
    let scale = 10u64.pow(decimals);
    let integer = magnitude / scale;
    let fraction = magnitude % scale;
    format!(
        "{sign}{integer}.{fraction:0width$}",
        width = usize::from(currency.minor_units)
    )
}
