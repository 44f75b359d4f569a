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
			"reserved": "0.00",
			"reserved_minor": 0,
			"available": "10000.00",
			"available_minor": 1000000,
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
			"reserved": "0.00",
			"reserved_minor": 0,
			"available": "0.00",
			"available_minor": 0,
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

# Consistent money fields of an account (available = balance - reserved), as the gateway
# sends them; `units` is the currency's number of minor units.
funds(balance_minor, reserved_minor, units) := {
	"balance": transfer.decimal_text(balance_minor, units),
	"balance_minor": balance_minor,
	"reserved": transfer.decimal_text(reserved_minor, units),
	"reserved_minor": reserved_minor,
	"available": transfer.decimal_text(balance_minor - reserved_minor, units),
	"available_minor": balance_minor - reserved_minor,
}

# A rich debit account, so that large-amount tests only hit the limit under test.
rich := funds(10000000000, 0, 2)

# A EUR transfer of `amount_minor` from the rich account.
eur_input(amount_minor) := patched({
	"transfer": {"amount": transfer.decimal_text(amount_minor, 2), "amount_minor": amount_minor},
	"accounts": {"debit": rich},
})

# The same transfer between two JPY accounts (0 minor units).
jpy_input(amount_minor, debited_today_minor) := patched({
	"transfer": {"amount": sprintf("%d", [amount_minor]), "amount_minor": amount_minor, "currency": "JPY", "currency_minor_units": 0},
	"accounts": {
		"debit": object.union(funds(100000000, 0, 0), {"currency": "JPY", "debited_today_minor": debited_today_minor}),
		"credit": {"currency": "JPY"},
	},
})

# The obligation of an allowed transfer that needs `approvals` approvals.
approval_obligation(approvals, reason) := {
	"type": "require_approval",
	"approvals_required": approvals,
	"approver_roles": ["approver"],
	"reason": reason,
}

allowed_with_approval(d, approvals) if {
	d.allow == true
	d.reasons == []
	count(d.obligations) == 1
	d.obligations[0].type == "require_approval"
	d.obligations[0].approvals_required == approvals
}

