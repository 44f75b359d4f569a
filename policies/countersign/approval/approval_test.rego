package countersign.approval_test

import data.countersign.approval

# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

debit_id := "DE89370400440532013000"

credit_id := "FR1420041010050500013M02606"

alice := "b1ce32cf07261acb121dcb8d68c3b685dd666dc77f5df67773cd2b9af49a0776"

bob := "ac6e32e0c1f2c4304d628ce5cdd93032aa4501dbc4159baa7b8e740172d47e8d"

teller := "bdb500d2ccc79648880d7adc1637a3ec7a242aa4c0ea00f8e91da6f12a4dd3c5"

# Alice gives the first of two approvals of a 2,000,000.00 EUR transfer made by teller-1.
base_input := {
	"action": "approve",
	"approver": {
		"fingerprint_sha256": alice,
		"common_name": "approver-alice",
		"roles": ["approver"],
	},
	"initiator": {
		"fingerprint_sha256": teller,
		"common_name": "teller-1",
	},
	"transfer": {
		"id": "0193a5b2-7c1e-7d3f-9a40-2f1c8e6b1a01",
		"debit_account": debit_id,
		"credit_account": credit_id,
		"amount": "2000000.00",
		"amount_minor": 200000000,
		"currency": "EUR",
		"currency_minor_units": 2,
		"end_to_end_id": "E2E-1",
		"purpose": null,
		"remittance_info": "invoice 42",
	},
	"approval": {
		"id": "0193a5b2-7c1e-7d3f-9a40-2f1c8e6b1a10",
		"status": "pending",
		"approvals_required": 2,
		"approver_roles": ["approver"],
		"approvals": [],
		"expires_at": "2026-11-27T12:00:00Z",
		"initiation_decision_id": "0193a5b2-7c1e-7d3f-9a40-2f1c8e6b1a11",
	},
	"comment": null,
	"context": {
		"time": "2026-11-26T13:00:00.123456789Z",
		"request_id": "0193a5b2-7c1e-7d3f-9a40-2f1c8e6b1a12",
		"source_address": "10.20.30.41:51515",
		"audit": {"enabled": true},
	},
}

# object.union merges recursively, so patches only name what they change.
patched(patch) := object.union(base_input, patch)

rejecting := patched({"action": "reject"})

# Bob's approval, already accepted.
bob_approved := {
	"fingerprint_sha256": bob,
	"common_name": "approver-bob",
	"decision_id": "0193a5b2-7c1e-7d3f-9a40-2f1c8e6b1a13",
	"at": "2026-11-26T12:30:00Z",
}

with_amount(amount, amount_minor) := patched({"transfer": {"amount": amount, "amount_minor": amount_minor}})

jpy_amount(amount_minor) := patched({"transfer": {
	"amount": sprintf("%d", [amount_minor]),
	"amount_minor": amount_minor,
	"currency": "JPY",
	"currency_minor_units": 0,
}})

codes(d) := [r.code | some r in d.reasons]

allowed(d) if d == {"allow": true, "reasons": [], "obligations": []}

denied_only_for(d, code) if {
	d.allow == false
	codes(d) == [code]
	d.obligations == []
}

# ---------------------------------------------------------------------------
# Decision document shape and allowed decisions
# ---------------------------------------------------------------------------

test_approve_allowed if {
	d := approval.decision with input as base_input
	allowed(d)
}

test_reject_allowed if {
	d := approval.decision with input as rejecting
	allowed(d)
}

test_second_approval_by_another_approver_allowed if {
	d_input := patched({"approval": {"approvals": [bob_approved]}})
	d := approval.decision with input as d_input
	allowed(d)
}

test_reject_after_another_approval_allowed if {
	d_input := patched({"action": "reject", "approval": {"approvals": [bob_approved]}})
	d := approval.decision with input as d_input
	allowed(d)
}

test_unknown_keys_ignored_and_names_may_be_null if {
	d_input := patched({
		"approver": {"common_name": null, "serial": "0a1b", "organization": ["Example Bank"]},
		"initiator": {"common_name": null, "roles": ["teller"]},
		"comment": "checked with the customer by phone",
		"extra": {"anything": true},
	})
	d := approval.decision with input as d_input
	allowed(d)
}

