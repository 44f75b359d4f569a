//! Accounts: identifiers, status and the snapshots the store hands out.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::error::DomainError;
use crate::money::Currency;

const ACCOUNT_ID_CHARS_MIN: usize = 4;
/// 34 is the longest IBAN (ISO 13616).
const ACCOUNT_ID_CHARS_MAX: usize = 34;

/// An account identifier: an IBAN-like number ("DE89370400440532013000") or an internal
/// account ("SYSTEM-FUNDING-EUR"). Upper-case ASCII letters, digits and '-', 4..=34 chars.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(text: &str) -> Result<AccountId, DomainError> {
        let length_ok = (ACCOUNT_ID_CHARS_MIN..=ACCOUNT_ID_CHARS_MAX).contains(&text.len());
        let chars_ok = text
            .bytes()
            .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'-');
        if length_ok && chars_ok {
            Ok(AccountId(text.to_owned()))
        } else {
            Err(DomainError::AccountIdMalformed)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For logs and audit inputs: every character but the last four replaced by '*'
    /// ("DE89370400440532013000" -> "******************3000"). Delegates to the audit crate so
    /// logs and the audit trail mask identically (a 4-character id is masked completely).
    pub fn masked(&self) -> String {
        countersign_audit::mask_account_number(&self.0)
    }
}

/// Debug prints the masked form so that a stray `{:?}` in a log never leaks an account number.
impl fmt::Debug for AccountId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "AccountId({})", self.masked())
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl Serialize for AccountId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        AccountId::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Active,
    Frozen,
    Closed,
}

impl AccountStatus {
    /// The text stored in the `accounts.status` column (same as the serde form).
    pub fn as_str(&self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Frozen => "frozen",
            AccountStatus::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<AccountStatus> {
        match text {
            "active" => Some(AccountStatus::Active),
            "frozen" => Some(AccountStatus::Frozen),
            "closed" => Some(AccountStatus::Closed),
            _ => None,
        }
    }
}

/// A snapshot of one account as stored. Read model only: the store never takes an
/// `Account` as input, so public fields cannot be used to forge a balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: AccountId,
    pub currency: Currency,
    pub status: AccountStatus,
    pub overdraft_allowed: bool,
    /// Credits minus debits, in the currency's minor units. Negative only if
    /// `overdraft_allowed`.
    pub balance_minor: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// An account as the policy sees it when deciding a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountState {
    pub account: Account,
    /// Sum of this account's debit entries on the current UTC business date, minor units.
    pub debited_today_minor: i64,
    /// Sum of this account's pending (held for approval) debits, minor units; never negative.
    pub reserved_minor: i64,
}

impl AccountState {
    /// Balance minus reservations: what a new debit may use (without overdraft). i128 so it
    /// cannot overflow.
    pub fn available_minor(&self) -> i128 {
        i128::from(self.account.balance_minor) - i128::from(self.reserved_minor)
    }
}

/// Input of `create_account`; every field is already a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub id: AccountId,
    pub currency: Currency,
    pub overdraft_allowed: bool,
    pub status: AccountStatus,
}
