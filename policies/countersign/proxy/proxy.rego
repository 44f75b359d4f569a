# Countersign proxy-route policy.
#
# Entry point: data.countersign.proxy.decision (the default `decision` of a [[routes]] entry)
#
# Decides each request the gateway would forward to a route's upstream. The input is shaped
# like OPA-Envoy's (input.attributes.request.http, input.parsed_path, input.parsed_query)
# plus the verified client certificate (input.subject) and the route (input.route); see
# policies/README.md, "Proxy routes".
#
# The decision is always defined: {"allow": bool, "reasons": [...], "obligations": []}.
# allow is true iff no deny reason applies. Reasons are sorted by code, then message.
#
# Same house rules as transfer.rego (identical answers in OPA, the regorus interpreter and
# the RVM; fail closed in all three): `not` only on rule references or on calls whose
# arguments are always defined; every `x := <maybe undefined>` is followed by a guard that
# uses x; configuration is read as data.countersign.config.<key> at each use; builtins
# only see values of the type they expect; no `with`, no partial object rules.
package countersign.proxy

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

input_problems contains "route.name must be a non-empty string" if not route_name_valid

route_name_valid if is_nonempty_string(input.route.name)

input_problems contains "attributes.request.http.method must be a non-empty string" if not method_valid

method_valid if is_nonempty_string(input.attributes.request.http.method)

input_problems contains "attributes.request.http.path must be a string starting with /" if not path_valid

path_valid if {
	path := input.attributes.request.http.path
	is_string(path)
	startswith(path, "/")
}

input_problems contains "attributes.request.http.headers must be an object" if not headers_valid

headers_valid if is_object(input.attributes.request.http.headers)

input_problems contains "subject.roles must be an array of strings" if not roles_valid

roles_valid if is_string_array(input.subject.roles)

# ---------------------------------------------------------------------------
# Route
# ---------------------------------------------------------------------------

# A route the bundle does not know is closed, whatever the gateway's config says.
deny_reasons contains {"code": "route.not_configured", "message": msg} if {
	name := route_name
	is_string(name)
	not route_configured(name)
	msg := sprintf("route %s is not configured in data.countersign.config.proxy_routes", [name])
}

route_name := input.route.name

route_configured(name) if is_object(data.countersign.config.proxy_routes[name])

deny_reasons contains {"code": "subject.role_not_authorized", "message": msg} if {
	name := route_name
	is_string(name)
	route_configured(name)
	not subject_authorized(name)
	msg := sprintf("the client certificate holds no role that may use route %s", [name])
}

subject_authorized(name) if {
	roles := input.subject.roles
	is_string_array(roles)
	some role in roles
	role in data.countersign.config.proxy_routes[name].roles
}

deny_reasons contains {"code": "method.not_allowed", "message": msg} if {
	name := route_name
	is_string(name)
	route_configured(name)
	method := input.attributes.request.http.method
	is_string(method)
	not method_allowed(name, method)
	msg := sprintf("method %s is not allowed on route %s", [method, name])
}

method_allowed(name, method) if method in data.countersign.config.proxy_routes[name].methods

# ---------------------------------------------------------------------------
# Audit
# ---------------------------------------------------------------------------

deny_reasons contains {
	"code": "audit.disabled",
	"message": "proxied requests are refused while audit recording is not enabled",
} if {
	not audit_enabled
}

audit_enabled if input.context.audit.enabled == true

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

is_nonempty_string(x) if {
	is_string(x)
	count(x) > 0
}

is_string_array(x) if {
	is_array(x)
	every item in x {
		is_string(item)
	}
}
