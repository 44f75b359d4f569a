package countersign.transfer_test

import data.countersign.transfer

# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

debit_id := "DE89370400440532013000"

credit_id := "FR1420041010050500013M02606"

base_input := {
	"action": "transfer.create",
	"transfer": {
		"id": "0193a5b2-7c1e-7d3f-9a40-2f1c8e6b1a01",
		"debit_account": debit_id,
		"credit_account": credit_id,
		"amount": "1500.00",
		"amount_minor": 150000,
		"currency": "EUR",
		"currency_minor_units": 2,
		"end_to_end_id": "E2E-1",
		"purpose": "SALA",
		"remittance_info": "invoice 42",
	},
	"subject": {
		"common_name": "mobile-banking",
		"organization": ["Example Bank"],
		"organizational_units": ["channel"],
		"san_uris": ["spiffe://bank.example/channel/mobile"],
		"serial": "0a1b2c",
		"fingerprint_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"roles": ["channel"],
	},
	"accounts": {
		"debit": {
			"id": debit_id,
			"status": "active",
			"currency": "EUR",
			"overdraft_allowed": false,
			"balance": "10000.00",
			"balance_minor": 1000000,
			"debited_today": "0.00",
			"debited_today_minor": 0,
		},
		"credit": {
			"id": credit_id,
			"status": "active",
			"currency": "EUR",
			"overdraft_allowed": false,
			"balance": "0.00",
			"balance_minor": 0,
			"debited_today": "0.00",
			"debited_today_minor": 0,
		},
	},
	"context": {
		"time": "2026-11-26T12:00:00.123456789Z",
		"request_id": "req-1",
		"channel": "mobile-banking",
		"audit": {"enabled": true},
	},
}

# object.union merges recursively, so patches only name what they change.
patched(patch) := object.union(base_input, patch)

with_transfer(fields) := patched({"transfer": fields})

with_debit(fields) := patched({"accounts": {"debit": fields}})

with_credit(fields) := patched({"accounts": {"credit": fields}})

# A rich debit account, so that large-amount tests only hit the limit under test.
rich := {"balance": "100000000.00", "balance_minor": 10000000000}

# The same transfer between two JPY accounts (0 minor units).
jpy_input(amount_minor, debited_today_minor) := patched({
	"transfer": {"amount": sprintf("%d", [amount_minor]), "amount_minor": amount_minor, "currency": "JPY", "currency_minor_units": 0},
	"accounts": {
		"debit": {"currency": "JPY", "balance": "100000000", "balance_minor": 100000000, "debited_today_minor": debited_today_minor},
		"credit": {"currency": "JPY"},
	},
})

codes(d) := [r.code | some r in d.reasons]

denied_only_for(d, code) if {
	d.allow == false
	codes(d) == [code]
}

# ---------------------------------------------------------------------------
# Decision document shape
# ---------------------------------------------------------------------------

test_valid_transfer_allowed if {
	d := transfer.decision with input as base_input
	d == {"allow": true, "reasons": [], "obligations": []}
}

test_empty_input_denied if {
	d := transfer.decision with input as {}
	d.allow == false
	"input.invalid" in codes(d)
	is_array(d.reasons)
	d.obligations == []
}

test_non_object_input_denied if {
	d := transfer.decision with input as "transfer please"
	d.allow == false
	"input.invalid" in codes(d)
}

test_reasons_are_code_message_objects if {
	d := transfer.decision with input as {}
	count(d.reasons) > 0
	every r in d.reasons {
		object.keys(r) == {"code", "message"}
		is_string(r.message)
		count(r.message) > 0
	}
}

test_multiple_violations_all_reported_sorted if {
	inp := patched({
		"transfer": {"amount_minor": 100000001, "credit_account": "IR062960000000100324200001"},
		"subject": {"roles": ["auditor"]},
		"accounts": {"debit": {"status": "frozen"}, "credit": {"id": "IR062960000000100324200001"}},
		"context": {"audit": {"enabled": false}},
	})
	d := transfer.decision with input as inp
	d.allow == false
	codes(d) == [
		"account.debit_not_active",
		"audit.disabled",
		"funds.insufficient",
		"limit.single_transfer_exceeded",
		"sanctions.country_listed",
		"subject.role_not_authorized",
	]
}

test_reasons_sorted_by_code if {
	d := transfer.decision with input as {"action": "nope", "context": {"audit": {"enabled": false}}}
	count(d.reasons) > 2
	codes(d) == sort(codes(d))
}