test_comment_may_be_absent if {
	d_input := json.remove(base_input, ["comment"])
	d := approval.decision with input as d_input
	allowed(d)
}

test_empty_input_denied if {
	d := approval.decision with input as {}
	d.allow == false
	"input.invalid" in codes(d)
	d.obligations == []
}

test_non_object_input_denied if {
	d := approval.decision with input as "approve please"
	d.allow == false
	"input.invalid" in codes(d)
	d.obligations == []
}

test_null_input_denied if {
	d := approval.decision with input as null
	d.allow == false
	"input.invalid" in codes(d)
}

test_reasons_are_code_message_objects if {
	d := approval.decision with input as {}
	count(d.reasons) > 0
	every r in d.reasons {
		object.keys(r) == {"code", "message"}
		is_string(r.message)
		count(r.message) > 0
	}
}

test_empty_input_reasons if {
	d := approval.decision with input as {}
	codes(d) == ["approval.not_pending", "approval.role_not_authorized", "audit.disabled", "input.invalid"]
	d.reasons[3].message == concat("; ", [
		"invalid policy input: action must be \"approve\" or \"reject\"",
		"approval must be an object",
		"approval.approvals must be an array of objects with a string fingerprint_sha256",
		"approval.approvals_required must be a positive integer",
		"approval.approver_roles must be an array of strings",
		"approval.status must be a string",
		"approver must be an object",
		"approver.fingerprint_sha256 must be a non-empty string",
		"approver.roles must be an array of strings",
		"context must be an object",
		"initiator must be an object",
		"initiator.fingerprint_sha256 must be a non-empty string",
		"transfer must be an object",
		"transfer.amount_minor must be a positive integer",
		"transfer.currency must be a three-letter upper-case code",
	])
}

# Everything at once: every reason reported, sorted by code.
test_multiple_reasons_sorted if {
	d_input := patched({
		"approver": {"fingerprint_sha256": teller, "roles": ["approver"]},
		"transfer": {"amount": "50000000.01", "amount_minor": 5000000001},
		"approval": {"status": "expired", "approvals": [{"fingerprint_sha256": teller}]},
		"context": {"audit": {"enabled": false}},
	})
	d := approval.decision with input as d_input
	d == {
		"allow": false,
		"reasons": [
			{"code": "approval.already_approved", "message": "this client certificate has already approved this transfer"},
			{"code": "approval.limit_exceeded", "message": "transfer amount 50000000.01 EUR exceeds the approver's approval limit of 50000000.00 EUR"},
			{"code": "approval.not_pending", "message": "the transfer is not awaiting approval (status: expired)"},
			{"code": "approval.self_approval", "message": "four-eyes principle: the certificate that initiated this transfer may not approve or reject it"},
			{"code": "audit.disabled", "message": "approvals are refused while audit recording is not enabled"},
		],
		"obligations": [],
	}
}

test_multiple_reasons_with_unauthorized_role_sorted if {
	d_input := patched({
		"action": "reject",
		"approver": {"fingerprint_sha256": teller, "roles": ["teller"]},
		"approval": {"status": "posted", "approvals": [bob_approved]},
		"transfer": {"amount_minor": 0},
	})
	d := approval.decision with input as d_input
	codes(d) == ["approval.not_pending", "approval.role_not_authorized", "approval.self_approval", "input.invalid"]
}

test_messages_do_not_reveal_account_numbers if {
	d_input := patched({
		"approver": {"fingerprint_sha256": teller, "roles": ["teller"]},
		"transfer": {"amount_minor": 9000000000},
		"approval": {"status": "failed", "approvals": [{"fingerprint_sha256": teller}]},
		"context": {"audit": {"enabled": false}},
	})
	d := approval.decision with input as d_input
	count(d.reasons) >= 4
	every r in d.reasons {
		not contains(r.message, debit_id)
		not contains(r.message, credit_id)
		not contains(r.message, "invoice 42")
	}
}

# ---------------------------------------------------------------------------
# input.invalid
# ---------------------------------------------------------------------------

