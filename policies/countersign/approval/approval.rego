# Countersign approval policy (maker-checker, "four eyes").
#
# Entry point: data.countersign.approval.decision
#
# Decides one approve or reject of a transfer that the transfer policy allowed with a
# require_approval obligation (POST /v1/transfers/{id}/approve and .../reject). The
# gateway evaluates it once per call; counting approvals, posting the transfer once
# `approvals_required` is reached and releasing the reservation are the gateway's.
#
# The decision is always defined: {"allow": bool, "reasons": [...], "obligations": []}.
# allow is true iff no deny reason applies. Reasons are sorted by code, then message.
#
# Same house rules as transfer.rego (identical answers in OPA, the regorus interpreter and
# the RVM; fail closed in all three): `not` only on rule references or on calls whose
# arguments are always defined; every `x := <maybe undefined>` is followed by a guard that
# uses x; configuration is read as data.countersign.config.<key> at each use; money is
# compared as integer minor units only; builtins only see values of the type they expect;
# no `with`, no partial object rules. The helpers at the bottom are copies of
# transfer.rego's: each entrypoint is compiled into its own program, and this one should
# not change when the transfer policy does.
package countersign.approval

# ---------------------------------------------------------------------------
# Decision document
# ---------------------------------------------------------------------------

decision := {
	"allow": count(reasons) == 0,
	"reasons": reasons,
	"obligations": [],
}

reason_codes := sort({r.code | some r in deny_reasons})

reasons := [{"code": code, "message": message} |
	some code in reason_codes
	some message in sort({x.message | some x in deny_reasons; x.code == code})
]

# ---------------------------------------------------------------------------
# Input validation: one input.invalid reason listing every problem
# ---------------------------------------------------------------------------

deny_reasons contains {"code": "input.invalid", "message": msg} if {
	count(input_problems) > 0
	msg := concat("", ["invalid policy input: ", concat("; ", sort(input_problems))])
}

input_problems contains "input must be a JSON object" if not input_is_object

input_is_object if is_object(input)

input_problems contains "action must be \"approve\" or \"reject\"" if not action_valid

action_valid if input.action in {"approve", "reject"}

input_problems contains msg if {
	some section in ["approver", "initiator", "transfer", "approval", "context"]
	not section_is_object(section)
	msg := sprintf("%s must be an object", [section])
}

section_is_object(section) if is_object(input[section])

input_problems contains msg if {
	some party in ["approver", "initiator"]
	not fingerprint_present(party)
	msg := sprintf("%s.fingerprint_sha256 must be a non-empty string", [party])
}

fingerprint_present(party) if is_nonempty_string(input[party].fingerprint_sha256)

input_problems contains "approver.roles must be an array of strings" if not approver_roles_valid

approver_roles_valid if is_string_array(input.approver.roles)

input_problems contains "transfer.amount_minor must be a positive integer" if not amount_minor_valid

amount_minor_valid if is_positive_int(input.transfer.amount_minor)

input_problems contains "transfer.currency must be a three-letter upper-case code" if not currency_code_valid

currency_code_valid if is_currency_code(input.transfer.currency)

input_problems contains "approval.status must be a string" if not status_valid

status_valid if is_string(input.approval.status)

input_problems contains "approval.approvals_required must be a positive integer" if not approvals_required_valid

approvals_required_valid if is_positive_int(input.approval.approvals_required)

input_problems contains "approval.approver_roles must be an array of strings" if not requested_roles_valid

requested_roles_valid if is_string_array(input.approval.approver_roles)

input_problems contains msg if {
	not approvals_valid
	msg := "approval.approvals must be an array of objects with a string fingerprint_sha256"
}

approvals_valid if {
	approvals := input.approval.approvals
	is_array(approvals)
	every approval in approvals {
		is_object(approval)
		is_string(approval.fingerprint_sha256)
	}
}

# Optional text: absent, null or a string.
input_problems contains "comment must be a string or null" if {
	input_is_object
	some field, value in input
	field == "comment"
	not is_string_or_null(value)
}

# ---------------------------------------------------------------------------
# Approver
# ---------------------------------------------------------------------------

# A role counts only if the transfer's obligation asked for it (input.approval.approver_roles,
# fixed when the transfer was held) and the configuration still names it: removing a role
# from the configuration withdraws it from transfers already waiting.
deny_reasons contains {
	"code": "approval.role_not_authorized",
	"message": "the client certificate holds no role that may approve or reject this transfer",
} if {
	not approver_authorized
}

approver_authorized if count(authorized_roles) > 0

authorized_roles contains role if {
	roles := input.approver.roles
	is_string_array(roles)
	requested := input.approval.approver_roles
	is_string_array(requested)
	configured := data.countersign.config.approval.approver_roles
	is_string_array(configured)
	some role in roles
	role in requested
	role in configured
}

# The maker can neither approve nor reject. Identity is the certificate fingerprint.
deny_reasons contains {
	"code": "approval.self_approval",
	"message": "four-eyes principle: the certificate that initiated this transfer may not approve or reject it",
} if {
	approver := approver_fingerprint
	is_string(approver)
	initiator := input.initiator.fingerprint_sha256
	is_string(initiator)
	lower(approver) == lower(initiator)
}

deny_reasons contains {
	"code": "approval.already_approved",
	"message": "this client certificate has already approved this transfer",
} if {
	approver := approver_fingerprint
	is_string(approver)
	approvals := input.approval.approvals
	is_array(approvals)
	some approval in approvals
	is_object(approval)
	fingerprint := approval.fingerprint_sha256
	is_string(fingerprint)
	lower(fingerprint) == lower(approver)
}