test_messages_do_not_reveal_account_numbers if {
	inp := patched({"accounts": {"debit": {"status": "closed"}, "credit": {"status": "frozen"}}})
	d := transfer.decision with input as inp
	count(d.reasons) == 2
	every r in d.reasons {
		not contains(r.message, debit_id)
		not contains(r.message, credit_id)
	}
	d.reasons[0].message == "credit account ending in 2606 is not active (status: frozen)"
	d.reasons[1].message == "debit account ending in 3000 is not active (status: closed)"
}

# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------

test_wrong_action_invalid if {
	d_input := patched({"action": "account.create"})
	d := transfer.decision with input as d_input
	denied_only_for(d, "input.invalid")
}

test_missing_amount_minor_invalid if {
	inp := json.remove(base_input, ["transfer/amount_minor"])
	d := transfer.decision with input as inp
	denied_only_for(d, "input.invalid")
	contains(d.reasons[0].message, "transfer.amount_minor must be a positive integer")
}

test_fractional_amount_minor_invalid if {
	d_input := with_transfer({"amount_minor": 1500.5})
	d := transfer.decision with input as d_input
	denied_only_for(d, "input.invalid")
}

test_string_amount_minor_invalid if {
	d_input := with_transfer({"amount_minor": "150000"})
	d := transfer.decision with input as d_input
	denied_only_for(d, "input.invalid")
}

test_zero_amount_invalid if {
	d_input := with_transfer({"amount_minor": 0})
	d := transfer.decision with input as d_input
	denied_only_for(d, "input.invalid")
}

test_minor_units_must_match_currency if {
	d_input := jpy_input(1000, 0)
	d := transfer.decision with input as d_input
	d.allow == true
	d2_input := object.union(jpy_input(1000, 0), {"transfer": {"currency_minor_units": 2}})
	d2 := transfer.decision with input as d2_input
	denied_only_for(d2, "input.invalid")
	contains(d2.reasons[0].message, "JPY has 0 minor units")
}

test_optional_fields_may_be_null if {
	inp := with_transfer({"end_to_end_id": null, "purpose": null, "remittance_info": null})
	d := transfer.decision with input as inp
	d.allow == true
}

test_optional_field_wrong_type_invalid if {
	d_input := with_transfer({"purpose": 42})
	d := transfer.decision with input as d_input
	denied_only_for(d, "input.invalid")
}

test_account_state_must_match_transfer if {
	d_input := with_debit({"id": "DE02120300000000202051"})
	d := transfer.decision with input as d_input
	denied_only_for(d, "input.invalid")
}

# ---------------------------------------------------------------------------
# subject.role_not_authorized
# ---------------------------------------------------------------------------

test_teller_role_allowed if {
	d_input := patched({"subject": {"roles": ["auditor", "teller"]}})
	d := transfer.decision with input as d_input
	d.allow == true
}

test_role_not_authorized_denied if {
	d_input := patched({"subject": {"roles": ["auditor"]}})
	d := transfer.decision with input as d_input
	denied_only_for(d, "subject.role_not_authorized")
}

test_no_roles_denied if {
	d_input := patched({"subject": {"roles": []}})
	d := transfer.decision with input as d_input
	denied_only_for(d, "subject.role_not_authorized")
}

test_initiator_roles_come_from_data if {
	d := transfer.decision with input as base_input
		with data.countersign.config.initiator_roles as ["teller"]
	denied_only_for(d, "subject.role_not_authorized")
}

# ---------------------------------------------------------------------------
# limit.single_transfer_exceeded / limit.not_configured
# ---------------------------------------------------------------------------

test_single_limit_exactly_at_limit_allowed if {
	inp := patched({"transfer": {"amount": "1000000.00", "amount_minor": 100000000}, "accounts": {"debit": rich}})
	d := transfer.decision with input as inp
	d.allow == true
}

test_single_limit_one_minor_unit_over_denied if {
	inp := patched({"transfer": {"amount": "1000000.01", "amount_minor": 100000001}, "accounts": {"debit": rich}})
	d := transfer.decision with input as inp
	denied_only_for(d, "limit.single_transfer_exceeded")
	d.reasons[0].message == "transfer amount 1000000.01 EUR exceeds the single-transfer limit of 1000000.00 EUR"
}