test_unknown_action_invalid if {
	d_input := patched({"action": "transfer.create"})
	d := approval.decision with input as d_input
	denied_only_for(d, "input.invalid")
	d.reasons[0].message == "invalid policy input: action must be \"approve\" or \"reject\""
}

test_missing_action_invalid if {
	d_input := json.remove(base_input, ["action"])
	d := approval.decision with input as d_input
	denied_only_for(d, "input.invalid")
}

test_fingerprints_must_be_non_empty_strings if {
	empty_input := patched({"approver": {"fingerprint_sha256": ""}})
	empty := approval.decision with input as empty_input
	denied_only_for(empty, "input.invalid")
	empty.reasons[0].message == "invalid policy input: approver.fingerprint_sha256 must be a non-empty string"
	missing_input := json.remove(base_input, ["initiator/fingerprint_sha256"])
	missing := approval.decision with input as missing_input
	denied_only_for(missing, "input.invalid")
	missing.reasons[0].message == "invalid policy input: initiator.fingerprint_sha256 must be a non-empty string"
	number_input := patched({"initiator": {"fingerprint_sha256": 42}})
	number := approval.decision with input as number_input
	denied_only_for(number, "input.invalid")
}

# An empty initiator fingerprint must not let anybody through as "not the initiator".
test_empty_fingerprints_never_allow if {
	d_input := patched({"approver": {"fingerprint_sha256": ""}, "initiator": {"fingerprint_sha256": ""}})
	d := approval.decision with input as d_input
	d.allow == false
}

test_approver_roles_must_be_string_array if {
	d_input := patched({"approver": {"roles": "approver"}})
	d := approval.decision with input as d_input
	d.allow == false
	codes(d) == ["approval.role_not_authorized", "input.invalid"]
	d.reasons[1].message == "invalid policy input: approver.roles must be an array of strings"
}

test_missing_sections_invalid if {
	d_input := json.remove(base_input, ["initiator", "transfer"])
	d := approval.decision with input as d_input
	denied_only_for(d, "input.invalid")
	d.reasons[0].message == concat("; ", [
		"invalid policy input: initiator must be an object",
		"initiator.fingerprint_sha256 must be a non-empty string",
		"transfer must be an object",
		"transfer.amount_minor must be a positive integer",
		"transfer.currency must be a three-letter upper-case code",
	])
}

test_approver_section_wrong_type_invalid if {
	d_input := patched({"approver": "approver-alice"})
	d := approval.decision with input as d_input
	d.allow == false
	codes(d) == ["approval.role_not_authorized", "input.invalid"]
}

test_amount_minor_must_be_positive_integer if {
	every amount_minor in [0, -1, 1.5, "200000000", null] {
		d_input := patched({"transfer": {"amount_minor": amount_minor}})
		d := approval.decision with input as d_input
		denied_only_for(d, "input.invalid")
		d.reasons[0].message == "invalid policy input: transfer.amount_minor must be a positive integer"
	}
}

test_currency_must_be_a_code if {
	d_input := patched({"transfer": {"currency": "eur"}})
	d := approval.decision with input as d_input
	denied_only_for(d, "input.invalid")
	d.reasons[0].message == "invalid policy input: transfer.currency must be a three-letter upper-case code"
}

test_status_must_be_string if {
	d_input := patched({"approval": {"status": 1}})
	d := approval.decision with input as d_input
	d.allow == false
	codes(d) == ["approval.not_pending", "input.invalid"]
	d.reasons[0].message == "the transfer is not awaiting approval (status: missing)"
}

test_approvals_required_must_be_positive_integer if {
	every required in [0, 1.5, "2", null] {
		d_input := patched({"approval": {"approvals_required": required}})
		d := approval.decision with input as d_input
		denied_only_for(d, "input.invalid")
		d.reasons[0].message == "invalid policy input: approval.approvals_required must be a positive integer"
	}
}

test_requested_roles_must_be_string_array if {
	d_input := patched({"approval": {"approver_roles": [1]}})
	d := approval.decision with input as d_input
	d.allow == false
	codes(d) == ["approval.role_not_authorized", "input.invalid"]
	d.reasons[1].message == "invalid policy input: approval.approver_roles must be an array of strings"
}

