//! The policy input of a proxied request, shaped like OPA-Envoy's `ext_authz` input so that
//! policies written for Envoy carry over (`input.attributes.request.http`, `input.parsed_path`,
//! `input.parsed_query`), plus the verified identity. policies/README.md is the contract.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Version, header, request::Parts};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{app::Caller, config::RouteConfig, http::transfers::rfc3339};

/// Headers whose values are credentials: the policy sees them, the audit trail does not.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-auth-token",
];

/// Facts about the request that do not come from the request itself.
pub struct Context {
    pub now: OffsetDateTime,
    pub request_id: Uuid,
    pub audit_enabled: bool,
}

pub fn policy_input(
    route: &RouteConfig,
    caller: &Caller,
    parts: &Parts,
    context: Context,
) -> Value {
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    // Envoy's `path` is the request target as in the request line: path and query.
    let target = parts
        .uri
        .path_and_query()
        .map_or(path, |path_and_query| path_and_query.as_str());
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| parts.uri.authority().map(|authority| authority.as_str()))
        .unwrap_or("");
    let protocol = match parts.version {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    json!({
        "action": super::action_of(route),
        "route": {"name": route.name, "path_prefix": route.path_prefix},
        "attributes": {
            "source": {"address": caller.remote_address.to_string()},
            "request": {"http": {
                "id": context.request_id,
                "method": parts.method.as_str(),
                "path": target,
                "query": query,
                "host": host,
                "scheme": "https",
                "protocol": protocol,
                "headers": header_map(&parts.headers),
            }},
        },
        "parsed_path": parsed_path(path),
        "parsed_query": parsed_query(query),
        "subject": &*caller.identity,
        "context": {
            "time": rfc3339(context.now),
            "request_id": context.request_id,
            "source_address": caller.remote_address.to_string(),
            "audit": {"enabled": context.audit_enabled},
        },
    })
}

/// The input as kept in the audit trail: credential headers replaced by a marker.
pub fn mask(mut input: Value) -> Value {
    if let Some(Value::Object(headers)) = input.pointer_mut("/attributes/request/http/headers") {
        for name in SECRET_HEADERS {
            if let Some(value) = headers.get_mut(*name) {
                *value = Value::String("[redacted]".to_owned());
            }
        }
    }
    input
}

/// Lower-case names (the `http` crate stores them so); repeated headers joined with ", " as
/// Envoy does. Identity headers never get here: `app` strips them before any handler.
fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        map.insert(name.as_str().to_owned(), joined);
    }
    map
}

/// `/a/b%20c` → `["a", "b c"]`.
fn parsed_path(path: &str) -> Vec<String> {
    path.split('/')
        .skip(1)
        .map(|segment| percent_decode(segment, false))
        .collect()
}

/// `a=1&a=2&b` → `{"a": ["1", "2"], "b": [""]}`, decoded as a form (`+` is a space).
fn parsed_query(query: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(percent_decode(key, true))
            .or_default()
            .push(percent_decode(value, true));
    }
    map
}

fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let hex = |offset: usize| {
            bytes
                .get(index + offset)
                .and_then(|digit| (*digit as char).to_digit(16))
        };
        match (byte, hex(1), hex(2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                index += 3;
            }
            (b'+', _, _) if plus_is_space => {
                decoded.push(b' ');
                index += 1;
            }
            _ => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_parse_like_opa_envoy() {
        assert_eq!(
            parsed_path("/statements/2026%2F11/a b"),
            ["statements", "2026/11", "a b"]
        );
        assert_eq!(parsed_path("/"), [""]);
        let query = parsed_query("a=1&a=2&b&c=x+y%21&&bad=%zz");
        assert_eq!(query["a"], ["1", "2"]);
        assert_eq!(query["b"], [""]);
        assert_eq!(query["c"], ["x y!"]);
        assert_eq!(query["bad"], ["%zz"]);
    }
}