test_single_limit_jpy_boundary if {
	at_input := jpy_input(1000000, 0)
	at := transfer.decision with input as at_input
	at.allow == true
	over_input := jpy_input(1000001, 0)
	over := transfer.decision with input as over_input
	denied_only_for(over, "limit.single_transfer_exceeded")
	over.reasons[0].message == "transfer amount 1000001 JPY exceeds the single-transfer limit of 1000000 JPY"
}

test_single_limit_comes_from_data if {
	d := transfer.decision with input as base_input
		with data.countersign.config.single_transfer_limit_minor as {"EUR": 149999}
	denied_only_for(d, "limit.single_transfer_exceeded")
}

test_limit_not_configured_denied if {
	d := transfer.decision with input as base_input
		with data.countersign.config.single_transfer_limit_minor as {"USD": 100000000}
	denied_only_for(d, "limit.not_configured")
}

test_unknown_currency_denied_without_limits if {
	inp := patched({"transfer": {"currency": "SEK"}, "accounts": {"debit": {"currency": "SEK"}, "credit": {"currency": "SEK"}}})
	d := transfer.decision with input as inp
	d.allow == false
	codes(d) == ["currency.not_allowed", "limit.not_configured", "limit.not_configured"]
}

# ---------------------------------------------------------------------------
# limit.daily_exceeded
# ---------------------------------------------------------------------------

test_daily_limit_exactly_at_limit_allowed if {
	d_input := with_debit({"debited_today": "4998500.00", "debited_today_minor": 499850000})
	d := transfer.decision with input as d_input
	d.allow == true
}

test_daily_limit_one_minor_unit_over_denied if {
	d_input := with_debit({"debited_today": "4998500.01", "debited_today_minor": 499850001})
	d := transfer.decision with input as d_input
	denied_only_for(d, "limit.daily_exceeded")
	d.reasons[0].message == "debits today would total 5000000.01 EUR (already 4998500.01 EUR), exceeding the daily limit of 5000000.00 EUR per debit account"
}

test_daily_limit_comes_from_data if {
	d_input := with_debit({"debited_today_minor": 1})
	d := transfer.decision with input as d_input
		with data.countersign.config.daily_debit_limit_minor as {"EUR": 150000}
	denied_only_for(d, "limit.daily_exceeded")
}

# ---------------------------------------------------------------------------
# audit.disabled
# ---------------------------------------------------------------------------

test_audit_disabled_denied if {
	d_input := patched({"context": {"audit": {"enabled": false}}})
	d := transfer.decision with input as d_input
	denied_only_for(d, "audit.disabled")
}

test_audit_flag_missing_denied if {
	inp := json.remove(base_input, ["context/audit"])
	d := transfer.decision with input as inp
	denied_only_for(d, "audit.disabled")
}

test_audit_flag_must_be_boolean_true if {
	d_input := patched({"context": {"audit": {"enabled": "true"}}})
	d := transfer.decision with input as d_input
	denied_only_for(d, "audit.disabled")
}

# ---------------------------------------------------------------------------
# account.debit_not_active / account.credit_not_active
# ---------------------------------------------------------------------------

test_debit_frozen_denied if {
	d_input := with_debit({"status": "frozen"})
	d := transfer.decision with input as d_input
	denied_only_for(d, "account.debit_not_active")
}

test_credit_closed_denied if {
	d_input := with_credit({"status": "closed"})
	d := transfer.decision with input as d_input
	denied_only_for(d, "account.credit_not_active")
}

test_missing_status_denied if {
	inp := json.remove(base_input, ["accounts/debit/status"])
	d := transfer.decision with input as inp
	"account.debit_not_active" in codes(d)
	"input.invalid" in codes(d)
	d.allow == false
}

# ---------------------------------------------------------------------------
# sanctions.account_listed / sanctions.country_listed
# ---------------------------------------------------------------------------

test_sanctioned_debit_account_denied if {
	sanctioned := "DE00999900000000000666"
	inp := patched({"transfer": {"debit_account": sanctioned}, "accounts": {"debit": {"id": sanctioned}}})
	d := transfer.decision with input as inp
	denied_only_for(d, "sanctions.account_listed")
	d.reasons[0].message == "debit account ending in 0666 is on the sanctions list"
}

test_sanctioned_account_matched_after_normalisation if {
	written := "gb00 sanc 0000 0000 0000 01"
	inp := patched({"transfer": {"credit_account": written}, "accounts": {"credit": {"id": written}}})
	d := transfer.decision with input as inp
	denied_only_for(d, "sanctions.account_listed")
}