test_approvals_must_be_array_of_objects_with_fingerprint if {
	every approvals in [null, {}, "none", [bob], [{"common_name": "approver-bob"}], [{"fingerprint_sha256": 7}]] {
		d_input := patched({"approval": {"approvals": approvals}})
		d := approval.decision with input as d_input
		denied_only_for(d, "input.invalid")
		d.reasons[0].message == "invalid policy input: approval.approvals must be an array of objects with a string fingerprint_sha256"
	}
}

test_comment_must_be_string_or_null if {
	d_input := patched({"comment": 42})
	d := approval.decision with input as d_input
	denied_only_for(d, "input.invalid")
	d.reasons[0].message == "invalid policy input: comment must be a string or null"
}

# ---------------------------------------------------------------------------
# approval.role_not_authorized
# ---------------------------------------------------------------------------

test_role_not_authorized_denied if {
	d_input := patched({"approver": {"roles": ["teller", "channel"]}})
	d := approval.decision with input as d_input
	denied_only_for(d, "approval.role_not_authorized")
	d.reasons[0].message == "the client certificate holds no role that may approve or reject this transfer"
}

test_no_roles_denied if {
	d_input := patched({"approver": {"roles": []}})
	d := approval.decision with input as d_input
	denied_only_for(d, "approval.role_not_authorized")
}

test_role_not_authorized_applies_to_reject if {
	d_input := patched({"action": "reject", "approver": {"roles": ["teller"]}})
	d := approval.decision with input as d_input
	denied_only_for(d, "approval.role_not_authorized")
}

# The role must be one the obligation asked for...
test_role_must_be_requested_by_the_obligation if {
	d_input := patched({"approval": {"approver_roles": ["treasury"]}})
	d := approval.decision with input as d_input
		with data.countersign.config.approval.approver_roles as ["approver", "treasury"]
	denied_only_for(d, "approval.role_not_authorized")
}

# ... and one the configuration still names.
test_role_must_still_be_configured if {
	d := approval.decision with input as base_input
		with data.countersign.config.approval.approver_roles as ["treasury"]
	denied_only_for(d, "approval.role_not_authorized")
	r_input := patched({"action": "reject"})
	r := approval.decision with input as r_input
		with data.countersign.config.approval as {}
	denied_only_for(r, "approval.role_not_authorized")
}

test_any_matching_role_authorizes if {
	d_input := patched({
		"approver": {"roles": ["teller", "treasury"]},
		"approval": {"approver_roles": ["approver", "treasury"]},
	})
	d := approval.decision with input as d_input
		with data.countersign.config.approval.approver_roles as ["treasury"]
		with data.countersign.config.approval.approver_limits_minor as {"treasury": {"EUR": 200000000}}
	allowed(d)
}

# ---------------------------------------------------------------------------
# approval.self_approval (four eyes)
# ---------------------------------------------------------------------------

test_initiator_cannot_approve if {
	d_input := patched({"approver": {"fingerprint_sha256": teller}})
	d := approval.decision with input as d_input
	denied_only_for(d, "approval.self_approval")
	contains(d.reasons[0].message, "four-eyes")
}

test_initiator_cannot_reject if {
	d_input := patched({"action": "reject", "approver": {"fingerprint_sha256": teller}})
	d := approval.decision with input as d_input
	denied_only_for(d, "approval.self_approval")
}

test_self_approval_fingerprint_case_insensitive if {
	d_input := patched({"approver": {"fingerprint_sha256": upper(teller)}})
	d := approval.decision with input as d_input
	denied_only_for(d, "approval.self_approval")
}

# Identity is the certificate: the same common name on another certificate is another party.
test_self_approval_is_by_fingerprint if {
	d_input := patched({"approver": {"common_name": "teller-1"}})
	d := approval.decision with input as d_input
	allowed(d)
}

# ---------------------------------------------------------------------------
# approval.already_approved
# ---------------------------------------------------------------------------

