# Countersign transfer policy.
#
# Entry point: data.countersign.transfer.decision
#
# The decision is always defined: {"allow": bool, "reasons": [...], "obligations": [...]}.
# allow is true iff no deny reason applies. Reasons are sorted by code, then message.
# obligations is [] except for an allowed transfer above the single-transfer limit that an
# approval tier covers (maker-checker): then it holds one require_approval obligation and
# the gateway holds the transfer, funds reserved, until enough approvers agree (see
# policies/README.md). Deny wins: a denied transfer never carries an obligation.
#
# House rules (this file must give identical answers in OPA, the regorus
# interpreter and the regorus RVM, and must fail closed in all three):
#   * `not` is only applied to rule references (`not audit_enabled`) or to calls
#     whose arguments are always defined (`not account_active("debit")`). Never
#     `not f(input.maybe.missing)`: OPA treats that expression as undefined (so
#     the `not` fails), regorus treats it as true.
#   * Every `x := <ref that may be undefined>` is followed by a guard that uses x
#     (e.g. `is_string(x)`): the regorus 0.14.1 RVM does not fail a body when
#     `:=` binds an undefined value.
#   * Configuration is read as `data.countersign.config.<key>` at each use (no
#     alias rule), so tests can mock single keys with `with` in every engine.
#   * Money is compared as integer minor units only; no division, no floats.
#   * Builtins only see values of the type they expect: regorus treats builtin
#     type errors as evaluation errors.
#   * No `with`, no partial object rules: the RVM cannot compile them.
package countersign.transfer

# ---------------------------------------------------------------------------
# Decision document
# ---------------------------------------------------------------------------

decision := {
	"allow": count(reasons) == 0,
	"reasons": reasons,
	"obligations": obligations,
}

default obligations := []