test_sanctioned_account_list_comes_from_data if {
	d := transfer.decision with input as base_input
		with data.countersign.config.sanctions.accounts as [credit_id]
	denied_only_for(d, "sanctions.account_listed")
}

test_sanctioned_country_credit_denied if {
	iran := "IR062960000000100324200001"
	inp := patched({"transfer": {"credit_account": iran}, "accounts": {"credit": {"id": iran}}})
	d := transfer.decision with input as inp
	denied_only_for(d, "sanctions.country_listed")
	d.reasons[0].message == "credit account ending in 0001 is held in sanctioned country IR"
}

test_sanctioned_country_debit_denied if {
	cuba := "CU12345678901234567890"
	inp := patched({"transfer": {"debit_account": cuba}, "accounts": {"debit": {"id": cuba}}})
	d := transfer.decision with input as inp
	denied_only_for(d, "sanctions.country_listed")
}

test_non_iban_account_not_country_screened if {
	internal := "CUSTOMER-000042"
	inp := patched({"transfer": {"credit_account": internal}, "accounts": {"credit": {"id": internal}}})
	d := transfer.decision with input as inp
	d.allow == true
}

test_sanctioned_countries_come_from_data if {
	d := transfer.decision with input as base_input
		with data.countersign.config.sanctions.countries as ["FR"]
	denied_only_for(d, "sanctions.country_listed")
}

# ---------------------------------------------------------------------------
# currency.not_allowed (and account.currency_mismatch)
# ---------------------------------------------------------------------------

test_allowed_currency_usd if {
	inp := patched({"transfer": {"currency": "USD"}, "accounts": {"debit": {"currency": "USD"}, "credit": {"currency": "USD"}}})
	d := transfer.decision with input as inp
	d.allow == true
}

test_currency_not_allowed_denied if {
	d := transfer.decision with input as base_input
		with data.countersign.config.allowed_currencies as ["USD"]
	denied_only_for(d, "currency.not_allowed")
	d.reasons[0].message == "currency EUR is not allowed for transfers"
}

test_malformed_currency_denied if {
	d_input := with_transfer({"currency": "eur"})
	d := transfer.decision with input as d_input
	d.allow == false
	"input.invalid" in codes(d)
	"currency.not_allowed" in codes(d)
}

test_account_currency_mismatch_denied if {
	d_input := with_credit({"currency": "USD"})
	d := transfer.decision with input as d_input
	denied_only_for(d, "account.currency_mismatch")
}

# ---------------------------------------------------------------------------
# funds.insufficient
# ---------------------------------------------------------------------------

test_exact_balance_allowed if {
	d_input := with_debit({"balance": "1500.00", "balance_minor": 150000})
	d := transfer.decision with input as d_input
	d.allow == true
}

test_funds_insufficient_denied if {
	d_input := with_debit({"balance": "1499.99", "balance_minor": 149999})
	d := transfer.decision with input as d_input
	denied_only_for(d, "funds.insufficient")
	d.reasons[0].message == "debit account ending in 3000 has a balance of 1499.99 EUR, less than the transfer amount of 1500.00 EUR, and no overdraft"
}

test_overdraft_allows_negative_balance if {
	d_input := with_debit({"overdraft_allowed": true, "balance": "-5.00", "balance_minor": -500})
	d := transfer.decision with input as d_input
	d.allow == true
}

test_overdraft_flag_missing_means_no_overdraft if {
	inp := json.remove(with_debit({"balance_minor": -500}), ["accounts/debit/overdraft_allowed"])
	d := transfer.decision with input as inp
	d.allow == false
	codes(d) == ["funds.insufficient", "input.invalid"]
	contains(d.reasons[0].message, "balance of -5.00 EUR")
}

# ---------------------------------------------------------------------------
# Money formatting helper (integer minor units -> decimal text, no floats)
# ---------------------------------------------------------------------------

test_decimal_text if {
	transfer.decimal_text(150000, 2) == "1500.00"
	transfer.decimal_text(5, 2) == "0.05"
	transfer.decimal_text(0, 2) == "0.00"
	transfer.decimal_text(-150, 2) == "-1.50"
	transfer.decimal_text(-5, 3) == "-0.005"
	transfer.decimal_text(1000000, 0) == "1000000"
	transfer.decimal_text(-500, 0) == "-500"
}