test_same_approver_cannot_approve_twice if {
	d_input := patched({"approval": {"approvals": [bob_approved, object.union(bob_approved, {"fingerprint_sha256": alice})]}})
	d := approval.decision with input as d_input
	denied_only_for(d, "approval.already_approved")
	d.reasons[0].message == "this client certificate has already approved this transfer"
}

test_approver_cannot_reject_after_approving if {
	d_input := patched({"action": "reject", "approval": {"approvals": [{"fingerprint_sha256": alice}]}})
	d := approval.decision with input as d_input
	denied_only_for(d, "approval.already_approved")
}

test_already_approved_fingerprint_case_insensitive if {
	d_input := patched({"approval": {"approvals": [{"fingerprint_sha256": upper(alice)}]}})
	d := approval.decision with input as d_input
	denied_only_for(d, "approval.already_approved")
}

# ---------------------------------------------------------------------------
# approval.not_pending
# ---------------------------------------------------------------------------

test_not_pending_denied if {
	every status in ["posted", "rejected", "expired", "failed"] {
		d_input := patched({"approval": {"status": status}})
		d := approval.decision with input as d_input
		denied_only_for(d, "approval.not_pending")
		d.reasons[0].message == sprintf("the transfer is not awaiting approval (status: %s)", [status])
	}
}

test_not_pending_applies_to_reject if {
	d_input := patched({"action": "reject", "approval": {"status": "posted"}})
	d := approval.decision with input as d_input
	denied_only_for(d, "approval.not_pending")
}

test_missing_status_denied if {
	d_input := json.remove(base_input, ["approval/status"])
	d := approval.decision with input as d_input
	d.allow == false
	codes(d) == ["approval.not_pending", "input.invalid"]
	d.reasons[0].message == "the transfer is not awaiting approval (status: missing)"
}

test_status_is_case_sensitive if {
	d_input := patched({"approval": {"status": "PENDING"}})
	d := approval.decision with input as d_input
	denied_only_for(d, "approval.not_pending")
}

# ---------------------------------------------------------------------------
# approval.limit_exceeded (approve only)
# ---------------------------------------------------------------------------

test_approve_exactly_at_approval_limit_allowed if {
	d_input := with_amount("50000000.00", 5000000000)
	d := approval.decision with input as d_input
	allowed(d)
}

test_approve_one_minor_unit_over_approval_limit_denied if {
	d_input := with_amount("50000000.01", 5000000001)
	d := approval.decision with input as d_input
	denied_only_for(d, "approval.limit_exceeded")
	d.reasons[0].message == "transfer amount 50000000.01 EUR exceeds the approver's approval limit of 50000000.00 EUR"
}

test_approval_limit_jpy_boundary if {
	at_input := jpy_amount(50000000)
	at := approval.decision with input as at_input
	allowed(at)
	over_input := jpy_amount(50000001)
	over := approval.decision with input as over_input
	denied_only_for(over, "approval.limit_exceeded")
	over.reasons[0].message == "transfer amount 50000001 JPY exceeds the approver's approval limit of 50000000 JPY"
}

test_no_approval_limit_for_currency_denied if {
	d := approval.decision with input as base_input
		with data.countersign.config.approval.approver_limits_minor as {"approver": {"USD": 5000000000}}
	denied_only_for(d, "approval.limit_exceeded")
	d.reasons[0].message == "no approval limit is configured in EUR for any approver role of the client certificate"
}

test_no_approval_limits_configured_denied if {
	d := approval.decision with input as base_input
		with data.countersign.config.approval.approver_limits_minor as {}
	denied_only_for(d, "approval.limit_exceeded")
}

test_malformed_approval_limit_denied if {
	d := approval.decision with input as base_input
		with data.countersign.config.approval.approver_limits_minor as {"approver": {"EUR": "5000000000"}}
	denied_only_for(d, "approval.limit_exceeded")
}

test_approval_limit_comes_from_data if {
	d := approval.decision with input as base_input
		with data.countersign.config.approval.approver_limits_minor as {"approver": {"EUR": 199999999}}
	denied_only_for(d, "approval.limit_exceeded")
	d.reasons[0].message == "transfer amount 2000000.00 EUR exceeds the approver's approval limit of 1999999.99 EUR"
}

