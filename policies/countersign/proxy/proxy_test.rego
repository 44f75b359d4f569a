package countersign.proxy_test

import data.countersign.proxy

# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

base_input := {
	"action": "proxy.documents",
	"route": {"name": "documents", "path_prefix": "/documents"},
	"attributes": {
		"source": {"address": "10.20.30.40:51514"},
		"request": {"http": {
			"id": "0193a5b2-7c1e-7d3f-9a40-2f1c8e6b1a02",
			"method": "GET",
			"path": "/documents/2026/statement.pdf?format=pdf",
			"query": "format=pdf",
			"host": "gateway.bank.example",
			"scheme": "https",
			"protocol": "HTTP/1.1",
			"headers": {"accept": "application/pdf", "host": "gateway.bank.example"},
		}},
	},
	"parsed_path": ["documents", "2026", "statement.pdf"],
	"parsed_query": {"format": ["pdf"]},
	"subject": {
		"common_name": "mobile-banking",
		"organization": ["Example Bank"],
		"organizational_units": ["channel"],
		"san_uris": [],
		"serial": "0a1b2c",
		"fingerprint_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"roles": ["channel"],
	},
	"context": {
		"time": "2026-11-26T12:00:00.123456789Z",
		"request_id": "0193a5b2-7c1e-7d3f-9a40-2f1c8e6b1a02",
		"source_address": "10.20.30.40:51514",
		"audit": {"enabled": true},
	},
}

# object.union merges recursively, so patches only name what they change.
patched(patch) := object.union(base_input, patch)

with_method(method) := patched({"attributes": {"request": {"http": {"method": method}}}})

codes(d) := {r.code | some r in d.reasons}

# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

test_configured_route_and_role_allowed if {
	d := proxy.decision with input as base_input
	d.allow == true
	d.reasons == []
	d.obligations == []
}

test_teller_allowed if {
	i := patched({"subject": {"roles": ["teller"]}})
	d := proxy.decision with input as i
	d.allow == true
}

test_role_without_access_denied if {
	i := patched({"subject": {"roles": ["auditor"]}})
	d := proxy.decision with input as i
	d.allow == false
	codes(d) == {"subject.role_not_authorized"}
}

test_no_roles_denied if {
	i := patched({"subject": {"roles": []}})
	d := proxy.decision with input as i
	codes(d) == {"subject.role_not_authorized"}
}

test_method_not_allowed_denied if {
	d := proxy.decision with input as with_method("DELETE")
	d.allow == false
	codes(d) == {"method.not_allowed"}
}

test_put_allowed if {
	d := proxy.decision with input as with_method("PUT")
	d.allow == true
}

test_unknown_route_denied if {
	i := patched({"route": {"name": "elsewhere"}})
	d := proxy.decision with input as i
	d.allow == false
	codes(d) == {"route.not_configured"}
}

test_route_config_mockable if {
	d := proxy.decision with input as with_method("DELETE")
		with data.countersign.config.proxy_routes as {"documents": {"roles": ["channel"], "methods": ["DELETE"]}}
	d.allow == true
}

test_missing_route_config_denied if {
	d := proxy.decision with input as base_input with data.countersign.config.proxy_routes as {}
	codes(d) == {"route.not_configured"}
}

test_audit_disabled_denied if {
	i := patched({"context": {"audit": {"enabled": false}}})
	d := proxy.decision with input as i
	codes(d) == {"audit.disabled"}
}

test_empty_input_denied if {
	d := proxy.decision with input as {}
	d.allow == false
	"input.invalid" in codes(d)
	d.obligations == []
}

test_non_object_input_denied if {
	d := proxy.decision with input as "GET /documents"
	d.allow == false
	"input.invalid" in codes(d)
}

test_relative_path_invalid if {
	i := patched({"attributes": {"request": {"http": {"path": "documents"}}}})
	d := proxy.decision with input as i
	codes(d) == {"input.invalid"}
}

test_multiple_violations_sorted if {
	i := patched({
		"subject": {"roles": ["auditor"]},
		"attributes": {"request": {"http": {"method": "DELETE"}}},
		"context": {"audit": {"enabled": false}},
	})
	d := proxy.decision with input as i
	[r.code | some r in d.reasons] == ["audit.disabled", "method.not_allowed", "subject.role_not_authorized"]
}