approver_fingerprint := v if {
	v := input.approver.fingerprint_sha256
	is_nonempty_string(v)
}

# ---------------------------------------------------------------------------
# Approval state
# ---------------------------------------------------------------------------

deny_reasons contains {"code": "approval.not_pending", "message": msg} if {
	not approval_pending
	msg := sprintf("the transfer is not awaiting approval (status: %s)", [status_label])
}

approval_pending if input.approval.status == "pending"

default status_label := "missing"

status_label := s if {
	s := input.approval.status
	is_nonempty_string(s)
}

# ---------------------------------------------------------------------------
# Approval limit (approve only: anybody entitled may stop a transfer)
# ---------------------------------------------------------------------------

deny_reasons contains {"code": "approval.limit_exceeded", "message": msg} if {
	input.action == "approve"
	amount := transfer_amount_minor
	is_number(amount)
	limit := approver_limit
	is_number(limit)
	amount > limit
	msg := sprintf("transfer amount %s exceeds the approver's approval limit of %s", [money(amount), money(limit)])
}

# Only for an authorized approver: for anybody else role_not_authorized already says it.
deny_reasons contains {"code": "approval.limit_exceeded", "message": msg} if {
	input.action == "approve"
	approver_authorized
	is_number(transfer_amount_minor)
	currency := transfer_currency
	is_string(currency)
	not approver_limit_configured
	msg := sprintf("no approval limit is configured in %s for any approver role of the client certificate", [currency])
}

# The largest limit of the approver's authorized roles: a role that does not entitle its
# holder to approve this transfer does not lend it its limit either.
approver_limit := max(approver_limits) if count(approver_limits) > 0

approver_limit_configured if is_number(approver_limit)

approver_limits contains limit if {
	currency := transfer_currency
	is_string(currency)
	some role in authorized_roles
	limit := data.countersign.config.approval.approver_limits_minor[role][currency]
	is_nonnegative_int(limit)
}

# ---------------------------------------------------------------------------
# Audit
# ---------------------------------------------------------------------------

deny_reasons contains {
	"code": "audit.disabled",
	"message": "approvals are refused while audit recording is not enabled",
} if {
	not audit_enabled
}

audit_enabled if input.context.audit.enabled == true

# ---------------------------------------------------------------------------
# Validated input values (undefined when malformed; input.invalid then denies)
# ---------------------------------------------------------------------------

transfer_amount_minor := v if {
	v := input.transfer.amount_minor
	is_positive_int(v)
}

transfer_currency := v if {
	v := input.transfer.currency
	is_currency_code(v)
}

# The exponent for display: the configured one, else the one the transfer carries.
transfer_minor_units := v if {
	currency := transfer_currency
	is_string(currency)
	v := data.countersign.config.currency_minor_units[currency]
	is_minor_units(v)
}

transfer_minor_units := v if {
	not configured_minor_units
	v := input.transfer.currency_minor_units
	is_minor_units(v)
}

configured_minor_units if {
	currency := transfer_currency
	is_string(currency)
	is_minor_units(data.countersign.config.currency_minor_units[currency])
}

# ---------------------------------------------------------------------------
# Message helpers: total, so that they never make a reason undefined
# ---------------------------------------------------------------------------

# Integer minor units as decimal text in the transfer currency, built with string
# operations only: money(150000) == "1500.00 EUR".
money(value) := sprintf("%s %s", [decimal_text(value, units), currency]) if {
	units := transfer_minor_units
	is_minor_units(units)
	currency := transfer_currency
	is_string(currency)
}

money(value) := concat("", [int_text(value), " minor units"]) if not has_money_format

has_money_format if {
	is_minor_units(transfer_minor_units)
	is_string(transfer_currency)
}

decimal_text(value, units) := int_text(value) if units == 0

decimal_text(value, units) := text if {
	units > 0
	digits := sprintf("%d", [abs(value)])
	width := max([count(digits), units + 1])
	padded := concat("", ["0000000000", digits])
	body := substring(padded, count(padded) - width, width)
	text := concat("", [sign_prefix(value), substring(body, 0, width - units), ".", substring(body, width - units, units)])
}

# sprintf("%d") only ever sees non-negative integers: regorus 0.14.1 prints -500 as "--500".
int_text(value) := concat("", [sign_prefix(value), sprintf("%d", [abs(value)])])

sign_prefix(value) := "-" if value < 0

sign_prefix(value) := "" if value >= 0

# ---------------------------------------------------------------------------
# Type predicates: callers guarantee the argument is defined
# ---------------------------------------------------------------------------

is_int(x) if {
	is_number(x)
	round(x) == x
}

is_positive_int(x) if {
	is_int(x)
	x > 0
}

is_nonnegative_int(x) if {
	is_int(x)
	x >= 0
}

is_minor_units(x) if {
	is_int(x)
	x >= 0
	x <= 4
}

is_nonempty_string(x) if {
	is_string(x)
	count(x) > 0
}

is_currency_code(x) if {
	is_string(x)
	regex.match(`^[A-Z]{3}$`, x)
}

is_string_or_null(x) if is_string(x)

is_string_or_null(x) if is_null(x)

is_string_array(x) if {
	is_array(x)
	every item in x {
		is_string(item)
	}
}