# The largest limit of the approver's authorized roles applies.
test_largest_limit_of_authorized_roles if {
	d_input := patched({
		"approver": {"roles": ["approver", "treasury"]},
		"approval": {"approver_roles": ["approver", "treasury"]},
		"transfer": {"amount": "80000000.00", "amount_minor": 8000000000},
	})
	d := approval.decision with input as d_input
		with data.countersign.config.approval.approver_roles as ["approver", "treasury"]
		with data.countersign.config.approval.approver_limits_minor as {
			"approver": {"EUR": 5000000000},
			"treasury": {"EUR": 10000000000},
		}
	allowed(d)
}

# A role that may not approve this transfer does not lend its limit.
test_limit_of_unauthorized_role_ignored if {
	d_input := patched({
		"approver": {"roles": ["approver", "treasury"]},
		"transfer": {"amount": "80000000.00", "amount_minor": 8000000000},
	})
	d := approval.decision with input as d_input
		with data.countersign.config.approval.approver_limits_minor as {
			"approver": {"EUR": 5000000000},
			"treasury": {"EUR": 10000000000},
		}
	denied_only_for(d, "approval.limit_exceeded")
	d.reasons[0].message == "transfer amount 80000000.00 EUR exceeds the approver's approval limit of 50000000.00 EUR"
}

# For somebody who may not approve at all, role_not_authorized says it all.
test_unauthorized_approver_gets_no_limit_reason if {
	d_input := patched({"approver": {"roles": ["teller"]}})
	d := approval.decision with input as d_input
	denied_only_for(d, "approval.role_not_authorized")
}

# Anybody entitled may stop a transfer, whatever its amount.
test_reject_has_no_limit_check if {
	over_input := object.union(with_amount("90000000.00", 9000000000), {"action": "reject"})
	over := approval.decision with input as over_input
	allowed(over)
	unconfigured := approval.decision with input as rejecting
		with data.countersign.config.approval.approver_limits_minor as {}
	allowed(unconfigured)
}

# ---------------------------------------------------------------------------
# audit.disabled
# ---------------------------------------------------------------------------

test_audit_disabled_denied if {
	d_input := patched({"context": {"audit": {"enabled": false}}})
	d := approval.decision with input as d_input
	denied_only_for(d, "audit.disabled")
	d.reasons[0].message == "approvals are refused while audit recording is not enabled"
}

test_audit_disabled_applies_to_reject if {
	d_input := patched({"action": "reject", "context": {"audit": {"enabled": false}}})
	d := approval.decision with input as d_input
	denied_only_for(d, "audit.disabled")
}

test_audit_flag_missing_denied if {
	d_input := json.remove(base_input, ["context/audit"])
	d := approval.decision with input as d_input
	denied_only_for(d, "audit.disabled")
}

test_audit_flag_must_be_boolean_true if {
	d_input := patched({"context": {"audit": {"enabled": "true"}}})
	d := approval.decision with input as d_input
	denied_only_for(d, "audit.disabled")
}

# ---------------------------------------------------------------------------
# Money formatting helper
# ---------------------------------------------------------------------------

test_decimal_text if {
	approval.decimal_text(150000, 2) == "1500.00"
	approval.decimal_text(5, 2) == "0.05"
	approval.decimal_text(0, 2) == "0.00"
	approval.decimal_text(-150, 2) == "-1.50"
	approval.decimal_text(1000000, 0) == "1000000"
}

test_money_uses_configured_minor_units if {
	d_input := patched({"transfer": {"amount_minor": 5000000001, "currency_minor_units": 3}})
	d := approval.decision with input as d_input
	d.reasons[0].message == "transfer amount 50000000.01 EUR exceeds the approver's approval limit of 50000000.00 EUR"
}

test_money_without_configured_minor_units if {
	d_input := patched({"transfer": {"amount_minor": 5000000001, "currency_minor_units": 3}})
	d := approval.decision with input as d_input
		with data.countersign.config.currency_minor_units as {}
	d.reasons[0].message == "transfer amount 5000000.001 EUR exceeds the approver's approval limit of 5000000.000 EUR"
}
