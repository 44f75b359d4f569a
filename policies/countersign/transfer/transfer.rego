# Countersign transfer policy.
#
# Entry point: data.countersign.transfer.decision
#
# The decision is always defined: {"allow": bool, "reasons": [...], "obligations": []}.
# allow is true iff no deny reason applies. Reasons are sorted by code, then message.
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
	some field in ["id", "status", "currency", "balance", "debited_today"]
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

deny_reasons contains {"code": "limit.single_transfer_exceeded", "message": msg} if {
	amount := transfer_amount_minor
	is_number(amount)
	limit := single_limit
	is_number(limit)
	amount > limit
	msg := sprintf("transfer amount %s exceeds the single-transfer limit of %s", [money(amount), money(limit)])
}

deny_reasons contains {"code": "limit.daily_exceeded", "message": msg} if {
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

deny_reasons contains {"code": "funds.insufficient", "message": msg} if {
	not debit_overdraft_allowed
	balance := debit_balance_minor
	is_number(balance)
	amount := transfer_amount_minor
	is_number(amount)
	balance < amount
	msg := sprintf(
		"%s has a balance of %s, less than the transfer amount of %s, and no overdraft",
		[account_label("debit"), money(balance), money(amount)],
	)
}

debit_overdraft_allowed if input.accounts.debit.overdraft_allowed == true

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