obligations := [obligation] if {
	count(reasons) == 0
	obligation := approval_obligation
	is_object(obligation)
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

input_problems contains "action must be \"transfer.create\"" if not action_is_transfer_create

action_is_transfer_create if input.action == "transfer.create"

input_problems contains msg if {
	some section in ["transfer", "subject", "accounts", "context"]
	not section_is_object(section)
	msg := sprintf("%s must be an object", [section])
}

section_is_object(section) if is_object(input[section])

input_problems contains msg if {
	some field in ["id", "debit_account", "credit_account", "amount"]
	not transfer_text_present(field)
	msg := sprintf("transfer.%s must be a non-empty string", [field])
}

transfer_text_present(field) if is_nonempty_string(input.transfer[field])

input_problems contains "transfer.amount_minor must be a positive integer" if not amount_minor_valid

amount_minor_valid if is_positive_int(input.transfer.amount_minor)

input_problems contains "transfer.currency must be a three-letter upper-case code" if not currency_code_valid

currency_code_valid if is_currency_code(input.transfer.currency)

input_problems contains "transfer.currency_minor_units must be an integer between 0 and 4" if not minor_units_valid

minor_units_valid if is_minor_units(input.transfer.currency_minor_units)

# The configured exponent wins: a mismatch means the gateway scaled the amount wrongly.
input_problems contains msg if {
	units := transfer_minor_units
	is_minor_units(units)
	currency := transfer_currency
	is_string(currency)
	configured := data.countersign.config.currency_minor_units[currency]
	is_minor_units(configured)
	units != configured
	msg := sprintf("transfer.currency_minor_units is %d but %s has %d minor units", [units, currency, configured])
}

# Optional texts: absent, null or a string.
input_problems contains msg if {
	is_object(input.transfer)
	some field, value in input.transfer
	field in {"end_to_end_id", "purpose", "remittance_info"}
	not is_string_or_null(value)
	msg := sprintf("transfer.%s must be a string or null", [field])
}

input_problems contains "subject.roles must be an array of strings" if not roles_valid

roles_valid if is_string_array(input.subject.roles)

input_problems contains msg if {
	some side in ["debit", "credit"]
	not account_is_object(side)
	msg := sprintf("accounts.%s must be an object", [side])
}

account_is_object(side) if is_object(input.accounts[side])

input_problems contains msg if {
	some side in ["debit", "credit"]
	account_is_object(side)
	some field in ["id", "status", "currency", "balance", "debited_today", "reserved", "available"]
	not account_text_present(side, field)
	msg := sprintf("accounts.%s.%s must be a non-empty string", [side, field])
}

account_text_present(side, field) if is_nonempty_string(input.accounts[side][field])

input_problems contains msg if {
	some side in ["debit", "credit"]
	account_is_object(side)
	not overdraft_flag_valid(side)
	msg := sprintf("accounts.%s.overdraft_allowed must be a boolean", [side])
}

overdraft_flag_valid(side) if is_boolean(input.accounts[side].overdraft_allowed)

input_problems contains msg if {
	some side in ["debit", "credit"]
	account_is_object(side)
	not balance_minor_valid(side)
	msg := sprintf("accounts.%s.balance_minor must be an integer", [side])
}

balance_minor_valid(side) if is_int(input.accounts[side].balance_minor)

input_problems contains msg if {
	some side in ["debit", "credit"]
	account_is_object(side)
	not debited_today_minor_valid(side)
	msg := sprintf("accounts.%s.debited_today_minor must be a non-negative integer", [side])
}

debited_today_minor_valid(side) if is_nonnegative_int(input.accounts[side].debited_today_minor)

input_problems contains msg if {
	some side in ["debit", "credit"]
	account_is_object(side)
	not reserved_minor_valid(side)
	msg := sprintf("accounts.%s.reserved_minor must be a non-negative integer", [side])
}

reserved_minor_valid(side) if is_nonnegative_int(input.accounts[side].reserved_minor)

input_problems contains msg if {
	some side in ["debit", "credit"]
	account_is_object(side)
	not available_minor_valid(side)
	msg := sprintf("accounts.%s.available_minor must be an integer", [side])
}

available_minor_valid(side) if is_int(input.accounts[side].available_minor)

# Funds are checked against available_minor alone, so it must be what the ledger says:
# the balance less the debits reserved by transfers awaiting approval.
input_problems contains msg if {
	some side in ["debit", "credit"]
	balance := input.accounts[side].balance_minor
	is_int(balance)
	reserved := input.accounts[side].reserved_minor
	is_nonnegative_int(reserved)
	available := input.accounts[side].available_minor
	is_int(available)
	available != balance - reserved
	msg := sprintf("accounts.%s.available_minor must equal balance_minor - reserved_minor", [side])
}

# The account state must belong to the accounts named in the transfer.
input_problems contains msg if {
	some side in ["debit", "credit"]
	state_id := input.accounts[side].id
	is_string(state_id)
	named := input.transfer[concat("_", [side, "account"])]
	is_string(named)
	state_id != named
	msg := sprintf("accounts.%s.id does not match transfer.%s_account", [side, side])
}

# ---------------------------------------------------------------------------
# Subject
# ---------------------------------------------------------------------------

deny_reasons contains {
	"code": "subject.role_not_authorized",
	"message": "the client certificate holds no role that may initiate transfers",
} if {
	not subject_authorized
}

subject_authorized if {
	roles := input.subject.roles
	is_string_array(roles)
	some role in roles
	role in data.countersign.config.initiator_roles
}

# ---------------------------------------------------------------------------
# Audit
# ---------------------------------------------------------------------------

deny_reasons contains {
	"code": "audit.disabled",
	"message": "transfers are refused while audit recording is not enabled",
} if {
	not audit_enabled
}

audit_enabled if input.context.audit.enabled == true

# ---------------------------------------------------------------------------
# Currency
# ---------------------------------------------------------------------------

deny_reasons contains {"code": "currency.not_allowed", "message": msg} if {
	not currency_allowed
	msg := sprintf("currency %s is not allowed for transfers", [currency_label])
}

currency_allowed if {
	currency := transfer_currency
	is_string(currency)
	currency in data.countersign.config.allowed_currencies
}

deny_reasons contains {"code": "account.currency_mismatch", "message": msg} if {
	currency := transfer_currency
	is_string(currency)
	some side in ["debit", "credit"]
	account_currency := input.accounts[side].currency
	is_string(account_currency)
	currency != account_currency
	msg := sprintf("%s is held in %s but the transfer is in %s", [account_label(side), account_currency, currency])
}

# ---------------------------------------------------------------------------
# Limits (integer minor units only)
# ---------------------------------------------------------------------------

deny_reasons contains {"code": "limit.not_configured", "message": msg} if {
	currency := transfer_currency
	is_string(currency)
	not single_limit_configured
	msg := sprintf("no single-transfer limit is configured for currency %s", [currency])
}

deny_reasons contains {"code": "limit.not_configured", "message": msg} if {
	currency := transfer_currency
	is_string(currency)
	not daily_limit_configured
	msg := sprintf("no daily debit limit is configured for currency %s", [currency])
}

# Above the single-transfer limit a transfer is refused unless an approval tier covers it;
# then it is allowed with a require_approval obligation instead (see "Approval" below).
deny_reasons contains {"code": "limit.single_transfer_exceeded", "message": msg} if {
	not approval_required
	amount := transfer_amount_minor
	is_number(amount)
	limit := single_limit
	is_number(limit)
	amount > limit
	msg := sprintf("transfer amount %s exceeds the single-transfer limit of %s", [money(amount), money(limit)])
}

# A transfer that needs approval is exempt: its approvers, each within their own approval
# limit, decide on it instead. Its amount is reserved (reserved_minor), not debited, until
# it is posted, so it counts towards debited_today_minor only from then on.
deny_reasons contains {"code": "limit.daily_exceeded", "message": msg} if {
	not approval_required
	amount := transfer_amount_minor
	is_number(amount)
	already := debit_debited_today_minor
	is_number(already)
	limit := daily_limit
	is_number(limit)
	total := already + amount
	total > limit
	msg := sprintf(
		"debits today would total %s (already %s), exceeding the daily limit of %s per debit account",
		[money(total), money(already), money(limit)],
	)
}

single_limit := limit if {
	currency := transfer_currency
	is_string(currency)
	limit := data.countersign.config.single_transfer_limit_minor[currency]
	is_nonnegative_int(limit)
}

single_limit_configured if is_nonnegative_int(single_limit)

daily_limit := limit if {
	currency := transfer_currency
	is_string(currency)
	limit := data.countersign.config.daily_debit_limit_minor[currency]
	is_nonnegative_int(limit)
}

daily_limit_configured if is_nonnegative_int(daily_limit)

# ---------------------------------------------------------------------------
# Accounts
# ---------------------------------------------------------------------------

deny_reasons contains {"code": "account.debit_not_active", "message": msg} if {
	not account_active("debit")
	msg := sprintf("%s is not active (status: %s)", [account_label("debit"), status_label("debit")])
}

deny_reasons contains {"code": "account.credit_not_active", "message": msg} if {
	not account_active("credit")
	msg := sprintf("%s is not active (status: %s)", [account_label("credit"), status_label("credit")])
}

account_active(side) if input.accounts[side].status == "active"

# Available, not balance: debits reserved by transfers awaiting approval are spoken for.
deny_reasons contains {"code": "funds.insufficient", "message": msg} if {
	not debit_overdraft_allowed
	available := debit_available_minor
	is_number(available)
	amount := transfer_amount_minor
	is_number(amount)
	available < amount
	msg := sprintf(
		"%s has an available balance of %s%s, less than the transfer amount of %s, and no overdraft",
		[account_label("debit"), money(available), reserved_note, money(amount)],
	)
}

debit_overdraft_allowed if input.accounts.debit.overdraft_allowed == true

default reserved_note := ""

reserved_note := note if {
	reserved := debit_reserved_minor
	is_number(reserved)
	reserved > 0
	balance := debit_balance_minor
	is_number(balance)
	note := sprintf(
		" (balance %s, of which %s reserved for transfers awaiting approval)",
		[money(balance), money(reserved)],
	)
}

# ---------------------------------------------------------------------------
# Approval (maker-checker)
# ---------------------------------------------------------------------------

# A transfer above the single-transfer limit needs approval when the currency has a
# well-formed list of approval tiers and at least one tier lies below the amount; it needs
# the largest `approvals` of those tiers. Anything else about the approval configuration
# (no tiers for the currency, a malformed tier, no approver role) leaves no approval path,
# and the single-transfer limit denies as before: a broken configuration never allows.
approval_obligation := {
	"type": "require_approval",
	"approvals_required": approvals,
	"approver_roles": roles,
	"reason": reason,
} if {
	amount := transfer_amount_minor
	is_number(amount)
	limit := single_limit
	is_number(limit)
	amount > limit
	approvals := approvals_required
	is_positive_int(approvals)
	roles := approver_roles
	is_array(roles)
	count(roles) > 0
	reason := sprintf(
		"transfer amount %s exceeds the single-transfer limit of %s: %s required",
		[money(amount), money(limit), approvals_text(approvals)],
	)
}

# True exactly when the obligation can be built, so that lifting the single-transfer and
# daily limits and issuing the obligation can never disagree.
approval_required if is_object(approval_obligation)

approvals_required := max(tier_approvals) if count(tier_approvals) > 0

tier_approvals contains approvals if {
	amount := transfer_amount_minor
	is_number(amount)
	tiers := approval_tiers
	is_array(tiers)
	some tier in tiers
	tier.above_minor < amount
	approvals := tier.approvals
	is_positive_int(approvals)
}

# Only a list whose every tier is well formed counts: skipping one bad tier could lower
# the number of approvals a large amount needs.
approval_tiers := tiers if {
	currency := transfer_currency
	is_string(currency)
	tiers := data.countersign.config.approval.tiers_minor[currency]
	is_array(tiers)
	count(tiers) > 0
	every tier in tiers {
		approval_tier_valid(tier)
	}
}

approval_tier_valid(tier) if {
	is_object(tier)
	is_nonnegative_int(tier.above_minor)
	is_positive_int(tier.approvals)
}

# Every role a non-empty string: the gateway refuses an obligation naming an empty role.
approver_roles := sort({role | some role in roles}) if {
	roles := data.countersign.config.approval.approver_roles
	is_array(roles)
	every role in roles {
		is_nonempty_string(role)
	}
}

# What no approver could ever approve is refused at initiation: held, it would only reserve
# the funds until it expired. The ceiling is the largest approval limit of the roles the
# obligation names (an approver's own limit is checked again by the approval policy).
deny_reasons contains {"code": "limit.approval_ceiling_exceeded", "message": msg} if {
	approval_required
	amount := transfer_amount_minor
	is_number(amount)
	ceiling := approval_ceiling
	is_number(ceiling)
	amount > ceiling
	msg := sprintf(
		"transfer amount %s exceeds the largest approval limit of %s: no approver may approve it",
		[money(amount), money(ceiling)],
	)
}

deny_reasons contains {"code": "limit.approval_ceiling_exceeded", "message": msg} if {
	approval_required
	not approval_ceiling_configured
	msg := sprintf("no approval limit is configured for currency %s: no approver may approve it", [currency_label])
}

approval_ceiling := max(approval_limits) if count(approval_limits) > 0

approval_ceiling_configured if is_number(approval_ceiling)

approval_limits contains limit if {
	currency := transfer_currency
	is_string(currency)
	roles := approver_roles
	is_array(roles)
	some role in roles
	limit := data.countersign.config.approval.approver_limits_minor[role][currency]
	is_nonnegative_int(limit)
}

approvals_text(n) := "1 approval" if n == 1

approvals_text(n) := sprintf("%d approvals", [n]) if n > 1

# ---------------------------------------------------------------------------
# Sanctions
# ---------------------------------------------------------------------------

deny_reasons contains {"code": "sanctions.account_listed", "message": msg} if {
	some side in ["debit", "credit"]
	some id in account_ids(side)
	id in sanctioned_accounts
	msg := sprintf("%s is on the sanctions list", [account_label(side)])
}

deny_reasons contains {"code": "sanctions.country_listed", "message": msg} if {
	some side in ["debit", "credit"]
	some id in account_ids(side)
	country := iban_country(id)
	is_string(country)
	country in sanctioned_countries
	msg := sprintf("%s is held in sanctioned country %s", [account_label(side), country])
}

# Both the id named in the transfer and the id of the supplied account state are
# screened, normalised to upper case without spaces.
account_ids(side) := named | supplied if {
	named := {normalize_account(id) |
		id := input.transfer[concat("_", [side, "account"])]
		is_string(id)
	}
	supplied := {normalize_account(id) |
		id := input.accounts[side].id
		is_string(id)
	}
}

sanctioned_accounts := {normalize_account(id) |
	some id in data.countersign.config.sanctions.accounts
	is_string(id)
}

sanctioned_countries := {upper(c) |
	some c in data.countersign.config.sanctions.countries
	is_string(c)
}

normalize_account(id) := upper(replace(id, " ", ""))

# IBAN-like: two letters (the country) followed by two check digits.
iban_country(id) := substring(id, 0, 2) if regex.match(`^[A-Z]{2}[0-9]{2}`, id)

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

transfer_minor_units := v if {
	v := input.transfer.currency_minor_units
	is_minor_units(v)
}

debit_balance_minor := v if {
	v := input.accounts.debit.balance_minor
	is_int(v)
}

debit_reserved_minor := v if {
	v := input.accounts.debit.reserved_minor
	is_nonnegative_int(v)
}

debit_available_minor := v if {
	v := input.accounts.debit.available_minor
	is_int(v)
}

debit_debited_today_minor := v if {
	v := input.accounts.debit.debited_today_minor
	is_nonnegative_int(v)
}

# ---------------------------------------------------------------------------
# Message helpers: total, so that they never make a reason undefined
# ---------------------------------------------------------------------------

default currency_label := "(missing)"

currency_label := c if {
	c := input.transfer.currency
	is_nonempty_string(c)
}

# "debit account ending in 3000": a decision never contains a full account number.
account_label(side) := sprintf("%s account ending in %s", [side, last4]) if {
	id := input.transfer[concat("_", [side, "account"])]
	is_string(id)
	count(id) > 4
	last4 := substring(id, count(id) - 4, 4)
}

account_label(side) := sprintf("%s account", [side]) if not has_long_account_id(side)

has_long_account_id(side) if {
	id := input.transfer[concat("_", [side, "account"])]
	is_string(id)
	count(id) > 4
}

status_label(side) := s if {
	s := input.accounts[side].status
	is_nonempty_string(s)
}

status_label(side) := "missing" if not account_text_present(side, "status")

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