allowed_straight_through(d) if {
	d.allow == true
	d.reasons == []
	d.obligations == []
}

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
	d.obligations == []
	codes(d) == [
		"account.debit_not_active",
		"audit.disabled",
		"funds.insufficient",
		"sanctions.country_listed",
		"subject.role_not_authorized",
	]

	# Without approval tiers the amount itself is a reason too.
	d2 := transfer.decision with input as inp
		with data.countersign.config.approval.tiers_minor as {}
	codes(d2) == [
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

test_reserved_and_available_fields_required if {
	inp := json.remove(base_input, [
		"accounts/debit/reserved_minor",
		"accounts/debit/available",
		"accounts/credit/reserved",
		"accounts/credit/available_minor",
	])
	d := transfer.decision with input as inp
	denied_only_for(d, "input.invalid")
	d.reasons[0].message == concat("; ", [
		"invalid policy input: accounts.credit.available_minor must be an integer",
		"accounts.credit.reserved must be a non-empty string",
		"accounts.debit.available must be a non-empty string",
		"accounts.debit.reserved_minor must be a non-negative integer",
	])
}

test_reserved_minor_must_be_non_negative_integer if {
	negative_input := with_debit({"reserved_minor": -1, "available_minor": 1000001})
	negative := transfer.decision with input as negative_input
	denied_only_for(negative, "input.invalid")
	negative.reasons[0].message == "invalid policy input: accounts.debit.reserved_minor must be a non-negative integer"
	text_input := with_credit({"reserved_minor": "0"})
	text := transfer.decision with input as text_input
	denied_only_for(text, "input.invalid")
	fraction_input := with_debit({"reserved_minor": 0.5})
	fraction := transfer.decision with input as fraction_input
	denied_only_for(fraction, "input.invalid")
}

test_available_minor_must_be_integer if {
	d_input := with_debit({"available_minor": "1000000"})
	d := transfer.decision with input as d_input
	denied_only_for(d, "input.invalid")
	d.reasons[0].message == "invalid policy input: accounts.debit.available_minor must be an integer"
}

# available_minor is what the funds check trusts, so it must add up.
test_available_minor_must_equal_balance_less_reserved if {
	debit_input := with_debit({"reserved_minor": 100, "available_minor": 1000000})
	debit := transfer.decision with input as debit_input
	denied_only_for(debit, "input.invalid")
	debit.reasons[0].message == "invalid policy input: accounts.debit.available_minor must equal balance_minor - reserved_minor"
	credit_input := with_credit({"available_minor": 1})
	credit := transfer.decision with input as credit_input
	denied_only_for(credit, "input.invalid")
	credit.reasons[0].message == "invalid policy input: accounts.credit.available_minor must equal balance_minor - reserved_minor"
}

test_negative_available_is_valid_input if {
	d_input := with_credit(funds(-500, 1000, 2))
	d := transfer.decision with input as d_input
	allowed_straight_through(d)
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
	d_input := eur_input(100000000)
	d := transfer.decision with input as d_input
	allowed_straight_through(d)
}

# Without approval tiers for the currency the single-transfer limit denies outright.
test_single_limit_one_minor_unit_over_denied_without_tiers if {
	d_input := eur_input(100000001)
	d := transfer.decision with input as d_input
		with data.countersign.config.approval.tiers_minor as {"USD": [{"above_minor": 100000000, "approvals": 1}]}
	denied_only_for(d, "limit.single_transfer_exceeded")
	d.reasons[0].message == "transfer amount 1000000.01 EUR exceeds the single-transfer limit of 1000000.00 EUR"
	d.obligations == []
}

test_single_limit_jpy_boundary_without_tiers if {
	at_input := jpy_input(1000000, 0)
	at := transfer.decision with input as at_input
		with data.countersign.config.approval.tiers_minor as {}
	allowed_straight_through(at)
	over_input := jpy_input(1000001, 0)
	over := transfer.decision with input as over_input
		with data.countersign.config.approval.tiers_minor as {}
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

# The daily limit applies to a straight-through transfer of any size up to the single limit.
test_daily_limit_applies_at_the_single_limit if {
	d_input := object.union(eur_input(100000000), {"accounts": {"debit": {"debited_today": "4000000.01", "debited_today_minor": 400000001}}})
	d := transfer.decision with input as d_input
	denied_only_for(d, "limit.daily_exceeded")
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
	d_input := with_debit(funds(150000, 0, 2))
	d := transfer.decision with input as d_input
	d.allow == true
}

test_funds_insufficient_denied if {
	d_input := with_debit(funds(149999, 0, 2))
	d := transfer.decision with input as d_input
	denied_only_for(d, "funds.insufficient")
	d.reasons[0].message == "debit account ending in 3000 has an available balance of 1499.99 EUR, less than the transfer amount of 1500.00 EUR, and no overdraft"
}

# Debits reserved by transfers awaiting approval are not available, though still in the balance.
test_funds_reserved_for_pending_transfers_not_available if {
	d_input := with_debit(funds(1000000, 900000, 2))
	d := transfer.decision with input as d_input
	denied_only_for(d, "funds.insufficient")
	d.reasons[0].message == "debit account ending in 3000 has an available balance of 1000.00 EUR (balance 10000.00 EUR, of which 9000.00 EUR reserved for transfers awaiting approval), less than the transfer amount of 1500.00 EUR, and no overdraft"
}

test_funds_exactly_available_allowed if {
	d_input := with_debit(funds(1000000, 850000, 2))
	d := transfer.decision with input as d_input
	allowed_straight_through(d)
}

test_funds_available_negative_after_reservation_denied if {
	d_input := with_debit(funds(100000, 250000, 2))
	d := transfer.decision with input as d_input
	denied_only_for(d, "funds.insufficient")
	contains(d.reasons[0].message, "available balance of -1500.00 EUR (balance 1000.00 EUR, of which 2500.00 EUR reserved")
}

test_overdraft_allows_negative_balance if {
	d_input := with_debit(object.union(funds(-500, 0, 2), {"overdraft_allowed": true}))
	d := transfer.decision with input as d_input
	d.allow == true
}

test_overdraft_ignores_reservations if {
	d_input := with_debit(object.union(funds(1000000, 1000000, 2), {"overdraft_allowed": true}))
	d := transfer.decision with input as d_input
	d.allow == true
}

test_overdraft_flag_missing_means_no_overdraft if {
	inp := json.remove(with_debit(funds(-500, 0, 2)), ["accounts/debit/overdraft_allowed"])
	d := transfer.decision with input as inp
	d.allow == false
	codes(d) == ["funds.insufficient", "input.invalid"]
	contains(d.reasons[0].message, "available balance of -5.00 EUR")
}

# ---------------------------------------------------------------------------
# Approval required (maker-checker): allow with a require_approval obligation
# ---------------------------------------------------------------------------

test_approval_required_one_approval if {
	d_input := eur_input(200000000)
	d := transfer.decision with input as d_input
	d == {
		"allow": true,
		"reasons": [],
		"obligations": [approval_obligation(
			1,
			"transfer amount 2000000.00 EUR exceeds the single-transfer limit of 1000000.00 EUR: 1 approval required",
		)],
	}
}

test_approval_required_one_minor_unit_over_single_limit if {
	d_input := eur_input(100000001)
	d := transfer.decision with input as d_input
	allowed_with_approval(d, 1)
	d.obligations[0].reason == "transfer amount 1000000.01 EUR exceeds the single-transfer limit of 1000000.00 EUR: 1 approval required"
}

test_approval_second_tier_boundary if {
	at_input := eur_input(1000000000)
	at := transfer.decision with input as at_input
	allowed_with_approval(at, 1)
	over_input := eur_input(1000000001)
	over := transfer.decision with input as over_input
	over == {
		"allow": true,
		"reasons": [],
		"obligations": [approval_obligation(
			2,
			"transfer amount 10000000.01 EUR exceeds the single-transfer limit of 1000000.00 EUR: 2 approvals required",
		)],
	}
}

test_approval_tiers_jpy if {
	at_limit_input := jpy_input(1000000, 0)
	at_limit := transfer.decision with input as at_limit_input
	allowed_straight_through(at_limit)
	over_limit_input := jpy_input(1000001, 0)
	over_limit := transfer.decision with input as over_limit_input
	allowed_with_approval(over_limit, 1)
	over_limit.obligations[0].reason == "transfer amount 1000001 JPY exceeds the single-transfer limit of 1000000 JPY: 1 approval required"
	at_second_input := jpy_input(10000000, 0)
	at_second := transfer.decision with input as at_second_input
	allowed_with_approval(at_second, 1)
	over_second_input := jpy_input(10000001, 0)
	over_second := transfer.decision with input as over_second_input
	allowed_with_approval(over_second, 2)
}

test_approval_tiers_usd if {
	inp := object.union(eur_input(1500000000), {
		"transfer": {"currency": "USD"},
		"accounts": {"debit": {"currency": "USD"}, "credit": {"currency": "USD"}},
	})
	d := transfer.decision with input as inp
	allowed_with_approval(d, 2)
	d.obligations[0].reason == "transfer amount 15000000.00 USD exceeds the single-transfer limit of 1000000.00 USD: 2 approvals required"
}

# Above the single limit but at or below every tier: no approval path, the limit denies.
test_amount_not_above_any_tier_denied if {
	tiers := {"EUR": [{"above_minor": 200000000, "approvals": 1}]}
	at_tier_input := eur_input(200000000)
	at_tier := transfer.decision with input as at_tier_input
		with data.countersign.config.approval.tiers_minor as tiers
	denied_only_for(at_tier, "limit.single_transfer_exceeded")
	at_tier.reasons[0].message == "transfer amount 2000000.00 EUR exceeds the single-transfer limit of 1000000.00 EUR"
	at_tier.obligations == []
	over_tier_input := eur_input(200000001)
	over_tier := transfer.decision with input as over_tier_input
		with data.countersign.config.approval.tiers_minor as tiers
	allowed_with_approval(over_tier, 1)
}

# Tiers only apply above the single-transfer limit.
test_tier_below_single_limit_does_not_require_approval if {
	d := transfer.decision with input as base_input
		with data.countersign.config.approval.tiers_minor as {"EUR": [{"above_minor": 0, "approvals": 1}]}
	allowed_straight_through(d)
}

test_largest_approvals_of_applicable_tiers if {
	d_input := eur_input(2000000000)
	unordered := transfer.decision with input as d_input
		with data.countersign.config.approval.tiers_minor as {"EUR": [
			{"above_minor": 1000000000, "approvals": 2},
			{"above_minor": 100000000, "approvals": 1},
		]}
	allowed_with_approval(unordered, 2)
	not_monotonic := transfer.decision with input as d_input
		with data.countersign.config.approval.tiers_minor as {"EUR": [
			{"above_minor": 100000000, "approvals": 3},
			{"above_minor": 1000000000, "approvals": 2},
			{"above_minor": 3000000000, "approvals": 5},
		]}
	allowed_with_approval(not_monotonic, 3)
	not_monotonic.obligations[0].reason == "transfer amount 20000000.00 EUR exceeds the single-transfer limit of 1000000.00 EUR: 3 approvals required"
}

# One malformed tier makes the currency's tiers unusable: skipping it could lower the count.
test_malformed_tier_denies if {
	d_input := eur_input(400000000)
	d := transfer.decision with input as d_input
		with data.countersign.config.approval.tiers_minor as {"EUR": [
			{"above_minor": 100000000, "approvals": 1},
			{"above_minor": 300000000, "approvals": "2"},
		]}
	denied_only_for(d, "limit.single_transfer_exceeded")
	zero_input := eur_input(200000000)
	zero := transfer.decision with input as zero_input
		with data.countersign.config.approval.tiers_minor as {"EUR": [{"above_minor": 100000000, "approvals": 0}]}
	denied_only_for(zero, "limit.single_transfer_exceeded")
	not_a_list := transfer.decision with input as zero_input
		with data.countersign.config.approval.tiers_minor as {"EUR": {"above_minor": 100000000, "approvals": 1}}
	denied_only_for(not_a_list, "limit.single_transfer_exceeded")
	empty := transfer.decision with input as zero_input
		with data.countersign.config.approval.tiers_minor as {"EUR": []}
	denied_only_for(empty, "limit.single_transfer_exceeded")
}

# Nobody could approve: the transfer is refused rather than held for ever.
test_no_approver_roles_denies if {
	d_input := eur_input(200000000)
	empty := transfer.decision with input as d_input
		with data.countersign.config.approval.approver_roles as []
	denied_only_for(empty, "limit.single_transfer_exceeded")
	malformed := transfer.decision with input as d_input
		with data.countersign.config.approval.approver_roles as "approver"
	denied_only_for(malformed, "limit.single_transfer_exceeded")
	empty_name := transfer.decision with input as d_input
		with data.countersign.config.approval.approver_roles as ["approver", ""]
	denied_only_for(empty_name, "limit.single_transfer_exceeded")
	missing := transfer.decision with input as d_input
		with data.countersign.config.approval as {"tiers_minor": {"EUR": [{"above_minor": 100000000, "approvals": 1}]}}
	denied_only_for(missing, "limit.single_transfer_exceeded")
}

test_approver_roles_come_from_data_sorted if {
	d_input := eur_input(200000000)
	d := transfer.decision with input as d_input
		with data.countersign.config.approval.approver_roles as ["treasury", "approver", "treasury"]
	allowed_with_approval(d, 1)
	d.obligations[0].approver_roles == ["approver", "treasury"]
}

# Deny wins: a transfer with any deny reason is refused and carries no obligation.
test_deny_wins_over_approval if {
	d_input := object.union(eur_input(200000000), {"accounts": {"debit": {"status": "frozen"}}})
	d := transfer.decision with input as d_input
	d == {
		"allow": false,
		"reasons": [{"code": "account.debit_not_active", "message": "debit account ending in 3000 is not active (status: frozen)"}],
		"obligations": [],
	}
}

test_approval_still_needs_available_funds if {
	d_input := patched({
		"transfer": {"amount": "2000000.00", "amount_minor": 200000000},
		"accounts": {"debit": funds(300000000, 150000000, 2)},
	})
	d := transfer.decision with input as d_input
	denied_only_for(d, "funds.insufficient")
	d.obligations == []
}

test_approval_still_needs_an_initiator_role if {
	d_input := object.union(eur_input(200000000), {"subject": {"roles": ["approver"]}})
	d := transfer.decision with input as d_input
	denied_only_for(d, "subject.role_not_authorized")
	d.obligations == []
}

test_approval_needs_a_single_limit if {
	d_input := eur_input(200000000)
	d := transfer.decision with input as d_input
		with data.countersign.config.single_transfer_limit_minor as {"USD": 100000000}
	denied_only_for(d, "limit.not_configured")
	d.obligations == []
}

# A transfer that needs approval is exempt from the daily limit: its approvers decide.
test_approval_exempt_from_daily_limit if {
	d_input := object.union(eur_input(200000000), {"accounts": {"debit": {"debited_today": "4999999.99", "debited_today_minor": 499999999}}})
	d := transfer.decision with input as d_input
	allowed_with_approval(d, 1)
	huge_input := object.union(eur_input(900000000), {"accounts": {"debit": {"debited_today": "4000000.00", "debited_today_minor": 400000000}}})
	huge := transfer.decision with input as huge_input
	allowed_with_approval(huge, 1)
}

test_daily_limit_still_applies_without_tiers if {
	d_input := object.union(eur_input(200000000), {"accounts": {"debit": {"debited_today": "4000000.00", "debited_today_minor": 400000000}}})
	d := transfer.decision with input as d_input
		with data.countersign.config.approval.tiers_minor as {}
	d.allow == false
	codes(d) == ["limit.daily_exceeded", "limit.single_transfer_exceeded"]
	d.obligations == []
}

test_obligation_reason_is_plain_text if {
	d_input := eur_input(200000000)
	d := transfer.decision with input as d_input
	every o in d.obligations {
		object.keys(o) == {"type", "approvals_required", "approver_roles", "reason"}
		not contains(o.reason, debit_id)
		not contains(o.reason, credit_id)
	}
}

test_approvals_text if {
	transfer.approvals_text(1) == "1 approval"
	transfer.approvals_text(2) == "2 approvals"
	transfer.approvals_text(12) == "12 approvals"
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

test_approval_ceiling_is_the_largest_approver_limit if {
	at_input := eur_input(5000000000)
	at := transfer.decision with input as at_input
	allowed_with_approval(at, 2)
	over_input := eur_input(5000000001)
	over := transfer.decision with input as over_input
	over == {
		"allow": false,
		"reasons": [{
			"code": "limit.approval_ceiling_exceeded",
			"message": "transfer amount 50000000.01 EUR exceeds the largest approval limit of 50000000.00 EUR: no approver may approve it",
		}],
		"obligations": [],
	}
}

test_approval_ceiling_counts_only_approver_roles if {
	limits := {"approver": {"EUR": 200000000}, "channel": {"EUR": 9000000000}}
	d_input := eur_input(300000000)
	d := transfer.decision with input as d_input with data.countersign.config.approval.approver_limits_minor as limits
	denied_only_for(d, "limit.approval_ceiling_exceeded")
}

test_approval_without_any_approver_limit_is_refused if {
	d_input := eur_input(200000000)
	d := transfer.decision with input as d_input with data.countersign.config.approval.approver_limits_minor as {}
	d == {
		"allow": false,
		"reasons": [{
			"code": "limit.approval_ceiling_exceeded",
			"message": "no approval limit is configured for currency EUR: no approver may approve it",
		}],
		"obligations": [],
	}
}

test_approval_ceiling_does_not_touch_straight_through_transfers if {
	d_input := eur_input(100000000)
	d := transfer.decision with input as d_input with data.countersign.config.approval.approver_limits_minor as {}
	allowed_straight_through(d)
}
